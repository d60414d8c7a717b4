"""Export round trips (EDF, BDF, FIF, Parquet, BIDS) on synthetic chunks and the EEGMMIDB recording.

FIF and Parquet must give back the float32 bits; EDF/BDF must stay within the quantisation
bound read from the written header. No tier is involved except an in-memory one.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile

import mne
import numpy as np
import pyarrow.parquet as pq
import pytest

from neuraflow.chunk import Chunk, Event, StreamInfo
from neuraflow.errors import EndOfStream
from neuraflow.storage.export import (
    FORMATS, ExportError, export, export_stream, iter_blocks, result_from_chunks, stored_events,
)  # fmt: skip
from neuraflow.storage.query import QueryEngine

T0 = 1_700_000_000.0
SFREQ = 250.0
TO_UNIT = {"V": 1.0, "uV": 1e6}


def make_chunks(n_chunks: int = 100, size: int = 25, missing: tuple[int, ...] = (40, 41)):
    info = StreamInfo("eeg-x", SFREQ, ("Fp1", "Cz", "O2", "aux"), ("eeg", "eeg", "eeg", "misc"),
                      ("uV", "uV", "uV", "a.u."), {"device": "Cyton", "serial": "A1"})  # fmt: skip
    rng = np.random.default_rng(7)
    data = (rng.standard_normal((4, n_chunks * size)) * np.array([[50], [80], [20], [3]])).astype(np.float32)
    chunks = [Chunk(data[:, i * size : (i + 1) * size], T0 + i * size / SFREQ, info, seq=i)
              for i in range(n_chunks) if i not in missing]  # fmt: skip
    keep = np.concatenate([np.arange(i * size, (i + 1) * size) for i in range(n_chunks) if i not in missing])
    return info, data, chunks, keep


EVENTS = [Event("eeg-x", T0 + 1.0, "T1", 1.0, {"duration_s": 0.5}), Event("eeg-x", T0 + 6.02, "T2", "go"),
          Event("eeg-x", T0 + 99.0, "late", 0.0)]  # fmt: skip


def playback(path, chunk_size: int = 160) -> tuple[list[Chunk], list[Event]]:
    from neuraflow.devices import FilePlayback

    device = FilePlayback(path, stream_id="S001R06", chunk_size=chunk_size, realtime=False)
    device.open()
    chunks, events = [], []
    try:
        while True:
            try:
                chunk = device.read(0.0)
            except EndOfStream:
                break
            chunks.append(chunk.replace(seq=len(chunks)))
            events.extend(device.drain_events())
    finally:
        device.close()
    return chunks, events + device.drain_events()


def edf_bound(path) -> np.ndarray:
    """Per channel, half a quantisation step in the file's unit, from the header."""
    import edfio

    edf = edfio.read_bdf(path) if str(path).endswith(".bdf") else edfio.read_edf(path)
    steps = [(s.physical_max - s.physical_min) / (s.digital_max - s.digital_min) for s in edf.signals
             if s.label != "EDF Annotations"]  # fmt: skip
    return np.array(steps) / 2


def read_mne(path, units):
    """(data in the stream's units float64, raw)."""
    raw = mne.io.read_raw(path, verbose="error", infer_types=True) if str(path).endswith(("edf", "bdf")) \
        else mne.io.read_raw_fif(path, verbose="error")  # fmt: skip
    scale = np.array([TO_UNIT.get(u, 1.0) if u in TO_UNIT else (1e6 if u == "uV" else 1.0) for u in units])
    return raw.get_data() * scale[:, None], raw


# Synthetic ------------------------------------------------------------------------------
def test_parquet_is_bit_exact_with_metadata_events_and_gaps(tmp_path):
    info, data, chunks, keep = make_chunks()
    path = export(chunks, tmp_path / "x.parquet", format="parquet", events=EVENTS)
    table = pq.read_table(path)
    assert table.column_names == ["t_s", "Fp1", "Cz", "O2", "aux"]
    got = np.stack([table.column(c).to_numpy() for c in info.channels])
    assert got.dtype == np.float32 and got.view(np.uint32).tobytes() == data[:, keep].view(np.uint32).tobytes()
    assert np.array_equal(table.column("t_s").to_numpy(), np.concatenate([c.times_s for c in chunks]))
    meta = table.schema.metadata
    stream = json.loads(meta[b"stream"])
    assert stream["units"] == ["uV", "uV", "uV", "a.u."] and stream["meta"] == {"device": "Cyton", "serial": "A1"}
    assert float(meta[b"sfreq"]) == SFREQ and meta[b"ch_types"] == b"eeg,eeg,eeg,misc"
    assert [e["label"] for e in json.loads(meta[b"events"])] == ["T1", "T2", "late"]
    assert pq.read_metadata(path).metadata[b"gaps"] == b"40-41"


def test_fif_is_bit_exact_with_gap_annotation_and_description(tmp_path):
    info, data, chunks, keep = make_chunks()
    path = export(chunks, tmp_path / "x_raw.fif", format="fif", events=EVENTS)
    got, raw = read_mne(path, info.units)
    expected = data.copy()
    expected[:, 1000:1050] = 0.0  # the two missing chunks, filled with zeros
    assert got.astype(np.float32).view(np.uint32).tobytes() == expected.view(np.uint32).tobytes()
    assert raw.info["sfreq"] == SFREQ and raw.ch_names == list(info.channels)
    assert raw.get_channel_types() == ["eeg", "eeg", "eeg", "misc"]
    assert raw.info["meas_date"].timestamp() == pytest.approx(T0, abs=1e-6)
    assert raw.info["device_info"]["type"] == "Cyton"
    described = json.loads(raw.info["description"])["neuraflow"]
    assert described["stream_id"] == "eeg-x" and described["units"][3] == "a.u."
    ann = raw.annotations
    assert list(ann.description) == ["T1", "BAD_ACQ_SKIP", "T2"]  # "late" is after the last sample
    assert np.allclose(ann.onset, [1.0, 4.0, 6.02]) and np.allclose(ann.duration, [0.5, 0.2, 0.0])


@pytest.mark.parametrize("fmt", ["edf", "bdf"])
def test_edf_and_bdf_stay_within_the_quantisation_bound(tmp_path, fmt):
    info, data, chunks, _ = make_chunks(missing=())
    path = export(chunks, tmp_path / f"x.{fmt}", format=fmt, events=EVENTS)
    got, raw = read_mne(path, info.units)
    bound = edf_bound(path)
    err = np.abs(got[:, : data.shape[1]] - data.astype(np.float64)).max(axis=1)
    assert np.all(err <= bound * (1 + 1e-6) + 1e-12), (err, bound)
    span = data.max(axis=1).astype(np.float64) - data.min(axis=1)
    steps = {"edf": 65534, "bdf": 16777214}[fmt]
    assert np.all(bound <= span / steps / 2 * 1.001 + 1e-9)  # the documented bound, up to header rounding
    assert raw.ch_names == list(info.channels) and raw.get_channel_types() == ["eeg", "eeg", "eeg", "misc"]
    assert raw.info["sfreq"] == SFREQ
    assert list(raw.annotations.description) == ["T1", "T2"]
    assert np.allclose(raw.annotations.onset, [1.0, 6.02]) and np.allclose(raw.annotations.duration, [0.5, 0.0])


def test_bids_folder_is_structurally_valid(tmp_path):
    info, data, chunks, _ = make_chunks()
    root = export(chunks, tmp_path / "bids", format="bids", events=EVENTS, subject="07", session="a", task="rest")
    eeg = root / "sub-07" / "ses-a" / "eeg"
    stem = "sub-07_ses-a_task-rest"
    for name in ("_eeg.bdf", "_eeg.json", "_channels.tsv", "_events.tsv"):
        assert (eeg / f"{stem}{name}").is_file(), name
    assert (root / "dataset_description.json").is_file() and (root / "participants.tsv").is_file()
    sidecar = json.loads((eeg / f"{stem}_eeg.json").read_text())
    assert sidecar["SamplingFrequency"] == SFREQ and sidecar["EEGChannelCount"] == 3
    with open(eeg / f"{stem}_events.tsv") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert [r["trial_type"] for r in rows] == ["T1", "BAD_ACQ_SKIP", "T2"]
    assert [float(r["onset"]) for r in rows] == pytest.approx([1.0, 4.0, 6.02])
    with open(eeg / f"{stem}_channels.tsv") as f:
        assert [r["name"] for r in csv.DictReader(f, delimiter="\t")] == list(info.channels)


def test_bad_arguments():
    _, _, chunks, _ = make_chunks(4, missing=())
    with pytest.raises(ExportError, match="format='csv'"):
        export(chunks, "x.csv", format="csv")
    with pytest.raises(ExportError, match="no chunks|nothing"):
        export([], "x.fif", format="fif")
    other = chunks[0].replace(info=chunks[0].info.replace(stream_id="other"), seq=9)
    with pytest.raises(ExportError, match="one stream"):
        result_from_chunks([*chunks, other])


def test_long_channel_names_are_refused_by_edf(tmp_path):
    info = StreamInfo("s", 100.0, ("a-very-long-channel-name",), ("eeg",), ("uV",))
    chunk = Chunk(np.zeros((1, 100), np.float32), T0, info)
    with pytest.raises(ExportError, match="16 characters"):
        export([chunk], tmp_path / "x.edf", format="edf")


# Blockwise over a tier ------------------------------------------------------------------
class MemoryTier:
    """The Tier protocol over lists (what the query engine needs, nothing else)."""

    name = "memory"

    def __init__(self, chunks, events=()):
        self.chunks, self._events = list(chunks), list(events)

    def read(self, stream_id, start_s=None, end_s=None):
        return [c for c in self.chunks if c.stream_id == stream_id and (start_s is None or c.t0_s >= start_s)
                and (end_s is None or c.t0_s < end_s)]  # fmt: skip

    def write(self, chunks):
        self.chunks.extend(chunks)

    def streams(self):
        return sorted({c.stream_id for c in self.chunks})

    def has_stream(self, stream_id):
        return stream_id in self.streams()

    def info(self, stream_id):
        return next((c.info for c in self.chunks if c.stream_id == stream_id), None)

    def events(self, stream_id, start_s=None, end_s=None):
        return [e for e in self._events if e.stream_id == stream_id and (start_s is None or e.t_s >= start_s)
                and (end_s is None or e.t_s < end_s)]  # fmt: skip


def test_blocks_cover_the_span_exactly_and_report_progress(tmp_path):
    info, data, chunks, keep = make_chunks()
    engine = QueryEngine([MemoryTier(chunks, EVENTS + [EVENTS[0]])])
    start, end = T0 + 0.5, T0 + 9.3
    blocks = list(iter_blocks(engine, "eeg-x", start, end, ["O2", "Fp1"], block_s=1.7))
    assert len(blocks) == 6 and blocks[0].start_s == start and blocks[-1].end_s == end
    whole = engine.query("eeg-x", start, end, ["O2", "Fp1"])
    assert np.array_equal(np.concatenate([b.data for b in blocks], axis=1), whole.data)
    assert [e.label for e in stored_events(engine, "eeg-x", start, end)] == ["T1", "T2"]  # duplicate dropped
    seen = []
    for fmt in ("parquet", "fif"):
        seen.clear()
        export_stream(engine, "eeg-x", start, end, tmp_path / f"x.{fmt}", format=fmt, channels=["O2", "Fp1"],
                      block_s=1.7, progress=lambda b: seen.append(b.end_s - b.start_s))  # fmt: skip
        assert sum(seen) == pytest.approx(end - start) and len(seen) == 6
    table = pq.read_table(tmp_path / "x.parquet")
    assert np.array_equal(table.column("O2").to_numpy(), whole.data[0])
    assert np.array_equal(table.column("t_s").to_numpy(), whole.times_s)


# Real recording -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def recording(eegmmidb_edf):
    chunks, events = playback(eegmmidb_edf)
    return result_from_chunks(chunks), events


@pytest.mark.parametrize("fmt", ["fif", "parquet", "edf", "bdf"])
def test_real_recording_round_trips(tmp_path, recording, fmt):
    res, events = recording
    assert res.data.shape == (64, 20_000) and len(events) == 30
    path = export(res, tmp_path / ("rec_raw.fif" if fmt == "fif" else f"rec.{fmt}"), format=fmt, events=events)
    if fmt == "parquet":
        table = pq.read_table(path)
        got = np.stack([table.column(c).to_numpy() for c in res.channels])
        assert got.view(np.uint32).tobytes() == res.data.view(np.uint32).tobytes()
        assert len(json.loads(table.schema.metadata[b"events"])) == 30
        return
    got, raw = read_mne(path, res.info.units)
    got = got[:, : res.n_samples]
    if fmt == "fif":
        assert got.astype(np.float32).view(np.uint32).tobytes() == res.data.view(np.uint32).tobytes()
    else:
        err = np.abs(got - res.data.astype(np.float64)).max(axis=1)
        assert np.all(err <= edf_bound(path) * 1e-6 * (1 + 1e-6) + 1e-15)  # header in uV, data in V
    assert raw.ch_names == list(res.channels) and raw.info["sfreq"] == 160.0
    ann = raw.annotations
    assert list(ann.description) == [e.label for e in events]
    assert np.allclose(ann.onset, [e.t_s - res.times_s[0] for e in events], atol=1e-6)
    assert np.allclose(ann.duration, [e.value for e in events], atol=1e-6)  # FilePlayback: value = duration


def test_real_recording_to_bids(tmp_path, recording):
    res, events = recording
    root = export(res, tmp_path / "bids", format="bids", events=events, subject="001", task="motor", run="06")
    eeg = root / "sub-001" / "eeg"
    sidecar = json.loads((eeg / "sub-001_task-motor_run-06_eeg.json").read_text())
    assert sidecar["SamplingFrequency"] == 160.0 and sidecar["EEGChannelCount"] == 64
    with open(eeg / "sub-001_task-motor_run-06_events.tsv") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert len(rows) == 30 and {r["trial_type"] for r in rows} == {"T0", "T1", "T2"}


# HTTP route -----------------------------------------------------------------------------
@pytest.fixture
def client():
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from neuraflow.config import NeuraflowSettings
    from neuraflow.serve.export_routes import register_export_routes

    _, data, chunks, _ = make_chunks()
    app = FastAPI()
    register_export_routes(app, NeuraflowSettings(), tiers=[MemoryTier(chunks, EVENTS)])
    return TestClient(app), data


def test_route_streams_the_file(client):
    client, data = client
    body = {"format": "parquet", "start": T0 + 2.0, "end": T0 + 3.0, "channels": ["Cz"]}
    reply = client.post("/streams/eeg-x/export", json=body)
    assert reply.status_code == 200 and reply.headers["content-type"] == "application/vnd.apache.parquet"
    assert "eeg-x.parquet" in reply.headers["content-disposition"]
    table = pq.read_table(io.BytesIO(reply.content))
    assert table.column_names == ["t_s", "Cz"] and np.array_equal(table.column("Cz").to_numpy(), data[1, 500:750])

    reply = client.post("/streams/eeg-x/export", json={**body, "format": "bids", "channels": None})
    assert reply.status_code == 200 and reply.headers["content-type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(reply.content)).namelist()
    assert any(n.endswith("_eeg.bdf") for n in names) and "dataset_description.json" in names


def test_route_errors(client):
    client, _ = client
    body = {"format": "edf", "start": T0, "end": T0 + 5.0}
    assert client.post("/streams/nope/export", json=body).status_code == 404
    assert client.post("/streams/eeg-x/export", json={**body, "end": T0 + 3601.0}).status_code == 413
    assert client.post("/streams/eeg-x/export", json={**body, "end": T0}).status_code == 422
    assert client.post("/streams/eeg-x/export", json={**body, "format": "csv"}).status_code == 422
    bad = client.post("/streams/eeg-x/export", json={**body, "channels": ["Cx"]})
    assert bad.status_code == 422 and "'Cx'" in bad.json()["detail"]


# CLI pieces -----------------------------------------------------------------------------
def test_cli_formats_times_and_unreachable_tiers(capsys):
    from neuraflow.cli import build_parser
    from neuraflow.errors import SinkError
    from neuraflow.storage import cli

    assert cli.FORMATS == FORMATS
    assert cli.parse_time("1700000000.5") == 1_700_000_000.5
    assert cli.parse_time("2023-11-14T22:13:20") == T0
    assert cli.parse_time("2023-11-14T23:13:20+01:00") == T0
    args = build_parser().parse_args(["export", "s", "--start", "0", "--end", "1", "--format", "fif", "--out", "x"])
    assert args.func is cli.cmd_export and args.block_s == 300.0

    class Down(MemoryTier):
        name = "redis"

        def has_stream(self, stream_id):
            raise SinkError("connection refused")

    up = MemoryTier([])
    assert cli.reachable_tiers([Down([]), up], "s") == [up]
    assert "tier 'redis' unreachable" in capsys.readouterr().err
