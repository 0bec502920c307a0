"""``Router.prepare_outbound`` / ``prepare_inbound``: the stateless first step of a batch,
made ahead (``ipsecfast encrypt`` / ``decrypt`` make it on their reader thread). The
router's answer with a prepared batch must be the answer without one, and a preparation
made before the crypto map or the SA database changed must not be used."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("scapy")
from test_ike_kit import BYPASS, HOST_B, IF, M_ADDR, N_ADDR, Y_TO_X, Clock, config  # noqa: E402
from test_router_kit import manual_pair, udp  # noqa: E402
from test_router_sa import ike_pair  # noqa: E402

from ipsecfast import PacketBatch, Status, parse_config  # noqa: E402
from ipsecfast.router import Router  # noqa: E402


def _same(a: object, b: object, bytes_too: bool = True) -> None:
    for field in ("verdict", "reason", "entry", "sa"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    pa, pb = a.packets, b.packets  # type: ignore[attr-defined]
    assert np.array_equal(pa.lengths, pb.lengths)
    if bytes_too:
        assert pa.equals(pb).all()


def _traffic() -> PacketBatch:
    pkts = [udp("10.1.0.5", "10.2.0.7", i=i) for i in range(20)]
    pkts += [udp("10.9.0.1", "10.2.0.1"), b"\x60" + bytes(39), b"", udp("10.1.0.1", "10.2.0.1")[:30]]
    return PacketBatch.from_list(pkts)


@pytest.mark.parametrize("spec", ["esp-aes esp-sha-hmac", "esp-gcm", "ah-sha-hmac esp-aes"])
def test_prepared_batches_give_the_same_answers(spec: str) -> None:
    a, b, _ = manual_pair(spec)
    ra1, rb1, ra2, rb2 = Router(a), Router(b), Router(a), Router(b)
    clear = _traffic()
    out1 = ra1.outbound(IF, clear)
    out2 = ra2.outbound(IF, clear, prepared=ra2.prepare_outbound(IF, clear))
    _same(out1, out2, bytes_too=False)  # (fresh random IVs / salts: other ciphertext)
    back1 = Router(b).inbound(IF, out1.packets[out1.verdict == 1]).packets
    back2 = Router(b).inbound(IF, out2.packets[out2.verdict == 1]).packets
    assert back1.equals(back2).all() and back1.to_list() == clear[out1.verdict == 1].to_list()
    wire = out1.packets[out1.verdict != 2]
    for r in (rb1, rb2):  # the same first batch: each builds its SPI table
        r.inbound(IF, wire[:1])
    in1 = rb1.inbound(IF, wire)
    pre = rb2.prepare_inbound(IF, wire)
    assert pre.result is not None
    in2 = rb2.inbound(IF, wire, prepared=pre)
    _same(in1, in2)
    assert int((in2.verdict == 1).sum()) == 20 and int((in2.verdict == 0).sum()) == 3


def test_a_preparation_for_another_batch_is_not_used() -> None:
    a, _, _ = manual_pair("esp-gcm")
    r = Router(a)
    one, other = _traffic(), PacketBatch.from_list([udp("10.9.0.1", "10.9.0.2")])
    res = r.outbound(IF, other, prepared=r.prepare_outbound(IF, one))
    assert res.verdict.tolist() == [BYPASS]


def test_outbound_classifies_again_after_the_crypto_map_changed() -> None:
    """A preparation made before ``set_entry_flows`` gave a template its access list
    still says "no entry": the router must see the entry (no SA: dropped)."""
    text = config(N_ADDR, M_ADDR, Y_TO_X, dynamic=" set transform-set T") + (
        f"access-list 102 permit ip host {HOST_B} 10.0.3.0 0.0.0.255\n")
    cfg = parse_config(text)
    r = Router(cfg, clock=Clock())
    (dyn,) = [e for e in r.entries if e.dynamic]
    pkts = PacketBatch.from_list([udp(HOST_B, "10.0.3.1")])
    stale = r.prepare_outbound(IF, pkts)
    assert r.outbound(IF, pkts, prepared=stale).verdict.tolist() == [BYPASS]
    r.set_entry_flows(dyn.index, cfg.access_lists["102"])
    assert r.outbound(IF, pkts, prepared=stale).reason.tolist() == [Status.NO_SA]


def test_inbound_looks_up_again_after_the_sad_changed() -> None:
    """A preparation made while an SA existed is not used once it is cleared: the
    packet's SPI is then unknown."""
    ra, rb, _ = ike_pair()
    out = ra.outbound(IF, PacketBatch.from_list([udp("10.1.0.5", "10.2.0.7")]))
    assert out.verdict.tolist() == [1]
    assert rb.inbound(IF, out.packets).verdict.tolist() == [1]  # (builds B's SPI table)
    stale = rb.prepare_inbound(IF, out.packets)
    assert stale.result is not None
    rb.clear_crypto_sa()
    res = rb.inbound(IF, out.packets, prepared=stale)
    assert res.reason.tolist() == [Status.UNKNOWN_SPI]


def test_inbound_without_a_built_table_prepares_nothing() -> None:
    """Building the SPI table reads the SA database: the preparing thread leaves it to
    the router's own thread."""
    ra, rb, _ = ike_pair()
    out = ra.outbound(IF, PacketBatch.from_list([udp("10.1.0.5", "10.2.0.7")]))
    pre = rb.prepare_inbound(IF, out.packets)
    assert pre.result is None
    assert rb.inbound(IF, out.packets, prepared=pre).verdict.tolist() == [1]


# -- the whole-batch fast path and the per-pair caches ----------------------------------------

def _state(r: Router) -> tuple[object, ...]:
    """Every counter a batch moves: pairs (packets, bytes, errors), drops, ACL hits."""
    pairs = sorted((p.encaps, p.decaps, p.bytes_out, p.bytes_in, sorted(p.send_errors.items()),
                    sorted(p.recv_errors.items())) for p in r.sad)
    hits = sorted((name, sorted(acl.hits.items())) for e in r.entries if (acl := e.acl)
                  for name in [acl.name])
    return pairs, sorted((k, sorted(v.items())) for k, v in r.drops.items()), hits


@pytest.mark.parametrize("spec", ["esp-gcm", "esp-aes esp-sha-hmac", "ah-sha-hmac esp-aes"])
@pytest.mark.parametrize("prepare", [False, True])
def test_a_whole_batch_answers_as_the_general_path(spec: str, prepare: bool) -> None:
    """A batch every packet of which is protected (outbound) / opened (inbound) in order
    takes a shortcut to its result; the same packets followed by one bypassed packet take
    the general path. Both must give the same verdicts, entries, SAs, bytes and counters
    for those packets."""
    a, b, _ = manual_pair(spec)
    pkts = [udp("10.1.0.5", "10.2.0.7", i=i, size=60 + 37 * i) for i in range(30)]
    whole = PacketBatch.from_list(pkts)
    mixed = PacketBatch.from_list([*pkts, udp("10.9.0.1", "10.9.0.2")])
    ra1, ra2 = Router(a), Router(a)

    def out(r: Router, batch: PacketBatch) -> object:
        pre = r.prepare_outbound(IF, batch) if prepare else None
        return r.outbound(IF, batch, prepared=pre)

    o1, o2 = out(ra1, whole), out(ra2, mixed)
    n = len(pkts)
    assert o1.verdict.tolist() == [1] * n and o2.verdict.tolist() == [1] * n + [BYPASS]
    for field in ("verdict", "reason", "entry", "sa"):
        assert getattr(o1, field).tolist() == getattr(o2, field)[:n].tolist(), field
    assert o1.packets.lengths.tolist() == o2.packets.lengths[:n].tolist()
    assert _state(ra1) == _state(ra2)
    # inbound: B opens A's packets, alone and with a clear bypassed packet after them
    wire = o1.packets
    wire_mixed = PacketBatch.from_list([*wire.to_list(), udp("10.9.0.2", "10.9.0.1")])
    rb1, rb2 = Router(b), Router(b)
    for r in (rb1, rb2):
        r.inbound(IF, PacketBatch.from_list([udp("10.8.0.1", "10.8.0.2")]))  # (its SPI table)

    def inb(r: Router, batch: PacketBatch) -> object:
        pre = r.prepare_inbound(IF, batch) if prepare else None
        return r.inbound(IF, batch, prepared=pre)

    i1, i2 = inb(rb1, wire), inb(rb2, wire_mixed)
    assert i1.verdict.tolist() == [1] * n
    for field in ("verdict", "reason", "entry", "sa"):
        assert getattr(i1, field).tolist() == getattr(i2, field)[:n].tolist(), field
    assert i1.packets.to_list() == pkts == i2.packets[:n].to_list()
    assert _state(rb1) == _state(rb2)


def test_new_pairs_after_a_clear_are_used_not_the_cached_ones() -> None:
    """The per-pair arrays are cached for the same pairs: after ``clear crypto sa`` the
    manual pairs are installed again (new objects, new SA ids) and the next batch must be
    protected / opened by the new ones, counted on them."""
    a, b, _ = manual_pair("esp-gcm")
    ra, rb = Router(a), Router(b)
    batch = PacketBatch.from_list([udp("10.1.0.5", "10.2.0.7", i=i) for i in range(8)])
    first = ra.outbound(IF, batch)
    assert rb.inbound(IF, first.packets).verdict.tolist() == [1] * 8
    old_out, old_in = set(first.sa.tolist()), {p.id for p in rb.sad}
    ra.clear_crypto_sa()
    rb.clear_crypto_sa()
    again = ra.outbound(IF, batch)
    assert again.verdict.tolist() == [1] * 8 and not set(again.sa.tolist()) & old_out
    opened = rb.inbound(IF, again.packets)
    assert opened.verdict.tolist() == [1] * 8 and opened.packets.to_list() == batch.to_list()
    assert not {p.id for p in rb.sad} & old_in
    assert [p.encaps for p in ra.sad] == [8] and [p.decaps for p in rb.sad] == [8]


def test_the_inbound_sa_cache_follows_a_new_crypto_map() -> None:
    """The per-SA arrays cached for inbound hold each SA's inner-flow ranges, which come
    from the crypto map: once the map is replaced (as ``set_entry_flows`` replaces a
    dynamic entry's), the same SAs must be checked against the new flows. (No public call
    reaches this for a manual entry today: the map is replaced here as that method does.)"""
    from ipsecfast.cryptomap import CryptoMapSpd, SpdList

    a, b, _ = manual_pair("esp-gcm")
    ra, rb = Router(a), Router(b)
    pkts = PacketBatch.from_list([udp("10.1.0.5", f"10.2.1.{i + 1}", i=i) for i in range(8)])
    assert rb.inbound(IF, ra.outbound(IF, pkts).packets).verdict.tolist() == [1] * 8
    narrow = parse_config("access-list 101 permit ip 10.2.0.0 0.0.0.255 10.1.0.0 0.0.0.255\n"
                          ).access_lists["101"]
    e = rb.entries[0]
    e.spd, e.acl = SpdList(narrow), narrow
    start, end = rb._map_slices[e.map_name]
    for dom in rb._domains:
        if dom.map_name == e.map_name:
            dom.spd = CryptoMapSpd([x.spd for x in rb.entries[start:end]])
    res = rb.inbound(IF, ra.outbound(IF, pkts).packets)  # 10.2.1.x: outside the new flow
    assert res.verdict.tolist() == [2] * 8
    assert res.reason.tolist() == [Status.INNER_FLOW_MISMATCH] * 8
