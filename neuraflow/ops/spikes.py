"""Streaming spike detection: :func:`threshold_spikes` and :func:`bin_counts`.

:func:`threshold_spikes` turns a (band-passed, e.g. 300-6000 Hz) extracellular
signal into a **spike train** of the same shape and rate: ``1.0`` at the sample
where a spike is detected, ``0.0`` elsewhere. :func:`bin_counts` sums any
signal over fixed bins, so ``threshold_spikes -> bin_counts(0.01)`` gives spike
counts per channel in 10 ms bins, a stream at 100 Hz.

Detection rule (exact, whatever the chunking). Let ``s`` be the signal seen
through the polarity (``-x`` for ``"neg"``, ``x`` for ``"pos"``, ``|x|`` for
``"both"``) and ``thr[n]`` the threshold magnitude in force at absolute sample
``n``. Sample ``n`` is a *crossing* when ``s[n] > thr[n]`` and not
``s[n - 1] > thr[n]`` (``s[-1]`` counts as above: the first sample of a stream
is never a crossing). A crossing is a *spike* when it is at least
``n_ref = max(1, round(refractory_s * sfreq))`` samples after the previous
spike of that channel (greedy, in time order); the last spike index is carried
across chunks, so the refractory period holds across chunk boundaries.

Threshold (``threshold="mad"``): ``thr = k * median(|x|) / 0.6745`` per channel,
estimated on consecutive blocks of ``calibration_s`` seconds aligned on the
absolute sample index (every ``stride``-th sample, ``stride =
ceil(sfreq / 5000)``, so the state holds at most ``5000 * calibration_s``
samples per channel). Until the first block is complete nothing is detected
(chunks carry ``meta["calibrating"] = True``). With ``running=False`` the first
block's estimate is kept for ever; with ``running=True`` every completed block
replaces it (the estimate follows slow drifts of the noise). A number
``threshold=50e-6`` is a fixed magnitude in the signal's units.

Run-time data policy (counted, never silent):

- non-finite input samples never trigger a spike and are left out of the
  noise estimate (``nanmedian`` for that block); each output chunk carries
  ``meta["nonfinite"]``, the number of non-finite input samples;
- a channel whose estimate is zero (flat) or undefined (no finite sample in
  the block) gets no threshold (no detection) until a later block gives one;
  ``meta["no_threshold"]`` is the number of such channels (all channels
  while calibrating);
- a chunk whose channel count or sampling rate differs from the first
  chunk's raises :class:`~neuraflow.errors.StreamMismatchError`.

:func:`bin_counts` propagates a NaN only to the bin that holds it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType

import numpy as np

from neuraflow._validate import check_option, check_positive
from neuraflow.chunk import Chunk, StreamInfo
from neuraflow.errors import PipelineDefinitionError, StreamMismatchError
from neuraflow.ops.base import OpSpec
from neuraflow.ops.filters import _readonly

MAD_TO_SIGMA = 0.6745
"""``median(|x|) / 0.6745`` estimates the standard deviation of Gaussian noise."""
NOISE_RATE_HZ = 5000.0
"""At most this many samples per second and channel enter the noise estimate."""
_NEVER = np.iinfo(np.int64).min // 2


# --- threshold_spikes ------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SpikeState:
    """Detector state of one stream (all arrays read-only, one entry per channel).

    Parameters
    ----------
    sfreq : float
        Rate of the first chunk (later chunks must match).
    n_seen : int
        Samples seen so far (absolute index of the next sample).
    prev : ndarray, float32
        Last sample seen through the polarity (``+inf`` before the first).
    last_spike : ndarray, int64
        Absolute index of the last spike (very negative when none yet).
    thr : ndarray, float32
        Threshold magnitude in force (``inf``: no detection on that channel).
    pieces : tuple of ndarray
        ``|x|`` of the samples of the current noise block seen so far (subsampled).
    n_blocks : int
        Noise blocks completed.
    """

    sfreq: float
    n_seen: int
    prev: np.ndarray
    last_spike: np.ndarray
    thr: np.ndarray
    pieces: tuple[np.ndarray, ...]
    n_blocks: int


@dataclass(frozen=True)
class _Detector:
    mode: str  # "mad" or "fixed"
    k: float
    fixed: float
    refractory_s: float
    polarity: str
    calibration_s: float
    running: bool

    def n_ref(self, sfreq: float) -> int:
        return max(1, round(self.refractory_s * sfreq))

    def n_block(self, sfreq: float) -> int:
        return max(1, round(self.calibration_s * sfreq))


def noise_stride(sfreq: float) -> int:
    """Subsampling step of the noise estimate: ``ceil(sfreq / 5000)``."""
    return max(1, math.ceil(sfreq / NOISE_RATE_HZ - 1e-9))


def _check_stream(chunk: Chunk, n_channels: int, sfreq: float, where: str) -> None:
    if chunk.n_channels != n_channels:
        raise StreamMismatchError(
            f"{where}: stream {chunk.stream_id!r} chunk has {chunk.n_channels} channels, "
            f"the op was initialised with {n_channels}."
        )
    if chunk.sfreq != sfreq:
        raise StreamMismatchError(
            f"{where}: stream {chunk.stream_id!r} changed rate mid-stream: sfreq={chunk.sfreq!r} Hz, "
            f"the op was initialised at {sfreq!r} Hz."
        )


def _spike_init(first: Chunk, *, det: _Detector) -> SpikeState:
    n = first.n_channels
    thr_value = det.fixed if det.mode == "fixed" else np.inf
    return SpikeState(
        sfreq=first.sfreq,
        n_seen=0,
        prev=_readonly(np.full(n, np.inf, np.float32)),
        last_spike=_readonly(np.full(n, _NEVER, np.int64)),
        thr=_readonly(np.full(n, thr_value, np.float32)),
        pieces=(),
        n_blocks=0,
    )


def _polar(x: np.ndarray, polarity: str) -> np.ndarray:
    if polarity == "neg":
        return np.negative(x)
    if polarity == "pos":
        return x
    return np.abs(x)


def _estimate(pieces: tuple[np.ndarray, ...], k: float) -> np.ndarray:
    block = np.concatenate(pieces, axis=1) if len(pieces) > 1 else pieces[0]
    if np.isfinite(block).all():
        med = np.median(block, axis=1)
    else:
        block = np.where(np.isfinite(block), block, np.nan)
        with np.errstate(all="ignore"), _quiet():
            med = np.nanmedian(block, axis=1)
    thr = (k / MAD_TO_SIGMA) * med.astype(np.float64)
    thr = np.where(np.isfinite(thr) & (thr > 0), thr, np.inf)  # flat or all non-finite: no detection
    return _readonly(thr.astype(np.float32))


class _quiet:
    """Silence ``nanmedian``'s all-NaN-slice warning (the policy handles that case)."""

    def __enter__(self):
        import warnings

        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)


def _refractory(ch: np.ndarray, t: np.ndarray, last: np.ndarray, n_ref: int) -> np.ndarray:
    """Greedy refractory filter of crossings ``(ch, t)`` sorted by channel then time; mask of kept ones."""
    gap = np.empty(t.shape, np.int64)
    gap[1:] = t[1:] - t[:-1]
    first = np.ones(t.shape, bool)
    first[1:] = ch[1:] != ch[:-1]
    gap[first] = t[first] - last[ch[first]]
    keep = gap >= n_ref
    if keep.all():
        return keep
    # Rare: a crossing within n_ref of the previous one. Whether it counts depends on whether
    # that one was kept, so resolve those channels in time order.
    for c in np.unique(ch[~keep]):
        idx = np.flatnonzero(ch == c)
        prev = last[c]
        for i in idx:
            keep[i] = t[i] - prev >= n_ref
            if keep[i]:
                prev = t[i]
    return keep


def _spike_step(state: SpikeState, chunk: Chunk, *, det: _Detector, out_info) -> tuple[SpikeState, list[Chunk]]:
    _check_stream(chunk, state.prev.shape[0], state.sfreq, "ops.threshold_spikes")
    n = chunk.n_samples
    if n == 0:
        return state, []
    x = chunk.data
    s = _polar(x, det.polarity)
    finite = np.isfinite(x)
    n_nonfinite = int(x.size - np.count_nonzero(finite))
    n_ref = det.n_ref(state.sfreq)
    estimating = det.mode == "mad"
    nb = det.n_block(state.sfreq)
    stride = noise_stride(state.sfreq)
    thr, pieces, n_blocks = state.thr, state.pieces, state.n_blocks
    last = state.last_spike
    prev = state.prev
    spikes = np.zeros(x.shape, np.float32)
    n_spikes = 0
    pos = 0
    while pos < n:
        at = state.n_seen + pos
        end = n
        if estimating and (det.running or n_blocks == 0):
            end = min(n, (at // nb + 1) * nb - state.n_seen)
        seg = s[:, pos:end]
        # crossing: above now, not above one sample before (both against the threshold in force now)
        above = seg > thr[:, None]
        before = np.empty_like(above)
        before[:, 0] = prev > thr
        before[:, 1:] = above[:, :-1]
        ch, t = np.nonzero(above & ~before)
        if ch.size:
            t_abs = t.astype(np.int64) + at
            keep = _refractory(ch, t_abs, last, n_ref)
            ch, t, t_abs = ch[keep], t[keep], t_abs[keep]
            if ch.size:
                spikes[ch, t + pos] = 1.0
                n_spikes += int(ch.size)
                last = last.copy()
                np.maximum.at(last, ch, t_abs)
                _readonly(last)
        prev = seg[:, -1]
        if estimating and (det.running or n_blocks == 0):
            j0 = (-at) % stride
            if j0 < end - pos:
                pieces = (*pieces, _readonly(np.abs(x[:, pos + j0 : end : stride])))
            if state.n_seen + end == (at // nb + 1) * nb:  # block complete
                thr = _estimate(pieces, det.k)
                pieces, n_blocks = (), n_blocks + 1
        pos = end
    new_state = SpikeState(
        sfreq=state.sfreq,
        n_seen=state.n_seen + n,
        prev=_readonly(np.array(prev, np.float32)),
        last_spike=last,
        thr=thr,
        pieces=pieces,
        n_blocks=n_blocks,
    )
    meta = {
        "n_spikes": n_spikes,
        "nonfinite": n_nonfinite,
        "no_threshold": int(np.count_nonzero(~np.isfinite(thr))),
        "calibrating": estimating and n_blocks == 0,
    }
    return new_state, [Chunk(spikes, chunk.t0_s, out_info(chunk.info), chunk.seq, chunk.recv_s, meta)]


def _spike_info(info: StreamInfo, *, det: _Detector) -> StreamInfo:
    if det.mode == "mad" and det.calibration_s * info.sfreq < 1:
        raise ValueError(
            f"calibration_s={det.calibration_s!r} s holds no sample at sfreq={info.sfreq!r} Hz."
        )
    return info.replace(units=("count",) * info.n_channels)


def threshold_spikes(
    threshold: str | float = "mad",
    k: float = 4.5,
    *,
    refractory_s: float = 0.001,
    polarity: str = "neg",
    calibration_s: float = 0.5,
    running: bool = False,
) -> OpSpec:
    """Threshold-crossing spike detection with carried state (noise estimate, refractory period).

    Parameters
    ----------
    threshold : "mad" or float
        ``"mad"``: ``k * median(|x|) / 0.6745`` per channel, estimated on blocks
        of ``calibration_s`` (see the module notes). A positive number: a fixed
        threshold magnitude in the signal's units (``k`` is then unused).
    k : float
        Threshold in noise standard deviations (> 0), for ``"mad"``.
    refractory_s : float
        Shortest interval between two spikes of one channel, seconds (>= 0;
        at least one sample).
    polarity : {"neg", "pos", "both"}
        Detect downward crossings of ``-thr`` (extracellular spikes), upward
        crossings of ``+thr``, or crossings of ``|x| > thr``.
    calibration_s : float
        Length of a noise-estimation block, seconds (> 0). Nothing is detected
        during the first block.
    running : bool
        Re-estimate the threshold on every block instead of only the first.

    Returns
    -------
    OpSpec
        Input ``(n_channels, n_samples)``; output of the same shape, rate and
        channels: a spike train (``1.0`` at each spike, else ``0.0``), units
        ``"count"``. Each output chunk's ``meta`` holds ``n_spikes``,
        ``nonfinite``, ``no_threshold`` and ``calibrating``.

    Raises
    ------
    PipelineDefinitionError
        If a parameter is invalid.

    Examples
    --------
    >>> import numpy as np
    >>> from neuraflow.ops import run_offline, threshold_spikes
    >>> from neuraflow.testing import chunks_from_array, make_info
    >>> x = np.zeros((1, 100), np.float32); x[0, [20, 22, 60]] = -1.0
    >>> outs = run_offline(threshold_spikes(0.5, refractory_s=0.005), chunks_from_array(x, make_info(1, 1000.0), [21, 79]))
    >>> np.flatnonzero(np.concatenate([o.data for o in outs], axis=1)[0]).tolist()
    [20, 60]
    """
    where = "ops.threshold_spikes"
    if isinstance(threshold, str):
        check_option(where, "threshold", threshold, ("mad",))
        mode, fixed = "mad", math.inf
    else:
        mode, fixed = "fixed", check_positive(where, "threshold", threshold)
    k = check_positive(where, "k", k)
    refractory_s = check_positive(where, "refractory_s", refractory_s, allow_zero=True)
    polarity = check_option(where, "polarity", polarity, ("neg", "pos", "both"))
    calibration_s = check_positive(where, "calibration_s", calibration_s)
    if not isinstance(running, bool):
        raise PipelineDefinitionError(f"{where}: running={running!r} must be True or False.")
    det = _Detector(mode, k, fixed, refractory_s, polarity, calibration_s, running)
    info_fn = partial(_spike_info, det=det)
    return OpSpec(
        kind="threshold_spikes",
        init=partial(_spike_init, det=det),
        step=partial(_spike_step, det=det, out_info=_cached(info_fn)),
        infer_info=info_fn,
        params=MappingProxyType({
            "threshold": threshold if mode == "mad" else fixed, "k": k, "refractory_s": refractory_s,
            "polarity": polarity, "calibration_s": calibration_s, "running": running,
        }),
    )


class _cached:
    """Memoise an ``infer_info`` by input :class:`StreamInfo` (one entry per stream; picklable)."""

    def __init__(self, fn) -> None:
        self.fn = fn
        self.memo: dict[int, tuple[StreamInfo, StreamInfo]] = {}

    def __call__(self, info: StreamInfo) -> StreamInfo:
        hit = self.memo.get(id(info))
        if hit is not None and hit[0] is info:
            return hit[1]
        out = self.fn(info)
        if len(self.memo) > 1024:
            self.memo.clear()
        self.memo[id(info)] = (info, out)
        return out

    def __getstate__(self):
        return {"fn": self.fn, "memo": {}}


# --- bin_counts ------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class BinState:
    """Partial bin of one stream.

    Parameters
    ----------
    sfreq : float
        Input rate of the first chunk.
    n_seen : int
        Input samples seen so far.
    acc : ndarray, shape (n_channels,), float64
        Sum over the samples of the current (incomplete) bin, read-only.
    bin_t0_s : float
        Device time of the current bin's first sample (``0.0`` before any sample).
    """

    sfreq: float
    n_seen: int
    acc: np.ndarray
    bin_t0_s: float


def _bin_len(bin_s: float, sfreq: float) -> int:
    nb = round(bin_s * sfreq)
    if nb < 1 or abs(bin_s * sfreq - nb) > 1e-6 * max(1.0, nb):
        raise ValueError(
            f"bin_s={bin_s!r} s is not a whole number of samples at sfreq={sfreq!r} Hz "
            f"({bin_s * sfreq!r} samples); choose bin_s = n / sfreq."
        )
    return nb


def _bin_init(first: Chunk, *, bin_s: float) -> BinState:
    _bin_len(bin_s, first.sfreq)
    return BinState(first.sfreq, 0, _readonly(np.zeros(first.n_channels)), 0.0)


def _bin_info(info: StreamInfo, *, bin_s: float) -> StreamInfo:
    nb = _bin_len(bin_s, info.sfreq)
    return info.replace(sfreq=info.sfreq / nb)


def _bin_step(state: BinState, chunk: Chunk, *, bin_s: float, out_info) -> tuple[BinState, list[Chunk]]:
    _check_stream(chunk, state.acc.shape[0], state.sfreq, "ops.bin_counts")
    n = chunk.n_samples
    if n == 0:
        return state, []
    nb = _bin_len(bin_s, state.sfreq)
    x = chunk.data
    offset = state.n_seen % nb
    bin_t0 = chunk.t0_s if offset == 0 else state.bin_t0_s
    head = nb - offset  # samples that complete the current bin
    if n < head:
        acc = state.acc + x.sum(axis=1, dtype=np.float64)
        return BinState(state.sfreq, state.n_seen + n, _readonly(acc), bin_t0), []
    m = (n - head) // nb
    tail = head + m * nb
    out = np.empty((x.shape[0], m + 1), np.float64)
    out[:, 0] = state.acc + x[:, :head].sum(axis=1, dtype=np.float64)
    if m:
        out[:, 1:] = x[:, head:tail].reshape(x.shape[0], m, nb).sum(axis=2, dtype=np.float64)
    acc = x[:, tail:].sum(axis=1, dtype=np.float64)
    new_t0 = chunk.t0_s + tail / state.sfreq
    new_state = BinState(state.sfreq, state.n_seen + n, _readonly(acc), new_t0)
    return new_state, [Chunk(out.astype(np.float32), bin_t0, out_info(chunk.info), chunk.seq, chunk.recv_s)]


def bin_counts(bin_s: float = 0.01) -> OpSpec:
    """Sum each channel over consecutive bins of ``bin_s`` seconds (spike counts from a spike train).

    Bins are aligned on the stream's first sample: bin ``b`` holds input samples
    ``[b * n_bin, (b + 1) * n_bin)`` with ``n_bin = bin_s * sfreq``, which must
    be a whole number (checked at build time). A bin is emitted, with the
    device time of its first sample as ``t0_s``, by the chunk that completes
    it; a NaN input sample makes only its own bin NaN.

    Parameters
    ----------
    bin_s : float
        Bin length, seconds (> 0).

    Returns
    -------
    OpSpec
        Input ``(n_channels, n_samples)``; output ``(n_channels, n_bins)`` at
        ``sfreq / n_bin`` Hz, same channels and units (float32 sums).

    Raises
    ------
    PipelineDefinitionError
        If ``bin_s`` is not a positive number.

    Examples
    --------
    >>> import numpy as np
    >>> from neuraflow.ops import bin_counts, run_offline
    >>> from neuraflow.testing import chunks_from_array, make_info
    >>> x = np.ones((2, 25), np.float32)
    >>> outs = run_offline(bin_counts(0.01), chunks_from_array(x, make_info(2, 1000.0), [7, 18]))
    >>> np.concatenate([o.data for o in outs], axis=1).tolist(), outs[0].sfreq
    ([[10.0, 10.0], [10.0, 10.0]], 100.0)
    """
    bin_s = check_positive("ops.bin_counts", "bin_s", bin_s)
    info_fn = partial(_bin_info, bin_s=bin_s)
    return OpSpec(
        kind="bin_counts",
        init=partial(_bin_init, bin_s=bin_s),
        step=partial(_bin_step, bin_s=bin_s, out_info=_cached(info_fn)),
        infer_info=info_fn,
        params=MappingProxyType({"bin_s": bin_s}),
    )


__all__ = ["BinState", "SpikeState", "bin_counts", "noise_stride", "threshold_spikes"]
