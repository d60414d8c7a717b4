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
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from neuraflow._validate import check_int, check_option, check_positive
from neuraflow.chunk import Chunk, Event, StreamInfo
from neuraflow.errors import SinkError

__all__ = ["RedisStream"]

#: magic, version, dtype code (1 = little-endian float32), seq, t0_s, recv_s, sfreq, n_channels, n_samples
_HEADER = struct.Struct("<2sBBqdddII")
_MAGIC, _VERSION, _DTYPE_F32 = b"NF", 1, 1
_HEADER_PAD = b"\0" * (-_HEADER.size % 8)  # keep the samples 8-byte aligned in the payload
_DATA_OFFSET = _HEADER.size + len(_HEADER_PAD)
#: One script call carries at most this many chunks / bytes, so Redis is never blocked for long
#: (smaller calls measured faster too: Redis starts on one while the next arrives).
_GROUP_CHUNKS, _GROUP_BYTES = 64, 512 << 10
_PIPELINE_BYTES = 8 << 20
_READ_PAGE = 512

# Idempotent append of one stream's chunks, all with the info version ARGV[2] (atomic: Redis runs a
# script alone). ARGV[1] is the window in ms, then 4 values per chunk: t0_ms, seq, payload, meta.
# Fast path: the id <t0_ms>-<seq> is above the stream's last id -> plain XADD. Otherwise the chunk is
# a duplicate (found under its own id, or in the late set) or a late chunk: it is appended under the
# next id (so ids stay increasing and are never below the chunk's device time) and recorded in the
# late set, or dropped if already older than the window. Returns {added, duplicates, late, too_old},
# or {-1} when the info version is not stored yet (nothing written; the client stores it and retries).
_APPEND = """
if redis.call('HEXISTS', KEYS[3], 'v:' .. ARGV[2]) == 0 then return {-1} end
local window = tonumber(ARGV[1])
local last_ms, last_sq = -1, -1
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #top > 0 then
  local dash = string.find(top[1][1], '-', 1, true)
  last_ms = tonumber(string.sub(top[1][1], 1, dash - 1))
  last_sq = tonumber(string.sub(top[1][1], dash + 1))
end
local added, dups, late, too_old = 0, 0, 0, 0
for i = 3, #ARGV, 4 do
  local ms, seq, payload, meta = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local t, s = tonumber(ms), tonumber(seq)
  local minid = string.format('%d', math.max(0, math.max(t, last_ms) - window))
  local fields = {'s', seq, 'i', ARGV[2], 'd', payload}
  if meta ~= '' then fields[7] = 'm'; fields[8] = meta end
  if t > last_ms or (t == last_ms and s > last_sq) then
    redis.call('XADD', KEYS[1], 'MINID', '~', minid, ms .. '-' .. seq, unpack(fields))
    last_ms, last_sq = t, s
    added = added + 1
  else
    local hit = redis.call('XRANGE', KEYS[1], ms .. '-' .. seq, ms .. '-' .. seq)
    if (#hit > 0 and hit[1][2][2] == seq) or redis.call('ZSCORE', KEYS[2], seq) then
      dups = dups + 1
    elseif t < last_ms - window then
      too_old = too_old + 1
    else
      local ok = redis.pcall('XADD', KEYS[1], 'MINID', '~', minid, string.format('%d', last_ms) .. '-*', unpack(fields))
      if type(ok) == 'table' and ok.err then
        ok = redis.call('XADD', KEYS[1], 'MINID', '~', minid, '*', unpack(fields))
      end
      local dash = string.find(ok, '-', 1, true)
      last_ms = math.max(last_ms, tonumber(string.sub(ok, 1, dash - 1)))
      last_sq = tonumber(string.sub(ok, dash + 1))
      redis.call('ZADD', KEYS[2], t, seq)
      late = late + 1
    end
  end
end
if late > 0 or redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. string.format('%d', math.max(0, last_ms - window)))
end
return {added, dups, late, too_old}
"""
_APPEND_SHA = hashlib.sha1(_APPEND.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class _Entry:
    """One encoded chunk waiting to be sent."""

    stream_id: str
    t0_ms: int
    seq: int
    version: str
    payload: bytes
    meta: str  # chunk meta as JSON, "" when empty


def _json(meta: Mapping[str, Any]) -> str:
    # default=str: a value JSON cannot hold (a numpy scalar, a path) is stored as its text.
    return json.dumps(dict(meta), default=str, sort_keys=True) if meta else ""


def _info_json(info: StreamInfo) -> str:
    return json.dumps(
        {"stream_id": info.stream_id, "sfreq": info.sfreq, "channels": list(info.channels),
         "ch_types": list(info.ch_types), "units": list(info.units), "meta": dict(info.meta)},
        default=str, sort_keys=True,
    )  # fmt: skip


def _t0_ms(t0_s: float) -> int:
    # Stream ids are unsigned: a t0 before the epoch is clamped (the header keeps the exact value).
    return max(0, math.floor(t0_s * 1000.0))


def _encode(chunk: Chunk) -> bytes:
    n_channels, n_samples = chunk.data.shape
    header = _HEADER.pack(_MAGIC, _VERSION, _DTYPE_F32, chunk.seq, chunk.t0_s, chunk.recv_s, chunk.info.sfreq,
                          n_channels, n_samples)  # fmt: skip
    return b"".join((header, _HEADER_PAD, chunk.data.astype("<f4", copy=False).tobytes()))


def _decode(payload: bytes, info: StreamInfo, meta: bytes | None) -> Chunk:
    magic, version, dtype, seq, t0_s, recv_s, _sfreq, n_channels, n_samples = _HEADER.unpack_from(payload)
    if magic != _MAGIC or version != _VERSION or dtype != _DTYPE_F32:
        raise SinkError(f"sinks.RedisStream: entry of {info.stream_id!r} has an unknown payload format "
                        f"(magic={magic!r}, version={version}, dtype={dtype}).")  # fmt: skip
    expected = _DATA_OFFSET + 4 * n_channels * n_samples
    if len(payload) != expected:
        raise SinkError(f"sinks.RedisStream: entry seq={seq} of {info.stream_id!r} holds {len(payload)} bytes, "
                        f"expected {expected} for shape ({n_channels}, {n_samples}).")  # fmt: skip
    data = np.frombuffer(payload, "<f4", n_channels * n_samples, _DATA_OFFSET).reshape(n_channels, n_samples)
    return Chunk(data, t0_s, info, seq, recv_s, json.loads(meta) if meta else None)


def _transient() -> tuple[type[BaseException], ...]:
    import redis

    return (redis.ConnectionError, redis.TimeoutError, ConnectionError, TimeoutError)


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
        self._buffer: deque[_Entry] = deque()
        self._event_buffer: deque[tuple[str, str]] = deque()
        self._versions: dict[int, tuple[StreamInfo, str, str]] = {}  # id(info) -> (info, version, json)
        self._info_json: dict[tuple[str, str], str] = {}  # (stream_id, version) -> json
        self._read_infos: dict[tuple[str, str], StreamInfo] = {}
        self._backoff_s = 0.0
        self._next_try_s = 0.0
        self._failing = False
        self._stats: dict[str, Any] = {
            "written": 0, "duplicates_dropped": 0, "late_written": 0, "late_dropped": 0, "dropped_on_full": 0,
            "events_written": 0, "events_dropped_on_full": 0, "reconnects": 0, "connection_errors": 0, "refused": 0,
            "last_error": None,
        }  # fmt: skip

    # The sink travels to its actor pickled; a connection pool does not.
    def __getstate__(self) -> dict[str, Any]:
        keep = ("url", "key_prefix", "window_s", "max_buffer_chunks", "on_full", "flush_timeout_s")
        return {k: self.__dict__[k] for k in keep}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset_runtime_state()

    def __repr__(self) -> str:
        return f"RedisStream(url={self.url!r}, key_prefix={self.key_prefix!r}, window_s={self.window_s})"

    # Keys --------------------------------------------------------------------------
    def _key(self, stream_id: str, kind: str) -> str:
        return f"{self.key_prefix}{{{stream_id}}}:{kind}"

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
        except _transient() as exc:
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
            entries = [self._entry(chunk) for chunk in chunks]
            if self.on_full == "raise" and len(self._buffer) + len(entries) > self.max_buffer_chunks:
                if not (self._buffer and self._try_send()) or len(entries) > self.max_buffer_chunks:
                    self._stats["dropped_on_full"] += len(entries)
                    raise SinkError(
                        f"sinks.RedisStream: buffer full ({len(self._buffer)} chunks waiting for {self.url!r}, "
                        f"max_buffer_chunks={self.max_buffer_chunks}); batch of {len(entries)} refused. "
                        f"Last error: {self._stats['last_error']}"
                    )
            self._buffer.extend(entries)
            while len(self._buffer) > self.max_buffer_chunks:  # drop_oldest
                self._buffer.popleft()
                self._stats["dropped_on_full"] += 1
            if time.monotonic() >= self._next_try_s:
                self._try_send()

    def write_events(self, events: Sequence[Event]) -> None:
        """Buffer ``events`` (JSON, one Redis Stream per ``stream_id``) and send what is buffered."""
        if not events:
            return
        with self._lock:
            for e in events:
                value = e.value if isinstance(e.value, str) else float(e.value)
                doc = json.dumps({"t_s": e.t_s, "label": str(e.label), "value": value, "meta": dict(e.meta)},
                                 default=str)  # fmt: skip
                self._event_buffer.append((e.stream_id, doc))
            while len(self._event_buffer) > self.max_buffer_chunks:
                self._event_buffer.popleft()
                self._stats["events_dropped_on_full"] += 1
            if time.monotonic() >= self._next_try_s:
                self._try_send()

    def flush(self) -> None:
        """Send everything buffered, retrying with backoff for up to ``flush_timeout_s``.

        Raises
        ------
        SinkError
            Redis is still unreachable (the buffer is kept for the next call), or it refused a command.
        """
        deadline = time.monotonic() + self.flush_timeout_s
        delay = 0.05
        with self._lock:
            while self._buffer or self._event_buffer:
                if self._try_send():
                    return
                if time.monotonic() + delay > deadline:
                    raise SinkError(
                        f"sinks.RedisStream: could not write to Redis at {self.url!r} for {self.flush_timeout_s} s; "
                        f"{len(self._buffer)} chunks and {len(self._event_buffer)} events kept for retry. "
                        f"Last error: {self._stats['last_error']}"
                    )
                time.sleep(delay)
                delay = min(2 * delay, 1.0)

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
            return {**self._stats, "buffered": len(self._buffer), "events_buffered": len(self._event_buffer)}

    # Reading -------------------------------------------------------------------------
    def streams(self) -> list[str]:
        """The stream ids written under this prefix, sorted."""
        client = self._connect()
        return sorted(s.decode() for s in self._wrap(client.smembers, f"{self.key_prefix}streams"))

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
        client = self._connect()
        lo = "-" if start_s is None else str(_t0_ms(start_s))
        hi = "+" if end_s is None else str(_t0_ms(end_s))
        if hi != "+" and self._wrap(client.zcount, self._key(stream_id, "late"), "-inf" if lo == "-" else lo, hi):
            hi = "+"  # a late chunk sits at an id after its device time
        entries = self._wrap(client.xrange, self._key(stream_id, "data"), lo, hi)
        chunks = self._decode_entries(client, stream_id, entries)
        chunks = [c for c in chunks if (start_s is None or c.t0_s >= start_s) and (end_s is None or c.t0_s <= end_s)]
        return sorted(chunks, key=lambda c: c.seq)

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
        client = self._connect()
        key = self._key(stream_id, "data")
        top = self._wrap(client.xrevrange, key, "+", "-", count=1)
        if not top:
            raise KeyError(f"sinks.RedisStream: no data for stream {stream_id!r} under {self.key_prefix!r}.")
        top_ms = top[0][0].split(b"-")[0].decode()
        newest = self._decode_entries(client, stream_id, self._wrap(client.xrange, key, top_ms, top_ms))
        horizon = -math.inf if seconds is None else max(c.t_end_s for c in newest) - float(seconds)
        picked: list[Chunk] = []
        hi, count = "+", 16
        while True:  # page backwards (growing pages) until an in-order chunk ends before the horizon
            page = self._wrap(client.xrevrange, key, hi, "-", count=count)
            done = len(page) < count
            count = min(2 * count, _READ_PAGE)
            for chunk, (entry_id, _) in zip(self._decode_entries(client, stream_id, page), page):
                if chunk.t_end_s > horizon:
                    picked.append(chunk)
                elif int(entry_id.split(b"-")[0]) == _t0_ms(chunk.t0_s):
                    done = True  # chunks do not overlap: every older entry ends earlier still
                    break
            if done or not page:
                break
            hi = "(" + page[-1][0].decode()
        if not picked:
            return None
        picked.sort(key=lambda c: c.seq)
        first, last = picked[0], picked[-1]
        data = first.data if len(picked) == 1 else np.concatenate([c.data for c in picked], axis=1)
        meta = {"first_seq": first.seq, "n_chunks": len(picked), "contiguous": last.seq - first.seq + 1 == len(picked)}
        return Chunk(data, first.t0_s, last.info, seq=last.seq, recv_s=last.recv_s, meta=meta)

    def events(self, stream_id: str | None = None, since_s: float | None = None) -> list[Event]:
        """Stored events (of one stream, or all), at or after ``since_s``, sorted by ``t_s``."""
        client = self._connect()
        if stream_id is None:
            sids = sorted(s.decode() for s in self._wrap(client.smembers, f"{self.key_prefix}event_streams"))
        else:
            sids = [stream_id]
        out: list[Event] = []
        for sid in sids:
            for _, fields in self._wrap(client.xrange, self._key(sid, "events"), "-", "+"):
                doc = json.loads(fields[b"e"])
                if since_s is None or doc["t_s"] >= since_s:
                    out.append(Event(sid, doc["t_s"], doc["label"], doc["value"], doc["meta"] or None))
        return sorted(out, key=lambda e: e.t_s)

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
        import redis

        check_int("sinks.RedisStream.subscribe", "block_ms", block_ms)
        client = redis.Redis.from_url(self.url, socket_timeout=block_ms / 1000.0 + 5.0, socket_connect_timeout=1.0)
        cursors = {self._key(sid, "data"): ("0-0" if from_start else "$") for sid in stream_ids}
        sid_of = {self._key(sid, "data"): sid for sid in stream_ids}
        last_data = time.monotonic()
        delay = 0.05
        try:
            while max_idle_s is None or time.monotonic() - last_data < max_idle_s:
                try:
                    replies = client.xread(cursors, count=_READ_PAGE, block=block_ms)
                    delay = 0.05
                except _transient():
                    time.sleep(delay)
                    delay = min(2 * delay, 2.0)
                    continue
                for key, entries in replies or ():
                    key = key.decode() if isinstance(key, bytes) else key
                    cursors[key] = entries[-1][0].decode()
                    yield from self._decode_entries(client, sid_of[key], entries)
                    last_data = time.monotonic()
        finally:
            client.close()

    # Internals ------------------------------------------------------------------------
    def _connect(self):
        with self._lock:
            if self._client is None:
                import redis

                try:
                    self._pool = redis.ConnectionPool.from_url(
                        self.url, socket_connect_timeout=1.0, socket_timeout=5.0, socket_keepalive=True,
                        health_check_interval=30,
                    )  # fmt: skip
                except ValueError as exc:
                    raise SinkError(f"sinks.RedisStream: bad url={self.url!r}: {exc}") from exc
                self._client = redis.Redis(connection_pool=self._pool)
            return self._client

    def _wrap(self, method, *args, **kwargs):
        try:
            return method(*args, **kwargs)
        except _transient() as exc:
            raise SinkError(f"sinks.RedisStream: Redis at {self.url!r} unreachable: {exc}") from exc

    def _entry(self, chunk: Chunk) -> _Entry:
        if chunk.seq < 0:
            raise SinkError(f"sinks.RedisStream: chunk of {chunk.stream_id!r} has seq={chunk.seq}; seqs must be >= 0.")
        cached = self._versions.get(id(chunk.info))
        if cached is None or cached[0] is not chunk.info:
            doc = _info_json(chunk.info)
            version = hashlib.blake2b(doc.encode(), digest_size=6).hexdigest()
            if len(self._versions) > 1024:  # unpickled chunks bring new StreamInfo objects each tick
                self._versions.clear()
            cached = self._versions[id(chunk.info)] = (chunk.info, version, doc)
            self._info_json[(chunk.stream_id, version)] = doc
        return _Entry(chunk.stream_id, _t0_ms(chunk.t0_s), chunk.seq, cached[1], _encode(chunk), _json(chunk.meta))

    def _try_send(self) -> bool:
        """One attempt (plus one immediate retry on a fresh connection). True when the buffers are empty.

        Never raises: a failure is counted, kept in ``last_error`` and retried after a backoff
        (:meth:`flush` turns a lasting one into :class:`SinkError`).
        """
        import redis

        for attempt in range(2):
            try:
                self._send()
            except (*_transient(), redis.RedisError, SinkError) as exc:
                transient = isinstance(exc, _transient())
                self._stats["connection_errors" if transient else "refused"] += 1
                self._stats["last_error"] = f"{type(exc).__name__}: {exc}"
                self._failing = True
                if attempt == 0 and transient:
                    continue  # a pooled connection that died with the old server: the retry gets a new one
                self._backoff_s = min(2.0, max(0.05, 2 * self._backoff_s))
                self._next_try_s = time.monotonic() + self._backoff_s
                return False
            if self._failing:
                self._stats["reconnects"] += 1
                self._failing = False
            self._backoff_s = self._next_try_s = 0.0
            return True
        return False

    def _groups(self, entries: Sequence[_Entry]) -> list[tuple[str, list[_Entry]]]:
        """Split the buffer into script calls: per stream and info version, order kept, bounded in size."""
        per_stream: dict[str, list[_Entry]] = {}
        for entry in entries:
            per_stream.setdefault(entry.stream_id, []).append(entry)
        groups: list[tuple[str, list[_Entry]]] = []
        for sid, items in per_stream.items():
            current: list[_Entry] = []
            size = 0
            for entry in items:
                if current and (len(current) >= _GROUP_CHUNKS or size + len(entry.payload) > _GROUP_BYTES
                                or entry.version != current[0].version):
                    groups.append((sid, current))
                    current, size = [], 0
                current.append(entry)
                size += len(entry.payload)
            groups.append((sid, current))
        return groups

    def _send(self) -> None:
        """Send both buffers; empty each only once everything in it is stored."""
        client = self._connect()
        groups = self._groups(self._buffer)
        start = size = 0
        for i, (_, items) in enumerate(groups):  # pipelines of ~8 MiB: Redis works while the rest arrives
            size += sum(len(e.payload) for e in items)
            if size >= _PIPELINE_BYTES or i == len(groups) - 1:
                self._send_groups(client, groups[start : i + 1])
                start, size = i + 1, 0
        self._buffer.clear()
        if self._event_buffer:
            self._send_events(client)

    def _send_groups(self, client, groups: list[tuple[str, list[_Entry]]]) -> None:
        import redis

        window_ms = str(int(self.window_s * 1000))
        for _round in range(2):  # the second round follows loading what Redis did not have
            pipe = client.pipeline(transaction=False)
            for sid, items in groups:
                args: list[Any] = [window_ms, items[0].version]
                for e in items:
                    args += (e.t0_ms, e.seq, e.payload, e.meta)
                # EVALSHA, not redis-py's Script: that checks SCRIPT EXISTS first, a round trip per write.
                pipe.execute_command("EVALSHA", _APPEND_SHA, 3, self._key(sid, "data"), self._key(sid, "late"),
                                     self._key(sid, "info"), *args)  # fmt: skip
            missing: list[tuple[str, list[_Entry]]] = []
            for (sid, items), result in zip(groups, pipe.execute(raise_on_error=False)):
                if isinstance(result, redis.ConnectionError | redis.TimeoutError):
                    raise result
                if isinstance(result, redis.exceptions.NoScriptError):  # first use, or Redis restarted
                    missing.append((sid, items))
                elif isinstance(result, Exception):
                    raise SinkError(f"sinks.RedisStream: Redis refused a write to {sid!r}: {result}") from result
                elif result[0] == -1:  # the info hash lacks this version
                    missing.append((sid, items))
                else:
                    added, dups, late, too_old = (int(x) for x in result)
                    self._stats["written"] += added + late
                    self._stats["late_written"] += late
                    self._stats["duplicates_dropped"] += dups
                    self._stats["late_dropped"] += too_old
            if not missing:
                return
            # Redis lacks the script or these infos (first write of a stream, a new layout, a restart).
            pipe = client.pipeline(transaction=False)
            pipe.script_load(_APPEND)
            for sid, items in missing:
                version = items[0].version
                pipe.hset(self._key(sid, "info"), f"v:{version}", self._info_json[(sid, version)])
                pipe.sadd(f"{self.key_prefix}streams", sid)
            pipe.execute()
            groups = missing
        raise SinkError("sinks.RedisStream: script or stream info vanished twice in a row while writing.")

    def _send_events(self, client) -> None:
        events = list(self._event_buffer)
        minid = str(max(0, int((time.time() - self.window_s) * 1000)))
        pipe = client.pipeline(transaction=False)
        for sid, doc in events:
            pipe.xadd(self._key(sid, "events"), {"e": doc}, minid=minid, approximate=True)
        pipe.sadd(f"{self.key_prefix}event_streams", *{sid for sid, _ in events})
        try:
            pipe.execute()
        except _transient():
            raise
        except Exception as exc:  # a ResponseError: Redis refused (out of memory, wrong type)
            raise SinkError(f"sinks.RedisStream: Redis refused an event write: {exc}") from exc
        self._event_buffer.clear()
        self._stats["events_written"] += len(events)

    def _decode_entries(self, client, stream_id: str, entries) -> list[Chunk]:
        out: list[Chunk] = []
        for _, fields in entries:
            version = fields[b"i"].decode()
            info = self._read_infos.get((stream_id, version))
            if info is None:
                doc = self._wrap(client.hget, self._key(stream_id, "info"), f"v:{version}")
                if doc is None:
                    raise SinkError(f"sinks.RedisStream: info version {version} of {stream_id!r} is missing.")
                d = json.loads(doc)
                info = StreamInfo(d["stream_id"], d["sfreq"], d["channels"], d["ch_types"], d["units"],
                                  d["meta"] or None)  # fmt: skip
                self._read_infos[(stream_id, version)] = info
            out.append(_decode(fields[b"d"], info, fields.get(b"m")))
        return out
