"""Type stub of the compiled pcap core (src/_pcap.pyx); use ipsecfast.pcap instead."""

import numpy as np
import numpy.typing as npt

_I64 = npt.NDArray[np.int64]
_U8 = npt.NDArray[np.uint8]

def scan_classic(buf: _U8, big: bool, nano: bool) -> tuple[_I64, _I64, _I64, _I64]: ...
def scan_classic_part(
    buf: _U8, big: bool, nano: bool, start: int, limit: int
) -> tuple[_I64, _I64, _I64, _I64, int]: ...
def scan_pcapng(buf: _U8) -> tuple[int, bool, _I64, _I64, _I64, _I64, _U8]: ...
def parse_links(
    buf: _U8, offsets: _I64, lengths: _I64, linktype: int
) -> tuple[_I64, _I64, npt.NDArray[np.bool_]]: ...
def rebuild(
    src: _U8,
    src_off: _I64,
    src_len: _I64,
    hdr_len: _I64,
    pkt_index: _I64,
    pkt_buf: _U8,
    pkt_off: _I64,
    pkt_len: _I64,
    out: _U8,
    out_off: _I64,
    linktype: int,
) -> None: ...
def write_records(
    buf: _U8,
    offsets: _I64,
    lengths: _I64,
    orig_lengths: _I64,
    timestamps: _I64,
    nano: bool,
    out: _U8,
) -> None: ...
def write_rebuilt(
    src: _U8,
    src_off: _I64,
    src_len: _I64,
    hdr_len: _I64,
    pkt_index: _I64,
    pkt_buf: _U8,
    pkt_off: _I64,
    pkt_len: _I64,
    out_len: _I64,
    orig_lengths: _I64,
    timestamps: _I64,
    nano: bool,
    linktype: int,
    out: _U8,
) -> int: ...
def write_rebuilt_fd(
    fd: int,
    src: _U8,
    src_off: _I64,
    src_len: _I64,
    hdr_len: _I64,
    pkt_index: _I64,
    pkt_buf: _U8,
    pkt_off: _I64,
    pkt_len: _I64,
    out_len: _I64,
    orig_lengths: _I64,
    timestamps: _I64,
    nano: bool,
    linktype: int,
    stage: _U8,
) -> int: ...
def gather_prefix(buf: _U8, offsets: _I64, lengths: _I64, out: _U8) -> None: ...
def same_spans(
    a: _U8, a_off: _I64, a_len: _I64, b: _U8, b_off: _I64, b_len: _I64, out: _U8
) -> None: ...
