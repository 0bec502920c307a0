"""Wireshark interop: tshark opens ``ipsecfast encrypt`` output with the keys that
``--export-keys`` / ``ipsecfast keys`` write, decrypts every packet and finds every ICV good.

tshark is a test dependency: ``make test`` installs it (the Makefile's ``sysdeps``
target). Without it these tests fail, saying so, rather than skip.

Every transform family Wireshark 4.0 can open (Debian 12's tshark): AES-CBC 128 / 192 /
256, AES-CTR, 3DES, DES and NULL with each HMAC (MD5-96, SHA-1-96, SHA-256-128,
SHA-384-192, SHA-512-256), AES-GCM 128 / 256 (16-byte ICV), and ESP inside AH (tshark
checks the ESP ICV; it has no AH key table). The exported file is used as written (its
comment lines included) as the ``esp_sa`` table of a throw-away Wireshark profile
(``XDG_CONFIG_HOME``), and its lines again through ``-o uat:esp_sa:...``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("scapy")
from scapy.layers.inet import IP, UDP  # noqa: E402
from scapy.packet import Raw  # noqa: E402
from scapy.utils import wrpcap  # noqa: E402
from test_cli_pcap import A_ADDR, B_ADDR, T0, make_pair  # noqa: E402

from ipsecfast.cli import main  # noqa: E402

FAMILIES = [
    "esp-aes esp-sha-hmac",
    "esp-aes 192 esp-md5-hmac",
    "esp-aes 256 esp-sha256-hmac",
    "esp-aes esp-sha384-hmac",
    "esp-aes 256 esp-sha512-hmac",
    "esp-aes-ctr esp-sha-hmac",
    "esp-aes-ctr 256 esp-sha256-hmac",
    "esp-3des esp-sha-hmac",
    "esp-des esp-md5-hmac",
    "esp-null esp-sha256-hmac",
    "esp-gcm",
    "esp-gcm 256",
    "ah-sha-hmac esp-aes esp-sha-hmac",
    "ah-sha256-hmac esp-gcm",
]
N = 8
SIZES = (0, 1, 15, 16, 100, 512, 1000, 1400)


def tshark() -> str:
    path = shutil.which("tshark")
    if path is None:
        pytest.fail("tshark is not installed: run `make test` (its `sysdeps` target installs "
                    "tshark), or `apt-get install tshark`")
    return path


def inner_packets(mode: str) -> list[IP]:
    """UDP on ports tshark has no dissector for, so the payload shows as `data`."""
    out = []
    for i in range(N):
        src, dst = (A_ADDR, B_ADDR) if mode == "transport" else ("10.1.0.1", f"10.2.0.{i + 1}")
        body = bytes((0x30 + i + j) & 0xFF for j in range(SIZES[i]))
        out.append(IP(src=src, dst=dst, id=0x4000 + i) / UDP(sport=40000 + i, dport=40400)
                   / Raw(body))
    return out


def encrypt_with_keys(tmp: Path, ts_text: str, mode: str = "tunnel") -> tuple[Path, Path, list[IP]]:
    pair = make_pair(tmp, ts_text, mode)
    packets = inner_packets(mode)
    for i, p in enumerate(packets):
        p.time = T0 + i
    clear, enc, keys = tmp / "clear.pcap", tmp / "enc.pcap", tmp / "esp_sa.txt"
    wrpcap(str(clear), packets, linktype=101)
    assert main(["encrypt", "--config", str(pair.a), "--quiet", "--export-keys", str(keys),
                 str(clear), str(enc)]) == 0
    return enc, keys, packets


def run_tshark(capture: Path, env: dict[str, str], extra: list[str]) -> list[list[str]]:
    fields = ["esp.spi", "esp.icv_good", "esp.icv_bad", "ip.dst", "ip.id", "udp.srcport",
              "data.data"]
    cmd = [tshark(), "-n", "-r", str(capture),
           "-o", "esp.enable_encryption_decode:TRUE",
           "-o", "esp.enable_authentication_check:TRUE",
           *extra, "-T", "fields", "-E", "separator=|", "-E", "occurrence=a"]
    for f in fields:
        cmd += ["-e", f]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return [line.split("|") for line in proc.stdout.splitlines()]


def profile_env(tmp: Path, keys: Path) -> dict[str, str]:
    """A fresh Wireshark configuration directory whose esp_sa table is our file."""
    conf = tmp / "xdg"
    (conf / "wireshark").mkdir(parents=True, exist_ok=True)
    shutil.copy(keys, conf / "wireshark" / "esp_sa")
    return {**os.environ, "XDG_CONFIG_HOME": str(conf), "HOME": str(tmp)}


def _true(value: str) -> bool:
    return value in ("1", "True")


def check_decrypted(rows: list[list[str]], packets: list[IP], mode: str) -> None:
    assert len(rows) == len(packets)
    for row, p in zip(rows, packets, strict=True):
        spi, good, bad, dst, ident, sport, data = row
        assert spi, row
        assert _true(good) and not _true(bad), f"ICV not good: {row}"
        # the inner packet, as tshark dissected it after decryption
        dsts = dst.split(",")
        assert dsts[-1] == p[IP].dst
        assert ident.split(",")[-1] == f"0x{p[IP].id:04x}" or ident.split(",")[-1] == str(p[IP].id)
        assert sport == str(p[UDP].sport)
        assert data == bytes(p[Raw]).hex()
        if mode == "tunnel":
            assert dsts[0] == B_ADDR and len(dsts) == 2


@pytest.mark.parametrize("ts_text", FAMILIES)
def test_tshark_decrypts_with_exported_keys(tmp_path: Path, ts_text: str) -> None:
    enc, keys, packets = encrypt_with_keys(tmp_path, ts_text)
    rows = run_tshark(enc, profile_env(tmp_path, keys), [])
    check_decrypted(rows, packets, "tunnel")


def test_tshark_transport_mode(tmp_path: Path) -> None:
    enc, keys, packets = encrypt_with_keys(tmp_path, "esp-aes 256 esp-sha-hmac", "transport")
    check_decrypted(run_tshark(enc, profile_env(tmp_path, keys), []), packets, "transport")


def test_tshark_keys_command_lines_through_uat_options(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    enc, _, packets = encrypt_with_keys(tmp_path, "esp-gcm 256")
    pair = make_pair(tmp_path, "esp-gcm 256")  # same keys: the config is deterministic
    capsys.readouterr()
    assert main(["keys", "--config", str(pair.a), "--format", "wireshark"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln and not ln.startswith("#")]
    extra = [a for ln in lines for a in ("-o", f"uat:esp_sa:{ln}")]
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "empty"), "HOME": str(tmp_path)}
    check_decrypted(run_tshark(enc, env, extra), packets, "tunnel")


def test_tshark_flags_a_wrong_key(tmp_path: Path) -> None:
    """The check is not vacuous: one flipped authentication-key bit makes every ICV bad."""
    enc, keys, packets = encrypt_with_keys(tmp_path, "esp-aes esp-sha256-hmac")
    text = keys.read_text().splitlines()
    row = next(i for i, ln in enumerate(text) if ln.startswith('"IPv4","' + A_ADDR))
    fields = text[row].split(",")
    last = fields[-1].strip('"')
    fields[-1] = '"' + last[:-1] + ("0" if last[-1] != "0" else "1") + '"'
    text[row] = ",".join(fields)
    keys.write_text("\n".join(text) + "\n")
    rows = run_tshark(enc, profile_env(tmp_path, keys), [])
    assert len(rows) == len(packets)
    assert all(_true(r[2]) and not _true(r[1]) for r in rows), rows
