"""The demo pipeline on local Ray: exactly-once archive, bit-exact samples, band power = offline."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from scipy import signal

from neuraflow.devices import Synthetic
from neuraflow.graph.loader import load_plan
from neuraflow.runtime.executor import Engine
from neuraflow.sinks import read_chunks, read_events

from .conftest import REPO, make_settings

pytestmark = pytest.mark.ray
BANDS = {"delta": (1.0, 4.0), "theta": (4.0, 8.0), "alpha": (8.0, 13.0), "beta": (13.0, 30.0), "gamma": (30.0, 40.0)}


def offline_band_power(raw: np.ndarray, sfreq: float, end: int, n_win: int) -> np.ndarray:
    """notch(50) -> Butterworth band-pass 1-40 (order 4) -> Hann periodogram band means, log10."""
    b, a = signal.iirnotch(50.0, 30.0, fs=sfreq)
    sos = np.vstack([signal.tf2sos(b, a), signal.butter(4, [1.0, 40.0], btype="bandpass", fs=sfreq, output="sos")])
    clean = signal.sosfilt(sos, raw.astype(np.float64), axis=-1)
    freqs, psd = signal.periodogram(clean[:, end - n_win : end], fs=sfreq, window="hann", detrend="constant", axis=-1)
    out = []
    for ch in range(raw.shape[0]):
        for lo, hi in BANDS.values():
            mask = (freqs >= lo) & (freqs < hi)
            out.append(np.log10(psd[ch, mask].mean()))
    return np.array(out)


def test_demo_pipeline_archives_every_chunk_once(ray_local, tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    plan = load_plan(REPO / "pipelines" / "demo.py", settings)
    handle = Engine(settings).start(plan)
    try:
        time.sleep(10.0)
        live = handle.latest("synth-0/bandpass", 1.0)
        assert live.n_channels == settings.demo.n_channels and live.n_samples > 0
    finally:
        status = handle.stop()
        metrics = handle.metrics()
        handle.destroy()
    assert all(s["error"] is None for s in status["sinks"].values()), status["sinks"]
    storage = settings.storage
    for i in range(settings.demo.n_devices):
        stream_id = f"synth-{i}"
        chunks = read_chunks(storage.catalog_uri, storage.warehouse, storage.table, stream_id,
                             catalog_name=storage.catalog_name)
        seqs = [c.seq for c in chunks]
        assert len(chunks) >= 50, f"{stream_id}: only {len(chunks)} chunks in 10 s"
        assert seqs == list(range(len(chunks))), f"{stream_id}: seqs missing or duplicated"
        assert metrics["streams"][stream_id]["chunks"] == len(chunks)
        device = Synthetic(stream_id, n_channels=settings.demo.n_channels, sfreq=settings.demo.sfreq,
                           chunk_size=settings.demo.chunk_size, seed=i, blinks=True, markers=True)
        raw = np.concatenate([c.data for c in chunks], axis=1)
        first = chunks[0].meta["sample_index"]
        assert first == 0
        np.testing.assert_array_equal(raw, device.expected(first, raw.shape[1]))

        power = read_chunks(storage.catalog_uri, storage.warehouse, storage.table, f"{stream_id}/bandpower",
                            catalog_name=storage.catalog_name)
        assert [c.seq for c in power] == list(range(len(power))) and len(power) >= 20
        sfreq, n_win = settings.demo.sfreq, int(round(1.0 * settings.demo.sfreq))
        for chunk in power[:: max(1, len(power) // 8)]:
            end = int(round((chunk.t0_s - chunks[0].t0_s) * sfreq))
            expected = offline_band_power(raw, sfreq, end, n_win)
            np.testing.assert_allclose(chunk.data[:, 0], expected, rtol=1e-4, atol=1e-4)
    events = read_events(storage.catalog_uri, storage.warehouse, storage.table, catalog_name=storage.catalog_name)
    assert any(e.label in ("T1", "T2") for e in events), "markers of the synthetic devices were not archived"
