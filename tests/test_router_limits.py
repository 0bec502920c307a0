"""Router: what it remembers stays bounded when no negotiator answers its ACQUIREs.

A router without a negotiator drops traffic of ``ipsec-isakmp`` entries (``no-sa``) and
records an ACQUIRE per flow, at most one per flow per ``ACQUIRE_RETRY_SECONDS``. A flood of
flows (per-host SAs: one flow per host pair) must not grow ``router.acquires`` or the
pending-flow table without bound.
"""

from __future__ import annotations

import ipaddress
import struct

from ipsecfast import PacketBatch, Status, parse_config
from ipsecfast.router import (
    ACQUIRE_RETRY_SECONDS,
    PENDING_LIMIT,
    REQUEST_HISTORY,
    Router,
    Verdict,
)

IF = "GigabitEthernet0/0"

CONFIG = """crypto ipsec transform-set T esp-aes 256 esp-sha-hmac
crypto map M 10 ipsec-isakmp
 set peer 192.0.2.2
 set transform-set T
 set security-association level per-host
 match address 101
interface GigabitEthernet0/0
 ip address 192.0.2.1 255.255.255.0
 crypto map M
access-list 101 permit ip 10.1.0.0 0.0.255.255 10.2.0.0 0.0.255.255
"""


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _udp(src: str, dst: str) -> bytes:
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 1, 0, 64, 17, 0,
                      ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    words = struct.unpack("!10H", hdr)
    s = sum(words)
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    hdr = hdr[:10] + struct.pack("!H", ~s & 0xFFFF) + hdr[12:]
    return hdr + struct.pack("!HHHH", 1000, 53, 8, 0)


def _flows(n: int, first: int = 0) -> PacketBatch:
    """``n`` packets, each its own host pair (10.1.x.y -> 10.2.0.1)."""
    return PacketBatch.from_list([_udp(f"10.1.{(first + i) // 250}.{(first + i) % 250 + 1}",
                                       "10.2.0.1") for i in range(n)])


def test_one_acquire_per_flow_per_retry_time() -> None:
    clock = Clock()
    r = Router(parse_config(CONFIG), clock=clock)
    one = _flows(1)
    for _ in range(50):
        res = r.outbound(IF, one)
        assert res.reason.tolist() == [Status.NO_SA]
        clock.t += 0.1
    assert len(r.acquires) == 1
    clock.t = 1000.0 + ACQUIRE_RETRY_SECONDS
    r.outbound(IF, one)
    assert len(r.acquires) == 2
    assert r.acquires[0].flow == r.acquires[1].flow


def test_acquires_and_pending_flows_stay_bounded() -> None:
    clock = Clock()
    r = Router(parse_config(CONFIG), clock=clock)
    n = PENDING_LIMIT + 1000
    res = r.outbound(IF, _flows(n))
    assert res.verdict.tolist() == [Verdict.DROP] * n
    assert set(res.reason.tolist()) == {Status.NO_SA}
    assert len(r.acquires) == REQUEST_HISTORY, "the last ones are kept"
    assert len({a.flow for a in r.acquires}) == REQUEST_HISTORY
    assert len(r._pending) <= PENDING_LIMIT
    # the most recent flows are still pending: no new ACQUIRE for the last one
    last = PacketBatch.from_list([_flows(n).to_list()[-1]])
    r.outbound(IF, last)
    assert len(r.acquires) == REQUEST_HISTORY and r.acquires[-1].time == 1000.0
    # past the retry time, the stale flows make room first
    clock.t += ACQUIRE_RETRY_SECONDS + 1
    r.outbound(IF, _flows(n, first=n))
    assert len(r._pending) <= PENDING_LIMIT
    assert all(t == clock.t for t in r._pending.values())
    assert len(r.acquires) == REQUEST_HISTORY and r.acquires[-1].time == clock.t
