"""Demo: synthetic EEG -> notch + band-pass -> 1 s log band power -> ONNX classifier.

Raw EEG and band power are archived in Iceberg; the cleaned signal stays in a
hot buffer (served at /streams/{id}/latest) and predictions are exposed at
/demo/predictions. Sizes come from the ``demo`` settings section.
"""

from __future__ import annotations

import numpy as np

from neuraflow import Pipeline, devices, ops, sinks
from neuraflow.config import NeuraflowSettings

BANDS = {"delta": (1.0, 4.0), "theta": (4.0, 8.0), "alpha": (8.0, 13.0), "beta": (13.0, 30.0), "gamma": (30.0, 40.0)}


def demo_classifier(n_features: int) -> bytes:
    """A fixed 2-class softmax regression "alpha vs rest" (no training needed for the demo)."""
    weights = np.zeros((2, n_features), dtype=np.float32)
    weights[1, 2 :: len(BANDS)] = 1.0 / max(1, n_features // len(BANDS))  # alpha band of every channel
    return ops.logistic_regression_onnx(weights, np.array([0.0, 11.0], dtype=np.float32), class_names=("rest", "alpha"))


def build(settings: NeuraflowSettings) -> Pipeline:
    demo, storage = settings.demo, settings.storage
    eeg_devices = [
        devices.Synthetic(f"synth-{i}", n_channels=demo.n_channels, sfreq=demo.sfreq, chunk_size=demo.chunk_size,
                          seed=i, blinks=True, markers=True)
        for i in range(demo.n_devices)
    ]
    p = Pipeline("demo")
    eeg = p.source("eeg", eeg_devices)
    clean = eeg.then("notch", ops.notch(freqs=(50.0,))).then("bandpass", ops.bandpass(l_freq=1.0, h_freq=40.0))
    power = clean.then("window", ops.sliding_window(length_s=1.0, step_s=0.25)).then(
        "bandpower", ops.log_band_power(BANDS)
    )
    n_features = power.infos[0].n_channels  # follows the source's montage (also when replaying a file)
    predictions = power.then("classify", ops.onnx_model(demo_classifier(n_features)))

    archive = sinks.Iceberg(
        table=storage.table,
        catalog_uri=storage.catalog_uri,
        warehouse=storage.warehouse,
        catalog_name=storage.catalog_name,
        flush_every_s=storage.flush_every_s,
    )
    eeg.to("archive", archive)
    power.to("archive")
    clean.to("hot", sinks.HotBuffer(seconds=storage.hot_seconds))
    p.expose("predictions", predictions, route="/demo/predictions")
    return p
