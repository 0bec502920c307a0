"""``Classifier.match_lists``: one chosen access list per packet, checked by brute force.

Contract: for packet i and L = lists[i], ``entries[i]`` is the index (remarks counted) of
the first entry of ``acls[L]`` alone that matches the packet if that entry is a permit;
-1 for a deny, no match, or an unreadable packet; -2 when list L compiles to more than
``max_rows`` rows (not scanned). ``mirror`` swaps source / destination first; ``status``
is the status ``lookup`` gives.

Oracle: the packets are parsed here in pure Python from their bytes (RFC 791 / 793 / 768 /
792 fields, the status rules documented in ipsecfast.classifier) and matched with
``AccessList.first_match_index`` / ``Ace.matches`` (ipsecfast.acl), never with the
compiled structure. ``lookup`` of a one-list Classifier is only an extra cross-check.
"""

from __future__ import annotations

import dataclasses
import struct

import numpy as np
import pytest
from test_classifier import _acls as hand_written_acls

from ipsecfast import PacketBatch
from ipsecfast.acl import AccessList, Ace, AddressMatch, PacketFields, PortMatch
from ipsecfast.classifier import Classification, Classifier
from ipsecfast.status import Status

ANY = AddressMatch(0, 0xFFFFFFFF)
BIG = 1 << 20  # a max_rows no list of these tests comes near


def ip(text: str) -> int:
    a, b, c, d = (int(x) for x in text.split("."))
    return (a << 24) | (b << 16) | (c << 8) | d


# -- packets: builder and independent parser ----------------------------------------------
def build(f: PacketFields, *, ident: int = 0, options: int = 0, frag_offset: int = 185,
          df: bool = False, payload: bytes = b"", l4_junk: bytes | None = None) -> bytes:
    """An IPv4 packet carrying ``f`` (``options`` 32-bit words of NOP options)."""
    if f.fragment == 2:
        l4 = l4_junk if l4_junk is not None else bytes(8)
        fragword = frag_offset & 0x1FFF
        if frag_offset & 1:
            fragword |= 0x2000  # MF or not, the offset makes it non-initial
    else:
        fragword = 0x2000 if f.fragment == 1 else (0x4000 if df else 0)
        if f.protocol == 6:
            l4 = struct.pack("!HHIIBBHHH", f.source_port, f.destination_port, 7, 9, 0x50,
                             f.tcp_flags, 1024, 0, 0)
        elif f.protocol == 17:
            l4 = struct.pack("!HHHH", f.source_port, f.destination_port, 8 + len(payload), 0)
        elif f.protocol == 1:
            l4 = struct.pack("!BBHI", max(f.icmp_type, 0), max(f.icmp_code, 0), 0, 0)
        else:
            l4 = bytes(8)
    ihl = 5 + options
    body = l4 + payload
    total = ihl * 4 + len(body)
    hdr = struct.pack("!BBHHHBBHII", 0x40 | ihl, f.tos, total, ident & 0xFFFF, fragword, 64,
                      f.protocol, 0, f.source, f.destination)
    return hdr + b"\x01" * (4 * options) + body


def parse(p: bytes) -> tuple[int, PacketFields | None]:
    """(status, fields) of one packet, as documented for the classifier."""
    n = len(p)
    if n == 0:
        return Status.TRUNCATED, None
    if p[0] >> 4 != 4:
        return Status.BAD_IP_HEADER, None
    if n < 20:
        return Status.TRUNCATED, None
    ihl = (p[0] & 0x0F) * 4
    if ihl < 20:
        return Status.BAD_IP_HEADER, None
    if ihl > n:
        return Status.TRUNCATED, None
    total = int.from_bytes(p[2:4], "big")
    if total < ihl:
        return Status.BAD_IP_HEADER, None
    if total > n:
        return Status.TRUNCATED, None
    tos, proto = p[1], p[9]
    src, dst = int.from_bytes(p[12:16], "big"), int.from_bytes(p[16:20], "big")
    fragword = int.from_bytes(p[6:8], "big")
    frag = 2 if fragword & 0x1FFF else (1 if fragword & 0x2000 else 0)
    sport = dport = flags = 0
    it = ic = -1
    l4 = p[ihl:total]
    if frag != 2:
        if proto == 6:
            if len(l4) < 14:
                return Status.TRUNCATED, None
            sport, dport = struct.unpack("!HH", l4[:4])
            flags = l4[13]
        elif proto == 17:
            if len(l4) < 4:
                return Status.TRUNCATED, None
            sport, dport = struct.unpack("!HH", l4[:4])
        elif proto == 1:
            if len(l4) < 2:
                return Status.TRUNCATED, None
            it, ic = l4[0], l4[1]
    return Status.OK, PacketFields(proto, src, dst, sport, dport, it, ic, flags, tos, frag)


def oracle(acls: list[AccessList], pkts: list[bytes], lists: np.ndarray, mirror: bool
           ) -> tuple[list[int], list[int]]:
    """(expected entries, expected status), -2 never predicted (see ``check``)."""
    want, status = [], []
    for p, li in zip(pkts, lists.tolist(), strict=True):
        st, f = parse(p)
        status.append(int(st))
        if f is None:
            want.append(-1)
            continue
        if mirror:
            f = f.mirror()
        acl = acls[li]
        ei = acl.first_match_index(f)
        # the oracle's own matcher, spelled out: the first entry that matches
        first = next((i for i, a in enumerate(acl.entries) if a.matches(f)), -1)
        assert ei == first
        want.append(ei if ei >= 0 and acl.entries[ei].action == "permit" else -1)
    return want, status


def _tos_satisfiable(a: Ace) -> bool:
    for b in range(256):
        if a.dscp is not None and b >> 2 != a.dscp:
            continue
        if a.precedence is not None and b >> 5 != a.precedence:
            continue
        if a.tos is not None and (b >> 1) & 0xF != a.tos:
            continue
        return True
    return False


def _nranges(pm: PortMatch | None) -> int:
    return 1 if pm is None else len(pm.ranges())


def rows_upper(acl: AccessList) -> int | None:
    """An upper bound on the compiled rows of ``acl`` (whole packets + non-initial
    fragments); None when unknown (a discontiguous wildcard may compile to many rows)."""
    total = 0
    for a in acl.entries:
        if a.action == "remark":
            continue
        if not (a.source.is_contiguous and a.destination.is_contiguous):
            return None
        total += max(1, _nranges(a.source_port)) * max(1, _nranges(a.destination_port)) + 1
    return total


def rows_lower(acl: AccessList) -> int:
    """Entries that certainly compile to at least one row in both packet classes."""
    return sum(
        1 for a in acl.entries
        if a.action in ("permit", "deny") and not a.fragments and _tos_satisfiable(a)
        and _nranges(a.source_port) and _nranges(a.destination_port)
        and (a.action == "permit" or not a.has_l4)
    )


def check(clf: Classifier, acls: list[AccessList], pkts: list[bytes], batch: PacketBatch,
          lists: np.ndarray, mirror: bool, max_rows: int | None = None) -> Classification:
    """match_lists against the oracle; -2 only where the list may exceed the limit, and
    always where it certainly does. (Whether -2 is decided per list or per packet class --
    whole packets / non-initial fragments compile to different rows -- is left open.)"""
    kw = {} if max_rows is None else {"max_rows": max_rows}
    res = clf.match_lists(batch, lists, mirror, **kw)
    limit = 64 if max_rows is None else max_rows
    want, status = oracle(acls, pkts, lists, mirror)
    assert isinstance(res, Classification)
    n = len(pkts)
    assert res.lists.dtype == np.int32 and res.lists.shape == (n,)
    assert res.entries.dtype == np.int32 and res.entries.shape == (n,)
    assert res.status.shape == (n,)
    assert res.lists.tolist() == lists.tolist()
    assert res.status.tolist() == status
    got = res.entries.tolist()
    lower = [rows_lower(a) for a in acls]
    for i, (li, g, w, st) in enumerate(zip(lists.tolist(), got, want, status, strict=True)):
        if g == -2:  # allowed only for a list that may compile to more than the limit
            up = rows_upper(acls[li])
            assert up is None or up > limit, (i, li, up, limit, acls[li])
        elif lower[li] > limit:
            # certainly over the limit: not scanned (an unreadable packet may say -1
            # instead: the spec gives both)
            assert st != 0 and g == -1, (i, li, g, pkts[i].hex(), acls[li])
        else:
            assert g == w, (i, li, g, w, parse(pkts[i]), mirror, acls[li])
    return res


# -- random access lists and packets ------------------------------------------------------
EDGE_ADDRS = (0, 0xFFFFFFFF, ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.255"),
              ip("10.0.1.0"), ip("192.168.1.1"), 0x7FFFFFFF, 0x80000000)
EDGE_PORTS = (0, 1, 21, 22, 23, 80, 443, 500, 1023, 1024, 4500, 65534, 65535)


def r_addr(rng: np.random.Generator) -> int:
    if rng.random() < 0.6:
        return int(rng.choice(EDGE_ADDRS))
    return int(rng.integers(0, 1 << 32))


def r_port(rng: np.random.Generator) -> int:
    return int(rng.choice(EDGE_PORTS)) if rng.random() < 0.6 else int(rng.integers(0, 65536))


def r_match(rng: np.random.Generator) -> AddressMatch:
    kind = rng.choice(["any", "any", "host", "prefix", "prefix", "discontiguous"])
    a = r_addr(rng)
    if kind == "any":
        return ANY
    if kind == "host":
        return AddressMatch(a, 0)
    if kind == "prefix":
        wild = (1 << int(rng.integers(0, 33))) - 1
        return AddressMatch(a & ~wild & 0xFFFFFFFF, wild)
    wild = int(rng.choice([0x00FF00FF, 0xFF000000, 0x0000FF00, 0x80000001,
                           int(rng.integers(0, 1 << 32))]))
    return AddressMatch(a, wild)


def r_ports(rng: np.random.Generator) -> PortMatch | None:
    op = rng.choice(["none", "none", "eq", "eq", "neq", "lt", "gt", "range"])
    if op == "none":
        return None
    if op == "eq":
        return PortMatch("eq", tuple(r_port(rng) for _ in range(int(rng.integers(1, 4)))))
    if op == "range":
        lo, hi = sorted((r_port(rng), r_port(rng)))
        return PortMatch("range", (lo, hi))
    return PortMatch(str(op), (r_port(rng),))  # type: ignore[arg-type]


def r_ace(rng: np.random.Generator, seq: int) -> Ace:
    action = str(rng.choice(["permit", "permit", "deny", "deny", "remark"]))
    if action == "remark":
        return Ace(seq, "remark", remark="r")
    proto = [None, None, 6, 6, 17, 17, 1, 47, 50][int(rng.integers(0, 9))]
    kw: dict[str, object] = {}
    if proto in (6, 17):
        kw["source_port"] = r_ports(rng)
        kw["destination_port"] = r_ports(rng)
        if proto == 6:
            kw["established"] = bool(rng.random() < 0.3)
    if proto == 1 and rng.random() < 0.5:
        kw["icmp_type"] = int(rng.choice([0, 3, 8, 11]))
        if rng.random() < 0.5:
            kw["icmp_code"] = int(rng.choice([0, 1, 13]))
    tos_kind = rng.choice(["none"] * 4 + ["dscp", "prec", "tos", "prec+tos"])
    if tos_kind == "dscp":
        kw["dscp"] = int(rng.choice([0, 10, 46, 63]))
    if "prec" in tos_kind:
        kw["precedence"] = int(rng.integers(0, 8))
    if "tos" in tos_kind:
        kw["tos"] = int(rng.integers(0, 16))
    ace = Ace(seq, action, proto, source=r_match(rng), destination=r_match(rng),
              **kw)  # type: ignore[arg-type]
    if not ace.has_l4 and rng.random() < 0.25:
        ace = dataclasses.replace(ace, fragments=True)
    return ace


def r_acls(rng: np.random.Generator) -> list[AccessList]:
    out = []
    for li in range(int(rng.integers(1, 7))):
        n = int(rng.integers(0, 9))
        out.append(AccessList(f"L{li}", "named", [r_ace(rng, 10 * (i + 1)) for i in range(n)]))
    return out


def r_fields(rng: np.random.Generator) -> PacketFields:
    proto = int(rng.choice([6, 6, 17, 17, 1, 47, 50, 0, 255, int(rng.integers(0, 256))]))
    icmp = proto == 1
    return PacketFields(
        proto, r_addr(rng), r_addr(rng), r_port(rng), r_port(rng),
        int(rng.choice([0, 3, 8, 11, 255])) if icmp else -1,
        int(rng.choice([0, 1, 13])) if icmp else -1,
        int(rng.choice([0, 0x02, 0x10, 0x12, 0x04, 0x14, int(rng.integers(0, 256))])),
        int(rng.choice([0, 46 << 2, 10 << 2, 0xE0, 0x1E, 0xFF, int(rng.integers(0, 256))])),
        int(rng.choice([0, 0, 0, 1, 2])),
    )


def corner_fields(acls: list[AccessList], rng: np.random.Generator) -> list[PacketFields]:
    """Packets on the corners of the entries, so that entries do match."""
    out = []
    for acl in acls:
        for a in acl.entries:
            if a.action == "remark":
                continue
            for pick in (0, 1):
                care_s, care_d = ~a.source.wildcard, ~a.destination.wildcard
                s = (a.source.address & care_s) | (a.source.wildcard if pick else 0)
                d = (a.destination.address & care_d) | (a.destination.wildcard if pick else 0)
                sr = a.source_port.ranges() if a.source_port else ()
                dr = a.destination_port.ranges() if a.destination_port else ()
                sp = sr[0][pick] if sr else r_port(rng)
                dp = dr[-1][pick] if dr else r_port(rng)
                tos = ((a.dscp or 0) << 2) | ((a.precedence or 0) << 5) | ((a.tos or 0) << 1)
                proto = a.protocol if a.protocol is not None else int(rng.choice([6, 17, 1, 47]))
                icmp = proto == 1
                it = a.icmp_type if a.icmp_type is not None else (8 if icmp else -1)
                ic = a.icmp_code if a.icmp_code is not None else (0 if icmp else -1)
                frag = 2 if a.fragments else int(rng.choice([0, 0, 1, 2]))
                out.append(PacketFields(proto, s & 0xFFFFFFFF, d & 0xFFFFFFFF, sp, dp, it, ic,
                                        0x10 if pick else 0x02, tos & 0xFF, frag))
    return out


def wire(f: PacketFields, rng: np.random.Generator, i: int) -> bytes:
    """``f`` on the wire, sometimes with IP options, padding past the total, or a bad
    header / cut-off transport header."""
    opts = int(rng.choice([0, 0, 0, 1, 3]))
    pkt = build(f, ident=i, options=opts, frag_offset=int(rng.integers(1, 0x2000)),
                df=bool(rng.random() < 0.5),
                payload=bytes(int(rng.integers(0, 12))),
                l4_junk=bytes(rng.integers(0, 256, int(rng.integers(0, 16)), dtype=np.uint8)))
    r = rng.random()
    if r < 0.75:
        return pkt + (bytes(int(rng.integers(1, 6))) if rng.random() < 0.1 else b"")
    ihl = 20 + 4 * opts
    b = bytearray(pkt)
    kind = int(rng.integers(0, 7))
    if kind == 0:  # cut anywhere
        return bytes(b[: int(rng.integers(0, len(b)))])
    if kind == 1:  # not IPv4
        b[0] = (int(rng.choice([0, 6, 5, 15])) << 4) | (b[0] & 0x0F)
        return bytes(b)
    if kind == 2:  # IHL < 5
        b[0] = 0x40 | int(rng.integers(0, 5))
        return bytes(b)
    if kind == 3:  # total length below the header
        b[2:4] = int(rng.integers(0, ihl)).to_bytes(2, "big")
        return bytes(b)
    if kind == 4:  # total length past the data
        b[2:4] = (len(b) + int(rng.integers(1, 50))).to_bytes(2, "big")
        return bytes(b)
    if kind == 5:  # total length cuts the transport header (truncated for tcp/udp/icmp)
        cut = ihl + int(rng.integers(0, 15))
        b[2:4] = min(cut, len(b)).to_bytes(2, "big")
        return bytes(b)
    b[0] = 0x40 | int(rng.integers(6, 16))  # IHL past the data, or options eating L4
    return bytes(b)


def r_case(seed: int) -> tuple[list[AccessList], list[bytes], np.ndarray]:
    rng = np.random.default_rng(seed)
    acls = r_acls(rng)
    fields = [r_fields(rng) for _ in range(int(rng.integers(0, 120)))]
    fields += corner_fields(acls, rng)
    order = rng.permutation(len(fields))
    pkts = [wire(fields[j], rng, i) for i, j in enumerate(order.tolist())]
    dtype = (np.int64, np.int32, np.intp)[int(rng.integers(0, 3))]
    lists = rng.integers(0, len(acls), len(pkts)).astype(dtype)
    return acls, pkts, lists


@pytest.mark.parametrize("seed", range(60))
def test_random_against_oracle(seed: int) -> None:
    acls, pkts, lists = r_case(seed)
    clf = Classifier(acls)
    batch = PacketBatch.from_list(pkts)
    saw = set()
    for mirror in (False, True):
        res = check(clf, acls, pkts, batch, lists, mirror, BIG)
        assert -2 not in res.entries.tolist()
        saw.update(res.entries.tolist())
        check(clf, acls, pkts, batch, lists, mirror)  # default max_rows
        check(clf, acls, pkts, batch, lists, mirror, 2)
    # the same lookups from a view with gaps and a reordered selection
    gapped = PacketBatch.from_list([x for p in pkts for x in (p, b"\x45" * 3)])[::2]
    check(clf, acls, pkts, gapped, lists, True, BIG)
    if pkts:
        idx = np.random.default_rng(seed).permutation(len(pkts))[: len(pkts) // 2]
        check(clf, acls, [pkts[i] for i in idx], batch[idx], lists[idx].copy(), False, BIG)


def test_random_outcomes_are_varied() -> None:
    """The random cases reach permits, denies, no match, and unreadable packets."""
    kinds = {"permit": 0, "deny": 0, "none": 0, "bad": 0}
    for seed in range(60):
        acls, pkts, lists = r_case(seed)
        for p, li in zip(pkts, lists.tolist(), strict=True):
            st, f = parse(p)
            if f is None:
                kinds["bad"] += 1
                continue
            ei = acls[li].first_match_index(f)
            kinds["none" if ei < 0 else acls[li].entries[ei].action] += 1  # type: ignore[index]
    assert min(kinds.values()) > 100, kinds


# -- equivalence with lookup of a one-list classifier --------------------------------------
@pytest.mark.parametrize("seed", range(0, 60, 3))
def test_same_as_single_list_lookup(seed: int) -> None:
    acls, pkts, lists = r_case(seed)
    clf = Classifier(acls)
    batch = PacketBatch.from_list(pkts)
    for mirror in (False, True):
        res = clf.match_lists(batch, lists, mirror, max_rows=BIG)
        full = clf.lookup(batch, mirror)
        assert res.status.tolist() == full.status.tolist()
        for li, acl in enumerate(acls):
            sel = lists == li
            one = Classifier([acl]).lookup(batch, mirror)
            assert one.lists[sel].tolist() == [0 if e >= 0 else -1 for e in one.entries[sel]]
            assert res.entries[sel].tolist() == one.entries[sel].tolist(), li


# -- hand cases -----------------------------------------------------------------------------
def _hand_acls() -> list[AccessList]:
    """test_classifier's hand-written lists (remarks, denies before permits, several
    ports, ICMP type, established, neq, fragments, a discontiguous wildcard with dscp),
    plus an empty list and one of remarks only."""
    return [*hand_written_acls(),
            AccessList("EMPTY", "named", []),
            AccessList("REMARKS", "named", [Ace(10, "remark", remark="x")])]


T = PacketFields(6, ip("10.0.0.1"), ip("20.0.0.1"), 1024, 23)


@pytest.mark.parametrize("pf, li, mirror, expected", [
    (T, 0, False, -1),  # deny in A: no skip to B
    (T, 1, False, 0),  # B alone permits it
    (T, 2, False, 1),  # C: a SYN, sport 1024 passes `neq 500`
    (T, 3, False, -1),  # empty list
    (T, 4, False, -1),  # remarks only
    (dataclasses.replace(T, destination_port=443), 0, False, 2),  # remark counted
    (T.mirror(), 0, True, -1),
    (dataclasses.replace(T, destination_port=443).mirror(), 0, True, 2),
    (dataclasses.replace(T, destination_port=443), 0, True, -1),  # mirrored: no match
    (PacketFields(6, ip("10.1.2.3"), ip("20.9.9.9"), 1024, 22), 0, False, 3),
    (PacketFields(1, ip("1.1.1.1"), ip("2.2.2.2"), icmp_type=8, icmp_code=0), 1, False, 1),
    (PacketFields(1, ip("1.1.1.1"), ip("2.2.2.2"), icmp_type=0, icmp_code=0), 1, False, -1),
    (PacketFields(6, ip("1.1.1.1"), ip("2.2.2.2"), 501, 80, tcp_flags=0x10), 2, False, -1),
    (PacketFields(6, ip("1.1.1.1"), ip("2.2.2.2"), 500, 80, tcp_flags=0x02), 2, False, -1),
    # mirrored: the ports swap, 80 passes `neq 500`
    (PacketFields(6, ip("1.1.1.1"), ip("2.2.2.2"), 500, 80, tcp_flags=0x02), 2, True, 1),
    # non-initial fragments: a deny with L4 does not match, a permit with L4 does on L3
    (dataclasses.replace(T, fragment=2), 0, False, 2),
    (PacketFields(6, ip("1.1.1.1"), ip("2.2.2.2"), fragment=2), 2, False, 1),
    (PacketFields(17, ip("1.1.1.1"), ip("2.2.2.2"), fragment=2), 2, False, 2),
    (PacketFields(17, ip("1.1.1.1"), ip("2.2.2.2"), fragment=1), 2, False, -1),
    (PacketFields(17, ip("7.7.1.7"), ip("2.2.2.2"), tos=46 << 2), 2, False, 3),
    (PacketFields(17, ip("7.7.2.7"), ip("2.2.2.2"), tos=46 << 2), 2, False, -1),
    (PacketFields(17, ip("7.7.1.7"), ip("2.2.2.2"), tos=0), 2, False, -1),
    (PacketFields(17, ip("2.2.2.2"), ip("7.7.1.7"), tos=46 << 2), 2, True, 3),
])
def test_hand_cases(pf: PacketFields, li: int, mirror: bool, expected: int) -> None:
    acls = _hand_acls()
    pkt = build(pf)
    st, f = parse(pkt)
    assert st == 0 and f is not None
    assert oracle(acls, [pkt], np.array([li]), mirror)[0] == [expected]
    res = Classifier(acls).match_lists(PacketBatch.from_list([pkt]), np.array([li]), mirror)
    assert res.entries.tolist() == [expected]
    assert res.lists.tolist() == [li] and res.status.tolist() == [0]


def test_unreadable_packets() -> None:
    acls = [AccessList("ALL", "named", [Ace(10, "permit")]),
            AccessList("NONE", "named", [Ace(10, "deny")])]
    good = build(PacketFields(6, 1, 2, 3, 4, tcp_flags=0x10))
    udp = build(PacketFields(17, 1, 2, 3, 4))
    icmp = build(PacketFields(1, 1, 2, icmp_type=8, icmp_code=0))

    def total(p: bytes, t: int) -> bytes:
        return p[:2] + t.to_bytes(2, "big") + p[4:]

    cases = [
        (good, Status.OK), (total(udp, 24), Status.OK), (total(icmp, 22), Status.OK),
        (total(good, 34), Status.OK), (b"", Status.TRUNCATED), (good[:19], Status.TRUNCATED),
        (bytes([0x60]) + bytes(39), Status.BAD_IP_HEADER), (total(udp, 23), Status.TRUNCATED),
        (total(icmp, 21), Status.TRUNCATED), (total(good, 33), Status.TRUNCATED),
        (total(good, 10), Status.BAD_IP_HEADER), (total(good, 200), Status.TRUNCATED),
        (bytes([0x44]) + good[1:], Status.BAD_IP_HEADER),
        (bytes([0x4F]) + good[1:], Status.TRUNCATED),
        (good + b"trailer", Status.OK),
    ]
    pkts = [c[0] for c in cases] * 2
    lists = np.array([0] * len(cases) + [1] * len(cases))
    clf = Classifier(acls)
    batch = PacketBatch.from_list(pkts)
    for mirror in (False, True):
        res = check(clf, acls, pkts, batch, lists, mirror)
        assert res.status.tolist() == [int(c[1]) for c in cases] * 2
        assert res.status.tolist() == clf.lookup(batch, mirror).status.tolist()
        assert res.entries.tolist() == [0 if c[1] == 0 else -1 for c in cases] + \
            [-1] * len(cases)


def test_scapy_packets() -> None:
    """Packets scapy writes (options, fragments, ICMP) read like the builder's."""
    scapy_all = pytest.importorskip("scapy.all")
    IP, TCP, UDP, ICMP = scapy_all.IP, scapy_all.TCP, scapy_all.UDP, scapy_all.ICMP
    acls = _hand_acls()
    big = IP(src="10.0.0.1", dst="20.0.0.1") / UDP(sport=53, dport=53) / (b"x" * 100)
    frags = scapy_all.fragment(big, fragsize=48)
    assert len(frags) >= 2
    pk = [
        IP(src="10.0.0.1", dst="20.0.0.1", options=[scapy_all.IPOption_NOP()] * 4)
        / TCP(sport=1024, dport=443, flags="S"),
        IP(src="10.0.0.1", dst="20.0.0.1") / TCP(sport=1024, dport=23, flags="A"),
        IP(src="1.1.1.1", dst="2.2.2.2") / ICMP(type=8),
        IP(src="1.1.1.1", dst="2.2.2.2") / ICMP(type=0),
        IP(src="7.7.1.7", dst="2.2.2.2", tos=46 << 2) / UDP(sport=1, dport=2),
        *frags,
        IP(src="20.0.0.1", dst="10.0.0.1") / TCP(sport=443, dport=1024, flags="SA"),
    ]
    pkts = [bytes(p) for p in pk]
    clf = Classifier(acls)
    batch = PacketBatch.from_scapy(pk)
    for li in range(len(acls)):
        lists = np.full(len(pkts), li)
        for mirror in (False, True):
            check(clf, acls, pkts, batch, lists, mirror)
    # a fragment of list C: the non-initial ones match `fragments`, the first is udp/no dscp
    res = clf.match_lists(batch, np.full(len(pkts), 2))
    nf = len(frags)
    assert res.entries[5:5 + nf].tolist() == [-1] + [2] * (nf - 1)


# -- max_rows ---------------------------------------------------------------------------------
def test_max_rows() -> None:
    net = AddressMatch(ip("10.0.0.0"), 0xFF)
    long_ = AccessList("LONG", "named", [
        Ace(10 * (i + 1), "permit" if i % 2 else "deny", 6, AddressMatch(ip("10.0.0.0") + i, 0),
            None, ANY, PortMatch("eq", (80,)))
        for i in range(5)
    ])
    many = AccessList("MANY", "named", [
        Ace(10 * (i + 1), "permit", 17, net, PortMatch("neq", (i,)), ANY,
            PortMatch("eq", (1, 2, 3)))
        for i in range(30)
    ])  # 30 entries x 6 rows: well over 64
    one = AccessList("ONE", "named", [Ace(10, "permit", 6, net, None, ANY)])
    one_wide = AccessList("ONEWIDE", "named", [
        Ace(10, "permit", 6, AddressMatch(ip("10.0.0.0"), 0xFF0000F6), PortMatch("neq", (7,)),
            ANY, PortMatch("neq", (9,)))])
    acls = [long_, many, one, one_wide]
    rng = np.random.default_rng(4)
    fields = []
    for _ in range(200):
        fields.append(PacketFields(
            int(rng.choice([6, 17])), ip("10.0.0.0") + int(rng.integers(0, 8)),
            r_addr(rng), int(rng.choice([0, 1, 2, 7, 1024])), int(rng.choice([1, 2, 80, 9])),
            tcp_flags=0x10, fragment=int(rng.choice([0, 0, 1, 2]))))
    pkts = [build(f) for f in fields] + [b"", b"\x45" * 10]
    lists = rng.integers(0, len(acls), len(pkts))
    lists[-4:] = [0, 1, 0, 1]
    batch = PacketBatch.from_list(pkts)
    clf = Classifier(acls)
    frag2 = [parse(p)[1] is not None and parse(p)[1].fragment == 2 for p in pkts]
    bad = [parse(p)[0] != 0 for p in pkts]

    def over(res: Classification, i: int, want: list[int]) -> None:
        """Packet i's list is clearly over the limit: -2 (-1 if unreadable). Non-initial
        fragments compile to fewer rows (denies with L4 do not apply, one row per entry);
        here they may be scanned too (test_max_rows_is_per_list holds them to -2)."""
        ok = {-2} | ({-1} if bad[i] else set()) | ({want[i]} if frag2[i] else set())
        assert int(res.entries[i]) in ok, (i, int(res.entries[i]), ok, pkts[i].hex())

    for mirror in (False, True):
        want, _ = oracle(acls, pkts, lists, mirror)
        res = check(clf, acls, pkts, batch, lists, mirror, 2)
        for i, li in enumerate(lists.tolist()):
            if li in (0, 1):
                over(res, i, want)
            elif li == 2:  # one plain entry: 2 rows at most (whole + fragments)
                assert res.entries[i] == want[i]
        res = check(clf, acls, pkts, batch, lists, mirror)  # default 64
        for i, li in enumerate(lists.tolist()):
            if li == 1:
                over(res, i, want)
            else:  # 1-entry lists and the 5-entry one: under 64 whatever the count
                assert res.entries[i] == want[i]
        res = check(clf, acls, pkts, batch, lists, mirror, BIG)
        assert res.entries.tolist() == want
    want, _ = oracle(acls, pkts, lists, False)
    for li in range(len(acls)):  # every list permits some of the packets, denies others
        ws = [w for w, lj in zip(want, lists.tolist(), strict=True) if lj == li]
        assert any(w >= 0 for w in ws) and -1 in ws, li


# -- argument checks, empty batches ----------------------------------------------------------
def test_value_errors() -> None:
    acls = _hand_acls()
    clf = Classifier(acls)
    pkts = [build(T)] * 3
    batch = PacketBatch.from_list(pkts)
    for bad in ([0, 1], [0, 1, 2, 3], [0, 1, len(acls)], [0, -1, 1], [99, 0, 0]):
        with pytest.raises(ValueError):
            clf.match_lists(batch, np.array(bad, dtype=np.int64))
    with pytest.raises(ValueError):
        clf.match_lists(batch, np.array([0, 1, 5], dtype=np.int32), True)
    with pytest.raises(ValueError):
        clf.match_lists(PacketBatch.empty(), np.array([0]))
    with pytest.raises(ValueError):
        Classifier([]).match_lists(batch, np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError):
        Classifier([]).match_lists(PacketBatch.from_list([b""]), np.zeros(1, dtype=np.int64))
    # the valid neighbours of those calls work
    ok = clf.match_lists(batch, np.array([0, 1, len(acls) - 1]))
    assert ok.entries.tolist() == [-1, 0, -1]


@pytest.mark.parametrize("big", [1 << 32, (1 << 32) + 1, 1 << 40, -(1 << 40), -(1 << 32) + 2])
def test_lists_beyond_int32_are_refused(big: int) -> None:
    """An int64 list index outside 0..len-1 is refused, not wrapped onto a valid list."""
    clf = Classifier(_hand_acls())
    batch = PacketBatch.from_list([build(T)] * 3)
    with pytest.raises(ValueError):
        clf.match_lists(batch, np.array([0, big, 1], dtype=np.int64))


def test_empty_batch() -> None:
    for acls in ([], _hand_acls()):
        clf = Classifier(acls)
        for mirror in (False, True):
            for dtype in (np.int64, np.int32):
                res = clf.match_lists(PacketBatch.empty(), np.zeros(0, dtype=dtype), mirror)
                assert isinstance(res, Classification)
                assert res.lists.shape == res.entries.shape == res.status.shape == (0,)
                assert res.lists.dtype == np.int32 and res.entries.dtype == np.int32
                assert res.status.dtype == clf.lookup(PacketBatch.empty()).status.dtype


def test_input_not_modified_and_strided() -> None:
    acls = _hand_acls()
    clf = Classifier(acls)
    pkts = [build(T), build(dataclasses.replace(T, destination_port=443))] * 20
    batch = PacketBatch.from_list(pkts)
    wide = np.tile(np.array([0, 9, 1, 9, 2, 9, 0, 9], dtype=np.int64), 10)
    lists = wide[::2]  # a strided view: 0, 1, 2, 0, ...
    before = wide.copy()
    res = check(clf, acls, pkts, batch, lists, False)
    assert np.array_equal(wide, before)
    assert res.lists.tolist() == lists.tolist()


def test_max_rows_is_per_list() -> None:
    """The spec: -2 when *list L* compiles to more than max_rows rows, "max_rows=2 with a
    5-entry list -> -2 for every packet of that list" -- non-initial fragments included,
    though only the two permits of this list apply to them."""
    long_ = AccessList("LONG", "named", [
        Ace(10 * (i + 1), "permit" if i % 2 else "deny", 6, AddressMatch(ip("10.0.0.0") + i, 0),
            None, ANY, PortMatch("eq", (80,)))
        for i in range(5)
    ])
    pkts = [build(PacketFields(6, ip("10.0.0.1"), ip("1.2.3.4"), 1, 80, fragment=fr))
            for fr in (0, 1, 2)]
    res = Classifier([long_]).match_lists(PacketBatch.from_list(pkts), np.zeros(3, np.int64),
                                          max_rows=2)
    assert res.status.tolist() == [0, 0, 0]
    assert res.entries.tolist() == [-2, -2, -2]
    # 30 entries, 6 rows each for whole packets: way over 64 -- but one row each for
    # non-initial fragments
    many = AccessList("MANY", "named", [
        Ace(10 * (i + 1), "permit", 17, AddressMatch(ip("10.0.0.0"), 0xFF),
            PortMatch("neq", (i + 1,)), ANY, PortMatch("eq", (1, 2, 3)))
        for i in range(30)
    ])
    pkts = [build(PacketFields(17, ip("10.0.0.1"), ip("1.2.3.4"), 7, 1, fragment=fr))
            for fr in (0, 1, 2)]
    res = Classifier([many]).match_lists(PacketBatch.from_list(pkts), np.zeros(3, np.int64))
    assert res.entries.tolist() == [-2, -2, -2]
