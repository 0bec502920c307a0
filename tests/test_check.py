"""ipsecfast.check and the `check` / `show` CLI: every rule fires on a config made to trigger
it and stays quiet on a clean pair; the flow-set algebra is exact; exit codes."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipsecfast.check import (
    RULES,
    Finding,
    check_config,
    check_pair,
    exit_status,
    is_subset,
    same_region,
    subtract,
)
from ipsecfast.cli import main
from ipsecfast.config import Config, parse_config

CONFIGS = Path(__file__).resolve().parent / "configs"


def text_of(name: str) -> str:
    return (CONFIGS / name).read_text()


def load(text: str, source: str = "r.cfg") -> Config:
    return parse_config(text, source=source)


def fired(findings: list[Finding], rule: str) -> list[Finding]:
    return [f for f in findings if f.rule == rule]


def edit(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new)


# ---------------------------------------------------------------------------------------
# The flow-set algebra against brute force on a small grid

_iv = st.tuples(st.integers(0, 3), st.integers(0, 3)).map(lambda t: (min(t), max(t)))
_box = st.tuples(_iv, _iv, _iv, _iv, _iv)
_POINTS = list(itertools.product(range(4), repeat=5))


def _inside(p: tuple[int, ...], boxes: list) -> bool:  # type: ignore[type-arg]
    return any(all(lo <= x <= hi for x, (lo, hi) in zip(p, b, strict=True)) for b in boxes)


@settings(max_examples=200, deadline=None)
@given(st.lists(_box, min_size=1, max_size=3), st.lists(_box, max_size=4))
def test_region_algebra_is_exact(a: list, b: list) -> None:  # type: ignore[type-arg]
    rest = subtract(a, b)
    for p in _POINTS:
        assert _inside(p, rest) == (_inside(p, a) and not _inside(p, b))
    assert is_subset(a, b) == all(_inside(p, b) for p in _POINTS if _inside(p, a))
    assert same_region(a, a + b) == is_subset(b, a)


# ---------------------------------------------------------------------------------------
# One configuration: each rule


def one(text: str) -> list[Finding]:
    return check_config(load(text))


APPLIED = "interface Gi0/0\n ip address 192.0.2.1 255.255.255.0\n crypto map m\n"
TS = "crypto ipsec transform-set t esp-aes esp-sha-hmac\n"


def static(acl_lines: str, *, peer: str = "192.0.2.2", extra: str = "") -> str:
    return (TS + "crypto map m 10 ipsec-isakmp\n set peer " + peer + "\n set transform-set t\n"
            " match address 101\n" + extra + APPLIED + acl_lines)


def case_config(rule: str) -> str:
    """The configuration of CASES made to trigger ``rule``."""
    return next(text for name, _, text, _ in CASES if name == rule)


CASES = [
    # (rule, severity, config, line it must point at)
    ("unparsed", "info", "hostname r1\n", 1),
    ("permit-any-any", "warning", static("access-list 101 permit ip any any\n"), 9),
    ("permit-any", "warning", static("access-list 101 permit ip 10.0.0.0 0.0.0.255 any\n"), 9),
    ("dynamic-not-last", "warning",
     TS + "crypto dynamic-map d 1\n set transform-set t\n match address 101\n"
     "crypto map m 10 ipsec-isakmp dynamic d\n"
     "crypto map m 20 ipsec-isakmp\n set peer 192.0.2.2\n set transform-set t\n"
     " match address 102\n" + APPLIED
     + "access-list 101 permit ip 10.0.0.0 0.0.0.255 10.9.0.0 0.0.0.255\n"
       "access-list 102 permit ip 10.1.0.0 0.0.0.255 10.9.0.0 0.0.0.255\n", 5),
    ("dynamic-no-acl", "warning",
     TS + "crypto dynamic-map d 1\n set transform-set t\ncrypto map m 10 ipsec-isakmp dynamic d\n"
     + APPLIED, 2),
    ("dynamic-no-transform-set", "error",
     "crypto dynamic-map d 1\n match address 101\ncrypto map m 10 ipsec-isakmp dynamic d\n"
     + APPLIED + "access-list 101 permit ip 10.0.0.0 0.0.0.255 10.9.0.0 0.0.0.255\n", 1),
    ("manual-multiple-permits", "warning",
     "crypto ipsec transform-set t esp-des\ncrypto map m 10 ipsec-manual\n set peer 192.0.2.2\n"
     " set transform-set t\n set session-key inbound esp 300 cipher 0011223344556677\n"
     " set session-key outbound esp 301 cipher 0011223344556677\n match address 101\n"
     + APPLIED + "access-list 101 permit ip host 10.0.0.1 host 10.9.0.1\n"
     "access-list 101 permit ip host 10.0.0.2 host 10.9.0.2\n", 12),
    ("manual-counter-mode", "error",
     "crypto ipsec transform-set t esp-gcm\ncrypto map m 10 ipsec-manual\n set peer 192.0.2.2\n"
     " set transform-set t\n"
     " set session-key inbound esp 300 cipher 00112233445566778899aabbccddeeff00112233\n"
     " set session-key outbound esp 301 cipher 00112233445566778899aabbccddeeff00112233\n"
     " match address 101\n" + APPLIED + "access-list 101 permit ip host 10.0.0.1 host 10.9.0.1\n",
     2),
    ("manual-missing-key", "error",
     "crypto ipsec transform-set t ah-md5-hmac\ncrypto map m 10 ipsec-manual\n"
     " set peer 192.0.2.2\n set transform-set t\n"
     " set session-key inbound ah 300 00112233445566778899aabbccddeeff\n"
     " match address 101\n" + APPLIED
     + "access-list 101 permit ip host 10.0.0.1 host 10.9.0.1\n", 2),
    ("entry-incomplete", "warning", TS + "crypto map m 10 ipsec-isakmp\n set transform-set t\n"
     + APPLIED, 2),
    ("shadowed-entry", "warning",
     edit(edit(text_of("seed_overlapping_networks.cfg"), "match address 101", "match address X"),
          "match address 102", "match address 101").replace("match address X",
                                                            "match address 102"), 9),
    ("ace-unreachable", "warning",
     static("access-list 101 permit ip 10.0.0.0 0.255.255.255 10.9.0.0 0.0.255.255\n"
            "access-list 101 deny ip 10.1.0.0 0.0.255.255 10.9.1.0 0.0.0.255\n"), 10),
    ("deny-permit-conflict", "warning", text_of("seed_deny_permit.cfg"), 9),
    ("acl-reused", "warning",
     static("access-list 101 permit ip host 10.0.0.1 host 10.9.0.1\n",
            extra="crypto map m 20 ipsec-isakmp\n set peer 192.0.2.3\n set transform-set t\n"
                  " match address 101\n"), 6),
    ("undefined-acl", "error", static(""), 2),
    ("undefined-transform-set", "error",
     "crypto map m 10 ipsec-isakmp\n set peer 192.0.2.2\n set transform-set nope\n"
     " match address 101\n" + APPLIED
     + "access-list 101 permit ip host 10.0.0.1 host 10.9.0.1\n", 1),
    ("undefined-transform-set", "warning",
     TS + "crypto map m 10 ipsec-isakmp\n set peer 192.0.2.2\n set transform-set t nope\n"
     " match address 101\n" + APPLIED
     + "access-list 101 permit ip host 10.0.0.1 host 10.9.0.1\n", 2),
    ("undefined-dynamic-map", "error", "crypto map m 10 ipsec-isakmp dynamic nope\n" + APPLIED, 1),
    ("undefined-crypto-map", "error", APPLIED, 1),
    ("undefined-interface", "error",
     static("access-list 101 permit ip host 10.0.0.1 host 10.9.0.1\n")
     + "crypto map m local-address Loopback0\n", 2),
    ("empty-acl", "warning", static("ip access-list extended 101\n remark nothing yet\n"), 2),
    ("map-not-applied", "warning", TS + "crypto map m 10 ipsec-isakmp\n set peer 192.0.2.2\n"
     " set transform-set t\n match address 101\n"
     "access-list 101 permit ip host 10.0.0.1 host 10.9.0.1\n", 2),
    ("dynamic-map-unused", "warning", TS + "crypto dynamic-map d 1\n set transform-set t\n", 2),
    ("transform-set-unused", "info", TS, 1),
    ("peer-is-self", "warning", static("access-list 101 permit ip host 10.0.0.1 host 10.9.0.1\n",
                                       peer="192.0.2.1"), 2),
    ("no-local-address", "warning",
     TS + "crypto map m 10 ipsec-isakmp\n set peer 192.0.2.2\n set transform-set t\n"
     " match address 101\ninterface Gi0/0\n crypto map m\n"
     "access-list 101 permit ip host 10.0.0.1 host 10.9.0.1\n", 6),
    ("transport-ignored", "info",
     "crypto ipsec transform-set t esp-aes esp-sha-hmac\n mode transport\n"
     "crypto map m 10 ipsec-isakmp\n set peer 192.0.2.2\n set transform-set t\n"
     " match address 101\n" + APPLIED
     + "access-list 101 permit ip 10.0.0.0 0.0.0.255 10.9.0.0 0.0.0.255\n", 3),
    ("interface-shutdown", "info",
     static("access-list 101 permit ip host 10.0.0.1 host 10.9.0.1\n") + "interface Gi0/0\n"
     " shutdown\n", 6),
]


@pytest.mark.parametrize(("rule", "severity", "text", "line"), CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_rule_fires(rule: str, severity: str, text: str, line: int) -> None:
    hits = [f for f in fired(one(text), rule) if f.severity == severity]
    assert hits, one(text)
    assert line in [f.line for f in hits], hits
    assert all(f.source == "r.cfg" and len(f.message) > 30 for f in hits)


def test_seed_sentences_quoted() -> None:
    f = fired(one(text_of("seed_deny_permit.cfg")), "deny-permit-conflict")[0]
    assert "crypto map mymap 10" in f.message and "crypto map mymap 20" in f.message
    assert "not supported" in f.message
    g = fired(one(case_config("dynamic-no-acl")), "dynamic-no-acl")[0]
    assert "not secure" in g.message


def test_overlapping_networks_in_the_seed_order_are_fine() -> None:
    fs = one(text_of("seed_overlapping_networks.cfg"))
    assert not fired(fs, "shadowed-entry") and not fired(fs, "deny-permit-conflict")
    rev = case_config("shadowed-entry")
    f = fired(one(rev), "shadowed-entry")[0]
    assert "crypto map mymap 20" in f.message and "crypto map mymap 10" in f.message


def test_permit_any_after_denies_is_accepted() -> None:
    fs = one(static("access-list 101 deny udp any any eq ntp\n"
                    "access-list 101 permit ip 10.0.0.0 0.0.0.255 any\n"))
    assert not fired(fs, "permit-any")


def test_dynamic_entry_last_is_fine() -> None:
    fs = one(text_of("seed_dynamic_map.cfg"))
    assert exit_status(fs) == 0 and not fs


def test_partial_overlap_is_not_shadowing() -> None:
    fs = one(static("access-list 101 permit ip 10.0.0.0 0.0.0.255 10.9.0.0 0.0.0.255\n",
                    extra="crypto map m 20 ipsec-isakmp\n set peer 192.0.2.3\n"
                          " set transform-set t\n match address 102\n")
             + "access-list 102 permit ip 10.0.0.0 0.0.1.255 10.9.0.0 0.0.0.255\n")
    assert not fired(fs, "shadowed-entry")


def test_shadowing_counts_earlier_denies_and_ports_exactly() -> None:
    # entry 10 protects tcp/80 only; entry 20's ip flow is not shadowed
    base = static("access-list 101 permit tcp 10.0.0.0 0.0.0.255 10.9.0.0 0.0.0.255 eq www\n",
                  extra="crypto map m 20 ipsec-isakmp\n set peer 192.0.2.3\n"
                        " set transform-set t\n match address 102\n")
    assert not fired(one(base + "access-list 102 permit ip host 10.0.0.1 host 10.9.0.1\n"),
                     "shadowed-entry")
    assert fired(one(base + "access-list 102 permit tcp host 10.0.0.1 host 10.9.0.1 eq 80\n"),
                 "shadowed-entry")


def test_clean_configs() -> None:
    for name in ("site_a.cfg", "site_b.cfg", "seed_dynamic_map.cfg"):
        fs = check_config(load(text_of(name), name))
        assert exit_status(fs) == 0, fs
        assert all(f.rule == "unparsed" for f in fs)


def test_seed_aes_example() -> None:
    fs = check_config(load(text_of("seed_aes_static_map.cfg")))
    # the seed's example peers with 10.0.110.1, its own FastEthernet0/1/1 address
    assert [f.rule for f in fs if f.severity != "info"] == ["peer-is-self"]
    assert len(fired(fs, "unparsed")) == 19


# ---------------------------------------------------------------------------------------
# Two configurations


def site_pair(a: str | None = None, b: str | None = None) -> list[Finding]:
    return check_pair(load(a or text_of("site_a.cfg"), "a.cfg"),
                      load(b or text_of("site_b.cfg"), "b.cfg"))


def test_clean_pair_is_quiet() -> None:
    fs = site_pair()
    assert exit_status(fs) == 0
    assert [f.rule for f in fs] == ["unparsed", "unparsed"]


def ike(acl: str, me: str, peer: str, ts: str = "esp-aes esp-sha-hmac", *,
        policy: str = "authentication pre-share", key: str = "k1", extra: str = "") -> str:
    return (f"crypto isakmp policy 10\n {policy}\n"
            + (f"crypto isakmp key {key} address {peer}\n" if key else "")
            + f"crypto ipsec transform-set t {ts}\n"
            f"crypto map m 10 ipsec-isakmp\n set peer {peer}\n set transform-set t\n"
            f" match address 101\n{extra}interface Gi0/0\n ip address {me} 255.255.255.0\n"
            f" crypto map m\n{acl}")


A_ADDR, B_ADDR = "192.0.2.1", "192.0.2.2"
SUBNET_X, SUBNET_Y = "10.1.0.0 0.0.255.255", "10.2.0.0 0.0.255.255"
HOST_A, HOST_B = "host 10.1.0.5", "host 10.2.0.5"


def pair(acl_a: str, acl_b: str, **kw: str) -> list[Finding]:
    kw_a = {k[2:]: v for k, v in kw.items() if k.startswith("a_")}
    kw_b = {k[2:]: v for k, v in kw.items() if k.startswith("b_")}
    return check_pair(load(ike(acl_a, A_ADDR, B_ADDR, **kw_a), "a.cfg"),
                      load(ike(acl_b, B_ADDR, A_ADDR, **kw_b), "b.cfg"))


def pair_only(fs: list[Finding]) -> list[Finding]:
    return [f for f in fs if f.severity != "info" and f.rule not in ("permit-any",)]


@pytest.mark.parametrize(
    ("acl_a", "acl_b"),
    [  # Figure 3, cases 1 and 2: mirror images
        (f"access-list 101 permit ip {SUBNET_X} {SUBNET_Y}\n",
         f"access-list 101 permit ip {SUBNET_Y} {SUBNET_X}\n"),
        (f"access-list 101 permit ip {HOST_A} {HOST_B}\n",
         f"access-list 101 permit ip {HOST_B} {HOST_A}\n"),
        (f"access-list 101 permit tcp {HOST_A} {HOST_B} eq 443\n"
         f"access-list 101 permit udp {HOST_A} range 1000 2000 {HOST_B}\n",
         f"access-list 101 permit tcp {HOST_B} eq 443 {HOST_A}\n"
         f"access-list 101 permit udp {HOST_B} {HOST_A} range 1000 2000\n"),
    ],
)
def test_mirror_images_are_quiet(acl_a: str, acl_b: str) -> None:
    fs = pair(acl_a, acl_b)
    assert pair_only(fs) == [], fs


def test_figure3_cases_3_and_4() -> None:
    # Router M (A) permits host A <-> host B; router N (B) permits subnet Y <-> subnet X.
    fs = pair(f"access-list 101 permit ip {HOST_A} {HOST_B}\n",
              f"access-list 101 permit ip {SUBNET_Y} {SUBNET_X}\n")
    hits = fired(fs, "acl-not-mirror")
    a_side = [f for f in hits if f.source == "a.cfg"]
    b_side = [f for f in hits if f.source == "b.cfg"]
    assert len(a_side) == 1 and "case 3" in a_side[0].message
    assert "a.cfg initiates" in a_side[0].message
    assert len(b_side) == 1 and "case 4" in b_side[0].message
    assert "b.cfg initiates" in b_side[0].message and "refused" in b_side[0].message
    assert all(f.severity == "warning" for f in hits) and exit_status(fs) == 1


def test_no_counterpart_flow() -> None:
    fs = pair(f"access-list 101 permit ip {SUBNET_X} {SUBNET_Y}\n",
              "access-list 101 permit ip 10.3.0.0 0.0.255.255 10.4.0.0 0.0.255.255\n")
    hits = fired(fs, "acl-no-counterpart")
    assert {f.source for f in hits} == {"a.cfg", "b.cfg"}
    assert all(f.severity == "error" and f.line == 12 for f in hits)


def test_no_common_transform_set() -> None:
    acl_a = f"access-list 101 permit ip {SUBNET_X} {SUBNET_Y}\n"
    acl_b = f"access-list 101 permit ip {SUBNET_Y} {SUBNET_X}\n"
    fs = pair(acl_a, acl_b, b_ts="esp-3des esp-sha-hmac")
    hits = fired(fs, "no-common-transform-set")
    assert {f.source for f in hits} == {"a.cfg", "b.cfg"} and hits[0].line == 5
    assert "at least one transform set in common" in hits[0].message


def test_dynamic_responder() -> None:
    a = ike(f"access-list 101 permit ip {SUBNET_X} {SUBNET_Y}\n", A_ADDR, B_ADDR)
    b = ("crypto isakmp policy 10\n authentication pre-share\n"
         f"crypto isakmp key k1 address 0.0.0.0 0.0.0.0\n"
         "crypto ipsec transform-set t esp-aes esp-sha-hmac\n"
         "crypto dynamic-map d 10\n set transform-set t\n match address 150\n"
         f"crypto map m 10 ipsec-isakmp dynamic d\ninterface Gi0/0\n ip address {B_ADDR} "
         "255.255.255.0\n crypto map m\n")
    good = b + f"access-list 150 permit ip {SUBNET_Y} 10.0.0.0 0.255.255.255\n"
    assert pair_only(check_pair(load(a, "a.cfg"), load(good, "b.cfg"))) == []
    narrow = b + f"access-list 150 permit ip {HOST_B} {HOST_A}\n"
    fs = check_pair(load(a, "a.cfg"), load(narrow, "b.cfg"))
    assert [f.rule for f in pair_only(fs)] == ["acl-not-mirror"]


def test_peer_not_pointing_at_the_other_side() -> None:
    acl_a = f"access-list 101 permit ip {SUBNET_X} {SUBNET_Y}\n"
    acl_b = f"access-list 101 permit ip {SUBNET_Y} {SUBNET_X}\n"
    a = ike(acl_a, A_ADDR, "192.0.2.99")
    b = ike(acl_b, B_ADDR, A_ADDR)
    fs = check_pair(load(a, "a.cfg"), load(b, "b.cfg"))
    hits = fired(fs, "peer-mismatch")
    assert len(hits) == 1 and hits[0].source == "a.cfg" and hits[0].severity == "error"
    assert "192.0.2.99" in hits[0].message and B_ADDR in hits[0].message
    # pointing at an interface of B that has no crypto map
    b2 = b + "interface Gi0/1\n ip address 192.0.2.99 255.255.255.0\n"
    fs = check_pair(load(a, "a.cfg"), load(b2, "b.cfg"))
    assert fired(fs, "peer-not-crypto-interface")[0].line == 5


def test_isakmp_policies_and_keys() -> None:
    acl_a = f"access-list 101 permit ip {SUBNET_X} {SUBNET_Y}\n"
    acl_b = f"access-list 101 permit ip {SUBNET_Y} {SUBNET_X}\n"
    fs = pair(acl_a, acl_b, b_policy="authentication rsa-sig")
    hit = fired(fs, "isakmp-no-policy-match")
    assert len(hit) == 1 and hit[0].line == 1 and hit[0].severity == "error"
    fs = pair(acl_a, acl_b, a_policy="authentication pre-share\n lifetime 3600",
              b_policy="authentication pre-share\n lifetime 600")
    hit = fired(fs, "isakmp-lifetime")
    assert len(hit) == 1 and "a.cfg initiates" in hit[0].message
    fs = pair(acl_a, acl_b, b_key="other")
    hit = fired(fs, "psk-mismatch")
    assert len(hit) == 1 and hit[0].line == 3 and "other" not in hit[0].message
    assert "k1" not in hit[0].message
    fs = pair(acl_a, acl_b, a_key="")
    hit = fired(fs, "psk-missing")
    assert len(hit) == 1 and hit[0].source == "a.cfg" and B_ADDR in hit[0].message
    # no policy at all on both sides: IOS's default policy (rsa-sig) matches, no keys needed
    a = ike(acl_a, A_ADDR, B_ADDR).replace("crypto isakmp policy 10\n authentication "
                                           "pre-share\n", "")
    b = ike(acl_b, B_ADDR, A_ADDR).replace("crypto isakmp policy 10\n authentication "
                                           "pre-share\n", "")
    assert pair_only(check_pair(load(a, "a.cfg"), load(b, "b.cfg"))) == []


def test_manual_keys_must_pair_up() -> None:
    b = text_of("site_b.cfg")
    wrong_spi = edit(b, "set session-key inbound esp 2002", "set session-key inbound esp 2003")
    fs = site_pair(b=wrong_spi)
    hits = fired(fs, "manual-keys-mismatch")
    assert len(hits) == 1 and hits[0].source == "a.cfg"
    assert "2002" in hits[0].message and "2003" in hits[0].message
    wrong_key = edit(b, "set session-key outbound ah 1001 0011", "set session-key outbound ah "
                                                                   "1001 9911")
    hits = fired(site_pair(b=wrong_key), "manual-keys-mismatch")
    assert len(hits) == 1 and hits[0].source == "b.cfg" and "ah keys" in hits[0].message
    assert "9911" not in hits[0].message and "0011" not in hits[0].message
    no_ah = "\n".join(x for x in b.splitlines() if "inbound ah" not in x) + "\n"
    hits = fired(site_pair(b=no_ah), "manual-keys-mismatch")
    assert hits and "no inbound ah session key" in hits[0].message


def test_manual_transform_sets_must_be_the_same() -> None:
    b = edit(text_of("site_b.cfg"), "manual-set ah-sha-hmac esp-aes esp-sha-hmac",
             "manual-set ah-sha-hmac esp-aes esp-sha-hmac\n mode transport")
    hits = fired(site_pair(b=b), "manual-transform-mismatch")
    assert hits and "transport" in hits[0].message


def test_manual_acls_must_be_mirror_images() -> None:
    b = edit(text_of("site_b.cfg"), "access-list 150 permit udp host 10.2.0.20 eq ntp host "
             "10.1.0.10", "access-list 150 permit udp host 10.2.0.20 host 10.1.0.10")
    hits = fired(site_pair(b=b), "acl-not-mirror")
    assert {f.source for f in hits} == {"a.cfg", "b.cfg"}
    assert all(f.severity == "error" for f in hits)
    gone = edit(text_of("site_b.cfg"), "access-list 150 permit udp host 10.2.0.20 eq ntp host "
                "10.1.0.10", "access-list 150 permit udp host 10.2.0.99 eq ntp host 10.1.0.10")
    assert fired(site_pair(b=gone), "manual-no-counterpart")


# ---------------------------------------------------------------------------------------
# CLI


def write(tmp_path: Path, name: str, text: str) -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_cli_check_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = str(CONFIGS / "site_a.cfg"), str(CONFIGS / "site_b.cfg")
    assert main(["check", "--config", a, "--peer-config", b]) == 0
    assert "0 error(s), 0 warning(s), 2 info" in capsys.readouterr().out
    warn = write(tmp_path, "w.cfg", static("access-list 101 permit ip any any\n"))
    assert main(["check", "--config", warn]) == 1
    out = capsys.readouterr().out
    assert f"{warn}:9: warning:" in out and "[permit-any-any]" in out
    err = write(tmp_path, "e.cfg", APPLIED)
    assert main(["check", "--config", err]) == 2
    assert "[undefined-crypto-map]" in capsys.readouterr().out
    assert main(["check", "--config", a, "--peer-config", err]) == 2


def test_cli_check_json(capsys: pytest.CaptureFixture[str]) -> None:
    cfg = str(CONFIGS / "seed_deny_permit.cfg")
    assert main(["check", "--config", cfg, "--json"]) == 2
    data = json.loads(capsys.readouterr().out)
    assert data["status"] == 2
    rules = {(f["rule"], f["severity"], f["line"]) for f in data["findings"]}
    assert ("deny-permit-conflict", "warning", 9) in rules
    assert all(f["source"] == cfg for f in data["findings"])


def test_cli_bad_config_is_a_line_numbered_error(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    bad = write(tmp_path, "bad.cfg", "!\ncrypto ipsec transform-set t esp-aes 512\n")
    for argv in (["check", "--config", bad], ["show", "--config", bad, "crypto", "map"],
                 ["check", "--config", str(CONFIGS / "site_a.cfg"), "--peer-config", bad]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        first, mark, why = err.splitlines()[:3]
        assert first == f"{bad}:2: crypto ipsec transform-set t esp-aes 512"
        assert first[mark.index("^"):] == "512"
        assert why.startswith("% Invalid input detected at '^' marker.")
        assert "Traceback" not in err
    assert main(["check", "--config", str(tmp_path / "missing.cfg")]) == 2
    assert "missing.cfg" in capsys.readouterr().err


def test_cli_show(capsys: pytest.CaptureFixture[str]) -> None:
    cfg = str(CONFIGS / "seed_aes_static_map.cfg")
    assert main(["show", "--config", cfg, "crypto", "map"]) == 0
    out = capsys.readouterr().out
    assert out.startswith('Crypto Map "aesmap" 10 ipsec-isakmp')
    assert main(["show", "--config", cfg, "crypto", "ipsec", "transform-set", "tag",
                 "aasset"]) == 0
    assert "Transform set aasset:" in capsys.readouterr().out
    assert main(["show", "--config", cfg, "crypto", "mop"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'mop'" in err and "Traceback" not in err


def test_request_partly_denied_is_refused() -> None:
    # B permits subnet Y <-> subnet X but first denies one host pair of it: A's
    # subnet-wide request is then not entirely permitted by B's list and is refused.
    fs = pair(f"access-list 101 permit ip {SUBNET_X} {SUBNET_Y}\n",
              f"access-list 101 deny ip {HOST_B} {HOST_A}\n"
              f"access-list 101 permit ip {SUBNET_Y} {SUBNET_X}\n")
    a_side = [f for f in fired(fs, "acl-not-mirror") if f.source == "a.cfg"]
    assert a_side and "case 4" in a_side[0].message


def test_pair_without_crypto_interfaces_says_why_it_is_quiet() -> None:
    seed = load(text_of("seed_overlapping_networks.cfg"), "s.cfg")
    fs = check_pair(seed, load(text_of("site_b.cfg"), "b.cfg"))
    hits = fired(fs, "no-crypto-endpoint")
    assert [f.source for f in hits] == ["s.cfg"] and hits[0].severity == "info"


def test_every_rule_is_exercised_here() -> None:
    source = Path(__file__).read_text()
    missing = sorted(r for r in RULES if f'"{r}"' not in source)
    assert not missing, f"rules no test makes fire: {missing}"


def test_transport_between_the_peers_is_quiet() -> None:
    text = ("crypto ipsec transform-set t esp-aes esp-sha-hmac\n mode transport\n"
            "crypto map m 10 ipsec-isakmp\n set peer 192.0.2.2\n set transform-set t\n"
            " match address 101\n" + APPLIED + "access-list 101 permit gre host 192.0.2.1 "
            "host 192.0.2.2\n")
    assert not fired(one(text), "transport-ignored")


def test_pfs_must_agree() -> None:
    acl_a = f"access-list 101 permit ip {SUBNET_X} {SUBNET_Y}\n"
    acl_b = f"access-list 101 permit ip {SUBNET_Y} {SUBNET_X}\n"
    fs = pair(acl_a, acl_b, a_extra=" set pfs group14\n", b_extra=" set pfs group2\n")
    hits = fired(fs, "pfs-mismatch")
    assert {(f.source, f.severity) for f in hits} == {("a.cfg", "error"), ("b.cfg", "error")}
    fs = pair(acl_a, acl_b, b_extra=" set pfs group14\n")
    hits = fired(fs, "pfs-mismatch")
    assert [(f.source, f.severity) for f in hits] == [("a.cfg", "warning")]
    assert "a.cfg initiates" in hits[0].message
    assert not fired(pair(acl_a, acl_b, a_extra=" set pfs\n", b_extra=" set pfs group1\n"),
                     "pfs-mismatch")


def test_per_host_requests_need_only_each_host_pair_permitted() -> None:
    acl_a = f"access-list 101 permit ip {SUBNET_X} {SUBNET_Y}\n"
    # B splits the mirror of A's subnet pair in two entries of its list
    acl_b = ("access-list 101 permit ip 10.2.0.0 0.0.127.255 10.1.0.0 0.0.255.255\n"
             "access-list 101 permit ip 10.2.128.0 0.0.127.255 10.1.0.0 0.0.255.255\n")
    a_side = [f for f in fired(pair(acl_a, acl_b), "acl-not-mirror") if f.source == "a.cfg"]
    assert a_side and "case 4" in a_side[0].message  # one request for the whole subnet pair
    fs = pair(acl_a, acl_b, a_extra=" set security-association level per-host\n")
    assert not [f for f in fired(fs, "acl-not-mirror") if f.source == "a.cfg"]
