"""The hot tier: the last minutes of every stream in Redis Streams, served live.

One Redis Stream per data stream, whose entry ids come from device time
(``<t0 in ms>-<seq>``), trimmed with ``XADD ... MINID ~`` so the window is a
span of device time, not a count of entries. Each entry holds a compact binary
payload (a 48-byte header + the float32 samples, little endian); the stream
description is stored once in a hash. Keys, for ``stream_id = "eeg-0"``::

    <prefix>{eeg-0}:data     Stream  fields s=seq, i=info version, d=payload[, m=chunk meta JSON]
    <prefix>{eeg-0}:info     Hash    v:<version> -> StreamInfo as JSON
    <prefix>{eeg-0}:late     ZSet    seq -> t0 in ms, for chunks that arrived out of order
    <prefix>{eeg-0}:events   Stream  field e=Event as JSON (server-time ids)
    <prefix>streams, <prefix>event_streams   Sets of stream ids

The ``{...}`` hash tag keeps a stream's keys on one Redis Cluster slot (the
write script touches several of them).

Redis keeps nothing on disk here: it is a cache of the last ``window_s``. After
a Redis restart the window restarts empty; the cold tier (Iceberg) holds the
record.

Code: the payload and key names are in :mod:`neuraflow.sinks._redis_codec`, the retry
buffer and the append script in :mod:`neuraflow.sinks._redis_writer`, reads and
subscriptions in :mod:`neuraflow.sinks._redis_reader`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any, Literal

from neuraflow._validate import check_int, check_option, check_positive
from neuraflow.chunk import Chunk, Event
from neuraflow.errors import SinkError
from neuraflow.sinks._redis_connection import call, connection_pool, transient_errors
from neuraflow.sinks._redis_reader import RedisReader
from neuraflow.sinks._redis_writer import RedisWriter

__all__ = ["RedisStream"]


class RedisStream:
    """Keep the last ``window_s`` of device time of every stream in Redis Streams (the hot tier).

    Parameters
    ----------
    url : str
        Redis URL, e.g. ``"redis://127.0.0.1:6379/0"`` or ``"rediss://:pw@host:6380/1"``.
    key_prefix : str
        Prefix of every key this sink creates (see the module docstring for the layout).
    window_s : float
        Device-time window kept per stream: entries whose ``t0`` is more than ``window_s``
        older than the stream's newest ``t0`` are trimmed (``XADD ... MINID ~``, so a few
        extra entries may linger until Redis can drop a whole node). Events are trimmed by
        wall-clock time over the same span.
    max_buffer_chunks : int
        Bound on chunks (and, separately, events) held while Redis is unreachable.
    on_full : {"drop_oldest", "raise"}
        Backpressure policy when that buffer is full: drop the oldest buffered chunks
        (counted in ``dropped_on_full``), or refuse the batch with :class:`SinkError`
        (counted too; the runtime keeps and re-sends it).
    flush_timeout_s : float
        How long :meth:`flush` keeps retrying (with backoff) before raising.

    Notes
    -----
    Idempotent on ``(stream_id, seq)``, server-side and atomically, by a Lua script: a chunk
    written twice is stored once (counted in ``duplicates_dropped``), even across sink
    restarts. A chunk older than the stream's newest (a retried older batch) is appended
    after it and listed in the ``:late`` set, so it is found again as a duplicate;
    readers sort by ``seq``. A chunk already outside the window is dropped (``late_dropped``).
    ``seq`` must be >= 0 (it is the sequence part of the entry id).

    Faults: a connection error, or a write Redis refuses (``maxmemory`` reached), never
    raises from :meth:`write_batch`; the batch stays in a bounded buffer and is re-sent on
    the next write (after a backoff of up to 2 s) or :meth:`flush`, which raises
    :class:`SinkError` if it still fails after ``flush_timeout_s`` (the buffer is kept).
    Re-sending is safe: duplicates are dropped.
    What is buffered when the process dies is lost (the runtime re-sends from its last
    acknowledged point); what Redis held when it restarted is lost too (no persistence).

    Examples
    --------
    >>> hot = RedisStream("redis://127.0.0.1:6379/0", window_s=300.0)   # doctest: +SKIP
    >>> hot.open(); hot.write_batch(chunks); hot.flush()   # doctest: +SKIP
    >>> hot.latest("eeg-0", 2.0).data.shape   # doctest: +SKIP
    (32, 500)
    >>> for chunk in hot.subscribe(["eeg-0"], block_ms=1000): ...   # doctest: +SKIP
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        key_prefix: str = "neuraflow:",
        window_s: float = 300.0,
        max_buffer_chunks: int = 50_000,
        on_full: Literal["drop_oldest", "raise"] = "drop_oldest",
        flush_timeout_s: float = 5.0,
    ) -> None:
        if not isinstance(url, str) or "://" not in url:
            raise SinkError(f"sinks.RedisStream: url={url!r} must be a Redis URL like 'redis://127.0.0.1:6379/0'.")
        self.url = url
        self.key_prefix = str(key_prefix)
        self.window_s = check_positive("sinks.RedisStream", "window_s", window_s)
        self.max_buffer_chunks = check_int("sinks.RedisStream", "max_buffer_chunks", max_buffer_chunks)
        self.on_full = check_option("sinks.RedisStream", "on_full", on_full, ("drop_oldest", "raise"))
        self.flush_timeout_s = check_positive("sinks.RedisStream", "flush_timeout_s", flush_timeout_s, allow_zero=True)
        self._reset_runtime_state()

    def _reset_runtime_state(self) -> None:
        self._lock = threading.RLock()
        self._pool = None
        self._client = None
        self._writer = RedisWriter(self._connect, url=self.url, key_prefix=self.key_prefix, window_s=self.window_s,
                                   max_buffer_chunks=self.max_buffer_chunks, on_full=self.on_full)  # fmt: skip
        self._reader = RedisReader(self._connect, url=self.url, key_prefix=self.key_prefix)

    # The sink travels to its actor pickled; a connection pool does not.
    def __getstate__(self) -> dict[str, Any]:
        keep = ("url", "key_prefix", "window_s", "max_buffer_chunks", "on_full", "flush_timeout_s")
        return {k: self.__dict__[k] for k in keep}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset_runtime_state()

    def __repr__(self) -> str:
        return f"RedisStream(url={self.url!r}, key_prefix={self.key_prefix!r}, window_s={self.window_s})"

    # Sink protocol -----------------------------------------------------------------
    def open(self) -> None:
        """Create the connection pool and check that Redis answers.

        Raises
        ------
        SinkError
            Redis is unreachable (the URL, and the command that starts a local one, are in the message).
        """
        client = self._connect()
        try:
            client.ping()
        except transient_errors() as exc:
            raise SinkError(
                f"sinks.RedisStream: cannot reach Redis at {self.url!r}: {exc}. Start one with "
                "`redis-server --port 6379 --save '' --appendonly no`."
            ) from exc

    def write_batch(self, chunks: Sequence[Chunk]) -> None:
        """Buffer ``chunks`` (any mix of streams) and send the buffer in one pipeline.

        Never raises on a connection error (the chunks stay buffered, see Notes).

        Raises
        ------
        SinkError
            A chunk has ``seq < 0``, or the buffer is full with ``on_full="raise"``.
        """
        if not chunks:
            return
        with self._lock:
            self._writer.write(chunks)

    def write_events(self, events: Sequence[Event]) -> None:
        """Buffer ``events`` (JSON, one Redis Stream per ``stream_id``) and send what is buffered."""
        if not events:
            return
        with self._lock:
            self._writer.write_events(events)

    def flush(self) -> None:
        """Send everything buffered, retrying with backoff for up to ``flush_timeout_s``.

        Raises
        ------
        SinkError
            Redis is still unreachable (the buffer is kept for the next call), or it refused a command.
        """
        with self._lock:
            self._writer.flush(self.flush_timeout_s)

    def close(self) -> None:
        """Flush, then disconnect the pool (also when the flush fails, which then raises)."""
        try:
            if self._pool is not None:
                self.flush()
        finally:
            with self._lock:
                if self._pool is not None:
                    self._pool.disconnect()
                self._pool = self._client = None

    # Introspection -------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Counters: ``written`` (chunks stored, late ones included), ``duplicates_dropped``,
        ``late_written`` (stored out of order), ``late_dropped`` (older than the window),
        ``buffered`` / ``events_buffered`` (waiting for Redis), ``dropped_on_full``,
        ``events_written``, ``events_dropped_on_full``, ``reconnects`` (recoveries after a
        failed send), ``connection_errors``, ``refused`` (commands Redis rejected, e.g. out of
        memory; retried like connection errors) and ``last_error``."""
        with self._lock:
            writer = self._writer
            return {**writer.counters, "buffered": writer.n_buffered, "events_buffered": writer.n_events_buffered}

    # Reading -------------------------------------------------------------------------
    def streams(self) -> list[str]:
        """The stream ids written under this prefix, sorted."""
        return self._reader.streams()

    def read(self, stream_id: str, start_s: float | None = None, end_s: float | None = None) -> list[Chunk]:
        """The stored chunks of ``stream_id`` whose ``t0_s`` is in ``[start_s, end_s]``.

        Parameters
        ----------
        stream_id : str
            The stream to read.
        start_s, end_s : float or None
            Device-time bounds in seconds since the epoch (inclusive); ``None`` is open.

        Returns
        -------
        list of Chunk
            In ``seq`` order, bit-exact; ``[]`` when nothing is stored.
        """
        return self._reader.read(stream_id, start_s, end_s)

    def latest(self, stream_id: str, seconds: float | None = None) -> Chunk | None:
        """The last ``seconds`` of ``stream_id`` as one chunk (as :meth:`HotBuffer.latest`).

        Every chunk ending after ``newest t_end - seconds`` is included, concatenated in
        ``seq`` order; ``t0_s`` of the first, ``seq``/``recv_s`` of the last, ``meta`` gives
        ``first_seq``, ``n_chunks`` and ``contiguous``. ``seconds=None`` reads the whole window.

        Raises
        ------
        KeyError
            Nothing is stored for ``stream_id``.
        """
        return self._reader.latest(stream_id, seconds)

    def events(self, stream_id: str | None = None, since_s: float | None = None) -> list[Event]:
        """Stored events (of one stream, or all), at or after ``since_s``, sorted by ``t_s``."""
        return self._reader.events(stream_id, since_s)

    def subscribe(
        self,
        stream_ids: Sequence[str],
        block_ms: int = 1000,
        *,
        from_start: bool = False,
        max_idle_s: float | None = None,
    ) -> Iterator[Chunk]:
        """Yield chunks of ``stream_ids`` as they are written (``XREAD BLOCK``), in arrival order.

        Parameters
        ----------
        stream_ids : sequence of str
            Streams to follow.
        block_ms : int
            How long one ``XREAD`` blocks; the generator then simply reads again.
        from_start : bool
            Begin with what is already stored instead of only new entries.
        max_idle_s : float or None
            Stop after this long without a new chunk (``None``: follow forever; break out
            of the loop to stop).

        Notes
        -----
        Uses its own connection (blocking reads must not hold a pooled one). A connection
        error is retried with backoff from the last id seen, so a Redis restart is survived.
        """
        return self._reader.subscribe(stream_ids, block_ms, from_start=from_start, max_idle_s=max_idle_s)

    # Connection (also used by :class:`neuraflow.storage.RedisTier`) ---------------------
    def _connect(self):
        """The pooled client, created on first use."""
        with self._lock:
            if self._client is None:
                import redis

                self._pool = connection_pool(self.url)
                self._client = redis.Redis(connection_pool=self._pool)
            return self._client

    def _wrap(self, method, *args, **kwargs):
        """``method(*args, **kwargs)``; an unreachable Redis raises :class:`SinkError`."""
        return call(self.url, method, *args, **kwargs)
