"""Streaming polyphase resampling == ``resample_poly`` on the samples emitted so far, for any chunking."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import signal

from neuraflow.chunk import Chunk
from neuraflow.errors import PipelineDefinitionError, StreamMismatchError
from neuraflow.ops import resample, run_offline
from neuraflow.testing import assert_resumes_after_pickle, chunks_from_array, make_info, random_chunking, run_batched

SFREQ = 250.0
T0 = 1_700_000_000.0


def _signal(rng, n_channels=3, n_samples=1500, scale=50e-6):
    t = np.arange(n_samples) / SFREQ
    x = scale * rng.standard_normal((n_channels, n_samples)) + scale * np.sin(2 * np.pi * 10.0 * t) + 5 * scale
    return x.astype(np.float32).astype(np.float64)


def _concat(chunks, n_channels=3):
    return np.concatenate([np.zeros((n_channels, 0), np.float32), *[c.data for c in chunks]], axis=1)


def _n_pre_remove(up, down):
    half_len = 10 * max(up, down)
    return (half_len + down - half_len % down) // down


def _expected(x, up, down):
    """``resample_poly`` truncated to what a causal stream can have emitted after all of ``x``."""
    if up == down:
        return x
    n_emit = max(0, math.ceil(x.shape[1] * up / down) - _n_pre_remove(up, down))
    return signal.resample_poly(x, up, down, axis=1)[:, :n_emit]


def _close(got, expected):
    assert got.shape == expected.shape
    assert_allclose(got, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())


RATIOS = [(1, 2), (2, 1), (2, 3), (3, 2), (16, 25), (25, 16), (1, 4), (1, 1)]


@pytest.mark.parametrize(("up", "down"), RATIOS)
@pytest.mark.parametrize(("seed", "max_size"), [(0, 1), (1, 7), (2, 120), (3, 2000)])
def test_streaming_equals_resample_poly(up, down, seed, max_size):
    rng = np.random.default_rng(seed)
    x = _signal(rng)
    info = make_info(3, SFREQ)
    spec = resample(up, down)
    out = run_offline(spec, chunks_from_array(x, info, random_chunking(x.shape[1], rng, max_size=max_size), t0_s=T0))
    _close(_concat(out), _expected(x, up, down))
    sfreq_out = SFREQ * up / down
    assert all(c.info == spec.infer_info(info) and c.sfreq == sfreq_out for c in out)
    # t0 of every output chunk is the time of its first sample, j / sfreq_out after the stream's start
    first_index = np.cumsum([0] + [c.n_samples for c in out])[:-1]
    assert_allclose([c.t0_s - T0 for c in out], first_index / sfreq_out, atol=1e-6)
    assert all(c.n_samples > 0 for c in out)


def test_equals_upfirdn_with_resample_polys_filter(rng):
    """What is matched, spelled out: upfirdn with resample_poly's padded filter, minus the centring delay."""
    up, down = 2, 3
    x = _signal(rng)
    half_len = 10 * max(up, down)
    n_pre_pad = down - half_len % down
    h = np.concatenate([np.zeros(n_pre_pad), signal.firwin(2 * half_len + 1, 1 / max(up, down), window=("kaiser", 5.0)) * up])
    n_pre_remove = (half_len + n_pre_pad) // down
    n_emit = math.ceil(x.shape[1] * up / down) - n_pre_remove
    chunks = chunks_from_array(x, make_info(3, SFREQ), random_chunking(x.shape[1], rng))
    expected = signal.upfirdn(h, x, up, down, axis=1)[:, n_pre_remove : n_pre_remove + n_emit]
    _close(_concat(run_offline(resample(up, down), chunks)), expected)


def test_sfreq_out_uses_a_rational_approximation():
    spec = resample(sfreq_out=160.0)
    state = spec.init(Chunk(np.zeros((2, 1), np.float32), 0.0, make_info(2, SFREQ)))
    assert (state.design.up, state.design.down) == (16, 25)
    assert spec.infer_info(make_info(2, SFREQ)).sfreq == 160.0
    assert resample(4, 6).params["up"] == 2 and resample(4, 6).params["down"] == 3
    with pytest.raises(ValueError, match=r"sfreq_out=314.159.* not reachable from sfreq=250.0 Hz .* max_denominator=10"):
        resample(sfreq_out=314.159, max_denominator=10).infer_info(make_info(2, SFREQ))


def test_a_sine_keeps_its_amplitude_and_phase():
    t = np.arange(5000) / SFREQ
    x = np.sin(2 * np.pi * 7.0 * t)[None, :]
    out = run_offline(resample(sfreq_out=100.0), chunks_from_array(x, make_info(1, SFREQ), [250] * 20, t0_s=0.0))
    times = np.concatenate([c.times_s for c in out])
    y = _concat(out, 1)[0]
    mid = slice(100, -100)
    assert_allclose(y[mid], np.sin(2 * np.pi * 7.0 * times[mid]), atol=2e-3)


@pytest.mark.parametrize(("up", "down"), [(2, 3), (1, 1)])
def test_step_batch_equals_individual_steps(up, down, batch_streams):
    spec = resample(up, down)
    for streams in batch_streams(SFREQ):
        for got, want, s in zip(run_batched(spec, streams), [run_offline(spec, s) for s in streams], streams):
            assert [(g.t0_s, g.seq, g.n_samples) for g in got] == [(w.t0_s, w.seq, w.n_samples) for w in want]
            _close(_concat(got, s[0].n_channels), _concat(want, s[0].n_channels))


def test_state_pickles_mid_stream_and_continues_identically(rng):
    x = _signal(rng, n_samples=1200)
    chunks = chunks_from_array(x, make_info(3, SFREQ), random_chunking(1200, rng))
    assert_resumes_after_pickle(resample(sfreq_out=100.0), chunks)


def test_channel_change_mid_stream_is_rejected(rng):
    spec = resample(1, 2)
    state = spec.init(Chunk(rng.standard_normal((2, 10)), 0.0, make_info(2, SFREQ)))
    with pytest.raises(StreamMismatchError, match="3 channels"):
        spec.step(state, Chunk(rng.standard_normal((3, 10)), 0.0, make_info(3, SFREQ)))


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: resample(), "give up and down"),
        (lambda: resample(2), "give up and down"),
        (lambda: resample(2, 3, sfreq_out=100.0), "not both"),
        (lambda: resample(0, 3), "up=0 must be an integer >= 1"),
        (lambda: resample(2, 1.5), "down=1.5 must be an integer >= 1"),
        (lambda: resample(sfreq_out=-5.0), "sfreq_out=-5.0 must be finite and > 0"),
        (lambda: resample(1, 2, window="kaisr"), "window='kaisr' is not a scipy window"),
    ],
)
def test_bad_params_raise_pipeline_definition_error(factory, message):
    with pytest.raises(PipelineDefinitionError, match=message):
        factory()


def test_real_recording_streaming_equals_resample_poly(eegmmidb_6ch_10s, rng):
    x, info = eegmmidb_6ch_10s  # 160 Hz
    for sfreq_out, (up, down) in ((250.0, (25, 16)), (100.0, (5, 8))):
        chunks = chunks_from_array(x, info, random_chunking(x.shape[1], rng, max_size=64))
        got = _concat(run_offline(resample(sfreq_out=sfreq_out), chunks), x.shape[0])
        _close(got, _expected(x, up, down))
