"""Raw binary frames over TCP or UDP: :class:`TcpFrameDevice`, configured by a :class:`FrameFormat`.

For boards and bridges that push fixed-size binary frames (a header, an
optional frame counter, ``samples_per_frame x n_channels`` values). TCP: the
device connects to ``host:port`` and reads a byte stream; with a non-empty
``header`` it resynchronises on it after garbage (``"corrupt"`` events). UDP:
the device binds ``host:port``; each datagram holds whole frames (a datagram
that is not a multiple of the frame size is dropped as ``"corrupt"``).

Timestamps come from the frame counter when there is one (a gap is a
``"drop"`` event and advances the clock), else from the running sample count.
"""

from __future__ import annotations

import socket
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from neuraflow._validate import check_int, check_option, check_positive
from neuraflow.chunk import Chunk, Event, StreamInfo
from neuraflow.devices.base import QueuedEventsDevice
from neuraflow.errors import DeviceError, PipelineDefinitionError

_WHERE = "devices.TcpFrameDevice"
_DTYPES = (">i2", "<i2", ">u2", "<u2", ">i3", "<i3", ">i4", "<i4", ">f4", "<f4", ">f8", "<f8", "i1", "u1")


@dataclass(frozen=True)
class FrameFormat:
    """Layout of one frame.

    Parameters
    ----------
    n_channels : int
        Values per sample.
    sfreq : float
        Sampling rate, Hz.
    dtype : str
        Sample type: one of ``">i2" "<i2" ">u2" "<u2" ">i3" "<i3" ">i4" "<i4" ">f4" "<f4"
        ">f8" "<f8" "i1" "u1"`` (``i3``: 24-bit two's complement).
    header : bytes
        Fixed bytes that start every frame (empty: none; then TCP framing is by offset only).
    counter_size : int
        Bytes of the big-endian unsigned frame counter right after ``header`` (0: none).
    samples_per_frame : int
        Samples per frame, sample-major (``s0c0 s0c1 ... s1c0 ...``).
    trailer : int
        Bytes after the samples that are ignored (checksum, footer).
    scale : float
        Multiplier from raw values to ``unit``.
    unit : str
        Physical unit of the scaled values (``"V"``, ``"uV"``).
    """

    n_channels: int
    sfreq: float
    dtype: str = ">i3"
    header: bytes = b""
    counter_size: int = 0
    samples_per_frame: int = 1
    trailer: int = 0
    scale: float = 1.0
    unit: str = "V"

    def __post_init__(self) -> None:
        where = "devices.FrameFormat"
        check_int(where, "n_channels", self.n_channels)
        check_positive(where, "sfreq", self.sfreq)
        check_option(where, "dtype", self.dtype, _DTYPES)
        if not isinstance(self.header, (bytes, bytearray)):
            raise PipelineDefinitionError(f"{where}: header={self.header!r} must be bytes.")
        check_option(where, "counter_size", self.counter_size, (0, 1, 2, 4))
        check_int(where, "samples_per_frame", self.samples_per_frame)
        check_int(where, "trailer", self.trailer, minimum=0)
        if not (isinstance(self.scale, (int, float)) and np.isfinite(self.scale) and self.scale != 0):
            raise PipelineDefinitionError(f"{where}: scale={self.scale!r} must be a finite non-zero number.")

    @property
    def itemsize(self) -> int:
        return int(self.dtype[-1])

    @property
    def data_offset(self) -> int:
        return len(self.header) + self.counter_size

    @property
    def frame_size(self) -> int:
        """Bytes per frame."""
        return self.data_offset + self.samples_per_frame * self.n_channels * self.itemsize + self.trailer

    def decode(self, frames: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        """Decode frames.

        Parameters
        ----------
        frames : ndarray, shape (n_frames, frame_size), uint8

        Returns
        -------
        counters : ndarray, shape (n_frames,), int64, or None without a counter
        values : ndarray, shape (n_channels, n_frames * samples_per_frame), float64, scaled
        """
        n = frames.shape[0]
        counters = None
        if self.counter_size:
            c = frames[:, len(self.header) : self.data_offset].astype(np.int64)
            counters = np.zeros(n, np.int64)
            for k in range(self.counter_size):
                counters = (counters << 8) | c[:, k]
        nbytes = self.samples_per_frame * self.n_channels * self.itemsize
        body = np.ascontiguousarray(frames[:, self.data_offset : self.data_offset + nbytes])
        if self.itemsize == 3:
            b = body.reshape(-1, 3).astype(np.int32)
            if self.dtype[0] == "<":
                b = b[:, ::-1]
            raw = (b[:, 0] << 16) | (b[:, 1] << 8) | b[:, 2]
            raw = (raw ^ 0x800000) - 0x800000
        else:
            raw = body.reshape(-1).view(np.dtype(self.dtype))
        values = raw.astype(np.float64).reshape(-1, self.n_channels).T * self.scale
        return counters, values


class TcpFrameDevice(QueuedEventsDevice):
    """A device reading :class:`FrameFormat` frames from a TCP server or UDP datagrams.

    Parameters
    ----------
    host : str
        TCP: the server to connect to. UDP: the local address to bind (``"0.0.0.0"``).
    port : int
        TCP: the server's port. UDP: the local port to bind.
    frame_format : FrameFormat
        Layout and scale of a frame.
    protocol : {"tcp", "udp"}
        Transport.
    stream_id : str
        Name of the stream.
    channels : sequence of str or None
        Channel names (default ``"ch1"`` ...).
    chunk_size : int
        Samples per chunk; a chunk also ends early at a drop.
    connect_timeout_s, stall_timeout_s : float
        Connect timeout (TCP); longest silence while open before ``DeviceError``.

    Notes
    -----
    Chunks carry ``meta["sample_index"]``. Events: ``"drop"`` (counter gap, value:
    samples lost) and ``"corrupt"`` (value: bytes skipped).
    """

    blocking = True

    def __init__(self, host: str, port: int, *, frame_format: FrameFormat, protocol: str = "tcp",
                 stream_id: str = "tcp", channels: Any = None, chunk_size: int = 10,
                 connect_timeout_s: float = 5.0, stall_timeout_s: float = 2.0) -> None:
        if not isinstance(host, str) or not host:
            raise PipelineDefinitionError(f"{_WHERE}: host={host!r} must be a host name or address.")
        check_int(_WHERE, "port", port, minimum=0)
        if not isinstance(frame_format, FrameFormat):
            raise PipelineDefinitionError(f"{_WHERE}: frame_format must be a FrameFormat, got {type(frame_format).__name__}.")
        self.host, self.port = host, port
        self.protocol = check_option(_WHERE, "protocol", protocol, ("tcp", "udp"))
        self.fmt = frame_format
        self.chunk_size = check_int(_WHERE, "chunk_size", chunk_size)
        self.connect_timeout_s = check_positive(_WHERE, "connect_timeout_s", connect_timeout_s)
        self.stall_timeout_s = check_positive(_WHERE, "stall_timeout_s", stall_timeout_s)
        n = frame_format.n_channels
        names = tuple(channels) if channels is not None else tuple(f"ch{i + 1}" for i in range(n))
        if len(names) != n:
            raise PipelineDefinitionError(f"{_WHERE}: channels has {len(names)} names, frame_format has {n} channels.")
        self.info = StreamInfo(stream_id, frame_format.sfreq, names, units=(frame_format.unit,) * n,
                               meta={"device": f"{self.protocol}-frames", "address": f"{host}:{port}",
                                     "dtype": frame_format.dtype, "scale": frame_format.scale})
        self.stats: dict[str, float] = dict.fromkeys(("frames", "samples", "samples_dropped", "bytes_skipped"), 0)
        self._sock: socket.socket | None = None
        self._reset()

    def _reset(self) -> None:
        self._buf = bytearray()
        self._ready: deque[Chunk] = deque()
        self._events: list[Event] = []
        self._anchor: float | None = None
        self._next_index = 0
        self._expected: int | None = None
        self._pend: list[np.ndarray] = []
        self._pend_start = 0
        self._pend_n = 0
        self._last_rx = time.monotonic()

    def __getstate__(self) -> dict[str, Any]:
        keep = ("host", "port", "protocol", "fmt", "chunk_size", "connect_timeout_s", "stall_timeout_s", "info", "stats")
        return {k: self.__dict__[k] for k in keep}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._sock = None
        self._reset()

    @property
    def local_port(self) -> int | None:
        """The bound local port (UDP with ``port=0``), or ``None`` when closed."""
        return self._sock.getsockname()[1] if self._sock is not None else None

    def open(self) -> None:
        """Connect (TCP) or bind (UDP). Raises ``DeviceError`` when that fails."""
        self.close()
        self._reset()
        try:
            if self.protocol == "tcp":
                sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout_s)
            else:
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.bind((self.host, self.port))
        except OSError as exc:
            verb = "connect to" if self.protocol == "tcp" else "bind"
            raise DeviceError(f"{_WHERE} {self.info.stream_id!r}: cannot {verb} {self.host}:{self.port}: {exc}") from exc
        sock.settimeout(0.05)
        self._sock = sock
        self._last_rx = time.monotonic()

    def close(self) -> None:
        """Close the socket. Idempotent."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def read(self, timeout_s: float) -> Chunk | None:
        """Return the next chunk, or ``None`` if none completed within ``timeout_s``.

        Raises
        ------
        DeviceError
            Not open, the peer closed the connection, a socket error, or silence for ``stall_timeout_s``.
        """
        if self._ready:
            return self._ready.popleft()
        if self._sock is None:
            raise DeviceError(f"{_WHERE} {self.info.stream_id!r}: read() before open().")
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            try:
                data = self._sock.recv(65536)
                if not data and self.protocol == "tcp":
                    raise DeviceError(f"{_WHERE} {self.info.stream_id!r}: {self.host}:{self.port} closed the connection.")
            except TimeoutError:
                data = None
            except OSError as exc:
                raise DeviceError(f"{_WHERE} {self.info.stream_id!r}: socket error: {exc}") from exc
            now = time.monotonic()
            if data:
                self._last_rx = now
                self._ingest(bytes(data))
                if self._ready:
                    return self._ready.popleft()
            elif now - self._last_rx > self.stall_timeout_s:
                raise DeviceError(f"{_WHERE} {self.info.stream_id!r}: no data from {self.host}:{self.port} "
                                  f"for {now - self._last_rx:.2f} s (stall_timeout_s={self.stall_timeout_s}).")
            if now >= deadline:
                return None

    # ----------------------------------------------------------------- framing
    def _ingest(self, data: bytes) -> None:
        size = self.fmt.frame_size
        if self.protocol == "udp":
            if len(data) % size:
                self._corrupt(len(data))
                return
            self._frames(np.frombuffer(data, np.uint8).reshape(-1, size))
            return
        self._buf += data
        header = self.fmt.header
        starts: list[int] = []
        i = skipped = 0
        while i + size <= len(self._buf):
            if header and self._buf[i : i + len(header)] != header:
                j = self._buf.find(header, i + 1)
                j = len(self._buf) - len(header) + 1 if j < 0 else j
                skipped += j - i
                i = j
                continue
            starts.append(i)
            i += size
        if skipped:
            self._corrupt(skipped)
        if starts:
            raw = np.frombuffer(bytes(self._buf), np.uint8)
            self._frames(raw[np.asarray(starts)[:, None] + np.arange(size)])
        del self._buf[:i]

    def _corrupt(self, n: int) -> None:
        self.stats["bytes_skipped"] += n
        t = self._anchor + self._next_index / self.fmt.sfreq if self._anchor is not None else time.time()
        self._events.append(Event(self.info.stream_id, t, "corrupt", float(n), {"bytes_skipped": n}))

    def _frames(self, frames: np.ndarray) -> None:
        counters, values = self.fmt.decode(frames)
        spf, sfreq, now = self.fmt.samples_per_frame, self.fmt.sfreq, time.time()
        n_frames = frames.shape[0]
        self.stats["frames"] += n_frames
        if counters is None:
            missing = np.zeros(n_frames, np.int64)
        else:
            modulus = 1 << (8 * self.fmt.counter_size)
            prev = np.concatenate(([counters[0] if self._expected is None else self._expected], counters[:-1] + 1))
            missing = (counters - prev) % modulus
            self._expected = int(counters[-1] + 1) % modulus
        frame_index = self._next_index // spf + np.cumsum(missing) + np.arange(n_frames)
        last = (int(frame_index[-1]) + 1) * spf  # sample index after the last sample
        if self._anchor is None:
            self._anchor = now - (last - 1) / sfreq
        late = self._anchor + (last - 1) / sfreq - now
        if late > 0:
            self._anchor -= late
        for k in np.flatnonzero(missing).tolist():
            m = int(missing[k]) * spf
            first_missing = int(frame_index[k]) * spf - m
            self.stats["samples_dropped"] += m
            self._events.append(Event(self.info.stream_id, self._anchor + first_missing / sfreq, "drop", float(m),
                                      {"sample_index": first_missing, "got_counter": int(counters[k])}))
        for k in range(n_frames):
            index = int(frame_index[k]) * spf
            if self._pend_n and self._pend_start + self._pend_n != index:
                self._flush(now)
            block = values[:, k * spf : (k + 1) * spf]
            while block.shape[1]:
                if not self._pend_n:
                    self._pend_start = index
                take = min(block.shape[1], self.chunk_size - self._pend_n)
                self._pend.append(block[:, :take])
                self._pend_n += take
                block, index = block[:, take:], index + take
                if self._pend_n == self.chunk_size:
                    self._flush(now)
        self._next_index = last
        self.stats["samples"] += n_frames * spf

    def _flush(self, now: float) -> None:
        if not self._pend_n:
            return
        data = np.concatenate(self._pend, axis=1)
        self._ready.append(Chunk(data.astype(np.float32), self._anchor + self._pend_start / self.fmt.sfreq, self.info,
                                 recv_s=now, meta={"sample_index": self._pend_start}))
        self._pend, self._pend_n = [], 0

    def __repr__(self) -> str:
        return f"TcpFrameDevice({self.host!r}, {self.port}, protocol={self.protocol!r}, stream_id={self.info.stream_id!r})"
