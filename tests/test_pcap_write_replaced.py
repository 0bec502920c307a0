"""``Capture.write_replaced``: the one-pass writer of rebuilt frames that ``ipsecfast
encrypt`` / ``decrypt`` use, checked byte for byte against ``pcap.write`` of
``replace_ip_packets`` (itself checked against hand-built frames and scapy in
test_pcap.py), and its output read back by scapy."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from scapy.utils import RawPcapReader
from test_pcap import CASES, _ip_of_size, _longer

from ipsecfast import _pcap, pcap
from ipsecfast.packets import PacketBatch


def _two_step(cap: pcap.Capture, new: PacketBatch, keep: np.ndarray | None) -> bytes:
    fh = io.BytesIO()
    pcap.write(fh, cap.replace_ip_packets(new, keep))
    return fh.getvalue()


def _one_pass(cap: pcap.Capture, new: PacketBatch, keep: np.ndarray | None,
              header: bool = True, path: Path | None = None) -> tuple[bytes, tuple[int, int, int]]:
    """Through a BytesIO (formatted in large chunks, then ``fh.write``), or with ``path``
    through a real file (staged and written by the compiled loop on its descriptor)."""
    if path is None:
        fh = io.BytesIO()
        stats = cap.write_replaced(fh, new, keep, file_header=header)
        return fh.getvalue(), stats
    with open(path, "wb") as f:
        f.write(b"head")  # something already buffered: it must land first
        stats = cap.write_replaced(f, new, keep, file_header=header)
        f.write(b"tail")  # and what comes after, after
    data = path.read_bytes()
    assert data[:4] == b"head" and data[-4:] == b"tail"
    return data[4:-4], stats


@pytest.mark.parametrize("to_file", [False, True])
@pytest.mark.parametrize("nano", [False, True])
@pytest.mark.parametrize("linktype", sorted(CASES))
def test_same_bytes_as_write_of_replace(linktype: int, nano: bool, to_file: bool,
                                        tmp_path: Path) -> None:
    cases = CASES[linktype]
    frames = [f for f, _, _ in cases]
    stamps = np.arange(len(frames), dtype=np.int64) * 1_234_567_891 + 17
    cap = pcap.Capture(PacketBatch.from_list(frames), linktype, stamps,
                       np.array([len(f) + 4 for f in frames]), nanosecond=nano)
    old = cap.ip_packets().to_list()
    for grow, keep in ((0, None), (7, np.array([i % 3 != 1 for i in range(len(old))])),
                       (-1, np.zeros(len(old), dtype=bool))):
        # grow -1: packets cut to 20-28 bytes (Ethernet frames then need padding)
        new = [p[:20 + i % 9] if grow < 0 else _longer(p, grow * i) for i, p in enumerate(old)]
        batch = PacketBatch.from_list(new)
        want = _two_step(cap, batch, keep)
        path = tmp_path / "o.pcap" if to_file else None
        got, (n, nbytes, longest) = _one_pass(cap, batch, keep, path=path)
        assert got == want
        ref = cap.replace_ip_packets(batch, keep)
        assert (n, nbytes) == (len(ref), ref.frames.nbytes)
        assert longest == (int(ref.frames.lengths.max()) if len(ref) else 0)
        # a later chunk of the same file: the records alone
        assert _one_pass(cap, batch, keep, header=False, path=path)[0] == want[24:]


def test_scapy_reads_the_records(tmp_path: Path) -> None:
    """Independent of our reader: scapy sees each record's bytes, lengths and time."""
    frames = [f for f, _, p in CASES[1] if p is not None]
    cap = pcap.Capture(PacketBatch.from_list(frames), 1,
                       np.array([1_700_000_000_123_456_789 + i for i in range(len(frames))]))
    new = [_ip_of_size(24 + 300 * i, i) for i in range(len(frames))]
    path = tmp_path / "o.pcap"
    with open(path, "wb") as fh:
        cap.write_replaced(fh, PacketBatch.from_list(new))
    want = cap.replace_ip_packets(PacketBatch.from_list(new)).frames.to_list()
    with RawPcapReader(str(path)) as reader:
        got = list(reader)
    assert [raw for raw, _ in got] == want
    assert [(m.caplen, m.wirelen) for _, m in got] == [(len(w), len(w)) for w in want]
    assert [(m.sec, m.usec) for _, m in got] == [(1_700_000_000, 123_456)] * len(want)


def test_records_cut_into_many_compiled_calls(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    """Records formatted in runs of about ``_CHUNK`` bytes: the runs join seamlessly,
    a record larger than a run included."""
    head = bytes(14)[:12] + b"\x08\x00"
    rng = np.random.default_rng(5)
    sizes = rng.integers(20, 1500, 400)
    frames = [head + _ip_of_size(int(s), i % 200) for i, s in enumerate(sizes)]
    cap = pcap.Capture(PacketBatch.from_list(frames), 1, np.arange(400) * 1000)
    new = PacketBatch.from_list([_ip_of_size(int(s), i % 200)
                                 for i, s in enumerate(rng.integers(20, 3000, 400))])
    keep = rng.random(400) < 0.8
    want = _two_step(cap, new, keep)
    monkeypatch.setattr(pcap, "_CHUNK", 2000)
    assert _one_pass(cap, new, keep)[0] == want
    # staged on a file descriptor: a stage of 2000 bytes, records of up to 3000 + 30
    monkeypatch.setattr(pcap, "_STAGE", 2000)
    assert _one_pass(cap, new, keep, path=tmp_path / "s.pcap")[0] == want


def test_bad_arguments_are_refused() -> None:
    cap = pcap.Capture(PacketBatch.from_list([f for f, _, _ in CASES[1]]), 1)
    n = int(cap.is_ipv4.sum())
    with pytest.raises(ValueError, match="IPv4 frames"):
        cap.write_replaced(io.BytesIO(), PacketBatch.empty())
    with pytest.raises(ValueError, match="keep"):
        cap.write_replaced(io.BytesIO(), cap.ip_packets(), np.ones(n + 1, dtype=bool))
    late = pcap.Capture(cap.frames, 1, np.full(len(cap), 1 << 62))
    with pytest.raises(ValueError, match="timestamps"):
        late.write_replaced(io.BytesIO(), late.ip_packets())
    huge = PacketBatch.from_list([bytes(300_000)] * n)
    with pytest.raises(ValueError, match="longer than"):
        cap.write_replaced(io.BytesIO(), huge)


def test_compiled_pass_checks_every_span() -> None:
    """The compiled pass reads only inside its buffers, whatever the caller passes."""
    src = np.zeros(100, dtype=np.uint8)
    pkt = np.zeros(50, dtype=np.uint8)
    out = np.zeros(1000, dtype=np.uint8)
    one = np.array([0], dtype=np.int64)

    def call(src_off: int = 0, src_len: int = 60, hdr: int = 14, idx: int = 0,
             pkt_off: int = 0, pkt_len: int = 40, out_len: int = 60, size: int = 1000) -> int:
        a = lambda v: np.array([v], dtype=np.int64)  # noqa: E731
        return _pcap.write_rebuilt(src, a(src_off), a(src_len), a(hdr), a(idx), pkt,
                                   a(pkt_off), a(pkt_len), a(out_len), a(out_len), one * 0,
                                   False, 1, out[:size])

    assert call() == 76
    for bad in ({"src_off": 90}, {"src_off": -1}, {"hdr": 61}, {"idx": 1}, {"pkt_off": 20},
                {"pkt_len": -1}, {"out_len": 50}, {"size": 70},
                {"idx": -1, "src_off": 50, "src_len": 60}, {"idx": -1, "out_len": 59}):
        with pytest.raises(ValueError):
            call(**bad)  # type: ignore[arg-type]


def test_a_file_that_refuses_the_records_raises(tmp_path: Path) -> None:
    """write() failing on the descriptor (here: opened read-only) is an OSError, not a
    crash or a silent loss."""
    cap = pcap.Capture(PacketBatch.from_list([f for f, _, _ in CASES[1]]), 1)
    path = tmp_path / "ro.pcap"
    path.write_bytes(b"")
    with open(path, "rb") as fh, pytest.raises(OSError):
        cap.write_replaced(fh, cap.ip_packets(), file_header=False)  # type: ignore[arg-type]


def test_link_parse_checks_every_span() -> None:
    """The compiled link-layer parse reads only inside its buffer, whatever it is given."""
    buf = np.zeros(64, dtype=np.uint8)
    for off, n in ((1 << 40, 100), (60, 10), (-1, 4), (0, -1)):
        with pytest.raises(ValueError):
            _pcap.parse_links(buf, np.array([off]), np.array([n]), 1)
    with pytest.raises(ValueError):
        _pcap.parse_links(buf, np.array([0, 1]), np.array([1]), 1)


@pytest.mark.parametrize("opener", ["gzip", "bz2", "lzma"])
def test_compressing_wrappers_get_the_bytes(opener: str, tmp_path: Path) -> None:
    """A wrapper whose ``fileno`` leads to a regular file but whose ``write`` compresses
    must be written through ``write`` (review: the records went raw into the .gz)."""
    import importlib

    mod = importlib.import_module(opener)
    frames = [f for f, _, _ in CASES[1]]
    cap = pcap.Capture(PacketBatch.from_list(frames), 1, np.arange(len(frames)) * 5)
    new = cap.ip_packets()
    path = tmp_path / f"o.pcap.{opener}"
    with mod.open(path, "wb") as fh:
        cap.write_replaced(fh, new)
    with mod.open(path, "rb") as fh:
        assert fh.read() == _two_step(cap, new, None)
