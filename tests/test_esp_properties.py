"""Properties of the ESP / AH core (hypothesis): what a receiver must reject, and that
nothing a peer can send makes it raise.

* Tampering: every single-byte change (each position, a random non-zero xor) of a
  protected packet is rejected with a non-zero status, for every integrity-protected
  family: ESP + HMAC, AEAD (GCM, CCM, ChaCha20-Poly1305), GMAC, AH, AH+ESP bundles.
  "Protected" is what the RFCs protect: for ESP the whole ESP packet (SPI .. ICV,
  RFC 4303 §3.1) plus the outer-header bytes the receiver must parse (version / IHL,
  total length, protocol, fragment offset / MF); for AH every immutable field too
  (RFC 4302 §3.3.3.1.1.1: ID, source, destination). The mutable or unprotected bytes
  (TOS, DF, TTL, checksum; for ESP also ID and addresses) may be accepted, but then the
  packet must decapsulate to the original. A rejected packet must not move the window:
  the untouched packet is still accepted afterwards.
* Anti-replay (RFC 4303 §3.4.3, Appendix A): window sizes 32, 64, 1024 against a
  reference model, exact statuses (REPLAY inside the window, OUTSIDE_WINDOW below it)
  at the window edges, and ESN (RFC 4304) across the 2^32 boundary.
* Truncation at every length 0 .. len-1 (raw, and with the IPv4 length / checksum fixed
  up to match): dropped with a status, no crash.
* Random garbage never raises; batches of size 0, 1, many; mixed good and bad packets
  give per-packet statuses; counters add up to the statuses.
"""

from __future__ import annotations

import random
import struct
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipsecfast import PacketBatch, Status
from ipsecfast.sa import SaBundle, SecurityAssociation
from ipsecfast.transform import parse_transforms

LOCAL, PEER = "192.0.2.1", "198.51.100.2"
OK = Status.OK

# family -> (AH spec or None, ESP spec or None)
INTEGRITY_FAMILIES: dict[str, tuple[str | None, str | None]] = {
    "esp-aes-sha1": (None, "esp-aes esp-sha-hmac"),
    "esp-aes256-sha256": (None, "esp-aes 256 esp-sha256-hmac"),
    "esp-3des-md5": (None, "esp-3des esp-md5-hmac"),
    "esp-null-sha512": (None, "esp-null esp-sha512-hmac"),
    "esp-ctr-sha1": (None, "esp-aes-ctr esp-sha-hmac"),
    "esp-gcm128": (None, "esp-gcm 128"),
    "esp-gcm256": (None, "esp-gcm 256"),
    "esp-gmac": (None, "esp-gmac"),
    "esp-ccm": (None, "esp-aes-ccm"),
    "esp-chacha": (None, "esp-chacha20-poly1305"),
    "ah-md5": ("ah-md5-hmac", None),
    "ah-sha1": ("ah-sha-hmac", None),
    "ah-sha256": ("ah-sha256-hmac", None),
    "bundle-ah-esp-cbc": ("ah-sha-hmac", "esp-aes esp-sha-hmac"),
    "bundle-ah-esp-gcm": ("ah-sha256-hmac", "esp-gcm 128"),
}
NO_INTEGRITY = {"esp-aes-only": (None, "esp-aes"), "esp-ctr-only": (None, "esp-aes-ctr")}
ALL_FAMILIES = {**INTEGRITY_FAMILIES, **NO_INTEGRITY}
MODES = ("tunnel", "transport")
FAST = settings(max_examples=15, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# -- helpers ------------------------------------------------------------------------


def inner_packet(size: int, seed: int, *, tos: int = 0, df: bool = True) -> bytes:
    """An IPv4/UDP (or bare, under 28 bytes) packet of ``size`` bytes, valid checksum."""
    rng = random.Random(seed)
    proto = 17 if size >= 28 else 253
    hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, tos, size, rng.randrange(65536),
                                0x4000 if df else 0, 64, proto, 0,
                                bytes([10, 1, 0, 1]), bytes([10, 2, 0, 1])))
    struct.pack_into("!H", hdr, 10, ip_checksum(bytes(hdr)))
    body = rng.randbytes(size - 20)
    if size >= 28:
        body = struct.pack("!HHHH", 1234, 5678, size - 20, 0) + body[8:]
    return bytes(hdr) + body


def ip_checksum(hdr: bytes) -> int:
    total = sum(struct.unpack(f"!{len(hdr) // 2}H", hdr))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def fix_ip_header(pkt: bytes) -> bytes:
    """Total length = len(pkt) and a valid checksum (for packets of 20+ bytes)."""
    b = bytearray(pkt)
    ihl = min((b[0] & 0x0F) * 4, len(b)) & ~1
    struct.pack_into("!H", b, 2, len(b))
    struct.pack_into("!H", b, 10, 0)
    struct.pack_into("!H", b, 10, ip_checksum(bytes(b[:max(ihl, 20)])))
    return bytes(b)


def keys_for(spec: str, seed: str) -> tuple[bytes | None, bytes | None]:
    t = parse_transforms(spec)
    rng = random.Random(seed)
    if t.has_ah:
        return None, rng.randbytes(t.ah_key_length)
    ck = rng.randbytes(t.cipher_key_length) if t.cipher_key_length else None
    ak = rng.randbytes(t.auth_key_length) if t.auth_key_length else None
    return ck, ak


def make_one(spec: str, mode: str, spi: int, **kw: Any) -> Any:
    ck, ak = keys_for(spec, spec)
    protocol = "ah" if parse_transforms(spec).has_ah else "esp"
    return SecurityAssociation(protocol, spi, spec, cipher_key=ck, auth_key=ak, mode=mode,
                               local=LOCAL, peer=PEER, **kw)


def make_sa(family: str, mode: str, **kw: Any) -> Any:
    """A fresh SA (or bundle) of ``family``; two calls with the same args share keys."""
    ah_spec, esp_spec = ALL_FAMILIES[family]
    if ah_spec and esp_spec:
        return SaBundle(make_one(esp_spec, mode, 0x1001, **kw),
                        make_one(ah_spec, mode, 0x1002, **kw))
    spec = ah_spec or esp_spec
    assert spec is not None
    return make_one(spec, mode, 0x1001, **kw)


def is_ah_outside(family: str) -> bool:
    return ALL_FAMILIES[family][0] is not None


def call(sa: Any, op: str, pkts: Sequence[bytes]) -> tuple[list[int], list[bytes]]:
    """Run ``op`` on a batch; check the result's shape; return (statuses, packets)."""
    res = getattr(sa, op)(PacketBatch.from_list(pkts))
    status = np.asarray(res.status)
    assert status.dtype == np.uint8
    assert status.shape == (len(pkts),)
    out = res.packets
    assert len(out) == len(pkts)
    lengths = np.asarray(out.lengths)
    assert not np.any(lengths[status != 0]), "a failed packet must have length 0"
    return status.tolist(), out.to_list()


def protect(family: str, mode: str, pkts: Sequence[bytes], **kw: Any) -> list[bytes]:
    st_, out = call(make_sa(family, mode, **kw), "encapsulate", pkts)
    assert st_ == [0] * len(pkts)
    return out


# -- tampering ---------------------------------------------------------------------


def must_reject(family: str, pos: int, xor: int) -> bool:
    """Is a change of byte ``pos`` (outer IPv4 header at 0..19) one the receiver must reject?"""
    if pos >= 20:
        return True  # ESP or AH header and everything after it
    if pos in (0, 2, 3, 9):  # version / IHL, total length, protocol
        return True
    if pos == 6:
        return bool(xor & 0x3F)  # MF or fragment offset set: a fragment
    if pos == 7:
        return True  # fragment offset
    if is_ah_outside(family):
        # RFC 4302 §3.3.3.1.1.1: ID, source and destination are immutable
        return pos in (4, 5) or 12 <= pos < 20
    return False


@FAST
@given(family=st.sampled_from(sorted(INTEGRITY_FAMILIES)), mode=st.sampled_from(MODES),
       size=st.integers(20, 300), data=st.data())
def test_every_single_byte_change_is_rejected(family: str, mode: str, size: int,
                                              data: st.DataObject) -> None:
    inner = inner_packet(size, size)
    wire = protect(family, mode, [inner])[0]
    n = len(wire)
    xors = data.draw(st.lists(st.integers(1, 255), min_size=n, max_size=n), label="xors")
    tampered = []
    for pos, x in enumerate(xors):
        b = bytearray(wire)
        b[pos] ^= x
        tampered.append(bytes(b))
    strict = [i for i, x in enumerate(xors) if must_reject(family, i, x)]
    lenient = [i for i, x in enumerate(xors) if not must_reject(family, i, x)]
    rx = make_sa(family, mode)
    statuses, _ = call(rx, "decapsulate", [tampered[i] for i in strict])
    for i, s in zip(strict, statuses, strict=True):
        assert s != OK, f"byte {i} ^= {xors[i]:#04x} accepted ({family}, {mode})"
    # rejected packets leave the replay window alone: the original still gets in
    assert call(rx, "decapsulate", [wire]) == ([OK], [inner])
    # unprotected header bytes: rejected, or accepted with the payload untouched
    rx = make_sa(family, mode)
    statuses, out = call(rx, "decapsulate", [tampered[i] for i in lenient])
    for i, s, o in zip(lenient, statuses, out, strict=True):
        if s == OK:
            if mode == "tunnel":
                assert o == inner, f"byte {i} ^= {xors[i]:#04x} changed the inner packet"
            else:
                assert o[20:] == inner[20:], f"byte {i} ^= {xors[i]:#04x} changed the payload"


SINGLE_FAMILIES = sorted(f for f, (a, e) in INTEGRITY_FAMILIES.items() if not (a and e))


@FAST
@given(family=st.sampled_from(SINGLE_FAMILIES), mode=st.sampled_from(MODES),
       size=st.integers(20, 200), data=st.data())
def test_wrong_key_is_rejected(family: str, mode: str, size: int, data: st.DataObject) -> None:
    """One bit of the integrity key wrong (the AEAD key, salt included) and the packet is
    rejected. (A wrong CBC / CTR key under an HMAC passes the ICV and only fails the
    padding check by chance, so it is not a property.)"""
    inner = inner_packet(size, size)
    wire = protect(family, mode, [inner])[0]
    ah_spec, esp_spec = ALL_FAMILIES[family]
    spec = ah_spec or esp_spec
    assert spec is not None
    keys = list(keys_for(spec, spec))
    which = 1 if keys[1] else 0
    key = bytearray(keys[which])  # type: ignore[arg-type]
    key[data.draw(st.integers(0, len(key) - 1), label="pos")] ^= 1 << data.draw(
        st.integers(0, 7), label="bit")
    keys[which] = bytes(key)
    other = SecurityAssociation("ah" if ah_spec else "esp", 0x1001, spec, mode=mode,
                                local=LOCAL, peer=PEER, cipher_key=keys[0], auth_key=keys[1])
    statuses, _ = call(other, "decapsulate", [wire])
    assert statuses[0] != OK


# -- anti-replay -------------------------------------------------------------------


@dataclass
class WindowModel:
    """RFC 4303 §3.4.3: the window holds T-W+1 .. T; seq 0 is never valid without ESN."""

    size: int
    top: int
    esn: bool
    seen: set[int]

    def expect(self, seq: int) -> set[int]:
        if seq > self.top:
            return {OK}
        if seq <= self.top - self.size:
            # With ESN an old packet gets the next epoch's high bits (RFC 4303 App. A2.2)
            # and fails the ICV instead.
            return {Status.OUTSIDE_WINDOW, Status.ICV_MISMATCH} if self.esn else {
                Status.OUTSIDE_WINDOW}
        if seq in self.seen:
            return {Status.REPLAY}
        return {OK}

    def accept(self, seq: int) -> None:
        self.seen.add(seq)
        self.top = max(self.top, seq)


def _replay_setup(window: int, esn: bool, base: int, n: int, family: str = "esp-gcm128"):
    """(rx SA, model, {seq: wire}) for packets base+1 .. base+n."""
    inners = [inner_packet(40, i) for i in range(n)]
    wires = protect(family, "tunnel", inners, esn=esn, seq=base, replay_window=window)
    rx = make_sa(family, "tunnel", esn=esn, seq=base, replay_window=window)
    model = WindowModel(window, base, esn, set())
    return rx, model, {base + 1 + i: w for i, w in enumerate(wires)}, inners


def _deliver(rx: Any, model: WindowModel, wires: dict[int, bytes], order: list[int],
             batch: int) -> None:
    for start in range(0, len(order), batch):
        chunk = order[start:start + batch]
        statuses, _ = call(rx, "decapsulate", [wires[s] for s in chunk])
        for s, got in zip(chunk, statuses, strict=True):
            want = model.expect(s)
            assert got in want, f"seq {s:#x}: status {got}, expected {want}"
            if got == OK:
                model.accept(s)


@pytest.mark.parametrize("esn", [False, True])
@pytest.mark.parametrize("window", [32, 64, 1024])
def test_replay_window_edges(window: int, esn: bool) -> None:
    # with ESN the window straddles 2^32
    base = 2**32 - window - 5 if esn else 0
    top = base + window + 10
    rx, model, wires, _ = _replay_setup(window, esn, base, 2 * window + 20)
    old = top - window  # just below the window
    edge = top - window + 1  # the oldest number inside the window
    steps = [
        (top, OK), (top, Status.REPLAY), (edge, OK), (edge, Status.REPLAY),
        (old, Status.OUTSIDE_WINDOW), (edge + 1, OK), (top - 1, OK), (top - 1, Status.REPLAY),
        (top + 1, OK),  # the window slides by one: edge is now outside
        (edge, Status.OUTSIDE_WINDOW), (edge + 2, OK), (edge + 1, Status.REPLAY),
        (top + window + 5, OK),  # a jump larger than the window
        (top + 1, Status.OUTSIDE_WINDOW), (top + 6, OK), (top + 6, Status.REPLAY),
    ]
    for seq, want in steps:
        statuses, _ = call(rx, "decapsulate", [wires[seq]])
        if esn and want == Status.OUTSIDE_WINDOW:
            assert statuses[0] in (Status.OUTSIDE_WINDOW, Status.ICV_MISMATCH), hex(seq)
        else:
            assert statuses[0] == want, f"W={window} seq={seq:#x} ({seq - top:+d} from top)"


@settings(max_examples=40, deadline=None)
@given(window=st.sampled_from([32, 64, 1024]), esn=st.booleans(), batch=st.integers(1, 9),
       family=st.sampled_from(["esp-gcm128", "esp-aes-sha1", "ah-sha1"]), data=st.data())
def test_replay_matches_model(window: int, esn: bool, batch: int, family: str,
                              data: st.DataObject) -> None:
    """Random delivery orders (duplicates included), in batches of ``batch``, against the
    RFC 4303 §3.4.3 window; with ESN the window straddles 2^32."""
    n = window + 40
    base = 2**32 - window // 2 if esn else 0
    rx, model, wires, _ = _replay_setup(window, esn, base, n, family)
    seqs = sorted(wires)
    order = data.draw(st.lists(st.sampled_from(seqs), min_size=1, max_size=60), label="order")
    _deliver(rx, model, wires, order, batch)


@pytest.mark.parametrize("family", ["esp-aes-sha1", "esp-gcm128", "esp-chacha", "ah-sha1",
                                    "bundle-ah-esp-cbc"])
def test_esn_boundary(family: str) -> None:
    """seq 2^32-2 .. 2^32+2 (ESN): all delivered, in and out of order, replays rejected."""
    base = 2**32 - 3
    inners = [inner_packet(60, i) for i in range(5)]
    wires = protect(family, "tunnel", inners, esn=True, seq=base)
    for order in ([0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [2, 0, 4, 1, 3]):
        rx = make_sa(family, "tunnel", esn=True, seq=base)
        statuses, out = call(rx, "decapsulate", [wires[i] for i in order])
        assert statuses == [OK] * 5, order
        assert out == [inners[i] for i in order]
        statuses, _ = call(rx, "decapsulate", wires)
        assert statuses == [Status.REPLAY] * 5


def test_seq_exhausted_without_esn() -> None:
    """RFC 4303 §3.3.3: the counter never wraps; with ESN it goes on past 2^32."""
    inners = [inner_packet(40, i) for i in range(4)]
    sa = make_sa("esp-gcm128", "tunnel", seq=2**32 - 3)
    statuses, out = call(sa, "encapsulate", inners)
    assert statuses == [OK, OK, Status.SEQ_EXHAUSTED, Status.SEQ_EXHAUSTED]
    assert sa.seq == 2**32 - 1
    esn_sa = make_sa("esp-gcm128", "tunnel", seq=2**32 - 3, esn=True)
    statuses, _ = call(esn_sa, "encapsulate", inners)
    assert statuses == [OK] * 4
    assert esn_sa.seq == 2**32 + 1


NULL_SHA1 = "esp-null esp-sha-hmac"


def null_hmac_packet(seq: int, payload: bytes, *, spi: int = 0x1001) -> bytes:
    """An ESP packet (outer IPv4 + SPI, seq, ``payload``, HMAC-SHA1-96) built without the
    core: with esp-null the ``payload`` (data + padding + pad length + next header) is on
    the wire as is, so any trailer can be given a valid ICV (RFC 4303 §2.8)."""
    from cryptography.hazmat.primitives import hashes, hmac

    _, ak = keys_for(NULL_SHA1, NULL_SHA1)
    assert ak is not None
    esp = struct.pack("!II", spi, seq) + payload
    h = hmac.HMAC(ak, hashes.SHA1())
    h.update(esp)
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 0, 1, 0, 64, 50, 0,
                       bytes([192, 0, 2, 1]), bytes([198, 51, 100, 2]))
    return fix_ip_header(head + esp + h.finalize()[:12])


def test_seq_zero_rejected_without_esn() -> None:
    """The first packet carries 1 (RFC 4303 §3.3.3); a received 0 is never valid."""
    inner = inner_packet(40, 0)
    trailer = bytes([1, 2, 2, 4])  # pad 1, 2; pad length 2; next header 4 (IPv4)
    rx = make_one(NULL_SHA1, "tunnel", 0x1001)
    statuses, out = call(rx, "decapsulate", [null_hmac_packet(0, inner + trailer),
                                             null_hmac_packet(1, inner + trailer)])
    assert statuses[0] != OK
    assert (statuses[1], out[1]) == (OK, inner), "the oracle's packet is valid with seq 1"


@pytest.mark.parametrize(("mode", "payload", "want"), [
    # RFC 4303 §2.4: padding bytes must be 1, 2, 3, ...
    ("tunnel", inner_packet(40, 0) + bytes([1, 3, 2, 4]), Status.BAD_PADDING),
    ("tunnel", inner_packet(40, 0) + bytes([0, 0, 2, 4]), Status.BAD_PADDING),
    # pad length longer than the payload
    ("tunnel", bytes([1, 2]) + bytes([200, 4]), None),
    # tunnel mode carries IPv4 (next header 4) only
    ("tunnel", inner_packet(40, 0) + bytes([1, 2, 2, 17]), Status.BAD_NEXT_HEADER),
    # next header 4 but not an IPv4 packet inside
    ("tunnel", bytes(41) + bytes([1, 1, 4]), Status.BAD_INNER_PACKET),
    # the inner packet claims more bytes than were decrypted
    ("tunnel", inner_packet(40, 0)[:2] + struct.pack("!H", 400) + inner_packet(40, 0)[4:]
     + bytes([1, 2, 2, 4]), Status.BAD_INNER_PACKET),
    # transport mode: next header 4 / 17 are fine, the trailer still has to be right
    ("transport", inner_packet(40, 0)[20:] + bytes([1, 2, 2, 17]), Status.OK),
    ("transport", inner_packet(40, 0)[20:] + bytes([2, 2, 2, 17]), Status.BAD_PADDING),
])
def test_trailer_checked_after_a_valid_icv(mode: str, payload: bytes, want: int | None) -> None:
    """Packets with a valid ICV whose trailer or inner packet is wrong are dropped with a
    status (``None`` = any non-zero status), and do not move the window."""
    rx = make_one(NULL_SHA1, mode, 0x1001)
    statuses, out = call(rx, "decapsulate", [null_hmac_packet(1, payload)])
    if want is None:
        assert statuses[0] != OK, out
    else:
        assert statuses[0] == want, Status(statuses[0]).name
    if statuses[0] != OK:
        good = inner_packet(40, 0)
        trailer = bytes([1, 2, 2, 4])
        ok = null_hmac_packet(1, good + trailer if mode == "tunnel" else good[20:] + trailer[:3]
                              + bytes([17]))
        assert call(rx, "decapsulate", [ok])[0] == [OK], "a dropped packet moved the window"


@pytest.mark.parametrize("family", ["esp-aes-sha1", "ah-sha1"])
def test_replay_window_zero_disables_anti_replay(family: str) -> None:
    wires = protect(family, "tunnel", [inner_packet(40, 1)], replay_window=0)
    rx = make_sa(family, "tunnel", replay_window=0)
    statuses, _ = call(rx, "decapsulate", wires * 3)
    assert statuses == [OK] * 3


# -- RFC 6040 ----------------------------------------------------------------------

# RFC 6040 §4.2, Figure 4: (inner ECN, outer ECN) -> inner ECN after decapsulation, None = drop.
# 0 = Not-ECT, 1 = ECT(1), 2 = ECT(0), 3 = CE.
ECN_DECAP = {
    (0, 0): 0, (0, 2): 0, (0, 1): 0, (0, 3): None,
    (2, 0): 2, (2, 2): 2, (2, 1): 1, (2, 3): 3,
    (1, 0): 1, (1, 2): 1, (1, 1): 1, (1, 3): 3,
    (3, 0): 3, (3, 2): 3, (3, 1): 3, (3, 3): 3,
}


@pytest.mark.parametrize("family", ["esp-gcm128", "esp-aes-sha1", "ah-sha1"])
def test_ecn_decapsulation_rfc6040(family: str) -> None:
    """Tunnel mode: ECN copied out (normal mode), combined back in per RFC 6040 §4.2; the
    outer TOS is not covered by the ICV, so it can be rewritten on the way."""
    for (inner_ecn, outer_ecn), want in ECN_DECAP.items():
        inner = inner_packet(60, inner_ecn, tos=0xB8 | inner_ecn)  # DSCP EF
        wire = bytearray(protect(family, "tunnel", [inner])[0])
        assert wire[1] == inner[1], "DSCP and ECN copied to the outer header"
        wire[1] = (wire[1] & 0xFC) | outer_ecn
        statuses, out = call(make_sa(family, "tunnel"), "decapsulate",
                             [fix_ip_header(bytes(wire))])
        if want is None:
            assert statuses == [Status.ECN_DROP], (inner_ecn, outer_ecn)
            continue
        assert statuses == [OK], (inner_ecn, outer_ecn)
        got = out[0]
        assert got[1] == (inner[1] & 0xFC) | want, (inner_ecn, outer_ecn)
        assert ip_checksum(got[:20]) == 0, "inner checksum updated"
        assert got[2:10] == inner[2:10] and got[12:] == inner[12:]


# -- truncation ------------------------------------------------------------------


@settings(max_examples=20, deadline=None)
@given(family=st.sampled_from(sorted(ALL_FAMILIES)), mode=st.sampled_from(MODES),
       size=st.integers(20, 120))
def test_truncated_at_every_length(family: str, mode: str, size: int) -> None:
    inner = inner_packet(size, size)
    wire = protect(family, mode, [inner])[0]
    cut = [wire[:k] for k in range(len(wire))]
    fixed = [fix_ip_header(c) for c in cut if len(c) >= 20]
    rx = make_sa(family, mode)
    statuses, _ = call(rx, "decapsulate", cut)
    assert all(s != OK for s in statuses), "a raw truncation was accepted"
    statuses, _ = call(rx, "decapsulate", fixed)
    if family in INTEGRITY_FAMILIES:
        assert all(s != OK for s in statuses), [
            (20 + i, Status(s).name) for i, s in enumerate(statuses) if s == OK]
        # and the real packet is still accepted after all that: no window movement
        assert call(rx, "decapsulate", [wire]) == ([OK], [inner])
    for s in statuses:
        Status(s)  # a known code


# -- garbage, batch sizes, mixed batches, counters ------------------------------


def _ipsec_looking(data: st.DataObject, proto: int) -> bytes:
    body = data.draw(st.binary(min_size=0, max_size=120))
    spi = data.draw(st.sampled_from([0x1001, 0x1002, 0, 0xFFFFFFFF]))
    head = struct.pack("!I", spi) if proto == 50 else bytes([4, 4, 0, 0]) + struct.pack(
        "!I", spi)
    return fix_ip_header(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 0, 1, 0, 64, proto, 0,
                                     bytes([192, 0, 2, 1]), bytes([198, 51, 100, 2]))
                         + head + body)


@settings(max_examples=60, deadline=None)
@given(family=st.sampled_from(sorted(ALL_FAMILIES)), mode=st.sampled_from(MODES),
       data=st.data())
def test_garbage_never_raises(family: str, mode: str, data: st.DataObject) -> None:
    pkts = data.draw(st.lists(st.one_of(
        st.binary(max_size=80),
        st.builds(lambda: _ipsec_looking(data, 50)),
        st.builds(lambda: _ipsec_looking(data, 51)),
    ), max_size=12))
    sa = make_sa(family, mode)
    statuses, _ = call(sa, "decapsulate", pkts)
    if family in INTEGRITY_FAMILIES:
        assert all(s != OK for s in statuses)
    for s in statuses:
        Status(s)
    enc_status, enc = call(sa, "encapsulate", pkts)
    for s, p, e in zip(enc_status, pkts, enc, strict=True):
        Status(s)
        if s == OK:
            assert len(e) > len(p)


@settings(max_examples=25, deadline=None)
@given(family=st.sampled_from(sorted(ALL_FAMILIES)), mode=st.sampled_from(MODES),
       sizes=st.one_of(st.just([]), st.lists(st.integers(20, 1500), min_size=1, max_size=1),
                       st.lists(st.integers(20, 1500), min_size=2, max_size=300)))
def test_round_trip_batch_sizes(family: str, mode: str, sizes: list[int]) -> None:
    inners = [inner_packet(s, i, tos=i & 0xFC, df=bool(i & 1)) for i, s in enumerate(sizes)]
    tx, rx = make_sa(family, mode), make_sa(family, mode)
    st1, wires = call(tx, "encapsulate", inners)
    assert st1 == [OK] * len(inners)
    st2, back = call(rx, "decapsulate", wires)
    assert st2 == [OK] * len(inners)
    assert back == inners


def test_large_batch_round_trip() -> None:
    inners = [inner_packet(20 + (i * 37) % 1481, i) for i in range(5000)]
    for family in ("esp-gcm128", "esp-aes-sha1", "ah-sha256", "bundle-ah-esp-gcm"):
        tx, rx = make_sa(family, "tunnel"), make_sa(family, "tunnel")
        st1, wires = call(tx, "encapsulate", inners)
        st2, back = call(rx, "decapsulate", wires)
        assert st1 == [OK] * 5000 and st2 == [OK] * 5000 and back == inners, family


@pytest.mark.parametrize("family", ["esp-gcm128", "esp-gmac", "esp-chacha", "esp-ccm",
                                    "esp-ctr-sha1", "esp-aes-sha1", "esp-3des-md5"])
def test_ivs_never_repeat(family: str) -> None:
    """Counter-mode IVs (GCM, GMAC, ChaCha, CCM, CTR) must never repeat under one key."""
    tx = make_sa(family, "tunnel")
    _, esp_spec = ALL_FAMILIES[family]
    iv_len = parse_transforms(esp_spec or "").esp_cipher.iv_length  # type: ignore[union-attr]
    ivs: list[bytes] = []
    for _ in range(3):
        st_, wires = call(tx, "encapsulate", [inner_packet(40, i) for i in range(500)])
        assert st_ == [OK] * 500
        ivs += [w[28:28 + iv_len] for w in wires]
    assert len(set(ivs)) == len(ivs)


KINDS = ("ok", "icv", "spi", "trunc", "proto", "replay")


@settings(max_examples=40, deadline=None)
@given(family=st.sampled_from(sorted(INTEGRITY_FAMILIES)), mode=st.sampled_from(MODES),
       kinds=st.lists(st.sampled_from(KINDS), min_size=1, max_size=40))
def test_mixed_batch_statuses_and_counters(family: str, mode: str, kinds: list[str]) -> None:
    inners = [inner_packet(20 + 17 * i, i) for i in range(len(kinds))]
    tx = make_sa(family, mode)
    _, wires = call(tx, "encapsulate", inners)
    batch: list[bytes] = []
    want: list[int] = []
    accepted: list[int] = []
    for i, (kind, w) in enumerate(zip(kinds, wires, strict=True)):
        b = bytearray(w)
        if kind == "replay" and accepted:
            batch.append(wires[accepted[-1]])
            want.append(Status.REPLAY)
            continue
        if kind in ("ok", "replay"):
            want.append(OK)
            accepted.append(i)
        elif kind == "icv":
            b[-1] ^= 0x5A
            want.append(Status.ICV_MISMATCH)
        elif kind == "spi":
            b[20 + (4 if is_ah_outside(family) else 0)] ^= 0x80  # SPI's first byte
            want.append(Status.BAD_SPI)
        elif kind == "trunc":
            b = bytearray(fix_ip_header(bytes(b[:24])))
            want.append(-1)  # any non-zero status
        elif kind == "proto":
            b[9] = 17
            b = bytearray(fix_ip_header(bytes(b)))
            want.append(Status.BAD_PROTOCOL)
        batch.append(bytes(b))
    rx = make_sa(family, mode)
    statuses, out = call(rx, "decapsulate", batch)
    for i, (s, w) in enumerate(zip(statuses, want, strict=True)):
        if w == -1:
            assert s != OK, i
        else:
            assert s == w, f"packet {i} ({kinds[i]}): {Status(s).name}, want {Status(w).name}"
    good = [i for i, s in enumerate(statuses) if s == OK]
    assert [out[i] for i in good] == [inners[i] for i in accepted]
    if not isinstance(rx, SaBundle):
        check_counters(rx, statuses, out, "decapsulated")
        check_counters(tx, [OK] * len(inners), inners, "encapsulated")


def check_counters(sa: Any, statuses: list[int], plain: list[bytes], verb: str) -> None:
    """``sa.counters``: packets and plaintext bytes for ``verb`` (encapsulated /
    decapsulated), and one counter per drop reason, named by ``Status.label``."""
    c = dict(sa.counters)
    ok = [i for i, s in enumerate(statuses) if s == OK]
    assert c[f"packets_{verb}"] == len(ok), c
    assert c[f"bytes_{verb}"] == sum(len(plain[i]) for i in ok), c
    drops = Counter(Status(s) for s in statuses if s != OK)
    for reason in Status:
        if 0 < reason < 32:
            assert c.get(reason.label, 0) == drops.get(reason, 0), (reason.label, c)


@pytest.mark.parametrize("family", ["esp-gcm128", "esp-aes-sha1", "ah-sha1"])
def test_concurrent_encapsulate_never_reuses_seq_or_iv(family: str) -> None:
    """The batch loop runs without the GIL: threads sharing one SA still get distinct
    sequence numbers (and counter IVs), and a receiver accepts every packet once."""
    import threading

    tx = make_sa(family, "tunnel")
    inners = [inner_packet(40, i) for i in range(100)]
    results: list[list[bytes]] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(10):
            st_, wires = call(tx, "encapsulate", inners)
            assert st_ == [OK] * len(inners)
            with lock:
                results.append(wires)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wires = [w for batch in results for w in batch]
    assert len(wires) == 4000 and tx.seq == 4000
    hdr = 24 if is_ah_outside(family) else 20  # where the sequence number sits
    seqs = sorted(struct.unpack("!I", w[hdr + 4:hdr + 8])[0] for w in wires)
    assert seqs == list(range(1, 4001))
    if family == "esp-gcm128":
        assert len({w[28:36] for w in wires}) == 4000
    rx = make_sa(family, "tunnel", replay_window=1024)
    statuses, _ = call(rx, "decapsulate", sorted(
        wires, key=lambda w: struct.unpack("!I", w[hdr + 4:hdr + 8])[0]))
    assert statuses == [OK] * 4000
