"""``ipsecfast encrypt`` / ``decrypt`` / ``keys`` end to end, through ``cli.main([...])``.

Two routers from mirror-image manual configurations: A (192.0.2.1) encrypts, B
(198.51.100.2) decrypts. Captures are written by scapy (Ethernet and raw IPv4); every
transform family, tunnel and transport mode, ESP, AH and AH+ESP.

* decrypt(encrypt(x)) == x, byte for byte, as whole files (link headers, timestamps,
  non-IPv4 frames, bypassed frames and their trailers included);
* scapy opens A's output with the session keys (an oracle that shares no code with us);
* non-IPv4 and bypassed frames come out of ``encrypt`` untouched and in place;
* clear traffic that B expects protected, tampered and unknown-SPI ESP are dropped and
  counted by reason; ``--json`` carries the summary;
* bad configuration: exit 2 with the line number and no traceback; ambiguous interface,
  unknown interface, unreadable capture: exit 2 with a message.
"""

from __future__ import annotations

import json
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("scapy")
from scapy.layers.inet import ICMP, IP, TCP, UDP  # noqa: E402
from scapy.layers.inet6 import IPv6  # noqa: E402
from scapy.layers.ipsec import AH, ESP  # noqa: E402
from scapy.layers.ipsec import SecurityAssociation as ScapySA  # noqa: E402
from scapy.layers.l2 import ARP, LLC, SNAP, Dot1Q, Dot3, Ether  # noqa: E402
from scapy.packet import Packet, Raw  # noqa: E402
from scapy.utils import rdpcap, wrpcap  # noqa: E402

from ipsecfast import pcap  # noqa: E402
from ipsecfast.cli import main  # noqa: E402
from ipsecfast.packets import PacketBatch  # noqa: E402
from ipsecfast.transform import parse_transforms  # noqa: E402

A_ADDR, B_ADDR = "192.0.2.1", "198.51.100.2"
A_MAC, B_MAC = "02:00:00:00:00:0a", "02:00:00:00:00:0b"
T0 = 1_700_000_000.0

# Cisco keyword -> scapy algorithm name (scapy.layers.ipsec CRYPT_ALGOS / AUTH_ALGOS)
SCAPY_CIPHER = {
    "esp-aes": "AES-CBC", "esp-gcm": "AES-GCM", "esp-gmac": "AES-NULL-GMAC",
    "esp-chacha20-poly1305": "CHACHA20-POLY1305", "esp-aes-ctr": "AES-CTR",
    "esp-3des": "3DES", "esp-des": "DES", "esp-null": "NULL",
}
SCAPY_AUTH = {
    "esp-md5-hmac": "HMAC-MD5-96", "esp-sha-hmac": "HMAC-SHA1-96",
    "esp-sha256-hmac": "SHA2-256-128", "esp-sha384-hmac": "SHA2-384-192",
    "esp-sha512-hmac": "SHA2-512-256", "ah-md5-hmac": "HMAC-MD5-96",
    "ah-sha-hmac": "HMAC-SHA1-96", "ah-sha256-hmac": "SHA2-256-128",
}

# one transform set per family (cipher x authenticator, AEAD, AH, AH+ESP)
TRANSFORM_SETS = [
    "esp-aes esp-sha-hmac",
    "esp-aes 256 esp-sha256-hmac",
    "esp-aes 192 esp-sha384-hmac",
    "esp-aes-ctr esp-sha512-hmac",
    "esp-3des esp-md5-hmac",
    "esp-des esp-sha-hmac",
    "esp-null esp-sha-hmac",
    "esp-gcm",
    "esp-gcm 256",
    "esp-gmac",
    "esp-chacha20-poly1305",
    "ah-sha-hmac",
    "ah-sha256-hmac esp-aes esp-sha-hmac",
    "ah-md5-hmac esp-gcm",
]


@dataclass
class Sa:
    protocol: str
    spi: int
    cipher_key: bytes
    auth_key: bytes


@dataclass
class Pair:
    """Configurations of A and B for one transform set, and A's outbound SAs."""

    a: Path
    b: Path
    transforms: str
    mode: str
    a_out: dict[str, Sa]


def _key(n: int, seed: int) -> bytes:
    return bytes((seed * 37 + i * 11) & 0xFF for i in range(n))


def _session_keys(ts_text: str, a_side: bool) -> tuple[list[str], dict[str, Sa]]:
    """`set session-key` lines for one side; SPIs and keys mirrored between A and B."""
    ts = parse_transforms(ts_text)
    lines: list[str] = []
    out: dict[str, Sa] = {}
    # (direction of A, protocol) -> spi; B uses the same SA with the direction swapped
    for proto, has in (("ah", ts.has_ah), ("esp", ts.has_esp)):
        if not has:
            continue
        for a_dir, spi in (("outbound", 0x1100 if proto == "esp" else 0x2100),
                           ("inbound", 0x1200 if proto == "esp" else 0x2200)):
            seed = spi & 0xFFFF
            ck = _key(ts.cipher_key_length, seed) if proto == "esp" else b""
            ak = _key(ts.ah_key_length if proto == "ah" else ts.auth_key_length, seed + 1)
            direction = a_dir if a_side else ("inbound" if a_dir == "outbound" else "outbound")
            if proto == "ah":
                lines.append(f" set session-key {direction} ah {spi} {ak.hex()}")
            else:
                words = [f" set session-key {direction} esp {spi}"]
                if ck:
                    words.append(f"cipher {ck.hex()}")
                if ak:
                    words.append(f"authenticator {ak.hex()}")
                lines.append(" ".join(words))
            if a_dir == "outbound":
                out[proto] = Sa(proto, spi, ck, ak)
    return lines, out


def _config(local: str, peer: str, acl: str, ts_text: str, mode: str, keys: list[str],
            extra: str = "") -> str:
    return "\n".join([
        "hostname test",
        f"crypto ipsec transform-set T {ts_text}",
        f" mode {mode}",
        f"access-list 101 {acl}",
        "crypto map vpn 10 ipsec-manual",
        f" set peer {peer}",
        " set transform-set T",
        *keys,
        " match address 101",
        "interface GigabitEthernet0/0",
        f" ip address {local} 255.255.255.0",
        " crypto map vpn",
        "interface GigabitEthernet0/1",
        " ip address 10.9.0.1 255.255.0.0",
        extra,
        "end",
        "",
    ])


def make_pair(tmp: Path, ts_text: str, mode: str = "tunnel") -> Pair:
    if mode == "tunnel":
        acl_a = "permit ip 10.1.0.0 0.0.255.255 10.2.0.0 0.0.255.255"
        acl_b = "permit ip 10.2.0.0 0.0.255.255 10.1.0.0 0.0.255.255"
    else:  # transport applies between the two peers only (DESIGN.md §Policy 7)
        acl_a = f"permit udp host {A_ADDR} host {B_ADDR}"
        acl_b = f"permit udp host {B_ADDR} host {A_ADDR}"
    keys_a, a_out = _session_keys(ts_text, a_side=True)
    keys_b, _ = _session_keys(ts_text, a_side=False)
    a = tmp / "a.cfg"
    b = tmp / "b.cfg"
    a.write_text(_config(A_ADDR, B_ADDR, acl_a, ts_text, mode, keys_a))
    b.write_text(_config(B_ADDR, A_ADDR, acl_b, ts_text, mode, keys_b))
    return Pair(a, b, ts_text, mode, a_out)


# -- traffic ------------------------------------------------------------------------------

def protected_packets(mode: str, n: int = 12) -> list[IP]:
    """IPv4 packets A's crypto map protects: UDP / TCP / ICMP, 20 .. 1400 bytes."""
    out = []
    sizes = [0, 1, 7, 8, 15, 16, 17, 64, 255, 512, 1000, 1372]
    for i in range(n):
        body = Raw(bytes((i + j) & 0xFF for j in range(sizes[i % len(sizes)])))
        if mode == "transport":
            out.append(IP(src=A_ADDR, dst=B_ADDR, id=i, tos=i * 4) / UDP(sport=5000 + i, dport=53) / body)
            continue
        src, dst = f"10.1.0.{1 + i % 5}", f"10.2.{i % 3}.{1 + i}"
        l4 = (UDP(sport=4000 + i, dport=53), TCP(sport=4000 + i, dport=80, flags="PA"),
              ICMP(id=i, seq=i))[i % 3]
        out.append(IP(src=src, dst=dst, id=0x100 + i, ttl=64 - i, flags="DF" if i % 2 else 0)
                   / l4 / body)
    return out


def bypass_packets() -> list[IP]:
    """IPv4 packets no crypto map entry protects (A and B both let them through)."""
    return [
        IP(src="10.1.0.7", dst="172.16.0.1") / UDP(sport=1, dport=2) / Raw(b"clear"),
        IP(src="10.9.0.9", dst="10.3.0.1") / ICMP(),
    ]


def eth(frame: Packet) -> Ether:
    """An Ethernet frame as on the wire: padded with zeros to the 60-byte minimum (IEEE
    802.3, FCS not captured); scapy itself builds runts."""
    return Ether(bytes(frame).ljust(60, b"\0"))


def ip_of(payload: bytes) -> bytes:
    """The IPv4 packet at the start of ``payload``, without the Ethernet padding after it
    (cut at the IPv4 total length)."""
    return payload[: int.from_bytes(payload[2:4], "big")]


def build_capture(path: Path, packets: list, ethernet: bool, *, pad_bypass: bool = True) -> None:
    """Frames in order with distinct timestamps; Ethernet frames padded to 60 bytes as on
    the wire. Ethernet captures get an ARP frame and an IPv6 frame (non-IPv4), raw ones an
    IPv6 packet; one bypassed Ethernet frame carries a 4-byte trailer (an FCS) after its
    padding that must survive untouched."""
    frames = []
    if ethernet:
        frames.append(eth(Ether(src=A_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(psrc=A_ADDR, pdst=B_ADDR)))
    for i, p in enumerate(packets):
        frames.append(eth(Ether(src=A_MAC, dst=B_MAC) / p) if ethernet else p)
        if i == 2:
            frames.append(eth(Ether(src=A_MAC, dst=B_MAC) / IPv6(dst="2001:db8::1") / UDP())
                          if ethernet else IPv6(dst="2001:db8::1") / UDP())
    if ethernet and pad_bypass:
        padded = bytes(eth(Ether(src=A_MAC, dst=B_MAC) / bypass_packets()[1]))
        frames.append(Ether(padded + b"\xde\xad\xbe\xef"))
    for i, f in enumerate(frames):
        f.time = T0 + i * 0.001 + 0.000001 * i
    wrpcap(str(path), frames, linktype=1 if ethernet else 101)


def run(*argv: str | Path) -> int:
    return main([str(a) for a in argv])


def encrypt(pair: Pair, src: Path, dst: Path, *extra: str) -> int:
    return run("encrypt", "--config", pair.a, "--quiet", *extra, src, dst)


def decrypt(pair: Pair, src: Path, dst: Path, *extra: str) -> int:
    return run("decrypt", "--config", pair.b, "--quiet", *extra, src, dst)


def summary(capsys: pytest.CaptureFixture[str]) -> dict:
    return json.loads(capsys.readouterr().out)


# -- the scapy oracle ---------------------------------------------------------------------

def scapy_open(pair: Pair, frame_bytes: bytes, ethernet: bool) -> bytes:
    """The inner packet of one of A's protected frames, opened by scapy with the keys."""
    ts = parse_transforms(pair.transforms)
    pkt = IP(frame_bytes[14:] if ethernet else frame_bytes)
    tunnel = IP(src=A_ADDR, dst=B_ADDR) if pair.mode == "tunnel" else None
    if ts.has_ah:
        ah = pair.a_out["ah"]
        sa = ScapySA(AH, spi=ah.spi, auth_algo=SCAPY_AUTH[str(ts.ah.keyword)],
                     auth_key=ah.auth_key,
                     tunnel_header=tunnel if not ts.has_esp else None)
        pkt = IP(bytes(sa.decrypt(pkt)))  # re-dissect what AH protected
    if ts.has_esp:
        esp = pair.a_out["esp"]
        sa = ScapySA(
            ESP, spi=esp.spi,
            crypt_algo=SCAPY_CIPHER[ts.esp_cipher.keyword] if ts.esp_cipher else "NULL",
            crypt_key=esp.cipher_key or None,
            auth_algo=SCAPY_AUTH[ts.esp_auth.keyword] if ts.esp_auth else None,
            auth_key=esp.auth_key or None,
            tunnel_header=tunnel,
        )
        pkt = sa.decrypt(pkt)
    return bytes(pkt)


# -- round trips over every family --------------------------------------------------------

@pytest.mark.parametrize("ethernet", [True, False], ids=["ether", "raw"])
@pytest.mark.parametrize("mode", ["tunnel", "transport"])
@pytest.mark.parametrize("ts_text", TRANSFORM_SETS)
def test_round_trip_and_scapy_oracle(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     ts_text: str, mode: str, ethernet: bool) -> None:
    pair = make_pair(tmp_path, ts_text, mode)
    prot = protected_packets(mode)
    byp = bypass_packets()
    # bypassed packets interleaved with the protected ones
    packets = prot[:3] + byp[:1] + prot[3:8] + byp[1:] + prot[8:]
    clear = tmp_path / "clear.pcap"
    build_capture(clear, packets, ethernet)
    enc, dec = tmp_path / "enc.pcap", tmp_path / "dec.pcap"

    assert encrypt(pair, clear, enc, "--json") == 0
    s = summary(capsys)
    n_frames = len(rdpcap(str(clear)))
    n_other = 2 if ethernet else 1
    n_bypass = len(byp) + (1 if ethernet else 0)
    assert (s["packets_in"], s["non_ipv4"]) == (n_frames, n_other)
    assert (s["protected"], s["bypassed"], s["dropped"]) == (len(prot), n_bypass, 0)
    assert s["packets_out"] == n_frames and s["dropped_by_reason"] == {}

    before, after = pcap.read(clear), pcap.read(enc)
    assert after.linktype == before.linktype
    assert list(after.timestamps) == list(before.timestamps)
    b_frames, a_frames = before.frames.to_list(), after.frames.to_list()
    l3 = 14 if ethernet else 0
    inner = {bytes(p) for p in prot}
    opened = 0
    for old, new in zip(b_frames, a_frames, strict=True):
        if ip_of(old[l3:]) in inner:
            assert new != old
            assert new[:l3] == old[:l3]  # link header kept
            outer = IP(new[l3:])
            assert outer.proto == (51 if parse_transforms(ts_text).has_ah else 50)
            assert scapy_open(pair, new, ethernet) == ip_of(old[l3:])
            opened += 1
        else:  # non-IPv4 and bypassed: untouched, trailers included
            assert new == old
    assert opened == len(prot)

    assert decrypt(pair, enc, dec, "--json") == 0
    s = summary(capsys)
    assert (s["protected"], s["bypassed"], s["dropped"]) == (len(prot), n_bypass, 0)
    assert dec.read_bytes() == clear.read_bytes()


@pytest.mark.parametrize("mode", ["tunnel", "transport"])
def test_padded_short_frames_survive_the_round_trip(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str],
                                                    mode: str) -> None:
    """A 60-byte Ethernet frame carrying a 28-byte IPv4 packet (plain, 802.1Q-tagged and
    802.3 LLC/SNAP) comes back from encrypt -> decrypt byte for byte, padding and wire
    length included: the rebuilt frame is padded again, not a 42-byte runt."""
    pair = make_pair(tmp_path, "esp-aes esp-sha-hmac", mode)
    if mode == "tunnel":
        small = IP(src="10.1.0.1", dst="10.2.0.1", id=7) / ICMP(id=1, seq=1)
    else:
        small = IP(src=A_ADDR, dst=B_ADDR, id=7) / UDP(sport=5000, dport=53)
    assert len(small) == 28
    heads = [Ether(src=A_MAC, dst=B_MAC), Ether(src=A_MAC, dst=B_MAC) / Dot1Q(vlan=10),
             Dot3(src=A_MAC, dst=B_MAC) / LLC() / SNAP(code=0x0800)]
    frames = [eth(h / small) for h in heads]
    assert [len(f) for f in frames] == [60, 60, 60]
    for i, f in enumerate(frames):
        f.time = T0 + i
    clear, enc, dec = tmp_path / "clear.pcap", tmp_path / "enc.pcap", tmp_path / "dec.pcap"
    wrpcap(str(clear), frames, linktype=1)
    assert encrypt(pair, clear, enc, "--json") == 0
    assert summary(capsys)["protected"] == len(frames)
    assert all(len(f) >= 60 for f in pcap.read(enc).frames.to_list())
    assert decrypt(pair, enc, dec, "--json") == 0
    assert summary(capsys)["protected"] == len(frames)
    assert dec.read_bytes() == clear.read_bytes()
    out = pcap.read(dec)
    assert out.frames.lengths.tolist() == out.orig_lengths.tolist() == [60, 60, 60]
    assert out.ip_packets().to_list() == [bytes(small)] * len(frames)


# -- chunks, drops, summary, keys, show ---------------------------------------------------

def test_chunks_do_not_change_the_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # ESP-NULL has no IV, so a fresh router encrypts deterministically (counter-IV
    # transforms under manual keys start at a random IV, by design: see the router).
    pair = make_pair(tmp_path, "esp-null esp-sha-hmac")
    clear = tmp_path / "clear.pcap"
    build_capture(clear, protected_packets("tunnel", 40) + bypass_packets(), ethernet=True)
    whole, chunked, dec = tmp_path / "whole.pcap", tmp_path / "chunked.pcap", tmp_path / "d.pcap"
    assert encrypt(pair, clear, whole) == 0
    assert encrypt(pair, clear, chunked, "--chunk-packets", "3") == 0
    assert chunked.read_bytes() == whole.read_bytes()
    assert decrypt(pair, chunked, dec, "--chunk-packets", "7") == 0
    assert dec.read_bytes() == clear.read_bytes()
    capsys.readouterr()


def round_trip(tmp: Path, ts_text: str) -> tuple[Path, Path]:
    """``encrypt`` then ``decrypt`` 40 protected and the bypassed packets (Ethernet);
    checks that the result is the input, byte for byte; (input, encrypted) paths."""
    pair = make_pair(tmp, ts_text)
    clear = tmp / "clear.pcap"
    build_capture(clear, protected_packets("tunnel", 40) + bypass_packets(), ethernet=True)
    enc, dec = tmp / "e.pcap", tmp / "d.pcap"
    assert encrypt(pair, clear, enc) == 0
    assert decrypt(pair, enc, dec) == 0
    assert dec.read_bytes() == clear.read_bytes()
    return clear, enc


@pytest.mark.parametrize("allowed", [{0, 1, 2, 3}, {5}])
def test_reader_and_writer_threads_share_one_cpu(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        allowed: set[int]) -> None:
    """The reader and writer threads of ``encrypt`` / ``decrypt`` keep to the last CPU the
    process may use (the router's thread is left alone); with one CPU, nothing is pinned.
    The output is the same either way."""
    import os
    import threading

    main_thread = threading.get_ident()
    calls: list[tuple[str, set[int]]] = []
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(allowed), raising=False)

    def record(pid: int, cpus: set[int]) -> None:
        assert pid == 0 and threading.get_ident() != main_thread
        calls.append((threading.current_thread().name, set(cpus)))

    monkeypatch.setattr(os, "sched_setaffinity", record, raising=False)
    round_trip(tmp_path, "esp-null esp-sha-hmac")
    if len(allowed) >= 2:
        assert sorted(calls) == sorted([("ipsecfast-reader", {3}), ("ipsecfast-writer", {3})] * 2)
    else:
        assert calls == []
    capsys.readouterr()


FALLOCATE_FS = {"ext4", "xfs", "btrfs", "tmpfs"}  # (Linux file systems with fallocate)


def fs_type(path: Path) -> str:
    """The type of the file system ``path`` is on (/proc/mounts; "?" elsewhere)."""
    best, kind = "", "?"
    try:
        with open("/proc/mounts") as fh:
            for line in fh:
                _, point, typ = line.split()[:3]
                inside = str(path.resolve()).startswith(point.rstrip("/") + "/") or point == "/"
                if inside and len(point) > len(best):
                    best, kind = point, typ
    except OSError:
        pass
    return kind


def test_preallocate_allocates_blocks_and_keeps_the_size(tmp_path: Path) -> None:
    """The file stays empty (a run killed half way leaves only what it wrote) while its
    blocks are allocated; a request for more room than the file system has is not made
    (nothing allocated, the file untouched); nothing is asked for 0 bytes."""
    import os

    from ipsecfast.cli import _preallocate

    path = tmp_path / "p.bin"
    with open(path, "wb") as fh:
        ok = _preallocate(fh.fileno(), 1 << 20)
        if not ok and fs_type(tmp_path) not in FALLOCATE_FS:
            pytest.skip(f"{tmp_path} is on {fs_type(tmp_path)}, which may have no fallocate")
        assert ok
        st = path.stat()
        assert st.st_size == 0 and st.st_blocks * 512 >= 1 << 20
        fh.write(b"x" * 1000)
    assert path.stat().st_size == 1000
    with open(path, "wb") as fh:
        vfs = os.fstatvfs(fh.fileno())
        assert not _preallocate(fh.fileno(), vfs.f_bavail * vfs.f_frsize + (1 << 30))
        assert not _preallocate(fh.fileno(), 0)
        assert path.stat().st_size == 0 and path.stat().st_blocks == 0


def allocated(path: Path) -> int:
    return path.stat().st_blocks * 512


def preallocate_more(monkeypatch: pytest.MonkeyPatch, granted: bool = True) -> list[int]:
    """``encrypt`` / ``decrypt`` preallocate 4 MB more than they ask for (so that blocks
    not given back would show in ``st_blocks``), or, ``granted=False``, nothing; returns
    the sizes asked for."""
    import ipsecfast.cli as cli

    asked: list[int] = []
    real = cli._preallocate

    def spy(fd: int, nbytes: int) -> bool:
        asked.append(nbytes)
        return real(fd, nbytes + (4 << 20)) if granted else False

    monkeypatch.setattr(cli, "_preallocate", spy)
    return asked


@pytest.mark.parametrize("granted", [True, False])
def test_outputs_are_cut_to_their_records_whether_preallocated_or_not(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        granted: bool) -> None:
    """``encrypt`` / ``decrypt`` ask for the output's blocks up front (a quarter more than
    the input when encrypting) and give back what they did not write when they close;
    where that is refused they write as before. The files are the same either way."""
    asked = preallocate_more(monkeypatch, granted)
    clear, enc = round_trip(tmp_path, "esp-aes esp-sha-hmac")  # (decrypt(encrypt(x)) == x)
    size = clear.stat().st_size
    assert asked == [size + size // 4, enc.stat().st_size]
    assert len(pcap.read(enc).frames) == len(pcap.read(clear).frames)
    for out in (enc, tmp_path / "d.pcap"):  # (the 4 MB extra were given back)
        assert allocated(out) < out.stat().st_size + (1 << 20)
    capsys.readouterr()


def test_crypto_threads_option(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    """``--crypto-threads N`` reaches ``Router(crypto_threads=N)`` and changes no byte of
    the output; a value that is not a thread count is a usage error (exit 2)."""
    import ipsecfast.cli as cli
    from ipsecfast.router import Router

    made: list[int] = []
    real = cli._router

    def spy(config: object, crypto_threads: int | None = None) -> Router:
        router = real(config, crypto_threads)  # type: ignore[arg-type]
        made.append(router.crypto_threads)
        return router

    monkeypatch.setattr(cli, "_router", spy)
    pair = make_pair(tmp_path, "esp-null esp-sha-hmac")
    clear = tmp_path / "clear.pcap"
    build_capture(clear, protected_packets("tunnel", 40) + bypass_packets(), ethernet=True)
    one, two, dec = tmp_path / "one.pcap", tmp_path / "two.pcap", tmp_path / "d.pcap"
    assert encrypt(pair, clear, one, "--crypto-threads", "1") == 0
    assert encrypt(pair, clear, two, "--crypto-threads", "3") == 0
    assert decrypt(pair, two, dec, "--crypto-threads", "2") == 0
    assert made == [1, 3, 2]
    assert two.read_bytes() == one.read_bytes()
    assert dec.read_bytes() == clear.read_bytes()
    for bad in ("0", "65", "x"):
        with pytest.raises(SystemExit) as exc:
            encrypt(pair, clear, tmp_path / "bad.pcap", "--crypto-threads", bad)
        assert exc.value.code == 2
        assert "thread count" in capsys.readouterr().err


def test_drops_are_counted_by_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pair = make_pair(tmp_path, "esp-aes esp-sha-hmac")
    prot = protected_packets("tunnel", 6)
    clear = tmp_path / "clear.pcap"
    build_capture(clear, prot, ethernet=False)
    enc = tmp_path / "enc.pcap"
    assert encrypt(pair, clear, enc) == 0
    capsys.readouterr()
    frames = [bytes(f) for f in rdpcap(str(enc))]
    esp = [f for f in frames if f[9] == 50]
    tampered = bytearray(esp[0])
    tampered[40] ^= 0x01  # inside the ciphertext: the ICV no longer matches
    unknown_spi = bytearray(esp[1])
    unknown_spi[20:24] = (0x7777).to_bytes(4, "big")
    # clear traffic B's crypto map would protect: it should have arrived protected
    should_be_protected = bytes(IP(src="10.1.0.1", dst="10.2.0.1") / UDP(sport=1, dport=2))
    mixed = tmp_path / "mixed.pcap"
    wrpcap(str(mixed), [IP(bytes(b)) for b in
                        (*esp, bytes(tampered), bytes(unknown_spi), should_be_protected)],
           linktype=101)
    out = tmp_path / "out.pcap"
    assert decrypt(pair, mixed, out, "--json") == 0
    s = summary(capsys)
    assert s["packets_in"] == len(esp) + 3
    assert (s["protected"], s["dropped"]) == (len(esp), 3)
    assert sum(s["dropped_by_reason"].values()) == 3
    assert s["dropped_by_reason"].get("icv-mismatch") == 1
    assert s["packets_out"] == len(esp)
    # the survivors are exactly the inner packets, in order
    assert [bytes(p) for p in rdpcap(str(out))] == [bytes(p) for p in prot]

    # the human summary names the reasons too
    assert decrypt(pair, mixed, out) == 0
    text = capsys.readouterr().out
    assert "dropped" in text and "icv-mismatch 1" in text


def test_json_summary_fields(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pair = make_pair(tmp_path, "esp-aes esp-sha-hmac")
    clear = tmp_path / "clear.pcap"
    build_capture(clear, protected_packets("tunnel", 5) + bypass_packets(), ethernet=True)
    assert encrypt(pair, clear, tmp_path / "e.pcap", "--json", "--show-sa") == 0
    s = summary(capsys)
    for field in ("command", "interface", "input", "output", "linktype", "packets_in", "ipv4",
                  "non_ipv4", "protected", "bypassed", "dropped", "dropped_by_reason",
                  "packets_out", "bytes_in", "bytes_out", "seconds", "packets_per_second",
                  "megabits_per_second", "show_crypto_ipsec_sa"):
        assert field in s, field
    assert s["command"] == "encrypt" and s["interface"] == "GigabitEthernet0/0"
    assert s["linktype"] == 1 and s["ipv4"] == 5 + 3
    assert s["bytes_out"] > s["bytes_in"]
    assert "0x00001100" in s["show_crypto_ipsec_sa"].lower() or "4352" in s["show_crypto_ipsec_sa"]


def test_human_summary_and_show_sa(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pair = make_pair(tmp_path, "esp-gcm 256")
    clear = tmp_path / "clear.pcap"
    build_capture(clear, protected_packets("tunnel", 4), ethernet=False)
    assert encrypt(pair, clear, tmp_path / "e.pcap", "--show-sa") == 0
    out = capsys.readouterr().out
    assert "encrypt on GigabitEthernet0/0: 5 packets in (4 IPv4, 1 other)" in out
    assert "protected    4" in out
    assert "Kpps" in out
    assert "GigabitEthernet0/0" in out.split("Mbit/s", 1)[1]  # show crypto ipsec sa follows
    assert _key(36, 0x1100).hex() not in out  # no keys in show output


def test_keys_command_and_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pair = make_pair(tmp_path, "ah-sha-hmac esp-aes 256 esp-sha256-hmac")
    assert run("keys", "--config", pair.a, "--format", "wireshark") == 0
    text = capsys.readouterr().out
    rows = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert len(rows) == 2  # the two ESP SAs; AH is a comment
    esp = pair.a_out["esp"]
    assert (f'"IPv4","{A_ADDR}","{B_ADDR}","0x{esp.spi:08x}","AES-CBC [RFC3602]",'
            f'"0x{esp.cipher_key.hex()}","HMAC-SHA-256-128 [RFC4868]","0x{esp.auth_key.hex()}"'
            ) in rows
    assert any(f'"{B_ADDR}","{A_ADDR}","0x00001200"' in r for r in rows)
    assert sum("# AH SPI" in ln and "no AH key table" in ln for ln in text.splitlines()) == 2

    out = tmp_path / "esp_sa"
    assert run("keys", "--config", pair.a, "-o", out) == 0
    assert "wrote 2 Wireshark ESP SA entries" in capsys.readouterr().err
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert [ln for ln in out.read_text().splitlines() if not ln.startswith("#")] == rows

    clear = tmp_path / "clear.pcap"
    build_capture(clear, protected_packets("tunnel", 3), ethernet=False)
    exported = tmp_path / "run_keys"
    assert encrypt(pair, clear, tmp_path / "e.pcap", "--export-keys", str(exported)) == 0
    assert [ln for ln in exported.read_text().splitlines() if not ln.startswith("#")] == rows


def test_keys_comment_what_wireshark_cannot_decode(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    for ts_text, why in (("esp-gmac", "AES-GMAC"), ("esp-chacha20-poly1305", "ChaCha20")):
        pair = make_pair(tmp_path, ts_text)
        assert run("keys", "--config", pair.a) == 0
        lines = capsys.readouterr().out.splitlines()
        assert not [ln for ln in lines if ln and not ln.startswith("#")]
        assert sum(why in ln and "cannot decode" in ln for ln in lines) == 2


def test_help_says_where_keys_are_written(capsys: pytest.CaptureFixture[str]) -> None:
    for cmd in ("keys", "encrypt", "decrypt"):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        assert "one place ipsecfast writes keys" in " ".join(capsys.readouterr().out.split())


# -- errors --------------------------------------------------------------------------------

def test_bad_config_exit_2_with_line_number(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pair = make_pair(tmp_path, "esp-aes esp-sha-hmac")
    text = pair.a.read_text().splitlines()
    bad_line = text.index(" match address 101") + 1
    text.insert(bad_line, "access-list 101 permit ipp any any")
    pair.a.write_text("\n".join(text))
    clear = tmp_path / "clear.pcap"
    build_capture(clear, protected_packets("tunnel", 2), ethernet=False)
    for argv in (("encrypt", "--config", pair.a, clear, tmp_path / "o.pcap"),
                 ("decrypt", "--config", pair.a, clear, tmp_path / "o.pcap"),
                 ("keys", "--config", pair.a)):
        assert run(*argv) == 2
        err = capsys.readouterr().err
        assert f"{bad_line + 1}: access-list 101 permit ipp any any" in err
        assert "% Invalid input detected at '^' marker." in err
        assert "Traceback" not in err
    assert not (tmp_path / "o.pcap").exists()


def test_ambiguous_interface(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pair = make_pair(tmp_path, "esp-aes esp-sha-hmac")
    pair.a.write_text(pair.a.read_text().replace(
        "end\n", "interface Serial0/0\n ip address 203.0.113.1 255.255.255.252\n crypto map vpn\nend\n"))
    clear = tmp_path / "clear.pcap"
    build_capture(clear, protected_packets("tunnel", 3), ethernet=False)
    out = tmp_path / "o.pcap"
    assert encrypt(pair, clear, out) == 2
    err = capsys.readouterr().err
    assert "GigabitEthernet0/0" in err and "Serial0/0" in err and "--interface" in err
    # naming one (any IOS spelling) resolves it
    assert encrypt(pair, clear, out, "--interface", "gi0/0", "--json") == 0
    assert summary(capsys)["protected"] == 3
    assert encrypt(pair, clear, out, "--interface", "Gi9/9") == 2
    assert "Gi9/9" in capsys.readouterr().err


def test_unreadable_capture_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pair = make_pair(tmp_path, "esp-aes esp-sha-hmac")
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"this is not a capture file")
    assert encrypt(pair, junk, tmp_path / "o.pcap") == 2
    err = capsys.readouterr().err
    assert "not a pcap or pcapng file" in err and "Traceback" not in err
    assert encrypt(pair, tmp_path / "missing.pcap", tmp_path / "o.pcap") == 2
    assert "missing.pcap" in capsys.readouterr().err


def test_empty_capture(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pair = make_pair(tmp_path, "esp-aes esp-sha-hmac")
    empty = tmp_path / "empty.pcap"
    pcap.write(empty, pcap.Capture(PacketBatch.empty(), pcap.LINKTYPE_ETHERNET))
    out = tmp_path / "o.pcap"
    assert encrypt(pair, empty, out, "--json") == 0
    assert summary(capsys)["packets_in"] == 0
    assert out.read_bytes() == empty.read_bytes()


def test_keys_are_secret_outside_the_keys_file(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    pair = make_pair(tmp_path, "esp-aes esp-sha-hmac")
    clear = tmp_path / "clear.pcap"
    build_capture(clear, protected_packets("tunnel", 3), ethernet=False)
    assert encrypt(pair, clear, tmp_path / "e.pcap", "--show-sa", "--json") == 0
    captured = capsys.readouterr()
    for sa in pair.a_out.values():
        for key in (sa.cipher_key, sa.auth_key):
            assert key.hex() not in captured.out and key.hex() not in captured.err


def test_pcapng_and_nanosecond_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from scapy.utils import wrpcapng

    pair = make_pair(tmp_path, "esp-aes esp-sha-hmac")
    frames = [eth(Ether(src=A_MAC, dst=B_MAC) / p)
              for p in protected_packets("tunnel", 6) + bypass_packets()]
    for i, f in enumerate(frames):
        f.time = T0 + i * 0.25
    ng = tmp_path / "in.pcapng"
    wrpcapng(str(ng), frames)
    enc, dec = tmp_path / "enc.pcap", tmp_path / "dec.pcap"
    assert encrypt(pair, ng, enc) == 0 and decrypt(pair, enc, dec) == 0
    src, out = pcap.read(ng), pcap.read(dec)
    assert out.linktype == src.linktype == pcap.LINKTYPE_ETHERNET
    assert out.frames.to_list() == src.frames.to_list()
    assert list(out.timestamps) == list(src.timestamps)

    # nanosecond timestamps stay nanosecond, to the nanosecond
    clear = tmp_path / "ns.pcap"
    cap = pcap.read(ng)
    pcap.write(clear, cap, timestamps=cap.timestamps + np.arange(len(cap)) * 7 + 3,
               nanosecond=True)
    assert encrypt(pair, clear, enc) == 0 and decrypt(pair, enc, dec) == 0
    assert pcap.read(enc).nanosecond
    assert dec.read_bytes() == clear.read_bytes()
    capsys.readouterr()


def test_snaplen_covers_a_jumbo_frame_in_a_later_chunk(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    pair = make_pair(tmp_path, "esp-gcm")
    big = IP(src="10.9.0.1", dst="10.9.0.2") / UDP() / Raw(bytes(65535 - 28))  # bypassed
    clear = tmp_path / "clear.pcap"
    build_capture(clear, protected_packets("tunnel", 2) + [big], ethernet=True, pad_bypass=False)
    enc = tmp_path / "enc.pcap"
    assert encrypt(pair, clear, enc, "--chunk-packets", "1", "--json") == 0
    assert summary(capsys)["bypassed"] == 1
    data = enc.read_bytes()
    assert int.from_bytes(data[16:20], "little") == 65535 + 14  # SnapLen
    assert pcap.read(enc).frames[-1] == pcap.read(clear).frames[-1]


def fail_outbound_at(monkeypatch: pytest.MonkeyPatch, call: int) -> None:
    """``Router.outbound`` raises InternalError (a simulated OpenSSL failure) on its
    ``call``-th call."""
    from ipsecfast.exceptions import InternalError
    from ipsecfast.router import Router

    real = Router.outbound
    calls = []

    def failing(self: Router, ifname: str, batch: object) -> object:
        calls.append(1)
        if len(calls) == call:
            raise InternalError("simulated OpenSSL failure")
        return real(self, ifname, batch)  # type: ignore[arg-type]

    monkeypatch.setattr(Router, "outbound", failing)


def test_no_partial_output_and_no_overwriting_the_input(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    pair = make_pair(tmp_path, "esp-aes esp-sha-hmac")
    clear = tmp_path / "clear.pcap"
    build_capture(clear, protected_packets("tunnel", 8), ethernet=False)
    original = clear.read_bytes()
    assert encrypt(pair, clear, clear) == 2
    assert "overwrite the input" in capsys.readouterr().err
    assert clear.read_bytes() == original

    fail_outbound_at(monkeypatch, 2)
    out = tmp_path / "out.pcap"
    assert encrypt(pair, clear, out, "--chunk-packets", "3") == 2
    assert "simulated OpenSSL failure" in capsys.readouterr().err
    assert not out.exists()


def test_a_failed_run_leaves_no_preallocated_tail_behind_a_hard_link(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Written through a hard link, a failed run removes its own name; the other name
    keeps the records written so far and nothing after them (no preallocated zeros)."""
    import os

    pair = make_pair(tmp_path, "esp-aes esp-sha-hmac")
    clear = tmp_path / "clear.pcap"
    build_capture(clear, protected_packets("tunnel", 40), ethernet=True)
    fail_outbound_at(monkeypatch, 4)
    preallocate_more(monkeypatch)
    out, other = tmp_path / "out.pcap", tmp_path / "other.pcap"
    out.write_bytes(b"")
    os.link(out, other)
    assert encrypt(pair, clear, out, "--chunk-packets", "8") == 2
    assert "simulated OpenSSL failure" in capsys.readouterr().err
    assert not out.exists()
    kept = other.read_bytes()
    frames = pcap.read(other).frames if kept else None
    # a pcap header and whole records only (a preallocated tail would read as zeros)
    assert kept == b"" or len(kept) == 24 + sum(16 + len(f) for f in frames.to_list())
    assert kept == b"" or all(len(f) > 0 for f in frames.to_list())
    assert len(kept) < clear.stat().st_size
    assert allocated(other) < len(kept) + (1 << 20)  # (the 4 MB extra were given back)


def test_a_corrupt_record_in_the_first_chunk_leaves_an_existing_output_alone(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The first chunk's records are all checked before the output file is made, also
    when they are handed to the router in smaller pieces (the tapered start)."""
    import struct

    pair = make_pair(tmp_path, "esp-aes esp-sha-hmac")
    clear = tmp_path / "clear.pcap"
    build_capture(clear, protected_packets("tunnel", 40), ethernet=False)
    with open(clear, "ab") as fh:  # record 41 claims more bytes than the file has left
        fh.write(struct.pack("<IIII", 1, 0, 1 << 20, 1 << 20) + b"x" * 8)
    out = tmp_path / "out.pcap"
    out.write_bytes(b"precious")
    assert encrypt(pair, clear, out, "--chunk-packets", "64") == 2
    assert "corrupt packet record at byte offset" in capsys.readouterr().err
    assert out.read_bytes() == b"precious"


def test_keys_are_wiped_when_the_command_ends(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from ipsecfast.router import Router

    closed: list[Router] = []
    real = Router.close

    def close(self: Router) -> None:
        closed.append(self)
        real(self)

    monkeypatch.setattr(Router, "close", close)
    pair = make_pair(tmp_path, "esp-aes esp-sha-hmac")
    clear = tmp_path / "clear.pcap"
    build_capture(clear, protected_packets("tunnel", 3), ethernet=False)
    assert encrypt(pair, clear, tmp_path / "e.pcap", "--export-keys", str(tmp_path / "k")) == 0
    assert run("keys", "--config", pair.a) == 0
    assert len(closed) == 2 and all(len(r.sad) == 0 for r in closed)
    capsys.readouterr()
