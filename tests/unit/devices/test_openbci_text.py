"""OpenBCITextPlayback on the real OpenBCI GUI v6 recording (Cyton, 8 channels, 250 Hz)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from neuraflow.chunk import Chunk
from neuraflow.devices import Device, OpenBCITextPlayback
from neuraflow.errors import EndOfStream, PipelineDefinitionError



@pytest.fixture(scope="module")
def openbci(openbci_txt: Path) -> Path:
    return openbci_txt


@pytest.fixture(scope="module")
def table(openbci) -> np.ndarray:
    # Independent parse: columns 1-8 are EXG in µV, 9-11 accel in g, 22 the timestamp in ms.
    return np.loadtxt(openbci, delimiter=",", comments="%", skiprows=5, usecols=(*range(1, 12), 22))


def play_all(dev) -> list[Chunk]:
    chunks = []
    with pytest.raises(EndOfStream):
        while True:
            chunks.append(dev.read(0.0))
    return chunks


def test_header_before_open(openbci):
    dev = OpenBCITextPlayback(openbci)
    assert isinstance(dev, Device) and dev.blocking is False
    info = dev.info
    assert info.stream_id == "OpenBCI_GUI-v6-blinks-jawClench-alpha"
    assert info.sfreq == 250.0
    assert info.channels == tuple(f"exg{k}" for k in range(8))
    assert set(info.units) == {"V"} and set(info.ch_types) == {"eeg"}
    assert dev.n_samples_total == 22_490
    copy = pickle.loads(pickle.dumps(dev))
    assert copy.info == info and copy.n_samples_total == 22_490


def test_plays_back_volts_with_ms_timestamps(openbci, table):
    dev = OpenBCITextPlayback(openbci, chunk_size=100)
    dev.open()
    chunks = play_all(dev)
    data = np.concatenate([c.data for c in chunks], axis=1)
    assert data.shape == (8, 22_490)
    np.testing.assert_array_equal(data, (table[:, :8].T * 1e-6).astype(np.float32))
    assert abs(data[0, 0] - 61379.36e-6) < 1e-9  # the file's first value, µV -> V
    # The file's timestamps are Unix milliseconds: 1557936053329 -> 2019-05-15 16:00:53.329 UTC.
    assert chunks[0].t0_s == pytest.approx(1557936053.329, abs=1e-6)
    assert chunks[1].t0_s == pytest.approx(1557936053.329 + 100 / 250, abs=1e-6)
    assert chunks[5].meta["file_timestamp_s"] == pytest.approx(table[500, -1] / 1000, abs=1e-9)
    # The nominal timeline stays within 0.2 s of the file's clock over 90 s.
    last = chunks[-1]
    assert abs(last.t0_s - last.meta["file_timestamp_s"]) < 0.2
    assert dev.drain_events() == []


def test_include_accel(openbci, table):
    dev = OpenBCITextPlayback(openbci, chunk_size=1000, include_accel=True, start_s=100.0)
    assert dev.info.channels[-3:] == ("accel0", "accel1", "accel2")
    assert dev.info.units[-3:] == ("g", "g", "g")
    dev.open()
    chunk = dev.read(0.0)
    assert chunk.t0_s == 100.0
    np.testing.assert_array_equal(chunk.data[8:], table[:1000, 8:11].T.astype(np.float32))


def test_bad_files(tmp_path):
    no_rate = tmp_path / "no_rate.txt"
    no_rate.write_text("%OpenBCI Raw EXG Data\nSample Index, EXG Channel 0, Timestamp\n0, 1.0, 1000\n")
    with pytest.raises(PipelineDefinitionError, match="Sample Rate"):
        OpenBCITextPlayback(no_rate).info
    empty = tmp_path / "empty.txt"
    empty.write_text("%Sample Rate = 250 Hz\nSample Index, EXG Channel 0, Timestamp\n")
    with pytest.raises(PipelineDefinitionError, match="no data rows"):
        OpenBCITextPlayback(empty).info
    no_exg = tmp_path / "no_exg.txt"
    no_exg.write_text("%Sample Rate = 250 Hz\nSample Index, Timestamp\n0, 1000\n")
    with pytest.raises(PipelineDefinitionError, match="EXG Channel"):
        OpenBCITextPlayback(no_exg).info
    with pytest.raises(PipelineDefinitionError, match="does not exist"):
        OpenBCITextPlayback(tmp_path / "missing.txt")
    small = tmp_path / "small.txt"
    small.write_text("%Sample Rate = 200 Hz\nSample Index, EXG Channel 0, EXG Channel 1, Timestamp\n"
                     "0, 1.0, 2.0, 5000\n1, 3.0, 4.0, 5005\n2, 5.0, 6.0, 5010\n")
    dev = OpenBCITextPlayback(small, chunk_size=2)
    with pytest.raises(PipelineDefinitionError, match="no accelerometer"):
        OpenBCITextPlayback(small, include_accel=True).info
    dev.open()
    first, second = dev.read(0.0), dev.read(0.0)
    np.testing.assert_allclose(first.data, [[1e-6, 3e-6], [2e-6, 4e-6]])
    assert first.t0_s == 5.0 and second.t0_s == pytest.approx(5.01)
