"""Wireshark's ESP SA table (``esp_sa``): the keys that let Wireshark / tshark open our
captures decrypted.

``esp_sa_lines(sas)`` renders SA records (anything with ``spi``, ``protocol``,
``direction``, ``local``, ``peer``, ``transforms``, ``cipher_key``, ``auth_key``, as
``router.sad.sas()`` returns them) as lines of the ``esp_sa`` UAT file, the table behind
Wireshark's *Protocols > ESP > ESP SAs* preference. This module and the ``--export-keys`` /
``keys`` commands that call it are the one place ipsecfast writes keys out.

The format is the one of Wireshark 4.0 (what Debian 12 ships; ``epan/dissectors/
packet-ipsec.c``, ``esp_uat_flds``): eight CSV fields, each a double-quoted string::

    "IPv4","<src>","<dst>","<spi>","<encryption>","<key>","<authentication>","<key>"

* the SPI as ``0x%08x`` (Wireshark compares it with ``strtoul(.., 0)``);
* the algorithms by the exact text of Wireshark's ``esp_encryption_type_vals`` /
  ``esp_authentication_type_vals`` value strings (the UAT stores the label, not a number);
* keys as ``0x`` + hex (``compute_ascii_key``: a ``0x`` prefix means hex, anything else
  is taken as ASCII). AES-CTR and AES-GCM keys are key || 4-byte salt, as in our
  ``set session-key`` (Wireshark: "the counter mode key includes a 4 byte nonce
  following the key"); AES-GCM takes ``NULL`` authentication (its ICV is the GCM tag);
* ``#`` lines are comments in a UAT file.

What Wireshark 4.0 cannot decode is written as a comment saying why: AH (Wireshark
has no AH key table: it shows the AH header and dissects what follows, ICV unchecked),
ESP with AES-GMAC (no ENCR_NULL_AUTH_AES_GMAC in the table), ChaCha20-Poly1305 and
AES-CCM (not in 4.0's table), and ESN SAs (4.0 checks ICVs over 32-bit sequence numbers).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable
from typing import Any

from .transform import AuthAlg, CipherAlg

__all__ = ["esp_sa_line", "esp_sa_lines", "write_esp_sa", "WIRESHARK_VERSION"]

WIRESHARK_VERSION = "4.0"

# packet-ipsec.c esp_encryption_type_vals (Wireshark 4.0)
_ENCRYPTION: dict[CipherAlg, str] = {
    CipherAlg.NULL: "NULL",
    CipherAlg.TDES_CBC: "TripleDES-CBC [RFC2451]",
    CipherAlg.AES_CBC: "AES-CBC [RFC3602]",
    CipherAlg.AES_CTR: "AES-CTR [RFC3686]",
    CipherAlg.DES_CBC: "DES-CBC [RFC2405]",
    # Our GCM always carries a 16-byte ICV (esp-gcm, RFC 4106 §8.1 / IOS).
    CipherAlg.AES_GCM: "AES-GCM with 16 octet ICV [RFC4106]",
}

# packet-ipsec.c esp_authentication_type_vals (Wireshark 4.0)
_AUTHENTICATION: dict[AuthAlg, str] = {
    AuthAlg.NONE: "NULL",
    AuthAlg.HMAC_MD5_96: "HMAC-MD5-96 [RFC2403]",
    AuthAlg.HMAC_SHA1_96: "HMAC-SHA-1-96 [RFC2404]",
    AuthAlg.HMAC_SHA256_128: "HMAC-SHA-256-128 [RFC4868]",
    AuthAlg.HMAC_SHA384_192: "HMAC-SHA-384-192 [RFC4868]",
    AuthAlg.HMAC_SHA512_256: "HMAC-SHA-512-256 [RFC4868]",
}

_NOT_DECODABLE: dict[CipherAlg, str] = {
    CipherAlg.AES_GMAC: "AES-GMAC (ENCR_NULL_AUTH_AES_GMAC) is not in its ESP table",
    CipherAlg.CHACHA20_POLY1305: "ChaCha20-Poly1305 is not in its ESP table (later releases add it)",
    CipherAlg.AES_CCM: "AES-CCM is not in its ESP table",
}

_HEADER = (
    "# Wireshark ESP SA table (esp_sa UAT, Wireshark {version} format) written by ipsecfast.\n"
    "# THIS FILE HOLDS SECRET KEYS. Use it with tshark:\n"
    "#   tshark -o esp.enable_encryption_decode:TRUE -o esp.enable_authentication_check:TRUE \\\n"
    "#          -o 'uat:esp_sa:<one line below>' ...\n"
    "# or copy it to <wireshark profile>/esp_sa (e.g. ~/.config/wireshark/esp_sa).\n"
)


def _quote(text: str) -> str:
    # UAT strings: double-quoted, '"' and '\\' escaped as \xNN (uat_esc).
    return '"' + text.replace("\\", "\\x5c").replace('"', "\\x22") + '"'


def _hexkey(key: bytes | None) -> str:
    return "0x" + bytes(key or b"").hex() if key else ""


def _addr(value: Any) -> str:
    return str(ipaddress.IPv4Address(value))


def _endpoints(sa: Any) -> tuple[str, str]:
    """(source, destination) of the packets the SA carries."""
    local, peer = _addr(sa.local), _addr(sa.peer)
    return (local, peer) if str(sa.direction) == "outbound" else (peer, local)


def esp_sa_line(sa: Any) -> str:
    """One SA as an ``esp_sa`` line, or a ``#`` comment when Wireshark cannot decode it."""
    src, dst = _endpoints(sa)
    proto = str(sa.protocol).lower()
    what = f"{proto.upper()} SPI 0x{int(sa.spi):08x} {src} -> {dst} ({sa.direction}, {sa.transforms})"
    if proto == "ah":
        return (f"# {what}: Wireshark has no AH key table; it shows AH and dissects what "
                "follows with the ICV unchecked")
    if getattr(sa, "esn", False):
        return f"# {what}: Wireshark {WIRESHARK_VERSION} cannot check ICVs with extended sequence numbers"
    ts = sa.transforms
    cipher = ts.cipher
    if cipher in _NOT_DECODABLE:
        return f"# {what}: Wireshark {WIRESHARK_VERSION} cannot decode it: {_NOT_DECODABLE[cipher]}"
    auth = ts.esp_integrity
    fields = [
        "IPv4", src, dst, f"0x{int(sa.spi):08x}",
        _ENCRYPTION[cipher], _hexkey(sa.cipher_key),
        _AUTHENTICATION[auth], _hexkey(sa.auth_key),
    ]
    return ",".join(_quote(f) for f in fields)


def esp_sa_lines(sas: Iterable[Any]) -> list[str]:
    """Every SA (both directions), in the order given: table lines and comments."""
    return [esp_sa_line(sa) for sa in sas]


def write_esp_sa(path: str | os.PathLike[str], sas: Iterable[Any]) -> int:
    """Write the ``esp_sa`` file (mode 0600: it holds keys); returns the number of table
    lines Wireshark will load (comments not counted). ``-`` writes to stdout."""
    lines = esp_sa_lines(sas) or [
        "# no SAs: only ipsec-manual entries have SAs before IKE negotiates any"]
    text = _HEADER.format(version=WIRESHARK_VERSION) + "".join(f"{line}\n" for line in lines)
    if os.fspath(path) == "-":
        import sys

        sys.stdout.write(text)
    else:
        fd = os.open(os.fspath(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to a file that already exists
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
    return sum(1 for line in lines if not line.startswith("#"))
