"""The read path of the Redis hot tier: ranges, the latest seconds, events, live subscriptions.

:class:`RedisReader` turns stream entries back into chunks (stream descriptions are
fetched from the ``:info`` hash once per version and cached). Every method but
:meth:`RedisReader.subscribe` uses the sink's pooled client and raises
:class:`~neuraflow.errors.SinkError` when Redis is unreachable.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from neuraflow._validate import check_int
from neuraflow.chunk import Chunk, Event, StreamInfo
from neuraflow.errors import SinkError
from neuraflow.sinks._redis_codec import decode_chunk, info_from_json, stream_key, t0_ms
from neuraflow.sinks._redis_connection import call, transient_errors

__all__ = ["RedisReader"]

#: Entries fetched per XRANGE / XREAD page.
_READ_PAGE = 512


class RedisReader:
    """Reads what a :class:`~neuraflow.sinks.RedisStream` stored under ``key_prefix``.

    Parameters
    ----------
    connect : callable
        Returns the sink's pooled ``redis.Redis`` client.
    url : str
        The Redis URL (messages; :meth:`subscribe` opens its own connection to it).
    key_prefix : str
        Prefix of every key.
    """

    def __init__(self, connect: Callable[[], Any], *, url: str, key_prefix: str) -> None:
        self._connect = connect
        self.url = url
        self.key_prefix = key_prefix
        self._infos: dict[tuple[str, str], StreamInfo] = {}  # (stream_id, version) -> info

    def streams(self) -> list[str]:
        """The stream ids written under the prefix, sorted."""
        client = self._connect()
        return sorted(s.decode() for s in self._call(client.smembers, f"{self.key_prefix}streams"))

    def read(self, stream_id: str, start_s: float | None, end_s: float | None) -> list[Chunk]:
        """Chunks of ``stream_id`` with ``t0_s`` in ``[start_s, end_s]`` (``None``: open), in ``seq`` order."""
        client = self._connect()
        lo = "-" if start_s is None else str(t0_ms(start_s))
        hi = "+" if end_s is None else str(t0_ms(end_s))
        if hi != "+" and self._call(client.zcount, self._key(stream_id, "late"), "-inf" if lo == "-" else lo, hi):
            hi = "+"  # a late chunk sits at an id after its device time
        entries = self._call(client.xrange, self._key(stream_id, "data"), lo, hi)
        chunks = self.decode_entries(client, stream_id, entries)
        chunks = [c for c in chunks if (start_s is None or c.t0_s >= start_s) and (end_s is None or c.t0_s <= end_s)]
        return sorted(chunks, key=lambda c: c.seq)

    def latest(self, stream_id: str, seconds: float | None) -> Chunk | None:
        """The last ``seconds`` of ``stream_id`` as one chunk (see ``RedisStream.latest``).

        Raises
        ------
        KeyError
            Nothing is stored for ``stream_id``.
        """
        client = self._connect()
        key = self._key(stream_id, "data")
        top = self._call(client.xrevrange, key, "+", "-", count=1)
        if not top:
            raise KeyError(f"sinks.RedisStream: no data for stream {stream_id!r} under {self.key_prefix!r}.")
        top_ms = top[0][0].split(b"-")[0].decode()
        newest = self.decode_entries(client, stream_id, self._call(client.xrange, key, top_ms, top_ms))
        horizon = -math.inf if seconds is None else max(c.t_end_s for c in newest) - float(seconds)
        picked: list[Chunk] = []
        hi, count = "+", 16
        while True:  # page backwards (growing pages) until an in-order chunk ends before the horizon
            page = self._call(client.xrevrange, key, hi, "-", count=count)
            done = len(page) < count
            count = min(2 * count, _READ_PAGE)
            for chunk, (entry_id, _) in zip(self.decode_entries(client, stream_id, page), page):
                if chunk.t_end_s > horizon:
                    picked.append(chunk)
                elif int(entry_id.split(b"-")[0]) == t0_ms(chunk.t0_s):
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

    def events(self, stream_id: str | None, since_s: float | None) -> list[Event]:
        """Stored events (of one stream, or all), at or after ``since_s``, sorted by ``t_s``."""
        client = self._connect()
        if stream_id is None:
            sids = sorted(s.decode() for s in self._call(client.smembers, f"{self.key_prefix}event_streams"))
        else:
            sids = [stream_id]
        out: list[Event] = []
        for sid in sids:
            for _, fields in self._call(client.xrange, self._key(sid, "events"), "-", "+"):
                doc = json.loads(fields[b"e"])
                if since_s is None or doc["t_s"] >= since_s:
                    out.append(Event(sid, doc["t_s"], doc["label"], doc["value"], doc["meta"] or None))
        return sorted(out, key=lambda e: e.t_s)

    def subscribe(self, stream_ids: Sequence[str], block_ms: int, *, from_start: bool,
                  max_idle_s: float | None) -> Iterator[Chunk]:  # fmt: skip
        """Yield chunks of ``stream_ids`` as they are written (see ``RedisStream.subscribe``)."""
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
                except transient_errors():
                    time.sleep(delay)
                    delay = min(2 * delay, 2.0)
                    continue
                for key, entries in replies or ():
                    key = key.decode() if isinstance(key, bytes) else key
                    cursors[key] = entries[-1][0].decode()
                    yield from self.decode_entries(client, sid_of[key], entries)
                    last_data = time.monotonic()
        finally:
            client.close()

    def decode_entries(self, client, stream_id: str, entries) -> list[Chunk]:
        """Chunks of ``(entry_id, fields)`` pairs read from ``stream_id``'s data stream, in the same order.

        Raises
        ------
        SinkError
            An entry names a stream-info version the ``:info`` hash does not hold.
        """
        out: list[Chunk] = []
        for _, fields in entries:
            version = fields[b"i"].decode()
            info = self._infos.get((stream_id, version))
            if info is None:
                doc = self._call(client.hget, self._key(stream_id, "info"), f"v:{version}")
                if doc is None:
                    raise SinkError(f"sinks.RedisStream: info version {version} of {stream_id!r} is missing.")
                info = self._infos[(stream_id, version)] = info_from_json(doc)
            out.append(decode_chunk(fields[b"d"], info, fields.get(b"m")))
        return out

    def _key(self, stream_id: str, kind: str) -> str:
        return stream_key(self.key_prefix, stream_id, kind)

    def _call(self, method, *args, **kwargs):
        return call(self.url, method, *args, **kwargs)
