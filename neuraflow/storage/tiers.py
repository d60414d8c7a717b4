"""Tier adapters: one small interface over the hot, warm and cold stores.

The three sinks (:class:`~neuraflow.sinks.RedisStream`, :class:`~neuraflow.sinks.Timescale`,
:class:`~neuraflow.sinks.Iceberg`) each read and write chunks their own way; the
query engine and the tierer only need the :class:`Tier` protocol below:

- ``read(stream_id, start_s, end_s)`` -> chunks whose ``t0_s`` is in ``[start_s, end_s)``, by seq;
- ``write(chunks)`` -> stored durably on return, idempotent on ``(stream_id, seq)``;
- ``delete(stream_id, seqs)`` (:class:`DeletableTier`, hot and warm only: cold is the last tier);
- ``streams()``, ``has_stream(stream_id)``, ``info(stream_id)`` and ``events(...)``.

Copies are compared with :func:`summarize`: per contiguous run of seqs, the number of
chunks and a CRC-32 of their seq, ``t0_s``, shape and float32 bytes.

Adapters pickle (connections are rebuilt on first use), so a Ray actor can hold them.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from neuraflow.chunk import Chunk, Event, StreamInfo
from neuraflow.errors import SinkError
from neuraflow.sinks.iceberg import Iceberg, read_chunks, read_events
from neuraflow.sinks.redis import RedisStream
from neuraflow.sinks.timescale import Timescale

__all__ = [
    "DeletableTier", "IcebergTier", "RedisTier", "SeqRange", "Tier", "TierConsistencyError", "TimescaleTier",
    "tiers_from_settings",
    "summarize",
]  # fmt: skip

_CHUNK_KEY = struct.Struct("<qdII")  # seq, t0_s, n_channels, n_samples


class TierConsistencyError(SinkError):
    """Two copies of the same ``(stream_id, seq)`` differ, or a copy failed verification."""


# Checksums ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SeqRange:
    """Summary of one contiguous run of seqs ``first..last`` (inclusive).

    Parameters
    ----------
    first, last : int
        First and last seq of the run.
    count : int
        Number of chunks in the run (``last - first + 1`` when nothing is missing).
    crc32 : int
        CRC-32 chained over every chunk of the run, in seq order: its seq, ``t0_s``,
        shape and little-endian float32 samples.
    """

    first: int
    last: int
    count: int
    crc32: int


def chunk_crc(chunk: Chunk, crc: int = 0) -> int:
    """CRC-32 of one chunk (seq, ``t0_s``, shape, samples), continuing from ``crc``."""
    n_channels, n_samples = chunk.data.shape
    crc = zlib.crc32(_CHUNK_KEY.pack(chunk.seq, chunk.t0_s, n_channels, n_samples), crc)
    return zlib.crc32(memoryview(chunk.data.astype("<f4", copy=False)).cast("B"), crc)


def summarize(chunks: Iterable[Chunk]) -> list[SeqRange]:
    """Per contiguous run of seqs, the count and chained CRC-32 of ``chunks`` (sorted by seq first).

    Two stores hold the same copy of a set of chunks iff their summaries are equal.
    """
    out: list[SeqRange] = []
    first = last = count = crc = None
    for chunk in sorted(chunks, key=lambda c: c.seq):
        if last is not None and chunk.seq == last + 1:
            last, count, crc = chunk.seq, count + 1, chunk_crc(chunk, crc)
            continue
        if last is not None:
            out.append(SeqRange(first, last, count, crc))
        first = last = chunk.seq
        count, crc = 1, chunk_crc(chunk)
    if last is not None:
        out.append(SeqRange(first, last, count, crc))
    return out


# Protocols -----------------------------------------------------------------------------
@runtime_checkable
class Tier(Protocol):
    """What the query engine and the tierer need from a store."""

    name: str

    def read(self, stream_id: str, start_s: float | None = None, end_s: float | None = None) -> list[Chunk]:
        """Chunks of ``stream_id`` with ``t0_s`` in ``[start_s, end_s)`` (``None``: open), sorted by seq."""

    def write(self, chunks: Sequence[Chunk]) -> None:
        """Store ``chunks`` durably before returning; a chunk already stored is kept once."""

    def streams(self) -> list[str]:
        """Stream ids this tier holds (or held) data of, sorted."""

    def has_stream(self, stream_id: str) -> bool:
        """Whether this tier knows ``stream_id``."""

    def info(self, stream_id: str) -> StreamInfo | None:
        """The stored description of ``stream_id`` (``None``: unknown here)."""

    def events(self, stream_id: str, start_s: float | None = None, end_s: float | None = None) -> list[Event]:
        """Stored events of ``stream_id`` with ``t_s`` in ``[start_s, end_s)``, by time."""


@runtime_checkable
class DeletableTier(Tier, Protocol):
    """A tier data moves out of (hot, warm)."""

    def delete(self, stream_id: str, seqs: Sequence[int]) -> int:
        """Delete the chunks of ``stream_id`` with these seqs; return how many were deleted."""


def _in_range(chunks: list[Chunk], start_s: float | None, end_s: float | None) -> list[Chunk]:
    return [c for c in chunks if (start_s is None or c.t0_s >= start_s) and (end_s is None or c.t0_s < end_s)]


def _events_in_range(events: list[Event], start_s: float | None, end_s: float | None) -> list[Event]:
    return [e for e in events if (start_s is None or e.t_s >= start_s) and (end_s is None or e.t_s < end_s)]


# Hot ------------------------------------------------------------------------------------
class _SinkTier:
    """Shared mechanics of a tier adapter: it wraps one sink of ``sink_type`` and opens it
    on first use (and again after unpickling in an actor)."""

    sink_type: type = object

    def __init__(self, sink: Any) -> None:
        if not isinstance(sink, self.sink_type):
            raise SinkError(
                f"storage.{type(self).__name__}: sink must be a {self.sink_type.__name__}, got {type(sink).__name__}."
            )
        self.sink = sink
        self._opened = False

    def __getstate__(self) -> dict[str, Any]:
        return {"sink": self.sink}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.sink = state["sink"]
        self._opened = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.sink!r})"

    def _open(self) -> None:
        if not self._opened:
            self.sink.open()
            self._opened = True


class RedisTier(_SinkTier):
    """The hot tier over a :class:`~neuraflow.sinks.RedisStream` (same URL and key prefix).

    Parameters
    ----------
    sink : RedisStream
        The sink whose keys to read and trim. Its ``window_s`` must exceed the tiering
        policy's ``hot_s``: Redis trims entries older than the window by itself.

    Notes
    -----
    :meth:`delete` uses the key layout documented in :mod:`neuraflow.sinks.redis`
    (``<prefix>{<stream_id>}:data`` entries with field ``s`` = seq, and the ``:late`` set).
    """

    name = "redis"
    sink_type = RedisStream

    def _key(self, stream_id: str, kind: str) -> str:
        return f"{self.sink.key_prefix}{{{stream_id}}}:{kind}"

    def read(self, stream_id: str, start_s: float | None = None, end_s: float | None = None) -> list[Chunk]:
        return _in_range(self.sink.read(stream_id, start_s, end_s), start_s, end_s)

    def write(self, chunks: Sequence[Chunk]) -> None:
        self.sink.write_batch(chunks)
        self.sink.flush()

    def streams(self) -> list[str]:
        return self.sink.streams()

    def has_stream(self, stream_id: str) -> bool:
        return stream_id in self.sink.streams()

    def info(self, stream_id: str) -> StreamInfo | None:
        try:
            newest = self.sink.latest(stream_id, 1e-9)
        except KeyError:
            return None
        return None if newest is None else newest.info

    def events(self, stream_id: str, start_s: float | None = None, end_s: float | None = None) -> list[Event]:
        return _events_in_range(self.sink.events(stream_id, start_s), start_s, end_s)

    def delete(self, stream_id: str, seqs: Sequence[int]) -> int:
        """XDEL the entries of ``seqs`` (found by their ``s`` field from the oldest one's time on)."""
        wanted = {int(s) for s in seqs}
        if not wanted:
            return 0
        client = self.sink._connect()  # the sink's pool: one connection setup per process
        key = self._key(stream_id, "data")
        ids: list[bytes] = []
        cursor = "-"
        while len(ids) < len(wanted):
            page = self.sink._wrap(client.xrange, key, cursor, "+", count=1000)
            for entry_id, fields in page:
                if int(fields[b"s"]) in wanted:
                    ids.append(entry_id)
            if len(page) < 1000:
                break
            cursor = "(" + page[-1][0].decode()
        pipe = client.pipeline(transaction=True)
        for i in range(0, len(ids), 1000):
            pipe.xdel(key, *ids[i : i + 1000])
        pipe.zrem(self._key(stream_id, "late"), *sorted(wanted))
        self.sink._wrap(pipe.execute)
        return len(ids)


# Warm -----------------------------------------------------------------------------------
def _libpq_url(url: str) -> str:
    """``postgresql+psycopg://...`` (SQLAlchemy) -> ``postgresql://...`` (libpq)."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme.split('+')[0]}{sep}{rest}"


class TimescaleTier(_SinkTier):
    """The warm tier over a :class:`~neuraflow.sinks.Timescale` sink (opened on first write/delete).

    Parameters
    ----------
    sink : Timescale
        The sink whose table to read, write and delete from.
    """

    name = "timescale"
    sink_type = Timescale

    def _execute(self, sql: str, params: Sequence[Any]) -> list[tuple]:
        import psycopg

        try:
            with psycopg.connect(_libpq_url(self.sink.url), connect_timeout=5) as conn:
                cur = conn.execute(sql, params)
                return cur.fetchall() if cur.description else [(cur.rowcount,)]
        except psycopg.Error as exc:
            if "does not exist" in str(exc):
                return []
            raise SinkError(f"storage.TimescaleTier: {self.sink.qualified_table}: {type(exc).__name__}: {exc}") from exc

    def read(self, stream_id: str, start_s: float | None = None, end_s: float | None = None) -> list[Chunk]:
        try:
            return self.sink.read(stream_id, start_s, end_s)
        except SinkError as exc:
            if "does not exist" in str(exc):  # nothing written yet
                return []
            raise

    def write(self, chunks: Sequence[Chunk]) -> None:
        self._open()
        self.sink.write_batch(chunks)
        self.sink.flush()

    def streams(self) -> list[str]:
        rows = self._execute(f"select \"stream_id\" from {self.sink.names.streams} order by 1", [])
        return [r[0] for r in rows]

    def has_stream(self, stream_id: str) -> bool:
        return bool(self._execute(f"select 1 from {self.sink.names.streams} where \"stream_id\" = %s", [stream_id]))

    def info(self, stream_id: str) -> StreamInfo | None:
        try:
            return self.sink.stream_info(stream_id)
        except SinkError as exc:
            if "does not exist" in str(exc):
                return None
            raise

    def events(self, stream_id: str, start_s: float | None = None, end_s: float | None = None) -> list[Event]:
        try:
            return self.sink.read_events(stream_id, start_s, end_s)
        except SinkError as exc:
            if "does not exist" in str(exc):
                return []
            raise

    def delete(self, stream_id: str, seqs: Sequence[int]) -> int:
        if not seqs:
            return 0
        sql = f"delete from {self.sink.names.samples} where \"stream_id\" = %s and \"seq\" = any(%s)"
        return int(self._execute(sql, [stream_id, [int(s) for s in seqs]])[0][0])


# Cold -----------------------------------------------------------------------------------
class IcebergTier(_SinkTier):
    """The cold tier over an :class:`~neuraflow.sinks.Iceberg` table (the last tier: no delete).

    Parameters
    ----------
    sink : Iceberg
        The sink whose table to read and append to (opened on first write).

    Notes
    -----
    Reads go through :func:`neuraflow.sinks.iceberg.read_chunks` with the time range
    pushed down (other days and row groups skipped); :meth:`read_channels` also pushes
    down the channels, so one channel of 64 is read without decoding the others.
    """

    name = "iceberg"
    sink_type = Iceberg

    def _where(self) -> tuple[tuple[str, str, str], dict[str, Any]]:
        s = self.sink
        return (s.catalog_uri, s.warehouse, s.table), {"catalog_name": s.catalog_name,
                                                        "catalog_properties": s.catalog_properties}  # fmt: skip

    def _scan(self, stream_id: str | None, fields: tuple[str, ...], limit: int | None = None, *, described: bool = False):
        """Header rows (one per chunk) of ``stream_id`` (``None``: all), or only those carrying a
        description (``described``: a few per file); ``None`` when the table does not exist."""
        from pyiceberg.exceptions import NoSuchTableError
        from pyiceberg.expressions import And, EqualTo, NotNull

        from neuraflow.sinks.iceberg import _load_catalog

        row_filter = NotNull("sfreq") if described else EqualTo("ch_index", -1)
        if stream_id is not None:
            row_filter = And(EqualTo("stream_id", stream_id), row_filter)

        s = self.sink
        catalog = _load_catalog(s.catalog_name, s.catalog_uri, s.warehouse, s.catalog_properties)
        try:
            table = catalog.load_table(s.table)
        except NoSuchTableError:
            return None
        return table.scan(row_filter=row_filter, selected_fields=fields, limit=limit).to_arrow()

    def read(self, stream_id: str, start_s: float | None = None, end_s: float | None = None) -> list[Chunk]:
        return self.read_channels(stream_id, start_s, end_s, None)

    def read_channels(self, stream_id: str, start_s: float | None, end_s: float | None,
                      channels: Sequence[str] | None) -> list[Chunk]:  # fmt: skip
        """:meth:`read` restricted to ``channels`` (names, in this order; ``None``: all), pushed down to the scan."""
        (uri, warehouse, table), kwargs = self._where()
        try:
            return read_chunks(uri, warehouse, table, stream_id, start_s=start_s, end_s=end_s, channels=channels,
                               **kwargs)  # fmt: skip
        except SinkError as exc:
            if "no table" in str(exc):
                return []
            raise

    def write(self, chunks: Sequence[Chunk]) -> None:
        self._open()  # loads the committed seqs: a chunk already archived is skipped
        self.sink.write_batch(chunks)
        self.sink.flush()

    def streams(self) -> list[str]:
        rows = self._scan(None, ("stream_id",), described=True)
        return [] if rows is None else sorted(set(rows.column("stream_id").to_pylist()))

    def has_stream(self, stream_id: str) -> bool:
        rows = self._scan(stream_id, ("seq",), limit=1)
        return rows is not None and rows.num_rows > 0

    def info(self, stream_id: str) -> StreamInfo | None:
        fields = ("stream_id", "sfreq", "channels", "ch_types", "units")
        rows = self._scan(stream_id, fields, limit=1, described=True)
        if rows is None or rows.num_rows == 0:
            return None
        (row,) = rows.slice(0, 1).to_pylist()
        return StreamInfo(stream_id, row["sfreq"], row["channels"], row["ch_types"], row["units"])

    def events(self, stream_id: str, start_s: float | None = None, end_s: float | None = None) -> list[Event]:
        (uri, warehouse, table), kwargs = self._where()
        try:
            found = read_events(uri, warehouse, table, stream_id, **kwargs)
        except SinkError as exc:
            if "no table" in str(exc):
                return []
            raise
        return _events_in_range(found, start_s, end_s)


# From settings ------------------------------------------------------------------------------
def tiers_from_settings(
    storage: Any,
    *,
    redis_prefix: str | None = None,
    pg_table: str | None = None,
    pg_schema: str | None = None,
) -> list[Tier]:
    """The tiers configured in a :class:`~neuraflow.config.StorageSettings`, fastest first.

    Redis when ``redis_url`` is set, PostgreSQL when ``postgres_url`` is set, and always the
    Iceberg table ``table`` in ``catalog_uri`` / ``warehouse`` (S3 properties when
    ``s3_endpoint`` is set). ``redis_prefix``, ``pg_table`` and ``pg_schema`` override the
    settings' ``redis_key_prefix``, ``postgres_table`` and ``postgres_schema``.
    """
    redis_prefix = getattr(storage, "redis_key_prefix", "neuraflow:") if redis_prefix is None else redis_prefix
    pg_table = getattr(storage, "postgres_table", "neuraflow_samples") if pg_table is None else pg_table
    pg_schema = getattr(storage, "postgres_schema", "public") if pg_schema is None else pg_schema
    tiers: list[Tier] = []
    if storage.redis_url:
        tiers.append(RedisTier(RedisStream(storage.redis_url, key_prefix=redis_prefix)))
    if storage.postgres_url:
        tiers.append(TimescaleTier(Timescale(storage.postgres_url, table=pg_table, schema=pg_schema)))
    properties: dict[str, str] = {}
    if storage.s3_endpoint:
        properties = {"s3.endpoint": storage.s3_endpoint, "s3.region": storage.s3_region}
        if storage.s3_access_key_id:
            properties["s3.access-key-id"] = storage.s3_access_key_id
        if storage.s3_secret_access_key:
            properties["s3.secret-access-key"] = storage.s3_secret_access_key
    tiers.append(IcebergTier(Iceberg(storage.table, catalog_uri=storage.catalog_uri, warehouse=storage.warehouse,
                                     catalog_name=storage.catalog_name, catalog_properties=properties)))  # fmt: skip
    return tiers
