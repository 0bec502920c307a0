"""Compiled classifier vs the reference matcher (ipsecfast.acl.first_permit).

Oracles: ``acl.first_permit`` (the pure-Python reference, one packet at a time) and
``classbench.linear_scan`` (numpy, vectorised over packets, written from the contract
independently of the compiled rows). ClassBench sets come from ../shared/data/classbench
(acl1 / fw1 / ipc1, 1K and 10K, see SOURCE.md there); without ../shared, sets of the same
shape are generated and the same checks run.
"""

from __future__ import annotations

import dataclasses
import functools
import struct
from pathlib import Path

import classbench as cb
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipsecfast import PacketBatch
from ipsecfast import classifier as classifier_module
from ipsecfast.acl import AccessList, Ace, AddressMatch, PacketFields, PortMatch, first_permit
from ipsecfast.classifier import Classifier
from ipsecfast.status import Status

ANY = AddressMatch(0, 0xFFFFFFFF)
FIELD_KEYS = ("proto", "src", "dst", "sport", "dport", "frag", "icmp_type", "icmp_code",
              "tcp_flags", "tos")


# -- helpers ------------------------------------------------------------------------------
def ip(text: str) -> int:
    a, b, c, d = (int(x) for x in text.split("."))
    return (a << 24) | (b << 16) | (c << 8) | d


def fields_arrays(pkts: list[PacketFields]) -> dict[str, np.ndarray]:
    cols = zip(*[(f.protocol, f.source, f.destination, f.source_port, f.destination_port,
                  f.fragment, f.icmp_type, f.icmp_code, f.tcp_flags, f.tos) for f in pkts],
               strict=True) if pkts else [() for _ in FIELD_KEYS]
    return {k: np.array(list(c), dtype=np.int64) for k, c in zip(FIELD_KEYS, cols, strict=True)}


def fields_list(f: dict[str, np.ndarray]) -> list[PacketFields]:
    return [
        PacketFields(int(p), int(s), int(d), int(sp), int(dp), int(it), int(ic), int(tf),
                     int(tb), int(fr))
        for p, s, d, sp, dp, fr, it, ic, tf, tb in zip(*(f[k].tolist() for k in FIELD_KEYS),
                                                       strict=True)
    ]


def classify_fields(clf: Classifier, f: dict[str, np.ndarray], mirror: bool = False,
                    scalar: bool = False) -> tuple[np.ndarray, np.ndarray]:
    lists, entries = clf.classify_fields(
        f["proto"], f["src"], f["dst"], f["sport"], f["dport"], f["frag"], mirror,
        icmp_type=f["icmp_type"], icmp_code=f["icmp_code"], tcp_flags=f["tcp_flags"],
        tos=f["tos"], entries=True, scalar=scalar,
    )
    return lists, entries


def reference(acls: list[AccessList], pkts: list[PacketFields], mirror: bool = False
              ) -> tuple[np.ndarray, np.ndarray]:
    res = [first_permit(acls, f, mirror) for f in pkts]
    return (np.array([r[0] for r in res], dtype=np.int32),
            np.array([r[1] for r in res], dtype=np.int32))


def packet(f: PacketFields, ident: int = 0) -> bytes:
    """An IPv4 packet (RFC 791) carrying ``f``; non-initial fragments get offset 185."""
    if f.fragment == 2:
        l4 = bytes(8)
        fragword = 0x2000 | 185
    else:
        fragword = 0x2000 if f.fragment == 1 else 0x4000  # MF, or DF
        if f.protocol == 6:  # RFC 793 §3.1
            l4 = struct.pack("!HHIIBBHHH", f.source_port, f.destination_port, 1, 0, 0x50,
                             f.tcp_flags, 1024, 0, 0)
        elif f.protocol == 17:
            l4 = struct.pack("!HHHH", f.source_port, f.destination_port, 8, 0)
        elif f.protocol == 1:
            l4 = struct.pack("!BBHI", max(f.icmp_type, 0), max(f.icmp_code, 0), 0, 0)
        else:
            l4 = bytes(8)
    total = 20 + len(l4)
    hdr = struct.pack("!BBHHHBBHII", 0x45, f.tos, total, ident, fragword, 64, f.protocol, 0,
                      f.source, f.destination)
    return hdr + l4


def on_the_wire(f: PacketFields) -> PacketFields:
    """The fields the classifier reads back from ``packet(f)``."""
    sport = dport = flags = 0
    it = ic = -1
    if f.fragment != 2:
        if f.protocol in (6, 17):
            sport, dport = f.source_port, f.destination_port
        if f.protocol == 6:
            flags = f.tcp_flags
        if f.protocol == 1:
            it, ic = max(f.icmp_type, 0), max(f.icmp_code, 0)
    return PacketFields(f.protocol, f.source, f.destination, sport, dport, it, ic, flags,
                        f.tos, f.fragment)


# -- hand-written cases -------------------------------------------------------------------
def _acls() -> list[AccessList]:
    net10 = AddressMatch(ip("10.0.0.0"), 0x00FFFFFF)
    net20 = AddressMatch(ip("20.0.0.0"), 0x00FFFFFF)
    return [
        AccessList("A", "named", [
            Ace(5, "remark", remark="telnet stays in the clear"),
            Ace(10, "deny", 6, net10, None, net20, PortMatch("eq", (23,))),
            Ace(20, "permit", 6, net10, None, net20, PortMatch("eq", (23, 80, 443))),
            Ace(30, "permit", None, AddressMatch(ip("10.1.0.0"), 0x0000FFFF), None, net20),
        ]),
        AccessList("B", "named", [
            Ace(10, "permit", None, net10, None, net20),
            Ace(20, "permit", 1, ANY, None, ANY, icmp_type=8),
        ]),
        AccessList("C", "named", [
            Ace(10, "deny", 6, ANY, None, ANY, established=True),
            Ace(20, "permit", 6, ANY, PortMatch("neq", (500,)), ANY),
            Ace(30, "permit", None, ANY, None, ANY, fragments=True),
            Ace(40, "permit", 17, AddressMatch(ip("0.0.1.0"), 0xFFFF00FF), None, ANY,
                dscp=46),
        ]),
    ]


@pytest.mark.parametrize("pf, expected", [
    # list A: the telnet deny skips list A; list B takes it (entry 0)
    (PacketFields(6, ip("10.0.0.1"), ip("20.0.0.1"), 1024, 23), (1, 0)),
    (PacketFields(6, ip("10.0.0.1"), ip("20.0.0.1"), 1024, 443), (0, 2)),
    (PacketFields(6, ip("10.1.2.3"), ip("20.9.9.9"), 1024, 22), (0, 3)),
    (PacketFields(17, ip("10.0.0.1"), ip("20.0.0.1"), 53, 53), (1, 0)),
    (PacketFields(1, ip("1.1.1.1"), ip("2.2.2.2"), icmp_type=8, icmp_code=0), (1, 1)),
    (PacketFields(1, ip("1.1.1.1"), ip("2.2.2.2"), icmp_type=0, icmp_code=0), (-1, -1)),
    # list C: established denied there, a SYN passes `neq 500`
    (PacketFields(6, ip("1.1.1.1"), ip("2.2.2.2"), 500, 80, tcp_flags=0x10), (-1, -1)),
    (PacketFields(6, ip("1.1.1.1"), ip("2.2.2.2"), 501, 80, tcp_flags=0x02), (2, 1)),
    (PacketFields(6, ip("1.1.1.1"), ip("2.2.2.2"), 500, 80, tcp_flags=0x02), (-1, -1)),
    # non-initial fragments: deny with L4 does not match, permit with L4 matches on L3
    (PacketFields(6, ip("10.0.0.1"), ip("20.0.0.1"), fragment=2), (0, 2)),
    (PacketFields(6, ip("1.1.1.1"), ip("2.2.2.2"), fragment=2), (2, 1)),
    (PacketFields(17, ip("1.1.1.1"), ip("2.2.2.2"), fragment=2), (2, 2)),
    (PacketFields(17, ip("1.1.1.1"), ip("2.2.2.2"), fragment=1), (-1, -1)),
    # discontiguous wildcard 0.0.1.0 / 255.255.0.255 and dscp ef (46)
    (PacketFields(17, ip("7.7.1.7"), ip("2.2.2.2"), tos=46 << 2), (2, 3)),
    (PacketFields(17, ip("7.7.2.7"), ip("2.2.2.2"), tos=46 << 2), (-1, -1)),
    (PacketFields(17, ip("7.7.1.7"), ip("2.2.2.2"), tos=0), (-1, -1)),
])
def test_hand_cases(pf: PacketFields, expected: tuple[int, int]) -> None:
    acls = _acls()
    clf = Classifier(acls)
    assert first_permit(acls, pf) == expected
    lists, entries = classify_fields(clf, fields_arrays([pf]))
    assert (int(lists[0]), int(entries[0])) == expected
    # the same packet on the wire, and mirrored on the way in
    batch = PacketBatch.from_list([packet(pf)])
    res = clf.lookup(batch)
    assert res.status.tolist() == [Status.OK]
    assert (int(res.lists[0]), int(res.entries[0])) == first_permit(acls, on_the_wire(pf))
    back = PacketBatch.from_list([packet(pf.mirror())])
    lists, entries = clf.classify(back, mirror=True, entries=True)
    assert (int(lists[0]), int(entries[0])) == first_permit(acls, on_the_wire(pf.mirror()),
                                                            mirror=True)


def test_no_lists_and_remarks_only() -> None:
    f = fields_arrays([PacketFields(6, 1, 2, 3, 4)])
    assert classify_fields(Classifier([]), f)[0].tolist() == [-1]
    only = [AccessList("R", "named", [Ace(10, "remark", remark="x")])]
    assert classify_fields(Classifier(only), f)[0].tolist() == [-1]
    assert Classifier([]).classify(PacketBatch.empty()).tolist() == []


def test_immutable_after_build() -> None:
    acls = _acls()
    clf = Classifier(acls)
    pf = PacketFields(6, ip("10.0.0.1"), ip("20.0.0.1"), 1024, 443)
    before = classify_fields(clf, fields_arrays([pf]))
    acls[0].entries.clear()
    after = classify_fields(clf, fields_arrays([pf]))
    assert before[0].tolist() == after[0].tolist() == [0]


def test_bad_packets_get_a_status() -> None:
    acls = [AccessList("ALL", "named", [Ace(10, "permit")])]
    clf = Classifier(acls)
    def cut(pkt: bytes, n: int) -> bytes:
        return pkt[:2] + n.to_bytes(2, "big") + pkt[4:n]

    good = packet(PacketFields(6, 1, 2, 3, 4, tcp_flags=0x10))
    udp = packet(PacketFields(17, 1, 2, 3, 4))
    icmp = packet(PacketFields(1, 1, 2, icmp_type=8, icmp_code=0))
    hdr_only_tcp = bytearray(good[:20])
    hdr_only_tcp[2:4] = (20).to_bytes(2, "big")
    short_total = bytearray(good)
    short_total[2:4] = (10).to_bytes(2, "big")
    long_total = bytearray(good)
    long_total[2:4] = (200).to_bytes(2, "big")
    ihl4 = bytearray(good)
    ihl4[0] = 0x44
    ihl15 = bytearray(good)
    ihl15[0] = 0x4F
    frag_no_l4 = bytearray(hdr_only_tcp)
    frag_no_l4[6:8] = (0x2000 | 10).to_bytes(2, "big")
    cases = [
        (good, Status.OK, 0),
        (cut(udp, 24), Status.OK, 0),
        (cut(icmp, 22), Status.OK, 0),
        (cut(good, 34), Status.OK, 0),
        (b"", Status.TRUNCATED, -1),
        (good[:19], Status.TRUNCATED, -1),
        (bytes([0x60]) + bytes(39), Status.BAD_IP_HEADER, -1),
        (bytes(hdr_only_tcp), Status.TRUNCATED, -1),
        (cut(udp, 23), Status.TRUNCATED, -1),
        (cut(icmp, 21), Status.TRUNCATED, -1),
        (cut(good, 33), Status.TRUNCATED, -1),
        (bytes(short_total), Status.BAD_IP_HEADER, -1),
        (bytes(long_total), Status.TRUNCATED, -1),
        (bytes(ihl4), Status.BAD_IP_HEADER, -1),
        (bytes(ihl15), Status.TRUNCATED, -1),
        (bytes(frag_no_l4), Status.OK, 0),  # a non-initial fragment carries no L4 header
        (good + b"trailer", Status.OK, 0),  # bytes past the total length are ignored
    ]
    core = classifier_module._classify  # its status constants are Status's
    assert (core.OK, core.TRUNCATED, core.BAD_IP_HEADER) == (
        Status.OK, Status.TRUNCATED, Status.BAD_IP_HEADER)
    res = clf.lookup(PacketBatch.from_list([c[0] for c in cases]))
    assert res.status.tolist() == [int(c[1]) for c in cases]
    assert res.lists.tolist() == [c[2] for c in cases]
    assert res.entries.tolist() == [0 if c[2] == 0 else -1 for c in cases]


def test_argument_checks() -> None:
    clf = Classifier(_acls())
    with pytest.raises(TypeError):
        Classifier([object()])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        clf.classify([b"x"])  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Classifier([], split=3)
    with pytest.raises(ValueError):
        Classifier([], binth=0)
    with pytest.raises(ValueError):
        clf.classify_fields([6, 6], [1], [2], [3, 3], [4, 4])
    with pytest.raises(ValueError):
        clf.classify_fields([256], [1], [2], [3], [4])
    with pytest.raises(ValueError):
        clf.classify_fields([6], [1 << 32], [2], [3], [4])
    with pytest.raises(ValueError):
        clf.classify_fields([6], [1], [2], [3], [4], frag=[3])
    # defaults: ports 0, not a fragment, not ICMP
    assert clf.classify_fields([17], [ip("10.0.0.1")], [ip("20.0.0.1")]).tolist() == [1]
    assert "Classifier" in repr(clf) and clf.nbytes > 0 and len(clf) == 3
    assert set(clf.stats()) == {"whole", "fragments"}


# -- hypothesis ---------------------------------------------------------------------------
EDGE_ADDRS = (0, 0xFFFFFFFF, ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.255"),
              ip("10.0.1.0"), ip("192.168.1.1"), 0x7FFFFFFF, 0x80000000)
EDGE_PORTS = (0, 1, 21, 22, 23, 80, 443, 500, 1023, 1024, 4500, 65534, 65535)
PROTOS = (None, 6, 17, 1, 47, 50, 0, 255)

addresses = st.one_of(st.sampled_from(EDGE_ADDRS), st.sampled_from(EDGE_ADDRS),
                      st.integers(0, 0xFFFFFFFF))
ports = st.one_of(st.sampled_from(EDGE_PORTS), st.integers(0, 65535))


@st.composite
def address_matches(draw: st.DrawFn) -> AddressMatch:
    kind = draw(st.sampled_from(("any", "any", "host", "prefix", "prefix", "discontiguous")))
    a = draw(addresses)
    if kind == "any":
        return ANY
    if kind == "host":
        return AddressMatch(a, 0)
    if kind == "prefix":
        wild = (1 << draw(st.integers(0, 32))) - 1
        return AddressMatch(a & ~wild & 0xFFFFFFFF, wild)
    wild = draw(st.sampled_from((0x00FF00FF, 0xFF000000, 0x0000FF00, 0x80000001)) |
                st.integers(0, 0xFFFFFFFF))
    return AddressMatch(a, wild)


@st.composite
def port_matches(draw: st.DrawFn) -> PortMatch | None:
    op = draw(st.sampled_from((None, None, "eq", "eq", "neq", "lt", "gt", "range")))
    if op is None:
        return None
    if op == "eq":
        return PortMatch("eq", tuple(draw(st.lists(ports, min_size=1, max_size=3))))
    if op == "range":
        a, b = sorted((draw(ports), draw(ports)))
        return PortMatch("range", (a, b))
    return PortMatch(op, (draw(ports),))  # type: ignore[arg-type]


@st.composite
def aces(draw: st.DrawFn) -> Ace:
    action = draw(st.sampled_from(("permit", "permit", "deny", "deny", "remark")))
    if action == "remark":
        return Ace(0, "remark", remark="r")
    proto = draw(st.sampled_from(PROTOS))
    kw: dict[str, object] = {}
    if proto in (6, 17):
        kw["source_port"] = draw(port_matches())
        kw["destination_port"] = draw(port_matches())
        if proto == 6:
            kw["established"] = draw(st.booleans())
    if proto == 1 and draw(st.booleans()):
        kw["icmp_type"] = draw(st.sampled_from((0, 3, 8, 11, 255)))
        if draw(st.booleans()):
            kw["icmp_code"] = draw(st.sampled_from((0, 1, 13)))
    tos_kind = draw(st.sampled_from(("none", "none", "none", "dscp", "prec", "tos", "prec+tos")))
    if tos_kind == "dscp":
        kw["dscp"] = draw(st.sampled_from((0, 10, 46, 63)))
    if "prec" in tos_kind:
        kw["precedence"] = draw(st.integers(0, 7))
    if "tos" in tos_kind:
        kw["tos"] = draw(st.integers(0, 15))
    ace = Ace(0, action, proto, source=draw(address_matches()),
              destination=draw(address_matches()), **kw)  # type: ignore[arg-type]
    if not ace.has_l4 and draw(st.integers(0, 4)) == 0:
        ace = dataclasses.replace(ace, fragments=True)
    return ace


access_lists = st.lists(
    st.lists(aces(), max_size=8).map(
        lambda es: AccessList("L", "named", [
            dataclasses.replace(e, seq=10 * (i + 1)) for i, e in enumerate(es)])),
    max_size=5,
)


@st.composite
def packet_fields(draw: st.DrawFn) -> PacketFields:
    proto = draw(st.sampled_from((6, 17, 1, 47, 50, 0, 255)) | st.integers(0, 255))
    icmp = proto == 1 or draw(st.integers(0, 9)) == 0
    return PacketFields(
        proto, draw(addresses), draw(addresses), draw(ports), draw(ports),
        draw(st.sampled_from((0, 3, 8, 11, 255))) if icmp else -1,
        draw(st.sampled_from((0, 1, 13))) if icmp else -1,
        draw(st.sampled_from((0, 0x02, 0x10, 0x12, 0x04, 0x14)) | st.integers(0, 255)),
        draw(st.sampled_from((0, 46 << 2, 10 << 2, 0xE0, 0x1E, 0xFF)) | st.integers(0, 255)),
        draw(st.sampled_from((0, 0, 1, 2))),
    )


def _probe_packets(acls: list[AccessList], extra: list[PacketFields]) -> list[PacketFields]:
    """Random packets plus packets placed on the corners of the entries (to hit them)."""
    out = list(extra)
    for acl in acls:
        for a in acl.entries:
            if a.action == "remark":
                continue
            care_s, care_d = ~a.source.wildcard, ~a.destination.wildcard
            for pick, frag in ((0, 0), (1, 2), (0, 2), (1, 1)):
                s = (a.source.address & care_s) | (a.source.wildcard if pick else 0)
                d = (a.destination.address & care_d) | (a.destination.wildcard if pick else 0)
                sp = a.source_port.ranges()[0][pick] if a.source_port and \
                    a.source_port.ranges() else 1234
                dp = a.destination_port.ranges()[-1][pick] if a.destination_port and \
                    a.destination_port.ranges() else 80
                tos = ((a.dscp or 0) << 2) | ((a.precedence or 0) << 5) | ((a.tos or 0) << 1)
                out.append(PacketFields(
                    a.protocol if a.protocol is not None else 6, s & 0xFFFFFFFF,
                    d & 0xFFFFFFFF, sp, dp,
                    a.icmp_type if a.icmp_type is not None else -1,
                    a.icmp_code if a.icmp_code is not None else -1,
                    0x10 if pick else 0x02, tos & 0xFF, frag))
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(access_lists, st.lists(packet_fields(), max_size=40), st.booleans())
def test_hypothesis_fields_agree(acls: list[AccessList], pkts: list[PacketFields],
                                 mirror: bool) -> None:
    clf = Classifier(acls)
    probe = _probe_packets(acls, pkts)
    f = fields_arrays(probe)
    got = classify_fields(clf, f, mirror)
    want = reference(acls, probe, mirror)
    assert got[0].tolist() == want[0].tolist()
    assert got[1].tolist() == want[1].tolist()
    # the independent numpy scan agrees too, and so do the multi-tree forests
    assert np.array_equal(cb.linear_scan(acls, f, mirror)[0], want[0])
    for split in (2, 4):
        assert classify_fields(Classifier(acls, split=split, binth=2), f, mirror)[0].tolist() \
            == want[0].tolist()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(access_lists, st.lists(packet_fields(), max_size=30), st.booleans())
def test_hypothesis_packets_agree(acls: list[AccessList], pkts: list[PacketFields],
                                  mirror: bool) -> None:
    clf = Classifier(acls, binth=2)
    probe = _probe_packets(acls, pkts)
    batch = PacketBatch.from_list([packet(p, i) for i, p in enumerate(probe)])
    wire = [on_the_wire(p) for p in probe]
    # the packet builder and PacketBatch.ipv4_fields read the same fields back
    v4 = batch.ipv4_fields()
    assert v4.sport.tolist() == [w.source_port for w in wire]
    assert v4.icmp_type.tolist() == [w.icmp_type for w in wire]
    res = clf.lookup(batch, mirror)
    assert res.status.tolist() == [0] * len(probe)
    want = reference(acls, wire, mirror)
    assert res.lists.tolist() == want[0].tolist()
    assert res.entries.tolist() == want[1].tolist()


def test_every_batch_size() -> None:
    """Batch sizes 0..300, contiguous and gapped, both loop variants (interleaved blocks of
    16 and the scalar reference loop), equal the per-packet answers."""
    rules, _ = cb.get_set("fw1_1k", None)
    acls = cb.to_access_lists(rules[:300], nlists=6, deny_fraction=0.2, seed=3)
    clf = Classifier(acls)
    f = cb.random_fields(300, seed=5, like=cb.trace_fields(cb.generate_trace(rules[:300], 300)))
    pkts = fields_list(f)
    wire = [on_the_wire(p) for p in pkts]
    want = reference(acls, wire)
    want_fields = reference(acls, pkts)
    batch = PacketBatch.from_list([packet(p, i) for i, p in enumerate(pkts)])
    gapped = PacketBatch.from_list([x for p in pkts for x in (packet(p), b"\x00" * 7)])[::2]
    for n in range(301):
        for b in (batch[:n], gapped[:n]):
            for scalar in (False, True):
                res = clf.lookup(b, scalar=scalar)
                assert res.lists.dtype == np.int32 and res.lists.shape == (n,)
                assert res.lists.tolist() == want[0][:n].tolist()
                assert res.entries.tolist() == want[1][:n].tolist()
        sub = {k: v[:n] for k, v in f.items()}
        for scalar in (False, True):
            got = classify_fields(clf, sub, scalar=scalar)
            assert got[1].tolist() == want_fields[1][:n].tolist()


# -- ClassBench ---------------------------------------------------------------------------
@functools.cache
def _classbench(name: str, base: Path | None) -> tuple[list[AccessList], np.ndarray]:
    rules, trace = cb.get_set(name, base)
    return cb.to_access_lists(rules, nlists=12, deny_fraction=0.1, seed=7), trace


def _check_set(acls: list[AccessList], trace: np.ndarray, full: bool) -> None:
    clf = Classifier(acls)
    rng = np.random.default_rng(11)
    tf = cb.trace_fields(trace, seed=12)
    if not full:  # the Python oracles are slow on 10K rules: a sample of the trace
        idx = rng.choice(trace.shape[0], size=min(4000, trace.shape[0]), replace=False)
        tf = {k: v[idx] for k, v in tf.items()}
    rf = cb.random_fields(2000, seed=13, like=tf)
    for f, mirror in ((tf, False), (rf, False), (rf, True), (tf, True)):
        got = classify_fields(clf, f, mirror)
        want = cb.linear_scan(acls, f, mirror)
        assert np.array_equal(got[0], want[0]), int((got[0] != want[0]).sum())
        assert np.array_equal(got[1], want[1])
        # the reference matcher itself on a sample
        k = 300 if full else 60
        sample = {key: v[:k] for key, v in f.items()}
        ref = reference(acls, fields_list(sample), mirror)
        assert got[0][:k].tolist() == ref[0].tolist()
        assert got[1][:k].tolist() == ref[1].tolist()
    assert 0 < (classify_fields(clf, tf)[0] >= 0).mean()  # the trace does hit permits


@pytest.mark.parametrize("name", cb.SETS)
def test_classbench_sets(name: str, classbench_dir: Path | None) -> None:
    acls, trace = _classbench(name, classbench_dir)
    _check_set(acls, trace, full=name.endswith("_1k"))


@pytest.mark.parametrize("kind", ("acl1", "fw1", "ipc1"))
def test_generated_sets(kind: str) -> None:
    """The fallback used without ../shared: generated sets of the same shapes."""
    acls, trace = _classbench(f"{kind}_1k", None)
    _check_set(acls, trace, full=True)


def test_classbench_packets(classbench_dir: Path | None) -> None:
    """The packet path (header parsing in C) equals the fields path on a whole trace."""
    acls, trace = _classbench("ipc1_1k", classbench_dir)
    clf = Classifier(acls)
    pkts = fields_list(cb.trace_fields(trace, seed=4))
    wire = [on_the_wire(p) for p in pkts]
    batch = PacketBatch.from_list([packet(p, i) for i, p in enumerate(pkts)])
    wf = fields_arrays(wire)
    for mirror in (False, True):
        res = clf.lookup(batch, mirror)
        assert not res.status.any()
        got = classify_fields(clf, wf, mirror)
        assert np.array_equal(res.lists, got[0]) and np.array_equal(res.entries, got[1])
        assert np.array_equal(got[0], cb.linear_scan(acls, wf, mirror)[0])
    # the vectorised 40-byte packets of the bench read back as their on-the-wire fields
    tf = cb.trace_fields(trace, seed=5)
    res = clf.lookup(cb.fields_packets(tf))
    assert not res.status.any()
    wire = [on_the_wire(p) for p in fields_list(tf)]
    assert np.array_equal(res.lists, classify_fields(clf, fields_arrays(wire))[0])


def test_forest_shapes_agree(classbench_dir: Path | None) -> None:
    """One tree, two, four, and tiny / huge leaves give the same answers."""
    acls, trace = _classbench("fw1_1k", classbench_dir)
    f = cb.random_fields(3000, seed=21, like=cb.trace_fields(trace, seed=22))
    want = cb.linear_scan(acls, f)
    for kw in ({"split": 1}, {"split": 2}, {"split": 4, "binth": 1},
               {"split": 1, "binth": 1000}, {"spfac": 1.0}, {"split": 1, "budget": 20_000},
               {"split": 4, "binth": 1, "budget": 30_000}):
        clf = Classifier(acls, **kw)  # type: ignore[arg-type]
        got = classify_fields(clf, f)
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1]), kw
        if "budget" in kw:  # the cap holds, beyond the rows and one leaf copy of each
            t = clf.stats()["whole"]
            assert t["bytes"] <= t["rows"] * (80 + 36) + kw["budget"] + 256, t


def _boundary_set(seed: int) -> tuple[list[AccessList], dict[str, np.ndarray]]:
    """Small random lists whose ranges share edges, and packets on every edge and +-1."""
    rng = np.random.default_rng(seed)
    base = [ip("10.0.0.0"), ip("10.0.0.128"), ip("10.1.0.0"), ip("192.168.0.0"), 0]
    edges_p = [0, 1, 79, 80, 81, 1023, 1024, 65534, 65535]
    lists = []
    for li in range(int(rng.integers(1, 4))):
        entries = []
        for i in range(int(rng.integers(3, 25))):
            def addr() -> AddressMatch:
                plen = int(rng.choice([0, 8, 16, 24, 25, 26, 30, 32]))
                wild = (1 << (32 - plen)) - 1
                a = (int(rng.choice(base)) + int(rng.integers(0, 256))) & ~wild & 0xFFFFFFFF
                return AddressMatch(a, wild)
            proto = int(rng.choice([6, 17, 6]))
            lo, hi = sorted(int(x) for x in rng.choice(edges_p, 2))
            pm = rng.choice([None, PortMatch("range", (lo, hi)), PortMatch("gt", (lo,)),
                             PortMatch("lt", (hi,)), PortMatch("eq", (lo, hi))])
            entries.append(Ace(10 * (i + 1), "permit" if rng.random() < 0.7 else "deny",
                               proto, addr(), None, addr(), pm))
        lists.append(AccessList(f"E{li}", "named", entries))
    vals_a: list[int] = []
    for acl in lists:
        for a in acl.entries:
            for m in (a.source, a.destination):
                lo_a = m.address & ~m.wildcard & 0xFFFFFFFF
                vals_a += [lo_a, lo_a - 1, lo_a | m.wildcard, (lo_a | m.wildcard) + 1]
    va = np.array([v & 0xFFFFFFFF for v in vals_a], dtype=np.int64)
    vp = np.array([p + d for p in edges_p for d in (-1, 0, 1) if 0 <= p + d <= 65535])
    n = 4000
    f = {
        "proto": rng.choice(np.array([6, 17]), n), "src": rng.choice(va, n),
        "dst": rng.choice(va, n), "sport": rng.choice(vp, n), "dport": rng.choice(vp, n),
        "frag": np.zeros(n, np.int64), "icmp_type": np.full(n, -1), "icmp_code": np.full(n, -1),
        "tcp_flags": np.zeros(n, np.int64), "tos": np.zeros(n, np.int64),
    }
    return lists, f


@pytest.mark.parametrize("seed", [*range(40), 799])  # 799: sharing a subtree needs care
def test_shared_edges(seed: int) -> None:
    """Rows with common edges and packets on the edges: cuts, sharing, pruning, compaction."""
    acls, f = _boundary_set(seed)
    want = cb.linear_scan(acls, f)
    for kw in ({"split": 1, "binth": 1}, {"split": 4, "binth": 1},
               {"split": 1, "binth": 3, "spfac": 1.0}, {"split": 1, "binth": 1, "spfac": 16.0}):
        got = classify_fields(Classifier(acls, **kw), f)  # type: ignore[arg-type]
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1]), kw


def test_bench_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    """bench/classify.py runs (one small set, tiny batch) and its three answers agree."""
    import importlib.util
    import json

    path = Path(__file__).resolve().parents[1] / "bench" / "classify.py"
    spec = importlib.util.spec_from_file_location("bench_classify", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--quick", "--json", "--sets", "fw1_1k", "--batch", "1024"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["rows"][0]["agree"] and doc["rows"][0]["mpps_packets"] > 0


def test_read_only_buffer_and_views() -> None:
    """A batch over immutable bytes, and a reordered view, classify like the original."""
    acls = _acls()
    clf = Classifier(acls)
    pkts = [PacketFields(6, ip("10.0.0.1"), ip("20.0.0.1"), 1024, p) for p in (23, 80, 22)]
    raw = [packet(p) for p in pkts]
    ro = PacketBatch(b"".join(raw), [0, 40, 80], [40, 40, 40])
    assert not ro.buffer.flags.writeable
    assert clf.classify(ro).tolist() == [1, 0, 1]
    assert clf.classify(ro[[2, 0]]).tolist() == [1, 1]
