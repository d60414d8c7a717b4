"""The Sink contract, checked against every sink (river's ``yield_checks`` idea).

Delivery is at-least-once, so every sink must keep one copy per ``(stream_id, seq)``,
accept batches in any order, empty or huge, and give back exactly what it got.
A new sink joins by adding a :class:`Harness` to ``HARNESSES``. No Ray here.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from neuraflow.chunk import Chunk, Event, StreamInfo
from neuraflow.sinks import HotBuffer, Iceberg, MemorySink, RedisStream, Sink, Timescale
from neuraflow.testing import assert_chunks_identical, random_stream

T0 = 1_700_000_000.0


@dataclass(frozen=True)
class Harness:
    """How to build one sink and read back what it stored (after ``flush``)."""

    name: str
    make: Callable[[Path], Sink]
    chunks: Callable[[Sink, str], list[Chunk]]
    events: Callable[[Sink], list[Event]]
    cleanup: Callable[[Sink], None] = lambda sink: None


def _hot_chunks(sink: HotBuffer, stream_id: str) -> list[Chunk]:
    try:
        return sink.chunks(stream_id)
    except KeyError:
        return []


def _iceberg(tmp: Path) -> Iceberg:
    return Iceberg("contract.samples", catalog_uri=f"sqlite:///{tmp}/catalog.db", warehouse=str(tmp / "wh"), flush_every_s=1e9)


def _timescale(tmp: Path) -> Timescale:
    # retention far beyond T0 (2023): the contract streams must not be expired at open
    return Timescale(schema=f"nf_contract_{uuid.uuid4().hex[:10]}", retention_s=100 * 365 * 86_400,
                     flush_every_s=1e9, application_name="neuraflow-contract")


def _drop_schema(sink: Timescale) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(sink.url)
    with engine.begin() as conn:
        conn.execute(sa.text(f'drop schema if exists "{sink.schema}" cascade'))
    engine.dispose()


def _redis(tmp: Path) -> RedisStream:
    # a window long enough for the huge batch (640 s of device time)
    return RedisStream(key_prefix=f"nftest:{uuid.uuid4().hex[:12]}:", window_s=3600.0)


def _drop_keys(sink: RedisStream) -> None:
    import redis

    client = redis.Redis.from_url(sink.url)
    keys = list(client.scan_iter(match=f"{sink.key_prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


HARNESSES = [
    Harness("MemorySink", lambda tmp: MemorySink(), lambda s, sid: s.chunks(sid), lambda s: s.events()),
    # A window long enough for every test stream (5,000 chunks of 32 samples at 250 Hz = 640 s).
    Harness("HotBuffer", lambda tmp: HotBuffer(seconds=3600.0), _hot_chunks, lambda s: s.events()),
    Harness("Iceberg", _iceberg, lambda s, sid: s.read_chunks(sid), lambda s: s.read_events()),
    Harness("Timescale", _timescale, lambda s, sid: s.read(sid), lambda s: s.read_events(), _drop_schema),
    Harness("RedisStream", _redis, lambda s, sid: s.read(sid), lambda s: s.events(), _drop_keys),
]


@pytest.fixture(params=HARNESSES, ids=lambda h: h.name)
def harness(request):
    return request.param


@pytest.fixture
def sink(harness, tmp_path):
    sink = harness.make(tmp_path)
    sink.open()
    try:
        yield sink
    finally:
        sink.close()
        harness.cleanup(sink)


def stored(harness: Harness, sink: Sink, stream_id: str) -> list[Chunk]:
    sink.flush()
    return harness.chunks(sink, stream_id)


# --------------------------------------------------------------------------------
def test_follows_the_protocol(sink):
    assert isinstance(sink, Sink)


def test_duplicate_writes_keep_one_copy(harness, sink):
    chunks = random_stream("eeg", 10)
    sink.write_batch(chunks)
    sink.write_batch(chunks)  # a retried call
    sink.flush()
    sink.write_batch(chunks[3:7] + chunks[3:7])  # after a flush, and twice in one batch
    assert_chunks_identical(stored(harness, sink, "eeg"), chunks)


def test_out_of_order_batches(harness, sink):
    chunks = random_stream("eeg", 12)
    for batch in ([6, 7, 8], [0, 1, 2], [9, 10, 11, 1], [5, 3, 4]):
        sink.write_batch([chunks[i] for i in batch])
    assert_chunks_identical(stored(harness, sink, "eeg"), chunks)


def test_empty_batch(harness, sink):
    sink.write_batch([])
    sink.write_events([])
    assert stored(harness, sink, "eeg") == []
    assert harness.events(sink) == []


def test_huge_batch(harness, sink):
    chunks = random_stream("eeg", 5000, n_channels=64, size=32)
    sink.write_batch(chunks)
    assert_chunks_identical(stored(harness, sink, "eeg"), chunks)


def test_mixed_streams_in_one_batch(harness, sink):
    a, b = random_stream("a", 6, seed=1), random_stream("b", 6, n_channels=2, seed=2)
    sink.write_batch([c for pair in zip(a, b) for c in pair])
    assert_chunks_identical(stored(harness, sink, "a"), a)
    assert_chunks_identical(stored(harness, sink, "b"), b)


def test_metadata_round_trip(harness, sink):
    info = StreamInfo(
        "emg/features", 20.0, ("rms", "mav"), ("feature", "feature"), ("V", "V"), {"window_s": 0.5, "src": "emg"}
    )
    chunks = [
        Chunk(np.full((2, 3), 0.5), T0, info, seq=4, recv_s=T0 + 0.2, meta={"model": "v2", "n": 3}),
        Chunk(np.zeros((2, 1)), T0 + 0.15, info, seq=5),  # recv_s unknown (nan)
    ]
    sink.write_batch(chunks)
    got = stored(harness, sink, "emg/features")
    assert_chunks_identical(got, chunks)
    assert got[0].info.meta == {"window_s": 0.5, "src": "emg"} and got[0].meta == {"model": "v2", "n": 3}


def test_bit_exact_data_round_trip(harness, sink):
    info = StreamInfo("raw", 1000.0, ("x", "y", "z"))
    bits = np.random.default_rng(7).integers(0, 2**32, size=(3, 256), dtype=np.uint64).astype(np.uint32)
    data = bits.view(np.float32)  # every bit pattern: nan payloads, inf, -0.0, subnormals
    data[:, :4] = [[np.nan, np.inf, -np.inf, -0.0]] * 3
    chunks = [Chunk(data[:, i : i + 64], T0 + i / 1000.0, info, seq=i // 64) for i in range(0, 256, 64)]
    sink.write_batch(chunks)
    got = stored(harness, sink, "raw")
    assert_chunks_identical(got, chunks)
    assert np.concatenate([c.data for c in got], axis=1).view(np.uint32).tobytes() == data.view(np.uint32).tobytes()


def test_events_round_trip(harness, sink):
    events = [Event("markers", T0 + 1.0, "T1", 2.0, {"trial": 1}), Event("eeg", T0 + 2.0, "gap", "reconnect")]
    sink.write_events(events)
    sink.flush()
    got = harness.events(sink)
    assert [(e.stream_id, e.t_s, e.label, e.value, dict(e.meta)) for e in got] == [
        (e.stream_id, e.t_s, e.label, e.value, dict(e.meta)) for e in events
    ]


def test_close_flushes(harness, tmp_path):
    sink = harness.make(tmp_path)
    sink.open()
    chunks = random_stream("eeg", 3)
    sink.write_batch(chunks)
    sink.close()
    assert_chunks_identical(harness.chunks(sink, "eeg"), chunks)
