"""Spectral features of windows: :func:`log_band_power`.

The spectrum follows :func:`scipy.signal.periodogram` with ``window="hann"``
(periodic Hann), ``detrend="constant"``, ``scaling="density"`` and a one-sided
spectrum, computed with one real FFT per window (or one batched FFT over all
equal-shaped windows of many streams in ``step_batch``). The state is a
:class:`StreamShape`: the op keeps no data between windows, only the rate and
channel count it was initialised with, to refuse a stream that changes them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from types import MappingProxyType

import numpy as np
from scipy import fft as scipy_fft
from scipy import signal

from neuraflow.chunk import Chunk, StreamInfo
from neuraflow.errors import PipelineDefinitionError
from neuraflow.ops.base import OpSpec, check_same_stream

Bands = tuple[tuple[str, float, float], ...]
_WHERE = "ops.log_band_power"


@dataclass(frozen=True)
class StreamShape:
    """State of an op that keeps no data between chunks: the stream it was initialised with.

    Parameters
    ----------
    sfreq : float
        Input rate in Hz.
    n_channels : int
        Input channel count.
    """

    sfreq: float
    n_channels: int

    @classmethod
    def of(cls, first: Chunk) -> StreamShape:
        """The shape of the stream that ``first`` starts (it may be empty)."""
        return cls(first.sfreq, first.n_channels)

    def check(self, where: str, chunk: Chunk) -> None:
        """Raise :class:`~neuraflow.errors.StreamMismatchError` if ``chunk`` has another rate or channel count."""
        check_same_stream(where, chunk, sfreq=self.sfreq, n_channels=self.n_channels)


@lru_cache(maxsize=256)
def _spectral_plan(n_win: int, sfreq: float, bands: Bands, relative: bool) -> tuple[np.ndarray, ...]:
    """Precompute, for one window length: Hann window, density weights and band matrix.

    Returns ``win`` (n_win,), ``density`` (n_freqs,) such that ``|rfft(x * win)|**2 * density``
    is scipy's one-sided density periodogram, ``avg`` (n_freqs, n_bands) averaging (or,
    when ``relative``, summing) the bins of each band, and ``empty`` (n_bands,) bool.
    """
    win = signal.get_window("hann", n_win).astype(np.float64)
    freqs = np.fft.rfftfreq(n_win, 1.0 / sfreq)
    density = np.full(freqs.size, 1.0 / (sfreq * float(np.sum(win**2))))
    # one-sided density: double every bin except DC and, for even n_win, Nyquist
    density[1 : freqs.size - (1 if n_win % 2 == 0 else 0)] *= 2.0
    avg = np.zeros((freqs.size, len(bands)))
    for j, (_, lo, hi) in enumerate(bands):
        mask = (freqs >= lo) & (freqs < hi)
        if mask.any():
            avg[mask, j] = 1.0 if relative else 1.0 / mask.sum()
    empty = ~avg.any(axis=0)  # NaN output; reported at build time when the window is known
    for a in (win, density, avg, empty):
        a.flags.writeable = False
    return win, density, avg, empty


def _band_powers(x: np.ndarray, sfreq: float, bands: Bands, relative: bool) -> np.ndarray:
    """Log band power of windows ``x``, shape (..., n_channels, n_win) -> (..., n_channels, n_bands).

    Works in one float64 buffer (``x`` is converted once, detrended and windowed
    in place) and squares only the bins up to the highest band edge: at 64
    channels x 1 s windows of hundreds of streams these temporaries are tens of
    MB per tick, and allocating them dominated the cost.
    """
    win, density, avg, empty = _spectral_plan(x.shape[-1], sfreq, bands, relative)
    work = x.astype(np.float64) if x.dtype != np.float64 or not x.flags.writeable else x
    work -= work.mean(axis=-1, keepdims=True)  # detrend="constant"
    work *= win
    spec = scipy_fft.rfft(work, axis=-1, overwrite_x=True)
    if relative:
        n_bins = spec.shape[-1]
    else:
        used = np.flatnonzero(avg.any(axis=1))
        n_bins = int(used[-1]) + 1 if used.size else 1
    spec = spec[..., :n_bins]
    psd = spec.real**2
    psd += spec.imag**2
    psd *= density[:n_bins]
    band = psd @ avg[:n_bins]
    with np.errstate(divide="ignore", invalid="ignore"):
        if relative:
            band = band / psd.sum(axis=-1, keepdims=True)
        band[..., empty] = np.nan
        return np.log10(band)


_INFO_CACHE: dict[tuple, tuple[StreamInfo, StreamInfo]] = {}


def _out_info(info: StreamInfo, bands: Bands, relative: bool) -> StreamInfo:
    key = (id(info), bands, relative)
    hit = _INFO_CACHE.get(key)
    if hit is not None and hit[0] is info:
        return hit[1]
    names = [b[0] for b in bands]
    units = []
    for unit in info.units:
        units.append("log10(ratio)" if relative else f"log10({unit or '1'}^2/Hz)")
    hop_s = info.meta.get("hop_s")
    out = info.replace(
        sfreq=1.0 / float(hop_s) if hop_s else info.sfreq,
        channels=tuple(f"{ch}:{name}" for ch in info.channels for name in names),
        ch_types=("feature",) * (info.n_channels * len(names)),
        units=tuple(u for u in units for _ in names),
    )
    if len(_INFO_CACHE) > 1024:  # infos are long-lived; bound the cache anyway
        _INFO_CACHE.clear()
    _INFO_CACHE[key] = (info, out)
    return out


def _infer_info(info: StreamInfo, *, bands: Bands, relative: bool) -> StreamInfo:
    nyq = info.sfreq / 2.0
    for name, _, hi in bands:
        if hi > nyq:
            raise ValueError(
                f"band {name!r}: upper edge {hi!r} Hz must not exceed Nyquist ({nyq!r} Hz at sfreq={info.sfreq!r})."
            )
    window_s = info.meta.get("window_s")
    if window_s:
        n_win = max(round(float(window_s) * info.sfreq), 1)
        freqs = np.fft.rfftfreq(n_win, 1.0 / info.sfreq)
        for name, lo, hi in bands:
            if not np.any((freqs >= lo) & (freqs < hi)):
                raise ValueError(
                    f"band {name!r} [{lo!r}, {hi!r}) Hz contains no frequency bin of a {window_s!r} s window "
                    f"(resolution {info.sfreq / n_win!r} Hz at sfreq={info.sfreq!r}); widen the band or the window."
                )
    return _out_info(info, bands, relative)


def _emit(chunk: Chunk, values: np.ndarray, bands: Bands, relative: bool) -> Chunk:
    return Chunk(
        values.reshape(-1, 1),
        chunk.t_end_s,
        _out_info(chunk.info, bands, relative),
        seq=chunk.seq,
        recv_s=chunk.recv_s,
        meta=chunk.meta,
    )


def _step(state: StreamShape, chunk: Chunk, *, bands: Bands, relative: bool) -> tuple[StreamShape, list[Chunk]]:
    state.check(_WHERE, chunk)
    if chunk.n_samples == 0:
        return state, []
    values = _band_powers(chunk.data, chunk.sfreq, bands, relative)
    return state, [_emit(chunk, values, bands, relative)]


def _step_batch(
    states: Sequence[StreamShape], chunks: Sequence[Chunk], *, bands: Bands, relative: bool
) -> tuple[list[StreamShape], list[list[Chunk]]]:
    """One batched rFFT per group of windows with equal shape and sfreq."""
    outputs: list[list[Chunk]] = [[] for _ in chunks]
    groups: dict[tuple, list[int]] = {}
    for i, (state, chunk) in enumerate(zip(states, chunks)):
        state.check(_WHERE, chunk)
        if chunk.n_samples:
            groups.setdefault((chunk.data.shape, chunk.sfreq), []).append(i)
    for (_, sfreq), members in groups.items():
        stacked = np.empty((len(members), *chunks[members[0]].data.shape), dtype=np.float64)
        for k, i in enumerate(members):
            stacked[k] = chunks[i].data  # converted to float64 on the copy: no float32 stack

        values = _band_powers(stacked, sfreq, bands, relative)
        for k, i in enumerate(members):
            outputs[i] = [_emit(chunks[i], values[k], bands, relative)]
    return list(states), outputs


def _check_bands(where: str, bands: Mapping[str, tuple[float, float]]) -> Bands:
    if not isinstance(bands, Mapping) or not bands:
        raise PipelineDefinitionError(
            f"{where}: bands must be a non-empty mapping name -> (lo, hi) in Hz, e.g. {{'alpha': (8.0, 13.0)}}."
        )
    out = []
    for name, edges in bands.items():
        if not isinstance(name, str) or not name or ":" in name:
            raise PipelineDefinitionError(f"{where}: band name {name!r} must be a non-empty string without ':'.")
        try:
            lo, hi = (float(e) for e in edges)
        except (TypeError, ValueError):
            raise PipelineDefinitionError(f"{where}: band {name!r}={edges!r} must be a pair (lo, hi) in Hz.") from None
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo < 0 or lo >= hi:
            raise PipelineDefinitionError(
                f"{where}: band {name!r}=({lo!r}, {hi!r}) must satisfy 0 <= lo < hi (finite, Hz)."
            )
        out.append((name, lo, hi))
    return tuple(out)


def log_band_power(bands: Mapping[str, tuple[float, float]], *, relative: bool = False) -> OpSpec:
    """Log10 of the mean spectral power density in frequency bands, per channel.

    Parameters
    ----------
    bands : mapping of str to (float, float)
        Band name -> ``(lo, hi)`` edges in Hz; a bin at frequency ``f`` belongs to
        the band when ``lo <= f < hi``. ``hi`` must not exceed Nyquist (checked at
        build time) and each band must hold at least one FFT bin of the window.
    relative : bool
        If True, emit ``log10(sum of band power / total power)`` (fraction of the
        window's power, unit ``"log10(ratio)"``) instead of the absolute mean density.

    Returns
    -------
    OpSpec
        Input: a window chunk, shape ``(n_channels, n_win)`` (see
        :func:`~neuraflow.ops.sliding_window`). Output: one chunk of shape
        ``(n_channels * n_bands, 1)``, channels ``"{ch}:{band}"`` (channel-major),
        type ``"feature"``, unit ``"log10(<unit>^2/Hz)"``, ``t0_s`` the end time of
        the window and stream sfreq ``1 / hop_s`` (the window rate; the input
        sfreq when the input carries no ``hop_s``). State: :class:`StreamShape`.

    Raises
    ------
    PipelineDefinitionError
        If ``bands`` is empty, a name is not a string or contains ``':'``, or an
        edge pair is not ``0 <= lo < hi``. ``step`` raises
        :class:`~neuraflow.errors.StreamMismatchError` for a chunk whose rate or
        channel count differs from the first chunk's.

    Examples
    --------
    >>> import numpy as np
    >>> from neuraflow.ops import log_band_power, run_offline
    >>> from neuraflow.testing import chunks_from_array, make_info
    >>> t = np.arange(250) / 250.0
    >>> x = np.sin(2 * np.pi * 10.0 * t)[None, :]
    >>> (out,) = run_offline(log_band_power({"alpha": (8.0, 13.0), "beta": (13.0, 30.0)}),
    ...                      chunks_from_array(x, make_info(1, 250.0), [250]))
    >>> out.channels, bool(out.data[0, 0] > out.data[1, 0])
    (('ch0:alpha', 'ch0:beta'), True)
    """
    checked = _check_bands(_WHERE, bands)
    if not isinstance(relative, bool):
        raise PipelineDefinitionError(f"{_WHERE}: relative={relative!r} must be True or False.")
    kw = {"bands": checked, "relative": relative}
    return OpSpec(
        kind="log_band_power",
        init=StreamShape.of,
        step=partial(_step, **kw),
        infer_info=partial(_infer_info, **kw),
        params=MappingProxyType({"bands": {n: (lo, hi) for n, lo, hi in checked}, "relative": relative}),
        step_batch=partial(_step_batch, **kw),
    )


__all__ = ["StreamShape", "log_band_power"]
