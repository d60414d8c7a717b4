"""sliding_band_power equals sliding_window -> log_band_power, incrementally."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose

from neuraflow.chunk import Chunk
from neuraflow.errors import PipelineDefinitionError, StreamMismatchError
from neuraflow.ops import BoundOp, log_band_power, run_offline, sliding_band_power, sliding_window
from neuraflow.ops import _blocks, spectral
from neuraflow.testing import chunks_from_array, make_info, random_chunking

T0 = 1_700_000_000.0
EEG_BANDS = {"delta": (1.0, 4.0), "theta": (4.0, 8.0), "alpha": (8.0, 13.0), "beta": (13.0, 30.0), "gamma": (30.0, 40.0)}


def _reference(chunks, bands, length_s, step_s, relative=False):
    windows = run_offline(sliding_window(length_s, step_s), chunks)
    return run_offline(log_band_power(bands, relative=relative), windows)


def _assert_same(got, want, *, rtol=1e-5):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert_allclose(g.data, w.data, rtol=rtol, atol=1e-6)
        assert g.t0_s == w.t0_s and g.seq == w.seq and g.recv_s == w.recv_s
        assert g.info == w.info and dict(g.meta) == dict(w.meta)


def _signal(rng, n_channels, n_samples, sfreq, *, offset=1e-4):
    t = np.arange(n_samples) / sfreq
    tones = np.sin(2 * np.pi * 10.3 * t) + 0.3 * np.sin(2 * np.pi * 21.0 * t + 1.0)
    x = 20e-6 * (rng.standard_normal((n_channels, n_samples)) + tones) + offset
    return x.astype(np.float32)


@pytest.mark.parametrize(
    ("sfreq", "length_s", "step_s", "max_size"),
    [
        (1000.0, 1.0, 0.032, 32),  # the reference pipeline: window ends fall inside chunks
        (1000.0, 1.0, 0.032, 400),  # many windows per chunk
        (250.0, 1.0, 0.1, 7),  # chunks much shorter than the hop
        (250.0, 0.5, 0.5, 300),  # adjacent windows (hop == window)
        (250.0, 1.0, 0.004, 90),  # one-sample hop
        (160.0, 1.0, 0.0125, 1500),  # odd hop, a chunk longer than the window
        (250.0, 0.996, 0.1, 60),  # odd window length (no Nyquist bin)
    ],
)
@pytest.mark.parametrize("relative", [False, True])
def test_equals_window_then_band_power(sfreq, length_s, step_s, max_size, relative):
    rng = np.random.default_rng(int(sfreq * length_s) + max_size)
    x = _signal(rng, 3, 3000, sfreq)
    chunks = chunks_from_array(x, make_info(3, sfreq), random_chunking(x.shape[1], rng, max_size=max_size), t0_s=T0)
    bands = {k: v for k, v in EEG_BANDS.items() if v[1] <= sfreq / 2}
    # re-anchor every 5 hops as well as (practically) never: both paths must agree with the FFT
    for every in (5, 10**9):
        got = run_offline(sliding_band_power(bands, length_s=length_s, step_s=step_s, relative=relative,
                                             reanchor_every=every), chunks)
        _assert_same(got, _reference(chunks, bands, length_s, step_s, relative))


def test_bands_touching_dc_and_nyquist(rng):
    x = _signal(rng, 2, 1200, 100.0, offset=3.0)  # large DC offset: detrend must cancel it exactly
    chunks = chunks_from_array(x, make_info(2, 100.0), random_chunking(1200, rng, max_size=50))
    bands = {"dc": (0.0, 2.0), "mid": (10.0, 20.0), "top": (45.0, 50.0)}
    got = run_offline(sliding_band_power(bands, length_s=0.5, step_s=0.05, reanchor_every=10**9), chunks)
    _assert_same(got, _reference(chunks, bands, 0.5, 0.05))


def test_real_recording(eegmmidb_edf: Path):
    mne = pytest.importorskip("mne")
    raw = mne.io.read_raw(eegmmidb_edf, preload=True, verbose="error")
    sfreq = raw.info["sfreq"]
    assert sfreq == 160.0
    x = raw.get_data(picks=[0, 8, 20, 40], stop=int(60 * sfreq)).astype(np.float32)  # volts, 1 min
    rng = np.random.default_rng(6)
    info = make_info(x.shape[0], sfreq)
    chunks = chunks_from_array(x, info, random_chunking(x.shape[1], rng, max_size=45), t0_s=T0)
    bands = {**EEG_BANDS, "high": (40.0, 80.0)}  # up to Nyquist
    for relative in (False, True):
        got = run_offline(sliding_band_power(bands, length_s=2.0, step_s=0.1, relative=relative), chunks)
        want = _reference(chunks, bands, 2.0, 0.1, relative)
        assert len(got) == 581
        _assert_same(got, want)


def _direct_bins(state, plan):
    start = state.next_end - plan.hop - plan.n_win
    window = _blocks.gather(state.blocks, state.blocks_start, start, start + plan.n_win).astype(np.float64)
    return spectral._anchor_bins(window, plan, start)


def test_drift_over_a_long_run_stays_far_below_float32():
    """Ten minutes at 1 kHz, 18,750 sliding updates and no re-anchoring (one hour: see the op's notes)."""
    sfreq, n_samples = 1000.0, 600_000
    rng = np.random.default_rng(3)
    x = _signal(rng, 2, n_samples, sfreq, offset=5e-3)
    spec = sliding_band_power(EEG_BANDS, length_s=1.0, step_s=0.032, reanchor_every=10**9)
    chunks = chunks_from_array(x, make_info(2, sfreq), [4000] * (n_samples // 4000))
    state = spec.init(chunks[0])
    for chunk in chunks:
        state, outputs = spec.step(state, chunk)
    plan = spectral._plan(1000, 32, sfreq, spec.step.keywords["bands"], False)
    direct = _direct_bins(state, plan)
    drift = np.abs(state.bins - direct).max() / np.abs(direct).max()
    assert drift < 1e-10
    assert outputs[-1].seq == (n_samples - 1000) // 32


def test_nan_samples_poison_only_their_windows(rng):
    x = _signal(rng, 2, 2000, 250.0)
    x[1, 700] = np.nan
    chunks = chunks_from_array(x, make_info(2, 250.0), random_chunking(2000, rng, max_size=40))
    got = run_offline(sliding_band_power(EEG_BANDS, length_s=1.0, step_s=0.1, reanchor_every=10**9), chunks)
    want = _reference(chunks, EEG_BANDS, 1.0, 0.1)
    _assert_same(got, want)
    assert np.isnan(got[-1].data).sum() == 0 and any(np.isnan(g.data).any() for g in got)


def test_state_pickles_mid_stream_and_resumes_identically(rng):
    x = _signal(rng, 4, 3000, 1000.0)
    chunks = chunks_from_array(x, make_info(4, 1000.0), random_chunking(3000, rng, max_size=70))
    spec = sliding_band_power(EEG_BANDS, length_s=1.0, step_s=0.032, reanchor_every=9)
    op = BoundOp(spec)
    state = op.init(chunks[0])
    for chunk in chunks[: len(chunks) * 2 // 3]:
        state, _ = op.step(state, chunk)
    assert state.bins is not None and not state.bins.flags.writeable
    clone = pickle.loads(pickle.dumps(state))
    for chunk in chunks[len(chunks) * 2 // 3 :]:
        state, out_a = op.step(state, chunk)
        clone, out_b = op.step(clone, chunk)
        assert len(out_a) == len(out_b)
        for a, b in zip(out_a, out_b):
            np.testing.assert_array_equal(a.data, b.data)
            assert a.t0_s == b.t0_s and a.info == b.info


def test_step_batch_equals_per_stream():
    spec = sliding_band_power(EEG_BANDS, length_s=1.0, step_s=0.032, reanchor_every=4)
    op = BoundOp(spec)
    streams = []
    for i, (n_ch, sfreq, size) in enumerate([(3, 1000.0, 32), (3, 1000.0, 32), (2, 1000.0, 50), (3, 250.0, 11),
                                             (1, 1000.0, 400), (3, 1000.0, 32)]):
        rng = np.random.default_rng(i)
        x = _signal(rng, n_ch, 3200, sfreq)
        info = make_info(n_ch, sfreq, stream_id=f"s{i}")
        streams.append(chunks_from_array(x, info, [size] * (3200 // size) + [3200 % size] * bool(3200 % size)))
    streams[-1] = streams[-1][5:]  # same shape, another phase
    n_steps = min(len(s) for s in streams)
    single = [op.init(s[0]) for s in streams]
    batch = [op.init(s[0]) for s in streams]
    n_out = 0
    for k in range(n_steps):
        step_chunks = [s[k] for s in streams]
        batch, got = op.step_batch(batch, step_chunks)
        for i, chunk in enumerate(step_chunks):
            single[i], want = op.step(single[i], chunk)
            assert len(got[i]) == len(want)
            for g, w in zip(got[i], want):
                assert_allclose(g.data, w.data, rtol=1e-6)
                assert g.t0_s == w.t0_s and g.seq == w.seq and g.info == w.info
                n_out += 1
    assert n_out > 50


def test_output_description_matches_the_two_step_pipeline():
    info = make_info(2, 250.0)
    spec = sliding_band_power({"mu": (8.0, 12.0), "beta": (13.0, 30.0)}, length_s=1.0, step_s=0.25)
    out = spec.infer_info(info)
    two_step = log_band_power({"mu": (8.0, 12.0), "beta": (13.0, 30.0)}).infer_info(
        sliding_window(1.0, 0.25).infer_info(info)
    )
    assert out == two_step
    assert out.channels == ("ch0:mu", "ch0:beta", "ch1:mu", "ch1:beta") and out.sfreq == 4.0
    assert spec.sheddable and spec.kind == "sliding_band_power"
    assert dict(spec.params)["reanchor_every"] == spectral.DEFAULT_REANCHOR_EVERY


def test_channel_or_rate_change_is_rejected(rng):
    spec = sliding_band_power(EEG_BANDS, length_s=1.0, step_s=0.5)
    state = spec.init(Chunk(np.zeros((2, 10), np.float32), T0, make_info(2, 250.0)))
    with pytest.raises(StreamMismatchError, match="sliding_band_power: .* 3 channels, the op was initialised with 2"):
        spec.step(state, Chunk(np.zeros((3, 10), np.float32), T0, make_info(3, 250.0)))
    with pytest.raises(StreamMismatchError, match=r"sfreq=500.0 Hz, the op was initialised at 250.0 Hz"):
        spec.step(state, Chunk(np.zeros((2, 10), np.float32), T0, make_info(2, 500.0)))


def test_build_time_checks():
    info = make_info(1, 250.0)
    with pytest.raises(ValueError, match=r"upper edge 200.0 Hz must not exceed Nyquist \(125.0 Hz"):
        sliding_band_power({"high": (100.0, 200.0)}, length_s=1.0, step_s=0.1).infer_info(info)
    with pytest.raises(ValueError, match="contains no frequency bin of a 1.0 s window"):
        sliding_band_power({"narrow": (10.1, 10.2)}, length_s=1.0, step_s=0.1).infer_info(info)
    with pytest.raises(ValueError, match="gives a 1-sample window at sfreq=250.0; needs >= 2"):
        sliding_band_power({"a": (1.0, 2.0)}, length_s=0.004, step_s=0.004).infer_info(info)
    with pytest.raises(ValueError, match="step_s=0.001 is shorter than one sample"):
        sliding_band_power({"a": (1.0, 2.0)}, length_s=1.0, step_s=0.001).infer_info(info)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bands": {}}, "ops.sliding_band_power: bands must be a non-empty mapping"),
        ({"bands": {"a": (8.0, 4.0)}}, r"band 'a'=\(8.0, 4.0\) must satisfy 0 <= lo < hi"),
        ({"step_s": 2.0}, r"step_s=2.0 must not exceed length_s=1.0"),
        ({"length_s": -1.0}, "length_s=-1.0 must be finite and > 0"),
        ({"step_s": float("nan")}, "step_s=nan must be finite and > 0"),
        ({"relative": "yes"}, "relative='yes' must be True or False"),
        ({"reanchor_every": 0}, "reanchor_every=0 must be an integer >= 1"),
        ({"reanchor_every": 2.5}, "reanchor_every=2.5 must be an integer >= 1"),
    ],
)
def test_bad_parameters(kwargs, message):
    args = {"bands": {"alpha": (8.0, 13.0)}, "length_s": 1.0, "step_s": 0.5, **kwargs}
    with pytest.raises(PipelineDefinitionError, match=message):
        sliding_band_power(args.pop("bands"), **args)
