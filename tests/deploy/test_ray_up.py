"""A real `ray up` / `ray down` of configs/cluster.local.yaml against an sshd on 127.0.0.1.

The head "node" is this machine, reached over SSH (see conftest.py), so the test copy of
the config does not reinstall anything (setup_commands: []) and starts the venv's own
`ray` (absolute path: the remote login shell resets PATH) with a private GCS port,
--temp-dir in the sandbox, a free client-server port outside 10002-19999 and one CPU.
`neuraflow serve` is left out of the copy: it needs a whole Serve app and its config.

What `ray down` sends to the head is `ray stop`, which would kill every Ray process of the
host; the sshd's guard turns it into a stop of this test's processes only.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PYTHON = Path(sys.executable)
VENV_BIN = PYTHON.parent

pytestmark = pytest.mark.deploy

LOCAL_CONFIG = REPO / "configs" / "cluster.local.yaml"
RAY = VENV_BIN / "ray"
SOCKET_PATH_MAX = 107  # sun_path is 108 bytes including the NUL
# <temp-dir>/session_2026-11-26_06-19-12_397123_12345/sockets/plasma_store
RAY_SOCKET_SUFFIX = len("/session_2026-11-26_06-19-12_397123_4194304/sockets/plasma_store")


def _test_config(sshd, gcs_port: int, client_port: int, agent_port: int, metrics_port: int) -> dict:
    config = yaml.safe_load(LOCAL_CONFIG.read_text())
    config["cluster_name"] = sshd.marker  # unique: Ray keys state files and ssh sockets by it
    config["auth"] = {
        "ssh_user": sshd.user,
        "ssh_private_key": str(sshd.private_key),
        "ssh_proxy_command": sshd.proxy_command,  # Ray has no ssh_port option
    }
    # The repo itself, mounted like in production (lands in the sandbox's ~/neuraflow).
    config["file_mounts"] = {"~/neuraflow": str(REPO)}
    config["setup_commands"] = []  # same machine: everything is installed already
    config["head_setup_commands"] = []
    config["worker_setup_commands"] = []
    config["head_start_ray_commands"] = [
        shlex.join(
            [
                str(RAY), "start", "--head",
                f"--port={gcs_port}",
                f"--temp-dir={sshd.ray_temp_dir}",
                f"--ray-client-server-port={client_port}",
                f"--dashboard-agent-listen-port={agent_port}",
                f"--metrics-export-port={metrics_port}",
                "--num-cpus=1",
                "--object-store-memory=100000000",
                "--include-dashboard=false",
                "--disable-usage-stats",
            ]
        )
        # `~` must stay unquoted for the remote shell to expand it.
        + " --autoscaling-config=~/ray_bootstrap_config.yaml"
    ]  # fmt: skip
    config["worker_start_ray_commands"] = []
    return config


def _run(argv: list[str], env: dict, log: Path, timeout: float) -> subprocess.CompletedProcess:
    started = time.monotonic()
    result = subprocess.run(argv, env=env, cwd=str(REPO), capture_output=True, text=True, timeout=timeout)
    with log.open("a") as f:
        f.write(f"$ {shlex.join(argv)}  # rc={result.returncode} in {time.monotonic() - started:.1f}s\n")
        f.write(result.stdout + result.stderr + "\n")
    return result


DRIVER = textwrap.dedent(
    """
    import json, sys, ray
    ray.init(address=sys.argv[1], log_to_driver=False)
    nodes = [n for n in ray.nodes() if n["Alive"]]

    @ray.remote
    def where():
        return ray.get_runtime_context().get_node_id()

    out = {
        "nodes": len(nodes),
        "cpus": ray.cluster_resources().get("CPU"),
        "task_node": ray.get(where.remote(), timeout=60),
        "node_ids": [n["NodeID"] for n in nodes],
        "temp_dir": ray._private.worker._global_node.get_temp_dir_path(),
    }
    ray.shutdown()
    print("RESULT " + json.dumps(out))
    """
)


@pytest.mark.timeout(300)
def test_ray_up_then_down_on_local_sshd(local_sshd, tmp_path: Path) -> None:
    sshd = local_sshd
    started = time.monotonic()
    assert len(str(sshd.ray_temp_dir)) + RAY_SOCKET_SUFFIX <= SOCKET_PATH_MAX, sshd.ray_temp_dir

    gcs_port, client_port, agent_port, metrics_port = sshd.free_ports(4)
    assert 6379 not in (gcs_port, client_port)
    assert not 10002 <= client_port <= 19999, "client server port inside Ray's worker port range"
    config = _test_config(sshd, gcs_port, client_port, agent_port, metrics_port)
    config_file = tmp_path / "cluster.local.test.yaml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    assert not any("ray stop" in c for c in config["head_start_ray_commands"])

    # Sanity: the sshd, the proxy and the guard work.
    probe = sshd.ssh("echo $HOME $NF_DEPLOY_MARKER")
    assert probe.returncode == 0, probe.stderr + sshd.log.read_text()
    assert probe.stdout.split() == [str(sshd.home), sshd.marker]

    env = dict(os.environ)
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}",
        RAY_AUTH_MODE="disabled",
        # The local provider keeps its cluster state in $RAY_TMPDIR/ray/cluster-<name>.*
        RAY_TMPDIR=str(sshd.root / "client"),
        # ... and its config cache (`ray down` always writes one) in tempfile.gettempdir().
        TMPDIR=str(sshd.root / "client"),
        PYTHONUNBUFFERED="1",
    )
    log = tmp_path / "ray_cli.log"
    raylets_before = sshd.process_count("raylet")

    up = _run([str(RAY), "up", "-y", str(config_file), "--no-config-cache"], env, log, timeout=180)
    assert up.returncode == 0, f"ray up failed:\n{log.read_text()}\n--- sshd ---\n{sshd.log.read_text()}"
    up_s = time.monotonic() - started

    # The launcher did its job on the "head": bootstrap config, key and the file mount.
    assert (sshd.home / "ray_bootstrap_config.yaml").is_file()
    assert (sshd.home / "ray_bootstrap_key.pem").is_file()
    assert (sshd.home / "neuraflow" / "pyproject.toml").is_file()
    assert (sshd.home / "neuraflow" / "neuraflow" / "__init__.py").is_file()
    assert not (sshd.home / "neuraflow" / ".venv").exists(), "rsync_exclude/rsync_filter ignored"
    assert not (sshd.home / "neuraflow" / ".git").exists()
    # Our own head processes (other Ray instances on the host come and go meanwhile, so the
    # host-wide raylet count is only reported, not asserted).
    head_names = set()
    for pid in sshd.remote_pids():
        try:
            head_names.add(Path(f"/proc/{pid}/comm").read_text().strip())
        except OSError:  # exited meanwhile
            pass
    assert {"raylet", "gcs_server"} <= head_names, head_names

    # The head is up: one alive node, with the 1 CPU it was started with, running tasks.
    driver = _run([str(PYTHON), "-c", DRIVER, f"127.0.0.1:{gcs_port}"], env, log, timeout=120)
    assert driver.returncode == 0, log.read_text()
    result = json.loads(driver.stdout.split("RESULT ", 1)[1])
    assert result["nodes"] == 1, result
    assert result["cpus"] == 1.0, result
    assert result["task_node"] in result["node_ids"]
    assert result["temp_dir"] == str(sshd.ray_temp_dir)

    down = _run([str(RAY), "down", "-y", str(config_file)], env, log, timeout=120)
    assert down.returncode == 0, log.read_text()
    deadline = time.monotonic() + 30
    while sshd.remote_pids() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not sshd.remote_pids(), f"head processes left after ray down:\n{log.read_text()}"
    assert "ray stop' replaced" in down.stdout + down.stderr, "ray down's `ray stop` did not reach the guard"
    assert "scoped stop (" in down.stdout + down.stderr
    assert "Exception occurred when stopping" not in down.stdout + down.stderr, log.read_text()

    state = json.loads((sshd.root / "client" / "ray" / f"cluster-{sshd.marker}.state").read_text())
    assert state["127.0.0.1"]["state"] == "terminated", state
    print(
        f"\nray up: {up_s:.1f}s, up+check+down: {time.monotonic() - started:.1f}s; "
        f"raylets on host before/after: {raylets_before}/{sshd.process_count('raylet')}",
        file=sys.stderr,
    )
