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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

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

    @property
    def has_l4(self) -> bool:
        """True when the entry looks at layer-4 information (ports, ICMP, TCP flags)."""
        return (
            self.source_port is not None
            or self.destination_port is not None
            or self.icmp_type is not None
            or self.established
        )


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
