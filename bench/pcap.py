"""pcap read / write throughput on a generated capture (not part of ``make test``).

    .venv/bin/python bench/pcap.py [--packets 1000000] [--scapy 20000]

Generates Ethernet / IPv4 / UDP frames with the simple IMIX size mix (7:4:1 of 64,
594 and 1518-byte frames), then times, best of ``--repeat`` runs each: writing the
classic pcap file, reading it back (file in the page cache), ``ip_packets()`` and
``replace_ip_packets()``. scapy's ``rdpcap`` on the first ``--scapy`` packets gives a
reference rate. MB/s counts file bytes.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ipsecfast import pcap
from ipsecfast.packets import PacketBatch

# Ether(dst, src, 0x0800) / IPv4(20 bytes, UDP) / UDP(8 bytes): 42 header bytes.
_HEADER = bytes.fromhex(
    "0200000000020200000000010800"  # Ethernet II
    "450000000000400040110000c0a80001c0a80101"  # IPv4, lengths / checksum filled per frame
    "1f901f9000000000"  # UDP 8080 -> 8080
)


def generate(n: int) -> pcap.Capture:
    """``n`` IMIX frames, built with numpy only (no Python loop per packet)."""
    sizes = np.array([64, 64, 64, 64, 64, 64, 64, 594, 594, 594, 594, 1518], dtype=np.int64)
    lengths = sizes[np.arange(n) % sizes.size] - 4  # captured without the FCS
    offsets = np.zeros(n, dtype=np.int64)
    np.cumsum(lengths[:-1], out=offsets[1:])
    buf = np.zeros(int(lengths.sum()), dtype=np.uint8)
    hdr = np.frombuffer(_HEADER, dtype=np.uint8)
    idx = offsets[:, None] + np.arange(hdr.size)
    buf[idx] = hdr
    ip_len = lengths - 14
    udp_len = ip_len - 20
    buf[offsets + 16] = ip_len >> 8
    buf[offsets + 17] = ip_len & 0xFF
    buf[offsets + 38] = udp_len >> 8
    buf[offsets + 39] = udp_len & 0xFF
    ident = np.arange(n) & 0xFFFF  # IP id and the source host vary per packet
    buf[offsets + 18] = ident >> 8
    buf[offsets + 19] = ident & 0xFF
    buf[offsets + 29] = (np.arange(n) % 250) + 1
    stamps = 1_700_000_000 * 10**9 + np.arange(n, dtype=np.int64) * 1000
    return pcap.Capture(PacketBatch(buf, offsets, lengths), pcap.LINKTYPE_ETHERNET, stamps)


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def best(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times = []
    result = None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return min(times), result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--scapy", type=int, default=20_000, help="packets for the scapy reference (0: skip)")
    args = ap.parse_args()

    cap = generate(args.packets)
    n = len(cap)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.pcap")
        t_write, _ = best(lambda: pcap.write(path, cap), args.repeat)
        size = os.path.getsize(path)
        t_read, back = best(lambda: pcap.read(path), args.repeat)
        assert len(back) == n and int(back.is_ipv4.sum()) == n
        t_ip, ip = best(back.ip_packets, args.repeat)
        t_rep, rebuilt = best(lambda: back.replace_ip_packets(ip), args.repeat)
        assert rebuilt.frames.nbytes == cap.frames.nbytes
        t_scapy = None
        if args.scapy:
            import scapy.layers.l2  # noqa: F401  (so rdpcap dissects Ethernet / IP / UDP)
            from scapy.utils import rdpcap

            small = os.path.join(tmp, "small.pcap")
            k = min(args.scapy, n)
            pcap.write(small, pcap.Capture(cap.frames[:k], cap.linktype, cap.timestamps[:k]))
            t = time.perf_counter()
            rdpcap(small)
            t_scapy = (time.perf_counter() - t) / k

    mb = size / 1e6
    print(f"ipsecfast.pcap, {n} packets, {mb:.1f} MB file, best of {args.repeat}")
    print(f"CPU: {_cpu()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, numpy {np.__version__}")
    print(f"{'operation':<28}{'seconds':>10}{'Mpackets/s':>13}{'MB/s':>10}")
    rows = [
        ("write (classic pcap)", t_write, mb),
        ("read (file -> Capture)", t_read, mb),
        ("ip_packets() view", t_ip, None),
        ("replace_ip_packets()", t_rep, rebuilt.frames.nbytes / 1e6),
    ]
    for name, t, vol in rows:
        rate = f"{vol / t:10.0f}" if vol is not None else f"{'-':>10}"
        print(f"{name:<28}{t:10.4f}{n / t / 1e6:13.2f}{rate}")
    if t_scapy is not None:
        print(f"{'scapy rdpcap (reference)':<28}{t_scapy * n:10.2f}{1 / t_scapy / 1e6:13.4f}"
              f"{'':>10}   (timed on {min(args.scapy, n)} packets, scaled)")
        print(f"read speed-up over scapy rdpcap: {t_scapy * n / t_read:.0f}x")


if __name__ == "__main__":
    main()
