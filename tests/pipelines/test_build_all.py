"""Every pipeline under pipelines/ builds and validates with configs/test.yaml (no Ray)."""

from __future__ import annotations

from pathlib import Path

import pytest

from neuraflow.config import load_settings
from neuraflow.graph.loader import available_pipelines, load_plan
from neuraflow.graph.plan import LogicalPlan

REPO = Path(__file__).resolve().parents[2]
PIPELINES = available_pipelines(REPO / "pipelines")


def _is_pipeline(path: Path) -> bool:
    """Pipeline files define build(settings); scripts (training, tools) do not."""
    return "def build(" in path.read_text()


@pytest.mark.parametrize("name", [n for n, p in PIPELINES.items() if _is_pipeline(p)])
def test_pipeline_builds(name: str) -> None:
    settings = load_settings(REPO / "configs" / "test.yaml")
    plan = load_plan(PIPELINES[name], settings)
    assert isinstance(plan, LogicalPlan)
    assert plan.sources() and (plan.sinks() or plan.exposures())


def test_there_is_a_demo() -> None:
    assert "demo" in PIPELINES
