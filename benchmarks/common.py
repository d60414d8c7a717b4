"""The reference workload of the benchmarks, defined once for both sides.

Reference pipeline (per device, 64 channels at 1 kHz, chunks of 32 samples):

1. 50 Hz notch (Q=30) then 4th-order Butterworth band-pass 1-40 Hz, filter
   state carried between chunks (5 second-order sections in all);
2. a 1 s sliding window advanced by 32 samples, i.e. one window per chunk;
3. log10 mean power density in 5 bands (Hann periodogram, one rFFT of 1000
   samples per channel and window);
4. softmax logistic regression (ONNX Runtime) on the 64 x 5 = 320 features.

A device produces ``SFREQ / CHUNK_SIZE = 31.25`` chunks per second;
throughput is counted in channel-samples per second (64 000 per device).
"""

from __future__ import annotations

import math
import os
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from neuraflow import Pipeline, ops
from neuraflow.chunk import Chunk, Event
from neuraflow.devices import Synthetic
from neuraflow.devices.base import Device
from neuraflow.graph.plan import LogicalPlan

N_CHANNELS = 64
SFREQ = 1000.0
CHUNK_SIZE = 32
WINDOW_S = 1.0
STEP_S = CHUNK_SIZE / SFREQ
NOTCH_HZ = 50.0
NOTCH_Q = 30.0
L_FREQ, H_FREQ, ORDER = 1.0, 40.0, 4
BANDS: dict[str, tuple[float, float]] = {
    "delta": (1.0, 4.0),
    "theta": (4.0, 8.0),
    "alpha": (8.0, 13.0),
    "beta": (13.0, 30.0),
    "gamma": (30.0, 40.0),
}
N_FEATURES = N_CHANNELS * len(BANDS)
CHUNKS_PER_S = SFREQ / CHUNK_SIZE  # 31.25 chunks per second per device
LATENCY_TARGET_MS = 50.0

# Issue targets.
TARGET_DEVICES = 480
TARGET_FRACTION_OF_BARE = 0.90
TARGET_P50_MS = 1.0
TARGET_P99_MS = 5.0
TARGET_REPLAY_X = 200.0


def classifier_weights() -> tuple[np.ndarray, np.ndarray]:
    """Fixed 2-class weights ``W (2, 320)``, ``b (2,)``: alpha power of every channel vs rest."""
    weights = np.zeros((2, N_FEATURES), dtype=np.float32)
    weights[1, 2 :: len(BANDS)] = 1.0 / N_CHANNELS
    return weights, np.array([0.0, 11.0], dtype=np.float32)


def classifier_model() -> bytes:
    """The ONNX model both sides run (same bytes)."""
    weights, bias = classifier_weights()
    return ops.logistic_regression_onnx(weights, bias, class_names=("rest", "alpha"))


class CountingSink:
    """A sink that only counts what it receives (storage cost must not dominate).

    Implements the :class:`~neuraflow.sinks.base.Sink` protocol; query its
    counters through ``handle.call_sink(name, "stats")``.
    """

    def __init__(self) -> None:
        self.chunks = 0
        self.events = 0
        self.batches = 0

    def open(self) -> None:
        return None

    def write_batch(self, chunks: Sequence[Chunk]) -> None:
        self.chunks += len(chunks)
        self.batches += 1

    def write_events(self, events: Sequence[Event]) -> None:
        self.events += len(events)

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None

    def stats(self) -> dict[str, int]:
        return {"chunks": self.chunks, "events": self.events, "batches": self.batches}


def synthetic_devices(n: int, *, realtime: bool, start_s: float | None = None) -> list[Synthetic]:
    """``n`` deterministic 64-channel 1 kHz devices with 32-sample chunks (seed = index)."""
    return [
        Synthetic(f"dev-{i}", n_channels=N_CHANNELS, sfreq=SFREQ, chunk_size=CHUNK_SIZE, seed=i,
                  realtime=realtime, start_s=start_s)
        for i in range(n)
    ]


def reference_plan(
    name: str, devices: Sequence[Device], sink: object | None = None, *, incremental: bool = False
) -> LogicalPlan:
    """The reference pipeline over ``devices``; predictions go to ``sink`` (a :class:`CountingSink`).

    ``incremental=True`` computes the same band powers with ``ops.sliding_band_power``
    (sliding DFT) instead of ``sliding_window -> log_band_power`` (full FFT per hop).
    """
    p = Pipeline(name)
    eeg = p.source("eeg", list(devices))
    clean = eeg.then("notch", ops.notch(freqs=(NOTCH_HZ,), quality=NOTCH_Q)).then(
        "bandpass", ops.bandpass(l_freq=L_FREQ, h_freq=H_FREQ, order=ORDER)
    )
    if incremental:
        power = clean.then("bandpower", ops.sliding_band_power(BANDS, length_s=WINDOW_S, step_s=STEP_S))
    else:
        power = clean.then("window", ops.sliding_window(length_s=WINDOW_S, step_s=STEP_S)).then(
            "bandpower", ops.log_band_power(BANDS)
        )
    predictions = power.then("classify", ops.onnx_model(classifier_model(), providers=["CPUExecutionProvider"]))
    predictions.to("out", sink if sink is not None else CountingSink())
    return p.build()


@dataclass
class CpuClock:
    """Process CPU time (user + system, all threads) and wall time, started at creation."""

    cpu0: float = 0.0
    wall0: float = 0.0

    def __post_init__(self) -> None:
        self.cpu0, self.wall0 = time.process_time(), time.perf_counter()

    @property
    def cpu_s(self) -> float:
        return time.process_time() - self.cpu0

    @property
    def wall_s(self) -> float:
        return time.perf_counter() - self.wall0


def pid_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) consumed so far by process ``pid`` (Linux ``/proc``)."""
    if pid == os.getpid():
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime


def median(values: Sequence[float]) -> float:
    """Median of ``values``; ``nan`` when empty."""
    return float(np.median(values)) if len(values) else math.nan
