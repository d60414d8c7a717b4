"""``python -m benchmarks.compression [EDF]``: bytes per layout of one real recording, vs raw float32.

Reads EEGMMIDB S001R06 (64 ch, 160 Hz, 20,000 samples; ``$NEURAFLOW_SHARED_DATA``
or ../shared/data), cuts it in 32-sample chunks and writes every payload layout to an
in-memory Parquet file: one row per chunk (all channels in one value), or one row per
chunk and channel as the Iceberg sink stores them (so that one channel reads alone).
Every integer layout is lossless: the EDF digital values reproduce the float32 samples
bit for bit (checked). Prints a markdown table, best first, then the bytes of the whole
files the sink writes (every column, footers) and the throughput of its codec ("dm").
"""

from __future__ import annotations

import io
import os
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

CHUNK = 32


def _recording(argv: list[str]) -> Path:
    if argv:
        return Path(argv[0])
    root = Path(os.environ.get("NEURAFLOW_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    return root / "eegmmidb" / "S001R06.edf"


def _parquet_bytes(values: pa.Array, **options) -> int:
    sink = io.BytesIO()
    pq.write_table(pa.table({"d": values}), sink, **options)
    return sink.tell()


def _rows(flat: np.ndarray, n_rows: int, kind: pa.DataType) -> pa.Array:
    per = flat.size // n_rows
    return pa.ListArray.from_arrays(pa.array(np.arange(0, flat.size + 1, per, dtype=np.int32)), pa.array(flat, kind))


def _zigzag(a: np.ndarray) -> np.ndarray:
    return ((a << 1) ^ (a >> 63)).astype(np.int32)


def _sink_files_ratio(x: np.ndarray, meta: dict) -> float:
    """Raw float32 / bytes of the Parquet files the Iceberg sink writes for the recording in one commit."""
    import tempfile

    from neuraflow.chunk import Chunk, StreamInfo
    from neuraflow.sinks import Iceberg, read_chunks

    info = StreamInfo("edf", 160.0, tuple(f"c{i}" for i in range(x.shape[0])), meta=meta)
    n = x.shape[1] // CHUNK
    chunks = [Chunk(np.ascontiguousarray(x[:, i * CHUNK : (i + 1) * CHUNK]), 1.7e9 + i * CHUNK / 160.0, info, seq=i)
              for i in range(n)]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        where = {"catalog_uri": f"sqlite:///{tmp}/catalog.db", "warehouse": f"file://{tmp}/warehouse"}
        sink = Iceberg("bench.edf", flush_every_s=1e9, **where)
        sink.open()
        sink.write_batch(chunks)
        sink.close()
        back = read_chunks(where["catalog_uri"], where["warehouse"], "bench.edf", "edf")
        assert all(np.array_equal(a.data.view(np.uint32), b.data.view(np.uint32)) for a, b in zip(back, chunks))
        stored = sum(f.stat().st_size for f in Path(tmp, "warehouse").rglob("*.parquet") if "/edf/data/" in f.as_posix())
    return x.nbytes / stored


def main(argv: list[str]) -> None:
    import mne

    from neuraflow.sinks import _encoding

    path = _recording(argv)
    x = mne.io.read_raw(path, preload=True, verbose="error").get_data().astype(np.float32)
    meta = _encoding.native_scale_from_edf(path)
    scale, offset = _encoding.native_scale(meta, x.shape[0])
    n = x.shape[1] // CHUNK
    x = np.ascontiguousarray(x[:, : n * CHUNK])
    counts = np.rint((x.astype(np.float64) - offset) / scale).astype(np.int64)
    assert np.array_equal((counts * scale + offset).astype(np.float32).view(np.uint32), x.view(np.uint32)), "not exact"
    per_chunk = lambda a: np.ascontiguousarray(a.reshape(a.shape[0], n, CHUNK).transpose(1, 0, 2))  # noqa: E731
    xc, cc = per_chunk(x), per_chunk(counts)  # (chunk, channel, sample)
    d1 = cc.copy()
    d1[:, :, 1:] = np.diff(cc, axis=2)
    neighbours = d1.copy()
    neighbours[:, 1:] -= d1[:, :-1]  # the previous codec: channel c minus channel c - 1
    exact, dm, reference = _encoding.encode(xc, scale, offset)
    assert exact.all()
    channel_rows = lambda a: np.ascontiguousarray(a.transpose(1, 0, 2)).ravel()  # noqa: E731  (channel, chunk) rows
    raw = x.nbytes
    bss = lambda level=3: {"compression": "zstd", "compression_level": level, "use_dictionary": False,  # noqa: E731
                           "column_encoding": {"d.list.element": "BYTE_STREAM_SPLIT"}}  # fmt: skip
    f32 = pa.array([r.tobytes() for r in xc], pa.large_binary())
    rows = n * x.shape[0]
    layouts = [
        ("per chunk: float32 bytes, zstd 3 (pyiceberg default path)", [(f32, {"compression": "zstd"})]),
        ("per chunk: float32 list, byte-stream-split, zstd 3", [(_rows(xc.ravel(), n, pa.float32()), bss())]),
        ("per chunk: int32 time-delta + neighbour-channel diff, zigzag, BSS, zstd 3 (previous codec)",
         [(_rows(_zigzag(neighbours).ravel(), n, pa.int32()), bss())]),
        ("per channel: int32 counts, delta-binary-packed, zstd 3",
         [(_rows(channel_rows(cc).astype(np.int32), rows, pa.int32()),
           {"compression": "zstd", "use_dictionary": False,
            "column_encoding": {"d.list.element": "DELTA_BINARY_PACKED"}})]),
        ("per channel: int32 time-delta, zigzag, BSS, zstd 3", [(_rows(channel_rows(_zigzag(d1)), rows, pa.int32()), bss())]),
        ("per channel: 'dm' (time-delta - chunk reference, zigzag), BSS, zstd 1",
         [(_rows(channel_rows(dm), rows, pa.int32()), bss(1)), (_rows(reference.ravel(), n, pa.int32()), bss(1))]),
        ("per channel: 'dm', BSS, zstd 3  <- sink default",
         [(_rows(channel_rows(dm), rows, pa.int32()), bss()), (_rows(reference.ravel(), n, pa.int32()), bss())]),
        ("per channel: 'dm', BSS, zstd 19",
         [(_rows(channel_rows(dm), rows, pa.int32()), bss(19)), (_rows(reference.ravel(), n, pa.int32()), bss(19))]),
    ]  # fmt: skip
    results = [(name, sum(_parquet_bytes(values, **options) for values, options in parts)) for name, parts in layouts]
    print(f"{path.name}: {x.shape[0]} ch x {x.shape[1]} samples, {CHUNK}-sample chunks ({n} chunks); raw float32 {raw:,} B\n")
    print("| payload layout | bytes | ratio vs raw float32 |\n|---|---:|---:|")
    for name, size in sorted(results, key=lambda r: r[1]):
        print(f"| {name} | {size:,} | {raw / size:.2f}x |")
    print(f"\nWhole Parquet files of the Iceberg sink (all columns and footers, one commit): {_sink_files_ratio(x, meta):.2f}x")

    start = time.perf_counter()
    _, res, ref = _encoding.encode(xc, scale, offset)
    t_encode = time.perf_counter() - start
    start = time.perf_counter()
    back = _encoding.decode(res.reshape(-1, CHUNK), np.repeat(ref, x.shape[0], axis=0), np.tile(scale, (n, 1)),
                            np.tile(offset, (n, 1)))  # fmt: skip
    t_decode = time.perf_counter() - start
    assert np.array_equal(back.reshape(xc.shape).view(np.uint32), xc.view(np.uint32))
    print(f"\ndm codec, numpy, all chunks at once: encode {raw / t_encode / 1e6:.0f} MB/s, "
          f"decode {raw / t_decode / 1e6:.0f} MB/s of float32")  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
