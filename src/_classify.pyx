# distutils: language = c++
"""Compiled packet classifier: ordered access lists -> decision trees -> first permit.

Structure, and why a cutting tree: crypto ACL sets are small to medium (a few to ~10K
entries), rebuilt rarely (build a new classifier on change) and looked up per packet,
so we want a lookup that is a few dependent loads plus a short linear scan, and a build
that is a simple deterministic recursion.  rte_acl's multi-bit trie over bytes was the
other candidate; it has to split its tries too once wildcards multiply its states, and
ranges (ports) become many byte transitions, while a cutting tree keeps a row's ranges
as they are and checks them in the leaf.  So: a HiCuts / HyperCuts decision tree (Gupta
& McKeown 1999; Singh et al. 2003) over five fields (source, destination, source port,
destination port, protocol), with these refinements:

* every internal node cuts ONE field of its region into 2^k equal slices (the last one
  may be short), so the child of a key is ``children[base + min((key[dim] - lo) >>
  shift, count)]``: a subtraction, a shift and a clamp, no search (a multi-bit stride,
  as in rte_acl).  k is the largest that keeps the HiCuts space rule (row copies +
  slices <= spfac * rows; at least 2 slices), the field is the one whose fullest slice
  is smallest; no field whose fullest slice keeps every row = a leaf;
* region compaction (HyperCuts): a node's region shrinks to the bounding box of its
  rows first, so sparse rule sets (all of a node's rows inside one /13) are cut where
  they differ, not into empty slices;
* pruning (HyperCuts' redundancy removal, with the list semantics): after a row that
  covers the whole node region and needs no leaf check, the rest of its own list is
  dead (a deny skips the list, a permit has decided it); after such a permit of a list
  with no deny before it, everything is dead (no deny can ever move past it);
* separable trees (EffiCuts / CutSplit): rows whose source / destination is wider than
  a /8 would be copied into every slice of a cut on that field, so above 64 rows they
  go into their own trees (up to 4: narrow/narrow, narrow/wide, wide/narrow,
  wide/wide); a packet walks every tree of its forest;
* adjacent slices with the same rows, all of which span both slices in the cut field,
  share one subtree (nothing below depends on that field there);
* a byte budget: once it is spent, nodes still to be built become longer leaves, so a
  hostile rule set costs lookup speed, never unbounded memory or build time.

A row is one (Ace, source port range, destination port range) combination: `eq` with
several ports, `neq` and friends become several rows.  Rows carry their global
priority (row id: lists in order, entries in order), their list and entry index, and
``skip_to``, the first row id of the next list.  A row's five fields are inclusive
ranges (a discontiguous wildcard gets its bounding range); everything else (the exact
wildcard mask check, ICMP type / code, `established`, dscp / precedence / tos) is
checked in the leaf, only for rows flagged ``extra``.  Leaves hold 32-byte copies of
their rows' ranges (``Hot``), two per cache line, ended by a sentinel.

Lookup of one key in a forest of T trees (the list semantics of DESIGN.md Policy 2):
``start = 0``; descend every tree to its leaf; find the smallest matching row >= start
over the trees (leaf rows are sorted by row id, so each scan stops at the best
candidate found so far); a permit is the answer; a deny moves ``start`` to its
``skip_to`` (the next list) and the scans resume where they stopped.  With one tree this
is a plain in-order leaf scan.  Batches are looked up in blocks of 16 keys whose tree
walks advance in lock step (independent loads in flight, as rte_acl classifies several
flows at once), then the leaves are prefetched and scanned; ``scalar=True`` runs the
plain one-key loop, the reference variant the tests compare it with.

Two forests are built: one for unfragmented packets and initial fragments, one for
non-initial fragments (RFC 791: a fragment with offset > 0 carries no transport
header), whose rows follow the IOS fragment rules (Cisco, "Access Control Lists and IP
Fragments"): an entry with only L3 information, or a `fragments` entry, applies on its
L3 part; an entry with L4 information matches on its L3 part if it is a permit and
never if it is a deny; `fragments` entries never apply to other packets.

Everything is flat C++ vectors, built once and shrunk; lookups only read them, in C,
without the GIL; no Python object is made per packet.
"""

from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libcpp.vector cimport vector

import numpy as np

# Status codes (ipsecfast.status.Status): keep equal.
cdef enum:
    ST_OK = 0
    ST_TRUNCATED = 1
    ST_BAD_IP_HEADER = 2

cdef extern from *:
    """
    #define ipsf_prefetch(p) __builtin_prefetch((const void*)(p))
    """
    void prefetch "ipsf_prefetch"(const void* p) noexcept nogil

cdef enum:
    BLOCK = 16        # keys walked in lock step by lookup_block
    NDIM = 5          # source, destination, source port, destination port, protocol
    MAX_TREES = 8
    MAX_BITS = 16     # at most 2^16 children per node
    MAX_DEPTH = 40
    NO_ROW = 0x7FFFFFFF

OK = ST_OK
TRUNCATED = ST_TRUNCATED
BAD_IP_HEADER = ST_BAD_IP_HEADER


cdef inline int ceil_log2(uint64_t w) noexcept nogil:
    cdef int b = 0
    while (<uint64_t>1 << b) < w:
        b += 1
    return b


cdef struct Row:
    uint32_t lo[NDIM]       # inclusive ranges: src, dst, sport, dport, proto
    uint32_t hi[NDIM]
    uint32_t src_mask       # exact check for a discontiguous wildcard (extra only)
    uint32_t src_val
    uint32_t dst_mask
    uint32_t dst_val
    int32_t list_idx        # index of the access list
    int32_t entry_idx       # index of the entry in its list
    int32_t skip_to         # first row id of the next list (a deny jumps there)
    int16_t icmp_type       # -1 = any
    int16_t icmp_code       # -1 = any
    uint8_t tos_mask        # (tos & tos_mask) == tos_val: dscp / precedence / tos
    uint8_t tos_val
    uint8_t established     # 1: TCP ACK or RST must be set
    uint8_t permit          # 1 permit, 0 deny
    uint8_t extra           # 1 when any leaf check beyond the five ranges is needed
    uint8_t prune           # when covering a node: 1 = rest of own list dead, 2 = all after


cdef struct Node:
    uint32_t dim            # field cut at this node
    uint32_t lo             # start of the node's (compacted) range in that field
    uint32_t shift          # slice = (key[dim] - lo) >> shift, clamped to count
    uint32_t count          # number of slices; slot `count` is the empty leaf
    int32_t base            # first child slot in `children`


cdef struct Hot:
    # a copy of the row's ranges inside the leaf, so a leaf scan reads consecutive memory
    # (two rows per cache line) and touches the full Row only on a match with extras
    uint32_t src_lo
    uint32_t src_hi
    uint32_t dst_lo
    uint32_t dst_hi
    uint16_t sp_lo
    uint16_t sp_hi
    uint16_t dp_lo
    uint16_t dp_hi
    uint8_t pr_lo
    uint8_t pr_hi
    uint8_t extra
    uint8_t permit
    int32_t rid


cdef struct Key:
    uint32_t f[NDIM]
    int32_t icmp_type
    int32_t icmp_code
    uint32_t tcp_flags
    uint32_t tos
    int32_t frag


# children[] entries: >= 0 an internal node index, < 0 a leaf: ~value is the position in
# leaf_hot (and leaf_rows) of its rows, ascending by row id and ended by a sentinel whose
# rid is NO_ROW (position 0 is the shared empty leaf).  Every node owns count + 1 child
# slots, the last one the empty leaf, where keys outside the node's range in its field go
# (the unsigned subtraction wraps below `lo`).

cdef inline int32_t descend(const Node* nodes, const int32_t* children, int32_t c,
                            const Key* k) noexcept nogil:
    cdef const Node* nd
    cdef uint32_t idx
    while c >= 0:
        nd = &nodes[c]
        idx = (k.f[nd.dim] - nd.lo) >> nd.shift
        if idx > nd.count:
            idx = nd.count
        c = children[nd.base + idx]
    return ~c

cdef inline bint extra_matches(const Row* r, const Key* k) noexcept nogil:
    """The leaf checks beyond the five ranges (acl.Ace.matches, in C)."""
    if (k.f[0] & r.src_mask) != r.src_val or (k.f[1] & r.dst_mask) != r.dst_val:
        return False    # discontiguous wildcard: the exact mask check
    if r.icmp_type >= 0 and k.icmp_type != r.icmp_type:
        return False
    if r.icmp_code >= 0 and k.icmp_code != r.icmp_code:
        return False
    if r.established and (k.tcp_flags & 0x14) == 0:  # RST 0x04 | ACK 0x10 (RFC 793 3.1)
        return False
    if (k.tos & r.tos_mask) != r.tos_val:  # dscp / precedence / tos bits of the TOS byte
        return False
    return True


cdef inline bint hot_matches(const Hot* h, const Row* rows, const Key* k) noexcept nogil:
    """Whether the key falls in the row's ranges (destination first: the most selective
    field in crypto ACLs and ClassBench alike), then its extra checks if it has any."""
    if k.f[1] < h.dst_lo or k.f[1] > h.dst_hi:
        return False
    if k.f[0] < h.src_lo or k.f[0] > h.src_hi:
        return False
    if k.f[3] < h.dp_lo or k.f[3] > h.dp_hi:
        return False
    if k.f[4] < h.pr_lo or k.f[4] > h.pr_hi:
        return False
    if k.f[2] < h.sp_lo or k.f[2] > h.sp_hi:
        return False
    if h.extra:
        return extra_matches(&rows[h.rid], k)
    return True


cdef class Forest:
    """Rows of one packet class (whole / initial vs non-initial fragments) and their trees."""

    cdef vector[Row] rows
    cdef vector[Node] nodes
    cdef vector[int32_t] children
    cdef vector[int32_t] leaf_rows
    cdef vector[Hot] leaf_hot          # leaf_hot[i] is a copy of rows[leaf_rows[i]]
    cdef vector[int32_t] roots
    cdef int binth
    cdef double spfac
    cdef int64_t budget          # bytes of nodes + child slots + leaves; past it, leaves
    cdef int32_t empty_leaf
    cdef readonly int max_depth
    cdef readonly int nleaves
    cdef readonly int max_leaf

    def __cinit__(self):
        self.empty_leaf = 0
        self.nleaves = 0
        self.max_depth = 0
        self.max_leaf = 0

    def __init__(self, const uint32_t[:, ::1] lo, const uint32_t[:, ::1] hi,
                 const uint32_t[:, ::1] masks, const int16_t[:, ::1] icmp,
                 const uint8_t[:, ::1] flags, const int32_t[:, ::1] where,
                 const int32_t[::1] group, int ngroups, int binth=8, double spfac=4.0,
                 int64_t budget=16_000_000):
        """Build from row arrays (row id = priority).

        lo, hi: (n, 5) inclusive ranges; masks: (n, 4) src_mask, src_val, dst_mask,
        dst_val; icmp: (n, 2) type, code (-1 any); flags: (n, 4) tos_mask, tos_val,
        established, permit; where: (n, 2) list index (non-decreasing), entry index;
        group: (n,) tree of each row, 0 <= group < ngroups <= 8.  budget: bytes the
        trees may take; once it is spent, nodes still to build become (longer) leaves, so
        a hostile rule set costs lookup speed, never unbounded memory.
        """
        cdef Py_ssize_t n = lo.shape[0], i, j
        cdef Row r
        cdef int32_t g
        if not (hi.shape[0] == masks.shape[0] == icmp.shape[0] == flags.shape[0]
                == where.shape[0] == group.shape[0] == n):
            raise ValueError("row arrays differ in length")
        if lo.shape[1] != NDIM or hi.shape[1] != NDIM or masks.shape[1] != 4 \
                or icmp.shape[1] != 2 or flags.shape[1] != 4 or where.shape[1] != 2:
            raise ValueError("row arrays have the wrong shape")
        if not 1 <= ngroups <= MAX_TREES:
            raise ValueError("ngroups must be 1..8")
        if binth < 1 or spfac < 1.0:
            raise ValueError("binth >= 1 and spfac >= 1 required")
        self.binth = binth
        self.spfac = spfac
        self.budget = budget
        self.rows.resize(n)
        for i in range(n):
            if group[i] < 0 or group[i] >= ngroups:
                raise ValueError("group out of range")
            if i and where[i, 0] < where[i - 1, 0]:
                raise ValueError("rows must be sorted by list")
            for j in range(NDIM):
                if lo[i, j] > hi[i, j]:
                    raise ValueError("empty range in a row")
                r.lo[j] = lo[i, j]
                r.hi[j] = hi[i, j]
            if hi[i, 2] > 0xFFFF or hi[i, 3] > 0xFFFF or hi[i, 4] > 0xFF:
                raise ValueError("port or protocol range out of bounds")
            r.src_mask = masks[i, 0]
            r.src_val = masks[i, 1] & masks[i, 0]
            r.dst_mask = masks[i, 2]
            r.dst_val = masks[i, 3] & masks[i, 2]
            r.icmp_type = icmp[i, 0]
            r.icmp_code = icmp[i, 1]
            r.tos_mask = flags[i, 0]
            r.tos_val = flags[i, 1] & flags[i, 0]
            r.established = flags[i, 2] != 0
            r.permit = flags[i, 3] != 0
            r.list_idx = where[i, 0]
            r.entry_idx = where[i, 1]
            r.extra = (r.src_mask != 0 or r.dst_mask != 0 or r.icmp_type >= 0
                       or r.icmp_code >= 0 or r.established or r.tos_mask != 0)
            r.skip_to = 0
            r.prune = 1
            self.rows[i] = r
        # skip_to: first row of the next list; prune 2 for a permit with no deny before it
        # in its list (then no deny can ever move `start` past it, in any tree).
        cdef int32_t nxt = <int32_t>n
        for i in range(n - 1, -1, -1):
            if i + 1 < n and self.rows[i + 1].list_idx != self.rows[i].list_idx:
                nxt = <int32_t>(i + 1)
            self.rows[i].skip_to = nxt
        cdef bint seen_deny = False
        for i in range(n):
            if i == 0 or self.rows[i].list_idx != self.rows[i - 1].list_idx:
                seen_deny = False
            if self.rows[i].permit and not seen_deny:
                self.rows[i].prune = 2
            if not self.rows[i].permit:
                seen_deny = True
        # one tree per non-empty group
        cdef vector[int32_t] ids
        cdef uint64_t rlo[NDIM]
        cdef uint64_t rhi[NDIM]
        self._empty_leaf_init()
        for g in range(ngroups):
            ids.clear()
            for i in range(n):
                if group[i] == g:
                    ids.push_back(<int32_t>i)
            if ids.size() == 0:
                continue
            rlo[0] = 0; rhi[0] = 0xFFFFFFFF
            rlo[1] = 0; rhi[1] = 0xFFFFFFFF
            rlo[2] = 0; rhi[2] = 0xFFFF
            rlo[3] = 0; rhi[3] = 0xFFFF
            rlo[4] = 0; rhi[4] = 0xFF
            self.roots.push_back(self._build(ids, rlo, rhi, 0))
        self.nodes.shrink_to_fit()
        self.children.shrink_to_fit()
        self.leaf_rows.shrink_to_fit()
        self.leaf_hot.shrink_to_fit()

    cdef void _empty_leaf_init(self):
        self._sentinel()                # position 0: the empty leaf
        self.empty_leaf = ~0

    cdef void _sentinel(self):
        cdef Hot h
        h.src_lo = 1
        h.src_hi = 0
        h.dst_lo = 1
        h.dst_hi = 0
        h.sp_lo = 1
        h.sp_hi = 0
        h.dp_lo = 1
        h.dp_hi = 0
        h.pr_lo = 1
        h.pr_hi = 0
        h.extra = 0
        h.permit = 0
        h.rid = NO_ROW
        self.leaf_rows.push_back(NO_ROW)
        self.leaf_hot.push_back(h)

    cdef int32_t _leaf(self, vector[int32_t]& ids):
        cdef size_t i
        if ids.size() == 0:
            return self.empty_leaf
        cdef Hot h
        cdef const Row* r
        cdef int32_t pos = <int32_t>self.leaf_rows.size()
        for i in range(ids.size()):
            self.leaf_rows.push_back(ids[i])
            r = &self.rows[ids[i]]
            h.src_lo = r.lo[0]
            h.src_hi = r.hi[0]
            h.dst_lo = r.lo[1]
            h.dst_hi = r.hi[1]
            h.sp_lo = <uint16_t>r.lo[2]
            h.sp_hi = <uint16_t>r.hi[2]
            h.dp_lo = <uint16_t>r.lo[3]
            h.dp_hi = <uint16_t>r.hi[3]
            h.pr_lo = <uint8_t>r.lo[4]
            h.pr_hi = <uint8_t>r.hi[4]
            h.extra = r.extra
            h.permit = r.permit
            h.rid = ids[i]
            self.leaf_hot.push_back(h)
        if <int>ids.size() > self.max_leaf:
            self.max_leaf = <int>ids.size()
        self._sentinel()
        self.nleaves += 1
        return ~pos

    cdef void _prune(self, vector[int32_t]& ids, uint64_t* lo, uint64_t* hi,
                     vector[int32_t]& out):
        cdef size_t i
        cdef int d
        cdef int32_t skip_until = -1, rid
        cdef const Row* r
        cdef bint cover
        for i in range(ids.size()):
            rid = ids[i]
            if rid < skip_until:
                continue
            out.push_back(rid)
            r = &self.rows[rid]
            if r.extra:
                continue
            cover = True
            for d in range(NDIM):
                if r.lo[d] > lo[d] or r.hi[d] < hi[d]:
                    cover = False
                    break
            if cover:
                if r.prune == 2:
                    break
                skip_until = r.skip_to

    cdef int _choose(self, vector[int32_t]& ids, uint64_t* lo, uint64_t* hi, int* out_k,
                     vector[int32_t]& tmp):
        """Field to cut (or -1) and log2 of the number of slices, HiCuts style."""
        cdef Py_ssize_t n = ids.size()
        cdef int d, k, bits, best_d = -1, kk, shift
        cdef uint64_t width, a, b, total, nc, c
        cdef int32_t best_max = <int32_t>n, mx, run
        cdef uint64_t best_sum = 0
        cdef size_t i
        cdef const Row* r
        cdef bint inner
        cdef double limit = self.spfac * n
        for d in range(NDIM):
            width = hi[d] - lo[d] + 1
            if width <= 1:
                continue
            # a cut only helps if some row has a boundary strictly inside the region
            inner = False
            for i in range(<size_t>n):
                r = &self.rows[ids[i]]
                if r.lo[d] > lo[d] or r.hi[d] < hi[d]:
                    inner = True
                    break
            if not inner:
                continue
            bits = ceil_log2(width)
            # HiCuts: the most slices whose row copies stay within spfac * rows (at least
            # two slices; at most 2^MAX_BITS).
            kk = 0
            k = 1
            while k <= bits and k <= MAX_BITS:
                shift = bits - k
                nc = ((width - 1) >> shift) + 1
                total = 0
                mx = 0
                tmp.assign(nc + 1, 0)
                for i in range(<size_t>n):
                    r = &self.rows[ids[i]]
                    a = (max(<uint64_t>r.lo[d], lo[d]) - lo[d]) >> shift
                    b = (min(<uint64_t>r.hi[d], hi[d]) - lo[d]) >> shift
                    tmp[a] += 1
                    tmp[b + 1] -= 1
                    total += b - a + 1
                if kk and <double>(total + nc) > limit:
                    break
                run = 0
                for c in range(nc):
                    run += tmp[c]
                    if run > mx:
                        mx = run
                kk = k
                if mx < best_max or (mx == best_max and best_d >= 0 and total < best_sum):
                    best_max = mx
                    best_sum = total
                    best_d = d
                    out_k[0] = k
                if <double>(total + nc) > limit and mx < n:
                    break
                k += 1
        return best_d

    cdef int32_t _build(self, vector[int32_t]& ids_in, uint64_t* region_lo,
                        uint64_t* region_hi, int depth) except? -2147483647:
        cdef vector[int32_t] ids
        cdef uint64_t lo[NDIM]
        cdef uint64_t hi[NDIM]
        cdef size_t i, n
        cdef int j
        cdef const Row* r
        # compact the region to the bounding box of its rows (HyperCuts): keys outside it
        # match no row here, and pruning against the box is then exact.
        for j in range(NDIM):
            lo[j] = region_hi[j]
            hi[j] = region_lo[j]
        for i in range(ids_in.size()):
            r = &self.rows[ids_in[i]]
            for j in range(NDIM):
                if r.lo[j] < lo[j]:
                    lo[j] = r.lo[j]
                if r.hi[j] > hi[j]:
                    hi[j] = r.hi[j]
        for j in range(NDIM):
            if lo[j] < region_lo[j]:
                lo[j] = region_lo[j]
            if hi[j] > region_hi[j]:
                hi[j] = region_hi[j]
        self._prune(ids_in, lo, hi, ids)
        if depth > self.max_depth:
            self.max_depth = depth
        cdef int64_t used = (<int64_t>self.children.size() * 4
                             + <int64_t>self.nodes.size() * sizeof(Node)
                             + <int64_t>self.leaf_rows.size() * (4 + sizeof(Hot)))
        if <int>ids.size() <= self.binth or depth >= MAX_DEPTH or used > self.budget:
            return self._leaf(ids)
        cdef vector[int32_t] tmp
        cdef int k = 0
        cdef int d = self._choose(ids, lo, hi, &k, tmp)
        if d < 0:
            return self._leaf(ids)
        cdef uint64_t width = hi[d] - lo[d] + 1
        cdef int shift = ceil_log2(width) - k
        cdef uint64_t nc = ((width - 1) >> shift) + 1, c, a, b
        n = ids.size()
        # bucket rows into slices (CSR), keeping priority order inside each slice
        cdef vector[int32_t] start
        start.assign(nc + 1, 0)
        for i in range(n):
            r = &self.rows[ids[i]]
            a = (max(<uint64_t>r.lo[d], lo[d]) - lo[d]) >> shift
            b = (min(<uint64_t>r.hi[d], hi[d]) - lo[d]) >> shift
            for c in range(a, b + 1):
                start[c + 1] += 1
        for c in range(nc):
            start[c + 1] += start[c]
        cdef vector[int32_t] members
        members.resize(start[nc])
        cdef vector[int32_t] fill = start
        for i in range(n):
            r = &self.rows[ids[i]]
            a = (max(<uint64_t>r.lo[d], lo[d]) - lo[d]) >> shift
            b = (min(<uint64_t>r.hi[d], hi[d]) - lo[d]) >> shift
            for c in range(a, b + 1):
                members[fill[c]] = ids[i]
                fill[c] += 1
        # the slots and the row copies of this cut must fit in what is left of the budget
        if used + <int64_t>(nc + 1) * 4 + sizeof(Node) \
                + <int64_t>(start[nc] + nc) * (4 + sizeof(Hot)) > self.budget:
            return self._leaf(ids)
        cdef int32_t node_id = <int32_t>self.nodes.size()
        cdef Node node
        node.dim = d
        node.lo = <uint32_t>lo[d]
        node.shift = shift
        node.count = <uint32_t>nc
        node.base = <int32_t>self.children.size()
        self.nodes.push_back(node)
        self.children.resize(self.children.size() + nc + 1)
        cdef int32_t base = node.base
        self.children[base + nc] = self.empty_leaf
        cdef uint64_t clo[NDIM]
        cdef uint64_t chi[NDIM]
        cdef vector[int32_t] child
        cdef bint same
        cdef uint64_t slice_w = <uint64_t>1 << shift
        for j in range(NDIM):
            clo[j] = lo[j]
            chi[j] = hi[j]
        for c in range(nc):
            clo[d] = lo[d] + c * slice_w
            chi[d] = min(clo[d] + slice_w - 1, hi[d])
            if start[c] == start[c + 1]:
                self.children[base + c] = self.empty_leaf
                continue
            if c > 0 and start[c + 1] - start[c] == start[c] - start[c - 1]:
                # the same rows, all spanning both slices in this field: share the subtree
                # (no row has a boundary in d there, so nothing below depends on d).
                same = True
                for i in range(<size_t>(start[c + 1] - start[c])):
                    if members[start[c] + i] != members[start[c - 1] + i]:
                        same = False
                        break
                    r = &self.rows[members[start[c] + i]]
                    if r.lo[d] > clo[d] - slice_w or r.hi[d] < chi[d]:
                        same = False
                        break
                if same:
                    self.children[base + c] = self.children[base + c - 1]
                    continue
            child.clear()
            for i in range(<size_t>start[c], <size_t>start[c + 1]):
                child.push_back(members[i])
            self.children[base + c] = self._build(child, clo, chi, depth + 1)
        return node_id

    @property
    def nbytes(self):
        """Bytes held by the flat arrays (rows, nodes, children, leaves)."""
        return (self.rows.size() * sizeof(Row) + self.nodes.size() * sizeof(Node)
                + self.leaf_hot.size() * sizeof(Hot)
                + (self.children.size() + self.leaf_rows.size()
                   + self.roots.size()) * sizeof(int32_t))

    def export(self):
        """Copies of the flat arrays (for tests and tuning): nodes (dim, lo, shift, count, base),
        children, leaf_rows (runs ended by 2**31 - 1), roots, and per row (list, entry,
        skip_to, permit)."""
        cdef Py_ssize_t i
        nodes = np.zeros((self.nodes.size(), 5), dtype=np.int64)
        for i in range(<Py_ssize_t>self.nodes.size()):
            nodes[i, 0] = self.nodes[i].dim
            nodes[i, 1] = self.nodes[i].lo
            nodes[i, 2] = self.nodes[i].shift
            nodes[i, 3] = self.nodes[i].count
            nodes[i, 4] = self.nodes[i].base
        rows = np.zeros((self.rows.size(), 4), dtype=np.int64)
        for i in range(<Py_ssize_t>self.rows.size()):
            rows[i, 0] = self.rows[i].list_idx
            rows[i, 1] = self.rows[i].entry_idx
            rows[i, 2] = self.rows[i].skip_to
            rows[i, 3] = self.rows[i].permit
        return {
            "nodes": nodes,
            "children": np.array([self.children[i] for i in range(<Py_ssize_t>self.children.size())], dtype=np.int64),
            "leaf_rows": np.array([self.leaf_rows[i] for i in range(<Py_ssize_t>self.leaf_rows.size())], dtype=np.int64),
            "roots": np.array([self.roots[i] for i in range(<Py_ssize_t>self.roots.size())], dtype=np.int64),
            "rows": rows,
        }

    def stats(self):
        return {
            "rows": <int>self.rows.size(),
            "trees": <int>self.roots.size(),
            "nodes": <int>self.nodes.size(),
            "children": <int>self.children.size(),
            "leaves": self.nleaves,
            "leaf_rows": <int>self.leaf_rows.size(),
            "max_leaf": self.max_leaf,
            "max_depth": self.max_depth,
            "bytes": self.nbytes,
        }


cdef struct ForestView:
    const Row* rows
    const Node* nodes
    const int32_t* children
    const Hot* leaf_hot
    const int32_t* roots
    int ntrees


cdef ForestView view_of(Forest f):
    cdef ForestView v
    v.rows = f.rows.data()
    v.nodes = f.nodes.data()
    v.children = f.children.data()
    v.leaf_hot = f.leaf_hot.data()
    v.roots = f.roots.data()
    v.ntrees = <int>f.roots.size()
    return v


cdef inline int32_t scan_leaves(const ForestView* v, const Key* k,
                                const int32_t* leaf) noexcept nogil:
    """Row id of the first permit under the list semantics, or -1, given each tree's leaf."""
    cdef int32_t pos[MAX_TREES]
    cdef int t
    cdef int32_t rid, start = 0, cur, p
    cdef const Hot* h
    if v.ntrees == 0:
        return -1
    if v.ntrees == 1:
        # one tree: scan the leaf in order, a matching deny skips to the next list
        h = &v.leaf_hot[leaf[0]]
        while h.rid != NO_ROW:
            if h.rid >= start and hot_matches(h, v.rows, k):
                if h.permit:
                    return h.rid
                start = v.rows[h.rid].skip_to
            h += 1
        return -1
    for t in range(v.ntrees):
        pos[t] = leaf[t]
    while True:
        # smallest matching row >= start over all trees; each scan stops at the best so far
        # (the sentinel's NO_ROW ends every scan)
        cur = NO_ROW
        for t in range(v.ntrees):
            p = pos[t]
            while True:
                h = &v.leaf_hot[p]
                rid = h.rid
                if rid >= cur:
                    break
                if rid >= start and hot_matches(h, v.rows, k):
                    cur = rid
                    break
                p += 1
            pos[t] = p
        if cur == NO_ROW:
            return -1
        if v.rows[cur].permit:
            return cur
        start = v.rows[cur].skip_to


cdef inline int32_t forest_lookup(const ForestView* v, const Key* k) noexcept nogil:
    """The plain one-key lookup: descend every tree, then scan (reference variant)."""
    cdef int32_t leaf[MAX_TREES]
    cdef int t
    for t in range(v.ntrees):
        leaf[t] = descend(v.nodes, v.children, v.roots[t], k)
    return scan_leaves(v, k, leaf)


cdef void lookup_block(const ForestView* vw, const ForestView* vf, const Key* keys,
                       const uint8_t* ok, int m, int32_t* rid) noexcept nogil:
    """Lookups of up to BLOCK keys, the tree walks interleaved level by level.

    One walk is a chain of dependent loads; walking the keys of a block in lock step puts
    BLOCK independent loads in flight per level (memory-level parallelism, as rte_acl
    classifies several flows at once), and the leaves are prefetched before the scans.
    """
    cdef int32_t cur[BLOCK]
    cdef int32_t leaf[BLOCK * MAX_TREES]
    cdef const ForestView* vv[BLOCK]
    cdef int j, t, maxt = vw.ntrees if vw.ntrees > vf.ntrees else vf.ntrees
    cdef int32_t c
    cdef uint32_t idx
    cdef bint active
    cdef const Node* nd
    for j in range(m):
        vv[j] = vf if keys[j].frag == 2 else vw
    for t in range(maxt):
        for j in range(m):
            cur[j] = vv[j].roots[t] if ok[j] and t < vv[j].ntrees else ~0
        active = True
        while active:
            active = False
            for j in range(m):
                c = cur[j]
                if c >= 0:
                    nd = &vv[j].nodes[c]
                    idx = (keys[j].f[nd.dim] - nd.lo) >> nd.shift
                    if idx > nd.count:
                        idx = nd.count
                    c = vv[j].children[nd.base + idx]
                    cur[j] = c
                    if c >= 0:
                        active = True
        for j in range(m):
            c = ~cur[j]
            leaf[j * MAX_TREES + t] = c
            prefetch(&vv[j].leaf_hot[c])
    for j in range(m):
        rid[j] = scan_leaves(vv[j], &keys[j], &leaf[j * MAX_TREES]) if ok[j] else -1


cdef inline uint8_t parse_ipv4(const uint8_t* p, int64_t n, Key* k) noexcept nogil:
    """Fill the key from one IPv4 packet (RFC 791 header); bounds-checked against n."""
    cdef int64_t ihl, total, l4
    cdef uint32_t fragword
    if n <= 0:
        return ST_TRUNCATED
    if (p[0] >> 4) != 4:
        return ST_BAD_IP_HEADER
    if n < 20:
        return ST_TRUNCATED
    ihl = (p[0] & 0x0F) * 4
    if ihl < 20:
        return ST_BAD_IP_HEADER
    if ihl > n:
        return ST_TRUNCATED
    total = (<int64_t>p[2] << 8) | p[3]
    if total < ihl:
        return ST_BAD_IP_HEADER
    if total > n:
        return ST_TRUNCATED
    k.tos = p[1]
    fragword = (<uint32_t>p[6] << 8) | p[7]
    if fragword & 0x1FFF:
        k.frag = 2          # non-initial fragment: no transport header here
    elif fragword & 0x2000:
        k.frag = 1          # MF set, offset 0: the initial fragment
    else:
        k.frag = 0
    k.f[4] = p[9]
    k.f[0] = (<uint32_t>p[12] << 24) | (<uint32_t>p[13] << 16) | (<uint32_t>p[14] << 8) | p[15]
    k.f[1] = (<uint32_t>p[16] << 24) | (<uint32_t>p[17] << 16) | (<uint32_t>p[18] << 8) | p[19]
    k.f[2] = 0
    k.f[3] = 0
    k.icmp_type = -1
    k.icmp_code = -1
    k.tcp_flags = 0
    if k.frag == 2:
        return ST_OK
    l4 = ihl
    if k.f[4] == 6:
        if total - l4 < 14:          # through the TCP flags byte (RFC 793 3.1)
            return ST_TRUNCATED
        k.f[2] = (<uint32_t>p[l4] << 8) | p[l4 + 1]
        k.f[3] = (<uint32_t>p[l4 + 2] << 8) | p[l4 + 3]
        k.tcp_flags = p[l4 + 13]
    elif k.f[4] == 17:
        if total - l4 < 4:
            return ST_TRUNCATED
        k.f[2] = (<uint32_t>p[l4] << 8) | p[l4 + 1]
        k.f[3] = (<uint32_t>p[l4 + 2] << 8) | p[l4 + 3]
    elif k.f[4] == 1:
        if total - l4 < 2:
            return ST_TRUNCATED
        k.icmp_type = p[l4]
        k.icmp_code = p[l4 + 1]
    return ST_OK


# ``classify_packets(fields=...)``: one row of header fields per packet
cdef enum:
    F_SRC = 0
    F_DST = 1
    F_SPORT = 2       # TCP / UDP ports of whole packets and first fragments, else 0
    F_DPORT = 3
    F_PROTO = 4
    F_TOS = 5
    F_BYTE0 = 6       # version << 4 | IHL in 32-bit words (0 for an empty packet)
    F_FRAG = 7        # 0 not a fragment, 1 first fragment, 2 a later one
    FIELD_COLUMNS = 8

FIELD_SRC = F_SRC
FIELD_DST = F_DST
FIELD_SPORT = F_SPORT
FIELD_DPORT = F_DPORT
FIELD_PROTO = F_PROTO
FIELD_TOS = F_TOS
FIELD_BYTE0 = F_BYTE0
FIELD_FRAG = F_FRAG
FIELDS = FIELD_COLUMNS


cdef inline void put_fields(uint32_t* row, const Key* k, bint ok, const uint8_t* p,
                            int64_t n) noexcept nogil:
    """A packet's row of ``fields`` from its key (before any mirror swap)."""
    row[F_BYTE0] = p[0] if n > 0 else 0
    if not ok:
        row[F_SRC] = 0
        row[F_DST] = 0
        row[F_SPORT] = 0
        row[F_DPORT] = 0
        row[F_PROTO] = 0
        row[F_TOS] = 0
        row[F_FRAG] = 0
        return
    row[F_SRC] = k.f[0]
    row[F_DST] = k.f[1]
    row[F_SPORT] = k.f[2]
    row[F_DPORT] = k.f[3]
    row[F_PROTO] = k.f[4]
    row[F_TOS] = k.tos
    row[F_FRAG] = <uint32_t>k.frag


cdef inline void mirror_key(Key* k) noexcept nogil:
    cdef uint32_t t = k.f[0]
    k.f[0] = k.f[1]
    k.f[1] = t
    t = k.f[2]
    k.f[2] = k.f[3]
    k.f[3] = t


cdef inline void finish_block(const ForestView* vw, const ForestView* vf, const Key* keys,
                              const uint8_t* ok, int m, int32_t* rids, int32_t* lists,
                              int32_t* entries, bint scalar) noexcept nogil:
    """Look a block of keys up and write list / entry indexes (-1 where no permit)."""
    cdef int j
    cdef const Row* r
    if scalar:
        for j in range(m):
            if not ok[j]:
                rids[j] = -1
            elif keys[j].frag == 2:
                rids[j] = forest_lookup(vf, &keys[j])
            else:
                rids[j] = forest_lookup(vw, &keys[j])
    else:
        lookup_block(vw, vf, keys, ok, m, rids)
    for j in range(m):
        if rids[j] < 0:
            lists[j] = -1
            entries[j] = -1
        else:
            r = (vf.rows if keys[j].frag == 2 else vw.rows) + rids[j]
            lists[j] = r.list_idx
            entries[j] = r.entry_idx


cdef inline bint row_matches(const Row* r, const Key* k) noexcept nogil:
    """Whether the key matches the row: its five ranges, then its extra checks."""
    cdef int d
    for d in range(NDIM):
        if k.f[d] < r.lo[d] or k.f[d] > r.hi[d]:
            return False
    if r.extra:
        return extra_matches(r, k)
    return True


cdef void _list_starts(vector[Row]& rows, int nlists, vector[int32_t]& out):
    """out[L] = the first row of list L (rows are sorted by list), out[nlists] = the end."""
    cdef size_t r = 0
    cdef int L
    out.resize(nlists + 1)
    for L in range(nlists + 1):
        while r < rows.size() and rows[r].list_idx < L:
            r += 1
        out[L] = <int32_t>r


cdef class Compiled:
    """Two forests (whole packets / non-initial fragments); lookups over batches."""

    cdef readonly Forest whole
    cdef readonly Forest frag
    cdef vector[int32_t] wstart         # rows of list L: whole.rows[wstart[L]:wstart[L + 1]]
    cdef vector[int32_t] fstart         # the same in frag.rows
    cdef readonly int nlists

    def __init__(self, Forest whole, Forest frag, int nlists=-1):
        """``nlists``: how many lists the rows come from (default: the highest list
        index of any row + 1); ``match_lists`` takes list indexes below it."""
        cdef int top = -1
        self.whole = whole
        self.frag = frag
        if whole.rows.size():
            top = whole.rows.back().list_idx
        if frag.rows.size() and frag.rows.back().list_idx > top:
            top = frag.rows.back().list_idx
        if nlists < top + 1:
            if nlists >= 0:
                raise ValueError("a row belongs to a list past nlists")
            nlists = top + 1
        self.nlists = nlists
        _list_starts(whole.rows, nlists, self.wstart)
        _list_starts(frag.rows, nlists, self.fstart)

    def classify_packets(self, const uint8_t[::1] buf, const int64_t[::1] offsets,
                         const int64_t[::1] lengths, bint mirror, int32_t[::1] lists,
                         int32_t[::1] entries, uint8_t[::1] status, bint scalar=False,
                         uint32_t[:, ::1] fields=None):
        """Classify every packet; results into the preallocated output arrays.

        ``scalar``: the plain one-packet loop instead of the interleaved blocks (same
        answers; kept as the reference variant for the tests). ``fields`` (n rows of
        ``FIELD_COLUMNS``): the header fields each packet was classified by, before the
        mirror swap (see ``FIELD_*``; the first byte is there for every non-empty packet,
        the rest where the status is 0).
        """
        cdef Py_ssize_t n = offsets.shape[0], i
        cdef uint32_t* fp = NULL
        if lengths.shape[0] != n or lists.shape[0] != n or entries.shape[0] != n \
                or status.shape[0] != n:
            raise ValueError("array lengths differ")
        if fields is not None:
            if fields.shape[0] != n or fields.shape[1] != FIELD_COLUMNS:
                raise ValueError(f"fields must be ({n}, {FIELD_COLUMNS})")
            if n:
                fp = &fields[0, 0]
        cdef ForestView vw = view_of(self.whole)
        cdef ForestView vf = view_of(self.frag)
        cdef const uint8_t* base = &buf[0] if buf.shape[0] > 0 else NULL
        cdef Py_ssize_t size = buf.shape[0]
        cdef Key keys[BLOCK]
        cdef uint8_t ok[BLOCK]
        cdef int32_t rids[BLOCK]
        cdef int j, m
        cdef uint8_t st
        # the PacketBatch constructor checked offsets/lengths; check again, cheaply
        for i in range(n):
            if offsets[i] < 0 or lengths[i] < 0 or offsets[i] > size - lengths[i]:  # no overflow
                raise ValueError("a packet lies outside the buffer")
        with nogil:
            i = 0
            while i < n:
                m = BLOCK if n - i > BLOCK else <int>(n - i)
                if i + m + BLOCK < n:  # the next block's headers, while this one is walked
                    for j in range(BLOCK):
                        if lengths[i + m + j]:
                            prefetch(base + offsets[i + m + j])
                for j in range(m):
                    st = parse_ipv4(base + offsets[i + j], lengths[i + j], &keys[j])
                    status[i + j] = st
                    ok[j] = st == ST_OK
                    if fp != NULL:
                        put_fields(fp + (i + j) * FIELD_COLUMNS, &keys[j], ok[j],
                                   base + offsets[i + j], lengths[i + j])
                    if ok[j] and mirror:
                        mirror_key(&keys[j])
                finish_block(&vw, &vf, keys, ok, m, rids, &lists[i], &entries[i], scalar)
                i += m

    def classify_fields(self, const int64_t[::1] proto, const int64_t[::1] src,
                        const int64_t[::1] dst, const int64_t[::1] sport,
                        const int64_t[::1] dport, const int64_t[::1] frag,
                        const int64_t[::1] icmp_type, const int64_t[::1] icmp_code,
                        const int64_t[::1] tcp_flags, const int64_t[::1] tos, bint mirror,
                        int32_t[::1] lists, int32_t[::1] entries, bint scalar=False):
        """Classify header fields given as arrays (already range-checked by the caller)."""
        cdef Py_ssize_t n = proto.shape[0], i
        if (src.shape[0] != n or dst.shape[0] != n or sport.shape[0] != n
                or dport.shape[0] != n or frag.shape[0] != n or icmp_type.shape[0] != n
                or icmp_code.shape[0] != n or tcp_flags.shape[0] != n or tos.shape[0] != n
                or lists.shape[0] != n or entries.shape[0] != n):
            raise ValueError("array lengths differ")
        cdef ForestView vw = view_of(self.whole)
        cdef ForestView vf = view_of(self.frag)
        cdef Key keys[BLOCK]
        cdef uint8_t ok[BLOCK]
        cdef int32_t rids[BLOCK]
        cdef int j, m
        cdef Key* k
        with nogil:
            i = 0
            while i < n:
                m = BLOCK if n - i > BLOCK else <int>(n - i)
                for j in range(m):
                    k = &keys[j]
                    k.f[0] = <uint32_t>src[i + j]
                    k.f[1] = <uint32_t>dst[i + j]
                    k.f[2] = <uint32_t>sport[i + j]
                    k.f[3] = <uint32_t>dport[i + j]
                    k.f[4] = <uint32_t>proto[i + j]
                    k.frag = <int32_t>frag[i + j]
                    k.icmp_type = <int32_t>icmp_type[i + j]
                    k.icmp_code = <int32_t>icmp_code[i + j]
                    k.tcp_flags = <uint32_t>tcp_flags[i + j]
                    k.tos = <uint32_t>tos[i + j]
                    ok[j] = 1
                    if mirror:
                        mirror_key(k)
                finish_block(&vw, &vf, keys, ok, m, rids, &lists[i], &entries[i], scalar)
                i += m

    def match_lists(self, const uint8_t[::1] buf, const int64_t[::1] offsets,
                    const int64_t[::1] lengths, const int32_t[::1] want, bint mirror,
                    int max_rows, int32_t[::1] entries, uint8_t[::1] status,
                    uint32_t[:, ::1] fields=None):
        """Per packet i, list ``want[i]`` alone (no deny-skip to other lists): the entry
        index of its first row that matches if that row is a permit, else -1 (a deny, no
        match, or an unreadable packet: ``status``); -2 where the list has more than
        ``max_rows`` rows (whole packets or fragments; not scanned: the caller decides). A
        linear scan of the list's rows, for short lists such as crypto ACLs. ``fields``:
        as for ``classify_packets``."""
        cdef Py_ssize_t n = offsets.shape[0], i, ahead
        cdef uint32_t* fp = NULL
        cdef Py_ssize_t size = buf.shape[0]
        cdef const uint8_t* base = &buf[0] if size > 0 else NULL
        cdef Key k
        cdef int32_t L, a, b, e
        cdef const Row* rows
        cdef const int32_t* start
        cdef uint8_t st
        if (lengths.shape[0] != n or want.shape[0] != n or entries.shape[0] != n
                or status.shape[0] != n):
            raise ValueError("array lengths differ")
        for i in range(n):
            if offsets[i] < 0 or lengths[i] < 0 or offsets[i] > size - lengths[i]:
                raise ValueError("a packet lies outside the buffer")
            if want[i] < 0 or want[i] >= self.nlists:
                raise ValueError(f"list {want[i]} is not one of the {self.nlists} lists")
        if fields is not None:
            if fields.shape[0] != n or fields.shape[1] != FIELD_COLUMNS:
                raise ValueError(f"fields must be ({n}, {FIELD_COLUMNS})")
            if n:
                fp = &fields[0, 0]
        with nogil:
            for i in range(n):
                if i + 4 < n:  # each packet's header is a new cache line
                    ahead = i + 4
                    if lengths[ahead]:
                        prefetch(base + offsets[ahead])
                st = parse_ipv4(base + offsets[i], lengths[i], &k)
                status[i] = st
                entries[i] = -1
                if fp != NULL:
                    put_fields(fp + i * FIELD_COLUMNS, &k, st == ST_OK, base + offsets[i],
                               lengths[i])
                if st != ST_OK:
                    continue
                if mirror:
                    mirror_key(&k)
                L = want[i]
                if k.frag == 2:
                    rows = self.frag.rows.data()
                    start = self.fstart.data()
                else:
                    rows = self.whole.rows.data()
                    start = self.wstart.data()
                if (self.wstart[L + 1] - self.wstart[L] > max_rows
                        or self.fstart[L + 1] - self.fstart[L] > max_rows):
                    entries[i] = -2
                    continue
                a = start[L]
                b = start[L + 1]
                while a < b:
                    if row_matches(&rows[a], &k):
                        if rows[a].permit:
                            entries[i] = rows[a].entry_idx
                        break
                    a += 1

    @property
    def nbytes(self):
        return self.whole.nbytes + self.frag.nbytes
