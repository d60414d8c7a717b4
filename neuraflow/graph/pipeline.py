"""The pipeline builder: ``Pipeline``, ``.source()``, ``.then()``, ``.to()``, ``.expose()``.

The builder only declares; :meth:`Pipeline.build` returns a validated
:class:`~neuraflow.graph.plan.LogicalPlan` and :mod:`neuraflow.runtime` runs it.

Examples
--------
>>> from neuraflow import Pipeline, devices, ops, sinks
>>> p = Pipeline("demo")
>>> eeg = p.source("eeg", devices.Synthetic(stream_id="eeg-0", n_channels=8, sfreq=250.0))
>>> clean = eeg.then("bandpass", ops.bandpass(l_freq=1.0, h_freq=40.0))
>>> _ = clean.to("hot", sinks.HotBuffer(seconds=10.0))
>>> plan = p.build()
>>> list(plan.nodes)
['eeg', 'bandpass', 'hot']
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from neuraflow.chunk import StreamInfo

from neuraflow.devices.base import Device
from neuraflow.errors import PipelineDefinitionError
from neuraflow.graph.plan import (
    ExposeNode,
    LogicalPlan,
    MergeNode,
    Node,
    SinkNode,
    SourceNode,
    StepNode,
    build_plan,
    derived_stream_id,
    is_merge_op,
)
from neuraflow.ops.base import OpSpec
from neuraflow.sinks.base import Sink

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$")

#: Devices that replace the first source of pipelines built while it is set (``neuraflow replay``).
SOURCE_OVERRIDE: ContextVar[tuple[Device, ...] | None] = ContextVar("SOURCE_OVERRIDE", default=None)


def _check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise PipelineDefinitionError(
            f"{kind} name {name!r} is invalid: use 1-64 letters, digits, '_' or '-', starting with a letter."
        )
    return name


@dataclass(frozen=True)
class Stream:
    """Handle on a node's output while building; chain ``.then()`` and ``.to()`` on it."""

    pipeline: Pipeline
    node: str

    def then(self, name: str, op: OpSpec) -> Stream:
        """Apply ``op`` to every stream of this node; return the new node's handle."""
        if not isinstance(op, OpSpec):
            raise PipelineDefinitionError(
                f"step {name!r}: expected an op such as ops.bandpass(...), got {type(op).__name__}."
            )
        self.pipeline._add(StepNode(_check_name("step", name), op, self.node))
        return Stream(self.pipeline, name)

    @property
    def infos(self) -> tuple[StreamInfo, ...]:
        """Stream descriptions at this node, one per device (e.g. to size a model to the montage)."""
        return self.pipeline._infos(self.node)

    def to(self, name: str, sink: Sink | None = None) -> Stream:
        """Store this node's streams in ``sink`` under step name ``name``.

        Calling ``.to(name)`` without a sink adds this node as another input of an
        existing sink step (one Iceberg table for raw data and features, say).
        """
        return self.pipeline.sink(name, sink, self)


class Pipeline:
    """Builder of a streaming pipeline (no Ray involved until it is run)."""

    def __init__(self, name: str) -> None:
        self.name = _check_name("pipeline", name)
        self._nodes: dict[str, Node] = {}

    def _add(self, node: Node) -> None:
        if node.name in self._nodes:
            raise PipelineDefinitionError(
                f"pipeline {self.name!r}: step name {node.name!r} is used twice; names must be unique."
            )
        self._nodes[node.name] = node

    def source(self, name: str, devices: Device | Sequence[Device]) -> Stream:
        """Add a source of one device or a list of devices processed identically."""
        devs = tuple(devices) if isinstance(devices, (list, tuple)) else (devices,)
        override = SOURCE_OVERRIDE.get()
        if override is not None and not any(isinstance(n, SourceNode) for n in self._nodes.values()):
            devs = override
        for dev in devs:
            if not hasattr(dev, "read") or not hasattr(dev, "info"):
                raise PipelineDefinitionError(
                    f"source {name!r}: {type(dev).__name__} is not a device (needs info, open, read, close)."
                )
        self._add(SourceNode(_check_name("source", name), devs))
        return Stream(self, name)

    def merge(self, name: str, op: Any, *inputs: Stream) -> Stream:
        """Merge every stream of ``inputs`` into one stream with a multi-stream op.

        ``op`` is e.g. :func:`neuraflow.sync.align` (several devices of different
        rates onto one time grid). The devices feeding a merge are hosted by one
        worker; steps chained after it run on the merged stream.

        Examples
        --------
        >>> from neuraflow import Pipeline, devices, sinks, sync
        >>> p = Pipeline("sync")
        >>> eeg = p.source("eeg", devices.Synthetic(stream_id="eeg", n_channels=4, sfreq=256.0))
        >>> ppg = p.source("ppg", devices.Synthetic(stream_id="ppg", n_channels=3, sfreq=64.0, line_freq=None))
        >>> both = p.merge("aligned", sync.align(256.0, prefix=True), eeg, ppg)
        >>> _ = both.to("hot", sinks.HotBuffer(seconds=5.0))
        >>> p.build().stream_infos["aligned"][0].channels[:2]
        ('eeg:Fp1', 'eeg:Fp2')
        """
        if not is_merge_op(op):
            raise PipelineDefinitionError(
                f"merge {name!r}: expected a multi-stream op such as sync.align(...), got {type(op).__name__}."
            )
        if not inputs or not all(isinstance(s, Stream) and s.pipeline is self for s in inputs):
            raise PipelineDefinitionError(f"merge {name!r}: pass one or more streams of this pipeline to merge.")
        self._add(MergeNode(_check_name("merge", name), op, tuple(s.node for s in inputs)))
        return Stream(self, name)

    def sink(self, name: str, sink: Sink | None, *inputs: Stream) -> Stream:
        """Add (or extend with more inputs) the sink step ``name``."""
        existing = self._nodes.get(name)
        names = tuple(s.node for s in inputs)
        if sink is None:
            if not isinstance(existing, SinkNode):
                raise PipelineDefinitionError(f"sink {name!r} does not exist yet; pass the sink object the first time.")
            self._nodes[name] = SinkNode(name, existing.sink, existing.inputs + names)
            return Stream(self, name)
        for method in ("open", "write_batch", "flush", "close"):
            if not callable(getattr(sink, method, None)):
                raise PipelineDefinitionError(f"sink {name!r}: {type(sink).__name__} has no {method}() method.")
        self._add(SinkNode(_check_name("sink", name), sink, names))
        return Stream(self, name)

    def expose(self, name: str, stream: Stream, *, route: str, seconds: float = 10.0) -> None:
        """Keep the last ``seconds`` of ``stream`` in memory and serve it at ``route``."""
        if not isinstance(route, str) or not route.startswith("/"):
            raise PipelineDefinitionError(f"expose {name!r}: route={route!r} must start with '/'.")
        self._add(ExposeNode(_check_name("expose", name), stream.node, route, float(seconds)))

    def _infos(self, name: str) -> tuple[StreamInfo, ...]:
        node = self._nodes[name]
        if isinstance(node, SourceNode):
            return tuple(d.info for d in node.devices)
        if isinstance(node, MergeNode):
            try:
                return (node.op.infer_info([i for parent in node.inputs for i in self._infos(parent)]),)
            except ValueError as exc:
                raise PipelineDefinitionError(f"merge {name!r}: {exc}") from None
        if isinstance(node, StepNode):
            try:
                inputs = self._infos(node.input)
                sources = self._infos(self._origin_of(node.input))
                return tuple(
                    node.op.infer_info(info).replace(stream_id=derived_stream_id(src.stream_id, name))
                    for info, src in zip(inputs, sources)
                )
            except ValueError as exc:
                raise PipelineDefinitionError(f"step {name!r}: {exc}") from None
        raise PipelineDefinitionError(f"{name!r} is a sink or an exposed output; it has no output streams.")

    def _origin_of(self, name: str) -> str:
        node = self._nodes[name]
        while not isinstance(node, (SourceNode, MergeNode)):
            node = self._nodes[node.input] if isinstance(node, (StepNode, ExposeNode)) else self._nodes[node.inputs[0]]
        return node.name

    def build(self) -> LogicalPlan:
        """Validate and return the logical plan (raises :class:`PipelineDefinitionError`)."""
        return build_plan(self.name, list(self._nodes.values()))
