"""Connectivity between channel pairs of a window: coherence, imaginary coherence, PLV, PLI, wPLI, PAC.

Window features (see :mod:`neuraflow.ops.spectra` for the stream convention)
computed for channel pairs, by default the upper triangle ``(a, b)``, ``a`` before
``b`` in channel order. ``pairs=`` restricts an op to a subset, so a big montage
can be sharded over several ops (workers) that each compute some of the pairs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import fft as sfft

from neuraflow._validate import check_int, check_option, check_positive
from neuraflow.chunk import StreamInfo
from neuraflow.errors import PipelineDefinitionError
from neuraflow.ops.base import OpSpec
from neuraflow.ops.features import Bands, _check_bands
from neuraflow.ops.spectra import WindowFeature, welch_spectra, window_feature_op

Pairs = tuple[tuple[str, str], ...] | None
METHODS = ("coh", "imcoh", "plv", "pli", "wpli")


@lru_cache(maxsize=256)
def _pair_index_cached(channels: tuple[str, ...], pairs: Pairs) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(ia, ib)`` of the pairs in ``channels`` (default: upper triangle)."""
    if pairs is None:
        ia, ib = np.triu_indices(len(channels), k=1)
        return ia, ib
    pos = {ch: i for i, ch in enumerate(channels)}
    missing = sorted({c for p in pairs for c in p} - pos.keys())
    if missing:
        raise ValueError(f"pairs name channels {missing} that the input does not have (has {channels}).")
    return np.array([pos[a] for a, _ in pairs], dtype=int), np.array([pos[b] for _, b in pairs], dtype=int)


def _pair_index(info: StreamInfo, pairs: Pairs) -> tuple[np.ndarray, np.ndarray]:
    return _pair_index_cached(info.channels, pairs)


def cross_measure(spec: np.ndarray, ia: np.ndarray, ib: np.ndarray, method: str) -> np.ndarray:
    """Connectivity from segment spectra ``spec`` (..., n_ch, n_seg, n_f) -> (..., n_pairs, n_f).

    With ``S = X_a conj(X_b)`` per segment and ``E`` the mean over segments:
    coh ``|E S|^2 / (E|X_a|^2 E|X_b|^2)``; imcoh ``Im(E S) / sqrt(E|X_a|^2 E|X_b|^2)``;
    plv ``|E(S / |S|)|``; pli ``|E sign(Im S)|``; wpli ``|E Im S| / E|Im S|``
    (the definitions of mne-connectivity, segments in the place of epochs).
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        return _measure(spec[..., ia, :, :], spec[..., ib, :, :], method)


def _measure(xa: np.ndarray, xb: np.ndarray, method: str) -> np.ndarray:
    s = xa * xb.conj()
    if method in ("coh", "imcoh"):
        paa = (xa.real**2 + xa.imag**2).mean(axis=-2)
        pbb = (xb.real**2 + xb.imag**2).mean(axis=-2)
        sxy = s.mean(axis=-2)
        if method == "coh":
            return (sxy.real**2 + sxy.imag**2) / (paa * pbb)
        return sxy.imag / np.sqrt(paa * pbb)
    if method == "plv":
        return np.abs((s / np.abs(s)).mean(axis=-2))
    if method == "pli":
        return np.abs(np.sign(s.imag).mean(axis=-2))
    return np.abs(s.imag.mean(axis=-2)) / np.abs(s.imag).mean(axis=-2)


def _band_matrix(freqs: np.ndarray, bands: Bands) -> np.ndarray:
    avg = np.zeros((freqs.size, len(bands)))
    for j, (_, lo, hi) in enumerate(bands):
        mask = (freqs >= lo) & (freqs < hi)
        avg[mask, j] = 1.0 / max(mask.sum(), 1)
        if not mask.any():
            avg[:, j] = np.nan
    return avg


def _check_nyquist(bands: Bands, info: StreamInfo) -> None:
    for name, _, hi in bands:
        if hi > info.sfreq / 2:
            raise ValueError(f"band {name!r}: upper edge {hi!r} Hz must not exceed Nyquist "
                             f"({info.sfreq / 2!r} Hz at sfreq={info.sfreq!r}).")


@dataclass(frozen=True)
class _Spectral(WindowFeature):
    method: str
    bands: Bands
    nperseg_s: float
    pairs: Pairs

    def compute(self, x: np.ndarray, sfreq: float, channels: tuple[str, ...]) -> np.ndarray:
        nperseg = max(round(self.nperseg_s * sfreq), 1)
        ia, ib = _pair_index_cached(channels, self.pairs)
        avg = _band_matrix(sfft.rfftfreq(nperseg, 1.0 / sfreq), self.bands)
        used = (avg != 0).any(axis=1)  # only the bins of some band (0/0 at DC must not leak in)
        spec, _ = welch_spectra(x, nperseg)
        values = cross_measure(spec[..., used], ia, ib, self.method) @ avg[used]
        return values.reshape(*values.shape[:-2], -1)

    def labels(self, info: StreamInfo) -> tuple[tuple[str, ...], tuple[str, ...]]:
        ia, ib = _pair_index(info, self.pairs)
        channels = tuple(f"{info.channels[a]}-{info.channels[b]}:{band[0]}" for a, b in zip(ia, ib)
                         for band in self.bands)
        if not channels:
            raise ValueError("connectivity needs at least 2 channels (or a non-empty pairs=).")
        return channels, ("1",) * len(channels)

    def check(self, info: StreamInfo) -> None:
        _check_nyquist(self.bands, info)
        _pair_index(info, self.pairs)
        nperseg = max(round(self.nperseg_s * info.sfreq), 1)
        empty = np.isnan(_band_matrix(sfft.rfftfreq(nperseg, 1.0 / info.sfreq), self.bands)).any(axis=0)
        if empty.any():
            raise ValueError(f"band {self.bands[int(np.argmax(empty))][0]!r} holds no frequency bin at "
                             f"resolution {info.sfreq / nperseg!r} Hz (nperseg_s={self.nperseg_s!r}).")


def _check_pairs(where: str, pairs: Sequence[tuple[str, str]] | None, *, allow_self: bool) -> Pairs:
    if pairs is None:
        return None
    if isinstance(pairs, str) or not isinstance(pairs, Sequence) or not pairs:
        raise PipelineDefinitionError(f"{where}: pairs={pairs!r} must be None or a non-empty sequence of (a, b).")
    out = []
    for p in pairs:
        if not (isinstance(p, (tuple, list)) and len(p) == 2 and all(isinstance(c, str) for c in p)):
            raise PipelineDefinitionError(f"{where}: pair {p!r} must be a pair of channel names (a, b).")
        if p[0] == p[1] and not allow_self:
            raise PipelineDefinitionError(f"{where}: pair {tuple(p)!r} pairs a channel with itself.")
        out.append((p[0], p[1]))
    if len(set(out)) != len(out):
        raise PipelineDefinitionError(f"{where}: pairs has duplicates.")
    return tuple(out)


def spectral_connectivity(method: str, bands: Mapping[str, tuple[float, float]], *, nperseg_s: float = 0.5,
                          pairs: Sequence[tuple[str, str]] | None = None) -> OpSpec:
    """Band-averaged spectral connectivity between channel pairs over Welch segments of a window.

    Parameters
    ----------
    method : {"coh", "imcoh", "plv", "pli", "wpli"}
        Magnitude-squared coherence (equals ``scipy.signal.coherence(x_a, x_b, sfreq,
        nperseg=nperseg)`` per bin), imaginary part of coherency, phase-locking value,
        phase-lag index or weighted PLI; see :func:`cross_measure`. The Welch segments
        of the window (50 % overlap, periodic Hann, constant detrend) play the role of
        epochs, so the phase measures need windows of several segments.
    bands : mapping of str to (float, float)
        Band name -> ``(lo, hi)`` Hz; the measure is averaged over the bins ``lo <= f < hi``.
    nperseg_s : float
        Segment length in seconds (> 0); a window shorter than a segment is one
        zero-padded segment (coherence and PLV are then 1).
    pairs : sequence of (str, str), optional
        Channel pairs to compute (default: all ``a < b``). Unknown names fail at build time.

    Returns
    -------
    OpSpec
        Output ``(n_pairs * n_bands, 1)``, channels ``"{a}-{b}:{band}"`` (pair-major), unit ``"1"``.

    Raises
    ------
    PipelineDefinitionError
        For an unknown method, bad bands, a non-positive ``nperseg_s`` or malformed ``pairs``.
    """
    where = "ops.spectral_connectivity"
    check_option(where, "method", method, METHODS)
    checked = _check_bands(where, bands)
    nperseg_s = check_positive(where, "nperseg_s", nperseg_s)
    pairs_c = _check_pairs(where, pairs, allow_self=False)
    feature = _Spectral(method, checked, nperseg_s, pairs_c)
    return window_feature_op("spectral_connectivity", feature, {
        "method": method, "bands": {n: (lo, hi) for n, lo, hi in checked}, "nperseg_s": nperseg_s, "pairs": pairs_c})


def band_analytic(x: np.ndarray, sfreq: float, lo: float, hi: float) -> np.ndarray:
    """Analytic signal of the ideal (FFT brick-wall) band-pass ``[lo, hi)`` of ``x`` (..., n) -> complex (..., n).

    Equals ``scipy.signal.hilbert(irfft(rfft(x) * mask, n))``: positive bins in the band
    doubled, DC and Nyquist (when in the band) kept once, all others zeroed.
    """
    n = x.shape[-1]
    freqs = sfft.fftfreq(n, 1.0 / sfreq)
    h = np.zeros(n)
    band = (np.abs(freqs) >= lo) & (np.abs(freqs) < hi)
    h[band & (freqs > 0)] = 2.0
    h[band & (freqs == 0)] = 1.0
    if n % 2 == 0 and band[n // 2]:
        h[n // 2] = 1.0  # Nyquist (fftfreq labels it negative)
    return sfft.ifft(sfft.fft(x, axis=-1) * h, axis=-1)


def modulation_index(phase: np.ndarray, amp: np.ndarray, n_bins: int) -> np.ndarray:
    """Tort et al. (2010) modulation index of ``amp`` by ``phase`` (..., n) -> (...).

    Phases in [-pi, pi) go to ``n_bins`` equal bins; ``P_j`` is the mean amplitude of bin
    ``j`` normalised to sum 1 (an empty bin has ``P_j = 0``); ``MI = (log N + sum P log P) / log N``.
    NaN for a row holding a non-finite phase or amplitude (binning would hide it).
    """
    lead, n = phase.shape[:-1], phase.shape[-1]
    finite = np.isfinite(phase).all(axis=-1) & np.isfinite(amp).all(axis=-1)
    k = np.clip(np.floor((phase + np.pi) / (2 * np.pi / n_bins)).astype(np.int64), 0, n_bins - 1)
    rows = k.reshape(-1, n) + np.arange(int(np.prod(lead, dtype=int)))[:, None] * n_bins
    size = rows.shape[0] * n_bins
    sums = np.bincount(rows.ravel(), weights=amp.reshape(-1), minlength=size).reshape(-1, n_bins)
    counts = np.bincount(rows.ravel(), minlength=size).reshape(-1, n_bins)
    mean = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
    p = mean / mean.sum(axis=-1, keepdims=True)
    plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0).sum(axis=-1)
    mi = ((np.log(n_bins) + plogp) / np.log(n_bins)).reshape(lead)
    return np.where(finite, mi, np.nan)


@dataclass(frozen=True)
class _PAC(WindowFeature):
    phase_band: tuple[float, float]
    amp_band: tuple[float, float]
    n_bins: int
    pairs: Pairs

    def _index(self, channels: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        if self.pairs is None:
            i = np.arange(len(channels))
            return i, i
        return _pair_index_cached(channels, self.pairs)

    def compute(self, x: np.ndarray, sfreq: float, channels: tuple[str, ...]) -> np.ndarray:
        ia, ib = self._index(channels)
        phase = np.angle(band_analytic(x[..., np.unique(ia), :], sfreq, *self.phase_band))
        amp = np.abs(band_analytic(x[..., np.unique(ib), :], sfreq, *self.amp_band))
        phase = phase[..., np.searchsorted(np.unique(ia), ia), :]
        amp = amp[..., np.searchsorted(np.unique(ib), ib), :]
        return modulation_index(phase, amp, self.n_bins)

    def labels(self, info: StreamInfo) -> tuple[tuple[str, ...], tuple[str, ...]]:
        ia, ib = self._index(info.channels)
        channels = tuple(f"{info.channels[a]}-{info.channels[b]}:mi" for a, b in zip(ia, ib))
        return channels, ("1",) * len(channels)

    def check(self, info: StreamInfo) -> None:
        for name, (_, hi) in (("phase_band", self.phase_band), ("amp_band", self.amp_band)):
            if hi > info.sfreq / 2:
                raise ValueError(f"{name} upper edge {hi!r} Hz must not exceed Nyquist ({info.sfreq / 2!r} Hz).")
        self._index(info.channels)


def pac_modulation_index(phase_band: tuple[float, float], amp_band: tuple[float, float], *, n_bins: int = 18,
                         pairs: Sequence[tuple[str, str]] | None = None) -> OpSpec:
    """Phase-amplitude coupling: Tort (2010) modulation index over a window.

    Each window is band-passed with an ideal FFT filter and its analytic signal taken
    (see :func:`band_analytic`): the phase of ``phase_band`` of channel ``a`` modulates
    the amplitude envelope of ``amp_band`` of channel ``b`` (see :func:`modulation_index`).
    Edge effects of the window are not removed: use windows of several slow cycles.

    Parameters
    ----------
    phase_band, amp_band : (float, float)
        ``(lo, hi)`` Hz of the slow (phase) and fast (amplitude) band.
    n_bins : int
        Phase bins (>= 2; Tort uses 18).
    pairs : sequence of (str, str), optional
        ``(phase channel, amplitude channel)`` pairs; default each channel with itself.

    Returns
    -------
    OpSpec
        Output ``(n_pairs, 1)``, channels ``"{a}-{b}:mi"``, unit ``"1"``; MI in [0, 1], NaN
        while the window holds a NaN or inf sample of either channel.

    Raises
    ------
    PipelineDefinitionError
        For a band that is not ``0 <= lo < hi``, ``n_bins < 2`` or malformed ``pairs``.
    """
    where = "ops.pac_modulation_index"
    checked = _check_bands(where, {"phase_band": phase_band, "amp_band": amp_band})
    n_bins = check_int(where, "n_bins", n_bins, minimum=2)
    pairs_c = _check_pairs(where, pairs, allow_self=True)
    feature = _PAC(checked[0][1:], checked[1][1:], n_bins, pairs_c)
    return window_feature_op("pac_modulation_index", feature, {
        "phase_band": feature.phase_band, "amp_band": feature.amp_band, "n_bins": n_bins, "pairs": pairs_c})


__all__ = ["METHODS", "band_analytic", "cross_measure", "modulation_index", "pac_modulation_index",
           "spectral_connectivity"]
