"""SecurityAssociation / SaBundle over the compiled core.

Round trips for every transform x mode x ESP / AH / bundle; an independent oracle (the
``cryptography`` package, RFC layouts written out here) that opens what we send and builds
packets we must open; ESN; sequence and IV exhaustion; replay window edges; outer header
fields (RFC 6040 ECN, DF, TTL, IP ID); argument validation; keys never in repr; close()
wipes; counters.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as c_hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM, ChaCha20Poly1305

from ipsecfast import _esp
from ipsecfast.exceptions import UnsupportedTransform
from ipsecfast.packets import PacketBatch
from ipsecfast.sa import SaBundle, SecurityAssociation
from ipsecfast.status import Status
from ipsecfast.transform import TRANSFORM_KEYWORDS, parse_transforms

LOCAL, PEER = "192.0.2.1", "198.51.100.2"


# --- packets ---------------------------------------------------------------------------
def checksum(hdr: bytes) -> int:
    acc = sum(struct.unpack(f"!{len(hdr) // 2}H", hdr))
    while acc >> 16:
        acc = (acc & 0xFFFF) + (acc >> 16)
    return ~acc & 0xFFFF


def ipv4(payload: bytes, proto: int = 17, tos: int = 0, flags: int = 0x4000, ident: int = 7,
         options: bytes = b"", src: str = "10.0.0.1", dst: str = "10.0.0.2") -> bytes:
    ihl = 20 + len(options)
    hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x40 | ihl // 4, tos, ihl + len(payload),
                                ident, flags, 61, proto, 0, bytes(map(int, src.split("."))),
                                bytes(map(int, dst.split("."))))) + options
    hdr[10:12] = struct.pack("!H", checksum(bytes(hdr)))
    return bytes(hdr) + payload


def batch_of(sizes: list[int], seed: int = 1) -> PacketBatch:
    rng = np.random.default_rng(seed)
    return PacketBatch.from_list(
        [ipv4(rng.integers(0, 256, n, dtype=np.uint8).tobytes(), proto=(6, 17, 1)[i % 3],
              tos=int(rng.integers(0, 256)), ident=i) for i, n in enumerate(sizes)])


SIZES = [0, 1, 2, 3, 14, 15, 16, 17, 31, 64, 100, 511, 1000, 1480]


# --- SA factories ----------------------------------------------------------------------------
def keys_for(spec: str, protocol: str) -> tuple[bytes | None, bytes | None]:
    ts = parse_transforms(spec)
    if protocol == "ah":
        return None, os.urandom(ts.ah_key_length)
    ck = os.urandom(ts.cipher_key_length) if ts.cipher_key_length else None
    ak = os.urandom(ts.auth_key_length) if ts.auth_key_length else None
    return ck, ak


def make_sa(spec: str, protocol: str = "esp", mode: str = "tunnel", **kw: Any) -> SecurityAssociation:
    ck, ak = keys_for(spec, protocol)
    kw.setdefault("local", LOCAL)
    kw.setdefault("peer", PEER)
    return SecurityAssociation(protocol, kw.pop("spi", 0x1001), spec,  # type: ignore[arg-type]
                               cipher_key=ck, auth_key=ak, mode=mode, **kw)  # type: ignore[arg-type]


ESP_SPECS = [
    "esp-aes esp-sha-hmac", "esp-aes 192 esp-md5-hmac", "esp-aes 256 esp-sha256-hmac",
    "esp-3des esp-md5-hmac", "esp-des esp-sha-hmac", "esp-null esp-sha384-hmac",
    "esp-null esp-sha512-hmac", "esp-aes", "esp-3des", "esp-sha-hmac",
    "esp-gcm", "esp-gcm 192", "esp-gcm 256", "esp-gmac", "esp-gmac 256",
    "esp-chacha20-poly1305", "esp-aes-ctr", "esp-aes-ctr 256 esp-sha-hmac",
    "esp-aes-ccm", "esp-aes-ccm 192", "esp-aes-ccm 256",
]
AH_SPECS = ["ah-md5-hmac", "ah-sha-hmac", "ah-sha256-hmac"]


def test_every_transform_keyword_is_exercised() -> None:
    used = {w for spec in ESP_SPECS + AH_SPECS for w in spec.split() if not w.isdigit()}
    assert used == set(TRANSFORM_KEYWORDS)


def test_status_codes_match_core() -> None:
    for name, code in _esp.STATUS_CODES.items():
        assert Status[name] == code
    for st in Status:
        if st < 32:
            assert _esp.STATUS_CODES[st.name] == st


# --- round trips -------------------------------------------------------------------------------
@pytest.mark.parametrize("esn", [False, True], ids=["seq32", "esn"])
@pytest.mark.parametrize("mode", ["tunnel", "transport"])
@pytest.mark.parametrize("spec", ESP_SPECS)
def test_esp_round_trip(spec: str, mode: str, esn: bool) -> None:
    sa = make_sa(spec, mode=mode, esn=esn, seq=(2**32 - 3) if esn else 0)
    b = batch_of(SIZES)
    enc = sa.encapsulate(b)
    assert enc.all_ok, enc.counts()
    proto = enc.packets.byte_at(9)
    assert (proto == 50).all()
    dec = sa.decapsulate(enc.packets)
    assert dec.all_ok, dec.counts()
    assert dec.packets.to_list() == b.to_list()
    for res in (enc, dec):  # core-made batches satisfy PacketBatch's own range check
        p = res.packets
        PacketBatch(p.buffer, p.offsets, p.lengths)
    assert sa.seq == (2**32 - 3 if esn else 0) + len(SIZES)
    # RFC 4303 §2.4: ESP payload + trailer fills the cipher block and a 4-byte boundary
    hdr = 20
    esp_len = enc.packets.lengths - hdr
    assert (esp_len % 4 == 0).all()
    c = sa.counters
    assert c["packets_encapsulated"] == c["packets_decapsulated"] == len(SIZES)
    assert c["bytes_encapsulated"] == c["bytes_decapsulated"] == b.nbytes


@pytest.mark.parametrize("esn", [False, True], ids=["seq32", "esn"])
@pytest.mark.parametrize("mode", ["tunnel", "transport"])
@pytest.mark.parametrize("spec", AH_SPECS)
def test_ah_round_trip(spec: str, mode: str, esn: bool) -> None:
    sa = make_sa(spec, "ah", mode=mode, esn=esn)
    b = batch_of(SIZES)
    enc = sa.encapsulate(b)
    assert enc.all_ok, enc.counts()
    assert (enc.packets.byte_at(9) == 51).all()
    dec = sa.decapsulate(enc.packets)
    assert dec.all_ok, dec.counts()
    assert dec.packets.to_list() == b.to_list()


@pytest.mark.parametrize("mode", ["tunnel", "transport"])
@pytest.mark.parametrize("ah_spec,esp_spec", [("ah-sha-hmac", "esp-aes esp-sha-hmac"),
                                              ("ah-sha256-hmac", "esp-gcm 256"),
                                              ("ah-md5-hmac", "esp-3des esp-md5-hmac")])
def test_bundle_round_trip(ah_spec: str, esp_spec: str, mode: str) -> None:
    spec = f"{ah_spec} {esp_spec}"
    esp = make_sa(spec, "esp", mode=mode, spi=0x2000)
    ah = make_sa(spec, "ah", mode="transport", spi=0x2001)
    bundle = SaBundle(esp, ah)
    b = batch_of(SIZES)
    enc = bundle.encapsulate(b)
    assert enc.all_ok
    pkts = enc.packets
    # AH outside ESP: IP(proto 51) | AH(next header 50) | ESP
    assert (pkts.byte_at(9) == 51).all() and (pkts.byte_at(20) == 50).all()
    assert (pkts.u32_at(24) == 0x2001).all() and (pkts.u32_at(20 + ah.transforms.ah.icv_length + 12) == 0x2000).all()  # type: ignore[union-attr]
    dec = bundle.decapsulate(pkts)
    assert dec.all_ok, dec.counts()
    assert dec.packets.to_list() == b.to_list()
    assert bundle.seq == len(SIZES)


def test_bundle_failure_keeps_first_reason_and_is_not_counted_twice() -> None:
    spec = "ah-sha-hmac esp-aes esp-sha-hmac"
    bundle = SaBundle(make_sa(spec, "esp", spi=0x2000), make_sa(spec, "ah", "transport", spi=0x2001))
    enc = bundle.encapsulate(batch_of([10, 20, 30]))
    bad = bytearray(enc.packets[1])
    bad[-1] ^= 0xFF
    res = bundle.decapsulate(PacketBatch.from_list([enc.packets[0], bytes(bad), enc.packets[2]]))
    assert res.status.tolist() == [0, Status.ICV_MISMATCH, 0]
    assert res.packets.lengths[1] == 0
    assert bundle.ah.counters["icv-mismatch"] == 1
    assert bundle.esp.counters["truncated"] == 0 and bundle.esp.counters["packets_decapsulated"] == 2


def test_esp_with_ip_options_round_trip() -> None:
    b = PacketBatch.from_list([ipv4(b"x" * 40, options=b"\x01\x01\x01\x00")])
    for mode in ("tunnel", "transport"):
        sa = make_sa("esp-gcm", mode=mode)
        enc = sa.encapsulate(b)
        assert enc.all_ok
        dec = sa.decapsulate(enc.packets)
        assert dec.all_ok and dec.packets.to_list() == b.to_list()


def test_empty_batch() -> None:
    sa = make_sa("esp-aes esp-sha-hmac")
    res = sa.encapsulate(PacketBatch.empty())
    assert len(res.packets) == 0 and res.status.size == 0
    assert len(sa.decapsulate(PacketBatch.empty()).packets) == 0


# --- oracle: cryptography opens what we send, and builds what we must open -----------------
def _aead_open(spec: str, key: bytes, esp: bytes, icv: int, hi: int | None) -> bytes:
    spi_seq, iv, rest = esp[:8], esp[8:16], esp[16:]
    ct, tag = rest[:-icv], rest[-icv:]
    aad = spi_seq if hi is None else spi_seq[:4] + struct.pack("!I", hi) + spi_seq[4:]
    if spec.startswith("esp-gcm"):
        return AESGCM(key[:-4]).decrypt(key[-4:] + iv, ct + tag, aad)
    if spec.startswith("esp-chacha"):
        return ChaCha20Poly1305(key[:-4]).decrypt(key[-4:] + iv, ct + tag, aad)
    if spec.startswith("esp-aes-ccm"):
        return AESCCM(key[:-3], tag_length=icv).decrypt(key[-3:] + iv, ct + tag, aad)
    if spec.startswith("esp-gmac"):
        # RFC 4543: everything is AAD, the plaintext is empty
        AESGCM(key[:-4]).decrypt(key[-4:] + iv, tag, aad + iv + ct)
        return ct
    raise AssertionError(spec)


def _hmac(alg: hashes.HashAlgorithm, key: bytes, data: bytes, n: int) -> bytes:
    h = c_hmac.HMAC(key, alg)
    h.update(data)
    return h.finalize()[:n]


_CBC = {"esp-aes": (algorithms.AES, 16), "esp-aes 256": (algorithms.AES, 16),
        "esp-3des": (TripleDES, 8)}
_HASH = {"esp-sha-hmac": (hashes.SHA1(), 12), "esp-md5-hmac": (hashes.MD5(), 12),
         "esp-sha256-hmac": (hashes.SHA256(), 16)}


def _strip_trailer(pt: bytes) -> tuple[bytes, int]:
    padlen, nh = pt[-2], pt[-1]
    assert pt[-2 - padlen:-2] == bytes(range(1, padlen + 1))
    return pt[:-2 - padlen], nh


@pytest.mark.parametrize("esn", [False, True], ids=["seq32", "esn"])
@pytest.mark.parametrize("cipher,integ", [("esp-aes", "esp-sha-hmac"),
                                          ("esp-aes 256", "esp-sha256-hmac"),
                                          ("esp-3des", "esp-md5-hmac")])
def test_oracle_opens_our_cbc_hmac(cipher: str, integ: str, esn: bool) -> None:
    seq0 = 2**32 - 2 if esn else 5
    ck, ak = keys_for(f"{cipher} {integ}", "esp")
    sa = SecurityAssociation("esp", 0xABCDEF01, f"{cipher} {integ}", ck, ak, local=LOCAL,
                             peer=PEER, esn=esn, seq=seq0)
    b = batch_of([0, 33, 700, 1400])
    enc = sa.encapsulate(b)
    assert enc.all_ok
    alg, block = _CBC[cipher]
    halg, icv = _HASH[integ]
    assert ck is not None and ak is not None
    for i, (pkt, orig) in enumerate(zip(enc.packets.to_list(), b.to_list(), strict=True)):
        assert checksum(pkt[:20]) == 0 and pkt[8] == 64 and pkt[12:16] == bytes([192, 0, 2, 1])
        esp = pkt[20:]
        seq = seq0 + 1 + i
        assert struct.unpack("!II", esp[:8]) == (0xABCDEF01, seq & 0xFFFFFFFF)
        body, mac = esp[:-icv], esp[-icv:]
        hi = struct.pack("!I", seq >> 32) if esn else b""
        assert mac == _hmac(halg, ak, body + hi, icv)  # RFC 4303 §2.2.1: ESN high bits appended
        iv, ct = body[8:8 + block], body[8 + block:]
        dec = Cipher(alg(ck), modes.CBC(iv)).decryptor()
        inner, nh = _strip_trailer(dec.update(ct) + dec.finalize())
        assert nh == 4 and inner == orig


@pytest.mark.parametrize("esn", [False, True], ids=["seq32", "esn"])
@pytest.mark.parametrize("spec", ["esp-gcm", "esp-gcm 256", "esp-chacha20-poly1305",
                                  "esp-aes-ccm", "esp-gmac"])
def test_oracle_opens_our_aead(spec: str, esn: bool) -> None:
    ck, _ = keys_for(spec, "esp")
    assert ck is not None
    seq0 = 2**32 - 2 if esn else 0
    sa = SecurityAssociation("esp", 0x51, spec, ck, mode="transport", esn=esn, seq=seq0,
                             _iv_counter=1000)
    b = batch_of([0, 5, 64, 1400])
    enc = sa.encapsulate(b)
    assert enc.all_ok
    for i, (pkt, orig) in enumerate(zip(enc.packets.to_list(), b.to_list(), strict=True)):
        seq = seq0 + 1 + i
        esp = pkt[20:]
        assert esp[8:16] == struct.pack("!Q", 1000 + i)  # counter IV, never repeats
        pt = _aead_open(spec, ck, esp, 16, (seq >> 32) if esn else None)
        payload, nh = _strip_trailer(pt)
        assert nh == orig[9] and payload == orig[20:]
        # transport: the original header now says ESP, with a new length and checksum
        assert pkt[9] == 50 and struct.unpack("!H", pkt[2:4])[0] == len(pkt)
        assert checksum(pkt[:20]) == 0 and pkt[:2] == orig[:2] and pkt[4:9] == orig[4:9]


def test_oracle_ctr() -> None:
    spec = "esp-aes-ctr esp-sha-hmac"
    ck, ak = keys_for(spec, "esp")
    assert ck is not None and ak is not None
    sa = SecurityAssociation("esp", 0x77, spec, ck, ak, local=LOCAL, peer=PEER)
    b = batch_of([0, 99])
    for pkt, orig in zip(sa.encapsulate(b).packets.to_list(), b.to_list(), strict=True):
        esp = pkt[20:]
        assert esp[-12:] == _hmac(hashes.SHA1(), ak, esp[:-12], 12)
        iv = esp[8:16]
        # RFC 3686 §4: nonce || IV || counter 1
        d = Cipher(algorithms.AES(ck[:-4]), modes.CTR(ck[-4:] + iv + b"\0\0\0\1")).decryptor()
        inner, nh = _strip_trailer(d.update(esp[16:-12]) + d.finalize())
        assert nh == 4 and inner == orig


def test_oracle_ah() -> None:
    key = os.urandom(20)
    for esn in (False, True):
        sa = SecurityAssociation("ah", 0x99, "ah-sha-hmac", auth_key=key, mode="transport",
                                 esn=esn, seq=2**32 + 6 if esn else 6)
        orig = ipv4(b"payload!" * 9, tos=0xB8, flags=0x4000)
        pkt = sa.encapsulate(PacketBatch.from_list([orig])).packets[0]
        assert pkt[9] == 51 and len(pkt) == len(orig) + 24 and checksum(pkt[:20]) == 0
        ah = pkt[20:44]
        assert ah[0] == 17 and ah[1] == 4 and struct.unpack("!II", ah[4:12]) == (0x99, 7)
        # RFC 4302 §3.3.3.1: mutable fields zeroed, ICV field zeroed, ESN high bits appended
        z = bytearray(pkt[:20])
        z[1] = z[6] = z[7] = z[8] = z[10] = z[11] = 0
        data = bytes(z) + ah[:12] + bytes(12) + pkt[44:] + (struct.pack("!I", 1) if esn else b"")
        assert ah[12:24] == _hmac(hashes.SHA1(), key, data, 12)


def _oracle_esp_gcm_tunnel(key: bytes, spi: int, seq: int, iv: bytes, inner: bytes,
                           outer_tos: int = 0) -> bytes:
    pad = (-(len(inner) + 2)) % 4
    pt = inner + bytes(range(1, pad + 1)) + bytes([pad, 4])
    hdr = struct.pack("!II", spi, seq)
    ct = AESGCM(key[:-4]).encrypt(key[-4:] + iv, pt, hdr)
    return ipv4(hdr + iv + ct, proto=50, tos=outer_tos, src=PEER, dst=LOCAL)


def test_we_open_oracle_gcm_packets() -> None:
    key = os.urandom(20)
    sa = SecurityAssociation("esp", 0x4242, "esp-gcm", key, local=LOCAL, peer=PEER)
    inner = [ipv4(os.urandom(n)) for n in (0, 1, 2, 3, 500)]
    pkts = [_oracle_esp_gcm_tunnel(key, 0x4242, i + 1, os.urandom(8), p) for i, p in enumerate(inner)]
    res = sa.decapsulate(PacketBatch.from_list(pkts))
    assert res.all_ok and res.packets.to_list() == inner


def test_we_open_oracle_cbc_hmac_packets() -> None:
    ck, ak = os.urandom(32), os.urandom(32)
    sa = SecurityAssociation("esp", 0x10, "esp-aes 256 esp-sha256-hmac", ck, ak, mode="transport")
    orig = ipv4(os.urandom(77), proto=6)
    payload = orig[20:]
    pad = (-(len(payload) + 2)) % 16
    pt = payload + bytes(range(1, pad + 1)) + bytes([pad, 6])
    iv = os.urandom(16)
    e = Cipher(algorithms.AES(ck), modes.CBC(iv)).encryptor()
    body = struct.pack("!II", 0x10, 1) + iv + e.update(pt) + e.finalize()
    esp = body + _hmac(hashes.SHA256(), ak, body, 16)
    res = sa.decapsulate(PacketBatch.from_list([ipv4(esp, proto=50)]))
    assert res.all_ok
    assert res.packets[0] == orig


# --- ESN -----------------------------------------------------------------------------------
def test_esn_crosses_2_to_32() -> None:
    rx = SecurityAssociation("esp", 0x1001, "esp-aes esp-sha-hmac", b"k" * 16, b"a" * 20,
                             local=LOCAL, peer=PEER, esn=True, seq=2**32 - 3)
    sa = SecurityAssociation("esp", 0x1001, "esp-aes esp-sha-hmac", b"k" * 16, b"a" * 20,
                             local=LOCAL, peer=PEER, esn=True, seq=2**32 - 3)
    enc = sa.encapsulate(batch_of([10] * 6))
    assert enc.all_ok
    assert enc.packets.u32_at(24).tolist() == [2**32 - 2, 2**32 - 1, 0, 1, 2, 3]
    assert sa.seq == 2**32 + 3
    # out of order across the boundary, then a replay of each
    order = [3, 1, 0, 5, 2, 4]
    res = rx.decapsulate(enc.packets[np.array(order)])
    assert res.all_ok, res.counts()
    assert (rx.decapsulate(enc.packets).status == Status.REPLAY).all()


def test_esn_high_bits_are_authenticated() -> None:
    # same on-wire packet, receiver one 2^32 epoch apart: the ICV fails
    tx = SecurityAssociation("esp", 0x1001, "esp-gcm", b"k" * 20, local=LOCAL, peer=PEER,
                             esn=True, seq=5)
    rx = SecurityAssociation("esp", 0x1001, "esp-gcm", b"k" * 20, local=LOCAL, peer=PEER,
                             esn=True, seq=2**32 + 5)
    enc = tx.encapsulate(batch_of([10]))
    assert rx.decapsulate(enc.packets).status[0] == Status.ICV_MISMATCH


def test_without_esn_the_sequence_number_is_exhausted() -> None:
    sa = make_sa("esp-aes esp-sha-hmac", seq=2**32 - 3)
    res = sa.encapsulate(batch_of([10] * 4))
    assert res.status.tolist() == [0, 0, Status.SEQ_EXHAUSTED, Status.SEQ_EXHAUSTED]
    assert res.packets.lengths[2:].tolist() == [0, 0]
    assert sa.seq == 2**32 - 1
    assert sa.counters["seq-exhausted"] == 2
    assert (sa.encapsulate(batch_of([1])).status == Status.SEQ_EXHAUSTED).all()
    ah = make_sa("ah-sha-hmac", "ah", seq=2**32 - 1)
    assert ah.encapsulate(batch_of([1])).status[0] == Status.SEQ_EXHAUSTED


def test_esn_sequence_exhaustion_at_2_to_64() -> None:
    sa = make_sa("esp-gcm", esn=True, seq=2**64 - 2)
    assert sa.encapsulate(batch_of([1, 1])).status.tolist() == [0, Status.SEQ_EXHAUSTED]


def test_counter_iv_never_repeats() -> None:
    sa = make_sa("esp-gcm", mode="transport", _iv_counter=2**64 - 3)
    res = sa.encapsulate(batch_of([1, 1, 1, 1]))
    assert res.status.tolist() == [0, 0, Status.IV_EXHAUSTED, Status.IV_EXHAUSTED]
    ivs = [p[28:36] for p in res.packets.to_list()[:2]]
    assert ivs == [struct.pack("!Q", 2**64 - 3), struct.pack("!Q", 2**64 - 2)]
    assert sa.seq == 2  # the refused packets consumed no sequence number


def test_default_counter_ivs_are_distinct_and_cbc_ivs_random() -> None:
    gcm = make_sa("esp-gcm", mode="transport")
    ivs = [p[28:36] for p in gcm.encapsulate(batch_of([1] * 50)).packets.to_list()]
    ivs += [p[28:36] for p in gcm.encapsulate(batch_of([1] * 50)).packets.to_list()]
    assert len(set(ivs)) == 100
    cbc = make_sa("esp-aes esp-sha-hmac", mode="transport")
    civs = [p[28:44] for p in cbc.encapsulate(batch_of([1] * 50)).packets.to_list()]
    assert len(set(civs)) == 50


# --- anti-replay window ------------------------------------------------------------------
def _seq_packets(sa_tx_spec: str, seqs: list[int], window: int = 64) -> tuple[SecurityAssociation, list[bytes]]:
    key = b"q" * 20
    rx = SecurityAssociation("esp", 0x1001, sa_tx_spec, key, local=LOCAL, peer=PEER,
                             replay_window=window)
    pkts = []
    for s in seqs:
        tx = SecurityAssociation("esp", 0x1001, sa_tx_spec, key, local=LOCAL, peer=PEER,
                                 seq=s - 1, _iv_counter=s)
        pkts.append(tx.encapsulate(batch_of([20])).packets[0])
    return rx, pkts


@pytest.mark.parametrize("window", [32, 64, 100, 1024])
def test_replay_window_edges(window: int) -> None:
    top = 5000
    rx, pkts = _seq_packets("esp-gcm", [top, top - window + 1, top - window, top, top + 1,
                                        top - window + 1, top + window + 10, top + 10], window)
    res = rx.decapsulate(PacketBatch.from_list(pkts))
    assert res.status.tolist() == [
        0,                      # new top
        0,                      # oldest number inside the window
        Status.OUTSIDE_WINDOW,  # just below it
        Status.REPLAY,          # seen
        0,                      # top + 1 slides the window by one...
        Status.OUTSIDE_WINDOW,  # ...so the oldest number is now just outside
        0,                      # big jump: the window slides by more than its size...
        Status.OUTSIDE_WINDOW,  # ...so top + 10 is now just too old
    ]
    assert rx.counters["replay"] == 1 and rx.counters["outside-window"] == 3


def test_replay_disabled_accepts_duplicates() -> None:
    rx, pkts = _seq_packets("esp-gcm", [10, 10, 1, 10], window=0)
    assert rx.decapsulate(PacketBatch.from_list(pkts)).all_ok


def test_window_advances_only_after_verification() -> None:
    rx, pkts = _seq_packets("esp-gcm", [7])
    bad = bytearray(pkts[0])
    bad[-1] ^= 1
    res = rx.decapsulate(PacketBatch.from_list([bytes(bad), pkts[0], pkts[0]]))
    assert res.status.tolist() == [Status.ICV_MISMATCH, 0, Status.REPLAY]


def test_replay_checked_before_icv() -> None:
    rx, pkts = _seq_packets("esp-gcm", [7])
    bad = bytearray(pkts[0])
    bad[-1] ^= 1
    res = rx.decapsulate(PacketBatch.from_list([pkts[0], bytes(bad)]))
    assert res.status.tolist() == [0, Status.REPLAY]


# --- headers ---------------------------------------------------------------------------------
def test_tunnel_outer_header_fields() -> None:
    sa = make_sa("esp-gcm", _ip_id=0xFFFE)
    b = PacketBatch.from_list([ipv4(b"a" * 30, tos=0xB9, flags=0x4000),
                               ipv4(b"b" * 30, tos=0x02, flags=0x2000 | 5)])
    enc = sa.encapsulate(b)
    assert enc.all_ok
    f = enc.packets.ipv4_fields()
    assert f.tos.tolist() == [0xB9, 0x02]            # DSCP and ECN copied (RFC 6040 normal)
    assert f.flags.tolist() == [0x2, 0x0]            # DF copied, MF not
    assert f.frag_offset.tolist() == [0, 0]
    assert f.ttl.tolist() == [64, 64]
    assert f.ident.tolist() == [0xFFFE, 0xFFFF]
    assert f.src.tolist() == [0xC0000201] * 2 and f.dst.tolist() == [0xC6336402] * 2
    assert all(checksum(p[:20]) == 0 for p in enc.packets.to_list())
    # a fragment is carried whole in tunnel mode
    dec = sa.decapsulate(enc.packets)
    assert dec.packets.to_list() == b.to_list()


@pytest.mark.parametrize("outer,inner,expect", [
    (3, 2, 3), (3, 1, 3), (3, 3, 3), (1, 2, 1), (2, 1, 1), (0, 2, 2), (1, 0, 0), (2, 3, 3),
])
def test_ecn_decapsulation_rfc6040(outer: int, inner: int, expect: int) -> None:
    sa = make_sa("esp-gcm")
    orig = ipv4(b"e" * 20, tos=0x28 | inner)
    pkt = bytearray(sa.encapsulate(PacketBatch.from_list([orig])).packets[0])
    pkt[1] = (pkt[1] & 0xFC) | outer                 # outer ECN is not authenticated
    res = sa.decapsulate(PacketBatch.from_list([bytes(pkt)]))
    assert res.all_ok
    out = res.packets[0]
    assert out[1] == 0x28 | expect and checksum(out[:20]) == 0
    assert out[2:10] == orig[2:10]


def test_ecn_ce_over_not_ect_is_dropped() -> None:
    sa = make_sa("ah-sha-hmac", "ah")
    pkt = bytearray(sa.encapsulate(PacketBatch.from_list([ipv4(b"x", tos=0x28)])).packets[0])
    pkt[1] |= 3
    pkt[10:12] = b"\0\0"
    pkt[10:12] = struct.pack("!H", checksum(bytes(pkt[:20])))
    res = sa.decapsulate(PacketBatch.from_list([bytes(pkt)]))
    assert res.status[0] == Status.ECN_DROP and sa.counters["ecn-drop"] == 1


# --- drops ---------------------------------------------------------------------------------------
def test_decapsulation_drop_reasons() -> None:
    sa = make_sa("esp-aes esp-sha-hmac", mode="transport")
    good = sa.encapsulate(batch_of([40])).packets[0]
    other_spi = bytearray(good)
    other_spi[20:24] = b"\0\0\0\x09"
    frag = bytearray(good)
    frag[6] |= 0x20                                   # MF
    frag[10:12] = b"\0\0"
    not_esp = ipv4(b"x" * 40, proto=17)
    misaligned = ipv4(good[20:-1], proto=50)
    short = ipv4(good[20:40], proto=50)
    res = sa.decapsulate(PacketBatch.from_list(
        [bytes(other_spi), bytes(frag), not_esp, misaligned, short, b"\x45\0", b"\x60" + good[1:]]))
    assert res.status.tolist() == [Status.BAD_SPI, Status.FRAGMENT, Status.BAD_PROTOCOL,
                                   Status.BAD_LENGTH, Status.TRUNCATED, Status.TRUNCATED,
                                   Status.BAD_IP_HEADER]
    assert (res.packets.lengths == 0).all()
    c = sa.counters
    assert c["bad-spi"] == c["fragment"] == c["bad-protocol"] == c["bad-length"] == 1
    assert c["truncated"] == 2 and c["bad-ip-header"] == 1


def test_bad_padding_and_next_header() -> None:
    key = os.urandom(16)
    sa = SecurityAssociation("esp", 0x33, "esp-aes", key, local=LOCAL, peer=PEER)

    def craft(pt: bytes, seq: int) -> bytes:
        iv = os.urandom(16)
        e = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
        return ipv4(struct.pack("!II", 0x33, seq) + iv + e.update(pt) + e.finalize(), proto=50)

    inner = ipv4(b"z" * 10)                           # 30 bytes + pad 0 + 2 = 32
    assert len(inner) == 30
    pkts = [craft(inner + bytes([0, 4]), 1),          # ok
            craft(inner[:28] + b"\x01\x03" + bytes([2, 4]), 2),  # pad 1,3
            craft(inner + bytes([0, 17]), 3),         # tunnel mode needs next header 4
            craft(inner + bytes([0, 59]), 4),         # RFC 4303 §2.6 dummy packet
            craft(inner + bytes([40, 4]), 5),         # pad length longer than the payload
            craft(b"\x99" * 30 + bytes([0, 4]), 6)]   # not an IPv4 packet inside
    res = sa.decapsulate(PacketBatch.from_list(pkts))
    assert res.status.tolist() == [0, Status.BAD_PADDING, Status.BAD_NEXT_HEADER,
                                   Status.BAD_NEXT_HEADER, Status.BAD_PADDING,
                                   Status.BAD_INNER_PACKET]
    # a rejected packet leaves no plaintext behind in the output buffer
    assert res.packets.buffer[len(inner):].tobytes().strip(b"\0") == b""


def test_encapsulation_drop_reasons() -> None:
    sa = make_sa("esp-aes esp-sha-hmac", mode="transport")
    frag = ipv4(b"f" * 10, flags=0x2000)
    res = sa.encapsulate(PacketBatch.from_list([frag, b"\x45", ipv4(b"x")[:-1] + b"",
                                                ipv4(b"y" * 65500)]))
    assert res.status.tolist() == [Status.FRAGMENT, Status.TRUNCATED, Status.BAD_IP_HEADER,
                                   Status.TOO_BIG]
    assert sa.seq == 0


# --- construction, keys, lifecycle ----------------------------------------------------------
def test_key_and_argument_errors() -> None:
    good = dict(local=LOCAL, peer=PEER)
    with pytest.raises(ValueError, match="cipher_key .* 16 bytes"):
        SecurityAssociation("esp", 1, "esp-aes esp-sha-hmac", b"k" * 15, b"a" * 20, **good)
    with pytest.raises(ValueError, match="auth_key .* 20 bytes"):
        SecurityAssociation("esp", 1, "esp-aes esp-sha-hmac", b"k" * 16, b"a" * 16, **good)
    with pytest.raises(ValueError, match="20 bytes"):
        SecurityAssociation("esp", 1, "esp-gcm", b"k" * 16, **good)   # salt missing
    with pytest.raises(ValueError, match="19 bytes"):
        SecurityAssociation("esp", 1, "esp-aes-ccm", b"k" * 16, **good)
    with pytest.raises(ValueError, match="takes no auth_key"):
        SecurityAssociation("esp", 1, "esp-gcm", b"k" * 20, b"a" * 20, **good)
    with pytest.raises(ValueError, match="auth_key"):
        SecurityAssociation("ah", 1, "ah-sha-hmac", b"k" * 20, **good)
    with pytest.raises(TypeError):
        SecurityAssociation("esp", 1, "esp-gcm", "k" * 20, **good)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="local and peer"):
        SecurityAssociation("esp", 1, "esp-gcm", b"k" * 20)
    with pytest.raises(ValueError, match="IPv4"):
        SecurityAssociation("esp", 1, "esp-gcm", b"k" * 20, local="300.1.1.1", peer=PEER)
    with pytest.raises(ValueError, match="spi"):
        SecurityAssociation("esp", 0, "esp-gcm", b"k" * 20, **good)
    with pytest.raises(ValueError, match="replay_window"):
        SecurityAssociation("esp", 1, "esp-gcm", b"k" * 20, replay_window=1025, **good)
    with pytest.raises(ValueError, match="seq"):
        SecurityAssociation("esp", 1, "esp-gcm", b"k" * 20, seq=2**32, **good)
    with pytest.raises(ValueError, match="protocol"):
        SecurityAssociation("gre", 1, "esp-gcm", b"k" * 20, **good)  # type: ignore[arg-type]
    with pytest.raises(UnsupportedTransform):
        SecurityAssociation("ah", 1, "esp-gcm", auth_key=b"k" * 20, **good)
    with pytest.raises(UnsupportedTransform):
        SecurityAssociation("esp", 1, "esp-foo", b"k" * 20, **good)
    with pytest.raises(ValueError, match="ESP SA and an AH SA"):
        SaBundle(make_sa("ah-sha-hmac", "ah"), make_sa("esp-gcm"))


def test_one_transform_set_makes_both_sas_of_a_bundle() -> None:
    spec = ["ah-sha256-hmac", "esp-aes", "256", "esp-sha-hmac"]
    esp = SecurityAssociation("esp", 0x100, spec, b"c" * 32, b"a" * 20, mode="transport")
    ah = SecurityAssociation("ah", 0x101, spec, auth_key=b"h" * 32, mode="transport")
    assert "esp-aes 256" in repr(esp) and ah.protocol == "ah"


def test_keys_not_in_repr_and_close_wipes() -> None:
    ck, ak = b"\x11" * 16 + b"SALT", None
    sa = SecurityAssociation("esp", 0x1234, "esp-gcm", ck, ak, local=LOCAL, peer=PEER)
    text = repr(sa) + str(sa) + repr(sa.counters)
    assert "1111" not in text and "SALT" not in text and "\\x11" not in text
    assert "0x00001234" in text and "esp-gcm" in text
    enc = sa.encapsulate(batch_of([10]))
    assert enc.all_ok
    assert not sa._core.key_material_wiped()
    sa.close()
    assert sa.closed and sa._core.key_material_wiped()
    assert "closed" in repr(sa)
    with pytest.raises(ValueError, match="closed"):
        sa.encapsulate(batch_of([10]))
    with pytest.raises(ValueError, match="closed"):
        sa.decapsulate(enc.packets)
    sa.close()  # idempotent
    with SecurityAssociation("ah", 5, "ah-md5-hmac", auth_key=b"m" * 16, mode="transport") as ah:
        assert not ah.closed
    assert ah.closed and ah._core.key_material_wiped()


def test_counters_by_reason() -> None:
    sa = make_sa("esp-aes 256 esp-sha256-hmac")
    b = batch_of([10, 20, 30])
    enc = sa.encapsulate(b)
    sa.decapsulate(enc.packets)
    sa.decapsulate(enc.packets)                       # all replays
    c = sa.counters
    assert c["packets_encapsulated"] == 3 and c["bytes_encapsulated"] == b.nbytes
    assert c["packets_decapsulated"] == 3 and c["bytes_decapsulated"] == b.nbytes
    assert c["replay"] == 3
    assert set(c) >= {st.label for st in Status if 0 < st < 32}
    assert sum(v for k, v in c.items() if not k.startswith(("packets_", "bytes_"))) == 3


def test_batch_views_with_gaps() -> None:
    sa = make_sa("esp-gcm")
    b = batch_of([5, 50, 500, 5000])
    view = b[np.array([3, 1])]                        # zero-copy view: offsets not in order
    enc = sa.encapsulate(view)
    dec = sa.decapsulate(enc.packets)
    assert dec.packets.to_list() == [b[3], b[1]]


def test_every_batch_size_round_trips() -> None:
    # DPDK style: every batch size from 0 to N, one SA, sequence numbers continue across calls
    sa = make_sa("esp-aes esp-sha-hmac")
    rx = SecurityAssociation("esp", 0x1001, "esp-gcm", b"g" * 20, local=LOCAL, peer=PEER)
    tx = SecurityAssociation("esp", 0x1001, "esp-gcm", b"g" * 20, local=LOCAL, peer=PEER)
    total = 0
    for n in range(0, 34):
        b = batch_of([(7 * i) % 300 for i in range(n)], seed=n)
        for enc_sa, dec_sa in ((sa, sa), (tx, rx)):
            enc = enc_sa.encapsulate(b)
            dec = dec_sa.decapsulate(enc.packets)
            assert enc.status.shape == (n,) and dec.all_ok
            assert dec.packets.to_list() == b.to_list()
        total += n
    assert sa.seq == tx.seq == total


def test_esp_des_without_legacy_provider_is_a_clear_error() -> None:
    code = ("from ipsecfast.sa import SecurityAssociation\n"
            "from ipsecfast.exceptions import UnsupportedTransform\n"
            "try:\n"
            "    SecurityAssociation('esp', 5, 'esp-des esp-sha-hmac', b'k' * 8, b'a' * 20,\n"
            "                        mode='transport')\n"
            "except UnsupportedTransform as err:\n"
            "    print('UnsupportedTransform:', err)\n")
    env = dict(os.environ, OPENSSL_MODULES="/nonexistent-openssl-modules")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "UnsupportedTransform: esp-des needs OpenSSL's legacy provider" in proc.stdout


def test_demo_round_trips() -> None:
    from ipsecfast.demo import make_ipv4_batch, run_demo

    b = make_ipv4_batch(50, seed=3)
    f = b.ipv4_fields()
    assert f.valid.all() and all(checksum(p[:20]) == 0 for p in b.to_list())
    assert run_demo(quiet=True, packets=300, repeat=1) == 0


def test_addresses() -> None:
    sa = make_sa("esp-gcm", local="10.0.0.1", peer=0x0A000002)
    assert (sa.local_address, sa.peer_address) == ("10.0.0.1", "10.0.0.2")
    assert make_sa("esp-gcm", mode="transport", local=None, peer=None).local_address is None


def test_every_keyed_context_is_freed() -> None:
    import gc

    gc.collect()
    base = _esp.live_contexts()
    sas = [make_sa(s) for s in ("esp-aes esp-sha-hmac", "esp-gcm", "esp-null esp-md5-hmac")]
    sas.append(make_sa("ah-sha-hmac", "ah"))
    # ESP CBC + HMAC: 2 cipher + 3 digest contexts; GCM: 2; NULL + HMAC: 3; AH: 3
    assert _esp.live_contexts() == base + 5 + 2 + 3 + 3
    sas[0].close()
    assert _esp.live_contexts() == base + 8
    for _ in range(3):
        _esp.hmac(2, b"k", b"data", 12)
    del sas
    gc.collect()
    assert _esp.live_contexts() == base
    with pytest.raises(ValueError):
        make_sa("esp-gcm", seq=-1)                     # fails before any context exists
    with pytest.raises(ValueError, match="integrity id"):
        # AES-CBC contexts are made, then an unknown integrity id fails: all freed again
        _esp.SaCore(50, 3, 9, b"k" * 16, b"", 0, 1)
    assert _esp.live_contexts() == base


def test_threads_share_one_sa_without_reusing_sequence_numbers() -> None:
    import threading

    tx = SecurityAssociation("esp", 0x1001, "esp-gcm", b"t" * 20, local=LOCAL, peer=PEER)
    rx = SecurityAssociation("esp", 0x1001, "esp-gcm", b"t" * 20, local=LOCAL, peer=PEER,
                             replay_window=1024)
    b = batch_of([100] * 64)
    outs: list[PacketBatch] = []

    def work() -> None:
        for _ in range(10):
            outs.append(tx.encapsulate(b).packets)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    allp = PacketBatch.concat(outs)
    seqs = allp.u32_at(24)
    ivs = {p[28:36] for p in allp.to_list()}
    assert sorted(seqs.tolist()) == list(range(1, 1281)) and len(ivs) == 1280
    assert tx.seq == 1280
    res = rx.decapsulate(allp[np.argsort(seqs)])
    assert res.all_ok and rx.rx_seq == 1280
    # read-only input buffers are fine
    ro = PacketBatch(np.frombuffer(b.tobytes(), dtype=np.uint8), b.offsets - b.offsets[0],
                     b.lengths)
    assert tx.encapsulate(ro).all_ok


# --- AH over IPv4 options (RFC 4302 Appendix A.1) -------------------------------------------
def _reroute(pkt: bytes, edits: dict[int, int], ttl_drop: int = 1) -> bytes:
    """What a router may do: rewrite bytes of the header, decrement TTL, fix the checksum."""
    b = bytearray(pkt)
    for pos, val in edits.items():
        b[pos] = val
    b[8] -= ttl_drop
    ihl = (b[0] & 15) * 4
    b[10:12] = b"\0\0"
    b[10:12] = struct.pack("!H", checksum(bytes(b[:ihl])))
    return bytes(b)


def test_ah_with_ipv4_options_interoperates_with_scapy() -> None:
    from scapy.layers.inet import (
        IP,
        UDP,
        IPOption_EOL,
        IPOption_NOP,
        IPOption_Router_Alert,
        IPOption_RR,
    )
    from scapy.layers.ipsec import AH
    from scapy.layers.ipsec import SecurityAssociation as ScapySA

    key = os.urandom(20)
    opts = [IPOption_Router_Alert(), IPOption_RR(routers=["0.0.0.0", "0.0.0.0"]),
            IPOption_NOP(), IPOption_EOL()]
    orig = bytes(IP(bytes(IP(src="10.0.0.1", dst="10.0.0.2", tos=0x10, ttl=9, options=opts)
                          / UDP(sport=1, dport=2) / b"hello options")))
    assert (orig[0] & 15) * 4 == 40
    theirs = ScapySA(AH, spi=0x99, auth_algo="HMAC-SHA1-96", auth_key=key)
    ours = SecurityAssociation("ah", 0x99, "ah-sha-hmac", auth_key=key, mode="transport")
    enc = ours.encapsulate(PacketBatch.from_list([orig]))
    assert enc.all_ok
    wire = enc.packets[0]
    assert wire == bytes(theirs.encrypt(IP(orig)))   # byte for byte, options kept in place
    # en route: a router fills the Record Route slot (mutable) and decrements the TTL
    rr = 20 + 4                                       # after the 4-byte Router Alert
    routed = _reroute(wire, {rr + 2: 8, rr + 3: 192, rr + 4: 0, rr + 5: 2, rr + 6: 9})
    rx = SecurityAssociation("ah", 0x99, "ah-sha-hmac", auth_key=key, mode="transport")
    res = rx.decapsulate(PacketBatch.from_list([routed]))
    assert res.all_ok, res.counts()
    assert res.packets[0][40:] == orig[40:] and res.packets[0][9] == 17
    assert bytes(theirs.decrypt(IP(routed)))[40:] == orig[40:]   # scapy agrees
    # an immutable option (Router Alert's value) changed: rejected
    tampered = _reroute(wire, {23: 1})
    rx2 = SecurityAssociation("ah", 0x99, "ah-sha-hmac", auth_key=key, mode="transport")
    assert rx2.decapsulate(PacketBatch.from_list([tampered])).status[0] == Status.ICV_MISMATCH
    # from scapy to us
    rx3 = SecurityAssociation("ah", 0x99, "ah-sha-hmac", auth_key=key, mode="transport")
    res3 = rx3.decapsulate(PacketBatch.from_list([bytes(theirs.encrypt(IP(orig)))]))
    assert res3.all_ok and res3.packets[0] == orig


def test_ah_loose_source_route_destination_is_predicted() -> None:
    # RFC 4302 §3.3.3.1.1.1: with LSRR the destination is "mutable but predictable": the
    # sender authenticates the final destination, which is what the receiver sees.
    hop, final = bytes([10, 9, 9, 9]), bytes([10, 0, 0, 2])
    lsrr = bytes([131, 7, 4]) + final + b"\0"          # one address, then End of List
    orig = ipv4(b"source routed", options=lsrr, dst="10.9.9.9")
    key = os.urandom(32)
    tx = SecurityAssociation("ah", 7, "ah-sha256-hmac", auth_key=key, mode="transport")
    rx = SecurityAssociation("ah", 7, "ah-sha256-hmac", auth_key=key, mode="transport")
    wire = tx.encapsulate(PacketBatch.from_list([orig])).packets[0]
    assert wire[16:20] == hop
    # the hop swaps in the next address, records itself and advances the pointer
    arrived = _reroute(wire, {16: 10, 17: 0, 18: 0, 19: 2, 22: 8, 23: 10, 24: 9, 25: 9, 26: 9})
    res = rx.decapsulate(PacketBatch.from_list([arrived]))
    assert res.all_ok, res.counts()
    assert res.packets[0][16:20] == final and res.packets[0][28:] == orig[28:]
    # malformed options are refused, not read past the header
    bad = ipv4(b"x", options=bytes([7, 40, 4, 0]))
    st = tx.encapsulate(PacketBatch.from_list([bad])).status[0]
    assert st == Status.BAD_IP_HEADER
