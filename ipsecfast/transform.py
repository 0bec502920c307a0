"""Cisco transform names -> algorithms, and the allowed combinations (DESIGN.md §Transforms).

``parse_transforms("esp-aes 256 esp-sha-hmac")`` gives a ``Transforms``: at most one AH
transform, one ESP cipher and one ESP authenticator. AEAD ciphers (GCM, CCM,
ChaCha20-Poly1305) and GMAC carry their own ICV and take no separate authenticator.

The numeric ``CipherAlg`` / ``AuthAlg`` values are the ids the compiled core takes
(``src/_esp.pyx`` keeps its constants equal to these); the core knows no Cisco names.

Key lengths are the bytes of keying material an SA needs, salt included where the RFC
makes the salt part of the keying material: GCM / GMAC / ChaCha20-Poly1305 key || 4-byte
salt (RFC 4106 §8.1, RFC 4543 §6, RFC 7634 §4), AES-CTR key || 4-byte nonce (RFC 3686 §5.1),
AES-CCM key || 3-byte salt (RFC 4309 §7.1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Literal

from .exceptions import UnsupportedTransform

__all__ = [
    "CipherAlg",
    "AuthAlg",
    "Transform",
    "Transforms",
    "parse_transforms",
    "TRANSFORM_KEYWORDS",
]


class CipherAlg(IntEnum):
    NULL = 0
    DES_CBC = 1
    TDES_CBC = 2
    AES_CBC = 3
    AES_CTR = 4
    AES_GCM = 5
    AES_GMAC = 6
    CHACHA20_POLY1305 = 7
    AES_CCM = 8


class AuthAlg(IntEnum):
    NONE = 0
    HMAC_MD5_96 = 1
    HMAC_SHA1_96 = 2
    HMAC_SHA256_128 = 3
    HMAC_SHA384_192 = 4
    HMAC_SHA512_256 = 5


Kind = Literal["ah", "esp-cipher", "esp-auth"]


@dataclass(frozen=True)
class _Spec:
    kind: Kind
    cipher: CipherAlg = CipherAlg.NULL
    auth: AuthAlg = AuthAlg.NONE
    key_bits: tuple[int, ...] = ()  # allowed sizes; first = default; () = fixed key
    fixed_key: int = 0  # bytes, when key_bits == ()
    salt: int = 0
    iv: int = 0
    block: int = 1
    icv: int = 0
    description: str = ""


# Cisco keyword -> algorithm. Keys of HMACs are the hash output length (RFC 2403/2404/4868).
_TABLE: dict[str, _Spec] = {
    "ah-md5-hmac": _Spec("ah", auth=AuthAlg.HMAC_MD5_96, fixed_key=16, icv=12,
                         description="AH with HMAC-MD5-96 (RFC 2403)"),
    "ah-sha-hmac": _Spec("ah", auth=AuthAlg.HMAC_SHA1_96, fixed_key=20, icv=12,
                         description="AH with HMAC-SHA1-96 (RFC 2404)"),
    "ah-sha256-hmac": _Spec("ah", auth=AuthAlg.HMAC_SHA256_128, fixed_key=32, icv=16,
                            description="AH with HMAC-SHA-256-128 (RFC 4868)"),
    "esp-des": _Spec("esp-cipher", CipherAlg.DES_CBC, fixed_key=8, iv=8, block=8,
                     description="ESP with 56-bit DES-CBC (RFC 2405)"),
    "esp-3des": _Spec("esp-cipher", CipherAlg.TDES_CBC, fixed_key=24, iv=8, block=8,
                      description="ESP with 168-bit 3DES-CBC (RFC 2451)"),
    "esp-aes": _Spec("esp-cipher", CipherAlg.AES_CBC, key_bits=(128, 192, 256), iv=16, block=16,
                     description="ESP with AES-CBC (RFC 3602)"),
    "esp-null": _Spec("esp-cipher", CipherAlg.NULL, description="ESP with null encryption (RFC 2410)"),
    "esp-gcm": _Spec("esp-cipher", CipherAlg.AES_GCM, key_bits=(128, 192, 256), salt=4, iv=8, icv=16,
                     description="ESP with AES-GCM, 16-byte ICV (RFC 4106)"),
    "esp-gmac": _Spec("esp-cipher", CipherAlg.AES_GMAC, key_bits=(128, 192, 256), salt=4, iv=8,
                      icv=16, description="ESP with AES-GMAC, integrity only (RFC 4543)"),
    "esp-chacha20-poly1305": _Spec("esp-cipher", CipherAlg.CHACHA20_POLY1305, fixed_key=32, salt=4,
                                   iv=8, icv=16, description="ESP with ChaCha20-Poly1305 (RFC 7634)"),
    "esp-aes-ctr": _Spec("esp-cipher", CipherAlg.AES_CTR, key_bits=(128, 192, 256), salt=4, iv=8,
                         description="ESP with AES-CTR (RFC 3686)"),
    "esp-aes-ccm": _Spec("esp-cipher", CipherAlg.AES_CCM, key_bits=(128, 192, 256), salt=3, iv=8,
                         icv=16, description="ESP with AES-CCM, 16-byte ICV (RFC 4309)"),
    "esp-md5-hmac": _Spec("esp-auth", auth=AuthAlg.HMAC_MD5_96, fixed_key=16, icv=12,
                          description="ESP with HMAC-MD5-96 (RFC 2403)"),
    "esp-sha-hmac": _Spec("esp-auth", auth=AuthAlg.HMAC_SHA1_96, fixed_key=20, icv=12,
                          description="ESP with HMAC-SHA1-96 (RFC 2404)"),
    "esp-sha256-hmac": _Spec("esp-auth", auth=AuthAlg.HMAC_SHA256_128, fixed_key=32, icv=16,
                             description="ESP with HMAC-SHA-256-128 (RFC 4868)"),
    "esp-sha384-hmac": _Spec("esp-auth", auth=AuthAlg.HMAC_SHA384_192, fixed_key=48, icv=24,
                             description="ESP with HMAC-SHA-384-192 (RFC 4868)"),
    "esp-sha512-hmac": _Spec("esp-auth", auth=AuthAlg.HMAC_SHA512_256, fixed_key=64, icv=32,
                             description="ESP with HMAC-SHA-512-256 (RFC 4868)"),
}

TRANSFORM_KEYWORDS: tuple[str, ...] = tuple(_TABLE)

_AEAD = {CipherAlg.AES_GCM, CipherAlg.AES_GMAC, CipherAlg.CHACHA20_POLY1305, CipherAlg.AES_CCM}


@dataclass(frozen=True)
class Transform:
    """One Cisco transform, e.g. ``esp-aes 256``, with what the core needs to run it."""

    keyword: str
    key_bits: int | None = None  # for esp-aes / esp-gcm / ...: 128, 192 or 256

    def __post_init__(self) -> None:
        spec = _TABLE.get(self.keyword)
        if spec is None:
            raise UnsupportedTransform(f"unknown transform {self.keyword!r}")
        if spec.key_bits:
            bits = spec.key_bits[0] if self.key_bits is None else self.key_bits
            if bits not in spec.key_bits:
                sizes = "|".join(map(str, spec.key_bits))
                raise UnsupportedTransform(f"{self.keyword} takes a key size of {sizes}, not {bits}")
            object.__setattr__(self, "key_bits", bits)
        elif self.key_bits is not None:
            raise UnsupportedTransform(f"{self.keyword} takes no key size")

    @property
    def _spec(self) -> _Spec:
        return _TABLE[self.keyword]

    @property
    def kind(self) -> Kind:
        return self._spec.kind

    @property
    def cipher(self) -> CipherAlg:
        return self._spec.cipher

    @property
    def auth(self) -> AuthAlg:
        return self._spec.auth

    @property
    def key_length(self) -> int:
        """Bytes of keying material, salt / nonce included."""
        s = self._spec
        base = (self.key_bits or 0) // 8 if s.key_bits else s.fixed_key
        return base + s.salt

    @property
    def salt_length(self) -> int:
        return self._spec.salt

    @property
    def iv_length(self) -> int:
        return self._spec.iv

    @property
    def block_size(self) -> int:
        return self._spec.block

    @property
    def icv_length(self) -> int:
        return self._spec.icv

    @property
    def is_aead(self) -> bool:
        """Carries its own ICV (GCM, CCM, ChaCha20-Poly1305, GMAC)."""
        return self.cipher in _AEAD

    @property
    def description(self) -> str:
        return self._spec.description

    def __str__(self) -> str:
        s = self._spec
        if s.key_bits and self.key_bits != s.key_bits[0]:
            return f"{self.keyword} {self.key_bits}"
        return self.keyword


@dataclass(frozen=True)
class Transforms:
    """A valid combination: at most one AH, one ESP cipher, one ESP authenticator."""

    ah: Transform | None = None
    esp_cipher: Transform | None = None
    esp_auth: Transform | None = None

    @property
    def has_ah(self) -> bool:
        return self.ah is not None

    @property
    def has_esp(self) -> bool:
        return self.esp_cipher is not None or self.esp_auth is not None

    @property
    def cipher(self) -> CipherAlg:
        return self.esp_cipher.cipher if self.esp_cipher else CipherAlg.NULL

    @property
    def esp_integrity(self) -> AuthAlg:
        return self.esp_auth.auth if self.esp_auth else AuthAlg.NONE

    @property
    def cipher_key_length(self) -> int:
        return self.esp_cipher.key_length if self.esp_cipher else 0

    @property
    def auth_key_length(self) -> int:
        return self.esp_auth.key_length if self.esp_auth else 0

    @property
    def ah_key_length(self) -> int:
        return self.ah.key_length if self.ah else 0

    @property
    def esp_icv_length(self) -> int:
        if self.esp_cipher is not None and self.esp_cipher.is_aead:
            return self.esp_cipher.icv_length
        return self.esp_auth.icv_length if self.esp_auth else 0

    @property
    def has_esp_integrity(self) -> bool:
        return self.esp_icv_length > 0

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(t for t in (self.ah, self.esp_cipher, self.esp_auth) if t is not None)

    def __str__(self) -> str:
        return " ".join(str(t) for t in self)

    def render(self) -> str:
        """The transforms as IOS writes them in ``crypto ipsec transform-set``."""
        return str(self)


def _tokens(spec: str | Sequence[str]) -> list[str]:
    if isinstance(spec, str):
        return spec.split()
    out: list[str] = []
    for part in spec:
        out.extend(str(part).split())
    return out


def parse_transforms(spec: str | Sequence[str]) -> Transforms:
    """``"esp-aes 256 esp-sha-hmac"`` (or a list of names) -> ``Transforms``.

    Raises ``UnsupportedTransform`` with ``.token_index`` set to the offending token.
    """
    toks = _tokens(spec)
    found: dict[str, Transform] = {}
    i = 0
    while i < len(toks):
        word = toks[i].lower()
        spec_ = _TABLE.get(word)
        if spec_ is None:
            raise _err(f"unknown transform {toks[i]!r}; expected one of {', '.join(_TABLE)}", i)
        bits: int | None = None
        if spec_.key_bits and i + 1 < len(toks) and toks[i + 1].isdigit():
            bits = int(toks[i + 1])
            if bits not in spec_.key_bits:
                sizes = "|".join(map(str, spec_.key_bits))
                raise _err(f"{word} takes a key size of {sizes}", i + 1)
            i += 1
        slot = {"ah": "ah", "esp-cipher": "esp_cipher", "esp-auth": "esp_auth"}[spec_.kind]
        if slot in found:
            what = {"ah": "AH transform", "esp_cipher": "ESP cipher", "esp_auth": "ESP authenticator"}
            raise _err(f"a transform set holds at most one {what[slot]}", i)
        found[slot] = Transform(word, bits)
        i += 1
    if not found:
        raise _err("a transform set needs at least one transform", 0)
    cipher = found.get("esp_cipher")
    if cipher is not None and cipher.is_aead and "esp_auth" in found:
        idx = _index_of(toks, found["esp_auth"].keyword)
        raise _err(f"{cipher.keyword} provides its own integrity and takes no ESP authenticator", idx)
    if cipher is not None and cipher.cipher == CipherAlg.NULL and "esp_auth" not in found:
        # RFC 4303 §3.2: NULL encryption with no integrity MUST NOT be configured.
        raise _err("esp-null needs an ESP authenticator (RFC 4303 §3.2)", _index_of(toks, "esp-null"))
    return Transforms(found.get("ah"), cipher, found.get("esp_auth"))


def _index_of(toks: list[str], word: str) -> int:
    for i, t in enumerate(toks):
        if t.lower() == word:
            return i
    return 0


def _err(message: str, index: int) -> UnsupportedTransform:
    err = UnsupportedTransform(message)
    err.token_index = index  # type: ignore[attr-defined]
    return err
