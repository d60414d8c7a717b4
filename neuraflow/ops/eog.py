"""Ocular artifact removal by regression: :func:`eog_regression` and :func:`fit_eog_regression`.

``y = x - B @ eog`` on the non-EOG channels (EOG channels pass unchanged);
``B`` (n_targets, n_eog) is the centred least-squares fit of
:func:`fit_eog_regression` -- the same estimator as
:class:`mne.preprocessing.EOGRegression` -- either given or fitted on the
first ``calibration_s`` seconds of the stream (passed through unchanged
meanwhile). The op is causal and gives the same samples whatever the chunking.

NaN policy: calibration samples holding a non-finite value on any channel are
left out of the fit (the optional ``fit_band`` filter restarts from rest on a
poisoned channel), so a NaN burst during calibration cannot leave ``B``
non-finite; afterwards each sample is corrected on its own, so a burst stays
in the samples that hold it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType

import numpy as np
from scipy import signal

from neuraflow._validate import check_positive
from neuraflow.chunk import Chunk, StreamInfo
from neuraflow.errors import PipelineDefinitionError, StreamMismatchError
from neuraflow.ops._artifact_utils import (
    FRONTAL_PROXIES,
    butter_sos,
    check_names,
    pick_rows,
    sosfilt_rows,
    with_data,
    zero_zi,
)
from neuraflow.ops.base import OpSpec, check_same_stream
from neuraflow.ops.filters import _readonly, reset_nonfinite

__all__ = ["EogState", "eog_regression", "fit_eog_regression"]


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
        x = signal.sosfilt(butter_sos("bandpass", fit_band, sfreq, 2), x, axis=-1)
    e = x[eog] - x[eog].mean(axis=1, keepdims=True)
    y = x[other] - x[other].mean(axis=1, keepdims=True)
    return np.linalg.solve(e @ e.T, e @ y.T).T


@dataclass(frozen=True, eq=False)
class EogState:
    """Regression state of one stream (arrays read-only).

    Parameters
    ----------
    eog, other : tuple of int
        Rows of the EOG channels and of the channels corrected.
    coef : ndarray, shape (n_other, n_eog), or None
        The coefficients, ``None`` while calibrating.
    n_left : int
        Calibration samples still to consume.
    shift : ndarray, shape (n_channels,)
        Subtracted before summing (precision): the first sample, 0 where non-finite.
    sums : (float, ndarray, ndarray)
        Finite calibration samples summed: their count, sum of rows (n_channels,)
        and sum of outer products (n_channels, n_channels).
    sfreq : float
        The stream's rate, Hz; a chunk at another rate is refused.
    band_sos, band_zi : ndarray or None
        ``fit_band`` filter, shape (n_sections, 6), and its delay line (n_sections, n_channels, 2).
    """

    eog: tuple[int, ...]
    other: tuple[int, ...]
    coef: np.ndarray | None
    n_left: int
    shift: np.ndarray
    sums: tuple[float, np.ndarray, np.ndarray]
    sfreq: float
    band_sos: np.ndarray | None = None
    band_zi: np.ndarray | None = None


def _eog_info(info: StreamInfo, *, names, proxies) -> StreamInfo:
    eog = pick_rows(info, names, proxies, "eog_channels")
    if len(eog) == info.n_channels:
        raise ValueError("eog_regression needs at least one channel that is not an EOG channel.")
    return info


def _eog_init(first: Chunk, *, names, proxies, calibration_s, coef, fit_band) -> EogState:
    eog = pick_rows(first.info, names, proxies, "eog_channels")
    other = tuple(i for i in range(first.n_channels) if i not in eog)
    n = first.n_channels
    if coef is not None and coef.shape != (len(other), len(eog)):
        raise StreamMismatchError(f"eog_regression: coef has shape {coef.shape}, expected {(len(other), len(eog))}.")
    band = None if fit_band is None else _readonly(butter_sos("bandpass", fit_band, first.sfreq, 2))
    shift = np.zeros(n)  # the band-passed data has no offset
    if band is None and first.n_samples:
        shift = np.nan_to_num(first.data[:, 0].astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    return EogState(
        eog=eog, other=other, coef=coef, n_left=0 if coef is not None else int(round(calibration_s * first.sfreq)),
        shift=_readonly(shift), sums=(0.0, _readonly(np.zeros(n)), _readonly(np.zeros((n, n)))), sfreq=first.sfreq,
        band_sos=band, band_zi=None if band is None else _readonly(zero_zi(band, n)),
    )


def _eog_fit(state: EogState, sums: tuple[float, np.ndarray, np.ndarray]) -> np.ndarray:
    """Coefficients (n_other, n_eog) from the calibration sums (zeros when no finite sample came)."""
    n, s1, s2 = sums
    cov = s2 - np.outer(s1, s1) / max(n, 1.0)
    e, o = list(state.eog), list(state.other)
    return _readonly(np.linalg.lstsq(cov[np.ix_(e, e)], cov[np.ix_(e, o)], rcond=None)[0].T)


def _eog_calibrate(state: EogState, x: np.ndarray) -> EogState:
    """Add the calibration samples ``x`` (n_channels, k <= n_left) to the sums; fit once they are all in."""
    c = x - state.shift[:, None]
    zi = state.band_zi
    if state.band_sos is not None:
        c, zi = sosfilt_rows(state.band_sos, c, zi)
        (zi,), _ = reset_nonfinite(zi)
        zi = _readonly(zi)
    c = c[:, np.isfinite(c).all(axis=0)]  # a sample with a non-finite value says nothing of the regression
    n, s1, s2 = state.sums
    sums = (n + c.shape[1], _readonly(s1 + c.sum(axis=1)), _readonly(s2 + c @ c.T))
    n_left = state.n_left - x.shape[1]
    coef = _eog_fit(state, sums) if n_left == 0 else None
    return EogState(eog=state.eog, other=state.other, coef=coef, n_left=n_left, shift=state.shift, sums=sums,
                    sfreq=state.sfreq, band_sos=state.band_sos, band_zi=zi)


def _eog_step(state: EogState, chunk: Chunk) -> tuple[EogState, list[Chunk]]:
    check_same_stream("ops.eog_regression", chunk, sfreq=state.sfreq, n_channels=len(state.shift))
    if chunk.n_samples == 0:
        return state, [chunk]
    x = chunk.data.astype(np.float64)
    y = x.copy()
    k = 0
    if state.coef is None:
        k = min(state.n_left, x.shape[1])
        state = _eog_calibrate(state, x[:, :k])
    if state.coef is not None and k < x.shape[1]:
        y[list(state.other), k:] -= state.coef @ x[list(state.eog), k:]
    return state, [with_data(chunk, y)]


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
        (output = input until then; samples with a non-finite value are left
        out of the fit). Ignored when ``coef`` is given.
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
    names = check_names(where, "eog_channels", eog_channels)
    prox = check_names(where, "proxies", proxies) or ()
    cal = check_positive(where, "calibration_s", calibration_s)
    if coef is not None:
        coef = np.array(coef, dtype=np.float64)
        if coef.ndim != 2 or not np.isfinite(coef).all():
            raise PipelineDefinitionError(f"{where}: coef must be a finite 2-D array (n_other, n_eog).")
        _readonly(coef)
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
