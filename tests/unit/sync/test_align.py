"""Aligning streams of different rates onto one grid: reference checks, the 10-minute two-device
simulation (fitted clocks -> alignment error < 1 ms) and the real Muse XDF (EEG 256, PPG 64, ACC/GYRO 52 Hz)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from neuraflow.chunk import Chunk, StreamInfo
from neuraflow.devices import xdf_devices
from neuraflow.errors import EndOfStream, PipelineDefinitionError
from neuraflow.ops import BoundOp, run_offline
from neuraflow.sync import Aligner, align, align_chunks, dejitter
from neuraflow.testing import chunks_from_array, make_info, random_chunking

T0 = 1_700_000_000.0


def _stream(rng, sid, sfreq, seconds, *, n_ch=2, t0=T0, max_size=40):
    info = make_info(n_ch, sfreq, stream_id=sid).replace(channels=tuple(f"{sid}{k}" for k in range(n_ch)))
    n = int(seconds * sfreq)
    x = rng.standard_normal((n_ch, n)).astype(np.float32)
    return chunks_from_array(x, info, random_chunking(n, rng, max_size=max_size), t0_s=t0), x


def _times(chunks):
    return np.concatenate([c.times_s for c in chunks])


def test_linear_grid_equals_np_interp(rng):
    a, xa = _stream(rng, "a", 250.0, 4.0, t0=T0 + 0.0137)
    b, xb = _stream(rng, "b", 52.0, 4.0, t0=T0 + 0.031, n_ch=3)
    out = align_chunks([a, b], 100.0)
    assert out.channels == ("a0", "a1", "b0", "b1", "b2") and out.sfreq == 100.0
    k0 = out.meta["grid_index"]
    grid = (k0 + np.arange(out.n_samples)) / 100.0
    assert out.t0_s == k0 / 100.0 and grid[0] >= T0 + 0.031 and grid[0] - 0.01 < T0 + 0.031
    assert np.all(np.diff(grid) > 0)
    ta, tb = _times(a), _times(b)
    for rows, t, x in ((slice(0, 2), ta, xa), (slice(2, 5), tb, xb)):
        inside = (grid >= t[0]) & (grid <= t[-1])
        ref = np.stack([np.interp(grid[inside], t, ch.astype(np.float64)) for ch in x]).astype(np.float32)
        np.testing.assert_allclose(out.data[rows][:, inside], ref, rtol=1e-6, atol=1e-7)
        assert np.isnan(out.data[rows][:, ~inside]).all()
    assert np.isfinite(out.data[:, grid <= min(ta[-1], tb[-1])]).all()


def test_output_is_independent_of_chunking_and_delivery(rng):
    a, _ = _stream(rng, "a", 250.0, 3.0)
    b, _ = _stream(rng, "b", 64.0, 3.0, t0=T0 + 0.005)
    whole = align_chunks([a, b], 128.0, method="linear")
    al = Aligner([a[0].info, b[0].info], 128.0)
    outs, ia, ib = [], 0, 0
    while ia < len(a) or ib < len(b):  # b lags behind a by a few chunks: bursty, interleaved delivery
        batch = a[ia:ia + 3]
        ia += 3
        if ia > 10 or ia >= len(a):
            batch += b[ib:ib + 2]
            ib += 2
        outs += al.push(*batch)
    outs += al.flush()
    assert [o.seq for o in outs] == list(range(len(outs)))
    for prev, nxt in zip(outs, outs[1:]):  # contiguous grid
        assert nxt.meta["grid_index"] == prev.meta["grid_index"] + prev.n_samples
    np.testing.assert_array_equal(np.concatenate([o.data for o in outs], axis=1), whole.data)
    assert outs[0].t0_s == whole.t0_s and al.state.n_late == 0


@pytest.mark.parametrize("method", ["nearest", "hold"])
def test_nearest_and_hold(method):
    info = make_info(1, 10.0, stream_id="slow")
    x = np.arange(20, dtype=np.float32)[None]
    out = align_chunks([chunks_from_array(x, info, [5, 7, 8], t0_s=100.0)], 30.0, method=method)  # no ties
    grid = (out.meta["grid_index"] + np.arange(out.n_samples)) / 30.0
    src = _times(chunks_from_array(x, info, [5, 7, 8], t0_s=100.0))
    if method == "hold":
        expect = np.searchsorted(src, grid, side="right") - 1
        assert grid[-1] < 100.0 + 2.0  # held up to the end of the last sample's period
    else:
        expect = np.abs(grid[:, None] - src[None]).argmin(axis=1)
        assert grid[-1] <= src[-1]
    np.testing.assert_array_equal(out.data[0], expect.astype(np.float32))


def test_gap_gives_nan_and_stalled_stream_stops_blocking(rng):
    fast = make_info(1, 100.0, stream_id="fast")
    slow = make_info(1, 100.0, stream_id="slow").replace(channels=("s",))
    al = Aligner([fast, slow], 100.0, max_wait_s=1.5)
    ones = np.ones((1, 100), np.float32)
    assert al.push(Chunk(ones, T0, fast)) == []  # waits for 'slow' to start
    out = al.push(Chunk(ones, T0, slow), Chunk(ones, T0 + 1.0, fast))
    assert sum(o.n_samples for o in out) == 100  # up to slow's last sample
    out = al.push(Chunk(ones, T0 + 2.0, fast))  # slow stalls: fast runs 2 s > max_wait_s ahead
    got = np.concatenate([o.data for o in out], axis=1)
    assert got.shape[1] == 200 and np.isnan(got[1]).all() and np.isfinite(got[0]).all()
    out = al.push(Chunk(ones, T0 + 1.0, slow))  # the stalled stream's past is late now
    assert al.state.n_late == 100
    # a gap of 3 sample periods inside a stream is not bridged
    g = align_chunks([[Chunk(ones[:, :10], T0, fast), Chunk(ones[:, :10], T0 + 0.12, fast)]], 100.0)
    assert np.isnan(g.data[0]).sum() == 2 and np.isfinite(g.data[0, :10]).all()


def test_align_spec_is_pure_and_validates(rng):
    a, _ = _stream(rng, "a", 250.0, 1.0)
    b, _ = _stream(rng, "b", 50.0, 1.0)
    spec = align(100.0, streams=["b", "a"], prefix=True)
    state = spec.init([a[0].info, b[0].info])
    assert state.info.channels == ("b:b0", "b:b1", "a:a0", "a:a1")
    state, _ = spec.step(state, a[:5] + b[:2])
    frozen = pickle.dumps(state)
    s2, out = spec.step(state, a[5:] + b[2:])
    assert pickle.dumps(state) == frozen
    s3, out3 = spec.step(pickle.loads(frozen), a[5:] + b[2:])
    assert [o.data.tobytes() for o in out] == [o.data.tobytes() for o in out3]
    with pytest.raises(PipelineDefinitionError, match="method"):
        align(100.0, method="cubic")
    with pytest.raises(PipelineDefinitionError, match="not among"):
        align(100.0, streams=["x"]).init([a[0].info])
    with pytest.raises(PipelineDefinitionError, match="unique"):
        align(100.0, prefix=False).init([make_info(1, 10.0, stream_id="p"), make_info(1, 10.0, stream_id="q")])


# ----------------------------------------------------------------------------- 10 minutes, two devices
def _deliveries(rng, seconds, true_rate, t_start, latency_s):
    """Bursts every ~16 ms, exponential jitter (2 ms), stalls of 300 ms; in-order delivery."""
    n = int(seconds * true_rate)
    t_true = t_start + np.arange(n) / true_rate
    steps = 0.016 * rng.uniform(0.5, 1.5, int(seconds / 0.016 * 1.2) + 10)
    steps += np.where(rng.random(steps.size) < 0.002, 0.3, 0.0)
    sched = t_start + np.cumsum(steps)
    sched = sched[sched < t_true[-1] + 1.0]
    recv = np.maximum.accumulate(sched + latency_s + rng.exponential(0.002, sched.size))
    bounds = np.searchsorted(t_true, sched, side="left")
    bursts, start = [], 0
    for stop, r in zip(bounds, recv):
        if stop > start:
            bursts.append((start, int(stop), float(r)))
            start = int(stop)
    return t_true, bursts


def test_two_devices_ten_minutes_align_within_1ms(rng):
    """Device B starts 37 ms after A, runs at 249.9 Hz for a nominal 250 Hz, different known latencies.

    Each sample carries (sin, cos) of 2*pi*(true time), so the aligned output tells the time each
    stream's value belongs to; the alignment error is that minus the grid time.
    """
    seconds, t_ref = 600.0, T0
    devices = {"A": (250.0 * (1 + 20e-6), 0.0, 0.003), "B": (249.9, 0.037, 0.008)}  # true rate, offset, latency
    arrivals = []
    for sid, (rate, offset, latency) in devices.items():
        info = StreamInfo(sid, 250.0, (f"{sid}_sin", f"{sid}_cos"))
        t_true, bursts = _deliveries(rng, seconds, rate, t_ref + offset, latency)
        op = BoundOp(dejitter(latency_s=latency))
        state = None
        for i, stop, recv in bursts:
            phase = 2 * np.pi * (t_true[i:stop] - t_ref)
            n = stop - i
            raw = Chunk(np.stack([np.sin(phase), np.cos(phase)]), recv - n / 250.0, info, recv_s=recv,
                        meta={"sample_index": i})  # arrival-stamped t0, as a naive driver would
            state = op.init(raw) if state is None else state
            state, (chunk,) = op.step(state, raw)
            arrivals.append((recv, sid, chunk))
    arrivals.sort(key=lambda a: a[0])
    al = Aligner([StreamInfo(s, 250.0, (f"{s}_sin", f"{s}_cos")) for s in devices], 500.0, max_wait_s=1.0)
    outs, tick = [], []
    for recv, _, chunk in arrivals:  # 50 ms processing ticks
        tick.append(chunk)
        if len(tick) >= 6:
            outs += al.push(*tick)
            tick = []
    outs += al.push(*tick) + al.flush()
    data = np.concatenate([o.data for o in outs], axis=1).astype(np.float64)
    grid = (outs[0].meta["grid_index"] + np.arange(data.shape[1])) / 500.0
    last = grid >= grid[-1] - 60.0
    expected = 2 * np.pi * (grid[last] - t_ref)
    errors = {}
    for k, sid in enumerate(devices):
        got = np.arctan2(data[2 * k, last], data[2 * k + 1, last])
        errors[sid] = np.angle(np.exp(1j * (got - expected))) / (2 * np.pi)
    ok = np.isfinite(errors["A"]) & np.isfinite(errors["B"])
    assert ok.mean() > 0.99
    max_abs = {sid: float(np.max(np.abs(e[ok]))) for sid, e in errors.items()}
    max_rel = float(np.max(np.abs(errors["A"][ok] - errors["B"][ok])))
    print(f"alignment error over the last minute: abs {max_abs} s, A-B {max_rel:.2e} s")
    assert max(max_abs.values()) < 1e-3 and max_rel < 1e-3
    assert grid[-1] - grid[0] > seconds - 2.0 and al.state.n_late == 0


# ----------------------------------------------------------------------------- the real Muse XDF
@pytest.fixture(scope="module")
def muse_streams(muse_xdf: Path):
    pyxdf = pytest.importorskip("pyxdf")
    streams, _ = pyxdf.load_xdf(str(muse_xdf), synchronize_clocks=True, dejitter_timestamps=True, verbose=False)
    return {s["info"]["type"][0]: s for s in streams}


def _play(dev):
    dev.open()
    chunks = []
    with pytest.raises(EndOfStream):
        while True:
            chunks.append(dev.read(0.0))
    return chunks


@pytest.mark.parametrize(("sfreq_out", "chunk_size"), [(256.0, 1), (100.0, 1), (256.0, 32)])
def test_muse_xdf_aligned_onto_one_grid(muse_xdf, muse_streams, sfreq_out, chunk_size):
    devices = xdf_devices(muse_xdf, chunk_size=chunk_size)
    assert [d.info.sfreq for d in devices] == [256.0, 64.0, 52.0, 52.0]
    played = [_play(d) for d in devices]
    fixed, errors = {}, {}
    if chunk_size > 1:  # recorded stamps are already synchronised: fit the clock on them (t0), not on arrival
        spec = dejitter(time_source="t0", min_span_s=1.0, block_s=0.25)  # the recording lasts 9 s
        fixed = {d: run_offline(spec, p) for d, p in zip(devices, played)}
    out = align_chunks([fixed.get(d, p) for d, p in zip(devices, played)], sfreq_out, prefix=True)
    assert out.info.stream_id == "aligned" and out.sfreq == sfreq_out
    assert out.n_channels == sum(d.info.n_channels for d in devices) == 14
    assert out.channels[0] == "Muse-EEG:TP9" and out.channels[-1] == "Muse-GYRO:GYRO_Z"
    grid = (out.meta["grid_index"] + np.arange(out.n_samples)) / sfreq_out
    assert np.all(np.diff(grid) > 0) and out.t0_s == grid[0]
    span = max(p[-1].t_end_s for p in played) - min(p[0].t0_s for p in played)
    assert out.n_samples == pytest.approx(span * sfreq_out, abs=sfreq_out * 0.5)
    row = 0
    for dev in devices:
        header = dev._header
        s = muse_streams[header["stream"]["type"]]
        t = dev._origin + (np.asarray(s["time_stamps"]) - header["ref_ts"])
        x = (np.asarray(s["time_series"], np.float64) * np.asarray(header["stream"]["scales"])).astype(np.float32)
        block = out.data[row:row + dev.info.n_channels]
        row += dev.info.n_channels
        inside = (grid >= t[0]) & (grid <= t[-1])
        assert inside.mean() > 0.9 and np.isnan(block[:, ~inside]).all()
        if chunk_size == 1:  # every sample carries its own pyxdf timestamp: exact reference
            ref = np.stack([np.interp(grid[inside], t, ch.astype(np.float64)) for ch in x.T])
            np.testing.assert_allclose(block[:, inside], ref.astype(np.float32), rtol=2e-6, atol=1e-9)
        else:  # ACC/GYRO run at 51.87 Hz: nominal spacing inside a 32-sample chunk is up to 1.5 ms off,
            # dejitter's fitted rate (meta["clock_rate_hz"]) brings every sample back onto pyxdf's stamps
            played_dev = played[devices.index(dev)]
            nominal = np.concatenate([c.times_s for c in played_dev])
            fitted = np.concatenate([c.t0_s + np.arange(c.n_samples) / c.meta["clock_rate_hz"] for c in fixed[dev]])
            settled = t > t[0] + 2.0  # the slope is fitted once the window spans min_span_s
            errors[dev.info.stream_id] = (np.max(np.abs(nominal - t)), np.max(np.abs(fitted - t)[settled]))
            assert np.max(np.abs(fitted - t)[settled]) < 0.05e-3
            ref = np.stack([np.interp(grid[inside], t, ch.astype(np.float64)) for ch in x.T])
            step = np.max(np.abs(np.diff(x, axis=0)), axis=0)  # largest change between two samples, per channel
            later = grid[inside] > t[0] + 2.0
            assert np.all(np.abs(block[:, inside][:, later] - ref[:, later]) <= 0.02 * step[:, None] + 1e-9)
    if errors:
        print("max |t - pyxdf| nominal vs fitted rate:", errors)
        assert errors["Muse-ACC"][0] > 1e-3
