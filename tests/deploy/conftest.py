"""Fixtures for deploy tests: a private sshd on 127.0.0.1 acting as a cluster "host".

Everything lives under one short sandbox directory /tmp/nfdeploy-<hex> (short because Ray
puts Unix sockets under its --temp-dir and socket paths are limited to ~107 bytes); its
basename is the MARKER that tags every process the test starts:

* the sshd: own sshd_config (ListenAddress 127.0.0.1, free port), own host key,
  own authorized_keys for a generated client key, started as /usr/sbin/sshd -D -f ...;
* every remote command goes through a ForceCommand guard that sets HOME to the sandbox
  (so `~/ray_bootstrap_config.yaml` & co. land there, not in the real home), exports
  NF_DEPLOY_MARKER=MARKER, and replaces any command containing `ray stop` (which would
  kill every Ray on the host) by tests/deploy/_scoped_stop.py MARKER;
* clients reach the sshd through `auth.ssh_proxy_command` (Ray has no ssh_port option).

Teardown stops every tagged process by PID, then the sshd, then removes the sandbox,
also when the test failed.
"""

from __future__ import annotations

import getpass
import hashlib
import importlib.util
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SSH_PROXY = HERE / "_ssh_proxy.py"
SCOPED_STOP = HERE / "_scoped_stop.py"
PYTHON = Path(sys.executable)
VENV_BIN = PYTHON.parent

_spec = importlib.util.spec_from_file_location("nf_deploy_scoped_stop", SCOPED_STOP)
scoped_stop = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(scoped_stop)


def find_sshd() -> Path | None:
    for candidate in ("/usr/sbin/sshd", "/usr/local/sbin/sshd", "/sbin/sshd"):
        if os.access(candidate, os.X_OK):
            return Path(candidate)  # sshd refuses to run unless started by absolute path
    found = shutil.which("sshd")
    return Path(found).resolve() if found else None


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (from the OS ephemeral range)."""
    socks, ports = [], []
    try:
        while len(ports) < n:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def process_count(name: str) -> int:
    """Processes on the host whose executable name is `name` (e.g. raylet)."""
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if Path(f"/proc/{entry}/comm").read_text().strip() == name and scoped_stop.alive(int(entry)):
                    count += 1
            except OSError:
                pass
    return count


def remote_pids(marker: str) -> list[int]:
    """Live processes started through the test sshd (they carry NF_DEPLOY_MARKER=marker)."""
    return scoped_stop.tagged_pids(marker, env_only=True)


def _descendants(root_pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                children.setdefault(scoped_stop._stat(int(entry))[1], []).append(int(entry))
            except (OSError, ValueError):
                pass
    out, todo = [], [root_pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


@dataclass
class LocalSshd:
    root: Path  # sandbox: /tmp/nfdeploy-<hex>
    marker: str  # == root.name; tags every process of this test
    port: int
    user: str
    private_key: Path
    home: Path  # $HOME of remote commands
    ray_temp_dir: Path  # for `ray start --temp-dir` on the "head"
    log: Path
    process: subprocess.Popen

    # Helpers for tests (conftest modules cannot be imported under --import-mode=importlib).
    free_ports = staticmethod(free_ports)
    process_count = staticmethod(process_count)

    def remote_pids(self) -> list[int]:
        return remote_pids(self.marker)

    @property
    def proxy_command(self) -> str:
        return shlex.join([str(PYTHON), str(SSH_PROXY), "127.0.0.1", str(self.port), self.marker])

    def ssh(self, command: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                "ssh", "-i", str(self.private_key), "-o", "IdentitiesOnly=yes",
                "-o", "StrictHostKeyChecking=no", "-o", f"UserKnownHostsFile={os.devnull}",
                "-o", "BatchMode=yes", "-o", f"ProxyCommand={self.proxy_command}",
                f"{self.user}@127.0.0.1", command,
            ],
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
        check=True, timeout=30,
    )  # fmt: skip


def _wait_for_banner(port: int, proc: subprocess.Popen, log: Path, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                if s.recv(64).startswith(b"SSH-2.0"):
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"sshd did not answer on 127.0.0.1:{port}:\n{log.read_text()}")


def _stop_everything(sshd_proc: subprocess.Popen | None, marker: str) -> None:
    """Stop by PID: tagged processes (Ray head, proxies, ssh masters), sshd's sessions, sshd."""
    scoped_stop.stop(marker, grace=10)
    if sshd_proc is None:
        return
    if sshd_proc.poll() is None:
        sessions = _descendants(sshd_proc.pid)
        sshd_proc.terminate()
        try:
            sshd_proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            sshd_proc.kill()
            sshd_proc.wait(timeout=10)
        for pid in sessions:
            if scoped_stop.alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
    scoped_stop.stop(marker, grace=5)  # anything a dying session started meanwhile


@pytest.fixture
def local_sshd():
    if sys.platform != "linux":
        pytest.skip("deploy tests need Linux (/proc, sshd)")
    sshd = find_sshd()
    if sshd is None:
        pytest.skip("sshd not found: install it (apt-get install -y openssh-server)")
    for tool in ("ssh", "ssh-keygen", "rsync"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not found (apt-get install -y openssh-client rsync)")
    user = getpass.getuser()
    if user == "root":
        # sshd's privilege separation directory; missing when sshd was never started.
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)

    marker = f"nfdeploy-{uuid.uuid4().hex[:8]}"
    root = Path("/tmp") / marker
    root.mkdir(mode=0o700)
    home, ray_temp_dir = root / "home", root / "ray"
    home.mkdir()
    (home / ".bashrc").write_text("# empty: remote commands run `source ~/.bashrc`\n")
    log = root / "sshd.log"
    proc = None
    try:
        host_key, client_key = root / "ssh_host_ed25519_key", root / "id_ed25519"
        _keygen(host_key)
        _keygen(client_key)
        authorized = root / "authorized_keys"
        authorized.write_text(Path(f"{client_key}.pub").read_text())
        authorized.chmod(0o600)

        guard = root / "guard.sh"
        guard.write_text(
            textwrap.dedent(
                f"""\
                #!/bin/bash
                # ForceCommand of the test sshd ({marker}); see tests/deploy/conftest.py.
                export HOME={shlex.quote(str(home))}
                export RAY_TMPDIR={shlex.quote(str(root / "raytmp"))}
                export RAY_AUTH_MODE=disabled
                export {scoped_stop.ENV_KEY}={marker}
                cd "$HOME" || exit 1
                case "$SSH_ORIGINAL_COMMAND" in
                  *"ray stop"*)
                    echo "guard: 'ray stop' replaced by a stop of this test's processes" >&2
                    exec {shlex.quote(str(PYTHON))} {shlex.quote(str(SCOPED_STOP))} --env-only {marker} ;;
                  "")
                    exec /bin/bash -l ;;
                esac
                exec /bin/bash -c "$SSH_ORIGINAL_COMMAND"
                """
            )
        )
        guard.chmod(0o755)

        (port,) = free_ports(1)
        config = root / "sshd_config"
        config.write_text(
            textwrap.dedent(
                f"""\
                Port {port}
                ListenAddress 127.0.0.1
                HostKey {host_key}
                PidFile {root / "sshd.pid"}
                AuthorizedKeysFile {authorized}
                AuthenticationMethods publickey
                PubkeyAuthentication yes
                PasswordAuthentication no
                KbdInteractiveAuthentication no
                PermitRootLogin prohibit-password
                AllowUsers {user}
                UsePAM no
                StrictModes no
                PermitTTY yes
                AllowTcpForwarding yes
                MaxStartups 100:30:200
                MaxSessions 100
                ForceCommand {guard}
                Subsystem sftp internal-sftp
                LogLevel VERBOSE
                """
            )
        )
        check = subprocess.run([str(sshd), "-t", "-f", str(config)], capture_output=True, text=True)
        if check.returncode != 0:
            pytest.fail(f"sshd -t rejected the test config: {check.stderr}")
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [str(sshd), "-D", "-e", "-f", str(config)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        _wait_for_banner(port, proc, log)
        yield LocalSshd(root, marker, port, user, client_key, home, ray_temp_dir, log, proc)
    finally:
        _stop_everything(proc, marker)
        leftover = scoped_stop.tagged_pids(marker)
        shutil.rmtree(root, ignore_errors=True)
        # ssh ControlMaster sockets of `ray up` for this cluster name (see SSHCommandRunner).
        control = Path("/tmp") / f"ray_ssh_{hashlib.sha256(user.encode()).hexdigest()[:10]}"
        shutil.rmtree(control / hashlib.sha256(marker.encode()).hexdigest()[:10], ignore_errors=True)
        assert not leftover, f"processes of {marker} still running after teardown: {leftover}"
