"""HotBuffer and MemorySink: windowing, idempotence, query API, thread safety."""

from __future__ import annotations

import pickle
import threading

import numpy as np
import pytest

from neuraflow.chunk import Chunk, Event
from neuraflow.errors import PipelineDefinitionError
from neuraflow.sinks import HotBuffer, MemorySink, Sink
from neuraflow.testing import chunks_from_array, make_info

T0 = 1_700_000_000.0


def stream(stream_id: str, n_chunks: int, *, n_channels: int = 2, size: int = 10, sfreq: float = 100.0, seed: int = 0):
    """``n_chunks`` consecutive chunks of ``size`` samples (0.1 s each at 100 Hz)."""
    info = make_info(n_channels, sfreq, stream_id=stream_id)
    data = np.random.default_rng(seed).standard_normal((n_channels, n_chunks * size)).astype(np.float32)
    return chunks_from_array(data, info, [size] * n_chunks, t0_s=T0)


# HotBuffer ---------------------------------------------------------------------
def test_hot_buffer_is_a_sink():
    assert isinstance(HotBuffer(), Sink)
    assert isinstance(MemorySink(), Sink)


@pytest.mark.parametrize("kwargs", [{"seconds": 0}, {"seconds": -1.0}, {"seconds": float("nan")}, {"max_events": 0}])
def test_hot_buffer_rejects_bad_parameters(kwargs):
    with pytest.raises(PipelineDefinitionError, match="HotBuffer"):
        HotBuffer(**kwargs)


def test_latest_concatenates_the_last_seconds():
    chunks = stream("eeg", 30)  # 3 s
    hot = HotBuffer(seconds=10.0)
    hot.write_batch(chunks)
    out = hot.latest("eeg", 0.5)
    assert out.seq == 29 and out.t0_s == pytest.approx(chunks[25].t0_s)
    np.testing.assert_array_equal(out.data, np.concatenate([c.data for c in chunks[25:]], axis=1))
    assert out.info is chunks[-1].info
    assert out.meta["first_seq"] == 25 and out.meta["n_chunks"] == 5 and out.meta["contiguous"]
    whole = hot.latest("eeg")
    assert whole.n_samples == 300 and whole.t0_s == T0


def test_latest_with_zero_seconds_is_none_and_unknown_stream_raises():
    hot = HotBuffer()
    hot.write_batch(stream("eeg", 3))
    assert hot.latest("eeg", 0.0) is None
    with pytest.raises(KeyError, match="nope"):
        hot.latest("nope", 1.0)
    with pytest.raises(KeyError):
        hot.chunks("nope")


def test_evicts_by_device_time_so_memory_is_bounded():
    hot = HotBuffer(seconds=1.0)
    chunks = stream("eeg", 100)  # 10 s in 0.1 s chunks
    for i in range(0, 100, 7):
        hot.write_batch(chunks[i : i + 7])
    kept = hot.chunks("eeg")
    assert [c.seq for c in kept] == list(range(89, 100))  # t_end within 1 s of the newest
    assert hot.streams()[0]["n_chunks"] == 11


def test_max_chunks_per_stream_caps_a_stream():
    hot = HotBuffer(seconds=1e9, max_chunks_per_stream=5)
    hot.write_batch(stream("eeg", 20))
    assert [c.seq for c in hot.chunks("eeg")] == [15, 16, 17, 18, 19]


def test_duplicates_ignored_and_late_seqs_inserted_in_order():
    chunks = stream("eeg", 10)
    hot = HotBuffer(seconds=60.0)
    hot.write_batch(chunks[5:])
    hot.write_batch(chunks[5:8])  # a retried batch
    hot.write_batch([chunks[2], chunks[0], chunks[1], chunks[0]])  # late and out of order
    assert [c.seq for c in hot.chunks("eeg")] == [0, 1, 2, 5, 6, 7, 8, 9]
    assert hot.duplicates_dropped == 4
    assert hot.streams()[0]["last_seq"] == 9


def test_chunk_older_than_the_window_is_dropped():
    chunks = stream("eeg", 50)
    hot = HotBuffer(seconds=1.0)
    hot.write_batch(chunks[20:])
    hot.write_batch(chunks[:3])
    assert min(c.seq for c in hot.chunks("eeg")) >= 39
    assert hot.late_dropped == 3


def test_new_layout_restarts_the_stream_buffer():
    hot = HotBuffer()
    hot.write_batch(stream("eeg", 5, n_channels=2))
    wider = [c.replace(seq=c.seq + 5) for c in stream("eeg", 3, n_channels=4)]
    hot.write_batch(wider)
    assert [c.seq for c in hot.chunks("eeg")] == [5, 6, 7]
    assert hot.latest("eeg").n_channels == 4
    hot.write_batch(stream("eeg", 2, n_channels=2))  # late chunks of the old layout
    assert hot.late_dropped == 2 and len(hot.chunks("eeg")) == 3


def test_streams_describes_each_stream():
    hot = HotBuffer()
    hot.write_batch(stream("b", 3) + stream("a", 4, n_channels=3))
    rows = hot.streams()
    assert [r["stream_id"] for r in rows] == ["a", "b"]
    a = rows[0]
    assert a == {
        "stream_id": "a",
        "sfreq": 100.0,
        "channels": ["ch0", "ch1", "ch2"],
        "ch_types": ["eeg"] * 3,
        "units": ["V"] * 3,
        "last_seq": 3,
        "last_t_s": pytest.approx(T0 + 0.4),
        "n_chunks": 4,
    }


def test_events_are_bounded_and_filtered():
    hot = HotBuffer(max_events=5)
    hot.write_events([Event("markers", T0 + i, f"e{i}", float(i)) for i in range(8)])
    hot.write_events([Event("eeg", T0 + 10, "gap", 0.5, {"expected_seq": 3, "got_seq": 5})])
    assert [e.label for e in hot.events()] == ["e4", "e5", "e6", "e7", "gap"]
    assert [e.label for e in hot.events("markers", since_s=T0 + 6)] == ["e6", "e7"]
    assert hot.events("eeg")[0].meta["got_seq"] == 5
    assert hot.events("unknown") == []  # events are sparse: no KeyError


def test_concurrent_writers_and_readers():
    hot = HotBuffer(seconds=1e6)
    streams = {f"s{k}": stream(f"s{k}", 200, seed=k) for k in range(4)}
    errors: list[BaseException] = []

    def write(chunks):
        try:
            for i in range(0, len(chunks), 3):
                hot.write_batch(chunks[i : i + 3])
                hot.write_batch(chunks[max(0, i - 2) : i + 1])  # overlapping retries
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assert below
            errors.append(exc)

    def read():
        try:
            for _ in range(200):
                for row in hot.streams():
                    out = hot.latest(row["stream_id"], 0.5)
                    assert out is None or out.n_channels == 2
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(c,)) for c in streams.values()] + [threading.Thread(target=read)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for sid, chunks in streams.items():
        assert [c.seq for c in hot.chunks(sid)] == list(range(200))


def test_hot_buffer_pickles_with_content():
    hot = HotBuffer(seconds=5.0)
    hot.write_batch(stream("eeg", 3))
    clone = pickle.loads(pickle.dumps(hot))
    clone.write_batch(stream("eeg", 4))
    assert [c.seq for c in clone.chunks("eeg")] == [0, 1, 2, 3]


# MemorySink ---------------------------------------------------------------------
def test_memory_sink_dedupes_orders_and_records_calls():
    sink = MemorySink()
    sink.open()
    a, b = stream("a", 6), stream("b", 2)
    sink.write_batch(a[3:] + b)
    sink.write_batch(a[:4])
    sink.write_events([Event("a", T0, "T1", 1.0), Event("b", T0 + 1, "T2", "x")])
    sink.close()
    assert [c.seq for c in sink.chunks("a")] == list(range(6))
    assert sink.chunks("a")[3] is a[3]
    assert sink.stream_ids() == ["a", "b"] and sink.chunks("zzz") == []
    assert sink.duplicates_dropped == 1
    assert (sink.batches, sink.flushes, sink.opened, sink.closed) == (2, 1, True, True)
    assert [e.label for e in sink.events()] == ["T1", "T2"]
    assert [e.label for e in sink.events("b")] == ["T2"]
    assert [e.label for e in sink.events(since_s=T0 + 0.5)] == ["T2"]


def test_memory_sink_pickles():
    sink = MemorySink()
    sink.write_batch(stream("a", 2))
    clone = pickle.loads(pickle.dumps(sink))
    clone.write_batch(stream("a", 3))
    assert [c.seq for c in clone.chunks("a")] == [0, 1, 2]


def test_empty_chunk_is_stored():
    info = make_info(3, 10.0, stream_id="e")
    hot, mem = HotBuffer(), MemorySink()
    empty = Chunk(np.zeros((3, 0), np.float32), T0, info, seq=0)
    for sink in (hot, mem):
        sink.write_batch([empty])
        assert sink.chunks("e")[0].n_samples == 0
