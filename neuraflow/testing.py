"""A public test kit (like ``bytewax.testing``): build chunks, devices and sinks for tests.

Nothing here imports Ray.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from neuraflow.chunk import Chunk, StreamInfo
from neuraflow.errors import DeviceError
from neuraflow.ops.base import BoundOp, OpSpec

if TYPE_CHECKING:  # importing neuraflow.devices loads every driver
    from neuraflow.devices.base import Device


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


def random_stream(
    stream_id: str,
    n_chunks: int,
    *,
    n_channels: int = 4,
    size: int = 16,
    sfreq: float = 250.0,
    seed: int = 0,
    first_seq: int = 0,
    t0_s: float = 1_700_000_000.0,
) -> list[Chunk]:
    """``n_chunks`` consecutive chunks of ``size`` samples of seeded float32 noise, channels ``c0 .. c{n-1}``.

    Chunk ``i`` has ``seq=first_seq + i``, starts at ``t0_s + (first_seq + i) * size / sfreq``
    and has ``recv_s=t0_s + i`` (distinct per chunk, so a sink test sees it round-trip).

    Examples
    --------
    >>> [(c.seq, round(c.t0_s - 1_700_000_000.0, 3), c.data.shape) for c in random_stream("eeg", 2, first_seq=5)]
    [(5, 0.32, (4, 16)), (6, 0.384, (4, 16))]
    """
    info = StreamInfo(stream_id, sfreq, tuple(f"c{i}" for i in range(n_channels)))
    data = np.random.default_rng(seed).standard_normal((n_channels, n_chunks * size)).astype(np.float32)
    return [
        Chunk(data[:, i * size : (i + 1) * size], t0_s + (first_seq + i) * size / sfreq, info,
              seq=first_seq + i, recv_s=t0_s + i)  # fmt: skip
        for i in range(n_chunks)
    ]


def assert_chunks_identical(got: Sequence[Chunk], expected: Sequence[Chunk]) -> None:
    """Check that chunks read back from a store are the ones written, bit for bit.

    Same ``seq`` order; float32 data with the same bits (``-0.0`` and NaN payloads
    included); equal ``t0_s``, ``info`` and ``meta``; equal ``recv_s`` (NaN equals NaN).

    Raises
    ------
    AssertionError
        At the first difference.
    """
    got_seqs, want_seqs = [c.seq for c in got], [c.seq for c in expected]
    if got_seqs != want_seqs:
        raise AssertionError(f"seqs differ: got {got_seqs}, expected {want_seqs}")
    for g, e in zip(got, expected):
        where = f"chunk seq={e.seq}"
        if g.data.shape != e.data.shape or g.data.dtype != np.float32:
            raise AssertionError(f"{where}: got {g.data.dtype} {g.data.shape}, expected float32 {e.data.shape}")
        if g.data.view(np.uint32).tobytes() != e.data.view(np.uint32).tobytes():
            raise AssertionError(f"{where}: data differs (bitwise)")
        if g.t0_s != e.t0_s or g.info != e.info or dict(g.meta) != dict(e.meta):
            raise AssertionError(f"{where}: t0_s, info or meta differs: got {g!r}, expected {e!r}")
        if not (g.recv_s == e.recv_s or (np.isnan(g.recv_s) and np.isnan(e.recv_s))):
            raise AssertionError(f"{where}: recv_s={g.recv_s}, expected {e.recv_s}")


def run_batched(spec: OpSpec, streams: Sequence[Sequence[Chunk]]) -> list[list[Chunk]]:
    """Run one op over several streams at once, the way a runtime batch does; return each stream's outputs.

    Each stream's state is initialised on its first chunk, then chunk ``k`` of
    every stream goes through one ``step_batch`` call. Compare with
    :func:`~neuraflow.ops.run_offline` per stream to check a batched step.

    Parameters
    ----------
    spec : OpSpec
        The op.
    streams : sequence of sequence of Chunk
        One chunk list per stream, all of the same length.

    Examples
    --------
    >>> from neuraflow.ops import notch, run_offline
    >>> streams = [chunks_from_array(np.ones((n, 40)), make_info(n, 250.0, stream_id=f"s{n}"), [20, 20])
    ...            for n in (1, 2)]
    >>> outs = run_batched(notch(50.0), streams)
    >>> [np.allclose(o.data, w.data) for out, s in zip(outs, streams) for o, w in zip(out, run_offline(notch(50.0), s))]
    [True, True, True, True]
    """
    if len({len(s) for s in streams}) > 1:
        raise ValueError(f"run_batched: streams must have as many chunks each, got {[len(s) for s in streams]}.")
    op = BoundOp(spec)
    states = [op.init(s[0]) for s in streams]
    outputs: list[list[Chunk]] = [[] for _ in streams]
    for k in range(len(streams[0]) if streams else 0):
        states, outs = op.step_batch(states, [s[k] for s in streams])
        for out, acc in zip(outs, outputs):
            acc.extend(out)
    return outputs


def assert_resumes_after_pickle(spec: OpSpec, chunks: Sequence[Chunk], *, n_before: int | None = None) -> Any:
    """Check that a pickled mid-stream state continues exactly as the original (checkpoint/restart).

    Steps ``chunks[:n_before]``, pickles and unpickles the state, then steps the
    rest with both copies and requires the same outputs: count, data (exactly),
    ``t0_s`` and ``info``.

    Parameters
    ----------
    spec : OpSpec
        The op.
    chunks : sequence of Chunk
        One stream.
    n_before : int or None
        Chunks stepped before pickling; ``None`` for half of them.

    Returns
    -------
    state
        The state that was pickled (states are immutable: inspect it freely).

    Raises
    ------
    AssertionError
        When the copies' outputs differ.
    """
    op = BoundOp(spec)
    n_before = len(chunks) // 2 if n_before is None else n_before
    state = op.init(chunks[0])
    for chunk in chunks[:n_before]:
        state, _ = op.step(state, chunk)
    pickled, clone = state, pickle.loads(pickle.dumps(state))
    for k, chunk in enumerate(chunks[n_before:], start=n_before):
        state, out_a = op.step(state, chunk)
        clone, out_b = op.step(clone, chunk)
        if len(out_a) != len(out_b):
            raise AssertionError(f"chunk {k}: {len(out_a)} outputs, {len(out_b)} after unpickling.")
        for a, b in zip(out_a, out_b):
            np.testing.assert_array_equal(a.data, b.data, err_msg=f"chunk {k}: data differs after unpickling")
            if a.t0_s != b.t0_s or a.info != b.info:
                raise AssertionError(f"chunk {k}: t0_s or info differs after unpickling.")
    return pickled


def read_samples(device: Device, n_samples: int, *, timeout_s: float = 5.0) -> list[Chunk]:
    """Read an open device until the chunks read hold at least ``n_samples`` samples; return them.

    Polls ``device.read(0.1)``, for devices driven by a real clock, emulator or socket.

    Raises
    ------
    AssertionError
        When fewer samples arrive within ``timeout_s``.
    """
    chunks: list[Chunk] = []
    got, deadline = 0, time.monotonic() + timeout_s
    while got < n_samples:
        if time.monotonic() >= deadline:
            raise AssertionError(f"only {got} of {n_samples} samples in {timeout_s} s")
        chunk = device.read(0.1)
        if chunk is not None:
            chunks.append(chunk)
            got += chunk.n_samples
    return chunks


def read_until_error(device: Device, *, timeout_s: float = 3.0) -> DeviceError:
    """Read an open device until it raises :class:`~neuraflow.errors.DeviceError`; return that error.

    Raises
    ------
    AssertionError
        When no ``DeviceError`` comes within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            device.read(0.1)
        except DeviceError as exc:
            return exc
    raise AssertionError(f"no DeviceError within {timeout_s} s")
