"""Clock models: device sample index -> host time (:class:`ClockModel`) and LSL clock offsets (:class:`OffsetModel`).

A device counts samples; the host notes when each chunk arrived. The arrival
time of sample ``i`` is ``a + b * i + d_i``, where ``a + b * i`` is when the
sample was taken (in host time, once a known constant ``latency_s`` is
removed) and ``d_i >= 0`` the transport and buffering delay: USB latency
timers, Bluetooth connection intervals, OS scheduling. Delays are one-sided
and come in bursts (a whole chunk arrives at once, so its first samples look
late), so least squares (RLS with forgetting included) is biased by the mean
delay and by every change of the burst pattern.

:class:`ClockModel` therefore fits the *lower envelope* of the observations:
the line that lies under every observation of a sliding window and is as
close to them as possible (maximise ``sum(line(x_j))`` under
``line(x_j) <= y_j``, the linear-programming clock fit of network time
synchronisation). Its optimum is the edge of the lower convex hull of the
points that spans their mean ``x``. To keep state small, the window holds one
point per block of samples (``block_s``, the least delayed one) for the last
``window_s`` seconds, and the hull is refitted once per block (O(blocks));
between refits a new observation only lowers the intercept if it lies under the
line. The fit is unbiased with respect to the minimum delay, which is therefore
the one thing that cannot be observed: pass it as ``latency_s`` when it
matters (it differs between transports, it is the same for every sample).

:class:`OffsetModel` fits LSL clock offsets: ``(local_time, offset)`` pairs
from ``time_correction()`` (or an XDF file's ClockOffset chunks) to a straight
line ``offset(t) = c + d * t`` by robust (Huber) regression, as pyxdf does for
``synchronize_clocks``.

Both models are frozen dataclasses with pure ``update`` methods that return a
new instance: they can live in op state, be pickled and be checkpointed.
:func:`dejitter` wraps :class:`ClockModel` as a pipeline step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from neuraflow._validate import check_option, check_positive
from neuraflow.chunk import Chunk, StreamInfo
from neuraflow.errors import PipelineDefinitionError

if TYPE_CHECKING:  # ops imports this module for its REGISTRY: import OpSpec lazily
    from neuraflow.ops.base import OpSpec

__all__ = ["ClockModel", "DejitterState", "OffsetModel", "dejitter", "fit_offsets"]


def _lower_hull(xs: Sequence[float], ys: Sequence[float]) -> list[tuple[float, float]]:
    """Lower convex hull of points sorted by increasing ``x`` (Andrew's monotone chain)."""
    hull: list[tuple[float, float]] = []
    for p in zip(xs, ys):
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            if (x2 - x1) * (p[1] - y1) - (y2 - y1) * (p[0] - x1) <= 0.0:
                hull.pop()  # hull[-1] is on or above the chord: not part of the lower hull
            else:
                break
        hull.append(p)
    return hull


@dataclass(frozen=True)
class ClockModel:
    """Host time of a device's samples, ``t(i) = t_ref + a + b * (i - i_ref)``, fitted online.

    Build one with :meth:`start`, feed it ``(sample_index, host_time)``
    observations with :meth:`update` (each returns a new model) and read times
    with :meth:`time_of`. See the module docstring for the estimator.

    Attributes
    ----------
    sfreq : float
        Nominal sampling rate (Hz): the slope until the window spans ``min_span_s``.
    block_n : int
        Samples per block; the window keeps the least delayed observation of each.
    max_blocks : int
        Blocks in the window (``window_s / block_s``).
    min_span_n : int
        Index span the window needs before the slope is fitted.
    max_drift : float
        Largest relative rate error accepted (a fit outside it keeps the nominal slope).
    i_ref, t_ref : int, float
        Reference index and time (the first observation); stored values are relative to them.
    xs, ys : tuple of float
        Closed blocks' points (relative index, relative time), oldest first.
    block : int
        Id of the current (open) block, ``-1`` before the first observation.
    bx, by : float
        The current block's least delayed point.
    a, b : float
        Current fit: relative time at relative index 0, and seconds per sample.
    last_index : int
        Largest index observed.
    n_obs : int
        Observations since the last (re)start.
    """

    sfreq: float
    block_n: int
    max_blocks: int
    min_span_n: int
    max_drift: float
    i_ref: int = 0
    t_ref: float = 0.0
    xs: tuple[float, ...] = ()
    ys: tuple[float, ...] = ()
    block: int = -1
    bx: float = 0.0  # not nan: states compare equal (checkpoints, tests)
    by: float = 0.0
    a: float = 0.0
    b: float = 0.0
    last_index: int = -1
    n_obs: int = 0

    @classmethod
    def start(
        cls,
        sfreq: float,
        *,
        window_s: float = 120.0,
        block_s: float = 1.0,
        min_span_s: float = 10.0,
        max_drift_ppm: float = 5000.0,
    ) -> ClockModel:
        """An empty model for a device with nominal rate ``sfreq`` (Hz).

        Parameters
        ----------
        window_s : float
            How far back observations count: long enough to average delays
            out, short enough to follow a crystal's thermal drift (minutes).
        block_s : float
            One point per block is kept (the least delayed one).
        min_span_s : float
            Until the window spans this long, the slope is the nominal ``1 / sfreq``
            and only the offset is fitted.
        max_drift_ppm : float
            A fitted rate further than this from nominal is rejected.
        """
        where = "sync.ClockModel"
        sfreq = check_positive(where, "sfreq", sfreq)
        window_s = check_positive(where, "window_s", window_s)
        block_s = check_positive(where, "block_s", block_s)
        min_span_s = check_positive(where, "min_span_s", min_span_s, allow_zero=True)
        max_drift_ppm = check_positive(where, "max_drift_ppm", max_drift_ppm)
        if block_s * 2 > window_s:
            raise PipelineDefinitionError(
                f"{where}: block_s={block_s} must be at most half of window_s={window_s} (the fit needs 2 blocks)."
            )
        block_n = max(1, round(block_s * sfreq))
        return cls(
            sfreq=float(sfreq),
            block_n=block_n,
            max_blocks=max(2, int(window_s / block_s)),
            min_span_n=int(min_span_s * sfreq),
            max_drift=max_drift_ppm * 1e-6,
            b=1.0 / sfreq,
        )

    # ------------------------------------------------------------------ reading
    @property
    def ready(self) -> bool:
        """True once at least one observation was made."""
        return self.n_obs > 0

    @property
    def rate_hz(self) -> float:
        """The fitted sampling rate in host seconds (Hz)."""
        return 1.0 / self.b

    def time_of(self, index: Any) -> Any:
        """Host time of sample ``index`` (int or array), seconds; ``nan`` before any observation."""
        if not self.ready:
            return np.nan * np.asarray(index, dtype=np.float64) if np.ndim(index) else math.nan
        rel = np.asarray(index, dtype=np.float64) - self.i_ref if np.ndim(index) else float(index - self.i_ref)
        return self.t_ref + (self.a + self.b * rel)

    # ------------------------------------------------------------------ updating
    def update(self, index: int, time_s: float) -> ClockModel:
        """Return the model with one more observation: sample ``index`` had arrived by ``time_s``.

        A non-finite ``time_s`` is ignored. An index smaller than the last one
        (the device restarted its counter) restarts the model.
        """
        if not math.isfinite(time_s):
            return self
        index = int(index)
        if self.n_obs == 0 or index < self.last_index:
            fresh = replace(self, i_ref=index, t_ref=float(time_s), xs=(), ys=(), block=index // self.block_n,
                            bx=0.0, by=0.0, a=0.0, b=1.0 / self.sfreq, last_index=index, n_obs=1)
            return fresh
        x = float(index - self.i_ref)
        y = float(time_s - self.t_ref)
        blk = index // self.block_n
        n_obs = self.n_obs + 1
        last = max(index, self.last_index)
        if blk == self.block:
            b = self.b
            bx, by = (x, y) if y - b * x < self.by - b * self.bx else (self.bx, self.by)
            a = min(self.a, y - b * x)  # never above an observation
            return replace(self, bx=bx, by=by, a=a, last_index=last, n_obs=n_obs)
        xs = (*self.xs, self.bx)[-self.max_blocks:]
        ys = (*self.ys, self.by)[-self.max_blocks:]
        a, b = self._fit(xs + (x,), ys + (y,))
        return replace(self, xs=xs, ys=ys, block=blk, bx=x, by=y, a=a, b=b, last_index=last, n_obs=n_obs)

    def _fit(self, xs: tuple[float, ...], ys: tuple[float, ...]) -> tuple[float, float]:
        nominal = 1.0 / self.sfreq
        b = nominal
        if xs[-1] - xs[0] >= max(self.min_span_n, 1):
            hull = _lower_hull(xs, ys)
            xm = sum(xs) / len(xs)
            for (x1, y1), (x2, y2) in zip(hull, hull[1:]):
                if x1 <= xm <= x2 and x2 > x1:
                    slope = (y2 - y1) / (x2 - x1)
                    if abs(slope / nominal - 1.0) <= self.max_drift:
                        return y1 - slope * x1, slope
                    break
        a = min(y - b * x for x, y in zip(xs, ys))
        return a, b


@dataclass(frozen=True)
class DejitterState:
    """State of :func:`dejitter`.

    Parameters
    ----------
    clock : ClockModel
        The stream's fitted clock.
    sfreq : float
        The stream's rate (Hz) and ...
    n_channels : int
        ... channel count at ``init``: a chunk that changes either is refused.
    next_index : int
        Running sample count (the index of the next chunk's first sample).
    """

    clock: ClockModel
    sfreq: float
    n_channels: int
    next_index: int = 0


def _observation(chunk: Chunk, index: int, *, time_source: str, latency_s: float) -> tuple[int, float]:
    """The ``(sample_index, host_time_s)`` pair a chunk gives the clock fit.

    A receive time that is ``nan`` or earlier than the chunk's own ``t0_s``
    cannot be when the chunk arrived (offline or replayed data carrying one
    load time for every chunk): the chunk's ``t0_s`` is used instead.
    """
    if time_source == "recv" and chunk.recv_s >= chunk.t0_s:  # False for nan
        return index + chunk.n_samples - 1, chunk.recv_s - latency_s
    return index, chunk.t0_s


def dejitter(
    sfreq_nominal: float | None = None,
    *,
    latency_s: float = 0.0,
    time_source: str = "recv",
    window_s: float = 120.0,
    block_s: float = 1.0,
    min_span_s: float = 10.0,
    max_drift_ppm: float = 5000.0,
) -> OpSpec:
    """Rewrite each chunk's ``t0_s`` from a fitted device clock (:class:`ClockModel`).

    Parameters
    ----------
    sfreq_nominal : float or None
        Nominal rate of the device (Hz); ``None`` for the stream's ``sfreq``.
    latency_s : float
        Known minimum transport latency, subtracted from receive times (the
        one quantity the lower-envelope fit cannot observe).
    time_source : {"recv", "t0"}
        What is fitted: ``"recv"``, the host receive time ``chunk.recv_s`` of
        the chunk's last sample; ``"t0"``, the device's own (jittery,
        arrival-based) ``t0_s`` of its first sample. ``"recv"`` falls back to
        ``"t0"`` for chunks whose ``recv_s`` is ``nan`` or earlier than their
        ``t0_s`` (offline or replayed data).
    window_s, block_s, min_span_s, max_drift_ppm
        See :meth:`ClockModel.start`.

    Returns
    -------
    spec : OpSpec
        Sample indices come from ``chunk.meta["sample_index"]`` when the
        device provides it (Cyton, playback, BrainFlow: dropped samples are
        then accounted for), else from a running count. Output chunks carry
        ``meta["clock_rate_hz"]``, the fitted rate. Data, ``info`` and
        ``recv_s`` are unchanged; successive refits can move ``t0_s`` of
        consecutive chunks by microseconds relative to each other.
    """
    from neuraflow.ops.base import OpSpec, check_same_stream

    where = "ops.dejitter"
    if sfreq_nominal is not None:
        sfreq_nominal = check_positive(where, "sfreq_nominal", sfreq_nominal)
    latency_s = check_positive(where, "latency_s", latency_s, allow_zero=True)
    check_option(where, "time_source", time_source, ("recv", "t0"))
    model_kwargs = dict(window_s=window_s, block_s=block_s, min_span_s=min_span_s, max_drift_ppm=max_drift_ppm)
    ClockModel.start(sfreq_nominal or 250.0, **model_kwargs)  # validate eagerly

    def init(first: Chunk) -> DejitterState:
        return DejitterState(ClockModel.start(sfreq_nominal or first.sfreq, **model_kwargs), first.sfreq,
                             first.n_channels)

    def step(state: DejitterState, chunk: Chunk) -> tuple[DejitterState, list[Chunk]]:
        check_same_stream(where, chunk, sfreq=state.sfreq, n_channels=state.n_channels)
        n = chunk.n_samples
        if n == 0:
            return state, []
        index = int(chunk.meta.get("sample_index", state.next_index))
        clock = state.clock.update(*_observation(chunk, index, time_source=time_source, latency_s=latency_s))
        meta = {**chunk.meta, "clock_rate_hz": clock.rate_hz}
        out = chunk.replace(t0_s=float(clock.time_of(index)), meta=meta)
        return DejitterState(clock, state.sfreq, state.n_channels, index + n), [out]

    def infer_info(info: StreamInfo) -> StreamInfo:
        return info

    params = {"sfreq_nominal": sfreq_nominal, "latency_s": latency_s, "time_source": time_source, **model_kwargs}
    return OpSpec("dejitter", init=init, step=step, infer_info=infer_info, params=_ro(params))


def _ro(params: dict[str, Any]) -> Any:
    from types import MappingProxyType

    return MappingProxyType(params)


# ----------------------------------------------------------------------------- clock offsets
@dataclass(frozen=True)
class OffsetModel:
    """A fitted clock offset ``offset(t) = c + d * (t - t_ref)`` between two clocks.

    LSL convention: ``offset`` is what to *add* to a remote timestamp to get
    local time (``StreamInlet.time_correction()``; the values of an XDF
    ClockOffset chunk), ``t`` the remote (sender) time of the measurement.

    Attributes
    ----------
    c, d : float
        Offset at ``t_ref`` (s) and drift (s/s).
    t_ref : float
        Reference time (the mean measurement time).
    n : int
        Number of measurements fitted.
    residual_s : float
        Robust scale (1.4826 * median absolute deviation) of the residuals.
    """

    c: float
    d: float
    t_ref: float
    n: int
    residual_s: float

    def offset_at(self, t: Any) -> Any:
        """The fitted offset at time ``t`` (float or array)."""
        return self.c + self.d * (np.asarray(t, dtype=np.float64) - self.t_ref) if np.ndim(t) else (
            self.c + self.d * (float(t) - self.t_ref))

    def to_local(self, t: Any) -> Any:
        """Remote timestamps ``t`` converted to the local clock: ``t + offset(t)``."""
        return np.asarray(t, dtype=np.float64) + self.offset_at(t) if np.ndim(t) else float(t) + self.offset_at(t)


def fit_offsets(times: Sequence[float], offsets: Sequence[float], *, robust: bool = True,
                huber_k: float = 1.345, n_iter: int = 10) -> OffsetModel:
    """Fit ``(time, offset)`` clock-offset measurements with a straight line.

    Parameters
    ----------
    times, offsets : sequence of float
        Measurement times and offsets (s), e.g. an XDF stream's
        ``clock_times`` and ``clock_values`` (pyxdf, ``synchronize_clocks=False``).
    robust : bool
        Down-weight outliers (measurements with a long round trip) by
        iteratively reweighted least squares with Huber weights; ``False`` for
        ordinary least squares.
    huber_k : float
        Huber threshold in robust standard deviations.

    Returns
    -------
    model : OffsetModel
        One measurement gives a constant offset.

    Raises
    ------
    PipelineDefinitionError
        If there is no measurement, or ``times`` and ``offsets`` differ in length.
    """
    t = np.asarray(times, dtype=np.float64).ravel()
    o = np.asarray(offsets, dtype=np.float64).ravel()
    if t.shape != o.shape or t.size == 0:
        raise PipelineDefinitionError(
            f"sync.fit_offsets: need as many times as offsets and at least one (got {t.size} and {o.size})."
        )
    keep = np.isfinite(t) & np.isfinite(o)
    t, o = t[keep], o[keep]
    t_ref = float(t.mean())
    if t.size == 1 or np.ptp(t) == 0.0:
        c = float(np.median(o))
        return OffsetModel(c, 0.0, t_ref, int(t.size), float(1.4826 * np.median(np.abs(o - c))))
    X = np.column_stack([np.ones_like(t), t - t_ref])
    w = np.ones_like(t)
    coef = np.zeros(2)
    for _ in range(n_iter if robust else 1):
        sw = np.sqrt(w)
        coef, *_ = np.linalg.lstsq(X * sw[:, None], o * sw, rcond=None)
        r = o - X @ coef
        scale = 1.4826 * np.median(np.abs(r - np.median(r)))
        if not robust or scale <= 0.0:
            break
        u = np.abs(r) / (huber_k * scale)
        w_new = np.where(u <= 1.0, 1.0, 1.0 / np.maximum(u, 1e-12))
        if np.allclose(w_new, w):
            break
        w = w_new
    r = o - X @ coef
    return OffsetModel(float(coef[0]), float(coef[1]), t_ref, int(t.size), float(1.4826 * np.median(np.abs(r))))
