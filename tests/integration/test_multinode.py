"""A pipeline on a 3-node Ray cluster (``ray.cluster_utils.Cluster``, all nodes on this machine).

- device groups are spread over the nodes;
- the output (raw and derived streams) is bit-exact the single-process output;
- a worker whose node is removed comes back on another node, keeps numbering
  ``seq`` where the sinks are (no duplicates) and the pipeline keeps delivering;
- a merge (``sync.align`` of the Muse XDF's four streams) keeps its devices on one worker
  and gives the single-process output.

The module shares one cluster; the shared local Ray of the other integration
tests is shut down first and re-started lazily by ``ray_local`` afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from neuraflow import Pipeline, ops, sync
from neuraflow.devices import FilePlayback, Synthetic, xdf_devices
from neuraflow.graph.plan import LogicalPlan
from neuraflow.runtime.executor import Engine
from neuraflow.runtime.local import run_local
from neuraflow.sinks import MemorySink

from .conftest import make_settings

pytestmark = [pytest.mark.ray, pytest.mark.cluster]

BANDS = {"delta": (1.0, 4.0), "theta": (4.0, 8.0), "alpha": (8.0, 13.0), "beta": (13.0, 30.0), "gamma": (30.0, 40.0)}
N_DEVICES = 6
N_CHANNELS = 4
SFREQ = 250.0
CHUNK = 25
NAMESPACE = "neuraflow-test"  # what make_settings() sets as ray.namespace
NODE_ARGS = {"num_cpus": 2, "include_dashboard": False, "object_store_memory": 200 * 1024**2}


@pytest.fixture(scope="module")
def cluster() -> Iterator[object]:
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()  # the shared local Ray of other tests; ray_local re-inits it lazily
    started = time.monotonic()
    c = Cluster(
        initialize_head=True,
        head_node_args={
            **NODE_ARGS,
            # notice a killed node within a few seconds (default: 5 x 3 s)
            "_system_config": {"health_check_period_ms": 1000, "health_check_failure_threshold": 3},
        },
    )
    try:
        for _ in range(2):
            c.add_node(**NODE_ARGS)
        c.wait_for_nodes()
        ray.init(address=c.address, namespace=NAMESPACE, log_to_driver=False)
        assert len([n for n in ray.nodes() if n["Alive"]]) == 3
        print(f"3-node cluster up in {time.monotonic() - started:.1f} s")
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


def write_recordings(directory: Path, seconds: float = 30.0) -> list[Path]:
    """One small FIF per device, each with its own (seeded) content."""
    import mne

    paths = []
    n = int(seconds * SFREQ)
    for i in range(N_DEVICES):
        rng = np.random.default_rng(100 + i)
        t = np.arange(n) / SFREQ
        data = 20e-6 * rng.standard_normal((N_CHANNELS, n)) + 10e-6 * np.sin(2 * np.pi * (8 + i) * t)
        info = mne.create_info([f"EEG{c}" for c in range(N_CHANNELS)], SFREQ, "eeg")
        path = directory / f"dev{i}_raw.fif"
        mne.io.RawArray(data, info, verbose="error").save(path, overwrite=True, verbose="error")
        paths.append(path)
    return paths


def build(name: str, devices: list) -> LogicalPlan:
    """raw -> notch -> band-pass -> 1 s / 0.25 s windows -> log band power; raw, clean and power to memory."""
    p = Pipeline(name)
    eeg = p.source("eeg", devices)
    clean = eeg.then("notch", ops.notch(freqs=(50.0,))).then("bandpass", ops.bandpass(l_freq=1.0, h_freq=40.0))
    power = clean.then("window", ops.sliding_window(length_s=1.0, step_s=0.25)).then(
        "bandpower", ops.log_band_power(BANDS)
    )
    eeg.to("mem", MemorySink())
    clean.to("mem")
    power.to("mem")
    return p.build()


def playback_plan(name: str, paths: list[Path]) -> LogicalPlan:
    return build(name, [FilePlayback(path, stream_id=f"dev-{i}", chunk_size=CHUNK, realtime=False)
                        for i, path in enumerate(paths)])


def stream_ids() -> list[str]:
    return [f"dev-{i}{suffix}" for i in range(N_DEVICES) for suffix in ("", "/bandpass", "/bandpower")]


def node_of(cluster, node_id: str):
    for node in cluster.list_all_nodes():
        if node.node_id == node_id:
            return node
    raise KeyError(node_id)


def test_device_groups_spread_over_nodes(cluster, tmp_path: Path) -> None:
    import ray

    settings = make_settings(tmp_path)  # devices_per_group: 2
    assert settings.runtime.devices_per_group == 2
    plan = playback_plan("multinode-spread", write_recordings(tmp_path, seconds=5.0))
    handle = Engine(settings).start(plan, mode="batch")
    try:
        groups = handle.group_status()
        assert len(groups) == N_DEVICES // 2
        assert all(g["error"] is None for g in groups.values()), groups
        assert sorted(s for g in groups.values() for s in g["streams"]) == sorted(f"dev-{i}" for i in range(6))
        nodes = {g["node_id"] for g in groups.values()}
        alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        assert nodes <= alive
        assert len(nodes) >= 2, f"SPREAD put every worker on one node: {groups}"
        assert handle.wait(60.0), handle.status()
    finally:
        handle.stop()
        handle.destroy()


def test_cluster_output_equals_single_process(cluster, tmp_path: Path) -> None:
    paths = write_recordings(tmp_path)
    expected = run_local(playback_plan("multinode-local", paths))

    handle = Engine(make_settings(tmp_path)).start(playback_plan("multinode-exact", paths), mode="batch")
    try:
        assert len({g["node_id"] for g in handle.group_status().values()}) >= 2
        assert handle.wait(120.0), handle.status()
        got = {sid: handle.call_sink("mem", "chunks", sid) for sid in stream_ids()}
    finally:
        status = handle.stop()
        handle.destroy()
    assert all(s["error"] is None for s in status["sinks"].values()), status["sinks"]

    n_raw = int(30.0 * SFREQ) // CHUNK
    for sid in stream_ids():
        want = expected.call_sink("mem", "chunks", sid)
        have = got[sid]
        if "/" not in sid:
            assert len(want) == n_raw
        else:
            assert len(want) > 0
        assert [c.seq for c in have] == [c.seq for c in want] == list(range(len(want))), sid
        for a, b in zip(have, want):
            assert a.t0_s == b.t0_s, (sid, a.seq)
            assert a.info.stream_id == b.info.stream_id == sid
            assert a.data.dtype == b.data.dtype and a.data.shape == b.data.shape, (sid, a.seq)
            np.testing.assert_array_equal(a.data, b.data, err_msg=f"{sid} seq {a.seq}")


def test_worker_moves_when_its_node_is_removed(cluster, tmp_path: Path) -> None:
    import ray

    settings = make_settings(tmp_path, max_restarts=-1)
    devices = [Synthetic(f"dev-{i}", n_channels=N_CHANNELS, sfreq=SFREQ, chunk_size=CHUNK, seed=i)
               for i in range(N_DEVICES)]
    handle = Engine(settings).start(build("multinode-failover", devices))
    timings: dict[str, float] = {}
    try:
        time.sleep(3.0)
        groups = handle.group_status()
        # never remove the head, the driver's node (cluster_utils refuses) or the controller's node
        # (the controller is not restartable: losing it ends the pipeline)
        controller_node = ray.get(handle.controller.__ray_call__.remote(
            lambda self: ray.get_runtime_context().get_node_id()))
        protected = {cluster.head_node.node_id, ray.get_runtime_context().get_node_id(), controller_node}
        movable = [g for g, st in groups.items() if st["node_id"] not in protected]
        assert movable, f"no worker on a node other than head/driver/controller {protected}: {groups}"
        victim = movable[0]
        victim_node = groups[victim]["node_id"]
        moved_streams = groups[victim]["streams"]
        before = handle.metrics()["streams"]
        assert all(before[s]["chunks"] > 0 for s in moved_streams), before

        removed_at = time.monotonic()
        cluster.remove_node(node_of(cluster, victim_node), allow_graceful=False)

        # back on another node within ~30 s
        actor = handle.groups[victim]
        deadline = removed_at + 30.0
        back = None
        while time.monotonic() < deadline:
            try:
                st = ray.get(actor.status.remote(), timeout=5.0)
            except (ray.exceptions.RayError, TimeoutError):
                time.sleep(0.5)
                continue
            if st["node_id"] != victim_node and st["alive"]:
                back = st
                break
            time.sleep(0.5)
        assert back is not None, f"worker {victim} not back on another node within 30 s"
        timings["restart_s"] = time.monotonic() - removed_at
        assert back["restarted"] is True and back["error"] is None
        assert sorted(back["streams"]) == sorted(moved_streams)

        # it keeps delivering
        resumed = handle.metrics()["streams"]
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline:
            now = handle.metrics()["streams"]
            if all(now[s]["chunks"] >= resumed[s]["chunks"] + 20 for s in moved_streams):
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"streams {moved_streams} stopped delivering after the restart: {resumed} -> {now}")
        timings["delivering_s"] = time.monotonic() - removed_at

        groups = handle.group_status()
        assert groups[victim]["node_id"] != victim_node
        assert all(g["alive"] and g["error"] is None for g in groups.values()), groups
        alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        assert victim_node not in alive and {g["node_id"] for g in groups.values()} <= alive
    finally:
        status = handle.stop()
        got = {sid: handle.call_sink("mem", "chunks", sid) for sid in stream_ids()}
        duplicates = handle.call_sink("mem", "stats")["duplicates_dropped"]
        all_events = handle.events()
        handle.destroy()
    events = {f"dev-{i}": [e for e in all_events if e.stream_id == f"dev-{i}"] for i in range(N_DEVICES)}
    print(f"failover timings: {timings}; moved {moved_streams}: "
          + ", ".join(f"{s} {len(got[s])} chunks, events {sorted(e.label for e in events[s])}" for s in moved_streams))
    assert all(s["error"] is None for s in status["sinks"].values()), status["sinks"]
    assert duplicates == 0, f"{duplicates} chunks were delivered twice"
    for sid in stream_ids():
        seqs = [c.seq for c in got[sid]]
        assert len(seqs) == len(set(seqs)) and seqs == sorted(seqs), sid
        raw_id = sid.split("/")[0]
        if "/" not in sid and not any(e.label == "drop" for e in events[raw_id]):
            assert seqs == list(range(len(seqs))), f"{sid}: seq holes without a drop event"
    for sid in moved_streams:
        labels = {e.label for e in events[sid]}
        assert labels <= {"gap", "drop", "disconnect", "reconnect"}, labels
        # the restarted device starts a fresh clock: the missed time is a recorded gap, never silent
        chunks = got[sid]
        t_jumps = [b.seq for a, b in zip(chunks, chunks[1:]) if abs(b.t0_s - a.t_end_s) > 1.5 / SFREQ]
        if t_jumps:
            assert "gap" in labels, f"{sid}: time jumps at seqs {t_jumps} but no 'gap' event"


def test_device_worker_is_pinned_to_the_node_with_its_hardware(cluster, tmp_path: Path) -> None:
    """A device declaring ``ray_resources`` gets a dedicated worker on the node offering them."""
    import ray

    node = cluster.add_node(num_cpus=1, include_dashboard=False, resources={"eeg-dongle-1": 1},
                            object_store_memory=200 * 1024**2)
    try:
        cluster.wait_for_nodes()
        dongle = Synthetic("dongle", n_channels=N_CHANNELS, sfreq=SFREQ, chunk_size=CHUNK, seed=9)
        dongle.ray_resources = {"eeg-dongle-1": 1}
        others = [Synthetic(f"free-{i}", n_channels=N_CHANNELS, sfreq=SFREQ, chunk_size=CHUNK, seed=i)
                  for i in range(2)]
        p = Pipeline("pinned")
        p.source("eeg", [dongle, *others]).to("mem", MemorySink())
        handle = Engine(make_settings(tmp_path)).start(p.build())
        try:
            status = handle.group_status()
            where = {s: g["node_id"] for g in status.values() for s in g["streams"]}
            assert where["dongle"] == node.node_id
            assert len([g for g in status.values() if g["streams"] == ["dongle"]]) == 1  # its own worker
            time.sleep(1.0)
            assert handle.metrics()["streams"].get("dongle", {}).get("chunks", 0) > 0 or \
                len(handle.call_sink("mem", "chunks", "dongle")) > 0
        finally:
            handle.stop()
            handle.destroy()
    finally:
        cluster.remove_node(node)
        del ray


def merge_plan(name: str, muse_xdf: Path, paths: list[Path]) -> LogicalPlan:
    """The Muse XDF's four streams merged onto a 256 Hz grid, beside two file devices that spread out."""
    p = Pipeline(name)
    muse = [p.source(f"muse{i}", d) for i, d in enumerate(xdf_devices(muse_xdf, chunk_size=32))]
    others = p.source("others", [FilePlayback(path, stream_id=f"dev-{i}", chunk_size=CHUNK, realtime=False)
                                 for i, path in enumerate(paths[:2])])
    p.merge("aligned", sync.align(256.0, prefix=True), *muse).to("mem", MemorySink())
    others.to("mem")
    return p.build()


def test_merge_on_a_cluster_equals_single_process(cluster, tmp_path: Path, muse_xdf: Path) -> None:
    paths = write_recordings(tmp_path, seconds=5.0)
    expected = run_local(merge_plan("merge-local", muse_xdf, paths))
    handle = Engine(make_settings(tmp_path)).start(merge_plan("merge-cluster", muse_xdf, paths), mode="batch")
    try:
        groups = handle.group_status()
        (home,) = [g for g in groups.values() if "Muse-EEG" in g["streams"]]
        assert sorted(home["streams"]) == ["Muse-ACC", "Muse-EEG", "Muse-GYRO", "Muse-PPG"], groups
        assert handle.wait(120.0), handle.status()
        got = handle.call_sink("mem", "chunks", "aligned")
    finally:
        handle.stop()
        handle.destroy()
    want = expected.call_sink("mem", "chunks", "aligned")
    # one output chunk per tick: the chunking follows the ticks, the grid and the values do not
    assert len(want) > 10 and [c.seq for c in got] == list(range(len(got)))
    for chunks in (got, want):
        assert all(b.meta["grid_index"] == a.meta["grid_index"] + a.n_samples for a, b in zip(chunks, chunks[1:]))
    assert got[0].t0_s == want[0].t0_s and got[0].channels == want[0].channels
    np.testing.assert_array_equal(np.concatenate([c.data for c in got], axis=1),
                                  np.concatenate([c.data for c in want], axis=1))
