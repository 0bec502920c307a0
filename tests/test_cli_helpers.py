"""Small CLI behaviours: the capped list of data-plane findings printed by encrypt /
decrypt, the allocator tuning, and how the output file is made."""

from __future__ import annotations

import pytest

pytest.importorskip("scapy")
from test_router_kit import udp  # noqa: E402

from ipsecfast import PacketBatch, pcap  # noqa: E402
from ipsecfast.cli import main  # noqa: E402


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


def test_output_mode_drops_setuid_bits(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os
    import stat

    out = tmp_path / "out.pcap"
    out.write_bytes(b"old")
    os.chmod(out, 0o6755)
    _encrypt_to(tmp_path, out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755


def test_a_failed_run_through_a_symlink_removes_the_file_not_the_link(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    real = tmp_path / "real.pcap"
    real.write_bytes(b"x" * 100)
    link = tmp_path / "link.pcap"
    link.symlink_to(real)
    cfg = tmp_path / "a.cfg"
    cfg.write_text(gcm_manual_config(1).replace("esp-gcm", "esp-null esp-sha-hmac").replace(
        " cipher ", " authenticator "))
    good = tmp_path / "in.pcap"
    pcap.write(good, PacketBatch.from_list([udp("10.1.0.1", "10.2.0.1")] * 20))
    src = tmp_path / "cut.pcap"
    src.write_bytes(good.read_bytes()[:-5])  # the last record is cut short
    assert main(["encrypt", "--config", str(cfg), "--quiet", "--chunk-packets", "4",
                 str(src), str(link)]) == 2
    assert link.is_symlink() and not real.exists()  # the half-written file is gone


def test_an_output_that_cannot_be_opened_is_left_alone(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    import socket

    # a Unix socket file: opening it for writing fails (ENXIO) even for root, while
    # removing it would succeed; the run must not remove what it could not open
    sock_path = tmp_path / "out.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(sock_path))
    try:
        cfg = tmp_path / "a.cfg"
        cfg.write_text(gcm_manual_config(1).replace("esp-gcm", "esp-null esp-sha-hmac")
                       .replace(" cipher ", " authenticator "))
        src = tmp_path / "in.pcap"
        pcap.write(src, PacketBatch.from_list([udp("10.1.0.1", "10.2.0.1")]))
        for target in (sock_path, tmp_path / "link"):
            if target.name == "link":
                target.symlink_to(sock_path)
            assert main(["encrypt", "--config", str(cfg), "--quiet", str(src),
                         str(target)]) == 2
            assert sock_path.is_socket()
    finally:
        sock.close()


def _cut_capture(tmp_path, n: int = 20):  # type: ignore[no-untyped-def]
    """A capture of ``n`` packets whose last record is cut short, and a config for it."""
    cfg = tmp_path / "a.cfg"
    cfg.write_text(gcm_manual_config(1).replace("esp-gcm", "esp-null esp-sha-hmac").replace(
        " cipher ", " authenticator "))
    good = tmp_path / "good.pcap"
    pcap.write(good, PacketBatch.from_list([udp("10.1.0.1", "10.2.0.1")] * n))
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(good.read_bytes()[:-5])
    return cfg, cut


def test_a_failed_run_leaves_a_special_output_file_alone(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os

    cfg, cut = _cut_capture(tmp_path)
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    rd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader, so opening to write works
    try:
        link = tmp_path / "link"
        link.symlink_to(fifo)
        for target in (fifo, link):
            # chunk 1 is fine (the output is opened and written), a later one is corrupt
            assert main(["encrypt", "--config", str(cfg), "--quiet", "--chunk-packets", "1",
                         str(cut), str(target)]) == 2
            assert fifo.is_fifo()  # not removed: the run removes only a regular file
    finally:
        os.close(rd)


def test_an_interrupted_run_stops_its_threads_and_drops_queued_chunks(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import threading
    import time

    import ipsecfast.cli as cli
    from ipsecfast.config import parse_config
    from ipsecfast.router import Router

    cfg, _ = _cut_capture(tmp_path)
    src = tmp_path / "good.pcap"
    written: list[int] = []
    real_write = cli._Writer._write

    def slow_write(self, *args):  # type: ignore[no-untyped-def]
        time.sleep(0.2)
        written.append(1)
        return real_write(self, *args)

    monkeypatch.setattr(cli._Writer, "_write", slow_write)
    router = Router(parse_config(cfg.read_text()))
    calls = [0]
    real_outbound = router.outbound

    def outbound(ifname, batch):  # type: ignore[no-untyped-def]
        calls[0] += 1
        if calls[0] == 5:
            raise KeyboardInterrupt
        return real_outbound(ifname, batch)

    router.outbound = outbound  # type: ignore[method-assign]
    out = tmp_path / "out.pcap"
    with pytest.raises(KeyboardInterrupt):
        cli.run_pcap(router, "GigabitEthernet0/0", "encrypt", str(src), str(out),
                     chunk_packets=1, progress=False)
    alive = [t.name for t in threading.enumerate() if t.name.startswith("ipsecfast-")
             and not t.name.startswith("ipsecfast-crypto") and t.is_alive()]
    assert alive == []
    assert not out.exists()
    assert len(written) < 4  # the chunks still queued were dropped, not written
