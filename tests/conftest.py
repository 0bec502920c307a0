"""Shared test fixtures.

``SHARED`` is ``../shared`` beside the clone (present in CI and on developer machines,
absent in a user's clone): tests that read the ClassBench sets use it when it is there
and otherwise fall back to rule sets they generate themselves.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VECTORS = Path(__file__).resolve().parent / "vectors"
SHARED = ROOT.parent / "shared"
CLASSBENCH = SHARED / "data" / "classbench"


def load_vectors(name: str) -> list[dict]:
    with open(VECTORS / name) as fh:
        return json.load(fh)["vectors"]


@pytest.fixture(scope="session")
def classbench_dir() -> Path | None:
    return CLASSBENCH if CLASSBENCH.is_dir() else None
