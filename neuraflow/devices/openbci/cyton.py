"""OpenBCI Cyton (and Cyton + Daisy) over a serial port: :class:`OpenBCICyton`.

Timestamps come from the sample counter, not from arrival: the first samples
anchor the device clock to host time, then sample ``k`` is at
``anchor + k / sfreq``. The FTDI dongle delivers bytes in bursts (every 16 ms,
or 0.5 s-scale bursts when its latency timer is at its default), and arrival
stamps would turn that into jitter. The anchor is only ever moved *earlier*,
when a sample would otherwise be stamped after it arrived (the first packets
came late); so the timestamps track the minimum transport latency. A board
whose crystal runs slower than the host clock drifts later (tens of ppm: about
0.1 s per hour); that is not corrected.

Dropped packets: a sample counter gap of ``m`` samples becomes an ``Event``
``"drop"`` (value ``m``, time of the first missing sample), the clock advances
by ``m`` samples so later timestamps stay right, and the chunk ends at the gap
(no NaN padding: a chunk is always contiguous, so the runtime sees the time gap
too). The counter wraps at 256 (128 samples with a Daisy): a gap of a whole
wrap or more cannot be seen from the counter alone; the stall detector
(no valid packet for ``stall_timeout_s``, 1 s = 250 packets) fires first in
most such cases.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from neuraflow._validate import check_int, check_positive
from neuraflow.chunk import Chunk, Event, StreamInfo
from neuraflow.devices.base import QueuedEventsDevice
from neuraflow.devices.openbci import protocol as proto
from neuraflow.errors import DeviceError, PipelineDefinitionError

log = logging.getLogger(__name__)
_WHERE = "devices.OpenBCICyton"
_POLL_S = 0.02  # pyserial read timeout: bounds how late read(timeout_s) returns
_SYSFS_LATENCY = "/sys/bus/usb-serial/devices/{}/latency_timer"


@dataclass(frozen=True)
class CytonOptions:
    """Link options of :class:`OpenBCICyton`.

    Parameters
    ----------
    accel : bool
        Add the accelerometer as 3 channels ``acc_x``, ``acc_y``, ``acc_z``
        (``ch_types`` ``"misc"``, units ``"g"``). It is sampled at 25 Hz, so its
        last reading is held until the next one (zero until the first one).
    baudrate : int
        Serial speed (the Cyton dongle runs at 115200).
    banner_timeout_s : float
        Longest wait for the reply to ``v`` (and to each settings command).
    stall_timeout_s : float
        While streaming, no valid packet for this long raises
        ``DeviceError("... board stopped answering ...")``.
    set_latency_timer : bool
        Set the FTDI latency timer to 1 ms through sysfs when the port is a
        USB-serial adapter (best effort: skipped silently for other ports,
        logged when not permitted).
    stop_settle_s : float
        Wait after ``s`` before discarding input (packets still in flight).
    """

    accel: bool = False
    baudrate: int = 115200
    banner_timeout_s: float = 5.0
    stall_timeout_s: float = 1.0
    set_latency_timer: bool = True
    stop_settle_s: float = 0.05


class OpenBCICyton(QueuedEventsDevice):
    """OpenBCI Cyton (8 channels, 250 Hz) or Cyton + Daisy (16 channels, 125 Hz) over serial.

    Parameters
    ----------
    port : str
        Serial port of the dongle (``"/dev/ttyUSB0"``, ``"/dev/serial/by-id/..."``, ``"COM3"``).
    stream_id : str
        Name of the stream.
    daisy : bool
        A Daisy module is attached: 16 channels at 125 Hz. With ``False`` and a
        Daisy attached, the board is switched to 8 channels (``c``).
    gain : int or sequence of int
        ADS1299 gain (1, 2, 4, 6, 8, 12, 24), one for all channels or one per
        channel. Non-default gains are sent to the board at :meth:`open`.
    chunk_size : int
        Samples per chunk (10 = 40 ms at 250 Hz). A chunk also ends early at a drop.
    channels : sequence of str or None
        Channel names; ``None`` for ``"EXG1"`` ... ``"EXG8"`` (or 16).
    options : CytonOptions or None
        Accelerometer channels, timeouts, baud rate, latency timer.

    Attributes
    ----------
    info : StreamInfo
        Units ``"V"`` (float32 volts; exact: every 24-bit count maps to a distinct
        float32). ``info.meta["scale_v_per_count"]`` holds each channel's scale,
        so ``np.rint(data / scale)`` gives back the board's integer counts.
    stats : dict
        Cumulative counters: ``packets``, ``samples``, ``samples_dropped``,
        ``bytes_skipped``, ``clock_adjust_s``, ``opens``.

    Notes
    -----
    Each chunk has ``meta["sample_index"]`` (index of its first sample since
    :meth:`open`, counting dropped samples) and ``meta["counter"]`` (the
    board's counter of that sample). Events: ``"drop"`` (value: missing
    samples) and ``"corrupt"`` (value: garbage bytes skipped while resynchronising).
    A failure while samples are pending returns them first as a short chunk; the
    ``DeviceError`` is raised by the next :meth:`read`.

    Examples
    --------
    >>> from neuraflow.devices.openbci.emulator import CytonEmulator
    >>> with CytonEmulator() as emu:
    ...     dev = OpenBCICyton(emu.port, chunk_size=25)
    ...     dev.open()
    ...     chunk = dev.read(timeout_s=2.0)
    ...     dev.close()
    >>> chunk.data.shape, chunk.sfreq, chunk.info.units[0]
    ((8, 25), 250.0, 'V')
    """

    blocking = True

    def __init__(
        self,
        port: str,
        *,
        stream_id: str = "cyton",
        daisy: bool = False,
        gain: int | Sequence[int] = proto.DEFAULT_GAIN,
        chunk_size: int = 10,
        channels: Sequence[str] | None = None,
        options: CytonOptions | None = None,
    ) -> None:
        if not isinstance(port, str) or not port:
            raise PipelineDefinitionError(f"{_WHERE}: port={port!r} must be a serial port path such as '/dev/ttyUSB0'.")
        if not isinstance(daisy, bool):
            raise PipelineDefinitionError(f"{_WHERE}: daisy={daisy!r} must be True or False.")
        self.port = port
        self.daisy = daisy
        self.n_eeg = 16 if daisy else 8
        gains = (gain,) * self.n_eeg if isinstance(gain, int) else tuple(gain)
        if len(gains) != self.n_eeg or any(g not in proto.GAINS for g in gains):
            raise PipelineDefinitionError(
                f"{_WHERE}: gain={gain!r} must be one of {proto.GAINS} or {self.n_eeg} of them (one per channel)."
            )
        self.gains = gains
        self.chunk_size = check_int(_WHERE, "chunk_size", chunk_size)
        self.options = options if options is not None else CytonOptions()
        check_positive(_WHERE, "options.stall_timeout_s", self.options.stall_timeout_s)
        check_positive(_WHERE, "options.banner_timeout_s", self.options.banner_timeout_s)
        names = tuple(channels) if channels is not None else tuple(f"EXG{i + 1}" for i in range(self.n_eeg))
        if len(names) != self.n_eeg:
            raise PipelineDefinitionError(f"{_WHERE}: channels has {len(names)} names, expected {self.n_eeg}.")
        self.sfreq = 125.0 if daisy else 250.0
        scales = tuple(proto.scale_v_per_count(g) for g in gains)
        extra = ("acc_x", "acc_y", "acc_z") if self.options.accel else ()
        self.info = StreamInfo(
            stream_id=stream_id,
            sfreq=self.sfreq,
            channels=names + extra,
            ch_types=("eeg",) * self.n_eeg + ("misc",) * len(extra),
            units=("V",) * self.n_eeg + ("g",) * len(extra),
            meta={
                "device": "openbci-cyton-daisy" if daisy else "openbci-cyton",
                "port": port,
                "gain": gains,
                "vref_v": proto.VREF_V,
                "scale_v_per_count": scales,
                "accel_g_per_count": proto.ACCEL_G_PER_COUNT,
                "clock": "sample-counter",
            },
        )
        self._scale = np.array(scales, dtype=np.float64)[:, None]
        self.stats: dict[str, float] = dict.fromkeys(
            ("packets", "samples", "samples_dropped", "bytes_skipped", "clock_adjust_s", "opens"), 0
        )
        self._ser: Any = None
        self._reset_stream()

    # ------------------------------------------------------------------ state
    def _reset_stream(self) -> None:
        self._buf = bytearray()
        self._synced = False
        self._ready: deque[Chunk] = deque()
        self._events: list[Event] = []
        self._pending_error: DeviceError | None = None
        self._anchor: float | None = None  # wall time of sample index 0
        self._next_index = 0
        self._expected: int | None = None  # next sample counter (pair counter with a Daisy)
        self._half: tuple[int, np.ndarray, np.ndarray | None] | None = None  # Daisy board half waiting
        self._pend_counts: list[np.ndarray] = []  # (n, n_eeg) int32 blocks of the chunk being built
        self._pend_accel: list[np.ndarray] = []
        self._pend_start = 0
        self._pend_counter = 0
        self._pend_n = 0
        self._accel_hold = np.zeros(3, dtype=np.float64)
        self._last_packet_s = 0.0
        self._garbage_since_packet = 0

    def __getstate__(self) -> dict[str, Any]:
        keep = ("port", "daisy", "n_eeg", "gains", "chunk_size", "options", "sfreq", "info", "_scale", "stats")
        return {k: self.__dict__[k] for k in keep}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._ser = None
        self._reset_stream()

    # --------------------------------------------------------- device protocol
    def open(self) -> None:
        """Open the port, handshake (``s``, ``v`` -> banner ending ``$$$``), configure, start (``b``).

        Raises
        ------
        DeviceError
            Port missing or busy, no banner, a banner that is not a Cyton's,
            Daisy requested but absent, or a settings command refused.
        """
        import serial  # pyserial; imported here so that building a pipeline needs no port

        self.close()
        self._reset_stream()
        try:
            ser = serial.Serial(self.port, self.options.baudrate, timeout=_POLL_S, write_timeout=1.0)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise DeviceError(f"{_WHERE} {self.info.stream_id!r}: cannot open serial port {self.port!r}: {exc}") from exc
        self._ser = ser
        try:
            if self.options.set_latency_timer:
                self._set_latency_timer()
            ser.write(b"s")  # a board left streaming by a crashed session
            time.sleep(self.options.stop_settle_s)
            ser.reset_input_buffer()
            ser.write(b"v")
            banner = self._reply(b"v")
            if b"OpenBCI" not in banner:
                raise DeviceError(
                    f"{_WHERE} {self.info.stream_id!r}: {self.port!r} answered {_show(banner)} to 'v', "
                    "not an OpenBCI Cyton banner ('OpenBCI V3 8-16 channel ... $$$'). Wrong port or board?"
                )
            has_daisy = b"Daisy" in banner
            if self.daisy and not has_daisy:
                raise DeviceError(
                    f"{_WHERE} {self.info.stream_id!r}: daisy=True but the board on {self.port!r} reports no Daisy "
                    f"module (banner {_show(banner)}). Attach it or use daisy=False."
                )
            if has_daisy and not self.daisy:
                ser.write(b"c")  # 8-channel mode: otherwise packets alternate with the Daisy's
                self._reply(b"c")
            for channel, gain in enumerate(self.gains, start=1):
                if gain != proto.DEFAULT_GAIN:
                    cmd = proto.channel_command(channel, gain)
                    ser.write(cmd)
                    reply = self._reply(cmd)
                    if b"Success" not in reply:
                        raise DeviceError(
                            f"{_WHERE} {self.info.stream_id!r}: the board refused {cmd.decode()!r} "
                            f"(gain {gain} on channel {channel}): {_show(reply)}."
                        )
            ser.reset_input_buffer()
            ser.write(b"b")
        except DeviceError:
            self.close()
            raise
        except (serial.SerialException, OSError) as exc:
            self.close()
            raise DeviceError(f"{_WHERE} {self.info.stream_id!r}: handshake on {self.port!r} failed: {exc}") from exc
        self._last_packet_s = time.monotonic()
        self.stats["opens"] += 1

    def _reply(self, cmd: bytes) -> bytes:
        """Read until ``$$$`` (firmware v2+ ends every reply with it)."""
        deadline = time.monotonic() + self.options.banner_timeout_s
        buf = bytearray()
        while proto.BANNER_END not in buf:
            if time.monotonic() > deadline:
                what = "no banner" if cmd == b"v" else f"no reply to {cmd.decode()!r}"
                raise DeviceError(
                    f"{_WHERE} {self.info.stream_id!r}: {what} from {self.port!r} within "
                    f"{self.options.banner_timeout_s} s (got {len(buf)} bytes: {_show(bytes(buf))}). "
                    f"Is the board on, the dongle switch on GPIO_6, the baud rate {self.options.baudrate}, "
                    "the firmware v2 or later?"
                )
            buf += self._ser.read(max(1, self._ser.in_waiting))
        return bytes(buf)

    def _set_latency_timer(self) -> None:
        # FTDI adapters default to a 16 ms latency timer and the dongle's buffering turns
        # that into bursts of up to ~0.5 s on some systems; 1 ms removes them.
        name = os.path.basename(os.path.realpath(self.port))
        path = _SYSFS_LATENCY.format(name)
        if not os.path.exists(path):
            return  # not a USB-serial adapter (pty, macOS, Windows): nothing to do
        try:
            with open(path) as f:
                current = int(f.read().strip() or 0)
            if current > 1:
                with open(path, "w") as f:
                    f.write("1")
                log.info("%s: FTDI latency timer of %s set from %d to 1 ms", _WHERE, name, current)
        except (OSError, ValueError) as exc:
            log.warning(
                "%s: cannot set the FTDI latency timer of %s to 1 ms (%s): expect bursty delivery "
                "(timestamps are counter-based, so only latency suffers). Fix: `echo 1 | sudo tee %s` "
                "or a udev rule.", _WHERE, name, exc, path,
            )

    def close(self) -> None:
        """Stop streaming (``s``) and release the port. Idempotent."""
        ser, self._ser = self._ser, None
        if ser is None:
            return
        try:
            ser.write(b"s")
            ser.flush()
        except Exception:  # noqa: BLE001 - the port may already be gone
            pass
        try:
            ser.close()
        except Exception:  # noqa: BLE001
            pass

    def read(self, timeout_s: float) -> Chunk | None:
        """Return the next chunk, or ``None`` if none completed within ``timeout_s``.

        Raises
        ------
        DeviceError
            Not open, the port failed or vanished, or no valid packet for
            ``options.stall_timeout_s`` ("board stopped answering").
        """
        if self._ready:
            return self._ready.popleft()
        if self._pending_error is not None:
            exc, self._pending_error = self._pending_error, None
            raise exc
        ser = self._ser
        if ser is None:
            raise DeviceError(f"{_WHERE} {self.info.stream_id!r}: read() before open().")
        import serial

        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            try:
                waiting = ser.in_waiting
                data = ser.read(waiting) if waiting else (ser.read(1) if timeout_s > 0 else b"")
                if len(data) == 1:
                    more = ser.in_waiting
                    if more:
                        data += ser.read(more)
            except (serial.SerialException, OSError, TypeError) as exc:
                # TypeError: pyserial after a concurrent close; all mean the port is gone.
                return self._fail(f"serial port {self.port!r} failed (unplugged?): {exc}", exc)
            now = time.monotonic()
            if data:
                self._buf += data
                self._ingest(now)
                if self._ready:
                    return self._ready.popleft()
            if now - self._last_packet_s > self.options.stall_timeout_s:
                detail = (
                    f"{self._garbage_since_packet} bytes without a valid packet (wrong baud rate?)"
                    if self._garbage_since_packet
                    else "no bytes"
                )
                return self._fail(
                    f"board stopped answering on {self.port!r}: {detail} for "
                    f"{now - self._last_packet_s:.2f} s (stall_timeout_s={self.options.stall_timeout_s})"
                )
            if now >= deadline:
                return None

    def _fail(self, message: str, cause: BaseException | None = None) -> Chunk | None:
        """Raise ``DeviceError(message)``, after returning the samples already accepted."""
        err = DeviceError(f"{_WHERE} {self.info.stream_id!r}: {message}")
        err.__cause__ = cause
        self._flush(time.time())
        if self._ready:
            self._pending_error = err
            return self._ready.popleft()
        raise err

    # ---------------------------------------------------------------- decoding
    def _ingest(self, now_mono: float) -> None:
        starts, consumed, skipped = proto.find_frames(self._buf, synced=self._synced)
        packets = proto.decode_frames(self._buf, starts)
        if starts:
            self._synced = consumed == starts[-1] + proto.PACKET_SIZE
        elif consumed:
            self._synced = False
        del self._buf[:consumed]
        now = time.time()
        if skipped:
            self.stats["bytes_skipped"] += skipped
            self._garbage_since_packet += skipped
            t = self._anchor + self._next_index / self.sfreq if self._anchor is not None else now
            self._events.append(Event(self.info.stream_id, t, "corrupt", float(skipped), {"bytes_skipped": skipped}))
        if not len(packets):
            return
        self._last_packet_s = now_mono
        self._garbage_since_packet = 0
        self.stats["packets"] += len(packets)
        if self.options.accel:
            valid, xyz = packets.accel_counts()
            accel = np.where(valid[:, None], xyz * proto.ACCEL_G_PER_COUNT, np.nan)
        else:
            accel = None
        if self.daisy:
            counters, counts, accel = self._pair(packets, accel)
            modulus = 128
        else:
            counters, counts, modulus = packets.counters, packets.counts, 256
        if len(counters):
            self._on_samples(counters, counts, accel, modulus, now)

    def _pair(self, packets: proto.PacketArrays, accel: np.ndarray | None):
        """Join board (odd counter) and Daisy (even) packets into 16-channel samples; orphans are dropped."""
        out_c, out_x, out_a = [], [], []
        for k, c in enumerate(packets.counters.tolist()):
            acc = accel[k] if accel is not None else None
            if c % 2:  # board half of pair (c - 1) / 2
                self._half = ((c - 1) // 2, packets.counts[k], acc)
                continue
            pair = ((c - 2) % 256) // 2
            half, self._half = self._half, None
            if half is None or half[0] != pair:
                continue  # lone half: the sample is lost and shows up as a pair-counter gap
            out_c.append(pair)
            out_x.append(np.concatenate([half[1], packets.counts[k]]))
            if accel is not None:
                out_a.append(np.where(np.isnan(acc), half[2], acc))
        counts = np.array(out_x, dtype=np.int32).reshape(-1, 16)
        acc_arr = np.array(out_a, dtype=np.float64).reshape(-1, 3) if accel is not None else None
        return np.array(out_c, dtype=np.int64), counts, acc_arr

    def _on_samples(self, counters: np.ndarray, counts: np.ndarray, accel: np.ndarray | None, modulus: int, now: float):
        n = len(counters)
        if self._expected is None:  # first samples: anchor the clock; the last one arrived just now
            self._expected = int(counters[0])
            self._anchor = now - (n - 1) / self.sfreq
        prev = np.concatenate(([self._expected], counters[:-1] + 1))
        missing = (counters - prev) % modulus
        index = self._next_index + np.cumsum(missing + 1) - 1
        self._next_index = int(index[-1]) + 1
        self._expected = int(counters[-1] + 1) % modulus
        # Causality: the last sample cannot have been taken after it arrived.
        late = self._anchor + (self._next_index - 1) / self.sfreq - now
        if late > 0:
            self._anchor -= late
            self.stats["clock_adjust_s"] += late
        if accel is not None:
            held = np.vstack([self._accel_hold[None], accel])
            last = np.maximum.accumulate(np.where(~np.isnan(held[:, 0]), np.arange(n + 1), 0))
            accel = held[last][1:]
            self._accel_hold = accel[-1].copy()
        breaks = np.flatnonzero(missing)
        for b in breaks.tolist():
            m = int(missing[b])
            first_missing = int(index[b]) - m
            self.stats["samples_dropped"] += m
            self._events.append(
                Event(
                    self.info.stream_id,
                    self._anchor + first_missing / self.sfreq,
                    "drop",
                    float(m),
                    {"sample_index": first_missing, "expected_counter": int(prev[b]) % modulus,
                     "got_counter": int(counters[b])},
                )
            )
        bounds = [0, *breaks.tolist(), n]
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            if hi <= lo:
                continue
            if lo > 0 or (self._pend_n and self._pend_start + self._pend_n != int(index[lo])):
                self._flush(now)
            self._append(int(index[lo]), int(counters[lo]), counts[lo:hi], None if accel is None else accel[lo:hi], now)
        self.stats["samples"] += n

    def _append(self, index: int, counter: int, counts: np.ndarray, accel: np.ndarray | None, now: float) -> None:
        while len(counts):
            if not self._pend_n:
                self._pend_start, self._pend_counter = index, counter
            take = min(len(counts), self.chunk_size - self._pend_n)
            self._pend_counts.append(counts[:take])
            if accel is not None:
                self._pend_accel.append(accel[:take])
                accel = accel[take:]
            self._pend_n += take
            counts = counts[take:]
            index += take
            counter += take
            if self._pend_n == self.chunk_size:
                self._flush(now)

    def _flush(self, now: float) -> None:
        """Turn the samples pending into a chunk (shorter than chunk_size at a drop or failure)."""
        if not self._pend_n:
            return
        counts = np.concatenate(self._pend_counts)
        data = counts.T * self._scale
        if self._pend_accel:
            data = np.vstack([data, np.concatenate(self._pend_accel).T])
        self._ready.append(
            Chunk(
                data.astype(np.float32),
                self._anchor + self._pend_start / self.sfreq,
                self.info,
                recv_s=now,
                meta={"sample_index": self._pend_start, "counter": self._pend_counter % (128 if self.daisy else 256)},
            )
        )
        self._pend_counts, self._pend_accel, self._pend_n = [], [], 0

    def __repr__(self) -> str:
        return f"OpenBCICyton({self.port!r}, stream_id={self.info.stream_id!r}, daisy={self.daisy})"


def _show(data: bytes, limit: int = 120) -> str:
    text = data.decode("ascii", "replace")
    return repr(text if len(text) <= limit else text[:limit] + "...")
