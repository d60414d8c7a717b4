"""Streaming rational resampling: :func:`resample` (polyphase FIR, carried state).

The filter ``h`` is exactly :func:`scipy.signal.resample_poly`'s: for the
reduced ratio ``up/down``, ``firwin(2 * half_len + 1, 1 / max(up, down),
window=window) * up`` with ``half_len = 10 * max(up, down)``, preceded by
``n_pre_pad = down - half_len % down`` zeros. Output sample ``k`` of
``scipy.signal.upfirdn(h, x, up, down)`` only needs inputs ``x[: k * down // up + 1]``,
so a stream emits each such sample as soon as its inputs have arrived and
skips the first ``n_pre_remove = (half_len + n_pre_pad) // down`` of them,
the centring delay that ``resample_poly`` removes. After ``n`` input samples
the stream has emitted ``n_emit = max(0, ceil(n * up / down) - n_pre_remove)``
samples and, whatever the chunking::

    concat(outputs) == upfirdn(h, x[:, :n], up, down)[:, n_pre_remove : n_pre_remove + n_emit]
                    == resample_poly(x[:, :n], up, down, axis=1)[:, :n_emit]

(``resample_poly``'s last ``n_pre_remove`` samples need input beyond the end,
which it pads with zeros; the stream emits them when that input arrives).
Output sample ``j`` lies at input position ``j * down / up``; each output
chunk's ``t0_s`` is placed by that rule relative to the input chunk that emits
it (so device-time jitter is followed rather than accumulated). Latency is
``n_pre_remove / sfreq_out`` seconds.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache, partial
from types import MappingProxyType

import numpy as np
from scipy import signal

from neuraflow._validate import check_int, check_positive
from neuraflow.chunk import Chunk, StreamInfo
from neuraflow.errors import PipelineDefinitionError
from neuraflow.ops.base import OpSpec, check_same_stream
from neuraflow.ops.filters import _readonly
from neuraflow.ops.fir import group_batch, split_rows


@dataclass(frozen=True, eq=False)
class Polyphase:
    """A resampling design shared by the streams of one op and input rate.

    Parameters
    ----------
    up, down : int
        Reduced ratio (``gcd(up, down) == 1``).
    phases : ndarray, shape (up, n_taps_per_phase), float64
        ``phases[p, m] = h[p + m * up]`` (zero past the end of ``h``), read-only.
    n_pre_remove : int
        Leading ``upfirdn`` output samples that are never emitted.
    """

    up: int
    down: int
    phases: np.ndarray
    n_pre_remove: int


@dataclass(frozen=True, eq=False)
class ResampleState:
    """State of one stream through :func:`resample`.

    Parameters
    ----------
    design : Polyphase
        The filter and ratio.
    tail : ndarray, shape (n_channels, n_taps_per_phase - 1), float64
        The last input samples (zeros before the stream's start), read-only.
    n_in : int
        Input samples seen so far.
    next_k : int
        Index of the next ``upfirdn`` output sample to emit (>= ``n_pre_remove``).
    info : StreamInfo
        Output description (``sfreq * up / down``).
    sfreq : float
        Input rate the ratio was chosen for, Hz; a chunk at another rate is refused.
    """

    design: Polyphase
    tail: np.ndarray
    n_in: int
    next_k: int
    info: StreamInfo
    sfreq: float


@lru_cache(maxsize=64)
def _polyphase(up: int, down: int, window) -> Polyphase:
    max_rate = max(up, down)
    half_len = 10 * max_rate
    h = signal.firwin(2 * half_len + 1, 1.0 / max_rate, window=window) * up
    n_pre_pad = down - half_len % down
    h = np.concatenate([np.zeros(n_pre_pad), h])
    n_per_phase = -(-h.size // up)
    h = np.concatenate([h, np.zeros(n_per_phase * up - h.size)])
    phases = _readonly(np.ascontiguousarray(h.reshape(n_per_phase, up).T))
    return Polyphase(up=up, down=down, phases=phases, n_pre_remove=(half_len + n_pre_pad) // down)


def _ratio(
    sfreq: float, *, up: int | None, down: int | None, sfreq_out: float | None, max_denominator: int
) -> Fraction:
    if sfreq_out is None:
        return Fraction(up, down)
    ratio = (Fraction(sfreq_out) / Fraction(sfreq)).limit_denominator(max_denominator)
    if ratio == 0 or abs(float(ratio) * sfreq - sfreq_out) > 1e-6 * sfreq_out:
        raise ValueError(
            f"sfreq_out={sfreq_out!r} Hz is not reachable from sfreq={sfreq!r} Hz with a ratio up/down "
            f"of denominator <= max_denominator={max_denominator} (best: {ratio}); raise max_denominator."
        )
    return ratio


def _resample_info(info: StreamInfo, **ratio_args) -> StreamInfo:
    ratio = _ratio(info.sfreq, **ratio_args)
    return info.replace(sfreq=info.sfreq * ratio.numerator / ratio.denominator)


def _resample_init(first: Chunk, *, window, **ratio_args) -> ResampleState:
    ratio = _ratio(first.sfreq, **ratio_args)
    info = first.info.replace(sfreq=first.sfreq * ratio.numerator / ratio.denominator)
    if ratio == 1:  # resample_poly returns a copy: pass through
        design = Polyphase(up=1, down=1, phases=_readonly(np.ones((1, 1))), n_pre_remove=0)
    else:
        design = _polyphase(ratio.numerator, ratio.denominator, window)
    tail = _readonly(np.zeros((first.n_channels, design.phases.shape[1] - 1)))
    return ResampleState(design=design, tail=tail, n_in=0, next_k=design.n_pre_remove, info=info, sfreq=first.sfreq)


def _resample_step_many(
    states: list[ResampleState], chunks: list[Chunk]
) -> tuple[list[ResampleState], list[list[Chunk]]]:
    """Streams sharing (design, n_in, next_k, n_samples): identical sample indices, stacked rows."""
    for state, chunk in zip(states, chunks):
        check_same_stream("ops.resample", chunk, sfreq=state.sfreq, n_channels=state.tail.shape[0])
    first, n = states[0], chunks[0].n_samples
    design = first.design
    up, down, phases = design.up, design.down, design.phases
    n_total = first.n_in + n
    end_k = -(-n_total * up // down)  # upfirdn outputs computable from n_total inputs
    n_out = max(0, end_k - first.next_k)
    if n == 0:
        return states, [[] for _ in chunks]
    n_tail = first.tail.shape[1]
    tail = np.concatenate([s.tail for s in states], axis=0)
    ext = np.concatenate([tail, np.concatenate([c.data for c in chunks], axis=0)], axis=1)
    offset = first.n_in - n_tail  # input index of ext[:, 0]
    new_tail = _readonly(ext[:, ext.shape[1] - n_tail :].copy())
    tails = split_rows(new_tail, chunks)
    new_states = [
        ResampleState(design=s.design, tail=t, n_in=n_total, next_k=max(s.next_k, end_k), info=s.info, sfreq=s.sfreq)
        for s, t in zip(states, tails)
    ]
    if n_out == 0:
        return new_states, [[] for _ in chunks]
    k = np.arange(first.next_k, end_k)
    base = k * down // up - offset  # ext index of the newest input of each output
    idx = base[:, None] - np.arange(phases.shape[1])[None, :]  # (n_out, n_per_phase)
    y = np.einsum("ckm,km->ck", ext[:, idx], phases[k * down % up])
    j0 = first.next_k - design.n_pre_remove  # resample_poly index of the first sample emitted
    # output j sits at input position j * down / up; chunk's first sample is input first.n_in
    t_offset_s = (j0 * down - first.n_in * up) / (up * chunks[0].sfreq)
    ys = split_rows(y.astype(np.float32), chunks)
    outputs = [
        [Chunk(yi, c.t0_s + t_offset_s, s.info, c.seq, c.recv_s, c.meta)] for s, c, yi in zip(states, chunks, ys)
    ]
    return new_states, outputs


def _resample_key(state: ResampleState, chunk: Chunk) -> Hashable:
    return (id(state.design.phases), state.n_in, state.next_k, chunk.n_samples, chunk.sfreq)


def _resample_step(state: ResampleState, chunk: Chunk) -> tuple[ResampleState, list[Chunk]]:
    states, outputs = _resample_step_many([state], [chunk])
    return states[0], outputs[0]


def resample(
    up: int | None = None,
    down: int | None = None,
    *,
    sfreq_out: float | None = None,
    window: str | tuple = ("kaiser", 5.0),
    max_denominator: int = 1000,
) -> OpSpec:
    """Polyphase rational resampler, equal to :func:`scipy.signal.resample_poly` on the stream so far.

    See the module docstring for exactly what is matched. Give either ``up``
    and ``down`` or ``sfreq_out``.

    Parameters
    ----------
    up, down : int, optional
        Up- and down-sampling factors (>= 1); reduced by their gcd.
    sfreq_out : float, optional
        Target rate in Hz (> 0); the ratio ``sfreq_out / sfreq`` is approximated
        with :meth:`fractions.Fraction.limit_denominator` at build time and must
        then match within 1 ppm.
    window : str or tuple
        Window of the anti-aliasing ``firwin`` design (``resample_poly``'s default
        Kaiser, beta 5).
    max_denominator : int
        Largest ``down`` considered for ``sfreq_out`` (>= 1).

    Returns
    -------
    OpSpec
        Input ``(n_channels, n_samples)`` at ``sfreq``; output
        ``(n_channels, n_out)`` at ``sfreq * up / down`` (``n_out`` may be 0: no
        output chunk), same channels and units; each output chunk's ``t0_s`` is
        the time of its first sample.

    Raises
    ------
    PipelineDefinitionError
        If neither or both of (``up``, ``down``) and ``sfreq_out`` are given, a
        factor is not an integer >= 1, or ``window`` is not a scipy window.

    Examples
    --------
    >>> from neuraflow.ops import resample
    >>> from neuraflow.testing import make_info
    >>> resample(sfreq_out=100.0).infer_info(make_info(2, 250.0)).sfreq
    100.0
    """
    where = "ops.resample"
    if sfreq_out is None:
        if up is None or down is None:
            raise PipelineDefinitionError(f"{where}: give up and down (integers >= 1), or sfreq_out (Hz).")
        up, down = check_int(where, "up", up), check_int(where, "down", down)
        ratio = Fraction(up, down)
        up, down = ratio.numerator, ratio.denominator
    else:
        if up is not None or down is not None:
            raise PipelineDefinitionError(f"{where}: give either up/down or sfreq_out, not both.")
        sfreq_out = check_positive(where, "sfreq_out", sfreq_out)
    max_denominator = check_int(where, "max_denominator", max_denominator)
    window = tuple(window) if isinstance(window, list) else window
    try:
        signal.get_window(window, 8)
        hash(window)
    except (ValueError, TypeError) as err:
        raise PipelineDefinitionError(f"{where}: window={window!r} is not a scipy window ({err}).") from None
    ratio_args = {"up": up, "down": down, "sfreq_out": sfreq_out, "max_denominator": max_denominator}
    return OpSpec(
        kind="resample",
        init=partial(_resample_init, window=window, **ratio_args),
        step=_resample_step,
        infer_info=partial(_resample_info, **ratio_args),
        params=MappingProxyType({**ratio_args, "window": window}),
        step_batch=partial(group_batch, key=_resample_key, step_many=_resample_step_many),
    )


__all__ = ["Polyphase", "ResampleState", "resample"]
