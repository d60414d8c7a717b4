"""The device protocol: plain Python, no Ray.

A device reads samples from hardware, a file or a generator and returns
:class:`~neuraflow.chunk.Chunk` objects timestamped with device time. The
runtime wraps every device in a long-lived actor that assigns ``seq``, keeps a
bounded ring buffer, applies backpressure, reconnects with backoff and records
gaps as events; a device only has to do I/O and decoding.

Devices are pickled to the actor before :meth:`Device.open` is called, so the
constructor must only store configuration (no open handles).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from neuraflow.chunk import Chunk, Event, StreamInfo


@runtime_checkable
class Device(Protocol):
    """What the runtime needs from a device.

    Attributes
    ----------
    info : StreamInfo
        Stream id, nominal sfreq, channel names/types/units; known before ``open``.
    blocking : bool
        True when ``read`` waits on I/O (serial, socket, BLE): the runtime then
        reads it from a dedicated thread. False for devices that can be polled
        with ``timeout_s=0`` from the processing loop (synthetic, file playback).
    ray_resources : Mapping[str, float] or None (optional attribute)
        Custom Ray resources of the node where the hardware is plugged in
        (``{"eeg-dongle-1": 1}``): the device's dedicated worker asks for them,
        so it is placed (and restarted) on that node only.
    colocate : str or None (optional attribute)
        Devices with the same key share one worker (e.g. the EEG, PPG and IMU streams
        of one Muse headband, which accepts a single Bluetooth connection).
    """

    info: StreamInfo
    blocking: bool

    def open(self) -> None:
        """Connect / start acquisition. Raise :class:`~neuraflow.errors.DeviceError` on failure."""

    def read(self, timeout_s: float) -> Chunk | None:
        """Return the next chunk, or ``None`` if nothing arrived within ``timeout_s`` seconds.

        Raises :class:`~neuraflow.errors.EndOfStream` when a finite source is exhausted
        and :class:`~neuraflow.errors.DeviceError` when the device failed (the runtime
        then closes it and reconnects with backoff). ``seq`` of the returned chunk is
        ignored: the runtime assigns it.
        """

    def drain_events(self) -> list[Event]:
        """Return and forget the markers the device produced since the last call."""

    def next_ready_s(self) -> float | None:
        """Wall-clock time (``time.time()``) when the next chunk is due, if known.

        Lets a loop hosting hundreds of paced devices sleep instead of polling.
        """

    def close(self) -> None:
        """Stop acquisition and release the hardware. Idempotent."""


class DeviceBase:
    """Convenience base with the optional parts of :class:`Device` defaulted."""

    info: StreamInfo
    blocking: bool = False
    ray_resources: dict[str, float] | None = None
    colocate: str | None = None

    def open(self) -> None:  # pragma: no cover - trivial default
        return None

    def drain_events(self) -> list[Event]:
        return []

    def next_ready_s(self) -> float | None:
        return None

    def close(self) -> None:  # pragma: no cover - trivial default
        return None


class QueuedEventsDevice(DeviceBase):
    """:class:`DeviceBase` for a device that queues its events in ``self._events`` while it reads."""

    _events: list[Event]

    def drain_events(self) -> list[Event]:
        """Return and forget the events queued since the last call."""
        events, self._events = self._events, []
        return events
