"""Connections of the Redis hot tier: the pool settings and which driver errors are transient.

A transient error (connection refused or dropped, a timeout) is worth retrying on a
fresh connection; anything else Redis answers with (out of memory, wrong type) is a
refusal. :class:`~neuraflow.sinks.RedisStream` buffers and retries on both, readers
turn them into :class:`~neuraflow.errors.SinkError`.
"""

from __future__ import annotations

from typing import Any

from neuraflow.errors import SinkError

__all__ = ["call", "connection_pool", "transient_errors"]


def transient_errors() -> tuple[type[BaseException], ...]:
    """Exception types of a lost or unreachable server (redis-py's and the built-in ones)."""
    import redis

    return (redis.ConnectionError, redis.TimeoutError, ConnectionError, TimeoutError)


def connection_pool(url: str) -> Any:
    """A ``redis.ConnectionPool`` for ``url``: 1 s to connect, 5 s per command, keepalive, health checks.

    Raises
    ------
    SinkError
        ``url`` cannot be parsed by redis-py.
    """
    import redis

    try:
        return redis.ConnectionPool.from_url(
            url, socket_connect_timeout=1.0, socket_timeout=5.0, socket_keepalive=True, health_check_interval=30,
        )  # fmt: skip
    except ValueError as exc:
        raise SinkError(f"sinks.RedisStream: bad url={url!r}: {exc}") from exc


def call(url: str, method, *args, **kwargs):
    """``method(*args, **kwargs)``, with a transient error raised as :class:`SinkError` naming ``url``."""
    try:
        return method(*args, **kwargs)
    except transient_errors() as exc:
        raise SinkError(f"sinks.RedisStream: Redis at {url!r} unreachable: {exc}") from exc
