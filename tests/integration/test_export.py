"""``neuraflow export`` and ``POST /streams/{id}/export`` on a local Iceberg warehouse in tmp_path.

No Redis or PostgreSQL is configured: the tiers are Iceberg alone. No Ray, no network.
"""

from __future__ import annotations

import io
import json
import zipfile

import mne
import numpy as np
import pyarrow.parquet as pq
import pytest

from neuraflow.chunk import Chunk, Event, StreamInfo
from neuraflow.sinks import Iceberg

T0 = 1_700_000_000.0
SFREQ = 250.0


def populate(table: str, catalog_uri: str, warehouse: str, catalog_name: str) -> tuple[np.ndarray, list[Chunk]]:
    """60 s of 8 channels (0.2 s chunks, seq 100-101 missing) and three events, committed."""
    info = StreamInfo("eeg-e", SFREQ, tuple(f"EEG{i}" for i in range(8)), ("eeg",) * 8, ("uV",) * 8,
                      {"device": "synthetic"})  # fmt: skip
    data = (np.random.default_rng(3).standard_normal((8, 15_000)) * 40).astype(np.float32)
    chunks = [Chunk(data[:, i * 50 : (i + 1) * 50], T0 + i * 0.2, info, seq=i)
              for i in range(300) if i not in (100, 101)]  # fmt: skip
    sink = Iceberg(table, catalog_uri=catalog_uri, warehouse=warehouse, catalog_name=catalog_name, flush_every_s=1e9)
    sink.open()
    sink.write_batch(chunks)
    sink.write_events([Event("eeg-e", T0 + 5.0, "T1", 1.0), Event("eeg-e", T0 + 30.0, "T2", "go"),
                       Event("eeg-e", T0 + 59.0, "T0", 0.0)])  # fmt: skip
    sink.flush()
    sink.close()
    return data, chunks


@pytest.fixture
def warehouse(tmp_path, monkeypatch):
    catalog_uri = f"sqlite:///{tmp_path}/catalog.db"
    monkeypatch.setenv("NEURAFLOW_STORAGE__WAREHOUSE", str(tmp_path / "warehouse"))
    monkeypatch.setenv("NEURAFLOW_STORAGE__CATALOG_URI", catalog_uri)
    for name in ("REDIS_URL", "POSTGRES_URL"):
        monkeypatch.delenv(f"NEURAFLOW_STORAGE__{name}", raising=False)
    return populate("neuraflow.samples", catalog_uri, str(tmp_path / "warehouse"), "neuraflow")


@pytest.mark.parametrize("fmt", ["parquet", "fif", "edf"])
def test_cli_exports_from_the_warehouse(tmp_path, warehouse, fmt, capsys):
    from neuraflow.cli import main

    data, _ = warehouse
    out = tmp_path / ("out_raw.fif" if fmt == "fif" else f"out.{fmt}")
    argv = ["export", "eeg-e", "--start", str(T0 + 10.0), "--end", str(T0 + 40.0), "--format", fmt, "--out", str(out),
            "--channels", "EEG3", "EEG5", "--block-s", "7"]  # fmt: skip
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert f"wrote {out}" in captured.out and "30.0/30.0" in captured.err  # the progress bar reached the end
    keep = np.r_[2500:5000, 5100:10_000]  # [10 s, 40 s) without seq 100-101 (20.0-20.4 s)
    if fmt == "parquet":
        table = pq.read_table(out)
        assert table.column_names == ["t_s", "EEG3", "EEG5"]
        assert np.array_equal(table.column("EEG5").to_numpy(), data[5, keep])
        assert [e["label"] for e in json.loads(table.schema.metadata[b"events"])] == ["T2"]
        assert pq.read_metadata(out).metadata[b"gaps"] == b"100-101"
        return
    options = {"infer_types": True} if fmt == "edf" else {}
    raw = mne.io.read_raw(out, verbose="error", **options)
    assert raw.ch_names == ["EEG3", "EEG5"] and raw.n_times >= 7500
    got = raw.get_data()[:, :7500] * 1e6
    expected = data[[3, 5], 2500:10_000].astype(np.float64)
    expected[:, 2500:2600] = 0.0  # the gap, filled
    if fmt == "fif":
        assert np.array_equal(got.astype(np.float32), expected.astype(np.float32))
    else:
        assert np.abs(got - expected).max() <= (expected.max() - expected.min()) / 65534  # within one step
    ann = raw.annotations
    assert list(ann.description[:2]) == ["BAD_ACQ_SKIP", "T2"] and np.allclose(ann.onset[:2], [10.0, 20.0])


def test_cli_errors(tmp_path, warehouse, capsys):
    from neuraflow.cli import main

    base = ["--start", str(T0), "--end", str(T0 + 1), "--format", "fif", "--out", str(tmp_path / "x_raw.fif")]
    assert main(["export", "nope", *base]) == 2
    assert "no tier holds stream 'nope'" in capsys.readouterr().err
    assert main(["export", "eeg-e", *base, "--channels", "EEG33"]) == 2
    assert "'EEG33'" in capsys.readouterr().err


def test_http_export_through_build_app(settings):
    from fastapi.testclient import TestClient

    from neuraflow.serve.app import build_app

    class NoPipelines:
        def running(self) -> list[str]:
            return []

    s = settings.storage
    data, _ = populate(s.table, s.catalog_uri, s.warehouse, s.catalog_name)
    client = TestClient(build_app(settings, NoPipelines()))
    body = {"format": "parquet", "start": T0, "end": T0 + 10.0}
    reply = client.post("/streams/eeg-e/export", json=body)
    assert reply.status_code == 200
    table = pq.read_table(io.BytesIO(reply.content))
    assert table.num_rows == 2500 and np.array_equal(table.column("EEG0").to_numpy(), data[0, :2500])

    reply = client.post("/streams/eeg-e/export", json={**body, "format": "bids", "subject": "02"})
    assert reply.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(reply.content))
    sidecar = json.loads(archive.read("sub-02/eeg/sub-02_task-neuraflow_eeg.json"))
    assert sidecar["SamplingFrequency"] == SFREQ
    events_tsv = archive.read("sub-02/eeg/sub-02_task-neuraflow_events.tsv").decode().splitlines()
    assert len(events_tsv) == 2 and "T1" in events_tsv[1]  # header + the one event in [0, 10 s)

    assert client.post("/streams/eeg-e/export", json={**body, "end": T0 + 4000.0}).status_code == 413
    assert client.post("/streams/nope/export", json=body).status_code == 404


def test_cli_skips_configured_tiers_that_are_down(tmp_path, warehouse, monkeypatch, capsys):
    from neuraflow.cli import main

    monkeypatch.setenv("NEURAFLOW_STORAGE__REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens on port 1
    monkeypatch.setenv("NEURAFLOW_STORAGE__POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:1/none")
    out = tmp_path / "x.parquet"
    argv = ["export", "eeg-e", "--start", str(T0), "--end", str(T0 + 2), "--format", "parquet", "--out", str(out)]
    assert main([*argv, "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "tier 'redis' unreachable" in err and "tier 'timescale' unreachable" in err
    assert pq.read_table(out).num_rows == 500
