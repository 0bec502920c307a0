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
    router = Router(cfg)
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
