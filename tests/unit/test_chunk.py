"""Chunk: validation at construction, cheap re-stamping, trusted construction, pickling."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from neuraflow.chunk import Chunk, StreamInfo
from neuraflow.errors import StreamMismatchError


def _info(n_channels: int = 2, stream_id: str = "s") -> StreamInfo:
    return StreamInfo(stream_id, 100.0, [f"c{i}" for i in range(n_channels)])


def test_constructor_normalises_data():
    chunk = Chunk(np.arange(6, dtype=np.float64).reshape(2, 3), 1.0, _info(), meta={"k": 1})
    assert chunk.data.dtype == np.float32 and chunk.data.flags.c_contiguous and not chunk.data.flags.writeable
    with pytest.raises(TypeError):
        chunk.meta["k"] = 2  # read-only mapping


def test_replace_restamps_without_copying_and_checks_what_changed():
    chunk = Chunk(np.zeros((2, 4), np.float32), 1.0, _info(), seq=3, meta={"a": 1})
    stamped = chunk.replace(seq=7, recv_s=5.0, meta={"b": 2})
    assert stamped.data is chunk.data and stamped.seq == 7 and stamped.recv_s == 5.0 and dict(stamped.meta) == {"b": 2}
    with pytest.raises(TypeError):
        stamped.meta["b"] = 3
    assert chunk.replace(info=_info(stream_id="t")).stream_id == "t"
    with pytest.raises(StreamMismatchError, match="data has 2 channels, stream declares 3"):
        chunk.replace(info=_info(3))
    with pytest.raises(StreamMismatchError, match="must be finite"):
        chunk.replace(t0_s=math.nan)
    # a new data array goes through the full validation
    with pytest.raises(StreamMismatchError, match="must be 2-D"):
        chunk.replace(data=np.zeros(4))
    assert chunk.replace(data=np.ones((2, 1))).data.dtype == np.float32


def test_trusted_builds_the_same_chunk_without_checks():
    data = np.ones((2, 3), np.float32)
    data.flags.writeable = False
    checked = Chunk(data, 2.0, _info(), 4, 9.0)
    trusted = Chunk.trusted(data, 2.0, _info(), 4, 9.0)
    assert trusted == checked
    assert trusted.t_end_s == checked.t_end_s and dict(trusted.meta) == {}
    with pytest.raises(AttributeError):
        trusted.seq = 5  # still frozen


def test_pickle_round_trip_is_read_only_and_equal():
    chunk = Chunk(np.arange(6, dtype=np.float32).reshape(2, 3), 1.5, _info(), seq=2, recv_s=3.0, meta={"m": "x"})
    back = pickle.loads(pickle.dumps(chunk))
    np.testing.assert_array_equal(back.data, chunk.data)
    assert not back.data.flags.writeable and back.data.dtype == np.float32
    assert (back.t0_s, back.seq, back.recv_s, dict(back.meta), back.info) == (1.5, 2, 3.0, {"m": "x"}, chunk.info)
    with pytest.raises(TypeError):
        back.meta["m"] = "y"
