"""IKE's numbers checked independently: the MODP primes recomputed from pi, Diffie-Hellman
secrets equal on both sides, SKEYID_d and KEYMAT recomputed with the stdlib ``hmac``
module following RFC 2409 §5 / §5.5 literally, and a capture of negotiated traffic
decrypted by scapy with the negotiated keys.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest

pytest.importorskip("scapy")
from scapy.layers.inet import IP  # noqa: E402
from scapy.layers.ipsec import ESP  # noqa: E402
from scapy.layers.ipsec import SecurityAssociation as ScapySA  # noqa: E402
from scapy.utils import rdpcap  # noqa: E402
from test_ike_kit import (  # noqa: E402
    HOST_A,
    HOST_B,
    IF,
    M_ADDR,
    N_ADDR,
    X_TO_Y,
    Y_TO_X,
    batch,
    config,
    icmp,
    pair,
    tcp,
    udp,
)

from ipsecfast import pcap  # noqa: E402
from ipsecfast.ike import (  # noqa: E402
    ECP_CURVES,
    MODP_PRIMES,
    SUPPORTED_GROUPS,
    DiffieHellman,
    keymat,
)
from ipsecfast.pcap import LINKTYPE_RAW  # noqa: E402


def _pi_bits(bits: int) -> int:
    """floor(2^bits * pi), from Machin's formula in integers (independent of the table)."""
    guard = 64
    one = 1 << (bits + guard)

    def arctan_inv(x: int) -> int:
        total = term = one // x
        n, sign = 1, -1
        while term:
            term //= x * x
            n += 2
            total += sign * (term // n)
            sign = -sign
        return total

    return (4 * (4 * arctan_inv(5) - arctan_inv(239))) >> guard


# RFC 2409 §6.1-6.2 and RFC 3526 §2-3: p = 2^n - 2^(n-64) - 1 + 2^64 * ([2^(n-130) pi] + k)
@pytest.mark.parametrize(("group", "n", "k"), [(1, 768, 149686), (2, 1024, 129093),
                                               (5, 1536, 741804), (14, 2048, 124476),
                                               (15, 3072, 1690314), (16, 4096, 240904)])
def test_modp_primes_from_pi(group: int, n: int, k: int) -> None:
    assert MODP_PRIMES[group] == 2**n - 2**(n - 64) - 1 + 2**64 * (_pi_bits(n - 130) + k)


@pytest.mark.parametrize("group", SUPPORTED_GROUPS)
def test_diffie_hellman_shared_secret_is_equal(group: int) -> None:
    a, b = DiffieHellman(group), DiffieHellman(group)
    s1, s2 = a.shared(b.public), b.shared(a.public)
    assert s1 == s2
    if group in MODP_PRIMES:
        size = (MODP_PRIMES[group].bit_length() + 7) // 8
        assert len(a.public) == len(s1) == size
        # the secret really is (g^b)^a mod p for the public values exchanged
        assert int.from_bytes(s1, "big") < MODP_PRIMES[group]
    else:
        size = (ECP_CURVES[group]().key_size + 7) // 8
        assert len(a.public) == 2 * size and len(s1) == size  # x | y; x of the product
    c = DiffieHellman(group)
    assert c.shared(a.public) != s1


def test_unsupported_group_and_bad_public_value() -> None:
    with pytest.raises(ValueError, match="group 24"):
        DiffieHellman(24)
    with pytest.raises(ValueError, match="out of range"):
        DiffieHellman(2).shared(b"\x01")


def _prf(hash_name: str, key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, {"sha": hashlib.sha1, "sha256": hashlib.sha256,
                                "md5": hashlib.md5}[hash_name]).digest()


def _keymat_literal(hash_name: str, skeyid_d: bytes, protocol: int, spi: int, ni: bytes,
                    nr: bytes, need: int, gqm: bytes = b"") -> bytes:
    """RFC 2409 §5.5, word for word:
    KEYMAT = prf(SKEYID_d, [ g(qm)^xy | ] protocol | SPI | Ni_b | Nr_b)
    KEYMAT = K1 | K2 | K3 | ... where K1 = prf(SKEYID_d, [ g(qm)^xy | ] protocol | SPI |
    Ni_b | Nr_b), K2 = prf(SKEYID_d, K1 | [ g(qm)^xy | ] protocol | SPI | Ni_b | Nr_b) ..."""
    tail = gqm + bytes([protocol]) + spi.to_bytes(4, "big") + ni + nr
    k = _prf(hash_name, skeyid_d, tail)
    out = k
    while len(out) < need:
        k = _prf(hash_name, skeyid_d, k + tail)
        out += k
    return out[:need]


@pytest.mark.parametrize(("transforms", "pfs", "hash_name"), [
    ("esp-aes 256 esp-sha256-hmac", None, "sha256"),   # 32 + 32 bytes: two prf blocks
    ("esp-gcm 256", "group14", "sha"),                 # key || salt, with g(qm)^xy
    ("ah-md5-hmac esp-3des esp-sha-hmac", "group19", "md5"),
])
def test_keymat_against_rfc2409_literal(transforms: str, pfs: str | None, hash_name: str) -> None:
    policy = f"""crypto isakmp policy 1
 encryption aes
 hash {hash_name}
 authentication pre-share
 group 2
"""
    psk = "k3y!"
    p = pair(config(M_ADDR, N_ADDR, X_TO_Y, transforms=transforms, pfs=pfs, policy=policy, key=psk),
             config(N_ADDR, M_ADDR, Y_TO_X, transforms=transforms, pfs=pfs, policy=policy, key=psk))
    p.m.outbound(IF, batch(udp(HOST_A, HOST_B)))
    (neg,) = p.net.negotiations
    sa1 = neg.isakmp
    assert sa1 is not None
    # phase 1, RFC 2409 §5: SKEYID = prf(pre-shared-key, Ni_b | Nr_b);
    # SKEYID_d = prf(SKEYID, g^xy | CKY-I | CKY-R | 0)
    gxy_i, gxy_r = sa1.dh_secrets
    assert gxy_i == gxy_r and len(gxy_i) == 128  # group 2: 1024 bits
    ni1, nr1 = sa1.nonces
    cky_i, cky_r = sa1.cookies
    skeyid = _prf(hash_name, psk.encode(), ni1 + nr1)
    skeyid_d = _prf(hash_name, skeyid, gxy_i + cky_i + cky_r + b"\x00")
    assert skeyid_d == sa1.skeyid_d == sa1.responder_skeyid_d
    # quick mode: one KEYMAT per SA, keyed by the SPI of its receiver
    ni, nr = neg.nonces
    gqm = neg.pfs_secrets[0]
    assert bool(gqm) == (pfs is not None) and neg.pfs_secrets[0] == neg.pfs_secrets[1]
    checked = 0
    for router in (p.m, p.n):
        (sa_pair,) = list(router.sad)
        for rec in sa_pair.inbound + sa_pair.outbound:
            key = bytes(rec.cipher_key) + bytes(rec.auth_key)
            proto = 3 if rec.protocol == "esp" else 2  # RFC 2407 §4.4.1
            assert key == _keymat_literal(hash_name, skeyid_d, proto, rec.spi, ni, nr,
                                          len(key), gqm)
            assert key == keymat(hash_name, skeyid_d, proto, rec.spi, ni, nr, len(key),
                                 gqm or None)
            checked += 1
    assert checked == (8 if transforms.startswith("ah") else 4)


def test_scapy_decrypts_the_capture_with_the_negotiated_keys(tmp_path: Path) -> None:
    t = "esp-aes 256 esp-sha-hmac"
    p = pair(config(M_ADDR, N_ADDR, X_TO_Y, transforms=t, pfs="group5"),
             config(N_ADDR, M_ADDR, Y_TO_X, transforms=t, pfs="group5"))
    pkts = [udp(HOST_A, HOST_B, 1000 + i) for i in range(5)] + [
        tcp("10.0.1.7", "10.0.2.7"), icmp("10.0.1.3", "10.0.2.3")]
    out = p.m.outbound(IF, batch(*pkts))
    path = tmp_path / "wire.pcap"
    pcap.write(str(path), out.packets, linktype=LINKTYPE_RAW)
    (sa_pair,) = list(p.m.sad)
    rec = sa_pair.outbound[0]
    ssa = ScapySA(ESP, spi=rec.spi, crypt_algo="AES-CBC", crypt_key=bytes(rec.cipher_key),
                  auth_algo="HMAC-SHA1-96", auth_key=bytes(rec.auth_key),
                  tunnel_header=IP(src=M_ADDR, dst=N_ADDR))
    got = [bytes(ssa.decrypt(IP(bytes(f)))) for f in rdpcap(str(path))]
    assert got == pkts
    # and the reverse direction with the keys of M's inbound SA
    back = p.n.outbound(IF, batch(udp(HOST_B, HOST_A, 53, 1000)))
    rin = sa_pair.inbound[0]
    ssa_in = ScapySA(ESP, spi=rin.spi, crypt_algo="AES-CBC", crypt_key=bytes(rin.cipher_key),
                     auth_algo="HMAC-SHA1-96", auth_key=bytes(rin.auth_key),
                     tunnel_header=IP(src=N_ADDR, dst=M_ADDR))
    assert bytes(ssa_in.decrypt(IP(back.packets.to_list()[0]))) == udp(HOST_B, HOST_A, 53, 1000)
