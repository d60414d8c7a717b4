"""XDFPlayback on the real Muse recording (LabRecorder) and on small XDF files written here."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import pyxdf
import pytest

from neuraflow.chunk import Chunk
from neuraflow.devices import Device, XDFPlayback, xdf_devices
from neuraflow.errors import DeviceError, EndOfStream, PipelineDefinitionError

@pytest.fixture(scope="module")
def muse(muse_xdf: Path) -> Path:
    return muse_xdf


@pytest.fixture(scope="module")
def muse_pyxdf(muse):
    streams, _ = pyxdf.load_xdf(str(muse), synchronize_clocks=True, dejitter_timestamps=True, verbose=False)
    return {s["info"]["type"][0]: s for s in streams}


def play_all(dev) -> tuple[list[Chunk], list]:
    chunks, events = [], []
    with pytest.raises(EndOfStream):
        while True:
            chunk = dev.read(0.0)
            assert chunk is not None
            chunks.append(chunk)
            events.extend(dev.drain_events())
    return chunks, events + dev.drain_events()


# ----------------------------------------------------------------- a tiny XDF writer
def _varlen(n: int) -> bytes:
    return struct.pack("<BQ", 8, n)


def _chunk(tag: int, content: bytes) -> bytes:
    body = struct.pack("<H", tag) + content
    return _varlen(len(body)) + body


def _stream_header(sid: int, name: str, type_: str, n_ch: int, srate: float, fmt: str, labels=()) -> bytes:
    chans = "".join(f"<channel><label>{lb}</label><type>eeg</type><unit>microvolts</unit></channel>" for lb in labels)
    xml = (f'<?xml version="1.0"?><info><name>{name}</name><type>{type_}</type><channel_count>{n_ch}</channel_count>'
           f"<nominal_srate>{srate}</nominal_srate><channel_format>{fmt}</channel_format><source_id>src{sid}</source_id>"
           f"<created_at>0</created_at><desc><channels>{chans}</channels></desc></info>")
    return _chunk(2, struct.pack("<I", sid) + xml.encode())


def _samples(sid: int, stamps, values, fmt: str) -> bytes:
    out = struct.pack("<I", sid) + _varlen(len(stamps))
    for t, row in zip(stamps, values):
        out += struct.pack("<Bd", 8, t)
        if fmt == "string":
            for v in row:
                b = v.encode()
                out += _varlen(len(b)) + b
        else:
            out += np.asarray(row, dtype=np.float32).tobytes()
    return _chunk(3, out)


def _footer(sid: int, stamps) -> bytes:
    first, last = (stamps[0], stamps[-1]) if len(stamps) else (0.0, 0.0)
    xml = (f'<?xml version="1.0"?><info><first_timestamp>{first}</first_timestamp>'
           f"<last_timestamp>{last}</last_timestamp><sample_count>{len(stamps)}</sample_count></info>")
    return _chunk(6, struct.pack("<I", sid) + xml.encode())


def write_xdf(path: Path, *, empty_eeg: bool = False) -> dict:
    """EEG 2 ch 100 Hz (1 s), string markers, and an empty 'Aux' 10 Hz stream."""
    rng = np.random.default_rng(0)
    t0 = 1000.0
    eeg_t = [] if empty_eeg else list(t0 + np.arange(100) / 100.0)
    eeg = rng.normal(0, 50, (len(eeg_t), 2)).astype(np.float32)
    mk_t = [t0 + 0.105, t0 + 0.5]
    mk = [["stim-on"], ["stim-off"]]
    blob = b"XDF:" + _chunk(1, b'<?xml version="1.0"?><info><version>1.0</version>'
                               b"<datetime>2024-01-02T03:04:05+00:00</datetime></info>")
    blob += _stream_header(1, "Amp", "EEG", 2, 100.0, "float32", ("C3", "C4"))
    blob += _stream_header(2, "Task", "Markers", 1, 0.0, "string")
    blob += _stream_header(3, "Aux", "AUX", 1, 10.0, "float32", ("x",))
    if eeg_t:
        blob += _samples(1, eeg_t, eeg, "float32")
    blob += _samples(2, mk_t, mk, "string")
    blob += _footer(1, eeg_t) + _footer(2, mk_t) + _footer(3, [])
    path.write_bytes(blob)
    return {"eeg": eeg, "eeg_t": eeg_t, "mk_t": mk_t}


# ----------------------------------------------------------------- the real Muse file
def test_muse_every_stream_found(muse):
    devices = xdf_devices(muse)
    got = {d.info.stream_id: (d.info.sfreq, d.info.n_channels, d.n_samples_total) for d in devices}
    assert got == {
        "Muse-EEG": (256.0, 5, 2316),
        "Muse-PPG": (64.0, 3, 582),
        "Muse-ACC": (52.0, 3, 468),
        "Muse-GYRO": (52.0, 3, 468),
    }
    eeg = devices[0]
    assert isinstance(eeg, Device) and eeg.blocking is False
    assert eeg.info.channels == ("TP9", "AF7", "AF8", "TP10", "AUX_RIGHT")
    assert set(eeg.info.units) == {"V"} and set(eeg.info.ch_types) == {"eeg"}
    assert eeg.info.meta["xdf_name"] == "Muse"
    # Picklable before open, header included.
    copy = pickle.loads(pickle.dumps(eeg))
    assert copy.info == eeg.info and copy.n_samples_total == 2316


@pytest.mark.parametrize("kind", ["EEG", "PPG", "ACC", "GYRO"])
def test_muse_data_and_times_equal_pyxdf(muse, muse_pyxdf, kind):
    dev = XDFPlayback(muse, stream=kind, chunk_size=50)
    dev.open()
    chunks, _ = play_all(dev)
    ref = muse_pyxdf[kind]
    data = np.concatenate([c.data for c in chunks], axis=1)
    scale = 1e-6 if kind == "EEG" else 1.0  # EEG desc says microvolts: served in volts
    np.testing.assert_array_equal(data, (np.asarray(ref["time_series"], dtype=np.float64).T * scale).astype(np.float32))
    # Chunk times are the synchronised, dejittered timestamps on the file's shared time base.
    all_first = min(float(s["time_stamps"][0]) for s in muse_pyxdf.values())
    origin = dev._load_header()["file_start_s"]
    expected_t0 = origin + ref["time_stamps"][[c.meta["sample_index"] for c in chunks]] - all_first
    np.testing.assert_allclose([c.t0_s for c in chunks], expected_t0, rtol=0, atol=1e-6)


def test_muse_streams_share_a_time_base(muse):
    eeg, ppg, acc, _ = xdf_devices(muse)
    for d in (eeg, ppg, acc):
        d.open()
    firsts = [d.read(0.0).t0_s for d in (eeg, ppg, acc)]
    # The file header says 2023-10-25T14:59:37+01:00; streams started within ~0.2 s of each other.
    assert abs(min(firsts) - 1698242377.0) < 1e-6
    assert max(firsts) - min(firsts) < 0.2


def test_muse_stream_selection_errors(muse):
    with pytest.raises(PipelineDefinitionError, match="matches several streams"):
        XDFPlayback(muse, stream="Muse").info
    with pytest.raises(PipelineDefinitionError, match="matches no streams"):
        XDFPlayback(muse, stream="EGG").info
    with pytest.raises(PipelineDefinitionError, match="out of range"):
        XDFPlayback(muse, stream=9).info
    assert XDFPlayback(muse, stream="Muse-ACC").info.sfreq == 52.0
    assert XDFPlayback(muse, stream=1, stream_id="ppg").info.stream_id == "ppg"


def test_realtime_paces_chunks(muse):
    dev = XDFPlayback(muse, stream="EEG", chunk_size=256, realtime=True)
    dev.open()
    assert dev.read(0.0) is None  # 1 s of data is not due yet
    assert dev.next_ready_s() > 0
    dev.close()
    with pytest.raises(DeviceError, match="before open"):
        dev.read(0.0)


# ----------------------------------------------------------------- markers, empty streams
def test_string_markers_become_events(tmp_path):
    path = tmp_path / "rec.xdf"
    ref = write_xdf(path)
    devices = xdf_devices(path, on_empty="skip", chunk_size=20)
    assert [d.info.stream_id for d in devices] == ["Amp-EEG"]  # markers are events, empty Aux left out
    dev = devices[0]
    dev.open()
    chunks, events = play_all(dev)
    np.testing.assert_array_equal(np.concatenate([c.data for c in chunks], axis=1),
                                  (ref["eeg"].T.astype(np.float64) * 1e-6).astype(np.float32))
    origin = 1704164645.0  # 2024-01-02T03:04:05Z
    assert chunks[0].t0_s == pytest.approx(origin, abs=1e-6)
    assert [(e.stream_id, e.label) for e in events] == [("Task-Markers", "stim-on"), ("Task-Markers", "stim-off")]
    assert [e.t_s for e in events] == pytest.approx([origin + 0.105, origin + 0.5], abs=1e-6)
    # Each event arrives with the chunk that spans it: 0.105 s is in samples 0-19, 0.5 s in 40-59.
    dev2 = XDFPlayback(path, stream="EEG", chunk_size=20, markers=["Markers"])
    dev2.open()
    dev2.read(0.0)
    assert [e.label for e in dev2.drain_events()] == ["stim-on"]
    dev2.read(0.0)
    assert dev2.drain_events() == []
    dev2.read(0.0)
    assert [e.label for e in dev2.drain_events()] == ["stim-off"]


def test_marker_stream_is_not_a_data_stream(tmp_path):
    path = tmp_path / "rec.xdf"
    write_xdf(path)
    with pytest.raises(PipelineDefinitionError, match="irregular-rate or string stream"):
        XDFPlayback(path, stream="Markers").info
    with pytest.raises(PipelineDefinitionError, match="not a marker stream"):
        XDFPlayback(path, stream="EEG", markers=["AUX"]).info


def test_empty_stream_is_a_named_error(tmp_path):
    path = tmp_path / "rec.xdf"
    write_xdf(path)
    with pytest.raises(PipelineDefinitionError, match=r"stream 'Aux' \(type 'AUX'\) of rec.xdf is empty"):
        XDFPlayback(path, stream="Aux").info
    with pytest.raises(PipelineDefinitionError, match="'Aux'.*empty.*on_empty='skip'"):
        xdf_devices(path)
    empty = tmp_path / "empty.xdf"
    write_xdf(empty, empty_eeg=True)
    with pytest.raises(PipelineDefinitionError, match="no regular-rate data stream with samples"):
        xdf_devices(empty, on_empty="skip")


def test_bad_parameters(tmp_path, muse):
    with pytest.raises(PipelineDefinitionError, match="does not exist"):
        XDFPlayback(tmp_path / "missing.xdf")
    with pytest.raises(PipelineDefinitionError, match="chunk_size"):
        XDFPlayback(muse, chunk_size=0)
    with pytest.raises(PipelineDefinitionError, match="markers="):
        XDFPlayback(muse, markers="some")
    with pytest.raises(PipelineDefinitionError, match="stream= is chosen per stream"):
        xdf_devices(muse, stream="EEG")
    bad = tmp_path / "bad.xdf"
    bad.write_bytes(b"not an xdf file")
    with pytest.raises(PipelineDefinitionError, match="cannot read"):
        XDFPlayback(bad).info
