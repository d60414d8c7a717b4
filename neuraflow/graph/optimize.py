"""Logical-plan rewrites that keep every output the same and cost less (no Ray here).

Like Ray Data's ``operator_fusion`` rules, a rewrite matches a pattern of
steps and replaces it with an equivalent op:

- :func:`fuse_window_band_power`: ``sliding_window -> log_band_power`` (a full
  Hann-window FFT on every hop) becomes one ``sliding_band_power`` step (a
  sliding DFT of only the bins the bands use), 4-6x cheaper per chunk, equal
  within float32 tolerance, with the same output stream ids, channels, times
  and seqs. The window step's own stream disappears, so the rule applies only
  when nothing else consumes it.
"""

from __future__ import annotations

from neuraflow.graph.plan import LogicalPlan, StepNode, build_plan


def fuse_window_band_power(plan: LogicalPlan) -> LogicalPlan:
    """Replace each ``sliding_window -> log_band_power`` pair whose window feeds nothing else."""
    from neuraflow.ops.spectral import sliding_band_power

    nodes = dict(plan.nodes)
    changed = False
    for window in [n for n in plan.steps() if n.op.kind == "sliding_window"]:
        consumers = plan.children(window.name)
        if len(consumers) != 1:
            continue
        power = nodes[consumers[0]]
        if not isinstance(power, StepNode) or power.op.kind != "log_band_power":
            continue
        fused = sliding_band_power(
            dict(power.op.params["bands"]),
            length_s=window.op.params["length_s"],
            step_s=window.op.params["step_s"],
            relative=power.op.params["relative"],
        )
        del nodes[window.name]
        nodes[power.name] = StepNode(power.name, fused, window.input)
        changed = True
    return build_plan(plan.name, list(nodes.values())) if changed else plan


def optimize(plan: LogicalPlan) -> LogicalPlan:
    """Apply every rewrite rule of this module."""
    return fuse_window_band_power(plan)
