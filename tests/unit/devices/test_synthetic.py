"""Synthetic: determinism, regeneration, content (alpha, line, 1/f, blinks, markers), pacing, faults."""

from __future__ import annotations

import pickle
import time

import numpy as np
import pytest
from scipy.signal import welch

from neuraflow.chunk import Chunk
from neuraflow.devices import Device, Synthetic
from neuraflow.devices._montage import MONTAGE_CHANNELS, channel_names
from neuraflow.errors import DeviceError, PipelineDefinitionError

T0 = 1_700_000_000.0


def offline(**kwargs) -> Synthetic:
    kwargs.setdefault("realtime", False)
    kwargs.setdefault("start_s", T0)
    dev = Synthetic(**kwargs)
    dev.open()
    return dev


def read_n(dev: Synthetic, n_chunks: int) -> list[Chunk]:
    chunks = [dev.read(0.0) for _ in range(n_chunks)]
    assert all(c is not None for c in chunks)
    return chunks


def concat(chunks: list[Chunk]) -> np.ndarray:
    return np.concatenate([c.data for c in chunks], axis=1)


def psd(x: np.ndarray, sfreq: float) -> tuple[np.ndarray, np.ndarray]:
    return welch(x.astype(np.float64), fs=sfreq, nperseg=int(2 * sfreq))  # 0.5 Hz bins


# Protocol, determinism, regeneration ------------------------------------------------
def test_is_a_device_with_eeg_info():
    dev = Synthetic("eeg-7", n_channels=8, sfreq=250.0)
    assert isinstance(dev, Device)
    assert dev.blocking is False
    assert dev.info.stream_id == "eeg-7"
    assert dev.info.channels == ("Fp1", "Fp2", "C3", "C4", "P7", "P8", "O1", "O2")
    assert set(dev.info.ch_types) == {"eeg"} and set(dev.info.units) == {"V"}


def test_same_seed_identical_different_seed_differs():
    a, b, c = offline(seed=3), offline(seed=3), offline(seed=4)
    xa, xb, xc = (concat(read_n(d, 100)) for d in (a, b, c))
    assert xa.dtype == np.float32
    np.testing.assert_array_equal(xa, xb)
    assert not np.allclose(xa, xc)


def test_chunks_equal_expected_across_block_boundaries():
    dev = offline(n_channels=5, chunk_size=37, blinks=True)
    n_chunks = max(3 * dev.block_size // 37 + 5, 4000 // 37 + 1)  # spans several generated blocks
    chunks = read_n(dev, n_chunks)
    for k, chunk in enumerate(chunks):
        assert chunk.meta["sample_index"] == k * 37
        assert chunk.t0_s == T0 + k * 37 / 250.0
        assert dev.sample_index_of(chunk.t0_s) == k * 37
    data = concat(chunks)
    np.testing.assert_array_equal(data, dev.expected(0, data.shape[1]))
    # A fresh device regenerates any range, independent of the read pattern.
    fresh = Synthetic(n_channels=5, chunk_size=37, blinks=True)
    np.testing.assert_array_equal(fresh.expected(1000, 3000), data[:, 1000:4000])
    np.testing.assert_array_equal(fresh.expected(4000, 0), data[:, :0])


def test_channel_is_independent_of_channel_count():
    small, large = Synthetic(n_channels=3), Synthetic(n_channels=64)
    # Same names and region weights for the first channels, hence the same signal.
    np.testing.assert_array_equal(small.expected(0, 5000), large.expected(0, 5000)[:3])


def test_no_discontinuity_at_block_boundaries():
    dev = Synthetic(n_channels=4, line_freq=None, alpha_amplitude_v=0.0)
    b = dev.block_size
    x = dev.expected(0, 4 * b).astype(np.float64)
    steps = np.abs(np.diff(x, axis=1))
    typical = np.percentile(steps, 99.9)
    for j in (1, 2, 3):
        assert steps[:, j * b - 1].max() < 2 * typical


# Content ------------------------------------------------------------------------------
def test_alpha_and_line_peaks_in_psd():
    sfreq = 250.0
    dev = Synthetic(n_channels=8, sfreq=sfreq, line_freq=50.0, seed=1)
    x = dev.expected(0, int(120 * sfreq))
    freqs, pxx = psd(x[dev.info.channels.index("O1")], sfreq)

    def peak_ratio(f0: float) -> float:
        at = pxx[np.argmin(np.abs(freqs - f0))]
        around = pxx[(np.abs(freqs - f0) > 2.0) & (np.abs(freqs - f0) < 5.0)]
        return at / np.median(around)

    assert peak_ratio(10.0) > 10
    assert peak_ratio(50.0) > 10
    assert peak_ratio(100.0) > 3  # second harmonic
    # Alpha is occipital: weaker at the front.
    _, pxx_fp1 = psd(x[0], sfreq)
    i10 = np.argmin(np.abs(freqs - 10.0))
    assert pxx[i10] > 5 * pxx_fp1[i10]


def test_line_freq_none_and_60_hz():
    sfreq = 250.0
    x_none = Synthetic(n_channels=1, line_freq=None).expected(0, int(60 * sfreq))[0]
    x_60 = Synthetic(n_channels=1, line_freq=60.0).expected(0, int(60 * sfreq))[0]
    freqs, p_none = psd(x_none, sfreq)
    _, p_60 = psd(x_60, sfreq)
    i60 = np.argmin(np.abs(freqs - 60.0))
    assert p_60[i60] > 100 * p_none[i60]


def test_background_is_pink():
    sfreq = 250.0
    dev = Synthetic(n_channels=4, sfreq=sfreq, line_freq=None, alpha_amplitude_v=0.0, background_rms_v=10e-6)
    x = dev.expected(0, int(120 * sfreq))
    np.testing.assert_allclose(x.std(axis=1), 10e-6, rtol=0.3)
    freqs, pxx = psd(x, sfreq)
    band = (freqs >= 1.0) & (freqs <= 60.0)
    slope = np.polyfit(np.log(freqs[band]), np.log(pxx[:, band].mean(axis=0)), 1)[0]
    assert -1.4 < slope < -0.6


def test_blinks_are_frontal_deflections():
    sfreq = 250.0
    n = int(60 * sfreq)
    plain = Synthetic(n_channels=8, blinks=False).expected(0, n)
    blinky = Synthetic(n_channels=8, blinks=True).expected(0, n)
    blink = (blinky - plain).astype(np.float64)
    fp1, o1 = blink[0], blink[6]
    assert fp1.max() > 100e-6
    assert np.abs(o1).max() < 0.05 * fp1.max()
    # About one blink per 5 s: count upward crossings of half the peak.
    above = fp1 > 50e-6
    n_blinks = int(np.sum(above[1:] & ~above[:-1]))
    assert 9 <= n_blinks <= 13


def test_markers_only_when_on():
    off = offline(markers=False)
    read_n(off, 500)
    assert off.drain_events() == []

    dev = offline(markers=True, chunk_size=25)
    chunks = read_n(dev, 600)  # 60 s
    events = dev.drain_events()
    assert dev.drain_events() == []
    assert 13 <= len(events) <= 16
    assert {e.label for e in events} == {"T1", "T2"}
    for e in events:
        idx = e.meta["sample_index"]
        assert 0 <= idx < 600 * 25
        assert e.t_s == pytest.approx(T0 + idx / 250.0)
        assert e.stream_id == dev.info.stream_id
    assert [e.meta["sample_index"] for e in events] == sorted(e.meta["sample_index"] for e in events)
    assert events == dev.expected_events(0, chunks[-1].meta["sample_index"] + 25)


def test_markers_arrive_with_their_chunk():
    dev = offline(markers=True, chunk_size=10)
    for _ in range(3000):
        chunk = dev.read(0.0)
        start = chunk.meta["sample_index"]
        for e in dev.drain_events():
            assert start <= e.meta["sample_index"] < start + 10


@pytest.mark.parametrize("n_channels", [1, 64, 128])
@pytest.mark.parametrize("sfreq", [250.0, 1000.0])
def test_any_channel_count_and_rate(n_channels, sfreq):
    dev = offline(n_channels=n_channels, sfreq=sfreq, blinks=True, markers=True)
    chunk = dev.read(0.0)
    assert chunk.data.shape == (n_channels, 32)
    assert chunk.info.channels == channel_names(n_channels)
    assert np.isfinite(chunk.data).all()
    data = concat([chunk, *read_n(dev, 10)])
    np.testing.assert_array_equal(data, dev.expected(0, 11 * 32))


def test_channel_names():
    assert len(MONTAGE_CHANNELS) == 64 and len(set(MONTAGE_CHANNELS)) == 64
    assert channel_names(1) == ("Fp1",)
    assert channel_names(65)[0] == "EEG001" and channel_names(128)[-1] == "EEG128"
    mne = pytest.importorskip("mne")
    biosemi64 = set(mne.channels.make_standard_montage("biosemi64").ch_names)
    assert set(MONTAGE_CHANNELS) == biosemi64


# Pickling, faults, validation -------------------------------------------------------
def test_pickle_before_and_after_open():
    dev = Synthetic(n_channels=4, seed=9, realtime=False, start_s=T0, markers=True)
    copy = pickle.loads(pickle.dumps(dev))
    copy.open()
    dev.open()
    np.testing.assert_array_equal(copy.read(0.0).data, dev.read(0.0).data)
    # Caches do not travel: a pickled open device is small and comes back closed.
    blob = pickle.dumps(dev)
    assert len(blob) < 10_000
    with pytest.raises(DeviceError, match="before open"):
        pickle.loads(blob).read(0.0)


def test_fail_after_reads_raises_once_per_open():
    dev = offline(fail_after_reads=3)
    read_n(dev, 3)
    with pytest.raises(DeviceError, match="synthetic failure injected"):
        dev.read(0.0)
    assert dev.read(0.0).meta["sample_index"] == 3 * 32  # no chunk lost, no second failure
    read_n(dev, 10)
    dev.close()
    dev.open()  # a reconnect re-arms the failure
    read_n(dev, 3)
    with pytest.raises(DeviceError):
        dev.read(0.0)


def test_fail_after_zero_reads():
    dev = offline(fail_after_reads=0)
    with pytest.raises(DeviceError):
        dev.read(0.0)
    assert dev.read(0.0) is not None


def test_read_before_open_raises():
    with pytest.raises(DeviceError, match="before open"):
        Synthetic(realtime=False).read(0.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_channels": 0}, "n_channels"),
        ({"sfreq": -1.0}, "sfreq"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"seed": -1}, "seed"),
        ({"line_freq": 125.0}, "line_freq"),
        ({"line_amplitude_v": -1e-6}, "line_amplitude_v"),
        ({"blinks": "yes"}, "blinks"),
        ({"start_s": float("nan")}, "start_s"),
        ({"fail_after_reads": -1}, "fail_after_reads"),
        ({"sfreq": 16.0, "line_freq": None}, "alpha"),
    ],
)
def test_invalid_parameters(kwargs, match):
    with pytest.raises(PipelineDefinitionError, match=match):
        Synthetic(**kwargs)


# Real-time pacing (no test-side sleeps; the device is given a clock in the past/future) ---
def test_realtime_not_due_returns_none():
    chunk_s = 32 / 250.0
    dev = Synthetic(start_s=time.time() + 100.0)
    assert dev.next_ready_s() is None  # clock starts at open()
    dev.open()
    assert dev.next_ready_s() == pytest.approx(dev.start_s + chunk_s)
    assert dev.read(0.0) is None
    assert dev.read(0.01) is None


def test_realtime_catch_up_one_chunk_per_read():
    chunk_s = 1.0  # long chunks keep the test robust on a loaded machine
    start = time.time() - 10 * chunk_s - 1e-3  # 10 chunks are due
    dev = Synthetic(start_s=start, chunk_size=250)
    dev.open()
    due = [dev.next_ready_s()]
    chunks = []
    for _ in range(10):
        chunks.append(dev.read(0.0))
        due.append(dev.next_ready_s())
    assert all(c is not None for c in chunks)
    assert [c.meta["sample_index"] for c in chunks] == [250 * k for k in range(10)]
    assert [c.t0_s for c in chunks] == pytest.approx([start + k * chunk_s for k in range(10)])
    np.testing.assert_allclose(np.diff(due), chunk_s, atol=1e-6)  # epoch-time float precision
    assert all(c.recv_s >= d for c, d in zip(chunks, due))
    assert dev.read(0.0) is None  # chunk 10 is due in about 1 s: not yet


def test_realtime_read_waits_within_timeout():
    chunk_s = 32 / 250.0
    dev = Synthetic(start_s=time.time() - chunk_s + 0.02)  # chunk 0 due in 20 ms
    dev.open()
    chunk = dev.read(1.0)
    assert chunk is not None
    assert chunk.recv_s >= dev.start_s + chunk_s


def test_realtime_reconnect_skips_to_now():
    chunk_s = 32 / 250.0
    dev = Synthetic(start_s=time.time() - 100 * chunk_s - 1e-3)
    dev.open()
    dev.read(0.0)
    dev.close()
    dev.open()
    chunk = dev.read(0.0)
    assert chunk.meta["sample_index"] >= 98 * 32  # the gap is lost, as with hardware


def test_non_realtime_always_ready():
    dev = offline()
    assert dev.next_ready_s() == 0.0
    assert dev.read(0.0) is not None
