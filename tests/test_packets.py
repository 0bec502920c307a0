"""PacketBatch: construction, views, conversion, header fields (oracle: struct / scapy)."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipsecfast import PacketBatch


@given(st.lists(st.binary(max_size=200), max_size=40))
def test_from_list_round_trip(pkts: list[bytes]) -> None:
    b = PacketBatch.from_list(pkts)
    assert len(b) == len(pkts)
    assert b.to_list() == pkts
    assert [b[i] for i in range(len(b))] == pkts
    assert b.nbytes == sum(map(len, pkts))
    assert b.tobytes() == b"".join(pkts)


@given(st.lists(st.binary(max_size=50), min_size=1, max_size=30), st.data())
def test_views_and_compact(pkts: list[bytes], data: st.DataObject) -> None:
    b = PacketBatch.from_list(pkts)
    mask = np.array(data.draw(st.lists(st.booleans(), min_size=len(pkts), max_size=len(pkts))))
    view = b[mask]
    expected = [p for p, m in zip(pkts, mask, strict=True) if m]
    assert view.to_list() == expected
    assert view.buffer is b.buffer  # zero copy
    c = view.compact()
    assert c.to_list() == expected
    assert c.offsets.tolist() == list(np.cumsum([0] + [len(p) for p in expected])[:-1])
    rev = b[np.arange(len(pkts))[::-1]]
    assert rev.to_list() == pkts[::-1]
    assert PacketBatch.concat([b, view, rev]).to_list() == pkts + expected + pkts[::-1]


def test_bounds_checked_and_indexing() -> None:
    with pytest.raises(ValueError):
        PacketBatch(np.zeros(10, np.uint8), [5], [6])
    with pytest.raises(ValueError):
        PacketBatch(np.zeros(10, np.uint8), [-1], [2])
    with pytest.raises(ValueError):
        PacketBatch(np.zeros(10, np.uint8), [0, 1], [2])
    b = PacketBatch.from_list([b"ab", b"c"])
    assert b[-1] == b"c"
    with pytest.raises(IndexError):
        b[2]
    assert len(PacketBatch.empty()) == 0
    assert PacketBatch.empty().to_list() == []
    assert "2 packets" in repr(b)


def _ipv4(src: int, dst: int, proto: int, payload: bytes, tos: int = 0, frag: int = 0) -> bytes:
    total = 20 + len(payload)
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, tos, total, 7, frag, 64, proto, 0,
                      src.to_bytes(4, "big"), dst.to_bytes(4, "big"))
    return hdr + payload


def test_ipv4_fields() -> None:
    tcp = struct.pack("!HHIIBBHHH", 1234, 80, 0, 0, 0x50, 0x12, 0, 0, 0)
    pkts = [
        _ipv4(0x0A000001, 0x0A000002, 6, tcp, tos=0xB8),
        _ipv4(0xC0A80001, 0xE0000001, 17, struct.pack("!HHHH", 53, 5353, 8, 0)),
        _ipv4(1, 2, 1, bytes([8, 0, 0, 0])),
        _ipv4(1, 2, 6, tcp, frag=0x2000 | 10),  # non-initial fragment: no ports
        b"\x60" + bytes(39),  # IPv6
        b"\x45\x00",  # truncated
    ]
    f = PacketBatch.from_list(pkts).ipv4_fields()
    assert f.valid.tolist() == [True, True, True, True, False, False]
    assert f.proto[:4].tolist() == [6, 17, 1, 6]
    assert f.src[0] == 0x0A000001 and f.dst[1] == 0xE0000001
    assert f.sport[:4].tolist() == [1234, 53, 0, 0]
    assert f.dport[:4].tolist() == [80, 5353, 0, 0]
    assert f.tcp_flags[0] == 0x12
    assert f.icmp_type[2] == 8 and f.icmp_type[0] == -1
    assert f.frag_offset[3] == 10 and f.flags[3] == 1
    assert f.tos[0] == 0xB8


def test_scapy_round_trip() -> None:
    from scapy.layers.inet import IP, UDP

    pkts = [IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2) / (b"x" * n) for n in (0, 5)]
    b = PacketBatch.from_scapy(pkts)
    assert b.to_list() == [bytes(p) for p in pkts]
    back = b.to_scapy()
    assert [bytes(p) for p in back] == b.to_list()
    assert back[0][UDP].dport == 2


def test_equals_matches_python_comparison() -> None:
    import random

    rnd = random.Random(3)
    for _ in range(200):
        n = rnd.randint(0, 40)
        pa = [bytes(rnd.randrange(256) for _ in range(rnd.choice([0, 1, 5, 20])))
              for _ in range(n)]
        pb = []
        for x in pa:
            r = rnd.random()
            if r < 0.5 or not x:
                pb.append(x)
            elif r < 0.8:  # one byte changed
                k = rnd.randrange(len(x))
                pb.append(x[:k] + bytes([x[k] ^ 0x80]) + x[k + 1:])
            else:  # another length, same prefix
                pb.append(x[:-1] if rnd.random() < 0.5 else x + b"\0")
        a = PacketBatch.from_list(pa)
        b = PacketBatch.from_list([b"zz" + y for y in pb])  # b's packets elsewhere in a buffer
        b = PacketBatch(b.buffer, b.offsets + 2, b.lengths - 2)
        got = a.equals(b)
        assert got.dtype == np.bool_
        assert got.tolist() == [x == y for x, y in zip(pa, pb, strict=True)]


def test_equals_checks_its_arguments() -> None:
    a = PacketBatch.from_list([b"abc", b"de"])
    with pytest.raises(ValueError, match="packets to compare"):
        a.equals(PacketBatch.from_list([b"abc"]))
    with pytest.raises(TypeError):
        a.equals([b"abc", b"de"])  # type: ignore[arg-type]
    bad = PacketBatch._trusted(a.buffer, np.array([0, 4], dtype=np.int64),
                               np.array([3, 9], dtype=np.int64))  # span past the buffer
    with pytest.raises(ValueError, match="outside its buffer"):
        a.equals(bad)


def test_heads_match_python_slices() -> None:
    """``heads(n)``: each packet's first n bytes, zero-filled past its end (oracle: bytes
    slicing), packets at scattered offsets of a shared buffer, empty ones included."""
    rng = np.random.default_rng(11)
    pkts = [bytes(rng.integers(0, 256, int(k), dtype=np.uint8)) for k in rng.integers(0, 60, 300)]
    buf = np.zeros(40_000, dtype=np.uint8)
    offs = np.sort(rng.choice(np.arange(0, 39_900, 100), len(pkts), replace=False))
    for o, p in zip(offs, pkts, strict=True):
        buf[o:o + len(p)] = np.frombuffer(p, dtype=np.uint8)
    buf[offs + np.array([len(p) for p in pkts])] = 0xEE  # a byte after each packet
    batch = PacketBatch(buf, offs, np.array([len(p) for p in pkts]))
    for n in (0, 1, 20, 28, 64):
        got = batch.heads(n)
        assert got.shape == (len(pkts), n)
        for row, p in zip(got, pkts, strict=True):
            assert row.tobytes() == p[:n].ljust(n, b"\0")
    assert PacketBatch.empty().heads(24).shape == (0, 24)
    with pytest.raises(ValueError):
        batch.heads(-1)


def test_gather_prefix_checks_spans() -> None:
    from ipsecfast import _pcap

    buf = np.zeros(100, dtype=np.uint8)
    out = np.zeros((1, 8), dtype=np.uint8)
    for off, n in ((95, 10), (-1, 4), (0, -1), (101, 0)):
        with pytest.raises(ValueError):
            _pcap.gather_prefix(buf, np.array([off]), np.array([n]), out)
    with pytest.raises(ValueError):
        _pcap.gather_prefix(buf, np.array([0, 1]), np.array([1, 1]), out)
