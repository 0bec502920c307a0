"""ESP / AH interop with scapy (``scapy.layers.ipsec``), both ways, byte for byte.

For every algorithm scapy shares with us, in tunnel and transport mode, over inner IPv4
packets of ``SIZES`` bytes (20 = a bare header ... 1500):

* **ours -> scapy**: we encapsulate, scapy decrypts (its ICV check on), and the packet it
  gives back is identical to the one we were given. We also check the wire format that
  scapy does not look at: the ESP trailer (padding 1, 2, 3, ... and the minimum pad
  length for the cipher block and 4-byte alignment, RFC 4303 §2.4; next header = 4 in
  tunnel mode, the inner protocol in transport mode), SPI and sequence numbers (the
  first packet carries ``seq + 1``), and the outer IPv4 header:

  - tunnel mode: a fresh header from ``local`` to ``peer``, TTL 64, protocol 50 / 51,
    DSCP copied from the inner header and ECN copied (RFC 6040 §4.1 normal mode), DF
    copied, total length = packet length, valid checksum;
  - transport mode: the original header, byte for byte, except what RFC 4303 §3.1.1 /
    RFC 4302 §3.1.1 change when the ESP / AH header is inserted: protocol (9), total
    length (2-3) and header checksum (10-11); the checksum must be valid.

* **scapy -> ours**: scapy encapsulates (``tunnel_header=IP(src=local, dst=peer)`` in
  tunnel mode), we decapsulate with anti-replay on, and every packet we give back is
  identical to the inner packet scapy was given: in tunnel mode the inner packet; in
  transport mode the rebuilt packet, compared whole: RFC 4303 / 4302 let only the
  protocol, total length and checksum change, and decapsulation restores all three.

Also covered: ESN (RFC 4304) across the 2^32 boundary for the ICV / AAD families,
and AH+ESP bundles (ESP first, AH transport outside it).
"""

from __future__ import annotations

import random
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pytest

pytest.importorskip("scapy")
from scapy.layers.inet import IP, UDP  # noqa: E402
from scapy.layers.ipsec import AH, ESP, zero_mutable_fields  # noqa: E402
from scapy.layers.ipsec import SecurityAssociation as ScapySA  # noqa: E402
from scapy.packet import Raw  # noqa: E402

from ipsecfast import PacketBatch  # noqa: E402
from ipsecfast.sa import SaBundle, SecurityAssociation  # noqa: E402
from ipsecfast.transform import parse_transforms  # noqa: E402

LOCAL, PEER = "192.0.2.1", "198.51.100.2"
INNER_SRC, INNER_DST = "10.1.0.1", "10.2.0.1"
SIZES = (20, 21, 40, 63, 64, 65, 511, 512, 1400, 1480, 1500)
MODES = ("tunnel", "transport")

# Cisco keyword -> scapy CRYPT_ALGOS / AUTH_ALGOS name
SCAPY_CIPHER = {
    "esp-aes": "AES-CBC",
    "esp-gcm": "AES-GCM",
    "esp-gmac": "AES-NULL-GMAC",
    "esp-chacha20-poly1305": "CHACHA20-POLY1305",
    "esp-aes-ctr": "AES-CTR",
    "esp-aes-ccm": "AES-CCM",
    "esp-3des": "3DES",
    "esp-des": "DES",
    "esp-null": "NULL",
}
SCAPY_AUTH = {
    "esp-md5-hmac": "HMAC-MD5-96",
    "esp-sha-hmac": "HMAC-SHA1-96",
    "esp-sha256-hmac": "SHA2-256-128",
    "esp-sha384-hmac": "SHA2-384-192",
    "esp-sha512-hmac": "SHA2-512-256",
    "ah-md5-hmac": "HMAC-MD5-96",
    "ah-sha-hmac": "HMAC-SHA1-96",
    "ah-sha256-hmac": "SHA2-256-128",
}

ESP_TRANSFORMS = [
    "esp-aes esp-sha-hmac",
    "esp-aes 192 esp-md5-hmac",
    "esp-aes 256 esp-sha256-hmac",
    "esp-aes 128 esp-sha384-hmac",
    "esp-aes 256 esp-sha512-hmac",
    "esp-aes 256",  # encryption only (RFC 4303 §3.2 allows it; scapy does too)
    "esp-gcm 128",
    "esp-gcm 192",
    "esp-gcm 256",
    "esp-gmac 128",
    "esp-gmac 256",
    "esp-chacha20-poly1305",
    "esp-aes-ctr 128 esp-sha-hmac",
    "esp-aes-ctr 192 esp-sha256-hmac",
    "esp-aes-ctr 256 esp-sha-hmac",
    "esp-aes-ccm 128",
    "esp-aes-ccm 256",
    "esp-3des esp-sha-hmac",
    "esp-des esp-md5-hmac",
    "esp-null esp-md5-hmac",
    "esp-null esp-sha-hmac",
    "esp-null esp-sha256-hmac",
    "esp-null esp-sha384-hmac",
    "esp-null esp-sha512-hmac",
]
AH_TRANSFORMS = ["ah-md5-hmac", "ah-sha-hmac", "ah-sha256-hmac"]
BUNDLES = [
    ("ah-sha-hmac", "esp-aes esp-sha-hmac"),
    ("ah-sha256-hmac", "esp-gcm 256"),
    ("ah-md5-hmac", "esp-3des esp-md5-hmac"),
]
# ESN (RFC 4304): the 32 high bits go into the ICV (HMAC, AH) or the AAD (AEAD).
ESN_TRANSFORMS = [
    "esp-aes esp-sha-hmac",
    "esp-aes 256 esp-sha256-hmac",
    "esp-null esp-sha512-hmac",
    "esp-gcm 128",
    "esp-gmac 128",
    "esp-chacha20-poly1305",
    "esp-aes-ccm 128",
    "esp-aes-ctr 128 esp-sha-hmac",
    "ah-sha-hmac",
    "ah-sha256-hmac",
]
# Last used sequence number before the ESN batch: packets carry 2^32-2 .. 2^32+8.
ESN_SEQ = 2**32 - 3


# -- packets -----------------------------------------------------------------------


def make_inner(size: int, i: int) -> bytes:
    """An IPv4 packet of exactly ``size`` bytes with varied TOS / DF / ID / TTL.

    UDP from 28 bytes on (so transport mode carries a real upper layer), otherwise a bare
    header with protocol 253 (RFC 3692 experimentation) and a few payload bytes.
    """
    rng = random.Random(size * 1000 + i)
    tos = (rng.randrange(64) << 2) | (i % 4)  # every ECN codepoint turns up
    hdr = dict(src=INNER_SRC, dst=INNER_DST, tos=tos, id=rng.randrange(65536),
               flags="DF" if i % 2 else 0, ttl=rng.randrange(1, 256))
    if size >= 28:
        body = bytes(rng.randrange(256) for _ in range(size - 28))
        pkt = IP(**hdr) / UDP(sport=1000 + i, dport=2000 + size) / Raw(body)
    else:
        pkt = IP(proto=253, **hdr) / Raw(bytes(rng.randrange(256) for _ in range(size - 20)))
    raw = bytes(pkt)
    assert len(raw) == size
    return raw


INNERS = [make_inner(s, i) for i, s in enumerate(SIZES)]


def ipv4_checksum_ok(hdr: bytes) -> bool:
    total = sum(struct.unpack(f"!{len(hdr) // 2}H", hdr))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total == 0xFFFF


# -- SA construction ---------------------------------------------------------------


@dataclass
class Keys:
    cipher: bytes | None
    auth: bytes | None


def keys_for(spec: str, seed: str) -> Keys:
    t = parse_transforms(spec)
    rng = random.Random(seed)
    if t.has_ah:
        return Keys(None, rng.randbytes(t.ah_key_length))
    ck = rng.randbytes(t.cipher_key_length) if t.cipher_key_length else None
    ak = rng.randbytes(t.auth_key_length) if t.auth_key_length else None
    return Keys(ck, ak)


def ours(spec: str, keys: Keys, mode: str, spi: int, *, seq: int = 0, esn: bool = False,
         replay_window: int = 64) -> object:
    t = parse_transforms(spec)
    protocol = "ah" if t.has_ah else "esp"
    return SecurityAssociation(
        protocol, spi, spec, cipher_key=keys.cipher, auth_key=keys.auth, mode=mode,
        local=LOCAL, peer=PEER, replay_window=replay_window, esn=esn, seq=seq,
    )


def theirs(spec: str, keys: Keys, mode: str, spi: int, *, seq_num: int = 1,
           esn: bool = False) -> ScapySA:
    t = parse_transforms(spec)
    tunnel = IP(src=LOCAL, dst=PEER) if mode == "tunnel" else None
    if t.has_ah:
        assert t.ah is not None
        return ScapySA(AH, spi=spi, seq_num=seq_num, auth_algo=SCAPY_AUTH[t.ah.keyword],
                       auth_key=keys.auth, tunnel_header=tunnel, esn_en=esn)
    crypt = SCAPY_CIPHER[t.esp_cipher.keyword] if t.esp_cipher else "NULL"
    auth = SCAPY_AUTH[t.esp_auth.keyword] if t.esp_auth else None
    return ScapySA(ESP, spi=spi, seq_num=seq_num, crypt_algo=crypt, crypt_key=keys.cipher,
                   auth_algo=auth, auth_key=keys.auth, tunnel_header=tunnel, esn_en=esn)


def run(sa: object, op: str, pkts: Sequence[bytes]) -> list[bytes]:
    """``sa.encapsulate`` / ``sa.decapsulate`` on a batch; every packet must succeed."""
    res = getattr(sa, op)(PacketBatch.from_list(pkts))
    status = np.asarray(res.status)
    assert status.dtype == np.uint8 and status.shape == (len(pkts),)
    assert status.tolist() == [0] * len(pkts), f"{op} statuses: {status.tolist()}"
    out = res.packets.to_list()
    assert len(out) == len(pkts)
    return out


# -- wire-format checks ------------------------------------------------------------


def check_outer(wire: bytes, inner: bytes, mode: str, proto: int) -> None:
    ihl = (wire[0] & 0x0F) * 4
    hdr = wire[:ihl]
    assert wire[0] == 0x45, "outer header: IPv4 without options"
    assert struct.unpack("!H", hdr[2:4])[0] == len(wire), "outer total length"
    assert hdr[9] == proto, "outer protocol"
    assert ipv4_checksum_ok(hdr), "outer header checksum"
    if mode == "tunnel":
        assert hdr[12:16] == bytes(map(int, LOCAL.split("."))), "tunnel source = local"
        assert hdr[16:20] == bytes(map(int, PEER.split("."))), "tunnel destination = peer"
        assert hdr[8] == 64, "tunnel TTL"
        assert hdr[1] >> 2 == inner[1] >> 2, "DSCP copied (RFC 4301 §5.1.2.1)"
        assert hdr[1] & 3 == inner[1] & 3, "ECN copied (RFC 6040 §4.1 normal mode)"
        assert hdr[6] & 0x40 == inner[6] & 0x40, "DF copied"
        assert hdr[6] & 0x3F == 0 and hdr[7] == 0, "outer header is not a fragment"
    else:
        # RFC 4303 §3.1.1 / RFC 4302 §3.1.1: only protocol, length, checksum change.
        for lo, hi in ((0, 2), (4, 9), (12, 20)):
            assert hdr[lo:hi] == inner[lo:hi], f"transport header bytes {lo}..{hi - 1}"


def check_esp_trailer(ssa: ScapySA, wire: bytes, inner: bytes, mode: str,
                      esn_hi: int) -> None:
    """Padding 1, 2, 3, ..., the minimum pad length, and the next header (RFC 4303 §2.4)."""
    esp = IP(wire)[ESP]
    algo = ssa.crypt_algo
    icv = ssa.crypt_icv_size or algo.icv_size or ssa.auth_algo.icv_size
    plain = algo.decrypt(ssa, esp, ssa.crypt_key, icv, esn_en=ssa.esn_en, esn=esn_hi)
    assert plain.padding == bytes(range(1, plain.padlen + 1)), "RFC 4303 §2.4 padding"
    payload = len(inner) if mode == "tunnel" else len(inner) - 20
    align = 4 if algo.block_size <= 4 else algo.block_size
    assert plain.padlen == -(payload + 2) % align, "minimum padding"
    assert plain.nh == (4 if mode == "tunnel" else inner[9]), "next header"
    assert len(plain.iv) == algo.iv_size


def seq_and_hi(first: int, n: int) -> list[tuple[int, int]]:
    return [((first + i) & 0xFFFFFFFF, (first + i) >> 32) for i in range(n)]


def scapy_decrypt(ssa: ScapySA, wire: bytes, esn_hi: int) -> bytes:
    return bytes(ssa.decrypt(IP(wire), esn=esn_hi))


def scapy_encrypt(ssa: ScapySA, inner: bytes, seq: int) -> bytes:
    lo, hi = seq & 0xFFFFFFFF, seq >> 32
    # scapy takes ``seq_num or self.seq_num`` / ``esn or self.esn``: set them on the SA.
    ssa.seq_num, ssa.esn = lo, hi
    return bytes(ssa.encrypt(IP(inner)))


# -- ESP / AH, both ways -----------------------------------------------------------


def _ours_to_scapy(spec: str, mode: str, *, seq: int = 0, esn: bool = False) -> None:
    keys = keys_for(spec, spec + mode)
    t = parse_transforms(spec)
    proto = 51 if t.has_ah else 50
    spi = 0x1000 + len(spec)
    tx = ours(spec, keys, mode, spi, seq=seq, esn=esn)
    wires = run(tx, "encapsulate", INNERS)
    ssa = theirs(spec, keys, mode, spi, esn=esn)
    for (lo, hi), inner, wire in zip(seq_and_hi(seq + 1, len(INNERS)), INNERS, wires,
                                      strict=True):
        size = f"inner packet of {len(inner)} bytes"
        check_outer(wire, inner, mode, proto)
        layer = IP(wire)[AH if t.has_ah else ESP]
        assert (layer.spi, layer.seq) == (spi, lo), f"SPI / sequence number, {size}"
        if t.has_ah:
            assert layer.nh == (4 if mode == "tunnel" else inner[9]), f"AH next header, {size}"
            assert len(layer.icv) == t.ah.icv_length, size  # type: ignore[union-attr]
        else:
            check_esp_trailer(ssa, wire, inner, mode, hi)
        assert scapy_decrypt(ssa, wire, hi) == inner, f"scapy's plaintext differs, {size}"
    assert tx.seq == seq + len(INNERS)


def _scapy_to_ours(spec: str, mode: str, *, seq: int = 0, esn: bool = False) -> None:
    keys = keys_for(spec, spec + mode + "rx")
    spi = 0x2000 + len(spec)
    ssa = theirs(spec, keys, mode, spi, esn=esn)
    wires = [scapy_encrypt(ssa, inner, seq + 1 + i) for i, inner in enumerate(INNERS)]
    rx = ours(spec, keys, mode, spi, seq=seq, esn=esn)
    for inner, got in zip(INNERS, run(rx, "decapsulate", wires), strict=True):
        assert got == inner, f"our plaintext differs, inner packet of {len(inner)} bytes"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("spec", ESP_TRANSFORMS + AH_TRANSFORMS)
def test_ours_to_scapy(spec: str, mode: str) -> None:
    _ours_to_scapy(spec, mode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("spec", ESP_TRANSFORMS + AH_TRANSFORMS)
def test_scapy_to_ours(spec: str, mode: str) -> None:
    _scapy_to_ours(spec, mode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("spec", ESN_TRANSFORMS)
def test_esn_ours_to_scapy(spec: str, mode: str) -> None:
    """ESN across 2^32: sequence numbers 2^32-2 .. 2^32+8 on the wire as their low half."""
    _ours_to_scapy(spec, mode, seq=ESN_SEQ, esn=True)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("spec", ESN_TRANSFORMS)
def test_esn_scapy_to_ours(spec: str, mode: str) -> None:
    _scapy_to_ours(spec, mode, seq=ESN_SEQ, esn=True)


def test_esn_high_bits_are_authenticated() -> None:
    """An ESN packet verified with the wrong high half fails (scapy and us agree)."""
    spec = "esp-aes esp-sha-hmac"
    keys = keys_for(spec, "esn-hi")
    tx = ours(spec, keys, "tunnel", 0x77, seq=2**32 + 10, esn=True)
    wire = run(tx, "encapsulate", INNERS[:1])[0]
    ssa = theirs(spec, keys, "tunnel", 0x77, esn=True)
    assert scapy_decrypt(ssa, wire, 1) == INNERS[0]
    from scapy.layers.ipsec import IPSecIntegrityError

    with pytest.raises(IPSecIntegrityError):
        scapy_decrypt(ssa, wire, 2)


# -- AH + ESP bundles (ESP first, AH transport outside it) ------------------------


def _bundle(ah_spec: str, esp_spec: str, mode: str, seq: int = 0) -> tuple:
    ek, ak = keys_for(esp_spec, esp_spec + mode), keys_for(ah_spec, ah_spec + mode)
    return ek, ak


def scapy_ah_over_esp(s_ah: ScapySA, esp_wire: bytes) -> bytes:
    """AH (transport) over an ESP packet, from scapy's own pieces.

    ``ScapySA.encrypt`` cannot do this: ``AuthAlgo.sign`` tests ``haslayer(ESP)`` before
    ``haslayer(AH)``, so on AH-over-ESP it appends the MAC to the ESP data and leaves
    the AH ICV zero (scapy 2.8.0, layers/ipsec.py). Its verify side is right, so we
    build the packet as ``_encrypt_ah`` does and sign it as ``sign``'s AH branch does.
    """
    ip = IP(esp_wire)
    payload = bytes(ip.payload)
    icv_len = s_ah.auth_algo.icv_size
    ah = AH(nh=ip.proto, spi=s_ah.spi, seq=s_ah.seq_num, icv=b"\0" * icv_len,
            payloadlen=(12 + icv_len) // 4 - 2)
    s_ah.seq_num += 1
    hdr = ip.copy()
    hdr.remove_payload()
    hdr.proto, hdr.len, hdr.chksum = 51, len(esp_wire) + 12 + icv_len, None
    pkt = IP(bytes(hdr / ah / Raw(payload)))
    mac = s_ah.auth_algo.new_mac(s_ah.auth_key)
    mac.update(bytes(zero_mutable_fields(pkt.copy(), sending=True)))
    pkt[AH].icv = mac.finalize()[:icv_len]
    return bytes(pkt)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("ah_spec", "esp_spec"), BUNDLES)
def test_bundle_ours_to_scapy(ah_spec: str, esp_spec: str, mode: str) -> None:
    ek, ak = _bundle(ah_spec, esp_spec, mode)
    bundle = SaBundle(ours(esp_spec, ek, mode, 0x3001), ours(ah_spec, ak, mode, 0x3002))
    wires = run(bundle, "encapsulate", INNERS)
    s_esp = theirs(esp_spec, ek, mode, 0x3001)
    s_ah = theirs(ah_spec, ak, "transport", 0x3002)
    for i, (inner, wire) in enumerate(zip(INNERS, wires, strict=True)):
        check_outer(wire, inner, mode, 51)
        ah = IP(wire)[AH]
        assert (ah.spi, ah.seq, ah.nh) == (0x3002, i + 1, 50)
        esp_pkt = bytes(s_ah.decrypt(IP(wire)))
        check_outer(esp_pkt, inner, mode, 50)
        assert IP(esp_pkt)[ESP].seq == i + 1
        assert scapy_decrypt(s_esp, esp_pkt, 0) == inner


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("ah_spec", "esp_spec"), BUNDLES)
def test_bundle_scapy_to_ours(ah_spec: str, esp_spec: str, mode: str) -> None:
    ek, ak = _bundle(ah_spec, esp_spec, mode)
    s_esp = theirs(esp_spec, ek, mode, 0x4001)
    s_ah = theirs(ah_spec, ak, "transport", 0x4002)
    wires = [scapy_ah_over_esp(s_ah, bytes(s_esp.encrypt(IP(p)))) for p in INNERS]
    bundle = SaBundle(ours(esp_spec, ek, mode, 0x4001), ours(ah_spec, ak, mode, 0x4002))
    assert run(bundle, "decapsulate", wires) == INNERS
