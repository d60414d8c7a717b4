"""FusedGraph: vectorised over hosted streams, equal to running each op offline per stream."""

from __future__ import annotations

import dataclasses
import pickle
from collections import defaultdict

import numpy as np
import pytest

from neuraflow import Pipeline, devices, ops, sinks
from neuraflow.chunk import Chunk
from neuraflow.ops import run_offline
from neuraflow.runtime.fused import FusedGraph, _rounds
from neuraflow.testing import random_chunking

SFREQ = 250.0
BANDS = {"theta": (4.0, 8.0), "alpha": (8.0, 13.0), "beta": (13.0, 30.0)}
N_STREAMS = 4
N_SAMPLES = 1500


def make_devices(n: int = N_STREAMS) -> list[devices.Synthetic]:
    return [
        devices.Synthetic(f"s{i}", n_channels=3 + (i % 2), sfreq=SFREQ, seed=i, realtime=False, start_s=1000.0)
        for i in range(n)
    ]


def build_plan(devs, *, window=None):
    p = Pipeline("fused")
    eeg = p.source("eeg", devs)
    clean = eeg.then("notch", ops.notch(50.0)).then("bp", ops.bandpass(1.0, 40.0))
    win = clean.then("win", window or ops.sliding_window(0.5, 0.1))
    power = win.then("pow", ops.log_band_power(BANDS))
    eeg.to("raw", sinks.MemorySink())
    clean.to("clean", sinks.MemorySink())
    power.to("features", sinks.MemorySink())
    p.expose("live", win, route="/live")
    return p.build()


def stream_chunks(dev: devices.Synthetic, rng: np.random.Generator, n_samples: int = N_SAMPLES) -> list[Chunk]:
    """Raw chunks of random sizes as a DeviceSlot would hand them over (seq from 0)."""
    sizes = random_chunking(n_samples, rng, max_size=60)
    out, start = [], 0
    for seq, size in enumerate(sizes):
        out.append(Chunk(dev.expected(start, size), 1000.0 + start / SFREQ, dev.info, seq=seq,
                         meta={"sample_index": start}))
        start += size
    return out


def make_ticks(per_stream: dict[str, list[Chunk]], rng: np.random.Generator) -> list[list[Chunk]]:
    """Cut every stream into ticks of 0..4 chunks and interleave streams randomly within a tick."""
    cursors = {sid: 0 for sid in per_stream}
    ticks: list[list[Chunk]] = []
    while any(cursors[sid] < len(chs) for sid, chs in per_stream.items()):
        queues = []
        for sid, chs in per_stream.items():
            k = int(rng.integers(0, 5))
            queues.append(list(chs[cursors[sid] : cursors[sid] + k]))
            cursors[sid] += k
        tick: list[Chunk] = []
        while any(queues):
            q = [q for q in queues if q][int(rng.integers(0, sum(1 for q in queues if q)))]
            tick.append(q.pop(0))  # keeps each stream's order, mixes streams
        ticks.append(tick)
    return ticks


def run_fused(fused: FusedGraph, ticks, **kw):
    sinks_out: dict[str, list[Chunk]] = defaultdict(list)
    exposed: dict[str, list[Chunk]] = defaultdict(list)
    counts: dict[str, int] = defaultdict(int)
    n_shed = 0
    for tick in ticks:
        out = fused.process({"eeg": tick} if tick else {}, **kw)
        for name, chunks in out.sinks.items():
            sinks_out[name].extend(chunks)
        for name, chunks in out.exposed.items():
            exposed[name].extend(chunks)
        for step, n in out.step_counts.items():
            counts[step] += n
        n_shed += out.n_shed
    return sinks_out, exposed, counts, n_shed


def by_stream(chunks: list[Chunk]) -> dict[str, list[Chunk]]:
    out: dict[str, list[Chunk]] = defaultdict(list)
    for c in chunks:
        out[c.stream_id].append(c)
    return out


def offline(per_stream: dict[str, list[Chunk]]) -> dict[str, dict[str, list[Chunk]]]:
    """Reference: each op run offline, per stream, chained."""
    ref: dict[str, dict[str, list[Chunk]]] = {}
    for sid, raw in per_stream.items():
        notched = run_offline(ops.notch(50.0), raw)
        clean = run_offline(ops.bandpass(1.0, 40.0), notched)
        win = run_offline(ops.sliding_window(0.5, 0.1), clean)
        power = run_offline(ops.log_band_power(BANDS), win)
        ref[sid] = {"raw": raw, "clean": clean, "win": win, "pow": power}
    return ref


def assert_same(got: list[Chunk], want: list[Chunk], *, exact: bool) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.data.shape == w.data.shape
        if exact:
            np.testing.assert_array_equal(g.data, w.data)
        else:
            np.testing.assert_allclose(g.data, w.data, rtol=1e-5, atol=1e-6)
        assert g.t0_s == pytest.approx(w.t0_s, abs=1e-9)


@pytest.fixture
def setup():
    rng = np.random.default_rng(7)
    devs = make_devices()
    plan = build_plan(devs)
    per_stream = {d.info.stream_id: stream_chunks(d, rng) for d in devs}
    ticks = make_ticks(per_stream, rng)
    assert max(sum(1 for c in t if c.stream_id == "s0") for t in ticks) > 1  # rounds are exercised
    return plan, devs, per_stream, ticks


def test_fused_equals_offline_per_stream(setup) -> None:
    plan, devs, per_stream, ticks = setup
    fused = FusedGraph(plan, [("eeg", i) for i in range(len(devs))])
    sinks_out, exposed, counts, n_shed = run_fused(fused, ticks)
    ref = offline(per_stream)
    raw, clean, feats, live = (by_stream(x) for x in (sinks_out["raw"], sinks_out["clean"], sinks_out["features"],
                                                       exposed["live"]))
    assert n_shed == 0
    for sid in per_stream:
        assert raw[sid] == per_stream[sid]  # raw passes through untouched
        # filters: channel-stacked sosfilt gives the same samples as per-stream filtering
        assert_same(clean[f"{sid}/bp"], ref[sid]["clean"], exact=True)
        assert_same(live[f"{sid}/win"], ref[sid]["win"], exact=True)
        assert_same(feats[f"{sid}/pow"], ref[sid]["pow"], exact=False)
        for chunks in (clean[f"{sid}/bp"], live[f"{sid}/win"], feats[f"{sid}/pow"]):
            assert [c.seq for c in chunks] == list(range(len(chunks)))  # derived seqs contiguous
        index = int(sid[1:])
        assert all(c.info == plan.stream_infos["bp"][index] for c in clean[f"{sid}/bp"])
        assert all(c.info == plan.stream_infos["pow"][index] for c in feats[f"{sid}/pow"])
    assert counts["bp"] == sum(len(r["clean"]) for r in ref.values())
    assert counts["win"] == sum(len(r["win"]) for r in ref.values())
    assert counts["pow"] == sum(len(r["pow"]) for r in ref.values())
    assert fused.next_seq["s0/pow"] == len(ref["s0"]["pow"])


def test_fused_hosts_a_subset_of_devices(setup) -> None:
    plan, devs, per_stream, ticks = setup
    hosted = [("eeg", 1), ("eeg", 3)]
    fused = FusedGraph(plan, hosted)
    only = [[c for c in t if c.stream_id in ("s1", "s3")] for t in ticks]
    sinks_out, *_ = run_fused(fused, only)
    ref = offline({k: per_stream[k] for k in ("s1", "s3")})
    clean = by_stream(sinks_out["clean"])
    assert sorted(clean) == ["s1/bp", "s3/bp"]
    assert_same(clean["s3/bp"], ref["s3"]["clean"], exact=True)


def test_snapshot_pickles_and_restore_continues_identically(setup) -> None:
    plan, devs, per_stream, ticks = setup
    hosted = [("eeg", i) for i in range(len(devs))]
    half = len(ticks) // 2
    a = FusedGraph(plan, hosted)
    run_fused(a, ticks[:half])
    snap = pickle.loads(pickle.dumps(a.snapshot()))
    b = FusedGraph(plan, hosted)
    b.restore(snap)
    assert b.next_seq == a.next_seq
    out_a = run_fused(a, ticks[half:])
    out_b = run_fused(b, ticks[half:])
    for name in ("raw", "clean", "features"):
        ga, gb = out_a[0][name], out_b[0][name]
        assert [(c.stream_id, c.seq) for c in ga] == [(c.stream_id, c.seq) for c in gb]
        for x, y in zip(ga, gb):
            np.testing.assert_array_equal(x.data, y.data)
    # and the restored run continues the full offline reference
    ref = offline(per_stream)
    first = run_fused(FusedGraph(plan, hosted), ticks[:half])[0]["clean"]
    clean = by_stream(first + out_b[0]["clean"])
    for sid in per_stream:
        assert_same(clean[f"{sid}/bp"], ref[sid]["clean"], exact=True)
        assert [c.seq for c in clean[f"{sid}/bp"]] == list(range(len(ref[sid]["clean"])))


def test_snapshot_is_a_copy(setup) -> None:
    plan, devs, per_stream, ticks = setup
    fused = FusedGraph(plan, [("eeg", i) for i in range(len(devs))])
    run_fused(fused, ticks[:3])
    snap = fused.snapshot()
    before = pickle.dumps(snap)
    run_fused(fused, ticks[3:6])
    assert pickle.dumps(snap) == before


def test_set_next_seq_never_goes_backwards(setup) -> None:
    plan, devs, per_stream, ticks = setup
    fused = FusedGraph(plan, [("eeg", 0)])
    fused.set_next_seq({"s0/bp": 10})
    fused.set_next_seq({"s0/bp": 4})
    assert fused.next_seq["s0/bp"] == 10
    out = fused.process({"eeg": per_stream["s0"][:2]})
    assert [c.seq for c in out.sinks["clean"]] == [10, 11]


def test_empty_tick_is_empty() -> None:
    plan = build_plan(make_devices(2))
    out = FusedGraph(plan, [("eeg", 0), ("eeg", 1)]).process({})
    assert out.is_empty() and out.n_shed == 0


def test_rounds_hold_at_most_one_chunk_per_stream() -> None:
    items = [("a", 1), ("a", 2), ("b", 1), ("a", 3), ("b", 2), ("c", 1)]
    rounds = _rounds(items)  # type: ignore[arg-type]
    assert rounds == [[("a", 1), ("b", 1), ("c", 1)], [("a", 2), ("b", 2)], [("a", 3)]]


# ----------------------------------------------------------------------------- shedding


def sheddable_window(length_s: float = 0.2, step_s: float = 0.04):
    spec = ops.sliding_window(length_s, step_s)
    assert spec.sheddable
    return spec


def shed_setup():
    devs = make_devices(3)
    p = Pipeline("shed")
    eeg = p.source("eeg", devs)
    win = eeg.then("win", sheddable_window())
    win.to("windows", sinks.MemorySink())
    win.then("pow", ops.log_band_power({"alpha": (8.0, 13.0)})).to("features", sinks.MemorySink())
    plan = p.build()
    per_stream = {d.info.stream_id: [Chunk(d.expected(0, 250), 1000.0, d.info, seq=0),
                                     Chunk(d.expected(250, 125), 1001.0, d.info, seq=1)] for d in devs}
    return plan, devs, per_stream


def test_shedding_forwards_only_newest_window_per_stream() -> None:
    plan, devs, per_stream = shed_setup()
    fused = FusedGraph(plan, [("eeg", i) for i in range(3)])
    ref = {sid: run_offline(ops.sliding_window(0.2, 0.04), chs) for sid, chs in per_stream.items()}
    # first chunk of 1 s yields 21 windows per stream; all but the newest are stale
    out = fused.process({"eeg": [chs[0] for chs in per_stream.values()]}, shed_before_s=1e12)
    got = by_stream(out.sinks["windows"])
    n_first = {sid: sum(1 for w in ref[sid] if w.t_end_s <= 1001.0 + 1e-9) for sid in ref}
    assert all(n == 21 for n in n_first.values())
    for sid in per_stream:
        [only] = got[f"{sid}/win"]
        np.testing.assert_array_equal(only.data, ref[sid][n_first[sid] - 1].data)
        assert only.seq == 0
    assert out.n_shed == sum(n - 1 for n in n_first.values())
    assert out.step_counts["win"] == 3
    # the downstream step only sees what was kept
    assert len(out.sinks["features"]) == 3 and out.step_counts["pow"] == 3
    # next tick: derived seqs continue contiguously after shedding
    out2 = fused.process({"eeg": [chs[1] for chs in per_stream.values()]}, shed_before_s=1e12)
    for sid in per_stream:
        [only] = by_stream(out2.sinks["windows"])[f"{sid}/win"]
        assert only.seq == 1
        np.testing.assert_array_equal(only.data, ref[sid][-1].data)


def test_no_shedding_without_deadline_or_with_deadline_in_the_past() -> None:
    plan, devs, per_stream = shed_setup()
    ref = {sid: run_offline(ops.sliding_window(0.2, 0.04), chs[:1]) for sid, chs in per_stream.items()}
    for shed_before in (None, 0.0):
        fused = FusedGraph(plan, [("eeg", i) for i in range(3)])
        out = fused.process({"eeg": [chs[0] for chs in per_stream.values()]}, shed_before_s=shed_before)
        assert out.n_shed == 0
        got = by_stream(out.sinks["windows"])
        for sid in per_stream:
            assert_same(got[f"{sid}/win"], ref[sid], exact=True)


def test_shedding_keeps_windows_newer_than_the_deadline() -> None:
    plan, devs, per_stream = shed_setup()
    fused = FusedGraph(plan, [("eeg", 0)])
    ref = run_offline(ops.sliding_window(0.2, 0.04), per_stream["s0"][:1])
    deadline = ref[-5].t_end_s  # the last 5 windows end at or after it
    out = fused.process({"eeg": per_stream["s0"][:1]}, shed_before_s=deadline)
    assert_same(out.sinks["windows"], ref[-5:], exact=True)
    assert out.n_shed == len(ref) - 5


def test_non_sheddable_ops_are_never_shed() -> None:
    window = dataclasses.replace(ops.sliding_window(0.5, 0.1), sheddable=False)
    plan = build_plan(make_devices(1), window=window)
    d = plan.nodes["eeg"].devices[0]
    fused = FusedGraph(plan, [("eeg", 0)])
    out = fused.process({"eeg": [Chunk(d.expected(0, 250), 1000.0, d.info)]}, shed_before_s=1e12)
    assert out.n_shed == 0
    assert len(out.exposed["live"]) == 6


def test_only_window_ops_are_sheddable() -> None:
    assert ops.sliding_window(0.5, 0.1).sheddable
    assert not ops.bandpass(1.0, 40.0).sheddable
    assert not ops.notch(50.0).sheddable
    assert not ops.log_band_power(BANDS).sheddable
