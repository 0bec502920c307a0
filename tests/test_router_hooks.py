"""Router listeners (``on_sa_deleted``, ``on_traffic_received``) that raise: the error is
logged and kept in ``router.listener_errors``, and the router's own work goes on (the
other expired pairs are deleted on time, ``close`` wipes every pair, the batch in
progress is delivered)."""

from __future__ import annotations

import logging

import pytest

pytest.importorskip("scapy")
from test_ike_kit import M_ADDR, N_ADDR, SUBNET_Y, Clock, config  # noqa: E402

from ipsecfast import parse_config  # noqa: E402
from ipsecfast.router import Flow, Router, SaKeys  # noqa: E402

CFG = config(M_ADDR, N_ADDR, [f"permit ip host 10.0.1.1 {SUBNET_Y}",
                              f"permit ip host 10.0.1.2 {SUBNET_Y}"])


def keys(spi: int) -> dict[str, SaKeys]:
    return {"esp": SaKeys(spi, bytes(range(32)), bytes(range(20)))}


def boom(router: Router, *args: object) -> None:
    raise RuntimeError("listener bug")


def test_a_raising_deletion_listener_does_not_stop_expiry(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock(1000.0)
    r = Router(parse_config(CFG), clock=clock)
    p1 = r.install_sas(0, N_ADDR, keys(0x1001), keys(0x2001), flow=Flow(0),
                       lifetime_seconds=100, rekey=False)
    clock.t = 1050
    p2 = r.install_sas(0, N_ADDR, keys(0x1002), keys(0x2002), flow=Flow(1),
                       lifetime_seconds=100, rekey=False)
    seen: list[tuple[int, str]] = []
    r.on_sa_deleted(boom)
    r.on_sa_deleted(lambda router, pair, reason: seen.append((pair.id, reason)))
    clock.t = 1101
    with caplog.at_level(logging.ERROR, logger="ipsecfast.router"):
        r.check_lifetimes()  # does not raise
    assert not p1.alive and p2.alive
    assert seen == [(p1.id, "expired")]  # the listener after the broken one still ran
    assert len(r.listener_errors) == 1 and "listener bug" in str(r.listener_errors[0])
    assert "listener" in caplog.text
    clock.t = 1151  # p2's hard lifetime: still scheduled despite the earlier error
    r.check_lifetimes()
    assert not p2.alive and seen[-1] == (p2.id, "expired")
    assert len(r.sad.pairs) == 0


def test_close_wipes_every_pair_despite_a_raising_listener() -> None:
    r = Router(parse_config(CFG))
    a = r.install_sas(0, N_ADDR, keys(0x1001), keys(0x2001), flow=Flow(0))
    b = r.install_sas(0, N_ADDR, keys(0x1002), keys(0x2002), flow=Flow(1))
    r.on_sa_deleted(boom)
    r.close()
    assert not a.alive and not b.alive and len(r.sad.pairs) == 0
    assert all(rec.sa.closed for p in (a, b) for rec in (*p.inbound, *p.outbound))
    assert len(r.listener_errors) == 2


def test_listener_errors_are_bounded() -> None:
    r = Router(parse_config(CFG))
    r.on_sa_deleted(boom)
    for k in range(120):
        r.install_sas(0, N_ADDR, keys(0x3000 + 2 * k), keys(0x5000 + 2 * k), flow=Flow(0))
    r.close()
    assert len(r.listener_errors) == 100
