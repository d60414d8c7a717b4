"""The data that flows through a pipeline: :class:`Chunk`, :class:`StreamInfo`, :class:`Event`.

A chunk is a block of samples of one stream, shape ``(n_channels, n_samples)``,
float32, read-only. Its stream description (:class:`StreamInfo`) is shared by
every chunk of the stream, so carrying it costs one pointer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

import numpy as np

from neuraflow.errors import PipelineDefinitionError, StreamMismatchError

_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _frozen(meta: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if meta is None or isinstance(meta, MappingProxyType):
        return meta if meta is not None else _EMPTY
    return MappingProxyType(dict(meta))


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """Static description of one stream.

    Parameters
    ----------
    stream_id : str
        Unique name of the stream within a deployment, e.g. ``"eeg-0"`` or
        ``"eeg-0/bandpower"`` for a derived stream.
    sfreq : float
        Nominal sampling rate in Hz (rate of columns of ``Chunk.data``).
    channels : tuple of str
        Channel names, ``len == n_channels``.
    ch_types : tuple of str
        Channel types (``"eeg"``, ``"emg"``, ``"misc"``, ``"feature"`` ...).
    units : tuple of str
        Physical unit of each channel (``"V"``, ``"uV"``, ``"log(V^2/Hz)"`` ...).
    meta : Mapping
        Free read-only metadata (device model, serial number, scale factors).
    """

    stream_id: str
    sfreq: float
    channels: tuple[str, ...]
    ch_types: tuple[str, ...] = ()
    units: tuple[str, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)

    def __post_init__(self) -> None:
        if not isinstance(self.stream_id, str) or not self.stream_id:
            raise PipelineDefinitionError(f"StreamInfo: stream_id={self.stream_id!r} must be a non-empty string.")
        if not (isinstance(self.sfreq, (int, float)) and math.isfinite(self.sfreq) and self.sfreq > 0):
            raise PipelineDefinitionError(
                f"StreamInfo {self.stream_id!r}: sfreq={self.sfreq!r} must be a finite number > 0 Hz."
            )
        channels = tuple(str(c) for c in self.channels)
        if not channels:
            raise PipelineDefinitionError(f"StreamInfo {self.stream_id!r}: channels must not be empty.")
        if len(set(channels)) != len(channels):
            raise PipelineDefinitionError(f"StreamInfo {self.stream_id!r}: channel names must be unique.")
        n = len(channels)
        ch_types = tuple(self.ch_types) or ("misc",) * n
        units = tuple(self.units) or ("",) * n
        for name, values in (("ch_types", ch_types), ("units", units)):
            if len(values) != n:
                raise PipelineDefinitionError(
                    f"StreamInfo {self.stream_id!r}: {name} has {len(values)} entries, expected {n} (one per channel)."
                )
        object.__setattr__(self, "sfreq", float(self.sfreq))
        object.__setattr__(self, "channels", channels)
        object.__setattr__(self, "ch_types", ch_types)
        object.__setattr__(self, "units", units)
        object.__setattr__(self, "meta", _frozen(self.meta))

    @property
    def n_channels(self) -> int:
        return len(self.channels)

    def replace(self, **changes: Any) -> StreamInfo:
        """Return a copy with ``changes`` applied (validated again)."""
        return replace(self, **changes)

    def __reduce__(self):  # MappingProxyType does not pickle; store a dict
        return (_make_info, (self.stream_id, self.sfreq, self.channels, self.ch_types, self.units, dict(self.meta)))


def _make_info(stream_id, sfreq, channels, ch_types, units, meta) -> StreamInfo:
    return StreamInfo(stream_id, sfreq, channels, ch_types, units, meta)


@dataclass(frozen=True, slots=True)
class Chunk:
    """A block of samples from one stream plus its provenance.

    Parameters
    ----------
    data : ndarray, shape (n_channels, n_samples), float32
        Samples. Stored C-contiguous and read-only.
    t0_s : float
        Device timestamp of ``data[:, 0]``, seconds since the Unix epoch.
    info : StreamInfo
        Stream description (id, rate, channel names, types, units).
    seq : int
        Per-stream sequence number assigned by the runtime; a gap means a dropped chunk.
    recv_s : float
        Host wall-clock time the chunk was received, seconds since the epoch
        (``nan`` when unknown, e.g. offline data).
    meta : Mapping
        Read-only per-chunk metadata.
    """

    data: np.ndarray
    t0_s: float
    info: StreamInfo
    seq: int = 0
    recv_s: float = math.nan
    meta: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)

    def __post_init__(self) -> None:
        data = self.data
        if not isinstance(data, np.ndarray):
            data = np.asarray(data)
        if data.ndim != 2:
            raise StreamMismatchError(
                f"Chunk of {self.info.stream_id!r}: data must be 2-D (n_channels, n_samples), got shape {data.shape}."
            )
        if data.shape[0] != self.info.n_channels:
            raise StreamMismatchError(
                f"Chunk of {self.info.stream_id!r}: data has {data.shape[0]} channels, "
                f"stream declares {self.info.n_channels}."
            )
        if data.dtype != np.float32 or not data.flags.c_contiguous:
            data = np.ascontiguousarray(data, dtype=np.float32)
        if data.flags.writeable:
            data = data.view()
            data.flags.writeable = False
        if not math.isfinite(self.t0_s):
            raise StreamMismatchError(f"Chunk of {self.info.stream_id!r}: t0_s={self.t0_s!r} must be finite.")
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "meta", _frozen(self.meta))

    # Derived values -----------------------------------------------------
    @property
    def stream_id(self) -> str:
        return self.info.stream_id

    @property
    def sfreq(self) -> float:
        return self.info.sfreq

    @property
    def channels(self) -> tuple[str, ...]:
        return self.info.channels

    @property
    def n_channels(self) -> int:
        return self.data.shape[0]

    @property
    def n_samples(self) -> int:
        return self.data.shape[1]

    @property
    def t_end_s(self) -> float:
        """Device time just after the last sample: ``t0_s + n_samples / sfreq``."""
        return self.t0_s + self.n_samples / self.info.sfreq

    @property
    def times_s(self) -> np.ndarray:
        """Device timestamps of each sample, shape (n_samples,), float64 seconds."""
        return self.t0_s + np.arange(self.n_samples) / self.info.sfreq

    def replace(self, **changes: Any) -> Chunk:
        """Return the next chunk: a copy with ``changes`` applied.

        Changing only ``seq``, ``recv_s``, ``t0_s``, ``info`` or ``meta`` (the runtime's
        re-stamping of every chunk) checks just what changed (``info`` against the
        data's channel count, ``t0_s`` finite) and shares the validated data array;
        a new ``data`` goes through the full validation of the constructor.
        """
        if "data" in changes or not changes.keys() <= _RESTAMP_FIELDS:
            return replace(self, **changes)
        info = changes.get("info", self.info)
        if info is not self.info and info.n_channels != self.data.shape[0]:
            raise StreamMismatchError(
                f"Chunk of {info.stream_id!r}: data has {self.data.shape[0]} channels, "
                f"stream declares {info.n_channels}."
            )
        t0_s = changes.get("t0_s", self.t0_s)
        if t0_s is not self.t0_s and not math.isfinite(t0_s):
            raise StreamMismatchError(f"Chunk of {info.stream_id!r}: t0_s={t0_s!r} must be finite.")
        meta = _frozen(changes["meta"]) if "meta" in changes else self.meta
        return _trusted(
            self.data, t0_s, info, changes.get("seq", self.seq), changes.get("recv_s", self.recv_s), meta
        )

    @classmethod
    def trusted(
        cls,
        data: np.ndarray,
        t0_s: float,
        info: StreamInfo,
        seq: int = 0,
        recv_s: float = math.nan,
        meta: Mapping[str, Any] = _EMPTY,
    ) -> Chunk:
        """Build a chunk *without* validation, for ops' and the runtime's hot paths.

        Data is validated once where it enters (a device's chunk, an op's input);
        chunks derived from it inside the engine skip the constructor's checks and
        copies, which cost more than the numerical work of a tick at hundreds of
        streams. The caller guarantees what :class:`Chunk` would otherwise enforce:
        ``data`` is a read-only, C-contiguous float32 array of shape
        ``(info.n_channels, n_samples)``, ``t0_s`` is finite and ``meta`` is a
        read-only mapping (a ``MappingProxyType``, or the chunk's own ``meta``).
        """
        return _trusted(data, t0_s, info, seq, recv_s, meta)

    def __reduce__(self):
        return (_make_chunk, (np.asarray(self.data), self.t0_s, self.info, self.seq, self.recv_s, dict(self.meta)))


def _make_chunk(data, t0_s, info, seq, recv_s, meta) -> Chunk:
    # unpickling (every chunk a worker delivers to the controller): the chunk was valid when
    # pickled, so only the cheap invariants are checked before skipping the constructor
    if (
        type(data) is np.ndarray
        and data.dtype == np.float32
        and data.ndim == 2
        and data.flags.c_contiguous
        and data.shape[0] == info.n_channels
    ):
        data.flags.writeable = False  # pickle hands back a fresh, writeable array
        return _trusted(data, t0_s, info, seq, recv_s, _frozen(meta))
    return Chunk(data, t0_s, info, seq, recv_s, meta)


_RESTAMP_FIELDS = frozenset({"seq", "recv_s", "t0_s", "info", "meta"})
_new_chunk = object.__new__
_set_data, _set_t0, _set_info = Chunk.data.__set__, Chunk.t0_s.__set__, Chunk.info.__set__
_set_seq, _set_recv, _set_meta = Chunk.seq.__set__, Chunk.recv_s.__set__, Chunk.meta.__set__


def _trusted(data, t0_s, info, seq, recv_s, meta) -> Chunk:
    # the slot descriptors of the frozen dataclass, set directly: no __init__, no __post_init__
    chunk = _new_chunk(Chunk)
    _set_data(chunk, data)
    _set_t0(chunk, t0_s)
    _set_info(chunk, info)
    _set_seq(chunk, seq)
    _set_recv(chunk, recv_s)
    _set_meta(chunk, meta)
    return chunk


@dataclass(frozen=True, slots=True)
class Event:
    """A marker or runtime event on its own stream.

    Parameters
    ----------
    stream_id : str
        The stream the event belongs to (a marker stream, or the data stream
        that a ``"gap"``/``"drop"``/``"reconnect"`` event describes).
    t_s : float
        Device time of the event, seconds since the epoch.
    label : str
        What happened: a marker label (``"T1"``) or a runtime kind (``"gap"``).
    value : float or str
        Marker value, or a number describing the event (e.g. gap length in s).
    meta : Mapping
        Details, e.g. ``{"expected_seq": 10, "got_seq": 12}``.
    """

    stream_id: str
    t_s: float
    label: str
    value: float | str = 0.0
    meta: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)

    def __post_init__(self) -> None:
        object.__setattr__(self, "meta", _frozen(self.meta))

    def __reduce__(self):
        return (Event, (self.stream_id, self.t_s, self.label, self.value, dict(self.meta)))
