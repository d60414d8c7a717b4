"""ops.ModelRegistry: name + version -> file checked against its recorded SHA-256 (local files only)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from neuraflow import ops
from neuraflow.errors import PipelineDefinitionError

MODEL = ops.logistic_regression_onnx(np.eye(2, 4), np.zeros(2), class_names=("a", "b"))


def test_register_resolve_and_latest(tmp_path):
    reg = ops.ModelRegistry(tmp_path / "models")
    p1 = reg.register("clf", "1", MODEL, metadata={"acc": 0.9})
    src = tmp_path / "m.onnx"
    src.write_bytes(MODEL)
    reg.register("clf", "0.5", src)
    assert reg.names() == ["clf"] and reg.versions("clf") == ["1", "0.5"]  # registration order
    assert reg.resolve("clf", "1") == p1
    assert reg.resolve("clf") == reg.resolve("clf", "0.5")  # latest = registered last
    assert reg.metadata("clf", "1") == {"acc": 0.9}
    assert reg.entry("clf", "1")["sha256"] == hashlib.sha256(MODEL).hexdigest()
    assert ops.ModelRegistry(tmp_path / "models").resolve("clf", "1") == p1  # the index persists
    assert ops.onnx_model(reg.resolve("clf")).infer_info is not None  # composes with the op


def test_hash_mismatch_names_model_version_and_hashes(tmp_path):
    reg = ops.ModelRegistry(tmp_path)
    path = reg.register("clf", "2", MODEL)
    path.write_bytes(MODEL + b"tampered")
    expected = hashlib.sha256(MODEL).hexdigest()
    actual = hashlib.sha256(MODEL + b"tampered").hexdigest()
    with pytest.raises(ops.ModelIntegrityError) as info:
        reg.resolve("clf", "2")
    message = str(info.value)
    assert "'clf'" in message and "'2'" in message and expected in message and actual in message
    path.unlink()
    with pytest.raises(ops.ModelIntegrityError, match="missing"):
        reg.resolve("clf", "2")


def test_errors(tmp_path):
    reg = ops.ModelRegistry(tmp_path)
    with pytest.raises(KeyError, match="no model"):
        reg.resolve("nope")
    reg.register("clf", "1", MODEL)
    with pytest.raises(KeyError, match="no version"):
        reg.resolve("clf", "9")
    with pytest.raises(PipelineDefinitionError, match="already exists"):
        reg.register("clf", "1", MODEL)
    reg.register("clf", "1", MODEL + b"", overwrite=True)
    for name, version in (("bad name", "1"), ("clf", "latest"), ("", "1")):
        with pytest.raises(PipelineDefinitionError):
            reg.register(name, version, MODEL)
    with pytest.raises(PipelineDefinitionError, match="empty"):
        reg.register("clf", "3", b"")
    with pytest.raises(PipelineDefinitionError, match="s3://"):
        reg.register_uri("clf", "4", "http://x/model.onnx", "0" * 64)
    reg.register_uri("remote", "1", "s3://bucket/model.onnx", "0" * 64)  # recorded; resolving needs S3 (untested)
    assert reg.entry("remote")["uri"] == "s3://bucket/model.onnx"
