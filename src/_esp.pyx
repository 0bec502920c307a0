# cython: language_level=3
"""Compiled ESP / AH core: one SA's keys, counters and replay window, and batch
encapsulate / decapsulate over OpenSSL EVP without the GIL.

Knows bytes, keys and counters only (no IOS semantics). Algorithm ids equal
``ipsecfast.transform.CipherAlg`` / ``AuthAlg``; status codes equal
``ipsecfast.status.Status`` (tests/test_sa.py checks both).

Layout of the batch calls: inputs are ``const`` memoryviews of a PacketBatch
(buffer, offsets, lengths); outputs are preallocated by the caller. The loop runs in
``with nogil`` and calls ``noexcept nogil`` helpers that return a status per packet;
output packets are written back to back (a failed one gets length 0 and its slot is
zeroed, so no partial plaintext is left behind).
"""

from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t, UINT32_MAX, UINT64_MAX
from libc.string cimport memcpy, memset

cimport openssl as ssl

cdef extern from *:
    void prefetch "__builtin_prefetch"(const void* p) noexcept nogil
    void prefetch_w "__builtin_prefetch"(const void* p, int rw) noexcept nogil

# Packets ahead of the one being processed whose first bytes (and, encapsulating, output
# slot) the loops ask the CPU to fetch: each packet starts a new stream the hardware
# prefetcher has not seen, and the packets of a batch are far apart when it is a view of
# a capture. (Decapsulating, the write prefetch of the slot measured 3-5 % slower.)
DEF AHEAD = 2

from ipsecfast.exceptions import InternalError, UnsupportedTransform

# --- ids, equal to transform.CipherAlg / AuthAlg ------------------------------------
cdef enum:
    C_NULL = 0
    C_DES_CBC = 1
    C_TDES_CBC = 2
    C_AES_CBC = 3
    C_AES_CTR = 4
    C_AES_GCM = 5
    C_AES_GMAC = 6
    C_CHACHA20_POLY1305 = 7
    C_AES_CCM = 8

cdef enum:
    A_NONE = 0
    A_HMAC_MD5_96 = 1
    A_HMAC_SHA1_96 = 2
    A_HMAC_SHA256_128 = 3
    A_HMAC_SHA384_192 = 4
    A_HMAC_SHA512_256 = 5

# --- status codes, equal to status.Status ---------------------------------------------
cdef enum:
    ST_OK = 0
    ST_TRUNCATED = 1
    ST_BAD_IP_HEADER = 2
    ST_BAD_PROTOCOL = 3
    ST_BAD_SPI = 4
    ST_REPLAY = 5
    ST_OUTSIDE_WINDOW = 6
    ST_ICV_MISMATCH = 7
    ST_BAD_PADDING = 8
    ST_BAD_NEXT_HEADER = 9
    ST_SEQ_EXHAUSTED = 10
    ST_TOO_BIG = 11
    ST_BAD_LENGTH = 12
    ST_FRAGMENT = 13
    ST_INTERNAL = 14
    ST_ECN_DROP = 15
    ST_IV_EXHAUSTED = 16
    ST_BAD_INNER_PACKET = 17
    ST_NCODES = 32

cdef enum:
    PROTO_IPIP = 4
    PROTO_ESP = 50
    PROTO_AH = 51
    PROTO_NONE = 59       # RFC 4303 §2.6: dummy packet, discarded
    MODE_TUNNEL = 0
    MODE_TRANSPORT = 1
    MODE_RAW = 2          # ESP bytes only (SPI .. ICV) <-> payload; for known-answer tests
    MAX_WINDOW = 1024
    MAX_ICV = 32

STATUS_CODES = {
    "OK": ST_OK, "TRUNCATED": ST_TRUNCATED, "BAD_IP_HEADER": ST_BAD_IP_HEADER,
    "BAD_PROTOCOL": ST_BAD_PROTOCOL, "BAD_SPI": ST_BAD_SPI, "REPLAY": ST_REPLAY,
    "OUTSIDE_WINDOW": ST_OUTSIDE_WINDOW, "ICV_MISMATCH": ST_ICV_MISMATCH,
    "BAD_PADDING": ST_BAD_PADDING, "BAD_NEXT_HEADER": ST_BAD_NEXT_HEADER,
    "SEQ_EXHAUSTED": ST_SEQ_EXHAUSTED, "TOO_BIG": ST_TOO_BIG, "BAD_LENGTH": ST_BAD_LENGTH,
    "FRAGMENT": ST_FRAGMENT, "INTERNAL": ST_INTERNAL, "ECN_DROP": ST_ECN_DROP,
    "IV_EXHAUSTED": ST_IV_EXHAUSTED, "BAD_INNER_PACKET": ST_BAD_INNER_PACKET,
}
MODE_IDS = {"tunnel": MODE_TUNNEL, "transport": MODE_TRANSPORT, "raw": MODE_RAW}
# Worst-case growth of one packet by encapsulation: outer IPv4 20 + ESP 8 + IV 16 +
# padding 15 + trailer 2 + ICV 32 (AH: 20 + 12 + 32). The caller sizes its buffer with it.
cdef enum:
    MAX_OVERHEAD = 96
OVERHEAD = MAX_OVERHEAD


# An HMAC key state (RFC 2104 §2): a plain struct, so a per-packet copy allocates nothing.
ctypedef union HashState:
    ssl.MD5_CTX md5
    ssl.SHA_CTX sha1
    ssl.SHA256_CTX sha256
    ssl.SHA512_CTX sha512        # SHA-384 too


# One SA's state: plain C so that nogil helpers take a pointer to it.
ctypedef struct Sa:
    int proto                    # 50 ESP / 51 AH
    int cipher                   # C_* id
    int auth                     # A_* id (ESP integrity or AH)
    int iv_len                   # bytes of IV on the wire (0, 8, 16)
    int align                    # ESP payload+trailer is a multiple of this (>= 4)
    int icv_len                  # bytes of ICV on the wire (AH: before 32-bit padding)
    int salt_len                 # 0, 3 (CCM) or 4
    int counter_iv               # IV from iv_next (CTR / GCM / GMAC / ChaCha / CCM)
    int esn                      # RFC 4304 extended sequence numbers
    uint32_t spi
    uint32_t local               # tunnel source (host order)
    uint32_t peer                # tunnel destination (host order)
    uint64_t seq                 # last outbound sequence number used
    uint64_t iv_next             # next counter IV; UINT64_MAX = exhausted
    uint16_t ip_id               # next outer IP ID (tunnel mode)
    uint64_t rx_top              # highest authenticated inbound sequence number (T)
    int window                   # anti-replay window in packets, 0 = off
    uint64_t bitmap[16]          # bit k = sequence number rx_top - k seen
    uint8_t salt[4]
    ssl.EVP_CIPHER_CTX *enc      # keyed once, encrypt direction
    ssl.EVP_CIPHER_CTX *dec      # keyed once, decrypt direction
    HashState hmac_in            # HMAC: hash state after key ^ ipad
    HashState hmac_out           # HMAC: hash state after key ^ opad
    HashState hmac_work          # scratch copy for one packet
    int hmac_keyed               # the three states hold key material (counted, wiped)
    int enc_chained              # CBC: enc_chain is s.enc's running chaining value
    int dec_chained              # CBC: dec_chain is s.dec's running chaining value
    uint8_t enc_chain[16]        # CBC: last ciphertext block s.enc produced
    uint8_t dec_chain[16]        # CBC: last ciphertext block s.dec consumed
    uint64_t counts[32]          # packets per status code (index 0 unused)
    uint64_t enc_packets
    uint64_t enc_bytes
    uint64_t dec_packets
    uint64_t dec_bytes


# --- byte helpers ------------------------------------------------------------------------
cdef inline uint32_t be16(const uint8_t *p) noexcept nogil:
    return (<uint32_t>p[0] << 8) | p[1]

cdef inline uint32_t be32(const uint8_t *p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]

cdef inline void put16(uint8_t *p, uint32_t v) noexcept nogil:
    p[0] = (v >> 8) & 0xFF
    p[1] = v & 0xFF

cdef inline void put32(uint8_t *p, uint32_t v) noexcept nogil:
    p[0] = v >> 24
    p[1] = (v >> 16) & 0xFF
    p[2] = (v >> 8) & 0xFF
    p[3] = v & 0xFF

cdef inline void put64(uint8_t *p, uint64_t v) noexcept nogil:
    put32(p, <uint32_t>(v >> 32))
    put32(p + 4, <uint32_t>v)

cdef inline uint32_t ip_checksum(const uint8_t *h, int n) noexcept nogil:
    # RFC 1071 over the header, checksum field included (set it to 0 first).
    cdef uint32_t acc = 0
    cdef int i
    for i in range(0, n - 1, 2):
        acc += (<uint32_t>h[i] << 8) | h[i + 1]
    while acc >> 16:
        acc = (acc & 0xFFFF) + (acc >> 16)
    return (~acc) & 0xFFFF

cdef inline void set_checksum(uint8_t *h, int ihl) noexcept nogil:
    h[10] = 0
    h[11] = 0
    put16(h + 10, ip_checksum(h, ihl))


cdef int parse_ipv4(const uint8_t *p, int64_t plen, int *ihl, int *tot) noexcept nogil:
    """Version, IHL and total length of an IPv4 header against the packet's length."""
    if plen < 20:
        return ST_TRUNCATED
    if (p[0] >> 4) != 4:
        return ST_BAD_IP_HEADER
    ihl[0] = (p[0] & 0x0F) * 4
    tot[0] = be16(p + 2)
    if ihl[0] < 20:
        return ST_BAD_IP_HEADER
    if ihl[0] > plen:
        return ST_TRUNCATED
    if tot[0] < ihl[0] or tot[0] > plen:
        return ST_BAD_IP_HEADER
    return ST_OK


cdef inline int is_fragment(const uint8_t *p) noexcept nogil:
    return (be16(p + 6) & 0x3FFF) != 0      # MF or a fragment offset


cdef void build_outer(Sa *s, uint8_t *o, const uint8_t *inner, int total, int proto) noexcept nogil:
    """Fresh outer IPv4 header local -> peer (RFC 4303 §3.1.2 / RFC 4301 §5.1.2.1)."""
    o[0] = 0x45
    o[1] = inner[1]                 # DSCP copied; ECN copied (RFC 6040 §4.1 normal mode)
    put16(o + 2, total)
    put16(o + 4, s.ip_id)
    o[6] = inner[6] & 0x40          # DF copied, MF / offset not
    o[7] = 0
    o[8] = 64                       # TTL
    o[9] = proto
    put32(o + 12, s.local)
    put32(o + 16, s.peer)
    set_checksum(o, 20)


cdef int ecn_decap(uint8_t outer_tos, uint8_t *inner, int inner_ihl) noexcept nogil:
    """RFC 6040 §4.2 decapsulation (normal mode), inner header fixed up in place."""
    cdef int o = outer_tos & 3
    cdef int i = inner[1] & 3
    cdef int new = i
    if o == 3:                       # outer CE
        if i == 0:
            return ST_ECN_DROP       # Not-ECT inner: drop
        new = 3
    elif o == 1 and i == 2:          # outer ECT(1), inner ECT(0) -> ECT(1)
        new = 1
    if new != i:
        inner[1] = (inner[1] & 0xFC) | new
        set_checksum(inner, inner_ihl)
    return ST_OK


# --- anti-replay (RFC 4303 §3.4.3, Appendix A) ---------------------------------------------
cdef int seq_infer(Sa *s, uint32_t seql, uint64_t *full) noexcept nogil:
    """The 64-bit sequence number of an inbound packet (RFC 4303 Appendix A2.2)."""
    cdef uint64_t w
    cdef uint32_t th, tl, seqh
    if not s.esn:
        full[0] = seql
        return ST_OK
    w = <uint64_t>s.window if s.window > 0 else 64
    th = <uint32_t>(s.rx_top >> 32)
    tl = <uint32_t>s.rx_top
    if tl >= w - 1:                                  # case A
        if seql >= tl - <uint32_t>(w - 1):
            seqh = th
        else:
            if th == UINT32_MAX:
                return ST_OUTSIDE_WINDOW
            seqh = th + 1
    else:                                            # case B: window spans a wrap
        if seql >= <uint32_t>(tl - <uint32_t>(w - 1)):
            if th == 0:
                return ST_OUTSIDE_WINDOW
            seqh = th - 1
        else:
            seqh = th
    full[0] = (<uint64_t>seqh << 32) | seql
    return ST_OK


cdef int replay_check(Sa *s, uint64_t seq) noexcept nogil:
    cdef uint64_t diff
    if s.window <= 0:
        return ST_OK
    if seq == 0:
        return ST_OUTSIDE_WINDOW                     # never sent (RFC 4303 §3.3.3)
    if seq > s.rx_top:
        return ST_OK
    diff = s.rx_top - seq
    if diff >= <uint64_t>s.window:
        return ST_OUTSIDE_WINDOW
    if (s.bitmap[diff >> 6] >> (diff & 63)) & 1:
        return ST_REPLAY
    return ST_OK


cdef void replay_update(Sa *s, uint64_t seq) noexcept nogil:
    """Advance the window; only called once the packet is fully verified."""
    cdef uint64_t shift, diff
    cdef int nwords, i, j, ws, bs
    cdef uint64_t v
    if seq > s.rx_top:
        shift = seq - s.rx_top
        s.rx_top = seq
        if s.window <= 0:
            return
        nwords = (s.window + 63) >> 6
        if shift >= <uint64_t>s.window:
            for i in range(nwords):
                s.bitmap[i] = 0
        else:
            ws = <int>(shift >> 6)
            bs = <int>(shift & 63)
            for i in range(nwords - 1, -1, -1):
                v = 0
                j = i - ws
                if j >= 0:
                    v = s.bitmap[j] << bs
                    if bs and j >= 1:
                        v |= s.bitmap[j - 1] >> (64 - bs)
                s.bitmap[i] = v
        s.bitmap[0] |= 1
    elif s.window > 0:
        diff = s.rx_top - seq
        s.bitmap[diff >> 6] |= (<uint64_t>1) << (diff & 63)


# --- HMAC from precomputed inner / outer states (RFC 2104) -------------------------------
cdef inline int hash_block_size(int auth) noexcept nogil:
    return 128 if auth == A_HMAC_SHA384_192 or auth == A_HMAC_SHA512_256 else 64

cdef inline int hash_init(int auth, HashState *h) noexcept nogil:
    if auth == A_HMAC_SHA1_96:
        return ssl.SHA1_Init(&h.sha1)
    if auth == A_HMAC_SHA256_128:
        return ssl.SHA256_Init(&h.sha256)
    if auth == A_HMAC_SHA384_192:
        return ssl.SHA384_Init(&h.sha512)
    if auth == A_HMAC_SHA512_256:
        return ssl.SHA512_Init(&h.sha512)
    if auth == A_HMAC_MD5_96:
        return ssl.MD5_Init(&h.md5)
    return 0

cdef inline int hash_update(int auth, HashState *h, const void *p, size_t n) noexcept nogil:
    if auth == A_HMAC_SHA1_96:
        return ssl.SHA1_Update(&h.sha1, p, n)
    if auth == A_HMAC_SHA256_128:
        return ssl.SHA256_Update(&h.sha256, p, n)
    if auth == A_HMAC_SHA384_192:
        return ssl.SHA384_Update(&h.sha512, p, n)
    if auth == A_HMAC_SHA512_256:
        return ssl.SHA512_Update(&h.sha512, p, n)
    if auth == A_HMAC_MD5_96:
        return ssl.MD5_Update(&h.md5, p, n)
    return 0

cdef inline int hash_final(int auth, HashState *h, uint8_t *md) noexcept nogil:
    """Digest into md (64 bytes of room); returns its length, 0 on failure."""
    if auth == A_HMAC_SHA1_96:
        return 20 if ssl.SHA1_Final(md, &h.sha1) == 1 else 0
    if auth == A_HMAC_SHA256_128:
        return 32 if ssl.SHA256_Final(md, &h.sha256) == 1 else 0
    if auth == A_HMAC_SHA384_192:
        return 48 if ssl.SHA384_Final(md, &h.sha512) == 1 else 0
    if auth == A_HMAC_SHA512_256:
        return 64 if ssl.SHA512_Final(md, &h.sha512) == 1 else 0
    if auth == A_HMAC_MD5_96:
        return 16 if ssl.MD5_Final(md, &h.md5) == 1 else 0
    return 0

cdef inline void hash_copy(int auth, HashState *dst, const HashState *src) noexcept nogil:
    # a fixed-size struct copy per algorithm (SHA-512's state is twice SHA-1's)
    if auth == A_HMAC_SHA1_96:
        dst.sha1 = src.sha1
    elif auth == A_HMAC_SHA256_128:
        dst.sha256 = src.sha256
    elif auth == A_HMAC_MD5_96:
        dst.md5 = src.md5
    else:
        dst.sha512 = src.sha512

cdef inline int hmac_begin(Sa *s) noexcept nogil:
    hash_copy(s.auth, &s.hmac_work, &s.hmac_in)
    return 1

cdef inline int hmac_update(Sa *s, const void *p, size_t n) noexcept nogil:
    if n == 0:
        return 1
    return hash_update(s.auth, &s.hmac_work, p, n)

cdef int hmac_finish(Sa *s, uint8_t *mac) noexcept nogil:
    """mac = H(K ^ opad || H(K ^ ipad || message)) (RFC 2104 §2); 1 on success."""
    cdef uint8_t inner[64]
    cdef int n = hash_final(s.auth, &s.hmac_work, inner)
    if n == 0:
        return 0
    hash_copy(s.auth, &s.hmac_work, &s.hmac_out)
    if hash_update(s.auth, &s.hmac_work, inner, n) != 1:
        return 0
    return 1 if hash_final(s.auth, &s.hmac_work, mac) != 0 else 0


# --- ESP cipher operations ---------------------------------------------------------------
cdef inline int esp_aad(Sa *s, const uint8_t *esp, uint32_t seq_hi, uint8_t *aad) noexcept nogil:
    """AAD of the AEAD transforms: SPI || seq, or SPI || seq_hi || seq_lo with ESN
    (RFC 4106 §5, RFC 4309 §5, RFC 7634 §2.1, RFC 4543 §3.3)."""
    memcpy(aad, esp, 4)
    if s.esn:
        put32(aad + 4, seq_hi)
        memcpy(aad + 8, esp + 4, 4)
        return 12
    memcpy(aad + 4, esp + 4, 4)
    return 8

cdef inline void esp_nonce(Sa *s, const uint8_t *iv, uint8_t *nonce) noexcept nogil:
    # GCM / GMAC / ChaCha: salt(4) || IV(8) (RFC 4106 §4); CCM: salt(3) || IV(8) (RFC 4309 §4);
    # CTR: nonce(4) || IV(8) || block counter 1 (RFC 3686 §4).
    memcpy(nonce, s.salt, s.salt_len)
    memcpy(nonce + s.salt_len, iv, 8)
    if s.cipher == C_AES_CTR:
        put32(nonce + 12, 1)


# CBC (RFC 3602 §2) through running contexts: OpenSSL 3.0's EVP_CipherInit_ex looks the
# IV length up through the provider's parameters on every call, more than the cipher work
# of a small packet. A CBC context that is never re-initialised keeps chaining from the
# last ciphertext block it handled, which the SA keeps a copy of (enc_chain / dec_chain).
# Proof that the result is CBC under the packet's own IV (block cipher E, D = E^-1):
#   encrypt: the context computes C1 = E(X1 ^ chain). With X1 = P1 ^ iv ^ chain that is
#            E(P1 ^ iv), the first block of CBC under iv; every later block chains from
#            the previous ciphertext block inside the context, as CBC does.
#   decrypt: the context returns D(C1) ^ chain for the first block; CBC under iv wants
#            D(C1) ^ iv, so XOR the first plaintext block with iv ^ chain; later blocks
#            are D(Ci) ^ C(i-1), as CBC wants.
# The wire IV is still the per-packet random one (RAND_bytes per batch, RFC 3602 §2.1).
# When the chaining value is unknown (new SA, a failed call) the context is initialised
# with the IV the slow way and the chain taken from there.
cdef int cbc_encrypt(Sa *s, const uint8_t *iv, uint8_t *body, int clen) noexcept nogil:
    """CBC-encrypt body[0:clen] in place under iv; 1 on success."""
    cdef int bs = s.iv_len, n = 0, k
    if bs <= 0 or bs > 16 or clen < bs or clen % bs:
        return 0
    if s.enc_chained:
        for k in range(bs):
            body[k] ^= iv[k] ^ s.enc_chain[k]
    elif ssl.EVP_CipherInit_ex(s.enc, NULL, NULL, NULL, iv, 1) != 1:
        return 0
    s.enc_chained = 0
    if ssl.EVP_CipherUpdate(s.enc, body, &n, body, clen) != 1 or n != clen:
        return 0
    memcpy(s.enc_chain, body + clen - bs, bs)
    s.enc_chained = 1
    return 1


cdef int cbc_decrypt(Sa *s, const uint8_t *iv, const uint8_t *body, int clen,
                     uint8_t *dst) noexcept nogil:
    """CBC-decrypt body[0:clen] under iv into dst[0:clen]; 1 on success."""
    cdef uint8_t fix[16]
    cdef int bs = s.iv_len, n = 0, k, chained = s.dec_chained
    if bs <= 0 or bs > 16 or clen < bs or clen % bs:
        return 0
    if chained:
        for k in range(bs):
            fix[k] = iv[k] ^ s.dec_chain[k]
    elif ssl.EVP_CipherInit_ex(s.dec, NULL, NULL, NULL, iv, 0) != 1:
        return 0
    s.dec_chained = 0
    # the new chaining value, read before dst is written (in case they overlap)
    memcpy(s.dec_chain, body + clen - bs, bs)
    if ssl.EVP_CipherUpdate(s.dec, dst, &n, body, clen) != 1 or n != clen:
        return 0
    if chained:
        for k in range(bs):
            dst[k] ^= fix[k]
    s.dec_chained = 1
    return 1


cdef inline int stream_encrypt(ssl.EVP_CIPHER_CTX *c, uint8_t *body, int clen,
                               const uint8_t *src, int srclen,
                               const uint8_t *tail) noexcept nogil:
    """Encrypt into body[0:clen] with a stream mode (CTR, GCM, ChaCha20): in place when
    tail is NULL, else from src[0:srclen] then tail[0:clen - srclen]; 1 on success.
    (src may be NULL when srclen is 0: an empty batch buffer.)"""
    cdef int n = 0
    if tail == NULL:
        return ssl.EVP_CipherUpdate(c, body, &n, body, clen)
    if srclen > 0 and ssl.EVP_CipherUpdate(c, body, &n, src, srclen) != 1:
        return 0
    return ssl.EVP_CipherUpdate(c, body + srclen, &n, tail, clen - srclen)


cdef inline int stream_sealed(Sa *s) noexcept nogil:
    """Whether encapsulation encrypts straight from the input (no copy into the output
    first): modes that take their data in pieces. Not CBC (its first block is changed in
    place), CCM (one update only) or GMAC / NULL (the body is plaintext on the wire)."""
    return s.cipher == C_AES_GCM or s.cipher == C_CHACHA20_POLY1305 or s.cipher == C_AES_CTR


# OSSL_PARAM_construct_octet_string / _end, filled in place: the by-value return of the
# 40-byte struct became three `rep movs` copies per packet, about 10% of GCM at 64 B.
cdef inline void octets_param(ssl.OSSL_PARAM *p, const char *key, void *data,
                              size_t size) noexcept nogil:
    p.key = key
    p.data_type = ssl.OSSL_PARAM_OCTET_STRING
    p.data = data
    p.data_size = size
    p.return_size = ssl.OSSL_PARAM_UNMODIFIED

cdef inline void end_param(ssl.OSSL_PARAM *p) noexcept nogil:
    memset(p, 0, sizeof(ssl.OSSL_PARAM))


cdef int gcm_seal_nonce(ssl.EVP_CIPHER_CTX *c, uint8_t *nonce) noexcept nogil:
    """Start an AES-GCM encryption under the 12-byte nonce salt || IV by one parameter
    call: the fixed field with length -1 is the whole nonce (what EVP_CTRL_GCM_SET_IV_FIXED
    with -1 sends), without EVP_CipherInit_ex's IV-length lookup; 1 on success."""
    cdef ssl.OSSL_PARAM params[2]
    octets_param(&params[0], ssl.OSSL_CIPHER_PARAM_AEAD_TLS1_IV_FIXED, nonce, <size_t>-1)
    end_param(&params[1])
    return ssl.EVP_CIPHER_CTX_set_params(c, params)


cdef int gcm_seal_tag(ssl.EVP_CIPHER_CTX *c, uint8_t *icv, int icv_len) noexcept nogil:
    """The tag after EVP_CipherFinal_ex, as the GET_TAG ctrl would ask for it; 1 on success."""
    cdef ssl.OSSL_PARAM params[2]
    octets_param(&params[0], ssl.OSSL_CIPHER_PARAM_AEAD_TAG, icv, icv_len)
    end_param(&params[1])
    return ssl.EVP_CIPHER_CTX_get_params(c, params)


cdef int esp_seal(Sa *s, uint8_t *esp, int clen, uint32_t seq_hi, const uint8_t *src,
                  int srclen, const uint8_t *tail) noexcept nogil:
    """Encrypt esp[8+iv : 8+iv+clen] and write the ICV after it: in place (tail NULL), or,
    when stream_sealed, from src[0:srclen] || tail (payload, then padding and trailer)."""
    cdef uint8_t *iv = esp + 8
    cdef uint8_t *body = iv + s.iv_len
    cdef uint8_t *icv = body + clen
    cdef uint8_t nonce[16]
    cdef uint8_t aad[12]
    cdef uint8_t mac[64]
    cdef uint8_t hi[4]
    cdef int n = 0, alen
    cdef ssl.EVP_CIPHER_CTX *c = s.enc
    if s.cipher == C_AES_CBC or s.cipher == C_TDES_CBC or s.cipher == C_DES_CBC:
        if cbc_encrypt(s, iv, body, clen) != 1:
            return ST_INTERNAL
    elif s.cipher == C_AES_CTR:
        esp_nonce(s, iv, nonce)
        if ssl.EVP_CipherInit_ex(c, NULL, NULL, NULL, nonce, 1) != 1:
            return ST_INTERNAL
        if stream_encrypt(c, body, clen, src, srclen, tail) != 1:
            return ST_INTERNAL
    elif s.cipher != C_NULL:
        esp_nonce(s, iv, nonce)
        alen = esp_aad(s, esp, seq_hi, aad)
        if s.cipher == C_AES_GCM or s.cipher == C_AES_GMAC:
            if gcm_seal_nonce(c, nonce) != 1:
                return ST_INTERNAL
        elif ssl.EVP_CipherInit_ex(c, NULL, NULL, NULL, nonce, 1) != 1:
            return ST_INTERNAL
        if s.cipher == C_AES_CCM:
            if ssl.EVP_CipherUpdate(c, NULL, &n, NULL, clen) != 1:
                return ST_INTERNAL
        if ssl.EVP_CipherUpdate(c, NULL, &n, aad, alen) != 1:
            return ST_INTERNAL
        if s.cipher == C_AES_GMAC:
            # RFC 4543 §3.3: IV, payload and trailer are authenticated, not encrypted
            if ssl.EVP_CipherUpdate(c, NULL, &n, iv, s.iv_len + clen) != 1:
                return ST_INTERNAL
        else:
            if stream_encrypt(c, body, clen, src, srclen, tail) != 1:
                return ST_INTERNAL
        if ssl.EVP_CipherFinal_ex(c, nonce, &n) != 1:
            return ST_INTERNAL
        if s.cipher == C_AES_GCM or s.cipher == C_AES_GMAC:
            if gcm_seal_tag(c, icv, s.icv_len) != 1:
                return ST_INTERNAL
        elif ssl.EVP_CIPHER_CTX_ctrl(c, ssl.EVP_CTRL_AEAD_GET_TAG, s.icv_len, icv) != 1:
            return ST_INTERNAL
        return ST_OK
    if s.auth != A_NONE:
        # RFC 4303 §2.8: ICV over SPI .. trailer; ESN high bits appended (§2.2.1)
        if hmac_begin(s) != 1 or hmac_update(s, esp, 8 + s.iv_len + clen) != 1:
            return ST_INTERNAL
        if s.esn:
            put32(hi, seq_hi)
            if hmac_update(s, hi, 4) != 1:
                return ST_INTERNAL
        if hmac_finish(s, mac) != 1:
            return ST_INTERNAL
        memcpy(icv, mac, s.icv_len)
    return ST_OK


cdef inline int gcm_open_params(ssl.EVP_CIPHER_CTX *c, const uint8_t *iv, uint8_t *tag,
                                int tag_len) noexcept nogil:
    """Start an AES-GCM decryption: the ESP IV as the nonce's invocation field (the salt is
    the fixed field, set once) and the expected tag, in one parameter call; 1 on success."""
    cdef ssl.OSSL_PARAM params[3]
    octets_param(&params[0], ssl.OSSL_CIPHER_PARAM_AEAD_TLS1_SET_IV_INV, <void *>iv, 8)
    octets_param(&params[1], ssl.OSSL_CIPHER_PARAM_AEAD_TAG, tag, tag_len)
    end_param(&params[2])
    return ssl.EVP_CIPHER_CTX_set_params(c, params)


cdef int esp_open(Sa *s, const uint8_t *esp, int clen, uint8_t *dst, uint32_t seq_hi) noexcept nogil:
    """Verify the ICV (HMAC first, RFC 4303 §3.4.4) then decrypt into dst[0:clen]."""
    cdef const uint8_t *iv = esp + 8
    cdef const uint8_t *body = iv + s.iv_len
    cdef const uint8_t *icv = body + clen
    cdef uint8_t nonce[16]
    cdef uint8_t aad[12]
    cdef uint8_t mac[64]
    cdef uint8_t hi[4]
    cdef uint8_t tag[16]
    cdef int n = 0, alen
    cdef ssl.EVP_CIPHER_CTX *c = s.dec
    if s.auth != A_NONE:
        if hmac_begin(s) != 1 or hmac_update(s, esp, 8 + s.iv_len + clen) != 1:
            return ST_INTERNAL
        if s.esn:
            put32(hi, seq_hi)
            if hmac_update(s, hi, 4) != 1:
                return ST_INTERNAL
        if hmac_finish(s, mac) != 1:
            return ST_INTERNAL
        if ssl.CRYPTO_memcmp(mac, icv, s.icv_len) != 0:
            return ST_ICV_MISMATCH
    if s.cipher == C_NULL:
        memcpy(dst, body, clen)
    elif s.cipher == C_AES_CBC or s.cipher == C_TDES_CBC or s.cipher == C_DES_CBC:
        if cbc_decrypt(s, iv, body, clen, dst) != 1:
            return ST_INTERNAL
    elif s.cipher == C_AES_CTR:
        esp_nonce(s, iv, nonce)
        if ssl.EVP_CipherInit_ex(c, NULL, NULL, NULL, nonce, 0) != 1:
            return ST_INTERNAL
        if ssl.EVP_CipherUpdate(c, dst, &n, body, clen) != 1:
            return ST_INTERNAL
    else:
        alen = esp_aad(s, esp, seq_hi, aad)
        memcpy(tag, icv, s.icv_len)
        if s.cipher == C_AES_GCM or s.cipher == C_AES_GMAC:
            if gcm_open_params(c, iv, tag, s.icv_len) != 1:
                return ST_INTERNAL
        else:
            esp_nonce(s, iv, nonce)
            if ssl.EVP_CipherInit_ex(c, NULL, NULL, NULL, nonce, 0) != 1:
                return ST_INTERNAL
        if s.cipher == C_AES_CCM:
            # RFC 4309: the tag is needed before the data; a wrong tag fails the update
            if ssl.EVP_CIPHER_CTX_ctrl(c, ssl.EVP_CTRL_AEAD_SET_TAG, s.icv_len, tag) != 1:
                return ST_INTERNAL
            if ssl.EVP_CipherUpdate(c, NULL, &n, NULL, clen) != 1:
                return ST_INTERNAL
            if ssl.EVP_CipherUpdate(c, NULL, &n, aad, alen) != 1:
                return ST_INTERNAL
            if ssl.EVP_CipherUpdate(c, dst, &n, body, clen) != 1:
                ssl.ERR_clear_error()
                return ST_ICV_MISMATCH
            return ST_OK
        if ssl.EVP_CipherUpdate(c, NULL, &n, aad, alen) != 1:
            return ST_INTERNAL
        if s.cipher == C_AES_GMAC:
            if ssl.EVP_CipherUpdate(c, NULL, &n, iv, s.iv_len + clen) != 1:
                return ST_INTERNAL
        else:
            if ssl.EVP_CipherUpdate(c, dst, &n, body, clen) != 1:
                return ST_INTERNAL
        if s.cipher == C_CHACHA20_POLY1305:
            if ssl.EVP_CIPHER_CTX_ctrl(c, ssl.EVP_CTRL_AEAD_SET_TAG, s.icv_len, tag) != 1:
                return ST_INTERNAL
        if ssl.EVP_CipherFinal_ex(c, nonce, &n) != 1:
            ssl.ERR_clear_error()
            return ST_ICV_MISMATCH
        if s.cipher == C_AES_GMAC:
            memcpy(dst, body, clen)
    return ST_OK


cdef int next_seq(Sa *s, uint64_t *seq) noexcept nogil:
    # RFC 4303 §3.3.3: the counter never cycles; the SA stops sending instead.
    if s.esn:
        if s.seq == UINT64_MAX:
            return ST_SEQ_EXHAUSTED
    elif s.seq >= UINT32_MAX:
        return ST_SEQ_EXHAUSTED
    if s.counter_iv and s.iv_next == UINT64_MAX:
        return ST_IV_EXHAUSTED
    seq[0] = s.seq + 1
    return ST_OK


cdef int esp_encap_one(Sa *s, const uint8_t *pkt, int64_t plen, uint8_t *out, int64_t cap,
                       int64_t *olen, int mode, int raw_nh, const uint8_t *cbc_iv) noexcept nogil:
    cdef int ihl = 0, tot = 0, r, hdr, paylen, padded, padlen, k, nh
    cdef int64_t total
    cdef const uint8_t *payload
    cdef uint8_t *esp
    cdef uint8_t *body
    cdef uint8_t tail[32]
    cdef uint64_t seq = 0
    if mode == MODE_RAW:
        if plen >= 65536:
            return ST_TOO_BIG
        payload = pkt
        paylen = <int>plen
        nh = raw_nh
        hdr = 0
    else:
        r = parse_ipv4(pkt, plen, &ihl, &tot)
        if r != ST_OK:
            return r
        if mode == MODE_TUNNEL:
            payload = pkt
            paylen = tot
            nh = PROTO_IPIP
            hdr = 20
        else:
            if is_fragment(pkt):
                return ST_FRAGMENT              # transport mode protects whole datagrams
            payload = pkt + ihl
            paylen = tot - ihl
            nh = pkt[9]
            hdr = ihl
    r = next_seq(s, &seq)
    if r != ST_OK:
        return r
    # RFC 4303 §2.4: pad so that payload + 2 fills the cipher block and a 4-byte boundary
    padded = (paylen + 2 + s.align - 1) // s.align * s.align
    padlen = padded - paylen - 2
    total = hdr + 8 + s.iv_len + padded + s.icv_len
    if mode != MODE_RAW and total > 65535:
        return ST_TOO_BIG
    if total > cap:
        return ST_INTERNAL
    esp = out + hdr
    put32(esp, s.spi)
    put32(esp + 4, <uint32_t>seq)
    if s.counter_iv:
        put64(esp + 8, s.iv_next)
    elif s.iv_len:
        memcpy(esp + 8, cbc_iv, s.iv_len)
    body = esp + 8 + s.iv_len
    if stream_sealed(s) and padlen + 2 <= <int>sizeof(tail):
        # payload straight from the input, padding and trailer from the stack
        for k in range(padlen):
            tail[k] = k + 1
        tail[padlen] = padlen
        tail[padlen + 1] = nh
        r = esp_seal(s, esp, padded, <uint32_t>(seq >> 32), payload, paylen, tail)
    else:
        memcpy(body, payload, paylen)
        for k in range(padlen):
            body[paylen + k] = k + 1
        body[padded - 2] = padlen
        body[padded - 1] = nh
        r = esp_seal(s, esp, padded, <uint32_t>(seq >> 32), NULL, 0, NULL)
    if r != ST_OK:
        return r
    if mode == MODE_TUNNEL:
        build_outer(s, out, pkt, <int>total, PROTO_ESP)
        s.ip_id = (s.ip_id + 1) & 0xFFFF
    elif mode == MODE_TRANSPORT:
        # RFC 4303 §3.1.1: the original header, now carrying ESP
        memcpy(out, pkt, ihl)
        out[9] = PROTO_ESP
        put16(out + 2, <uint32_t>total)
        set_checksum(out, ihl)
    s.seq = seq
    if s.counter_iv:
        s.iv_next += 1
    olen[0] = total
    return ST_OK


cdef int inner_packet(uint8_t *p, int64_t avail, int *ihl, int *tot) noexcept nogil:
    """The decrypted inner packet of tunnel mode must be IPv4 that fits the payload
    (it may be shorter: RFC 4303 §2.7 TFC padding)."""
    if parse_ipv4(p, avail, ihl, tot) != ST_OK:
        return ST_BAD_INNER_PACKET
    return ST_OK


cdef int esp_decap_one(Sa *s, const uint8_t *pkt, int64_t plen, uint8_t *out, int64_t cap,
                       int64_t *olen, int mode, uint8_t *nh_out) noexcept nogil:
    cdef int ihl = 0, tot = 0, r, esp_len, clen, padlen, paylen, nh, k, iihl = 0, itot = 0
    cdef const uint8_t *esp
    cdef uint8_t *dst
    cdef uint64_t seq = 0
    if mode == MODE_RAW:
        esp = pkt
        if plen >= 65536:
            return ST_TOO_BIG
        esp_len = <int>plen
    else:
        r = parse_ipv4(pkt, plen, &ihl, &tot)
        if r != ST_OK:
            return r
        if pkt[9] != PROTO_ESP:
            return ST_BAD_PROTOCOL
        if is_fragment(pkt):
            return ST_FRAGMENT
        esp = pkt + ihl
        esp_len = tot - ihl
    # 1. length and SPI
    if esp_len < 8 + s.iv_len + s.icv_len + 2:
        return ST_TRUNCATED
    clen = esp_len - 8 - s.iv_len - s.icv_len
    if clen % s.align != 0 and s.align > 4:
        return ST_BAD_LENGTH                    # CBC: whole cipher blocks only
    if be32(esp) != s.spi:
        return ST_BAD_SPI
    # 2. anti-replay, before the (costly) integrity check
    r = seq_infer(s, be32(esp + 4), &seq)
    if r != ST_OK:
        return r
    r = replay_check(s, seq)
    if r != ST_OK:
        return r
    # 3. ICV, 4. decrypt
    dst = out + (ihl if mode == MODE_TRANSPORT else 0)
    if (dst - out) + clen > cap:
        return ST_INTERNAL
    r = esp_open(s, esp, clen, dst, <uint32_t>(seq >> 32))
    if r != ST_OK:
        return r
    # 5. padding (RFC 4303 §2.4: 1, 2, 3, ...)
    padlen = dst[clen - 2]
    nh = dst[clen - 1]
    if padlen + 2 > clen:
        return ST_BAD_PADDING
    paylen = clen - 2 - padlen
    for k in range(padlen):
        if dst[paylen + k] != k + 1:
            return ST_BAD_PADDING
    # 6. next header
    if nh == PROTO_NONE:
        return ST_BAD_NEXT_HEADER
    if mode == MODE_TUNNEL:
        if nh != PROTO_IPIP:
            return ST_BAD_NEXT_HEADER
        r = inner_packet(dst, paylen, &iihl, &itot)
        if r != ST_OK:
            return r
        r = ecn_decap(pkt[1], dst, iihl)
        if r != ST_OK:
            return r
        olen[0] = itot
    elif mode == MODE_TRANSPORT:
        memcpy(out, pkt, ihl)
        out[9] = nh
        put16(out + 2, <uint32_t>(ihl + paylen))
        set_checksum(out, ihl)
        olen[0] = ihl + paylen
    else:
        olen[0] = paylen
    if nh_out != NULL:
        nh_out[0] = nh
    replay_update(s, seq)
    return ST_OK


# --- AH (RFC 4302) ------------------------------------------------------------------------
cdef inline int ipv4_option_immutable(int t) noexcept nogil:
    # RFC 4302 Appendix A.1: EOL, NOP, Security, Extended Security, Commercial Security,
    # Router Alert, Sender Directed Multi-Destination Delivery; every other option is
    # mutable and counts as zeros.
    return t == 0 or t == 1 or t == 130 or t == 133 or t == 134 or t == 148 or t == 149


cdef int ah_zeroed_header(const uint8_t *ip, int ihl, uint8_t *z) noexcept nogil:
    """The IPv4 header as the ICV sees it (RFC 4302 §3.3.3.1.1): TOS, flags + fragment
    offset, TTL and checksum zeroed; mutable options zeroed whole; with loose / strict source
    routing the destination is the predictable final one."""
    cdef int i = 20, t, olen, ptr
    memcpy(z, ip, ihl)
    z[1] = 0
    z[6] = 0
    z[7] = 0
    z[8] = 0
    z[10] = 0
    z[11] = 0
    while i < ihl:
        t = z[i]
        if t == 0:
            break                               # End of List: the rest is padding
        if t == 1:
            i += 1
            continue
        if i + 1 >= ihl:
            return ST_BAD_IP_HEADER
        olen = z[i + 1]
        if olen < 2 or i + olen > ihl:
            return ST_BAD_IP_HEADER
        if not ipv4_option_immutable(t):
            if (t == 131 or t == 137) and olen >= 7:
                # LSRR / SSRR (RFC 791): while the route is not used up (pointer <= length)
                # the packet still travels to the last address listed, its final destination.
                ptr = z[i + 2]
                if ptr <= olen:
                    memcpy(z + 16, z + i + olen - 4, 4)
            memset(z + i, 0, olen)
        i += olen
    return ST_OK


cdef int ah_icv(Sa *s, const uint8_t *ip, int ihl, const uint8_t *ah, int ah_len,
                const uint8_t *payload, int paylen, uint32_t seq_hi, uint8_t *mac) noexcept nogil:
    """ICV over the zeroed IPv4 header, the AH header with a zero ICV, the payload and,
    with ESN, the high sequence bits (RFC 4302 §3.3.3). Returns a status."""
    cdef uint8_t z[60]
    cdef uint8_t zeros[MAX_ICV + 4]
    cdef uint8_t hi[4]
    cdef int r = ah_zeroed_header(ip, ihl, z)
    if r != ST_OK:
        return r
    memset(zeros, 0, ah_len - 12)
    if hmac_begin(s) != 1 or hmac_update(s, z, ihl) != 1 or hmac_update(s, ah, 12) != 1:
        return ST_INTERNAL
    if hmac_update(s, zeros, ah_len - 12) != 1 or hmac_update(s, payload, paylen) != 1:
        return ST_INTERNAL
    if s.esn:
        put32(hi, seq_hi)
        if hmac_update(s, hi, 4) != 1:
            return ST_INTERNAL
    if hmac_finish(s, mac) != 1:
        return ST_INTERNAL
    return ST_OK


cdef inline int ah_length(Sa *s) noexcept nogil:
    # RFC 4302 §3.3.3.2.1: the ICV is padded to a multiple of 32 bits for IPv4
    return 12 + (s.icv_len + 3) // 4 * 4


cdef int ah_encap_one(Sa *s, const uint8_t *pkt, int64_t plen, uint8_t *out, int64_t cap,
                      int64_t *olen, int mode) noexcept nogil:
    cdef int ihl = 0, tot = 0, r, ah_len, paylen, nh, hl
    cdef int64_t total
    cdef const uint8_t *payload
    cdef uint8_t *ah
    cdef uint64_t seq = 0
    cdef uint8_t mac[64]
    r = parse_ipv4(pkt, plen, &ihl, &tot)
    if r != ST_OK:
        return r
    ah_len = ah_length(s)
    if mode == MODE_TUNNEL:
        payload = pkt
        paylen = tot
        nh = PROTO_IPIP
        hl = 20
    else:
        if is_fragment(pkt):
            return ST_FRAGMENT
        payload = pkt + ihl
        paylen = tot - ihl
        nh = pkt[9]
        hl = ihl                                # RFC 4302 §3.1.1: AH after the options
    r = next_seq(s, &seq)
    if r != ST_OK:
        return r
    total = hl + ah_len + paylen
    if total > 65535:
        return ST_TOO_BIG
    if total > cap:
        return ST_INTERNAL
    if mode == MODE_TUNNEL:
        build_outer(s, out, pkt, <int>total, PROTO_AH)
    else:
        memcpy(out, pkt, hl)
        out[9] = PROTO_AH
        put16(out + 2, <uint32_t>total)
    ah = out + hl
    ah[0] = nh
    ah[1] = ah_len // 4 - 2                     # RFC 4302 §2.2: length in words minus 2
    ah[2] = 0
    ah[3] = 0
    put32(ah + 4, s.spi)
    put32(ah + 8, <uint32_t>seq)
    memset(ah + 12, 0, ah_len - 12)
    memcpy(ah + ah_len, payload, paylen)
    r = ah_icv(s, out, hl, ah, ah_len, ah + ah_len, paylen, <uint32_t>(seq >> 32), mac)
    if r != ST_OK:
        return r
    memcpy(ah + 12, mac, s.icv_len)
    set_checksum(out, hl)
    if mode == MODE_TUNNEL:
        s.ip_id = (s.ip_id + 1) & 0xFFFF
    s.seq = seq
    olen[0] = total
    return ST_OK


cdef int ah_decap_one(Sa *s, const uint8_t *pkt, int64_t plen, uint8_t *out, int64_t cap,
                      int64_t *olen, int mode, uint8_t *nh_out) noexcept nogil:
    cdef int ihl = 0, tot = 0, r, ah_len, paylen, nh, iihl = 0, itot = 0
    cdef const uint8_t *ah
    cdef const uint8_t *payload
    cdef uint64_t seq = 0
    cdef uint8_t mac[64]
    r = parse_ipv4(pkt, plen, &ihl, &tot)
    if r != ST_OK:
        return r
    if pkt[9] != PROTO_AH:
        return ST_BAD_PROTOCOL
    if is_fragment(pkt):
        return ST_FRAGMENT
    ah = pkt + ihl
    ah_len = ah_length(s)
    if tot - ihl < ah_len:
        return ST_TRUNCATED
    if (ah[1] + 2) * 4 != ah_len:
        return ST_BAD_LENGTH
    if be32(ah + 4) != s.spi:
        return ST_BAD_SPI
    r = seq_infer(s, be32(ah + 8), &seq)
    if r != ST_OK:
        return r
    r = replay_check(s, seq)
    if r != ST_OK:
        return r
    payload = ah + ah_len
    paylen = tot - ihl - ah_len
    r = ah_icv(s, pkt, ihl, ah, ah_len, payload, paylen, <uint32_t>(seq >> 32), mac)
    if r != ST_OK:
        return r
    if ssl.CRYPTO_memcmp(mac, ah + 12, s.icv_len) != 0:
        return ST_ICV_MISMATCH
    nh = ah[0]
    if nh == PROTO_NONE:
        return ST_BAD_NEXT_HEADER
    if ihl + paylen > cap:
        return ST_INTERNAL
    if mode == MODE_TUNNEL:
        if nh != PROTO_IPIP:
            return ST_BAD_NEXT_HEADER
        memcpy(out, payload, paylen)
        r = inner_packet(out, paylen, &iihl, &itot)
        if r != ST_OK:
            return r
        r = ecn_decap(pkt[1], out, iihl)
        if r != ST_OK:
            return r
        olen[0] = itot
    else:
        memcpy(out, pkt, ihl)
        out[9] = nh
        put16(out + 2, <uint32_t>(ihl + paylen))
        set_checksum(out, ihl)
        memcpy(out + ihl, payload, paylen)
        olen[0] = ihl + paylen
    if nh_out != NULL:
        nh_out[0] = nh
    replay_update(s, seq)
    return ST_OK


cdef int64_t _growth(Sa *s, int mode) noexcept nogil:
    """Most bytes encapsulation adds to one packet: ESP header + IV + padding (at most
    ``align - 1``) + trailer 2 + ICV (RFC 4303 §2), AH header + padded ICV (RFC 4302 §2),
    plus the outer IPv4 header in tunnel mode. Always <= MAX_OVERHEAD."""
    cdef int64_t outer = 20 if mode == MODE_TUNNEL else 0
    if s.proto == PROTO_AH:
        return outer + ah_length(s)
    return outer + 8 + s.iv_len + s.align - 1 + 2 + s.icv_len


# --- Python-facing class ----------------------------------------------------------------
cdef str _drain_errors():
    cdef unsigned long e
    cdef char buf[256]
    parts = []
    while True:
        e = ssl.ERR_get_error()
        if e == 0:
            break
        ssl.ERR_error_string_n(e, buf, sizeof(buf))
        parts.append(buf.decode("ascii", "replace"))
    return "; ".join(parts) or "no OpenSSL error recorded"



# Keyed OpenSSL contexts alive in this process: tests assert every one is freed
# (uvloop's debug-build habit). Only touched with the GIL held (construction / close).
cdef Py_ssize_t _live_contexts = 0

cdef ssl.EVP_CIPHER_CTX *_cctx_new() noexcept:
    global _live_contexts
    cdef ssl.EVP_CIPHER_CTX *c = ssl.EVP_CIPHER_CTX_new()
    if c != NULL:
        _live_contexts += 1
    return c

cdef void _cctx_free(ssl.EVP_CIPHER_CTX *c) noexcept:
    global _live_contexts
    if c != NULL:
        ssl.EVP_CIPHER_CTX_free(c)      # cleanses the key schedule
        _live_contexts -= 1

cdef void _hmac_wipe(Sa *s) noexcept:
    """Cleanse the HMAC key states (plain structs: nobody else will). They count as three
    keyed contexts while they hold a key, like the EVP_MD_CTXs they replace."""
    global _live_contexts
    ssl.OPENSSL_cleanse(&s.hmac_in, sizeof(HashState))
    ssl.OPENSSL_cleanse(&s.hmac_out, sizeof(HashState))
    ssl.OPENSSL_cleanse(&s.hmac_work, sizeof(HashState))
    if s.hmac_keyed:
        s.hmac_keyed = 0
        _live_contexts -= 3


def live_contexts():
    """Number of keyed OpenSSL contexts currently allocated by this module."""
    return _live_contexts


_legacy_loaded = False

cdef ssl.EVP_CIPHER *_fetch_cipher(bytes name) except NULL:
    global _legacy_loaded
    cdef ssl.EVP_CIPHER *alg
    ssl.ERR_clear_error()
    alg = ssl.EVP_CIPHER_fetch(NULL, name, NULL)
    if alg == NULL and name == b"DES-CBC":
        # Single DES lives in OpenSSL's legacy provider; loading it explicitly means the
        # default provider must be loaded explicitly too.
        ssl.ERR_clear_error()
        if not _legacy_loaded:
            if ssl.OSSL_PROVIDER_load(NULL, b"default") != NULL and \
                    ssl.OSSL_PROVIDER_load(NULL, b"legacy") != NULL:
                _legacy_loaded = True
        alg = ssl.EVP_CIPHER_fetch(NULL, name, NULL)
        if alg == NULL:
            detail = _drain_errors()
            raise UnsupportedTransform(
                "esp-des needs OpenSSL's legacy provider, which is not available here "
                f"({detail})")
    if alg == NULL:
        raise UnsupportedTransform(f"OpenSSL has no {name.decode()}: {_drain_errors()}")
    return alg


cdef bytes _cipher_name(int cipher, int keylen):
    bits = keylen * 8
    if cipher == C_AES_CBC:
        return f"AES-{bits}-CBC".encode()
    if cipher == C_AES_CTR:
        return f"AES-{bits}-CTR".encode()
    if cipher == C_AES_GCM or cipher == C_AES_GMAC:
        return f"AES-{bits}-GCM".encode()
    if cipher == C_AES_CCM:
        return f"AES-{bits}-CCM".encode()
    if cipher == C_CHACHA20_POLY1305:
        return b"ChaCha20-Poly1305"
    if cipher == C_TDES_CBC:
        return b"DES-EDE3-CBC"
    if cipher == C_DES_CBC:
        return b"DES-CBC"
    raise ValueError(f"unknown cipher id {cipher}")


# integrity id -> (OpenSSL digest, IPsec ICV bytes, digest bytes)
_MD_NAMES = {A_HMAC_MD5_96: (b"MD5", 12, 16), A_HMAC_SHA1_96: (b"SHA1", 12, 20),
             A_HMAC_SHA256_128: (b"SHA256", 16, 32), A_HMAC_SHA384_192: (b"SHA384", 24, 48),
             A_HMAC_SHA512_256: (b"SHA512", 32, 64)}


cdef int _hmac_setup(Sa *s, int auth, const uint8_t[::1] key) except -1:
    """Precompute H(K ^ ipad) and H(K ^ opad) states (RFC 2104 §2); a key longer than
    the hash block is hashed first (RFC 2104 §3)."""
    global _live_contexts
    cdef uint8_t k[128]
    cdef uint8_t pad[128]
    cdef int bs, i, ok = 1, klen = key.shape[0]
    if auth not in _MD_NAMES:
        raise ValueError(f"unknown integrity id {auth}")
    s.auth = auth
    bs = hash_block_size(auth)
    _hmac_wipe(s)
    s.hmac_keyed = 1                    # wiped by _hmac_wipe from here on, whatever happens
    _live_contexts += 3
    memset(k, 0, sizeof(k))
    if klen > bs:
        ok = hash_init(auth, &s.hmac_work) == 1
        ok = ok and hash_update(auth, &s.hmac_work, &key[0], klen) == 1
        ok = ok and hash_final(auth, &s.hmac_work, k) != 0
    elif klen:
        memcpy(k, &key[0], klen)
    for i in range(bs):
        pad[i] = k[i] ^ 0x36
    ok = ok and hash_init(auth, &s.hmac_in) == 1
    ok = ok and hash_update(auth, &s.hmac_in, pad, bs) == 1
    for i in range(bs):
        pad[i] = k[i] ^ 0x5C
    ok = ok and hash_init(auth, &s.hmac_out) == 1
    ok = ok and hash_update(auth, &s.hmac_out, pad, bs) == 1
    ssl.OPENSSL_cleanse(&s.hmac_work, sizeof(HashState))
    ssl.OPENSSL_cleanse(k, sizeof(k))
    ssl.OPENSSL_cleanse(pad, sizeof(pad))
    if not ok:
        _hmac_wipe(s)
        raise InternalError("HMAC setup failed")
    return 0


cdef ssl.EVP_CIPHER_CTX *_cipher_ctx(ssl.EVP_CIPHER *alg, int cipher, const uint8_t *key,
                                     int icv_len, int enc, uint8_t *salt) except NULL:
    cdef ssl.EVP_CIPHER_CTX *c = _cctx_new()
    cdef ssl.OSSL_PARAM params[2]
    cdef int ok
    if c == NULL:
        raise MemoryError()
    ok = ssl.EVP_CipherInit_ex(c, alg, NULL, NULL, NULL, enc)
    if cipher == C_AES_CCM:
        # RFC 4309 §4: 11-byte nonce (3-byte salt || 8-byte IV), so L = 4
        ok = ok and ssl.EVP_CIPHER_CTX_ctrl(c, ssl.EVP_CTRL_AEAD_SET_IVLEN, 11, NULL)
        ok = ok and ssl.EVP_CIPHER_CTX_ctrl(c, ssl.EVP_CTRL_AEAD_SET_TAG, icv_len, NULL)
    ok = ok and ssl.EVP_CipherInit_ex(c, NULL, NULL, key, NULL, enc)
    if not enc and cipher in (C_AES_CBC, C_TDES_CBC, C_DES_CBC):
        # Decrypting CBC with padding on would hold the last block back for Final. Only
        # there: a no-padding context makes every EVP_CipherInit_ex re-send the setting
        # (CBC re-initialises only when its chaining value is unknown, see cbc_encrypt).
        ok = ok and ssl.EVP_CIPHER_CTX_set_padding(c, 0)
    if not enc and (cipher == C_AES_GCM or cipher == C_AES_GMAC):
        # RFC 4106 §4: nonce = salt (the fixed field, set once) || ESP IV (the invocation
        # field, set per packet by gcm_open_params)
        params[0] = ssl.OSSL_PARAM_construct_octet_string(
            ssl.OSSL_CIPHER_PARAM_AEAD_TLS1_IV_FIXED, salt, 4)
        params[1] = ssl.OSSL_PARAM_construct_end()
        ok = ok and ssl.EVP_CIPHER_CTX_set_params(c, params)
    if not ok:
        _cctx_free(c)
        raise InternalError(f"cipher setup failed: {_drain_errors()}")
    return c


cdef class SaCore:
    """One SA's keyed contexts and counters. Lengths are validated by ``ipsecfast.sa``
    first; this re-checks them so that OpenSSL never reads past a short key."""

    cdef Sa s
    cdef readonly bint closed

    def __cinit__(self, int protocol, int cipher, int auth, const uint8_t[::1] cipher_key,
                  const uint8_t[::1] auth_key, int icv_len, uint32_t spi, bint esn=False,
                  uint32_t local=0, uint32_t peer=0, int replay_window=64, uint64_t seq=0,
                  uint64_t iv_next=1, int ip_id=0):
        cdef ssl.EVP_CIPHER *alg = NULL
        cdef int keylen = cipher_key.shape[0]
        cdef int ivl = 0, block = 1, salt = 0, md_icv = 0
        memset(&self.s, 0, sizeof(Sa))
        self.closed = False
        if protocol != PROTO_ESP and protocol != PROTO_AH:
            raise ValueError("protocol must be 50 (ESP) or 51 (AH)")
        if not 0 <= replay_window <= MAX_WINDOW:
            raise ValueError(f"replay window must be 0..{MAX_WINDOW}")
        self.s.proto = protocol
        self.s.spi = spi
        self.s.esn = esn
        self.s.local = local
        self.s.peer = peer
        self.s.window = replay_window
        self.s.seq = seq
        # ``seq`` also places the inbound window: the last number received is ``seq``, so
        # the SA made for either direction starts consistent (ESN inference included).
        self.s.rx_top = seq
        if seq:
            self.s.bitmap[0] = 1
        self.s.iv_next = iv_next
        self.s.ip_id = ip_id & 0xFFFF
        if protocol == PROTO_AH:
            cipher = C_NULL
            if auth == A_NONE:
                raise ValueError("AH needs an integrity algorithm")
        self.s.cipher = cipher
        self.s.auth = auth
        if auth != A_NONE:
            md_icv = _MD_NAMES[auth][1] if auth in _MD_NAMES else 0
        if cipher in (C_AES_GCM, C_AES_GMAC, C_CHACHA20_POLY1305, C_AES_CCM):
            if auth != A_NONE:
                raise ValueError("an AEAD cipher takes no separate integrity algorithm")
            if cipher == C_AES_CCM:
                if icv_len not in (8, 12, 16):
                    raise ValueError("AES-CCM ICV must be 8, 12 or 16 bytes")
            elif icv_len != 16:
                raise ValueError("the AEAD ICV is 16 bytes")
        elif icv_len != md_icv:
            raise ValueError(f"ICV length must be {md_icv} for this integrity algorithm")
        self.s.icv_len = icv_len
        if cipher == C_NULL:
            if keylen != 0:
                raise ValueError("null encryption takes no key")
        elif cipher in (C_DES_CBC, C_TDES_CBC):
            ivl, block = 8, 8
            if keylen != (8 if cipher == C_DES_CBC else 24):
                raise ValueError("wrong DES key length")
        elif cipher == C_AES_CBC:
            ivl, block = 16, 16
            if keylen not in (16, 24, 32):
                raise ValueError("AES key must be 16, 24 or 32 bytes")
        elif cipher == C_CHACHA20_POLY1305:
            ivl, salt = 8, 4
            if keylen != 36:
                raise ValueError("ChaCha20-Poly1305 keying material is 32 + 4 bytes")
        elif cipher in (C_AES_CTR, C_AES_GCM, C_AES_GMAC, C_AES_CCM):
            ivl = 8
            salt = 3 if cipher == C_AES_CCM else 4
            if keylen - salt not in (16, 24, 32):
                raise ValueError(f"AES keying material must be 16, 24 or 32 + {salt} bytes")
        else:
            raise ValueError(f"unknown cipher id {cipher}")
        self.s.iv_len = ivl
        self.s.align = block if block > 4 else 4
        self.s.salt_len = salt
        self.s.counter_iv = salt > 0
        if salt:
            memcpy(self.s.salt, &cipher_key[keylen - salt], salt)
        try:
            if cipher != C_NULL:
                alg = _fetch_cipher(_cipher_name(cipher, keylen - salt))
                self.s.enc = _cipher_ctx(alg, cipher, &cipher_key[0], icv_len, 1, self.s.salt)
                self.s.dec = _cipher_ctx(alg, cipher, &cipher_key[0], icv_len, 0, self.s.salt)
            if auth != A_NONE:
                _hmac_setup(&self.s, auth, auth_key)
        except BaseException:
            self.close()
            raise
        finally:
            if alg != NULL:
                ssl.EVP_CIPHER_free(alg)

    def __dealloc__(self):
        self._free()

    cdef void _free(self) noexcept:
        _cctx_free(self.s.enc)
        _cctx_free(self.s.dec)
        _hmac_wipe(&self.s)
        self.s.enc = self.s.dec = NULL
        ssl.OPENSSL_cleanse(self.s.salt, sizeof(self.s.salt))
        self.s.enc_chained = self.s.dec_chained = 0

    def close(self):
        """Free the keyed contexts (OpenSSL cleanses them), wipe the HMAC states and salt."""
        self._free()
        self.closed = True

    def key_material_wiped(self):
        """True when no keyed context is held and the salt and HMAC states are zero
        (for tests)."""
        cdef const uint8_t *h
        cdef size_t i
        for i in range(4):
            if self.s.salt[i]:
                return False
        for state in range(3):
            h = <const uint8_t *>(&self.s.hmac_in if state == 0 else
                                  &self.s.hmac_out if state == 1 else &self.s.hmac_work)
            for i in range(sizeof(HashState)):
                if h[i]:
                    return False
        return self.s.enc == NULL and self.s.dec == NULL and not self.s.hmac_keyed

    # -- state -------------------------------------------------------------------------
    @property
    def seq(self):
        return self.s.seq

    @property
    def iv_next(self):
        return self.s.iv_next

    @property
    def ip_id(self):
        return self.s.ip_id

    @property
    def rx_top(self):
        return self.s.rx_top

    @property
    def iv_length(self):
        return self.s.iv_len

    @property
    def overhead(self):
        return MAX_OVERHEAD

    def counters(self):
        """(enc packets, enc bytes, dec packets, dec bytes, [packets per status code])."""
        return (self.s.enc_packets, self.s.enc_bytes, self.s.dec_packets, self.s.dec_bytes,
                [self.s.counts[i] for i in range(ST_NCODES)])

    # -- batches -------------------------------------------------------------------------
    def max_growth(self, int mode, bint encap=True):
        """Bytes one packet can grow by in ``mode`` (encapsulation; 0 for decapsulation):
        the room a caller leaves after each packet's slot in a ``placed`` call."""
        if mode not in (MODE_TUNNEL, MODE_TRANSPORT, MODE_RAW):
            raise ValueError("bad mode")
        return _growth(&self.s, mode) if encap else 0

    def encapsulate(self, const uint8_t[::1] buf, const int64_t[::1] offsets,
                    const int64_t[::1] lengths, uint8_t[::1] out, int64_t[::1] out_offsets,
                    int64_t[::1] out_lengths, uint8_t[::1] status, uint8_t[::1] ivs,
                    int mode, bint random_iv=True, int next_header=PROTO_IPIP,
                    bint placed=False):
        """Protect every packet; returns the bytes of ``out`` used. ``ivs`` holds one CBC IV
        per packet: filled here with one RAND_bytes call unless ``random_iv`` is false.

        ``placed``: ``out_offsets`` is an input, packet i goes to ``out[out_offsets[i]:]``
        into a slot of ``lengths[i] + max_growth(mode)`` bytes that must lie inside ``out``
        (checked before the loop; slots must not overlap each other or the input); the
        slot's bytes after the packet are zeroed."""
        return self._run(buf, offsets, lengths, out, out_offsets, out_lengths, status, ivs,
                         None, mode, True, random_iv, next_header, placed)

    def decapsulate(self, const uint8_t[::1] buf, const int64_t[::1] offsets,
                    const int64_t[::1] lengths, uint8_t[::1] out, int64_t[::1] out_offsets,
                    int64_t[::1] out_lengths, uint8_t[::1] status, int mode,
                    uint8_t[::1] next_headers=None, bint placed=False):
        """Verify and open every packet; returns the bytes of ``out`` used. ``placed`` as
        for ``encapsulate``, with slots of ``lengths[i]`` bytes (a packet never grows)."""
        return self._run(buf, offsets, lengths, out, out_offsets, out_lengths, status, None,
                         next_headers, mode, False, False, 0, placed)

    cdef int64_t _run(self, const uint8_t[::1] buf, const int64_t[::1] offsets,
                      const int64_t[::1] lengths, uint8_t[::1] out, int64_t[::1] out_offsets,
                      int64_t[::1] out_lengths, uint8_t[::1] status, uint8_t[::1] ivs,
                      uint8_t[::1] nhs, int mode, bint encap, bint random_iv,
                      int next_header, bint placed) except -1:
        cdef Py_ssize_t n = offsets.shape[0], i
        cdef int64_t bufsize = buf.shape[0], outsize = out.shape[0], pos = 0, o, l, ol
        cdef int64_t at, cap, growth = 0
        cdef const uint8_t *bp = &buf[0] if bufsize > 0 else NULL
        cdef uint8_t *op = &out[0] if outsize > 0 else NULL
        cdef uint8_t *ivp = NULL
        cdef uint8_t *nhp = NULL
        cdef int r, rand_ok = 1, internal = 0
        cdef Py_ssize_t j
        cdef Sa *s = &self.s
        if self.closed:
            raise ValueError("the SA is closed")
        if mode not in (MODE_TUNNEL, MODE_TRANSPORT, MODE_RAW):
            raise ValueError("bad mode")
        if mode == MODE_RAW and s.proto != PROTO_ESP:
            raise ValueError("raw mode is for ESP only")
        if mode == MODE_TUNNEL and encap and (s.local == 0 or s.peer == 0):
            raise ValueError("tunnel mode needs local and peer addresses")
        if (lengths.shape[0] != n or out_offsets.shape[0] < n or out_lengths.shape[0] < n
                or status.shape[0] < n):
            raise ValueError("array lengths disagree")
        if not 0 <= next_header <= 255:
            raise ValueError("next header must be 0..255")
        if encap and s.proto == PROTO_ESP and s.iv_len and not s.counter_iv:
            if ivs is None or ivs.shape[0] < n * s.iv_len:
                raise ValueError("ivs must hold one IV per packet")
            if n:
                ivp = &ivs[0]
        if nhs is not None and nhs.shape[0] >= n and n:
            nhp = &nhs[0]
        if encap:
            growth = _growth(s, mode)
        if placed:
            # every slot inside ``out`` before any write (the caller checked it already;
            # this keeps the core memory-safe on its own)
            for i in range(n):
                if (out_offsets[i] < 0 or lengths[i] < 0 or out_offsets[i] > outsize
                        or lengths[i] > outsize - out_offsets[i] - growth):
                    raise ValueError("out buffer too small for the packets' slots")
        with nogil:
            if ivp != NULL and random_iv:
                # RFC 4303 §3.3.2 / RFC 3602 §2.1: unpredictable CBC IVs, one call per batch
                rand_ok = ssl.RAND_bytes(ivp, <int>(n * s.iv_len))
            for i in range(n):
                if i + AHEAD < n:  # (see AHEAD)
                    j = i + AHEAD
                    if offsets[j] >= 0 and offsets[j] < bufsize:
                        prefetch(bp + offsets[j])
                        prefetch(bp + offsets[j] + 64)
                    if encap and placed and out_offsets[j] < outsize:  # (see AHEAD)
                        prefetch_w(op + out_offsets[j], 1)
                        prefetch_w(op + out_offsets[j] + 64, 1)
                o = offsets[i]
                l = lengths[i]
                ol = 0
                if placed:
                    at = out_offsets[i]
                    cap = l + growth
                else:
                    at = pos
                    cap = outsize - pos
                if o < 0 or l < 0 or o > bufsize - l:  # no int64 overflow on a huge offset
                    r = ST_TRUNCATED
                elif encap:
                    if rand_ok != 1:
                        r = ST_INTERNAL
                    elif s.proto == PROTO_ESP:
                        r = esp_encap_one(s, bp + o, l, op + at, cap, &ol, mode,
                                          next_header,
                                          ivp + i * s.iv_len if ivp != NULL else NULL)
                    else:
                        r = ah_encap_one(s, bp + o, l, op + at, cap, &ol, mode)
                else:
                    if s.proto == PROTO_ESP:
                        r = esp_decap_one(s, bp + o, l, op + at, cap, &ol, mode,
                                          nhp + i if nhp != NULL else NULL)
                    else:
                        r = ah_decap_one(s, bp + o, l, op + at, cap, &ol, mode,
                                         nhp + i if nhp != NULL else NULL)
                status[i] = r
                if not placed:
                    out_offsets[i] = pos
                if r == ST_OK:
                    out_lengths[i] = ol
                    pos += ol
                    if placed and ol < cap:
                        # the rest of the slot: no stale heap bytes (or decrypted padding)
                        # between the packets of a shared buffer
                        memset(op + at + ol, 0, cap - ol)
                    if encap:
                        s.enc_packets += 1
                        s.enc_bytes += l
                    else:
                        s.dec_packets += 1
                        s.dec_bytes += ol
                else:
                    out_lengths[i] = 0
                    s.counts[r] += 1
                    if r == ST_INTERNAL:
                        internal = 1
                    # no partial plaintext or ciphertext is left in the output
                    if placed:
                        if cap > 0:
                            memset(op + at, 0, cap)
                    elif outsize - pos > 0:
                        memset(op + pos, 0, min(outsize - pos, l + MAX_OVERHEAD))
            if internal or rand_ok != 1:
                ssl.ERR_clear_error()
        return pos


# --- traffic selectors ---------------------------------------------------------------------
cdef inline bint in_ranges(const uint32_t *sel, const uint8_t *p, int64_t n) noexcept nogil:
    """Whether the IPv4 packet ``p`` (``n`` bytes) lies in the selector ranges ``sel`` (see
    ``run_multi``): not a fragment, not ESP / AH, its transport header there."""
    cdef int64_t ihl, total
    cdef uint32_t proto, src, dst, sp = 0, dp = 0
    if sel[0] > sel[1] or n < 20 or (p[0] >> 4) != 4:
        return False
    ihl = (p[0] & 0x0F) * 4
    total = be16(p + 2)
    if ihl < 20 or ihl > n or total < ihl or total > n or (be16(p + 6) & 0x3FFF):
        return False
    proto = p[9]
    if proto == PROTO_ESP or proto == PROTO_AH:
        return False
    if proto == 6 or proto == 17:
        if total - ihl < (14 if proto == 6 else 4):
            return False
        sp = be16(p + ihl)
        dp = be16(p + ihl + 2)
    elif proto == 1 and total - ihl < 2:
        return False
    src = be32(p + 12)
    dst = be32(p + 16)
    return (sel[0] <= src <= sel[1] and sel[2] <= dst <= sel[3] and sel[4] <= sp <= sel[5]
            and sel[6] <= dp <= sel[7] and sel[8] <= proto <= sel[9])


# --- inbound SA lookup by SPI ---------------------------------------------------------------
# What spi_lookup says of a packet (RFC 4301 §4.1 / §5.2: an inbound IPsec packet is
# mapped to its SA by destination, protocol and SPI).
cdef enum:
    K_OK = 0          # ESP / AH to the local address, SPI of a known SA (slot = its index)
    K_OTHER = 1       # empty, or not IPv4
    K_CLEAR = 2       # IPv4, but not ESP / AH addressed to the local address (or bad header)
    K_FRAGMENT = 3    # an ESP / AH fragment (reassembly is not done here)
    K_OPTIONS = 4     # ESP / AH with IPv4 options
    K_TRUNCATED = 5   # too short to hold its SPI
    K_UNKNOWN = 6     # no SA has that protocol and SPI

SPI_OK = K_OK
SPI_OTHER = K_OTHER
SPI_CLEAR = K_CLEAR
SPI_FRAGMENT = K_FRAGMENT
SPI_OPTIONS = K_OPTIONS
SPI_TRUNCATED = K_TRUNCATED
SPI_UNKNOWN = K_UNKNOWN


def spi_lookup(const uint8_t[::1] buf, const int64_t[::1] offsets, const int64_t[::1] lengths,
               uint32_t local, const int64_t[::1] keys, uint8_t[::1] kinds,
               int32_t[::1] slots):
    """Map every packet to an inbound SA of the address ``local`` in one pass: ``kinds[i]``
    one of the ``SPI_*`` codes, ``slots[i]`` the index in ``keys`` (sorted ``protocol << 32
    | SPI`` of the SAs) of its SA where ``SPI_OK``, else -1. The outer header is read as
    the policy layer reads it: valid when 20 <= IHL <= total length <= packet length;
    the SPI must lie inside the packet (ESP: bytes 20-23, AH: 24-27). Every span and the
    key order are checked first (ValueError)."""
    cdef Py_ssize_t n = offsets.shape[0], i, nk = keys.shape[0], lo, hi, mid, ahead
    cdef int64_t size = buf.shape[0], o, l, key
    cdef const uint8_t *bp = &buf[0] if size > 0 else NULL
    cdef const uint8_t *p
    cdef const int64_t *kp = &keys[0] if nk > 0 else NULL
    cdef int ihl, total, proto, fw
    cdef uint8_t kind
    if lengths.shape[0] != n or kinds.shape[0] != n or slots.shape[0] != n:
        raise ValueError("array lengths disagree")
    for i in range(1, nk):
        if keys[i] <= keys[i - 1]:
            raise ValueError("keys must be sorted ascending, without duplicates")
    for i in range(n):
        if offsets[i] < 0 or lengths[i] < 0 or offsets[i] > size - lengths[i]:
            raise ValueError(f"packet {i} lies outside the buffer")
    with nogil:
        for i in range(n):
            if i + 16 < n:  # (each header is a new cache line: 16 ahead measured 20 % faster than 4)
                ahead = i + 16
                if lengths[ahead]:
                    prefetch(bp + offsets[ahead])
            slots[i] = -1
            o = offsets[i]
            l = lengths[i]
            p = bp + o
            if l == 0 or (p[0] >> 4) != 4:
                kinds[i] = K_OTHER
                continue
            if l < 20:
                kinds[i] = K_CLEAR
                continue
            ihl = (p[0] & 0x0F) * 4
            total = be16(p + 2)
            proto = p[9]
            if (ihl < 20 or total < ihl or total > l or (proto != PROTO_ESP and proto != PROTO_AH)
                    or be32(p + 16) != local):
                kinds[i] = K_CLEAR
                continue
            fw = be16(p + 6)
            if fw & 0x3FFF:
                kind = K_FRAGMENT
            elif ihl > 20:
                kind = K_OPTIONS
            elif proto == PROTO_ESP and l < 24:
                kind = K_TRUNCATED
            elif proto == PROTO_AH and l < 28:
                kind = K_TRUNCATED
            else:
                key = (<int64_t>proto << 32) | (be32(p + 20) if proto == PROTO_ESP else be32(p + 24))
                lo = 0
                hi = nk
                while lo < hi:
                    mid = (lo + hi) >> 1
                    if kp[mid] < key:
                        lo = mid + 1
                    else:
                        hi = mid
                if lo < nk and kp[lo] == key:
                    kind = K_OK
                    slots[i] = <int32_t>lo
                else:
                    kind = K_UNKNOWN
            kinds[i] = kind


# --- several SAs in one call ---------------------------------------------------------------
def run_multi(cores, const int32_t[::1] sa_index, const uint8_t[::1] modes,
              const uint8_t[::1] buf, const int64_t[::1] offsets, const int64_t[::1] lengths,
              uint8_t[::1] out, const int64_t[::1] out_offsets, int64_t[::1] out_lengths,
              uint8_t[::1] status, uint8_t[::1] ivs, bint encap, bint random_iv=True,
              int next_header=PROTO_IPIP, uint8_t[::1] next_headers=None,
              const int32_t[::1] sa_part=None, int part=0,
              const uint32_t[:, ::1] selectors=None, uint8_t[::1] in_selector=None):
    """``encapsulate`` / ``decapsulate`` (``placed``) of packets that belong to different
    SAs, in input order: packet i uses ``cores[sa_index[i]]`` in mode ``modes[i]`` and goes
    to the slot ``out[out_offsets[i]:]`` of ``lengths[i] + max_growth(mode)`` bytes
    (decapsulation: ``lengths[i]``). Each SA's state (sequence numbers, counter IVs, replay
    window, counters) moves exactly as if it had been called on its own packets in their
    order. ``ivs``: packet i's CBC IV at ``ivs[i * stride:]``, stride the longest CBC IV of
    ``cores`` (0 when none), filled by one RAND_bytes call unless ``random_iv`` is false.

    ``sa_part`` / ``part``: only the packets of the SAs k with ``sa_part[k] == part`` are
    processed (their outputs, statuses and SA states; nothing else is written), so that
    calls for different parts can run at once on different threads: an SA belongs to one
    part, and each SA's packets are still processed in their order by one thread. With
    parts, fill ``ivs`` beforehand (``random_fill``) and pass ``random_iv`` false.

    ``selectors`` / ``in_selector`` (decapsulation): SA k's traffic selector as ranges
    ``selectors[k] = (src_lo, src_hi, dst_lo, dst_hi, sport_lo, sport_hi, dport_lo,
    dport_hi, proto_lo, proto_hi)`` (src_lo > src_hi: none); ``in_selector[i]`` is set to
    1 when packet i opened in tunnel mode to an inner IPv4 packet that is not a fragment,
    not ESP / AH, whose transport header is there (TCP 14 bytes, UDP 4, ICMP 2), and whose
    fields lie in its SA's ranges (RFC 4301 §5.2 step 4, checked while the inner header
    is still in the cache); else 0 (the caller checks that packet its own way).

    The caller holds every SA's lock (``ipsecfast.sa`` takes them in a fixed order).
    Returns the stride. Raises ValueError before any packet is touched."""
    cdef Py_ssize_t n = offsets.shape[0], i, nsa = len(cores), k, ahead
    cdef int64_t bufsize = buf.shape[0], outsize = out.shape[0], o, l, ol, at, cap
    cdef const uint8_t *bp = &buf[0] if bufsize > 0 else NULL
    cdef uint8_t *op = &out[0] if outsize > 0 else NULL
    cdef uint8_t *ivp = NULL
    cdef uint8_t *nhp = NULL
    cdef int r, rand_ok = 1, internal = 0, stride = 0, m, j
    cdef int32_t x
    cdef const int32_t *partp = NULL
    cdef const uint32_t *selp = NULL
    cdef uint8_t *insel = NULL
    cdef Sa *s
    cdef Sa **sas = NULL
    cdef int64_t *growth = NULL     # growth[k * 3 + mode]
    cdef int *cbc = NULL            # SA k takes a CBC IV from ivs
    cdef SaCore core
    cores = tuple(cores)            # our own references for the nogil loop
    nsa = len(cores)
    if (lengths.shape[0] != n or sa_index.shape[0] != n or modes.shape[0] != n
            or out_offsets.shape[0] != n or out_lengths.shape[0] < n or status.shape[0] < n):
        raise ValueError("array lengths disagree")
    if not 0 <= next_header <= 255:
        raise ValueError("next header must be 0..255")
    if next_headers is not None and next_headers.shape[0] >= n and n:
        nhp = &next_headers[0]
    if selectors is not None or in_selector is not None:
        if selectors is None or in_selector is None or encap:
            raise ValueError("selectors and in_selector go together, when decapsulating")
        if selectors.shape[0] != nsa or selectors.shape[1] != 10 or in_selector.shape[0] < n:
            raise ValueError("selectors must be (SAs, 10) and in_selector one per packet")
        if n and nsa:
            selp = &selectors[0, 0]
            insel = &in_selector[0]
    if sa_part is not None:
        if sa_part.shape[0] != nsa:
            raise ValueError("sa_part must have one entry per SA")
        if random_iv:
            raise ValueError("a call for one part needs its IVs filled beforehand")
        if nsa:
            partp = &sa_part[0]
    sas = <Sa **>PyMem_Malloc((nsa + 1) * sizeof(Sa *))
    growth = <int64_t *>PyMem_Malloc((nsa * 3 + 1) * sizeof(int64_t))
    cbc = <int *>PyMem_Malloc((nsa + 1) * sizeof(int))
    if sas == NULL or growth == NULL or cbc == NULL:
        PyMem_Free(sas)
        PyMem_Free(growth)
        PyMem_Free(cbc)
        raise MemoryError()
    try:
        for k in range(nsa):
            core = cores[k]             # TypeError for anything but a SaCore
            if core.closed:
                raise ValueError("an SA is closed")
            sas[k] = &core.s
            for m in range(3):
                growth[k * 3 + m] = _growth(&core.s, m) if encap else 0
            cbc[k] = (encap and core.s.proto == PROTO_ESP and core.s.iv_len > 0
                      and not core.s.counter_iv)
            if cbc[k] and core.s.iv_len > stride:
                stride = core.s.iv_len
        if stride:
            if ivs is None or ivs.shape[0] < n * stride:
                raise ValueError("ivs must hold one IV per packet")
            if n:
                ivp = &ivs[0]
        # every index, mode and slot checked before any write (the caller checked them
        # already; this keeps the core memory-safe on its own)
        for i in range(n):
            x = sa_index[i]
            m = modes[i]
            if x < 0 or x >= nsa:
                raise ValueError(f"sa_index[{i}] = {x} is not an index into the {nsa} SAs")
            if m != MODE_TUNNEL and m != MODE_TRANSPORT:
                raise ValueError(f"modes[{i}] = {m} is not tunnel or transport")
            s = sas[x]
            if m == MODE_TUNNEL and encap and (s.local == 0 or s.peer == 0):
                raise ValueError("tunnel mode needs local and peer addresses")
            if (out_offsets[i] < 0 or lengths[i] < 0 or out_offsets[i] > outsize
                    or lengths[i] > outsize - out_offsets[i] - growth[x * 3 + m]):
                raise ValueError("out buffer too small for the packets' slots")
        with nogil:
            if ivp != NULL and random_iv:
                # RFC 4303 §3.3.2 / RFC 3602 §2.1: unpredictable CBC IVs, one call per batch
                rand_ok = ssl.RAND_bytes(ivp, <int>(n * stride))
            for i in range(n):
                if i + AHEAD < n and (partp == NULL or partp[sa_index[i + AHEAD]] == part):
                    ahead = i + AHEAD  # (see AHEAD; another thread's packets are left alone)
                    if offsets[ahead] >= 0 and offsets[ahead] < bufsize:
                        prefetch(bp + offsets[ahead])
                        prefetch(bp + offsets[ahead] + 64)
                    if encap and out_offsets[ahead] < outsize:  # (see AHEAD)
                        prefetch_w(op + out_offsets[ahead], 1)
                        prefetch_w(op + out_offsets[ahead] + 64, 1)
                x = sa_index[i]
                if partp != NULL and partp[x] != part:
                    continue            # another thread's SA
                s = sas[x]
                m = modes[i]
                o = offsets[i]
                l = lengths[i]
                ol = 0
                at = out_offsets[i]
                cap = l + growth[x * 3 + m]
                if o < 0 or l < 0 or o > bufsize - l:  # no int64 overflow on a huge offset
                    r = ST_TRUNCATED
                elif encap:
                    if rand_ok != 1:
                        r = ST_INTERNAL
                    elif s.proto == PROTO_ESP:
                        r = esp_encap_one(s, bp + o, l, op + at, cap, &ol, m, next_header,
                                          ivp + i * stride if cbc[x] else NULL)
                    else:
                        r = ah_encap_one(s, bp + o, l, op + at, cap, &ol, m)
                else:
                    if s.proto == PROTO_ESP:
                        r = esp_decap_one(s, bp + o, l, op + at, cap, &ol, m,
                                          nhp + i if nhp != NULL else NULL)
                    else:
                        r = ah_decap_one(s, bp + o, l, op + at, cap, &ol, m,
                                         nhp + i if nhp != NULL else NULL)
                status[i] = r
                if insel != NULL:
                    insel[i] = (r == ST_OK and m == MODE_TUNNEL
                                and in_ranges(selp + x * 10, op + at, ol))
                if r == ST_OK:
                    out_lengths[i] = ol
                    if ol < cap:
                        memset(op + at + ol, 0, cap - ol)
                    if encap:
                        s.enc_packets += 1
                        s.enc_bytes += l
                    else:
                        s.dec_packets += 1
                        s.dec_bytes += ol
                else:
                    out_lengths[i] = 0
                    s.counts[r] += 1
                    if r == ST_INTERNAL:
                        internal = 1
                    if cap > 0:
                        memset(op + at, 0, cap)
            if internal or rand_ok != 1:
                ssl.ERR_clear_error()
    finally:
        PyMem_Free(sas)
        PyMem_Free(growth)
        PyMem_Free(cbc)
    return stride


def random_fill(uint8_t[::1] out):
    """Fill ``out`` from OpenSSL's CSPRNG (RAND_bytes), without the GIL: the CBC IVs of a
    ``run_multi`` split into parts. Raises InternalError when the generator fails."""
    cdef int ok = 1
    cdef Py_ssize_t n = out.shape[0]
    if n == 0:
        return
    if n > 0x7FFFFFFF:
        raise ValueError("at most 2**31 - 1 bytes per call")
    with nogil:
        ok = ssl.RAND_bytes(&out[0], <int>n)
    if ok != 1:
        raise InternalError(f"RAND_bytes failed: {_drain_errors()}")


def hmac(int auth, const uint8_t[::1] key, const uint8_t[::1] data, int out_len):
    """HMAC through the core's integrity path (precomputed states, copy per message);
    for known-answer tests."""
    cdef Sa s
    cdef uint8_t mac[64]
    cdef int ok
    memset(&s, 0, sizeof(Sa))
    if auth not in _MD_NAMES:
        raise ValueError(f"unknown integrity id {auth}")
    if not 0 < out_len <= _MD_NAMES[auth][2]:
        raise ValueError(f"out_len must be 1..{_MD_NAMES[auth][2]}")
    try:
        _hmac_setup(&s, auth, key)
        with nogil:
            ok = hmac_begin(&s)
            if ok == 1 and data.shape[0]:
                ok = hmac_update(&s, &data[0], data.shape[0])
            if ok == 1:
                ok = hmac_finish(&s, mac)
        if ok != 1:
            raise InternalError(f"HMAC failed: {_drain_errors()}")
        return bytes(mac[:out_len])
    finally:
        _hmac_wipe(&s)
