"""cluster.yaml and configs/cluster.local.yaml pass Ray's own cluster-launcher schema.

Offline: Ray's `prepare_config` (merges the provider's defaults.yaml, as `ray up` does)
then `validate_config` (ray/autoscaler/ray-schema.json). No cloud API is called.
"""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path

import pytest
import yaml

from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parents[2]
AWS = REPO / "cluster.yaml"
LOCAL = REPO / "configs" / "cluster.local.yaml"
FILES = {"aws": AWS, "local": LOCAL}

START_KEYS = ("head_start_ray_commands", "worker_start_ray_commands")
ALL_COMMAND_KEYS = (
    "initialization_commands",
    "setup_commands",
    "head_setup_commands",
    "worker_setup_commands",
    *START_KEYS,
)


def _load(path: Path) -> dict:
    with path.open() as f:
        return yaml.safe_load(f)


def _prepared(path: Path) -> dict:
    config = prepare_config(_load(path))
    validate_config(config)
    return config


def _ray_start_ports(command: str) -> list[int]:
    """The --port values of every `ray start` in one shell command line."""
    ports = []
    for m in re.finditer(r"--port[= ](\S+)", command):
        ports.append(int(m.group(1)))
    return ports


@pytest.mark.parametrize("name", sorted(FILES))
def test_valid_for_ray_schema(name: str) -> None:
    config = _prepared(FILES[name])
    assert config["provider"]["type"] == name
    assert config["head_node_type"] in config["available_node_types"]


@pytest.mark.parametrize("name", sorted(FILES))
def test_no_ray_stop_in_any_command(name: str) -> None:
    # Checked on the prepared config: a command list left out of the file would be filled
    # from Ray's defaults.yaml, whose start commands begin with `ray stop`.
    config = _prepared(FILES[name])
    for key in ALL_COMMAND_KEYS:
        for command in config.get(key, []):
            assert not re.search(r"\bray\s+stop\b", command), f"{name}: {key}: {command!r}"


@pytest.mark.parametrize("name", sorted(FILES))
def test_gcs_port_is_not_redis_port(name: str) -> None:
    config = _prepared(FILES[name])
    head = " ; ".join(config["head_start_ray_commands"])
    head_ports = _ray_start_ports(head)
    assert "ray start --head" in head
    assert head_ports and all(p != 6379 for p in head_ports), head
    (gcs_port,) = set(head_ports)
    for command in config["worker_start_ray_commands"]:
        if "ray start" in command:
            assert f"--address=$RAY_HEAD_IP:{gcs_port}" in command, command
            assert ":6379" not in command, command
    for key in START_KEYS:
        for command in config[key]:
            assert "6379" not in command, f"{name}: {key}: {command!r}"


@pytest.mark.parametrize("name", sorted(FILES))
def test_client_server_port_outside_worker_range(name: str) -> None:
    config = _prepared(FILES[name])
    for command in config["head_start_ray_commands"]:
        m = re.search(r"--ray-client-server-port[= ](\d+)", command)
        port = int(m.group(1)) if m else 10001  # Ray's default
        assert not 10002 <= port <= 19999, command


@pytest.mark.parametrize("name", sorted(FILES))
def test_head_starts_neuraflow_service(name: str) -> None:
    config = _prepared(FILES[name])
    head = config["head_start_ray_commands"]
    ray_start = next(i for i, c in enumerate(head) if "ray start --head" in c)
    serve = next(i for i, c in enumerate(head) if c.lstrip().startswith("neuraflow serve"))
    assert serve > ray_start, "the service needs the running cluster"
    argv = shlex.split(head[serve])
    assert "--detach" in argv
    assert argv[argv.index("--config") + 1] == "~/neuraflow/configs/production.yaml"
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head[ray_start]


@pytest.mark.parametrize("name", sorted(FILES))
def test_repo_is_mounted_and_installed(name: str) -> None:
    config = _prepared(FILES[name])
    assert config["file_mounts"] == {"~/neuraflow": "."}
    setup = " ; ".join(config["setup_commands"])
    assert re.search(r"install .*-e \"\$HOME/neuraflow\[all\]\"", setup), setup


def test_aws_node_types() -> None:
    raw = _load(AWS)
    config = _prepared(AWS)
    types = config["available_node_types"]
    assert config["head_node_type"] == "ray.head.default"
    assert raw["provider"]["region"]
    cpu, gpu = types["ray.worker.cpu"], types["ray.worker.gpu"]
    assert cpu["min_workers"] == 0 and cpu["max_workers"] >= 1
    assert gpu["min_workers"] == 0 and gpu["max_workers"] >= 1
    assert gpu["node_config"]["InstanceType"].startswith(("g", "p"))
    assert types["ray.head.default"]["max_workers"] == 0


def test_local_has_no_node_types_and_is_overridable() -> None:
    raw = _load(LOCAL)
    assert "available_node_types" not in raw  # the local provider aborts on it
    assert raw["provider"] == {"type": "local", "head_ip": "127.0.0.1", "worker_ips": []}
    assert raw["auth"]["ssh_user"] == "root"
    # What tests/deploy/test_ray_up.py does: patch auth/commands/ports, still valid.
    patched = copy.deepcopy(raw)
    patched["auth"]["ssh_private_key"] = "/tmp/some/key"
    patched["auth"]["ssh_proxy_command"] = "python3 proxy.py 127.0.0.1 2222"
    patched["setup_commands"] = []
    patched["file_mounts"] = {}
    patched["head_start_ray_commands"] = ["ray start --head --port=41234"]
    validate_config(prepare_config(patched))
    # Adding worker IPs lets every listed machine join (max_workers defaults to their number).
    patched["provider"]["worker_ips"] = ["10.0.0.2", "10.0.0.3"]
    assert prepare_config(patched)["max_workers"] == 2


def test_schema_rejects_a_broken_config() -> None:
    """The validation above is not vacuous."""
    import jsonschema

    bad = _load(AWS)
    bad["auth"]["ssh_port"] = 2222  # not a Ray auth option
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(bad))
