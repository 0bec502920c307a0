"""Router policy decisions against the reference matcher, on generated crypto maps.

Random crypto map sets (``ipsec-isakmp`` and ``ipsec-manual`` entries with random
permit / deny lists) and random packets: every verdict, drop reason and entry index of
``Router.outbound`` / ``inbound`` must be what ``acl.first_permit`` over the entries' lists
says, with the seed's rule for manual entries ("restricted to a single permit entry and
subsequent entries are ignored") applied by the test itself.
"""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from ipsecfast import PacketBatch, Status
from ipsecfast.acl import AccessList, PacketFields, first_permit
from ipsecfast.config import parse_config
from ipsecfast.router import Router, Verdict

NETS = ["any", "10.1.0.0 0.0.255.255", "10.2.0.0 0.0.255.255", "10.1.1.0 0.0.0.255",
        "host 10.1.1.1", "host 10.2.2.2", "10.0.0.0 0.255.255.255"]
ADDRS = ["10.1.1.1", "10.1.2.3", "10.2.2.2", "10.2.9.9", "10.3.0.1"]
PORTS = [53, 80, 443, 1000]
KEYS = ("ab" * 16, "cd" * 20)

ace = st.tuples(
    st.sampled_from(["permit", "deny"]),
    st.sampled_from(["ip", "tcp", "udp"]),
    st.sampled_from(NETS),
    st.sampled_from(["", "eq 53", "eq 80", "gt 100", "range 50 90"]),
    st.sampled_from(NETS),
    st.sampled_from(["", "eq 53", "eq 80", "lt 1000"]),
)
entry = st.tuples(st.booleans(), st.lists(ace, min_size=0, max_size=4))
packet = st.tuples(st.sampled_from([6, 17]), st.sampled_from(ADDRS), st.sampled_from(ADDRS),
                   st.sampled_from(PORTS), st.sampled_from(PORTS))


def build(entries: list[tuple[bool, list[tuple[str, ...]]]]) -> str:
    lines = ["crypto ipsec transform-set T esp-aes esp-sha-hmac"]
    for i, (manual, _) in enumerate(entries):
        lines.append(f"crypto map M {10 * (i + 1)} {'ipsec-manual' if manual else 'ipsec-isakmp'}")
        lines += [f" set peer 192.0.2.{2 + i}", " set transform-set T", f" match address {101 + i}"]
        if manual:
            lines += [f" set session-key inbound esp {300 + 2 * i} cipher {KEYS[0]} "
                      f"authenticator {KEYS[1]}",
                      f" set session-key outbound esp {301 + 2 * i} cipher {KEYS[0]} "
                      f"authenticator {KEYS[1]}"]
    lines += ["interface GigabitEthernet0/0", " ip address 192.0.2.1 255.255.255.0",
              " crypto map M"]
    for i, (_, aces) in enumerate(entries):
        if not aces:
            lines.append(f"ip access-list extended {101 + i}")
        for action, proto, src, sport, dst, dport in aces:
            if proto == "ip":
                sport = dport = ""
            lines.append(f"access-list {101 + i} {action} {proto} {src} {sport} {dst} {dport}")
    return "\n".join(lines) + "\n"


def first_permit_only(acl: AccessList) -> AccessList:
    out = AccessList(acl.name, acl.kind)
    for a in acl.entries:
        out.entries.append(a)
        if a.action == "permit":
            return out
    return out


def make_packet(proto: int, src: str, dst: str, sport: int, dport: int) -> bytes:
    from scapy.layers.inet import IP, TCP, UDP

    l4 = TCP(sport=sport, dport=dport) if proto == 6 else UDP(sport=sport, dport=dport)
    return bytes(IP(src=src, dst=dst) / l4)


@settings(max_examples=60, deadline=None)
@given(st.lists(entry, min_size=1, max_size=4), st.lists(packet, min_size=1, max_size=30))
def test_router_policy_equals_first_permit(entries: list, packets: list) -> None:
    cfg = parse_config(build(entries))
    # one layer: the oracle is first_permit on the inner packet; a later entry that also
    # permits the ESP packet (local -> peer) would nest a second layer (Figure 1), which
    # tests/test_router_sa.py covers
    router = Router(cfg, nesting_depth=1)
    acls = []
    for i, (manual, _) in enumerate(entries):
        acl = cfg.access_lists.get(str(101 + i), AccessList(str(101 + i)))
        acls.append(first_permit_only(acl) if manual else acl)
    batch = PacketBatch.from_list([make_packet(*p) for p in packets])
    out = router.outbound("Gi0/0", batch)
    inb = router.inbound("Gi0/0", batch)
    for i, (proto, src, dst, sport, dport) in enumerate(packets):
        fields = PacketFields(proto, int(ipaddress.IPv4Address(src)),
                              int(ipaddress.IPv4Address(dst)), sport, dport)
        li, _ = first_permit(acls, fields)
        if li < 0:
            assert (out.verdict[i], out.entry[i]) == (Verdict.BYPASS, -1)
            assert out.packets[i] == batch[i]
        elif entries[li][0]:
            assert (out.verdict[i], out.entry[i]) == (Verdict.PROTECT, li)
        else:
            assert (out.verdict[i], out.reason[i], out.entry[i]) == (
                Verdict.DROP, Status.NO_SA, li)
        mi, _ = first_permit(acls, fields, mirror=True)
        if mi < 0:
            assert (inb.verdict[i], inb.entry[i]) == (Verdict.BYPASS, -1)
        else:
            assert (inb.verdict[i], inb.reason[i], inb.entry[i]) == (
                Verdict.DROP, Status.UNPROTECTED, mi)


def _fuzz_packets(data: st.DataObject) -> list[bytes]:
    from scapy.layers.inet import IP

    out = []
    n = data.draw(st.integers(1, 40))
    for _ in range(n):
        kind = data.draw(st.sampled_from(["garbage", "esp", "ah", "clear"]))
        body = data.draw(st.binary(min_size=0, max_size=120))
        if kind == "garbage":
            out.append(body)
            continue
        proto = {"esp": 50, "ah": 51, "clear": 17}[kind]
        src = data.draw(st.sampled_from(["192.0.2.2", "10.2.0.7", "10.1.0.5"]))
        dst = data.draw(st.sampled_from(["192.0.2.1", "10.1.0.5", "10.2.0.7", "224.0.0.1"]))
        pkt = bytes(IP(src=src, dst=dst, proto=proto) / body)
        cut = data.draw(st.integers(0, len(pkt)))
        out.append(pkt[:cut] if data.draw(st.booleans()) else pkt)
    return out


@settings(max_examples=80, deadline=None)
@given(st.data(), st.sampled_from(["esp-aes esp-sha-hmac", "ah-sha-hmac esp-gcm 128",
                                   "ah-md5-hmac"]),
       st.sampled_from(["tunnel", "transport"]))
def test_bad_packets_never_raise(data: st.DataObject, spec: str, mode: str) -> None:
    """DESIGN.md §Policy 11: "nothing is dropped silently and nothing raises on bad
    packets" -- random, truncated and forged packets in both directions."""
    from test_router_kit import manual_pair

    a, _, _ = manual_pair(spec, mode, entries=[
        ("permit ip host 192.0.2.1 host 192.0.2.2", "permit ip host 192.0.2.2 host 192.0.2.1"),
        ("permit ip 10.1.0.0 0.0.255.255 10.2.0.0 0.0.255.255",
         "permit ip 10.2.0.0 0.0.255.255 10.1.0.0 0.0.255.255")])
    router = Router(a)
    pkts = _fuzz_packets(data)
    batch = PacketBatch.from_list(pkts)
    for res in (router.outbound("Gi0/0", batch), router.inbound("Gi0/0", batch)):
        assert len(res) == len(pkts) == len(res.packets)
        drop = res.verdict == Verdict.DROP
        assert set(res.verdict.tolist()) <= {0, 1, 2}
        assert (res.reason[drop] != 0).all() and (res.reason[~drop] == 0).all()
        assert (res.packets.lengths[drop] == 0).all()
        for i in map(int, (res.verdict == Verdict.BYPASS).nonzero()[0]):
            assert res.packets[i] == pkts[i]
    # forged ESP/AH for us with a known SPI: decapsulation fails, counted, no exception
    spis = [s.spi for s in router.sad.sas() if s.direction == "inbound"]
    forged = []
    for spi in spis:
        for proto, at in ((50, 0), (51, 4)):
            hdr = bytearray(bytes(IP_(proto)) + bytes(8 + 64))
            hdr[2:4] = len(hdr).to_bytes(2, "big")
            hdr[20 + at:24 + at] = spi.to_bytes(4, "big")
            if proto == 51:
                hdr[21] = 4
            forged.append(bytes(hdr))
    res = router.inbound("Gi0/0", PacketBatch.from_list(forged))
    assert (res.verdict == Verdict.DROP).all() and (res.reason != 0).all()


def IP_(proto: int) -> bytes:  # noqa: N802 - scapy-style name
    from scapy.layers.inet import IP

    return bytes(IP(src="192.0.2.2", dst="192.0.2.1", proto=proto))
