"""ipsecfast.pcap against independent oracles: scapy's writers / readers and frames
built byte by byte with ``struct`` from the format specs (draft-ietf-opsawg-pcap,
draft-ietf-opsawg-pcapng, RFC 1661/1662, RFC 2427, Linux SLL/SLL2)."""

from __future__ import annotations

import io
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import (
    ARP,
    LLC,
    SNAP,
    CookedLinux,
    CookedLinuxV2,
    Dot1AD,
    Dot1Q,
    Dot3,
    Ether,
    Loopback,
)
from scapy.layers.ppp import HDLC, PPP
from scapy.packet import Raw
from scapy.utils import PcapNgWriter, RawPcapNgReader, RawPcapReader, RawPcapWriter

from ipsecfast import pcap
from ipsecfast.exceptions import PcapError
from ipsecfast.packets import PacketBatch

T0 = 1_700_000_000


# -- IPv4 packets and the frames that carry them --------------------------------------
def ip_packets() -> list[bytes]:
    """IPv4 packets of assorted sizes, including ones short enough to need Ethernet padding."""
    pkts = [
        IP(src="10.0.0.1", dst="10.0.1.1") / UDP(sport=500, dport=500) / b"x",
        IP(src="10.0.0.2", dst="10.0.1.2") / TCP(sport=1234, dport=80, flags="S"),
        IP(src="10.0.0.3", dst="10.0.1.3") / ICMP() / (b"p" * 56),
        IP(src="10.0.0.4", dst="10.0.1.4", tos=0xB8) / UDP() / (b"q" * 1400),
        IP(src="10.0.0.5", dst="10.0.1.5", proto=50) / (b"\x00\x00\x10\x00" + b"e" * 60),
    ]
    return [bytes(p) for p in pkts]


IP6 = bytes(IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP() / b"six")
ARP_PAYLOAD = bytes(ARP(psrc="10.0.0.1", pdst="10.0.0.2"))

# Q.922 2-octet address for DLCI 100 (EA=0 then EA=1): 0x18 0x41.
FR_ADDR = b"\x18\x41"


ETH_MIN = 60  # IEEE 802.3 minimum frame, 64 bytes less the FCS a capture leaves out


def eth_pad(frame: Any) -> bytes:
    """An Ethernet frame as it is on the wire and in a capture: padded with zero bytes to
    the 60-byte minimum (scapy builds runts: it does not pad)."""
    return bytes(frame).ljust(ETH_MIN, b"\0")


def _cases() -> dict[int, list[tuple[bytes, int, bytes | None]]]:
    """link type -> [(frame, expected l3 offset, expected IPv4 packet or None)]."""
    ip = ip_packets()
    c: dict[int, list[tuple[bytes, int, bytes | None]]] = {}
    eth = Ether(src="00:11:22:33:44:55", dst="66:77:88:99:aa:bb")
    c[1] = [
        (eth_pad(eth / IP(ip[0])), 14, ip[0]),
        (eth_pad(eth / Dot1Q(vlan=10) / IP(ip[1])), 18, ip[1]),
        (eth_pad(Ether(type=0x88A8) / Dot1AD(vlan=20) / Dot1Q(vlan=30) / IP(ip[2])), 22, ip[2]),
        (eth_pad(Ether(type=0x9100) / Dot1Q(vlan=20) / Dot1Q(vlan=30) / IP(ip[3])), 22, ip[3]),
        (eth_pad(Dot3(src="00:11:22:33:44:55") / LLC() / SNAP(code=0x0800) / IP(ip[4])), 22, ip[4]),
        (eth_pad(eth / ARP()), 14, None),
        (eth_pad(eth / IPv6(IP6)), 14, None),
        (eth_pad(Dot3() / LLC(dsap=0x42, ssap=0x42, ctrl=3) / Raw(b"stp-bpdu-xxxxxxx")), 14, None),
        (bytes(eth)[:12], -1, None),  # truncated link header (cut by the snap length)
    ]
    c[101] = [(p, 0, p) for p in ip[:3]] + [(IP6, 0, None)]
    c[12] = [(ip[0], 0, ip[0]), (IP6, 0, None)]
    c[14] = [(ip[1], 0, ip[1])]
    c[228] = [(p, 0, p) for p in ip]
    c[113] = [
        (bytes(CookedLinux(pkttype=0, lladdrlen=6, src=b"\x00\x11\x22\x33\x44\x55\x00\x00") / IP(ip[0])), 16, ip[0]),
        (bytes(CookedLinux(pkttype=4) / IP(ip[3])), 16, ip[3]),
        (bytes(CookedLinux(proto=0x86DD) / IPv6(IP6)), 16, None),
        (bytes(CookedLinux())[:10], -1, None),
    ]
    c[276] = [
        (bytes(CookedLinuxV2(ifindex=3) / IP(ip[1])), 20, ip[1]),
        (bytes(CookedLinuxV2(proto=0x0806) / ARP()), 20, None),
    ]
    c[9] = [
        (bytes(PPP(proto=0x0021) / IP(ip[0])), 2, ip[0]),  # no address/control
        (bytes(HDLC() / PPP(proto=0x0021) / IP(ip[1])), 4, ip[1]),  # RFC 1662 ff 03
        (b"\x21" + ip[2], 1, ip[2]),  # RFC 1661 §6.5 protocol-field compression
        (b"\xff\x03\x21" + ip[3], 3, ip[3]),
        (b"\xc0\x21" + b"\x01\x01\x00\x04", 2, None),  # LCP
        (b"\x00\x57" + IP6, 2, None),
    ]
    c[104] = [
        (b"\x0f\x00\x08\x00" + ip[0], 4, ip[0]),
        (b"\x8f\x00\x08\x00" + ip[4], 4, ip[4]),
        (b"\x8f\x00\x80\x35" + b"\x00" * 18, 4, None),  # SLARP
        (b"\x0f\x00\x86\xdd" + IP6, 4, None),
    ]
    c[107] = [
        (FR_ADDR + b"\x03\xcc" + ip[0], 4, ip[0]),  # RFC 2427 NLPID IP
        (FR_ADDR + b"\x03\x00\x80\x00\x00\x00\x08\x00" + ip[1], 10, ip[1]),  # RFC 2427 SNAP
        (FR_ADDR + b"\x08\x00" + ip[2], 4, ip[2]),  # Cisco encapsulation
        (b"\x18\x40\x01" + b"\x03\xcc" + ip[3], 5, ip[3]),  # 3-octet address
        (FR_ADDR + b"\x03\x8e" + IP6, 4, None),  # NLPID IPv6
        (FR_ADDR + b"\x03\x08" + b"\x00" * 12, 4, None),  # Q.933 signalling
        (b"\x19", -1, None),  # 1-octet address is invalid
    ]
    c[0] = [
        (bytes(Loopback(type=2) / IP(ip[0])), 4, ip[0]),
        (struct.pack(">I", 2) + ip[1], 4, ip[1]),
        (struct.pack("<I", 24) + IP6, 4, None),
    ]
    c[108] = [(struct.pack(">I", 2) + ip[2], 4, ip[2]), (struct.pack(">I", 24) + IP6, 4, None)]
    return c


CASES = _cases()


def _classic(frames: list[bytes], linktype: int, *, big: bool = False, nano: bool = False,
             stamps: list[tuple[int, int]] | None = None, orig: list[int] | None = None) -> bytes:
    """A classic pcap file built with struct (draft-ietf-opsawg-pcap §4, §5)."""
    e = ">" if big else "<"
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = [struct.pack(e + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)]
    for i, f in enumerate(frames):
        sec, frac = stamps[i] if stamps else (T0 + i, i)
        out.append(struct.pack(e + "IIII", sec, frac, len(f), orig[i] if orig else len(f)) + f)
    return b"".join(out)


def _pad4(b: bytes) -> bytes:
    return b + b"\x00" * (-len(b) % 4)


def _block(btype: int, body: bytes, e: str) -> bytes:
    """pcapng §3.1: type, total length, body padded to 32 bits, total length."""
    body = _pad4(body)
    n = 12 + len(body)
    return struct.pack(e + "II", btype, n) + body + struct.pack(e + "I", n)


def _shb(e: str) -> bytes:
    return _block(0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1), e)


def _idb(linktype: int, e: str, snaplen: int = 0, tsresol: int | None = None,
         tsoffset: int | None = None) -> bytes:
    opts = b""
    if tsresol is not None:
        opts += struct.pack(e + "HH", 9, 1) + _pad4(bytes([tsresol]))
    if tsoffset is not None:
        opts += struct.pack(e + "HHq", 14, 8, tsoffset)
    if opts:
        opts += struct.pack(e + "HH", 0, 0)
    return _block(1, struct.pack(e + "HHI", linktype, 0, snaplen) + opts, e)


def _epb(frame: bytes, e: str, ifid: int = 0, ts: int = 0, orig: int | None = None) -> bytes:
    body = struct.pack(e + "IIIII", ifid, ts >> 32, ts & 0xFFFFFFFF, len(frame),
                       len(frame) if orig is None else orig)
    return _block(6, body + _pad4(frame), e)


def _spb(frame: bytes, e: str, orig: int | None = None) -> bytes:
    return _block(3, struct.pack(e + "I", len(frame) if orig is None else orig) + frame, e)


def _scapy_read(path: Path | str) -> tuple[int, bool, list[tuple[bytes, Any]]]:
    """(link type, nanosecond, [(frame, metadata)]) as scapy's own reader sees the file."""
    with RawPcapReader(str(path)) as r:
        return r.linktype, bool(getattr(r, "nano", False)), list(r)


def _scapy_read_ng(path: Path | str) -> list[tuple[bytes, Any]]:
    with RawPcapNgReader(str(path)) as r:
        return list(r)


def _check(cap: pcap.Capture, cases: list[tuple[bytes, int, bytes | None]]) -> None:
    assert cap.frames.to_list() == [f for f, _, _ in cases]
    assert cap.l3_offsets.tolist() == [o for _, o, _ in cases]
    assert cap.is_ipv4.tolist() == [p is not None for _, _, p in cases]
    assert cap.ip_packets().to_list() == [p for _, _, p in cases if p is not None]


# -- reading: scapy-written files ------------------------------------------------------
@pytest.mark.parametrize("linktype", sorted(CASES))
@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("nano", [False, True])
def test_read_scapy_classic(tmp_path: Path, linktype: int, order: str, nano: bool) -> None:
    cases = CASES[linktype]
    path = str(tmp_path / "x.pcap")
    w = RawPcapWriter(path, linktype=linktype, endianness=order, nano=nano)
    w.linktype = linktype  # scapy ignores linktype=0 (falsy) in the constructor
    w.write_header(None)
    for i, (f, _, _) in enumerate(cases):
        w.write_packet(f, sec=T0 + i, usec=123456 + 7 * i if not nano else 123456789 + i)
    w.close()
    cap = pcap.read(path)
    assert cap.linktype == linktype and cap.nanosecond == nano
    _check(cap, cases)
    # timestamps and lengths as scapy's own reader sees them
    expected = [
        meta.sec * 10**9 + meta.usec * (1 if nano else 1000) for _, meta in _scapy_read(path)[2]
    ]
    assert cap.timestamps.tolist() == expected
    assert cap.orig_lengths.tolist() == [len(f) for f, _, _ in cases]


@pytest.mark.parametrize("linktype", [1, 113, 9, 107])
def test_read_scapy_pcapng(tmp_path: Path, linktype: int) -> None:
    cases = CASES[linktype]
    path = str(tmp_path / "x.pcapng")
    w = PcapNgWriter(path)
    w.linktype = linktype
    w.write_header(None)
    for i, (f, _, _) in enumerate(cases):
        w.write_packet(f, sec=T0 + i + 0.5)
    w.close()
    cap = pcap.read(path)
    assert cap.linktype == linktype and not cap.nanosecond
    _check(cap, cases)
    expected = [
        ((meta.tshigh << 32) | meta.tslow) * 10**9 // meta.tsresol for _, meta in _scapy_read_ng(path)
    ]
    assert cap.timestamps.tolist() == expected


# -- reading: hand-built files ----------------------------------------------------------
@pytest.mark.parametrize("big", [False, True])
@pytest.mark.parametrize("nano", [False, True])
def test_read_handbuilt_classic(big: bool, nano: bool) -> None:
    cases = CASES[1]
    frames = [f for f, _, _ in cases]
    stamps = [(T0 + i, (999_999_999 if nano else 999_999) - i) for i in range(len(frames))]
    orig = [len(f) + 10 * i for i, f in enumerate(frames)]
    data = _classic(frames, 1, big=big, nano=nano, stamps=stamps, orig=orig)
    cap = pcap.read(data)
    _check(cap, cases)
    mult = 1 if nano else 1000
    assert cap.timestamps.tolist() == [s * 10**9 + f * mult for s, f in stamps]
    assert cap.orig_lengths.tolist() == orig


def test_linktype_high_bits_ignored() -> None:
    """draft-ietf-opsawg-pcap §4: only the low 16 bits are the link type (FCS info above)."""
    data = bytearray(_classic([CASES[1][0][0]], 1))
    data[20:24] = struct.pack("<I", 0x14000001)
    assert pcap.read(bytes(data)).linktype == 1


@pytest.mark.parametrize("e", ["<", ">"])
def test_read_pcapng_epb_spb_sections(e: str) -> None:
    other = ">" if e == "<" else "<"
    f = CASES[1]
    g = CASES[107]
    data = (
        _shb(e)
        + _idb(1, e, snaplen=0, tsresol=9)  # nanoseconds
        + _block(4, b"name resolution, skipped", e)
        + _idb(1, e, tsresol=0x80 | 20, tsoffset=100)  # 2^-20 s units, +100 s
        + _epb(f[0][0], e, ifid=0, ts=T0 * 10**9 + 5)
        + _epb(f[1][0], e, ifid=1, ts=(T0 << 20) | (1 << 19), orig=len(f[1][0]) + 4)
        + _spb(f[2][0], e)
        + _block(5, b"interface statistics, skipped", e)
        + _block(0x80000001, b"local use, skipped", e)
        # a second section in the other byte order; interface ids start again
        + _shb(other)
        + _idb(107, other)  # another link type: carried, not parsed
        + _idb(1, other, tsresol=3)  # milliseconds
        + _epb(g[0][0], other, ifid=0, ts=7)
        + _epb(f[3][0], other, ifid=1, ts=1234)
        + _block(2, struct.pack(other + "HHIIII", 1, 0, 0, 42, len(f[4][0]), len(f[4][0]))
                 + f[4][0], other)  # obsolete Packet Block (Appendix A)
    )
    cap = pcap.read(data)
    assert cap.linktype == 1 and cap.nanosecond
    assert cap.frames.to_list() == [f[0][0], f[1][0], f[2][0], g[0][0], f[3][0], f[4][0]]
    assert cap.timestamps.tolist() == [
        T0 * 10**9 + 5, (T0 + 100) * 10**9 + 500_000_000, 0, 7000, 1_234_000_000, 42_000_000,
    ]
    assert cap.orig_lengths[1] == len(f[1][0]) + 4
    assert cap.l3_offsets.tolist() == [14, 18, 22, -1, 22, 22]
    assert cap.is_ipv4.tolist() == [True, True, True, False, True, True]


def test_spb_caplen_is_min_of_snaplen_and_block() -> None:
    """pcapng §4.4: captured length = min(original length, SnapLen of interface 0)."""
    frame, l3, _ = CASES[1][3]  # 1400-byte payload
    data = _shb("<") + _idb(1, "<", snaplen=100) + _spb(frame[:100], "<", orig=len(frame))
    cap = pcap.read(data)
    assert cap.frames.to_list() == [frame[:100]]
    assert cap.orig_lengths.tolist() == [len(frame)]
    # truncated by the snap length: the IPv4 packet is what was captured
    assert cap.ip_packets().lengths.tolist() == [100 - l3]


def test_pcapng_no_interfaces() -> None:
    cap = pcap.read(_shb("<"))
    assert len(cap) == 0 and len(cap.ip_packets()) == 0


def test_ethernet_padding_and_fcs_trimmed() -> None:
    ip = ip_packets()[0]  # 29 bytes: needs 17 bytes of padding to 60
    frame = bytes(Ether() / IP(ip)) + b"\x00" * 17 + b"\xde\xad\xbe\xef"
    cap = pcap.read(_classic([frame], 1))
    assert cap.ip_packets().to_list() == [ip]
    # a total length that is implausible (0 as with TSO, or beyond the frame) keeps it all
    bad = bytearray(frame)
    bad[16:18] = b"\x00\x00"
    bad2 = bytearray(frame)
    bad2[16:18] = b"\xff\xff"
    cap = pcap.read(_classic([bytes(bad), bytes(bad2)], 1))
    assert cap.ip_packets().lengths.tolist() == [len(frame) - 14] * 2


def test_read_sources(tmp_path: Path) -> None:
    data = _classic([f for f, _, _ in CASES[1]], 1)
    p = tmp_path / "a.pcap"
    p.write_bytes(data)
    for src in (p, str(p), data, bytearray(data), memoryview(data), io.BytesIO(data)):
        _check(pcap.read(src), CASES[1])  # type: ignore[arg-type]


# -- writing -----------------------------------------------------------------------------
@pytest.mark.parametrize("linktype", sorted(CASES))
@pytest.mark.parametrize("nano", [False, True])
def test_write_read_back_with_scapy(tmp_path: Path, linktype: int, nano: bool) -> None:
    frames = [f for f, _, _ in CASES[linktype]]
    stamps = np.array([T0 * 10**9 + i * 1_000_001_001 for i in range(len(frames))], np.int64)
    cap = pcap.Capture(PacketBatch.from_list(frames), linktype, stamps)
    path = tmp_path / "out.pcap"
    pcap.write(path, cap, nanosecond=nano)
    lt, is_nano, got = _scapy_read(path)
    assert lt == linktype and is_nano == nano
    assert [b for b, _ in got] == frames
    assert [m.wirelen for _, m in got] == [len(f) for f in frames]
    unit = 1 if nano else 1000
    assert [m.sec * 10**9 + m.usec * unit for _, m in got] == (stamps // unit * unit).tolist()
    # and our reader gives back the same capture
    back = pcap.read(path)
    _check(back, CASES[linktype])
    assert back.timestamps.tolist() == (stamps // unit * unit).tolist()


def test_write_batch_as_raw_ip(tmp_path: Path) -> None:
    ip = ip_packets()
    path = tmp_path / "raw.pcap"
    pcap.write(path, PacketBatch.from_list(ip), timestamps=np.arange(len(ip)) * 1000)
    lt, _, got = _scapy_read(path)
    assert lt == pcap.LINKTYPE_RAW
    assert [b for b, _ in got] == ip
    buf = io.BytesIO()
    pcap.write(buf, PacketBatch.empty(), linktype=1)
    assert pcap.read(buf.getvalue()).linktype == 1 and len(pcap.read(buf.getvalue())) == 0


def test_write_roundtrip_is_byte_identical_for_our_own_files(tmp_path: Path) -> None:
    data = _classic([f for f, _, _ in CASES[1]], 1, nano=True)
    cap = pcap.read(data)
    out = io.BytesIO()
    pcap.write(out, cap)  # nanosecond follows the capture
    again = pcap.read(out.getvalue())
    assert again.frames.to_list() == cap.frames.to_list()
    assert again.timestamps.tolist() == cap.timestamps.tolist()
    assert again.orig_lengths.tolist() == cap.orig_lengths.tolist()


def test_write_rejects_bad_arguments() -> None:
    batch = PacketBatch.from_list(ip_packets())
    with pytest.raises(ValueError, match="timestamps"):
        pcap.write(io.BytesIO(), batch, timestamps=[-1] * len(batch))
    with pytest.raises(ValueError, match="one entry per frame"):
        pcap.write(io.BytesIO(), batch, timestamps=[0])
    with pytest.raises(ValueError, match="16-bit"):
        pcap.write(io.BytesIO(), batch, linktype=70000)
    with pytest.raises(TypeError):
        pcap.write(io.BytesIO(), ip_packets())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="longer than 262144"):
        pcap.write(io.BytesIO(), PacketBatch.from_list([bytes(262145)]))
    pcap.write(io.BytesIO(), PacketBatch.from_list([bytes(262144)]))  # the maximum is fine


# -- replace_ip_packets --------------------------------------------------------------------
def _longer(p: bytes, extra: int) -> bytes:
    """IPv4 packet ``p`` with ``extra`` more payload bytes and its total length to match."""
    return p[:2] + struct.pack(">H", len(p) + extra) + p[4:] + b"N" * extra


@pytest.mark.parametrize("linktype", sorted(CASES))
def test_replace_ip_packets(linktype: int) -> None:
    cases = CASES[linktype]
    frames = [f for f, _, _ in cases]
    cap = pcap.Capture(PacketBatch.from_list(frames), linktype, np.arange(len(frames)) * 7)
    old = cap.ip_packets().to_list()
    new = [_longer(p, 5 * i) for i, p in enumerate(old)]
    keep = np.array([i % 3 != 1 for i in range(len(old))], dtype=bool)
    out = cap.replace_ip_packets(PacketBatch.from_list(new), keep)
    expected: list[bytes] = []
    stamps: list[int] = []
    j = 0
    for i, (f, l3, p) in enumerate(cases):
        if p is None:
            expected.append(f)
        else:
            if keep[j]:
                g = f[:l3] + new[j]
                if linktype == 1:
                    if g[12:14] < b"\x06\x00" and g[14:17] == b"\xaa\xaa\x03":
                        # the 802.3 length field counts the new LLC/SNAP payload, not padding
                        g = g[:12] + struct.pack(">H", len(g) - 14) + g[14:]
                    g = eth_pad(g)
                expected.append(g)
            j += 1
            if not keep[j - 1]:
                continue
        stamps.append(7 * i)
    assert out.frames.to_list() == expected
    assert out.orig_lengths.tolist() == [len(f) for f in expected]
    assert out.timestamps.tolist() == stamps
    assert out.linktype == linktype
    assert out.ip_packets().to_list() == [q for q, k in zip(new, keep, strict=True) if k]


def test_replace_fixes_8023_length_checked_by_scapy(tmp_path: Path) -> None:
    ip = ip_packets()[4]
    frame = bytes(Dot3(src="00:11:22:33:44:55") / LLC() / SNAP(code=0x0800) / IP(ip))
    cap = pcap.Capture(PacketBatch.from_list([frame]), 1)
    bigger = bytes(IP(ip) / Raw(b"Z" * 300))
    out = cap.replace_ip_packets(PacketBatch.from_list([bigger]))
    path = tmp_path / "d.pcap"
    pcap.write(path, out)
    ((raw, _),) = _scapy_read(path)[2]
    parsed = Ether(raw)
    assert parsed.haslayer(Dot3) and parsed[Dot3].len == len(raw) - 14
    assert bytes(parsed[IP]) == bigger


# -- Ethernet padding of rebuilt frames ------------------------------------------------
MAC = {"src": "00:11:22:33:44:55", "dst": "66:77:88:99:aa:bb"}


def _ip_of_size(n: int, i: int = 0) -> bytes:
    """An IPv4 packet of exactly ``n`` bytes (n >= 20)."""
    p = bytes(IP(src="10.0.0.1", dst=f"10.0.1.{i + 1}", proto=17) / Raw(b"k" * (n - 20)))
    assert len(p) == n
    return p


def test_replace_pads_short_ethernet_frames_with_zeros(tmp_path: Path) -> None:
    """A rebuilt Ethernet frame under 60 bytes (IEEE 802.3's 64 less the FCS) gets zero
    bytes to 60, and wire length 60; tags count in the 60, as Linux pads a frame with its
    VLAN tags in the data. Expected frames are built by scapy plus explicit zeros."""
    small = bytes(IP(src="10.0.0.1", dst="10.0.1.1") / ICMP())
    assert len(small) == 28
    old = bytes(IP(src="10.0.0.9", dst="10.0.1.9") / UDP() / (b"o" * 100))
    heads: list[Any] = [
        lambda p: Ether(**MAC) / p,
        lambda p: Ether(**MAC) / Dot1Q(vlan=10) / p,
        lambda p: Ether(type=0x88A8, **MAC) / Dot1AD(vlan=20) / Dot1Q(vlan=30) / p,
        lambda p: Dot3(**MAC) / LLC() / SNAP(code=0x0800) / p,  # scapy sets the 802.3 length
    ]
    arp = bytes(Ether(**MAC) / ARP())  # a 42-byte runt that is not IPv4: copied as it is
    frames: list[bytes] = []
    for h in heads:
        # old frames with a trailer that is not zero (an FCS, say): not kept
        frames.append(bytes(h(IP(old))) + b"\xa5" * 4)
        frames.append(arp)
    frames.append(bytes(heads[0](IP(old))))  # dropped below
    cap = pcap.Capture(PacketBatch.from_list(frames), pcap.LINKTYPE_ETHERNET,
                       np.arange(len(frames)) * 10, np.array([len(f) + 4 for f in frames]))
    keep = np.array([True] * len(heads) + [False])
    out = cap.replace_ip_packets(PacketBatch.from_list([small] * (len(heads) + 1)), keep)
    expected: list[bytes] = []
    for h in heads:
        unpadded = bytes(h(IP(small)))
        assert len(unpadded) < 60
        expected += [unpadded + bytes(60 - len(unpadded)), arp]
    assert out.frames.to_list() == expected
    assert out.orig_lengths.tolist() == [60, len(arp) + 4] * len(heads)
    assert out.timestamps.tolist() == list(range(0, 10 * len(expected), 10))
    assert out.ip_packets().to_list() == [small] * len(heads)  # the padding is cut off again
    # as written: scapy's reader sees caplen = wirelen = 60 and zeros after the packet
    path = tmp_path / "padded.pcap"
    pcap.write(path, out)
    records = _scapy_read(path)[2]
    assert [raw for raw, _ in records] == expected
    assert [(m.caplen, m.wirelen) for _, m in records][::2] == [(60, 60)] * len(heads)


@pytest.mark.parametrize("linktype", sorted(set(CASES) - {pcap.LINKTYPE_ETHERNET}))
def test_replace_does_not_pad_other_link_types(linktype: int) -> None:
    """Only Ethernet has a minimum frame size: raw IP, Linux SLL / SLL2 (cooked, not the
    wire frame), PPP, Cisco HDLC, Frame Relay and loopback frames are header + packet."""
    small = bytes(IP(src="10.0.0.1", dst="10.0.1.1") / ICMP())
    cases = [(f, l3) for f, l3, p in CASES[linktype] if p is not None]
    cap = pcap.Capture(PacketBatch.from_list([f for f, _ in cases]), linktype)
    out = cap.replace_ip_packets(PacketBatch.from_list([small] * len(cases)))
    expected = [f[:l3] + small for f, l3 in cases]
    assert all(len(f) < 60 for f in expected)
    assert out.frames.to_list() == expected
    assert out.orig_lengths.tolist() == [len(f) for f in expected]


def test_replace_pads_ethernet_only_below_60() -> None:
    """Every rebuilt frame length around the minimum, untagged and 802.1Q-tagged: frames of
    60 bytes or more are header + packet exactly; shorter ones are that plus zeros."""
    sizes = list(range(20, 81))
    heads = [bytes(Ether(**MAC, type=0x0800)),
             bytes(Ether(**MAC, type=0x8100) / Dot1Q(vlan=7, type=0x0800))]
    for head in heads:
        old = [head + _ip_of_size(200, i) for i in range(len(sizes))]
        new = [_ip_of_size(n, i) for i, n in enumerate(sizes)]
        cap = pcap.Capture(PacketBatch.from_list(old), pcap.LINKTYPE_ETHERNET)
        out = cap.replace_ip_packets(PacketBatch.from_list(new))
        got = out.frames.to_list()
        for p, f in zip(new, got, strict=True):
            if len(head) + len(p) >= 60:
                assert f == head + p
            else:
                assert f == head + p + bytes(60 - len(head) - len(p))
        assert out.frames.lengths.tolist() == [max(60, len(head) + n) for n in sizes]
        assert out.orig_lengths.tolist() == out.frames.lengths.tolist()
        assert out.ip_packets().to_list() == new
    # a frame already 60 or longer with the same packet: nothing added
    big = heads[0] + _ip_of_size(46)
    cap = pcap.Capture(PacketBatch.from_list([big]), pcap.LINKTYPE_ETHERNET)
    assert cap.replace_ip_packets(cap.ip_packets()).frames.to_list() == [big]


def test_replace_with_empty_and_all_dropped() -> None:
    cap = pcap.Capture(PacketBatch.from_list([f for f, _, _ in CASES[1]]), 1)
    n = int(cap.is_ipv4.sum())
    out = cap.replace_ip_packets(cap.ip_packets(), np.zeros(n, dtype=bool))
    assert out.frames.to_list() == [f for f, _, p in CASES[1] if p is None]
    empty = pcap.Capture(PacketBatch.empty(), 1)
    assert len(empty.replace_ip_packets(PacketBatch.empty())) == 0
    with pytest.raises(ValueError, match="IPv4 frames"):
        cap.replace_ip_packets(PacketBatch.empty())
    with pytest.raises(ValueError, match="keep"):
        cap.replace_ip_packets(cap.ip_packets(), np.ones(n + 1, dtype=bool))


def test_ip_packets_is_a_view() -> None:
    data = _classic([f for f, _, _ in CASES[1]], 1)
    cap = pcap.read(data)
    view = cap.ip_packets()
    assert view.buffer is cap.frames.buffer
    assert cap.frames.buffer.size == len(data)


# -- errors: truncation and corruption name the byte offset --------------------------------
def _offset(msg: str) -> int:
    m = re.search(r"byte offset (\d+)", msg)
    assert m, msg
    return int(m.group(1))


def test_classic_truncation_names_record_offset() -> None:
    frames = [f for f, _, _ in CASES[1][:3]]
    data = _classic(frames, 1)
    starts = [24]
    for f in frames[:-1]:
        starts.append(starts[-1] + 16 + len(f))
    for cut in range(len(data)):
        if cut in starts:  # a whole number of records: fine
            assert len(pcap.read(data[:cut])) == starts.index(cut)
            continue
        with pytest.raises(PcapError) as ei:
            pcap.read(data[:cut])
        msg = str(ei.value)
        if cut < 24:
            assert _offset(msg) == 0 and "header" in msg
        else:
            assert "truncated" in msg
            assert _offset(msg) == max(s for s in starts if s <= cut)


def test_classic_corruptions() -> None:
    data = bytearray(_classic([CASES[1][0][0], CASES[1][1][0]], 1))
    bad = bytearray(data)
    bad[0:4] = b"GIF8"
    with pytest.raises(PcapError, match=r"unknown magic .* byte offset 0"):
        pcap.read(bytes(bad))
    bad = bytearray(data)
    bad[4:6] = b"\x03\x00"
    with pytest.raises(PcapError, match="version 3 at byte offset 4"):
        pcap.read(bytes(bad))
    second = 24 + 16 + len(CASES[1][0][0])
    bad = bytearray(data)
    bad[second + 8 : second + 12] = struct.pack("<I", 0x7FFFFFFF)
    with pytest.raises(PcapError, match=f"corrupt packet record at byte offset {second}"):
        pcap.read(bytes(bad))
    bad[second + 8 : second + 12] = struct.pack("<I", 5000)
    with pytest.raises(PcapError, match=f"truncated packet record at byte offset {second}"):
        pcap.read(bytes(bad))
    with pytest.raises(PcapError, match="byte offset 0"):
        pcap.read(b"")


def test_pcapng_truncation_names_block_offset() -> None:
    e = "<"
    blocks = [_shb(e), _idb(1, e), _epb(CASES[1][0][0], e), _spb(CASES[1][1][0], e)]
    data = b"".join(blocks)
    starts = [0]
    for b in blocks[:-1]:
        starts.append(starts[-1] + len(b))
    for cut in range(4, len(data)):
        if cut in starts:
            continue
        with pytest.raises(PcapError) as ei:
            pcap.read(data[:cut])
        assert "truncated" in str(ei.value)
        assert _offset(str(ei.value)) == max(s for s in starts if s <= cut)


@pytest.mark.parametrize("e", ["<", ">"])
def test_pcapng_corruptions(e: str) -> None:
    epb = _epb(CASES[1][0][0], e)
    head = _shb(e) + _idb(1, e)
    at = len(head)

    def expect(data: bytes, pattern: str) -> None:
        with pytest.raises(PcapError, match=pattern):
            pcap.read(data)

    expect(head + epb[:4] + struct.pack(e + "I", 13) + epb[8:], f"corrupt block at byte offset {at}: total length 13")
    expect(head + epb[:-4] + struct.pack(e + "I", 8), f"corrupt block at byte offset {at}: trailing")
    expect(head + _epb(CASES[1][0][0], e, ifid=2), f"byte offset {at}: interface 2 is not defined")
    expect(_shb(e) + _spb(b"abcd", e), f"byte offset {len(_shb(e))}: interface 0 is not defined")
    bad = bytearray(head + epb)
    bad[at + 20 : at + 24] = struct.pack(e + "I", 5000)  # captured length
    expect(bytes(bad), f"corrupt packet block at byte offset {at}: captured length 5000")
    bad = bytearray(head + epb)
    bad[8:12] = b"\x00\x00\x00\x00"
    expect(bytes(bad), "section header block at byte offset 0: bad byte-order magic")
    shb2 = bytearray(_shb(e))
    shb2[12:14] = struct.pack(e + "H", 2)
    expect(head + bytes(shb2), f"byte offset {at}: unsupported pcapng major version 2")
    expect(head + _block(6, b"\x00" * 8, e), f"enhanced packet block at byte offset {at}: body too short")
    opt = struct.pack(e + "HHI", 1, 0, 0) + struct.pack(e + "HH", 2, 200)
    expect(_shb(e) + _block(1, opt, e), "option 2 overruns")
    expect(_shb(e) + _idb(1, e, tsresol=30), "unsupported if_tsresol 0x1e")


def _valid_files() -> list[bytes]:
    e_frames = [f for f, _, _ in CASES[1]]
    ng = lambda e: (  # noqa: E731
        _shb(e) + _idb(1, e, tsresol=9) + b"".join(_epb(f, e, ts=i) for i, f in enumerate(e_frames[:4]))
        + _spb(e_frames[4], e) + _idb(107, e) + _epb(CASES[107][0][0], e, ifid=1)
    )
    return [
        _classic(e_frames[:5], 1),
        _classic(e_frames[:5], 1, big=True, nano=True),
        _classic([f for f, _, _ in CASES[107]], 107),
        _classic([f for f, _, _ in CASES[9]], 9, big=True),
        ng("<"),
        ng(">"),
    ]


VALID = _valid_files()


def _exercise(data: bytes) -> None:
    try:
        cap = pcap.read(data)
    except PcapError as exc:
        assert 0 <= _offset(str(exc)) <= len(data)
        return
    ip = cap.ip_packets()
    assert np.all(cap.l3_offsets <= cap.frames.lengths)
    assert np.all(ip.offsets + ip.lengths <= cap.frames.buffer.size)
    out = cap.replace_ip_packets(ip)
    buf = io.BytesIO()
    pcap.write(buf, out, timestamps=np.zeros(len(out), np.int64))
    back = pcap.read(buf.getvalue())
    assert back.frames.to_list() == out.frames.to_list()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    which=st.integers(0, len(VALID) - 1),
    cut=st.integers(0, 10_000),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
)
def test_fuzz_truncation_and_byte_flips(which: int, cut: int, flips: list[tuple[int, int]]) -> None:
    data = bytearray(VALID[which])
    for pos, val in flips:
        data[pos % len(data)] = val
    _exercise(bytes(data[: cut % (len(data) + 1)]))


@settings(max_examples=300, deadline=None)
@given(
    linktype=st.sampled_from(sorted(CASES) + [2, 50, 105]),
    frames=st.lists(st.binary(max_size=48), max_size=8),
)
def test_fuzz_link_parse(linktype: int, frames: list[bytes]) -> None:
    cap = pcap.Capture(PacketBatch.from_list(frames), linktype)
    ip = cap.ip_packets()
    ends = cap.frames.offsets[cap.is_ipv4] + cap.frames.lengths[cap.is_ipv4]
    assert np.all(ip.offsets + ip.lengths <= ends)
    assert np.all(cap.l3_offsets[cap.is_ipv4] >= 0)
    out = cap.replace_ip_packets(ip)
    assert len(out) == len(cap)


def test_chunked_write_matches_single_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    frames = [f for f, _, _ in CASES[1]] * 7
    cap = pcap.Capture(PacketBatch.from_list(frames), 1, np.arange(len(frames)) * 1_000_003)
    whole = io.BytesIO()
    pcap.write(whole, cap)
    for chunk in (1, 64, 100, 1500):
        monkeypatch.setattr(pcap, "_CHUNK", chunk)
        parts = io.BytesIO()
        pcap.write(parts, cap)
        assert parts.getvalue() == whole.getvalue()


def test_rewrite_in_place(tmp_path: Path) -> None:
    """read() copies the file, so writing back over the same path is safe."""
    path = tmp_path / "same.pcap"
    path.write_bytes(_classic([f for f, _, _ in CASES[1]], 1))
    cap = pcap.read(path)
    pcap.write(path, cap.replace_ip_packets(cap.ip_packets()))
    _check(pcap.read(path), CASES[1])


@pytest.mark.parametrize("kind", ["classic", "pcapng"])
def test_many_records_grow_the_arrays(kind: str) -> None:
    """More records than the scan's first allocation (4096), with varying lengths."""
    frames = [bytes([i & 0xFF]) * (i % 97) for i in range(9001)]
    if kind == "classic":
        data = _classic(frames, 101, stamps=[(i, 0) for i in range(len(frames))])
    else:
        data = _shb(">") + _idb(101, ">") + b"".join(
            _epb(f, ">", ts=i * 10**6) for i, f in enumerate(frames)
        )
    cap = pcap.read(data)
    assert cap.frames.to_list() == frames
    assert cap.timestamps.tolist() == [i * 10**9 for i in range(len(frames))]


@pytest.mark.parametrize(
    "tsresol", [0, 3, 6, 9, 12, 19, 0x80, 0x80 | 10, 0x80 | 30, 0x80 | 34, 0x80 | 40, 0x80 | 63]
)
def test_pcapng_timestamp_resolutions(tsresol: int) -> None:
    """pcapng §4.2 if_tsresol: 10^-n (MSB 0) or 2^-n (MSB 1) seconds per unit."""
    exp = tsresol & 0x7F
    unit_den = 2**exp if tsresol & 0x80 else 10**exp
    stamps = [0, 1, unit_den - 1, unit_den, 3 * unit_den + unit_den // 3]
    stamps = [t for t in stamps if t < 2**64 and t * 10**9 // unit_den < 2**62]
    data = _shb("<") + _idb(101, "<", tsresol=tsresol, tsoffset=-5) + b"".join(
        _epb(b"\x45", "<", ts=t) for t in stamps
    )
    cap = pcap.read(data)
    expected = [t * 10**9 // unit_den - 5 * 10**9 for t in stamps]
    tolerance = 1 if tsresol & 0x80 and exp > 34 else 0
    assert np.all(np.abs(cap.timestamps - np.array(expected)) <= tolerance)
    assert cap.nanosecond == (exp >= 20 if tsresol & 0x80 else exp > 6)


@settings(max_examples=100, deadline=None)
@given(
    frames=st.lists(st.binary(max_size=200), max_size=20),
    seconds=st.lists(st.integers(0, 2**32 - 1), min_size=20, max_size=20),
    fracs=st.lists(st.integers(0, 999_999_999), min_size=20, max_size=20),
    nano=st.booleans(),
    linktype=st.sampled_from(sorted(CASES)),
)
def test_roundtrip_property(frames: list[bytes], seconds: list[int], fracs: list[int],
                            nano: bool, linktype: int) -> None:
    stamps = np.array([s * 10**9 + f for s, f in zip(seconds, fracs, strict=True)][: len(frames)],
                      dtype=np.int64)
    cap = pcap.Capture(PacketBatch.from_list(frames), linktype, stamps)
    buf = io.BytesIO()
    pcap.write(buf, cap, nanosecond=nano)
    back = pcap.read(buf.getvalue())
    unit = 1 if nano else 1000
    assert back.frames.to_list() == frames and back.linktype == linktype
    assert back.timestamps.tolist() == (stamps // unit * unit).tolist()
    assert back.l3_offsets.tolist() == cap.l3_offsets.tolist()
    assert back.is_ipv4.tolist() == cap.is_ipv4.tolist()
