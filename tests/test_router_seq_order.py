"""The per-pair outbound path (SA pairs with a kilobyte lifetime: every IKE SA; bundles)
numbers each SA's packets in input order even when a ``mode transport`` set mixes tunnel
traffic (hosts behind the routers) and transport traffic (router to router) in one batch,
so the peer's anti-replay window accepts the batch as sent."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("scapy")
from test_router_kit import A_ADDR, B_ADDR, manual_pair, udp  # noqa: E402

from ipsecfast import PacketBatch  # noqa: E402
from ipsecfast.config import parse_config  # noqa: E402
from ipsecfast.router import Router, SaKeys, Verdict  # noqa: E402

IF = "GigabitEthernet0/0"
ANY = "permit ip any any"


def isakmp_config(me: str, peer: str, spec: str) -> str:
    return f"""crypto ipsec transform-set T {spec}
 mode transport
crypto map M 10 ipsec-isakmp
 set peer {peer}
 set transform-set T
 match address 101
interface GigabitEthernet0/0
 ip address {me} 255.255.255.0
 crypto map M
access-list 101 {ANY}
"""


def ike_routers(spec: str) -> tuple[Router, Router]:
    ra = Router(parse_config(isakmp_config(A_ADDR, B_ADDR, spec)))
    rb = Router(parse_config(isakmp_config(B_ADDR, A_ADDR, spec)))
    protos = ["esp"] + (["ah"] if "ah-" in spec else [])

    def keys(spi: int) -> dict[str, SaKeys]:
        return {p: SaKeys(spi + 16 * i, os.urandom(16) if p == "esp" else None,
                          os.urandom(20)) for i, p in enumerate(protos)}

    ab, ba = keys(0x6001), keys(0x7001)
    ra.install_sas(0, B_ADDR, ba, ab, lifetime_kilobytes=100000)
    rb.install_sas(0, A_ADDR, ab, ba, lifetime_kilobytes=100000)
    return ra, rb


def manual_routers(spec: str) -> tuple[Router, Router]:
    ca, cb, _ = manual_pair(spec, "transport", entries=[(ANY, ANY)])
    return Router(ca), Router(cb)


def mixed(n: int = 24) -> list[bytes]:
    """Tunnel (host to host) and transport (router to router) traffic, interleaved."""
    pkts = []
    for i in range(n):
        if i % 3 == 1:
            pkts.append(udp(A_ADDR, B_ADDR, 60 + i, i))
        else:
            pkts.append(udp("10.1.0.5", "10.2.0.7", 80 + 7 * i, i))
    return pkts


def seqs(wire: bytes) -> list[tuple[int, int, int]]:
    """(protocol, SPI, sequence number) of each IPsec header, outermost first."""
    off, proto, out = (wire[0] & 0xF) * 4, wire[9], []
    while proto in (50, 51):
        spi = int.from_bytes(wire[off + (4 if proto == 51 else 0):][:4], "big")
        seq = int.from_bytes(wire[off + (8 if proto == 51 else 4):][:4], "big")
        out.append((proto, spi, seq))
        if proto == 50:
            break
        proto, off = wire[off], off + (wire[off + 1] + 2) * 4
    return out


@pytest.mark.parametrize("make,spec", [
    (ike_routers, "esp-aes esp-sha-hmac"),
    (ike_routers, "ah-sha-hmac esp-aes esp-sha-hmac"),
    (manual_routers, "ah-sha-hmac esp-aes esp-sha-hmac"),
])
def test_mixed_modes_numbered_in_input_order(make: object, spec: str) -> None:
    ra, rb = make(spec)  # type: ignore[operator]
    for _ in range(2):  # a second batch continues each SA's numbers
        pkts = mixed()
        out = ra.outbound(IF, PacketBatch.from_list(pkts))
        assert (out.verdict == Verdict.PROTECT).all()
        wires = out.packets.to_list()
        headers = [seqs(w) for w in wires]
        nlayers = 2 if "ah-" in spec else 1
        assert all(len(h) == nlayers for h in headers)
        for layer in range(nlayers):
            per_sa: dict[int, list[int]] = {}
            for h in headers:
                per_sa.setdefault(h[layer][1], []).append(h[layer][2])
            for numbers in per_sa.values():
                assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers), \
                    numbers
        back = rb.inbound(IF, PacketBatch.from_list(wires))
        assert (back.verdict == Verdict.PROTECT).all(), back.verdict
        assert back.packets.to_list() == pkts
