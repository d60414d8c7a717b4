"""A public test kit (like ``bytewax.testing``): build chunks, devices and sinks for tests.

Nothing here imports Ray.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from neuraflow.chunk import Chunk, StreamInfo


def random_chunking(n_samples: int, rng: np.random.Generator, *, max_size: int = 97) -> list[int]:
    """Split ``n_samples`` into random chunk sizes in ``[1, max_size]`` that sum to ``n_samples``."""
    sizes: list[int] = []
    left = n_samples
    while left > 0:
        size = int(min(left, rng.integers(1, max_size + 1)))
        sizes.append(size)
        left -= size
    return sizes


def make_info(n_channels: int, sfreq: float, *, stream_id: str = "test", unit: str = "V") -> StreamInfo:
    """A simple EEG :class:`StreamInfo` with channels ``ch0 .. ch{n-1}``."""
    return StreamInfo(
        stream_id=stream_id,
        sfreq=sfreq,
        channels=tuple(f"ch{i}" for i in range(n_channels)),
        ch_types=("eeg",) * n_channels,
        units=(unit,) * n_channels,
    )


def chunks_from_array(
    data: np.ndarray,
    info: StreamInfo,
    sizes: Sequence[int],
    *,
    t0_s: float = 1_700_000_000.0,
) -> list[Chunk]:
    """Cut ``data`` (shape ``(n_channels, n_samples)``) into consecutive chunks of ``sizes``.

    Chunk ``i`` gets ``seq=i`` and ``t0_s`` advanced by the samples before it.
    """
    if sum(sizes) != data.shape[1]:
        raise ValueError(f"chunk sizes sum to {sum(sizes)}, data has {data.shape[1]} samples")
    chunks: list[Chunk] = []
    start = 0
    for seq, size in enumerate(sizes):
        block = data[:, start : start + size]
        chunks.append(Chunk(block, t0_s + start / info.sfreq, info, seq=seq, recv_s=t0_s))
        start += size
    return chunks
