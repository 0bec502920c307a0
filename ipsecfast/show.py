"""IOS ``show`` commands over a ``Config``: outputs shaped like IOS's.

``show(config, "show crypto map tag vpn")`` (the leading ``show`` is optional, and so are
IOS-style abbreviations: ``sh cry map``) returns the text IOS would print for:

* ``show crypto map [interface I | tag M]``
* ``show crypto dynamic-map [tag M]``
* ``show crypto ipsec transform-set [tag T]``
* ``show crypto isakmp policy``
* ``show crypto ipsec security-association lifetime``
* ``show access-lists [N]`` (also ``show ip access-lists [N]``)
* ``show running-config``

Live data: the router passes what it knows as optional arguments, nothing else changes.
``current_peers`` maps (map name, sequence number) to the peer the entry talks to now
(default: its first ``set peer``); access-list match counters come from
``AccessList.hits``, which the router updates in place.

Keys never appear: session keys and pre-shared keys are printed as ``<removed>``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from .acl import AccessList
from .config import (
    Config,
    CryptoMapEntry,
    IsakmpPolicy,
    TransformSet,
    canonical_interface_name,
)
from .exceptions import ConfigError

__all__ = ["show", "UnknownCommand", "COMMANDS"]

IND = "        "  # IOS indents the body of `show crypto map` by a tab (8 columns)


class UnknownCommand(ConfigError):
    """A show command we do not know; ``str()`` is IOS's caret message."""


# keyword paths of the commands, and the argument each one takes after its keywords
COMMANDS: dict[tuple[str, ...], str] = {
    ("crypto", "map"): "[interface I | tag M]",
    ("crypto", "dynamic-map"): "[tag M]",
    ("crypto", "ipsec", "transform-set"): "[tag T]",
    ("crypto", "ipsec", "security-association", "lifetime"): "",
    ("crypto", "isakmp", "policy"): "",
    ("access-lists",): "[N]",
    ("ip", "access-lists"): "[N]",
    ("running-config",): "",
}


def _resolve(words: list[str], line: str, starts: list[int]) -> tuple[tuple[str, ...], list[str]]:
    """Match the keywords, IOS-style (any unambiguous prefix); return (path, arguments)."""
    path: tuple[str, ...] = ()
    i = 0
    while True:
        options = sorted({p[len(path)] for p in COMMANDS if p[: len(path)] == path
                          and len(p) > len(path)})
        if path in COMMANDS and (i >= len(words) or not options
                                 or not any(o.startswith(words[i]) for o in options)):
            return path, words[i:]
        if i >= len(words):
            raise UnknownCommand(f"Incomplete command; expected {' | '.join(options)}",
                                 line=line)
        word = words[i]
        hits = [o for o in options if o == word] or [o for o in options if o.startswith(word)]
        if len(hits) != 1:
            what = "ambiguous command" if hits else "unknown command"
            raise UnknownCommand(f"{what} {word!r}; expected {' | '.join(options)}",
                                 line=line, column=starts[i])
        path += (hits[0],)
        i += 1


def show(
    config: Config,
    command: str,
    *,
    current_peers: Mapping[tuple[str, int], str] | None = None,
) -> str:
    """The output of an IOS show command (see the module docstring)."""
    import re

    toks = [(m.start(), m.group()) for m in re.finditer(r"\S+", command)]
    starts = [c for c, _ in toks]
    words = [t.lower() for _, t in toks]
    raw = [t for _, t in toks]
    if words and "show".startswith(words[0]) and len(words[0]) >= 2:
        words, raw, starts = words[1:], raw[1:], starts[1:]
    path, args = _resolve(words, command, starts)
    args_raw = raw[len(raw) - len(args):]
    argstart = starts[len(starts) - len(args):]

    def bad(i: int, expected: str) -> UnknownCommand:
        col = argstart[i] if i < len(argstart) else len(command)
        return UnknownCommand(f"expected {expected}", line=command, column=col)

    def tag(kind: str) -> str | None:
        if not args:
            return None
        if "tag".startswith(args[0]) and len(args) == 2:
            return args_raw[1]
        raise bad(0 if args[0] != "tag" else 2, f"tag {kind}")

    renderers: dict[tuple[str, ...], Callable[[], str]] = {
        ("crypto", "map"): lambda: _crypto_map(config, args, args_raw, bad, current_peers),
        ("crypto", "dynamic-map"): lambda: _dynamic_map(config, tag("MAP")),
        ("crypto", "ipsec", "transform-set"): lambda: _transform_sets(config, tag("NAME")),
        ("crypto", "isakmp", "policy"): lambda: _isakmp_policy(config, args, bad),
        ("crypto", "ipsec", "security-association", "lifetime"): lambda: _sa_lifetime(config, args,
                                                                                      bad),
        ("access-lists",): lambda: _access_lists(config, args_raw, bad),
        ("ip", "access-lists"): lambda: _access_lists(config, args_raw, bad),
        ("running-config",): lambda: _running_config(config, args, bad),
    }
    return renderers[path]()


# ---------------------------------------------------------------------------------------
# show crypto ipsec transform-set


def transform_words(ts: TransformSet) -> list[str]:
    """The transforms as IOS names them in show output (``esp-256-aes``)."""
    out = []
    for t in ts.transforms:
        if t.keyword == "esp-aes":
            out.append("esp-aes" if t.key_bits == 128 else f"esp-{t.key_bits}-aes")
        else:
            out.append(str(t))
    return out


def _transform_group(ts: TransformSet) -> str:
    ah = [w for w in transform_words(ts) if w.startswith("ah-")]
    esp = [w for w in transform_words(ts) if not w.startswith("ah-")]
    return " ".join(f"{{ {' '.join(g)}  }}" for g in (ah, esp) if g)


def _transform_sets(config: Config, tag: str | None) -> str:
    out = []
    for ts in config.transform_sets.values():
        if tag is not None and ts.name != tag:
            continue
        out.append(f"Transform set {ts.name}: {_transform_group(ts)}")
        out.append(f"   will negotiate = {{ {ts.mode.capitalize()},  }},")
        out.append("")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------
# show crypto map / dynamic-map


def _acl_lines(config: Config, name: str | None) -> list[str]:
    if name is None:
        return [f"{IND}No matching address list set."]
    acl = config.access_lists.get(name)
    if acl is None:
        return [f"{IND}Extended IP access list {name} (not defined)"]
    lines = [f"{IND}Extended IP access list {name}"]
    for ace in acl.entries:
        if ace.action != "remark":
            lines.append(f"{IND}    access-list {name} {ace.render()}")
    return lines


def _transform_block(config: Config, names: list[str]) -> list[str]:
    out = [f"{IND}Transform sets={{ "]
    for n in names:
        ts = config.transform_sets.get(n)
        body = _transform_group(ts) if ts is not None else "{ (not defined)  }"
        out.append(f"{IND}        {n}:  {body} , ")
    out.append(f"{IND}}}")
    return out


def _entry_body(config: Config, e: CryptoMapEntry, current: str | None) -> list[str]:
    out = [f"{IND}Peer = {p}" for p in e.peers]
    out += _acl_lines(config, e.match_address)
    if current is None and e.peers:
        current = e.peers[0]
    if current is not None:
        out.append(f"{IND}Current peer: {current}")
    if not e.is_manual:
        secs, kb = config.lifetime(e)
        out.append(f"{IND}Security association lifetime: {kb} kilobytes/{secs} seconds")
        if e.per_host:
            out.append(f"{IND}Security association level: per-host")
        out.append(f"{IND}PFS (Y/N): {'Y' if e.pfs else 'N'}")
        if e.pfs:
            out.append(f"{IND}DH group:  {e.pfs}")
    out += _transform_block(config, e.transform_sets)
    if e.is_manual:
        out += _session_keys(e)
    return out


def _session_keys(e: CryptoMapEntry) -> list[str]:
    """The SPIs of a manual entry; the keys are never printed (IOS masks them too)."""
    out = []
    for direction in ("inbound", "outbound"):
        for proto in ("esp", "ah"):
            key = e.session_keys.get((direction, proto))
            if key is None:
                continue
            out.append(f"{IND}{direction.capitalize()} {proto} spi: {key.spi},")
            if proto == "ah":
                out.append(f"{IND} key: <removed>,")
            else:
                if key.cipher is not None:
                    out.append(f"{IND} cipher key: <removed>,")
                if key.authenticator is not None:
                    out.append(f"{IND} auth key: <removed>,")
    return out


def _crypto_map(
    config: Config,
    args: list[str],
    args_raw: list[str],
    bad: Callable[[int, str], UnknownCommand],
    current_peers: Mapping[tuple[str, int], str] | None,
) -> str:
    names = list(config.crypto_maps)
    if args:
        if "interface".startswith(args[0]) and len(args) >= 2:
            ifname = canonical_interface_name(" ".join(args_raw[1:]))
            if ifname is None:
                raise bad(1, "an interface name")
            iface = config.interfaces.get(ifname)
            names = [iface.crypto_map] if iface is not None and iface.crypto_map else []
        elif "tag".startswith(args[0]) and len(args) == 2:
            names = [args_raw[1]]
        else:
            raise bad(0 if len(args) < 2 or args[0] not in ("interface", "tag") else 2,
                      "interface I | tag M")
    out: list[str] = []
    peers = current_peers or {}
    for name in names:
        cmap = config.crypto_maps.get(name)
        if cmap is None:
            continue
        if cmap.local_address is not None:
            addr = config.local_address(name) or "(no address)"
            out.append(f'Crypto Map "{name}" idb: {cmap.local_address} local address: {addr}')
            out.append("")
        users = [i.name for i in config.interfaces_using(name)]
        for e in cmap.ordered():
            out.append(f'Crypto Map "{name}" {e.seq} {"ipsec-isakmp" if e.kind == "dynamic" else e.kind}')
            if e.description is not None:
                out.append(f"{IND}Description: {e.description}")
            if e.kind == "dynamic":
                out.append(f"{IND}Dynamic map template tag: {e.dynamic_map}")
            else:
                out += _entry_body(config, e, peers.get((name, e.seq)))
            out.append(f"{IND}Interfaces using crypto map {name}:")
            out += [f"{IND}        {u}" for u in users]
            out.append("")
    return "\n".join(out)


def _dynamic_map(config: Config, tag: str | None) -> str:
    out: list[str] = []
    for dyn in config.dynamic_maps.values():
        if tag is not None and dyn.name != tag:
            continue
        for e in dyn.ordered():
            out.append(f'Crypto Map Template"{dyn.name}" {e.seq}')
            out += _entry_body(config, e, None)
            out.append("")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------
# show crypto isakmp policy

_ENCRYPTION = {"des": "DES - Data Encryption Standard (56 bit keys).",
               "3des": "Three key triple DES"}
_HASH = {"md5": "Message Digest 5", "sha": "Secure Hash Standard",
         "sha256": "Secure Hash Standard 2 (256 bit)", "sha384": "Secure Hash Standard 2 (384 bit)",
         "sha512": "Secure Hash Standard 2 (512 bit)"}
_AUTH = {"pre-share": "Pre-Shared Key", "rsa-sig": "Rivest-Shamir-Adleman Signature",
         "rsa-encr": "Rivest-Shamir-Adleman Encryption"}
_GROUP_BITS = {1: "768 bit", 2: "1024 bit", 5: "1536 bit", 14: "2048 bit", 15: "3072 bit",
               16: "4096 bit", 19: "256 bit ecp", 20: "384 bit ecp", 24: "2048 bit, 256 bit subgroup"}


def _policy_lines(title: str, p: IsakmpPolicy) -> list[str]:
    if p.encryption == "aes":
        enc = f"AES - Advanced Encryption Standard ({p.key_bits or 128} bit keys)."
    else:
        enc = _ENCRYPTION[p.encryption]
    return [
        title,
        f"\tencryption algorithm:\t{enc}",
        f"\thash algorithm:\t\t{_HASH[p.hash]}",
        f"\tauthentication method:\t{_AUTH[p.authentication]}",
        f"\tDiffie-Hellman group:\t#{p.group} ({_GROUP_BITS[p.group]})",
        f"\tlifetime:\t\t{p.lifetime} seconds, no volume limit",
    ]


def _isakmp_policy(config: Config, args: list[str], bad: Callable[[int, str], UnknownCommand]) -> str:
    if args:
        raise bad(0, "the end of the command")
    out = ["Global IKE policy"]
    for prio in sorted(config.isakmp_policies):
        out += _policy_lines(f"Protection suite of priority {prio}", config.isakmp_policies[prio])
    out += _policy_lines("Default protection suite", IsakmpPolicy(65535))
    return "\n".join(out) + "\n"


def _sa_lifetime(config: Config, args: list[str],
                 bad: Callable[[int, str], UnknownCommand]) -> str:
    if args:
        raise bad(0, "the end of the command")
    g = config.ipsec
    return (f"Security association lifetime: {g.effective_lifetime_kilobytes} kilobytes/"
            f"{g.effective_lifetime_seconds} seconds\n")


# ---------------------------------------------------------------------------------------
# show access-lists / running-config


def _access_lists(config: Config, args_raw: list[str],
                  bad: Callable[[int, str], UnknownCommand]) -> str:
    if len(args_raw) > 1:
        raise bad(1, "the end of the command")
    lists: list[AccessList] = list(config.access_lists.values())
    if args_raw:
        lists = [a for a in lists if a.name == args_raw[0]]
    return "".join(str(a) + "\n" for a in lists)


def _running_config(config: Config, args: list[str],
                    bad: Callable[[int, str], UnknownCommand]) -> str:
    if args:
        raise bad(0, "the end of the command")
    body = "!\n" + config.render(mask_secrets=True) + "end\n"
    return f"Building configuration...\n\nCurrent configuration : {len(body)} bytes\n{body}"
