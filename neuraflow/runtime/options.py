"""Translate :class:`~neuraflow.config.NeuraflowSettings` into runtime option objects."""

from __future__ import annotations

from neuraflow.config import NeuraflowSettings
from neuraflow.runtime.loop import LoopOptions, Mode
from neuraflow.runtime.ring import Backpressure
from neuraflow.runtime.slot import SlotOptions


def slot_options(settings: NeuraflowSettings) -> SlotOptions:
    rt = settings.runtime
    return SlotOptions(
        ring_capacity=rt.ring_capacity,
        backpressure=Backpressure(rt.backpressure),
        reconnect_initial_s=rt.reconnect_initial_s,
        reconnect_max_s=rt.reconnect_max_s,
    )


def loop_options(settings: NeuraflowSettings, mode: str | None = None) -> LoopOptions:
    rt = settings.runtime
    if mode is not None and mode != rt.mode:
        rt = rt.model_copy(update={"mode": mode})
    return LoopOptions(
        mode=Mode(rt.mode),
        tick_s=rt.effective_tick_s,
        latency_budget_s=rt.effective_latency_budget_s,
        checkpoint_every_s=rt.checkpoint_every_s,
    )
