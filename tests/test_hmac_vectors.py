"""HMAC known answers (tests/vectors/hmac_vectors.json: RFC 2202, RFC 4231 / 4868 via
strongSwan) through the core's integrity path: precomputed inner / outer states copied per
message, exactly what ESP and AH use. Full-length and IPsec-truncated forms.

AES-XCBC and AES-CMAC entries are for integrity algorithms ipsecfast does not offer and
are not in the list.
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import load_vectors

from ipsecfast import _esp
from ipsecfast.transform import AuthAlg

_ALGS = {
    "hmac-md5": AuthAlg.HMAC_MD5_96,
    "hmac-sha1": AuthAlg.HMAC_SHA1_96,
    "hmac-sha2-256": AuthAlg.HMAC_SHA256_128,
    "hmac-sha2-384": AuthAlg.HMAC_SHA384_192,
    "hmac-sha2-512": AuthAlg.HMAC_SHA512_256,
}
VECTORS = [v for v in load_vectors("hmac_vectors.json") if v["algorithm"] in _ALGS]


def test_every_hmac_algorithm_has_vectors() -> None:
    assert {v["algorithm"] for v in VECTORS} == set(_ALGS)
    assert any(v["truncated"] for v in VECTORS) and any(not v["truncated"] for v in VECTORS)


@pytest.mark.parametrize("v", VECTORS, ids=lambda v: str(v["id"]))
def test_hmac_known_answer(v: dict[str, Any]) -> None:
    mac = _esp.hmac(int(_ALGS[v["algorithm"]]), bytes.fromhex(v["key"]),
                    bytes.fromhex(v["data"]), int(v["output_len"]))
    assert mac.hex() == v["mac"]


def test_hmac_rejects_bad_length() -> None:
    with pytest.raises(ValueError):
        _esp.hmac(int(AuthAlg.HMAC_SHA1_96), b"k", b"data", 0)
