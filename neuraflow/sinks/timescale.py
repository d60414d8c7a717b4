"""The warm tier: chunks and events in PostgreSQL, with TimescaleDB when the server has it.

One row per chunk in ``<schema>.<table>`` (payload ``bytea``, float32 little-endian),
one row per stream in ``<table>_streams`` and one per event in ``<table>_events``.
At :meth:`Timescale.open` the sink looks in ``pg_available_extensions``:

- **TimescaleDB present** (``mode == "timescale"``): the chunk and events tables
  are hypertables on time (``chunk_interval_s`` per chunk); rows older than
  ``hot_retention_s`` are compressed (segment by ``stream_id``, order by ``seq``)
  and rows older than ``retention_s`` dropped, both by TimescaleDB background
  policies.
- **TimescaleDB absent** (``mode == "native"``): the chunk table is
  ``partition by range (t0)``; partitions of ``chunk_interval_s`` are created
  ahead of the data that arrives (and of the wall clock), rows outside every
  partition land in a DEFAULT partition, a BRIN index on ``t0`` is inherited by
  every partition, and :meth:`Timescale.apply_retention` drops partitions older
  than ``retention_s`` (run at open and every ``chunk_interval_s`` by flushes).
  There is no compression on this path: ``hot_retention_s`` is unused.

Both paths are written by :func:`neuraflow.sinks._sql.ddl`; :meth:`Timescale.ddl`
shows them. The TimescaleDB statements are checked as text and by detection
against a server without the extension; they have not run on a TimescaleDB server.

Loading: each flush COPYs the buffered chunks (psycopg 3, binary format) into a
session-private staging table, then ``insert ... select ... on conflict do nothing``
moves them into the chunk table, all in one transaction, so a flush is
all-or-nothing and a re-sent chunk is stored once.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from neuraflow._validate import check_int, check_option, check_positive
from neuraflow.chunk import Chunk, Event, StreamInfo
from neuraflow.errors import PipelineDefinitionError, SinkError
from neuraflow.sinks import _sql
from neuraflow.sinks._sql import SqlNames

__all__ = ["Timescale", "timescale_available"]

log = logging.getLogger(__name__)

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DETECT_SQL = "select count(*) from pg_available_extensions where name = 'timescaledb'"
#: At most this many partitions are created by one flush; rows beyond go to the DEFAULT partition.
MAX_NEW_PARTITIONS_PER_FLUSH = 256
#: Partitions kept ready ahead of the wall clock (native mode).
PARTITIONS_AHEAD = 2
_MIN_US = _sql.datetime_to_us(_sql.us_to_datetime(0).replace(year=1))
_MAX_US = _sql.datetime_to_us(_sql.us_to_datetime(0).replace(year=9999))
_MAX_RETRY_BACKOFF_S = 5.0


# Helpers ---------------------------------------------------------------------------
def _make_engine(url: str, application_name: str):
    from sqlalchemy import create_engine

    return create_engine(
        url,
        pool_pre_ping=True,  # a connection killed while idle is replaced at checkout
        pool_size=2,
        max_overflow=2,
        connect_args={"application_name": application_name, "options": "-c timezone=UTC", "connect_timeout": 5},
    )


def _safe_url(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - only used in messages
        return "<invalid url>"


def _is_connection_error(exc: BaseException) -> bool:
    """The server or the network went away (retry later), as opposed to a bad statement or row."""
    import psycopg
    from sqlalchemy import exc as sa_exc

    if isinstance(exc, sa_exc.DBAPIError):
        return bool(exc.connection_invalidated) or isinstance(exc.orig, (psycopg.OperationalError, psycopg.InterfaceError))
    if isinstance(exc, sa_exc.TimeoutError):  # pool exhausted
        return True
    return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))


def timescale_available(engine: Any) -> bool:
    """Whether the server behind ``engine`` (an SQLAlchemy engine or URL) can load TimescaleDB.

    Runs ``select count(*) from pg_available_extensions where name = 'timescaledb'``.
    """
    from sqlalchemy import text

    own = isinstance(engine, str)
    if own:
        engine = _make_engine(engine, "neuraflow-detect")
    try:
        with engine.connect() as conn:
            return bool(conn.execute(text(DETECT_SQL)).scalar())
    finally:
        if own:
            engine.dispose()


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, Mapping):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _json(meta: Mapping[str, Any]) -> str | None:
    """Metadata as JSON text (``None`` when empty); values JSON cannot hold are stored as text."""
    if not meta:
        return None
    try:
        return json.dumps(dict(meta), default=str, sort_keys=True, allow_nan=False)
    except ValueError:  # nan/inf: jsonb has no such numbers
        return json.dumps(_finite(dict(meta)), default=str, sort_keys=True)


def _jsonb(meta: Mapping[str, Any], wrapper: Any) -> Any:
    text = _json(meta)
    return None if text is None else wrapper(text, dumps=str)  # already JSON text: dump it as is


def _t_us(t_s: float) -> int:
    return round(t_s * 1e6)


def _parse_bound(expr: str) -> tuple[int, int] | None:
    """``FOR VALUES FROM ('...') TO ('...')`` (session time zone UTC) -> (lo_us, hi_us); None for DEFAULT."""
    from datetime import datetime

    head, sep, tail = expr.partition("FROM ('")
    if not sep:
        return None
    lo, sep, rest = tail.partition("') TO ('")
    hi = rest.partition("')")[0]
    if not sep or not hi:
        return None
    try:
        return _sql.datetime_to_us(datetime.fromisoformat(lo)), _sql.datetime_to_us(datetime.fromisoformat(hi))
    except ValueError:  # MINVALUE/MAXVALUE or an unexpected format: not one of ours
        return None


# The sink -----------------------------------------------------------------------------
class Timescale:
    """Store chunks and events in PostgreSQL (the warm tier), TimescaleDB when available.

    Parameters
    ----------
    url : str
        SQLAlchemy URL with the psycopg 3 driver, ``postgresql+psycopg://user@host:port/db``.
    table : str
        Chunk table; ``<table>_streams`` and ``<table>_events`` sit beside it (and,
        natively, ``<table>_p<YYYYMMDD_HHMMSS>`` partitions and ``<table>_default``).
        Lower-case letters, digits and ``_``, at most 40 characters.
    schema : str
        Schema of every table (created if absent).
    chunk_interval_s : int
        Time span of one partition / hypertable chunk, whole seconds >= 1.
    hot_retention_s : int
        TimescaleDB only: rows older than this are compressed.
    retention_s : int
        Rows older than this (by device time ``t0``) are dropped.
    max_buffer_chunks : int
        Bound on chunks (and, separately, events) held while the database cannot
        be reached. When full, ``on_full`` decides.
    force_mode : {None, "timescale", "native"}
        ``None`` picks ``"timescale"`` when the extension is available (and the
        table is not already natively partitioned), else ``"native"``.
    on_full : {"raise", "drop_oldest"}
        With a full buffer: refuse the batch with :class:`SinkError` (the runtime
        keeps it and re-sends), or drop the oldest buffered chunks (counted in
        ``stats()["dropped"]``).
    flush_every_s : float
        :meth:`write_batch` flushes by itself once this long has passed since the last flush.
    flush_chunks : int
        ... or once this many chunks are buffered.
    application_name : str
        ``application_name`` of the connections (visible in ``pg_stat_activity``).

    Notes
    -----
    Idempotent on ``(stream_id, seq)``: duplicates inside the buffer are dropped
    at once, and rows already in the table are skipped by ``on conflict do
    nothing`` on the primary key ``(stream_id, seq, t0)`` (the key of a
    partitioned table must hold the partition key; a re-sent chunk has the same
    ``t0``). Both are counted in ``stats()["duplicates_dropped"]``.

    Faults: a connection error (server restart, ``pg_terminate_backend``,
    network) during a flush rolls the transaction back and keeps the buffer; the
    connection is discarded, the pool pings before reuse, and the next
    :meth:`write_batch` (after a short back-off) or :meth:`flush` retries. A
    flush whose commit was cut off may have landed: the retry then stores
    nothing twice. :meth:`flush` raises :class:`SinkError` while the database is
    unreachable; :meth:`write_batch` raises only when the buffer is full.

    Crash semantics: what is buffered and not flushed is lost with the process;
    the runtime re-sends from its last acknowledged point.

    Examples
    --------
    >>> sink = Timescale(table="eeg_raw", schema="warm")   # doctest: +SKIP
    >>> sink.open(); sink.write_batch(chunks); sink.flush()   # doctest: +SKIP
    >>> sink.mode, sink.read("eeg-0", start_s=t - 60)   # doctest: +SKIP
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        table: str = "neuraflow_samples",
        schema: str = "public",
        chunk_interval_s: int = 3600,
        hot_retention_s: int = 86_400,
        retention_s: int = 30 * 86_400,
        max_buffer_chunks: int = 50_000,
        force_mode: str | None = None,
        on_full: str = "raise",
        flush_every_s: float = 1.0,
        flush_chunks: int = 10_000,
        application_name: str = "neuraflow",
    ) -> None:
        where = "sinks.Timescale"
        self.names = SqlNames(schema, table)
        self.url = url
        self.table = table
        self.schema = schema
        self.chunk_interval_s = self._whole_seconds("chunk_interval_s", chunk_interval_s)
        self.hot_retention_s = self._whole_seconds("hot_retention_s", hot_retention_s)
        self.retention_s = self._whole_seconds("retention_s", retention_s)
        self.max_buffer_chunks = check_int(where, "max_buffer_chunks", max_buffer_chunks)
        if force_mode is not None:
            check_option(where, "force_mode", force_mode, _sql.MODES)
        self.force_mode = force_mode
        self.on_full = check_option(where, "on_full", on_full, ("raise", "drop_oldest"))
        self.flush_every_s = check_positive(where, "flush_every_s", flush_every_s, allow_zero=True)
        self.flush_chunks = check_int(where, "flush_chunks", flush_chunks)
        self.application_name = str(application_name)
        self._reset_runtime_state()

    @staticmethod
    def _whole_seconds(name: str, value: Any) -> int:
        seconds = check_positive("sinks.Timescale", name, value)
        if seconds < 1 or seconds != int(seconds):
            raise PipelineDefinitionError(f"sinks.Timescale: {name}={value!r} must be a whole number of seconds >= 1.")
        return int(seconds)

    def _reset_runtime_state(self) -> None:
        self._lock = threading.RLock()
        self._engine = None
        self.mode: str | None = None
        # (stream_id, seq) -> (chunk, t0 in us, meta JSON); insertion order = arrival order.
        self._buffer: dict[tuple[str, int], tuple[Chunk, int, str | None]] = {}
        self._event_buffer: list[Event] = []
        self._infos: dict[str, StreamInfo] = {}  # stream descriptions seen, by id
        self._infos_stored: dict[str, StreamInfo] = {}  # ... and those already upserted
        self._ranges: list[tuple[int, int]] = []  # native partitions [lo_us, hi_us), sorted
        self._last_flush = time.monotonic()
        self._retry_at = 0.0
        self._backoff_s = 0.0
        self._next_maintenance = 0.0
        self._connects = 0
        self._conn_info: dict[str, Any] = {}  # pool record info of the connection in use
        self._on_commit: list[str] = []
        self._suspect_duplicates = True  # the first flush after open may repeat a crashed run's last one
        self._stats: dict[str, Any] = {
            "chunks_offered": 0, "chunks_written": 0, "duplicates_dropped": 0, "events_written": 0,
            "flushes": 0, "failed_flushes": 0, "connection_errors": 0, "dropped": 0,
            "partitions_created": 0, "partitions_dropped": 0, "upsert_fallbacks": 0, "last_error": None,
            "last_flush_s": None,
        }  # fmt: skip

    # The sink travels to its actor pickled; an engine does not pickle.
    def __getstate__(self) -> dict[str, Any]:
        keep = ("names", "url", "table", "schema", "chunk_interval_s", "hot_retention_s", "retention_s",
                "max_buffer_chunks", "force_mode", "on_full", "flush_every_s", "flush_chunks", "application_name")  # fmt: skip
        return {k: self.__dict__[k] for k in keep}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset_runtime_state()

    def __repr__(self) -> str:
        return f"Timescale(url={_safe_url(self.url)!r}, table={self.schema}.{self.table}, mode={self.mode!r})"

    @property
    def qualified_table(self) -> str:
        return f"{self.schema}.{self.table}"

    def ddl(self, mode: str) -> list[str]:
        """The statements :meth:`open` runs to create the tables in ``mode`` (``"timescale"`` or ``"native"``)."""
        return _sql.ddl(self.names, mode, chunk_interval_s=self.chunk_interval_s,
                        hot_retention_s=self.hot_retention_s, retention_s=self.retention_s)  # fmt: skip

    # Sink protocol ----------------------------------------------------------------------
    def open(self) -> None:
        """Connect, pick the mode, create tables (and partitions ahead) if absent.

        Raises
        ------
        SinkError
            The server cannot be reached, ``force_mode="timescale"`` without the
            ``timescaledb`` extension, or the table exists in the other layout.
        """
        from sqlalchemy import event

        with self._lock:
            if self._engine is not None:
                return
            engine = _make_engine(self.url, self.application_name)

            @event.listens_for(engine, "connect")
            def _count_connect(dbapi_conn, record):  # noqa: ARG001 - SQLAlchemy's signature
                self._connects += 1

            try:
                self._engine = engine
                self.mode = self._pick_mode()
                with self._transaction() as cur:
                    cur.execute(f"select pg_advisory_xact_lock(hashtext({self.names.lock_key}))")
                    cur.execute("select count(*) from pg_namespace where nspname = %s", [self.schema])
                    schema_exists = cur.fetchone()[0] > 0  # then skip create schema: it needs CREATE on the database
                    for statement in self.ddl(self.mode):
                        if not (schema_exists and statement.startswith("create schema")):
                            cur.execute(statement)
                if self.mode == "native":
                    self._load_partitions()
                    self._maintain(time.time())
            except Exception as exc:
                self._engine, self.mode = None, None
                engine.dispose()
                if isinstance(exc, SinkError):
                    raise
                raise SinkError(
                    f"sinks.Timescale: cannot open table {self.qualified_table!r} at {_safe_url(self.url)}: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            self._last_flush = time.monotonic()

    def write_batch(self, chunks: Sequence[Chunk]) -> None:
        """Buffer ``chunks`` not buffered yet; flush when due (``flush_every_s``, ``flush_chunks``).

        A flush that fails on a lost connection keeps the buffer and is retried
        by a later call. Raises :class:`SinkError` when the sink is not open, a
        chunk cannot be stored (time out of range), the buffer is full and cannot
        be flushed (``on_full="raise"``), or a flush failed for another reason
        than the connection.
        """
        with self._lock:
            self._require_open()
            accepted = [self._prepare(c) for c in chunks]  # validate the whole batch before keeping any
            duplicates = 0
            for chunk, t0_us, meta in accepted:
                key = (chunk.info.stream_id, chunk.seq)
                if key in self._buffer:
                    duplicates += 1
                    continue
                if len(self._buffer) >= self.max_buffer_chunks:
                    self._make_room()
                self._buffer[key] = (chunk, t0_us, meta)
                info = self._infos.get(key[0])
                if info is None or (info is not chunk.info and info != chunk.info):
                    self._infos[key[0]] = chunk.info
            self._stats["chunks_offered"] += len(accepted)
            self._stats["duplicates_dropped"] += duplicates
            if self._due(len(self._buffer) >= self.flush_chunks):
                self._try_flush()

    def write_events(self, events: Sequence[Event]) -> None:
        """Buffer ``events``; they are stored with the next flush (duplicates tolerated)."""
        with self._lock:
            self._require_open()
            for e in events:
                if not (isinstance(e.t_s, (int, float)) and math.isfinite(e.t_s) and _MIN_US <= _t_us(e.t_s) < _MAX_US):
                    raise SinkError(
                        f"sinks.Timescale: event {e.label!r} of {e.stream_id!r} has t_s={e.t_s!r}, not a finite "
                        "time in years 1-9999; events refused."
                    )
            for e in events:
                if len(self._event_buffer) >= self.max_buffer_chunks:
                    if self.on_full == "drop_oldest":
                        self._event_buffer.pop(0)
                        self._stats["dropped"] += 1
                    else:
                        self._try_flush(force=True)
                        if len(self._event_buffer) >= self.max_buffer_chunks:
                            raise SinkError(self._full_message("events", len(self._event_buffer)))
                self._event_buffer.append(e)
            if self._due(False):
                self._try_flush()

    def flush(self) -> None:
        """Store everything buffered, in one transaction.

        Raises
        ------
        SinkError
            The flush failed (connection lost, server down, bad row); everything
            stays buffered and the next flush retries.
        """
        with self._lock:
            self._require_open()
            self._flush()

    def close(self) -> None:
        """Flush, then release the connections. Closing an unopened sink does nothing.

        Raises
        ------
        SinkError
            The last flush failed: the buffered chunks are lost (the connections are released anyway).
        """
        with self._lock:
            if self._engine is None:
                return
            try:
                self._flush()
            finally:
                engine, self._engine = self._engine, None
                engine.dispose()

    # Maintenance -----------------------------------------------------------------------
    def apply_retention(self, now_s: float | None = None) -> list[str]:
        """Native mode: drop partitions that end before ``now_s - retention_s``; return their names.

        Also deletes rows older than that from the DEFAULT partition and the
        events table. In TimescaleDB mode this does nothing (the retention
        policy does it) and returns ``[]``.
        """
        with self._lock:
            self._require_open()
            if self.mode != "native":
                return []
            now_s = time.time() if now_s is None else float(now_s)
            cutoff_us = _t_us(now_s - self.retention_s)
            old = [(lo, hi) for lo, hi in self._ranges if hi <= cutoff_us]
            dropped: list[str] = []
            with self._transaction() as cur:
                cur.execute(f"select pg_advisory_xact_lock(hashtext({self.names.lock_key}))")
                cur.execute(_sql.list_partitions_sql(self.names))
                live = dict(cur.fetchall())
                for name, expr in live.items():
                    bounds = _parse_bound(expr)
                    if bounds is not None and bounds[1] <= cutoff_us:
                        cur.execute(_sql.drop_partition_sql(self.names, name))
                        dropped.append(name)
                cutoff = _sql.ts_literal(cutoff_us)
                cur.execute(f"delete from {self.names.q(self.names.default_partition_name)} where \"t0\" < {cutoff}")
                cur.execute(f"delete from {self.names.events} where \"t\" < {cutoff}")
            self._ranges = [r for r in self._ranges if r not in old]
            self._stats["partitions_dropped"] += len(dropped)
            if dropped:
                self._load_partitions()
            return dropped

    def partitions(self) -> list[tuple[str, float, float]]:
        """Native mode: ``(name, start_s, end_s)`` of every time partition (DEFAULT excluded), by start."""
        with self._lock:
            self._require_open()
            if self.mode != "native":
                return []
            with self._transaction() as cur:
                cur.execute(_sql.list_partitions_sql(self.names))
                rows = cur.fetchall()
        out = [(name, b[0] / 1e6, b[1] / 1e6) for name, expr in rows if (b := _parse_bound(expr)) is not None]
        return sorted(out, key=lambda r: r[1])

    # Introspection and reading ----------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Counters: ``chunks_offered``, ``chunks_written`` (rows inserted), ``duplicates_dropped``
        (in the buffer or already stored), ``events_written``, ``flushes``, ``failed_flushes``,
        ``connection_errors``, ``reconnects``, ``dropped`` (``on_full="drop_oldest"``),
        ``partitions_created``/``partitions_dropped``, ``buffered``/``buffered_events``,
        ``last_flush_s`` (seconds the last flush took), ``last_error`` and ``mode``."""
        with self._lock:
            return {
                **self._stats,
                "buffered": len(self._buffer),
                "buffered_events": len(self._event_buffer),
                "reconnects": max(0, self._connects - 1),
                "mode": self.mode,
            }

    def read(self, stream_id: str, start_s: float | None = None, end_s: float | None = None) -> list[Chunk]:
        """Stored chunks of ``stream_id`` whose ``t0_s`` is in ``[start_s, end_s)``, in ``seq`` order.

        Bit-exact float32 data (read-only arrays over the fetched bytes); chunks
        share one :class:`StreamInfo` per stream. Buffered, unflushed chunks are
        not included. Works on a closed sink too (opens a short-lived connection).
        """
        where, params = ["\"stream_id\" = %s"], [stream_id]
        if start_s is not None:
            where.append("\"t0\" >= %s")
            params.append(_sql.us_to_datetime(_t_us(start_s)))
        if end_s is not None:
            where.append("\"t0\" < %s")
            params.append(_sql.us_to_datetime(_t_us(end_s)))
        query = (
            "select \"seq\", \"t0_s\", \"recv_s\", \"sfreq\", \"n_channels\", \"n_samples\", \"data\", \"meta\" "
            f"from {self.names.samples} where {' and '.join(where)} order by \"seq\", \"t0\""
        )
        with self._reader() as cur:
            cur.execute(query, params)
            rows = cur.fetchall()
            if not rows:
                return []
            info = self._read_info(cur, stream_id)
        out: list[Chunk] = []
        last_seq = None
        variants: dict[tuple[float, int], StreamInfo] = {}
        for seq, t0_s, recv_s, sfreq, n_channels, n_samples, data, meta in rows:
            if seq == last_seq:
                continue  # the same seq stored with two t0 (never by this sink): keep the first
            last_seq = seq
            if len(data) != 4 * n_channels * n_samples:
                raise SinkError(
                    f"sinks.Timescale: row ({stream_id!r}, seq={seq}) of {self.qualified_table!r} holds "
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

    def read_events(self, stream_id: str | None = None, start_s: float | None = None,
                    end_s: float | None = None) -> list[Event]:  # fmt: skip
        """Stored events (all streams or ``stream_id``) with ``t_s`` in ``[start_s, end_s)``, by time.

        A numeric value reads back as ``float``, any other as ``str``.
        """
        where, params = ["true"], []
        if stream_id is not None:
            where.append("\"stream_id\" = %s")
            params.append(stream_id)
        if start_s is not None:
            where.append("\"t\" >= %s")
            params.append(_sql.us_to_datetime(_t_us(start_s)))
        if end_s is not None:
            where.append("\"t\" < %s")
            params.append(_sql.us_to_datetime(_t_us(end_s)))
        query = (
            "select \"stream_id\", \"t_s\", \"label\", \"value\", \"value_num\", \"meta\" "
            f"from {self.names.events} where {' and '.join(where)} order by \"t_s\""
        )
        with self._reader() as cur:
            cur.execute(query, params)
            rows = cur.fetchall()
        return [Event(sid, t_s, label, value if num is None else num, meta) for sid, t_s, label, value, num, meta in rows]

    def stream_info(self, stream_id: str) -> StreamInfo | None:
        """The stored description of ``stream_id`` (``None`` if never stored)."""
        with self._reader() as cur:
            return self._read_info(cur, stream_id)

    # Internals --------------------------------------------------------------------------
    def _require_open(self) -> None:
        if self._engine is None:
            raise SinkError(f"sinks.Timescale: table {self.qualified_table!r} is not open; call open() first.")

    def _prepare(self, chunk: Chunk) -> tuple[Chunk, int, str | None]:
        t0_us = _t_us(chunk.t0_s)
        if not _MIN_US <= t0_us < _MAX_US:
            raise SinkError(
                f"sinks.Timescale: chunk ({chunk.info.stream_id!r}, seq={chunk.seq}) has t0_s={chunk.t0_s!r}, "
                f"outside years 1-9999; batch refused."
            )
        if "\x00" in chunk.info.stream_id:
            raise SinkError(f"sinks.Timescale: stream_id {chunk.info.stream_id!r} holds a NUL byte; batch refused.")
        return chunk, t0_us, _json(chunk.meta)

    def _due(self, size_due: bool) -> bool:
        now = time.monotonic()
        if now < self._retry_at:
            return False
        return size_due or now - self._last_flush >= self.flush_every_s

    def _full_message(self, what: str, n: int) -> str:
        return (
            f"sinks.Timescale: buffer of table {self.qualified_table!r} is full ({n} {what}, "
            f"max_buffer_chunks={self.max_buffer_chunks}) and flushing it failed "
            f"({self._stats['last_error']}); batch refused, re-send it later."
        )

    def _make_room(self) -> None:
        self._try_flush(force=True)
        if len(self._buffer) < self.max_buffer_chunks:
            return
        if self.on_full == "raise":
            raise SinkError(self._full_message("chunks", len(self._buffer)))
        del self._buffer[next(iter(self._buffer))]
        self._stats["dropped"] += 1

    def _try_flush(self, *, force: bool = False) -> bool:
        """Flush, absorbing connection errors (they are retried later); other errors raise SinkError."""
        if not force and time.monotonic() < self._retry_at:
            return False
        try:
            self._flush()
        except SinkError as exc:
            if exc.__cause__ is not None and _is_connection_error(exc.__cause__):
                return False  # kept buffered; retried after the back-off
            raise
        return True

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        """A psycopg cursor in one transaction on a pooled connection; a broken connection is discarded."""
        fairy = self._engine.raw_connection()  # the pool pings it first (pool_pre_ping)
        pg = fairy.driver_connection
        self._conn_info, self._on_commit = fairy.info, []
        try:
            with pg.cursor() as cur:
                yield cur
            pg.commit()
            for mark in self._on_commit:
                fairy.info[mark] = True
        except BaseException as exc:
            if _is_connection_error(exc) or pg.broken or pg.closed:
                fairy.invalidate(exc if isinstance(exc, Exception) else None)
            else:
                try:
                    pg.rollback()
                except Exception:  # noqa: BLE001 - the original error is the one to report
                    fairy.invalidate()
            raise
        finally:
            fairy.close()

    @contextmanager
    def _reader(self) -> Iterator[Any]:
        """A binary cursor for reads, on the sink's engine or (sink closed) a short-lived one."""
        engine = self._engine
        own = engine is None
        if own:
            engine = _make_engine(self.url, self.application_name)
        try:
            fairy = engine.raw_connection()
            try:
                pg = fairy.driver_connection
                with pg.cursor(binary=True) as cur:
                    yield cur
                pg.rollback()
            finally:
                fairy.close()
        except SinkError:
            raise
        except Exception as exc:
            raise SinkError(
                f"sinks.Timescale: reading table {self.qualified_table!r} failed: {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            if own:
                engine.dispose()

    def _read_info(self, cur: Any, stream_id: str) -> StreamInfo | None:
        cur.execute(
            f"select \"sfreq\", \"channels\", \"ch_types\", \"units\", \"meta\" from {self.names.streams} "
            "where \"stream_id\" = %s",
            [stream_id],
        )
        row = cur.fetchone()
        if row is None:
            return None
        sfreq, channels, ch_types, units, meta = row
        return StreamInfo(stream_id, sfreq, tuple(channels), tuple(ch_types), tuple(units), meta)

    def _pick_mode(self) -> str:
        available = timescale_available(self._engine)
        with self._transaction() as cur:
            cur.execute(_sql.relkind_sql(), [self.schema, self.table])
            row = cur.fetchone()
        relkind = row[0] if row else None
        if self.force_mode == "timescale" and not available:
            raise SinkError(
                f"sinks.Timescale: force_mode='timescale' but the PostgreSQL server at {_safe_url(self.url)} "
                "has no 'timescaledb' extension (absent from pg_available_extensions); install TimescaleDB "
                "or use force_mode='native' (or None to detect)."
            )
        mode = self.force_mode or ("native" if relkind == "p" or not available else "timescale")
        if relkind == "p" and mode != "native":
            raise SinkError(
                f"sinks.Timescale: table {self.qualified_table!r} exists natively partitioned; "
                "it cannot become a hypertable: use force_mode='native' or another table."
            )
        if relkind is not None and relkind != "p" and mode == "native":
            raise SinkError(
                f"sinks.Timescale: table {self.qualified_table!r} exists and is not partitioned by time "
                f"(relkind {relkind!r}: a hypertable or a plain table); use force_mode='timescale' or another table."
            )
        log.info("sinks.Timescale: table %s in %s mode (timescaledb available: %s)", self.qualified_table, mode, available)
        return mode

    # Native partitions ------------------------------------------------------------------------
    def _load_partitions(self) -> None:
        with self._transaction() as cur:
            cur.execute(_sql.list_partitions_sql(self.names))
            rows = cur.fetchall()
        self._ranges = sorted(b for _, expr in rows if (b := _parse_bound(expr)) is not None)

    def _plan(self, times_us: Sequence[int]) -> list[tuple[int, int]]:
        """New partitions ``[lo, hi)`` needed for ``times_us``: aligned to ``chunk_interval_s``, clipped
        to the gaps between existing ones (which may have another width), at most
        ``MAX_NEW_PARTITIONS_PER_FLUSH`` (rows beyond go to DEFAULT until a later flush)."""
        from bisect import bisect_left, bisect_right

        step = self.chunk_interval_s * 1_000_000
        times = np.asarray(times_us, np.int64)
        ranges = self._ranges
        out: set[tuple[int, int]] = set()
        for s in np.unique(times - times % step).tolist():
            e = s + step
            j = bisect_left(ranges, (e,))  # ranges[:j] start before e
            overlapping = []
            while j > 0 and ranges[j - 1][1] > s:
                j -= 1
                overlapping.append(ranges[j])
            if not overlapping:
                out.add((s, e))
                continue
            if (s, e) in overlapping:
                continue
            for x in times[(times >= s) & (times < e)].tolist():  # rare: partitions of another width
                i = bisect_right(ranges, (x, math.inf))
                if i > 0 and ranges[i - 1][1] > x:
                    continue  # covered
                lo = max(s, ranges[i - 1][1]) if i > 0 else s
                hi = min(e, ranges[i][0]) if i < len(ranges) else e
                out.add((lo, hi))
        return sorted(out)[:MAX_NEW_PARTITIONS_PER_FLUSH]

    def _ensure_partitions(self, times_us: Sequence[int]) -> None:
        planned = self._plan(times_us)
        if not planned:
            return
        created = 0
        with self._transaction() as cur:
            cur.execute(f"select pg_advisory_xact_lock(hashtext({self.names.lock_key}))")
            for lo, hi in planned:
                cur.execute(_sql.default_has_rows_sql(self.names, lo, hi))
                if cur.fetchone()[0]:  # rows already in DEFAULT there: a partition would fail to attach
                    continue
                cur.execute(_sql.partition_ddl(self.names, lo, hi))
                created += 1
        self._stats["partitions_created"] += created
        self._load_partitions()

    def _maintain(self, now_s: float) -> None:
        """Partitions ahead of the wall clock and retention, at most once per ``chunk_interval_s``."""
        step = self.chunk_interval_s
        self._ensure_partitions([_t_us(now_s + k * step) for k in range(PARTITIONS_AHEAD + 1)])
        self.apply_retention(now_s)
        self._next_maintenance = time.monotonic() + min(step, 3600)

    # Loading ------------------------------------------------------------------------------
    def _flush(self) -> None:
        """One transaction: COPY to staging, insert new rows, upsert stream infos, COPY events.
        On failure the buffers are kept and SinkError (caused by the original error) is raised."""
        if not self._buffer and not self._event_buffer:
            self._last_flush = time.monotonic()
            return
        started = time.perf_counter()
        entries = list(self._buffer.values())
        infos = {sid: info for sid, info in self._infos.items() if self._infos_stored.get(sid) != info}
        try:
            if self.mode == "native" and entries:
                self._ensure_partitions([t0_us for _, t0_us, _ in entries])
            with self._transaction() as cur:
                inserted = self._load_chunks(cur, entries) if entries else 0
                for sid, info in infos.items():
                    cur.execute(_sql.upsert_streams_sql(self.names), [
                        sid, info.sfreq, list(info.channels), list(info.ch_types), list(info.units), _json(info.meta),
                    ])  # fmt: skip
                if self._event_buffer:
                    self._load_events(cur, self._event_buffer)
        except Exception as exc:
            connection = _is_connection_error(exc)
            self._stats["failed_flushes"] += 1
            self._stats["connection_errors"] += int(connection)
            self._stats["last_error"] = f"{type(exc).__name__}: {exc}".strip()
            self._backoff_s = min(_MAX_RETRY_BACKOFF_S, max(0.1, 2 * self._backoff_s))
            self._retry_at = time.monotonic() + self._backoff_s
            self._suspect_duplicates = True  # a cut-off commit may have landed: retry upsert-safe
            what = "connection lost" if connection else "failed"
            raise SinkError(
                f"sinks.Timescale: flush of {len(entries)} chunks and {len(self._event_buffer)} events to table "
                f"{self.qualified_table!r} {what} ({type(exc).__name__}: {exc}); they stay buffered and the "
                "next flush retries."
            ) from exc
        self._stats["chunks_written"] += inserted
        self._stats["duplicates_dropped"] += len(entries) - inserted
        self._suspect_duplicates = inserted < len(entries)
        self._stats["events_written"] += len(self._event_buffer)
        self._stats["flushes"] += 1
        self._stats["last_flush_s"] = time.perf_counter() - started
        self._infos_stored.update(infos)
        self._buffer = {}
        self._event_buffer = []
        self._backoff_s, self._retry_at = 0.0, 0.0
        self._last_flush = time.monotonic()
        if self.mode == "native" and time.monotonic() >= self._next_maintenance:
            try:
                self._maintain(time.time())
            except Exception as exc:  # noqa: BLE001 - the data is stored; maintenance retries next time
                self._stats["last_error"] = f"maintenance: {type(exc).__name__}: {exc}"
                log.warning("sinks.Timescale: maintenance of %s failed: %s", self.qualified_table, exc)

    def _load_chunks(self, cur: Any, entries: list[tuple[Chunk, int, str | None]]) -> int:
        """Store ``entries``; return how many rows were new.

        Fast path: COPY straight into the chunk table inside a savepoint. If a row
        is already stored (a re-sent chunk: unique violation), roll back to the
        savepoint and take the upsert-safe path: COPY into the staging table, then
        ``insert ... select ... on conflict do nothing``. The upsert path is taken
        directly after a failed flush or a flush that met duplicates.
        """
        import psycopg

        if not self._suspect_duplicates:
            cur.execute("savepoint nf_direct")
            try:
                self._copy_rows(cur, _sql.copy_direct_sql(self.names), entries)
            except psycopg.errors.UniqueViolation:
                cur.execute("rollback to savepoint nf_direct")
                self._stats["upsert_fallbacks"] += 1
            else:
                cur.execute("release savepoint nf_direct")
                return len(entries)
        stage = f"stage:{self.schema}.{self.table}"
        if not self._conn_info.get(stage):  # once per connection (marked only once committed)
            for statement in _sql.stage_ddl(self.names):
                cur.execute(statement)
            self._on_commit.append(stage)
        self._copy_rows(cur, _sql.copy_stage_sql(self.names), entries)
        cur.execute(_sql.insert_from_stage_sql(self.names))
        return cur.rowcount

    @staticmethod
    def _copy_rows(cur: Any, statement: str, entries: list[tuple[Chunk, int, str | None]]) -> None:
        from psycopg.types.json import Jsonb

        little = np.little_endian
        to_dt = _sql.us_to_datetime
        with cur.copy(statement) as copy:
            copy.set_types([kind for _, kind in _sql.STAGE_COLUMNS])
            write = copy.write_row
            for chunk, t0_us, meta in entries:
                data = chunk.data if little else chunk.data.astype("<f4")
                shape = data.shape
                write((chunk.info.stream_id, chunk.seq, to_dt(t0_us), chunk.t0_s, chunk.recv_s, chunk.info.sfreq,
                       shape[0], shape[1], data.tobytes(), None if meta is None else Jsonb(meta, dumps=str)))  # fmt: skip

    def _load_events(self, cur: Any, events: list[Event]) -> None:
        from psycopg.types.json import Jsonb

        with cur.copy(_sql.copy_events_sql(self.names)) as copy:
            copy.set_types(list(_sql.EVENT_COPY_TYPES))
            for e in events:
                t_us = _t_us(e.t_s)
                numeric = isinstance(e.value, (int, float, np.number)) and not isinstance(e.value, bool)
                value = repr(float(e.value)) if numeric else str(e.value)
                copy.write_row((e.stream_id, _sql.us_to_datetime(t_us), float(e.t_s), str(e.label), value,
                                float(e.value) if numeric else None, _jsonb(e.meta, Jsonb)))  # fmt: skip
