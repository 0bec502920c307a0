"""The core's per-packet fast paths against independent oracles.

* HMAC from precomputed inner / outer states kept as plain low-level digest structs
  (copied per packet): Python's ``hmac`` module for every algorithm, key lengths around
  the block size (RFC 2104 §3: longer keys are hashed first) and message lengths around
  block boundaries; ICVs of many packets over several batches (the states are reused).
* CBC through running cipher contexts (no per-packet IV setup): every packet the core
  sends decrypts with ``cryptography`` under its own wire IV, and the core opens packets
  built by ``cryptography`` with unrelated IVs, across batches, SAs and failed packets.
* Stream / AEAD encapsulation straight from the input (payload and trailer fed
  separately): every packet opens with ``cryptography``, at sizes where the trailer
  straddles a block.
"""

from __future__ import annotations

import gc
import hashlib
import hmac
import os
import struct

import numpy as np
import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from ipsecfast import _esp
from ipsecfast.exceptions import UnsupportedTransform
from ipsecfast.packets import PacketBatch
from ipsecfast.sa import SecurityAssociation
from ipsecfast.transform import AuthAlg

LOCAL, PEER = "192.0.2.1", "198.51.100.2"

# integrity id -> (hashlib name, block size, IPsec ICV bytes, transform)
DIGESTS = {
    AuthAlg.HMAC_MD5_96: ("md5", 64, 12, "esp-md5-hmac"),
    AuthAlg.HMAC_SHA1_96: ("sha1", 64, 12, "esp-sha-hmac"),
    AuthAlg.HMAC_SHA256_128: ("sha256", 64, 16, "esp-sha256-hmac"),
    AuthAlg.HMAC_SHA384_192: ("sha384", 128, 24, "esp-sha384-hmac"),
    AuthAlg.HMAC_SHA512_256: ("sha512", 128, 32, "esp-sha512-hmac"),
}
AUTH_KEY = {"esp-md5-hmac": 16, "esp-sha-hmac": 20, "esp-sha256-hmac": 32,
            "esp-sha384-hmac": 48, "esp-sha512-hmac": 64}


def checksum(hdr: bytes) -> int:
    acc = sum(struct.unpack(f"!{len(hdr) // 2}H", hdr))
    while acc >> 16:
        acc = (acc & 0xFFFF) + (acc >> 16)
    return ~acc & 0xFFFF


def ipv4(payload: bytes, proto: int = 17, ident: int = 7) -> bytes:
    hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, 0x4000,
                                61, proto, 0, bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])))
    hdr[10:12] = struct.pack("!H", checksum(bytes(hdr)))
    return bytes(hdr) + payload


def batch_of(sizes: list[int], seed: int = 1) -> PacketBatch:
    rng = np.random.default_rng(seed)
    return PacketBatch.from_list([ipv4(rng.integers(0, 256, n, dtype=np.uint8).tobytes(),
                                       ident=i) for i, n in enumerate(sizes)])


def strip_trailer(pt: bytes) -> tuple[bytes, int]:
    """RFC 4303 §2.4: payload, padding 1, 2, 3, ..., pad length, next header."""
    padlen, nh = pt[-2], pt[-1]
    body = pt[:-2 - padlen]
    assert pt[len(body):-2] == bytes(range(1, padlen + 1))
    return body, nh


SIZES = list(range(0, 50)) + [63, 64, 65, 100, 111, 112, 113, 127, 128, 129, 500, 1380, 1480]


# --- HMAC ------------------------------------------------------------------------------
@pytest.mark.parametrize("auth", list(DIGESTS), ids=lambda a: DIGESTS[a][0])
def test_hmac_matches_python_around_block_sizes(auth: AuthAlg) -> None:
    name, bs, _, _ = DIGESTS[auth]
    full = hashlib.new(name).digest_size
    rng = np.random.default_rng(int(auth))
    for klen in (0, 1, 20, bs - 1, bs, bs + 1, 2 * bs + 3):
        key = rng.integers(0, 256, klen, dtype=np.uint8).tobytes()
        for dlen in (0, 1, 55, 56, 63, 64, 65, 111, 112, 127, 128, 129, 1000):
            data = rng.integers(0, 256, dlen, dtype=np.uint8).tobytes()
            want = hmac.new(key, data, name).digest()
            assert _esp.hmac(int(auth), key, data, full) == want, (klen, dlen)
            assert _esp.hmac(int(auth), key, data, 12) == want[:12]


@pytest.mark.parametrize("cipher", ["esp-null", "esp-aes", "esp-3des"])
@pytest.mark.parametrize("auth", list(DIGESTS), ids=lambda a: DIGESTS[a][0])
def test_esp_icv_of_every_packet_over_batches(cipher: str, auth: AuthAlg) -> None:
    name, _, icv, spec = DIGESTS[auth]
    ak = os.urandom(AUTH_KEY[spec])
    ck = {"esp-null": None, "esp-aes": os.urandom(16), "esp-3des": os.urandom(24)}[cipher]
    tx = SecurityAssociation("esp", 0x51, f"{cipher} {spec}", ck, ak, local=LOCAL, peer=PEER)
    rx = SecurityAssociation("esp", 0x51, f"{cipher} {spec}", ck, ak, local=PEER, peer=LOCAL)
    for seed in range(3):
        b = batch_of(SIZES, seed)
        enc = tx.encapsulate(b)
        assert enc.all_ok
        for pkt in enc.packets.to_list():
            esp = pkt[20:]
            assert esp[-icv:] == hmac.new(ak, esp[:-icv], name).digest()[:icv]
        dec = rx.decapsulate(enc.packets)
        assert dec.all_ok and dec.packets.to_list() == b.to_list()


def test_hmac_states_wiped_and_counted() -> None:
    gc.collect()
    base = _esp.live_contexts()
    sas = [SecurityAssociation("esp", 1, f"esp-null {spec}", None, os.urandom(n),
                               local=LOCAL, peer=PEER) for spec, n in AUTH_KEY.items()]
    assert _esp.live_contexts() == base + 3 * len(sas)      # inner, outer, work states
    for sa in sas:
        assert sa.encapsulate(batch_of([10, 100])).all_ok
        assert not sa._core.key_material_wiped()
        sa.close()
        assert sa._core.key_material_wiped()
    assert _esp.live_contexts() == base
    del sas
    gc.collect()
    assert _esp.live_contexts() == base


# --- CBC through running contexts ------------------------------------------------------
CBC = {"esp-aes": (16, 16), "esp-aes 256": (32, 16), "esp-3des": (24, 8), "esp-des": (8, 8)}


def need_cipher(spec: str) -> None:
    """esp-des needs OpenSSL's legacy provider, which a system may lack."""
    try:
        SecurityAssociation("esp", 1, spec, bytes(CBC[spec][0]), None, local=LOCAL, peer=PEER)
    except UnsupportedTransform as e:
        pytest.skip(str(e))


def cbc(key: bytes, block: int, iv: bytes, encrypt: bool, data: bytes) -> bytes:
    # single DES = 3DES-EDE with three equal keys
    alg = algorithms.AES(key) if block == 16 else TripleDES(key * 3 if len(key) == 8 else key)
    c = Cipher(alg, modes.CBC(iv))
    op = c.encryptor() if encrypt else c.decryptor()
    return op.update(data) + op.finalize()


def oracle_esp_cbc(key: bytes, block: int, seq: int, iv: bytes, inner: bytes,
                   spi: int = 0x52) -> bytes:
    pad = (-(len(inner) + 2)) % block
    pt = inner + bytes(range(1, pad + 1)) + bytes([pad, 4])
    esp = struct.pack("!II", spi, seq) + iv + cbc(key, block, iv, True, pt)
    hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(esp), seq, 0, 64, 50, 0,
                                bytes([198, 51, 100, 2]), bytes([192, 0, 2, 1])))
    hdr[10:12] = struct.pack("!H", checksum(bytes(hdr)))
    return bytes(hdr) + esp


@pytest.mark.parametrize("spec", list(CBC))
def test_cbc_every_packet_is_cbc_under_its_wire_iv(spec: str) -> None:
    need_cipher(spec)
    klen, block = CBC[spec]
    ck = os.urandom(klen)
    sas = [SecurityAssociation("esp", 0x52, spec, ck, None, local=LOCAL, peer=PEER)
           for _ in range(2)]
    ivs: set[bytes] = set()
    for seed in range(4):
        sa = sas[seed % 2]                      # two SAs, same key, separate chains
        b = batch_of(SIZES, seed)
        enc = sa.encapsulate(b)
        assert enc.all_ok
        for pkt, orig in zip(enc.packets.to_list(), b.to_list(), strict=True):
            iv = pkt[28:28 + block]
            ivs.add(iv)
            inner, nh = strip_trailer(cbc(ck, block, iv, False, pkt[28 + block:]))
            assert nh == 4 and inner == orig
    assert len(ivs) == 4 * len(SIZES)           # random, never repeated


@pytest.mark.parametrize("spec", list(CBC))
def test_cbc_fixed_iv_gives_the_same_ciphertext_every_time(spec: str) -> None:
    need_cipher(spec)
    # the running context must not leak the previous packet into the next one
    klen, block = CBC[spec]
    ck, iv = os.urandom(klen), os.urandom(block)
    sa = SecurityAssociation("esp", 0x52, spec, ck, None, local=LOCAL, peer=PEER,
                             _fixed_iv=iv)
    pkt = ipv4(bytes(range(200)))
    want = cbc(ck, block, iv, True, pkt + bytes(range(1, (-(len(pkt) + 2)) % block + 1))
               + bytes([(-(len(pkt) + 2)) % block, 4]))
    for _ in range(3):
        out = sa.encapsulate(PacketBatch.from_list([pkt] * 5)).packets.to_list()
        assert {p[28 + block:] for p in out} == {want}


@pytest.mark.parametrize("spec", list(CBC))
def test_cbc_opens_oracle_packets_with_failures_in_between(spec: str) -> None:
    need_cipher(spec)
    klen, block = CBC[spec]
    ck = os.urandom(klen)
    rx = SecurityAssociation("esp", 0x52, spec, ck, None, local=LOCAL, peer=PEER,
                             replay_window=0)
    rng = np.random.default_rng(5)
    seq = 0
    for _ in range(3):
        inners, wires, kinds = [], [], []
        for i, n in enumerate(SIZES):
            seq += 1
            inner = ipv4(rng.integers(0, 256, n, dtype=np.uint8).tobytes(), ident=i)
            wire = oracle_esp_cbc(ck, block, seq, os.urandom(block), inner)
            kind = i % 5
            if kind == 1:                       # bad SPI: rejected before decryption
                wire = wire[:20] + b"\0\0\0\1" + wire[24:]
            elif kind == 3:                     # last block garbled: decrypted, bad padding
                wire = wire[:-1] + bytes([wire[-1] ^ 0x80])
            inners.append(inner)
            wires.append(wire)
            kinds.append(kind)
        res = rx.decapsulate(PacketBatch.from_list(wires))
        status = np.asarray(res.status)
        out = res.packets.to_list()
        for k, kind in enumerate(kinds):
            if kind == 1:
                assert status[k] != 0
            elif kind != 3:                     # (garbage may pass the padding check)
                assert status[k] == 0 and out[k] == inners[k]


# --- stream / AEAD encapsulation straight from the input -------------------------------
def open_stream(spec: str, ck: bytes, esp: bytes, ak: bytes | None) -> bytes:
    iv = esp[8:16]
    if spec.startswith("esp-aes-ctr"):
        assert ak is not None
        assert esp[-12:] == hmac.new(ak, esp[:-12], "sha1").digest()[:12]
        d = Cipher(algorithms.AES(ck[:-4]), modes.CTR(ck[-4:] + iv + b"\0\0\0\1")).decryptor()
        return d.update(esp[16:-12]) + d.finalize()
    aead = AESGCM(ck[:-4]) if spec.startswith("esp-gcm") else ChaCha20Poly1305(ck[:-4])
    return aead.decrypt(ck[-4:] + iv, esp[16:], esp[:8])


STREAM = {"esp-gcm": 20, "esp-gcm 256": 36, "esp-chacha20-poly1305": 36,
          "esp-aes-ctr esp-sha-hmac": 20}


@pytest.mark.parametrize("mode", ["tunnel", "transport"])
@pytest.mark.parametrize("spec", list(STREAM))
def test_stream_encapsulation_from_the_input(spec: str, mode: str) -> None:
    ck = os.urandom(STREAM[spec])
    ak = os.urandom(20) if "sha" in spec else None
    sa = SecurityAssociation("esp", 0x53, spec, ck, ak, mode=mode, local=LOCAL, peer=PEER)
    rx = SecurityAssociation("esp", 0x53, spec, ck, ak, mode=mode, local=PEER, peer=LOCAL)
    for seed in range(2):
        b = batch_of(SIZES, seed)
        enc = sa.encapsulate(b)
        assert enc.all_ok
        for pkt, orig in zip(enc.packets.to_list(), b.to_list(), strict=True):
            payload, nh = strip_trailer(open_stream(spec, ck, pkt[20:], ak))
            if mode == "tunnel":
                assert nh == 4 and payload == orig
            else:
                assert nh == 17 and payload == orig[20:] and pkt[9] == 50
        dec = rx.decapsulate(enc.packets)
        assert dec.all_ok and dec.packets.to_list() == b.to_list()


@pytest.mark.parametrize("spec", list(STREAM))
def test_stream_encapsulation_of_an_empty_payload(spec: str) -> None:
    # ESP payload of 0 bytes (raw mode): only the trailer is encrypted, from the stack
    ck = os.urandom(STREAM[spec])
    ak = os.urandom(20) if "sha" in spec else None
    sa = SecurityAssociation("esp", 0x54, spec, ck, ak, local=LOCAL, peer=PEER)
    res = sa._esp_payload_encapsulate(PacketBatch.from_list([b""]), 59)
    assert res.status.tolist() == [0]
    assert strip_trailer(open_stream(spec, ck, res.packets[0], ak)) == (b"", 59)


@pytest.mark.parametrize("spec", ["esp-gcm", "esp-gcm 256", "esp-gmac", "esp-chacha20-poly1305"])
def test_aead_decapsulation_with_forgeries_in_between(spec: str) -> None:
    # AES-GCM / GMAC set the IV's invocation field and the tag per packet by parameter
    # (the salt is set once): a rejected packet must not disturb the next one.
    klen = {"esp-gcm": 20, "esp-gcm 256": 36, "esp-gmac": 20, "esp-chacha20-poly1305": 36}
    ck = os.urandom(klen[spec])
    tx = SecurityAssociation("esp", 0x55, spec, ck, None, local=LOCAL, peer=PEER)
    rx = SecurityAssociation("esp", 0x55, spec, ck, None, local=PEER, peer=LOCAL)
    b = batch_of(SIZES, 9)
    wires = tx.encapsulate(b).packets.to_list()
    forged = []
    for i, w in enumerate(wires):
        if i % 3 == 1:
            k = 28 + i % (len(w) - 28)              # IV, payload, trailer or ICV byte
            w = w[:k] + bytes([w[k] ^ 1]) + w[k + 1:]
        forged.append(w)
    res = rx.decapsulate(PacketBatch.from_list(forged))
    status, out = np.asarray(res.status), res.packets.to_list()
    for i, orig in enumerate(b.to_list()):
        if i % 3 == 1:
            assert status[i] == 7 and out[i] == b""     # ICV_MISMATCH, nothing released
        else:
            assert status[i] == 0 and out[i] == orig
    # the forged ones were not recorded by the window: the originals still open
    again = rx.decapsulate(PacketBatch.from_list(wires[1::3]))
    assert again.all_ok and again.packets.to_list() == b.to_list()[1::3]
