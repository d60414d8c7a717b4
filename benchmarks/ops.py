"""``python -m benchmarks.ops [--chunks N]``: per-op cost beside the bare scipy/numpy call.

Every op of ``neuraflow.ops.REGISTRY`` (its example instance) is stepped over a
64-channel 1 kHz stream in 32-sample chunks, the reference workload's chunk
(``onnx_model`` is fed 1 s windows of 4 channels, its example's input). Each
step is timed with ``perf_counter`` and the **median** over ``N`` chunks is
reported (the machine is shared: medians, not means), with one BLAS/OpenMP
thread (``threadpoolctl``). Beside it, where one exists, the bare scipy/numpy
call that does the op's work on the same chunk (``sosfilt`` with ``zi`` for IIR
filters, ``lfilter`` for FIR, ``welch``, ``resample_poly`` on the block ...),
timed the same way, and the overhead ratio op / bare. ``channel-samples/s`` is
``64 * 32 / median time``: the input rate one core sustains for that op alone.

Ops that emit less often than every chunk (windows, epochs, resampling) are
timed on every chunk, so their median is the cheap buffering path; ``p90``
shows the emitting path.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from scipy import signal  # noqa: E402

from neuraflow import ops  # noqa: E402
from neuraflow.chunk import Chunk  # noqa: E402
from neuraflow.testing import chunks_from_array, make_info  # noqa: E402

N_CHANNELS, SFREQ, CHUNK = 64, 1000.0, 32
WINDOW = 1000


@dataclass
class Row:
    kind: str
    input: str
    op_us: float
    op_p90_us: float
    bare: str
    bare_us: float
    outputs: int

    @property
    def ch_samples_per_s(self) -> float:
        return N_CHANNELS * CHUNK / (self.op_us * 1e-6)

    @property
    def ratio(self) -> float:
        return self.op_us / self.bare_us if self.bare_us else math.nan


def _stream(n_chunks: int, n_channels: int = N_CHANNELS, size: int = CHUNK, seed: int = 0) -> list[Chunk]:
    rng = np.random.default_rng(seed)
    x = (20e-6 * rng.standard_normal((n_channels, n_chunks * size))).astype(np.float32)
    return chunks_from_array(x, make_info(n_channels, SFREQ), [size] * n_chunks)


def _time_op(spec, chunks: list[Chunk]) -> tuple[list[float], int, object]:
    op = ops.BoundOp(spec)
    state = op.init(chunks[0])
    first_state = state
    times: list[float] = []
    n_out = 0
    for chunk in chunks:
        t0 = time.perf_counter()
        state, out = op.step(state, chunk)
        times.append(time.perf_counter() - t0)
        n_out += len(out)
    return times, n_out, first_state


def _time_calls(fn: Callable[[np.ndarray], object], chunks: list[Chunk]) -> list[float]:
    times = []
    for chunk in chunks:
        x = chunk.data
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return times


class _Ring:
    """Bare 1 s sliding buffer: roll the newest chunk in (what a window op must at least do)."""

    def __init__(self, n_channels: int) -> None:
        self.buf = np.zeros((n_channels, WINDOW), np.float32)

    def push(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[1]
        self.buf[:, :-n] = self.buf[:, n:]
        self.buf[:, -n:] = x
        return self.buf


def _bare(kind: str, state: object) -> tuple[str, Callable[[np.ndarray], object]] | None:
    """The bare call doing ``kind``'s work on one 32-sample chunk, or None."""
    sos = getattr(state, "sos", None)
    zi = getattr(state, "zi", None)
    if isinstance(sos, np.ndarray) and isinstance(zi, np.ndarray) and zi.ndim == 3 and zi.shape[1] == N_CHANNELS:
        holder = {"zi": np.array(zi)}
        sos_w = np.array(sos)

        def sosfilt(x):
            y, holder["zi"] = signal.sosfilt(sos_w, x, zi=holder["zi"])
            return y.astype(np.float32)
        return f"sosfilt ({sos.shape[0]} sections, zi)", sosfilt
    ring = _Ring(N_CHANNELS)
    freqs = np.fft.rfftfreq(WINDOW, 1 / SFREQ)
    bands = [(4, 8), (8, 13), (13, 30)]
    masks = [(freqs >= lo) & (freqs < hi) for lo, hi in bands]
    hann = signal.windows.hann(WINDOW, sym=False).astype(np.float32)

    def band_means(x):
        spec = np.abs(np.fft.rfft(ring.push(x) * hann, axis=1)) ** 2
        return np.log10(np.stack([spec[:, m].mean(axis=1) for m in masks], axis=1))

    table: dict[str, tuple[str, Callable[[np.ndarray], object]]] = {
        "filter_bank": ("3 x sosfilt (butter 4, zi)", _sos_bank()),
        "fir_filter": ("lfilter(firwin taps, zi)", _fir()),
        "detrend": ("ring + signal.detrend(1 s, linear)", lambda x: signal.detrend(ring.push(x), axis=1)),
        "resample": ("resample_poly(block, 4, 25)", lambda x: signal.resample_poly(x, 4, 25, axis=1)),
        "rereference": ("x[a] - x[b] (2 pairs)", lambda x: x[[0, 2]] - x[[1, 3]]),
        "pick_channels": ("x[[3, 1]]", lambda x: x[[3, 1]].copy()),
        "sliding_window": ("ring copy (1 s)", lambda x: ring.push(x).copy()),
        "sliding_band_power": ("ring + Hann rfft(1 s) + 3 band means", band_means),
        "log_band_power": ("Hann rfft(chunk) + mean |X|^2", lambda x: np.log10(
            (np.abs(np.fft.rfft(x * signal.windows.hann(x.shape[1], sym=False), axis=1)) ** 2).mean(axis=1))),
        "welch_psd": ("signal.welch(chunk)", lambda x: signal.welch(x, SFREQ, nperseg=min(250, x.shape[1]))),
        "spectral_edge": ("signal.welch(chunk)", lambda x: signal.welch(x, SFREQ, nperseg=min(250, x.shape[1]))),
        "peak_frequency": ("signal.welch(chunk)", lambda x: signal.welch(x, SFREQ, nperseg=min(250, x.shape[1]))),
        "threshold_spikes": ("crossing test x < -thr (numpy)", lambda x: np.nonzero((x[:, 1:] < -1e-4) & (x[:, :-1] >= -1e-4))),
        "bin_counts": ("reshape-sum, 10 ms bins", lambda x: x[:, :30].reshape(N_CHANNELS, 3, 10).sum(axis=2)),
    }
    return table.get(kind)


def _sos_bank():
    soses = [np.array(signal.butter(4, band, btype="bandpass", fs=SFREQ, output="sos")) for band in ((8, 13), (13, 30))]
    soses.append(np.array(signal.butter(4, 4.0, btype="lowpass", fs=SFREQ, output="sos")))
    zis = [np.zeros((s.shape[0], N_CHANNELS, 2)) for s in soses]

    def run(x):
        outs = []
        for i, s in enumerate(soses):
            y, zis[i] = signal.sosfilt(s, x, zi=zis[i])
            outs.append(y)
        return np.concatenate(outs).astype(np.float32)
    return run


def _fir():
    taps = signal.firwin(1651, [1.0, 40.0], pass_zero=False, fs=SFREQ)  # ~3.3 / (2 Hz / 1 kHz) taps (Hamming)
    holder = {"zi": np.zeros((N_CHANNELS, taps.size - 1))}

    def run(x):
        y, holder["zi"] = signal.lfilter(taps, 1.0, x, axis=1, zi=holder["zi"])
        return y.astype(np.float32)
    return run


def measure(n_chunks: int) -> list[Row]:
    rows: list[Row] = []
    chunks = _stream(n_chunks)
    for kind in sorted(ops.REGISTRY):
        spec = ops.REGISTRY[kind]()
        label = f"{N_CHANNELS} ch x {CHUNK}"
        stream = chunks
        if kind == "onnx_model":  # its example classifies 4 features: feed 4-channel 1 s windows
            stream, label = _stream(max(20, n_chunks // 10), n_channels=4, size=1), "4 feat x 1"
        try:
            times, n_out, state0 = _time_op(spec, stream)
        except Exception as exc:  # noqa: BLE001 - report, do not hide
            rows.append(Row(kind, f"failed: {type(exc).__name__}: {exc}"[:80], math.nan, math.nan, "", math.nan, 0))
            continue
        bare = _bare(kind, state0)
        bare_name, bare_us = "n/a", math.nan
        if bare is not None:
            bare_name, fn = bare
            bare_us = 1e6 * float(np.median(_time_calls(fn, stream)))
        rows.append(Row(kind, label, 1e6 * float(np.median(times)), 1e6 * float(np.percentile(times, 90)),
                        bare_name, bare_us, n_out))
    return rows


def table(rows: list[Row]) -> str:
    lines = ["| op | input chunk | µs/chunk (median) | p90 µs | ch-samples/s | bare call | bare µs | op / bare | outputs |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if math.isnan(r.op_us):
            lines.append(f"| {r.kind} | {r.input} | | | | | | | |")
            continue
        rate = r.ch_samples_per_s if r.input.startswith(str(N_CHANNELS)) else math.nan
        lines.append(
            f"| {r.kind} | {r.input} | {r.op_us:.0f} | {r.op_p90_us:.0f} | "
            f"{'n/a' if math.isnan(rate) else f'{rate / 1e6:.1f} M'} | {r.bare} | "
            f"{'' if math.isnan(r.bare_us) else f'{r.bare_us:.0f}'} | "
            f"{'' if math.isnan(r.ratio) else f'{r.ratio:.1f}x'} | {r.outputs} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ops", description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=400, help="chunks per op (median over them)")
    args = parser.parse_args(argv)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        threadpool_limits = None
    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    if threadpool_limits is not None:
        with threadpool_limits(1):
            rows = measure(args.chunks)
    else:
        rows = measure(args.chunks)
    print(f"Per-op cost, {N_CHANNELS} ch @ {SFREQ:g} Hz in {CHUNK}-sample chunks, {args.chunks} chunks per op, "
          f"1 BLAS thread; machine {os.cpu_count()} CPUs, load {load}.\n")
    print(table(rows))
    print("\nbare = the same scipy/numpy call on the same chunk, without the op contract (state objects, "
          "validation, Chunk construction); op / bare is the framework overhead factor.", file=sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
