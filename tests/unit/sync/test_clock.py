"""ClockModel (lower-envelope clock fit), the dejitter op and LSL/XDF clock-offset fits."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest

from neuraflow.chunk import Chunk
from neuraflow.errors import PipelineDefinitionError
from neuraflow.ops import REGISTRY, run_offline
from neuraflow.sync import ClockModel, OffsetModel, dejitter, fit_offsets
from neuraflow.testing import make_info

T_START = 1_700_000_000.0


def deliveries(rng, seconds, *, true_rate, t_start=T_START, latency_s=0.004, burst_s=0.016, jitter_s=0.002,
               stall_prob=0.002, stall_s=0.3):
    """Arrival of a device's samples: bursts every ~16 ms, exponential jitter, occasional stalls.

    Returns the true host time of each sample and, per burst, (first index, n samples, receive time).
    """
    n = int(seconds * true_rate)
    t_true = t_start + np.arange(n) / true_rate
    steps = burst_s * rng.uniform(0.5, 1.5, int(seconds / burst_s * 1.2) + 10)
    steps += np.where(rng.random(steps.size) < stall_prob, stall_s, 0.0)
    sched = t_start + np.cumsum(steps)
    sched = sched[sched < t_true[-1] + 1.0]
    recv = np.maximum.accumulate(sched + latency_s + rng.exponential(jitter_s, sched.size))
    bounds = np.searchsorted(t_true, sched, side="left")
    bursts, start = [], 0
    for stop, r in zip(bounds, recv):
        if stop > start:
            bursts.append((start, int(stop - start), float(r)))
            start = int(stop)
    return t_true, bursts


def fit_errors(t_true, bursts, *, sfreq=250.0, latency_s=0.004, **kwargs):
    model = ClockModel.start(sfreq, **kwargs)
    errs = np.empty(len(bursts))
    for k, (i, n, recv) in enumerate(bursts):
        model = model.update(i + n - 1, recv - latency_s)
        errs[k] = model.time_of(i) - t_true[i]
    return model, errs


@pytest.mark.parametrize("true_rate", [250.0, 249.9, 250.05])
def test_clock_fit_tracks_offset_and_drift(rng, true_rate):
    t_true, bursts = deliveries(rng, 300.0, true_rate=true_rate)
    model, errs = fit_errors(t_true, bursts)
    last_minute = np.array([t_true[i] > t_true[-1] - 60 for i, _, _ in bursts])
    assert np.max(np.abs(errs[last_minute])) < 0.5e-3
    assert model.rate_hz == pytest.approx(true_rate, rel=2e-6)


def test_lower_envelope_beats_least_squares_on_bursty_delays(rng):
    t_true, bursts = deliveries(rng, 120.0, true_rate=249.9, jitter_s=0.01, stall_prob=0.01)
    _, errs = fit_errors(t_true, bursts)
    idx = np.array([i + n - 1 for i, n, _ in bursts], dtype=float)
    recv = np.array([r for _, _, r in bursts]) - 0.004
    b, a = np.polyfit(idx, recv - T_START, 1)
    ls_err = T_START + a + b * idx - t_true[idx.astype(int)]
    assert np.median(np.abs(ls_err)) > 5e-3  # least squares is biased by the mean delay
    assert np.max(np.abs(errs[len(errs) // 2:])) < 1e-3


def test_clock_model_is_pure_and_picklable(rng):
    t_true, bursts = deliveries(rng, 30.0, true_rate=250.0)
    model = ClockModel.start(250.0, window_s=20.0)
    for i, n, r in bursts[:500]:
        model = model.update(i + n - 1, r)
    before = pickle.dumps(model)
    i, n, r = bursts[500]
    nxt = model.update(i + n - 1, r)
    assert pickle.dumps(model) == before and nxt is not model
    clone = pickle.loads(before)
    assert clone == model and clone.update(i + n - 1, r) == nxt
    assert len(model.xs) <= model.max_blocks


def test_clock_model_edge_cases():
    model = ClockModel.start(100.0)
    assert not model.ready and math.isnan(model.time_of(0))
    assert model.update(0, math.nan) is model
    model = model.update(10, 5.0)
    assert model.time_of(10) == 5.0 and model.time_of(110) == pytest.approx(6.0)
    np.testing.assert_allclose(model.time_of(np.array([10, 20])), [5.0, 5.1])
    restarted = model.update(1000, 20.0).update(3, 100.0)  # the device restarted its counter
    assert restarted.n_obs == 1 and restarted.time_of(3) == 100.0
    with pytest.raises(PipelineDefinitionError, match="block_s"):
        ClockModel.start(100.0, window_s=1.0, block_s=1.0)
    with pytest.raises(PipelineDefinitionError, match="sfreq"):
        ClockModel.start(0.0)


def test_dejitter_op_rewrites_t0_from_receive_times(rng):
    info = make_info(2, 250.0, stream_id="dev")
    t_true, bursts = deliveries(rng, 120.0, true_rate=249.95, latency_s=0.005)
    chunks = [
        Chunk(np.zeros((2, n), np.float32), r - n / 250.0, info, seq=k, recv_s=r, meta={"sample_index": i})
        for k, (i, n, r) in enumerate(bursts)
    ]
    out = run_offline(dejitter(latency_s=0.005), chunks)
    assert len(out) == len(chunks)
    err = np.array([o.t0_s - t_true[c.meta["sample_index"]] for o, c in zip(out, chunks)])
    raw = np.array([c.t0_s - t_true[c.meta["sample_index"]] for c in chunks])
    assert np.max(np.abs(err[-len(err) // 4:])) < 0.5e-3 < np.max(np.abs(raw[-len(raw) // 4:]))
    assert out[-1].meta["clock_rate_hz"] == pytest.approx(249.95, rel=5e-6)
    assert out[-1].meta["sample_index"] == chunks[-1].meta["sample_index"]
    assert all(np.shares_memory(o.data, c.data) for o, c in zip(out, chunks))


def test_dejitter_without_receive_times_counts_samples():
    info = make_info(1, 100.0)
    # arrival-stamped t0 (always late) of 10-sample chunks, no sample_index, no recv_s
    chunks = [Chunk(np.zeros((1, 10), np.float32), 50.0 + k * 0.1 + (0.003 if k % 3 else 0.0), info)
              for k in range(300)]
    out = run_offline(dejitter(time_source="recv", min_span_s=1.0), chunks)
    np.testing.assert_allclose([o.t0_s for o in out[-100:]], [50.0 + k * 0.1 for k in range(200, 300)], atol=1e-9)


def test_dejitter_is_registered_and_validates():
    assert REGISTRY["dejitter"]().kind == "dejitter"
    with pytest.raises(PipelineDefinitionError, match="time_source"):
        dejitter(time_source="arrival")
    with pytest.raises(PipelineDefinitionError, match="latency_s"):
        dejitter(latency_s=-1.0)


# ----------------------------------------------------------------------------- offsets
def test_fit_offsets_is_robust_to_round_trip_outliers(rng):
    t = np.arange(0.0, 600.0, 5.0) + 1000.0
    true = 0.25 + 3e-5 * (t - 1000.0)
    meas = true + rng.normal(0, 20e-6, t.size)
    meas[::10] += rng.uniform(5e-3, 50e-3, meas[::10].size)  # long round trips
    robust = fit_offsets(t, meas)
    plain = fit_offsets(t, meas, robust=False)
    grid = np.linspace(1000.0, 1600.0, 50)
    true_grid = 0.25 + 3e-5 * (grid - 1000.0)
    assert np.max(np.abs(robust.offset_at(grid) - true_grid)) < 30e-6
    assert np.max(np.abs(plain.offset_at(grid) - true_grid)) > 1e-3
    assert robust.to_local(1100.0) == pytest.approx(1100.0 + 0.25 + 3e-3, abs=30e-6)
    np.testing.assert_allclose(robust.to_local(grid), grid + robust.offset_at(grid))
    assert pickle.loads(pickle.dumps(robust)) == robust


def test_fit_offsets_edge_cases():
    one = fit_offsets([5.0], [0.1])
    assert isinstance(one, OffsetModel) and one.offset_at(100.0) == 0.1 and one.n == 1
    with pytest.raises(PipelineDefinitionError):
        fit_offsets([], [])
    with pytest.raises(PipelineDefinitionError):
        fit_offsets([1.0, 2.0], [0.1])


def test_fit_offsets_matches_pyxdf_on_the_muse_recording(muse_xdf: Path):
    pyxdf = pytest.importorskip("pyxdf")
    raw, _ = pyxdf.load_xdf(str(muse_xdf), synchronize_clocks=False, dejitter_timestamps=False, verbose=False)
    synced, _ = pyxdf.load_xdf(str(muse_xdf), synchronize_clocks=True, dejitter_timestamps=False, verbose=False)
    n_checked = 0
    for r, s in zip(raw, synced):
        if len(r["clock_times"]) < 2 or len(r["time_stamps"]) == 0:
            continue
        model = fit_offsets(r["clock_times"], r["clock_values"], robust=False)  # pyxdf: OLS by default
        ours = model.to_local(np.asarray(r["time_stamps"]))
        np.testing.assert_allclose(ours, s["time_stamps"], rtol=0, atol=50e-6)
        n_checked += 1
    assert n_checked >= 4
