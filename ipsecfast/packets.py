"""PacketBatch: many packets in one contiguous buffer, plus IPv4 header fields.

A batch is one ``uint8`` buffer and two ``int64`` arrays, ``offsets`` and ``lengths``:
packet *i* is ``buffer[offsets[i] : offsets[i] + lengths[i]]``. Packets may sit anywhere
in the buffer (gaps are allowed), so selecting packets is a zero-copy view that only
indexes ``offsets`` / ``lengths``. The constructor checks once that every packet lies
inside the buffer; the compiled core relies on that and still checks each read against
the packet's own length.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple, overload

import numpy as np
import numpy.typing as npt

__all__ = ["PacketBatch", "Ipv4Fields"]

_I64 = np.int64


def _as_index_array(values: Any, name: str) -> npt.NDArray[np.int64]:
    arr = np.ascontiguousarray(values, dtype=_I64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional")
    return arr


class PacketBatch:
    """Packets in one buffer. ``len(batch)``, ``batch[i] -> bytes``, ``batch[mask] -> view``."""

    __slots__ = ("buffer", "offsets", "lengths")

    buffer: npt.NDArray[np.uint8]
    offsets: npt.NDArray[np.int64]
    lengths: npt.NDArray[np.int64]

    def __init__(self, buffer: Any, offsets: Any, lengths: Any) -> None:
        buf = np.asarray(buffer)
        if buf.dtype != np.uint8:
            if isinstance(buffer, (bytes, bytearray, memoryview)):
                buf = np.frombuffer(buffer, dtype=np.uint8)
            else:
                raise TypeError("buffer must be a uint8 array or a bytes-like object")
        if buf.ndim != 1 or not buf.flags.c_contiguous:
            buf = np.ascontiguousarray(buf.reshape(-1))
        off = _as_index_array(offsets, "offsets")
        lens = _as_index_array(lengths, "lengths")
        if off.shape != lens.shape:
            raise ValueError("offsets and lengths must have the same length")
        if off.size:
            if int(off.min()) < 0 or int(lens.min()) < 0:
                raise ValueError("offsets and lengths must be non-negative")
            # off > size - len, not off + len > size: a huge offset must not wrap around
            if bool(np.any(off > buf.size - lens)):
                raise ValueError("a packet extends past the end of the buffer")
        self.buffer = buf
        self.offsets = off
        self.lengths = lens

    # -- construction -------------------------------------------------------------
    @classmethod
    def _trusted(
        cls,
        buffer: npt.NDArray[np.uint8],
        offsets: npt.NDArray[np.int64],
        lengths: npt.NDArray[np.int64],
    ) -> PacketBatch:
        """A batch over arrays a compiled routine just filled (uint8 buffer, int64
        offsets / lengths, every packet inside the buffer by construction): skips the
        O(n) range check of the constructor, which dominates the cost of small batches."""
        batch = cls.__new__(cls)
        batch.buffer = buffer
        batch.offsets = offsets
        batch.lengths = lengths
        return batch

    @classmethod
    def empty(cls) -> PacketBatch:
        return cls(np.zeros(0, np.uint8), np.zeros(0, _I64), np.zeros(0, _I64))

    @classmethod
    def from_list(cls, packets: Iterable[bytes | bytearray | memoryview]) -> PacketBatch:
        """One copy of every packet into a fresh contiguous buffer."""
        pkts = [bytes(p) for p in packets]
        lengths = np.fromiter((len(p) for p in pkts), dtype=_I64, count=len(pkts))
        offsets = np.zeros(len(pkts), dtype=_I64)
        if len(pkts) > 1:
            np.cumsum(lengths[:-1], out=offsets[1:])
        buf = np.frombuffer(bytearray(b"".join(pkts)), dtype=np.uint8)
        return cls(buf, offsets, lengths)

    @classmethod
    def from_scapy(cls, packets: Iterable[Any]) -> PacketBatch:
        """From scapy packets (``bytes(p)`` of each); scapy is not imported here."""
        return cls.from_list(bytes(p) for p in packets)

    @classmethod
    def concat(cls, batches: Sequence[PacketBatch]) -> PacketBatch:
        """All packets of ``batches`` in order, in one new contiguous buffer."""
        parts = [b.compact() for b in batches]
        if not parts:
            return cls.empty()
        bufs = [p.buffer[: int(p.lengths.sum())] for p in parts]
        lengths = np.concatenate([p.lengths for p in parts])
        offsets = np.zeros(lengths.size, dtype=_I64)
        if lengths.size > 1:
            np.cumsum(lengths[:-1], out=offsets[1:])
        return cls(np.concatenate(bufs), offsets, lengths)

    # -- conversion ---------------------------------------------------------------
    def to_list(self) -> list[bytes]:
        mv = memoryview(self.buffer.data)
        return [
            mv[o : o + n].tobytes()
            for o, n in zip(self.offsets.tolist(), self.lengths.tolist(), strict=True)
        ]

    def to_scapy(self) -> list[Any]:
        """scapy packets: ``IP`` for IPv4, ``Raw`` otherwise (scapy imported lazily)."""
        from scapy.layers.inet import IP
        from scapy.packet import Raw

        return [IP(p) if p[:1] and (p[0] >> 4) == 4 else Raw(p) for p in self.to_list()]

    def compact(self) -> PacketBatch:
        """The same packets, back to back from offset 0 (self if already so)."""
        n = self.offsets.size
        if n == 0:
            return PacketBatch.empty()
        new_off = np.zeros(n, dtype=_I64)
        if n > 1:
            np.cumsum(self.lengths[:-1], out=new_off[1:])
        if np.array_equal(new_off, self.offsets):
            return self
        total = int(self.lengths.sum())
        # Vectorised gather: source index of every output byte, no loop per packet.
        src = np.repeat(self.offsets - new_off, self.lengths) + np.arange(total, dtype=_I64)
        return PacketBatch(self.buffer[src], new_off, self.lengths.copy())

    def equals(self, other: PacketBatch) -> npt.NDArray[np.bool_]:
        """Per packet: ``self[i] == other[i]`` (same length and bytes), for two batches
        of the same number of packets; one compiled ``memcmp`` pass, no copy."""
        from . import _pcap

        if not isinstance(other, PacketBatch):
            raise TypeError("other must be a PacketBatch")
        if len(other) != len(self):
            raise ValueError(f"{len(other)} packets to compare with {len(self)}")
        out = np.zeros(len(self), dtype=np.uint8)
        _pcap.same_spans(self.buffer, self.offsets, self.lengths,
                         other.buffer, other.offsets, other.lengths, out)
        return out.view(np.bool_)

    def heads(self, nbytes: int) -> npt.NDArray[np.uint8]:
        """The first ``nbytes`` bytes of every packet as an (n, nbytes) array, zeros past
        a packet's end: one compiled pass that prefetches the packets ahead (headers of a
        capture are scattered, each read would otherwise wait on memory)."""
        from . import _pcap

        if nbytes < 0:
            raise ValueError("nbytes must be >= 0")
        out = np.empty((len(self), nbytes), dtype=np.uint8)
        _pcap.gather_prefix(self.buffer, self.offsets, self.lengths, out)
        return out

    def tobytes(self) -> bytes:
        """All packets concatenated."""
        c = self.compact()
        return c.buffer[: int(c.lengths.sum())].tobytes()

    # -- container protocol -------------------------------------------------------
    def __len__(self) -> int:
        return int(self.offsets.size)

    @overload
    def __getitem__(self, index: int) -> bytes: ...
    @overload
    def __getitem__(self, index: slice | npt.ArrayLike) -> PacketBatch: ...
    def __getitem__(self, index: Any) -> bytes | PacketBatch:
        if isinstance(index, (int, np.integer)):
            i = int(index)
            n = len(self)
            if i < 0:
                i += n
            if not 0 <= i < n:
                raise IndexError("packet index out of range")
            o = int(self.offsets[i])
            return self.buffer[o : o + int(self.lengths[i])].tobytes()
        # slice, boolean mask or integer index array: a zero-copy view.
        return PacketBatch(self.buffer, self.offsets[index], self.lengths[index])

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.to_list())

    @property
    def nbytes(self) -> int:
        """Sum of packet lengths."""
        return int(self.lengths.sum())

    def __repr__(self) -> str:
        return f"PacketBatch({len(self)} packets, {self.nbytes} bytes)"

    # -- header fields ------------------------------------------------------------
    def byte_at(self, pos: int | npt.NDArray[np.int64], default: int = 0) -> npt.NDArray[np.int64]:
        """Byte ``pos`` (scalar or per-packet array) of every packet; ``default`` where short."""
        pos_arr = np.broadcast_to(np.asarray(pos, dtype=_I64), self.offsets.shape)
        ok = (pos_arr >= 0) & (pos_arr < self.lengths)
        idx = np.where(ok, self.offsets + pos_arr, 0)
        if self.buffer.size == 0:
            return np.full(self.offsets.shape, default, dtype=_I64)
        vals = self.buffer[idx].astype(_I64)
        return np.where(ok, vals, default)

    def u16_at(self, pos: int | npt.NDArray[np.int64], default: int = 0) -> npt.NDArray[np.int64]:
        hi = self.byte_at(pos, -1)
        lo = self.byte_at(np.asarray(pos) + 1, -1)
        return np.where((hi < 0) | (lo < 0), default, (hi << 8) | lo)

    def u32_at(self, pos: int | npt.NDArray[np.int64], default: int = 0) -> npt.NDArray[np.int64]:
        hi = self.u16_at(pos, -1)
        lo = self.u16_at(np.asarray(pos) + 2, -1)
        return np.where((hi < 0) | (lo < 0), default, (hi << 16) | lo)

    def ipv4_fields(self) -> Ipv4Fields:
        """IPv4 header fields of every packet (vectorised; ``valid`` marks real IPv4)."""
        b0 = self.byte_at(0, 0)
        ihl = (b0 & 0x0F) * 4
        total = self.u16_at(2, 0)
        valid = ((b0 >> 4) == 4) & (ihl >= 20) & (self.lengths >= ihl) & (total >= ihl) & (
            total <= self.lengths
        )
        frag_word = self.u16_at(6, 0)
        proto = self.byte_at(9, 0)
        frag_offset = frag_word & 0x1FFF
        l4 = ihl
        # transport fields are read within the IPv4 total length (not a link-layer trailer)
        ip = PacketBatch._trusted(self.buffer, self.offsets,
                                  np.where(valid, np.minimum(self.lengths, total), self.lengths))
        has_ports = valid & (frag_offset == 0) & np.isin(proto, (6, 17))
        sport = np.where(has_ports, ip.u16_at(l4, 0), 0)
        dport = np.where(has_ports, ip.u16_at(l4 + 2, 0), 0)
        is_icmp = valid & (frag_offset == 0) & (proto == 1)
        icmp_type = np.where(is_icmp, ip.byte_at(l4, -1), -1)
        icmp_code = np.where(is_icmp, ip.byte_at(l4 + 1, -1), -1)
        is_tcp = valid & (frag_offset == 0) & (proto == 6)
        tcp_flags = np.where(is_tcp, ip.byte_at(l4 + 13, 0), 0)
        return Ipv4Fields(
            valid=valid,
            ihl=ihl,
            tos=self.byte_at(1, 0),
            total_length=total,
            ident=self.u16_at(4, 0),
            flags=frag_word >> 13,
            frag_offset=frag_offset,
            ttl=self.byte_at(8, 0),
            proto=proto,
            src=self.u32_at(12, 0),
            dst=self.u32_at(16, 0),
            sport=sport,
            dport=dport,
            icmp_type=icmp_type,
            icmp_code=icmp_code,
            tcp_flags=tcp_flags,
        )


class Ipv4Fields(NamedTuple):
    """Per-packet IPv4 header fields as int64 arrays (``valid`` is bool).

    Ports are 0 unless the packet is TCP/UDP and not a non-initial fragment;
    ``icmp_type`` / ``icmp_code`` are -1 unless ICMP.  ``flags`` is the 3-bit field
    (0x2 = DF, 0x1 = MF).
    """

    valid: npt.NDArray[np.bool_]
    ihl: npt.NDArray[np.int64]
    tos: npt.NDArray[np.int64]
    total_length: npt.NDArray[np.int64]
    ident: npt.NDArray[np.int64]
    flags: npt.NDArray[np.int64]
    frag_offset: npt.NDArray[np.int64]
    ttl: npt.NDArray[np.int64]
    proto: npt.NDArray[np.int64]
    src: npt.NDArray[np.int64]
    dst: npt.NDArray[np.int64]
    sport: npt.NDArray[np.int64]
    dport: npt.NDArray[np.int64]
    icmp_type: npt.NDArray[np.int64]
    icmp_code: npt.NDArray[np.int64]
    tcp_flags: npt.NDArray[np.int64]
