"""Unit tests are fast, isolated and deterministic: they must never start Ray."""

import pytest


@pytest.fixture(autouse=True)
def _disallow_ray_init(monkeypatch):
    import ray

    def refuse(*args, **kwargs):
        raise RuntimeError("Unit tests must not start Ray; move the test to tests/integration/.")

    monkeypatch.setattr(ray, "init", refuse)
