"""The multi-SA batch call (``_encapsulate_multi`` / ``_decapsulate_multi`` over the core's
``run_multi``): packets of several SAs in one call, in input order, each with its own SA
and mode, written into one output buffer (what the router uses for a chunk).

Oracle: the single-SA path on twin SAs (same keys and state; CBC IVs fixed so that
outputs compare), one call per SA on its packets (or per packet when modes are mixed),
must give byte-identical packets, statuses, sequence numbers, counter-IV progression,
replay windows and counters. scapy decrypts a sample of the multi call's output.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_sa import LOCAL, PEER, SIZES, batch_of

from ipsecfast import _esp
from ipsecfast.packets import PacketBatch
from ipsecfast.sa import (
    MODE_IDS,
    SecurityAssociation,
    _decapsulate_multi,
    _encapsulate_multi,
)
from ipsecfast.status import Status
from ipsecfast.transform import parse_transforms

# mixed transform families: AEAD, CBC + HMAC, AH, 3DES, null + HMAC
SPECS = [
    ("esp", "esp-gcm 256"),
    ("esp", "esp-aes esp-sha-hmac"),
    ("ah", "ah-sha-hmac"),
    ("esp", "esp-3des esp-md5-hmac"),
    ("esp", "esp-null esp-sha256-hmac"),
    ("esp", "esp-aes-ctr 128 esp-sha-hmac"),
]
TUNNEL, TRANSPORT = MODE_IDS["tunnel"], MODE_IDS["transport"]


def make(k: int, protocol: str, spec: str, *, fixed_iv: bool = True, seq: int = 0,
         replay_window: int = 64) -> SecurityAssociation:
    ts = parse_transforms(spec)
    rng = np.random.default_rng(100 + k)
    if protocol == "ah":
        ck, ak = None, rng.bytes(ts.ah_key_length)
    else:
        ck = rng.bytes(ts.cipher_key_length) if ts.cipher_key_length else None
        ak = rng.bytes(ts.auth_key_length) if ts.auth_key_length else None
    iv = None
    if fixed_iv and protocol == "esp" and ts.cipher in (1, 2, 3):  # DES / 3DES / AES-CBC
        assert ts.esp_cipher is not None
        iv = bytes((k * 17 + i) & 0xFF for i in range(ts.esp_cipher.iv_length))
    return SecurityAssociation(protocol, 0x3000 + k, spec, ck, ak,  # type: ignore[arg-type]
                               local=LOCAL, peer=PEER, seq=seq, replay_window=replay_window,
                               _fixed_iv=iv)


def twins(specs: list[tuple[str, str]], **kw: object
          ) -> tuple[list[SecurityAssociation], list[SecurityAssociation]]:
    return ([make(k, p, s, **kw) for k, (p, s) in enumerate(specs)],  # type: ignore[arg-type]
            [make(k, p, s, **kw) for k, (p, s) in enumerate(specs)])  # type: ignore[arg-type]


def take(batch: PacketBatch, sel: np.ndarray) -> PacketBatch:
    return PacketBatch._trusted(batch.buffer, batch.offsets[sel], batch.lengths[sel])


def slots(lengths: np.ndarray, room: int, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Slots of length + room bytes with random gaps; the buffer (filled with 0xA5)."""
    rng = np.random.default_rng(seed)
    off = np.zeros(lengths.size, dtype=np.int64)
    pos = 3
    for i in range(lengths.size):
        off[i] = pos
        pos += int(lengths[i]) + room + int(rng.integers(0, 7))
    return off, np.full(pos + 5, 0xA5, dtype=np.uint8)


def packets(batch: PacketBatch) -> list[bytes]:
    return [bytes(batch.buffer[o:o + n]) for o, n in
            zip(batch.offsets.tolist(), batch.lengths.tolist(), strict=True)]


def state(sa: SecurityAssociation) -> tuple[object, ...]:
    core = sa._core
    return (core.seq, core.iv_next, core.ip_id, core.rx_top, core.counters())


def interleaved(n: int, nsa: int, seed: int = 11) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, nsa, n).astype(np.int32)


def damaged_batch() -> PacketBatch:
    """SIZES packets plus failures: an empty packet, a truncated header, a non-IPv4 one."""
    good = packets(batch_of(SIZES * 3))
    bad = [b"", b"\x45\x00\x00", b"\x60" + bytes(39)]
    return PacketBatch.from_list(good[:5] + bad[:1] + good[5:20] + bad[1:] + good[20:])


def encap_multi(sas: list[SecurityAssociation], idx: np.ndarray, modes: object,
                batch: PacketBatch) -> tuple[object, np.ndarray, np.ndarray]:
    off, out = slots(batch.lengths, _esp.OVERHEAD)
    res = _encapsulate_multi(sas, idx, modes, batch, out, off)  # type: ignore[arg-type]
    return res, off, out


# -- encapsulation ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["tunnel", "transport"])
def test_encap_equals_one_call_per_sa(mode: str) -> None:
    multi, single = twins(SPECS)
    batch = damaged_batch()
    idx = interleaved(len(batch), len(SPECS))
    mid = MODE_IDS[mode]  # type: ignore[index]
    res, off, out = encap_multi(multi, idx, mid, batch)
    got = packets(res.packets)  # type: ignore[attr-defined]
    status = res.status  # type: ignore[attr-defined]
    for k, sa in enumerate(single):
        sel = np.flatnonzero(idx == k)
        ref = sa._encapsulate(take(batch, sel), mid, 4)
        assert ref.status.tolist() == status[sel].tolist(), SPECS[k]
        assert packets(ref.packets) == [got[i] for i in sel], SPECS[k]
        assert state(sa) == state(multi[k]), SPECS[k]
    assert (status != 0).sum() >= 3  # the damaged packets failed ...
    for i in np.flatnonzero(status != 0).tolist():  # ... with length 0 and a zeroed slot
        assert res.packets.lengths[i] == 0  # type: ignore[attr-defined]
        room = int(batch.lengths[i]) + multi[idx[i]]._max_growth(mid)
        assert not out[off[i]:off[i] + room].any()
    for i in np.flatnonzero(status == 0).tolist():  # the slot after a packet is zeroed
        end = off[i] + res.packets.lengths[i]  # type: ignore[attr-defined]
        room = int(batch.lengths[i]) + multi[idx[i]]._max_growth(mid)
        assert not out[end:off[i] + room].any()
    # bytes between the slots are left alone
    inside = np.zeros(out.size, dtype=bool)
    for i in range(len(batch)):
        inside[off[i]:off[i] + int(batch.lengths[i]) + multi[idx[i]]._max_growth(mid)] = True
    assert (out[~inside] == 0xA5).all()


def test_encap_mixed_modes_equals_per_packet_calls() -> None:
    multi, single = twins(SPECS)
    batch = batch_of(SIZES * 4)
    n = len(batch)
    idx = interleaved(n, len(SPECS), seed=12)
    modes = np.random.default_rng(13).choice([TUNNEL, TRANSPORT], n).astype(np.uint8)
    res, _, _ = encap_multi(multi, idx, modes, batch)
    got = packets(res.packets)  # type: ignore[attr-defined]
    for i in range(n):  # oracle: the single-SA path, one packet at a time, in order
        ref = single[idx[i]]._encapsulate(take(batch, np.array([i])), int(modes[i]), 4)
        assert int(ref.status[0]) == int(res.status[i])  # type: ignore[attr-defined]
        assert packets(ref.packets)[0] == got[i]
    for a, b in zip(single, multi, strict=True):
        assert state(a) == state(b)


def test_sequence_numbers_follow_input_order_per_sa() -> None:
    multi, _ = twins([("esp", "esp-gcm 128"), ("ah", "ah-sha-hmac")], seq=41)
    batch = batch_of([64] * 12)
    idx = np.array([0, 1, 1, 0, 0, 1, 0, 1, 1, 1, 0, 0], dtype=np.int32)
    res, _, _ = encap_multi(multi, idx, TUNNEL, batch)
    got = packets(res.packets)  # type: ignore[attr-defined]
    for k in (0, 1):
        sel = np.flatnonzero(idx == k)
        spi_seq = [(int.from_bytes(got[i][20:24], "big"), int.from_bytes(got[i][24:28], "big"))
                   if k == 0 else
                   (int.from_bytes(got[i][24:28], "big"), int.from_bytes(got[i][28:32], "big"))
                   for i in sel]
        assert spi_seq == [(0x3000 + k, 42 + j) for j in range(sel.size)]
        assert multi[k].seq == 41 + sel.size
    # counter IVs follow the sequence number (the IV of seq s is s - 1)
    gcm = [got[i] for i in np.flatnonzero(idx == 0)]
    assert [int.from_bytes(p[28:36], "big") for p in gcm] == list(range(41, 41 + len(gcm)))
    assert multi[0]._core.iv_next == 41 + len(gcm)


def test_random_cbc_ivs_one_per_packet_and_decryptable() -> None:
    specs = [("esp", "esp-aes esp-sha-hmac"), ("esp", "esp-gcm 128"),
             ("esp", "esp-3des esp-sha-hmac")]
    tx, _ = twins(specs, fixed_iv=False)
    rx, _ = twins(specs, fixed_iv=False)
    batch = batch_of(SIZES * 3)
    idx = interleaved(len(batch), len(specs), seed=4)
    res, _, _ = encap_multi(tx, idx, TUNNEL, batch)
    assert res.all_ok  # type: ignore[attr-defined]
    wire = packets(res.packets)  # type: ignore[attr-defined]
    for k, ivlen in ((0, 16), (2, 8)):
        ivs = [w[28:28 + ivlen] for w, x in zip(wire, idx.tolist(), strict=True) if x == k]
        assert len(set(ivs)) == len(ivs)
    for k, sa in enumerate(rx):
        sel = np.flatnonzero(idx == k)
        back = sa.decapsulate(take(res.packets, sel))  # type: ignore[attr-defined]
        assert back.all_ok
        assert packets(back.packets) == packets(take(batch, sel))


def test_scapy_decrypts_a_sample() -> None:
    pytest.importorskip("scapy")
    from test_esp_scapy import Keys, scapy_decrypt, theirs

    specs = [("esp", "esp-gcm 256"), ("esp", "esp-aes esp-sha-hmac"), ("ah", "ah-sha-hmac")]
    tx, _ = twins(specs, fixed_iv=False)
    batch = batch_of([20, 64, 100, 511, 1000, 1480] * 3)
    idx = interleaved(len(batch), len(specs), seed=9)
    res, _, _ = encap_multi(tx, idx, TUNNEL, batch)
    wire = packets(res.packets)  # type: ignore[attr-defined]
    inner = packets(batch)
    for k, (protocol, spec) in enumerate(specs):
        ts = parse_transforms(spec)
        rng = np.random.default_rng(100 + k)  # make()'s keys
        if protocol == "ah":
            keys = Keys(None, rng.bytes(ts.ah_key_length))
        else:
            ck = rng.bytes(ts.cipher_key_length) if ts.cipher_key_length else None
            keys = Keys(ck, rng.bytes(ts.auth_key_length) if ts.auth_key_length else None)
        ssa = theirs(spec, keys, "tunnel", 0x3000 + k)
        for i in np.flatnonzero(idx == k).tolist():
            assert scapy_decrypt(ssa, wire[i], 0) == inner[i], (spec, i)


# -- decapsulation ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["tunnel", "transport"])
def test_decap_equals_one_call_per_sa(mode: str) -> None:
    tx, _ = twins(SPECS)
    multi, single = twins(SPECS)
    batch = batch_of(SIZES * 3)
    n = len(batch)
    idx = interleaved(n, len(SPECS), seed=21)
    mid = MODE_IDS[mode]  # type: ignore[index]
    enc, _, _ = encap_multi(tx, idx, mid, batch)
    wire = packets(enc.packets)  # type: ignore[attr-defined]
    # failures: a replayed packet, a flipped ICV byte, an empty packet, a truncated one
    wire[7] = wire[7][:-1] + bytes([wire[7][-1] ^ 1])
    wire += [wire[3], b"", wire[5][:30]]
    idx = np.concatenate([idx, idx[[3]], [0], idx[[5]]]).astype(np.int32)
    sealed = PacketBatch.from_list(wire)
    off, out = slots(sealed.lengths, 0)
    res, nhs = _decapsulate_multi(multi, idx, mid, sealed, out, off)
    got = packets(res.packets)
    for k, sa in enumerate(single):
        sel = np.flatnonzero(idx == k)
        ref, ref_nhs = sa._decapsulate(take(sealed, sel), mid)
        assert ref.status.tolist() == res.status[sel].tolist(), SPECS[k]
        assert packets(ref.packets) == [got[i] for i in sel], SPECS[k]
        assert ref_nhs.tolist() == nhs[sel].tolist(), SPECS[k]
        assert state(sa) == state(multi[k]), SPECS[k]
    assert Status.REPLAY in res.status.tolist()
    assert Status.ICV_MISMATCH in res.status.tolist()
    inner = packets(batch)
    assert [got[i] for i in range(n) if i != 7] == [p for i, p in enumerate(inner) if i != 7]
    for i in np.flatnonzero(res.status != 0).tolist():
        assert not out[off[i]:off[i] + int(sealed.lengths[i])].any()


# -- edges and programmer errors ------------------------------------------------------------


def test_empty_input() -> None:
    sas, _ = twins(SPECS[:2])
    empty = PacketBatch.from_list([])
    none = np.zeros(0, dtype=np.int32)
    for group in (sas, []):
        res = _encapsulate_multi(group, none, TUNNEL, empty, np.zeros(0, np.uint8),
                                 np.zeros(0, np.int64))
        assert len(res.packets) == 0 and res.status.size == 0
        dres, nhs = _decapsulate_multi(group, none, TUNNEL, empty, np.zeros(0, np.uint8),
                                       np.zeros(0, np.int64))
        assert len(dres.packets) == 0 and nhs.size == 0
    assert [sa.seq for sa in sas] == [0, 0]


def test_one_sa_equals_single_path() -> None:
    (multi,), (single,) = twins(SPECS[1:2])
    batch = batch_of(SIZES)
    res, _, _ = encap_multi([multi], np.zeros(len(batch), np.int32), TUNNEL, batch)
    ref = single.encapsulate(batch)
    assert packets(res.packets) == packets(ref.packets)  # type: ignore[attr-defined]
    assert state(multi) == state(single)


@pytest.mark.parametrize("bad", [-1, 2, 2**31 - 1])
def test_bad_sa_index_raises_before_any_c_call(bad: int) -> None:
    sas, _ = twins(SPECS[:2])
    batch = batch_of([64, 64, 64])
    idx = np.array([0, bad, 1], dtype=np.int64)
    off, out = slots(batch.lengths, _esp.OVERHEAD)
    with pytest.raises(ValueError, match="sa_index"):
        _encapsulate_multi(sas, idx, TUNNEL, batch, out, off)
    with pytest.raises(ValueError, match="sa_index"):
        _decapsulate_multi(sas, idx, TUNNEL, batch, out, off)
    assert [state(sa)[:4] for sa in sas] == [(0, 0, 0, 0)] * 2
    assert (out == 0xA5).all()
    # the core checks on its own too (memory safety without the facade)
    lens = np.zeros(3, np.int64)
    status = np.zeros(3, np.uint8)
    with pytest.raises(ValueError, match="sa_index"):
        _esp.run_multi([sa._core for sa in sas], idx.astype(np.int32),
                       np.zeros(3, np.uint8), batch.buffer, batch.offsets, batch.lengths,
                       out, off, lens, status, np.zeros(48, np.uint8), True)
    assert [sa.seq for sa in sas] == [0, 0]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("bad", [-1, 2])
def test_bad_int32_sa_index_raises_before_any_write(bad: int, threads: int,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """An int32 ``sa_index`` goes to the core unchecked by the facade: the core (or, split
    over threads, the split) rejects it before anything is written or counted."""
    import ipsecfast.sa as sa_mod

    monkeypatch.setattr(sa_mod, "PARALLEL_MIN_PACKETS", 1)
    sas, _ = twins(SPECS[:2])
    batch = batch_of([64, 64, 64])
    idx = np.array([0, bad, 1], dtype=np.int32)
    off, out = slots(batch.lengths, _esp.OVERHEAD)
    with pytest.raises(ValueError, match="sa_index"):
        _encapsulate_multi(sas, idx, TUNNEL, batch, out, off, threads=threads)
    with pytest.raises(ValueError, match="sa_index"):
        _decapsulate_multi(sas, idx, TUNNEL, batch, out, off, threads=threads)
    assert [state(sa)[:4] for sa in sas] == [(0, 0, 0, 0)] * 2
    assert (out == 0xA5).all()


def test_other_programmer_errors() -> None:
    sas, _ = twins(SPECS[:2])
    batch = batch_of([64, 64])
    idx = np.zeros(2, dtype=np.int32)
    off, out = slots(batch.lengths, _esp.OVERHEAD)
    with pytest.raises(ValueError, match="mode"):
        _encapsulate_multi(sas, idx, 2, batch, out, off)  # raw mode is not for batches
    with pytest.raises(ValueError, match="sa_index"):
        _encapsulate_multi(sas, idx[:1], TUNNEL, batch, out, off)
    with pytest.raises(ValueError, match="too small"):
        _encapsulate_multi(sas, idx, TUNNEL, batch, out[:200], off)
    with pytest.raises(TypeError):
        _encapsulate_multi([sas[0], object()], idx, TUNNEL, batch, out, off)  # type: ignore[list-item]
    sas[1].close()
    with pytest.raises(ValueError, match="closed"):
        _encapsulate_multi(sas, idx, TUNNEL, batch, out, off)
    assert sas[0].seq == 0


# -- several threads (``threads=``): each SA's packets on one thread -----------------------


@pytest.fixture
def parts_spy(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every batch goes parallel (no size floor), and the parts the core ran are recorded."""
    import ipsecfast.sa as sa_mod

    monkeypatch.setattr(sa_mod, "PARALLEL_MIN_PACKETS", 1)
    seen: list[int] = []
    real = _esp.run_multi

    def spy(*args: object, **kw: object) -> int:
        if len(args) >= 17:
            seen.append(int(args[16]))  # type: ignore[call-overload]
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(sa_mod._esp, "run_multi", spy)
    return seen


@pytest.mark.parametrize("mode", ["tunnel", "transport"])
def test_threaded_encap_equals_one_call_per_sa(mode: str, parts_spy: list[int]) -> None:
    multi, single = twins(SPECS)
    batch = damaged_batch()
    idx = interleaved(len(batch), len(SPECS))
    mid = MODE_IDS[mode]  # type: ignore[index]
    off, out = slots(batch.lengths, _esp.OVERHEAD)
    res = _encapsulate_multi(multi, idx, mid, batch, out, off, threads=3)
    assert sorted(parts_spy) == [0, 1, 2]  # it did run in three parts
    got = packets(res.packets)
    for k, sa in enumerate(single):
        sel = np.flatnonzero(idx == k)
        ref = sa._encapsulate(take(batch, sel), mid, 4)
        assert ref.status.tolist() == res.status[sel].tolist(), SPECS[k]
        assert packets(ref.packets) == [got[i] for i in sel], SPECS[k]
        assert state(sa) == state(multi[k]), SPECS[k]


def test_threaded_random_cbc_ivs_fresh_and_decryptable(parts_spy: list[int]) -> None:
    specs = [("esp", "esp-aes esp-sha-hmac"), ("esp", "esp-3des esp-md5-hmac"),
             ("esp", "esp-gcm 256")]
    tx, rx = twins(specs, fixed_iv=False)
    batch = batch_of([20, 64, 100, 511, 1000, 1480] * 20)
    idx = interleaved(len(batch), len(specs), seed=4)
    off, out = slots(batch.lengths, _esp.OVERHEAD)
    res = _encapsulate_multi(tx, idx, TUNNEL, batch, out, off, threads=2)
    assert sorted(parts_spy) == [0, 1]
    assert res.all_ok
    wire = packets(res.packets)
    # the CBC IV follows the 8-byte ESP header (+ 20-byte outer IPv4 header)
    cbc = [i for i in range(len(wire)) if idx[i] in (0, 1)]
    ivs = {wire[i][28:36] for i in cbc}
    assert len(ivs) == len(cbc)  # one fresh IV per packet, none zero or repeated
    for k, sa in enumerate(rx):
        sel = np.flatnonzero(idx == k)
        back, _ = sa._decapsulate(take(res.packets, sel), TUNNEL)
        assert back.all_ok, specs[k]
        assert packets(back.packets) == [packets(batch)[i] for i in sel], specs[k]


def test_threaded_decap_equals_one_call_per_sa(parts_spy: list[int]) -> None:
    tx, _ = twins(SPECS)
    multi, single = twins(SPECS)
    batch = batch_of(SIZES * 3)
    idx = interleaved(len(batch), len(SPECS), seed=21)
    enc, _, _ = encap_multi(tx, idx, TUNNEL, batch)
    wire = packets(enc.packets)  # type: ignore[attr-defined]
    wire[7] = wire[7][:-1] + bytes([wire[7][-1] ^ 1])  # a flipped ICV byte
    wire += [wire[3], b"", wire[5][:30]]  # a replay, an empty and a truncated packet
    idx = np.concatenate([idx, idx[[3]], [0], idx[[5]]]).astype(np.int32)
    sealed = PacketBatch.from_list(wire)
    off, out = slots(sealed.lengths, 0)
    res, nhs = _decapsulate_multi(multi, idx, TUNNEL, sealed, out, off, threads=4)
    assert len(parts_spy) >= 2 and 0 in parts_spy
    got = packets(res.packets)
    for k, sa in enumerate(single):
        sel = np.flatnonzero(idx == k)
        ref, ref_nhs = sa._decapsulate(take(sealed, sel), TUNNEL)
        assert ref.status.tolist() == res.status[sel].tolist(), SPECS[k]
        assert packets(ref.packets) == [got[i] for i in sel], SPECS[k]
        assert ref_nhs.tolist() == nhs[sel].tolist(), SPECS[k]
        assert state(sa) == state(multi[k]), SPECS[k]
    assert Status.REPLAY in res.status.tolist()


def test_threaded_split_needs_two_sas_with_work() -> None:
    from ipsecfast.sa import _sa_parts

    lengths = np.full(100, 500, dtype=np.int64)
    one = np.zeros(100, dtype=np.int32)
    assert _sa_parts(one, lengths, 3, 2) is None  # one SA: nothing to split
    skew = np.where(np.arange(100) < 95, 0, 1).astype(np.int32)
    assert _sa_parts(skew, lengths, 2, 2) is None  # one SA has 95 % of the work
    even = (np.arange(100) % 4).astype(np.int32)
    parts = _sa_parts(even, lengths, 5, 2)
    assert parts is not None and sorted(parts[:4].tolist()) == [0, 0, 1, 1]
    # largest first to the least loaded thread: loads 4, 3, 3, 2 -> {4, 2} and {3, 3}
    lpt = np.repeat(np.arange(4), [40, 30, 30, 20]).astype(np.int32)
    parts = _sa_parts(lpt, np.full(120, 100, dtype=np.int64), 4, 2)
    assert parts is not None and parts[0] == parts[3] != parts[1] == parts[2]


def test_run_multi_part_needs_prefilled_ivs() -> None:
    sas, _ = twins([("esp", "esp-aes esp-sha-hmac"), ("esp", "esp-gcm 256")], fixed_iv=False)
    batch = batch_of([64, 100])
    off, out = slots(batch.lengths, _esp.OVERHEAD)
    n = len(batch)
    with pytest.raises(ValueError, match="filled beforehand"):
        _esp.run_multi([s._core for s in sas], np.zeros(n, np.int32), np.zeros(n, np.uint8),
                       batch.buffer, batch.offsets, batch.lengths, out, off,
                       np.zeros(n, np.int64), np.zeros(n, np.uint8), np.zeros(n * 16, np.uint8),
                       True, True, 4, None, np.zeros(2, np.int32), 0)
    with pytest.raises(ValueError, match="one entry per SA"):
        _esp.run_multi([s._core for s in sas], np.zeros(n, np.int32), np.zeros(n, np.uint8),
                       batch.buffer, batch.offsets, batch.lengths, out, off,
                       np.zeros(n, np.int64), np.zeros(n, np.uint8), np.zeros(n * 16, np.uint8),
                       True, False, 4, None, np.zeros(3, np.int32), 0)


def test_an_sa_listed_twice_is_never_split_over_threads(parts_spy: list[int]) -> None:
    # one SA at two indexes: two threads would run one cipher context and one sequence
    # counter at once (repeated GCM nonces); the call stays on one thread instead
    sa = make(0, "esp", "esp-gcm 256")
    batch = batch_of([64, 100, 200] * 40)
    idx = interleaved(len(batch), 2, seed=3)
    off, out = slots(batch.lengths, _esp.OVERHEAD)
    res = _encapsulate_multi([sa, sa], idx, TUNNEL, batch, out, off, threads=2)
    assert parts_spy == []  # not split
    assert res.all_ok
    seqs = [int.from_bytes(p[24:28], "big") for p in packets(res.packets)]
    assert seqs == list(range(1, len(batch) + 1))  # ESP sequence numbers, in order, once


def test_threaded_calls_work_in_a_forked_child(parts_spy: list[int]) -> None:
    import os
    import time

    multi, _ = twins(SPECS)
    batch = damaged_batch()
    idx = interleaved(len(batch), len(SPECS))
    off, out = slots(batch.lengths, _esp.OVERHEAD)
    _encapsulate_multi(multi, idx, TUNNEL, batch, out, off, threads=3)  # the pool exists
    pid = os.fork()
    if pid == 0:  # the child: its pool has no threads until it makes its own
        code = 1
        try:
            sas, _ = twins(SPECS)
            res = _encapsulate_multi(sas, idx, TUNNEL, batch, out, off, threads=3)
            code = 0 if int((res.status == 0).sum()) >= len(batch) - 3 else 1
        finally:
            os._exit(code)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail("the forked child hung in a threaded multi-SA call")
