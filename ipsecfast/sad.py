"""The security association database (DESIGN.md §SAs): SA records, SA pairs, lookups.

An ``SaRecord`` is one SA (one protocol, one direction) with what ``show`` and key export
need. An ``SaPair`` is what one negotiation (or one manual entry) installs for one flow:
the inbound and outbound SAs of a transform set (ESP, AH, or AH+ESP, applied ESP first),
the crypto map entry, the peer, the flow scope, lifetimes and counters.

``SecurityAssociationDatabase`` holds the pairs of a router. It is partitioned by
*domain*: the part of the database an interface uses (its own, or the one shared by the
interfaces of a crypto map with ``local-address``). Lookups:

* inbound: (domain, destination, protocol, SPI) -> the outermost inbound SA of a pair
  (DESIGN.md §Policy 4);
* outbound: (domain, scope) -> the newest pair for that flow, where the scope is
  (entry, ACE) or, with ``set security-association level per-host``, (entry, source
  host, destination host) (DESIGN.md §Policy 6).

Deleting a pair closes its SAs (the core cleanses the keyed contexts) and zeroes the key
bytes kept for export. Keys never appear in ``repr``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from .sa import SecurityAssociation
from .transform import Transforms

__all__ = ["SaRecord", "SaPair", "SecurityAssociationDatabase", "Scope", "PROTOCOL_NUMBERS"]

PROTOCOL_NUMBERS = {"esp": 50, "ah": 51}

Scope = tuple[int, int, int, int]  # (entry, ace, source host, destination host); -1/0 unused


def _ip(a: int) -> str:
    return str(ipaddress.IPv4Address(a))


@dataclass(eq=False)
class SaRecord:
    """One SA. ``local`` / ``peer`` are the outer addresses (our end, the peer's end) in
    both directions; inbound SAs are addressed to ``local``."""

    id: int
    spi: int
    protocol: Literal["esp", "ah"]
    direction: Literal["inbound", "outbound"]
    local: str
    peer: str
    transforms: Transforms
    mode: Literal["tunnel", "transport"]
    entry: int
    replay_window: int
    cipher_key: bytearray = field(repr=False)
    auth_key: bytearray = field(repr=False)
    sa: SecurityAssociation = field(repr=False)
    pair: SaPair | None = field(default=None, repr=False)

    @property
    def destination(self) -> str:
        return self.local if self.direction == "inbound" else self.peer

    @property
    def source(self) -> str:
        return self.peer if self.direction == "inbound" else self.local

    def wipe(self) -> None:
        self.sa.close()
        for key in (self.cipher_key, self.auth_key):
            key[:] = bytes(len(key))


@dataclass(eq=False)
class SaPair:
    """The SAs one negotiation / manual entry installs for one flow."""

    id: int
    domain: int
    entry: int
    peer: str
    local: str
    scope: Scope
    inbound: list[SaRecord]  # [ESP, AH] order of application outbound: ESP first
    outbound: list[SaRecord]
    manual: bool
    created: float
    lifetime_seconds: int | None = None
    lifetime_kilobytes: int | None = None
    rekey: bool = False  # soft limit raises a rekey request (static ipsec-isakmp entries)
    soft_fired: bool = False
    bytes_in: int = 0
    bytes_out: int = 0
    encaps: int = 0
    decaps: int = 0
    send_errors: dict[str, int] = field(default_factory=dict)
    recv_errors: dict[str, int] = field(default_factory=dict)
    alive: bool = True

    @property
    def transforms(self) -> Transforms:
        return self.outbound[0].transforms

    @property
    def mode(self) -> Literal["tunnel", "transport"]:
        return self.outbound[0].mode

    @property
    def outer_outbound(self) -> SaRecord:
        """The SA whose header is outermost on the wire (AH in an AH+ESP pair)."""
        return self.outbound[-1]

    @property
    def outer_inbound(self) -> SaRecord:
        return self.inbound[-1]

    def sa_of(self, direction: str, protocol: str) -> SaRecord | None:
        for r in (self.inbound if direction == "inbound" else self.outbound):
            if r.protocol == protocol:
                return r
        return None

    def remaining(self, now: float, direction: str) -> tuple[int, int] | None:
        """(kilobytes, seconds) left, None for a manual pair (no lifetime)."""
        if self.lifetime_seconds is None or self.lifetime_kilobytes is None:
            return None
        used = self.bytes_in if direction == "inbound" else self.bytes_out
        kb = max(0, self.lifetime_kilobytes - used // 1024)
        sec = max(0, int(self.created + self.lifetime_seconds - now))
        return kb, sec


class SecurityAssociationDatabase:
    """All SA pairs of a router, partitioned by domain (see the module docstring)."""

    def __init__(self) -> None:
        self.pairs: dict[int, SaPair] = {}
        self._inbound: dict[tuple[int, int, int, int], SaRecord] = {}
        self._outbound: dict[tuple[int, Scope], SaPair] = {}
        self._next_pair = 1
        self._next_sa = 1
        # (domain, destination) -> inbound_table(): rebuilt lazily after a change
        self._known: dict[tuple[int, int], tuple[npt.NDArray[np.int64], list[SaRecord]]] = {}

    # -- records -------------------------------------------------------------------------
    def sas(self) -> list[SaRecord]:
        """Every installed SA, by pair, inbound before outbound."""
        out: list[SaRecord] = []
        for pair in self.pairs.values():
            out += pair.inbound
            out += pair.outbound
        return out

    def __iter__(self) -> Iterator[SaPair]:
        return iter(list(self.pairs.values()))

    def __len__(self) -> int:
        return len(self.pairs)

    def record(self, sa_id: int) -> SaRecord | None:
        for pair in self.pairs.values():
            for r in pair.inbound + pair.outbound:
                if r.id == sa_id:
                    return r
        return None

    def new_sa_id(self) -> int:
        self._next_sa += 1
        return self._next_sa - 1

    def new_pair_id(self) -> int:
        self._next_pair += 1
        return self._next_pair - 1

    # -- lookups -------------------------------------------------------------------------
    def inbound_key(self, domain: int, destination: int, protocol: str, spi: int
                    ) -> tuple[int, int, int, int]:
        return (domain, destination, PROTOCOL_NUMBERS[protocol], spi)

    def lookup_inbound(self, domain: int, destination: int, proto_number: int, spi: int
                       ) -> SaRecord | None:
        return self._inbound.get((domain, destination, proto_number, spi))

    def cached_inbound_table(self, domain: int, destination: int
                             ) -> tuple[npt.NDArray[np.int64], list[SaRecord]] | None:
        """``inbound_table`` if it is built, else None (a read another thread may make
        while the SAD changes: it never iterates the SAs)."""
        return self._known.get((domain, destination))

    def inbound_table(self, domain: int, destination: int
                      ) -> tuple[npt.NDArray[np.int64], list[SaRecord]]:
        """The inbound SAs addressed to ``destination`` in ``domain``: sorted ``protocol
        << 32 | SPI`` keys and the record of each (what ``_esp.spi_lookup`` maps packets
        to). Kept until the SAD changes."""
        table = self._known.get((domain, destination))
        if table is None:
            recs = sorted(((k[2] << 32) | k[3], r) for k, r in self._inbound.items()
                          if k[0] == domain and k[1] == destination)
            table = (np.array([k for k, _ in recs], dtype=np.int64), [r for _, r in recs])
            self._known[(domain, destination)] = table
        return table

    def lookup_outbound(self, domain: int, scope: Scope) -> SaPair | None:
        return self._outbound.get((domain, scope))

    def spi_in_use(self, domain: int, destination: int, protocol: str, spi: int) -> bool:
        return self.inbound_key(domain, destination, protocol, spi) in self._inbound

    # -- changes -------------------------------------------------------------------------
    def add(self, pair: SaPair) -> None:
        """Install ``pair``: its outermost inbound SA becomes reachable by SPI and it
        becomes the outbound pair of its flow (replacing an older one, which stays for
        inbound traffic until it expires or is cleared)."""
        key = self.inbound_key(pair.domain, int(ipaddress.IPv4Address(pair.local)),
                               pair.outer_inbound.protocol, pair.outer_inbound.spi)
        if key in self._inbound:
            raise ValueError(f"inbound {pair.outer_inbound.protocol} SPI "
                             f"{pair.outer_inbound.spi} for {pair.local} is already in use")
        for r in pair.inbound + pair.outbound:
            r.pair = pair
        self.pairs[pair.id] = pair
        self._inbound[key] = pair.outer_inbound
        self._known.clear()
        self._outbound[(pair.domain, pair.scope)] = pair

    def set_outbound(self, pair: SaPair) -> None:
        """Make the installed ``pair`` the outbound pair of its flow (the others of the
        flow stay for inbound traffic)."""
        if self.pairs.get(pair.id) is not pair:
            raise ValueError(f"SA pair {pair.id} is not in the database")
        self._outbound[(pair.domain, pair.scope)] = pair

    def remove(self, pair: SaPair) -> None:
        """Delete ``pair`` and wipe its keys."""
        if self.pairs.pop(pair.id, None) is None:
            return
        pair.alive = False
        key = self.inbound_key(pair.domain, int(ipaddress.IPv4Address(pair.local)),
                               pair.outer_inbound.protocol, pair.outer_inbound.spi)
        if self._inbound.get(key) is pair.outer_inbound:
            del self._inbound[key]
            self._known.clear()
        if self._outbound.get((pair.domain, pair.scope)) is pair:
            del self._outbound[(pair.domain, pair.scope)]
            # an older pair of the same flow (kept for inbound) takes over, newest first
            for other in reversed(list(self.pairs.values())):
                if (other.domain, other.scope) == (pair.domain, pair.scope):
                    self._outbound[(pair.domain, pair.scope)] = other
                    break
        for r in pair.inbound + pair.outbound:
            r.wipe()

    def find(self, destination: str, protocol: str, spi: int) -> list[SaPair]:
        """Pairs holding an SA (either direction) to ``destination`` with this SPI."""
        out = []
        for pair in self.pairs.values():
            for r in pair.inbound + pair.outbound:
                if (r.destination, r.protocol, r.spi) == (destination, protocol, spi):
                    out.append(pair)
                    break
        return out


def ip_text(a: int) -> str:
    return _ip(a)
