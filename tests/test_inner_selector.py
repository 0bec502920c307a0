"""The inner-flow shortcut of the decrypt path: ``_decapsulate_multi``'s selector flag
(checked against a pure-Python reading of the inner packet), ``Classifier.first_match_box``
(checked against the brute-force ``AccessList.first_match_index``), and the router giving
the same answers with the shortcut as without it."""

from __future__ import annotations

import struct

import numpy as np
import pytest

pytest.importorskip("scapy")
from test_classifier_match_lists import build, ip, r_acls, r_fields  # noqa: E402
from test_router_kit import manual_pair, udp  # noqa: E402

from ipsecfast import PacketBatch, parse_config  # noqa: E402
from ipsecfast.acl import PacketFields  # noqa: E402
from ipsecfast.classifier import Classifier  # noqa: E402
from ipsecfast.cryptomap import CryptoMapSpd  # noqa: E402
from ipsecfast.router import Router  # noqa: E402
from ipsecfast.sa import MODE_IDS, NO_SELECTOR, SecurityAssociation, _decapsulate_multi  # noqa: E402

TUNNEL = MODE_IDS["tunnel"]
IF = "GigabitEthernet0/0"


def _oracle(p: bytes, sel: tuple[int, ...]) -> bool:
    """The spec of the flag, read with struct."""
    if sel[0] > sel[1] or len(p) < 20 or p[0] >> 4 != 4:
        return False
    ihl, total = (p[0] & 15) * 4, struct.unpack("!H", p[2:4])[0]
    if ihl < 20 or ihl > len(p) or total < ihl or total > len(p):
        return False
    if struct.unpack("!H", p[6:8])[0] & 0x3FFF:
        return False
    proto = p[9]
    if proto in (50, 51):
        return False
    sp = dp = 0
    if proto in (6, 17):
        if total - ihl < (14 if proto == 6 else 4):
            return False
        sp, dp = struct.unpack("!HH", p[ihl:ihl + 4])
    elif proto == 1 and total - ihl < 2:
        return False
    src, dst = struct.unpack("!II", p[12:20])
    return (sel[0] <= src <= sel[1] and sel[2] <= dst <= sel[3] and sel[4] <= sp <= sel[5]
            and sel[6] <= dp <= sel[7] and sel[8] <= proto <= sel[9])


def _inner(rng: np.random.Generator, i: int) -> bytes:
    f = r_fields(rng)
    if rng.random() < 0.1:
        f = PacketFields(int(rng.choice([50, 51])), f.source, f.destination)
    p = build(f, ident=i, options=int(rng.choice([0, 0, 1])),
              payload=bytes(int(rng.integers(0, 8))))
    if rng.random() < 0.15:  # a transport header cut short (the total length says so)
        cut = max(20, len(p) - int(rng.integers(1, 12)))
        p = p[:2] + struct.pack("!H", cut) + p[4:cut]
    return p


def _box(rng: np.random.Generator) -> tuple[int, ...]:
    if rng.random() < 0.1:
        return NO_SELECTOR
    out: list[int] = []
    for top in (0xFFFFFFFF, 0xFFFFFFFF, 0xFFFF, 0xFFFF, 0xFF):
        a, b = sorted(int(x) for x in rng.integers(0, top + 1, 2, dtype=np.int64))
        if rng.random() < 0.4:
            a, b = 0, top
        out += [a, b]
    return tuple(out)


@pytest.mark.parametrize("seed", range(6))
def test_flag_against_a_python_reading(seed: int) -> None:
    rng = np.random.default_rng(seed)
    nsa = 5
    key, auth = bytes(range(16)), bytes(range(20))

    def sa() -> SecurityAssociation:
        return SecurityAssociation("esp", 0x100, "esp-aes esp-sha-hmac", key, auth,
                                   local="192.0.2.1", peer="192.0.2.2", replay_window=0)

    enc = [sa() for _ in range(nsa)]
    dec = [sa() for _ in range(nsa)]
    inner = [_inner(rng, i) for i in range(400)]
    which = rng.integers(0, nsa, len(inner))
    wire = [enc[k].encapsulate(PacketBatch.from_list([p])).packets.to_list()[0]
            for k, p in zip(which.tolist(), inner, strict=True)]
    sent = [i for i, w in enumerate(wire) if w]  # (a malformed inner packet is refused)
    inner, wire, which = [inner[i] for i in sent], [wire[i] for i in sent], which[sent]
    assert len(sent) > 300
    boxes = [_box(rng) for _ in range(nsa)]
    # some boxes around real packets, so that "inside" happens often
    boxes[0] = (0, 0xFFFFFFFF, 0, 0xFFFFFFFF, 0, 0xFFFF, 0, 0xFFFF, 0, 255)  # everything
    for k in range(1, nsa):
        if rng.random() < 0.6:
            p = next((q for q, w in zip(inner, which, strict=True) if w == k), None)
            if p is not None and len(p) >= 20:
                src, dst = struct.unpack("!II", p[12:20])
                boxes[k] = (src, src, 0, 0xFFFFFFFF, 0, 0xFFFF, 0, 0xFFFF, 0, 255) \
                    if rng.random() < 0.5 else (0, 0xFFFFFFFF, dst, dst, 0, 0xFFFF, 0,
                                                0xFFFF, p[9], p[9])
    batch = PacketBatch.from_list(wire)
    off = np.zeros(len(wire), dtype=np.int64)
    np.cumsum(batch.lengths[:-1], out=off[1:])
    out = np.zeros(int(batch.lengths.sum()), dtype=np.uint8)
    flags = np.full(len(wire), 7, dtype=np.uint8)
    res, _ = _decapsulate_multi(dec, which, TUNNEL, batch, out, off,
                                selectors=np.array(boxes, dtype=np.uint32), in_selector=flags)
    from ipsecfast.status import status_counts
    assert (res.status == 0).all(), status_counts(res.status)
    want = [_oracle(p, boxes[k]) for p, k in zip(inner, which.tolist(), strict=True)]
    assert flags.tolist() == [int(w) for w in want]
    assert 20 < sum(want) < len(want)  # (both answers occur)


def test_selector_arguments_are_checked() -> None:
    sa = SecurityAssociation("esp", 0x100, "esp-aes esp-sha-hmac", bytes(16), bytes(20),
                             local="192.0.2.1", peer="192.0.2.2")
    b = PacketBatch.from_list([udp("10.0.0.1", "10.0.0.2")])
    out = np.zeros(200, dtype=np.uint8)
    off = np.zeros(1, dtype=np.int64)
    with pytest.raises(ValueError):
        _decapsulate_multi([sa], [0], TUNNEL, b, out, off,
                           selectors=np.zeros((1, 10), np.uint32))
    with pytest.raises(ValueError):
        _decapsulate_multi([sa], [0], TUNNEL, b, out, off,
                           selectors=np.zeros((2, 10), np.uint32),
                           in_selector=np.zeros(1, np.uint8))


def test_first_match_box_against_brute_force() -> None:
    """Inside a returned box, every non-fragment packet's first match in the list is the
    entry (as ``first_match_index`` finds it). Packets are drawn inside the box."""
    found = sum(_boxes_checked(seed) for seed in range(40))
    assert found > 20  # (random lists do have plain first-match entries)


def _boxes_checked(seed: int) -> int:
    rng = np.random.default_rng(seed)
    acls = r_acls(rng)
    clf = Classifier(acls)
    found = 0
    for li, acl in enumerate(acls):
        for ei in range(len(acl.entries)):
            box = clf.first_match_box(li, ei)
            if box is None:
                continue
            found += 1
            lo, hi = box
            for _ in range(40):
                v = [int(rng.integers(a, b + 1, dtype=np.int64)) for a, b in
                     zip(lo, hi, strict=True)]
                proto = v[4]
                f = PacketFields(proto, v[0], v[1],
                                 v[2] if proto in (6, 17) else 0,
                                 v[3] if proto in (6, 17) else 0,
                                 icmp_type=0 if proto == 1 else -1,
                                 icmp_code=0 if proto == 1 else -1, tcp_flags=0x10)
                if proto not in (6, 17) and (lo[2] > 0 or lo[3] > 0):
                    continue  # (ports of such a packet read 0, outside this box)
                assert acl.first_match_index(f) == ei, (seed, li, ei, f)
    return found


def test_first_match_box_refuses_what_ranges_cannot_decide() -> None:
    cfg = parse_config("""access-list 101 deny ip host 10.0.0.5 any
access-list 101 permit ip 10.0.0.0 0.0.0.255 any
access-list 102 permit tcp any any established
access-list 103 permit ip 10.0.0.0 0.0.255.0 any
access-list 104 permit udp any any neq 53
access-list 105 permit ip 10.0.0.0 0.0.0.255 any
access-list 105 permit ip 10.0.1.0 0.0.0.255 any
""")
    acls = [cfg.access_lists[n] for n in ("101", "102", "103", "104", "105")]
    clf = Classifier(acls)
    assert clf.first_match_box(0, 1) is None  # an earlier deny overlaps
    assert clf.first_match_box(1, 0) is None  # established: not a range
    assert clf.first_match_box(2, 0) is None  # discontiguous wildcard
    assert clf.first_match_box(3, 0) is None  # neq: two rows
    assert clf.first_match_box(4, 0) == ((ip("10.0.0.0"), 0, 0, 0, 0),
                                         (ip("10.0.0.255"), 0xFFFFFFFF, 0xFFFF, 0xFFFF, 255))
    assert clf.first_match_box(4, 1) is not None  # disjoint from the one before
    assert clf.first_match_box(0, 0) is None  # a deny


@pytest.mark.parametrize("spec", ["esp-aes esp-sha-hmac", "esp-gcm"])
def test_router_answers_the_same_with_and_without_the_shortcut(
        spec: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Traffic in and out of the SA's flow, forged with A's keys: the router's verdicts
    and reasons do not depend on whether the core or the classifier checked the flow."""
    a, b, _ = manual_pair(spec, entries=[
        ("permit ip 10.1.0.0 0.0.255.255 10.2.0.0 0.0.255.255",
         "permit ip 10.2.0.0 0.0.0.255 10.1.0.0 0.0.0.255"),
        ("permit udp 10.1.0.0 0.0.255.255 10.3.0.0 0.0.255.255",
         "permit udp 10.3.0.0 0.0.255.255 10.1.0.0 0.0.255.255")])
    rng = np.random.default_rng(3)
    pkts = []
    for i in range(300):
        src = f"10.1.{int(rng.integers(0, 3))}.{int(rng.integers(1, 255))}"
        dst = f"10.{int(rng.choice([2, 3]))}.{int(rng.integers(0, 3))}.{int(rng.integers(1, 255))}"
        pkts.append(udp(src, dst, size=int(rng.integers(28, 200)), i=i))
    wire = Router(a).outbound(IF, PacketBatch.from_list(pkts)).packets
    with_core = Router(b).inbound(IF, wire)
    monkeypatch.setattr(CryptoMapSpd, "inner_selector", lambda self, e, ace: None)
    without = Router(b).inbound(IF, wire)
    assert with_core.verdict.tolist() == without.verdict.tolist()
    assert with_core.reason.tolist() == without.reason.tolist()
    assert with_core.packets.equals(without.packets).all()
    assert 0 < int((with_core.reason == 37).sum()) < len(pkts)  # some outside B's flows
