"""Router: one IOS device's crypto map data plane (DESIGN.md §Policy, §SAs).

``Router(config)`` builds, from a ``Config``, the crypto map set of every interface
compiled for lookup (``cryptomap.CryptoMapSpd``), the SA database (``sad``) with the
manual SAs installed, and then processes batches:

* ``outbound(ifname, batch)``: entries in order (first permit protects, deny skips),
  SA per flow (entry + ACE, or host pair with ``per-host``), ESP / AH / AH+ESP, transport
  mode only between the peers, nested protection (the packet, once protected, is
  evaluated again against the crypto map, up to ``nesting_depth`` layers).
* ``inbound(ifname, batch)``: ESP / AH for the interface's local address by
  (destination, protocol, SPI), inner-flow check, nested layers peeled; clear text that
  an entry would protect (mirror evaluation) is dropped.

Per-packet results are numpy arrays aligned with the input (``RouterResult``). Packets are
grouped by SA with numpy and each SA sees one batch call per direction and mode; there is
no Python loop over packets. Bad packets never raise: every drop has a ``Status`` code,
counted per interface and per SA pair (``show("crypto ipsec sa")``).

IOS choices made where the seed is silent are listed in ``Router``'s docstring.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from functools import cache
from typing import Any, Literal, NamedTuple

import numpy as np
import numpy.typing as npt

from .acl import AccessList, Ace
from .classifier import (
    H_BYTE0,
    H_DPORT,
    H_DST,
    H_PROTO,
    H_SPORT,
    H_SRC,
    H_TOS,
    Classification,
)
from .config import Config, CryptoMapEntry, TransformSet, canonical_interface_name
from .cryptomap import CryptoMapSpd, SpdList, group_destinations, manual_acl
from .exceptions import ConfigError
from .packets import PacketBatch
from .sa import (
    MODE_IDS,
    NO_SELECTOR,
    SPI_CLEAR,
    SPI_FRAGMENT,
    SPI_OK,
    SPI_OPTIONS,
    SPI_TRUNCATED,
    SPI_UNKNOWN,
    SaResult,
    SecurityAssociation,
    _decapsulate_multi,
    _encapsulate_multi,
    spi_lookup,
)
from .sad import SaPair, SaRecord, Scope, SecurityAssociationDatabase
from .show import UnknownCommand
from .show import show as config_show
from .status import Status, status_counts

__all__ = [
    "Router",
    "RouterResult",
    "RouterEntry",
    "Verdict",
    "Flow",
    "SaKeys",
    "AcquireRequest",
    "RekeyRequest",
]

_U8 = np.uint8
_I32 = np.int32
_I64 = np.int64
ACQUIRE_RETRY_SECONDS = 10.0  # a pending ACQUIRE is not repeated for the same flow sooner
# router.acquires / router.rekey_requests keep the last REQUEST_HISTORY requests, and at
# most PENDING_LIMIT flows are remembered as waiting for SAs (memory stays bounded when no
# negotiator answers, e.g. a flood of per-host flows)
REQUEST_HISTORY = 1000
PENDING_LIMIT = 4096
IKE_PORTS = (500, 4500)
_MULTI_IN_ORDER = True  # one-call layers keep input order (False: sorted by SA first)
_log = logging.getLogger("ipsecfast.router")


class Verdict(IntEnum):
    BYPASS = 0
    PROTECT = 1
    DROP = 2


_TUNNEL = MODE_IDS["tunnel"]
_TRANSPORT = MODE_IDS["transport"]
# the drop reason of each ``spi_lookup`` kind that is dropped
_SPI_DROP = np.zeros(256, dtype=np.uint8)
_SPI_DROP[[SPI_FRAGMENT, SPI_OPTIONS, SPI_TRUNCATED, SPI_UNKNOWN]] = [
    Status.FRAGMENT, Status.IP_OPTIONS, Status.TRUNCATED, Status.UNKNOWN_SPI]


@cache
def _addr(text: str) -> int:
    """A dotted quad as an int (peers are looked up once per SA group)."""
    return int(ipaddress.IPv4Address(text))


# ---------------------------------------------------------------------------------------
# Results and requests


@dataclass(frozen=True)
class RouterResult:
    """Per-packet output of ``Router.outbound`` / ``inbound``, aligned with the input.

    ``packets``: protected -> the ESP / AH packet; bypassed -> the input unchanged;
    inbound decapsulated -> the inner packet; dropped -> length 0. ``verdict``: ``Verdict``
    codes; ``reason``: ``Status`` code of a drop (0 otherwise); ``entry``: index into
    ``router.entries`` (-1 none); ``sa``: id of the SA on the wire for the original
    packet's protection (outbound: the first layer applied; inbound: the last layer
    peeled), -1 none."""

    packets: PacketBatch
    verdict: npt.NDArray[np.uint8]
    reason: npt.NDArray[np.uint8]
    entry: npt.NDArray[np.int32]
    sa: npt.NDArray[np.int32]

    def __len__(self) -> int:
        return int(self.verdict.size)

    def summary(self) -> dict[str, Any]:
        """Counts by verdict, and drops by reason label."""
        counts = np.bincount(self.verdict, minlength=3)
        drops = status_counts(self.reason[self.verdict == Verdict.DROP])
        return {
            "packets": len(self),
            "bypass": int(counts[Verdict.BYPASS]),
            "protect": int(counts[Verdict.PROTECT]),
            "drop": int(counts[Verdict.DROP]),
            "drops": drops,
        }


@dataclass(frozen=True)
class Flow:
    """The flow an SA pair protects within its entry: the ACE (default scope) or, with
    ``per-host``, the host pair (outbound orientation: our side first)."""

    ace: int = -1
    source: int | None = None
    destination: int | None = None

    def scope(self, entry: int) -> Scope:
        if self.source is not None and self.destination is not None:
            return (entry, -1, self.source, self.destination)
        return (entry, self.ace, 0, 0)

    @classmethod
    def from_scope(cls, scope: Scope) -> Flow:
        """The flow of an SA pair's ``scope`` (``SaPair.scope``): the inverse of
        ``scope``."""
        if scope[1] < 0:
            return cls(-1, scope[2], scope[3])
        return cls(scope[1])


@dataclass(frozen=True)
class SaKeys:
    """SPI and keys of one SA handed to ``Router.install_sas``."""

    spi: int
    cipher_key: bytes = field(default=b"", repr=False)
    auth_key: bytes = field(default=b"", repr=False)


@dataclass(frozen=True)
class AcquireRequest:
    """An ACQUIRE: outbound traffic for an ``ipsec-isakmp`` entry that has no SA."""

    entry: int
    map_name: str
    seq: int
    peer: str | None
    peers: tuple[str, ...]
    flow: Flow
    ace: Ace | None
    interface: str
    local: str | None
    time: float


@dataclass(frozen=True)
class RekeyRequest:
    """A soft limit was reached (``reason``: "seconds", "kilobytes", or "sequence": the
    outbound sequence counter is at the soft fraction of its range)."""

    pair: int
    entry: int
    peer: str
    flow: Flow
    reason: str
    time: float


@dataclass(eq=False)
class RouterEntry:
    """One crypto map entry as the router evaluates it (``router.entries[i]``)."""

    index: int
    map_name: str
    seq: int  # the crypto map sequence number (of the dynamic reference, if expanded)
    config: CryptoMapEntry  # the crypto map entry, or the dynamic-map entry
    dynamic: bool  # from a dynamic map (a template: never initiates)
    acl: AccessList | None  # the configured list (hit counters), None if none / undefined
    spd: SpdList
    transform_set: TransformSet | None
    per_host: bool

    @property
    def kind(self) -> str:
        return "dynamic" if self.dynamic else self.config.kind

    @property
    def label(self) -> str:
        return self.config.label

    def first_permit(self) -> int:
        """Index of the first ``permit`` ACE (the flow of manual SAs), -1 if none."""
        if self.acl is None:
            return -1
        for i, ace in enumerate(self.acl.entries):
            if ace.action == "permit":
                return i
        return -1


@dataclass(eq=False)
class _Domain:
    """A part of the SAD: one interface's, or one shared by a ``local-address`` map."""

    id: int
    map_name: str
    interfaces: list[str]
    local: str | None
    offset: int  # router.entries index of the map's first entry
    spd: CryptoMapSpd

    @property
    def local_int(self) -> int:
        return int(ipaddress.IPv4Address(self.local)) if self.local else -1


# ---------------------------------------------------------------------------------------
# Batch helpers


_Piece = tuple[npt.NDArray[np.int64], PacketBatch]
_HDR_BYTES = 28


class _Hdr(NamedTuple):
    """The header fields the router reads (int64 arrays; ``valid``: bool)."""

    valid: npt.NDArray[np.bool_]
    ihl: npt.NDArray[np.int64]
    tos: npt.NDArray[np.int64]
    proto: npt.NDArray[np.int64]
    src: npt.NDArray[np.int64]
    dst: npt.NDArray[np.int64]
    sport: npt.NDArray[np.int64]
    dport: npt.NDArray[np.int64]
    mf: npt.NDArray[np.int64]
    frag_offset: npt.NDArray[np.int64]
    esp_spi: npt.NDArray[np.int64]  # -1 where the packet is too short
    ah_spi: npt.NDArray[np.int64]

    def take(self, sel: npt.NDArray[np.int64]) -> _Hdr:
        return _Hdr(*(a[sel] for a in self))  # type: ignore[arg-type]


class Prepared(NamedTuple):
    """What ``Router.prepare_outbound`` / ``prepare_inbound`` worked out for a batch, ahead
    of ``outbound`` / ``inbound`` (opaque)."""

    batch: PacketBatch
    made_with: Any  # the crypto map (SPD) or SPI table it was made with; None: nothing
    result: Any


def _classify_out(spd: CryptoMapSpd, batch: PacketBatch
                  ) -> tuple[npt.NDArray[np.int64], PacketBatch, Classification, _Fields]:
    """Outbound's first step: (positions of the IPv4 packets, those packets, their
    classification, their header fields), from one compiled pass."""
    cls, hdr = spd.lookup_with_headers(batch)
    v4 = (hdr[:, H_BYTE0] >> 4) == 4  # (other packets pass: not the crypto map's)
    if v4.all():
        idx, cur = np.arange(len(batch), dtype=_I64), batch
    else:
        idx = np.flatnonzero(v4)
        cur = _take(batch, idx)
        cls = Classification(cls.lists[idx], cls.entries[idx], cls.status[idx])
        hdr = hdr[idx]
    return idx, cur, cls, _Fields.of(hdr, cls.status)


class _Fields(NamedTuple):
    """The header fields outbound reads (int64 arrays; ``valid``: bool), as the
    classifier read them (``_Hdr`` without the fragment fields and SPIs)."""

    valid: npt.NDArray[np.bool_]
    ihl: npt.NDArray[np.int64]
    tos: npt.NDArray[np.int64]
    proto: npt.NDArray[np.int64]
    src: npt.NDArray[np.int64]
    dst: npt.NDArray[np.int64]
    sport: npt.NDArray[np.int64]
    dport: npt.NDArray[np.int64]

    @classmethod
    def of(cls, hdr: npt.NDArray[np.uint32], status: npt.NDArray[np.uint8]) -> _Fields:
        def col(c: int) -> npt.NDArray[np.int64]:
            return hdr[:, c].astype(_I64)

        return cls(status == 0, (col(H_BYTE0) & 0xF) * 4, col(H_TOS), col(H_PROTO),
                   col(H_SRC), col(H_DST), col(H_SPORT), col(H_DPORT))


class _OutLayer(NamedTuple):
    """The stateless part of an outbound layer (``Router._out_layer``)."""

    m: npt.NDArray[np.int64]  # the layer's packets a permit caught and no §Policy rule drops
    le: npt.NDArray[np.int32]  # their entry in the crypto map (local index)
    hits: list[tuple[AccessList, int, int]]  # access-list hits: (list, ACE seq, packets)
    entry_at: npt.NDArray[np.int64]  # batch positions of every packet a permit caught
    entry_of: npt.NDArray[np.int64]  # and their entry (router-wide index)
    drops: tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8]] | None  # (positions, reason)
    gkeys: list[list[int]]  # the SA scope of each group (entry, ACE[, src, dst])
    ginv: npt.NDArray[np.int64]  # each packet of ``m``'s group
    counts: npt.NDArray[np.int64]  # packets per group
    nbytes: list[int]  # input bytes per group


class _OutGroups(NamedTuple):
    """What an outbound layer needs of its SA pairs, per group (``Router._out_groups``)."""

    pairs: tuple[SaPair | None, ...]
    multi: bool  # every pair one SA without a kilobyte lifetime: one core call
    growth: npt.NDArray[np.int64]  # most bytes the pair adds (-1: no pair)
    sa: npt.NDArray[np.int64]  # the outermost outbound SA's id
    proto: npt.NDArray[np.int64]  # its IP protocol (50 / 51)
    peer: npt.NDArray[np.int64]  # the peer (-1: a host name / no pair)
    sas: list[SecurityAssociation]  # the SAs of the one-SA pairs
    sa_index: npt.NDArray[np.int32]  # each group's SA in ``sas`` (-1: none)
    transport: npt.NDArray[np.bool_]  # transport-mode pair
    any_transport: bool


class _InLayer(NamedTuple):
    """What an inbound layer reads of its SPI lookup alone (``_in_layer``)."""

    clear: npt.NDArray[np.int64]  # positions of the clear-text packets
    bad: npt.NDArray[np.int64]  # positions dropped by the lookup
    bad_reason: npt.NDArray[np.uint8]  # and why
    go: npt.NDArray[np.int64]  # positions with an SA
    present: list[int]  # the SA table rows used, in order (one group each)
    ginv: npt.NDArray[np.int64]  # each packet of ``go``'s group
    counts: npt.NDArray[np.int64]  # packets per group
    nbytes: list[int]  # input bytes per group


def _in_layer(kinds: npt.NDArray[np.uint8], slots: npt.NDArray[np.int32], ntable: int,
              lengths: npt.NDArray[np.int64]) -> _InLayer:
    """Group the packets of an SPI lookup (``spi_lookup``: kinds, table rows, over an SA
    table of ``ntable`` rows) by SA, numbered in table order."""
    reason = _SPI_DROP[kinds]
    bad = np.flatnonzero(reason)
    go = np.flatnonzero(kinds == SPI_OK)
    g_slot = slots if go.size == kinds.size else slots[go]
    used = np.zeros(ntable, dtype=bool)
    used[g_slot] = True
    present = np.flatnonzero(used)
    number = np.zeros(ntable, dtype=_I64)
    number[present] = np.arange(present.size, dtype=_I64)
    ginv = number[g_slot]
    counts = np.bincount(ginv, minlength=present.size)
    g_len = lengths if go.size == kinds.size else lengths[go]
    nbytes = np.bincount(ginv, weights=g_len, minlength=present.size)
    return _InLayer(np.flatnonzero(kinds == SPI_CLEAR), bad, reason[bad], go,
                    present.tolist(), ginv, counts, nbytes.astype(_I64).tolist())


class _InGroups(NamedTuple):
    """What an inbound layer needs of its SAs, per group (``Router._in_groups``)."""

    recs: tuple[SaRecord | None, ...]
    spd: Any  # the crypto map the selectors come from
    multi: bool  # every pair one tunnel-mode SA without a kilobyte lifetime: one core call
    sas: list[SecurityAssociation]  # the inbound SAs of the live groups
    sa_index: npt.NDArray[np.int32]  # each group's SA in ``sas`` (-1: none)
    selectors: npt.NDArray[np.uint32]  # one row of inner-flow ranges per SA of ``sas``
    entry: npt.NDArray[np.int64]  # the pair's crypto map entry (-1: none)
    sa: npt.NDArray[np.int64]  # the SA's id (-1: none)
    all_found: bool  # every group has a live SA


def _take(batch: PacketBatch, sel: npt.NDArray[np.int64]) -> PacketBatch:
    """``batch[sel]`` for valid positions ``sel``, without the constructor's O(n) check."""
    return PacketBatch._trusted(batch.buffer, batch.offsets[sel], batch.lengths[sel])


def _rows(batch: PacketBatch, nbytes: int) -> npt.NDArray[np.uint8]:
    """The first ``nbytes`` bytes of every packet as an (n, nbytes) array, bytes past a
    packet's end read as 0."""
    return batch.heads(nbytes)


def _header(batch: PacketBatch, nbytes: int = _HDR_BYTES,
            rows: npt.NDArray[np.uint8] | None = None) -> _Hdr:
    """Fields of every packet from its first ``nbytes`` bytes (the rules of
    ``PacketBatch.ipv4_fields``; ports only for TCP / UDP first fragments; SPIs -1 when
    the packet is too short or ``nbytes`` too small). ``rows``: ``_rows(batch, nbytes)``
    if the caller has it."""
    n = len(batch)
    lens = batch.lengths
    r = _rows(batch, nbytes) if rows is None else rows
    w16 = r[:, : nbytes & ~1].view(">u2")
    whole = n == 0 or int(lens.min()) >= nbytes  # no packet shorter than what is read

    def u16(i: int) -> npt.NDArray[np.int64]:
        return w16[:, i >> 1].astype(_I64)

    def u32(i: int) -> npt.NDArray[np.int64]:
        if i + 4 > nbytes:
            return np.full(n, -1, dtype=_I64)
        v = (u16(i) << 16) | w16[:, (i >> 1) + 1]
        return v if whole else np.asarray(np.where(lens >= i + 4, v, -1))

    b0 = r[:, 0]
    ihl = (b0 & 0xF).astype(_I64) * 4
    total = u16(2)
    # total >= ihl and total <= length: the packet holds its header
    valid = ((b0 >> 4) == 4) & (ihl >= 20) & (total >= ihl) & (total <= lens)
    fw = u16(6)
    frag = fw & 0x1FFF
    proto = r[:, 9].astype(_I64)
    ports = valid & (frag == 0) & ((proto == 6) | (proto == 17)) & (lens >= ihl + 4)
    plain = ihl == 20
    if nbytes >= 24:
        pp = ports & plain
        sport = np.where(pp, u16(20), 0)
        dport = np.where(pp, u16(22), 0)
    else:
        sport = np.zeros(n, dtype=_I64)
        dport = np.zeros(n, dtype=_I64)
    esp_spi = np.where(plain, u32(20), -1)
    ah_spi = np.where(plain, u32(24), -1) if nbytes >= 28 else np.full(n, -1, dtype=_I64)
    odd = np.nonzero(~plain & (ihl > 20))[0]
    if odd.size:  # options (rare): read at the real header length
        sub = _take(batch, odd)
        oihl = ihl[odd]
        sport[odd] = np.where(ports[odd], sub.u16_at(oihl, 0), 0)
        dport[odd] = np.where(ports[odd], sub.u16_at(oihl + 2, 0), 0)
        esp_spi[odd] = sub.u32_at(oihl, -1)
        ah_spi[odd] = sub.u32_at(oihl + 4, -1)
    return _Hdr(valid, ihl, r[:, 1].astype(_I64), proto, u32(12), u32(16), sport, dport,
                (fw >> 13) & 1, frag, esp_spi, ah_spi)


def _join(n: int, pieces: Sequence[tuple[npt.NDArray[np.int64], PacketBatch]]) -> PacketBatch:
    """One batch of ``n`` packets from pieces (positions, packets) in different buffers
    (a copy of every piece); later pieces win; positions in no piece are empty."""
    off = np.zeros(n, dtype=_I64)
    lens = np.zeros(n, dtype=_I64)
    bufs = []
    base = 0
    for idx, b in pieces:
        if idx.size == 0:
            continue
        bufs.append(b.buffer)
        off[idx] = b.offsets + base
        lens[idx] = b.lengths
        base += int(b.buffer.size)
    buf = np.concatenate(bufs) if bufs else np.zeros(0, dtype=_U8)
    return PacketBatch._trusted(buf, off, lens)


def _copy_into(out: npt.NDArray[np.uint8], base: int, batch: PacketBatch) -> PacketBatch:
    """The packets of ``batch`` copied back to back into ``out[base:]`` (room reserved
    by the caller); the batch over ``out`` that holds them."""
    n = len(batch)
    lens = batch.lengths
    rel = np.zeros(n, dtype=_I64)
    if n > 1:
        np.cumsum(lens[:-1], out=rel[1:])
    total = int(lens.sum())
    shift = batch.offsets - rel
    if total and bool((shift == shift[0]).all()):  # already back to back: one slice copy
        o = int(batch.offsets[0])
        out[base:base + total] = batch.buffer[o:o + total]
    elif total:
        out[base:base + total] = batch.buffer[np.repeat(shift, lens)
                                              + np.arange(total, dtype=_I64)]
    return PacketBatch._trusted(out, rel + base, lens.copy())


def _zero_slots(out: npt.NDArray[np.uint8], off: npt.NDArray[np.int64],
                sizes: npt.NDArray[np.int64]) -> None:
    """Zero slots no SA wrote (packets dropped before their SA call), so that a shared
    output buffer holds packets and zeros only, never stale heap bytes."""
    total = int(sizes.sum())
    if total:
        rel = np.zeros(sizes.size, dtype=_I64)
        np.cumsum(sizes[:-1], out=rel[1:])
        out[np.repeat(off - rel, sizes) + np.arange(total, dtype=_I64)] = 0


def _slots(sizes: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int64], int]:
    """Back-to-back slots of ``sizes`` bytes: (offsets, total)."""
    off = np.zeros(sizes.size, dtype=_I64)
    if sizes.size > 1:
        np.cumsum(sizes[:-1], out=off[1:])
    return off, int(off[-1] + sizes[-1]) if sizes.size else 0


_Stage = Callable[[PacketBatch, "npt.NDArray[np.int64] | None"], SaResult]


def _then(first: SaResult, stage: _Stage, out_off: npt.NDArray[np.int64] | None) -> SaResult:
    """Run ``stage`` on the packets that passed ``first`` (a failed packet keeps the first
    stage's status and length 0); ``out_off``: the slots of the shared output buffer the
    stage writes into (None: its own buffer)."""
    ok = first.status == 0
    if bool(ok.all()):
        return stage(first.packets, out_off)
    idx = np.nonzero(ok)[0]
    second = stage(_take(first.packets, idx), None if out_off is None else out_off[idx])
    status = first.status.copy()
    status[idx] = second.status
    n = len(status)
    if out_off is None:
        return SaResult(_join(n, [(idx, second.packets)]), status)
    off = out_off.copy()
    lens = np.zeros(n, dtype=_I64)
    off[idx] = second.packets.offsets
    lens[idx] = second.packets.lengths
    return SaResult(PacketBatch._trusted(second.packets.buffer, off, lens), status)


def _out(out: npt.NDArray[np.uint8], out_off: npt.NDArray[np.int64] | None
         ) -> dict[str, Any]:
    """Keyword arguments of an SA call: into ``out`` at ``out_off``, or its own buffer."""
    return {} if out_off is None else {"out": out, "out_offsets": out_off}


def _decap_mixed(sa: SecurityAssociation, batch: PacketBatch, out: npt.NDArray[np.uint8],
                 out_off: npt.NDArray[np.int64] | None) -> SaResult:
    """Decapsulate packets of an SA whose transform set says ``mode transport``: traffic
    between the peers came in transport mode, all other traffic in tunnel mode (the seed),
    and only the (encrypted) next header tells which. Decapsulate as transport, then turn
    next header 4 (IP-in-IP) into tunnel mode: check the inner IPv4 header and apply
    RFC 6040 §4.2 ECN decapsulation, as the core does for tunnel mode."""
    res, nhs = sa._decapsulate(batch, _TRANSPORT, **_out(out, out_off))
    tun = np.nonzero((res.status == 0) & (nhs == 4))[0]
    if tun.size == 0:
        return res
    buf = res.packets.buffer  # output of the core (our own buffer): ours to modify
    off = res.packets.offsets.copy()
    lens = res.packets.lengths.copy()
    status = res.status.copy()
    o = off[tun]
    avail = lens[tun] - (buf[o].astype(_I64) & 0xF) * 4
    io = o + (buf[o].astype(_I64) & 0xF) * 4
    safe = np.where(avail >= 20, io, o)
    b0 = buf[safe].astype(_I64)
    ihl = (b0 & 0xF) * 4
    tot = (buf[safe + 2].astype(_I64) << 8) | buf[safe + 3]
    good = (avail >= 20) & ((b0 >> 4) == 4) & (ihl >= 20) & (tot >= ihl) & (tot <= avail)
    status[tun[~good]] = Status.BAD_INNER_PACKET
    outer_ecn = buf[o + 1].astype(_I64) & 3
    inner_tos = buf[safe + 1].astype(_I64)
    ce = good & (outer_ecn == 3)
    drop = ce & ((inner_tos & 3) == 0)
    status[tun[drop]] = Status.ECN_DROP
    mark = np.nonzero(ce & np.isin(inner_tos & 3, (1, 2)))[0]
    if mark.size:
        p = safe[mark]
        old = (b0[mark] << 8) | inner_tos[mark]
        new = old | 3
        hc = (buf[p + 10].astype(_I64) << 8) | buf[p + 11]
        s = (~hc & 0xFFFF) + (~old & 0xFFFF) + new  # RFC 1624 eq. 3
        s = (s & 0xFFFF) + (s >> 16)
        s = (s & 0xFFFF) + (s >> 16)
        hc2 = ~s & 0xFFFF
        buf[p + 1] = (inner_tos[mark] | 3).astype(_U8)
        buf[p + 10] = (hc2 >> 8).astype(_U8)
        buf[p + 11] = (hc2 & 0xFF).astype(_U8)
    ok = good & ~drop
    off[tun[ok]] = io[ok]
    lens[tun[ok]] = tot[ok]
    lens[status != 0] = 0
    return SaResult(PacketBatch._trusted(buf, off, lens), status)


def _group_keys(*cols: npt.NDArray[np.int64]
                ) -> tuple[list[list[int]], npt.NDArray[np.int64]]:
    """Packets grouped by the key columns ``cols`` without reordering them: (key of each
    group, in key order; each packet's group number).

    The columns are packed into one int64; when the packed key is small (entry x ACE of a
    crypto map usually is) a lookup table numbers the groups in one pass, else
    ``np.unique``."""
    n = cols[0].size
    if n == 0:
        return [], np.zeros(0, dtype=_I64)
    lo = [int(c.min()) for c in cols]
    bits = [(int(c.max()) - x).bit_length() for c, x in zip(cols, lo, strict=True)]
    if sum(bits) > 62:
        uniq, inv = np.unique(np.stack(cols, axis=1), axis=0, return_inverse=True)
        return uniq.tolist(), inv.reshape(-1).astype(_I64, copy=False)
    packed = np.zeros(n, dtype=_I64)
    for c, x, b in zip(cols, lo, bits, strict=True):
        if b:
            packed = (packed << b) | (c - x)
    if sum(bits) <= 20:
        hist = np.bincount(packed)
        present = np.flatnonzero(hist)
        table = np.zeros(hist.size, dtype=_I64)
        table[present] = np.arange(present.size, dtype=_I64)
        inv = table[packed]
    else:
        present, inv = np.unique(packed, return_inverse=True)
        inv = inv.reshape(-1).astype(_I64, copy=False)
    keys = []
    rest = present.astype(_I64)
    for x, b in zip(reversed(lo), reversed(bits), strict=True):
        keys.append((rest & ((1 << b) - 1)) + x)
        rest = rest >> b
    return np.stack(keys[::-1], axis=1).tolist(), inv


def _sorted_by(group: npt.NDArray[np.int64], ngroups: int, pos: npt.NDArray[np.int64]
               ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(order, pos[order], group[order]): the packets grouped by ``group``, each group in
    input order (a radix sort when the groups fit 16 bits; nothing with one group)."""
    if ngroups <= 1:
        return np.arange(group.size, dtype=_I64), pos, group
    key = group.astype(np.uint16) if ngroups <= 1 << 16 else group
    order = np.argsort(key, kind="stable").astype(_I64, copy=False)
    return order, pos[order], group[order]


def _per_group(gsel: npt.NDArray[np.int64], ngroups: int, status: npt.NDArray[np.uint8],
               lengths: npt.NDArray[np.int64], nbytes: list[int] | None = None
               ) -> tuple[list[int], list[int],
                          Callable[[int], npt.NDArray[np.uint8] | None]]:
    """Per group of ``gsel``: packets with status 0, their input bytes, and a function
    giving the statuses of the group's failed packets (None when none failed).
    ``nbytes``: each group's input bytes, if known (used when no packet failed)."""
    ok = status == 0
    if nbytes is not None and len(nbytes) == ngroups and bool(ok.all()):
        return (np.bincount(gsel, minlength=ngroups).tolist(), nbytes, lambda g: None)
    if ngroups == 1:
        nok = [int(np.count_nonzero(ok))]
        nbytes = [int(lengths.sum()) if nok[0] == ok.size else int(lengths[ok].sum())]
    else:
        nok = np.bincount(gsel, weights=ok, minlength=ngroups).astype(_I64).tolist()
        nbytes = np.bincount(gsel, weights=np.where(ok, lengths, 0),
                             minlength=ngroups).astype(_I64).tolist()
    bad_g = gsel[~ok]
    if bad_g.size == 0:
        return nok, nbytes, lambda g: None
    bad_status = status[~ok]
    failed = set(bad_g.tolist())
    return nok, nbytes, lambda g: bad_status[bad_g == g] if g in failed else None


def _ip(a: int) -> str:
    return str(ipaddress.IPv4Address(a))


def _trim(history: list[Any]) -> None:
    """Keep the last ``REQUEST_HISTORY`` items."""
    if len(history) > REQUEST_HISTORY:
        del history[:len(history) - REQUEST_HISTORY]


def _peer_text(text: str) -> str:
    """A peer as the SAD holds it: a canonical IPv4 address, or a host name as given."""
    return str(ipaddress.IPv4Address(text)) if _is_ip(text) else text


def _is_ip(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------------------------------
# Router


def default_crypto_threads() -> int:
    """The CPUs this process may use, less one (left for the caller's own work, e.g. the
    pcap reader and writer threads of ``ipsecfast encrypt``), at least 1 and at most 4."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(cpus - 1, 4))


class Router:
    """One IOS device: interfaces, the crypto map set on each, and the SA database.

    Choices where IOS / the seed leave room:

    * Non-IPv4 packets (version nibble not 4) bypass the crypto map; IPv4 packets the
      classifier cannot read are dropped with its status (``bad-ip-header``, ``truncated``).
    * IKE itself (UDP 500 / 4500 to or from the local address) is never matched against
      the crypto map, as on IOS.
    * A static entry without ``match address``, with an undefined access list, or
      (``ipsec-isakmp``) without a peer is incomplete and ignored; a dynamic entry without
      ``match address`` is ignored, with an empty or undefined list it drops everything it
      sees (``no-acl``, both directions).
    * ``crypto_threads`` (default ``default_crypto_threads()``): a batch's packets of
      different SAs are encrypted / decrypted on up to this many threads, each SA's
      packets on one thread in their order, so every result is the one-thread result.
    * Nesting: an entry already applied to a packet is not applied again to its outer
      packet. ``result.entry`` / ``result.sa`` name the layer that protects the original
      packet (outbound: the first applied; inbound: the last peeled).
    * Inbound ESP / AH is looked up by the SPI of its outermost header; an AH+ESP pair is
      found by its AH SPI (bare ESP with the pair's ESP SPI is ``unknown-spi``).
    * Kilobyte lifetimes count the bytes each SA takes in (outbound: the packets to
      protect; inbound: the protected packets); a packet is processed while the count
      before it is below the limit. Both SAs of a pair expire together, at the first
      limit reached in either direction. A new pair for the same flow takes over
      outbound traffic; the old pair still accepts inbound traffic until it expires.
    * ACQUIRE for a flow is not repeated within ``ACQUIRE_RETRY_SECONDS`` of the last
      one (or until its SAs are installed / cleared). ``acquires`` and
      ``rekey_requests`` keep the last ``REQUEST_HISTORY`` requests; at most
      ``PENDING_LIMIT`` flows are remembered as pending (those past the retry time go
      first, then the oldest: such a flow may be asked for again sooner).
    * ``set security-association level per-host`` has no effect on ``ipsec-manual``
      entries (their SAs are for the one flow of the first permit).
    * Nested protection is only to another peer: a packet already protected for peer P
      is not protected for P again, and dynamic entries add no outer layer.
    * Transport vs tunnel of a ``mode transport`` transform set is decided per packet
      (transport only when the packet is between the peers' addresses); inbound, the
      decrypted next header (4 = IP-in-IP) tells which it was.
    * An SA pair whose sequence counter is exhausted is deleted; 90 % (``soft_lifetime``)
      of the counter raises a rekey request like the lifetimes do.
    """

    def __init__(
        self,
        config: Config,
        clock: Callable[[], float] | None = None,
        nesting_depth: int = 2,
        soft_lifetime: float = 0.9,
        crypto_threads: int | None = None,
    ) -> None:
        if not isinstance(config, Config):
            raise TypeError("Router takes a Config (parse_config(text))")
        if crypto_threads is None:
            crypto_threads = default_crypto_threads()
        if isinstance(crypto_threads, bool) or not 1 <= int(crypto_threads) <= 64:
            raise ValueError("crypto_threads must be 1..64")
        if isinstance(nesting_depth, bool) or not 1 <= int(nesting_depth) <= 8:
            raise ValueError("nesting_depth must be 1..8")
        if not 0.0 < float(soft_lifetime) <= 1.0:
            raise ValueError("soft_lifetime must be a fraction in (0, 1]")
        self.config = config
        self.clock: Callable[[], float] = clock if clock is not None else time.monotonic
        self.nesting_depth = int(nesting_depth)
        self.soft_lifetime = float(soft_lifetime)
        # a batch's packets of different SAs are encrypted / decrypted on up to this many
        # threads (each SA's packets on one thread, in order); 1: the calling thread only
        self.crypto_threads = int(crypto_threads)
        self.negotiator: Any = None
        self.sad = SecurityAssociationDatabase()
        self.entries: list[RouterEntry] = []
        self.acquires: list[AcquireRequest] = []
        self.rekey_requests: list[RekeyRequest] = []
        self.drops: dict[str, dict[str, dict[str, int]]] = {}
        self._pending: dict[tuple[int, Scope], float] = {}
        # last outbound sequence number of each manual SA (domain, protocol, SPI), kept
        # across `clear crypto sa` so a re-established manual SA never reuses an IV
        self._manual_seq: dict[tuple[int, str, int], int] = {}
        self._nest_peer_cache: dict[int, set[int]] = {}
        self._out_group_cache: dict[tuple[int, ...], _OutGroups] = {}
        self._in_group_cache: dict[tuple[int, ...], _InGroups] = {}
        self._next_event = float("inf")
        self._map_slices: dict[str, tuple[int, int]] = {}
        self._domains: list[_Domain] = []
        self._iface_domain: dict[str, _Domain] = {}
        # event listeners (on_sa_deleted / on_traffic_received): what a negotiator hooks
        self._deleted_listeners: list[Callable[[Router, SaPair, str], None]] = []
        self._received_listeners: list[Callable[[Router, Sequence[SaPair]], None]] = []
        self.listener_errors: list[Exception] = []
        self._build_entries()
        self._build_domains()
        bc = []
        for itf in config.interfaces.values():
            if itf.address and itf.mask:
                net = ipaddress.IPv4Network(f"{itf.address}/{itf.mask}", strict=False)
                if net.prefixlen < 31:
                    bc.append(int(net.broadcast_address))
        self._broadcasts = np.array(sorted(set(bc)), dtype=_I64)
        self._entry_peer = np.array(
            [int(ipaddress.IPv4Address(e.config.peers[0])) if e.config.peers
             and _is_ip(e.config.peers[0]) else -1 for e in self.entries] or [-1], dtype=_I64)
        self._nests = np.array([not e.dynamic and not e.spd.drop_all for e in self.entries]
                               or [False], dtype=bool)
        self._per_host = np.array([e.per_host for e in self.entries] or [False], dtype=bool)
        for dom in self._domains:
            self._install_manual(dom)

    # -- construction ----------------------------------------------------------------------
    def _build_entries(self) -> None:
        cfg = self.config
        for name, cmap in cfg.crypto_maps.items():
            start = len(self.entries)
            for ref in cmap.ordered():
                if ref.kind == "dynamic":
                    dyn = cfg.dynamic_maps.get(ref.dynamic_map or "")
                    for e in dyn.ordered() if dyn is not None else []:
                        self._add_entry(name, ref.seq, e, dynamic=True)
                else:
                    self._add_entry(name, ref.seq, ref, dynamic=False)
            self._map_slices[name] = (start, len(self.entries))

    def _add_entry(self, map_name: str, seq: int, e: CryptoMapEntry, dynamic: bool) -> None:
        cfg = self.config
        acl = cfg.access_lists.get(e.match_address) if e.match_address is not None else None
        # the first transform set that is defined (an undefined one cannot be proposed)
        ts = next((cfg.transform_sets[n] for n in e.transform_sets if n in cfg.transform_sets),
                  None)
        if dynamic:
            if e.match_address is None:
                spd = SpdList(None)  # "ignored during traffic filtering"
            elif acl is None or not any(a.action != "remark" for a in acl.entries):
                spd = SpdList(None, drop_all=True)  # "the router drops all packets"
            else:
                spd = SpdList(acl)
        else:
            complete = acl is not None and ts is not None and (e.is_manual or bool(e.peers))
            if not complete or acl is None:
                spd = SpdList(None)
            else:
                spd = SpdList(manual_acl(acl) if e.is_manual else acl)
        self.entries.append(RouterEntry(
            len(self.entries), map_name, seq, e, dynamic, acl, spd, ts,
            e.per_host and not e.is_manual))

    def _build_domains(self) -> None:
        cfg = self.config
        shared: dict[str, _Domain] = {}
        for itf in cfg.interfaces.values():
            name = itf.crypto_map
            if name is None or name not in cfg.crypto_maps:
                continue
            cmap = cfg.crypto_maps[name]
            if cmap.local_address is not None and name in shared:
                shared[name].interfaces.append(itf.name)
                self._iface_domain[itf.name] = shared[name]
                continue
            start, end = self._map_slices[name]
            dom = _Domain(len(self._domains), name, [itf.name],
                          cfg.local_address(name, itf.name), start,
                          CryptoMapSpd([e.spd for e in self.entries[start:end]]))
            self._domains.append(dom)
            self._iface_domain[itf.name] = dom
            if cmap.local_address is not None:
                shared[name] = dom

    # -- interfaces ------------------------------------------------------------------------
    def crypto_interfaces(self) -> list[str]:
        """Interfaces with a (defined) crypto map, in configuration order."""
        return list(self._iface_domain)

    def default_interface(self) -> str:
        """The only interface with a crypto map; ValueError naming the candidates if there
        are several or none."""
        names = self.crypto_interfaces()
        if len(names) == 1:
            return names[0]
        if not names:
            raise ValueError("no interface has a crypto map (interface X / crypto map NAME)")
        raise ValueError(f"several interfaces have a crypto map: {', '.join(names)}; "
                         "choose one")

    def _interface(self, ifname: str) -> str:
        name = canonical_interface_name(ifname) or ifname
        if name not in self.config.interfaces:
            known = ", ".join(self.config.interfaces) or "none"
            raise ValueError(f"no interface {ifname!r} in the configuration (interfaces: {known})")
        return name

    def local_address(self, ifname: str) -> str | None:
        dom = self._iface_domain.get(self._interface(ifname))
        return dom.local if dom is not None else None

    # -- lifetimes -------------------------------------------------------------------------
    def _tick(self) -> float:
        now = float(self.clock())
        if now >= self._next_event:
            self._check_lifetimes(now)
        return now

    def _check_lifetimes(self, now: float) -> None:
        nxt = float("inf")
        # pairs a rekey installs during the loop schedule themselves through _schedule
        self._next_event = float("inf")
        for pair in list(self.sad):
            if pair.lifetime_seconds is None or not pair.alive:
                continue
            age = now - pair.created
            soft_at = self.soft_lifetime * pair.lifetime_seconds
            # the soft limit first: the clock may have jumped past both limits at once
            if not pair.soft_fired and age >= soft_at:
                self._soft(pair, "seconds", now)
            if age >= pair.lifetime_seconds:
                self._expire(pair)
                continue
            if not pair.soft_fired:
                nxt = min(nxt, pair.created + soft_at)
            nxt = min(nxt, pair.created + pair.lifetime_seconds)
        self._next_event = min(self._next_event, nxt)

    def _schedule(self, pair: SaPair) -> None:
        if pair.lifetime_seconds is not None:
            soft = pair.created + self.soft_lifetime * pair.lifetime_seconds
            self._next_event = min(self._next_event, soft)

    def _expire(self, pair: SaPair, reason: str = "expired") -> None:
        self._delete(pair, reason)

    def _delete(self, pair: SaPair, reason: str) -> None:
        """Remove ``pair`` (keys wiped) and tell the ``on_sa_deleted`` listeners."""
        if not pair.alive or self.sad.pairs.get(pair.id) is not pair:
            return
        self.sad.remove(pair)
        self._call_listeners(self._deleted_listeners, self, pair, reason)

    def _call_listeners(self, listeners: list[Callable[..., None]], *args: Any) -> None:
        """Call every listener. One that raises does not stop the others, nor the
        router's own work (deleting the other expired SAs, the batch in progress): the
        error is logged and kept in ``listener_errors`` (the last 100)."""
        for listener in list(listeners):
            try:
                listener(*args)
            except Exception as err:  # a listener bug must not corrupt the router's state
                _log.exception("ipsecfast router listener %r failed", listener)
                self.listener_errors.append(err)
                del self.listener_errors[:-100]

    def _soft(self, pair: SaPair, reason: str, now: float) -> None:
        pair.soft_fired = True
        if not pair.rekey:
            return
        req = RekeyRequest(pair.id, pair.entry, pair.peer, self._flow_of(pair.scope),
                           reason, now)
        self.rekey_requests.append(req)
        _trim(self.rekey_requests)
        rekey = getattr(self.negotiator, "rekey", None)
        if rekey is not None:
            rekey(self, req)

    def _volume(self, pair: SaPair, direction: str, now: float) -> None:
        if pair.lifetime_kilobytes is None or not pair.alive:
            return
        limit = pair.lifetime_kilobytes * 1024
        used = max(pair.bytes_in, pair.bytes_out)
        # the soft limit first: one batch may cross both, and the rekey must still be asked
        if not pair.soft_fired and used >= self.soft_lifetime * limit:
            self._soft(pair, "kilobytes", now)
        if used >= limit:
            self._expire(pair)

    @staticmethod
    def _flow_of(scope: Scope) -> Flow:
        return Flow.from_scope(scope)

    # -- SA installation -------------------------------------------------------------------
    def _install_manual(self, dom: _Domain) -> None:
        start, end = self._map_slices[dom.map_name]
        for re_ in self.entries[start:end]:
            self._install_manual_entry(dom, re_)

    def _install_manual_entry(self, dom: _Domain, re_: RouterEntry) -> SaPair | None:
        e = re_.config
        ts = re_.transform_set
        if not e.is_manual or re_.dynamic or ts is None or dom.local is None:
            return None
        ace = re_.first_permit()
        if ace < 0 or re_.spd.acl is None:
            return None
        keys: dict[str, dict[str, SaKeys]] = {"inbound": {}, "outbound": {}}
        for proto in ("esp", "ah"):
            if (proto == "esp" and not ts.transforms.has_esp) or (
                    proto == "ah" and not ts.transforms.has_ah):
                continue
            for direction in ("inbound", "outbound"):
                sk = e.session_key(direction, proto)  # type: ignore[arg-type]
                if sk is None:
                    return None  # incomplete: the entry has no SA, its traffic drops (no-sa)
                keys[direction][proto] = SaKeys(sk.spi, sk.cipher or b"", sk.authenticator or b"")
        try:
            return self._install(dom, re_, e.peers[0], ts, keys["inbound"], keys["outbound"],
                                 (re_.index, ace, 0, 0), manual=True, lifetimes=None,
                                 replay_window=0)
        except ValueError as err:
            # e.g. the same inbound SPI in two manual entries: name the configuration line
            sk = next((e.session_key("inbound", p) for p in ("esp", "ah")  # type: ignore[arg-type]
                       if e.session_key("inbound", p) is not None), None)  # type: ignore[arg-type]
            raise ConfigError(f"{re_.label}: {err}", lineno=sk.lineno if sk else e.lineno,
                              line=sk.line if sk else e.line,
                              source=self.config.source) from None

    def _install(
        self,
        dom: _Domain,
        re_: RouterEntry,
        peer: str,
        ts: TransformSet,
        inbound: Mapping[str, SaKeys],
        outbound: Mapping[str, SaKeys],
        scope: Scope,
        manual: bool,
        lifetimes: tuple[int, int] | None,
        replay_window: int,
        rekey: bool | None = None,
    ) -> SaPair:
        assert dom.local is not None
        t = ts.transforms
        protos = [p for p, has in (("esp", t.has_esp), ("ah", t.has_ah)) if has]
        for direction, keys in (("inbound", inbound), ("outbound", outbound)):
            missing = [p for p in protos if p not in keys]
            if missing:
                raise ValueError(f"{direction} keys for {', '.join(missing)} are missing "
                                 f"(transform set {ts.name}: {t})")
        records: dict[str, list[SaRecord]] = {"inbound": [], "outbound": []}
        made: list[SecurityAssociation] = []
        try:
            for direction, keys in (("inbound", inbound), ("outbound", outbound)):
                for proto in protos:
                    k = keys[proto]
                    seq = 0
                    iv_base = None
                    if manual and direction == "outbound":
                        seq = self._manual_seq.get((dom.id, proto, k.spi), 0)
                        if proto == "esp" and t.esp_cipher is not None \
                                and t.esp_cipher.iv_length == 8:
                            # Counter IVs under a static key: start at a random point so
                            # that another run with the same configuration does not
                            # repeat this run's IVs (2^62 room; RFC 4106 §3.1). `check`
                            # still reports manual counter-mode transforms as an error.
                            iv_base = secrets.randbits(62)
                    sa = SecurityAssociation(
                        proto, k.spi, t,  # type: ignore[arg-type]
                        cipher_key=k.cipher_key if proto == "esp" else None,
                        auth_key=k.auth_key, mode="tunnel", local=dom.local, peer=peer,
                        replay_window=replay_window, seq=seq, _iv_counter=iv_base)
                    made.append(sa)
                    records[direction].append(SaRecord(
                        self.sad.new_sa_id(), k.spi, proto, direction,  # type: ignore[arg-type]
                        dom.local, peer, t, ts.mode, re_.index,
                        replay_window,
                        bytearray(k.cipher_key if proto == "esp" else b""),
                        bytearray(k.auth_key), sa))
        except Exception:
            for sa in made:
                sa.close()
            raise
        pair = SaPair(
            self.sad.new_pair_id(), dom.id, re_.index, peer, dom.local, scope,
            records["inbound"], records["outbound"], manual, float(self.clock()),
            lifetimes[0] if lifetimes else None, lifetimes[1] if lifetimes else None,
            rekey=(not manual and not re_.dynamic and re_.config.kind == "ipsec-isakmp")
            if rekey is None else (bool(rekey) and not manual))
        try:
            self.sad.add(pair)
        except ValueError:
            for r in pair.inbound + pair.outbound:
                r.wipe()
            raise
        self._pending.pop((dom.id, scope), None)
        self._schedule(pair)
        return pair

    def install_sas(
        self,
        entry: int,
        peer: str,
        inbound: Mapping[str, SaKeys],
        outbound: Mapping[str, SaKeys],
        *,
        flow: Flow | None = None,
        interface: str | None = None,
        transform_set: str | None = None,
        lifetime_seconds: int | None = None,
        lifetime_kilobytes: int | None = None,
        replay_window: int | None = None,
        rekey: bool | None = None,
    ) -> SaPair:
        """Install a negotiated SA pair (the IKE side calls this).

        ``entry``: index into ``router.entries``; ``inbound`` / ``outbound``: ``SaKeys``
        by protocol (``"esp"``, ``"ah"``: what the transform set needs); ``flow``: the
        ACE or host pair (default: the entry's first permit ACE, or the flow of an
        ``AcquireRequest``); ``interface``: needed when the entry's map is on several
        interfaces with separate SADs; ``transform_set``: the negotiated set (default the
        entry's first); lifetimes default to the entry's, else the global ones; the
        anti-replay window to ``crypto ipsec security-association replay`` (0 disabled);
        ``rekey``: whether the pair's soft limit raises a rekey request (default: for a
        static ``ipsec-isakmp`` entry yes, for a dynamic-map entry no; an IKE passes True
        for the pairs of a temporary crypto map entry, which the seed has "requesting new
        security associations if the current ones are expiring").
        Returns the ``SaPair``; its SAs are in ``router.sad``; it becomes the outbound
        pair of its flow."""
        if not 0 <= entry < len(self.entries):
            raise ValueError(f"entry must be 0..{len(self.entries) - 1}")
        re_ = self.entries[entry]
        if re_.config.is_manual:
            raise ValueError(f"{re_.label} is ipsec-manual: its SAs come from the session keys")
        doms = [d for d in self._domains if d.map_name == re_.map_name]
        if interface is not None:
            name = self._interface(interface)
            doms = [d for d in doms if name in d.interfaces]
        if len(doms) != 1:
            where = ", ".join(i for d in doms for i in d.interfaces) or "no interface"
            raise ValueError(f"crypto map {re_.map_name} is used by {where}; "
                             "name the interface")
        dom = doms[0]
        if dom.local is None:
            raise ValueError(f"interface {dom.interfaces[0]} has no IP address")
        names = re_.config.transform_sets
        tsname = transform_set if transform_set is not None else (names[0] if names else None)
        ts = self.config.transform_sets.get(tsname or "")
        if ts is None or (names and tsname not in names):
            raise ValueError(f"transform set {tsname!r} is not one of {re_.label}'s "
                             f"({', '.join(names) or 'none'})")
        if flow is None:
            flow = Flow(re_.first_permit())
        hosts = flow.source is not None and flow.destination is not None
        if hosts != re_.per_host:
            raise ValueError(f"{re_.label} has "
                             f"{'per-host' if re_.per_host else 'per-ACE'} SAs: give a flow "
                             f"with {'source and destination hosts' if re_.per_host else 'an ACE'}")
        acl = re_.spd.acl
        if not hosts and (acl is None or not 0 <= flow.ace < len(acl.entries)
                          or acl.entries[flow.ace].action != "permit"):
            raise ValueError(f"flow ACE {flow.ace} is not a permit of {re_.label}'s access list")
        scope = flow.scope(entry)
        secs, kb = self.config.lifetime(re_.config)
        window = (self.config.ipsec.effective_replay_window if replay_window is None
                  else int(replay_window))
        pair = self._install(
            dom, re_, str(ipaddress.IPv4Address(peer)), ts, inbound, outbound, scope,
            manual=False,
            lifetimes=(lifetime_seconds or secs, lifetime_kilobytes or kb),
            replay_window=window, rekey=rekey)
        return pair

    def close(self) -> None:
        """Delete every SA, manual ones included, and wipe the keys (when done with the
        router; ``with Router(cfg) as r:`` does it on exit)."""
        for pair in list(self.sad):
            self._delete(pair, "closed")

    def __enter__(self) -> Router:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- clear -----------------------------------------------------------------------------
    def clear_crypto_sa(
        self,
        peer: str | None = None,
        map: str | None = None,  # noqa: A002 - IOS's keyword
        entry: tuple[str, str, int] | None = None,
    ) -> int:
        """``clear crypto sa [peer A | map M | entry DST PROTO SPI]``: delete the matching
        SA pairs (keys wiped); "Manually established SAs are reestablished immediately"
        (the seed). Returns the number of pairs deleted."""
        pairs = list(self.sad)
        if peer is not None:
            p = _peer_text(peer)
            pairs = [x for x in pairs if x.peer == p]
        if map is not None:
            pairs = [x for x in pairs if self.entries[x.entry].map_name == map]
        if entry is not None:
            dst, proto, spi = entry
            proto = proto.lower()
            if proto not in ("esp", "ah"):
                raise ValueError("entry protocol must be 'esp' or 'ah'")
            found = self.sad.find(str(ipaddress.IPv4Address(dst)), proto, int(spi))
            pairs = [x for x in pairs if x in found]
        for pair in pairs:
            if pair.manual:
                # Manual keys do not change when the SA is re-established: continue its
                # sequence number (and so its counter IVs) so no IV repeats under the key.
                for r in pair.outbound:
                    self._manual_seq[(pair.domain, r.protocol, r.spi)] = r.sa.seq
            self._delete(pair, "cleared")
        self._pending.clear()
        for pair in pairs:
            if pair.manual:
                self._install_manual_entry(self._domains[pair.domain], self.entries[pair.entry])
        return len(pairs)

    # -- hooks for a negotiator (IKE) --------------------------------------------------------
    def on_sa_deleted(self, callback: Callable[[Router, SaPair, str], None]) -> None:
        """Call ``callback(router, pair, reason)`` each time an SA pair is deleted, right
        after its removal from ``router.sad`` (keys already wiped, ``pair.alive`` False).
        ``reason``: ``"expired"`` (a lifetime in seconds or kilobytes, or the sequence
        counter, ran out: when the router's lifetime check runs, i.e. at the next
        ``outbound`` / ``inbound`` / ``show`` / ``check_lifetimes`` after the limit),
        ``"cleared"`` (``clear_crypto_sa``) or ``"closed"`` (``close``). It may run inside
        ``outbound`` / ``inbound``. An exception it raises is logged and kept in
        ``router.listener_errors``: the other listeners still run, and the router goes on
        deleting what has expired."""
        self._deleted_listeners.append(callback)

    def on_traffic_received(self, callback: Callable[[Router, Sequence[SaPair]], None]
                            ) -> None:
        """Call ``callback(router, pairs)`` from ``inbound``, once per layer of
        decapsulation of each call (never per packet), with the SA pairs through which
        at least one packet arrived intact (authenticated, decrypted and inside the
        pair's flow), each pair once, ordered by the batch position of each pair's last
        intact packet (the pair heard from last comes last). This is "the last peer that
        the router heard from (received either traffic ...)" of the seed's load sharing;
        ``select_outbound`` acts on it. An exception it raises is logged and kept in
        ``router.listener_errors``; the batch goes on."""
        self._received_listeners.append(callback)

    def remove_listener(self, callback: Callable[..., None]) -> None:
        """Stop calling ``callback`` (registered with ``on_sa_deleted`` or
        ``on_traffic_received``)."""
        for listeners in (self._deleted_listeners, self._received_listeners):
            while callback in listeners:
                listeners.remove(callback)

    def check_lifetimes(self) -> None:
        """Run the lifetime check now (``outbound``, ``inbound`` and ``show`` run it on
        their own): soft limits reached raise rekey requests, pairs past a hard limit
        are deleted (``on_sa_deleted`` listeners are told)."""
        self._tick()

    def select_outbound(self, pair: SaPair) -> None:
        """Make the installed ``pair`` the outbound pair of its flow (its entry and ACE,
        or host pair): the flow's traffic goes to ``pair.peer`` from the next packet on.
        The pair the flow used until now stays for inbound traffic until it expires.
        Load sharing uses it for the peer last heard from. ValueError if ``pair`` is not
        a live pair of this router."""
        if not pair.alive or self.sad.pairs.get(pair.id) is not pair:
            raise ValueError(f"SA pair {pair.id} is not installed in this router")
        self.sad.set_outbound(pair)

    def set_entry_flows(self, entry: int, acl: AccessList | None) -> None:
        """Give the dynamic-map entry ``router.entries[entry]`` the access list ``acl``
        for traffic filtering (``None``: none; such an entry "is ignored during traffic
        filtering", the seed) and recompile the SPD of every interface that uses its
        crypto map set. ``entry.acl`` (hit counters, ``show``) becomes ``acl`` too.

        For an IKE that installs temporary crypto map entries from a template without
        ``match address`` ("the router performs normal processing, using this temporary
        crypto map entry as a normal entry"). SA pairs name their flow by ACE index
        (``Flow.ace``): keep the permits of live pairs at their positions. ValueError
        for an entry that is not from a dynamic map (static and manual entries take
        their flows from the configuration)."""
        if not 0 <= entry < len(self.entries):
            raise ValueError(f"entry must be 0..{len(self.entries) - 1}")
        re_ = self.entries[entry]
        if not re_.dynamic:
            raise ValueError(f"{re_.label} is not a dynamic-map entry: its flows come from "
                             "its access list")
        re_.spd = SpdList(acl)
        re_.acl = acl
        start, end = self._map_slices[re_.map_name]
        for dom in self._domains:
            if dom.map_name == re_.map_name:
                dom.spd = CryptoMapSpd([e.spd for e in self.entries[start:end]])

    # -- outbound --------------------------------------------------------------------------
    def _start(self, ifname: str, batch: PacketBatch) -> tuple[str, _Domain | None, _State]:
        if not isinstance(batch, PacketBatch):
            raise TypeError("outbound / inbound take a PacketBatch")
        name = self._interface(ifname)
        return name, self._iface_domain.get(name), _State(len(batch))

    # -- preparation (any thread) ------------------------------------------------------------
    def prepare_outbound(self, ifname: str, batch: PacketBatch) -> Prepared:
        """The part of ``outbound(ifname, batch)`` that reads only the packets and the
        crypto map: classification, header fields, and the first layer's policy work
        (``_out_layer``: §Policy drops, ACL hits to count, SA scopes). It changes no
        state (the hits are counted when ``outbound`` uses the result), so another
        thread may run it while this router works on an earlier batch (``ipsecfast
        encrypt`` does so on its reader thread); pass the result to ``outbound`` as
        ``prepared``. It is used only if the crypto map is still the one it was made
        with, else ``outbound`` classifies again."""
        dom = self._iface_domain.get(self._interface(ifname))
        if dom is None or not isinstance(batch, PacketBatch) or len(batch) == 0:
            return Prepared(batch, None, None)
        spd = dom.spd
        idx, cur, cls, f = _classify_out(spd, batch)
        return Prepared(batch, spd, (idx, cur, cls, f,
                                     self._out_layer(dom, idx, cur, cls.lists, cls.entries,
                                                     cls.status != 0, f, True)))

    def prepare_inbound(self, ifname: str, batch: PacketBatch) -> Prepared:
        """As ``prepare_outbound``, for ``inbound``: the SPI lookup of every packet and
        the grouping by SA (``_in_layer``), made with the SA database as it is now
        (``inbound`` uses it only if no SA was added or deleted since)."""
        dom = self._iface_domain.get(self._interface(ifname))
        if dom is None or not isinstance(batch, PacketBatch) or len(batch) == 0:
            return Prepared(batch, None, None)
        local = dom.local_int
        table = self.sad.cached_inbound_table(dom.id, local)
        if table is None:  # (building it reads the SAD: left to the router's own thread)
            return Prepared(batch, None, None)
        kinds, slots = spi_lookup(batch, local, table[0])
        return Prepared(batch, table, (kinds, slots,
                                       _in_layer(kinds, slots, len(table[1]), batch.lengths)))

    def outbound(self, ifname: str, batch: PacketBatch, *,
                 prepared: Prepared | None = None) -> RouterResult:
        """Apply the interface's crypto map to packets leaving through ``ifname``
        (``prepared``: ``prepare_outbound(ifname, batch)``, made ahead)."""
        name, dom, st = self._start(ifname, batch)
        now = self._tick()
        if dom is None or len(batch) == 0:
            return st.result(batch, [], name, self, "send")
        final: list[_Piece] = []
        spare: tuple[npt.NDArray[np.uint8], int] | None = None
        # one compiled pass classifies the packets and reads the header fields used below;
        # the first layer's policy work reads only them and the crypto map (made ahead
        # with ``prepared``, on another thread)
        if (prepared is not None and prepared.batch is batch and prepared.made_with is dom.spd
                and prepared.result is not None):
            idx, cur, cls, f, lay = prepared.result
        else:
            idx, cur, cls, f = _classify_out(dom.spd, batch)
            lay = self._out_layer(dom, idx, cur, cls.lists, cls.entries, cls.status != 0, f,
                                  True)
        lists, aces, bad = cls.lists, cls.entries, cls.status != 0
        st.drop(idx[bad], cls.status[bad])
        applied: npt.NDArray[np.int32] | None = None
        for depth in range(self.nesting_depth):
            if depth:
                lay = self._out_layer(dom, idx, cur, lists, aces, bad, f, False)
            if lay is None:
                break
            for acl, seq, c in lay.hits:
                acl.count(seq, c)
            if depth == 0:
                st.entry[lay.entry_at if lay.entry_at.size < len(batch) else ...] = lay.entry_of
            if lay.drops is not None:
                st.drop(*lay.drops)
            m, le, gkeys, ginv = lay.m, lay.le, lay.gkeys, lay.ginv
            pairs: list[SaPair | None] = []
            for key in gkeys:
                scope: Scope = (key[0], key[1], key[2], key[3]) if len(key) == 4 else (
                    key[0], key[1], 0, 0)
                pair = self.sad.lookup_outbound(dom.id, scope)
                if pair is None:
                    pair = self._acquire(dom, scope, now, name)
                pairs.append(pair)
            groups = self._out_groups(pairs)
            counts = lay.counts
            # Every pair one SA without a kilobyte lifetime (the usual case): one core call
            # for the layer over the packets in input order (the output buffer is then in
            # input order too, which the rebuild of the capture reads faster). Else the
            # packets are sorted by pair (stable: each SA numbers its packets in their
            # order) and each pair gets its own calls.
            multi = groups.multi
            if multi and _MULTI_IN_ORDER:
                order, sm, gsel = np.arange(m.size, dtype=_I64), m, ginv
            else:
                order, sm, gsel = _sorted_by(ginv, len(pairs), m)
            # (the usual first layer: every packet of the batch, in order)
            whole = depth == 0 and sm is m and m.size == len(batch)
            bounds = [0, *np.cumsum(counts).tolist()]
            # One output buffer for every SA of the layer: each packet gets a slot of its
            # length + its SA's growth; the SAs write their packets straight into it.
            s_len = cur.lengths if whole else cur.lengths[sm]
            sizes = s_len + groups.growth[gsel]
            sizes[sizes < s_len] = 0  # no SA: nothing written
            slot, total = _slots(sizes)
            room = 0
            if depth == 0 and not whole:  # and room for the bypassed packets (no join then)
                byp = st.verdict == Verdict.BYPASS
                byp[idx[sm]] = False
                room = int(batch.lengths[byp].sum())
            out = np.empty(total + room, dtype=_U8)
            if depth == 0:
                spare = (out, total)
            s_cur = cur if whole else PacketBatch._trusted(cur.buffer, cur.offsets[sm], s_len)
            g_sa, g_proto, g_peer = groups.sa, groups.proto, groups.peer
            if multi:
                s_status, s_olen = self._encap_multi(groups, gsel, dom, s_cur, f, sm, now, out,
                                                     slot, lay.nbytes if depth == 0 else None)
            else:
                s_status = np.zeros(sm.size, dtype=_U8)
                s_olen = np.zeros(sm.size, dtype=_I64)
                for g, pair in enumerate(pairs):
                    a, b = bounds[g], bounds[g + 1]
                    if pair is None:
                        s_status[a:b] = Status.NO_SA
                        continue
                    sub = PacketBatch._trusted(s_cur.buffer, s_cur.offsets[a:b], s_len[a:b])
                    s_status[a:b], s_olen[a:b] = self._encap_pair(
                        pair, dom, sub, f, sm[a:b], now, out, slot[a:b])
            gi = idx if whole else idx[sm]
            ok = s_status == 0
            if ok.all():
                okp: npt.NDArray[np.int64] | slice = slice(None)
                gpos = gi
            else:
                whole = False
                st.drop(gi[~ok], s_status[~ok])
                failed = np.nonzero(~ok)[0]  # (some never reached an SA: clear their slots)
                _zero_slots(out, slot[failed], sizes[failed])
                okp = np.nonzero(ok)[0]
                gpos = gi[okp]
                if gpos.size == 0:
                    break
            at = ... if whole else gpos  # (every packet, in order)
            st.verdict[at] = Verdict.PROTECT
            if depth == 0:
                st.sa[at] = g_sa[gsel][okp]
            layer = PacketBatch._trusted(out, slot[okp], s_olen[okp])
            odst = g_peer[gsel][okp]
            layer_peers = set(g_peer[np.bincount(gsel[okp], minlength=len(pairs)) > 0]
                              .tolist())
            if depth + 1 == self.nesting_depth or (
                    len(layer_peers) == 1 and self._nest_peers(dom) <= layer_peers):
                # (no entry could add a layer: every one that might is for the same peer)
                final.append((gpos, layer))
                if whole:  # the result is this layer as it is
                    return st.result(batch, final, name, self, "send", spare, whole=True)
                break
            # Evaluate the protected packets against the crypto map again (nesting), from
            # their outer headers: local -> peer, ESP / AH, the inner TOS copied.
            if applied is None:
                applied = np.full((len(batch), self.nesting_depth), -1, dtype=_I32)
            applied[gpos, depth] = le[order][okp]
            oproto = g_proto[gsel][okp]
            otos = f.tos[sm][okp]
            osrc = np.full(gpos.size, dom.local_int, dtype=_I64)
            nl, na = dom.spd.lookup_fields(oproto, osrc, odst, otos)
            ge_all = np.maximum(nl, 0).astype(_I64) + dom.offset
            # nesting is to another peer (the seed's Figure 1): a packet already protected
            # for peer P is not protected for P again, nor twice by one entry; dynamic
            # entries (templates, never initiate) and drop-all entries add no layer
            again = (nl >= 0) & (odst != self._entry_peer[ge_all]) & self._nests[ge_all]
            again &= ~(applied[gpos] == nl[:, None]).any(axis=1)
            if not again.any():
                final.append((gpos, layer))
                break
            stay = np.nonzero(~again)[0]
            final.append((gpos[stay], _take(layer, stay)))
            nxt = np.nonzero(again)[0]
            cur = _take(layer, nxt)
            idx = gpos[nxt]
            lists, aces = nl[nxt], na[nxt]
            bad = np.zeros(nxt.size, dtype=bool)
            f = _header(cur, 24)
        return st.result(batch, final, name, self, "send", spare)

    def _nest_peers(self, dom: _Domain) -> set[int]:
        """Peers (-1: a host name) of the entries that may add a nested layer."""
        cached = self._nest_peer_cache.get(dom.id)
        if cached is None:
            start, end = self._map_slices[dom.map_name]
            cached = {int(self._entry_peer[i]) for i in range(start, end) if self._nests[i]}
            self._nest_peer_cache[dom.id] = cached
        return cached

    def _ike(self, f: Any, dom: _Domain) -> npt.NDArray[np.bool_]:
        local = dom.local_int
        out = f.valid & (f.proto == 17) & ((f.src == local) | (f.dst == local))
        cand = np.nonzero(out)[0]  # (few: UDP to or from this router)
        if cand.size:
            out[cand] = np.isin(f.sport[cand], IKE_PORTS) | np.isin(f.dport[cand], IKE_PORTS)
        return np.asarray(out)

    def _policy_drops(self, dom: _Domain, le: npt.NDArray[np.int32], f: Any,
                      m: npt.NDArray[np.int64]) -> npt.NDArray[np.uint8]:
        """Drop reasons for packets a permit caught: no-acl, multicast / broadcast
        (DESIGN.md §Policy 9), IPv4 options; 0 where the packet goes on."""
        reason = np.zeros(m.size, dtype=_U8)
        if dom.spd.drop_all.any():
            reason[dom.spd.drop_all[le]] = Status.NO_ACL
        mc, bc = group_destinations(f.dst[m], self._broadcasts)
        reason[(reason == 0) & mc] = Status.MULTICAST
        reason[(reason == 0) & bc] = Status.BROADCAST
        reason[(reason == 0) & (f.ihl[m] > 20)] = Status.IP_OPTIONS
        return reason

    def _out_layer(self, dom: _Domain, idx: npt.NDArray[np.int64], cur: PacketBatch,
                   lists: npt.NDArray[np.int32], aces: npt.NDArray[np.int32],
                   bad: npt.NDArray[np.bool_], f: _Hdr | _Fields, first: bool
                   ) -> _OutLayer | None:
        """The part of an outbound layer that reads only the packets ``cur`` (at batch
        positions ``idx``; ``bad``: failed classification), their first-match results
        and the crypto map: which packets a permit caught, the drops of DESIGN.md §Policy,
        the ACL hits, the SA scopes. No state is read or changed (``prepare_outbound``
        runs it on another thread). None when no packet matched a permit."""
        matched = (lists >= 0) & ~bad
        if first:
            matched &= ~self._ike(f, dom)
        m = np.nonzero(matched)[0]
        if m.size == 0:
            return None
        le = lists[m]
        ge = le.astype(_I64) + dom.offset
        ace = aces[m].astype(_I64)
        hits = self._hits(ge, ace)
        entry_at, entry_of = idx[m], ge
        drops = None
        reason = self._policy_drops(dom, le, f, m)
        keep = reason == 0
        if not keep.all():
            drops = (idx[m[~keep]], reason[~keep])
            m, ge, le, ace = m[keep], ge[keep], le[keep], ace[keep]
        per_host = self._per_host[ge]
        if per_host.any():
            src, dst = f.src[m], f.dst[m]
            gkeys, ginv = _group_keys(
                ge, np.where(per_host, -1, ace), np.where(per_host, src, 0),
                np.where(per_host, dst, 0))
        else:
            gkeys, ginv = _group_keys(ge, ace)
        counts = np.bincount(ginv, minlength=len(gkeys))
        nbytes = np.bincount(ginv, weights=cur.lengths[m], minlength=len(gkeys))
        return _OutLayer(m, le, hits, entry_at, entry_of, drops, gkeys, ginv, counts,
                         nbytes.astype(_I64).tolist())

    def _count_hits(self, ge: npt.NDArray[np.int64], ace: npt.NDArray[np.int64]) -> None:
        for acl, seq, c in self._hits(ge, ace):
            acl.count(seq, c)

    def _hits(self, ge: npt.NDArray[np.int64], ace: npt.NDArray[np.int64]
              ) -> list[tuple[AccessList, int, int]]:
        """The access-list hits of packets that matched ACE ``ace`` of entry ``ge``:
        (list, ACE sequence number, packets)."""
        if ge.size == 0:
            return []
        lo, width = int(ge.min()), int(ace.max()) + 1
        span = (int(ge.max()) - lo + 1) * width
        key = (ge - lo) * width + ace
        if span <= 1 << 20:  # a histogram, not a sort
            hist = np.bincount(key, minlength=span)
            keys = np.flatnonzero(hist)
            counts = hist[keys]
        else:
            keys, counts = np.unique(key, return_counts=True)
        hits = []
        for k, c in zip(keys.tolist(), counts.tolist(), strict=True):
            re_ = self.entries[lo + k // width]
            if re_.acl is None or re_.spd.drop_all:
                continue
            a = k % width
            if a < len(re_.acl.entries):
                hits.append((re_.acl, re_.acl.entries[a].seq, c))
        return hits

    def _out_groups(self, pairs: list[SaPair | None]) -> _OutGroups:
        """What the outbound layer needs of its SA pairs (one per group; None: no SA),
        cached for the same pairs (a pair's SAs, peer and mode never change)."""
        key = tuple(map(id, pairs))
        got = self._out_group_cache.get(key)
        if got is not None:
            return got
        ng = len(pairs)
        growth = np.full(ng, -1, dtype=_I64)
        g_sa = np.full(ng, -1, dtype=_I64)
        g_proto = np.full(ng, 50, dtype=_I64)
        g_peer = np.full(ng, -1, dtype=_I64)
        g_idx = np.full(ng, -1, dtype=np.int32)
        g_transport = np.zeros(ng, dtype=bool)
        sas: list[SecurityAssociation] = []
        for g, pair in enumerate(pairs):
            if pair is None:
                continue
            growth[g] = self._growth(pair)
            rec = pair.outer_outbound
            g_sa[g] = rec.id
            g_proto[g] = 51 if rec.protocol == "ah" else 50
            g_peer[g] = _addr(pair.peer)
            g_transport[g] = pair.mode == "transport"
            if len(pair.outbound) == 1:
                g_idx[g] = len(sas)
                sas.append(pair.outbound[0].sa)
        multi = all(p is None or (len(p.outbound) == 1 and p.lifetime_kilobytes is None)
                    for p in pairs)
        got = _OutGroups(tuple(pairs), multi, growth, g_sa, g_proto, g_peer, sas, g_idx,
                         g_transport, bool(g_transport.any()))
        if len(self._out_group_cache) >= 16:
            self._out_group_cache.clear()
        self._out_group_cache[key] = got
        return got

    def _acquire(self, dom: _Domain, scope: Scope, now: float, ifname: str) -> SaPair | None:
        re_ = self.entries[scope[0]]
        if re_.dynamic or re_.config.kind != "ipsec-isakmp":
            return None  # manual: "the traffic is dropped"; dynamic: never initiates
        last = self._pending.get((dom.id, scope))
        if last is not None and now - last < ACQUIRE_RETRY_SECONDS:
            return None
        if last is None and len(self._pending) >= PENDING_LIMIT:
            self._prune_pending(now)
        self._pending[(dom.id, scope)] = now
        flow = self._flow_of(scope)
        ace = None
        if re_.acl is not None and 0 <= flow.ace < len(re_.acl.entries):
            ace = re_.acl.entries[flow.ace]
        peers = tuple(re_.config.peers)
        req = AcquireRequest(re_.index, re_.map_name, re_.seq, peers[0] if peers else None,
                             peers, flow, ace, ifname, dom.local, now)
        self.acquires.append(req)
        _trim(self.acquires)
        if self.negotiator is not None:
            self.negotiator.acquire(self, req)
            return self.sad.lookup_outbound(dom.id, scope)
        return None

    def _prune_pending(self, now: float) -> None:
        """Make room in ``_pending``: forget the flows past their retry time, and if that
        is not enough, the oldest half."""
        live = {k: t for k, t in self._pending.items() if now - t < ACQUIRE_RETRY_SECONDS}
        if len(live) >= PENDING_LIMIT:
            oldest = sorted(live.items(), key=lambda kv: kv[1])
            live = dict(oldest[len(oldest) // 2:])
        self._pending = live

    @staticmethod
    def _growth(pair: SaPair) -> int:
        """Most bytes ``pair`` adds to a packet (its SAs' growth, ESP then AH)."""
        return sum(rec.sa._max_growth(_TUNNEL if i == 0 else _TRANSPORT)
                   for i, rec in enumerate(pair.outbound))

    def _encap_pair(self, pair: SaPair, dom: _Domain, sub: PacketBatch, f: _Hdr | _Fields,
                    pos: npt.NDArray[np.int64], now: float, out: npt.NDArray[np.uint8],
                    out_off: npt.NDArray[np.int64]
                    ) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
        """Protect ``sub`` (header fields ``f`` at ``pos``) with ``pair``, packet i into
        ``out`` at ``out_off[i]`` (a slot of its length + ``_growth(pair)``): (status,
        output lengths)."""
        n = len(sub)
        if pair.lifetime_kilobytes is None and pair.mode != "transport":
            res = self._protect(pair, sub, _TUNNEL, out, out_off)
            status, olen = res.status, res.packets.lengths
        else:
            status = np.zeros(n, dtype=_U8)
            if pair.lifetime_kilobytes is not None:
                before = pair.bytes_out + np.cumsum(sub.lengths) - sub.lengths
                status[before >= pair.lifetime_kilobytes * 1024] = Status.LIFETIME_EXPIRED
            olen = np.zeros(n, dtype=_I64)
            todo = status == 0
            tmask = np.zeros(n, dtype=bool)
            if pair.mode == "transport":
                # the seed: transport "is applicable only to traffic whose source and
                # destination addresses are the IPsec peer addresses"
                tmask = (f.src[pos] == dom.local_int) & (f.dst[pos] == _addr(pair.peer))
            sel = np.nonzero(todo)[0]
            if sel.size:
                # one call over the packets in input order (each SA numbers them as sent,
                # or the peer's anti-replay window drops them); tunnel and transport mixed:
                # a mode per packet
                ts = tmask[sel]
                mode: int | npt.NDArray[np.uint8] = (
                    _TRANSPORT if ts.all() else _TUNNEL if not ts.any()
                    else np.where(ts, _TRANSPORT, _TUNNEL).astype(_U8))
                if sel.size == n:
                    res = self._protect(pair, sub, mode, out, out_off)
                else:
                    res = self._protect(pair, _take(sub, sel), mode, out, out_off[sel])
                status[sel] = res.status
                olen[sel] = res.packets.lengths
        nbad = int(np.count_nonzero(status))
        if nbad == 0:
            self._sent(pair, n, int(sub.lengths.sum()), None, now)
        else:
            ok = status == 0
            self._sent(pair, n - nbad, int(sub.lengths[ok].sum()), status[~ok], now)
        return status, olen

    def _sent(self, pair: SaPair, nok: int, nbytes: int,
              bad: npt.NDArray[np.uint8] | None, now: float) -> None:
        """Account a layer's packets of ``pair``: ``nok`` protected (``nbytes`` of input),
        ``bad`` the statuses of those that failed; lifetimes and sequence limits."""
        pair.encaps += nok
        pair.bytes_out += nbytes
        if bad is not None:
            for label, c in status_counts(bad).items():
                pair.send_errors[label] = pair.send_errors.get(label, 0) + c
        self._volume(pair, "outbound", now)
        if pair.alive and not pair.manual:
            # DESIGN.md §SAs: sequence numbers never wrap; an exhausted SA stops sending,
            # so it is deleted (the next packet asks for a new one); the soft limit on
            # the counter raises a rekey request like the lifetimes do
            seq = pair.outer_outbound.sa.seq
            limit = 0xFFFFFFFFFFFFFFFF if pair.outer_outbound.sa.esn else 0xFFFFFFFF
            if (bad is not None and bool((bad == Status.SEQ_EXHAUSTED).any())) \
                    or seq >= limit:
                self._expire(pair)
            elif not pair.soft_fired and seq >= self.soft_lifetime * limit:
                self._soft(pair, "sequence", now)

    def _encap_multi(self, groups: _OutGroups, gsel: npt.NDArray[np.int64], dom: _Domain,
                     sub: PacketBatch, f: _Hdr | _Fields, pos: npt.NDArray[np.int64],
                     now: float, out: npt.NDArray[np.uint8], out_off: npt.NDArray[np.int64],
                     nbytes: list[int] | None
                     ) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
        """``_encap_pair`` for every pair of a layer at once (each one SA, no kilobyte
        lifetime): packet i of ``sub`` (pair ``groups.pairs[gsel[i]]``, header fields
        ``f`` at ``pos[i]``) into ``out`` at ``out_off[i]``, one core call in packet order
        (so each SA numbers its packets in their order, as one call per SA would).
        ``nbytes``: each group's input bytes, if known."""
        n = len(sub)
        pairs = groups.pairs
        status = np.zeros(n, dtype=_U8)
        olen = np.zeros(n, dtype=_I64)
        sa_index = groups.sa_index[gsel]
        modes: int | npt.NDArray[np.uint8] = _TUNNEL
        if groups.any_transport:
            # the seed: transport "is applicable only to traffic whose source and
            # destination addresses are the IPsec peer addresses"
            tmask = groups.transport[gsel] & (f.src[pos] == dom.local_int) & (
                f.dst[pos] == groups.peer[gsel])
            modes = np.where(tmask, _TRANSPORT, _TUNNEL).astype(_U8)
        have = sa_index >= 0
        if have.all():
            res = _encapsulate_multi(groups.sas, sa_index, modes, sub, out, out_off,
                                     threads=self.crypto_threads)
            status[:] = res.status
            olen[:] = res.packets.lengths
        else:
            status[~have] = Status.NO_SA
            sel = np.nonzero(have)[0]
            if sel.size:
                res = _encapsulate_multi(
                    groups.sas, sa_index[sel],
                    modes if isinstance(modes, int) else modes[sel], _take(sub, sel), out,
                    out_off[sel], threads=self.crypto_threads)
                status[sel] = res.status
                olen[sel] = res.packets.lengths
        nok, nb, bad_of = _per_group(gsel, len(pairs), status, sub.lengths, nbytes)
        for g, pair in enumerate(pairs):
            if pair is not None:
                self._sent(pair, nok[g], nb[g], bad_of(g), now)
        return status, olen

    @staticmethod
    def _protect(pair: SaPair, batch: PacketBatch,
                 mode_id: int | npt.NDArray[np.uint8], out: npt.NDArray[np.uint8],
                 out_off: npt.NDArray[np.int64]) -> SaResult:
        """ESP first, AH outside it; the last SA writes into ``out`` at ``out_off``.
        ``mode_id``: one mode, or one per packet (the first SA's; one call in input
        order, so the sequence numbers follow it)."""
        if len(pair.outbound) == 1 and not isinstance(mode_id, np.ndarray):
            return pair.outbound[0].sa._encapsulate(batch, mode_id, 4, out=out,
                                                    out_offsets=out_off)
        res: SaResult | None = None
        last = len(pair.outbound) - 1
        for i, rec in enumerate(pair.outbound):
            mid = mode_id if i == 0 else _TRANSPORT

            def stage(b: PacketBatch, o: npt.NDArray[np.int64] | None,
                      sa: SecurityAssociation = rec.sa,
                      mid: int | npt.NDArray[np.uint8] = mid) -> SaResult:
                if not isinstance(mid, np.ndarray):
                    return sa._encapsulate(b, mid, 4, **_out(out, o))
                if o is None:  # its own buffer: slots of the length + the larger growth
                    o, size = _slots(b.lengths + max(sa._max_growth(_TUNNEL),
                                                     sa._max_growth(_TRANSPORT)))
                    return _encapsulate_multi([sa], np.zeros(len(b), dtype=_I64), mid, b,
                                              np.empty(size, dtype=_U8), o)
                return _encapsulate_multi([sa], np.zeros(len(b), dtype=_I64), mid, b, out, o)

            o = out_off if i == last else None
            res = stage(batch, o) if res is None else _then(res, stage, o)
        assert res is not None
        return res

    # -- inbound ---------------------------------------------------------------------------
    def inbound(self, ifname: str, batch: PacketBatch, *,
                prepared: Prepared | None = None) -> RouterResult:
        """Process packets arriving on ``ifname`` (``prepared``:
        ``prepare_inbound(ifname, batch)``, made ahead)."""
        name, dom, st = self._start(ifname, batch)
        now = self._tick()
        if dom is None or len(batch) == 0:
            return st.result(batch, [], name, self, "recv")
        final: list[_Piece] = []
        spare: tuple[npt.NDArray[np.uint8], int] | None = None
        local = dom.local_int
        # One compiled pass maps every packet to its SA by (destination, protocol, SPI),
        # or says why not: not IPv4, clear text, a fragment, options, too short, or an
        # SPI no SA has (dropped here, so a flood of random SPIs costs no Python).
        made = self.sad.inbound_table(dom.id, local)
        keys, table = made
        idx = np.arange(len(batch), dtype=_I64)
        cur = batch
        if (prepared is not None and prepared.batch is batch and prepared.made_with is made
                and prepared.result is not None):
            kinds, slots, lay = prepared.result
        else:
            kinds, slots = spi_lookup(cur, local, keys)
            lay = _in_layer(kinds, slots, len(table), cur.lengths)
        clear = lay.clear
        if clear.size:
            sub = _take(cur, clear)
            self._inbound_clear(dom, st, clear, sub, _header(sub))
        for depth in range(self.nesting_depth):
            if depth:
                lay = _in_layer(kinds, slots, len(table), cur.lengths)
            bad = lay.bad
            if bad.size:
                st.drop(idx[bad], lay.bad_reason)
            go = lay.go
            if go.size == 0:
                break
            whole = go.size == len(cur)  # (the usual case: every packet has its SA)
            ginv, counts = lay.ginv, lay.counts
            recs: list[SaRecord | None] = []
            for j in lay.present:
                known = table[j]
                recs.append(known if known.pair is not None and known.pair.alive else None)
            ng = len(recs)
            groups = self._in_groups(dom, recs)
            # Sorted by SA (stable, as outbound); every pair one tunnel-mode SA without a
            # kilobyte lifetime (the usual case): one core call; else one call per pair.
            multi = groups.multi
            if multi and _MULTI_IN_ORDER:
                sp, gsel = go, ginv
            else:
                _, sp, gsel = _sorted_by(ginv, ng, go)
            bounds = [0, *np.cumsum(counts).tolist()]
            # One output buffer for every SA of the layer (a packet never grows when
            # opened: its slot is its own length), plus room for the bypassed packets.
            in_order = whole and sp is go
            s_len = cur.lengths if in_order else cur.lengths[sp]
            slot, total = _slots(s_len)
            room = 0
            if depth == 0 and not (in_order and len(cur) == len(batch)):
                byp = st.verdict == Verdict.BYPASS
                byp[idx[sp]] = False
                room = int(batch.lengths[byp].sum())
            out = np.empty(total + room, dtype=_U8)
            if depth == 0:
                spare = (out, total)
            s_cur = cur if in_order else PacketBatch._trusted(cur.buffer, cur.offsets[sp], s_len)
            s_status = np.zeros(sp.size, dtype=_U8)
            s_ooff = slot.copy()
            s_olen = np.zeros(sp.size, dtype=_I64)
            in_flow = np.zeros(sp.size, dtype=_U8)  # (the core checked the inner flow)
            if multi:
                self._open_multi(groups, gsel, s_cur, out, slot, s_status, s_ooff, s_olen,
                                 in_flow)
            else:
                for g, rec in enumerate(recs):
                    a, b = bounds[g], bounds[g + 1]
                    if rec is None or rec.pair is None:
                        s_status[a:b] = Status.UNKNOWN_SPI
                        continue
                    sub = PacketBatch._trusted(s_cur.buffer, s_cur.offsets[a:b], s_len[a:b])
                    res = self._open_pair(rec.pair, sub, out, slot[a:b])
                    s_status[a:b] = res.status
                    s_ooff[a:b] = res.packets.offsets
                    s_olen[a:b] = res.packets.lengths
            # DESIGN.md §Policy 4: the inner packet must be in the flow of its SA
            nested = self._inner_flow(dom, recs, gsel, s_status, out, s_ooff, s_olen,
                                      in_flow.view(bool), local)
            g_entry, g_sa = groups.entry, groups.sa
            gi = idx if in_order else idx[sp]
            self._count_in_groups(recs, gsel, s_status, s_len, now, gi,
                                  lay.nbytes if in_order else None)
            # (the usual first layer: every packet of the batch, in order)
            every = in_order and depth == 0 and len(cur) == len(batch)
            if groups.all_found:
                at = ... if every else gi
                st.entry[at] = g_entry[gsel]
                st.sa[at] = g_sa[gsel]
            else:
                found = g_sa[gsel] >= 0
                st.entry[gi[found]] = g_entry[gsel][found]
                st.sa[gi[found]] = g_sa[gsel][found]
            ok = s_status == 0
            if ok.all():
                okp: npt.NDArray[np.int64] | slice = slice(None)
                gpos = gi
            else:
                every = False
                st.drop(gi[~ok], s_status[~ok])
                failed = np.nonzero(~ok)[0]  # (opened but in the wrong flow, or never opened)
                _zero_slots(out, slot[failed], s_len[failed])
                okp = np.nonzero(ok)[0]
                gpos = gi[okp]
                if gpos.size == 0:
                    break
            st.verdict[... if every else gpos] = Verdict.PROTECT
            layer = PacketBatch._trusted(out, s_ooff[okp], s_olen[okp])
            # peel again what is still ESP / AH for us (nested protection), known from the
            # inner headers the flow check read
            if depth + 1 == self.nesting_depth or not (more := nested[okp]).any():
                final.append((gpos, layer))
                if every:  # the result is this layer as it is
                    return st.result(batch, final, name, self, "recv", spare, whole=True)
                break
            stay = np.nonzero(~more)[0]
            final.append((gpos[stay], _take(layer, stay)))
            nxt = np.nonzero(more)[0]
            cur = _take(layer, nxt)
            idx = gpos[nxt]
            # (the SAD may have changed since the last layer: expiry by volume, listeners)
            keys, table = self.sad.inbound_table(dom.id, local)
            kinds, slots = spi_lookup(cur, local, keys)
        return st.result(batch, final, name, self, "recv", spare)

    def _inbound_clear(self, dom: _Domain, st: _State, idx: npt.NDArray[np.int64],
                       cur: PacketBatch, f: _Hdr) -> None:
        """Clear text in: dropped if an entry would protect it (mirror evaluation)."""
        if idx.size == 0:
            return
        cls = dom.spd.lookup(cur, mirror=True)
        bad = cls.status != 0
        st.drop(idx[bad], cls.status[bad])
        m = np.nonzero((cls.lists >= 0) & ~bad & ~self._ike(f, dom))[0]
        if m.size == 0:
            return
        le = cls.lists[m]
        ge = le.astype(_I64) + dom.offset
        self._count_hits(ge, cls.entries[m].astype(_I64))
        reason = self._policy_drops(dom, le, f, m)
        reason[(reason == 0) | (reason == Status.IP_OPTIONS)] = Status.UNPROTECTED
        st.entry[idx[m]] = ge
        st.drop(idx[m], reason)

    def _open_pair(self, pair: SaPair, sub: PacketBatch, out: npt.NDArray[np.uint8],
                   out_off: npt.NDArray[np.int64]) -> SaResult:
        """Open ``sub`` with ``pair``, packet i into ``out`` at ``out_off[i]`` (a slot of
        its length); kilobyte lifetimes first."""
        if pair.lifetime_kilobytes is not None:
            before = pair.bytes_in + np.cumsum(sub.lengths) - sub.lengths
            expired = before >= pair.lifetime_kilobytes * 1024
            if expired.any():
                n = len(sub)
                status = np.full(n, Status.LIFETIME_EXPIRED, dtype=_U8)
                off = out_off.copy()
                lens = np.zeros(n, dtype=_I64)
                sel = np.nonzero(~expired)[0]
                if sel.size:
                    res = self._unprotect(pair, _take(sub, sel), out, out_off[sel])
                    status[sel] = res.status
                    off[sel] = res.packets.offsets
                    lens[sel] = res.packets.lengths
                return SaResult(PacketBatch._trusted(out, off, lens), status)
        return self._unprotect(pair, sub, out, out_off)

    def _inner_flow(self, dom: _Domain, recs: Sequence[SaRecord | None],
                    gsel: npt.NDArray[np.int64], status: npt.NDArray[np.uint8],
                    out: npt.NDArray[np.uint8], off: npt.NDArray[np.int64],
                    lens: npt.NDArray[np.int64], in_flow: npt.NDArray[np.bool_],
                    local: int) -> npt.NDArray[np.bool_]:
        """DESIGN.md §Policy 4 for every opened packet of a layer: status
        INNER_FLOW_MISMATCH where the inner packet is not in the flow of the SA that
        carried it (packet i carried by ``recs[gsel[i]]``): the first entry of the SA's
        own access list that matches it (mirrored) must be the permit the SA was made
        for (per-host SAs: any permit, between the SA's two hosts). Packets the core
        already found in their SA's flow (``in_flow``: never fragments, never ESP / AH)
        are not looked at again. Returns, per packet, whether its inner packet is ESP /
        AH for ``local`` (nested: to be opened again)."""
        nested = np.zeros(status.size, dtype=bool)
        okp = np.nonzero((status == 0) & ~in_flow)[0]
        if okp.size == 0:
            return nested
        inner = PacketBatch._trusted(out, off[okp], lens[okp])
        g_le = np.array([r.pair.entry - dom.offset if r is not None and r.pair is not None
                         else -2 for r in recs], dtype=_I64)
        g_ace = np.array([r.pair.scope[1] if r is not None and r.pair is not None else -1
                          for r in recs], dtype=_I64)
        grp = gsel[okp]
        # (an SA of this domain's SAD was made for an entry of this domain's crypto map)
        ace, hdr = dom.spd.flows_match(g_le[grp], inner, mirror=True)
        a = g_ace[grp]
        good = np.where(a >= 0, ace == a, ace >= 0)
        hosts = np.nonzero(a < 0)[0]
        if hosts.size:  # per-host SAs: the inner packet is between the SA's two hosts
            g_hs = np.array([r.pair.scope[2] if r is not None and r.pair is not None else -1
                             for r in recs], dtype=_I64)
            g_hd = np.array([r.pair.scope[3] if r is not None and r.pair is not None else -1
                             for r in recs], dtype=_I64)
            gh = grp[hosts]
            good[hosts] &= ((hdr[hosts, H_SRC].astype(_I64) == g_hd[gh])
                            & (hdr[hosts, H_DST].astype(_I64) == g_hs[gh]))
        status[okp[~good]] = Status.INNER_FLOW_MISMATCH
        proto = hdr[:, H_PROTO]
        nested[okp] = good & ((proto == 50) | (proto == 51)) & (
            hdr[:, H_DST].astype(_I64) == local)
        return nested

    def _in_groups(self, dom: _Domain, recs: list[SaRecord | None]) -> _InGroups:
        """What an inbound layer needs of its SAs (one per group; None: no live SA),
        cached for the same SAs under the same crypto map (a record's pair, SA and entry
        never change while it lives; a dead pair's records come as None; the inner-flow
        selectors come from the crypto map, which ``set_entry_flows`` replaces)."""
        key = (dom.id, id(dom.spd), *map(id, recs))
        got = self._in_group_cache.get(key)
        if got is not None and got.spd is dom.spd:
            return got
        ng = len(recs)
        sas: list[SecurityAssociation] = []
        selectors: list[tuple[int, ...]] = []
        g_idx = np.full(ng, -1, dtype=np.int32)
        g_entry = np.full(ng, -1, dtype=_I64)
        g_sa = np.full(ng, -1, dtype=_I64)
        for g, rec in enumerate(recs):
            if rec is None or rec.pair is None:
                continue
            g_entry[g] = rec.pair.entry
            g_sa[g] = rec.id
            g_idx[g] = len(sas)
            sas.append(rec.pair.inbound[0].sa)
            ace = rec.pair.scope[1]  # (-1: a per-host SA, checked by the router)
            box = dom.spd.inner_selector(rec.pair.entry - dom.offset, ace) \
                if ace >= 0 else None
            selectors.append(NO_SELECTOR if box is None else box)
        multi = all(r is None or (len(r.pair.inbound) == 1 and r.pair.mode != "transport"
                                  and r.pair.lifetime_kilobytes is None)
                    for r in recs if r is not None and r.pair is not None)
        got = _InGroups(tuple(recs), dom.spd, multi, sas, g_idx,
                        np.array(selectors, dtype=np.uint32).reshape(len(sas), 10),
                        g_entry, g_sa, bool((g_sa >= 0).all()))
        if len(self._in_group_cache) >= 16:
            self._in_group_cache.clear()
        self._in_group_cache[key] = got
        return got

    def _open_multi(self, groups: _InGroups, gsel: npt.NDArray[np.int64],
                    sub: PacketBatch, out: npt.NDArray[np.uint8],
                    slot: npt.NDArray[np.int64], status: npt.NDArray[np.uint8],
                    ooff: npt.NDArray[np.int64], olen: npt.NDArray[np.int64],
                    in_flow: npt.NDArray[np.uint8]) -> None:
        """``_open_pair`` for every SA of a layer at once (each pair one tunnel-mode SA, no
        kilobyte lifetime): packet i with ``groups.recs[gsel[i]]`` into ``out`` at
        ``slot[i]``, one core call in packet order; fills ``status`` / ``olen`` (``ooff``:
        the slots) and ``in_flow``: 1 where the core found the inner packet inside its
        SA's flow (``CryptoMapSpd.inner_selector``; 0 where it could not tell)."""
        sas, table = groups.sas, groups.selectors
        sa_index = groups.sa_index[gsel]
        have = sa_index >= 0
        if have.all():
            res = _decapsulate_multi(sas, sa_index, _TUNNEL, sub, out, slot,
                                     threads=self.crypto_threads, selectors=table,
                                     in_selector=in_flow)[0]
            status[:] = res.status
            olen[:] = res.packets.lengths
        else:
            status[~have] = Status.UNKNOWN_SPI
            in_flow[:] = 0
            sel = np.nonzero(have)[0]
            if sel.size:
                flags = np.zeros(sel.size, dtype=_U8)
                res = _decapsulate_multi(sas, sa_index[sel], _TUNNEL, _take(sub, sel), out,
                                         slot[sel], threads=self.crypto_threads,
                                         selectors=table, in_selector=flags)[0]
                status[sel] = res.status
                olen[sel] = res.packets.lengths
                in_flow[sel] = flags
        # (``ooff`` already holds the slots: the core writes each packet at its slot)

    def _count_in_groups(self, recs: Sequence[SaRecord | None], gsel: npt.NDArray[np.int64],
                         status: npt.NDArray[np.uint8], lengths: npt.NDArray[np.int64],
                         now: float, pos: npt.NDArray[np.int64],
                         known_bytes: list[int] | None = None) -> None:
        """``_count_in`` for every SA pair of a layer (packet i carried by
        ``recs[gsel[i]]``, at position ``pos[i]`` of the batch; ``known_bytes``: each
        group's input bytes, if known)."""
        nok, nbytes, bad_of = _per_group(gsel, len(recs), status, lengths, known_bytes)
        for g, rec in enumerate(recs):
            if rec is None or rec.pair is None:
                continue
            pair = rec.pair
            pair.decaps += nok[g]
            pair.bytes_in += nbytes[g]
            bad = bad_of(g)
            if bad is not None:
                for label, c in status_counts(bad).items():
                    pair.recv_errors[label] = pair.recv_errors.get(label, 0) + c
            self._volume(pair, "inbound", now)
        if self._received_listeners:
            # each pair by the batch position of its last intact packet: last heard, last
            last = np.full(len(recs), -1, dtype=_I64)
            ok = status == 0
            np.maximum.at(last, gsel[ok], pos[ok])
            heard = [(int(last[g]), r.pair) for g, r in enumerate(recs) if nok[g]
                     and r is not None and r.pair is not None and r.pair.alive]
            if heard:
                heard.sort(key=lambda t: t[0])
                self._call_listeners(self._received_listeners, self, [p for _, p in heard])

    @staticmethod
    def _unprotect(pair: SaPair, batch: PacketBatch, out: npt.NDArray[np.uint8],
                   out_off: npt.NDArray[np.int64]) -> SaResult:
        """Outermost (AH) first; the innermost SA writes into ``out`` at ``out_off``."""
        if len(pair.inbound) == 1 and pair.mode != "transport":
            return pair.inbound[0].sa._decapsulate(batch, _TUNNEL, out=out,
                                                   out_offsets=out_off)[0]
        recs = list(reversed(pair.inbound))
        res: SaResult | None = None
        last = len(recs) - 1
        for i, rec in enumerate(recs):
            sa = rec.sa
            if i != last:
                def stage(b: PacketBatch, o: npt.NDArray[np.int64] | None,
                          sa: SecurityAssociation = sa) -> SaResult:
                    return sa._decapsulate(b, _TRANSPORT, **_out(out, o))[0]
            elif pair.mode == "transport":
                def stage(b: PacketBatch, o: npt.NDArray[np.int64] | None,
                          sa: SecurityAssociation = sa) -> SaResult:
                    return _decap_mixed(sa, b, out, o)
            else:
                def stage(b: PacketBatch, o: npt.NDArray[np.int64] | None,
                          sa: SecurityAssociation = sa) -> SaResult:
                    return sa._decapsulate(b, _TUNNEL, **_out(out, o))[0]
            o = out_off if i == last else None
            res = stage(batch, o) if res is None else _then(res, stage, o)
        assert res is not None
        return res

    # -- show ------------------------------------------------------------------------------
    def current_peers(self) -> dict[tuple[str, int], str]:
        """(map name, sequence number) -> the peer of the entry's newest SA pair."""
        out: dict[tuple[str, int], str] = {}
        for pair in self.sad:
            e = self.entries[pair.entry].config
            out[(e.map_name, e.seq)] = pair.peer
        return out

    def show(self, command: str) -> str:
        """IOS show commands: ``crypto ipsec sa [peer A | map M | detail]`` from the live
        SAD (``% Crypto map M not found`` for a map the configuration does not define);
        everything else (``crypto map`` with live peers, ``access-lists`` with hit
        counts, ...) through ``show.show``."""
        self._tick()  # expired SAs are gone before they are shown
        words = command.split()
        if words and "show".startswith(words[0].lower()) and len(words[0]) >= 2:
            words = words[1:]
        low = [w.lower() for w in words]
        if len(low) >= 3 and "crypto".startswith(low[0]) and "ipsec".startswith(low[1]) \
                and low[2] == "sa":
            return _render_ipsec_sa(self, words[3:])
        return config_show(self.config, " ".join(words), current_peers=self.current_peers())

    def _domain_list(self) -> list[_Domain]:
        return list(self._domains)


@dataclass
class _State:
    """Per-call result arrays."""

    n: int
    verdict: npt.NDArray[np.uint8] = field(init=False)
    reason: npt.NDArray[np.uint8] = field(init=False)
    entry: npt.NDArray[np.int32] = field(init=False)
    sa: npt.NDArray[np.int32] = field(init=False)

    def __post_init__(self) -> None:
        self.verdict = np.zeros(self.n, dtype=_U8)
        self.reason = np.zeros(self.n, dtype=_U8)
        self.entry = np.full(self.n, -1, dtype=_I32)
        self.sa = np.full(self.n, -1, dtype=_I32)

    def drop(self, idx: npt.NDArray[np.int64], reason: Any) -> None:
        if np.size(idx) == 0:
            return
        self.verdict[idx] = Verdict.DROP
        self.reason[idx] = reason

    def result(self, batch: PacketBatch, pieces: list[_Piece], ifname: str, router: Router,
               direction: Literal["send", "recv"],
               spare: tuple[npt.NDArray[np.uint8], int] | None = None,
               whole: bool = False) -> RouterResult:
        """The RouterResult. ``spare``: the shared output buffer the pieces were written
        into and where its room for the bypassed packets starts; when every piece is in
        it, the result is that buffer (no join). ``whole``: the one piece holds every
        packet of the batch in order, none dropped."""
        if whole:
            (_, out), = pieces
            return RouterResult(out, self.verdict, self.reason, self.entry, self.sa)
        dropped = self.verdict == Verdict.DROP
        if pieces:
            parts: list[_Piece] = []
            byp = np.nonzero(self.verdict == Verdict.BYPASS)[0]
            shared = spare is not None and all(pk.buffer is spare[0] for _, pk in pieces)
            if byp.size:
                kept = _take(batch, byp)
                if shared:
                    assert spare is not None
                    kept = _copy_into(spare[0], spare[1], kept)
                elif 2 * kept.nbytes < batch.buffer.size:
                    kept = kept.compact()  # copy only the bypassed bytes
                parts.append((byp, kept))
            if not shared and spare is not None:
                spare[0][spare[1]:] = 0  # the unused room goes into the join: no stale bytes
            if shared:
                assert spare is not None
                off = np.zeros(self.n, dtype=_I64)
                lens = np.zeros(self.n, dtype=_I64)
                for pos, pk in parts + pieces:
                    off[pos] = pk.offsets
                    lens[pos] = pk.lengths
                out = PacketBatch._trusted(spare[0], off, lens)
            else:
                out = _join(self.n, parts + pieces)
        else:
            out = PacketBatch(batch.buffer, batch.offsets.copy(), batch.lengths.copy())
        if dropped.any():
            out.lengths[dropped] = 0
            out.offsets[dropped] = 0
            counts = router.drops.setdefault(ifname, {}).setdefault(direction, {})
            for label, c in status_counts(self.reason[dropped]).items():
                counts[label] = counts.get(label, 0) + c
        return RouterResult(out, self.verdict, self.reason, self.entry, self.sa)


# ---------------------------------------------------------------------------------------
# show crypto ipsec sa


def _ident(match: Any, protocol: int | None, port: Any) -> str:
    wild = int(match.wildcard) & 0xFFFFFFFF
    addr = int(match.address) & ~wild & 0xFFFFFFFF
    p = 0
    if port is not None and port.op == "eq" and len(port.ports) == 1:
        p = int(port.ports[0])
    return f"({_ip(addr)}/{_ip(~wild & 0xFFFFFFFF)}/{protocol or 0}/{p})"


def _flow_idents(router: Router, entry: int, scope: Scope) -> tuple[str, str]:
    if scope[1] < 0:
        return (f"({_ip(scope[2])}/255.255.255.255/0/0)",
                f"({_ip(scope[3])}/255.255.255.255/0/0)")
    re_ = router.entries[entry]
    if re_.acl is None or not 0 <= scope[1] < len(re_.acl.entries):
        any_ = "(0.0.0.0/0.0.0.0/0/0)"
        return any_, any_
    ace = re_.acl.entries[scope[1]]
    return (_ident(ace.source, ace.protocol, ace.source_port),
            _ident(ace.destination, ace.protocol, ace.destination_port))


def _sa_block(router: Router, pair: SaPair, direction: str, proto: str, now: float,
              in_use: str) -> list[str]:
    rec = pair.sa_of(direction, proto)
    if rec is None:
        return []
    t = rec.transforms
    words = [str(x) for x in t if (x.kind == "ah") == (proto == "ah")]
    lines = [
        f"      spi: 0x{rec.spi:X}({rec.spi})",
        f"        transform: {' '.join(words)} ,",
        f"        in use settings ={{{in_use}, }}",
        f"        conn id: {rec.id}, flow_id: SW:{rec.id}, sibling_flags 80000046, "
        f"crypto map: {router.entries[pair.entry].map_name}",
    ]
    left = pair.remaining(now, direction)
    if left is None:
        lines.append("        no sa timing")
    else:
        lines.append(f"        sa timing: remaining key lifetime (k/sec): ({left[0]}/{left[1]})")
    if proto == "esp" and t.esp_cipher is not None and t.esp_cipher.iv_length:
        lines.append(f"        IV size: {t.esp_cipher.iv_length} bytes")
    lines.append(f"        replay detection support: {'Y' if rec.replay_window else 'N'}")
    lines.append("        Status: ACTIVE(ACTIVE)")
    return lines


def _errors(label: str, counts: Mapping[str, int]) -> list[str]:
    if not counts:
        return []
    body = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    return [f"    #{label} errors by reason: {body}"]


def _render_ipsec_sa(router: Router, args: list[str]) -> str:
    """``show crypto ipsec sa [peer A | map M | interface I] [detail]`` (keys never)."""
    peer = map_name = ifname = None
    detail = False
    i = 0
    while i < len(args):
        w = args[i].lower()
        if w == "detail":
            detail = True
            i += 1
        elif w in ("peer", "map", "interface") and i + 1 < len(args):
            if w == "peer":
                peer = _peer_text(args[i + 1])
            elif w == "map":
                map_name = args[i + 1]
            else:
                ifname = router._interface(args[i + 1])
            i += 2
        else:
            raise UnknownCommand(f"unexpected {args[i]!r}; expected peer A | map M | "
                                 "interface I | detail", line="show crypto ipsec sa "
                                 + " ".join(args))
    if map_name is not None and map_name not in router.config.crypto_maps:
        return f"% Crypto map {map_name} not found\n"
    now = float(router.clock())
    out: list[str] = []
    for name in router.crypto_interfaces():
        if ifname is not None and name != ifname:
            continue
        dom = router._iface_domain[name]
        if map_name is not None and dom.map_name != map_name:
            continue
        out.append(f"interface: {name}")
        out.append(f"    Crypto map tag: {dom.map_name}, local addr {dom.local or '0.0.0.0'}")
        drops = router.drops.get(name, {})
        if drops.get("send") or drops.get("recv"):
            for direction in ("send", "recv"):
                c = drops.get(direction, {})
                if c:
                    body = ", ".join(f"{k} {v}" for k, v in sorted(c.items()))
                    out.append(f"    interface {direction} drops: {body}")
        out.append("")
        pairs = [p for p in router.sad if p.domain == dom.id]
        flows: list[tuple[int, Scope, SaPair | None]] = [(p.entry, p.scope, p) for p in pairs]
        with_pair = {(p.entry, p.scope) for p in pairs}
        start, end = router._map_slices[dom.map_name]
        for re_ in router.entries[start:end]:
            if re_.dynamic or re_.spd.acl is None or re_.acl is None:
                continue
            for a, ace in enumerate(re_.spd.acl.entries):
                scope = (re_.index, a, 0, 0)
                if ace.action == "permit" and (re_.index, scope) not in with_pair \
                        and not re_.per_host:
                    flows.append((re_.index, scope, None))
        flows.sort(key=lambda x: (x[0], x[2].id if x[2] is not None else 0))
        for entry, scope, pair in flows:
            re_ = router.entries[entry]
            cur_peer = pair.peer if pair is not None else (
                re_.config.peers[0] if re_.config.peers else "0.0.0.0")
            if peer is not None and cur_peer != peer:
                continue
            local_id, remote_id = _flow_idents(router, entry, scope)
            t = pair.transforms if pair is not None else (
                re_.transform_set.transforms if re_.transform_set else None)
            enc = dec = 0
            send = recv = {}
            if pair is not None:
                enc, dec = pair.encaps, pair.decaps
                send, recv = pair.send_errors, pair.recv_errors
            encrypt = enc if t is not None and t.esp_cipher is not None else 0
            decrypt = dec if t is not None and t.esp_cipher is not None else 0
            digest = enc if t is not None and (t.has_esp_integrity or t.has_ah) else 0
            verify = dec if t is not None and (t.has_esp_integrity or t.has_ah) else 0
            out += [
                "   protected vrf: (none)",
                f"   local  ident (addr/mask/prot/port): {local_id}",
                f"   remote ident (addr/mask/prot/port): {remote_id}",
                f"   current_peer {cur_peer} port 500",
                "     PERMIT, flags={origin_is_acl,}",
                f"    #pkts encaps: {enc}, #pkts encrypt: {encrypt}, #pkts digest: {digest}",
                f"    #pkts decaps: {dec}, #pkts decrypt: {decrypt}, #pkts verify: {verify}",
                "    #pkts compressed: 0, #pkts decompressed: 0",
                "    #pkts not compressed: 0, #pkts compr. failed: 0",
                "    #pkts not decompressed: 0, #pkts decompress failed: 0",
                f"    #send errors {sum(send.values())}, #recv errors {sum(recv.values())}",
            ]
            out += _errors("send", send) + _errors("recv", recv)
            if detail:
                out += [
                    f"    #pkts replay failed (rcv): {recv.get('replay', 0) + recv.get('outside-window', 0)}",
                    f"    #pkts verify failed: {recv.get('icv-mismatch', 0)}",
                    f"    #pkts invalid identity (recv) {recv.get('inner-flow-mismatch', 0)}",
                ]
            out.append("")
            out.append(f"     local crypto endpt.: {dom.local or '0.0.0.0'}, "
                       f"remote crypto endpt.: {cur_peer}")
            out.append(f"     path mtu 1500, ip mtu 1500, ip mtu idb {name}")
            spi = pair.outer_outbound.spi if pair is not None else 0
            out.append(f"     current outbound spi: 0x{spi:X}({spi})")
            pfs = re_.config.pfs
            out.append(f"     PFS (Y/N): {'Y' if pfs else 'N'}, DH group: {pfs or 'none'}")
            out.append("")
            in_use = "Tunnel"
            if pair is not None and pair.mode == "transport":
                loc_host = local_id.startswith(f"({pair.local}/255.255.255.255/")
                rem_host = remote_id.startswith(f"({pair.peer}/255.255.255.255/")
                if loc_host and rem_host:
                    in_use = "Transport"
            for direction in ("inbound", "outbound"):
                for proto in ("esp", "ah"):
                    out.append(f"     {direction} {proto} sas:")
                    if pair is not None:
                        out += _sa_block(router, pair, direction, proto, now, in_use)
                    out.append("")
                out.append(f"     {direction} pcp sas:")
                out.append("")
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"
