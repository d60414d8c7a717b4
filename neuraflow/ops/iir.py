"""General streaming IIR filters: :func:`iir_filter`, :func:`dc_block` and :func:`filter_bank`.

All three are second-order-section filters that reuse the machinery of
:mod:`neuraflow.ops.filters` (:class:`~neuraflow.ops.filters.SosState`, its
step and its vectorised ``step_batch``): the delay line starts at zeros and is
carried between chunks, so the concatenated output of a stream equals one
offline call on the whole float64 signal, whatever the chunking::

    y = scipy.signal.sosfilt(sos, x)      # zi=None, float64; emitted as float32

:func:`filter_bank` fans one stream out into several bands *inside one op*:
its output stacks the band-filtered copies (channels ``f"{ch}:{band}"``,
band-major), so a bank stays one vectorised step instead of one graph branch
per band.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from types import MappingProxyType
from typing import Literal

import numpy as np
from scipy import signal

from neuraflow._validate import check_int, check_option, check_positive
from neuraflow.chunk import Chunk, StreamInfo
from neuraflow.errors import PipelineDefinitionError, StreamMismatchError
from neuraflow.ops.base import OpSpec
from neuraflow.ops.filters import SosState, _design_bandpass, _nyquist_error, _readonly, _spec
from neuraflow.ops.filters import _init as _sos_init
from neuraflow.ops.filters import _step as _sos_step
from neuraflow.ops.filters import _step_batch as _sos_step_batch

Kind = Literal["lowpass", "highpass", "bandpass", "bandstop"]
Design = Literal["butter", "cheby1", "cheby2", "ellip"]
KINDS: tuple[str, ...] = ("lowpass", "highpass", "bandpass", "bandstop")
DESIGNS: tuple[str, ...] = ("butter", "cheby1", "cheby2", "ellip")


def check_freqs(where: str, kind: str, freqs: float | Sequence[float]) -> tuple[float, ...]:
    """Validate the edge frequencies (Hz) of a ``kind`` filter; return them as a tuple.

    One edge for ``"lowpass"``/``"highpass"``, two increasing edges for
    ``"bandpass"``/``"bandstop"``. Shared by :func:`iir_filter` and ``fir_filter``.
    """
    values = (freqs,) if isinstance(freqs, (int, float)) else tuple(freqs)
    n_expected = 1 if kind in ("lowpass", "highpass") else 2
    if len(values) != n_expected:
        raise PipelineDefinitionError(
            f"{where}: kind={kind!r} needs {n_expected} edge frequency(ies) in Hz, got freqs={freqs!r}."
        )
    values = tuple(check_positive(where, "freqs", f) for f in values)
    if n_expected == 2 and values[0] >= values[1]:
        raise PipelineDefinitionError(f"{where}: freqs={freqs!r} must be increasing (low, high) in Hz.")
    return values


@lru_cache(maxsize=256)
def _design_iir(
    kind: str, freqs: tuple[float, ...], design: str, order: int, rp_db: float | None, rs_db: float | None, sfreq: float
) -> np.ndarray:
    for freq in freqs:
        if freq >= sfreq / 2.0:
            raise _nyquist_error("freqs", freq, sfreq)
    wn = freqs[0] if len(freqs) == 1 else list(freqs)
    sos = signal.iirfilter(order, wn, rp=rp_db, rs=rs_db, btype=kind, ftype=design, output="sos", fs=sfreq)
    return _readonly(np.ascontiguousarray(sos, dtype=np.float64))


def iir_filter(
    kind: Kind,
    freqs: float | Sequence[float],
    *,
    design: Design = "butter",
    order: int = 4,
    rp_db: float | None = None,
    rs_db: float | None = None,
) -> OpSpec:
    """Causal IIR filter designed by :func:`scipy.signal.iirfilter` as second-order sections.

    Parameters
    ----------
    kind : {"lowpass", "highpass", "bandpass", "bandstop"}
        Filter type.
    freqs : float or sequence of float
        Edge frequency in Hz for low/high-pass, ``(low, high)`` in Hz for
        band-pass/stop; each must be below Nyquist (checked at build time).
    design : {"butter", "cheby1", "cheby2", "ellip"}
        Butterworth, Chebyshev type I/II or elliptic (Cauer).
    order : int
        Filter order (>= 1); band filters have ``order`` sections (``2 * order`` poles).
    rp_db : float, optional
        Maximum pass-band ripple in dB (> 0); required for ``"cheby1"`` and ``"ellip"``.
    rs_db : float, optional
        Minimum stop-band attenuation in dB (> 0); required for ``"cheby2"`` and ``"ellip"``.

    Returns
    -------
    OpSpec
        ``(n_channels, n_samples)`` in and out, same rate and units. The state
        is a :class:`~neuraflow.ops.filters.SosState` (zero initial delay line);
        streaming equals ``scipy.signal.sosfilt(sos, x)`` on the whole signal.

    Raises
    ------
    PipelineDefinitionError
        For an unknown ``kind``/``design``, wrong number or order of ``freqs``,
        ``order < 1``, a missing ripple/attenuation or one given to a design
        that does not use it.

    Examples
    --------
    >>> from neuraflow.ops import iir_filter
    >>> iir_filter("bandpass", (8.0, 12.0), design="cheby1", rp_db=0.5).params["design"]
    'cheby1'
    """
    where = "ops.iir_filter"
    check_option(where, "kind", kind, KINDS)
    check_option(where, "design", design, DESIGNS)
    values = check_freqs(where, kind, freqs)
    order = check_int(where, "order", order, minimum=1)
    needs = {"butter": (), "cheby1": ("rp_db",), "cheby2": ("rs_db",), "ellip": ("rp_db", "rs_db")}[design]
    given = {"rp_db": rp_db, "rs_db": rs_db}
    for name, value in given.items():
        if name in needs and value is None:
            raise PipelineDefinitionError(f"{where}: design={design!r} requires {name} (in dB, > 0).")
        if name not in needs and value is not None:
            raise PipelineDefinitionError(
                f"{where}: {name}={value!r} is not used by design={design!r} "
                "(rp_db is for 'cheby1'/'ellip', rs_db for 'cheby2'/'ellip')."
            )
        if value is not None:
            given[name] = check_positive(where, name, value)
    design_fn = partial(_design_iir, kind, values, design, order, given["rp_db"], given["rs_db"])
    params = {"kind": kind, "freqs": values, "design": design, "order": order, **given}
    return _spec("iir_filter", design_fn, params)


def dc_block(cutoff_hz: float = 0.1) -> OpSpec:
    """Exponential DC removal: a first-order Butterworth high-pass at ``cutoff_hz``.

    Equivalent to subtracting an exponentially weighted running mean whose time
    constant is about ``1 / (2 * pi * cutoff_hz)`` seconds; same state and
    guarantees as :func:`iir_filter` (it is ``iir_filter("highpass", cutoff_hz, order=1)``).

    Parameters
    ----------
    cutoff_hz : float
        -3 dB corner in Hz (> 0, below Nyquist; checked at build time).

    Returns
    -------
    OpSpec
        ``(n_channels, n_samples)`` in and out, same rate and units.

    Raises
    ------
    PipelineDefinitionError
        If ``cutoff_hz`` is not a finite number > 0.

    Examples
    --------
    >>> from neuraflow.ops import dc_block
    >>> dc_block(0.5).params
    mappingproxy({'cutoff_hz': 0.5})
    """
    cutoff = check_positive("ops.dc_block", "cutoff_hz", cutoff_hz)
    design_fn = partial(_design_iir, "highpass", (cutoff,), "butter", 1, None, None)
    return _spec("dc_block", design_fn, {"cutoff_hz": cutoff})


# --- filter bank ---------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class FilterBankState:
    """State of one stream through a filter bank.

    Parameters
    ----------
    bands : tuple of SosState
        One Butterworth filter state per band, in the order of the op's ``bands``.
    info : StreamInfo
        Output description: channels ``f"{ch}:{band}"``, band-major.
    """

    bands: tuple[SosState, ...]
    info: StreamInfo


def _bank_designs(bands: tuple[tuple[str, float | None, float | None], ...], order: int, sfreq: float) -> list:
    designs = []
    for name, lo, hi in bands:
        try:
            _design_bandpass(lo, hi, order, sfreq)
        except ValueError as err:
            raise ValueError(f"band {name!r}: {err}") from None
        designs.append(partial(_design_bandpass, lo, hi, order))
    return designs


def _bank_info(info: StreamInfo, *, bands, order) -> StreamInfo:
    _bank_designs(bands, order, info.sfreq)
    n_bands = len(bands)
    return info.replace(
        channels=tuple(f"{ch}:{name}" for name, _, _ in bands for ch in info.channels),
        ch_types=info.ch_types * n_bands,
        units=info.units * n_bands,
    )


def _bank_init(first: Chunk, *, bands, order) -> FilterBankState:
    designs = _bank_designs(bands, order, first.sfreq)
    states = tuple(_sos_init(first, design=design) for design in designs)
    return FilterBankState(bands=states, info=_bank_info(first.info, bands=bands, order=order))


def _bank_step_batch(
    states: Sequence[FilterBankState], chunks: Sequence[Chunk]
) -> tuple[list[FilterBankState], list[list[Chunk]]]:
    """One stacked ``sosfilt`` per band and (design, chunk length) group, via filters' step_batch."""
    if len(states) != len(chunks):
        raise ValueError(f"step_batch: got {len(states)} states for {len(chunks)} chunks.")
    n_bands = {len(s.bands) for s in states}
    if len(n_bands) > 1:
        raise StreamMismatchError(f"step_batch: filter-bank states have different band counts {sorted(n_bands)}.")
    per_band = []
    for b in range(n_bands.pop() if n_bands else 0):
        if len(chunks) == 1:
            new, out = _sos_step(states[0].bands[b], chunks[0])
            per_band.append(([new], [out]))
        else:
            per_band.append(_sos_step_batch([s.bands[b] for s in states], chunks))
    new_states: list[FilterBankState] = []
    outputs: list[list[Chunk]] = []
    for i, (state, chunk) in enumerate(zip(states, chunks)):
        data = np.concatenate([outs[i][0].data for _, outs in per_band], axis=0)
        band_states = tuple(news[i] for news, _ in per_band)
        new_states.append(state if chunk.n_samples == 0 else FilterBankState(bands=band_states, info=state.info))
        outputs.append([Chunk(data, chunk.t0_s, state.info, chunk.seq, chunk.recv_s, chunk.meta)])
    return new_states, outputs


def _bank_step(state: FilterBankState, chunk: Chunk) -> tuple[FilterBankState, list[Chunk]]:
    new_states, outputs = _bank_step_batch([state], [chunk])
    return new_states[0], outputs[0]


def filter_bank(bands: Mapping[str, tuple[float | None, float | None]], *, order: int = 4) -> OpSpec:
    """Fan one stream out into Butterworth bands, stacked in one output chunk.

    Each band is filtered exactly as :func:`~neuraflow.ops.bandpass` would
    (``None`` as low edge gives a low-pass, as high edge a high-pass). Doing the
    fan-out inside one op keeps it one vectorised step per chunk.

    Parameters
    ----------
    bands : mapping of str to (float or None, float or None)
        Band name -> ``(low, high)`` edges in Hz, e.g. ``{"alpha": (8.0, 13.0)}``;
        edges below Nyquist (checked at build time).
    order : int
        Butterworth order of every band (>= 1).

    Returns
    -------
    OpSpec
        Input ``(n_channels, n_samples)``; output ``(n_bands * n_channels, n_samples)``
        at the same rate, channels ``f"{ch}:{band}"`` band-major (all channels of
        the first band, then the second ...), types and units repeated.

    Raises
    ------
    PipelineDefinitionError
        If ``bands`` is empty, a name is empty or contains ``":"``, edges are
        not positive and increasing, both edges are ``None``, or ``order < 1``.

    Examples
    --------
    >>> from neuraflow.ops import filter_bank
    >>> from neuraflow.testing import make_info
    >>> filter_bank({"alpha": (8.0, 13.0), "beta": (13.0, 30.0)}).infer_info(make_info(2, 250.0)).channels
    ('ch0:alpha', 'ch1:alpha', 'ch0:beta', 'ch1:beta')
    """
    where = "ops.filter_bank"
    if not isinstance(bands, Mapping) or not bands:
        raise PipelineDefinitionError(f"{where}: bands must be a non-empty mapping name -> (low_hz, high_hz).")
    order = check_int(where, "order", order, minimum=1)
    checked = []
    for name, edges in bands.items():
        if not isinstance(name, str) or not name or ":" in name:
            raise PipelineDefinitionError(f"{where}: band name {name!r} must be a non-empty string without ':'.")
        try:
            lo, hi = edges
        except (TypeError, ValueError):
            raise PipelineDefinitionError(
                f"{where}: band {name!r}={edges!r} must be a pair (low_hz, high_hz)."
            ) from None
        if lo is None and hi is None:
            raise PipelineDefinitionError(f"{where}: band {name!r} has both edges None.")
        lo = None if lo is None else check_positive(where, f"bands[{name!r}] low", lo)
        hi = None if hi is None else check_positive(where, f"bands[{name!r}] high", hi)
        if lo is not None and hi is not None and lo >= hi:
            raise PipelineDefinitionError(f"{where}: band {name!r}=({lo!r}, {hi!r}) must have low < high (Hz).")
        checked.append((name, lo, hi))
    frozen = tuple(checked)
    return OpSpec(
        kind="filter_bank",
        init=partial(_bank_init, bands=frozen, order=order),
        step=_bank_step,
        infer_info=partial(_bank_info, bands=frozen, order=order),
        params=MappingProxyType({"bands": {n: (lo, hi) for n, lo, hi in frozen}, "order": order}),
        step_batch=_bank_step_batch,
    )


__all__ = ["FilterBankState", "dc_block", "filter_bank", "iir_filter"]
