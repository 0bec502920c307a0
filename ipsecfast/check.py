"""``ipsecfast check``: a linter for crypto map configurations, by the seed guide's rules.

``check_config(config)`` looks at one router; ``check_pair(a, b)`` also at how two routers
that protect traffic between them fit together (mirror-image access lists and who can
initiate, Figure 3; transform sets in common; manual SPIs and keys; peers; ISAKMP
policies and pre-shared keys). Each ``Finding`` has a severity (error / warning / info),
the line it is about, the rule that fired and a sentence that says why, drawn from the
seed. ``exit_status(findings)`` is 0 (clean or only info), 1 (warnings) or 2 (errors).

Flow-set logic. An access-list entry with contiguous wildcards is a box in the
5-dimensional space (protocol, source, destination, source port, destination port); the
entries of interest are compared as unions of boxes with exact subtraction, so "is this
entry's traffic all caught by earlier entries?" or "are these two lists mirror images?"
are answered exactly. Entries that also look at ICMP types, TCP flags, DSCP / precedence /
TOS or fragments match less than their box: they are never used as the covering side of a
comparison (so a finding is never invented from them), only as the covered side. IP
fragments are not modelled: the analysis is about flows.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Literal

from .acl import AccessList, Ace
from .config import (
    Config,
    CryptoMapEntry,
    IsakmpKey,
    IsakmpPolicy,
    Unparsed,
)

__all__ = ["RULES", "Finding", "check_config", "check_pair", "exit_status", "format_findings",
           "findings_json", "Box", "ace_boxes", "subtract", "is_subset", "same_region"]

Severity = Literal["error", "warning", "info"]

# Every rule a finding can name (the tests make each one fire).
RULES: frozenset[str] = frozenset({
    "ace-unreachable", "acl-no-counterpart", "acl-not-mirror", "acl-reused",
    "deny-permit-conflict", "dynamic-map-unused", "dynamic-no-acl", "dynamic-no-transform-set",
    "dynamic-not-last", "empty-acl", "entry-incomplete", "interface-shutdown",
    "isakmp-lifetime", "isakmp-no-policy-match", "manual-keys-mismatch", "manual-missing-key",
    "manual-counter-mode", "manual-multiple-permits", "manual-no-counterpart",
    "manual-transform-mismatch",
    "map-not-applied", "no-common-transform-set", "no-crypto-endpoint", "no-local-address",
    "peer-is-self", "peer-mismatch", "peer-not-crypto-interface", "permit-any",
    "permit-any-any", "pfs-mismatch", "psk-mismatch", "psk-missing", "shadowed-entry",
    "transform-set-unused", "transport-ignored", "undefined-acl", "undefined-crypto-map",
    "undefined-dynamic-map", "undefined-interface", "undefined-transform-set", "unparsed",
})

_RANK = {"error": 2, "warning": 1, "info": 0}


@dataclass(frozen=True)
class Finding:
    severity: Severity
    rule: str
    line: int | None
    message: str
    source: str | None = None

    def __str__(self) -> str:
        where = f"{self.source or '<config>'}:{self.line if self.line is not None else '-'}"
        return f"{where}: {self.severity}: {self.message} [{self.rule}]"


def exit_status(findings: Iterable[Finding]) -> int:
    return max((_RANK[f.severity] for f in findings), default=0)


def format_findings(findings: list[Finding]) -> str:
    counts = {s: sum(f.severity == s for f in findings) for s in ("error", "warning", "info")}
    lines = [str(f) for f in findings]
    lines.append(f"{counts['error']} error(s), {counts['warning']} warning(s), "
                 f"{counts['info']} info")
    return "\n".join(lines) + "\n"


def findings_json(findings: list[Finding]) -> str:
    return json.dumps({"status": exit_status(findings),
                       "findings": [asdict(f) for f in findings]}, indent=2) + "\n"


# ---------------------------------------------------------------------------------------
# Flow regions: unions of 5-dimensional boxes

Interval = tuple[int, int]
Box = tuple[Interval, Interval, Interval, Interval, Interval]  # proto, src, dst, sport, dport
_FULL_PORTS: Interval = (0, 65535)
_MAX_BOXES = 20000  # give up (answer "unknown") beyond this many pieces


def _addr_interval(address: int, wildcard: int) -> Interval:
    care = ~wildcard & 0xFFFFFFFF
    return (address & care, (address & care) | wildcard)


def is_plain(ace: Ace) -> bool:
    """The entry matches exactly its box (nothing but protocol, addresses, ports)."""
    return (ace.icmp_type is None and not ace.established and not ace.fragments
            and ace.dscp is None and ace.precedence is None and ace.tos is None
            and ace.source.is_contiguous and ace.destination.is_contiguous)


def ace_boxes(ace: Ace) -> list[Box]:
    """The flows an entry matches (an over-approximation when it is not plain)."""
    proto: Interval = (0, 255) if ace.protocol is None else (ace.protocol, ace.protocol)
    src = _addr_interval(ace.source.address, ace.source.wildcard)
    dst = _addr_interval(ace.destination.address, ace.destination.wildcard)
    sps = list(ace.source_port.ranges()) if ace.source_port else [_FULL_PORTS]
    dps = list(ace.destination_port.ranges()) if ace.destination_port else [_FULL_PORTS]
    return [(proto, src, dst, sp, dp) for sp in sps for dp in dps]


def mirror_box(b: Box) -> Box:
    return (b[0], b[2], b[1], b[4], b[3])


def _intersect(a: Box, b: Box) -> Box | None:
    out = []
    for (alo, ahi), (blo, bhi) in zip(a, b, strict=True):
        lo, hi = max(alo, blo), min(ahi, bhi)
        if lo > hi:
            return None
        out.append((lo, hi))
    return (out[0], out[1], out[2], out[3], out[4])


def _box_minus(a: Box, b: Box) -> list[Box]:
    if _intersect(a, b) is None:
        return [a]
    out: list[Box] = []
    cur = list(a)
    for d in range(5):
        lo, hi = cur[d]
        blo, bhi = b[d]
        if lo < blo:
            piece = list(cur)
            piece[d] = (lo, blo - 1)
            out.append((piece[0], piece[1], piece[2], piece[3], piece[4]))
        if hi > bhi:
            piece = list(cur)
            piece[d] = (bhi + 1, hi)
            out.append((piece[0], piece[1], piece[2], piece[3], piece[4]))
        cur[d] = (max(lo, blo), min(hi, bhi))
    return out


class _TooComplex(Exception):
    pass


def subtract(region: list[Box], holes: Iterable[Box]) -> list[Box]:
    """``region`` minus every box of ``holes`` (pieces of a disjoint region stay disjoint)."""
    out = list(region)
    for h in holes:
        nxt: list[Box] = []
        for r in out:
            nxt.extend(_box_minus(r, h))
        out = nxt
        if len(out) > _MAX_BOXES:
            raise _TooComplex
        if not out:
            break
    return out


def is_subset(a: list[Box], b: list[Box]) -> bool:
    return not subtract(a, b)


def same_region(a: list[Box], b: list[Box]) -> bool:
    return is_subset(a, b) and is_subset(b, a)


def _overlaps(a: list[Box], b: list[Box]) -> bool:
    return any(_intersect(x, y) is not None for x in a for y in b)


# ---------------------------------------------------------------------------------------
# What one crypto map entry does with traffic


@dataclass
class _Rule:
    """One permit / deny of an entry's access list, with the flows that reach it."""

    entry: CryptoMapEntry
    ace: Ace
    boxes: list[Box]  # the entry's own box(es)
    reach: list[Box]  # over-approximation of the flows this ACE decides
    claim: list[Box]  # under-approximation (permit: flows this entry surely protects)


def _effective_aces(entry: CryptoMapEntry, acl: AccessList) -> list[Ace]:
    aces = [a for a in acl.entries if a.action != "remark"]
    if entry.is_manual:
        # DESIGN.md §Policy 8 / the seed: a manual entry uses its first permit only.
        for i, a in enumerate(aces):
            if a.action == "permit":
                return aces[: i + 1]
    return aces


def _rules(config: Config, entry: CryptoMapEntry) -> list[_Rule]:
    if entry.match_address is None:
        return []
    acl = config.access_lists.get(entry.match_address)
    if acl is None:
        return []
    out: list[_Rule] = []
    earlier_plain: list[Box] = []
    earlier_all: list[Box] = []
    for ace in _effective_aces(entry, acl):
        boxes = ace_boxes(ace)
        try:
            reach = subtract(boxes, earlier_plain)
            claim = subtract(boxes, earlier_all) if is_plain(ace) else []
        except _TooComplex:
            reach, claim = boxes, []
        out.append(_Rule(entry, ace, boxes, reach, claim if ace.action == "permit" else []))
        earlier_all += boxes
        if is_plain(ace):
            earlier_plain += boxes
    return out


def _permit_boxes(config: Config, entry: CryptoMapEntry) -> list[Box]:
    return [b for r in _rules(config, entry) if r.ace.action == "permit" for b in r.boxes]


def _ace_text(config: Config, entry: CryptoMapEntry, ace: Ace) -> str:
    return f"access list {entry.match_address} `{ace.render()}` (line {ace.lineno})"


# ---------------------------------------------------------------------------------------
# One configuration


class _Checker:
    def __init__(self, config: Config) -> None:
        self.c = config
        self.out: list[Finding] = []

    def add(self, severity: Severity, rule: str, line: int | None, message: str) -> None:
        assert rule in RULES, rule
        self.out.append(Finding(severity, rule, line, message, self.c.source))

    def run(self) -> list[Finding]:
        c = self.c
        self._references()
        self._interfaces()
        for cmap in c.crypto_maps.values():
            self._map_set(cmap.name)
        for entry in c.all_entries():
            self._entry(entry)
        for u in self._all_unparsed():
            self.add("info", "unparsed", u.lineno,
                     f"`{u.text}` is not used by ipsecfast (kept as it is)")
        self.out.sort(key=lambda f: (f.line or 0, -_RANK[f.severity]))
        return self.out

    def _all_unparsed(self) -> list[Unparsed]:
        c = self.c
        items = list(c.unparsed)
        for e in c.all_entries():
            items += e.extra
        for i in c.interfaces.values():
            items += i.extra
        return items

    # -- references -----------------------------------------------------------------------

    def _references(self) -> None:
        c = self.c
        used_ts: set[str] = set()
        used_dyn: set[str] = set()
        for entry in c.all_entries():
            used_ts.update(entry.transform_sets)
            if entry.kind == "dynamic":
                used_dyn.add(entry.dynamic_map or "")
                if entry.dynamic_map not in c.dynamic_maps:
                    self.add("error", "undefined-dynamic-map", entry.lineno,
                             f"{entry.label} references dynamic map {entry.dynamic_map}, "
                             "which is not defined: the entry stands for nothing")
                continue
            if entry.match_address is not None:
                acl = c.access_lists.get(entry.match_address)
                if acl is None:
                    self.add("error", "undefined-acl", entry.lineno,
                             f"{entry.label}: match address {entry.match_address} names an "
                             "access list that is not defined; \"if the specified access list "
                             "does not exist or is empty, the router drops all packets\"")
                elif not any(a.action != "remark" for a in acl.entries):
                    self.add("warning", "empty-acl", entry.lineno,
                             f"{entry.label}: access list {acl.name} is empty; \"a dynamic "
                             "crypto map entry with an empty access list causes traffic to be "
                             "dropped\" and a static one protects nothing")
            missing = [t for t in entry.transform_sets if t not in c.transform_sets]
            if missing:
                sev: Severity = "error" if len(missing) == len(entry.transform_sets) else "warning"
                self.add(sev, "undefined-transform-set", entry.lineno,
                         f"{entry.label}: transform set(s) {', '.join(missing)} not defined"
                         + ("; no SA can be set up with this entry" if sev == "error" else ""))
        for name, cmap in c.crypto_maps.items():
            if not c.interfaces_using(name):
                self.add("warning", "map-not-applied", cmap.lineno,
                         f"crypto map {name} is not applied to any interface: \"you must "
                         "apply a crypto map set to each interface through which IPsec "
                         "traffic flows\"")
            if cmap.local_address is not None and cmap.local_address not in c.interfaces:
                self.add("error", "undefined-interface", cmap.lineno,
                         f"crypto map {name} local-address {cmap.local_address}: no such "
                         "interface is configured, so the map has no local address")
        for name, dyn in c.dynamic_maps.items():
            if name not in used_dyn:
                self.add("warning", "dynamic-map-unused", dyn.lineno,
                         f"crypto dynamic-map {name} is not referenced by any crypto map "
                         f"(crypto map NAME SEQ ipsec-isakmp dynamic {name}), so it is never used")
        for name, ts in c.transform_sets.items():
            if name not in used_ts:
                self.add("info", "transform-set-unused", ts.lineno,
                         f"transform set {name} is not used by any crypto map entry")

    def _interfaces(self) -> None:
        c = self.c
        own = {i.address for i in c.interfaces.values() if i.address}
        for iface in c.interfaces.values():
            if iface.crypto_map is None:
                continue
            if iface.crypto_map not in c.crypto_maps:
                self.add("error", "undefined-crypto-map", iface.lineno,
                         f"interface {iface.name} applies crypto map {iface.crypto_map}, "
                         "which is not defined")
            elif iface.address is None and c.local_address(iface.crypto_map) is None:
                self.add("warning", "no-local-address", iface.lineno,
                         f"interface {iface.name} has crypto map {iface.crypto_map} but no IP "
                         "address: IPsec traffic has no local address")
            if iface.shutdown:
                self.add("info", "interface-shutdown", iface.lineno,
                         f"interface {iface.name} has crypto map {iface.crypto_map} but is shut down")
        for entry in c.all_entries():
            for p in entry.peers:
                if p in own:
                    self.add("warning", "peer-is-self", entry.lineno,
                             f"{entry.label}: set peer {p} is an address of this router; the "
                             "peer must be the remote IPsec device")

    # -- one entry ----------------------------------------------------------------------

    def _entry(self, e: CryptoMapEntry) -> None:
        c = self.c
        if e.kind == "dynamic":
            return
        if e.template:
            if e.match_address is None:
                self.add("warning", "dynamic-no-acl", e.lineno,
                         f"{e.label} has no match address: the router accepts any data flow "
                         "the peer proposes. \"You must configure a match address; otherwise, "
                         "the behavior is not secure.\"")
            if not e.transform_sets:
                self.add("error", "dynamic-no-transform-set", e.lineno,
                         f"{e.label} has no set transform-set, \"the only configuration "
                         "statement required in dynamic crypto map entries\"")
        elif e.is_manual:
            self._manual(e)
        else:
            missing = [what for what, ok in (("match address", e.match_address),
                                              ("set peer", e.peers),
                                              ("set transform-set", e.transform_sets)) if not ok]
            if missing:
                self.add("warning", "entry-incomplete", e.lineno,
                         f"{e.label} has no {', no '.join(missing)}: IOS keeps an incomplete "
                         "crypto map entry disabled")
        acl = c.access_lists.get(e.match_address or "")
        if acl is not None:
            self._any(e, acl)
            if not e.template:
                self._transport(e)

    def _transport(self, e: CryptoMapEntry) -> None:
        """The seed: "The mode setting is applicable only to traffic whose source and
        destination addresses are the IPsec peer addresses; it is ignored for all other
        traffic." Say so when an entry asks for transport mode and its access list never
        matches traffic between the two peers."""
        c = self.c
        sets = [c.transform_sets[t] for t in e.transform_sets if t in c.transform_sets]
        if not sets or any(ts.mode != "transport" for ts in sets) or not e.peers:
            return
        locals_ = {c.local_address(e.map_name, i.name) for i in c.interfaces_using(e.map_name)}
        pairs = [(_ip(a), _ip(p)) for a in locals_ if a for p in e.peers if _ip(p) is not None]
        if not pairs:
            return
        for r in _rules(c, e):
            if r.ace.action != "permit":
                continue
            for b in r.boxes:
                for lo, pe in pairs:
                    if lo is not None and pe is not None and b[1][0] <= lo <= b[1][1] \
                            and b[2][0] <= pe <= b[2][1]:
                        return
        self.add("info", "transport-ignored", e.lineno,
                 f"{e.label} asks for mode transport, but its access list never matches "
                 "traffic between this router and the peer; \"the mode setting is applicable "
                 "only to traffic whose source and destination addresses are the IPsec peer "
                 "addresses\", so this traffic uses tunnel mode")

    def _any(self, e: CryptoMapEntry, acl: AccessList) -> None:
        seen_deny = False
        for ace in acl.entries:
            if ace.action == "deny":
                seen_deny = True
            if ace.action != "permit":
                continue
            if ace.source.is_any and ace.destination.is_any:
                self.add("warning", "permit-any-any", ace.lineno,
                         f"access list {acl.name} (used by {e.label}) has `{ace.render()}`: "
                         "\"The permit any any statement is strongly discouraged, because this "
                         "causes all outbound traffic to be protected ... and requires protection "
                         "for all inbound traffic\"; routing protocols, NTP and echo without "
                         "IPsec are then silently dropped")
            elif (ace.source.is_any or ace.destination.is_any) and not seen_deny:
                self.add("warning", "permit-any", ace.lineno,
                         f"access list {acl.name} (used by {e.label}) uses `any` in "
                         f"`{ace.render()}`: Cisco discourages the any keyword in crypto access "
                         "lists (multicast can fail); preface it with deny statements for the "
                         "traffic that must not be protected")

    def _manual(self, e: CryptoMapEntry) -> None:
        c = self.c
        acl = c.access_lists.get(e.match_address or "")
        if e.match_address is None:
            self.add("warning", "entry-incomplete", e.lineno,
                     f"{e.label} has no match address: a manual entry protects nothing without one")
        if acl is not None:
            permits = [a for a in acl.entries if a.action == "permit"]
            for extra in permits[1:]:
                self.add("warning", "manual-multiple-permits", extra.lineno,
                         f"access list {acl.name} is used by ipsec-manual entry {e.label}: "
                         f"\"Access lists for crypto map entries tagged as ipsec-manual are "
                         f"restricted to a single permit entry and subsequent entries are "
                         f"ignored\"; `{extra.render()}` is ignored (use a separate access list "
                         f"and manual entry for it)")
        ts = c.transform_sets.get(e.transform_sets[0]) if e.transform_sets else None
        if ts is None:
            return
        cipher = ts.transforms.esp_cipher
        if cipher is not None and cipher.iv_length == 8 and cipher.block_size == 1:
            # counter-based IVs (GCM, GMAC, ChaCha20-Poly1305, CTR, CCM)
            self.add("error", "manual-counter-mode", e.lineno,
                     f"{e.label} uses {cipher} with static session keys: its IVs are a "
                     "counter, so every time the SA starts again under the same key (a "
                     "reload, another device with this configuration) IVs repeat and the "
                     "key is broken; RFC 3686, 4106, 4309, 4543 and 7634 forbid these "
                     "transforms with manual keys (use ipsec-isakmp, or esp-aes with an "
                     "authenticator)")
        need: list[tuple[str, str]] = []
        for direction in ("inbound", "outbound"):
            if ts.transforms.has_ah:
                need.append((direction, "ah"))
            if ts.transforms.has_esp:
                need.append((direction, "esp"))
        for direction, proto in need:
            if (direction, proto) not in e.session_keys:
                self.add("error", "manual-missing-key", e.lineno,
                         f"{e.label} has no `set session-key {direction} {proto}`: transform set "
                         f"{ts.name} needs it. Without it \"IPsec did not have all of the "
                         "necessary pieces configured\" and the traffic is dropped")

    # -- a crypto map set as a whole ------------------------------------------------------

    def _map_set(self, name: str) -> None:
        c = self.c
        cmap = c.crypto_maps[name]
        ordered = cmap.ordered()
        # Dynamic references should come last.
        last_static = max((e.seq for e in ordered if e.kind != "dynamic"), default=None)
        for e in ordered:
            if e.kind == "dynamic" and last_static is not None and e.seq < last_static:
                self.add("warning", "dynamic-not-last", e.lineno,
                         f"{e.label} references dynamic map {e.dynamic_map} but is not the "
                         f"lowest-priority entry (seq {last_static} comes after it): \"crypto "
                         "map entries that reference dynamic crypto map sets should be the "
                         "lowest priority crypto map entries in the crypto map set\"")
        entries = c.effective_entries(name)
        by_acl: dict[str, CryptoMapEntry] = {}
        for e in entries:
            if e.match_address is None:
                continue
            first = by_acl.setdefault(e.match_address, e)
            if first is not e:
                self.add("warning", "acl-reused", e.lineno,
                         f"{e.label} uses access list {e.match_address}, as {first.label} does: "
                         "\"Different access lists must be used in different entries of the "
                         "same crypto map set\"")
        rules = [(i, r) for i, e in enumerate(entries) for r in _rules(c, e)]
        self._shadowing(rules)
        self._deny_permit(rules)

    def _shadowing(self, rules: list[tuple[int, _Rule]]) -> None:
        claimed: list[tuple[int, _Rule]] = []
        for i, r in rules:
            if not r.reach:
                if r.ace.action == "permit" or r.ace.action == "deny":
                    self.add("warning", "ace-unreachable", r.ace.lineno,
                             f"`{r.ace.render()}` in access list {r.entry.match_address} is "
                             "never reached: earlier entries of the list match all its traffic")
                continue
            if r.ace.action == "permit":
                earlier = [x for j, x in claimed if j < i]
                try:
                    rest = subtract(r.reach, [b for x in earlier for b in x.claim])
                except _TooComplex:
                    rest = r.reach
                if not rest:
                    by = sorted({x.entry.label for x in earlier if _overlaps(x.claim, r.reach)})
                    self.add("warning", "shadowed-entry", r.ace.lineno,
                             f"{_ace_text(self.c, r.entry, r.ace)} in {r.entry.label} is never "
                             f"used: all its traffic is caught first by {', '.join(by)}. \"If "
                             "overlapping networks are used, then the most specific networks are "
                             "defined in crypto sequence numbers before less specific networks\"")
                claimed.append((i, r))

    def _deny_permit(self, rules: list[tuple[int, _Rule]]) -> None:
        reported: set[tuple[int | None, str]] = set()
        for i, d in rules:
            if d.ace.action != "deny" or not d.reach:
                continue
            for j, p in rules:
                if j == i or p.ace.action != "permit" or not p.reach:
                    continue
                if not _overlaps(d.reach, p.reach):
                    continue
                key = (d.ace.lineno, p.entry.label)
                if key in reported:
                    continue
                reported.add(key)
                self.add("warning", "deny-permit-conflict", d.ace.lineno,
                         f"traffic denied by {_ace_text(self.c, d.entry, d.ace)} in "
                         f"{d.entry.label} is permitted by {_ace_text(self.c, p.entry, p.ace)} in "
                         f"{p.entry.label}: having the deny keyword in one crypto map sequence "
                         "number and the permit keyword for the same traffic in another is "
                         "not supported")


def check_config(config: Config) -> list[Finding]:
    """Findings for one configuration, sorted by line."""
    return _Checker(config).run()


# ---------------------------------------------------------------------------------------
# Two configurations: does A talk to B?


def _endpoints(c: Config) -> dict[str, str]:
    """Address -> crypto map name, for the local addresses of applied crypto maps."""
    out: dict[str, str] = {}
    for iface in c.interfaces.values():
        if iface.crypto_map is not None and iface.crypto_map in c.crypto_maps:
            addr = c.local_address(iface.crypto_map, iface.name)
            if addr is not None:
                out[addr] = iface.crypto_map
    return out


def _addresses(c: Config) -> dict[str, str]:
    return {i.address: i.name for i in c.interfaces.values() if i.address}


def _name(c: Config, default: str) -> str:
    return c.source or default


class _PairChecker:
    def __init__(self, a: Config, b: Config) -> None:
        self.a, self.b = a, b
        self.out: list[Finding] = []

    def add(self, c: Config, severity: Severity, rule: str, line: int | None, msg: str) -> None:
        assert rule in RULES, rule
        self.out.append(Finding(severity, rule, line, msg, c.source))

    def run(self) -> list[Finding]:
        a, b = self.a, self.b
        ends_a, ends_b = _endpoints(a), _endpoints(b)
        for c, ends, n in ((a, ends_a, "A"), (b, ends_b, "B")):
            if not ends:
                self.add(c, "info", "no-crypto-endpoint", None,
                         f"{_name(c, n)} has no interface with both an IP address and a crypto "
                         "map, so the peer checks (peers, mirror images, transform sets, keys) "
                         "cannot pair its entries with the other side's")
        to_b = self._toward(a, b, ends_b, "A", "B")
        to_a = self._toward(b, a, ends_a, "B", "A")
        isakmp_used = any(not e.is_manual for e in to_b + to_a) or any(
            e.template for m in ends_a.values() for e in a.effective_entries(m)
        ) or any(e.template for m in ends_b.values() for e in b.effective_entries(m))
        self._isakmp_flows(a, b, to_b, to_a, ends_b, "A", "B")
        self._isakmp_flows(b, a, to_a, to_b, ends_a, "B", "A")
        self._manual(a, b, to_b, to_a)
        self._manual(b, a, to_a, to_b)
        if isakmp_used and (to_b or to_a):
            self._policies(ends_a, ends_b)
        self.out.sort(key=lambda f: (f.source or "", f.line or 0))
        return self.out

    # -- peers ----------------------------------------------------------------------------

    def _toward(self, x: Config, y: Config, ends_y: dict[str, str], xn: str,
                yn: str) -> list[CryptoMapEntry]:
        """x's static / manual entries (on applied maps) whose peer is one of y's endpoints."""
        out: list[CryptoMapEntry] = []
        y_addrs = _addresses(y)
        applied = set(_endpoints(x).values())
        candidates = [e for m in applied for e in x.effective_entries(m)
                      if not e.template and e.peers]
        for e in candidates:
            if any(p in ends_y for p in e.peers):
                out.append(e)
                continue
            for p in e.peers:
                if p in y_addrs:
                    self.add(x, "warning", "peer-not-crypto-interface", e.lineno,
                             f"{e.label}: set peer {p} is {_name(y, yn)}'s interface "
                             f"{y_addrs[p]}, which has no crypto map; the peer must be the "
                             "address where the other side applies its crypto map")
        has_dynamic = any(e.template for m in applied for e in x.effective_entries(m))
        if not out and applied and ends_y and not has_dynamic:
            peers = sorted({p for e in candidates for p in e.peers})
            line = candidates[0].lineno if candidates else None
            self.add(x, "error", "peer-mismatch", line,
                     f"no crypto map entry of {_name(x, xn)} has set peer pointing at "
                     f"{_name(y, yn)} ({', '.join(sorted(ends_y))}); its peers are "
                     f"{', '.join(peers) or 'none'}. \"The crypto map entries must each "
                     "identify the other peer\"")
        return out

    # -- IKE entries: mirror images, who can initiate, transform sets -----------------------

    def _responders(self, y: Config, x_addrs: set[str]) -> list[CryptoMapEntry]:
        """y's entries that can accept a negotiation from x: static ipsec-isakmp entries
        naming x as peer, and the dynamic-map entries of y's applied maps."""
        out = []
        for m in set(_endpoints(y).values()):
            for e in y.effective_entries(m):
                if e.template or (e.kind == "ipsec-isakmp" and any(p in x_addrs for p in e.peers)):
                    out.append(e)
        return out

    def _common_ts(self, x: Config, ex: CryptoMapEntry, y: Config, ey: CryptoMapEntry) -> bool:
        ours = [x.transform_sets[t].transforms for t in ex.transform_sets if t in x.transform_sets]
        theirs = [y.transform_sets[t].transforms for t in ey.transform_sets
                  if t in y.transform_sets]
        return any(t in theirs for t in ours)

    def _accepts(self, y: Config, ey: CryptoMapEntry, proposal: Box, per_host: bool) -> bool:
        """Would y's entry accept x's proposal (seen from x: outbound flow box)?

        An SA request names the flow of one permit entry; with ``set security-association
        level per-host`` it names one source host and one destination host, so it is enough
        that every host pair of the box is permitted somewhere in y's list."""
        if ey.template and ey.match_address is None:
            return True  # "the router accepts any data flow identity proposed by the peer"
        want = mirror_box(proposal)
        if per_host:
            permitted = [b for r in _rules(y, ey) if r.ace.action == "permit" for b in r.claim]
            try:
                return is_subset([want], permitted)
            except _TooComplex:
                return False
        denied: list[Box] = []
        for r in _rules(y, ey):
            if r.ace.action == "deny":
                denied += r.boxes
            elif is_plain(r.ace) and any(is_subset([want], [b]) for b in r.boxes):
                # the whole proposal falls within this permit, and no deny before it
                # takes a part of it away
                return not _overlaps([want], denied)
        return False

    def _isakmp_flows(self, x: Config, y: Config, to_y: list[CryptoMapEntry],
                      to_x: list[CryptoMapEntry], ends_y: dict[str, str], xn: str,
                      yn: str) -> None:
        x_addrs = set(_endpoints(x))
        responders = self._responders(y, x_addrs)
        for ex in to_y:
            if ex.is_manual:
                continue
            rules = [r for r in _rules(x, ex) if r.ace.action == "permit"]
            if not rules:
                continue
            ts_ok = [ey for ey in responders if self._common_ts(x, ex, y, ey)]
            overlapping = [ey for ey in responders
                           if (ey.template and ey.match_address is None)
                           or _overlaps([mirror_box(b) for r in rules for b in r.boxes],
                                        _permit_boxes(y, ey))]
            if overlapping and not any(ey in ts_ok for ey in overlapping):
                self.add(x, "error", "no-common-transform-set", ex.lineno,
                         f"{ex.label} has no transform set in common with "
                         f"{_name(y, yn)}'s {', '.join(e.label for e in overlapping)}: \"The "
                         "crypto map entries must have at least one transform set in common\"")
            self._pfs(x, y, ex, [ey for ey in overlapping if ey in ts_ok], xn, yn)
            for r in rules:
                ok = [ey for ey in overlapping if ey in ts_ok
                      and all(self._accepts(y, ey, b, ex.per_host) for b in r.boxes)]
                if ok:
                    self._mirror_note(x, y, ex, r, ok, xn, yn)
                    continue
                if not overlapping:
                    self.add(x, "error", "acl-no-counterpart", r.ace.lineno,
                             f"{_ace_text(x, ex, r.ace)} in {ex.label}: {_name(y, yn)} has no "
                             "crypto map entry for this traffic, so no SA can be negotiated")
                else:
                    self.add(x, "warning", "acl-not-mirror", r.ace.lineno,
                             f"{_ace_text(x, ex, r.ace)} in {ex.label} is not permitted by "
                             f"{_name(y, yn)}'s crypto access list (not a mirror image): when "
                             f"{_name(x, xn)} initiates for this traffic, its request is a "
                             f"superset of what {_name(y, yn)} permits and is refused "
                             "(Figure 3, case 4)")

    def _pfs(self, x: Config, y: Config, ex: CryptoMapEntry, partners: list[CryptoMapEntry],
             xn: str, yn: str) -> None:
        """The seed: set pfs makes IPsec ask for PFS and "demand PFS in requests received
        from the IPsec peer"."""
        for ey in partners:
            if ex.pfs is not None and ey.pfs is not None and ex.pfs != ey.pfs:
                self.add(x, "error", "pfs-mismatch", ex.lineno,
                         f"{ex.label} uses set pfs {ex.pfs} but {_name(y, yn)}'s {ey.label} "
                         f"uses {ey.pfs}: each side demands its own group, so negotiation "
                         "fails")
            elif ex.pfs is None and ey.pfs is not None:
                self.add(x, "warning", "pfs-mismatch", ex.lineno,
                         f"{_name(y, yn)}'s {ey.label} demands PFS ({ey.pfs}) but {ex.label} "
                         f"has no set pfs: when {_name(x, xn)} initiates, its request has no "
                         "PFS and is refused")

    def _mirror_note(self, x: Config, y: Config, ex: CryptoMapEntry, r: _Rule,
                     ok: list[CryptoMapEntry], xn: str, yn: str) -> None:
        """x's request for this ACE is accepted; is it a mirror image (both directions)?"""
        for ey in ok:
            if ey.template:
                continue  # a dynamic map never initiates; nothing more to say
            for ry in _rules(y, ey):
                if ry.ace.action != "permit":
                    continue
                mirrored = [mirror_box(b) for b in ry.boxes]
                if same_region(mirrored, r.boxes):
                    return  # Figure 3 cases 1 and 2: mirror images
                if is_subset(r.boxes, mirrored):
                    self.add(x, "warning", "acl-not-mirror", r.ace.lineno,
                             f"{_ace_text(x, ex, r.ace)} in {ex.label} is a subset of "
                             f"{_name(y, yn)}'s {_ace_text(y, ey, ry.ace)}, not its mirror image: "
                             f"SAs are set up when {_name(x, xn)} initiates (Figure 3, case 3) "
                             f"but not when {_name(y, yn)} does (case 4). Cisco strongly "
                             "encourages mirror image crypto access lists")
                    return

    # -- manual entries -------------------------------------------------------------------

    def _manual(self, x: Config, y: Config, to_y: list[CryptoMapEntry],
                to_x: list[CryptoMapEntry]) -> None:
        for ex in to_y:
            if not ex.is_manual:
                continue
            rx = [r for r in _rules(x, ex) if r.ace.action == "permit"]
            if not rx:
                continue
            mine = [mirror_box(b) for b in rx[0].boxes]
            partners = [ey for ey in to_x if ey.is_manual]
            exact = [ey for ey in partners
                     if any(same_region(mine, r.boxes) for r in _rules(y, ey)
                            if r.ace.action == "permit")]
            near = [ey for ey in partners if _overlaps(mine, _permit_boxes(y, ey))]
            if not exact:
                if near:
                    self.add(x, "error", "acl-not-mirror", rx[0].ace.lineno,
                             f"{_ace_text(x, ex, rx[0].ace)} in manual entry {ex.label} is not "
                             f"the mirror image of {_name(y, 'B')}'s {near[0].label}: with "
                             "manual SAs \"the configuration information in both systems must be "
                             "the same\"; traffic outside the other side's flow is dropped")
                else:
                    self.add(x, "error", "manual-no-counterpart", ex.lineno,
                             f"manual entry {ex.label} has no ipsec-manual entry at "
                             f"{_name(y, 'B')} for its traffic, so nothing there can decrypt it")
                    continue
            ey = (exact or near)[0]
            self._manual_pair(x, ex, y, ey)

    def _manual_pair(self, x: Config, ex: CryptoMapEntry, y: Config, ey: CryptoMapEntry) -> None:
        tx = x.transform_sets.get(ex.transform_sets[0]) if ex.transform_sets else None
        ty = y.transform_sets.get(ey.transform_sets[0]) if ey.transform_sets else None
        if tx is not None and ty is not None and (tx.transforms, tx.mode) != (ty.transforms,
                                                                               ty.mode):
            self.add(x, "error", "manual-transform-mismatch", ex.lineno,
                     f"manual entry {ex.label} uses transform set {tx.name} "
                     f"({tx.transforms.render()}, {tx.mode}) but {_name(y, 'B')}'s {ey.label} "
                     f"uses {ty.name} ({ty.transforms.render()}, {ty.mode}): \"both sides must "
                     "specify the same transform set\"")
        # Only A's outbound against B's inbound: the other half is checked from B's side.
        for proto in ("esp", "ah"):
            out_x = ex.session_keys.get(("outbound", proto))
            in_y = ey.session_keys.get(("inbound", proto))
            if out_x is None and in_y is None:
                continue
            if out_x is None or in_y is None:
                have, lacks = (ex, ey) if out_x is not None else (ey, ex)
                which = "inbound" if out_x is not None else "outbound"
                self.add(x, "error", "manual-keys-mismatch", ex.lineno,
                         f"{_name(x, 'A')}'s {ex.label} and {_name(y, 'B')}'s {ey.label}: "
                         f"{have.label} has a {proto} session key but {lacks.label} has no "
                         f"{which} {proto} session key to pair with it")
                continue
            if out_x.spi != in_y.spi:
                self.add(x, "error", "manual-keys-mismatch", out_x.lineno,
                         f"outbound {proto} SPI {out_x.spi} of {ex.label} is not "
                         f"{_name(y, 'B')}'s inbound {proto} SPI {in_y.spi} (line {in_y.lineno}): "
                         "one side's outbound SA is the other side's inbound SA")
            if (out_x.cipher, out_x.authenticator) != (in_y.cipher, in_y.authenticator):
                self.add(x, "error", "manual-keys-mismatch", out_x.lineno,
                         f"outbound {proto} keys of {ex.label} differ from {_name(y, 'B')}'s "
                         f"inbound {proto} keys (line {in_y.lineno}); the keys are not shown")

    # -- ISAKMP policies and pre-shared keys ------------------------------------------------

    def _policies(self, ends_a: dict[str, str], ends_b: dict[str, str]) -> None:
        a, b = self.a, self.b
        pa = list(a.isakmp_policies.values()) or [IsakmpPolicy(65535)]
        pb = list(b.isakmp_policies.values()) or [IsakmpPolicy(65535)]
        same = [(p, q) for p in pa for q in pb if p.parameters() == q.parameters()]
        line_a = min((p.lineno for p in a.isakmp_policies.values() if p.lineno), default=None)
        if not same:
            self.add(a, "error", "isakmp-no-policy-match", line_a,
                     f"no ISAKMP policy of {_name(a, 'A')} matches one of {_name(b, 'B')} "
                     "(encryption, hash, authentication and group must all be equal), so IKE "
                     "phase 1 fails and no IPsec SA is negotiated")
            return
        # The responder accepts a proposal whose lifetime is <= its own policy's lifetime.
        a_init = any(p.lifetime <= q.lifetime for p, q in same)
        b_init = any(q.lifetime <= p.lifetime for p, q in same)
        for ok, who in ((a_init, _name(a, "A")), (b_init, _name(b, "B"))):
            if not ok:
                self.add(a, "warning", "isakmp-lifetime", line_a,
                         f"ISAKMP policies match except for the lifetime: when {who} initiates "
                         "its lifetime is longer than the responder's and the proposal is "
                         "refused")
        if not any(p.authentication == "pre-share" for p, _ in same):
            return
        keys_ab = self._psk(a, ends_b, "A", "B")
        keys_ba = self._psk(b, ends_a, "B", "A")
        if keys_ab is not None and keys_ba is not None and keys_ab.key != keys_ba.key:
            self.add(a, "error", "psk-mismatch", keys_ab.lineno,
                     f"the pre-shared key {_name(a, 'A')} uses for {keys_ab.address} differs from "
                     f"the one {_name(b, 'B')} uses for {keys_ba.address} (line {keys_ba.lineno}); "
                     "IKE authentication fails (the keys are not shown)")

    def _psk(self, x: Config, ends_y: dict[str, str], xn: str, yn: str) -> IsakmpKey | None:
        for addr in sorted(ends_y):
            for k in sorted(x.isakmp_keys, key=lambda k: -_prefix(k.mask)):
                if k.covers(addr):
                    return k
        line = min((p.lineno for p in x.isakmp_policies.values() if p.lineno), default=None)
        self.add(x, "error", "psk-missing", line,
                 f"{_name(x, xn)} authenticates with pre-shared keys but has no crypto isakmp "
                 f"key for {', '.join(sorted(ends_y))}")
        return None


def _ip(text: str | None) -> int | None:
    try:
        return int(ipaddress.IPv4Address(text or ""))
    except ValueError:
        return None


def _prefix(mask: str | None) -> int:
    if mask is None:
        return 32
    return bin(int.from_bytes(bytes(int(p) for p in mask.split(".")), "big")).count("1")


def check_pair(a: Config, b: Config) -> list[Finding]:
    """Findings for A and B, then for how they fit together (A's side first)."""
    return check_config(a) + check_config(b) + _PairChecker(a, b).run()
