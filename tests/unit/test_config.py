"""neuraflow.config: YAML + env settings, and readable ConfigErrors."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from neuraflow.config import NeuraflowSettings, load_settings
from neuraflow.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    """The developer's own NEURAFLOW_* variables must not leak into these tests."""
    for name in list(os.environ):
        if name.startswith("NEURAFLOW_") and name != "NEURAFLOW_SHARED_DATA":
            monkeypatch.delenv(name)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_defaults_match_default_yaml():
    settings = load_settings()
    assert settings == load_settings(CONFIGS / "default.yaml")
    assert settings.ray.address is None
    assert settings.runtime.mode == "realtime"
    assert settings.runtime.effective_tick_s == 0.005
    assert settings.runtime.effective_latency_budget_s == 0.05
    assert settings.storage.warehouse == "var/warehouse"
    assert (settings.serve.host, settings.serve.port) == ("127.0.0.1", 8000)


# cluster.*.yaml are Ray cluster-launcher files, not neuraflow settings
@pytest.mark.parametrize(
    "path", sorted(p for p in CONFIGS.glob("*.yaml") if not p.name.startswith("cluster.")), ids=lambda p: p.name
)
def test_every_shipped_config_loads(path):
    assert isinstance(load_settings(path), NeuraflowSettings)


def test_production_names_redis_postgres_s3():
    storage = load_settings(CONFIGS / "production.yaml").storage
    assert storage.redis_url == "redis://127.0.0.1:6379/0"
    assert storage.catalog_uri == storage.postgres_url
    assert storage.postgres_url.startswith("postgresql+psycopg://")
    assert storage.warehouse.startswith("s3://")


@pytest.mark.parametrize(
    ("mode", "tick_s", "budget_s"),
    [("realtime", 0.005, 0.05), ("near_real_time", 0.1, 0.5), ("batch", 0.0, math.inf)],
)
def test_mode_defaults(tmp_path, mode, tick_s, budget_s):
    runtime = load_settings(_write(tmp_path, f"runtime:\n  mode: {mode}\n")).runtime
    assert runtime.effective_tick_s == tick_s
    assert runtime.effective_latency_budget_s == budget_s


def test_explicit_tick_beats_mode_default(tmp_path):
    runtime = load_settings(_write(tmp_path, "runtime:\n  mode: batch\n  tick_s: 0.5\n")).runtime
    assert runtime.effective_tick_s == 0.5


def test_env_beats_yaml(monkeypatch):
    monkeypatch.setenv("NEURAFLOW_RUNTIME__MODE", "batch")
    monkeypatch.setenv("NEURAFLOW_SERVE__PORT", "9001")
    monkeypatch.setenv("NEURAFLOW_RAY__ADDRESS", "null")
    settings = load_settings(CONFIGS / "production.yaml")
    assert settings.runtime.mode == "batch"
    assert settings.serve.port == 9001
    assert settings.ray.address is None
    assert settings.storage.redis_url == "redis://127.0.0.1:6379/0"  # rest of the file kept


def test_unknown_key_names_file_key_and_suggestion(tmp_path):
    path = _write(tmp_path, "runtime:\n  mdoe: batch\n")
    with pytest.raises(ConfigError, match=r"runtime\.mdoe.*Did you mean 'mode'") as info:
        load_settings(path)
    assert str(path) in str(info.value)


def test_unknown_section_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match=r"storge: unknown key\. Did you mean 'storage'"):
        load_settings(_write(tmp_path, "storge:\n  warehouse: x\n"))


def test_wrong_type_names_key(tmp_path):
    path = _write(tmp_path, "runtime:\n  ring_capacity: lots\n")
    with pytest.raises(ConfigError, match=r"runtime\.ring_capacity.*'lots'") as info:
        load_settings(path)
    assert str(path) in str(info.value)


def test_bad_literal_names_key(tmp_path):
    with pytest.raises(ConfigError, match=r"runtime\.mode.*'realtiem'"):
        load_settings(_write(tmp_path, "runtime:\n  mode: realtiem\n"))


@pytest.mark.parametrize("port", [0, 65536, -1])
def test_bad_port_rejected(tmp_path, port):
    with pytest.raises(ConfigError, match=r"serve\.port"):
        load_settings(_write(tmp_path, f"serve:\n  port: {port}\n"))


@pytest.mark.parametrize(
    "text",
    [
        "runtime:\n  ring_capacity: 0\n",
        "runtime:\n  reconnect_initial_s: 2.0\n  reconnect_max_s: 1.0\n",
        "storage:\n  flush_every_s: .nan\n",
        "demo:\n  sfreq: -250\n",
    ],
)
def test_bad_numbers_rejected(tmp_path, text):
    with pytest.raises(ConfigError):
        load_settings(_write(tmp_path, text))


def test_bad_env_value_names_variable(monkeypatch):
    monkeypatch.setenv("NEURAFLOW_SERVE__PORT", "99999")
    with pytest.raises(ConfigError, match=r"NEURAFLOW_SERVE__PORT: serve\.port"):
        load_settings(CONFIGS / "default.yaml")


def test_missing_file_names_path(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="not found") as info:
        load_settings(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("text", ["runtime: [unclosed\n", "- a\n- b\n"])
def test_bad_yaml_names_file(tmp_path, text):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(path) in str(info.value)


def test_settings_are_frozen():
    settings = load_settings()
    with pytest.raises(Exception):  # pydantic ValidationError: frozen instance
        settings.runtime.mode = "batch"  # type: ignore[misc]


def test_resolve_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.resolve_path("var/warehouse") == tmp_path / "var" / "warehouse"
    assert settings.resolve_path("/abs/dir") == Path("/abs/dir")
