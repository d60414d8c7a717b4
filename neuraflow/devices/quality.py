"""Per-channel signal quality: the pure op :func:`signal_quality` and :func:`quality_record`.

For each channel and each window of ``window_s`` seconds (non-overlapping),
five measures are computed from the raw samples ``x`` (volts):

``railed``
    Fraction of samples at the amplifier's rail (``|x| >= 0.99 * rail_v``) or
    clipped (in a run of 3 or more samples equal to the window's max or min).
``flat``
    1.0 when the standard deviation after removing mean and linear trend is
    below ``flat_v`` (0.5 uV): a dead, shorted or powered-down channel.
``line_ratio``
    Power within +-1 Hz of ``line_freq`` and its harmonics below Nyquist, over
    the power from 1 Hz to Nyquist (Hann-windowed periodogram of the detrended window).
``emg_ratio``
    Power from 30 Hz to Nyquist over the power from 1 Hz to Nyquist, both
    without the +-2 Hz bands around the line harmonics (muscle activity: jaw
    clenches, frowns, swallowing).
``range_v``
    Peak-to-peak amplitude of the window band-limited to 1-40 Hz (line bands
    removed), volts: blinks and movement artefacts.

Each measure maps to a sub-score with a linear ramp ``ramp(v, good, bad)``
(1 at or below ``good``, 0 at or above ``bad``)::

    s_railed = ramp(railed, 0.0, 0.1)         s_flat  = 0 if flat else 1
    s_line   = 1 - 0.5 * (1 - ramp(line_ratio, 0.5, 0.95))   (a notch filter removes it:
               line noise alone at most halves the score)
    s_emg    = ramp(emg_ratio, 0.5, 0.9)
    s_range  = ramp(range_v, 200 uV, 1000 uV)

    score  = s_railed * s_flat * s_line * s_emg * s_range        (0 = unusable, 1 = clean)
    reason = the measure with the lowest sub-score, "ok" when score == 1

The thresholds are :class:`QualityThresholds` fields. Reason codes (the
``reason`` output channel) index :data:`REASONS`. No Ray here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from types import MappingProxyType
from typing import Any

import numpy as np

from neuraflow._validate import check_positive
from neuraflow.chunk import Chunk, StreamInfo
from neuraflow.errors import PipelineDefinitionError, StreamMismatchError
from neuraflow.ops.base import OpSpec

__all__ = [
    "METRICS",
    "REASONS",
    "QualityState",
    "QualityThresholds",
    "channel_quality",
    "quality_record",
    "rail_from_info",
    "signal_quality",
]

_WHERE = "devices.signal_quality"
REASONS = ("ok", "railed", "flat", "line_noise", "emg", "amplitude")
"""Reason codes: ``REASONS[int(code)]``."""
METRICS = ("score", "reason", "railed", "flat", "line_ratio", "emg_ratio", "range_v")
"""Output channels per input channel, named ``f"{channel}/{metric}"``."""
_UNITS = {"score": "", "reason": "code", "railed": "", "flat": "", "line_ratio": "", "emg_ratio": "", "range_v": "V"}


@dataclass(frozen=True)
class QualityThresholds:
    """Good/bad bounds of the sub-score ramps (see the module docstring)."""

    railed_bad: float = 0.1
    flat_v: float = 0.5e-6
    line_good: float = 0.5
    line_bad: float = 0.95
    line_weight: float = 0.5
    emg_good: float = 0.5
    emg_bad: float = 0.9
    emg_low_hz: float = 30.0
    range_good_v: float = 200e-6
    range_bad_v: float = 1000e-6
    eeg_band_hz: tuple[float, float] = (1.0, 40.0)


def _ramp(v: np.ndarray, good: float, bad: float) -> np.ndarray:
    out = 1.0 - (np.asarray(v, dtype=np.float64) - good) / (bad - good)
    return np.where(np.isnan(out), 1.0, np.clip(out, 0.0, 1.0))


def rail_from_info(info: StreamInfo) -> np.ndarray | None:
    """Rail voltage per channel from device metadata (``vref_v / gain``, OpenBCI), else ``None``."""
    vref = info.meta.get("vref_v")
    gain = info.meta.get("gain")
    if vref is None or gain is None:
        return None
    gains = np.atleast_1d(np.asarray(gain, dtype=np.float64))
    rail = np.full(info.n_channels, np.nan)
    n = min(len(gains), info.n_channels)
    rail[:n] = float(vref) / gains[:n]
    return rail


def _line_mask(freqs: np.ndarray, line_freq: float | None, half_width: float) -> np.ndarray:
    mask = np.zeros(freqs.shape, dtype=bool)
    if line_freq:
        for h in np.arange(line_freq, freqs[-1] + half_width, line_freq):
            mask |= np.abs(freqs - h) <= half_width
    return mask


def channel_quality(
    x: np.ndarray,
    sfreq: float,
    *,
    line_freq: float | None = 50.0,
    rail_v: float | Sequence[float] | np.ndarray | None = None,
    thresholds: QualityThresholds | None = None,
) -> dict[str, np.ndarray]:
    """Quality measures and score of each row of ``x`` (one window).

    Parameters
    ----------
    x : ndarray, shape (n_channels, n_samples)
        Raw samples in volts (n_samples >= 8).
    sfreq : float
    line_freq : float or None
        Mains frequency (50 or 60 Hz); ``None`` to skip the line-noise measure.
    rail_v : float, sequence or None
        Amplifier rail per channel (or one for all) in volts; ``None`` or NaN: only clipping is detected.
    thresholds : QualityThresholds or None

    Returns
    -------
    dict of ndarray, each shape (n_channels,)
        Keys :data:`METRICS` (``reason`` as float codes into :data:`REASONS`).
    """
    th = thresholds or QualityThresholds()
    x = np.asarray(x, dtype=np.float64)
    n_ch, n = x.shape
    # railed / clipped on the raw samples
    rail = np.full(n_ch, np.nan) if rail_v is None else np.broadcast_to(np.asarray(rail_v, np.float64), (n_ch,))
    with np.errstate(invalid="ignore"):
        at_rail = np.where(np.isfinite(rail)[:, None], np.abs(x) >= 0.99 * rail[:, None], False).mean(axis=1)
    clip_frac = np.zeros(n_ch)
    if n >= 3:
        for extreme in (x.max(axis=1, keepdims=True), x.min(axis=1, keepdims=True)):
            eq = x == extreme
            run = eq[:, :-2] & eq[:, 1:-1] & eq[:, 2:]  # 3 equal samples in a row at the extreme
            plateau = np.zeros_like(eq)
            for k in range(3):
                plateau[:, k : n - 2 + k] |= run
            clip_frac += plateau.mean(axis=1)
        clip_frac = np.where(x.min(axis=1) == x.max(axis=1), 0.0, clip_frac)  # constant: flat, not clipped
    railed = np.maximum(at_rail, clip_frac)
    # detrend (mean + linear)
    t = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
    d = x - x.mean(axis=1, keepdims=True)
    d -= ((d @ t) / float(t @ t))[:, None] * t[None]
    flat = (d.std(axis=1) < th.flat_v).astype(np.float64)
    # spectra: Hann periodogram for the ratios, plain FFT for the band-limited range
    freqs = np.fft.rfftfreq(n, 1.0 / sfreq)
    win = np.hanning(n + 2)[1:-1]
    psd = np.abs(np.fft.rfft(d * win, axis=1)) ** 2
    above_1 = freqs >= 1.0
    line_narrow = _line_mask(freqs, line_freq, 1.0)
    line_wide = _line_mask(freqs, line_freq, 2.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        total = psd[:, above_1].sum(axis=1)
        line_ratio = psd[:, above_1 & line_narrow].sum(axis=1) / total if line_freq else np.zeros(n_ch)
        clean = above_1 & ~line_wide
        emg_ratio = psd[:, clean & (freqs >= th.emg_low_hz)].sum(axis=1) / psd[:, clean].sum(axis=1)
    lo, hi = th.eeg_band_hz
    spec = np.fft.rfft(d, axis=1)
    spec[:, (freqs < lo) | (freqs > hi) | line_wide] = 0.0
    range_v = np.ptp(np.fft.irfft(spec, n=n, axis=1), axis=1)
    line_ratio = np.where(flat > 0, np.nan, line_ratio)
    emg_ratio = np.where(flat > 0, np.nan, emg_ratio)
    subs = np.stack([
        _ramp(railed, 0.0, th.railed_bad),
        1.0 - flat,
        1.0 - th.line_weight * (1.0 - _ramp(line_ratio, th.line_good, th.line_bad)),
        _ramp(emg_ratio, th.emg_good, th.emg_bad),
        _ramp(range_v, th.range_good_v, th.range_bad_v),
    ])  # (5, n_ch) in REASONS[1:] order
    score = subs.prod(axis=0)
    reason = np.where(score >= 1.0, 0, subs.argmin(axis=0) + 1).astype(np.float64)
    return {
        "score": score,
        "reason": reason,
        "railed": railed,
        "flat": flat,
        "line_ratio": line_ratio,
        "emg_ratio": emg_ratio,
        "range_v": range_v,
    }


def quality_record(
    data: np.ndarray,
    info: StreamInfo,
    *,
    line_freq: float | None = 50.0,
    rail_v: float | Sequence[float] | None = None,
    thresholds: QualityThresholds | None = None,
) -> dict[str, Any]:
    """Quality of the latest window of a device, for a health record (JSON-ready).

    Parameters
    ----------
    data : ndarray, shape (n_channels, n_samples)
        The latest samples (volts); only channels of type ``"eeg"``/``"emg"``/``"ecg"``/``"eog"``
        (all channels when the stream declares none of these) are scored.

    Returns
    -------
    dict
        ``{"score": min over channels, "channels": {name: {"score", "reason", measures...}}}``;
        ``{"score": None, "channels": {}}`` with fewer than 8 samples.
    """
    bio = [i for i, t in enumerate(info.ch_types) if t in ("eeg", "emg", "ecg", "eog")] or list(range(info.n_channels))
    if data.shape[1] < 8:
        return {"score": None, "channels": {}}
    rail = rail_from_info(info) if rail_v is None else np.broadcast_to(np.asarray(rail_v, float), (info.n_channels,))
    q = channel_quality(data[bio], info.sfreq, line_freq=line_freq,
                        rail_v=None if rail is None else rail[bio], thresholds=thresholds)
    channels: dict[str, Any] = {}
    for k, i in enumerate(bio):
        rec = {m: _json_float(q[m][k]) for m in METRICS if m != "reason"}
        rec["reason"] = REASONS[int(q["reason"][k])]
        channels[info.channels[i]] = rec
    return {"score": _json_float(float(np.min(q["score"]))), "channels": channels}


def _json_float(v: float) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


# ------------------------------------------------------------------ the op
@dataclass(frozen=True, eq=False)
class QualityState:
    """Samples of the window being filled, and what the op derived from the first chunk.

    Parameters
    ----------
    pending : ndarray, shape (n_channels, held), float32
        Samples not yet scored (fewer than ``n_win``).
    n_seen : int
        Input samples seen so far (window ``k`` covers ``[k * n_win, (k + 1) * n_win)``).
    n_win : int
    rail_v : ndarray or None, shape (n_channels,)
    out_info : StreamInfo
    """

    pending: np.ndarray
    n_seen: int
    n_win: int
    rail_v: np.ndarray | None
    out_info: StreamInfo


def _n_win(window_s: float, sfreq: float) -> int:
    n_win = round(window_s * sfreq)
    if n_win < 8:
        raise ValueError(f"window_s={window_s!r} gives {n_win} samples at sfreq={sfreq!r} Hz; needs >= 8.")
    return n_win


def _infer_info(info: StreamInfo, *, window_s: float, line_freq: float | None, rail_v: Any,
                thresholds: QualityThresholds) -> StreamInfo:
    _n_win(window_s, info.sfreq)
    if line_freq is not None and line_freq >= info.sfreq / 2:
        raise ValueError(f"line_freq={line_freq!r} Hz is not below Nyquist ({info.sfreq / 2} Hz).")
    channels = tuple(f"{ch}/{m}" for ch in info.channels for m in METRICS)
    return StreamInfo(
        stream_id=f"{info.stream_id}/quality",
        sfreq=1.0 / window_s,
        channels=channels,
        ch_types=("feature",) * len(channels),
        units=tuple(_UNITS[m] for _ in info.channels for m in METRICS),
        meta={"source": info.stream_id, "window_s": window_s, "line_freq": line_freq,
              "reasons": REASONS, "metrics": METRICS, "thresholds": asdict(thresholds)},
    )


def _init(first: Chunk, **kw: Any) -> QualityState:
    out_info = _infer_info(first.info, **kw)
    rail = kw["rail_v"]
    rail_arr = rail_from_info(first.info) if rail is None else np.broadcast_to(
        np.asarray(rail, np.float64), (first.n_channels,)).copy()
    return QualityState(np.zeros((first.n_channels, 0), np.float32), 0, _n_win(kw["window_s"], first.sfreq),
                        rail_arr, out_info)


def _step(state: QualityState, chunk: Chunk, **kw: Any) -> tuple[QualityState, list[Chunk]]:
    if chunk.n_channels != state.pending.shape[0]:
        raise StreamMismatchError(
            f"stream {chunk.stream_id!r}: chunk has {chunk.n_channels} channels, "
            f"signal_quality was initialised with {state.pending.shape[0]}."
        )
    if chunk.n_samples == 0:
        return state, []
    buf = np.concatenate([state.pending, chunk.data], axis=1) if state.pending.shape[1] else chunk.data
    held_before = state.pending.shape[1]
    n_full = buf.shape[1] // state.n_win
    outputs = []
    names = chunk.channels
    for k in range(n_full):
        win = buf[:, k * state.n_win : (k + 1) * state.n_win]
        q = channel_quality(win, chunk.sfreq, line_freq=kw["line_freq"], rail_v=state.rail_v,
                            thresholds=kw["thresholds"])
        data = np.stack([q[m] for m in METRICS], axis=1).reshape(-1, 1)  # channel-major, metric-minor
        start = k * state.n_win - held_before  # relative to chunk's first sample
        outputs.append(Chunk(
            data.astype(np.float32),
            chunk.t0_s + start / chunk.sfreq,
            state.out_info,
            seq=(state.n_seen - held_before) // state.n_win + k,
            recv_s=chunk.recv_s,
            meta={"reasons": {names[i]: REASONS[int(q["reason"][i])] for i in range(len(names))}},
        ))
    rest = np.ascontiguousarray(buf[:, n_full * state.n_win :], dtype=np.float32)
    return QualityState(rest, state.n_seen + chunk.n_samples, state.n_win, state.rail_v, state.out_info), outputs


def signal_quality(
    window_s: float = 1.0,
    *,
    line_freq: float | None = 50.0,
    rail_v: float | Sequence[float] | None = None,
    thresholds: QualityThresholds | Mapping[str, float] | None = None,
) -> OpSpec:
    """Score every channel of a stream once per ``window_s`` (non-overlapping windows).

    Parameters
    ----------
    window_s : float
        Window length, seconds (>= 8 samples).
    line_freq : float or None
        Mains frequency, 50 or 60 Hz (``None``: no line-noise measure).
    rail_v : float, sequence of float or None
        Amplifier rail in volts; ``None`` for the device's (``vref_v / gain`` in
        OpenBCI stream metadata) or, without metadata, clipping detection only.
    thresholds : QualityThresholds, mapping or None
        Ramp bounds (see the module docstring).

    Returns
    -------
    OpSpec
        Output stream ``"{id}/quality"`` at ``1 / window_s`` Hz, one sample per
        window, channels ``f"{channel}/{metric}"`` for every metric in
        :data:`METRICS` (``reason`` is a code into :data:`REASONS`); each chunk's
        ``meta["reasons"]`` maps channel names to reason strings.

    Examples
    --------
    >>> import numpy as np
    >>> from neuraflow.ops import run_offline
    >>> from neuraflow.testing import chunks_from_array, make_info
    >>> x = 20e-6 * np.sin(2 * np.pi * 10 * np.arange(500) / 250.0)[None].repeat(2, 0)
    >>> x[1] = 0.0  # a dead channel
    >>> out = run_offline(signal_quality(1.0), chunks_from_array(x, make_info(2, 250.0), [100, 400]))
    >>> len(out), out[0].meta["reasons"]
    (2, {'ch0': 'ok', 'ch1': 'flat'})
    """
    window_s = check_positive(_WHERE, "window_s", window_s)
    if line_freq is not None:
        line_freq = check_positive(_WHERE, "line_freq", line_freq)
    if rail_v is not None:
        for v in np.atleast_1d(np.asarray(rail_v, dtype=object)):
            check_positive(_WHERE, "rail_v", v)
    if thresholds is None:
        thresholds = QualityThresholds()
    elif isinstance(thresholds, Mapping):
        try:
            thresholds = QualityThresholds(**thresholds)
        except TypeError as exc:
            raise PipelineDefinitionError(f"{_WHERE}: thresholds: {exc}") from None
    elif not isinstance(thresholds, QualityThresholds):
        raise PipelineDefinitionError(f"{_WHERE}: thresholds={thresholds!r} must be QualityThresholds or a mapping.")
    rail = None if rail_v is None else (float(rail_v) if np.ndim(rail_v) == 0 else tuple(float(v) for v in rail_v))
    kw = {"window_s": window_s, "line_freq": line_freq, "rail_v": rail, "thresholds": thresholds}
    return OpSpec(
        kind="signal_quality",
        init=partial(_init, **kw),
        step=partial(_step, **kw),
        infer_info=partial(_infer_info, **kw),
        params=MappingProxyType({**kw, "thresholds": asdict(thresholds)}),
    )
