"""Connectivity equals scipy.signal.coherence, mne-connectivity formulas and a direct Tort MI."""

from __future__ import annotations

import mne
import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import signal

from neuraflow.chunk import Chunk
from neuraflow.errors import PipelineDefinitionError
from neuraflow.ops import BoundOp, pac_modulation_index, spectral_connectivity
from neuraflow.ops.connectivity import METHODS, band_analytic, cross_measure
from neuraflow.testing import make_info

BANDS = {"alpha": (8.0, 13.0), "beta": (13.0, 30.0)}


@pytest.fixture(scope="module")
def eeg(eegmmidb_edf):
    raw = mne.io.read_raw_edf(eegmmidb_edf, preload=True, verbose=False).pick(["C3..", "Cz..", "C4..", "Pz.."])
    return raw.get_data()[:, :800], raw.info["sfreq"], tuple(raw.ch_names)


def test_coherence_equals_scipy(eeg):
    x, sf, names = eeg
    chunk = Chunk(x.astype(np.float32), 0.0, make_info(4, sf).replace(channels=names))
    spec = spectral_connectivity("coh", BANDS, nperseg_s=1.0)
    _, (out,) = spec.step(spec.init(chunk), chunk)
    xx = chunk.data.astype(np.float64)
    want = []
    for a, b in zip(*np.triu_indices(4, 1)):
        f, c = signal.coherence(xx[a], xx[b], sf, nperseg=160)
        want += [c[(f >= lo) & (f < hi)].mean() for lo, hi in BANDS.values()]
    assert_allclose(out.data[:, 0], want, rtol=1e-5)
    assert out.channels[:3] == ("C3..-Cz..:alpha", "C3..-Cz..:beta", "C3..-C4..:alpha")


@pytest.mark.parametrize("method", METHODS)
def test_measures_equal_mne_connectivity(method, rng):
    mne_connectivity = pytest.importorskip("mne_connectivity")
    ep = rng.standard_normal((30, 3, 128))
    ep[:, 1] += np.roll(ep[:, 0], 2, axis=-1)
    spec = np.fft.rfft(ep * np.hanning(128), axis=-1).transpose(1, 0, 2)  # (n_ch, n_seg, n_f)
    idx = (np.array([0, 0, 1]), np.array([1, 2, 2]))
    con = mne_connectivity.spectral_connectivity_epochs(
        ep, method=method, sfreq=250.0, mode="fourier", indices=idx, fmin=10.0, fmax=40.0, verbose=False)
    sel = np.isin(np.round(np.fft.rfftfreq(128, 1 / 250.0), 6), np.round(con.freqs, 6))
    got = cross_measure(spec, *idx, method)[:, sel]
    if method == "coh":
        got = np.sqrt(got)  # mne-connectivity's "coh" is |coherency|, ours magnitude-squared
    assert_allclose(got, con.get_data(), rtol=1e-3, atol=1e-4)


def test_phase_measures_on_lagged_copy(rng):
    x = rng.standard_normal((1, 2000))
    lagged = np.vstack([x, np.roll(x, 3, axis=-1) + 0.1 * rng.standard_normal((1, 2000))])
    chunk = Chunk(lagged.astype(np.float32), 0.0, make_info(2, 250.0))
    for method in ("plv", "pli", "wpli"):
        spec = spectral_connectivity(method, {"a": (8.0, 13.0)}, nperseg_s=0.5)
        _, (out,) = spec.step(spec.init(chunk), chunk)
        assert out.data[0, 0] > 0.9


def test_pairs_shard_the_full_result(rng):
    chunk = Chunk(rng.standard_normal((4, 500)).astype(np.float32), 0.0, make_info(4, 250.0))
    full_spec = spectral_connectivity("wpli", BANDS)
    part_spec = spectral_connectivity("wpli", BANDS, pairs=[("ch2", "ch3"), ("ch0", "ch1")])
    _, (full,) = full_spec.step(full_spec.init(chunk), chunk)
    _, (part,) = part_spec.step(part_spec.init(chunk), chunk)
    table = dict(zip(full.channels, full.data[:, 0]))
    assert part.channels == ("ch2-ch3:alpha", "ch2-ch3:beta", "ch0-ch1:alpha", "ch0-ch1:beta")
    assert_allclose(part.data[:, 0], [table[c] for c in part.channels], rtol=1e-6)
    with pytest.raises(ValueError, match=r"pairs name channels \['chX'\]"):
        spectral_connectivity("coh", BANDS, pairs=[("ch0", "chX")]).infer_info(make_info(4, 250.0))


def _tort_slow(phase_sig, amp_sig, sf, pband, aband, n_bins=18):
    def ideal(sig, lo, hi):
        f = np.fft.rfftfreq(sig.size, 1 / sf)
        return np.fft.irfft(np.fft.rfft(sig) * ((f >= lo) & (f < hi)), sig.size)
    ph = np.angle(signal.hilbert(ideal(phase_sig, *pband)))
    amp = np.abs(signal.hilbert(ideal(amp_sig, *aband)))
    edges = np.linspace(-np.pi, np.pi, n_bins + 1)
    means = np.array([amp[(ph >= edges[j]) & (ph < edges[j + 1])].mean() for j in range(n_bins)])
    p = means / means.sum()
    return (np.log(n_bins) + np.sum(p * np.log(p))) / np.log(n_bins)


def test_band_analytic_equals_scipy_hilbert(rng):
    x = rng.standard_normal((2, 301))
    f = np.fft.rfftfreq(301, 1 / 250.0)
    ideal = np.fft.irfft(np.fft.rfft(x) * ((f >= 8) & (f < 13)), 301)
    assert_allclose(band_analytic(x, 250.0, 8.0, 13.0), signal.hilbert(ideal), atol=1e-12)


def test_pac_equals_direct_tort_and_detects_coupling(eeg, rng):
    sf, t = 250.0, np.arange(2500) / 250.0
    slow = np.sin(2 * np.pi * 6 * t)
    coupled = slow + (1 + slow) * 0.5 * np.sin(2 * np.pi * 40 * t) + 0.1 * rng.standard_normal(t.size)
    x = np.vstack([coupled, rng.standard_normal(t.size)])
    chunk = Chunk(x.astype(np.float32), 0.0, make_info(2, sf))
    spec = pac_modulation_index((4.0, 8.0), (30.0, 50.0))
    _, (out,) = spec.step(spec.init(chunk), chunk)
    xx = chunk.data.astype(np.float64)
    assert_allclose(out.data[:, 0], [_tort_slow(r, r, sf, (4, 8), (30, 50)) for r in xx], rtol=1e-4)
    assert out.data[0, 0] > 10 * out.data[1, 0] and out.channels == ("ch0-ch0:mi", "ch1-ch1:mi")
    rec, sfr, names = eeg
    c = Chunk(rec.astype(np.float32), 0.0, make_info(4, sfr).replace(channels=names))
    pair_spec = pac_modulation_index((4.0, 8.0), (20.0, 40.0), pairs=[("C3..", "C4..")])
    _, (o,) = pair_spec.step(pair_spec.init(c), c)
    r = c.data.astype(np.float64)
    assert o.data[0, 0] == pytest.approx(_tort_slow(r[0], r[2], sfr, (4, 8), (20, 40)), rel=1e-4)


def test_batched_equals_single(rng):
    info = make_info(3, 250.0)
    chunks = [Chunk(rng.standard_normal((3, 250)).astype(np.float32), float(i), info) for i in range(3)]
    for spec in (spectral_connectivity("imcoh", BANDS), pac_modulation_index((4.0, 8.0), (30.0, 45.0))):
        single = [spec.step(spec.init(c), c)[1][0] for c in chunks]
        _, batched = BoundOp(spec).step_batch([spec.init(c) for c in chunks], chunks)
        for s, (b,) in zip(single, batched):
            assert_allclose(b.data, s.data, rtol=1e-5, atol=1e-7)


def test_pac_of_a_window_holding_nan_is_nan(rng):
    x = rng.standard_normal((2, 500)).astype(np.float32)
    x[1, 100:110] = np.nan  # binned phases would otherwise hide it (MI = 1, "perfect coupling")
    chunk = Chunk(x, 0.0, make_info(2, 250.0))
    spec = pac_modulation_index((4.0, 8.0), (30.0, 45.0))
    _, (out,) = spec.step(spec.init(chunk), chunk)
    assert np.isfinite(out.data[0, 0]) and np.isnan(out.data[1, 0])


@pytest.mark.parametrize(("make", "message"), [
    (lambda: spectral_connectivity("granger", BANDS), r"method='granger' is not one of"),
    (lambda: spectral_connectivity("coh", BANDS, pairs=[("a", "a")]), "pairs a channel with itself"),
    (lambda: spectral_connectivity("coh", BANDS, pairs=[("a",)]), "must be a pair of channel names"),
    (lambda: spectral_connectivity("coh", BANDS, nperseg_s=-1), "nperseg_s=-1 must be finite and > 0"),
    (lambda: pac_modulation_index((8.0, 4.0), (30.0, 40.0)), "must satisfy 0 <= lo < hi"),
    (lambda: pac_modulation_index((4.0, 8.0), (30.0, 40.0), n_bins=1), "n_bins=1 must be an integer >= 2"),
])
def test_readable_errors(make, message):
    with pytest.raises(PipelineDefinitionError, match=message):
        make()
