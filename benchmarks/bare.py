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

:class:`BareIncremental` is the same pipeline with the sliding DFT of
``ops.sliding_band_power`` instead of the FFT: the hardware floor of the
engine's optimised plan.

:func:`two_process_limit` runs one such process per core concurrently and
turns the measured CPU time per tick into the number of devices each core
sustains at 31.25 chunks per second.
"""

from __future__ import annotations

import multiprocessing as mp
import os
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
    bench_devices,
    classifier_model,
    median,
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


class BareIncremental:
    """The same pipeline with the incremental band power: the hardware floor of the engine's plan.

    Per tick, for all devices at once: one ``sosfilt`` kernel call over every
    channel (notch + band-pass cascaded, float64, state kept in the kernel's own
    layout, no copies), a mirrored float32 ring of the last ``n_win + chunk``
    filtered samples, the sliding-DFT update of the tracked bins
    ``Z += (x_new - x_old) @ advance`` and the Hann/band product ``Z @ hann``
    with the matrices of :func:`neuraflow.ops.spectral.sliding_band_power`
    (so the outputs are the same), log10, one ONNX Runtime call. No
    re-anchoring (the op re-anchors every 1024 hops: 0.1 % of the hops).
    :meth:`step` also records the CPU time of each stage (``stage_s``).
    """

    def __init__(self, n_devices: int) -> None:
        import onnxruntime as ort

        from neuraflow.ops import spectral
        from neuraflow.ops.features import _check_bands
        from neuraflow.ops.filters import _sosfilt_kernel

        self.n = n_devices
        self.rows = n_devices * N_CHANNELS
        self.n_win = round(WINDOW_S * SFREQ)
        self.hop = round(STEP_S * SFREQ)
        if self.hop != CHUNK_SIZE:
            raise ValueError("BareIncremental assumes one hop per chunk")
        self.sos = reference_sos()
        self.kernel = _sosfilt_kernel
        self.zi = np.zeros((self.rows, self.sos.shape[0], 2))  # the kernel's layout
        # a whole number of chunks holding the last n_win + hop samples, mirrored: every window,
        # chunk and hop is one contiguous slice
        self.cap = -(-(self.n_win + self.hop) // CHUNK_SIZE) * CHUNK_SIZE
        self.ring = np.zeros((self.rows, 2 * self.cap), dtype=np.float32)
        self.n_seen = 0
        self.bins: np.ndarray | None = None
        bands = _check_bands("bare", BANDS)
        self.plan = spectral._plan(self.n_win, self.hop, SFREQ, bands, False)
        self._phased = spectral._phased
        self._anchor = spectral._anchor_bins
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(classifier_model(), opts, providers=["CPUExecutionProvider"])
        self.stage_s = {"filter": 0.0, "dft": 0.0, "onnx": 0.0}

    def _window(self, end: int) -> np.ndarray:
        start = (end - self.n_win) % self.cap
        return self.ring[:, start : start + self.n_win]

    def step(self, chunks: list[np.ndarray]) -> np.ndarray | None:
        """Process one chunk ``(64, 32)`` float32 of every device; return ``(n, 2)`` probabilities."""
        c0 = time.process_time()
        x = np.concatenate(chunks, axis=0, dtype=np.float64)  # (rows, 32), filtered in place
        if self.kernel is not None:
            self.kernel(self.sos, x, self.zi)
        else:  # pragma: no cover - scipy without the kernel
            x, zf = signal.sosfilt(self.sos, x, zi=self.zi.transpose(1, 0, 2))
            self.zi = np.ascontiguousarray(zf.transpose(1, 0, 2))
        y32 = x.astype(np.float32)
        pos = self.n_seen % self.cap
        self.ring[:, pos : pos + CHUNK_SIZE] = y32
        self.ring[:, pos + self.cap : pos + self.cap + CHUNK_SIZE] = y32
        self.n_seen += CHUNK_SIZE
        c1 = time.process_time()
        self.stage_s["filter"] += c1 - c0
        if self.n_seen < self.n_win:
            return None
        # windows end at n_win + k hop (as sliding_window's): the one that ended in this chunk
        end = self.n_seen - (self.n_seen - self.n_win) % self.hop
        start = end - self.n_win
        if self.bins is None:
            self.bins = self._anchor(self._window(end).astype(np.float64), self.plan, start)
        else:
            new, old = (end - self.hop) % self.cap, (start - self.hop) % self.cap
            diff = self.ring[:, new : new + self.hop].astype(np.float64)
            diff -= self.ring[:, old : old + self.hop]
            advance = self._phased(self.plan, (start - self.hop) % self.n_win)[0]
            self.bins += diff @ advance
        y = self.bins @ self._phased(self.plan, start % self.n_win)[1]
        np.square(y, out=y)
        features = np.log10(y @ self.plan.weights).reshape(self.n, -1).astype(np.float32)
        c2 = time.process_time()
        (probs,) = self.session.run(None, {"features": features})
        self.stage_s["dft"] += c2 - c1
        self.stage_s["onnx"] += time.process_time() - c2
        return probs


@dataclass
class BareResult:
    """CPU seconds per tick of one bare process (all its devices) and what they sustain."""

    n_devices: int
    ticks: int
    compute_s_per_tick: float  # median over ticks: filter + ring + FFT (or sliding DFT) + ONNX
    generate_s_per_tick: float  # mean over ticks: read() of every device (Synthetic: amortises block generation)
    wall_s: float

    @property
    def capacity_compute(self) -> float:
        """Devices one core sustains, compute only (data arrives for free)."""
        return self.n_devices / (CHUNKS_PER_S * self.compute_s_per_tick)

    @property
    def capacity_with_generation(self) -> float:
        """Devices one core sustains when it also reads the devices (as the engine's workers do)."""
        return self.n_devices / (CHUNKS_PER_S * (self.compute_s_per_tick + self.generate_s_per_tick))


def measure(n_devices: int, ticks: int, warmup_ticks: int = 40, *, devices: str = "looped",
            incremental: bool = False) -> BareResult:
    """Run the bare pipeline over ``n_devices`` non-paced devices of kind ``devices``.

    Data is read by the same ``read`` the engine's workers call (``"looped"``:
    :class:`~benchmarks.common.LoopedSynthetic`, a slice of a shared block;
    ``"synthetic"``: :class:`Synthetic`, generated on the fly); reading and compute
    CPU times are measured separately. ``incremental`` selects
    :class:`BareIncremental` (sliding DFT) instead of :class:`BareProcessor` (full FFT).
    """
    devs = bench_devices(devices, n_devices, realtime=False, start_s=0.0)
    for dev in devs:
        dev.open()
    proc = BareIncremental(n_devices) if incremental else BareProcessor(n_devices)
    compute: list[float] = []
    generate: list[float] = []
    wall0 = time.perf_counter()
    for t in range(warmup_ticks + ticks):
        c0 = time.process_time()
        chunks = [dev.read(0.0).data for dev in devs]
        c1 = time.process_time()
        proc.step(chunks)
        c2 = time.process_time()
        if t >= warmup_ticks:
            generate.append(c1 - c0)
            compute.append(c2 - c1)
    return BareResult(n_devices, ticks, median(compute), float(np.mean(generate)), time.perf_counter() - wall0)


#: One BLAS/OpenMP thread per process (one process per core). Must be in the environment before numpy
#: is imported: setting it inside a worker came too late, and BLAS then spun a second thread per
#: process, which tripled the CPU time of the sliding-DFT products.
SINGLE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _worker(n_devices: int, ticks: int, barrier, queue, devices: str, incremental: bool) -> None:  # pragma: no cover
    (BareIncremental if incremental else BareProcessor)(1)  # import and build once before the barrier
    barrier.wait()
    queue.put(asdict(measure(n_devices, ticks, devices=devices, incremental=incremental)))


def two_process_limit(n_devices_per_process: int, ticks: int, n_processes: int = 2, *, devices: str = "looped",
                      incremental: bool = False) -> list[BareResult]:
    """Run one bare process per core concurrently; return each process's measurement."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(n_processes)
    queue = ctx.Queue()
    args = (n_devices_per_process, ticks, barrier, queue, devices, incremental)
    procs = [ctx.Process(target=_worker, args=args) for _ in range(n_processes)]
    saved = {k: os.environ.get(k) for k in SINGLE_THREAD_ENV}
    os.environ.update(SINGLE_THREAD_ENV)  # inherited by the spawned interpreters
    try:
        for p in procs:
            p.start()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
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
