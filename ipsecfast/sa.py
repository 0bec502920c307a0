"""SecurityAssociation and SaBundle: the thin Python facade over the compiled ESP / AH core.

An SA is one direction-agnostic keyed context (``src/_esp.pyx``): ``encapsulate`` uses the
outbound sequence counter, ``decapsulate`` the inbound anti-replay window. Everything is
validated here, before any C call (key / ICV lengths, addresses, window size); a bad
*packet* never raises, it gets a per-packet ``Status``.

``SaBundle`` is AH+ESP (DESIGN.md §Transforms: "ESP is applied first, AH outside it"):
ESP in its own mode, then AH in transport mode over the result.
"""

from __future__ import annotations

import ipaddress
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from . import _esp
from .exceptions import UnsupportedTransform
from .packets import PacketBatch
from .status import Status, status_counts
from .transform import AuthAlg, CipherAlg, Transforms, parse_transforms

__all__ = ["SecurityAssociation", "SaBundle", "SaResult", "MODE_IDS"]

Protocol = Literal["esp", "ah"]
Mode = Literal["tunnel", "transport"]

_PROTO_NUMBER = {"esp": 50, "ah": 51}
_MAX_WINDOW = 1024
_OVERHEAD = int(_esp.OVERHEAD)
#: The core's ids of the two modes (the ``mode_id`` of the private batch calls).
MODE_IDS: Mapping[Mode, int] = MappingProxyType(
    {"tunnel": int(_esp.MODE_IDS["tunnel"]), "transport": int(_esp.MODE_IDS["transport"])})
_KeyLike = bytes | bytearray | memoryview


@dataclass(frozen=True)
class SaResult:
    """Per-packet output of a batch call: ``packets`` aligned 1:1 with the input (a failed
    packet has length 0) and ``status`` (uint8, 0 = ok, else a ``Status`` code)."""

    packets: PacketBatch
    status: npt.NDArray[np.uint8]

    @property
    def ok(self) -> npt.NDArray[np.bool_]:
        return self.status == 0

    @property
    def all_ok(self) -> bool:
        return bool(np.all(self.status == 0))

    def counts(self) -> dict[str, int]:
        """Packets per status label, e.g. ``{"ok": 98, "replay": 2}``."""
        return status_counts(self.status)


def _trusted_batch(buffer: npt.NDArray[np.uint8], offsets: npt.NDArray[np.int64],
                   lengths: npt.NDArray[np.int64]) -> PacketBatch:
    """A PacketBatch over arrays the core just filled (see ``PacketBatch._trusted``)."""
    return PacketBatch._trusted(buffer, offsets, lengths)


def _total(lengths: npt.NDArray[np.int64]) -> int:
    # numpy's reduction costs more than the list sum for a handful of packets
    return sum(lengths.tolist()) if lengths.size <= 64 else int(lengths.sum())


def _ipv4(value: str | int | ipaddress.IPv4Address | None, name: str) -> int:
    if value is None:
        return 0
    try:
        return int(ipaddress.IPv4Address(value))
    except (ipaddress.AddressValueError, ValueError) as err:
        raise ValueError(f"{name} must be an IPv4 address, not {value!r}") from err


def _key(value: _KeyLike | None, name: str, expected: int, what: str) -> bytes:
    if value is None:
        value = b""
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise TypeError(f"{name} must be bytes, not {type(value).__name__}")
    key = bytes(value)
    if len(key) != expected:
        if expected == 0:
            raise ValueError(f"{what} takes no {name}")
        raise ValueError(f"{name} for {what} must be {expected} bytes, got {len(key)}")
    return key


class SecurityAssociation:
    """One IPsec SA (ESP or AH) over the compiled core.

    ``transforms`` is a Cisco transform set (``"esp-aes 256 esp-sha-hmac"``, a list of
    names, or a ``Transforms``); the SA uses the parts of its protocol. For GCM / GMAC /
    ChaCha20-Poly1305 ``cipher_key`` is key || 4-byte salt, AES-CTR key || 4-byte nonce,
    AES-CCM key || 3-byte salt; an AH SA takes its key as ``auth_key``. ``seq`` is the last
    sequence number used (the first packet carries ``seq + 1``).
    """

    def __init__(
        self,
        protocol: Protocol,
        spi: int,
        transforms: str | Sequence[str] | Transforms,
        cipher_key: _KeyLike | None = None,
        auth_key: _KeyLike | None = None,
        mode: Mode = "tunnel",
        local: str | int | ipaddress.IPv4Address | None = None,
        peer: str | int | ipaddress.IPv4Address | None = None,
        replay_window: int = 64,
        esn: bool = False,
        seq: int = 0,
        *,
        _fixed_iv: bytes | None = None,
        _iv_counter: int | None = None,
        _ip_id: int = 0,
        _icv_length: int | None = None,
        _reserved_spi: bool = False,
    ) -> None:
        if protocol not in _PROTO_NUMBER:
            raise ValueError(f"protocol must be 'esp' or 'ah', not {protocol!r}")
        if mode not in ("tunnel", "transport"):
            raise ValueError(f"mode must be 'tunnel' or 'transport', not {mode!r}")
        if isinstance(spi, bool) or not isinstance(spi, (int, np.integer)):
            raise TypeError("spi must be an int")
        if not (0 if _reserved_spi else 1) <= int(spi) <= 0xFFFFFFFF:
            raise ValueError("spi must be 1..4294967295 (0 is reserved, RFC 4303 §2.1)")
        if isinstance(replay_window, bool) or not 0 <= int(replay_window) <= _MAX_WINDOW:
            raise ValueError(f"replay_window must be 0..{_MAX_WINDOW} (0 disables anti-replay)")
        ts = transforms if isinstance(transforms, Transforms) else parse_transforms(transforms)
        esn = bool(esn)
        max_seq = 0xFFFFFFFFFFFFFFFF if esn else 0xFFFFFFFF
        if not 0 <= int(seq) <= max_seq:
            raise ValueError(f"seq must be 0..{max_seq}")
        self.protocol: Protocol = protocol
        self.spi = int(spi)
        self.transforms = ts
        self.mode: Mode = mode
        self.esn = esn
        self.replay_window = int(replay_window)
        self.local = _ipv4(local, "local")
        self.peer = _ipv4(peer, "peer")
        if mode == "tunnel" and (self.local == 0 or self.peer == 0):
            raise ValueError("tunnel mode needs local and peer IPv4 addresses")

        cipher = CipherAlg.NULL
        auth = AuthAlg.NONE
        if protocol == "esp":
            if not ts.has_esp:
                raise UnsupportedTransform(f"transform set {ts} has no ESP transform")
            cipher = ts.cipher
            auth = ts.esp_integrity
            what = " ".join(str(t) for t in (ts.esp_cipher, ts.esp_auth) if t is not None)
            ckey = _key(cipher_key, "cipher_key", ts.cipher_key_length, what)
            akey = _key(auth_key, "auth_key", ts.auth_key_length, what)
            icv = ts.esp_icv_length
            iv_len = ts.esp_cipher.iv_length if ts.esp_cipher else 0
        else:
            if ts.ah is None:
                raise UnsupportedTransform(f"transform set {ts} has no AH transform")
            auth = ts.ah.auth
            if cipher_key:
                raise ValueError("an AH SA takes its key as auth_key, not cipher_key")
            ckey = b""
            akey = _key(auth_key, "auth_key", ts.ah_key_length, str(ts.ah))
            icv = ts.ah.icv_length
            iv_len = 0
        if _icv_length is not None:
            if cipher != CipherAlg.AES_CCM or _icv_length not in (8, 12, 16):
                raise ValueError("only AES-CCM takes an ICV length of 8, 12 or 16")
            icv = _icv_length
        self._counter_iv = cipher in (CipherAlg.AES_GCM, CipherAlg.AES_GMAC,
                                      CipherAlg.CHACHA20_POLY1305, CipherAlg.AES_CCM,
                                      CipherAlg.AES_CTR)
        self._cbc_iv_len = 0 if self._counter_iv else iv_len
        self._fixed_iv: bytes | None = None
        if _fixed_iv is not None:
            # Test hook (known-answer vectors): every packet gets this CBC IV.
            if len(_fixed_iv) != self._cbc_iv_len or self._cbc_iv_len == 0:
                raise ValueError(f"_fixed_iv must be {self._cbc_iv_len} bytes of a CBC IV")
            self._fixed_iv = bytes(_fixed_iv)
        # Counter IVs follow the sequence number (a packet's IV is its sequence number - 1;
        # 2^64 - 1 is the core's "exhausted" mark), so an SA resumed with seq=N under the
        # same key never repeats an IV (RFC 4106 §3.1: never reuse an IV with a key).
        iv_next = int(seq) if _iv_counter is None else int(_iv_counter)
        if not 0 <= iv_next <= 0xFFFFFFFFFFFFFFFF:
            raise ValueError("_iv_counter must be a 64-bit unsigned value")
        self._lock = threading.Lock()
        self._core = _esp.SaCore(
            _PROTO_NUMBER[protocol], int(cipher), int(auth), ckey, akey, int(icv), self.spi,
            esn, self.local, self.peer, self.replay_window, int(seq), iv_next, int(_ip_id),
        )
        self._mode_id = _esp.MODE_IDS[mode]

    # -- state ---------------------------------------------------------------------------
    @property
    def seq(self) -> int:
        """The last outbound sequence number used (0 before the first packet)."""
        return int(self._core.seq)

    @property
    def rx_seq(self) -> int:
        """Highest inbound sequence number accepted so far (the anti-replay window's top)."""
        return int(self._core.rx_top)

    @property
    def local_address(self) -> str | None:
        """Tunnel source as a dotted quad (None when not given)."""
        return str(ipaddress.IPv4Address(self.local)) if self.local else None

    @property
    def peer_address(self) -> str | None:
        """Tunnel destination as a dotted quad (None when not given)."""
        return str(ipaddress.IPv4Address(self.peer)) if self.peer else None

    @property
    def closed(self) -> bool:
        return bool(self._core.closed)

    @property
    def counters(self) -> dict[str, int]:
        """Packets / bytes encapsulated and decapsulated, and drops per ``Status`` label."""
        enc_p, enc_b, dec_p, dec_b, per_status = self._core.counters()
        out = {
            "packets_encapsulated": int(enc_p),
            "bytes_encapsulated": int(enc_b),
            "packets_decapsulated": int(dec_p),
            "bytes_decapsulated": int(dec_b),
        }
        for st in Status:
            if 0 < st < 32:
                out[st.label] = int(per_status[st])
        return out

    def close(self) -> None:
        """Free the keyed OpenSSL contexts (cleansed) and wipe the salt; the SA is unusable
        afterwards."""
        with self._lock:
            self._core.close()

    def __enter__(self) -> SecurityAssociation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = " closed" if self.closed else ""
        return (f"SecurityAssociation({self.protocol} spi=0x{self.spi:08x} "
                f"'{self.transforms}' {self.mode} seq={self.seq}"
                f"{' esn' if self.esn else ''}{state})")

    # -- batches -------------------------------------------------------------------------
    def encapsulate(self, batch: PacketBatch) -> SaResult:
        """Protect every packet of ``batch`` (IPv4 packets)."""
        return self._encapsulate(batch, self._mode_id, 4)

    def decapsulate(self, batch: PacketBatch) -> SaResult:
        """Verify and open every packet (tunnel: the inner packet; transport: the original)."""
        return self._decapsulate(batch, self._mode_id)[0]

    def _max_growth(self, mode_id: int) -> int:
        """Most bytes ``_encapsulate`` in ``mode_id`` adds to one packet (<= OVERHEAD)."""
        return int(self._core.max_growth(mode_id))

    def _placed(self, batch: PacketBatch, out: npt.NDArray[np.uint8],
                out_offsets: npt.NDArray[np.int64], growth: int) -> None:
        """Programmer errors of an ``out=`` call, before any C call: packet i's slot
        ``out[out_offsets[i] : out_offsets[i] + lengths[i] + growth]`` inside ``out``."""
        if not isinstance(out, np.ndarray) or out.dtype != np.uint8 or out.ndim != 1 \
                or not out.flags.c_contiguous or not out.flags.writeable:
            raise TypeError("out must be a writable contiguous 1-D uint8 array")
        if not isinstance(out_offsets, np.ndarray) or out_offsets.dtype != np.int64 \
                or out_offsets.ndim != 1 or not out_offsets.flags.c_contiguous:
            raise TypeError("out_offsets must be a contiguous 1-D int64 array")
        n = len(batch)
        if out_offsets.size != n:
            raise ValueError(f"out_offsets has {out_offsets.size} entries for {n} packets")
        # offset > size - room, not offset + room > size: a huge offset must not wrap
        if n and (int(out_offsets.min()) < 0
                  or bool(np.any(out_offsets > out.size - growth - batch.lengths))):
            raise ValueError(f"out buffer of {out.size} bytes is too small: every packet "
                             f"needs its length + {growth} bytes at its offset")

    def _encapsulate(self, batch: PacketBatch, mode_id: int, next_header: int, *,
                     out: npt.NDArray[np.uint8] | None = None,
                     out_offsets: npt.NDArray[np.int64] | None = None) -> SaResult:
        """Encapsulate ``batch``. With ``out`` and ``out_offsets``, packet i is written
        at ``out[out_offsets[i]:]`` (slots of its length + ``_max_growth(mode_id)`` bytes
        that the caller keeps apart) and the result's packets are views of ``out``."""
        n = len(batch)
        placed = out is not None or out_offsets is not None
        if placed:
            if out is None or out_offsets is None:
                raise TypeError("out and out_offsets go together")
            self._placed(batch, out, out_offsets, self._max_growth(mode_id))
            off = out_offsets
        else:
            out = np.empty(_total(batch.lengths) + n * _OVERHEAD, dtype=np.uint8)
            off = np.empty(n, dtype=np.int64)
        lens = np.empty(n, dtype=np.int64)
        status = np.empty(n, dtype=np.uint8)
        random_iv = self._fixed_iv is None
        if self._cbc_iv_len and self.protocol == "esp":
            if random_iv:
                ivs = np.empty(n * self._cbc_iv_len, dtype=np.uint8)
            else:
                assert self._fixed_iv is not None
                ivs = np.tile(np.frombuffer(self._fixed_iv, dtype=np.uint8), n)
        else:
            ivs = np.empty(0, dtype=np.uint8)
        with self._lock:
            used = self._core.encapsulate(batch.buffer, batch.offsets, batch.lengths, out, off,
                                          lens, status, ivs, mode_id, random_iv, next_header,
                                          placed)
        return SaResult(_trusted_batch(out if placed else out[:used], off, lens), status)

    def _decapsulate(
        self, batch: PacketBatch, mode_id: int, *,
        out: npt.NDArray[np.uint8] | None = None,
        out_offsets: npt.NDArray[np.int64] | None = None,
    ) -> tuple[SaResult, npt.NDArray[np.uint8]]:
        """Decapsulate ``batch``; (result, next header per packet). ``out`` /
        ``out_offsets`` as for ``_encapsulate``, with slots of the packet's length."""
        n = len(batch)
        placed = out is not None or out_offsets is not None
        if placed:
            if out is None or out_offsets is None:
                raise TypeError("out and out_offsets go together")
            self._placed(batch, out, out_offsets, 0)
            off = out_offsets
        else:
            out = np.empty(_total(batch.lengths), dtype=np.uint8)
            off = np.empty(n, dtype=np.int64)
        lens = np.empty(n, dtype=np.int64)
        status = np.empty(n, dtype=np.uint8)
        nhs = np.zeros(n, dtype=np.uint8)
        with self._lock:
            used = self._core.decapsulate(batch.buffer, batch.offsets, batch.lengths, out, off,
                                          lens, status, mode_id, nhs, placed)
        return SaResult(_trusted_batch(out if placed else out[:used], off, lens), status), nhs

    # ESP-only entry points (SPI .. ICV, no IP header) for known-answer vectors.
    def _esp_payload_encapsulate(self, batch: PacketBatch, next_header: int) -> SaResult:
        if self.protocol != "esp":
            raise ValueError("ESP payload mode is for ESP SAs")
        return self._encapsulate(batch, _esp.MODE_IDS["raw"], next_header)

    def _esp_payload_decapsulate(
        self, batch: PacketBatch
    ) -> tuple[SaResult, npt.NDArray[np.uint8]]:
        if self.protocol != "esp":
            raise ValueError("ESP payload mode is for ESP SAs")
        return self._decapsulate(batch, _esp.MODE_IDS["raw"])


class SaBundle:
    """AH+ESP: ``encapsulate`` applies ESP (in its mode), then AH in transport mode over the
    result, so AH is outside (DESIGN.md §Transforms); ``decapsulate`` reverses it.

    A packet that fails a stage keeps that stage's status (length 0 from then on)."""

    def __init__(self, esp_sa: SecurityAssociation, ah_sa: SecurityAssociation) -> None:
        if esp_sa.protocol != "esp" or ah_sa.protocol != "ah":
            raise ValueError("SaBundle takes an ESP SA and an AH SA, in that order")
        self.esp = esp_sa
        self.ah = ah_sa

    def encapsulate(self, batch: PacketBatch) -> SaResult:
        first = self.esp.encapsulate(batch)
        return _chain(first, lambda b: self.ah._encapsulate(b, MODE_IDS["transport"], 4))

    def decapsulate(self, batch: PacketBatch) -> SaResult:
        first = self.ah._decapsulate(batch, MODE_IDS["transport"])[0]
        return _chain(first, self.esp.decapsulate)

    @property
    def seq(self) -> int:
        return self.esp.seq

    def close(self) -> None:
        self.esp.close()
        self.ah.close()

    def __repr__(self) -> str:
        return f"SaBundle({self.esp!r}, {self.ah!r})"


def _chain(first: SaResult, stage: Callable[[PacketBatch], SaResult]) -> SaResult:
    """Run ``stage`` on the packets that passed ``first``; a packet that failed keeps the
    first stage's status and is not shown to (or counted by) the second SA."""
    ok = first.status == 0
    if bool(ok.all()):
        return stage(first.packets)
    idx = np.nonzero(ok)[0]
    second = stage(first.packets[idx])
    n = len(first.status)
    status = first.status.copy()
    status[idx] = second.status
    off = np.zeros(n, dtype=np.int64)
    lens = np.zeros(n, dtype=np.int64)
    off[idx] = second.packets.offsets
    lens[idx] = second.packets.lengths
    return SaResult(_trusted_batch(second.packets.buffer, off, lens), status)


# -- several SAs in one call ----------------------------------------------------------------
def _multi_args(sas: Sequence[SecurityAssociation], sa_index: npt.ArrayLike,
                mode_ids: int | npt.ArrayLike, batch: PacketBatch, out: npt.NDArray[np.uint8],
                out_offsets: npt.NDArray[np.int64], encap: bool
                ) -> tuple[list[SecurityAssociation], npt.NDArray[np.int32],
                           npt.NDArray[np.uint8]]:
    """Programmer errors of a multi-SA call, before any C call: the SAs, one SA index and
    one mode per packet, the output arrays. (The core checks every index, mode and slot
    inside ``out`` again before it writes anything, and raises ValueError: the index
    range of an int32 ``sa_index`` and the slots are left to it.)"""
    sas = list(sas)
    for sa in sas:
        if not isinstance(sa, SecurityAssociation):
            raise TypeError(f"sas must be SecurityAssociations, not {type(sa).__name__}")
        if sa.closed:
            raise ValueError(f"{sa!r} is closed")
    n = len(batch)
    idx = np.asarray(sa_index)
    if idx.ndim != 1 or idx.size != n or (n and idx.dtype.kind not in "iu"):
        raise ValueError(f"sa_index must be {n} integers, one per packet")
    if n and idx.dtype != np.int32 and (int(idx.min()) < 0 or int(idx.max()) >= len(sas)):
        raise ValueError(f"sa_index must be 0..{len(sas) - 1}")  # (before int32 wraps it)
    idx = np.ascontiguousarray(idx, dtype=np.int32)
    lo, hi = min(_MULTI_MODES), max(_MULTI_MODES)  # (the ids are consecutive)
    if np.ndim(mode_ids) == 0:
        m = mode_ids
        if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or not lo <= m <= hi:
            raise ValueError("mode_ids must be MODE_IDS values (tunnel / transport)")
        modes = np.full(n, m, dtype=np.uint8)
    else:
        arr = np.asarray(mode_ids)
        if arr.shape != (n,) or (n and (arr.dtype.kind not in "iu" or int(arr.min()) < lo
                                        or int(arr.max()) > hi)):
            raise ValueError("mode_ids must be MODE_IDS values (tunnel / transport), "
                             "one per packet")
        modes = np.ascontiguousarray(arr, dtype=np.uint8)
    if not isinstance(out, np.ndarray) or out.dtype != np.uint8 or out.ndim != 1 \
            or not out.flags.c_contiguous or not out.flags.writeable:
        raise TypeError("out must be a writable contiguous 1-D uint8 array")
    if not isinstance(out_offsets, np.ndarray) or out_offsets.dtype != np.int64 \
            or out_offsets.ndim != 1 or not out_offsets.flags.c_contiguous:
        raise TypeError("out_offsets must be a contiguous 1-D int64 array")
    if out_offsets.size != n:
        raise ValueError(f"out_offsets has {out_offsets.size} entries for {n} packets")
    return sas, idx, modes


_MULTI_MODES = (MODE_IDS["tunnel"], MODE_IDS["transport"])

#: Below this many packets a multi-SA call stays on the calling thread (a thread hand-off
#: costs tens of microseconds; 4096 packets take about a millisecond).
PARALLEL_MIN_PACKETS = 4096
_POOL_WORKERS = 64  # the most threads one call may ask for (Router caps crypto_threads)
_pool_lock = threading.Lock()
_pool: list[Any] = []  # [ThreadPoolExecutor] once made; it starts threads as they are needed


def _executor() -> Any:
    """The module's thread pool: made once, never shut down (so no caller can find it
    gone between two submits), and made again in a child after ``fork`` (the parent's
    worker threads do not exist there)."""
    from concurrent.futures import ThreadPoolExecutor

    with _pool_lock:
        if not _pool:
            _pool.append(ThreadPoolExecutor(max_workers=_POOL_WORKERS,
                                            thread_name_prefix="ipsecfast-crypto"))
        return _pool[0]


def _forget_pool_in_child() -> None:
    global _pool_lock
    _pool_lock = threading.Lock()
    _pool.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_in_child)


def _sa_parts(idx: npt.NDArray[np.int32], lengths: npt.NDArray[np.int64], nsa: int,
              threads: int) -> npt.NDArray[np.int32] | None:
    """Which thread takes each SA's packets: the SAs by load (bytes + a per-packet cost),
    largest first, each to the least loaded thread (LPT scheduling). None when splitting
    cannot gain: one SA, or one SA with nearly all the work."""
    load = np.bincount(idx, weights=lengths + 64, minlength=nsa)
    used = np.flatnonzero(load)
    if used.size < 2 or float(load.max()) > 0.9 * float(load.sum()):
        return None
    parts = np.zeros(nsa, dtype=np.int32)
    bins = [0.0] * min(threads, int(used.size))
    for k in used[np.argsort(-load[used], kind="stable")].tolist():
        j = bins.index(min(bins))
        parts[k] = j
        bins[j] += float(load[k])
    return parts


def _run_multi(cores: list[_esp.SaCore], idx: npt.NDArray[np.int32],
               modes: npt.NDArray[np.uint8], batch: PacketBatch, out: npt.NDArray[np.uint8],
               out_offsets: npt.NDArray[np.int64], lens: npt.NDArray[np.int64],
               status: npt.NDArray[np.uint8], ivs: npt.NDArray[np.uint8] | None, encap: bool,
               random_iv: bool, next_header: int, nhs: npt.NDArray[np.uint8] | None,
               threads: int, stride: int,
               selected: tuple[npt.NDArray[np.uint32], npt.NDArray[np.uint8]] | None = None
               ) -> None:
    """``_esp.run_multi``, split over ``threads`` threads by SA when that pays: each SA's
    packets stay on one thread, in their order, so sequence numbers, IVs, replay windows
    and counters end exactly as with one call (the caller holds every SA's lock). Every
    part is waited for before an error is raised, so no thread still writes into ``out``.
    ``selected``: (selectors, in_selector) of ``_esp.run_multi``."""
    args = (cores, idx, modes, batch.buffer, batch.offsets, batch.lengths, out, out_offsets,
            lens, status, ivs, encap)
    sel: dict[str, Any] = ({} if selected is None
                           else {"selectors": selected[0], "in_selector": selected[1]})
    parts = None
    # (an SA listed twice would get two threads: never split then)
    if threads > 1 and len(batch) >= PARALLEL_MIN_PACKETS and len(cores) > 1 \
            and len({id(c) for c in cores}) == len(cores):
        if int(idx.min()) < 0 or int(idx.max()) >= len(cores):  # (the split reads them)
            raise ValueError(f"sa_index must be 0..{len(cores) - 1}")
        parts = _sa_parts(idx, batch.lengths, len(cores), min(threads, _POOL_WORKERS + 1))
    if parts is None:
        _esp.run_multi(*args, random_iv, next_header, nhs, **sel)
        return
    if encap and stride and random_iv:
        assert ivs is not None
        _esp.random_fill(ivs)  # once for every part: the parts then read their packets' IVs
    nparts = int(parts.max()) + 1
    pool = _executor()
    futures: list[Any] = []
    error: BaseException | None = None
    try:
        for p in range(1, nparts):
            futures.append(pool.submit(_esp.run_multi, *args, False, next_header, nhs,
                                       parts, p, **sel))
        _esp.run_multi(*args, False, next_header, nhs, parts, 0, **sel)
    except BaseException as err:  # (Ctrl-C included): the parts started still run
        error = err
    for fut in futures:  # every part started is waited for, whatever happened
        while True:
            try:
                fut.result()
                break
            except KeyboardInterrupt as err:  # not before the part is done with `out`
                error = error or err
            except BaseException as err:
                error = error or err
                break
    if error is not None:
        raise error


class _Locks:
    """Every SA's lock of a multi-SA call, taken in one fixed order (by ``id``), so two
    calls over overlapping SA sets never wait on each other in a cycle."""

    def __init__(self, sas: Sequence[SecurityAssociation]) -> None:
        self._locks = [sa._lock for sa in sorted({id(sa): sa for sa in sas}.values(), key=id)]

    def __enter__(self) -> None:
        taken = []
        try:
            for lock in self._locks:
                lock.acquire()
                taken.append(lock)
        except BaseException:
            for lock in reversed(taken):
                lock.release()
            raise

    def __exit__(self, *exc: object) -> None:
        for lock in reversed(self._locks):
            lock.release()


def _encapsulate_multi(sas: Sequence[SecurityAssociation], sa_index: npt.ArrayLike,
                       mode_ids: int | npt.ArrayLike, batch: PacketBatch,
                       out: npt.NDArray[np.uint8], out_offsets: npt.NDArray[np.int64],
                       next_header: int = 4, threads: int = 1) -> SaResult:
    """``_encapsulate`` of packets of several SAs in one core call, in input order: packet i
    with ``sas[sa_index[i]]`` in mode ``mode_ids[i]`` (or one mode for all) into ``out`` at
    ``out_offsets[i]`` (a slot of its length + that SA's ``_max_growth``). Sequence numbers,
    counter IVs and counters move per SA exactly as with one call per SA on its packets.
    ``threads``: up to this many threads, each SA's packets on one of them."""
    sas, idx, modes = _multi_args(sas, sa_index, mode_ids, batch, out, out_offsets, True)
    n = len(batch)
    stride = max([sa._cbc_iv_len for sa in sas if sa.protocol == "esp"], default=0)
    fixed = [sa._fixed_iv for sa in sas]
    random_iv = all(iv is None for iv in fixed)
    ivs = np.empty(n * stride, dtype=np.uint8)
    if stride and not random_iv:
        # test hook: the SAs with a fixed IV get it, the others fresh random ones
        ivs[:] = np.frombuffer(os.urandom(ivs.size), dtype=np.uint8)
        rows = ivs.reshape(n, stride)
        for k, iv in enumerate(fixed):
            if iv is not None:
                rows[idx == k, :len(iv)] = np.frombuffer(iv, dtype=np.uint8)
    lens = np.empty(n, dtype=np.int64)
    status = np.empty(n, dtype=np.uint8)
    cores = [sa._core for sa in sas]
    with _Locks(sas):
        _run_multi(cores, idx, modes, batch, out, out_offsets, lens, status, ivs, True,
                   random_iv, next_header, None, threads, stride)
    return SaResult(_trusted_batch(out, out_offsets, lens), status)


def _decapsulate_multi(sas: Sequence[SecurityAssociation], sa_index: npt.ArrayLike,
                       mode_ids: int | npt.ArrayLike, batch: PacketBatch,
                       out: npt.NDArray[np.uint8], out_offsets: npt.NDArray[np.int64],
                       threads: int = 1, selectors: npt.NDArray[np.uint32] | None = None,
                       in_selector: npt.NDArray[np.uint8] | None = None,
                       ) -> tuple[SaResult, npt.NDArray[np.uint8]]:
    """``_decapsulate`` of packets of several SAs in one core call (slots of the packet's
    length); (result, next header per packet). Replay windows and counters move per SA
    exactly as with one call per SA on its packets in their order. ``threads``: as for
    ``_encapsulate_multi``. ``selectors`` (one row of ranges per SA, see
    ``_esp.run_multi``) with ``in_selector`` (one uint8 per packet, written): 1 for a
    tunnel-mode packet whose inner packet lies in its SA's ranges, else 0 (which says
    nothing: check that packet another way)."""
    sas, idx, modes = _multi_args(sas, sa_index, mode_ids, batch, out, out_offsets, False)
    n = len(batch)
    lens = np.empty(n, dtype=np.int64)
    status = np.empty(n, dtype=np.uint8)
    nhs = np.zeros(n, dtype=np.uint8)
    cores = [sa._core for sa in sas]
    selected = None
    if (selectors is None) != (in_selector is None):
        raise ValueError("selectors and in_selector go together")
    if selectors is not None and in_selector is not None:
        sel = np.ascontiguousarray(selectors, dtype=np.uint32)
        if sel.shape != (len(sas), 10):
            raise ValueError(f"selectors must be ({len(sas)}, 10)")
        if in_selector.dtype != np.uint8 or in_selector.shape != (n,) \
                or not in_selector.flags.c_contiguous:
            raise ValueError(f"in_selector must be a contiguous uint8 array of {n}")
        in_selector[:] = 0
        selected = (sel, in_selector)
    with _Locks(sas):
        _run_multi(cores, idx, modes, batch, out, out_offsets, lens, status, None, False,
                   False, 0, nhs, threads, 0, selected)
    return SaResult(_trusted_batch(out, out_offsets, lens), status), nhs


#: A selector row that selects nothing (``_decapsulate_multi``'s ``selectors``).
NO_SELECTOR = (1, 0, 0, 0, 0, 0, 0, 0, 0, 0)


# -- inbound SA lookup -------------------------------------------------------------------------
# What ``spi_lookup`` says of each packet (RFC 4301 §5.2: an inbound IPsec packet is mapped to
# its SA by destination, protocol and SPI).
SPI_OK = int(_esp.SPI_OK)  # ESP / AH to the address, SPI of a known SA
SPI_OTHER = int(_esp.SPI_OTHER)  # empty, or not IPv4
SPI_CLEAR = int(_esp.SPI_CLEAR)  # IPv4 but not ESP / AH to the address (or a bad header)
SPI_FRAGMENT = int(_esp.SPI_FRAGMENT)
SPI_OPTIONS = int(_esp.SPI_OPTIONS)
SPI_TRUNCATED = int(_esp.SPI_TRUNCATED)  # too short to hold its SPI
SPI_UNKNOWN = int(_esp.SPI_UNKNOWN)  # no SA with that protocol and SPI


def spi_lookup(batch: PacketBatch, local: int, keys: npt.NDArray[np.int64]
               ) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int32]]:
    """(kind, slot) of every packet of ``batch`` arriving for the IPv4 address ``local``
    (an int; negative: no address, so nothing is addressed to it): the ``SPI_*`` kind,
    and for ``SPI_OK`` the index in ``keys`` (sorted ``protocol << 32 | SPI`` of the
    address's inbound SAs) of its SA, else -1. One compiled pass over the outer headers."""
    n = len(batch)
    kinds = np.empty(n, dtype=np.uint8)
    slots = np.empty(n, dtype=np.int32)
    _esp.spi_lookup(batch.buffer, batch.offsets, batch.lengths, max(local, 0),
                    np.ascontiguousarray(keys, dtype=np.int64), kinds, slots)
    if local < 0:
        kinds[kinds != SPI_OTHER] = SPI_CLEAR
        slots[:] = -1
    return kinds, slots
