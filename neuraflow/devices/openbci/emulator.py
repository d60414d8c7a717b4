"""A byte-exact OpenBCI Cyton on a pseudo-terminal: :class:`CytonEmulator` (a test kit).

The emulator opens a pty pair, answers the board's commands on the master side
and streams 33-byte packets at the board's rate (or ``speed`` times faster).
A device opens :attr:`CytonEmulator.port`, a symlink to the pty slave that
stays put across :meth:`~CytonEmulator.restart` (like ``/dev/serial/by-id/...``).

Faults to inject: garbage bytes, truncated packets, lost packets, a silent
board (stall), a vanished port (disconnect) and a board that comes back
(restart); plus wrong or missing banners for handshake tests.

What was sent is a pure function of the sample index: :meth:`CytonEmulator.counts`
regenerates it, so tests compare received counts bit for bit.

Linux/macOS only (``os.openpty``). No Ray, no hardware.
"""

from __future__ import annotations

import os
import select
import tempfile
import threading
import time
import tty
from collections.abc import Callable
from pathlib import Path

import numpy as np

from neuraflow.devices.openbci import protocol as proto

LEAD_OFF_HZ = 31.5
"""Frequency of the emulated AC lead-off drive (the Cyton's impedance check)."""
LEAD_OFF_A = 6e-9
"""Peak lead-off drive current, amperes: channel P-side voltage = (Z + 2.2 kOhm) * 6 nA."""
SERIES_OHM = 2200.0
"""Series resistor of each Cyton input."""

SignalFn = Callable[[int, int], np.ndarray]
"""``signal(start, stop) -> uV array (n_channels, stop - start)`` for sample indices [start, stop)."""

_FIRMWARE = b"Firmware: v3.1.2\n"


def banner(daisy: bool = False) -> bytes:
    """The reply of a Cyton (firmware v3) to ``v``."""
    text = b"OpenBCI V3 8-16 channel\nOn Board ADS1299 Device ID: 0x3E\n"
    if daisy:
        text += b"On Daisy ADS1299 Device ID: 0x3E\n"
    return text + b"LIS3DH Device ID: 0x33\n" + _FIRMWARE + proto.BANNER_END


def synthetic_uv(n_channels: int) -> SignalFn:
    """Default signal: per channel a DC offset (-70 to +70 mV), a 50 uV sine and a ramp (covers both signs)."""
    offsets = np.linspace(-70_000.0, 70_000.0, n_channels)[:, None]
    freqs = (5.0 + np.arange(n_channels))[:, None]

    def signal(start: int, stop: int) -> np.ndarray:
        i = np.arange(start, stop, dtype=np.float64)[None]
        return offsets + 50.0 * np.sin(2 * np.pi * freqs * i / 250.0) + ((i % 97) - 48.0)

    return signal


def load_openbci_gui(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read an OpenBCI GUI "Raw EXG Data" text file (BrainFlow Cyton rows).

    Returns
    -------
    uv : ndarray, shape (8, n_samples), float64
        EXG channels in uV.
    accel_g : ndarray, shape (3, n_samples), float64
        Accelerometer in g.
    """
    rows = np.loadtxt(path, delimiter=",", comments="%", skiprows=5, usecols=range(1, 12))
    return rows[:, :8].T.copy(), rows[:, 8:11].T.copy()


def recording_signal(uv: np.ndarray) -> SignalFn:
    """Play ``uv`` (n_channels, n_samples) in a loop as an emulator signal."""
    uv = np.asarray(uv, dtype=np.float64)

    def signal(start: int, stop: int) -> np.ndarray:
        return uv[:, np.arange(start, stop) % uv.shape[1]]

    return signal


class CytonEmulator:
    """A Cyton (or Cyton + Daisy) speaking the serial protocol on a pseudo-terminal.

    Parameters
    ----------
    daisy : bool
        Emulate a Daisy: 16 channels, packets alternating board (odd counter) / Daisy (even).
    signal : callable or ndarray or None
        ``signal(start, stop) -> uV (n_channels, n)``, or an array (n_channels, n_samples)
        of uV played in a loop; ``None`` for :func:`synthetic_uv`.
    speed : float
        Packet rate relative to the real 250 packets/s; ``float("inf")`` for as fast as
        the reader takes them.
    reply : bytes or None
        Reply to ``v``; ``None`` for the real banner; ``b""`` for a silent board.
    accel_g : tuple of 3 floats
        Accelerometer reading sent on every 10th packet (25 Hz).
    impedance_kohm : float or sequence of float
        Electrode impedance per channel: while the lead-off drive of a channel is on
        (``z`` CHANNEL 1 x ``Z``), a :data:`LEAD_OFF_HZ` sine of peak
        ``(Z + 2.2 kOhm) * 6 nA`` is added to it.

    Attributes
    ----------
    port : str
        Path to open (a symlink to the current pty slave).
    commands : list of bytes
        Commands received, in order.
    packets_sent, packets_dropped : int
        Packets written, and packets lost on purpose (drop_packets, stall).
    """

    def __init__(
        self,
        *,
        daisy: bool = False,
        signal: SignalFn | np.ndarray | None = None,
        speed: float = 1.0,
        reply: bytes | None = None,
        accel_g: tuple[float, float, float] = (0.04, 0.42, 0.238),
        impedance_kohm: float | tuple[float, ...] | list[float] = 10.0,
    ) -> None:
        self.daisy = daisy
        self.n_channels = 16 if daisy else 8
        if signal is None:
            signal = synthetic_uv(self.n_channels)
        elif isinstance(signal, np.ndarray):
            signal = recording_signal(signal)
        self.signal: SignalFn = signal
        self.speed = float(speed)
        self.reply = banner(daisy) if reply is None else reply
        self.accel_counts = tuple(int(round(g / proto.ACCEL_G_PER_COUNT)) for g in accel_g)
        self.impedance_kohm = np.broadcast_to(np.asarray(impedance_kohm, dtype=np.float64), (self.n_channels,)).copy()
        self._dir = tempfile.mkdtemp(prefix="cyton-emu-")
        self.port = str(Path(self._dir) / "ttyCYTON")
        self.commands: list[bytes] = []
        self.packets_sent = 0
        self.packets_dropped = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._master = self._slave = -1
        self._rng = np.random.default_rng(0)
        self.start()

    # ------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Create the pty and start answering (called by the constructor)."""
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no CR/LF translation: byte-exact
        os.set_blocking(self._master, False)
        tmp = self.port + ".new"
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(os.ttyname(self._slave), tmp)
        os.replace(tmp, self.port)
        self.gains = [proto.DEFAULT_GAIN] * self.n_channels
        self.lead_off: set[int] = set()  # 1-based channels whose P-side lead-off drive is on
        self._streaming = False
        self._eight_channel = False
        self._packet = 0  # packets generated since 'b' (sent or dropped)
        self._t_start = 0.0
        self._pre: list[bytes] = []  # garbage to write before the next packet
        self._truncate: int | None = None
        self._drop = 0
        self._stall_until = 0.0
        self._cmd = bytearray()
        self._running = True
        self._thread = threading.Thread(target=self._loop, name="cyton-emulator", daemon=True)
        self._thread.start()

    def disconnect(self) -> None:
        """The port vanishes (USB unplugged): stop and close the pty; open/read on it fail."""
        self._running = False
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        for fd in (self._master, self._slave):
            if fd >= 0:
                os.close(fd)
        self._master = self._slave = -1

    def restart(self) -> None:
        """Plug the board back in: a fresh pty behind the same :attr:`port`, not streaming."""
        self.disconnect()
        self.start()

    def close(self) -> None:
        """Stop the emulator and remove its port. Idempotent."""
        self.disconnect()
        for path in (self.port, self.port + ".new"):
            if os.path.lexists(path):
                os.unlink(path)
        if os.path.isdir(self._dir):
            os.rmdir(self._dir)

    def __enter__(self) -> CytonEmulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- faults
    def inject_corruption(self, n_bytes: int) -> None:
        """Write ``n_bytes`` random bytes (seeded) before the next packet."""
        with self._lock:
            self._pre.append(self._rng.integers(0, 256, n_bytes, dtype=np.uint8).tobytes())

    def inject_bytes(self, data: bytes) -> None:
        """Write ``data`` verbatim before the next packet."""
        with self._lock:
            self._pre.append(bytes(data))

    def truncate_next(self, keep: int = 20) -> None:
        """Send only the first ``keep`` bytes of the next packet (its sample is lost)."""
        with self._lock:
            self._truncate = keep

    def drop_packets(self, n: int) -> None:
        """Lose the next ``n`` packets (the counter jumps, as with a radio dropout)."""
        with self._lock:
            self._drop += n

    def stall(self, seconds: float) -> None:
        """Send nothing for ``seconds``; the packets of that time are lost."""
        with self._lock:
            self._stall_until = time.monotonic() + seconds

    def set_speed(self, speed: float) -> None:
        """Change the packet rate (relative to 250 packets/s) from now on."""
        with self._lock:
            if self._streaming:
                self._t_start = time.monotonic() - self._packet / (250.0 * speed) if np.isfinite(speed) else 0.0
            self.speed = float(speed)

    @property
    def streaming(self) -> bool:
        return self._streaming

    # ---------------------------------------------------------------- content
    def counts(self, start: int, stop: int) -> np.ndarray:
        """The counts sent for samples [start, stop), int32 (n_channels, n) at the current gains."""
        uv = np.asarray(self.signal(start, stop), dtype=np.float64)
        if self.lead_off:
            uv = uv.copy()
            drive = np.sin(2 * np.pi * LEAD_OFF_HZ * np.arange(start, stop) / (125.0 if self.daisy else 250.0))
            for ch in self.lead_off:
                uv[ch - 1] += (self.impedance_kohm[ch - 1] * 1e3 + SERIES_OHM) * LEAD_OFF_A * 1e6 * drive
        out = np.empty(uv.shape, dtype=np.int32)
        for ch, gain in enumerate(self.gains):
            out[ch] = proto.volts_to_counts(uv[ch] * 1e-6, gain)
        return out

    def _packets(self, first: int, n: int) -> bytes:
        """Bytes of packets ``first`` ... ``first + n - 1`` since 'b'."""
        q = np.arange(first, first + n)
        daisy = self.daisy and not self._eight_channel
        if daisy:
            samples = q // 2
            lo, hi = int(samples[0]), int(samples[-1]) + 1
            all_counts = self.counts(lo, hi)
            half = (q % 2) * 8  # even packet index -> board half (odd counter)
            counts = all_counts[half[:, None] + np.arange(8)[None], (samples - lo)[:, None]]
            counters = q + 1
        else:
            counts = self.counts(first, first + n)[:8].T
            samples, counters = q, q
        aux = np.zeros((n, 6), dtype=np.uint8)
        with_accel = (samples % 10 == 0) & ((q % 2 == 0) if daisy else True)
        aux[with_accel] = np.frombuffer(
            b"".join(v.to_bytes(2, "big", signed=True) for v in self.accel_counts), np.uint8
        )
        return proto.encode_packets(counters, counts, aux)

    # ---------------------------------------------------------------- thread
    def _loop(self) -> None:
        while self._running:
            timeout = 0.05
            if self._streaming:
                timeout = 0.0 if not np.isfinite(self.speed) else 0.002
            try:
                readable, _, _ = select.select([self._master], [], [], timeout)
                if readable:
                    self._on_bytes(os.read(self._master, 4096))
            except OSError:
                if not self._running:
                    return
                time.sleep(0.01)
                continue
            if self._streaming:
                self._stream_due()

    def _on_bytes(self, data: bytes) -> None:
        self._cmd += data
        while self._cmd:
            c = self._cmd[:1]
            if c == b"x":
                if len(self._cmd) < 9:
                    return
                cmd, self._cmd = bytes(self._cmd[:9]), self._cmd[9:]
            elif c == b"z":
                if len(self._cmd) < 5:
                    return
                cmd, self._cmd = bytes(self._cmd[:5]), self._cmd[5:]
            elif c == b"~":
                if len(self._cmd) < 2:
                    return
                cmd, self._cmd = bytes(self._cmd[:2]), self._cmd[2:]
            else:
                cmd, self._cmd = bytes(c), self._cmd[1:]
            self.commands.append(cmd)
            self._command(cmd)

    def _command(self, cmd: bytes) -> None:
        if not self.reply:  # a silent (dead) board
            return
        if cmd == b"v":
            self._streaming = False
            self.gains = [proto.DEFAULT_GAIN] * self.n_channels
            self.lead_off = set()
            self._eight_channel = False
            self._write(self.reply)
        elif cmd == b"b":
            with self._lock:
                self._streaming = True
                self._packet = 0
                self._t_start = time.monotonic()
        elif cmd == b"s":
            self._streaming = False
        elif cmd == b"c":
            self._eight_channel = True
            self._write(b"daisy removed" + proto.BANNER_END if self.daisy else b"no daisy to remove!" + proto.BANNER_END)
        elif cmd == b"C":
            self._eight_channel = not self.daisy
            self._write((b"daisy attached16" if self.daisy else b"no daisy to attach!8") + proto.BANNER_END)
        elif cmd == b"d":
            self.gains = [proto.DEFAULT_GAIN] * self.n_channels
            self._write(b"updating channel settings to default" + proto.BANNER_END)
        elif cmd[:1] == b"x":
            try:
                channel, gain, _ = proto.parse_channel_command(cmd)
            except (ValueError, IndexError):
                self._write(b"Failure: too few chars" + proto.BANNER_END)
                return
            if channel > self.n_channels:
                self._write(b"Failure: no daisy" + proto.BANNER_END)
                return
            self.gains[channel - 1] = gain
            self._write(f"Success: Channel set for {channel}".encode() + proto.BANNER_END)
        elif cmd[:1] == b"z":  # lead-off: z CHANNEL PCHAN NCHAN Z
            code = chr(cmd[1])
            daisy_codes = proto.DAISY_CHANNEL_CODES
            channel = int(code) if code in "12345678" else (daisy_codes.index(code) + 9 if code in daisy_codes else 0)
            if cmd[4:5] != b"Z" or channel < 1 or channel > self.n_channels or cmd[2:4].strip(b"01"):
                self._write(b"Failure: invalid lead off command" + proto.BANNER_END)
                return
            (self.lead_off.add if cmd[2:3] == b"1" else self.lead_off.discard)(channel)
            self._write(f"Success: Lead off set for {channel}".encode() + proto.BANNER_END)
        elif cmd[:1] == b"~":
            rates = {v: k for k, v in proto.SAMPLE_RATE_CODES.items()}
            rate = rates.get(chr(cmd[1]))
            self._write(f"Success: Sample rate is {rate}Hz".encode() + proto.BANNER_END if rate else b"Failure$$$")

    def _stream_due(self) -> None:
        now = time.monotonic()
        with self._lock:
            if np.isfinite(self.speed):
                due = int((now - self._t_start) * 250.0 * self.speed) + 1 - self._packet
            else:
                due = 256
            if due <= 0:
                return
            if now < self._stall_until:
                self._packet += due
                self.packets_dropped += due
                return
            pre, self._pre = self._pre, []
            truncate, self._truncate = self._truncate, None
            drop = min(self._drop, due)
            self._drop -= drop
            first = self._packet
            self._packet += due
        out = b"".join(pre)
        if truncate is not None and drop < due:
            out += self._packets(first + drop, 1)[:truncate]
            drop += 1
        if due > drop:
            out += self._packets(first + drop, due - drop)
        self.packets_sent += due - drop
        self.packets_dropped += drop
        self._write(out)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        deadline = time.monotonic() + 1.0
        while view and self._running:
            try:
                _, writable, _ = select.select([], [self._master], [], 0.05)
                if writable:
                    view = view[os.write(self._master, view) :]
            except BlockingIOError:
                continue
            except OSError:
                return
            if time.monotonic() > deadline:
                return  # nobody reads: the bytes are lost, as on a real link
