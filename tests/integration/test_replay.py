"""`neuraflow replay` of a real recording through the demo pipeline: every sample archived, bit-exact."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from neuraflow.sinks import read_chunks, read_events

from .conftest import REPO

pytestmark = pytest.mark.ray

EDF_STREAM = "S001R06"


def _neuraflow_exe() -> str:
    exe = Path(sys.executable).parent / "neuraflow"
    if exe.is_file():
        return str(exe)
    found = shutil.which("neuraflow")
    if found is None:
        pytest.fail("the `neuraflow` console script is not installed (pip install -e .)")
    return found


def test_replay_eegmmidb_through_demo(eegmmidb_edf: Path, tmp_path: Path) -> None:
    import mne

    warehouse = tmp_path / "warehouse"
    catalog_uri = f"sqlite:///{tmp_path / 'catalog.db'}"
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        "NEURAFLOW_STORAGE__WAREHOUSE": str(warehouse),
        "NEURAFLOW_STORAGE__CATALOG_URI": catalog_uri,
    }
    env.pop("RAY_ADDRESS", None)
    env.pop("NEURAFLOW_DEMO__N_CHANNELS", None)  # configs/test.yaml: 4 channels; the replayed file has 64  # its own local Ray, not a cluster another test started
    started = time.monotonic()
    proc = subprocess.run(
        [_neuraflow_exe(), "replay", str(eegmmidb_edf), "--pipeline", str(REPO / "pipelines" / "demo.py"),
         "--config", str(REPO / "configs" / "test.yaml"), "--quiet"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240,
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, f"replay exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "x real time" in proc.stdout, proc.stdout
    assert "replayed 20000 samples x 64 channels" in proc.stdout, proc.stdout
    assert "error" not in proc.stdout, proc.stdout
    print(f"replay subprocess: {elapsed:.1f} s; {proc.stdout.strip()}")

    raw = mne.io.read_raw(eegmmidb_edf, preload=True, verbose="error")
    expected = raw.get_data().astype(np.float32)
    assert expected.shape == (64, 20000)

    from neuraflow.config import load_settings

    table = load_settings(REPO / "configs" / "test.yaml").storage
    chunks = read_chunks(catalog_uri, str(warehouse), table.table, EDF_STREAM, catalog_name=table.catalog_name)
    seqs = [c.seq for c in chunks]
    assert seqs == list(range(len(chunks))), "seqs missing or duplicated"
    assert len(chunks) == -(-20000 // 256)  # --chunk-size default 256, last chunk shorter
    assert all(c.n_channels == 64 for c in chunks)
    assert [c.meta["sample_index"] for c in chunks] == list(range(0, 20000, 256))
    stored = np.concatenate([c.data for c in chunks], axis=1)
    assert stored.dtype == np.float32 and stored.shape == (64, 20000)
    np.testing.assert_array_equal(stored, expected)
    assert chunks[0].info.channels == tuple(raw.ch_names)
    t0 = raw.info["meas_date"].timestamp()
    assert chunks[0].t0_s == pytest.approx(t0)
    assert chunks[-1].t0_s == pytest.approx(t0 + 256 * (len(chunks) - 1) / 160.0)

    power = read_chunks(catalog_uri, str(warehouse), table.table, f"{EDF_STREAM}/bandpower",
                        catalog_name=table.catalog_name)
    assert [c.seq for c in power] == list(range(len(power)))
    # 1 s windows every 0.25 s over 125 s of signal
    assert abs(len(power) - (125 - 1) * 4 - 1) <= 1, len(power)
    assert all(c.n_channels == 64 * 5 for c in power)

    events = read_events(catalog_uri, str(warehouse), table.table, EDF_STREAM, catalog_name=table.catalog_name)
    labels = sorted(e.label for e in events)
    assert labels == sorted(str(d) for d in raw.annotations.description), labels
