"""The BLE link shared by :class:`~neuraflow.devices.ble.Muse` and :class:`~neuraflow.devices.ble.Ganglion`.

bleak is asyncio-only while a device is read from a runtime thread with a
blocking ``read(timeout_s)``. :class:`BleStreamDevice` therefore runs its own
event loop in a daemon thread from :meth:`~BleStreamDevice.open` to
:meth:`~BleStreamDevice.close`. Notifications are decoded on that loop (the
subclass's ``_on_notify``) into chunks put on a thread-safe queue that ``read``
waits on.

Timestamps come from sample indices, as for the Cyton: the first samples anchor
the device clock to host time, sample ``k`` is at ``anchor + k / sfreq``, and
the anchor only ever moves earlier (a sample cannot be stamped after it
arrived). Lost notifications advance the index, so later stamps stay right,
and become ``"drop"`` events.

Failures -- the peripheral not found or refusing, an unsolicited disconnect
(out of range, battery), no notification for ``stall_timeout_s`` -- raise
:class:`~neuraflow.errors.DeviceError` from ``open``/``read``; the runtime then
closes the device and reopens it with backoff.

One peripheral, several streams: a headband accepts one connection, but its
EEG, PPG and IMU are separate devices (one stream each, like the streams of an
XDF file). Devices of the same address and backend opened in one process
therefore share one connection (:class:`_SharedLink`: client, loop thread,
subscriptions). The first ``open`` connects and sends the start commands, the
others only subscribe; the last ``close`` sends the stop commands and
disconnects. A link loss fails every device on it; each reopens a new link.
Their ``colocate`` key (``"ble:<address>"``) makes the runtime host them on one
worker, so a pipeline opens them in one process.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from typing import Any

import numpy as np

from neuraflow._validate import check_int, check_positive
from neuraflow.chunk import Chunk, Event, StreamInfo
from neuraflow.devices.base import DeviceBase
from neuraflow.errors import DeviceError, PipelineDefinitionError

log = logging.getLogger(__name__)


def resolve_backend(backend: Any) -> Any:
    """Return the bleak backend class for ``backend``: ``None`` (platform default), ``"fake"`` or a class."""
    if backend is None or isinstance(backend, type):
        return backend
    if backend == "fake":
        from neuraflow.devices.ble.fake_backend import FakeBackend

        return FakeBackend
    raise PipelineDefinitionError(
        f"devices.ble: backend={backend!r} must be None (the platform's bleak backend), 'fake' "
        "(neuraflow.devices.ble.fake_backend.FakeBackend) or a bleak BaseBleakClient subclass."
    )


_LINKS: dict[tuple[str, Any], _SharedLink] = {}
_LINKS_LOCK = threading.Lock()


class _SharedLink:
    """One BLE connection (bleak client on its own asyncio loop thread) shared by the devices of one peripheral."""

    def __init__(self, key: tuple[str, Any], address: str, backend: Any, connect_timeout_s: float) -> None:
        self.key = key
        self.address = address
        self.backend = backend
        self.connect_timeout_s = connect_timeout_s
        self.users: tuple[BleStreamDevice, ...] = ()  # replaced, never mutated: read from the loop thread
        self.subscribed: set[str] = set()
        self.started = False
        self.dead = False
        self.closing = False
        self.client: Any = None
        self.lock = threading.Lock()  # one connect/subscribe/shutdown at a time
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=f"ble-{address}", daemon=True)
        self.thread.start()

    def attach(self, device: BleStreamDevice) -> None:
        """Connect if needed, subscribe ``device``'s characteristics, send the start commands once."""
        with self.lock:
            if self.dead:
                raise DeviceError(f"{device._where} {device.info.stream_id!r}: the link to {self.address!r} was lost.")
            future = asyncio.run_coroutine_threadsafe(self._attach(device), self.loop)
            try:
                future.result(timeout=self.connect_timeout_s + 1.0)
            except BaseException:
                future.cancel()
                raise

    async def _attach(self, device: BleStreamDevice) -> None:
        if self.client is None:
            try:
                from bleak import BleakClient
            except ImportError as exc:  # pragma: no cover - bleak is a dependency of this module
                raise DeviceError(f"{device._where}: BLE devices need bleak (pip install bleak).") from exc
            kwargs: dict[str, Any] = {"timeout": self.connect_timeout_s}
            if self.backend is not None:
                kwargs["backend"] = self.backend
            self.client = BleakClient(self.address, self._on_disconnect, **kwargs)
            await asyncio.wait_for(self.client.connect(), self.connect_timeout_s)
        for uuid in device._subscriptions():
            if uuid not in self.subscribed:
                await self.client.start_notify(uuid, self._notify)
                self.subscribed.add(uuid)
        if not self.started:
            for uuid, data in device._start_writes():
                await self.client.write_gatt_char(uuid, data, response=False)
            self.started = True

    def write(self, uuid: str, data: bytes, timeout_s: float = 2.0) -> None:
        """Write ``data`` to characteristic ``uuid`` (from any thread but the loop's)."""
        client = self.client
        if client is None or self.dead:
            raise DeviceError(f"devices.ble: not connected to {self.address!r}.")
        future = asyncio.run_coroutine_threadsafe(client.write_gatt_char(uuid, data, response=False), self.loop)
        try:
            future.result(timeout=timeout_s)
        except Exception as exc:
            raise DeviceError(f"devices.ble: writing to {self.address!r} failed: {exc}") from exc

    def _notify(self, sender: Any, data: bytearray) -> None:
        uuid = str(sender.uuid)
        for device in self.users:
            if uuid in device._uuids:
                device._notify(uuid, data)

    def _on_disconnect(self, _client: Any) -> None:
        if self.closing:
            return
        self.dead = True
        with _LINKS_LOCK:
            if _LINKS.get(self.key) is self:
                del _LINKS[self.key]
        for device in self.users:
            device._fail(f"{self.address!r} disconnected (out of range, switched off or battery low)")

    def shutdown(self, stop_writes: list[tuple[str, bytes]]) -> None:
        """Send ``stop_writes`` (if still connected), disconnect, stop the loop thread."""
        with self.lock:
            self.closing = True
            client, loop = self.client, self.loop
            if client is not None and loop.is_running():
                future = asyncio.run_coroutine_threadsafe(self._disconnect(client, stop_writes), loop)
                try:
                    future.result(timeout=2.0)
                except Exception as exc:  # noqa: BLE001 - the link may already be gone
                    log.debug("devices.ble: disconnect of %s: %s", self.address, exc)
            loop.call_soon_threadsafe(loop.stop)
            self.thread.join(timeout=2.0)
            if not loop.is_running():
                loop.close()

    @staticmethod
    async def _disconnect(client: Any, stop_writes: list[tuple[str, bytes]]) -> None:
        try:
            if client.is_connected:
                for uuid, data in stop_writes:
                    await client.write_gatt_char(uuid, data, response=False)
        finally:
            await client.disconnect()


def _join_link(device: BleStreamDevice) -> _SharedLink:
    """Attach ``device`` to the live link of its peripheral in this process, or to a new one."""
    key = (device.address, device.backend)
    with _LINKS_LOCK:
        link = _LINKS.get(key)
        if link is None or link.dead or link.closing:
            link = _SharedLink(key, device.address, device.backend, device.connect_timeout_s)
            _LINKS[key] = link
        link.users = (*link.users, device)
    try:
        link.attach(device)
    except BaseException:
        _leave_link(device, link, [])
        raise
    return link


def _leave_link(device: BleStreamDevice, link: _SharedLink, stop_writes: list[tuple[str, bytes]]) -> None:
    """Detach ``device``; the last device out sends ``stop_writes`` and disconnects."""
    with _LINKS_LOCK:
        link.users = tuple(d for d in link.users if d is not device)
        last = not link.users
        if last:
            link.closing = True
            if _LINKS.get(link.key) is link:
                del _LINKS[link.key]
    if last:
        link.shutdown(stop_writes)


class _Failure:
    __slots__ = ("error",)

    def __init__(self, error: DeviceError) -> None:
        self.error = error


class BleStreamDevice(DeviceBase):
    """Base of the BLE devices: connection thread, notification queue, index clock, chunking.

    Parameters
    ----------
    address : str
        Bluetooth address (``"00:55:DA:B0:12:34"``; a CoreBluetooth UUID on macOS).
    info : StreamInfo
        The stream description built by the subclass.
    chunk_size : int
        Samples per chunk; a chunk also ends early at a drop.
    backend : None, "fake" or type
        bleak backend class passed to ``bleak.BleakClient(..., backend=...)``.
    connect_timeout_s : float
        Longest wait for connect + subscribe + start commands.
    stall_timeout_s : float
        While open, no notification for this long raises ``DeviceError``.

    Subclasses define ``_where``, ``_subscriptions()``, ``_start_writes()``,
    ``_stop_writes()``, ``_reset_decoder()`` and ``_on_notify(uuid, data)``,
    which calls :meth:`_emit` and :meth:`_drop`. Devices of one address share
    a connection within a process (module docstring).
    """

    blocking = True
    _where = "devices.ble"

    @property
    def colocate(self) -> str:
        """Streams of one address share a worker, hence one connection (see :class:`~neuraflow.devices.base.Device`)."""
        return f"ble:{self.address}"

    def __init__(self, address: str, info: StreamInfo, *, chunk_size: int, backend: Any,
                 connect_timeout_s: float, stall_timeout_s: float) -> None:
        if not isinstance(address, str) or not address:
            raise PipelineDefinitionError(f"{self._where}: address={address!r} must be a Bluetooth address string.")
        self.address = address
        self.info = info
        self.sfreq = info.sfreq
        self.chunk_size = check_int(self._where, "chunk_size", chunk_size)
        self.backend = resolve_backend(backend)
        self.connect_timeout_s = check_positive(self._where, "connect_timeout_s", connect_timeout_s)
        self.stall_timeout_s = check_positive(self._where, "stall_timeout_s", stall_timeout_s)
        self.stats: dict[str, float] = dict.fromkeys(
            ("notifications", "samples", "samples_dropped", "corrupt", "clock_adjust_s", "opens"), 0
        )
        self._link: _SharedLink | None = None
        self._reset_stream()

    # ------------------------------------------------------------- pickling
    def __getstate__(self) -> dict[str, Any]:
        skip = {"_link", "_uuids", "_queue", "_events", "_events_lock", "_pend_lock", "_pend"}
        return {k: v for k, v in self.__dict__.items() if k not in skip}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._link = None
        self._reset_stream()

    def _reset_stream(self) -> None:
        self._queue: queue.Queue[Chunk | _Failure] = queue.Queue()
        self._events: list[Event] = []
        self._events_lock = threading.Lock()
        self._pend_lock = threading.RLock()  # _emit runs on the loop thread, a stall _fail on the reader's
        self._anchor: float | None = None
        self._pend: list[np.ndarray] = []
        self._pend_start = 0
        self._pend_n = 0
        self._last_rx = time.monotonic()
        self._reset_decoder()
        self._uuids = frozenset(self._subscriptions())

    # ------------------------------------------------------ subclass hooks
    def _subscriptions(self) -> list[str]:
        raise NotImplementedError

    def _start_writes(self) -> list[tuple[str, bytes]]:
        raise NotImplementedError

    def _stop_writes(self) -> list[tuple[str, bytes]]:
        raise NotImplementedError

    def _reset_decoder(self) -> None:
        raise NotImplementedError

    def _on_notify(self, uuid: str, data: bytearray) -> None:
        raise NotImplementedError

    # ------------------------------------------------------- device protocol
    def open(self) -> None:
        """Connect (or join this process's connection to the peripheral), subscribe, send the start commands.

        Raises
        ------
        DeviceError
            bleak missing, peripheral not found, connection refused or timed out,
            a characteristic missing.
        """
        self.close()
        self._reset_stream()
        try:
            self._link = _join_link(self)
        except Exception as exc:  # noqa: BLE001 - every failure to connect is a DeviceError
            self._reset_stream()
            if isinstance(exc, DeviceError):
                raise
            what = "timed out" if isinstance(exc, (TimeoutError, asyncio.TimeoutError)) else f"failed: {exc}"
            raise DeviceError(
                f"{self._where} {self.info.stream_id!r}: connecting to {self.address!r} {what} "
                f"(connect_timeout_s={self.connect_timeout_s}). Is it on, in range, and not connected elsewhere?"
            ) from exc
        self._last_rx = time.monotonic()
        self.stats["opens"] += 1

    def _notify(self, uuid: str, data: bytearray) -> None:
        """Notification of one of this device's characteristics (event-loop thread)."""
        self._last_rx = time.monotonic()
        self.stats["notifications"] += 1
        try:
            self._on_notify(uuid, data)
        except ValueError as exc:  # a malformed packet: count it and go on
            self.stats["corrupt"] += 1
            self._event(time.time(), "corrupt", float(len(data)), {"error": str(exc)})

    def _write(self, uuid: str, data: bytes) -> None:
        """Write a command to the open peripheral (from the reader's thread)."""
        if self._link is None:
            raise DeviceError(f"{self._where} {self.info.stream_id!r}: not open.")
        self._link.write(uuid, data)

    def _fail(self, message: str) -> None:
        self._flush(time.time())
        self._queue.put(_Failure(DeviceError(f"{self._where} {self.info.stream_id!r}: {message}")))

    def read(self, timeout_s: float) -> Chunk | None:
        """Return the next chunk, or ``None`` if none completed within ``timeout_s``.

        Raises
        ------
        DeviceError
            Not open, the link was lost, or no notification for ``stall_timeout_s``.
        """
        if self._link is None and self._queue.empty():
            raise DeviceError(f"{self._where} {self.info.stream_id!r}: read() before open().")
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            wait = min(max(0.0, deadline - time.monotonic()), 0.05)
            try:
                item = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                item = None
            if isinstance(item, _Failure):
                raise item.error
            if item is not None:
                return item
            silent = time.monotonic() - self._last_rx
            if self._link is not None and silent > self.stall_timeout_s:
                self._fail(f"no notification from {self.address!r} for {silent:.2f} s "
                           f"(stall_timeout_s={self.stall_timeout_s})")
                continue
            if time.monotonic() >= deadline:
                return None

    def drain_events(self) -> list[Event]:
        with self._events_lock:
            events, self._events = self._events, []
        return events

    def close(self) -> None:
        """Leave the connection (the last device out sends the stop commands and disconnects). Idempotent."""
        link, self._link = self._link, None
        if link is not None:
            _leave_link(self, link, self._stop_writes())

    # ---------------------------------------------------------- clock/chunks
    def _event(self, t_s: float, label: str, value: float, meta: dict[str, Any]) -> None:
        with self._events_lock:
            self._events.append(Event(self.info.stream_id, t_s, label, value, meta))

    def _time_of(self, index: int) -> float:
        return (self._anchor if self._anchor is not None else time.time()) + index / self.sfreq

    def _drop(self, first_missing: int, n_missing: int, meta: dict[str, Any]) -> None:
        """Record ``n_missing`` samples lost from sample index ``first_missing`` (a ``"drop"`` event)."""
        self.stats["samples_dropped"] += n_missing
        self._event(self._time_of(first_missing), "drop", float(n_missing), {"sample_index": first_missing, **meta})

    def _emit(self, index: int, values: np.ndarray) -> None:
        """Add samples ``values`` (n_channels, n), float64 in the stream's units, starting at sample ``index``."""
        if values.shape[1]:
            with self._pend_lock:
                self._emit_locked(index, values)

    def _emit_locked(self, index: int, values: np.ndarray) -> None:
        n = values.shape[1]
        now = time.time()
        if self._anchor is None:
            self._anchor = now - (index + n - 1) / self.sfreq
        late = self._anchor + (index + n - 1) / self.sfreq - now
        if late > 0:
            self._anchor -= late
            self.stats["clock_adjust_s"] += late
        if self._pend_n and self._pend_start + self._pend_n != index:
            self._flush(now)
        self.stats["samples"] += n
        while values.shape[1]:
            if not self._pend_n:
                self._pend_start = index
            take = min(values.shape[1], self.chunk_size - self._pend_n)
            self._pend.append(values[:, :take])
            self._pend_n += take
            values = values[:, take:]
            index += take
            if self._pend_n == self.chunk_size:
                self._flush(now)

    def _flush(self, now: float) -> None:
        with self._pend_lock:
            if not self._pend_n or self._anchor is None:
                return
            data = np.concatenate(self._pend, axis=1)
            start = self._pend_start
            self._pend, self._pend_n = [], 0
            self._queue.put(Chunk(data.astype(np.float32), self._anchor + start / self.sfreq, self.info,
                                  recv_s=now, meta={"sample_index": start}))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.address!r}, stream_id={self.info.stream_id!r})"
