"""Epochs locked to marker events: :func:`epochs`, and :func:`flatten_epoch` to feed a model.

Markers reach the op through the data itself: a chunk's ``meta["events"]`` is a
tuple of ``(t_s, label)`` pairs (or :class:`~neuraflow.chunk.Event` objects),
the device markers that arrived with that chunk. A marker at device time ``t``
is placed on the sample grid with the clock of the chunk that carries it,
``sample = n_seen + round((t - chunk.t0_s) * sfreq)``, and epoch ``k`` covers
samples ``[sample + round(tmin_s * sfreq), sample + round(tmax_s * sfreq)]``
(both ends included, as in MNE). The epoch is emitted by the chunk that
completes it, so the result does not depend on how the stream was cut into
chunks, and it equals ``mne.Epochs(raw, events, tmin, tmax, baseline,
reject=...).get_data()`` on the same samples.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType
from typing import Any

import numpy as np

from neuraflow._validate import check_positive
from neuraflow.chunk import Chunk, Event, StreamInfo
from neuraflow.errors import PipelineDefinitionError, StreamMismatchError
from neuraflow.ops._blocks import append_block, drop_blocks_before, gather
from neuraflow.ops.base import OpSpec, check_same_stream

@dataclass(frozen=True)
class EpochLayout:
    """Sample-grid quantities of one stream, fixed at ``init``.

    Parameters
    ----------
    offset : int
        ``round(tmin_s * sfreq)``: first epoch sample relative to the marker sample.
    n_times : int
        Samples per epoch, ``round(tmax_s * sfreq) - offset + 1``.
    baseline : tuple of int or None
        ``(imin, imax)`` slice of the epoch averaged and subtracted per channel.
    reject : ndarray, shape (n_channels,), float64, or None
        Peak-to-peak threshold per channel (``inf`` for channels not checked).
    lookback : int
        Samples kept behind the newest one for markers still to come
        (``max(0, -offset)`` plus the marker delay allowance).
    out_info : StreamInfo
        Description of the emitted epochs (its ``sfreq`` is the input rate, which a chunk must keep).
    """

    offset: int
    n_times: int
    baseline: tuple[int, int] | None
    reject: np.ndarray | None
    lookback: int
    out_info: StreamInfo


@dataclass(frozen=True, eq=False)
class EpochState:
    """Epoching state of one stream.

    Parameters
    ----------
    pieces : tuple of ndarray, each shape (n_channels, n_i), float32
        Consecutive read-only input blocks holding samples ``[n_seen - held, n_seen)``
        (the ring of recent samples; shared with the input chunks, not copied).
    held : int
        Samples held in ``pieces``.
    n_seen : int
        Input samples seen so far.
    pending : tuple of (int, float, str)
        Markers whose epoch is not complete yet: ``(first sample, marker t_s, label)``,
        sorted by first sample.
    n_channels : int
        Channel count the op was initialised with.
    n_emitted, n_rejected, n_missed : int
        Epochs emitted, dropped by the peak-to-peak threshold, and dropped because
        their samples were not available (before the stream start, or a marker
        later than ``max_delay_s``).
    layout : EpochLayout
        The stream's fixed sample-grid quantities.
    """

    pieces: tuple[np.ndarray, ...]
    held: int
    n_seen: int
    pending: tuple[tuple[int, float, str], ...]
    n_channels: int
    n_emitted: int
    n_rejected: int
    n_missed: int
    layout: EpochLayout


def _n_times(tmin_s: float, tmax_s: float, sfreq: float) -> tuple[int, int]:
    offset = round(tmin_s * sfreq)
    n_times = round(tmax_s * sfreq) - offset + 1
    return offset, n_times


def _baseline_slice(baseline, offset: int, n_times: int, sfreq: float) -> tuple[int, int] | None:
    """MNE's ``rescale`` indices: ``times >= bmin`` to ``times <= bmax``, on ``times = (offset + i) / sfreq``."""
    if baseline is None:
        return None
    times = (offset + np.arange(n_times)) / sfreq
    bmin, bmax = baseline
    imin, imax = 0, n_times
    if bmin is not None:
        after = np.flatnonzero(times >= bmin)
        imin = int(after[0]) if after.size else n_times
    if bmax is not None:
        before = np.flatnonzero(times <= bmax)
        imax = int(before[-1]) + 1 if before.size else 0
    if imin >= imax:
        raise ValueError(f"baseline={baseline!r} selects no sample of the epoch at sfreq={sfreq!r} Hz.")
    return imin, imax


def _reject_thresholds(reject, info: StreamInfo) -> np.ndarray | None:
    if reject is None:
        return None
    if isinstance(reject, Mapping):
        thr = np.array([reject.get(kind, np.inf) for kind in info.ch_types], dtype=np.float64)
        if np.isinf(thr).all():
            raise ValueError(
                f"reject_peak_to_peak names channel types {sorted(reject)}, the stream has {sorted(set(info.ch_types))}."
            )
        return thr
    return np.full(info.n_channels, float(reject))


def _layout(info: StreamInfo, *, tmin_s, tmax_s, baseline, reject_peak_to_peak, max_delay_s) -> EpochLayout:
    sfreq = info.sfreq
    offset, n_times = _n_times(tmin_s, tmax_s, sfreq)
    out_info = info.replace(meta={**info.meta, "epoch_tmin_s": tmin_s, "epoch_tmax_s": tmax_s, "epoch_n_times": n_times})
    return EpochLayout(
        offset=offset,
        n_times=n_times,
        baseline=_baseline_slice(baseline, offset, n_times, sfreq),
        reject=_reject_thresholds(reject_peak_to_peak, info),
        lookback=max(0, -offset) + math.ceil(max_delay_s * sfreq),
        out_info=out_info,
    )


def _infer_info(info: StreamInfo, **kw) -> StreamInfo:
    return _layout(info, **kw).out_info


def _init(first: Chunk, *, labels: frozenset[str] | None, **kw: Any) -> EpochState:
    layout = _layout(first.info, **kw)
    return EpochState(
        pieces=(), held=0, n_seen=0, pending=(), n_channels=first.n_channels,
        n_emitted=0, n_rejected=0, n_missed=0, layout=layout,
    )


def _markers(chunk: Chunk, labels: frozenset[str] | None) -> list[tuple[float, str]]:
    out = []
    for item in chunk.meta.get("events", ()):
        if isinstance(item, Event):
            t_s, label = item.t_s, item.label
        else:
            t_s, label = item[0], item[1]
        label = str(label)
        if labels is None or label in labels:
            out.append((float(t_s), label))
    return out


def _step(state: EpochState, chunk: Chunk, *, labels: frozenset[str] | None) -> tuple[EpochState, list[Chunk]]:
    check_same_stream("ops.epochs", chunk, sfreq=state.layout.out_info.sfreq, n_channels=state.n_channels)
    markers = _markers(chunk, labels)
    n_new = chunk.n_samples
    if n_new == 0 and not markers:
        return state, []
    lay = state.layout
    sfreq = chunk.sfreq
    pending = list(state.pending)
    for t_s, label in markers:
        sample = state.n_seen + round((t_s - chunk.t0_s) * sfreq)
        pending.append((sample + lay.offset, t_s, label))
    pending.sort(key=lambda p: p[0])
    total = state.n_seen + n_new
    base = state.n_seen - state.held
    pieces = append_block(state.pieces, chunk.data) if n_new else state.pieces
    outputs: list[Chunk] = []
    n_emitted, n_rejected, n_missed = state.n_emitted, state.n_rejected, state.n_missed
    waiting = []
    for start, t_s, label in pending:
        if start < max(base, 0):  # before the stream start, or already out of the ring
            n_missed += 1
            continue
        if start + lay.n_times > total:
            waiting.append((start, t_s, label))
            continue
        epoch = gather(pieces, base, start, start + lay.n_times).astype(np.float64)
        if lay.baseline is not None:
            imin, imax = lay.baseline
            epoch -= epoch[:, imin:imax].mean(axis=1, keepdims=True)
        if lay.reject is not None and (np.ptp(epoch, axis=1) > lay.reject).any():
            n_rejected += 1
            continue
        outputs.append(
            Chunk(
                epoch.astype(np.float32),
                # the time of the epoch's first sample, on the current chunk's clock
                chunk.t0_s + (start - state.n_seen) / sfreq,
                lay.out_info,
                seq=n_emitted,
                recv_s=chunk.recv_s,
                meta={"label": label, "marker_t_s": t_s, "n_rejected": n_rejected, "n_missed": n_missed},
            )
        )
        n_emitted += 1
    # keep what a pending epoch or a marker still to come (up to max_delay_s late) may need
    keep_from = total - lay.lookback
    if waiting:
        keep_from = min(keep_from, waiting[0][0])
    pieces, base, held = drop_blocks_before(pieces, base, state.held + n_new, keep_from)
    if pieces and base < keep_from:  # drop the older part of the first block (a view, no copy)
        cut = keep_from - base
        pieces = (pieces[0][:, cut:], *pieces[1:])
        base += cut
        held -= cut
    new_state = EpochState(
        pieces=pieces, held=held, n_seen=total, pending=tuple(waiting), n_channels=state.n_channels,
        n_emitted=n_emitted, n_rejected=n_rejected, n_missed=n_missed, layout=lay,
    )
    return new_state, outputs


def _check_baseline(where: str, baseline, tmin_s: float, tmax_s: float):
    if baseline is None:
        return None
    if not (isinstance(baseline, Sequence) and not isinstance(baseline, str) and len(baseline) == 2):
        raise PipelineDefinitionError(f"{where}: baseline={baseline!r} must be None or a pair (bmin, bmax).")
    bounds = []
    for value in baseline:
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise PipelineDefinitionError(f"{where}: baseline={baseline!r} must hold finite seconds or None.")
            value = float(value)
            if not tmin_s <= value <= tmax_s:
                raise PipelineDefinitionError(
                    f"{where}: baseline={baseline!r} must lie within the epoch [{tmin_s}, {tmax_s}] s."
                )
        bounds.append(value)
    if None not in bounds and bounds[0] > bounds[1]:
        raise PipelineDefinitionError(f"{where}: baseline={baseline!r} starts after it ends.")
    return tuple(bounds)


def _check_reject(where: str, reject):
    if reject is None:
        return None
    if isinstance(reject, Mapping):
        if not reject:
            raise PipelineDefinitionError(f"{where}: reject_peak_to_peak must not be an empty mapping.")
        return MappingProxyType({str(k): check_positive(where, f"reject_peak_to_peak[{k!r}]", v) for k, v in reject.items()})
    return check_positive(where, "reject_peak_to_peak", reject)


def _check_labels(where: str, labels) -> frozenset[str] | None:
    if labels is None:
        return None
    if isinstance(labels, str):
        labels = (labels,)
    if not isinstance(labels, Iterable) or not all(isinstance(x, str) and x for x in labels):
        raise PipelineDefinitionError(f"{where}: labels={labels!r} must be None or a sequence of marker labels.")
    labels = frozenset(labels)
    if not labels:
        raise PipelineDefinitionError(f"{where}: labels must not be empty (None keeps every marker).")
    return labels


def epochs(
    tmin_s: float,
    tmax_s: float,
    *,
    baseline: tuple[float | None, float | None] | None = (None, 0.0),
    reject_peak_to_peak: float | Mapping[str, float] | None = None,
    labels: Sequence[str] | None = None,
    max_delay_s: float = 1.0,
) -> OpSpec:
    """Cut one epoch around every marker of a stream, as ``mne.Epochs`` does.

    Parameters
    ----------
    tmin_s, tmax_s : float
        Epoch start and end relative to the marker, seconds (``tmin_s <= tmax_s``;
        negative values are before the marker). Both ends are included:
        ``n_times = round(tmax_s * sfreq) - round(tmin_s * sfreq) + 1``.
    baseline : (float or None, float or None) or None
        Interval (seconds relative to the marker, ``None`` for the epoch's start or
        end) whose per-channel mean is subtracted, MNE's default ``(None, 0)``;
        ``None`` for no correction. Must lie within ``[tmin_s, tmax_s]``.
    reject_peak_to_peak : float, mapping of str to float, or None
        Drop epochs whose peak-to-peak amplitude (after baseline correction)
        exceeds this value on some channel, in the stream's units. A mapping
        ``{ch_type: threshold}`` checks only channels of those types, like MNE's
        ``reject=dict(eeg=150e-6)``.
    labels : sequence of str, optional
        Marker labels to epoch (e.g. ``("T1", "T2")``); ``None`` for every marker.
    max_delay_s : float
        How late a marker may arrive after its onset sample has been received (>= 0);
        sets the samples the op keeps, ``max(0, -tmin_s) + max_delay_s`` seconds.

    Returns
    -------
    OpSpec
        Input: ``(n_channels, n_samples)`` chunks whose ``meta["events"]`` (optional)
        is a tuple of ``(t_s, label)`` pairs or :class:`~neuraflow.chunk.Event`
        objects. Output: one ``(n_channels, n_times)`` float32 chunk per kept
        marker, at the input's sfreq, ``t0_s`` the time of its first sample (the
        marker's sample time plus ``round(tmin_s * sfreq) / sfreq``), ``seq`` the
        epoch index, and ``meta``: ``label``, ``marker_t_s``, and the stream's
        running counts ``n_rejected`` (peak-to-peak) and ``n_missed`` (samples not
        available) of epochs dropped so far. The output stream's meta adds
        ``epoch_tmin_s``, ``epoch_tmax_s`` and ``epoch_n_times``.

    Raises
    ------
    PipelineDefinitionError
        If a parameter is invalid. A baseline that selects no sample at the
        stream's rate is reported at build time (``ValueError`` from ``infer_info``).

    Notes
    -----
    The stream is assumed contiguous: samples are counted, not timestamped, so
    epochs spanning a dropped chunk are cut from the samples that did arrive.
    Markers are queued until their epoch is complete; a marker whose first
    sample is older than the kept samples (before the stream start, or more than
    ``max_delay_s`` late) is dropped and counted in ``n_missed``.

    Examples
    --------
    >>> import numpy as np
    >>> from neuraflow.ops import epochs, run_offline
    >>> from neuraflow.testing import chunks_from_array, make_info
    >>> chunks = chunks_from_array(np.zeros((2, 500)), make_info(2, 100.0), [200, 300])
    >>> chunks[0] = chunks[0].replace(meta={"events": ((chunks[0].t0_s + 1.0, "T1"),)})
    >>> out = run_offline(epochs(-0.2, 0.5), chunks)
    >>> out[0].data.shape, out[0].meta["label"]
    ((2, 71), 'T1')
    """
    where = "ops.epochs"
    for name, value in (("tmin_s", tmin_s), ("tmax_s", tmax_s)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise PipelineDefinitionError(f"{where}: {name}={value!r} must be finite seconds.")
    tmin_s, tmax_s = float(tmin_s), float(tmax_s)
    if tmin_s > tmax_s:
        raise PipelineDefinitionError(f"{where}: tmin_s={tmin_s!r} must be <= tmax_s={tmax_s!r}.")
    baseline = _check_baseline(where, baseline, tmin_s, tmax_s)
    reject = _check_reject(where, reject_peak_to_peak)
    label_set = _check_labels(where, labels)
    max_delay_s = check_positive(where, "max_delay_s", max_delay_s, allow_zero=True)
    kw = {
        "tmin_s": tmin_s, "tmax_s": tmax_s, "baseline": baseline,
        "reject_peak_to_peak": reject, "max_delay_s": max_delay_s,
    }
    return OpSpec(
        kind="epochs",
        init=partial(_init, labels=label_set, **kw),
        step=partial(_step, labels=label_set),
        infer_info=partial(_infer_info, **kw),
        params=MappingProxyType({**kw, "labels": None if label_set is None else tuple(sorted(label_set))}),
    )


# --- flatten_epoch ----------------------------------------------------------------


def _flat_info(info: StreamInfo) -> StreamInfo:
    n_times = info.meta.get("epoch_n_times")
    if not isinstance(n_times, int):
        raise ValueError("flatten_epoch needs epochs of a fixed length upstream (ops.epochs sets meta['epoch_n_times']).")
    names = tuple(f"{ch}[{t}]" for ch in info.channels for t in range(n_times))
    units = tuple(u for u in info.units for _ in range(n_times))
    meta = {**info.meta, "flattened_from": (info.n_channels, n_times)}
    return info.replace(channels=names, ch_types=("feature",) * len(names), units=units, meta=meta)


def _flat_init(first: Chunk) -> StreamInfo:
    return _flat_info(first.info)


def _flat_step(state: StreamInfo, chunk: Chunk) -> tuple[StreamInfo, list[Chunk]]:
    if chunk.n_samples == 0:
        return state, []
    n_channels, n_times = state.meta["flattened_from"]
    if chunk.data.shape != (n_channels, n_times):
        raise StreamMismatchError(
            f"stream {chunk.stream_id!r}: epoch of shape {chunk.data.shape}, expected {(n_channels, n_times)}."
        )
    return state, [Chunk(chunk.data.reshape(-1, 1), chunk.t0_s, state, chunk.seq, chunk.recv_s, chunk.meta)]


def flatten_epoch() -> OpSpec:
    """Turn each epoch into one feature vector, for :func:`~neuraflow.ops.onnx_model`.

    Returns
    -------
    OpSpec
        Input: epochs ``(n_channels, n_times)`` from :func:`epochs`. Output: one
        chunk ``(n_channels * n_times, 1)`` per epoch, channel-major (value
        ``c * n_times + t`` is channel ``c`` at epoch sample ``t``, i.e.
        ``epoch.reshape(-1)``), channels ``"{name}[{t}]"`` of type ``"feature"``;
        ``t0_s``, ``seq`` and ``meta`` are the epoch's.

    Raises
    ------
    ValueError
        At build time (``infer_info``) when the input is not a stream of epochs.
    """
    return OpSpec(kind="flatten_epoch", init=_flat_init, step=_flat_step, infer_info=_flat_info)


# --- the contract example: epochs driven by periodic synthetic markers ---------------


@dataclass(frozen=True)
class _PeriodicState:
    t_first: float
    inner: EpochState


def _periodic_init(first: Chunk, *, spec: OpSpec) -> _PeriodicState:
    return _PeriodicState(first.t0_s, spec.init(first))


def _periodic_step(state: _PeriodicState, chunk: Chunk, *, spec: OpSpec, period_s: float, first_s: float):
    sfreq = chunk.sfreq
    start = round((chunk.t0_s - state.t_first) * sfreq)
    first, period = round(first_s * sfreq), max(1, round(period_s * sfreq))
    k = max(0, -(-(start - first) // period))
    events = []
    while first + k * period < start + chunk.n_samples:
        events.append((state.t_first + (first + k * period) / sfreq, "marker"))
        k += 1
    if events:
        chunk = chunk.replace(meta={**chunk.meta, "events": tuple(events)})
    inner, outputs = spec.step(state.inner, chunk)
    return (state if inner is state.inner else _PeriodicState(state.t_first, inner)), outputs


def _example() -> OpSpec:
    """``epochs(-0.1, 0.3)`` with a marker every 0.5 s from 0.2 s (the REGISTRY example)."""
    spec = epochs(-0.1, 0.3, baseline=(None, 0.0), reject_peak_to_peak=1.0, labels=("marker",))
    return OpSpec(
        kind="epochs",
        init=partial(_periodic_init, spec=spec),
        step=partial(_periodic_step, spec=spec, period_s=0.5, first_s=0.2),
        infer_info=spec.infer_info,
        params=spec.params,
    )


__all__ = ["EpochLayout", "EpochState", "epochs", "flatten_epoch"]
