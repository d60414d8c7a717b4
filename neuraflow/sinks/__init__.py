"""Where chunks and events are stored.

- :class:`HotBuffer` -- the last N seconds of every stream in memory, queried live.
- :class:`Iceberg` -- the cold tier: Apache Iceberg tables (SQL catalog, file or S3 warehouse);
  :func:`read_chunks` / :func:`read_events` read them back.
- :class:`LSLOutlet` -- publishes streams and events on the Lab Streaming Layer.
- :class:`MemorySink` -- keeps everything in memory, for tests.
- :class:`RedisStream` -- the hot tier: one Redis Stream per data stream, trimmed by device time.
- :class:`Timescale` -- the warm tier: TimescaleDB hypertables, or native PostgreSQL partitions.

Every sink follows the :class:`Sink` protocol and is idempotent on ``(stream_id, seq)``.
"""

from neuraflow.sinks.base import Sink
from neuraflow.sinks.iceberg import Iceberg, read_chunks, read_events
from neuraflow.sinks.lsl_outlet import LSLOutlet
from neuraflow.sinks.memory import HotBuffer, MemorySink
from neuraflow.sinks.redis import RedisStream
from neuraflow.sinks.timescale import Timescale, timescale_available

__all__ = [
    "HotBuffer",
    "Iceberg",
    "LSLOutlet",
    "MemorySink",
    "RedisStream",
    "Sink",
    "Timescale",
    "read_chunks",
    "read_events",
    "timescale_available",
]
