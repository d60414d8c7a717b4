"""Automatic tiering: move chunks hot -> warm -> cold by age, verified, crash-safe.

:class:`Tierer` is plain Python. One :meth:`Tierer.run_once` does, per stream and per
step (hot -> warm for chunks ended more than ``hot_s`` ago, then warm -> cold for more
than ``warm_s``), in batches of at most ``batch_chunks``:

1. read the old chunks from the faster tier;
2. write them to the slower tier (durable on return, idempotent on ``(stream_id, seq)``);
3. read the batch's time span back from the slower tier and compare, per contiguous seq
   run, the count and CRC-32 (:func:`~neuraflow.storage.tiers.summarize`);
4. only when they match, delete exactly those seqs from the faster tier.

A crash anywhere leaves every chunk in at least one tier: before step 4 the faster tier
still holds it, and the rerun writes it again, which the slower tier drops as a duplicate.
The query engine drops copies found in two tiers, so readers never see duplicates.

:class:`TieringActor` runs a :class:`Tierer` every ``interval_s`` in a background thread;
:func:`neuraflow.runtime.tiering.start_tiering_actor` hosts it in a detached, restartable
Ray actor. This module does not import Ray.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from neuraflow._validate import check_int, check_positive
from neuraflow.chunk import Chunk
from neuraflow.errors import PipelineDefinitionError
from neuraflow.storage.tiers import DeletableTier, Tier, TierConsistencyError, summarize

__all__ = ["MoveReport", "Tierer", "TieringActor", "TieringPolicy"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TieringPolicy:
    """When chunks move down a tier, by age ``now_s - chunk.t_end_s`` (device time).

    Parameters
    ----------
    hot_s : float
        Chunks older than this move from hot to warm (s, > 0). Keep it below the hot
        tier's own window (Redis trims older entries by itself).
    warm_s : float
        Chunks older than this move from warm to cold (s, > ``hot_s``).
    batch_chunks : int
        Most chunks moved (written, verified, deleted) as one batch.
    """

    hot_s: float
    warm_s: float
    batch_chunks: int = 5000

    def __post_init__(self) -> None:
        object.__setattr__(self, "hot_s", check_positive("storage.TieringPolicy", "hot_s", self.hot_s))
        object.__setattr__(self, "warm_s", check_positive("storage.TieringPolicy", "warm_s", self.warm_s))
        check_int("storage.TieringPolicy", "batch_chunks", self.batch_chunks)
        if self.warm_s <= self.hot_s:
            raise PipelineDefinitionError(
                f"storage.TieringPolicy: warm_s={self.warm_s!r} must be > hot_s={self.hot_s!r} "
                "(data reaches the cold tier after the warm one)."
            )


@dataclass
class MoveReport:
    """What one :meth:`Tierer.run_once` did.

    ``moved`` maps ``"hot->warm"`` / ``"warm->cold"`` to chunks moved (and deleted from the
    faster tier); ``failed`` lists ``(step, stream_id, message)`` of batches left in place.
    """

    moved: dict[str, int] = field(default_factory=lambda: {"hot->warm": 0, "warm->cold": 0})
    failed: list[tuple[str, str, str]] = field(default_factory=list)


class Tierer:
    """Moves chunks from ``hot`` to ``warm`` to ``cold`` by age (see the module docstring).

    Parameters
    ----------
    hot, warm : DeletableTier
        The tiers data moves out of.
    cold : Tier
        The last tier (never deleted from).
    policy : TieringPolicy
        Ages and batch size.
    on_phase : callable or None
        ``on_phase(phase, step, stream_id, seqs)`` is called at ``"written"`` (copy stored,
        not yet verified), ``"verified"`` and ``"deleted"``; used to observe or to inject
        faults (an exception raised there aborts the batch, as a crash would).

    Examples
    --------
    >>> policy = TieringPolicy(hot_s=60, warm_s=3600)   # doctest: +SKIP
    >>> tierer = Tierer(RedisTier(hot), TimescaleTier(warm), IcebergTier(cold), policy)   # doctest: +SKIP
    >>> tierer.run_once(time.time()).moved   # doctest: +SKIP
    {'hot->warm': 240, 'warm->cold': 0}
    """

    def __init__(self, hot: DeletableTier, warm: DeletableTier, cold: Tier, policy: TieringPolicy,
                 *, on_phase: Callable[[str, str, str, list[int]], None] | None = None) -> None:  # fmt: skip
        for name, tier, kind in (("hot", hot, DeletableTier), ("warm", warm, DeletableTier), ("cold", cold, Tier)):
            if not isinstance(tier, kind):
                raise PipelineDefinitionError(
                    f"storage.Tierer: {name}={tier!r} does not implement {kind.__name__} "
                    f"(needs {'read/write/delete' if kind is DeletableTier else 'read/write'})."
                )
        if not isinstance(policy, TieringPolicy):
            raise PipelineDefinitionError(f"storage.Tierer: policy must be a TieringPolicy, got {policy!r}.")
        self.hot, self.warm, self.cold, self.policy = hot, warm, cold, policy
        self.on_phase = on_phase

    def run_once(self, now_s: float | None = None) -> MoveReport:
        """One pass over every stream: hot -> warm, then warm -> cold.

        Parameters
        ----------
        now_s : float or None
            The reference time (s since epoch, device clock); ``None`` is ``time.time()``.

        Returns
        -------
        MoveReport
            A batch that fails verification is reported and left in the faster tier;
            any other error propagates (nothing was deleted for that batch).
        """
        now_s = time.time() if now_s is None else float(now_s)
        if not math.isfinite(now_s):
            raise PipelineDefinitionError(f"storage.Tierer.run_once: now_s={now_s!r} must be finite.")
        report = MoveReport()
        steps = (("hot->warm", self.hot, self.warm, now_s - self.policy.hot_s),
                 ("warm->cold", self.warm, self.cold, now_s - self.policy.warm_s))  # fmt: skip
        for step, src, dst, cutoff_s in steps:
            for stream_id in src.streams():
                report.moved[step] += self._move_stream(step, src, dst, stream_id, cutoff_s, report)
        return report

    def _move_stream(self, step: str, src: DeletableTier, dst: Tier, stream_id: str, cutoff_s: float,
                     report: MoveReport) -> int:  # fmt: skip
        old = [c for c in src.read(stream_id, None, cutoff_s) if c.t_end_s <= cutoff_s]
        moved = 0
        size = self.policy.batch_chunks
        for i in range(0, len(old), size):
            batch = old[i : i + size]
            try:
                moved += self._move_batch(step, src, dst, stream_id, batch)
            except TierConsistencyError as exc:
                log.error("%s", exc)
                report.failed.append((step, stream_id, str(exc)))
                break  # keep order: never move a later batch past one that failed
        return moved

    def _phase(self, phase: str, step: str, stream_id: str, seqs: list[int]) -> None:
        if self.on_phase is not None:
            self.on_phase(phase, step, stream_id, seqs)

    def _move_batch(self, step: str, src: DeletableTier, dst: Tier, stream_id: str, batch: list[Chunk]) -> int:
        seqs = [c.seq for c in batch]
        dst.write(batch)
        self._phase("written", step, stream_id, seqs)
        lo = min(c.t0_s for c in batch)
        hi = max(c.t0_s for c in batch) + 1e-3  # past the last t0 at every tier's time resolution
        wanted = set(seqs)
        back = [c for c in dst.read(stream_id, lo, hi) if c.seq in wanted]
        expected, got = summarize(batch), summarize(back)
        if expected != got:
            raise TierConsistencyError(
                f"storage.Tierer: {step} copy of {stream_id!r} seqs {seqs[0]}..{seqs[-1]} failed verification: "
                f"{len(batch)} chunks written, {len(back)} read back; ranges expected {expected[:3]}, "
                f"got {got[:3]}. Nothing deleted from the faster tier."
            )
        self._phase("verified", step, stream_id, seqs)
        src.delete(stream_id, seqs)
        self._phase("deleted", step, stream_id, seqs)
        return len(batch)


# Actor body --------------------------------------------------------------------------------
class TieringActor:
    """Runs :meth:`Tierer.run_once` every ``interval_s`` in a background thread (the body of the Ray actor).

    Parameters
    ----------
    hot, warm, cold, policy
        As for :class:`Tierer` (they are pickled into the actor).
    interval_s : float
        Pause between two passes (s, > 0).
    pause_after_write_s : float
        Sleep between writing a batch and verifying it (s, >= 0); for fault tests, to
        widen the window in which a kill lands mid-move.

    Notes
    -----
    State lives in the tiers only, so a restarted actor (``max_restarts``) just starts
    the loop again; an interrupted batch is redone, the slower tier dropping duplicates.
    """

    def __init__(self, hot: DeletableTier, warm: DeletableTier, cold: Tier, policy: TieringPolicy,
                 interval_s: float = 10.0, pause_after_write_s: float = 0.0) -> None:  # fmt: skip
        self.interval_s = check_positive("storage.TieringActor", "interval_s", interval_s)
        self.pause_after_write_s = check_positive("storage.TieringActor", "pause_after_write_s",
                                                  pause_after_write_s, allow_zero=True)  # fmt: skip
        self.tierer = Tierer(hot, warm, cold, policy, on_phase=self._on_phase)
        self._lock = threading.Lock()
        self._status: dict[str, Any] = {"phase": "idle", "passes": 0, "moved": {"hot->warm": 0, "warm->cold": 0},
                                        "failed": 0, "last_error": None}  # fmt: skip
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="neuraflow-tiering", daemon=True)
        self._thread.start()

    def _on_phase(self, phase: str, step: str, stream_id: str, seqs: list[int]) -> None:
        with self._lock:
            self._status["phase"] = f"{step}:{phase}"
        if phase == "written" and self.pause_after_write_s:
            time.sleep(self.pause_after_write_s)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                report = self.tierer.run_once()
                with self._lock:
                    for step, n in report.moved.items():
                        self._status["moved"][step] += n
                    self._status["failed"] += len(report.failed)
            except Exception as exc:  # noqa: BLE001 - keep the loop alive; the next pass retries
                log.exception("tiering pass failed")
                with self._lock:
                    self._status["last_error"] = f"{type(exc).__name__}: {exc}"
            with self._lock:
                self._status["passes"] += 1
                self._status["phase"] = "idle"
            self._stop.wait(self.interval_s)

    def status(self) -> dict[str, Any]:
        """``phase`` (``"idle"`` or ``"<step>:<phase>"``), ``passes``, ``moved`` per step, ``failed``,
        ``last_error``."""
        with self._lock:
            return {**self._status, "moved": dict(self._status["moved"])}

    def stop(self) -> None:
        """Stop after the current pass (waits for it)."""
        self._stop.set()
        self._thread.join()
