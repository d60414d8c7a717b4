"""Reads of the PostgreSQL warm tier: chunks, events and stream descriptions, from a psycopg cursor.

The functions take a binary cursor (see :func:`neuraflow.sinks._timescale_db.read_cursor`)
and the table's :class:`~neuraflow.sinks._sql.SqlNames`; they never write.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from neuraflow.chunk import Chunk, Event, StreamInfo
from neuraflow.errors import SinkError
from neuraflow.sinks import _sql

__all__ = ["chunks_from_rows", "read_events", "read_stream_info", "select_chunk_rows"]


def _time_filter(column: str, start_s: float | None, end_s: float | None, where: list[str], params: list[Any]) -> None:
    """Append ``start_s <= column < end_s`` (each bound only when given) to ``where``/``params``."""
    if start_s is not None:
        where.append(f"\"{column}\" >= %s")
        params.append(_sql.us_to_datetime(_sql.seconds_to_us(start_s)))
    if end_s is not None:
        where.append(f"\"{column}\" < %s")
        params.append(_sql.us_to_datetime(_sql.seconds_to_us(end_s)))


def read_stream_info(cur: Any, names: _sql.SqlNames, stream_id: str) -> StreamInfo | None:
    """The stored description of ``stream_id`` (``None`` if never stored)."""
    cur.execute(
        f"select \"sfreq\", \"channels\", \"ch_types\", \"units\", \"meta\" from {names.streams} "
        "where \"stream_id\" = %s",
        [stream_id],
    )
    row = cur.fetchone()
    if row is None:
        return None
    sfreq, channels, ch_types, units, meta = row
    return StreamInfo(stream_id, sfreq, tuple(channels), tuple(ch_types), tuple(units), meta)


def select_chunk_rows(cur: Any, names: _sql.SqlNames, stream_id: str, start_s: float | None,
                      end_s: float | None) -> list[tuple]:  # fmt: skip
    """Stored rows of ``stream_id`` with ``t0`` in ``[start_s, end_s)`` (``None``: open), by ``seq``.

    Each row is ``(seq, t0_s, recv_s, sfreq, n_channels, n_samples, data, meta)``.
    """
    where, params = ["\"stream_id\" = %s"], [stream_id]
    _time_filter("t0", start_s, end_s, where, params)
    cur.execute(
        "select \"seq\", \"t0_s\", \"recv_s\", \"sfreq\", \"n_channels\", \"n_samples\", \"data\", \"meta\" "
        f"from {names.samples} where {' and '.join(where)} order by \"seq\", \"t0\"",
        params,
    )
    return cur.fetchall()


def chunks_from_rows(names: _sql.SqlNames, stream_id: str, rows: list[tuple], info: StreamInfo | None) -> list[Chunk]:
    """Chunks of the rows :func:`select_chunk_rows` returned, described by ``info`` (the stored one).

    Data are read-only float32 arrays over the fetched bytes, shape ``(n_channels, n_samples)``.
    A row whose rate or channel count differs from ``info`` (the description changed since, or
    none is stored) gets a :class:`StreamInfo` built from the row, with ``ch<i>`` channels.

    Raises
    ------
    SinkError
        A row's payload length does not match its shape.
    """
    out: list[Chunk] = []
    last_seq = None
    variants: dict[tuple[float, int], StreamInfo] = {}
    for seq, t0_s, recv_s, sfreq, n_channels, n_samples, data, meta in rows:
        if seq == last_seq:
            continue  # the same seq stored with two t0 (never by this sink): keep the first
        last_seq = seq
        if len(data) != 4 * n_channels * n_samples:
            raise SinkError(
                f"sinks.Timescale: row ({stream_id!r}, seq={seq}) of '{names.schema}.{names.table}' holds "
                f"{len(data)} data bytes, expected float32 of shape ({n_channels}, {n_samples})."
            )
        samples = np.frombuffer(data, dtype="<f4").reshape(n_channels, n_samples)
        row_info = info
        if info is None or info.sfreq != sfreq or info.n_channels != n_channels:
            row_info = variants.get((sfreq, n_channels))
            if row_info is None:  # the stream description changed since: keep what the row says
                row_info = variants[(sfreq, n_channels)] = StreamInfo(
                    stream_id, sfreq, tuple(f"ch{i}" for i in range(n_channels))
                )
        out.append(Chunk(samples, t0_s, row_info, seq, recv_s, meta))
    return out


def read_events(cur: Any, names: _sql.SqlNames, stream_id: str | None, start_s: float | None,
                end_s: float | None) -> list[Event]:  # fmt: skip
    """Stored events (all streams or ``stream_id``) with ``t_s`` in ``[start_s, end_s)``, by time.

    A numeric value reads back as ``float``, any other as ``str``.
    """
    where, params = ["true"], []
    if stream_id is not None:
        where.append("\"stream_id\" = %s")
        params.append(stream_id)
    _time_filter("t", start_s, end_s, where, params)
    query = (
        "select \"stream_id\", \"t_s\", \"label\", \"value\", \"value_num\", \"meta\" "
        f"from {names.events} where {' and '.join(where)} order by \"t_s\""
    )
    cur.execute(query, params)
    rows = cur.fetchall()
    return [Event(sid, t_s, label, value if num is None else num, meta) for sid, t_s, label, value, num, meta in rows]
