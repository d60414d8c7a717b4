"""A fake bleak backend and simulated Muse / Ganglion peripherals (a test kit, like :mod:`neuraflow.testing`).

Machines without Bluetooth (CI, containers) still run the real BLE devices:
:class:`FakeBackend` subclasses bleak's ``BaseBleakClient`` and is handed to
``bleak.BleakClient(address, backend=FakeBackend)``, so everything above the
lowest layer -- bleak's own ``BleakClient`` (UUID resolution, callback
wrapping) and our device code -- is the production path.

A peripheral is registered under an address (:func:`register`); the backend
connecting to that address serves its GATT table, forwards writes to it
(start/stop commands) and, while it streams, sends its notifications on the
client's asyncio loop at the peripheral's rate (times ``speed``).

The encoders here (:func:`encode_muse_eeg`, :func:`encode_muse_ppg`,
:func:`encode_muse_imu`, :func:`encode_ganglion_raw`, :func:`encode_ganglion_deltas`) follow the published formats (see
:mod:`neuraflow.devices.ble.decoders`) and mirror the firmware, e.g. the
Ganglion's sign-in-bit-0 rule, so decoders are tested against bytes built
independently of them.

Faults: :meth:`FakePeripheral.drop_next` (lost notifications),
:meth:`FakePeripheral.link_loss` (unsolicited disconnect mid-stream),
``refuse_connect`` (connection attempts fail).
"""

from __future__ import annotations

import asyncio
import threading
import uuid as _uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakError

from neuraflow.devices.ble import decoders as dec

_PERIPHERALS: dict[str, FakePeripheral] = {}
_LOCK = threading.Lock()


def register(peripheral: FakePeripheral) -> FakePeripheral:
    """Make ``peripheral`` reachable at ``peripheral.address`` through :class:`FakeBackend`."""
    with _LOCK:
        _PERIPHERALS[peripheral.address] = peripheral
    return peripheral


def unregister(address: str) -> None:
    """Forget the peripheral at ``address`` (connections to it then fail)."""
    with _LOCK:
        _PERIPHERALS.pop(address, None)


# ------------------------------------------------------------------ encoders
def encode_muse_eeg(index: int, counts: np.ndarray) -> bytes:
    """Encode a Muse EEG notification: uint16 big-endian index + 12 x 12-bit samples (MSB first).

    Parameters
    ----------
    index : int
        Packet index (taken modulo 65536).
    counts : array of int, shape (12,)
        Unsigned 12-bit counts, 0-4095.
    """
    c = np.asarray(counts, dtype=np.int64)
    if c.shape != (12,) or c.min() < 0 or c.max() > 4095:
        raise ValueError(f"encode_muse_eeg: counts must be 12 values in 0-4095, got shape {c.shape}.")
    word = 0
    for v in c.tolist():
        word = (word << 12) | v
    return (index % 65536).to_bytes(2, "big") + word.to_bytes(18, "big")


def encode_muse_ppg(index: int, counts: np.ndarray) -> bytes:
    """Encode a Muse PPG notification: uint16 big-endian index + 6 x uint24 big-endian samples."""
    c = np.asarray(counts, dtype=np.int64)
    if c.shape != (6,) or c.min() < 0 or c.max() >= 1 << 24:
        raise ValueError(f"encode_muse_ppg: counts must be 6 values in 0-16777215, got shape {c.shape}.")
    return (index % 65536).to_bytes(2, "big") + b"".join(int(v).to_bytes(3, "big") for v in c.tolist())


def encode_muse_imu(index: int, counts: np.ndarray) -> bytes:
    """Encode a Muse accelerometer / gyroscope notification: uint16 index + 3 samples x (x, y, z) int16 big-endian.

    Parameters
    ----------
    counts : array of int, shape (3, 3)
        ``counts[axis, sample]``, each in -32768-32767.
    """
    c = np.asarray(counts, dtype=np.int64)
    if c.shape != (3, 3) or c.min() < -(1 << 15) or c.max() >= 1 << 15:
        raise ValueError(f"encode_muse_imu: counts must be (3 axes, 3 samples) of int16, got shape {c.shape}.")
    return (index % 65536).to_bytes(2, "big") + b"".join(
        int(v).to_bytes(2, "big", signed=True) for v in c.T.reshape(9).tolist()
    )


def encode_ganglion_raw(counts: np.ndarray, packet_id: int = 0) -> bytes:
    """Encode a raw packet: id 0 + 4 x 24-bit big-endian two's complement, zero-padded to 20 bytes."""
    body = b"".join(int(v).to_bytes(3, "big", signed=True) for v in np.asarray(counts).tolist())
    return bytes([packet_id]) + body + bytes(dec.GANGLION_PACKET_SIZE - 1 - len(body))


def firmware_deltas(previous: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """The firmware's deltas: ``previous - new`` with bit 0 replaced by the sign bit.

    Parameters
    ----------
    previous : array of int, shape (4,)
    samples : array of int, shape (2, 4)

    Returns
    -------
    deltas : ndarray, shape (2, 4), int64 (what the firmware packs, before masking)
    """
    prev = np.asarray(previous, dtype=np.int64)
    s = np.asarray(samples, dtype=np.int64)
    d = np.stack([prev - s[0], s[0] - s[1]])
    return (d & ~np.int64(1)) | (d < 0).astype(np.int64)


def encode_ganglion_deltas(packet_id: int, deltas: np.ndarray, *, bits: int, aux: int = 0) -> bytes:
    """Pack 2 x 4 deltas (as :func:`firmware_deltas` makes them) into an 18- or 19-bit packet.

    Parameters
    ----------
    packet_id : int
        1-100 for ``bits=18``, 101-200 for ``bits=19``.
    deltas : array of int, shape (2, 4)
        Masked to ``bits`` bits (the firmware drops the high bits).
    aux : int
        Byte 19 of an 18-bit packet (int8 accelerometer count).
    """
    d = np.asarray(deltas, dtype=np.int64).reshape(8)
    mask = (1 << bits) - 1
    word = 0
    for v in d.tolist():
        word = (word << bits) | (v & mask)
    payload = word.to_bytes(bits, "big")
    if bits == 18:
        payload += (aux & 0xFF).to_bytes(1, "big")
    return bytes([packet_id]) + payload


# --------------------------------------------------------------- peripherals
class FakePeripheral:
    """A simulated BLE peripheral: a GATT table, a command handler and a notification source.

    Parameters
    ----------
    address : str
        Address the device connects to.
    gatt : dict of str to list of (str, list of str)
        Service UUID -> characteristics as ``(uuid, properties)``.
    rate_hz : float
        Notifications per second while streaming (before ``speed``).
    speed : float
        Time compression: notifications come ``speed`` times faster.
    """

    def __init__(self, address: str, gatt: dict[str, list[tuple[str, list[str]]]], rate_hz: float,
                 *, speed: float = 1.0) -> None:
        self.address = address
        self.gatt = gatt
        self.rate_hz = rate_hz
        self.speed = speed
        self.writes: list[tuple[str, bytes]] = []
        self.connects = 0
        self.refuse_connect = False
        self.streaming = False
        self._drop = 0
        self._link_loss = threading.Event()
        self._source: Iterator[list[tuple[str, bytes]]] | None = None

    # what tests call
    def drop_next(self, n: int) -> None:
        """Lose the next ``n`` notifications of subscribed characteristics (generated, then not sent)."""
        self._drop += n

    def link_loss(self) -> None:
        """Drop the connection mid-stream, as a peripheral walking out of range does."""
        self._link_loss.set()

    # what subclasses define
    def on_write(self, char_uuid: str, data: bytes) -> None:
        """Handle a write (commands); default: record it only."""

    def notifications(self) -> Iterator[list[tuple[str, bytes]]]:
        """Yield, ``rate_hz`` times a second, the ``(characteristic uuid, payload)`` sent together."""
        raise NotImplementedError

    # what the backend calls
    def _write(self, char_uuid: str, data: bytes) -> None:
        self.writes.append((char_uuid, bytes(data)))
        self.on_write(char_uuid, bytes(data))

    def _next(self, subscribed: set[str] | None = None) -> list[tuple[str, bytes]]:
        if self._source is None:
            self._source = self.notifications()
        sent = []
        for item in next(self._source):
            if subscribed is not None and item[0] not in subscribed:
                continue  # notifications are off on that characteristic: nothing goes over the air
            if self._drop:
                self._drop -= 1
                continue
            sent.append(item)
        return sent


class FakeMuse(FakePeripheral):
    """A Muse 2 / Muse S: EEG (5 characteristics, 12 samples, 256 Hz), PPG (3, 6 samples, 64 Hz),
    accelerometer and gyroscope (3 samples of x, y, z, 52 Hz).

    Commands on the control characteristic: ``d`` starts, ``h`` halts; ``p21``,
    ``s`` and others are recorded. Counts are pure functions of the sample
    index (:meth:`counts`, :meth:`ppg_counts`, :meth:`imu_counts`), so tests
    compare bit for bit. One connection event per EEG packet also carries the
    PPG and IMU packets whose samples are due by then (each stream has its own
    packet index, as on the headband). ``aux_sensors=False`` is a 2016 Muse
    (no PPG / IMU characteristics in its GATT table).
    """

    def __init__(self, address: str = "00:55:DA:B0:00:01", *, speed: float = 1.0, aux_sensors: bool = True) -> None:
        chars = [(dec.MUSE_CONTROL, ["write-without-response", "notify"])]
        chars += [(u, ["notify"]) for u in dec.MUSE_EEG_CHARACTERISTICS]
        if aux_sensors:
            chars += [(u, ["notify"]) for u in dec.MUSE_PPG_CHARACTERISTICS]
            chars += [(dec.MUSE_GYRO_CHARACTERISTIC, ["notify"]), (dec.MUSE_ACC_CHARACTERISTIC, ["notify"])]
        super().__init__(address, {dec.MUSE_SERVICE: chars}, dec.MUSE_SFREQ / dec.MUSE_SAMPLES_PER_PACKET,
                         speed=speed)
        self.aux_sensors = aux_sensors
        self.packet_index = 0

    @staticmethod
    def counts(start: int, stop: int) -> np.ndarray:
        """Counts of sample indices [start, stop): shape (5, stop - start), 0-4095, both extremes covered."""
        i = np.arange(start, stop, dtype=np.int64)[None]
        ch = np.arange(5, dtype=np.int64)[:, None]
        return (i * (17 + 2 * ch) + 1000 * ch) % 4096

    @staticmethod
    def ppg_counts(start: int, stop: int) -> np.ndarray:
        """PPG counts of sample indices [start, stop): shape (3, n), 0-16777215 (all 24 bits used)."""
        i = np.arange(start, stop, dtype=np.int64)[None]
        ch = np.arange(3, dtype=np.int64)[:, None]
        return (i * (1_234_567 + 1000 * ch) + 5_000_000 * ch) % (1 << 24)

    @staticmethod
    def imu_counts(kind: str, start: int, stop: int) -> np.ndarray:
        """Accelerometer (``kind="acc"``) or gyroscope (``"gyro"``) counts: shape (3 axes, n), int16 range."""
        i = np.arange(start, stop, dtype=np.int64)[None]
        axis = np.arange(3, dtype=np.int64)[:, None]
        step = 977 if kind == "acc" else 1531
        return (i * (step + 10 * axis) + 20_000 * axis) % 65536 - 32768

    def on_write(self, char_uuid: str, data: bytes) -> None:
        if char_uuid == dec.MUSE_CONTROL and len(data) >= 3 and data[0] == len(data) - 1:
            cmd = data[1:-1].decode("ascii", "replace")
            if cmd == "d":
                self.streaming = True
            elif cmd == "h":
                self.streaming = False

    def notifications(self) -> Iterator[list[tuple[str, bytes]]]:
        ppg_k = imu_k = n = 0  # PPG / IMU indices restart with every connection (the EEG's continue)
        while True:
            k = self.packet_index
            self.packet_index += 1
            n += 1
            counts = self.counts(12 * k, 12 * k + 12)
            out = [(char, encode_muse_eeg(k, counts[ch])) for ch, char in enumerate(dec.MUSE_EEG_CHARACTERISTICS)]
            if self.aux_sensors:
                # samples due by the end of the n-th EEG packet since the start, in integer arithmetic
                while (ppg_k + 1) * 6 * 256 <= n * 12 * 64:
                    ppg = self.ppg_counts(6 * ppg_k, 6 * ppg_k + 6)
                    out += [(char, encode_muse_ppg(ppg_k, ppg[ch]))
                            for ch, char in enumerate(dec.MUSE_PPG_CHARACTERISTICS)]
                    ppg_k += 1
                while (imu_k + 1) * 3 * 256 <= n * 12 * 52:
                    out.append((dec.MUSE_GYRO_CHARACTERISTIC,
                                encode_muse_imu(imu_k, self.imu_counts("gyro", 3 * imu_k, 3 * imu_k + 3))))
                    out.append((dec.MUSE_ACC_CHARACTERISTIC,
                                encode_muse_imu(imu_k, self.imu_counts("acc", 3 * imu_k, 3 * imu_k + 3))))
                    imu_k += 1
            yield out


class FakeGanglion(FakePeripheral):
    """An OpenBCI Ganglion: a raw packet, then 19-bit (or 18-bit with ``accel``) delta packets, 200 Hz.

    ``b`` starts, ``s`` stops (each start begins with a raw packet, id 0); ``z`` starts
    the impedance mode (packets 201-205 carrying :attr:`impedance_ohm` as ASCII), ``Z`` ends it.
    The signal (:meth:`counts`) has deltas whose bit 0 already matches their
    sign, so the firmware's LSB sign rule loses nothing and decoding is exact.
    """

    def __init__(self, address: str = "C4:E1:A0:00:00:02", *, accel: bool = False, speed: float = 1.0) -> None:
        chars = [(dec.GANGLION_RECEIVE, ["notify"]), (dec.GANGLION_SEND, ["write-without-response"]),
                 (dec.GANGLION_DISCONNECT, ["write-without-response"])]
        super().__init__(address, {dec.GANGLION_SERVICE: chars}, dec.GANGLION_SFREQ / 2, speed=speed)
        self.accel = accel
        self.sample_index = 0
        self.impedance_ohm = [4_700, 12_000, 250_000, 1_500, 3_300]
        """Ohms reported in impedance mode for channels 1-4 and the reference (ids 201-205)."""
        self.impedance_mode = False

    @staticmethod
    def counts(start: int, stop: int) -> np.ndarray:
        """Counts of sample indices [start, stop): shape (4, n), int64.

        A triangle wave per channel around a DC offset (negative on channels 1-2),
        built from deltas whose bit 0 is their sign bit (even rises of ``2m``,
        odd falls of ``2m -+ 1``), so the firmware's compression is lossless.
        """
        i = np.arange(start, stop, dtype=np.int64) % _GANGLION_PERIOD
        return _GANGLION_DC[:, None] - _GANGLION_CUMSUM[:, i]

    def on_write(self, char_uuid: str, data: bytes) -> None:
        if char_uuid != dec.GANGLION_SEND:
            return
        if data == b"b":
            self.impedance_mode = False
            self.streaming = True
            self._source = None  # a start begins with a raw packet
        elif data == b"s":
            self.streaming = False
        elif data == b"z":  # impedance mode: ASCII ohms of channels 1-4 and the reference, in turn
            self.impedance_mode = True
            self.streaming = True
            self._source = None
        elif data == b"Z":
            self.impedance_mode = False
            self.streaming = False
            self._source = None

    def notifications(self) -> Iterator[list[tuple[str, bytes]]]:
        if self.impedance_mode:
            k = 0
            while True:
                channel = k % 5
                k += 1
                text = f"{self.impedance_ohm[channel]}Z".encode("ascii")
                yield [(dec.GANGLION_RECEIVE, bytes([201 + channel]) + text + bytes(19 - len(text)))]
        start = self.sample_index
        prev = self.counts(start, start + 1)[:, 0]
        yield [(dec.GANGLION_RECEIVE, encode_ganglion_raw(prev))]
        self.sample_index += 1
        n = 0
        while True:
            k = self.sample_index
            pair = self.counts(k, k + 2).T  # (2, 4)
            self.sample_index += 2
            pid = n % 100 + 1
            n += 1
            deltas = firmware_deltas(prev, pair)
            prev = pair[1]
            if self.accel:
                yield [(dec.GANGLION_RECEIVE, encode_ganglion_deltas(pid, deltas, bits=18, aux=pid % 10))]
            else:
                yield [(dec.GANGLION_RECEIVE, encode_ganglion_deltas(pid + 100, deltas, bits=19))]


_GANGLION_M = np.array([1001, 3001, 5001, 6001], dtype=np.int64)  # odd, per channel
_GANGLION_DELTAS = np.concatenate(
    [np.repeat(2 * _GANGLION_M[:, None], 10, axis=1), np.tile(np.stack([-(2 * _GANGLION_M - 1), -(2 * _GANGLION_M + 1)], 1), 5)],
    axis=1,
)  # (4, 20): deltas of samples 1-20 of a period; they sum to zero
_GANGLION_PERIOD = _GANGLION_DELTAS.shape[1]
_GANGLION_CUMSUM = np.concatenate([np.zeros((4, 1), np.int64), np.cumsum(_GANGLION_DELTAS, axis=1)[:, :-1]], axis=1)
_GANGLION_DC = np.array([-2_000_000, -150_000, 150_000, 2_000_000], dtype=np.int64)


# ------------------------------------------------------------------- backend
class FakeBackend(BaseBleakClient):
    """The lowest bleak layer, simulated: pass as ``BleakClient(address, backend=FakeBackend)``.

    Connects to the :class:`FakePeripheral` registered at the address; raises
    ``BleakError`` like a real backend when there is none, when it refuses, or
    when used while disconnected.
    """

    def __init__(self, address_or_ble_device: Any, **kwargs: Any) -> None:
        super().__init__(address_or_ble_device, disconnected_callback=kwargs.pop("disconnected_callback", None),
                         timeout=kwargs.pop("timeout", 10.0))
        self._peripheral: FakePeripheral | None = None
        self._connected = False
        self._callbacks: dict[str, NotifyCallback] = {}
        self._pump: asyncio.Task | None = None

    @property
    def name(self) -> str:
        return f"fake-{self.address}"

    @property
    def mtu_size(self) -> int:
        return 23

    @property
    def is_connected(self) -> bool:
        return self._connected

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        await asyncio.sleep(0)
        with _LOCK:
            peripheral = _PERIPHERALS.get(self.address)
        if peripheral is None:
            raise BleakError(f"Device with address {self.address} was not found.")
        if peripheral.refuse_connect:
            raise BleakError(f"Device {self.address}: connection refused (le-connection-abort-by-local).")
        peripheral.connects += 1
        peripheral.streaming = False
        peripheral._source = None
        peripheral._link_loss.clear()
        self._peripheral = peripheral
        self.services = _services(peripheral.gatt)
        self._connected = True
        self._pump = asyncio.get_running_loop().create_task(self._run())

    async def disconnect(self) -> None:
        await self._teardown()

    async def _teardown(self) -> None:
        self._connected = False
        self._callbacks.clear()
        pump, self._pump = self._pump, None
        if pump is not None and pump is not asyncio.current_task():
            pump.cancel()
            try:
                await pump
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - the pump's end is not ours to report
                pass
        if self._peripheral is not None:
            self._peripheral.streaming = False

    async def _run(self) -> None:
        """Send the peripheral's notifications while it streams; end the link on a link loss."""
        p = self._peripheral
        assert p is not None
        loop = asyncio.get_running_loop()
        next_t = loop.time()
        while self._connected:
            if p._link_loss.is_set():
                await self._teardown()
                if self._disconnected_callback is not None:
                    self._disconnected_callback()
                return
            if not p.streaming:
                await asyncio.sleep(0.005)
                next_t = loop.time()
                continue
            delay = next_t - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            next_t += 1.0 / (p.rate_hz * p.speed)
            if not (self._connected and p.streaming):
                continue
            for char, payload in p._next(set(self._callbacks)):  # one connection event: one or more notifications
                callback = self._callbacks.get(char)
                if callback is not None:
                    callback(bytearray(payload))

    def _check(self) -> FakePeripheral:
        if not self._connected or self._peripheral is None:
            raise BleakError("Not connected")
        return self._peripheral

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        self._check()

    async def unpair(self) -> None:
        self._check()

    async def read_gatt_char(self, characteristic: BleakGATTCharacteristic, **kwargs: Any) -> bytearray:
        self._check()
        return bytearray()

    async def read_gatt_descriptor(self, descriptor: Any, **kwargs: Any) -> bytearray:
        self._check()
        return bytearray()

    async def write_gatt_char(self, characteristic: BleakGATTCharacteristic, data: Any, response: bool) -> None:
        self._check()._write(characteristic.uuid, bytes(data))

    async def write_gatt_descriptor(self, descriptor: Any, data: Any) -> None:
        self._check()

    async def start_notify(self, characteristic: BleakGATTCharacteristic, callback: NotifyCallback,
                           **kwargs: Any) -> None:
        self._check()
        if "notify" not in characteristic.properties and "indicate" not in characteristic.properties:
            raise BleakError(f"Characteristic {characteristic.uuid} does not support notifications.")
        self._callbacks[characteristic.uuid] = callback

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        self._check()
        self._callbacks.pop(characteristic.uuid, None)


def _services(gatt: dict[str, list[tuple[str, list[str]]]]) -> BleakGATTServiceCollection:
    collection = BleakGATTServiceCollection()
    handle = 1
    for service_uuid, chars in gatt.items():
        service = BleakGATTService(None, handle, str(_uuid.UUID(service_uuid)))
        collection.add_service(service)
        handle += 1
        for char_uuid, props in chars:
            collection.add_characteristic(
                BleakGATTCharacteristic(None, handle + 1, char_uuid, list(props), lambda: 20, service)
            )
            handle += 3
    return collection

