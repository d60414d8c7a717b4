"""RedisStream, the hot tier, against real Redis servers.

Most tests use the shared Redis on 127.0.0.1:6379 under a unique key prefix (deleted
afterwards; never FLUSHDB there). The fault tests start their own ``redis-server`` on a
free port, kill it and restart it.
"""

from __future__ import annotations

import pickle
import threading
import time
import uuid

import numpy as np
import pytest

from neuraflow.chunk import Chunk, Event, StreamInfo
from neuraflow.errors import PipelineDefinitionError, SinkError
from neuraflow.sinks import RedisStream, Sink
from neuraflow.testing import assert_chunks_identical, random_stream

from .redis_server import delete_prefix, free_port, own_redis  # noqa: F401 - own_redis is a fixture

pytestmark = pytest.mark.redis

SHARED_URL = "redis://127.0.0.1:6379/0"
T0 = 1_700_000_000.0


@pytest.fixture(scope="module")
def shared_redis() -> str:
    import redis

    try:
        redis.Redis.from_url(SHARED_URL, socket_connect_timeout=1.0).ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis is not running on 127.0.0.1:6379 ({exc}); see ../shared/INFRA.md for the start command.")
    return SHARED_URL


@pytest.fixture
def prefix(shared_redis):
    name = f"nftest:{uuid.uuid4().hex[:12]}:"
    yield name
    delete_prefix(shared_redis, name)


@pytest.fixture
def sink(shared_redis, prefix):
    sink = RedisStream(shared_redis, key_prefix=prefix)
    sink.open()
    yield sink
    sink.close()


# --------------------------------------------------------------------------------
def test_follows_the_protocol_and_pickles(sink):
    assert isinstance(sink, Sink)
    clone = pickle.loads(pickle.dumps(sink))
    assert (clone.url, clone.key_prefix, clone.window_s) == (sink.url, sink.key_prefix, sink.window_s)
    assert clone.stats()["written"] == 0


def test_bad_parameters():
    with pytest.raises(PipelineDefinitionError, match="Did you mean 'raise'"):
        RedisStream(on_full="rase")
    with pytest.raises(PipelineDefinitionError, match="window_s"):
        RedisStream(window_s=0)
    with pytest.raises(SinkError, match="Redis URL"):
        RedisStream("127.0.0.1:6379")


def test_open_fails_readably_when_redis_is_down():
    with pytest.raises(SinkError, match="cannot reach Redis"):
        RedisStream(f"redis://127.0.0.1:{free_port()}/0").open()


def test_bit_exact_round_trip(sink):
    info = StreamInfo("raw", 1000.0, ("x", "y", "z"))
    bits = np.random.default_rng(7).integers(0, 2**32, size=(3, 256), dtype=np.uint64).astype(np.uint32)
    data = bits.view(np.float32)  # every bit pattern: nan payloads, inf, -0.0, subnormals
    data[:, :4] = [[np.nan, np.inf, -np.inf, -0.0]] * 3
    chunks = [Chunk(data[:, i : i + 64], T0 + i / 1000.0, info, seq=i // 64, recv_s=T0 + 0.123456789)
              for i in range(0, 256, 64)]  # fmt: skip
    sink.write_batch(chunks)
    sink.flush()
    got = sink.read("raw")
    assert_chunks_identical(got, chunks)
    assert np.concatenate([c.data for c in got], axis=1).view(np.uint32).tobytes() == data.view(np.uint32).tobytes()


def test_duplicates_dropped_also_across_sink_instances(sink, shared_redis, prefix):
    chunks = random_stream("eeg", 10)
    sink.write_batch(chunks)
    sink.write_batch(chunks)  # a retried call
    sink.flush()
    sink.write_batch(chunks[3:7] + chunks[3:7])  # after a flush, and twice in one batch
    sink.flush()
    assert sink.stats()["duplicates_dropped"] == 18 and sink.stats()["written"] == 10
    other = RedisStream(shared_redis, key_prefix=prefix)  # a restarted actor: dedup lives in Redis
    other.write_batch(chunks[:5])
    other.close()
    assert other.stats()["duplicates_dropped"] == 5 and other.stats()["written"] == 0
    assert_chunks_identical(sink.read("eeg"), chunks)


def test_out_of_order_batches(sink):
    chunks = random_stream("eeg", 12)
    for batch in ([6, 7, 8], [0, 1, 2], [9, 10, 11, 1], [5, 3, 4]):
        sink.write_batch([chunks[i] for i in batch])
    sink.flush()
    assert_chunks_identical(sink.read("eeg"), chunks)
    sink.write_batch(chunks[::-1])  # late chunks are found again as duplicates
    sink.flush()
    assert_chunks_identical(sink.read("eeg"), chunks)
    stats = sink.stats()
    assert stats["late_written"] == 6 and stats["duplicates_dropped"] == 13
    # Range reads by device time see the late chunks too (they sit at a later id).
    assert [c.seq for c in sink.read("eeg", chunks[2].t0_s, chunks[4].t0_s)] == [2, 3, 4]
    assert [c.seq for c in sink.read("eeg", start_s=chunks[10].t0_s)] == [10, 11]
    assert [c.seq for c in sink.read("eeg", end_s=chunks[1].t0_s)] == [0, 1]


def test_empty_batch(sink):
    sink.write_batch([])
    sink.write_events([])
    sink.flush()
    assert sink.read("eeg") == [] and sink.events() == [] and sink.streams() == []
    with pytest.raises(KeyError, match="eeg"):
        sink.latest("eeg", 1.0)


def test_huge_batch_is_pipelined(shared_redis, prefix):
    sink = RedisStream(shared_redis, key_prefix=prefix, window_s=3600.0)  # 5000 chunks span 640 s
    chunks = random_stream("eeg", 5000, n_channels=64, size=32)
    start = time.perf_counter()
    sink.write_batch(chunks)
    sink.flush()
    elapsed = time.perf_counter() - start
    assert_chunks_identical(sink.read("eeg"), chunks)
    assert sink.stats()["written"] == 5000
    mb = 5000 * 64 * 32 * 4 / 1e6
    print(f"RedisStream: 5000 chunks of 64x32 float32 in {elapsed:.3f} s = {5000 / elapsed:,.0f} chunks/s, "
          f"{mb / elapsed:,.0f} MB/s")  # fmt: skip


def test_mixed_streams_in_one_batch(sink):
    a, b = random_stream("a", 6, seed=1), random_stream("b", 6, n_channels=2, seed=2)
    sink.write_batch([c for pair in zip(a, b) for c in pair])
    sink.flush()
    assert_chunks_identical(sink.read("a"), a)
    assert_chunks_identical(sink.read("b"), b)
    assert sink.streams() == ["a", "b"]


def test_metadata_round_trip_and_layout_change(sink):
    info = StreamInfo(
        "emg/features", 20.0, ("rms", "mav"), ("feature", "feature"), ("V", "V"), {"window_s": 0.5, "src": "emg"}
    )
    chunks = [
        Chunk(np.full((2, 3), 0.5), T0, info, seq=4, recv_s=T0 + 0.2, meta={"model": "v2", "n": 3}),
        Chunk(np.zeros((2, 1)), T0 + 0.15, info, seq=5),  # recv_s unknown (nan)
    ]
    # The device reconnects with another montage: one stream, two infos.
    info2 = StreamInfo("emg/features", 40.0, ("rms", "mav", "zc"), units=("V", "V", ""))
    chunks.append(Chunk(np.ones((3, 4)), T0 + 0.3, info2, seq=6))
    sink.write_batch(chunks)
    sink.flush()
    got = sink.read("emg/features")
    assert_chunks_identical(got, chunks)
    assert got[0].info.meta == {"window_s": 0.5, "src": "emg"} and got[0].meta == {"model": "v2", "n": 3}
    assert got[2].info == info2 and got[0].info is got[1].info


def test_events_round_trip(sink):
    events = [Event("markers", T0 + 1.0, "T1", 2.0, {"trial": 1}), Event("eeg", T0 + 2.0, "gap", "reconnect")]
    sink.write_events(events)
    sink.flush()
    got = sink.events()
    assert [(e.stream_id, e.t_s, e.label, e.value, dict(e.meta)) for e in got] == [
        (e.stream_id, e.t_s, e.label, e.value, dict(e.meta)) for e in events
    ]
    assert [e.label for e in sink.events("eeg")] == ["gap"] and sink.events(since_s=T0 + 1.5)[0].label == "gap"


def test_time_window_trimming(shared_redis, prefix):
    sink = RedisStream(shared_redis, key_prefix=prefix, window_s=60.0)
    chunks = random_stream("eeg", 4688, n_channels=64, size=32)  # 4688 x 0.128 s = 600 s of device time
    for i in range(0, len(chunks), 100):
        sink.write_batch(chunks[i : i + 100])
    sink.flush()
    got = sink.read("eeg")
    newest = chunks[-1].t0_s
    span = newest - got[0].t0_s
    # MINID ~ trims whole macro nodes; 8 KiB entries exceed stream-node-max-bytes, so a node is one entry.
    assert 60.0 - 0.2 <= span <= 60.0 + 2.0, span
    assert [c.seq for c in got] == list(range(got[0].seq, 4688))
    # A chunk already older than the window is not resurrected by a retry.
    sink.write_batch(chunks[:3])
    sink.close()
    assert sink.stats()["late_dropped"] == 3 and sink.read("eeg")[0].seq == got[0].seq


def test_latest(sink):
    chunks = random_stream("eeg", 20)  # 16 samples at 250 Hz = 64 ms each
    sink.write_batch(chunks)
    sink.flush()
    last = sink.latest("eeg", 0.2)
    assert last.meta == {"first_seq": 16, "n_chunks": 4, "contiguous": True}
    assert np.array_equal(last.data, np.concatenate([c.data for c in chunks[16:]], axis=1))
    assert last.t0_s == chunks[16].t0_s and last.seq == 19
    assert sink.latest("eeg").meta["n_chunks"] == 20


def test_subscriber_receives_new_chunks(sink, shared_redis, prefix):
    chunks = random_stream("eeg", 200)
    reader = RedisStream(shared_redis, key_prefix=prefix)
    got: list[Chunk] = []
    done = threading.Event()

    def consume():
        for chunk in reader.subscribe(["eeg"], block_ms=100, max_idle_s=5.0):
            got.append(chunk)
            if len(got) >= 5:
                break
        done.set()

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    for chunk in chunks:  # keep writing until the subscriber (which starts at "$") has seen 5
        sink.write_batch([chunk])
        if done.wait(0.02):
            break
    thread.join(10.0)
    assert len(got) == 5
    first = got[0].seq
    assert_chunks_identical(got, chunks[first : first + 5])
    # from_start replays what is stored.
    replay = reader.subscribe(["eeg"], block_ms=100, from_start=True, max_idle_s=0.5)
    assert next(replay).seq == 0
    replay.close()


def test_bounded_buffer_overflow_is_counted(own_redis):
    sink = RedisStream(own_redis.url, key_prefix="t:", max_buffer_chunks=100, flush_timeout_s=0.2)
    chunks = random_stream("eeg", 250)
    for i in range(0, 250, 10):  # Redis is down: nothing raises, the oldest are dropped
        sink.write_batch(chunks[i : i + 10])
    stats = sink.stats()
    assert stats["buffered"] == 100 and stats["dropped_on_full"] == 150 and stats["connection_errors"] >= 1
    with pytest.raises(SinkError, match="could not write"):
        sink.flush()
    assert sink.stats()["buffered"] == 100  # kept for the next try

    strict = RedisStream(own_redis.url, key_prefix="t:", max_buffer_chunks=100, on_full="raise")
    strict.write_batch(chunks[:100])
    with pytest.raises(SinkError, match="buffer full"):
        strict.write_batch(chunks[100:101])
    assert strict.stats()["dropped_on_full"] == 1

    own_redis.start()
    sink.flush()
    assert_chunks_identical(sink.read("eeg"), chunks[150:])
    assert sink.stats()["reconnects"] == 1 and sink.stats()["buffered"] == 0
    strict.write_batch(chunks[100:101])  # Redis is back: the buffer drains first, then there is room
    strict.close()
    assert strict.stats()["written"] == 101 and strict.stats()["buffered"] == 0
    sink.close()


def test_redis_restart_mid_stream(own_redis):
    own_redis.start()
    sink = RedisStream(own_redis.url, key_prefix="t:", flush_timeout_s=10.0)
    sink.open()
    chunks = random_stream("eeg", 300)
    reader = RedisStream(own_redis.url, key_prefix="t:")
    followed: list[int] = []

    def follow():  # a live subscriber rides through the restart
        for chunk in reader.subscribe(["eeg"], block_ms=100, from_start=True, max_idle_s=15.0):
            followed.append(chunk.seq)
            if chunk.seq == 299:
                break

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    for i in range(0, 100, 10):
        sink.write_batch(chunks[i : i + 10])
    assert [c.seq for c in reader.read("eeg")] == list(range(100))

    own_redis.kill()
    for i in range(100, 200, 10):  # the outage: batches are accepted and buffered, nothing raises
        sink.write_batch(chunks[i : i + 10])
    stats = sink.stats()
    assert stats["buffered"] == 100 and stats["connection_errors"] >= 1 and stats["dropped_on_full"] == 0

    own_redis.start()  # same port, empty: Redis is a cache, what it held before is gone
    for i in range(200, 300, 10):
        sink.write_batch(chunks[i : i + 10])
        sink.write_batch(chunks[i : i + 10])  # and a retry of each, for good measure
    sink.flush()
    got = reader.read("eeg")
    assert_chunks_identical(got, chunks[100:])  # the buffered outage and everything after: once each, in order
    stats = sink.stats()
    assert stats["buffered"] == 0 and stats["reconnects"] == 1 and stats["written"] == 300
    assert stats["duplicates_dropped"] == 100
    assert reader.latest("eeg", 0.1).seq == 299  # the info hash was stored again after the restart
    sink.close()
    thread.join(20.0)
    assert set(range(100, 300)) <= set(followed) and len(followed) == len(set(followed))


def test_refused_writes_are_kept_and_retried(own_redis):
    import redis

    own_redis.start()
    admin = redis.Redis(port=own_redis.port)
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", "1")  # every write is refused: "OOM command not allowed"
    sink = RedisStream(own_redis.url, key_prefix="t:", flush_timeout_s=0.2)
    chunks = random_stream("eeg", 20)
    sink.write_batch(chunks[:10])  # does not raise
    assert sink.stats()["refused"] >= 1 and "maxmemory" in sink.stats()["last_error"]
    with pytest.raises(SinkError, match="maxmemory"):
        sink.flush()
    admin.config_set("maxmemory", "0")
    sink.write_batch(chunks[10:])
    sink.flush()
    assert_chunks_identical(sink.read("eeg"), chunks)
    sink.close()
