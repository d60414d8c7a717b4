"""How the Redis hot tier stores a chunk: key names, entry ids, the binary payload, the JSON fields.

Keys, for ``stream_id = "eeg-0"`` (the layout is described in :mod:`neuraflow.sinks.redis`)::

    <prefix>{eeg-0}:data | :info | :late | :events     see stream_key()
    <prefix>streams, <prefix>event_streams              Sets of stream ids

Payload of one chunk: a 48-byte little-endian header, padded to 8 bytes, then the samples
as little-endian float32 in C order, shape ``(n_channels, n_samples)``.

Examples
--------
>>> stream_key("neuraflow:", "eeg-0", "data")
'neuraflow:{eeg-0}:data'
>>> t0_ms(1.2345), t0_ms(-3.0)
(1234, 0)
>>> DATA_OFFSET
48
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

from neuraflow.chunk import Chunk, StreamInfo
from neuraflow.errors import SinkError

__all__ = [
    "DATA_OFFSET", "decode_chunk", "encode_chunk", "info_from_json", "info_json", "info_version", "meta_json",
    "stream_key", "t0_ms",
]  # fmt: skip

#: magic, version, dtype code (1 = little-endian float32), seq, t0_s, recv_s, sfreq, n_channels, n_samples
_HEADER = struct.Struct("<2sBBqdddII")
_MAGIC, _VERSION, _DTYPE_F32 = b"NF", 1, 1
_HEADER_PAD = b"\0" * (-_HEADER.size % 8)  # keep the samples 8-byte aligned in the payload
#: Byte offset of the first sample in a payload.
DATA_OFFSET = _HEADER.size + len(_HEADER_PAD)


def stream_key(prefix: str, stream_id: str, kind: str) -> str:
    """``<prefix>{<stream_id>}:<kind>``; the hash tag keeps one stream's keys on one Redis Cluster slot."""
    return f"{prefix}{{{stream_id}}}:{kind}"


def t0_ms(t0_s: float) -> int:
    """The millisecond part of an entry id for a chunk starting at ``t0_s`` (seconds since the epoch)."""
    # Stream ids are unsigned: a t0 before the epoch is clamped (the header keeps the exact value).
    return max(0, math.floor(t0_s * 1000.0))


def meta_json(meta: Mapping[str, Any]) -> str:
    """Chunk metadata as JSON (``""`` when empty); a value JSON cannot hold is stored as its text."""
    return json.dumps(dict(meta), default=str, sort_keys=True) if meta else ""


def info_json(info: StreamInfo) -> str:
    """``info`` as the JSON stored in the ``:info`` hash."""
    return json.dumps(
        {"stream_id": info.stream_id, "sfreq": info.sfreq, "channels": list(info.channels),
         "ch_types": list(info.ch_types), "units": list(info.units), "meta": dict(info.meta)},
        default=str, sort_keys=True,
    )  # fmt: skip


def info_version(doc: str) -> str:
    """The version of a stream description: 12 hex digits of the hash of its JSON ``doc``."""
    return hashlib.blake2b(doc.encode(), digest_size=6).hexdigest()


def info_from_json(doc: bytes | str) -> StreamInfo:
    """The :class:`StreamInfo` stored by :func:`info_json`."""
    d = json.loads(doc)
    return StreamInfo(d["stream_id"], d["sfreq"], d["channels"], d["ch_types"], d["units"], d["meta"] or None)


def encode_chunk(chunk: Chunk) -> bytes:
    """Header + padding + float32 samples of ``chunk`` (``DATA_OFFSET + 4 * data.size`` bytes)."""
    n_channels, n_samples = chunk.data.shape
    header = _HEADER.pack(_MAGIC, _VERSION, _DTYPE_F32, chunk.seq, chunk.t0_s, chunk.recv_s, chunk.info.sfreq,
                          n_channels, n_samples)  # fmt: skip
    return b"".join((header, _HEADER_PAD, chunk.data.astype("<f4", copy=False).tobytes()))


def decode_chunk(payload: bytes, info: StreamInfo, meta: bytes | None) -> Chunk:
    """The chunk :func:`encode_chunk` wrote (bit-exact, read-only samples over ``payload``).

    Raises
    ------
    SinkError
        ``payload`` is of an unknown format or its length does not match its shape.
    """
    magic, version, dtype, seq, t0_s, recv_s, _sfreq, n_channels, n_samples = _HEADER.unpack_from(payload)
    if magic != _MAGIC or version != _VERSION or dtype != _DTYPE_F32:
        raise SinkError(f"sinks.RedisStream: entry of {info.stream_id!r} has an unknown payload format "
                        f"(magic={magic!r}, version={version}, dtype={dtype}).")  # fmt: skip
    expected = DATA_OFFSET + 4 * n_channels * n_samples
    if len(payload) != expected:
        raise SinkError(f"sinks.RedisStream: entry seq={seq} of {info.stream_id!r} holds {len(payload)} bytes, "
                        f"expected {expected} for shape ({n_channels}, {n_samples}).")  # fmt: skip
    data = np.frombuffer(payload, "<f4", n_channels * n_samples, DATA_OFFSET).reshape(n_channels, n_samples)
    return Chunk(data, t0_s, info, seq, recv_s, json.loads(meta) if meta else None)
