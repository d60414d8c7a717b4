"""``python -m benchmarks.compression [EDF]``: bytes per layout of one real recording, vs raw float32.

Reads EEGMMIDB S001R06 (64 ch, 160 Hz, 20,000 samples; ``$NEURAFLOW_SHARED_DATA``
or ../shared/data), cuts it in 32-sample chunks (one Parquet row each, as the
Iceberg sink stores them) and writes every layout to an in-memory Parquet file.
Every integer layout is lossless: the EDF digital values reproduce the float32
samples bit for bit (checked). Prints a markdown table, best first, then the
write + read throughput of the sink's chosen codec ("dz").
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


def main(argv: list[str]) -> None:
    import mne

    from neuraflow.sinks import _encoding

    path = _recording(argv)
    x = mne.io.read_raw(path, preload=True, verbose="error").get_data().astype(np.float32)
    meta = _encoding.native_scale_from_edf(path)
    scale, offset = _encoding.native_scale(meta, x.shape[0])
    n = x.shape[1] // CHUNK
    x = np.ascontiguousarray(x[:, : n * CHUNK])
    counts = np.rint((x.astype(np.float64) - offset) / scale).astype(np.int32)
    assert np.array_equal((counts * scale + offset).astype(np.float32).view(np.uint32), x.view(np.uint32)), "not exact"
    per_chunk = lambda a: np.ascontiguousarray(a.reshape(a.shape[0], n, CHUNK).transpose(1, 0, 2))  # noqa: E731
    xc, cc = per_chunk(x), per_chunk(counts)
    d1 = cc.copy()
    d1[:, :, 1:] = np.diff(cc, axis=2)
    dz = np.stack([_encoding.encode(x[:, i * CHUNK : (i + 1) * CHUNK], scale, offset) for i in range(n)])
    raw = x.nbytes
    plain = {"use_dictionary": False}
    bss = lambda: {"use_dictionary": False, "column_encoding": {"d.list.element": "BYTE_STREAM_SPLIT"}}  # noqa: E731
    dbp = {"use_dictionary": False, "column_encoding": {"d.list.element": "DELTA_BINARY_PACKED"}}
    f32 = pa.array([r.tobytes() for r in xc], pa.large_binary())
    layouts = [
        ("float32 bytes, zstd 3 (pyiceberg default path)", f32, {"compression": "zstd", "compression_level": 3}),
        ("float32 bytes, zstd 19", f32, {"compression": "zstd", "compression_level": 19}),
        ("float32 list, byte-stream-split, zstd 3", _rows(xc.ravel(), n, pa.float32()), {"compression": "zstd", **bss()}),
        ("int16 counts, plain, zstd 3", _rows(cc.ravel().astype(np.int16), n, pa.int16()), {"compression": "zstd", **plain}),
        ("int32 counts, delta-binary-packed, zstd 3", _rows(cc.ravel(), n, pa.int32()), {"compression": "zstd", **dbp}),
        ("int32 time-delta, sample-major, delta-binary-packed, zstd 9",
         _rows(d1.transpose(0, 2, 1).ravel(), n, pa.int32()), {"compression": "zstd", "compression_level": 9, **dbp}),
        ("int32 time-delta, zigzag, byte-stream-split, zstd 3",
         _rows(((d1 << 1) ^ (d1 >> 31)).ravel(), n, pa.int32()), {"compression": "zstd", **bss()}),
        ("int32 dz (time-delta, channel-diff, zigzag), plain, zstd 3", _rows(dz.ravel(), n, pa.int32()),
         {"compression": "zstd", **plain}),
        ("int32 dz, byte-stream-split, zstd 1", _rows(dz.ravel(), n, pa.int32()),
         {"compression": "zstd", "compression_level": 1, **bss()}),
        ("int32 dz, byte-stream-split, zstd 3  <- sink default", _rows(dz.ravel(), n, pa.int32()),
         {"compression": "zstd", **bss()}),
        ("int32 dz, byte-stream-split, zstd 19", _rows(dz.ravel(), n, pa.int32()),
         {"compression": "zstd", "compression_level": 19, **bss()}),
    ]  # fmt: skip
    results = [(name, _parquet_bytes(values, **options)) for name, values, options in layouts]
    print(f"{path.name}: {x.shape[0]} ch x {x.shape[1]} samples, {CHUNK}-sample chunks ({n} rows); raw float32 {raw:,} B\n")
    print("| layout | bytes | ratio vs raw float32 |\n|---|---:|---:|")
    for name, size in sorted(results, key=lambda r: r[1]):
        print(f"| {name} | {size:,} | {raw / size:.2f}x |")

    start = time.perf_counter()
    codes = [_encoding.encode(xc[i], scale, offset) for i in range(n)]
    t_encode = time.perf_counter() - start
    start = time.perf_counter()
    back = [_encoding.decode(codes[i], xc[i].shape, scale, offset) for i in range(n)]
    t_decode = time.perf_counter() - start
    assert all(np.array_equal(b.view(np.uint32), xc[i].view(np.uint32)) for i, b in enumerate(back))
    print(f"\ndz codec, numpy, per {CHUNK}-sample chunk: encode {raw / t_encode / 1e6:.0f} MB/s, "
          f"decode {raw / t_decode / 1e6:.0f} MB/s of float32 ({n / t_encode:,.0f} / {n / t_decode:,.0f} chunks/s)")  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
