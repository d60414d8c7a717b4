"""An OpenBCI WiFi Shield with a Cyton behind it, on 127.0.0.1: :class:`WifiShieldEmulator` (a test kit).

Serves the shield's HTTP API (``GET /board``, ``POST /tcp``, ``POST /command``,
``GET /stream/start``, ``GET /stream/stop``) from an in-thread
``http.server`` on a free port and, once started, connects to the ``ip:port``
given by ``POST /tcp`` and pushes 33-byte Cyton packets at the sample rate
(or ``speed`` times faster). Counts are a pure function of the sample index
(:meth:`WifiShieldEmulator.counts`), so tests compare them bit for bit.

Faults: :meth:`~WifiShieldEmulator.drop_packets` (lost packets: a counter gap),
:meth:`~WifiShieldEmulator.disconnect` (the TCP connection drops mid-stream),
``board_connected = False``. No Ray; loopback only.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from neuraflow.devices.openbci import protocol as proto

_RATES = {code: rate for rate, code in proto.SAMPLE_RATE_CODES.items()}


class WifiShieldEmulator:
    """A WiFi shield + Cyton on loopback.

    Parameters
    ----------
    daisy : bool
        16 channels (packets alternate board / Daisy halves).
    sample_rate : int
        Initial board rate, Hz (``POST /command {"command": "~N"}`` changes it).
    speed : float
        Time compression of the stream.
    gains : sequence of int or None
        Gains reported by ``GET /board`` (default 24 on every channel).
    """

    def __init__(self, *, daisy: bool = False, sample_rate: int = 1000, speed: float = 1.0,
                 gains: list[int] | None = None) -> None:
        self.daisy = daisy
        self.n_channels = 16 if daisy else 8
        self.sample_rate = sample_rate
        self.speed = speed
        self.gains = list(gains) if gains is not None else [proto.DEFAULT_GAIN] * self.n_channels
        self.board_connected = True
        self.requests: list[tuple[str, str, Any]] = []
        self.tcp_target: dict[str, Any] | None = None
        self.packets_sent = 0
        self._drop = 0
        self._lock = threading.Lock()
        self._stream_thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._http_thread = threading.Thread(target=self._httpd.serve_forever, name="wifi-shield-http", daemon=True)
        self._http_thread.start()

    @property
    def address(self) -> str:
        """``"127.0.0.1:<http port>"``: what :class:`~neuraflow.devices.openbci.wifi.OpenBCIWifi` takes as ``shield``."""
        return f"127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def streaming(self) -> bool:
        return self._stream_thread is not None and self._stream_thread.is_alive()

    # ------------------------------------------------------------- test API
    def counts(self, start: int, stop: int) -> np.ndarray:
        """Counts sent for sample indices [start, stop): shape (n_channels, n), int32 (both signs, up to +-2**23-1)."""
        i = np.arange(start, stop, dtype=np.int64)[None]
        ch = np.arange(self.n_channels, dtype=np.int64)[:, None]
        v = (i * (7919 + 104729 * ch)) % (2**24) - 2**23
        return v.astype(np.int32)

    def drop_packets(self, n: int) -> None:
        """Skip the next ``n`` packets (their counters are skipped too)."""
        with self._lock:
            self._drop += n

    def disconnect(self) -> None:
        """Close the TCP connection mid-stream (the shield's WiFi dropped)."""
        self._stop_stream()

    def close(self) -> None:
        self._stop_stream()
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> WifiShieldEmulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ HTTP
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        emu = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                return None

            def _reply(self, code: int, body: Any) -> None:
                data = json.dumps(body).encode() if not isinstance(body, str) else body.encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json" if not isinstance(body, str) else "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                emu.requests.append(("GET", self.path, None))
                if self.path == "/board":
                    self._reply(200, {"board_connected": emu.board_connected, "board_type": "cyton",
                                      "num_channels": emu.n_channels, "gains": emu.gains})
                elif self.path == "/stream/start":
                    if emu.tcp_target is None:
                        self._reply(400, "No TCP target: POST /tcp first")
                    else:
                        emu._start_stream()
                        self._reply(200, "Stream started")
                elif self.path == "/stream/stop":
                    emu._stop_stream()
                    self._reply(200, "Stream stopped")
                else:
                    self._reply(404, "Not found")

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", 0))
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except json.JSONDecodeError:
                    self._reply(400, "invalid JSON")
                    return
                emu.requests.append(("POST", self.path, body))
                if self.path == "/tcp":
                    emu.tcp_target = body
                    self._reply(200, {"connected": True, "delimiter": body.get("delimiter"),
                                      "ip": body.get("ip"), "output": body.get("output"), "port": body.get("port"),
                                      "latency": body.get("latency")})
                elif self.path == "/command":
                    cmd = str(body.get("command", ""))
                    if cmd[:1] == "~" and cmd[1:] in _RATES:
                        emu.sample_rate = _RATES[cmd[1:]]
                        self._reply(200, f"Success: Sample rate is {emu.sample_rate}Hz$$$")
                    else:
                        self._reply(200, f"Received: {cmd}")
                else:
                    self._reply(404, "Not found")

        return Handler

    # ---------------------------------------------------------------- stream
    def _start_stream(self) -> None:
        self._stop_stream()
        target = self.tcp_target or {}
        self._sock = socket.create_connection((target["ip"], int(target["port"])), timeout=2.0)
        self._stop.clear()
        self._stream_thread = threading.Thread(target=self._stream, args=(self._sock,), name="wifi-shield-tcp",
                                               daemon=True)
        self._stream_thread.start()

    def _stop_stream(self) -> None:
        self._stop.set()
        thread, self._stream_thread = self._stream_thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2.0)
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _packets(self, first: int, n: int) -> bytes:
        """Packets ``first`` ... ``first + n - 1`` (one per sample; two per sample with a Daisy)."""
        k = np.arange(first, first + n, dtype=np.int64)
        if not self.daisy:
            counts = self.counts(first, first + n).T
            return proto.encode_packets(k % 256, counts)
        sample = k // 2
        allc = self.counts(int(sample[0]), int(sample[-1]) + 1)
        rows = np.where((k % 2 == 0)[:, None], allc[:8, sample - sample[0]].T, allc[8:, sample - sample[0]].T)
        counters = np.where(k % 2 == 0, 2 * (sample % 128) + 1, 2 * (sample % 128) + 2) % 256
        return proto.encode_packets(counters, rows)

    def _stream(self, sock: socket.socket) -> None:
        packet_rate = self.sample_rate * (2 if self.daisy else 1)
        t0 = time.monotonic()
        sent = 0  # packet index (counts dropped ones)
        while not self._stop.is_set():
            due = int((time.monotonic() - t0) * packet_rate * self.speed)
            if due > sent:
                n = min(due - sent, 200)
                data = bytearray(self._packets(sent, n))
                with self._lock:
                    skip, self._drop = min(self._drop, n), self._drop - min(self._drop, n)
                if skip:
                    del data[: skip * proto.PACKET_SIZE]
                try:
                    sock.sendall(bytes(data))
                except OSError:
                    return
                self.packets_sent += n - skip
                sent += n
            else:
                time.sleep(0.002)
