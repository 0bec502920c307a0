"""Defects found in the issue-5 review, each with the behaviour the seed / DESIGN.md asks
for: a soft rekey is asked even when one batch crosses both kilobyte limits; expired SAs
are gone from show output; the exported keys file is never readable by others."""

from __future__ import annotations

import os
import stat

from test_router_kit import B_ADDR, udp
from test_router_sa import IF, Clock, ike_pair

from ipsecfast import PacketBatch
from ipsecfast.router import SaKeys
from ipsecfast.wireshark import write_esp_sa


def test_soft_rekey_is_asked_when_one_batch_crosses_both_kilobyte_limits() -> None:
    ra, rb, neg = ike_pair(entry=" set security-association lifetime kilobytes 2560")
    ra.negotiator = None
    ra.install_sas(0, B_ADDR, {"esp": SaKeys(0x700, bytes(16), bytes(20))},
                   {"esp": SaKeys(0x701, bytes(16), bytes(20))})
    res = ra.outbound(IF, PacketBatch.from_list(
        [udp("10.1.0.5", "10.2.0.7", 1000, i % 256) for i in range(2700)]))
    assert [r.reason for r in ra.rekey_requests] == ["kilobytes"]
    assert list(ra.sad) == []  # and the pair expired at the hard limit
    assert int((res.verdict == 2).sum()) == 2700 - 2622


def test_soft_rekey_is_asked_when_the_clock_jumps_past_both_limits() -> None:
    clock = Clock()
    ra, rb, neg = ike_pair(clock=clock)
    ra.negotiator = None
    ra.install_sas(0, B_ADDR, {"esp": SaKeys(0x700, bytes(16), bytes(20))},
                   {"esp": SaKeys(0x701, bytes(16), bytes(20))})
    clock.t += 5000  # past 3600 s and its 90 % at once
    ra.outbound(IF, PacketBatch.from_list([udp("10.1.0.5", "10.2.0.7")]))
    assert [r.reason for r in ra.rekey_requests] == ["seconds"]
    assert list(ra.sad) == []


def test_show_does_not_list_expired_sas() -> None:
    clock = Clock()
    ra, rb, neg = ike_pair(clock=clock)
    ra.install_sas(0, B_ADDR, {"esp": SaKeys(0x700, bytes(16), bytes(20))},
                   {"esp": SaKeys(0x701, bytes(16), bytes(20))})
    assert "0x701" in ra.show("crypto ipsec sa").lower()
    clock.t += 5000
    assert "0x701" not in ra.show("crypto ipsec sa").lower()
    assert list(ra.sad) == []


def test_keys_file_is_0600_even_if_it_existed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "esp_sa"
    path.write_text("old")
    os.chmod(path, 0o666)
    write_esp_sa(path, [])
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_manual_counter_mode_ivs_differ_between_runs_of_one_configuration() -> None:
    # Two Routers from the same manual GCM configuration (two runs of `ipsecfast encrypt`)
    # must not send the same IV under the same session key (RFC 4106 §3.1).
    from test_router_kit import manual_pair

    from ipsecfast.router import Router

    a_cfg, b_cfg, _ = manual_pair("esp-gcm 128")
    pkt = PacketBatch.from_list([udp("10.1.0.1", "10.2.0.1")])
    ivs = set()
    for _ in range(5):
        wire = Router(a_cfg).outbound(IF, pkt).packets[0]
        ivs.add(wire[28:36])
    assert len(ivs) == 5
    back = Router(b_cfg).inbound(IF, PacketBatch.from_list([wire]))
    assert back.packets.to_list() == pkt.to_list()


def test_duplicate_manual_inbound_spi_is_a_config_error_with_its_line() -> None:
    import pytest

    from ipsecfast import ConfigError
    from ipsecfast.config import parse_config
    from ipsecfast.router import Router

    key = "00112233445566778899aabbccddeeff"
    auth = "00112233445566778899aabbccddeeff00112233"
    text = "crypto ipsec transform-set T esp-aes esp-sha-hmac\n"
    for n, peer in ((10, "192.0.2.2"), (20, "192.0.2.3")):
        text += (f"crypto map M {n} ipsec-manual\n set peer {peer}\n set transform-set T\n"
                 f" set session-key inbound esp 300 cipher {key} authenticator {auth}\n"
                 f" set session-key outbound esp {300 + n} cipher {key} authenticator {auth}\n"
                 f" match address {100 + n}\n")
    text += ("interface GigabitEthernet0/0\n ip address 192.0.2.1 255.255.255.0\n crypto map M\n"
             "access-list 110 permit ip 10.1.0.0 0.0.255.255 10.2.0.0 0.0.255.255\n"
             "access-list 120 permit ip 10.1.0.0 0.0.255.255 10.3.0.0 0.0.255.255\n")
    with pytest.raises(ConfigError) as info:
        Router(parse_config(text))
    assert info.value.lineno == 11  # the second entry's `set session-key inbound esp 300`
    assert "300" in str(info.value)


def test_encrypt_warns_about_an_entry_a_typo_left_incomplete(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from ipsecfast import pcap
    from ipsecfast.cli import main

    cfg = tmp_path / "a.cfg"
    cfg.write_text("crypto ipsec transform-set T esp-aes esp-sha-hmac\n"
                   "crypto map M 10 ipsec-isakmp\n set peer 192.0.2.2\n set transform-set T\n"
                   " match adress 101\n"  # typo: IOS would refuse it; here the entry is incomplete
                   "interface GigabitEthernet0/0\n ip address 192.0.2.1 255.255.255.0\n"
                   " crypto map M\n"
                   "access-list 101 permit ip 10.1.0.0 0.0.255.255 10.2.0.0 0.0.255.255\n")
    src, dst = tmp_path / "in.pcap", tmp_path / "out.pcap"
    pcap.write(src, PacketBatch.from_list([udp("10.1.0.1", "10.2.0.1")]))
    assert main(["encrypt", "--config", str(cfg), "--quiet", str(src), str(dst)]) == 0
    err = capsys.readouterr().err
    assert "entry-incomplete" in err and "line 2" not in err and ":2:" in err


def test_unknown_spis_are_dropped_and_counted() -> None:
    import struct

    from test_router_kit import manual_pair

    from ipsecfast import Status
    from ipsecfast.router import Router, Verdict

    a_cfg, b_cfg, _ = manual_pair("esp-aes esp-sha-hmac")
    b = Router(b_cfg)
    good = Router(a_cfg).outbound(IF, PacketBatch.from_list([udp("10.1.0.1", "10.2.0.1")]))
    wire = good.packets[0]
    forged = [wire[:20] + struct.pack("!I", 0x10000 + i) + wire[24:] for i in range(300)]
    res = b.inbound(IF, PacketBatch.from_list([*forged, wire]))
    assert res.verdict.tolist() == [Verdict.DROP] * 300 + [Verdict.PROTECT]
    assert set(res.reason[:300].tolist()) == {Status.UNKNOWN_SPI}
    assert b.drops[IF]["recv"].get("unknown-spi") == 300
