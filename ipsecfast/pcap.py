"""pcap / pcapng capture files as packet batches.

``read()`` loads a whole file into one ``uint8`` buffer and returns a :class:`Capture`
whose frames are a zero-copy :class:`~ipsecfast.packets.PacketBatch` over that buffer;
``iter_chunks()`` reads a (memory-mapped) file as consecutive captures of N frames,
scanning a classic pcap file a chunk at a time;
the record scan, the link-layer parse, the frame rebuild and the writer are compiled
loops (``src/_pcap.pyx``), so no Python object is made per packet.

Reads classic pcap (both byte orders, micro- and nanosecond timestamps) and pcapng
(sections of either byte order; Enhanced, Simple and obsolete Packet Blocks; every
other block type is skipped). Writes classic pcap. A truncated or corrupt file raises
:class:`~ipsecfast.exceptions.PcapError` naming the byte offset of the bad record.

Link types understood (the IPv4 header is located in each frame): Ethernet (1) with
802.1Q / 802.1ad / QinQ tags and RFC 1042 LLC/SNAP, raw IP (101, 228, and DLT_RAW 12
/ 14), Linux cooked SLL (113) and SLL2 (276), PPP (9), Cisco HDLC (104), Frame Relay
(107: RFC 2427 NLPID 0xCC, RFC 2427 SNAP, and Cisco's ethertype encapsulation), BSD
loopback (0, 108). Frames of other link types, and non-IPv4 frames, are carried
through untouched.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from typing import IO, Any, Literal, NamedTuple

import numpy as np
import numpy.typing as npt

from . import _pcap
from .exceptions import PcapError
from .packets import PacketBatch

__all__ = [
    "Capture",
    "iter_chunks",
    "map_file",
    "read",
    "write",
    "LINKTYPE_NULL",
    "LINKTYPE_ETHERNET",
    "LINKTYPE_PPP",
    "LINKTYPE_RAW",
    "LINKTYPE_C_HDLC",
    "LINKTYPE_FRELAY",
    "LINKTYPE_LOOP",
    "LINKTYPE_LINUX_SLL",
    "LINKTYPE_IPV4",
    "LINKTYPE_LINUX_SLL2",
]

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_PPP = 9
LINKTYPE_RAW = 101
LINKTYPE_C_HDLC = 104
LINKTYPE_FRELAY = 107
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_LINUX_SLL2 = 276

# draft-ietf-opsawg-pcap §4: magic numbers as read little-endian
_MAGIC_US_LE = 0xA1B2C3D4
_MAGIC_NS_LE = 0xA1B23C4D
_MAGIC_US_BE = 0xD4C3B2A1
_MAGIC_NS_BE = 0x4D3CB2A1
_PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
_MAX_SNAPLEN = 262144  # libpcap's MAXIMUM_SNAPLEN; longer records read as corrupt
_MAX_TS_NS = (1 << 32) * 1_000_000_000  # classic pcap seconds are 32-bit unsigned

Source = str | os.PathLike[str] | bytes | bytearray | memoryview | IO[bytes]

_I64 = np.int64
# IEEE 802.3 minimum frame size, 64 bytes, less the 4-byte FCS pcap files leave out
_ETH_MIN_FRAME = 60


class Capture:
    """Frames of one link type with their timestamps and where their IPv4 header starts.

    Attributes (numpy arrays aligned with ``frames``):

    - ``linktype``: the LINKTYPE_ value of every frame (for pcapng, the first interface's)
    - ``frames``: a :class:`PacketBatch` of whole link-layer frames as captured
    - ``timestamps``: int64 nanoseconds since the epoch (0 for pcapng Simple Packet Blocks)
    - ``orig_lengths``: int64 length of each frame on the wire (>= its captured length)
    - ``l3_offsets``: int64 offset of the network-layer header in the frame, -1 when the
      link header is short or the link type is not one ipsecfast knows
    - ``is_ipv4``: bool, the link layer says the payload is IPv4 (for raw IP: version 4).
      The IPv4 header itself is not validated here: a malformed one is left to the
      IPsec layer, which drops it with a reason instead of passing it in the clear.
    - ``nanosecond``: the file recorded timestamps finer than microseconds

    pcapng frames from an interface whose link type differs from the first interface's
    are kept, with ``is_ipv4`` False and ``l3_offsets`` -1.
    """

    __slots__ = (
        "linktype",
        "frames",
        "timestamps",
        "orig_lengths",
        "l3_offsets",
        "is_ipv4",
        "nanosecond",
        "_ip_lengths",
    )

    linktype: int
    frames: PacketBatch
    timestamps: npt.NDArray[np.int64]
    orig_lengths: npt.NDArray[np.int64]
    l3_offsets: npt.NDArray[np.int64]
    is_ipv4: npt.NDArray[np.bool_]
    nanosecond: bool
    _ip_lengths: npt.NDArray[np.int64]

    def __init__(
        self,
        frames: PacketBatch,
        linktype: int = LINKTYPE_ETHERNET,
        timestamps: npt.ArrayLike | None = None,
        orig_lengths: npt.ArrayLike | None = None,
        *,
        nanosecond: bool = False,
        _foreign: npt.NDArray[np.bool_] | None = None,
    ) -> None:
        if not isinstance(frames, PacketBatch):
            raise TypeError("frames must be a PacketBatch")
        if not 0 <= int(linktype) <= 0xFFFF:
            raise ValueError(f"link type {linktype} is not a 16-bit value")
        n = len(frames)
        self.linktype = int(linktype)
        self.frames = frames
        self.timestamps = _aligned(timestamps, n, "timestamps", 0)
        orig = _aligned(orig_lengths, n, "orig_lengths", None)
        self.orig_lengths = frames.lengths.copy() if orig is None else orig
        self.nanosecond = bool(nanosecond)
        l3, ip_len, v4 = _pcap.parse_links(frames.buffer, frames.offsets, frames.lengths, self.linktype)
        if _foreign is not None and _foreign.any():
            l3[_foreign] = -1
            v4[_foreign] = False
        self.l3_offsets = l3
        self.is_ipv4 = v4
        self._ip_lengths = ip_len

    def __len__(self) -> int:
        return len(self.frames)

    def slice(self, a: int, b: int) -> Capture:
        """Frames ``a:b`` as a capture of their own: a zero-copy view of just the bytes
        those frames span, with the link layers already parsed sliced, not parsed again
        (frames the reader did not take for IPv4, e.g. of another pcapng interface, stay
        so)."""
        frames = self.frames[a:b]
        if len(frames):
            lo = int(frames.offsets.min())
            hi = int((frames.offsets + frames.lengths).max())
            frames = PacketBatch._trusted(frames.buffer[lo:hi], frames.offsets - lo,
                                          frames.lengths)
        sub = Capture.__new__(Capture)
        sub.linktype = self.linktype
        sub.frames = frames
        sub.timestamps = self.timestamps[a:b]
        sub.orig_lengths = self.orig_lengths[a:b]
        sub.nanosecond = self.nanosecond
        sub.l3_offsets = self.l3_offsets[a:b]
        sub.is_ipv4 = self.is_ipv4[a:b]
        sub._ip_lengths = self._ip_lengths[a:b]
        return sub

    def __repr__(self) -> str:
        return (
            f"Capture({len(self)} frames, linktype {self.linktype}, "
            f"{int(self.is_ipv4.sum())} IPv4)"
        )

    def ip_packets(self) -> PacketBatch:
        """The IPv4 packets (frames with ``is_ipv4``) without their link header: a
        zero-copy view. Link-layer trailers (Ethernet padding, FCS) are cut off using the
        IPv4 total length when that is plausible."""
        v4 = self.is_ipv4
        return PacketBatch(
            self.frames.buffer,
            self.frames.offsets[v4] + self.l3_offsets[v4],
            self._ip_lengths[v4],
        )

    def replace_ip_packets(
        self, packets: PacketBatch, keep: npt.ArrayLike | None = None
    ) -> Capture:
        """A new capture where IPv4 frame *i* is its original link header followed by
        ``packets[i]`` (``packets`` is aligned with :meth:`ip_packets`); frames whose
        ``keep`` entry is False are dropped; non-IPv4 frames are copied unchanged.

        Trailers of the old frames are not kept; an 802.3 length field (LLC/SNAP) is set
        for the new length (without padding). A rebuilt Ethernet frame (``LINKTYPE_ETHERNET``)
        shorter than 60 bytes, the IEEE 802.3 minimum without the FCS, is padded with zero
        bytes to 60; as Linux pads (``ETH_ZLEN``) a frame whose VLAN tags are in the frame
        data, tagged frames are padded to 60 too, tags included. Other link types (raw IP,
        Linux SLL, PPP, ...) are not padded. Timestamps carry over; the wire length of a
        rebuilt frame is its new (padded) length. The new frames are gathered into one
        buffer by a compiled loop.
        """
        plan = self._rebuild_plan(packets, keep)
        # The compiled rebuild writes header + packet only, so the bytes after a short
        # frame's data stay as allocated: zeroed when there is padding. np.zeros costs
        # about what np.empty does (fresh pages come zeroed from the OS and are touched
        # by the rebuild anyway), far less than scattering zeros per padded byte.
        out_len = plan.out_len
        out_off = np.zeros(out_len.size, dtype=_I64)
        if out_len.size > 1:
            np.cumsum(out_len[:-1], out=out_off[1:])
        size = int(out_len.sum())
        out = np.zeros(size, dtype=np.uint8) if plan.pad else np.empty(size, dtype=np.uint8)
        _pcap.rebuild(
            self.frames.buffer, plan.src_off, plan.src_len, plan.hdr_len, plan.pkt_index,
            packets.buffer, packets.offsets, packets.lengths,
            out, out_off, self.linktype,
        )
        return Capture(
            PacketBatch(out, out_off, out_len),
            self.linktype,
            self.timestamps[plan.sel],
            plan.orig,
            nanosecond=self.nanosecond,
        )

    def write_replaced(
        self, fh: IO[bytes], packets: PacketBatch, keep: npt.ArrayLike | None = None,
        *, file_header: bool = True,
    ) -> tuple[int, int, int]:
        """Write ``replace_ip_packets(packets, keep)`` to the binary file ``fh`` as
        :func:`write` would (the 24-byte file header only if ``file_header``: a later
        chunk of the same file), without building that capture: each record is formatted
        straight from the old frames and the new packets by one compiled pass, one copy
        of the bytes fewer. Returns (frames written, their bytes, the longest frame) so
        that a caller writing chunks can fix the header's SnapLen at the end."""
        plan = self._rebuild_plan(packets, keep)
        n = plan.sel.size
        ts = np.ascontiguousarray(self.timestamps[plan.sel], dtype=_I64)
        orig = np.maximum(plan.orig, plan.out_len)
        longest = int(plan.out_len.max()) if n else 0
        if n and (int(ts.min()) < 0 or int(ts.max()) >= _MAX_TS_NS):
            raise ValueError("timestamps must lie in [0, 2**32) seconds for classic pcap")
        if longest > _MAX_SNAPLEN:
            raise ValueError(f"a frame is longer than {_MAX_SNAPLEN} bytes, more than pcap readers accept")
        if file_header:
            fh.write(_file_header(self.nanosecond, max(65535, longest), self.linktype))
        if n == 0:
            return 0, 0, 0
        fd = _regular_fd(fh)
        if fd is not None:
            # staged in a buffer that stays in the CPU cache, written from there by the
            # compiled loop: the formatted records never go out to memory and back
            fh.flush()
            _pcap.write_rebuilt_fd(
                fd, self.frames.buffer, plan.src_off, plan.src_len, plan.hdr_len,
                plan.pkt_index, packets.buffer, packets.offsets, packets.lengths,
                plan.out_len, orig, ts, self.nanosecond, self.linktype,
                np.empty(_STAGE, dtype=np.uint8))
            return n, int(plan.out_len.sum()), longest
        ends = np.cumsum(plan.out_len + 16)
        bounds = _chunk_bounds(ends)
        buf = np.empty(min(int(ends[-1]), 2 * _CHUNK), dtype=np.uint8)
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            size = int(ends[b - 1] - (ends[a - 1] if a else 0))
            if size > buf.size:
                buf = np.empty(size, dtype=np.uint8)
            done = _pcap.write_rebuilt(
                self.frames.buffer, plan.src_off[a:b], plan.src_len[a:b], plan.hdr_len[a:b],
                plan.pkt_index[a:b], packets.buffer, packets.offsets, packets.lengths,
                plan.out_len[a:b], orig[a:b], ts[a:b], self.nanosecond, self.linktype,
                buf[:size],
            )
            fh.write(buf[:done].data)
        return n, int(plan.out_len.sum()), longest

    def _rebuild_plan(self, packets: PacketBatch, keep: npt.ArrayLike | None) -> _Plan:
        """Which frames ``replace_ip_packets`` keeps and how each is rebuilt."""
        if not isinstance(packets, PacketBatch):
            raise TypeError("packets must be a PacketBatch")
        v4 = self.is_ipv4
        n_ip = int(v4.sum())
        if len(packets) != n_ip:
            raise ValueError(
                f"{len(packets)} packets given for {n_ip} IPv4 frames (see ip_packets())"
            )
        if keep is None:
            keep_ip = np.ones(n_ip, dtype=np.bool_)
        else:
            keep_ip = np.asarray(keep)
            if keep_ip.dtype != np.bool_ or keep_ip.shape != (n_ip,):
                raise ValueError(f"keep must be a bool array of {n_ip} entries")
        # Which frames survive, and for each IPv4 one which new packet it takes.
        pkt_of_frame = np.full(len(self), -1, dtype=_I64)
        pkt_of_frame[v4] = np.arange(n_ip, dtype=_I64)
        keep_frame = np.ones(len(self), dtype=np.bool_)
        keep_frame[v4] = keep_ip
        sel = np.flatnonzero(keep_frame)
        pkt_index = pkt_of_frame[sel]
        src_off = self.frames.offsets[sel]
        src_len = self.frames.lengths[sel]
        hdr_len = np.where(pkt_index >= 0, self.l3_offsets[sel], 0)
        rebuilt = pkt_index >= 0
        out_len = src_len.copy()
        new_len = hdr_len[rebuilt] + packets.lengths[pkt_index[rebuilt]]
        pad = (
            self.linktype == LINKTYPE_ETHERNET
            and new_len.size > 0
            and int(new_len.min()) < _ETH_MIN_FRAME
        )
        out_len[rebuilt] = np.maximum(new_len, _ETH_MIN_FRAME) if pad else new_len
        orig = self.orig_lengths[sel].copy()
        orig[rebuilt] = out_len[rebuilt]
        return _Plan(sel, pkt_index, src_off, src_len, hdr_len, out_len, orig, pad)


def _regular_fd(fh: Any) -> int | None:
    """The descriptor of a plain binary file (``open(path, "wb")``: ``FileIO``,
    ``BufferedWriter``, ``BufferedRandom``, exactly) open on a regular file, else None:
    a BytesIO, a pipe, or any wrapper (gzip, bz2, lzma, a hashing or counting writer)
    whose ``write`` must see the bytes, even if its ``fileno`` leads to a file."""
    import stat

    if type(fh) not in (io.FileIO, io.BufferedWriter, io.BufferedRandom):
        return None
    try:
        fd = int(fh.fileno())
        return fd if stat.S_ISREG(os.fstat(fd).st_mode) else None
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None


class _Plan(NamedTuple):
    """How ``Capture.replace_ip_packets`` builds its frames (arrays per output frame)."""

    sel: npt.NDArray[np.int64]  # the kept frames
    pkt_index: npt.NDArray[np.int64]  # the new packet of each, -1: copied whole
    src_off: npt.NDArray[np.int64]
    src_len: npt.NDArray[np.int64]
    hdr_len: npt.NDArray[np.int64]  # link header bytes kept before the new packet
    out_len: npt.NDArray[np.int64]  # the new frame's length, padding included
    orig: npt.NDArray[np.int64]  # its wire length
    pad: bool  # some frame is padded to the Ethernet minimum


def _aligned(values: npt.ArrayLike | None, n: int, name: str, default: int | None) -> Any:
    if values is None:
        return None if default is None else np.full(n, default, dtype=_I64)
    arr = np.ascontiguousarray(values, dtype=_I64)
    if arr.shape != (n,):
        raise ValueError(f"{name} must have one entry per frame ({n}), got shape {arr.shape}")
    return arr


def _load(source: Source) -> npt.NDArray[np.uint8]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return np.frombuffer(source, dtype=np.uint8)
    if isinstance(source, (str, os.PathLike)):
        # One read of the whole file; a memmap would pin the file, and a later write()
        # to the same path would truncate it under the mapping (SIGBUS).
        return np.fromfile(os.fspath(source), dtype=np.uint8)
    return np.frombuffer(source.read(), dtype=np.uint8)


def read(source: Source) -> Capture:
    """Read a classic pcap or pcapng file (path, bytes, or binary file object).

    Raises :class:`PcapError` for a truncated or corrupt file, naming the byte offset.
    """
    buf = _load(source)
    kind = _kind(buf)
    if kind is None:
        return _read_pcapng(buf)
    big, nano, linktype = kind
    off, lens, orig, ts = _pcap.scan_classic(buf, big, nano)
    return Capture(PacketBatch(buf, off, lens), linktype, ts, orig, nanosecond=nano)


def _kind(buf: npt.NDArray[np.uint8]) -> tuple[bool, bool, int] | None:
    """None for pcapng; (big-endian, nanosecond, link type) of a classic pcap file whose
    header checks out; PcapError otherwise."""
    if buf.size < 4:
        raise PcapError(f"truncated file header at byte offset 0: {buf.size} bytes")
    if bytes(buf[:4]) == _PCAPNG_SHB:
        return None
    magic = int.from_bytes(bytes(buf[:4]), "little")
    if magic not in (_MAGIC_US_LE, _MAGIC_NS_LE, _MAGIC_US_BE, _MAGIC_NS_BE):
        raise PcapError(f"not a pcap or pcapng file: unknown magic {magic:#010x} at byte offset 0")
    if buf.size < 24:
        raise PcapError(
            f"truncated pcap file header at byte offset 0: {buf.size} bytes, 24 needed"
        )
    big = magic in (_MAGIC_US_BE, _MAGIC_NS_BE)
    nano = magic in (_MAGIC_NS_LE, _MAGIC_NS_BE)
    order: Literal["big", "little"] = "big" if big else "little"
    major = int.from_bytes(bytes(buf[4:6]), order)
    if major != 2:
        raise PcapError(f"unsupported pcap version {major} at byte offset 4 (2 expected)")
    # §4: the low 16 bits are the link type; the high bits may carry FCS information.
    linktype = int.from_bytes(bytes(buf[20:24]), order) & 0xFFFF
    return big, nano, linktype


def _read_pcapng(buf: npt.NDArray[np.uint8]) -> Capture:
    linktype, fine, off, lens, orig, ts, foreign = _pcap.scan_pcapng(buf)
    if linktype < 0:
        if off.size:  # unreachable: a packet block needs an interface
            raise PcapError("pcapng file has packets but no interface description block")
        linktype = LINKTYPE_ETHERNET
    return Capture(
        PacketBatch(buf, off, lens), linktype, ts, orig,
        nanosecond=fine, _foreign=foreign.view(np.bool_),
    )


def map_file(path: str | os.PathLike[str]) -> npt.NDArray[np.uint8]:
    """The bytes of the file at ``path``, memory-mapped read-only when it is a non-empty
    regular file (no copy: the page cache is read in place), else read whole. While the
    array lives, the file must not be truncated (a mapped page past the new end would
    fault: SIGBUS); write outputs to another file."""
    import mmap
    import stat

    with open(os.fspath(path), "rb") as fh:
        st = os.fstat(fh.fileno())
        if stat.S_ISREG(st.st_mode) and st.st_size > 0:
            try:
                mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            except (OSError, ValueError):
                pass
            else:
                return np.frombuffer(mm, dtype=np.uint8)
        return np.frombuffer(fh.read(), dtype=np.uint8)


def iter_chunks(source: str | os.PathLike[str] | bytes | bytearray | memoryview
                | npt.NDArray[np.uint8], chunk_packets: int = 1 << 16, *,
                taper: bool = False) -> Iterator[Capture]:
    """The capture ``source`` (a path, memory-mapped with :func:`map_file`, or the file's
    bytes, as ``bytes`` or a ``uint8`` array) as consecutive captures of at most ``chunk_packets``
    frames, each a zero-copy view of just the bytes its frames span. A classic pcap file
    is scanned a chunk at a time (a chunk is ready after scanning its own records, and
    a PcapError for a corrupt record comes when its chunk is reached); a pcapng file is
    scanned whole first. Timestamps, wire lengths, link type and resolution are each
    chunk's part of the file's. A capture without packets gives one empty chunk.

    ``taper``: smaller chunks at both ends of a classic pcap file, for a pipeline of
    threads (``ipsecfast encrypt``): the first ``chunk_packets`` frames are read (and
    checked) as one chunk, then handed on in pieces of ``chunk_packets / 16``, twice
    that, ... frames, so the later stages start early; near the end each chunk is about
    half of the frames left (estimated from the mean record size so far; at least
    ``chunk_packets / 16``), so the last stage has little left to do when the others are
    done."""
    if chunk_packets < 1:
        raise ValueError("the chunk size must be at least 1 packet")
    if isinstance(source, (str, os.PathLike)):
        buf = map_file(source)
    elif isinstance(source, np.ndarray):
        if source.dtype != np.uint8 or source.ndim != 1:
            raise TypeError("a capture array must be 1-D uint8")
        buf = source
    elif isinstance(source, (bytes, bytearray, memoryview)):
        buf = np.frombuffer(source, dtype=np.uint8)
    else:
        raise TypeError("source must be a path, bytes or a uint8 array")
    kind = _kind(buf)
    if kind is None:
        whole = _read_pcapng(buf)
        for a in range(0, max(len(whole), 1), chunk_packets):
            yield whole.slice(a, a + chunk_packets)
        return
    big, nano, linktype = kind
    pos = 24
    first = True
    least = max(1, chunk_packets // 16)
    limit = chunk_packets
    done = 0  # frames so far
    while pos < buf.size or first:
        if pos < buf.size:
            if taper and done:
                left = (buf.size - pos) * done // (pos - 24)  # frames left, estimated
                limit = min(chunk_packets, max(least, -(-left // 2)))
            off, lens, orig, ts, pos = _pcap.scan_classic_part(buf, big, nano, pos, limit)
            done += len(off)
            lo, hi = int(off[0]), int(off[-1] + lens[-1])  # (a part has >= 1 record)
            part = Capture(PacketBatch._trusted(buf[lo:hi], off - lo, lens), linktype, ts,
                           orig, nanosecond=nano)
            if taper and first:
                # the first chunk's records are all read (and checked) before the first
                # piece is handed on, as without taper; then pieces of least, 2 x least,
                # ... frames, the last one taking the rest
                first = False
                a, step = 0, least
                while a < len(part):
                    b = a + step if len(part) - (a + step) >= 2 * step else len(part)
                    yield part.slice(a, b)
                    a, step = b, 2 * step
                continue
        else:  # no records at all: one empty chunk, which still has the link type
            part = Capture(PacketBatch.empty(), linktype, None, None, nanosecond=nano)
        first = False
        yield part


def write(
    target: str | os.PathLike[str] | IO[bytes],
    data: Capture | PacketBatch,
    *,
    linktype: int | None = None,
    timestamps: npt.ArrayLike | None = None,
    nanosecond: bool | None = None,
) -> None:
    """Write a classic little-endian pcap file.

    ``data`` is a :class:`Capture` (its link type, timestamps and wire lengths are
    used unless given) or a :class:`PacketBatch` (link type ``LINKTYPE_RAW`` unless
    given, timestamps 0 unless given). ``nanosecond`` selects the nanosecond magic; by
    default it follows the capture (``Capture.nanosecond``), microseconds for a batch.
    Sub-microsecond digits are truncated in a microsecond file.
    """
    if isinstance(data, Capture):
        frames = data.frames
        lt = data.linktype if linktype is None else int(linktype)
        ts = data.timestamps if timestamps is None else _aligned(timestamps, len(frames), "timestamps", 0)
        orig = np.maximum(data.orig_lengths, frames.lengths)
        nano = data.nanosecond if nanosecond is None else bool(nanosecond)
    elif isinstance(data, PacketBatch):
        frames = data
        lt = LINKTYPE_RAW if linktype is None else int(linktype)
        ts = _aligned(timestamps, len(frames), "timestamps", 0)
        orig = frames.lengths
        nano = bool(nanosecond)
    else:
        raise TypeError("data must be a Capture or a PacketBatch")
    if not 0 <= lt <= 0xFFFF:
        raise ValueError(f"link type {lt} is not a 16-bit value")
    n = len(frames)
    if n and (int(ts.min()) < 0 or int(ts.max()) >= _MAX_TS_NS):
        raise ValueError("timestamps must lie in [0, 2**32) seconds for classic pcap")
    if n and int(frames.lengths.max()) > _MAX_SNAPLEN:
        raise ValueError(f"a frame is longer than {_MAX_SNAPLEN} bytes, more than pcap readers accept")
    snaplen = max(65535, int(frames.lengths.max()) if n else 0)
    header = _file_header(nano, snaplen, lt)
    orig = np.ascontiguousarray(orig, dtype=_I64)
    ts = np.ascontiguousarray(ts, dtype=_I64)
    if isinstance(target, (str, os.PathLike)):
        with open(os.fspath(target), "wb") as fh:
            fh.write(header)
            _write_chunks(fh, frames, orig, ts, nano)
    else:
        target.write(header)
        _write_chunks(target, frames, orig, ts, nano)


_CHUNK = 1 << 24  # bytes of records formatted per compiled call, into one reused buffer
_STAGE = 1 << 18  # bytes of records formatted, then written, at a time onto a file descriptor


def _file_header(nano: bool, snaplen: int, linktype: int) -> bytes:
    """§4 File Header: magic, version 2.4, two reserved words, SnapLen, LinkType."""
    magic = _MAGIC_NS_LE if nano else _MAGIC_US_LE
    return (
        magic.to_bytes(4, "little")
        + (2).to_bytes(2, "little")
        + (4).to_bytes(2, "little")
        + bytes(8)
        + snaplen.to_bytes(4, "little")
        + linktype.to_bytes(4, "little")
    )


def _chunk_bounds(ends: npt.NDArray[np.int64]) -> list[int]:
    """Record indices cutting records whose cumulative byte ends are ``ends`` into runs
    of about ``_CHUNK`` bytes (a record larger than that is a run alone)."""
    n = ends.size
    cuts = np.unique(np.searchsorted(ends, np.arange(_CHUNK, int(ends[-1]), _CHUNK), "right"))
    return [0, *(int(c) for c in cuts if 0 < c < n), n]


def _write_chunks(
    fh: IO[bytes],
    frames: PacketBatch,
    orig: npt.NDArray[np.int64],
    ts: npt.NDArray[np.int64],
    nano: bool,
) -> None:
    n = len(frames)
    if n == 0:
        return
    ends = np.cumsum(frames.lengths + 16)
    bounds = _chunk_bounds(ends)
    starts = np.concatenate(([0], ends[:-1]))
    buf = np.empty(min(int(ends[-1]), 2 * _CHUNK), dtype=np.uint8)
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        size = int(ends[b - 1] - starts[a])
        if size > buf.size:
            buf = np.empty(size, dtype=np.uint8)
        view = frames[a:b]
        _pcap.write_records(
            view.buffer, view.offsets, view.lengths, orig[a:b], ts[a:b], nano, buf[:size]
        )
        fh.write(buf[:size].data)
