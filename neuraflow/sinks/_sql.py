"""SQL text of the :class:`~neuraflow.sinks.timescale.Timescale` sink, for both storage paths.

One function, :func:`ddl`, writes the schema for the two modes from the same
column lists, so the TimescaleDB path (hypertable, compression and retention
policies) and the native path (``partition by range (t0)``, a DEFAULT partition,
a BRIN index) cannot drift apart. Nothing here talks to a database: every
function returns text, so tests can check both paths on a server without
TimescaleDB.

Identifiers are validated (lower-case ``[a-z_][a-z0-9_]*``) and double-quoted;
values that have to be literals in DDL (partition bounds, intervals) are
produced here from numbers, never from user strings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from neuraflow.errors import PipelineDefinitionError

__all__ = ["MODES", "SqlNames", "ddl"]

#: The two storage paths.
MODES = ("timescale", "native")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")
#: Longest table name: leaves room for ``_p20240101_000000`` and ``_events_stream_t`` within 63 bytes.
MAX_TABLE_LEN = 40

#: Chunk table columns (name, type). The primary key must hold the partition key ``t0``.
SAMPLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("stream_id", "text not null"),
    ("seq", "bigint not null"),
    ("t0", "timestamptz not null"),  # t0_s as a timestamp: the partition / hypertable time column
    ("t0_s", "double precision not null"),  # device time of data[:, 0], exact (seconds since epoch)
    ("recv_s", "double precision"),  # host receive time; NaN when unknown
    ("sfreq", "double precision not null"),
    ("n_channels", "integer not null"),
    ("n_samples", "integer not null"),
    ("data", "bytea not null"),  # float32 little-endian, C order, (n_channels, n_samples)
    ("meta", "jsonb"),  # Chunk.meta, NULL when empty
)
SAMPLE_KEY = ("stream_id", "seq", "t0")

#: Columns loaded by COPY, in order, with their psycopg binary COPY types (staging table and direct COPY).
STAGE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("stream_id", "text"),
    ("seq", "int8"),
    ("t0", "timestamptz"),
    ("t0_s", "float8"),
    ("recv_s", "float8"),
    ("sfreq", "float8"),
    ("n_channels", "int4"),
    ("n_samples", "int4"),
    ("data", "bytea"),
    ("meta", "jsonb"),
)

STREAM_COLUMNS: tuple[tuple[str, str], ...] = (
    ("stream_id", "text primary key"),
    ("sfreq", "double precision not null"),
    ("channels", "text[] not null"),
    ("ch_types", "text[] not null"),
    ("units", "text[] not null"),
    ("meta", "jsonb"),
    ("updated_at", "timestamptz not null default now()"),
)

EVENT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("stream_id", "text not null"),
    ("t", "timestamptz not null"),
    ("t_s", "double precision not null"),
    ("label", "text not null"),
    ("value", "text"),  # the value as text (repr of a float, or the string)
    ("value_num", "double precision"),  # the value when it is a number, else NULL
    ("meta", "jsonb"),
)
#: psycopg binary COPY types of the events columns, in order.
EVENT_COPY_TYPES = ("text", "timestamptz", "float8", "text", "text", "float8", "jsonb")


def ident(name: str) -> str:
    """Double-quote a validated identifier."""
    if not isinstance(name, str) or not _IDENT.match(name) or len(name) > 63:
        raise PipelineDefinitionError(
            f"sinks.Timescale: {name!r} is not a valid SQL name: use lower-case letters, digits and '_', "
            "starting with a letter or '_', at most 63 characters."
        )
    return f'"{name}"'


def literal(text: str) -> str:
    """A single-quoted SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def us_to_datetime(us: int) -> datetime:
    """Integer microseconds since the epoch -> aware UTC datetime (exact)."""
    return _EPOCH + timedelta(microseconds=us)


def datetime_to_us(dt: datetime) -> int:
    """Aware datetime -> integer microseconds since the epoch (exact)."""
    return (dt - _EPOCH) // timedelta(microseconds=1)


def seconds_to_us(t_s: float) -> int:
    """Seconds since the epoch -> integer microseconds, rounded to the nearest."""
    return round(t_s * 1e6)


def ts_literal(us: int) -> str:
    """``'2024-01-01 00:00:00+00:00'``: a timestamptz literal independent of the session time zone."""
    return literal(us_to_datetime(us).isoformat(sep=" "))


def _interval(seconds: int) -> str:
    return f"interval {literal(f'{int(seconds)} seconds')}"


def _columns(columns: tuple[tuple[str, str], ...]) -> str:
    return ", ".join(f"{ident(name)} {kind}" for name, kind in columns)


@dataclass(frozen=True)
class SqlNames:
    """Quoted names of every object one sink owns, derived from ``schema`` and ``table``."""

    schema: str
    table: str

    def __post_init__(self) -> None:
        ident(self.schema)
        ident(self.table)
        if len(self.table) > MAX_TABLE_LEN:
            raise PipelineDefinitionError(
                f"sinks.Timescale: table={self.table!r} is {len(self.table)} characters; at most "
                f"{MAX_TABLE_LEN} leave room for the partition and index names."
            )

    def q(self, name: str) -> str:
        """Schema-qualified quoted name of ``name`` in this sink's schema."""
        return f"{ident(self.schema)}.{ident(name)}"

    @property
    def samples(self) -> str:
        return self.q(self.table)

    @property
    def streams(self) -> str:
        return self.q(f"{self.table}_streams")

    @property
    def events(self) -> str:
        return self.q(f"{self.table}_events")

    @property
    def default_partition_name(self) -> str:
        return f"{self.table}_default"

    @property
    def stage(self) -> str:
        """Session-private staging table (``pg_temp``), one per target table."""
        return f"pg_temp.{ident(f'nf_stage_{self.table}')}"

    @property
    def lock_key(self) -> str:
        """Text whose ``hashtext`` keys the advisory lock serialising DDL on this table."""
        return literal(f"neuraflow:{self.schema}.{self.table}")

    def partition_name(self, lo_us: int) -> str:
        """``<table>_p20240101_000000``: the partition starting at ``lo_us`` (UTC, second resolution)."""
        return f"{self.table}_p{us_to_datetime(lo_us).strftime('%Y%m%d_%H%M%S')}"

    def regclass(self, name: str | None = None) -> str:
        """A literal naming a table for functions taking ``regclass`` (``create_hypertable`` ...)."""
        return literal(self.q(name or self.table))


# DDL ------------------------------------------------------------------------------
def ddl(
    names: SqlNames,
    mode: str,
    *,
    chunk_interval_s: int = 3600,
    hot_retention_s: int = 86_400,
    retention_s: int = 30 * 86_400,
) -> list[str]:
    """Every statement that creates the sink's objects in ``mode``; each is idempotent.

    Shared by both modes: the schema, the chunk table columns and primary key
    ``(stream_id, seq, t0)``, the stream-info table and the events table.

    - ``"native"``: the chunk table is ``partition by range (t0)`` with a DEFAULT
      partition and a BRIN index on ``t0`` (inherited by every partition); the
      partitions themselves are created ahead of the data by
      :func:`partition_ddl`, and dropped for retention by :func:`drop_partition_sql`.
    - ``"timescale"``: ``create extension timescaledb``, the chunk and events
      tables become hypertables on ``t0``/``t`` with ``chunk_interval_s``
      chunks; chunk rows are compressed (segment by ``stream_id``, order by
      ``seq``) once older than ``hot_retention_s`` and both tables are trimmed
      to ``retention_s`` by background policies.
    """
    if mode not in MODES:
        raise PipelineDefinitionError(f"sinks.Timescale: mode={mode!r} is not one of {MODES}.")
    key = ", ".join(ident(c) for c in SAMPLE_KEY)
    partitioned = " partition by range (\"t0\")" if mode == "native" else ""
    out = []
    if mode == "timescale":
        out.append("create extension if not exists timescaledb")
    out += [
        f"create schema if not exists {ident(names.schema)}",
        f"create table if not exists {names.samples} ({_columns(SAMPLE_COLUMNS)}, primary key ({key})){partitioned}",
        # float32 payloads barely compress with pglz and trying costs 2-3x the load time: store them as is
        # (partitions and hypertable chunks inherit the setting; TimescaleDB compresses old chunks itself).
        f"alter table {names.samples} alter column \"data\" set storage external",
        f"create table if not exists {names.streams} ({_columns(STREAM_COLUMNS)})",
        f"create table if not exists {names.events} ({_columns(EVENT_COLUMNS)})",
        f"create index if not exists {ident(names.table + '_events_stream_t')} on {names.events} (\"stream_id\", \"t\")",
    ]
    if mode == "native":
        out += [
            f"create table if not exists {names.q(names.default_partition_name)} partition of {names.samples} default",
            f"create index if not exists {ident(names.table + '_t0_brin')} on {names.samples} using brin (\"t0\")",
        ]
        return out
    table, hyper_filter = names.regclass(), (
        f"hypertable_schema = {literal(names.schema)} and hypertable_name = {literal(names.table)}"
    )
    out += [
        f"select create_hypertable({table}, by_range('t0', {_interval(chunk_interval_s)}), if_not_exists => true)",
        f"select create_hypertable({names.regclass(names.table + '_events')}, by_range('t', {_interval(chunk_interval_s)}), "
        "if_not_exists => true)",
        # Changing compression settings fails once chunks are compressed: only the first open sets them.
        "do $nf$ begin if not exists (select 1 from timescaledb_information.hypertables "
        f"where {hyper_filter} and compression_enabled) then "
        f"alter table {names.samples} set (timescaledb.compress, timescaledb.compress_segmentby = 'stream_id', "
        "timescaledb.compress_orderby = 'seq'); end if; end $nf$",
        f"select add_compression_policy({table}, compress_after => {_interval(hot_retention_s)}, if_not_exists => true)",
        f"select add_retention_policy({table}, drop_after => {_interval(retention_s)}, if_not_exists => true)",
        f"select add_retention_policy({names.regclass(names.table + '_events')}, drop_after => {_interval(retention_s)}, "
        "if_not_exists => true)",
    ]
    return out


def partition_ddl(names: SqlNames, lo_us: int, hi_us: int) -> str:
    """Create the native partition ``[lo_us, hi_us)`` (microseconds since the epoch)."""
    return (
        f"create table if not exists {names.q(names.partition_name(lo_us))} partition of {names.samples} "
        f"for values from ({ts_literal(lo_us)}) to ({ts_literal(hi_us)})"
    )


def default_has_rows_sql(names: SqlNames, lo_us: int, hi_us: int) -> str:
    """Whether the DEFAULT partition holds rows in ``[lo_us, hi_us)`` (a new partition there would fail)."""
    return (
        f"select exists (select 1 from {names.q(names.default_partition_name)} "
        f"where \"t0\" >= {ts_literal(lo_us)} and \"t0\" < {ts_literal(hi_us)})"
    )


def list_partitions_sql(names: SqlNames) -> str:
    """Name and bound expression of every partition of the chunk table (run with ``timezone = UTC``)."""
    return (
        "select c.relname, pg_get_expr(c.relpartbound, c.oid) from pg_inherits i "
        "join pg_class c on c.oid = i.inhrelid "
        f"where i.inhparent = {names.regclass()}::regclass order by c.relname"
    )


def drop_partition_sql(names: SqlNames, partition: str) -> str:
    return f"drop table if exists {names.q(partition)}"


def relkind_sql() -> str:
    """``relkind`` of a table by schema and name (``p``: partitioned, ``r``: plain or hypertable)."""
    return (
        "select c.relkind from pg_class c join pg_namespace n on n.oid = c.relnamespace "
        "where n.nspname = %s and c.relname = %s"
    )


# Loading --------------------------------------------------------------------------
def stage_ddl(names: SqlNames) -> list[str]:
    """The per-session staging table, emptied at every commit, payload stored uncompressed."""
    return [
        f"create temp table if not exists {names.stage} ({_columns(STAGE_COLUMNS)}) on commit delete rows",
        f"alter table {names.stage} alter column \"data\" set storage external",
    ]


def copy_stage_sql(names: SqlNames) -> str:
    cols = ", ".join(ident(c) for c, _ in STAGE_COLUMNS)
    return f"copy {names.stage} ({cols}) from stdin (format binary)"


def insert_from_stage_sql(names: SqlNames) -> str:
    """Move the staged rows into the chunk table; rows already stored are skipped (upsert-safe)."""
    cols = ", ".join(ident(c) for c, _ in STAGE_COLUMNS)
    select = cols
    key = ", ".join(ident(c) for c in SAMPLE_KEY)
    return f"insert into {names.samples} ({cols}) select {select} from {names.stage} on conflict ({key}) do nothing"


def copy_direct_sql(names: SqlNames) -> str:
    """COPY straight into the chunk table: the fast path when no row of the batch is stored yet."""
    cols = ", ".join(ident(c) for c, _ in STAGE_COLUMNS)
    return f"copy {names.samples} ({cols}) from stdin (format binary)"


def copy_events_sql(names: SqlNames) -> str:
    """Events go straight into their table (duplicates are tolerated by the protocol)."""
    cols = ", ".join(ident(c) for c, _ in EVENT_COLUMNS)
    return f"copy {names.events} ({cols}) from stdin (format binary)"


def upsert_streams_sql(names: SqlNames) -> str:
    """Insert or update one stream description (parameters in psycopg ``%s`` style)."""
    return (
        f"insert into {names.streams} (\"stream_id\", \"sfreq\", \"channels\", \"ch_types\", \"units\", \"meta\") "
        "values (%s, %s, %s, %s, %s, %s::jsonb) on conflict (\"stream_id\") do update set "
        "\"sfreq\" = excluded.\"sfreq\", \"channels\" = excluded.\"channels\", \"ch_types\" = excluded.\"ch_types\", "
        "\"units\" = excluded.\"units\", \"meta\" = excluded.\"meta\", \"updated_at\" = now() "
        f"where ({names.streams}.\"sfreq\", {names.streams}.\"channels\", {names.streams}.\"ch_types\", "
        f"{names.streams}.\"units\", {names.streams}.\"meta\") is distinct from "
        "(excluded.\"sfreq\", excluded.\"channels\", excluded.\"ch_types\", excluded.\"units\", excluded.\"meta\")"
    )
