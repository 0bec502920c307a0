"""Router: SA life cycle and the rest of DESIGN.md §Policy with a fake clock.

ACQUIRE / negotiator, lifetimes (seconds, kilobytes, soft rekey), anti-replay, clear,
per-host scope, local-address (shared SAD) vs per-interface SADs, nesting (the seed's
Figure 1), IPv4 options / multicast / broadcast, dynamic entries, inner-flow check, show.
Expected values are derived by hand from the seed's sentences and DESIGN.md; packet
contents are checked with scapy where it matters.
"""

from __future__ import annotations

import os

import pytest

pytest.importorskip("scapy")
from scapy.layers.inet import IP, UDP, IPOption_Router_Alert  # noqa: E402
from scapy.layers.ipsec import ESP  # noqa: E402
from scapy.layers.ipsec import SecurityAssociation as ScapySA  # noqa: E402
from scapy.packet import Raw  # noqa: E402
from test_router_kit import A_ADDR, B_ADDR, manual_pair, udp  # noqa: E402

from ipsecfast import PacketBatch, Status  # noqa: E402
from ipsecfast.config import parse_config  # noqa: E402
from ipsecfast.router import AcquireRequest, Flow, Router, SaKeys, Verdict  # noqa: E402
from ipsecfast.sa import SecurityAssociation  # noqa: E402

IF = "GigabitEthernet0/0"
DROP, PROTECT, BYPASS = Verdict.DROP, Verdict.PROTECT, Verdict.BYPASS


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def isakmp_config(me: str, peer: str, acl: str, *, entry: str = "", globals_: str = "") -> str:
    return f"""{globals_}
crypto ipsec transform-set T esp-aes esp-sha-hmac
crypto map M 10 ipsec-isakmp
 set peer {peer}
 set transform-set T
{entry}
 match address 101
interface GigabitEthernet0/0
 ip address {me} 255.255.255.0
 crypto map M
access-list 101 {acl}
"""


A_ACL = "permit ip 10.1.0.0 0.0.255.255 10.2.0.0 0.0.255.255"
B_ACL = "permit ip 10.2.0.0 0.0.255.255 10.1.0.0 0.0.255.255"


class Negotiator:
    """Stands in for IKE: installs mirrored SA pairs on both routers at once."""

    def __init__(self, other: Router) -> None:
        self.other = other
        self.requests: list[AcquireRequest] = []
        self.rekeys: list[object] = []
        self.spi = 0x5000

    def acquire(self, router: Router, req: AcquireRequest) -> None:
        self.requests.append(req)
        ab = SaKeys(self.spi, os.urandom(16), os.urandom(20))
        ba = SaKeys(self.spi + 1, os.urandom(16), os.urandom(20))
        self.spi += 2
        assert req.peer is not None and req.local is not None
        router.install_sas(req.entry, req.peer, {"esp": ba}, {"esp": ab}, flow=req.flow)
        f = req.flow
        mirror = Flow(f.ace, f.destination, f.source) if f.source is not None else Flow(f.ace)
        self.other.install_sas(0, req.local, {"esp": ab}, {"esp": ba}, flow=mirror)

    def rekey(self, router: Router, req: object) -> None:
        self.rekeys.append(req)


def ike_pair(entry: str = "", globals_: str = "", clock: Clock | None = None,
             negotiate: bool = True) -> tuple[Router, Router, Negotiator]:
    clock = clock or Clock()
    ra = Router(parse_config(isakmp_config(A_ADDR, B_ADDR, A_ACL, entry=entry,
                                           globals_=globals_)), clock=clock)
    rb = Router(parse_config(isakmp_config(B_ADDR, A_ADDR, B_ACL, entry=entry,
                                           globals_=globals_)), clock=clock)
    neg = Negotiator(rb)
    if negotiate:
        ra.negotiator = neg
    return ra, rb, neg


def batch(*pkts: bytes) -> PacketBatch:
    return PacketBatch.from_list(pkts)


# -- ACQUIRE / negotiation ------------------------------------------------------------------


def test_acquire_recorded_and_dropped_without_negotiator() -> None:
    """DESIGN.md §Policy 5: no SA for an ipsec-isakmp entry -> ACQUIRE, packet dropped."""
    clock = Clock()
    ra, _, _ = ike_pair(clock=clock, negotiate=False)
    res = ra.outbound(IF, batch(udp("10.1.0.5", "10.2.0.7"), udp("10.1.0.6", "10.2.0.8")))
    assert res.verdict.tolist() == [DROP, DROP]
    assert res.reason.tolist() == [Status.NO_SA, Status.NO_SA]
    (req,) = ra.acquires
    assert (req.entry, req.peer, req.flow, req.map_name, req.seq) == (0, B_ADDR, Flow(0), "M", 10)
    assert req.ace is not None and str(req.ace) == A_ACL
    ra.outbound(IF, batch(udp("10.1.0.5", "10.2.0.7")))
    assert len(ra.acquires) == 1, "one pending ACQUIRE per flow"
    clock.t += 11
    ra.outbound(IF, batch(udp("10.1.0.5", "10.2.0.7")))
    assert len(ra.acquires) == 2, "retried after ACQUIRE_RETRY_SECONDS"
    assert ra.drops[IF]["send"] == {"no-sa": 4}


def test_negotiator_completes_in_the_same_call_and_replay_is_detected() -> None:
    ra, rb, neg = ike_pair()
    pkts = [udp("10.1.0.5", "10.2.0.7", 100, i) for i in range(3)]
    out = ra.outbound(IF, batch(*pkts))
    assert out.verdict.tolist() == [PROTECT] * 3
    assert len(neg.requests) == 1 and len(ra.acquires) == 1
    back = rb.inbound(IF, out.packets)
    assert back.packets.to_list() == pkts
    again = rb.inbound(IF, out.packets[[1]])
    assert again.reason.tolist() == [Status.REPLAY]
    (pair,) = list(rb.sad)
    assert pair.recv_errors == {"replay": 1}
    assert pair.inbound[0].replay_window == 64
    assert "replay detection support: Y" in rb.show("crypto ipsec sa")


@pytest.mark.parametrize(("globals_", "window"), [
    ("crypto ipsec security-association replay window-size 1024", 1024),
    ("crypto ipsec security-association replay disable", 0),
])
def test_replay_window_from_global_config(globals_: str, window: int) -> None:
    ra, rb, _ = ike_pair(globals_=globals_)
    out = ra.outbound(IF, batch(udp("10.1.0.5", "10.2.0.7")))
    (pair,) = list(rb.sad)
    assert pair.inbound[0].replay_window == window
    rb.inbound(IF, out.packets)
    again = rb.inbound(IF, out.packets)
    assert again.verdict.tolist() == ([PROTECT] if window == 0 else [DROP])


def test_manual_sas_have_no_anti_replay() -> None:
    """The seed's glossary: anti-replay "except for manually established SAs"."""
    a, b, _ = manual_pair("esp-aes esp-sha-hmac")
    ra, rb = Router(a), Router(b)
    out = ra.outbound(IF, batch(udp("10.1.0.5", "10.2.0.7")))
    assert rb.inbound(IF, out.packets).verdict.tolist() == [PROTECT]
    assert rb.inbound(IF, out.packets).verdict.tolist() == [PROTECT]
    assert "replay detection support: N" in rb.show("crypto ipsec sa")
    assert "no sa timing" in rb.show("crypto ipsec sa")


# -- lifetimes ---------------------------------------------------------------------------


def test_lifetime_seconds_soft_rekey_then_expiry() -> None:
    clock = Clock()
    ra, rb, neg = ike_pair(entry=" set security-association lifetime seconds 600", clock=clock)
    p = udp("10.1.0.5", "10.2.0.7")
    ra.outbound(IF, batch(p))
    (pair,) = list(ra.sad)
    assert (pair.lifetime_seconds, pair.lifetime_kilobytes) == (600, 4_608_000)
    assert "remaining key lifetime (k/sec): (4608000/600)" in ra.show("crypto ipsec sa")
    clock.t += 539
    ra.outbound(IF, batch(p))
    assert ra.rekey_requests == []
    clock.t += 1  # 540 s = 90 % of 600
    ra.outbound(IF, batch(p))
    (req,) = ra.rekey_requests
    assert (req.pair, req.entry, req.peer, req.reason) == (pair.id, 0, B_ADDR, "seconds")
    assert neg.rekeys == [req]
    assert "remaining key lifetime (k/sec): (4608000/60)" in ra.show("crypto ipsec sa")
    rec = pair.outbound[0]
    clock.t += 60  # 600 s: the SA expires
    ra.negotiator = None
    res = ra.outbound(IF, batch(p))
    assert res.reason.tolist() == [Status.NO_SA]
    assert list(ra.sad) == [] and rec.sa.closed
    assert rec.cipher_key == bytearray(16) and rec.auth_key == bytearray(20), "keys wiped"


def test_lifetime_kilobytes_first_limit_wins() -> None:
    """2560 KB = 2,621,440 bytes; 1000-byte packets: the packet that starts below the
    limit is the last one (2622 of them); 90 % (2,359,296 bytes) raises the rekey."""
    ra, rb, neg = ike_pair(entry=" set security-association lifetime kilobytes 2560")
    first = ra.outbound(IF, PacketBatch.from_list([udp("10.1.0.5", "10.2.0.7", 1000, i % 256)
                                                    for i in range(2400)]))
    assert first.verdict.tolist() == [PROTECT] * 2400
    (req,) = ra.rekey_requests
    assert req.reason == "kilobytes"
    ra.negotiator = None
    second = ra.outbound(IF, PacketBatch.from_list([udp("10.1.0.5", "10.2.0.7", 1000, i % 256)
                                                     for i in range(300)]))
    assert second.verdict.tolist() == [PROTECT] * 222 + [DROP] * 78
    assert set(second.reason[222:].tolist()) == {Status.LIFETIME_EXPIRED}
    assert list(ra.sad) == []
    assert ra.outbound(IF, batch(udp("10.1.0.5", "10.2.0.7"))).reason.tolist() == [Status.NO_SA]


def test_new_pair_takes_over_and_old_one_still_accepts_inbound() -> None:
    clock = Clock()
    ra, rb, neg = ike_pair(clock=clock)
    p = udp("10.1.0.5", "10.2.0.7")
    old_wire = ra.outbound(IF, batch(p)).packets
    neg.acquire(ra, ra.acquires[0])  # a rekey: new pairs on both sides
    assert len(ra.sad) == 2 and len(rb.sad) == 2
    new = ra.outbound(IF, batch(p))
    assert new.sa[0] != ra.sad.sas()[1].id
    assert rb.inbound(IF, old_wire).verdict.tolist() == [PROTECT]
    assert rb.inbound(IF, new.packets).verdict.tolist() == [PROTECT]


# -- clear crypto sa ------------------------------------------------------------------------

CLEAR = """
crypto ipsec transform-set T esp-aes esp-sha-hmac
crypto map M 10 ipsec-manual
 set peer 192.0.2.2
 set transform-set T
 set session-key inbound esp 300 cipher {k} authenticator {a}
 set session-key outbound esp 301 cipher {k} authenticator {a}
 match address 101
crypto map M 20 ipsec-isakmp
 set peer 192.0.2.3
 set transform-set T
 match address 102
crypto map N 10 ipsec-isakmp
 set peer 198.51.100.9
 set transform-set T
 match address 103
interface GigabitEthernet0/0
 ip address 192.0.2.1 255.255.255.0
 crypto map M
interface GigabitEthernet0/1
 ip address 198.51.100.1 255.255.255.0
 crypto map N
access-list 101 permit ip 10.1.0.0 0.0.255.255 10.2.0.0 0.0.255.255
access-list 102 permit ip 10.1.0.0 0.0.255.255 10.3.0.0 0.0.255.255
access-list 103 permit ip 10.1.0.0 0.0.255.255 10.4.0.0 0.0.255.255
""".format(k="ab" * 16, a="cd" * 20)


def clear_router() -> Router:
    r = Router(parse_config(CLEAR))
    r.install_sas(1, "192.0.2.3", {"esp": SaKeys(400, bytes(16), bytes(20))},
                  {"esp": SaKeys(401, bytes(16), bytes(20))})
    r.install_sas(2, "198.51.100.9", {"esp": SaKeys(500, bytes(16), bytes(20))},
                  {"esp": SaKeys(501, bytes(16), bytes(20))})
    return r


def peers(r: Router) -> list[str]:
    return sorted(p.peer for p in r.sad)


def test_clear_all_reinstalls_manual_sas_at_once() -> None:
    r = clear_router()
    r.outbound(IF, batch(udp("10.1.0.5", "10.2.0.7")))
    manual = next(p for p in r.sad if p.manual)
    assert manual.outbound[0].sa.seq == 1
    assert r.clear_crypto_sa() == 3
    assert peers(r) == ["192.0.2.2"], "the seed: manual SAs are reestablished immediately"
    fresh = next(iter(r.sad))
    # the re-established SA continues the sequence number (so no counter IV repeats under
    # the unchanged session key); the peer keeps no replay window for manual SAs
    assert fresh is not manual and fresh.outbound[0].sa.seq == 1
    assert manual.outbound[0].sa.closed and manual.outbound[0].cipher_key == bytearray(16)
    assert [s.spi for s in r.sad.sas()] == [300, 301]


def test_clear_by_peer_map_and_entry() -> None:
    r = clear_router()
    assert r.clear_crypto_sa(peer="192.0.2.3") == 1
    assert peers(r) == ["192.0.2.2", "198.51.100.9"]
    r = clear_router()
    assert r.clear_crypto_sa(map="N") == 1
    assert peers(r) == ["192.0.2.2", "192.0.2.3"]
    r = clear_router()
    assert r.clear_crypto_sa(map="M") == 2
    assert peers(r) == ["192.0.2.2", "198.51.100.9"]
    r = clear_router()
    # entry = (destination, protocol, SPI): our inbound SA 400 is addressed to us
    assert r.clear_crypto_sa(entry=("192.0.2.1", "esp", 400)) == 1
    assert peers(r) == ["192.0.2.2", "198.51.100.9"]
    assert r.clear_crypto_sa(entry=("198.51.100.9", "esp", 501)) == 1
    assert peers(r) == ["192.0.2.2"]
    assert r.clear_crypto_sa(entry=("192.0.2.1", "esp", 999)) == 0


def test_install_sas_rejects_bad_requests() -> None:
    r = clear_router()
    with pytest.raises(ValueError, match="ipsec-manual"):
        r.install_sas(0, "192.0.2.2", {}, {})
    with pytest.raises(ValueError, match="already in use"):
        r.install_sas(1, "192.0.2.3", {"esp": SaKeys(400, bytes(16), bytes(20))},
                      {"esp": SaKeys(402, bytes(16), bytes(20))})
    with pytest.raises(ValueError, match="missing"):
        r.install_sas(1, "192.0.2.3", {}, {"esp": SaKeys(403, bytes(16), bytes(20))})
    with pytest.raises(ValueError, match="16 bytes"):
        r.install_sas(1, "192.0.2.3", {"esp": SaKeys(404, bytes(15), bytes(20))},
                      {"esp": SaKeys(405, bytes(16), bytes(20))})
    with pytest.raises(ValueError, match="transform set"):
        r.install_sas(1, "192.0.2.3", {}, {}, transform_set="nope")
    with pytest.raises(ValueError, match="per-ACE"):
        r.install_sas(1, "192.0.2.3", {}, {}, flow=Flow(-1, 1, 2))
    with pytest.raises(ValueError, match="not a permit"):
        r.install_sas(1, "192.0.2.3", {}, {}, flow=Flow(3))


# -- scope: per-host ------------------------------------------------------------------------


def test_per_host_scope_one_pair_per_host_pair() -> None:
    ra, rb, neg = ike_pair(entry=" set security-association level per-host")
    pkts = [udp("10.1.0.1", "10.2.0.1", 60, 1), udp("10.1.0.2", "10.2.0.1", 60, 2),
            udp("10.1.0.1", "10.2.0.1", 60, 3)]
    out = ra.outbound(IF, batch(*pkts))
    assert out.verdict.tolist() == [PROTECT] * 3
    flows = [r.flow for r in ra.acquires]
    assert flows == [Flow(-1, 0x0A010001, 0x0A020001), Flow(-1, 0x0A010002, 0x0A020001)]
    assert out.sa[0] == out.sa[2] != out.sa[1]
    assert len(ra.sad) == 2
    assert rb.inbound(IF, out.packets).packets.to_list() == pkts
    text = ra.show("crypto ipsec sa")
    assert "local  ident (addr/mask/prot/port): (10.1.0.2/255.255.255.255/0/0)" in text


def test_per_host_sa_rejects_another_host_pair() -> None:
    """DESIGN.md §Policy 4: after decapsulation the inner packet must match the flow of
    the SA that carried it (per-host: its host pair)."""
    ra, rb, neg = ike_pair(entry=" set security-association level per-host")
    ra.outbound(IF, batch(udp("10.1.0.1", "10.2.0.1")))
    (pair,) = list(ra.sad)
    # A's own outbound SA, used for a different host pair, forged by hand
    wire = pair.outbound[0].sa.encapsulate(batch(udp("10.1.0.9", "10.2.0.1"))).packets
    res = rb.inbound(IF, wire)
    assert res.reason.tolist() == [Status.INNER_FLOW_MISMATCH]


def test_inner_flow_mismatch_with_narrower_peer_acl() -> None:
    a, b, _ = manual_pair("esp-aes esp-sha-hmac", entries=[
        ("permit ip 10.1.0.0 0.0.255.255 10.2.0.0 0.0.255.255",
         "permit ip 10.2.0.0 0.0.0.255 10.1.0.0 0.0.0.255")])
    ra, rb = Router(a), Router(b)
    pkts = [udp("10.1.0.5", "10.2.0.5"), udp("10.1.5.5", "10.2.5.5")]
    res = rb.inbound(IF, ra.outbound(IF, batch(*pkts)).packets)
    assert res.verdict.tolist() == [PROTECT, DROP]
    assert res.reason.tolist() == [0, Status.INNER_FLOW_MISMATCH]
    assert list(rb.sad)[0].recv_errors == {"inner-flow-mismatch": 1}



@pytest.mark.parametrize("denies", [5, 70])
def test_inner_flow_with_denies_before_the_permit(denies: int) -> None:
    """The inner-flow check takes the first ACE of the SA's own list that matches
    (mirrored): a deny before the permit excludes its hosts. Short lists are scanned per
    packet in C; a list over ``FLOW_SCAN_ROWS`` rows goes through its own classifier:
    both give the same answers."""
    from ipsecfast.cryptomap import FLOW_SCAN_ROWS

    deny = "\n".join(f"access-list 101 deny ip host 10.2.0.{100 + k} any" for k in range(denies))
    a, b, _ = manual_pair("esp-aes esp-sha-hmac", entries=[
        ("permit ip 10.1.0.0 0.0.255.255 10.2.0.0 0.0.255.255",
         deny.removeprefix("access-list 101 ")
         + "\naccess-list 101 permit ip 10.2.0.0 0.0.0.255 10.1.0.0 0.0.0.255")])
    ra, rb = Router(a), Router(b)
    assert (denies > FLOW_SCAN_ROWS) == (denies == 70)
    pkts = [udp("10.1.0.5", "10.2.0.5"), udp("10.1.5.5", "10.2.5.5"),
            udp("10.1.0.5", "10.2.0.150"), udp("10.1.0.6", "10.2.0.104"),
            udp("10.1.0.7", "10.2.0.99")]
    res = rb.inbound(IF, ra.outbound(IF, batch(*pkts)).packets)
    in_deny = [False, False, denies > 50, True, False]
    assert res.verdict.tolist() == [
        DROP if (d or i == 1) else PROTECT for i, d in enumerate(in_deny)]
    assert res.reason.tolist() == [
        Status.INNER_FLOW_MISMATCH if (d or i == 1) else 0 for i, d in enumerate(in_deny)]
    assert res.packets[res.verdict == PROTECT].to_list() == [
        p for i, p in enumerate(pkts) if not (in_deny[i] or i == 1)]

# -- interfaces: local-address ------------------------------------------------------------

REDUNDANT = """
crypto ipsec transform-set T esp-aes esp-sha-hmac
crypto map M 10 ipsec-manual
 set peer 192.0.2.2
 set transform-set T
 set session-key inbound esp 300 cipher {k} authenticator {a}
 set session-key outbound esp 301 cipher {k} authenticator {a}
 match address 101
{local}
interface GigabitEthernet0/0
 ip address 198.51.100.1 255.255.255.0
 crypto map M
interface GigabitEthernet0/1
 ip address 203.0.113.1 255.255.255.0
 crypto map M
interface Loopback0
 ip address 192.0.2.1 255.255.255.255
access-list 101 permit ip 10.1.0.0 0.0.255.255 10.2.0.0 0.0.255.255
"""
K, AK = bytes.fromhex("ab" * 16), bytes.fromhex("cd" * 20)


def esp_seq(wire: bytes) -> tuple[str, int]:
    pkt = IP(wire)
    return pkt.src, int.from_bytes(wire[24:28], "big")


def test_local_address_shares_one_sad() -> None:
    """The seed: with an identifying interface "the per-interface portion of the IPsec
    security association database is established one time and shared" and its address
    is "used as the local address"."""
    r = Router(parse_config(REDUNDANT.format(k="ab" * 16, a="cd" * 20,
                                             local="crypto map M local-address Loopback0")))
    assert r.crypto_interfaces() == ["GigabitEthernet0/0", "GigabitEthernet0/1"]
    with pytest.raises(ValueError, match="GigabitEthernet0/0, GigabitEthernet0/1"):
        r.default_interface()
    assert [(s.local, s.direction) for s in r.sad.sas()] == [
        ("192.0.2.1", "inbound"), ("192.0.2.1", "outbound")]
    p = udp("10.1.0.5", "10.2.0.7")
    w0 = r.outbound("Gi0/0", batch(p, p)).packets.to_list()
    w1 = r.outbound("Gi0/1", batch(p)).packets.to_list()
    assert [esp_seq(w) for w in w0 + w1] == [("192.0.2.1", 1), ("192.0.2.1", 2),
                                              ("192.0.2.1", 3)]
    ssa = ScapySA(ESP, spi=301, crypt_algo="AES-CBC", crypt_key=K, auth_algo="HMAC-SHA1-96",
                  auth_key=AK, tunnel_header=IP(src="192.0.2.1", dst="192.0.2.2"))
    assert bytes(ssa.decrypt(IP(w1[0]))) == p
    # B's traffic to the loopback address arrives on either interface
    back = ScapySA(ESP, spi=300, crypt_algo="AES-CBC", crypt_key=K, auth_algo="HMAC-SHA1-96",
                   auth_key=AK, tunnel_header=IP(src="192.0.2.2", dst="192.0.2.1"))
    reply = udp("10.2.0.7", "10.1.0.5")
    for i, ifname in enumerate(("Gi0/0", "Gi0/1")):
        back.seq_num = i + 1
        wire = bytes(back.encrypt(IP(reply)))
        assert r.inbound(ifname, batch(wire)).packets.to_list() == [reply]


def test_without_local_address_each_interface_has_its_own_sad() -> None:
    """The seed's default: "Each interface has its own piece of the security association
    database" and "The IP address of the local interface is used as the local address"."""
    r = Router(parse_config(REDUNDANT.format(k="ab" * 16, a="cd" * 20, local="")))
    assert sorted((s.local, s.direction) for s in r.sad.sas()) == [
        ("198.51.100.1", "inbound"), ("198.51.100.1", "outbound"),
        ("203.0.113.1", "inbound"), ("203.0.113.1", "outbound")]
    p = udp("10.1.0.5", "10.2.0.7")
    w0 = r.outbound("Gi0/0", batch(p, p)).packets.to_list()
    w1 = r.outbound("Gi0/1", batch(p)).packets.to_list()
    assert [esp_seq(w) for w in w0 + w1] == [("198.51.100.1", 1), ("198.51.100.1", 2),
                                              ("203.0.113.1", 1)]


# -- nesting (the seed's Figure 1) ----------------------------------------------------------

C_ADDR = "198.51.100.3"


def nest_configs() -> tuple[Router, Router, Router]:
    """A protects 10.1/16 <-> 10.3/16 for C (inner peer), then A <-> C for B (outer)."""
    ks = {n: (bytes([n]) * 16, bytes([n + 1]) * 20) for n in (1, 3)}

    def keys(n: int, inbound: int, outbound: int) -> str:
        k, a = ks[n]
        return (f" set session-key inbound esp {inbound} cipher {k.hex()} authenticator {a.hex()}\n"
                f" set session-key outbound esp {outbound} cipher {k.hex()} authenticator "
                f"{a.hex()}")

    def router(me: str, entries: list[tuple[str, str, str]]) -> Router:
        text = "crypto ipsec transform-set T esp-aes esp-sha-hmac\n"
        for i, (peer, key, _acl) in enumerate(entries):
            text += (f"crypto map M {10 * (i + 1)} ipsec-manual\n set peer {peer}\n"
                     f" set transform-set T\n{key}\n match address {101 + i}\n")
        text += f"interface GigabitEthernet0/0\n ip address {me} 255.255.255.0\n crypto map M\n"
        for i, (_, _, acl) in enumerate(entries):
            text += f"access-list {101 + i} {acl}\n"
        return Router(parse_config(text))

    ra = router(A_ADDR, [
        (C_ADDR, keys(1, 1100, 1101), "permit ip 10.1.0.0 0.0.255.255 10.3.0.0 0.0.255.255"),
        (B_ADDR, keys(3, 3300, 3301), f"permit ip host {A_ADDR} host {C_ADDR}")])
    rb = router(B_ADDR, [(A_ADDR, keys(3, 3301, 3300), f"permit ip host {C_ADDR} host {A_ADDR}")])
    rc = router(C_ADDR, [
        (A_ADDR, keys(1, 1101, 1100), "permit ip 10.3.0.0 0.0.255.255 10.1.0.0 0.0.255.255")])
    return ra, rb, rc


def test_nesting_figure_1_outbound_then_peeled_hop_by_hop() -> None:
    ra, rb, rc = nest_configs()
    p = udp("10.1.0.5", "10.3.0.7", 120)
    out = ra.outbound(IF, batch(p, udp("10.1.0.5", "10.9.0.7")))
    assert out.verdict.tolist() == [PROTECT, BYPASS]
    assert out.entry.tolist() == [0, -1]  # the entry that protects the original packet
    wire = out.packets[0]
    assert IP(wire).src == A_ADDR and IP(wire).dst == B_ADDR, "outer layer to B"
    outer = ScapySA(ESP, spi=3301, crypt_algo="AES-CBC", crypt_key=bytes([3]) * 16,
                    auth_algo="HMAC-SHA1-96", auth_key=bytes([4]) * 20,
                    tunnel_header=IP(src=A_ADDR, dst=B_ADDR))
    inner = ScapySA(ESP, spi=1101, crypt_algo="AES-CBC", crypt_key=bytes([1]) * 16,
                    auth_algo="HMAC-SHA1-96", auth_key=bytes([2]) * 20,
                    tunnel_header=IP(src=A_ADDR, dst=C_ADDR))
    mid = bytes(outer.decrypt(IP(wire)))
    assert IP(mid).src == A_ADDR and IP(mid).dst == C_ADDR and IP(mid).proto == 50
    assert bytes(inner.decrypt(IP(mid))) == p
    at_b = rb.inbound(IF, out.packets[[0]])
    assert at_b.verdict.tolist() == [PROTECT] and at_b.packets[0] == mid
    at_c = rc.inbound(IF, at_b.packets)
    assert at_c.packets.to_list() == [p]


def test_nesting_inbound_peels_both_layers() -> None:
    ra, rb, rc = nest_configs()
    reply = udp("10.3.0.7", "10.1.0.5", 90)
    from_c = rc.outbound(IF, batch(reply))
    assert IP(from_c.packets[0]).dst == A_ADDR
    via_b = rb.outbound(IF, from_c.packets)
    assert IP(via_b.packets[0]).src == B_ADDR and IP(via_b.packets[0]).dst == A_ADDR
    res = ra.inbound(IF, via_b.packets)
    assert res.verdict.tolist() == [PROTECT]
    assert res.packets.to_list() == [reply]
    assert res.entry.tolist() == [0]  # the inner layer's entry (C's flow)


def test_nesting_inbound_sees_sas_changed_between_layers() -> None:
    """A listener that clears the inner SA while the outer layer is counted (the SA is
    manual: installed again at once, with the same SPI): the inner layer is opened with
    the SA as it is now, not with the deleted one (review finding: it raised "closed")."""
    ra, rb, rc = nest_configs()
    reply = udp("10.3.0.7", "10.1.0.5", 90)
    wire = rb.outbound(IF, rc.outbound(IF, batch(reply)).packets).packets
    fired: list[int] = []

    def listener(router: Router, pairs: object) -> None:
        if not fired:
            fired.append(router.clear_crypto_sa(peer=C_ADDR))

    ra.on_traffic_received(listener)
    res = ra.inbound(IF, wire)
    assert fired == [1]
    assert res.verdict.tolist() == [PROTECT] and res.reason.tolist() == [0]
    assert res.packets.to_list() == [reply]


def test_nesting_depth_one_protects_once() -> None:
    ra, _, _ = nest_configs()
    ra.nesting_depth = 1
    out = ra.outbound(IF, batch(udp("10.1.0.5", "10.3.0.7")))
    assert IP(out.packets[0]).dst == C_ADDR


# -- options, multicast, broadcast ------------------------------------------------------------

SPECIAL = """
crypto ipsec transform-set T esp-aes esp-sha-hmac
crypto map M 10 ipsec-manual
 set peer 192.0.2.2
 set transform-set T
 set session-key inbound esp 300 cipher {k} authenticator {a}
 set session-key outbound esp 301 cipher {k} authenticator {a}
 match address 101
interface GigabitEthernet0/0
 ip address 192.0.2.1 255.255.255.0
 crypto map M
interface GigabitEthernet0/1
 ip address 10.1.0.1 255.255.0.0
access-list 101 permit ip 10.1.0.0 0.0.255.255 any
""".format(k="ab" * 16, a="cd" * 20)


def test_options_multicast_and_broadcast_are_never_protected() -> None:
    """DESIGN.md §Policy 9 and the seed ("IPsec can be applied to unicast IP datagrams
    only"; "the crypto engine drops IPv4 packets that contain IPv4 options")."""
    r = Router(parse_config(SPECIAL))
    opts = bytes(IP(src="10.1.0.5", dst="10.2.0.7", options=[IPOption_Router_Alert()])
                 / UDP() / Raw(b"x" * 8))
    pkts = [
        udp("10.1.0.5", "10.2.0.7"),  # protected
        opts,  # options
        udp("10.1.0.5", "224.0.0.5"),  # multicast
        udp("10.1.0.5", "255.255.255.255"),  # limited broadcast
        udp("10.1.0.5", "10.1.255.255"),  # directed broadcast of Gi0/1's subnet
        udp("10.9.0.5", "224.0.0.5"),  # no permit catches it: passes
    ]
    res = r.outbound(IF, batch(*pkts))
    assert res.verdict.tolist() == [PROTECT, DROP, DROP, DROP, DROP, BYPASS]
    assert res.reason.tolist() == [0, Status.IP_OPTIONS, Status.MULTICAST, Status.BROADCAST,
                                   Status.BROADCAST, 0]
    assert r.drops[IF]["send"] == {"ip-options": 1, "multicast": 1, "broadcast": 2}
    inbound = r.inbound(IF, batch(udp("10.2.0.7", "10.1.0.5"), udp("10.2.0.7", "224.0.0.9")))
    assert inbound.reason.tolist() == [Status.UNPROTECTED, 0]


# -- dynamic entries ------------------------------------------------------------------------

DYNAMIC = """
crypto ipsec transform-set T esp-aes esp-sha-hmac
crypto dynamic-map D 10
 set transform-set T
 match address 120
crypto dynamic-map D 20
 set transform-set T
crypto dynamic-map D 30
 set transform-set T
 match address {empty}
crypto map M 100 ipsec-isakmp dynamic D
interface GigabitEthernet0/0
 ip address 192.0.2.1 255.255.255.0
 crypto map M
access-list 120 permit ip 10.1.0.0 0.0.255.255 10.2.0.0 0.0.255.255
"""


def test_dynamic_entry_without_sa_drops_and_never_acquires() -> None:
    """The seed: "In the case of dynamic crypto map entries, if no SA existed, the traffic
    would simply be dropped"; an entry with an undefined list drops everything; one
    without match address is ignored."""
    r = Router(parse_config(DYNAMIC.format(empty=199)))
    assert [e.kind for e in r.entries] == ["dynamic"] * 3
    res = r.outbound(IF, batch(udp("10.1.0.5", "10.2.0.7"), udp("10.5.0.5", "10.6.0.7")))
    assert res.verdict.tolist() == [DROP, DROP]
    assert res.reason.tolist() == [Status.NO_SA, Status.NO_ACL]
    assert res.entry.tolist() == [0, 2]
    assert r.acquires == []
    inb = r.inbound(IF, batch(udp("10.2.0.7", "10.1.0.5"), udp("10.6.0.7", "10.5.0.5")))
    assert inb.reason.tolist() == [Status.UNPROTECTED, Status.NO_ACL]
    # a negotiated pair on the dynamic entry (peer-initiated) carries the traffic
    r.install_sas(0, "192.0.2.2", {"esp": SaKeys(700, K, AK)}, {"esp": SaKeys(701, K, AK)})
    assert r.outbound(IF, batch(udp("10.1.0.5", "10.2.0.7"))).verdict.tolist() == [PROTECT]


def test_dynamic_entry_without_match_address_is_ignored() -> None:
    text = DYNAMIC.replace(" match address {empty}\n", "").replace(
        "crypto dynamic-map D 10\n set transform-set T\n match address 120\n", "")
    r = Router(parse_config(text))
    res = r.outbound(IF, batch(udp("10.1.0.5", "10.2.0.7")))
    assert res.verdict.tolist() == [BYPASS]


# -- show -----------------------------------------------------------------------------------


def test_show_commands_are_live_and_never_print_keys() -> None:
    a, b, keys = manual_pair("ah-sha-hmac esp-aes 256 esp-sha256-hmac")
    ra, rb = Router(a), Router(b)
    out = ra.outbound(IF, batch(*[udp("10.1.0.5", "10.2.0.7", 80, i) for i in range(5)]))
    rb.inbound(IF, out.packets)
    text = rb.show("show crypto ipsec sa detail")
    for pair in keys.values():
        for k in pair:
            for key in (k.cipher, k.auth):
                if key:
                    assert key.hex() not in text.lower() and key.hex().upper() not in text
    assert "interface: GigabitEthernet0/0" in text
    assert "Crypto map tag: M, local addr 192.0.2.2" in text
    assert "local crypto endpt.: 192.0.2.2, remote crypto endpt.: 192.0.2.1" in text
    assert "current outbound spi: 0x4001(16385)" in text  # B's outbound AH SPI
    assert "      spi: 0x1001(4097)" in text and "transform: esp-aes 256 esp-sha256-hmac ," in text
    assert "transform: ah-sha-hmac ," in text
    assert "#pkts decaps: 5, #pkts decrypt: 5, #pkts verify: 5" in text
    assert "in use settings ={Tunnel, }" in text
    assert rb.show("crypto ipsec sa peer 192.0.2.9").strip() == "interface: GigabitEthernet0/0" \
        "\n    Crypto map tag: M, local addr 192.0.2.2"
    # a map that is not defined: an error line, not an empty answer
    assert rb.show("crypto ipsec sa map OTHER") == "% Crypto map OTHER not found\n"
    assert rb.show("crypto ipsec sa map M").startswith("interface: GigabitEthernet0/0")
    assert "Current peer: 192.0.2.2" in ra.show("show crypto map")
    assert "(5 matches)" in ra.show("show access-lists 101")
    for sa in ra.sad.sas():
        assert "cipher_key" not in repr(sa) and "auth_key" not in repr(sa)
        assert sa.auth_key.hex() not in repr(sa)


def test_exhausted_sequence_counter_deletes_the_pair() -> None:
    """DESIGN.md §SAs: "Sequence numbers start at 1 and never wrap: an SA whose counter
    is exhausted stops sending"; the router then deletes it and asks for a new one."""
    ra, rb, neg = ike_pair()
    p = udp("10.1.0.5", "10.2.0.7")
    ra.outbound(IF, batch(p))
    (pair,) = list(ra.sad)
    rec = pair.outbound[0]
    old = rec.sa
    # the same keys, with the counter two packets from its end (a test-only swap)
    rec.sa = SecurityAssociation("esp", rec.spi, rec.transforms, bytes(rec.cipher_key),
                                 bytes(rec.auth_key), local=A_ADDR, peer=B_ADDR,
                                 seq=0xFFFFFFFD)
    old.close()
    assert ra.rekey_requests == []
    ra.negotiator = None
    first = ra.outbound(IF, batch(p))
    assert first.verdict.tolist() == [PROTECT]
    assert [r.reason for r in ra.rekey_requests] == ["sequence"]  # past 90 % of 2^32
    res = ra.outbound(IF, batch(p, p))
    assert res.verdict.tolist() == [PROTECT, DROP]
    assert res.reason.tolist() == [0, Status.SEQ_EXHAUSTED]
    assert list(ra.sad) == []
    assert ra.outbound(IF, batch(p)).reason.tolist() == [Status.NO_SA]
    seqs = [int.from_bytes(w[24:28], "big") for w in first.packets.to_list() +
            res.packets.to_list()[:1]]
    assert seqs == [0xFFFFFFFE, 0xFFFFFFFF]


def test_close_wipes_every_key() -> None:
    a, _, _ = manual_pair("esp-aes esp-sha-hmac")
    with Router(a) as r:
        recs = r.sad.sas()
    assert len(r.sad) == 0
    assert all(x.sa.closed and not any(x.cipher_key) and not any(x.auth_key) for x in recs)


def test_show_crypto_ipsec_sa_rejects_unknown_arguments() -> None:
    from ipsecfast.show import UnknownCommand

    r = clear_router()
    with pytest.raises(UnknownCommand, match="expected peer A"):
        r.show("show crypto ipsec sa bogus")
    text = r.show("show crypto ipsec sa interface Gi0/1")
    assert "interface: GigabitEthernet0/1" in text and "GigabitEthernet0/0" not in text
    assert "current_peer 198.51.100.9" in text
    assert "current_peer 192.0.2.3" in r.show("crypto ipsec sa map M")
    assert "current_peer 192.0.2.3" not in r.show("crypto ipsec sa peer 192.0.2.2")
