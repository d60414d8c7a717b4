"""Standalone device connections with health records: :class:`DeviceManager` (plain Python).

A manager holds device *specs* -- JSON-like mappings ``{"kind": ..., **kwargs}``
registered from a file (:meth:`DeviceManager.from_file`) or an API call -- and
runs each connected device in a :class:`~neuraflow.runtime.slot.DeviceSlot`
(reconnects with exponential backoff and jitter) pumped by a thread of its
own. Kinds::

    {"kind": "cyton", "port": "/dev/ttyUSB0", "daisy": false, "options": {"stall_timeout_s": 1.0}}
    {"kind": "lsl", "name": "OpenBCI_EEG", "resolve_timeout_s": 2.0}
    {"kind": "synthetic", "n_channels": 8, "sfreq": 250.0}
    {"kind": "ganglion", "address": "C4:E1:A0:12:34:56"}       {"kind": "muse", "address": "00:55:DA:B0:12:34"}
    {"kind": "wifi", "shield": "192.168.4.1"}
    {"kind": "tcp", "host": "10.0.0.5", "port": 5000, "frame_format": {"n_channels": 8, "sfreq": 500, "dtype": ">i3"}}

The health record of a device (:meth:`DeviceManager.status`): ``state``
(``disconnected``, ``connecting``, ``connected``, ``reconnecting``,
``measuring``, ``finished``), nominal and measured rate (samples over the last
``rate_window_s`` of arrivals), samples, chunks, ``drops`` (samples the device
reported lost plus chunks the ring discarded), gaps, errors, reconnects,
last error, age of the last sample, and the signal quality of the last
second (:func:`~neuraflow.devices.quality.quality_record`).

The serve layer wraps a manager in a named Ray actor
(:mod:`neuraflow.serve.device_routes`); nothing here imports Ray.
"""

from __future__ import annotations

import copy
import inspect
import json
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from neuraflow._validate import suggest
from neuraflow.chunk import Chunk
from neuraflow.errors import NeuraflowError, PipelineDefinitionError
from neuraflow.runtime.slot import DeviceSlot, SlotOptions

__all__ = ["KINDS", "DeviceManager", "SpecError", "UnknownDeviceError", "build_device", "validate_spec"]

log = logging.getLogger(__name__)
_WHERE = "devices.DeviceManager"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")


class SpecError(PipelineDefinitionError):
    """An invalid device spec; ``field`` names the offending key."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field

    def __reduce__(self):
        return (SpecError, (self.field, str(self)))


class UnknownDeviceError(NeuraflowError, KeyError):
    """No device registered under that id."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _cyton(**kw: Any):
    from neuraflow.devices.openbci import CytonOptions, OpenBCICyton

    if isinstance(kw.get("options"), Mapping):
        try:
            kw["options"] = CytonOptions(**kw["options"])
        except TypeError as exc:
            raise SpecError("options", f"{_WHERE}: options: {exc}") from None
    return OpenBCICyton(**kw)


def _lsl(**kw: Any):
    from neuraflow.devices.lsl import LSLInlet

    return LSLInlet(**kw)


def _synthetic(**kw: Any):
    from neuraflow.devices.synthetic import Synthetic

    return Synthetic(**kw)


def _ganglion(**kw: Any):
    from neuraflow.devices.ble import Ganglion

    return Ganglion(**kw)


def _muse(**kw: Any):
    from neuraflow.devices.ble import Muse

    return Muse(**kw)


def _wifi(**kw: Any):
    from neuraflow.devices.openbci import CytonOptions
    from neuraflow.devices.openbci.wifi import OpenBCIWifi

    if isinstance(kw.get("options"), Mapping):
        try:
            kw["options"] = CytonOptions(**kw["options"])
        except TypeError as exc:
            raise SpecError("options", f"{_WHERE}: options: {exc}") from None
    return OpenBCIWifi(**kw)


def _tcp(**kw: Any):
    from neuraflow.devices.tcp import FrameFormat, TcpFrameDevice

    fmt = kw.get("frame_format")
    if isinstance(fmt, Mapping):
        fmt = dict(fmt)
        if isinstance(fmt.get("header"), str):
            fmt["header"] = bytes.fromhex(fmt["header"])
        try:
            kw["frame_format"] = FrameFormat(**fmt)
        except TypeError as exc:
            raise SpecError("frame_format", f"{_WHERE}: frame_format: {exc}") from None
    return TcpFrameDevice(**kw)


def _signature_of(kind: str):
    from neuraflow.devices.ble import Ganglion, Muse
    from neuraflow.devices.lsl import LSLInlet
    from neuraflow.devices.openbci import OpenBCICyton
    from neuraflow.devices.openbci.wifi import OpenBCIWifi
    from neuraflow.devices.synthetic import Synthetic
    from neuraflow.devices.tcp import TcpFrameDevice

    classes = {"cyton": OpenBCICyton, "lsl": LSLInlet, "synthetic": Synthetic, "ganglion": Ganglion, "muse": Muse,
               "wifi": OpenBCIWifi, "tcp": TcpFrameDevice}
    return inspect.signature(classes[kind].__init__)


KINDS = {"cyton": _cyton, "lsl": _lsl, "synthetic": _synthetic, "ganglion": _ganglion, "muse": _muse,
         "wifi": _wifi, "tcp": _tcp}
"""Device kinds a spec may name, and their builders."""
_IMPEDANCE_KINDS = ("cyton", "ganglion")
_REQUIRED = {"cyton": ("port",), "lsl": (), "synthetic": (), "ganglion": ("address",), "muse": ("address",),
             "wifi": ("shield",), "tcp": ("host", "port", "frame_format")}


def validate_spec(spec: Any) -> tuple[str, dict[str, Any]]:
    """Check a spec's shape and keys (no device is built): return ``(kind, kwargs)``.

    Raises
    ------
    SpecError
        Not a mapping, no or unknown ``kind``, a missing required or unknown key.
    """
    if not isinstance(spec, Mapping):
        raise SpecError("spec", f"{_WHERE}: a device spec must be a mapping, got {type(spec).__name__}.")
    kind = spec.get("kind")
    if kind not in KINDS:
        hint = suggest(kind, KINDS) if isinstance(kind, str) else ""
        raise SpecError("kind", f"{_WHERE}: kind={kind!r} must be one of {sorted(KINDS)}.{hint}")
    kwargs = {k: v for k, v in spec.items() if k != "kind"}
    params = _signature_of(kind).parameters
    allowed = [p for p in params if p != "self"]
    for key in kwargs:
        if key not in allowed:
            raise SpecError(key, f"{_WHERE}: {kind} has no parameter {key!r}.{suggest(key, allowed)} "
                                 f"Parameters: {allowed}.")
    for key in _REQUIRED[kind]:
        if key not in kwargs:
            raise SpecError(key, f"{_WHERE}: a {kind} device needs {key!r}.")
    if kind == "lsl" and not any(kwargs.get(k) for k in ("name", "type", "source_id")):
        raise SpecError("name", f"{_WHERE}: an lsl device needs 'name', 'type' or 'source_id'.")
    return kind, kwargs


def build_device(spec: Mapping[str, Any]):
    """Validate ``spec`` and build its (unopened) device; errors name the offending key."""
    kind, kwargs = validate_spec(spec)
    try:
        return KINDS[kind](**copy.deepcopy(kwargs))
    except SpecError:
        raise
    except (PipelineDefinitionError, TypeError, ValueError) as exc:
        message = str(exc)
        field = next((k for k in kwargs if re.search(rf"\b{re.escape(k)}\s*=", message)), None)
        if field is None:
            field = next((k for k in kwargs if k in message), "spec")
        raise SpecError(field, message) from None


class _Managed:
    """One registered device: spec, and while connected its slot and pump thread."""

    def __init__(self, device_id: str, spec: dict[str, Any]) -> None:
        self.id = device_id
        self.spec = spec
        self.kind = spec["kind"]
        self.slot: DeviceSlot | None = None
        self.thread: threading.Thread | None = None
        self.stop = threading.Event()
        self.state = "disconnected"
        self.info = None
        self.connected_since: float | None = None
        self.last_sample_s: float | None = None  # time.time() of the last chunk's arrival
        self.arrivals: deque[tuple[float, int]] = deque()
        self.device_drops = 0
        self.recent: np.ndarray | None = None
        self.totals = {"chunks": 0, "samples": 0, "errors": 0, "reconnects": 0, "dropped_chunks": 0, "gaps": 0}
        self.base = dict(self.totals)  # totals of the slots before the current one
        self.last_error = ""
        self.impedance_kohm: dict[str, float] | None = None
        self.lock = threading.Lock()


class DeviceManager:
    """Connect, disconnect and watch standalone devices.

    Parameters
    ----------
    devices : mapping of id -> spec, optional
        Devices to register (not connected).
    slot_options : SlotOptions or None
        Ring size and reconnect backoff of each device's slot.
    rate_window_s : float
        Arrival window of the measured rate.
    quality_window_s : float
        Samples kept for the quality part of the health record.
    line_freq : float or None
        Mains frequency for the line-noise measure.

    Examples
    --------
    >>> mgr = DeviceManager({"synth": {"kind": "synthetic", "n_channels": 2}})
    >>> mgr.status("synth")["state"]
    'disconnected'
    """

    def __init__(
        self,
        devices: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        slot_options: SlotOptions | None = None,
        rate_window_s: float = 5.0,
        quality_window_s: float = 1.0,
        line_freq: float | None = 50.0,
    ) -> None:
        self.slot_options = slot_options or SlotOptions(ring_capacity=256)
        self.rate_window_s = rate_window_s
        self.quality_window_s = quality_window_s
        self.line_freq = line_freq
        self._devices: dict[str, _Managed] = {}
        self._lock = threading.Lock()
        for device_id, spec in (devices or {}).items():
            self.add(device_id, spec)

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: Any) -> DeviceManager:
        """Load specs from a YAML or JSON file: ``{"devices": {id: spec}}`` or ``{id: spec}``."""
        text = Path(path).read_text()
        if str(path).endswith(".json"):
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text) or {}
        if isinstance(data, Mapping) and "devices" in data:
            data = data["devices"]
        if not isinstance(data, Mapping):
            raise SpecError("devices", f"{_WHERE}: {path}: expected a mapping of device id -> spec.")
        return cls(data, **kwargs)

    # ------------------------------------------------------------ registry
    def _get(self, device_id: str) -> _Managed:
        try:
            return self._devices[device_id]
        except KeyError:
            raise UnknownDeviceError(
                f"no device {device_id!r}; registered: {sorted(self._devices)}.{suggest(device_id, self._devices)}"
            ) from None

    def ids(self) -> list[str]:
        return sorted(self._devices)

    def specs(self) -> dict[str, dict[str, Any]]:
        """Registered specs by id (copies)."""
        return {k: copy.deepcopy(m.spec) for k, m in sorted(self._devices.items())}

    def add(self, device_id: str, spec: Mapping[str, Any], *, replace: bool = False) -> dict[str, Any]:
        """Register a device (validated by building it once, nothing is opened); return its record."""
        if not isinstance(device_id, str) or not _ID.match(device_id):
            raise SpecError("id", f"{_WHERE}: id={device_id!r} must match {_ID.pattern}.")
        build_device(spec)  # validate values too
        spec = json.loads(json.dumps(dict(spec), default=str))  # plain, JSON-able copy
        with self._lock:
            old = self._devices.get(device_id)
            if old is not None:
                if not replace:
                    raise SpecError("id", f"{_WHERE}: a device {device_id!r} is already registered.")
                self._disconnect(old)
            self._devices[device_id] = _Managed(device_id, spec)
        return self.status(device_id)

    def remove(self, device_id: str) -> None:
        managed = self._get(device_id)
        self._disconnect(managed)
        with self._lock:
            self._devices.pop(device_id, None)

    # ------------------------------------------------------------ connections
    def connect(self, device_id: str) -> dict[str, Any]:
        """Start the device (idempotent); failures to open are retried with backoff, not raised."""
        managed = self._get(device_id)
        with managed.lock:
            if managed.slot is None:
                self._start(managed, build_device(managed.spec))
        return self.status(device_id)

    def _start(self, managed: _Managed, device: Any, *, next_seq: int = 0) -> None:
        managed.info = device.info
        managed.stop = threading.Event()
        managed.slot = DeviceSlot(device, self.slot_options, next_seq=next_seq)
        managed.state = "connecting"
        managed.connected_since = None
        n_keep = max(8, round(self.quality_window_s * device.info.sfreq))
        managed.recent = np.zeros((device.info.n_channels, 0), np.float32)
        managed.thread = threading.Thread(target=self._pump, args=(managed, managed.slot, managed.stop, n_keep),
                                          name=f"devmgr:{managed.id}", daemon=True)
        managed.thread.start()

    def disconnect(self, device_id: str) -> dict[str, Any]:
        """Stop and close the device (idempotent)."""
        managed = self._get(device_id)
        self._disconnect(managed)
        return self.status(device_id)

    def _disconnect(self, managed: _Managed) -> None:
        with managed.lock:
            self._stop_slot(managed)
            managed.state = "disconnected"
            managed.connected_since = None

    def _stop_slot(self, managed: _Managed) -> DeviceSlot | None:
        slot, thread = managed.slot, managed.thread
        if slot is None:
            return None
        managed.stop.set()
        if thread is not None:
            thread.join(timeout=5.0)
        slot.stop()
        self._collect(managed, slot)  # the last chunks and events
        managed.base = dict(managed.totals)
        managed.slot = managed.thread = None
        return slot

    def close(self) -> None:
        """Disconnect every device."""
        for managed in list(self._devices.values()):
            self._disconnect(managed)

    def __enter__(self) -> DeviceManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ pump
    def _pump(self, managed: _Managed, slot: DeviceSlot, stop: threading.Event, n_keep: int) -> None:
        try:
            slot.start()
            blocking = getattr(slot.device, "blocking", False)
            while not stop.is_set():
                if not blocking:
                    slot.poll()
                got = self._collect(managed, slot, n_keep)
                if slot.finished and not got:
                    managed.state = "finished"
                    return
                stop.wait(0.02 if blocking or not got else 0.0)
        except Exception as exc:  # noqa: BLE001 - reported in the health record
            log.exception("device %s: pump crashed", managed.id)
            managed.last_error = f"pump: {type(exc).__name__}: {exc}"
            managed.state = "error"

    def _collect(self, managed: _Managed, slot: DeviceSlot, n_keep: int | None = None) -> int:
        chunks, events = slot.take()
        now = time.time()
        for event in events:
            if event.label == "disconnect":
                managed.state = "reconnecting"
                managed.connected_since = None
            elif event.label == "reconnect":
                managed.state = "connected"
                managed.connected_since = now
            elif event.label == "drop" and isinstance(event.value, float) and "seqs" not in event.meta:
                managed.device_drops += int(event.value)  # samples the device reported lost
        if chunks:
            self._on_chunks(managed, chunks, now, n_keep)
        c = slot.counters
        now_counts = {"chunks": c.chunks, "samples": c.samples, "errors": c.errors, "reconnects": c.reconnects,
                      "dropped_chunks": c.dropped, "gaps": c.gaps}
        managed.totals = {k: managed.base[k] + v for k, v in now_counts.items()}
        managed.last_error = c.last_error or managed.last_error
        return len(chunks)

    def _on_chunks(self, managed: _Managed, chunks: list[Chunk], now: float, n_keep: int | None) -> None:
        if managed.state in ("connecting", "reconnecting"):
            managed.state = "connected"
            managed.connected_since = managed.connected_since or now
        mono = time.monotonic()
        managed.arrivals.append((mono, sum(c.n_samples for c in chunks)))
        while managed.arrivals and mono - managed.arrivals[0][0] > self.rate_window_s:
            managed.arrivals.popleft()
        managed.last_sample_s = now
        if n_keep is not None and managed.recent is not None:
            block = np.concatenate([managed.recent, *[c.data for c in chunks]], axis=1)
            managed.recent = block[:, -n_keep:]

    # ------------------------------------------------------------ health
    def _measured_rate(self, managed: _Managed) -> float | None:
        arr = list(managed.arrivals)
        if len(arr) < 2 or arr[-1][0] - arr[0][0] <= 0:
            return None
        return sum(n for _, n in arr[1:]) / (arr[-1][0] - arr[0][0])

    def status(self, device_id: str | None = None) -> dict[str, Any] | list[dict[str, Any]]:
        """The health record of one device, or of all (a list) when ``device_id`` is None."""
        if device_id is None:
            return [self.status(i) for i in self.ids()]
        m = self._get(device_id)
        from neuraflow.devices.quality import quality_record

        info = m.info
        nominal = info.sfreq if info is not None else None
        quality = None
        if info is not None and m.recent is not None and m.recent.shape[1] >= 8:
            quality = quality_record(np.asarray(m.recent, np.float64), info, line_freq=self.line_freq)
        rate = self._measured_rate(m)
        return {
            "id": m.id,
            "kind": m.kind,
            "spec": copy.deepcopy(m.spec),
            "state": m.state,
            "stream_id": info.stream_id if info is not None else None,
            "n_channels": info.n_channels if info is not None else None,
            "nominal_sfreq": nominal,
            "measured_sfreq": rate,
            "rate_ratio": rate / nominal if rate and nominal else None,
            "samples": m.totals["samples"],
            "chunks": m.totals["chunks"],
            "drops": m.device_drops + m.totals["dropped_chunks"],
            "drops_samples": m.device_drops,
            "drops_chunks": m.totals["dropped_chunks"],
            "gaps": m.totals["gaps"],
            "errors": m.totals["errors"],
            "reconnects": m.totals["reconnects"],
            "last_error": m.last_error,
            "last_sample_age_s": time.time() - m.last_sample_s if m.last_sample_s is not None else None,
            "connected_since": m.connected_since,
            "quality": quality,
            "impedance_kohm": m.impedance_kohm,
        }

    # ------------------------------------------------------------ impedance
    def impedance(self, device_id: str, seconds: float = 2.0, channels: list[int] | None = None) -> dict[str, float]:
        """Measure electrode impedance (kOhm per channel) of a Cyton or Ganglion; pauses its stream meanwhile."""
        from neuraflow.devices.impedance import measure_impedance

        managed = self._get(device_id)
        if managed.kind not in _IMPEDANCE_KINDS:
            raise SpecError("kind", f"{_WHERE}: impedance needs a {' or '.join(_IMPEDANCE_KINDS)} device; "
                                    f"{device_id!r} is {managed.kind!r}.")
        with managed.lock:
            was_connected = managed.slot is not None
            next_seq = managed.slot.next_seq if was_connected else 0
            self._stop_slot(managed)
            managed.state = "measuring"
            device = build_device(managed.spec)
            try:
                result = measure_impedance(device, seconds, channels=channels)
            finally:
                device.close()
                if was_connected:
                    self._start(managed, device, next_seq=next_seq)
                else:
                    managed.state = "disconnected"
            managed.impedance_kohm = result
        return result

    # ------------------------------------------------------------ discovery
    def discover(self, **kwargs: Any) -> dict[str, Any]:
        """:func:`~neuraflow.devices.discovery.discover`, with the registered devices as configured ones."""
        from neuraflow.devices.discovery import discover

        return discover(configured=self.specs(), **kwargs)
