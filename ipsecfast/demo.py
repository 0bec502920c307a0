"""``ipsecfast demo`` / ``make demo``: one SA per transform family encrypts and decrypts a
generated batch of IPv4 packets, checks the round trip byte for byte, and prints the
throughput. Returns 0 when every round trip matched, 1 otherwise.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .packets import PacketBatch
from .sa import SaBundle, SaResult, SecurityAssociation
from .transform import parse_transforms

__all__ = ["run_demo", "make_ipv4_batch"]

LOCAL, PEER = "192.0.2.1", "198.51.100.2"
# Internet-mix-like sizes (bytes of the whole IPv4 packet) and how often each occurs.
_SIZES = np.array([40, 64, 128, 256, 576, 1024, 1400, 1500])
_WEIGHTS = np.array([0.25, 0.2, 0.05, 0.05, 0.15, 0.05, 0.15, 0.1])


def make_ipv4_batch(n: int, seed: int = 0, sizes: np.ndarray | None = None) -> PacketBatch:
    """``n`` UDP/TCP/ICMP IPv4 packets of mixed sizes with valid headers, built without a
    Python object per packet."""
    rng = np.random.default_rng(seed)
    lengths = (rng.choice(_SIZES, size=n, p=_WEIGHTS) if sizes is None
               else np.resize(np.asarray(sizes), n)).astype(np.int64)
    offsets = np.zeros(n, dtype=np.int64)
    if n > 1:
        np.cumsum(lengths[:-1], out=offsets[1:])
    buf = rng.integers(0, 256, int(lengths.sum()), dtype=np.uint8)
    hdr = np.zeros((n, 20), dtype=np.uint8)
    hdr[:, 0] = 0x45
    hdr[:, 1] = rng.choice([0x00, 0x28, 0xB8, 0x02], size=n)
    hdr[:, 2] = lengths >> 8
    hdr[:, 3] = lengths & 0xFF
    ident = np.arange(n, dtype=np.int64)
    hdr[:, 4] = (ident >> 8) & 0xFF
    hdr[:, 5] = ident & 0xFF
    hdr[:, 6] = 0x40                                        # DF
    hdr[:, 8] = 64
    hdr[:, 9] = rng.choice([6, 17, 1], size=n)
    hdr[:, 12:16] = [10, 1, 0, 1]
    hdr[:, 16] = 10
    hdr[:, 17] = 2
    hdr[:, 18] = (ident >> 8) & 0xFF
    hdr[:, 19] = ident & 0xFF
    words = hdr.astype(np.uint32).reshape(n, 10, 2)
    acc = (words[:, :, 0] << 8 | words[:, :, 1]).sum(axis=1)
    acc = (acc & 0xFFFF) + (acc >> 16)
    acc = (acc & 0xFFFF) + (acc >> 16)
    csum = ~acc & 0xFFFF
    hdr[:, 10] = csum >> 8
    hdr[:, 11] = csum & 0xFF
    idx = offsets[:, None] + np.arange(20)
    buf[idx] = hdr
    return PacketBatch(buf, offsets, lengths)


@dataclass
class _Case:
    name: str
    mode: str
    encapsulate: Callable[[PacketBatch], SaResult]
    decapsulate: Callable[[PacketBatch], SaResult]


def _sa(spec: str, protocol: str, mode: str, spi: int) -> SecurityAssociation:
    ts = parse_transforms(spec)
    if protocol == "ah":
        return SecurityAssociation("ah", spi, ts, auth_key=os.urandom(ts.ah_key_length),
                                   mode=mode, local=LOCAL, peer=PEER)  # type: ignore[arg-type]
    ck = os.urandom(ts.cipher_key_length) if ts.cipher_key_length else None
    ak = os.urandom(ts.auth_key_length) if ts.auth_key_length else None
    return SecurityAssociation("esp", spi, ts, ck, ak, mode=mode,  # type: ignore[arg-type]
                               local=LOCAL, peer=PEER)


def _cases() -> list[_Case]:
    out: list[_Case] = []
    families = [
        ("esp-aes esp-sha-hmac", "esp", "tunnel"),
        ("esp-aes 256 esp-sha256-hmac", "esp", "tunnel"),
        ("esp-gcm", "esp", "tunnel"),
        ("esp-gcm 256", "esp", "transport"),
        ("esp-chacha20-poly1305", "esp", "tunnel"),
        ("esp-aes-ccm", "esp", "tunnel"),
        ("esp-aes-ctr esp-sha-hmac", "esp", "tunnel"),
        ("esp-gmac", "esp", "tunnel"),
        ("esp-3des esp-md5-hmac", "esp", "tunnel"),
        ("esp-null esp-sha512-hmac", "esp", "transport"),
        ("ah-sha-hmac", "ah", "tunnel"),
        ("ah-sha256-hmac", "ah", "transport"),
    ]
    for i, (spec, proto, mode) in enumerate(families):
        sa = _sa(spec, proto, mode, 0x1000 + i)
        out.append(_Case(spec, mode, sa.encapsulate, sa.decapsulate))
    spec = "ah-sha-hmac esp-aes esp-sha-hmac"
    bundle = SaBundle(_sa(spec, "esp", "tunnel", 0x2000), _sa(spec, "ah", "transport", 0x2001))
    out.append(_Case(spec, "tunnel", bundle.encapsulate, bundle.decapsulate))
    return out


def run_demo(quiet: bool = False, packets: int = 20000, repeat: int = 3) -> int:
    """Round-trip a generated batch through every family; print packets/s and Gbit/s."""
    batch = make_ipv4_batch(packets, seed=42)
    original = batch.tobytes()
    nbytes = batch.nbytes
    failed = 0
    rows = []
    for case in _cases():
        best_enc = best_dec = float("inf")
        ok = True
        for _ in range(repeat):
            t0 = time.perf_counter()
            enc = case.encapsulate(batch)
            t1 = time.perf_counter()
            dec = case.decapsulate(enc.packets)
            t2 = time.perf_counter()
            best_enc = min(best_enc, t1 - t0)
            best_dec = min(best_dec, t2 - t1)
            ok = ok and enc.all_ok and dec.all_ok and dec.packets.tobytes() == original
        failed += not ok
        rows.append((case.name, case.mode, best_enc, best_dec, ok))
    if not quiet:
        print(f"ipsecfast demo: {packets} IPv4 packets ({nbytes / packets:.0f} B average, "
              f"mixed 40-1500 B), best of {repeat}, one core")
        print(f"{'transforms':34} {'mode':9} {'encap Mpps':>10} {'Gbit/s':>7} "
              f"{'decap Mpps':>10} {'Gbit/s':>7}  round trip")
        for name, mode, te, td, ok in rows:
            print(f"{name:34} {mode:9} {packets / te / 1e6:10.2f} {nbytes * 8 / te / 1e9:7.2f} "
                  f"{packets / td / 1e6:10.2f} {nbytes * 8 / td / 1e9:7.2f}  "
                  f"{'ok' if ok else 'FAILED'}")
    verdict = "all round trips matched" if not failed else f"{failed} round trip(s) FAILED"
    print(f"ipsecfast demo: {len(rows)} transform families, {verdict}")
    return 0 if not failed else 1
