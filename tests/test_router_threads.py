"""``Router(crypto_threads=N)``: a batch's packets of different SAs are encrypted and
decrypted on several threads, each SA's packets on one thread in their order.

Oracle: the same routers with ``crypto_threads=1`` (the one-thread path that the other
router tests check against scapy) give byte-identical output (manual SAs with fixed keys
and no random IV: esp-null + HMAC and AH), identical counters and sequence numbers, and
the receiving router decrypts the threaded output back to the input."""

from __future__ import annotations

import pytest

pytest.importorskip("scapy")
from test_router_kit import manual_pair, udp  # noqa: E402

import ipsecfast.sa as sa_mod  # noqa: E402
from ipsecfast import PacketBatch  # noqa: E402
from ipsecfast.router import Router, Verdict  # noqa: E402

IF = "GigabitEthernet0/0"
ENTRIES = [(f"permit ip 10.1.0.0 0.0.255.255 10.2.{k}.0 0.0.0.255",
            f"permit ip 10.2.{k}.0 0.0.0.255 10.1.0.0 0.0.255.255") for k in range(6)]


def traffic(n: int = 600) -> PacketBatch:
    return PacketBatch.from_list([udp(f"10.1.0.{1 + i % 50}", f"10.2.{i % 7}.{1 + i % 9}",
                                      40 + (i * 37) % 1400, i) for i in range(n)])


@pytest.mark.parametrize("spec", ["esp-null esp-sha-hmac", "ah-sha256-hmac"])
def test_threads_give_the_one_thread_result(spec: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sa_mod, "PARALLEL_MIN_PACKETS", 1)
    calls: list[int] = []
    real = sa_mod._esp.run_multi

    def spy(*args: object, **kw: object) -> int:
        if len(args) >= 17:
            calls.append(int(args[16]))  # type: ignore[call-overload]
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(sa_mod._esp, "run_multi", spy)
    cfg_a, cfg_b, _ = manual_pair(spec, entries=ENTRIES)
    batch = traffic()
    results = []
    for threads in (1, 3):
        a = Router(cfg_a, crypto_threads=threads)
        b = Router(cfg_b, crypto_threads=threads)
        calls.clear()
        out = a.outbound(IF, batch)
        back = b.inbound(IF, out.packets)
        if threads > 1:
            assert 1 in calls and 2 in calls  # both directions ran in parts
        results.append((out, back, a.show("crypto ipsec sa"), b.show("crypto ipsec sa")))
    (o1, b1, sa1, sb1), (o3, b3, sa3, sb3) = results
    assert o1.packets.to_list() == o3.packets.to_list()
    assert list(o1.verdict) == list(o3.verdict)
    # 10.2.6.x has no entry: bypassed; every other packet protected and back intact
    assert (o3.verdict == Verdict.PROTECT).sum() == sum(1 for i in range(600) if i % 7 != 6)
    protected = [p for p, v in zip(batch.to_list(), o3.verdict, strict=True)
                 if v == Verdict.PROTECT]
    got = [p for p, v in zip(b3.packets.to_list(), b3.verdict, strict=True)
           if v == Verdict.PROTECT]
    assert got == protected
    assert sa1 == sa3 and sb1 == sb3  # counters, sequence numbers, SPIs


def test_crypto_threads_validated() -> None:
    cfg_a, _, _ = manual_pair("esp-null esp-sha-hmac")
    assert Router(cfg_a).crypto_threads >= 1
    for bad in (0, -1, True, 65):
        with pytest.raises(ValueError, match="crypto_threads"):
            Router(cfg_a, crypto_threads=bad)  # type: ignore[arg-type]
