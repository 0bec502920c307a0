"""The compiled inbound SPI lookup (``_esp.spi_lookup``): for every packet of a batch, is it
an ESP / AH packet to ``local`` whose (protocol, SPI) is in a sorted key table, and if so
at which slot; otherwise why not (not IPv4, clear traffic, fragment, IP options,
truncated, unknown SPI).

Oracle: a pure-Python classifier written from the spec (``struct`` over the packet's own
bytes, ``n`` = its length in the batch), never the function's own output; scapy builds a
few ESP / AH packets so that the AH SPI offset (RFC 4302 §2: next header, payload length,
reserved, then the SPI) is checked against a packet layout we did not write ourselves.
The randomized batch places packets at random offsets in one shared buffer with random
bytes in the gaps, so a read past a packet's span shows up as a wrong SPI.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np
import pytest

from ipsecfast import _esp

ESP, AH = 50, 51
LOCAL = 0x0A000001  # 10.0.0.1
OTHER_DST = 0x0A000002
BIG = 2**63 - 10

OK = _esp.SPI_OK
OTHER = _esp.SPI_OTHER
CLEAR = _esp.SPI_CLEAR
FRAGMENT = _esp.SPI_FRAGMENT
OPTIONS = _esp.SPI_OPTIONS
TRUNCATED = _esp.SPI_TRUNCATED
UNKNOWN = _esp.SPI_UNKNOWN
KINDS = (OK, OTHER, CLEAR, FRAGMENT, OPTIONS, TRUNCATED, UNKNOWN)


# ---------------------------------------------------------------- the oracle (from the spec)

def classify(p: bytes, local: int, index: dict[int, int]) -> tuple[int, int]:
    """(kind, slot) of one packet ``p`` (its bytes in the batch) by the spec."""
    n = len(p)
    if n == 0 or p[0] >> 4 != 4:
        return OTHER, -1
    if n < 20:
        return CLEAR, -1
    ihl = (p[0] & 15) * 4
    (total,) = struct.unpack_from("!H", p, 2)
    if not (ihl >= 20 and ihl <= total <= n):
        return CLEAR, -1
    proto = p[9]
    (dst,) = struct.unpack_from("!I", p, 16)
    if proto not in (ESP, AH) or dst != local:
        return CLEAR, -1
    (frag,) = struct.unpack_from("!H", p, 6)
    if frag & 0x2000 or frag & 0x1FFF:
        return FRAGMENT, -1
    if ihl > 20:
        return OPTIONS, -1
    at = 20 if proto == ESP else 24
    if n < at + 4:
        return TRUNCATED, -1
    (spi,) = struct.unpack_from("!I", p, at)
    j = index.get((proto << 32) | spi)
    return (UNKNOWN, -1) if j is None else (OK, j)


def oracle(buf: bytes, offsets: Sequence[int], lengths: Sequence[int], local: int,
           keys: Sequence[int]) -> tuple[list[int], list[int]]:
    index = {int(k): j for j, k in enumerate(keys)}
    out = [classify(buf[o:o + ln], local, index) for o, ln in zip(offsets, lengths, strict=True)]
    return [k for k, _ in out], [s for _, s in out]


# ---------------------------------------------------------------- calling the function

def call(buf: bytes | np.ndarray, offsets: Sequence[int], lengths: Sequence[int],
         local: int, keys: Sequence[int]) -> tuple[list[int], list[int]]:
    n = len(offsets)
    kinds = np.full(n, 0xEE, np.uint8)  # garbage: every entry must be written
    slots = np.full(n, 12345, np.int32)
    arr = buf if isinstance(buf, np.ndarray) else np.frombuffer(buf, np.uint8).copy()
    _esp.spi_lookup(arr, np.asarray(offsets, np.int64), np.asarray(lengths, np.int64), local,
                    np.asarray(keys, np.int64), kinds, slots)
    return kinds.tolist(), slots.tolist()


def check(packets: list[bytes], keys: Sequence[int], local: int = LOCAL) -> list[int]:
    """Run a batch of packets laid out back to back; compare with the oracle; return kinds."""
    buf = b"".join(packets)
    offsets = np.cumsum([0] + [len(p) for p in packets[:-1]]).tolist() if packets else []
    lengths = [len(p) for p in packets]
    got = call(buf, offsets, lengths, local, keys)
    want = oracle(buf, offsets, lengths, local, keys)
    assert got == want
    return got[0]


def key(proto: int, spi: int) -> int:
    return (proto << 32) | spi


def ipv4(proto: int, payload: bytes, *, dst: int = LOCAL, total: int | None = None,
         ihl: int = 5, version: int = 4, frag: int = 0) -> bytes:
    opts = bytes(range(1, 1 + (ihl - 5) * 4)) if ihl > 5 else b""
    hlen = 20 + len(opts)
    tot = hlen + len(payload) if total is None else total
    hdr = struct.pack("!BBHHHBBHII", (version << 4) | (ihl & 15), 0, tot & 0xFFFF, 0x1234,
                      frag, 64, proto, 0, 0xC0A80001, dst)
    return hdr + opts + payload


def esp(spi: int, body: int = 32, **kw: int) -> bytes:
    return ipv4(ESP, struct.pack("!II", spi, 7) + bytes(range(body)), **kw)


def ah(spi: int, body: int = 32, **kw: int) -> bytes:
    # next header, payload length (in 4-byte words minus 2), reserved, SPI, sequence, ICV
    return ipv4(AH, struct.pack("!BBHII", 4, 4, 0, spi, 7) + bytes(12) + bytes(body), **kw)


# ---------------------------------------------------------------- 1. randomized

def random_batch(rng: np.random.Generator, count: int, keys: list[int]
                 ) -> tuple[np.ndarray, list[int], list[int]]:
    known = [k for k in keys if k >> 32 in (ESP, AH)]
    pkts = []
    for _ in range(count):
        proto = int(rng.choice([ESP, AH, ESP, AH, 17, 6]))
        r = rng.random()
        if r < 0.5 and known:  # an SPI of the table (maybe under the other protocol)
            spi = int(known[rng.integers(len(known))]) & 0xFFFFFFFF
        elif r < 0.6:
            spi = int(rng.choice([0, 0xFFFFFFFF, 1, 0x80000000]))
        else:
            spi = int(rng.integers(0, 2**32))
        kw: dict[str, int] = {}
        if rng.random() < 0.1:
            kw["version"] = int(rng.integers(0, 16))
        if rng.random() < 0.15:
            kw["ihl"] = int(rng.integers(0, 16))
        if rng.random() < 0.15:
            kw["dst"] = int(rng.choice([OTHER_DST, 0, 0xFFFFFFFF, LOCAL ^ 0x01000000]))
        if rng.random() < 0.15:
            kw["frag"] = int(rng.choice([0x2000, 0x0001, 0x1FFF, 0x2001, 0x4000, 0x8000,
                                         int(rng.integers(0, 0x10000))]))
        body = int(rng.integers(0, 40))
        if proto == AH:
            p = ipv4(AH, struct.pack("!BBHII", 4, 4, 0, spi, 7) + bytes(rng.bytes(body)), **kw)
        else:
            p = ipv4(proto, struct.pack("!II", spi, 7) + bytes(rng.bytes(body)), **kw)
        r = rng.random()
        if r < 0.1:  # total length too big
            p = p[:2] + struct.pack("!H", len(p) + int(rng.integers(1, 100))) + p[4:]
        elif r < 0.2:  # total length below the header (or anything)
            p = p[:2] + struct.pack("!H", int(rng.integers(0, 64))) + p[4:]
        elif r < 0.25:  # total = the header alone: the SPI is still read from n
            p = p[:2] + struct.pack("!H", 20) + p[4:]
        r = rng.random()
        if r < 0.15:  # truncated, the total length left as it was (usually too big)
            p = p[:int(rng.integers(0, 41))]
        elif r < 0.3:  # truncated with a total length that fits the truncation
            cut = int(rng.integers(0, 41))
            p = p[:cut]
            if cut >= 4:
                tot = cut if rng.random() < 0.7 else int(rng.integers(0, cut + 1))
                p = p[:2] + struct.pack("!H", tot) + p[4:]
        elif r < 0.33:
            p = b""
        pkts.append(p)
    # lay the packets out with random gaps of random bytes, then shuffle the batch order
    chunks, offsets = [], []
    pos = 0
    for p in pkts:
        gap = int(rng.choice([0, 0, int(rng.integers(1, 9))]))
        chunks.append(rng.bytes(gap))
        pos += gap
        offsets.append(pos)
        chunks.append(p)
        pos += len(p)
    chunks.append(rng.bytes(int(rng.integers(0, 9))))
    buf = np.frombuffer(b"".join(chunks), np.uint8).copy()
    lengths = [len(p) for p in pkts]
    order = rng.permutation(count)
    return buf, [offsets[i] for i in order], [lengths[i] for i in order]


def random_keys(rng: np.random.Generator, m: int) -> list[int]:
    ks = {key(int(rng.choice([ESP, AH])), int(rng.integers(0, 2**32))) for _ in range(m)}
    ks |= {key(ESP, 0), key(AH, 0xFFFFFFFF), key(17, 0x1234)}  # edges and an unusable key
    return sorted(ks)


@pytest.mark.parametrize("seed", range(6))
def test_random_batches_match_the_oracle(seed: int) -> None:
    rng = np.random.default_rng(seed)
    keys = random_keys(rng, int(rng.choice([1, 5, 64, 500])))
    buf, offsets, lengths = random_batch(rng, 2000, keys)
    got = call(buf, offsets, lengths, LOCAL, keys)
    want = oracle(buf.tobytes(), offsets, lengths, LOCAL, keys)
    bad = [i for i in range(len(offsets)) if (got[0][i], got[1][i]) != (want[0][i], want[1][i])]
    assert not bad, [(i, buf[offsets[i]:offsets[i] + lengths[i]].tobytes().hex(),
                      (got[0][i], got[1][i]), (want[0][i], want[1][i])) for i in bad[:5]]
    # the generator must reach every kind, or the comparison proves little
    assert set(want[0]) == set(KINDS)


@pytest.mark.parametrize("nk", range(0, 18))
def test_every_key_and_its_neighbours_for_small_tables(nk: int) -> None:
    """The search at every table size up to 17: each key is found at its index; the
    SPIs just below and above each key (absent) are unknown."""
    spis = [0x100 * (i + 1) for i in range(nk)]
    keys = [key(ESP, s) for s in spis]
    probes = sorted({p for s in spis for p in (s - 1, s, s + 1)} | {0, 0xFFFFFFFF})
    pkts = [esp(p) for p in probes]
    kinds = check(pkts, keys)
    assert kinds == [OK if p in spis else UNKNOWN for p in probes]


def test_constants_are_distinct_small_ints() -> None:
    assert len(set(KINDS)) == 7
    assert all(isinstance(k, int) and 0 <= k < 256 for k in KINDS)


# ---------------------------------------------------------------- 2. edge cases by hand

def test_esp_of_exactly_24_bytes_is_found() -> None:
    p = esp(0x100, body=0)[:24]
    p = p[:2] + struct.pack("!H", 24) + p[4:]
    assert len(p) == 24
    assert check([p], [key(ESP, 0x100)]) == [OK]


def test_esp_of_23_bytes_is_truncated() -> None:
    p = esp(0x100, body=0)[:23]
    p = p[:2] + struct.pack("!H", 23) + p[4:]  # 20 <= total <= n: a valid header
    assert check([p], [key(ESP, 0x100)]) == [TRUNCATED]
    # with the header's own total length (28 > 23) the header is not valid: clear
    assert check([esp(0x100, body=0)[:23]], [key(ESP, 0x100)]) == [CLEAR]


def test_ah_needs_28_bytes() -> None:
    p28 = ah(0x200, body=0)[:28]
    p28 = p28[:2] + struct.pack("!H", 28) + p28[4:]
    p27 = p28[:27]
    p27 = p27[:2] + struct.pack("!H", 27) + p27[4:]
    assert check([p28, p27], [key(AH, 0x200)]) == [OK, TRUNCATED]


def test_spi_is_read_from_the_batch_length_not_the_total_length() -> None:
    # total = 20 (header only) but the packet in the batch carries the SPI: readable
    p = esp(0x300)
    p = p[:2] + struct.pack("!H", 20) + p[4:]
    q = ah(0x300)
    q = q[:2] + struct.pack("!H", 20) + q[4:]
    assert check([p, q], [key(ESP, 0x300), key(AH, 0x300)]) == [OK, OK]


def test_spi_beyond_the_packet_is_not_read_from_the_next_bytes() -> None:
    # a truncated packet followed in the buffer by bytes that would complete a known SPI
    p = esp(0x400)
    cut = p[:22]
    cut = cut[:2] + struct.pack("!H", 22) + cut[4:]
    buf = cut + p[22:]
    got = call(buf, [0], [22], LOCAL, [key(ESP, 0x400)])
    assert got == ([TRUNCATED], [-1])


def test_empty_key_set_gives_unknown() -> None:
    pkts = [esp(0), esp(0xFFFFFFFF), ah(5), esp(5, dst=OTHER_DST), ipv4(17, bytes(8))]
    assert check(pkts, []) == [UNKNOWN, UNKNOWN, UNKNOWN, CLEAR, CLEAR]


def test_spi_zero_and_all_ones() -> None:
    keys = [key(ESP, 0), key(ESP, 0xFFFFFFFF), key(AH, 0), key(AH, 0xFFFFFFFF)]
    pkts = [esp(0), esp(0xFFFFFFFF), ah(0), ah(0xFFFFFFFF), esp(1), ah(0xFFFFFFFE)]
    assert check(pkts, keys) == [OK, OK, OK, OK, UNKNOWN, UNKNOWN]
    assert call(b"".join(pkts[:4]), [0, len(pkts[0]), len(pkts[0]) * 2,
                                     len(pkts[0]) * 2 + len(pkts[2])],
                [len(p) for p in pkts[:4]], LOCAL, keys)[1] == [0, 1, 2, 3]


def test_protocol_is_part_of_the_key() -> None:
    keys = [key(6, 0x1000), key(17, 0x3000), key(ESP, 0x1000), key(AH, 0x2000)]
    pkts = [esp(0x1000), ah(0x1000), esp(0x2000), ah(0x2000), esp(0x3000), ah(0x3000)]
    kinds = check(pkts, keys)
    assert kinds == [OK, UNKNOWN, UNKNOWN, OK, UNKNOWN, UNKNOWN]
    assert call(b"".join(pkts[:4]), np.cumsum([0] + [len(p) for p in pkts[:3]]).tolist(),
                [len(p) for p in pkts[:4]], LOCAL, keys)[1] == [2, -1, -1, 3]


def test_each_non_ok_kind_by_hand() -> None:
    keys = [key(ESP, 9), key(AH, 9)]
    cases = [
        (b"", OTHER),
        (esp(9, version=6), OTHER),
        (esp(9, version=0), OTHER),
        (b"\x45", CLEAR),  # IPv4 but shorter than a header
        (esp(9)[:19], CLEAR),
        (esp(9, ihl=4), CLEAR),  # ihl below 20 bytes
        (esp(9, ihl=0), CLEAR),
        (esp(9, total=19), CLEAR),  # total below the header
        (esp(9, total=200), CLEAR),  # total beyond the packet
        (ipv4(17, struct.pack("!II", 9, 7)), CLEAR),
        (ipv4(6, struct.pack("!II", 9, 7) + bytes(20)), CLEAR),
        (esp(9, dst=OTHER_DST), CLEAR),
        (ah(9, dst=0), CLEAR),
        (esp(9, frag=0x2000), FRAGMENT),  # MF
        (esp(9, frag=0x0001), FRAGMENT),  # offset
        (ah(9, frag=0x1FFF), FRAGMENT),
        (esp(9, frag=0x4000), OK),  # DF alone is not a fragment
        (esp(9, frag=0x8000), OK),  # the reserved bit neither
        (esp(9, ihl=6), OPTIONS),
        (ah(9, ihl=15), OPTIONS),
        (esp(9, ihl=6, frag=0x2000), FRAGMENT),  # fragment is checked before options
        (esp(9, ihl=6, dst=OTHER_DST), CLEAR),
        (esp(9), OK),
        (ah(9), OK),
    ]
    got = check([p for p, _ in cases], keys)
    assert got == [k for _, k in cases]


def test_trailing_bytes_beyond_total_length_are_fine() -> None:
    p = esp(0x77) + b"\xAA" * 30  # Ethernet-style padding after the IP packet
    assert check([p], [key(ESP, 0x77)]) == [OK]


def test_local_address_edges() -> None:
    for local in (0, 0xFFFFFFFF, 0x7F000001):
        p = esp(3, dst=local)
        assert check([p, esp(3, dst=local ^ 1)], [key(ESP, 3)], local=local) == [OK, CLEAR]


def test_zero_length_packet_at_the_end_of_the_buffer() -> None:
    p = esp(3)
    assert call(p, [len(p), 0], [0, len(p)], LOCAL, [key(ESP, 3)]) == ([OTHER, OK], [-1, 0])


def test_overlapping_and_repeated_spans() -> None:
    p = esp(3)
    keys = [key(ESP, 3)]
    offsets, lengths = [0, 0, 0, 1], [len(p), 24, 23, len(p) - 1]
    assert call(p, offsets, lengths, LOCAL, keys) == oracle(p, offsets, lengths, LOCAL, keys)


def test_many_keys_every_slot_found() -> None:
    rng = np.random.default_rng(7)
    keys = random_keys(rng, 3000)
    pkts = []
    for k in keys:
        proto, spi = k >> 32, k & 0xFFFFFFFF
        pkts.append(esp(spi) if proto == ESP else ah(spi) if proto == AH else esp(0x5A5A5A5A))
    kinds = check(pkts, keys)
    assert kinds.count(OK) >= len(keys) - 2


def test_scapy_built_packets() -> None:
    pytest.importorskip("scapy")
    from scapy.layers.inet import IP
    from scapy.layers.ipsec import AH as ScapyAH
    from scapy.layers.ipsec import ESP as ScapyESP

    keys = [key(ESP, 0xDEADBEEF), key(AH, 0x01020304)]
    pkts = [
        bytes(IP(src="192.168.0.1", dst="10.0.0.1") / ScapyESP(spi=0xDEADBEEF, seq=1,
                                                                data=b"x" * 40)),
        bytes(IP(src="192.168.0.1", dst="10.0.0.1") / ScapyAH(spi=0x01020304, seq=1,
                                                               icv=bytes(12), nh=4)),
        bytes(IP(src="192.168.0.1", dst="10.0.0.1") / ScapyAH(spi=0xDEADBEEF, seq=1,
                                                               icv=bytes(12), nh=4)),
        bytes(IP(src="192.168.0.1", dst="10.0.0.1", flags="MF") /
              ScapyESP(spi=0xDEADBEEF, seq=1, data=b"x" * 8)),
        bytes(IP(src="192.168.0.1", dst="10.0.0.1", options=b"\x01\x01\x01\x00") /
              ScapyESP(spi=0xDEADBEEF, seq=1, data=b"x" * 8)),
        bytes(IP(src="192.168.0.1", dst="10.0.0.2") / ScapyESP(spi=0xDEADBEEF, seq=1)),
    ]
    assert check(pkts, keys) == [OK, OK, UNKNOWN, FRAGMENT, OPTIONS, CLEAR]


# ---------------------------------------------------------------- 3. refused arguments

def _args(n: int = 2, m: int = 2, buf_len: int = 100) -> dict[str, np.ndarray]:
    return {
        "buf": np.zeros(buf_len, np.uint8),
        "offsets": np.arange(n, dtype=np.int64) * 40,
        "lengths": np.full(n, 40, np.int64),
        "keys": np.array([key(ESP, i + 1) for i in range(m)], np.int64),
        "kinds": np.zeros(n, np.uint8),
        "slots": np.zeros(n, np.int32),
    }


def _run(a: dict[str, np.ndarray]) -> None:
    _esp.spi_lookup(a["buf"], a["offsets"], a["lengths"], LOCAL, a["keys"], a["kinds"],
                    a["slots"])


def test_valid_arguments_are_accepted() -> None:
    _run(_args())


@pytest.mark.parametrize("keys", [
    [key(ESP, 2), key(ESP, 1)],
    [key(AH, 1), key(ESP, 1)],
    [key(ESP, 1), key(ESP, 1)],
    [key(ESP, 1), key(ESP, 3), key(ESP, 3)],
    [key(ESP, 1), key(ESP, 5), key(ESP, 4), key(ESP, 6)],
])
def test_keys_not_strictly_ascending_are_refused(keys: list[int]) -> None:
    a = _args()
    a["keys"] = np.array(keys, np.int64)
    with pytest.raises(ValueError):
        _run(a)


@pytest.mark.parametrize("name", ["offsets", "lengths", "kinds", "slots"])
@pytest.mark.parametrize("delta", [-1, 1])
def test_length_mismatch_is_refused(name: str, delta: int) -> None:
    a = _args(n=2)
    arr = a[name]
    a[name] = np.resize(arr, len(arr) + delta).astype(arr.dtype)
    with pytest.raises(ValueError):
        _run(a)


@pytest.mark.parametrize("offset,length", [
    (61, 40),  # one byte past the end
    (100, 1),
    (101, 0),
    (-1, 10),
    (0, -1),
    (BIG, 40),  # offset + length wraps int64
    (40, BIG),
    (2**63 - 1, 2**63 - 1),
    (-(2**63), 10),
])
def test_span_outside_the_buffer_is_refused(offset: int, length: int) -> None:
    a = _args(n=2)
    a["offsets"][1] = offset
    a["lengths"][1] = length
    with pytest.raises(ValueError):
        _run(a)


def test_span_ending_at_the_buffer_end_is_accepted() -> None:
    a = _args(n=2)
    a["offsets"][1], a["lengths"][1] = 60, 40
    _run(a)
    a["offsets"][1], a["lengths"][1] = 100, 0
    _run(a)


# ---------------------------------------------------------------- 4. the empty batch

def test_empty_batch() -> None:
    a = _args(n=0, m=0, buf_len=0)
    _run(a)
    a = _args(n=0, m=3, buf_len=10)
    _run(a)
    assert check([], [key(ESP, 1)]) == []
