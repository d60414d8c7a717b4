"""Storage faults in a running pipeline (Engine on local Ray): nothing lost, nothing duplicated, bounded buffers.

- Redis restarted mid-stream (a private ``redis-server``): the hot tier is a cache, what it
  held is gone, but what was buffered during the outage arrives, once; a tiny buffer drops
  its oldest chunks and counts them.
- PostgreSQL connections killed (``pg_terminate_backend``): every chunk lands once.
- S3 cut and restored (moto behind a TCP proxy) under an ``s3://`` Iceberg warehouse, with a
  small buffer: the sink refuses batches when full (counted), the controller keeps them, and
  everything is committed once after the outage.
- The device-group worker killed mid-run, and chunks re-sent by hand: every tier holds each
  seq once.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import ray

from neuraflow import Pipeline, sinks
from neuraflow.runtime.executor import Engine
from neuraflow.sinks import Iceberg, RedisStream
from neuraflow.storage import IcebergTier

from .conftest import make_settings, wait_for
from .redis_server import OwnRedis, own_redis  # noqa: F401 - own_redis is a fixture
from .s3_server import s3_server  # noqa: F401 - the fixture
from .test_storage_e2e import (
    PG_DSN, Stores, assert_device_samples, devices, seq_counts, stores, three_tier_plan,
)  # noqa: F401 - stores is a fixture  # fmt: skip

pytestmark = [pytest.mark.ray, pytest.mark.redis, pytest.mark.postgres]


class Sampler:
    """Polls ``handle.call_sink(name, "stats")`` in a thread; keeps the largest ``buffered`` seen."""

    def __init__(self, handle, names: list[str]) -> None:
        self.handle, self.names = handle, names
        self.max_buffered = dict.fromkeys(names, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for name in self.names:
                try:
                    buffered = self.handle.call_sink(name, "stats")["buffered"]
                except ray.exceptions.RayError:
                    continue
                self.max_buffered[name] = max(self.max_buffered[name], buffered)
            self._stop.wait(0.1)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _plan(name: str, devs, **named_sinks):
    p = Pipeline(name)
    eeg = p.source("eeg", devs)
    for sink_name, sink in named_sinks.items():
        eeg.to(sink_name, sink)
    eeg.to("ref", sinks.MemorySink())
    return p.build()


# ----------------------------------------------------------------------------------------
def test_redis_restarted_mid_stream(ray_local, tmp_path: Path, own_redis: OwnRedis) -> None:
    own_redis.start()
    tag = f"redis{uuid.uuid4().hex[:6]}"
    (dev,) = devices(1, tag)
    sid = dev.info.stream_id
    hot = RedisStream(own_redis.url, key_prefix="hot:", window_s=3600.0, flush_timeout_s=0.2)
    tiny = RedisStream(own_redis.url, key_prefix="tiny:", window_s=3600.0, flush_timeout_s=0.2,
                       max_buffer_chunks=10, on_full="drop_oldest")  # fmt: skip
    handle = Engine(make_settings(tmp_path)).start(_plan(tag, [dev], hot=hot, tiny=tiny))
    try:
        wait_for(lambda: len(handle.call_sink("ref", "chunks", sid)) >= 20, 30, "20 chunks")
        with Sampler(handle, ["hot", "tiny"]) as outage:
            own_redis.kill()
            killed_s = time.time()
            time.sleep(4.0)  # ~40 chunks: the tiny buffer (10) overflows
            during = {name: handle.call_sink(name, "stats") for name in ("hot", "tiny")}
        own_redis.start()
        restarted_s = time.time()
        time.sleep(3.0)
    finally:
        handle.stop()
        ref = handle.call_sink("ref", "chunks", sid)
        stats = {name: handle.call_sink(name, "stats") for name in ("hot", "tiny")}
        handle.destroy()
    n = len(ref)
    assert [c.seq for c in ref] == list(range(n)), "the pipeline must keep running through the outage"
    assert ref[-1].t0_s > restarted_s + 1.0
    # Bounded buffers during the outage, the policy applied and counted.
    assert during["hot"]["connection_errors"] > 0 and during["hot"]["buffered"] > 20
    assert 0 < outage.max_buffered["tiny"] <= 10
    assert stats["tiny"]["dropped_on_full"] >= 20 and stats["hot"]["dropped_on_full"] == 0
    assert stats["hot"]["reconnects"] >= 1 and stats["hot"]["buffered"] == 0

    after_kill = {c.seq for c in ref if c.t0_s >= killed_s}  # sent to a dead server: buffered
    stored = RedisStream(own_redis.url, key_prefix="hot:").read(sid)
    seqs = [c.seq for c in stored]
    assert len(seqs) == len(set(seqs)), "a chunk is stored twice in Redis"
    assert after_kill <= set(seqs), f"chunks buffered during the outage were lost: {sorted(after_kill - set(seqs))[:10]}"
    assert seqs == list(range(seqs[0], n)), "the hot window after the restart must be contiguous up to the end"
    assert seqs[0] > 0, "what Redis held before the restart is gone (no persistence)"
    assert_device_samples(stored, dev)
    small = [c.seq for c in RedisStream(own_redis.url, key_prefix="tiny:").read(sid)]
    assert len(small) == len(set(small)) and set(small) <= set(range(n))
    assert len(after_kill - set(small)) <= stats["tiny"]["dropped_on_full"]


def test_postgres_connections_killed_mid_stream(ray_local, tmp_path: Path, stores: Stores) -> None:
    import psycopg

    tag = f"pg{uuid.uuid4().hex[:6]}"
    devs = devices(2, tag)
    warm = stores.warm(flush_every_s=0.2)
    handle = Engine(make_settings(tmp_path)).start(_plan(tag, devs, warm=warm))
    killed = 0
    try:
        wait_for(lambda: handle.call_sink("warm", "stats")["chunks_written"] > 10, 30, "the first rows")
        with psycopg.connect(PG_DSN, autocommit=True) as admin:
            for _ in range(4):
                time.sleep(1.0)
                killed += admin.execute("select count(pg_terminate_backend(pid)) from pg_stat_activity "
                                        "where application_name = %s", [stores.app]).fetchone()[0]  # fmt: skip
        first = handle.call_sink("ref", "chunks", devs[0].info.stream_id)[:20]
        handle.call_sink("warm", "write_batch", first)  # a retried write (timeout, restarted actor)
        time.sleep(2.0)
    finally:
        handle.stop()
        ref = {d.info.stream_id: handle.call_sink("ref", "chunks", d.info.stream_id) for d in devs}
        stats = handle.call_sink("warm", "stats")
        handle.destroy()
    assert killed >= 2, "no backend of the sink was killed"
    assert stats["reconnects"] >= 1 and stats["buffered"] == 0
    assert stats["duplicates_dropped"] >= 20
    _, warm_tier, _ = stores.tiers()
    for dev in devs:
        sid = dev.info.stream_id
        seqs = [c.seq for c in ref[sid]]
        assert seqs == list(range(len(seqs))) and len(seqs) >= 50
        counts = seq_counts(warm_tier, sid)
        assert {s: k for s, k in counts.items() if k > 1} == {}, "a chunk is stored twice in PostgreSQL"
        assert set(counts) == set(seqs), f"missing {sorted(set(seqs) - set(counts))[:10]}"
        assert_device_samples(warm_tier.read(sid), dev)


@pytest.mark.s3
def test_s3_outage_buffers_refuses_when_full_and_commits_once_after(ray_local, tmp_path: Path, s3_server) -> None:
    tag = f"s3{uuid.uuid4().hex[:6]}"
    (dev,) = devices(1, tag)
    sid = dev.info.stream_id
    where = {"catalog_uri": f"sqlite:///{tmp_path}/catalog.db", "warehouse": f"s3://{s3_server.bucket}/wh",
             "catalog_properties": s3_server.catalog_properties}  # fmt: skip
    cold = Iceberg("nf.samples", flush_every_s=0.5, max_buffer_chunks=15, **where)
    handle = Engine(make_settings(tmp_path)).start(_plan(tag, [dev], cold=cold))
    try:
        wait_for(lambda: handle.call_sink("cold", "stats")["commits"] >= 2, 30, "two commits")
        with Sampler(handle, ["cold"]) as outage:
            s3_server.cut()
            # 10 chunks/s: the sink's 15-chunk buffer fills, it refuses batches, the runtime keeps them
            # (the first failed commit blocks for the SDK's retries, so wait for the state, not a time)
            wait_for(lambda: handle.status()["sinks"]["cold"]["pending_chunks"] > 0, 30, "refused batches")
            during = handle.status()["sinks"]["cold"]
            s3_server.restore()
        restored_commits = handle.call_sink("cold", "stats")["commits"]
        wait_for(lambda: handle.call_sink("cold", "stats")["commits"] >= restored_commits + 2, 30,
                 "commits after the outage")  # fmt: skip
        time.sleep(1.0)
    finally:
        handle.stop()
        ref = handle.call_sink("ref", "chunks", sid)
        stats = handle.call_sink("cold", "stats")
        status = handle.status()["sinks"]["cold"]
        dropped = {seq for e in handle.events(sid) if e.label == "drop" for seq in e.meta["seqs"]}
        handle.destroy()
    seqs = [c.seq for c in ref]  # what the controller accepted (a stalled worker drops from its ring)
    assert len(seqs) >= 60 and seqs[-1] > seqs[len(seqs) // 2] + 20, "the pipeline must keep running"
    assert during["failures"] > 0 and during["pending_chunks"] > 0, during  # refused when full, kept by the runtime
    assert 0 < outage.max_buffered["cold"] <= 15
    assert status["pending_chunks"] == 0 and stats["buffered"] == 0
    stored = Iceberg("nf.samples", **where)
    counts = seq_counts(IcebergTier(stored), sid)
    assert {s: k for s, k in counts.items() if k > 1} == {}, "a chunk is committed twice"
    assert set(counts) == set(seqs), f"missing {sorted(set(seqs) - set(counts))[:10]}"
    assert_device_samples(stored.read_chunks(sid), dev)
    # Nothing is lost silently: a seq the controller never accepted was dropped from the worker's
    # ring under its drop_oldest policy, counted and named in a "drop" event. (The Iceberg sink
    # backs off after a failed commit, so on an idle machine no seq is dropped at all.)
    missing = set(range(seqs[-1] + 1)) - set(seqs)
    assert missing <= dropped, f"seqs lost without a drop event: {sorted(missing - dropped)[:10]}"


def test_killed_worker_and_re_sent_chunks_leave_each_seq_once_in_every_tier(
    ray_local, tmp_path: Path, stores: Stores
) -> None:
    tag = f"kill{uuid.uuid4().hex[:6]}"
    devs = devices(2, tag)
    settings = make_settings(tmp_path, max_restarts=-1, devices_per_group=2)
    handle = Engine(settings).start(three_tier_plan(tag, devs, stores))
    try:
        wait_for(lambda: all(len(handle.call_sink("ref", "chunks", d.info.stream_id)) >= 30 for d in devs), 30,
                 "30 chunks per device")  # fmt: skip
        ((_, worker),) = handle.groups.items()
        pid = ray.get(worker.pid.remote())
        ray.kill(worker, no_restart=False)
        wait_for(lambda: _restarted(worker, pid), 60, "the worker to restart")
        again = handle.call_sink("ref", "chunks", devs[0].info.stream_id)[5:25]
        for name in ("hot", "warm", "cold"):  # a batch re-sent after a timeout: stored once
            handle.call_sink(name, "write_batch", again)
        time.sleep(3.0)
    finally:
        handle.stop()
        ref = {d.info.stream_id: handle.call_sink("ref", "chunks", d.info.stream_id) for d in devs}
        handle.destroy()
    tiers = stores.tiers()
    for dev in devs:
        sid = dev.info.stream_id
        seqs = [c.seq for c in ref[sid]]
        assert seqs == list(range(len(seqs))) and len(seqs) >= 50
        for tier in tiers:
            counts = seq_counts(tier, sid)
            assert {s: k for s, k in counts.items() if k > 1} == {}, f"{tier.name}: a seq is stored twice"
            assert set(counts) == set(seqs), f"{tier.name}: missing {sorted(set(seqs) - set(counts))[:10]}"
            assert_device_samples(tier.read(sid), dev)
    tiers[0].sink.close()


def _restarted(worker, pid_before: int) -> bool:
    try:
        status = ray.get(worker.status.remote(), timeout=5)
        return status["alive"] and status["restarted"] and ray.get(worker.pid.remote(), timeout=5) != pid_before
    except ray.exceptions.RayError:
        return False
