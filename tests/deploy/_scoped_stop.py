"""Stop only the processes tagged with MARKER: a `ray stop` limited to one test cluster.

`ray stop` kills every Ray process of the host, other people's included. The deploy test's
sshd runs every remote command through a guard (ForceCommand) that exports
NF_DEPLOY_MARKER=MARKER and turns any command containing `ray stop` (e.g. the one `ray down`
sends to the head) into this script. A process is ours when MARKER is in its command
line or NF_DEPLOY_MARKER=MARKER is in its environment. This process and its ancestors
(the guard shell, the ssh session) are spared. Linux only (reads /proc; no psutil).

With --env-only (what the guard runs) only processes carrying the environment variable are
stopped, i.e. those started through the sshd: the client side (ssh ControlMaster, the
proxy; MARKER is in their command line) carries the very connection this runs over.

usage: _scoped_stop.py [--env-only] MARKER [GRACE_SECONDS]
"""

from __future__ import annotations

import os
import signal
import sys
import time

ENV_KEY = "NF_DEPLOY_MARKER"


def _read(pid: int, name: str) -> bytes:
    with open(f"/proc/{pid}/{name}", "rb") as f:
        return f.read()


def _stat(pid: int) -> tuple[str, int]:
    """(state, ppid) of a process."""
    stat = _read(pid, "stat").decode()
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[0], int(fields[1])


def _ancestors(pid: int) -> set[int]:
    found = set()
    while pid > 1:
        found.add(pid)
        try:
            pid = _stat(pid)[1]
        except (OSError, ValueError):
            break
    return found


def alive(pid: int) -> bool:
    try:
        return _stat(pid)[0] != "Z"
    except (OSError, ValueError):
        return False


def tagged_pids(marker: str, env_only: bool = False) -> list[int]:
    spare = _ancestors(os.getpid())
    needle_env = f"{ENV_KEY}={marker}".encode()
    needle = marker.encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in spare:
            continue
        pid = int(entry)
        try:
            if (not env_only and needle in _read(pid, "cmdline")) or needle_env in _read(pid, "environ").split(b"\0"):
                if alive(pid):
                    found.append(pid)
        except OSError:
            continue
    return found


def stop(marker: str, grace: float = 10.0, env_only: bool = False) -> list[int]:
    """SIGTERM the tagged processes, SIGKILL what is left after `grace` s; return their PIDs."""
    pids = tagged_pids(marker, env_only)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    for pid in pids:
        if alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    return pids


if __name__ == "__main__":
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # finish even if the ssh session drops
    args = sys.argv[1:]
    env_only = "--env-only" in args
    args = [a for a in args if a != "--env-only"]
    marker = args[0]
    if len(marker) < 12:  # never a broad pattern
        sys.exit("marker too short")
    pids = stop(marker, float(args[1]) if len(args) > 1 else 10.0, env_only)
    print(f"scoped stop ({marker}): {len(pids)} process(es) stopped: {pids}")
