"""``ipsecfast demo`` / ``make demo``: two routers bring a tunnel up with IKE and carry
traffic through it, end to end.

The routers are the seed's "AES-Based Static Crypto Map" example and its mirror image.
The example names as its peer (10.0.110.1) the address of its own inside interface
FastEthernet0/1/1, so the two routers could never reach each other; the fix made here:
router B takes 10.0.110.1 on its crypto interface, and A's inside interface moves to
10.0.111.1/24. Everything else in A is the example as printed (the lines ipsecfast does
not interpret are kept and ignored). B is its mirror: the same ISAKMP policy, the key
``cisco123`` for A's address 10.0.110.2, transform set ``aasset`` (``esp-aes 256
esp-sha-hmac``, ``mode transport``), ``set peer 10.0.110.2``, and access list 120, which
is its own mirror image.

Generated traffic (TCP, UDP, ICMP; some of it outside access list 120) leaves A: the
first packet's ACQUIRE negotiates the SAs (phase 1 and quick mode, ``ipsecfast.ike``),
A encrypts, B decrypts, and every protected packet is checked byte for byte; then the
mirrored flows (addresses and ports swapped) go back from B to A the same way. Traffic
between the two routers' own addresses is in transport mode, the rest in tunnel mode
(the seed: transport "is applicable only to traffic whose source and destination
addresses are the IPsec peer addresses"). Both routers' ``show crypto isakmp sa`` and
``show crypto ipsec sa`` are printed with the throughput; the first packets of each hop
are written as pcaps beside Wireshark's key file ``esp_sa`` in ``demo-out/``.
Returns 0 when every protected packet arrived intact, 1 otherwise.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np

from . import pcap
from .config import parse_config
from .ike import Network
from .packets import PacketBatch
from .router import Router, Verdict
from .wireshark import write_esp_sa

__all__ = ["run_demo", "make_ipv4_batch", "make_demo_traffic", "mirror_flows",
           "DEMO_A_CONFIG", "DEMO_B_CONFIG"]

# Internet-mix-like sizes (bytes of the whole IPv4 packet) and how often each occurs.
_SIZES = np.array([40, 64, 128, 256, 576, 1024, 1400, 1500])
_WEIGHTS = np.array([0.25, 0.2, 0.05, 0.05, 0.15, 0.05, 0.15, 0.1])

# The seed's example, with A's inside interface renumbered (was 10.0.110.1: the peer).
DEMO_A_CONFIG = """hostname demo-a
crypto isakmp policy 10
  encryption aes 256
  authentication pre-share
  lifetime 180
crypto isakmp key cisco123 address 10.0.110.1
!
!
crypto ipsec transform-set aasset esp-aes 256 esp-sha-hmac
mode transport
!
crypto map aesmap 10 ipsec-isakmp
  set peer 10.0.110.1
  set transform-set aasset
  match address 120
!
!
!
voice call carrier capacity active
!
!
mta receive maximum-recipients 0
!
!
interface FastEthernet0/0/1
  ip address 10.0.110.2 255.255.255.0
  ip nat outside
  no ip route-cache
  no ip mroute-cache
  duplex auto
  speed auto
  crypto map aesmap
!
interface Serial0/0
  no ip address
  shutdown
!
interface FastEthernet0/1/1
  ! the seed has 10.0.110.1 here, the address it names as its peer
  ip address 10.0.111.1 255.255.255.0
  ip nat inside
  no ip route-cache
  no ip mroute-cache
  duplex auto
  speed auto
!
ip nat inside source list 110 interface FastEthernet0/0/1 overload
ip classless
ip route 0.0.0.0 0.0.0.0 10.5.1.1
ip route 10.0.110.0 255.255.255.0 FastEthernet0/0/1
ip route 172.18.124.0 255.255.255.0 10.5.1.1
ip route 172.18.125.3 255.255.255.255 10.5.1.1
ip http server
!
!
access-list 110 deny ip 10.0.110.0 0.0.0.255 10.0.110.0 0.0.0.255
access-list 110 permit ip 10.0.110.0 0.0.0.255 any
access-list 120 permit ip 10.0.110.0 0.0.0.255 10.0.110.0 0.0.0.255
!
"""

# Its mirror image: the peer at the address the example names.
DEMO_B_CONFIG = """hostname demo-b
crypto isakmp policy 10
  encryption aes 256
  authentication pre-share
  lifetime 180
crypto isakmp key cisco123 address 10.0.110.2
!
crypto ipsec transform-set aasset esp-aes 256 esp-sha-hmac
mode transport
!
crypto map aesmap 10 ipsec-isakmp
  set peer 10.0.110.2
  set transform-set aasset
  match address 120
!
interface FastEthernet0/0/1
  ip address 10.0.110.1 255.255.255.0
  crypto map aesmap
!
access-list 120 permit ip 10.0.110.0 0.0.0.255 10.0.110.0 0.0.0.255
!
"""

A_IF = B_IF = "FastEthernet0/0/1"
A_ADDR, B_ADDR = "10.0.110.2", "10.0.110.1"
PCAP_PACKETS = 2000  # packets of each hop written to demo-out/


def make_ipv4_batch(n: int, seed: int = 0, sizes: np.ndarray | None = None) -> PacketBatch:
    """``n`` UDP/TCP/ICMP IPv4 packets of mixed sizes with valid headers, built without a
    Python object per packet."""
    rng = np.random.default_rng(seed)
    lengths = (rng.choice(_SIZES, size=n, p=_WEIGHTS) if sizes is None
               else np.resize(np.asarray(sizes), n)).astype(np.int64)
    offsets = np.zeros(n, dtype=np.int64)
    if n > 1:
        np.cumsum(lengths[:-1], out=offsets[1:])
    buf = rng.integers(0, 256, int(lengths.sum()), dtype=np.uint8)
    hdr = np.zeros((n, 20), dtype=np.uint8)
    hdr[:, 0] = 0x45
    hdr[:, 1] = rng.choice([0x00, 0x28, 0xB8, 0x02], size=n)
    hdr[:, 2] = lengths >> 8
    hdr[:, 3] = lengths & 0xFF
    ident = np.arange(n, dtype=np.int64)
    hdr[:, 4] = (ident >> 8) & 0xFF
    hdr[:, 5] = ident & 0xFF
    hdr[:, 6] = 0x40                                        # DF
    hdr[:, 8] = 64
    hdr[:, 9] = rng.choice([6, 17, 1], size=n)
    hdr[:, 12:16] = [10, 1, 0, 1]
    hdr[:, 16] = 10
    hdr[:, 17] = 2
    hdr[:, 18] = (ident >> 8) & 0xFF
    hdr[:, 19] = ident & 0xFF
    words = hdr.astype(np.uint32).reshape(n, 10, 2)
    acc = (words[:, :, 0] << 8 | words[:, :, 1]).sum(axis=1)
    acc = (acc & 0xFFFF) + (acc >> 16)
    acc = (acc & 0xFFFF) + (acc >> 16)
    csum = ~acc & 0xFFFF
    hdr[:, 10] = csum >> 8
    hdr[:, 11] = csum & 0xFF
    idx = offsets[:, None] + np.arange(20)
    buf[idx] = hdr
    return PacketBatch(buf, offsets, lengths)



# ---------------------------------------------------------------------------------------
# Traffic


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = int(np.frombuffer(data, dtype=">u2").astype(np.int64).sum())
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _packet(proto: int, src: str, dst: str, sport: int, dport: int, size: int, ident: int
            ) -> bytes:
    """One IPv4 packet of ``size`` bytes with correct IP / TCP / UDP / ICMP checksums."""
    s, d = bytes(map(int, src.split("."))), bytes(map(int, dst.split(".")))
    hl = {6: 20, 17: 8, 1: 8}[proto]
    payload = bytes((ident + i) & 0xFF for i in range(max(0, size - 20 - hl)))
    if proto == 6:  # TCP, PSH+ACK
        l4 = (sport.to_bytes(2, "big") + dport.to_bytes(2, "big") + ident.to_bytes(4, "big")
              + (1).to_bytes(4, "big") + bytes([0x50, 0x18]) + (64240).to_bytes(2, "big")
              + bytes(4))
    elif proto == 17:
        l4 = (sport.to_bytes(2, "big") + dport.to_bytes(2, "big")
              + (8 + len(payload)).to_bytes(2, "big") + bytes(2))
    else:  # ICMP echo request
        l4 = bytes([8, 0, 0, 0]) + (sport & 0xFFFF).to_bytes(2, "big") + ident.to_bytes(2, "big")
    seg = l4 + payload
    if proto == 1:
        c = _csum(seg)
        seg = seg[:2] + c.to_bytes(2, "big") + seg[4:]
    else:
        pseudo = s + d + bytes([0, proto]) + len(seg).to_bytes(2, "big")
        c = _csum(pseudo + seg) or 0xFFFF
        at = 16 if proto == 6 else 6
        seg = seg[:at] + c.to_bytes(2, "big") + seg[at + 2:]
    total = 20 + len(seg)
    hdr = bytearray(bytes([0x45, 0]) + total.to_bytes(2, "big") + ident.to_bytes(2, "big")
                    + bytes([0x40, 0, 64, proto, 0, 0]) + s + d)
    hdr[10:12] = _csum(bytes(hdr)).to_bytes(2, "big")
    return bytes(hdr) + seg


def make_demo_traffic(n: int, seed: int = 7) -> tuple[PacketBatch, dict[str, int]]:
    """``n`` packets from A's side: flows inside access list 120 (hosts of 10.0.110.0/24,
    tunnel mode; router to router, transport mode) and flows outside it (to
    172.18.124.0/24 and 192.0.2.0/24). Built from a few hundred templates with correct
    checksums, tiled with numpy. Returns the batch and the count of each kind."""
    rng = np.random.default_rng(seed)
    flows: list[tuple[str, int, str, str, int, int]] = []
    for i in range(24):  # hosts on the protected segment
        src, dst = f"10.0.110.{10 + i}", f"10.0.110.{130 + (i * 7) % 40}"
        # ports 5001 (iperf): Wireshark shows them without dissecting the payload
        flows += [("tunnel", 6, src, dst, 40000 + i, 5001),
                  ("tunnel", 17, src, dst, 50000 + i, 5001),
                  ("tunnel", 1, src, dst, i, 0)]
    flows += [("transport", 6, A_ADDR, B_ADDR, 179, 51000), ("transport", 1, A_ADDR, B_ADDR, 1, 0),
              ("transport", 17, A_ADDR, B_ADDR, 123, 123)]
    for i in range(8):  # not covered by access list 120: leave in the clear
        flows += [("clear", 6, f"10.0.110.{10 + i}", f"172.18.124.{20 + i}", 41000 + i, 5001),
                  ("clear", 17, f"10.0.110.{10 + i}", "192.0.2.53", 51000 + i, 5001),
                  ("clear", 1, f"10.0.110.{10 + i}", f"172.18.125.{3 + i}", i, 0)]
    templates: list[bytes] = []
    kinds: list[str] = []
    for f_i, (kind, proto, src, dst, sport, dport) in enumerate(flows):
        for size in _SIZES:
            templates.append(_packet(proto, src, dst, sport, dport, int(size), f_i * 16 + 1))
            kinds.append(kind)
    tb = PacketBatch.from_list(templates)
    w = np.tile(_WEIGHTS, len(flows))
    pick = rng.choice(len(templates), size=n, p=w / w.sum())
    lengths = tb.lengths[pick]
    offsets = np.zeros(n, dtype=np.int64)
    if n > 1:
        np.cumsum(lengths[:-1], out=offsets[1:])
    src_pos = np.repeat(tb.offsets[pick] - offsets, lengths) + np.arange(int(lengths.sum()))
    batch = PacketBatch(tb.buffer[src_pos], offsets, lengths)
    kind_arr = np.array(kinds)[pick]
    counts = {k: int((kind_arr == k).sum()) for k in ("tunnel", "transport", "clear")}
    return batch, counts


def mirror_flows(batch: PacketBatch) -> PacketBatch:
    """The same packets with source and destination swapped (addresses, and ports for
    TCP / UDP without IP options): the return direction of each flow. The IP, TCP and
    UDP checksums stay valid (a swap does not change a ones' complement sum)."""
    c = batch.compact()
    buf = c.buffer.copy()
    off = c.offsets
    ok = c.lengths >= 20
    o = off[ok]
    a = buf[o[:, None] + np.arange(12, 16)].copy()
    buf[o[:, None] + np.arange(12, 16)] = buf[o[:, None] + np.arange(16, 20)]
    buf[o[:, None] + np.arange(16, 20)] = a
    proto = np.where(ok, buf[np.minimum(off + 9, max(buf.size - 1, 0))], 0)
    ihl = np.where(ok, buf[np.minimum(off, max(buf.size - 1, 0))] & 0xF, 0)
    ports = ok & ((proto == 6) | (proto == 17)) & (ihl == 5) & (c.lengths >= 24)
    p = off[ports]
    sp = buf[p[:, None] + np.arange(20, 22)].copy()
    buf[p[:, None] + np.arange(20, 22)] = buf[p[:, None] + np.arange(22, 24)]
    buf[p[:, None] + np.arange(22, 24)] = sp
    return PacketBatch(buf, off.copy(), c.lengths.copy())


def _same(a: PacketBatch, b: PacketBatch) -> bool:
    """Packet-for-packet equality of two aligned batches (no gather of the whole buffer:
    slices of the two buffers compared in place)."""
    if not np.array_equal(a.lengths, b.lengths):
        return False
    ma, mb = memoryview(a.buffer.data), memoryview(b.buffer.data)
    return all(ma[x:x + n] == mb[y:y + n] for x, y, n in zip(
        a.offsets.tolist(), b.offsets.tolist(), a.lengths.tolist(), strict=True))


# ---------------------------------------------------------------------------------------
# The demo


@dataclass
class _Hop:
    name: str
    packets: PacketBatch


def _write_pcaps(out_dir: str, hops: list[_Hop], limit: int) -> list[str]:
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for i, hop in enumerate(hops, 1):
        pk = hop.packets[np.arange(min(limit, len(hop.packets)))]
        keep = np.nonzero(pk.lengths > 0)[0]
        pk = pk[keep]
        ts = 1_700_000_000_000_000_000 + keep.astype(np.int64) * 1000
        path = os.path.join(out_dir, f"{i}-{hop.name}.pcap")
        pcap.write(path, pk, linktype=pcap.LINKTYPE_RAW, timestamps=ts)
        written.append(path)
    return written


def run_demo(quiet: bool = False, packets: int = 200_000, repeat: int = 3,
             out_dir: str = "demo-out") -> int:
    """Run the two-router demo (see the module docstring); ``repeat`` timed rounds of
    ``packets`` packets each way. Returns 0 when every protected packet arrived intact."""
    say = (lambda *a: None) if quiet else print  # noqa: E731
    a = Router(parse_config(DEMO_A_CONFIG, source="demo-a"))
    b = Router(parse_config(DEMO_B_CONFIG, source="demo-b"))
    net = Network()
    net.add(a)
    net.add(b)
    say("ipsecfast demo: the seed's AES static crypto map example (router demo-a, "
        f"{A_ADDR}) and its mirror image (demo-b, {B_ADDR}).")
    say("  Fix to the example: it names 10.0.110.1 as its peer, the address of its own "
        "inside interface; demo-b")
    say("  takes 10.0.110.1 and demo-a's inside interface moves to 10.0.111.1/24.")
    traffic, counts = make_demo_traffic(max(1, packets))
    replies = mirror_flows(traffic)
    say(f"  traffic: {len(traffic)} packets, {traffic.nbytes / len(traffic):.0f} B average: "
        f"{counts['tunnel']} between hosts of 10.0.110.0/24 (tunnel mode), "
        f"{counts['transport']} router to router (transport mode), {counts['clear']} not "
        "in access list 120 (clear)")
    failed = 0
    t_enc = t_dec = float("inf")
    hops: list[_Hop] = []
    for rnd in range(max(1, repeat)):
        for sender, s_if, receiver, r_if, pk, way in (
                (a, A_IF, b, B_IF, traffic, "a-to-b"), (b, B_IF, a, A_IF, replies, "b-to-a")):
            t0 = time.perf_counter()
            out = sender.outbound(s_if, pk)
            t1 = time.perf_counter()
            wire = out.packets  # input order is the sending order (sequence numbers follow it)
            t2 = time.perf_counter()
            back = receiver.inbound(r_if, wire)
            t3 = time.perf_counter()
            if way == "a-to-b" and (rnd > 0 or repeat <= 1):
                t_enc, t_dec = min(t_enc, t1 - t0), min(t_dec, t3 - t2)
            sent = pk
            verdict = out.verdict
            prot = np.nonzero(verdict == Verdict.PROTECT)[0]
            clear = np.nonzero(verdict == Verdict.BYPASS)[0]
            dropped = int((verdict == Verdict.DROP).sum())
            intact = (dropped == 0 and bool((back.verdict[prot] == Verdict.PROTECT).all())
                      and _same(back.packets[prot], sent[prot])
                      and _same(back.packets[clear], sent[clear]))
            failed += not intact
            if rnd == 0:
                hops += [_Hop(f"{way}-plain", sent), _Hop(f"{way}-wire", wire),
                         _Hop(f"{way}-received", back.packets)]
                say(f"  {way}: {len(prot)} protected, {len(clear)} clear, {dropped} dropped; "
                    f"{'every protected packet arrived intact' if intact else 'MISMATCH'}")
    for neg in net.negotiations:
        say(f"  negotiated: {neg}")
    for f in net.failures:
        say(f"  failed: {f}")
    if not net.negotiations:
        failed += 1
    nbytes = traffic.nbytes
    n = len(traffic)
    if not quiet:
        for r, name in ((a, "demo-a"), (b, "demo-b")):
            for cmd in ("show crypto isakmp sa", "show crypto ipsec sa"):
                print(f"\n{name}# {cmd}")
                print(net.show(r, cmd).rstrip("\n"))
        print()
        rounds = "the one round, IKE included" if repeat <= 1 else (
            f"best of rounds 2-{repeat}; round 1 ran the IKE negotiation")
        print(f"throughput (one core, {n} packets of the mix, {rounds}): demo-a "
              f"outbound (classify + encrypt) {n / t_enc / 1e6:.2f} Mpps "
              f"({nbytes * 8 / t_enc / 1e9:.2f} Gbit/s), demo-b inbound (decrypt + checks) "
              f"{n / t_dec / 1e6:.2f} Mpps ({nbytes * 8 / t_dec / 1e9:.2f} Gbit/s)")
    paths = _write_pcaps(out_dir, hops, PCAP_PACKETS)
    keys = os.path.join(out_dir, "esp_sa")
    write_esp_sa(keys, a.sad.sas())
    say(f"wrote {', '.join(paths)} (first {PCAP_PACKETS} packets of each hop, raw IPv4) "
        f"and the Wireshark key file {keys}:")
    say(f"  wireshark -o esp.enable_encryption_decode:TRUE -o esp.enable_authentication_check:"
        f"TRUE {paths[1]}  (with {keys} copied to your profile as esp_sa)")
    outcome = ("every protected packet arrived intact" if not failed
               else f"{failed} check(s) FAILED")
    print(f"ipsecfast demo: {len(net.negotiations)} negotiation(s), {outcome}")
    a.close()
    b.close()
    return 0 if not failed else 1
