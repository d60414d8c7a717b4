"""Partial op-state checkpoints leave a worker from a background thread, not with its ticks.

A worker checkpoints a few streams per tick (:meth:`GroupLoop._checkpoint_due`);
a 1 s window of 64 channels pickles to ~300 kB, so a tick carrying one went
through Ray's shared-memory object store instead of the inline message of a
small call, and that put occasionally stalled the processing thread for
~60 ms (measured at 192 devices: p99 30-40 ms without checkpoints, 50-75 ms
with them). :class:`CheckpointShipper` collects the blobs and sends them in one
call every ``every_s`` from its own thread; ticks stay small.

A worker's *full* snapshot (it stops or its devices ended) travels with its
last delivery, after :meth:`CheckpointShipper.flush` has sent what was
pending, so an older partial blob never lands on top of it.

No Ray here: ``send`` is the transport (a blocking call to the controller).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from neuraflow.runtime.wire import StateBlob

log = logging.getLogger(__name__)


class CheckpointShipper:
    """Send partial :class:`StateBlob` checkpoints in batches from a background thread.

    Parameters
    ----------
    send : callable ``(blobs) -> None``
        Delivers a list of blobs to the controller and returns once it accepted them.
    every_s : float
        Seconds between two sends (blobs submitted meanwhile go together).
    max_pending : int
        Blobs held while the controller is slow; beyond this the oldest are
        dropped (counted in :attr:`dropped`): a stream's next checkpoint
        supersedes them within ``checkpoint_every_s`` anyway.
    """

    def __init__(
        self, send: Callable[[list[StateBlob]], None], *, every_s: float = 0.5, max_pending: int = 256
    ) -> None:
        self._send = send
        self.every_s = every_s
        self.max_pending = max_pending
        self.dropped = 0
        self.sent = 0
        self.last_error = ""
        self._pending: list[StateBlob] = []
        self._lock = threading.Lock()
        self._sending = threading.Lock()  # held during a send: flush() waits for it
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="checkpoint-shipper", daemon=True)
        self._thread.start()

    def submit(self, blob: StateBlob) -> None:
        """Queue a partial checkpoint (never blocks)."""
        with self._lock:
            self._pending.append(blob)
            excess = len(self._pending) - self.max_pending
            if excess > 0:
                del self._pending[:excess]
                self.dropped += excess

    def flush(self) -> None:
        """Send what is pending now, in the caller's thread, after any send in progress."""
        with self._sending:
            self._send_pending()

    def close(self) -> None:
        """Stop the thread after a last :meth:`flush`."""
        self._stop.set()
        self._thread.join(timeout=5.0)
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            with self._sending:
                self._send_pending()

    def _send_pending(self) -> None:
        with self._lock:
            blobs, self._pending = self._pending, []
        if not blobs:
            return
        try:
            self._send(blobs)
            self.sent += len(blobs)
        except Exception as exc:  # noqa: BLE001 - a lost checkpoint is superseded by the next one
            self.dropped += len(blobs)
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("checkpoint shipping failed (%s); %d blobs dropped", exc, len(blobs))


__all__ = ["CheckpointShipper"]
