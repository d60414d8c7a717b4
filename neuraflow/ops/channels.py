"""Channel-space ops: :func:`rereference` (a linear map) and :func:`pick_channels` (a selection).

Both are stateless per sample: the state only holds what ``init`` derived
from the stream's channel names (the re-referencing matrix, the picked rows
and the output :class:`StreamInfo`). Names are checked at build time
(``infer_info``); an unknown name raises ``ValueError`` with a did-you-mean.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType
from typing import Union

import numpy as np

from neuraflow._validate import suggest
from neuraflow.chunk import Chunk, StreamInfo
from neuraflow.errors import PipelineDefinitionError
from neuraflow.ops.base import OpSpec, check_same_stream
from neuraflow.ops.filters import _readonly
from neuraflow.ops.fir import group_batch

Reference = Union[str, Sequence[str], Mapping[str, tuple[str, str]], np.ndarray]


def _index(info: StreamInfo, name: str, what: str = "channel") -> int:
    try:
        return info.channels.index(name)
    except ValueError:
        raise ValueError(
            f"{what} {name!r} is not in stream {info.stream_id!r} (channels: {', '.join(info.channels)})."
            + suggest(name, info.channels)
        ) from None


def _common(values: Sequence[str], fallback: str) -> str:
    return values[0] if len(set(values)) == 1 else fallback


@dataclass(frozen=True, eq=False)
class LinearState:
    """A fixed channel map ``y = matrix @ x``.

    Parameters
    ----------
    matrix : ndarray, shape (n_out, n_in), float64
        Read-only.
    info : StreamInfo
        Output description (at the input's rate, which a chunk must keep).
    """

    matrix: np.ndarray
    info: StreamInfo


def _reref_plan(info: StreamInfo, *, mode: str, ref, names: tuple[str, ...] | None) -> tuple[np.ndarray, StreamInfo]:
    n = info.n_channels
    eeg = [i for i, t in enumerate(info.ch_types) if t == "eeg"]
    if mode in ("average", "channels"):
        if not eeg:
            raise ValueError(f"stream {info.stream_id!r} has no channel of type 'eeg' to re-reference.")
        refs = eeg if mode == "average" else [_index(info, name, "reference channel") for name in ref]
        weights = np.zeros(n)
        weights[refs] = 1.0 / len(refs)
        matrix = np.eye(n)
        matrix[eeg] -= weights
        return matrix, info
    if mode == "bipolar":
        pairs = [(_index(info, a, "anode"), _index(info, c, "cathode")) for a, c in ref.values()]
        used = {i for pair in pairs for i in pair}
        kept = [i for i in range(n) if i not in used]
        rows = list(np.eye(n)[kept])
        for a, c in pairs:
            row = np.zeros(n)
            row[a] += 1.0
            row[c] -= 1.0
            rows.append(row)
        clash = set(ref) & {info.channels[i] for i in kept}
        if clash:
            raise ValueError(f"bipolar channel name(s) {sorted(clash)} clash with kept channels of the stream.")
        pair_types = [_common([info.ch_types[a], info.ch_types[c]], "misc") for a, c in pairs]
        pair_units = [_common([info.units[a], info.units[c]], "") for a, c in pairs]
        out = info.replace(
            channels=tuple(info.channels[i] for i in kept) + tuple(ref),
            ch_types=tuple(info.ch_types[i] for i in kept) + tuple(pair_types),
            units=tuple(info.units[i] for i in kept) + tuple(pair_units),
        )
        return np.array(rows).reshape(len(rows), n), out
    matrix = np.asarray(ref, dtype=np.float64)
    if matrix.shape[1] != n:
        raise ValueError(f"matrix has {matrix.shape[1]} columns, the stream has {n} channels.")
    n_out = matrix.shape[0]
    if names is None:
        if n_out != n:
            raise ValueError(f"matrix has {n_out} rows (!= {n} input channels): give names for the outputs.")
        names = info.channels
    out = info.replace(
        channels=names,
        ch_types=(_common(info.ch_types, "misc"),) * n_out,
        units=(_common(info.units, ""),) * n_out,
    )
    return matrix, out


def _reref_info(info: StreamInfo, **plan) -> StreamInfo:
    return _reref_plan(info, **plan)[1]


def _reref_init(first: Chunk, **plan) -> LinearState:
    matrix, info = _reref_plan(first.info, **plan)
    return LinearState(matrix=_readonly(np.ascontiguousarray(matrix)), info=info)


def _linear_step_many(states: list[LinearState], chunks: list[Chunk]) -> tuple[list[LinearState], list[list[Chunk]]]:
    """Streams sharing one matrix: one matmul on their samples concatenated in time."""
    for state, chunk in zip(states, chunks):
        check_same_stream("ops.rereference", chunk, sfreq=state.info.sfreq, n_channels=state.matrix.shape[1])
    x = np.concatenate([c.data for c in chunks], axis=1)
    y = (states[0].matrix @ x).astype(np.float32)
    bounds = np.cumsum([c.n_samples for c in chunks])[:-1]
    ys = np.split(y, bounds, axis=1)
    return states, [[Chunk(yi, c.t0_s, s.info, c.seq, c.recv_s, c.meta)] for s, c, yi in zip(states, chunks, ys)]


def _linear_key(state: LinearState, chunk: Chunk) -> Hashable:
    return id(state.matrix)


def _linear_step(state: LinearState, chunk: Chunk) -> tuple[LinearState, list[Chunk]]:
    states, outputs = _linear_step_many([state], [chunk])
    return states[0], outputs[0]


def rereference(ref: Reference = "average", *, names: Sequence[str] | None = None) -> OpSpec:
    """Re-reference channels, as ``mne.set_eeg_reference`` / ``mne.set_bipolar_reference`` do.

    Parameters
    ----------
    ref : "average", sequence of str, mapping or ndarray
        - ``"average"``: subtract the mean of the EEG channels (``ch_types == "eeg"``)
          from each EEG channel; other channels pass unchanged.
        - sequence of channel names (one channel, linked mastoids ``["M1", "M2"]`` ...):
          subtract their mean from each EEG channel (the reference channels stay,
          re-referenced too, as in MNE).
        - mapping ``name -> (anode, cathode)``: bipolar derivations
          ``x[anode] - x[cathode]``; as ``mne.set_bipolar_reference`` (``drop_refs=True``)
          the channels used by a pair are dropped, the others kept in order, and
          the bipolar channels appended in mapping order.
        - ndarray, shape (n_out, n_in): any linear map ``y = ref @ x``.
    names : sequence of str, optional
        Output channel names for a matrix ``ref`` (default: the input names,
        allowed only when ``n_out == n_in``).

    Returns
    -------
    OpSpec
        Input ``(n_in, n_samples)``; output ``(n_out, n_samples)`` at the same rate.
        A matrix's outputs get the input's type and unit when all channels share
        them (else ``"misc"`` and ``""``).

    Raises
    ------
    PipelineDefinitionError
        For an unknown string, an empty reference, a matrix that is not 2-D and
        finite, or ``names`` of the wrong length or with duplicates.
    ValueError
        At build time, for a channel not in the stream (with a did-you-mean), a
        stream without EEG channels, or a matrix whose width is not ``n_in``.

    Examples
    --------
    >>> from neuraflow.ops import rereference
    >>> from neuraflow.testing import make_info
    >>> rereference({"c0-c1": ("ch0", "ch1")}).infer_info(make_info(3, 250.0)).channels
    ('ch2', 'c0-c1')
    """
    where = "ops.rereference"
    if names is not None and not isinstance(ref, np.ndarray):
        raise PipelineDefinitionError(f"{where}: names is only used with a matrix ref.")
    if isinstance(ref, str):
        if ref != "average":
            raise PipelineDefinitionError(
                f"{where}: ref={ref!r} is not 'average'; give a list of channel names for a channel reference."
            )
        mode, frozen, shown = "average", None, "average"
    elif isinstance(ref, Mapping):
        if not ref:
            raise PipelineDefinitionError(f"{where}: the bipolar mapping is empty.")
        for name, pair in ref.items():
            if not (isinstance(name, str) and name and isinstance(pair, (tuple, list)) and len(pair) == 2
                    and all(isinstance(p, str) for p in pair)):
                raise PipelineDefinitionError(
                    f"{where}: bipolar entry {name!r}: {pair!r} must be name -> (anode, cathode) channel names."
                )
        mode, frozen = "bipolar", MappingProxyType({k: tuple(v) for k, v in ref.items()})
        shown = dict(frozen)
    elif isinstance(ref, np.ndarray):
        if ref.ndim != 2 or ref.size == 0 or not np.all(np.isfinite(ref)):
            raise PipelineDefinitionError(f"{where}: a matrix ref must be 2-D (n_out, n_in), non-empty and finite.")
        frozen = _readonly(np.array(ref, dtype=np.float64))
        if names is not None:
            names = tuple(str(n) for n in names)
            if len(names) != ref.shape[0] or len(set(names)) != len(names):
                raise PipelineDefinitionError(
                    f"{where}: names must be {ref.shape[0]} unique channel names (one per matrix row), got {names!r}."
                )
        mode, shown = "matrix", frozen
    else:
        frozen = tuple(ref)
        if not frozen or not all(isinstance(c, str) for c in frozen) or len(set(frozen)) != len(frozen):
            raise PipelineDefinitionError(
                f"{where}: ref={ref!r} must be 'average', distinct channel names, a mapping or a matrix."
            )
        mode, shown = "channels", frozen
    plan = {"mode": mode, "ref": frozen, "names": names}
    return OpSpec(
        kind="rereference",
        init=partial(_reref_init, **plan),
        step=_linear_step,
        infer_info=partial(_reref_info, **plan),
        params=MappingProxyType({"ref": shown, "names": names}),
        step_batch=partial(group_batch, key=_linear_key, step_many=_linear_step_many),
    )


# --- pick_channels -------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PickState:
    """Rows kept by :func:`pick_channels`.

    Parameters
    ----------
    index : tuple of int
        Input rows, in output order.
    n_in : int
        Input channel count.
    info : StreamInfo
        Output description (at the input's rate, which a chunk must keep).
    """

    index: tuple[int, ...]
    n_in: int
    info: StreamInfo


def _pick_index(info: StreamInfo, *, names: tuple[str, ...] | None, types: tuple[str, ...] | None) -> list[int]:
    if names is not None:
        index = [_index(info, name) for name in names]
    else:
        index = list(range(info.n_channels))
    if types is not None:
        present = sorted(set(info.ch_types))
        for t in types:
            if t not in present:
                raise ValueError(
                    f"channel type {t!r} is not in stream {info.stream_id!r} (types: {', '.join(present)})."
                    + suggest(t, present)
                )
        index = [i for i in index if info.ch_types[i] in types]
        if not index:
            raise ValueError(f"no channel of {names!r} has a type in {types!r}.")
    return index


def _pick_info(info: StreamInfo, **pick) -> StreamInfo:
    index = _pick_index(info, **pick)
    return info.replace(
        channels=tuple(info.channels[i] for i in index),
        ch_types=tuple(info.ch_types[i] for i in index),
        units=tuple(info.units[i] for i in index),
    )


def _pick_init(first: Chunk, **pick) -> PickState:
    index = tuple(_pick_index(first.info, **pick))
    return PickState(index=index, n_in=first.n_channels, info=_pick_info(first.info, **pick))


def _pick_step(state: PickState, chunk: Chunk) -> tuple[PickState, list[Chunk]]:
    check_same_stream("ops.pick_channels", chunk, sfreq=state.info.sfreq, n_channels=state.n_in)
    data = chunk.data[list(state.index)]
    return state, [Chunk(data, chunk.t0_s, state.info, chunk.seq, chunk.recv_s, chunk.meta)]


def pick_channels(names: Sequence[str] | None = None, *, types: Sequence[str] | None = None) -> OpSpec:
    """Keep channels by name and/or type.

    Parameters
    ----------
    names : sequence of str, optional
        Channels to keep, in this output order.
    types : sequence of str, optional
        Channel types to keep (``"eeg"``, ``"emg"`` ...); with ``names``, keeps
        the named channels of these types. Give ``names``, ``types`` or both.

    Returns
    -------
    OpSpec
        ``(n_picked, n_samples)`` chunks at the same rate; names, types and units follow the picks.

    Raises
    ------
    PipelineDefinitionError
        If neither is given, or a list is empty, has duplicates or non-strings.
    ValueError
        At build time, for a name or type not in the stream (with a did-you-mean)
        or an empty selection.

    Examples
    --------
    >>> from neuraflow.ops import pick_channels
    >>> from neuraflow.testing import make_info
    >>> pick_channels(["ch2", "ch0"]).infer_info(make_info(3, 250.0)).channels
    ('ch2', 'ch0')
    """
    where = "ops.pick_channels"
    if names is None and types is None:
        raise PipelineDefinitionError(f"{where}: give names, types or both.")
    checked = {}
    for label, values in (("names", names), ("types", types)):
        if values is None:
            checked[label] = None
            continue
        if isinstance(values, str):
            values = (values,)
        values = tuple(values)
        if not values or not all(isinstance(v, str) and v for v in values) or len(set(values)) != len(values):
            raise PipelineDefinitionError(f"{where}: {label}={values!r} must be distinct non-empty strings.")
        checked[label] = values
    return OpSpec(
        kind="pick_channels",
        init=partial(_pick_init, **checked),
        step=_pick_step,
        infer_info=partial(_pick_info, **checked),
        params=MappingProxyType(dict(checked)),
    )


__all__ = ["LinearState", "PickState", "pick_channels", "rereference"]
