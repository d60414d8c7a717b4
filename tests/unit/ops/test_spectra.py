"""Spectral window features equal scipy / MNE references."""

from __future__ import annotations

import mne
import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import signal

from neuraflow.chunk import Chunk
from neuraflow.errors import PipelineDefinitionError, StreamMismatchError
from neuraflow.ops import (BoundOp, band_power, morlet_power, multitaper_psd, peak_frequency, run_offline,
                           sliding_window, spectral_edge, welch_psd)
from neuraflow.testing import chunks_from_array, make_info

SFREQ = 250.0


def _win(x, sfreq=SFREQ, hop_s=0.25):
    info = make_info(x.shape[0], sfreq).replace(meta={"window_s": x.shape[1] / sfreq, "hop_s": hop_s})
    return Chunk(np.asarray(x, np.float32), 100.0, info, seq=3)


def _one(spec, chunk):
    _, (out,) = spec.step(spec.init(chunk), chunk)
    return out


@pytest.fixture(scope="module")
def eeg(eegmmidb_edf):
    raw = mne.io.read_raw_edf(eegmmidb_edf, preload=True, verbose=False)
    raw.pick(["C3..", "Cz..", "C4..", "Pz.."])
    return raw.get_data()[:, 1600:2400].astype(np.float32).astype(np.float64), raw.info["sfreq"]


@pytest.mark.parametrize("n", [500, 100])
def test_welch_psd_equals_scipy(n, rng):
    x = rng.standard_normal((3, n)).astype(np.float32)
    out = _one(welch_psd(0.5, fmax=60.0), _win(x))
    nperseg = 125
    f, want = signal.welch(x.astype(np.float64), SFREQ, nperseg=min(nperseg, n), nfft=nperseg)
    keep = f <= 60.0
    assert_allclose(out.data[:, 0], want[:, keep].ravel(), rtol=1e-5)
    assert out.channels[:2] == ("ch0:0.00Hz", "ch0:2.00Hz") and out.info.units[0] == "V^2/Hz"
    assert out.sfreq == 4.0 and out.t0_s == pytest.approx(100.0 + n / SFREQ) and out.seq == 3


def test_multitaper_psd_equals_mne(eeg):
    x, sf = eeg
    out = _one(multitaper_psd(x.shape[1] / sf, nw=3.0), _win(x, sf))
    want, _ = mne.time_frequency.psd_array_multitaper(x, sf, bandwidth=2 * 3.0 * sf / x.shape[1],
                                                      normalization="full", verbose=False)
    assert_allclose(out.data[:, 0], want.ravel(), rtol=1e-4, atol=1e-6 * want.max())


def test_multitaper_window_must_match():
    with pytest.raises(ValueError, match="does not match the input window_s"):
        multitaper_psd(1.0).infer_info(_win(np.zeros((1, 100))).info)


@pytest.mark.parametrize("method", ["welch", "multitaper"])
@pytest.mark.parametrize("relative", [False, True])
def test_band_power_from_reference_psd(method, relative, eeg):
    x, sf = eeg
    bands = {"theta": (4.0, 8.0), "alpha": (8.0, 13.0)}
    out = _one(band_power(bands, method=method, relative=relative, log=True, nperseg_s=1.0), _win(x, sf))
    if method == "welch":
        f, psd = signal.welch(x, sf, nperseg=160)
    else:
        psd, f = mne.time_frequency.psd_array_multitaper(x, sf, bandwidth=8 * sf / x.shape[1],
                                                         normalization="full", verbose=False)
    df = f[1] - f[0]
    want = np.stack([psd[:, (f >= lo) & (f < hi)].sum(-1) * df for lo, hi in bands.values()], -1)
    if relative:
        want = want / (psd.sum(-1, keepdims=True) * df)
    assert_allclose(out.data[:, 0], np.log10(want).ravel(), rtol=1e-4)


def test_sine_edge_and_peak(rng):
    t = np.arange(500) / SFREQ
    x = np.sin(2 * np.pi * 12.0 * t)[None] + 0.01 * rng.standard_normal((1, 500))
    assert _one(peak_frequency(5.0, 30.0), _win(x)).data[0, 0] == pytest.approx(12.0)
    sef = _one(spectral_edge(95.0, nperseg_s=1.0), _win(x)).data[0, 0]
    f, psd = signal.welch(x[0], SFREQ, nperseg=250)
    cum = np.cumsum(psd)
    assert sef == pytest.approx(f[np.argmax(cum >= 0.95 * cum[-1])])
    assert 12.0 <= sef <= 14.0


def test_edge_and_peak_of_silence_are_nan():
    z = _win(np.zeros((2, 100)))
    assert np.isnan(_one(spectral_edge(), z).data).all() and np.isnan(_one(peak_frequency(1.0, 20.0), z).data).all()


@pytest.mark.parametrize("output", ["mean", "last"])
def test_morlet_equals_mne(output, eeg):
    x, sf = eeg
    freqs, n_cycles = [8.0, 12.0, 20.0], [4.0, 5.0, 7.0]
    out = _one(morlet_power(freqs, n_cycles, output=output), _win(x, sf))
    tfr = mne.time_frequency.tfr_array_morlet(x[None], sf, freqs, n_cycles, output="power", verbose=False)[0]
    if output == "mean":
        want = tfr.mean(-1)
    else:
        waves = mne.time_frequency.morlet(sf, freqs, n_cycles, zero_mean=True)
        want = np.stack([tfr[:, k, x.shape[1] - 1 - (w.size - 1) // 2] for k, w in enumerate(waves)], -1)
    assert_allclose(out.data[:, 0], want.ravel(), rtol=1e-4, atol=1e-7 * want.max())
    assert out.channels[:3] == ("ch0:8Hz", "ch0:12Hz", "ch0:20Hz")


def test_morlet_last_is_nan_when_wavelet_too_long(rng):
    out = _one(morlet_power([4.0], 7.0, output="last"), _win(rng.standard_normal((1, 50))))
    assert np.isnan(out.data).all()
    with pytest.raises(ValueError, match="longer than the 50-sample window"):
        morlet_power([4.0], 7.0).infer_info(_win(np.zeros((1, 50))).info)


@pytest.mark.parametrize("spec", [welch_psd(0.5), multitaper_psd(1.0), band_power({"a": (8.0, 13.0)}),
                                  spectral_edge(), peak_frequency(2.0, 40.0), morlet_power([10.0], 5.0)])
def test_batched_equals_single_after_windows(spec, rng):
    x = rng.standard_normal((2, 1000)).astype(np.float32)
    windows = run_offline(sliding_window(1.0, 0.5), chunks_from_array(x, make_info(2, SFREQ), [400, 600]))
    single = [spec.step(spec.init(w), w)[1][0] for w in windows]
    _, batched = BoundOp(spec).step_batch([spec.init(w) for w in windows], windows)
    for s, (b,) in zip(single, batched):
        assert_allclose(b.data, s.data, rtol=1e-6)
        assert b.info == s.info == spec.infer_info(windows[0].info)


def test_stream_change_is_a_named_error():
    spec = welch_psd(0.25)
    state = spec.init(_win(np.zeros((2, 100))))
    other = _win(np.zeros((3, 100)))
    with pytest.raises(StreamMismatchError, match="ops.welch_psd: .* 3 channels, the op was initialised with 2"):
        spec.step(state, other)
    with pytest.raises(StreamMismatchError, match="ops.welch_psd: .* 3 channels"):
        BoundOp(spec).step_batch([state, state], [_win(np.zeros((2, 100))), other])
    with pytest.raises(StreamMismatchError, match=r"sfreq=500.0 Hz, the op was initialised at 250.0 Hz"):
        spec.step(state, _win(np.zeros((2, 100)), sfreq=500.0))


@pytest.mark.parametrize(("make", "message"), [
    (lambda: welch_psd(0.0), "ops.welch_psd: nperseg_s=0.0 must be finite and > 0"),
    (lambda: band_power({"a": (1.0, 2.0)}, method="fft"), r"method='fft' is not one of \('welch', 'multitaper'\)"),
    (lambda: band_power({"a": (2.0, 1.0)}), "must satisfy 0 <= lo < hi"),
    (lambda: spectral_edge(120.0), r"percent=120.0 must be in \(0, 100\]"),
    (lambda: peak_frequency(20.0, 10.0), "fmax=10.0 must be > fmin=20.0"),
    (lambda: morlet_power([]), "freqs=.* must be a non-empty sequence"),
    (lambda: morlet_power([5.0, 10.0], [3.0, 4.0, 5.0]), "n_cycles has 3 values, expected 1 or 2"),
    (lambda: morlet_power([5.0], output="end"), r"output='end' is not one of \('mean', 'last'\)"),
])
def test_readable_definition_errors(make, message):
    with pytest.raises(PipelineDefinitionError, match=message):
        make()


def test_build_time_checks():
    info = make_info(1, SFREQ)
    with pytest.raises(ValueError, match="fmax=200.0 Hz must not exceed Nyquist"):
        welch_psd(1.0, fmax=200.0).infer_info(info)
    with pytest.raises(ValueError, match="holds no frequency bin"):
        band_power({"n": (10.1, 10.2)}, nperseg_s=1.0).infer_info(info)
