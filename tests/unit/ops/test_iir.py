"""IIR filters (any design), DC blocker and filter bank: streaming == one offline ``sosfilt`` call."""

from __future__ import annotations


import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import signal

from neuraflow.chunk import Chunk
from neuraflow.errors import PipelineDefinitionError
from neuraflow.ops import dc_block, filter_bank, iir_filter, run_offline
from neuraflow.ops import filters
from neuraflow.ops.iir import FilterBankState
from neuraflow.testing import assert_resumes_after_pickle, chunks_from_array, make_info, random_chunking

SFREQ = 250.0


def _signal(rng, n_channels=3, n_samples=2000, scale=50e-6):
    t = np.arange(n_samples) / SFREQ
    x = scale * rng.standard_normal((n_channels, n_samples))
    x += scale * np.sin(2 * np.pi * 50.0 * t) + 10 * scale  # line noise + DC offset
    return x.astype(np.float32).astype(np.float64)  # what the float32 chunks carry


def _concat(chunks):
    return np.concatenate([c.data for c in chunks], axis=1)


def _close(got, expected):
    assert_allclose(got, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())


DESIGNS = {
    "butter": {},
    "cheby1": {"rp_db": 1.0},
    "cheby2": {"rs_db": 40.0},
    "ellip": {"rp_db": 0.5, "rs_db": 50.0},
}
KINDS = {"lowpass": 30.0, "highpass": 1.0, "bandpass": (8.0, 30.0), "bandstop": (45.0, 55.0)}


@pytest.mark.parametrize("design", sorted(DESIGNS))
@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("seed", [0, 1])
def test_streaming_equals_offline_iirfilter(kind, design, seed):
    rng = np.random.default_rng(seed)
    x = _signal(rng)
    spec = iir_filter(kind, KINDS[kind], design=design, order=3, **DESIGNS[design])
    chunks = chunks_from_array(x, make_info(3, SFREQ), random_chunking(x.shape[1], rng, max_size=150))
    out = run_offline(spec, chunks)
    assert [c.n_samples for c in out] == [c.n_samples for c in chunks]
    assert [c.t0_s for c in out] == [c.t0_s for c in chunks]
    ripple = {{"rp_db": "rp", "rs_db": "rs"}[k]: v for k, v in DESIGNS[design].items()}
    sos = signal.iirfilter(3, KINDS[kind], btype=kind, ftype=design, output="sos", fs=SFREQ, **ripple)
    _close(_concat(out), signal.sosfilt(sos, x))


def test_dc_block_is_first_order_highpass_and_removes_offset(rng):
    x = _signal(rng, n_samples=5000) + 1e-3
    chunks = chunks_from_array(x, make_info(3, SFREQ), random_chunking(5000, rng))
    got = _concat(run_offline(dc_block(0.5), chunks))
    _close(got, signal.sosfilt(signal.butter(1, 0.5, "highpass", fs=SFREQ, output="sos"), x))
    assert np.abs(got[:, -1000:].mean(axis=1)).max() < 5e-6  # 1 mV offset gone


BANDS = {"theta": (4.0, 8.0), "alpha": (8.0, 13.0), "low": (None, 3.0), "high": (40.0, None)}


def _band_sos(lo, hi, order=4):
    if lo is None:
        return signal.butter(order, hi, "lowpass", fs=SFREQ, output="sos")
    if hi is None:
        return signal.butter(order, lo, "highpass", fs=SFREQ, output="sos")
    return signal.butter(order, (lo, hi), "bandpass", fs=SFREQ, output="sos")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_filter_bank_stacks_bands_band_major(seed):
    rng = np.random.default_rng(seed)
    x = _signal(rng)
    info = make_info(3, SFREQ)
    spec = filter_bank(BANDS)
    out = run_offline(spec, chunks_from_array(x, info, random_chunking(x.shape[1], rng, max_size=120)))
    expected_info = spec.infer_info(info)
    assert expected_info.channels[:4] == ("ch0:theta", "ch1:theta", "ch2:theta", "ch0:alpha")
    assert all(c.info == expected_info for c in out)
    expected = np.concatenate([signal.sosfilt(_band_sos(lo, hi), x) for lo, hi in BANDS.values()])
    _close(_concat(out), expected)


def test_filter_bank_step_batch_uses_one_sosfilt_per_band(monkeypatch, rng):
    spec = filter_bank({"a": (8.0, 13.0), "b": (13.0, 30.0)})
    chunks = [Chunk(rng.standard_normal((2, 50)), 0.0, make_info(2, SFREQ, stream_id=f"s{i}")) for i in range(5)]
    states = [spec.init(c) for c in chunks]
    single = [spec.step(s, c)[1][0].data for s, c in zip(states, chunks)]
    calls = []
    original = filters._sosfilt  # every SOS op filters through this one function
    monkeypatch.setattr(filters, "_sosfilt", lambda *a, **k: calls.append(a[1].shape) or original(*a, **k))
    new_states, outs = spec.step_batch(states, chunks)
    assert calls == [(10, 50), (10, 50)]
    for got, want in zip(outs, single):
        assert_allclose(got[0].data, want, rtol=1e-6)
    assert all(isinstance(s, FilterBankState) for s in new_states)


@pytest.mark.parametrize(
    "spec",
    [
        lambda: iir_filter("bandpass", (8.0, 30.0), design="ellip", rp_db=0.5, rs_db=40.0),
        lambda: dc_block(0.3),
        lambda: filter_bank({"a": (8.0, 13.0), "b": (None, 4.0)}),
    ],
)
def test_state_pickles_mid_stream_and_continues_identically(spec, rng):
    x = _signal(rng, n_samples=1200)
    assert_resumes_after_pickle(spec(), chunks_from_array(x, make_info(3, SFREQ), random_chunking(1200, rng)))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (lambda: iir_filter("lowpass", 140.0), r"freqs=140.0 must be below Nyquist \(125.0 Hz at sfreq=250.0\)"),
        (lambda: dc_block(200.0), r"freqs=200.0 must be below Nyquist"),
        (lambda: filter_bank({"gamma": (30.0, 130.0)}), r"band 'gamma': h_freq=130.0 must be below Nyquist"),
    ],
)
def test_nyquist_is_checked_at_build_time(spec, message):
    op = spec()
    with pytest.raises(ValueError, match=message):
        op.infer_info(make_info(2, SFREQ))
    assert op.infer_info(make_info(2, 1000.0)).sfreq == 1000.0


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: iir_filter("bandpas", (1.0, 4.0)), "kind='bandpas' is not one of .* Did you mean 'bandpass'"),
        (lambda: iir_filter("lowpass", 10.0, design="chebby1"), "Did you mean 'cheby1'"),
        (lambda: iir_filter("lowpass", 10.0, design="cheby1"), "design='cheby1' requires rp_db"),
        (lambda: iir_filter("lowpass", 10.0, design="ellip", rp_db=1.0), "design='ellip' requires rs_db"),
        (lambda: iir_filter("lowpass", 10.0, rs_db=40.0), "rs_db=40.0 is not used by design='butter'"),
        (lambda: iir_filter("lowpass", 10.0, design="cheby2", rs_db=-3.0), "rs_db=-3.0 must be finite and > 0"),
        (lambda: iir_filter("bandpass", 10.0), "kind='bandpass' needs 2 edge"),
        (lambda: iir_filter("bandstop", (50.0, 40.0)), "must be increasing"),
        (lambda: iir_filter("highpass", 1.0, order=0), "order=0 must be an integer >= 1"),
        (lambda: dc_block(0.0), "ops.dc_block: cutoff_hz=0.0"),
        (lambda: filter_bank({}), "non-empty mapping"),
        (lambda: filter_bank({"a:b": (1.0, 2.0)}), "without ':'"),
        (lambda: filter_bank({"a": (5.0, 2.0)}), "must have low < high"),
        (lambda: filter_bank({"a": (None, None)}), "both edges None"),
        (lambda: filter_bank({"a": 5.0}), "must be a pair"),
    ],
)
def test_bad_params_raise_pipeline_definition_error(factory, message):
    with pytest.raises(PipelineDefinitionError, match=message):
        factory()


def test_real_recording_streaming_equals_offline(eegmmidb_6ch_10s, rng):
    x, info = eegmmidb_6ch_10s
    sfreq = info.sfreq
    bank = [signal.butter(4, band, "bandpass", fs=sfreq, output="sos") for band in ((8.0, 12.0), (13.0, 30.0))]
    cases = [
        (
            iir_filter("bandpass", (8.0, 30.0), design="cheby2", rs_db=40.0),
            lambda: signal.sosfilt(
                signal.iirfilter(4, (8.0, 30.0), rs=40.0, btype="bandpass", ftype="cheby2", fs=sfreq, output="sos"), x
            ),
        ),
        (filter_bank({"mu": (8.0, 12.0), "beta": (13.0, 30.0)}), lambda: np.vstack([signal.sosfilt(s, x) for s in bank])),
        (dc_block(0.1), lambda: signal.sosfilt(signal.butter(1, 0.1, "highpass", fs=sfreq, output="sos"), x)),
    ]
    for spec, reference in cases:
        chunks = chunks_from_array(x, info, random_chunking(x.shape[1], rng, max_size=64))
        _close(_concat(run_offline(spec, chunks)), reference())
