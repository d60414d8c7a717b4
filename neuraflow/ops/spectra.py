"""Spectral features of windows: Welch and multitaper PSD, band power, edge and peak frequency, Morlet power.

Every op here (and in :mod:`~neuraflow.ops.temporal`, :mod:`~neuraflow.ops.connectivity`)
is a *window feature*: it takes one window chunk ``(n_channels, n_win)`` (see
:func:`~neuraflow.ops.sliding_window`) and emits one feature chunk ``(n_features, 1)``
with ``t0_s`` the end time of the window, stream sfreq ``1 / hop_s`` from the
input's meta (the input sfreq when absent), ``seq`` of the window and type
``"feature"``. Any chunk is treated as one window, so an op also accepts raw
chunks of any length. The ops are stateless (state ``None``); ``step_batch``
computes all equal-shaped windows of many streams in one vectorised call.

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
from neuraflow.errors import PipelineDefinitionError
from neuraflow.ops.base import OpSpec
from neuraflow.ops.features import Bands, _check_bands


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


def _init(first: Chunk) -> None:
    return None


def _step(state: None, chunk: Chunk, *, feature: WindowFeature) -> tuple[None, list[Chunk]]:
    if chunk.n_samples == 0:
        return None, []
    with np.errstate(divide="ignore", invalid="ignore"):
        values = feature.compute(chunk.data.astype(np.float64), chunk.sfreq, chunk.channels)
    return None, [_emit(chunk, values, feature)]


def _step_batch(states: Sequence[None], chunks: Sequence[Chunk], *, feature: WindowFeature
                ) -> tuple[list[None], list[list[Chunk]]]:
    outputs: list[list[Chunk]] = [[] for _ in chunks]
    groups: dict[tuple, list[int]] = {}
    for i, chunk in enumerate(chunks):
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
    return [None] * len(chunks), outputs


def window_feature_op(kind: str, feature: WindowFeature, params: Mapping[str, Any]) -> OpSpec:
    """Wrap a :class:`WindowFeature` into a stateless, batchable :class:`OpSpec`."""
    return OpSpec(kind=kind, init=_init, step=partial(_step, feature=feature),
                  infer_info=partial(_infer, feature=feature), params=MappingProxyType(dict(params)),
                  step_batch=partial(_step_batch, feature=feature))


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


def _check_spectral_params(where: str, method: str, nperseg_s: float | None, nw: float) -> dict[str, Any]:
    check_option(where, "method", method, ("welch", "multitaper"))
    if nperseg_s is not None:
        nperseg_s = check_positive(where, "nperseg_s", nperseg_s)
    return {"method": method, "nperseg_s": nperseg_s, "nw": check_positive(where, "nw", nw)}


@dataclass(frozen=True)
class _BandPower(WindowFeature):
    bands: Bands
    method: str
    nperseg_s: float | None
    nw: float
    relative: bool
    log: bool

    def compute(self, x: np.ndarray, sfreq: float, channels: tuple[str, ...]) -> np.ndarray:
        freqs, psd = window_psd(x, sfreq, self.method, self.nperseg_s, self.nw)
        masks = np.stack([(freqs >= lo) & (freqs < hi) for _, lo, hi in self.bands], axis=1).astype(np.float64)
        power = psd @ masks * (freqs[1] if freqs.size > 1 else sfreq)  # rectangle rule, unit^2
        if self.relative:
            power = power / psd.sum(axis=-1, keepdims=True) / (freqs[1] if freqs.size > 1 else sfreq)
        power[..., ~masks.any(axis=0)] = np.nan
        return _flat(np.log10(power) if self.log else power)

    def labels(self, info: StreamInfo) -> tuple[tuple[str, ...], tuple[str, ...]]:
        unit = "ratio" if self.relative else "{u}^2"
        units = tuple((f"log10({unit})" if self.log else unit).format(u=u or "1") for u in info.units)
        return (tuple(f"{ch}:{b[0]}" for ch in info.channels for b in self.bands),
                tuple(u for u in units for _ in self.bands))

    def check(self, info: StreamInfo) -> None:
        for name, _, hi in self.bands:
            if hi > info.sfreq / 2:
                raise ValueError(f"band {name!r}: upper edge {hi!r} Hz must not exceed Nyquist "
                                 f"({info.sfreq / 2!r} Hz at sfreq={info.sfreq!r}).")
        n_win = _window_n(info)
        n_fft = n_win if self.nperseg_s is None or self.method == "multitaper" else _n(self.nperseg_s, info.sfreq)
        if n_fft is not None:
            freqs = sfft.rfftfreq(n_fft, 1.0 / info.sfreq)
            for name, lo, hi in self.bands:
                if not np.any((freqs >= lo) & (freqs < hi)):
                    raise ValueError(f"band {name!r} [{lo!r}, {hi!r}) Hz holds no frequency bin at resolution "
                                     f"{info.sfreq / n_fft!r} Hz; widen the band or lengthen the window/segment.")


def band_power(bands: Mapping[str, tuple[float, float]], *, method: str = "welch", relative: bool = False,
               log: bool = False, nperseg_s: float | None = None, nw: float = 4.0) -> OpSpec:
    """Absolute or relative power in named frequency bands, per channel.

    Parameters
    ----------
    bands : mapping of str to (float, float)
        Band name -> ``(lo, hi)`` in Hz; a bin ``f`` belongs to the band when ``lo <= f < hi``.
    method : {"welch", "multitaper"}
        PSD estimator: Welch (segments of ``nperseg_s``; ``None``: one Hann segment of
        the whole window) or multitaper (DPSS, time-half-bandwidth ``nw``, whole window,
        see :func:`multitaper_psd`).
    relative : bool
        Divide by the total power (all bins from 0 Hz to Nyquist); unit ``"ratio"``.
    log : bool
        Emit ``log10`` of the power.
    nperseg_s : float, optional
        Welch segment length in seconds.
    nw : float
        Multitaper time-half-bandwidth product.

    Returns
    -------
    OpSpec
        Output ``(n_channels * n_bands, 1)``, channels ``"{ch}:{band}"``. Absolute power is
        ``sum(psd[band bins]) * df`` (unit ``"<unit>^2"``, ``df = sfreq / n_fft``); a band
        without bins gives NaN (reported at build time when the window length is known).

    Raises
    ------
    PipelineDefinitionError
        For bad bands (see :func:`~neuraflow.ops.log_band_power`), an unknown ``method``,
        a non-bool ``relative``/``log`` or a non-positive ``nperseg_s``/``nw``.
    """
    where = "ops.band_power"
    checked = _check_bands(where, bands)
    params = _check_spectral_params(where, method, nperseg_s, nw)
    for name, value in (("relative", relative), ("log", log)):
        check_option(where, name, value, (True, False))
    feature = _BandPower(checked, params["method"], params["nperseg_s"], params["nw"], bool(relative), bool(log))
    return window_feature_op("band_power", feature, {"bands": {n: (lo, hi) for n, lo, hi in checked},
                                                     **params, "relative": relative, "log": log})


@dataclass(frozen=True)
class _EdgeOrPeak(WindowFeature):
    what: str  # "edge" or "peak"
    percent: float
    fmin: float
    fmax: float | None
    method: str
    nperseg_s: float | None
    nw: float

    def compute(self, x: np.ndarray, sfreq: float, channels: tuple[str, ...]) -> np.ndarray:
        freqs, psd = window_psd(x, sfreq, self.method, self.nperseg_s, self.nw)
        mask = (freqs >= self.fmin) & (freqs <= (sfreq / 2 if self.fmax is None else self.fmax))
        freqs, psd = freqs[mask], psd[..., mask]
        if not freqs.size:
            return np.full(psd.shape[:-1], np.nan)
        if self.what == "edge":
            cum = np.cumsum(psd, axis=-1)
            total = cum[..., -1:]
            index = np.argmax(cum >= total * (self.percent / 100.0), axis=-1)
            ok = total[..., 0] > 0
        else:
            index = np.argmax(psd, axis=-1)
            ok = psd.max(axis=-1) > 0
        return np.where(ok, freqs[index], np.nan)

    def labels(self, info: StreamInfo) -> tuple[tuple[str, ...], tuple[str, ...]]:
        name = f"sef{self.percent:g}" if self.what == "edge" else "peak"
        return tuple(f"{ch}:{name}" for ch in info.channels), ("Hz",) * info.n_channels

    def check(self, info: StreamInfo) -> None:
        _check_fmax(self.fmax, info)


def _check_range(where: str, fmin: float, fmax: float | None) -> tuple[float, float | None]:
    fmin = check_positive(where, "fmin", fmin, allow_zero=True)
    fmax = _check_fmax_param(where, fmax)
    if fmax is not None and fmax <= fmin:
        raise PipelineDefinitionError(f"{where}: fmax={fmax!r} must be > fmin={fmin!r} Hz.")
    return fmin, fmax


def spectral_edge(percent: float = 95.0, *, fmin: float = 0.0, fmax: float | None = None, method: str = "welch",
                  nperseg_s: float | None = None, nw: float = 4.0) -> OpSpec:
    """Spectral edge frequency: the lowest bin below which ``percent`` % of the power lies.

    Parameters
    ----------
    percent : float
        In (0, 100]. The edge is the first bin ``f_k`` in ``[fmin, fmax]`` whose cumulative
        PSD sum reaches ``percent / 100`` of the sum over ``[fmin, fmax]`` (no interpolation).
    fmin, fmax : float
        Frequency range in Hz (inclusive); ``fmax=None`` is Nyquist.
    method, nperseg_s, nw
        PSD estimator, as in :func:`band_power`.

    Returns
    -------
    OpSpec
        Output ``(n_channels, 1)``, channels ``"{ch}:sef{percent:g}"``, unit ``"Hz"``; NaN
        for a window without power in the range.

    Raises
    ------
    PipelineDefinitionError
        If ``percent`` is not in (0, 100], ``fmin < 0``, ``fmax <= fmin`` or a PSD parameter is invalid.
    """
    where = "ops.spectral_edge"
    percent = check_positive(where, "percent", percent)
    if percent > 100:
        raise PipelineDefinitionError(f"{where}: percent={percent!r} must be in (0, 100].")
    fmin, fmax = _check_range(where, fmin, fmax)
    params = _check_spectral_params(where, method, nperseg_s, nw)
    feature = _EdgeOrPeak("edge", percent, fmin, fmax, params["method"], params["nperseg_s"], params["nw"])
    return window_feature_op("spectral_edge", feature, {"percent": percent, "fmin": fmin, "fmax": fmax, **params})


def peak_frequency(fmin: float, fmax: float, *, method: str = "welch", nperseg_s: float | None = None,
                   nw: float = 4.0) -> OpSpec:
    """Frequency of the largest PSD bin in ``[fmin, fmax]`` Hz (e.g. the individual alpha peak).

    Parameters
    ----------
    fmin, fmax : float
        Search range in Hz, ``0 <= fmin < fmax <= Nyquist`` (inclusive).
    method, nperseg_s, nw
        PSD estimator, as in :func:`band_power`.

    Returns
    -------
    OpSpec
        Output ``(n_channels, 1)``, channels ``"{ch}:peak"``, unit ``"Hz"``; NaN when the range
        holds no bin or no power. Resolution is the bin spacing ``sfreq / n_fft``.

    Raises
    ------
    PipelineDefinitionError
        If the range or a PSD parameter is invalid.
    """
    where = "ops.peak_frequency"
    fmin, fmax = _check_range(where, fmin, fmax)
    params = _check_spectral_params(where, method, nperseg_s, nw)
    feature = _EdgeOrPeak("peak", 100.0, fmin, fmax, params["method"], params["nperseg_s"], params["nw"])
    return window_feature_op("peak_frequency", feature, {"fmin": fmin, "fmax": fmax, **params})


@lru_cache(maxsize=32)
def _morlet_bank(n: int, sfreq: float, freqs: tuple[float, ...], n_cycles: tuple[float, ...], zero_mean: bool
                 ) -> tuple[np.ndarray, np.ndarray, int]:
    """FFTs of MNE's Morlet wavelets, circularly centred (n_freqs, n_fft), their lengths and n_fft."""
    waves = []
    for f, nc in zip(freqs, n_cycles):
        sigma_t = nc / (2.0 * np.pi * f)
        t = np.arange(0.0, 5.0 * sigma_t, 1.0 / sfreq)
        t = np.r_[-t[::-1], t[1:]]
        osc = np.exp(2j * np.pi * f * t)
        if zero_mean:
            osc -= np.exp(-2 * (np.pi * f * sigma_t) ** 2)
        w = osc * np.exp(-(t**2) / (2.0 * sigma_t**2))
        waves.append(w / (np.sqrt(0.5) * np.linalg.norm(w)))
    lengths = np.array([w.size for w in waves])
    n_fft = sfft.next_fast_len(n + int(lengths.max()) - 1)
    bank = np.zeros((len(waves), n_fft), dtype=np.complex128)
    for k, w in enumerate(waves):  # put sample (L - 1) // 2 at index 0: 'same' output = ifft[:n]
        c = (w.size - 1) // 2
        bank[k, : w.size - c] = w[c:]
        bank[k, n_fft - c :] = w[:c]
    bank = sfft.fft(bank, axis=-1)
    bank.flags.writeable = False
    return bank, lengths, n_fft


@dataclass(frozen=True)
class _Morlet(WindowFeature):
    freqs: tuple[float, ...]
    n_cycles: tuple[float, ...]
    output: str
    zero_mean: bool

    def compute(self, x: np.ndarray, sfreq: float, channels: tuple[str, ...]) -> np.ndarray:
        n = x.shape[-1]
        bank, lengths, n_fft = _morlet_bank(n, sfreq, self.freqs, self.n_cycles, self.zero_mean)
        spec = sfft.fft(x, n=n_fft, axis=-1)[..., None, :] * bank  # (..., n_ch, n_freqs, n_fft)
        tfr = sfft.ifft(spec, axis=-1)[..., :n]
        power = tfr.real**2 + tfr.imag**2
        if self.output == "mean":
            return _flat(power.mean(axis=-1))
        at = n - 1 - (lengths - 1) // 2  # latest sample whose wavelet lies inside the window
        fits = lengths <= n
        last = power[..., np.arange(lengths.size), np.clip(at, 0, n - 1)]
        return _flat(np.where(fits, last, np.nan))

    def labels(self, info: StreamInfo) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return (tuple(f"{ch}:{f:g}Hz" for ch in info.channels for f in self.freqs),
                tuple(f"{u or '1'}^2" for u in info.units for _ in self.freqs))

    def check(self, info: StreamInfo) -> None:
        _check_fmax(max(self.freqs), info)
        n_win = _window_n(info)
        if n_win is not None:
            _, lengths, _ = _morlet_bank(n_win, info.sfreq, self.freqs, self.n_cycles, self.zero_mean)
            if lengths.max() > n_win:
                f = self.freqs[int(np.argmax(lengths))]
                raise ValueError(f"the {f!r} Hz wavelet ({lengths.max()} samples) is longer than the "
                                 f"{n_win}-sample window; lengthen the window or lower n_cycles.")


def morlet_power(freqs: Sequence[float], n_cycles: float | Sequence[float] = 7.0, *, output: str = "mean",
                 zero_mean: bool = True) -> OpSpec:
    """Morlet wavelet power at given frequencies, per channel.

    The wavelets and the convolution are those of
    ``mne.time_frequency.tfr_array_morlet(x[None], sfreq, freqs, n_cycles, zero_mean=zero_mean,
    output="power")`` (Gaussian to 5 sigma, ``sigma_t = n_cycles / (2 pi f)``, ``"same"``
    convolution, the window zero-padded outside its samples).

    Parameters
    ----------
    freqs : sequence of float
        Frequencies in Hz (> 0, at most Nyquist).
    n_cycles : float or sequence of float
        Cycles per wavelet, one value or one per frequency.
    output : {"mean", "last"}
        ``"mean"``: the TFR power averaged over all samples of the window. ``"last"``: the
        power at sample ``n - 1 - (L_f - 1) // 2``, the latest one whose wavelet (``L_f``
        samples) lies entirely inside the window (a delay of half the wavelet, about
        ``n_cycles * 5 / (2 pi f)`` s); NaN when the wavelet is longer than the window.
    zero_mean : bool
        Subtract the wavelet's mean (MNE's default for ``tfr_array_morlet``).

    Returns
    -------
    OpSpec
        Output ``(n_channels * n_freqs, 1)``, channels ``"{ch}:{f:g}Hz"``, unit ``"<unit>^2"``.

    Raises
    ------
    PipelineDefinitionError
        If ``freqs`` is empty or not positive, ``n_cycles`` has the wrong length or is not
        positive, or ``output`` is unknown.
    """
    where = "ops.morlet_power"
    if isinstance(freqs, (str, bytes)) or not isinstance(freqs, Sequence) or not freqs:
        raise PipelineDefinitionError(f"{where}: freqs={freqs!r} must be a non-empty sequence of Hz values.")
    f_checked = tuple(check_positive(where, "freqs", f) for f in freqs)
    cycles = n_cycles if isinstance(n_cycles, Sequence) else (n_cycles,) * len(f_checked)
    if len(cycles) != len(f_checked):
        raise PipelineDefinitionError(f"{where}: n_cycles has {len(cycles)} values, expected 1 or {len(f_checked)}.")
    c_checked = tuple(check_positive(where, "n_cycles", c) for c in cycles)
    check_option(where, "output", output, ("mean", "last"))
    check_option(where, "zero_mean", zero_mean, (True, False))
    return window_feature_op("morlet_power", _Morlet(f_checked, c_checked, output, bool(zero_mean)),
                             {"freqs": f_checked, "n_cycles": c_checked, "output": output, "zero_mean": zero_mean})


__all__ = [
    "WindowFeature", "band_power", "feature_info", "morlet_power", "multitaper_density", "multitaper_psd",
    "peak_frequency", "spectral_edge", "welch_density", "welch_psd", "welch_spectra", "window_feature_op",
    "window_psd",
]
