"""In-memory sinks: :class:`HotBuffer` (the last N seconds, served live) and :class:`MemorySink` (tests).

Both are idempotent on ``(stream_id, seq)`` as the :class:`~neuraflow.sinks.base.Sink`
protocol requires, keep nothing on disk, and never import Ray.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from neuraflow._validate import check_int, check_positive
from neuraflow.chunk import Chunk, Event, StreamInfo

__all__ = ["HotBuffer", "MemorySink"]


def _select_events(
    events: Iterable[Event], stream_id: str | None, since_s: float | None
) -> list[Event]:
    return [
        e
        for e in events
        if (stream_id is None or e.stream_id == stream_id) and (since_s is None or e.t_s >= since_s)
    ]


class _LockedSink:
    """Holds ``self._lock`` and pickles without it (a new lock after unpickling).

    The sink travels inside the plan to its actor; a lock does not pickle.
    """

    _lock: threading.Lock

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


@dataclass(slots=True)
class _StreamBuffer:
    """The chunks of one stream in ``seq`` order plus what the query API reports."""

    info: StreamInfo
    chunks: deque[Chunk] = field(default_factory=deque)
    seqs: set[int] = field(default_factory=set)
    newest_t_end_s: float = -math.inf

    def insert(self, chunk: Chunk) -> None:
        if not self.chunks or chunk.seq > self.chunks[-1].seq:
            self.chunks.append(chunk)  # the common case: the next chunk, O(1)
        else:
            # Out of order (a retried older batch): it lands near the end, scan from the right.
            i = len(self.chunks)
            while i > 0 and self.chunks[i - 1].seq > chunk.seq:
                i -= 1
            self.chunks.insert(i, chunk)
        self.seqs.add(chunk.seq)
        self.newest_t_end_s = max(self.newest_t_end_s, chunk.t_end_s)

    def evict(self, horizon_s: float, max_chunks: int) -> None:
        chunks = self.chunks
        while chunks and (chunks[0].t_end_s < horizon_s or len(chunks) > max_chunks):
            self.seqs.discard(chunks.popleft().seq)


class HotBuffer(_LockedSink):
    """The last ``seconds`` of every stream (by device time), in memory, for live queries.

    A :class:`~neuraflow.sinks.base.Sink`: the runtime calls :meth:`write_batch`;
    the HTTP service reads with :meth:`streams`, :meth:`latest` and :meth:`events`.
    All methods are thread-safe (one lock, held for O(chunks touched)).

    Parameters
    ----------
    seconds : float
        Window kept per stream: a chunk is evicted once its ``t_end_s`` is older
        than the newest ``t_end_s`` of its stream minus ``seconds``.
    max_events : int
        Number of most recent events kept (all streams together).
    max_chunks_per_stream : int
        Hard cap per stream, so a stream with a wrong clock cannot grow without bound.

    Notes
    -----
    Idempotent on ``(stream_id, seq)``: a seq already buffered is ignored
    (counted in ``duplicates_dropped``), an older seq arriving late is inserted
    in order, and a chunk already older than the window is dropped (counted in
    ``late_dropped``). A stream whose ``sfreq`` or channels change
    (a device reconnected with another montage) starts a fresh buffer.
    Events are kept as they arrive; duplicates are not removed.

    Examples
    --------
    >>> from neuraflow.testing import make_info
    >>> import numpy as np
    >>> hot = HotBuffer(seconds=1.0)
    >>> info = make_info(2, 100.0, stream_id="eeg")
    >>> hot.write_batch([Chunk(np.zeros((2, 50)), 10.0 + 0.5 * i, info, seq=i) for i in range(4)])
    >>> hot.latest("eeg", 1.0).data.shape
    (2, 100)
    """

    def __init__(
        self, seconds: float = 60.0, *, max_events: int = 10_000, max_chunks_per_stream: int = 100_000
    ) -> None:
        self.seconds = check_positive("HotBuffer", "seconds", seconds)
        self.max_events = check_int("HotBuffer", "max_events", max_events)
        self.max_chunks_per_stream = check_int("HotBuffer", "max_chunks_per_stream", max_chunks_per_stream)
        self._lock = threading.Lock()
        self._streams: dict[str, _StreamBuffer] = {}
        self._events: deque[Event] = deque(maxlen=self.max_events)
        self.duplicates_dropped = 0
        self.late_dropped = 0

    # Sink protocol -------------------------------------------------------
    def open(self) -> None:
        """Nothing to connect to."""

    def write_batch(self, chunks: Sequence[Chunk]) -> None:
        """Add ``chunks`` (any mix of streams), drop duplicates, evict what left the window."""
        with self._lock:
            touched: dict[str, _StreamBuffer] = {}
            for chunk in chunks:
                sid = chunk.info.stream_id
                buf = self._streams.get(sid)
                if buf is not None and not _same_layout(buf.info, chunk.info):
                    if buf.chunks and chunk.seq <= buf.chunks[-1].seq:
                        self.late_dropped += 1  # a late chunk of the previous layout
                        continue
                    buf = None
                if buf is None:
                    buf = self._streams[sid] = _StreamBuffer(chunk.info)
                if chunk.seq in buf.seqs:
                    self.duplicates_dropped += 1
                    continue
                if chunk.t_end_s < buf.newest_t_end_s - self.seconds:
                    self.late_dropped += 1  # already outside the window (or long evicted)
                    continue
                if not buf.chunks or chunk.seq > buf.chunks[-1].seq:
                    buf.info = chunk.info  # the newest chunk describes the stream
                buf.insert(chunk)
                touched[sid] = buf
            for buf in touched.values():
                buf.evict(buf.newest_t_end_s - self.seconds, self.max_chunks_per_stream)

    def write_events(self, events: Sequence[Event]) -> None:
        """Keep ``events``; the oldest are dropped beyond ``max_events``."""
        with self._lock:
            self._events.extend(events)

    def flush(self) -> None:
        """Nothing to make durable: a hot buffer is memory only."""

    def close(self) -> None:
        """Keep the content (queries may still come); nothing to release."""

    # Query API -----------------------------------------------------------
    def streams(self) -> list[dict[str, Any]]:
        """Describe every buffered stream.

        Returns
        -------
        list of dict
            One dict per stream, sorted by ``stream_id``, with keys ``stream_id``,
            ``sfreq``, ``channels``, ``ch_types``, ``units`` (lists), ``last_seq``,
            ``last_t_s`` (device time just after the newest sample), ``n_chunks``.
        """
        with self._lock:
            out = []
            for sid in sorted(self._streams):
                buf = self._streams[sid]
                if not buf.chunks:
                    continue
                last = buf.chunks[-1]
                out.append(
                    {
                        "stream_id": sid,
                        "sfreq": buf.info.sfreq,
                        "channels": list(buf.info.channels),
                        "ch_types": list(buf.info.ch_types),
                        "units": list(buf.info.units),
                        "last_seq": last.seq,
                        "last_t_s": buf.newest_t_end_s,
                        "n_chunks": len(buf.chunks),
                    }
                )
            return out

    def latest(self, stream_id: str, seconds: float | None = None) -> Chunk | None:
        """The last ``seconds`` of ``stream_id`` as one chunk.

        Parameters
        ----------
        stream_id : str
            The stream to read.
        seconds : float or None
            How far back from the newest sample; ``None`` means the whole buffer.
            Whole chunks are returned: every chunk ending after
            ``newest - seconds`` is included.

        Returns
        -------
        Chunk or None
            The included chunks concatenated along samples, with ``t0_s`` of the
            first, ``seq`` and ``recv_s`` of the last, and ``meta`` giving
            ``first_seq`` and ``n_chunks``. ``None`` when nothing falls in the window.
            A gap in ``seq`` inside the window is concatenated over: check ``meta``.

        Raises
        ------
        KeyError
            ``stream_id`` was never written.
        """
        with self._lock:
            buf = self._streams.get(stream_id)
            if buf is None or not buf.chunks:
                raise self._unknown_stream(stream_id)
            horizon = -math.inf if seconds is None else buf.newest_t_end_s - float(seconds)
            picked: list[Chunk] = []
            for chunk in reversed(buf.chunks):
                if chunk.t_end_s <= horizon:
                    break
                picked.append(chunk)
            info = buf.info
        if not picked:
            return None
        picked.reverse()
        first, last = picked[0], picked[-1]
        data = first.data if len(picked) == 1 else np.concatenate([c.data for c in picked], axis=1)
        meta = {"first_seq": first.seq, "n_chunks": len(picked), "contiguous": last.seq - first.seq + 1 == len(picked)}
        return Chunk(data, first.t0_s, info, seq=last.seq, recv_s=last.recv_s, meta=meta)

    def _unknown_stream(self, stream_id: str) -> KeyError:
        # caller holds the lock
        return KeyError(f"HotBuffer: unknown stream {stream_id!r}; known: {sorted(self._streams)}")

    def chunks(self, stream_id: str) -> list[Chunk]:
        """The buffered chunks of ``stream_id`` in ``seq`` order, as written.

        Raises
        ------
        KeyError
            ``stream_id`` was never written.
        """
        with self._lock:
            buf = self._streams.get(stream_id)
            if buf is None:
                raise self._unknown_stream(stream_id)
            return list(buf.chunks)

    def events(self, stream_id: str | None = None, since_s: float | None = None) -> list[Event]:
        """Buffered events, oldest first, optionally of one stream and at or after ``since_s``.

        Events are sparse, so a stream with none (or never seen) gives ``[]``, not KeyError.
        """
        with self._lock:
            return _select_events(self._events, stream_id, since_s)


def _same_layout(a: StreamInfo, b: StreamInfo) -> bool:
    return a is b or (a.sfreq == b.sfreq and a.channels == b.channels)


class MemorySink(_LockedSink):
    """Keeps every chunk and event in memory: the sink for tests.

    Idempotent on ``(stream_id, seq)`` (the first copy is kept, later ones are
    counted in ``duplicates_dropped``). Also records how the runtime drove it:
    ``batches`` (``write_batch`` calls), ``flushes``, ``opened``, ``closed``.

    Examples
    --------
    >>> from neuraflow.testing import make_info
    >>> import numpy as np
    >>> sink = MemorySink()
    >>> c = Chunk(np.ones((1, 4)), 0.0, make_info(1, 4.0, stream_id="a"), seq=7)
    >>> sink.write_batch([c, c])
    >>> [x.seq for x in sink.chunks("a")], sink.duplicates_dropped
    ([7], 1)
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._chunks: dict[str, dict[int, Chunk]] = {}
        self._events: list[Event] = []
        self.duplicates_dropped = 0
        self.batches = 0
        self.flushes = 0
        self.opened = False
        self.closed = False

    def open(self) -> None:
        self.opened = True
        self.closed = False

    def write_batch(self, chunks: Sequence[Chunk]) -> None:
        with self._lock:
            self.batches += 1
            for chunk in chunks:
                per_stream = self._chunks.setdefault(chunk.info.stream_id, {})
                if chunk.seq in per_stream:
                    self.duplicates_dropped += 1
                else:
                    per_stream[chunk.seq] = chunk

    def write_events(self, events: Sequence[Event]) -> None:
        with self._lock:
            self._events.extend(events)

    def flush(self) -> None:
        self.flushes += 1

    def close(self) -> None:
        self.flush()
        self.closed = True

    def stats(self) -> dict[str, int]:
        """Counters: chunks held, duplicates dropped, batches written, flushes."""
        with self._lock:
            held = sum(len(v) for v in self._chunks.values())
        return {"chunks": held, "duplicates_dropped": self.duplicates_dropped,
                "batches": self.batches, "flushes": self.flushes}

    def stream_ids(self) -> list[str]:
        """Every stream written so far, sorted."""
        with self._lock:
            return sorted(self._chunks)

    def chunks(self, stream_id: str) -> list[Chunk]:
        """The chunks of ``stream_id`` in ``seq`` order (empty if never written)."""
        with self._lock:
            per_stream = self._chunks.get(stream_id, {})
            return [per_stream[s] for s in sorted(per_stream)]

    def events(self, stream_id: str | None = None, since_s: float | None = None) -> list[Event]:
        """Every event in arrival order, optionally of one stream and at or after ``since_s``."""
        with self._lock:
            return _select_events(self._events, stream_id, since_s)
