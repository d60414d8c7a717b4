"""Streaming filters equal one offline ``sosfilt`` call, whatever the chunking."""

from __future__ import annotations


import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import signal

from neuraflow.chunk import Chunk
from neuraflow.errors import PipelineDefinitionError, StreamMismatchError
from neuraflow.ops import bandpass, notch, run_offline
from neuraflow.ops import filters
from neuraflow.ops.filters import SosState
from neuraflow.testing import assert_resumes_after_pickle, chunks_from_array, make_info, random_chunking, run_batched

SFREQ = 250.0


def _sos(spec, sfreq=SFREQ):
    first = Chunk(np.zeros((1, 1), np.float32), 0.0, make_info(1, sfreq))
    return np.array(spec.init(first).sos)


def _signal(rng, n_channels=3, n_samples=2000, scale=50e-6):
    t = np.arange(n_samples) / SFREQ
    x = scale * rng.standard_normal((n_channels, n_samples))
    x += scale * np.sin(2 * np.pi * 50.0 * t) + 10 * scale  # line noise + DC offset
    return x.astype(np.float32).astype(np.float64)  # what the float32 chunks carry


def _concat(chunks):
    return np.concatenate([c.data for c in chunks], axis=1)


SPECS = {
    "bandpass": lambda: bandpass(1.0, 40.0, order=4),
    "highpass": lambda: bandpass(0.5, None),
    "lowpass": lambda: bandpass(None, 30.0, order=2),
    "notch": lambda: notch((50.0, 100.0), quality=25.0),
}


@pytest.mark.parametrize("name", sorted(SPECS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_streaming_equals_offline_sosfilt(name, seed):
    rng = np.random.default_rng(seed)
    x = _signal(rng)
    spec = SPECS[name]()
    chunks = chunks_from_array(x, make_info(3, SFREQ), random_chunking(x.shape[1], rng, max_size=150))
    out = run_offline(spec, chunks)
    assert [c.n_samples for c in out] == [c.n_samples for c in chunks]
    assert all(c.data.dtype == np.float32 for c in out)
    assert [c.t0_s for c in out] == [c.t0_s for c in chunks]
    expected = signal.sosfilt(_sos(spec), x)
    assert_allclose(_concat(out), expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())


def test_notch_removes_line_noise():
    t = np.arange(5000) / SFREQ
    x = np.vstack([np.sin(2 * np.pi * 50.0 * t), np.sin(2 * np.pi * 10.0 * t)])
    chunks = chunks_from_array(x, make_info(2, SFREQ), [1000] * 5)
    y = _concat(run_offline(notch(50.0), chunks))[:, 2500:]  # after the transient
    assert np.abs(y[0]).max() < 0.02
    assert np.abs(y[1]).max() == pytest.approx(1.0, abs=0.05)


def test_notch_sos_has_one_section_per_frequency():
    sos = _sos(notch((50.0, 60.0, 100.0)))
    assert sos.shape == (3, 6)
    b, a = signal.iirnotch(60.0, 30.0, fs=SFREQ)
    assert_allclose(sos[1], np.concatenate([b, a]) / a[0])


@pytest.mark.parametrize("name", ["bandpass", "notch"])
def test_step_batch_equals_individual_steps(name, batch_streams):
    spec = SPECS[name]()
    # equal chunk lengths (one stacked sosfilt), then mixed lengths and an empty chunk (fallback)
    for streams in batch_streams(SFREQ, np.float32):
        for got, want in zip(run_batched(spec, streams), [run_offline(spec, s) for s in streams]):
            assert len(got) == len(want)
            for g, w in zip(got, want):
                assert g.info is w.info and g.seq == w.seq
                assert_allclose(g.data, w.data, rtol=1e-6, atol=1e-7)


def test_step_batch_shares_one_sosfilt_call(monkeypatch, rng):
    spec = bandpass(1.0, 40.0)
    chunks = [Chunk(rng.standard_normal((2, 50)), 0.0, make_info(2, SFREQ, stream_id=f"s{i}")) for i in range(8)]
    states = [spec.init(c) for c in chunks]
    calls = []
    original = filters._sosfilt
    monkeypatch.setattr(filters, "_sosfilt", lambda *a, **k: calls.append(a[1].shape) or original(*a, **k))
    spec.step_batch(states, chunks)
    assert calls == [(16, 50)]


@pytest.mark.parametrize("kernel", [True, False])
def test_sosfilt_wrapper_equals_scipy(monkeypatch, rng, kernel):
    """The direct call of scipy's kernel (or the public fallback) gives sosfilt's exact output and state."""
    if not kernel:
        monkeypatch.setattr(filters, "_sosfilt_kernel", None)
    sos = filters._design_bandpass(1.0, 40.0, 4, SFREQ)
    x = rng.standard_normal((6, 77)).astype(np.float32)
    zi = rng.standard_normal((sos.shape[0], 6, 2))
    zi.flags.writeable = False
    y, zf = filters._sosfilt(sos, x, zi)
    y_ref, zf_ref = signal.sosfilt(np.array(sos), x.astype(np.float64), zi=zi)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(zf, zf_ref)
    assert zf.shape == zi.shape and y.dtype == np.float64


def test_state_pickles_mid_stream_and_continues_identically(rng):
    x = _signal(rng, n_samples=1200)
    chunks = chunks_from_array(x, make_info(3, SFREQ), random_chunking(1200, rng))
    for spec in (bandpass(2.0, 30.0), notch(50.0)):
        assert isinstance(assert_resumes_after_pickle(spec, chunks), SosState)


def test_step_is_pure(rng):
    spec = bandpass(1.0, 40.0)
    chunk = Chunk(rng.standard_normal((2, 100)), 0.0, make_info(2, SFREQ))
    state = spec.init(chunk)
    state, _ = spec.step(state, chunk)
    zi_before = state.zi.copy()
    new_state, _ = spec.step(state, chunk)
    np.testing.assert_array_equal(state.zi, zi_before)
    assert new_state is not state
    assert not state.zi.flags.writeable and not state.sos.flags.writeable


def test_empty_chunk_passes_through(rng):
    spec = notch(50.0)
    first = Chunk(rng.standard_normal((2, 10)), 0.0, make_info(2, SFREQ))
    state, _ = spec.step(spec.init(first), first)
    empty = Chunk(np.zeros((2, 0), np.float32), 1.0, make_info(2, SFREQ))
    new_state, out = spec.step(state, empty)
    assert new_state is state
    assert len(out) == 1 and out[0].n_samples == 0


def test_channel_change_mid_stream_is_rejected(rng):
    spec = bandpass(1.0, 40.0)
    state = spec.init(Chunk(rng.standard_normal((2, 10)), 0.0, make_info(2, SFREQ)))
    with pytest.raises(StreamMismatchError, match="3 channels"):
        spec.step(state, Chunk(rng.standard_normal((3, 10)), 0.0, make_info(3, SFREQ)))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (lambda: bandpass(1.0, 140.0), r"h_freq=140.0 must be below Nyquist \(125.0 Hz at sfreq=250.0\)"),
        (lambda: bandpass(130.0, None), r"l_freq=130.0 must be below Nyquist \(125.0 Hz at sfreq=250.0\)"),
        (lambda: notch((50.0, 150.0)), r"freqs=150.0 must be below Nyquist \(125.0 Hz at sfreq=250.0\)"),
    ],
)
def test_nyquist_is_checked_at_build_time(spec, message):
    op = spec()
    with pytest.raises(ValueError, match=message):
        op.infer_info(make_info(2, SFREQ))
    assert op.infer_info(make_info(2, 1000.0)).sfreq == 1000.0


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: bandpass(40.0, 1.0), "ops.bandpass: l_freq=40.0 must be below h_freq=1.0"),
        (lambda: bandpass(-1.0, 40.0), "ops.bandpass: l_freq=-1.0 must be finite and > 0"),
        (lambda: bandpass("a", 40.0), "ops.bandpass: l_freq='a' must be a number"),
        (lambda: bandpass(None, None), "cannot both be None"),
        (lambda: bandpass(1.0, 40.0, order=0), "ops.bandpass: order=0 must be an integer >= 1"),
        (lambda: bandpass(1.0, 40.0, order=2.5), "order=2.5"),
        (lambda: notch(()), "ops.notch: freqs must contain"),
        (lambda: notch((50.0, 50.0)), "duplicates"),
        (lambda: notch(50.0, quality=0.0), "ops.notch: quality=0.0"),
        (lambda: notch((float("nan"),)), "ops.notch: freqs=nan"),
    ],
)
def test_bad_params_raise_pipeline_definition_error(factory, message):
    with pytest.raises(PipelineDefinitionError, match=message.replace("(", r"\(")):
        factory()


def test_real_recording_streaming_equals_offline(eegmmidb_6ch_10s, rng):
    x, info = eegmmidb_6ch_10s
    sfreq = info.sfreq
    for spec in (bandpass(8.0, 30.0), notch(60.0)):
        chunks = chunks_from_array(x, info, random_chunking(x.shape[1], rng, max_size=64))
        got = _concat(run_offline(spec, chunks))
        expected = signal.sosfilt(_sos(spec, sfreq), x)
        assert_allclose(got, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())


# ----------------------------------------------------------------------------- cascades


def test_cascade_streams_equal_the_offline_chain_in_float64() -> None:
    """notch -> band-pass -> DC block as one cascade: the offline float64 chain of the three designs."""
    from neuraflow.ops import dc_block, sos_cascade

    rng = np.random.default_rng(7)
    x = _signal(rng, n_samples=3000)
    stages = (notch(50.0), bandpass(1.0, 40.0, order=4), dc_block(0.5))
    spec = sos_cascade(*stages)
    assert spec.kind == "sos_cascade"
    assert [s["kind"] for s in spec.params["stages"]] == ["notch", "bandpass", "dc_block"]
    chunks = chunks_from_array(x, make_info(3, SFREQ), random_chunking(x.shape[1], rng, max_size=150))
    out = _concat(run_batched(spec, [chunks, chunks])[0])
    expected = x
    for stage in stages:
        expected = signal.sosfilt(_sos(stage), expected)
    assert_allclose(out, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())
    # the same as the steps one after the other, up to their float32 rounding in between
    chained = chunks
    for stage in stages:
        chained = run_offline(stage, chained)
    assert_allclose(out, _concat(chained), rtol=1e-4, atol=1e-5 * np.abs(expected).max())
    # a cascade of a cascade is flattened
    assert len(sos_cascade(sos_cascade(*stages[:2]), stages[2]).params["stages"]) == 3
    assert_resumes_after_pickle(spec, chunks)


def test_cascade_refuses_other_ops_and_single_stages() -> None:
    from neuraflow.ops import sliding_window, sos_cascade

    with pytest.raises(PipelineDefinitionError, match="kind 'sliding_window' is not a second-order-section"):
        sos_cascade(notch(50.0), sliding_window(1.0, 0.5))
    with pytest.raises(PipelineDefinitionError, match="at least two filters, got 1"):
        sos_cascade(notch(50.0))
    with pytest.raises(ValueError, match="below Nyquist"):
        sos_cascade(notch(50.0), bandpass(1.0, 40.0)).infer_info(make_info(2, 60.0))
