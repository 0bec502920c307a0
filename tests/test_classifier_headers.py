"""``Classifier.lookup_with_headers``: the same classification as ``lookup``, plus the
header fields read on the way, checked against the pure-Python packet parse of
test_classifier_match_lists (its oracle, written from RFC 791 / 793 / 768 / 792)."""

from __future__ import annotations

import numpy as np
import pytest
from test_classifier_match_lists import parse, r_case

from ipsecfast.classifier import (
    H_BYTE0,
    H_DPORT,
    H_DST,
    H_FRAG,
    H_PROTO,
    H_SPORT,
    H_SRC,
    H_TOS,
    HEADER_COLUMNS,
    Classifier,
)
from ipsecfast.packets import PacketBatch


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("mirror", [False, True])
def test_headers_and_classification(seed: int, mirror: bool) -> None:
    acls, pkts, _ = r_case(seed)
    pkts = [*pkts, b"", b"\x60" + bytes(39)]  # empty, IPv6
    batch = PacketBatch.from_list(pkts)
    clf = Classifier(acls)
    cls, hdr = clf.lookup_with_headers(batch, mirror)
    ref = clf.lookup(batch, mirror)
    for got, want in zip(cls, ref, strict=True):
        assert got.tolist() == want.tolist()
    assert hdr.shape == (len(pkts), HEADER_COLUMNS) and hdr.dtype == np.uint32
    for i, p in enumerate(pkts):
        status, f = parse(p)
        assert int(cls.status[i]) == int(status), i
        row = hdr[i]
        assert row[H_BYTE0] == (p[0] if p else 0), i
        if f is None:
            assert row[[H_SRC, H_DST, H_SPORT, H_DPORT, H_PROTO, H_TOS, H_FRAG]].tolist() \
                == [0] * 7, i
            continue
        # as in the packet (not mirrored); ports of TCP / UDP only
        ports = (f.source_port, f.destination_port) if f.protocol in (6, 17) else (0, 0)
        assert row[[H_SRC, H_DST, H_PROTO, H_TOS, H_FRAG]].tolist() == [
            f.source, f.destination, f.protocol, f.tos, f.fragment], i
        assert (int(row[H_SPORT]), int(row[H_DPORT])) == ports, i


@pytest.mark.parametrize("seed", range(5))
def test_match_lists_reads_the_same_headers(seed: int) -> None:
    acls, pkts, lists = r_case(seed)
    batch = PacketBatch.from_list(pkts)
    clf = Classifier(acls)
    res, hdr = clf.match_lists_with_headers(batch, lists, mirror=True)
    assert np.array_equal(hdr, clf.lookup_with_headers(batch, mirror=True)[1])
    plain = clf.match_lists(batch, lists, mirror=True)
    for got, want in zip(res, plain, strict=True):
        assert got.tolist() == want.tolist()
