"""Shared fixtures: seeded synthetic signals and the real recordings in ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

REPO = Path(__file__).resolve().parents[1]

def _shared_data() -> Path:
    """``$NEURAFLOW_SHARED_DATA``, else ``../shared/data`` beside the checkout, else /work/shared/data."""
    if "NEURAFLOW_SHARED_DATA" in os.environ:
        return Path(os.environ["NEURAFLOW_SHARED_DATA"])
    for candidate in (REPO.parent / "shared" / "data", Path("/work/shared/data")):
        if candidate.is_dir():
            return candidate
    return REPO.parent / "shared" / "data"


SHARED_DATA = _shared_data()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def _recording(relative: str) -> Path:
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.fail(f"real recording missing: {path} (see ../shared/data/SOURCES.md)")
    return path


@pytest.fixture(scope="session")
def eegmmidb_edf() -> Path:
    """PhysioNet EEGMMIDB subject 1 run 6: 64 ch, 160 Hz, 20,000 samples, 30 annotations."""
    return _recording("eegmmidb/S001R06.edf")


@pytest.fixture(scope="session")
def muse_xdf() -> Path:
    """Muse through LSL + LabRecorder: EEG 256 Hz, PPG 64 Hz, ACC/GYRO 52 Hz, clock offsets."""
    return _recording("muse_xdf/sub-P050_ses-S001_task-Default_run-001_eeg.xdf")


@pytest.fixture(scope="session")
def openbci_txt() -> Path:
    """OpenBCI GUI v6 Cyton recording: 8 ch, 250 Hz, timestamps in ms; blinks, jaw clenches, alpha."""
    return _recording("openbci/OpenBCI_GUI-v6-blinks-jawClench-alpha.txt")

