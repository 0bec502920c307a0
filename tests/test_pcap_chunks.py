"""``pcap.iter_chunks`` (a capture read a chunk at a time; classic pcap scanned
resumably) and ``run_pcap`` over it. Oracle: the frames, timestamps and wire lengths
written with ``struct`` from draft-ietf-opsawg-pcap §4-5 (both byte orders, micro- and
nanosecond magic) and by scapy's pcapng writer, and the truncation offsets of the spec's
record layout."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("scapy")
from scapy.layers.inet import IP, UDP  # noqa: E402
from scapy.layers.l2 import Ether  # noqa: E402
from scapy.utils import PcapNgWriter  # noqa: E402

from ipsecfast import pcap  # noqa: E402
from ipsecfast.exceptions import PcapError  # noqa: E402


def frames(n: int, seed: int = 1) -> list[bytes]:
    rnd = random.Random(seed)
    return [bytes(Ether() / IP(src="10.1.0.1", dst=f"10.2.0.{i % 250 + 1}", id=i)
                  / UDP(sport=1000 + i, dport=53) / bytes(rnd.randrange(0, 300)))
            for i in range(n)]


def classic(fr: list[bytes], *, big: bool = False, nano: bool = False) -> tuple[bytes, list[int]]:
    """A classic pcap file (§4 header, §5 records) and each record's timestamp in ns."""
    e = ">" if big else "<"
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = [struct.pack(e + "IHHiIII", magic, 2, 4, 0, 0, 65535, 1)]
    ts = []
    for i, f in enumerate(fr):
        sec, frac = 1_700_000_000 + i, (i * 7919) % (10**9 if nano else 10**6)
        ts.append(sec * 10**9 + frac * (1 if nano else 1000))
        out.append(struct.pack(e + "IIII", sec, frac, len(f), len(f) + 4) + f)
    return b"".join(out), ts


def flatten(chunks: list[pcap.Capture]) -> tuple[list[bytes], list[int], list[int]]:
    got, ts, orig = [], [], []
    for c in chunks:
        got += c.frames.to_list()
        ts += c.timestamps.tolist()
        orig += c.orig_lengths.tolist()
    return got, ts, orig


@pytest.mark.parametrize("big", [False, True])
@pytest.mark.parametrize("nano", [False, True])
@pytest.mark.parametrize("chunk", [1, 3, 64, 10_000])
def test_classic_chunks_equal_the_file(big: bool, nano: bool, chunk: int) -> None:
    fr = frames(150)
    data, ts = classic(fr, big=big, nano=nano)
    chunks = list(pcap.iter_chunks(np.frombuffer(data, dtype=np.uint8), chunk))
    assert [len(c) for c in chunks] == [min(chunk, 150 - a) for a in range(0, 150, chunk)]
    got, got_ts, orig = flatten(chunks)
    assert got == fr
    assert got_ts == ts
    assert orig == [len(f) + 4 for f in fr]
    assert all(c.linktype == 1 and c.nanosecond == nano for c in chunks)
    # each chunk's IPv4 packets are the frames' without the 14-byte Ethernet header
    assert [p for c in chunks for p in c.ip_packets().to_list()] == [f[14:] for f in fr]


@pytest.mark.parametrize("chunk", [1, 16, 64, 100])
@pytest.mark.parametrize("n", [0, 1, 150, 2000])
def test_tapered_chunks_equal_the_file(chunk: int, n: int) -> None:
    """``taper``: the same frames in order; the first ``chunk`` frames come in growing
    pieces starting at chunk / 16, no chunk passes ``chunk``, and near the end the chunks
    shrink to about half of what is left."""
    fr = frames(n, seed=n)
    data, ts = classic(fr)
    chunks = list(pcap.iter_chunks(np.frombuffer(data, dtype=np.uint8), chunk, taper=True))
    got, got_ts, _ = flatten(chunks)
    assert got == fr and got_ts == ts
    sizes = [len(c) for c in chunks]
    least = max(1, chunk // 16)
    if n == 0:
        assert sizes == [0]
        return
    assert sizes[0] == min(least, n)
    assert all(least <= k <= chunk for k in sizes[:-1]) and 1 <= sizes[-1] <= chunk
    ends = np.cumsum(sizes).tolist()
    assert min(n, chunk) in ends  # (the first chunk's frames, in pieces)
    ramp = sizes[:ends.index(min(n, chunk)) + 1]
    assert ramp == sorted(ramp) and (len(ramp) > 1) == (min(n, chunk) >= 3 * least)
    if n >= 8 * chunk and chunk >= 16:  # the full size is reached; the tail tapers off
        assert chunk in sizes
        assert sizes[-1] <= max(least, chunk // 2)
        assert len(sizes) > -(-n // chunk) + 1


def test_pcapng_chunks_equal_the_file(tmp_path: Path) -> None:
    fr = frames(40, seed=2)
    path = tmp_path / "x.pcapng"
    w = PcapNgWriter(str(path))
    for i, f in enumerate(fr):
        p = Ether(f)
        p.time = 1_700_000_000 + i / 8
        w.write(p)
    w.close()
    chunks = list(pcap.iter_chunks(path, 16))
    assert [len(c) for c in chunks] == [16, 16, 8]
    got, ts, _ = flatten(chunks)
    assert got == fr
    assert ts == [1_700_000_000 * 10**9 + i * 125_000_000 for i in range(40)]


def test_an_empty_capture_is_one_empty_chunk(tmp_path: Path) -> None:
    data, _ = classic([])
    path = tmp_path / "empty.pcap"
    path.write_bytes(data)
    chunks = list(pcap.iter_chunks(path, 8))
    assert len(chunks) == 1 and len(chunks[0]) == 0 and chunks[0].linktype == 1


def test_a_truncated_record_raises_when_its_chunk_is_reached() -> None:
    fr = frames(10)
    data, _ = classic(fr)
    starts = [24]
    for f in fr:
        starts.append(starts[-1] + 16 + len(f))
    cut = starts[7] + 10  # inside record 7's header
    it = pcap.iter_chunks(np.frombuffer(data[:cut], dtype=np.uint8), 3)
    assert [len(next(it)) for _ in range(2)] == [3, 3]  # records 0-5 read fine
    with pytest.raises(PcapError, match=f"record header at byte offset {starts[7]}: 10 bytes"):
        next(it)


def test_map_file_maps_a_regular_file_and_reads_others(tmp_path: Path) -> None:
    data, _ = classic(frames(5))
    path = tmp_path / "m.pcap"
    path.write_bytes(data)
    mapped = pcap.map_file(path)
    assert bytes(mapped) == data and not mapped.flags.writeable
    empty = tmp_path / "e"
    empty.write_bytes(b"")
    assert pcap.map_file(empty).size == 0
    with pytest.raises(FileNotFoundError):
        pcap.map_file(tmp_path / "missing")


def test_encrypt_of_a_capture_corrupt_in_a_later_chunk_fails_and_leaves_no_output(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from test_cli_helpers import gcm_manual_config

    from ipsecfast.cli import main

    cfg = tmp_path / "a.cfg"
    cfg.write_text(gcm_manual_config(1).replace("esp-gcm", "esp-null esp-sha-hmac").replace(
        " cipher ", " authenticator "))
    data, _ = classic(frames(50))
    src, dst = tmp_path / "in.pcap", tmp_path / "out.pcap"
    src.write_bytes(data[:-5])  # the last record is cut short
    assert main(["encrypt", "--config", str(cfg), "--quiet", "--chunk-packets", "8",
                 str(src), str(dst)]) == 2
    assert "truncated" in capsys.readouterr().err
    assert not dst.exists()
    src.write_bytes(data)
    assert main(["encrypt", "--config", str(cfg), "--quiet", "--chunk-packets", "8",
                 str(src), str(dst)]) == 0
    assert len(pcap.read(dst)) == 50


def test_iter_chunks_takes_bytes_and_rejects_other_sources() -> None:
    fr = frames(7)
    data, _ = classic(fr)
    assert flatten(list(pcap.iter_chunks(data, 3)))[0] == fr
    assert flatten(list(pcap.iter_chunks(bytearray(data), 3)))[0] == fr
    with pytest.raises(TypeError):
        list(pcap.iter_chunks(12345, 3))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        list(pcap.iter_chunks(np.zeros(30, dtype=np.int64), 3))
