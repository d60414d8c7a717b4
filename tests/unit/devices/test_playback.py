"""FilePlayback on the real PhysioNet EDF and on a small FIF written with MNE."""

from __future__ import annotations

import pickle
import time
from collections import Counter

import mne
import numpy as np
import pytest

from neuraflow.chunk import Chunk
from neuraflow.devices import Device, FilePlayback
from neuraflow.errors import DeviceError, EndOfStream, PipelineDefinitionError


def play_all(dev: FilePlayback) -> tuple[list[Chunk], list]:
    chunks, events = [], []
    with pytest.raises(EndOfStream):
        while True:
            chunk = dev.read(0.0)
            assert chunk is not None
            chunks.append(chunk)
            events.extend(dev.drain_events())
    events.extend(dev.drain_events())
    return chunks, events


@pytest.fixture(scope="module")
def edf_data(eegmmidb_edf) -> np.ndarray:
    return mne.io.read_raw(eegmmidb_edf, preload=True, verbose="error").get_data().astype(np.float32)


def test_edf_header_before_open(eegmmidb_edf):
    dev = FilePlayback(eegmmidb_edf)
    assert isinstance(dev, Device)
    assert dev.blocking is False
    info = dev.info
    assert info.stream_id == "S001R06"
    assert info.n_channels == 64 and info.sfreq == 160.0
    assert info.channels[:3] == ("Fc5.", "Fc3.", "Fc1.")
    assert set(info.ch_types) == {"eeg"} and set(info.units) == {"V"}
    assert dev.n_samples_total == 20_000
    assert dev.position == 0
    # Picklable before open, with the parsed header and no file handle.
    copy = pickle.loads(pickle.dumps(dev))
    assert copy.info == info and copy.n_samples_total == 20_000


def test_edf_plays_back_exactly(eegmmidb_edf, edf_data):
    dev = FilePlayback(eegmmidb_edf, chunk_size=50, realtime=False)
    dev.open()
    chunks, events = play_all(dev)
    data = np.concatenate([c.data for c in chunks], axis=1)
    assert data.dtype == np.float32
    np.testing.assert_array_equal(data, edf_data)
    assert dev.position == dev.n_samples_total == 20_000
    assert len(chunks) == 400
    # Device time defaults to the recording's meas_date when not realtime.
    t0 = mne.io.read_raw(eegmmidb_edf, verbose="error").info["meas_date"].timestamp()
    assert chunks[0].t0_s == t0
    assert chunks[7].t0_s == pytest.approx(t0 + 350 / 160.0)
    assert [c.meta["sample_index"] for c in chunks[:3]] == [0, 50, 100]
    # 30 annotations: T0 rest (15), T1 both fists (7), T2 both feet (8).
    assert len(events) == 30
    assert Counter(e.label for e in events) == {"T0": 15, "T1": 7, "T2": 8}
    assert all(4.0 < e.value < 4.3 for e in events)
    assert events[1].t_s == pytest.approx(t0 + 4.2)
    assert all(e.stream_id == "S001R06" for e in events)
    # EndOfStream keeps being raised.
    with pytest.raises(EndOfStream):
        dev.read(0.0)
    assert dev.next_ready_s() is None
    dev.close()
    dev.close()


def test_events_arrive_with_their_chunk(eegmmidb_edf):
    dev = FilePlayback(eegmmidb_edf, chunk_size=97, realtime=False, start_s=0.0)
    dev.open()
    seen = 0
    while dev.position < dev.n_samples_total:
        chunk = dev.read(0.0)
        start = chunk.meta["sample_index"]
        for e in dev.drain_events():
            assert start <= e.meta["sample_index"] < start + chunk.n_samples
            assert e.t_s == pytest.approx(e.meta["sample_index"] / 160.0)
            seen += 1
    assert seen == 30
    assert chunk.n_samples == 20_000 % 97  # last chunk is shorter


def test_picks_and_stream_id(eegmmidb_edf, edf_data):
    dev = FilePlayback(eegmmidb_edf, stream_id="mi", picks=["C3..", "Cz..", "C4.."], realtime=False)
    assert dev.info.channels == ("C3..", "Cz..", "C4..")
    assert dev.info.stream_id == "mi"
    dev.open()
    chunk = dev.read(0.0)
    names = mne.io.read_raw(eegmmidb_edf, verbose="error").ch_names
    np.testing.assert_array_equal(chunk.data, edf_data[[names.index(c) for c in ("C3..", "Cz..", "C4..")], :32])
    with pytest.raises(PipelineDefinitionError, match="picks"):
        _ = FilePlayback(eegmmidb_edf, picks=["nope"]).info


def test_realtime_pacing(eegmmidb_edf):
    dev = FilePlayback(eegmmidb_edf, chunk_size=16, start_s=time.time() + 100.0)
    dev.open()
    assert dev.next_ready_s() == pytest.approx(dev.start_s + 0.1)
    assert dev.read(0.0) is None
    assert dev.position == 0

    # 10 s chunks, 5 of them due: the 6th stays 10 s away, however slow open() is.
    start = time.time() - 50.0
    dev = FilePlayback(eegmmidb_edf, chunk_size=1600, start_s=start)
    dev.open()
    chunks = [dev.read(0.0) for _ in range(5)]
    assert [c.t0_s for c in chunks] == pytest.approx([start + 10.0 * k for k in range(5)])
    assert dev.read(0.0) is None
    assert dev.position == 5 * 1600
    assert dev.next_ready_s() == pytest.approx(start + 60.0)


def test_realtime_default_clock_starts_at_open(eegmmidb_edf):
    dev = FilePlayback(eegmmidb_edf)
    before = time.time()
    dev.open()
    assert before <= dev.next_ready_s() - 32 / 160.0 <= time.time()


def test_read_before_open_and_resume_after_close(eegmmidb_edf, edf_data):
    dev = FilePlayback(eegmmidb_edf, realtime=False)
    with pytest.raises(DeviceError, match="before open"):
        dev.read(0.0)
    dev.open()
    dev.read(0.0)
    dev.close()
    with pytest.raises(DeviceError):
        dev.read(0.0)
    dev.open()
    chunk = dev.read(0.0)
    assert chunk.meta["sample_index"] == 32
    np.testing.assert_array_equal(chunk.data, edf_data[:, 32:64])


def write_fif(path, *, meas_date=None, first_samp=0):
    sfreq = 100.0
    info = mne.create_info(["Cz", "EOG", "STI"], sfreq, ["eeg", "eog", "stim"])
    data = np.random.default_rng(0).standard_normal((3, 250)) * 1e-5
    raw = mne.io.RawArray(data, info, first_samp=first_samp, verbose="error")
    raw.set_meas_date(meas_date)
    onset0 = raw.first_time if meas_date is not None else 0.0
    annotations = mne.Annotations(
        onset=[onset0 + 0.5, onset0 + 1.23], duration=[0.2, 0.0], description=["go", "stop"], orig_time=meas_date
    )
    raw.set_annotations(annotations)
    raw.save(path, verbose="error")
    return mne.io.read_raw(path, preload=True, verbose="error").get_data().astype(np.float32)


@pytest.mark.parametrize("name", ["rec_raw.fif", "rec_raw.fif.gz"])
def test_fif_round_trip(tmp_path, name):
    path = tmp_path / name
    expected = write_fif(path)
    dev = FilePlayback(path, chunk_size=32, realtime=False)
    assert dev.info.stream_id == "rec_raw"
    assert dev.info.ch_types == ("eeg", "eog", "stim")
    assert dev.info.units == ("V", "V", "")
    assert dev.n_samples_total == 250
    dev = pickle.loads(pickle.dumps(dev))
    dev.open()
    chunks, events = play_all(dev)
    np.testing.assert_array_equal(np.concatenate([c.data for c in chunks], axis=1), expected)
    assert chunks[0].t0_s == 0.0  # no meas_date: device time counts from 0
    assert [(e.label, e.meta["sample_index"]) for e in events] == [("go", 50), ("stop", 123)]
    assert [e.value for e in events] == pytest.approx([0.2, 0.0])  # FIF stores float32 durations


def test_fif_with_meas_date_and_first_samp(tmp_path):
    from datetime import datetime, timezone

    meas_date = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    path = tmp_path / "dated_raw.fif"
    write_fif(path, meas_date=meas_date, first_samp=1000)
    dev = FilePlayback(path, realtime=False)
    dev.open()
    chunks, events = play_all(dev)
    t_first = meas_date.timestamp() + 1000 / 100.0
    assert chunks[0].t0_s == pytest.approx(t_first)
    assert [e.meta["sample_index"] for e in events] == [50, 123]
    assert events[0].t_s == pytest.approx(t_first + 0.5)


def test_bad_extension_and_missing_file(tmp_path):
    bad = tmp_path / "recording.csv"
    bad.write_text("1,2,3\n")
    with pytest.raises(PipelineDefinitionError, match=r"extension '\.csv'.*\.edf"):
        FilePlayback(bad)
    with pytest.raises(PipelineDefinitionError, match="does not exist"):
        FilePlayback(tmp_path / "missing.edf")
    upper = tmp_path / "REC.EDF"  # extensions are case-insensitive
    upper.write_bytes(b"")
    with pytest.raises(PipelineDefinitionError, match="chunk_size"):
        FilePlayback(upper, chunk_size=0)
    assert FilePlayback(upper).stream_id == "REC"


def test_unreadable_file_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.edf"
    path.write_bytes(b"not an edf file at all")
    dev = FilePlayback(path)
    with pytest.raises(PipelineDefinitionError, match="cannot read"):
        _ = dev.info
