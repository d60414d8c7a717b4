"""The ONNX op equals onnxruntime called directly; batches equal single steps."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from numpy.testing import assert_allclose

from neuraflow.chunk import Chunk
from neuraflow.errors import PipelineDefinitionError, StreamMismatchError
from neuraflow.ops import BoundOp, logistic_regression_onnx, onnx_model, run_offline
from neuraflow.ops import inference
from neuraflow.testing import make_info


@pytest.fixture
def model_bytes(rng):
    return logistic_regression_onnx(rng.standard_normal((3, 6)), rng.standard_normal(3))


def _features(rng, n_features=6, n_samples=1, stream_id="feat", t0_s=10.0):
    info = make_info(n_features, 4.0, stream_id=stream_id).replace(
        ch_types=("feature",) * n_features, units=("log10(V^2/Hz)",) * n_features
    )
    return Chunk(rng.standard_normal((n_features, n_samples)), t0_s, info, seq=3)


def _direct(model, x):
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return session.run(None, {"features": x.astype(np.float32)})[0]


def test_equals_onnxruntime_called_directly(model_bytes, rng):
    chunk = _features(rng)
    (out,) = run_offline(onnx_model(model_bytes), [chunk])
    want = _direct(model_bytes, chunk.data.T)
    assert out.data.shape == (3, 1)
    assert_allclose(out.data[:, 0], want[0], rtol=1e-6)
    assert out.channels == ("out0", "out1", "out2")
    assert set(out.info.ch_types) == {"prediction"}
    assert out.t0_s == chunk.t0_s and out.seq == chunk.seq and out.sfreq == chunk.sfreq
    assert out.data.sum() == pytest.approx(1.0, abs=1e-6)  # softmax


def test_softmax_regression_matches_numpy(rng):
    w, b = rng.standard_normal((4, 5)), rng.standard_normal(4)
    x = rng.standard_normal((7, 5))
    logits = x @ w.T + b
    want = np.exp(logits - logits.max(1, keepdims=True))
    want /= want.sum(1, keepdims=True)
    assert_allclose(_direct(logistic_regression_onnx(w, b), x), want, rtol=1e-5)


def test_several_columns_are_several_feature_vectors(model_bytes, rng):
    chunk = _features(rng, n_samples=5)
    (out,) = run_offline(onnx_model(model_bytes), [chunk])
    assert_allclose(out.data, _direct(model_bytes, chunk.data.T).T, rtol=1e-6)


def test_step_batch_equals_single_with_one_run(model_bytes, rng, monkeypatch):
    op = BoundOp(onnx_model(model_bytes))
    chunks = [_features(rng, stream_id=f"s{i}", t0_s=float(i)) for i in range(5)]
    chunks.append(_features(rng, n_samples=0, stream_id="empty"))
    chunks.append(_features(rng, n_samples=2, stream_id="two"))
    single = [op.step(None, c)[1] for c in chunks]
    runs = []
    session = op.resource.session
    real_run = session.run

    class Spy:  # InferenceSession.run is a read-only attribute; wrap the resource instead
        def __getattr__(self, name):
            return getattr(session, name)

        def run(self, names, feeds):
            runs.append(next(iter(feeds.values())).shape)
            return real_run(names, feeds)

    monkeypatch.setattr(op, "resource", inference.OnnxResource(Spy(), op.resource.signature))
    states, batched = op.step_batch([None] * len(chunks), chunks)
    assert runs == [(7, 6)]
    assert states == [None] * len(chunks)
    assert batched[5] == [] and single[5] == []
    for got, want in zip(batched, single):
        for g, w in zip(got, want):
            assert_allclose(g.data, w.data, rtol=1e-6)
            assert g.t0_s == w.t0_s and g.stream_id == w.stream_id


def test_class_names_become_channels(rng):
    model = logistic_regression_onnx(np.ones((2, 3)), np.zeros(2), class_names=("left", "right"))
    spec = onnx_model(model)
    info = spec.infer_info(make_info(3, 4.0))
    assert info.channels == ("left", "right") and info.ch_types == ("prediction", "prediction")
    (out,) = run_offline(spec, [_features(rng, n_features=3)])
    assert out.channels == ("left", "right")


def test_infer_info_checks_feature_width(model_bytes, tmp_path):
    with pytest.raises(ValueError, match=r"the model expects 6 features \('features'\), the input stream has n_channels=4"):
        onnx_model(model_bytes).infer_info(make_info(4, 4.0))
    path = tmp_path / "m.onnx"
    path.write_bytes(model_bytes)
    assert onnx_model(path).infer_info(make_info(6, 4.0)).channels == ("out0", "out1", "out2")
    missing = onnx_model(tmp_path / "later.onnx")  # may only exist on workers: accepted by the factory
    with pytest.raises(ValueError, match="not readable at build time"):
        missing.infer_info(make_info(6, 4.0))


def test_wrong_width_at_runtime(model_bytes, rng):
    op = BoundOp(onnx_model(model_bytes))
    with pytest.raises(StreamMismatchError, match="4 features, the model expects 6"):
        op.init(_features(rng, n_features=4))


def test_path_model_and_setup_per_worker(model_bytes, tmp_path, rng):
    path = tmp_path / "m.onnx"
    path.write_bytes(model_bytes)
    spec = onnx_model(str(path), providers=["CPUExecutionProvider"])
    resource = spec.setup()
    assert resource.session.get_providers() == ["CPUExecutionProvider"]
    chunk = _features(rng)
    _, (out,) = spec.step(None, chunk, resource=resource)
    assert_allclose(out.data[:, 0], _direct(model_bytes, chunk.data.T)[0], rtol=1e-6)


def test_default_providers_prefer_gpu(monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider", "CUDAExecutionProvider"])
    assert inference._default_providers() == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert inference._default_providers() == ["CPUExecutionProvider"]


def test_fixed_batch_model_runs_row_by_row(rng):
    model = onnx.load_from_string(logistic_regression_onnx(np.eye(2, 3), np.zeros(2)))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_value = 1
    spec = onnx_model(model.SerializeToString())
    (out,) = run_offline(spec, [_features(rng, n_features=3, n_samples=4)])
    assert out.data.shape == (2, 4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model": 3}, "ops.onnx_model: model must be a path or bytes, got int"),
        ({"model": b""}, "model bytes are empty"),
        ({"model": b"not a model"}, "not a valid ONNX model"),
        ({"input_name": "x"}, r"input_name='x' is not one of \('features',\)"),
        ({"output_name": "y"}, r"output_name='y' is not one of \('probabilities',\)"),
        ({"providers": "CPUExecutionProvider"}, "must be a sequence of provider names"),
        ({"input_name": ""}, "input_name='' must be a non-empty string"),
        ({"threads": 0}, "threads=0 must be an integer >= 1"),
    ],
)
def test_bad_params(model_bytes, kwargs, message):
    kwargs = {"model": model_bytes, **kwargs}
    with pytest.raises(PipelineDefinitionError, match=message):
        onnx_model(kwargs.pop("model"), **kwargs)


@pytest.mark.parametrize(
    ("w", "b", "message"),
    [(np.ones(3), np.ones(3), "weights must be"), (np.ones((2, 3)), np.ones(3), "bias"),
     (np.full((2, 3), np.nan), np.ones(2), "finite")],
)
def test_bad_logistic_regression(w, b, message):
    with pytest.raises(PipelineDefinitionError, match=message):
        logistic_regression_onnx(w, b)


def test_session_uses_one_thread_by_default(model_bytes):
    """ONNX Runtime's default pool spins a thread per core between calls; a worker per core must not."""
    assert BoundOp(onnx_model(model_bytes)).resource.session.get_session_options().intra_op_num_threads == 1
    op = BoundOp(onnx_model(model_bytes, threads=2))
    assert op.resource.session.get_session_options().intra_op_num_threads == 2
