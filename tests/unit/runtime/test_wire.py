"""The worker -> controller wire format: chunk columns, state blobs, the checkpoint store."""

from __future__ import annotations

import pickle
from dataclasses import replace

import numpy as np
import pytest

from neuraflow import Pipeline, devices, ops, sinks
from neuraflow.chunk import Chunk, Event
from neuraflow.runtime.loop import Delivery
from neuraflow.runtime.wire import (
    CheckpointStore,
    StateBlob,
    pack_chunks,
    pack_delivery,
    plan_stream_infos,
    unpack_chunks,
    unpack_delivery,
)
from neuraflow.testing import assert_chunks_identical, make_info


def chunks_of(infos, n_samples=(4, 4, 4), seq0=7) -> list[Chunk]:
    rng = np.random.default_rng(0)
    return [
        Chunk(rng.standard_normal((info.n_channels, n)).astype(np.float32), 100.0 + i, info, seq=seq0 + i,
              recv_s=200.0 + i, meta={"sample_index": 32 * i, "label": "x"})
        for i, (info, n) in enumerate(zip(infos, n_samples))
    ]


def roundtrip(columns):
    return pickle.loads(pickle.dumps(columns))


@pytest.mark.parametrize("n_samples", [(4, 4, 4), (4, 1, 9)], ids=["stacked", "ragged"])
def test_chunks_survive_the_round_trip_bit_exact(n_samples) -> None:
    infos = [make_info(3, 250.0, stream_id=f"s{i}") for i in range(3)]
    known = {info.stream_id: info for info in infos}
    chunks = chunks_of(infos, n_samples)
    columns = pack_chunks(chunks, known)
    assert isinstance(columns.data, np.ndarray) == (len(set(n_samples)) == 1)
    assert columns.infos == {}  # the receiver knows every description: none travels
    back = unpack_chunks(roundtrip(columns), known)
    assert_chunks_identical(back, chunks)
    for chunk in back:
        assert chunk.info is known[chunk.stream_id]  # shared, not copied
        assert not chunk.data.flags.writeable and chunk.data.flags.c_contiguous
        assert dict(chunk.meta) == {"sample_index": chunk.meta["sample_index"], "label": "x"}
        with pytest.raises(TypeError):
            chunk.meta["label"] = "y"  # type: ignore[index]


def test_a_description_the_receiver_lacks_travels_with_the_chunks() -> None:
    known_info = make_info(2, 100.0, stream_id="known")
    other = make_info(2, 100.0, stream_id="other")
    changed = make_info(2, 50.0, stream_id="known")  # same id, not the plan's object: sent along
    chunks = chunks_of([known_info, other, changed])
    columns = roundtrip(pack_chunks(chunks, {"known": known_info}))
    assert columns.infos == {1: other, 2: changed}
    back = unpack_chunks(columns, {"known": known_info})
    assert_chunks_identical(back, chunks)
    assert back[0].info is known_info and back[2].info == changed
    # a message naming a stream nobody described is refused, naming it
    with pytest.raises(KeyError, match="'other'"):
        unpack_chunks(replace(columns, infos={}), {"known": known_info})


def test_corrupted_columns_are_refused_with_the_stream_named() -> None:
    info = make_info(2, 100.0, stream_id="s")
    columns = pack_chunks(chunks_of([info]), {"s": info})
    wrong = make_info(3, 100.0, stream_id="s")
    with pytest.raises(ValueError, match="'s' declares 3 channels"):
        unpack_chunks(columns, {"s": wrong})


def test_delivery_round_trip_keeps_everything() -> None:
    dev = devices.Synthetic("d0", n_channels=2, sfreq=250.0, chunk_size=4)
    p = Pipeline("w")
    src = p.source("src", dev)
    src.then("w", ops.sliding_window(0.016, 0.016)).to("out", sinks.MemorySink())
    plan = p.build()
    infos = plan_stream_infos(plan)
    assert set(infos) == {"d0", "d0/w"}
    chunks = chunks_of([infos["d0/w"]] * 2, (4, 4))
    event = Event("d0", 1.0, "gap", 0.5, {"expected_seq": 3})
    delivery = Delivery("g", {"out": chunks, "empty": []}, {"live": chunks[:1]}, [event], {"d0": (9, 1.5)},
                        {"d0/w": 2}, snapshot=StateBlob.pack({"states": {("w", "d0"): np.arange(3)},
                                                              "next_seq": {}}, partial=True))
    back = unpack_delivery(pickle.loads(pickle.dumps(pack_delivery(delivery, infos))), infos)
    assert_chunks_identical(back.sinks["out"], chunks)
    assert_chunks_identical(back.exposed["live"], chunks[:1])
    assert "empty" not in back.sinks
    assert back.events == [event] and back.raw_watermarks == {"d0": (9, 1.5)}
    assert back.derived_next_seq == {"d0/w": 2}
    assert back.snapshot is not None and back.snapshot.partial and back.snapshot.streams == {"d0"}
    np.testing.assert_array_equal(back.snapshot.unpack()["states"][("w", "d0")], np.arange(3))


def test_packed_delivery_is_smaller_than_pickled_chunks() -> None:
    infos = {f"dev-{i}/classify": make_info(2, 31.25, stream_id=f"dev-{i}/classify") for i in range(128)}
    chunks = [Chunk(np.zeros((2, 1), np.float32), 1.0, info, seq=5, recv_s=2.0, meta={"sample_index": 64})
              for info in infos.values()]
    packed = len(pickle.dumps(pack_chunks(chunks, infos)))
    assert packed < len(pickle.dumps(chunks)) / 2  # the descriptions stay home


def test_checkpoint_store_keeps_the_newest_state_of_every_stream() -> None:
    store = CheckpointStore()
    assert store.snapshot("g") is None
    store.add("g", StateBlob.pack({"states": {("f", "a"): 1, ("f", "b"): 1}, "next_seq": {"a/f": 1}}))
    store.add("g", StateBlob.pack({"states": {("f", "a"): 2}, "next_seq": {"a/f": 2}}, partial=True))
    store.add("g", StateBlob.pack({"states": {("f", "b"): 3}, "next_seq": {"b/f": 3}}, partial=True))
    assert store.snapshot("g") == {"states": {("f", "a"): 2, ("f", "b"): 3}, "next_seq": {"a/f": 2, "b/f": 3}}
    # the first (full) blob is superseded for every stream it held: it is let go
    assert len(store._blobs["g"]) == 2
    store.add("g", StateBlob.pack({"states": {("f", "a"): 4}, "next_seq": {}}, partial=True))
    assert len(store._blobs["g"]) == 2
    assert store.snapshot("g")["states"] == {("f", "a"): 4, ("f", "b"): 3}
    # a full blob replaces everything of its group, and groups are independent
    store.add("h", StateBlob.pack({"states": {("f", "z"): 0}, "next_seq": {}}, partial=True))
    store.add("g", StateBlob.pack({"states": {("f", "c"): 5}, "next_seq": {}}))
    assert store.snapshot("g") == {"states": {("f", "c"): 5}, "next_seq": {}}
    assert store.snapshot("h") == {"states": {("f", "z"): 0}, "next_seq": {}}
    assert store.n_bytes("g") == len(StateBlob.pack({"states": {("f", "c"): 5}, "next_seq": {}}))
