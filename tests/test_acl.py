"""Extended IP access lists: parser, renderers, reference matcher, crypto-map semantics.

Oracles: the IANA protocol / port / ICMP numbers and the Cisco IOS documentation
(written out by hand below), the worked fragment example of Cisco's "Access Control
Lists and IP Fragments", the seed guide's crypto ACL examples, ``ipaddress`` networks,
and small brute-force computations -- never the module's own output.
"""

from __future__ import annotations

import ipaddress
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipsecfast.acl import (
    ANY_WILDCARD,
    AccessList,
    Ace,
    Action,
    AddressMatch,
    PacketFields,
    PortMatch,
    check_crypto_acl,
    first_permit,
    parse_access_lists,
    parse_named_entry,
    parse_numbered_line,
    render_config,
)
from ipsecfast.exceptions import ConfigError


def ip(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def one(rule: str) -> Ace:
    """The entry of `access-list 101 <rule>` (seq 0, as parse_numbered_line gives it)."""
    name, ace = parse_numbered_line(f"access-list 101 {rule}")
    assert name == "101"
    return ace


def rendered(rule: str) -> str:
    return one(rule).render()


# ---------------------------------------------------------------------------------------
# Keywords: protocols

# IANA protocol numbers of IOS's protocol keywords (`permit ?`).
IANA_PROTOCOLS = {
    "ahp": 51, "eigrp": 88, "esp": 50, "gre": 47, "icmp": 1, "igmp": 2, "ipinip": 4,
    "nos": 94, "ospf": 89, "pcp": 108, "pim": 103, "sctp": 132, "tcp": 6, "udp": 17,
}


@pytest.mark.parametrize("name,number", sorted(IANA_PROTOCOLS.items()))
def test_protocol_names(name: str, number: int) -> None:
    ace = one(f"permit {name} any any")
    assert ace.protocol == number
    assert ace.render() == f"permit {name} any any"
    # the number is the same entry and is shown by name, as IOS does
    assert one(f"permit {number} any any") == ace
    assert rendered(f"permit {number} any any") == f"permit {name} any any"


def test_protocol_ip_and_numbers() -> None:
    assert one("permit ip any any").protocol is None
    # IOS stores "ip" as protocol 0: `permit 0` is `permit ip`.
    assert one("permit 0 any any").protocol is None
    assert rendered("permit 0 any any") == "permit ip any any"
    for n in (3, 9, 41, 115, 254, 255):
        assert one(f"permit {n} any any").protocol == n
        assert rendered(f"permit {n} any any") == f"permit {n} any any"
    # keywords are case-insensitive
    assert one("PERMIT TCP ANY HOST 10.0.0.1 EQ WWW") == one("permit tcp any host 10.0.0.1 eq 80")


# ---------------------------------------------------------------------------------------
# Keywords: addresses


def test_addresses() -> None:
    ace = one("permit ip 10.0.68.0 0.0.0.255 10.1.1.0 0.0.0.255")
    assert ace.source == AddressMatch(ip("10.0.68.0"), 255)
    assert ace.destination == AddressMatch(ip("10.1.1.0"), 255)
    assert ace.render() == "permit ip 10.0.68.0 0.0.0.255 10.1.1.0 0.0.0.255"
    ace = one("deny ip host 192.168.0.2 any")
    assert ace.source == AddressMatch(ip("192.168.0.2"), 0)
    assert ace.destination == AddressMatch(0, ANY_WILDCARD)
    assert ace.render() == "deny ip host 192.168.0.2 any"
    # IOS shows `A 0.0.0.0` as host, `0.0.0.0 255.255.255.255` as any, and clears the
    # address bits under the wildcard.
    assert rendered("permit ip 1.2.3.4 0.0.0.0 0.0.0.0 255.255.255.255") == (
        "permit ip host 1.2.3.4 any"
    )
    ace = one("permit ip 10.1.1.5 0.0.0.255 any")
    assert ace.source.address == ip("10.1.1.0")
    assert ace.render() == "permit ip 10.1.1.0 0.0.0.255 any"
    # a discontiguous wildcard is accepted in an access list
    ace = one("permit ip 10.0.0.7 0.255.0.255 any")
    assert ace.source == AddressMatch(ip("10.0.0.0"), ip("0.255.0.255"))
    assert not ace.source.is_contiguous
    assert ace.render() == "permit ip 10.0.0.0 0.255.0.255 any"


# ---------------------------------------------------------------------------------------
# Keywords: ports

# IOS port keywords and their well-known numbers (IANA service names registry).
IOS_TCP_PORTS = {
    "bgp": 179, "chargen": 19, "cmd": 514, "daytime": 13, "discard": 9, "domain": 53,
    "drip": 3949, "echo": 7, "exec": 512, "finger": 79, "ftp": 21, "ftp-data": 20,
    "gopher": 70, "hostname": 101, "ident": 113, "irc": 194, "klogin": 543, "kshell": 544,
    "login": 513, "lpd": 515, "msrpc": 135, "nntp": 119, "onep-plain": 15001,
    "onep-tls": 15002, "pim-auto-rp": 496, "pop2": 109, "pop3": 110, "smtp": 25,
    "sunrpc": 111, "tacacs": 49, "talk": 517, "telnet": 23, "time": 37, "uucp": 540,
    "whois": 43, "www": 80,
}
IOS_UDP_PORTS = {
    "biff": 512, "bootpc": 68, "bootps": 67, "discard": 9, "dnsix": 195, "domain": 53,
    "echo": 7, "isakmp": 500, "mobile-ip": 434, "nameserver": 42, "netbios-dgm": 138,
    "netbios-ns": 137, "netbios-ss": 139, "non500-isakmp": 4500, "ntp": 123,
    "pim-auto-rp": 496, "rip": 520, "snmp": 161, "snmptrap": 162, "sunrpc": 111,
    "syslog": 514, "tacacs": 49, "talk": 517, "tftp": 69, "time": 37, "who": 513,
    "xdmcp": 177,
}


@pytest.mark.parametrize(
    "proto,name,number",
    [("tcp", k, v) for k, v in sorted(IOS_TCP_PORTS.items())]
    + [("udp", k, v) for k, v in sorted(IOS_UDP_PORTS.items())],
)
def test_port_names(proto: str, name: str, number: int) -> None:
    line = f"permit {proto} any eq {name} host 10.0.0.1 eq {name}"
    ace = one(line)
    assert ace.source_port == PortMatch("eq", (number,))
    assert ace.destination_port == PortMatch("eq", (number,))
    assert ace.render() == line
    # the number is shown by its name
    assert rendered(f"permit {proto} any any eq {number}") == f"permit {proto} any any eq {name}"


def test_port_names_are_per_protocol() -> None:
    # 514 is cmd for tcp, syslog for udp; www is tcp only, isakmp udp only
    assert rendered("permit tcp any any eq 514") == "permit tcp any any eq cmd"
    assert rendered("permit udp any any eq 514") == "permit udp any any eq syslog"
    with pytest.raises(ConfigError):
        one("permit udp any any eq www")
    with pytest.raises(ConfigError):
        one("permit tcp any any eq isakmp")


@pytest.mark.parametrize(
    "text,match",
    [
        ("eq 0", PortMatch("eq", (0,))),
        ("eq 65535", PortMatch("eq", (65535,))),
        ("eq 80 443 8080", PortMatch("eq", (80, 443, 8080))),
        ("eq 1 2 3 4 5 6 7 8 9 10", PortMatch("eq", tuple(range(1, 11)))),
        ("neq 0", PortMatch("neq", (0,))),
        ("neq 65535", PortMatch("neq", (65535,))),
        ("lt 1024", PortMatch("lt", (1024,))),
        ("lt 0", PortMatch("lt", (0,))),
        ("gt 1023", PortMatch("gt", (1023,))),
        ("gt 65535", PortMatch("gt", (65535,))),
        ("range 0 65535", PortMatch("range", (0, 65535))),
        ("range 5000 5000", PortMatch("range", (5000, 5000))),
        ("range 20 21", PortMatch("range", (20, 21))),
    ],
)
def test_port_operators(text: str, match: PortMatch) -> None:
    for proto in ("tcp", "udp"):
        ace = one(f"deny {proto} any {text} any {text}")
        assert ace.source_port == match and ace.destination_port == match
        assert one(ace.render()) == ace  # renders back (with names) to the same entry


def test_port_operator_render() -> None:
    assert rendered("permit tcp any range 20 21 any neq 23") == (
        "permit tcp any range ftp-data ftp any neq telnet"
    )
    assert rendered("permit udp any lt 1024 any gt 1023") == "permit udp any lt 1024 any gt 1023"


# ---------------------------------------------------------------------------------------
# Keywords: ICMP

# RFC 792 / RFC 1812 §5.2.7.1 type and code of IOS's ICMP message keywords.
IOS_ICMP = {
    "administratively-prohibited": (3, 13), "alternate-address": (6, None),
    "conversion-error": (31, None), "dod-host-prohibited": (3, 10),
    "dod-net-prohibited": (3, 9), "echo": (8, None), "echo-reply": (0, None),
    "general-parameter-problem": (12, 0), "host-isolated": (3, 8),
    "host-precedence-unreachable": (3, 14), "host-redirect": (5, 1),
    "host-tos-redirect": (5, 3), "host-tos-unreachable": (3, 12), "host-unknown": (3, 7),
    "host-unreachable": (3, 1), "information-reply": (16, None),
    "information-request": (15, None), "mask-reply": (18, None), "mask-request": (17, None),
    "mobile-redirect": (32, None), "net-redirect": (5, 0), "net-tos-redirect": (5, 2),
    "net-tos-unreachable": (3, 11), "net-unreachable": (3, 0), "network-unknown": (3, 6),
    "no-room-for-option": (12, 2), "option-missing": (12, 1), "packet-too-big": (3, 4),
    "parameter-problem": (12, None), "port-unreachable": (3, 3),
    "precedence-unreachable": (3, 15), "protocol-unreachable": (3, 2),
    "reassembly-timeout": (11, 1), "redirect": (5, None), "router-advertisement": (9, None),
    "router-solicitation": (10, None), "source-quench": (4, None),
    "source-route-failed": (3, 5), "time-exceeded": (11, None),
    "timestamp-reply": (14, None), "timestamp-request": (13, None),
    "traceroute": (30, None), "ttl-exceeded": (11, 0), "unreachable": (3, None),
}


@pytest.mark.parametrize("name,value", sorted(IOS_ICMP.items()))
def test_icmp_names(name: str, value: tuple[int, int | None]) -> None:
    ace = one(f"permit icmp any any {name}")
    assert (ace.icmp_type, ace.icmp_code) == value
    assert ace.render() == f"permit icmp any any {name}"
    numbers = str(value[0]) if value[1] is None else f"{value[0]} {value[1]}"
    assert one(f"permit icmp any any {numbers}") == ace
    assert rendered(f"permit icmp any any {numbers}") == f"permit icmp any any {name}"


def test_icmp_numbers_without_name() -> None:
    ace = one("permit icmp any any 3 200")
    assert (ace.icmp_type, ace.icmp_code) == (3, 200)
    assert ace.render() == "permit icmp any any 3 200"
    ace = one("permit icmp any any 255")
    assert (ace.icmp_type, ace.icmp_code) == (255, None)
    assert ace.render() == "permit icmp any any 255"
    assert one("permit icmp any any 0 0") == Ace(0, "permit", 1, icmp_type=0, icmp_code=0)
    assert rendered("permit icmp any any 0 0") == "permit icmp any any 0 0"
    assert rendered("permit icmp any any 0") == "permit icmp any any echo-reply"


# ---------------------------------------------------------------------------------------
# Keywords: options

# RFC 2474 / 2597 / 3246 code points of IOS's DSCP keywords.
IOS_DSCP = {
    "default": 0, "af11": 10, "af12": 12, "af13": 14, "af21": 18, "af22": 20, "af23": 22,
    "af31": 26, "af32": 28, "af33": 30, "af41": 34, "af42": 36, "af43": 38,
    "cs1": 8, "cs2": 16, "cs3": 24, "cs4": 32, "cs5": 40, "cs6": 48, "cs7": 56, "ef": 46,
}
IOS_PRECEDENCE = {
    "routine": 0, "priority": 1, "immediate": 2, "flash": 3, "flash-override": 4,
    "critical": 5, "internet": 6, "network": 7,
}
IOS_TOS = {
    "normal": 0, "min-monetary-cost": 1, "max-reliability": 2, "max-throughput": 4,
    "min-delay": 8,
}


@pytest.mark.parametrize("name,value", sorted(IOS_DSCP.items()))
def test_dscp_names(name: str, value: int) -> None:
    ace = one(f"permit ip any any dscp {name}")
    assert ace.dscp == value
    assert ace.render() == f"permit ip any any dscp {name}"
    assert one(f"permit ip any any dscp {value}") == ace


def test_dscp_numbers_and_cs0() -> None:
    assert one("permit ip any any dscp 63").dscp == 63
    assert rendered("permit ip any any dscp 63") == "permit ip any any dscp 63"
    assert one("permit ip any any dscp cs0").dscp == 0
    assert rendered("permit ip any any dscp cs0") == "permit ip any any dscp default"


@pytest.mark.parametrize("name,value", sorted(IOS_PRECEDENCE.items()))
def test_precedence_names(name: str, value: int) -> None:
    ace = one(f"permit ip any any precedence {name}")
    assert ace.precedence == value
    assert ace.render() == f"permit ip any any precedence {name}"
    assert one(f"permit ip any any precedence {value}") == ace


@pytest.mark.parametrize("name,value", sorted(IOS_TOS.items()))
def test_tos_names(name: str, value: int) -> None:
    ace = one(f"permit ip any any tos {name}")
    assert ace.tos == value
    assert ace.render() == f"permit ip any any tos {name}"
    assert one(f"permit ip any any tos {value}") == ace


def test_tos_numbers() -> None:
    assert one("permit ip any any tos 15").tos == 15
    assert rendered("permit ip any any tos 15") == "permit ip any any tos 15"
    ace = one("permit ip any any precedence 5 tos 3")
    assert (ace.precedence, ace.tos) == (5, 3)
    assert ace.render() == "permit ip any any precedence critical tos 3"


def test_flags_and_log() -> None:
    ace = one("permit tcp any any established")
    assert ace.established and ace.has_l4
    assert ace.render() == "permit tcp any any established"
    ace = one("deny ip any host 10.1.1.1 fragments")
    assert ace.fragments and not ace.has_l4
    assert ace.render() == "deny ip any host 10.1.1.1 fragments"
    # fragments on an entry with only the protocol (layer 3) is allowed
    assert one("permit tcp host 10.1.1.1 any fragments").fragments
    assert one("permit ip any any log").log == "log"
    assert one("permit ip any any log-input").log == "log-input"
    assert rendered("permit ip any any log-input") == "permit ip any any log-input"
    # options in any order; rendered in IOS's order
    ace = one("permit tcp any any eq 22 log dscp af41 established")
    assert (ace.established, ace.dscp, ace.log) == (True, 34, "log")
    assert ace.render() == "permit tcp any any eq 22 established dscp af41 log"
    ace = one("permit udp any any fragments log precedence flash tos max-throughput")
    assert ace.render() == "permit udp any any precedence flash tos max-throughput log fragments"


def test_remark() -> None:
    name, ace = parse_numbered_line("access-list 2600 remark  Protect  traffic: A -> B  ", 4)
    assert name == "2600"
    assert ace.action == "remark" and ace.remark == "Protect  traffic: A -> B"
    assert ace.lineno == 4
    assert ace.render() == "remark Protect  traffic: A -> B"
    assert not ace.matches(PacketFields(6, 1, 2))
    ok = "x" * 100
    assert parse_numbered_line(f"access-list 101 remark {ok}")[1].remark == ok


# ---------------------------------------------------------------------------------------
# Lists, sequence numbers, running-config and show renderings


SEED_EXAMPLE = """\
! from the seed guide
access-list 101 permit ip 10.1.1.0 0.0.0.255 172.16.1.0 0.0.0.255
access-list 102 permit ip 10.0.0.0 0.255.255.255 172.16.0.0 0.15.255.255

ip access-list extended vpn-tunnel
 remark protect site B
 permit ip 10.0.68.0 0.0.0.255 10.1.1.0 0.0.0.255
 deny   tcp any any eq telnet
 25 permit udp host 10.0.68.1 eq isakmp host 10.1.1.1 eq isakmp
 15 permit esp any any
 no 20
"""


def test_parse_access_lists() -> None:
    lists = parse_access_lists(SEED_EXAMPLE)
    assert list(lists) == ["101", "102", "vpn-tunnel"]
    assert lists["101"].kind == "numbered" and lists["vpn-tunnel"].kind == "named"
    assert [a.seq for a in lists["101"].entries] == [10]
    assert lists["101"].entries[0].lineno == 2
    vpn = lists["vpn-tunnel"]
    assert [(a.seq, a.action) for a in vpn.entries] == [
        (10, "remark"), (15, "permit"), (25, "permit"), (30, "deny")
    ]
    assert [a.lineno for a in vpn.entries] == [6, 10, 9, 8]
    assert render_config(vpn) == [
        "ip access-list extended vpn-tunnel",
        " remark protect site B",
        " 15 permit esp any any",
        " permit udp host 10.0.68.1 eq isakmp host 10.1.1.1 eq isakmp",  # 25 = 15 + 10
        " 30 deny tcp any any eq telnet",  # not 25 + 10: written
    ]
    assert AccessList.parse("\n".join(render_config(vpn))) == vpn
    assert render_config(lists["102"]) == [
        "access-list 102 permit ip 10.0.0.0 0.255.255.255 172.16.0.0 0.15.255.255"
    ]


def test_sequence_numbers() -> None:
    acl = AccessList("x")
    parse_named_entry("permit ip any host 1.1.1.1", acl)
    parse_named_entry(" 15 deny ip any host 1.1.1.2", acl)
    parse_named_entry("permit ip any host 1.1.1.3", acl)  # last + 10 = 25
    parse_named_entry("5 remark first", acl)
    parse_named_entry("7 permit gre any any", acl)
    assert [a.seq for a in acl.entries] == [5, 7, 10, 15, 25]
    parse_named_entry("no 7", acl)
    parse_named_entry("no 99", acl)  # absent: ignored, as IOS does
    parse_named_entry("no deny ip any host 1.1.1.2", acl)  # remove by content
    assert [a.seq for a in acl.entries] == [5, 10, 25]
    assert render_config(acl) == [
        "ip access-list extended x",
        " 5 remark first",
        " 10 permit ip any host 1.1.1.1",
        " 25 permit ip any host 1.1.1.3",
    ]
    added = acl.add(Ace(0, "permit", 6))
    assert added.seq == 35 and acl.entries[-1] is added
    with pytest.raises(ConfigError, match="Duplicate sequence number 10"):
        acl.add(Ace(10, "permit"))
    parse_named_entry("no remark first", acl)  # remarks are removed by content too
    parse_named_entry("no remark other", acl)  # absent: ignored
    assert [a.seq for a in acl.entries] == [10, 25, 35]
    acl.count(25, 4)
    assert acl.remove(25) and not acl.remove(25)
    assert acl.hits == {}
    assert [a.seq for a in acl.entries] == [10, 35]
    assert str(acl.entries[0]) == "permit ip any host 1.1.1.1"
    assert acl.first_match_index(PacketFields(6, 0, ip("1.1.1.1"))) == 0
    assert acl.first_match_index(PacketFields(6, 0, ip("1.1.1.2"))) == 1
    assert acl.first_match_index(PacketFields(17, 0, ip("1.1.1.2"))) == -1


def test_numbered_list_edited_by_name() -> None:
    text = "access-list 150 permit ip any any\nip access-list extended 150\n 5 deny ip host 1.2.3.4 any\n"
    acl = AccessList.parse(text)
    assert (acl.name, acl.kind, [a.seq for a in acl.entries]) == ("150", "numbered", [5, 10])
    # non-default sequence numbers need the named form, which IOS accepts for numbers
    assert render_config(acl) == [
        "ip access-list extended 150", " 5 deny ip host 1.2.3.4 any", " 10 permit ip any any",
    ]
    assert AccessList.parse("\n".join(render_config(acl))) == acl


def test_no_access_list_and_exit() -> None:
    text = """\
access-list 101 permit ip any any
no access-list 101
access-list 101 deny ip any any
ip access-list extended A
 permit ip any any
exit
ip access-list extended B
no ip access-list extended A
"""
    lists = parse_access_lists(text)
    assert sorted(lists) == ["101", "B"]
    assert [a.action for a in lists["101"].entries] == ["deny"]
    assert lists["B"].entries == []


def test_show_access_lists() -> None:
    acl = AccessList.parse(
        "access-list 101 remark r\n"
        "access-list 101 permit ip 10.0.68.0 0.0.0.255 10.1.1.0 0.0.0.255\n"
        "access-list 101 deny tcp any any eq 80\n"
        "access-list 101 permit icmp any any 3 4\n"
    )
    acl.count(20, 3)
    acl.count(20, 2)
    acl.count(40)
    assert acl.hits == {20: 5, 40: 1}
    text = str(acl)
    assert text == (
        "Extended IP access list 101\n"
        "    20 permit ip 10.0.68.0 0.0.0.255 10.1.1.0 0.0.0.255 (5 matches)\n"
        "    30 deny tcp any any eq www\n"
        "    40 permit icmp any any packet-too-big (1 match)"
    )
    back = AccessList.parse(text)
    assert back.entries == [a for a in acl.entries if a.action != "remark"]
    assert back.kind == "numbered" and back.hits == {20: 5, 40: 1}
    acl.clear_counters()
    assert "match" not in str(acl)
    named = AccessList.parse("ip access-list extended vpn\n permit ip any any\n")
    assert str(named) == "Extended IP access list vpn\n    10 permit ip any any"


def test_parse_one_list_only() -> None:
    with pytest.raises(ConfigError) as err:
        AccessList.parse("access-list 101 permit ip any any\n!\naccess-list 102 permit ip any any")
    assert (err.value.lineno, err.value.column) == (3, 0)
    with pytest.raises(ConfigError, match="no access list"):
        AccessList.parse("!\n\n")


# ---------------------------------------------------------------------------------------
# Errors: line, column, message


def col(line: str, token: str, nth: int = 1) -> int:
    """Column of the nth occurrence of `token` as a whole word in `line` (hand oracle)."""
    starts = [m.start() for m in re.finditer(rf"(?<!\S){re.escape(token)}(?!\S)", line)]
    return starts[nth - 1]


ERRORS: list[tuple[str, str, int, str]] = [
    # (line, bad token, its occurrence, expected words in the message)
    ("access-list 101 permit ipp any any", "ipp", 1, "protocol"),
    ("access-list 101 permit 256 any any", "256", 1, "protocol"),
    ("access-list 101 permit -1 any any", "-1", 1, "protocol"),
    ("access-list 100 permitt ip any any", "permitt", 1, "permit, deny or remark"),
    ("access-list 101 10 permit ip any any", "10", 1, "permit, deny or remark"),
    ("access-list 99 permit ip any any", "99", 1, "standard access lists"),
    ("access-list 1300 permit ip any any", "1300", 1, "standard access lists"),
    ("access-list 200 permit ip any any", "200", 1, "extended access-list number"),
    ("access-list 2700 permit ip any any", "2700", 1, "extended access-list number"),
    ("access-list abc permit ip any any", "abc", 1, "extended access-list number"),
    ("access-list 101 dynamic foo permit ip any any", "dynamic", 1, "not supported"),
    ("access-list 101 permit ip 10.1.1.1 any", "any", 1, "source wildcard"),
    ("access-list 101 permit ip any 10.1.1.1 log", "log", 1, "destination wildcard"),
    ("access-list 101 permit ip 10.1.1.256 0.0.0.255 any", "10.1.1.256", 1, "source address"),
    ("access-list 101 permit ip 10.1.1.0 0.0.0.x any", "0.0.0.x", 1, "source wildcard"),
    ("access-list 101 permit ip host 10.1.1 any", "10.1.1", 1, "source host address"),
    ("access-list 101 permit ip any hots 1.1.1.1", "hots", 1, "destination address"),
    ("access-list 101 permit ip any eq 80 any", "eq", 1, "destination address"),
    ("access-list 101 permit tcp any any eq 65536", "65536", 1, "TCP port"),
    ("access-list 101 permit tcp any any eq isakmp", "isakmp", 1, "TCP port"),
    ("access-list 101 permit udp any eq www any", "www", 1, "UDP port"),
    ("access-list 101 permit tcp any any range 10 5", "5", 1, "end of the range"),
    ("access-list 101 permit tcp any any range 10 x", "x", 1, "end of the range"),
    ("access-list 101 permit tcp any any eq 1 2 3 4 5 6 7 8 9 10 11", "11", 1, "at most 10"),
    ("access-list 101 permit tcp any any neq 1 2", "2", 1, "option"),
    ("access-list 101 permit tcp any any lt 10 20", "20", 1, "option"),
    ("access-list 101 permit udp any any established", "established", 1, "tcp only"),
    ("access-list 101 permit ip any any established", "established", 1, "tcp only"),
    ("access-list 101 permit tcp any any eq 80 fragments", "fragments", 1, "layer-4"),
    ("access-list 101 permit tcp any any fragments established", "fragments", 1, "layer-4"),
    ("access-list 101 permit icmp any any echo fragments", "fragments", 1, "layer-4"),
    ("access-list 101 permit icmp any any 256", "256", 1, "ICMP message type"),
    ("access-list 101 permit icmp any any 3 256", "256", 1, "ICMP message code"),
    ("access-list 101 permit icmp any any echoo", "echoo", 1, "ICMP message type"),
    ("access-list 101 permit ip any any echo", "echo", 1, "option"),
    ("access-list 101 permit ip any any dscp 64", "64", 1, "DSCP"),
    ("access-list 101 permit ip any any dscp af44", "af44", 1, "DSCP"),
    ("access-list 101 permit ip any any precedence 8", "8", 1, "precedence"),
    ("access-list 101 permit ip any any tos 16", "16", 1, "TOS"),
    ("access-list 101 permit ip any any dscp ef precedence 5", "precedence", 1, "dscp"),
    ("access-list 101 permit ip any any tos 4 dscp ef", "dscp", 1, "dscp"),
    ("access-list 101 permit ip any any log log", "log", 2, "once"),
    ("access-list 101 permit ip any any log-input log", "log", 1, "once"),
    ("access-list 101 permit ip any any fragments fragments", "fragments", 2, "option"),
    ("access-list 101 permit ip any any log extra", "extra", 1, "option"),
    ("access-list 101 permit ip any any time-range work", "time-range", 1, "not supported"),
    ("access-list 101 permit ip any any ttl eq 5", "ttl", 1, "not supported"),
    ("access-list 101 permit tcp any any match-any +syn", "match-any", 1, "not supported"),
    ("access-list 101 permit ip object-group A any", "object-group", 1, "not supported"),
    (f"access-list 101 remark {'y' * 100}z", "z", 1, "at most 100"),
]


@pytest.mark.parametrize("line,token,nth,words", ERRORS)
def test_numbered_errors(line: str, token: str, nth: int, words: str) -> None:
    text = f"! config\n\n{line}\n"
    with pytest.raises(ConfigError) as err:
        parse_access_lists(text)
    e = err.value
    expected_col = col(line, token, nth) if token != "z" else line.index("z")
    assert (e.lineno, e.line, e.column) == (3, line, expected_col)
    assert words in e.message
    # IOS's caret sits under the bad token
    out = str(e).splitlines()
    assert out[0] == f"line 3: {line}"
    assert out[1].index("^") == len("line 3: ") + expected_col
    assert out[2].startswith("% Invalid input detected at '^' marker.")
    # the caller-facing entry point reports the same
    with pytest.raises(ConfigError) as err2:
        parse_numbered_line(line, 7)
    assert (err2.value.lineno, err2.value.column) == (7, expected_col)


INCOMPLETE = [
    ("access-list", "access-list number"),
    ("access-list 101", "permit, deny or remark"),
    ("access-list 101 permit", "protocol"),
    ("access-list 101 permit ip", "source address"),
    ("access-list 101 permit ip any", "destination address"),
    ("access-list 101 permit ip host", "source host address"),
    ("access-list 101 permit ip 10.0.0.0", "source wildcard"),
    ("access-list 101 permit tcp any eq", "TCP port"),
    ("access-list 101 permit tcp any any range 1", "end of the range"),
    ("access-list 101 permit ip any any dscp", "DSCP"),
    ("access-list 101 permit ip any any precedence", "precedence"),
    ("access-list 101 permit ip any any tos", "TOS"),
    ("access-list 101 remark", "remark text"),
    ("access-list 101 remark   ", "remark text"),
]


@pytest.mark.parametrize("line,words", INCOMPLETE)
def test_incomplete_commands(line: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_access_lists(f"access-list 110 permit ip any any\n{line}")
    e = err.value
    # IOS prints "% Incomplete command." without a caret
    assert (e.lineno, e.line, e.column) == (2, line, None)
    assert e.message.startswith("Incomplete command.") and words in e.message
    assert str(e).splitlines() == [f"line 2: {line}", f"% {e.message}"]


NAMED_ERRORS: list[tuple[str, str | None, int, str]] = [
    # (sub-mode line, bad token, occurrence, words); the block starts with a header line
    (" permit ipp any any", "ipp", 1, "protocol"),
    (" 10 permitt ip any any", "permitt", 1, "permit, deny or remark"),
    (" 20 allow ip any any", "allow", 1, "permit, deny or remark"),
    (" allow ip any any", "allow", 1, "sequence number, permit, deny, remark or no"),
    (" 0 permit ip any any", "0", 1, "sequence number"),
    (" 2147483648 permit ip any any", "2147483648", 1, "sequence number"),
    (" 10 permit ip any any", "10", 1, "Duplicate sequence number 10"),
    (" no 10 20", "20", 1, "end of the line"),
    (" no allow ip any any", "allow", 1, "sequence number, permit, deny or remark"),
    (" no 0", "0", 1, "sequence number"),
    (" 20 remark", None, 0, "remark text"),
    ("   deny tcp any any eq 80 443 dscp 70", "70", 1, "DSCP"),
]


@pytest.mark.parametrize("line,token,nth,words", NAMED_ERRORS)
def test_named_errors(line: str, token: str | None, nth: int, words: str) -> None:
    text = f"ip access-list extended X\n 10 permit ip any any\n{line}\n"
    expected_col = None if token is None else col(line, token, nth)  # None: incomplete
    with pytest.raises(ConfigError) as err:
        parse_access_lists(text)
    e = err.value
    assert (e.lineno, e.line, e.column) == (3, line, expected_col)
    assert words in e.message
    acl = AccessList.parse("ip access-list extended X\n 10 permit ip any any")
    with pytest.raises(ConfigError) as err2:
        parse_named_entry(line, acl, 42)
    assert (err2.value.lineno, err2.value.column) == (42, expected_col)
    assert [a.seq for a in acl.entries] == [10]  # unchanged


def test_maximum_sequence_number() -> None:
    acl = AccessList("X")
    parse_named_entry("2147483647 permit ip any any", acl)
    line = " deny ip any any"
    with pytest.raises(ConfigError) as err:
        parse_named_entry(line, acl, 5)
    assert (err.value.lineno, err.value.column) == (5, col(line, "deny"))
    assert "maximum sequence number" in err.value.message
    with pytest.raises(ConfigError, match="maximum sequence number"):
        acl.add(Ace(0, "permit"))


HEADER_ERRORS: list[tuple[str, str, str]] = [
    ("ip access-list standard X", "standard", "standard access lists"),
    ("ip access-list extendd X", "extendd", "extended"),
    ("ip acces-list extended X", "acces-list", "access-list"),
    ("ip access-list extended 99", "99", "100-199 or 2000-2699"),
    ("ip access-list extended X Y", "Y", "end of the line"),
    ("interface Gi0/0", "interface", "access-list or ip access-list extended"),
    ("permit ip any any", "permit", "access-list or ip access-list extended"),
    ("no access-list 10", "10", "standard access lists"),
]


@pytest.mark.parametrize("line,token,words", HEADER_ERRORS)
def test_header_errors(line: str, token: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_access_lists(f"access-list 101 permit ip any any\n!\n  {line}")
    e = err.value
    assert (e.lineno, e.line, e.column) == (3, f"  {line}", col(f"  {line}", token))
    assert words in e.message


def test_named_list_indentation_and_show_counter_errors() -> None:
    # entries of a named list may or may not be indented; a bad line inside is reported
    acl = AccessList.parse("ip access-list extended X\npermit ip any any\n\t 20 deny ip any any")
    assert [a.seq for a in acl.entries] == [10, 20]
    text = "Extended IP access list 101\n    10 permit ip any any (3 matches)\n    20 permti ip any any"
    with pytest.raises(ConfigError) as err:
        AccessList.parse(text)
    assert (err.value.lineno, err.value.column) == (3, 7)


# ---------------------------------------------------------------------------------------
# Crypto-map restriction: discontiguous wildcards


def test_check_crypto_acl_accepts_contiguous() -> None:
    lists = parse_access_lists(SEED_EXAMPLE)
    for acl in lists.values():
        check_crypto_acl(acl)
    check_crypto_acl(AccessList.parse("access-list 101 permit ip 0.0.0.0 255.255.255.255 any"))


def test_check_crypto_acl_rejects_discontiguous() -> None:
    text = (
        "ip access-list extended vpn\n"
        " permit ip 10.0.0.0 0.0.0.255 any\n"
        " permit ip 10.0.0.0 0.0.0.255 10.0.0.0 0.255.0.255\n"
    )
    acl = AccessList.parse(text)  # accepted as an access list
    with pytest.raises(ConfigError) as err:
        check_crypto_acl(acl)
    e = err.value
    line = " permit ip 10.0.0.0 0.0.0.255 10.0.0.0 0.255.0.255"
    assert (e.lineno, e.line, e.column) == (3, line, col(line, "0.255.0.255"))
    assert "crypto maps do not support discontiguous wildcard masks" in e.message
    # source side, numbered list
    acl = AccessList.parse("access-list 120 permit ip 10.0.0.0 0.255.0.255 any")
    with pytest.raises(ConfigError) as err:
        check_crypto_acl(acl)
    assert (err.value.lineno, err.value.column) == (1, col(acl.entries[0].line or "", "0.255.0.255"))
    assert "source wildcard 0.255.0.255" in err.value.message


def test_check_crypto_acl_without_source_line() -> None:
    acl = AccessList("x", "named", [Ace(10, "permit", source=AddressMatch(0, ip("0.0.255.0")))])
    with pytest.raises(ConfigError) as err:
        check_crypto_acl(acl)
    e = err.value
    assert e.lineno is None and e.line == " 10 permit ip 0.0.0.0 0.0.255.0 any"
    assert e.column == col(e.line, "0.0.255.0")


# ---------------------------------------------------------------------------------------
# Round trip (hypothesis)

u32 = st.integers(0, 0xFFFFFFFF)
ports = st.integers(0, 65535)


@st.composite
def addresses(draw: st.DrawFn) -> AddressMatch:
    kind = draw(st.sampled_from(["any", "host", "prefix", "wild"]))
    if kind == "any":
        return AddressMatch(0, ANY_WILDCARD)
    if kind == "host":
        return AddressMatch(draw(u32), 0)
    if kind == "prefix":
        plen = draw(st.integers(0, 32))
        w = (1 << (32 - plen)) - 1
    else:
        w = draw(u32)
    return AddressMatch(draw(u32) & ~w & 0xFFFFFFFF, w)


@st.composite
def port_matches(draw: st.DrawFn) -> PortMatch:
    op = draw(st.sampled_from(["eq", "neq", "lt", "gt", "range"]))
    if op == "eq":
        return PortMatch("eq", tuple(draw(st.lists(ports, min_size=1, max_size=10))))
    if op == "range":
        a, b = sorted((draw(ports), draw(ports)))
        return PortMatch("range", (a, b))
    return PortMatch(op, (draw(ports),))  # type: ignore[arg-type]


# remark text: printable words separated by one or two spaces, at most 100 characters
remark_text = st.lists(
    st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=12),
    min_size=1, max_size=6,
).flatmap(
    lambda words: st.sampled_from([" ", "  "]).map(lambda sep: sep.join(words))
).filter(lambda s: len(s) <= 100)


@st.composite
def aces(draw: st.DrawFn) -> Ace:
    if draw(st.integers(0, 9)) == 0:
        return Ace(0, "remark", remark=draw(remark_text))
    action: Action = "permit" if draw(st.booleans()) else "deny"
    protocol = draw(st.sampled_from([None, 6, 17, 1, 50, 47]) | st.integers(1, 255))
    sport = dport = None
    icmp_type = icmp_code = None
    established = False
    if protocol in (6, 17):
        sport = draw(st.none() | port_matches())
        dport = draw(st.none() | port_matches())
        established = protocol == 6 and draw(st.booleans())
    if protocol == 1 and draw(st.booleans()):
        icmp_type = draw(st.integers(0, 255))
        icmp_code = draw(st.none() | st.integers(0, 255))
    has_l4 = bool(sport or dport or established or icmp_type is not None)
    fragments = not has_l4 and draw(st.booleans())
    dscp = precedence = tos = None
    if draw(st.booleans()):
        dscp = draw(st.integers(0, 63))
    else:
        precedence = draw(st.none() | st.integers(0, 7))
        tos = draw(st.none() | st.integers(0, 15))
    log = draw(st.sampled_from([None, "log", "log-input"]))
    return Ace(
        0, action, protocol, draw(addresses()), sport, draw(addresses()), dport,
        icmp_type, icmp_code, established, fragments, dscp, precedence, tos, log,
    )


@settings(max_examples=300, deadline=None)
@given(aces())
def test_round_trip_one_entry(ace: Ace) -> None:
    line = f"access-list 2001 {ace.render()}"
    name, back = parse_numbered_line(line)
    assert name == "2001" and back == ace
    acl = AccessList("n")
    parse_named_entry(f" 30 {ace.render()}", acl)
    assert acl.entries == [Ace(**{**ace.__dict__, "seq": 30})]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(aces(), max_size=8),
    st.lists(st.integers(1, 50), min_size=8, max_size=8),
    st.sampled_from(["101", "2699", "vpn-A", "Crypto_ACL.1"]),
    st.booleans(),
)
def test_round_trip_lists(entries: list[Ace], gaps: list[int], name: str, default: bool) -> None:
    kind = "numbered" if name.isdigit() else "named"
    acl = AccessList(name, kind)  # type: ignore[arg-type]
    seq = 0
    for ace, gap in zip(entries, gaps, strict=False):
        seq += 10 if default else gap
        acl.add(Ace(**{**ace.__dict__, "seq": seq}))
    for a, b in zip(acl.entries, acl.entries[1:], strict=False):
        assert a.seq < b.seq
    text = "\n".join(render_config(acl))
    assert AccessList.parse(text) == acl
    assert parse_access_lists(f"!\n{text}\n!\n") == {name: acl}
    # show access-lists form: the same entries without remarks, counters read back
    for a in acl.entries:
        acl.count(a.seq, a.seq % 3)
    shown = AccessList.parse(str(acl))
    assert shown.name == name and shown.kind == kind
    assert shown.entries == [a for a in acl.entries if a.action != "remark"]
    assert shown.hits == {a.seq: a.seq % 3 for a in shown.entries if a.seq % 3}


def test_numbered_running_config_form() -> None:
    acl = AccessList.parse(
        "access-list 101 remark r\naccess-list 101 permit tcp any any eq 443\n"
    )
    assert render_config(acl) == [
        "access-list 101 remark r", "access-list 101 permit tcp any any eq 443",
    ]
    assert acl.render_config() == render_config(acl)
    assert render_config(AccessList("101", "numbered")) == ["ip access-list extended 101"]


# ---------------------------------------------------------------------------------------
# Reference matcher


def pkt(
    proto: int = 6, src: str = "10.2.2.2", dst: str = "10.1.1.1", sport: int = 1025,
    dport: int = 80, **kw: int,
) -> PacketFields:
    return PacketFields(proto, ip(src), ip(dst), sport, dport, **kw)


@settings(max_examples=300, deadline=None)
@given(u32, st.integers(0, 32), u32)
def test_prefix_wildcard_vs_ipaddress(base: int, plen: int, addr: int) -> None:
    net = ipaddress.IPv4Network((base, plen), strict=False)
    wildcard = str(net.hostmask)
    ace = one(f"permit ip {net.network_address} {wildcard} any")
    expected = ipaddress.IPv4Address(addr) in net
    assert ace.matches(PacketFields(0x11, addr, 0)) is expected
    # and the addresses at the network's edges
    for edge in (int(net.network_address), int(net.broadcast_address)):
        assert ace.matches(PacketFields(0x11, edge, 0))


@settings(max_examples=300, deadline=None)
@given(u32, u32, u32)
def test_discontiguous_wildcard_bitwise(base: int, wildcard: int, addr: int) -> None:
    ace = one(f"permit ip any {ipaddress.IPv4Address(base)} {ipaddress.IPv4Address(wildcard)}")
    # bit by bit: every bit not set in the wildcard must be equal
    b, w, a = (format(x, "032b") for x in (base, wildcard, addr))
    expected = all(w[i] == "1" or b[i] == a[i] for i in range(32))
    assert ace.matches(PacketFields(50, 0, addr)) is expected


PORT_CASES = [
    ("eq 0", lambda p: p == 0),
    ("eq 65535", lambda p: p == 65535),
    ("eq www 443", lambda p: p in (80, 443)),
    ("neq 0", lambda p: p != 0),
    ("neq 65535", lambda p: p != 65535),
    ("neq telnet", lambda p: p != 23),
    ("lt 0", lambda p: False),
    ("lt 1", lambda p: p == 0),
    ("lt 1024", lambda p: p <= 1023),
    ("gt 65535", lambda p: False),
    ("gt 65534", lambda p: p == 65535),
    ("gt 0", lambda p: p >= 1),
    ("range 0 0", lambda p: p == 0),
    ("range 0 65535", lambda p: True),
    ("range 1000 2000", lambda p: 1000 <= p <= 2000),
]


@pytest.mark.parametrize("op,expected", PORT_CASES)
def test_port_operators_brute_force(op: str, expected: object) -> None:
    pred = expected if callable(expected) else None
    assert pred is not None
    dst = one(f"permit tcp any any {op}")
    src = one(f"permit tcp any {op} any")
    assert dst.destination_port is not None
    # the operator on every port; the whole entry on the edges and a stride of ports
    for port in range(65536):
        assert dst.destination_port.matches(port) is bool(pred(port)), port
    edges = {0, 1, 2, 22, 23, 24, 79, 80, 81, 442, 443, 444, 999, 1000, 1022, 1023, 1024,
             2000, 2001, 65533, 65534, 65535}
    for port in sorted(edges | set(range(0, 65536, 97))):
        want = bool(pred(port))
        assert dst.matches(pkt(dport=port)) is want, port
        assert src.matches(pkt(sport=port, dport=7)) is want, port
    # ports never match another protocol
    assert not dst.matches(pkt(proto=17, dport=0))


def test_protocol_matching() -> None:
    assert one("permit ip any any").matches(pkt(proto=0))
    assert one("permit ip any any").matches(pkt(proto=255))
    assert one("permit esp any any").matches(pkt(proto=50))
    assert not one("permit esp any any").matches(pkt(proto=51))
    assert one("permit 255 any any").matches(pkt(proto=255))
    assert not one("permit udp any any").matches(pkt(proto=6))


def test_icmp_matching() -> None:
    echo = one("permit icmp any any echo")
    assert echo.matches(pkt(1, icmp_type=8, icmp_code=0))
    assert echo.matches(pkt(1, icmp_type=8, icmp_code=5))  # any code
    assert not echo.matches(pkt(1, icmp_type=0, icmp_code=0))
    hu = one("permit icmp any any host-unreachable")
    assert hu.matches(pkt(1, icmp_type=3, icmp_code=1))
    assert not hu.matches(pkt(1, icmp_type=3, icmp_code=3))
    unr = one("permit icmp any any unreachable")
    assert all(unr.matches(pkt(1, icmp_type=3, icmp_code=c)) for c in range(256))
    n = one("permit icmp any any 255 255")
    assert n.matches(pkt(1, icmp_type=255, icmp_code=255))
    assert not n.matches(pkt(1, icmp_type=255, icmp_code=254))
    assert not echo.matches(pkt(6, icmp_type=8, icmp_code=0))  # not ICMP
    assert one("permit icmp any any").matches(pkt(1, icmp_type=13, icmp_code=0))


def test_established() -> None:
    est = one("permit tcp any any established")
    fin, syn, rst, psh, ack, urg = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
    for flags in range(64):
        want = bool(flags & ack) or bool(flags & rst)
        assert est.matches(pkt(tcp_flags=flags)) is want, flags
    assert not est.matches(pkt(tcp_flags=syn))
    assert est.matches(pkt(tcp_flags=syn | ack))
    assert est.matches(pkt(tcp_flags=rst))
    assert not est.matches(pkt(tcp_flags=fin | psh | urg))


def test_tos_byte_matching() -> None:
    # the TOS byte: precedence = top 3 bits, DSCP = top 6 bits, RFC 1349 TOS = bits 4..1
    ef = one("permit ip any any dscp ef")
    assert [t for t in range(256) if ef.matches(pkt(tos=t))] == [0xB8, 0xB9, 0xBA, 0xBB]
    af11 = one("permit ip any any dscp af11")
    assert [t for t in range(256) if af11.matches(pkt(tos=t))] == list(range(40, 44))
    crit = one("permit ip any any precedence critical")
    assert [t for t in range(256) if crit.matches(pkt(tos=t))] == list(range(0xA0, 0xC0))
    md = one("permit ip any any tos min-delay")
    assert [t for t in range(256) if md.matches(pkt(tos=t))] == [
        t for t in range(256) if t & 0b00011110 == 0b00010000
    ]
    both = one("permit ip any any precedence 7 tos 15")
    assert [t for t in range(256) if both.matches(pkt(tos=t))] == [0xFE, 0xFF]


# Cisco, "Access Control Lists and IP Fragments" / Catalyst configuration guide example.
CISCO_FRAGMENT_EXAMPLE = """\
access-list 102 permit tcp any host 10.1.1.1 eq smtp
access-list 102 deny tcp any host 10.1.1.2 eq telnet
access-list 102 permit tcp any host 10.1.1.2
access-list 102 deny tcp any any
"""


@pytest.mark.parametrize(
    "dst,dport,fragment,seq,permitted",
    [
        # packet A to 10.1.1.1 smtp: every fragment permitted by the first entry
        ("10.1.1.1", 25, 0, 10, True),
        ("10.1.1.1", 25, 1, 10, True),
        ("10.1.1.1", 0, 2, 10, True),
        # packet B to 10.1.1.2 telnet: the first fragment is denied by entry 20; the
        # others skip the deny (it has layer-4 info) and are permitted by entry 30
        ("10.1.1.2", 23, 0, 20, False),
        ("10.1.1.2", 23, 1, 20, False),
        ("10.1.1.2", 0, 2, 30, True),
        # packet C to 10.1.1.3 ftp: all fragments denied by the layer-3 entry 40
        ("10.1.1.3", 21, 0, 40, False),
        ("10.1.1.3", 21, 1, 40, False),
        ("10.1.1.3", 0, 2, 40, False),
    ],
)
def test_cisco_fragment_example(
    dst: str, dport: int, fragment: int, seq: int, permitted: bool
) -> None:
    acl = AccessList.parse(CISCO_FRAGMENT_EXAMPLE)
    p = pkt(6, "10.2.2.2", dst, 65000, dport, fragment=fragment)
    hit = acl.first_match(p)
    assert hit is not None and hit.seq == seq
    assert acl.matches(p) is permitted


def test_fragments_keyword() -> None:
    acl = AccessList.parse(
        "ip access-list extended F\n"
        " deny ip any host 10.1.1.1 fragments\n"
        " permit ip any host 10.1.1.1\n"
    )
    # non-initial fragments hit the fragments entry; initial fragments and whole
    # packets do not, and go on to the next entry
    assert [acl.first_match(pkt(fragment=f)).seq for f in (0, 1, 2)] == [20, 20, 10]  # type: ignore[union-attr]
    assert [acl.matches(pkt(fragment=f)) for f in (0, 1, 2)] == [True, True, False]
    # an entry with only layer-3 info applies to every fragment
    l3 = one("deny udp host 10.2.2.2 any")
    assert all(l3.matches(pkt(17, fragment=f)) for f in (0, 1, 2))
    # tos / dscp are layer 3: checked for non-initial fragments too
    d = one("deny ip any any dscp ef fragments")
    assert d.matches(pkt(fragment=2, tos=0xB8)) and not d.matches(pkt(fragment=2, tos=0))


def test_non_initial_fragment_layer4_entries() -> None:
    # permit with layer-4 info: matches a non-initial fragment on layer-3 info only
    for rule in ("permit tcp any any eq 443", "permit tcp any any established",
                 "permit icmp any any echo", "permit udp any lt 5 any"):
        ace = one(rule)
        proto = ace.protocol or 0
        assert ace.matches(pkt(proto, sport=9999, dport=9999, fragment=2))
        assert not ace.matches(pkt(proto, sport=9999, dport=9999, fragment=1, icmp_type=0))
        # still needs the protocol and the addresses
        assert not ace.matches(pkt(47, fragment=2))
    p = one("permit tcp host 10.9.9.9 any eq 443")
    assert not p.matches(pkt(fragment=2))
    # deny with layer-4 info never matches a non-initial fragment
    d = one("deny tcp any any eq 443")
    assert d.matches(pkt(dport=443, fragment=1))
    assert not d.matches(pkt(dport=443, fragment=2))


def test_implicit_deny_and_remarks() -> None:
    acl = AccessList.parse("access-list 101 remark only remarks")
    assert acl.first_match(pkt()) is None and not acl.matches(pkt())
    assert not AccessList("empty").matches(pkt())


def test_first_permit_seed_example() -> None:
    # seed guide: deny in list 110 skips to the next crypto map entry (list 120)
    lists = parse_access_lists(
        "access-list 110 deny ip 10.0.110.0 0.0.0.255 10.0.110.0 0.0.0.255\n"
        "access-list 110 permit ip 10.0.110.0 0.0.0.255 any\n"
        "access-list 120 permit ip 10.0.110.0 0.0.0.255 10.0.110.0 0.0.0.255\n"
    )
    acls = [lists["110"], lists["120"]]
    inside = PacketFields(6, ip("10.0.110.1"), ip("10.0.110.2"), 1, 2)
    outside = PacketFields(6, ip("10.0.110.1"), ip("192.0.2.1"), 1, 2)
    stranger = PacketFields(6, ip("192.0.2.1"), ip("198.51.100.1"), 1, 2)
    assert first_permit(acls, inside) == (1, 0)
    assert first_permit(acls, outside) == (0, 1)
    assert first_permit(acls, stranger) == (-1, -1)
    # inbound: the reply from 192.0.2.1 is evaluated mirrored
    reply = PacketFields(6, ip("192.0.2.1"), ip("10.0.110.1"), 2, 1)
    assert first_permit(acls, reply) == (-1, -1)
    assert first_permit(acls, reply, mirror=True) == (0, 1)
    assert first_permit([], inside) == (-1, -1)


def test_first_permit_deny_skip_and_indexes() -> None:
    a = AccessList.parse(
        "ip access-list extended A\n remark r\n deny tcp any any eq 80\n permit tcp any any\n"
    )
    b = AccessList.parse("ip access-list extended B\n permit tcp any any eq www\n")
    empty = AccessList("E")
    assert first_permit([empty, a, b], pkt(dport=80)) == (2, 0)
    assert first_permit([empty, a, b], pkt(dport=81)) == (1, 2)  # remarks count
    assert first_permit([b, a], pkt(dport=80)) == (0, 0)
    assert first_permit([a, b], pkt(proto=17)) == (-1, -1)
    # mirror swaps ports too
    only_src = AccessList.parse("access-list 150 permit tcp any eq 80 any")
    assert first_permit([only_src], pkt(sport=1025, dport=80)) == (-1, -1)
    assert first_permit([only_src], pkt(sport=1025, dport=80), mirror=True) == (0, 0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 3)), max_size=6), st.integers(0, 3))
def test_first_permit_brute_force(spec: list[tuple[bool, int]], port_class: int) -> None:
    # each list: one entry on "dport == 1000 + k", permit or deny; the oracle scans by hand
    acls = [
        AccessList(f"L{i}", "named", [
            Ace(10, "permit", 6, destination_port=PortMatch("eq", (1000 + k,))) if permit
            else Ace(10, "deny", 6, destination_port=PortMatch("eq", (1000 + k,)))
        ])
        for i, (permit, k) in enumerate(spec)
    ]
    want = (-1, -1)
    for i, (permit, k) in enumerate(spec):
        if k == port_class and permit:
            want = (i, 0)
            break
    assert first_permit(acls, pkt(dport=1000 + port_class)) == want


# ---------------------------------------------------------------------------------------
# Differential: Ace.matches against a decision table written from the Cisco documents


def _addr_ok(spec: AddressMatch, addr: int) -> bool:
    # bit by bit, most significant first: a 0 in the wildcard is a bit that must match
    return all(
        (spec.wildcard >> (31 - i)) & 1 or ((spec.address >> (31 - i)) & 1) == ((addr >> (31 - i)) & 1)
        for i in range(32)
    )


def _port_ok(spec: PortMatch | None, port: int) -> bool:
    if spec is None:
        return True
    op, p = spec.op, spec.ports
    return {
        "eq": port in p,
        "neq": port != p[0],
        "lt": port < p[0],
        "gt": port > p[0],
        "range": p[0] <= port <= p[-1],
    }[op]


def oracle(ace: Ace, f: PacketFields) -> bool:
    layer3 = (
        (ace.protocol is None or ace.protocol == f.protocol)
        and _addr_ok(ace.source, f.source)
        and _addr_ok(ace.destination, f.destination)
        and (ace.dscp is None or ace.dscp == f.tos // 4)
        and (ace.precedence is None or ace.precedence == f.tos // 32)
        and (ace.tos is None or ace.tos == (f.tos % 32) // 2)
    )
    layer4_info = (
        ace.source_port is not None or ace.destination_port is not None
        or ace.icmp_type is not None or ace.established
    )
    layer4 = (
        _port_ok(ace.source_port, f.source_port)
        and _port_ok(ace.destination_port, f.destination_port)
        and (ace.icmp_type is None or ace.icmp_type == f.icmp_type)
        and (ace.icmp_code is None or ace.icmp_code == f.icmp_code)
        and (not ace.established or f.tcp_flags & 0x14 != 0)
    )
    non_initial = f.fragment == 2
    # Cisco's table, row by row
    if ace.fragments:  # "...the fragments keyword": non-initial fragments only, L3 info
        return non_initial and layer3
    if not layer4_info:  # "only Layer 3 information": every packet and fragment
        return layer3
    if non_initial:  # L4 info, fragment without L4 header: permit on L3, deny never
        return ace.action == "permit" and layer3
    return layer3 and layer4


@st.composite
def packets_near(draw: st.DrawFn, ace: Ace) -> PacketFields:
    """A packet that often (not always) agrees with the entry, field by field."""
    def near_addr(m: AddressMatch) -> int:
        if draw(st.booleans()):
            return (m.address & ~m.wildcard) | (draw(u32) & m.wildcard)
        return draw(u32)

    def near_port(m: PortMatch | None) -> int:
        if m is not None and draw(st.booleans()):
            p = draw(st.sampled_from(m.ports))
            return max(0, min(65535, p + draw(st.integers(-1, 1))))
        return draw(st.sampled_from([0, 65535]) | ports)

    proto = ace.protocol if ace.protocol is not None and draw(st.booleans()) else draw(
        st.sampled_from([1, 6, 17, 50]) | st.integers(0, 255))
    icmp_t = ace.icmp_type if ace.icmp_type is not None and draw(st.booleans()) else draw(
        st.integers(0, 255))
    icmp_c = ace.icmp_code if ace.icmp_code is not None and draw(st.booleans()) else draw(
        st.integers(0, 255))
    tos = draw(st.integers(0, 255))
    if draw(st.booleans()):  # a TOS byte that satisfies the entry's dscp / precedence / tos
        if ace.dscp is not None:
            tos = ace.dscp * 4 + tos % 4
        if ace.precedence is not None:
            tos = ace.precedence * 32 + tos % 32
        if ace.tos is not None:
            tos = (tos // 32) * 32 + ace.tos * 2 + tos % 2
    return PacketFields(
        proto, near_addr(ace.source), near_addr(ace.destination),
        near_port(ace.source_port), near_port(ace.destination_port), icmp_t, icmp_c,
        draw(st.integers(0, 63)), tos, draw(st.integers(0, 2)),
    )


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_matcher_against_cisco_decision_table(data: st.DataObject) -> None:
    ace = data.draw(aces().filter(lambda a: a.action != "remark"))
    for _ in range(5):
        f = data.draw(packets_near(ace))
        assert ace.matches(f) is oracle(ace, f)
        assert Ace.matches(ace, f.mirror()) is oracle(ace, f.mirror())
