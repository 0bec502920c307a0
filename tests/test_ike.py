"""IKE between two routers (ipsecfast.ike): who can initiate (the seed's Figure 3), what
each mismatch refuses, dynamic maps and their temporary entries, load sharing, rekey,
per-host SAs, and the show commands.

Expected outcomes come from the seed's sentences (quoted where they decide) and from
DESIGN.md; the packets are checked byte for byte after the round trip.
"""

from __future__ import annotations

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
    SUBNET_Y,
    X_TO_Y,
    Y_TO_X,
    Clock,
    batch,
    config,
    icmp,
    pair,
    round_trip,
    tcp,
    udp,
)

from ipsecfast import Status, parse_config  # noqa: E402
from ipsecfast.ike import Network  # noqa: E402
from ipsecfast.router import Router  # noqa: E402

A_TO_B = f"permit ip host {HOST_A} host {HOST_B}"
B_TO_A = f"permit ip host {HOST_B} host {HOST_A}"


# ---------------------------------------------------------------------------------------
# Figure 3: mirror-image vs non-mirror-image access lists


@pytest.mark.parametrize(("case", "m_acl", "n_acl", "m_can", "n_can"), [
    (1, X_TO_Y, Y_TO_X, True, True),    # mirror images (subnets)
    (2, A_TO_B, B_TO_A, True, True),    # mirror images (hosts)
    # Cases 3 and 4: M permits host A -> host B, N the subnets. "Case 3 works because
    # Router M's request is a subset of the specific flows permitted by the crypto
    # access list at Router N"; in case 4 N's request "is a superset of the specific
    # flows permitted by the crypto access list at Router M. Therefore, the request is
    # not permitted."
    (3, A_TO_B, Y_TO_X, True, False),
    (4, A_TO_B, Y_TO_X, True, False),
])
def test_figure3_who_can_initiate(case: int, m_acl: str, n_acl: str, m_can: bool,
                                  n_can: bool) -> None:
    # M initiates
    p = pair(config(M_ADDR, N_ADDR, m_acl), config(N_ADDR, M_ADDR, n_acl))
    verdicts, ok = round_trip(p.m, p.n, [udp(HOST_A, HOST_B)])
    assert verdicts == [PROTECT if m_can else DROP] and ok
    if m_can:
        verdicts, ok = round_trip(p.n, p.m, [udp(HOST_B, HOST_A)])
        assert verdicts == [PROTECT] and ok, "the reply uses the SAs M negotiated"
    # N initiates (fresh routers)
    p = pair(config(M_ADDR, N_ADDR, m_acl), config(N_ADDR, M_ADDR, n_acl))
    verdicts, ok = round_trip(p.n, p.m, [udp(HOST_B, HOST_A)])
    assert verdicts == [PROTECT if n_can else DROP] and ok
    if not n_can:
        (f,) = p.net.failures
        assert (f.initiator, f.responder, f.phase) == (N_ADDR, M_ADDR, 2)
        assert "Figure 3, case 4" in f.reason and "does not permit" in f.reason
        assert p.n.drops[IF]["send"] == {"no-sa": 1}
    else:
        assert p.net.failures == []


def test_case3_responder_sa_covers_its_wider_entry() -> None:
    """After case 3, N's SA is keyed by its own (wider) ACE; its traffic outside M's
    flow reaches M in the SA and M drops it by the inner-flow check (documented)."""
    p = pair(config(M_ADDR, N_ADDR, A_TO_B), config(N_ADDR, M_ADDR, Y_TO_X))
    round_trip(p.m, p.n, [udp(HOST_A, HOST_B)])
    out = p.n.outbound(IF, batch(udp("10.0.2.9", "10.0.1.9")))
    assert out.verdict.tolist() == [PROTECT]
    back = p.m.inbound(IF, out.packets)
    assert back.reason.tolist() == [Status.INNER_FLOW_MISMATCH]


# ---------------------------------------------------------------------------------------
# Mismatches


def test_transform_set_mismatch_fails_phase2() -> None:
    p = pair(config(M_ADDR, N_ADDR, X_TO_Y),
             config(N_ADDR, M_ADDR, Y_TO_X, transforms="esp-aes esp-md5-hmac"))
    verdicts, _ = round_trip(p.m, p.n, [udp(HOST_A, HOST_B)])
    assert verdicts == [DROP]
    (f,) = p.net.failures
    assert f.phase == 2 and "no transform set in common" in f.reason
    assert len(p.m.sad) == 0 and len(p.n.sad) == 0
    # phase 1 came up all the same (QM_IDLE), as IOS would show
    assert "QM_IDLE" in p.net.show(p.m, "show crypto isakmp sa")


def test_transform_sets_first_common_in_initiator_priority_order() -> None:
    sets = "crypto ipsec transform-set G esp-gcm 256\ncrypto ipsec transform-set S esp-3des esp-sha-hmac"
    p = pair(config(M_ADDR, N_ADDR, X_TO_Y, extra_sets=sets, set_names="G T S"),
             config(N_ADDR, M_ADDR, Y_TO_X, extra_sets=sets, set_names="S T"))
    round_trip(p.m, p.n, [udp(HOST_A, HOST_B)])
    (neg,) = p.net.negotiations
    assert neg.initiator_transform_set == "T" and neg.transforms == "esp-aes 256 esp-sha-hmac"


def test_mode_is_part_of_the_transform_set() -> None:
    p = pair(config(M_ADDR, N_ADDR, X_TO_Y, mode="transport"),
             config(N_ADDR, M_ADDR, Y_TO_X))
    assert round_trip(p.m, p.n, [udp(HOST_A, HOST_B)])[0] == [DROP]
    assert "no transform set in common" in p.net.failures[0].reason


@pytest.mark.parametrize(("m_pfs", "n_pfs", "works", "group"), [
    ("group2", "group5", False, None),   # each demands its own group
    (None, "group2", False, None),       # N demands PFS, M offers none
    ("group14", None, True, 14),         # N accepts the PFS M asks for
    ("group19", "group19", True, 19),
    ("group5", "group5", True, 5),
    ("group21", "group21", True, 21),
    ("group24", "group24", False, None),  # RFC 5114's group: not supported
])
def test_pfs(m_pfs: str | None, n_pfs: str | None, works: bool, group: int | None) -> None:
    p = pair(config(M_ADDR, N_ADDR, X_TO_Y, pfs=m_pfs),
             config(N_ADDR, M_ADDR, Y_TO_X, pfs=n_pfs))
    verdicts, ok = round_trip(p.m, p.n, [udp(HOST_A, HOST_B)])
    assert verdicts == [PROTECT if works else DROP] and ok
    if works:
        (neg,) = p.net.negotiations
        assert neg.pfs == group
        gi, gr = neg.pfs_secrets
        assert gi == gr and len(gi) > 0
    else:
        (f,) = p.net.failures
        assert f.phase == 2
        assert ("not supported" if m_pfs == "group24" else "demands PFS") in f.reason


def test_pre_shared_key_mismatch_fails_phase1() -> None:
    p = pair(config(M_ADDR, N_ADDR, X_TO_Y, key="one"),
             config(N_ADDR, M_ADDR, Y_TO_X, key="two"))
    verdicts, _ = round_trip(p.m, p.n, [udp(HOST_A, HOST_B)])
    assert verdicts == [DROP]
    (f,) = p.net.failures
    assert f.phase == 1 and "pre-shared keys differ" in f.reason
    assert "one" not in f.reason and "two" not in f.reason, "keys never shown"
    show = p.net.show(p.m, "show crypto isakmp sa")
    assert f"{N_ADDR:<15} {M_ADDR:<15} MM_KEY_EXCH" in show and "DELETED" in show
    session = p.net.show(p.m, "show crypto session")
    assert f"Session status: DOWN\nPeer: {N_ADDR} port 500" in session
    assert any("pre-shared keys differ" in line for line in p.net.log)


def test_missing_pre_shared_key() -> None:
    p = pair(config(M_ADDR, N_ADDR, X_TO_Y),
             config(N_ADDR, M_ADDR, Y_TO_X, key_for="192.0.2.99"))
    assert round_trip(p.m, p.n, [udp(HOST_A, HOST_B)])[0] == [DROP]
    assert f"{N_ADDR} has no crypto isakmp key for {M_ADDR}" in p.net.failures[0].reason


def test_wildcard_key_with_mask() -> None:
    p = pair(config(M_ADDR, N_ADDR, X_TO_Y),
             config(N_ADDR, M_ADDR, Y_TO_X, key_for="192.0.2.0 255.255.255.0"))
    assert round_trip(p.m, p.n, [udp(HOST_A, HOST_B)]) == ([PROTECT], True)


def test_isakmp_policy_mismatch_fails_phase1() -> None:
    other = """crypto isakmp policy 5
 encryption 3des
 hash md5
 authentication pre-share
 group 2
"""
    p = pair(config(M_ADDR, N_ADDR, X_TO_Y), config(N_ADDR, M_ADDR, Y_TO_X, policy=other))
    assert round_trip(p.m, p.n, [udp(HOST_A, HOST_B)])[0] == [DROP]
    (f,) = p.net.failures
    assert f.phase == 1 and "no ISAKMP policy matches" in f.reason
    show = p.net.show(p.n, "crypto isakmp sa")
    assert "MM_NO_STATE" in show and "DELETED" in show
    for _ in range(5):  # retries (ACQUIRE every 10 s) do not pile up in the show output
        p.clock.t += 11
        p.m.outbound(IF, batch(udp(HOST_A, HOST_B)))
    assert len(p.net.failures) == 6
    assert [s.conn_id for s in p.net.isakmp_sas(p.m)] == [1005, 1006]


def test_policy_first_match_in_initiator_order_and_lower_lifetime() -> None:
    m_pol = """crypto isakmp policy 5
 encryption 3des
 authentication pre-share
 group 5
 lifetime 600
crypto isakmp policy 10
 encryption aes
 hash sha256
 authentication pre-share
 group 19
 lifetime 3000
"""
    n_pol = """crypto isakmp policy 1
 encryption aes
 hash sha256
 authentication pre-share
 group 19
 lifetime 2000
crypto isakmp policy 7
 encryption 3des
 authentication pre-share
 group 5
 lifetime 900
"""
    p = pair(config(M_ADDR, N_ADDR, X_TO_Y, policy=m_pol),
             config(N_ADDR, M_ADDR, Y_TO_X, policy=n_pol))
    round_trip(p.m, p.n, [udp(HOST_A, HOST_B)])
    (sa,) = p.net.isakmp_sas(p.m)
    assert sa.policy is not None and sa.policy.priority == 5   # M's first that N has
    assert sa.responder_policy is not None and sa.responder_policy.priority == 7
    assert sa.lifetime == 600
    # phase 1 expires after its lifetime; the next quick mode makes a new one
    p.clock.t += 601
    p.m.clear_crypto_sa()
    p.n.clear_crypto_sa()
    round_trip(p.m, p.n, [udp(HOST_A, HOST_B)])
    states = [(s.conn_id, s.status) for s in p.net.isakmp_sas(p.m)]
    assert states == [(1001, "DELETED"), (1002, "ACTIVE")]


def test_rsa_signatures_are_not_modelled() -> None:
    pol = "crypto isakmp policy 10\n encryption aes\n"  # authentication rsa-sig (default)
    p = pair(config(M_ADDR, N_ADDR, X_TO_Y, policy=pol), config(N_ADDR, M_ADDR, Y_TO_X, policy=pol))
    assert round_trip(p.m, p.n, [udp(HOST_A, HOST_B)])[0] == [DROP]
    assert "only pre-shared keys are modelled" in p.net.failures[0].reason


def test_responder_must_name_the_initiator_as_peer() -> None:
    """"The crypto map entries must each identify the other peer (unless the responding
    peer is using dynamic crypto maps).\""""
    p = pair(config(M_ADDR, N_ADDR, X_TO_Y),
             config(N_ADDR, "192.0.2.77", Y_TO_X, key_for=M_ADDR))
    assert round_trip(p.m, p.n, [udp(HOST_A, HOST_B)])[0] == [DROP]
    assert "names 192.0.2.1 as a peer" in p.net.failures[0].reason


# ---------------------------------------------------------------------------------------
# Dynamic maps and temporary entries


@pytest.mark.parametrize("with_acl", [True, False])
def test_dynamic_map_responder(with_acl: bool) -> None:
    dyn = " set transform-set T\n" + (" match address 101" if with_acl else "")
    n_text = config(N_ADDR, [], Y_TO_X if with_acl else None, key_for="0.0.0.0 0.0.0.0",
                    dynamic=dyn)
    p = pair(config(M_ADDR, N_ADDR, X_TO_Y), n_text)
    # "Dynamic crypto maps are not used by the router to initiate new IPsec SAs"
    assert p.n.outbound(IF, batch(udp(HOST_B, HOST_A))).verdict.tolist() == (
        [DROP] if with_acl else [BYPASS])
    assert p.n.acquires == []
    pkts = [udp(HOST_A, HOST_B), tcp("10.0.1.7", "10.0.2.9"), icmp("10.0.1.3", "10.0.2.4")]
    assert round_trip(p.m, p.n, pkts) == ([PROTECT] * 3, True)
    replies = [udp(HOST_B, HOST_A, 53, 1000), icmp("10.0.2.4", "10.0.1.3")]
    assert round_trip(p.n, p.m, replies) == ([PROTECT] * 2, True)
    (neg,) = p.net.negotiations
    assert neg.responder_entry == "crypto dynamic-map DYN 10 (temporary entry)"
    (temp,) = p.net.temporary_entries(p.n)
    assert temp.peer == M_ADDR and temp.transform_set == "T"
    show = p.net.show(p.n, "show crypto map")
    assert 'Crypto Map "M" 20 ipsec-isakmp (temporary entry)' in show
    assert "Dynamic map template tag: DYN" in show
    # with an ACL: its permit; without: the mirror image of M's proposal
    assert f"access-list dynamic {Y_TO_X}" in show
    # traffic outside the negotiated flow is not protected by the temporary entry
    other = p.n.outbound(IF, batch(udp("10.0.3.1", "10.0.1.1")))
    assert other.verdict.tolist() == [BYPASS]


def test_dynamic_map_acl_refuses_a_flow_it_does_not_permit() -> None:
    """"If access lists are configured, the data flow identity proposed by the IPsec
    peer must fall within a permit statement for this crypto access list.\""""
    n_text = config(N_ADDR, [], f"permit ip {SUBNET_Y} host {HOST_A}",
                    key_for="0.0.0.0 0.0.0.0", dynamic=" set transform-set T\n match address 101")
    p = pair(config(M_ADDR, N_ADDR, X_TO_Y), n_text)
    assert round_trip(p.m, p.n, [udp(HOST_A, HOST_B)])[0] == [DROP]
    assert "crypto dynamic-map DYN 10" in p.net.failures[0].reason
    assert p.net.temporary_entries(p.n) == []


def test_dynamic_map_without_transform_set_in_common() -> None:
    n_text = config(N_ADDR, [], None, key_for="0.0.0.0 0.0.0.0",
                    extra_sets="crypto ipsec transform-set O esp-3des esp-md5-hmac",
                    dynamic=" set transform-set O")
    p = pair(config(M_ADDR, N_ADDR, X_TO_Y), n_text)
    assert round_trip(p.m, p.n, [udp(HOST_A, HOST_B)])[0] == [DROP]
    assert "no transform set in common" in p.net.failures[0].reason


@pytest.mark.parametrize("with_acl", [True, False])
def test_temporary_entry_disappears_with_its_last_sa(with_acl: bool) -> None:
    """The seed: the router uses the temporary entry "as a normal entry, even requesting
    new security associations if the current ones are expiring (based upon the policy
    specified in the temporary crypto map entry). Once the flow expires (that is, all
    of the corresponding security associations expire), the temporary crypto map entry
    is then removed." The first SAs carried traffic: N asks M for new ones; those carry
    none, so the flow expires and the entry goes at N's next lifetime check."""
    clock = Clock()
    dyn = " set transform-set T\n set security-association lifetime seconds 200\n" + (
        " match address 101" if with_acl else "")
    n_text = config(N_ADDR, [], Y_TO_X if with_acl else None, key_for="0.0.0.0 0.0.0.0",
                    dynamic=dyn)
    p = pair(config(M_ADDR, N_ADDR, X_TO_Y), n_text, clock)
    assert round_trip(p.m, p.n, [udp(HOST_A, HOST_B)]) == ([PROTECT], True)
    (neg,) = p.net.negotiations
    assert neg.lifetime_seconds == 200, "the lower of both sides' lifetimes"
    assert len(p.net.temporary_entries(p.n)) == 1
    clock.t += 150
    assert len(p.net.temporary_entries(p.n)) == 1
    clock.t += 60  # past 200 s: N's lifetime check finds soft and hard limits reached
    p.n.check_lifetimes()
    renew = p.net.negotiations[-1]
    assert renew.rekey and (renew.initiator, renew.responder) == (N_ADDR, M_ADDR)
    assert renew.initiator_entry == "crypto dynamic-map DYN 10 (temporary entry)"
    assert len(p.n.sad) == 1, "the old pair expired, the new one lives"
    assert len(p.net.temporary_entries(p.n)) == 1
    clock.t += 201  # the new pair carried nothing: no new SAs; it expires
    p.n.check_lifetimes()
    assert len(p.net.negotiations) == 2
    assert len(p.n.sad) == 0
    assert p.net.temporary_entries(p.n) == []
    assert "temporary entry" not in p.net.show(p.n, "show crypto map")
    assert any("temporary entry M 20" in line and "removed" in line for line in p.net.log)
    # without its temporary entry, N's traffic is the template's business again
    again = p.n.outbound(IF, batch(udp("10.0.2.50", "10.0.1.50")))
    assert again.verdict.tolist() == ([DROP] if with_acl else [BYPASS])


# ---------------------------------------------------------------------------------------
# Load sharing


def test_load_sharing_first_peer_down_next_is_tried() -> None:
    """"If the attempt fails with the first peer, IKE tries the next peer on the crypto
    map list.\""""
    dead = "192.0.2.9"
    m_text = config(M_ADDR, [dead, N_ADDR], X_TO_Y, key_for="192.0.2.0 255.255.255.0")
    p = pair(m_text, config(N_ADDR, M_ADDR, Y_TO_X))
    assert round_trip(p.m, p.n, [udp(HOST_A, HOST_B)]) == ([PROTECT], True)
    (f,) = p.net.failures
    assert (f.responder, f.phase) == (dead, 0) and "no answer" in f.reason
    (pair_m,) = list(p.m.sad)
    assert pair_m.peer == N_ADDR
    assert f"current_peer {N_ADDR}" in p.m.show("crypto ipsec sa")
    # the flow's SAs go; the next ACQUIRE goes to the peer last heard from, first
    p.m.clear_crypto_sa()
    p.n.clear_crypto_sa()
    assert round_trip(p.m, p.n, [udp(HOST_A, HOST_B)]) == ([PROTECT], True)
    assert len(p.net.failures) == 1


def test_load_sharing_refusing_peer_then_down_peer() -> None:
    """A peer that answers but refuses (no transform set in common) counts as failed
    too; an address that is set down does not answer."""
    p2 = "192.0.2.3"
    m_text = config(M_ADDR, [N_ADDR, p2], X_TO_Y, key_for="192.0.2.0 255.255.255.0")
    clock = Clock()
    m = Router(parse_config(m_text), clock=clock)
    n = Router(parse_config(config(N_ADDR, M_ADDR, Y_TO_X, transforms="esp-3des esp-md5-hmac")),
               clock=clock)
    third = Router(parse_config(config(p2, M_ADDR, Y_TO_X)), clock=clock)
    net = Network()
    for r in (m, n, third):
        net.add(r)
    assert round_trip(m, third, [udp(HOST_A, HOST_B)]) == ([PROTECT], True)
    assert [(f.responder, f.phase) for f in net.failures] == [(N_ADDR, 2)]
    net.set_down(p2)
    m.clear_crypto_sa()
    clock.t += 20
    assert round_trip(m, third, [udp(HOST_A, HOST_B)])[0] == [DROP]
    assert [(f.responder, f.phase) for f in net.failures][-2:] == [(p2, 0), (N_ADDR, 2)]


def test_responder_traffic_goes_to_the_last_peer_heard_from() -> None:
    """Two routers share N's entry as its peers; N's SAs for the flow go to the one that
    negotiated last (the seed: "determined by the last peer that the router heard from
    ... for a given data flow")."""
    other = "192.0.2.3"
    n_text = config(N_ADDR, [M_ADDR, other], Y_TO_X, key_for="192.0.2.0 255.255.255.0")
    clock = Clock()
    n = Router(parse_config(n_text), clock=clock)
    m1 = Router(parse_config(config(M_ADDR, N_ADDR, X_TO_Y)), clock=clock)
    m2 = Router(parse_config(config(other, N_ADDR, X_TO_Y)), clock=clock)
    net = Network()
    for r in (n, m1, m2):
        net.add(r)
    assert round_trip(m1, n, [udp(HOST_A, HOST_B)]) == ([PROTECT], True)
    assert round_trip(n, m1, [udp(HOST_B, HOST_A)]) == ([PROTECT], True)
    assert round_trip(m2, n, [udp(HOST_A, HOST_B)]) == ([PROTECT], True)
    assert round_trip(n, m2, [udp(HOST_B, HOST_A)]) == ([PROTECT], True)
    assert f"current_peer {other}" in n.show("crypto ipsec sa")


# ---------------------------------------------------------------------------------------
# Rekey


@pytest.mark.parametrize("n_first", [False, True])
def test_rekey_under_traffic_loses_nothing(n_first: bool) -> None:
    """At the soft lifetime (90 %) a static entry negotiates new SAs; traffic moves to
    them; packets already protected with the old SA (in flight) are still accepted
    until it expires. 25 simulated minutes of traffic both ways, 5 s apart. With
    ``n_first`` the responder of the first negotiation sees the soft lifetime first and
    rekeys as the initiator."""
    clock = Clock()
    life = " set security-association lifetime seconds 300"
    p = pair(config(M_ADDR, N_ADDR, X_TO_Y, entry=life, pfs="group19"),
             config(N_ADDR, M_ADDR, Y_TO_X, entry=life, pfs="group19"), clock)
    in_flight = None
    sent = received = 0
    for step in range(300):
        if n_first and step:
            p.n.outbound(IF, batch())  # N's clock tick comes first: its soft limit fires
        pk = [udp(HOST_A, HOST_B, 1000 + step), tcp("10.0.1.9", "10.0.2.9", 2000 + step)]
        out = p.m.outbound(IF, batch(*pk))
        assert out.verdict.tolist() == [PROTECT, PROTECT], step
        sent += 2
        if in_flight is not None:  # last step's packets arrive after this step's send
            back = p.n.inbound(IF, in_flight[0])
            assert back.packets.to_list() == in_flight[1], step
            received += 2
        in_flight = (out.packets, pk)
        reply = [udp(HOST_B, HOST_A, 53, 1000 + step)]
        verdicts, ok = round_trip(p.n, p.m, reply)
        assert verdicts == [PROTECT] and ok, step
        clock.t += 5
    back = p.n.inbound(IF, in_flight[0])
    received += 2
    assert back.packets.to_list() == in_flight[1]
    assert sent == received == 600
    rekeys = [n for n in p.net.negotiations if n.rekey]
    assert len(rekeys) >= 4 and len(p.net.negotiations) == len(rekeys) + 1
    assert p.net.failures == []
    for r in (p.m, p.n):
        assert sum(r.drops.get(IF, {}).get(d, {}).get("no-sa", 0) for d in ("send", "recv")) == 0
        assert not r.drops.get(IF, {}).get("recv")
    # one rekey per soft lifetime, not one per side
    times = sorted(n.time for n in p.net.negotiations)
    assert all(b - a >= 240 for a, b in zip(times, times[1:], strict=False))
    assert {n.initiator for n in rekeys} == {N_ADDR if n_first else M_ADDR}


def test_old_inbound_sa_stays_until_it_expires() -> None:
    clock = Clock()
    life = " set security-association lifetime seconds 200"
    p = pair(config(M_ADDR, N_ADDR, X_TO_Y, entry=life), config(N_ADDR, M_ADDR, Y_TO_X, entry=life),
             clock)
    old = p.m.outbound(IF, batch(udp(HOST_A, HOST_B, 1)))
    clock.t += 185  # past 90 %: the next packet starts a rekey
    new = p.m.outbound(IF, batch(udp(HOST_A, HOST_B, 2)))
    assert len(p.net.negotiations) == 2 and p.net.negotiations[1].rekey
    assert len(p.n.sad) == 2
    spi_old = int.from_bytes(old.packets.to_list()[0][20:24], "big")
    spi_new = int.from_bytes(new.packets.to_list()[0][20:24], "big")
    assert spi_old != spi_new
    assert p.n.inbound(IF, new.packets).verdict.tolist() == [PROTECT]
    assert p.n.inbound(IF, old.packets).verdict.tolist() == [PROTECT]
    clock.t += 20  # the old pair's hard lifetime is over
    late = p.n.inbound(IF, old.packets)
    assert late.reason.tolist() == [Status.UNKNOWN_SPI]
    assert len(p.n.sad) == 1


# ---------------------------------------------------------------------------------------
# Per-host SAs


def test_per_host_sas() -> None:
    ph = " set security-association level per-host"
    p = pair(config(M_ADDR, N_ADDR, X_TO_Y, entry=ph), config(N_ADDR, M_ADDR, Y_TO_X, entry=ph))
    pk = [udp("10.0.1.1", "10.0.2.1"), udp("10.0.1.2", "10.0.2.1"), udp("10.0.1.1", "10.0.2.1", 7)]
    assert round_trip(p.m, p.n, pk) == ([PROTECT] * 3, True)
    flows = sorted(n.flow for n in p.net.negotiations)
    assert flows == ["ip host 10.0.1.1 host 10.0.2.1", "ip host 10.0.1.2 host 10.0.2.1"]
    assert len(p.m.sad) == len(p.n.sad) == 2
    replies = [udp("10.0.2.1", "10.0.1.2"), udp("10.0.2.1", "10.0.1.1")]
    assert round_trip(p.n, p.m, replies) == ([PROTECT] * 2, True)
    assert len(p.net.negotiations) == 2, "the replies use the pairs M negotiated"
    sa = p.m.show("crypto ipsec sa")
    assert "(10.0.1.2/255.255.255.255/0/0)" in sa


def test_per_host_responder_refuses_a_subnet_proposal() -> None:
    p = pair(config(M_ADDR, N_ADDR, X_TO_Y),
             config(N_ADDR, M_ADDR, Y_TO_X, entry=" set security-association level per-host"))
    assert round_trip(p.m, p.n, [udp(HOST_A, HOST_B)])[0] == [DROP]
    assert "per-host" in p.net.failures[0].reason


# ---------------------------------------------------------------------------------------
# SAs and show


def test_both_sides_install_mirrored_sas_with_anti_replay_and_lifetimes() -> None:
    p = pair(config(M_ADDR, N_ADDR, X_TO_Y,
                    entry=" set security-association lifetime kilobytes 10000"),
             config(N_ADDR, M_ADDR, Y_TO_X, globals_="crypto ipsec security-association "
                    "replay window-size 256"))
    out = p.m.outbound(IF, batch(udp(HOST_A, HOST_B)))
    (pm,) = list(p.m.sad)
    (pn,) = list(p.n.sad)
    assert pm.outbound[0].spi == pn.inbound[0].spi >= 256
    assert pm.inbound[0].spi == pn.outbound[0].spi >= 256
    assert bytes(pm.outbound[0].cipher_key) == bytes(pn.inbound[0].cipher_key)
    assert bytes(pm.inbound[0].auth_key) == bytes(pn.outbound[0].auth_key)
    assert bytes(pm.outbound[0].cipher_key) != bytes(pm.inbound[0].cipher_key)
    assert (pm.lifetime_seconds, pm.lifetime_kilobytes) == (3600, 10000)
    assert (pn.lifetime_seconds, pn.lifetime_kilobytes) == (3600, 10000)
    assert pm.inbound[0].replay_window == 64 and pn.inbound[0].replay_window == 256
    assert p.n.inbound(IF, out.packets).verdict.tolist() == [PROTECT]
    assert p.n.inbound(IF, out.packets).reason.tolist() == [Status.REPLAY]
    assert repr(p.net.negotiations[0]).count("cipher") == 0


def test_ah_and_esp_get_separate_spis_and_keymat() -> None:
    t = "ah-sha-hmac esp-aes esp-sha-hmac"
    p = pair(config(M_ADDR, N_ADDR, X_TO_Y, transforms=t), config(N_ADDR, M_ADDR, Y_TO_X, transforms=t))
    assert round_trip(p.m, p.n, [udp(HOST_A, HOST_B), tcp(HOST_A, HOST_B)]) == ([PROTECT] * 2, True)
    (neg,) = p.net.negotiations
    assert set(neg.spis) == {"esp", "ah"}
    assert len({*neg.spis["esp"], *neg.spis["ah"]}) == 4


def test_transport_mode_between_the_peers() -> None:
    acl_m = f"permit ip host {M_ADDR} host {N_ADDR}"
    acl_n = f"permit ip host {N_ADDR} host {M_ADDR}"
    p = pair(config(M_ADDR, N_ADDR, acl_m, mode="transport"),
             config(N_ADDR, M_ADDR, acl_n, mode="transport"))
    pk = [tcp(M_ADDR, N_ADDR, 179, 179)]
    out = p.m.outbound(IF, batch(*pk))
    assert len(out.packets.to_list()[0]) < len(pk[0]) + 20 + 8 + 16 + 16, "no outer header"
    assert p.n.inbound(IF, out.packets).packets.to_list() == pk


def test_spis_unique_per_router() -> None:
    ph = " set security-association level per-host"
    p = pair(config(M_ADDR, N_ADDR, X_TO_Y, entry=ph), config(N_ADDR, M_ADDR, Y_TO_X, entry=ph))
    pk = [udp(f"10.0.1.{i}", f"10.0.2.{j}") for i in range(1, 9) for j in range(1, 5)]
    assert round_trip(p.m, p.n, pk)[0] == [PROTECT] * 32
    for r in (p.m, p.n):
        spis = [s.spi for s in r.sad.sas() if s.direction == "inbound"]
        assert len(spis) == 32 and len(set(spis)) == 32 and min(spis) >= 256


def test_show_crypto_session_and_isakmp_sa() -> None:
    p = pair(config(M_ADDR, N_ADDR, X_TO_Y, hostname="M"), config(N_ADDR, M_ADDR, Y_TO_X))
    round_trip(p.m, p.n, [udp(HOST_A, HOST_B)])
    isakmp = p.net.show(p.n, "show crypto isakmp sa")
    assert isakmp.splitlines()[:3] == [
        "IPv4 Crypto ISAKMP SA",
        "dst             src             state          conn-id status",
        f"{N_ADDR:<15} {M_ADDR:<15} QM_IDLE           1001 ACTIVE",
    ]
    session = p.net.show(p.m, "show crypto session")
    assert session.splitlines() == [
        "Crypto session current status",
        "",
        f"Interface: {IF}",
        "Session status: UP-ACTIVE",
        f"Peer: {N_ADDR} port 500",
        f"  IKEv1 SA: local {M_ADDR}/500 remote {N_ADDR}/500 Active",
        "  IPSEC FLOW: permit ip 10.0.1.0/255.255.255.0 10.0.2.0/255.255.255.0",
        "        Active SAs: 2, origin: crypto map",
    ]
    assert "current_peer" in p.net.show(p.m, "show crypto ipsec sa")
    assert p.net.name(p.m) == "M"


def test_negotiate_explicitly_and_errors() -> None:
    p = pair(config(M_ADDR, N_ADDR, X_TO_Y), config(N_ADDR, [], None, dynamic=" set transform-set T"))
    neg = p.net.negotiate(p.m, 0)
    assert neg is not None and neg.flow == X_TO_Y.removeprefix("permit ")
    with pytest.raises(ValueError, match="cannot initiate"):
        p.net.negotiate(p.n, 0)
    with pytest.raises(ValueError, match="already used"):
        p.net.add(Router(p.m.config))
    with pytest.raises(TypeError):
        p.net.add("router")  # type: ignore[arg-type]


def test_peer_without_crypto_map_and_unknown_host_name() -> None:
    n_text = config(N_ADDR, M_ADDR, Y_TO_X).replace(" crypto map M\n", "")
    p = pair(config(M_ADDR, [N_ADDR, "vpn.example"], X_TO_Y), n_text)
    assert round_trip(p.m, p.n, [udp(HOST_A, HOST_B)])[0] == [DROP]
    reasons = [f.reason for f in p.net.failures]
    assert "has no crypto map applied" in reasons[0] and "host name" in reasons[1]


def test_clear_crypto_isakmp_and_close() -> None:
    p = pair(config(M_ADDR, N_ADDR, X_TO_Y), config(N_ADDR, M_ADDR, Y_TO_X))
    round_trip(p.m, p.n, [udp(HOST_A, HOST_B)])
    (sa,) = p.net.isakmp_sas(p.m)
    assert p.net.clear_crypto_isakmp(p.n) == 1
    assert sa.status == "DELETED" and sa.skeyid_d == b"" and sa.dh_secrets == (b"", b"")
    # the IPsec SAs stay; a new quick mode (another flow) brings a new phase 1 up
    assert round_trip(p.n, p.m, [udp(HOST_B, HOST_A)]) == ([PROTECT], True)
    p.m.clear_crypto_sa()
    p.n.clear_crypto_sa()
    assert round_trip(p.m, p.n, [udp(HOST_A, HOST_B)]) == ([PROTECT], True)
    assert [s.status for s in p.net.isakmp_sas(p.m)] == ["DELETED", "ACTIVE"]
    p.net.close()
    assert p.net.isakmp_sas(p.m) == []
    assert all(n.nonces == n.pfs_secrets == (b"", b"") for n in p.net.negotiations)


def test_quick_mode_secrets_go_with_their_sas() -> None:
    p = pair(config(M_ADDR, N_ADDR, X_TO_Y, pfs="group5"), config(N_ADDR, M_ADDR, Y_TO_X))
    round_trip(p.m, p.n, [udp(HOST_A, HOST_B)])
    (neg,) = p.net.negotiations
    assert neg.pfs_secrets[0] and neg.nonces[0]
    p.m.clear_crypto_sa()
    assert neg.pfs_secrets[0], "N still holds its pair"
    p.n.clear_crypto_sa()
    p.net.temporary_entries(p.n)  # any query prunes
    assert neg.pfs_secrets == neg.nonces == (b"", b"")


def _hub_and_spokes(clock: Clock, life: str = "") -> tuple[Router, Router, Router, Network]:
    """A hub with only a dynamic map without an access list, and two spokes."""
    hub = Router(parse_config(config("192.0.2.1", [], None, key_for="0.0.0.0 0.0.0.0",
                                     dynamic=" set transform-set T")), clock=clock)
    spokes = [Router(parse_config(config(
        f"192.0.2.{10 + i}", "192.0.2.1",
        f"permit ip 10.{10 + i}.0.0 0.0.255.255 10.0.0.0 0.0.255.255", entry=life)),
        clock=clock) for i in (1, 2)]
    net = Network()
    for r in (hub, *spokes):
        net.add(r)
    return hub, spokes[0], spokes[1], net


def test_dynamic_hub_without_acl_serves_two_spokes() -> None:
    hub, s1, s2, net = _hub_and_spokes(Clock())
    assert round_trip(s1, hub, [udp("10.11.0.1", "10.0.0.1")]) == ([PROTECT], True)
    assert round_trip(s2, hub, [udp("10.12.0.1", "10.0.0.1")]) == ([PROTECT], True)
    assert round_trip(hub, s1, [udp("10.0.0.1", "10.11.0.1")]) == ([PROTECT], True)
    assert round_trip(hub, s2, [udp("10.0.0.1", "10.12.0.1")]) == ([PROTECT], True)
    assert sorted(t.peer for t in net.temporary_entries(hub)) == ["192.0.2.11", "192.0.2.12"]
    assert net.failures == []
    # one spoke's SAs go: its temporary entry goes, the other one's traffic goes on
    s1.clear_crypto_sa()
    hub.clear_crypto_sa(peer="192.0.2.11")
    assert [t.peer for t in net.temporary_entries(hub)] == ["192.0.2.12"]
    assert round_trip(hub, s2, [udp("10.0.0.1", "10.12.0.1")]) == ([PROTECT], True)
    assert hub.outbound(IF, batch(udp("10.0.0.1", "10.11.0.1"))).verdict.tolist() == [BYPASS]


def test_dynamic_hub_keeps_sending_through_a_spoke_rekey() -> None:
    """The spoke rekeys at its soft lifetime; the hub's temporary entry lives on with the
    new SAs, which take its traffic at once; nothing is lost either way."""
    clock = Clock()
    hub, s1, _, net = _hub_and_spokes(clock, " set security-association lifetime seconds 200")
    for step in range(100):
        assert round_trip(s1, hub, [udp("10.11.0.1", "10.0.0.1", 1000 + step)]) == (
            [PROTECT], True), step
        assert round_trip(hub, s1, [udp("10.0.0.1", "10.11.0.1", 53, 1000 + step)]) == (
            [PROTECT], True), step
        clock.t += 5
    assert sum(n.rekey for n in net.negotiations) >= 2 and net.failures == []
    (temp,) = net.temporary_entries(hub)
    assert len(temp.pairs) in (1, 2)


def test_same_flow_from_another_spoke_takes_the_hub_traffic() -> None:
    """Two spokes negotiate the same flow with the hub: the hub's traffic for it goes to
    the one heard from last (the seed's load sharing rule, seen from the responder)."""
    clock = Clock()
    hub = Router(parse_config(config("192.0.2.1", [], None, key_for="0.0.0.0 0.0.0.0",
                                     dynamic=" set transform-set T")), clock=clock)
    acl = "permit ip 10.11.0.0 0.0.255.255 10.0.0.0 0.0.255.255"
    s1 = Router(parse_config(config("192.0.2.11", "192.0.2.1", acl)), clock=clock)
    s2 = Router(parse_config(config("192.0.2.12", "192.0.2.1", acl)), clock=clock)
    net = Network()
    for r in (hub, s1, s2):
        net.add(r)
    assert round_trip(s1, hub, [udp("10.11.0.1", "10.0.0.1")]) == ([PROTECT], True)
    assert round_trip(hub, s1, [udp("10.0.0.1", "10.11.0.1")]) == ([PROTECT], True)
    assert round_trip(s2, hub, [udp("10.11.0.1", "10.0.0.1")]) == ([PROTECT], True)
    assert round_trip(hub, s2, [udp("10.0.0.1", "10.11.0.1")]) == ([PROTECT], True)
    assert len(net.temporary_entries(hub)) == 2
