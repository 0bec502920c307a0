"""pytest-benchmark: ESP encapsulate / decapsulate on one batch.

    pytest bench/ --benchmark-enable            # measure
    pytest bench/                               # smoke test: each runs once (addopts disable)

The same transform sets and sizes as ``bench/esp.py`` (which adds the openssl and scapy
baselines); a smaller batch so a run stays short.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import esp  # noqa: E402

BATCH = 4096


@pytest.fixture(params=esp.CONFIGS, ids=lambda c: c.name.replace(" ", "_"))
def cfg(request: pytest.FixtureRequest) -> esp.Config:
    return request.param


@pytest.mark.parametrize("size", esp.SIZES)
def test_encapsulate(benchmark, cfg: esp.Config, size: int) -> None:  # type: ignore[no-untyped-def]
    batch = esp.make_batch(size, BATCH)
    tx = esp.new_sa(cfg)
    benchmark.extra_info.update(packets=BATCH, bytes=BATCH * size)
    res = benchmark(tx.encapsulate, batch)
    assert not np.asarray(res.status).any()


@pytest.mark.parametrize("size", esp.SIZES)
def test_decapsulate(benchmark, cfg: esp.Config, size: int) -> None:  # type: ignore[no-untyped-def]
    wires = esp.new_sa(cfg).encapsulate(esp.make_batch(size, BATCH)).packets
    benchmark.extra_info.update(packets=BATCH, bytes=BATCH * size)

    def setup():  # type: ignore[no-untyped-def]
        # a fresh receiver each round: the replay window would reject a second pass
        return (esp.new_sa(cfg),), {}

    res = benchmark.pedantic(lambda rx: rx.decapsulate(wires), setup=setup, rounds=20)
    assert not np.asarray(res.status).any()
