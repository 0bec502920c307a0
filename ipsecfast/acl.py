"""Cisco extended IP access lists: model, parser, renderer, and the reference matcher.

MODEL CONTRACT (fixed; the classifier, config and router build on it):

* ``AddressMatch(address, wildcard)``: 32-bit ints; a packet address ``a`` matches when
  ``(a & ~wildcard) == (address & ~wildcard)``. ``any`` = (0, 0xFFFFFFFF),
  ``host A`` = (A, 0).
* ``PortMatch(op, ports)``: ``op`` in ``eq`` (one or more ports), ``neq``, ``lt``, ``gt``,
  ``range`` (two ports, inclusive). ``ranges()`` gives the equivalent inclusive ranges.
* ``Ace``: one entry (``permit`` / ``deny``; remarks are ``Ace`` with action ``remark``).
  ``protocol`` is None for ``ip`` (any protocol) else 0-255.
* ``AccessList``: name (str, the number as text for numbered lists), kind
  ("numbered" | "named"), entries in order.
* ``PacketFields``: the header fields the matcher reads; ``fragment`` is
  0 = not a fragment, 1 = initial fragment (offset 0, MF set), 2 = non-initial.

Added on top of the contract (all with defaults, nothing renamed):

* ``Ace.line``: the source line (compare=False), for error carets; ``Ace.render()`` /
  ``str(ace)``: the entry as IOS writes it after the list name / sequence number.
* ``AccessList.hits``: match counters keyed by sequence number (compare=False);
  ``count(seq, n)``, ``clear_counters()``; ``add(ace)`` (seq 0 = next free: last + 10),
  ``remove(seq)``; ``str(acl)`` = ``show access-lists``; ``AccessList.parse(text)``.
* Parser entry points used by ``config.py`` (stable): ``parse_numbered_line``,
  ``parse_named_entry``, ``parse_access_lists``, ``render_config``, ``check_crypto_acl``.
* Reference matcher: ``Ace.matches``, ``AccessList.first_match`` / ``matches``, and the
  crypto-map level ``first_permit(acls, fields, mirror)``.

IOS decisions where IOS is ambiguous or version dependent are listed in README.md
(section "Access lists") and next to the code that implements them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from .exceptions import ConfigError

Action = Literal["permit", "deny", "remark"]
PortOp = Literal["eq", "neq", "lt", "gt", "range"]

ANY_WILDCARD = 0xFFFFFFFF


@dataclass(frozen=True)
class AddressMatch:
    address: int
    wildcard: int

    @property
    def is_any(self) -> bool:
        return self.wildcard == ANY_WILDCARD

    @property
    def is_host(self) -> bool:
        return self.wildcard == 0

    @property
    def is_contiguous(self) -> bool:
        """True when the wildcard is 0...01...1 (a prefix), as crypto maps require."""
        w = self.wildcard
        return (w & (w + 1)) == 0

    def matches(self, addr: int) -> bool:
        care = ~self.wildcard & 0xFFFFFFFF
        return (addr & care) == (self.address & care)

    def render(self) -> str:
        """``any``, ``host A`` or ``A WILDCARD`` (address bits under the wildcard cleared)."""
        if self.is_any:
            return "any"
        if self.is_host:
            return f"host {_ip_text(self.address)}"
        care = ~self.wildcard & 0xFFFFFFFF
        return f"{_ip_text(self.address & care)} {_ip_text(self.wildcard)}"


@dataclass(frozen=True)
class PortMatch:
    op: PortOp
    ports: tuple[int, ...]

    def ranges(self) -> tuple[tuple[int, int], ...]:
        """Inclusive port ranges equivalent to this operator (possibly empty)."""
        p = self.ports
        if self.op == "eq":
            return tuple((x, x) for x in p)
        if self.op == "neq":
            out = []
            if p[0] > 0:
                out.append((0, p[0] - 1))
            if p[0] < 65535:
                out.append((p[0] + 1, 65535))
            return tuple(out)
        if self.op == "lt":
            return ((0, p[0] - 1),) if p[0] > 0 else ()
        if self.op == "gt":
            return ((p[0] + 1, 65535),) if p[0] < 65535 else ()
        lo, hi = p
        return ((lo, hi),) if lo <= hi else ()

    def matches(self, port: int) -> bool:
        return any(lo <= port <= hi for lo, hi in self.ranges())

    def render(self, protocol: int | None) -> str:
        """``eq www 443``, ``range 1024 65535``: port names as IOS shows them for tcp / udp."""
        return " ".join([self.op, *(_port_text(protocol, p) for p in self.ports)])


@dataclass(frozen=True)
class Ace:
    """One access-list entry, as IOS holds it."""

    seq: int
    action: Action
    protocol: int | None = None  # None = "ip" (any protocol)
    source: AddressMatch = AddressMatch(0, ANY_WILDCARD)
    source_port: PortMatch | None = None
    destination: AddressMatch = AddressMatch(0, ANY_WILDCARD)
    destination_port: PortMatch | None = None
    icmp_type: int | None = None  # ICMP only
    icmp_code: int | None = None  # ICMP only, needs icmp_type
    established: bool = False  # TCP only: ACK or RST set
    fragments: bool = False  # applies to non-initial fragments only
    dscp: int | None = None  # 0-63, compared with tos >> 2
    precedence: int | None = None  # 0-7, compared with tos >> 5
    tos: int | None = None  # 0-15, compared with (tos >> 1) & 0xF
    log: str | None = None  # "log" | "log-input" (accepted, no effect on matching)
    remark: str | None = None  # text of a remark entry
    lineno: int | None = field(default=None, compare=False)  # source line, for messages
    line: str | None = field(default=None, compare=False, repr=False)  # source text, for carets

    @property
    def has_l4(self) -> bool:
        """True when the entry looks at layer-4 information (ports, ICMP, TCP flags)."""
        return (
            self.source_port is not None
            or self.destination_port is not None
            or self.icmp_type is not None
            or self.established
        )

    def matches(self, fields: PacketFields) -> bool:
        """Whether this entry matches the packet, with IOS's rules for fragments.

        Cisco, "Access Control Lists and IP Fragments": an entry with only layer-3
        information applies to every packet and fragment; an entry with ``fragments``
        applies to non-initial fragments only; for a non-initial fragment (no layer-4
        header) an entry with layer-4 information matches when it is a ``permit`` whose
        layer-3 information matches, and never when it is a ``deny``.
        """
        if self.action == "remark":
            return False
        # Layer 3: protocol, addresses, the TOS byte.
        if self.protocol is not None and fields.protocol != self.protocol:
            return False
        if not self.source.matches(fields.source):
            return False
        if not self.destination.matches(fields.destination):
            return False
        if self.dscp is not None and (fields.tos >> 2) != self.dscp:
            return False
        if self.precedence is not None and (fields.tos >> 5) != self.precedence:
            return False
        if self.tos is not None and ((fields.tos >> 1) & 0xF) != self.tos:
            return False
        non_initial = fields.fragment == 2
        if self.fragments:
            return non_initial
        if non_initial and self.has_l4:
            return self.action == "permit"
        # Layer 4: present in non-fragments and initial fragments.
        if self.source_port is not None and not self.source_port.matches(fields.source_port):
            return False
        if self.destination_port is not None and not self.destination_port.matches(
            fields.destination_port
        ):
            return False
        if self.icmp_type is not None:
            if fields.icmp_type != self.icmp_type:
                return False
            if self.icmp_code is not None and fields.icmp_code != self.icmp_code:
                return False
        if self.established and not (fields.tcp_flags & (TCP_ACK | TCP_RST)):
            return False
        return True

    def render(self) -> str:
        """The entry as IOS writes it after ``access-list N`` or the sequence number."""
        if self.action == "remark":
            return f"remark {self.remark or ''}".rstrip()
        words = [self.action, _protocol_text(self.protocol), self.source.render()]
        if self.source_port is not None:
            words.append(self.source_port.render(self.protocol))
        words.append(self.destination.render())
        if self.destination_port is not None:
            words.append(self.destination_port.render(self.protocol))
        if self.icmp_type is not None:
            words.append(_icmp_text(self.icmp_type, self.icmp_code))
        if self.established:
            words.append("established")
        if self.dscp is not None:
            words.append(f"dscp {_value_text(DSCP_NAMES, self.dscp)}")
        if self.precedence is not None:
            words.append(f"precedence {_value_text(PRECEDENCE_NAMES, self.precedence)}")
        if self.tos is not None:
            words.append(f"tos {_value_text(TOS_NAMES, self.tos)}")
        if self.log is not None:
            words.append(self.log)
        if self.fragments:
            words.append("fragments")
        return " ".join(words)

    def __str__(self) -> str:
        return self.render()


@dataclass(frozen=True)
class PacketFields:
    """What the matcher reads from one IPv4 packet."""

    protocol: int
    source: int
    destination: int
    source_port: int = 0
    destination_port: int = 0
    icmp_type: int = -1
    icmp_code: int = -1
    tcp_flags: int = 0
    tos: int = 0
    fragment: int = 0  # 0 = not a fragment, 1 = initial fragment, 2 = non-initial

    def mirror(self) -> PacketFields:
        """Source and destination (addresses and ports) swapped, for inbound evaluation."""
        return PacketFields(
            self.protocol,
            self.destination,
            self.source,
            self.destination_port,
            self.source_port,
            self.icmp_type,
            self.icmp_code,
            self.tcp_flags,
            self.tos,
            self.fragment,
        )


@dataclass
class AccessList:
    name: str
    kind: Literal["numbered", "named"] = "named"
    entries: list[Ace] = field(default_factory=list)
    # Match counters keyed by sequence number, as `show access-lists` prints them.
    hits: dict[int, int] = field(default_factory=dict, compare=False, repr=False)

    # -- building -------------------------------------------------------------------

    @classmethod
    def parse(cls, text: str) -> AccessList:
        """The one access list defined by ``text``.

        Accepts numbered lines (``access-list 101 ...``), a named block
        (``ip access-list extended NAME`` + entries), or ``show access-lists`` output
        for one list (the match counters are read back into ``hits``).
        """
        lists, starts = _parse_lists(text)
        if not lists:
            raise ConfigError("no access list is defined")
        if len(lists) > 1:
            lineno, line, column = starts[list(lists)[1]]
            raise ConfigError(
                "a second access list; AccessList.parse takes one (use parse_access_lists)",
                lineno=lineno, line=line, column=column,
            )
        return next(iter(lists.values()))

    def next_seq(self) -> int:
        """The sequence number IOS gives an entry typed without one: last + 10."""
        return (max((a.seq for a in self.entries), default=0)) + SEQ_STEP

    def add(self, ace: Ace) -> Ace:
        """Insert ``ace`` in sequence order; seq 0 means "next" (last + 10, as IOS does).

        Returns the entry as stored (with its sequence number). A sequence number that
        is already used raises ``ConfigError`` (IOS: ``% Duplicate sequence number``).
        """
        if ace.seq == 0:
            seq = self.next_seq()
            if seq > MAX_SEQ:
                raise ConfigError(
                    f"Exceeded maximum sequence number {MAX_SEQ}",
                    lineno=ace.lineno, line=ace.line,
                )
            ace = replace(ace, seq=seq)
        elif any(a.seq == ace.seq for a in self.entries):
            raise ConfigError(
                f"Duplicate sequence number {ace.seq}", lineno=ace.lineno, line=ace.line
            )
        pos = len(self.entries)
        while pos > 0 and self.entries[pos - 1].seq > ace.seq:
            pos -= 1
        self.entries.insert(pos, ace)
        return ace

    def remove(self, seq: int) -> bool:
        """Delete the entry with this sequence number (``no SEQ``); False if there is none."""
        for i, a in enumerate(self.entries):
            if a.seq == seq:
                del self.entries[i]
                self.hits.pop(seq, None)
                return True
        return False

    # -- counters ---------------------------------------------------------------------

    def count(self, seq: int, n: int = 1) -> None:
        """Add ``n`` matches to the entry with sequence number ``seq``."""
        self.hits[seq] = self.hits.get(seq, 0) + n

    def clear_counters(self) -> None:
        """``clear access-list counters``."""
        self.hits.clear()

    # -- reference matcher ------------------------------------------------------------

    def first_match(self, fields: PacketFields) -> Ace | None:
        """The first entry (in order) that matches the packet, or None."""
        for ace in self.entries:
            if ace.matches(fields):
                return ace
        return None

    def first_match_index(self, fields: PacketFields) -> int:
        """Index in ``entries`` of the first matching entry, or -1."""
        for i, ace in enumerate(self.entries):
            if ace.matches(fields):
                return i
        return -1

    def matches(self, fields: PacketFields) -> bool:
        """True iff the first matching entry is a ``permit`` (implicit deny at the end)."""
        ace = self.first_match(fields)
        return ace is not None and ace.action == "permit"

    # -- rendering --------------------------------------------------------------------

    def render_config(self) -> list[str]:
        """Running-config lines; see the module function ``render_config``."""
        return render_config(self)

    def __str__(self) -> str:
        """The list as ``show access-lists`` prints it (remarks are not shown)."""
        lines = [f"Extended IP access list {self.name}"]
        for ace in self.entries:
            if ace.action == "remark":
                continue
            n = self.hits.get(ace.seq, 0)
            tail = "" if n == 0 else f" ({n} match{'' if n == 1 else 'es'})"
            lines.append(f"    {ace.seq} {ace.render()}{tail}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# IOS keyword tables

TCP_ACK = 0x10
TCP_RST = 0x04
SEQ_STEP = 10
MAX_SEQ = 2147483647
MAX_EQ_PORTS = 10
MAX_REMARK = 100

# `permit ?` on IOS / IOS XE: the protocol keywords and their IP protocol numbers.
# "ip" is protocol 0 inside IOS: `permit 0 any any` is stored and shown as `permit ip`.
PROTOCOL_NUMBERS: dict[str, int] = {
    "ahp": 51, "eigrp": 88, "esp": 50, "gre": 47, "icmp": 1, "igmp": 2, "ipinip": 4,
    "nos": 94, "ospf": 89, "pcp": 108, "pim": 103, "sctp": 132, "tcp": 6, "udp": 17,
}
PROTOCOL_NAMES: dict[int, str] = {v: k for k, v in PROTOCOL_NUMBERS.items()}
TCP, UDP, ICMP = 6, 17, 1

# `permit tcp any any eq ?`
TCP_PORTS: dict[str, int] = {
    "bgp": 179, "chargen": 19, "cmd": 514, "daytime": 13, "discard": 9, "domain": 53,
    "drip": 3949, "echo": 7, "exec": 512, "finger": 79, "ftp": 21, "ftp-data": 20,
    "gopher": 70, "hostname": 101, "ident": 113, "irc": 194, "klogin": 543, "kshell": 544,
    "login": 513, "lpd": 515, "msrpc": 135, "nntp": 119, "onep-plain": 15001,
    "onep-tls": 15002, "pim-auto-rp": 496, "pop2": 109, "pop3": 110, "smtp": 25,
    "sunrpc": 111, "tacacs": 49, "talk": 517, "telnet": 23, "time": 37, "uucp": 540,
    "whois": 43, "www": 80,
}
# `permit udp any any eq ?`
UDP_PORTS: dict[str, int] = {
    "biff": 512, "bootpc": 68, "bootps": 67, "discard": 9, "dnsix": 195, "domain": 53,
    "echo": 7, "isakmp": 500, "mobile-ip": 434, "nameserver": 42, "netbios-dgm": 138,
    "netbios-ns": 137, "netbios-ss": 139, "non500-isakmp": 4500, "ntp": 123,
    "pim-auto-rp": 496, "rip": 520, "snmp": 161, "snmptrap": 162, "sunrpc": 111,
    "syslog": 514, "tacacs": 49, "talk": 517, "tftp": 69, "time": 37, "who": 513,
    "xdmcp": 177,
}
PORT_NAMES: dict[int, dict[str, int]] = {TCP: TCP_PORTS, UDP: UDP_PORTS}
_PORT_BY_NUMBER: dict[int, dict[int, str]] = {
    proto: {v: k for k, v in table.items()} for proto, table in PORT_NAMES.items()
}

# `permit icmp any any ?`: name -> (type, code or None for any code).
ICMP_MESSAGES: dict[str, tuple[int, int | None]] = {
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
_ICMP_BY_VALUE: dict[tuple[int, int | None], str] = {v: k for k, v in ICMP_MESSAGES.items()}

# `dscp ?` (RFC 2597 AF, RFC 2474 class selectors, RFC 3246 EF). IOS has no "cs0";
# we accept it as a synonym of "default" and show 0 as "default".
DSCP_NAMES: dict[str, int] = {
    "default": 0, "af11": 10, "af12": 12, "af13": 14, "af21": 18, "af22": 20, "af23": 22,
    "af31": 26, "af32": 28, "af33": 30, "af41": 34, "af42": 36, "af43": 38,
    "cs1": 8, "cs2": 16, "cs3": 24, "cs4": 32, "cs5": 40, "cs6": 48, "cs7": 56, "ef": 46,
}
_DSCP_ALIASES: dict[str, int] = {"cs0": 0}
# `precedence ?` (RFC 791 precedence field).
PRECEDENCE_NAMES: dict[str, int] = {
    "routine": 0, "priority": 1, "immediate": 2, "flash": 3, "flash-override": 4,
    "critical": 5, "internet": 6, "network": 7,
}
# `tos ?` (RFC 1349 TOS field).
TOS_NAMES: dict[str, int] = {
    "normal": 0, "min-monetary-cost": 1, "max-reliability": 2, "max-throughput": 4,
    "min-delay": 8,
}

_EXTENDED_RANGES = ((100, 199), (2000, 2699))
_STANDARD_RANGES = ((1, 99), (1300, 1999))
_OPTIONS = ("dscp", "established", "fragments", "log", "log-input", "precedence", "tos")
_UNSUPPORTED = {
    "time-range": "time-range is not supported by ipsecfast",
    "ttl": "ttl matching is not supported by ipsecfast",
    "option": "IP option matching is not supported by ipsecfast",
    "match-any": "TCP flag matching is not supported by ipsecfast (only established)",
    "match-all": "TCP flag matching is not supported by ipsecfast (only established)",
    "reflect": "reflexive access lists are not supported by ipsecfast",
    "object-group": "object groups are not supported by ipsecfast",
    "dynamic": "dynamic access lists are not supported by ipsecfast",
    "evaluate": "reflexive access lists are not supported by ipsecfast",
}
_ADDRESS_EXPECTED = "any, host A.B.C.D, or A.B.C.D WILDCARD"


def is_extended_number(n: int) -> bool:
    """True for the numbers of extended IP access lists (100-199, 2000-2699)."""
    return any(lo <= n <= hi for lo, hi in _EXTENDED_RANGES)


def _ip_text(a: int) -> str:
    return f"{(a >> 24) & 255}.{(a >> 16) & 255}.{(a >> 8) & 255}.{a & 255}"


def _protocol_text(protocol: int | None) -> str:
    if protocol is None:
        return "ip"
    return PROTOCOL_NAMES.get(protocol, str(protocol))


def _port_text(protocol: int | None, port: int) -> str:
    if protocol is None:
        return str(port)
    return _PORT_BY_NUMBER.get(protocol, {}).get(port, str(port))


def _icmp_text(icmp_type: int, icmp_code: int | None) -> str:
    name = _ICMP_BY_VALUE.get((icmp_type, icmp_code))
    if name is not None:
        return name
    return str(icmp_type) if icmp_code is None else f"{icmp_type} {icmp_code}"


def _value_text(names: dict[str, int], value: int) -> str:
    for k, v in names.items():
        if v == value:
            return k
    return str(value)


# ---------------------------------------------------------------------------------------
# Parser


class _Line:
    """One configuration line cut into tokens, each with its column (for the caret)."""

    def __init__(self, line: str, lineno: int | None) -> None:
        self.line = line
        self.lineno = lineno
        self.tokens = [(m.start(), m.group()) for m in re.finditer(r"\S+", line)]
        self.i = 0
        # columns of interesting tokens, for errors raised later (check_crypto_acl)
        self.columns: dict[str, int] = {}

    def at_end(self) -> bool:
        return self.i >= len(self.tokens)

    def peek(self) -> str | None:
        """The next token in lower case (IOS keywords are case-insensitive), or None."""
        return None if self.at_end() else self.tokens[self.i][1].lower()

    def column(self) -> int:
        return self.tokens[self.i][0] if not self.at_end() else len(self.line)

    def take(self, expected: str) -> tuple[int, str]:
        """The next token (column, text); at the end of the line: IOS's incomplete command."""
        if self.at_end():
            raise self.incomplete(expected)
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def rest(self) -> str:
        """Everything from the next token to the end of the line (remark text)."""
        return self.line[self.column():].rstrip()

    def invalid(self, column: int, expected: str) -> ConfigError:
        return ConfigError(expected, lineno=self.lineno, line=self.line, column=column)

    def incomplete(self, expected: str) -> ConfigError:
        return ConfigError(
            f"Incomplete command. (expected {expected})", lineno=self.lineno, line=self.line
        )


def _number(ln: _Line, col: int, text: str, lo: int, hi: int, what: str) -> int:
    if not text.isdigit() or not (lo <= int(text) <= hi):
        raise ln.invalid(col, f"expected {what}")
    return int(text)


_IP_RE = re.compile(r"^\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}$")


def _parse_ip(text: str) -> int | None:
    if not _IP_RE.match(text):
        return None
    parts = [int(p) for p in text.split(".")]
    if any(p > 255 for p in parts):
        return None
    return (parts[0] << 24) | (parts[1] << 16) | (parts[2] << 8) | parts[3]


def _parse_address(ln: _Line, role: str, alternatives: str = "") -> AddressMatch:
    """``any`` | ``host A`` | ``A WILDCARD``. The address is stored with the wildcard
    bits cleared, as IOS shows it (``10.1.1.5 0.0.0.255`` becomes ``10.1.1.0 0.0.0.255``).
    """
    expected = f"a {role} address ({_ADDRESS_EXPECTED}){alternatives}"
    col, tok = ln.take(expected)
    word = tok.lower()
    if word == "any":
        return AddressMatch(0, ANY_WILDCARD)
    if word == "host":
        hcol, htok = ln.take(f"the {role} host address A.B.C.D")
        addr = _parse_ip(htok)
        if addr is None:
            raise ln.invalid(hcol, f"expected the {role} host address A.B.C.D")
        return AddressMatch(addr, 0)
    if word in _UNSUPPORTED:
        raise ln.invalid(col, _UNSUPPORTED[word])
    addr = _parse_ip(tok)
    if addr is None:
        raise ln.invalid(col, f"expected {expected}")
    # Extended lists need the wildcard: IOS rejects `permit ip 10.1.1.1 any` at `any`.
    wcol, wtok = ln.take(f"the {role} wildcard A.B.C.D")
    wildcard = _parse_ip(wtok)
    if wildcard is None:
        raise ln.invalid(wcol, f"expected the {role} wildcard A.B.C.D after {tok}")
    ln.columns[f"{role}_wildcard"] = wcol
    return AddressMatch(addr & ~wildcard & 0xFFFFFFFF, wildcard)


_PORT_OPS = ("eq", "gt", "lt", "neq", "range")


def _port_value(protocol: int, tok: str) -> int | None:
    word = tok.lower()
    table = PORT_NAMES.get(protocol, {})
    if word in table:
        return table[word]
    if tok.isdigit():
        return int(tok) if int(tok) <= 65535 else None
    return None


def _port_expected(protocol: int) -> str:
    name = _protocol_text(protocol).upper()
    return f"a {name} port number (0-65535) or name"


def _parse_port(ln: _Line, protocol: int) -> PortMatch | None:
    """An optional port operator for tcp / udp, after an address."""
    word = ln.peek()
    if word not in _PORT_OPS:
        return None
    ln.take("")
    expected = _port_expected(protocol)
    col, tok = ln.take(expected)
    first = _port_value(protocol, tok)
    if first is None:
        raise ln.invalid(col, f"expected {expected}")
    if word == "range":
        col2, tok2 = ln.take(f"the end of the range: {expected}")
        last = _port_value(protocol, tok2)
        if last is None:
            raise ln.invalid(col2, f"expected the end of the range: {expected}")
        if last < first:
            raise ln.invalid(col2, f"the end of the range must not be below its start ({first})")
        return PortMatch("range", (first, last))
    if word == "eq":
        ports = [first]
        # IOS accepts up to 10 ports after eq: `eq www 443 8080`.
        while not ln.at_end():
            col, tok = ln.tokens[ln.i]
            value = _port_value(protocol, tok)
            if value is None:
                break
            if len(ports) == MAX_EQ_PORTS:
                raise ln.invalid(col, f"at most {MAX_EQ_PORTS} ports after eq")
            ports.append(value)
            ln.i += 1
        return PortMatch("eq", tuple(ports))
    op: PortOp = "neq" if word == "neq" else "lt" if word == "lt" else "gt"
    return PortMatch(op, (first,))


def _parse_value(
    ln: _Line, names: dict[str, int], hi: int, what: str, aliases: dict[str, int] | None = None
) -> int:
    expected = f"{what} (0-{hi} or {', '.join(names)})"
    col, tok = ln.take(expected)
    word = tok.lower()
    if word in names:
        return names[word]
    if aliases and word in aliases:
        return aliases[word]
    return _number(ln, col, tok, 0, hi, expected)


def _parse_rule(ln: _Line, seq: int, action: Action) -> Ace:
    """``protocol source [ports] destination [ports] [icmp] [options]`` after the action."""
    col, tok = ln.take("a protocol name or number (0-255)")
    word = tok.lower()
    protocol: int | None
    if word == "ip":
        protocol = None
    elif word in PROTOCOL_NUMBERS:
        protocol = PROTOCOL_NUMBERS[word]
    elif tok.isdigit() and int(tok) <= 255:
        # 0 is how IOS stores "ip"; a number with a name is the named protocol.
        protocol = int(tok) or None
    elif word in _UNSUPPORTED:
        raise ln.invalid(col, _UNSUPPORTED[word])
    else:
        raise ln.invalid(col, "expected a protocol name or number (0-255)")
    has_ports = protocol in (TCP, UDP)
    port_alt = ", or a port operator (eq, neq, lt, gt, range)" if has_ports else ""

    source = _parse_address(ln, "source")
    source_port = _parse_port(ln, protocol) if has_ports and protocol is not None else None
    destination = _parse_address(ln, "destination", port_alt if source_port is None else "")
    destination_port = (
        _parse_port(ln, protocol) if has_ports and protocol is not None else None
    )

    icmp_type: int | None = None
    icmp_code: int | None = None
    if protocol == ICMP and not ln.at_end():
        col, tok = ln.tokens[ln.i]
        word = tok.lower()
        if word in ICMP_MESSAGES:
            icmp_type, icmp_code = ICMP_MESSAGES[word]
            ln.i += 1
        elif tok.isdigit():
            icmp_type = _number(ln, col, tok, 0, 255, "an ICMP message type (0-255) or name")
            ln.i += 1
            if not ln.at_end() and ln.tokens[ln.i][1].isdigit():
                col, tok = ln.tokens[ln.i]
                icmp_code = _number(ln, col, tok, 0, 255, "an ICMP message code (0-255)")
                ln.i += 1

    seen: dict[str, int] = {}
    established = fragments = False
    dscp = precedence = tos = None
    log: str | None = None
    while not ln.at_end():
        col, tok = ln.take("")
        word = tok.lower()
        allowed = [
            o for o in _OPTIONS
            if o not in seen
            and not (o == "established" and protocol != TCP)
            and not (o.startswith("log") and ("log" in seen or "log-input" in seen))
            and not (o == "dscp" and ("precedence" in seen or "tos" in seen))
            and not (o in ("precedence", "tos") and "dscp" in seen)
        ]
        if word == "established" and protocol != TCP:
            raise ln.invalid(col, "established applies to tcp only")
        if word in ("log", "log-input") and ("log" in seen or "log-input" in seen):
            raise ln.invalid(col, "log or log-input is given once")
        if word in _UNSUPPORTED:
            raise ln.invalid(col, _UNSUPPORTED[word])
        if word not in _OPTIONS or word in seen:
            if protocol == ICMP and icmp_type is None and not seen:
                what = "an ICMP message type or name, or an option"
            elif has_ports and destination_port is None and not seen:
                what = "a port operator or an option"
            else:
                what = "an option"
            raise ln.invalid(col, f"expected {what} ({', '.join(allowed) or 'none left'})")
        if word == "dscp" and ("precedence" in seen or "tos" in seen):
            raise ln.invalid(col, "dscp cannot be combined with precedence or tos")
        if word in ("precedence", "tos") and "dscp" in seen:
            raise ln.invalid(col, f"{word} cannot be combined with dscp")
        seen[word] = col
        if word == "established":
            established = True
        elif word == "fragments":
            fragments = True
        elif word == "dscp":
            dscp = _parse_value(ln, DSCP_NAMES, 63, "a DSCP value", _DSCP_ALIASES)
        elif word == "precedence":
            precedence = _parse_value(ln, PRECEDENCE_NAMES, 7, "a precedence value")
        elif word == "tos":
            tos = _parse_value(ln, TOS_NAMES, 15, "a TOS value")
        else:
            log = word
    ace = Ace(
        seq, action, protocol, source, source_port, destination, destination_port,
        icmp_type, icmp_code, established, fragments, dscp, precedence, tos, log,
        lineno=ln.lineno, line=ln.line,
    )
    if fragments and ace.has_l4:
        # Cisco: the fragments keyword cannot go on an entry with layer-4 information.
        raise ln.invalid(
            seen["fragments"],
            "fragments cannot be combined with layer-4 information "
            "(ports, ICMP message, established)",
        )
    return ace


def _parse_remark(ln: _Line, seq: int) -> Ace:
    if ln.at_end():
        raise ln.incomplete("the remark text")
    text = ln.rest()
    if len(text) > MAX_REMARK:
        raise ln.invalid(ln.column() + MAX_REMARK, f"a remark is at most {MAX_REMARK} characters")
    return Ace(seq, "remark", remark=text, lineno=ln.lineno, line=ln.line)


def _parse_list_number(ln: _Line) -> str:
    expected = "an extended access-list number (100-199, 2000-2699)"
    col, tok = ln.take(expected)
    if tok.isdigit():
        n = int(tok)
        if is_extended_number(n):
            return str(n)
        if any(lo <= n <= hi for lo, hi in _STANDARD_RANGES):
            raise ln.invalid(
                col,
                "standard access lists are not supported; crypto maps need an extended "
                "list (100-199, 2000-2699)",
            )
    raise ln.invalid(col, f"expected {expected}")


def _numbered(ln: _Line) -> tuple[str, Ace]:
    col, tok = ln.take("access-list")
    if tok.lower() != "access-list":
        raise ln.invalid(col, "expected access-list")
    name = _parse_list_number(ln)
    col, tok = ln.take("permit, deny or remark")
    word = tok.lower()
    if word == "remark":
        return name, _parse_remark(ln, 0)
    if word in ("permit", "deny"):
        return name, _parse_rule(ln, 0, "permit" if word == "permit" else "deny")
    if word in _UNSUPPORTED:
        raise ln.invalid(col, _UNSUPPORTED[word])
    raise ln.invalid(col, "expected permit, deny or remark")


def parse_numbered_line(line: str, lineno: int | None = None) -> tuple[str, Ace]:
    """Parse ``access-list N {permit|deny|remark} ...`` into (list name, entry).

    The entry has ``seq == 0``: append it with ``AccessList.add``, which gives it the
    next sequence number (last + 10), as IOS numbers the entries of a numbered list.
    """
    ln = _Line(line, lineno)
    name, ace = _numbered(ln)
    return name, ace


def _named_entry(ln: _Line, acl: AccessList, apply: bool = True) -> Ace | None:
    """One sub-mode line; returns the entry added (None for ``no ...``)."""
    col, tok = ln.take("a sequence number, permit, deny, remark or no")
    negate = tok.lower() == "no"
    if negate:
        col, tok = ln.take("a sequence number, permit, deny or remark")
    seq = 0
    seq_col = col
    if tok.isdigit():
        seq = _number(ln, col, tok, 1, MAX_SEQ, f"a sequence number (1-{MAX_SEQ})")
        if negate:
            if not ln.at_end():
                raise ln.invalid(ln.column(), "expected the end of the line after no SEQ")
            if apply:
                acl.remove(seq)
            return None
        col, tok = ln.take("permit, deny or remark")
        expected = "permit, deny or remark"
    elif negate:
        expected = "a sequence number, permit, deny or remark"
    else:
        expected = "a sequence number, permit, deny, remark or no"
    word = tok.lower()
    if word == "remark":
        ace = _parse_remark(ln, seq)
    elif word in ("permit", "deny"):
        ace = _parse_rule(ln, seq, "permit" if word == "permit" else "deny")
    elif word in _UNSUPPORTED:
        raise ln.invalid(col, _UNSUPPORTED[word])
    else:
        raise ln.invalid(col, f"expected {expected}")
    if not apply:
        return ace
    if negate:
        # `no permit ...` / `no remark TEXT`: remove the entry with this content, as
        # IOS does in named-list mode.
        for old in acl.entries:
            if replace(old, seq=0) == ace:
                acl.remove(old.seq)
                break
        return None
    if seq and any(a.seq == seq for a in acl.entries):
        raise ln.invalid(seq_col, f"Duplicate sequence number {seq}")
    if not seq and acl.next_seq() > MAX_SEQ:
        raise ln.invalid(col, f"Exceeded maximum sequence number {MAX_SEQ}")
    return acl.add(ace)


def parse_named_entry(line: str, acl: AccessList, lineno: int | None = None) -> None:
    """Apply one ``ip access-list extended`` sub-mode line to ``acl`` in place.

    ``[SEQ] permit|deny ...``, ``[SEQ] remark TEXT``, ``no SEQ`` and
    ``no permit|deny|remark ...`` (remove the entry with that content). Without SEQ the entry
    gets the last sequence number + 10. ``no`` of an entry that does not exist is
    silently ignored, as IOS does.
    """
    _named_entry(_Line(line, lineno), acl)


def _header(ln: _Line) -> AccessList:
    """``ip access-list extended NAME`` (the ``ip`` token already taken)."""
    col, tok = ln.take("access-list")
    if tok.lower() != "access-list":
        raise ln.invalid(col, "expected access-list")
    col, tok = ln.take("extended")
    if tok.lower() != "extended":
        if tok.lower() == "standard":
            raise ln.invalid(
                col, "standard access lists are not supported; crypto maps need extended lists"
            )
        raise ln.invalid(col, "expected extended")
    col, name = ln.take("the access-list name or number")
    if not ln.at_end():
        raise ln.invalid(ln.column(), "expected the end of the line after the list name")
    if name.isdigit():
        # `ip access-list extended 150` edits numbered list 150.
        if not is_extended_number(int(name)):
            raise ln.invalid(col, "a numbered extended list is 100-199 or 2000-2699")
        return AccessList(str(int(name)), "numbered")
    return AccessList(name, "named")


_SHOW_HEADER = re.compile(r"^\s*Extended IP access list (\S+)\s*$")
_SHOW_COUNTER = re.compile(r"\s\((\d+) match(?:es)?\)\s*$")


def _parse_lists(
    text: str,
) -> tuple[dict[str, AccessList], dict[str, tuple[int, str, int]]]:
    lists: dict[str, AccessList] = {}
    starts: dict[str, tuple[int, str, int]] = {}
    current: AccessList | None = None
    show_mode = False

    def open_list(new: AccessList, lineno: int, line: str, col: int) -> AccessList:
        acl = lists.get(new.name)
        if acl is None:
            lists[new.name] = acl = new
            starts[new.name] = (lineno, line, col)
        return acl

    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("!"):
            continue
        ln = _Line(line, lineno)
        first = ln.peek()
        col = ln.column()
        if first == "access-list":
            name, ace = _numbered(ln)
            acl = open_list(AccessList(name, "numbered"), lineno, line, col)
            acl.add(ace)
            current = None
        elif first == "ip":
            ln.take("ip")
            current = open_list(_header(ln), lineno, line, col)
            show_mode = False
        elif first == "no" and len(ln.tokens) > 1 and ln.tokens[1][1].lower() == "access-list":
            ln.take("no")
            ln.take("access-list")
            name = _parse_list_number(ln)
            if not ln.at_end():
                raise ln.invalid(ln.column(), "expected the end of the line")
            lists.pop(name, None)
            starts.pop(name, None)
            current = None
        elif (
            first == "no"
            and len(ln.tokens) > 2
            and ln.tokens[1][1].lower() == "ip"
            and ln.tokens[2][1].lower() == "access-list"
        ):
            ln.take("no")
            ln.take("ip")
            gone = _header(ln)
            lists.pop(gone.name, None)
            starts.pop(gone.name, None)
            current = None
        elif first == "exit" and len(ln.tokens) == 1:
            current = None
        elif _SHOW_HEADER.match(line):
            name = _SHOW_HEADER.match(line).group(1)  # type: ignore[union-attr]
            kind: Literal["numbered", "named"] = "named"
            if name.isdigit() and is_extended_number(int(name)):
                kind = "numbered"
            current = open_list(AccessList(name, kind), lineno, line, col)
            show_mode = True
        elif current is not None:
            hits = None
            if show_mode:
                m = _SHOW_COUNTER.search(line)
                if m:
                    hits = int(m.group(1))
                    ln = _Line(line[: m.start()], lineno)
                    ln.line = line
            entry = _named_entry(ln, current)
            if hits and entry is not None:
                current.count(entry.seq, hits)
        else:
            raise ln.invalid(col, "expected access-list or ip access-list extended NAME")
    return lists, starts


def parse_access_lists(text: str) -> dict[str, AccessList]:
    """Every access list defined by a block of configuration, by name (numbers as text).

    Understands ``access-list N ...``, ``no access-list N``, ``no ip access-list extended
    NAME``, ``ip access-list extended NAME`` followed by its entries (until the next top-level command or ``exit``), and
    ``show access-lists`` output. ``!`` lines and blank lines are ignored.
    """
    return _parse_lists(text)[0]


# ---------------------------------------------------------------------------------------
# Rendering


def render_config(acl: AccessList) -> list[str]:
    """The running-config lines of ``acl``.

    A numbered list whose entries carry the default sequence numbers (10, 20, ...) is
    written ``access-list 101 permit ...``, as IOS does. A named list is written
    ``ip access-list extended NAME`` then one indented line per entry; the sequence
    number is written only where it differs from the default (last + 10), so the
    lines parse back to the same list. A numbered list with other sequence numbers
    (edited with ``ip access-list extended 101``) is written in that named form,
    which IOS accepts, so that its sequence numbers survive.
    """
    default = all(a.seq == SEQ_STEP * (i + 1) for i, a in enumerate(acl.entries))
    if acl.kind == "numbered" and acl.entries and default:
        return [f"access-list {acl.name} {a.render()}" for a in acl.entries]
    lines = [f"ip access-list extended {acl.name}"]
    last = 0
    for a in acl.entries:
        prefix = "" if a.seq == last + SEQ_STEP else f"{a.seq} "
        lines.append(f" {prefix}{a.render()}")
        last = a.seq
    return lines


# ---------------------------------------------------------------------------------------
# Crypto-map checks and semantics


def _entry_line(acl: AccessList, ace: Ace) -> str:
    if ace.line is not None:
        return ace.line
    if acl.kind == "numbered":
        return f"access-list {acl.name} {ace.render()}"
    return f" {ace.seq} {ace.render()}"


def check_crypto_acl(acl: AccessList) -> None:
    """Raise ``ConfigError`` if ``acl`` cannot be used by a crypto map.

    The seed guide: "Cisco IOS XE does not support access control lists (ACLs) that
    have discontinuous masks in IPsec." The error names the entry's line and points
    at the offending wildcard.
    """
    for ace in acl.entries:
        if ace.action == "remark":
            continue
        for role, match in (("source", ace.source), ("destination", ace.destination)):
            if match.is_contiguous:
                continue
            line = _entry_line(acl, ace)
            ln = _Line(line, ace.lineno)
            try:
                if ln.peek() == "access-list":
                    _numbered(ln)
                else:
                    _named_entry(ln, AccessList(acl.name), apply=False)
            except ConfigError:  # pragma: no cover - the line parsed once already
                pass
            raise ConfigError(
                f"crypto maps do not support discontiguous wildcard masks: access list "
                f"{acl.name} entry {ace.seq} has {role} wildcard {_ip_text(match.wildcard)}",
                lineno=ace.lineno, line=line, column=ln.columns.get(f"{role}_wildcard"),
            )


def first_permit(
    acls: Sequence[AccessList], fields: PacketFields, mirror: bool = False
) -> tuple[int, int]:
    """Crypto-map semantics (DESIGN.md §Policy 2) over an ordered list of access lists.

    Returns (list index, entry index in that list's ``entries``) of the first list
    whose first matching entry is a ``permit``; a ``deny`` (or no match) goes on to the
    next list; (-1, -1) when no list protects the packet. ``mirror=True`` evaluates
    ``fields.mirror()`` (inbound clear-text traffic). Entry indexes count remarks.
    """
    if mirror:
        fields = fields.mirror()
    for li, acl in enumerate(acls):
        ei = acl.first_match_index(fields)
        if ei >= 0 and acl.entries[ei].action == "permit":
            return li, ei
    return -1, -1
