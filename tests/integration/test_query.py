"""Query across real tiers: Redis (shared server, unique prefix), PostgreSQL (unique schema), Iceberg (tmp_path).

Also the HTTP routes (FastAPI TestClient on build_app with a fake engine; data from the real
tiers) and the measured latencies of the two benchmark queries (printed).
"""

from __future__ import annotations

import io
import statistics
import time

import numpy as np
import pytest

from neuraflow.chunk import Chunk, Event, StreamInfo
from neuraflow.storage import (
    QueryEngine, QueryError, TierConsistencyError, UnknownStreamError,
)  # fmt: skip

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

T0 = float(int(time.time()) - 7200)  # recent: the warm tier drops rows older than its 30-day retention
SFREQ = 250.0


def make_stream(stream_id: str, n_chunks: int, *, n_channels: int = 8, size: int = 25, seed: int = 0,
                t0: float = T0) -> tuple[np.ndarray, list[Chunk]]:  # fmt: skip
    info = StreamInfo(stream_id, SFREQ, tuple(f"EEG{i:02d}" for i in range(n_channels)), ("eeg",) * n_channels,
                      ("uV",) * n_channels)  # fmt: skip
    data = np.random.default_rng(seed).standard_normal((n_channels, n_chunks * size)).astype(np.float32)
    chunks = [Chunk(data[:, i * size : (i + 1) * size], t0 + i * size / SFREQ, info, seq=i, recv_s=t0 + i)
              for i in range(n_chunks)]  # fmt: skip
    return data, chunks


@pytest.fixture
def spread(tiers):
    """40 s of 8 channels: cold 0-149, warm 120-299, hot 280-399 (overlaps prove dedupe)."""
    hot, warm, cold = tiers
    data, chunks = make_stream("eeg-q", 400)
    cold.write(chunks[:150])
    warm.write(chunks[120:300])
    hot.write(chunks[280:])
    return data, chunks


def test_whole_period_reads_back_sample_for_sample(tiers, spread):
    data, chunks = spread
    engine = QueryEngine(tiers)
    res = engine.query("eeg-q", T0, chunks[-1].t_end_s)
    assert res.data.dtype == np.float32 and res.data.shape == data.shape
    assert res.data.view(np.uint32).tobytes() == data.view(np.uint32).tobytes()  # bit-exact
    expected_t = np.concatenate([c.times_s for c in chunks])
    assert np.array_equal(res.times_s, expected_t)
    assert res.sources == {"iceberg": 120, "timescale": 160, "redis": 120}
    assert res.duplicates == 30 + 20 and res.gaps == []


def test_span_inside_tiers_with_channel_selection_and_mne(tiers, spread):
    data, chunks = spread
    engine = QueryEngine(tiers)
    start, end = T0 + 11.003, T0 + 31.5  # from the cold/warm overlap into the hot tier
    res = engine.query("eeg-q", start, end, channels=["EEG05", "EEG01"])
    t = T0 + np.arange(data.shape[1]) / SFREQ
    keep = np.flatnonzero((t >= start) & (t < end))
    assert np.array_equal(res.data, data[[5, 1]][:, keep])
    raw = res.to_mne()
    assert raw.ch_names == ["EEG05", "EEG01"] and raw.info["sfreq"] == SFREQ
    assert np.allclose(raw.get_data(), data[[5, 1]][:, keep].astype(np.float64) * 1e-6)  # uV -> V
    with pytest.raises(QueryError, match="Did you mean 'EEG01'"):
        engine.query("eeg-q", start, end, channels=["EGE01"])


def test_recent_span_is_served_by_the_hot_tier_alone(tiers, spread):
    _, chunks = spread
    res = QueryEngine(tiers).query("eeg-q", chunks[300].t0_s, chunks[-1].t_end_s)
    assert res.sources == {"redis": 100}


def test_gaps_and_unknown_streams(tiers):
    hot, warm, cold = tiers
    data, chunks = make_stream("eeg-g", 40, seed=3)
    warm.write(chunks[:10])
    hot.write([c for c in chunks[10:] if c.seq not in (20, 21)])
    res = QueryEngine(tiers).query("eeg-g", T0, T0 + 10)
    assert [(g.first_seq, g.last_seq) for g in res.gaps] == [(20, 21)]
    assert res.n_samples == 38 * 25
    with pytest.raises(UnknownStreamError, match="no tier holds stream 'nope'"):
        QueryEngine(tiers).query("nope", T0, T0 + 1)


def test_a_corrupted_copy_is_detected(tiers):
    hot, warm, _ = tiers
    _, chunks = make_stream("eeg-c", 20, seed=4)
    warm.write(chunks[:12])
    bad = chunks[10].replace(data=chunks[10].data * np.float32(2.0))
    hot.write([bad, *chunks[11:]])
    with pytest.raises(TierConsistencyError, match="seq 10"):
        QueryEngine(tiers).query("eeg-c", T0, T0 + 5)


def test_http_data_and_events(tiers, spread, settings, monkeypatch):
    import pyarrow as pa
    from fastapi.testclient import TestClient

    from neuraflow.serve import data_routes
    from neuraflow.serve.app import build_app

    class NoPipelines:
        def running(self) -> list[str]:
            return []

    hot, warm, cold = tiers
    hot.sink.write_events([Event("eeg-q", T0 + 1.0, "T1", 1.0)])
    hot.sink.flush()
    warm.sink.write_events([Event("eeg-q", T0 + 1.0, "T1", 1.0), Event("eeg-q", T0 + 0.5, "start", "run-1")])
    warm.sink.flush()
    monkeypatch.setattr(data_routes, "tiers_from_settings", lambda storage: list(tiers))
    client = TestClient(build_app(settings, NoPipelines()))
    data, chunks = spread
    params = {"start": T0 + 2.0, "end": T0 + 32.0, "channels": "EEG03,EEG07"}

    reply = client.get("/streams/eeg-q/data", params={**params, "format": "arrow"})
    assert reply.status_code == 200 and reply.headers["content-type"] == "application/vnd.apache.arrow.stream"
    table = pa.ipc.open_stream(io.BytesIO(reply.content)).read_all()
    assert table.column_names == ["t_s", "EEG03", "EEG07"]
    assert np.array_equal(table.column("EEG07").to_numpy(), data[7, 500:8000])

    doc = client.get("/streams/eeg-q/data", params=params).json()
    assert doc["channels"] == ["EEG03", "EEG07"] and doc["n_samples"] == 7500 and doc["gaps"] == []
    assert np.array_equal(np.array(doc["data"], np.float32), data[[3, 7], 500:8000])

    events = client.get("/streams/eeg-q/events/stored").json()
    assert [(e["label"], e["value"]) for e in events] == [("start", "run-1"), ("T1", 1.0)]

    assert client.get("/streams/nope/data", params=params).status_code == 404
    assert client.get("/streams/nope/events/stored").status_code == 404
    bad_span = client.get("/streams/eeg-q/data", params={**params, "end": T0})
    assert bad_span.status_code == 422 and "start=" in bad_span.json()["detail"]
    bad_channel = client.get("/streams/eeg-q/data", params={**params, "channels": "EEG03,EEG7"})
    assert bad_channel.status_code == 422 and "'EEG7'" in bad_channel.json()["detail"]
    assert client.get("/streams/eeg-q/data", params={**params, "format": "csv"}).status_code == 422
    assert client.get("/streams/eeg-q/data", params={"start": T0}).status_code == 422  # end missing


def _median_ms(fn, repeat: int) -> float:
    fn()  # warm up connections and caches
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def test_benchmark_latencies(tiers, capsys):
    """10 s x 64 ch from Redis; 1 h x 1 ch of 64 from Iceberg (250 Hz, 1 s chunks in cold, 0.1 s in hot)."""
    hot, _, cold = tiers
    _, recent = make_stream("bench-hot", 600, n_channels=64, size=25, seed=5)  # 60 s in 0.1 s chunks
    hot.write(recent)
    engine = QueryEngine([hot])
    end = recent[-1].t_end_s
    hot_ms = _median_ms(lambda: engine.query("bench-hot", end - 10.0, end), 20)

    old_t0 = T0 - 3600.0
    for part in range(4):  # 1 h in 15 min pieces, to bound memory
        _, chunks = make_stream("bench-cold", 900, n_channels=64, size=250, seed=part, t0=old_t0 + part * 900.0)
        cold.write([c.replace(seq=c.seq + part * 900) for c in chunks])
    engine = QueryEngine([cold])
    cold_ms = _median_ms(lambda: engine.query("bench-cold", old_t0, old_t0 + 3600.0, channels=["EEG17"]), 3)
    res = engine.query("bench-cold", old_t0, old_t0 + 3600.0, channels=["EEG17"])
    assert res.data.shape == (1, 900_000) and res.gaps == []
    with capsys.disabled():
        print(f"\n[query latency] 10 s x 64 ch from Redis: {hot_ms:.1f} ms (target < 20 ms); "
              f"1 h x 1 ch of 64 from Iceberg: {cold_ms:.0f} ms (target < 1000 ms)")  # fmt: skip
    assert hot_ms < 20.0 * 3  # 3x headroom for a shared 2-core CI machine; the print shows the measure
    assert cold_ms < 1000.0 * 3
