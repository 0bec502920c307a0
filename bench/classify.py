#!/usr/bin/env python3
"""Compiled classifier throughput on the ClassBench sets, next to two baselines, one run.

    python bench/classify.py [--quick] [--json] [--batch N] [--repeats R] [--sets a,b]

For each set (acl1, fw1, ipc1 at 1K and 10K from ../shared/data/classbench; generated
sets of the same shape when ../shared is absent) the rules become 12 access lists with
10% of the entries flipped to ``deny`` (tests/classbench.py ``to_access_lists``), and:

* ``build s``: ``Classifier(acls)`` wall clock (Python row compile + tree build);
* ``MB``: ``Classifier.nbytes`` (rows, nodes, child slots, leaves of both forests);
* ``Mpps pkt``: ``Classifier.classify(batch)`` on one batch of ``--batch`` (64K) 40-byte
  IPv4 packets made from the set's trace (headers parsed in C), best of R calls (the
  minimum is the least disturbed by other load on the machine, as ``timeit`` advises);
* ``Mpps fld``: ``Classifier.classify_fields`` on the same headers as arrays;
* ``ref pps``: ``ipsecfast.acl.first_permit`` (the pure-Python reference) per packet,
  on a small sample;
* ``numpy pps``: ``tests/classbench.py linear_scan``: every entry vectorised over the
  packets with numpy (a few thousand packets);
* ``trees``, ``depth``, ``leaf``: trees of the main forest, deepest node, largest leaf.

Targets (issue 3): >= 10 Mpps on acl1 10K, >= 5 Mpps on fw1 10K and ipc1 10K, build
< 2 s, memory < 64 MB. One core: the lookup runs in one thread without the GIL.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import classbench as cb  # noqa: E402

from ipsecfast.acl import PacketFields, first_permit  # noqa: E402
from ipsecfast.classifier import Classifier  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "classbench"
TARGET_MPPS = {"acl1_10k": 10.0, "fw1_10k": 5.0, "ipc1_10k": 5.0}


def _cpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown"


def _best_time(fn: Any, repeats: int) -> float:
    fn()  # warm up (page in the structure and the batch)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.min(times))


def _batch_fields(trace: np.ndarray, n: int, seed: int) -> dict[str, np.ndarray]:
    f = cb.trace_fields(trace, seed=seed)
    # real traffic: whole packets mostly; a few initial / non-initial fragments
    rng = np.random.default_rng(seed)
    f["frag"] = rng.choice(np.array([0] * 98 + [1, 2]), size=f["proto"].size)
    idx = np.resize(np.arange(trace.shape[0]), n)  # the trace in order, repeated to n
    return {k: np.ascontiguousarray(v[idx]) for k, v in f.items()}


def run_set(name: str, base: Path | None, batch: int, repeats: int, ref_n: int,
            numpy_n: int) -> dict[str, Any]:
    rules, trace = cb.get_set(name, base)
    acls = cb.to_access_lists(rules, nlists=12, deny_fraction=0.1, seed=7)
    t = time.perf_counter()
    clf = Classifier(acls)
    build = time.perf_counter() - t
    f = _batch_fields(trace, batch, seed=1)
    pkts = cb.fields_packets(f)
    t_pkt = _best_time(lambda: clf.classify(pkts), repeats)
    args = (f["proto"], f["src"], f["dst"], f["sport"], f["dport"], f["frag"])
    kw = {k: f[k] for k in ("icmp_type", "icmp_code", "tcp_flags", "tos")}
    t_fld = _best_time(lambda: clf.classify_fields(*args, **kw), repeats)
    # baselines on samples
    sample = [
        PacketFields(int(f["proto"][i]), int(f["src"][i]), int(f["dst"][i]),
                     int(f["sport"][i]), int(f["dport"][i]), int(f["icmp_type"][i]),
                     int(f["icmp_code"][i]), int(f["tcp_flags"][i]), int(f["tos"][i]),
                     int(f["frag"][i]))
        for i in range(ref_n)
    ]
    t = time.perf_counter()
    ref = [first_permit(acls, p) for p in sample]
    t_ref = time.perf_counter() - t
    sub = {k: v[:numpy_n] for k, v in f.items()}
    t = time.perf_counter()
    lin = cb.linear_scan(acls, sub)
    t_np = time.perf_counter() - t
    # the three agree (a bench that measures a wrong answer measures nothing)
    got_l, got_e = clf.classify_fields(*args, **kw, entries=True)
    agree = (np.array_equal(got_l[:numpy_n], lin[0]) and np.array_equal(got_e[:numpy_n], lin[1])
             and [tuple(r) for r in ref] == list(zip(got_l[:ref_n].tolist(),
                                                     got_e[:ref_n].tolist(), strict=True)))
    st = clf.stats()["whole"]
    return {
        "set": name,
        "source": "classbench" if base is not None and (base / name).exists() else "generated",
        "rules": len(rules),
        "build_s": build,
        "mb": clf.nbytes / 1e6,
        "mpps_packets": batch / t_pkt / 1e6,
        "mpps_fields": batch / t_fld / 1e6,
        "ref_pps": ref_n / t_ref,
        "numpy_pps": numpy_n / t_np,
        "trees": st["trees"],
        "depth": st["max_depth"],
        "max_leaf": st["max_leaf"],
        "agree": bool(agree),
        "hit_rate": float((got_l >= 0).mean()),
    }


def _fmt_pps(x: float) -> str:
    return f"{x / 1e3:.1f}K" if x >= 1e3 else f"{x:.0f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="8K batch, 3 repeats, small samples")
    ap.add_argument("--json", action="store_true", help="one JSON document instead of a table")
    ap.add_argument("--batch", type=int, default=65536)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--sets", default=",".join(cb.SETS))
    args = ap.parse_args(argv)
    batch, repeats, ref_n, numpy_n = args.batch, args.repeats, 200, 4096
    if args.quick:
        batch, repeats, ref_n, numpy_n = 8192, 3, 30, 512
    base = SHARED if SHARED.is_dir() else None
    meta = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "batch": batch,
        "repeats": repeats,
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "command": "python bench/classify.py " + " ".join(argv if argv is not None
                                                           else sys.argv[1:]),
    }
    rows = []
    for name in args.sets.split(","):
        rows.append(run_set(name, base, batch, repeats, ref_n, numpy_n))
        if not args.json:
            r = rows[-1]
            if len(rows) == 1:
                print(f"# {meta['date']}  {meta['cpu']}  batch {batch}, best of {repeats}, "
                      f"load average {meta['load']}")
                print(f"{'set':9} {'src':5} {'rules':>5} {'build s':>7} {'MB':>5} "
                      f"{'Mpps pkt':>8} {'Mpps fld':>8} {'ref pps':>8} {'numpy pps':>9} "
                      f"{'x ref':>7} {'x numpy':>7} {'trees':>5} {'depth':>5} {'leaf':>4} "
                      f"{'ok':>3} {'target':>6}")
            tgt = TARGET_MPPS.get(r["set"])
            ok = r["build_s"] < 2 and r["mb"] < 64 and (tgt is None or r["mpps_packets"] >= tgt)
            print(f"{r['set']:9} {r['source'][:5]:5} {r['rules']:5d} {r['build_s']:7.3f} "
                  f"{r['mb']:5.1f} {r['mpps_packets']:8.2f} {r['mpps_fields']:8.2f} "
                  f"{_fmt_pps(r['ref_pps']):>8} {_fmt_pps(r['numpy_pps']):>9} "
                  f"{r['mpps_packets'] * 1e6 / r['ref_pps']:7.0f} "
                  f"{r['mpps_packets'] * 1e6 / r['numpy_pps']:7.0f} {r['trees']:5d} "
                  f"{r['depth']:5d} {r['max_leaf']:4d} {'yes' if r['agree'] else 'NO':>3} "
                  f"{'ok' if ok else 'MISS':>6}", flush=True)
    if args.json:
        print(json.dumps({"meta": meta, "rows": rows}, indent=2))
    return 0 if all(r["agree"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
