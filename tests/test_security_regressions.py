"""Regressions found in review: int64 overflow in the packet bounds checks, counter IVs
restarting under one key. Oracles: the RFCs' rules (RFC 4106 §3.1: an IV is never used
twice with one key), not the code's own output."""

from __future__ import annotations

import numpy as np
import pytest

from ipsecfast import AccessList, Classifier, PacketBatch, SecurityAssociation, Status

BIG = 2**63 - 10


def _ipv4(n: int = 40) -> bytes:
    return bytes([0x45, 0, 0, n, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]) + bytes(n - 20)


def test_packet_batch_rejects_offsets_that_wrap() -> None:
    with pytest.raises(ValueError):
        PacketBatch(np.zeros(100, np.uint8), np.array([BIG]), np.array([40]))
    with pytest.raises(ValueError):
        PacketBatch(np.zeros(100, np.uint8), np.array([0]), np.array([BIG]))


def test_core_rechecks_bounds_without_overflow() -> None:
    # A batch mutated after construction must not make the core read out of bounds.
    b = PacketBatch.from_list([_ipv4()])
    b.offsets[:] = BIG
    sa = SecurityAssociation("esp", 1, "esp-gcm 128", bytes(20), mode="transport")
    assert sa.encapsulate(b).status.tolist() == [Status.TRUNCATED]
    assert sa.decapsulate(b).status.tolist() == [Status.TRUNCATED]
    clf = Classifier([AccessList.parse("access-list 101 permit ip any any")])
    with pytest.raises(ValueError):
        clf.lookup(b)


def test_out_buffer_offsets_that_wrap_are_refused() -> None:
    sa = SecurityAssociation("esp", 1, "esp-gcm 128", bytes(20), mode="transport")
    b = PacketBatch.from_list([_ipv4()])
    out = np.zeros(1000, np.uint8)
    with pytest.raises(ValueError):
        sa._encapsulate(b, sa._mode_id, 0, out=out, out_offsets=np.array([BIG], np.int64))


@pytest.mark.parametrize("spec", ["esp-gcm 128", "esp-gmac", "esp-chacha20-poly1305",
                                  "esp-aes-ctr esp-sha-hmac", "esp-aes-ccm"])
def test_resumed_sa_never_repeats_a_counter_iv(spec: str) -> None:
    from ipsecfast.transform import parse_transforms

    t = parse_transforms(spec)
    ck = bytes(range(t.cipher_key_length))
    ak = bytes(t.auth_key_length)
    batch = PacketBatch.from_list([_ipv4()] * 20)
    seen: set[bytes] = set()
    for seq in (0, 20, 40):  # the same key resumed where the last SA stopped
        sa = SecurityAssociation("esp", 0x100, spec, ck, ak or None, mode="transport", seq=seq)
        res = sa.encapsulate(batch)
        assert res.all_ok
        ivs = [p[28:36] for p in res.packets.to_list()]
        assert not seen.intersection(ivs)
        seen.update(ivs)
    assert len(seen) == 60


def test_clear_crypto_sa_keeps_manual_counter_ivs_unique() -> None:
    # `clear crypto sa` re-establishes manual SAs with the same session keys (the seed):
    # their sequence numbers, and so their GCM IVs, continue instead of restarting.
    from test_router_kit import manual_pair, udp

    from ipsecfast.router import Router

    a_cfg, b_cfg, _ = manual_pair("esp-gcm 128")
    a, b = Router(a_cfg), Router(b_cfg)
    pkt = PacketBatch.from_list([udp("10.1.0.1", "10.2.0.1")])
    wire = [a.outbound("GigabitEthernet0/0", pkt).packets[0]]
    assert a.clear_crypto_sa() == 1
    wire.append(a.outbound("GigabitEthernet0/0", pkt).packets[0])
    seqs = [w[24:28] for w in wire]
    ivs = [w[28:36] for w in wire]
    assert seqs == [(1).to_bytes(4, "big"), (2).to_bytes(4, "big")]
    assert ivs[0] != ivs[1]
    # the peer (no anti-replay on manual SAs) still decrypts both
    back = b.inbound("GigabitEthernet0/0", PacketBatch.from_list(wire))
    assert back.packets.to_list() == [pkt[0], pkt[0]]


def test_core_sequence_state_cannot_be_rewound() -> None:
    sa = SecurityAssociation("esp", 1, "esp-gcm 128", bytes(20), mode="transport", seq=5)
    with pytest.raises(AttributeError):
        sa._core.seq = 0  # type: ignore[misc]
    with pytest.raises(AttributeError):
        sa._core.rx_top = 0  # type: ignore[misc]


def test_ipv4_fields_ignore_a_link_layer_trailer() -> None:
    # a UDP header that lies past the IPv4 total length (Ethernet padding) is not read
    pkt = bytes([0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2])
    f = PacketBatch.from_list([pkt + bytes([0, 53, 0, 80, 0, 8, 0, 0])]).ipv4_fields()
    assert f.valid[0] and f.sport[0] == 0 and f.dport[0] == 0


def test_cli_names_a_config_that_is_not_text(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from ipsecfast.cli import main

    bad = tmp_path / "bad.cfg"
    bad.write_bytes(b"crypto map m 10 ipsec-isakmp\n\xff\xfe\n")
    assert main(["check", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "not a text configuration" in err and "Traceback" not in err
