"""Iceberg table schemas and the chunk/event <-> Arrow row conversion of :mod:`neuraflow.sinks.iceberg`.

One row per chunk: stream description columns, the payload either as float32 bytes or
as native-resolution integer residuals (:mod:`neuraflow.sinks._encoding`), decoded back to
bit-exact float32 chunks on read.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from neuraflow.chunk import Chunk, Event, StreamInfo
from neuraflow.sinks import _encoding


# Schemas -------------------------------------------------------------------
def _schemas():
    """(samples schema, samples spec, events schema, events spec); pyiceberg imported lazily."""
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.schema import Schema
    from pyiceberg.transforms import DayTransform, IdentityTransform
    from pyiceberg.types import (
        BinaryType, DoubleType, IntegerType, ListType, LongType, NestedField, StringType, TimestamptzType,
    )  # fmt: skip

    def strings(field_id: int, name: str, element_id: int) -> NestedField:
        return NestedField(field_id, name, ListType(element_id, StringType(), element_required=True), required=True)

    samples = Schema(
        NestedField(1, "stream_id", StringType(), required=True),
        NestedField(2, "seq", LongType(), required=True),
        NestedField(3, "t0_s", DoubleType(), required=True, doc="device time of the first sample, s since epoch"),
        NestedField(4, "t0", TimestamptzType(), required=True, doc="t0_s as a timestamp, for partitioning"),
        NestedField(5, "recv_s", DoubleType(), required=False, doc="host receive time, s since epoch"),
        NestedField(6, "sfreq", DoubleType(), required=True),
        NestedField(7, "n_channels", IntegerType(), required=True),
        NestedField(8, "n_samples", IntegerType(), required=True),
        NestedField(9, "data", BinaryType(), required=True, doc="float32 little-endian, C order, (n_channels, n_samples)"),
        strings(10, "channels", 15),
        strings(11, "ch_types", 16),
        strings(12, "units", 17),
        NestedField(13, "stream_meta", StringType(), required=False, doc="StreamInfo.meta as JSON"),
        NestedField(14, "meta", StringType(), required=False, doc="Chunk.meta as JSON"),
        *_codec_fields(),
    )
    samples_spec = PartitionSpec(
        PartitionField(source_id=1, field_id=1000, transform=IdentityTransform(), name="stream_id"),
        PartitionField(source_id=4, field_id=1001, transform=DayTransform(), name="t0_day"),
    )
    events = Schema(
        NestedField(1, "stream_id", StringType(), required=True),
        NestedField(2, "t_s", DoubleType(), required=True),
        NestedField(3, "t", TimestamptzType(), required=True),
        NestedField(4, "label", StringType(), required=True),
        NestedField(5, "value", StringType(), required=False, doc="the value as text"),
        NestedField(6, "value_num", DoubleType(), required=False, doc="the value when it is a number, else null"),
        NestedField(7, "meta", StringType(), required=False, doc="Event.meta as JSON"),
    )
    events_spec = PartitionSpec(
        PartitionField(source_id=1, field_id=1000, transform=IdentityTransform(), name="stream_id"),
        PartitionField(source_id=3, field_id=1001, transform=DayTransform(), name="t_day"),
    )
    return samples, samples_spec, events, events_spec


def _codec_fields():
    """The columns of the integer codec (added to tables created before it, too)."""
    from pyiceberg.types import IntegerType, ListType, NestedField, StringType

    return (
        NestedField(18, "codec", StringType(), required=False,
                    doc="null: `data` holds float32; 'dz': `residuals` holds the samples, see neuraflow.sinks._encoding"),
        NestedField(19, "residuals", ListType(20, IntegerType(), element_required=True), required=False,
                    doc="int32 residuals of the native counts, (n_channels * n_samples,)"),
    )  # fmt: skip


# Catalog location ------------------------------------------------------------


# Arrow conversion ------------------------------------------------------------------
def _json(meta: Mapping[str, Any]) -> str | None:
    # default=str: a value JSON cannot hold (a numpy scalar, a path) is stored as its text.
    return json.dumps(dict(meta), default=str, sort_keys=True) if meta else None


def _micros(t_s: np.ndarray) -> pa.Array:
    return pa.array(np.round(t_s * 1e6).astype(np.int64), pa.timestamp("us", tz="UTC"))


def _chunks_to_arrow(chunks: Sequence[Chunk], schema: pa.Schema) -> tuple[pa.Table, int]:
    """The rows of ``chunks`` and how many of them hold integer residuals (the rest float32)."""
    n = len(chunks)
    infos: dict[int, int] = {}  # id(StreamInfo) -> row in `distinct`; chunks of a stream share one
    distinct: list[StreamInfo] = []
    info_rows = np.empty(n, np.int64)
    for i, c in enumerate(chunks):
        k = infos.get(id(c.info))
        if k is None:
            k = infos[id(c.info)] = len(distinct)
            distinct.append(c.info)
        info_rows[i] = k
    take = pa.array(info_rows)

    scales = [_encoding.native_scale(d.meta, d.n_channels) for d in distinct]
    residuals: list[np.ndarray | None] = []
    for c, k in zip(chunks, info_rows):
        scale = scales[k]
        residuals.append(None if scale is None or c.data.shape[0] != len(scale[0]) else _encoding.encode(c.data, *scale))
    n_native = sum(r is not None for r in residuals)
    floats = [c.data.ravel() for c, r in zip(chunks, residuals) if r is None]
    sizes = np.fromiter((0 if r is not None else c.data.nbytes for c, r in zip(chunks, residuals)), np.int64, n)
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(sizes, out=offsets[1:])
    payload = (np.concatenate(floats) if floats else np.empty(0, np.float32)).astype("<f4", copy=False)
    res_sizes = np.fromiter((0 if r is None else r.size for r in residuals), np.int64, n)
    res_offsets = np.zeros(n + 1, np.int64)
    np.cumsum(res_sizes, out=res_offsets[1:])
    res_values = [r for r in residuals if r is not None]
    res_flat = np.concatenate(res_values) if res_values else np.empty(0, np.int32)
    is_float = np.fromiter((r is None for r in residuals), bool, n)
    res_type = schema.field("residuals").type
    res_array = pa.LargeListArray.from_arrays(
        pa.array(res_offsets), pa.array(res_flat, pa.int32()), mask=pa.array(is_float)
    ).cast(res_type)
    data = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(payload.view(np.uint8))]
    )
    t0_s = np.fromiter((c.t0_s for c in chunks), np.float64, n)
    columns = {
        "stream_id": pa.array([d.stream_id for d in distinct], pa.large_string()).take(take),
        "seq": pa.array(np.fromiter((c.seq for c in chunks), np.int64, n)),
        "t0_s": pa.array(t0_s),
        "t0": _micros(t0_s),
        "recv_s": pa.array(np.fromiter((c.recv_s for c in chunks), np.float64, n)),
        "sfreq": pa.array([d.sfreq for d in distinct], pa.float64()).take(take),
        "n_channels": pa.array(np.fromiter((c.data.shape[0] for c in chunks), np.int32, n)),
        "n_samples": pa.array(np.fromiter((c.data.shape[1] for c in chunks), np.int32, n)),
        "data": data,
        "channels": pa.array([list(d.channels) for d in distinct], pa.large_list(pa.large_string())).take(take),
        "ch_types": pa.array([list(d.ch_types) for d in distinct], pa.large_list(pa.large_string())).take(take),
        "units": pa.array([list(d.units) for d in distinct], pa.large_list(pa.large_string())).take(take),
        "stream_meta": pa.array([_json(d.meta) for d in distinct], pa.large_string()).take(take),
        "meta": pa.array([_json(c.meta) for c in chunks], pa.large_string()),
        "codec": pa.array(np.where(is_float, None, _encoding.CODEC).tolist(), pa.large_string()),
        "residuals": res_array,
    }
    return pa.Table.from_arrays([columns[name] for name in schema.names], schema=schema), n_native


def _events_to_arrow(events: Sequence[Event], schema: pa.Schema) -> pa.Table:
    t_s = np.array([e.t_s for e in events], np.float64)
    numeric = [isinstance(e.value, (int, float)) and not isinstance(e.value, bool) for e in events]
    columns = {
        "stream_id": pa.array([e.stream_id for e in events], pa.large_string()),
        "t_s": pa.array(t_s),
        "t": _micros(t_s),
        "label": pa.array([str(e.label) for e in events], pa.large_string()),
        "value": pa.array([repr(float(e.value)) if num else str(e.value) for e, num in zip(events, numeric)], pa.large_string()),
        "value_num": pa.array([float(e.value) if num else None for e, num in zip(events, numeric)], pa.float64()),
        "meta": pa.array([_json(e.meta) for e in events], pa.large_string()),
    }
    return pa.Table.from_arrays([columns[name] for name in schema.names], schema=schema)


def _codes(column: pa.ChunkedArray) -> np.ndarray:
    """One int per row, equal for equal values (lists compared through their joined text)."""
    import pyarrow.compute as pc

    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        column = column.cast(pa.large_list(pa.large_string()))  # a non-null element field has no kernel
        column = pc.binary_join(column, pa.scalar("\x00", pa.large_string()))
    if column.null_count:
        column = pc.fill_null(column, pa.scalar("\x00null", column.type))
    return column.combine_chunks().dictionary_encode().indices.to_numpy(zero_copy_only=False)


def _payloads(column: pa.ChunkedArray) -> list[tuple[pa.Buffer, int, int]]:
    """(buffer, byte offset, byte length) of every row of a binary column, without copying."""
    out: list[tuple[pa.Buffer, int, int]] = []
    for piece in column.chunks:
        if len(piece) == 0:
            continue
        _, offsets_buf, data_buf = piece.buffers()
        dtype = np.int64 if pa.types.is_large_binary(piece.type) else np.int32
        offsets = np.frombuffer(offsets_buf, dtype)[piece.offset : piece.offset + len(piece) + 1]
        out.extend((data_buf, int(a), int(b - a)) for a, b in zip(offsets[:-1], offsets[1:]))
    return out


def _list_values(column: pa.ChunkedArray) -> list[np.ndarray | None]:
    """The int32 values of every row of a list column (``None`` for a null row), as views."""
    out: list[np.ndarray | None] = []
    for piece in column.chunks:
        if len(piece) == 0:
            continue
        offsets = piece.offsets.to_numpy()
        values = piece.values.to_numpy(zero_copy_only=False)
        valid = piece.is_valid().to_numpy(zero_copy_only=False)
        out.extend(values[a:b] if ok else None for a, b, ok in zip(offsets[:-1], offsets[1:], valid))
    return out


def _decode_row(codec: str, residuals: np.ndarray | None, shape: tuple[int, int], info: StreamInfo,
                scales: dict[int, tuple[np.ndarray, np.ndarray] | None], seq: int) -> np.ndarray:  # fmt: skip
    """float32 samples of one integer-coded row; ``scales`` caches the scale of each StreamInfo."""
    if id(info) not in scales:
        scales[id(info)] = _encoding.native_scale(info.meta, info.n_channels)
    scale = scales[id(info)]
    if codec != _encoding.CODEC or scale is None or residuals is None or residuals.size != shape[0] * shape[1]:
        raise SinkError(
            f"sinks.Iceberg: row {info.stream_id!r} seq={seq} has codec={codec!r} but no matching residuals "
            f"of shape {shape} or no scale_v_per_count in its stream_meta; cannot decode it."
        )
    samples = _encoding.decode(residuals, shape, *scale)
    samples.flags.writeable = False
    return samples


def _rows_to_chunks(table: pa.Table) -> list[Chunk]:
    """Rebuild chunks in seq order. Data arrays are zero-copy read-only views of the Arrow buffers."""
    if table.num_rows == 0:
        return []
    seq = table.column("seq").to_numpy()
    order = np.argsort(seq, kind="stable")  # sort indices, not the table: no copy of the payload
    info_columns = ("stream_id", "sfreq", "channels", "ch_types", "units", "stream_meta")
    keys = np.stack([_codes(table.column(name)) for name in info_columns], axis=1)
    distinct, info_of_row = np.unique(keys, axis=0, return_inverse=True)
    info_of_row = info_of_row.reshape(-1)  # numpy 2.0.0 returned it 2-D
    infos: list[StreamInfo] = []
    for k in range(len(distinct)):
        (row,) = table.slice(int(np.argmax(info_of_row == k)), 1).select(info_columns).to_pylist()
        meta = json.loads(row["stream_meta"]) if row["stream_meta"] else None
        infos.append(StreamInfo(row["stream_id"], row["sfreq"], row["channels"], row["ch_types"], row["units"], meta))
    t0_s = table.column("t0_s").to_numpy()
    recv_s = table.column("recv_s").to_numpy(zero_copy_only=False)  # null reads as nan
    n_channels = table.column("n_channels").to_numpy()
    n_samples = table.column("n_samples").to_numpy()
    metas = table.column("meta").to_pylist()
    payloads = _payloads(table.column("data"))
    codecs = table.column("codec").to_pylist()
    residuals = _list_values(table.column("residuals")) if any(codecs) else None
    scales: dict[int, tuple[np.ndarray, np.ndarray] | None] = {}
    out: list[Chunk] = []
    last_seq: int | None = None
    for i in order:
        s = int(seq[i])
        if s == last_seq:  # a seq stored twice (two writers) reads back once
            continue
        buf, offset, nbytes = payloads[i]
        shape = (int(n_channels[i]), int(n_samples[i]))
        info = infos[info_of_row[i]]
        if codecs[i] is not None:
            out.append(Chunk(_decode_row(codecs[i], residuals[i], shape, info, scales, s), float(t0_s[i]), info, s,
                             float(recv_s[i]), json.loads(metas[i]) if metas[i] else None))  # fmt: skip
            last_seq = s
            continue
        if nbytes != 4 * shape[0] * shape[1]:
            raise SinkError(f"sinks.Iceberg: row seq={s} holds {nbytes} data bytes, expected float32 of shape {shape}.")
        if nbytes == 0:
            samples = np.empty(shape, np.float32)  # an empty chunk may have no data buffer at all
        else:
            samples = np.frombuffer(buf, dtype="<f4", count=shape[0] * shape[1], offset=offset).reshape(shape)
        meta = json.loads(metas[i]) if metas[i] else None
        out.append(Chunk(samples, float(t0_s[i]), info, s, float(recv_s[i]), meta))
        last_seq = s
    return out


# The sink -----------------------------------------------------------------------
