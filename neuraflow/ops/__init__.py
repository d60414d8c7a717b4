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

from neuraflow.ops.artifacts import amplitude_guard, blink_detector, emg_detector, eog_regression, fit_eog_regression
from neuraflow.ops.asr import AsrCalibration, asr, fit_asr
from neuraflow.ops.base import BoundOp, OpSpec, run_offline
from neuraflow.ops.connectivity import pac_modulation_index, spectral_connectivity
from neuraflow.ops.channels import pick_channels, rereference
from neuraflow.ops.epoching import _example as _example_epochs
from neuraflow.ops.epoching import epochs, flatten_epoch
from neuraflow.ops.features import log_band_power
from neuraflow.ops.filters import bandpass, notch, sos_cascade
from neuraflow.ops.fir import detrend, fir_filter
from neuraflow.ops.iir import dc_block, filter_bank, iir_filter
from neuraflow.ops.inference import logistic_regression_onnx, onnx_model
from neuraflow.ops.resample import resample
from neuraflow.ops.registry import ModelIntegrityError, ModelRegistry
from neuraflow.ops.power import band_power, morlet_power, peak_frequency, spectral_edge
from neuraflow.ops.spectra import multitaper_psd, welch_psd
from neuraflow.ops.spectral import sliding_band_power
from neuraflow.ops.spikes import bin_counts, threshold_spikes
from neuraflow.ops.temporal import temporal_features
from neuraflow.ops.windows import sliding_window
from neuraflow.sync.clock import dejitter


def _example_classifier() -> OpSpec:
    # 3 classes over the 4 channels of the contract stream; fixed weights, no training needed.
    weights = np.arange(12, dtype=np.float32).reshape(3, 4) / 10.0 - 0.5
    return onnx_model(logistic_regression_onnx(weights, np.array([0.1, 0.0, -0.1]), class_names=("a", "b", "c")))


def _example_asr() -> OpSpec:
    # Calibrated on 30 s of seeded 4-channel noise at 250 Hz (the contract stream's shape and scale).
    clean = 20e-6 * np.random.default_rng(0).standard_normal((4, 7500))
    return asr(fit_asr(clean, 250.0, cutoff=5.0), step=16)


REGISTRY: dict[str, Callable[[], OpSpec]] = {
    "eog_regression": lambda: eog_regression(["ch0"], calibration_s=1.0),
    "blink_detector": lambda: blink_detector(["ch0", "ch1"], z=3.0, calibration_s=0.5),
    "emg_detector": lambda: emg_detector(ratio_threshold=0.5, action="suppress"),
    "amplitude_guard": lambda: amplitude_guard(50e-6, 120e-6, window_s=0.2, action="drop"),
    "asr": _example_asr,
    "bandpass": lambda: bandpass(1.0, 40.0, order=4),
    "notch": lambda: notch((50.0, 60.0), quality=30.0),
    "sos_cascade": lambda: sos_cascade(notch(50.0), bandpass(1.0, 40.0, order=4), dc_block(0.5)),
    "sliding_window": lambda: sliding_window(0.5, 0.1),
    "log_band_power": lambda: log_band_power({"theta": (4.0, 8.0), "alpha": (8.0, 13.0), "beta": (13.0, 30.0)}),
    "onnx_model": _example_classifier,
    "iir_filter": lambda: iir_filter("bandpass", (8.0, 30.0), design="ellip", order=3, rp_db=0.5, rs_db=40.0),
    "dc_block": lambda: dc_block(0.5),
    "filter_bank": lambda: filter_bank({"alpha": (8.0, 13.0), "beta": (13.0, 30.0), "slow": (None, 4.0)}),
    "fir_filter": lambda: fir_filter("bandpass", (1.0, 40.0), transition_hz=2.0),
    "detrend": lambda: detrend("linear", window_s=1.0),
    "resample": lambda: resample(sfreq_out=160.0),
    "rereference": lambda: rereference({"c0-c1": ("ch0", "ch1"), "c2-c3": ("ch2", "ch3")}),
    "pick_channels": lambda: pick_channels(["ch3", "ch1"], types=["eeg"]),
    "epochs": _example_epochs,  # flatten_epoch needs fixed-length epochs: tested in tests/unit/ops/test_epochs.py
    "sliding_band_power": lambda: sliding_band_power(
        {"theta": (4.0, 8.0), "alpha": (8.0, 13.0), "beta": (13.0, 30.0)}, length_s=0.5, step_s=0.1
    ),
    "welch_psd": lambda: welch_psd(0.25, fmax=40.0),
    "multitaper_psd": lambda: multitaper_psd(0.5, nw=2.0, fmax=40.0),
    "band_power": lambda: band_power({"theta": (4.0, 8.0), "alpha": (8.0, 13.0)}, method="multitaper", relative=True),
    "spectral_edge": lambda: spectral_edge(90.0, fmax=40.0),
    "peak_frequency": lambda: peak_frequency(4.0, 30.0),
    "morlet_power": lambda: morlet_power([10.0, 20.0], 5.0, output="last"),
    "temporal_features": lambda: temporal_features(
        ["mean", "variance", "skewness", "hjorth_complexity", "sample_entropy", "permutation_entropy"]
    ),
    "spectral_connectivity": lambda: spectral_connectivity("wpli", {"alpha": (8.0, 13.0)}, nperseg_s=0.25),
    "pac_modulation_index": lambda: pac_modulation_index((4.0, 8.0), (30.0, 45.0), pairs=[("ch0", "ch1")]),
    "dejitter": lambda: dejitter(latency_s=0.002, min_span_s=0.5, block_s=0.25, window_s=2.0),
    "threshold_spikes": lambda: threshold_spikes("mad", 4.5, refractory_s=0.01, calibration_s=0.2, running=True),
    "bin_counts": lambda: bin_counts(0.02),
}

__all__ = [
    "AsrCalibration",
    "amplitude_guard",
    "asr",
    "blink_detector",
    "emg_detector",
    "eog_regression",
    "fit_asr",
    "fit_eog_regression",
    "welch_psd",
    "temporal_features",
    "spectral_edge",
    "spectral_connectivity",
    "peak_frequency",
    "pac_modulation_index",
    "multitaper_psd",
    "morlet_power",
    "band_power",
    "bin_counts",
    "threshold_spikes",
    "REGISTRY",
    "BoundOp",
    "ModelIntegrityError",
    "ModelRegistry",
    "OpSpec",
    "bandpass",
    "dc_block",
    "dejitter",
    "detrend",
    "epochs",
    "filter_bank",
    "fir_filter",
    "flatten_epoch",
    "iir_filter",
    "log_band_power",
    "logistic_regression_onnx",
    "notch",
    "sos_cascade",
    "onnx_model",
    "pick_channels",
    "rereference",
    "resample",
    "run_offline",
    "sliding_band_power",
    "sliding_window",
]
