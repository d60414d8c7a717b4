"""threshold_spikes and bin_counts: streaming equals an offline reference over whole signals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from neuraflow.errors import PipelineDefinitionError, StreamMismatchError
from neuraflow.ops import BoundOp, bin_counts, run_offline, threshold_spikes
from neuraflow.ops.spikes import noise_stride
from neuraflow.testing import chunks_from_array, make_info, random_chunking

SFREQ = 10_000.0


def _signal(seed: int, n_channels: int = 6, n_samples: int = 8000) -> np.ndarray:
    """Gaussian noise plus negative spikes, some of them pairs closer than 1 ms."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_channels, n_samples)).astype(np.float32)
    for c in range(n_channels):
        for t in rng.integers(5, n_samples - 20, size=20):
            x[c, t : t + 4] -= np.float32(9.0)
            if rng.random() < 0.4:  # a second crossing inside (or just outside) the refractory period
                gap = int(rng.integers(6, 16))
                x[c, t + gap : t + gap + 3] -= np.float32(9.0)
    return x


def _reference(x, sfreq, *, k=4.5, refractory_s=0.001, polarity="neg", calibration_s=0.1, running=False,
               fixed=None) -> np.ndarray:
    """Detect on the whole signal at once, sample by sample (the documented rule)."""
    n_ch, n = x.shape
    s = {"neg": -x, "pos": x, "both": np.abs(x)}[polarity].astype(np.float32)
    thr = np.full((n_ch, n), np.inf if fixed is None else fixed, np.float32)
    if fixed is None:
        nb = max(1, round(calibration_s * sfreq))
        stride = noise_stride(sfreq)
        for b in range(n // nb):
            if b and not running:
                break
            start = b * nb
            block = np.abs(x[:, start + (-start) % stride : start + nb : stride])
            for c in range(n_ch):
                row = block[c][np.isfinite(block[c])]
                med = np.median(row) if row.size else np.nan
                value = np.float32((k / 0.6745) * float(med))
                value = value if np.isfinite(value) and value > 0 else np.float32(np.inf)
                thr[c, start + nb : (start + 2 * nb) if running else n] = value
    n_ref = max(1, round(refractory_s * sfreq))
    out = np.zeros((n_ch, n), np.float32)
    for c in range(n_ch):
        prev, last = np.float32(np.inf), -(10**12)
        for i in range(n):
            if s[c, i] > thr[c, i] and not prev > thr[c, i] and i - last >= n_ref:
                out[c, i] = 1.0
                last = i
            prev = s[c, i]
    return out


def _stream(spec, x, sizes, sfreq=SFREQ):
    outs = run_offline(spec, chunks_from_array(x, make_info(x.shape[0], sfreq), sizes))
    return outs, np.concatenate([o.data for o in outs], axis=1)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("polarity", "running"), [("neg", False), ("neg", True), ("both", True), ("pos", False)])
def test_streaming_equals_offline_reference(seed, polarity, running):
    x = _signal(seed)
    if polarity == "pos":
        x = -x
    want = _reference(x, SFREQ, polarity=polarity, running=running)
    rng = np.random.default_rng(100 + seed)
    for sizes in ([x.shape[1]], random_chunking(x.shape[1], rng, max_size=700), random_chunking(x.shape[1], rng, max_size=7)):
        _, got = _stream(threshold_spikes(polarity=polarity, calibration_s=0.1, running=running), x, sizes)
        np.testing.assert_array_equal(got, want)
    assert want.sum() > 50  # the spikes were found ...
    assert want[:, :1000].sum() == 0  # ... but none during calibration


def test_refractory_holds_across_chunk_boundaries():
    x = np.zeros((2, 60), np.float32)
    x[:, [10, 14, 19, 25, 40]] = -1.0  # crossings at 10, 14, 19, 25, 40; refractory 10 samples
    want = [10, 25, 40]  # 14 and 19 fall within 10 of the kept 10 (19 is kept only if 14 was)
    for sizes in ([60], [11, 49], [12, 3, 5, 40], [1] * 60):
        _, got = _stream(threshold_spikes(0.5, refractory_s=0.001), x, sizes)
        assert np.flatnonzero(got[0]).tolist() == want, sizes
        np.testing.assert_array_equal(got[0], got[1])
    np.testing.assert_array_equal(_reference(x, SFREQ, refractory_s=0.001, fixed=0.5), got)


def test_a_crossing_needs_the_signal_to_come_back_above_threshold():
    x = np.zeros((1, 40), np.float32)
    x[0, 5:30] = -1.0  # one long excursion: one spike, even after the refractory period
    for sizes in ([40], [6, 34], [1] * 40):
        _, got = _stream(threshold_spikes(0.5, refractory_s=0.0002), x, sizes)
        assert np.flatnonzero(got[0]).tolist() == [5]


def test_output_metadata_and_counters():
    x = _signal(3, n_channels=3, n_samples=3000)
    outs, got = _stream(threshold_spikes(calibration_s=0.1), x, [500, 600, 1900])
    assert [o.meta["calibrating"] for o in outs] == [True, False, False]
    assert outs[0].meta["no_threshold"] == 3 and outs[1].meta["no_threshold"] == 0
    assert sum(o.meta["n_spikes"] for o in outs) == got.sum()
    assert outs[0].info.units == ("count",) * 3 and outs[0].sfreq == SFREQ
    assert [o.t0_s for o in outs] == pytest.approx([1_700_000_000.0 + s / SFREQ for s in (0, 500, 1100)])


def test_nan_burst_is_counted_and_does_not_poison_later_chunks():
    x = _signal(4, n_channels=4, n_samples=6000)
    x[1, 2500:2600] = np.nan
    x[2, 200:300] = np.inf  # inside the calibration block: left out of the estimate
    outs, got = _stream(threshold_spikes(calibration_s=0.1, running=True), x, [1000] * 6)
    assert [o.meta["nonfinite"] for o in outs] == [100, 0, 100, 0, 0, 0]
    assert np.isfinite(got).all()
    np.testing.assert_array_equal(got, _reference(x, SFREQ, calibration_s=0.1, running=True))
    assert got[1, 3000:].sum() > 0  # detection resumes on the channel after the burst


def test_flat_channel_gets_no_threshold_and_is_counted():
    x = _signal(5, n_channels=3, n_samples=3000)
    x[1] = 0.0
    outs, got = _stream(threshold_spikes(calibration_s=0.1), x, [1500, 1500])
    assert outs[-1].meta["no_threshold"] == 1
    assert got[1].sum() == 0 and got[0].sum() > 0


def test_all_nan_channel_gets_no_threshold():
    x = _signal(6, n_channels=2, n_samples=2000)
    x[0, :1000] = np.nan
    outs, _ = _stream(threshold_spikes(calibration_s=0.1), x, [2000])
    assert outs[0].meta["no_threshold"] == 1


@pytest.mark.parametrize("spec", [threshold_spikes(), bin_counts(0.01)], ids=["threshold_spikes", "bin_counts"])
def test_rate_or_channel_change_mid_stream_raises(spec):
    op = BoundOp(spec)
    (first,) = chunks_from_array(np.zeros((3, 50), np.float32), make_info(3, 1000.0), [50])
    state, _ = op.step(op.init(first), first)
    (faster,) = chunks_from_array(np.zeros((3, 50), np.float32), make_info(3, 2000.0), [50])
    with pytest.raises(StreamMismatchError, match="sfreq=2000.0"):
        op.step(state, faster)
    (wider,) = chunks_from_array(np.zeros((4, 50), np.float32), make_info(4, 1000.0), [50])
    with pytest.raises(StreamMismatchError, match="4 channels"):
        op.step(state, wider)


def test_vectorised_over_384_channels():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((384, 30_000)).astype(np.float32)
    x[:, 20_000::997] -= 12.0
    outs, got = _stream(threshold_spikes(calibration_s=0.5), x, [300] * 100, sfreq=30_000.0)
    assert got[:, 20_000:].sum(axis=1).min() >= 10  # every planted spike of every channel


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"threshold": "std"}, "threshold"), ({"threshold": -1.0}, "threshold"), ({"k": 0}, "k"),
     ({"polarity": "up"}, "polarity"), ({"refractory_s": -1}, "refractory_s"), ({"calibration_s": 0}, "calibration_s"),
     ({"running": 1}, "running")],
)
def test_bad_parameters_are_named(kwargs, match):
    with pytest.raises(PipelineDefinitionError, match=match):
        threshold_spikes(**kwargs)


# --- bin_counts ------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bin_counts_equals_reshape_sum(seed):
    rng = np.random.default_rng(seed)
    x = (rng.random((5, 1234)) < 0.05).astype(np.float32)
    nb = 100  # 10 ms at 10 kHz
    n_bins = x.shape[1] // nb
    want = x[:, : n_bins * nb].reshape(5, n_bins, nb).sum(axis=2)
    for sizes in ([1234], random_chunking(1234, rng, max_size=250), random_chunking(1234, rng, max_size=3)):
        outs, got = _stream(bin_counts(0.01), x, sizes)
        np.testing.assert_array_equal(got, want)
        assert all(o.sfreq == 100.0 and o.info.units == ("V",) * 5 for o in outs)
        times = np.concatenate([o.times_s for o in outs])
        np.testing.assert_allclose(times - 1_700_000_000.0, np.arange(n_bins) * 0.01, atol=1e-6)


def test_bin_counts_nan_stays_in_its_bin():
    x = np.ones((2, 50), np.float32)
    x[0, 12] = np.nan
    _, got = _stream(bin_counts(0.001), x, [7, 43])  # 10 samples per bin at 10 kHz
    assert np.isnan(got[0, 1]) and np.isfinite(np.delete(got[0], 1)).all() and np.isfinite(got[1]).all()


def test_bin_counts_rejects_fractional_bins_at_build_time():
    with pytest.raises(ValueError, match="whole number of samples"):
        bin_counts(0.0015).infer_info(make_info(2, 1000.0))
    with pytest.raises(PipelineDefinitionError, match="bin_s"):
        bin_counts(0.0)


def test_spike_pipeline_counts_planted_spikes():
    """bandpass(300-6000) -> threshold_spikes -> bin_counts on 30 kHz data finds planted spikes."""
    from neuraflow.ops import bandpass

    sfreq, n = 30_000.0, 60_000
    rng = np.random.default_rng(8)
    x = (10e-6 * rng.standard_normal((4, n))).astype(np.float32)
    x += np.float32(50e-6) * np.sin(2 * np.pi * 2.0 * np.arange(n) / sfreq, dtype=np.float32)  # slow drift
    times = np.arange(31_000, n - 100, 1500)  # 20 Hz after the calibration second
    shape = -120e-6 * np.exp(-((np.arange(30) - 8) ** 2) / 8.0)
    for t in times:
        x[:, t : t + 30] += shape.astype(np.float32)
    info = make_info(4, sfreq)
    chunks = chunks_from_array(x, info, [300] * (n // 300))
    filtered = run_offline(bandpass(300.0, 6000.0, order=3), chunks)
    spikes = run_offline(threshold_spikes(calibration_s=1.0), filtered)
    counts = np.concatenate([c.data for c in run_offline(bin_counts(0.01), spikes)], axis=1)
    assert counts.shape == (4, n // 300)
    per_channel = counts.sum(axis=1)
    assert np.all(np.abs(per_channel - len(times)) <= 2), per_channel
    assert math.isclose(run_offline(bin_counts(0.01), spikes)[0].sfreq, 100.0)
