"""Helpers shared by the artifact ops (:mod:`neuraflow.ops.eog` and :mod:`neuraflow.ops.artifacts`).

Channel selection by name or frontal proxy, Butterworth designs, zero-started
``sosfilt`` delay lines and output chunk assembly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import signal

from neuraflow.chunk import Chunk, StreamInfo
from neuraflow.errors import PipelineDefinitionError

#: Frontal channels that stand in for EOG when no EOG channel is named.
FRONTAL_PROXIES: tuple[str, ...] = ("Fp1", "Fp2")


def channel_indices(info: StreamInfo, names: Sequence[str], what: str) -> tuple[int, ...]:
    """Rows of ``names`` in ``info``; ``ValueError`` naming ``what`` for a missing one."""
    missing = [n for n in names if n not in info.channels]
    if missing:
        raise ValueError(f"{what} {missing} not in the stream's channels {info.channels}.")
    return tuple(info.channels.index(n) for n in names)


def check_names(where: str, name: str, value: Sequence[str] | None) -> tuple[str, ...] | None:
    """Validate a factory's channel-name list (a str is one name); ``None`` passes through."""
    if value is None:
        return None
    names = (value,) if isinstance(value, str) else tuple(value)
    if not names or not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
        raise PipelineDefinitionError(f"{where}: {name}={value!r} must be distinct non-empty channel names.")
    return names


def pick_rows(info: StreamInfo, names: tuple[str, ...] | None, proxies: tuple[str, ...], what: str) -> tuple[int, ...]:
    """Rows of ``names``, or (``names is None``) of the ``proxies`` present in the stream."""
    if names is not None:
        return channel_indices(info, names, what)
    found = tuple(info.channels.index(p) for p in proxies if p in info.channels)
    if not found:
        raise ValueError(f"no {what} given and none of the proxies {proxies} is in the channels {info.channels}.")
    return found


def butter_sos(kind: str, freqs: Any, sfreq: float, order: int) -> np.ndarray:
    """Butterworth second-order sections, shape (n_sections, 6); ``freqs`` in Hz."""
    return np.ascontiguousarray(signal.butter(order, freqs, btype=kind, fs=sfreq, output="sos"))


def sosfilt_rows(sos: np.ndarray, x: np.ndarray, zi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``sosfilt`` along the last axis of ``x`` from delay line ``zi``; identity for an empty ``sos``."""
    if sos.shape[0] == 0:
        return x, zi
    return signal.sosfilt(np.array(sos), x, axis=-1, zi=zi)


def zero_zi(sos: np.ndarray, n_rows: int) -> np.ndarray:
    """A delay line at rest, shape (n_sections, n_rows, 2)."""
    return np.zeros((sos.shape[0], n_rows, 2))


def with_data(chunk: Chunk, data: np.ndarray, info: StreamInfo | None = None, **meta: Any) -> Chunk:
    """``chunk`` with float32 ``data`` (and ``info``, extra ``meta`` when given)."""
    merged = {**chunk.meta, **meta} if meta else chunk.meta
    return Chunk(data.astype(np.float32), chunk.t0_s, info or chunk.info, chunk.seq, chunk.recv_s, merged)
