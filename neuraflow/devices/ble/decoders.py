"""BLE packet formats of the Muse and the OpenBCI Ganglion: ids, commands and decoders. Pure, no I/O.

Muse (2016 "MU-02", Muse S, Muse 2), per the published muse-lsl / MuseJS decoders
(``muse-lsl/muselsl/muse.py: _handle_eeg``, ``muse-js/src/lib/muse-parse.ts``)::

    service 0xfe8d; control 273e0001-...; EEG TP9, AF7, AF8, TP10, AUX on 273e0003 ... 273e0007
    notification (20 bytes): uint16 big-endian packet index, then 12 samples x 12-bit unsigned,
    packed MSB first (sample 2k = b0 << 4 | b1 >> 4, sample 2k+1 = (b1 & 0xF) << 8 | b2)
    microvolts = 0.48828125 * (x - 2048); 256 Hz, so one index = 12 samples = 46.9 ms
    command: length-prefixed ASCII, [len(cmd) + 1] + cmd + "\\n"  (b"\\x02h\\n" halt)

Muse 2 / Muse S auxiliary sensors, per muse-lsl (``muselsl/constants.py``,
``muselsl/muse.py: _unpack_ppg_channel, _unpack_imu_channel``) and muse-js
(``src/muse.ts``, ``src/lib/muse-parse.ts: parseAccelerometer``)::

    PPG 273e000f / 0010 / 0011 (muse-lsl: PPG1 ambient, PPG2 infrared, PPG3 red), 64 Hz
        notification (20 bytes): uint16 big-endian index, then 6 samples x uint24 big-endian
    gyroscope 273e0009, accelerometer 273e000a (273e000b is telemetry), 52 Hz
        notification (20 bytes): uint16 big-endian index, then 3 samples x (x, y, z) int16 big-endian
    MUSE_ACCELEROMETER_SCALE_FACTOR = 0.0000610352 g per count   (1 / 16384: +-2 g full scale)
    MUSE_GYRO_SCALE_FACTOR = 0.0074768 deg/s per count           (~245 / 32768: +-245 deg/s)

OpenBCI Ganglion, per the "Ganglion Data Format" page of the OpenBCI documentation and
the firmware's ``compressData18`` / ``compressData19`` (OpenBCI_Ganglion_Library)::

    service fe84; receive 2d30c082-...; send 2d30c083-...; disconnect 2d30c084-...
    20-byte notifications, byte 0 = packet id:
      0        raw: 4 channels x 24-bit big-endian two's complement (bytes 1-12), 1 sample
      1-100    18-bit deltas, 2 samples x 4 channels (bytes 1-18); byte 19 accelerometer
               (int8; axis x, y, z on ids ending in 1, 2, 3)
      101-200  19-bit deltas, 2 samples x 4 channels (bytes 1-19)
      201-205  impedance of channel 1-4 / reference: ASCII digits (ohms), may end with "Z"
      206/207  ASCII message part / last part
    delta = previous - new (so new = previous - delta), with the sign bit moved into
    bit 0: a field whose LSB is 1 is negative (sign-extend from bit N-1).
    volts per count: 1.2 V / (8388607 * 1.5 * 51); 200 Hz; commands "b" start, "s" stop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# --------------------------------------------------------------------------- Muse
MUSE_SERVICE = "0000fe8d-0000-1000-8000-00805f9b34fb"
MUSE_CONTROL = "273e0001-4c4d-454d-96be-f03bac821358"
MUSE_EEG_CHARACTERISTICS = tuple(f"273e000{i}-4c4d-454d-96be-f03bac821358" for i in range(3, 8))
"""TP9, AF7, AF8, TP10, AUX (right aux electrode), in that order."""
MUSE_CHANNELS = ("TP9", "AF7", "AF8", "TP10", "AUX")
MUSE_SFREQ = 256.0
MUSE_SAMPLES_PER_PACKET = 12
MUSE_PACKET_SIZE = 20
MUSE_UV_PER_COUNT = 0.48828125
"""Microvolts per 12-bit count (``1000 / 2048``); the count 2048 is 0 uV."""
MUSE_INDEX_MODULUS = 1 << 16

MUSE_PPG_CHARACTERISTICS = tuple(f"273e00{h}-4c4d-454d-96be-f03bac821358" for h in ("0f", "10", "11"))
"""PPG1, PPG2, PPG3 (muse-lsl labels them ambient, infrared, red)."""
MUSE_PPG_CHANNELS = ("PPG1", "PPG2", "PPG3")
MUSE_PPG_SFREQ = 64.0
MUSE_PPG_SAMPLES_PER_PACKET = 6
MUSE_GYRO_CHARACTERISTIC = "273e0009-4c4d-454d-96be-f03bac821358"
MUSE_ACC_CHARACTERISTIC = "273e000a-4c4d-454d-96be-f03bac821358"
MUSE_TELEMETRY_CHARACTERISTIC = "273e000b-4c4d-454d-96be-f03bac821358"
MUSE_IMU_SFREQ = 52.0
MUSE_IMU_SAMPLES_PER_PACKET = 3
MUSE_ACC_G_PER_COUNT = 0.0000610352
"""muse-lsl ``MUSE_ACCELEROMETER_SCALE_FACTOR``: g per int16 count."""
MUSE_GYRO_DPS_PER_COUNT = 0.0074768
"""muse-lsl ``MUSE_GYRO_SCALE_FACTOR``: degrees per second per int16 count."""


def muse_command(cmd: str) -> bytes:
    """Encode a Muse control command: ``[len(cmd) + 1] + cmd + b"\\n"``.

    >>> muse_command("h"), muse_command("p21")
    (b'\\x02h\\n', b'\\x04p21\\n')
    """
    if not cmd or not cmd.isascii() or len(cmd) > 253:
        raise ValueError(f"muse_command: cmd={cmd!r} must be 1-253 ASCII characters.")
    return bytes([len(cmd) + 1]) + cmd.encode("ascii") + b"\n"


def decode_muse_eeg(data: bytes | bytearray) -> tuple[int, np.ndarray]:
    """Decode one Muse EEG notification.

    Parameters
    ----------
    data : bytes, len 20
        2-byte big-endian packet index + 18 bytes of 12 packed 12-bit samples.

    Returns
    -------
    index : int
        Packet index, 0-65535 (wraps).
    counts : ndarray, shape (12,), int32
        Unsigned 12-bit counts, 0-4095 (2048 is 0 uV).

    Raises
    ------
    ValueError
        ``data`` is not 20 bytes long.
    """
    if len(data) != MUSE_PACKET_SIZE:
        raise ValueError(f"decode_muse_eeg: a Muse EEG packet has {MUSE_PACKET_SIZE} bytes, got {len(data)}.")
    index = (data[0] << 8) | data[1]
    b = np.frombuffer(bytes(data[2:]), dtype=np.uint8).astype(np.int32).reshape(6, 3)
    counts = np.empty((6, 2), dtype=np.int32)
    counts[:, 0] = (b[:, 0] << 4) | (b[:, 1] >> 4)
    counts[:, 1] = ((b[:, 1] & 0x0F) << 8) | b[:, 2]
    return index, counts.reshape(12)


def decode_muse_ppg(data: bytes | bytearray) -> tuple[int, np.ndarray]:
    """Decode one Muse PPG notification (one of the three PPG characteristics).

    Parameters
    ----------
    data : bytes, len 20
        2-byte big-endian packet index + 6 unsigned 24-bit big-endian samples.

    Returns
    -------
    index : int
        Packet index, 0-65535 (wraps).
    counts : ndarray, shape (6,), int64
        Raw PPG counts, 0-16777215 (no physical unit).

    Raises
    ------
    ValueError
        ``data`` is not 20 bytes long.
    """
    if len(data) != MUSE_PACKET_SIZE:
        raise ValueError(f"decode_muse_ppg: a Muse PPG packet has {MUSE_PACKET_SIZE} bytes, got {len(data)}.")
    b = np.frombuffer(bytes(data[2:]), dtype=np.uint8).astype(np.int64).reshape(MUSE_PPG_SAMPLES_PER_PACKET, 3)
    return (data[0] << 8) | data[1], (b[:, 0] << 16) | (b[:, 1] << 8) | b[:, 2]


def decode_muse_imu(data: bytes | bytearray) -> tuple[int, np.ndarray]:
    """Decode one Muse accelerometer or gyroscope notification.

    Parameters
    ----------
    data : bytes, len 20
        2-byte big-endian packet index + 3 samples of (x, y, z) signed 16-bit big-endian.

    Returns
    -------
    index : int
        Packet index, 0-65535 (wraps).
    counts : ndarray, shape (3, 3), int32
        ``counts[axis, sample]`` (axis 0/1/2 = x/y/z); multiply by
        :data:`MUSE_ACC_G_PER_COUNT` or :data:`MUSE_GYRO_DPS_PER_COUNT`.

    Raises
    ------
    ValueError
        ``data`` is not 20 bytes long.
    """
    if len(data) != MUSE_PACKET_SIZE:
        raise ValueError(f"decode_muse_imu: a Muse IMU packet has {MUSE_PACKET_SIZE} bytes, got {len(data)}.")
    values = np.frombuffer(bytes(data[2:]), dtype=">i2").astype(np.int32)
    return (data[0] << 8) | data[1], values.reshape(MUSE_IMU_SAMPLES_PER_PACKET, 3).T.copy()


def muse_counts_to_volts(counts: np.ndarray) -> np.ndarray:
    """Convert 12-bit Muse counts to volts (float64): ``0.48828125e-6 * (counts - 2048)``."""
    return (np.asarray(counts, dtype=np.float64) - 2048.0) * (MUSE_UV_PER_COUNT * 1e-6)


def unwrap_index(raw: int, last: int | None, modulus: int) -> int:
    """Unwrap a wrapping counter ``raw`` next to the unwrapped ``last`` (nearest, either side).

    >>> unwrap_index(2, 65534, 1 << 16), unwrap_index(65535, 65536, 1 << 16)
    (65538, 65535)
    """
    if last is None:
        return raw
    diff = (raw - last) % modulus
    if diff >= modulus // 2:
        diff -= modulus
    return last + diff


class MuseAssembler:
    """Join the per-channel Muse notifications of one packet index into samples.

    The Muse sends each channel on its own characteristic with a shared index
    (EEG, PPG; the accelerometer and gyroscope use one characteristic each,
    ``n_channels=1`` with :func:`decode_muse_imu`).
    An index is complete when every channel has arrived; a newer index that
    completes first means the older ones lost a channel's notification: they
    are discarded and reported as missing.

    Parameters
    ----------
    n_channels : int
        Channels subscribed (4 without AUX, 5 with it).
    max_pending : int
        Incomplete indices kept at most (older ones are dropped as missing).
    decode : callable
        ``data -> (index, counts)``: :func:`decode_muse_eeg` (default),
        :func:`decode_muse_ppg` or :func:`decode_muse_imu`.
    """

    def __init__(self, n_channels: int, *, max_pending: int = 8, decode=decode_muse_eeg) -> None:
        self.n_channels = n_channels
        self.max_pending = max_pending
        self.decode = decode
        self._pending: dict[int, dict[int, np.ndarray]] = {}
        self._last: int | None = None  # last unwrapped index seen
        self._next: int | None = None  # next unwrapped index expected to complete

    def feed(self, channel: int, data: bytes | bytearray) -> list[tuple[int, int, np.ndarray]]:
        """Add the notification of ``channel`` (0-based); return the packets it completes.

        Returns
        -------
        packets : list of (index, n_missing, counts)
            ``index`` unwrapped packet index; ``n_missing`` packets lost right before it;
            ``counts`` ndarray (n_rows, n_samples): one row per channel for EEG
            (12 samples) and PPG (6), the 3 axes for the IMU (3 samples).
        """
        raw, counts = self.decode(data)
        index = unwrap_index(raw, self._last, MUSE_INDEX_MODULUS)
        self._last = index if self._last is None else max(self._last, index)
        if self._next is not None and index < self._next:
            return []  # late notification of an index already given up
        slot = self._pending.setdefault(index, {})
        slot[channel] = counts
        out: list[tuple[int, int, np.ndarray]] = []
        if len(slot) == self.n_channels:
            for older in [k for k in self._pending if k < index]:
                del self._pending[older]
            del self._pending[index]
            missing = 0 if self._next is None else index - self._next
            self._next = index + 1
            out.append((index, missing, np.vstack([np.atleast_2d(slot[c]) for c in range(self.n_channels)])))
        while len(self._pending) > self.max_pending:
            del self._pending[min(self._pending)]
        return out


# ------------------------------------------------------------------------ Ganglion
GANGLION_SERVICE = "0000fe84-0000-1000-8000-00805f9b34fb"
GANGLION_RECEIVE = "2d30c082-f39f-4ce6-923f-3484ea480596"
GANGLION_SEND = "2d30c083-f39f-4ce6-923f-3484ea480596"
GANGLION_DISCONNECT = "2d30c084-f39f-4ce6-923f-3484ea480596"
GANGLION_SFREQ = 200.0
GANGLION_PACKET_SIZE = 20
GANGLION_N_CHANNELS = 4
GANGLION_V_PER_COUNT = 1.2 / (8388607.0 * 1.5 * 51.0)
"""Volts per count: 1.2 V reference, gain 51, 1.5 (MCP3912 full scale is 2/3 of Vref)."""
GANGLION_ACCEL_G_PER_COUNT = 0.016
"""Accelerometer scale of the NodeJS driver (``OBCIGanglionAccelScaleFactor``), g per count."""


@dataclass(frozen=True, slots=True)
class GanglionPacket:
    """One decoded Ganglion notification (before delta accumulation).

    Attributes
    ----------
    packet_id : int
        Byte 0, 0-255.
    kind : str
        ``"raw"``, ``"delta18"``, ``"delta19"``, ``"impedance"``, ``"ascii"`` or ``"unknown"``.
    values : ndarray, shape (n, 4), int32
        ``"raw"``: the absolute counts (n = 1); ``"delta*"``: the two deltas (n = 2,
        ``new = previous - delta``); empty otherwise.
    accel : tuple of (axis, count) or None
        18-bit packets with id ending in 1, 2, 3: axis 0/1/2 (x/y/z) and its int8 count.
    impedance : tuple of (channel, ohms) or None
        Channel 1-4, or 0 for the reference (id 205).
    text : str
        ASCII message payload (ids 206/207).
    """

    packet_id: int
    kind: str
    values: np.ndarray
    accel: tuple[int, int] | None = None
    impedance: tuple[int, int] | None = None
    text: str = ""


_NO_VALUES = np.zeros((0, GANGLION_N_CHANNELS), dtype=np.int32)


def ganglion_kind(packet_id: int) -> str:
    """Classify a packet id: ``"raw"``, ``"delta18"``, ``"delta19"``, ``"impedance"``, ``"ascii"``, ``"unknown"``."""
    if packet_id == 0:
        return "raw"
    if 1 <= packet_id <= 100:
        return "delta18"
    if 101 <= packet_id <= 200:
        return "delta19"
    if 201 <= packet_id <= 205:
        return "impedance"
    if packet_id in (206, 207):
        return "ascii"
    return "unknown"


def unpack_ganglion_deltas(payload: bytes | bytearray, bits: int) -> np.ndarray:
    """Unpack 8 ``bits``-bit fields (MSB first) into deltas with the Ganglion's LSB sign rule.

    Parameters
    ----------
    payload : bytes
        At least ``bits`` bytes (8 fields x ``bits`` bits): bytes 1-18 or 1-19 of a packet.
    bits : {18, 19}
        Field width.

    Returns
    -------
    deltas : ndarray, shape (2, 4), int32
        ``deltas[s, c]`` of sample ``s`` (0, 1) and channel ``c``. A field with bit 0
        set is negative: it is sign-extended from ``bits`` bits (``field - 2**bits``).
    """
    if bits not in (18, 19):
        raise ValueError(f"unpack_ganglion_deltas: bits={bits!r} must be 18 or 19.")
    if len(payload) < bits:
        raise ValueError(f"unpack_ganglion_deltas: need {bits} bytes for 8 x {bits}-bit fields, got {len(payload)}.")
    word = int.from_bytes(bytes(payload[:bits]), "big")  # 8 * bits bits exactly
    mask = (1 << bits) - 1
    fields = [(word >> (bits * (7 - k))) & mask for k in range(8)]
    deltas = [f - (1 << bits) if f & 1 else f for f in fields]
    return np.array(deltas, dtype=np.int32).reshape(2, GANGLION_N_CHANNELS)


def decode_ganglion_packet(data: bytes | bytearray) -> GanglionPacket:
    """Decode one 20-byte Ganglion notification (see the module docstring for the layout).

    Raises
    ------
    ValueError
        ``data`` is shorter than the layout of its packet id needs.
    """
    if len(data) < 1:
        raise ValueError("decode_ganglion_packet: empty notification.")
    pid = data[0]
    kind = ganglion_kind(pid)
    if kind == "raw":
        if len(data) < 13:
            raise ValueError(f"decode_ganglion_packet: a raw packet needs 13 bytes, got {len(data)}.")
        vals = [int.from_bytes(bytes(data[1 + 3 * c : 4 + 3 * c]), "big", signed=True) for c in range(4)]
        return GanglionPacket(pid, kind, np.array([vals], dtype=np.int32))
    if kind in ("delta18", "delta19"):
        bits = 18 if kind == "delta18" else 19
        deltas = unpack_ganglion_deltas(data[1:], bits)
        accel = None
        if kind == "delta18" and pid % 10 in (1, 2, 3) and len(data) >= 20:
            accel = (pid % 10 - 1, int.from_bytes(bytes(data[19:20]), "big", signed=True))
        return GanglionPacket(pid, kind, deltas, accel=accel)
    text = bytes(data[1:]).split(b"\x00", 1)[0].decode("ascii", "replace")
    if kind == "impedance":
        digits = "".join(ch for ch in text if ch.isdigit())
        return GanglionPacket(pid, kind, _NO_VALUES, impedance=(pid - 200 if pid < 205 else 0, int(digits or 0)))
    return GanglionPacket(pid, kind, _NO_VALUES, text=text if kind == "ascii" else "")


@dataclass(frozen=True, slots=True)
class GanglionSamples:
    """What one notification adds to the stream (see :class:`GanglionDecompressor`).

    Attributes
    ----------
    counts : ndarray, shape (n, 4), int32
        New absolute samples (0, 1 or 2 rows).
    n_missing : int
        Samples lost right before these (2 per lost compressed packet).
    resync : bool
        A raw packet re-seeded the delta chain.
    packet : GanglionPacket
        The decoded notification.
    """

    counts: np.ndarray
    n_missing: int
    resync: bool
    packet: GanglionPacket


class GanglionDecompressor:
    """Accumulate Ganglion deltas into absolute counts and detect lost packets.

    Packet ids run 0 (raw), then 1-100 (18-bit) or 101-200 (19-bit), wrapping to
    1 / 101 (or to a new raw packet). A jump of the id means ``2 x`` that many
    samples were lost. After a loss the delta chain is off by the lost deltas
    (a constant offset per channel) until the next raw packet; deltas that
    arrive before any raw packet are dropped (nothing to add them to).
    """

    def __init__(self) -> None:
        self._last: np.ndarray | None = None  # (4,) int64, last absolute counts
        self._prev_id: int | None = None

    def feed(self, data: bytes | bytearray) -> GanglionSamples:
        """Decode one notification and return the samples it adds."""
        pkt = decode_ganglion_packet(data)
        if pkt.kind == "raw":
            missing = 0
            if self._prev_id is not None and self._prev_id not in (0, 100, 200):
                missing = 2 * (100 - (self._prev_id - 1) % 100 - 1)
            self._prev_id = 0
            self._last = pkt.values[0].astype(np.int64)
            return GanglionSamples(pkt.values.copy(), missing, True, pkt)
        if pkt.kind not in ("delta18", "delta19"):
            return GanglionSamples(_NO_VALUES, 0, False, pkt)
        rel = (pkt.packet_id - 1) % 100 + 1  # 1-100 for both kinds
        missing = 0
        if self._prev_id is not None:
            prev_rel = 0 if self._prev_id == 0 else (self._prev_id - 1) % 100 + 1
            missing = 2 * ((rel - prev_rel - 1) % 100)
        self._prev_id = pkt.packet_id
        if self._last is None:
            return GanglionSamples(_NO_VALUES, missing + 2, False, pkt)
        first = self._last - pkt.values[0]
        second = first - pkt.values[1]
        self._last = second
        counts = np.stack([first, second]).astype(np.int32)
        return GanglionSamples(counts, missing, False, pkt)
