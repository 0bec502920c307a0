"""ClassBench filter sets and traces for the classifier tests and benchmark.

* ``load_rules`` / ``load_trace`` read the files described in
  ../shared/data/classbench/SOURCE.md (``@SA/len DA/len SPlo : SPhi DPlo : DPhi
  0xPP/0xMM 0xFFFF/0xMMMM`` and 7-column headers).
* ``generate_rules`` / ``generate_trace`` make sets of the same shape when ../shared is
  absent (prefix pairs with the length mixes of acl / fw / ipc seeds, exact ports, port
  ranges, a few protocols, ICMP types, TCP ACK flags); traces are ClassBench-like random
  corners of random rules.
* ``to_access_lists`` converts rules to ``AccessList`` objects: prefix -> wildcard,
  ``0 : 65535`` -> no port match, ``p : p`` -> ``eq``, ``0 : h`` -> ``lt h+1``,
  ``l : 65535`` -> ``gt l-1``, else ``range``; ``0x00/0x00`` -> ``ip``; flags
  ``0x1000/0x1000`` on TCP -> ``established``, ``0xTT00/0xFF00`` on ICMP -> ICMP type TT,
  other flag patterns ignored. Rules are split in order into ``nlists`` lists and a
  fraction flipped to ``deny``, to exercise the deny-skip of crypto map entries.
* ``trace_fields`` turns a trace into header-field arrays (adding TCP flags and ICMP
  types), ``linear_scan`` is a numpy vectorised linear scan over the ``Ace`` objects
  (an oracle independent of the compiled rows, and the bench's baseline).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ipsecfast.acl import AccessList, Ace, AddressMatch, PortMatch
from ipsecfast.packets import PacketBatch

SETS = ("acl1_1k", "fw1_1k", "ipc1_1k", "acl1_10k", "fw1_10k", "ipc1_10k")


@dataclass(frozen=True)
class Rule:
    src: int
    src_len: int
    dst: int
    dst_len: int
    sport: tuple[int, int]
    dport: tuple[int, int]
    proto: int  # -1 = any
    flags: tuple[int, int]  # (value, mask)


def _ip(text: str) -> int:
    a, b, c, d = (int(x) for x in text.split("."))
    return (a << 24) | (b << 16) | (c << 8) | d


def load_rules(path: Path) -> list[Rule]:
    rules = []
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        f = line.lstrip("@").split("\t")
        sa, sl = f[0].split("/")
        da, dl = f[1].split("/")
        splo, sphi = (int(x) for x in f[2].split(":"))
        dplo, dphi = (int(x) for x in f[3].split(":"))
        pv, pm = (int(x, 16) for x in f[4].split("/"))
        fv, fm = (int(x, 16) for x in f[5].split("/"))
        rules.append(
            Rule(_ip(sa), int(sl), _ip(da), int(dl), (splo, sphi), (dplo, dphi),
                 pv if pm == 0xFF else -1, (fv, fm))
        )
    return rules


def load_trace(path: Path) -> np.ndarray:
    """(n, 7) int64: SA, DA, SP, DP, PROTO, FLAGS, RULE."""
    arr = np.loadtxt(path, dtype=np.int64, ndmin=2)
    return arr.reshape(-1, 7)


# -- generation (no ../shared) ------------------------------------------------------------
_SHAPES = {
    # (weights of prefix lengths for src, for dst), share of any-proto, of port ranges
    "acl1": ((0, 8, 16, 24, 28, 32), (0.45, 0.02, 0.05, 0.25, 0.13, 0.10),
             (0, 16, 24, 28, 32), (0.03, 0.05, 0.30, 0.22, 0.40), 0.08, 0.11),
    "fw1": ((0, 8, 16, 24, 28, 32), (0.40, 0.03, 0.07, 0.20, 0.15, 0.15),
            (0, 8, 16, 24, 28, 32), (0.25, 0.03, 0.07, 0.20, 0.20, 0.25), 0.12, 0.09),
    "ipc1": ((0, 8, 16, 24, 28, 32), (0.15, 0.03, 0.12, 0.30, 0.15, 0.25),
             (0, 8, 16, 24, 28, 32), (0.15, 0.03, 0.12, 0.30, 0.15, 0.25), 0.30, 0.20),
}
_WELL_KNOWN = (20, 21, 22, 23, 25, 53, 67, 69, 80, 110, 123, 137, 139, 161, 179, 443, 445,
               500, 1433, 1521, 3306, 4500, 8080)


def _gen_ports(rng: np.random.Generator, range_share: float, allow_any: float) -> tuple[int, int]:
    u = rng.random()
    if u < allow_any:
        return (0, 65535)
    if u < allow_any + range_share:
        kind = rng.integers(4)
        if kind == 0:
            return (1024, 65535)
        if kind == 1:
            return (0, 1023)
        lo = int(rng.integers(0, 60000))
        return (lo, lo + int(rng.integers(1, 5000)))
    p = int(rng.choice(_WELL_KNOWN)) if rng.random() < 0.7 else int(rng.integers(0, 65536))
    return (p, p)


def generate_rules(kind: str, n: int, seed: int = 0) -> list[Rule]:
    """Rules shaped like ClassBench's ``kind`` seed (acl1, fw1 or ipc1)."""
    rng = np.random.default_rng(seed)
    slens, sw, dlens, dw, any_proto, range_share = _SHAPES[kind]
    # addresses come from a pool of "sites" so that prefixes nest and overlap
    pool = rng.integers(0, 1 << 32, size=max(8, n // 6), dtype=np.int64)
    rules = []
    for _ in range(n):
        sl = int(rng.choice(slens, p=np.array(sw) / sum(sw)))
        dl = int(rng.choice(dlens, p=np.array(dw) / sum(dw)))
        s = int(rng.choice(pool)) ^ int(rng.integers(0, 256))
        d = int(rng.choice(pool)) ^ int(rng.integers(0, 256))
        s &= ((0xFFFFFFFF << (32 - sl)) & 0xFFFFFFFF) if sl else 0
        d &= ((0xFFFFFFFF << (32 - dl)) & 0xFFFFFFFF) if dl else 0
        u = rng.random()
        if u < any_proto:
            rules.append(Rule(s, sl, d, dl, (0, 65535), (0, 65535), -1, (0, 0)))
            continue
        proto = int(rng.choice((6, 6, 6, 17, 17, 1, 50, 47)))
        flags = (0, 0)
        if proto in (6, 17):
            sp = _gen_ports(rng, range_share, 0.85 if kind == "acl1" else 0.6)
            dp = _gen_ports(rng, range_share, 0.1)
            if proto == 6 and rng.random() < 0.1:
                flags = (0x1000, 0x1000)
        else:
            sp = dp = (0, 65535)
            if proto == 1 and rng.random() < 0.5:
                flags = (int(rng.choice((0, 3, 8, 11))) << 8, 0xFF00)
        rules.append(Rule(s, sl, d, dl, sp, dp, proto, flags))
    return rules


def generate_trace(rules: list[Rule], n: int, seed: int = 0) -> np.ndarray:
    """ClassBench-like headers: a random corner of a random rule, in bursts."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, 7), dtype=np.int64)
    i = 0
    while i < n:
        ri = int(rng.integers(len(rules)))
        r = rules[ri]
        smask = ((1 << (32 - r.src_len)) - 1)
        dmask = ((1 << (32 - r.dst_len)) - 1)
        row = (
            r.src | (smask if rng.random() < 0.5 else 0),
            r.dst | (dmask if rng.random() < 0.5 else 0),
            r.sport[int(rng.integers(2))],
            r.dport[int(rng.integers(2))],
            r.proto if r.proto >= 0 else int(rng.choice((6, 17, 1, 47, 255))),
            0,
            ri,
        )
        for _ in range(min(int(rng.integers(1, 4)), n - i)):
            out[i] = row
            i += 1
    return out


def get_set(name: str, base: Path | None) -> tuple[list[Rule], np.ndarray]:
    """Rules and a trace of ``name`` (e.g. ``fw1_10k``): from ``base`` or generated."""
    kind, size = name.split("_")
    if base is not None and (base / name).exists():
        rules = load_rules(base / name)
        tpath = base / f"{name}_trace"
        trace = load_trace(tpath) if tpath.exists() else generate_trace(rules, 10 * len(rules), 1)
        return rules, trace
    n = 1000 if size == "1k" else 10000
    seed = sum(map(ord, name))
    rules = generate_rules(kind, n, seed)
    return rules, generate_trace(rules, 10 * n, seed + 1)


# -- conversion ---------------------------------------------------------------------------
def _port(lo: int, hi: int) -> PortMatch | None:
    if (lo, hi) == (0, 65535):
        return None
    if lo == hi:
        return PortMatch("eq", (lo,))
    if lo == 0:
        return PortMatch("lt", (hi + 1,))
    if hi == 65535:
        return PortMatch("gt", (lo - 1,))
    return PortMatch("range", (lo, hi))


def rule_to_ace(rule: Rule, seq: int, action: str) -> Ace:
    tcp_udp = rule.proto in (6, 17)
    icmp_type = None
    established = False
    if rule.proto == 1 and rule.flags[1] == 0xFF00:
        icmp_type = rule.flags[0] >> 8
    if rule.proto == 6 and rule.flags == (0x1000, 0x1000):
        established = True
    return Ace(
        seq=seq,
        action=action,  # type: ignore[arg-type]
        protocol=None if rule.proto < 0 else rule.proto,
        source=AddressMatch(rule.src, (1 << (32 - rule.src_len)) - 1),
        source_port=_port(*rule.sport) if tcp_udp else None,
        destination=AddressMatch(rule.dst, (1 << (32 - rule.dst_len)) - 1),
        destination_port=_port(*rule.dport) if tcp_udp else None,
        icmp_type=icmp_type,
        established=established,
    )


def to_access_lists(rules: list[Rule], nlists: int = 12, deny_fraction: float = 0.1,
                    seed: int = 0) -> list[AccessList]:
    rng = np.random.default_rng(seed)
    deny = rng.random(len(rules)) < deny_fraction
    bounds = np.linspace(0, len(rules), nlists + 1).astype(int)
    acls = []
    for li in range(nlists):
        entries = [
            rule_to_ace(rules[i], 10 * (i - bounds[li] + 1), "deny" if deny[i] else "permit")
            for i in range(bounds[li], bounds[li + 1])
        ]
        acls.append(AccessList(f"CB{li}", "named", entries))
    return acls


# -- header fields ------------------------------------------------------------------------
def trace_fields(trace: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """Header-field arrays of a trace, with TCP flags, ICMP types and some fragments."""
    rng = np.random.default_rng(seed)
    n = trace.shape[0]
    proto = trace[:, 4].copy()
    tcp_flags = np.where(proto == 6, rng.choice(np.array([0x02, 0x10, 0x12, 0x04, 0x18, 0x01]),
                                                size=n), 0)
    icmp_type = np.where(proto == 1, rng.choice(np.array([0, 3, 8, 11, 5]), size=n), -1)
    icmp_code = np.where(proto == 1, rng.integers(0, 2, size=n), -1)
    frag = rng.choice(np.array([0, 0, 0, 0, 0, 0, 0, 1, 2, 2]), size=n)
    return {
        "proto": proto,
        "src": trace[:, 0].copy(),
        "dst": trace[:, 1].copy(),
        "sport": trace[:, 2].copy(),
        "dport": trace[:, 3].copy(),
        "frag": frag,
        "icmp_type": icmp_type,
        "icmp_code": icmp_code,
        "tcp_flags": tcp_flags,
        "tos": rng.integers(0, 256, size=n),
    }


def random_fields(n: int, seed: int = 0, like: dict[str, np.ndarray] | None = None
                  ) -> dict[str, np.ndarray]:
    """Random headers; with ``like``, addresses / ports mixed from it to hit rules."""
    rng = np.random.default_rng(seed)
    f = {
        "proto": rng.choice(np.array([6, 17, 1, 50, 47, 0, 255]), size=n),
        "src": rng.integers(0, 1 << 32, size=n, dtype=np.int64),
        "dst": rng.integers(0, 1 << 32, size=n, dtype=np.int64),
        "sport": rng.integers(0, 65536, size=n),
        "dport": rng.integers(0, 65536, size=n),
    }
    if like is not None and like["src"].size:
        for key in ("src", "dst", "sport", "dport", "proto"):
            pick = like[key][rng.integers(0, like[key].size, size=n)]
            use = rng.random(n) < 0.6
            f[key] = np.where(use, pick, f[key])
    f["frag"] = rng.choice(np.array([0, 0, 0, 1, 2]), size=n)
    f["icmp_type"] = np.where(f["proto"] == 1, rng.integers(0, 16, size=n), -1)
    f["icmp_code"] = np.where(f["proto"] == 1, rng.integers(0, 3, size=n), -1)
    f["tcp_flags"] = np.where(f["proto"] == 6, rng.integers(0, 256, size=n), 0)
    f["tos"] = rng.integers(0, 256, size=n)
    return f


# -- numpy linear scan --------------------------------------------------------------------
def _addr_match(m: AddressMatch, a: np.ndarray) -> np.ndarray:
    care = ~m.wildcard & 0xFFFFFFFF
    return (a & care) == (m.address & care)


def _port_match(pm: PortMatch | None, p: np.ndarray) -> np.ndarray | bool:
    if pm is None:
        return True
    out = np.zeros(p.shape, dtype=bool)
    for lo, hi in pm.ranges():
        out |= (p >= lo) & (p <= hi)
    return out


def ace_matches(ace: Ace, f: dict[str, np.ndarray]) -> np.ndarray:
    """Which packets ``ace`` matches, with the IOS non-initial fragment rules."""
    n = f["proto"].shape[0]
    l3 = np.ones(n, dtype=bool)
    if ace.protocol is not None:
        l3 &= f["proto"] == ace.protocol
    l3 &= _addr_match(ace.source, f["src"]) & _addr_match(ace.destination, f["dst"])
    tos = f["tos"]
    if ace.dscp is not None:
        l3 &= (tos >> 2) == ace.dscp
    if ace.precedence is not None:
        l3 &= (tos >> 5) == ace.precedence
    if ace.tos is not None:
        l3 &= ((tos >> 1) & 0xF) == ace.tos
    non_initial = f["frag"] == 2
    l4 = np.ones(n, dtype=bool)
    l4 &= _port_match(ace.source_port, f["sport"])
    l4 &= _port_match(ace.destination_port, f["dport"])
    if ace.icmp_type is not None:
        l4 &= f["icmp_type"] == ace.icmp_type
        if ace.icmp_code is not None:
            l4 &= f["icmp_code"] == ace.icmp_code
    if ace.established:
        l4 &= (f["tcp_flags"] & 0x14) != 0
    whole = l3 & l4 & ~non_initial
    if ace.fragments:
        whole[:] = False
    if not ace.has_l4 or ace.fragments:
        frag = l3 & non_initial
    elif ace.action == "permit":
        frag = l3 & non_initial
    else:
        frag = np.zeros(n, dtype=bool)
    return whole | frag


def linear_scan(acls: list[AccessList], f: dict[str, np.ndarray], mirror: bool = False
                ) -> tuple[np.ndarray, np.ndarray]:
    """(list index, entry index) per packet: every Ace, vectorised over the packets."""
    if mirror:
        f = dict(f, src=f["dst"], dst=f["src"], sport=f["dport"], dport=f["sport"])
    n = f["proto"].shape[0]
    lists = np.full(n, -1, dtype=np.int32)
    entries = np.full(n, -1, dtype=np.int32)
    undecided = np.ones(n, dtype=bool)
    for li, acl in enumerate(acls):
        open_ = undecided.copy()
        for ei, ace in enumerate(acl.entries):
            if ace.action == "remark":
                continue
            m = open_ & ace_matches(ace, f)
            if ace.action == "permit":
                lists[m] = li
                entries[m] = ei
                undecided &= ~m
            open_ &= ~m
            if not open_.any():
                break
    return lists, entries


def fields_packets(f: dict[str, np.ndarray]) -> PacketBatch:
    """40-byte IPv4 packets carrying the fields (vectorised; RFC 791 / 793 / 768 / 792).

    TCP and UDP packets carry the ports (TCP also the flags), ICMP the type and code,
    other protocols 20 zero bytes; non-initial fragments have offset 185 and no L4 header
    bytes of meaning. Ports of non-TCP/UDP headers are not on the wire.
    """
    n = f["proto"].shape[0]
    b = np.zeros((n, 40), dtype=np.uint8)
    proto = f["proto"].astype(np.int64)
    frag = f["frag"].astype(np.int64)
    b[:, 0] = 0x45
    b[:, 1] = f["tos"]
    b[:, 3] = 40
    fragword = np.where(frag == 2, 0x2000 | 185, np.where(frag == 1, 0x2000, 0x4000))
    b[:, 6] = fragword >> 8
    b[:, 7] = fragword & 0xFF
    b[:, 8] = 64
    b[:, 9] = proto
    for col, key in ((12, "src"), (16, "dst")):
        v = f[key].astype(np.int64)
        for i in range(4):
            b[:, col + i] = (v >> (24 - 8 * i)) & 0xFF
    l4 = (frag != 2)
    ports = l4 & ((proto == 6) | (proto == 17))
    for col, key in ((20, "sport"), (22, "dport")):
        v = np.where(ports, f[key], 0).astype(np.int64)
        b[:, col] = v >> 8
        b[:, col + 1] = v & 0xFF
    b[:, 32] = np.where(ports & (proto == 6), 0x50, 0)
    b[:, 33] = np.where(l4 & (proto == 6), f["tcp_flags"], 0)
    icmp = l4 & (proto == 1)
    b[:, 20] = np.where(icmp, np.maximum(f["icmp_type"], 0), b[:, 20])
    b[:, 21] = np.where(icmp, np.maximum(f["icmp_code"], 0), b[:, 21])
    return PacketBatch(b.reshape(-1), np.arange(n, dtype=np.int64) * 40,
                       np.full(n, 40, dtype=np.int64))
