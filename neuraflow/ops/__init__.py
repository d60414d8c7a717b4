"""Pure streaming ops: filters, windows, features, inference.

Every factory validates its parameters and returns an :class:`OpSpec` (see
:mod:`neuraflow.ops.base` for the ``init``/``step`` contract). Nothing here
imports Ray; :func:`run_offline` runs an op over a list of chunks.

``REGISTRY`` maps each op kind to a zero-argument factory of an example
instance. Every example accepts a 4-channel stream at 250 Hz with chunks of
any length; the contract suite (``tests/contracts/test_op_contract.py``) runs
over all of them, so a new op only has to register itself here.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from neuraflow.ops.base import BoundOp, OpSpec, run_offline
from neuraflow.ops.features import log_band_power
from neuraflow.ops.filters import bandpass, notch
from neuraflow.ops.inference import logistic_regression_onnx, onnx_model
from neuraflow.ops.spectral import sliding_band_power
from neuraflow.ops.windows import sliding_window


def _example_classifier() -> OpSpec:
    # 3 classes over the 4 channels of the contract stream; fixed weights, no training needed.
    weights = np.arange(12, dtype=np.float32).reshape(3, 4) / 10.0 - 0.5
    return onnx_model(logistic_regression_onnx(weights, np.array([0.1, 0.0, -0.1]), class_names=("a", "b", "c")))


REGISTRY: dict[str, Callable[[], OpSpec]] = {
    "bandpass": lambda: bandpass(1.0, 40.0, order=4),
    "notch": lambda: notch((50.0, 60.0), quality=30.0),
    "sliding_window": lambda: sliding_window(0.5, 0.1),
    "log_band_power": lambda: log_band_power({"theta": (4.0, 8.0), "alpha": (8.0, 13.0), "beta": (13.0, 30.0)}),
    "onnx_model": _example_classifier,
    "sliding_band_power": lambda: sliding_band_power(
        {"theta": (4.0, 8.0), "alpha": (8.0, 13.0), "beta": (13.0, 30.0)}, length_s=0.5, step_s=0.1
    ),
}

__all__ = [
    "REGISTRY",
    "BoundOp",
    "OpSpec",
    "bandpass",
    "log_band_power",
    "logistic_regression_onnx",
    "notch",
    "onnx_model",
    "run_offline",
    "sliding_band_power",
    "sliding_window",
]
