"""Rows of the PostgreSQL warm tier in COPY form: chunks and events as psycopg binary COPY rows.

Only the row encoding lives here (per-row cost matters: one row per chunk); which
statement receives the rows (direct COPY or the staging table) is the sink's choice.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from neuraflow.chunk import Chunk, Event
from neuraflow.sinks import _sql

__all__ = ["ChunkRow", "copy_chunks", "copy_events", "meta_json"]

#: A buffered chunk: the chunk, its ``t0`` in integer microseconds, its meta as JSON text (or ``None``).
ChunkRow = tuple[Chunk, int, str | None]


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, Mapping):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def meta_json(meta: Mapping[str, Any]) -> str | None:
    """Metadata as JSON text (``None`` when empty); values JSON cannot hold are stored as text.

    >>> meta_json({}), meta_json({"b": 1, "a": float("nan")})
    (None, '{"a": "nan", "b": 1}')
    """
    if not meta:
        return None
    try:
        return json.dumps(dict(meta), default=str, sort_keys=True, allow_nan=False)
    except ValueError:  # nan/inf: jsonb has no such numbers
        return json.dumps(_finite(dict(meta)), default=str, sort_keys=True)


def copy_chunks(cur: Any, statement: str, rows: Sequence[ChunkRow]) -> None:
    """Run the binary COPY ``statement`` (columns :data:`~neuraflow.sinks._sql.STAGE_COLUMNS`) with ``rows``."""
    from psycopg.types.json import Jsonb

    little = np.little_endian
    to_dt = _sql.us_to_datetime
    with cur.copy(statement) as copy:
        copy.set_types([kind for _, kind in _sql.STAGE_COLUMNS])
        write = copy.write_row
        for chunk, t0_us, meta in rows:
            data = chunk.data if little else chunk.data.astype("<f4")
            shape = data.shape
            write((chunk.info.stream_id, chunk.seq, to_dt(t0_us), chunk.t0_s, chunk.recv_s, chunk.info.sfreq,
                   shape[0], shape[1], data.tobytes(), None if meta is None else Jsonb(meta, dumps=str)))  # fmt: skip


def copy_events(cur: Any, names: _sql.SqlNames, events: Sequence[Event]) -> None:
    """COPY ``events`` into the events table; a numeric value also fills ``value_num``."""
    from psycopg.types.json import Jsonb

    with cur.copy(_sql.copy_events_sql(names)) as copy:
        copy.set_types(list(_sql.EVENT_COPY_TYPES))
        for e in events:
            t_us = _sql.seconds_to_us(e.t_s)
            numeric = isinstance(e.value, (int, float, np.number)) and not isinstance(e.value, bool)
            value = repr(float(e.value)) if numeric else str(e.value)
            meta = meta_json(e.meta)
            meta_value = None if meta is None else Jsonb(meta, dumps=str)  # already JSON text: sent as is
            copy.write_row((e.stream_id, _sql.us_to_datetime(t_us), float(e.t_s), str(e.label), value,
                            float(e.value) if numeric else None, meta_value))  # fmt: skip
