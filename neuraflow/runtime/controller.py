"""The pipeline controller: sinks, exposed outputs, checkpoints and metrics of one pipeline.

Workers send one :class:`~neuraflow.runtime.loop.Delivery` per tick. The
controller writes it to the sinks, keeps exposed outputs in a bounded hot
buffer, records events, and stores per-stream watermarks and op-state
snapshots so a restarted worker resumes where the sinks are ("accepted" means
the controller returned from :meth:`PipelineController.deliver`).

The class is plain Python (testable without Ray); :mod:`neuraflow.runtime.actors`
runs it as a named Ray actor.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict, deque
from typing import Any

from neuraflow.chunk import Chunk, Event
from neuraflow.errors import SinkError
from neuraflow.graph.plan import LogicalPlan
from neuraflow.runtime.loop import Delivery, ResumePoint
from neuraflow.runtime.stats import StreamStats
from neuraflow.runtime.wire import CheckpointStore, StateBlob
from neuraflow.sinks.memory import HotBuffer

log = logging.getLogger(__name__)

#: Shortest interval between two ``flush()`` calls of a sink (seconds). A sink with a longer
#: ``flush_every_s`` of its own (Iceberg: commits cost seconds and one file per stream) is
#: flushed on that cadence instead; every sink is flushed at the end and on stop.
FLUSH_EVERY_S = 1.0
#: Chunks kept per sink while it refuses writes; beyond this the oldest are dropped and counted
#: (memory stays bounded during a long outage of a store).
MAX_PENDING_PER_SINK = 200_000
#: Window of the "recent" metrics (what the CLI's live line shows), seconds.
RECENT_WINDOW_S = 5.0


class PipelineController:
    """Owns the sinks and the state of one running pipeline.

    Parameters
    ----------
    plan : LogicalPlan
        The pipeline (sinks are opened here, once).
    groups : list of str
        Worker ids whose deliveries are expected.
    mode : str
        Execution mode, for status reports.
    """

    def __init__(self, plan: LogicalPlan, groups: list[str], mode: str) -> None:
        self.plan = plan
        self.mode = mode
        self.state = "running"
        self.started_s = time.time()
        self._groups = {g: {"finished": False, "deliveries": 0, "last_s": 0.0} for g in groups}
        self._sinks = {node.name: node.sink for node in plan.sinks()}
        self._exposed = {node.name: HotBuffer(seconds=node.seconds) for node in plan.exposures()}
        self._events = HotBuffer(seconds=3600.0)
        for name, sink in self._sinks.items():
            try:
                sink.open()
            except Exception as exc:
                raise SinkError(f"sink {name!r}: open failed: {exc}") from exc
        self._raw: dict[str, dict[str, tuple[int, float]]] = defaultdict(dict)
        self._derived: dict[str, dict[str, int]] = defaultdict(dict)
        self._checkpoints = CheckpointStore()
        self._stream_stats: dict[str, StreamStats] = defaultdict(StreamStats)
        self._step_counts: dict[str, int] = defaultdict(int)
        self._step_time_s: dict[str, float] = defaultdict(float)
        self._sink_errors: dict[str, str] = {}
        self._sink_failures: dict[str, int] = defaultdict(int)
        self._sink_dropped: dict[str, int] = defaultdict(int)
        self._pending: dict[str, list[Chunk]] = defaultdict(list)
        self._recent: deque[tuple[float, StreamStats]] = deque()
        self._last_flush = dict.fromkeys(self._sinks, time.monotonic())

    # ------------------------------------------------------------------ data path
    def deliver(self, delivery: Delivery) -> bool:
        """Accept one tick of one worker. Returns True once everything is handed to the sinks.

        A sink that raises keeps its chunks in a pending list (retried on the
        next delivery) and the error is counted and reported; other sinks and
        the pipeline keep running.
        """
        group = self._groups.setdefault(delivery.group_id, {"finished": False, "deliveries": 0, "last_s": 0.0})
        for name, chunks in delivery.sinks.items():
            if chunks:
                pending = self._pending[name]
                pending.extend(chunks)
                excess = len(pending) - MAX_PENDING_PER_SINK
                if excess > 0:
                    del pending[:excess]
                    self._sink_dropped[name] += excess
        for name in list(self._pending):
            self._write(name)
        if delivery.events:
            for name, sink in self._sinks.items():
                if hasattr(sink, "write_events"):
                    try:
                        sink.write_events(delivery.events)
                    except Exception as exc:  # noqa: BLE001 - reported, events are best effort
                        self._sink_errors[name] = f"write_events: {exc}"
            self._events.write_events(delivery.events)
        for name, chunks in delivery.exposed.items():
            if chunks:
                self._exposed[name].write_batch(chunks)
        raw = self._raw[delivery.group_id]
        for stream_id, mark in delivery.raw_watermarks.items():
            if stream_id not in raw or mark[0] > raw[stream_id][0]:
                raw[stream_id] = mark
        self._derived[delivery.group_id].update(delivery.derived_next_seq)
        if delivery.snapshot is not None:
            self._checkpoints.add(delivery.group_id, delivery.snapshot)
        if delivery.stats:
            tick_total = StreamStats()
            for stream_id, stats in delivery.stats.items():
                self._stream_stats[stream_id].merge(stats)
                tick_total.merge(stats)
            now = time.monotonic()
            self._recent.append((now, tick_total))
            while self._recent and self._recent[0][0] < now - RECENT_WINDOW_S:
                self._recent.popleft()
        for step, n in delivery.step_counts.items():
            self._step_counts[step] += n
        for step, seconds in delivery.step_time_s.items():
            self._step_time_s[step] += seconds
        group["deliveries"] += 1
        group["last_s"] = time.time()
        if delivery.finished:
            group["finished"] = True
        if self.finished:
            self.flush()
        else:
            now = time.monotonic()
            for name, sink in self._sinks.items():
                if now - self._last_flush[name] >= max(FLUSH_EVERY_S, getattr(sink, "flush_every_s", 0.0) or 0.0):
                    self._flush_sink(name)
        return True

    def _write(self, name: str) -> None:
        chunks = self._pending.get(name)
        if not chunks:
            return
        try:
            self._sinks[name].write_batch(chunks)
        except Exception as exc:  # noqa: BLE001 - keep data, count, retry next tick
            self._sink_failures[name] += 1
            self._sink_errors[name] = f"{type(exc).__name__}: {exc}"
            log.warning("sink %s: write failed (%s); %d chunks kept for retry", name, exc, len(chunks))
            return
        del self._pending[name]

    def flush(self) -> None:
        """Flush every sink (errors are recorded, pending data is kept)."""
        for name in self._sinks:
            self._flush_sink(name)

    def _flush_sink(self, name: str) -> None:
        self._write(name)
        try:
            self._sinks[name].flush()
        except Exception as exc:  # noqa: BLE001 - recorded; the sink keeps its buffer
            self._sink_failures[name] += 1
            self._sink_errors[name] = f"flush: {type(exc).__name__}: {exc}"
        self._last_flush[name] = time.monotonic()

    def store_checkpoints(self, group_id: str, blobs: list[StateBlob]) -> None:
        """Keep partial op-state checkpoints a worker sent apart from its ticks (oldest first)."""
        for blob in blobs:
            self._checkpoints.add(group_id, blob)

    def resume_point(self, group_id: str) -> ResumePoint:
        """Where worker ``group_id`` continues after a restart."""
        return ResumePoint(
            raw=dict(self._raw.get(group_id, {})),
            derived_next_seq=dict(self._derived.get(group_id, {})),
            snapshot=self._checkpoints.snapshot(group_id),
        )

    # ------------------------------------------------------------------ queries
    @property
    def finished(self) -> bool:
        return bool(self._groups) and all(g["finished"] for g in self._groups.values())

    def status(self) -> dict[str, Any]:
        state = "finished" if self.finished and self.state == "running" else self.state
        return {
            "name": self.plan.name,
            "state": state,
            "mode": self.mode,
            "started_s": self.started_s,
            "uptime_s": time.time() - self.started_s,
            # checkpoint_bytes: the op-state blobs kept for the group's restart (controller memory)
            "groups": {g: {**v, "checkpoint_bytes": self._checkpoints.n_bytes(g)} for g, v in self._groups.items()},
            "sources": {s.name: [d.info.stream_id for d in s.devices] for s in self.plan.sources()},
            "steps": [s.name for s in self.plan.processing()],
            "sinks": {name: {"error": self._sink_errors.get(name), "failures": self._sink_failures.get(name, 0),
                             "pending_chunks": len(self._pending.get(name, [])),
                             "dropped_chunks": self._sink_dropped.get(name, 0)} for name in self._sinks},
            "exposed": {e.name: e.route for e in self.plan.exposures()},
        }

    def metrics(self) -> dict[str, Any]:
        """Per-stream and per-step summary plus pipeline totals."""
        elapsed = time.time() - self.started_s
        streams = {sid: st.summary(elapsed) for sid, st in self._stream_stats.items()}
        total = StreamStats()
        for st in self._stream_stats.values():
            total.merge(st)
        total.queue_depth = sum(st.queue_depth for st in self._stream_stats.values())
        recent = StreamStats()
        for _, st in self._recent:
            recent.merge(st)
        recent_s = min(RECENT_WINDOW_S, elapsed)
        return {
            "pipeline": self.plan.name,
            "elapsed_s": elapsed,
            "total": total.summary(elapsed),
            "recent": {"window_s": recent_s, **recent.summary(recent_s)},
            "streams": streams,
            "steps": {
                step.name: {
                    "chunks": self._step_counts.get(step.name, 0),
                    "chunks_per_s": self._step_counts.get(step.name, 0) / elapsed if elapsed else 0.0,
                    # CPU share of the workers spent in this step (all streams, vectorised)
                    "busy_s": self._step_time_s.get(step.name, 0.0),
                    "busy_fraction": self._step_time_s.get(step.name, 0.0) / elapsed if elapsed else 0.0,
                }
                for step in self.plan.processing()
            },
            "sinks": {name: {"failures": self._sink_failures.get(name, 0),
                             "pending_chunks": len(self._pending.get(name, [])),
                             "dropped_chunks": self._sink_dropped.get(name, 0)} for name in self._sinks},
        }

    def streams(self) -> list[dict[str, Any]]:
        """Every stream the plan declares, with what is known of it at run time."""
        out = []
        for node_name, infos in self.plan.stream_infos.items():
            for info in infos:
                stats = self._stream_stats.get(info.stream_id)
                out.append({
                    "stream_id": info.stream_id, "node": node_name, "sfreq": info.sfreq,
                    "channels": list(info.channels), "units": list(info.units), "ch_types": list(info.ch_types),
                    "chunks": stats.chunks if stats else 0,
                })
        return out

    def latest(self, stream_id: str, seconds: float) -> Chunk | None:
        """The last ``seconds`` of ``stream_id`` from any exposed output or hot-buffer sink."""
        for buffer in self._hot_buffers():
            try:
                chunk = buffer.latest(stream_id, seconds)
            except KeyError:
                continue
            if chunk is not None:
                return chunk
        raise KeyError(stream_id)

    def events(self, stream_id: str | None = None, since_s: float | None = None) -> list[Event]:
        return self._events.events(stream_id=stream_id, since_s=since_s)

    def exposed_latest(self, name: str, seconds: float) -> list[Chunk]:
        """Latest chunk of every stream of exposed output ``name``."""
        buffer = self._exposed[name]
        return [c for s in buffer.streams() if (c := buffer.latest(s["stream_id"], seconds)) is not None]

    def call_sink(self, name: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call a query method of sink ``name`` (e.g. ``chunks`` of a MemorySink, ``stats``)."""
        return getattr(self._sinks[name], method)(*args, **kwargs)

    def _hot_buffers(self) -> list[HotBuffer]:
        return [*self._exposed.values(), *(s for s in self._sinks.values() if isinstance(s, HotBuffer))]

    def stop(self) -> dict[str, Any]:
        """Flush and close every sink; the pipeline keeps its queryable state."""
        self.flush()
        for name, sink in self._sinks.items():
            try:
                sink.close()
            except Exception as exc:  # noqa: BLE001 - reported in status
                self._sink_errors[name] = f"close: {exc}"
        self.state = "stopped"
        return self.status()
