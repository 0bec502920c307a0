"""Helpers for the router tests (no tests here): mirror-image manual configurations and packets."""

from __future__ import annotations

import random
from dataclasses import dataclass

from scapy.layers.inet import IP, UDP
from scapy.packet import Raw

from ipsecfast.config import Config, parse_config
from ipsecfast.transform import parse_transforms

A_ADDR, B_ADDR = "192.0.2.1", "192.0.2.2"
A_NET, B_NET = "10.1.0.0", "10.2.0.0"


@dataclass
class SideKeys:
    spi: int
    cipher: bytes | None
    auth: bytes | None


def keys_for(spec: str, seed: str) -> dict[str, tuple[SideKeys, SideKeys]]:
    """proto -> (keys of A's outbound SA = B's inbound, keys of B's outbound = A's inbound)."""
    t = parse_transforms(spec)
    rng = random.Random(seed)
    out = {}
    if t.has_esp:
        def esp(spi: int) -> SideKeys:
            ck = rng.randbytes(t.cipher_key_length) if t.cipher_key_length else None
            ak = rng.randbytes(t.auth_key_length) if t.auth_key_length else None
            return SideKeys(spi, ck, ak)
        out["esp"] = (esp(0x1001), esp(0x2001))
    if t.has_ah:
        out["ah"] = (SideKeys(0x3001, None, rng.randbytes(t.ah_key_length)),
                     SideKeys(0x4001, None, rng.randbytes(t.ah_key_length)))
    return out


def key_line(direction: str, proto: str, k: SideKeys) -> str:
    if proto == "ah":
        assert k.auth is not None
        return f" set session-key {direction} ah {k.spi} {k.auth.hex()}"
    words = [f" set session-key {direction} esp {k.spi}"]
    if k.cipher is not None:
        words.append(f"cipher {k.cipher.hex()}")
    if k.auth is not None:
        words.append(f"authenticator {k.auth.hex()}")
    return " ".join(words)


def manual_pair(spec: str, mode: str = "tunnel", *, seed: str = "k",
                entries: list[tuple[str, str]] | None = None,
                ) -> tuple[Config, Config, dict[str, tuple[SideKeys, SideKeys]]]:
    """Configs of routers A and B, mirror images: ``entries`` are (A's ACL line body, B's
    ACL line body) per manual entry (default: 10.1/16 <-> 10.2/16). Every entry uses the
    same transform set, with its own SPIs (+ 16 * entry number)."""
    if entries is None:
        entries = [("permit ip 10.1.0.0 0.0.255.255 10.2.0.0 0.0.255.255",
                    "permit ip 10.2.0.0 0.0.255.255 10.1.0.0 0.0.255.255")]
    keys = keys_for(spec, seed)
    texts = []
    for side in (0, 1):
        me, peer = (A_ADDR, B_ADDR) if side == 0 else (B_ADDR, A_ADDR)
        lines = [f"crypto ipsec transform-set T {spec}", f" mode {mode}"]
        for n in range(len(entries)):
            lines += [f"crypto map M {10 * (n + 1)} ipsec-manual", f" set peer {peer}",
                      " set transform-set T"]
            for proto, (ab, ba) in keys.items():
                out_k, in_k = (ab, ba) if side == 0 else (ba, ab)
                out_k = SideKeys(out_k.spi + 16 * n, out_k.cipher, out_k.auth)
                in_k = SideKeys(in_k.spi + 16 * n, in_k.cipher, in_k.auth)
                lines.append(key_line("inbound", proto, in_k))
                lines.append(key_line("outbound", proto, out_k))
            lines.append(f" match address {101 + n}")
        lines += ["interface GigabitEthernet0/0", f" ip address {me} 255.255.255.0",
                  " crypto map M"]
        for n, acl in enumerate(entries):
            lines.append(f"access-list {101 + n} {acl[side]}")
        texts.append("\n".join(lines) + "\n")
    return parse_config(texts[0]), parse_config(texts[1]), keys


def udp(src: str, dst: str, size: int = 60, i: int = 0, **ip: object) -> bytes:
    payload = bytes((i + k) & 0xFF for k in range(max(0, size - 28)))
    return bytes(IP(src=src, dst=dst, id=i, **ip) / UDP(sport=1000 + i, dport=2000) / Raw(payload))
