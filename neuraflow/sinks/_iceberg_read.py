"""Rows of the Iceberg chunk table -> chunks (the layout is described in :mod:`neuraflow.sinks._iceberg_arrow`).

Everything is vectorised over rows: the channel rows of all chunks are decoded in
one numpy pass and scattered into one buffer, of which every chunk's data is a
read-only view. An hour of 32-sample chunks at 1 kHz is 112,500 chunks, so even
the :class:`Chunk` constructor's checks (5 us each) are skipped for rows read back (``Chunk.trusted``)
(they were checked when written).
"""

from __future__ import annotations

import gc
import json
from collections.abc import Callable, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from neuraflow.chunk import Chunk, StreamInfo
from neuraflow.errors import SinkError
from neuraflow.sinks import _encoding
from neuraflow.sinks._iceberg_arrow import DESCRIPTION_COLUMNS

_NO_META: Any = MappingProxyType({})


class MissingChannelError(SinkError):
    """A chunk read with ``channels=`` does not have one of them (its stream description lacks it)."""


def describe_rows(rows: pa.Table) -> dict[int, StreamInfo]:
    """``info_id -> StreamInfo`` from the rows of ``rows`` that carry a description (``sfreq`` not null)."""
    with_description = rows.filter(pc.is_valid(rows.column("sfreq")))
    out: dict[int, StreamInfo] = {}
    for row in with_description.select(["info_id", "stream_id", "sfreq", "channels", "ch_types", "units",
                                        "stream_meta"]).to_pylist():  # fmt: skip
        if row["info_id"] not in out:
            meta = json.loads(row["stream_meta"]) if row["stream_meta"] else None
            out[row["info_id"]] = StreamInfo(row["stream_id"], row["sfreq"], row["channels"], row["ch_types"],
                                             row["units"], meta)  # fmt: skip
    return out


_DESCRIPTIONS: dict[tuple[str, str, int], StreamInfo] = {}  # (catalog, table, info_id): content-addressed
_DESCRIPTIONS_MAX = 4096


def describe_from_table(table, where: tuple[str, str], stream_id: str, snapshot_id: int | None,
                        ids: list[int]) -> dict[int, StreamInfo]:  # fmt: skip
    """The descriptions ``ids`` of ``stream_id``, from a process-wide cache or one scan of the rows carrying
    them (a read whose time range starts inside a file does not see that file's description row)."""
    from pyiceberg.expressions import And, EqualTo, In, NotNull

    found = {i: _DESCRIPTIONS[(*where, i)] for i in ids if (*where, i) in _DESCRIPTIONS}
    wanted = [i for i in ids if i not in found]
    if wanted:
        row_filter = And(And(EqualTo("stream_id", stream_id), In("info_id", set(wanted))), NotNull("sfreq"))
        rows = table.scan(row_filter=row_filter, selected_fields=DESCRIPTION_COLUMNS, snapshot_id=snapshot_id)
        for key, info in describe_rows(rows.to_arrow()).items():
            if len(_DESCRIPTIONS) >= _DESCRIPTIONS_MAX:
                _DESCRIPTIONS.clear()
            found[key] = _DESCRIPTIONS[(*where, key)] = info
    return found


def _flat_list(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values int32, start of each row in values, length of each row; 0 for null rows)."""
    array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    offsets = array.offsets.to_numpy().astype(np.int64)  # honours the array's slice offset
    lengths = np.diff(offsets)
    if array.null_count:
        lengths[~array.is_valid().to_numpy(zero_copy_only=False)] = 0
    values = array.values.to_numpy(zero_copy_only=False) if len(array.values) else np.empty(0, np.int32)
    return values, offsets[:-1], lengths


def _flat_binary(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(float32 view of the data buffer, start of each row in it, length of each row in samples)."""
    array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    array = array.cast(pa.large_binary())
    _, offsets_buf, data_buf = array.buffers()
    offsets = np.frombuffer(offsets_buf, np.int64)[array.offset : array.offset + len(array) + 1]
    lengths = np.diff(offsets)
    if array.null_count:
        lengths[~array.is_valid().to_numpy(zero_copy_only=False)] = 0
    if np.any(offsets % 4) or data_buf is None:
        raw = np.frombuffer(data_buf, np.uint8).copy() if data_buf is not None else np.empty(0, np.uint8)
        raw = np.concatenate([raw, np.zeros(-len(raw) % 4, np.uint8)])
        if np.any(offsets % 4):
            raise SinkError("sinks.Iceberg: a channel row holds a data length that is not whole float32 samples.")
        return raw.view("<f4"), offsets[:-1] // 4, lengths // 4
    return np.frombuffer(data_buf, "<f4", count=len(data_buf) // 4), offsets[:-1] // 4, lengths // 4


def rows_to_chunks(rows: pa.Table, channels: Sequence[str] | None,
                   describe: Callable[[list[int]], dict[int, StreamInfo]], start_s: float | None = None,
                   end_s: float | None = None) -> list[Chunk]:  # fmt: skip
    """Rebuild chunks in seq order from header and channel rows (``channels``: names to keep, in this order).

    ``describe(info_ids)`` returns the descriptions the rows do not carry themselves. Only
    chunks with ``t0_s`` in ``[start_s, end_s)`` are rebuilt (``None``: open). A seq stored
    twice (two writers) reads back once.
    """
    if rows.num_rows == 0:
        return []
    enabled = gc.isenabled()
    gc.disable()  # 10^5 chunks in one go: generational collections would rescan them all, repeatedly
    try:
        return _rows_to_chunks(rows, channels, describe, start_s, end_s)
    finally:
        if enabled:
            gc.enable()


def _column(rows: pa.Table, name: str) -> np.ndarray:
    return rows.column(name).to_numpy()  # nulls read as nan (float64): only for small ints and floats


def _rows_to_chunks(rows: pa.Table, channels: Sequence[str] | None, describe: Callable[[list[int]], dict[int, StreamInfo]],
                    start_s: float | None, end_s: float | None) -> list[Chunk]:  # fmt: skip
    # Work on row indices into ``rows``: no copy of the payload columns.
    ch_index = _column(rows, "ch_index")
    seq_all = _column(rows, "seq")
    header_rows = np.flatnonzero(ch_index < 0)
    if start_s is not None or end_s is not None:  # exact, on t0_s (the scan filtered t0 to the microsecond)
        t0_s = rows.column("t0_s").to_numpy()[header_rows]
        inside = np.ones(len(header_rows), bool)
        if start_s is not None:
            inside &= t0_s >= start_s
        if end_s is not None:
            inside &= t0_s < end_s
        header_rows = header_rows[inside]
    if len(header_rows) == 0:
        return []
    body_rows = np.flatnonzero(ch_index >= 0)
    uniq, first = np.unique(seq_all[header_rows], return_index=True)  # sorted by seq; the first copy wins
    duplicated = len(uniq) != len(header_rows)
    hdr = header_rows[first]
    infos = describe_rows(rows)
    ids = pc.fill_null(rows.column("info_id"), 0).to_numpy()[hdr]  # not via float64 (nulls): 64-bit ids
    distinct, info_of = np.unique(ids, return_inverse=True)
    info_of = info_of.reshape(-1)
    distinct_ids = distinct.tolist()
    missing = sorted(set(distinct_ids) - set(infos))
    if missing:
        infos.update(describe(missing))
    lost = sorted(set(distinct_ids) - set(infos))
    if lost:
        raise SinkError(f"sinks.Iceberg: no row describes stream description(s) {lost}: the table is damaged.")
    if channels is not None:
        for info in (infos[i] for i in distinct_ids):
            absent = [name for name in channels if name not in info.channels]
            if absent:
                raise MissingChannelError(
                    f"sinks.Iceberg: stream {info.stream_id!r} has no channel(s) {absent} in some of the chunks "
                    f"read (their description has {info.n_channels} channels: {list(info.channels)[:8]}"
                    f"{' ...' if info.n_channels > 8 else ''})."
                )
    k = len(uniq)
    n_samples = _column(rows, "n_samples")[hdr].astype(np.int64)

    # Which channel rows go where ------------------------------------------------
    body_seq = seq_all[body_rows]
    body_ch = ch_index[body_rows].astype(np.int64)
    if channels is None:
        position = body_ch
        n_sel = _column(rows, "n_channels")[hdr].astype(np.int64)
    else:
        names = rows.column("channel").combine_chunks().dictionary_encode()
        lookup = {name: i for i, name in enumerate(channels)}
        to_position = np.array([lookup.get(v, -1) for v in names.dictionary.to_pylist()] + [-1], np.int64)
        codes = pc.fill_null(names.indices, -1).to_numpy()[body_rows]  # -1: the header rows' null
        position = to_position[codes]
        n_sel = np.full(k, len(channels), np.int64)
    chunk_of = np.minimum(np.searchsorted(uniq, body_seq), k - 1)
    keep = (position >= 0) & (uniq[chunk_of] == body_seq)
    if duplicated:  # keep one row per (seq, position)
        key = np.where(keep, chunk_of * (int(position.max(initial=0)) + 1) + position, -1)
        _, once = np.unique(key, return_index=True)
        unique_keep = np.zeros(len(keep), bool)
        unique_keep[once] = True
        keep &= unique_keep
    if not keep.all():
        body_rows, chunk_of, position, body_ch = body_rows[keep], chunk_of[keep], position[keep], body_ch[keep]
    found = np.bincount(chunk_of, minlength=k)
    if np.any(found != n_sel):
        bad = int(np.flatnonzero(found != n_sel)[0])
        raise SinkError(
            f"sinks.Iceberg: chunk seq={int(uniq[bad])} has {int(found[bad])} of the {int(n_sel[bad])} channel rows "
            "it should have: the table is damaged."
        )
    sizes = n_sel * n_samples
    chunk_start = np.cumsum(sizes) - sizes
    row_len = n_samples[chunk_of]
    row_dest = chunk_start[chunk_of] + position * row_len
    out = np.empty(int(sizes.sum()), np.float32)

    # Samples --------------------------------------------------------------------------
    codec = rows.column("codec")
    native = codec.is_valid().to_numpy(zero_copy_only=False)[body_rows] if codec.null_count else None
    distinct_infos = [infos[i] for i in distinct_ids]
    if native is None or native.any():
        values, starts, lengths = _flat_list(rows.column("residuals"))
        these = slice(None) if native is None else native
        picked, at = body_rows[these], chunk_of[these]
        if np.any(lengths[picked] != n_samples[at]) or np.any(lengths[hdr[at]] != n_samples[at]):
            raise SinkError("sinks.Iceberg: an integer-coded row's residuals or reference do not match n_samples.")
        scale, offset = _row_scales(distinct_infos, info_of[at], body_ch[these])
        _scatter(out, row_dest[these], n_samples[at], lambda r, idx: _encoding.decode(
            values[starts[picked[r]][:, None] + idx], values[starts[hdr[at[r]]][:, None] + idx],
            scale if np.ndim(scale) == 0 else scale[r, None], offset if np.ndim(offset) == 0 else offset[r, None]))
    if native is not None and not native.all():
        raw, starts, lengths = _flat_binary(rows.column("data"))
        picked = body_rows[~native]
        if np.any(lengths[picked] != row_len[~native]):
            raise SinkError("sinks.Iceberg: a channel row's float32 data does not match its chunk's n_samples.")
        _scatter(out, row_dest[~native], row_len[~native], lambda r, idx: raw[starts[picked[r]][:, None] + idx])
    out.flags.writeable = False

    # Chunks ---------------------------------------------------------------------------
    subs = [info if channels is None else _restrict(info, channels) for info in distinct_infos]
    chunk_info = [subs[j] for j in info_of.tolist()]
    t0_s = rows.column("t0_s").to_numpy()[hdr].tolist()
    recv_s = rows.column("recv_s").to_numpy()[hdr].tolist()  # null reads as nan
    meta_column = rows.column("meta")
    metas = meta_column.take(pa.array(hdr)).to_pylist() if meta_column.null_count < rows.num_rows else [None] * k
    if np.all(sizes == sizes[0]) and np.all(n_samples == n_samples[0]):  # one shape: views in one go
        views = list(out.reshape(k, int(n_sel[0]), int(n_samples[0])))
    else:
        start = chunk_start.tolist()
        views = [out[a : a + c * n].reshape(c, n) for a, c, n in zip(start, n_sel.tolist(), n_samples.tolist())]
    make, empty, loads = Chunk.trusted, _NO_META, json.loads  # checked when written
    return [make(data, t, info, s, r, empty if m is None else MappingProxyType(loads(m)))
            for data, t, info, s, r, m in zip(views, t0_s, chunk_info, uniq.tolist(), recv_s, metas)]


_BLOCK_VALUES = 1 << 18  # samples decoded per step: temporaries stay small (page faults cost more than numpy)


def _scatter(out: np.ndarray, dest: np.ndarray, lengths: np.ndarray,
             produce: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> None:  # fmt: skip
    """``out[dest[i] : dest[i] + lengths[i]] = produce(rows, idx)[row i]`` for all rows, by length and block.

    ``produce(r, idx)`` gets the row numbers ``r`` (one length ``n``) and ``idx = arange(n)``, and
    returns their samples, shape ``(len(r), n)``.
    """
    for n in np.unique(lengths).tolist():
        if n == 0:
            continue
        rows = np.flatnonzero(lengths == n) if lengths.size and lengths.min() != lengths.max() else None
        count = len(lengths) if rows is None else len(rows)
        idx = np.arange(n)
        step = max(1, _BLOCK_VALUES // n)
        for lo in range(0, count, step):
            r = np.arange(lo, min(lo + step, count)) if rows is None else rows[lo : lo + step]
            out[dest[r][:, None] + idx] = produce(r, idx)


def _row_scales(infos: list[StreamInfo], info_of: np.ndarray, ch: np.ndarray) -> tuple[np.ndarray | float, ...]:
    """Per row, the scale and offset of its channel ``ch`` in its description ``infos[info_of]``
    (two floats when every row has the same)."""
    scale = np.empty(len(ch), np.float64)
    offset = np.empty(len(ch), np.float64)
    for j in np.unique(info_of).tolist():  # only descriptions with integer-coded rows
        info = infos[j]
        found = _encoding.native_scale(info.meta, info.n_channels)
        if found is None:
            raise SinkError(f"sinks.Iceberg: stream {info.stream_id!r} has integer-coded rows but no usable "
                            "scale_v_per_count in its stream_meta; cannot decode them.")  # fmt: skip
        mask = info_of == j if len(infos) > 1 else slice(None)
        scale[mask] = found[0][ch[mask], 0]
        offset[mask] = found[1][ch[mask], 0]
    if scale.size and np.all(scale == scale[0]) and np.all(offset == offset[0]):
        return float(scale[0]), float(offset[0])
    return scale, offset


def _restrict(info: StreamInfo, channels: Sequence[str]) -> StreamInfo:
    index = {name: i for i, name in enumerate(info.channels)}
    picks = [index[name] for name in channels]
    return info.replace(channels=tuple(info.channels[i] for i in picks), ch_types=tuple(info.ch_types[i] for i in picks),
                        units=tuple(info.units[i] for i in picks))  # fmt: skip
