"""Incremental band power over sliding windows: :func:`sliding_band_power`.

``sliding_window(length_s, step_s) -> log_band_power(bands)`` recomputes a full
FFT of every window although consecutive windows share ``n_win - hop`` samples
and the bands only read a few dozen bins. This op fuses the two and keeps, per
channel, the DFT of the current window for the bins ``k`` the bands need plus
their neighbours ``k - 1`` and ``k + 1``, in the frame of absolute sample
indices (``Z[k] = sum_n x[n] e^{-2 pi i k n / N}`` over the window's samples
``n``), so sliding the window by one hop of ``h`` samples from start ``s`` only
adds the hop's difference (exact algebra, ``e^{-2 pi i k N / N} = 1``)::

    Z'[k] = Z[k] + sum_j (x[s + N + j] - x[s + j]) e^{-2 pi i k (s + j) / N}

one ``(n_rows, h) @ (h, 2 n_bins)`` real matrix product for all channels (and,
in ``step_batch``, all streams whose windows start at the same phase
``s mod N``). The window's own DFT is ``X[k] = e^{2 pi i k s / N} Z[k]``. The
periodic Hann window is applied in the frequency domain,
``w = 0.5 - 0.25 e^{+i theta} - 0.25 e^{-i theta}``, so
``Y[m] = 0.5 X[m] - 0.25 X[m - 1] - 0.25 X[m + 1]``; its magnitude, all the
band power needs, is ``|0.5 Z[m] - 0.25 e^{-i phi} Z[m - 1] - 0.25 e^{+i phi} Z[m + 1]|``
with ``phi = 2 pi s / N``: one real matrix per phase, the rotation into the
window's frame folded into it. ``detrend="constant"`` only zeroes ``X[0]``
(the mean of a window changes no other bin of its DFT). The density scaling
and band averaging are those of :func:`~neuraflow.ops.log_band_power`.
Rounding drift is bounded by re-anchoring (computing the bins directly from
the buffered window) every ``reanchor_every`` hops, and whenever the bins stop
being finite (a NaN or inf sample entered).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache, partial
from types import MappingProxyType

import numpy as np

from neuraflow._validate import check_int, check_positive
from neuraflow.chunk import Chunk, StreamInfo
from neuraflow.errors import PipelineDefinitionError
from neuraflow.ops import _blocks, features, windows
from neuraflow.ops.base import OpSpec, check_same_stream
from neuraflow.ops.features import Bands

# Measured drift of the sliding update in float64 without any re-anchoring, one hour at
# 1 kHz (112,000 hops of 32 samples; 5 mV offset, 20 mV artefacts): bins 4e-12 relative,
# log10 band power 1e-11 absolute, five orders below float32 resolution. Re-anchoring
# every 1024 hops (~33 s at the reference hop) costs ~3% and bounds drift anyway.
DEFAULT_REANCHOR_EVERY = 1024
_BATCH_ROWS = 1024  # rows per matrix product in step_batch: ~1 MB operands stay in a core's L2 cache
_MAX_BLOCKS = 64  # compact the sample ring when it holds more chunks than this
_WHERE = "ops.sliding_band_power"


@dataclass(frozen=True, eq=False)
class SpectralState:
    """Sliding band-power state of one stream.

    Parameters
    ----------
    blocks : tuple of ndarray, each shape (n_channels, n_i), float32
        Consecutive read-only input blocks holding samples ``[blocks_start, n_seen)``:
        at least the last emitted window and the samples after it.
    blocks_start : int
        Input sample index of ``blocks[0][:, 0]``.
    n_seen : int
        Number of input samples seen so far.
    next_end : int
        Input sample index (exclusive) at which the next window ends.
    bins : ndarray, shape (n_channels, 2 * n_bins), float64, or None
        ``[Re Z | Im Z]`` of the last emitted window at the tracked bins, in the frame
        of absolute sample indices (``X[k] = e^{2 pi i k s / N} Z[k]`` for a window
        starting at sample ``s``; ``None`` before the first window). Read-only.
    stale : bool
        True when ``bins`` are not finite (a NaN or inf sample is or was in the
        window): the next window is computed directly instead of updated.
    anchor_phase : int
        Window index modulo ``reanchor_every`` at which the bins are recomputed
        directly (derived from the stream id, so that many streams do not
        re-anchor on the same tick).
    sfreq : float
        Input rate in Hz the op was initialised with.
    n_channels : int
        Input channel count the op was initialised with.
    out_info : StreamInfo
        Description of the emitted feature chunks.
    """

    blocks: tuple[np.ndarray, ...]
    blocks_start: int
    n_seen: int
    next_end: int
    bins: np.ndarray | None
    stale: bool
    anchor_phase: int
    sfreq: float
    n_channels: int
    out_info: StreamInfo


@dataclass(frozen=True, eq=False)
class _Plan:
    n_win: int
    hop: int
    tracked: np.ndarray  # (n_bins,) int64: the canonical bins kept, ascending
    anchor: np.ndarray  # (n_win, 2 n_bins): direct DFT of a window at the tracked bins, window frame
    hann: tuple[np.ndarray, np.ndarray, np.ndarray]  # (2 n_bins, 2 n_out) each: H(phi) = H0 + cos phi Hc + sin phi Hs
    weights: np.ndarray  # (2 n_out, n_bands): density scaling times band averaging, for [Re^2 | Im^2]
    empty: np.ndarray  # (n_bands,) bool
    any_empty: bool
    win: np.ndarray  # (n_win,) periodic Hann, for the total power in relative mode
    total_scale: float
    cache: dict = field(default_factory=dict)  # per-phase matrices, bounded (see _phased)

    @property
    def n_bins(self) -> int:
        return self.tracked.size


def _canonical(k: int, n: int) -> tuple[int, bool]:
    """Map DFT index ``k`` to ``(c, conj)`` with ``0 <= c <= n // 2`` and ``X[k] = conj?(X[c])`` (real input)."""
    c = k % n
    return (n - c, True) if c > n - c else (c, False)


@lru_cache(maxsize=64)
def _plan(n_win: int, hop: int, sfreq: float, bands: Bands, relative: bool) -> _Plan:
    win, density, avg, empty = features._spectral_plan(n_win, sfreq, bands, relative)
    out_bins = np.flatnonzero(avg.any(axis=1))
    # X[0] is zero after detrend="constant": never tracked, a neighbour 0 contributes nothing
    tracked = sorted({c for m in out_bins for d in (-1, 0, 1) if (c := _canonical(int(m) + d, n_win)[0]) != 0})
    tracked = tracked or [1]  # every band empty (NaN output): keep one bin so the shapes stay valid
    where = {c: q for q, c in enumerate(tracked)}
    n_k, n_m = len(tracked), out_bins.size
    # Y'[m] = sum_d coef_d e^{i phi d} Z[m + d], with Z[k] = conj?(Z[c]): H0 holds the d = 0 terms,
    # Hc and Hs the cos(phi) and sin(phi) parts of the d = +-1 terms
    h0, hc, hs = (np.zeros((2 * n_k, 2 * n_m)) for _ in range(3))
    for j, m in enumerate(out_bins):
        for coef, d in ((0.5, 0), (-0.25, -1), (-0.25, 1)):
            c, conj = _canonical(int(m) + d, n_win)
            if c == 0:
                continue
            q, sign = where[c], (-1.0 if conj else 1.0)
            real = h0 if d == 0 else hc  # the real part of g = coef e^{i phi d}
            real[q, j] += coef  # Re Y' += Re g Re Z
            real[n_k + q, n_m + j] += sign * coef  # Im Y' += Re g Im Z
            if d:
                hs[n_k + q, j] -= d * sign * coef  # Re Y' -= Im g Im Z
                hs[q, n_m + j] += d * coef  # Im Y' += Im g Re Z
    k = np.asarray(tracked, dtype=np.int64)
    n = np.arange(n_win, dtype=np.int64)[:, None]
    # exact integer phases modulo n_win keep the twiddles accurate for long windows
    phase = 2.0 * np.pi * ((n * k) % n_win) / n_win
    plan = _Plan(
        n_win=n_win,
        hop=hop,
        tracked=k,
        anchor=np.concatenate([np.cos(phase), -np.sin(phase)], axis=1),
        hann=(h0, hc, hs),
        weights=np.tile(density[out_bins, None] * avg[out_bins], (2, 1)),
        empty=empty,
        any_empty=bool(empty.any()),
        win=win,
        total_scale=n_win / (sfreq * float(np.sum(win**2))),
    )
    for a in (plan.tracked, plan.anchor, *plan.hann, plan.weights):
        a.flags.writeable = False
    return plan


_MAX_PHASES = 512  # cached per-phase matrices per plan (a hop dividing the window needs n_win / hop)


def _phased(plan: _Plan, phase: int) -> tuple[np.ndarray, np.ndarray]:
    """The matrices of windows starting at ``phase = start mod n_win``.

    ``advance (hop, 2 n_bins)``: the hop's sample differences -> change of ``[Re Z | Im Z]``
    when a window starting at ``phase`` slides by one hop; ``hann (2 n_bins, 2 n_out)``:
    ``[Re Z | Im Z]`` of a window starting at ``phase`` -> ``[Re Y' | Im Y']``, ``|Y'| = |Y|`` (float32).
    """
    hit = plan.cache.get(phase)
    if hit is not None:
        return hit
    n_win, k = plan.n_win, plan.tracked
    j = np.arange(plan.hop, dtype=np.int64)[:, None]
    angle = 2.0 * np.pi * ((k * (phase + j)) % n_win) / n_win
    advance = np.concatenate([np.cos(angle), -np.sin(angle)], axis=1)
    theta = 2.0 * np.pi * phase / n_win
    h0, hc, hs = plan.hann
    hann = (h0 + np.cos(theta) * hc + np.sin(theta) * hs).astype(np.float32)  # see _band_values
    if len(plan.cache) >= _MAX_PHASES:
        plan.cache.clear()
    plan.cache[phase] = (advance, hann)
    return advance, hann


def _to_window_start(bins: np.ndarray, plan: _Plan, start: int) -> np.ndarray:
    """``[Re X | Im X]`` in a window's own frame -> ``[Re Z | Im Z]`` in the absolute frame.

    ``start``: the window's first sample.
    """
    n_k = plan.n_bins
    angle = 2.0 * np.pi * ((plan.tracked * (start % plan.n_win)) % plan.n_win) / plan.n_win
    cos, sin = np.cos(angle), np.sin(angle)
    re, im = bins[:, :n_k], bins[:, n_k:]
    # Z = e^{-i angle} X
    return np.concatenate([re * cos + im * sin, im * cos - re * sin], axis=1)


def _sizes(info: StreamInfo, length_s: float, step_s: float) -> tuple[int, int]:
    n_win, hop = windows._sizes(length_s, step_s, info.sfreq)
    if hop > n_win:
        raise ValueError(
            f"step_s={step_s!r} is {hop} samples, longer than the {n_win}-sample window (length_s={length_s!r}) "
            f"at sfreq={info.sfreq!r}; use sliding_window + log_band_power to skip samples between windows."
        )
    if n_win < 2:
        raise ValueError(f"length_s={length_s!r} gives a {n_win}-sample window at sfreq={info.sfreq!r}; needs >= 2.")
    return n_win, hop


def _infer_info(info: StreamInfo, *, bands: Bands, relative: bool, length_s: float, step_s: float) -> StreamInfo:
    _sizes(info, length_s, step_s)
    window_info = windows._infer_info(info, length_s=length_s, step_s=step_s)
    return features._infer_info(window_info, bands=bands, relative=relative)


def _init(first: Chunk, *, bands: Bands, relative: bool, length_s: float, step_s: float, reanchor_every: int):
    n_win, _ = _sizes(first.info, length_s, step_s)
    out_info = _infer_info(first.info, bands=bands, relative=relative, length_s=length_s, step_s=step_s)
    phase = zlib.crc32(first.stream_id.encode()) % reanchor_every
    return SpectralState(
        blocks=(),
        blocks_start=0,
        n_seen=0,
        next_end=n_win,
        bins=None,
        stale=False,
        anchor_phase=phase,
        sfreq=first.sfreq,
        n_channels=first.n_channels,
        out_info=out_info,
    )


def _copy_into(blocks: tuple[np.ndarray, ...], start: int, lo: int, out: np.ndarray, *, subtract: bool) -> None:
    """Write (or subtract) samples ``[lo, lo + out.shape[1])`` of consecutive blocks starting at sample
    ``start`` into the float64 rows ``out``, piece by piece (no gather copy)."""
    hi, pos = lo + out.shape[1], 0
    for block in blocks:
        end = start + block.shape[1]
        if end > lo:
            a, b = (lo - start if lo > start else 0), min(hi - start, block.shape[1])
            dest = out[:, pos : pos + b - a]
            if subtract:
                np.subtract(dest, block[:, a:b], out=dest)
            else:
                dest[...] = block[:, a:b]
            pos += b - a
            if end >= hi:
                return
        start = end


def _copy_near_end(blocks: tuple[np.ndarray, ...], stop: int, lo: int, out: np.ndarray) -> None:
    """:func:`_copy_into` for samples near the end (``stop``: the sample after the last block):
    the hop's new samples lie in the last block or two, found from the back."""
    for i in range(len(blocks) - 1, -1, -1):
        stop -= blocks[i].shape[1]
        if stop <= lo:
            _copy_into(blocks[i:], stop, lo, out, subtract=False)
            return
    raise AssertionError(f"sample {lo} is not buffered")  # pragma: no cover - invariant of _prune


def _prune(blocks: tuple[np.ndarray, ...], start: int, keep_from: int, n_win: int) -> tuple[tuple[np.ndarray, ...], int]:
    """Drop blocks before ``keep_from``; compact many small blocks or a long stale prefix (copy)."""
    blocks, start, _ = _blocks.drop_blocks_before(blocks, start, 0, keep_from)
    if blocks and (len(blocks) > _MAX_BLOCKS or keep_from - start > n_win):
        total = start + sum(b.shape[1] for b in blocks)
        merged = np.ascontiguousarray(_blocks.gather(blocks, start, keep_from, total))
        merged.flags.writeable = False
        blocks, start = (merged,), keep_from
    return blocks, start


def _window_power(windows_: np.ndarray, plan: _Plan) -> np.ndarray:
    """Total one-sided density power of detrended Hann windows, shape (rows, n_win) -> (rows,) (Parseval)."""
    x = windows_ - windows_.mean(axis=-1, keepdims=True)
    y = x * plan.win
    return np.einsum("ij,ij->i", y, y) * plan.total_scale


def _anchor_bins(windows_: np.ndarray, plan: _Plan, start: int) -> np.ndarray:
    """Bins ``[Re Z | Im Z]`` of windows starting at sample ``start``, computed directly.

    Shape (rows, n_win) float64 -> (rows, 2 n_bins), in the absolute frame.
    """
    # removing the mean changes only X[0] (untracked), but keeps large offsets out of the
    # rounding and turns an inf sample into NaN, as the reference's detrend does
    x = windows_ - windows_.mean(axis=-1, keepdims=True)
    return _to_window_start(x @ plan.anchor, plan, start)


def _band_values(bins: np.ndarray, hann: np.ndarray, plan: _Plan, total: np.ndarray | None) -> np.ndarray:
    """Log band power from ``[Re Z | Im Z]`` rows, shape (rows, 2 n_bins) -> (rows, n_bands).

    The Hann product runs in float32 (``hann`` is float32): it only feeds the squares
    of this window, nothing accumulates in it, and it is the largest product of the op
    (measured 25 % faster than float64). On 60 s of synthetic EEG at 1 kHz the log band
    powers differ from the float64 product by at most one float32 ulp of the output.
    Squares and sums are float64, so tiny signals do not underflow.
    """
    y = np.square(bins.astype(np.float32) @ hann, dtype=np.float64)
    band = y @ plan.weights  # Re^2 + Im^2 = |Y|^2 -> density -> band mean, one product
    with np.errstate(divide="ignore", invalid="ignore"):
        if total is not None:
            band /= total[:, None]
        if plan.any_empty:
            band[:, plan.empty] = np.nan
        return np.log10(band, out=band)


class _Job:
    """Bookkeeping of one stream during one batch step (mutable, never escapes the step)."""

    __slots__ = ("index", "plan", "blocks", "start", "stop", "bins", "stale", "ends", "values", "n_ch")

    def __init__(self, index: int, plan: _Plan, state: SpectralState, chunk: Chunk, ends: range) -> None:
        self.index, self.plan, self.ends = index, plan, ends
        self.blocks = (*state.blocks, chunk.data)
        self.start, self.bins, self.stale = state.blocks_start, state.bins, state.stale
        self.stop = state.n_seen + chunk.data.shape[1]  # the sample after the last block
        self.values: list[np.ndarray] = []
        self.n_ch = chunk.data.shape[0]

    def window(self, end: int) -> np.ndarray:
        return _blocks.gather(self.blocks, self.start, end - self.plan.n_win, end)


def _step_batch(
    states: Sequence[SpectralState],
    chunks: Sequence[Chunk],
    *,
    bands: Bands,
    relative: bool,
    length_s: float,
    step_s: float,
    reanchor_every: int,
) -> tuple[list[SpectralState], list[list[Chunk]]]:
    """Advance many streams; the k-th windows of all streams of one shape and phase share one matrix product."""
    new_states: list[SpectralState] = list(states)
    outputs: list[list[Chunk]] = [[] for _ in chunks]
    jobs: list[_Job] = []
    plans: dict[float, _Plan] = {}  # by sfreq: the sizes depend on nothing else
    for i, (state, chunk) in enumerate(zip(states, chunks)):
        check_same_stream(_WHERE, chunk, sfreq=state.sfreq, n_channels=state.n_channels)
        n = chunk.data.shape[1]
        if n:
            plan = plans.get(chunk.sfreq)
            if plan is None:
                plan = plans[chunk.sfreq] = _plan(*_sizes(chunk.info, length_s, step_s), chunk.sfreq, bands, relative)
            ends = range(state.next_end, state.n_seen + n + 1, plan.hop)
            jobs.append(_Job(i, plan, state, chunk, ends))
    rank = 0
    while todo := [job for job in jobs if rank < len(job.ends)]:
        # streams of one window shape and rate, whose windows start at the same phase, batch together
        groups: dict[tuple[int, int], list[_Job]] = {}
        for job in todo:
            plan = job.plan
            groups.setdefault((id(plan), (job.ends[rank] - plan.n_win) % plan.n_win), []).append(job)
        for (_, phase), members in groups.items():
            # sub-batches of ~_BATCH_ROWS rows keep the stacked operands in the L2 cache
            n, size = 0, 0
            for j, job in enumerate(members):
                size += job.n_ch
                if size >= _BATCH_ROWS or j == len(members) - 1:
                    _advance(members[n : j + 1], rank, phase, relative, reanchor_every, states)
                    n, size = j + 1, 0
        rank += 1
    for job in jobs:
        state, chunk, plan = states[job.index], chunks[job.index], job.plan
        next_end = job.ends[-1] + plan.hop if job.ends else state.next_end
        blocks, start = _prune(job.blocks, job.start, max(0, next_end - plan.hop - plan.n_win), plan.n_win)
        new_states[job.index] = SpectralState(
            blocks=blocks,
            blocks_start=start,
            n_seen=job.stop,
            next_end=next_end,
            bins=job.bins,
            stale=job.stale,
            anchor_phase=state.anchor_phase,
            sfreq=state.sfreq,
            n_channels=state.n_channels,
            out_info=state.out_info,
        )
        if job.ends:
            outputs[job.index] = _emit(state, chunk, plan, job.ends, job.values, length_s, step_s)
    return new_states, outputs


def _advance(
    members: list[_Job], rank: int, phase: int, relative: bool, every: int, states: Sequence[SpectralState]
) -> None:
    """Compute window number ``rank`` of this step for each member (one plan, windows starting at ``phase``)."""
    plan = members[0].plan
    n_win, hop = plan.n_win, plan.hop
    updates, anchors = [], []
    for job in members:
        index = (job.ends[rank] - n_win) // hop
        fresh = job.bins is None or job.stale or index % every == states[job.index].anchor_phase
        (anchors if fresh else updates).append(job)
    if updates:
        # Z' = Z + (x_new - x_old) @ advance, for the rows of every stream at once
        diff = np.empty((sum(job.n_ch for job in updates), hop))
        r = 0
        for job in updates:
            end, rows = job.ends[rank], diff[r : r + job.n_ch]
            _copy_near_end(job.blocks, job.stop, end - hop, rows)
            _copy_into(job.blocks, job.start, end - hop - n_win, rows, subtract=True)
            r += job.n_ch
        bins = diff @ _phased(plan, (phase - hop) % n_win)[0]
        bins += updates[0].bins if len(updates) == 1 else np.concatenate([job.bins for job in updates], axis=0)
        _store(updates, bins)
    if anchors:
        end = anchors[0].ends[rank]  # every member's window starts at `phase` (mod n_win)
        stacked = np.concatenate([job.window(job.ends[rank]) for job in anchors], axis=0, dtype=np.float64)
        fresh_bins = _anchor_bins(stacked, plan, end - n_win)
        _store(anchors, fresh_bins)
    total = None
    if relative:
        stacked = np.concatenate([job.window(job.ends[rank]) for job in members], axis=0, dtype=np.float64)
        total = _window_power(stacked, plan)
    if anchors:  # else `bins` already holds every member's rows, in order
        bins = fresh_bins if not updates else np.concatenate([job.bins for job in members], axis=0)
    values = _band_values(bins, _phased(plan, phase)[1], plan, total).astype(np.float32)
    values.flags.writeable = False  # row slices handed out as output data: read-only views
    r = 0
    for job in members:
        job.values.append(values[r : r + job.n_ch])
        r += job.n_ch


def _store(members: list[_Job], bins: np.ndarray) -> None:
    """Hand each member its rows of ``bins``; flag non-finite bins (a NaN/inf sample) for re-anchoring."""
    bins.flags.writeable = False  # members keep read-only views: state arrays are never written again
    if len(members) == 1:
        members[0].bins, members[0].stale = bins, not math.isfinite(bins.sum())
        return
    offsets = np.cumsum([0] + [job.n_ch for job in members[:-1]])
    # a NaN or inf anywhere in a stream's bins makes its sum non-finite
    finite = np.isfinite(np.add.reduceat(bins.sum(axis=1), offsets)).tolist()
    for job, r, ok in zip(members, offsets.tolist(), finite):
        job.bins = bins[r : r + job.n_ch]
        job.stale = not ok


def _emit(
    state: SpectralState, chunk: Chunk, plan: _Plan, ends: range, values: list, length_s: float, step_s: float
) -> list[Chunk]:
    # same arithmetic as sliding_window (window t0 on the chunk's clock) then log_band_power (t_end_s)
    meta = MappingProxyType({**chunk.meta, "window_s": length_s, "hop_s": step_s})
    sfreq = chunk.sfreq
    n_win, hop, info, recv_s = plan.n_win, plan.hop, state.out_info, chunk.recv_s
    out = []
    for end, value in zip(ends, values):
        start = end - n_win
        t0_s = chunk.t0_s + (start - state.n_seen) / sfreq
        # value: a read-only float32 (n_channels, n_bands) row block, C-contiguous: reshaping is a view
        out.append(Chunk.trusted(value.reshape(-1, 1), t0_s + n_win / sfreq, info, start // hop, recv_s, meta))
    return out


def _step(state: SpectralState, chunk: Chunk, **kw) -> tuple[SpectralState, list[Chunk]]:
    if chunk.n_samples == 0:  # nothing to do; skips the batch bookkeeping
        check_same_stream(_WHERE, chunk, sfreq=state.sfreq, n_channels=state.n_channels)
        return state, []
    new_states, outputs = _step_batch([state], [chunk], **kw)
    return new_states[0], outputs[0]


def sliding_band_power(
    bands: Mapping[str, tuple[float, float]],
    *,
    length_s: float,
    step_s: float,
    relative: bool = False,
    reanchor_every: int | None = None,
) -> OpSpec:
    """Log band power of sliding windows, updated incrementally from raw chunks.

    Emits exactly what ``sliding_window(length_s, step_s)`` followed by
    ``log_band_power(bands, relative=relative)`` emits (same stream description,
    times, ``seq`` and, within float32 resolution, values) at a fraction of the
    cost: each hop updates only the DFT bins the bands need (a sliding DFT over
    the hop's samples, one matrix product) instead of a full FFT of the window.

    Parameters
    ----------
    bands : mapping of str to (float, float)
        Band name -> ``(lo, hi)`` edges in Hz; a bin at frequency ``f`` belongs to
        the band when ``lo <= f < hi``. ``hi`` must not exceed Nyquist and each band
        must hold at least one bin of the window (both checked at build time).
    length_s : float
        Window length in seconds; ``n_win = round(length_s * sfreq) >= 2`` samples.
    step_s : float
        Hop between windows in seconds, ``0 < step_s <= length_s``;
        ``hop = round(step_s * sfreq) >= 1`` samples. The cost per hop grows with
        ``hop * n_bins``, so the op pays off for hops well below the window.
    relative : bool
        If True, emit ``log10(band power / total power)`` (unit ``"log10(ratio)"``);
        the total is computed from the window (Parseval), which costs one pass over it.
    reanchor_every : int, optional
        Recompute the bins directly from the buffered window every this many hops
        (default 1024), bounding the rounding drift of the incremental update; the
        re-anchoring hop of each stream is offset by its stream id so that many
        streams spread the extra cost over different ticks.

    Returns
    -------
    OpSpec
        Input: ``(n_channels, n_samples)`` chunks. Output: one chunk of shape
        ``(n_channels * n_bands, 1)`` per window, channels ``"{ch}:{band}"``
        (channel-major), type ``"feature"``, unit ``"log10(<unit>^2/Hz)"``,
        stream sfreq ``1 / step_s``, ``t0_s`` the end time of the window and
        ``seq`` the window index. State: :class:`SpectralState`.

    Raises
    ------
    PipelineDefinitionError
        If ``bands`` is invalid (see :func:`~neuraflow.ops.log_band_power`),
        ``length_s``/``step_s`` are not finite numbers > 0, ``step_s > length_s``,
        ``relative`` is not a bool or ``reanchor_every`` is not an int >= 1.
        Sample-rate-dependent problems (a band above Nyquist or without a bin, a
        window under 2 samples) are ``ValueError`` from ``infer_info``. ``step``
        raises :class:`~neuraflow.errors.StreamMismatchError` for a chunk whose rate
        or channel count differs from the first chunk's.

    Examples
    --------
    >>> import numpy as np
    >>> from neuraflow.ops import run_offline, sliding_band_power
    >>> from neuraflow.testing import chunks_from_array, make_info
    >>> t = np.arange(1000) / 250.0
    >>> x = np.sin(2 * np.pi * 10.0 * t)[None, :]
    >>> spec = sliding_band_power({"alpha": (8.0, 13.0), "beta": (13.0, 30.0)}, length_s=1.0, step_s=0.5)
    >>> out = run_offline(spec, chunks_from_array(x, make_info(1, 250.0), [32] * 31 + [8]))
    >>> len(out), out[0].channels, out[0].sfreq, bool(out[0].data[0, 0] > out[0].data[1, 0])
    (7, ('ch0:alpha', 'ch0:beta'), 2.0, True)
    """
    checked = features._check_bands(_WHERE, bands)
    length_s = check_positive(_WHERE, "length_s", length_s)
    step_s = check_positive(_WHERE, "step_s", step_s)
    if step_s > length_s:
        raise PipelineDefinitionError(
            f"{_WHERE}: step_s={step_s!r} must not exceed length_s={length_s!r} (the incremental update "
            "needs overlapping or adjacent windows); use sliding_window + log_band_power to skip samples."
        )
    if not isinstance(relative, bool):
        raise PipelineDefinitionError(f"{_WHERE}: relative={relative!r} must be True or False.")
    every = DEFAULT_REANCHOR_EVERY if reanchor_every is None else check_int(_WHERE, "reanchor_every", reanchor_every)
    kw = {"bands": checked, "relative": relative, "length_s": length_s, "step_s": step_s}
    return OpSpec(
        kind="sliding_band_power",
        init=partial(_init, **kw, reanchor_every=every),
        step=partial(_step, **kw, reanchor_every=every),
        infer_info=partial(_infer_info, **kw),
        params=MappingProxyType(
            {
                "bands": {n: (lo, hi) for n, lo, hi in checked},
                "length_s": length_s,
                "step_s": step_s,
                "relative": relative,
                "reanchor_every": every,
            }
        ),
        step_batch=partial(_step_batch, **kw, reanchor_every=every),
        # like sliding_window: a newer band-power snapshot supersedes an older one
        sheddable=True,
    )


__all__ = ["SpectralState", "sliding_band_power"]
