"""Merge nodes (``Pipeline.merge`` with ``sync.align``): plan validation, placement of a merge's devices
on one worker, and the streaming runtime equal to the offline aligner — on synthetic devices of different
rates and on the real Muse XDF recording (EEG 256 Hz, PPG 64 Hz, ACC/GYRO 52 Hz)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from neuraflow import Pipeline, devices, ops, sinks, sync
from neuraflow.devices import xdf_devices
from neuraflow.errors import PipelineDefinitionError
from neuraflow.ops import run_offline
from neuraflow.runtime.fused import FusedGraph
from neuraflow.runtime.local import run_local
from neuraflow.runtime.placement import partition_devices


def synth(sid: str, sfreq: float, n_channels: int, seed: int, chunk_size: int) -> devices.Synthetic:
    return devices.Synthetic(sid, n_channels=n_channels, sfreq=sfreq, chunk_size=chunk_size, seed=seed,
                             line_freq=None, realtime=False, start_s=1_000.0 + 0.0137 * seed)


def merge_plan(extra_devices: int = 0):
    """eeg (250 Hz) + acc (52 Hz) merged at 100 Hz, then a band-pass; raw sources kept for the reference."""
    p = Pipeline("merge")
    eeg = p.source("eeg", synth("eeg", 250.0, 3, 1, 25))
    acc = p.source("acc", synth("acc", 52.0, 2, 2, 7))
    eeg.to("raw", sinks.MemorySink())
    acc.to("raw")
    merged = p.merge("aligned", sync.align(100.0, prefix=True), eeg, acc)
    merged.to("out", sinks.MemorySink())
    merged.then("lp", ops.bandpass(1.0, 20.0)).to("out")
    if extra_devices:
        others = p.source("others", [synth(f"x{i}", 250.0, 2, 10 + i, 32) for i in range(extra_devices)])
        others.to("raw")
    return p.build()


def test_merge_plan_has_one_output_stream_and_steps_derive_from_it() -> None:
    plan = merge_plan()
    (info,) = plan.stream_infos["aligned"]
    assert info.stream_id == "aligned" and info.sfreq == 100.0
    assert info.channels == ("eeg:Fp1", "eeg:Fp2", "eeg:C3", "acc:Fp1", "acc:Fp2")
    assert [i.stream_id for i in plan.stream_infos["lp"]] == ["aligned/lp"]
    assert plan.origin("lp").name == "aligned" and plan.origin("aligned").name == "aligned"
    assert plan.upstream_devices("lp") == [("eeg", 0), ("acc", 0)]


def test_merge_validation_names_the_merge_and_the_problem() -> None:
    p = Pipeline("bad")
    eeg = p.source("eeg", synth("eeg", 250.0, 2, 1, 25))
    with pytest.raises(PipelineDefinitionError, match=r"merge 'm'.*multi-stream op such as sync.align"):
        p.merge("m", ops.bandpass(1.0, 20.0), eeg)
    with pytest.raises(PipelineDefinitionError, match=r"merge 'm'.*one or more streams"):
        p.merge("m", sync.align(100.0))
    p.merge("m", sync.align(100.0, streams=["eeg", "nope"]), eeg).to("out", sinks.MemorySink())
    with pytest.raises(PipelineDefinitionError, match=r"merge 'm'.*\['nope'\] are not among the inputs \['eeg'\]"):
        p.build()
    q = Pipeline("dangling")
    a = q.source("a", synth("a", 250.0, 2, 1, 25))
    q.merge("m", sync.align(100.0), a)
    with pytest.raises(PipelineDefinitionError, match="branch ending at 'm' has no sink"):
        q.build()


def test_placement_keeps_a_merge_bundle_on_one_worker() -> None:
    plan = merge_plan(extra_devices=4)
    for kwargs in ({"n_workers": 2}, {"n_workers": 8}, {"n_workers": 2, "devices_per_group": 2}):
        groups = partition_devices(plan, **kwargs)
        assert sorted(item for g in groups for item in g) == sorted(
            [("eeg", 0), ("acc", 0)] + [("others", i) for i in range(4)])
        (home,) = [g for g in groups if ("eeg", 0) in g]
        assert ("acc", 0) in home, (kwargs, groups)
    with pytest.raises(RuntimeError, match="merge 'aligned'.*must share one worker"):
        FusedGraph(plan, [("eeg", 0)])
    assert FusedGraph(plan, [("others", 0)]).process({}).is_empty()  # hosts none of the merge: nothing to do


def _check_equals_offline(plan, raw_sink, out_sink, stream_ids, spec_kwargs) -> None:
    raw = [raw_sink.chunks(sid) for sid in stream_ids]
    assert all(len(r) > 3 for r in raw)
    want = sync.align_chunks(raw, **spec_kwargs)
    got = out_sink.chunks("aligned")
    assert [c.seq for c in got] == list(range(len(got)))
    assert all(c.info == plan.stream_infos["aligned"][0] for c in got)
    data = np.concatenate([c.data for c in got], axis=1)
    assert got[0].t0_s == want.t0_s and data.shape == want.data.shape
    np.testing.assert_array_equal(data, want.data)
    for a, b in zip(got, got[1:]):  # contiguous on the grid
        assert b.meta["grid_index"] == a.meta["grid_index"] + a.n_samples
    return got


def test_run_local_merge_equals_offline_align_and_feeds_steps() -> None:
    plan = merge_plan()
    controller = run_local(plan, duration_s=0.6)  # stopped by the deadline: the stop flushes the merge
    raw_sink, out_sink = plan.nodes["raw"].sink, plan.nodes["out"].sink
    got = _check_equals_offline(plan, raw_sink, out_sink, ["eeg", "acc"], {"sfreq_out": 100.0, "prefix": True})
    lowpassed = out_sink.chunks("aligned/lp")
    want = run_offline(ops.bandpass(1.0, 20.0), got)
    assert [c.seq for c in lowpassed] == list(range(len(want)))
    for a, b in zip(lowpassed, want):
        np.testing.assert_array_equal(a.data, b.data)
    assert controller.metrics()["steps"]["aligned"]["chunks"] == len(got)


def test_merge_state_is_snapshotted_and_restored() -> None:
    plan = merge_plan()
    eeg, acc = plan.nodes["eeg"].devices[0], plan.nodes["acc"].devices[0]
    eeg.open(), acc.open()
    reads = [(("eeg", eeg.read(0.0)), ("acc", acc.read(0.0))) for _ in range(12)]
    whole = FusedGraph(plan, [("eeg", 0), ("acc", 0)])
    split = FusedGraph(plan, [("eeg", 0), ("acc", 0)])
    outputs_whole, outputs_split = [], []
    for i, pair in enumerate(reads):
        raw = {name: [c.replace(seq=i)] for name, c in pair}
        outputs_whole += whole.process(raw).sinks["out"]
        if i == 6:  # a restarted worker: a new graph restored from a pickled snapshot
            snapshot = pickle.loads(pickle.dumps(split.snapshot()))
            split = FusedGraph(plan, [("eeg", 0), ("acc", 0)])
            split.restore(snapshot)
        outputs_split += split.process(raw).sinks["out"]
    assert len(outputs_whole) > 4
    assert [(c.stream_id, c.seq, c.t0_s) for c in outputs_split] == [(c.stream_id, c.seq, c.t0_s) for c in outputs_whole]
    for a, b in zip(outputs_split, outputs_whole):
        np.testing.assert_array_equal(a.data, b.data)


def test_muse_xdf_merged_in_a_pipeline_equals_offline(muse_xdf) -> None:
    devs = xdf_devices(muse_xdf, chunk_size=32)
    p = Pipeline("muse")
    streams = [p.source(d.info.stream_id.replace("Muse-", "").lower(), d) for d in devs]
    for s in streams:
        s.to("raw", sinks.MemorySink()) if s is streams[0] else s.to("raw")
    merged = p.merge("aligned", sync.align(256.0, prefix=True), *streams)
    merged.to("out", sinks.MemorySink())
    plan = p.build()
    run_local(plan)  # the recording ends: the end of input flushes the merge
    got = _check_equals_offline(plan, plan.nodes["raw"].sink, plan.nodes["out"].sink,
                                [d.info.stream_id for d in devs], {"sfreq_out": 256.0, "prefix": True})
    assert got[0].n_channels == 14 and got[0].channels[-1] == "Muse-GYRO:GYRO_Z"
    merged_data = np.concatenate([c.data for c in got], axis=1)
    assert np.isfinite(merged_data).mean() > 0.9  # the four streams overlap for most of the recording


def test_streams_of_one_headband_share_a_worker() -> None:
    from neuraflow.devices.ble import muse_devices

    p = Pipeline("muse-live")
    headband = p.source("muse", muse_devices("00:55:DA:B0:00:01"))
    other = p.source("other", muse_devices("00:55:DA:B0:00:02", ["eeg"], stream_prefix="muse2"))
    headband.to("raw", sinks.MemorySink())
    other.to("raw")
    plan = p.build()
    assert {d.colocate for d in plan.nodes["muse"].devices} == {"ble:00:55:DA:B0:00:01"}
    groups = partition_devices(plan, n_workers=2)
    assert sorted(groups) == sorted([[("muse", i) for i in range(4)], [("other", 0)]])
