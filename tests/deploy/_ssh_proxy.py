"""ssh ProxyCommand: relay stdin/stdout to HOST:PORT.

Ray's cluster launcher has no `ssh_port` option (auth accepts ssh_user, ssh_private_key,
ssh_proxy_command, ...), so the deploy test reaches its sshd on a free port through
`auth.ssh_proxy_command: "<python> _ssh_proxy.py 127.0.0.1 PORT MARKER"`. Pure Python:
no nc/socat needed. MARKER is unused here; it tags the process for cleanup.

usage: _ssh_proxy.py HOST PORT [MARKER]
"""

from __future__ import annotations

import os
import socket
import sys
import threading


def _pump_stdin(sock: socket.socket) -> None:
    try:
        while True:
            data = os.read(0, 65536)
            if not data:
                break
            sock.sendall(data)
    except OSError:
        pass
    finally:
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def main() -> int:
    host, port = sys.argv[1], int(sys.argv[2])
    sock = socket.create_connection((host, port), timeout=30)
    sock.settimeout(None)
    threading.Thread(target=_pump_stdin, args=(sock,), daemon=True).start()
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                break
            view = memoryview(data)
            while view:
                view = view[os.write(1, view) :]
    except OSError:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
