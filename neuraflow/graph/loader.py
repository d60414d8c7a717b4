"""Load a user pipeline file: a Python module under ``pipelines/`` with ``build(settings) -> Pipeline``."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from neuraflow.devices.base import Device
from neuraflow.errors import PipelineDefinitionError
from neuraflow.graph.pipeline import SOURCE_OVERRIDE, Pipeline
from neuraflow.graph.plan import LogicalPlan

if TYPE_CHECKING:
    from neuraflow.config import NeuraflowSettings


def load_plan(
    path: str | Path, settings: NeuraflowSettings, *, replace_first_source: Sequence[Device] | None = None
) -> LogicalPlan:
    """Import ``path``, call its ``build(settings)`` and return the validated plan.

    ``replace_first_source`` (used by ``neuraflow replay``) substitutes the devices
    of the pipeline's first source while ``build`` runs, so everything sized from
    the source (channel counts, model widths) follows the replayed file.

    Raises
    ------
    PipelineDefinitionError
        The file is missing, has no ``build`` function, or ``build`` does not return a Pipeline.
    """
    path = Path(path)
    if not path.is_file():
        raise PipelineDefinitionError(f"pipeline file {str(path)!r} does not exist.")
    module_name = f"neuraflow_user_pipeline_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PipelineDefinitionError(f"pipeline file {str(path)!r} cannot be imported as a Python module.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        # Not importable by Ray workers: leaving it out of sys.modules makes cloudpickle
        # ship the pipeline's own functions by value instead of by module reference.
        sys.modules.pop(module_name, None)
    build = getattr(module, "build", None)
    if not callable(build):
        raise PipelineDefinitionError(f"pipeline file {str(path)!r} must define build(settings) -> Pipeline.")
    token = SOURCE_OVERRIDE.set(tuple(replace_first_source) if replace_first_source is not None else None)
    try:
        pipeline = build(settings)
    finally:
        SOURCE_OVERRIDE.reset(token)
    if not isinstance(pipeline, Pipeline):
        raise PipelineDefinitionError(
            f"pipeline file {str(path)!r}: build() returned {type(pipeline).__name__}, expected neuraflow.Pipeline."
        )
    return pipeline.build()


def available_pipelines(directory: str | Path) -> dict[str, Path]:
    """``{name: path}`` of the pipeline files in ``directory`` (files not starting with ``_``)."""
    directory = Path(directory)
    if not directory.is_dir():
        return {}
    return {p.stem: p for p in sorted(directory.glob("*.py")) if not p.name.startswith("_")}
