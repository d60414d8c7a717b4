"""Motor imagery live: EDF playback -> band-pass 7-30 Hz -> epochs at T1/T2 -> CSP + LDA (ONNX).

The model comes from the registry written by ``pipelines/train_motor_imagery.py``
(``$NEURAFLOW_MODEL_REGISTRY``, default ``models/`` beside this folder); when it
holds no ``motor_imagery`` model, one is fitted in memory from the recording
(a few seconds, nothing written). The recording is ``$NEURAFLOW_MI_EDF``,
default ``../shared/data/eegmmidb/S001R06.edf``. Epoching needs the device's
markers in each raw chunk's ``meta["events"]`` (see :func:`neuraflow.ops.epochs`).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from neuraflow import Pipeline, devices, ops
from neuraflow.config import NeuraflowSettings
from neuraflow.errors import PipelineDefinitionError

HERE = Path(__file__).resolve().parent
MODEL_NAME = "motor_imagery"


def _trainer():
    spec = importlib.util.spec_from_file_location("neuraflow_train_motor_imagery", HERE / "train_motor_imagery.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _edf() -> Path:
    if "NEURAFLOW_MI_EDF" in os.environ:
        return Path(os.environ["NEURAFLOW_MI_EDF"])
    for candidate in (HERE.parent.parent / "shared" / "data", Path("/work/shared/data")):
        path = candidate / "eegmmidb" / "S001R06.edf"
        if path.is_file():
            return path
    raise PipelineDefinitionError("motor_imagery: recording S001R06.edf not found; set NEURAFLOW_MI_EDF.")


def load_model(edf: Path) -> tuple[str | bytes, dict]:
    """The registered model (path, metadata), or one fitted in memory from ``edf``."""
    registry = ops.ModelRegistry(os.environ.get("NEURAFLOW_MODEL_REGISTRY", HERE.parent / "models"))
    if MODEL_NAME in registry.names():
        return str(registry.resolve(MODEL_NAME)), registry.metadata(MODEL_NAME)
    train = _trainer()
    X, y, info = train.load_epochs(edf)
    model = train.make_model(len(info["channels"])).fit(X, y)
    return train.to_onnx(model, info["n_times"]), info


def build(settings: NeuraflowSettings) -> Pipeline:
    edf = _edf()
    model, meta = load_model(edf)
    device = devices.FilePlayback(edf, stream_id="mi-0", chunk_size=settings.demo.chunk_size, picks="eeg")
    if list(device.info.channels) != list(meta["channels"]) or device.info.sfreq != meta["sfreq"]:
        raise PipelineDefinitionError(
            f"motor_imagery: the model was trained on {len(meta['channels'])} channels at {meta['sfreq']} Hz, "
            f"the source has {device.info.n_channels} at {device.info.sfreq} Hz."
        )
    p = Pipeline("motor_imagery")
    eeg = p.source("eeg", [device])
    trials = (
        eeg.then("bandpass", ops.bandpass(meta["l_freq"], meta["h_freq"], order=meta["filter_order"]))
        .then("epochs", ops.epochs(meta["tmin_s"], meta["tmax_s"], baseline=None, labels=tuple(meta["labels"])))
    )
    predictions = trials.then("vector", ops.flatten_epoch()).then("classify", ops.onnx_model(model))
    p.expose("predictions", predictions, route="/motor_imagery/predictions")
    return p
