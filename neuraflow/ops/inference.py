"""Model inference on feature vectors: :func:`onnx_model`, :func:`logistic_regression_onnx`.

The ONNX Runtime session is a heavy resource, not state: the op's ``setup``
hook builds one per worker process and the runtime passes it to ``step`` as
``resource=``. ``step_batch`` runs one ``session.run`` over the feature
vectors of every stream hosted by the actor.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from neuraflow._validate import check_int
from neuraflow.chunk import Chunk, StreamInfo
from neuraflow.errors import PipelineDefinitionError, StreamMismatchError
from neuraflow.ops.base import OpSpec, check_same_stream

_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64}
_GPU_FIRST = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
_CLASS_NAMES_KEY = "class_names"


@dataclass(frozen=True)
class ModelSignature:
    """What a pipeline needs to know about a model, read from its graph.

    Parameters
    ----------
    input_name, output_name : str
        Graph input fed with the features and graph output read back.
    n_features : int or None
        Static width of the input (``None`` when symbolic).
    n_outputs : int or None
        Static width of the output (``None`` when symbolic).
    fixed_batch : bool
        True when the input's first dimension is the constant 1 (rows are then run one by one).
    dtype : numpy dtype
        Element type the input expects (float32 or float64).
    class_names : tuple of str
        From the model's ``class_names`` metadata (JSON list), or ``()``.
    """

    input_name: str
    output_name: str
    n_features: int | None
    n_outputs: int | None
    fixed_batch: bool
    dtype: Any
    class_names: tuple[str, ...] = ()


def _read(model: str | os.PathLike | bytes) -> bytes | None:
    if isinstance(model, bytes):
        return model
    try:
        return Path(model).read_bytes()
    except OSError:
        return None


def _signature(session: Any, input_name: str | None, output_name: str | None, where: str) -> ModelSignature:
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    if input_name is None:
        if len(inputs) != 1:
            raise PipelineDefinitionError(f"{where}: the model has inputs {tuple(inputs)}; pass input_name=.")
        input_name = next(iter(inputs))
    if input_name not in inputs:
        raise PipelineDefinitionError(f"{where}: input_name={input_name!r} is not one of {tuple(inputs)}.")
    output_name = output_name if output_name is not None else next(iter(outputs))
    if output_name not in outputs:
        raise PipelineDefinitionError(f"{where}: output_name={output_name!r} is not one of {tuple(outputs)}.")
    arg = inputs[input_name]
    if arg.type not in _DTYPES or len(arg.shape) != 2:
        raise PipelineDefinitionError(
            f"{where}: input {input_name!r} is {arg.type} of shape {arg.shape}; expected a 2-D float tensor "
            f"(n_rows, n_features)."
        )
    out_shape = outputs[output_name].shape
    width = out_shape[-1] if len(out_shape) == 2 else (1 if len(out_shape) == 1 else None)
    meta = session.get_modelmeta().custom_metadata_map
    try:
        names = tuple(str(n) for n in json.loads(meta.get(_CLASS_NAMES_KEY, "[]")))
    except (ValueError, TypeError):
        names = ()
    return ModelSignature(
        input_name=input_name,
        output_name=output_name,
        n_features=arg.shape[1] if isinstance(arg.shape[1], int) else None,
        n_outputs=width if isinstance(width, int) else None,
        fixed_batch=arg.shape[0] == 1,
        dtype=_DTYPES[arg.type],
        class_names=names,
    )


@dataclass(frozen=True)
class OnnxResource:
    """The per-worker resource: a session plus the model's signature."""

    session: Any
    signature: ModelSignature


@lru_cache(maxsize=16)
def _cpu_session(data: bytes, input_name: str | None, output_name: str | None) -> OnnxResource:
    """A CPU session used at build time only (validation, output width); cached per model."""
    import onnxruntime as ort

    where = "ops.onnx_model"
    try:
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own exception types
        raise PipelineDefinitionError(f"{where}: not a valid ONNX model ({exc}).") from exc
    return OnnxResource(session, _signature(session, input_name, output_name, where))


def _default_providers() -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in _GPU_FIRST if p in available] + ["CPUExecutionProvider"]


def _setup(model, input_name, output_name, providers, threads=1) -> OnnxResource:
    import onnxruntime as ort

    data = _read(model)
    if data is None:
        raise PipelineDefinitionError(f"ops.onnx_model: cannot read model file {str(model)!r} on this worker.")
    options = ort.SessionOptions()
    # ONNX Runtime's default pool has one thread per core, and idle pool threads spin: in a
    # worker that calls the model once per tick, that burnt a whole core between calls,
    # taken from the engine's other workers (one per core)
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if threads > 1:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(
        data, options, providers=list(providers) if providers else _default_providers()
    )
    return OnnxResource(session, _signature(session, input_name, output_name, "ops.onnx_model"))


def _run(res: OnnxResource, rows: np.ndarray) -> np.ndarray:
    """Run ``rows`` (n_rows, n_features) through the model -> (n_rows, n_outputs) float32."""
    sig = res.signature
    rows = np.ascontiguousarray(rows, dtype=sig.dtype)
    if sig.fixed_batch and rows.shape[0] != 1:
        parts = [_run(res, rows[i : i + 1]) for i in range(rows.shape[0])]
        return np.concatenate(parts, axis=0) if parts else np.zeros((0, sig.n_outputs or 1), np.float32)
    (out,) = res.session.run([sig.output_name], {sig.input_name: rows})
    out = np.asarray(out, dtype=np.float32)
    return out.reshape(rows.shape[0], -1)


def _out_info(info: StreamInfo, sig: ModelSignature, n_outputs: int) -> StreamInfo:
    names = sig.class_names if len(sig.class_names) == n_outputs else tuple(f"out{i}" for i in range(n_outputs))
    return info.replace(channels=names, ch_types=("prediction",) * n_outputs, units=("",) * n_outputs)


_INFO_CACHE: dict[tuple, tuple[StreamInfo, StreamInfo]] = {}


def _cached_out_info(info: StreamInfo, sig: ModelSignature, n_outputs: int) -> StreamInfo:
    key = (id(info), id(sig), n_outputs)
    hit = _INFO_CACHE.get(key)
    if hit is not None and hit[0] is info:
        return hit[1]
    if len(_INFO_CACHE) > 1024:
        _INFO_CACHE.clear()
    out = _out_info(info, sig, n_outputs)
    _INFO_CACHE[key] = (info, out)
    return out


def _check(chunk: Chunk, sig: ModelSignature) -> None:
    if sig.n_features is not None and chunk.n_channels != sig.n_features:
        raise StreamMismatchError(
            f"stream {chunk.stream_id!r}: {chunk.n_channels} features, the model expects {sig.n_features}."
        )


def _emit(chunk: Chunk, values: np.ndarray, sig: ModelSignature) -> Chunk:
    """``values`` (n_samples, n_outputs) float32 -> a chunk (n_outputs, n_samples).

    Built without the constructor's checks: the data is made read-only, C-contiguous
    float32 here, its width is the info's channel count and the rest comes from the
    (validated) input chunk.
    """
    info = _cached_out_info(chunk.info, sig, values.shape[1])
    data = values.T
    if not data.flags.c_contiguous:  # a single row transposes to a contiguous column: no copy
        data = np.ascontiguousarray(data)
    data.flags.writeable = False
    return Chunk.trusted(data, chunk.t0_s, info, chunk.seq, chunk.recv_s, chunk.meta)


@dataclass(frozen=True)
class OnnxState:
    """What :func:`onnx_model` keeps of a stream: its rate and width, to refuse a change mid-stream.

    Parameters
    ----------
    sfreq : float
        Rate of the feature stream, Hz.
    n_channels : int
        Features per vector.
    """

    sfreq: float
    n_channels: int


def _init(first: Chunk, *, resource: OnnxResource) -> OnnxState:
    _check(first, resource.signature)
    return OnnxState(sfreq=first.sfreq, n_channels=first.n_channels)


def _check_state(state: OnnxState | None, chunk: Chunk, sig: ModelSignature) -> None:
    """Refuse a chunk the model or the stream's first chunk disagrees with (``None``: model only)."""
    if state is not None:
        check_same_stream("ops.onnx_model", chunk, sfreq=state.sfreq, n_channels=state.n_channels)
    _check(chunk, sig)


def _step(state: OnnxState | None, chunk: Chunk, *, resource: OnnxResource) -> tuple[OnnxState | None, list[Chunk]]:
    _check_state(state, chunk, resource.signature)
    if chunk.n_samples == 0:
        return state, []
    return state, [_emit(chunk, _run(resource, chunk.data.T), resource.signature)]


def _step_batch(
    states: Sequence[OnnxState | None], chunks: Sequence[Chunk], *, resource: OnnxResource
) -> tuple[list[OnnxState | None], list[list[Chunk]]]:
    """One ``session.run`` over the columns of all chunks with the same feature count."""
    outputs: list[list[Chunk]] = [[] for _ in chunks]
    groups: dict[int, list[int]] = {}
    for i, (state, chunk) in enumerate(zip(states, chunks)):
        _check_state(state, chunk, resource.signature)
        if chunk.n_samples:
            groups.setdefault(chunk.n_channels, []).append(i)
    for members in groups.values():
        rows = np.concatenate([chunks[i].data.T for i in members], axis=0)
        values = _run(resource, rows)
        start = 0
        for i in members:
            stop = start + chunks[i].n_samples
            outputs[i] = [_emit(chunks[i], values[start:stop], resource.signature)]
            start = stop
    return list(states), outputs


def _infer_info(info: StreamInfo, *, model, input_name, output_name) -> StreamInfo:
    data = _read(model)
    if data is None:
        raise ValueError(
            f"model file {str(model)!r} is not readable at build time; the output channels come from the model."
        )
    probe = _cpu_session(data, input_name, output_name)
    sig = probe.signature
    if sig.n_features is not None and sig.n_features != info.n_channels:
        raise ValueError(
            f"the model expects {sig.n_features} features ({sig.input_name!r}), "
            f"the input stream has n_channels={info.n_channels}."
        )
    n_outputs = sig.n_outputs
    if n_outputs is None:  # symbolic output width: probe the model once with zeros
        n_outputs = _run(probe, np.zeros((1, info.n_channels))).shape[1]
    return _out_info(info, sig, n_outputs)


def onnx_model(
    model: str | os.PathLike | bytes,
    *,
    input_name: str | None = None,
    output_name: str | None = None,
    providers: Sequence[str] | None = None,
    threads: int = 1,
) -> OpSpec:
    """Run an ONNX model on every feature vector of a stream.

    Parameters
    ----------
    model : str, path-like or bytes
        Path of an ``.onnx`` file (read on each worker) or the serialized model.
    input_name : str, optional
        Graph input to feed, shape ``(n_rows, n_features)``; default: the only input.
    output_name : str, optional
        Graph output to emit, shape ``(n_rows, n_outputs)`` or ``(n_rows,)``; default: the first.
    providers : sequence of str, optional
        ONNX Runtime execution providers in order of preference. Default:
        TensorRT and CUDA when :func:`onnxruntime.get_available_providers` lists
        them, then CPU.
    threads : int
        ONNX Runtime intra-op threads per worker (>= 1). The default 1 suits the
        engine, which runs one worker per core; more threads (which then do not
        spin while idle) only pay for large models.

    Returns
    -------
    OpSpec
        Input: chunks ``(n_features, n_samples)`` where each column is one feature
        vector (usually ``n_samples == 1``, from :func:`~neuraflow.ops.log_band_power`).
        Output: ``(n_outputs, n_samples)`` float32, channels from the model's
        ``class_names`` metadata or ``"out0" .. "out{n-1}"``, type ``"prediction"``.
        The state only records the stream's rate and width (a chunk that changes
        them raises :class:`~neuraflow.errors.StreamMismatchError`); the session
        is built by ``setup`` once per worker.

    Raises
    ------
    PipelineDefinitionError
        If ``model`` is neither a path nor bytes, is not a valid ONNX model, or
        names an unknown input/output. A model whose input width differs from the
        stream's ``n_channels`` is reported at build time (``ValueError`` from
        ``infer_info``) whenever the model is readable there.

    Examples
    --------
    >>> import numpy as np
    >>> from neuraflow.ops import logistic_regression_onnx, onnx_model
    >>> spec = onnx_model(logistic_regression_onnx(np.eye(2, 4), np.zeros(2)))
    >>> spec.kind
    'onnx_model'
    """
    where = "ops.onnx_model"
    if isinstance(model, (bytearray, memoryview)):
        model = bytes(model)
    if not isinstance(model, (bytes, str, os.PathLike)):
        raise PipelineDefinitionError(f"{where}: model must be a path or bytes, got {type(model).__name__}.")
    if isinstance(model, bytes) and not model:
        raise PipelineDefinitionError(f"{where}: model bytes are empty.")
    for name, value in (("input_name", input_name), ("output_name", output_name)):
        if value is not None and (not isinstance(value, str) or not value):
            raise PipelineDefinitionError(f"{where}: {name}={value!r} must be a non-empty string or None.")
    threads = check_int(where, "threads", threads)
    if providers is not None:
        if isinstance(providers, str) or not all(isinstance(p, str) for p in providers):
            raise PipelineDefinitionError(f"{where}: providers={providers!r} must be a sequence of provider names.")
        providers = tuple(providers)
    if not isinstance(model, bytes):
        model = os.fspath(model)
    data = _read(model)
    if data is not None:  # validate now when we can; a missing file is checked at build time
        _cpu_session(data, input_name, output_name)
    names = {"input_name": input_name, "output_name": output_name}
    label = f"<{len(model)} bytes>" if isinstance(model, bytes) else model
    return OpSpec(
        kind="onnx_model",
        init=_init,
        step=_step,
        infer_info=partial(_infer_info, model=model, **names),
        params=MappingProxyType({"model": label, **names, "providers": providers, "threads": threads}),
        step_batch=_step_batch,
        setup=partial(_setup, model, input_name, output_name, providers, threads),
    )


def logistic_regression_onnx(
    weights: np.ndarray, bias: np.ndarray, *, class_names: Sequence[str] | None = None
) -> bytes:
    """Serialize a softmax (multinomial logistic) regression as an ONNX model.

    ``probabilities = softmax(features @ weights.T + bias)``.

    Parameters
    ----------
    weights : ndarray, shape (n_classes, n_features)
        Coefficients.
    bias : ndarray, shape (n_classes,)
        Intercepts.
    class_names : sequence of str, optional
        Stored in the model's ``class_names`` metadata; they become the output channel names.

    Returns
    -------
    bytes
        Model with input ``"features"`` float32 ``(N, n_features)`` and output
        ``"probabilities"`` float32 ``(N, n_classes)`` (opset 17).

    Raises
    ------
    PipelineDefinitionError
        If the shapes disagree or values are not finite.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    where = "ops.logistic_regression_onnx"
    w = np.asarray(weights, dtype=np.float32)
    b = np.asarray(bias, dtype=np.float32)
    if w.ndim != 2 or b.shape != (w.shape[0],) or w.size == 0:
        raise PipelineDefinitionError(
            f"{where}: weights must be (n_classes, n_features) and bias (n_classes,), got {w.shape} and {b.shape}."
        )
    if not (np.isfinite(w).all() and np.isfinite(b).all()):
        raise PipelineDefinitionError(f"{where}: weights and bias must be finite.")
    n_classes, n_features = w.shape
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["features", "W"], ["logits_raw"]),
            helper.make_node("Add", ["logits_raw", "b"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
        ],
        "logistic_regression",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", n_features])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", n_classes])],
        initializer=[
            numpy_helper.from_array(np.ascontiguousarray(w.T), "W"),
            numpy_helper.from_array(b, "b"),
        ],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="neuraflow")
    proto.ir_version = 8  # readable by every onnxruntime >= 1.14
    if class_names is not None:
        names = [str(n) for n in class_names]
        if len(names) != n_classes or len(set(names)) != n_classes:
            raise PipelineDefinitionError(f"{where}: class_names must be {n_classes} unique names, got {names!r}.")
        helper.set_model_props(proto, {_CLASS_NAMES_KEY: json.dumps(names)})
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


__all__ = ["ModelSignature", "OnnxResource", "OnnxState", "logistic_regression_onnx", "onnx_model"]
