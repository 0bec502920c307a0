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
