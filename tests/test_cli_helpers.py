"""Small CLI behaviours: the capped list of data-plane findings printed by encrypt /
decrypt, and simulate's per-packet byte comparison (``cli._same_bytes``)."""

from __future__ import annotations

import random

import pytest

pytest.importorskip("scapy")
from test_router_kit import udp  # noqa: E402

from ipsecfast import PacketBatch, pcap  # noqa: E402
from ipsecfast.cli import _same_bytes, main  # noqa: E402


def gcm_manual_config(entries: int) -> str:
    """``entries`` manual esp-gcm entries: each one a ``manual-counter-mode`` error."""
    lines = ["crypto ipsec transform-set T esp-gcm"]
    for k in range(entries):
        key = f"{k + 1:02x}" * 20
        lines += [f"crypto map M {10 * (k + 1)} ipsec-manual", " set peer 192.0.2.2",
                  " set transform-set T", f" match address {101 + k}",
                  f" set session-key inbound esp {300 + 2 * k} cipher {key}",
                  f" set session-key outbound esp {301 + 2 * k} cipher {key}"]
    lines += ["interface GigabitEthernet0/0", " ip address 192.0.2.1 255.255.255.0",
              " crypto map M"]
    lines += [f"access-list {101 + k} permit ip 10.1.0.0 0.0.255.255 10.2.{k}.0 0.0.0.255"
              for k in range(entries)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("entries", [2, 3, 10])
def test_encrypt_caps_repeated_findings_per_rule(tmp_path, capsys, entries: int) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "a.cfg"
    cfg.write_text(gcm_manual_config(entries))
    src, dst = tmp_path / "in.pcap", tmp_path / "out.pcap"
    pcap.write(src, PacketBatch.from_list([udp("10.1.0.1", "10.2.0.1")]))
    assert main(["encrypt", "--config", str(cfg), "--quiet", str(src), str(dst)]) == 0
    err = capsys.readouterr().err.splitlines()
    shown = [line for line in err if line.endswith("[manual-counter-mode]")
             and "more" not in line]
    more = [line for line in err if "more [manual-counter-mode]" in line]
    assert len(shown) == min(entries, 3)
    if entries > 3:
        assert len(more) == 1 and f"and {entries - 3} more" in more[0]
    else:
        assert more == []
    # `check` still lists every one
    assert main(["check", "--config", str(cfg)]) == 2
    out = capsys.readouterr().out
    assert out.count("[manual-counter-mode]") == entries


def test_same_bytes_equals_python_comparison() -> None:
    rnd = random.Random(3)
    for _ in range(200):
        n = rnd.randint(0, 40)
        pa = [bytes(rnd.randrange(256) for _ in range(rnd.choice([0, 1, 5, 20])))
              for _ in range(n)]
        pb = [x if rnd.random() < 0.6 or not x else
              x[:rnd.randrange(len(x))] + bytes([x[0] ^ 0x80]) + x[rnd.randrange(len(x)) + 1:]
              for x in pa]
        pb = [y if len(y) == len(x) else x for x, y in zip(pa, pb, strict=True)]
        a = PacketBatch.from_list(pa)
        b = PacketBatch.from_list([b"zz" + y for y in pb])  # b's packets elsewhere in a buffer
        b = PacketBatch(b.buffer, b.offsets + 2, b.lengths - 2)
        got = _same_bytes(a, b, chunk=rnd.choice([1, 3, 7, 1 << 16])).tolist()
        assert got == [x == y for x, y in zip(pa, pb, strict=True)]


def test_tune_allocator_applies_on_glibc_and_is_idempotent() -> None:
    import ctypes
    import sys

    from ipsecfast.cli import tune_allocator

    first = tune_allocator()
    assert tune_allocator() == first  # applied once, the answer remembered
    glibc = sys.platform.startswith("linux") and hasattr(ctypes.CDLL(None), "gnu_get_libc_version")
    assert first == glibc


def _encrypt_to(tmp_path, out) -> bytes:  # type: ignore[no-untyped-def]
    """Encrypt a one-packet capture under a one-entry manual config into ``out``."""
    cfg = tmp_path / "a.cfg"
    cfg.write_text(gcm_manual_config(1).replace("esp-gcm", "esp-null esp-sha-hmac").replace(
        " cipher ", " authenticator "))
    src = tmp_path / "in.pcap"
    pcap.write(src, PacketBatch.from_list([udp("10.1.0.1", "10.2.0.1")]))
    assert main(["encrypt", "--config", str(cfg), "--quiet", str(src), str(out)]) == 0
    return out.read_bytes()


def test_output_replaces_a_regular_file_keeping_its_mode(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os
    import stat

    out = tmp_path / "out.pcap"
    out.write_bytes(b"old contents " * 1000)
    os.chmod(out, 0o640)
    data = _encrypt_to(tmp_path, out)
    assert data[:4] == bytes.fromhex("d4c3b2a1")  # a fresh pcap, nothing of the old file
    assert b"old contents" not in data
    assert stat.S_IMODE(out.stat().st_mode) == 0o640


def test_output_through_a_symlink_and_a_hard_link_is_written_through(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os

    real = tmp_path / "real.pcap"
    real.write_bytes(b"x" * 100)
    link = tmp_path / "link.pcap"
    link.symlink_to(real)
    data = _encrypt_to(tmp_path, link)
    assert link.is_symlink() and real.read_bytes() == data
    hard = tmp_path / "hard.pcap"
    os.link(real, hard)
    real.write_bytes(b"y" * 100)
    data = _encrypt_to(tmp_path, hard)
    assert real.read_bytes() == data == hard.read_bytes()
