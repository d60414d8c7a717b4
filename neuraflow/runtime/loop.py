"""The processing loop of one device-group worker (no Ray here).

One loop hosts many devices. Every tick it polls the devices that are due,
drains their ring buffers, runs the fused, vectorised DAG once over
everything that arrived (:class:`~neuraflow.runtime.fused.FusedGraph`) and
hands *one* :class:`Delivery` per tick to the controller: chunks per sink,
exposed outputs, events, per-stream watermarks and, every
``checkpoint_every_s``, a snapshot of the op states. The Ray actor in
:mod:`neuraflow.runtime.actors` only supplies the ``deliver`` transport.

Tick length is the latency/throughput dial: real-time mode waits at most
``tick_s`` (5 ms) to gather chunks of many devices into one batch;
near-real-time mode 100 ms; batch mode does not wait at all.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

from neuraflow.chunk import Chunk, Event
from neuraflow.graph.plan import LogicalPlan
from neuraflow.runtime.fused import FusedGraph
from neuraflow.runtime.slot import DeviceSlot, SlotOptions
from neuraflow.runtime.stats import StreamStats
from neuraflow.runtime.wire import StateBlob


#: A device due this close in the future is polled now (sleep() may return a bit early).
_WAKE_SLACK_S = 2e-4


class Mode(str, Enum):
    """Execution modes: device-paced real time, larger batches, or replay at full speed."""

    REALTIME = "realtime"
    NEAR_REAL_TIME = "near_real_time"
    BATCH = "batch"


@dataclass(frozen=True)
class LoopOptions:
    """Timing of a worker loop (seconds)."""

    mode: Mode = Mode.REALTIME
    tick_s: float = 0.005
    latency_budget_s: float = 0.05
    checkpoint_every_s: float = 5.0
    report_every_s: float = 0.5
    max_chunks_per_tick: int = 256


@dataclass
class ResumePoint:
    """Where a restarted worker continues: per raw stream ``(next_seq, last_t_end_s)``,
    derived-stream counters and the last op-state snapshot."""

    raw: dict[str, tuple[int, float]] = field(default_factory=dict)
    derived_next_seq: dict[str, int] = field(default_factory=dict)
    snapshot: dict[str, Any] | None = None


@dataclass
class Delivery:
    """Everything one tick of one worker hands to the controller (one call per tick)."""

    group_id: str
    sinks: dict[str, list[Chunk]]
    exposed: dict[str, list[Chunk]]
    events: list[Event]
    raw_watermarks: dict[str, tuple[int, float]]
    derived_next_seq: dict[str, int]
    snapshot: StateBlob | None = None  # op states (all, or some streams' when ``snapshot.partial``)
    stats: dict[str, StreamStats] | None = None
    step_counts: dict[str, int] = field(default_factory=dict)
    step_time_s: dict[str, float] = field(default_factory=dict)
    finished: bool = False


class GroupLoop:
    """Hosts devices and runs the fused pipeline over them.

    Parameters
    ----------
    group_id : str
        Name of this worker (keys its checkpoints).
    plan : LogicalPlan
        The pipeline.
    hosted : sequence of (source_name, device_index)
        The devices this worker owns.
    slot_options, loop_options
        Device and timing options.
    resume : ResumePoint, optional
        Continue after a restart.
    """

    def __init__(
        self,
        group_id: str,
        plan: LogicalPlan,
        hosted: Sequence[tuple[str, int]],
        slot_options: SlotOptions,
        loop_options: LoopOptions,
        resume: ResumePoint | None = None,
    ) -> None:
        self.group_id = group_id
        self.options = loop_options
        self.fused = FusedGraph(plan, hosted)
        resume = resume or ResumePoint()
        if resume.snapshot:
            self.fused.restore(resume.snapshot)
        self.fused.set_next_seq(resume.derived_next_seq)
        self.slots: list[tuple[str, DeviceSlot]] = []
        for source_name, index in hosted:
            device = plan.nodes[source_name].devices[index]
            next_seq, last_t_end = resume.raw.get(device.info.stream_id, (0, None))
            self.slots.append((source_name, DeviceSlot(device, slot_options, next_seq=next_seq, last_t_end_s=last_t_end)))
        self._stats: dict[str, StreamStats] = {s.stream_id: StreamStats() for _, s in self.slots}
        self._reported: dict[str, tuple[int, int, int, int]] = {}
        self._next_ready: list[float] = [0.0] * len(self.slots)
        self._paced_with = self._merge_partners(plan, hosted) if loop_options.mode is Mode.BATCH else {}
        self._last_busy_s: float | None = None  # start of the last tick that processed data
        self._work_s = 0.0  # moving average of a busy loop iteration's duration (poll, tick, deliver), s
        self._last_work_end_s: float | None = None
        self._last_checkpoint = time.monotonic()
        self._checkpoint_streams = self.fused.state_streams
        self._checkpoint_credit = 0.0
        self._checkpoint_pos = 0
        self._last_report = time.monotonic()
        self.started = False

    # ------------------------------------------------------------------ control
    def start(self) -> None:
        for _, slot in self.slots:
            slot.start()
        self.started = True

    def stop(self) -> None:
        for _, slot in self.slots:
            slot.stop()

    @property
    def finished(self) -> bool:
        return all(slot.finished and slot.queue_depth == 0 for _, slot in self.slots)

    @staticmethod
    def _merge_partners(plan: LogicalPlan, hosted: Sequence[tuple[str, int]]) -> dict[int, list[int]]:
        """Slot index -> indices of the other slots feeding the same merge (see :meth:`poll`)."""
        index = {item: i for i, item in enumerate(hosted)}
        partners: dict[int, set[int]] = {}
        for merge in plan.merges():
            members = [index[item] for item in plan.upstream_devices(merge.name) if item in index]
            for i in members:
                partners.setdefault(i, set()).update(j for j in members if j != i)
        return {i: sorted(js) for i, js in partners.items() if js}

    def _read_horizon(self, i: int) -> float | None:
        """Batch mode: device time up to which slot ``i`` may read (None: no limit).

        Files and as-fast-as-possible devices feeding one merge are read in step
        by device time (never more than one chunk past the slowest live partner),
        so the merge sees them side by side as it would in real time instead of
        one racing ahead and the others looking stalled.
        """
        ends = [self.slots[j][1].last_t_end_s for j in self._paced_with.get(i, ()) if not self.slots[j][1].finished]
        if not ends:
            return None
        return min(-math.inf if e is None else e for e in ends)

    # ------------------------------------------------------------------ one tick
    def poll(self) -> None:
        """Read every device that is due into its ring buffer."""
        now = time.time()
        for i, (_, slot) in enumerate(self.slots):
            if self._next_ready[i] > now + _WAKE_SLACK_S:
                continue
            slot.poll(until_s=self._read_horizon(i))
            hint = slot.next_ready_s()
            self._next_ready[i] = hint if hint is not None else 0.0

    def tick(self, *, final: bool = False) -> Delivery | None:
        """Drain the rings, run the DAG once, return the delivery (None if nothing to say).

        ``final=True`` (the loop is stopping) always reports stats and a snapshot.
        """
        raw: dict[str, list[Chunk]] = {}
        events: list[Event] = []
        watermarks: dict[str, tuple[int, float]] = {}
        taken: list[Chunk] = []
        for source_name, slot in self.slots:
            chunks, slot_events = slot.take(self.options.max_chunks_per_tick)
            events.extend(slot_events)
            if chunks:
                raw.setdefault(source_name, []).extend(chunks)
                taken.extend(chunks)
                watermarks[slot.stream_id] = (chunks[-1].seq + 1, chunks[-1].t_end_s)
        now = time.time()
        report_due = final or time.monotonic() - self._last_report >= self.options.report_every_s
        finishing = final or self.finished
        if not taken and not events and not report_due and not finishing:
            return None
        self._last_busy_s = now if taken else self._last_busy_s
        shed_before = now - self.options.latency_budget_s if self.options.mode is Mode.REALTIME else None
        # end of input (every device ended) or stop: merges flush what they hold back
        out = self.fused.process(raw, shed_before_s=shed_before, final=finishing)
        done = time.time()
        self._account(taken, done, out.n_shed)
        delivery = Delivery(
            group_id=self.group_id,
            sinks=dict(out.sinks),
            exposed=dict(out.exposed),
            events=events,
            raw_watermarks=watermarks,
            derived_next_seq=self.fused.next_seq,
            step_counts=dict(out.step_counts),
            step_time_s=dict(out.step_time_s),
            finished=self.finished,
        )
        if delivery.finished or final:
            delivery.snapshot = StateBlob.pack(self.fused.snapshot())
        else:
            streams = self._checkpoint_due()
            if streams:
                delivery.snapshot = StateBlob.pack(self.fused.snapshot(streams), partial=True)
        if report_due or delivery.finished:
            delivery.stats = self._take_stats()
            self._last_report = time.monotonic()
        return delivery

    def _checkpoint_due(self) -> list[str]:
        """The streams whose states this tick's delivery checkpoints.

        Every stream is checkpointed once per ``checkpoint_every_s``, but not all on
        the same tick: a snapshot of hundreds of streams (their 1 s window buffers)
        took tens of ms to serialise, and the tick carrying it then missed the
        latency budget once a second. Streams are taken round-robin, as many per
        tick as the time since the last tick is worth.
        """
        now = time.monotonic()
        streams = self._checkpoint_streams
        if not streams:
            return []
        self._checkpoint_credit += len(streams) * (now - self._last_checkpoint) / self.options.checkpoint_every_s
        self._last_checkpoint = now
        k = min(len(streams), int(self._checkpoint_credit))
        if not k:
            return []
        self._checkpoint_credit -= k
        start = self._checkpoint_pos
        self._checkpoint_pos = (start + k) % len(streams)
        return [streams[(start + i) % len(streams)] for i in range(k)]

    def _account(self, taken: list[Chunk], done_s: float, n_shed: int) -> None:
        if not taken:
            return
        batch = self.options.mode is Mode.BATCH
        ends = np.fromiter(((c.recv_s if batch else c.t_end_s) for c in taken), dtype=np.float64, count=len(taken))
        latencies_ms = (done_s - ends) * 1000.0
        for chunk, latency in zip(taken, latencies_ms):
            stats = self._stats[chunk.stream_id]
            stats.chunks += 1
            stats.samples += chunk.n_samples
            if math.isfinite(latency):
                stats.latency.add(float(latency))
        if n_shed and taken:
            self._stats[taken[0].stream_id].shed += n_shed

    def _take_stats(self) -> dict[str, StreamStats]:
        """Deltas since the last report, with device counters folded in."""
        out = self._stats
        for _, slot in self.slots:
            c = slot.counters
            prev = self._reported.get(slot.stream_id, (0, 0, 0, 0))
            now = (c.dropped, c.errors, c.reconnects, c.gaps)
            stats = out[slot.stream_id]
            stats.drops, stats.errors, stats.reconnects, stats.gaps = (a - b for a, b in zip(now, prev))
            stats.queue_depth = slot.queue_depth
            self._reported[slot.stream_id] = now
        self._stats = {s.stream_id: StreamStats() for _, s in self.slots}
        return out

    # ------------------------------------------------------------------ run
    def gather_s(self) -> float:
        """Real time: how long after the end of a busy iteration the next tick waits, seconds.

        Devices whose chunks arrive at spread-out instants (the usual case: each
        device started on its own) would otherwise be processed a few at a time
        every ``tick_s``, paying the fixed cost of a tick (one delivery, one call
        per step) for each handful: at 128 devices with spread phases, 13.4 ms of
        CPU per device-second against 7 when all chunks arrived together, and
        9.3-10.7 ms with this wait. The loop waits as long as its last busy
        iterations took (moving average ``P``), so batches grow with the load at a
        duty cycle near one half, but never so long that a chunk arriving just
        after a tick started could come near the budget: it waits for that tick,
        the gather and its own tick, ``gather + 2 P <= budget / 2`` (the other half
        is left to scheduling noise; at ``0.8`` the p50 doubled).
        """
        if self.options.mode is not Mode.REALTIME:
            return 0.0
        work = self._work_s
        return max(0.0, min(work, 0.5 * self.options.latency_budget_s - 2.0 * work))

    def _note_work(self, started_s: float) -> None:
        """Fold the duration of a busy loop iteration (started at ``started_s``) into :attr:`_work_s`."""
        self._last_work_end_s = time.time()
        self._work_s += 0.3 * ((self._last_work_end_s - started_s) - self._work_s)

    def sleep_until_next(self, last_tick_start: float) -> None:
        """Sleep until the earliest device is due, but at least ``tick_s`` after the start and
        :meth:`gather_s` after the end of an iteration that processed data: an idle loop reacts
        at once (low latency for one device), a busy one gathers the chunks of many devices
        into one vectorised tick."""
        if self.options.mode is Mode.BATCH:
            if not any(len(s.ring) for _, s in self.slots) and not any(
                not s.finished and not getattr(s.device, "blocking", False) for _, s in self.slots
            ):
                time.sleep(0.001)
            return
        now = time.time()
        hints = [h for h in self._next_ready if h > 0]
        wake = min(hints) if hints else now + self.options.tick_s
        if self._last_busy_s is not None:
            wake = max(wake, self._last_busy_s + self.options.tick_s)
        if self._last_work_end_s is not None:
            wake = max(wake, self._last_work_end_s + self.gather_s())
        wake = min(wake, now + max(self.options.tick_s, 0.05))
        if wake > now:
            time.sleep(wake - now)

    def run(
        self,
        deliver: Callable[[Delivery], None],
        can_deliver: Callable[[], bool],
        should_stop: Callable[[], bool],
    ) -> None:
        """Loop until ``should_stop()`` or every device is finished.

        ``can_deliver()`` is the backpressure signal from the transport: while it
        is False the loop keeps reading devices into their rings (which apply
        their ``block``/``drop_oldest`` policy) but does not process.
        """
        if not self.started:
            self.start()
        while not should_stop():
            start = time.time()
            self.poll()
            if can_deliver():
                delivery = self.tick()
                if delivery is not None:
                    deliver(delivery)
                    if delivery.finished:
                        return
                    if self._last_busy_s is not None and self._last_busy_s >= start:
                        self._note_work(start)
                elif self.finished:
                    deliver(self._final_delivery())
                    return
            self.sleep_until_next(start)
        # stopped: hand over what the rings still hold, so nothing accepted is left behind
        delivery = self.tick(final=True)
        if delivery is not None:
            deliver(delivery)

    def _final_delivery(self) -> Delivery:
        return Delivery(
            group_id=self.group_id,
            sinks={},
            exposed={},
            events=[],
            raw_watermarks={},
            derived_next_seq=self.fused.next_seq,
            snapshot=StateBlob.pack(self.fused.snapshot()),
            stats=self._take_stats(),
            finished=True,
        )
