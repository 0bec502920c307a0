"""The two-router demo (``ipsecfast demo`` / ``make demo``) runs, negotiates, and checks
every protected packet; its captures open in scapy with the keys it wrote."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("scapy")
from scapy.layers.inet import IP  # noqa: E402
from scapy.layers.ipsec import ESP  # noqa: E402
from scapy.layers.ipsec import SecurityAssociation as ScapySA  # noqa: E402
from scapy.utils import rdpcap  # noqa: E402

from ipsecfast import PacketBatch, parse_config  # noqa: E402
from ipsecfast.check import check_pair  # noqa: E402
from ipsecfast.demo import (  # noqa: E402
    DEMO_A_CONFIG,
    DEMO_B_CONFIG,
    make_demo_traffic,
    mirror_flows,
    run_demo,
)


def test_demo_runs_and_everything_arrives(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                          ) -> None:
    out = tmp_path / "demo-out"
    assert run_demo(packets=3000, repeat=2, out_dir=str(out)) == 0
    text = capsys.readouterr().out
    assert "every protected packet arrived intact" in text
    assert text.count("QM_IDLE") == 2  # both routers' show crypto isakmp sa
    assert "demo-a# show crypto ipsec sa" in text and "demo-b# show crypto ipsec sa" in text
    assert "throughput" in text and "Mpps" in text
    assert "10.0.110.1" in text and "10.0.111.1/24" in text  # the address fix is stated
    names = sorted(p.name for p in out.iterdir())
    assert names == ["1-a-to-b-plain.pcap", "2-a-to-b-wire.pcap", "3-a-to-b-received.pcap",
                     "4-b-to-a-plain.pcap", "5-b-to-a-wire.pcap", "6-b-to-a-received.pcap",
                     "esp_sa"]
    # the key file opens the wire capture: decrypt it with scapy
    lines = [x for x in (out / "esp_sa").read_text().splitlines() if not x.startswith("#")]
    sas = {}
    for line in lines:
        f = [x.strip('"') for x in line.split('","')]
        sas[(f[1], f[2])] = (int(f[3], 16), bytes.fromhex(f[5][2:]), bytes.fromhex(f[7][2:]))
    plain = [bytes(p) for p in rdpcap(str(out / "1-a-to-b-plain.pcap"))]
    wire = [bytes(p) for p in rdpcap(str(out / "2-a-to-b-wire.pcap"))]
    spi, ck, ak = sas[("10.0.110.2", "10.0.110.1")]
    ssa = ScapySA(ESP, spi=spi, crypt_algo="AES-CBC", crypt_key=ck, auth_algo="HMAC-SHA1-96",
                  auth_key=ak, tunnel_header=IP(src="10.0.110.2", dst="10.0.110.1"))
    checked = 0
    for p, w in zip(plain, wire, strict=True):
        if w[9] == 50:
            dec = ssa.decrypt(IP(w))
            if p[12:20] == bytes([10, 0, 110, 2, 10, 0, 110, 1]):  # transport mode
                # scapy (tunnel_header set) returns the transport payload, no IP header
                assert bytes(dec) == p[20:]
            else:
                assert bytes(dec) == p
            checked += 1
        else:
            assert w == p
    assert checked > 1000


def test_demo_quiet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_demo(quiet=True, packets=500, repeat=1, out_dir=str(tmp_path)) == 0
    assert capsys.readouterr().out.strip().splitlines() == [
        "ipsecfast demo: 1 negotiation(s), every protected packet arrived intact"]


def test_demo_routers_are_a_clean_pair_and_traffic_is_valid() -> None:
    a, b = parse_config(DEMO_A_CONFIG), parse_config(DEMO_B_CONFIG)
    assert not [f for f in check_pair(a, b) if f.severity == "error"]
    batch, counts = make_demo_traffic(1000)
    assert sum(counts.values()) == 1000 and min(counts.values()) > 0
    f = batch.ipv4_fields()
    assert f.valid.all() and set(f.proto.tolist()) == {1, 6, 17}
    back = mirror_flows(mirror_flows(batch))
    assert back.to_list() == batch.to_list()
    m = mirror_flows(PacketBatch.from_list(batch.to_list()[:50]))
    for x, y in zip(batch.to_list()[:50], m.to_list(), strict=True):
        ix, iy = IP(x), IP(y)
        assert (ix.src, ix.dst) == (iy.dst, iy.src)
        assert IP(bytes(iy)).chksum == iy.chksum  # still valid


def test_input_order_is_the_wire_order() -> None:
    """Both modes of one SA in one batch (the demo's transform set is ``mode
    transport``): in the router's output, in input order, every SA's sequence numbers
    increase, and the peer (anti-replay on) accepts every protected packet."""
    from ipsecfast.ike import Network
    from ipsecfast.router import Router, Verdict

    a = Router(parse_config(DEMO_A_CONFIG))
    b = Router(parse_config(DEMO_B_CONFIG))
    net = Network()
    net.add(a)
    net.add(b)
    batch, _ = make_demo_traffic(400)
    out = a.outbound("FastEthernet0/0/1", batch)
    prot = out.verdict == Verdict.PROTECT
    assert prot.sum() > 0
    wire = out.packets
    seqs: dict[int, list[int]] = {}
    for p, v, sa in zip(wire.to_list(), out.verdict, out.sa, strict=True):
        if v == Verdict.PROTECT:
            seqs.setdefault(int(sa), []).append(int.from_bytes(p[24:28], "big"))
    for numbers in seqs.values():
        assert numbers == list(range(1, len(numbers) + 1))
    assert (b.inbound("FastEthernet0/0/1", wire).verdict[prot] == Verdict.PROTECT).all()
