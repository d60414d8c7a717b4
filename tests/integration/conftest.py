"""Integration fixtures: one local Ray per test session (started lazily), isolated warehouses."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from neuraflow.config import NeuraflowSettings, load_settings

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def ray_local():
    """A local Ray shared by every test of the session (re-started after a cluster test)."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, namespace="neuraflow-test", include_dashboard=False, log_to_driver=False)
    yield ray


def make_settings(tmp_path: Path, **runtime: object) -> NeuraflowSettings:
    """Test settings with the warehouse under ``tmp_path`` and small demo sizes."""
    settings = load_settings(REPO / "configs" / "test.yaml")
    storage = settings.storage.model_copy(update={
        "warehouse": str(tmp_path / "warehouse"),
        "catalog_uri": f"sqlite:///{tmp_path / 'catalog.db'}",
        "flush_every_s": 1.0,
    })
    update = {"storage": storage, "ray": settings.ray.model_copy(update={"namespace": "neuraflow-test"})}
    if runtime:
        update["runtime"] = settings.runtime.model_copy(update=runtime)
    return settings.model_copy(update=update)


@pytest.fixture
def settings(tmp_path: Path) -> NeuraflowSettings:
    return make_settings(tmp_path)


def wait_for(predicate: Callable[[], object], timeout_s: float, what: str) -> None:
    """Poll ``predicate`` every 0.2 s until it is true; AssertionError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
