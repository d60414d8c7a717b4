"""Publish pipeline output on the Lab Streaming Layer: :class:`LSLOutlet`.

Any stream that reaches the sink -- raw samples, filtered data, band powers,
classifier outputs -- becomes an LSL stream that OpenViBE, BCI2000, LabRecorder
or any pylsl program can consume. pylsl is imported when the first outlet is
made, so liblsl reads its configuration (``LSLAPICFG``) in the process that
publishes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from neuraflow.chunk import Chunk, Event, StreamInfo
from neuraflow.errors import PipelineDefinitionError, SinkError

__all__ = ["LSLOutlet"]

_WHERE = "sinks.LSLOutlet"


class LSLOutlet:
    """One LSL outlet per stream reaching the sink, plus one for its events.

    Parameters
    ----------
    name : str
        LSL name of every outlet (what LabRecorder lists, what inlets resolve by).
    type : str
        LSL content type (``"EEG"``, ``"Features"`` ...).
    source_id : str or None
        Prefix of each outlet's LSL source id, which is ``"{source_id}/{stream_id}"``
        (``source_id`` defaults to ``name``): unique per stream and stable across
        restarts, so consumers can resolve one stream exactly.

    Notes
    -----
    An outlet is created on the first chunk of a stream, declaring its channel
    count, nominal rate and float32 format; ``desc/channels`` lists label,
    type and unit of each channel and ``desc/neuraflow/stream_id`` the stream.
    Samples are pushed with their own timestamps (``Chunk.times_s``) converted
    from Unix time to the LSL clock, so consumers see the device time of each
    sample, not the time it was published. Events go to one more outlet,
    ``"{name}-events"`` (type ``"Markers"``, one string channel: the label).

    Idempotent on ``(stream_id, seq)``: a chunk whose ``seq`` is not above the
    last one pushed for its stream is skipped (LSL cannot take samples back).
    A stream whose channel count or rate changes raises
    :class:`~neuraflow.errors.SinkError`. Nothing is buffered: :meth:`flush`
    has nothing to do, and a crash loses nothing that was pushed.
    """

    def __init__(self, name: str, *, type: str = "EEG", source_id: str | None = None) -> None:  # noqa: A002
        for key, val in (("name", name), ("type", type)):
            if not isinstance(val, str) or not val:
                raise PipelineDefinitionError(f"{_WHERE}: {key}={val!r} must be a non-empty string.")
        if source_id is not None and (not isinstance(source_id, str) or not source_id):
            raise PipelineDefinitionError(f"{_WHERE}: source_id={source_id!r} must be a non-empty string or None.")
        self.name = name
        self.type = type
        self.source_id = source_id if source_id is not None else name
        self._reset_runtime()

    def _reset_runtime(self) -> None:
        self._outlets: dict[str, tuple[Any, StreamInfo]] = {}
        self._last_seq: dict[str, int] = {}
        self._event_outlet: Any = None
        self._offset_s: float | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "source_id": self.source_id}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset_runtime()

    # ------------------------------------------------------------------ helpers
    def _clock_offset(self) -> float:
        """Unix time minus LSL time, measured once per open."""
        if self._offset_s is None:
            import pylsl

            self._offset_s = time.time() - pylsl.local_clock()
        return self._offset_s

    def _make_outlet(self, info: StreamInfo) -> Any:
        import pylsl

        lsl_info = pylsl.StreamInfo(self.name, self.type, info.n_channels, info.sfreq, pylsl.cf_float32,
                                    f"{self.source_id}/{info.stream_id}")
        desc = lsl_info.desc()
        channels = desc.append_child("channels")
        for label, kind, unit in zip(info.channels, info.ch_types, info.units):
            ch = channels.append_child("channel")
            ch.append_child_value("label", label)
            ch.append_child_value("type", kind)
            ch.append_child_value("unit", unit)
        desc.append_child("neuraflow").append_child_value("stream_id", info.stream_id)
        try:
            return pylsl.StreamOutlet(lsl_info)
        except Exception as exc:
            raise SinkError(f"{_WHERE} {self.name!r}: cannot create the outlet for {info.stream_id!r}: {exc}") from exc

    def _outlet_for(self, chunk: Chunk) -> Any:
        sid = chunk.stream_id
        entry = self._outlets.get(sid)
        if entry is None:
            outlet = self._make_outlet(chunk.info)
            self._outlets[sid] = (outlet, chunk.info)
            return outlet
        outlet, info = entry
        if chunk.n_channels != info.n_channels or chunk.sfreq != info.sfreq:
            raise SinkError(
                f"{_WHERE} {self.name!r}: stream {sid!r} changed from {info.n_channels} channels at {info.sfreq} Hz "
                f"to {chunk.n_channels} channels at {chunk.sfreq} Hz; an LSL outlet cannot change its shape."
            )
        return outlet

    # ------------------------------------------------------------- sink protocol
    def open(self) -> None:
        """Measure the Unix-to-LSL clock offset; outlets are made on the first chunk of each stream."""
        self._offset_s = None
        self._clock_offset()

    def write_batch(self, chunks: Sequence[Chunk]) -> None:
        """Push every new chunk to its stream's outlet (skipping ``seq`` already pushed)."""
        offset = self._clock_offset()
        for chunk in chunks:
            last = self._last_seq.get(chunk.stream_id)
            if last is not None and chunk.seq <= last:
                continue
            if chunk.n_samples == 0:
                self._last_seq[chunk.stream_id] = chunk.seq
                continue
            outlet = self._outlet_for(chunk)
            stamps = (chunk.times_s - offset).tolist()
            try:
                outlet.push_chunk(np.ascontiguousarray(chunk.data.T), stamps, True)
            except Exception as exc:
                raise SinkError(f"{_WHERE} {self.name!r}: push to {chunk.stream_id!r} failed: {exc}") from exc
            self._last_seq[chunk.stream_id] = chunk.seq

    def write_events(self, events: Sequence[Event]) -> None:
        """Push each event's label to the ``"{name}-events"`` marker outlet at the event's time."""
        if not events:
            return
        import pylsl

        if self._event_outlet is None:
            lsl_info = pylsl.StreamInfo(f"{self.name}-events", "Markers", 1, pylsl.IRREGULAR_RATE, pylsl.cf_string,
                                        f"{self.source_id}/events")
            self._event_outlet = pylsl.StreamOutlet(lsl_info)
        offset = self._clock_offset()
        for event in events:
            self._event_outlet.push_sample([str(event.label)], event.t_s - offset)

    def flush(self) -> None:
        """Nothing to do: every push is sent through at once."""

    def close(self) -> None:
        """Destroy the outlets (consumers see the streams disappear). Idempotent."""
        self._outlets.clear()
        self._event_outlet = None  # _last_seq is kept: a reopened sink still skips what it pushed

    @property
    def stream_ids(self) -> tuple[str, ...]:
        """Streams that have an outlet."""
        return tuple(self._outlets)

    def __repr__(self) -> str:
        return f"LSLOutlet({self.name!r}, type={self.type!r})"
