"""A bounded ring buffer of chunks with an explicit backpressure policy."""

from __future__ import annotations

import threading
from collections import deque
from enum import Enum

from neuraflow.chunk import Chunk


class Backpressure(str, Enum):
    """What to do when a device's ring buffer is full.

    ``BLOCK``: stop reading the device until there is room (the device's own
    buffer, or the OS's, absorbs the delay). ``DROP_OLDEST``: evict the oldest
    chunk, count it and keep reading (latest data wins; the seq gap shows it).
    """

    BLOCK = "block"
    DROP_OLDEST = "drop_oldest"


class RingBuffer:
    """Thread-safe bounded FIFO of chunks.

    Parameters
    ----------
    capacity : int
        Maximum number of chunks held.
    policy : Backpressure
        Behaviour when full.
    """

    def __init__(self, capacity: int, policy: Backpressure) -> None:
        if capacity < 1:
            raise ValueError(f"RingBuffer: capacity={capacity} must be >= 1.")
        self.capacity = capacity
        self.policy = Backpressure(policy)
        self._items: deque[Chunk] = deque()
        self._cond = threading.Condition()
        self.dropped = 0
        self.dropped_seqs: list[int] = []

    def __len__(self) -> int:
        return len(self._items)

    def full(self) -> bool:
        return len(self._items) >= self.capacity

    def put(self, chunk: Chunk, *, timeout_s: float | None = None) -> bool:
        """Add ``chunk``; return False if the BLOCK policy timed out waiting for room."""
        with self._cond:
            if len(self._items) >= self.capacity:
                if self.policy is Backpressure.DROP_OLDEST:
                    evicted = self._items.popleft()
                    self.dropped += 1
                    self.dropped_seqs.append(evicted.seq)
                elif not self._cond.wait_for(lambda: len(self._items) < self.capacity, timeout=timeout_s):
                    return False
            self._items.append(chunk)
            return True

    def drain(self, max_items: int | None = None) -> list[Chunk]:
        """Remove and return up to ``max_items`` chunks in arrival order."""
        with self._cond:
            n = len(self._items) if max_items is None else min(max_items, len(self._items))
            items = [self._items.popleft() for _ in range(n)]
            self._cond.notify_all()
            return items

    def take_dropped(self) -> list[int]:
        """Return and forget the seqs evicted since the last call."""
        with self._cond:
            seqs, self.dropped_seqs = self.dropped_seqs, []
            return seqs
