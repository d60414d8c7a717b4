"""Run a plan in the current process, without Ray (tests, notebooks, offline replay).

The same :class:`GroupLoop` and :class:`PipelineController` as the Ray path,
wired with direct calls: what passes here runs the same way in actors.
"""

from __future__ import annotations

import time

from neuraflow.graph.optimize import optimize as optimize_plan
from neuraflow.graph.plan import LogicalPlan
from neuraflow.runtime.controller import PipelineController
from neuraflow.runtime.loop import GroupLoop, LoopOptions, Mode
from neuraflow.runtime.placement import partition_devices
from neuraflow.runtime.slot import SlotOptions


def run_local(
    plan: LogicalPlan,
    *,
    duration_s: float | None = None,
    loop_options: LoopOptions | None = None,
    slot_options: SlotOptions | None = None,
    optimize: bool = True,
) -> PipelineController:
    """Run ``plan`` in-process until its sources end or ``duration_s`` passes.

    ``optimize`` applies the same plan rewrites as the engine (``runtime.optimize``).
    Returns the controller (query its sinks with ``call_sink``, ``metrics()``...).
    Sinks are flushed and closed before returning.
    """
    if optimize:
        plan = optimize_plan(plan)
    loop_options = loop_options or LoopOptions(mode=Mode.BATCH, tick_s=0.0, latency_budget_s=float("inf"))
    hosted = [item for group in partition_devices(plan, n_workers=1) for item in group]
    controller = PipelineController(plan, ["local"], loop_options.mode.value)
    loop = GroupLoop("local", plan, hosted, slot_options or SlotOptions(), loop_options)
    deadline = None if duration_s is None else time.monotonic() + duration_s
    try:
        loop.run(controller.deliver, lambda: True, lambda: deadline is not None and time.monotonic() >= deadline)
    finally:
        loop.stop()
        controller.stop()
    return controller
