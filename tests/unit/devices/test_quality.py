"""signal_quality: measures on synthetic signals, and the real OpenBCI recording (blinks, jaw clenches, alpha)."""

from __future__ import annotations

import numpy as np
import pytest

from neuraflow.devices import OpenBCITextPlayback
from neuraflow.devices.quality import METRICS, REASONS, channel_quality, quality_record, signal_quality
from neuraflow.errors import EndOfStream, PipelineDefinitionError
from neuraflow.ops import run_offline
from neuraflow.testing import chunks_from_array, make_info

FS = 250.0


def test_measures_on_synthetic_channels(rng):
    t = np.arange(250) / FS
    eeg = 20e-6 * np.sin(2 * np.pi * 10 * t) + 2e-6 * rng.standard_normal(250)
    x = np.stack([
        eeg,                                                   # clean
        np.zeros(250) + 1e-3,                                  # flat (DC only)
        np.clip(eeg * 1e4, -0.1, 0.1),                         # clipped at +-0.1 V
        eeg + 60e-6 * rng.standard_normal(250),                # broadband noise: "EMG"
        eeg + 200e-6 * np.sin(2 * np.pi * 50 * t),             # mains
        eeg + 800e-6 * np.exp(-(((t - 0.5) / 0.1) ** 2)),      # blink-like bump
    ])
    q = channel_quality(x, FS, line_freq=50.0)
    reasons = [REASONS[int(r)] for r in q["reason"]]
    assert reasons == ["ok", "flat", "railed", "emg", "line_noise", "amplitude"]
    assert q["score"][0] == 1.0 and q["score"][1] == 0.0
    assert q["railed"][2] > 0.5 and q["emg_ratio"][3] > 0.6 and q["line_ratio"][4] > 0.95
    assert 0.5 <= q["score"][4] < 0.6  # line noise alone at most halves the score
    assert q["range_v"][5] > 600e-6
    rail = channel_quality(x[:1] * 0 + 0.2, FS, rail_v=0.1875)
    assert rail["railed"][0] == 1.0 and rail["score"][0] == 0.0


def test_op_windows_do_not_depend_on_chunking(rng):
    x = 10e-6 * rng.standard_normal((3, 1000))
    info = make_info(3, FS)
    a = run_offline(signal_quality(1.0), chunks_from_array(x, info, [1000]))
    b = run_offline(signal_quality(1.0), chunks_from_array(x, info, [7, 300, 93, 500, 100]))
    assert len(a) == len(b) == 4
    for ca, cb in zip(a, b):
        np.testing.assert_array_equal(ca.data, cb.data)
        assert ca.t0_s == cb.t0_s and ca.seq == cb.seq
    assert a[0].info.channels[: len(METRICS)] == tuple(f"ch0/{m}" for m in METRICS)
    assert a[1].t0_s - a[0].t0_s == pytest.approx(1.0) and a[0].info.sfreq == 1.0


def test_parameter_validation():
    with pytest.raises(PipelineDefinitionError, match="window_s"):
        signal_quality(0)
    with pytest.raises(PipelineDefinitionError, match="rail_v"):
        signal_quality(rail_v=-1)
    with pytest.raises(PipelineDefinitionError, match="thresholds"):
        signal_quality(thresholds={"nope": 1})
    with pytest.raises(ValueError, match="Nyquist"):
        signal_quality(line_freq=60.0).infer_info(make_info(2, 100.0))


def _windows(path):
    dev = OpenBCITextPlayback(path, chunk_size=125, realtime=False)
    dev.open()
    chunks = []
    try:
        while True:
            chunk = dev.read(0.0)
            if chunk is not None:
                chunks.append(chunk)
    except EndOfStream:
        pass
    out = run_offline(signal_quality(1.0, line_freq=60.0), chunks)  # a US recording: 60 Hz mains
    arr = np.concatenate([o.data for o in out], axis=1).reshape(8, len(METRICS), -1)
    return {m: arr[:, i] for i, m in enumerate(METRICS)}, out, chunks


def test_real_recording_jaw_clench_vs_eyes_closed_alpha(openbci_txt):
    """Times found by looking at the data (1 s windows from the file start; channels 0-based):

    - jaw clenches: 8, 9, 11, 12 s on exg2 and exg4 (and 10, 13 s on exg3/exg5); 30 Hz+ power
      is 70-85 % of the (line-free) power there, against 20-50 % at rest.
    - eyes-closed alpha: 67-72 s on the occipital-like exg6/exg7 (8-13 Hz is 30-60 % of the power).
    - the raw file carries strong 60 Hz mains (line ratio ~0.97): every window is marked
      ``line_noise`` at best, which caps scores at 0.5.
    """
    q, out, chunks = _windows(openbci_txt)
    assert len(out) == sum(c.n_samples for c in chunks) // 250 == 89
    clench_s, clench_ch = [8, 9, 11, 12], [2, 4]
    alpha_s, alpha_ch = list(range(67, 73)), [6, 7]
    clench_emg = q["emg_ratio"][np.ix_(clench_ch, clench_s)]
    alpha_emg = q["emg_ratio"][np.ix_(alpha_ch, alpha_s)]
    assert clench_emg.min() > 0.65 and alpha_emg.max() < 0.4
    assert clench_emg.mean() > 2.5 * alpha_emg.mean()
    clench_score = q["score"][np.ix_(clench_ch, clench_s)]
    alpha_score = q["score"][np.ix_(alpha_ch, alpha_s)]
    assert clench_score.max() < 0.35 and alpha_score.min() >= 0.45
    clench_reasons = [out[s].meta["reasons"][f"exg{c}"] for s in clench_s for c in clench_ch]
    assert clench_reasons.count("emg") >= 6, clench_reasons  # the others: line_noise, the clench is weaker there
    assert {out[s].meta["reasons"][f"exg{c}"] for s in alpha_s for c in alpha_ch} == {"line_noise"}
    assert (q["line_ratio"][:, alpha_s] > 0.9).all() and (q["flat"] == 0).all()


def test_quality_record_is_json_ready(openbci_txt):
    _, _, chunks = _windows(openbci_txt)
    data = np.concatenate([c.data for c in chunks[16:18]], axis=1)  # 8-9 s: a clench
    rec = quality_record(data.astype(np.float64), chunks[0].info, line_freq=60.0)
    assert rec["channels"]["exg2"]["reason"] == "emg" and 0 <= rec["score"] < 0.35
    assert set(rec["channels"]["exg0"]) == {"score", "reason", "railed", "flat", "line_ratio", "emg_ratio", "range_v"}
