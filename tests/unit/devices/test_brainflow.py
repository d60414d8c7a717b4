"""BrainFlowDevice on BrainFlow's synthetic board (-1) and playback board (-3); skipped without brainflow."""

from __future__ import annotations

import pickle
import time

import numpy as np
import pytest

from neuraflow.chunk import Chunk
from neuraflow.devices import BrainFlowDevice, Device
from neuraflow.errors import DeviceError, PipelineDefinitionError
from neuraflow.ops import run_offline
from neuraflow.sync import dejitter

board_shim = pytest.importorskip("brainflow.board_shim", reason="brainflow is not installed (extra [brainflow])")
data_filter = pytest.importorskip("brainflow.data_filter")
board_shim.BoardShim.disable_board_logger()

SYNTHETIC, PLAYBACK = -1, -3


def read_n(dev, n_chunks, timeout_s=2.0) -> list[Chunk]:
    chunks = []
    deadline = time.monotonic() + 20.0
    while len(chunks) < n_chunks and time.monotonic() < deadline:
        chunk = dev.read(timeout_s)
        if chunk is not None:
            chunks.append(chunk)
    return chunks


def test_synthetic_board_description_without_opening():
    descr = board_shim.BoardShim.get_board_descr(SYNTHETIC)
    dev = BrainFlowDevice(SYNTHETIC, stream_id="syn", channels=("eeg", "accel"))
    assert isinstance(dev, Device) and dev.blocking
    names = descr["eeg_names"].split(",")
    assert dev.info.channels == (*names, "accel0", "accel1", "accel2")
    assert dev.info.sfreq == board_shim.BoardShim.get_sampling_rate(SYNTHETIC) == 250.0
    assert dev.info.ch_types[:len(names)] == ("eeg",) * len(names) and dev.info.units[0] == "V"
    assert dev.info.units[-1] == "g" and dev.info.meta["board_name"] == "Synthetic"
    assert BrainFlowDevice(SYNTHETIC).info.stream_id == "brainflow-Synthetic"
    assert pickle.loads(pickle.dumps(dev)).info == dev.info


def test_invalid_configuration():
    with pytest.raises(PipelineDefinitionError, match="unknown params"):
        BrainFlowDevice(SYNTHETIC, params={"serial": "/dev/x"})
    with pytest.raises(PipelineDefinitionError, match="master_board"):
        BrainFlowDevice(PLAYBACK, params={"file": "x.csv"})
    with pytest.raises(PipelineDefinitionError, match="channels"):
        BrainFlowDevice(SYNTHETIC, channels=("eeeg",))
    with pytest.raises(PipelineDefinitionError, match="no 'gyro'"):
        BrainFlowDevice(38, preset="ancillary", channels=("gyro",))  # Muse 2: PPG only in its ancillary preset
    with pytest.raises(DeviceError, match="before open"):
        BrainFlowDevice(SYNTHETIC).read(0.0)


def test_muse_presets_have_their_own_rates():
    aux = BrainFlowDevice(38, preset="auxiliary", channels=("accel", "gyro"))
    assert aux.info.sfreq == 52.0 and aux.info.channels[0] == "accel0" and len(aux.info.channels) == 6
    eeg = BrainFlowDevice(38)
    assert eeg.info.sfreq == 256.0 and eeg.info.channels == ("TP9", "AF7", "AF8", "TP10")


def test_synthetic_board_streams_timestamped_chunks():
    dev = BrainFlowDevice(SYNTHETIC, chunk_size=25, channels=("eeg",))
    dev.open()
    try:
        started = time.time()
        chunks = read_n(dev, 12)
    finally:
        dev.close()
        dev.close()  # idempotent
    assert len(chunks) == 12
    assert all(c.n_samples == 25 and c.n_channels == 16 for c in chunks)
    idx = [c.meta["sample_index"] for c in chunks]
    assert idx == list(range(0, 300, 25))
    t0 = np.array([c.t0_s for c in chunks])
    assert np.all(np.diff(t0) > 0) and abs(t0[0] - started) < 2.0
    assert all(c.t0_s <= c.recv_s for c in chunks)
    span = t0[-1] - t0[0]
    assert span == pytest.approx(275 / 250.0, rel=0.1)  # the synthetic board paces at its rate
    assert np.abs(chunks[0].data).max() < 1e-3  # microvolts -> volts
    out = run_offline(dejitter(), chunks)
    assert [o.meta["sample_index"] for o in out] == idx and np.all(np.diff([o.t0_s for o in out]) > 0)


def test_playback_board_replays_a_file_with_its_timestamps(tmp_path):
    # Record a second of the synthetic board, then play it back through the playback board.
    board = board_shim.BoardShim(SYNTHETIC, board_shim.BrainFlowInputParams())
    board.prepare_session()
    board.start_stream()
    time.sleep(1.2)
    board.stop_stream()
    recorded = board.get_board_data()
    board.release_session()
    path = tmp_path / "synthetic.csv"
    data_filter.DataFilter.write_file(recorded, str(path), "w")
    descr = board_shim.BoardShim.get_board_descr(SYNTHETIC)

    dev = BrainFlowDevice(PLAYBACK, params={"file": str(path), "master_board": SYNTHETIC}, chunk_size=50,
                          config=("old_timestamps",), stream_id="replay")
    assert dev.info.sfreq == 250.0 and dev.info.channels == tuple(descr["eeg_names"].split(","))
    dev.open()
    try:
        chunks = read_n(dev, 3)
    finally:
        dev.close()
    assert len(chunks) == 3
    got = np.concatenate([c.data for c in chunks], axis=1)
    n = got.shape[1]
    ts = recorded[descr["timestamp_channel"]]
    np.testing.assert_allclose([c.t0_s for c in chunks], ts[[0, 50, 100]][: len(chunks)], rtol=0, atol=1e-5)
    expect = (recorded[descr["eeg_channels"]][:, :n] * 1e-6).astype(np.float32)
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-12)


def _tiny_playback_file(path, n: int) -> dict:
    """A generated BrainFlow file of the synthetic board's layout: EEG row k holds k * 1000 + sample index (uV)."""
    descr = board_shim.BoardShim.get_board_descr(SYNTHETIC)
    data = np.zeros((descr["num_rows"], n))
    for k, row in enumerate(descr["eeg_channels"]):
        data[row] = k * 1000 + np.arange(n)
    data[descr["timestamp_channel"]] = 1.7e9 + np.arange(n) / 250.0
    data[descr["package_num_channel"]] = np.arange(n) % 256
    data_filter.DataFilter.write_file(data, str(path), "w")
    return descr


def test_playback_board_ends_with_end_of_stream_at_the_end_of_its_file(tmp_path):
    from neuraflow.errors import EndOfStream

    path = tmp_path / "tiny.csv"
    _tiny_playback_file(path, 110)
    dev = BrainFlowDevice(PLAYBACK, params={"file": str(path), "master_board": SYNTHETIC}, chunk_size=25,
                          config=("old_timestamps",))
    dev.open()
    chunks, t0 = [], time.monotonic()
    try:
        with pytest.raises(EndOfStream, match="110 samples"):
            while time.monotonic() - t0 < 10.0:
                chunk = dev.read(1.0)
                if chunk is not None:
                    chunks.append(chunk)
        with pytest.raises(EndOfStream):
            dev.read(0.1)  # stays ended
    finally:
        dev.close()
    assert time.monotonic() - t0 < 3.0  # ends right after the file (~0.44 s at 250 Hz), no stall
    data = np.concatenate([c.data for c in chunks], axis=1)
    assert [c.n_samples for c in chunks] == [25, 25, 25, 25, 10]  # the last partial chunk is not held back
    np.testing.assert_allclose(data[0] * 1e6, np.arange(110), atol=1e-6)
    assert [c.meta["sample_index"] for c in chunks] == [0, 25, 50, 75, 100]
    assert not [e for e in dev.drain_events() if e.label == "drop"]


def test_playback_board_start_offset_and_loopback(tmp_path):
    from neuraflow.devices.brainflow import _playback_samples
    from neuraflow.errors import EndOfStream

    path = tmp_path / "tiny.csv"
    _tiny_playback_file(path, 100)
    assert _playback_samples(str(path), ()) == 100
    assert _playback_samples(str(path), ("set_index_percentage:33",)) == 67
    assert _playback_samples(str(path), ("loopback_true",)) is None  # loops: never ends
    dev = BrainFlowDevice(PLAYBACK, params={"file": str(path), "master_board": SYNTHETIC}, chunk_size=50,
                          config=("set_index_percentage:50",))
    dev.open()
    got = 0
    try:
        with pytest.raises(EndOfStream, match="50 samples"):
            for _ in range(100):
                chunk = dev.read(1.0)
                got += 0 if chunk is None else chunk.n_samples
    finally:
        dev.close()
    assert got == 50


def test_playback_board_finishes_its_runtime_slot(tmp_path):
    from neuraflow.runtime.slot import DeviceSlot, SlotOptions

    path = tmp_path / "tiny.csv"
    _tiny_playback_file(path, 60)
    dev = BrainFlowDevice(PLAYBACK, params={"file": str(path), "master_board": SYNTHETIC}, chunk_size=20)
    slot = DeviceSlot(dev, SlotOptions())
    slot.start()  # blocking device: read from the slot's own thread
    deadline = time.monotonic() + 10.0
    while not slot.finished:
        assert time.monotonic() < deadline, "the slot never saw the end of the file"
        time.sleep(0.02)
    chunks, _ = slot.take()
    slot.stop()
    assert sum(c.n_samples for c in chunks) == 60 and slot.counters.errors == 0 and slot.counters.reconnects == 0
