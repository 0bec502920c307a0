"""ipsecfast.config: the seed's configurations, every command good and bad (line numbers and
caret columns), the load-time semantic checks, and parse(render(c)) == c."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ipsecfast
from ipsecfast.config import (
    Config,
    canonical_interface_name,
    parse_config,
)
from ipsecfast.exceptions import ConfigError
from ipsecfast.transform import parse_transforms

CONFIGS = Path(__file__).resolve().parent / "configs"
EXAMPLES = sorted(CONFIGS.glob("*.cfg"))


def load(name: str) -> Config:
    return parse_config((CONFIGS / name).read_text(), source=name)


def roundtrip(c: Config) -> None:
    text = c.render()
    again = parse_config(text)
    assert again == c, text
    assert again.render() == text


# ---------------------------------------------------------------------------------------
# The seed's examples


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_parse_and_render_back(path: Path) -> None:
    roundtrip(parse_config(path.read_text(), source=path.name))


def test_public_name() -> None:
    assert ipsecfast.parse_config is parse_config
    assert ipsecfast.Config is Config


def test_seed_aes_static_map() -> None:
    c = load("seed_aes_static_map.cfg")
    policy = c.isakmp_policies[10]
    assert (policy.encryption, policy.key_bits) == ("aes", 256)
    assert policy.authentication == "pre-share" and policy.lifetime == 180
    # Not configured: IOS defaults.
    assert (policy.hash, policy.group) == ("sha", 1)
    [key] = c.isakmp_keys
    assert (key.key, key.address, key.mask) == ("cisco123", "10.0.110.1", None)
    assert "cisco123" not in repr(key)
    ts = c.transform_sets["aasset"]
    assert ts.mode == "transport"
    assert ts.transforms.render() == "esp-aes 256 esp-sha-hmac"
    entry = c.crypto_maps["aesmap"].entries[10]
    assert entry.kind == "ipsec-isakmp" and entry.lineno == 11
    assert entry.peers == ["10.0.110.1"]
    assert entry.transform_sets == ["aasset"]
    assert entry.match_address == "120"
    fa = c.interfaces["FastEthernet0/0/1"]
    assert (fa.address, fa.mask, fa.crypto_map) == ("10.0.110.2", "255.255.255.0", "aesmap")
    assert [u.text for u in fa.extra] == [
        "ip nat outside", "no ip route-cache", "no ip mroute-cache", "duplex auto", "speed auto"]
    serial = c.interfaces["Serial0/0"]
    assert serial.shutdown and serial.address is None
    assert c.interfaces["FastEthernet0/1/1"].crypto_map is None
    assert [a.render() for a in c.access_lists["120"].entries] == [
        "permit ip 10.0.110.0 0.0.0.255 10.0.110.0 0.0.0.255"]
    assert len(c.access_lists["110"].entries) == 2
    unparsed = {u.text: u.lineno for u in c.unparsed}
    assert unparsed["voice call carrier capacity active"] == 18
    assert unparsed["ip route 0.0.0.0 0.0.0.0 10.5.1.1"] == 47
    assert c.interfaces_using("aesmap") == [fa]
    assert c.local_address("aesmap", "FastEthernet0/0/1") == "10.0.110.2"
    assert c.lifetime(entry) == (3600, 4_608_000)


def test_seed_examples_overlapping_and_deny_permit() -> None:
    c = load("seed_overlapping_networks.cfg")
    assert [e.seq for e in c.crypto_maps["mymap"].ordered()] == [10, 20]
    assert c.crypto_maps["mymap"].entries[20].peers == ["192.168.1.2"]
    # The transform set "test" is not defined in the seed's snippet: allowed at load.
    assert "test" not in c.transform_sets
    d = load("seed_deny_permit.cfg")
    assert [a.action for a in d.access_lists["101"].entries] == ["deny", "permit"]


def test_seed_manual_sa_steps() -> None:
    c = load("seed_manual_sa.cfg")
    e = c.crypto_maps["mymap"].entries[10]
    assert e.is_manual and e.peers == ["10.0.0.5"] and e.transform_sets == ["someset"]
    ah_in = e.session_key("inbound", "ah")
    assert ah_in is not None and ah_in.spi == 256
    assert ah_in.authenticator == bytes.fromhex("98765432109876549876543210987654")
    esp_out = e.session_key("outbound", "esp")
    assert esp_out is not None and esp_out.cipher == bytes.fromhex("abcdefabcdefabcd")
    assert esp_out.authenticator is None
    assert "abcdef" not in repr(e)
    assert c.crypto_maps["mymap"].local_address == "Loopback0"
    assert c.interfaces["FastEthernet0/0"].crypto_map == "mymap"


def test_seed_dynamic_map() -> None:
    c = load("seed_dynamic_map.cfg")
    d = c.dynamic_maps["test-map"].entries[1]
    assert d.template and d.transform_sets == ["aasset"] and d.match_address == "101"
    assert d.lifetime_seconds == 7200 and d.pfs == "group2"
    ref = c.crypto_maps["static-map"].entries[1]
    assert ref.kind == "dynamic" and ref.dynamic_map == "test-map"
    assert c.effective_entries("static-map") == [d]


# ---------------------------------------------------------------------------------------
# Layout: indentation, `!`, exit / end, sub-modes


def test_indentation_is_optional() -> None:
    text = (CONFIGS / "seed_aes_static_map.cfg").read_text()
    flat = "\n".join(line.strip() for line in text.splitlines())
    deep = "\n".join("    " + line for line in text.splitlines())
    assert parse_config(flat) == parse_config(text) == parse_config(deep)


def test_submode_ends_at_next_global_command() -> None:
    c = parse_config(
        "crypto map m 10 ipsec-isakmp\n"
        "set peer 10.0.0.1\n"
        "crypto ipsec transform-set t esp-aes esp-sha-hmac\n"
        "mode transport\n"
        "interface Gi0/0\n"
        "crypto map m\n"
        "ip address 10.0.0.2 255.255.255.0\n"
        "ip route 0.0.0.0 0.0.0.0 10.0.0.1\n"
    )
    assert c.crypto_maps["m"].entries[10].peers == ["10.0.0.1"]
    assert c.transform_sets["t"].mode == "transport"
    gi = c.interfaces["GigabitEthernet0/0"]
    assert gi.crypto_map == "m" and gi.address == "10.0.0.2"
    assert [u.text for u in c.unparsed] == ["ip route 0.0.0.0 0.0.0.0 10.0.0.1"]


def test_bang_ends_unindented_submode_and_exit_end_are_accepted() -> None:
    c = parse_config(
        "interface Fa0/0\n"
        " description outside\n"
        "!\n"
        "duplex auto\n"  # after `!`, unindented: a global (unknown) command
        "crypto map m 10 ipsec-isakmp\n"
        " set peer 10.0.0.1\n"
        "exit\n"
        "set peer 10.0.0.2\n"  # after exit: not in the crypto map any more
        "end\n"
    )
    fa = c.interfaces["FastEthernet0/0"]
    assert fa.description == "outside" and fa.extra == []
    assert c.crypto_maps["m"].entries[10].peers == ["10.0.0.1"]
    assert [u.text for u in c.unparsed] == ["duplex auto", "set peer 10.0.0.2"]


def test_unknown_blocks_keep_their_lines() -> None:
    text = "router ospf 1\n network 10.0.0.0 0.255.255.255 area 0\n!\nhostname r1\n"
    c = parse_config(text)
    assert [(u.text, u.indent, u.lineno) for u in c.unparsed] == [
        ("router ospf 1", False, 1), ("network 10.0.0.0 0.255.255.255 area 0", True, 2),
        ("hostname r1", False, 4)]
    roundtrip(c)


def test_standard_access_lists_are_kept_unparsed() -> None:
    c = parse_config("access-list 10 permit 10.0.0.0 0.255.255.255\n"
                     "ip access-list standard mgmt\n permit 10.1.1.1\n")
    assert c.access_lists == {}
    assert [u.text for u in c.unparsed] == [
        "access-list 10 permit 10.0.0.0 0.255.255.255", "ip access-list standard mgmt",
        "permit 10.1.1.1"]


def test_access_lists_numbered_named_and_no() -> None:
    c = parse_config(
        "access-list 101 permit tcp host 10.0.0.1 any eq www\n"
        "access-list 101 deny ip any any\n"
        "ip access-list extended vpn-tunnel\n"
        " permit ip 10.0.68.0 0.0.0.255 10.1.1.0 0.0.0.255\n"
        " 5 remark first\n"
        "ip access-list extended 101\n"
        " 15 permit udp any any eq isakmp\n"
        "access-list 102 permit ip any any\n"
        "no access-list 102\n"
    )
    assert [a.seq for a in c.access_lists["101"].entries] == [10, 15, 20]
    assert c.access_lists["vpn-tunnel"].kind == "named"
    assert [a.action for a in c.access_lists["vpn-tunnel"].entries] == ["remark", "permit"]
    assert "102" not in c.access_lists
    roundtrip(c)


# ---------------------------------------------------------------------------------------
# Interfaces


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("Fa0/0/1", "FastEthernet0/0/1"),
        ("fastethernet 0/0/1", "FastEthernet0/0/1"),
        ("FastEthernet0/0/1", "FastEthernet0/0/1"),
        ("Gi0/1", "GigabitEthernet0/1"),
        ("gig 0/1.100", "GigabitEthernet0/1.100"),
        ("Te1/0/1", "TenGigabitEthernet1/0/1"),
        ("Se0/0/0:0", "Serial0/0/0:0"),
        ("s0/0", "Serial0/0"),
        ("Lo0", "Loopback0"),
        ("loopback0", "Loopback0"),
        ("Tu10", "Tunnel10"),
        ("Eth0", "Ethernet0"),
        ("e0", "Ethernet0"),
        ("Po1", "Port-channel1"),
        ("Vl10", "Vlan10"),
        ("Virtual-Template1", "Virtual-Template1"),
        ("Wlan-GigabitEthernet0", "Wlan-GigabitEthernet0"),
    ],
)
def test_interface_names(text: str, canonical: str) -> None:
    assert canonical_interface_name(text) == canonical


@pytest.mark.parametrize("text", ["0/0", "Fa", "Fa0//1", "Fa0/a"])
def test_interface_names_bad(text: str) -> None:
    assert canonical_interface_name(text) is None


def test_interface_commands() -> None:
    c = parse_config(
        "interface Serial 0/0\n"
        " description  to the ISP  \n"
        " ip address 192.0.2.1 255.255.255.252\n"
        " crypto map first\n"
        " crypto map second\n"  # IOS: one crypto map set per interface, replaced
        " shutdown\n"
        " no shutdown\n"
        " bandwidth 2000\n"
        "interface Se0/0\n"  # same interface, abbreviated
        " no ip address\n"
        "interface Loopback0\n"
        " ip address 10.255.0.1 255.255.255.255\n"
        " crypto map x\n"
        " no crypto map\n"
    )
    se = c.interfaces["Serial0/0"]
    assert se.description == "to the ISP"
    assert se.crypto_map == "second" and not se.shutdown and se.address is None
    assert [u.text for u in se.extra] == ["bandwidth 2000"]
    assert c.interfaces["Loopback0"].crypto_map is None
    roundtrip(c)


# ---------------------------------------------------------------------------------------
# Every command: good input


GOOD = """\
crypto isakmp policy 1
 encryption 3des
 hash md5
 authentication rsa-encr
 group 2
 lifetime 600
crypto isakmp policy 2
 encryption aes
crypto isakmp policy 3
 encryption aes 192
 hash sha512
 group 24
crypto isakmp key k1 address 10.0.0.1
crypto isakmp key 0 k2 address 10.1.0.0 255.255.0.0
crypto isakmp key k3 address 10.0.0.1 no-xauth
crypto ipsec security-association lifetime seconds 7200
crypto ipsec security-association lifetime kilobytes 86400
crypto ipsec security-association replay window-size 1024
crypto ipsec transform-set t1 ah-sha256-hmac esp-gcm 128
 mode tunnel
crypto ipsec transform-set t2 esp-null esp-sha512-hmac
 mode
crypto ipsec transform-set t3 esp-gmac 256
crypto ipsec transform-set t4 ah-md5-hmac esp-3des esp-md5-hmac
crypto ipsec transform-set t5 esp-aes 192 esp-sha384-hmac
 mode transport
crypto dynamic-map dyn 10
 set transform-set t1 t2
 match address 150
 set peer 10.9.9.9
 set security-association lifetime kilobytes 10000
 set pfs
crypto map m local-address Lo0
crypto map m 10 ipsec-isakmp
 description  Head office   link
 set peer 10.0.0.1
 set peer peer-b.example.com
 set peer 10.0.0.1
 set peer 10.0.0.3 default
 set transform-set t1 t2 t3 t4 t5 t3x
 set security-association lifetime seconds 120
 set security-association lifetime kilobytes 2560
 set security-association level per-host
 set pfs group14
 match address vpn
 reverse-route static
crypto map m 20 ipsec-manual
 set peer 10.0.0.5
 set transform-set t4
 set session-key inbound ah 300 00112233445566778899aabbccddeeff
 set session-key outbound ah 301 00112233445566778899AABBCCDDEEFF
 set session-key inbound esp 400 cipher 000102030405060708090a0b0c0d0e0f1011121314151617 authenticator 000102030405060708090a0b0c0d0e0f
 set session-key outbound esp 4294967295 cipher 000102030405060708090a0b0c0d0e0f1011121314151617 authenticator 000102030405060708090a0b0c0d0e0f
 match address 151
crypto map m 30 ipsec-manual
 set peer 10.0.0.6
 set transform-set t2
 set session-key inbound esp 500 authenticator """ + "ab" * 64 + """
 set session-key outbound esp 501 authenticator """ + "cd" * 64 + """
crypto map m 40 ipsec-manual
 set peer 10.0.0.7
 set transform-set t3
 set session-key inbound esp 600 cipher """ + "11" * 36 + """
crypto map m 50 ipsec-isakmp dynamic dyn
crypto map m 10
 set pfs group5
interface Loopback0
 ip address 10.255.0.1 255.255.255.255
access-list 150 permit ip 10.0.0.0 0.0.0.255 any
access-list 151 permit ip host 10.0.0.10 host 10.0.1.10
ip access-list extended vpn
 permit ip 10.0.0.0 0.255.255.255 10.1.0.0 0.0.255.255
"""


def test_every_command_good() -> None:
    c = parse_config(GOOD)
    p1, p2, p3 = (c.isakmp_policies[i] for i in (1, 2, 3))
    assert (p1.encryption, p1.hash, p1.authentication, p1.group, p1.lifetime) == (
        "3des", "md5", "rsa-encr", 2, 600)
    assert p2.parameters() == ("aes", 128, "sha", "rsa-sig", 1)
    assert p3.parameters() == ("aes", 192, "sha512", "rsa-sig", 24)
    keys = {(k.address, k.mask): k.key for k in c.isakmp_keys}
    assert keys == {("10.0.0.1", None): "k3", ("10.1.0.0", "255.255.0.0"): "k2"}
    assert c.isakmp_keys[0].covers("10.1.2.3") and not c.isakmp_keys[0].covers("10.2.0.1")
    g = c.ipsec
    assert (g.lifetime_seconds, g.lifetime_kilobytes, g.replay_window) == (7200, 86400, 1024)
    assert g.effective_replay_window == 1024
    assert c.transform_sets["t2"].mode == "tunnel"
    assert c.transform_sets["t5"].mode == "transport"
    assert c.transform_sets["t1"].transforms.has_ah
    dyn = c.dynamic_maps["dyn"].entries[10]
    assert dyn.pfs == "group1"  # the seed: no group given -> group1
    assert dyn.peers == ["10.9.9.9"] and dyn.lifetime_kilobytes == 10000
    m = c.crypto_maps["m"]
    assert m.local_address == "Loopback0"
    e10 = m.entries[10]
    assert e10.description == "Head office   link"
    assert e10.peers == ["10.0.0.1", "peer-b.example.com", "10.0.0.3"]
    assert e10.transform_sets == ["t1", "t2", "t3", "t4", "t5", "t3x"]
    assert (e10.lifetime_seconds, e10.lifetime_kilobytes, e10.per_host) == (120, 2560, True)
    assert e10.pfs == "group5"  # `crypto map m 10` re-entered the entry
    assert [u.text for u in e10.extra] == ["reverse-route static"]
    assert c.lifetime(e10) == (120, 2560)
    assert c.lifetime(dyn) == (7200, 10000)
    k = m.entries[20].session_key("outbound", "ah")
    assert k is not None and k.authenticator == bytes.fromhex("00112233445566778899aabbccddeeff")
    assert m.entries[20].session_key("outbound", "esp").spi == 4294967295  # type: ignore[union-attr]
    k30 = m.entries[30].session_key("inbound", "esp")
    assert k30 is not None and k30.cipher is None and len(k30.authenticator or b"") == 64
    assert c.effective_entries("m") == [e10, m.entries[20], m.entries[30], m.entries[40], dyn]
    assert c.local_address("m", "Serial0/0") == "10.255.0.1"
    roundtrip(c)


def test_replay_disable_and_defaults() -> None:
    c = parse_config("crypto ipsec security-association replay disable\n")
    assert c.ipsec.effective_replay_window == 0
    assert Config().ipsec.effective_lifetime_seconds == 3600
    assert Config().ipsec.effective_lifetime_kilobytes == 4_608_000
    assert Config().ipsec.effective_replay_window == 64
    roundtrip(c)


def test_unknown_crypto_commands_are_kept() -> None:
    c = parse_config("crypto isakmp keepalive 10\ncrypto ipsec df-bit clear\n"
                     "crypto ipsec security-association idle-time 600\n"
                     "crypto isakmp key k hostname peer.example.com\n")
    assert len(c.unparsed) == 4
    roundtrip(c)


# ---------------------------------------------------------------------------------------
# Every command: bad input -> line number, caret column, reason


def caret(line: str, token: str | None) -> int | None:
    return None if token is None else (line + "\n").index(token)


PREFIX = "crypto map m 10 ipsec-isakmp\n"  # line 1; the bad line is line 2 unless said

BAD = [
    # (config text, bad line number, token the caret must point at (None: no caret), reason)
    ("crypto ipsec transform-set t esp-foo esp-sha-hmac\n", 1, "esp-foo", "unknown transform"),
    ("crypto ipsec transform-set t esp-aes 512\n", 1, "512", "key size"),
    ("crypto ipsec transform-set t esp-gcm esp-sha-hmac\n", 1, "esp-sha-hmac", "own integrity"),
    ("crypto ipsec transform-set t esp-aes esp-des\n", 1, "esp-des", "at most one ESP cipher"),
    ("crypto ipsec transform-set t esp-null\n", 1, "esp-null", "authenticator"),
    ("crypto ipsec transform-set t\n", 1, None, "Incomplete"),
    ("crypto ipsec transform-set t esp-aes\n mode tunel\n", 2, "tunel", "tunnel or transport"),
    ("crypto ipsec security-association lifetime seconds 60\n", 1, "60", "120-86400"),
    ("crypto ipsec security-association lifetime kilobytes 100\n", 1, "100", "kilobytes"),
    ("crypto ipsec security-association lifetime hours 1\n", 1, "hours", "seconds or kilobytes"),
    ("crypto ipsec security-association replay window-size 100\n", 1, "100", "window size"),
    ("crypto ipsec security-association replay disable now\n", 1, "now", "end of the line"),
    ("crypto isakmp policy 0\n", 1, "0", "policy priority"),
    ("crypto isakmp policy 10\n encryption blowfish\n", 2, "blowfish", "encryption"),
    ("crypto isakmp policy 10\n encryption aes 512\n", 2, "512", "AES key size"),
    ("crypto isakmp policy 10\n encryption des 56\n", 2, "56", "end of the line"),
    ("crypto isakmp policy 10\n hash sha1\n", 2, "sha1", "hash"),
    ("crypto isakmp policy 10\n authentication psk\n", 2, "psk", "authentication"),
    ("crypto isakmp policy 10\n group 3\n", 2, "3", "Diffie-Hellman group"),
    ("crypto isakmp policy 10\n lifetime 10\n", 2, "10", "lifetime"),
    ("crypto isakmp key k address 10.0.0.300\n", 1, "10.0.0.300", "peer address"),
    ("crypto isakmp key k addr 10.0.0.1\n", 1, "addr", "address or hostname"),
    ("crypto isakmp key k address 10.0.0.0 255.0.255.0\n", 1, "255.0.255.0", "contiguous"),
    ("crypto isakmp key k\n", 1, None, "Incomplete"),
    ("crypto map m 0 ipsec-isakmp\n", 1, "0", "sequence number"),
    ("crypto map m 10 ipsec-isakmpp\n", 1, "ipsec-isakmpp", "ipsec-manual"),
    ("crypto map m 10 ipsec-isakmp dynamic\n", 1, None, "Incomplete"),
    ("crypto map m 10 ipsec-isakmp dynamic d extra\n", 1, "extra", "end of the line"),
    ("crypto map m 10 ipsec-isakmp\ncrypto map m 10 ipsec-manual\n", 2, "ipsec-manual",
     "already exists"),
    ("crypto map m local-address 0/1\n", 1, "0/1", "interface"),
    ("crypto map m 10 ipsec-isakmp dynamic d\n set peer 10.0.0.1\n", 2, "set",
     "no sub-commands"),
    ("crypto dynamic-map d x\n", 1, "x", "sequence number"),
    ("crypto dynamic-map d 10\n set session-key inbound ah 300 00\n", 2, "session-key",
     "ipsec-manual"),
    (PREFIX + " match address\n", 2, None, "Incomplete"),
    (PREFIX + " match address 101 102\n", 2, "102", "end of the line"),
    (PREFIX + " set peer 10.0.0.256\n", 2, "10.0.0.256", "peer address"),
    (PREFIX + " set peer 10.0.0.1 backup\n", 2, "backup", "end of the line"),
    (PREFIX + " set peer bad_name!\n", 2, "bad_name!", "peer address or host name"),
    (PREFIX + " set transform-set a b c d e f g\n", 2, "g", "at most 6"),
    (PREFIX + " set transform-set a b a\n", 2, "a\n", "listed twice"),
    (PREFIX + " set security-association lifetime seconds 100000\n", 2, "100000", "seconds"),
    (PREFIX + " set security-association lifetime days 1\n", 2, "days", "seconds or kilobytes"),
    (PREFIX + " set security-association level per-flow\n", 2, "per-flow", "per-host"),
    (PREFIX + " set pfs group3\n", 2, "group3", "DH group"),
    (PREFIX + " set session-key inbound esp 300 cipher 00\n", 2, "session-key", "ipsec-manual"),
    ("crypto map m 10 ipsec-manual\n set peer 10.0.0.1\n set peer 10.0.0.2\n", 3, "10.0.0.2",
     "one peer"),
    ("crypto map m 10 ipsec-manual\n set transform-set a b\n", 2, "b", "one transform set"),
    ("crypto map m 10 ipsec-manual\n set session-key both esp 300 cipher 00\n", 2, "both",
     "inbound or outbound"),
    ("crypto map m 10 ipsec-manual\n set session-key inbound gre 300 00\n", 2, "gre",
     "ah or esp"),
    ("crypto map m 10 ipsec-manual\n set session-key inbound ah 255 00\n", 2, "255", "SPI"),
    ("crypto map m 10 ipsec-manual\n set session-key inbound ah 300 0g\n", 2, "0g", "hex"),
    ("crypto map m 10 ipsec-manual\n set session-key inbound ah 300 abc\n", 2, "abc", "hex"),
    ("crypto map m 10 ipsec-manual\n set session-key inbound ah 300 00 11\n", 2, "11",
     "end of the line"),
    ("crypto map m 10 ipsec-manual\n set session-key inbound esp 300 key 00\n", 2, "key 00",
     "cipher or authenticator"),
    ("crypto map m 10 ipsec-manual\n set session-key inbound esp 300 cipher 00 auth 11\n", 2,
     "auth ", "authenticator"),
    ("interface\n", 1, None, "Incomplete"),
    ("interface 0/1\n", 1, "0/1", "interface type"),
    ("interface Fa0/0\n ip address 10.0.0.1 255.255.0.255\n", 2, "255.255.0.255", "contiguous"),
    # `crypto map a b` is not an interface command, so IOS reads it as a global one
    ("interface Fa0/0\n ip address 10.0.0.1 255.255.255.0\n crypto map a b\n", 3, "b",
     "sequence number"),
    ("interface Fa0/0\n ip address 10.0.0.300 255.255.255.0\n", 2, "10.0.0.300", "IP address"),
    ("ip access-list extended\n", 1, None, "Incomplete"),
    ("ip access-list extended 50\n", 1, "50", "100-199"),
    ("ip access-list extended a b\n", 1, "b", "end of the line"),
    # acl.py's own errors keep their line and caret inside a full configuration
    ("!\naccess-list 101 permit ipp any any\n", 2, "ipp", "protocol"),
    ("hostname r\nip access-list extended v\n permit ip any host 10.0.0.256\n", 3, "10.0.0.256",
     ""),
]


@pytest.mark.parametrize(("text", "lineno", "token", "reason"), BAD,
                         ids=[f"{i}:{b[0].splitlines()[b[1] - 1].strip()}"
                              for i, b in enumerate(BAD)])
def test_every_command_bad(text: str, lineno: int, token: str | None, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="r1.cfg")
    err = info.value
    line = text.splitlines()[lineno - 1]
    assert err.lineno == lineno
    assert err.line == line
    assert err.column == caret(line, token)
    assert reason in err.message
    assert str(err).startswith(f"r1.cfg:{lineno}: ")
    if token is not None:
        # the caret sits under the token in the printed message
        printed, mark = str(err).splitlines()[:2]
        assert printed[mark.index("^"):].startswith(token.strip())


# ---------------------------------------------------------------------------------------
# Semantic checks at load time

MANUAL = """\
crypto ipsec transform-set {ts}
crypto map m 10 ipsec-manual
 set peer 10.0.0.2
 set transform-set s
 {key}
 match address 101
access-list 101 permit ip host 10.0.0.1 host 10.0.0.2
"""


@pytest.mark.parametrize(
    ("ts", "key", "ok"),
    [
        ("s esp-aes 256 esp-sha-hmac", f"set session-key inbound esp 300 cipher {'a' * 64} "
                                       f"authenticator {'b' * 40}", True),
        ("s esp-aes 256 esp-sha-hmac", f"set session-key inbound esp 300 cipher {'a' * 32} "
                                       f"authenticator {'b' * 40}", "32-byte cipher key"),
        ("s esp-aes 256 esp-sha-hmac", f"set session-key inbound esp 300 cipher {'a' * 64} "
                                       f"authenticator {'b' * 32}", "20-byte authenticator"),
        ("s esp-aes 256 esp-sha-hmac", f"set session-key inbound esp 300 cipher {'a' * 64}",
         "add authenticator"),
        ("s esp-aes esp-sha-hmac", f"set session-key inbound esp 300 authenticator {'b' * 40}",
         "add cipher"),
        # GCM / GMAC: the cipher key string is key || 4-byte salt (DESIGN.md §Transforms)
        ("s esp-gcm 256", f"set session-key inbound esp 300 cipher {'a' * 72}", True),
        ("s esp-gcm 256", f"set session-key inbound esp 300 cipher {'a' * 64}",
         "36-byte cipher key (32-byte key followed by the 4-byte salt)"),
        ("s esp-gcm", f"set session-key inbound esp 300 cipher {'a' * 40}", True),
        ("s esp-gmac 192", f"set session-key inbound esp 300 cipher {'a' * 56}", True),
        ("s esp-gcm", f"set session-key inbound esp 300 cipher {'a' * 40} authenticator 00",
         "no ESP authenticator"),
        ("s esp-null esp-md5-hmac", f"set session-key outbound esp 300 authenticator {'c' * 32}",
         True),
        ("s esp-null esp-md5-hmac", f"set session-key outbound esp 300 cipher {'a' * 16} "
                                    f"authenticator {'c' * 32}", "esp-null"),
        ("s esp-3des", f"set session-key outbound esp 300 cipher {'a' * 48}", True),
        ("s esp-des", f"set session-key outbound esp 300 cipher {'a' * 14}", "8-byte"),
        ("s ah-sha256-hmac", f"set session-key inbound ah 300 {'d' * 64}", True),
        ("s ah-sha256-hmac", f"set session-key inbound ah 300 {'d' * 40}", "32-byte AH key"),
        ("s ah-sha-hmac", f"set session-key inbound esp 300 cipher {'a' * 32}", "no ESP"),
        ("s esp-aes", f"set session-key inbound ah 300 {'d' * 40}", "no AH"),
    ],
)
def test_session_key_lengths(ts: str, key: str, ok: bool | str) -> None:
    text = MANUAL.format(ts=ts, key=key)
    if ok is True:
        roundtrip(parse_config(text))
        return
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    err = info.value
    assert err.lineno == 5 and err.line == " " + key
    assert str(ok) in err.message
    assert "aaaa" not in str(err).replace(key, "")  # the key is only in the echoed line


def test_session_key_column_points_at_the_bad_key() -> None:
    key = f"set session-key inbound esp 300 cipher {'a' * 64} authenticator {'b' * 30}"
    with pytest.raises(ConfigError) as info:
        parse_config(MANUAL.format(ts="s esp-aes 256 esp-sha-hmac", key=key))
    assert info.value.column == (" " + key).index("b" * 30)


def test_session_keys_checked_whatever_the_order() -> None:
    # transform set defined after the crypto map, as a hand-written file may do
    text = MANUAL.format(ts="s esp-des", key=f"set session-key inbound esp 300 cipher {'a' * 32}")
    lines = text.splitlines()
    with pytest.raises(ConfigError, match="8-byte"):
        parse_config("\n".join(lines[1:] + lines[:1]))


def test_undefined_transform_set_skips_key_check() -> None:
    text = MANUAL.format(ts="other esp-des", key="set session-key inbound esp 300 cipher 00")
    assert parse_config(text).crypto_maps["m"].entries[10].transform_sets == ["s"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [(" set transform-set s\n", "exactly one peer"), (" set peer 10.0.0.2\n", "exactly one "
                                                                             "transform set")],
)
def test_manual_needs_one_peer_and_one_transform_set(body: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("crypto ipsec transform-set s esp-des\n!\ncrypto map m 10 ipsec-manual\n"
                     + body + " match address 101\n")
    assert info.value.lineno == 3 and reason in info.value.message
    assert info.value.line == "crypto map m 10 ipsec-manual"


def test_discontiguous_wildcard_only_in_crypto_acls() -> None:
    acl = "access-list 101 permit ip 10.0.0.0 0.255.0.255 any\n"
    assert "101" in parse_config(acl).access_lists  # not used by a crypto map: fine
    with pytest.raises(ConfigError) as info:
        parse_config("crypto map m 10 ipsec-isakmp\n match address 101\n" + acl)
    assert info.value.lineno == 3 and "discontiguous" in info.value.message
    assert info.value.column == acl.index("0.255.0.255")
    with pytest.raises(ConfigError, match="discontiguous"):
        parse_config("crypto dynamic-map d 1\n match address 101\n" + acl)


def test_undefined_references_are_allowed() -> None:
    c = parse_config("crypto map m 10 ipsec-isakmp\n match address nope\n set transform-set x\n"
                     "crypto map m 20 ipsec-isakmp dynamic none\n"
                     "interface Fa0/0\n crypto map other\n")
    assert c.effective_entries("m") == [c.crypto_maps["m"].entries[10]]
    assert c.effective_entries("other") == []
    roundtrip(c)


def test_secrets_masked_and_not_in_repr() -> None:
    c = load("site_a.cfg")
    masked = c.render(mask_secrets=True)
    assert "s3cr3t" not in masked and "000102030405" not in masked
    assert "<removed>" in masked
    assert "s3cr3t" not in repr(c) and "000102030405" not in repr(c)
    assert "s3cr3t-ab" in c.render()


# ---------------------------------------------------------------------------------------
# parse(render(c)) == c over generated configurations

_TS = ["esp-aes 256 esp-sha-hmac", "esp-gcm 256", "ah-sha-hmac esp-aes esp-sha256-hmac",
       "esp-3des esp-md5-hmac", "esp-null esp-sha-hmac", "ah-md5-hmac", "esp-gmac",
       "esp-des", "esp-aes 192 esp-sha512-hmac"]
_NAMES = st.sampled_from(["a", "vpn", "MAP-1", "x_2", "Site.B"])
_IP = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
_IFNAMES = ["FastEthernet0/0/1", "Fa0/1", "gi0/0", "Serial0/0/0:1", "Loopback0", "Tunnel 5"]


@st.composite
def _prefix(draw: st.DrawFn) -> str:
    n = draw(st.integers(0, 32))
    if n == 0:
        return "any"
    addr = draw(_IP)
    if n == 32:
        return f"host {addr}"
    wild = (1 << (32 - n)) - 1
    return f"{addr} {'.'.join(str((wild >> s) & 255) for s in (24, 16, 8, 0))}"


@st.composite
def _ace(draw: st.DrawFn) -> str:
    action = draw(st.sampled_from(["permit", "deny"]))
    proto = draw(st.sampled_from(["ip", "tcp", "udp", "icmp", "esp", "47"]))
    src, dst = draw(_prefix()), draw(_prefix())
    port = ""
    if proto in ("tcp", "udp") and draw(st.booleans()):
        port = draw(st.sampled_from([" eq 80", " range 1000 2000", " gt 1023", " eq 53 123"]))
    return f"{action} {proto} {src} {dst}{port}"


def _hexkey(n: int) -> str:
    return ("0123456789abcdef" * 20)[: 2 * n]


@st.composite
def _config_text(draw: st.DrawFn) -> str:
    ind = draw(st.sampled_from([" ", "", "  "]))
    blocks: list[list[str]] = []
    ts_names = draw(st.lists(_NAMES, min_size=1, max_size=3, unique=True))
    ts_specs: dict[str, str] = {}
    for n in ts_names:
        ts_specs[n] = draw(st.sampled_from(_TS))
        block = [f"crypto ipsec transform-set {n} {ts_specs[n]}"]
        if draw(st.booleans()):
            block.append(f"{ind}mode {draw(st.sampled_from(['tunnel', 'transport']))}")
        blocks.append(block)
    acl_names = draw(st.lists(st.sampled_from(["101", "150", "2000", "vpn", "Tunnel-ACL"]),
                              max_size=3, unique=True))
    for n in acl_names:
        aces = draw(st.lists(_ace(), min_size=1, max_size=4))
        if n.isdigit() and draw(st.booleans()):
            blocks.append([f"access-list {n} {a}" for a in aces])
        else:
            blocks.append([f"ip access-list extended {n}"] + [f"{ind}{a}" for a in aces])
    maps = draw(st.lists(_NAMES, max_size=2, unique=True))
    for m in maps:
        for seq in draw(st.lists(st.integers(1, 65535), min_size=1, max_size=3, unique=True)):
            kind = draw(st.sampled_from(["ipsec-isakmp", "ipsec-manual", "dynamic"]))
            if kind == "dynamic":
                blocks.append([f"crypto map {m} {seq} ipsec-isakmp dynamic "
                               f"{draw(_NAMES)}"])
                continue
            block = [f"crypto map {m} {seq} {kind}"]
            if acl_names and draw(st.booleans()):
                block.append(f"{ind}match address {draw(st.sampled_from(acl_names))}")
            if kind == "ipsec-manual":
                ts = draw(st.sampled_from(ts_names))
                block += [f"{ind}set peer {draw(_IP)}", f"{ind}set transform-set {ts}"]
                t = parse_transforms(ts_specs[ts])
                for d in draw(st.lists(st.sampled_from(["inbound", "outbound"]), unique=True)):
                    spi = draw(st.integers(256, 2**32 - 1))
                    if t.has_ah:
                        block.append(f"{ind}set session-key {d} ah {spi} "
                                     f"{_hexkey(t.ah_key_length)}")
                    if t.has_esp:
                        words = [f"set session-key {d} esp {spi}"]
                        if t.cipher_key_length:
                            words.append(f"cipher {_hexkey(t.cipher_key_length)}")
                        if t.auth_key_length:
                            words.append(f"authenticator {_hexkey(t.auth_key_length)}")
                        block.append(ind + " ".join(words))
            else:
                block += [f"{ind}set peer {p}" for p in draw(st.lists(_IP, max_size=3))]
                sets = draw(st.lists(st.sampled_from(ts_names), max_size=3, unique=True))
                if sets:
                    block.append(f"{ind}set transform-set {' '.join(sets)}")
                if draw(st.booleans()):
                    block.append(f"{ind}set pfs {draw(st.sampled_from(['group2', 'group14']))}")
                if draw(st.booleans()):
                    block.append(f"{ind}set security-association lifetime seconds "
                                 f"{draw(st.integers(120, 86400))}")
                if draw(st.booleans()):
                    block.append(f"{ind}set security-association level per-host")
            if draw(st.booleans()):
                block.append(f"{ind}description {draw(st.sampled_from(['x', 'to  HQ']))}")
            blocks.append(block)
        if draw(st.booleans()):
            blocks.append([f"crypto map {m} local-address {draw(st.sampled_from(_IFNAMES))}"])
    for d in draw(st.lists(_NAMES, max_size=2, unique=True)):
        block = [f"crypto dynamic-map {d} {draw(st.integers(1, 100))}",
                 f"{ind}set transform-set {draw(st.sampled_from(ts_names))}"]
        if acl_names and draw(st.booleans()):
            block.append(f"{ind}match address {draw(st.sampled_from(acl_names))}")
        blocks.append(block)
    for name in draw(st.lists(st.sampled_from(_IFNAMES), max_size=3)):
        block = [f"interface {name}"]
        if draw(st.booleans()):
            block.append(f"{ind}ip address {draw(_IP)} 255.255.255.0")
        if maps and draw(st.booleans()):
            block.append(f"{ind}crypto map {draw(st.sampled_from(maps))}")
        if draw(st.booleans()):
            block.append(f"{ind}duplex auto")
        if draw(st.booleans()):
            block.append(f"{ind}shutdown")
        blocks.append(block)
    for prio in draw(st.lists(st.integers(1, 10000), max_size=2, unique=True)):
        block = [f"crypto isakmp policy {prio}"]
        if draw(st.booleans()):
            block.append(f"{ind}encryption {draw(st.sampled_from(['aes', 'aes 256', '3des', 'des']))}")
        if draw(st.booleans()):
            block.append(f"{ind}hash {draw(st.sampled_from(['md5', 'sha', 'sha256']))}")
        if draw(st.booleans()):
            block.append(f"{ind}authentication pre-share")
        if draw(st.booleans()):
            block.append(f"{ind}group {draw(st.sampled_from(['1', '2', '14']))}")
        blocks.append(block)
    for _ in range(draw(st.integers(0, 2))):
        mask = draw(st.sampled_from(["", " 255.255.255.0"]))
        blocks.append([f"crypto isakmp key {draw(_NAMES)} address {draw(_IP)}{mask}"])
    if draw(st.booleans()):
        blocks.append([f"crypto ipsec security-association lifetime seconds "
                       f"{draw(st.integers(120, 86400))}"])
    if draw(st.booleans()):
        blocks.append(["router ospf 1", " network 10.0.0.0 0.255.255.255 area 0"])
    if draw(st.booleans()):
        blocks.append(["hostname r1"])
    order = draw(st.permutations(range(len(blocks))))
    return "\n".join("\n".join(blocks[i]) + "\n!" for i in order) + "\n"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_config_text())
def test_parse_render_roundtrip(text: str) -> None:
    try:
        c = parse_config(text)
    except ConfigError as err:
        # the only load-time errors a generated config can have: crypto ACL rules
        assert "discontiguous" in err.message or "Duplicate" in err.message, (err, text)
        return
    roundtrip(c)


# ---------------------------------------------------------------------------------------
# `no` forms (typed configurations; running-config never holds them)


def test_no_commands_undo() -> None:
    c = parse_config(
        "crypto isakmp policy 10\n encryption aes 256\n hash md5\n no encryption\n"
        "crypto isakmp policy 20\n"
        "no crypto isakmp policy 20\n"
        "crypto isakmp key k1 address 10.0.0.1\ncrypto isakmp key k2 address 10.0.0.2\n"
        "no crypto isakmp key k1 address 10.0.0.1\n"
        "crypto ipsec security-association lifetime seconds 900\n"
        "crypto ipsec security-association replay disable\n"
        "no crypto ipsec security-association lifetime seconds\n"
        "no crypto ipsec security-association replay disable\n"
        "crypto ipsec transform-set t esp-des\n mode transport\n no mode\n"
        "crypto ipsec transform-set gone esp-des\n"
        "no crypto ipsec transform-set gone\n"
        "crypto map m 10 ipsec-isakmp\n set peer 10.0.0.1\n set peer 10.0.0.2\n"
        " no set peer 10.0.0.1\n set pfs\n no set pfs\n match address 101\n"
        " no match address 101\n set security-association level per-host\n"
        " no set security-association level per-host\n description x\n no description\n"
        " set security-association lifetime seconds 300\n"
        " no set security-association lifetime seconds\n"
        " set transform-set t\n no set transform-set\n"
        "crypto map m 20 ipsec-isakmp\n"
        "crypto map m local-address Lo0\n"
        "no crypto map m local-address\n"
        "no crypto map m 20\n"
        "crypto map gone 10 ipsec-isakmp\nno crypto map gone\n"
        "crypto dynamic-map d 10\ncrypto dynamic-map d 20\nno crypto dynamic-map d 10\n"
        "interface Tu0\nno interface Tunnel0\n"
        "crypto map man 10 ipsec-manual\n set peer 10.0.0.9\n set transform-set t\n"
        " set session-key inbound esp 300 cipher 0011223344556677\n"
        " no set session-key inbound esp\n"
    )
    p = c.isakmp_policies[10]
    assert (p.encryption, p.key_bits, p.hash) == ("des", None, "md5")
    assert list(c.isakmp_policies) == [10]
    assert [k.key for k in c.isakmp_keys] == ["k2"]
    assert c.ipsec == ipsecfast.config.IpsecGlobals()
    assert c.transform_sets["t"].mode == "tunnel" and "gone" not in c.transform_sets
    e = c.crypto_maps["m"].entries[10]
    assert e.peers == ["10.0.0.2"]
    assert (e.pfs, e.match_address, e.per_host, e.description) == (None, None, False, None)
    assert (e.lifetime_seconds, e.transform_sets) == (None, [])
    assert list(c.crypto_maps["m"].entries) == [10]
    assert c.crypto_maps["m"].local_address is None and "gone" not in c.crypto_maps
    assert list(c.dynamic_maps["d"].entries) == [20]
    assert c.interfaces == {}
    assert c.crypto_maps["man"].entries[10].session_keys == {}
    assert c.unparsed == []


def test_remote_access_and_encrypted_key_lines_are_kept() -> None:
    c = parse_config("crypto map vpn client authentication list userlist\n"
                     "crypto map vpn isakmp authorization list grouplist\n"
                     "crypto isakmp key 6 FLgBaJHXdYY_AcHZZMgQ_RhTDJXHUBAAB address 10.0.0.1\n")
    assert len(c.unparsed) == 3 and c.crypto_maps == {} and c.isakmp_keys == []
    with pytest.raises(ConfigError, match="gdoi crypto map entries are not supported"):
        parse_config("crypto map g 10 gdoi\n")


def test_unknown_indented_crypto_command_stays_in_its_interface() -> None:
    c = parse_config("interface Fa0/0\n ip address 10.0.0.1 255.255.255.0\n"
                     " crypto ipsec client ezvpn hw-client\n crypto map vpn\n"
                     "crypto isakmp keepalive 10\n")
    fa = c.interfaces["FastEthernet0/0"]
    assert [u.text for u in fa.extra] == ["crypto ipsec client ezvpn hw-client"]
    assert fa.crypto_map == "vpn"
    assert [u.text for u in c.unparsed] == ["crypto isakmp keepalive 10"]
    roundtrip(c)


# ---------------------------------------------------------------------------------------
# Any text: a Config or a ConfigError, never another exception (and check never raises)

_WORDS = ["crypto", "map", "m", "10", "ipsec-isakmp", "ipsec-manual", "dynamic", "d",
          "dynamic-map", "set", "peer", "10.0.0.1", "transform-set", "t", "esp-aes", "256",
          "esp-sha-hmac", "mode", "transport", "match", "address", "101", "access-list",
          "permit", "deny", "ip", "any", "host", "interface", "Fa0/0", "no", "shutdown",
          "session-key", "inbound", "outbound", "esp", "ah", "300", "cipher", "authenticator",
          "0011223344556677", "isakmp", "policy", "key", "encryption", "aes", "group", "2",
          "lifetime", "seconds", "security-association", "replay", "window-size", "64", "!",
          "exit", "end", "local-address", "pfs", "level", "per-host", "description", "ip",
          "access-lists", "extended", "remark", "255.255.255.0", "0.0.0.255", "x$%"]


_STARTS = ["crypto map m 10", "crypto map m 20 ipsec-manual", "crypto map m 30 ipsec-isakmp",
           "crypto dynamic-map d 10", "crypto ipsec transform-set t", "crypto isakmp policy 1",
           "crypto isakmp key k address", "crypto ipsec security-association", "set peer",
           "set transform-set", "set session-key", "set security-association", "match address",
           "mode", "interface Fa0/0", "crypto map", "ip address", "access-list 101",
           "ip access-list extended v", "no", "permit ip", "encryption", "hash", "group", ""]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.sampled_from(_STARTS),
                          st.lists(st.sampled_from(_WORDS), max_size=5)), max_size=12))
def test_any_text_loads_or_raises_config_error(lines: list[tuple[bool, str, list[str]]]) -> None:
    from ipsecfast.check import check_config
    from ipsecfast.show import show

    text = "\n".join((" " if ind else "") + " ".join([start, *ws]).strip() or "!"
                     for ind, start, ws in lines)
    try:
        c = parse_config(text)
    except ConfigError as err:
        assert err.lineno is not None and 1 <= err.lineno <= len(lines)
        return
    check_config(c)
    for command in ("crypto map", "crypto dynamic-map", "crypto ipsec transform-set",
                    "crypto isakmp policy", "access-lists", "running-config"):
        show(c, command)
    roundtrip(c)
