"""The op contract, checked for every op in ``neuraflow.ops.REGISTRY`` (river-style).

Every registered example accepts a 4-channel stream at 250 Hz in chunks of any length.
"""

from __future__ import annotations

import copy
import dataclasses
import pickle
from collections.abc import Mapping

import numpy as np
import pytest

from neuraflow import ops
from neuraflow.chunk import Chunk, StreamInfo
from neuraflow.ops import BoundOp, OpSpec
from neuraflow.testing import chunks_from_array, make_info, random_chunking

INFO = make_info(4, 250.0, stream_id="contract")
KINDS = sorted(ops.REGISTRY)


def _deep_equal(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype
            and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
        )
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        return type(a) is type(b) and all(
            _deep_equal(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a)
        )
    if isinstance(a, Mapping):
        return isinstance(b, Mapping) and a.keys() == b.keys() and all(_deep_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_deep_equal(x, y) for x, y in zip(a, b))
    return a == b


def _stream(seed: int, n_samples: int = 700, max_size: int = 97) -> list[Chunk]:
    rng = np.random.default_rng(seed)
    x = (20e-6 * rng.standard_normal((INFO.n_channels, n_samples))).astype(np.float32)
    return chunks_from_array(x, INFO, random_chunking(n_samples, rng, max_size=max_size))


def _check_output(chunk: Chunk, expected: StreamInfo) -> None:
    assert isinstance(chunk, Chunk)
    assert chunk.data.dtype == np.float32 and chunk.data.ndim == 2
    assert not chunk.data.flags.writeable
    assert chunk.channels == expected.channels
    assert chunk.info.ch_types == expected.ch_types and chunk.info.units == expected.units
    assert chunk.sfreq == pytest.approx(expected.sfreq)
    assert np.isfinite(chunk.t0_s)


@pytest.fixture(params=KINDS)
def spec(request) -> OpSpec:
    made = ops.REGISTRY[request.param]()
    assert isinstance(made, OpSpec) and made.kind == request.param
    return made


def test_registry_names_every_public_op():
    assert {"bandpass", "notch", "sliding_window", "log_band_power", "onnx_model"} <= set(ops.REGISTRY)


def test_params_are_read_only(spec):
    with pytest.raises(TypeError):
        spec.params["x"] = 1  # type: ignore[index]


def test_init_and_step_shapes_match_infer_info(spec):
    expected = spec.infer_info(INFO)
    assert isinstance(expected, StreamInfo)
    op = BoundOp(spec)
    chunks = _stream(0)
    state = op.init(chunks[0])
    n_out = 0
    for chunk in chunks:
        state, outputs = op.step(state, chunk)
        assert isinstance(outputs, list)
        for out in outputs:
            _check_output(out, expected)
            n_out += 1
    assert n_out > 0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_chunk_sizes(spec, seed):
    expected = spec.infer_info(INFO)
    for out in ops.run_offline(spec, _stream(seed, max_size=300)):
        _check_output(out, expected)


def test_one_sample_chunks(spec):
    expected = spec.infer_info(INFO)
    outputs = ops.run_offline(spec, _stream(4, n_samples=200, max_size=1))
    assert outputs
    for out in outputs:
        _check_output(out, expected)


def test_empty_chunk_is_handled(spec):
    expected = spec.infer_info(INFO)
    op = BoundOp(spec)
    empty = Chunk(np.zeros((INFO.n_channels, 0), np.float32), 1_700_000_000.0, INFO)
    state = op.init(empty)  # a stream may even start empty
    chunks = _stream(5, n_samples=150)
    for chunk in [empty, *chunks[:2], empty, *chunks[2:], empty]:
        before = copy.deepcopy(state)
        new_state, outputs = op.step(state, chunk)
        if chunk.n_samples == 0:
            assert _deep_equal(new_state, before)
            assert all(o.data.size == 0 for o in outputs) or outputs == []
        for out in outputs:
            _check_output(out, expected)
        state = new_state


def test_state_is_picklable_and_resumes_identically(spec):
    op = BoundOp(spec)
    chunks = _stream(6)
    state = op.init(chunks[0])
    half = len(chunks) // 2
    for chunk in chunks[:half]:
        state, _ = op.step(state, chunk)
    clone = pickle.loads(pickle.dumps(state))
    assert _deep_equal(clone, state)
    for chunk in chunks[half:]:
        state, out_a = op.step(state, chunk)
        clone, out_b = op.step(clone, chunk)
        assert len(out_a) == len(out_b)
        for a, b in zip(out_a, out_b):
            np.testing.assert_array_equal(a.data, b.data)
            assert a.t0_s == b.t0_s and a.info == b.info


def test_step_does_not_mutate_its_input_state_or_chunk(spec):
    op = BoundOp(spec)
    chunks = _stream(7)
    state = op.init(chunks[0])
    for chunk in chunks:
        before = copy.deepcopy(state)
        data_before = chunk.data.copy()
        new_state, _ = op.step(state, chunk)
        assert _deep_equal(state, before), "step mutated its input state"
        np.testing.assert_array_equal(chunk.data, data_before)
        state = new_state


def test_step_batch_equals_single_steps(spec):
    op = BoundOp(spec)
    streams = [_stream(10 + i, n_samples=300, max_size=60) for i in range(3)]
    streams.append([c.replace(data=c.data) for c in streams[0]])  # equal sizes: exercises stacking
    n_steps = min(len(s) for s in streams)
    single_states = [op.init(s[0]) for s in streams]
    batch_states = [op.init(s[0]) for s in streams]
    for k in range(n_steps):
        step_chunks = [s[k] for s in streams]
        want = []
        for i, chunk in enumerate(step_chunks):
            single_states[i], out = op.step(single_states[i], chunk)
            want.append(out)
        batch_states, got = op.step_batch(batch_states, step_chunks)
        assert len(got) == len(step_chunks)
        for g_list, w_list in zip(got, want):
            assert len(g_list) == len(w_list)
            for g, w in zip(g_list, w_list):
                scale = np.nanmax(np.abs(w.data), initial=0.0) if w.data.size else 0.0
                np.testing.assert_allclose(g.data, w.data, rtol=1e-5, atol=1e-6 * scale)
                assert g.t0_s == w.t0_s and g.info == w.info


def test_infer_info_keeps_stream_identity(spec):
    out = spec.infer_info(INFO)
    assert out.stream_id == INFO.stream_id  # the plan derives the output id itself


# --- run-time data problems and output metadata (processing issue) ---------------------
#
# NaN policy: a chunk holding a NaN burst may raise only a ValueError (NeuraflowError
# family included) naming the problem, never another exception; otherwise the op must
# recover: once its window/state no longer holds the burst, every output value that the
# same stream without the burst gives as a finite number is finite again (IIR filters
# restart a poisoned channel from rest and count it in meta). Values that are undefined
# without any burst (a band with no bin in a short window, a wavelet longer than the
# window) stay NaN: that is the op's documented answer, not a failure to recover.


def _run_collecting(op: BoundOp, chunks: list[Chunk], t_from: float) -> list[Chunk] | None:
    """Outputs starting at or after ``t_from``; None if the op raised a ValueError-family error."""
    state = op.init(chunks[0])
    late: list[Chunk] = []
    for chunk in chunks:
        try:
            state, outputs = op.step(state, chunk)
        except ValueError:
            return None
        late.extend(o for o in outputs if o.t0_s >= t_from)
    return late


def test_nan_burst_raises_a_named_error_or_recovers(spec):
    clean = _stream(20, n_samples=3000, max_size=300)  # chunks long enough for per-chunk features (wavelets)
    chunks = list(clean)
    burst = chunks[2].data.copy()
    burst[1, :] = np.nan
    chunks[2] = chunks[2].replace(data=burst)
    t_clean = chunks[2].t_end_s + 1.5  # longer than every example's window
    late = _run_collecting(BoundOp(spec), chunks, t_clean)
    if late is None:
        return  # a named (ValueError-family) error is an accepted policy
    reference = _run_collecting(BoundOp(spec), clean, t_clean)
    assert late, "no output after the burst"
    assert reference is not None and len(reference) == len(late)
    n_defined = 0
    for out, ref in zip(late, reference):
        defined = np.isfinite(ref.data)
        n_defined += int(defined.sum())
        assert np.isfinite(out.data[defined]).all(), f"{spec.kind}: outputs stay non-finite long after a NaN burst"
    assert n_defined or all(r.data.size == 0 for r in reference), f"{spec.kind}: the example defines no output"


@pytest.mark.parametrize("change", ["sfreq", "n_channels"])
def test_stream_change_mid_stream_raises_a_named_error(spec, change):
    op = BoundOp(spec)
    chunks = _stream(21, n_samples=300, max_size=60)
    state = op.init(chunks[0])
    for chunk in chunks[:3]:
        state, _ = op.step(state, chunk)
    if change == "sfreq":
        info = make_info(INFO.n_channels, 2 * INFO.sfreq, stream_id=INFO.stream_id)
    else:
        info = make_info(INFO.n_channels + 1, INFO.sfreq, stream_id=INFO.stream_id)
    data = np.zeros((info.n_channels, 40), np.float32)
    bad = Chunk(data, chunks[3].t0_s, info, seq=3)
    with pytest.raises(ValueError):
        op.step(state, bad)


def test_output_metadata_is_consistent(spec):
    out = spec.infer_info(INFO)
    assert out.sfreq > 0 and np.isfinite(out.sfreq)
    assert len(set(out.channels)) == len(out.channels) == out.n_channels
    assert len(out.units) == len(out.ch_types) == out.n_channels
    for chunk in ops.run_offline(spec, _stream(22)):
        assert chunk.info.sfreq > 0 and len(chunk.info.units) == chunk.n_channels
