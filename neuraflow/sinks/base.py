"""The sink protocol: where chunks and events are stored.

Delivery is at-least-once: after an actor restart or a retried call the same
chunk may arrive twice, so every sink must be idempotent on
``(stream_id, seq)`` -- storing a chunk twice keeps one copy.

The runtime calls ``write_batch`` once per tick with everything that arrived
for the sink (many streams mixed, each stream in ``seq`` order), never once
per chunk.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from neuraflow.chunk import Chunk, Event


@runtime_checkable
class Sink(Protocol):
    """What the runtime needs from a sink."""

    def open(self) -> None:
        """Connect and create tables/keys as needed."""

    def write_batch(self, chunks: Sequence[Chunk]) -> None:
        """Accept ``chunks`` (possibly buffered). Idempotent on ``(stream_id, seq)``."""

    def write_events(self, events: Sequence[Event]) -> None:
        """Accept events (markers, gaps, drops). Duplicates are tolerated."""

    def flush(self) -> None:
        """Make everything accepted so far durable."""

    def close(self) -> None:
        """Flush and release resources. May be skipped on a crash: unflushed data is
        then re-sent by the runtime from its last acknowledged point."""
