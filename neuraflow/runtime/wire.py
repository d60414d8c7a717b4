"""How one tick of a worker travels to the controller: chunks as columns, op states as one blob.

A tick of a worker hosting a hundred devices hands the controller a hundred
small chunks (two class probabilities each) and, spread over the ticks, the
op states of its streams (a 1 s window of 64 channels is ~300 kB). Pickled as
objects, every chunk carried its :class:`~neuraflow.chunk.StreamInfo` (channel
names, types, units), every array was a separate pickle buffer, and every
state array was rebuilt in the controller only to be kept: that serialisation
cost more CPU than the tick's numerical work (measured: 128 devices, ~4 ms per
delivery round trip).

Here the chunks of one sink are sent as columns (stream ids, ``seq``, times,
metadata, and one stacked data array when the shapes agree) without their
stream descriptions, which both ends know from the plan; op states are
pickled once, in the worker, into a :class:`StateBlob` that the controller
stores unopened and returns to a restarted worker.

No Ray here: the same functions run in tests and in the actors.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from neuraflow.chunk import Chunk, StreamInfo, _frozen
from neuraflow.graph.plan import LogicalPlan

if TYPE_CHECKING:  # loop imports this module
    from neuraflow.runtime.loop import Delivery


def plan_stream_infos(plan: LogicalPlan) -> dict[str, StreamInfo]:
    """Every stream of ``plan`` (sources, steps, merges) by stream id: what both ends of a delivery know."""
    return {info.stream_id: info for infos in plan.stream_infos.values() for info in infos}


@dataclass(frozen=True)
class ChunkColumns:
    """A list of chunks as columns, without the stream descriptions the receiver already has.

    ``data`` is one ``(n_chunks, n_channels, n_samples)`` float32 array when every
    chunk has the same shape (the usual tick: one output per stream), else a list
    of the chunks' own arrays. ``infos`` holds, by position, only the descriptions
    that were not the plan's (the receiver cannot look those up).
    """

    stream_ids: list[str]
    seq: np.ndarray  # (n,) int64
    t0_s: np.ndarray  # (n,) float64, device time of each chunk's first sample
    recv_s: np.ndarray  # (n,) float64
    meta: list[dict[str, Any]]
    data: np.ndarray | list[np.ndarray]
    infos: dict[int, StreamInfo] = field(default_factory=dict)


def pack_chunks(chunks: Sequence[Chunk], known: Mapping[str, StreamInfo]) -> ChunkColumns:
    """Columns of ``chunks``; a chunk whose ``info`` is not ``known``'s object travels with it."""
    n = len(chunks)
    infos = {i: c.info for i, c in enumerate(chunks) if known.get(c.info.stream_id) is not c.info}
    shapes = {c.data.shape for c in chunks}
    data: np.ndarray | list[np.ndarray]
    if len(shapes) == 1:
        data = np.stack([c.data for c in chunks])
    else:
        data = [c.data for c in chunks]
    return ChunkColumns(
        stream_ids=[c.info.stream_id for c in chunks],
        seq=np.fromiter((c.seq for c in chunks), dtype=np.int64, count=n),
        t0_s=np.fromiter((c.t0_s for c in chunks), dtype=np.float64, count=n),
        recv_s=np.fromiter((c.recv_s for c in chunks), dtype=np.float64, count=n),
        meta=[dict(c.meta) if c.meta else {} for c in chunks],
        data=data,
        infos=infos,
    )


def unpack_chunks(columns: ChunkColumns, known: Mapping[str, StreamInfo]) -> list[Chunk]:
    """The chunks :func:`pack_chunks` packed, sharing the receiver's ``known`` stream descriptions.

    The arrays were valid chunks when packed, so the chunks are rebuilt with
    :meth:`Chunk.trusted` after the checks that a corrupted message would fail
    (dtype, rank, channel count against the description).
    """
    data = columns.data
    if isinstance(data, np.ndarray):
        if data.dtype != np.float32 or data.ndim != 3 or not data.flags.c_contiguous:
            raise ValueError(f"chunk columns: data must be a C-contiguous float32 (n, ch, samples) array, "
                             f"got {data.dtype} {data.shape}.")
        data.flags.writeable = False  # each chunk's row is a read-only, contiguous view
        arrays: Sequence[np.ndarray] = data
    else:
        arrays = [_read_only(a) for a in data]
    if not (len(arrays) == len(columns.stream_ids) == len(columns.seq) == len(columns.meta)):
        raise ValueError(f"chunk columns: {len(columns.stream_ids)} stream ids for {len(arrays)} arrays.")
    out: list[Chunk] = []
    for i, stream_id in enumerate(columns.stream_ids):
        info = columns.infos.get(i) or known.get(stream_id)
        if info is None:
            raise KeyError(f"chunk columns: stream {stream_id!r} is neither in the plan nor described in the message.")
        array = arrays[i]
        if array.ndim != 2 or array.shape[0] != info.n_channels:
            raise ValueError(f"chunk columns: stream {stream_id!r} declares {info.n_channels} channels, "
                             f"data has shape {array.shape}.")
        meta = columns.meta[i]
        out.append(Chunk.trusted(array, float(columns.t0_s[i]), info, int(columns.seq[i]),
                                 float(columns.recv_s[i]), _frozen(meta)))
    return out


def _read_only(array: np.ndarray) -> np.ndarray:
    if array.dtype != np.float32 or not array.flags.c_contiguous:
        array = np.ascontiguousarray(array, dtype=np.float32)
    array.flags.writeable = False
    return array


@dataclass(frozen=True)
class StateBlob:
    """Op states of some source streams, pickled once in the worker.

    ``streams`` names the source stream ids whose states the blob holds (``"*"``:
    merge states); ``partial`` says whether it holds only some of the worker's
    streams (checkpoints spread over ticks) or all of them. The controller
    stores blobs without opening them; :meth:`unpack` gives back the snapshot
    dict (``{"states": ..., "next_seq": ...}``) of
    :meth:`~neuraflow.runtime.fused.FusedGraph.snapshot`.
    """

    streams: frozenset[str]
    payload: bytes
    partial: bool = False

    @classmethod
    def pack(cls, snapshot: Mapping[str, Any], *, partial: bool = False) -> StateBlob:
        streams = frozenset(key[1] for key in snapshot.get("states", {}))
        return cls(streams, pickle.dumps(dict(snapshot), protocol=pickle.HIGHEST_PROTOCOL), partial)

    def unpack(self) -> dict[str, Any]:
        return pickle.loads(self.payload)

    def __len__(self) -> int:
        return len(self.payload)


class CheckpointStore:
    """The latest op-state blobs of each worker group (held by the controller).

    A full blob replaces everything stored for its group; a partial one
    supersedes older blobs for the streams it holds, and a blob no stream points
    to any more is let go. :meth:`snapshot` merges what is kept, oldest first,
    into one snapshot dict.
    """

    def __init__(self) -> None:
        self._blobs: dict[str, dict[int, StateBlob]] = {}  # group -> arrival number -> blob
        self._owner: dict[str, dict[str, int]] = {}  # group -> stream -> arrival number of its latest blob
        self._arrivals = 0

    def add(self, group_id: str, blob: StateBlob) -> None:
        self._arrivals += 1
        number = self._arrivals
        if not blob.partial:
            self._blobs[group_id] = {number: blob}
            self._owner[group_id] = dict.fromkeys(blob.streams, number)
            return
        blobs = self._blobs.setdefault(group_id, {})
        owner = self._owner.setdefault(group_id, {})
        superseded = {owner[s] for s in blob.streams if s in owner}
        blobs[number] = blob
        for stream in blob.streams:
            owner[stream] = number
        live = set(owner.values())
        for old in superseded - live:
            del blobs[old]
        if not blob.streams:  # no states, only derived counters: keep the newest such blob alone
            for old in [k for k, b in blobs.items() if not b.streams and k != number]:
                del blobs[old]

    def snapshot(self, group_id: str) -> dict[str, Any] | None:
        """The merged snapshot of ``group_id`` (None if it never sent one)."""
        blobs = self._blobs.get(group_id)
        if not blobs:
            return None
        merged: dict[str, Any] = {"states": {}, "next_seq": {}}
        for number in sorted(blobs):
            part = blobs[number].unpack()
            merged["states"].update(part.get("states", {}))
            merged["next_seq"].update(part.get("next_seq", {}))
        return merged

    def n_bytes(self, group_id: str) -> int:
        return sum(len(b) for b in self._blobs.get(group_id, {}).values())


@dataclass(frozen=True)
class PackedDelivery:
    """A :class:`~neuraflow.runtime.loop.Delivery` as it crosses the process boundary:
    its chunk lists as :class:`ChunkColumns`, everything else as is."""

    delivery: Delivery  # with empty ``sinks`` and ``exposed``
    sinks: dict[str, ChunkColumns]
    exposed: dict[str, ChunkColumns]


def pack_delivery(delivery: Delivery, known: Mapping[str, StreamInfo]) -> PackedDelivery:
    """What a worker sends for ``delivery`` (see :func:`unpack_delivery`)."""
    return PackedDelivery(
        delivery=replace(delivery, sinks={}, exposed={}),
        sinks={name: pack_chunks(chunks, known) for name, chunks in delivery.sinks.items() if chunks},
        exposed={name: pack_chunks(chunks, known) for name, chunks in delivery.exposed.items() if chunks},
    )


def unpack_delivery(packed: PackedDelivery, known: Mapping[str, StreamInfo]) -> Delivery:
    """The delivery a worker packed, its chunks sharing ``known`` stream descriptions."""
    return replace(
        packed.delivery,
        sinks={name: unpack_chunks(cols, known) for name, cols in packed.sinks.items()},
        exposed={name: unpack_chunks(cols, known) for name, cols in packed.exposed.items()},
    )


__all__ = [
    "CheckpointStore",
    "ChunkColumns",
    "PackedDelivery",
    "StateBlob",
    "pack_chunks",
    "pack_delivery",
    "plan_stream_infos",
    "unpack_chunks",
    "unpack_delivery",
]
