"""Artifact detection ops: blink and EMG detection, amplitude/motion guard.

All three are causal, carry their state between chunks, and give the same
samples whatever the chunking (filters start from zero delay lines as in
:mod:`neuraflow.ops.filters`; thresholds act per sample). EOG regression lives
in :mod:`neuraflow.ops.eog` (re-exported here).

:func:`blink_detector`
    Mean of the frontal channels band-passed 1-10 Hz; a blink is an upward
    crossing of a threshold (absolute, or ``median + z * 1.4826 * MAD`` of the
    first ``calibration_s`` seconds), at least ``min_interval_s`` after the last.
:func:`emg_detector`
    Per channel ``ratio = P(>= band low) / P(>= 1 Hz)``, both without the line
    harmonics (as ``emg_ratio`` of :mod:`neuraflow.devices.quality`), with the
    powers smoothed by an exponential average of time constant ``window_s``.
:func:`amplitude_guard`
    ``|x| > max_abs_v``, peak-to-peak over the last ``window_s`` seconds, and
    accelerometer motion ``||a - lowpass_0.5Hz(a)|| > accel_threshold_g``.

Marking (``action="mark"``) appends one channel ``"artifact:emg"`` /
``"artifact:amplitude"`` (type ``"misc"``, 1.0 on flagged samples, else 0.0).

NaN policy: a filter whose delay line went non-finite restarts that channel
from rest (as :func:`~neuraflow.ops.filters.bandpass` does), counted in the
output chunk's ``meta["filter_resets"]``, so detection resumes after a NaN
burst; non-finite samples are left out of the blink calibration, and
:func:`amplitude_guard` flags them as bad.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType
from typing import Literal

import numpy as np
from scipy import signal

from neuraflow._validate import check_option, check_positive
from neuraflow.chunk import Chunk, StreamInfo
from neuraflow.errors import PipelineDefinitionError
from neuraflow.ops._artifact_utils import (
    FRONTAL_PROXIES,
    butter_sos,
    channel_indices,
    check_names,
    pick_rows,
    sosfilt_rows,
    with_data,
    zero_zi,
)
from neuraflow.ops.base import OpSpec, check_same_stream
from neuraflow.ops.eog import eog_regression, fit_eog_regression
from neuraflow.ops.filters import _readonly, reset_nonfinite

__all__ = [
    "amplitude_guard",
    "blink_detector",
    "emg_detector",
    "eog_regression",
    "fit_eog_regression",
]


def _line_sos(line_freq: float | None, lo: float, sfreq: float) -> np.ndarray:
    """Notches (Q = f / 4, i.e. about +-2 Hz) at the line harmonics in [lo, Nyquist)."""
    rows = []
    if line_freq:
        for f in np.arange(line_freq, sfreq / 2.0, line_freq):
            if f >= lo - 2.0:
                b, a = signal.iirnotch(f, f / 4.0, fs=sfreq)
                rows.append(np.concatenate([b, a]) / a[0])
    return np.vstack(rows) if rows else np.zeros((0, 6))


def _mark_info(info: StreamInfo, label: str) -> StreamInfo:
    return info.replace(
        channels=(*info.channels, f"artifact:{label}"),
        ch_types=(*info.ch_types, "misc"),
        units=(*info.units, ""),
    )


def _resets_meta(n_reset: int) -> dict[str, int]:
    """Output meta counting the channels whose filters restarted (empty when none)."""
    return {"filter_resets": n_reset} if n_reset else {}


# ------------------------------------------------------------------ blink detector
@dataclass(frozen=True, eq=False)
class BlinkState:
    """Blink detection state of one stream (arrays read-only).

    Parameters
    ----------
    idx : tuple of int
        Rows averaged for detection.
    zi : ndarray, shape (n_sections, 1, 2)
        Delay line of the 1-10 Hz band-pass.
    sos : ndarray, shape (n_sections, 6)
        The band-pass.
    threshold_v : float or None
        Detection threshold (V), ``None`` while calibrating.
    calib : ndarray, shape (n_collected,)
        Finite filtered samples collected for the ``z`` threshold.
    n_cal : int
        Finite samples the calibration needs.
    prev : float
        Last filtered sample.
    since : int
        Samples since the last detection (large at start).
    info : StreamInfo
        Output description.
    sfreq : float
        Input rate, Hz, and ...
    n_channels : int
        ... input channel count at ``init``: a chunk that changes either is refused.
    """

    idx: tuple[int, ...]
    zi: np.ndarray
    sos: np.ndarray
    threshold_v: float | None
    calib: np.ndarray
    n_cal: int
    prev: float
    since: int
    info: StreamInfo
    sfreq: float
    n_channels: int


def _blink_info(info: StreamInfo, *, names, proxies) -> StreamInfo:
    pick_rows(info, names, proxies, "channels")
    return info.replace(channels=("blink",), ch_types=("misc",), units=("",))


def _blink_init(first: Chunk, *, names, proxies, threshold_v, calibration_s, **_) -> BlinkState:
    idx = pick_rows(first.info, names, proxies, "channels")
    sos = _readonly(butter_sos("bandpass", (1.0, 10.0), first.sfreq, 2))
    n_cal = 0 if threshold_v is not None else int(round(calibration_s * first.sfreq))
    thr = None if threshold_v is None else float(threshold_v)
    return BlinkState(idx=idx, zi=_readonly(zero_zi(sos, 1)), sos=sos, threshold_v=thr, calib=_readonly(np.zeros(0)),
                      n_cal=n_cal, prev=0.0, since=1 << 40, info=_blink_info(first.info, names=names, proxies=proxies),
                      sfreq=first.sfreq, n_channels=first.n_channels)


def _calibrate(state: BlinkState, s: np.ndarray, z: float) -> tuple[float | None, np.ndarray, int]:
    """Collect finite samples of ``s`` (filtered, V) until ``n_cal``; the threshold once complete.

    Returns ``(threshold_v or None, calib, k0)``: detection may start at index ``k0`` of ``s``.
    """
    need = state.n_cal - state.calib.size
    n_finite = np.cumsum(np.isfinite(s))
    k0 = min(int(np.searchsorted(n_finite, need)) + 1, s.size) if need > 0 else 0
    head = s[:k0]
    calib = np.concatenate([state.calib, head[np.isfinite(head)]])
    if calib.size < state.n_cal:
        return None, calib, k0
    med = float(np.median(calib))
    return med + z * 1.4826 * float(np.median(np.abs(calib - med))), np.zeros(0), k0


def _blink_step(state: BlinkState, chunk: Chunk, *, z, min_interval_s) -> tuple[BlinkState, list[Chunk]]:
    check_same_stream("ops.blink_detector", chunk, sfreq=state.sfreq, n_channels=state.n_channels)
    if chunk.n_samples == 0:
        return state, [Chunk(np.zeros((1, 0), np.float32), chunk.t0_s, state.info, chunk.seq, chunk.recv_s,
                             {**chunk.meta, "blinks_s": ()})]
    mean = chunk.data[list(state.idx)].astype(np.float64).mean(axis=0, keepdims=True)
    s, zi = signal.sosfilt(np.array(state.sos), mean, zi=state.zi)
    (zi,), n_reset = reset_nonfinite(zi)
    s = s[0]
    thr, calib, k0 = state.threshold_v, state.calib, 0
    if thr is None:
        thr, calib, k0 = _calibrate(state, s, z)
    flags = np.zeros(s.size)
    gap = max(1, int(round(min_interval_s * chunk.sfreq)))
    prev = np.concatenate([[state.prev], s[:-1]])
    last = -state.since - 1  # index of the last detection, relative to this chunk
    if thr is not None:
        for i in np.flatnonzero((prev < thr) & (s >= thr)):
            if i >= k0 and i - last >= gap:
                flags[i], last = 1.0, i
    since = s.size - 1 - last
    times = tuple(float(t) for t in chunk.times_s[flags > 0])
    new = BlinkState(idx=state.idx, zi=_readonly(zi), sos=state.sos, threshold_v=thr, calib=_readonly(calib),
                     n_cal=state.n_cal, prev=float(s[-1]), since=since, info=state.info, sfreq=state.sfreq,
                     n_channels=state.n_channels)
    out = Chunk(flags[None].astype(np.float32), chunk.t0_s, state.info, chunk.seq, chunk.recv_s,
                {**chunk.meta, "blinks_s": times, **_resets_meta(n_reset)})
    return new, [out]


def blink_detector(
    channels: Sequence[str] | None = None,
    *,
    threshold_uv: float | None = None,
    z: float | None = None,
    min_interval_s: float = 0.3,
    calibration_s: float = 10.0,
    proxies: Sequence[str] = FRONTAL_PROXIES,
) -> OpSpec:
    """Detect blinks on frontal channels; emit a blink-flag stream.

    Parameters
    ----------
    channels : sequence of str or None
        Channels averaged for detection; ``None``: those of ``proxies`` present.
    threshold_uv : float, optional
        Fixed threshold on the 1-10 Hz band-passed mean, in µV (> 0).
    z : float, optional
        Adaptive threshold ``median + z * 1.4826 * MAD`` of the band-passed mean
        over the first ``calibration_s`` seconds (no detection before). Give
        exactly one of ``threshold_uv`` and ``z``.
    min_interval_s : float
        Refractory time between two blinks, seconds (> 0).
    calibration_s : float
        Calibration length for ``z``, seconds (> 0).
    proxies : sequence of str
        Default frontal channels.

    Returns
    -------
    OpSpec
        One channel ``"blink"`` (type ``"misc"``) at the input rate: 1.0 on the
        sample where a blink crosses the threshold, else 0.0; each output chunk
        carries ``meta["blinks_s"]``, the device times of its detections.

    Examples
    --------
    >>> from neuraflow.ops import blink_detector
    >>> blink_detector(threshold_uv=80.0).params["threshold_uv"]
    80.0
    """
    where = "ops.blink_detector"
    names = check_names(where, "channels", channels)
    prox = check_names(where, "proxies", proxies) or ()
    if (threshold_uv is None) == (z is None):
        raise PipelineDefinitionError(f"{where}: give exactly one of threshold_uv (µV) and z (robust SDs).")
    thr = None if threshold_uv is None else check_positive(where, "threshold_uv", threshold_uv) * 1e-6
    zz = None if z is None else check_positive(where, "z", z)
    gap = check_positive(where, "min_interval_s", min_interval_s)
    cal = check_positive(where, "calibration_s", calibration_s)
    kw = {"names": names, "proxies": prox}
    return OpSpec(
        kind="blink_detector",
        init=partial(_blink_init, threshold_v=thr, calibration_s=cal, **kw),
        step=partial(_blink_step, z=zz, min_interval_s=gap),
        infer_info=partial(_blink_info, **kw),
        params=MappingProxyType({"channels": names, "threshold_uv": None if thr is None else thr * 1e6, "z": zz,
                                 "min_interval_s": gap, "calibration_s": cal, "proxies": prox}),
    )


# ------------------------------------------------------------------ EMG detector
@dataclass(frozen=True, eq=False)
class EmgState:
    """EMG detection state of one stream (arrays read-only).

    Parameters
    ----------
    broad_sos, high_sos, low_sos : ndarray, shape (n_sections, 6)
        The broad (>= 1 Hz, line-notched), EMG-band and low-pass (suppression) filters.
    zi_broad, zi_high, zi_low : ndarray, shape (n_sections, n_channels, 2)
        Their delay lines.
    zi_pow : ndarray, shape (2, n_channels, 1)
        Exponential averages of broad^2 and high^2.
    alpha : float
        Smoothing factor of the averages (per sample).
    info : StreamInfo
        Output description (at the input rate, which a chunk must keep).
    """

    broad_sos: np.ndarray
    high_sos: np.ndarray
    low_sos: np.ndarray
    zi_broad: np.ndarray
    zi_high: np.ndarray
    zi_low: np.ndarray
    zi_pow: np.ndarray
    alpha: float
    info: StreamInfo


def _emg_designs(sfreq: float, band, line_freq) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lo, hi = band
    if lo >= sfreq / 2.0 or (hi is not None and hi >= sfreq / 2.0):
        raise ValueError(f"band={band!r} must lie below Nyquist ({sfreq / 2.0} Hz).")
    broad = np.vstack([butter_sos("highpass", 1.0, sfreq, 4), _line_sos(line_freq, 1.0, sfreq)])
    high = butter_sos("highpass", lo, sfreq, 4) if hi is None else butter_sos("bandpass", (lo, hi), sfreq, 4)
    return _readonly(broad), _readonly(high), _readonly(butter_sos("lowpass", lo, sfreq, 4))


def _emg_info(info: StreamInfo, *, band, line_freq, action) -> StreamInfo:
    _emg_designs(info.sfreq, band, line_freq)
    return _mark_info(info, "emg") if action == "mark" else info


def _emg_init(first: Chunk, *, band, line_freq, action, window_s) -> EmgState:
    broad, high, low = _emg_designs(first.sfreq, band, line_freq)
    n = first.n_channels
    return EmgState(
        broad_sos=broad, high_sos=high, low_sos=low, zi_broad=_readonly(zero_zi(broad, n)),
        zi_high=_readonly(zero_zi(high, n)), zi_low=_readonly(zero_zi(low, n)), zi_pow=_readonly(np.zeros((2, n, 1))),
        alpha=1.0 - float(np.exp(-1.0 / (window_s * first.sfreq))),
        info=_emg_info(first.info, band=band, line_freq=line_freq, action=action),
    )


def _emg_step(state: EmgState, chunk: Chunk, *, threshold, action) -> tuple[EmgState, list[Chunk]]:
    check_same_stream("ops.emg_detector", chunk, sfreq=state.info.sfreq, n_channels=state.zi_broad.shape[1])
    if chunk.n_samples == 0:
        return state, [Chunk(np.zeros((state.info.n_channels, 0), np.float32), chunk.t0_s, state.info,
                             chunk.seq, chunk.recv_s, chunk.meta)]
    x = chunk.data.astype(np.float64)
    b, zb = sosfilt_rows(state.broad_sos, x, state.zi_broad)
    h, zh = signal.sosfilt(np.array(state.high_sos), b, zi=state.zi_high)
    a = state.alpha
    p, zp = signal.lfilter([a], [1.0, a - 1.0], np.stack([b * b, h * h]), axis=-1, zi=state.zi_pow)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(p[0] > 0, p[1] / p[0], 0.0)
    flag = ratio > threshold
    low, zl = signal.sosfilt(np.array(state.low_sos), x, zi=state.zi_low)  # kept running for seamless switching
    (zb, zh, zl, zp), n_reset = reset_nonfinite(zb, zh, zl, zp)
    new = EmgState(
        broad_sos=state.broad_sos, high_sos=state.high_sos, low_sos=state.low_sos, zi_broad=_readonly(zb),
        zi_high=_readonly(zh), zi_low=_readonly(zl), zi_pow=_readonly(zp), alpha=a, info=state.info,
    )
    if action == "mark":
        y = np.vstack([x, flag.any(axis=0, keepdims=True)])
    else:
        y = np.where(flag, low, x)
    return new, [with_data(chunk, y, state.info, **_resets_meta(n_reset))]


def emg_detector(
    *,
    band: tuple[float, float | None] = (30.0, None),
    ratio_threshold: float = 0.6,
    window_s: float = 0.5,
    line_freq: float | None = 50.0,
    action: Literal["mark", "suppress"] = "mark",
) -> OpSpec:
    """Detect muscle (EMG) contamination by its high-frequency power ratio; mark or suppress it.

    Parameters
    ----------
    band : (float, float or None)
        EMG band in Hz; ``None`` as upper edge means up to Nyquist.
    ratio_threshold : float
        A channel is contaminated while ``P(band) / P(>= 1 Hz) > ratio_threshold`` (in (0, 1)).
    window_s : float
        Time constant of the exponential power averages, seconds (> 0).
    line_freq : float or None
        Mains frequency whose harmonics (+-2 Hz) are excluded from both powers.
    action : {"mark", "suppress"}
        ``"mark"`` appends channel ``"artifact:emg"`` (1.0 while any channel is
        contaminated); ``"suppress"`` replaces a contaminated channel, while it
        is, by its 4th-order Butterworth low-pass below the band's low edge.

    Returns
    -------
    OpSpec
        ``(n_channels [+ 1], n_samples)`` at the input rate and units.

    Examples
    --------
    >>> from neuraflow.ops import emg_detector
    >>> emg_detector(action="suppress", line_freq=60.0).params["action"]
    'suppress'
    """
    where = "ops.emg_detector"
    check_option(where, "action", action, ("mark", "suppress"))
    try:
        lo, hi = band
    except (TypeError, ValueError):
        raise PipelineDefinitionError(f"{where}: band={band!r} must be (low_hz, high_hz or None).") from None
    lo = check_positive(where, "band low", lo)
    hi = None if hi is None else check_positive(where, "band high", hi)
    if lo <= 1.0 or (hi is not None and hi <= lo):
        raise PipelineDefinitionError(f"{where}: band={band!r} must have 1 Hz < low < high.")
    thr = check_positive(where, "ratio_threshold", ratio_threshold)
    if thr >= 1.0:
        raise PipelineDefinitionError(f"{where}: ratio_threshold={ratio_threshold!r} must be in (0, 1).")
    win = check_positive(where, "window_s", window_s)
    line = None if line_freq is None else check_positive(where, "line_freq", line_freq)
    kw = {"band": (lo, hi), "line_freq": line, "action": action}
    return OpSpec(
        kind="emg_detector",
        init=partial(_emg_init, window_s=win, **kw),
        step=partial(_emg_step, threshold=thr, action=action),
        infer_info=partial(_emg_info, **kw),
        params=MappingProxyType({**kw, "ratio_threshold": thr, "window_s": win}),
    )


# ------------------------------------------------------------------ amplitude / motion guard
@dataclass(frozen=True, eq=False)
class GuardState:
    """Amplitude/motion guard state of one stream (arrays read-only).

    Parameters
    ----------
    data_idx, accel_idx : tuple of int
        Rows of the data channels and of the accelerometer channels.
    tail : ndarray, shape (n_data, window - 1)
        The last data samples (``nan`` before the stream starts).
    accel_sos : ndarray, shape (n_sections, 6)
        Accelerometer low-pass.
    accel_zi : ndarray, shape (n_sections, n_accel, 2), or None
        Its delay line; ``None`` until the first sample (steady-state start) and
        after a non-finite accelerometer sample (restarts likewise).
    info : StreamInfo
        Output description (at the input rate, which a chunk must keep).
    """

    data_idx: tuple[int, ...]
    accel_idx: tuple[int, ...]
    tail: np.ndarray
    accel_sos: np.ndarray
    accel_zi: np.ndarray | None
    info: StreamInfo


def _guard_rows(info: StreamInfo, accel) -> tuple[tuple[int, ...], tuple[int, ...]]:
    acc = channel_indices(info, accel, "accel_channels") if accel else ()
    data = tuple(i for i in range(info.n_channels) if i not in acc)
    if not data:
        raise ValueError("amplitude_guard needs at least one data channel besides the accelerometer.")
    return data, acc


def _guard_info(info: StreamInfo, *, accel, action) -> StreamInfo:
    _guard_rows(info, accel)
    return _mark_info(info, "amplitude") if action == "mark" else info


def _guard_init(first: Chunk, *, accel, action, window_s) -> GuardState:
    data, acc = _guard_rows(first.info, accel)
    w = max(1, int(round(window_s * first.sfreq)))
    sos = _readonly(butter_sos("lowpass", min(0.5, first.sfreq / 4.0), first.sfreq, 1))
    return GuardState(data, acc, _readonly(np.full((len(data), w - 1), np.nan)), sos, None,
                      _guard_info(first.info, accel=accel, action=action))


def _ptp_flags(full: np.ndarray, n_win: int, ptp: float) -> np.ndarray:
    """Samples whose trailing ``n_win``-sample window of ``full`` (n_rows, n_win - 1 + n) exceeds ``ptp``."""
    win = np.lib.stride_tricks.sliding_window_view(full, n_win, axis=1)
    with warnings.catch_warnings():  # an all-nan window (a NaN burst) is flagged as non-finite already
        warnings.simplefilter("ignore", RuntimeWarning)
        return (np.nanmax(win, axis=2) - np.nanmin(win, axis=2) > ptp).any(axis=0)


def _motion_flags(state: GuardState, a: np.ndarray, accel_g: float) -> tuple[np.ndarray, np.ndarray | None]:
    """Samples where ``||a - lowpass(a)|| > accel_g`` (``a``: accelerometer rows, g), and the new delay line."""
    zi = state.accel_zi
    if zi is None:
        zi = signal.sosfilt_zi(np.array(state.accel_sos))[:, None, :] * a[None, :, :1]
    low, zi = signal.sosfilt(np.array(state.accel_sos), a, zi=zi)
    flags = np.linalg.norm(a - low, axis=0) > accel_g
    return flags, _readonly(zi) if np.isfinite(zi).all() else None


def _guard_step(state: GuardState, chunk: Chunk, *, max_abs, ptp, accel_g, action) -> tuple[GuardState, list[Chunk]]:
    check_same_stream("ops.amplitude_guard", chunk, sfreq=state.info.sfreq,
                      n_channels=len(state.data_idx) + len(state.accel_idx))
    n = chunk.n_samples
    if n == 0:
        return state, ([] if action == "drop" else [with_data(chunk, np.zeros((state.info.n_channels, 0)), state.info)])
    x = chunk.data.astype(np.float64)
    d = x[list(state.data_idx)]
    bad = ~np.isfinite(d).all(axis=0)
    if max_abs is not None:
        bad |= (np.abs(d) > max_abs).any(axis=0)
    full = np.concatenate([state.tail, d], axis=1)
    if ptp is not None:
        bad |= _ptp_flags(full, state.tail.shape[1] + 1, ptp)
    zi = state.accel_zi
    if accel_g is not None:
        moving, zi = _motion_flags(state, x[list(state.accel_idx)], accel_g)
        bad |= moving
    tail = _readonly(full[:, full.shape[1] - state.tail.shape[1]:].copy())
    new = GuardState(state.data_idx, state.accel_idx, tail, state.accel_sos, zi, state.info)
    if action == "mark":
        return new, [with_data(chunk, np.vstack([x, bad[None]]), state.info)]
    if action == "zero":
        x[np.ix_(list(state.data_idx), np.flatnonzero(bad))] = 0.0
        return new, [with_data(chunk, x)]
    edges = np.flatnonzero(np.diff(np.concatenate([[1], bad.astype(np.int8), [1]])))
    runs = zip(edges[::2], edges[1::2])  # [start, stop) of each clean run
    return new, [Chunk(x[:, s:e].astype(np.float32), chunk.t0_s + s / chunk.sfreq, chunk.info, chunk.seq,
                       chunk.recv_s, chunk.meta) for s, e in runs]


def amplitude_guard(
    max_abs_v: float | None = None,
    peak_to_peak_v: float | None = None,
    *,
    window_s: float = 0.5,
    accel_channels: Sequence[str] | None = None,
    accel_threshold_g: float | None = None,
    action: Literal["mark", "zero", "drop"] = "mark",
) -> OpSpec:
    """Flag samples with excessive amplitude or accelerometer motion; mark, zero or drop them.

    Parameters
    ----------
    max_abs_v : float, optional
        A sample is bad when any data channel has ``|x| > max_abs_v`` (volts).
    peak_to_peak_v : float, optional
        ... or when a data channel's peak-to-peak over the last ``window_s``
        seconds (ending at the sample) exceeds this (volts).
    window_s : float
        Peak-to-peak window, seconds (> 0).
    accel_channels : sequence of str, optional
        Accelerometer channels (in g); they are not data channels.
    accel_threshold_g : float, optional
        ... or when ``||a - lowpass_0.5Hz(a)||`` exceeds this (g); needs ``accel_channels``.
        A sample with a non-finite value on a data channel is always bad.
    action : {"mark", "zero", "drop"}
        ``"mark"`` appends channel ``"artifact:amplitude"``; ``"zero"`` zeroes the
        data channels on bad samples; ``"drop"`` emits the clean runs of each
        chunk as separate chunks (own ``t0_s``), nothing for an all-bad chunk.

    Returns
    -------
    OpSpec

    Examples
    --------
    >>> from neuraflow.ops import amplitude_guard
    >>> amplitude_guard(150e-6, action="zero").params["max_abs_v"]
    0.00015
    """
    where = "ops.amplitude_guard"
    check_option(where, "action", action, ("mark", "zero", "drop"))
    max_abs = None if max_abs_v is None else check_positive(where, "max_abs_v", max_abs_v)
    ptp = None if peak_to_peak_v is None else check_positive(where, "peak_to_peak_v", peak_to_peak_v)
    win = check_positive(where, "window_s", window_s)
    accel = check_names(where, "accel_channels", accel_channels)
    acc_g = None if accel_threshold_g is None else check_positive(where, "accel_threshold_g", accel_threshold_g)
    if (acc_g is None) != (accel is None):
        raise PipelineDefinitionError(f"{where}: accel_channels and accel_threshold_g go together.")
    if max_abs is None and ptp is None and acc_g is None:
        raise PipelineDefinitionError(f"{where}: give max_abs_v, peak_to_peak_v or accel_threshold_g.")
    return OpSpec(
        kind="amplitude_guard",
        init=partial(_guard_init, accel=accel, action=action, window_s=win),
        step=partial(_guard_step, max_abs=max_abs, ptp=ptp, accel_g=acc_g, action=action),
        infer_info=partial(_guard_info, accel=accel, action=action),
        params=MappingProxyType({"max_abs_v": max_abs, "peak_to_peak_v": ptp, "window_s": win,
                                 "accel_channels": accel, "accel_threshold_g": acc_g, "action": action}),
    )
