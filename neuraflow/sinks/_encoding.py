"""Lossless integer coding of samples that come from an ADC (the Iceberg sink's ``"dm"`` codec).

A device with a native resolution (EDF digital values, 24-bit ADC counts)
produces ``x = counts * scale + offset``. When ``StreamInfo.meta`` carries
``scale_v_per_count`` (a float, or one per channel) and optionally ``offset_v``
(likewise), a chunk is stored as integer residuals instead of float32:

1. ``counts = rint((x - offset) / scale)`` in float64, accepted only when
   ``float32(counts * scale + offset)`` reproduces every float32 bit of ``x``;
2. a first difference along time per channel (the first sample kept);
3. minus the chunk's *reference*: the rounded mean of step 2 over channels, per
   sample. EEG channels share their reference electrode, so this removes the
   common part; the reference is stored once per chunk (the header row);
4. zigzag (small negative numbers become small positive ones).

Each channel decodes from its own residuals plus the reference, so the Iceberg
sink can store and read one channel without the others (neighbouring-channel
differences compress 10% better but tie every channel to all the ones before it).
The residuals are int32, written with Parquet BYTE_STREAM_SPLIT and zstd.
Measured on EEGMMIDB S001R06 (64 ch, 160 Hz, 32-sample chunks): 5.5x smaller
than raw float32, against 5.1x without the reference and 2.9x for float32 + zstd
(``python -m benchmarks.compression``).

Everything works on blocks of chunks at once (numpy, no per-chunk Python).

>>> scale, offset = native_scale({"scale_v_per_count": 0.5}, 2)
>>> x = np.array([[[1.0, 1.5, 2.5], [-1.0, 0.0, 0.5]]], np.float32)  # 1 chunk, 2 channels, 3 samples
>>> exact, residuals, reference = encode(x, scale, offset)
>>> exact.tolist(), residuals.tolist(), reference.tolist()
([True], [[[4, 1, 0], [3, 0, 1]]], [[0, 4, 4]])
>>> decode(residuals[0], np.repeat(reference, 2, axis=0), scale, offset).tolist()  # both channels
[[1.0, 1.5, 2.5], [-1.0, 0.0, 0.5]]
>>> decode(residuals[:, 1], reference, scale[1], offset[1]).tolist()  # channel 1 alone
[[-1.0, 0.0, 0.5]]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CODEC", "decode", "encode", "native_scale", "native_scale_from_edf"]

CODEC = "dm"  # delta along time, minus the chunk's mean over channels, zigzag; int32
_MAX_COUNT = 2**27  # |counts| bound: after the difference and the reference the residuals still fit int32


def native_scale(meta: Mapping[str, Any], n_channels: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-channel ``(scale, offset)`` from ``meta["scale_v_per_count"]`` / ``meta["offset_v"]``.

    Parameters
    ----------
    meta : Mapping
        ``StreamInfo.meta``. ``scale_v_per_count`` is a float or a sequence of
        ``n_channels`` floats (physical units per count, > 0); ``offset_v``
        (optional, default 0) a float or ``n_channels`` floats, physical units.
    n_channels : int
        Number of channels of the stream.

    Returns
    -------
    (scale, offset) : tuple of ndarray, shape (n_channels, 1), float64, or None
        ``None`` when ``meta`` has no usable scale (absent, wrong length, not
        finite or not > 0): the stream is then stored as float32.
    """
    if "scale_v_per_count" not in meta:
        return None
    try:
        scale = np.broadcast_to(np.asarray(meta["scale_v_per_count"], np.float64), (n_channels,))
        offset = np.broadcast_to(np.asarray(meta.get("offset_v", 0.0), np.float64), (n_channels,))
    except (TypeError, ValueError):  # a list of the wrong length, or not numbers
        return None
    if not (np.all(np.isfinite(scale)) and np.all(scale > 0) and np.all(np.isfinite(offset))):
        return None
    return scale.reshape(-1, 1).copy(), offset.reshape(-1, 1).copy()


def encode(data: np.ndarray, scale: np.ndarray, offset: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Residuals and reference of a block of chunks (see the module doc).

    Parameters
    ----------
    data : ndarray, shape (n_chunks, n_channels, n_samples), float32
    scale, offset : ndarray, shape (n_channels, 1), float64
        From :func:`native_scale`.

    Returns
    -------
    exact : ndarray, shape (n_chunks,), bool
        Whether each chunk is exactly representable (every sample finite, a whole
        count, within ``2**27`` counts, and not ``-0.0``). Chunks that are not must
        be stored as float32; their rows of ``residuals`` and ``reference`` are junk.
    residuals : ndarray, shape (n_chunks, n_channels, n_samples), int32
    reference : ndarray, shape (n_chunks, n_samples), int32
        Zigzag-coded, like the residuals.
    """
    n_chunks, n_channels, n_samples = data.shape
    counts = data.astype(np.float64)
    counts -= offset
    counts /= scale
    np.rint(counts, out=counts)
    ok = np.abs(counts) < _MAX_COUNT  # also catches nan and inf
    if not ok.all():
        counts[~ok] = 0.0  # those chunks are not exact anyway; keeps the int cast below defined
    back = counts * scale
    back += offset
    ok &= back.astype(np.float32).view(np.uint32) == data.view(np.uint32)  # -0.0 and off-grid values
    exact = ok.reshape(n_chunks, -1).all(axis=1)
    d = counts.astype(np.int32)  # |counts| < 2**27: int32 holds every step below
    d[..., 1:] = np.diff(d, axis=-1)
    ref = (d.sum(axis=1, dtype=np.int64) + n_channels // 2) // n_channels  # any integer works: it is stored
    d -= ref.astype(np.int32)[:, None, :]
    return exact, _zigzag(d), _zigzag(ref.astype(np.int32))


def decode(residuals: np.ndarray, reference: np.ndarray, scale: np.ndarray | float,
           offset: np.ndarray | float) -> np.ndarray:  # fmt: skip
    """Inverse of :func:`encode` for many rows (one channel of one chunk each) of one length at once.

    Parameters
    ----------
    residuals : ndarray, shape (n_rows, n_samples), int32
    reference : ndarray, shape (n_rows, n_samples), int32
        The reference of each row's chunk.
    scale, offset : ndarray, shape (n_rows, 1), float64, or float
        The scale and offset of each row's channel.

    Returns
    -------
    samples : ndarray, shape (n_rows, n_samples), float32
        Bit-exact.
    """
    steps = _unzigzag(residuals)
    steps += _unzigzag(reference)
    # int32 is enough: every partial sum is a count of the chunk (|counts| < 2**27)
    counts = np.cumsum(steps, axis=1, out=steps)
    return (counts * scale + offset).astype(np.float32)


def _zigzag(values: np.ndarray) -> np.ndarray:
    """int32 in (|values| < 2**30), int32 out."""
    return (values << 1) ^ (values >> 31)


def _unzigzag(values: np.ndarray) -> np.ndarray:
    z = values.astype(np.int32, copy=False)
    return (z >> 1) ^ -(z & 1)


def native_scale_from_edf(path: str | Path, picks: Sequence[str] | None = None) -> dict[str, Any]:
    """The native scale of an EDF/BDF recording, as ``StreamInfo.meta`` entries.

    MNE computes each channel in SI units as ``digital * cal * unit + offset * unit``;
    this returns ``scale_v_per_count = cal * unit`` and ``offset_v = offset * unit``
    per channel (in the order of ``raw.ch_names``), so a stream played back from
    the file can be stored as its digital values by :class:`~neuraflow.sinks.Iceberg`.

    Parameters
    ----------
    path : str or Path
        An ``.edf`` or ``.bdf`` file.
    picks : sequence of str or None
        Channel names, in stream order, when the stream holds a subset.

    Returns
    -------
    dict
        ``{"scale_v_per_count": list of float, "offset_v": list of float}``, one per channel.

    Raises
    ------
    ValueError
        Not an EDF/BDF file, or a name in ``picks`` is not a channel of it.

    Examples
    --------
    >>> meta = native_scale_from_edf("S001R06.edf")  # doctest: +SKIP
    >>> info = device.info.replace(meta={**device.info.meta, **meta})  # doctest: +SKIP
    """
    import mne

    path = Path(path)
    if path.suffix.lower() not in (".edf", ".bdf"):
        raise ValueError(f"native_scale_from_edf: path={str(path)!r} must be an .edf or .bdf file.")
    raw = mne.io.read_raw(path, preload=False, verbose="error")
    try:
        extras = raw._raw_extras[0]  # cal, offsets, units: one entry per channel of raw.ch_names
        scale = np.asarray(extras["cal"], np.float64) * np.asarray(extras["units"], np.float64)
        offset = np.asarray(extras["offsets"], np.float64) * np.asarray(extras["units"], np.float64)
        names = list(raw.ch_names)
    finally:
        raw.close()
    index = list(range(len(names)))
    if picks is not None:
        missing = [p for p in picks if p not in names]
        if missing:
            raise ValueError(f"native_scale_from_edf: picks {missing} are not channels of {path.name}.")
        index = [names.index(p) for p in picks]
    return {
        "scale_v_per_count": [float(scale[i]) for i in index],  # lists: meta read back from JSON compares equal
        "offset_v": [float(offset[i]) if math.isfinite(offset[i]) else 0.0 for i in index],
    }
