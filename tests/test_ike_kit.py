"""Shared helpers of the IKE tests: two-router configurations and packets.

Router M is at 192.0.2.1 (subnet X 10.0.1.0/24, host A 10.0.1.1), router N at 192.0.2.2
(subnet Y 10.0.2.0/24, host B 10.0.2.2): the seed's Figure 3 names.
"""

from __future__ import annotations

from dataclasses import dataclass

from scapy.layers.inet import ICMP, IP, TCP, UDP

from ipsecfast import PacketBatch
from ipsecfast.config import parse_config
from ipsecfast.ike import Network
from ipsecfast.router import Router, Verdict

M_ADDR, N_ADDR = "192.0.2.1", "192.0.2.2"
IF = "GigabitEthernet0/0"
SUBNET_X = "10.0.1.0 0.0.0.255"
SUBNET_Y = "10.0.2.0 0.0.0.255"
X_TO_Y = f"permit ip {SUBNET_X} {SUBNET_Y}"
Y_TO_X = f"permit ip {SUBNET_Y} {SUBNET_X}"
PROTECT, DROP, BYPASS = int(Verdict.PROTECT), int(Verdict.DROP), int(Verdict.BYPASS)
HOST_A, HOST_B = "10.0.1.1", "10.0.2.2"

POLICY = """crypto isakmp policy 10
 encryption aes 256
 hash sha256
 authentication pre-share
 group 14
 lifetime 28800
"""


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def config(me: str, peers: list[str] | str, acl: list[str] | str | None, *,
           hostname: str = "", key: str = "cisco123", key_for: str | None = None,
           policy: str = POLICY, transforms: str = "esp-aes 256 esp-sha-hmac",
           mode: str = "", pfs: str | None = None, entry: str = "",
           extra_sets: str = "", set_names: str = "T", dynamic: str | None = None,
           globals_: str = "") -> str:
    """One router: an isakmp policy, a key, transform set T, crypto map M 10 (static,
    unless ``peers`` is empty) and, with ``dynamic``, ``crypto map M 20 ipsec-isakmp
    dynamic DYN`` whose entry 10 gets the lines in ``dynamic``."""
    peers = [peers] if isinstance(peers, str) else peers
    acls = [acl] if isinstance(acl, str) else (acl or [])
    lines = [f"hostname {hostname}" if hostname else "!", globals_, policy]
    if key:
        lines.append(f"crypto isakmp key {key} address {key_for or (peers[0] if peers else '0.0.0.0 0.0.0.0')}")
    lines.append(f"crypto ipsec transform-set T {transforms}")
    if mode:
        lines.append(f" mode {mode}")
    lines.append(extra_sets)
    if peers:
        lines.append("crypto map M 10 ipsec-isakmp")
        lines += [f" set peer {p}" for p in peers]
        lines.append(f" set transform-set {set_names}")
        if pfs:
            lines.append(f" set pfs {pfs}")
        if entry:
            lines.append(entry)
        if acls:
            lines.append(" match address 101")
    if dynamic is not None:
        lines.append("crypto dynamic-map DYN 10")
        lines.append(dynamic)
        lines.append("crypto map M 20 ipsec-isakmp dynamic DYN")
    lines += [f"interface {IF}", f" ip address {me} 255.255.255.0", " crypto map M"]
    lines += [f"access-list 101 {a}" for a in acls]
    return "\n".join(lines) + "\n"


@dataclass
class Pair:
    m: Router
    n: Router
    net: Network
    clock: Clock


def pair(m_text: str, n_text: str, clock: Clock | None = None) -> Pair:
    clock = clock or Clock()
    m = Router(parse_config(m_text, source="M"), clock=clock)
    n = Router(parse_config(n_text, source="N"), clock=clock)
    net = Network()
    net.add(m)
    net.add(n)
    return Pair(m, n, net, clock)


def udp(src: str, dst: str, sport: int = 1000, dport: int = 53, payload: bytes = b"x" * 20
        ) -> bytes:
    return bytes(IP(src=src, dst=dst, id=sport & 0xFFFF) / UDP(sport=sport, dport=dport)
                 / payload)


def tcp(src: str, dst: str, sport: int = 40000, dport: int = 80) -> bytes:
    return bytes(IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags="PA") / b"GET /")


def icmp(src: str, dst: str, seq: int = 1) -> bytes:
    return bytes(IP(src=src, dst=dst) / ICMP(seq=seq) / b"ping")


def batch(*pkts: bytes) -> PacketBatch:
    return PacketBatch.from_list(list(pkts))


def round_trip(sender: Router, receiver: Router, pkts: list[bytes]) -> tuple[list[int], bool]:
    """Send ``pkts`` out of ``sender`` and into ``receiver``: (sender verdicts, all the
    protected ones arrived intact)."""
    out = sender.outbound(IF, batch(*pkts))
    back = receiver.inbound(IF, out.packets)
    got = back.packets.to_list()
    ok = all(got[i] == pkts[i] for i in range(len(pkts)) if out.verdict[i] == 1)
    ok = ok and all(back.verdict[i] == 1 for i in range(len(pkts)) if out.verdict[i] == 1)
    return out.verdict.tolist(), ok
