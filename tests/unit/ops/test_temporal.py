"""Temporal features equal scipy.stats / antropy (and textbook) references."""

from __future__ import annotations

import math

import mne
import numpy as np
import pytest
import scipy.stats as st
from numpy.testing import assert_allclose

antropy = pytest.importorskip("antropy")

from neuraflow.chunk import Chunk  # noqa: E402
from neuraflow.errors import PipelineDefinitionError  # noqa: E402
from neuraflow.ops import BoundOp, temporal_features  # noqa: E402
from neuraflow.ops.temporal import FEATURES, permutation_entropy, sample_entropy  # noqa: E402
from neuraflow.testing import make_info  # noqa: E402

NAMES = list(FEATURES)


def _reference(x: np.ndarray, sf: float) -> list[float]:
    mob, com = antropy.hjorth_params(x)
    return [x.mean(), x.var(), np.sqrt(np.mean(x**2)), st.skew(x), st.kurtosis(x), np.abs(np.diff(x)).sum(),
            antropy.num_zerocross(x), x.var(), mob, com, antropy.sample_entropy(x), antropy.perm_entropy(x),
            antropy.spectral_entropy(x, sf)]


def _check(x32: np.ndarray, sf: float) -> None:
    chunk = Chunk(x32, 0.0, make_info(x32.shape[0], sf))
    spec = temporal_features(NAMES)
    _, (out,) = spec.step(spec.init(chunk), chunk)
    got = out.data[:, 0].reshape(x32.shape[0], -1)
    for i, row in enumerate(chunk.data.astype(np.float64)):
        assert_allclose(got[i], _reference(row, sf), rtol=2e-5, atol=1e-12)
    assert out.channels[: len(NAMES)] == tuple(f"ch0:{n}" for n in NAMES)


def test_equals_references_on_noise(rng):
    _check(rng.standard_normal((3, 600)).astype(np.float32), 250.0)


def test_equals_references_on_recording(eegmmidb_edf):
    raw = mne.io.read_raw_edf(eegmmidb_edf, preload=True, verbose=False).pick(["C3..", "Cz..", "C4.."])
    _check((raw.get_data()[:, :480] * 1e6).astype(np.float32), raw.info["sfreq"])


def _sampen_textbook(x, m, r):
    tol = r * x.std()
    n = len(x)
    def count(k):
        t = [x[i : i + k] for i in range(n - m)]
        return sum(np.max(np.abs(t[i] - t[j])) < tol for i in range(len(t)) for j in range(i + 1, len(t)))
    return -math.log(count(m + 1) / count(m))


@pytest.mark.parametrize("m", [1, 2, 3])
def test_sample_entropy_textbook(m, rng):
    x = rng.standard_normal(150)
    assert sample_entropy(x[None], m, 0.25)[0] == pytest.approx(_sampen_textbook(x, m, 0.25))


def test_permutation_entropy_analytic_cases(rng):
    ramp = np.arange(50.0)[None]
    assert permutation_entropy(ramp, 3, 1, False)[0] == 0.0  # one pattern only
    x = rng.standard_normal(20000)
    assert permutation_entropy(x[None], 4, 2, True)[0] == pytest.approx(1.0, abs=2e-3)  # all 24 equiprobable
    assert permutation_entropy(x[None], 5, 2, False)[0] == pytest.approx(antropy.perm_entropy(x, 5, 2))


def test_batched_equals_single(rng):
    spec = temporal_features(NAMES, m=2, r=0.3, order=4, delay=2, normalize=True)
    info = make_info(2, 250.0)
    chunks = [Chunk(rng.standard_normal((2, 200)).astype(np.float32), float(i), info) for i in range(4)]
    single = [spec.step(spec.init(c), c)[1][0] for c in chunks]
    _, batched = BoundOp(spec).step_batch([spec.init(c) for c in chunks], chunks)
    for s, (b,) in zip(single, batched):
        assert_allclose(b.data, s.data, rtol=1e-6)
    assert spec.infer_info(info).units[-1] == "1"


def test_non_finite_sample_makes_only_its_channel_nan(rng):
    x = rng.standard_normal((2, 200)).astype(np.float32)
    x[1, 50] = np.nan  # zero crossings and ordinal patterns would read it as a number
    chunk = Chunk(x, 0.0, make_info(2, 250.0))
    spec = temporal_features(NAMES)
    _, (out,) = spec.step(spec.init(chunk), chunk)
    got = out.data[:, 0].reshape(2, -1)
    assert np.isnan(got[1]).all() and np.isfinite(got[0, NAMES.index("zero_crossings")])


@pytest.mark.parametrize(("kw", "message"), [
    ({"names": []}, "names=.* must be a non-empty sequence"),
    ({"names": ["varaince"]}, "names contains 'varaince'.* Did you mean 'variance'"),
    ({"names": ["mean", "mean"]}, "has duplicates"),
    ({"names": ["mean"], "order": 9}, "order=9 must be <= 8"),
    ({"names": ["mean"], "r": -1}, "r=-1 must be finite and > 0"),
    ({"names": ["mean"], "delay": 0}, "delay=0 must be an integer >= 1"),
])
def test_readable_errors(kw, message):
    with pytest.raises(PipelineDefinitionError, match=message):
        temporal_features(**kw)
