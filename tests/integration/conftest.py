"""Integration fixtures: one local Ray per test session (started lazily), isolated warehouses, tier stores."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from neuraflow.config import NeuraflowSettings, load_settings

from .redis_server import delete_prefix

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
REPO = Path(__file__).resolve().parents[2]
REDIS_URL = "redis://127.0.0.1:6379/0"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"


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


@pytest.fixture
def tiers(tmp_path: Path):
    """(hot, warm, cold) tiers in fresh namespaces (Redis prefix, PostgreSQL schema, Iceberg under tmp_path), removed afterwards."""
    import psycopg
    import redis

    from neuraflow.sinks import Iceberg, RedisStream, Timescale
    from neuraflow.storage import IcebergTier, RedisTier, TimescaleTier

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1.0).ping()
        admin = psycopg.connect(PG_DSN, autocommit=True)
    except (redis.ConnectionError, psycopg.OperationalError) as exc:
        pytest.fail(f"Redis or PostgreSQL is not running ({exc}); see ../shared/INFRA.md for the start commands.")
    prefix = f"nftest:{uuid.uuid4().hex[:12]}:"
    schema = f"nf_test_{uuid.uuid4().hex[:10]}"
    hot = RedisTier(RedisStream(REDIS_URL, key_prefix=prefix, window_s=30 * 86_400.0))
    warm = TimescaleTier(Timescale(PG_URL, schema=schema, table="samples", flush_every_s=1e9))
    cold = IcebergTier(Iceberg("nf.samples", catalog_uri=f"sqlite:///{tmp_path}/catalog.db",
                               warehouse=f"file://{tmp_path}/warehouse", flush_every_s=1e9))  # fmt: skip
    yield hot, warm, cold
    delete_prefix(REDIS_URL, prefix)
    hot.sink.close()
    warm.sink.close()
    admin.execute(f'drop schema if exists "{schema}" cascade')
    admin.close()
