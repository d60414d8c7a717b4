"""Time-domain features of windows: moments, line length, zero crossings, Hjorth, entropies.

One op, :func:`temporal_features`, computes any subset of the features below for
every channel of a window chunk (a window feature: see :mod:`neuraflow.ops.spectra`
for the input/output stream convention). Definitions follow scipy.stats and
antropy so the values can be compared with theirs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import signal

from neuraflow._validate import check_int, check_option, check_positive, suggest
from neuraflow.chunk import StreamInfo
from neuraflow.errors import PipelineDefinitionError
from neuraflow.ops.base import OpSpec
from neuraflow.ops.spectra import WindowFeature, window_feature_op

#: Feature name -> output unit (``"{u}"`` is the input channel's unit).
FEATURES: dict[str, str] = {
    "mean": "{u}", "variance": "{u}^2", "rms": "{u}", "skewness": "1", "kurtosis": "1", "line_length": "{u}",
    "zero_crossings": "count", "hjorth_activity": "{u}^2", "hjorth_mobility": "1/sample",
    "hjorth_complexity": "1", "sample_entropy": "nat", "permutation_entropy": "bit", "spectral_entropy": "bit",
}


def _moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d = x - x.mean(axis=-1, keepdims=True)
    m2 = (d**2).mean(axis=-1)
    return m2, (d**3).mean(axis=-1), (d**4).mean(axis=-1)


def _var(a: np.ndarray) -> np.ndarray:
    """Population variance over the last axis; NaN (no warning) for an empty axis."""
    return a.var(axis=-1) if a.shape[-1] else np.full(a.shape[:-1], np.nan)


def sample_entropy(x: np.ndarray, m: int, r: float) -> np.ndarray:
    """Sample entropy of ``x`` (..., n) -> (...), tolerance ``r * std(x)`` (Chebyshev, strict ``<``).

    Counts pairs ``i < j`` among the first ``n - m`` templates (as antropy):
    ``-ln(A / B)``; NaN when ``B == 0``, ``inf`` when only ``A == 0``. Loops over
    the ``n - m - 1`` lags, each vectorised over all leading axes.
    """
    n = x.shape[-1]
    tol = r * x.std(axis=-1)[..., None]
    a = np.zeros(x.shape[:-1])
    b = np.zeros(x.shape[:-1])
    for k in range(1, n - m):
        close = np.abs(x[..., k:] - x[..., :-k]) < tol  # (..., n - k)
        run = np.ones(close.shape[:-1] + (n - m - k,), dtype=bool)
        for lag in range(m):
            run &= close[..., lag : lag + n - m - k]
        b += run.sum(axis=-1)
        a += (run & close[..., m : m + n - m - k]).sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, -np.log(a / np.where(b > 0, b, 1.0)), np.nan)


def permutation_entropy(x: np.ndarray, order: int, delay: int, normalize: bool) -> np.ndarray:
    """Shannon entropy (bits) of the ordinal patterns of ``x`` (..., n) -> (...) (antropy's definition).

    Patterns are coded by their Lehmer code (ties: the earlier sample ranks lower,
    as a stable argsort); counted with one ``bincount`` over all rows.
    """
    n_emb = x.shape[-1] - (order - 1) * delay
    lead = x.shape[:-1]
    if n_emb < 1:
        return np.full(lead, np.nan)
    emb = np.stack([x[..., i * delay : i * delay + n_emb] for i in range(order)], axis=-1)
    code = np.zeros(emb.shape[:-1], dtype=np.int64)
    for i in range(order - 1):
        smaller = (emb[..., i + 1 :] < emb[..., i : i + 1]).sum(axis=-1)
        code += smaller * math.factorial(order - 1 - i)
    n_codes = math.factorial(order)
    rows = code.reshape(-1, n_emb) + (np.arange(int(np.prod(lead, dtype=int)))[:, None] * n_codes)
    p = np.bincount(rows.ravel(), minlength=rows.shape[0] * n_codes).reshape(-1, n_codes) / n_emb
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log2(p), 0.0).sum(axis=-1).reshape(lead)
    return h / np.log2(n_codes) if normalize else h


def spectral_entropy(x: np.ndarray, normalize: bool) -> np.ndarray:
    """Shannon entropy (bits) of the normalised boxcar periodogram (antropy ``method="fft"``)."""
    _, psd = signal.periodogram(x, axis=-1)
    p = psd / psd.sum(axis=-1, keepdims=True)
    h = -np.where(p > 0, p * np.log2(np.where(p > 0, p, 1.0)), 0.0).sum(axis=-1)
    h = np.where(np.isfinite(p).all(axis=-1), h, np.nan)
    return h / np.log2(psd.shape[-1]) if normalize else h


@dataclass(frozen=True)
class _Temporal(WindowFeature):
    names: tuple[str, ...]
    m: int
    r: float
    order: int
    delay: int
    normalize: bool

    def compute(self, x: np.ndarray, sfreq: float, channels: tuple[str, ...]) -> np.ndarray:
        m2, m3, m4 = _moments(x)
        dx = np.diff(x, axis=-1)
        out = {}
        for name in self.names:
            if name == "mean":
                v = x.mean(axis=-1)
            elif name in ("variance", "hjorth_activity"):
                v = m2
            elif name == "rms":
                v = np.sqrt((x**2).mean(axis=-1))
            elif name == "skewness":
                v = m3 / m2**1.5
            elif name == "kurtosis":
                v = m4 / m2**2 - 3.0
            elif name == "line_length":
                v = np.abs(dx).sum(axis=-1)
            elif name == "zero_crossings":
                v = np.diff(np.signbit(x), axis=-1).sum(axis=-1).astype(np.float64)
            elif name == "hjorth_mobility":
                v = np.sqrt(_var(dx) / m2)
            elif name == "hjorth_complexity":
                ddx = np.diff(dx, axis=-1)
                v = np.sqrt(_var(ddx) / _var(dx)) / np.sqrt(_var(dx) / m2)
            elif name == "sample_entropy":
                v = sample_entropy(x, self.m, self.r)
            elif name == "permutation_entropy":
                v = permutation_entropy(x, self.order, self.delay, self.normalize)
            else:
                v = spectral_entropy(x, self.normalize)
            out[name] = v
        values = np.stack([out[name] for name in self.names], axis=-1)  # (..., n_channels, n_names)
        # zero crossings and ordinal patterns compare NaN as if it were a number: a channel
        # holding a non-finite sample gets NaN for every feature instead of a plausible value
        values[~np.isfinite(x).all(axis=-1)] = np.nan
        return values.reshape(*x.shape[:-2], -1)

    def labels(self, info: StreamInfo) -> tuple[tuple[str, ...], tuple[str, ...]]:
        channels = tuple(f"{ch}:{name}" for ch in info.channels for name in self.names)
        units = []
        for u in info.units:
            for name in self.names:
                unit = "1" if self.normalize and name.endswith("_entropy") and name != "sample_entropy" else None
                units.append(unit or FEATURES[name].format(u=u or "1"))
        return channels, tuple(units)


def temporal_features(names: Sequence[str], *, m: int = 2, r: float = 0.2, order: int = 3, delay: int = 1,
                      normalize: bool = False) -> OpSpec:
    """Time-domain features of each channel of a window.

    Parameters
    ----------
    names : sequence of str
        Features to emit, in this order, from: ``"mean"``; ``"variance"`` (``ddof=0``);
        ``"rms"``; ``"skewness"`` and ``"kurtosis"`` (``scipy.stats.skew`` / ``kurtosis``
        with ``bias=True``; kurtosis is Fisher's excess); ``"line_length"`` (``sum |diff x|``);
        ``"zero_crossings"`` (sign changes, ``antropy.num_zerocross``); ``"hjorth_activity"``
        (variance), ``"hjorth_mobility"`` (``sqrt(var(dx) / var(x))``, per sample) and
        ``"hjorth_complexity"`` (``mobility(dx) / mobility(x)``) as ``antropy.hjorth_params``;
        ``"sample_entropy"`` (embedding ``m``, tolerance ``r * std(x)``, Chebyshev, in nats,
        as ``antropy.sample_entropy``); ``"permutation_entropy"`` (``order``, ``delay``, bits,
        as ``antropy.perm_entropy``); ``"spectral_entropy"`` (bits of the normalised boxcar
        periodogram, as ``antropy.spectral_entropy(method="fft")``).
    m : int
        Sample-entropy embedding dimension (>= 1).
    r : float
        Sample-entropy tolerance as a fraction of the window's standard deviation (> 0).
    order : int
        Permutation-entropy order, 2..8.
    delay : int
        Permutation-entropy delay in samples (>= 1).
    normalize : bool
        Divide permutation entropy by ``log2(order!)`` and spectral entropy by ``log2(n_bins)``.

    Returns
    -------
    OpSpec
        Output ``(n_channels * n_names, 1)``, channels ``"{ch}:{name}"`` (channel-major).
        Undefined values (moments of a constant window, entropies of too short a window,
        every feature of a channel holding a NaN or inf sample in the window) are NaN;
        sample entropy is ``inf`` when no ``m + 1`` template matches.

    Raises
    ------
    PipelineDefinitionError
        If ``names`` is empty, repeats or holds an unknown name, or a parameter is out of range.

    Examples
    --------
    >>> import numpy as np
    >>> from neuraflow.ops import run_offline, temporal_features
    >>> from neuraflow.testing import chunks_from_array, make_info
    >>> x = np.array([[1.0, -1.0, 1.0, -1.0]])
    >>> (out,) = run_offline(temporal_features(["mean", "rms", "zero_crossings"]),
    ...                      chunks_from_array(x, make_info(1, 250.0), [4]))
    >>> out.channels, out.data[:, 0].tolist()
    (('ch0:mean', 'ch0:rms', 'ch0:zero_crossings'), [0.0, 1.0, 3.0])
    """
    where = "ops.temporal_features"
    if isinstance(names, str) or not isinstance(names, Sequence) or not names:
        raise PipelineDefinitionError(f"{where}: names={names!r} must be a non-empty sequence of feature names.")
    for name in names:
        if name not in FEATURES:
            raise PipelineDefinitionError(
                f"{where}: names contains {name!r}, not one of {tuple(FEATURES)}.{suggest(str(name), FEATURES)}")
    if len(set(names)) != len(names):
        raise PipelineDefinitionError(f"{where}: names={tuple(names)!r} has duplicates.")
    m = check_int(where, "m", m)
    r = check_positive(where, "r", r)
    order = check_int(where, "order", order, minimum=2)
    if order > 8:
        raise PipelineDefinitionError(f"{where}: order={order!r} must be <= 8 (8! patterns).")
    delay = check_int(where, "delay", delay)
    check_option(where, "normalize", normalize, (True, False))
    params = {"names": tuple(names), "m": m, "r": r, "order": order, "delay": delay, "normalize": normalize}
    return window_feature_op("temporal_features", _Temporal(tuple(names), m, r, order, delay, bool(normalize)), params)


__all__ = ["FEATURES", "permutation_entropy", "sample_entropy", "spectral_entropy", "temporal_features"]
