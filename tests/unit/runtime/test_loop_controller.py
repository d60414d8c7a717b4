"""GroupLoop + PipelineController without Ray: run_local end to end, deliveries, resume points,
failing sinks, placement and latency histograms."""

from __future__ import annotations

import math
import pickle
import time

import numpy as np
import pytest

from neuraflow import Pipeline, devices, ops, sinks
from neuraflow.chunk import Chunk, Event
from neuraflow.devices.base import DeviceBase
from neuraflow.ops import run_offline
from neuraflow.runtime import controller as controller_mod
from neuraflow.runtime.controller import PipelineController
from neuraflow.runtime.local import run_local
from neuraflow.runtime.loop import Delivery, GroupLoop, LoopOptions, Mode, ResumePoint
from neuraflow.runtime.placement import partition_devices
from neuraflow.runtime.slot import SlotOptions
from neuraflow.runtime.stats import LATENCY_BUCKETS_MS, LatencyHistogram, StreamStats
from neuraflow.runtime.wire import StateBlob
from neuraflow.testing import make_info


def synth(i: int, **kw) -> devices.Synthetic:
    kw = {"n_channels": 4, "sfreq": 250.0, "chunk_size": 16 + 8 * i, "seed": i, "realtime": False,
          "start_s": 1_000.0, **kw}
    return devices.Synthetic(f"eeg-{i}", **kw)


def three_device_plan():
    devs = [synth(i) for i in range(3)]
    p = Pipeline("local")
    eeg = p.source("eeg", devs)
    eeg.to("raw", sinks.MemorySink())
    eeg.then("bp", ops.bandpass(1.0, 40.0)).to("clean", sinks.MemorySink())
    return p.build(), devs


# ----------------------------------------------------------------------------- run_local


@pytest.fixture(scope="module")
def local_run():
    plan, devs = three_device_plan()
    controller = run_local(plan, duration_s=0.5)
    return plan, devs, controller


def test_run_local_streams_are_contiguous_and_exact(local_run) -> None:
    plan, devs, controller = local_run
    raw_sink = plan.nodes["raw"].sink
    assert raw_sink.opened and raw_sink.closed
    assert raw_sink.stream_ids() == ["eeg-0", "eeg-1", "eeg-2"]
    for dev in devs:
        chunks = raw_sink.chunks(dev.info.stream_id)
        assert len(chunks) >= 10, "the loop produced almost nothing in 0.5 s"
        assert [c.seq for c in chunks] == list(range(len(chunks)))
        assert [c.meta["sample_index"] for c in chunks] == [i * dev.chunk_size for i in range(len(chunks))]
        for c in chunks:
            np.testing.assert_array_equal(c.data, dev.expected(c.meta["sample_index"], c.n_samples))
            assert c.t0_s == pytest.approx(1_000.0 + c.meta["sample_index"] / dev.sfreq)
    assert raw_sink.duplicates_dropped == 0


def test_run_local_derived_streams_equal_offline(local_run) -> None:
    plan, devs, controller = local_run
    raw_sink, clean_sink = plan.nodes["raw"].sink, plan.nodes["clean"].sink
    for dev in devs:
        raw = raw_sink.chunks(dev.info.stream_id)
        clean = controller.call_sink("clean", "chunks", f"{dev.info.stream_id}/bp")
        assert [c.seq for c in clean] == list(range(len(raw)))
        want = run_offline(ops.bandpass(1.0, 40.0), raw)
        for got, ref in zip(clean, want):
            np.testing.assert_array_equal(got.data, ref.data)
    assert clean_sink.duplicates_dropped == 0


def test_run_local_metrics_match_the_sink(local_run) -> None:
    plan, devs, controller = local_run
    raw_sink = plan.nodes["raw"].sink
    metrics = controller.metrics()
    assert metrics["pipeline"] == "local"
    total_chunks = total_samples = 0
    for dev in devs:
        chunks = raw_sink.chunks(dev.info.stream_id)
        stream = metrics["streams"][dev.info.stream_id]
        assert stream["chunks"] == len(chunks)
        assert stream["samples"] == sum(c.n_samples for c in chunks)
        assert stream["drops"] == stream["errors"] == stream["reconnects"] == stream["gaps"] == 0
        assert stream["latency_count"] == len(chunks)
        total_chunks += len(chunks)
        total_samples += stream["samples"]
    assert metrics["total"]["chunks"] == total_chunks
    assert metrics["total"]["samples"] == total_samples
    assert metrics["steps"]["bp"]["chunks"] == total_chunks
    assert metrics["sinks"]["raw"] == {"failures": 0, "pending_chunks": 0, "dropped_chunks": 0}
    status = controller.status()
    assert status["state"] == "stopped"
    assert status["groups"]["local"]["deliveries"] >= 1
    assert status["groups"]["local"]["checkpoint_bytes"] > 0  # the stopping worker's full snapshot
    assert status["sources"] == {"eeg": ["eeg-0", "eeg-1", "eeg-2"]}


def test_run_local_resume_point_holds_the_watermarks(local_run) -> None:
    plan, devs, controller = local_run
    raw_sink = plan.nodes["raw"].sink
    resume = controller.resume_point("local")
    for dev in devs:
        last = raw_sink.chunks(dev.info.stream_id)[-1]
        assert resume.raw[dev.info.stream_id] == (last.seq + 1, pytest.approx(last.t_end_s))
        assert resume.derived_next_seq[f"{dev.info.stream_id}/bp"] == last.seq + 1
    assert resume.snapshot is not None
    pickle.dumps(resume.snapshot)


def test_run_local_until_finite_sources_end() -> None:
    dev = ScriptedDevice("fin", [(i * 0.1, 10) for i in range(5)], end=True)
    p = Pipeline("fin")
    p.source("src", dev).to("out", sinks.MemorySink())
    plan = p.build()
    controller = run_local(plan)  # no duration: returns once the device ended
    assert [c.seq for c in plan.nodes["out"].sink.chunks("fin")] == [0, 1, 2, 3, 4]
    assert controller.status()["groups"]["local"]["finished"]


# ----------------------------------------------------------------------------- GroupLoop


class ScriptedDevice(DeviceBase):
    """Finite pollable device: chunks at given (t0, n); EndOfStream afterwards when ``end``."""

    blocking = False

    def __init__(self, stream_id: str, spec: list[tuple[float, int]], *, end: bool = False) -> None:
        self.info = make_info(2, 100.0, stream_id=stream_id)
        self.spec = list(spec)
        self.end = end

    def read(self, timeout_s: float) -> Chunk | None:
        from neuraflow.errors import EndOfStream

        if not self.spec:
            if self.end:
                raise EndOfStream()
            return None
        t0, n = self.spec.pop(0)
        return Chunk(np.ones((2, n), np.float32) * t0, t0, self.info)

    def next_ready_s(self) -> float | None:
        return 0.0


def test_group_loop_tick_delivery_and_resume() -> None:
    plan, devs = three_device_plan()
    opts = LoopOptions(mode=Mode.BATCH, tick_s=0.0, latency_budget_s=math.inf, report_every_s=0.0)
    loop = GroupLoop("g0", plan, [("eeg", 0), ("eeg", 2)], SlotOptions(max_reads_per_poll=3), opts)
    loop.start()
    loop.poll()
    delivery = loop.tick()
    assert isinstance(delivery, Delivery) and delivery.group_id == "g0"
    assert [c.seq for c in delivery.sinks["raw"] if c.stream_id == "eeg-0"] == [0, 1, 2]
    assert {c.stream_id for c in delivery.sinks["raw"]} == {"eeg-0", "eeg-2"}
    assert delivery.raw_watermarks["eeg-0"] == (3, pytest.approx(1_000.0 + 48 / 250.0))
    assert delivery.derived_next_seq == {"eeg-0/bp": 3, "eeg-2/bp": 3}
    assert delivery.stats is not None and delivery.stats["eeg-0"].chunks == 3
    assert not delivery.finished
    loop.stop()

    controller = PipelineController(plan, ["g0"], "batch")
    controller.deliver(delivery)
    resume = controller.resume_point("g0")
    loop2 = GroupLoop("g0", plan, [("eeg", 0), ("eeg", 2)], SlotOptions(max_reads_per_poll=1), opts, resume=resume)
    assert {s.stream_id: s.next_seq for _, s in loop2.slots} == {"eeg-0": 3, "eeg-2": 3}
    assert loop2.fused.next_seq["eeg-0/bp"] == 3


def test_group_loop_tick_without_data_returns_none_until_report_due() -> None:
    dev = ScriptedDevice("quiet", [])
    p = Pipeline("q")
    p.source("src", dev).to("out", sinks.MemorySink())
    plan = p.build()
    loop = GroupLoop("g", plan, [("src", 0)], SlotOptions(), LoopOptions(report_every_s=3600.0))
    loop.start()
    loop.poll()
    assert loop.tick() is None
    final = loop.tick(final=True)
    assert final is not None and final.stats is not None and final.snapshot is not None


# ----------------------------------------------------------------------------- controller


def sink_plan(sink, *, expose: bool = False):
    dev = ScriptedDevice("s0", [])
    p = Pipeline("ctl")
    src = p.source("src", dev)
    src.to("out", sink)
    if expose:
        p.expose("live", src.then("w", ops.sliding_window(0.1, 0.1)), route="/live")
    return p.build()


def raw_chunks(seqs, stream_id: str = "s0", n: int = 10) -> list[Chunk]:
    info = make_info(2, 100.0, stream_id=stream_id)
    return [Chunk(np.full((2, n), s, np.float32), 10.0 + s * n / 100.0, info, seq=s) for s in seqs]


def delivery(chunks, *, group="g", marks=None, derived=None, snapshot=None, exposed=None, events=(),
             finished=False) -> Delivery:
    return Delivery(group_id=group, sinks={"out": list(chunks)}, exposed=exposed or {}, events=list(events),
                    raw_watermarks=marks or {}, derived_next_seq=derived or {}, snapshot=snapshot,
                    finished=finished)


def test_controller_resume_point_holds_newest_watermarks() -> None:
    ctl = PipelineController(sink_plan(sinks.MemorySink()), ["g", "h"], "realtime")
    assert ctl.resume_point("g") == ResumePoint()
    g_states = {"states": {("bp", "s0"): 1}, "next_seq": {}}
    h_states = {"states": {("bp", "s9"): "h"}, "next_seq": {}}
    ctl.deliver(delivery(raw_chunks([0, 1]), marks={"s0": (2, 10.2)}, derived={"s0/x": 1},
                         snapshot=StateBlob.pack(g_states)))
    ctl.deliver(delivery(raw_chunks([2]), marks={"s0": (3, 10.3)}, derived={"s0/x": 2}))
    # a stale (lower) watermark never moves the resume point back
    ctl.deliver(delivery([], marks={"s0": (1, 10.1)}))
    ctl.deliver(delivery([], group="h", marks={"s9": (7, 1.0)}, snapshot=StateBlob.pack(h_states)))
    resume = ctl.resume_point("g")
    assert resume.raw == {"s0": (3, 10.3)}
    assert resume.derived_next_seq == {"s0/x": 2}
    assert resume.snapshot == g_states  # the last snapshot sent, not cleared by deliveries without one
    assert ctl.resume_point("h").raw == {"s9": (7, 1.0)}
    assert ctl.resume_point("h").snapshot == h_states
    assert ctl.resume_point("unknown") == ResumePoint()


def test_controller_merges_partial_snapshots() -> None:
    ctl = PipelineController(sink_plan(sinks.MemorySink()), ["g"], "realtime")
    part = {"states": {("bp", "a"): 1}, "next_seq": {"a/bp": 3}}
    ctl.deliver(Delivery("g", {}, {}, [], {}, {}, snapshot=StateBlob.pack(part, partial=True)))
    ctl.deliver(Delivery("g", {}, {}, [], {}, {}, snapshot=StateBlob.pack(
        {"states": {("bp", "b"): 2, ("bp", "a"): 5}, "next_seq": {"a/bp": 4, "b/bp": 1}}, partial=True)))
    assert ctl.resume_point("g").snapshot == {"states": {("bp", "a"): 5, ("bp", "b"): 2},
                                              "next_seq": {"a/bp": 4, "b/bp": 1}}
    # a full snapshot (a stopping worker's last one) replaces what was merged
    full = {"states": {("bp", "c"): 9}, "next_seq": {}}
    ctl.deliver(Delivery("g", {}, {}, [], {}, {}, snapshot=StateBlob.pack(full)))
    assert ctl.resume_point("g").snapshot == full


def test_loop_spreads_checkpoints_over_ticks(monkeypatch) -> None:
    """Each stream is checkpointed once per checkpoint_every_s, a few streams per tick (no stall)."""
    plan, devs = three_device_plan()
    clock = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    loop = GroupLoop("g", plan, [("eeg", i) for i in range(3)], SlotOptions(),
                     LoopOptions(mode=Mode.BATCH, checkpoint_every_s=0.3))
    loop.start()
    parts = []
    for _ in range(12):
        clock[0] += 0.05  # six ticks per checkpoint interval, three streams: one every other tick
        loop.poll()
        out = loop.tick()
        if out is not None and out.snapshot is not None:
            assert out.snapshot.partial
            parts.append(sorted(out.snapshot.streams))
            assert sorted({key[1] for key in out.snapshot.unpack()["states"]}) == parts[-1]
    loop.stop()
    assert all(len(p) == 1 for p in parts) and len(parts) in (5, 6)
    assert {s for p in parts for s in p} == {"eeg-0", "eeg-1", "eeg-2"}
    assert loop.fused.snapshot(["eeg-1"])["states"].keys() == {("bp", "eeg-1")}


def test_controller_finished_once_every_group_finished() -> None:
    sink = sinks.MemorySink()
    ctl = PipelineController(sink_plan(sink), ["g", "h"], "batch")
    ctl.deliver(delivery(raw_chunks([0]), finished=True))
    assert not ctl.finished and ctl.status()["state"] == "running"
    ctl.deliver(delivery([], group="h", finished=True))
    assert ctl.finished and ctl.status()["state"] == "finished"
    assert sink.flushes >= 1  # finishing flushes the sinks


class FlakySink(sinks.MemorySink):
    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.calls = 0

    def write_batch(self, chunks) -> None:
        self.calls += 1
        if self.failures:
            self.failures -= 1
            raise OSError("disk full")
        super().write_batch(chunks)


def test_failing_sink_keeps_chunks_pending_and_retries(monkeypatch) -> None:
    monkeypatch.setattr(controller_mod, "FLUSH_EVERY_S", 3600.0)
    sink = FlakySink(failures=2)
    ctl = PipelineController(sink_plan(sink), ["g"], "realtime")
    assert ctl.deliver(delivery(raw_chunks([0, 1, 2]))) is True
    assert sink.stream_ids() == []
    assert ctl.metrics()["sinks"]["out"] == {"failures": 1, "pending_chunks": 3, "dropped_chunks": 0}
    status = ctl.status()["sinks"]["out"]
    assert status["error"] == "OSError: disk full" and status["pending_chunks"] == 3

    ctl.deliver(delivery(raw_chunks([3])))
    assert ctl.metrics()["sinks"]["out"] == {"failures": 2, "pending_chunks": 4, "dropped_chunks": 0}

    ctl.deliver(delivery(raw_chunks([4, 5])))
    assert [c.seq for c in sink.chunks("s0")] == [0, 1, 2, 3, 4, 5]  # nothing lost, in order
    assert ctl.metrics()["sinks"]["out"] == {"failures": 2, "pending_chunks": 0, "dropped_chunks": 0}
    assert sink.calls == 3
    assert sink.duplicates_dropped == 0


def test_pending_chunks_are_retried_by_a_delivery_without_data(monkeypatch) -> None:
    monkeypatch.setattr(controller_mod, "FLUSH_EVERY_S", 3600.0)
    sink = FlakySink(failures=1)
    ctl = PipelineController(sink_plan(sink), ["g"], "realtime")
    ctl.deliver(delivery(raw_chunks([0, 1])))
    ctl.deliver(delivery([]))
    assert [c.seq for c in sink.chunks("s0")] == [0, 1]


def test_stop_flushes_pending_chunks(monkeypatch) -> None:
    monkeypatch.setattr(controller_mod, "FLUSH_EVERY_S", 3600.0)
    sink = FlakySink(failures=1)
    ctl = PipelineController(sink_plan(sink), ["g"], "realtime")
    ctl.deliver(delivery(raw_chunks([0, 1])))
    status = ctl.stop()
    assert [c.seq for c in sink.chunks("s0")] == [0, 1]
    assert sink.closed and status["state"] == "stopped"
    assert status["sinks"]["out"]["pending_chunks"] == 0


def test_controller_events_and_latest() -> None:
    sink = sinks.MemorySink()
    ctl = PipelineController(sink_plan(sink, expose=True), ["g"], "realtime")
    info = make_info(2, 100.0, stream_id="s0/w")
    windows = [Chunk(np.full((2, 10), s, np.float32), 10.0 + 0.1 * s, info, seq=s) for s in range(5)]
    gap = Event("s0", 10.2, "gap", 0.5)
    ctl.deliver(delivery(raw_chunks([0]), exposed={"live": windows}, events=[gap]))
    latest = ctl.latest("s0/w", 0.2)
    assert latest.seq == 4 and latest.n_samples == 20
    assert latest.meta["first_seq"] == 3
    np.testing.assert_array_equal(latest.data[:, -10:], 4.0)
    assert [c.seq for c in ctl.exposed_latest("live", 0.1)] == [4]
    with pytest.raises(KeyError):
        ctl.latest("nope", 1.0)
    assert ctl.events() == [gap] and ctl.events("other") == []
    assert sink.events() == [gap]  # sinks with write_events get them too


# ----------------------------------------------------------------------------- placement


class Dev(DeviceBase):
    def __init__(self, sid: str, blocking: bool = False) -> None:
        self.info = make_info(1, 100.0, stream_id=sid)
        self.blocking = blocking

    def read(self, timeout_s: float):
        return None


def placement_plan(a_blocking: list[bool], n_b: int = 0):
    p = Pipeline("place")
    a = p.source("a", [Dev(f"a{i}", b) for i, b in enumerate(a_blocking)])
    a.to("out", sinks.MemorySink())
    if n_b:
        p.source("b", [Dev(f"b{i}") for i in range(n_b)]).to("out")
    return p.build()


def test_placement_blocking_devices_get_dedicated_groups() -> None:
    plan = placement_plan([False, True, False, True, False], n_b=2)
    groups = partition_devices(plan, n_workers=2)
    assert groups[:2] == [[("a", 1)], [("a", 3)]]
    assert groups[2:] == [[("a", 0), ("a", 4), ("b", 1)], [("a", 2), ("b", 0)]]
    flat = sorted(x for g in groups for x in g)
    assert flat == sorted([("a", i) for i in range(5)] + [("b", 0), ("b", 1)])


def test_placement_round_robin_never_makes_empty_groups() -> None:
    plan = placement_plan([False] * 3)
    assert partition_devices(plan, n_workers=8) == [[("a", 0)], [("a", 1)], [("a", 2)]]
    assert partition_devices(plan, n_workers=1) == [[("a", 0), ("a", 1), ("a", 2)]]
    assert partition_devices(plan, n_workers=0) == [[("a", 0), ("a", 1), ("a", 2)]]


def test_placement_devices_per_group() -> None:
    plan = placement_plan([False] * 7, n_b=0)
    groups = partition_devices(plan, n_workers=2, devices_per_group=3)
    assert [len(g) for g in groups] == [3, 3, 1]
    assert groups[0] == [("a", 0), ("a", 1), ("a", 2)]
    assert all(len(g) <= 3 for g in groups)


def test_placement_only_blocking_devices() -> None:
    plan = placement_plan([True, True])
    assert partition_devices(plan, n_workers=4) == [[("a", 0)], [("a", 1)]]


# ----------------------------------------------------------------------------- stats


def test_latency_histogram_quantiles() -> None:
    h = LatencyHistogram()
    assert math.isnan(h.quantile(0.5)) and h.n == 0
    for v in [0.1] * 50 + [3.0] * 40 + [12.0] * 9 + [20_000.0]:
        h.add(v)
    assert h.n == 100
    assert h.quantile(0.0) == 0.25
    assert h.quantile(0.5) == 0.25
    assert h.quantile(0.51) == 3.0  # bucket upper bounds are inclusive (bisect_left)
    assert h.quantile(0.9) == 3.0
    assert h.quantile(0.95) == 15.0
    assert h.quantile(0.99) == 15.0
    assert h.quantile(1.0) == math.inf


def test_latency_histogram_add_many_merge_equals_add() -> None:
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.exponential(5.0, 500), np.array(LATENCY_BUCKETS_MS), [0.0, 1e6]])
    one = LatencyHistogram()
    for v in values:
        one.add(float(v))
    many = LatencyHistogram()
    many.add_many(values[:300])
    rest = LatencyHistogram()
    rest.add_many(values[300:])
    many.merge(rest)
    assert many.counts == one.counts
    for q in (0.1, 0.5, 0.9, 0.99):
        assert many.quantile(q) == one.quantile(q)
        assert many.quantile(q) >= np.quantile(values, q) or many.quantile(q) == LATENCY_BUCKETS_MS[0]


def test_stream_stats_merge_and_summary() -> None:
    a, b = StreamStats(chunks=2, samples=20, drops=1, queue_depth=5), StreamStats(chunks=3, samples=30, gaps=2)
    a.latency.add(1.0)
    b.latency.add(100.0)
    b.queue_depth = 7
    a.merge(b)
    s = a.summary(elapsed_s=2.0)
    assert (s["chunks"], s["samples"], s["drops"], s["gaps"], s["queue_depth"]) == (5, 50, 1, 2, 7)
    assert s["chunks_per_s"] == 2.5 and s["samples_per_s"] == 25.0
    assert s["latency_count"] == 2 and s["latency_p50_ms"] == 1.0 and s["latency_p99_ms"] == 100.0
    assert StreamStats().summary(0.0)["chunks_per_s"] == 0.0


def test_each_sink_is_flushed_on_its_own_cadence(monkeypatch) -> None:
    """Every FLUSH_EVERY_S by default; a sink committing less often (Iceberg) on its own flush_every_s."""
    monkeypatch.setattr(controller_mod, "FLUSH_EVERY_S", 0.0)
    fast, slow = sinks.MemorySink(), sinks.MemorySink()
    slow.flush_every_s = 3600.0
    p = Pipeline("cadence")
    src = p.source("src", ScriptedDevice("s0", []))
    src.to("fast", fast)
    src.to("slow", slow)
    ctl = PipelineController(p.build(), ["g"], "realtime")
    for seq in range(3):
        batch = raw_chunks([seq])
        ctl.deliver(Delivery(group_id="g", sinks={"fast": batch, "slow": batch}, exposed={}, events=[],
                             raw_watermarks={}, derived_next_seq={}))
    assert fast.flushes == 3 and slow.flushes == 0
    assert [c.seq for c in slow.chunks("s0")] == [0, 1, 2]  # written at once, committed later
    ctl.stop()
    assert slow.flushes >= 1


@pytest.mark.parametrize(
    ("work_s", "expected_s"),
    [(0.0, 0.0), (0.005, 0.005), (0.009, 0.007), (0.015, 0.0)],
    ids=["idle", "waits-as-long-as-it-works", "capped-by-the-budget", "overloaded-no-wait"],
)
def test_realtime_loop_gathers_longer_under_load_within_the_budget(work_s, expected_s) -> None:
    plan, _ = three_device_plan()
    loop = GroupLoop("g", plan, [("eeg", 0)], SlotOptions(), LoopOptions(latency_budget_s=0.05))
    loop._work_s = work_s
    assert loop.gather_s() == pytest.approx(expected_s)
    # gather + two iterations stay inside half the budget
    assert loop.gather_s() + 2 * work_s <= 0.025 + 1e-12 or loop.gather_s() == 0.0
    batch = GroupLoop("g", plan, [("eeg", 0)], SlotOptions(), LoopOptions(mode=Mode.BATCH))
    batch._work_s = work_s
    assert batch.gather_s() == 0.0
