#!/usr/bin/env python3
"""How much the bare SA rate drops while another thread copies memory: the machine
property that caps ``bench/router.py``'s ratio (not part of ``make test``).

    python bench/contention.py [--packets 1000000] [--repeats 3]

For each transform set: ``SecurityAssociation.encapsulate`` over the same IMIX packets as
bench/router.py, in 64K-packet chunks (the ``bare s`` column there), best of
``--repeats``, three ways: alone; while a second thread copies 64 MB buffers in a loop
(what the pcap reader and writer of ``ipsecfast encrypt`` / ``decrypt`` do: memory
traffic, no GIL held); and split over two threads by SA (``Router(crypto_threads=2)``'s
way, 100 SAs). ``copy x`` = with the copier / alone: on a machine whose two CPUs are
two hyperthreads of one core, or that share a memory channel, it is far above 1, and a
pcap-to-pcap run cannot come near the bare rate however little policy work it adds.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.router import A_ADDR, B_ADDR, make_capture  # noqa: E402
from ipsecfast.cli import CHUNK_PACKETS, tune_allocator  # noqa: E402
from ipsecfast.sa import MODE_IDS, SecurityAssociation, _encapsulate_multi  # noqa: E402
from ipsecfast.transform import parse_transforms  # noqa: E402

TUNNEL = MODE_IDS["tunnel"]


def _sa(transforms: str) -> SecurityAssociation:
    ts = parse_transforms(transforms)
    return SecurityAssociation("esp", 0x1234, ts, bytes(range(ts.cipher_key_length)) or None,
                               bytes(range(50, 50 + ts.auth_key_length)) or None,
                               local=A_ADDR, peer=B_ADDR, replay_window=0)


class _Copier:
    """A thread copying 64 MB buffers until stopped (numpy releases the GIL)."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        a = np.ones(64 << 20, dtype=np.uint8)
        b = np.empty_like(a)
        while not self._stop.is_set():
            np.copyto(b, a)

    def __enter__(self) -> _Copier:
        self._thread.start()
        time.sleep(0.1)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--transforms", action="append")
    args = ap.parse_args(argv)
    tune_allocator()
    transforms = args.transforms or ["esp-aes esp-sha-hmac", "esp-gcm"]
    packets = make_capture(args.packets, 100, "imix").ip_packets()
    chunks = [packets[a:a + CHUNK_PACKETS] for a in range(0, len(packets), CHUNK_PACKETS)]
    entry = [c.byte_at(18).astype(np.int64) for c in chunks]  # 10.2.k.z: SA k of 100
    print(f"{args.packets} IMIX packets, best of {args.repeats}, {os.cpu_count()} CPUs")
    print(f"{'transform set':<24} {'alone s':>8} {'+copy s':>8} {'copy x':>7} "
          f"{'2 thr s':>8} {'2 thr x':>7}")
    for ts in transforms:
        def one(ts: str = ts) -> float:
            sa = _sa(ts)
            t = time.perf_counter()
            for c in chunks:
                sa.encapsulate(c)
            return time.perf_counter() - t

        def split(ts: str = ts) -> float:
            sas = [_sa(ts) for _ in range(100)]
            grow = sas[0]._max_growth(TUNNEL)
            t = time.perf_counter()
            for c, e in zip(chunks, entry, strict=True):
                off = np.zeros(len(c), dtype=np.int64)
                np.cumsum(c.lengths[:-1] + grow, out=off[1:])
                out = np.empty(int(c.lengths.sum()) + grow * len(c), dtype=np.uint8)
                _encapsulate_multi(sas, e, TUNNEL, c, out, off, threads=2)
            return time.perf_counter() - t

        alone = min(one() for _ in range(args.repeats))
        with _Copier():
            copied = min(one() for _ in range(args.repeats))
        two = min(split() for _ in range(args.repeats))
        print(f"{ts:<24} {alone:>8.3f} {copied:>8.3f} {copied / alone:>7.2f} "
              f"{two:>8.3f} {alone / two:>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
