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
all-or-nothing and a re-sent chunk is stored once. While no duplicate is
suspected, the COPY goes straight into the chunk table instead.

Code: this module buffers and flushes; engines and connection errors are in
:mod:`neuraflow.sinks._timescale_db`, COPY rows in :mod:`neuraflow.sinks._timescale_copy`,
native partitions and their retention in :mod:`neuraflow.sinks._timescale_partitions`,
reads in :mod:`neuraflow.sinks._timescale_read` and SQL text in :mod:`neuraflow.sinks._sql`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from neuraflow._validate import check_int, check_option, check_positive
from neuraflow.chunk import Chunk, Event, StreamInfo
from neuraflow.errors import PipelineDefinitionError, SinkError
from neuraflow.sinks import _sql
from neuraflow.sinks._sql import SqlNames
from neuraflow.sinks._timescale_copy import ChunkRow, copy_chunks, copy_events, meta_json
from neuraflow.sinks._timescale_db import (
    choose_mode, is_connection_error, make_engine, read_cursor, safe_url, timescale_available,
)  # fmt: skip
from neuraflow.sinks._timescale_partitions import NativePartitions
from neuraflow.sinks._timescale_read import chunks_from_rows, read_events, read_stream_info, select_chunk_rows

__all__ = ["Timescale", "timescale_available"]

log = logging.getLogger(__name__)

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
#: Partitions kept ready ahead of the wall clock (native mode).
PARTITIONS_AHEAD = 2
_MIN_US = _sql.datetime_to_us(_sql.us_to_datetime(0).replace(year=1))
_MAX_US = _sql.datetime_to_us(_sql.us_to_datetime(0).replace(year=9999))
_MAX_RETRY_BACKOFF_S = 5.0


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
        self._buffer: dict[tuple[str, int], ChunkRow] = {}
        self._event_buffer: list[Event] = []
        self._infos: dict[str, StreamInfo] = {}  # stream descriptions seen, by id
        self._infos_stored: dict[str, StreamInfo] = {}  # ... and those already upserted
        self._partitions = NativePartitions(self.names, self.chunk_interval_s, self._transaction)
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
        return f"Timescale(url={safe_url(self.url)!r}, table={self.schema}.{self.table}, mode={self.mode!r})"

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
            engine = make_engine(self.url, self.application_name)

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
                    self._partitions.load()
                    self._maintain(time.time())
            except Exception as exc:
                self._engine, self.mode = None, None
                engine.dispose()
                if isinstance(exc, SinkError):
                    raise
                raise SinkError(
                    f"sinks.Timescale: cannot open table {self.qualified_table!r} at {safe_url(self.url)}: "
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
            tried_flush = False  # one forced flush per batch: an outage must not cost a connection try per chunk
            for chunk, t0_us, meta in accepted:
                key = (chunk.info.stream_id, chunk.seq)
                if key in self._buffer:
                    duplicates += 1
                    continue
                if len(self._buffer) >= self.max_buffer_chunks:
                    self._make_room(flush=not tried_flush)
                    tried_flush = True
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
                finite = isinstance(e.t_s, (int, float)) and math.isfinite(e.t_s)
                if not (finite and _MIN_US <= _sql.seconds_to_us(e.t_s) < _MAX_US):
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
            dropped = self._partitions.drop_before(_sql.seconds_to_us(now_s - self.retention_s))
            self._stats["partitions_dropped"] += len(dropped)
            return dropped

    def partitions(self) -> list[tuple[str, float, float]]:
        """Native mode: ``(name, start_s, end_s)`` of every time partition (DEFAULT excluded), by start."""
        with self._lock:
            self._require_open()
            if self.mode != "native":
                return []
            listing = self._partitions.listing()
        out = [(name, b[0] / 1e6, b[1] / 1e6) for name, b in listing if b is not None]
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
        with self._reader() as cur:
            rows = select_chunk_rows(cur, self.names, stream_id, start_s, end_s)
            if not rows:
                return []
            info = read_stream_info(cur, self.names, stream_id)
        return chunks_from_rows(self.names, stream_id, rows, info)

    def read_events(self, stream_id: str | None = None, start_s: float | None = None,
                    end_s: float | None = None) -> list[Event]:  # fmt: skip
        """Stored events (all streams or ``stream_id``) with ``t_s`` in ``[start_s, end_s)``, by time.

        A numeric value reads back as ``float``, any other as ``str``.
        """
        with self._reader() as cur:
            return read_events(cur, self.names, stream_id, start_s, end_s)

    def stream_info(self, stream_id: str) -> StreamInfo | None:
        """The stored description of ``stream_id`` (``None`` if never stored)."""
        with self._reader() as cur:
            return read_stream_info(cur, self.names, stream_id)

    # Internals --------------------------------------------------------------------------
    def _require_open(self) -> None:
        if self._engine is None:
            raise SinkError(f"sinks.Timescale: table {self.qualified_table!r} is not open; call open() first.")

    def _prepare(self, chunk: Chunk) -> ChunkRow:
        t0_us = _sql.seconds_to_us(chunk.t0_s)
        if not _MIN_US <= t0_us < _MAX_US:
            raise SinkError(
                f"sinks.Timescale: chunk ({chunk.info.stream_id!r}, seq={chunk.seq}) has t0_s={chunk.t0_s!r}, "
                f"outside years 1-9999; batch refused."
            )
        if "\x00" in chunk.info.stream_id:
            raise SinkError(f"sinks.Timescale: stream_id {chunk.info.stream_id!r} holds a NUL byte; batch refused.")
        return chunk, t0_us, meta_json(chunk.meta)

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

    def _make_room(self, *, flush: bool) -> None:
        if flush:
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
            if exc.__cause__ is not None and is_connection_error(exc.__cause__):
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
            if is_connection_error(exc) or pg.broken or pg.closed:
                fairy.invalidate(exc if isinstance(exc, Exception) else None)
            else:
                try:
                    pg.rollback()
                except Exception:  # noqa: BLE001 - the original error is the one to report
                    fairy.invalidate()
            raise
        finally:
            fairy.close()

    def _reader(self):
        """A binary cursor for reads, on the sink's engine or (sink closed) a short-lived one."""
        return read_cursor(self._engine, self.url, self.application_name, self.qualified_table)

    def _pick_mode(self) -> str:
        available = timescale_available(self._engine)
        with self._transaction() as cur:
            cur.execute(_sql.relkind_sql(), [self.schema, self.table])
            row = cur.fetchone()
        mode = choose_mode(available, row[0] if row else None, self.force_mode, self.qualified_table, self.url)
        log.info("sinks.Timescale: table %s in %s mode (timescaledb available: %s)", self.qualified_table, mode, available)
        return mode

    def _maintain(self, now_s: float) -> None:
        """Partitions ahead of the wall clock and retention, at most once per ``chunk_interval_s``."""
        step = self.chunk_interval_s
        self._stats["partitions_created"] += self._partitions.ensure(
            [_sql.seconds_to_us(now_s + k * step) for k in range(PARTITIONS_AHEAD + 1)]
        )
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
                self._stats["partitions_created"] += self._partitions.ensure([t0_us for _, t0_us, _ in entries])
            with self._transaction() as cur:
                inserted = self._load_chunks(cur, entries) if entries else 0
                for sid, info in infos.items():
                    cur.execute(_sql.upsert_streams_sql(self.names), [
                        sid, info.sfreq, list(info.channels), list(info.ch_types), list(info.units),
                        meta_json(info.meta),
                    ])  # fmt: skip
                if self._event_buffer:
                    copy_events(cur, self.names, self._event_buffer)
        except Exception as exc:
            connection = is_connection_error(exc)
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

    def _load_chunks(self, cur: Any, entries: list[ChunkRow]) -> int:
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
                copy_chunks(cur, _sql.copy_direct_sql(self.names), entries)
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
        copy_chunks(cur, _sql.copy_stage_sql(self.names), entries)
        cur.execute(_sql.insert_from_stage_sql(self.names))
        return cur.rowcount
