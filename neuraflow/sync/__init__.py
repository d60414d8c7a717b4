"""Multi-device synchronisation: one time base for every device, and one grid for every stream.

- :class:`ClockModel` -- device sample index -> host time, fitted online on the
  lower envelope of arrival times (drift and offset; robust to jitter and bursts)
- :func:`dejitter` -- the pipeline step that rewrites ``Chunk.t0_s`` from a :class:`ClockModel`
- :class:`OffsetModel` / :func:`fit_offsets` -- LSL clock offsets ``(time, offset)`` -> fitted ``offset(t)``
- :func:`align` / :class:`Aligner` / :func:`align_chunks` -- merge streams of different
  rates onto one epoch-aligned grid (linear, nearest or sample-and-hold); in a pipeline
  through ``Pipeline.merge(name, sync.align(...), *streams)``

Nothing here imports Ray.
"""

from neuraflow.sync.align import AlignSpec, AlignState, Aligner, align, align_chunks
from neuraflow.sync.clock import ClockModel, DejitterState, OffsetModel, dejitter, fit_offsets

__all__ = [
    "AlignSpec",
    "AlignState",
    "Aligner",
    "ClockModel",
    "DejitterState",
    "OffsetModel",
    "align",
    "align_chunks",
    "dejitter",
    "fit_offsets",
]
