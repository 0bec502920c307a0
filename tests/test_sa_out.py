"""The ``out=`` path of the SA batch calls: packets written straight into a caller's
buffer at caller-chosen offsets (what the router uses to put every SA group of a chunk
into one output buffer).

The placed path must give byte-identical packets to the normal path, leave every byte
outside the packets' slots alone, reject a buffer that is too small with ValueError
before any C call (no sequence number used, no counter moved), and leave a failed packet
with length 0 and its slot zeroed.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_sa import LOCAL, PEER, SIZES, batch_of

from ipsecfast import _esp
from ipsecfast.packets import PacketBatch
from ipsecfast.sa import MODE_IDS, SecurityAssociation
from ipsecfast.status import Status
from ipsecfast.transform import parse_transforms

SPECS = [
    ("esp", "esp-aes esp-sha-hmac"),
    ("esp", "esp-aes 256 esp-sha512-hmac"),
    ("esp", "esp-gcm 256"),
    ("esp", "esp-3des esp-md5-hmac"),
    ("esp", "esp-null esp-sha256-hmac"),
    ("ah", "ah-sha-hmac"),
]
SENTINEL = 0xA5


def twin_sas(protocol: str, spec: str, mode: str) -> tuple[SecurityAssociation, ...]:
    """Two SAs with the same keys and state (CBC IVs fixed so that outputs compare)."""
    ts = parse_transforms(spec)
    rng = np.random.default_rng(7)
    if protocol == "ah":
        ck, ak = None, rng.bytes(ts.ah_key_length)
        iv = None
    else:
        ck = rng.bytes(ts.cipher_key_length) if ts.cipher_key_length else None
        ak = rng.bytes(ts.auth_key_length) if ts.auth_key_length else None
        cbc = ts.esp_cipher is not None and ts.esp_cipher.iv_length and ts.cipher in (
            1, 2, 3)  # DES / 3DES / AES-CBC
        iv = bytes(range(ts.esp_cipher.iv_length)) if cbc and ts.esp_cipher else None
    return tuple(
        SecurityAssociation(protocol, 0x2001, spec, ck, ak, mode=mode,  # type: ignore[arg-type]
                            local=LOCAL, peer=PEER, _fixed_iv=iv)
        for _ in range(4))


def scattered(lengths: np.ndarray, growth: int, seed: int = 3) -> tuple[np.ndarray, int]:
    """Slot offsets in reverse packet order with random gaps; the buffer size."""
    rng = np.random.default_rng(seed)
    off = np.zeros(lengths.size, dtype=np.int64)
    pos = int(rng.integers(0, 9))
    for i in range(lengths.size - 1, -1, -1):
        off[i] = pos
        pos += int(lengths[i]) + growth + int(rng.integers(0, 9))
    return off, pos + int(rng.integers(0, 9))


def slots_mask(size: int, off: np.ndarray, span: np.ndarray) -> np.ndarray:
    inside = np.zeros(size, dtype=bool)
    for o, n in zip(off.tolist(), span.tolist(), strict=True):
        inside[o:o + n] = True
    return inside


@pytest.mark.parametrize("mode", ["tunnel", "transport"])
@pytest.mark.parametrize("protocol,spec", SPECS)
def test_placed_equals_normal(protocol: str, spec: str, mode: str) -> None:
    enc_a, enc_b, dec_a, dec_b = twin_sas(protocol, spec, mode)
    batch = batch_of(SIZES * 2)
    mid = MODE_IDS[mode]  # type: ignore[index]
    growth = enc_b._max_growth(mid)
    assert 0 < growth <= _esp.OVERHEAD
    normal = enc_a._encapsulate(batch, mid, 4)
    off, size = scattered(batch.lengths, growth)
    out = np.full(size, SENTINEL, dtype=np.uint8)
    placed = enc_b._encapsulate(batch, mid, 4, out=out, out_offsets=off)
    assert placed.all_ok and normal.all_ok
    assert placed.packets.buffer is out
    assert placed.packets.to_list() == normal.packets.to_list()
    assert np.array_equal(placed.packets.offsets, off)
    # bytes outside the slots are untouched; every packet fits its slot
    assert (placed.packets.lengths <= batch.lengths + growth).all()
    outside = ~slots_mask(size, off, batch.lengths + growth)
    assert (out[outside] == SENTINEL).all()
    # the rest of every slot is zeroed (no stale bytes between packets)
    tails = slots_mask(size, off, batch.lengths + growth) & ~slots_mask(
        size, off, placed.packets.lengths)
    assert not out[tails].any()
    assert enc_a.seq == enc_b.seq == len(batch)
    assert enc_a.counters == enc_b.counters

    # decapsulate the protected packets into a shared buffer too
    wire = normal.packets
    d_normal = dec_a._decapsulate(wire, mid)[0]
    doff, dsize = scattered(wire.lengths, 0, seed=5)
    dout = np.full(dsize, SENTINEL, dtype=np.uint8)
    d_placed, nhs = dec_b._decapsulate(wire, mid, out=dout, out_offsets=doff)
    assert d_placed.all_ok and d_normal.all_ok
    assert d_placed.packets.to_list() == d_normal.packets.to_list() == batch.to_list()
    assert (dout[~slots_mask(dsize, doff, wire.lengths)] == SENTINEL).all()
    dtails = slots_mask(dsize, doff, wire.lengths) & ~slots_mask(
        dsize, doff, d_placed.packets.lengths)
    assert not dout[dtails].any()
    assert nhs.shape == (len(wire),)


def test_two_sas_share_one_buffer() -> None:
    """The router's use: SA groups written back to back into one output buffer."""
    a1, b1, _, _ = twin_sas("esp", "esp-gcm", "tunnel")
    a2, b2, _, _ = twin_sas("esp", "esp-aes esp-sha-hmac", "tunnel")
    g1, g2 = batch_of([10, 200, 1400], seed=1), batch_of([0, 64, 500, 33], seed=2)
    tun = MODE_IDS["tunnel"]
    s1 = g1.lengths + b1._max_growth(tun)
    s2 = g2.lengths + b2._max_growth(tun)
    sizes = np.concatenate([s1, s2])
    off = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    out = np.empty(int(sizes.sum()), dtype=np.uint8)
    r1 = b1._encapsulate(g1, tun, 4, out=out, out_offsets=off[:3])
    r2 = b2._encapsulate(g2, tun, 4, out=out, out_offsets=off[3:])
    assert r1.packets.buffer is out and r2.packets.buffer is out
    assert r1.packets.to_list() == a1._encapsulate(g1, tun, 4).packets.to_list()
    assert r2.packets.to_list() == a2._encapsulate(g2, tun, 4).packets.to_list()


@pytest.mark.parametrize("shrink", [1, 50])
def test_too_small_buffer_raises_before_any_c_call(shrink: int) -> None:
    enc, _, dec, _ = twin_sas("esp", "esp-gcm", "tunnel")
    batch = batch_of([100, 1400, 64])
    tun = MODE_IDS["tunnel"]
    growth = enc._max_growth(tun)
    slot = batch.lengths + growth
    off = np.concatenate([[0], np.cumsum(slot)[:-1]]).astype(np.int64)
    need = int(slot.sum())
    before = enc.counters
    iv_before = enc._core.iv_next
    with pytest.raises(ValueError, match="too small"):
        enc._encapsulate(batch, tun, 4, out=np.empty(need - shrink, np.uint8), out_offsets=off)
    assert enc.seq == 0 and enc._core.iv_next == iv_before and enc.counters == before
    # the exact size is enough
    assert enc._encapsulate(batch, tun, 4, out=np.empty(need, np.uint8),
                            out_offsets=off).all_ok
    wire = enc.encapsulate(batch).packets
    doff = np.array([0, int(wire.lengths[0]), int(wire.lengths[:2].sum())], dtype=np.int64)
    with pytest.raises(ValueError, match="too small"):
        dec._decapsulate(wire, tun, out=np.empty(wire.nbytes - shrink, np.uint8),
                         out_offsets=doff)
    assert dec.rx_seq == 0 and dec.counters["packets_decapsulated"] == 0


def test_bad_out_arguments() -> None:
    enc, *_ = twin_sas("esp", "esp-gcm", "tunnel")
    batch = batch_of([100, 200])
    tun = MODE_IDS["tunnel"]
    out = np.empty(1000, np.uint8)
    with pytest.raises(ValueError):
        enc._encapsulate(batch, tun, 4, out=out, out_offsets=np.array([-1, 300], np.int64))
    with pytest.raises(ValueError):
        enc._encapsulate(batch, tun, 4, out=out, out_offsets=np.array([0], np.int64))
    with pytest.raises(TypeError):
        enc._encapsulate(batch, tun, 4, out=out, out_offsets=np.array([0, 300], np.int32))
    with pytest.raises(TypeError):
        enc._encapsulate(batch, tun, 4, out=out.astype(np.int16), out_offsets=np.zeros(2, np.int64))
    with pytest.raises(TypeError):
        enc._encapsulate(batch, tun, 4, out=out)
    ro = np.zeros(1000, np.uint8)
    ro.flags.writeable = False
    with pytest.raises(TypeError):
        enc._encapsulate(batch, tun, 4, out=ro, out_offsets=np.array([0, 300], np.int64))
    assert enc.seq == 0


def test_core_checks_slots_itself() -> None:
    """The compiled core refuses slots outside ``out`` even when called directly."""
    enc, *_ = twin_sas("esp", "esp-gcm", "tunnel")
    batch = batch_of([100])
    tun = MODE_IDS["tunnel"]
    n = 1
    for bad in ([1 << 62], [-5], [10]):
        with pytest.raises(ValueError):
            enc._core.encapsulate(batch.buffer, batch.offsets, batch.lengths,
                                  np.empty(120, np.uint8), np.array(bad, np.int64),
                                  np.empty(n, np.int64), np.empty(n, np.uint8),
                                  np.empty(0, np.uint8), tun, True, 4, True)
    assert enc.seq == 0


def test_failures_leave_length_zero_and_zeroed_slot() -> None:
    enc, _, dec, _ = twin_sas("esp", "esp-aes esp-sha-hmac", "tunnel")
    tun = MODE_IDS["tunnel"]
    wire = enc.encapsulate(batch_of([100, 300, 700, 50])).packets
    buf = wire.compact().buffer.copy()
    wire = PacketBatch(buf, wire.compact().offsets, wire.lengths)
    buf[wire.offsets[1] + wire.lengths[1] - 1] ^= 1    # ICV of packet 1
    buf[wire.offsets[3] + 60] ^= 1                    # ciphertext of packet 3
    off, size = scattered(wire.lengths, 0)
    out = np.full(size, SENTINEL, dtype=np.uint8)
    res, _ = dec._decapsulate(wire, tun, out=out, out_offsets=off)
    assert res.status.tolist() == [0, Status.ICV_MISMATCH, 0, Status.ICV_MISMATCH]
    assert res.packets.lengths[[1, 3]].tolist() == [0, 0]
    for i in (1, 3):  # no partial plaintext left behind
        assert not out[off[i]:off[i] + wire.lengths[i]].any()
    assert res.packets.offsets.tolist() == off.tolist()

    # encapsulation: an unreadable packet fails alone, its slot zeroed
    bad = PacketBatch.from_list([b"\x45" + bytes(10), batch_of([40])[0]])
    growth = enc._max_growth(tun)
    off2 = np.array([0, 11 + growth], dtype=np.int64)
    out2 = np.full(11 + growth + 60 + growth, SENTINEL, dtype=np.uint8)
    r2 = enc._encapsulate(bad, tun, 4, out=out2, out_offsets=off2)
    assert r2.status.tolist() == [Status.TRUNCATED, 0]
    assert r2.packets.lengths[0] == 0 and not out2[:11 + growth].any()
    assert dec.decapsulate(r2.packets[[1]]).packets.to_list() == [bad[1]]


def test_mode_ids_are_the_cores() -> None:
    for mode in ("tunnel", "transport"):
        sa = SecurityAssociation("ah", 1, "ah-sha-hmac", auth_key=bytes(20), mode=mode,  # type: ignore[arg-type]
                                 local=LOCAL, peer=PEER)
        assert sa._mode_id == MODE_IDS[mode]  # type: ignore[index]
        sa.close()


# -- the router over the out= path -------------------------------------------------------
# Inbound, the router opens every SA group of a chunk into one buffer and checks the inner
# flows with one classification of all of them; a packet that an earlier entry catches
# first must still be checked against its own SA's entry alone (DESIGN.md §Policy 4).

A_ADDR, B_ADDR = "192.0.2.1", "192.0.2.2"
WIDE = ("10.1.0.0 0.0.255.255", "10.2.0.0 0.0.255.255")
NARROW = ("10.1.5.0 0.0.0.255", "10.2.5.0 0.0.0.255")


def _manual(me: str, peer: str, entries: list[tuple[tuple[str, str], int, int]]) -> str:
    """A router with one manual entry per (A-side flow, outbound SPI, inbound SPI)."""
    lines = ["crypto ipsec transform-set T esp-aes esp-sha-hmac"]
    for n, (_, out_spi, in_spi) in enumerate(entries):
        lines += [f"crypto map M {10 * (n + 1)} ipsec-manual", f" set peer {peer}",
                  " set transform-set T", f" match address {101 + n}"]
        for direction, spi in (("outbound", out_spi), ("inbound", in_spi)):
            lines.append(f" set session-key {direction} esp {spi} cipher {bytes(16).hex()} "
                         f"authenticator {bytes(range(20)).hex()}")
    lines += ["interface GigabitEthernet0/0", f" ip address {me} 255.255.255.0", " crypto map M"]
    for n, ((a_side, b_side), _, _) in enumerate(entries):
        src, dst = (a_side, b_side) if me == A_ADDR else (b_side, a_side)
        lines.append(f"access-list {101 + n} permit ip {src} {dst}")
    return "\n".join(lines) + "\n"


def test_router_inner_flow_of_an_entry_shadowed_by_an_earlier_one() -> None:
    from scapy.layers.inet import IP, UDP

    from ipsecfast.config import parse_config
    from ipsecfast.router import Router, Verdict

    # A: entry 10 the wide flow (SPIs 0x100/0x101), entry 20 the narrow one (0x200/0x201);
    # B: the narrow entry first, so that B protects 10.2.5.x -> 10.1.5.x with the narrow
    # SA, whose inner packets A's wide entry 10 catches first on a mirror lookup.
    a = Router(parse_config(_manual(A_ADDR, B_ADDR, [(WIDE, 0x100, 0x101),
                                                     (NARROW, 0x200, 0x201)])))
    b = Router(parse_config(_manual(B_ADDR, A_ADDR, [(NARROW, 0x201, 0x200),
                                                     (WIDE, 0x101, 0x100)])))
    # C: like B, but the narrow SA's SPI carries the wide flow: A must drop that
    c = Router(parse_config(_manual(B_ADDR, A_ADDR, [(WIDE, 0x201, 0x200)])))

    def pkt(src: str, dst: str, i: int) -> bytes:
        return bytes(IP(src=src, dst=dst, id=i) / UDP(sport=1000 + i, dport=53) / bytes(40 + i))

    clear = [pkt("10.2.5.7", "10.1.5.9", 1), pkt("10.2.7.7", "10.1.7.7", 2),
             pkt("10.2.5.8", "10.1.5.3", 3), pkt("10.2.9.1", "10.1.5.1", 4)]
    sent = b.outbound("GigabitEthernet0/0", PacketBatch.from_list(clear))
    assert sent.verdict.tolist() == [Verdict.PROTECT] * 4
    wrong = c.outbound("GigabitEthernet0/0", PacketBatch.from_list([clear[1]]))
    wire = PacketBatch.from_list(sent.packets.to_list() + wrong.packets.to_list())
    got = a.inbound("GigabitEthernet0/0", wire)
    assert got.verdict.tolist() == [Verdict.PROTECT] * 4 + [Verdict.DROP]
    assert got.reason.tolist()[4] == Status.INNER_FLOW_MISMATCH
    assert got.packets.to_list()[:4] == clear
    assert got.entry.tolist() == [1, 0, 1, 0, 1]
    # one output buffer for the chunk; besides its packets it holds only zeros (the
    # plaintext of the packet dropped by the inner-flow check included)
    assert got.packets.lengths[4] == 0
    buf = got.packets.buffer
    used = np.zeros(buf.size, dtype=bool)
    for o, n in zip(got.packets.offsets.tolist(), got.packets.lengths.tolist(), strict=True):
        used[o:o + n] = True
    assert not buf[~used].any()
