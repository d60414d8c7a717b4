"""Shared fixtures: seeded synthetic signals and the real recordings in ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("NEURAFLOW_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def eegmmidb_edf() -> Path:
    path = SHARED_DATA / "eegmmidb" / "S001R06.edf"
    if not path.exists():
        pytest.fail(f"real recording missing: {path} (see ../shared/data/SOURCES.md)")
    return path

