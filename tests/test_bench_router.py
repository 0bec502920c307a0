"""bench/router.py still measures what ``ipsecfast encrypt`` / ``decrypt`` do: its timing
wrapper lets ``run_pcap`` hand the router's first step to the reader thread, and a small
run completes with decrypt(encrypt(x)) == x (the script checks it)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from ipsecfast.cli import _takes_prepared
from ipsecfast.config import parse_config
from ipsecfast.router import Router

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "router.py"


@pytest.fixture(scope="module")
def bench() -> Any:
    spec = importlib.util.spec_from_file_location("bench_router", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_router"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_the_timed_router_takes_prepared(bench: Any) -> None:
    cfg_a, _ = bench.make_configs(3, "esp-gcm")
    timed = bench._Timed(Router(parse_config(cfg_a)))
    assert _takes_prepared(timed.outbound) and _takes_prepared(timed.inbound)


def test_a_small_run_completes(bench: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["--packets", "3000", "--entries", "5", "--repeats", "1",
                       "--transforms", "esp-gcm", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [r["op"] for r in rows] == ["encrypt", "decrypt"]
    assert all(r["pcap_seconds"] > 0 and r["bare_seconds"] > 0 for r in rows)
