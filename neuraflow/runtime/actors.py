"""Ray actors: the device-group worker and the pipeline controller.

Physical execution model (measured, see README): a worker actor hosts many
devices and runs the whole fused DAG vectorised across them; it pays one Ray
call per *tick* (to the controller), never one per chunk or per step. A
device bound to hardware gets a worker of its own, pinned where the hardware
is -- it is the same code with one device.

Workers restart on failure (``max_restarts``). A restarted worker asks the
controller for its :class:`~neuraflow.runtime.loop.ResumePoint`, continues
``seq`` numbering after the last accepted chunk and records the time it missed
as a ``"gap"`` event.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from dataclasses import replace
from typing import Any

import ray

from neuraflow.graph.plan import LogicalPlan
from neuraflow.runtime.allocator import tune_allocator
from neuraflow.runtime.controller import PipelineController
from neuraflow.runtime.loop import GroupLoop, LoopOptions
from neuraflow.runtime.prometheus import PrometheusExporter
from neuraflow.runtime.shipper import CheckpointShipper
from neuraflow.runtime.slot import SlotOptions
from neuraflow.runtime.wire import PackedDelivery, StateBlob, pack_delivery, plan_stream_infos, unpack_delivery

log = logging.getLogger(__name__)

#: Ticks a worker may have in flight to the controller before it stops processing
#: (its device rings then absorb the delay under their backpressure policy).
MAX_IN_FLIGHT = 2


def _freeze_heap() -> None:
    """Exclude everything alive after an actor's set-up from future garbage collections.

    An actor process holds ~130k GC-tracked objects once Ray, scipy, ONNX Runtime and
    pydantic are imported, and every full (generation 2) collection walked all of them:
    25-40 ms pauses about once a second in a loop that allocates per chunk, each one a
    tick over a 50 ms latency budget. Frozen objects are never collected, so this is
    only done in the actors' own processes, once, after their long-lived state exists.
    """
    gc.collect()
    gc.freeze()


def _find_controller(name: str, namespace: str, timeout_s: float = 30.0) -> ray.actor.ActorHandle:
    """The controller's handle; retried because a restarted worker may come up while the
    GCS is still recovering from the loss of a node."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return ray.get_actor(name, namespace=namespace)
        except ValueError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.5)


class DeviceGroupWorker:
    """Ray actor body: runs a :class:`GroupLoop` in a thread started by the constructor.

    Starting in ``__init__`` (not in a method) is what makes restarts work:
    Ray re-runs the constructor of a restarted actor, and nobody has to call
    ``start`` again.
    """

    def __init__(
        self,
        group_id: str,
        plan: LogicalPlan,
        hosted: list[tuple[str, int]],
        slot_options: SlotOptions,
        loop_options: LoopOptions,
        controller_name: str,
        namespace: str,
    ) -> None:
        self.group_id = group_id
        tune_allocator()
        self.controller = _find_controller(controller_name, namespace)
        resume = ray.get(self.controller.resume_point.remote(group_id))
        self.loop = GroupLoop(group_id, plan, hosted, slot_options, loop_options, resume)
        self._infos = plan_stream_infos(plan)
        self.restarted = bool(resume.raw)
        self._in_flight: list[ray.ObjectRef] = []
        self._stop = threading.Event()
        self._error: str | None = None
        self._exporter = PrometheusExporter(plan.name, group_id)
        self._shipper = CheckpointShipper(self._send_checkpoints)
        _freeze_heap()
        self._thread = threading.Thread(target=self._run, name=f"group:{group_id}", daemon=True)
        self._thread.start()

    def _can_deliver(self) -> bool:
        if self._in_flight:
            done, self._in_flight = ray.wait(self._in_flight, num_returns=len(self._in_flight), timeout=0)
            for ref in done:
                ray.get(ref)  # surface controller errors
        return len(self._in_flight) < MAX_IN_FLIGHT

    def _deliver(self, delivery) -> None:
        snapshot = delivery.snapshot
        if snapshot is not None and snapshot.partial:
            # off the tick: a ~300 kB-per-stream blob goes through the object store (see shipper.py)
            self._shipper.submit(snapshot)
            delivery = replace(delivery, snapshot=None)
        elif snapshot is not None:
            self._shipper.flush()  # the full snapshot must land after every partial one
        self._in_flight.append(self.controller.deliver_packed.remote(pack_delivery(delivery, self._infos)))
        if delivery.stats:
            self._exporter.export(delivery.stats)

    def _send_checkpoints(self, blobs: list[StateBlob]) -> None:
        ray.get(self.controller.store_checkpoints.remote(self.group_id, blobs))

    def _run(self) -> None:
        try:
            self.loop.run(self._deliver, self._can_deliver, self._stop.is_set)
            if self._in_flight:
                ray.get(self._in_flight)
                self._in_flight = []
        except Exception as exc:  # noqa: BLE001 - reported through status(); actor stays queryable
            log.exception("group %s crashed", self.group_id)
            self._error = f"{type(exc).__name__}: {exc}"
        finally:
            self.loop.stop()
            self._shipper.close()

    def status(self) -> dict[str, Any]:
        return {
            "group_id": self.group_id,
            "alive": self._thread.is_alive(),
            "error": self._error,
            "restarted": self.restarted,
            "node_id": ray.get_runtime_context().get_node_id(),
            "streams": [s.stream_id for _, s in self.loop.slots],
            "queue_depth": {s.stream_id: s.queue_depth for _, s in self.loop.slots},
        }

    def stop(self, timeout_s: float = 10.0) -> bool:
        """Stop the loop, wait for the last delivery; True if it ended in time."""
        self._stop.set()
        self._thread.join(timeout=timeout_s)
        return not self._thread.is_alive()

    def wait(self, timeout_s: float) -> bool:
        """Block until the loop ends (finite sources) or ``timeout_s`` passes."""
        self._thread.join(timeout=timeout_s)
        return not self._thread.is_alive()

    def pid(self) -> int:
        import os

        return os.getpid()


class ControllerActor(PipelineController):
    """Ray actor body of :class:`PipelineController` (one per running pipeline)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._infos = plan_stream_infos(self.plan)
        _freeze_heap()

    def deliver_packed(self, packed: PackedDelivery) -> bool:
        """:meth:`deliver` for a worker's tick as it crossed the process boundary (:mod:`~neuraflow.runtime.wire`)."""
        return self.deliver(unpack_delivery(packed, self._infos))

    def ping(self) -> float:
        return time.time()
