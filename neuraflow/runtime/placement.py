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
    The devices feeding one merge (``Pipeline.merge``), and devices with the same
    ``colocate`` key (streams of one headband), form a bundle that is placed as a
    unit, on a worker of its own if any member needs one.

    Returns
    -------
    list of list of (source_name, device_index)
        One list per worker, none empty.
    """
    dedicated: list[list[tuple[str, int]]] = []
    shared: list[list[tuple[str, int]]] = []
    for bundle in _bundles(plan):
        devices = [plan.nodes[source].devices[index] for source, index in bundle]
        if any(getattr(d, "blocking", False) or getattr(d, "ray_resources", None) for d in devices):
            dedicated.append(bundle)
        else:
            shared.append(bundle)
    if not shared:
        return dedicated
    if devices_per_group is not None:
        groups: list[list[tuple[str, int]]] = [[]]
        for bundle in shared:
            if groups[-1] and len(groups[-1]) + len(bundle) > devices_per_group:
                groups.append([])
            groups[-1].extend(bundle)
        return dedicated + groups
    n_groups = max(1, min(n_workers, len(shared)))
    groups = [[] for _ in range(n_groups)]
    for i, bundle in enumerate(shared):
        groups[i % n_groups].extend(bundle)
    return dedicated + groups


def _bundles(plan: LogicalPlan) -> list[list[tuple[str, int]]]:
    """Devices that must share a worker (merge inputs, equal ``colocate`` keys) as bundles, else singletons."""
    owner: dict[tuple[str, int], int] = {}
    bundles: list[list[tuple[str, int]]] = []
    by_key: dict[str, list[tuple[str, int]]] = {}
    for source in plan.sources():
        for index, device in enumerate(source.devices):
            owner[(source.name, index)] = len(bundles)
            bundles.append([(source.name, index)])
            key = getattr(device, "colocate", None)
            if key:
                by_key.setdefault(key, []).append((source.name, index))
    together = [plan.upstream_devices(m.name) for m in plan.merges()] + list(by_key.values())
    for members in together:
        target = owner[members[0]]
        for item in members[1:]:
            current = owner[item]
            if current == target:
                continue
            for moved in bundles[current]:
                owner[moved] = target
            bundles[target].extend(bundles[current])
            bundles[current] = []
    order = {item: i for i, item in enumerate(owner)}
    return [sorted(b, key=order.__getitem__) for b in bundles if b]
