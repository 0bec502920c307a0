"""What the routers tell the network, and what the seed makes of it: load sharing by the
"last peer heard from" (traffic counts, not only negotiations), temporary crypto map
entries that request new SAs and disappear when their last SA expires, and the public
Router hooks the IKE model uses (``on_traffic_received``, ``on_sa_deleted``,
``select_outbound``, ``set_entry_flows``, ``check_lifetimes``).

Expected outcomes come from the seed's sentences, quoted where they decide.
"""

from __future__ import annotations

import ipaddress

import pytest

pytest.importorskip("scapy")
from test_ike_kit import (  # noqa: E402
    BYPASS,
    DROP,
    HOST_A,
    HOST_B,
    IF,
    M_ADDR,
    N_ADDR,
    PROTECT,
    SUBNET_X,
    SUBNET_Y,
    X_TO_Y,
    Y_TO_X,
    Clock,
    batch,
    config,
    pair,
    round_trip,
    udp,
)

from ipsecfast import PacketBatch, Status, parse_config  # noqa: E402
from ipsecfast.ike import Network  # noqa: E402
from ipsecfast.router import Router  # noqa: E402
from ipsecfast.sad import SaPair  # noqa: E402

OTHER = "192.0.2.3"  # a second gateway for subnet X


def _outer_dst(packet: bytes) -> str:
    return str(ipaddress.IPv4Address(packet[16:20]))


def _altered(pkts: PacketBatch) -> PacketBatch:
    out = []
    for p in pkts.to_list():
        b = bytearray(p)
        b[-1] ^= 1  # in the ICV
        out.append(bytes(b))
    return PacketBatch.from_list(out)


def _two_gateways(clock: Clock, peers: list[str], n_entry: str = ""
                  ) -> tuple[Router, Router, Router, Network]:
    """N protects subnet Y -> X with ``set peer`` for both M (M_ADDR) and a second
    gateway M2 (OTHER) in front of the same subnet X: the seed's load sharing."""
    n = Router(parse_config(config(N_ADDR, peers, Y_TO_X, key_for="192.0.2.0 255.255.255.0",
                                   entry=n_entry)), clock=clock)
    m1 = Router(parse_config(config(M_ADDR, N_ADDR, X_TO_Y)), clock=clock)
    m2 = Router(parse_config(config(OTHER, N_ADDR, X_TO_Y)), clock=clock)
    net = Network()
    for r in (n, m1, m2):
        net.add(r)
    return n, m1, m2, net


def _n_sends_to(n: Router) -> str:
    out = n.outbound(IF, batch(udp(HOST_B, HOST_A, 53, 7)))
    assert out.verdict.tolist() == [PROTECT]
    return _outer_dst(out.packets.to_list()[0])


# ---------------------------------------------------------------------------------------
# Load sharing: "The peer that packets are actually sent to is determined by the last
# peer that the router heard from (received either traffic or a negotiation request
# from) for a given data flow."


def test_traffic_received_moves_the_flow_to_its_peer() -> None:
    n, m1, m2, net = _two_gateways(Clock(), [OTHER, M_ADDR])
    assert round_trip(m1, n, [udp(HOST_A, HOST_B, 1)]) == ([PROTECT], True)
    assert round_trip(m2, n, [udp(HOST_A, HOST_B, 2)]) == ([PROTECT], True)
    # the negotiation request from M2 came last
    assert _n_sends_to(n) == OTHER
    # traffic from M over its SAs, which still live: N heard from M last
    assert round_trip(m1, n, [udp(HOST_A, HOST_B, 3)]) == ([PROTECT], True)
    out = n.outbound(IF, batch(udp(HOST_B, HOST_A, 53, 8)))
    assert _outer_dst(out.packets.to_list()[0]) == M_ADDR
    back = m1.inbound(IF, out.packets)
    assert back.verdict.tolist() == [PROTECT]
    assert back.packets.to_list() == [udp(HOST_B, HOST_A, 53, 8)]
    assert f"current_peer {M_ADDR}" in n.show("crypto ipsec sa")
    # and back to M2 when it is heard from again; no negotiation was needed
    assert round_trip(m2, n, [udp(HOST_A, HOST_B, 4)]) == ([PROTECT], True)
    assert _n_sends_to(n) == OTHER
    assert len(net.negotiations) == 2 and net.failures == []
    assert any(f"heard from {M_ADDR}" in line for line in net.log)


def test_altered_or_foreign_traffic_does_not_move_the_flow() -> None:
    """Only traffic that arrives intact counts as heard from the peer: a packet that
    fails its integrity check proves nothing about who sent it."""
    n, m1, m2, _ = _two_gateways(Clock(), [OTHER, M_ADDR])
    round_trip(m1, n, [udp(HOST_A, HOST_B, 1)])
    round_trip(m2, n, [udp(HOST_A, HOST_B, 2)])
    forged = m1.outbound(IF, batch(udp(HOST_A, HOST_B, 3)))
    res = n.inbound(IF, _altered(forged.packets))
    assert res.verdict.tolist() == [DROP]
    assert _n_sends_to(n) == OTHER
    # the same packet intact does
    assert n.inbound(IF, forged.packets).verdict.tolist() == [PROTECT]
    assert _n_sends_to(n) == M_ADDR


def test_acquire_tries_the_peer_last_heard_from_by_traffic_first() -> None:
    """N lists OTHER first; after M's traffic, N's next negotiation for the flow goes
    to M first ("If the attempt fails with the first peer, IKE tries the next")."""
    clock = Clock()
    n, m1, m2, net = _two_gateways(clock, [OTHER, M_ADDR])
    round_trip(m1, n, [udp(HOST_A, HOST_B, 1)])
    round_trip(m2, n, [udp(HOST_A, HOST_B, 2)])
    round_trip(m1, n, [udp(HOST_A, HOST_B, 3)])
    for r in (n, m1, m2):
        r.clear_crypto_sa()
    assert _n_sends_to(n) == M_ADDR
    last = net.negotiations[-1]
    assert (last.initiator, last.responder) == (N_ADDR, M_ADDR)
    assert net.failures == []


def test_a_pair_the_flow_left_is_not_rekeyed() -> None:
    """At its soft lifetime only the pair that carries the flow is renewed: renewing
    M's pair while N's traffic goes to M2 would send the flow back to M, a peer N did
    not hear from last."""
    clock = Clock()
    life = " set security-association lifetime seconds 200"
    n, m1, m2, net = _two_gateways(clock, [OTHER, M_ADDR], n_entry=life)
    round_trip(m1, n, [udp(HOST_A, HOST_B, 1)])
    clock.t += 10
    round_trip(m2, n, [udp(HOST_A, HOST_B, 2)])
    clock.t += 175  # M's pair (185 s old) is past 90 % of 200 s; M2's (175 s) is not
    n.check_lifetimes()
    assert len(net.negotiations) == 2
    clock.t += 10  # now M2's pair is
    n.check_lifetimes()
    renew = net.negotiations[-1]
    assert renew.rekey and (renew.initiator, renew.responder) == (N_ADDR, OTHER)
    assert _n_sends_to(n) == OTHER


def test_traffic_hook_is_called_once_per_sa_group_per_batch() -> None:
    n, m1, m2, _ = _two_gateways(Clock(), [OTHER, M_ADDR])
    round_trip(m1, n, [udp(HOST_A, HOST_B, 1)])
    round_trip(m2, n, [udp(HOST_A, HOST_B, 2)])
    calls: list[list[SaPair]] = []
    n.on_traffic_received(lambda router, pairs: calls.append(list(pairs)))
    a = m1.outbound(IF, batch(*[udp(HOST_A, HOST_B, 100 + i) for i in range(40)]))
    b = m2.outbound(IF, batch(*[udp(HOST_A, HOST_B, 200 + i) for i in range(30)]))
    mixed = PacketBatch.from_list([x for pair_ in zip(a.packets.to_list()[:30],
                                                      b.packets.to_list(), strict=True)
                                   for x in pair_] + a.packets.to_list()[30:])
    assert n.inbound(IF, mixed).verdict.tolist() == [PROTECT] * 70
    assert len(calls) == 1
    assert sorted(p.peer for p in calls[0]) == [M_ADDR, OTHER]
    # nothing intact, nothing heard
    c = m1.outbound(IF, batch(udp(HOST_A, HOST_B, 300)))
    n.inbound(IF, _altered(c.packets))
    n.inbound(IF, batch(udp("10.0.9.1", "10.0.9.2")))
    assert len(calls) == 1


def test_sa_deleted_hook_says_why() -> None:
    clock = Clock()
    life = " set security-association lifetime seconds 200"
    p = pair(config(M_ADDR, N_ADDR, X_TO_Y, entry=life), config(N_ADDR, M_ADDR, Y_TO_X),
             clock)
    seen: list[tuple[int, str, bool]] = []
    p.m.on_sa_deleted(lambda router, sa_pair, why: seen.append((sa_pair.id, why,
                                                                sa_pair.alive)))
    round_trip(p.m, p.n, [udp(HOST_A, HOST_B)])
    (first,) = list(p.m.sad)
    p.m.clear_crypto_sa()
    p.n.clear_crypto_sa()
    assert seen == [(first.id, "cleared", False)]
    round_trip(p.m, p.n, [udp(HOST_A, HOST_B)])
    (second,) = list(p.m.sad)
    p.net.set_down(N_ADDR)  # no rekey possible
    clock.t += 201
    p.m.check_lifetimes()
    assert seen[-1] == (second.id, "expired", False)
    p.net.set_down(N_ADDR, False)
    p.n.clear_crypto_sa()
    clock.t += 20
    round_trip(p.m, p.n, [udp(HOST_A, HOST_B)])
    (third,) = list(p.m.sad)
    p.m.close()
    assert seen[-1] == (third.id, "closed", False)


# ---------------------------------------------------------------------------------------
# Temporary entries: "the router performs normal processing, using this temporary crypto
# map entry as a normal entry, even requesting new security associations if the current
# ones are expiring (based upon the policy specified in the temporary crypto map entry).
# Once the flow expires (that is, all of the corresponding security associations
# expire), the temporary crypto map entry is then removed."


def test_temporary_entry_requests_new_sas_with_its_negotiated_policy() -> None:
    """N's template lists transform set O first and asks for no PFS; M proposes T then
    O with PFS group 14, so the temporary entry holds T and group 14. Its request for
    new SAs proposes those: with the template's policy M would choose O, and refuse
    the lack of PFS it demands."""
    clock = Clock()
    o_set = "crypto ipsec transform-set O esp-3des esp-md5-hmac"
    m_text = config(M_ADDR, N_ADDR, X_TO_Y, extra_sets=o_set, set_names="T O",
                    pfs="group14")
    n_text = config(N_ADDR, [], None, key_for="0.0.0.0 0.0.0.0", extra_sets=o_set,
                    dynamic=" set transform-set O T\n"
                            " set security-association lifetime seconds 200")
    p = pair(m_text, n_text, clock)
    assert round_trip(p.m, p.n, [udp(HOST_A, HOST_B)]) == ([PROTECT], True)
    (temp,) = p.net.temporary_entries(p.n)
    assert (temp.transform_set, temp.pfs, temp.lifetime_seconds) == ("T", 14, 200)
    clock.t += 185  # past 90 % of 200 s
    p.n.check_lifetimes()
    renew = p.net.negotiations[-1]
    assert renew.rekey and (renew.initiator, renew.responder) == (N_ADDR, M_ADDR)
    assert renew.initiator_entry == "crypto dynamic-map DYN 10 (temporary entry)"
    assert renew.responder_entry == "crypto map M 10"
    assert (renew.initiator_transform_set, renew.pfs, renew.lifetime_seconds) == (
        "T", 14, 200)
    assert renew.flow == f"ip {SUBNET_Y} {SUBNET_X}"
    assert p.net.failures == []
    (temp,) = p.net.temporary_entries(p.n)
    assert len(temp.pairs) == 2
    # traffic moves to the new SAs both ways; the old pair expires without loss
    assert round_trip(p.n, p.m, [udp(HOST_B, HOST_A)]) == ([PROTECT], True)
    assert round_trip(p.m, p.n, [udp(HOST_A, HOST_B)]) == ([PROTECT], True)
    clock.t += 16
    p.n.check_lifetimes()
    assert len(p.n.sad) == 1
    assert len(p.net.temporary_entries(p.n)) == 1


@pytest.mark.parametrize("with_acl", [True, False])
def test_temporary_entry_goes_at_its_last_expiry(with_acl: bool) -> None:
    """M is gone when the temporary entry asks for new SAs: the request fails, the SAs
    expire, and the entry goes at that moment: N's very next packet is the template's
    business, before anything asks the network, and ``show crypto map`` no longer
    lists the entry."""
    clock = Clock()
    dyn = " set transform-set T\n set security-association lifetime seconds 200\n" + (
        " match address 101" if with_acl else "")
    n_text = config(N_ADDR, [], Y_TO_X if with_acl else None, key_for="0.0.0.0 0.0.0.0",
                    dynamic=dyn)
    p = pair(config(M_ADDR, N_ADDR, X_TO_Y), n_text, clock)
    assert round_trip(p.m, p.n, [udp(HOST_A, HOST_B)]) == ([PROTECT], True)
    assert "(temporary entry)" in p.net.show(p.n, "show crypto map")
    p.net.set_down(M_ADDR)
    clock.t += 185
    p.n.check_lifetimes()
    fail = p.net.failures[-1]
    assert (fail.initiator, fail.responder, fail.phase) == (N_ADDR, M_ADDR, 0)
    assert "temporary entry" in fail.entry
    assert "(temporary entry)" in p.net.show(p.n, "show crypto map")
    clock.t += 15  # 200 s: the last SA's lifetime is over
    out = p.n.outbound(IF, batch(udp(HOST_B, HOST_A)))
    assert out.verdict.tolist() == ([DROP] if with_acl else [BYPASS])
    if with_acl:
        assert out.reason.tolist() == [Status.NO_SA]
    removed = [line for line in p.net.log if "temporary entry M 20" in line]
    assert removed and removed[-1].startswith(f"{clock.t:.3f} ") and "expired" in removed[-1]
    assert "temporary entry" not in p.net.show(p.n, "show crypto map")
    assert p.net.temporary_entries(p.n) == []


def test_show_crypto_map_loses_the_entry_right_after_expiry() -> None:
    clock = Clock()
    n_text = config(N_ADDR, [], None, key_for="0.0.0.0 0.0.0.0",
                    dynamic=" set transform-set T\n set security-association lifetime "
                            "seconds 120")
    p = pair(config(M_ADDR, N_ADDR, X_TO_Y), n_text, clock)
    round_trip(p.m, p.n, [udp(HOST_A, HOST_B)])
    p.net.set_down(M_ADDR)
    start = clock.t
    clock.t = start + 119.5
    assert 'Crypto Map "M" 20 ipsec-isakmp (temporary entry)' in p.net.show(
        p.n, "show crypto map")
    clock.t = start + 120
    assert "temporary entry" not in p.net.show(p.n, "show crypto map")


# ---------------------------------------------------------------------------------------
# Router.set_entry_flows


def test_set_entry_flows_gives_a_template_its_traffic_filter() -> None:
    """The template has no ``match address``: "ignored during traffic filtering" until
    flows are set; then it filters like a normal entry (a dynamic entry never initiates,
    so its outbound traffic without SAs is dropped; clear text it would protect is
    dropped inbound); ``None`` makes it ignored again."""
    text = config(N_ADDR, M_ADDR, Y_TO_X, dynamic=" set transform-set T") + (
        f"access-list 102 permit ip host {HOST_B} 10.0.3.0 0.0.0.255\n")
    cfg = parse_config(text)
    r = Router(cfg, clock=Clock())
    (dyn,) = [e for e in r.entries if e.dynamic]
    (static,) = [e for e in r.entries if not e.dynamic]
    out_pkt, in_pkt = udp(HOST_B, "10.0.3.1"), udp("10.0.3.1", HOST_B)
    assert r.outbound(IF, batch(out_pkt)).verdict.tolist() == [BYPASS]
    assert r.inbound(IF, batch(in_pkt)).verdict.tolist() == [BYPASS]
    acl = cfg.access_lists["102"]
    r.set_entry_flows(dyn.index, acl)
    assert r.entries[dyn.index].acl is acl
    out = r.outbound(IF, batch(out_pkt))
    assert out.reason.tolist() == [Status.NO_SA] and out.entry.tolist() == [dyn.index]
    assert r.acquires == [], "dynamic entries never initiate"
    assert r.inbound(IF, batch(in_pkt)).reason.tolist() == [Status.UNPROTECTED]
    r.set_entry_flows(dyn.index, None)
    assert r.entries[dyn.index].acl is None
    assert r.outbound(IF, batch(out_pkt)).verdict.tolist() == [BYPASS]
    with pytest.raises(ValueError, match="not a dynamic-map entry"):
        r.set_entry_flows(static.index, acl)
    with pytest.raises(ValueError):
        r.set_entry_flows(len(r.entries), acl)


@pytest.mark.parametrize("last", ["m1", "m2"])
def test_one_batch_from_both_peers_goes_to_the_peer_of_its_last_packet(last: str) -> None:
    """Packets of one flow from both gateways in one batch (a batch is in arrival order):
    one decision for the flow, to the peer whose packet came last, not a switch per
    pair."""
    n, m1, m2, net = _two_gateways(Clock(), [OTHER, M_ADDR])
    round_trip(m1, n, [udp(HOST_A, HOST_B, 1)])
    round_trip(m2, n, [udp(HOST_A, HOST_B, 2)])
    a = m1.outbound(IF, batch(udp(HOST_A, HOST_B, 3), udp(HOST_A, HOST_B, 5))).packets.to_list()
    b = m2.outbound(IF, batch(udp(HOST_A, HOST_B, 4))).packets.to_list()
    # m1's packets around m2's, or m2's after m1's
    wire = [a[0], b[0], a[1]] if last == "m1" else a + b
    before = sum("heard from" in line for line in net.log)
    res = n.inbound(IF, PacketBatch.from_list(wire))
    assert res.verdict.tolist() == [PROTECT, PROTECT, PROTECT]
    assert sum("heard from" in line for line in net.log) - before <= 1
    assert _n_sends_to(n) == (M_ADDR if last == "m1" else OTHER)


def test_network_log_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    import ipsecfast.ike as ike

    monkeypatch.setattr(ike, "LOG_LINES", 5)
    net = ike.Network()
    for k in range(23):
        net._say(f"line {k}")
    assert 5 <= len(net.log) <= 10
    assert net.log[-1] == "line 22"
    assert net.log == [f"line {k}" for k in range(23 - len(net.log), 23)]


def test_network_failures_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    import ipsecfast.ike as ike

    monkeypatch.setattr(ike, "LOG_LINES", 4)
    net = ike.Network()
    for k in range(30):
        net._fail(float(k), "192.0.2.1", "192.0.2.2", 1, f"reason {k}", "M 10")
    assert 4 <= len(net.failures) <= 8 and 4 <= len(net.log) <= 8
    assert net.failures[-1].reason == "reason 29"
    assert [f.reason for f in net.failures] == [
        f"reason {k}" for k in range(30 - len(net.failures), 30)]
