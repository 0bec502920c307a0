"""ipsecfast.show: the fields an IOS user reads in each show command, for a config."""

from __future__ import annotations

from pathlib import Path

import pytest

from ipsecfast.config import Config, parse_config
from ipsecfast.show import UnknownCommand, show

CONFIGS = Path(__file__).resolve().parent / "configs"


def load(name: str) -> Config:
    return parse_config((CONFIGS / name).read_text(), source=name)


def lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()]


def block(text: str, header: str) -> list[str]:
    """The lines of one `Crypto Map "x" N` block (up to the blank line after it)."""
    out = lines(text)
    start = out.index(header)
    end = out.index("", start) if "" in out[start:] else len(out)
    return out[start:end]


def test_show_crypto_map_seed_aes() -> None:
    out = show(load("seed_aes_static_map.cfg"), "show crypto map")
    b = block(out, 'Crypto Map "aesmap" 10 ipsec-isakmp')
    assert "Peer = 10.0.110.1" in b
    i = b.index("Extended IP access list 120")
    assert b[i + 1] == "access-list 120 permit ip 10.0.110.0 0.0.0.255 10.0.110.0 0.0.0.255"
    assert "Current peer: 10.0.110.1" in b
    assert "Security association lifetime: 4608000 kilobytes/3600 seconds" in b
    assert "PFS (Y/N): N" in b
    j = b.index("Transform sets={")
    assert b[j + 1] == "aasset:  { esp-256-aes esp-sha-hmac  } ,"
    assert b[-2:] == ["Interfaces using crypto map aesmap:", "FastEthernet0/0/1"]


def test_show_crypto_map_filters() -> None:
    c = load("seed_aes_static_map.cfg")
    full = show(c, "show crypto map")
    assert show(c, "show crypto map interface FastEthernet0/0/1") == full
    assert show(c, "show crypto map interface fa0/0/1") == full
    assert show(c, "show crypto map interface Fa 0/0/1") == full
    assert show(c, "show crypto map tag aesmap") == full
    assert show(c, "show crypto map interface Serial0/0") == ""
    assert show(c, "show crypto map tag nosuch") == ""
    two = parse_config("crypto map a 10 ipsec-isakmp\ncrypto map b 10 ipsec-isakmp\n")
    assert 'Crypto Map "b"' not in show(two, "crypto map tag a")
    assert 'Crypto Map "a"' in show(two, "crypto map tag a")


def test_show_crypto_map_lifetimes_pfs_per_host_and_live_peer() -> None:
    c = parse_config(
        "crypto ipsec security-association lifetime kilobytes 100000\n"
        "crypto ipsec security-association lifetime seconds 1800\n"
        "crypto ipsec transform-set t ah-sha-hmac esp-aes 192 esp-sha-hmac\n"
        "crypto map m 10 ipsec-isakmp\n"
        " description to HQ\n"
        " set peer 10.0.0.1\n set peer 10.0.0.2\n"
        " set security-association lifetime seconds 900\n"
        " set security-association level per-host\n"
        " set pfs group14\n set transform-set t missing\n"
        "crypto map m 20 ipsec-isakmp\n"
    )
    out = show(c, "crypto map")
    b = block(out, 'Crypto Map "m" 10 ipsec-isakmp')
    assert "Description: to HQ" in b
    assert ["Peer = 10.0.0.1", "Peer = 10.0.0.2"] == [x for x in b if x.startswith("Peer")]
    assert "Current peer: 10.0.0.1" in b
    assert "Security association lifetime: 100000 kilobytes/900 seconds" in b
    assert "Security association level: per-host" in b
    assert "PFS (Y/N): Y" in b and "DH group:  group14" in b
    assert "t:  { ah-sha-hmac  } { esp-192-aes esp-sha-hmac  } ," in b
    assert "missing:  { (not defined)  } ," in b
    assert "No matching address list set." in b
    assert b[-1] == "Interfaces using crypto map m:"  # applied nowhere
    b20 = block(out, 'Crypto Map "m" 20 ipsec-isakmp')
    assert "Security association lifetime: 100000 kilobytes/1800 seconds" in b20
    # the router's hook: the peer it currently uses
    live = show(c, "crypto map", current_peers={("m", 10): "10.0.0.2"})
    assert "Current peer: 10.0.0.2" in block(live, 'Crypto Map "m" 10 ipsec-isakmp')


def test_show_crypto_map_manual_keys_are_never_shown() -> None:
    c = load("site_a.cfg")
    out = show(c, "show crypto map")
    b = block(out, 'Crypto Map "vpn" 10 ipsec-manual')
    assert "Inbound esp spi: 2001," in b and "Outbound esp spi: 2002," in b
    assert "Inbound ah spi: 1001," in b and "Outbound ah spi: 1002," in b
    assert "cipher key: <removed>," in b and "auth key: <removed>," in b
    assert "Security association lifetime" not in " ".join(b)  # manual SAs have none
    e = c.crypto_maps["vpn"].entries[10]
    secrets = [k.hex() for key in e.session_keys.values()
               for k in (key.cipher, key.authenticator) if k]
    for command in ("crypto map", "running-config", "crypto ipsec transform-set",
                    "access-lists", "crypto dynamic-map", "crypto isakmp policy"):
        text = show(c, command)
        assert not any(s in text for s in secrets), command
        assert "s3cr3t-ab" not in text, command


def test_show_crypto_map_local_address_and_dynamic_reference() -> None:
    c = parse_config(
        "crypto map m local-address Loopback0\n"
        "crypto map m 10 ipsec-isakmp dynamic d\n"
        "interface Lo0\n ip address 10.255.0.1 255.255.255.255\n"
        "interface Gi0/0\n crypto map m\ninterface Gi0/1\n crypto map m\n"
    )
    out = show(c, "crypto map")
    assert lines(out)[0] == 'Crypto Map "m" idb: Loopback0 local address: 10.255.0.1'
    b = block(out, 'Crypto Map "m" 10 ipsec-isakmp')
    assert "Dynamic map template tag: d" in b
    assert b[-2:] == ["GigabitEthernet0/0", "GigabitEthernet0/1"]


def test_show_crypto_dynamic_map() -> None:
    c = load("seed_dynamic_map.cfg")
    out = show(c, "show crypto dynamic-map")
    b = block(out, 'Crypto Map Template"test-map" 1')
    assert "Extended IP access list 101" in b
    assert "access-list 101 permit ip 10.0.68.0 0.0.0.255 10.1.1.0 0.0.0.255" in b
    assert "Security association lifetime: 4608000 kilobytes/7200 seconds" in b
    assert "PFS (Y/N): Y" in b and "DH group:  group2" in b
    assert "aasset:  { esp-256-aes esp-sha-hmac  } ," in b
    assert show(c, "show crypto dynamic-map tag test-map") == out
    assert show(c, "show crypto dynamic-map tag other") == ""


def test_show_crypto_ipsec_transform_set() -> None:
    c = parse_config(
        "crypto ipsec transform-set aasset esp-aes 256 esp-sha-hmac\n mode transport\n"
        "crypto ipsec transform-set both ah-md5-hmac esp-3des esp-md5-hmac\n"
        "crypto ipsec transform-set g esp-gcm 256\n"
    )
    out = lines(show(c, "show crypto ipsec transform-set"))
    i = out.index("Transform set aasset: { esp-256-aes esp-sha-hmac  }")
    assert out[i + 1] == "will negotiate = { Transport,  },"
    j = out.index("Transform set both: { ah-md5-hmac  } { esp-3des esp-md5-hmac  }")
    assert out[j + 1] == "will negotiate = { Tunnel,  },"
    assert "Transform set g: { esp-gcm 256  }" in out
    tagged = lines(show(c, "show crypto ipsec transform-set tag g"))
    assert [x for x in tagged if x.startswith("Transform set")] == [
        "Transform set g: { esp-gcm 256  }"]


def test_show_access_lists_with_hit_counts() -> None:
    c = load("seed_aes_static_map.cfg")
    c.access_lists["110"].count(20, 7)  # the router updates these in place
    out = show(c, "show access-lists")
    assert lines(out) == [
        "Extended IP access list 110",
        "10 deny ip 10.0.110.0 0.0.0.255 10.0.110.0 0.0.0.255",
        "20 permit ip 10.0.110.0 0.0.0.255 any (7 matches)",
        "Extended IP access list 120",
        "10 permit ip 10.0.110.0 0.0.0.255 10.0.110.0 0.0.0.255",
    ]
    assert lines(show(c, "show access-lists 120"))[0] == "Extended IP access list 120"
    assert "access list 110" not in show(c, "show access-lists 120")
    assert show(c, "show ip access-lists 110") == show(c, "show access-lists 110")
    assert show(c, "show access-lists 199") == ""


def test_show_isakmp_policy() -> None:
    out = show(load("seed_aes_static_map.cfg"), "show crypto isakmp policy")
    b = lines(out)
    i = b.index("Protection suite of priority 10")
    assert b[i + 1] == "encryption algorithm:\tAES - Advanced Encryption Standard (256 bit keys)."
    assert b[i + 3] == "authentication method:\tPre-Shared Key"
    assert b[i + 4] == "Diffie-Hellman group:\t#1 (768 bit)"
    assert b[i + 5] == "lifetime:\t\t180 seconds, no volume limit"
    assert "Default protection suite" in b


def test_show_running_config() -> None:
    c = load("seed_dynamic_map.cfg")
    out = show(c, "show running-config")
    assert out.startswith("Building configuration...\n\nCurrent configuration : ")
    assert out.endswith("\nend\n")
    body = out.split("\n", 3)[3]
    assert f"Current configuration : {len(body)} bytes" in out
    assert parse_config(body) == c  # no secrets here, so the output loads back
    masked = show(load("seed_aes_static_map.cfg"), "running-config")
    assert "crypto isakmp key <removed> address 10.0.110.1" in masked
    assert "cisco123" not in masked


@pytest.mark.parametrize(
    "command", ["sh cry map", "show crypto map", "crypto map", "SHOW CRYPTO MAP", "sh c m"])
def test_abbreviations(command: str) -> None:
    c = load("seed_aes_static_map.cfg")
    assert show(c, command) == show(c, "show crypto map")


@pytest.mark.parametrize(
    ("command", "column", "reason"),
    [
        ("show crypto mop", 12, "unknown command 'mop'"),
        ("show crypto i", 12, "ambiguous command 'i'"),
        ("show crypto", None, "Incomplete"),
        ("show crypto map tag", 16, "interface I | tag M"),
        ("show crypto map interface 0/1", 26, "interface name"),
        ("show access-lists 101 102", 22, "end of the command"),
        ("show running-config all", 20, "end of the command"),
        ("show version", 5, "unknown command 'version'"),
        ("show crypto dynamic-map x", 24, "tag"),
    ],
)
def test_unknown_commands(command: str, column: int | None, reason: str) -> None:
    with pytest.raises(UnknownCommand) as info:
        show(load("seed_aes_static_map.cfg"), command)
    assert info.value.column == column
    assert reason in info.value.message
    if column is not None:
        assert str(info.value).splitlines()[1] == " " * column + "^"


def test_show_sa_lifetime() -> None:
    assert show(load("seed_aes_static_map.cfg"), "show crypto ipsec security-association "
                "lifetime") == "Security association lifetime: 4608000 kilobytes/3600 seconds\n"
    c = parse_config("crypto ipsec security-association lifetime seconds 900\n")
    assert show(c, "sh cry ipsec sec life") == (
        "Security association lifetime: 4608000 kilobytes/900 seconds\n")
