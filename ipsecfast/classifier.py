"""Classifier: ordered access lists compiled into decision trees (DESIGN.md §Policy 2).

``Classifier(acls)`` takes the access lists of a crypto map set in entry order and answers,
per packet, the index of the first list whose first matching entry is a ``permit`` (a
``deny`` skips to the next list; no match anywhere = -1), and which entry of that list
matched. The lookup runs in C without the GIL over a whole batch (src/_classify.pyx,
where the structure is described); this module only turns ``Ace`` objects into rule rows.

Per-packet results are ``int32`` arrays aligned with the batch. Packets the classifier
cannot read get -1 and a status (``Status.TRUNCATED``: shorter than the IPv4 header, its
total length, or the transport bytes read -- TCP ports and flags: 14 bytes, UDP ports: 4,
ICMP type and code: 2; ``Status.BAD_IP_HEADER``: not IPv4, IHL < 5, total length below the
header length). Callers must not treat -1 with a bad status as "bypass"; ``lookup``
returns the status array, ``classify`` does not.

The structure is immutable: build a new ``Classifier`` when a list changes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple, overload

import numpy as np
import numpy.typing as npt

from . import _classify
from .acl import ANY_WILDCARD, AccessList, Ace, AddressMatch
from .packets import PacketBatch

__all__ = ["Classifier", "Classification"]

_FULL_PORTS: tuple[tuple[int, int], ...] = ((0, 0xFFFF),)

# columns of ``Classifier.lookup_with_headers``'s header array
H_SRC = int(_classify.FIELD_SRC)
H_DST = int(_classify.FIELD_DST)
H_SPORT = int(_classify.FIELD_SPORT)
H_DPORT = int(_classify.FIELD_DPORT)
H_PROTO = int(_classify.FIELD_PROTO)
H_TOS = int(_classify.FIELD_TOS)
H_BYTE0 = int(_classify.FIELD_BYTE0)
H_FRAG = int(_classify.FIELD_FRAG)
HEADER_COLUMNS = int(_classify.FIELDS)


class Classification(NamedTuple):
    """Per-packet results of ``Classifier.lookup``."""

    lists: npt.NDArray[np.int32]  # index of the access list (crypto map entry), or -1
    entries: npt.NDArray[np.int32]  # index of the matching entry in that list, or -1
    status: npt.NDArray[np.uint8]  # ipsecfast.status.Status codes (0 = OK)


def _address(m: AddressMatch) -> tuple[int, int, int, int]:
    """(lo, hi, mask, value): the bounding range, plus an exact check if discontiguous."""
    wild = m.wildcard & ANY_WILDCARD
    care = ~wild & ANY_WILDCARD
    base = m.address & care
    if (wild & (wild + 1)) == 0:  # contiguous: the range is exact
        return base, base | wild, 0, 0
    return base, base | wild, care, base


def _tos_check(ace: Ace) -> tuple[int, int] | None:
    """(mask, value) on the TOS byte for dscp / precedence / tos, None if unsatisfiable."""
    conds = []
    if ace.dscp is not None:
        if not 0 <= ace.dscp <= 63:
            return None
        conds.append((0xFC, ace.dscp << 2))
    if ace.precedence is not None:
        if not 0 <= ace.precedence <= 7:
            return None
        conds.append((0xE0, ace.precedence << 5))
    if ace.tos is not None:
        if not 0 <= ace.tos <= 15:
            return None
        conds.append((0x1E, ace.tos << 1))
    mask = val = 0
    for m, v in conds:
        overlap = mask & m
        if (val & overlap) != (v & overlap):
            return None
        mask |= m
        val |= v
    return mask, val


def _port_ranges(pm: Any) -> tuple[tuple[int, int], ...]:
    if pm is None:
        return _FULL_PORTS
    out = []
    for lo, hi in pm.ranges():
        lo, hi = max(lo, 0), min(hi, 0xFFFF)
        if lo <= hi:
            out.append((lo, hi))
    return tuple(out)


class _Rows:
    """Rule rows of one packet class, in priority order, as the arrays _classify wants."""

    def __init__(self) -> None:
        self.lo: list[tuple[int, ...]] = []
        self.hi: list[tuple[int, ...]] = []
        self.masks: list[tuple[int, int, int, int]] = []
        self.icmp: list[tuple[int, int]] = []
        self.flags: list[tuple[int, int, int, int]] = []
        self.where: list[tuple[int, int]] = []

    def add_ace(self, li: int, ei: int, ace: Ace, non_initial: bool) -> None:
        """Rows of one entry for whole packets / initial fragments, or non-initial ones."""
        if ace.action not in ("permit", "deny"):
            return  # remarks do not match
        tos = _tos_check(ace)
        if tos is None:
            return
        permit = ace.action == "permit"
        if non_initial:
            # IOS fragment rules (Cisco, "Access Control Lists and IP Fragments"): L3-only
            # and `fragments` entries apply on their L3 part; an entry with L4 information
            # matches on its L3 part if it is a permit, never if it is a deny.
            if ace.has_l4 and not permit and not ace.fragments:
                return
            sranges = dranges = _FULL_PORTS
            icmp = (-1, -1)
            est = 0
        else:
            if ace.fragments:  # `fragments` entries apply to non-initial fragments only
                return
            sranges = _port_ranges(ace.source_port)
            dranges = _port_ranges(ace.destination_port)
            icmp = (
                -1 if ace.icmp_type is None else ace.icmp_type,
                -1 if ace.icmp_type is None or ace.icmp_code is None else ace.icmp_code,
            )
            est = 1 if ace.established else 0
        if ace.protocol is None:
            plo, phi = 0, 0xFF
        else:
            plo = phi = ace.protocol
        slo, shi, smask, sval = _address(ace.source)
        dlo, dhi, dmask, dval = _address(ace.destination)
        masks = (smask, sval, dmask, dval)
        flags = (tos[0], tos[1], est, 1 if permit else 0)
        for splo, sphi in sranges:
            for dplo, dphi in dranges:
                self.lo.append((slo, dlo, splo, dplo, plo))
                self.hi.append((shi, dhi, sphi, dphi, phi))
                self.masks.append(masks)
                self.icmp.append(icmp)
                self.flags.append(flags)
                self.where.append((li, ei))

    def arrays(self) -> dict[str, npt.NDArray[Any]]:
        n = len(self.lo)
        return {
            "lo": np.array(self.lo, dtype=np.uint32).reshape(n, 5),
            "hi": np.array(self.hi, dtype=np.uint32).reshape(n, 5),
            "masks": np.array(self.masks, dtype=np.uint32).reshape(n, 4),
            "icmp": np.array(self.icmp, dtype=np.int16).reshape(n, 2),
            "flags": np.array(self.flags, dtype=np.uint8).reshape(n, 4),
            "where": np.array(self.where, dtype=np.int32).reshape(n, 2),
        }


def _groups(lo: npt.NDArray[np.uint32], hi: npt.NDArray[np.uint32], n_split: int) -> Any:
    """Tree of each row: split rows by whether source / destination are wide prefixes.

    Rows whose source (destination) covers more than a /``WIDE`` are copied into every
    slice of a source (destination) cut; giving them their own tree keeps the trees small
    (EffiCuts' separable trees). ``n_split`` 1 = one tree, 2 = rows wide in both apart,
    4 = the four combinations, those with fewer than 1/16 of the rows merged into one
    tree (each tree costs a walk and a leaf scan per packet; a few hundred wide rows
    cost little copying). Measured on ClassBench acl1 / fw1 / ipc1 (bench/classify.py).
    """
    n = lo.shape[0]
    if n_split <= 1 or n == 0:
        return np.zeros(n, dtype=np.int32), 1
    span_s = hi[:, 0].astype(np.int64) - lo[:, 0]
    span_d = hi[:, 1].astype(np.int64) - lo[:, 1]
    wide_s = span_s >= (1 << (32 - _WIDE))
    wide_d = span_d >= (1 << (32 - _WIDE))
    if n_split == 2:
        g = (wide_s & wide_d).astype(np.int32)
    else:
        g = wide_s.astype(np.int32) * 2 + wide_d.astype(np.int32)
    # groups of few rows walk one tree together
    counts = np.bincount(g, minlength=4)
    small = (counts > 0) & (counts * _SMALL < n)
    if small.sum() > 1:
        g = np.where(small[g], int(np.argmax(small)), g)
    # renumber the non-empty groups 0..k-1
    used = np.unique(g)
    remap = np.zeros(4, dtype=np.int32)
    remap[used] = np.arange(used.size, dtype=np.int32)
    return remap[g].astype(np.int32), max(int(used.size), 1)


_WIDE = 8  # prefixes shorter than /8 are "wide"
_SMALL = 16


def _as_i64(values: Any, n: int | None, name: str, lo: int, hi: int, default: int) -> Any:
    if values is None:
        if n is None:
            raise ValueError(f"{name} is required")
        return np.full(n, default, dtype=np.int64)
    arr = np.ascontiguousarray(values, dtype=np.int64)
    if arr.ndim == 0 and n is not None:
        arr = np.full(n, int(arr), dtype=np.int64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} values, expected {n}")
    if arr.size and (int(arr.min()) < lo or int(arr.max()) > hi):
        raise ValueError(f"{name} out of range {lo}..{hi}")
    return arr


class Classifier:
    """Ordered access lists (one per crypto map entry) compiled for batch lookups.

    ``classify(batch)`` -> list index per packet (-1 = no list protects it);
    ``classify(batch, entries=True)`` -> (list index, entry index); ``lookup(batch)`` ->
    ``Classification`` with the status too; ``classify_fields(...)`` on header arrays.
    ``mirror=True`` swaps source and destination (addresses and ports) first, for
    inbound clear-text evaluation (DESIGN.md §Policy 3). Entry indices count every entry
    of ``acl.entries`` (remarks included), so ``acls[l].entries[e]`` is the match.

    Tuning (the defaults suit everything from a few entries to 10K): ``binth`` rows a
    leaf may hold before it is cut, ``spfac`` the HiCuts space factor (row copies per
    cut <= spfac * rows), ``split`` the number of separable trees (1, 2 or 4; default 4
    above 64 rows, else 1), ``budget`` bytes each forest's trees may take (past it,
    remaining nodes become longer leaves: slower, still exact).
    """

    __slots__ = ("acls", "_compiled", "build_seconds", "_splits", "_whole", "_boxes")

    def __init__(
        self,
        acls: Sequence[AccessList],
        *,
        binth: int = 8,
        spfac: float = 4.0,
        split: int | None = None,
        budget: int = 16_000_000,
    ) -> None:
        t0 = time.perf_counter()
        if split not in (None, 1, 2, 4):
            raise ValueError("split must be 1, 2 or 4")
        self.acls = tuple(acls)
        for a in self.acls:
            if not isinstance(a, AccessList):
                raise TypeError("Classifier takes a sequence of AccessList")
        whole, frag = _Rows(), _Rows()
        for li, acl in enumerate(self.acls):
            for ei, ace in enumerate(acl.entries):
                whole.add_ace(li, ei, ace, non_initial=False)
                frag.add_ace(li, ei, ace, non_initial=True)
        forests = []
        splits = []
        for rows in (whole, frag):
            arr = rows.arrays()
            if rows is whole:
                self._whole = arr  # (for first_match_box)
            n_split = split if split is not None else (4 if len(rows.lo) > 64 else 1)
            group, ngroups = _groups(arr["lo"], arr["hi"], n_split)
            splits.append(ngroups)
            forests.append(
                _classify.Forest(
                    arr["lo"], arr["hi"], arr["masks"], arr["icmp"], arr["flags"],
                    arr["where"], group, ngroups, binth, spfac, budget,
                )
            )
        self._compiled = _classify.Compiled(forests[0], forests[1], len(self.acls))
        self._boxes: dict[tuple[int, int], Any] = {}
        self._splits = tuple(splits)
        self.build_seconds = time.perf_counter() - t0

    def __len__(self) -> int:
        return len(self.acls)

    def __repr__(self) -> str:
        return f"<Classifier {len(self.acls)} lists, {self.nbytes} bytes>"

    @property
    def nbytes(self) -> int:
        """Memory held by the compiled structure (rows, nodes, children, leaves)."""
        return int(self._compiled.nbytes)

    def stats(self) -> dict[str, dict[str, int]]:
        """Shape of both forests (rows, trees, nodes, leaves, depth, bytes)."""
        return {"whole": self._compiled.whole.stats(), "fragments": self._compiled.frag.stats()}

    # -- packets --------------------------------------------------------------------------
    def lookup(
        self, batch: PacketBatch, mirror: bool = False, *, scalar: bool = False
    ) -> Classification:
        """List index, entry index and status of every IPv4 packet of ``batch``.

        ``scalar=True`` runs the plain one-packet-at-a-time loop instead of the blocks of
        interleaved tree walks: the same answers, slower; the reference variant for tests.
        """
        return self._classify(batch, mirror, bool(scalar), None)

    def lookup_with_headers(
        self, batch: PacketBatch, mirror: bool = False
    ) -> tuple[Classification, npt.NDArray[np.uint32]]:
        """``lookup``, plus the header fields each packet was classified by, read in the
        same pass: an (n, ``HEADER_COLUMNS``) uint32 array, columns ``H_SRC``, ``H_DST``,
        ``H_SPORT``, ``H_DPORT`` (TCP / UDP of whole packets and first fragments, else 0),
        ``H_PROTO``, ``H_TOS``, ``H_BYTE0`` (the first byte: version and IHL; 0 for an empty
        packet; there whatever the status) and ``H_FRAG`` (0 not a fragment, 1 the first,
        2 a later one). As in the packet, not mirrored; zeros where the status is not 0."""
        headers = np.empty((len(batch) if isinstance(batch, PacketBatch) else 0,
                            HEADER_COLUMNS), dtype=np.uint32)
        return self._classify(batch, mirror, False, headers), headers

    def _classify(self, batch: PacketBatch, mirror: bool, scalar: bool,
                  headers: npt.NDArray[np.uint32] | None) -> Classification:
        """One compiled classification pass (``headers``: filled too, when given)."""
        if not isinstance(batch, PacketBatch):
            raise TypeError("lookup takes a PacketBatch")
        n = len(batch)
        lists = np.empty(n, dtype=np.int32)
        entries = np.empty(n, dtype=np.int32)
        status = np.empty(n, dtype=np.uint8)
        self._compiled.classify_packets(
            batch.buffer, batch.offsets, batch.lengths, bool(mirror), lists, entries, status,
            scalar, headers,
        )
        return Classification(lists, entries, status)

    def first_match_box(self, lst: int, entry: int
                        ) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
        """(lo, hi) of the five ranges (source, destination, source port, destination
        port, protocol) of entry ``entry`` of list ``lst`` when those ranges alone decide,
        for a packet that is not a fragment, that this entry is the list's first match:
        the entry is a ``permit`` compiled to one row with no check beyond the ranges
        (contiguous wildcards, one port range, no ICMP type, ``established`` or TOS), and
        no earlier row of the list overlaps it. Else None (a packet in the ranges may still
        match an earlier entry first: look it up)."""
        key = (lst, entry)
        if key in self._boxes:
            return self._boxes[key]  # type: ignore[no-any-return]
        box = None
        w = self._whole["where"]
        rows = np.flatnonzero(w[:, 0] == lst)
        mine = rows[w[rows, 1] == entry]
        if mine.size == 1:
            r = int(mine[0])
            lo, hi = self._whole["lo"], self._whole["hi"]
            masks, icmp, flags = self._whole["masks"], self._whole["icmp"], self._whole["flags"]
            plain = (flags[r, 3] == 1 and flags[r, 0] == 0 and flags[r, 2] == 0
                     and masks[r, 0] == 0 and masks[r, 2] == 0 and (icmp[r] == -1).all())
            earlier = rows[rows < r]
            overlap = ((lo[earlier] <= hi[r]) & (hi[earlier] >= lo[r])).all(axis=1)
            if plain and not overlap.any():
                box = (tuple(int(v) for v in lo[r]), tuple(int(v) for v in hi[r]))
        self._boxes[key] = box
        return box

    def match_lists_with_headers(
        self, batch: PacketBatch, lists: npt.ArrayLike, mirror: bool = False, *,
        max_rows: int = 64,
    ) -> tuple[Classification, npt.NDArray[np.uint32]]:
        """``match_lists``, plus the header fields read on the way (the array of
        ``lookup_with_headers``)."""
        headers = np.empty((len(batch), HEADER_COLUMNS), dtype=np.uint32)
        return self.match_lists(batch, lists, mirror, max_rows=max_rows,
                                _headers=headers), headers

    def match_lists(
        self, batch: PacketBatch, lists: npt.ArrayLike, mirror: bool = False, *,
        max_rows: int = 64, _headers: npt.NDArray[np.uint32] | None = None,
    ) -> Classification:
        """Packet i against list ``lists[i]`` alone: ``entries[i]`` is the index of that
        list's first entry matching the packet if it is a ``permit``, else -1 (a ``deny``,
        no match, or an unreadable packet, with its ``status`` as ``lookup`` gives it);
        -2 where the list compiles to more than ``max_rows`` rows (not scanned: the caller
        decides another way). Unlike ``lookup``, a deny does not move on to the next list.

        A linear scan of the list's rows per packet, in C: for short lists, such as the
        access list of the crypto map entry an SA was made for (the inner-flow check)."""
        if not isinstance(batch, PacketBatch):
            raise TypeError("match_lists takes a PacketBatch")
        n = len(batch)
        given = np.asarray(lists)
        if given.shape != (n,):
            raise ValueError(f"lists must have one entry per packet ({n})")
        if n and (given.dtype.kind not in "iu" or int(given.min()) < 0
                  or int(given.max()) >= len(self.acls)):
            raise ValueError(f"lists must be list indexes 0..{len(self.acls) - 1}")
        want = np.ascontiguousarray(given, dtype=np.int32)
        entries = np.empty(n, dtype=np.int32)
        status = np.empty(n, dtype=np.uint8)
        self._compiled.match_lists(batch.buffer, batch.offsets, batch.lengths, want,
                                   bool(mirror), int(max_rows), entries, status, _headers)
        return Classification(want, entries, status)

    @overload
    def classify(
        self, batch: PacketBatch, mirror: bool = ..., entries: Literal[False] = ...
    ) -> npt.NDArray[np.int32]: ...
    @overload
    def classify(
        self, batch: PacketBatch, mirror: bool = ..., *, entries: Literal[True]
    ) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32]]: ...
    def classify(self, batch: PacketBatch, mirror: bool = False, entries: bool = False) -> Any:
        """Index of the protecting list per packet (-1: none, or unreadable packet)."""
        res = self.lookup(batch, mirror)
        return (res.lists, res.entries) if entries else res.lists

    # -- header fields --------------------------------------------------------------------
    def classify_fields(
        self,
        proto: Any,
        src: Any,
        dst: Any,
        sport: Any = None,
        dport: Any = None,
        frag: Any = None,
        mirror: bool = False,
        *,
        icmp_type: Any = None,
        icmp_code: Any = None,
        tcp_flags: Any = None,
        tos: Any = None,
        entries: bool = False,
        scalar: bool = False,
    ) -> Any:
        """Like ``classify`` on header-field arrays (``PacketFields`` semantics).

        ``frag``: 0 none, 1 initial, 2 non-initial fragment (ports, ICMP and flags of a
        non-initial fragment are ignored); ``icmp_type`` / ``icmp_code`` default to -1
        (not ICMP), ``tcp_flags`` and ``tos`` to 0, ports to 0.
        """
        p = _as_i64(proto, None, "proto", 0, 255, 0)
        n = p.shape[0]
        s = _as_i64(src, n, "src", 0, 0xFFFFFFFF, 0)
        d = _as_i64(dst, n, "dst", 0, 0xFFFFFFFF, 0)
        sp = _as_i64(sport, n, "sport", 0, 0xFFFF, 0)
        dp = _as_i64(dport, n, "dport", 0, 0xFFFF, 0)
        fr = _as_i64(frag, n, "frag", 0, 2, 0)
        it = _as_i64(icmp_type, n, "icmp_type", -1, 255, -1)
        ic = _as_i64(icmp_code, n, "icmp_code", -1, 255, -1)
        tf = _as_i64(tcp_flags, n, "tcp_flags", 0, 255, 0)
        tb = _as_i64(tos, n, "tos", 0, 255, 0)
        lists = np.empty(n, dtype=np.int32)
        ents = np.empty(n, dtype=np.int32)
        self._compiled.classify_fields(
            p, s, d, sp, dp, fr, it, ic, tf, tb, bool(mirror), lists, ents, bool(scalar)
        )
        return (lists, ents) if entries else lists
