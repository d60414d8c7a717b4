"""Faults: a killed worker restarts without losing accepted data; a failing device is retried."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import ray

from neuraflow import Pipeline, devices, ops, sinks
from neuraflow.runtime.executor import Engine

from .conftest import make_settings, wait_for

pytestmark = pytest.mark.ray


def _plan(devs):
    p = Pipeline("faults")
    eeg = p.source("eeg", devs)
    eeg.to("mem", sinks.MemorySink())
    eeg.then("bandpass", ops.bandpass(1.0, 40.0)).to("mem")
    return p.build()


def _restarted(worker) -> bool:
    try:
        status = ray.get(worker.status.remote(), timeout=5)
    except ray.exceptions.RayError:
        return False
    return status["alive"] and status["restarted"]


def test_killed_worker_restarts_and_records_the_gap(ray_local, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_restarts=-1, devices_per_group=2)
    devs = [devices.Synthetic(f"k{i}", n_channels=4, sfreq=250.0, chunk_size=25, seed=i) for i in range(2)]
    handle = Engine(settings).start(_plan(devs))
    try:
        time.sleep(3.0)
        ((group_id, worker),) = handle.groups.items()
        # partial checkpoints reach the controller from the worker's shipper thread, apart from its ticks
        wait_for(lambda: handle.status()["groups"][group_id]["checkpoint_bytes"] > 0, 10, "a shipped checkpoint")
        shipped = ray.get(handle.controller.resume_point.remote(group_id)).snapshot
        assert {("bandpass", d.info.stream_id) for d in devs} <= set(shipped["states"])
        pid_before = ray.get(worker.pid.remote())
        accepted = {d.info.stream_id: [c.seq for c in handle.call_sink("mem", "chunks", d.info.stream_id)] for d in devs}
        ray.kill(worker, no_restart=False)
        wait_for(lambda: _restarted(worker), 60, "the worker to restart")
        assert ray.get(worker.pid.remote()) != pid_before
        time.sleep(2.0)
        handle.stop()
        stored = {d.info.stream_id: handle.call_sink("mem", "chunks", d.info.stream_id) for d in devs}
        derived = {d.info.stream_id: handle.call_sink("mem", "chunks", f"{d.info.stream_id}/bandpass") for d in devs}
        events = {d.info.stream_id: handle.events(d.info.stream_id) for d in devs}
    finally:
        handle.destroy()
    for dev in devs:
        sid = dev.info.stream_id
        seqs = [c.seq for c in stored[sid]]
        assert set(accepted[sid]) <= set(seqs), "chunks accepted before the kill were lost"
        assert seqs == list(range(len(seqs))), "seq must continue after the restart without duplicates"
        assert len(seqs) > len(accepted[sid]) + 10, "the restarted worker did not resume streaming"
        gaps = [e for e in events[sid] if e.label == "gap"]
        assert gaps, "the time the worker was down must be recorded as a gap event"
        assert gaps[0].value > 0 and gaps[0].meta["to_s"] > gaps[0].meta["from_s"]
        # every stored chunk is what the device produced at that sample index (nothing corrupted)
        for chunk in stored[sid][:: max(1, len(seqs) // 20)]:
            np.testing.assert_array_equal(chunk.data, dev.expected(chunk.meta["sample_index"], chunk.n_samples))
        dseqs = [c.seq for c in derived[sid]]
        assert dseqs == sorted(set(dseqs)), "derived seqs duplicated after restart"


def test_failing_device_is_retried_with_backoff(ray_local, tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    flaky = devices.Synthetic("flaky", n_channels=4, sfreq=250.0, chunk_size=25, seed=3, fail_after_reads=20)
    healthy = devices.Synthetic("healthy", n_channels=4, sfreq=250.0, chunk_size=25, seed=4)
    handle = Engine(settings).start(_plan([flaky, healthy]))
    try:
        wait_for(lambda: handle.metrics()["streams"].get("flaky", {}).get("reconnects", 0) >= 2, 30,
                  "two reconnects of the failing device")
        handle.stop()
        metrics = handle.metrics()["streams"]
        events = [e.label for e in handle.events("flaky")]
        flaky_chunks = handle.call_sink("mem", "chunks", "flaky")
        healthy_chunks = handle.call_sink("mem", "chunks", "healthy")
    finally:
        handle.destroy()
    assert metrics["flaky"]["errors"] >= 2 and metrics["flaky"]["reconnects"] >= 2
    assert "disconnect" in events and "reconnect" in events
    assert metrics["healthy"]["errors"] == 0
    assert [c.seq for c in flaky_chunks] == list(range(len(flaky_chunks)))
    assert len(healthy_chunks) > len(flaky_chunks) // 2 > 0
