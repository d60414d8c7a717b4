"""Motor imagery end to end on the real recording: train script, ONNX == sklearn, live ops chain."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from neuraflow import ops
from neuraflow.config import load_settings
from neuraflow.devices import FilePlayback
from neuraflow.errors import EndOfStream
from neuraflow.graph.loader import load_plan

REPO = Path(__file__).resolve().parents[2]


def _trainer():
    spec = importlib.util.spec_from_file_location("train_mi_under_test", REPO / "pipelines" / "train_motor_imagery.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def slot_accept(device: FilePlayback):
    """The proposed runtime/slot.py ``_accept`` change: events drained with a chunk go into meta["events"]."""
    device.open()
    try:
        while True:
            try:
                chunk = device.read(0.0)
            except EndOfStream:
                return
            events = tuple((e.t_s, e.label) for e in device.drain_events())
            yield chunk.replace(meta={**chunk.meta, "events": events}) if events else chunk
    finally:
        device.close()


def test_training_script_end_to_end(eegmmidb_edf, tmp_path):
    out = subprocess.run(
        [sys.executable, str(REPO / "pipelines" / "train_motor_imagery.py"), "--edf", str(eegmmidb_edf),
         "--out", str(tmp_path / "models")],
        capture_output=True, text=True, timeout=300, check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert "CV accuracy" in out.stdout
    assert result["n_epochs"] == 15 and result["class_counts"] == {"feet": 8, "hands": 7}
    # measured 0.91-0.95 for seeds 0-4 (5-fold x 10 repeats); chance is 0.53
    assert result["cv_accuracy_mean"] > 0.8
    registry = ops.ModelRegistry(tmp_path / "models")
    assert registry.resolve("motor_imagery", result["version"]) == Path(result["path"])


def test_onnx_equals_sklearn_and_live_chain(eegmmidb_edf, tmp_path):
    train = _trainer()
    X, y, info = train.load_epochs(eegmmidb_edf)
    model = train.make_model(len(info["channels"])).fit(X, y)
    onnx_bytes = train.to_onnx(model, info["n_times"])
    want = model.predict_proba(X)
    got = train.onnx_predict_proba(onnx_bytes, X)
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert list(model.classes_[got.argmax(axis=1)]) == list(model.predict(X))
    # the live chain, fed as the runtime would after the slot.py change, with other chunk sizes
    registry = ops.ModelRegistry(tmp_path)
    path = registry.register("motor_imagery", "1", onnx_bytes, metadata=info)
    chain = [
        ops.bandpass(info["l_freq"], info["h_freq"], order=info["filter_order"]),
        ops.epochs(info["tmin_s"], info["tmax_s"], baseline=None, labels=tuple(info["labels"])),
        ops.flatten_epoch(),
        ops.onnx_model(registry.resolve("motor_imagery")),
    ]
    chunks = list(slot_accept(FilePlayback(eegmmidb_edf, realtime=False, chunk_size=7, picks="eeg")))
    for spec in chain:
        chunks = ops.run_offline(spec, chunks)
    assert path.exists() and len(chunks) == len(y)
    live = np.concatenate([c.data.T for c in chunks])
    assert chunks[0].channels == tuple(str(c) for c in model.classes_)
    np.testing.assert_allclose(live, want, atol=1e-3)


def test_pipeline_builds_with_test_config(monkeypatch, tmp_path):
    monkeypatch.setenv("NEURAFLOW_MODEL_REGISTRY", str(tmp_path / "empty"))  # fits in memory, writes nothing
    plan = load_plan(REPO / "pipelines" / "motor_imagery.py", load_settings(REPO / "configs" / "test.yaml"))
    assert plan is not None
    assert not (tmp_path / "empty").exists()
