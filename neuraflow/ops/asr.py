"""Artifact Subspace Reconstruction (ASR): :func:`fit_asr` (calibration) and the :func:`asr` op.

Follows ``asr_calibrate``/``asr_process`` of clean_rawdata (Kothe & Jung;
Mullen et al. 2015) as ported by asrpy, with these exact choices:

Calibration on a clean, high-passed segment ``X`` (n_channels, n_samples):

1. ``Xs = lfilter(b, a, X)``: optional spectral shaping (``shaping=(b, a)``,
   e.g. clean_rawdata's Yule-Walker filter); default none (``Xs = X``).
2. Block covariances of ``Xs`` over blocks of ``blocksize`` samples; their
   geometric median (Vardi-Zhang) is the calibration covariance ``C``.
3. ``M = sqrtm(C)``; ``V`` its eigenvectors (ascending eigenvalues).
4. RMS of each component ``V.T @ Xs`` in windows of ``window_s`` seconds
   (overlap ``window_overlap``); a truncated generalised Gaussian is fitted to
   it (``fit_eeg_distribution``); ``T = diag(mu + cutoff * sigma) @ V.T``.

Online, with ``N = window_s * sfreq`` and lookahead ``P = lookahead_s * sfreq``:
the window covariance ``C_g`` of the last N shaped samples is eigendecomposed
at samples ``g = 0, s-1, 2s-1, ...`` (``s = step``); components with variance
``D_k > ||(T V)_k||^2`` are artifact (at most ``max_dims`` of them; the
smallest ``n - max_dims`` are always kept) and ``R = M pinv(keep * V^T M) V^T``
reconstructs them from the rest. Raw sample ``g - P`` onwards gets ``R``,
raised-cosine blended from the previous ``R`` since the previous update. The
output is therefore delayed by ``P`` samples plus up to ``s - 1`` pending
samples; output timestamps are the input ones. Not implemented: clean_rawdata's
``clean_windows`` pre-selection of calibration data and Riemannian ASR.

NaN policy: a non-finite input sample counts as 0 in the window statistics
(and the shaping filter), so a NaN burst cannot poison the covariance; the
output samples that held it stay non-finite (reconstruction mixes channels, so
on every channel while it is active).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from types import MappingProxyType

import numpy as np
from scipy import linalg, signal
from scipy.special import gamma, gammaincinv

from neuraflow._validate import check_int, check_positive
from neuraflow.chunk import Chunk, StreamInfo
from neuraflow.errors import PipelineDefinitionError
from neuraflow.ops.base import OpSpec, check_same_stream

__all__ = ["AsrCalibration", "AsrState", "asr", "fit_asr", "fit_eeg_distribution"]


def _ro(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


@dataclass(frozen=True, eq=False)
class AsrCalibration:
    """Result of :func:`fit_asr`.

    Parameters
    ----------
    M : ndarray, shape (n_channels, n_channels)
        Mixing matrix, ``sqrtm`` of the robust calibration covariance (V^2 units: V).
    T : ndarray, shape (n_channels, n_channels)
        Threshold matrix ``diag(mu + cutoff * sigma) @ V.T``.
    sfreq : float
        Rate of the calibration data, Hz.
    window_s : float
        Window length the thresholds were fitted for, seconds.
    shaping : tuple of ndarray or None
        ``(b, a)`` of the spectral shaping filter, or ``None``.
    """

    M: np.ndarray
    T: np.ndarray
    sfreq: float
    window_s: float
    shaping: tuple[np.ndarray, np.ndarray] | None = None


def fit_eeg_distribution(
    values: np.ndarray,
    min_clean_fraction: float = 0.25,
    max_dropout_fraction: float = 0.1,
    quantiles: tuple[float, float] = (0.022, 0.6),
    step: float = 0.01,
    shapes: np.ndarray | None = None,
) -> tuple[float, float]:
    """Mean and SD of the clean part of window RMS ``values`` (clean_rawdata's grid search).

    Fits a truncated generalised Gaussian (shape in ``shapes``, default 1.7..3.35)
    between quantile bounds by minimising a KL divergence over the lower cut
    (up to ``max_dropout_fraction``) and the fitted width (down to
    ``min_clean_fraction`` of the interval). Needs >= 20 values.

    Returns
    -------
    mu, sigma : float
        In the units of ``values``.
    """
    x = np.sort(np.asarray(values, dtype=np.float64))
    n = x.size
    if n < 20:
        raise ValueError(f"fit_eeg_distribution needs >= 20 window values, got {n}; use a longer calibration.")
    shapes = np.arange(1.7, 3.5, 0.15) if shapes is None else np.asarray(shapes)
    q = np.asarray(quantiles)
    zb = [np.sign(q - 0.5) * gammaincinv(1 / b, np.sign(q - 0.5) * (2 * q - 1)) ** (1 / b) for b in shapes]
    rescale = [b / (2 * gamma(1 / b)) for b in shapes]
    max_width = float(np.diff(q)[0])
    cols = np.round(n * np.arange(q.min(), q.min() + max_dropout_fraction + step * 1e-9, step)).astype(int)
    rows = np.arange(int(np.round(n * max_width)))
    grid = x[rows[:, None] + cols[None, :]]
    base = grid[0]
    grid = grid - base
    best = (np.inf, None, None)
    for m in np.round(n * np.arange(max_width, min_clean_fraction * max_width, -step)).astype(int):
        nbins = int(np.round(3 * np.log2(1 + m / 2)))
        h = grid[:m] * (nbins / grid[m - 1])
        hist = np.stack([np.histogram(h[:, i], bins=np.arange(nbins + 1))[0] for i in range(h.shape[1])], axis=1)
        logq = np.log(hist + 0.01)
        for k, b in enumerate(shapes):
            centres = zb[k][0] + np.arange(0.5, nbins + 0.5) / nbins * np.diff(zb[k])
            p = np.exp(-np.abs(centres) ** b) * rescale[k]
            p /= p.sum()
            kl = np.sum(p * (np.log(p) - logq.T), axis=1) + np.log(m)
            i = int(np.argmin(kl))
            if kl[i] < best[0]:
                best = (kl[i], (b, zb[k]), (base[i], base[i] + grid[m - 1, i]))
    _, (b, bounds), (lo, hi) = best
    alpha = (hi - lo) / float(np.diff(bounds)[0])
    mu = lo - bounds[0] * alpha
    return float(mu), float(np.sqrt(alpha**2 * gamma(3 / b) / gamma(1 / b)))


def _geometric_median(x: np.ndarray, tol: float = 1e-5, max_iter: int = 500) -> np.ndarray:
    """Vardi-Zhang geometric median of the rows of ``x``."""
    y = x.mean(axis=0)
    for _ in range(max_iter):
        d = np.linalg.norm(x - y, axis=1)
        nz = d != 0
        w = 1.0 / d[nz]
        t = (w[:, None] * x[nz]).sum(axis=0) / w.sum()
        zeros = x.shape[0] - int(nz.sum())
        if zeros == 0:
            y1 = t
        elif zeros == x.shape[0]:
            return y
        else:
            r = np.linalg.norm((t - y) * w.sum())
            rinv = 0.0 if r == 0 else zeros / r
            y1 = max(0.0, 1 - rinv) * t + min(1.0, rinv) * y
        if np.linalg.norm(y - y1) < tol:
            return y1
        y = y1
    return y


def fit_asr(
    data: np.ndarray,
    sfreq: float,
    *,
    cutoff: float = 20.0,
    window_s: float = 0.5,
    window_overlap: float = 0.66,
    blocksize: int = 100,
    shaping: tuple[np.ndarray, np.ndarray] | None = None,
) -> AsrCalibration:
    """Calibrate ASR on a clean, zero-mean (high-passed) segment.

    Parameters
    ----------
    data : ndarray, shape (n_channels, n_samples)
        Clean calibration data, volts; ideally >= 30 s (>= 20 windows required).
    sfreq : float
        Hz.
    cutoff : float
        Rejection threshold in SDs of the clean component RMS distribution (> 0).
    window_s, window_overlap : float
        Threshold window length (s) and fractional overlap in [0, 1).
    blocksize : int
        Samples per block of the robust covariance (>= 1).
    shaping : (b, a) or None
        Spectral shaping IIR applied to statistics only.

    Returns
    -------
    AsrCalibration
    """
    where = "ops.fit_asr"
    x = np.asarray(data, dtype=np.float64)
    if x.ndim != 2 or not np.isfinite(x).all():
        raise ValueError(f"{where}: data must be a finite 2-D array (n_channels, n_samples), got {x.shape}.")
    sfreq = check_positive(where, "sfreq", sfreq)
    cutoff = check_positive(where, "cutoff", cutoff)
    window_s = check_positive(where, "window_s", window_s)
    blocksize = check_int(where, "blocksize", blocksize)
    if not 0.0 <= window_overlap < 1.0:
        raise PipelineDefinitionError(f"{where}: window_overlap={window_overlap!r} must be in [0, 1).")
    nc, ns = x.shape
    if shaping is not None:
        shaping = (np.asarray(shaping[0], np.float64), np.asarray(shaping[1], np.float64))
        x = signal.lfilter(shaping[0], shaping[1], x, axis=-1)
    # block covariances (last block padded with the last sample, as clean_rawdata/asrpy)
    starts = np.arange(0, ns - 1, blocksize)
    idx = np.minimum(ns - 1, starts[:, None] + np.arange(blocksize)[None, :])
    blocks = x[:, idx]  # (nc, n_blocks, blocksize)
    u = np.einsum("ibk,jbk->bij", blocks, blocks).reshape(len(starts), nc * nc) / blocksize
    m = np.real(linalg.sqrtm(np.real(_geometric_median(u).reshape(nc, nc))))
    d, v = np.linalg.eigh(m)
    v = v[:, np.argsort(d)]
    n = int(np.round(window_s * sfreq))
    comp = (v.T @ x) ** 2
    offsets = np.arange(0, ns - n, np.round(n * (1 - window_overlap))).astype(int)
    csum = np.concatenate([np.zeros((nc, 1)), np.cumsum(comp, axis=1)], axis=1)
    rms = np.sqrt((csum[:, offsets + n] - csum[:, offsets]) / n)
    stats = np.array([fit_eeg_distribution(r) for r in rms])
    t = np.diag(stats[:, 0] + cutoff * stats[:, 1]) @ v.T
    return AsrCalibration(_ro(m), _ro(t), sfreq, window_s, shaping)


@dataclass(frozen=True, eq=False)
class AsrState:
    """Online ASR state (arrays read-only).

    Parameters
    ----------
    zi : ndarray, shape (n_channels, order) or (n_channels, 0)
        Shaping-filter delay line.
    shaped : ndarray, shape (n_channels, N)
        The last N shaped samples (zeros before the stream starts).
    pending : ndarray, shape (n_channels, k)
        Raw samples not reconstructed yet: input samples ``max(0, next_g) .. n_seen - 1``.
    pending_t0_s : float
        Device time of ``pending[:, 0]``.
    n_seen : int
        Input samples consumed.
    next_g : int
        Input index of the first sample the next update blends (starts at ``-P``).
    last_r : ndarray, shape (n_channels, n_channels)
        Reconstruction matrix of the last update.
    last_trivial : bool
        Whether it was the identity.
    sfreq : float
        Rate of the stream, Hz; a chunk at another rate is refused.
    """

    zi: np.ndarray
    shaped: np.ndarray
    pending: np.ndarray
    pending_t0_s: float
    n_seen: int
    next_g: int
    last_r: np.ndarray
    last_trivial: bool
    sfreq: float


def _asr_init(first: Chunk, *, cal: AsrCalibration, lookahead: int) -> AsrState:
    _asr_info(first.info, cal=cal)
    nc = first.n_channels
    order = 0 if cal.shaping is None else max(len(cal.shaping[0]), len(cal.shaping[1])) - 1
    n = int(np.round(cal.window_s * first.sfreq))
    return AsrState(_ro(np.zeros((nc, order))), _ro(np.zeros((nc, n))), _ro(np.zeros((nc, 0))),
                    first.t0_s, 0, -lookahead, _ro(np.eye(nc)), True, first.sfreq)


def _reconstruction(cov: np.ndarray, cal: AsrCalibration, max_dims: int) -> tuple[np.ndarray, bool]:
    d, v = np.linalg.eigh(cov)
    nc = cov.shape[0]
    keep = (d < np.sum((cal.T @ v) ** 2, axis=0)) | (np.arange(nc) + 1 < nc - max_dims)
    if keep.all():
        return np.eye(nc), True
    return np.real(cal.M @ np.linalg.pinv(keep[:, None] * (v.T @ cal.M)) @ v.T), False


def _asr_step(state: AsrState, chunk: Chunk, *, cal, step, lookahead, max_dims) -> tuple[AsrState, list[Chunk]]:
    check_same_stream("ops.asr", chunk, sfreq=state.sfreq, n_channels=state.shaped.shape[0])
    if chunk.n_samples == 0:
        return state, []
    x = chunk.data.astype(np.float64)
    y = np.where(np.isfinite(x), x, 0.0)  # NaN policy: statistics see a non-finite sample as 0
    zi = state.zi
    if cal.shaping is not None:
        y, zi = signal.lfilter(cal.shaping[0], cal.shaping[1], y, axis=-1, zi=zi)
    n = state.shaped.shape[1]
    hist = np.concatenate([state.shaped, y], axis=1)  # hist[:, n + j]: input sample n_seen + j
    out = np.concatenate([state.pending, x], axis=1)
    start = max(0, state.next_g)  # input index of out[:, 0]
    g0, g1 = state.n_seen, state.n_seen + x.shape[1]
    next_g, last_r, last_trivial = state.next_g, state.last_r, state.last_trivial
    for g in range(g0, g1):
        if g != 0 and (g + 1) % step:
            continue
        w = hist[:, g - g0 + 1 : g - g0 + n + 1]
        r, trivial = _reconstruction(w @ w.T / n, cal, max_dims)
        stop = g - lookahead + 1  # samples < stop are final after this update
        if stop > next_g and (not trivial or not last_trivial) and stop > start:
            blend = (1 - np.cos(np.pi * np.arange(1, stop - next_g + 1) / (stop - next_g))) / 2
            lo = max(next_g, start)
            seg = out[:, lo - start : stop - start]
            b = blend[lo - next_g :]
            out[:, lo - start : stop - start] = b * (r @ seg) + (1 - b) * (last_r @ seg)
        next_g = max(next_g, stop)
        last_r, last_trivial = r, trivial
    done = max(0, next_g - start)
    sfreq = chunk.sfreq
    new = AsrState(_ro(np.asarray(zi)), _ro(hist[:, hist.shape[1] - n :].copy()), _ro(out[:, done:].copy()),
                   state.pending_t0_s + done / sfreq, g1, next_g, _ro(np.asarray(last_r)), bool(last_trivial),
                   state.sfreq)
    if done == 0:
        return new, []
    return new, [Chunk(out[:, :done].astype(np.float32), state.pending_t0_s, chunk.info, chunk.seq,
                       chunk.recv_s, chunk.meta)]


def _asr_info(info: StreamInfo, *, cal: AsrCalibration) -> StreamInfo:
    if cal.M.shape[0] != info.n_channels:
        raise ValueError(f"asr calibrated for {cal.M.shape[0]} channels, the stream has {info.n_channels}.")
    if abs(cal.sfreq - info.sfreq) > 1e-9 * info.sfreq:
        raise ValueError(f"asr calibrated at {cal.sfreq} Hz, the stream runs at {info.sfreq} Hz.")
    return info


def asr(
    calibration: AsrCalibration,
    *,
    step: int = 32,
    lookahead_s: float | None = None,
    max_dims: float = 0.66,
) -> OpSpec:
    """Artifact Subspace Reconstruction, online, from a :func:`fit_asr` calibration.

    Parameters
    ----------
    calibration : AsrCalibration
        From :func:`fit_asr` on a clean segment of the same montage and rate
        (cutoff, window length and shaping filter are fixed there).
    step : int
        Samples between two reconstruction updates (>= 1; asrpy's ``stepsize``).
    lookahead_s : float or None
        Lookahead in seconds, ``0 <= lookahead_s <= window_s``; ``None``: ``window_s / 2``.
    max_dims : float
        Most artifact components removed per window: a fraction of the
        channels if < 1 (rounded), else a count.

    Returns
    -------
    OpSpec
        Same channels/rate/units. Output is delayed by ``lookahead`` plus up
        to ``step - 1`` samples; timestamps are the input samples' own.

    Examples
    --------
    >>> import numpy as np
    >>> from neuraflow.ops import asr, fit_asr
    >>> cal = fit_asr(1e-5 * np.random.default_rng(0).standard_normal((4, 7500)), 250.0)
    >>> asr(cal).params["lookahead_s"]
    0.25
    """
    where = "ops.asr"
    if not isinstance(calibration, AsrCalibration):
        raise PipelineDefinitionError(f"{where}: calibration must be an AsrCalibration from fit_asr().")
    step = check_int(where, "step", step)
    look = calibration.window_s / 2 if lookahead_s is None else float(lookahead_s)
    if not 0.0 <= look <= calibration.window_s:
        raise PipelineDefinitionError(f"{where}: lookahead_s={lookahead_s!r} must be in [0, window_s].")
    md = check_positive(where, "max_dims", max_dims)
    nc = calibration.M.shape[0]
    dims = int(np.round(nc * md)) if md < 1 else int(md)
    p = int(np.round(look * calibration.sfreq))
    return OpSpec(
        kind="asr",
        init=partial(_asr_init, cal=calibration, lookahead=p),
        step=partial(_asr_step, cal=calibration, step=step, lookahead=p, max_dims=dims),
        infer_info=partial(_asr_info, cal=calibration),
        params=MappingProxyType({"n_channels": nc, "sfreq": calibration.sfreq, "window_s": calibration.window_s,
                                 "step": step, "lookahead_s": look, "max_dims": dims}),
    )
