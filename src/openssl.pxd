# The part of OpenSSL 3 libcrypto that ipsecfast's compiled core uses, and nothing more.
# Declarations only (uvloop style): every symbol here is called from src/_esp.pyx.

cdef extern from "openssl/types.h" nogil:
    ctypedef struct OSSL_LIB_CTX
    ctypedef struct ENGINE
    ctypedef struct EVP_CIPHER
    ctypedef struct EVP_CIPHER_CTX
    ctypedef struct OSSL_PROVIDER

cdef extern from "openssl/evp.h" nogil:
    int EVP_CTRL_AEAD_SET_IVLEN
    int EVP_CTRL_AEAD_GET_TAG
    int EVP_CTRL_AEAD_SET_TAG

    # ciphers: fetched once per SA, key set once per context
    EVP_CIPHER *EVP_CIPHER_fetch(OSSL_LIB_CTX *ctx, const char *algorithm,
                                 const char *properties)
    void EVP_CIPHER_free(EVP_CIPHER *cipher)
    EVP_CIPHER_CTX *EVP_CIPHER_CTX_new()
    void EVP_CIPHER_CTX_free(EVP_CIPHER_CTX *ctx)
    int EVP_CipherInit_ex(EVP_CIPHER_CTX *ctx, const EVP_CIPHER *type, ENGINE *impl,
                          const unsigned char *key, const unsigned char *iv, int enc)
    int EVP_CipherUpdate(EVP_CIPHER_CTX *ctx, unsigned char *out, int *outl,
                         const unsigned char *inp, int inl)
    int EVP_CipherFinal_ex(EVP_CIPHER_CTX *ctx, unsigned char *outm, int *outl)
    int EVP_CIPHER_CTX_set_padding(EVP_CIPHER_CTX *ctx, int pad)
    int EVP_CIPHER_CTX_ctrl(EVP_CIPHER_CTX *ctx, int type, int arg, void *ptr)

# AES-GCM per packet by parameter calls: the nonce (decrypting: the IV's invocation field
# and the expected tag in one call) instead of EVP_CipherInit_ex, which looks the IV length
# up through the provider's parameters first, and the tag without the ctrl wrapper.
cdef extern from "openssl/core.h" nogil:
    unsigned int OSSL_PARAM_OCTET_STRING
    ctypedef struct OSSL_PARAM:
        const char *key
        unsigned int data_type
        void *data
        size_t data_size
        size_t return_size

cdef extern from "openssl/params.h" nogil:
    OSSL_PARAM OSSL_PARAM_construct_octet_string(const char *key, void *buf, size_t bsize)
    OSSL_PARAM OSSL_PARAM_construct_end()
    size_t OSSL_PARAM_UNMODIFIED

cdef extern from "openssl/core_names.h" nogil:
    const char *OSSL_CIPHER_PARAM_AEAD_TAG
    const char *OSSL_CIPHER_PARAM_AEAD_TLS1_IV_FIXED       # fixed field: the RFC 4106 salt
    const char *OSSL_CIPHER_PARAM_AEAD_TLS1_SET_IV_INV     # invocation field: the ESP IV

cdef extern from "openssl/evp.h" nogil:
    int EVP_CIPHER_CTX_set_params(EVP_CIPHER_CTX *ctx, const OSSL_PARAM params[])
    int EVP_CIPHER_CTX_get_params(EVP_CIPHER_CTX *ctx, OSSL_PARAM params[])

# HMAC per packet: the low-level digests, whose state is a plain struct that a per-packet
# copy of the precomputed inner / outer states duplicates without an allocation
# (EVP_MD_CTX_copy_ex frees and mallocs the provider state every time in OpenSSL 3.0).
# Deprecated in 3.0 but exported and SHA-NI / AVX2 accelerated like EVP. Called through
# one-line wrappers so that only these calls are exempt from the deprecation warning
# (no global -Wno-deprecated-declarations); Cython names map to the wrappers.
cdef extern from *:
    """
    #include <openssl/md5.h>
    #include <openssl/sha.h>
    #pragma GCC diagnostic push
    #pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    #define IPF_LOWLEVEL_DIGEST(P, T) \
        static inline int ipf_##P##_Init(T *c) { return P##_Init(c); } \
        static inline int ipf_##P##_Update(T *c, const void *d, size_t n) \
            { return P##_Update(c, d, n); } \
        static inline int ipf_##P##_Final(unsigned char *md, T *c) { return P##_Final(md, c); }
    IPF_LOWLEVEL_DIGEST(MD5, MD5_CTX)
    IPF_LOWLEVEL_DIGEST(SHA1, SHA_CTX)
    IPF_LOWLEVEL_DIGEST(SHA256, SHA256_CTX)
    IPF_LOWLEVEL_DIGEST(SHA384, SHA512_CTX)
    IPF_LOWLEVEL_DIGEST(SHA512, SHA512_CTX)
    #undef IPF_LOWLEVEL_DIGEST
    #pragma GCC diagnostic pop
    """
    ctypedef struct MD5_CTX:
        pass
    ctypedef struct SHA_CTX:
        pass
    ctypedef struct SHA256_CTX:
        pass
    ctypedef struct SHA512_CTX:          # SHA-384 too
        pass
    int MD5_Init "ipf_MD5_Init"(MD5_CTX *c) nogil
    int MD5_Update "ipf_MD5_Update"(MD5_CTX *c, const void *d, size_t n) nogil
    int MD5_Final "ipf_MD5_Final"(unsigned char *md, MD5_CTX *c) nogil
    int SHA1_Init "ipf_SHA1_Init"(SHA_CTX *c) nogil
    int SHA1_Update "ipf_SHA1_Update"(SHA_CTX *c, const void *d, size_t n) nogil
    int SHA1_Final "ipf_SHA1_Final"(unsigned char *md, SHA_CTX *c) nogil
    int SHA256_Init "ipf_SHA256_Init"(SHA256_CTX *c) nogil
    int SHA256_Update "ipf_SHA256_Update"(SHA256_CTX *c, const void *d, size_t n) nogil
    int SHA256_Final "ipf_SHA256_Final"(unsigned char *md, SHA256_CTX *c) nogil
    int SHA384_Init "ipf_SHA384_Init"(SHA512_CTX *c) nogil
    int SHA384_Update "ipf_SHA384_Update"(SHA512_CTX *c, const void *d, size_t n) nogil
    int SHA384_Final "ipf_SHA384_Final"(unsigned char *md, SHA512_CTX *c) nogil
    int SHA512_Init "ipf_SHA512_Init"(SHA512_CTX *c) nogil
    int SHA512_Update "ipf_SHA512_Update"(SHA512_CTX *c, const void *d, size_t n) nogil
    int SHA512_Final "ipf_SHA512_Final"(unsigned char *md, SHA512_CTX *c) nogil

cdef extern from "openssl/provider.h" nogil:
    OSSL_PROVIDER *OSSL_PROVIDER_load(OSSL_LIB_CTX *ctx, const char *name)

cdef extern from "openssl/rand.h" nogil:
    int RAND_bytes(unsigned char *buf, int num)

cdef extern from "openssl/crypto.h" nogil:
    int CRYPTO_memcmp(const void *a, const void *b, size_t length)
    void OPENSSL_cleanse(void *ptr, size_t length)

cdef extern from "openssl/err.h" nogil:
    unsigned long ERR_get_error()
    void ERR_clear_error()
    void ERR_error_string_n(unsigned long e, char *buf, size_t length)
