"""Train CSP + LDA on motor imagery (hands T1 vs feet T2), export to ONNX, register it.

    python pipelines/train_motor_imagery.py --edf ../shared/data/eegmmidb/S001R06.edf --out models/

The epochs are cut by the same streaming ops the live pipeline runs
(``bandpass(7, 30)`` then ``epochs(1.0, 2.0)``, markers from the EDF
annotations), so training and inference see identical samples. Features:
log-variance of 4 CSP components (CSP with ``scipy.linalg.eigh``), then LDA.
The ONNX graph takes one flattened epoch per row, ``(N, n_channels * n_times)``
channel-major (what :func:`neuraflow.ops.flatten_epoch` emits), and outputs
``probabilities`` ``(N, 2)`` for ``("hands", "feet")``: Reshape, MatMul with
the CSP filters, log-variance (``onnx.helper``), then the LDA converted by
``skl2onnx``. Accuracy is estimated by repeated stratified k-fold.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import linalg
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.model_selection import RepeatedStratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline as SkPipeline

from neuraflow import ops
from neuraflow.devices import FilePlayback
from neuraflow.errors import EndOfStream

MODEL_NAME = "motor_imagery"
CLASSES = {"T1": "hands", "T2": "feet"}
L_FREQ, H_FREQ, ORDER = 7.0, 30.0, 4
TMIN_S, TMAX_S = 1.0, 2.0
N_COMPONENTS = 4
OPSET = 17


class CSP(BaseEstimator, TransformerMixin):
    """Common spatial patterns on flattened epochs, features = log-variance of the components.

    Parameters
    ----------
    n_channels : int
        Rows of each epoch; inputs are ``(n_epochs, n_channels * n_times)`` channel-major.
    n_components : int
        Spatial filters kept, taken alternately from both ends of the eigenvalue spectrum.
    reg : float
        Shrinkage of each class covariance towards a scaled identity, in [0, 1].
    """

    def __init__(self, n_channels: int, n_components: int = N_COMPONENTS, reg: float = 0.0) -> None:
        self.n_channels = n_channels
        self.n_components = n_components
        self.reg = reg

    def _epochs(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        return X.reshape(X.shape[0], self.n_channels, -1)

    def fit(self, X: np.ndarray, y: np.ndarray) -> CSP:
        epochs = self._epochs(X)
        self.classes_ = np.unique(y)
        if len(self.classes_) != 2:
            raise ValueError(f"CSP needs exactly 2 classes, got {self.classes_}.")
        covs = []
        for label in self.classes_:
            x = epochs[y == label]
            x = x - x.mean(axis=2, keepdims=True)
            cov = np.mean([e @ e.T / np.trace(e @ e.T) for e in x], axis=0)
            covs.append((1 - self.reg) * cov + self.reg * np.trace(cov) / len(cov) * np.eye(len(cov)))
        eigvals, eigvecs = linalg.eigh(covs[0], covs[0] + covs[1])
        order = np.argsort(np.abs(eigvals - 0.5))[::-1]  # most discriminative first, from both ends
        self.filters_ = eigvecs[:, order[: self.n_components]].T  # (n_components, n_channels)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        sources = np.einsum("kc,nct->nkt", self.filters_, self._epochs(X))
        return np.log(sources.var(axis=2))


def load_epochs(edf: str | Path, *, chunk_size: int = 32) -> tuple[np.ndarray, np.ndarray, dict]:
    """Stream ``edf`` through ``bandpass -> epochs`` offline, like the live pipeline.

    Returns
    -------
    X : ndarray, shape (n_epochs, n_channels * n_times), float32
        Flattened epochs (channel-major).
    y : ndarray of str, shape (n_epochs,)
        Class names (``"hands"``, ``"feet"``).
    info : dict
        ``channels``, ``sfreq``, ``n_times`` and the preprocessing parameters.
    """
    device = FilePlayback(edf, realtime=False, chunk_size=chunk_size, picks="eeg")
    steps = [ops.bandpass(L_FREQ, H_FREQ, order=ORDER), ops.epochs(TMIN_S, TMAX_S, baseline=None, labels=tuple(CLASSES))]
    bound = [ops.BoundOp(s) for s in steps]
    states: list = [None] * len(bound)
    out: list = []
    device.open()
    try:
        while True:
            try:
                chunk = device.read(0.0)
            except EndOfStream:
                break
            # what the runtime's slot does (see tests/integration/test_motor_imagery.py): markers into meta
            events = tuple((e.t_s, e.label) for e in device.drain_events())
            batch = [chunk.replace(meta={**chunk.meta, "events": events})]
            for i, op in enumerate(bound):
                nxt = []
                for c in batch:
                    if states[i] is None:
                        states[i] = op.init(c)
                    states[i], produced = op.step(states[i], c)
                    nxt.extend(produced)
                batch = nxt
            out.extend(batch)
    finally:
        device.close()
    X = np.stack([e.data.reshape(-1) for e in out])
    y = np.array([CLASSES[e.meta["label"]] for e in out])
    info = {
        "channels": list(device.info.channels), "sfreq": device.info.sfreq, "n_times": out[0].n_samples,
        "l_freq": L_FREQ, "h_freq": H_FREQ, "filter_order": ORDER, "tmin_s": TMIN_S, "tmax_s": TMAX_S,
        "labels": CLASSES,
    }
    return X, y, info


def make_model(n_channels: int) -> SkPipeline:
    return SkPipeline([("csp", CSP(n_channels)), ("lda", LinearDiscriminantAnalysis())])


def cross_validate(
    X: np.ndarray, y: np.ndarray, n_channels: int, *, n_splits: int = 5, n_repeats: int = 10, seed: int = 42
) -> np.ndarray:
    """Accuracy of each fold of a repeated stratified k-fold (``n_splits`` capped by the smallest class)."""
    n_splits = min(n_splits, int(np.unique(y, return_counts=True)[1].min()))
    cv = RepeatedStratifiedKFold(n_splits=n_splits, n_repeats=n_repeats, random_state=seed)
    return cross_val_score(make_model(n_channels), X, y, cv=cv)


def to_onnx(model: SkPipeline, n_times: int) -> bytes:
    """CSP (Reshape, MatMul, log-variance via onnx.helper) + LDA (skl2onnx), merged into one graph."""
    import onnx
    from onnx import TensorProto, compose, helper, numpy_helper
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    csp, lda = model.named_steps["csp"], model.named_steps["lda"]
    n_channels, k = csp.n_channels, csp.filters_.shape[0]
    nodes = [
        helper.make_node("Reshape", ["epochs", "shape"], ["x"]),  # (N, C, T)
        helper.make_node("MatMul", ["W", "x"], ["s"]),  # (k, C) @ (N, C, T) -> (N, k, T)
        helper.make_node("ReduceMean", ["s"], ["s_mean"], axes=[2], keepdims=1),
        helper.make_node("Sub", ["s", "s_mean"], ["s_c"]),
        helper.make_node("Mul", ["s_c", "s_c"], ["s_sq"]),
        helper.make_node("ReduceMean", ["s_sq"], ["s_var"], axes=[2], keepdims=0),
        helper.make_node("Log", ["s_var"], ["csp_features"]),
    ]
    graph = helper.make_graph(
        nodes, "csp_logvar",
        [helper.make_tensor_value_info("epochs", TensorProto.FLOAT, ["N", n_channels * n_times])],
        [helper.make_tensor_value_info("csp_features", TensorProto.FLOAT, ["N", k])],
        initializer=[
            numpy_helper.from_array(np.array([-1, n_channels, n_times], dtype=np.int64), "shape"),
            numpy_helper.from_array(csp.filters_.astype(np.float32), "W"),
        ],
    )
    front = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="neuraflow")
    back = convert_sklearn(
        lda, initial_types=[("lda_input", FloatTensorType([None, k]))], target_opset={"": OPSET},
        options={id(lda): {"zipmap": False}},
    )
    front.ir_version = back.ir_version
    opsets = {o.domain: o.version for o in back.opset_import}
    del front.opset_import[:]
    front.opset_import.extend(helper.make_opsetid(d, v) for d, v in opsets.items())
    merged = compose.merge_models(front, back, io_map=[("csp_features", "lda_input")])
    # the op reads the first output: keep the probabilities only
    keep = [o for o in merged.graph.output if o.name == "probabilities"]
    del merged.graph.output[:]
    merged.graph.output.extend(keep)
    names = [str(c) for c in lda.classes_]
    helper.set_model_props(merged, {"class_names": json.dumps(names)})
    onnx.checker.check_model(merged)
    return merged.SerializeToString()



def onnx_predict_proba(model: bytes | str | Path, X: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(model if isinstance(model, bytes) else str(model), providers=["CPUExecutionProvider"])
    return session.run(["probabilities"], {"epochs": np.ascontiguousarray(X, dtype=np.float32)})[0]


def train(edf: str | Path, out: str | Path, *, version: str | None = None, n_splits: int = 5,
          n_repeats: int = 10, seed: int = 42) -> dict:
    """Fit, cross-validate, export and register; returns a summary dict."""
    X, y, info = load_epochs(edf)
    scores = cross_validate(X, y, len(info["channels"]), n_splits=n_splits, n_repeats=n_repeats, seed=seed)
    model = make_model(len(info["channels"])).fit(X, y)
    onnx_bytes = to_onnx(model, info["n_times"])
    got = onnx_predict_proba(onnx_bytes, X)
    want = model.predict_proba(X)
    if not np.allclose(got, want, atol=1e-4):
        raise RuntimeError(f"ONNX and sklearn disagree: max |diff| = {np.abs(got - want).max():.3g}.")
    registry = ops.ModelRegistry(out)
    if version is None:
        previous = [int(v) for v in (registry.versions(MODEL_NAME) if MODEL_NAME in registry.names() else []) if v.isdigit()]
        version = str(1 + max(previous, default=0))
    summary = {
        "cv_accuracy_mean": float(scores.mean()), "cv_accuracy_std": float(scores.std()),
        "n_folds": int(len(scores)), "n_epochs": int(len(y)),
        "class_counts": {str(c): int((y == c).sum()) for c in np.unique(y)}, "edf": str(edf),
    }
    path = registry.register(MODEL_NAME, version, onnx_bytes, metadata={**info, **summary})
    return {**summary, "version": version, "path": str(path)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edf", required=True, help="EDF recording with T1/T2 annotations")
    parser.add_argument("--out", default="models", help="model registry folder")
    parser.add_argument("--version", default=None, help="version to register (default: next integer)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    result = train(args.edf, args.out, version=args.version, n_splits=args.folds, n_repeats=args.repeats, seed=args.seed)
    print(
        f"CV accuracy {result['cv_accuracy_mean']:.3f} +/- {result['cv_accuracy_std']:.3f} "
        f"({result['n_folds']} folds, {result['n_epochs']} epochs {result['class_counts']})"
    )
    print(f"registered {MODEL_NAME} version {result['version']} at {result['path']}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
