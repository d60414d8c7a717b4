"""Redis hot tier without a server: payload round trip, key names, stream-info versions."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from neuraflow.chunk import Chunk, StreamInfo
from neuraflow.errors import SinkError
from neuraflow.sinks._redis_codec import DATA_OFFSET, decode_chunk, encode_chunk, info_from_json, info_json, stream_key
from neuraflow.sinks._redis_writer import RedisWriter


def _chunk(seq: int = 3, info: StreamInfo | None = None) -> Chunk:
    info = info or StreamInfo("eeg-0", 250.0, ("Cz", "Pz"), meta={"scale": [1.0, 2.0]})
    data = np.arange(2 * 5, dtype=np.float32).reshape(2, 5) / 7.0
    return Chunk(data, 1_700_000_000.123, info, seq=seq, recv_s=1_700_000_000.2)


def test_payload_round_trip_is_bit_exact():
    chunk = _chunk()
    payload = encode_chunk(chunk)
    assert len(payload) == DATA_OFFSET + 4 * chunk.data.size
    back = decode_chunk(payload, chunk.info, b'{"k": 1}')
    np.testing.assert_array_equal(back.data, chunk.data)
    assert (back.t0_s, back.seq, back.recv_s, dict(back.meta)) == (chunk.t0_s, 3, chunk.recv_s, {"k": 1})


def test_truncated_payload_is_refused():
    chunk = _chunk()
    with pytest.raises(SinkError, match="expected"):
        decode_chunk(encode_chunk(chunk)[:-4], chunk.info, None)


def test_info_json_round_trip_and_keys():
    info = _chunk().info
    assert info_from_json(info_json(info)) == info
    assert stream_key("p:", "eeg-0", "late") == "p:{eeg-0}:late"


def test_equal_stream_info_objects_share_one_version():
    writer = RedisWriter(lambda: None, url="redis://x", key_prefix="p:", window_s=10.0, max_buffer_chunks=10,
                         on_full="raise")  # fmt: skip
    first = writer._entry(_chunk(0))
    unpickled = pickle.loads(pickle.dumps(_chunk(1)))  # a new, equal StreamInfo object
    second = writer._entry(unpickled)
    changed = writer._entry(_chunk(2, StreamInfo("eeg-0", 500.0, ("Cz", "Pz"))))
    assert first.version == second.version != changed.version
    assert set(writer._info_json) == {("eeg-0", first.version), ("eeg-0", changed.version)}


def test_negative_seq_is_refused():
    writer = RedisWriter(lambda: None, url="redis://x", key_prefix="p:", window_s=10.0, max_buffer_chunks=10,
                         on_full="raise")  # fmt: skip
    with pytest.raises(SinkError, match="seq=-1"):
        writer._entry(_chunk(-1))
