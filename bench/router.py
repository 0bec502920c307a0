#!/usr/bin/env python3
"""pcap-to-pcap throughput of ``ipsecfast encrypt`` / ``decrypt`` under a 100-entry crypto
map, next to the bare SA rate of the compiled core on the same packets.

    python bench/router.py [--packets N] [--entries E] [--transforms "esp-aes esp-sha-hmac"]
                           [--size imix|BYTES] [--repeats R] [--json] [--keep DIR]

It generates an Ethernet capture of N IPv4/UDP packets (default 1,000,000; IMIX sizes
7:4:1 of 64 / 576 / 1500-byte IPv4 packets unless ``--size``) spread evenly over E
destination /24s, and two mirror-image router configurations: router A, whose crypto map
has E ``ipsec-manual`` entries (sequence 10, 20, ...; entry k has its own access list
``permit ip 10.1.0.0 0.0.255.255 10.2.k.0 0.0.0.255``, its own peer and SPIs), and its
peer B. Then, best of R runs (wall clock):

* ``encrypt``: ``cli.run_pcap`` with A's ``router.outbound``: read the capture, classify,
  encrypt, write the output capture (what ``ipsecfast encrypt`` does, minus config load);
* ``decrypt``: the same with B's ``router.inbound`` on the encrypted capture; the result
  is checked to be the original capture byte for byte;
* ``bare encap`` / ``bare decap``: ``SecurityAssociation.encapsulate`` / ``.decapsulate``
  of one SA of the same transform over the same IPv4 packets, in the same 64K-packet
  chunks, no pcap I/O and no policy (the core's rate, as in bench/esp.py);
* ``bare E s``: the same with one SA per entry, each chunk's packets grouped by entry
  beforehand (one call per SA and chunk): the crypto cost of the E-SA workload without
  policy work;
* ``router s``: the time spent inside ``router.outbound`` / ``.inbound`` during the
  pcap run (classification + SA grouping + crypto), for insight;
* ``floor s``: ``run_pcap`` with a null router that passes every packet untouched: the
  cost of reading, rebuilding and writing the capture alone, the floor under any router
  (``floor x`` = floor s / bare s: where it is above 1.5, the target cannot be met on
  this machine whatever the router does).

``x bare`` is pcap-to-pcap time / bare time; the target is <= 1.5.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ipsecfast import pcap  # noqa: E402
from ipsecfast.cli import CHUNK_PACKETS, run_pcap, tune_allocator  # noqa: E402
from ipsecfast.config import parse_config  # noqa: E402
from ipsecfast.packets import PacketBatch  # noqa: E402
from ipsecfast.sa import SecurityAssociation  # noqa: E402
from ipsecfast.transform import parse_transforms  # noqa: E402

A_ADDR, B_ADDR = "192.0.2.1", "198.51.100.2"
TARGET = 1.5
IMIX = (np.array([64, 576, 1500]), np.array([7, 4, 1]) / 12)


# -- workload -------------------------------------------------------------------------------

def make_capture(n: int, entries: int, size: str, seed: int = 1) -> pcap.Capture:
    """Ethernet frames of IPv4/UDP packets 10.1.x.y -> 10.2.k.z, k spread over the entries
    (round robin, so every chunk touches every entry), valid IPv4 checksums."""
    rng = np.random.default_rng(seed)
    if size == "imix":
        ip_len = rng.choice(IMIX[0], size=n, p=IMIX[1]).astype(np.int64)
    else:
        ip_len = np.full(n, int(size), dtype=np.int64)
    if ip_len.min() < 28:
        raise SystemExit("--size must be at least 28 (IPv4 + UDP headers)")
    frame_len = ip_len + 14
    offsets = np.zeros(n, dtype=np.int64)
    if n > 1:
        np.cumsum(frame_len[:-1], out=offsets[1:])
    buf = rng.integers(0, 256, int(frame_len.sum()), dtype=np.uint8)
    k = np.arange(n, dtype=np.int64) % entries
    hdr = np.zeros((n, 42), dtype=np.uint8)
    hdr[:, 0:6] = [2, 0, 0, 0, 0, 0xB]          # dst MAC
    hdr[:, 6:12] = [2, 0, 0, 0, 0, 0xA]         # src MAC
    hdr[:, 12:14] = [0x08, 0x00]                # IPv4
    ip = hdr[:, 14:34]
    ip[:, 0] = 0x45
    ip[:, 2] = ip_len >> 8
    ip[:, 3] = ip_len & 0xFF
    ident = np.arange(n, dtype=np.int64)
    ip[:, 4] = (ident >> 8) & 0xFF
    ip[:, 5] = ident & 0xFF
    ip[:, 8] = 64
    ip[:, 9] = 17
    ip[:, 12:14] = [10, 1]
    ip[:, 14] = rng.integers(0, 256, n)
    ip[:, 15] = rng.integers(1, 255, n)
    ip[:, 16:18] = [10, 2]
    ip[:, 18] = k
    ip[:, 19] = rng.integers(1, 255, n)
    words = ip.astype(np.uint32).reshape(n, 10, 2)
    acc = (words[:, :, 0] << 8 | words[:, :, 1]).sum(axis=1)
    acc = (acc & 0xFFFF) + (acc >> 16)
    acc = (acc & 0xFFFF) + (acc >> 16)
    csum = ~acc & 0xFFFF
    ip[:, 10] = csum >> 8
    ip[:, 11] = csum & 0xFF
    udp = hdr[:, 34:42]
    sport = 1024 + ident % 50000
    udp[:, 0] = sport >> 8
    udp[:, 1] = sport & 0xFF
    udp[:, 2:4] = [0x13, 0x89]                  # 5001
    ulen = ip_len - 20
    udp[:, 4] = ulen >> 8
    udp[:, 5] = ulen & 0xFF                     # checksum 0: none (RFC 768)
    dst = (offsets[:, None] + np.arange(42)).reshape(-1)
    buf[dst] = hdr.reshape(-1)
    ts = 1_700_000_000_000_000_000 + ident * 1000
    return pcap.Capture(PacketBatch(buf, offsets, frame_len), pcap.LINKTYPE_ETHERNET, ts)


def _key(n: int, seed: int) -> str:
    return bytes((seed * 131 + i * 7 + 1) & 0xFF for i in range(n)).hex()


def make_configs(entries: int, transforms: str) -> tuple[str, str]:
    """Router A (E manual entries, one ACL each) and its mirror image B."""
    ts = parse_transforms(transforms)
    a = [f"crypto ipsec transform-set T {transforms}"]
    b = list(a)
    for k in range(entries):
        seq, acl = 10 * (k + 1), 100 + k
        peer_a, peer_b = B_ADDR, A_ADDR
        spi_out, spi_in = 0x10000 + 2 * k, 0x10001 + 2 * k
        a.append(f"access-list {acl} permit ip 10.1.0.0 0.0.255.255 10.2.{k}.0 0.0.0.255")
        b.append(f"access-list {acl} permit ip 10.2.{k}.0 0.0.0.255 10.1.0.0 0.0.255.255")
        for lines, peer, out_spi, in_spi in ((a, peer_a, spi_out, spi_in),
                                             (b, peer_b, spi_in, spi_out)):
            lines += [f"crypto map vpn {seq} ipsec-manual", f" set peer {peer}",
                      " set transform-set T", f" match address {acl}"]
            for direction, spi in (("outbound", out_spi), ("inbound", in_spi)):
                if ts.has_ah:
                    lines.append(f" set session-key {direction} ah {spi} "
                                 f"{_key(ts.ah_key_length, spi + 7)}")
                if ts.has_esp:
                    words = [f" set session-key {direction} esp {spi}"]
                    if ts.cipher_key_length:
                        words.append(f"cipher {_key(ts.cipher_key_length, spi)}")
                    if ts.auth_key_length:
                        words.append(f"authenticator {_key(ts.auth_key_length, spi + 3)}")
                    lines.append(" ".join(words))
    a += ["interface GigabitEthernet0/0", f" ip address {A_ADDR} 255.255.255.0", " crypto map vpn"]
    b += ["interface GigabitEthernet0/0", f" ip address {B_ADDR} 255.255.255.0", " crypto map vpn"]
    return "\n".join(a) + "\n", "\n".join(b) + "\n"


# -- measurements ---------------------------------------------------------------------------

class _Timed:
    """Wraps a router so that the time spent in outbound / inbound is added up."""

    def __init__(self, router: Any) -> None:
        self.router = router
        self.seconds = 0.0

    def _timed(self, fn: Any, ifname: str, batch: PacketBatch, **kw: Any) -> Any:
        t = time.perf_counter()
        res = fn(ifname, batch, **kw)
        self.seconds += time.perf_counter() - t
        return res

    # (``prepared`` by name: run_pcap hands a router's first step to its reader thread
    # only when outbound / inbound take it, as ``ipsecfast encrypt`` / ``decrypt`` do)
    def outbound(self, ifname: str, batch: PacketBatch, *, prepared: Any = None) -> Any:
        return self._timed(self.router.outbound, ifname, batch, prepared=prepared)

    def inbound(self, ifname: str, batch: PacketBatch, *, prepared: Any = None) -> Any:
        return self._timed(self.router.inbound, ifname, batch, prepared=prepared)

    # (the reader thread's share, not counted in ``router s``)
    def prepare_outbound(self, ifname: str, batch: PacketBatch) -> Any:
        return self.router.prepare_outbound(ifname, batch)

    def prepare_inbound(self, ifname: str, batch: PacketBatch) -> Any:
        return self.router.prepare_inbound(ifname, batch)


def pcap_run(cfg_text: str, direction: str, src: Path, dst: Path,
             crypto_threads: int | None = None) -> tuple[float, float, dict]:
    from ipsecfast.router import Router

    router = _Timed(Router(parse_config(cfg_text), crypto_threads=crypto_threads))
    dst.unlink(missing_ok=True)  # (a new output file, as on a first run; not timed)
    t = time.perf_counter()
    summary = run_pcap(router, "GigabitEthernet0/0", direction, str(src), str(dst),  # type: ignore[arg-type]
                       progress=False)
    return time.perf_counter() - t, router.seconds, summary


class _NullRouter:
    """Passes every packet through untouched (verdict bypass): ``run_pcap`` with it costs
    what reading, rebuilding and writing the capture costs, the floor under any router."""

    def _pass(self, ifname: str, batch: PacketBatch) -> Any:
        from types import SimpleNamespace

        from ipsecfast.router import Verdict

        n = len(batch)
        return SimpleNamespace(verdict=np.full(n, int(Verdict.BYPASS), dtype=np.uint8),
                               reason=np.zeros(n, dtype=np.uint8), packets=batch)

    outbound = inbound = _pass


def floor_run(direction: str, src: Path, dst: Path) -> float:
    """Seconds of ``run_pcap`` with the null router on the same input capture."""
    dst.unlink(missing_ok=True)
    t = time.perf_counter()
    run_pcap(_NullRouter(), "GigabitEthernet0/0", direction, str(src), str(dst),  # type: ignore[arg-type]
             progress=False)
    return time.perf_counter() - t


def bare_sa(transforms: str) -> tuple[SecurityAssociation, SecurityAssociation]:
    ts = parse_transforms(transforms)
    if ts.has_ah:
        raise SystemExit("the bare-SA baseline is for ESP transform sets")
    ck = bytes(range(ts.cipher_key_length))
    ak = bytes(range(50, 50 + ts.auth_key_length))
    return tuple(  # type: ignore[return-value]
        SecurityAssociation("esp", 0x1234, ts, ck or None, ak or None, local=A_ADDR, peer=B_ADDR,
                            replay_window=0)
        for _ in range(2))


def bare_run(transforms: str, packets: PacketBatch) -> tuple[float, float]:
    """Seconds to encapsulate, then decapsulate, every packet with one SA, in chunks."""
    enc_sa, dec_sa = bare_sa(transforms)
    n = len(packets)
    encrypted = []
    t = time.perf_counter()
    for a in range(0, n, CHUNK_PACKETS):
        encrypted.append(enc_sa.encapsulate(packets[a:a + CHUNK_PACKETS]).packets)
    t_enc = time.perf_counter() - t
    t = time.perf_counter()
    for chunk in encrypted:
        res = dec_sa.decapsulate(chunk)
        assert res.all_ok, res.counts()
    t_dec = time.perf_counter() - t
    return t_enc, t_dec


def bare_multi_run(transforms: str, packets: PacketBatch, entries: int) -> tuple[float, float]:
    """Like ``bare_run`` with one SA per entry: each chunk's packets, grouped by entry
    beforehand (outside the timing), go to their entry's SA, one call per SA and chunk.
    The crypto cost of the 100-SA workload without any policy work."""
    ts = parse_transforms(transforms)
    ck = bytes(range(ts.cipher_key_length))
    ak = bytes(range(50, 50 + ts.auth_key_length))

    def sa() -> SecurityAssociation:
        return SecurityAssociation("esp", 0x1234, ts, ck or None, ak or None, local=A_ADDR,
                                   peer=B_ADDR, replay_window=0)

    enc_sas = [sa() for _ in range(entries)]
    dec_sas = [sa() for _ in range(entries)]
    entry_of = packets.byte_at(18)  # 10.2.k.z: k is the entry
    chunks = []
    for a in range(0, len(packets), CHUNK_PACKETS):
        sub = packets[a:a + CHUNK_PACKETS]
        ks = entry_of[a:a + CHUNK_PACKETS]
        chunks.append([(k, sub[np.flatnonzero(ks == k)]) for k in range(entries)])
    t = time.perf_counter()
    encrypted = [[(k, enc_sas[k].encapsulate(b).packets) for k, b in c] for c in chunks]
    t_enc = time.perf_counter() - t
    t = time.perf_counter()
    for c in encrypted:
        for k, b in c:
            dec_sas[k].decapsulate(b)
    return t_enc, time.perf_counter() - t


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--entries", type=int, default=100)
    ap.add_argument("--transforms", action="append",
                    help="transform set (repeatable; default esp-aes esp-sha-hmac and esp-gcm)")
    ap.add_argument("--size", default="imix", help="imix (64/576/1500 at 7:4:1) or IPv4 bytes")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--crypto-threads", type=int, default=None,
                    help="Router(crypto_threads=N) (default: the router's, min(CPUs, 4))")
    ap.add_argument("--keep", metavar="DIR", help="write the captures here (default: a temp dir)")
    args = ap.parse_args(argv)
    tune_allocator()  # as `ipsecfast encrypt` / `decrypt` do (every row runs under it)
    transforms = args.transforms or ["esp-aes esp-sha-hmac", "esp-gcm"]
    if not 1 <= args.entries <= 256:
        raise SystemExit("--entries must be 1..256 (one 10.2.k.0/24 per entry)")

    import ssl

    meta = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(), "cpus": os.cpu_count(), "load": round(os.getloadavg()[0], 2),
        "python": platform.python_version(), "openssl": ssl.OPENSSL_VERSION,
        "packets": args.packets, "entries": args.entries, "size": args.size,
        "repeats": args.repeats,
    }
    tmp = tempfile.TemporaryDirectory(prefix="ipsecfast-bench-") if not args.keep else None
    work = Path(args.keep or tmp.name)  # type: ignore[union-attr]
    work.mkdir(parents=True, exist_ok=True)
    clear = work / "clear.pcap"
    cap = make_capture(args.packets, args.entries, args.size)
    pcap.write(clear, cap)
    packets = pcap.read(clear).ip_packets()
    inner_bytes = packets.nbytes
    rows = []
    if not args.json:
        print(f"ipsecfast router benchmark, {meta['date']}, {meta['cpu']} ({meta['cpus']} CPUs, "
              f"load {meta['load']}), Python {meta['python']}, {meta['openssl']}")
        print(f"{args.packets} packets ({args.size}, {inner_bytes / args.packets:.0f} B mean IPv4), "
              f"{args.entries}-entry crypto map, best of {args.repeats}\n")
        print(f"{'transform set':<24} {'op':<8} {'pcap s':>7} {'Mpps':>6} {'Gbit/s':>7} "
              f"{'router s':>8} {'bare s':>7} {'bare Mpps':>9} {'bare E s':>8} {'x bare':>7} "
              f"target {'floor s':>7} {'floor x':>7}")
    for ts_text in transforms:
        cfg_a, cfg_b = make_configs(args.entries, ts_text)
        enc, dec = work / "enc.pcap", work / "dec.pcap"
        best: dict[str, tuple[float, float]] = {}
        floor: dict[str, float] = {}
        bare, multi = [], []
        # every repeat runs each measurement once, so that the best of each comes from the
        # same stretch of time (a shared machine's speed drifts by tens of percent)
        for _ in range(args.repeats):
            for op, cfg, src, dst in (("encrypt", cfg_a, clear, enc), ("decrypt", cfg_b, enc, dec)):
                total, inside, summary = pcap_run(cfg, op, src, dst, args.crypto_threads)
                assert summary["protected"] == args.packets, summary
                if op not in best or total < best[op][0]:
                    best[op] = (total, inside)
                fl = floor_run(op, src, work / "floor.pcap")
                floor[op] = min(floor.get(op, fl), fl)
            assert dec.read_bytes() == clear.read_bytes(), "decrypt(encrypt(x)) != x"
            bare.append(bare_run(ts_text, packets))
            multi.append(bare_multi_run(ts_text, packets, args.entries))
        bare_best = {"encrypt": min(b[0] for b in bare), "decrypt": min(b[1] for b in bare)}
        multi_best = {"encrypt": min(m[0] for m in multi), "decrypt": min(m[1] for m in multi)}
        for op in ("encrypt", "decrypt"):
            total, inside = best[op]
            ratio = total / bare_best[op]
            row = {
                "transforms": ts_text, "op": op, "pcap_seconds": round(total, 3),
                "mpps": round(args.packets / total / 1e6, 3),
                "gbps": round(inner_bytes * 8 / total / 1e9, 3),
                "router_seconds": round(inside, 3), "bare_seconds": round(bare_best[op], 3),
                "bare_mpps": round(args.packets / bare_best[op] / 1e6, 3),
                "bare_per_entry_seconds": round(multi_best[op], 3),
                "x_bare": round(ratio, 2), "target": "ok" if ratio <= TARGET else "MISS",
                "floor_seconds": round(floor[op], 3),
                "floor_x_bare": round(floor[op] / bare_best[op], 2),
            }
            rows.append(row)
            if not args.json:
                print(f"{ts_text:<24} {op:<8} {total:>7.3f} {row['mpps']:>6.3f} {row['gbps']:>7.3f} "
                      f"{inside:>8.3f} {bare_best[op]:>7.3f} {row['bare_mpps']:>9.3f} "
                      f"{multi_best[op]:>8.3f} {ratio:>7.2f} {row['target']:<6} "
                      f"{floor[op]:>7.3f} {row['floor_x_bare']:>7.2f}")
    if args.json:
        print(json.dumps({"meta": meta, "rows": rows}, indent=2))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
