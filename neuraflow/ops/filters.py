"""Streaming IIR filters in second-order sections: :func:`bandpass`, :func:`notch` and :func:`sos_cascade`.

Every op here carries the filter's delay line (``zi``) between chunks, so filtering a
stream chunk by chunk gives the same samples as one offline call::

    y = scipy.signal.sosfilt(sos, x)          # x: the whole float64 signal, zi=None

The delay line starts at **zeros** (not at ``sosfilt_zi`` steady state): the
start-up transient is kept, exactly as in the offline reference, which makes
streaming output reproducible from a recording and independent of the first
chunk's DC offset. Samples are filtered in float64 and emitted as float32.

``step_batch`` filters many streams that share one design (same ``sos``) and
the same chunk length with a *single* ``sosfilt`` call on their channels
stacked vertically; this is what makes one actor hosting hundreds of streams
cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from types import MappingProxyType

import numpy as np
from scipy import signal

from neuraflow._validate import check_int, check_positive
from neuraflow.chunk import Chunk, StreamInfo
from neuraflow.errors import PipelineDefinitionError
from neuraflow.ops.base import OpSpec, check_same_stream


@dataclass(frozen=True, eq=False)
class SosState:
    """Filter state of one stream.

    Parameters
    ----------
    sos : ndarray, shape (n_sections, 6), float64
        Second-order sections, read-only (shared by every stream with the same design).
    zi : ndarray, shape (n_sections, n_channels, 2), float64
        Delay line after the last sample seen, read-only.
    sfreq : float or None
        Sampling rate the design is for, Hz; a chunk at another rate is refused.
    """

    sos: np.ndarray
    zi: np.ndarray
    sfreq: float | None = None


def _readonly(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


def _nyquist_error(name: str, value: float, sfreq: float) -> ValueError:
    return ValueError(f"{name}={value!r} must be below Nyquist ({sfreq / 2!r} Hz at sfreq={sfreq!r}).")


# --- designs (cached so that streams of one op share the same sos array) ------------


@lru_cache(maxsize=256)
def _design_bandpass(l_freq: float | None, h_freq: float | None, order: int, sfreq: float) -> np.ndarray:
    nyq = sfreq / 2.0
    for name, value in (("l_freq", l_freq), ("h_freq", h_freq)):
        if value is not None and value >= nyq:
            raise _nyquist_error(name, value, sfreq)
    if l_freq is not None and h_freq is not None:
        sos = signal.butter(order, [l_freq, h_freq], btype="bandpass", fs=sfreq, output="sos")
    elif l_freq is not None:
        sos = signal.butter(order, l_freq, btype="highpass", fs=sfreq, output="sos")
    else:
        sos = signal.butter(order, h_freq, btype="lowpass", fs=sfreq, output="sos")
    return _readonly(np.ascontiguousarray(sos, dtype=np.float64))


@lru_cache(maxsize=256)
def _design_notch(freqs: tuple[float, ...], quality: float, sfreq: float) -> np.ndarray:
    sections = []
    for freq in freqs:
        if freq >= sfreq / 2.0:
            raise _nyquist_error("freqs", freq, sfreq)
        b, a = signal.iirnotch(freq, quality, fs=sfreq)
        sections.append(np.concatenate([b, a]) / a[0])
    return _readonly(np.ascontiguousarray(np.vstack(sections), dtype=np.float64))


# --- the op functions ----------------------------------------------------------------


def _init(first: Chunk, *, design) -> SosState:
    sos = design(first.sfreq)
    zi = np.zeros((sos.shape[0], first.n_channels, 2), dtype=np.float64)
    return SosState(sos=sos, zi=_readonly(zi), sfreq=first.sfreq)


def _check_stream(state: SosState, chunk: Chunk) -> None:
    check_same_stream("IIR filter", chunk, sfreq=state.sfreq, n_channels=state.zi.shape[1])


try:  # the Cython kernel behind scipy.signal.sosfilt: in place, no argument checks, no axis shuffling
    from scipy.signal._sosfilt import _sosfilt as _sosfilt_kernel
except ImportError:  # pragma: no cover - a scipy that moved it: the public function does the same
    _sosfilt_kernel = None


def _sosfilt(sos: np.ndarray, x: np.ndarray, zi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``scipy.signal.sosfilt(sos, x, zi=zi)`` along the last axis of 2-D ``x``, float64 out.

    Returns ``(y, zf)`` with ``zf`` shaped like ``zi`` (``(n_sections, n_rows, 2)``).
    With hundreds of stacked streams the public function's argument handling (two
    copies and transposes of ``zi``) cost as much as the filtering; the kernel is
    called directly when scipy has it (same code, same results).
    """
    # the kernel needs a writeable sos buffer, and the shared design is read-only: hand it a (tiny) copy
    sos = np.array(sos, dtype=np.float64)
    if _sosfilt_kernel is None or x.ndim != 2:
        return signal.sosfilt(sos, x, zi=zi)
    y = np.array(x, dtype=np.float64, order="C")  # filtered in place
    state = np.array(np.transpose(zi, (1, 0, 2)), dtype=np.float64, order="C")  # a copy, (n_rows, n_sections, 2)
    _sosfilt_kernel(sos, y, state)
    return y, state.transpose(1, 0, 2)


def reset_nonfinite(*zfs: np.ndarray) -> tuple[tuple[np.ndarray, ...], int]:
    """NaN policy: a channel whose delay line went non-finite restarts from rest.

    An IIR filter fed a NaN would output NaN forever; instead the NaN samples
    (and the filter's response to them) stay NaN in that chunk's output, and the
    channel's state restarts at zero, so later clean chunks are finite again.

    Parameters
    ----------
    *zfs : ndarray, each shape (n_sections, n_channels, n_state)
        Delay lines of one or more filters run on the same channels (axis 1 is
        the channel); a channel is reset in all of them when any holds a non-finite value.

    Returns
    -------
    zfs : tuple of ndarray
        The repaired delay lines (the inputs themselves when all finite).
    n_reset : int
        Number of channels reset.
    """
    bad = np.zeros(zfs[0].shape[1], dtype=bool)
    for zf in zfs:
        bad |= ~np.isfinite(zf).all(axis=(0, 2))
    if not bad.any():
        return zfs, 0
    repaired = []
    for zf in zfs:
        zf = zf.copy()
        zf[:, bad, :] = 0.0
        repaired.append(zf)
    return tuple(repaired), int(bad.sum())


def _with_data(chunk: Chunk, data: np.ndarray) -> Chunk:
    """``chunk`` with new samples ``data`` (float32, C-contiguous, read-only: made here).

    The input chunk was validated when it was built and the filter keeps its shape,
    so the output skips the constructor's checks.
    """
    return Chunk.trusted(data, chunk.t0_s, chunk.info, chunk.seq, chunk.recv_s, chunk.meta)


def _step(state: SosState, chunk: Chunk) -> tuple[SosState, list[Chunk]]:
    _check_stream(state, chunk)
    if chunk.n_samples == 0:
        return state, [chunk]
    y, zf = _sosfilt(state.sos, chunk.data, state.zi)
    (zf,), n_reset = reset_nonfinite(zf)
    new_state = SosState(sos=state.sos, zi=_readonly(np.ascontiguousarray(zf)), sfreq=state.sfreq)
    out = _with_data(chunk, _readonly(y.astype(np.float32)))
    if n_reset:
        out = out.replace(meta={**chunk.meta, "filter_resets": n_reset})
    return new_state, [out]


def _step_batch(states: Sequence[SosState], chunks: Sequence[Chunk]) -> tuple[list[SosState], list[list[Chunk]]]:
    """Filter chunks of many streams; one ``sosfilt`` call per (design, n_samples) group."""
    if len(states) != len(chunks):
        raise ValueError(f"step_batch: got {len(states)} states for {len(chunks)} chunks.")
    new_states: list[SosState] = list(states)
    outputs: list[list[Chunk]] = [[] for _ in chunks]
    groups: dict[tuple, list[int]] = {}
    design_keys: dict[int, bytes] = {}  # id(sos) -> its bytes: streams of one op share one design array
    for i, (state, chunk) in enumerate(zip(states, chunks)):
        _check_stream(state, chunk)
        n = chunk.data.shape[1]
        if n == 0:
            outputs[i] = [chunk]
            continue
        sos = state.sos
        design = design_keys.get(id(sos))
        if design is None:
            design = design_keys[id(sos)] = sos.tobytes() + bytes(str(sos.shape), "ascii")
        groups.setdefault((design, n), []).append(i)
    for members in groups.values():
        if len(members) == 1:
            i = members[0]
            new_states[i], outputs[i] = _step(states[i], chunks[i])
            continue
        x = np.concatenate([chunks[i].data for i in members], axis=0)
        zi = np.concatenate([states[i].zi for i in members], axis=1)
        y, zf = _sosfilt(states[members[0]].sos, x, zi)
        if not np.isfinite(zf).all():  # rare: redo the affected streams one by one
            for i in members:
                new_states[i], outputs[i] = _step(states[i], chunks[i])
            continue
        y32 = _readonly(y.astype(np.float32))  # row slices of it are read-only, C-contiguous views
        _readonly(zf)
        start = 0
        for i in members:
            state, chunk = states[i], chunks[i]
            stop = start + chunk.data.shape[0]
            new_states[i] = SosState(sos=state.sos, zi=zf[:, start:stop], sfreq=state.sfreq)
            outputs[i] = [_with_data(chunk, y32[start:stop])]
            start = stop
    return new_states, outputs


def _infer_info(info: StreamInfo, *, design) -> StreamInfo:
    design(info.sfreq)  # raises ValueError naming the value and the Nyquist limit
    return info


def _spec(kind: str, design, params: dict) -> OpSpec:
    return OpSpec(
        kind=kind,
        init=partial(_init, design=design),
        step=_step,
        infer_info=partial(_infer_info, design=design),
        params=MappingProxyType(params),
        step_batch=_step_batch,
    )


# --- public factories ----------------------------------------------------------------


def bandpass(l_freq: float | None, h_freq: float | None, *, order: int = 4) -> OpSpec:
    """Butterworth band-pass filter (zero initial state, causal, float64 inside).

    Parameters
    ----------
    l_freq : float or None
        Lower pass-band edge in Hz (> 0). ``None`` makes a low-pass at ``h_freq``.
    h_freq : float or None
        Upper pass-band edge in Hz, above ``l_freq`` and below Nyquist
        (checked at build time against the stream's sfreq). ``None`` makes a
        high-pass at ``l_freq``.
    order : int
        Butterworth order (>= 1). A band-pass has ``order`` sections (``2 * order`` poles).

    Returns
    -------
    OpSpec
        Input and output: ``(n_channels, n_samples)`` chunks at the same rate and units.

    Raises
    ------
    PipelineDefinitionError
        If a frequency is not a finite positive number, ``l_freq >= h_freq``, both
        are ``None`` or ``order`` is not an integer >= 1.

    Examples
    --------
    >>> import numpy as np
    >>> from neuraflow.ops import bandpass, run_offline
    >>> from neuraflow.testing import chunks_from_array, make_info
    >>> x = np.random.default_rng(0).standard_normal((2, 500))
    >>> chunks = chunks_from_array(x, make_info(2, 250.0), [100, 7, 393])
    >>> y = np.concatenate([c.data for c in run_offline(bandpass(1.0, 40.0), chunks)], axis=1)
    >>> y.shape
    (2, 500)
    """
    where = "ops.bandpass"
    if l_freq is None and h_freq is None:
        raise PipelineDefinitionError(f"{where}: l_freq and h_freq cannot both be None.")
    lo = None if l_freq is None else check_positive(where, "l_freq", l_freq)
    hi = None if h_freq is None else check_positive(where, "h_freq", h_freq)
    if lo is not None and hi is not None and lo >= hi:
        raise PipelineDefinitionError(f"{where}: l_freq={l_freq!r} must be below h_freq={h_freq!r} (Hz).")
    order = check_int(where, "order", order, minimum=1)
    design = partial(_design_bandpass, lo, hi, order)
    return _spec("bandpass", design, {"l_freq": lo, "h_freq": hi, "order": order})


def notch(freqs: float | Sequence[float] = (50.0,), *, quality: float = 30.0) -> OpSpec:
    """IIR notch filter(s) for line noise: one second-order section per frequency.

    Parameters
    ----------
    freqs : float or sequence of float
        Frequencies to remove in Hz, e.g. ``(50.0, 100.0)``; each must be below
        Nyquist (checked at build time against the stream's sfreq).
    quality : float
        Quality factor ``Q = freq / bandwidth`` (> 0) of every notch
        (:func:`scipy.signal.iirnotch`).

    Returns
    -------
    OpSpec
        Input and output: ``(n_channels, n_samples)`` chunks at the same rate and units.

    Raises
    ------
    PipelineDefinitionError
        If ``freqs`` is empty, has duplicates or non-positive values, or ``quality <= 0``.

    Examples
    --------
    >>> from neuraflow.ops import notch
    >>> notch((50.0, 100.0)).params["freqs"]
    (50.0, 100.0)
    """
    where = "ops.notch"
    values = (freqs,) if isinstance(freqs, (int, float)) else tuple(freqs)
    if not values:
        raise PipelineDefinitionError(f"{where}: freqs must contain at least one frequency in Hz.")
    values = tuple(check_positive(where, "freqs", f) for f in values)
    if len(set(values)) != len(values):
        raise PipelineDefinitionError(f"{where}: freqs={values!r} contains duplicates.")
    quality = check_positive(where, "quality", quality)
    design = partial(_design_notch, values, quality)
    return _spec("notch", design, {"freqs": values, "quality": quality})


# --- cascades (the plan optimizer fuses consecutive filters into one) -------------------


def sos_design_of(spec: OpSpec) -> Callable[[float], np.ndarray] | None:
    """The design ``sfreq -> sos`` of a filter built on this module's state and step
    (:func:`bandpass`, :func:`notch`, :func:`~neuraflow.ops.iir.iir_filter`,
    :func:`~neuraflow.ops.iir.dc_block`, :func:`sos_cascade`); None for any other op."""
    init = spec.init
    if isinstance(init, partial) and init.func is _init and spec.step is _step:
        return init.keywords["design"]
    return None


@lru_cache(maxsize=256)
def _cascade_designs(designs: tuple[Callable[[float], np.ndarray], ...], sfreq: float) -> np.ndarray:
    """The stages' sections stacked, first stage first (cached: streams share one array)."""
    return _readonly(np.ascontiguousarray(np.vstack([design(sfreq) for design in designs])))


def sos_cascade(*stages: OpSpec) -> OpSpec:
    """Several second-order-section filters applied in sequence, run as one filter.

    Filtering with the stacked sections of ``stages`` is the same as running the
    stages one after the other on float64 samples (a cascade of sections is what
    ``sosfilt`` computes); the stages' own chain only differs by rounding to
    float32 between them, so the cascade is closer to the offline float64
    reference. The runtime pays one stacked ``sosfilt`` call, one conversion to
    float64 and back, and one output chunk per stream instead of one per stage.
    The plan optimizer (:func:`neuraflow.graph.optimize.fuse_sos_filters`)
    builds it from consecutive filter steps.

    Parameters
    ----------
    *stages : OpSpec
        Filters of this module's family (see :func:`sos_design_of`), in the
        order the samples go through them; a cascade among them is flattened.

    Returns
    -------
    OpSpec
        ``(n_channels, n_samples)`` in and out, same rate and units; its
        ``params["stages"]`` lists each stage's kind and parameters.

    Raises
    ------
    PipelineDefinitionError
        If fewer than two stages are given or a stage is not an SOS filter.
    """
    designs: list[Callable[[float], np.ndarray]] = []
    described: list[Mapping[str, object]] = []
    for stage in stages:
        design = sos_design_of(stage)
        if design is None:
            raise PipelineDefinitionError(
                f"ops.sos_cascade: stage of kind {stage.kind!r} is not a second-order-section filter "
                "(bandpass, notch, iir_filter, dc_block)."
            )
        if stage.kind == "sos_cascade":  # flattened: its designs and descriptions
            designs.extend(design.args[0])
            described.extend(stage.params["stages"])
        else:
            designs.append(design)
            described.append(MappingProxyType({"kind": stage.kind, **stage.params}))
    if len(designs) < 2:
        raise PipelineDefinitionError(f"ops.sos_cascade: needs at least two filters, got {len(designs)}.")
    design = partial(_cascade_designs, tuple(designs))
    params = {"stages": tuple(described)}
    return _spec("sos_cascade", design, params)


__all__ = ["SosState", "bandpass", "notch", "reset_nonfinite", "sos_cascade", "sos_design_of"]
