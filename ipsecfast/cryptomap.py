"""A crypto map set compiled for lookups: the SPD of one interface (DESIGN.md §Policy 1-3, 8, 9).

``CryptoMapSpd(lists)`` takes, in evaluation order, what each crypto map entry matches
with (``SpdList``): its access list as the seed's rules make it effective, plus a flag for
entries that drop everything they see. ``lookup(batch, mirror)`` answers per packet the
entry and the access-list entry (ACE) that protect it; ``flow_match`` checks packets
against one entry alone (the inner-flow check after decapsulation).

Rules applied here, once, when the SPD is built:

* ``ipsec-manual`` entries use the first ``permit`` only; later ACEs are ignored (the
  seed: "Access lists for crypto map entries tagged as ipsec-manual are restricted to a
  single permit entry and subsequent entries are ignored"). ``deny`` lines before it
  still apply.
* A dynamic entry without ``match address`` "is ignored during traffic filtering"; one
  whose list "does not exist or is empty" makes "the router drop all packets": it
  matches every packet that reaches it (``drop_all``).

The module knows access lists and packets only; ``router.py`` builds it from a
``Config``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .acl import AccessList, Ace
from .classifier import Classification, Classifier
from .packets import PacketBatch

__all__ = ["SpdList", "CryptoMapSpd", "manual_acl", "MULTICAST_NET", "LIMITED_BROADCAST"]

MULTICAST_NET = (0xE0000000, 0xF0000000)  # 224.0.0.0/4 (value, mask)
LIMITED_BROADCAST = 0xFFFFFFFF


def manual_acl(acl: AccessList) -> AccessList:
    """The part of ``acl`` an ``ipsec-manual`` entry uses: up to its first ``permit``.

    Entry indexes stay those of ``acl`` (the list is a prefix of it)."""
    out = AccessList(acl.name, acl.kind)
    for ace in acl.entries:
        out.entries.append(ace)
        if ace.action == "permit":
            break
    return out


_PERMIT_ANY = AccessList("<drop-all>", "named", [Ace(10, "permit")])


@dataclass(frozen=True)
class SpdList:
    """What one crypto map entry matches with.

    ``acl`` None: the entry matches nothing (ignored during traffic filtering);
    ``drop_all``: the entry matches every packet that reaches it, to drop it."""

    acl: AccessList | None
    drop_all: bool = False

    @property
    def effective(self) -> AccessList:
        if self.drop_all:
            return _PERMIT_ANY
        return self.acl if self.acl is not None else AccessList("<none>", "named")


class CryptoMapSpd:
    """The entries of one crypto map set, in order, compiled into one ``Classifier``."""

    def __init__(self, lists: Sequence[SpdList]) -> None:
        self.lists = tuple(lists)
        self.drop_all = np.array([x.drop_all for x in self.lists], dtype=bool)
        self._classifier = Classifier([x.effective for x in self.lists])
        self._single: dict[int, Classifier] = {}

    def __len__(self) -> int:
        return len(self.lists)

    def lookup(self, batch: PacketBatch, mirror: bool = False) -> Classification:
        """Per packet: entry index (-1: no entry protects it), ACE index, status."""
        return self._classifier.lookup(batch, mirror)

    def lookup_with_headers(self, batch: PacketBatch
                            ) -> tuple[Classification, npt.NDArray[np.uint32]]:
        """``lookup`` (not mirrored) and the header fields read on the way
        (``Classifier.lookup_with_headers``)."""
        return self._classifier.lookup_with_headers(batch)

    def lookup_fields(self, proto: npt.NDArray[np.int64], src: npt.NDArray[np.int64],
                      dst: npt.NDArray[np.int64], tos: npt.NDArray[np.int64]
                      ) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32]]:
        """(entry, ACE) of packets without ports (our own ESP / AH headers), by fields."""
        lists, entries = self._classifier.classify_fields(proto, src, dst, tos=tos,
                                                          entries=True)
        return np.asarray(lists, dtype=np.int32), np.asarray(entries, dtype=np.int32)

    def flow_match(self, entry: int, batch: PacketBatch, mirror: bool = True
                   ) -> npt.NDArray[np.int32]:
        """ACE index of entry ``entry``'s list that permits each packet (-1: not permitted).

        Only this entry's list is consulted: whether an earlier entry would also match
        does not matter for the SA's own flow."""
        cls = self._single.get(entry)
        if cls is None:
            cls = self._single[entry] = Classifier([self.lists[entry].effective])
        res = cls.lookup(batch, mirror)
        return np.where((res.lists == 0) & (res.status == 0), res.entries, -1).astype(np.int32)

    def inner_selector(self, entry: int, ace: int) -> tuple[int, ...] | None:
        """The ranges an inbound inner packet of an SA made for ACE ``ace`` of entry
        ``entry`` lies in exactly when that ACE is its first match (mirrored: the packet
        comes from the ACE's destination side), as ``_esp.run_multi``'s selector row
        (src lo / hi, dst lo / hi, sport lo / hi, dport lo / hi, proto lo / hi), for
        packets that are not fragments; None where the ranges alone cannot tell
        (``Classifier.first_match_box``)."""
        box = self._classifier.first_match_box(entry, ace)
        if box is None:
            return None
        lo, hi = box  # (source, destination, source port, destination port, protocol)
        return (lo[1], hi[1], lo[0], hi[0], lo[3], hi[3], lo[2], hi[2], lo[4], hi[4])

    def flows_match(self, entries: npt.NDArray[np.int64], batch: PacketBatch,
                    mirror: bool = True
                    ) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.uint32]]:
        """``flow_match`` for many entries at once: packet i against entry
        ``entries[i]``'s list alone. Short lists are scanned in one compiled pass over the
        batch; the packets of a long list (more than ``FLOW_SCAN_ROWS`` compiled rows) go
        through that entry's own classifier. Returns the ACE per packet and the header
        fields the pass read (``Classifier.lookup_with_headers``' array, not mirrored)."""
        res, headers = self._classifier.match_lists_with_headers(
            batch, entries, mirror, max_rows=FLOW_SCAN_ROWS)
        ace = res.entries
        long = np.flatnonzero(ace == -2)
        if long.size:
            which = entries[long]
            for e in np.unique(which).tolist():
                sel = long[which == e]
                sub = PacketBatch._trusted(batch.buffer, batch.offsets[sel], batch.lengths[sel])
                ace[sel] = self.flow_match(e, sub, mirror)
        return ace, headers


# Compiled rows of an entry's list up to which the inner-flow check scans the list per
# packet (a crypto ACL is a few lines); a longer list is looked up through its own tree.
FLOW_SCAN_ROWS = 64


def group_destinations(dst: npt.NDArray[np.int64], broadcasts: npt.NDArray[np.int64]
                       ) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """(multicast, broadcast) masks of destination addresses; ``broadcasts`` are the
    directed broadcast addresses of the router's subnets."""
    multicast = (dst & MULTICAST_NET[1]) == MULTICAST_NET[0]
    broadcast = (dst == LIMITED_BROADCAST) | np.isin(dst, broadcasts)
    return multicast, broadcast
