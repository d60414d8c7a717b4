"""Artifact ops: EOG regression (vs MNE), blink/EMG detection, amplitude guard, real-recording validation."""

from __future__ import annotations

import importlib.util
import pickle

import mne
import numpy as np
import pytest
from numpy.testing import assert_allclose

from neuraflow.devices import Synthetic
from neuraflow.errors import PipelineDefinitionError
from neuraflow.ops import (
    amplitude_guard,
    blink_detector,
    emg_detector,
    eog_regression,
    fit_eog_regression,
    run_offline,
)
from neuraflow.chunk import StreamInfo
from neuraflow.testing import chunks_from_array, make_info, random_chunking
from tests.conftest import REPO

SF = 250.0


def _cat(chunks):
    return np.concatenate([c.data for c in chunks], axis=1).astype(np.float64)


def _eog_mixture(rng, n=7500):
    """3 EEG channels contaminated by 2 EOG channels with known gains (volts)."""
    t = np.arange(n) / SF
    eog = np.vstack([np.sin(2 * np.pi * 0.7 * t), np.sign(np.sin(2 * np.pi * 0.23 * t))]) * 80e-6
    eog += 5e-6 * rng.standard_normal(eog.shape)
    brain = 10e-6 * rng.standard_normal((3, n))
    gains = np.array([[0.4, 0.1], [0.2, -0.3], [0.05, 0.0]])
    return np.vstack([eog, brain + gains @ eog]), brain, gains


def test_fit_eog_regression_equals_mne(rng):
    x, _, gains = _eog_mixture(rng)
    info = mne.create_info(["EOG1", "EOG2", "C3", "C4", "Pz"], SF, ["eog", "eog", "eeg", "eeg", "eeg"])
    raw = mne.io.RawArray(x, info, verbose=False).set_eeg_reference([], verbose=False)  # keep the reference
    ref = mne.preprocessing.EOGRegression(picks="eeg", picks_artifact="eog").fit(raw)
    coef = fit_eog_regression(x, [0, 1])
    assert_allclose(coef, ref.coef_, rtol=1e-9, atol=1e-12)
    assert_allclose(coef, gains, atol=0.02)  # recovers the true mixing
    cleaned = ref.apply(raw).get_data()[2:]
    ours = x[2:] - coef @ x[:2]
    assert_allclose(ours - ours.mean(axis=1, keepdims=True), cleaned - cleaned.mean(axis=1, keepdims=True),
                    atol=1e-12)


def test_online_calibration_equals_offline_fit_and_removes_eog(rng):
    x, brain, _ = _eog_mixture(rng)
    info = StreamInfo("s", SF, ("EOG1", "EOG2", "C3", "C4", "Pz"), ("eog", "eog", "eeg", "eeg", "eeg"))
    k = int(10 * SF)
    out = _cat(run_offline(eog_regression(["EOG1", "EOG2"], calibration_s=10.0),
                           chunks_from_array(x.astype(np.float32), info, random_chunking(x.shape[1], rng))))
    x32 = x.astype(np.float32).astype(np.float64)
    assert_allclose(out[:, :k], x32[:, :k], atol=1e-12)  # passed through while calibrating
    coef = fit_eog_regression(x32[:, :k], [0, 1])
    assert_allclose(out[2:, k:], x32[2:, k:] - coef @ x32[:2, k:], atol=1e-9)
    assert_allclose(out[:2], x32[:2], atol=1e-12)  # EOG channels unchanged
    before = np.mean((x[2:, k:] - brain[:, k:]) ** 2)
    after = np.mean((out[2:, k:] - brain[:, k:]) ** 2)
    assert after < 0.02 * before


def test_eog_regression_proxies_and_validation():
    with pytest.raises(ValueError, match="proxies"):
        eog_regression().infer_info(make_info(3, SF))
    info = StreamInfo("s", SF, ("Fp1", "Fp2", "O1"))
    assert eog_regression().infer_info(info) == info
    with pytest.raises(PipelineDefinitionError):
        eog_regression(calibration_s=0.0)
    with pytest.raises(PipelineDefinitionError):
        eog_regression(fit_band=(8.0, 1.0))


def test_blink_detector_on_synthetic_blinks():
    dev = Synthetic(n_channels=8, blinks=True, seed=3, realtime=False, start_s=0.0)
    n = int(120 * SF)
    x = dev.expected(0, n)
    spec = blink_detector(z=6.0, calibration_s=10.0, min_interval_s=0.5)
    out = run_offline(spec, chunks_from_array(x, dev.info, random_chunking(n, np.random.default_rng(0)), t0_s=0.0))
    flags = _cat(out)[0]
    found = np.flatnonzero(flags) / SF
    assert np.allclose(sorted(t for c in out for t in c.meta["blinks_s"]), found)
    onsets = np.array([dev._blink_onset(k) for k in range(30)]) / SF
    onsets = onsets[(onsets > 10.0) & (onsets < 119.0)]  # detection starts after the calibration
    hits = [np.any((found >= t) & (found <= t + 0.4)) for t in onsets]
    true_pos = [np.any((onsets <= f) & (f <= onsets + 0.4)) for f in found]
    assert np.mean(hits) >= 0.9, f"recall {np.mean(hits):.2f}"
    assert np.mean(true_pos) >= 0.9, f"precision {np.mean(true_pos):.2f}"


def test_blink_detector_fixed_threshold_and_refractory():
    x = np.zeros((2, 1000))
    x[:, 100:130] = 200e-6  # one blink-like step ...
    x[:, 160:190] = 200e-6  # ... and a second one 0.24 s later: inside the refractory time
    x[:, 600:630] = 200e-6
    spec = blink_detector(["ch0", "ch1"], threshold_uv=50.0, min_interval_s=0.3)
    flags = _cat(run_offline(spec, chunks_from_array(x.astype(np.float32), make_info(2, SF), [1000])))[0]
    assert flags.sum() == 2 and 100 <= np.flatnonzero(flags)[0] < 130 and 600 <= np.flatnonzero(flags)[1] < 630
    with pytest.raises(PipelineDefinitionError):
        blink_detector(threshold_uv=50.0, z=3.0)


def _emg_signal(rng, n=5000):
    t = np.arange(n) / SF
    alpha = 20e-6 * np.sin(2 * np.pi * 10.0 * t)
    x = np.vstack([alpha, alpha]) + 2e-6 * rng.standard_normal((2, n))
    burst = slice(2000, 3000)
    from scipy import signal

    hf = signal.sosfilt(signal.butter(4, (40.0, 100.0), "bandpass", fs=SF, output="sos"), rng.standard_normal(n))
    x[0, burst] += 60e-6 * hf[burst] / hf[burst].std()
    return x, alpha, burst


def test_emg_detector_marks_and_suppresses_a_muscle_burst(rng):
    x, alpha, burst = _emg_signal(rng)
    info = make_info(2, SF)
    chunks = chunks_from_array(x.astype(np.float32), info, random_chunking(x.shape[1], rng))
    marked = _cat(run_offline(emg_detector(action="mark"), chunks))
    assert marked.shape == (3, x.shape[1])
    flag = marked[2]
    assert flag[burst][200:].mean() > 0.95  # after the power averages caught up
    assert flag[500:1900].sum() == 0 and flag[3500:].sum() == 0
    out = _cat(run_offline(emg_detector(action="suppress"), chunks))
    assert_allclose(out[:, :1900], x.astype(np.float32)[:, :1900], atol=1e-12)  # untouched while clean
    assert_allclose(out[1], x.astype(np.float32)[1], atol=1e-12)  # clean channel never touched
    seg = slice(burst.start + 200, burst.stop)
    assert np.mean((out[0, seg] - alpha[seg]) ** 2) < 0.05 * np.mean((x[0, seg] - alpha[seg]) ** 2)
    assert np.mean(out[0, seg] ** 2) > 0.8 * np.mean(alpha[seg] ** 2)  # alpha kept through the low-pass


def test_emg_detector_validation():
    with pytest.raises(PipelineDefinitionError):
        emg_detector(ratio_threshold=1.5)
    with pytest.raises(PipelineDefinitionError):
        emg_detector(action="drop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Nyquist"):
        emg_detector(band=(30.0, 200.0)).infer_info(make_info(1, SF))


def test_amplitude_guard_actions_and_motion(rng):
    n = 1000
    x = 10e-6 * rng.standard_normal((3, n))
    x[1, 300:310] = 500e-6
    accel = np.tile(np.array([[0.0], [0.0], [1.0]]), (1, n))
    accel[0, 700:720] += 0.5  # a jolt
    info = StreamInfo("s", SF, ("c0", "c1", "c2", "ax", "ay", "az"), units=("V",) * 3 + ("g",) * 3)
    data = np.vstack([x, accel]).astype(np.float32)
    chunks = chunks_from_array(data, info, random_chunking(n, rng, max_size=60))
    kw = {"accel_channels": ["ax", "ay", "az"], "accel_threshold_g": 0.2}
    mark = _cat(run_offline(amplitude_guard(max_abs_v=100e-6, action="mark", **kw), chunks))[-1]
    assert set(np.flatnonzero(mark)) >= set(range(300, 310)) | set(range(700, 720))
    assert mark[:300].sum() == 0 and mark[400:690].sum() == 0
    zeroed = _cat(run_offline(amplitude_guard(max_abs_v=100e-6, action="zero", **kw), chunks))
    assert np.all(zeroed[:3, 300:310] == 0) and np.all(zeroed[3:] == data[3:])
    kept = run_offline(amplitude_guard(max_abs_v=100e-6, action="drop", **kw), chunks)
    times = np.concatenate([c.times_s for c in kept])
    samples = np.round((times - chunks[0].t0_s) * SF).astype(int)
    assert_allclose(_cat(kept), data[:, samples], atol=0)  # each kept sample keeps its own time
    assert set(samples).isdisjoint(np.flatnonzero(mark))
    ptp = _cat(run_offline(amplitude_guard(peak_to_peak_v=300e-6, window_s=0.2, action="mark"), chunks[:]))[-1]
    assert ptp[300:350].all() and not ptp[:300].any()  # stays flagged while the spike is in the window
    with pytest.raises(PipelineDefinitionError):
        amplitude_guard()
    with pytest.raises(PipelineDefinitionError):
        amplitude_guard(accel_threshold_g=0.1)


def test_states_pickle(rng):
    x, _, _ = _eog_mixture(rng, n=600)
    info = make_info(5, SF)
    spec = eog_regression(["ch0"], calibration_s=1.0)
    chunks = chunks_from_array(x.astype(np.float32), info, [300, 300])
    state = spec.init(chunks[0])
    state, _ = spec.step(state, chunks[0])
    clone = pickle.loads(pickle.dumps(state))
    assert_allclose(spec.step(clone, chunks[1])[1][0].data, spec.step(state, chunks[1])[1][0].data)


# ------------------------------------------------------------------ real recording
def _benchmark():
    spec = importlib.util.spec_from_file_location("_bench_artifacts", REPO / "benchmarks" / "artifacts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_real_recording_blinks_and_jaw_clenches_are_detected(openbci_txt):
    bench = _benchmark()
    x, info = bench.load(openbci_txt)
    x = x[:, : x.shape[1] // 25 * 25]
    chunks = chunks_from_array(x.astype(np.float32), info, [25] * (x.shape[1] // 25))
    out = run_offline(blink_detector(["exg0", "exg1"], threshold_uv=40.0), chunks)
    found = np.array([t - chunks[0].t0_s + bench.SKIP_S for c in out for t in c.meta["blinks_s"]])
    for a, b in bench.BLINKS_S:  # blink trains at 4-7, 13-17 and 76-81 s
        assert 3 <= np.sum((found > a) & (found < b + 1.0)) <= 10
    assert np.sum((found > 30.0) & (found < 75.0)) == 0  # none in the clean stretch or the alpha block
    mark = _cat(run_offline(emg_detector(action="mark", line_freq=60.0), [c for c in chunks]))[-1]
    t = np.arange(mark.size) / SF + bench.SKIP_S

    def frac(a, b):
        return mark[(t >= a) & (t < b)].mean()

    assert frac(8.0, 13.0) > 0.5 and frac(82.0, 84.0) > 0.5  # jaw clenches
    assert frac(30.0, 60.0) < 0.1


def test_real_recording_validation_figures(openbci_txt):
    fig = _benchmark().evaluate(openbci_txt)
    assert fig["eog_offline_fit"]["blink_removed_%"] > 8.0 and fig["eog_offline_fit"]["alpha_kept_%"] > 95.0
    assert fig["emg_suppress"]["jaw_removed_%"] > 60.0 and fig["emg_suppress"]["alpha_kept_%"] > 95.0
    asr20 = fig["asr_cutoff20"]
    assert asr20["blink_fp_removed_%"] > 80.0 and asr20["jaw_removed_%"] > 70.0 and asr20["alpha_kept_%"] > 95.0
