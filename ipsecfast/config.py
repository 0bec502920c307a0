"""IOS running-config text -> typed model, and back (``Config.render``).

``parse_config(text)`` reads what ``show running-config`` prints (indentation optional,
``!`` separators, ``exit`` / ``end`` accepted) into a ``Config``: access lists (through
``acl.py``), transform sets, crypto maps (static, manual, references to dynamic maps),
dynamic maps, ``crypto map NAME local-address IF``, the global IPsec SA settings, ISAKMP
policies and pre-shared keys, and interfaces. Every other line is kept, with its line
number, in ``Config.unparsed`` (or the ``extra`` list of the block it belongs to) and
reported by ``ipsecfast check``; it is never fatal.

How a line is placed (IOS falls back from a sub-mode to global configuration when a
command is not a sub-mode command, and we do the same):

* a line that is a global command we know (``crypto ...``, ``interface``, ``access-list``,
  ``ip access-list``) always ends the current sub-mode;
* otherwise an indented line belongs to the current block (a known sub-command, or an
  unparsed line kept in the block's ``extra``);
* an unindented line belongs to the current block only when it is one of that block's
  sub-commands and no unindented ``!`` / ``exit`` came since the block began.

Errors are ``ConfigError`` with the line number, the line and a caret at the bad token.
Checks made once the whole text is read (so that order does not matter): an
``ipsec-manual`` entry has exactly one peer and one transform set; session keys have the
lengths their transform set needs (GCM / GMAC cipher keys include the 4-byte salt); an
access list used by a crypto map has no discontiguous wildcard. References to access
lists, transform sets, dynamic maps or crypto maps that are not defined are allowed (IOS
allows them) and reported by ``ipsecfast check``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from . import acl as _acl
from .acl import AccessList
from .exceptions import ConfigError, UnsupportedTransform
from .transform import Transforms, parse_transforms

__all__ = [
    "Config",
    "CryptoMap",
    "CryptoMapEntry",
    "DynamicMap",
    "Interface",
    "IpsecGlobals",
    "IsakmpKey",
    "IsakmpPolicy",
    "SessionKey",
    "TransformSet",
    "Unparsed",
    "canonical_interface_name",
    "parse_config",
    "DEFAULT_LIFETIME_SECONDS",
    "DEFAULT_LIFETIME_KILOBYTES",
    "DEFAULT_REPLAY_WINDOW",
]

Mode = Literal["tunnel", "transport"]
EntryKind = Literal["ipsec-isakmp", "ipsec-manual", "dynamic"]
Direction = Literal["inbound", "outbound"]
Protocol = Literal["ah", "esp"]

DEFAULT_LIFETIME_SECONDS = 3600
DEFAULT_LIFETIME_KILOBYTES = 4_608_000
DEFAULT_REPLAY_WINDOW = 64
LIFETIME_SECONDS_RANGE = (120, 86400)
LIFETIME_KILOBYTES_RANGE = (2560, 4294967295)
REPLAY_WINDOWS = (64, 128, 256, 512, 1024)
SPI_RANGE = (256, 4294967295)  # IOS: manual SPIs 256-4294967295 (0-255 are reserved)
MAX_TRANSFORM_SETS = 6
PFS_GROUPS = ("group1", "group2", "group5", "group14", "group15", "group16", "group19",
              "group20", "group21", "group24")
ISAKMP_ENCRYPTION = ("des", "3des", "aes")
ISAKMP_HASH = ("md5", "sha", "sha256", "sha384", "sha512")
ISAKMP_AUTH = ("pre-share", "rsa-sig", "rsa-encr")
ISAKMP_GROUPS = (1, 2, 5, 14, 15, 16, 19, 20, 24)
ISAKMP_LIFETIME_RANGE = (60, 86400)


# ---------------------------------------------------------------------------------------
# Model


@dataclass(frozen=True)
class Unparsed:
    """A line ipsecfast does not interpret, kept as written (``indent``: it was indented)."""

    text: str
    indent: bool = False
    lineno: int | None = field(default=None, compare=False)


@dataclass
class TransformSet:
    """``crypto ipsec transform-set NAME t1 [t2 [t3]]`` and its ``mode``."""

    name: str
    transforms: Transforms
    mode: Mode = "tunnel"
    lineno: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class SessionKey:
    """One ``set session-key`` line of a manual entry. Keys never appear in ``repr``."""

    direction: Direction
    protocol: Protocol
    spi: int
    cipher: bytes | None = field(default=None, repr=False)  # ESP cipher key (|| salt)
    authenticator: bytes | None = field(default=None, repr=False)  # ESP auth key, or AH key
    lineno: int | None = field(default=None, compare=False)
    line: str | None = field(default=None, compare=False, repr=False)
    cipher_column: int | None = field(default=None, compare=False, repr=False)
    authenticator_column: int | None = field(default=None, compare=False, repr=False)

    def render(self, mask: bool = False) -> str:
        def hexkey(k: bytes) -> str:
            return "<removed>" if mask else k.hex()

        head = f"set session-key {self.direction} {self.protocol} {self.spi}"
        if self.protocol == "ah":
            return f"{head} {hexkey(self.authenticator or b'')}"
        words = [head]
        if self.cipher is not None:
            words.append(f"cipher {hexkey(self.cipher)}")
        if self.authenticator is not None:
            words.append(f"authenticator {hexkey(self.authenticator)}")
        return " ".join(words)


@dataclass
class CryptoMapEntry:
    """One entry of a crypto map set (``crypto map NAME SEQ ...``) or of a dynamic map
    (``crypto dynamic-map NAME SEQ``; then ``template`` is True and ``kind`` is
    ``ipsec-isakmp``). ``kind == "dynamic"`` is ``ipsec-isakmp dynamic DYN``."""

    map_name: str
    seq: int
    kind: EntryKind = "ipsec-isakmp"
    dynamic_map: str | None = None
    match_address: str | None = None
    peers: list[str] = field(default_factory=list)
    transform_sets: list[str] = field(default_factory=list)
    lifetime_seconds: int | None = None
    lifetime_kilobytes: int | None = None
    per_host: bool = False
    pfs: str | None = None  # "group1", "group2", ... (None: no PFS)
    session_keys: dict[tuple[str, str], SessionKey] = field(default_factory=dict)
    description: str | None = None
    extra: list[Unparsed] = field(default_factory=list)
    template: bool = False
    lineno: int | None = field(default=None, compare=False)
    line: str | None = field(default=None, compare=False, repr=False)

    @property
    def is_manual(self) -> bool:
        return self.kind == "ipsec-manual"

    @property
    def is_dynamic_reference(self) -> bool:
        return self.kind == "dynamic"

    def session_key(self, direction: Direction, protocol: Protocol) -> SessionKey | None:
        return self.session_keys.get((direction, protocol))

    @property
    def label(self) -> str:
        what = "crypto dynamic-map" if self.template else "crypto map"
        return f"{what} {self.map_name} {self.seq}"

    def header(self) -> str:
        if self.template:
            return f"crypto dynamic-map {self.map_name} {self.seq}"
        if self.kind == "dynamic":
            return f"crypto map {self.map_name} {self.seq} ipsec-isakmp dynamic {self.dynamic_map}"
        return f"crypto map {self.map_name} {self.seq} {self.kind}"

    def render(self, mask: bool = False) -> list[str]:
        out = [self.header()]
        if self.kind == "dynamic":
            return out
        if self.description is not None:
            out.append(f" description {self.description}")
        out += [f" set peer {p}" for p in self.peers]
        if self.lifetime_seconds is not None:
            out.append(f" set security-association lifetime seconds {self.lifetime_seconds}")
        if self.lifetime_kilobytes is not None:
            out.append(f" set security-association lifetime kilobytes {self.lifetime_kilobytes}")
        if self.per_host:
            out.append(" set security-association level per-host")
        if self.transform_sets:
            out.append(f" set transform-set {' '.join(self.transform_sets)}")
        if self.pfs is not None:
            out.append(f" set pfs {self.pfs}")
        for key in _ordered_keys(self.session_keys):
            out.append(f" {key.render(mask)}")
        if self.match_address is not None:
            out.append(f" match address {self.match_address}")
        out += [f" {u.text}" for u in self.extra]
        return out


def _ordered_keys(keys: dict[tuple[str, str], SessionKey]) -> list[SessionKey]:
    order = [("inbound", "ah"), ("outbound", "ah"), ("inbound", "esp"), ("outbound", "esp")]
    return [keys[k] for k in order if k in keys]


@dataclass
class CryptoMap:
    """A crypto map set: entries by sequence number, and the optional local-address."""

    name: str
    entries: dict[int, CryptoMapEntry] = field(default_factory=dict)
    local_address: str | None = None  # canonical interface name
    lineno: int | None = field(default=None, compare=False)

    def ordered(self) -> list[CryptoMapEntry]:
        return [self.entries[s] for s in sorted(self.entries)]


@dataclass
class DynamicMap:
    """``crypto dynamic-map NAME SEQ`` entries: a policy template (IKE responder only)."""

    name: str
    entries: dict[int, CryptoMapEntry] = field(default_factory=dict)
    lineno: int | None = field(default=None, compare=False)

    def ordered(self) -> list[CryptoMapEntry]:
        return [self.entries[s] for s in sorted(self.entries)]


@dataclass
class Interface:
    name: str  # canonical, e.g. FastEthernet0/0/1
    address: str | None = None  # `ip address A M`
    mask: str | None = None
    crypto_map: str | None = None
    shutdown: bool = False
    description: str | None = None
    extra: list[Unparsed] = field(default_factory=list)
    lineno: int | None = field(default=None, compare=False)

    def render(self) -> list[str]:
        out = [f"interface {self.name}"]
        if self.description is not None:
            out.append(f" description {self.description}")
        if self.address is not None:
            out.append(f" ip address {self.address} {self.mask}")
        else:
            out.append(" no ip address")
        out += [f" {u.text}" for u in self.extra]
        if self.shutdown:
            out.append(" shutdown")
        if self.crypto_map is not None:
            out.append(f" crypto map {self.crypto_map}")
        return out


@dataclass
class IsakmpPolicy:
    """``crypto isakmp policy N``; the defaults are IOS's (DES, SHA, RSA signatures,
    Diffie-Hellman group 1, 86400 seconds)."""

    priority: int
    encryption: str = "des"
    key_bits: int | None = None  # aes: 128 (default), 192, 256
    hash: str = "sha"
    authentication: str = "rsa-sig"
    group: int = 1
    lifetime: int = 86400
    lineno: int | None = field(default=None, compare=False)

    @property
    def encryption_text(self) -> str:
        if self.encryption == "aes" and self.key_bits not in (None, 128):
            return f"aes {self.key_bits}"
        return self.encryption

    def parameters(self) -> tuple[str, int | None, str, str, int]:
        """What two peers must agree on (the lifetime is negotiated separately)."""
        bits = 128 if self.encryption == "aes" and self.key_bits is None else self.key_bits
        return (self.encryption, bits, self.hash, self.authentication, self.group)

    def render(self) -> list[str]:
        out = [f"crypto isakmp policy {self.priority}"]
        d = IsakmpPolicy(0)
        if (self.encryption, self.key_bits) != (d.encryption, d.key_bits):
            out.append(f" encryption {self.encryption_text}")
        if self.hash != d.hash:
            out.append(f" hash {self.hash}")
        if self.authentication != d.authentication:
            out.append(f" authentication {self.authentication}")
        if self.group != d.group:
            out.append(f" group {self.group}")
        if self.lifetime != d.lifetime:
            out.append(f" lifetime {self.lifetime}")
        return out


@dataclass
class IsakmpKey:
    """``crypto isakmp key KEY address A [MASK]``. The key never appears in ``repr``."""

    key: str = field(repr=False)
    address: str
    mask: str | None = None  # None: this host only
    lineno: int | None = field(default=None, compare=False)

    def covers(self, address: str) -> bool:
        mask = self.mask or "255.255.255.255"
        net = ipaddress.IPv4Network(f"{self.address}/{mask}", strict=False)
        try:
            return ipaddress.IPv4Address(address) in net
        except ValueError:
            return False

    def render(self, mask: bool = False) -> str:
        key = "<removed>" if mask else self.key
        tail = f" {self.mask}" if self.mask is not None else ""
        return f"crypto isakmp key {key} address {self.address}{tail}"


@dataclass
class IpsecGlobals:
    """``crypto ipsec security-association lifetime|replay`` (None = not configured)."""

    lifetime_seconds: int | None = None
    lifetime_kilobytes: int | None = None
    replay_window: int | None = None
    replay_disabled: bool = False

    @property
    def effective_lifetime_seconds(self) -> int:
        return self.lifetime_seconds or DEFAULT_LIFETIME_SECONDS

    @property
    def effective_lifetime_kilobytes(self) -> int:
        return self.lifetime_kilobytes or DEFAULT_LIFETIME_KILOBYTES

    @property
    def effective_replay_window(self) -> int:
        """0 when anti-replay is disabled."""
        if self.replay_disabled:
            return 0
        return self.replay_window or DEFAULT_REPLAY_WINDOW

    def render(self) -> list[str]:
        head = "crypto ipsec security-association"
        out = []
        if self.lifetime_seconds is not None:
            out.append(f"{head} lifetime seconds {self.lifetime_seconds}")
        if self.lifetime_kilobytes is not None:
            out.append(f"{head} lifetime kilobytes {self.lifetime_kilobytes}")
        if self.replay_window is not None:
            out.append(f"{head} replay window-size {self.replay_window}")
        if self.replay_disabled:
            out.append(f"{head} replay disable")
        return out


@dataclass
class Config:
    """One router's configuration, as far as IPsec is concerned."""

    access_lists: dict[str, AccessList] = field(default_factory=dict)
    transform_sets: dict[str, TransformSet] = field(default_factory=dict)
    crypto_maps: dict[str, CryptoMap] = field(default_factory=dict)
    dynamic_maps: dict[str, DynamicMap] = field(default_factory=dict)
    interfaces: dict[str, Interface] = field(default_factory=dict)
    isakmp_policies: dict[int, IsakmpPolicy] = field(default_factory=dict)
    isakmp_keys: list[IsakmpKey] = field(default_factory=list)
    ipsec: IpsecGlobals = field(default_factory=IpsecGlobals)
    unparsed: list[Unparsed] = field(default_factory=list)
    source: str | None = field(default=None, compare=False)

    # -- queries used by show / check / the router ------------------------------------

    def interfaces_using(self, map_name: str) -> list[Interface]:
        return [i for i in self.interfaces.values() if i.crypto_map == map_name]

    def effective_entries(self, map_name: str) -> list[CryptoMapEntry]:
        """The crypto map set in evaluation order, each ``ipsec-isakmp dynamic DYN`` entry
        replaced by DYN's entries in their own order (DESIGN.md §Policy 1). A reference to
        an undefined dynamic map stands for nothing."""
        out: list[CryptoMapEntry] = []
        cmap = self.crypto_maps.get(map_name)
        if cmap is None:
            return out
        for entry in cmap.ordered():
            if entry.kind == "dynamic":
                dyn = self.dynamic_maps.get(entry.dynamic_map or "")
                if dyn is not None:
                    out += dyn.ordered()
            else:
                out.append(entry)
        return out

    def all_entries(self) -> Iterator[CryptoMapEntry]:
        for cmap in self.crypto_maps.values():
            yield from cmap.ordered()
        for dyn in self.dynamic_maps.values():
            yield from dyn.ordered()

    def local_address(self, map_name: str, interface: str | None = None) -> str | None:
        """The address IPsec traffic of this map uses: the local-address interface's, else
        the interface's own."""
        cmap = self.crypto_maps.get(map_name)
        name = cmap.local_address if cmap is not None and cmap.local_address else interface
        iface = self.interfaces.get(name or "")
        return iface.address if iface is not None else None

    def lifetime(self, entry: CryptoMapEntry) -> tuple[int, int]:
        """(seconds, kilobytes) for an entry: its own setting, else the global one."""
        return (
            entry.lifetime_seconds or self.ipsec.effective_lifetime_seconds,
            entry.lifetime_kilobytes or self.ipsec.effective_lifetime_kilobytes,
        )

    # -- rendering ----------------------------------------------------------------------

    def render(self, mask_secrets: bool = False) -> str:
        """The configuration as IOS text; ``parse_config(c.render()) == c``.

        ``mask_secrets`` replaces pre-shared and session keys by ``<removed>`` (what
        ``show running-config`` prints here; the result no longer parses back)."""
        out: list[str] = []

        def block(lines: list[str]) -> None:
            if lines:
                out.extend(lines)
                out.append("!")

        block([("" if not u.indent else " ") + u.text for u in self.unparsed])
        for p in sorted(self.isakmp_policies):
            block(self.isakmp_policies[p].render())
        block([k.render(mask_secrets) for k in self.isakmp_keys])
        block(self.ipsec.render())
        for ts in self.transform_sets.values():
            block([f"crypto ipsec transform-set {ts.name} {ts.transforms.render()}",
                   f" mode {ts.mode}"])
        for dyn in self.dynamic_maps.values():
            for entry in dyn.ordered():
                block(entry.render(mask_secrets))
        for cmap in self.crypto_maps.values():
            if cmap.local_address is not None:
                block([f"crypto map {cmap.name} local-address {cmap.local_address}"])
            for entry in cmap.ordered():
                block(entry.render(mask_secrets))
        for iface in self.interfaces.values():
            block(iface.render())
        for acl in self.access_lists.values():
            block(_acl.render_config(acl))
        return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------
# Interface names

# IOS interface types, canonical spelling. An abbreviation is any unambiguous prefix;
# where a prefix is ambiguous IOS settles it by the platform's interface list, and we use
# the usual choices in _ABBREVIATIONS.
INTERFACE_TYPES = (
    "ATM", "Async", "BVI", "Cellular", "Dialer", "Ethernet", "FastEthernet",
    "FortyGigabitEthernet", "GigabitEthernet", "HundredGigE", "Loopback", "Multilink",
    "Null", "POS", "Port-channel", "Serial", "TenGigabitEthernet", "Tunnel",
    "TwentyFiveGigE", "Virtual-Access", "Virtual-Template", "Vlan",
)
_ABBREVIATIONS = {
    "e": "Ethernet", "et": "Ethernet", "eth": "Ethernet", "f": "FastEthernet",
    "g": "GigabitEthernet", "te": "TenGigabitEthernet", "t": "Tunnel", "tu": "Tunnel",
    "s": "Serial", "se": "Serial", "l": "Loopback", "lo": "Loopback", "po": "Port-channel",
    "p": "Port-channel", "v": "Vlan", "vl": "Vlan", "vi": "Virtual-Template",
    "fo": "FortyGigabitEthernet", "hu": "HundredGigE", "d": "Dialer", "a": "ATM",
    "at": "ATM", "m": "Multilink", "n": "Null", "c": "Cellular",
}
_IFNUM = re.compile(r"^\d+(/\d+)*(\.\d+)?(:\d+)?$")
_IFNAME = re.compile(r"^([A-Za-z][A-Za-z-]*?)-?(\d.*)$")


def canonical_interface_name(text: str) -> str | None:
    """``Fa0/0/1`` / ``fastethernet 0/0/1`` -> ``FastEthernet0/0/1``; None if not a name."""
    squeezed = "".join(text.split())
    m = _IFNAME.match(squeezed)
    if m is None or not _IFNUM.match(m.group(2)):
        return None
    prefix, number = m.group(1).lower(), m.group(2)
    if prefix in _ABBREVIATIONS:
        return _ABBREVIATIONS[prefix] + number
    hits = [t for t in INTERFACE_TYPES if t.lower().startswith(prefix)]
    if len(hits) == 1:
        return hits[0] + number
    exact = [t for t in INTERFACE_TYPES if t.lower() == prefix]
    if exact:
        return exact[0] + number
    if not hits:
        # A type we do not list (platform specific): keep the spelling as written.
        return m.group(1) + number
    return None


# ---------------------------------------------------------------------------------------
# Parser


@dataclass
class _Block:
    kind: str  # transform-set, entry, dynref, policy, interface, acl, unparsed
    obj: object = None
    open: bool = True  # accepts unindented sub-commands


# `crypto map NAME client ...`, `... isakmp authorization ...`: remote-access commands that
# ipsecfast does not model; kept unparsed.
_CRYPTO_MAP_OTHER = {"client", "isakmp", "gdoi", "redundancy", "isakmp-profile"}

# blocks that keep an indented line we do not know (in their `extra`, or as unparsed)
_KEEPS_UNKNOWN = {"entry", "interface", "transform-set", "policy"}

_ENTRY_WORDS = {"match", "set", "description", "reverse-route"}
_POLICY_WORDS = {"encryption", "hash", "authentication", "group", "lifetime"}
_IF_WORDS = {
    "shutdown", "description", "duplex", "speed", "encapsulation", "bandwidth", "mtu",
    "keepalive", "tunnel", "clock", "negotiation", "media-type", "standby", "vrrp", "cdp",
    "load-interval", "service-policy", "delay", "mac-address", "switchport",
    "channel-group", "pppoe", "ppp", "frame-relay", "dialer", "hold-queue", "ipv6",
}
_IF_IP_WORDS = {
    "address", "route-cache", "mroute-cache", "mtu", "access-group", "tcp", "ospf",
    "helper-address", "unnumbered", "proxy-arp", "redirects", "unreachables",
    "directed-broadcast", "virtual-reassembly", "policy", "flow", "pim", "igmp",
    "verify", "nbar", "accounting", "split-horizon", "summary-address", "authentication",
}


class _Line:
    def __init__(self, raw: str, lineno: int, source: str | None) -> None:
        self.raw = raw
        self.lineno = lineno
        self.source = source
        self.toks = [(m.start(), m.group()) for m in re.finditer(r"\S+", raw)]
        self.words = [t.lower() for _, t in self.toks]

    def word(self, i: int) -> str:
        return self.words[i] if i < len(self.words) else ""

    def text(self, i: int) -> str:
        return self.toks[i][1]

    def rest(self, i: int) -> str:
        """The raw text from token i to the end (descriptions keep their spacing)."""
        return self.raw[self.toks[i][0]:].rstrip() if i < len(self.toks) else ""

    def invalid(self, i: int, message: str) -> ConfigError:
        col = self.toks[i][0] if i < len(self.toks) else len(self.raw.rstrip())
        return ConfigError(message, lineno=self.lineno, line=self.raw, column=col,
                           source=self.source)

    def need(self, i: int, expected: str) -> str:
        if i >= len(self.toks):
            raise ConfigError(f"Incomplete command. (expected {expected})", lineno=self.lineno,
                              line=self.raw, source=self.source)
        return self.words[i]

    def end(self, i: int) -> None:
        if i < len(self.toks):
            raise self.invalid(i, "expected the end of the line")

    def number(self, i: int, lo: int, hi: int, what: str) -> int:
        tok = self.need(i, what)
        if not tok.isdigit() or not lo <= int(tok) <= hi:
            raise self.invalid(i, f"expected {what} ({lo}-{hi})")
        return int(tok)

    def choice(self, i: int, options: tuple[str, ...] | list[str], what: str) -> str:
        tok = self.need(i, what)
        if tok not in options:
            raise self.invalid(i, f"expected {what}: {' | '.join(options)}")
        return tok

    def ipv4(self, i: int, what: str) -> str:
        tok = self.need(i, what)
        try:
            return str(ipaddress.IPv4Address(tok))
        except ValueError:
            raise self.invalid(i, f"expected {what} (A.B.C.D)") from None

    def unparsed(self, indent: bool) -> Unparsed:
        return Unparsed(self.raw.strip(), indent, self.lineno)


def _mask_ok(mask: str) -> bool:
    m = int(ipaddress.IPv4Address(mask))
    inv = ~m & 0xFFFFFFFF
    return (inv & (inv + 1)) == 0


def _is_global(ln: _Line, block: _Block | None) -> bool:
    """A command that always ends the current sub-mode (see the module docstring)."""
    w0, w1 = ln.word(0), ln.word(1)
    if block is not None and block.kind == "interface":
        if w0 == "crypto" and w1 == "map" and len(ln.words) == 3:
            return False
        if w0 == "no" and w1 == "crypto" and ln.word(2) == "map":
            return False
    if w0 in ("crypto", "interface", "access-list"):
        return True
    if w0 == "ip" and w1 == "access-list":
        return True
    return w0 == "no" and w1 in ("crypto", "interface", "access-list")


def _accepts_unindented(ln: _Line, block: _Block) -> bool:
    w0, w1, w2 = ln.word(0), ln.word(1), ln.word(2)
    if w0 == "no":
        w0, w1, w2 = w1, w2, ln.word(3)
        negated = True
    else:
        negated = False
    if block.kind == "transform-set":
        return w0 == "mode"
    if block.kind in ("entry", "dynref"):
        return w0 in _ENTRY_WORDS
    if block.kind == "policy":
        return w0 in _POLICY_WORDS
    if block.kind == "interface":
        if w0 == "crypto":
            return True
        if w0 == "ip":
            if w1 == "nat":
                return len(ln.words) == 3 + negated and w2 in ("inside", "outside")
            return w1 in _IF_IP_WORDS
        return w0 in _IF_WORDS
    if block.kind == "acl":
        return w0 in ("permit", "deny", "remark") or w0.isdigit()
    return False


class _Parser:
    def __init__(self, text: str, source: str | None) -> None:
        self.text = text
        self.source = source
        self.cfg = Config(source=source)
        self.block: _Block | None = None
        self.crypto_acl_users: dict[str, CryptoMapEntry] = {}

    # -- driver -----------------------------------------------------------------------

    def run(self) -> Config:
        lines = self.text.splitlines()
        indents = [len(r) - len(r.lstrip()) for r in lines if r.strip()]
        base = min(indents, default=0)
        for lineno, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            indented = len(raw) - len(raw.lstrip()) > base
            ln = _Line(raw, lineno, self.source)
            if ln.words[0].startswith("!"):
                if not indented and self.block is not None:
                    self.block.open = False
                continue
            if ln.words == ["exit"] or ln.words == ["end"]:
                self.block = None
                continue
            block = self.block
            if block is not None and not _is_global(ln, block) and (
                indented or (block.open and _accepts_unindented(ln, block))
            ):
                self._sub(block, ln, indented)
            else:
                self.block = None
                if self._global(ln):
                    continue
                if block is not None and indented and block.kind in _KEEPS_UNKNOWN:
                    # e.g. ` crypto ipsec client ezvpn X` inside an interface: a global-looking
                    # command we do not know stays in the block it is indented under.
                    self.block = block
                    self._sub(block, ln, indented)
                else:
                    self.cfg.unparsed.append(ln.unparsed(indented))
                    self.block = _Block("unparsed")
        self._finish()
        return self.cfg

    # -- global commands ----------------------------------------------------------------

    def _global(self, ln: _Line) -> bool:
        """A global command we know; False for the others (the caller keeps them)."""
        w = ln.words
        if w[0] == "access-list":
            number = ln.word(1)
            if number.isdigit() and _acl.is_extended_number(int(number)):
                self._wrap(lambda: self._numbered_acl(ln))
                return True
        elif w[0] == "no" and ln.word(1) == "access-list" and len(w) == 3:
            if w[2].isdigit() and _acl.is_extended_number(int(w[2])):
                self.cfg.access_lists.pop(str(int(w[2])), None)
                return True
        elif w[0] == "ip" and ln.word(1) == "access-list" and ln.word(2) == "extended":
            self._named_acl(ln)
            return True
        elif w[0] == "crypto":
            return self._crypto(ln)
        elif w[0] == "no" and ln.word(1) in ("crypto", "interface"):
            return self._no_global(ln)
        elif w[0] == "interface":
            self._interface(ln)
            return True
        return False

    def _no_global(self, ln: _Line) -> bool:
        """``no crypto ...`` / ``no interface``: remove what the command made (IOS does the
        same; running-config never holds these, a typed configuration may)."""
        cfg = self.cfg
        w = ln.words[1:]  # without the `no`; ln indexes count it
        name = ln.text(3) if len(w) > 2 else ""  # `no crypto map NAME ...`
        if w[0] == "crypto" and len(w) < 3:
            return False
        if w[0] == "interface":
            ifname = canonical_interface_name(ln.rest(2)) if len(w) > 1 else None
            if ifname is None:
                raise ln.invalid(2, "expected an interface type and number")
            cfg.interfaces.pop(ifname, None)
        elif w[1:3] == ["ipsec", "transform-set"] and len(w) == 4:
            cfg.transform_sets.pop(ln.text(4), None)
        elif w[1:3] == ["isakmp", "policy"] and len(w) == 4:
            cfg.isakmp_policies.pop(ln.number(4, 1, 10000, "a policy priority"), None)
        elif w[1:3] == ["isakmp", "key"] and len(w) in (6, 7) and w[4] == "address":
            # ln.words: no crypto isakmp key KEY address A [MASK]
            addr = ln.ipv4(6, "the peer address")
            mask = ln.ipv4(7, "a mask") if len(w) == 7 else None
            cfg.isakmp_keys[:] = [k for k in cfg.isakmp_keys if (k.address, k.mask) != (addr, mask)]
        elif w[1:3] == ["ipsec", "security-association"] and len(w) >= 4:
            g = cfg.ipsec
            what = " ".join(w[3:])
            if what == "lifetime seconds" or what.startswith("lifetime seconds "):
                g.lifetime_seconds = None
            elif what == "lifetime kilobytes" or what.startswith("lifetime kilobytes "):
                g.lifetime_kilobytes = None
            elif what.startswith("replay window-size"):
                g.replay_window = None
            elif what == "replay disable":
                g.replay_disabled = False
            else:
                return False
        elif w[1] in ("map", "dynamic-map") and len(w) in (3, 4):
            maps: dict[str, CryptoMap] | dict[str, DynamicMap]
            maps = cfg.crypto_maps if w[1] == "map" else cfg.dynamic_maps
            if len(w) == 3:
                maps.pop(name, None)
            elif w[3] == "local-address" and w[1] == "map":
                if name in cfg.crypto_maps:
                    cfg.crypto_maps[name].local_address = None
            else:
                seq = ln.number(4, 1, 65535, "a sequence number")
                if name in maps:
                    maps[name].entries.pop(seq, None)
        else:
            return False
        return True

    def _wrap(self, fn: Callable[[], object]) -> None:
        """Run an acl.py parser call; give its ConfigError our source file name."""
        try:
            fn()
        except ConfigError as err:
            if err.source is None and self.source is not None:
                raise ConfigError(err.message, lineno=err.lineno, line=err.line,
                                  column=err.column, source=self.source) from None
            raise

    def _numbered_acl(self, ln: _Line) -> None:
        name, ace = _acl.parse_numbered_line(ln.raw, ln.lineno)
        acl = self.cfg.access_lists.get(name)
        if acl is None:
            acl = self.cfg.access_lists[name] = AccessList(name, "numbered")
        acl.add(ace)

    def _named_acl(self, ln: _Line) -> None:
        name_tok = ln.need(3, "the access-list name")
        ln.end(4)
        name = ln.text(3)
        if name_tok.isdigit():
            if not _acl.is_extended_number(int(name_tok)):
                raise ln.invalid(3, "a numbered extended list is 100-199 or 2000-2699")
            name = str(int(name_tok))
        acl = self.cfg.access_lists.get(name)
        if acl is None:
            kind: Literal["numbered", "named"] = "numbered" if name.isdigit() else "named"
            acl = self.cfg.access_lists[name] = AccessList(name, kind)
        self.block = _Block("acl", acl)

    def _interface(self, ln: _Line) -> None:
        ln.need(1, "an interface type and number")
        name = canonical_interface_name(ln.rest(1))
        if name is None:
            raise ln.invalid(1, "expected an interface type and number, e.g. FastEthernet0/0")
        iface = self.cfg.interfaces.get(name)
        if iface is None:
            iface = self.cfg.interfaces[name] = Interface(name, lineno=ln.lineno)
        self.block = _Block("interface", iface)

    def _crypto(self, ln: _Line) -> bool:
        """Known ``crypto ...`` commands; False for the others (kept unparsed)."""
        w1, w2 = ln.word(1), ln.word(2)
        if w1 == "ipsec" and w2 == "transform-set":
            self._transform_set(ln)
        elif w1 == "ipsec" and w2 == "security-association":
            return self._ipsec_globals(ln)
        elif w1 == "map":
            return self._crypto_map(ln)
        elif w1 == "dynamic-map":
            self._dynamic_map(ln)
        elif w1 == "isakmp" and w2 == "policy":
            prio = ln.number(3, 1, 10000, "a policy priority")
            ln.end(4)
            policy = self.cfg.isakmp_policies.get(prio)
            if policy is None:
                policy = self.cfg.isakmp_policies[prio] = IsakmpPolicy(prio, lineno=ln.lineno)
            self.block = _Block("policy", policy)
        elif w1 == "isakmp" and w2 == "key":
            return self._isakmp_key(ln)
        else:
            return False
        return True

    def _transform_set(self, ln: _Line) -> None:
        ln.need(3, "a transform set name")
        name = ln.text(3)
        ln.need(4, "a transform (esp-aes, esp-sha-hmac, ah-sha-hmac, ...)")
        try:
            transforms = parse_transforms([t for _, t in ln.toks[4:]])
        except UnsupportedTransform as err:
            raise ln.invalid(4 + getattr(err, "token_index", 0), str(err)) from None
        old = self.cfg.transform_sets.get(name)
        mode: Mode = old.mode if old is not None else "tunnel"
        ts = self.cfg.transform_sets[name] = TransformSet(name, transforms, mode, ln.lineno)
        self.block = _Block("transform-set", ts)

    def _ipsec_globals(self, ln: _Line) -> bool:
        g = self.cfg.ipsec
        w3 = ln.word(3)
        if w3 == "lifetime":
            which = ln.choice(4, ("seconds", "kilobytes"), "seconds or kilobytes")
            if which == "seconds":
                g.lifetime_seconds = ln.number(5, *LIFETIME_SECONDS_RANGE, "seconds")
            else:
                g.lifetime_kilobytes = ln.number(5, *LIFETIME_KILOBYTES_RANGE, "kilobytes")
            ln.end(6)
            return True
        if w3 == "replay":
            which = ln.choice(4, ("window-size", "disable"), "window-size or disable")
            if which == "disable":
                ln.end(5)
                g.replay_disabled = True
            else:
                size = ln.need(5, "a window size")
                if not size.isdigit() or int(size) not in REPLAY_WINDOWS:
                    raise ln.invalid(5, f"expected a window size: {' | '.join(map(str, REPLAY_WINDOWS))}")
                ln.end(6)
                g.replay_window = int(size)
                g.replay_disabled = False
            return True
        return False

    def _isakmp_key(self, ln: _Line) -> bool:
        # crypto isakmp key [0] KEY address A [MASK]   (hostname form: kept unparsed)
        i = 3
        ln.need(i, "the pre-shared key")
        if ln.word(i) == "6" and ln.word(i + 2) == "address":
            return False  # type 6: encrypted with the router's master key; cannot be read
        if ln.word(i) == "0" and ln.word(i + 2) == "address":
            i += 1
        key = ln.text(i)
        kw = ln.need(i + 1, "address")
        if kw == "hostname":
            return False
        if kw != "address":
            raise ln.invalid(i + 1, "expected address or hostname")
        addr = ln.ipv4(i + 2, "the peer address")
        mask = None
        if i + 3 < len(ln.toks) and ln.word(i + 3) != "no-xauth":
            mask = ln.ipv4(i + 3, "a mask")
            if not _mask_ok(mask):
                raise ln.invalid(i + 3, "expected a contiguous network mask")
            i += 1
        j = i + 3
        if ln.word(j) == "no-xauth":
            j += 1
        ln.end(j)
        keys = self.cfg.isakmp_keys
        keys[:] = [k for k in keys if (k.address, k.mask) != (addr, mask)]
        keys.append(IsakmpKey(key, addr, mask, ln.lineno))
        return True

    def _crypto_map(self, ln: _Line) -> bool:
        ln.need(2, "a crypto map name")
        name = ln.text(2)
        w3 = ln.need(3, "a sequence number or local-address")
        if w3 in _CRYPTO_MAP_OTHER:
            return False
        if w3 == "local-address":
            ln.need(4, "an interface")
            ifname = canonical_interface_name(ln.rest(4))
            if ifname is None:
                raise ln.invalid(4, "expected an interface type and number")
            cmap = self._map(name, ln)
            cmap.local_address = ifname
            return True
        seq = ln.number(3, 1, 65535, "a sequence number")
        kind_word = ln.word(4)
        cmap = self._map(name, ln)
        existing = cmap.entries.get(seq)
        dyn: str | None = None
        kind: EntryKind
        if kind_word == "":
            kind = existing.kind if existing is not None else "ipsec-isakmp"
            dyn = existing.dynamic_map if existing is not None else None
        elif kind_word == "ipsec-manual":
            kind = "ipsec-manual"
            ln.end(5)
        elif kind_word == "ipsec-isakmp":
            if ln.word(5) == "dynamic":
                ln.need(6, "a dynamic map name")
                dyn = ln.text(6)
                ln.end(7)
                kind = "dynamic"
            else:
                ln.end(5)
                kind = "ipsec-isakmp"
        elif kind_word in ("gdoi", "ipsec-isakmp-ipv6"):
            raise ln.invalid(4, f"{kind_word} crypto map entries are not supported by ipsecfast")
        else:
            raise ln.invalid(4, "expected ipsec-isakmp, ipsec-isakmp dynamic NAME or ipsec-manual")
        if existing is not None and (existing.kind, existing.dynamic_map) != (kind, dyn):
            raise ln.invalid(4, f"crypto map {name} {seq} already exists as {existing.kind}; "
                                "remove it first (no crypto map NAME SEQ)")
        if existing is None:
            existing = cmap.entries[seq] = CryptoMapEntry(
                name, seq, kind, dyn, lineno=ln.lineno, line=ln.raw)
        self.block = _Block("dynref" if kind == "dynamic" else "entry", existing)
        return True

    def _map(self, name: str, ln: _Line) -> CryptoMap:
        cmap = self.cfg.crypto_maps.get(name)
        if cmap is None:
            cmap = self.cfg.crypto_maps[name] = CryptoMap(name, lineno=ln.lineno)
        return cmap

    def _dynamic_map(self, ln: _Line) -> None:
        ln.need(2, "a dynamic map name")
        name = ln.text(2)
        seq = ln.number(3, 1, 65535, "a sequence number")
        ln.end(4)
        dmap = self.cfg.dynamic_maps.get(name)
        if dmap is None:
            dmap = self.cfg.dynamic_maps[name] = DynamicMap(name, lineno=ln.lineno)
        entry = dmap.entries.get(seq)
        if entry is None:
            entry = dmap.entries[seq] = CryptoMapEntry(
                name, seq, "ipsec-isakmp", template=True, lineno=ln.lineno, line=ln.raw)
        self.block = _Block("entry", entry)

    # -- sub-mode commands --------------------------------------------------------------

    def _sub(self, block: _Block, ln: _Line, indented: bool) -> None:
        if block.kind == "unparsed":
            self.cfg.unparsed.append(ln.unparsed(indented))
        elif block.kind == "acl":
            assert isinstance(block.obj, AccessList)
            a = block.obj
            self._wrap(lambda: _acl.parse_named_entry(ln.raw, a, ln.lineno))
        elif block.kind == "transform-set":
            assert isinstance(block.obj, TransformSet)
            if ln.words == ["no", "mode"]:
                block.obj.mode = "tunnel"
            elif ln.words[0] == "mode":
                mode = "tunnel" if len(ln.words) == 1 else ln.choice(
                    1, ("tunnel", "transport"), "tunnel or transport")
                ln.end(2)
                block.obj.mode = "transport" if mode == "transport" else "tunnel"
            else:
                self.cfg.unparsed.append(ln.unparsed(True))
        elif block.kind == "policy":
            assert isinstance(block.obj, IsakmpPolicy)
            self._policy(block.obj, ln)
        elif block.kind == "interface":
            assert isinstance(block.obj, Interface)
            self._interface_sub(block.obj, ln)
        elif block.kind == "dynref":
            raise ln.invalid(0, "an entry that references a dynamic map takes no sub-commands "
                                "(configure them in the crypto dynamic-map)")
        else:
            assert isinstance(block.obj, CryptoMapEntry)
            self._entry_sub(block.obj, ln)

    def _policy(self, p: IsakmpPolicy, ln: _Line) -> None:
        w0 = ln.words[0]
        if w0 == "no" and ln.word(1) in _POLICY_WORDS and len(ln.words) >= 2:
            d = IsakmpPolicy(p.priority)
            attrs = {"encryption": ("encryption", "key_bits"), "hash": ("hash",),
                     "authentication": ("authentication",), "group": ("group",),
                     "lifetime": ("lifetime",)}[ln.word(1)]
            for attr in attrs:
                setattr(p, attr, getattr(d, attr))
        elif w0 == "encryption":
            p.encryption = ln.choice(1, ISAKMP_ENCRYPTION, "an encryption algorithm")
            p.key_bits = None
            if p.encryption == "aes" and len(ln.words) > 2:
                p.key_bits = int(ln.choice(2, ("128", "192", "256"), "an AES key size"))
                if p.key_bits == 128:
                    p.key_bits = None
                ln.end(3)
            else:
                ln.end(2)
        elif w0 == "hash":
            p.hash = ln.choice(1, ISAKMP_HASH, "a hash algorithm")
            ln.end(2)
        elif w0 == "authentication":
            p.authentication = ln.choice(1, ISAKMP_AUTH, "an authentication method")
            ln.end(2)
        elif w0 == "group":
            g = ln.choice(1, [str(x) for x in ISAKMP_GROUPS], "a Diffie-Hellman group")
            p.group = int(g)
            ln.end(2)
        elif w0 == "lifetime":
            p.lifetime = ln.number(1, *ISAKMP_LIFETIME_RANGE, "a lifetime in seconds")
            ln.end(2)
        else:
            self.cfg.unparsed.append(ln.unparsed(True))

    def _interface_sub(self, iface: Interface, ln: _Line) -> None:
        w = ln.words
        if w[:2] == ["ip", "address"] and len(w) == 4:
            addr = ln.ipv4(2, "an IP address")
            mask = ln.ipv4(3, "a network mask")
            if not _mask_ok(mask):
                raise ln.invalid(3, "expected a contiguous network mask")
            iface.address, iface.mask = addr, mask
        elif w == ["no", "ip", "address"]:
            iface.address = iface.mask = None
        elif w[:2] == ["crypto", "map"]:
            ln.end(3)
            # IOS: one crypto map set per interface; a second one replaces the first.
            iface.crypto_map = ln.text(2)
        elif w[:3] == ["no", "crypto", "map"]:
            iface.crypto_map = None
        elif w == ["shutdown"]:
            iface.shutdown = True
        elif w == ["no", "shutdown"]:
            iface.shutdown = False
        elif w[0] == "description" and len(w) > 1:
            iface.description = ln.rest(1)
        else:
            iface.extra.append(ln.unparsed(True))

    def _entry_sub(self, e: CryptoMapEntry, ln: _Line) -> None:
        w = ln.words
        if w[0] == "no" and self._no_entry(e, ln):
            return
        if w[0] == "match" and ln.word(1) == "address":
            ln.need(2, "an access list name or number")
            ln.end(3)
            e.match_address = ln.text(2)
        elif w[0] == "description" and len(w) > 1:
            e.description = ln.rest(1)
        elif w[0] == "set" and ln.word(1) == "peer":
            self._set_peer(e, ln)
        elif w[0] == "set" and ln.word(1) == "transform-set":
            ln.need(2, "a transform set name")
            names = [t for _, t in ln.toks[2:]]
            if e.is_manual and len(names) > 1:
                raise ln.invalid(3, "an ipsec-manual entry takes one transform set (there is no "
                                    "negotiation without IKE)")
            if len(names) > MAX_TRANSFORM_SETS:
                raise ln.invalid(2 + MAX_TRANSFORM_SETS,
                                 f"at most {MAX_TRANSFORM_SETS} transform sets")
            for i, n in enumerate(names):
                if n in names[:i]:
                    raise ln.invalid(2 + i, f"transform set {n} is listed twice")
            e.transform_sets = names
        elif w[0] == "set" and ln.word(1) == "security-association" and ln.word(2) in (
            "lifetime", "level"
        ):
            if ln.word(2) == "level":
                ln.choice(3, ("per-host",), "per-host")
                ln.end(4)
                e.per_host = True
            else:
                which = ln.choice(3, ("seconds", "kilobytes"), "seconds or kilobytes")
                if which == "seconds":
                    e.lifetime_seconds = ln.number(4, *LIFETIME_SECONDS_RANGE, "seconds")
                else:
                    e.lifetime_kilobytes = ln.number(4, *LIFETIME_KILOBYTES_RANGE, "kilobytes")
                ln.end(5)
        elif w[0] == "set" and ln.word(1) == "pfs":
            # The seed: "If no group is specified with this command, group1 is used".
            e.pfs = "group1" if len(w) == 2 else ln.choice(2, PFS_GROUPS, "a DH group")
            ln.end(3)
        elif w[0] == "set" and ln.word(1) == "session-key":
            self._session_key(e, ln)
        else:
            e.extra.append(ln.unparsed(True))

    def _no_entry(self, e: CryptoMapEntry, ln: _Line) -> bool:
        """``no match address``, ``no set peer A``, ... inside a crypto map entry."""
        w = ln.words[1:]
        if w[:2] == ["match", "address"]:
            e.match_address = None
        elif w[:1] == ["description"]:
            e.description = None
        elif w[:2] == ["set", "peer"] and len(w) >= 3:
            e.peers = [p for p in e.peers if p != w[2]]
        elif w[:2] == ["set", "transform-set"]:
            e.transform_sets = []
        elif w[:2] == ["set", "pfs"]:
            e.pfs = None
        elif w[:3] == ["set", "security-association", "level"]:
            e.per_host = False
        elif w[:4] == ["set", "security-association", "lifetime", "seconds"]:
            e.lifetime_seconds = None
        elif w[:4] == ["set", "security-association", "lifetime", "kilobytes"]:
            e.lifetime_kilobytes = None
        elif w[:2] == ["set", "session-key"] and len(w) >= 4:
            e.session_keys.pop((w[2], w[3]), None)
        else:
            return False
        return True

    def _set_peer(self, e: CryptoMapEntry, ln: _Line) -> None:
        tok = ln.need(2, "a peer address or host name")
        end = 3
        if ln.word(3) == "default":
            end = 4
        ln.end(end)
        if re.fullmatch(r"[\d.]+", tok):
            peer = ln.ipv4(2, "a peer address")
        elif re.fullmatch(r"[a-z0-9][a-z0-9.-]*", tok):
            peer = tok
        else:
            raise ln.invalid(2, "expected a peer address or host name")
        if peer in e.peers:
            return
        if e.is_manual and e.peers:
            # The seed: "Only one peer can be specified when IKE is not used."
            raise ln.invalid(2, f"an ipsec-manual entry takes one peer; it already has "
                                f"{e.peers[0]} (only one peer can be specified when IKE is "
                                "not used)")
        e.peers.append(peer)

    def _session_key(self, e: CryptoMapEntry, ln: _Line) -> None:
        if not e.is_manual:
            raise ln.invalid(1, "session keys are only for ipsec-manual entries")
        direction = ln.choice(2, ("inbound", "outbound"), "inbound or outbound")
        proto = ln.choice(3, ("ah", "esp"), "ah or esp")
        spi = ln.number(4, *SPI_RANGE, "an SPI")
        cipher = auth = None
        ccol = acol = None
        if proto == "ah":
            auth = self._hex(ln, 5)
            acol = ln.toks[5][0]
            ln.end(6)
        else:
            i = 5
            kw = ln.choice(i, ("cipher", "authenticator"), "cipher or authenticator")
            if kw == "cipher":
                cipher = self._hex(ln, i + 1)
                ccol = ln.toks[i + 1][0]
                i += 2
                if i < len(ln.toks):
                    ln.choice(i, ("authenticator",), "authenticator")
            if i < len(ln.toks) or kw == "authenticator":
                auth = self._hex(ln, i + 1)
                acol = ln.toks[i + 1][0]
                i += 2
            ln.end(i)
        key = SessionKey(
            "inbound" if direction == "inbound" else "outbound",
            "ah" if proto == "ah" else "esp",
            spi, cipher, auth, ln.lineno, ln.raw, ccol, acol,
        )
        e.session_keys[(key.direction, key.protocol)] = key

    @staticmethod
    def _hex(ln: _Line, i: int) -> bytes:
        tok = ln.need(i, "a hex key string")
        if not re.fullmatch(r"[0-9a-f]+", tok) or len(tok) % 2:
            raise ln.invalid(i, "expected a hex key string (an even number of hex digits)")
        return bytes.fromhex(tok)

    # -- checks once everything is read ----------------------------------------------------

    def _finish(self) -> None:
        cfg = self.cfg
        for entry in cfg.all_entries():
            if entry.is_manual:
                self._check_manual(entry)
            if entry.match_address is not None:
                acl = cfg.access_lists.get(entry.match_address)
                if acl is not None:
                    self._check_acl(acl)

    def _check_acl(self, acl: AccessList) -> None:
        self._wrap(lambda: _acl.check_crypto_acl(acl))

    def _entry_error(self, e: CryptoMapEntry, message: str) -> ConfigError:
        return ConfigError(message, lineno=e.lineno, line=e.line, source=self.source)

    def _check_manual(self, e: CryptoMapEntry) -> None:
        # The seed: "Only one peer can be specified when IKE is not used" and "Only one
        # transform set can be specified when IKE is not used."
        if len(e.peers) != 1:
            raise self._entry_error(e, "an ipsec-manual entry needs exactly one peer (set peer)")
        if len(e.transform_sets) != 1:
            raise self._entry_error(
                e, "an ipsec-manual entry needs exactly one transform set (set transform-set)")
        ts = self.cfg.transform_sets.get(e.transform_sets[0])
        if ts is None:
            return  # undefined: reported by check
        t = ts.transforms
        for key in e.session_keys.values():
            self._check_key_lengths(ts, t, key)

    def _check_key_lengths(self, ts: TransformSet, t: Transforms, key: SessionKey) -> None:
        def bad(column: int | None, message: str) -> ConfigError:
            return ConfigError(message, lineno=key.lineno, line=key.line, column=column,
                               source=self.source)

        desc = f"transform set {ts.name} ({t.render()})"
        if key.protocol == "ah":
            if t.ah is None:
                raise bad(None, f"{desc} has no AH transform; remove the AH session key")
            self._length(bad, key.authenticator_column, key.authenticator, t.ah_key_length,
                         f"{desc} needs a {t.ah_key_length}-byte AH key")
            return
        if not t.has_esp:
            raise bad(None, f"{desc} has no ESP transform; remove the ESP session key")
        cipher = t.esp_cipher
        if cipher is not None and cipher.key_length > 0:
            what = f"{desc} needs a {cipher.key_length}-byte cipher key"
            if cipher.salt_length:
                what += (f" ({cipher.key_length - cipher.salt_length}-byte key followed by the "
                         f"{cipher.salt_length}-byte salt)")
            if key.cipher is None:
                raise bad(None, f"{what}: add cipher HEX")
            self._length(bad, key.cipher_column, key.cipher, cipher.key_length, what)
        elif key.cipher is not None:
            raise bad(key.cipher_column, f"{desc} has no ESP cipher key (esp-null): use "
                                         "set session-key ... esp SPI authenticator HEX")
        if t.esp_auth is not None:
            what = f"{desc} needs a {t.auth_key_length}-byte authenticator key"
            if key.authenticator is None:
                raise bad(None, f"{what}: add authenticator HEX")
            self._length(bad, key.authenticator_column, key.authenticator, t.auth_key_length,
                         what)
        elif key.authenticator is not None:
            raise bad(key.authenticator_column,
                      f"{desc} has no ESP authenticator; remove the authenticator key")

    @staticmethod
    def _length(bad: Callable[[int | None, str], ConfigError], column: int | None,
                value: bytes | None, want: int, what: str) -> None:
        n = len(value or b"")
        if n != want:
            raise bad(column, f"{what} ({2 * want} hex digits); this one has {n} bytes")


def parse_config(text: str, source: str | None = None) -> Config:
    """Parse IOS configuration text; ``source`` (a file name) goes into error messages."""
    return _Parser(text, source).run()
