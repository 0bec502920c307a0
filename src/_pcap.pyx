# cython: language_level=3
"""Compiled pcap / pcapng record scan, link-layer parse, frame rebuild and writer.

Every loop here runs over a whole capture without the GIL and without a Python
object per packet; the facade is ``ipsecfast/pcap.py``. The scans read only inside
the buffer they are given (each read is preceded by a length check) and report the
first problem as a code plus the byte offset of the record or block that has it; the
Python exception is raised only after the loop, with the GIL back.

Byte layouts:
  classic pcap: draft-ietf-opsawg-pcap §4 (File Header), §5 (Packet Record)
  pcapng:       draft-ietf-opsawg-pcapng §3.1 (block), §3.5 (options), §4.1 SHB,
                §4.2 IDB, §4.3 EPB, §4.4 SPB, Appendix A (obsolete Packet Block)
"""

from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcmp, memcpy, memset
from libc.errno cimport errno, EINTR
from posix.unistd cimport write

import numpy as np

from ipsecfast.exceptions import PcapError

cdef extern from *:
    void prefetch "__builtin_prefetch"(const void* p) noexcept nogil

# Bytes ahead of the record being read that the scans ask the CPU to fetch: each record
# header says where the next one starts, so without it every record is a full memory
# round trip (~120 ns) before the next can be read.
DEF PREFETCH_AHEAD = 2048

# -- status codes of the scans (0 = ok); the messages are built in _raise() -------------
cdef enum:
    E_OK = 0
    E_REC_HDR = 1         # classic: truncated record header
    E_REC_CAPLEN = 2      # classic: implausible captured length
    E_REC_DATA = 3        # classic: record data past end of file
    E_BLK_HDR = 10        # pcapng: fewer than 12 bytes left for a block
    E_BLK_LEN = 11        # pcapng: total length < 12 or not a multiple of 4
    E_BLK_TRUNC = 12      # pcapng: block past end of file
    E_BLK_TRAILER = 13    # pcapng: trailing total length differs
    E_SHB_MAGIC = 14
    E_SHB_VERSION = 15
    E_BLK_SHORT = 16      # pcapng: body too short for its fixed fields
    E_IFACE = 17          # pcapng: packet refers to an undefined interface
    E_PKT_CAPLEN = 18     # pcapng: captured length overruns the block
    E_OPTION = 19         # pcapng: option overruns the block
    E_TSRESOL = 20        # pcapng: if_tsresol we cannot represent
    E_NOMEM = 21

# libpcap's MAXIMUM_SNAPLEN: records claiming more are corrupt (pcap-common.h).
cdef enum:
    MAX_SNAPLEN = 262144

cdef struct ScanError:
    int code
    int64_t offset       # byte offset of the record / block at fault
    int64_t value
    int64_t value2

cdef struct Iface:
    int linktype
    uint32_t snaplen
    int binary           # if_tsresol: 0 -> 10^-exp, 1 -> 2^-exp (pcapng §4.2)
    int exp
    int64_t offset_ns    # if_tsoffset, in ns


cdef inline uint32_t rd32(const uint8_t* p, bint big) noexcept nogil:
    if big:
        return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]
    return (<uint32_t>p[3] << 24) | (<uint32_t>p[2] << 16) | (<uint32_t>p[1] << 8) | p[0]


cdef inline uint16_t rd16(const uint8_t* p, bint big) noexcept nogil:
    if big:
        return <uint16_t>((p[0] << 8) | p[1])
    return <uint16_t>((p[1] << 8) | p[0])


cdef inline uint16_t be16(const uint8_t* p) noexcept nogil:
    return <uint16_t>((p[0] << 8) | p[1])


cdef inline void wr32le(uint8_t* p, uint32_t v) noexcept nogil:
    p[0] = v & 0xFF
    p[1] = (v >> 8) & 0xFF
    p[2] = (v >> 16) & 0xFF
    p[3] = (v >> 24) & 0xFF


# ---------------------------------------------------------------------------------
# record arrays, grown while scanning (one pass: every record header is a cache miss
# on a large file, so a counting pass first would double the scan time)
# ---------------------------------------------------------------------------------
cdef struct Records:
    int64_t n
    int64_t cap
    int64_t* off         # offset of the packet data in the file
    int64_t* caplen
    int64_t* origlen
    int64_t* ts          # nanoseconds
    uint8_t* foreign     # pcapng: the packet's interface has another link type


cdef int rec_grow(Records* r) noexcept nogil:
    """Double the capacity; -1 if out of memory (the old arrays stay valid)."""
    cdef int64_t cap = r.cap * 2 if r.cap else 4096
    cdef void* q
    q = realloc(r.off, cap * sizeof(int64_t))
    if q == NULL:
        return -1
    r.off = <int64_t*>q
    q = realloc(r.caplen, cap * sizeof(int64_t))
    if q == NULL:
        return -1
    r.caplen = <int64_t*>q
    q = realloc(r.origlen, cap * sizeof(int64_t))
    if q == NULL:
        return -1
    r.origlen = <int64_t*>q
    q = realloc(r.ts, cap * sizeof(int64_t))
    if q == NULL:
        return -1
    r.ts = <int64_t*>q
    q = realloc(r.foreign, cap * sizeof(uint8_t))
    if q == NULL:
        return -1
    r.foreign = <uint8_t*>q
    r.cap = cap
    return 0


cdef void rec_free(Records* r) noexcept nogil:
    free(r.off)
    free(r.caplen)
    free(r.origlen)
    free(r.ts)
    free(r.foreign)


cdef tuple rec_arrays(Records* r):
    """Copies of the records as numpy arrays: offsets, lengths, orig, ts, foreign."""
    cdef int64_t n = r.n
    out = (np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64),
           np.empty(n, np.int64), np.empty(n, np.uint8))
    cdef int64_t[::1] a
    cdef uint8_t[::1] b
    if n:
        a = out[0]
        memcpy(&a[0], r.off, n * sizeof(int64_t))
        a = out[1]
        memcpy(&a[0], r.caplen, n * sizeof(int64_t))
        a = out[2]
        memcpy(&a[0], r.origlen, n * sizeof(int64_t))
        a = out[3]
        memcpy(&a[0], r.ts, n * sizeof(int64_t))
        b = out[4]
        memcpy(&b[0], r.foreign, n * sizeof(uint8_t))
    return out


# ---------------------------------------------------------------------------------
# classic pcap
# ---------------------------------------------------------------------------------
cdef int scan_classic_c(const uint8_t* buf, int64_t size, bint big, int64_t frac_ns,
                        Records* r, ScanError* err, int64_t start=24, int64_t limit=-1,
                        int64_t* stop=NULL) noexcept nogil:
    """The packet records from byte ``start`` (after the 24-byte file header) into ``r``,
    at most ``limit`` of them (-1: to the end); ``*stop``: where the next record starts.
    -1 with ``err`` set."""
    cdef int64_t pos = start, n = 0, incl, ahead = start
    cdef uint32_t sec, frac
    while pos < size and (limit < 0 or n < limit):
        # §5: 16-byte record header: ts seconds, ts (micro|nano)seconds, incl_len, orig_len
        if size - pos < 16:
            err.code = E_REC_HDR
            err.offset = pos
            err.value = size - pos
            return -1
        while ahead < pos + PREFETCH_AHEAD and ahead < size:
            prefetch(buf + ahead)
            ahead += 64
        incl = rd32(buf + pos + 8, big)
        if incl > MAX_SNAPLEN:
            err.code = E_REC_CAPLEN
            err.offset = pos
            err.value = incl
            return -1
        if incl > size - pos - 16:
            err.code = E_REC_DATA
            err.offset = pos
            err.value = incl
            err.value2 = size - pos - 16
            return -1
        if n == r.cap and rec_grow(r) < 0:
            err.code = E_NOMEM
            err.offset = pos
            return -1
        sec = rd32(buf + pos, big)
        frac = rd32(buf + pos + 4, big)
        r.off[n] = pos + 16
        r.caplen[n] = incl
        r.origlen[n] = rd32(buf + pos + 12, big)
        r.ts[n] = <int64_t>sec * 1000000000 + <int64_t>frac * frac_ns
        r.foreign[n] = 0
        n += 1
        r.n = n
        pos += 16 + incl
    if stop != NULL:
        stop[0] = pos
    return 0


def scan_classic_part(const uint8_t[::1] buf, bint big, bint nano, int64_t start,
                      int64_t limit):
    """Up to ``limit`` (> 0) records of a classic pcap file from byte offset ``start``
    (24 for the first record; then the offset this returned): a resumable scan, so a
    large file can be read a chunk at a time. Returns ``(offsets, lengths,
    orig_lengths, timestamps_ns, next_offset)``; ``next_offset == len(buf)`` at the end.
    The file header was checked by the caller."""
    cdef int64_t size = buf.shape[0], stop = start
    cdef const uint8_t* p = &buf[0] if size else NULL
    cdef ScanError err
    cdef Records r
    cdef int rc = 0
    cdef int64_t frac_ns = 1 if nano else 1000
    if limit < 1:
        raise ValueError("limit must be at least 1")
    if start < 24 or start > size:
        raise ValueError(f"start {start} is not within the records (24..{size})")
    memset(&r, 0, sizeof(r))
    err.code = E_OK
    try:
        # room for the whole part at once: no growth copies for a chunk
        r.cap = min(limit, (size - start) // 16 + 1)
        r.off = <int64_t*>malloc(r.cap * sizeof(int64_t))
        r.caplen = <int64_t*>malloc(r.cap * sizeof(int64_t))
        r.origlen = <int64_t*>malloc(r.cap * sizeof(int64_t))
        r.ts = <int64_t*>malloc(r.cap * sizeof(int64_t))
        r.foreign = <uint8_t*>malloc(r.cap * sizeof(uint8_t))
        if (r.off == NULL or r.caplen == NULL or r.origlen == NULL or r.ts == NULL
                or r.foreign == NULL):
            raise MemoryError()
        with nogil:
            rc = scan_classic_c(p, size, big, frac_ns, &r, &err, start, limit, &stop)
        if rc < 0:
            _raise(&err, size)
        return (*rec_arrays(&r)[:4], stop)
    finally:
        rec_free(&r)


def scan_classic(const uint8_t[::1] buf, bint big, bint nano):
    """Records of a classic pcap file whose 24-byte header was checked by the caller.

    Returns ``(offsets, lengths, orig_lengths, timestamps_ns)`` as int64 arrays.
    """
    cdef int64_t size = buf.shape[0]
    cdef const uint8_t* p = &buf[0]
    cdef ScanError err
    cdef Records r
    cdef int rc
    cdef int64_t frac_ns = 1 if nano else 1000
    memset(&r, 0, sizeof(r))
    err.code = E_OK
    try:
        with nogil:
            rc = scan_classic_c(p, size, big, frac_ns, &r, &err)
        if rc < 0:
            _raise(&err, size)
        return rec_arrays(&r)[:4]
    finally:
        rec_free(&r)


# ---------------------------------------------------------------------------------
# pcapng
# ---------------------------------------------------------------------------------
cdef inline int64_t ts_to_ns(uint64_t t, const Iface* f) noexcept nogil:
    cdef uint64_t p10 = 1
    cdef int i
    cdef int64_t ns
    if not f.binary:
        for i in range(9 - f.exp if f.exp <= 9 else f.exp - 9):
            p10 *= 10
        ns = <int64_t>(t * p10) if f.exp <= 9 else <int64_t>(t // p10)
    elif f.exp == 0:
        ns = <int64_t>(t * 1000000000)
    elif f.exp <= 34:
        # (frac * 10^9) < 2^34 * 2^30 fits in 64 bits: exact
        ns = <int64_t>((t >> f.exp) * 1000000000
                       + (((t & ((<uint64_t>1 << f.exp) - 1)) * 1000000000) >> f.exp))
    else:
        # the fraction through a double: within 1 ns, and no 128-bit product needed
        ns = <int64_t>((t >> f.exp) * 1000000000 + <uint64_t>(
            <double>(t & ((<uint64_t>1 << f.exp) - 1)) * 1e9 / <double>(<uint64_t>1 << f.exp)))
    return <int64_t>(<uint64_t>ns + <uint64_t>f.offset_ns)


cdef int parse_idb(const uint8_t* body, int64_t blen, bint big, Iface* f,
                   ScanError* err, int64_t pos) noexcept nogil:
    """§4.2: LinkType(16) Reserved(16) SnapLen(32) then options (§3.5)."""
    cdef int64_t o = 8, olen
    cdef uint16_t code
    cdef uint8_t r
    f.linktype = rd16(body, big)
    f.snaplen = rd32(body + 4, big)
    f.binary = 0
    f.exp = 6            # default resolution: microseconds
    f.offset_ns = 0
    while blen - o >= 4:
        code = rd16(body + o, big)
        olen = rd16(body + o + 2, big)
        if code == 0:    # opt_endofopt
            break
        if olen > blen - o - 4:
            err.code = E_OPTION
            err.offset = pos
            err.value = code
            return -1
        if code == 9 and olen >= 1:      # if_tsresol
            r = body[o + 4]
            f.binary = r >> 7
            f.exp = r & 0x7F
            if (f.binary and f.exp > 63) or (not f.binary and f.exp > 19):
                err.code = E_TSRESOL
                err.offset = pos
                err.value = r
                return -1
        elif code == 14 and olen >= 8:   # if_tsoffset: seconds, signed 64-bit
            # unsigned arithmetic: a corrupt value wraps instead of overflowing
            f.offset_ns = <int64_t>(((<uint64_t>rd32(body + o + 4 + (0 if big else 4), big) << 32)
                                     | rd32(body + o + 4 + (4 if big else 0), big)) * 1000000000)
        o += 4 + ((olen + 3) & ~3)
    return 0


cdef int scan_pcapng_c(const uint8_t* buf, int64_t size, Iface** ifaces_io, int* cap_io,
                       int* first_lt, int* fine_ts, Records* r, ScanError* err) noexcept nogil:
    """The packets of a pcapng file into ``r``; -1 with ``err`` set.

    ``r.foreign[i]`` is set when packet i's interface has a link type other than the
    first interface's."""
    cdef int64_t pos = 0, n = 0, blen, body_len, incl
    cdef uint32_t btype, ifid
    cdef bint big = 0
    cdef int nif = 0
    cdef Iface* f
    cdef Iface* grown
    cdef const uint8_t* body
    cdef uint64_t t
    while pos < size:
        if size - pos < 12:
            err.code = E_BLK_HDR
            err.offset = pos
            err.value = size - pos
            return -1
        # §4.1: the SHB type 0x0A0D0D0A reads the same in both byte orders; its
        # byte-order magic decides how this whole section is read.
        if buf[pos] == 0x0A and buf[pos + 1] == 0x0D and buf[pos + 2] == 0x0D and buf[pos + 3] == 0x0A:
            if buf[pos + 8] == 0x1A and buf[pos + 9] == 0x2B and buf[pos + 10] == 0x3C and buf[pos + 11] == 0x4D:
                big = 1
            elif buf[pos + 8] == 0x4D and buf[pos + 9] == 0x3C and buf[pos + 10] == 0x2B and buf[pos + 11] == 0x1A:
                big = 0
            else:
                err.code = E_SHB_MAGIC
                err.offset = pos
                return -1
            nif = 0      # interface ids restart in every section (§3.4)
        blen = rd32(buf + pos + 4, big)
        if blen < 12 or blen & 3:
            err.code = E_BLK_LEN
            err.offset = pos
            err.value = blen
            return -1
        if blen > size - pos:
            err.code = E_BLK_TRUNC
            err.offset = pos
            err.value = blen
            err.value2 = size - pos
            return -1
        if rd32(buf + pos + blen - 4, big) != blen:
            err.code = E_BLK_TRAILER
            err.offset = pos
            err.value = blen
            err.value2 = rd32(buf + pos + blen - 4, big)
            return -1
        btype = rd32(buf + pos, big)
        body = buf + pos + 8
        body_len = blen - 12
        if btype == 0x0A0D0D0A:
            if body_len < 16:            # magic, major, minor, section length
                err.code = E_BLK_SHORT
                err.offset = pos
                err.value = btype
                return -1
            if rd16(body + 4, big) != 1:
                err.code = E_SHB_VERSION
                err.offset = pos
                err.value = rd16(body + 4, big)
                return -1
        elif btype == 1:                 # Interface Description Block
            if body_len < 8:
                err.code = E_BLK_SHORT
                err.offset = pos
                err.value = btype
                return -1
            if nif == cap_io[0]:
                grown = <Iface*>realloc(ifaces_io[0], (2 * nif + 4) * sizeof(Iface))
                if grown == NULL:
                    err.code = E_NOMEM
                    err.offset = pos
                    return -1
                ifaces_io[0] = grown
                cap_io[0] = 2 * nif + 4
            f = &ifaces_io[0][nif]
            if parse_idb(body, body_len, big, f, err, pos) < 0:
                return -1
            if first_lt[0] < 0:
                first_lt[0] = f.linktype
            if (f.binary and f.exp >= 20) or (not f.binary and f.exp > 6):
                fine_ts[0] = 1   # finer than a microsecond (2^-20 s < 1 us)
            nif += 1
        elif btype == 6 or btype == 2:   # Enhanced Packet Block / obsolete Packet Block
            if body_len < 20:
                err.code = E_BLK_SHORT
                err.offset = pos
                err.value = btype
                return -1
            # EPB: Interface ID(32); PB (App. A): Interface ID(16) Drops Count(16)
            ifid = rd32(body, big) if btype == 6 else rd16(body, big)
            if ifid >= <uint32_t>nif:
                err.code = E_IFACE
                err.offset = pos
                err.value = ifid
                return -1
            incl = rd32(body + 12, big)
            if incl > body_len - 20:
                err.code = E_PKT_CAPLEN
                err.offset = pos
                err.value = incl
                err.value2 = body_len - 20
                return -1
            if n == r.cap and rec_grow(r) < 0:
                err.code = E_NOMEM
                err.offset = pos
                return -1
            f = &ifaces_io[0][ifid]
            t = (<uint64_t>rd32(body + 4, big) << 32) | rd32(body + 8, big)
            r.off[n] = pos + 28
            r.caplen[n] = incl
            r.origlen[n] = rd32(body + 16, big)
            r.ts[n] = ts_to_ns(t, f)
            r.foreign[n] = f.linktype != first_lt[0]
            n += 1
            r.n = n
        elif btype == 3:                 # Simple Packet Block: always interface 0
            if body_len < 4:
                err.code = E_BLK_SHORT
                err.offset = pos
                err.value = btype
                return -1
            if nif == 0:
                err.code = E_IFACE
                err.offset = pos
                err.value = 0
                return -1
            if n == r.cap and rec_grow(r) < 0:
                err.code = E_NOMEM
                err.offset = pos
                return -1
            f = &ifaces_io[0][0]
            # §4.4: captured length = min(original length, SnapLen), and it must
            # fit in the block (the body is padded to 32 bits).
            incl = rd32(body, big)
            r.origlen[n] = incl
            if incl > body_len - 4:
                incl = body_len - 4
            if f.snaplen and incl > f.snaplen:
                incl = f.snaplen
            r.off[n] = pos + 12
            r.caplen[n] = incl
            r.ts[n] = 0          # an SPB carries no timestamp
            r.foreign[n] = f.linktype != first_lt[0]
            n += 1
            r.n = n
        # every other block type is skipped (§3.1: "can simply ignore their content")
        pos += blen
    return 0


def scan_pcapng(const uint8_t[::1] buf):
    """Packets of a pcapng file (which must start with a Section Header Block).

    Returns ``(linktype, fine_ts, offsets, lengths, orig_lengths, timestamps_ns,
    foreign)``; ``linktype`` is the first interface's (-1 if none), ``fine_ts`` says
    some interface records finer than microseconds, ``foreign`` (uint8) marks packets
    of interfaces with a different link type.
    """
    cdef int64_t size = buf.shape[0]
    cdef const uint8_t* p = &buf[0]
    cdef ScanError err
    cdef Records r
    cdef int rc
    cdef Iface* ifaces = NULL
    cdef int cap = 0, first_lt = -1, fine = 0
    memset(&r, 0, sizeof(r))
    err.code = E_OK
    try:
        with nogil:
            rc = scan_pcapng_c(p, size, &ifaces, &cap, &first_lt, &fine, &r, &err)
        if rc < 0:
            _raise(&err, size)
        return (first_lt, bool(fine)) + rec_arrays(&r)
    finally:
        free(ifaces)
        rec_free(&r)


_BLOCK_NAMES = {0x0A0D0D0A: "section header block", 1: "interface description block",
                2: "packet block", 3: "simple packet block", 6: "enhanced packet block"}


cdef _raise(ScanError* e, int64_t size):
    c, at, v, v2 = e.code, e.offset, e.value, e.value2
    if c == E_REC_HDR:
        msg = f"truncated packet record header at byte offset {at}: {v} bytes left, 16 needed"
    elif c == E_REC_CAPLEN:
        msg = (f"corrupt packet record at byte offset {at}: captured length {v} "
               f"exceeds the maximum {MAX_SNAPLEN}")
    elif c == E_REC_DATA:
        msg = (f"truncated packet record at byte offset {at}: captured length {v} "
               f"but only {v2} bytes left")
    elif c == E_BLK_HDR:
        msg = f"truncated block header at byte offset {at}: {v} bytes left, 12 needed"
    elif c == E_BLK_LEN:
        msg = (f"corrupt block at byte offset {at}: total length {v} "
               f"(must be at least 12 and a multiple of 4)")
    elif c == E_BLK_TRUNC:
        msg = f"truncated block at byte offset {at}: total length {v} but only {v2} bytes left"
    elif c == E_BLK_TRAILER:
        msg = (f"corrupt block at byte offset {at}: trailing total length {v2} "
               f"differs from the leading {v}")
    elif c == E_SHB_MAGIC:
        msg = f"corrupt section header block at byte offset {at}: bad byte-order magic"
    elif c == E_SHB_VERSION:
        msg = f"section header block at byte offset {at}: unsupported pcapng major version {v}"
    elif c == E_BLK_SHORT:
        name = _BLOCK_NAMES.get(v, f"block type {v:#x}")
        msg = f"corrupt {name} at byte offset {at}: body too short"
    elif c == E_IFACE:
        msg = f"corrupt packet block at byte offset {at}: interface {v} is not defined"
    elif c == E_PKT_CAPLEN:
        msg = (f"corrupt packet block at byte offset {at}: captured length {v} "
               f"overruns the block ({v2} bytes of packet data)")
    elif c == E_OPTION:
        msg = f"corrupt interface description block at byte offset {at}: option {v} overruns the block"
    elif c == E_TSRESOL:
        msg = f"interface description block at byte offset {at}: unsupported if_tsresol {v:#04x}"
    elif c == E_NOMEM:
        raise MemoryError("pcapng: out of memory for interface table")
    else:
        msg = f"corrupt capture at byte offset {at} (code {c})"
    raise PcapError(msg)


# ---------------------------------------------------------------------------------
# link layers: where the IPv4 header starts
# ---------------------------------------------------------------------------------
cdef int64_t l3_offset(int lt, const uint8_t* p, int64_t n, bint* ipv4) noexcept nogil:
    """Offset of the network-layer header of a frame of link type ``lt`` (-1 if the link
    header is short or the link type unknown); ``ipv4`` set when the link layer says the
    payload is IPv4 (for raw link types: version nibble 4)."""
    cdef int64_t pos
    cdef uint16_t t
    cdef uint32_t af
    ipv4[0] = 0
    if lt == 1:                      # Ethernet II / 802.3
        if n < 14:
            return -1
        pos = 12
        t = be16(p + 12)
        # IEEE 802.1Q C-tag 0x8100, 802.1ad S-tag 0x88a8, pre-standard QinQ 0x9100
        while t == 0x8100 or t == 0x88A8 or t == 0x9100:
            if n < pos + 6:
                return -1
            pos += 4
            t = be16(p + pos)
        pos += 2
        if t <= 1500:
            # 802.3 length field: RFC 1042 LLC/SNAP AA AA 03 00 00 00 <ethertype>
            if (n >= pos + 8 and p[pos] == 0xAA and p[pos + 1] == 0xAA and p[pos + 2] == 0x03
                    and p[pos + 3] == 0 and p[pos + 4] == 0 and p[pos + 5] == 0):
                t = be16(p + pos + 6)
                pos += 8
            else:
                return pos
        ipv4[0] = t == 0x0800
        return pos
    if lt == 101 or lt == 12 or lt == 14:    # LINKTYPE_RAW, DLT_RAW: IPv4 or IPv6
        ipv4[0] = n >= 1 and (p[0] >> 4) == 4
        return 0
    if lt == 228:                    # LINKTYPE_IPV4: always IPv4
        ipv4[0] = 1
        return 0
    if lt == 113:                    # Linux SLL: 16 bytes, protocol type last
        if n < 16:
            return -1
        ipv4[0] = be16(p + 14) == 0x0800
        return 16
    if lt == 276:                    # Linux SLL2: 20 bytes, protocol type first
        if n < 20:
            return -1
        ipv4[0] = be16(p) == 0x0800
        return 20
    if lt == 9:                      # PPP (RFC 1661), optionally HDLC-framed (RFC 1662)
        pos = 0
        if n >= 2 and p[0] == 0xFF and p[1] == 0x03:
            pos = 2
        if n < pos + 1:
            return -1
        if p[pos] & 1:               # RFC 1661 §6.5: compressed 1-byte protocol field
            ipv4[0] = p[pos] == 0x21
            return pos + 1
        if n < pos + 2:
            return -1
        ipv4[0] = be16(p + pos) == 0x0021
        return pos + 2
    if lt == 104:                    # Cisco HDLC: address, control, ethertype
        if n < 4:
            return -1
        ipv4[0] = be16(p + 2) == 0x0800
        return 4
    if lt == 107:                    # Frame Relay: Q.922 address, then RFC 2427 or Cisco
        pos = 0
        # Q.922 §3.2: 2 to 4 address octets; EA bit (LSB) set on the last one
        while True:
            if pos >= n or pos >= 4:
                return -1
            pos += 1
            if p[pos - 1] & 1:
                break
        if pos < 2 or pos >= n:
            return -1
        if p[pos] == 0x03:           # RFC 2427 §2: UI control, [pad 0x00], NLPID
            pos += 1
            if pos < n and p[pos] == 0x00:
                pos += 1
            if pos >= n:
                return -1
            if p[pos] == 0xCC:       # NLPID IP (RFC 2427 §4)
                ipv4[0] = 1
                return pos + 1
            if p[pos] == 0x80:       # SNAP: OUI(3) PID(2) (RFC 2427 §4.2)
                if n < pos + 6:
                    return -1
                ipv4[0] = (p[pos + 1] == 0 and p[pos + 2] == 0 and p[pos + 3] == 0
                           and be16(p + pos + 4) == 0x0800)
                return pos + 6
            return pos + 1
        # Cisco's own encapsulation (IOS default "encapsulation frame-relay"): ethertype
        if n < pos + 2:
            return -1
        ipv4[0] = be16(p + pos) == 0x0800
        return pos + 2
    if lt == 0:                      # BSD loopback: AF_ value in the writer's byte order
        if n < 4:
            return -1
        af = rd32(p, 0)
        ipv4[0] = af == 2 or af == 0x02000000
        return 4
    if lt == 108:                    # OpenBSD loopback: AF_ value big-endian
        if n < 4:
            return -1
        ipv4[0] = rd32(p, 1) == 2
        return 4
    return -1


def parse_links(const uint8_t[::1] buf, const int64_t[::1] offsets,
                const int64_t[::1] lengths, int linktype):
    """Per frame: l3 offset (-1 if unknown), IPv4 packet length, is-IPv4 flag.

    The IPv4 length is the header's total length when it is plausible (20 up to what was
    captured), which drops link-layer trailers such as Ethernet padding or an FCS;
    otherwise everything after the link header. Returns ``(l3, ip_len, is_ipv4)``.
    """
    cdef int64_t n = offsets.shape[0], i, l3, avail, tl, size = buf.shape[0]
    cdef bint v4
    if lengths.shape[0] != n:
        raise ValueError("array lengths disagree")
    for i in range(n):  # (the callers pass scanned spans; checked again, cheaply)
        if offsets[i] < 0 or lengths[i] < 0 or offsets[i] > size - lengths[i]:
            raise ValueError(f"frame {i} lies outside the buffer")
    l3_arr = np.empty(n, np.int64)
    len_arr = np.empty(n, np.int64)
    v4_arr = np.zeros(n, np.uint8)
    cdef int64_t[::1] l3v = l3_arr, lenv = len_arr
    cdef uint8_t[::1] v4v = v4_arr
    cdef const uint8_t* base
    if n == 0:
        return l3_arr, len_arr, v4_arr.view(np.bool_)
    base = &buf[0] if buf.shape[0] else NULL
    with nogil:
        for i in range(n):
            if i + 8 < n and lengths[i + 8]:  # (a frame 8 ahead: see PREFETCH_AHEAD)
                prefetch(base + offsets[i + 8])
                prefetch(base + offsets[i + 8] + min(lengths[i + 8], 48) - 1)
            if lengths[i] == 0:
                l3 = l3_offset(linktype, base, 0, &v4)
            else:
                l3 = l3_offset(linktype, base + offsets[i], lengths[i], &v4)
            l3v[i] = l3
            if l3 < 0:
                lenv[i] = 0
                continue
            avail = lengths[i] - l3
            lenv[i] = avail
            v4v[i] = v4
            if v4 and avail >= 4:
                tl = be16(base + offsets[i] + l3 + 2)
                if 20 <= tl <= avail:
                    lenv[i] = tl
    return l3_arr, len_arr, v4_arr.view(np.bool_)


# ---------------------------------------------------------------------------------
# rebuild: original link header + new IP packet, and the classic writer
# ---------------------------------------------------------------------------------
cdef void fix_8023_length(uint8_t* p, int64_t n) noexcept nogil:
    """An 802.3 frame (LLC/SNAP) states its own length after the addresses: set it."""
    cdef int64_t pos = 12
    cdef uint16_t t
    if n < 14:
        return
    t = be16(p + 12)
    while (t == 0x8100 or t == 0x88A8 or t == 0x9100) and n >= pos + 6:
        pos += 4
        t = be16(p + pos)
    if t <= 1500:
        t = <uint16_t>(n - pos - 2 if n - pos - 2 <= 1500 else 1500)
        p[pos] = t >> 8
        p[pos + 1] = t & 0xFF


def rebuild(const uint8_t[::1] src, const int64_t[::1] src_off, const int64_t[::1] src_len,
            const int64_t[::1] hdr_len, const int64_t[::1] pkt_index,
            const uint8_t[::1] pkt_buf, const int64_t[::1] pkt_off, const int64_t[::1] pkt_len,
            uint8_t[::1] out, const int64_t[::1] out_off, int linktype):
    """Gather output frame k: if ``pkt_index[k] < 0`` a copy of source frame k, else
    its first ``hdr_len[k]`` bytes followed by new packet ``pkt_index[k]``.

    All sizes were computed (and checked) by the caller; source rows are already the
    selected frames, in output order.
    """
    cdef int64_t n = src_off.shape[0], k, j, h
    cdef uint8_t* o
    # base pointers only of non-empty buffers (an empty one is never read)
    cdef uint8_t* obase = &out[0] if out.shape[0] else NULL
    cdef const uint8_t* sbase = &src[0] if src.shape[0] else NULL
    cdef const uint8_t* pbase = &pkt_buf[0] if pkt_buf.shape[0] else NULL
    if n == 0 or obase == NULL:
        return
    with nogil:
        for k in range(n):
            o = obase + out_off[k]
            j = pkt_index[k]
            if j < 0:
                if src_len[k]:
                    memcpy(o, sbase + src_off[k], src_len[k])
                continue
            h = hdr_len[k]
            if h:
                memcpy(o, sbase + src_off[k], h)
            if pkt_len[j]:
                memcpy(o + h, pbase + pkt_off[j], pkt_len[j])
            if linktype == 1:
                fix_8023_length(o, h + pkt_len[j])


def write_records(const uint8_t[::1] buf, const int64_t[::1] offsets,
                  const int64_t[::1] lengths, const int64_t[::1] orig_lengths,
                  const int64_t[::1] timestamps, bint nano, uint8_t[::1] out):
    """Packet records (§5, little-endian) into ``out`` (sized by the caller: 16 bytes per
    record plus the data). Timestamps were range-checked by the caller."""
    cdef int64_t n = offsets.shape[0], i, pos = 0, ts
    cdef int64_t div = 1 if nano else 1000
    cdef uint8_t* o
    cdef const uint8_t* base = &buf[0] if buf.shape[0] else NULL
    if n == 0:
        return
    o = &out[0]
    with nogil:
        for i in range(n):
            ts = timestamps[i]
            wr32le(o + pos, <uint32_t>(ts // 1000000000))
            wr32le(o + pos + 4, <uint32_t>((ts % 1000000000) // div))
            wr32le(o + pos + 8, <uint32_t>lengths[i])
            wr32le(o + pos + 12, <uint32_t>orig_lengths[i])
            if lengths[i]:
                memcpy(o + pos + 16, base + offsets[i], lengths[i])
            pos += 16 + lengths[i]


cdef _check_rebuilt(const uint8_t[::1] src, const int64_t[::1] src_off,
                    const int64_t[::1] src_len, const int64_t[::1] hdr_len,
                    const int64_t[::1] pkt_index, const uint8_t[::1] pkt_buf,
                    const int64_t[::1] pkt_off, const int64_t[::1] pkt_len,
                    const int64_t[::1] out_len, const int64_t[::1] orig_lengths,
                    const int64_t[::1] timestamps):
    """Every span ``_format_record`` will read, checked (ValueError); the bytes of all
    the records."""
    cdef int64_t n = src_off.shape[0], k, j, h, body, pos = 0
    cdef int64_t ssize = src.shape[0], psize = pkt_buf.shape[0], npk = pkt_off.shape[0]
    if (src_len.shape[0] != n or hdr_len.shape[0] != n or pkt_index.shape[0] != n
            or out_len.shape[0] != n or orig_lengths.shape[0] != n
            or timestamps.shape[0] != n or pkt_len.shape[0] != npk):
        raise ValueError("array lengths disagree")
    for k in range(n):
        # (offset > size - length, not offset + length > size: no overflow)
        j = pkt_index[k]
        if j < 0:
            body = src_len[k]
            if (src_off[k] < 0 or body < 0 or src_off[k] > ssize - body
                    or out_len[k] != body):
                raise ValueError(f"frame {k} is outside its buffer")
        else:
            h = hdr_len[k]
            if (j >= npk or h < 0 or h > src_len[k] or src_off[k] < 0
                    or src_off[k] > ssize - h or pkt_off[j] < 0 or pkt_len[j] < 0
                    or pkt_off[j] > psize - pkt_len[j] or out_len[k] < h + pkt_len[j]):
                raise ValueError(f"frame {k} is outside its buffer")
            body = out_len[k]
        if body > 0xFFFFFFFF:
            raise ValueError("a frame is too long")
        pos += 16 + body
    return pos


cdef struct Rebuild:
    # raw views of ``write_rebuilt``'s arguments (checked by ``_check_rebuilt``)
    const uint8_t* src
    const int64_t* src_off
    const int64_t* src_len
    const int64_t* hdr_len
    const int64_t* pkt_index
    const uint8_t* pkt_buf
    const int64_t* pkt_off
    const int64_t* pkt_len
    const int64_t* out_len
    const int64_t* orig
    const int64_t* ts
    int64_t div
    int linktype


cdef inline void _format_record(uint8_t* o, int64_t k, const Rebuild* r) noexcept nogil:
    """Record k (checked by ``_check_rebuilt``) at ``o``: 16 + out_len[k] bytes."""
    cdef int64_t ts = r.ts[k], j = r.pkt_index[k], h, plen
    wr32le(o, <uint32_t>(ts // 1000000000))
    wr32le(o + 4, <uint32_t>((ts % 1000000000) // r.div))
    wr32le(o + 8, <uint32_t>r.out_len[k])
    wr32le(o + 12, <uint32_t>r.orig[k])
    o += 16
    if j < 0:
        if r.src_len[k]:
            memcpy(o, r.src + r.src_off[k], r.src_len[k])
        return
    h = r.hdr_len[k]
    plen = r.pkt_len[j]
    if h:
        memcpy(o, r.src + r.src_off[k], h)
    if plen:
        memcpy(o + h, r.pkt_buf + r.pkt_off[j], plen)
    if r.out_len[k] > h + plen:
        memset(o + h + plen, 0, r.out_len[k] - h - plen)
    if r.linktype == 1:
        fix_8023_length(o, h + plen)


cdef Rebuild _rebuild_view(const uint8_t[::1] src, const int64_t[::1] src_off,
                           const int64_t[::1] src_len, const int64_t[::1] hdr_len,
                           const int64_t[::1] pkt_index, const uint8_t[::1] pkt_buf,
                           const int64_t[::1] pkt_off, const int64_t[::1] pkt_len,
                           const int64_t[::1] out_len, const int64_t[::1] orig_lengths,
                           const int64_t[::1] timestamps, bint nano, int linktype):
    cdef Rebuild r
    r.src = &src[0] if src.shape[0] else NULL
    r.pkt_buf = &pkt_buf[0] if pkt_buf.shape[0] else NULL
    r.src_off = &src_off[0] if src_off.shape[0] else NULL
    r.src_len = &src_len[0] if src_len.shape[0] else NULL
    r.hdr_len = &hdr_len[0] if hdr_len.shape[0] else NULL
    r.pkt_index = &pkt_index[0] if pkt_index.shape[0] else NULL
    r.pkt_off = &pkt_off[0] if pkt_off.shape[0] else NULL
    r.pkt_len = &pkt_len[0] if pkt_len.shape[0] else NULL
    r.out_len = &out_len[0] if out_len.shape[0] else NULL
    r.orig = &orig_lengths[0] if orig_lengths.shape[0] else NULL
    r.ts = &timestamps[0] if timestamps.shape[0] else NULL
    r.div = 1 if nano else 1000
    r.linktype = linktype
    return r


def write_rebuilt(const uint8_t[::1] src, const int64_t[::1] src_off,
                  const int64_t[::1] src_len, const int64_t[::1] hdr_len,
                  const int64_t[::1] pkt_index, const uint8_t[::1] pkt_buf,
                  const int64_t[::1] pkt_off, const int64_t[::1] pkt_len,
                  const int64_t[::1] out_len, const int64_t[::1] orig_lengths,
                  const int64_t[::1] timestamps, bint nano, int linktype, uint8_t[::1] out):
    """``rebuild`` and ``write_records`` in one pass: record k (§5, little-endian) is its
    16-byte header (``timestamps[k]``, ``out_len[k]``, ``orig_lengths[k]``), then a copy
    of source frame k (``pkt_index[k] < 0``) or its first ``hdr_len[k]`` bytes followed by
    new packet ``pkt_index[k]`` and zero bytes up to ``out_len[k]`` (padding), records
    back to back from ``out[0]``; returns the bytes written. Every span read and written
    is checked first (ValueError); timestamps were range-checked by the caller."""
    cdef int64_t n = src_off.shape[0], k, pos = 0
    cdef int64_t need = _check_rebuilt(src, src_off, src_len, hdr_len, pkt_index, pkt_buf,
                                       pkt_off, pkt_len, out_len, orig_lengths, timestamps)
    cdef uint8_t* o
    cdef Rebuild r
    if need > out.shape[0]:
        raise ValueError("the output buffer is too small")
    if n == 0:
        return 0
    r = _rebuild_view(src, src_off, src_len, hdr_len, pkt_index, pkt_buf, pkt_off, pkt_len,
                      out_len, orig_lengths, timestamps, nano, linktype)
    o = &out[0]
    with nogil:
        for k in range(n):
            _format_record(o + pos, k, &r)
            pos += 16 + r.out_len[k]
    return pos


cdef int _write_all(int fd, const uint8_t* p, int64_t n) noexcept nogil:
    """write() until all ``n`` bytes are written (short writes resumed, EINTR retried):
    0, or the errno."""
    cdef ssize_t done
    while n > 0:
        done = write(fd, p, <size_t>n)
        if done < 0:
            if errno == EINTR:
                continue
            return errno if errno else 5
        if done == 0:
            return 5  # EIO: a file that takes nothing would loop forever
        p += done
        n -= done
    return 0


def write_rebuilt_fd(int fd, const uint8_t[::1] src, const int64_t[::1] src_off,
                     const int64_t[::1] src_len, const int64_t[::1] hdr_len,
                     const int64_t[::1] pkt_index, const uint8_t[::1] pkt_buf,
                     const int64_t[::1] pkt_off, const int64_t[::1] pkt_len,
                     const int64_t[::1] out_len, const int64_t[::1] orig_lengths,
                     const int64_t[::1] timestamps, bint nano, int linktype,
                     uint8_t[::1] stage):
    """``write_rebuilt`` straight to the file descriptor ``fd``: the records are formatted
    into ``stage`` (small enough to stay in the CPU cache) and written from there each
    time it fills, so the formatted bytes never travel to memory and back before the
    kernel copies them. A record larger than ``stage`` is formatted in a buffer of its
    own. Same checks, same bytes; returns the bytes written; OSError if the file
    refuses them."""
    cdef int64_t n = src_off.shape[0], k, pos = 0, total = 0, rec, cap = stage.shape[0]
    cdef uint8_t* sp = &stage[0] if cap else NULL
    cdef uint8_t* big = NULL
    cdef uint8_t* o
    cdef int err = 0
    cdef Rebuild r
    _check_rebuilt(src, src_off, src_len, hdr_len, pkt_index, pkt_buf, pkt_off, pkt_len,
                   out_len, orig_lengths, timestamps)
    if n == 0:
        return 0
    if cap < 16:
        raise ValueError("the stage buffer is too small")
    r = _rebuild_view(src, src_off, src_len, hdr_len, pkt_index, pkt_buf, pkt_off, pkt_len,
                      out_len, orig_lengths, timestamps, nano, linktype)
    with nogil:
        for k in range(n):
            rec = 16 + r.out_len[k]
            if rec > cap - pos:  # flush what is staged
                err = _write_all(fd, sp, pos)
                total += pos
                pos = 0
                if err:
                    break
            if rec > cap:  # a record larger than the stage: on its own
                big = <uint8_t*>malloc(rec)
                if big == NULL:
                    err = 12  # ENOMEM
                    break
                _format_record(big, k, &r)
                err = _write_all(fd, big, rec)
                free(big)
                big = NULL
                total += rec
                if err:
                    break
                continue
            _format_record(sp + pos, k, &r)
            pos += rec
        if err == 0 and pos:
            err = _write_all(fd, sp, pos)
            total += pos
    if err:
        raise OSError(err, f"writing the capture failed: {__import__('os').strerror(err)}")
    return total


def gather_prefix(const uint8_t[::1] buf, const int64_t[::1] offsets,
                  const int64_t[::1] lengths, uint8_t[:, ::1] out):
    """Row i of ``out`` (n rows of ``w`` bytes) = the first ``w`` bytes of packet i, zeros
    past its end. Packet headers are scattered through a capture: the packets a few ahead
    are prefetched, so the loads overlap instead of each waiting for memory. Every span
    is checked first (ValueError)."""
    cdef Py_ssize_t n = offsets.shape[0], i, ahead
    cdef int64_t size = buf.shape[0], w = out.shape[1], take
    cdef const uint8_t* bp = &buf[0] if size else NULL
    if lengths.shape[0] != n or out.shape[0] != n:
        raise ValueError("array lengths disagree")
    for i in range(n):
        if offsets[i] < 0 or lengths[i] < 0 or offsets[i] > size - lengths[i]:
            raise ValueError(f"packet {i} lies outside the buffer")
    if n == 0 or w == 0:
        return
    with nogil:
        for i in range(n):
            if i + 8 < n:
                ahead = i + 8
                if lengths[ahead]:
                    prefetch(bp + offsets[ahead])
                    prefetch(bp + offsets[ahead] + min(lengths[ahead], w) - 1)
            take = lengths[i] if lengths[i] < w else w
            if take:
                memcpy(&out[i, 0], bp + offsets[i], take)
            if take < w:
                memset(&out[i, take], 0, w - take)


def same_spans(const uint8_t[::1] a, const int64_t[::1] a_off, const int64_t[::1] a_len,
               const uint8_t[::1] b, const int64_t[::1] b_off, const int64_t[::1] b_len,
               uint8_t[::1] out):
    """``out[i] = 1`` when span i of ``a`` and span i of ``b`` hold the same bytes (same
    length and contents), else 0. Every span is bounds-checked first (ValueError)."""
    cdef int64_t n = a_off.shape[0], i, asize = a.shape[0], bsize = b.shape[0]
    cdef const uint8_t* ap = &a[0] if asize else NULL
    cdef const uint8_t* bp = &b[0] if bsize else NULL
    if (a_len.shape[0] != n or b_off.shape[0] != n or b_len.shape[0] != n
            or out.shape[0] < n):
        raise ValueError("array lengths disagree")
    for i in range(n):
        # (offset > size - length, not offset + length > size: no overflow)
        if (a_off[i] < 0 or a_len[i] < 0 or a_off[i] > asize - a_len[i]
                or b_off[i] < 0 or b_len[i] < 0 or b_off[i] > bsize - b_len[i]):
            raise ValueError(f"span {i} is outside its buffer")
    with nogil:
        for i in range(n):
            out[i] = a_len[i] == b_len[i] and (
                a_len[i] == 0 or memcmp(ap + a_off[i], bp + b_off[i], a_len[i]) == 0)
