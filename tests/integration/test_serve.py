"""The Ray Serve HTTP service against a running demo pipeline: answers, 4xx and 404 cases."""

from __future__ import annotations

import io
import socket
import time
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pytest

from neuraflow.graph.loader import load_plan
from neuraflow.runtime.executor import Engine

from .conftest import REPO, make_settings

pytestmark = pytest.mark.ray


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def service(ray_local, tmp_path: Path):
    from ray import serve

    from neuraflow.serve.deployment import start_service, stop_service

    settings = make_settings(tmp_path)
    settings = settings.model_copy(update={
        "serve": settings.serve.model_copy(update={"port": _free_port(), "enabled": True}),
        "pipelines_dir": str(REPO / "pipelines"),
    })
    url = start_service(settings)
    engine = Engine(settings)
    handle = engine.start(load_plan(REPO / "pipelines" / "demo.py", settings))
    client = httpx.Client(base_url=url, timeout=30.0)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if client.get("/health").status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    time.sleep(2.0)  # let a few band-power windows and predictions through
    yield client, engine
    client.close()
    for name in engine.running():
        h = engine.get(name)
        h.stop()
        h.destroy()
    stop_service()
    serve.shutdown()


def test_http_endpoints(service) -> None:
    client, engine = service
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["pipelines"]["demo"] == "running"

    streams = client.get("/streams").json()
    ids = {s["stream_id"] for s in streams}
    assert {"synth-0", "synth-0/bandpass", "synth-1/bandpower", "synth-1/classify"} <= ids

    latest = client.get("/streams/synth-0/bandpass/latest", params={"seconds": 0.5})
    assert latest.status_code == 200, latest.text
    body = latest.json()
    assert body["shape"][0] == 4 and 0 < body["shape"][1] <= 0.5 * 250 + 25
    npy = client.get("/streams/synth-0/bandpass/latest", params={"seconds": 0.5, "format": "npy"})
    data = np.load(io.BytesIO(npy.content))
    assert data.dtype == np.float32 and data.shape[0] == 4
    arrow = client.get("/streams/synth-0/bandpass/latest", params={"format": "arrow"})
    table = pa.ipc.open_stream(arrow.content).read_all()
    assert table.column_names[0] == "t_s" and table.num_columns == 5

    pipelines = client.get("/pipelines").json()
    assert "demo" in pipelines["available"] and "demo" in pipelines["running"]
    metrics = client.get("/metrics").json()
    assert metrics["demo"]["total"]["chunks"] > 0
    predictions = client.get("/demo/predictions").json()
    assert len(predictions) == 2 and predictions[0]["shape"][0] == 2  # 2 classes x windows in the last 1 s
    assert client.get("/docs").status_code == 200
    assert "/streams/{stream_id}/latest" in client.get("/openapi.json").json()["paths"]


def test_http_errors_name_the_field(service) -> None:
    client, _ = service
    bad = client.get("/streams/synth-0/bandpass/latest", params={"seconds": -1})
    assert bad.status_code == 422 and "seconds" in bad.text
    bad_format = client.get("/streams/synth-0/bandpass/latest", params={"format": "csv"})
    assert bad_format.status_code == 422 and "format" in bad_format.text
    assert client.get("/streams/nope/latest").status_code == 404
    assert client.get("/streams/synth-0/window/latest").status_code == 404  # produced, but in no hot buffer
    assert client.post("/pipelines/nope/start").status_code == 404
    assert client.post("/pipelines/nope/stop").status_code == 404
    assert client.post("/pipelines/demo/start").status_code == 409
    assert client.post("/pipelines/demo/start", json={"mode": "fast"}).status_code == 422
    assert client.get("/no/such/route").status_code == 404


def test_http_stop_and_start(service) -> None:
    client, engine = service
    stopped = client.post("/pipelines/demo/stop")
    assert stopped.status_code == 200 and stopped.json()["state"] == "stopped"
    assert "demo" not in engine.running()
    started = client.post("/pipelines/demo/start", json={"mode": "near_real_time"})
    assert started.status_code == 201, started.text
    assert started.json()["mode"] == "near_real_time"
    assert "demo" in engine.running()
