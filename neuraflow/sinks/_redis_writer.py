"""The write path of the Redis hot tier: a bounded retry buffer and the idempotent append script.

:class:`RedisWriter` encodes chunks (:mod:`neuraflow.sinks._redis_codec`), keeps them and
the events in bounded buffers, and sends the buffers in pipelines of script calls (one per
stream and stream-info version, at most ``_GROUP_CHUNKS`` chunks / ``_GROUP_BYTES``). A
failed send is counted, kept for a retry after a backoff of up to 2 s, and never raised from
:meth:`RedisWriter.write`; :meth:`RedisWriter.flush` raises once retrying has lasted too long.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from neuraflow.chunk import Chunk, Event, StreamInfo
from neuraflow.errors import SinkError
from neuraflow.sinks._redis_codec import encode_chunk, info_json, info_version, meta_json, stream_key, t0_ms
from neuraflow.sinks._redis_connection import transient_errors

__all__ = ["RedisWriter"]

#: One script call carries at most this many chunks / bytes, so Redis is never blocked for long
#: (smaller calls measured faster too: Redis starts on one while the next arrives).
_GROUP_CHUNKS, _GROUP_BYTES = 64, 512 << 10
_PIPELINE_BYTES = 8 << 20

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


class RedisWriter:
    """Buffers and sends the chunks and events of one :class:`~neuraflow.sinks.RedisStream`.

    Not thread-safe: the sink calls it under its own lock.

    Parameters
    ----------
    connect : callable
        Returns the sink's pooled ``redis.Redis`` client.
    url : str
        The Redis URL, for messages.
    key_prefix : str
        Prefix of every key (see :func:`~neuraflow.sinks._redis_codec.stream_key`).
    window_s : float
        Device-time window kept per stream, seconds (events: wall-clock time).
    max_buffer_chunks : int
        Bound on buffered chunks and, separately, on buffered events.
    on_full : {"drop_oldest", "raise"}
        What :meth:`write` does when the chunk buffer is full.
    """

    def __init__(self, connect: Callable[[], Any], *, url: str, key_prefix: str, window_s: float,
                 max_buffer_chunks: int, on_full: str) -> None:  # fmt: skip
        self._connect = connect
        self.url = url
        self.key_prefix = key_prefix
        self.window_s = window_s
        self.max_buffer_chunks = max_buffer_chunks
        self.on_full = on_full
        self._buffer: deque[_Entry] = deque()
        self._event_buffer: deque[tuple[str, str]] = deque()
        self._versions: dict[str, tuple[StreamInfo, str]] = {}  # stream_id -> (last info seen, its version)
        self._info_json: dict[tuple[str, str], str] = {}  # (stream_id, version) -> json
        self._backoff_s = 0.0
        self._next_try_s = 0.0
        self._failing = False
        self.counters: dict[str, Any] = {
            "written": 0, "duplicates_dropped": 0, "late_written": 0, "late_dropped": 0, "dropped_on_full": 0,
            "events_written": 0, "events_dropped_on_full": 0, "reconnects": 0, "connection_errors": 0, "refused": 0,
            "last_error": None,
        }  # fmt: skip

    @property
    def n_buffered(self) -> int:
        """Chunks waiting for Redis."""
        return len(self._buffer)

    @property
    def n_events_buffered(self) -> int:
        """Events waiting for Redis."""
        return len(self._event_buffer)

    def write(self, chunks: Sequence[Chunk]) -> None:
        """Buffer ``chunks`` and send the buffers unless a backoff is running (see ``RedisStream.write_batch``)."""
        entries = [self._entry(chunk) for chunk in chunks]
        if self.on_full == "raise" and len(self._buffer) + len(entries) > self.max_buffer_chunks:
            if not (self._buffer and self.try_send()) or len(entries) > self.max_buffer_chunks:
                self.counters["dropped_on_full"] += len(entries)
                raise SinkError(
                    f"sinks.RedisStream: buffer full ({len(self._buffer)} chunks waiting for {self.url!r}, "
                    f"max_buffer_chunks={self.max_buffer_chunks}); batch of {len(entries)} refused. "
                    f"Last error: {self.counters['last_error']}"
                )
        self._buffer.extend(entries)
        while len(self._buffer) > self.max_buffer_chunks:  # drop_oldest
            self._buffer.popleft()
            self.counters["dropped_on_full"] += 1
        if time.monotonic() >= self._next_try_s:
            self.try_send()

    def write_events(self, events: Sequence[Event]) -> None:
        """Buffer ``events`` as JSON (the oldest dropped beyond the bound) and send unless backing off."""
        for e in events:
            value = e.value if isinstance(e.value, str) else float(e.value)
            doc = json.dumps({"t_s": e.t_s, "label": str(e.label), "value": value, "meta": dict(e.meta)},
                             default=str)  # fmt: skip
            self._event_buffer.append((e.stream_id, doc))
        while len(self._event_buffer) > self.max_buffer_chunks:
            self._event_buffer.popleft()
            self.counters["events_dropped_on_full"] += 1
        if time.monotonic() >= self._next_try_s:
            self.try_send()

    def flush(self, timeout_s: float) -> None:
        """Send both buffers, retrying with backoff (50 ms doubling to 1 s) for up to ``timeout_s``.

        Raises
        ------
        SinkError
            Redis still fails after ``timeout_s`` (the buffers are kept).
        """
        deadline = time.monotonic() + timeout_s
        delay = 0.05
        while self._buffer or self._event_buffer:
            if self.try_send():
                return
            if time.monotonic() + delay > deadline:
                raise SinkError(
                    f"sinks.RedisStream: could not write to Redis at {self.url!r} for {timeout_s} s; "
                    f"{len(self._buffer)} chunks and {len(self._event_buffer)} events kept for retry. "
                    f"Last error: {self.counters['last_error']}"
                )
            time.sleep(delay)
            delay = min(2 * delay, 1.0)

    def try_send(self) -> bool:
        """One attempt (plus one immediate retry on a fresh connection). True when the buffers are empty.

        Never raises: a failure is counted, kept in ``last_error`` and retried after a backoff
        (:meth:`flush` turns a lasting one into :class:`SinkError`).
        """
        import redis

        for attempt in range(2):
            try:
                self._send()
            except (*transient_errors(), redis.RedisError, SinkError) as exc:
                transient = isinstance(exc, transient_errors())
                self.counters["connection_errors" if transient else "refused"] += 1
                self.counters["last_error"] = f"{type(exc).__name__}: {exc}"
                self._failing = True
                if attempt == 0 and transient:
                    continue  # a pooled connection that died with the old server: the retry gets a new one
                self._backoff_s = min(2.0, max(0.05, 2 * self._backoff_s))
                self._next_try_s = time.monotonic() + self._backoff_s
                return False
            if self._failing:
                self.counters["reconnects"] += 1
                self._failing = False
            self._backoff_s = self._next_try_s = 0.0
            return True
        return False

    # Internals ------------------------------------------------------------------------
    def _key(self, stream_id: str, kind: str) -> str:
        return stream_key(self.key_prefix, stream_id, kind)

    def _entry(self, chunk: Chunk) -> _Entry:
        if chunk.seq < 0:
            raise SinkError(f"sinks.RedisStream: chunk of {chunk.stream_id!r} has seq={chunk.seq}; seqs must be >= 0.")
        cached = self._versions.get(chunk.stream_id)
        # Chunks that crossed a process boundary bring a new StreamInfo object per batch: comparing it
        # with the last one (a few us) spares serialising and hashing it again (~100 us for 64 channels).
        if cached is None or (cached[0] is not chunk.info and cached[0] != chunk.info):
            doc = info_json(chunk.info)
            cached = self._versions[chunk.stream_id] = (chunk.info, info_version(doc))
            self._info_json[(chunk.stream_id, cached[1])] = doc
        return _Entry(chunk.stream_id, t0_ms(chunk.t0_s), chunk.seq, cached[1], encode_chunk(chunk),
                      meta_json(chunk.meta))  # fmt: skip

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
                    self.counters["written"] += added + late
                    self.counters["late_written"] += late
                    self.counters["duplicates_dropped"] += dups
                    self.counters["late_dropped"] += too_old
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
        except transient_errors():
            raise
        except Exception as exc:  # a ResponseError: Redis refused (out of memory, wrong type)
            raise SinkError(f"sinks.RedisStream: Redis refused an event write: {exc}") from exc
        self._event_buffer.clear()
        self.counters["events_written"] += len(events)
