"""IKE between Router objects in one process: ISAKMP / Oakley decisions and keys (RFC 2409).

There is no wire protocol. ``Network`` holds routers by the addresses of their
interfaces and is every member's ``negotiator``: an ACQUIRE (outbound traffic of a static
``ipsec-isakmp`` entry without SAs) or a rekey request (a soft lifetime) makes it run,
in the same call, what IKE would decide between the two configurations:

* **Phase 1** (main mode, pre-shared keys): the initiator's ``crypto isakmp policy`` list
  in priority order against the responder's; the first pair equal in encryption, hash,
  authentication and Diffie-Hellman group wins, lifetime = the lower of the two. Each
  side takes the ``crypto isakmp key`` for the other's address (the most specific one);
  a real Diffie-Hellman exchange (MODP groups 1, 2 of RFC 2409 §6, 5, 14, 15, 16 of
  RFC 3526; ECP groups 19, 20, 21 of RFC 5903) gives g^xy; SKEYID = prf(pre-shared key, Ni_b | Nr_b),
  SKEYID_d / _a / _e as RFC 2409 §5, prf = HMAC of the policy's hash. Each side derives
  them with its own key and the responder checks HASH_I (RFC 2409 §5.4): different keys
  fail there, as on the wire.
* **Phase 2** (quick mode): the initiator proposes its entry's transform sets in priority
  order, its PFS group and the flow of the matched ``permit`` (or the host pair with
  ``set security-association level per-host``). The responder looks for a static
  ``ipsec-isakmp`` entry that names the initiator as a peer and whose mirror-image ACL
  permits a flow containing the proposal, else a dynamic-map entry whose ACL (if any)
  permits it; the entry must have a transform set equal to one proposed (transforms and
  mode) and, when either side asks for PFS, the same group. Lifetimes: the lower of
  both sides' (seconds and kilobytes). KEYMAT per RFC 2409 §5.5 for each SA (each side's
  inbound SPI), expanded to what the transform needs; both routers install the pair.
* A **dynamic-map** responder installs a temporary crypto map entry filled in with the
  negotiated values; it lives as long as one of its SAs does (``temporary_entries``,
  ``show crypto map``) and goes when the router deletes the last one.
* **Rekey**: at a static entry's soft lifetime new SAs are negotiated; traffic moves to
  them (the new pair is the flow's outbound pair) and the old inbound SAs stay until
  they expire, so nothing in flight is lost. A temporary entry whose SAs carried
  traffic requests new SAs from its peer with the negotiated values.
* **Load sharing**: with several ``set peer`` the peer last heard from for the flow (by
  negotiation or by traffic received) takes the flow's traffic and is tried first,
  then the others in configuration order; a failed attempt (unreachable, phase 1 or
  phase 2 refused) moves on to the next peer.

Every failure is a ``Failure`` in ``net.failures`` (and a line in ``net.log``), and the
phase 1 attempts are in ``show crypto isakmp sa`` with their IOS state.

Choices where IOS / the seed leave room are listed in ``Network``'s docstring.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography.hazmat.primitives.asymmetric import dh, ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .acl import AccessList, Ace, AddressMatch
from .check import Box, ace_boxes, is_plain, is_subset, mirror_box
from .config import IsakmpKey, IsakmpPolicy, TransformSet
from .exceptions import InternalError
from .router import AcquireRequest, Flow, RekeyRequest, Router, RouterEntry, SaKeys
from .sad import SaPair

__all__ = [
    "Network",
    "Failure",
    "Negotiation",
    "IsakmpSa",
    "TemporaryEntry",
    "DiffieHellman",
    "MODP_PRIMES",
    "ECP_CURVES",
    "SUPPORTED_GROUPS",
    "prf",
    "skeyid_psk",
    "skeyid_derived",
    "keymat",
    "PROTO_IPSEC_AH",
    "PROTO_IPSEC_ESP",
]

# RFC 2407 §4.4.1: the protocol octet that goes into KEYMAT
PROTO_IPSEC_AH = 2
PROTO_IPSEC_ESP = 3
_PROTO_ID = {"ah": PROTO_IPSEC_AH, "esp": PROTO_IPSEC_ESP}

MIN_SPI = 256  # IOS: SPIs 0-255 are reserved
NONCE_BYTES = 16
# Network.log, .negotiations and .failures keep at least their last LOG_LINES entries, at
# most twice as many (trimmed in halves: amortised O(1) per entry)
LOG_LINES = 10_000


def _bounded(history: list[Any]) -> None:
    if len(history) > 2 * LOG_LINES:
        del history[:-LOG_LINES]

# ---------------------------------------------------------------------------------------
# Diffie-Hellman groups


def _hex(text: str) -> int:
    return int("".join(text.split()), 16)


_OAKLEY_HEAD = """
FFFFFFFF FFFFFFFF C90FDAA2 2168C234 C4C6628B 80DC1CD1 29024E08 8A67CC74 020BBEA6 3B139B22
514A0879 8E3404DD EF9519B3 CD3A431B 302B0A6D F25F1437 4FE1356D 6D51C245 E485B576 625E7EC6
F44C42E9"""

# Each prime is 2^n - 2^(n-64) - 1 + 2^64 * ([2^(n-130) pi] + k); tests/test_ike_crypto.py
# recomputes them from pi.
MODP_PRIMES: dict[int, int] = {
    # RFC 2409 §6.1: First Oakley Group, 768 bits
    1: _hex(_OAKLEY_HEAD + "A63A3620 FFFFFFFF FFFFFFFF"),
    # RFC 2409 §6.2: Second Oakley Group, 1024 bits
    2: _hex(_OAKLEY_HEAD + """A637ED6B 0BFF5CB6 F406B7ED EE386BFB 5A899FA5 AE9F2411 7C4B1FE6
        49286651 ECE65381 FFFFFFFF FFFFFFFF"""),
    # RFC 3526 §2: 1536-bit MODP Group (group 5)
    5: _hex(_OAKLEY_HEAD + """A637ED6B 0BFF5CB6 F406B7ED EE386BFB 5A899FA5 AE9F2411 7C4B1FE6
        49286651 ECE45B3D C2007CB8 A163BF05 98DA4836 1C55D39A 69163FA8 FD24CF5F 83655D23
        DCA3AD96 1C62F356 208552BB 9ED52907 7096966D 670C354E 4ABC9804 F1746C08 CA237327
        FFFFFFFF FFFFFFFF"""),
    # RFC 3526 §3: 2048-bit MODP Group (group 14)
    14: _hex(_OAKLEY_HEAD + """A637ED6B 0BFF5CB6 F406B7ED EE386BFB 5A899FA5 AE9F2411 7C4B1FE6
        49286651 ECE45B3D C2007CB8 A163BF05 98DA4836 1C55D39A 69163FA8 FD24CF5F 83655D23
        DCA3AD96 1C62F356 208552BB 9ED52907 7096966D 670C354E 4ABC9804 F1746C08 CA18217C
        32905E46 2E36CE3B E39E772C 180E8603 9B2783A2 EC07A28F B5C55DF0 6F4C52C9 DE2BCBF6
        95581718 3995497C EA956AE5 15D22618 98FA0510 15728E5A 8AACAA68 FFFFFFFF FFFFFFFF"""),
    # RFC 3526 §4: 3072-bit MODP Group (group 15)
    15: _hex("""FFFFFFFF FFFFFFFF C90FDAA2 2168C234 C4C6628B 80DC1CD1 29024E08 8A67CC74 020BBEA6 3B139B22
        514A0879 8E3404DD EF9519B3 CD3A431B 302B0A6D F25F1437 4FE1356D 6D51C245 E485B576 625E7EC6
        F44C42E9 A637ED6B 0BFF5CB6 F406B7ED EE386BFB 5A899FA5 AE9F2411 7C4B1FE6 49286651 ECE45B3D
        C2007CB8 A163BF05 98DA4836 1C55D39A 69163FA8 FD24CF5F 83655D23 DCA3AD96 1C62F356 208552BB
        9ED52907 7096966D 670C354E 4ABC9804 F1746C08 CA18217C 32905E46 2E36CE3B E39E772C 180E8603
        9B2783A2 EC07A28F B5C55DF0 6F4C52C9 DE2BCBF6 95581718 3995497C EA956AE5 15D22618 98FA0510
        15728E5A 8AAAC42D AD33170D 04507A33 A85521AB DF1CBA64 ECFB8504 58DBEF0A 8AEA7157 5D060C7D
        B3970F85 A6E1E4C7 ABF5AE8C DB0933D7 1E8C94E0 4A25619D CEE3D226 1AD2EE6B F12FFA06 D98A0864
        D8760273 3EC86A64 521F2B18 177B200C BBE11757 7A615D6C 770988C0 BAD946E2 08E24FA0 74E5AB31
        43DB5BFC E0FD108E 4B82D120 A93AD2CA FFFFFFFF FFFFFFFF"""),
    # RFC 3526 §5: 4096-bit MODP Group (group 16)
    16: _hex("""FFFFFFFF FFFFFFFF C90FDAA2 2168C234 C4C6628B 80DC1CD1 29024E08 8A67CC74 020BBEA6 3B139B22
        514A0879 8E3404DD EF9519B3 CD3A431B 302B0A6D F25F1437 4FE1356D 6D51C245 E485B576 625E7EC6
        F44C42E9 A637ED6B 0BFF5CB6 F406B7ED EE386BFB 5A899FA5 AE9F2411 7C4B1FE6 49286651 ECE45B3D
        C2007CB8 A163BF05 98DA4836 1C55D39A 69163FA8 FD24CF5F 83655D23 DCA3AD96 1C62F356 208552BB
        9ED52907 7096966D 670C354E 4ABC9804 F1746C08 CA18217C 32905E46 2E36CE3B E39E772C 180E8603
        9B2783A2 EC07A28F B5C55DF0 6F4C52C9 DE2BCBF6 95581718 3995497C EA956AE5 15D22618 98FA0510
        15728E5A 8AAAC42D AD33170D 04507A33 A85521AB DF1CBA64 ECFB8504 58DBEF0A 8AEA7157 5D060C7D
        B3970F85 A6E1E4C7 ABF5AE8C DB0933D7 1E8C94E0 4A25619D CEE3D226 1AD2EE6B F12FFA06 D98A0864
        D8760273 3EC86A64 521F2B18 177B200C BBE11757 7A615D6C 770988C0 BAD946E2 08E24FA0 74E5AB31
        43DB5BFC E0FD108E 4B82D120 A9210801 1A723C12 A787E6D7 88719A10 BDBA5B26 99C32718 6AF4E23C
        1A946834 B6150BDA 2583E9CA 2AD44CE8 DBBBC2DB 04DE8EF9 2E8EFC14 1FBECAA6 287C5947 4E6BC05D
        99B2964F A090C3A2 233BA186 515BE7ED 1F612970 CEE2D7AF B81BDD76 2170481C D0069127 D5B05AA9
        93B4EA98 8D8FDDC1 86FFB7DC 90A6C08F 4DF435C9 34063199 FFFFFFFF FFFFFFFF"""),
}
MODP_GENERATOR = 2

# RFC 5903 §3: groups 19, 20, 21 = the 256-, 384- and 521-bit random ECP groups
ECP_CURVES: dict[int, Callable[[], ec.EllipticCurve]] = {
    19: ec.SECP256R1, 20: ec.SECP384R1, 21: ec.SECP521R1}
SUPPORTED_GROUPS = tuple(sorted(set(MODP_PRIMES) | set(ECP_CURVES)))
GROUP_BITS = {1: 768, 2: 1024, 5: 1536, 14: 2048, 15: 3072, 16: 4096, 19: 256, 20: 384,
              21: 521, 24: 2048}


class DiffieHellman:
    """One side of a Diffie-Hellman exchange in an IKE group.

    ``public``: the KE payload's key exchange data (MODP: g^x mod p, big-endian, as long
    as p, RFC 2409 §5; ECP: x | y, RFC 5903 §7). ``shared(peer_public)``: g^xy (MODP:
    as long as p; ECP: the x coordinate, RFC 5903 §7)."""

    def __init__(self, group: int) -> None:
        if group not in SUPPORTED_GROUPS:
            raise ValueError(f"Diffie-Hellman group {group} is not supported "
                             f"(supported: {', '.join(map(str, SUPPORTED_GROUPS))})")
        self.group = group
        with warnings.catch_warnings():
            # cryptography flags finite-field DH as deprecated; IKEv1 needs it
            warnings.simplefilter("ignore")
            if group in MODP_PRIMES:
                p = MODP_PRIMES[group]
                self._size = (p.bit_length() + 7) // 8
                params = dh.DHParameterNumbers(p, MODP_GENERATOR).parameters()
                self._dh: Any = params.generate_private_key()
                y = self._dh.public_key().public_numbers().y
                self.public = int(y).to_bytes(self._size, "big")
                self._params = params
            else:
                curve = ECP_CURVES[group]()
                self._curve = curve
                self._dh = ec.generate_private_key(curve)
                point = self._dh.public_key().public_bytes(Encoding.X962,
                                                           PublicFormat.UncompressedPoint)
                self.public = point[1:]  # drop the 0x04 prefix: x | y

    def shared(self, peer_public: bytes) -> bytes:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if self.group in MODP_PRIMES:
                p = MODP_PRIMES[self.group]
                y = int.from_bytes(peer_public, "big")
                if not 1 < y < p - 1:
                    raise ValueError("peer's public value is out of range")
                pub = dh.DHPublicNumbers(y, self._params.parameter_numbers()).public_key()
                secret = self._dh.exchange(pub)
                return bytes(secret).rjust(self._size, b"\0")
            pub_ec = ec.EllipticCurvePublicKey.from_encoded_point(self._curve,
                                                                   b"\x04" + peer_public)
            return bytes(self._dh.exchange(ec.ECDH(), pub_ec))


# ---------------------------------------------------------------------------------------
# RFC 2409 §5 key derivation

_HASH_NAMES = {"md5": "md5", "sha": "sha1", "sha256": "sha256", "sha384": "sha384",
               "sha512": "sha512"}


def prf(hash_name: str, key: bytes, data: bytes) -> bytes:
    """RFC 2409 §4: the negotiated PRF is the HMAC version of the negotiated hash."""
    return hmac.new(key, data, _HASH_NAMES.get(hash_name, hash_name)).digest()


def skeyid_psk(hash_name: str, psk: bytes, ni_b: bytes, nr_b: bytes) -> bytes:
    """RFC 2409 §5: for pre-shared keys, SKEYID = prf(pre-shared-key, Ni_b | Nr_b)."""
    return prf(hash_name, psk, ni_b + nr_b)


def skeyid_derived(hash_name: str, skeyid: bytes, gxy: bytes, cky_i: bytes, cky_r: bytes
                   ) -> tuple[bytes, bytes, bytes]:
    """RFC 2409 §5: (SKEYID_d, SKEYID_a, SKEYID_e)."""
    d = prf(hash_name, skeyid, gxy + cky_i + cky_r + b"\x00")
    a = prf(hash_name, skeyid, d + gxy + cky_i + cky_r + b"\x01")
    e = prf(hash_name, skeyid, a + gxy + cky_i + cky_r + b"\x02")
    return d, a, e


def keymat(hash_name: str, skeyid_d: bytes, protocol: int, spi: int, ni_b: bytes,
           nr_b: bytes, length: int, gqm_xy: bytes | None = None) -> bytes:
    """RFC 2409 §5.5: KEYMAT = prf(SKEYID_d, [g(qm)^xy |] protocol | SPI | Ni_b | Nr_b),
    expanded as K1 | K2 | ... with Kn = prf(SKEYID_d, Kn-1 | [g(qm)^xy |] protocol | SPI |
    Ni_b | Nr_b) until ``length`` bytes are there."""
    seed = (gqm_xy or b"") + bytes([protocol]) + spi.to_bytes(4, "big") + ni_b + nr_b
    out = b""
    k = b""
    while len(out) < length:
        k = prf(hash_name, skeyid_d, k + seed)
        out += k
    return out[:length]


# ---------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True)
class Failure:
    """A negotiation that did not bring SAs up (``phase`` 0: the peer did not answer)."""

    time: float
    initiator: str
    responder: str
    phase: int
    reason: str
    entry: str = ""

    def __str__(self) -> str:
        what = "peer" if self.phase == 0 else f"phase {self.phase}"
        return f"{self.initiator} -> {self.responder}: {what}: {self.reason}"


@dataclass(eq=False)
class IsakmpSa:
    """A phase 1 (ISAKMP) SA, or a failed attempt at one. ``dst`` is the responder,
    ``src`` the initiator, as IOS shows them on both sides."""

    conn_id: int
    src: str
    dst: str
    state: str  # QM_IDLE (up), MM_NO_STATE (no policy), MM_KEY_EXCH (authentication)
    created: float
    lifetime: int = 0
    policy: IsakmpPolicy | None = None  # the initiator's matching policy
    responder_policy: IsakmpPolicy | None = None
    alive: bool = False
    skeyid_d: bytes = field(default=b"", repr=False)
    hash_name: str = "sha"
    # what the tests compare: each side's own g^xy and SKEYID_d
    dh_secrets: tuple[bytes, bytes] = field(default=(b"", b""), repr=False)
    responder_skeyid_d: bytes = field(default=b"", repr=False)
    nonces: tuple[bytes, bytes] = field(default=(b"", b""), repr=False)  # Ni_b, Nr_b
    cookies: tuple[bytes, bytes] = field(default=(b"", b""), repr=False)  # CKY-I, CKY-R

    @property
    def status(self) -> str:
        return "ACTIVE" if self.alive else "DELETED"

    def expired(self, now: float) -> bool:
        return now >= self.created + self.lifetime

    def wipe(self) -> None:
        self.alive = False
        self.skeyid_d = self.responder_skeyid_d = b""
        self.dh_secrets = self.nonces = self.cookies = (b"", b"")


@dataclass(eq=False)
class Negotiation:
    """A quick mode that installed SAs on both routers."""

    time: float
    initiator: str
    responder: str
    initiator_entry: str
    responder_entry: str
    initiator_transform_set: str
    responder_transform_set: str
    transforms: str
    mode: str
    flow: str  # the proposal, from the initiator's side
    pfs: int | None
    lifetime_seconds: int
    lifetime_kilobytes: int
    initiator_pair: SaPair = field(repr=False)
    responder_pair: SaPair = field(repr=False)
    rekey: bool = False
    isakmp: IsakmpSa | None = field(default=None, repr=False)
    # the quick mode's inputs, kept so that tests can recompute KEYMAT independently;
    # emptied once both SA pairs are gone (and by ``Network.close``)
    nonces: tuple[bytes, bytes] = field(default=(b"", b""), repr=False)
    pfs_secrets: tuple[bytes, bytes] = field(default=(b"", b""), repr=False)
    spis: dict[str, tuple[int, int]] = field(default_factory=dict)  # proto -> (I in, R in)

    def __str__(self) -> str:
        pfs = f", PFS group{self.pfs}" if self.pfs else ""
        return (f"{self.initiator} -> {self.responder}: {self.flow}: transform set "
                f"{self.initiator_transform_set} ({self.transforms}, {self.mode}){pfs}, "
                f"{self.lifetime_seconds} s / {self.lifetime_kilobytes} KB; "
                f"{self.initiator_entry} <-> {self.responder_entry}"
                + (" (rekey)" if self.rekey else ""))


@dataclass(eq=False)
class TemporaryEntry:
    """What a dynamic-map responder installs when it accepts a request: a crypto map
    entry filled in with the negotiated values, alive while one of its SAs is."""

    map_name: str
    seq: int
    template: str  # "crypto dynamic-map NAME SEQ"
    dynamic_map: str
    entry: int  # router.entries index of the template
    peer: str
    transform_set: str
    transforms: str
    pfs: int | None
    lifetime_seconds: int
    lifetime_kilobytes: int
    ace: Ace  # the flow, as this router's access list would write it
    pairs: list[SaPair] = field(default_factory=list, repr=False)
    patched: bool = False  # the template had no access list: ``ace`` was added to its SPD
    # the negotiated flow, this router's side first (the mirror image of the peer's
    # proposal): what the entry proposes when it requests new SAs
    negotiated: Ace | None = None

    @property
    def alive(self) -> bool:
        return any(p.alive for p in self.pairs)

    def render(self, interfaces: Sequence[str]) -> list[str]:
        """``show crypto map`` lines for the entry."""
        out = [
            f'Crypto Map "{self.map_name}" {self.seq} ipsec-isakmp (temporary entry)',
            f"        Dynamic map template tag: {self.dynamic_map}",
            f"        Peer = {self.peer}",
            "        Extended IP access list (dynamic)",
            f"            access-list dynamic {self.ace.render()}",
            f"        Current peer: {self.peer}",
            f"        Security association lifetime: {self.lifetime_kilobytes} kilobytes/"
            f"{self.lifetime_seconds} seconds",
            f"        PFS (Y/N): {'Y' if self.pfs else 'N'}"
            + (f"\n        DH group:  group{self.pfs}" if self.pfs else ""),
            "        Transform sets={ ",
            f"                {self.transform_set}:  {{ {self.transforms}  }} , ",
            "        }",
            f"        Interfaces using crypto map {self.map_name}:",
        ]
        out += [f"                {name}" for name in interfaces]
        return out


class _Refused(Exception):
    """A negotiation step failed; the message says why."""

    def __init__(self, phase: int, reason: str, state: str = "") -> None:
        super().__init__(reason)
        self.phase = phase
        self.reason = reason
        self.state = state


@dataclass
class _Offer:
    """What the responder accepted."""

    entry: RouterEntry
    flow: Flow
    ace: Ace
    initiator_ts: TransformSet
    responder_ts: TransformSet
    pfs: int | None
    negotiated: Ace  # the proposal's mirror image: the flow from the responder's side


@dataclass
class _Proposal:
    """What an initiator proposes in quick mode and where its SAs go: a static entry's
    policy, or a temporary entry's negotiated values when it requests new SAs."""

    entry: RouterEntry
    label: str
    flow: Flow  # the SA scope on the initiator
    ace: Ace  # the proposed flow, the initiator's side first
    transform_sets: list[TransformSet]
    pfs: int | None
    lifetime: tuple[int, int]  # seconds, kilobytes
    temporary: TemporaryEntry | None = None


# ---------------------------------------------------------------------------------------
# Flow helpers


def _ip(a: int) -> str:
    return str(ipaddress.IPv4Address(a))


def _host_ace(src: int, dst: int) -> Ace:
    return Ace(10, "permit", None, AddressMatch(src, 0), None, AddressMatch(dst, 0), None)


def _mirror_ace(ace: Ace) -> Ace:
    return replace(ace, seq=10, action="permit", source=ace.destination,
                   destination=ace.source, source_port=ace.destination_port,
                   destination_port=ace.source_port, lineno=None, line=None, log=None)


def _flow_text(ace: Ace) -> str:
    return ace.render().removeprefix("permit ")


def _group_number(pfs: str | None) -> int | None:
    if pfs is None:
        return None
    return int(pfs.removeprefix("group"))


def _acl_decision(acl: AccessList, want: list[Box]) -> tuple[int, str]:
    """(ACE index whose permit contains all of ``want``, "") or (-1, why not)."""
    for i, ace in enumerate(acl.entries):
        if ace.action == "remark":
            continue
        boxes = ace_boxes(ace)
        overlaps = any(_intersects(w, b) for w in want for b in boxes)
        if ace.action == "deny":
            if overlaps:
                return -1, f"`{ace.render()}` of access list {acl.name} denies part of it"
            continue
        if is_plain(ace) and is_subset(want, boxes):
            return i, ""
    return -1, f"access list {acl.name} does not permit a flow containing it"


def _intersects(a: Box, b: Box) -> bool:
    return all(max(x[0], y[0]) <= min(x[1], y[1]) for x, y in zip(a, b, strict=True))


def _key_for(keys: Iterable[IsakmpKey], address: str) -> IsakmpKey | None:
    """The most specific ``crypto isakmp key`` covering ``address``."""
    best: IsakmpKey | None = None
    best_len = -1
    for k in keys:
        if k.covers(address):
            n = ipaddress.IPv4Network(f"0.0.0.0/{k.mask or '255.255.255.255'}").prefixlen
            if n > best_len:
                best, best_len = k, n
    return best


# ---------------------------------------------------------------------------------------
# The network


class Network:
    """Routers that reach each other, and the IKE negotiations between them.

    ``net.add(router)`` registers the router under every interface address and makes
    ``net`` its negotiator. ``net.set_down(address)`` makes an address stop answering
    (load-sharing tests). Results: ``net.negotiations`` (SAs brought up),
    ``net.failures`` and ``net.log``; ``net.isakmp_sas(router)``,
    ``net.temporary_entries(router)``; ``net.show(router, command)`` answers
    ``crypto isakmp sa``, ``crypto session`` and ``crypto map`` (with temporary entries),
    and passes every other command to ``router.show``.

    Choices where IOS / the seed leave room:

    * The triggering packet is not dropped: the negotiation completes inside the ACQUIRE,
      so the packet that caused it leaves protected (IOS drops it while IKE runs).
    * Only ``authentication pre-share`` is modelled; a matching ``rsa-sig`` /
      ``rsa-encr`` policy fails phase 1 ("not modelled"). A router without any
      ``crypto isakmp policy`` has IOS's default suite (DES, SHA, RSA signatures,
      group 1), so it fails too.
    * ISAKMP lifetime: the lower of the two matching policies'. One ISAKMP SA between
      two addresses serves quick modes in both directions while it lives.
    * PFS: an initiator that asks for a group the responder does not configure gets it
      (IOS accepts PFS it does not demand); a responder that demands PFS refuses a
      proposal without it or with another group.
    * Mode: the transform sets must agree on the mode too (``mode transport`` against
      ``mode tunnel`` is no common set).
    * A ``per-host`` proposal names the host pair with protocol ``ip``; a per-host
      responder refuses a proposal that is not a host pair. A per-host initiator wants a
      per-host responder: a per-ACE responder's newest pair carries the replies of every
      host pair, and the initiator drops those outside that pair's hosts.
    * The responder's SAs cover its own access-list entry (or temporary entry), as the
      router keys SAs by (entry, ACE): in Figure 3 case 3 the responder sends traffic of
      its wider entry into the SA, and the initiator drops what falls outside its own
      flow (``inner-flow-mismatch``).
    * Load sharing: "the last peer heard from" for a flow is the peer of the last
      negotiation for it (as initiator or responder) or the peer whose traffic arrived
      last through one of the flow's SA pairs (``Router.on_traffic_received``): the
      flow's outbound traffic goes to that peer's newest pair from the next packet on
      (``Router.select_outbound``), and a later ACQUIRE tries that peer first. Only
      intact packets count (authenticated, decrypted, inside the pair's flow).
    * Only the pair that carries its flow's outbound traffic is rekeyed at its soft
      lifetime; a pair the flow has left (a peer heard from later took it) expires.
    * The temporary entry of a dynamic map whose entry has an access list uses that
      entry's SAs; one without an access list gets the negotiated flow as a permit added
      to its part of the SPD while the entry lives (``Router.set_entry_flows``). A
      temporary entry is removed when the router deletes its last SA
      (``Router.on_sa_deleted``): at the router's lifetime check after the last expiry
      (its next packet, ``show``, ``check_lifetimes``), or at ``clear crypto sa``.
    * Temporary entries request new SAs at their soft lifetime, as the seed says
      ("even requesting new security associations if the current ones are expiring
      (based upon the policy specified in the temporary crypto map entry)"): the
      responder initiates a quick mode with its peer proposing the negotiated transform
      set, PFS group, lifetimes and flow. Only if the expiring pair carried traffic
      (Cisco negotiates no new SA for an SA that saw none): an idle flow expires, "and
      the temporary crypto map entry is then removed". When the peer, a static entry,
      reaches its soft lifetime first, it rekeys instead and the entry lives on.
    """

    def __init__(self) -> None:
        self.routers: list[Router] = []
        self._by_address: dict[str, Router] = {}
        self.down: set[str] = set()
        self.failures: list[Failure] = []
        self.negotiations: list[Negotiation] = []
        self.log: list[str] = []  # events, oldest first (bounded: LOG_LINES)
        self._isakmp: list[IsakmpSa] = []
        self._conn_id = 1000
        self._temporary: dict[int, list[TemporaryEntry]] = {}
        # (id(router), SA scope) -> the peer last heard from for the flow
        self._last_peer: dict[tuple[int, tuple[int, int, int, int]], str] = {}
        self._partner: dict[int, tuple[Router, SaPair]] = {}  # id(pair) -> other side

    # -- membership ----------------------------------------------------------------------
    def add(self, router: Router) -> Router:
        """Register ``router`` (by each interface address) and become its negotiator."""
        if not isinstance(router, Router):
            raise TypeError("Network.add takes a Router")
        for itf in router.config.interfaces.values():
            if itf.address and not itf.shutdown:
                other = self._by_address.get(itf.address)
                if other is not None and other is not router:
                    raise ValueError(f"address {itf.address} is already used by another router")
        for itf in router.config.interfaces.values():
            if itf.address and not itf.shutdown:
                self._by_address[itf.address] = router
        if router not in self.routers:
            self.routers.append(router)
            router.on_sa_deleted(self._sa_deleted)
            router.on_traffic_received(self._heard)
        router.negotiator = self
        return router

    def router_at(self, address: str) -> Router | None:
        """The router answering at ``address`` (None if none, or the address is down)."""
        if address in self.down:
            return None
        return self._by_address.get(address)

    def set_down(self, address: str, down: bool = True) -> None:
        """Make ``address`` stop (or start again) answering IKE."""
        addr = str(ipaddress.IPv4Address(address))
        if down:
            self.down.add(addr)
        else:
            self.down.discard(addr)

    def name(self, router: Router) -> str:
        host = next((u.text.split()[1] for u in router.config.unparsed
                     if u.text.startswith("hostname ") and len(u.text.split()) > 1), None)
        if host:
            return host
        addrs = [i.address for i in router.config.interfaces.values() if i.address]
        return f"router {addrs[0]}" if addrs else "router"

    # -- the negotiator protocol the Router calls ------------------------------------------
    def acquire(self, router: Router, request: AcquireRequest) -> None:
        """An ACQUIRE: negotiate with the entry's peers, last heard from first. Called
        from inside ``router.outbound``: nothing raises out of it (a failure is recorded)."""
        try:
            self.negotiate(router, request.entry, request.flow, interface=request.interface)
        except ValueError as err:
            self._fail(request.time, request.local or "0.0.0.0", request.peer or "0.0.0.0",
                       0, str(err), router.entries[request.entry].label)

    def rekey(self, router: Router, request: RekeyRequest) -> None:
        """A soft lifetime: negotiate new SAs for the same flow (current peer first). The
        other side's SAs of the pair then raise no rekey of their own. A pair that no
        longer carries its flow's outbound traffic (the flow went to a peer heard from
        later) is left to expire. A temporary entry requests new SAs from its peer with
        its negotiated values if its expiring pair carried traffic."""
        old = router.sad.pairs.get(request.pair)
        if old is not None and router.sad.lookup_outbound(old.domain, old.scope) is not old:
            self._say(f"{request.time:.3f} SAs with {old.peer} for "
                            f"{router.entries[old.entry].label} reached their soft lifetime; "
                            "the flow now goes to another pair: no rekey")
            return
        if router.entries[request.entry].dynamic:
            self._rekey_temporary(router, request, old)
            return
        ifname = None
        if old is not None:
            ifname = next((n for n in router.crypto_interfaces()
                           if router.local_address(n) == old.local), None)
        try:
            neg = self.negotiate(router, request.entry, request.flow, interface=ifname,
                                 first_peer=request.peer, rekey=True)
        except ValueError as err:
            self._fail(request.time, old.local if old else "0.0.0.0", request.peer, 0,
                       str(err), router.entries[request.entry].label)
            return
        partner = self._partner.get(id(old)) if old is not None else None
        if neg is not None and partner is not None:
            partner[1].soft_fired = True  # one rekey per pair of SAs, not one per side

    def _rekey_temporary(self, router: Router, request: RekeyRequest, old: SaPair | None
                         ) -> None:
        """The seed: the router uses the temporary crypto map entry "as a normal entry,
        even requesting new security associations if the current ones are expiring
        (based upon the policy specified in the temporary crypto map entry)". Its policy
        is the negotiated one: the peer, the transform set, PFS group, lifetimes and
        flow. A pair that carried no traffic asks for nothing (as IOS does for SAs idle
        all their life), so that an unused flow expires and its entry goes."""
        temp = None if old is None else next(
            (t for t in self._temporary.get(id(router), []) if old in t.pairs), None)
        if old is None or temp is None:
            return  # a dynamic-map template never initiates
        label = f"{router.entries[temp.entry].label} (temporary entry)"
        if old.encaps == 0 and old.decaps == 0:
            self._say(f"{request.time:.3f} SAs of {label} with {temp.peer} reached "
                            "their soft lifetime without traffic: no new SAs requested")
            return
        try:
            neg = self._negotiate(router, router.entries[temp.entry], request.flow,
                                  old.local, temp.peer, request.time, True, temp)
        except _Refused as err:
            self._fail(request.time, old.local, temp.peer, err.phase, err.reason, label)
            return
        partner = self._partner.get(id(old))
        if neg is not None and partner is not None:
            partner[1].soft_fired = True

    def _say(self, line: str) -> None:
        self.log.append(line)
        _bounded(self.log)

    # -- events from the routers ------------------------------------------------------------
    def _heard(self, router: Router, pairs: Sequence[SaPair]) -> None:
        """Traffic arrived intact through ``pairs``: for each one's flow, its peer is the
        peer last heard from (the seed: "received either traffic or a negotiation
        request from"); the flow's traffic goes to that peer's newest pair."""
        rid = id(router)
        # one decision per flow: of the pairs of one flow from several peers in the same
        # batch, the last one listed (the router orders them by their last intact
        # packet) is the peer heard from last
        last: dict[tuple[int, tuple[int, int, int, int]], SaPair] = {}
        for pair in pairs:
            last[(pair.domain, pair.scope)] = pair
        for pair in last.values():
            self._last_peer[(rid, pair.scope)] = pair.peer
            cur = router.sad.lookup_outbound(pair.domain, pair.scope)
            if cur is None or cur.peer == pair.peer:
                continue
            newest = max((p for p in router.sad if p.domain == pair.domain
                          and p.scope == pair.scope and p.peer == pair.peer),
                         key=lambda p: p.id)
            router.select_outbound(newest)
            self._say(f"{float(router.clock()):.3f} {self.name(router)}: traffic of "
                            f"{router.entries[pair.entry].label} heard from {pair.peer}: "
                            f"its flow goes there (was {cur.peer})")

    def _sa_deleted(self, router: Router, pair: SaPair, reason: str) -> None:
        """A router deleted ``pair``: a temporary entry whose last SA it was goes now."""
        self._partner.pop(id(pair), None)
        temps = self._temporary.get(id(router))
        if temps:
            hit = [t for t in temps if any(p is pair for p in t.pairs)]
            for t in hit:
                t.pairs = [p for p in t.pairs if p.alive]
            gone = [t for t in hit if not t.alive]
            if gone:
                self._remove_temporary(router, gone, "expired" if reason == "expired"
                                       else f"was {reason}")
        self._forget_secrets()

    def _remove_temporary(self, router: Router, gone: list[TemporaryEntry], why: str) -> None:
        live = [t for t in self._temporary.get(id(router), [])
                if not any(t is g for g in gone)]
        self._temporary[id(router)] = live
        now = float(router.clock())
        for t in gone:
            self._say(f"{now:.3f} temporary entry {t.map_name} {t.seq} for {t.peer} "
                            f"removed: its last SA {why}")
        for idx in sorted({t.entry for t in gone if t.patched}):
            _patch_template(router, idx, live)

    # -- negotiation ------------------------------------------------------------------------
    def negotiate(self, router: Router, entry: int, flow: Flow | None = None, *,
                  interface: str | None = None, first_peer: str | None = None,
                  rekey: bool = False) -> Negotiation | None:
        """Initiate for ``router.entries[entry]`` and ``flow`` (default: its first
        permit): try its peers until one brings SAs up. Returns the negotiation, or None
        (the failures are in ``net.failures``)."""
        self._prune()
        re_ = router.entries[entry]
        if re_.dynamic or re_.config.kind != "ipsec-isakmp":
            raise ValueError(f"{re_.label} cannot initiate (only static ipsec-isakmp entries do)")
        if flow is None:
            flow = Flow(re_.first_permit())
        local = self._local(router, re_, interface)
        peers = list(re_.config.peers)
        last = first_peer or self._last_peer.get((id(router), flow.scope(entry)))
        if last in peers:
            peers.remove(last)
            peers.insert(0, last)
        now = float(router.clock())
        for peer in peers:
            try:
                neg = self._negotiate(router, re_, flow, local, peer, now, rekey)
            except _Refused as err:
                self._fail(now, local, peer, err.phase, err.reason, re_.label)
                continue
            return neg
        return None

    def _local(self, router: Router, re_: RouterEntry, interface: str | None) -> str:
        names = [n for n in router.crypto_interfaces()
                 if router.config.interfaces[n].crypto_map == re_.map_name]
        if interface is not None:
            names = [n for n in names if n == interface] or names
        for n in names:
            addr = router.local_address(n)
            if addr is not None:
                return addr
        raise ValueError(f"{re_.label}: no interface with an address uses crypto map "
                         f"{re_.map_name}")

    def _fail(self, now: float, src: str, dst: str, phase: int, reason: str, entry: str
              ) -> None:
        f = Failure(now, src, dst, phase, reason, entry)
        self.failures.append(f)
        _bounded(self.failures)
        self._say(f"{now:.3f} %CRYPTO-4-IKE: negotiation failed: {f}")

    def _responder_interface(self, responder: Router, address: str) -> str:
        for n in responder.crypto_interfaces():
            if responder.local_address(n) == address:
                return n
        raise _Refused(0, f"{address} has no crypto map applied (nothing answers IKE there)")

    def _negotiate(self, ini: Router, re_: RouterEntry, flow: Flow, local: str, peer: str,
                   now: float, rekey: bool, temp: TemporaryEntry | None = None
                   ) -> Negotiation:
        if not _is_ip(peer):
            raise _Refused(0, f"peer {peer} is a host name; only addresses are resolved")
        resp = self.router_at(peer)
        if resp is None:
            why = "is down" if peer in self.down else "has no router on the network"
            raise _Refused(0, f"peer {peer} {why} (no answer to IKE)")
        if resp is ini:
            raise _Refused(0, f"peer {peer} is this router's own address")
        resp_if = self._responder_interface(resp, peer)
        sa1 = self._phase1(ini, resp, local, peer, now)
        prop = (_static_proposal(ini, re_, flow) if temp is None
                else _temporary_proposal(ini, temp, flow))
        offer = self._phase2_decide(prop, resp, resp_if, local)
        return self._quick_mode(ini, prop, local, resp, resp_if, peer, offer, sa1, now,
                                rekey)

    # -- phase 1 ----------------------------------------------------------------------------
    def _phase1(self, ini: Router, resp: Router, local: str, peer: str, now: float) -> IsakmpSa:
        for sa in self._isakmp:
            if sa.alive and sa.expired(now):
                sa.wipe()
                self._say(f"{now:.3f} ISAKMP SA {sa.src} -> {sa.dst} "
                                f"(conn-id {sa.conn_id}) expired")
        for sa in self._isakmp:
            if sa.alive and {sa.src, sa.dst} == {local, peer}:
                return sa
        # keep one past (deleted) SA or failed attempt per address pair, as IOS shows
        # the last one for a while: show crypto isakmp sa stays short under retries
        ends = {local, peer}
        dead = [sa for sa in self._isakmp if not sa.alive and {sa.src, sa.dst} == ends]
        for sa in dead[:-1]:
            self._isakmp.remove(sa)
        self._conn_id += 1
        attempt = IsakmpSa(self._conn_id, local, peer, "MM_NO_STATE", now)
        self._isakmp.append(attempt)
        ip = _policies(ini)
        rp = _policies(resp)
        match = next(((p, q) for p in ip for q in rp if p.parameters() == q.parameters()), None)
        if match is None:
            raise _Refused(1, "no ISAKMP policy matches: the offers "
                              + "; ".join(_policy_text(p) for p in ip)
                              + " were refused by " + "; ".join(_policy_text(q) for q in rp),
                           "MM_NO_STATE")
        p, q = match
        attempt.policy, attempt.responder_policy = p, q
        attempt.lifetime = min(p.lifetime, q.lifetime)
        attempt.hash_name = p.hash
        if p.authentication != "pre-share":
            raise _Refused(1, f"policy {p.priority} authenticates with {p.authentication}; "
                              "only pre-shared keys are modelled")
        if p.group not in SUPPORTED_GROUPS:
            raise _Refused(1, f"Diffie-Hellman group {p.group} is not supported "
                              f"(supported: {', '.join(map(str, SUPPORTED_GROUPS))})")
        k_ini = _key_for(ini.config.isakmp_keys, peer)
        k_resp = _key_for(resp.config.isakmp_keys, local)
        if k_ini is None:
            raise _Refused(1, f"{local} has no crypto isakmp key for {peer}", "MM_NO_STATE")
        if k_resp is None:
            raise _Refused(1, f"{peer} has no crypto isakmp key for {local}", "MM_NO_STATE")
        attempt.state = "MM_KEY_EXCH"
        # main mode messages 3-4: KE and nonces; each side computes g^xy
        di, dr = DiffieHellman(p.group), DiffieHellman(p.group)
        gxy_i, gxy_r = di.shared(dr.public), dr.shared(di.public)
        if gxy_i != gxy_r:
            raise InternalError("Diffie-Hellman: the two sides computed different secrets")
        ni, nr = secrets.token_bytes(NONCE_BYTES), secrets.token_bytes(NONCE_BYTES)
        cky_i, cky_r = secrets.token_bytes(8), secrets.token_bytes(8)
        h = p.hash
        sk_i = skeyid_psk(h, k_ini.key.encode(), ni, nr)
        sk_r = skeyid_psk(h, k_resp.key.encode(), ni, nr)
        d_i, _, _ = skeyid_derived(h, sk_i, gxy_i, cky_i, cky_r)
        d_r, _, _ = skeyid_derived(h, sk_r, gxy_r, cky_i, cky_r)
        # message 5: HASH_I = prf(SKEYID, g^xi | g^xr | CKY-I | CKY-R | SAi_b | IDii_b)
        sai_b = repr(p.parameters()).encode()
        idii_b = bytes([1, 17]) + (500).to_bytes(2, "big") + ipaddress.IPv4Address(local).packed
        hash_i = prf(h, sk_i, di.public + dr.public + cky_i + cky_r + sai_b + idii_b)
        expect = prf(h, sk_r, di.public + dr.public + cky_i + cky_r + sai_b + idii_b)
        if not hmac.compare_digest(hash_i, expect):
            raise _Refused(1, f"pre-shared keys differ: {peer} could not verify HASH_I from "
                              f"{local} (the keys are not shown)", "MM_KEY_EXCH")
        attempt.state = "QM_IDLE"
        attempt.alive = True
        attempt.skeyid_d = d_i
        attempt.responder_skeyid_d = d_r
        attempt.dh_secrets = (gxy_i, gxy_r)
        attempt.nonces, attempt.cookies = (ni, nr), (cky_i, cky_r)
        self._say(f"{now:.3f} ISAKMP SA {local} -> {peer} up (conn-id "
                        f"{attempt.conn_id}, policy {p.priority}/{q.priority}: "
                        f"{_policy_text(p)}, lifetime {attempt.lifetime} s)")
        return attempt

    # -- phase 2 ----------------------------------------------------------------------------
    def _phase2_decide(self, prop: _Proposal, resp: Router, resp_if: str, local: str
                       ) -> _Offer:
        proposals, prop_ace, flow, pfs_i = prop.transform_sets, prop.ace, prop.flow, prop.pfs
        want = [mirror_box(b) for b in ace_boxes(prop_ace)]
        host_pair = flow.source is not None
        map_name = resp.config.interfaces[resp_if].crypto_map
        entries = [e for e in resp.entries if e.map_name == map_name]
        static = [e for e in entries if not e.dynamic and e.config.kind == "ipsec-isakmp"
                  and local in e.config.peers and e.spd.acl is not None]
        templates = [e for e in entries if e.dynamic
                     and (not e.config.peers or local in e.config.peers)]
        reasons: list[str] = []
        for ey in static + templates:
            try:
                return self._offer(resp, ey, proposals, want, prop_ace, host_pair, pfs_i, flow)
            except _Refused as err:
                reasons.append(err.reason)
        if not reasons:
            raise _Refused(2, f"no crypto map entry of {map_name} at {self.name(resp)} names "
                              f"{local} as a peer, and it has no dynamic map")
        raise _Refused(2, f"proposal for `{_flow_text(prop_ace)}` refused: "
                          + "; ".join(reasons))

    def _offer(self, resp: Router, ey: RouterEntry, proposals: list[TransformSet],
               want: list[Box], prop_ace: Ace, host_pair: bool, pfs_i: int | None,
               flow: Flow) -> _Offer:
        label = ey.label
        # flows: the mirror image of the proposal must be permitted by one permit entry
        if ey.spd.drop_all:
            raise _Refused(2, f"{label}: its access list is empty or undefined "
                              "(the router drops all packets)")
        # (ey.spd.acl of such an entry may hold its temporary entries' flows)
        acl = None if ey.config.match_address is None else ey.spd.acl
        negotiated = _mirror_ace(prop_ace)
        if acl is None:  # a dynamic entry without match address accepts any flow
            ace_idx = -1
            ace = negotiated
        else:
            ace_idx, why = _acl_decision(acl, want)
            if ace_idx < 0:
                raise _Refused(2, f"{label}: {why} (Figure 3, case 4)")
            ace = acl.entries[ace_idx]
        if ey.per_host and not host_pair:
            raise _Refused(2, f"{label} has per-host SAs and the proposal is not a host pair")
        # transform sets: the first proposal the responder has (same transforms and mode)
        mine = [resp.config.transform_sets[n] for n in ey.config.transform_sets
                if n in resp.config.transform_sets]
        chosen = next(((p, m) for p in proposals for m in mine
                       if p.transforms == m.transforms and p.mode == m.mode), None)
        if chosen is None:
            offered = ", ".join(f"{p.name} ({p.transforms.render()}, {p.mode})" for p in proposals)
            has = ", ".join(f"{m.name} ({m.transforms.render()}, {m.mode})" for m in mine)
            raise _Refused(2, f"{label}: no transform set in common (offered {offered}; "
                              f"it has {has or 'none'})")
        pfs_r = _group_number(ey.config.pfs)
        if pfs_r is not None and pfs_i != pfs_r:
            got = f"group{pfs_i}" if pfs_i else "no PFS"
            raise _Refused(2, f"{label} demands PFS group{pfs_r}, the proposal has {got}")
        pfs = pfs_i if pfs_i is not None else pfs_r
        if pfs is not None and pfs not in SUPPORTED_GROUPS:
            raise _Refused(2, f"PFS group{pfs} is not supported")
        if ey.per_host:
            assert flow.source is not None and flow.destination is not None
            rflow = Flow(-1, flow.destination, flow.source)  # our side first
        else:
            rflow = Flow(ace_idx)
        return _Offer(ey, rflow, ace, chosen[0], chosen[1], pfs, negotiated)

    def _quick_mode(self, ini: Router, prop: _Proposal, local: str,
                    resp: Router, resp_if: str, peer: str, offer: _Offer, sa1: IsakmpSa,
                    now: float, rekey: bool) -> Negotiation:
        re_, flow = prop.entry, prop.flow
        h = sa1.hash_name
        ni, nr = secrets.token_bytes(NONCE_BYTES), secrets.token_bytes(NONCE_BYTES)
        gqm: bytes | None = None
        pfs_pair = (b"", b"")
        if offer.pfs is not None:
            pi, pr = DiffieHellman(offer.pfs), DiffieHellman(offer.pfs)
            gi, gr = pi.shared(pr.public), pr.shared(pi.public)
            if gi != gr:
                raise InternalError("Diffie-Hellman (PFS): the two sides computed different "
                                    "secrets")
            gqm = gi
            pfs_pair = (gi, gr)
        t = offer.initiator_ts.transforms
        protos = [p for p, has in (("esp", t.has_esp), ("ah", t.has_ah)) if has]
        lens = {"esp": (t.cipher_key_length, t.auth_key_length), "ah": (0, t.ah_key_length)}
        spis: dict[str, tuple[int, int]] = {}
        keys_i_in: dict[str, SaKeys] = {}
        keys_r_in: dict[str, SaKeys] = {}
        taken_i: set[int] = set()
        taken_r: set[int] = set()
        for proto in protos:
            spi_i = _new_spi(ini, taken_i)
            spi_r = _new_spi(resp, taken_r)
            spis[proto] = (spi_i, spi_r)
            ck, ak = lens[proto]
            for spi, d, out in ((spi_i, sa1.skeyid_d, keys_i_in),
                                (spi_r, sa1.skeyid_d, keys_r_in)):
                km = keymat(h, d, _PROTO_ID[proto], spi, ni, nr, ck + ak, gqm)
                out[proto] = SaKeys(spi, km[:ck], km[ck:])
            # the responder derives the same keys from its own SKEYID_d
            for spi, mine in ((spi_i, keys_i_in[proto]), (spi_r, keys_r_in[proto])):
                other = keymat(h, sa1.responder_skeyid_d, _PROTO_ID[proto], spi, ni, nr,
                               ck + ak, gqm)
                if other != mine.cipher_key + mine.auth_key:
                    raise InternalError("KEYMAT differs between the two sides")
        secs_i, kb_i = prop.lifetime
        secs_r, kb_r = resp.config.lifetime(offer.entry.config)
        secs, kb = min(secs_i, secs_r), min(kb_i, kb_r)
        ini_if = next(n for n in ini.crypto_interfaces() if ini.local_address(n) == local)
        try:
            rflow = offer.flow
            temp = None
            if offer.entry.dynamic:
                temp = self._temporary_entry(resp, offer, local, secs, kb)
                if temp.patched:
                    rflow = Flow(_patched_index(resp, offer.entry, temp))
            # rekey=True: static entries rekey, and so do temporary entries (the seed)
            pair_r = resp.install_sas(
                offer.entry.index, local, keys_r_in, keys_i_in, flow=rflow,
                interface=resp_if, transform_set=offer.responder_ts.name,
                lifetime_seconds=secs, lifetime_kilobytes=kb, rekey=True)
            if temp is not None:
                temp.pairs.append(pair_r)
            pair_i = ini.install_sas(
                re_.index, peer, keys_i_in, keys_r_in, flow=flow, interface=ini_if,
                transform_set=offer.initiator_ts.name, lifetime_seconds=secs,
                lifetime_kilobytes=kb, rekey=True)
        except ValueError as err:
            raise _Refused(2, f"the SAs could not be installed: {err}") from err
        if prop.temporary is not None:  # a temporary entry's new SAs
            prop.temporary.pairs.append(pair_i)
            prop.temporary.lifetime_seconds, prop.temporary.lifetime_kilobytes = secs, kb
        self._partner[id(pair_i)] = (resp, pair_r)
        self._partner[id(pair_r)] = (ini, pair_i)
        # each side heard from the other for this flow: its traffic goes there
        self._last_peer[(id(ini), pair_i.scope)] = peer
        self._last_peer[(id(resp), pair_r.scope)] = local
        ts = offer.initiator_ts
        neg = Negotiation(
            now, local, peer, prop.label, offer.entry.label + (
                " (temporary entry)" if offer.entry.dynamic else ""),
            ts.name, offer.responder_ts.name, ts.transforms.render(), ts.mode,
            _flow_text(prop.ace), offer.pfs, secs, kb, pair_i, pair_r, rekey,
            sa1, (ni, nr), pfs_pair, spis)
        self.negotiations.append(neg)
        _bounded(self.negotiations)
        self._say(f"{now:.3f} %CRYPTO-5-SESSION_STATUS: IPsec SAs up: {neg}")
        return neg

    # -- temporary entries ------------------------------------------------------------------
    def _temporary_entry(self, resp: Router, offer: _Offer, peer: str, secs: int, kb: int
                         ) -> TemporaryEntry:
        ey = offer.entry
        temps = self._temporary.setdefault(id(resp), [])
        flow = offer.ace.render()
        same_flow = [t for t in temps if t.entry == ey.index and t.alive
                     and t.ace.render() == flow]
        for t in same_flow:
            if t.peer == peer:
                # new SAs for a live entry (a rekey): the entry lives on, with the values
                # of this negotiation
                t.transform_set = offer.responder_ts.name
                t.transforms = offer.responder_ts.transforms.render()
                t.pfs, t.lifetime_seconds, t.lifetime_kilobytes = offer.pfs, secs, kb
                return t
        temp = TemporaryEntry(
            ey.map_name, ey.seq, ey.label, ey.config.map_name, ey.index, peer,
            offer.responder_ts.name, offer.responder_ts.transforms.render(), offer.pfs,
            secs, kb, same_flow[0].ace if same_flow else offer.ace,
            patched=ey.config.match_address is None, negotiated=offer.negotiated)
        # the same flow from another peer shares the permit (the SA scope), so that the
        # new SAs take the flow's traffic: the peer last heard from
        temps.append(temp)
        if temp.patched:
            _patch_template(resp, ey.index, temps)
        return temp

    def temporary_entries(self, router: Router) -> list[TemporaryEntry]:
        """The live temporary crypto map entries of ``router``. The router's lifetime
        check runs first (``router.check_lifetimes``), so an entry whose last SA is past
        its lifetime by the router's clock is gone: the router tells the network when it
        deletes SAs (``Router.on_sa_deleted``), and the entry goes at that moment."""
        router.check_lifetimes()
        self._prune()
        return list(self._temporary.get(id(router), []))

    def _forget_secrets(self) -> None:
        # the quick mode's secrets go with the last SA they keyed
        for neg in self.negotiations:
            if neg.pfs_secrets != (b"", b"") and not (neg.initiator_pair.alive
                                                      or neg.responder_pair.alive):
                neg.pfs_secrets = neg.nonces = (b"", b"")

    def _prune(self) -> None:
        """A safety net: temporary entries normally go when the router deletes their
        last SA (``_sa_deleted``); one left without SAs (e.g. its SAs could not be
        installed) goes here."""
        self._forget_secrets()
        for router in self.routers:
            temps = self._temporary.get(id(router))
            if not temps:
                continue
            for t in temps:
                t.pairs = [p for p in t.pairs if p.alive]
            gone = [t for t in temps if not t.alive]
            if gone:
                self._remove_temporary(router, gone, "is gone")

    # -- clear ------------------------------------------------------------------------------
    def clear_crypto_isakmp(self, router: Router | None = None) -> int:
        """``clear crypto isakmp``: delete the live ISAKMP SAs (of ``router``'s addresses,
        or all) and wipe their keying material; IPsec SAs stay, and the next quick mode
        starts with a new phase 1. Returns the number deleted."""
        addrs = None if router is None else {
            i.address for i in router.config.interfaces.values() if i.address}
        n = 0
        for sa in self._isakmp:
            if sa.alive and (addrs is None or sa.src in addrs or sa.dst in addrs):
                sa.wipe()
                n += 1
        return n

    def close(self) -> None:
        """Wipe every ISAKMP SA's keying material and forget the failed attempts (the
        routers' own SAs are theirs to close)."""
        for sa in self._isakmp:
            sa.wipe()
        self._isakmp.clear()
        for neg in self.negotiations:
            neg.pfs_secrets = neg.nonces = (b"", b"")

    # -- show -------------------------------------------------------------------------------
    def isakmp_sas(self, router: Router) -> list[IsakmpSa]:
        """Phase 1 SAs and attempts that involve one of ``router``'s addresses."""
        addrs = {i.address for i in router.config.interfaces.values() if i.address}
        now = float(router.clock())
        for sa in self._isakmp:
            if sa.alive and sa.expired(now):
                sa.wipe()
        return [sa for sa in self._isakmp if sa.src in addrs or sa.dst in addrs]

    def show(self, router: Router, command: str) -> str:
        """``show crypto isakmp sa``, ``show crypto session``, ``show crypto map`` (with
        temporary entries); anything else goes to ``router.show``."""
        words = command.split()
        if words and "show".startswith(words[0].lower()) and len(words[0]) >= 2:
            words = words[1:]
        low = [w.lower() for w in words]
        if len(low) >= 3 and "crypto".startswith(low[0]) and "isakmp".startswith(low[1]) \
                and low[2] == "sa":
            return self._show_isakmp_sa(router)
        if len(low) >= 2 and "crypto".startswith(low[0]) and "session".startswith(low[1]) \
                and len(low[1]) >= 2:
            return self._show_session(router)
        text = router.show(" ".join(words))
        if len(low) == 2 and "crypto".startswith(low[0]) and low[1] == "map":
            temps = self.temporary_entries(router)
            for t in temps:
                ifs = router.config.interfaces_using(t.map_name)
                text = text.rstrip("\n") + "\n\n" + "\n".join(
                    t.render([i.name for i in ifs])) + "\n"
        return text

    def _show_isakmp_sa(self, router: Router) -> str:
        out = ["IPv4 Crypto ISAKMP SA",
               "dst             src             state          conn-id status"]
        for sa in self.isakmp_sas(router):
            out.append(f"{sa.dst:<15} {sa.src:<15} {sa.state:<14} {sa.conn_id:>7} {sa.status}")
        out += ["", "IPv6 Crypto ISAKMP SA", ""]
        return "\n".join(out) + "\n"

    def _show_session(self, router: Router) -> str:
        out = ["Crypto session current status", ""]
        self._prune()
        isakmp = [sa for sa in self.isakmp_sas(router) if sa.alive]
        for name in router.crypto_interfaces():
            local = router.local_address(name)
            pairs = [p for p in router.sad if p.local == local]
            peers: list[str] = []
            for p in pairs:
                if p.peer not in peers:
                    peers.append(p.peer)
            for sa in isakmp:
                other = sa.dst if sa.src == local else sa.src if sa.dst == local else None
                if other is not None and other not in peers:
                    peers.append(other)
            for f in self.failures:
                if f.initiator == local and f.responder not in peers:
                    peers.append(f.responder)
            for peer in peers:
                mine = [p for p in pairs if p.peer == peer]
                ike = next((sa for sa in isakmp if {sa.src, sa.dst} == {local, peer}), None)
                status = ("UP-ACTIVE" if mine and ike else "UP-NO-IKE" if mine
                          else "UP-IDLE" if ike else "DOWN")
                out += [f"Interface: {name}", f"Session status: {status}",
                        f"Peer: {peer} port 500"]
                if ike is not None:
                    out.append(f"  IKEv1 SA: local {local}/500 remote {peer}/500 Active")
                flows: dict[str, int] = {}
                for p in mine:
                    key = _pair_flow_text(router, p)
                    flows[key] = flows.get(key, 0) + len(p.inbound) + len(p.outbound)
                for text, n in flows.items():
                    out.append(f"  IPSEC FLOW: {text}")
                    out.append(f"        Active SAs: {n}, origin: crypto map")
                out.append("")
        return "\n".join(out).rstrip("\n") + "\n"


# ---------------------------------------------------------------------------------------
# helpers that need the router


def _is_ip(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def _policies(router: Router) -> list[IsakmpPolicy]:
    """The router's ISAKMP policies by priority; IOS's default suite if it has none."""
    pol = router.config.isakmp_policies
    return [pol[k] for k in sorted(pol)] or [IsakmpPolicy(65535)]


def _policy_text(p: IsakmpPolicy) -> str:
    return (f"{p.priority}: {p.encryption_text}/{p.hash}/{p.authentication}/group {p.group}/"
            f"{p.lifetime} s")


def _new_spi(router: Router, taken: set[int]) -> int:
    """A random SPI >= 256 that no SA of ``router`` uses (RFC 4303 §2.1; IOS reserves
    0-255)."""
    used = {r.spi for r in router.sad.sas()} | taken
    while True:
        spi = MIN_SPI + secrets.randbelow(0xFFFFFFFF - MIN_SPI + 1)
        if spi not in used:
            taken.add(spi)
            return spi


def _static_proposal(ini: Router, re_: RouterEntry, flow: Flow) -> _Proposal:
    """A static entry's proposal: its transform sets in priority order, its PFS group,
    the flow of ``flow``'s ACE (or the host pair), its lifetimes."""
    cfg = ini.config
    proposals = [cfg.transform_sets[n] for n in re_.config.transform_sets
                 if n in cfg.transform_sets]
    if not proposals:
        raise _Refused(2, f"{re_.label} has no defined transform set to propose")
    if flow.source is not None and flow.destination is not None:
        ace = _host_ace(flow.source, flow.destination)
    else:
        acl = re_.spd.acl
        if acl is None or not 0 <= flow.ace < len(acl.entries):
            raise _Refused(2, f"{re_.label} has no access-list entry {flow.ace}")
        ace = acl.entries[flow.ace]
    return _Proposal(re_, re_.label, flow, ace, proposals, _group_number(re_.config.pfs),
                     cfg.lifetime(re_.config))


def _temporary_proposal(ini: Router, temp: TemporaryEntry, flow: Flow) -> _Proposal:
    """A temporary entry's proposal "based upon the policy specified in the temporary
    crypto map entry": the negotiated transform set, PFS group, lifetimes and flow."""
    re_ = ini.entries[temp.entry]
    ts = ini.config.transform_sets.get(temp.transform_set)
    if ts is None:
        raise _Refused(2, f"transform set {temp.transform_set} is not defined")
    ace = temp.negotiated if temp.negotiated is not None else temp.ace
    return _Proposal(re_, f"{re_.label} (temporary entry)", flow, ace, [ts], temp.pfs,
                     (temp.lifetime_seconds, temp.lifetime_kilobytes), temp)


def _pair_flow_text(router: Router, pair: SaPair) -> str:
    """The flow as ``show crypto session`` prints it: ``permit ip 10.1.0.0/255.255.0.0
    host 10.2.0.1`` (protocol by name for ip / tcp / udp / icmp, else its number)."""
    _, a, hs, hd = pair.scope
    if a < 0:
        return f"permit ip host {_ip(hs)} host {_ip(hd)}"
    re_ = router.entries[pair.entry]
    acl = re_.spd.acl
    if acl is None or not 0 <= a < len(acl.entries):
        return "permit ip any any"
    ace = acl.entries[a]
    proto = {None: "ip", 1: "icmp", 6: "tcp", 17: "udp"}.get(ace.protocol, str(ace.protocol))

    def side(m: AddressMatch, port: Any) -> str:
        wild = m.wildcard & 0xFFFFFFFF
        if wild == 0:
            text = f"host {_ip(m.address)}"
        elif wild == 0xFFFFFFFF:
            text = "any"
        else:
            text = f"{_ip(m.address & ~wild & 0xFFFFFFFF)}/{_ip(~wild & 0xFFFFFFFF)}"
        if port is not None and port.op == "eq" and len(port.ports) == 1:
            text += f" port {port.ports[0]}"
        return text

    return (f"permit {proto} {side(ace.source, ace.source_port)} "
            f"{side(ace.destination, ace.destination_port)}")


def _patched_index(router: Router, re_: RouterEntry, temp: TemporaryEntry) -> int:
    """The index of ``temp``'s permit in the access list ``_patch_template`` built."""
    acl = router.entries[re_.index].spd.acl
    assert acl is not None
    for i, ace in enumerate(acl.entries):
        if ace is temp.ace:
            return i
    raise InternalError("temporary entry missing from its template's access list")


_INERT = Ace(10, "deny", None, AddressMatch(0, 0), None, AddressMatch(0, 0), None)


def _patch_template(router: Router, entry: int, temps: list[TemporaryEntry]) -> None:
    """Give a dynamic-map entry without ``match address`` the flows of its live temporary
    entries, so that the router protects and checks them like a normal entry's (the
    seed: "the router performs normal processing, using this temporary crypto map entry
    as a normal entry") through ``Router.set_entry_flows``, which recompiles the crypto
    map's SPD. The access list only grows
    while some entry lives (SA scopes hold ACE indexes): a removed entry's permit
    becomes a deny of 0.0.0.0 -> 0.0.0.0, and with no entry left the template is
    "ignored during traffic filtering" again."""
    re_ = router.entries[entry]
    mine = [t for t in temps if t.entry == entry and t.patched]
    old = re_.spd.acl
    if not mine:
        router.set_entry_flows(entry, None)
    else:
        aces = list(old.entries) if old is not None else []
        live_ids = {id(t.ace) for t in mine}
        aces = [a if id(a) in live_ids else replace(_INERT, seq=a.seq) for a in aces]
        have = {id(a) for a in aces}
        for t in mine:
            if id(t.ace) not in have:
                t.ace = replace(t.ace, seq=10 * (len(aces) + 1))
                aces.append(t.ace)
                have.add(id(t.ace))
        acl = AccessList(f"dynamic-{re_.config.map_name}-{re_.config.seq}", "named", aces)
        router.set_entry_flows(entry, acl)
