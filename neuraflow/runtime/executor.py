"""Compile a :class:`~neuraflow.graph.plan.LogicalPlan` into Ray actors and manage it.

``Engine.start(plan)`` is the ``run()`` half of the ``bind()``/``run()`` split:
the plan says what to compute; here it becomes one controller actor (sinks,
checkpoints, metrics) and a few device-group workers that each run the whole
DAG fused and vectorised over the devices they host::

    devices ──► [group worker 0: read → fused DAG (stacked ops) → 1 call/tick] ──┐
    devices ──► [group worker 1: read → fused DAG (stacked ops) → 1 call/tick] ──┼─► controller ─► sinks
    serial  ──► [dedicated worker: same code, one device, pinned to its node] ──┘       │
                                                                                        └─► Serve queries
"""

from __future__ import annotations

import logging
import time
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from neuraflow.config import NeuraflowSettings
from neuraflow.errors import PipelineDefinitionError
from neuraflow.graph.optimize import optimize
from neuraflow.graph.plan import LogicalPlan
from neuraflow.runtime.actors import ControllerActor, DeviceGroupWorker
from neuraflow.runtime.options import loop_options, slot_options
from neuraflow.runtime.placement import partition_devices

log = logging.getLogger(__name__)

CONTROLLER_PREFIX = "neuraflow-pipeline:"


def controller_name(pipeline: str) -> str:
    return f"{CONTROLLER_PREFIX}{pipeline}"


def connect(settings: NeuraflowSettings) -> None:
    """Start a local Ray (``ray.address`` unset) or join a cluster, once per process."""
    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"namespace": settings.ray.namespace, "include_dashboard": settings.ray.dashboard}
    if settings.ray.address:
        kwargs["address"] = settings.ray.address
    else:
        # "local": always a fresh instance; without it ray.init() joins any cluster that
        # `ray start` left on this host (its address is in /tmp/ray/ray_current_cluster).
        kwargs["address"] = "local"
        if settings.ray.num_cpus is not None:
            kwargs["num_cpus"] = settings.ray.num_cpus
    ray.init(**kwargs)


def _pinning(plan: LogicalPlan, hosted: list[tuple[str, int]]) -> dict[str, Any]:
    """Placement of a worker: where its device's hardware is, else spread over the nodes.

    A device bound to hardware declares ``ray_resources`` (e.g. ``{"eeg-dongle-1": 1}``)
    naming a custom resource that only the node with the dongle offers
    (``ray start --resources='{"eeg-dongle-1": 1}'``); its dedicated worker asks for it
    (a worker hosting a merge's devices asks for all of theirs).
    """
    resources: dict[str, float] = {}
    for source, index in hosted:  # several only when a merge bundles devices: the node must offer all
        for key, amount in (getattr(plan.nodes[source].devices[index], "ray_resources", None) or {}).items():
            resources[key] = resources.get(key, 0) + amount
    if resources:
        return {"resources": resources}
    return {"scheduling_strategy": "SPREAD"}


class PipelineHandle:
    """Driver-side handle on a running pipeline (works from any process via :meth:`Engine.get`)."""

    def __init__(self, name: str, controller: ray.actor.ActorHandle, groups: dict[str, ray.actor.ActorHandle]) -> None:
        self.name = name
        self.controller = controller
        self.groups = groups

    def status(self) -> dict[str, Any]:
        return ray.get(self.controller.status.remote())

    def metrics(self) -> dict[str, Any]:
        return ray.get(self.controller.metrics.remote())

    def streams(self) -> list[dict[str, Any]]:
        return ray.get(self.controller.streams.remote())

    def latest(self, stream_id: str, seconds: float):
        return ray.get(self.controller.latest.remote(stream_id, seconds))

    def events(self, stream_id: str | None = None, since_s: float | None = None):
        return ray.get(self.controller.events.remote(stream_id, since_s))

    def call_sink(self, sink: str, method: str, *args: Any, **kwargs: Any) -> Any:
        return ray.get(self.controller.call_sink.remote(sink, method, *args, **kwargs))

    def group_status(self) -> dict[str, dict[str, Any]]:
        return {g: ray.get(a.status.remote()) for g, a in self.groups.items()}

    def wait(self, timeout_s: float) -> bool:
        """Wait until every (finite) source is exhausted and delivered; True if it finished."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.status()["state"] == "finished":
                return True
            time.sleep(0.1)
        return False

    def stop(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """Stop the workers (each hands over its last tick), flush and close sinks, free the actors."""
        refs = [a.stop.remote(timeout_s / 2) for a in self.groups.values()]
        try:
            ray.get(refs, timeout=timeout_s)
        except (ray.exceptions.RayError, TimeoutError) as exc:
            log.warning("pipeline %s: a worker did not stop cleanly: %s", self.name, exc)
        status = ray.get(self.controller.stop.remote(), timeout=timeout_s)
        for actor in self.groups.values():
            ray.kill(actor, no_restart=True)
        return status

    def destroy(self) -> None:
        """Kill the controller too (its queryable state is lost)."""
        ray.kill(self.controller, no_restart=True)


class Engine:
    """Runs pipelines on Ray according to ``settings``."""

    def __init__(self, settings: NeuraflowSettings) -> None:
        self.settings = settings
        connect(settings)
        self.namespace = settings.ray.namespace

    def start(self, plan: LogicalPlan, *, mode: str | None = None) -> PipelineHandle:
        """Create the controller and workers of ``plan`` and start streaming."""
        if self.settings.runtime.optimize:
            plan = optimize(plan)
        name = controller_name(plan.name)
        try:
            ray.get_actor(name, namespace=self.namespace)
        except ValueError:
            pass
        else:
            raise PipelineDefinitionError(f"pipeline {plan.name!r} is already running; stop it first.")
        n_cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        groups = partition_devices(plan, n_workers=n_cpus, devices_per_group=self.settings.runtime.devices_per_group)
        group_ids = [f"{plan.name}:group{i}" for i in range(len(groups))]
        lopts = loop_options(self.settings, mode)
        here = ray.get_runtime_context().get_node_id()
        controller = ray.remote(ControllerActor).options(
            name=name,
            namespace=self.namespace,
            lifetime="detached",
            num_cpus=0,
            max_concurrency=1,
            # pinned to the driver's node (the head under `ray up`): workers can move when a
            # node is lost, the controller holding sink state and checkpoints must not
            scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False),
        ).remote(plan, group_ids, lopts.mode.value)
        ray.get(controller.ping.remote())
        workers: dict[str, ray.actor.ActorHandle] = {}
        worker_cls = ray.remote(DeviceGroupWorker)
        for group_id, hosted in zip(group_ids, groups):
            workers[group_id] = worker_cls.options(
                **_pinning(plan, hosted),
                name=f"{name}:{group_id}",
                namespace=self.namespace,
                lifetime="detached",
                num_cpus=1,
                max_restarts=self.settings.runtime.max_restarts,
                max_task_retries=0,
                max_concurrency=4,
            ).remote(group_id, plan, hosted, slot_options(self.settings), lopts, name, self.namespace)
        ray.get([w.status.remote() for w in workers.values()])
        return PipelineHandle(plan.name, controller, workers)

    def get(self, pipeline: str) -> PipelineHandle:
        """Handle on a running pipeline started by any process. Raises KeyError if absent."""
        name = controller_name(pipeline)
        try:
            controller = ray.get_actor(name, namespace=self.namespace)
        except ValueError:
            raise KeyError(pipeline) from None
        group_ids = list(ray.get(controller.status.remote())["groups"])
        groups = {g: ray.get_actor(f"{name}:{g}", namespace=self.namespace) for g in group_ids}
        return PipelineHandle(pipeline, controller, groups)

    def running(self) -> list[str]:
        """Names of the pipelines whose controller is alive in this namespace."""
        from ray.util import list_named_actors

        names = list_named_actors(all_namespaces=True)
        return sorted(
            a["name"][len(CONTROLLER_PREFIX):]
            for a in names
            if a["namespace"] == self.namespace and a["name"].startswith(CONTROLLER_PREFIX) and ":group" not in a["name"]
        )
