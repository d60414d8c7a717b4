"""The reference workload in bare numpy/scipy: the limit the engine is measured against.

:class:`BareProcessor` does per tick, for all its devices at once, exactly the
math of the neuraflow pipeline (:mod:`benchmarks.common`):

- one stacked ``sosfilt`` over the channels of every device (notch + band-pass
  sections cascaded, float64, stacked delay lines carried between ticks);
- a per-device mirrored ring of the last ``n_win + chunk`` filtered samples
  (float32, as the engine passes them), so every window is a strided view;
- one batched rFFT over ``(n_devices, 64, 1000)`` windows, Hann periodogram
  density, band means, log10 -- the windows end on the same samples as the
  engine's ``sliding_window`` (``1000 + 32 k``), so outputs are comparable;
- one ONNX Runtime call on ``(n_devices, 320)`` features (one intra-op thread:
  one process per core).

:func:`two_process_limit` runs one such process per core concurrently and
turns the measured CPU time per tick into the number of devices each core
sustains at 31.25 chunks per second.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from dataclasses import asdict, dataclass

import numpy as np
from scipy import fft as scipy_fft
from scipy import signal

from benchmarks.common import (
    BANDS,
    CHUNK_SIZE,
    CHUNKS_PER_S,
    H_FREQ,
    L_FREQ,
    N_CHANNELS,
    NOTCH_HZ,
    NOTCH_Q,
    ORDER,
    SFREQ,
    STEP_S,
    WINDOW_S,
    classifier_model,
    median,
    synthetic_devices,
)


def reference_sos() -> np.ndarray:
    """Notch then band-pass, as one (5, 6) cascade of second-order sections (float64)."""
    b, a = signal.iirnotch(NOTCH_HZ, NOTCH_Q, fs=SFREQ)
    notch = np.concatenate([b, a]) / a[0]
    band = signal.butter(ORDER, [L_FREQ, H_FREQ], btype="bandpass", fs=SFREQ, output="sos")
    return np.ascontiguousarray(np.vstack([notch[None, :], band]), dtype=np.float64)


def periodogram_plan(n_win: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hann window, one-sided density weights and the (n_freqs, n_bands) band-mean matrix."""
    win = signal.get_window("hann", n_win).astype(np.float64)
    freqs = np.fft.rfftfreq(n_win, 1.0 / SFREQ)
    density = np.full(freqs.size, 1.0 / (SFREQ * float(np.sum(win**2))))
    density[1 : freqs.size - (1 if n_win % 2 == 0 else 0)] *= 2.0
    avg = np.zeros((freqs.size, len(BANDS)))
    for j, (lo, hi) in enumerate(BANDS.values()):
        mask = (freqs >= lo) & (freqs < hi)
        avg[mask, j] = 1.0 / mask.sum()
    return win, density, avg


class BareProcessor:
    """The whole pipeline for ``n_devices`` devices, vectorised; one :meth:`step` per tick.

    Parameters
    ----------
    n_devices : int
        Devices processed together (64 channels each).
    """

    def __init__(self, n_devices: int) -> None:
        import onnxruntime as ort

        self.n = n_devices
        self.n_win = round(WINDOW_S * SFREQ)
        self.hop = round(STEP_S * SFREQ)
        self.sos = reference_sos()
        self.zi = np.zeros((self.sos.shape[0], n_devices * N_CHANNELS, 2))
        self.cap = self.n_win + CHUNK_SIZE
        # sample s lives at s % cap and s % cap + cap: any window is one contiguous slice
        self.ring = np.zeros((n_devices, N_CHANNELS, 2 * self.cap), dtype=np.float32)
        self.n_seen = 0
        self.next_end = self.n_win
        self.win, self.density, self.avg = periodogram_plan(self.n_win)
        self.n_used = int(np.flatnonzero(self.avg.any(axis=1))[-1]) + 1
        self._xw: np.ndarray | None = None
        self._spec: np.ndarray | None = None
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(classifier_model(), opts, providers=["CPUExecutionProvider"])

    def step(self, chunks: list[np.ndarray]) -> np.ndarray | None:
        """Process one chunk ``(64, 32)`` float32 of every device; return ``(n, 2)`` probabilities.

        Returns None while the first window is not complete (the engine emits nothing then).
        """
        x = np.stack(chunks).reshape(self.n * N_CHANNELS, CHUNK_SIZE)
        y, self.zi = signal.sosfilt(self.sos, x, zi=self.zi)
        y32 = y.astype(np.float32).reshape(self.n, N_CHANNELS, CHUNK_SIZE)
        idx = (self.n_seen + np.arange(CHUNK_SIZE)) % self.cap
        self.ring[:, :, idx] = y32
        self.ring[:, :, idx + self.cap] = y32
        self.n_seen += CHUNK_SIZE
        probs = None
        while self.next_end <= self.n_seen:  # one window per chunk here (hop == chunk)
            start = (self.next_end - self.n_win) % self.cap
            probs = self._classify(self.ring[:, :, start : start + self.n_win])
            self.next_end += self.hop
        return probs

    def _classify(self, windows: np.ndarray) -> np.ndarray:
        """``(b, 64, n_win)`` windows -> ``(b, 2)`` probabilities (buffers reused between calls)."""
        b = windows.shape[0]
        if self._xw is None or self._xw.shape[0] != b:
            self._xw = np.empty(windows.shape, dtype=np.float64)
            self._spec = np.empty((*windows.shape[:2], self.n_win // 2 + 1), dtype=np.complex128)
        xw = self._xw
        np.copyto(xw, windows)
        xw -= xw.mean(axis=-1, keepdims=True)
        xw *= self.win
        spec = scipy_fft.rfft(xw, axis=-1, overwrite_x=True)  # the faster of numpy/scipy here
        used = spec[..., : self.n_used]  # bins above the last band carry no weight
        psd = used.real**2
        psd += used.imag**2
        psd *= self.density[: self.n_used]
        features = np.log10(psd @ self.avg[: self.n_used]).reshape(b, -1).astype(np.float32)
        (probs,) = self.session.run(None, {"features": features})
        return probs


@dataclass
class BareResult:
    """CPU seconds per tick of one bare process (all its devices) and what they sustain."""

    n_devices: int
    ticks: int
    compute_s_per_tick: float  # median over ticks: filter + ring + FFT + ONNX
    generate_s_per_tick: float  # mean over ticks: Synthetic.read of every device (amortises block generation)
    wall_s: float

    @property
    def capacity_compute(self) -> float:
        """Devices one core sustains, compute only (data arrives for free)."""
        return self.n_devices / (CHUNKS_PER_S * self.compute_s_per_tick)

    @property
    def capacity_with_generation(self) -> float:
        """Devices one core sustains when it also generates the synthetic data (as the engine does)."""
        return self.n_devices / (CHUNKS_PER_S * (self.compute_s_per_tick + self.generate_s_per_tick))


def measure(n_devices: int, ticks: int, warmup_ticks: int = 40) -> BareResult:
    """Run :class:`BareProcessor` over ``n_devices`` non-paced :class:`Synthetic` devices.

    Data is generated by the same ``Synthetic.read`` the engine's workers call;
    generation and compute CPU times are measured separately.
    """
    devices = synthetic_devices(n_devices, realtime=False, start_s=0.0)
    for dev in devices:
        dev.open()
    proc = BareProcessor(n_devices)
    compute: list[float] = []
    generate: list[float] = []
    wall0 = time.perf_counter()
    for t in range(warmup_ticks + ticks):
        c0 = time.process_time()
        chunks = [dev.read(0.0).data for dev in devices]
        c1 = time.process_time()
        proc.step(chunks)
        c2 = time.process_time()
        if t >= warmup_ticks:
            generate.append(c1 - c0)
            compute.append(c2 - c1)
    return BareResult(n_devices, ticks, median(compute), float(np.mean(generate)), time.perf_counter() - wall0)


def _worker(n_devices: int, ticks: int, barrier, queue) -> None:  # pragma: no cover - subprocess
    import os

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    BareProcessor(1)  # import and build once before the barrier
    barrier.wait()
    queue.put(asdict(measure(n_devices, ticks)))


def two_process_limit(n_devices_per_process: int, ticks: int, n_processes: int = 2) -> list[BareResult]:
    """Run one bare process per core concurrently; return each process's measurement."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(n_processes)
    queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(n_devices_per_process, ticks, barrier, queue)) for _ in range(n_processes)]
    for p in procs:
        p.start()
    results = [BareResult(**queue.get(timeout=600)) for _ in procs]
    for p in procs:
        p.join()
    return results


def replay_limit(data: np.ndarray, batch: int = 64) -> float:
    """Seconds of CPU to run a whole ``(64, n_samples)`` recording through the reference math.

    Filters the recording once (stacked float64 ``sosfilt``), then classifies the
    windows ending at ``1000 + 32 k`` in batches of ``batch`` windows (one FFT and
    one ONNX call per batch). One process, the bare upper bound of replay speed.
    """
    t0 = time.process_time()
    proc = BareProcessor(batch)
    y = signal.sosfilt(proc.sos, data.astype(np.float64), axis=-1).astype(np.float32)
    n_win, hop = proc.n_win, proc.hop
    ends = np.arange(n_win, y.shape[1] + 1, hop)
    view = np.lib.stride_tricks.sliding_window_view(y, n_win, axis=1)  # (64, n_samples-n_win+1, n_win)
    for i in range(0, len(ends), batch):
        starts = ends[i : i + batch] - n_win
        windows = np.ascontiguousarray(view[:, starts].transpose(1, 0, 2))  # (b, 64, n_win)
        proc._classify(windows)
    return time.process_time() - t0


def main() -> None:  # pragma: no cover - manual use
    """``python -m benchmarks.bare``: single- and two-process numbers."""
    one = measure(128, 64)
    print("one process:", one, f"capacity compute={one.capacity_compute:.0f}")
    both = two_process_limit(128, 64)
    total = sum(r.capacity_compute for r in both)
    print("two processes:", both, f"capacity compute={total:.0f}",
          f"with generation={sum(r.capacity_with_generation for r in both):.0f}")


if __name__ == "__main__":  # pragma: no cover
    main()
