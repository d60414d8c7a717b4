"""The physical plan of one worker: the whole DAG fused and vectorised across hosted streams.

A :class:`FusedGraph` runs every step of a :class:`~neuraflow.graph.plan.LogicalPlan`
in-process for the streams one actor hosts. Per tick it takes the raw chunks
that arrived, walks the steps in topological order and calls each op's
``step_batch`` once per *round* with one chunk of every stream (so 256 hosted
devices cost one stacked ``sosfilt`` per filter step, not 256). Per-stream
order is preserved; state lives here, keyed by ``(step, source stream)``, and
can be snapshotted and restored (actor restarts). A merge node (``Pipeline.merge``)
has one state, keyed ``(merge, "*")``, fed with the chunks of all its input streams
(the placement hosts them all on one worker); at the end of input it is flushed.

This module does not import Ray: the same object runs inside a device-group
actor, in :func:`run_local` for tests, and in benchmarks.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from neuraflow.chunk import Chunk, StreamInfo
from neuraflow.errors import StreamMismatchError
from neuraflow.graph.plan import ExposeNode, LogicalPlan, MergeNode, SinkNode, SourceNode, StepNode
from neuraflow.ops.base import BoundOp


@dataclass
class TickOutput:
    """What one tick produced: chunks per sink step and per exposed output."""

    sinks: dict[str, list[Chunk]] = field(default_factory=lambda: defaultdict(list))
    exposed: dict[str, list[Chunk]] = field(default_factory=lambda: defaultdict(list))
    n_shed: int = 0
    step_counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    step_time_s: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def is_empty(self) -> bool:
        return not any(self.sinks.values()) and not any(self.exposed.values())


class FusedGraph:
    """Run a plan's steps for a set of hosted source streams, fused and vectorised.

    Parameters
    ----------
    plan : LogicalPlan
        The validated plan.
    hosted : sequence of (source_name, device_index)
        Which devices' streams this worker processes.
    """

    def __init__(self, plan: LogicalPlan, hosted: Sequence[tuple[str, int]]) -> None:
        self.plan = plan
        self.hosted = list(hosted)
        self._ops = {s.name: BoundOp(s.op) for s in plan.steps()}
        self._states: dict[tuple[str, str], Any] = {}
        self._next_seq: dict[str, int] = {}
        # derived StreamInfo per (step, source stream id)
        self._derived: dict[tuple[str, str], StreamInfo] = {}
        source_ids: dict[str, list[str]] = defaultdict(list)
        for source_name, index in self.hosted:
            src_info = plan.stream_infos[source_name][index]
            source_ids[source_name].append(src_info.stream_id)
        for step in plan.steps():
            origin = plan.origin(step.name)
            for index, src_info in enumerate(plan.stream_infos[origin.name]):
                self._derived[(step.name, src_info.stream_id)] = plan.stream_infos[step.name][index]
        self._merge_inputs = {m.name: self._hosted_merge_inputs(m) for m in plan.merges()}
        self._nodes = [n for n in plan.nodes.values() if not isinstance(n, SourceNode)]

    def _hosted_merge_inputs(self, merge: MergeNode) -> list[StreamInfo] | None:
        """Input streams of ``merge`` if this worker hosts all its devices, None if it hosts none."""
        needed = self.plan.upstream_devices(merge.name)
        here = set(self.hosted)
        hosted = [item for item in needed if item in here]
        if not hosted:
            return None
        if len(hosted) != len(needed):
            missing = sorted(set(needed) - here)
            raise RuntimeError(
                f"merge {merge.name!r}: this worker hosts {hosted} but not {missing}; "
                f"a merge's devices must share one worker (placement bug)."
            )
        return [info for name in merge.inputs for info in self.plan.stream_infos[name]]

    # ------------------------------------------------------------------ state
    def snapshot(self, streams: Collection[str] | None = None) -> dict[str, Any]:
        """Op states and output counters (for checkpoints).

        ``streams``: only the states of these source streams (``"*"`` names the merge
        states), for checkpoints spread over ticks; ``None``: every state. A shallow
        copy is enough: the op contract forbids mutating a state in place (steps
        return new states), so the values captured here never change. A deep copy of
        every window buffer cost tens of ms per checkpoint at 64 devices.
        """
        if streams is None:
            states = dict(self._states)
        else:
            wanted = set(streams)
            states = {key: state for key, state in self._states.items() if key[1] in wanted}
        return {"states": states, "next_seq": dict(self._next_seq)}

    @property
    def state_streams(self) -> list[str]:
        """The source stream ids that key this worker's states (``"*"``: merge states), for :meth:`snapshot`."""
        ids = [self.plan.stream_infos[name][index].stream_id for name, index in self.hosted]
        return ids + (["*"] if any(v is not None for v in self._merge_inputs.values()) else [])

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Resume from :meth:`snapshot` output."""
        self._states = dict(snapshot.get("states", {}))
        self._next_seq.update(snapshot.get("next_seq", {}))

    def set_next_seq(self, next_seq: dict[str, int]) -> None:
        """Continue derived-stream numbering (after a restart), never going backwards."""
        for stream_id, seq in next_seq.items():
            self._next_seq[stream_id] = max(seq, self._next_seq.get(stream_id, 0))

    @property
    def next_seq(self) -> dict[str, int]:
        return dict(self._next_seq)

    # ------------------------------------------------------------------ run
    def process(
        self, raw: dict[str, list[Chunk]], *, shed_before_s: float | None = None, final: bool = False
    ) -> TickOutput:
        """Push one tick of raw chunks through the DAG.

        Parameters
        ----------
        raw : dict
            Source node name -> raw chunks (several streams mixed, each in seq order).
        shed_before_s : float, optional
            Real-time mode only: outputs of sheddable ops (windows) whose
            ``t_end_s`` is older than this are dropped, except the newest per stream.
        final : bool
            The hosted devices have ended: merges flush what they hold (e.g. the
            aligner emits the grid points it was waiting on, missing data as ``nan``).
        """
        out = TickOutput()
        produced: dict[str, list[tuple[str, Chunk]]] = {}
        for source_name, chunks in raw.items():
            produced[source_name] = [(c.stream_id, c) for c in chunks]
        for node in self._nodes:
            if isinstance(node, StepNode):
                started = time.perf_counter()
                produced[node.name] = self._run_step(node, produced.get(node.input, []), out, shed_before_s)
                out.step_time_s[node.name] += time.perf_counter() - started
            elif isinstance(node, MergeNode):
                started = time.perf_counter()
                inputs = [item for name in node.inputs for item in produced.get(name, [])]
                produced[node.name] = self._run_merge(node, inputs, out, final)
                out.step_time_s[node.name] += time.perf_counter() - started
            elif isinstance(node, SinkNode):
                for name in node.inputs:
                    out.sinks[node.name].extend(c for _, c in produced.get(name, []))
            elif isinstance(node, ExposeNode):
                out.exposed[node.name].extend(c for _, c in produced.get(node.input, []))
        return out

    def _run_step(
        self,
        node: StepNode,
        inputs: list[tuple[str, Chunk]],
        out: TickOutput,
        shed_before_s: float | None,
    ) -> list[tuple[str, Chunk]]:
        if not inputs:
            return []
        op = self._ops[node.name]
        states_of = self._states
        next_seq = self._next_seq
        derived = self._derived
        shed = op.spec.sheddable and shed_before_s is not None
        results: list[tuple[str, Chunk]] = []
        n_out = 0
        for round_items in _rounds(inputs):
            keys = [(node.name, src) for src, _ in round_items]
            chunks = [c for _, c in round_items]
            states = [states_of.get(key) for key in keys]
            for j, state in enumerate(states):
                if state is None and keys[j] not in states_of:
                    states[j] = states_of[keys[j]] = op.init(chunks[j])
            new_states, outputs = op.step_batch(states, chunks)
            for key, state, outs in zip(keys, new_states, outputs):
                states_of[key] = state
                if not outs:
                    continue
                if shed and len(outs) > 1:
                    kept = [c for c in outs[:-1] if c.t_end_s >= shed_before_s] + [outs[-1]]
                    out.n_shed += len(outs) - len(kept)
                    outs = kept
                src = key[1]
                info = derived[key]
                stream_id = info.stream_id
                seq = next_seq.get(stream_id, 0)
                for chunk in outs:
                    # the op built (validated) its output; re-labelling it with the derived
                    # stream only needs the channel count to agree with the plan's inference
                    if chunk.data.shape[0] != info.n_channels:
                        raise StreamMismatchError(
                            f"step {node.name!r}: the op emitted {chunk.data.shape[0]} channels for stream "
                            f"{stream_id!r}, its infer_info declared {info.n_channels}."
                        )
                    results.append((src, Chunk.trusted(chunk.data, chunk.t0_s, info, seq, chunk.recv_s, chunk.meta)))
                    seq += 1
                next_seq[stream_id] = seq
                n_out += len(outs)
        out.step_counts[node.name] += n_out
        return results

    def _run_merge(
        self, node: MergeNode, inputs: list[tuple[str, Chunk]], out: TickOutput, final: bool
    ) -> list[tuple[str, Chunk]]:
        infos = self._merge_inputs[node.name]
        if infos is None:
            return []
        key = (node.name, "*")
        state = self._states[key] if key in self._states else node.op.init(infos)
        state, outs = node.op.step(state, [c for _, c in inputs]) if inputs else (state, [])
        if final:
            state, tail = node.op.flush(state)
            outs = [*outs, *tail]
        self._states[key] = state
        info = self.plan.stream_infos[node.name][0]
        seq = self._next_seq.get(info.stream_id, 0)
        results = [(info.stream_id, chunk.replace(info=info, seq=seq + i)) for i, chunk in enumerate(outs)]
        self._next_seq[info.stream_id] = seq + len(outs)
        out.step_counts[node.name] += len(outs)
        return results


def _rounds(items: list[tuple[str, Chunk]]) -> list[list[tuple[str, Chunk]]]:
    """Split per-stream ordered items into rounds holding at most one chunk per stream."""
    if len({src for src, _ in items}) == len(items):  # the usual tick: one chunk per stream
        return [items]
    rounds: list[list[tuple[str, Chunk]]] = []
    depth: dict[str, int] = defaultdict(int)
    for src, chunk in items:
        level = depth[src]
        if level == len(rounds):
            rounds.append([])
        rounds[level].append((src, chunk))
        depth[src] = level + 1
    return rounds
