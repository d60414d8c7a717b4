"""How devices are spread over worker actors (pure function, no Ray)."""

from __future__ import annotations

import math

from neuraflow.graph.plan import LogicalPlan


def partition_devices(
    plan: LogicalPlan, *, n_workers: int, devices_per_group: int | None = None
) -> list[list[tuple[str, int]]]:
    """Assign every device of ``plan`` to a worker.

    Devices that block on I/O (``device.blocking``: serial ports, radios,
    sockets) or that name the node of their hardware (``device.ray_resources``)
    get a worker of their own, so a slow read never stalls other streams and
    the actor can be pinned where the hardware is. Pollable
    devices are dealt round-robin over ``n_workers`` groups (one per core is
    what measured best), or in groups of ``devices_per_group`` when given.

    Returns
    -------
    list of list of (source_name, device_index)
        One list per worker, none empty.
    """
    dedicated: list[list[tuple[str, int]]] = []
    shared: list[tuple[str, int]] = []
    for source in plan.sources():
        for index, device in enumerate(source.devices):
            if getattr(device, "blocking", False) or getattr(device, "ray_resources", None):
                dedicated.append([(source.name, index)])
            else:
                shared.append((source.name, index))
    if not shared:
        return dedicated
    if devices_per_group is not None:
        n_groups = math.ceil(len(shared) / devices_per_group)
    else:
        n_groups = max(1, min(n_workers, len(shared)))
    groups: list[list[tuple[str, int]]] = [[] for _ in range(n_groups)]
    if devices_per_group is not None:
        for i, item in enumerate(shared):
            groups[i // devices_per_group].append(item)
    else:
        for i, item in enumerate(shared):
            groups[i % n_groups].append(item)
    return dedicated + groups
