"""Streaming FIR processing: :func:`fir_filter` (overlap-save) and :func:`detrend` (moving DC/trend removal).

:func:`fir_filter` carries the last ``numtaps - 1`` input samples between
chunks (zeros before the first sample) and filters each chunk by overlap-save
FFT blocks, so a stream's concatenated output equals the offline, causal::

    y = scipy.signal.lfilter(taps, 1.0, x)     # x: whole float64 signal, zero initial state

The taps are linear-phase, so the output lags the input by the group delay
``(numtaps - 1) / 2 / sfreq`` seconds, reported in the output info's
``meta["group_delay_s"]`` (added to any delay already reported upstream).

NaN policy (as the IIR filters'): a non-finite input sample enters the carried
history as 0, so the channel's output is finite again once the burst has
passed; in the chunk that holds it, the channel's output is NaN from its first
non-finite sample to the chunk's end, and the chunk's ``meta["filter_resets"]``
counts the channels concerned.

:func:`detrend` subtracts from each sample a constant or straight line fitted
(least squares) over the samples of a causal window ending at that sample; see
its docstring for the exact definition.

:func:`group_batch` is the stacking helper shared by the ops of this package
that vectorise ``step_batch`` by concatenating streams' channels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from types import MappingProxyType
from typing import Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import fft, signal

from neuraflow._validate import check_int, check_option, check_positive
from neuraflow.chunk import Chunk, StreamInfo
from neuraflow.errors import PipelineDefinitionError
from neuraflow.ops.base import OpSpec, check_same_stream
from neuraflow.ops.filters import _nyquist_error, _readonly
from neuraflow.ops.iir import KINDS, check_freqs

StepMany = Callable[[list, list[Chunk]], tuple[list, list[list[Chunk]]]]

#: Main-lobe width factors (transition band * numtaps / sfreq) of the windows whose
#: ``numtaps`` can be derived from ``transition_hz`` (the rule MNE uses).
WINDOW_FACTORS: dict[str, float] = {"hann": 3.1, "hamming": 3.3, "blackman": 5.0}


def group_batch(
    states: Sequence, chunks: Sequence[Chunk], key: Callable[[object, Chunk], Hashable], step_many: StepMany
) -> tuple[list, list[list[Chunk]]]:
    """Vectorised ``step_batch``: call ``step_many`` once per group of equal ``key(state, chunk)``.

    ``step_many(states, chunks)`` steps streams that share a key (same design,
    same chunk length ...) together, typically on their channels stacked
    vertically; ``outputs[i]`` belongs to ``chunks[i]``.
    """
    if len(states) != len(chunks):
        raise ValueError(f"step_batch: got {len(states)} states for {len(chunks)} chunks.")
    new_states = list(states)
    outputs: list[list[Chunk]] = [[] for _ in chunks]
    groups: dict[Hashable, list[int]] = {}
    for i, (state, chunk) in enumerate(zip(states, chunks)):
        groups.setdefault(key(state, chunk), []).append(i)
    for members in groups.values():
        got_states, got_outputs = step_many([states[i] for i in members], [chunks[i] for i in members])
        for i, state, out in zip(members, got_states, got_outputs):
            new_states[i], outputs[i] = state, out
    return new_states, outputs


def split_rows(y: np.ndarray, chunks: Sequence[Chunk]) -> list[np.ndarray]:
    """Split stacked rows ``y`` back into one block per chunk (by channel count)."""
    bounds = np.cumsum([c.n_channels for c in chunks])[:-1]
    return np.split(y, bounds, axis=0)


# --- FIR filter ----------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class FirState:
    """State of one stream through an FIR filter.

    Parameters
    ----------
    taps : ndarray, shape (numtaps,), float64
        Filter coefficients, read-only (shared by the streams of one design).
    tail : ndarray, shape (n_channels, numtaps - 1), float64
        The last ``numtaps - 1`` input samples (zeros before the stream's start), read-only.
    info : StreamInfo
        Output description (input info with ``meta["group_delay_s"]``).
    """

    taps: np.ndarray
    tail: np.ndarray
    info: StreamInfo


@lru_cache(maxsize=256)
def _design_fir(
    kind: str, freqs: tuple[float, ...], numtaps: int | None, transition_hz: float | None, window, sfreq: float
) -> np.ndarray:
    for freq in freqs:
        if freq >= sfreq / 2.0:
            raise _nyquist_error("freqs", freq, sfreq)
    if numtaps is None:
        numtaps = math.ceil(WINDOW_FACTORS[window] * sfreq / transition_hz)
        numtaps += 1 - numtaps % 2  # odd: type I, integer group delay, valid for every kind
    cutoff = freqs[0] if len(freqs) == 1 else list(freqs)
    taps = signal.firwin(numtaps, cutoff, window=window, pass_zero=kind, fs=sfreq)
    return _readonly(np.ascontiguousarray(taps, dtype=np.float64))


def _fir_info(info: StreamInfo, *, design) -> StreamInfo:
    delay = (design(info.sfreq).size - 1) / 2.0 / info.sfreq
    meta = dict(info.meta)
    meta["group_delay_s"] = float(meta.get("group_delay_s", 0.0)) + delay
    return info.replace(meta=meta)


def _fir_init(first: Chunk, *, design) -> FirState:
    taps = design(first.sfreq)
    tail = _readonly(np.zeros((first.n_channels, taps.size - 1), dtype=np.float64))
    return FirState(taps=taps, tail=tail, info=_fir_info(first.info, design=design))


def overlap_save(taps: np.ndarray, ext: np.ndarray) -> np.ndarray:
    """Valid part of the convolution of each row of ``ext`` with ``taps``, by FFT blocks.

    Parameters
    ----------
    taps : ndarray, shape (m,)
    ext : ndarray, shape (n_rows, m - 1 + n)
        Rows prefixed with the ``m - 1`` samples that precede them.

    Returns
    -------
    ndarray, shape (n_rows, n), float64
        ``y[:, i] = sum_k taps[k] * ext[:, m - 1 + i - k]``.
    """
    m = taps.size
    n = ext.shape[1] - (m - 1)
    nfft = fft.next_fast_len(m - 1 + n, real=True)
    nfft = min(nfft, fft.next_fast_len(max(4 * m, 1024), real=True))
    step = nfft - m + 1
    n_blocks = -(-n // step)
    padded = np.zeros((ext.shape[0], (n_blocks - 1) * step + nfft), dtype=np.float64)
    padded[:, : ext.shape[1]] = ext
    blocks = sliding_window_view(padded, nfft, axis=1)[:, ::step]  # (rows, n_blocks, nfft), a view
    spectrum = fft.rfft(taps, nfft)
    out = fft.irfft(fft.rfft(blocks, axis=-1) * spectrum, nfft, axis=-1)[..., m - 1 :]
    return out.reshape(ext.shape[0], n_blocks * step)[:, :n]


def _zero_nonfinite(x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Copy of ``x`` (n_rows, n) with non-finite samples set to 0, and the column of each row's first one.

    Returns ``(x, None)`` unchanged when every sample is finite; else ``first``,
    shape (n_rows,), holds ``n`` for the rows without a non-finite sample.
    """
    bad = ~np.isfinite(x)
    if not bad.any():
        return x, None
    first = np.where(bad.any(axis=1), bad.argmax(axis=1), x.shape[1])
    return np.where(bad, 0.0, x), first


def _fir_step_many(states: list[FirState], chunks: list[Chunk]) -> tuple[list[FirState], list[list[Chunk]]]:
    for state, chunk in zip(states, chunks):
        check_same_stream("ops.fir_filter", chunk, sfreq=state.info.sfreq, n_channels=state.tail.shape[0])
    if chunks[0].n_samples == 0:
        return states, [[_chunk(c, c.data, s.info)] for s, c in zip(states, chunks)]
    taps = states[0].taps
    x, first_bad = _zero_nonfinite(np.concatenate([c.data for c in chunks], axis=0))
    ext = np.concatenate([np.concatenate([s.tail for s in states], axis=0), x], axis=1)
    y = overlap_save(taps, ext).astype(np.float32)
    tail = _readonly(ext[:, ext.shape[1] - (taps.size - 1) :].copy())
    new_states = [FirState(taps=s.taps, tail=t, info=s.info) for s, t in zip(states, split_rows(tail, chunks))]
    n_resets = [0] * len(chunks)
    if first_bad is not None:
        y[np.arange(y.shape[1]) >= first_bad[:, None]] = np.nan  # the response to the burst, in this chunk
        n_resets = [int((f < c.n_samples).sum()) for c, f in zip(chunks, split_rows(first_bad, chunks))]
    ys = split_rows(y, chunks)
    return new_states, [
        [_chunk(c, yi, s.info, filter_resets=k)] for s, c, yi, k in zip(states, chunks, ys, n_resets)
    ]


def _chunk(chunk: Chunk, data: np.ndarray, info: StreamInfo, *, filter_resets: int = 0) -> Chunk:
    meta = {**chunk.meta, "filter_resets": filter_resets} if filter_resets else chunk.meta
    return Chunk(data, chunk.t0_s, info, chunk.seq, chunk.recv_s, meta)


def _fir_key(state: FirState, chunk: Chunk) -> Hashable:
    return (id(state.taps), chunk.n_samples)


def _fir_step(state: FirState, chunk: Chunk) -> tuple[FirState, list[Chunk]]:
    states, outputs = _fir_step_many([state], [chunk])
    return states[0], outputs[0]


def fir_filter(
    kind: Literal["lowpass", "highpass", "bandpass", "bandstop"],
    freqs: float | Sequence[float],
    *,
    numtaps: int | None = None,
    transition_hz: float | None = None,
    window: str | tuple = "hamming",
) -> OpSpec:
    """Linear-phase windowed-sinc FIR filter (:func:`scipy.signal.firwin`), streamed by overlap-save.

    Parameters
    ----------
    kind : {"lowpass", "highpass", "bandpass", "bandstop"}
        Filter type (``firwin``'s ``pass_zero``).
    freqs : float or sequence of float
        Cut-off in Hz (-6 dB point) for low/high-pass, ``(low, high)`` in Hz for
        band-pass/stop; below Nyquist (checked at build time).
    numtaps : int, optional
        Filter length (>= 1; odd for ``"highpass"``/``"bandstop"``). Give exactly
        one of ``numtaps`` and ``transition_hz``.
    transition_hz : float, optional
        Transition band width in Hz (> 0); ``numtaps`` is then
        ``ceil(factor * sfreq / transition_hz)`` rounded up to odd, with factor
        3.1 (hann), 3.3 (hamming) or 5.0 (blackman).
    window : str or tuple
        Window for ``firwin`` (any :func:`scipy.signal.get_window` spec when
        ``numtaps`` is given; one of ``"hann"``, ``"hamming"``, ``"blackman"``
        with ``transition_hz``).

    Returns
    -------
    OpSpec
        ``(n_channels, n_samples)`` in and out, same rate and units; output
        ``meta["group_delay_s"]`` increased by ``(numtaps - 1) / 2 / sfreq`` s.
        Streaming equals ``scipy.signal.lfilter(taps, 1.0, x)`` on the whole signal.

    Raises
    ------
    PipelineDefinitionError
        For an unknown ``kind`` or ``window``, wrong ``freqs``, both or neither
        of ``numtaps``/``transition_hz``, or an even ``numtaps`` where the
        response must pass Nyquist.

    Examples
    --------
    >>> from neuraflow.ops import fir_filter
    >>> from neuraflow.testing import make_info
    >>> fir_filter("lowpass", 30.0, numtaps=101).infer_info(make_info(1, 250.0)).meta["group_delay_s"]
    0.2
    """
    where = "ops.fir_filter"
    check_option(where, "kind", kind, KINDS)
    values = check_freqs(where, kind, freqs)
    if (numtaps is None) == (transition_hz is None):
        raise PipelineDefinitionError(f"{where}: give exactly one of numtaps and transition_hz.")
    window = tuple(window) if isinstance(window, list) else window
    try:
        signal.get_window(window, 8)
    except (ValueError, TypeError) as err:
        raise PipelineDefinitionError(f"{where}: window={window!r} is not a scipy window ({err}).") from None
    if numtaps is not None:
        numtaps = check_int(where, "numtaps", numtaps, minimum=1)
        if kind in ("highpass", "bandstop") and numtaps % 2 == 0:
            raise PipelineDefinitionError(f"{where}: numtaps={numtaps} must be odd for kind={kind!r}.")
    else:
        transition_hz = check_positive(where, "transition_hz", transition_hz)
        check_option(where, "window", window, tuple(WINDOW_FACTORS))
    design = partial(_design_fir, kind, values, numtaps, transition_hz, window)
    params = {"kind": kind, "freqs": values, "numtaps": numtaps, "transition_hz": transition_hz, "window": window}
    return OpSpec(
        kind="fir_filter",
        init=partial(_fir_init, design=design),
        step=_fir_step,
        infer_info=partial(_fir_info, design=design),
        params=MappingProxyType(params),
        step_batch=partial(group_batch, key=_fir_key, step_many=_fir_step_many),
    )


# --- detrend -------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class DetrendState:
    """State of one stream through :func:`detrend`.

    Parameters
    ----------
    tail : ndarray, shape (n_channels, n_tail), float64
        Windowed mode: the last ``min(n_seen, n_win - 1)`` input samples. Expanding
        mode: shape ``(n_channels, 0)``.
    total : ndarray, shape (n_channels,), float64
        Expanding mode: sum of the finite samples seen; zeros in windowed mode.
    count : ndarray, shape (n_channels,), float64
        Expanding mode: number of finite samples seen; zeros in windowed mode.
    n_seen : int
        Samples seen so far.
    n_win : int
        Window length in samples; 0 for the expanding mean.
    linear : bool
        True to remove a least-squares line, False a constant.
    sfreq : float
        Rate the window was sized for, Hz; a chunk at another rate is refused.
    """

    tail: np.ndarray
    total: np.ndarray
    count: np.ndarray
    n_seen: int
    n_win: int
    linear: bool
    sfreq: float


def _window_samples(info: StreamInfo, *, window_s: float | None, linear: bool) -> int:
    if window_s is None:
        return 0
    n_win = round(window_s * info.sfreq)
    minimum = 2 if linear else 1
    if n_win < minimum:
        raise ValueError(
            f"window_s={window_s!r} is {n_win} sample(s) at sfreq={info.sfreq!r}; "
            f"{'kind=linear' if linear else 'kind=constant'} needs >= {minimum}."
        )
    return n_win


def _detrend_info(info: StreamInfo, *, window_s: float | None, linear: bool) -> StreamInfo:
    _window_samples(info, window_s=window_s, linear=linear)
    return info


def _detrend_init(first: Chunk, *, window_s: float | None, linear: bool) -> DetrendState:
    n_win = _window_samples(first.info, window_s=window_s, linear=linear)
    zeros = _readonly(np.zeros((first.n_channels, 0), dtype=np.float64))
    n = first.n_channels
    return DetrendState(
        tail=zeros, total=_readonly(np.zeros(n)), count=_readonly(np.zeros(n)), n_seen=0, n_win=n_win, linear=linear,
        sfreq=first.sfreq,
    )


def _window_bounds(n_tail: int, n_ext: int, n_win: int) -> tuple[np.ndarray, np.ndarray]:
    """``[start, end)`` in ``ext`` of the window of each sample ``e >= n_tail`` (at most ``n_win`` long)."""
    end = np.arange(n_tail, n_ext) + 1
    return np.maximum(end - n_win, 0), end


def _moving_fit_finite(ext: np.ndarray, n_tail: int, n_win: int, linear: bool) -> np.ndarray:
    """:func:`_moving_fit`, NaN where the window holds a non-finite sample (not after it: cumsums are kept finite)."""
    bad = ~np.isfinite(ext)
    if not bad.any():
        return _moving_fit(ext, n_tail, n_win, linear)
    fit = _moving_fit(np.where(bad, 0.0, ext), n_tail, n_win, linear)
    start, end = _window_bounds(n_tail, ext.shape[1], n_win)
    n_bad = np.concatenate([np.zeros((ext.shape[0], 1)), np.cumsum(bad, axis=1)], axis=1)
    fit[n_bad[:, end] - n_bad[:, start] > 0] = np.nan
    return fit


def _moving_fit(ext: np.ndarray, n_tail: int, n_win: int, linear: bool) -> np.ndarray:
    """Fitted value at each sample ``e >= n_tail`` of ``ext`` over ``ext[:, max(0, e-n_win+1) : e+1]``."""
    n_ext = ext.shape[1]
    start, end = _window_bounds(n_tail, n_ext, n_win)
    count = (end - start).astype(np.float64)
    csum = np.concatenate([np.zeros((ext.shape[0], 1)), np.cumsum(ext, axis=1)], axis=1)
    sx = csum[:, end] - csum[:, start]
    if not linear:
        return sx / count
    jsum = np.concatenate([np.zeros((ext.shape[0], 1)), np.cumsum(ext * np.arange(n_ext), axis=1)], axis=1)
    sux = jsum[:, end] - jsum[:, start] - start * sx  # sum over the window of u * x, u = 0 .. count-1
    su = count * (count - 1) / 2
    suu = (count - 1) * count * (2 * count - 1) / 6
    denom = count * suu - su**2
    slope = np.divide(count * sux - su * sx, denom, out=np.zeros_like(sx), where=denom > 0)
    return (sx - slope * su) / count + slope * (count - 1)


def _expanding_fit(total: np.ndarray, count: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, ...]:
    """Running mean of each row's finite samples, at every sample of ``x`` (n_rows, n).

    ``total``/``count`` (n_rows,) are the sum and number of finite samples before ``x``;
    a non-finite sample is left out (NaN policy: one burst does not poison the
    mean for good). Returns the means (n_rows, n) and the updated ``total``, ``count``.
    """
    finite = np.isfinite(x)
    csum = total[:, None] + np.cumsum(np.where(finite, x, 0.0), axis=1)
    cnt = count[:, None] + np.cumsum(finite, axis=1)
    mean = np.divide(csum, cnt, out=np.full_like(csum, np.nan), where=cnt > 0)
    return mean, csum[:, -1].copy(), cnt[:, -1].astype(np.float64)


def _detrend_step_many(
    states: list[DetrendState], chunks: list[Chunk]
) -> tuple[list[DetrendState], list[list[Chunk]]]:
    for state, chunk in zip(states, chunks):
        check_same_stream("ops.detrend", chunk, sfreq=state.sfreq, n_channels=state.total.shape[0])
    n = chunks[0].n_samples
    if n == 0:
        return states, [[c] for c in chunks]
    x = np.concatenate([c.data for c in chunks], axis=0).astype(np.float64)
    first = states[0]
    tails, totals, counts = [s.tail for s in states], [s.total for s in states], [s.count for s in states]
    if first.n_win == 0:
        mean, total, count = _expanding_fit(np.concatenate(totals), np.concatenate(counts), x)
        y = x - mean
        totals, counts = split_rows(_readonly(total), chunks), split_rows(_readonly(count), chunks)
    else:
        ext = np.concatenate([np.concatenate(tails, axis=0), x], axis=1)
        y = x - _moving_fit_finite(ext, first.tail.shape[1], first.n_win, first.linear)
        keep = min(ext.shape[1], first.n_win - 1)
        tails = split_rows(_readonly(ext[:, ext.shape[1] - keep :].copy()), chunks)
    new_states = [
        DetrendState(tail=t, total=tot, count=cnt, n_seen=s.n_seen + n, n_win=s.n_win, linear=s.linear, sfreq=s.sfreq)
        for s, t, tot, cnt in zip(states, tails, totals, counts)
    ]
    ys = split_rows(y.astype(np.float32), chunks)
    return new_states, [[_chunk(c, yi, c.info)] for c, yi in zip(chunks, ys)]


def _detrend_key(state: DetrendState, chunk: Chunk) -> Hashable:
    return (state.n_win, state.linear, state.tail.shape[1], chunk.n_samples)


def _detrend_step(state: DetrendState, chunk: Chunk) -> tuple[DetrendState, list[Chunk]]:
    states, outputs = _detrend_step_many([state], [chunk])
    return states[0], outputs[0]


def detrend(kind: Literal["constant", "linear"] = "constant", *, window_s: float | None = None) -> OpSpec:
    """Causal DC or trend removal over a moving (or expanding) window.

    Sample ``n`` (counted from the stream's first sample) becomes
    ``x[n] - fit_n(n)``, where ``fit_n`` is the constant (mean) or the
    least-squares line fitted to ``x[max(0, n - W + 1) : n + 1]`` and
    ``W = round(window_s * sfreq)``: a block (boxcar) window ending at the
    sample, shorter at the stream's start. With ``window_s=None`` (constant
    only) the window expands from the first sample: ``x[n] - mean(x[:n + 1])``.
    A one-sample linear window fits a constant (output 0). For exponential DC
    removal use :func:`~neuraflow.ops.dc_block`.

    NaN policy: a moving window's output is NaN while the window holds a
    non-finite sample, finite again once it has left; the expanding mean
    leaves non-finite samples out.

    Parameters
    ----------
    kind : {"constant", "linear"}
        Remove the mean or a straight line.
    window_s : float, optional
        Window length in seconds (> 0; at least 1 sample, 2 for ``"linear"``,
        checked at build time); required for ``"linear"``.

    Returns
    -------
    OpSpec
        ``(n_channels, n_samples)`` in and out, same rate and units.

    Raises
    ------
    PipelineDefinitionError
        For an unknown ``kind``, a non-positive ``window_s``, or ``"linear"`` without ``window_s``.

    Examples
    --------
    >>> from neuraflow.ops import detrend
    >>> detrend("linear", window_s=2.0).params["kind"]
    'linear'
    """
    where = "ops.detrend"
    check_option(where, "kind", kind, ("constant", "linear"))
    if window_s is not None:
        window_s = check_positive(where, "window_s", window_s)
    elif kind == "linear":
        raise PipelineDefinitionError(f"{where}: kind='linear' requires window_s (seconds).")
    linear = kind == "linear"
    return OpSpec(
        kind="detrend",
        init=partial(_detrend_init, window_s=window_s, linear=linear),
        step=_detrend_step,
        infer_info=partial(_detrend_info, window_s=window_s, linear=linear),
        params=MappingProxyType({"kind": kind, "window_s": window_s}),
        step_batch=partial(group_batch, key=_detrend_key, step_many=_detrend_step_many),
    )


__all__ = ["DetrendState", "FirState", "detrend", "fir_filter", "group_batch", "overlap_save"]
