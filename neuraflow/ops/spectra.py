"""Window features and their PSD estimators: the engine, Welch and multitaper PSD.

Every op here (and in :mod:`~neuraflow.ops.power`, :mod:`~neuraflow.ops.temporal`,
:mod:`~neuraflow.ops.connectivity`) is a *window feature*: it takes one window chunk
``(n_channels, n_win)`` (see :func:`~neuraflow.ops.sliding_window`) and emits one
feature chunk ``(n_features, 1)`` with ``t0_s`` the end time of the window, stream
sfreq ``1 / hop_s`` from the input's meta (the input sfreq when absent), ``seq`` of
the window and type ``"feature"``. Any chunk is treated as one window, so an op also
accepts raw chunks of any length. The ops keep no data between windows: their state
is a :class:`~neuraflow.ops.features.StreamShape` (the rate and channel count of the
first chunk; a chunk that changes either raises
:class:`~neuraflow.errors.StreamMismatchError`). ``step_batch`` computes all
equal-shaped windows of many streams in one vectorised call.

Spectral estimates (documented per op) follow :func:`scipy.signal.welch`
(periodic Hann window, ``noverlap = nperseg // 2``, constant detrend, one-sided
density, mean over segments) and :func:`mne.time_frequency.psd_array_multitaper`
(``normalization="full"``). A window shorter than ``nperseg`` is one segment of
its own length, zero-padded to ``nperseg`` (the frequency grid never changes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from types import MappingProxyType
from typing import Any

import numpy as np
from scipy import fft as sfft
from scipy import signal
from scipy.signal.windows import dpss

from neuraflow._validate import check_option, check_positive
from neuraflow.chunk import Chunk, StreamInfo
from neuraflow.ops.base import OpSpec
from neuraflow.ops.features import StreamShape


# --------------------------------------------------------------------------- engine
@dataclass(frozen=True)
class WindowFeature:
    """A vectorised window -> feature-vector computation (subclassed per op; hashable, picklable)."""

    def compute(self, x: np.ndarray, sfreq: float, channels: tuple[str, ...]) -> np.ndarray:
        """Features of windows ``x`` (..., n_channels, n_win) float64 (read-only) -> (..., n_features).

        ``sfreq`` is the input rate in Hz, ``channels`` the input channel names.
        """
        raise NotImplementedError

    def labels(self, info: StreamInfo) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Output channel names and units for input ``info``."""
        raise NotImplementedError

    def check(self, info: StreamInfo) -> None:
        """Raise ``ValueError`` for an input sfreq or window length the parameters do not fit."""


_INFO_CACHE: dict[tuple, tuple[StreamInfo, StreamInfo]] = {}


def feature_info(feature: WindowFeature, info: StreamInfo) -> StreamInfo:
    """Output stream description of ``feature`` applied to windows of ``info`` (cached per info)."""
    key = (id(info), feature)
    hit = _INFO_CACHE.get(key)
    if hit is not None and hit[0] is info:
        return hit[1]
    channels, units = feature.labels(info)
    hop_s = info.meta.get("hop_s")
    out = info.replace(
        sfreq=1.0 / float(hop_s) if hop_s else info.sfreq,
        channels=channels, ch_types=("feature",) * len(channels), units=units,
    )
    if len(_INFO_CACHE) > 1024:
        _INFO_CACHE.clear()
    _INFO_CACHE[key] = (info, out)
    return out


def _infer(info: StreamInfo, *, feature: WindowFeature) -> StreamInfo:
    feature.check(info)
    return feature_info(feature, info)


def _emit(chunk: Chunk, values: np.ndarray, feature: WindowFeature) -> Chunk:
    return Chunk(values.reshape(-1, 1), chunk.t_end_s, feature_info(feature, chunk.info),
                 seq=chunk.seq, recv_s=chunk.recv_s, meta=chunk.meta)


def _step(state: StreamShape, chunk: Chunk, *, where: str, feature: WindowFeature
          ) -> tuple[StreamShape, list[Chunk]]:
    state.check(where, chunk)
    if chunk.n_samples == 0:
        return state, []
    with np.errstate(divide="ignore", invalid="ignore"):
        values = feature.compute(chunk.data.astype(np.float64), chunk.sfreq, chunk.channels)
    return state, [_emit(chunk, values, feature)]


def _step_batch(states: Sequence[StreamShape], chunks: Sequence[Chunk], *, where: str, feature: WindowFeature
                ) -> tuple[list[StreamShape], list[list[Chunk]]]:
    outputs: list[list[Chunk]] = [[] for _ in chunks]
    groups: dict[tuple, list[int]] = {}
    for i, (state, chunk) in enumerate(zip(states, chunks)):
        state.check(where, chunk)
        if chunk.n_samples:
            groups.setdefault((chunk.data.shape, chunk.sfreq, chunk.channels), []).append(i)
    for (shape, sfreq, channels), members in groups.items():
        stacked = np.empty((len(members), *shape), dtype=np.float64)
        for k, i in enumerate(members):
            stacked[k] = chunks[i].data
        with np.errstate(divide="ignore", invalid="ignore"):
            values = feature.compute(stacked, sfreq, channels)
        for k, i in enumerate(members):
            outputs[i] = [_emit(chunks[i], values[k], feature)]
    return list(states), outputs


def window_feature_op(kind: str, feature: WindowFeature, params: Mapping[str, Any]) -> OpSpec:
    """Wrap a :class:`WindowFeature` into a batchable :class:`OpSpec` with a :class:`StreamShape` state."""
    where = f"ops.{kind}"
    return OpSpec(kind=kind, init=StreamShape.of, step=partial(_step, where=where, feature=feature),
                  infer_info=partial(_infer, feature=feature), params=MappingProxyType(dict(params)),
                  step_batch=partial(_step_batch, where=where, feature=feature))


# --------------------------------------------------------------------------- estimators
@lru_cache(maxsize=128)
def _hann(n: int) -> np.ndarray:
    win = signal.get_window("hann", n).astype(np.float64)
    win.flags.writeable = False
    return win


def welch_spectra(x: np.ndarray, nperseg: int) -> tuple[np.ndarray, float]:
    """Hann-windowed rFFT of the Welch segments of ``x`` (..., n) -> (..., n_seg, nperseg // 2 + 1).

    Segments of ``nperseg`` samples every ``nperseg - nperseg // 2``; ``x`` shorter
    than ``nperseg`` is one segment of its own length zero-padded to ``nperseg``.
    Also returns ``1 / sum(win**2)`` (the density scale without ``1 / sfreq``).
    """
    n = x.shape[-1]
    if n >= nperseg:
        step = nperseg - nperseg // 2
        segs = np.lib.stride_tricks.sliding_window_view(x, nperseg, axis=-1)[..., ::step, :]
    else:
        segs = x[..., None, :]
    win = _hann(segs.shape[-1])
    segs = (segs - segs.mean(axis=-1, keepdims=True)) * win
    return sfft.rfft(segs, n=nperseg, axis=-1), 1.0 / float(np.sum(win**2))


def _one_sided(psd: np.ndarray, n_fft: int) -> np.ndarray:
    psd[..., 1 : psd.shape[-1] - (1 if n_fft % 2 == 0 else 0)] *= 2.0
    return psd


def welch_density(x: np.ndarray, sfreq: float, nperseg: int) -> np.ndarray:
    """One-sided Welch PSD of ``x`` (..., n) -> (..., nperseg // 2 + 1), unit^2/Hz (= scipy.signal.welch)."""
    spec, scale = welch_spectra(x, nperseg)
    psd = (spec.real**2 + spec.imag**2).mean(axis=-2) * (scale / sfreq)
    return _one_sided(psd, nperseg)


@lru_cache(maxsize=64)
def _tapers(n: int, nw: float, low_bias: bool) -> tuple[np.ndarray, np.ndarray]:
    if n <= 2 * nw:  # too short for this taper family: one Hann taper
        return _hann(n)[None, :] / np.linalg.norm(_hann(n)) if n > 1 else np.ones((1, 1)), np.ones(1)
    tapers, ratios = dpss(n, nw, int(2 * nw), sym=False, return_ratios=True)
    if low_bias:
        keep = ratios > 0.9
        keep = keep if keep.any() else np.argmax(ratios)[None]
        tapers, ratios = tapers[keep], ratios[keep]
    return tapers, ratios


def multitaper_density(x: np.ndarray, sfreq: float, nw: float, n_fft: int, low_bias: bool = True) -> np.ndarray:
    """Multitaper PSD (..., n) -> (..., n_fft // 2 + 1), unit^2/Hz.

    Equals ``mne.time_frequency.psd_array_multitaper(x, sfreq, bandwidth=2 * nw * sfreq / n,
    normalization="full")`` for ``n_fft == n`` (non-adaptive eigenvalue weights).
    """
    tapers, eig = _tapers(x.shape[-1], nw, low_bias)
    centred = x - x.mean(axis=-1, keepdims=True)
    xt = sfft.rfft(centred[..., None, :] * tapers, n=n_fft, axis=-1)
    psd = np.einsum("k,...kf->...f", eig, xt.real**2 + xt.imag**2) * (2.0 / eig.sum() / sfreq)
    psd[..., 0] /= 2.0
    if n_fft % 2 == 0:
        psd[..., -1] /= 2.0
    return psd


def _n(seconds: float, sfreq: float) -> int:
    return max(round(seconds * sfreq), 1)


def _window_n(info: StreamInfo) -> int | None:
    window_s = info.meta.get("window_s")
    return _n(float(window_s), info.sfreq) if window_s else None


def _check_fmax(fmax: float | None, info: StreamInfo) -> None:
    if fmax is not None and fmax > info.sfreq / 2:
        raise ValueError(f"fmax={fmax!r} Hz must not exceed Nyquist ({info.sfreq / 2!r} Hz at sfreq={info.sfreq!r}).")


def _psd_labels(info: StreamInfo, n_fft: int, fmax: float | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    freqs = _grid(n_fft, info.sfreq, fmax)
    if freqs.size > 1 and freqs[1] - freqs[0] < 0.01:
        raise ValueError(f"frequency resolution {freqs[1]:.4g} Hz is finer than the 0.01 Hz of the channel names.")
    channels = tuple(f"{ch}:{f:.2f}Hz" for ch in info.channels for f in freqs)
    units = tuple(f"{u or '1'}^2/Hz" for u in info.units for _ in freqs)
    return channels, units


def _grid(n_fft: int, sfreq: float, fmax: float | None) -> np.ndarray:
    freqs = sfft.rfftfreq(n_fft, 1.0 / sfreq)
    return freqs if fmax is None else freqs[freqs <= fmax]


def _flat(values: np.ndarray) -> np.ndarray:
    """(..., n_channels, k) -> (..., n_channels * k), channel-major."""
    return values.reshape(*values.shape[:-2], -1)


@dataclass(frozen=True)
class _PSD(WindowFeature):
    method: str
    seconds: float  # nperseg_s (welch) or length_s (multitaper)
    fmax: float | None
    nw: float = 4.0
    low_bias: bool = True

    def compute(self, x: np.ndarray, sfreq: float, channels: tuple[str, ...]) -> np.ndarray:
        n_fft = _n(self.seconds, sfreq)
        if self.method == "welch":
            psd = welch_density(x, sfreq, n_fft)
        else:
            psd = multitaper_density(x[..., -n_fft:], sfreq, self.nw, n_fft, self.low_bias)
        return _flat(psd[..., : _grid(n_fft, sfreq, self.fmax).size])

    def labels(self, info: StreamInfo) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return _psd_labels(info, _n(self.seconds, info.sfreq), self.fmax)

    def check(self, info: StreamInfo) -> None:
        _check_fmax(self.fmax, info)
        n_win = _window_n(info)
        if self.method == "multitaper" and n_win is not None and n_win != _n(self.seconds, info.sfreq):
            raise ValueError(f"length_s={self.seconds!r} s does not match the input window_s="
                             f"{info.meta['window_s']!r} s; use the window length.")


def _check_fmax_param(where: str, fmax: float | None) -> float | None:
    return None if fmax is None else check_positive(where, "fmax", fmax)


def welch_psd(nperseg_s: float, *, fmax: float | None = None) -> OpSpec:
    """Welch power spectral density of each window, one output channel per frequency bin.

    Parameters
    ----------
    nperseg_s : float
        Segment length in seconds (> 0); ``nperseg = round(nperseg_s * sfreq)`` samples,
        50 % overlap, periodic Hann, constant detrend: equals
        ``scipy.signal.welch(x, sfreq, nperseg=nperseg)`` (mean over segments). A window
        shorter than ``nperseg`` is one segment zero-padded to ``nperseg``.
    fmax : float, optional
        Highest bin kept, in Hz (default: Nyquist; checked at build time).

    Returns
    -------
    OpSpec
        Output ``(n_channels * n_bins, 1)``, channels ``"{ch}:{f:.2f}Hz"`` (bins
        ``k * sfreq / nperseg <= fmax``, channel-major), unit ``"<unit>^2/Hz"``.

    Raises
    ------
    PipelineDefinitionError
        If ``nperseg_s`` or ``fmax`` is not a finite number > 0.

    Examples
    --------
    >>> import numpy as np
    >>> from neuraflow.ops import run_offline, welch_psd
    >>> from neuraflow.testing import chunks_from_array, make_info
    >>> x = np.sin(2 * np.pi * 10.0 * np.arange(500) / 250.0)[None, :]
    >>> (out,) = run_offline(welch_psd(0.5, fmax=20.0), chunks_from_array(x, make_info(1, 250.0), [500]))
    >>> out.channels[int(np.argmax(out.data))]
    'ch0:10.00Hz'
    """
    where = "ops.welch_psd"
    nperseg_s = check_positive(where, "nperseg_s", nperseg_s)
    fmax = _check_fmax_param(where, fmax)
    return window_feature_op("welch_psd", _PSD("welch", nperseg_s, fmax), {"nperseg_s": nperseg_s, "fmax": fmax})


def multitaper_psd(length_s: float, *, nw: float = 4.0, fmax: float | None = None, low_bias: bool = True) -> OpSpec:
    """Multitaper (DPSS) power spectral density of each window, one channel per bin.

    Parameters
    ----------
    length_s : float
        Window length in seconds (> 0); ``n = round(length_s * sfreq)`` fixes the
        frequency grid ``k * sfreq / n``. A window of ``n`` samples gives exactly
        ``mne.time_frequency.psd_array_multitaper(x, sfreq, bandwidth=2 * nw * sfreq / n,
        normalization="full")``; a longer one uses its last ``n`` samples, a shorter
        one is tapered at its own length and zero-padded to ``n``, and one of at
        most ``2 * nw`` samples uses a single Hann taper. Must equal the input's
        ``window_s`` when that is known (checked at build time).
    nw : float
        Time-half-bandwidth product ``NW`` (> 0); ``int(2 * NW)`` tapers before ``low_bias``.
    fmax : float, optional
        Highest bin kept, in Hz (default: Nyquist).
    low_bias : bool
        Keep only tapers with concentration ratio > 0.9 (as MNE).

    Returns
    -------
    OpSpec
        Output ``(n_channels * n_bins, 1)``, channels ``"{ch}:{f:.2f}Hz"``, unit ``"<unit>^2/Hz"``.

    Raises
    ------
    PipelineDefinitionError
        If ``length_s``, ``nw`` or ``fmax`` is not a finite number > 0, or ``low_bias`` is not a bool.
    """
    where = "ops.multitaper_psd"
    length_s = check_positive(where, "length_s", length_s)
    nw = check_positive(where, "nw", nw)
    fmax = _check_fmax_param(where, fmax)
    check_option(where, "low_bias", low_bias, (True, False))
    params = {"length_s": length_s, "nw": nw, "fmax": fmax, "low_bias": low_bias}
    return window_feature_op("multitaper_psd", _PSD("multitaper", length_s, fmax, nw, bool(low_bias)), params)


def window_psd(x: np.ndarray, sfreq: float, method: str, nperseg_s: float | None, nw: float
               ) -> tuple[np.ndarray, np.ndarray]:
    """PSD of windows for the band/edge/peak ops: ``(freqs, psd (..., n_freqs))``.

    ``"welch"`` with ``nperseg_s=None`` uses one segment of the whole window (a
    Hann periodogram); ``"multitaper"`` uses the window's own length.
    """
    n = x.shape[-1]
    n_fft = n if nperseg_s is None or method == "multitaper" else _n(nperseg_s, sfreq)
    psd = welch_density(x, sfreq, n_fft) if method == "welch" else multitaper_density(x, sfreq, nw, n_fft)
    return sfft.rfftfreq(n_fft, 1.0 / sfreq), psd


__all__ = [
    "WindowFeature", "feature_info", "multitaper_density", "multitaper_psd", "welch_density", "welch_psd",
    "welch_spectra", "window_feature_op", "window_psd",
]
