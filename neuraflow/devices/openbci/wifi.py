"""OpenBCI Cyton (+ Daisy) behind the OpenBCI WiFi Shield: :class:`OpenBCIWifi`.

The shield is driven over its HTTP API and pushes the board's raw 33-byte
Cyton packets to a TCP server of ours::

    GET  /board          {"board_connected": true, "board_type": "cyton", "num_channels": 8, "gains": [24, ...]}
    POST /command        {"command": "~4"}     (optional: sample rate code, see protocol.SAMPLE_RATE_CODES)
    POST /tcp            {"ip": <our ip>, "port": <our port>, "output": "raw", "delimiter": true, "latency": 10000}
    GET  /stream/start   the shield connects to us and streams
    GET  /stream/stop

Everything after the TCP connection -- framing and resync, counter-based
timestamps, drop and corrupt events, Daisy pairing -- is
:class:`~neuraflow.devices.openbci.OpenBCICyton`'s, fed from the socket instead
of a serial port.
"""

from __future__ import annotations

import json
import select
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from neuraflow._validate import check_int, check_option, check_positive
from neuraflow.devices.openbci import protocol as proto
from neuraflow.devices.openbci.cyton import CytonOptions, OpenBCICyton
from neuraflow.errors import DeviceError, PipelineDefinitionError

_WHERE = "devices.OpenBCIWifi"


class _SocketPort:
    """The part of pyserial's ``Serial`` that :class:`OpenBCICyton` reads with, over a TCP socket."""

    def __init__(self, sock: socket.socket, timeout_s: float) -> None:
        self._sock = sock
        self._timeout_s = timeout_s
        self._buf = bytearray()

    @property
    def in_waiting(self) -> int:
        self._fill(0.0)
        return len(self._buf)

    def _fill(self, timeout_s: float) -> None:
        ready, _, _ = select.select([self._sock], [], [], timeout_s)
        if ready:
            data = self._sock.recv(65536)
            if not data:
                raise OSError("the WiFi shield closed the TCP connection")
            self._buf += data

    def read(self, n: int) -> bytes:
        if not self._buf:
            self._fill(self._timeout_s)
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def write(self, data: bytes) -> int:  # commands go over HTTP; nothing is written to the stream
        return len(data)

    def flush(self) -> None:
        return None

    def close(self) -> None:
        self._sock.close()


class OpenBCIWifi(OpenBCICyton):
    """A Cyton (or Cyton + Daisy) streaming through an OpenBCI WiFi Shield.

    Parameters
    ----------
    shield : str
        Host name or IP of the shield, optionally with ``:port`` (HTTP port, default 80).
    stream_id : str
        Name of the stream.
    daisy : bool
        A Daisy module is attached (16 channels; the rate is halved).
    sample_rate : int
        Board sample rate set through ``POST /command`` (250-16000, see
        :data:`~neuraflow.devices.openbci.protocol.SAMPLE_RATE_CODES`); the shield's
        default is 1000 Hz. With a Daisy the stream rate is half of it.
    gain : int or sequence of int
        The gains the board is configured with (checked against ``GET /board``).
    local_host : str or None
        Address of this machine as the shield must reach it (``None``: the
        address of the interface that routes to the shield).
    local_port : int
        TCP port to listen on (0: any free port).
    chunk_size : int
        Samples per chunk.
    channels : sequence of str or None
        Channel names.
    http_timeout_s : float
        Timeout of each HTTP request and of the shield's TCP connection.
    options : CytonOptions or None
        Stall timeout and accelerometer channels (serial-only fields are ignored).

    Examples
    --------
    >>> from neuraflow.devices.openbci.wifi_emulator import WifiShieldEmulator
    >>> with WifiShieldEmulator() as shield:
    ...     dev = OpenBCIWifi(shield.address, chunk_size=50)
    ...     dev.open()
    ...     chunk = dev.read(timeout_s=2.0)
    ...     dev.close()
    >>> chunk.data.shape, chunk.sfreq
    ((8, 50), 1000.0)
    """

    def __init__(self, shield: str, *, stream_id: str = "cyton-wifi", daisy: bool = False, sample_rate: int = 1000,
                 gain: int | Sequence[int] = proto.DEFAULT_GAIN, local_host: str | None = None, local_port: int = 0,
                 chunk_size: int = 50, channels: Sequence[str] | None = None, http_timeout_s: float = 3.0,
                 options: CytonOptions | None = None) -> None:
        if not isinstance(shield, str) or not shield:
            raise PipelineDefinitionError(f"{_WHERE}: shield={shield!r} must be the shield's host or 'host:port'.")
        check_option(_WHERE, "sample_rate", sample_rate, tuple(proto.SAMPLE_RATE_CODES))
        check_int(_WHERE, "local_port", local_port, minimum=0)
        super().__init__(f"wifi://{shield}", stream_id=stream_id, daisy=daisy, gain=gain, chunk_size=chunk_size,
                         channels=channels, options=options)
        self.shield = shield
        self.sample_rate = sample_rate
        self.local_host = local_host
        self.local_port = local_port
        self.http_timeout_s = check_positive(_WHERE, "http_timeout_s", http_timeout_s)
        self.sfreq = sample_rate / 2 if daisy else float(sample_rate)
        meta = {**self.info.meta, "device": "openbci-cyton-wifi", "port": None, "shield": shield,
                "sample_rate": sample_rate}
        self.info = self.info.replace(sfreq=self.sfreq, meta=meta)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.update({k: self.__dict__[k] for k in ("shield", "sample_rate", "local_host", "local_port",
                                                    "http_timeout_s")})
        return state

    @property
    def base_url(self) -> str:
        return f"http://{self.shield}"

    def _http(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base_url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(req, timeout=self.http_timeout_s) as resp:
                text = resp.read().decode("utf-8", "replace")
        except (urllib.error.URLError, OSError) as exc:
            raise DeviceError(f"{_WHERE} {self.info.stream_id!r}: {method} {self.base_url}{path} failed: {exc}. "
                              "Is the shield on and on this network?") from exc
        try:
            return json.loads(text) if text.strip() else {}
        except json.JSONDecodeError:
            return {"text": text}

    def open(self) -> None:
        """Check the board (``GET /board``), set the rate, point the shield at our TCP server, start.

        Raises
        ------
        DeviceError
            Shield unreachable, no board on it, channel count or gains not as configured,
            or the shield never connected back.
        """
        self.close()
        self._reset_stream()
        board = self._http("GET", "/board")
        n_expected = 16 if self.daisy else 8
        if not board.get("board_connected", False):
            raise DeviceError(f"{_WHERE} {self.info.stream_id!r}: the shield at {self.shield!r} reports no board "
                              f"(GET /board: {board}). Is the Cyton switched on (PC position)?")
        if board.get("num_channels") != n_expected:
            raise DeviceError(f"{_WHERE} {self.info.stream_id!r}: the board has {board.get('num_channels')} channels, "
                              f"expected {n_expected} (daisy={self.daisy}).")
        gains = board.get("gains")
        if gains is not None and tuple(gains)[:n_expected] != self.gains:
            raise DeviceError(f"{_WHERE} {self.info.stream_id!r}: the board's gains are {gains}, this device is "
                              f"configured with gain={list(self.gains)}; pass gain= to match.")
        server = socket.create_server(("", self.local_port))
        try:
            host = self.local_host or _route_address(self.shield)
            port = server.getsockname()[1]
            self._http("POST", "/command", {"command": "~" + proto.SAMPLE_RATE_CODES[self.sample_rate]})
            self._http("POST", "/tcp", {"ip": host, "port": port, "output": "raw", "delimiter": True,
                                         "latency": 10000})
            self._http("GET", "/stream/start")
            server.settimeout(self.http_timeout_s)
            try:
                conn, _ = server.accept()
            except TimeoutError as exc:
                raise DeviceError(f"{_WHERE} {self.info.stream_id!r}: the shield did not connect to {host}:{port} "
                                  f"within {self.http_timeout_s} s (firewall? wrong local_host?).") from exc
        except DeviceError:
            self._stop_quietly()
            raise
        finally:
            server.close()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._ser = _SocketPort(conn, timeout_s=0.02)
        self._last_packet_s = time.monotonic()
        self.stats["opens"] += 1

    def _stop_quietly(self) -> None:
        try:
            self._http("GET", "/stream/stop")
        except DeviceError:
            pass

    def close(self) -> None:
        """Stop the stream (``GET /stream/stop``) and close the connection. Idempotent."""
        port, self._ser = self._ser, None
        if port is None:
            return
        self._stop_quietly()
        port.close()

    def __repr__(self) -> str:
        return f"OpenBCIWifi({self.shield!r}, stream_id={self.info.stream_id!r}, daisy={self.daisy})"


def _route_address(shield: str) -> str:
    """Local IP of the interface that routes to ``shield`` (no packet is sent)."""
    host = shield.rsplit(":", 1)[0] if shield.count(":") == 1 else shield
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect((host, 80))
        return probe.getsockname()[0]
    except OSError:
        return "127.0.0.1"
    finally:
        probe.close()
