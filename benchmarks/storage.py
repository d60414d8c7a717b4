"""``python -m benchmarks.storage [--quick] [--json PATH]``: storage tiers, ingest rate, query latency, compression.

Ingest: ``write_batch`` is called directly, as the controller calls it: one batch per tick
of 1 kHz / 32 samples (31.25 ticks per device-second) holding one 64 x 32 float32 chunk per
device, and ``flush()`` on the controller's cadence: every second of data, or every
``flush_every_s`` of the sink where that is longer (Iceberg: 5 s, the default of
``storage.flush_every_s``). A sink "keeps up with D devices" when it
writes D device-seconds per wall second: rate / 256 kB/s (64 ch x 1 kHz x 4 B).
Sinks run alone, then all three in one process (the controller's case: one thread).

Data: the real recording EEGMMIDB S001R06 (64 ch, EDF digital scale in ``StreamInfo.meta``,
so Iceberg stores exact integer residuals), cut in 32-sample chunks and cycled; its rate
is ignored (bytes are what matter). Compression: bytes each store holds / raw float32.

Needs Redis on 127.0.0.1:6379 and PostgreSQL on 127.0.0.1:5432 (database ``test``); keys
live under a unique prefix and tables in a unique schema, both deleted at the end. The
machine is shared: every figure is a median of ``--repeats`` runs, next to the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import CHUNK_SIZE, N_CHANNELS, SFREQ, TARGET_DEVICES
from neuraflow.chunk import Chunk, StreamInfo
from neuraflow.config import StorageSettings
from neuraflow.sinks import Iceberg, RedisStream, Timescale

REDIS_URL = os.environ.get("NEURAFLOW_BENCH_REDIS", "redis://127.0.0.1:6379/0")
PG_URL = os.environ.get("NEURAFLOW_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
DEVICE_BYTES_PER_S = N_CHANNELS * SFREQ * 4  # 256 kB/s of raw float32
#: Seconds of data between two flushes, per sink class, as the pipeline controller schedules them.
FLUSH_CADENCE_S = {"Iceberg": StorageSettings().flush_every_s}
TICKS_PER_S = SFREQ / CHUNK_SIZE  # 31.25


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


# Data ----------------------------------------------------------------------------------------
def _recording() -> tuple[np.ndarray, dict[str, Any], str]:
    """(64 x n float32 volts, StreamInfo meta with the EDF scale, name); Synthetic if the EDF is absent."""
    root = Path(os.environ.get("NEURAFLOW_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    path = root / "eegmmidb" / "S001R06.edf"
    if path.is_file():
        import mne

        from neuraflow.sinks import _encoding

        x = mne.io.read_raw(path, preload=True, verbose="error").get_data().astype(np.float32)
        return np.ascontiguousarray(x[:N_CHANNELS]), _encoding.native_scale_from_edf(path), f"EEGMMIDB {path.name}"
    from neuraflow.devices import Synthetic

    _log(f"  {path} not found: using Synthetic (float32, no integer codec)")
    dev = Synthetic("s", n_channels=N_CHANNELS, sfreq=SFREQ, chunk_size=CHUNK_SIZE, seed=0)
    return dev.expected(0, 20_000).astype(np.float32), {}, "Synthetic"


class Source:
    """Chunks of ``n_devices`` streams, tick by tick, cycling the recording (views: no copies)."""

    def __init__(self, data: np.ndarray, meta: dict[str, Any], tag: str, n_devices: int, t0_s: float) -> None:
        n = data.shape[1] // CHUNK_SIZE
        self.blocks = [data[:, i * CHUNK_SIZE : (i + 1) * CHUNK_SIZE] for i in range(n)]
        channels = tuple(f"EEG{i:03d}" for i in range(N_CHANNELS))
        self.infos = [StreamInfo(f"{tag}-{d}", SFREQ, channels, meta=meta) for d in range(n_devices)]
        self.t0_s = t0_s

    def tick(self, k: int) -> list[Chunk]:
        block = self.blocks[k % len(self.blocks)]
        t0 = self.t0_s + k * CHUNK_SIZE / SFREQ
        return [Chunk(block, t0, info, seq=k, recv_s=t0) for info in self.infos]

    def chunks(self, device: int, first: int, count: int) -> Iterator[Chunk]:
        info = self.infos[device]
        for k in range(first, first + count):
            yield Chunk(self.blocks[k % len(self.blocks)], self.t0_s + k * CHUNK_SIZE / SFREQ, info, seq=k, recv_s=0.0)


# Stores ----------------------------------------------------------------------------------------
class Stores:
    """Unique Redis prefix, PostgreSQL schema and Iceberg warehouse; :meth:`cleanup` removes them."""

    def __init__(self) -> None:
        self.tag = uuid.uuid4().hex[:10]
        self.prefix = f"nfbench:{self.tag}:"
        self.schema = f"nf_bench_{self.tag}"
        self.dir = Path(tempfile.mkdtemp(prefix="nf-bench-storage-"))
        self._n = 0

    def make(self, kind: str):
        self._n += 1
        if kind == "redis":
            return RedisStream(REDIS_URL, key_prefix=f"{self.prefix}{self._n}:", window_s=7 * 86_400.0,
                               max_buffer_chunks=1_000_000)  # fmt: skip
        if kind == "timescale":
            return Timescale(PG_URL, schema=self.schema, table=f"s{self._n}", flush_every_s=1e9, flush_chunks=10**9,
                             max_buffer_chunks=1_000_000, application_name=f"nf-bench-{self.tag}")  # fmt: skip
        return Iceberg(f"nf.s{self._n}", catalog_uri=f"sqlite:///{self.dir}/catalog.db",
                       warehouse=f"file://{self.dir}/wh", flush_every_s=1e9, max_buffer_chunks=1_000_000)  # fmt: skip

    def stored_bytes(self, sink) -> int:
        """Bytes the store holds for this sink's chunks (Redis memory, PostgreSQL relation sizes, Parquet files)."""
        if isinstance(sink, RedisStream):
            import redis

            client = redis.Redis.from_url(REDIS_URL)
            keys = list(client.scan_iter(match=f"{sink.key_prefix}*", count=1000))
            return sum(client.memory_usage(k, samples=0) or 0 for k in keys if k.endswith(b":data"))
        if isinstance(sink, Timescale):
            import psycopg

            with psycopg.connect(PG_URL.replace("+psycopg", "")) as conn:
                return int(conn.execute(
                    "select coalesce(sum(pg_total_relation_size(relid)), 0) from pg_partition_tree(%s::regclass)",
                    [f'"{sink.schema}"."{sink.table}"'],
                ).fetchone()[0])  # fmt: skip
        files = (self.dir / "wh").rglob("*.parquet")
        name = sink.table.split(".")[-1]
        return sum(f.stat().st_size for f in files if f"/{name}/data/" in f.as_posix())

    def cleanup(self) -> None:
        import psycopg
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{self.prefix}*", count=1000))
        for i in range(0, len(keys), 1000):
            client.delete(*keys[i : i + 1000])
        with psycopg.connect(PG_URL.replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute(f'drop schema if exists "{self.schema}" cascade')
        shutil.rmtree(self.dir, ignore_errors=True)


# Ingest ---------------------------------------------------------------------------------------
def ingest(sinks: list, source: Source, seconds: float) -> dict[str, Any]:
    """Write ``seconds`` of data tick by tick to every sink in turn (one thread), flushing on the controller's cadence."""
    for sink in sinks:
        sink.open()
    ticks = int(round(seconds * TICKS_PER_S))
    # ticks between flushes of each sink (the sinks' own wall-clock commits are off: see Stores.make)
    every = [int(round(TICKS_PER_S * FLUSH_CADENCE_S.get(type(sink).__name__, 1.0))) for sink in sinks]
    peak = 0
    start = time.perf_counter()
    for k in range(ticks):
        batch = source.tick(k)
        for sink in sinks:
            sink.write_batch(batch)
        for sink, n in zip(sinks, every):
            if (k + 1) % n == 0 or k == ticks - 1:
                peak = max(peak, sink.stats()["buffered"])
                sink.flush()
    wall = time.perf_counter() - start
    raw = ticks * len(source.infos) * N_CHANNELS * CHUNK_SIZE * 4
    for sink in sinks:
        sink.close()
    return {"wall_s": wall, "raw_bytes": raw, "mb_per_s": raw / wall / 1e6, "devices": raw / wall / DEVICE_BYTES_PER_S,
            "peak_buffered_chunks": peak}  # fmt: skip


def _median_of(repeats: int, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    runs = [run() for _ in range(repeats)]
    out = {k: statistics.median(r[k] for r in runs) for k in runs[0] if isinstance(runs[0][k], (int, float))}
    out["runs_mb_per_s"] = [round(r["mb_per_s"], 1) for r in runs]
    return out


# Queries --------------------------------------------------------------------------------------
def _timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def query_hot(stores: Stores, data: np.ndarray, meta: dict[str, Any], repeats: int) -> dict[str, Any]:
    from neuraflow.storage import QueryEngine, RedisTier

    t0 = time.time() - 20.0
    source = Source(data, meta, f"hq{stores.tag}", 1, t0)
    sink = stores.make("redis")
    sink.open()
    chunks = list(source.chunks(0, 0, int(15 * TICKS_PER_S)))
    sink.write_batch(chunks)
    sink.flush()
    end = chunks[-1].t_end_s
    engine = QueryEngine([RedisTier(sink)])
    latency, res = _timed(lambda: engine.query(source.infos[0].stream_id, end - 10.0, end), repeats)
    assert res.data.shape == (N_CHANNELS, 10_000), res.data.shape
    sink.close()
    return {"query": "10 s x 64 ch, hot (Redis)", "latency_ms": 1e3 * latency, "samples": res.data.size}


def query_cold(stores: Stores, data: np.ndarray, meta: dict[str, Any], seconds: float, repeats: int) -> dict[str, Any]:
    from neuraflow.storage import IcebergTier, QueryEngine

    t0 = time.time() - 2 * seconds
    source = Source(data, meta, f"cq{stores.tag}", 1, t0)
    sink = stores.make("iceberg")
    sink.open()
    n = int(round(seconds * TICKS_PER_S))
    start = time.perf_counter()
    step = 20_000
    for first in range(0, n, step):
        sink.write_batch(list(source.chunks(0, first, min(step, n - first))))
        sink.flush()
    write_s = time.perf_counter() - start
    sink.close()
    engine = QueryEngine([IcebergTier(sink)])
    sid = source.infos[0].stream_id
    channel = source.infos[0].channels[17]
    latency, res = _timed(lambda: engine.query(sid, t0, t0 + n * CHUNK_SIZE / SFREQ, channels=[channel]), repeats)
    assert res.data.shape == (1, n * CHUNK_SIZE), res.data.shape
    return {"query": f"{seconds / 3600:.3g} h x 1 ch of 64, cold (Iceberg, local files)", "latency_ms": 1e3 * latency,
            "samples": res.data.size, "setup_write_mb_per_s": n * N_CHANNELS * CHUNK_SIZE * 4 / write_s / 1e6}  # fmt: skip


# Main ------------------------------------------------------------------------------------------
def run(quick: bool, repeats: int) -> dict[str, Any]:
    data, meta, name = _recording()
    out: dict[str, Any] = {"recording": name, "quick": quick, "repeats": repeats, "cpus": os.cpu_count(),
                           "load_before": _load()}  # fmt: skip
    n_devices = 32 if quick else 64
    seconds = 5.0 if quick else 10.0  # at least one Iceberg commit interval
    stores = Stores()
    try:
        out["ingest"] = {}
        ratios: dict[str, float] = {}
        for label, kinds in (("redis", ["redis"]), ("timescale", ["timescale"]), ("iceberg", ["iceberg"]),
                             ("all three", ["redis", "timescale", "iceberg"])):  # fmt: skip
            _log(f"ingest {label}: {n_devices} devices x {seconds:g} s of data, {repeats} runs (load {_load()})")
            made: list = []

            def once(kinds=kinds, made=made) -> dict[str, Any]:
                sinks = [stores.make(k) for k in kinds]
                made.append(sinks)
                source = Source(data, meta, f"in{uuid.uuid4().hex[:6]}", n_devices, time.time() - 60.0)
                return ingest(sinks, source, seconds)

            result = _median_of(repeats, once)
            out["ingest"][label] = result
            _log(f"  median {result['mb_per_s']:.1f} MB/s = {result['devices']:.0f} devices (runs {result['runs_mb_per_s']})")
            if len(kinds) == 1:
                raw = result["raw_bytes"]
                ratios[label] = raw / max(1, stores.stored_bytes(made[0][0]))
        out["compression"] = ratios
        _log(f"query hot (load {_load()})")
        out["queries"] = [query_hot(stores, data, meta, max(5, repeats))]
        cold_s = 600.0 if quick else 3600.0
        _log(f"query cold: writing {cold_s:g} s of one 64-ch device first (load {_load()})")
        out["queries"].append(query_cold(stores, data, meta, cold_s, repeats))
    finally:
        stores.cleanup()
    out["load_after"] = _load()
    return out


def table(out: dict[str, Any]) -> str:
    target_mb = TARGET_DEVICES * DEVICE_BYTES_PER_S / 1e6
    lines = [
        f"Storage benchmark: {out['recording']}, 64 ch x 32-sample float32 chunks, median of {out['repeats']} runs, "
        f"{out['cpus']} CPUs, load {out['load_before']} -> {out['load_after']}",
        "",
        f"| sink | MB/s raw float32 | devices of 64 ch @ 1 kHz | target {TARGET_DEVICES} ({target_mb:.0f} MB/s) "
        "| peak sink buffer (chunks) | compression (raw / stored) |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for label, r in out["ingest"].items():
        ratio = out["compression"].get(label)
        met = "yes" if r["devices"] >= TARGET_DEVICES else "**no**"
        lines.append(f"| {label} | {r['mb_per_s']:.1f} | {r['devices']:.0f} | {met} | {r['peak_buffered_chunks']:.0f} "
                     f"| {'' if ratio is None else f'{ratio:.2f}x'} |")  # fmt: skip
    lines += ["", "| query | median latency | samples |", "|---|---:|---:|"]
    for q in out["queries"]:
        lines.append(f"| {q['query']} | {q['latency_ms']:.0f} ms | {q['samples']:,} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.storage", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer devices, 10 min instead of 1 h cold")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args(argv)
    out = run(args.quick, args.repeats)
    print(table(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
