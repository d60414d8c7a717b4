"""The logical plan: plain data describing a pipeline, and its validation.

A plan says *what* to compute (sources, steps, sinks, exposed outputs and the
edges between them); :mod:`neuraflow.runtime` decides *how* (which actors,
fused and vectorised). Nothing here imports Ray.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from neuraflow.chunk import StreamInfo
from neuraflow.devices.base import Device
from neuraflow.errors import PipelineDefinitionError
from neuraflow.ops.base import OpSpec
from neuraflow.sinks.base import Sink


@dataclass(frozen=True)
class SourceNode:
    """A set of devices whose streams all go through the same steps."""

    name: str
    devices: tuple[Device, ...]


@dataclass(frozen=True)
class StepNode:
    """One op applied to every stream arriving from ``input``."""

    name: str
    op: OpSpec
    input: str


@dataclass(frozen=True)
class SinkNode:
    """A sink fed by one or more upstream nodes."""

    name: str
    sink: Sink
    inputs: tuple[str, ...]


@dataclass(frozen=True)
class ExposeNode:
    """An output kept in memory (last ``seconds``) and served over HTTP at ``route``."""

    name: str
    input: str
    route: str
    seconds: float = 10.0


@dataclass(frozen=True)
class MergeNode:
    """One multi-stream op (e.g. :func:`neuraflow.sync.align`) fed by every stream of ``inputs``.

    Unlike a step, which runs once per stream, a merge sees the chunks of all
    its input streams (of every device of every input node) and produces one
    output stream. ``op`` has the shape of :class:`~neuraflow.sync.AlignSpec`:
    ``infer_info(infos)``, ``init(infos)``, ``step(state, chunks)`` and
    ``flush(state)`` (end of input). The runtime hosts all of a merge's devices
    on one worker.
    """

    name: str
    op: Any
    inputs: tuple[str, ...]


Node = SourceNode | StepNode | MergeNode | SinkNode | ExposeNode

#: Nodes whose output streams are the origin of the streams of the steps below them.
Origin = SourceNode | MergeNode

_MERGE_METHODS = ("infer_info", "init", "step", "flush")


def is_merge_op(op: Any) -> bool:
    """Whether ``op`` has the multi-stream shape a :class:`MergeNode` needs."""
    return all(callable(getattr(op, m, None)) for m in _MERGE_METHODS)


def node_inputs(node: Node) -> tuple[str, ...]:
    """Names of the nodes feeding ``node``."""
    if isinstance(node, SourceNode):
        return ()
    if isinstance(node, (SinkNode, MergeNode)):
        return node.inputs
    return (node.input,)


def derived_stream_id(source_stream_id: str, step_name: str) -> str:
    """Stream id of a step's output for one source stream, e.g. ``"eeg-0/bandpower"``."""
    return f"{source_stream_id}/{step_name}"


@dataclass(frozen=True)
class LogicalPlan:
    """A validated pipeline description.

    Attributes
    ----------
    name : str
        Pipeline name (keys actors, metrics and Serve routes).
    nodes : Mapping[str, Node]
        Every node by name, in topological order (inputs before consumers).
    stream_infos : Mapping[str, tuple[StreamInfo, ...]]
        For sources and steps: the stream description of each device's stream at
        that node, computed at build time by the ops' ``infer_info``.
    """

    name: str
    nodes: Mapping[str, Node]
    stream_infos: Mapping[str, tuple[StreamInfo, ...]] = field(default_factory=lambda: MappingProxyType({}))

    def children(self, name: str) -> list[str]:
        """Names of the nodes consuming ``name``'s output, in plan order."""
        return [n.name for n in self.nodes.values() if name in node_inputs(n)]

    def sources(self) -> list[SourceNode]:
        return [n for n in self.nodes.values() if isinstance(n, SourceNode)]

    def steps(self) -> list[StepNode]:
        return [n for n in self.nodes.values() if isinstance(n, StepNode)]

    def processing(self) -> list[StepNode | MergeNode]:
        """Steps and merges, in plan order (what the runtime times and counts)."""
        return [n for n in self.nodes.values() if isinstance(n, (StepNode, MergeNode))]

    def merges(self) -> list[MergeNode]:
        return [n for n in self.nodes.values() if isinstance(n, MergeNode)]

    def sinks(self) -> list[SinkNode]:
        return [n for n in self.nodes.values() if isinstance(n, SinkNode)]

    def exposures(self) -> list[ExposeNode]:
        return [n for n in self.nodes.values() if isinstance(n, ExposeNode)]

    def origin(self, name: str) -> Origin:
        """The source or merge node whose streams ``name`` transforms (one stream of it per stream of ``name``)."""
        return _origin_of(self.nodes, self.nodes[name])

    def upstream_devices(self, name: str) -> list[tuple[str, int]]:
        """Every ``(source_name, device_index)`` whose data reaches ``name``, in plan order."""
        found: list[tuple[str, int]] = []
        stack = [name]
        seen: set[str] = set()
        while stack:
            node = self.nodes[stack.pop()]
            if node.name in seen:
                continue
            seen.add(node.name)
            if isinstance(node, SourceNode):
                found.extend((node.name, i) for i in range(len(node.devices)))
            stack.extend(node_inputs(node))
        order = {n: i for i, n in enumerate(self.nodes)}
        return sorted(found, key=lambda item: (order[item[0]], item[1]))

    def all_stream_ids(self) -> list[str]:
        """Every stream id produced by the plan (sources and steps)."""
        return [info.stream_id for infos in self.stream_infos.values() for info in infos]


def _toposort(nodes: Mapping[str, Node]) -> Iterator[Node]:
    for name, node in nodes.items():
        for parent in node_inputs(node):
            if parent not in nodes:
                raise PipelineDefinitionError(f"step {name!r}: input {parent!r} is not a node of this pipeline.")
    done: set[str] = set()
    visiting: set[str] = set()
    order: list[Node] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in done:
            return
        if name in visiting:
            cycle = " -> ".join((*path, name))
            raise PipelineDefinitionError(f"pipeline has a cycle: {cycle}.")
        visiting.add(name)
        for parent in node_inputs(nodes[name]):
            visit(parent, (*path, name))
        visiting.discard(name)
        done.add(name)
        order.append(nodes[name])

    for name in nodes:
        visit(name, ())
    return iter(order)


def build_plan(name: str, nodes: Sequence[Node]) -> LogicalPlan:
    """Validate ``nodes`` and return the :class:`LogicalPlan`.

    Checks: unique node names, inputs exist, no cycles, every source and step
    feeds something, every branch ends in a sink or an exposed output, unique
    stream ids, and each op accepts its input streams (``infer_info``).

    Raises
    ------
    PipelineDefinitionError
        Naming the step, the value and the limit.
    """
    if not nodes:
        raise PipelineDefinitionError(f"pipeline {name!r} has no nodes; add a source with p.source(...).")
    by_name: dict[str, Node] = {}
    for node in nodes:
        if node.name in by_name:
            raise PipelineDefinitionError(f"pipeline {name!r}: step name {node.name!r} is used twice; names must be unique.")
        by_name[node.name] = node
    ordered = {n.name: n for n in _toposort(by_name)}
    consumers = {n: 0 for n in ordered}
    for node in ordered.values():
        for parent in node_inputs(node):
            consumers[parent] += 1
    for node in ordered.values():
        if isinstance(node, (SourceNode, StepNode, MergeNode)) and consumers[node.name] == 0:
            raise PipelineDefinitionError(
                f"pipeline {name!r}: the branch ending at {node.name!r} has no sink; "
                f"add .to(name, sink) or p.expose(name, stream, route=...)."
            )
        if any(isinstance(ordered[p], (SinkNode, ExposeNode)) for p in node_inputs(node)):
            raise PipelineDefinitionError(f"step {node.name!r}: a sink or exposed output cannot feed another node.")
    infos: dict[str, tuple[StreamInfo, ...]] = {}
    for node in ordered.values():
        if isinstance(node, SourceNode):
            if not node.devices:
                raise PipelineDefinitionError(f"source {node.name!r} has no devices.")
            infos[node.name] = tuple(d.info for d in node.devices)
        elif isinstance(node, MergeNode):
            infos[node.name] = (_merge_info(node, [i for name in node.inputs for i in infos[name]]),)
        elif isinstance(node, StepNode):
            out: list[StreamInfo] = []
            source = _origin_of(ordered, node).name
            for src_info, in_info in zip(infos[source], infos[node.input]):
                try:
                    info = node.op.infer_info(in_info)
                except ValueError as exc:
                    raise PipelineDefinitionError(f"step {node.name!r}: {exc}") from None
                out.append(info.replace(stream_id=derived_stream_id(src_info.stream_id, node.name)))
            infos[node.name] = tuple(out)
    seen: dict[str, str] = {}
    for node_name, stream_infos in infos.items():
        for info in stream_infos:
            if info.stream_id in seen:
                raise PipelineDefinitionError(
                    f"pipeline {name!r}: stream id {info.stream_id!r} is produced by both "
                    f"{seen[info.stream_id]!r} and {node_name!r}; give each device a unique stream_id."
                )
            seen[info.stream_id] = node_name
    routes = [n.route for n in ordered.values() if isinstance(n, ExposeNode)]
    if len(set(routes)) != len(routes):
        raise PipelineDefinitionError(f"pipeline {name!r}: exposed routes must be unique, got {routes}.")
    return LogicalPlan(name=name, nodes=MappingProxyType(ordered), stream_infos=MappingProxyType(infos))


def _origin_of(nodes: Mapping[str, Node], node: Node) -> Origin:
    while not isinstance(node, (SourceNode, MergeNode)):
        node = nodes[node_inputs(node)[0]]
    return node


def _merge_info(node: MergeNode, inputs: Sequence[StreamInfo]) -> StreamInfo:
    if len(set(node.inputs)) != len(node.inputs):
        raise PipelineDefinitionError(f"merge {node.name!r}: inputs {list(node.inputs)} name a node twice.")
    try:
        return node.op.infer_info(inputs)
    except ValueError as exc:
        raise PipelineDefinitionError(f"merge {node.name!r}: {exc}") from None


def replace_devices(plan: LogicalPlan, source: str, devices: Sequence[Device]) -> LogicalPlan:
    """Return ``plan`` with the devices of ``source`` replaced (e.g. a file for replay), re-validated."""
    node = plan.nodes.get(source)
    if not isinstance(node, SourceNode):
        sources = [s.name for s in plan.sources()]
        raise PipelineDefinitionError(f"pipeline {plan.name!r}: {source!r} is not a source; sources are {sources}.")
    nodes = [SourceNode(source, tuple(devices)) if n.name == source else n for n in plan.nodes.values()]
    return build_plan(plan.name, nodes)
