"""Connections of the PostgreSQL warm tier: engines, error classification, read cursors.

The :class:`~neuraflow.sinks.Timescale` sink holds one SQLAlchemy engine (psycopg 3
driver, a small pool that pings before reuse) and works on its raw psycopg
connections; this module makes those engines and tells a lost connection (retry
later) from a bad statement or row (raise).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from neuraflow.errors import SinkError

__all__ = ["choose_mode", "is_connection_error", "make_engine", "read_cursor", "safe_url", "timescale_available"]

DETECT_SQL = "select count(*) from pg_available_extensions where name = 'timescaledb'"


def make_engine(url: str, application_name: str):
    """An SQLAlchemy engine for ``url``: pool of 2 (+2 overflow), pre-ping, UTC sessions, 5 s connect timeout."""
    from sqlalchemy import create_engine

    return create_engine(
        url,
        pool_pre_ping=True,  # a connection killed while idle is replaced at checkout
        pool_size=2,
        max_overflow=2,
        connect_args={"application_name": application_name, "options": "-c timezone=UTC", "connect_timeout": 5},
    )


def safe_url(url: str) -> str:
    """``url`` with the password hidden, for messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - only used in messages
        return "<invalid url>"


def is_connection_error(exc: BaseException) -> bool:
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
        engine = make_engine(engine, "neuraflow-detect")
    try:
        with engine.connect() as conn:
            return bool(conn.execute(text(DETECT_SQL)).scalar())
    finally:
        if own:
            engine.dispose()


def choose_mode(available: bool, relkind: str | None, force_mode: str | None, table: str, url: str) -> str:
    """The storage path for ``table``: ``force_mode``, else ``"timescale"`` when ``available`` and the
    table is not natively partitioned already (``relkind`` ``"p"``), else ``"native"``.

    ``relkind`` is that of the existing table (``None``: absent); ``table`` and ``url`` name it in messages.

    >>> choose_mode(True, None, None, "public.t", ""), choose_mode(True, "p", None, "public.t", "")
    ('timescale', 'native')

    Raises
    ------
    SinkError
        ``force_mode="timescale"`` without the extension, or the table exists in the other layout.
    """
    if force_mode == "timescale" and not available:
        raise SinkError(
            f"sinks.Timescale: force_mode='timescale' but the PostgreSQL server at {safe_url(url)} "
            "has no 'timescaledb' extension (absent from pg_available_extensions); install TimescaleDB "
            "or use force_mode='native' (or None to detect)."
        )
    mode = force_mode or ("native" if relkind == "p" or not available else "timescale")
    if relkind == "p" and mode != "native":
        raise SinkError(
            f"sinks.Timescale: table {table!r} exists natively partitioned; "
            "it cannot become a hypertable: use force_mode='native' or another table."
        )
    if relkind is not None and relkind != "p" and mode == "native":
        raise SinkError(
            f"sinks.Timescale: table {table!r} exists and is not partitioned by time "
            f"(relkind {relkind!r}: a hypertable or a plain table); use force_mode='timescale' or another table."
        )
    return mode


@contextmanager
def read_cursor(engine: Any, url: str, application_name: str, table: str) -> Iterator[Any]:
    """A binary psycopg cursor for reads on ``engine`` or, when ``engine`` is ``None``, a short-lived one.

    The transaction is rolled back afterwards. Any failure but a :class:`SinkError` is raised
    as :class:`SinkError` naming ``table`` (the schema-qualified table read).
    """
    own = engine is None
    if own:
        engine = make_engine(url, application_name)
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
        raise SinkError(f"sinks.Timescale: reading table {table!r} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        if own:
            engine.dispose()
