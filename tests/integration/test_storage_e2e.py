"""Storage end to end: a pipeline on local Ray writing to Redis + PostgreSQL + Iceberg, tiering, cross-tier query.

Needs the shared Redis (127.0.0.1:6379; keys under a unique prefix, deleted afterwards) and
PostgreSQL (127.0.0.1:5432, database ``test``; a unique schema, dropped afterwards). The
Iceberg warehouse is a local directory under ``tmp_path``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from neuraflow import Pipeline, sinks
from neuraflow.chunk import Chunk
from neuraflow.devices import Synthetic
from neuraflow.runtime.executor import Engine
from neuraflow.sinks import Iceberg, RedisStream, Timescale
from neuraflow.storage import IcebergTier, QueryEngine, RedisTier, Tierer, TieringPolicy, TimescaleTier

from .conftest import make_settings, wait_for
from .redis_server import delete_prefix

pytestmark = [pytest.mark.ray, pytest.mark.redis, pytest.mark.postgres]

REDIS_URL = "redis://127.0.0.1:6379/0"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
N_CHANNELS, SFREQ, CHUNK_SIZE = 8, 250.0, 25  # 10 chunks/s per device


@dataclass
class Stores:
    """Where one test writes: a Redis key prefix, a PostgreSQL schema, an Iceberg warehouse."""

    redis_url: str
    prefix: str
    schema: str
    app: str  # application_name of the Timescale sink's connections
    catalog_uri: str
    warehouse: str
    catalog_properties: dict[str, str]

    def hot(self, **kwargs) -> RedisStream:
        kwargs.setdefault("window_s", 3600.0)  # longer than the test: only the tierer removes entries
        return RedisStream(self.redis_url, key_prefix=self.prefix, **kwargs)

    def warm(self, **kwargs) -> Timescale:
        kwargs.setdefault("flush_every_s", 0.5)
        kwargs.setdefault("application_name", self.app)
        return Timescale(PG_URL, schema=self.schema, table="samples", **kwargs)

    def cold(self, **kwargs) -> Iceberg:
        kwargs.setdefault("flush_every_s", 1.0)
        return Iceberg("nf.samples", catalog_uri=self.catalog_uri, warehouse=self.warehouse,
                       catalog_properties=self.catalog_properties, **kwargs)  # fmt: skip

    def tiers(self) -> tuple[RedisTier, TimescaleTier, IcebergTier]:
        """Fresh tier adapters on the same keys / tables (the driver's own connections)."""
        return (RedisTier(self.hot()), TimescaleTier(self.warm(application_name=f"{self.app}-tier")),
                IcebergTier(self.cold()))  # fmt: skip


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[Stores]:
    import psycopg
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1.0).ping()
        admin = psycopg.connect(PG_DSN, autocommit=True, connect_timeout=3)
    except (redis.ConnectionError, psycopg.OperationalError) as exc:
        pytest.fail(f"Redis or PostgreSQL is not running ({exc}); see ../shared/INFRA.md for the start commands.")
    tag = uuid.uuid4().hex[:10]
    made = Stores(REDIS_URL, f"nftest:{tag}:", f"nf_test_{tag}", f"nf-e2e-{tag}", f"sqlite:///{tmp_path}/catalog.db",
                  f"file://{tmp_path}/warehouse", {})  # fmt: skip
    try:
        yield made
    finally:
        delete_prefix(REDIS_URL, made.prefix)
        admin.execute(f'drop schema if exists "{made.schema}" cascade')
        admin.close()


def devices(n: int, tag: str) -> list[Synthetic]:
    return [Synthetic(f"{tag}-{i}", n_channels=N_CHANNELS, sfreq=SFREQ, chunk_size=CHUNK_SIZE, seed=10 + i)
            for i in range(n)]  # fmt: skip


def three_tier_plan(name: str, devs: list[Synthetic], stores: Stores, **sink_kwargs) -> object:
    """Raw device streams to hot, warm and cold, plus an in-memory reference copy ("ref")."""
    p = Pipeline(name)
    eeg = p.source("eeg", devs)
    eeg.to("hot", stores.hot(**sink_kwargs.get("hot", {})))
    eeg.to("warm", stores.warm(**sink_kwargs.get("warm", {})))
    eeg.to("cold", stores.cold(**sink_kwargs.get("cold", {})))
    eeg.to("ref", sinks.MemorySink())
    return p.build()


def seq_counts(tier, stream_id: str) -> dict[int, int]:
    """seq -> number of stored copies, counted in the store itself (not through a deduplicating reader)."""
    import psycopg

    if isinstance(tier, RedisTier):
        return _counts(c.seq for c in tier.sink.read(stream_id))
    if isinstance(tier, TimescaleTier):
        with psycopg.connect(PG_DSN) as conn:
            rows = conn.execute(f"select seq from {tier.sink.names.samples} where stream_id = %s", [stream_id])
            return _counts(r[0] for r in rows.fetchall())
    rows = tier._scan(stream_id, ("seq",))
    return {} if rows is None else _counts(rows.column("seq").to_pylist())


def _counts(seqs) -> dict[int, int]:
    out: dict[int, int] = {}
    for s in seqs:
        out[int(s)] = out.get(int(s), 0) + 1
    return out


def assert_device_samples(chunks: list[Chunk], dev: Synthetic) -> None:
    """Every chunk holds exactly what the device produced at its sample index."""
    for chunk in chunks:
        expected = dev.expected(chunk.meta["sample_index"], chunk.n_samples)
        assert chunk.data.view(np.uint32).tobytes() == expected.astype(np.float32).view(np.uint32).tobytes(), (
            f"{chunk.stream_id} seq {chunk.seq}: samples differ from the device's"
        )


# ----------------------------------------------------------------------------------------
def test_three_tiers_tiering_and_cross_tier_query_match_the_device(ray_local, tmp_path: Path, stores: Stores) -> None:
    """~16 s of 2 devices into all three tiers; tiering during and after; the whole period reads back exactly."""
    tag = f"e2e{uuid.uuid4().hex[:6]}"
    devs = devices(2, tag)
    settings = make_settings(tmp_path)
    policy = TieringPolicy(hot_s=3.0, warm_s=6.0, batch_chunks=40)

    def tiering_pass(now_s: float | None = None):
        # Fresh adapters per pass: a long-lived IcebergTier re-appends what the pipeline's own
        # Iceberg sink committed after the tier opened (see test_long_lived_cold_tier_...).
        return Tierer(*stores.tiers(), policy).run_once(now_s)

    handle = Engine(settings).start(three_tier_plan(tag, devs, stores))
    reports = []
    try:
        wait_for(lambda: all(len(handle.call_sink("ref", "chunks", d.info.stream_id)) > 0 for d in devs), 30,
                 "the first chunks")  # fmt: skip
        time.sleep(8.0)
        reports.append(tiering_pass())  # mid-run: moves while the sinks keep writing
        time.sleep(8.0)
        reports.append(tiering_pass())
    finally:
        status = handle.stop()
        ref = {d.info.stream_id: handle.call_sink("ref", "chunks", d.info.stream_id) for d in devs}
        handle.destroy()
    assert all(s["error"] is None for s in status["sinks"].values()), status["sinks"]
    now = time.time()
    reports.append(tiering_pass(now))  # after the stop: a fixed cut, exact expectations
    hot, warm, cold = stores.tiers()
    for report in reports:
        assert report.failed == [], report.failed
    assert reports[0].moved["hot->warm"] > 0 and reports[0].moved["warm->cold"] > 0, reports[0]
    assert sum(r.moved["warm->cold"] for r in reports) > 0

    engine = QueryEngine([hot, warm, cold])
    for dev in devs:
        sid = dev.info.stream_id
        produced = ref[sid]
        n = len(produced)
        assert n >= 120, f"{sid}: only {n} chunks in ~16 s"
        assert [c.seq for c in produced] == list(range(n))
        # Each seq once in each tier that should hold it: cold all, warm and hot the recent ones.
        end = {c.seq: c.t_end_s for c in produced}
        expect = {
            "redis": {s for s, t in end.items() if t > now - policy.hot_s},
            "timescale": {s for s, t in end.items() if t > now - policy.warm_s},
            "iceberg": set(end),
        }
        for tier in (hot, warm, cold):
            counts = seq_counts(tier, sid)
            dup = {s: k for s, k in counts.items() if k > 1}
            assert not dup, f"{sid}: {tier.name} holds seqs more than once: {sorted(dup.items())[:10]}"
            assert set(counts) == expect[tier.name], (
                f"{sid}: {tier.name} holds {len(counts)} seqs, expected {len(expect[tier.name])}; "
                f"missing {sorted(expect[tier.name] - set(counts))[:10]}, extra {sorted(set(counts) - expect[tier.name])[:10]}"
            )
        # The whole period across tiers, sample for sample.
        start_s, end_s = produced[0].t0_s, produced[-1].t_end_s
        res = engine.query(sid, start_s, end_s)
        assert res.gaps == [], res.gaps
        assert set(res.sources) == {"redis", "timescale", "iceberg"}, res.sources
        assert sum(res.sources.values()) == n
        first = produced[0].meta["sample_index"]
        assert first == 0
        expected = dev.expected(first, n * CHUNK_SIZE).astype(np.float32)
        assert res.data.shape == expected.shape
        assert res.data.view(np.uint32).tobytes() == expected.view(np.uint32).tobytes()
        np.testing.assert_allclose(np.diff(res.times_s), 1.0 / SFREQ, rtol=0, atol=1e-6)
        # One channel of it, from the cold part only.
        sub = engine.query(sid, start_s, start_s + 2.0, channels=[dev.info.channels[3]])
        assert sub.data.view(np.uint32).tobytes() == expected[3:4, : int(2.0 * SFREQ)].view(np.uint32).tobytes()
        assert_device_samples(cold.read(sid), dev)
    hot.sink.close()
    warm.sink.close()


def test_long_lived_cold_tier_does_not_re_append_what_the_pipeline_archived(stores: Stores) -> None:
    """The pipeline's Iceberg sink and a long-lived tierer's IcebergTier write the same table."""
    from neuraflow.testing import chunks_from_array

    dev = devices(1, "dup")[0]
    info = dev.info
    data = dev.expected(0, 100 * CHUNK_SIZE).astype(np.float32)
    chunks = chunks_from_array(data, info, [CHUNK_SIZE] * 100, t0_s=time.time() - 60.0)
    pipeline_sink = stores.cold()
    pipeline_sink.open()
    pipeline_sink.write_batch(chunks[:50])
    pipeline_sink.flush()
    _, warm, cold = stores.tiers()
    cold.write(chunks[:10])  # the tier's first move: its sink opens and loads seqs 0..49
    pipeline_sink.write_batch(chunks[50:])  # the pipeline archives 50..99 meanwhile
    pipeline_sink.flush()
    pipeline_sink.close()
    cold.write(chunks[10:80])  # the next move: 10..79, all archived already
    counts = seq_counts(cold, info.stream_id)
    assert set(counts) == set(range(100))
    assert {s: k for s, k in counts.items() if k > 1} == {}
