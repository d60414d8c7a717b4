"""Artifact handling ops: EOG regression, blink and EMG detection, amplitude/motion guard.

All four are causal, carry their state between chunks, and give the same
samples whatever the chunking (filters start from zero delay lines as in
:mod:`neuraflow.ops.filters`; thresholds act per sample).

:func:`eog_regression`
    ``y = x - B @ eog`` on the non-EOG channels (EOG channels pass unchanged);
    ``B`` (n_targets, n_eog) is the centred least-squares fit of
    :func:`fit_eog_regression` -- the same estimator as
    :class:`mne.preprocessing.EOGRegression` -- either given or fitted on the
    first ``calibration_s`` seconds of the stream (passed through unchanged
    meanwhile).
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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType
from typing import Any, Literal

import numpy as np
from scipy import signal

from neuraflow._validate import check_option, check_positive
from neuraflow.chunk import Chunk, StreamInfo
from neuraflow.errors import PipelineDefinitionError, StreamMismatchError
from neuraflow.ops.base import OpSpec

__all__ = [
    "amplitude_guard",
    "blink_detector",
    "emg_detector",
    "eog_regression",
    "fit_eog_regression",
]

FRONTAL_PROXIES: tuple[str, ...] = ("Fp1", "Fp2")


def _ro(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


def _indices(info: StreamInfo, names: Sequence[str], what: str) -> tuple[int, ...]:
    missing = [n for n in names if n not in info.channels]
    if missing:
        raise ValueError(f"{what} {missing} not in the stream's channels {info.channels}.")
    return tuple(info.channels.index(n) for n in names)


def _names(where: str, name: str, value: Sequence[str] | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    names = (value,) if isinstance(value, str) else tuple(value)
    if not names or not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
        raise PipelineDefinitionError(f"{where}: {name}={value!r} must be distinct non-empty channel names.")
    return names


def _pick(info: StreamInfo, names: tuple[str, ...] | None, proxies: tuple[str, ...], what: str) -> tuple[int, ...]:
    if names is not None:
        return _indices(info, names, what)
    found = tuple(info.channels.index(p) for p in proxies if p in info.channels)
    if not found:
        raise ValueError(f"no {what} given and none of the proxies {proxies} is in the channels {info.channels}.")
    return found


def _sos(kind: str, freqs: Any, sfreq: float, order: int) -> np.ndarray:
    return np.ascontiguousarray(signal.butter(order, freqs, btype=kind, fs=sfreq, output="sos"))


def _line_sos(line_freq: float | None, lo: float, sfreq: float) -> np.ndarray:
    """Notches (Q = f / 4, i.e. about +-2 Hz) at the line harmonics in [lo, Nyquist)."""
    rows = []
    if line_freq:
        for f in np.arange(line_freq, sfreq / 2.0, line_freq):
            if f >= lo - 2.0:
                b, a = signal.iirnotch(f, f / 4.0, fs=sfreq)
                rows.append(np.concatenate([b, a]) / a[0])
    return np.vstack(rows) if rows else np.zeros((0, 6))


def _filt(sos: np.ndarray, x: np.ndarray, zi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if sos.shape[0] == 0:
        return x, zi
    return signal.sosfilt(np.array(sos), x, axis=-1, zi=zi)


def _zi(sos: np.ndarray, n_rows: int) -> np.ndarray:
    return np.zeros((sos.shape[0], n_rows, 2))


def _with(chunk: Chunk, data: np.ndarray, info: StreamInfo | None = None, **meta: Any) -> Chunk:
    merged = {**chunk.meta, **meta} if meta else chunk.meta
    return Chunk(data.astype(np.float32), chunk.t0_s, info or chunk.info, chunk.seq, chunk.recv_s, merged)


def _mark_info(info: StreamInfo, label: str) -> StreamInfo:
    return info.replace(
        channels=(*info.channels, f"artifact:{label}"),
        ch_types=(*info.ch_types, "misc"),
        units=(*info.units, ""),
    )


def _check_n(state_n: int, chunk: Chunk) -> None:
    if chunk.n_channels != state_n:
        raise StreamMismatchError(
            f"stream {chunk.stream_id!r}: chunk has {chunk.n_channels} channels, the op was initialised with {state_n}."
        )


# ------------------------------------------------------------------ EOG regression
def fit_eog_regression(
    data: np.ndarray, eog_idx: Sequence[int], *, sfreq: float | None = None, fit_band: tuple[float, float] | None = None
) -> np.ndarray:
    """Least-squares EOG regression coefficients (MNE's ``EOGRegression.fit``).

    Parameters
    ----------
    data : ndarray, shape (n_channels, n_samples)
        Calibration data (volts), containing eye movements/blinks.
    eog_idx : sequence of int
        Rows of ``data`` that are EOG (or frontal proxy) channels.
    sfreq : float, optional
        Hz; needed with ``fit_band``.
    fit_band : (float, float), optional
        Fit on the data band-passed to this band (Hz; 2nd-order causal
        Butterworth), where ocular activity dominates, e.g. ``(1, 8)``; the
        coefficients then apply to the unfiltered data. ``None``: MNE's fit.

    Returns
    -------
    coef : ndarray, shape (n_channels - n_eog, n_eog)
        ``B = (E_c E_c^T)^{-1} E_c Y_c^T`` transposed, with ``E_c``/``Y_c`` the
        EOG/other rows minus their means; the other rows keep their order.
    """
    x = np.asarray(data, dtype=np.float64)
    eog = list(eog_idx)
    if x.ndim != 2 or not eog or len(set(eog)) != len(eog) or not all(0 <= i < x.shape[0] for i in eog):
        raise ValueError(f"fit_eog_regression: need 2-D data and distinct row indices, got {x.shape}, {eog_idx}.")
    other = [i for i in range(x.shape[0]) if i not in eog]
    if fit_band is not None:
        if sfreq is None:
            raise ValueError("fit_eog_regression: fit_band needs sfreq.")
        x = signal.sosfilt(_sos("bandpass", fit_band, sfreq, 2), x, axis=-1)
    e = x[eog] - x[eog].mean(axis=1, keepdims=True)
    y = x[other] - x[other].mean(axis=1, keepdims=True)
    return np.linalg.solve(e @ e.T, e @ y.T).T


@dataclass(frozen=True, eq=False)
class EogState:
    """Regression state: channel split, coefficients (once known), calibration sums."""

    eog: tuple[int, ...]
    other: tuple[int, ...]
    coef: np.ndarray | None  # (n_other, n_eog)
    n_left: int  # calibration samples still to collect
    shift: np.ndarray  # (n_channels,) first sample, subtracted before summing (precision)
    sums: tuple[float, np.ndarray, np.ndarray]  # n, sum of rows (n_ch,), sum of outer products (n_ch, n_ch)
    band_sos: np.ndarray | None = None  # fit_band filter and its delay line
    band_zi: np.ndarray | None = None


def _eog_info(info: StreamInfo, *, names, proxies) -> StreamInfo:
    eog = _pick(info, names, proxies, "eog_channels")
    if len(eog) == info.n_channels:
        raise ValueError("eog_regression needs at least one channel that is not an EOG channel.")
    return info


def _eog_init(first: Chunk, *, names, proxies, calibration_s, coef, fit_band) -> EogState:
    eog = _pick(first.info, names, proxies, "eog_channels")
    other = tuple(i for i in range(first.n_channels) if i not in eog)
    n = first.n_channels
    if coef is not None and coef.shape != (len(other), len(eog)):
        raise StreamMismatchError(f"eog_regression: coef has shape {coef.shape}, expected {(len(other), len(eog))}.")
    shift = first.data[:, 0].astype(np.float64) if first.n_samples else np.zeros(n)
    band = None if fit_band is None else _ro(_sos("bandpass", fit_band, first.sfreq, 2))
    if band is not None:
        shift = np.zeros(n)  # the band-passed data has no offset
    return EogState(eog, other, coef, 0 if coef is not None else int(round(calibration_s * first.sfreq)),
                    _ro(shift), (0.0, _ro(np.zeros(n)), _ro(np.zeros((n, n)))),
                    band, None if band is None else _ro(_zi(band, n)))


def _eog_fit(state: EogState, sums: tuple[float, np.ndarray, np.ndarray]) -> np.ndarray:
    n, s1, s2 = sums
    cov = s2 - np.outer(s1, s1) / n
    e, o = list(state.eog), list(state.other)
    return _ro(np.linalg.lstsq(cov[np.ix_(e, e)], cov[np.ix_(e, o)], rcond=None)[0].T)


def _eog_step(state: EogState, chunk: Chunk) -> tuple[EogState, list[Chunk]]:
    _check_n(len(state.shift), chunk)
    if chunk.n_samples == 0:
        return state, [chunk]
    x = chunk.data.astype(np.float64)
    y = x.copy()
    k = 0
    if state.coef is None:
        k = min(state.n_left, x.shape[1])
        c = x[:, :k] - state.shift[:, None]
        zi = state.band_zi
        if state.band_sos is not None:
            c, zi = _filt(state.band_sos, c, zi)
            zi = _ro(zi)
        n, s1, s2 = state.sums
        sums = (n + k, _ro(s1 + c.sum(axis=1)), _ro(s2 + c @ c.T))
        done = k == state.n_left
        state = EogState(state.eog, state.other, _eog_fit(state, sums) if done else None,
                         state.n_left - k, state.shift, sums, state.band_sos, zi)
    if state.coef is not None and k < x.shape[1]:
        y[list(state.other), k:] -= state.coef @ x[list(state.eog), k:]
    return state, [_with(chunk, y)]


def eog_regression(
    eog_channels: Sequence[str] | None = None,
    *,
    proxies: Sequence[str] = FRONTAL_PROXIES,
    calibration_s: float = 30.0,
    coef: np.ndarray | None = None,
    fit_band: tuple[float, float] | None = None,
) -> OpSpec:
    """Remove ocular activity by linear regression on EOG (or frontal proxy) channels.

    Parameters
    ----------
    eog_channels : sequence of str or None
        EOG channels; ``None`` uses those of ``proxies`` present in the stream.
    proxies : sequence of str
        Frontal channels standing in for EOG when ``eog_channels`` is None.
    calibration_s : float
        Seconds (> 0) at the start of the stream on which ``coef`` is fitted
        (output = input until then). Ignored when ``coef`` is given.
    coef : ndarray, shape (n_other, n_eog), optional
        Coefficients from :func:`fit_eog_regression`, applied from the first sample.
    fit_band : (float, float), optional
        Fit the online coefficients on the data band-passed to this band (Hz),
        as :func:`fit_eog_regression` does; below Nyquist.

    Returns
    -------
    OpSpec
        Same channels, rate and units; non-EOG rows become ``x - coef @ eog``.

    Examples
    --------
    >>> from neuraflow.ops import eog_regression
    >>> eog_regression(["EOG"], calibration_s=20.0).params["calibration_s"]
    20.0
    """
    where = "ops.eog_regression"
    names = _names(where, "eog_channels", eog_channels)
    prox = _names(where, "proxies", proxies) or ()
    cal = check_positive(where, "calibration_s", calibration_s)
    if coef is not None:
        coef = np.array(coef, dtype=np.float64)
        if coef.ndim != 2 or not np.isfinite(coef).all():
            raise PipelineDefinitionError(f"{where}: coef must be a finite 2-D array (n_other, n_eog).")
        _ro(coef)
    if fit_band is not None:
        lo, hi = (check_positive(where, "fit_band", f) for f in fit_band)
        if lo >= hi:
            raise PipelineDefinitionError(f"{where}: fit_band={fit_band!r} must be (low, high) in Hz.")
        fit_band = (lo, hi)
    kw = {"names": names, "proxies": prox}
    return OpSpec(
        kind="eog_regression",
        init=partial(_eog_init, calibration_s=cal, coef=coef, fit_band=fit_band, **kw),
        step=_eog_step,
        infer_info=partial(_eog_info, **kw),
        params=MappingProxyType({"eog_channels": names, "proxies": prox, "calibration_s": cal,
                                 "coef": None if coef is None else coef.tolist(), "fit_band": fit_band}),
    )


# ------------------------------------------------------------------ blink detector
@dataclass(frozen=True, eq=False)
class BlinkState:
    """Band-pass delay line, threshold (V), calibration samples, detection history."""

    idx: tuple[int, ...]
    zi: np.ndarray  # (n_sections, 1, 2)
    sos: np.ndarray
    threshold_v: float | None  # None while calibrating
    calib: np.ndarray  # filtered samples collected for the z threshold
    n_cal: int
    prev: float  # last filtered sample
    since: int  # samples since the last detection (large at start)
    info: StreamInfo


def _blink_info(info: StreamInfo, *, names, proxies) -> StreamInfo:
    _pick(info, names, proxies, "channels")
    return info.replace(channels=("blink",), ch_types=("misc",), units=("",))


def _blink_init(first: Chunk, *, names, proxies, threshold_v, calibration_s, **_) -> BlinkState:
    idx = _pick(first.info, names, proxies, "channels")
    sos = _ro(_sos("bandpass", (1.0, 10.0), first.sfreq, 2))
    n_cal = 0 if threshold_v is not None else int(round(calibration_s * first.sfreq))
    thr = None if threshold_v is None else float(threshold_v)
    return BlinkState(idx, _ro(_zi(sos, 1)), sos, thr, _ro(np.zeros(0)), n_cal, 0.0, 1 << 40,
                      _blink_info(first.info, names=names, proxies=proxies))


def _blink_step(state: BlinkState, chunk: Chunk, *, z, min_interval_s) -> tuple[BlinkState, list[Chunk]]:
    if chunk.n_samples == 0:
        return state, [Chunk(np.zeros((1, 0), np.float32), chunk.t0_s, state.info, chunk.seq, chunk.recv_s,
                             {**chunk.meta, "blinks_s": ()})]
    mean = chunk.data[list(state.idx)].astype(np.float64).mean(axis=0, keepdims=True)
    s, zi = signal.sosfilt(np.array(state.sos), mean, zi=state.zi)
    s = s[0]
    thr, calib = state.threshold_v, state.calib
    k0 = 0
    if thr is None:
        k0 = min(state.n_cal - calib.size, s.size)
        calib = np.concatenate([calib, s[:k0]])
        if calib.size == state.n_cal:
            med = float(np.median(calib))
            thr = med + z * 1.4826 * float(np.median(np.abs(calib - med)))
            calib = np.zeros(0)
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
    new = BlinkState(state.idx, _ro(zi), state.sos, thr, _ro(calib), state.n_cal, float(s[-1]), since, state.info)
    out = Chunk(flags[None].astype(np.float32), chunk.t0_s, state.info, chunk.seq, chunk.recv_s,
                {**chunk.meta, "blinks_s": times})
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
    names = _names(where, "channels", channels)
    prox = _names(where, "proxies", proxies) or ()
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
    """Delay lines of the broad (>= 1 Hz, notched), high-band and low-pass filters and of the power averages."""

    broad_sos: np.ndarray
    high_sos: np.ndarray
    low_sos: np.ndarray
    zi_broad: np.ndarray
    zi_high: np.ndarray
    zi_low: np.ndarray
    zi_pow: np.ndarray  # (2, n_channels, 1): exponential averages of broad^2 and high^2
    alpha: float
    info: StreamInfo


def _emg_designs(sfreq: float, band, line_freq) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lo, hi = band
    if lo >= sfreq / 2.0 or (hi is not None and hi >= sfreq / 2.0):
        raise ValueError(f"band={band!r} must lie below Nyquist ({sfreq / 2.0} Hz).")
    broad = np.vstack([_sos("highpass", 1.0, sfreq, 4), _line_sos(line_freq, 1.0, sfreq)])
    high = _sos("highpass", lo, sfreq, 4) if hi is None else _sos("bandpass", (lo, hi), sfreq, 4)
    return _ro(broad), _ro(high), _ro(_sos("lowpass", lo, sfreq, 4))


def _emg_info(info: StreamInfo, *, band, line_freq, action) -> StreamInfo:
    _emg_designs(info.sfreq, band, line_freq)
    return _mark_info(info, "emg") if action == "mark" else info


def _emg_init(first: Chunk, *, band, line_freq, action, window_s) -> EmgState:
    broad, high, low = _emg_designs(first.sfreq, band, line_freq)
    n = first.n_channels
    alpha = 1.0 - float(np.exp(-1.0 / (window_s * first.sfreq)))
    return EmgState(broad, high, low, _ro(_zi(broad, n)), _ro(_zi(high, n)), _ro(_zi(low, n)),
                    _ro(np.zeros((2, n, 1))), alpha,
                    _emg_info(first.info, band=band, line_freq=line_freq, action=action))


def _emg_step(state: EmgState, chunk: Chunk, *, threshold, action) -> tuple[EmgState, list[Chunk]]:
    _check_n(state.zi_broad.shape[1], chunk)
    if chunk.n_samples == 0:
        return state, [Chunk(np.zeros((state.info.n_channels, 0), np.float32), chunk.t0_s, state.info,
                             chunk.seq, chunk.recv_s, chunk.meta)]
    x = chunk.data.astype(np.float64)
    b, zb = _filt(state.broad_sos, x, state.zi_broad)
    h, zh = signal.sosfilt(np.array(state.high_sos), b, zi=state.zi_high)
    a = state.alpha
    p, zp = signal.lfilter([a], [1.0, a - 1.0], np.stack([b * b, h * h]), axis=-1, zi=state.zi_pow)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(p[0] > 0, p[1] / p[0], 0.0)
    flag = ratio > threshold
    low, zl = signal.sosfilt(np.array(state.low_sos), x, zi=state.zi_low)  # kept running for seamless switching
    new = EmgState(state.broad_sos, state.high_sos, state.low_sos, _ro(zb), _ro(zh), _ro(zl), _ro(zp), a, state.info)
    if action == "mark":
        y = np.vstack([x, flag.any(axis=0, keepdims=True)])
    else:
        y = np.where(flag, low, x)
    return new, [_with(chunk, y, state.info)]


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
    """Data/accelerometer rows, the last ``window - 1`` data samples, accelerometer low-pass state."""

    data_idx: tuple[int, ...]
    accel_idx: tuple[int, ...]
    tail: np.ndarray  # (n_data, window - 1), nan before the stream starts
    accel_sos: np.ndarray
    accel_zi: np.ndarray | None  # None until the first sample (steady-state start)
    info: StreamInfo


def _guard_rows(info: StreamInfo, accel) -> tuple[tuple[int, ...], tuple[int, ...]]:
    acc = _indices(info, accel, "accel_channels") if accel else ()
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
    sos = _ro(_sos("lowpass", min(0.5, first.sfreq / 4.0), first.sfreq, 1))
    return GuardState(data, acc, _ro(np.full((len(data), w - 1), np.nan)), sos, None,
                      _guard_info(first.info, accel=accel, action=action))


def _guard_step(state: GuardState, chunk: Chunk, *, max_abs, ptp, accel_g, action) -> tuple[GuardState, list[Chunk]]:
    _check_n(len(state.data_idx) + len(state.accel_idx), chunk)
    n = chunk.n_samples
    if n == 0:
        return state, ([] if action == "drop" else [_with(chunk, np.zeros((state.info.n_channels, 0)), state.info)])
    x = chunk.data.astype(np.float64)
    d = x[list(state.data_idx)]
    bad = np.zeros(n, dtype=bool)
    if max_abs is not None:
        bad |= (np.abs(d) > max_abs).any(axis=0)
    full = np.concatenate([state.tail, d], axis=1)
    if ptp is not None:
        win = np.lib.stride_tricks.sliding_window_view(full, state.tail.shape[1] + 1, axis=1)
        bad |= (np.nanmax(win, axis=2) - np.nanmin(win, axis=2) > ptp).any(axis=0)
    zi = state.accel_zi
    if accel_g is not None:
        a = x[list(state.accel_idx)]
        if zi is None:
            zi = signal.sosfilt_zi(np.array(state.accel_sos))[:, None, :] * a[None, :, :1]
        low, zi = signal.sosfilt(np.array(state.accel_sos), a, zi=zi)
        bad |= np.linalg.norm(a - low, axis=0) > accel_g
        zi = _ro(zi)
    tail = _ro(full[:, full.shape[1] - state.tail.shape[1]:].copy())
    new = GuardState(state.data_idx, state.accel_idx, tail, state.accel_sos, zi, state.info)
    if action == "mark":
        return new, [_with(chunk, np.vstack([x, bad[None]]), state.info)]
    if action == "zero":
        x[np.ix_(list(state.data_idx), np.flatnonzero(bad))] = 0.0
        return new, [_with(chunk, x)]
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
    accel = _names(where, "accel_channels", accel_channels)
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
