"""Tiering hot -> warm -> cold on real Redis, PostgreSQL and a local Iceberg warehouse.

Moves happen by age, deletion only after verification, a failure between write and delete
(injected, or a Ray actor killed mid-move) loses nothing and duplicates nothing.
"""

from __future__ import annotations

import time
import uuid

import numpy as np
import psycopg
import pytest

from neuraflow.chunk import Chunk, StreamInfo
from neuraflow.errors import PipelineDefinitionError
from neuraflow.sinks import Iceberg
from neuraflow.runtime.tiering import start_tiering_actor
from neuraflow.storage import (
    IcebergTier, QueryEngine, Tierer, TieringPolicy, TimescaleTier,
)  # fmt: skip

from .conftest import PG_DSN

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

NOW = float(int(time.time()))
SFREQ = 250.0


def make_stream(stream_id: str, n_chunks: int, t0: float, *, n_channels: int = 4, size: int = 250,
                seed: int = 0) -> tuple[np.ndarray, list[Chunk]]:  # fmt: skip
    info = StreamInfo(stream_id, SFREQ, tuple(f"c{i}" for i in range(n_channels)))
    data = np.random.default_rng(seed).standard_normal((n_channels, n_chunks * size)).astype(np.float32)
    chunks = [Chunk(data[:, i * size : (i + 1) * size], t0 + i * size / SFREQ, info, seq=i)
              for i in range(n_chunks)]  # fmt: skip
    return data, chunks


def warm_rows(warm: TimescaleTier, stream_id: str) -> tuple[int, int]:
    """(rows, distinct seqs) of ``stream_id`` in the warm table."""
    with psycopg.connect(PG_DSN) as conn:
        return conn.execute(f'select count(*), count(distinct seq) from {warm.sink.names.samples} '
                            'where stream_id = %s', [stream_id]).fetchone()  # fmt: skip


def cold_rows(cold: IcebergTier, stream_id: str) -> tuple[int, int]:
    rows = cold._scan(stream_id, ("seq",))  # header rows: one per stored chunk
    if rows is None:
        return 0, 0
    seqs = rows.column("seq").to_numpy()
    return len(seqs), len(np.unique(seqs))


def seqs(tier, stream_id: str) -> list[int]:
    return [c.seq for c in tier.read(stream_id)]


def test_policy_is_validated():
    with pytest.raises(PipelineDefinitionError, match="warm_s=10.0 must be > hot_s=60.0"):
        TieringPolicy(hot_s=60.0, warm_s=10.0)
    with pytest.raises(PipelineDefinitionError, match="hot_s"):
        TieringPolicy(hot_s=-1.0, warm_s=10.0)


def test_moves_by_age_and_deletes_only_after_verification(tiers):
    hot, warm, cold = tiers
    # 120 s of 1 s chunks ending now: older than 60 s -> warm, older than 90 s -> cold.
    data, chunks = make_stream("eeg-t", 120, NOW - 120.0)
    hot.write(chunks)
    hot.write(chunks[50:70])  # a retried write: stored once
    observed: list[tuple[str, str, list[int], list[int], list[int]]] = []

    def watch(phase, step, stream_id, moved):
        src, dst = (hot, warm) if step == "hot->warm" else (warm, cold)
        observed.append((phase, step, moved, seqs(src, stream_id), seqs(dst, stream_id)))

    tierer = Tierer(hot, warm, cold, TieringPolicy(hot_s=60.0, warm_s=90.0, batch_chunks=25), on_phase=watch)
    report = tierer.run_once(NOW)
    assert report.moved == {"hot->warm": 60, "warm->cold": 30} and report.failed == []
    for phase, _step, moved, in_src, in_dst in observed:
        assert set(moved) <= set(in_dst)  # the copy exists at every phase
        assert set(moved) <= set(in_src) if phase in ("written", "verified") else not set(moved) & set(in_src)
    assert seqs(hot, "eeg-t") == list(range(60, 120))
    assert seqs(warm, "eeg-t") == list(range(30, 60))
    assert seqs(cold, "eeg-t") == list(range(30))
    assert warm_rows(warm, "eeg-t") == (30, 30) and cold_rows(cold, "eeg-t") == (30, 30)
    res = QueryEngine(tiers).query("eeg-t", NOW - 120.0, NOW)
    assert res.data.view(np.uint32).tobytes() == data.view(np.uint32).tobytes()
    assert res.sources == {"iceberg": 30, "timescale": 30, "redis": 60}
    assert tierer.run_once(NOW).moved == {"hot->warm": 0, "warm->cold": 0}  # nothing left to move


def test_failed_verification_keeps_the_source(tiers):
    hot, warm, cold = tiers
    _, chunks = make_stream("eeg-v", 20, NOW - 100.0, seed=1)
    hot.write(chunks)

    class Corrupting(TimescaleTier):
        def read(self, stream_id, start_s=None, end_s=None):
            out = super().read(stream_id, start_s, end_s)
            return [c.replace(data=c.data * np.float32(-1.0)) if c.seq == 7 else c for c in out]

    bad_warm = Corrupting(warm.sink)
    report = Tierer(hot, bad_warm, cold, TieringPolicy(hot_s=10.0, warm_s=1000.0)).run_once(NOW)
    assert report.moved["hot->warm"] == 0
    assert [(step, sid) for step, sid, _ in report.failed] == [("hot->warm", "eeg-v")]
    assert "failed verification" in report.failed[0][2]
    assert seqs(hot, "eeg-v") == list(range(20))  # nothing deleted


def test_crash_between_write_and_delete_then_rerun(tiers):
    hot, warm, cold = tiers
    data, chunks = make_stream("eeg-k", 60, NOW - 100.0, seed=2)
    hot.write(chunks)
    policy = TieringPolicy(hot_s=30.0, warm_s=60.0, batch_chunks=20)

    def crash(phase, step, stream_id, moved):
        if phase == "verified" and step == "warm->cold":
            raise RuntimeError("injected crash after the cold copy, before deleting from warm")

    with pytest.raises(RuntimeError, match="injected crash"):
        Tierer(hot, warm, cold, policy, on_phase=crash).run_once(NOW)
    # hot -> warm finished (all 60 s are older than 30 s); seqs 0-19, the first warm -> cold batch
    # of the 40 chunks older than 60 s, are in both warm and cold.
    assert seqs(hot, "eeg-k") == []
    assert cold_rows(cold, "eeg-k") == (20, 20) and warm_rows(warm, "eeg-k") == (60, 60)
    mid = QueryEngine(tiers).query("eeg-k", NOW - 100.0, NOW - 40.0)
    assert mid.data.view(np.uint32).tobytes() == data.view(np.uint32).tobytes()
    assert mid.sources == {"timescale": 60}  # warm covers the span: cold (with its extra copies) is not read

    fresh_cold = IcebergTier(Iceberg(cold.sink.table, catalog_uri=cold.sink.catalog_uri,
                                     warehouse=cold.sink.warehouse, flush_every_s=1e9))  # a restarted process
    report = Tierer(hot, warm, fresh_cold, policy).run_once(NOW)
    assert report.moved == {"hot->warm": 0, "warm->cold": 40}  # the interrupted batch is redone
    assert cold_rows(cold, "eeg-k") == (40, 40)  # ... and not appended twice
    assert warm_rows(warm, "eeg-k") == (20, 20) and seqs(warm, "eeg-k") == list(range(40, 60))
    res = QueryEngine(tiers).query("eeg-k", NOW - 100.0, NOW - 40.0)
    assert res.data.view(np.uint32).tobytes() == data.view(np.uint32).tobytes()
    assert res.duplicates == 0 and res.gaps == []


@pytest.mark.ray
def test_actor_killed_mid_move_restarts_without_loss_or_duplicates(tiers, ray_local):
    hot, warm, cold = tiers
    now = time.time()
    data, chunks = make_stream("eeg-a", 80, now - 200.0, seed=3)  # 80 s ending 120 s ago: all old
    hot.write(chunks)
    name = f"nftest-tiering-{uuid.uuid4().hex[:8]}"
    policy = TieringPolicy(hot_s=60.0, warm_s=3600.0, batch_chunks=20)
    actor = start_tiering_actor(hot, warm, cold, policy, name=name, namespace="neuraflow-test", interval_s=0.2,
                                pause_after_write_s=0.5)  # fmt: skip
    try:
        deadline = time.monotonic() + 30.0
        while ray_local.get(actor.status.remote())["phase"] != "hot->warm:written":
            assert time.monotonic() < deadline, "the actor never reached a write"
            time.sleep(0.02)
        before_kill = seqs(hot, "eeg-a")
        ray_local.kill(actor, no_restart=False)  # mid-move: a batch is written to warm, not yet deleted from hot
        assert before_kill[:20] == list(range(20))
        deadline = time.monotonic() + 60.0
        while seqs(hot, "eeg-a"):
            assert time.monotonic() < deadline, f"hot still holds {seqs(hot, 'eeg-a')[:5]}..."
            time.sleep(0.2)
        while (status := ray_local.get(actor.status.remote()))["passes"] < 1:  # the restarted actor's first pass
            assert time.monotonic() < deadline, f"no pass completed after the restart: {status}"
            time.sleep(0.05)
        assert status["last_error"] is None
    finally:
        ray_local.kill(actor, no_restart=True)
    assert warm_rows(warm, "eeg-a") == (80, 80)
    res = QueryEngine(tiers).query("eeg-a", now - 200.0, now - 120.0)
    assert res.data.view(np.uint32).tobytes() == data.view(np.uint32).tobytes()
    assert res.sources == {"timescale": 80} and res.gaps == []
