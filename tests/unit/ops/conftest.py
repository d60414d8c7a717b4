"""Fixtures shared by the op tests."""

from __future__ import annotations

import numpy as np
import pytest

from neuraflow.testing import chunks_from_array, make_info


@pytest.fixture
def batch_streams(rng):
    """``make(sfreq, dtype=float64)``: five streams (2, 3, 1, 4 and 2 channels, 600 samples) cut two ways.

    The first arrangement gives every stream equal chunk sizes (one stacked
    ``step_batch`` call); the second mixes sizes and an empty chunk (the fallback).
    Returns a list of the two arrangements, each a list of five chunk lists.
    """

    def make(sfreq: float, dtype=np.float64) -> list[list[list]]:
        infos = [make_info(n, sfreq, stream_id=f"s{i}") for i, n in enumerate([2, 3, 1, 4, 2])]
        data = [rng.standard_normal((info.n_channels, 600)).astype(dtype, copy=False) for info in infos]
        equal, mixed = [100] * 6, [100, 37, 0, 200, 63, 200]
        return [
            [chunks_from_array(d, info, sizes) for d, info, sizes in zip(data, infos, sizes_of)]
            for sizes_of in ([equal] * 5, [equal, mixed, equal, mixed, equal])
        ]

    return make


@pytest.fixture
def eegmmidb_6ch_10s(eegmmidb_edf):
    """``(x, info)``: the first 6 channels and 10 s of the EEGMMIDB recording, in volts (160 Hz).

    ``x`` is float64 holding float32 values, what the chunks carry; ``info`` names
    the channels ``ch0 .. ch5``.
    """
    mne = pytest.importorskip("mne")
    raw = mne.io.read_raw_edf(eegmmidb_edf, preload=True, verbose="error")
    raw.pick(raw.ch_names[:6]).crop(0.0, 10.0)
    x = raw.get_data().astype(np.float32).astype(np.float64)
    return x, make_info(x.shape[0], float(raw.info["sfreq"]))
