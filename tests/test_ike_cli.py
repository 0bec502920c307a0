"""``ipsecfast simulate A.cfg B.cfg IN.pcap --out DIR`` and ``ipsecfast encrypt
--peer-config B.cfg``: negotiated SAs, the hop captures, the key file, the exit status.
The captures are checked with scapy, decrypted with the keys the commands wrote."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("scapy")
from scapy.layers.inet import ICMP, IP, TCP, UDP  # noqa: E402
from scapy.layers.ipsec import ESP  # noqa: E402
from scapy.layers.ipsec import SecurityAssociation as ScapySA  # noqa: E402
from scapy.layers.l2 import ARP, Ether  # noqa: E402
from scapy.utils import rdpcap, wrpcap  # noqa: E402

from ipsecfast.cli import main  # noqa: E402

CONFIGS = Path(__file__).resolve().parent / "configs" / "ike"
HQ, BRANCH = str(CONFIGS / "hq.cfg"), str(CONFIGS / "branch.cfg")
HUB, SPOKE = str(CONFIGS / "hub_dynamic.cfg"), str(CONFIGS / "spoke.cfg")


def _ip(frame: Ether) -> bytes:
    """The IPv4 packet of a frame, without the Ethernet padding scapy keeps after it."""
    return bytes(frame[IP])[: frame[IP].len]


def _capture(path: Path, src_net: str = "10.1", dst_net: str = "10.2") -> list[bytes]:
    """Ethernet frames, padded with zeros to the 60-byte minimum as on the wire: LAN-to-LAN
    TCP / UDP / ICMP, the SNMP host pair, traffic outside every ACL, and an ARP frame.
    Returns the IPv4 packets."""
    frames = []
    for i in range(12):
        frames.append(Ether() / IP(src=f"{src_net}.0.{i + 1}", dst=f"{dst_net}.0.{i + 1}")
                      / TCP(sport=40000 + i, dport=443) / (b"a" * (i * 37)))
        frames.append(Ether() / IP(src=f"{src_net}.0.{i + 1}", dst=f"{dst_net}.0.{i + 1}")
                      / UDP(sport=5000 + i, dport=5001) / (b"b" * (i * 91)))
    frames.append(Ether() / IP(src=f"{src_net}.0.9", dst=f"{dst_net}.0.9") / ICMP() / b"ping")
    frames.append(Ether() / IP(src="10.1.99.1", dst="10.2.99.1") / UDP(sport=40001, dport=161)
                  / b"snmp")
    frames.append(Ether() / IP(src=f"{src_net}.0.1", dst="8.8.8.8") / UDP(dport=53) / b"dns")
    frames.append(Ether() / ARP())
    frames = [Ether(bytes(f).ljust(60, b"\0")) for f in frames]
    wrpcap(str(path), frames)
    return [_ip(f) for f in frames if IP in f]


def _keys(path: Path) -> dict[tuple[str, str], tuple[int, str, bytes, bytes]]:
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            continue
        f = [x.strip('"') for x in line.split('","')]
        ak = bytes.fromhex(f[7][2:]) if f[7] else b""
        out[(f[1], f[2])] = (int(f[3], 16), f[4], bytes.fromhex(f[5][2:]), ak)
    return out


def _gcm(spi: int, key: bytes, src: str, dst: str) -> ScapySA:
    return ScapySA(ESP, spi=spi, crypt_algo="AES-GCM", crypt_key=key,
                   tunnel_header=IP(src=src, dst=dst))


def test_simulate_both_ways(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pkts = _capture(tmp_path / "in.pcap")
    out = tmp_path / "sim"
    assert main(["simulate", HQ, BRANCH, str(tmp_path / "in.pcap"), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    # HQ proposes gcm then cbc; the branch has gcm only: the first common set wins
    assert "transform set gcm (esp-gcm 256, tunnel), PFS group14" in text
    assert "ip 10.1.0.0 0.0.255.255 10.2.0.0 0.0.255.255" in text
    assert "udp host 10.1.99.1 host 10.2.99.1 eq snmp: transform set auth-only" in text
    assert "A -> B: 26 protected, 26 arrived intact, 0 lost or altered" in text
    assert "B -> A (mirrored flows): 26 protected, 26 arrived intact" in text
    assert sorted(p.name for p in out.iterdir()) == [
        "1-a-outbound.pcap", "2-b-inbound.pcap", "3-b-outbound.pcap", "4-a-inbound.pcap",
        "esp_sa", "show-a.txt", "show-b.txt"]
    assert (out / "esp_sa").stat().st_mode & 0o077 == 0
    keys = _keys(out / "esp_sa")
    spi, alg, key, _ = keys[("203.0.113.1", "198.51.100.2")]
    assert alg.startswith("AES-GCM") and len(key) == 36
    wire = rdpcap(str(out / "1-a-outbound.pcap"))
    assert len(wire) == 28  # every frame, the ARP one included
    ssa = _gcm(spi, key, "203.0.113.1", "198.51.100.2")
    opened = [bytes(ssa.decrypt(f[IP])) for f in wire if IP in f and f[IP].proto == 50]
    assert opened == [p for p in pkts if p[12:14] == bytes([10, 1]) and p[16:18] == bytes([10, 2])
                      and p[12:16] != bytes([10, 1, 99, 1])]
    inbound = rdpcap(str(out / "2-b-inbound.pcap"))
    assert [_ip(f) for f in inbound if IP in f] == pkts
    # whole frames, Ethernet padding included, as they entered A
    assert [bytes(f) for f in inbound] == [bytes(f) for f in rdpcap(str(tmp_path / "in.pcap"))]
    # the way back: the mirrored flows, protected by B and opened by A
    spi_b, _, key_b, _ = keys[("198.51.100.2", "203.0.113.1")]
    back = _gcm(spi_b, key_b, "198.51.100.2", "203.0.113.1")
    b_wire = [f[IP] for f in rdpcap(str(out / "3-b-outbound.pcap")) if IP in f]
    first = next(f for f in b_wire if f.proto == 50)
    inner = back.decrypt(first)
    assert (inner.src, inner.dst) == ("10.2.0.1", "10.1.0.1") and inner[TCP].sport == 443
    show_b = (out / "show-b.txt").read_text()
    assert "branch# show crypto isakmp sa" in show_b and "QM_IDLE" in show_b
    assert "Session status: UP-ACTIVE" in show_b and "#pkts decaps: 25" in show_b


def test_simulate_exit_status_when_negotiation_fails(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    _capture(tmp_path / "in.pcap")
    bad = tmp_path / "branch-bad.cfg"
    bad.write_text(Path(BRANCH).read_text().replace("hq-branch-psk", "wrong-psk"))
    rc = main(["simulate", HQ, str(bad), str(tmp_path / "in.pcap"), "--out",
               str(tmp_path / "o")])
    assert rc == 1
    text = capsys.readouterr().out
    assert "negotiation failed: 203.0.113.1 -> 198.51.100.2: phase 1: pre-shared keys differ" in text
    assert "wrong-psk" not in text and "hq-branch-psk" not in text
    assert "A -> B: 0 protected, 0 arrived intact, 0 lost or altered, 26 dropped by the sender" in text
    assert "MM_KEY_EXCH" in (tmp_path / "o" / "show-a.txt").read_text()


def test_simulate_dynamic_map_hub(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _capture(tmp_path / "in.pcap", src_net="10.130", dst_net="10.0")
    out = tmp_path / "hub"
    assert main(["simulate", SPOKE, HUB, str(tmp_path / "in.pcap"), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "crypto map vpn 10 <-> crypto dynamic-map spokes 10 (temporary entry)" in text
    assert "A -> B: 25 protected, 25 arrived intact" in text
    hub = (out / "show-b.txt").read_text()
    assert "Session status: UP-ACTIVE" in hub and "Peer: 192.0.2.66 port 500" in hub


def test_encrypt_with_peer_config_and_export_keys(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    pkts = _capture(tmp_path / "in.pcap")
    enc, keys = tmp_path / "enc.pcap", tmp_path / "esp_sa"
    rc = main(["encrypt", "--config", HQ, "--peer-config", BRANCH, str(tmp_path / "in.pcap"),
               str(enc), "--export-keys", str(keys), "--quiet"])
    assert rc == 0
    captured = capsys.readouterr()
    assert "protected    26" in captured.out
    k = _keys(keys)
    assert set(k) == {("203.0.113.1", "198.51.100.2"), ("198.51.100.2", "203.0.113.1")}
    spi, _, key, _ = k[("203.0.113.1", "198.51.100.2")]
    ssa = _gcm(spi, key, "203.0.113.1", "198.51.100.2")
    got = [bytes(ssa.decrypt(f[IP])) for f in rdpcap(str(enc)) if IP in f and f[IP].proto == 50]
    assert got == [p for p in pkts if p[12:14] == bytes([10, 1]) and p[16:18] == bytes([10, 2])
                   and p[12:16] != bytes([10, 1, 99, 1])]
    # without the peer, the same traffic has no SAs: dropped (no-sa), as DESIGN.md §Policy 5
    rc = main(["encrypt", "--config", HQ, str(tmp_path / "in.pcap"), str(tmp_path / "x.pcap"),
               "--quiet"])
    assert rc == 0
    assert "dropped      26 (no-sa 26)" in capsys.readouterr().out


def test_peer_config_is_an_encrypt_option_only(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["decrypt", "--config", HQ, "--peer-config", BRANCH, "a.pcap", "b.pcap"])


def test_simulate_bad_configuration(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.cfg"
    bad.write_text("crypto map M 10 ipsec-isakmp\n set pfs group99\n")
    _capture(tmp_path / "in.pcap")
    assert main(["simulate", str(bad), BRANCH, str(tmp_path / "in.pcap"), "--out",
                 str(tmp_path / "o")]) == 2
    assert "group99" in capsys.readouterr().err
