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
from neuraflow.devices._pacing import wait_due
from neuraflow.devices.base import Device, DeviceBase
from neuraflow.graph.plan import LogicalPlan
from neuraflow.graph.optimize import fuse_sos_filters

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

# Issue targets (devices: the processing issue's 1,000; the foundation issue asked for 480).
TARGET_DEVICES = 1000
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


#: Seconds of pre-generated data a :class:`LoopedSynthetic` replays (64 ch: 2 MB per process).
LOOP_S = 8.0
_LOOPS: dict[tuple[int, float, int, int], np.ndarray] = {}


def _loop_block(n_channels: int, sfreq: float, chunk_size: int, n_chunks: int) -> np.ndarray:
    """``(n_chunks, n_channels, chunk_size)`` float32, read-only: the first ``n_chunks`` chunks of
    ``Synthetic(seed=0)``, generated once per process and shared by every looped device."""
    key = (n_channels, sfreq, chunk_size, n_chunks)
    block = _LOOPS.get(key)
    if block is None:
        dev = Synthetic("loop", n_channels=n_channels, sfreq=sfreq, chunk_size=chunk_size, seed=0,
                        realtime=False, start_s=0.0)
        data = dev.expected(0, n_chunks * chunk_size)
        block = np.ascontiguousarray(data.reshape(n_channels, n_chunks, chunk_size).transpose(1, 0, 2))
        block.flags.writeable = False
        _LOOPS[key] = block
    return block


class LoopedSynthetic(DeviceBase):
    """A cheap benchmark device: paced playback of a pre-generated block of :class:`Synthetic` data.

    Every device of a process replays the same ``LOOP_S`` seconds of
    ``Synthetic(seed=0)`` (generated once per process, at the first :meth:`open`),
    each from its own offset, looping; reading a chunk is taking a slice.
    :class:`Synthetic` generates its signal on the fly (~41 us per 64 x 32 chunk,
    1.3 ms of CPU per device-second), which in a capacity search would bill the
    engine for data generation that a real device does in hardware; this device
    costs what a driver handing over ready samples costs. Same stream
    description, chunk timing and pacing as :class:`Synthetic` (chunk ``k`` due at
    ``start_s + (k + 1) * chunk_size / sfreq``), ``meta["sample_index"]`` included.
    """

    blocking = False

    def __init__(self, stream_id: str, *, offset_chunks: int, realtime: bool, start_s: float | None = None,
                 phase_s: float = 0.0) -> None:
        template = Synthetic(stream_id, n_channels=N_CHANNELS, sfreq=SFREQ, chunk_size=CHUNK_SIZE, seed=0)
        self.info = template.info
        self.n_chunks = round(LOOP_S * SFREQ / CHUNK_SIZE)
        self.offset_chunks = offset_chunks % self.n_chunks
        self.realtime = realtime
        self.start_s = start_s
        self.phase_s = phase_s
        self._block: np.ndarray | None = None
        self._t0: float | None = None
        self._next = 0

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "_block": None}  # the block is rebuilt (once) in each process

    def open(self) -> None:
        self._block = _loop_block(N_CHANNELS, SFREQ, CHUNK_SIZE, self.n_chunks)
        if self._t0 is None:
            self._t0 = time.time() + self.phase_s if self.start_s is None else self.start_s

    def read(self, timeout_s: float) -> Chunk | None:
        if self._block is None or self._t0 is None:
            raise RuntimeError(f"LoopedSynthetic {self.info.stream_id!r}: read() before open().")
        k = self._next
        now = wait_due(self._due_s(k) if self.realtime else None, timeout_s)
        if now is None:
            return None
        self._next = k + 1
        start = k * CHUNK_SIZE
        data = self._block[(k + self.offset_chunks) % self.n_chunks]
        return Chunk(data, self._t0 + start / SFREQ, self.info, seq=k, recv_s=now, meta={"sample_index": start})

    def next_ready_s(self) -> float | None:
        if self._t0 is None:
            return None
        return self._due_s(self._next) if self.realtime else 0.0

    def _due_s(self, k: int) -> float:
        assert self._t0 is not None
        return self._t0 + (k + 1) * CHUNK_SIZE / SFREQ


def looped_devices(
    n: int, *, realtime: bool, start_s: float | None = None, phases: str = "aligned"
) -> list[LoopedSynthetic]:
    """``n`` cheap 64-channel 1 kHz devices (:class:`LoopedSynthetic`), device ``i`` offset by ``37 i`` chunks.

    ``phases``: ``"aligned"``, every device's chunks fall due at the same instants
    (all opened together: the best case for batching); ``"spread"``, device ``i``
    starts a golden-ratio fraction of a chunk period later, as devices started one
    by one would (ticks then gather fewer devices each).
    """
    if phases not in ("aligned", "spread"):
        raise ValueError(f"phases={phases!r}: expected 'aligned' or 'spread'.")
    period_s = CHUNK_SIZE / SFREQ
    return [
        LoopedSynthetic(f"dev-{i}", offset_chunks=37 * i, realtime=realtime, start_s=start_s,
                        phase_s=(i * 0.618034 % 1.0) * period_s if phases == "spread" else 0.0)
        for i in range(n)
    ]


def bench_devices(
    kind: str, n: int, *, realtime: bool, start_s: float | None = None, phases: str = "aligned"
) -> list[Device]:
    """``n`` devices of ``kind``: ``"looped"`` (:class:`LoopedSynthetic`) or ``"synthetic"`` (:class:`Synthetic`)."""
    if kind == "looped":
        return looped_devices(n, realtime=realtime, start_s=start_s, phases=phases)
    if kind == "synthetic":
        return synthetic_devices(n, realtime=realtime, start_s=start_s)
    raise ValueError(f"device kind {kind!r}: expected 'looped' or 'synthetic'.")


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

    The notch and the band-pass run as one ``sos_cascade`` step (the engine's
    default plan rewrite :func:`~neuraflow.graph.optimize.fuse_sos_filters`), as
    the bare loops run them: one ``sosfilt`` over the five sections.
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
    return fuse_sos_filters(p.build())


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
