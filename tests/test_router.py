"""Router: two routers from mirror-image manual configurations, every transform family.

Oracles: scapy (``scapy.layers.ipsec``) decrypts A's output with the session keys from the
configuration; B's inbound must give back A's input byte for byte; policy decisions are
checked against ``acl.first_permit`` (the reference matcher) and the seed's sentences.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("scapy")
from scapy.layers.inet import IP  # noqa: E402
from scapy.layers.ipsec import AH, ESP  # noqa: E402
from scapy.layers.ipsec import SecurityAssociation as ScapySA  # noqa: E402
from test_router_kit import A_ADDR, B_ADDR, SideKeys, manual_pair, udp  # noqa: E402

from ipsecfast import PacketBatch, Status  # noqa: E402
from ipsecfast.acl import PacketFields, first_permit  # noqa: E402
from ipsecfast.config import parse_config  # noqa: E402
from ipsecfast.cryptomap import manual_acl  # noqa: E402
from ipsecfast.router import Router, Verdict  # noqa: E402
from ipsecfast.transform import parse_transforms  # noqa: E402

IF = "GigabitEthernet0/0"

SCAPY_CIPHER = {
    "esp-aes": "AES-CBC", "esp-gcm": "AES-GCM", "esp-gmac": "AES-NULL-GMAC",
    "esp-chacha20-poly1305": "CHACHA20-POLY1305", "esp-aes-ctr": "AES-CTR",
    "esp-aes-ccm": "AES-CCM", "esp-3des": "3DES", "esp-des": "DES", "esp-null": "NULL",
}
SCAPY_AUTH = {
    "esp-md5-hmac": "HMAC-MD5-96", "esp-sha-hmac": "HMAC-SHA1-96",
    "esp-sha256-hmac": "SHA2-256-128", "esp-sha384-hmac": "SHA2-384-192",
    "esp-sha512-hmac": "SHA2-512-256", "ah-md5-hmac": "HMAC-MD5-96",
    "ah-sha-hmac": "HMAC-SHA1-96", "ah-sha256-hmac": "SHA2-256-128",
}
FAMILIES = [
    "esp-aes esp-sha-hmac",
    "esp-aes 192 esp-md5-hmac",
    "esp-aes 256 esp-sha256-hmac",
    "esp-aes esp-sha384-hmac",
    "esp-aes 256 esp-sha512-hmac",
    "esp-aes 256",
    "esp-3des esp-sha-hmac",
    "esp-des esp-md5-hmac",
    "esp-null esp-sha-hmac",
    "esp-gcm 128",
    "esp-gcm 256",
    "esp-gmac 128",
    "esp-chacha20-poly1305",
    "esp-aes-ctr 128 esp-sha-hmac",
    "esp-aes-ccm 128",
    "ah-md5-hmac",
    "ah-sha-hmac",
    "ah-sha256-hmac",
    "ah-sha-hmac esp-aes esp-sha-hmac",
    "ah-sha256-hmac esp-gcm 256",
    "ah-md5-hmac esp-3des esp-md5-hmac",
]

# Entry 10 protects traffic between the peers themselves, entry 20 two networks; both use
# the same transform set, so with `mode transport` entry 10 is transport, 20 tunnel.
HOSTS_AND_NETS = [
    (f"permit ip host {A_ADDR} host {B_ADDR}", f"permit ip host {B_ADDR} host {A_ADDR}"),
    ("permit ip 10.1.0.0 0.0.255.255 10.2.0.0 0.0.255.255",
     "permit ip 10.2.0.0 0.0.255.255 10.1.0.0 0.0.255.255"),
]


def scapy_sas(spec: str, keys: dict[str, tuple[SideKeys, SideKeys]], mode: str,
              entry: int) -> list[ScapySA]:
    """scapy SAs for A -> B traffic of manual entry ``entry``, outermost first."""
    t = parse_transforms(spec)
    out = []
    tunnel = IP(src=A_ADDR, dst=B_ADDR) if mode == "tunnel" else None
    if t.has_ah:
        assert t.ah is not None
        k = keys["ah"][0]
        out.append(ScapySA(AH, spi=k.spi + 16 * entry, auth_algo=SCAPY_AUTH[t.ah.keyword],
                           auth_key=k.auth, tunnel_header=None if t.has_esp else tunnel))
    if t.has_esp:
        k = keys["esp"][0]
        crypt = SCAPY_CIPHER[t.esp_cipher.keyword] if t.esp_cipher else "NULL"
        auth = SCAPY_AUTH[t.esp_auth.keyword] if t.esp_auth else None
        out.append(ScapySA(ESP, spi=k.spi + 16 * entry, crypt_algo=crypt, crypt_key=k.cipher,
                           auth_algo=auth, auth_key=k.auth, tunnel_header=tunnel))
    return out


def scapy_open(sas: list[ScapySA], wire: bytes) -> bytes:
    pkt = IP(wire)
    for sa in sas:
        pkt = IP(bytes(sa.decrypt(pkt)))
    return bytes(pkt)


def traffic() -> list[bytes]:
    return (
        [udp(A_ADDR, B_ADDR, size, i) for i, size in enumerate((28, 61, 300))]  # entry 10
        + [udp("10.1.0.5", "10.2.3.4", size, 10 + i)
           for i, size in enumerate((40, 64, 65, 1400))]  # entry 20
        + [udp("10.3.0.1", "10.2.0.1", 90, 20), udp("10.1.0.1", "10.4.0.1", 90, 21)]  # clear
    )


@pytest.mark.parametrize("mode", ["tunnel", "transport"])
@pytest.mark.parametrize("spec", FAMILIES)
def test_two_routers_round_trip(spec: str, mode: str) -> None:
    a, b, keys = manual_pair(spec, mode, seed=spec + mode, entries=HOSTS_AND_NETS)
    ra, rb = Router(a), Router(b)
    pkts = traffic()
    out = ra.outbound(IF, PacketBatch.from_list(pkts))
    assert out.verdict.tolist() == [Verdict.PROTECT] * 7 + [Verdict.BYPASS] * 2
    assert out.entry.tolist() == [0] * 3 + [1] * 4 + [-1] * 2
    assert out.reason.tolist() == [0] * 9
    wires = out.packets.to_list()
    assert wires[7:] == pkts[7:], "unprotected traffic leaves unchanged"
    t = parse_transforms(spec)
    outer_proto = 51 if t.has_ah else 50
    for i, (wire, inner) in enumerate(zip(wires[:7], pkts[:7], strict=True)):
        entry = 0 if i < 3 else 1
        transport = mode == "transport" and entry == 0  # the seed: only between the peers
        assert wire[9] == outer_proto
        assert wire[12:20] == IP(src=A_ADDR, dst=B_ADDR).build()[12:20]
        if not transport:
            assert len(wire) > len(inner) + 20
        sas = scapy_sas(spec, keys, "transport" if transport else "tunnel", entry)
        assert scapy_open(sas, wire) == inner, f"scapy decrypts packet {i}"
    back = rb.inbound(IF, out.packets)
    assert back.verdict.tolist() == [Verdict.PROTECT] * 7 + [Verdict.BYPASS] * 2
    assert back.packets.to_list() == pkts
    assert back.entry.tolist() == [0] * 3 + [1] * 4 + [-1] * 2
    # the SA ids name B's inbound SAs on the wire (AH outermost in a bundle)
    for i in range(7):
        rec = rb.sad.record(int(back.sa[i]))
        assert rec is not None and rec.direction == "inbound"
        assert rec.protocol == ("ah" if t.has_ah else "esp")


def test_reply_direction_and_counters() -> None:
    a, b, _ = manual_pair("esp-aes esp-sha-hmac")
    ra, rb = Router(a), Router(b)
    req = [udp("10.1.0.5", "10.2.0.9", 100, i) for i in range(4)]
    rep = [udp("10.2.0.9", "10.1.0.5", 100, i) for i in range(3)]
    assert rb.inbound(IF, ra.outbound(IF, PacketBatch.from_list(req)).packets).packets \
        .to_list() == req
    assert ra.inbound(IF, rb.outbound(IF, PacketBatch.from_list(rep)).packets).packets \
        .to_list() == rep
    (pa,) = list(ra.sad)
    assert (pa.encaps, pa.decaps) == (4, 3)
    text = ra.show("show crypto ipsec sa")
    assert "#pkts encaps: 4, #pkts encrypt: 4, #pkts digest: 4" in text
    assert "#pkts decaps: 3, #pkts decrypt: 3, #pkts verify: 3" in text


def test_clear_traffic_that_should_be_protected_is_dropped() -> None:
    """The seed: "if an unprotected packet matches a permit entry in a particular access
    list associated with an IPsec crypto map entry, that packet is dropped"."""
    a, b, _ = manual_pair("esp-aes esp-sha-hmac")
    rb = Router(b)
    clear = [udp("10.1.0.5", "10.2.0.7", 80, 1), udp("10.9.0.5", "10.2.0.7", 80, 2),
             udp("10.1.0.5", "10.5.0.7", 80, 3)]
    res = rb.inbound(IF, PacketBatch.from_list(clear))
    assert res.verdict.tolist() == [Verdict.DROP, Verdict.BYPASS, Verdict.BYPASS]
    assert res.reason.tolist() == [Status.UNPROTECTED, 0, 0]
    assert res.packets.lengths.tolist()[0] == 0
    assert res.packets.to_list()[1:] == clear[1:]
    assert res.summary() == {"packets": 3, "bypass": 2, "protect": 0, "drop": 1,
                             "drops": {"unprotected": 1}}
    assert "unprotected 1" in rb.show("crypto ipsec sa")


def test_packet_altered_in_flight_is_dropped_and_counted() -> None:
    a, b, _ = manual_pair("esp-aes esp-sha-hmac")
    ra, rb = Router(a), Router(b)
    out = ra.outbound(IF, PacketBatch.from_list(
        [udp("10.1.0.5", "10.2.0.7", 200, i) for i in range(3)]))
    wires = out.packets.to_list()
    bad = bytearray(wires[1])
    bad[60] ^= 0x01
    res = rb.inbound(IF, PacketBatch.from_list([wires[0], bytes(bad), wires[2]]))
    assert res.verdict.tolist() == [Verdict.PROTECT, Verdict.DROP, Verdict.PROTECT]
    assert res.reason.tolist() == [0, Status.ICV_MISMATCH, 0]
    (pair,) = list(rb.sad)
    assert pair.recv_errors == {"icv-mismatch": 1}
    text = rb.show("crypto ipsec sa")
    assert "#send errors 0, #recv errors 1" in text
    assert "#recv errors by reason: icv-mismatch 1" in text


def test_unknown_spi_is_dropped() -> None:
    a, b, keys = manual_pair("esp-aes esp-sha-hmac")
    ra, rb = Router(a), Router(b)
    wire = bytearray(ra.outbound(IF, PacketBatch.from_list([udp("10.1.0.5", "10.2.0.7")]))
                     .packets[0])
    wire[20:24] = (0xDEAD).to_bytes(4, "big")
    res = rb.inbound(IF, PacketBatch.from_list([bytes(wire)]))
    assert res.reason.tolist() == [Status.UNKNOWN_SPI]
    assert res.sa.tolist() == [-1]


def test_manual_entry_uses_only_the_first_permit() -> None:
    """The seed: "Access lists for crypto map entries tagged as ipsec-manual are restricted
    to a single permit entry and subsequent entries are ignored"."""
    a, _, _ = manual_pair("esp-aes esp-sha-hmac", entries=[(
        "deny ip host 10.1.0.9 any\naccess-list 101 permit ip 10.1.0.0 0.0.255.255 "
        "10.2.0.0 0.0.255.255\naccess-list 101 permit ip 10.1.0.0 0.0.255.255 10.3.0.0 "
        "0.0.255.255",
        "permit ip 10.2.0.0 0.0.255.255 10.1.0.0 0.0.255.255")])
    ra = Router(a)
    pkts = [udp("10.1.0.5", "10.2.0.7"), udp("10.1.0.5", "10.3.0.7"),
            udp("10.1.0.9", "10.2.0.7")]
    res = ra.outbound(IF, PacketBatch.from_list(pkts))
    assert res.verdict.tolist() == [Verdict.PROTECT, Verdict.BYPASS, Verdict.BYPASS]


POLICY = """
crypto ipsec transform-set T esp-aes esp-sha-hmac
crypto map M 10 ipsec-isakmp
 set peer 192.0.2.2
 set transform-set T
 match address 101
crypto map M 20 ipsec-manual
 set peer 192.0.2.3
 set transform-set T
 set session-key inbound esp 300 cipher {k16} authenticator {k20}
 set session-key outbound esp 301 cipher {k16} authenticator {k20}
 match address 102
crypto map M 30 ipsec-isakmp
 set peer 192.0.2.4
 set transform-set T
 match address 103
interface GigabitEthernet0/0
 ip address 192.0.2.1 255.255.255.0
 crypto map M
access-list 101 deny ip 10.1.1.0 0.0.0.255 any
access-list 101 permit tcp 10.1.0.0 0.0.255.255 10.2.0.0 0.0.255.255 eq 80
access-list 101 permit udp 10.1.0.0 0.0.255.255 eq 53 10.2.0.0 0.0.255.255
access-list 102 deny udp any any eq 9
access-list 102 permit ip 10.1.0.0 0.0.255.255 10.2.0.0 0.0.255.255
access-list 102 permit ip any any
access-list 103 permit ip 10.0.0.0 0.255.255.255 10.2.0.0 0.0.255.255
"""


def test_policy_matches_the_reference_matcher() -> None:
    """Verdicts and entries against ``acl.first_permit`` over the entries' lists (manual
    lists cut after their first permit), outbound and mirrored inbound."""
    cfg = parse_config(POLICY.format(k16="00" * 16, k20="11" * 20))
    router = Router(cfg)
    acls = [cfg.access_lists["101"], manual_acl(cfg.access_lists["102"]),
            cfg.access_lists["103"]]
    rng = np.random.default_rng(7)
    from scapy.layers.inet import TCP, UDP

    pkts = []
    for i in range(400):
        src = f"10.{rng.choice([1, 2, 3])}.{rng.choice([0, 1, 2])}.{rng.integers(1, 9)}"
        dst = f"10.{rng.choice([1, 2, 3])}.{rng.choice([0, 1])}.{rng.integers(1, 9)}"
        sport, dport = (int(x) for x in rng.choice([9, 53, 80, 1234], size=2))
        l4 = TCP(sport=sport, dport=dport) if i % 2 else UDP(sport=sport, dport=dport)
        pkts.append(bytes(IP(src=src, dst=dst, id=i) / l4))
    batch = PacketBatch.from_list(pkts)
    out = router.outbound(IF, batch)
    inb = router.inbound(IF, batch)
    f = batch.ipv4_fields()
    for i in range(len(pkts)):
        fields = PacketFields(int(f.proto[i]), int(f.src[i]), int(f.dst[i]), int(f.sport[i]),
                              int(f.dport[i]))
        li, _ = first_permit(acls, fields)
        if li < 0:
            assert out.verdict[i] == Verdict.BYPASS
        elif li == 1:  # the manual entry has its SA
            assert out.verdict[i] == Verdict.PROTECT and out.entry[i] == 1
        else:  # ipsec-isakmp without a negotiator: no SA yet
            assert (out.verdict[i], out.reason[i], out.entry[i]) == (
                Verdict.DROP, Status.NO_SA, li)
        mi, _ = first_permit(acls, fields, mirror=True)
        if mi < 0:
            assert inb.verdict[i] == Verdict.BYPASS
        else:
            assert (inb.verdict[i], inb.reason[i], inb.entry[i]) == (
                Verdict.DROP, Status.UNPROTECTED, mi)
    # one ACQUIRE per flow (entry, ACE), not per packet
    flows = {(r.entry, r.flow.ace) for r in router.acquires}
    assert len(flows) == len(router.acquires)
    assert {e for e, _ in flows} <= {0, 2}


def test_non_ipv4_bypasses_and_malformed_ipv4_drops() -> None:
    a, _, _ = manual_pair("esp-aes esp-sha-hmac")
    ra = Router(a)
    v6 = bytes([0x60]) + bytes(39)
    short = udp("10.1.0.5", "10.2.0.7")[:12]
    res = ra.outbound(IF, PacketBatch.from_list([v6, short]))
    assert res.verdict.tolist() == [Verdict.BYPASS, Verdict.DROP]
    assert res.reason[1] in (Status.TRUNCATED, Status.BAD_IP_HEADER)
    assert res.packets[0] == v6


def test_router_header_fields_match_ipv4_fields() -> None:
    """The router's one-gather header reader agrees with ``PacketBatch.ipv4_fields``."""
    from scapy.layers.inet import TCP, UDP, IPOption_Router_Alert

    from ipsecfast.router import _header

    rng = np.random.default_rng(3)
    pkts = []
    for i in range(300):
        opts = [IPOption_Router_Alert()] if i % 7 == 0 else []
        l4 = [UDP(sport=i, dport=500), TCP(sport=4500, dport=i), Raw_(i)][i % 3]
        p = bytes(IP(src=f"10.0.{i % 256}.1", dst="192.0.2.9", tos=i % 256, options=opts,
                     frag=(i % 11 == 0) * 5, flags=(i % 13 == 0)) / l4)
        cut = int(rng.integers(0, len(p) + 1)) if i % 5 == 0 else len(p)
        pkts.append(p[:cut])
    batch = PacketBatch.from_list(pkts)
    ref = batch.ipv4_fields()
    got = _header(batch)
    v = ref.valid
    assert got.valid.tolist() == v.tolist()
    for name in ("ihl", "tos", "proto", "src", "dst", "frag_offset"):
        assert getattr(got, name)[v].tolist() == getattr(ref, name)[v].tolist(), name
    ported = v & np.isin(ref.proto, (6, 17)) & (ref.frag_offset == 0) & (
        batch.lengths >= ref.ihl + 4)
    for name in ("sport", "dport"):
        assert getattr(got, name)[ported].tolist() == getattr(ref, name)[ported].tolist()
    assert got.mf[v].tolist() == (ref.flags[v] & 1).tolist()


def Raw_(i: int) -> object:  # noqa: N802 - a scapy-style layer factory
    from scapy.packet import Raw

    return Raw(bytes([i % 256]) * (i % 9))


def _set_outer_ce(wire: bytes) -> bytes:
    """Mark the outer header Congestion Experienced (RFC 3168), checksum fixed."""
    h = bytearray(wire)
    h[1] |= 3
    h[10:12] = b"\0\0"
    acc = sum(int.from_bytes(h[i:i + 2], "big") for i in range(0, 20, 2))
    while acc >> 16:
        acc = (acc & 0xFFFF) + (acc >> 16)
    h[10:12] = (~acc & 0xFFFF).to_bytes(2, "big")
    return bytes(h)


@pytest.mark.parametrize("spec", ["esp-aes esp-sha-hmac", "ah-sha-hmac"])
def test_tunnel_traffic_of_a_transport_set_decapsulates_like_the_core(spec: str) -> None:
    """With ``mode transport`` the router decides tunnel vs transport per packet after
    decryption (next header 4); its tunnel path must equal the core's tunnel mode:
    inner header checks and RFC 6040 ECN (CE over ECT -> CE, CE over Not-ECT -> drop)."""
    outs = {}
    for mode in ("tunnel", "transport"):
        a, b, _ = manual_pair(spec, mode, seed="ecn")
        ra, rb = Router(a), Router(b)
        pkts = [udp("10.1.0.5", "10.2.0.7", 90, 1, tos=0x02),
                udp("10.1.0.5", "10.2.0.7", 90, 2, tos=0x00),
                udp("10.1.0.5", "10.2.0.7", 90, 3, tos=0x01)]
        wires = ra.outbound(IF, PacketBatch.from_list(pkts)).packets.to_list()
        if spec.startswith("esp"):  # the outer header is not covered by ESP
            wires = [_set_outer_ce(w) for w in wires]
        res = rb.inbound(IF, PacketBatch.from_list(wires))
        outs[mode] = (res.verdict.tolist(), res.reason.tolist(), res.packets.to_list())
    assert outs["tunnel"] == outs["transport"]
    if spec.startswith("esp"):
        verdict, reason, got = outs["transport"]
        assert reason == [0, Status.ECN_DROP, 0]
        for p in (got[0], got[2]):
            assert p[1] & 3 == 3
            fixed = IP(p)
            del fixed.chksum
            assert bytes(fixed) == p, "inner header checksum updated"
