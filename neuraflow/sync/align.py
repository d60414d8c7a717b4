"""Merge streams of different rates onto one time grid: :func:`align`, :class:`Aligner`, :func:`align_chunks`.

Every input stream is assumed to be on the shared time base already (device
clocks fitted with :func:`~neuraflow.sync.dejitter`, LSL offsets applied, XDF
files read with their clock offsets): sample ``j`` of a chunk is at
``chunk.t0_s + j / rate``, ``rate`` the fitted ``meta["clock_rate_hz"]`` that
:func:`~neuraflow.sync.dejitter` adds, else the nominal ``sfreq`` (a device
whose real rate is 0.25 % off, like the Muse accelerometer at 51.87 Hz for
52, is 1.5 ms off at the end of a 32-sample chunk without it). The output grid is epoch-aligned, ``t_k = k /
sfreq_out`` with integer ``k``, so two aligners at the same rate (on two
nodes, or after a restart) produce the same grid points.

A grid point is emitted once every live stream has a sample at or after it
(``"linear"``, ``"nearest"``), or has been read past it (``"hold"``), so
outputs are final: a later chunk never changes them. A stream whose data stops
(a stalled device) holds the others back for at most ``max_wait_s`` of data
time; after that its channels are ``nan`` until it catches up, and samples it
delivers for times already emitted are counted in ``state.n_late`` and dropped.
Between two samples further apart than ``max_gap`` input periods (dropped
samples) the output is ``nan`` too: nothing is invented across a gap.

Why this is not an :class:`~neuraflow.ops.OpSpec`: a plan step has one state per
*(step, source stream)* and emits one output stream per input stream
(:class:`~neuraflow.runtime.fused.FusedGraph`). Aligning needs one state that
sees the chunks of several streams and one output stream. :class:`AlignSpec`
therefore has the same pure shape as an op (``init``, ``step``,
``infer_info``, frozen picklable state) but over *several* streams:
``init(infos)`` and ``step(state, chunks)`` with chunks of any of them, in
per-stream order. :class:`Aligner` wraps it for scripts and tests; a runtime
"merge" node can host it unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

import numpy as np

from neuraflow._validate import check_option, check_positive
from neuraflow.chunk import Chunk, StreamInfo
from neuraflow.errors import PipelineDefinitionError, StreamMismatchError

__all__ = ["AlignSpec", "AlignState", "Aligner", "align", "align_chunks"]

_WHERE = "sync.align"
_METHODS = ("linear", "nearest", "hold")


@dataclass(frozen=True)
class AlignState:
    """Frozen, picklable state of an aligner.

    Attributes
    ----------
    infos : tuple of StreamInfo
        The aligned input streams, in output channel order.
    info : StreamInfo
        The output stream.
    k_next : int or None
        Grid index of the next point to emit (``t = k_next / sfreq_out``); ``None`` before the start.
    times, data : tuple of ndarray
        Per input stream: buffered sample times (float64) and samples ``(n_channels, n)`` float32.
    first_s : tuple of float
        Per input stream: time of its first sample (``nan`` before it).
    end_s : tuple of float
        Per input stream: end of its data, ``t_end_s`` of its latest chunk (``-inf`` before it).
    seq : int
        Sequence number of the next output chunk.
    n_late : int
        Samples dropped because their grid points were already emitted.
    """

    infos: tuple[StreamInfo, ...]
    info: StreamInfo
    k_next: int | None
    times: tuple[np.ndarray, ...]
    data: tuple[np.ndarray, ...]
    first_s: tuple[float, ...]
    end_s: tuple[float, ...]
    seq: int = 0
    n_late: int = 0


@dataclass(frozen=True)
class AlignSpec:
    """A validated aligner description (see :func:`align`); pure ``init``/``step``/``flush`` over several streams."""

    sfreq_out: float
    streams: tuple[str, ...] | None
    method: str
    max_wait_s: float
    max_gap: float
    stream_id: str
    prefix: bool | None
    params: Any = field(default_factory=lambda: MappingProxyType({}))

    # ------------------------------------------------------------------ build time
    def select(self, infos: Sequence[StreamInfo]) -> tuple[StreamInfo, ...]:
        """The input streams this aligner uses, in output order."""
        by_id = {i.stream_id: i for i in infos}
        if self.streams is None:
            return tuple(infos)
        missing = [s for s in self.streams if s not in by_id]
        if missing:
            raise PipelineDefinitionError(
                f"{_WHERE}: streams {missing} are not among the inputs {sorted(by_id)}."
            )
        return tuple(by_id[s] for s in self.streams)

    def infer_info(self, infos: Sequence[StreamInfo]) -> StreamInfo:
        """Output description: every selected stream's channels, types and units, at ``sfreq_out``."""
        chosen = self.select(infos)
        if not chosen:
            raise PipelineDefinitionError(f"{_WHERE}: no input stream to align.")
        names = [c for i in chosen for c in i.channels]
        prefix = self.prefix if self.prefix is not None else len(set(names)) != len(names)
        channels = tuple(f"{i.stream_id}:{c}" if prefix else c for i in chosen for c in i.channels)
        if len(set(channels)) != len(channels):
            raise PipelineDefinitionError(f"{_WHERE}: channel names {channels} are not unique; use prefix=True.")
        return StreamInfo(
            stream_id=self.stream_id,
            sfreq=self.sfreq_out,
            channels=channels,
            ch_types=tuple(t for i in chosen for t in i.ch_types),
            units=tuple(u for i in chosen for u in i.units),
            meta={"aligned": tuple(i.stream_id for i in chosen), "method": self.method},
        )

    def init(self, infos: Sequence[StreamInfo]) -> AlignState:
        """Empty state for the input streams ``infos``."""
        chosen = self.select(infos)
        out = self.infer_info(chosen)
        return AlignState(
            infos=chosen,
            info=out,
            k_next=None,
            times=tuple(np.empty(0) for _ in chosen),
            data=tuple(np.empty((i.n_channels, 0), np.float32) for i in chosen),
            first_s=tuple(math.nan for _ in chosen),
            end_s=tuple(-math.inf for _ in chosen),
        )

    # ------------------------------------------------------------------ run time
    def step(self, state: AlignState, chunks: Iterable[Chunk]) -> tuple[AlignState, list[Chunk]]:
        """Take chunks of any input streams (per-stream order kept); return the new state and 0 or 1 output chunk.

        Chunks of streams that are not aligned here are ignored.
        """
        state = self._ingest(state, chunks)
        return self._emit(state, final=False)

    def flush(self, state: AlignState) -> tuple[AlignState, list[Chunk]]:
        """Emit every grid point up to the latest data of any stream (end of input): missing data is ``nan``."""
        return self._emit(state, final=True)

    def _ingest(self, state: AlignState, chunks: Iterable[Chunk]) -> AlignState:
        index = {i.stream_id: k for k, i in enumerate(state.infos)}
        times, data = list(state.times), list(state.data)
        first, end = list(state.first_s), list(state.end_s)
        n_late = state.n_late
        emitted_s = (state.k_next - 1) / self.sfreq_out if state.k_next is not None else -math.inf
        for chunk in chunks:
            k = index.get(chunk.stream_id)
            if k is None or chunk.n_samples == 0:
                continue
            if chunk.n_channels != state.infos[k].n_channels:
                raise StreamMismatchError(
                    f"{_WHERE}: chunk of {chunk.stream_id!r} has {chunk.n_channels} channels, "
                    f"the aligner was built for {state.infos[k].n_channels}."
                )
            rate = float(chunk.meta.get("clock_rate_hz", chunk.sfreq))  # fitted by dejitter, when present
            t = chunk.t0_s + np.arange(chunk.n_samples) / rate
            x = chunk.data
            last = times[k][-1] if times[k].size else -math.inf
            keep = t > last  # overlapping or out-of-order samples cannot be placed on a monotonic time axis
            if end[k] < emitted_s:  # the stream was given up on: what it brings for the past is late
                late = t <= emitted_s
                n_late += int(np.count_nonzero(keep & late))
                keep &= ~late
            if not keep.all():
                t, x = t[keep], x[:, keep]
            if t.size:
                times[k] = np.concatenate([times[k], t])
                data[k] = np.concatenate([data[k], x], axis=1)
                if math.isnan(first[k]):
                    first[k] = float(t[0])
            end[k] = max(end[k], chunk.t0_s + chunk.n_samples / rate)
        return replace(state, times=tuple(times), data=tuple(data), first_s=tuple(first), end_s=tuple(end),
                       n_late=n_late)

    def _avail(self, state: AlignState, k: int) -> float:
        """Latest time at which stream ``k``'s values are final."""
        if self.method == "hold":
            return state.end_s[k] - 1e-9
        return float(state.times[k][-1]) if state.times[k].size else -math.inf

    def _emit(self, state: AlignState, *, final: bool) -> tuple[AlignState, list[Chunk]]:
        n = len(state.infos)
        avail = [self._avail(state, k) for k in range(n)]
        have = [k for k in range(n) if not math.isnan(state.first_s[k])]
        if not have:
            return state, []
        lead = max(avail[k] for k in have)
        k_next = state.k_next
        if k_next is None:
            earliest = min(state.first_s[k] for k in have)
            if len(have) < n and not final and lead - earliest < self.max_wait_s:
                return state, []  # wait for every stream to start
            k_next = _ceil_grid(max(state.first_s[k] for k in have), self.sfreq_out)
        if final:
            horizon = lead
        else:
            live = [avail[k] for k in range(n) if avail[k] >= lead - self.max_wait_s]
            horizon = min(live)
        k_stop = _floor_grid(horizon, self.sfreq_out) + 1  # emit k_next .. k_stop - 1
        if k_stop <= k_next:
            return replace(state, k_next=k_next), []
        grid = np.arange(k_next, k_stop, dtype=np.float64) / self.sfreq_out
        blocks = [self._values(state, k, grid) for k in range(n)]
        out = Chunk(np.concatenate(blocks, axis=0), k_next / self.sfreq_out, state.info, seq=state.seq,
                    meta={"grid_index": k_next})
        # Trim: keep from the last sample at or before the next grid point.
        t_next = k_stop / self.sfreq_out
        times, data = [], []
        for k in range(n):
            j = max(int(np.searchsorted(state.times[k], t_next, side="right")) - 1, 0)
            times.append(state.times[k][j:])
            data.append(state.data[k][:, j:])
        return replace(state, k_next=k_stop, times=tuple(times), data=tuple(data), seq=state.seq + 1), [out]

    def _values(self, state: AlignState, k: int, grid: np.ndarray) -> np.ndarray:
        info = state.infos[k]
        t, x = state.times[k], state.data[k]
        out = np.full((info.n_channels, grid.size), np.nan, dtype=np.float32)
        if t.size == 0:
            return out
        max_gap_s = self.max_gap / info.sfreq
        j = np.searchsorted(t, grid, side="right") - 1  # last sample at or before each grid point
        j1 = np.minimum(j + 1, t.size - 1)
        valid = j >= 0
        if self.method == "hold":
            valid &= grid < state.end_s[k]
        else:
            valid &= grid <= t[-1]
        jc = np.maximum(j, 0)
        exact = valid & (t[jc] == grid)
        spacing = t[j1] - t[jc]
        valid &= exact | (spacing <= max_gap_s)
        if self.method == "hold" and t.size:
            valid &= (grid - t[jc]) <= max_gap_s
        if not valid.any():
            return out
        g = grid[valid]
        if self.method == "linear":
            for c in range(info.n_channels):
                out[c, valid] = np.interp(g, t, x[c].astype(np.float64))
        else:
            pick = jc[valid]
            if self.method == "nearest":
                right = j1[valid]
                pick = np.where((t[right] - g) < (g - t[pick]), right, pick)
            out[:, valid] = x[:, pick]
        return out


def _ceil_grid(t: float, sfreq: float) -> int:
    """Smallest ``k`` with ``k / sfreq >= t``."""
    k = math.ceil(t * sfreq)
    while k / sfreq < t:
        k += 1
    while (k - 1) / sfreq >= t:
        k -= 1
    return k


def _floor_grid(t: float, sfreq: float) -> int:
    """Largest ``k`` with ``k / sfreq <= t``."""
    k = math.floor(t * sfreq)
    while k / sfreq > t:
        k -= 1
    while (k + 1) / sfreq <= t:
        k += 1
    return k


def align(
    sfreq_out: float,
    *,
    streams: Sequence[str] | None = None,
    method: str = "linear",
    max_wait_s: float = 1.0,
    max_gap: float = 2.5,
    stream_id: str = "aligned",
    prefix: bool | None = None,
) -> AlignSpec:
    """Describe an aligner that merges several streams onto one grid at ``sfreq_out``.

    Parameters
    ----------
    sfreq_out : float
        Rate of the output grid (Hz); grid points are at ``k / sfreq_out`` seconds since the epoch.
    streams : sequence of str or None
        Input stream ids to align, in output order; ``None`` for every input.
    method : {"linear", "nearest", "hold"}
        Linear interpolation between the two samples around a grid point, the
        nearest sample, or the last sample at or before it (sample-and-hold,
        for slow or step-like channels).
    max_wait_s : float
        How far (in data time) the leading stream may run ahead of a stalled one
        before the stalled one's channels are emitted as ``nan``.
    max_gap : float
        Largest spacing between two samples, in input sample periods, that is
        interpolated (or held) over; wider gaps give ``nan``.
    stream_id : str
        Id of the output stream.
    prefix : bool or None
        Name output channels ``"stream_id:channel"``; ``None``: only when
        channel names clash between streams.

    Returns
    -------
    spec : AlignSpec
        Use with :class:`Aligner` or :func:`align_chunks`, or call its pure
        ``init(infos)`` / ``step(state, chunks)`` / ``flush(state)`` yourself.
    """
    sfreq_out = check_positive(_WHERE, "sfreq_out", sfreq_out)
    check_option(_WHERE, "method", method, _METHODS)
    max_wait_s = check_positive(_WHERE, "max_wait_s", max_wait_s, allow_zero=True)
    max_gap = check_positive(_WHERE, "max_gap", max_gap)
    if max_gap < 1.0:
        raise PipelineDefinitionError(f"{_WHERE}: max_gap={max_gap} must be >= 1 sample period.")
    if streams is not None:
        if isinstance(streams, str) or not all(isinstance(s, str) and s for s in streams):
            raise PipelineDefinitionError(f"{_WHERE}: streams={streams!r} must be a sequence of stream ids or None.")
        streams = tuple(streams)
        if not streams or len(set(streams)) != len(streams):
            raise PipelineDefinitionError(f"{_WHERE}: streams={streams!r} must be non-empty and unique.")
    if not isinstance(stream_id, str) or not stream_id:
        raise PipelineDefinitionError(f"{_WHERE}: stream_id={stream_id!r} must be a non-empty string.")
    if prefix is not None and not isinstance(prefix, bool):
        raise PipelineDefinitionError(f"{_WHERE}: prefix={prefix!r} must be True, False or None.")
    params = MappingProxyType({"sfreq_out": sfreq_out, "streams": streams, "method": method, "max_wait_s": max_wait_s,
                               "max_gap": max_gap, "stream_id": stream_id, "prefix": prefix})
    return AlignSpec(sfreq_out, streams, method, max_wait_s, max_gap, stream_id, prefix, params)


class Aligner:
    """Mutable convenience wrapper of an :class:`AlignSpec` and its state (scripts, tests).

    Parameters
    ----------
    infos : sequence of StreamInfo
        The input streams.
    sfreq_out : float
        Output rate (Hz).
    **kwargs
        Passed to :func:`align`.

    Examples
    --------
    >>> from neuraflow.testing import make_info
    >>> a = Aligner([make_info(1, 100.0, stream_id="a"), make_info(1, 50.0, stream_id="b")], 100.0, prefix=True)
    >>> a.info.channels
    ('a:ch0', 'b:ch0')
    """

    def __init__(self, infos: Sequence[StreamInfo], sfreq_out: float, **kwargs: Any) -> None:
        self.spec = align(sfreq_out, **kwargs)
        self.state = self.spec.init(infos)

    @property
    def info(self) -> StreamInfo:
        return self.state.info

    def push(self, *chunks: Chunk) -> list[Chunk]:
        """Add chunks; return the output chunks that became final."""
        self.state, out = self.spec.step(self.state, chunks)
        return out

    def flush(self) -> list[Chunk]:
        """End of input: emit what is left."""
        self.state, out = self.spec.flush(self.state)
        return out


def align_chunks(
    chunks_by_stream: Sequence[Sequence[Chunk]],
    sfreq_out: float,
    **kwargs: Any,
) -> Chunk:
    """Offline: align whole recordings (one chunk list per stream) into one chunk.

    Chunks are fed in order of their start time across streams, then flushed.
    Raises :class:`~neuraflow.errors.PipelineDefinitionError` if a stream has no chunk
    or nothing could be aligned.
    """
    infos = []
    for chunks in chunks_by_stream:
        if not chunks:
            raise PipelineDefinitionError(f"{_WHERE}: align_chunks got a stream without chunks.")
        infos.append(chunks[0].info)
    aligner = Aligner(infos, sfreq_out, **kwargs)
    order = sorted(((c.t0_s, s, i) for s, chunks in enumerate(chunks_by_stream) for i, c in enumerate(chunks)))
    outputs = aligner.push(*(chunks_by_stream[s][i] for _, s, i in order))
    outputs += aligner.flush()
    if not outputs:
        raise PipelineDefinitionError(f"{_WHERE}: nothing to align (no overlap of the streams' data).")
    data = np.concatenate([c.data for c in outputs], axis=1)
    return Chunk(data, outputs[0].t0_s, aligner.info, meta={"grid_index": outputs[0].meta["grid_index"],
                                                              "n_late": aligner.state.n_late})
