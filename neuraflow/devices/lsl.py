"""Lab Streaming Layer inlets: :class:`LSLInlet` (data) and :class:`LSLMarkerInlet` (events).

A stream is found by name, type and/or source id (``resolve_byprop``, or
``resolve_bypred`` for several properties). Timestamps are clock-synchronised
to this host, dejittered and made monotonic by liblsl, then converted from the
LSL clock (``pylsl.local_clock()``) to Unix time so that ``Chunk.t0_s`` is
seconds since the epoch like every other device.

Reconnection is the runtime's job: inlets are created with ``recover=False``,
so when the outlet goes away (its program stopped or crashed) :meth:`read`
raises :class:`~neuraflow.errors.DeviceError`; the runtime closes the device
and calls :meth:`open` again with backoff, which resolves the stream afresh
(a restarted outlet has a new uid) and checks it still has the channels the
pipeline was built for.

pylsl is imported lazily: liblsl reads its configuration (``LSLAPICFG``) when
first used, so importing neuraflow never fixes it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from neuraflow._validate import check_int, check_positive
from neuraflow.chunk import Chunk, Event, StreamInfo
from neuraflow.devices.base import QueuedEventsDevice
from neuraflow.errors import DeviceError, PipelineDefinitionError

__all__ = ["LSLInlet", "LSLMarkerInlet", "marker_event_fields"]

# LSL channel units -> neuraflow unit and scale to SI; voltages are served in volts.
_VOLT = {"microvolts": 1e-6, "microvolt": 1e-6, "uv": 1e-6, "µv": 1e-6, "millivolts": 1e-3, "mv": 1e-3,
         "volts": 1.0, "volt": 1.0, "v": 1.0}


def _pylsl() -> Any:
    import pylsl

    return pylsl


def marker_event_fields(values: Sequence[Any]) -> tuple[str, float | str, dict[str, Any]]:
    """``(label, value, meta)`` of an :class:`~neuraflow.chunk.Event` for one marker sample.

    ``label`` is the first channel as a string (numbers formatted without a
    trailing ``.0``), ``value`` the number for numeric markers or the string,
    and ``meta["values"]`` every channel when there are several.

    Examples
    --------
    >>> marker_event_fields(["T1"])
    ('T1', 'T1', {})
    >>> marker_event_fields([3.0, 1.5])
    ('3', 3.0, {'values': (3.0, 1.5)})
    """
    first = values[0] if len(values) else ""
    if isinstance(first, bytes):
        first = first.decode("utf-8", "replace")
    if isinstance(first, str):
        label, value = first, first
    else:
        value = float(first)
        label = str(int(value)) if value.is_integer() else repr(value)
    meta = {"values": tuple(v.item() if hasattr(v, "item") else v for v in values)} if len(values) > 1 else {}
    return label, value, meta


def _check_selector(where: str, name: str | None, type: str | None, source_id: str | None) -> None:
    for key, val in (("name", name), ("type", type), ("source_id", source_id)):
        if val is not None and (not isinstance(val, str) or not val):
            raise PipelineDefinitionError(f"{where}: {key}={val!r} must be a non-empty string or None.")
    if name is None and type is None and source_id is None:
        raise PipelineDefinitionError(f"{where}: give at least one of name=, type= or source_id= to find the stream.")


def _describe_selector(name: str | None, type: str | None, source_id: str | None) -> str:
    parts = [f"{k}={v!r}" for k, v in (("name", name), ("type", type), ("source_id", source_id)) if v is not None]
    return " ".join(parts)


def _resolve(where: str, name: str | None, type: str | None, source_id: str | None, timeout_s: float) -> Any:
    """The first stream matching every given property, or :class:`DeviceError`."""
    pylsl = _pylsl()
    props = [(k, v) for k, v in (("name", name), ("type", type), ("source_id", source_id)) if v is not None]
    try:
        if len(props) == 1:
            found = pylsl.resolve_byprop(props[0][0], props[0][1], 1, timeout_s)
        else:
            # XPath 1.0 predicate; quotes in values are not expected in LSL names.
            found = pylsl.resolve_bypred(" and ".join(f"{k}='{v}'" for k, v in props), 1, timeout_s)
    except Exception as exc:  # liblsl errors are RuntimeErrors without context
        raise DeviceError(f"{where}: resolving {_describe_selector(name, type, source_id)} failed: {exc}") from exc
    if not found:
        raise DeviceError(
            f"{where}: no LSL stream with {_describe_selector(name, type, source_id)} found within {timeout_s} s "
            "(is the outlet running and reachable? check LSLAPICFG)."
        )
    return found[0]


def _channels_of(lsl_info: Any) -> tuple[list[str], list[str], list[str], list[float]]:
    """Labels, types, units and SI scales from an LSL ``desc/channels`` (defaults when absent)."""
    n = lsl_info.channel_count()
    labels, types, units, scales = [], [], [], []
    ch = lsl_info.desc().child("channels").child("channel")
    for k in range(n):
        label = ch.child_value("label") if not ch.empty() else ""
        kind = ch.child_value("type") if not ch.empty() else ""
        unit = ch.child_value("unit") if not ch.empty() else ""
        scale = _VOLT.get(unit.strip().lower())
        labels.append(label or f"ch{k}")
        types.append(kind.lower() or "misc")
        units.append("V" if scale is not None else unit)
        scales.append(1.0 if scale is None else scale)
        if not ch.empty():
            ch = ch.next_sibling()
    if len(set(labels)) != len(labels):
        labels = [f"{label}-{k}" for k, label in enumerate(labels)]
    return labels, types, units, scales



def _close_inlet(inlet: Any) -> None:
    """Close a pylsl inlet if there is one; closing a lost stream may fail, with nothing to release."""
    if inlet is None:
        return
    try:
        inlet.close_stream()
    except Exception:  # noqa: BLE001 - see docstring
        pass

class _LSLBase(QueuedEventsDevice):
    """What both inlets share: configuration, resolving, the LSL-to-Unix clock offset."""

    blocking = True
    _where = "devices.LSL"

    def _init_selector(self, name, type, source_id, stream_id, resolve_timeout_s) -> None:
        _check_selector(self._where, name, type, source_id)
        self.name, self.type, self.source_id = name, type, source_id
        if stream_id is not None and (not isinstance(stream_id, str) or not stream_id):
            raise PipelineDefinitionError(f"{self._where}: stream_id={stream_id!r} must be a non-empty string or None.")
        self.stream_id = stream_id if stream_id is not None else (name or type or source_id)
        self.resolve_timeout_s = check_positive(self._where, "resolve_timeout_s", resolve_timeout_s)

    def _resolve(self) -> Any:
        return _resolve(self._where, self.name, self.type, self.source_id, self.resolve_timeout_s)

    def _inlet(self, lsl_info: Any, dejitter: bool, max_buflen: int = 360) -> Any:
        pylsl = _pylsl()
        flags = pylsl.proc_clocksync | pylsl.proc_monotonize
        if dejitter:
            flags |= pylsl.proc_dejitter
        try:
            inlet = pylsl.StreamInlet(lsl_info, max_buflen=max_buflen, recover=False, processing_flags=flags)
            inlet.open_stream(timeout=self.resolve_timeout_s)
        except Exception as exc:
            raise DeviceError(f"{self._where} {self.stream_id!r}: cannot open the inlet: {exc}") from exc
        # LSL timestamps count from an arbitrary origin (boot); Unix time = LSL time + offset.
        self._clock_offset_s = time.time() - pylsl.local_clock()
        return inlet

    def _lost(self, exc: Exception) -> DeviceError:
        return DeviceError(
            f"{self._where} {self.stream_id!r}: the LSL outlet "
            f"({_describe_selector(self.name, self.type, self.source_id)}) "
            f"was lost: {exc}; reopen to resolve it again."
        )

    def _pull_chunk(self, timeout_s: float, max_samples: int, **kwargs: Any) -> tuple[Any, Any]:
        """``inlet.pull_chunk`` waiting up to ``timeout_s`` for the first sample; lost outlet -> DeviceError."""
        inlet = self._inlet_obj
        if inlet is None:
            raise DeviceError(f"{self._where} {self.stream_id!r}: read() before open().")
        try:
            return inlet.pull_chunk(timeout=max(0.0, timeout_s), max_samples=max_samples, min_samples=1, **kwargs)
        except Exception as exc:
            raise self._lost(exc) from exc

    def __getstate__(self) -> dict[str, Any]:
        # The inlet and pending events belong to this process; a copy reopens.
        state = dict(self.__dict__)
        state.update(_inlet_obj=None, _events=[])
        return state


class LSLMarkerInlet(_LSLBase):
    """Markers of an LSL stream (string or irregular-rate), as :class:`~neuraflow.chunk.Event` objects.

    Parameters
    ----------
    name, type, source_id : str or None
        Properties of the LSL stream to resolve (at least one; all given must match).
        ``type`` is often ``"Markers"``.
    stream_id : str or None
        ``stream_id`` of the events; ``None`` for ``name`` (else ``type``, else ``source_id``).
    resolve_timeout_s : float
        How long :meth:`open` looks for the stream.

    Attributes
    ----------
    info : StreamInfo
        A placeholder 1-channel description (``"marker"``, sfreq 1 Hz, ``meta["irregular"]``),
        so the device fits the :class:`~neuraflow.devices.base.Device` protocol.

    Notes
    -----
    A marker inlet produces no samples: :meth:`read` always returns ``None``
    and the markers pulled come out of :meth:`drain_events`. The runtime drains
    events after each accepted chunk, so in a pipeline pass the marker inlet to
    the data inlet (``LSLInlet(name="EEG", markers=LSLMarkerInlet(type="Markers"))``):
    its markers then travel with the EEG chunks. Used alone (tests, scripts),
    call :meth:`read` then :meth:`drain_events`. Events are described by
    :func:`marker_event_fields`; ``t_s`` is the marker's synchronised LSL
    timestamp in Unix time.
    """

    _where = "devices.LSLMarkerInlet"

    def __init__(
        self,
        name: str | None = None,
        *,
        type: str | None = None,  # noqa: A002 - LSL's own property name
        source_id: str | None = None,
        stream_id: str | None = None,
        resolve_timeout_s: float = 2.0,
    ) -> None:
        self._init_selector(name, type, source_id, stream_id, resolve_timeout_s)
        self.info = StreamInfo(self.stream_id, 1.0, ("marker",), ("stim",), ("",),
                               meta={"device": "lsl", "irregular": True})
        self._inlet_obj: Any = None
        self._events: list[Event] = []
        self._clock_offset_s = 0.0

    def open(self) -> None:
        """Resolve the marker stream and open an inlet (no dejittering: markers are irregular)."""
        self.close()
        lsl_info = self._resolve()
        self._inlet_obj = self._inlet(lsl_info, dejitter=False)

    def pull(self, timeout_s: float = 0.0) -> int:
        """Pull every marker available (waiting up to ``timeout_s`` for the first); return how many.

        Raises
        ------
        DeviceError
            If the inlet is not open or the outlet was lost.
        """
        samples, stamps = self._pull_chunk(timeout_s, 1024)
        for values, t in zip(samples or [], stamps or []):
            label, value, meta = marker_event_fields(values)
            self._events.append(Event(self.stream_id, float(t) + self._clock_offset_s, label, value, meta))
        return len(stamps or [])

    def read(self, timeout_s: float) -> Chunk | None:
        """Pull markers into :meth:`drain_events`; always returns ``None`` (no samples)."""
        self.pull(timeout_s)
        return None

    def close(self) -> None:
        """Close the inlet. Idempotent."""
        _close_inlet(self._inlet_obj)
        self._inlet_obj = None

    def __repr__(self) -> str:
        return f"LSLMarkerInlet({_describe_selector(self.name, self.type, self.source_id)})"


class LSLInlet(_LSLBase):
    """Samples of a regular-rate numeric LSL stream, as chunks in Unix time.

    Parameters
    ----------
    name, type, source_id : str or None
        Properties of the LSL stream to resolve (at least one; all given must match).
    stream_id : str or None
        Name of the neuraflow stream; ``None`` for ``name`` (else ``type``, else ``source_id``).
    resolve_timeout_s : float
        How long :meth:`open` (and a lazy :attr:`info`) look for the stream.
    chunk_max_samples : int
        Most samples per chunk.
    dejitter : bool
        Let liblsl smooth timestamps (``proc_dejitter``); clock sync and
        monotonic timestamps are always on.
    expected_sfreq : float or None
        Nominal rate the pipeline is built for; :meth:`open` fails if the
        stream declares another. With ``channels``, lets :attr:`info` be known
        without the stream being online.
    channels : sequence of str or None
        Channel names the pipeline expects (the stream must have as many
        channels; values are served as sent, unscaled).
    markers : LSLMarkerInlet or None
        A marker stream opened, read and closed with this one; its markers
        come out of this device's :meth:`drain_events`.

    Attributes
    ----------
    info : StreamInfo
        With ``channels`` and ``expected_sfreq``: built from them (units ``""``).
        Otherwise resolved lazily on first access -- the LSL stream must be
        online then (within ``resolve_timeout_s``) -- from its nominal rate and
        ``desc/channels`` (labels, types; voltage units become ``"V"`` and the
        samples are scaled to volts). Once known it is fixed: a later
        :meth:`open` that finds another channel count or rate raises
        :class:`~neuraflow.errors.DeviceError`.

    Raises
    ------
    PipelineDefinitionError
        On invalid parameters.

    Notes
    -----
    :meth:`read` waits up to ``timeout_s`` for the first sample, then takes
    every sample already buffered (up to ``chunk_max_samples``). ``t0_s`` is
    the first sample's synchronised, dejittered LSL timestamp plus the offset
    ``time.time() - pylsl.local_clock()`` measured at :meth:`open`. When the
    outlet goes away, :meth:`read` raises :class:`~neuraflow.errors.DeviceError`
    and the runtime reconnects by calling :meth:`open` again.
    """

    _where = "devices.LSLInlet"

    def __init__(
        self,
        name: str | None = None,
        *,
        type: str | None = None,  # noqa: A002 - LSL's own property name
        source_id: str | None = None,
        stream_id: str | None = None,
        resolve_timeout_s: float = 2.0,
        chunk_max_samples: int = 1024,
        dejitter: bool = True,
        expected_sfreq: float | None = None,
        channels: Sequence[str] | None = None,
        markers: LSLMarkerInlet | None = None,
    ) -> None:
        self._init_selector(name, type, source_id, stream_id, resolve_timeout_s)
        self.chunk_max_samples = check_int(self._where, "chunk_max_samples", chunk_max_samples)
        if not isinstance(dejitter, bool):
            raise PipelineDefinitionError(f"{self._where}: dejitter={dejitter!r} must be True or False.")
        self.dejitter = dejitter
        self.expected_sfreq = None if expected_sfreq is None else check_positive(
            self._where, "expected_sfreq", expected_sfreq)
        if channels is not None:
            channels = tuple(str(c) for c in channels)
            if not channels:
                raise PipelineDefinitionError(f"{self._where}: channels=() must name at least one channel or be None.")
        self.channels = channels
        if markers is not None and not isinstance(markers, LSLMarkerInlet):
            raise PipelineDefinitionError(f"{self._where}: markers={markers!r} must be an LSLMarkerInlet or None.")
        self.markers = markers
        self._info: StreamInfo | None = None
        if channels is not None and self.expected_sfreq is not None:
            self._info = StreamInfo(self.stream_id, self.expected_sfreq, channels,
                                    meta={"device": "lsl", "lsl_selector": self._selector()})
        self._scales: np.ndarray | None = None
        self._reset_runtime()

    def _selector(self) -> str:
        return _describe_selector(self.name, self.type, self.source_id)

    def _reset_runtime(self) -> None:
        self._inlet_obj: Any = None
        self._clock_offset_s = 0.0
        self._events: list[Event] = []

    # ------------------------------------------------------------------ info
    def _info_from(self, lsl_info: Any) -> tuple[StreamInfo, np.ndarray]:
        """StreamInfo and per-channel scales of a resolved stream, checked against the expectation."""
        where = f"{self._where} {self.stream_id!r}"
        fmt = lsl_info.channel_format()
        pylsl = _pylsl()
        if fmt == pylsl.cf_string:
            raise DeviceError(f"{where}: the LSL stream {lsl_info.name()!r} carries strings (markers); "
                              "read it with LSLMarkerInlet.")
        sfreq = float(lsl_info.nominal_srate())
        if sfreq <= 0:
            raise DeviceError(f"{where}: the LSL stream {lsl_info.name()!r} has an irregular rate; "
                              "read it with LSLMarkerInlet.")
        n = lsl_info.channel_count()
        if self.expected_sfreq is not None and not math.isclose(sfreq, self.expected_sfreq, rel_tol=1e-6):
            raise DeviceError(f"{where}: the LSL stream declares {sfreq} Hz, expected_sfreq={self.expected_sfreq} Hz.")
        if self.channels is not None and n != len(self.channels):
            raise DeviceError(f"{where}: channel count changed: expected {len(self.channels)} channels "
                              f"{self.channels}, the LSL stream {lsl_info.name()!r} has {n}.")
        if self._info is not None and n != self._info.n_channels:
            raise DeviceError(f"{where}: channel count changed: expected {self._info.n_channels} channels, "
                              f"the LSL stream {lsl_info.name()!r} now has {n}.")
        if self._info is not None and not math.isclose(sfreq, self._info.sfreq, rel_tol=1e-6):
            raise DeviceError(f"{where}: sampling rate changed: expected {self._info.sfreq} Hz, "
                              f"the LSL stream {lsl_info.name()!r} now declares {sfreq} Hz.")
        labels, types, units, scales = _channels_of(lsl_info)
        meta = {"device": "lsl", "lsl_selector": self._selector(), "lsl_name": lsl_info.name(),
                "lsl_type": lsl_info.type(), "source_id": lsl_info.source_id(), "lsl_labels": tuple(labels)}
        if self.channels is not None:
            info = StreamInfo(self.stream_id, sfreq, self.channels, meta=meta)
            scales = [1.0] * n  # the caller chose names, not units: serve the stream's values as sent
        else:
            info = StreamInfo(self.stream_id, sfreq, labels, types, units, meta)
        return info, np.asarray(scales, dtype=np.float32)

    def _full_info(self, inlet: Any) -> Any:
        # A resolved description lacks <desc> (channel labels, units): only an inlet fetches it.
        try:
            return inlet.info(timeout=self.resolve_timeout_s)
        except Exception as exc:
            raise DeviceError(f"{self._where} {self.stream_id!r}: cannot read the stream description: {exc}") from exc

    @property
    def info(self) -> StreamInfo:  # type: ignore[override]
        """Stream description (resolves the LSL stream on first access unless ``channels`` and
        ``expected_sfreq`` were given)."""
        if self._info is None:
            lsl_info = self._resolve()
            self._info_from(lsl_info)  # format and rate checks before connecting
            inlet = _pylsl().StreamInlet(lsl_info, max_buflen=1, recover=False)
            try:
                self._info, self._scales = self._info_from(self._full_info(inlet))
            finally:
                inlet.close_stream()
                del inlet
        return self._info

    # --------------------------------------------------------- device protocol
    def open(self) -> None:
        """Resolve the stream, check it against :attr:`info` and open an inlet.

        Raises
        ------
        DeviceError
            If no stream is found within ``resolve_timeout_s``, or it is a
            marker/irregular stream, or its channel count or rate differs from
            :attr:`info` (e.g. the outlet restarted with another montage).
        """
        self.close()
        lsl_info = self._resolve()
        self._info_from(lsl_info)  # format, rate and channel count before connecting
        inlet = self._inlet(lsl_info, self.dejitter)
        try:
            info, scales = self._info_from(self._full_info(inlet))
        except Exception:
            inlet.close_stream()
            raise
        if self._info is None:
            self._info = info
        self._scales = None if np.all(scales == 1.0) else scales[:, None]
        self._inlet_obj = inlet
        if self.markers is not None:
            try:
                self.markers.open()
            except Exception:
                self.close()
                raise

    def read(self, timeout_s: float) -> Chunk | None:
        """Return the samples that arrived (waiting up to ``timeout_s`` for the first), or ``None``.

        Returns
        -------
        chunk : Chunk or None
            Shape (n_channels, n_samples), float32, ``t0_s`` in Unix time.

        Raises
        ------
        DeviceError
            If the device is not open or the outlet was lost.
        """
        samples, stamps = self._pull_chunk(timeout_s, self.chunk_max_samples, as_numpy=True)
        if self.markers is not None:
            self.markers.pull(0.0)
            self._events.extend(self.markers.drain_events())
        if len(stamps) == 0:
            return None
        now = time.time()
        data = np.asarray(samples).T
        if self._scales is not None:
            data = data * self._scales
        return Chunk(data, float(stamps[0]) + self._clock_offset_s, self._info, recv_s=now,
                     meta={"lsl_t0": float(stamps[0])})

    def close(self) -> None:
        """Close the inlet (and the marker inlet). Idempotent."""
        _close_inlet(self._inlet_obj)
        self._inlet_obj = None
        if self.markers is not None:
            self.markers.close()

    def __repr__(self) -> str:
        return f"LSLInlet({self._selector()}, stream_id={self.stream_id!r})"
