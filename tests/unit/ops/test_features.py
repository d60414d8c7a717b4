"""Log band power equals a scipy.signal.periodogram reference."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import signal

from neuraflow.chunk import Chunk
from neuraflow.errors import PipelineDefinitionError
from neuraflow.ops import BoundOp, log_band_power, run_offline, sliding_window
from neuraflow.testing import chunks_from_array, make_info

SFREQ = 250.0
BANDS = {"theta": (4.0, 8.0), "alpha": (8.0, 13.0), "beta": (13.0, 30.0), "gamma": (30.0, 45.0)}


def _reference(x, sfreq, bands, relative=False):
    freqs, psd = signal.periodogram(x, fs=sfreq, window="hann", scaling="density", axis=-1)
    out = []
    for lo, hi in bands.values():
        mask = (freqs >= lo) & (freqs < hi)
        if relative:
            out.append(psd[..., mask].sum(-1) / psd.sum(-1))
        else:
            out.append(psd[..., mask].mean(-1))
    return np.log10(np.stack(out, axis=-1))  # (n_channels, n_bands)


def _window_chunk(x, sfreq=SFREQ, *, hop_s=0.25, t0_s=100.0):
    info = make_info(x.shape[0], sfreq)
    info = info.replace(meta={"window_s": x.shape[1] / sfreq, "hop_s": hop_s})
    return Chunk(x, t0_s, info, seq=7)


@pytest.mark.parametrize("freq, band", [(6.0, "theta"), (10.0, "alpha"), (20.0, "beta"), (40.0, "gamma")])
def test_pure_sine_lands_in_its_band(freq, band):
    t = np.arange(250) / SFREQ
    x = np.sin(2 * np.pi * freq * t)[None, :]
    (out,) = run_offline(log_band_power(BANDS), [_window_chunk(x)])
    values = dict(zip(out.channels, out.data[:, 0]))
    assert max(values, key=values.get) == f"ch0:{band}"


@pytest.mark.parametrize("n_win", [250, 251, 64])
@pytest.mark.parametrize("relative", [False, True])
def test_equals_periodogram_reference(n_win, relative, rng):
    x = (20e-6 * rng.standard_normal((5, n_win)) + 1e-5).astype(np.float32)
    (out,) = run_offline(log_band_power(BANDS, relative=relative), [_window_chunk(x)])
    want = _reference(x.astype(np.float64), SFREQ, BANDS, relative)
    assert out.data.shape == (5 * 4, 1)
    assert_allclose(out.data[:, 0], want.ravel(), rtol=1e-5)


def test_output_stream_description(rng):
    x = rng.standard_normal((2, 250)).astype(np.float32)
    chunk = _window_chunk(x, hop_s=0.25, t0_s=100.0)
    spec = log_band_power({"mu": (8.0, 12.0), "beta": (13.0, 30.0)})
    (out,) = run_offline(spec, [chunk])
    assert out.channels == ("ch0:mu", "ch0:beta", "ch1:mu", "ch1:beta")
    assert set(out.info.ch_types) == {"feature"}
    assert out.info.units == ("log10(V^2/Hz)",) * 4
    assert out.sfreq == 4.0
    assert out.t0_s == pytest.approx(chunk.t_end_s)
    assert out.seq == 7
    inferred = spec.infer_info(chunk.info)
    assert inferred.channels == out.channels and inferred.sfreq == out.sfreq and inferred.units == out.info.units
    # without a hop (not after a window op) the input rate is kept
    assert spec.infer_info(make_info(2, SFREQ)).sfreq == SFREQ
    assert log_band_power({"a": (1.0, 2.0)}, relative=True).infer_info(make_info(1, SFREQ)).units == ("log10(ratio)",)


def test_after_sliding_window(rng):
    x = rng.standard_normal((3, 1000)).astype(np.float32)
    chunks = chunks_from_array(x, make_info(3, SFREQ), [333, 333, 334])
    windows = run_offline(sliding_window(1.0, 0.5), chunks)
    feats = run_offline(log_band_power(BANDS), windows)
    assert len(feats) == len(windows) == 7
    for w, f in zip(windows, feats):
        assert_allclose(f.data[:, 0], _reference(w.data.astype(np.float64), SFREQ, BANDS).ravel(), rtol=1e-5)
        assert f.sfreq == 2.0


def test_step_batch_equals_single_and_uses_one_fft(monkeypatch, rng):
    spec = log_band_power(BANDS)
    chunks = [_window_chunk(rng.standard_normal((3, 250)).astype(np.float32)) for _ in range(6)]
    chunks.append(_window_chunk(rng.standard_normal((3, 125)).astype(np.float32)))  # other shape
    chunks.append(_window_chunk(np.zeros((3, 0), np.float32)))  # empty
    single = [spec.step(spec.init(c), c)[1] for c in chunks]
    calls = []
    from scipy import fft as scipy_fft

    rfft = scipy_fft.rfft
    monkeypatch.setattr(scipy_fft, "rfft", lambda a, *args, **kw: calls.append(a.shape) or rfft(a, *args, **kw))
    states, batched = BoundOp(spec).step_batch([spec.init(c) for c in chunks], chunks)
    assert states == [spec.init(c) for c in chunks]
    assert sorted(calls) == sorted([(6, 3, 250), (1, 3, 125)])
    assert batched[-1] == [] and single[-1] == []
    for got, want in zip(batched[:-1], single[:-1]):
        assert_allclose(got[0].data, want[0].data, rtol=1e-6)
        assert got[0].t0_s == want[0].t0_s and got[0].channels == want[0].channels


def test_nyquist_and_resolution_checks():
    spec = log_band_power({"high": (100.0, 200.0)})
    with pytest.raises(ValueError, match=r"upper edge 200.0 Hz must not exceed Nyquist \(125.0 Hz at sfreq=250.0\)"):
        spec.infer_info(make_info(1, SFREQ))
    narrow = log_band_power({"narrow": (10.1, 10.2)})
    info = make_info(1, SFREQ).replace(meta={"window_s": 1.0, "hop_s": 0.5})
    with pytest.raises(ValueError, match="contains no frequency bin of a 1.0 s window"):
        narrow.infer_info(info)


def test_empty_band_gives_nan_without_warning():
    spec = log_band_power({"narrow": (10.1, 10.2)})
    with np.errstate(all="raise"):
        chunk = Chunk(np.ones((1, 8), np.float32), 0.0, make_info(1, SFREQ))
        _, (out,) = spec.step(spec.init(chunk), chunk)
    assert np.isnan(out.data).all()


@pytest.mark.parametrize(
    ("bands", "message"),
    [
        ({}, "ops.log_band_power: bands must be a non-empty mapping"),
        ({"a": (8.0, 4.0)}, r"band 'a'=\(8.0, 4.0\) must satisfy 0 <= lo < hi"),
        ({"a": (-1.0, 4.0)}, "must satisfy 0 <= lo < hi"),
        ({"a": (1.0,)}, "must be a pair"),
        ({"a:b": (1.0, 2.0)}, "without ':'"),
        ({3: (1.0, 2.0)}, "band name 3"),
        ([("a", (1.0, 2.0))], "non-empty mapping"),
    ],
)
def test_bad_bands(bands, message):
    with pytest.raises(PipelineDefinitionError, match=message):
        log_band_power(bands)


def test_relative_must_be_bool():
    with pytest.raises(PipelineDefinitionError, match="relative='yes'"):
        log_band_power(BANDS, relative="yes")
