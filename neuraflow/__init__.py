"""neuraflow: real-time neural signal acquisition, processing and storage on Ray.

The public surface. ``import neuraflow`` does not import Ray: only
:mod:`neuraflow.runtime` and :mod:`neuraflow.serve` do.

- :class:`Chunk`, :class:`StreamInfo`, :class:`Event` -- the data (``neuraflow.chunk``)
- :class:`Pipeline` -- the builder (``neuraflow.graph``)
- ``neuraflow.devices`` -- acquisition (synthetic, file playback, ...)
- ``neuraflow.ops`` -- pure streaming ops (filters, windows, features, inference)
- ``neuraflow.sinks`` -- storage (hot buffer, Iceberg, ...)
- ``neuraflow.sync`` -- one time base for all devices; ``sync.align`` merges streams (``Pipeline.merge``)
"""

from neuraflow import devices, ops, sinks, sync
from neuraflow.chunk import Chunk, Event, StreamInfo
from neuraflow.graph.pipeline import Pipeline, Stream
from neuraflow.graph.plan import LogicalPlan

__all__ = [
    "Chunk",
    "Event",
    "LogicalPlan",
    "Pipeline",
    "Stream",
    "StreamInfo",
    "devices",
    "ops",
    "sinks",
    "sync",
]
__version__ = "0.1.0"
