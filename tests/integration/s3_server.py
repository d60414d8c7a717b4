"""A real S3 endpoint for tests: ``moto_server`` in a subprocess, behind a TCP proxy that can be cut.

moto keeps its objects in memory, so killing it loses the bucket. An outage is
simulated instead by stopping the proxy (listener and open connections closed:
clients get "connection refused") while moto keeps the data, then starting the
proxy again on the same port.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

KEY = SECRET = "testing"
REGION = "us-east-1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


class _Proxy:
    """Forward 127.0.0.1:``port`` to 127.0.0.1:``target`` until :meth:`stop`."""

    def __init__(self, port: int, target: int) -> None:
        self.port, self.target = port, target
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # stopped
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class S3Server:
    """A moto S3 server with one bucket, reached through a proxy (see the module doc)."""

    def __init__(self, bucket: str = "neuraflow") -> None:
        self.bucket = bucket
        self._moto_port = _free_port()
        self.port = _free_port()
        moto = Path(sys.executable).with_name("moto_server")
        self._process = subprocess.Popen(
            [str(moto), "-H", "127.0.0.1", "-p", str(self._moto_port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait_port(self._moto_port)
        self._proxy = _Proxy(self.port, self._moto_port)
        self._proxy.start()
        import boto3

        boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=KEY, aws_secret_access_key=SECRET,
                     region_name=REGION).create_bucket(Bucket=bucket)  # fmt: skip

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def catalog_properties(self) -> dict[str, str]:
        """pyiceberg properties for an ``s3://`` warehouse on this server."""
        return {"s3.endpoint": self.endpoint, "s3.access-key-id": KEY, "s3.secret-access-key": SECRET,
                "s3.region": REGION}  # fmt: skip

    def cut(self) -> None:
        """Make the endpoint unreachable (moto keeps its data)."""
        self._proxy.stop()

    def restore(self) -> None:
        """Make it reachable again, on the same port."""
        self._proxy.start()

    def close(self) -> None:
        self._proxy.stop()
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


@pytest.fixture
def s3_server() -> Iterator[S3Server]:
    """A fresh moto S3 server (bucket ``neuraflow``), killed at teardown."""
    server = S3Server()
    try:
        yield server
    finally:
        server.close()
