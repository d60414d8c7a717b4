"""One hosted device inside a worker: connection, reconnects, seq, gaps, ring buffer.

A :class:`DeviceSlot` turns a plain :class:`~neuraflow.devices.base.Device`
into a robust stream. It assigns ``seq``, reconnects with exponential backoff
and full jitter when the device fails, and turns every discontinuity into an
explicit :class:`~neuraflow.chunk.Event` (``"gap"``, ``"drop"``,
``"disconnect"``, ``"reconnect"``) instead of hiding it. Blocking devices
(serial, BLE, sockets) are read from a dedicated thread; pollable ones
(synthetic, file playback) from the worker's loop.

No Ray here: the slot is testable on its own.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field

from neuraflow.chunk import Chunk, Event
from neuraflow.devices.base import Device
from neuraflow.errors import DeviceError, EndOfStream
from neuraflow.runtime.ring import Backpressure, RingBuffer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SlotOptions:
    """Per-device runtime options (from ``runtime`` settings)."""

    ring_capacity: int = 1024
    backpressure: Backpressure = Backpressure.DROP_OLDEST
    reconnect_initial_s: float = 0.1
    reconnect_max_s: float = 5.0
    max_reads_per_poll: int = 64
    gap_tolerance_samples: float = 1.5


@dataclass
class SlotCounters:
    """Cumulative counters of one device."""

    chunks: int = 0
    samples: int = 0
    errors: int = 0
    reconnects: int = 0
    dropped: int = 0
    gaps: int = 0
    last_error: str = ""
    extra: dict[str, float] = field(default_factory=dict)


class DeviceSlot:
    """Runtime wrapper of one device.

    Parameters
    ----------
    device : Device
        The plain device (not yet opened).
    options : SlotOptions
        Ring size, backpressure policy and backoff bounds.
    next_seq : int
        First ``seq`` to assign (continues numbering after an actor restart).
    last_t_end_s : float or None
        Device time just after the last accepted sample before a restart; the
        first chunk after it is checked for a time gap.
    """

    def __init__(
        self,
        device: Device,
        options: SlotOptions,
        *,
        next_seq: int = 0,
        last_t_end_s: float | None = None,
    ) -> None:
        self.device = device
        self.options = options
        self.stream_id = device.info.stream_id
        self.ring = RingBuffer(options.ring_capacity, options.backpressure)
        self.counters = SlotCounters()
        self.next_seq = next_seq
        self.last_t_end_s = last_t_end_s
        self.finished = False
        self._open = False
        self._failures = 0
        self._retry_at = 0.0
        self._events: list[Event] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Open the device (or schedule a retry) and start its reader thread if blocking."""
        self._try_open()
        if getattr(self.device, "blocking", False):
            self._thread = threading.Thread(target=self._reader, name=f"device:{self.stream_id}", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop reading and close the device (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        self._close()

    def _try_open(self) -> None:
        try:
            self.device.open()
        except Exception as exc:  # noqa: BLE001 - any driver error means "retry later"
            self._fail(exc, during="open")
            return
        if self._failures:
            self.counters.reconnects += 1
            self._event("reconnect", self._failures, {"attempts": self._failures})
        self._failures = 0
        self._open = True

    def _close(self) -> None:
        if self._open:
            self._open = False
            try:
                self.device.close()
            except Exception as exc:  # noqa: BLE001 - closing a broken device may fail too
                log.warning("device %s: close failed: %s", self.stream_id, exc)

    def _fail(self, exc: BaseException, *, during: str) -> None:
        self.counters.errors += 1
        self.counters.last_error = f"{during}: {type(exc).__name__}: {exc}"
        self._close()
        self._failures += 1
        ceiling = min(self.options.reconnect_max_s, self.options.reconnect_initial_s * 2 ** (self._failures - 1))
        delay = random.uniform(0.5 * ceiling, ceiling)  # jitter: many devices must not retry in lockstep
        self._retry_at = time.monotonic() + delay
        self._event("disconnect", delay, {"error": self.counters.last_error, "retry_in_s": delay})
        log.warning("device %s failed during %s (%s); retry in %.2f s", self.stream_id, during, exc, delay)

    # ---------------------------------------------------------------- reading
    def poll(self, *, until_s: float | None = None) -> None:
        """Read what a pollable device has ready into the ring (called by the worker loop).

        ``until_s``: stop once the device's data runs past this device time (s), for
        reading merge partners in step; the first chunk is always read.
        """
        if self.finished or getattr(self.device, "blocking", False):
            return
        if not self._open:
            if time.monotonic() < self._retry_at:
                return
            self._try_open()
            if not self._open:
                return
        for _ in range(self.options.max_reads_per_poll):
            if self.ring.policy is Backpressure.BLOCK and self.ring.full():
                return
            if until_s is not None and self.last_t_end_s is not None and self.last_t_end_s > until_s:
                return
            if not self._read_once(0.0):
                return
            # a paced device that says its next chunk is not due yet is not asked again
            # (a read returning None still costs a call, per device and tick)
            due = self.next_ready_s()
            if due is not None and due > time.time():
                return

    def _reader(self) -> None:
        while not self._stop.is_set() and not self.finished:
            if not self._open:
                wait = self._retry_at - time.monotonic()
                if wait > 0:
                    self._stop.wait(min(wait, 0.1))
                    continue
                self._try_open()
                continue
            self._read_once(0.1)

    def _read_once(self, timeout_s: float) -> bool:
        try:
            chunk = self.device.read(timeout_s)
        except EndOfStream:
            self.finished = True
            self._close()
            return False
        except Exception as exc:  # noqa: BLE001 - counted, reported, retried with backoff
            self._fail(exc if isinstance(exc, DeviceError) else DeviceError(str(exc)), during="read")
            return False
        if chunk is None:
            self._drain_device_events()  # marker-only devices produce events without chunks
            return False
        self._accept(chunk)
        return True

    def _drain_device_events(self) -> None:
        for event in self.device.drain_events():
            self._push_event(event)

    def _accept(self, chunk: Chunk) -> None:
        declared = self.device.info
        if chunk.sfreq != declared.sfreq or chunk.channels != declared.channels:
            # Bad input must not reach the ops (their state is sized for the declared
            # stream) nor crash the worker: drop it, count it, say what changed.
            self.counters.errors += 1
            self.counters.last_error = (
                f"stream {self.stream_id!r} changed mid-stream: sfreq {declared.sfreq} -> {chunk.sfreq} Hz, "
                f"{declared.n_channels} -> {chunk.n_channels} channels; chunk dropped"
            )
            self._event("stream_mismatch", chunk.n_samples, {"error": self.counters.last_error})
            return
        now = time.time()
        if self.last_t_end_s is not None:
            gap_s = chunk.t0_s - self.last_t_end_s
            if abs(gap_s) > self.options.gap_tolerance_samples / chunk.sfreq:
                self.counters.gaps += 1
                self._event("gap", gap_s, {"from_s": self.last_t_end_s, "to_s": chunk.t0_s, "seq": self.next_seq}, t_s=self.last_t_end_s)
        changes: dict = {"seq": self.next_seq, "recv_s": chunk.recv_s if chunk.recv_s == chunk.recv_s else now}
        markers = self.device.drain_events()
        if markers:
            # markers also ride on the chunk they came with, so ops (epochs) see them in order
            for event in markers:
                self._push_event(event)
            changes["meta"] = {**chunk.meta, "events": tuple((e.t_s, e.label) for e in markers)}
        stamped = chunk.replace(**changes)
        self.next_seq += 1
        self.last_t_end_s = stamped.t_end_s
        self.counters.chunks += 1
        self.counters.samples += stamped.n_samples
        self.ring.put(stamped, timeout_s=None)

    # ---------------------------------------------------------------- events
    def _event(self, label: str, value: float, meta: dict, *, t_s: float | None = None) -> None:
        self._push_event(Event(self.stream_id, time.time() if t_s is None else t_s, label, float(value), meta))

    def _push_event(self, event: Event) -> None:
        with self._lock:
            self._events.append(event)

    def take(self, max_chunks: int | None = None) -> tuple[list[Chunk], list[Event]]:
        """Drain accepted chunks and pending events (drops become ``"drop"`` events)."""
        if not len(self.ring) and not self.ring.dropped_seqs and not self._events:
            return [], []  # the usual idle slot of a tick: no lock taken
        chunks = self.ring.drain(max_chunks)
        dropped = self.ring.take_dropped()
        if dropped:
            self.counters.dropped += len(dropped)
            self._event("drop", len(dropped), {"seqs": dropped[:100], "policy": self.ring.policy.value})
        with self._lock:
            events, self._events = self._events, []
        return chunks, events

    @property
    def queue_depth(self) -> int:
        return len(self.ring)

    def next_ready_s(self) -> float | None:
        if not self._open or self.finished:
            return None
        try:
            return self.device.next_ready_s()
        except Exception:  # noqa: BLE001 - a hint only
            return None
