"""The tiering Ray actor: :func:`start_tiering_actor` / :func:`stop_tiering_actor`.

The work itself (:class:`~neuraflow.storage.tiering.Tierer` in the thread loop of
:class:`~neuraflow.storage.tiering.TieringActor`) is plain Python in :mod:`neuraflow.storage`;
this module only hosts it in a detached, restartable actor.
"""

from __future__ import annotations

from neuraflow.errors import PipelineDefinitionError
from neuraflow.storage.tiering import TieringActor, TieringPolicy
from neuraflow.storage.tiers import DeletableTier, Tier

__all__ = ["start_tiering_actor", "stop_tiering_actor"]


def start_tiering_actor(hot: DeletableTier, warm: DeletableTier, cold: Tier, policy: TieringPolicy, *,
                        name: str = "neuraflow:tiering", namespace: str = "neuraflow", interval_s: float = 10.0,
                        max_restarts: int = -1, pause_after_write_s: float = 0.0):  # fmt: skip
    """Create a detached, restartable :class:`~neuraflow.storage.tiering.TieringActor`; returns its Ray actor handle.

    Raises
    ------
    PipelineDefinitionError
        An actor named ``name`` already runs in ``namespace``.
    """
    import ray

    try:
        ray.get_actor(name, namespace=namespace)
    except ValueError:
        pass
    else:
        raise PipelineDefinitionError(f"storage.start_tiering_actor: an actor named {name!r} already runs; "
                                      "kill it first or pick another name.")  # fmt: skip
    handle = ray.remote(TieringActor).options(
        name=name, namespace=namespace, lifetime="detached", num_cpus=0, max_restarts=max_restarts,
        max_task_retries=-1, max_concurrency=2,
    ).remote(hot, warm, cold, policy, interval_s, pause_after_write_s)  # fmt: skip
    ray.get(handle.status.remote())
    return handle


def stop_tiering_actor(handle) -> None:
    """Kill a tiering actor started by :func:`start_tiering_actor` (no restart)."""
    import ray

    ray.kill(handle, no_restart=True)
