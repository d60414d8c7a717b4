"""Power features of windows: band power, spectral edge and peak frequency of a PSD, Morlet wavelet power.

Window features (see :mod:`~neuraflow.ops.spectra` for the stream convention and the
PSD estimators): :func:`band_power`, :func:`spectral_edge` and :func:`peak_frequency`
read a Welch or multitaper PSD of the window (:func:`~neuraflow.ops.spectra.window_psd`);
:func:`morlet_power` convolves the window with MNE's Morlet wavelets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from scipy import fft as sfft

from neuraflow._validate import check_option, check_positive
from neuraflow.chunk import StreamInfo
from neuraflow.errors import PipelineDefinitionError
from neuraflow.ops.base import OpSpec
from neuraflow.ops.features import Bands, _check_bands
from neuraflow.ops.spectra import (WindowFeature, _check_fmax, _check_fmax_param, _flat, _n, _window_n,
                                   window_feature_op, window_psd)


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

    Examples
    --------
    >>> import numpy as np
    >>> from neuraflow.ops import band_power, run_offline
    >>> from neuraflow.testing import chunks_from_array, make_info
    >>> x = np.sin(2 * np.pi * 10.0 * np.arange(500) / 250.0)[None, :]
    >>> (out,) = run_offline(band_power({"alpha": (8.0, 13.0)}, relative=True),
    ...                      chunks_from_array(x, make_info(1, 250.0), [500]))
    >>> out.channels, round(float(out.data[0, 0]), 3), out.info.units
    (('ch0:alpha',), 1.0, ('ratio',))
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


__all__ = ["band_power", "morlet_power", "peak_frequency", "spectral_edge"]
