"""FIR (overlap-save) == ``lfilter(taps, 1, x)``; moving detrend == a per-sample reference fit."""

from __future__ import annotations


import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import signal

from neuraflow.chunk import Chunk
from neuraflow.errors import PipelineDefinitionError, StreamMismatchError
from neuraflow.ops import detrend, fir_filter, run_offline
from neuraflow.ops.fir import overlap_save
from neuraflow.testing import assert_resumes_after_pickle, chunks_from_array, make_info, random_chunking, run_batched

SFREQ = 250.0


def _signal(rng, n_channels=3, n_samples=2000, scale=50e-6):
    t = np.arange(n_samples) / SFREQ
    x = scale * rng.standard_normal((n_channels, n_samples))
    x += scale * np.sin(2 * np.pi * 50.0 * t) + 10 * scale + scale * t  # line noise, offset, drift
    return x.astype(np.float32).astype(np.float64)


def _concat(chunks):
    return np.concatenate([c.data for c in chunks], axis=1)


def _close(got, expected, rtol=1e-5):
    assert_allclose(got, expected, rtol=rtol, atol=1e-6 * np.abs(expected).max())


def _taps(spec, sfreq=SFREQ, n_channels=1):
    return np.array(spec.init(Chunk(np.zeros((n_channels, 1), np.float32), 0.0, make_info(n_channels, sfreq))).taps)


FIRS = {
    "lowpass": lambda: fir_filter("lowpass", 30.0, numtaps=101),
    "highpass": lambda: fir_filter("highpass", 1.0, transition_hz=1.0, window="hann"),  # 775 taps
    "bandpass": lambda: fir_filter("bandpass", (8.0, 30.0), numtaps=64, window=("kaiser", 6.0)),
    "bandstop": lambda: fir_filter("bandstop", (45.0, 55.0), transition_hz=4.0, window="blackman"),
    "one_tap": lambda: fir_filter("lowpass", 30.0, numtaps=1),
}


@pytest.mark.parametrize("name", sorted(FIRS))
@pytest.mark.parametrize(("seed", "max_size"), [(0, 5), (1, 150), (2, 3000)])
def test_streaming_equals_lfilter(name, seed, max_size):
    rng = np.random.default_rng(seed)
    x = _signal(rng)
    spec = FIRS[name]()
    info = make_info(3, SFREQ)
    chunks = chunks_from_array(x, info, random_chunking(x.shape[1], rng, max_size=max_size))
    out = run_offline(spec, chunks)
    assert [c.n_samples for c in out] == [c.n_samples for c in chunks]
    assert [c.t0_s for c in out] == [c.t0_s for c in chunks]
    taps = _taps(spec)
    assert all(c.info == spec.infer_info(info) for c in out)
    assert out[0].info.meta["group_delay_s"] == pytest.approx((taps.size - 1) / 2 / SFREQ)
    _close(_concat(out), signal.lfilter(taps, 1.0, x))


def test_taps_are_firwin_and_numtaps_follows_transition():
    assert_allclose(_taps(FIRS["lowpass"]()), signal.firwin(101, 30.0, fs=SFREQ))
    assert _taps(FIRS["highpass"]()).size == 775  # ceil(3.1 * 250 / 1.0), already odd
    assert _taps(fir_filter("lowpass", 30.0, transition_hz=2.5, window="hann")).size == 311  # 310 -> odd
    assert_allclose(_taps(FIRS["highpass"]()), signal.firwin(775, 1.0, window="hann", pass_zero="highpass", fs=SFREQ))
    bandpass_taps = _taps(FIRS["bandpass"]())
    assert_allclose(bandpass_taps, signal.firwin(64, (8.0, 30.0), window=("kaiser", 6.0), pass_zero="bandpass", fs=SFREQ))


def test_group_delay_accumulates_and_depends_on_sfreq():
    spec = fir_filter("lowpass", 30.0, numtaps=101)
    once = spec.infer_info(make_info(2, SFREQ))
    assert once.meta["group_delay_s"] == pytest.approx(0.2)
    assert spec.infer_info(once).meta["group_delay_s"] == pytest.approx(0.4)
    assert spec.infer_info(make_info(2, 500.0)).meta["group_delay_s"] == pytest.approx(0.1)


def test_overlap_save_matches_direct_convolution_over_many_blocks(rng):
    taps = rng.standard_normal(33)
    ext = rng.standard_normal((2, 32 + 5000))
    expected = np.stack([np.convolve(row, taps, mode="valid") for row in ext])
    assert_allclose(overlap_save(taps, ext), expected, rtol=1e-10, atol=1e-10)


def test_lowpass_delays_a_pulse_by_the_group_delay():
    x = np.zeros((1, 600))
    x[0, 100] = 1.0
    spec = fir_filter("lowpass", 20.0, numtaps=51)
    y = _concat(run_offline(spec, chunks_from_array(x, make_info(1, SFREQ), [300, 300])))
    assert int(np.argmax(y[0])) == 100 + 25


def _detrend_reference(x, n_win, linear):
    """Per sample: fit over x[max(0, n - W + 1): n + 1] (W = all samples so far if n_win is None)."""
    y = np.empty_like(x)
    for n in range(x.shape[1]):
        start = 0 if n_win is None else max(0, n - n_win + 1)
        window = x[:, start : n + 1]
        if not linear or window.shape[1] == 1:
            y[:, n] = x[:, n] - window.mean(axis=1)
        else:
            u = np.arange(window.shape[1])
            slope, intercept = np.polyfit(u, window.T, 1)
            y[:, n] = x[:, n] - (intercept + slope * u[-1])
    return y


DETRENDS = {
    "expanding": (lambda: detrend(), None, False),
    "constant": (lambda: detrend("constant", window_s=0.5), 125, False),
    "linear": (lambda: detrend("linear", window_s=1.0), 250, True),
    "linear_short": (lambda: detrend("linear", window_s=0.008), 2, True),
}


@pytest.mark.parametrize("name", sorted(DETRENDS))
@pytest.mark.parametrize(("seed", "max_size"), [(0, 1), (1, 97), (2, 900)])
def test_detrend_equals_reference(name, seed, max_size):
    rng = np.random.default_rng(seed)
    factory, n_win, linear = DETRENDS[name]
    x = _signal(rng, n_samples=900)
    chunks = chunks_from_array(x, make_info(3, SFREQ), random_chunking(x.shape[1], rng, max_size=max_size))
    got = _concat(run_offline(factory(), chunks))
    expected = _detrend_reference(x, n_win, linear)
    assert_allclose(got, expected, rtol=1e-4, atol=1e-6 * np.abs(x).max())


def test_detrend_removes_offset_and_drift(rng):
    t = np.arange(5000) / SFREQ
    x = 1e-3 + 1e-4 * t + 1e-6 * np.sin(2 * np.pi * 10 * t)
    chunks = chunks_from_array(np.vstack([x, x]), make_info(2, SFREQ), random_chunking(5000, rng))
    y = _concat(run_offline(detrend("linear", window_s=2.0), chunks))
    assert np.abs(y[:, 500:]).max() < 3e-6


@pytest.mark.parametrize("name", ["fir", "detrend", "expanding"])
def test_step_batch_equals_individual_steps(name, batch_streams):
    spec = {"fir": FIRS["highpass"], "detrend": DETRENDS["linear"][0], "expanding": DETRENDS["expanding"][0]}[name]()
    for streams in batch_streams(SFREQ):
        for got, want in zip(run_batched(spec, streams), [run_offline(spec, s) for s in streams]):
            assert [g.seq for g in got] == [w.seq for w in want]
            assert all(g.info == w.info for g, w in zip(got, want))
            _close(_concat(got), _concat(want))


def test_step_batch_stacks_streams_into_one_fft(monkeypatch, rng):
    from scipy import fft

    spec = FIRS["lowpass"]()
    chunks = [Chunk(rng.standard_normal((2, 50)), 0.0, make_info(2, SFREQ, stream_id=f"s{i}")) for i in range(6)]
    states = [spec.init(c) for c in chunks]
    calls = []
    original = fft.rfft
    monkeypatch.setattr(fft, "rfft", lambda a, *args, **k: calls.append(np.shape(a)) or original(a, *args, **k))
    spec.step_batch(states, chunks)
    assert [c[:2] for c in calls if len(c) == 3] == [(12, 1)]  # 6 streams x 2 channels, one block


@pytest.mark.parametrize("spec", [FIRS["bandstop"], DETRENDS["linear"][0], DETRENDS["expanding"][0]])
def test_state_pickles_mid_stream_and_continues_identically(spec, rng):
    x = _signal(rng, n_samples=1200)
    assert_resumes_after_pickle(spec(), chunks_from_array(x, make_info(3, SFREQ), random_chunking(1200, rng)))


def test_channel_change_mid_stream_is_rejected(rng):
    for spec in (FIRS["lowpass"](), detrend()):
        state = spec.init(Chunk(rng.standard_normal((2, 10)), 0.0, make_info(2, SFREQ)))
        with pytest.raises(StreamMismatchError, match="3 channels"):
            spec.step(state, Chunk(rng.standard_normal((3, 10)), 0.0, make_info(3, SFREQ)))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (lambda: fir_filter("lowpass", 130.0, numtaps=11), r"freqs=130.0 must be below Nyquist \(125.0 Hz"),
        (lambda: detrend("linear", window_s=0.001), r"window_s=0.001 is 0 sample\(s\) at sfreq=250.0; kind=linear needs >= 2"),
        (lambda: detrend(window_s=0.001), r"kind=constant needs >= 1"),
    ],
)
def test_sfreq_dependent_checks_at_build_time(spec, message):
    with pytest.raises(ValueError, match=message):
        spec().infer_info(make_info(2, SFREQ))
    spec().infer_info(make_info(2, 5000.0))


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: fir_filter("lowpas", 30.0, numtaps=11), "Did you mean 'lowpass'"),
        (lambda: fir_filter("lowpass", 30.0), "exactly one of numtaps and transition_hz"),
        (lambda: fir_filter("lowpass", 30.0, numtaps=11, transition_hz=2.0), "exactly one of"),
        (lambda: fir_filter("highpass", 1.0, numtaps=100), "numtaps=100 must be odd for kind='highpass'"),
        (lambda: fir_filter("lowpass", 30.0, numtaps=0), "numtaps=0 must be an integer >= 1"),
        (lambda: fir_filter("lowpass", 30.0, numtaps=11, window="hammming"), "window='hammming' is not a scipy window"),
        (lambda: fir_filter("lowpass", 30.0, transition_hz=2.0, window="bartlett"), "window='bartlett' is not one of"),
        (lambda: fir_filter("bandpass", (30.0, 8.0), numtaps=11), "must be increasing"),
        (lambda: fir_filter("lowpass", 30.0, transition_hz=-1.0), "transition_hz=-1.0 must be finite and > 0"),
        (lambda: detrend("mean"), "kind='mean' is not one of"),
        (lambda: detrend("linear"), "kind='linear' requires window_s"),
        (lambda: detrend(window_s=0.0), "window_s=0.0 must be finite and > 0"),
    ],
)
def test_bad_params_raise_pipeline_definition_error(factory, message):
    with pytest.raises(PipelineDefinitionError, match=message):
        factory()


def test_real_recording_streaming_equals_reference(eegmmidb_6ch_10s, rng):
    x, info = eegmmidb_6ch_10s
    sfreq = info.sfreq
    spec = fir_filter("bandpass", (8.0, 30.0), transition_hz=2.0)
    got = _concat(run_offline(spec, chunks_from_array(x, info, random_chunking(x.shape[1], rng, max_size=64))))
    _close(got, signal.lfilter(_taps(spec, sfreq), 1.0, x))
    spec = detrend("linear", window_s=0.5)
    got = _concat(run_offline(spec, chunks_from_array(x, info, random_chunking(x.shape[1], rng, max_size=64))))
    assert_allclose(got, _detrend_reference(x, 80, True), rtol=1e-4, atol=1e-6 * np.abs(x).max())
