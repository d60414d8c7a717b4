"""ASR: calibration and online output against asrpy (the clean_rawdata port), and behaviour."""

from __future__ import annotations

import types

import numpy as np
import pytest
from numpy.testing import assert_allclose

from neuraflow.errors import PipelineDefinitionError
from neuraflow.ops import asr, fit_asr, run_offline
from neuraflow.ops.asr import fit_eeg_distribution
from neuraflow.testing import chunks_from_array, make_info, random_chunking

asrpy_asr = pytest.importorskip("asrpy.asr")
asrpy_utils = pytest.importorskip("asrpy.asr_utils")

SF = 250.0
NC = 6


@pytest.fixture
def asrpy(monkeypatch):
    """asrpy 0.0.8 calls int() on 1-element arrays (an error with numpy >= 2): give it a scalar np.diff."""

    class _Numpy(types.ModuleType):
        def __getattr__(self, name):
            return getattr(np, name)

    shim = _Numpy("numpy_for_asrpy")
    shim.diff = lambda a, *args, **kw: np.squeeze(np.diff(a, *args, **kw))
    monkeypatch.setattr(asrpy_utils, "np", shim)
    return asrpy_asr


def _data(seed=0, clean_s=60.0, test_s=20.0):
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((NC, NC))
    clean = 10e-6 * mix @ rng.standard_normal((NC, int(clean_s * SF)))
    test = 10e-6 * mix @ rng.standard_normal((NC, int(test_s * SF)))
    art = np.zeros_like(test)
    t = np.arange(500) / SF
    art[:, 2000:2500] = np.outer(rng.standard_normal(NC), 300e-6 * np.sin(2 * np.pi * 2.0 * t))
    return clean, test, art


def _shaping():
    b, a = asrpy_utils.yulewalk(8, np.array([0, 2, 3, 13, 16, 40, 80, 125]) * 2 / SF,
                                np.array([3, 0.75, 0.33, 0.33, 1, 1, 3, 3]))
    return b, a


def _online(cal, x, rng, **kw):
    chunks = chunks_from_array(x.astype(np.float32), make_info(NC, SF), random_chunking(x.shape[1], rng, max_size=80))
    out = run_offline(asr(cal, **kw), chunks)
    assert out[0].t0_s == chunks[0].t0_s
    return np.concatenate([c.data for c in out], axis=1).astype(np.float64)


@pytest.mark.parametrize("shaped", [False, True])
def test_calibration_and_online_output_match_asrpy(asrpy, shaped):
    clean, test, art = _data()
    x = (test + art).astype(np.float32).astype(np.float64)
    b, a = _shaping() if shaped else (np.array([1.0]), np.array([1.0]))
    m_ref, t_ref = asrpy.asr_calibrate(clean, SF, cutoff=5.0, ab=(a, b))
    cal = fit_asr(clean, SF, cutoff=5.0, shaping=(b, a) if shaped else None)
    assert_allclose(cal.M, m_ref, rtol=1e-9, atol=1e-12 * np.abs(m_ref).max())
    # T rows: eigenvector signs are arbitrary. T differs by up to ~0.3 % of its largest entry: the
    # distribution fit is a discrete grid search whose optimum can move with last-bit rounding of the RMS.
    tt, tt_ref = cal.T.T @ cal.T, t_ref.T @ t_ref
    assert_allclose(tt, tt_ref, atol=1e-2 * np.abs(tt_ref).max())
    zi = np.zeros((NC, len(a) - 1))
    ref = asrpy.asr_process(x.copy(), SF, m_ref, t_ref, 0.5, 0.25, 32, 0.66, (a, b), None, zi, None, None,
                            False, "euclid", 1)
    p = int(np.round(0.25 * SF))
    ref = ref[:, p:]  # asrpy's output starts with its reflected "carry"; ours starts at input sample 0
    ours = _online(cal, x, np.random.default_rng(1), step=32, lookahead_s=0.25)
    n = ours.shape[1] - 32  # asrpy leaves its last step unprocessed
    assert ours.shape[1] >= x.shape[1] - p - 32
    assert_allclose(ours[:, :n], ref[:, :n], atol=1e-6 * np.abs(ref).max())
    assert np.abs(ours - x[:, : ours.shape[1]]).max() > 0.5 * np.abs(art).max()  # it did reconstruct


def test_online_output_does_not_depend_on_chunking():
    clean, test, art = _data(seed=2)
    cal = fit_asr(clean, SF, cutoff=5.0)
    a = _online(cal, test + art, np.random.default_rng(3), step=16)
    b = _online(cal, test + art, np.random.default_rng(4), step=16)
    n = min(a.shape[1], b.shape[1])
    assert abs(a.shape[1] - b.shape[1]) < 16
    assert_allclose(a[:, :n], b[:, :n], rtol=1e-6, atol=1e-12)


def test_clean_data_passes_and_large_artifact_is_removed():
    clean, test, art = _data(seed=5)
    cal = fit_asr(clean, SF, cutoff=10.0)
    passed = _online(cal, test, np.random.default_rng(0))
    n = passed.shape[1]
    assert_allclose(passed, test[:, :n].astype(np.float32), atol=1e-3 * np.abs(test).max())
    out = _online(cal, test + art, np.random.default_rng(0))
    seg = slice(2000, 2500)
    residual = np.mean((out[:, seg] - test[:, seg]) ** 2)
    assert residual < 0.1 * np.mean(art[:, seg] ** 2)  # > 90 % of the artifact power removed
    far = slice(500, 1700)
    assert_allclose(out[:, far], test[:, far].astype(np.float32), atol=1e-3 * np.abs(test).max())


def test_fit_eeg_distribution_recovers_clean_mode():
    rng = np.random.default_rng(0)
    clean = rng.normal(10.0, 1.0, 800)
    values = np.concatenate([clean, rng.uniform(20.0, 100.0, 300)])  # 27 % artifact windows
    mu, sigma = fit_eeg_distribution(values)
    assert abs(mu - 10.0) < 0.5 and 0.6 < sigma < 1.5
    with pytest.raises(ValueError, match=">= 20"):
        fit_eeg_distribution(values[:10])


def test_validation():
    clean, _, _ = _data(clean_s=30.0)
    cal = fit_asr(clean, SF)
    with pytest.raises(PipelineDefinitionError):
        asr(clean)  # type: ignore[arg-type]
    with pytest.raises(PipelineDefinitionError):
        asr(cal, lookahead_s=1.0)
    with pytest.raises(ValueError, match="calibrated for 6"):
        asr(cal).infer_info(make_info(4, SF))
    with pytest.raises(ValueError, match="Hz"):
        asr(cal).infer_info(make_info(NC, 500.0))
    with pytest.raises(PipelineDefinitionError):
        fit_asr(clean, SF, window_overlap=1.0)
