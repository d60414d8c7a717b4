"""Iceberg table schemas and the chunk/event -> Arrow row conversion of :mod:`neuraflow.sinks.iceberg`.

Layout of the chunk table (one row per chunk *and channel*, so that one channel
can be read without the others):

- a **header row** per chunk (``ch_index = -1``): ``t0_s``, ``recv_s``, ``meta``,
  ``n_channels``, ``info_id`` (a hash of the stream description) and, for integer
  coded chunks, the chunk's reference in ``residuals``;
- a **channel row** per chunk and channel (``ch_index`` = position, ``channel`` =
  name): the samples of that channel, as integer residuals (``codec = 'dm'``,
  :mod:`neuraflow.sinks._encoding`) or float32 bytes in ``data`` (``codec`` null);
- the stream description (``sfreq``, ``channels``, ``ch_types``, ``units``,
  ``stream_meta``) is stored once per file and description, on the first header
  row that uses it (null elsewhere: 64-name lists repeated on every row cost
  0.7 s to decode per hour of chunks).

Each file (one per stream and day and commit) is sorted by ``(ch_index, seq)`` and
cut into row groups at channel boundaries (each channel alone once a file holds
:data:`MIN_ROW_GROUP_ROWS` chunks), so a scan filtered on ``channel`` skips the
other channels' row groups by their statistics.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from neuraflow.chunk import Chunk, Event, StreamInfo
from neuraflow.sinks import _encoding

#: Rows (chunks) per row group below which several channels share one (footer size vs skipping).
MIN_ROW_GROUP_ROWS = 8192
#: Chunks encoded at once: float64 temporaries of 256 x 64 ch x 32 samples = 4 MB stay in cache
#: and are reused (measured: 2x faster than 4096 at once, where page faults dominate).
_ENCODE_BLOCK = 256
#: Columns a chunk table of this layout has; a table without ``ch_index`` predates it.
SAMPLE_COLUMNS = (
    "stream_id", "seq", "ch_index", "channel", "t0", "t0_s", "recv_s", "n_samples", "codec", "residuals", "data",
    "meta", "info_id", "n_channels", "sfreq", "channels", "ch_types", "units", "stream_meta",
)  # fmt: skip
DESCRIPTION_COLUMNS = ("info_id", "stream_id", "sfreq", "channels", "ch_types", "units", "stream_meta")
EVENT_COLUMNS = ("stream_id", "t_s", "t", "label", "value", "value_num", "meta")


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
        return NestedField(field_id, name, ListType(element_id, StringType(), element_required=True), required=False,
                           doc="stream description: on the first header row per file and description only")  # fmt: skip

    samples = Schema(
        NestedField(1, "stream_id", StringType(), required=True),
        NestedField(2, "seq", LongType(), required=True),
        NestedField(3, "ch_index", IntegerType(), required=True, doc="-1: the chunk's header row; c >= 0: channel c"),
        NestedField(4, "channel", StringType(), required=False, doc="channel name (channel rows)"),
        NestedField(5, "t0", TimestamptzType(), required=True, doc="t0_s as a timestamp, for partitioning"),
        NestedField(6, "t0_s", DoubleType(), required=False, doc="device time of the first sample, s since epoch"),
        NestedField(7, "recv_s", DoubleType(), required=False, doc="host receive time, s since epoch"),
        NestedField(8, "n_samples", IntegerType(), required=True),
        NestedField(9, "codec", StringType(), required=False,
                    doc="null: `data` holds float32; 'dm': `residuals`, see neuraflow.sinks._encoding"),
        NestedField(10, "residuals", ListType(11, IntegerType(), element_required=True), required=False,
                    doc="int32 residuals of the channel (channel rows) or the chunk's reference (header rows)"),
        NestedField(12, "data", BinaryType(), required=False, doc="float32 little-endian samples of the channel"),
        NestedField(13, "meta", StringType(), required=False, doc="Chunk.meta as JSON (header rows)"),
        NestedField(14, "info_id", LongType(), required=False, doc="hash of the stream description (header rows)"),
        NestedField(15, "n_channels", IntegerType(), required=False, doc="channels of the chunk (header rows)"),
        NestedField(16, "sfreq", DoubleType(), required=False,
                    doc="stream description: on the first header row per file and description only"),
        strings(17, "channels", 20),
        strings(18, "ch_types", 21),
        strings(19, "units", 22),
        NestedField(23, "stream_meta", StringType(), required=False, doc="StreamInfo.meta as JSON (description rows)"),
    )  # fmt: skip
    samples_spec = PartitionSpec(
        PartitionField(source_id=1, field_id=1000, transform=IdentityTransform(), name="stream_id"),
        PartitionField(source_id=5, field_id=1001, transform=DayTransform(), name="t0_day"),
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


# Helpers -------------------------------------------------------------------------
def _json(meta: Mapping[str, Any]) -> str | None:
    # default=str: a value JSON cannot hold (a numpy scalar, a path) is stored as its text.
    return json.dumps(dict(meta), default=str, sort_keys=True) if meta else None


def _micros(t_s: np.ndarray) -> np.ndarray:
    return np.round(t_s * 1e6).astype(np.int64)


def info_id(info: StreamInfo) -> int:
    """A signed 64-bit hash of everything :class:`StreamInfo` holds (equal descriptions, equal ids)."""
    text = json.dumps([info.stream_id, repr(info.sfreq), info.channels, info.ch_types, info.units, _json(info.meta)])
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little", signed=True)


def _lists(lengths: np.ndarray, values: np.ndarray, valid: np.ndarray | None, kind: pa.DataType) -> pa.Array:
    """A list array from per-row lengths (0 for null rows) and the concatenated values, no Python loop."""
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    mask = None if valid is None or valid.all() else pa.array(~valid)
    return pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values, pa.int32()), mask=mask).cast(kind)


def _binary(lengths: np.ndarray, payload: np.ndarray, valid: np.ndarray) -> pa.Array:
    """A large_binary array over one contiguous buffer (``lengths`` in bytes, 0 for null rows)."""
    n = len(lengths)
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    validity = None if valid.all() else pa.array(valid).buffers()[1]
    return pa.LargeBinaryArray.from_buffers(pa.large_binary(), n, [validity, pa.py_buffer(offsets),
                                            pa.py_buffer(payload.view(np.uint8))], null_count=int(n - valid.sum()))  # fmt: skip


def _constant(value: Any, n: int, kind: pa.DataType) -> pa.Array:
    """``n`` copies of one value (a null when ``None``), without a Python list of n."""
    if value is None:
        return pa.nulls(n, kind)
    return pa.repeat(pa.scalar(value, kind), n)


# Chunks -> rows ---------------------------------------------------------------------
def _encode_block(chunks: list[Chunk], scale: tuple[np.ndarray, np.ndarray] | None):
    """(exact (k,), residuals (k, C, n) int32 or None, reference (k, n) int32 or None, data (k, C, n) float32)."""
    data = np.stack([c.data for c in chunks]) if chunks else np.empty((0, 0, 0), np.float32)
    if scale is None or data.size == 0:
        return np.full(len(chunks), scale is not None and data.size == 0), None, None, data
    exact, residuals, reference = [], [], []
    for i in range(0, len(chunks), _ENCODE_BLOCK):
        e, r, ref = _encoding.encode(data[i : i + _ENCODE_BLOCK], *scale)
        exact.append(e)
        residuals.append(r)
        reference.append(ref)
    return np.concatenate(exact), np.concatenate(residuals), np.concatenate(reference), data


def _partition_table(chunks: list[Chunk], schema: pa.Schema,
                     described: dict[int, dict[str, Any]]) -> tuple[pa.Table, list[int], int]:  # fmt: skip
    """Rows of the chunks of one (stream, day) partition, sorted by (ch_index, seq); row-group sizes; n native.

    ``chunks`` are sorted by seq and unique. ``described`` caches the description columns by ``id(info)``.
    """
    k = len(chunks)
    seq = np.fromiter((c.seq for c in chunks), np.int64, k)
    t0_s = np.fromiter((c.t0_s for c in chunks), np.float64, k)
    t0 = _micros(t0_s)
    n_samples = np.fromiter((c.data.shape[1] for c in chunks), np.int32, k)
    n_channels = np.fromiter((c.data.shape[0] for c in chunks), np.int32, k)
    # Blocks: chunks of one description and length, encoded together.
    blocks: dict[tuple[int, int], list[int]] = {}
    for i, c in enumerate(chunks):
        blocks.setdefault((id(c.info), int(n_samples[i])), []).append(i)
    native = np.zeros(k, bool)
    ref_values: list[np.ndarray] = []  # per block, reference rows of its native chunks
    ref_rows: list[np.ndarray] = []
    channel_parts: list[dict[str, np.ndarray | list]] = []
    for (_, n), rows in blocks.items():
        members = [chunks[i] for i in rows]
        info = members[0].info
        scale = _encoding.native_scale(info.meta, info.n_channels)
        exact, residuals, reference, data = _encode_block(members, scale)
        rows_arr = np.asarray(rows, np.int64)
        native[rows_arr] = exact
        n_ch = info.n_channels
        if reference is not None:
            ref_values.append(reference[exact].ravel())
            ref_rows.append(rows_arr[exact])
        # channel-major: row (c, i) for c in channels, i in chunks of the block (seq order)
        ch = np.repeat(np.arange(n_ch, dtype=np.int32), len(rows))
        member = np.tile(rows_arr, n_ch)
        ok = np.tile(exact, n_ch)
        res = residuals.transpose(1, 0, 2)[:, exact, :].ravel() if residuals is not None else np.empty(0, np.int32)
        raw = np.ascontiguousarray(data.transpose(1, 0, 2)[:, ~exact, :]).ravel() if data.size else np.empty(0, np.float32)
        channel_parts.append({"ch": ch, "member": member, "native": ok, "res": res, "raw": raw.astype("<f4", copy=False),
                              "names": info.channels, "n": n})  # fmt: skip
    table = pa.Table.from_arrays(
        _header_columns(chunks, schema, seq=seq, t0=t0, t0_s=t0_s, n_samples=n_samples, n_channels=n_channels,
                        native=native, ref=(ref_rows, ref_values), described=described),
        schema=schema,
    )  # fmt: skip
    pieces = [table]
    stream_id = chunks[0].info.stream_id
    for part in channel_parts:
        m = len(part["ch"])
        n = part["n"]
        lengths = np.full(m, n, np.int64)
        columns = {
            "stream_id": _constant(stream_id, m, schema.field("stream_id").type),
            "seq": pa.array(seq[part["member"]]),
            "ch_index": pa.array(part["ch"]),
            "channel": pa.DictionaryArray.from_arrays(pa.array(part["ch"]), pa.array(part["names"])).cast(
                schema.field("channel").type),
            "t0": pa.array(t0[part["member"]], pa.timestamp("us", tz="UTC")),
            "n_samples": _constant(n, m, pa.int32()),
            "codec": pa.array(np.where(part["native"], _encoding.CODEC, None).tolist(), schema.field("codec").type)
            if not part["native"].all() else _constant(_encoding.CODEC, m, schema.field("codec").type),
            "residuals": _lists(np.where(part["native"], lengths, 0), part["res"], part["native"],
                                schema.field("residuals").type),
            "data": _binary(np.where(part["native"], 0, lengths * 4), part["raw"], ~part["native"]),
        }  # fmt: skip
        arrays = [columns[f.name] if f.name in columns else pa.nulls(m, f.type) for f in schema]
        pieces.append(pa.Table.from_arrays(arrays, schema=schema))
    rows = pa.concat_tables(pieces)
    if len(channel_parts) > 1:  # several blocks interleave: sort (rare: a layout or chunk-size change)
        order = np.lexsort((rows.column("seq").to_numpy(), rows.column("ch_index").to_numpy()))
        rows = rows.take(pa.array(order))
    return rows, _row_groups(rows.column("ch_index").to_numpy(), k), int(native.sum())


def _header_columns(chunks: list[Chunk], schema: pa.Schema, *, seq, t0, t0_s, n_samples, n_channels, native,
                    ref, described: dict[int, dict[str, Any]]) -> list[pa.Array]:  # fmt: skip
    """The header rows' columns, in schema order (``described`` caches each description's values by ``id(info)``)."""
    k = len(chunks)
    rows, values = ref
    lengths = np.zeros(k, np.int64)
    for block_rows in rows:
        lengths[block_rows] = n_samples[block_rows]
    starts = np.cumsum(lengths) - lengths
    reference = np.empty(int(lengths.sum()), np.int32)  # reference rows in chunk (seq) order
    for block_rows, block_values in zip(rows, values):
        if len(block_rows):
            n = int(n_samples[block_rows[0]])
            reference[np.repeat(starts[block_rows], n) + np.tile(np.arange(n), len(block_rows))] = block_values
    # info_id on every header row; the description on the first row of each description only
    first: dict[int, int] = {}
    for i, c in enumerate(chunks):
        first.setdefault(id(c.info), i)
    for key, i in first.items():
        if key not in described:
            info = chunks[i].info
            described[key] = {"info_id": info_id(info), "sfreq": info.sfreq, "channels": list(info.channels),
                              "ch_types": list(info.ch_types), "units": list(info.units),
                              "stream_meta": _json(info.meta)}  # fmt: skip
    description = {name: [None] * k for name in ("sfreq", "channels", "ch_types", "units", "stream_meta")}
    for key, i in first.items():
        for name, column in description.items():
            column[i] = described[key][name]
    ids = [described[id(c.info)]["info_id"] for c in chunks] if len(first) > 1 else [described[next(iter(first))]["info_id"]] * k
    kind = {f.name: f.type for f in schema}
    columns = {
        "stream_id": _constant(chunks[0].info.stream_id, k, kind["stream_id"]),
        "seq": pa.array(seq),
        "ch_index": pa.array(np.full(k, -1, np.int32)),
        "t0": pa.array(t0, pa.timestamp("us", tz="UTC")),
        "t0_s": pa.array(t0_s),
        "recv_s": pa.array(np.fromiter((c.recv_s for c in chunks), np.float64, k)),
        "n_samples": pa.array(n_samples),
        "n_channels": pa.array(n_channels),
        "meta": pa.array([_json(c.meta) if c.meta else None for c in chunks], kind["meta"]),
        "codec": _constant(_encoding.CODEC, k, kind["codec"]) if native.all()
        else pa.array(np.where(native, _encoding.CODEC, None).tolist(), kind["codec"]),
        "residuals": _lists(lengths, reference, native, kind["residuals"]),
        "info_id": pa.array(np.array(ids, np.int64)),
        **{name: pa.array(column, kind[name]) for name, column in description.items()},
    }  # fmt: skip
    return [columns[f.name] if f.name in columns else pa.nulls(k, f.type) for f in schema]


def _row_groups(ch_index: np.ndarray, n_chunks: int) -> list[int]:
    """Row-group sizes cut at ``ch_index`` changes, each at least :data:`MIN_ROW_GROUP_ROWS` rows (bar the last)."""
    starts = np.flatnonzero(np.diff(ch_index)) + 1
    bounds = [0, *starts.tolist(), len(ch_index)]
    sizes: list[int] = []
    start = 0
    for end in bounds[1:]:
        if end - start >= MIN_ROW_GROUP_ROWS or end == len(ch_index):
            sizes.append(end - start)
            start = end
    return sizes


def _chunks_to_arrow(chunks: Sequence[Chunk], schema: pa.Schema, counts: dict[str, int]) -> Iterator[tuple[pa.Table, list[int]]]:
    """One table per (stream, day) partition with its row-group sizes, built as the caller iterates;
    ``counts["native"]`` is incremented by the number of integer-coded chunks."""
    t0_day = np.floor_divide(_micros(np.fromiter((c.t0_s for c in chunks), np.float64, len(chunks))), 86_400_000_000)
    groups: dict[tuple[str, int], list[Chunk]] = {}
    for c, day in zip(chunks, t0_day.tolist()):
        groups.setdefault((c.info.stream_id, day), []).append(c)
    described: dict[int, dict[str, Any]] = {}
    for members in groups.values():
        members.sort(key=lambda c: c.seq)
        rows, sizes, native = _partition_table(members, schema, described)
        counts["native"] = counts.get("native", 0) + native
        yield rows, sizes


def _events_to_arrow(events: Sequence[Event], schema: pa.Schema) -> pa.Table:
    t_s = np.array([e.t_s for e in events], np.float64)
    numeric = [isinstance(e.value, (int, float)) and not isinstance(e.value, bool) for e in events]
    columns = {
        "stream_id": pa.array([e.stream_id for e in events], pa.large_string()),
        "t_s": pa.array(t_s),
        "t": pa.array(_micros(t_s), pa.timestamp("us", tz="UTC")),
        "label": pa.array([str(e.label) for e in events], pa.large_string()),
        "value": pa.array([repr(float(e.value)) if num else str(e.value) for e, num in zip(events, numeric)], pa.large_string()),
        "value_num": pa.array([float(e.value) if num else None for e, num in zip(events, numeric)], pa.float64()),
        "meta": pa.array([_json(e.meta) for e in events], pa.large_string()),
    }
    return pa.Table.from_arrays([columns[name] for name in schema.names], schema=schema)
