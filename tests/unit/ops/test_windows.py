"""Sliding windows are independent of chunk boundaries."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from neuraflow.chunk import Chunk
from neuraflow.errors import PipelineDefinitionError, StreamMismatchError
from neuraflow.ops import run_offline, sliding_window
from neuraflow.testing import chunks_from_array, make_info, random_chunking

T0 = 1_700_000_000.0


def _expected(x, n_win, hop):
    starts = range(0, x.shape[1] - n_win + 1, hop)
    return [x[:, s : s + n_win] for s in starts], list(starts)


@pytest.mark.parametrize(
    ("length_s", "step_s", "sfreq"),
    [(1.0, 0.25, 250.0), (0.5, 0.5, 100.0), (0.1, 0.3, 100.0), (0.02, 0.01, 100.0), (2.0, 0.004, 250.0)],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_windows_match_direct_slicing(length_s, step_s, sfreq, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((3, 1500)).astype(np.float32)
    info = make_info(3, sfreq)
    chunks = chunks_from_array(x, info, random_chunking(x.shape[1], rng, max_size=400), t0_s=T0)
    out = run_offline(sliding_window(length_s, step_s), chunks)
    n_win, hop = round(length_s * sfreq), round(step_s * sfreq)
    windows, starts = _expected(x, n_win, hop)
    assert len(out) == len(windows)
    for k, (chunk, want, start) in enumerate(zip(out, windows, starts)):
        np.testing.assert_array_equal(chunk.data, want)
        assert chunk.t0_s == pytest.approx(T0 + start / sfreq, abs=1e-6)  # epoch-scale float64
        assert chunk.seq == k
        assert chunk.sfreq == sfreq
        assert dict(chunk.meta) == {"window_s": length_s, "hop_s": step_s}
        assert chunk.info.meta["hop_s"] == step_s and chunk.info.meta["window_s"] == length_s


def test_one_chunk_can_emit_zero_one_or_many_windows():
    info = make_info(1, 10.0)
    spec = sliding_window(1.0, 0.2)  # 10 samples, hop 2
    x = np.arange(40, dtype=np.float32)[None, :]
    chunks = chunks_from_array(x, info, [9, 1, 1, 1, 20, 8])
    state = spec.init(chunks[0])
    counts = []
    for c in chunks:
        state, out = spec.step(state, c)
        counts.append(len(out))
    assert counts == [0, 1, 0, 1, 10, 4]


def test_state_pickles_and_continues(rng):
    x = rng.standard_normal((2, 900)).astype(np.float32)
    chunks = chunks_from_array(x, make_info(2, 250.0), random_chunking(900, rng))
    spec = sliding_window(0.4, 0.1)
    state = spec.init(chunks[0])
    for c in chunks[:5]:
        state, _ = spec.step(state, c)
    clone = pickle.loads(pickle.dumps(state))
    for c in chunks[5:]:
        state, a = spec.step(state, c)
        clone, b = spec.step(clone, c)
        assert [w.t0_s for w in a] == [w.t0_s for w in b]
        for wa, wb in zip(a, b):
            np.testing.assert_array_equal(wa.data, wb.data)


def test_step_does_not_mutate_state(rng):
    spec = sliding_window(0.1, 0.05)
    chunk = Chunk(rng.standard_normal((2, 30)), T0, make_info(2, 100.0))
    state, _ = spec.step(spec.init(chunk), chunk)
    before = (state.buffer.copy(), state.n_seen, state.next_end)
    spec.step(state, chunk)
    np.testing.assert_array_equal(state.buffer, before[0])
    assert (state.n_seen, state.next_end) == before[1:]


def test_empty_chunk_emits_nothing(rng):
    spec = sliding_window(0.1, 0.05)
    info = make_info(2, 100.0)
    state = spec.init(Chunk(np.zeros((2, 0), np.float32), T0, info))
    new_state, out = spec.step(state, Chunk(np.zeros((2, 0), np.float32), T0, info))
    assert out == [] and new_state is state


def test_channel_change_is_rejected(rng):
    spec = sliding_window(0.1, 0.05)
    state = spec.init(Chunk(np.zeros((2, 5), np.float32), T0, make_info(2, 100.0)))
    with pytest.raises(StreamMismatchError):
        spec.step(state, Chunk(np.zeros((3, 5), np.float32), T0, make_info(3, 100.0)))


def test_infer_info_updates_meta_and_keeps_sfreq():
    out = sliding_window(1.0, 0.25).infer_info(make_info(4, 250.0))
    assert out.sfreq == 250.0 and out.channels == make_info(4, 250.0).channels
    assert out.meta["window_s"] == 1.0 and out.meta["hop_s"] == 0.25


@pytest.mark.parametrize(
    ("length_s", "step_s", "message"),
    [(0.001, 0.1, r"length_s=0.001 is shorter than one sample at sfreq=250.0"), (1.0, 0.001, "step_s=0.001")],
)
def test_less_than_one_sample_is_a_build_error(length_s, step_s, message):
    with pytest.raises(ValueError, match=message):
        sliding_window(length_s, step_s).infer_info(make_info(1, 250.0))


@pytest.mark.parametrize(
    ("args", "message"),
    [((0.0, 0.1), "ops.sliding_window: length_s=0.0 must be finite and > 0"), ((1.0, -1), "step_s=-1"),
     (("x", 0.1), "length_s='x' must be a number")],
)
def test_bad_params(args, message):
    with pytest.raises(PipelineDefinitionError, match=message):
        sliding_window(*args)
