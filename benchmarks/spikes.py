"""``python -m benchmarks.spikes [--seconds S]``: the high-density profile.

One 384-channel probe at 30 kHz (a Neuropixels 1.0 AP band) through

    bandpass(300, 6000) -> threshold_spikes("mad", 4.5) -> bin_counts(0.01)

in real time, target p99 latency < 50 ms on this 2-core machine. Measured:

1. offline cost: the three ops run back to back on pre-generated chunks, CPU
   per second of signal (real-time factor on one core, no runtime);
2. in-process real time: :class:`~neuraflow.runtime.loop.GroupLoop` and
   :class:`~neuraflow.runtime.controller.PipelineController` wired as in
   :func:`~neuraflow.runtime.local.run_local`, but in real-time mode with a paced
   :class:`ProbeDevice`;
3. Ray real time: ``Engine.start`` in real-time mode (one group actor), latency
   percentiles over a measurement window from the controller's histogram, CPU
   of the group worker and the controller from ``/proc``.

Chunk size: 300 samples = 10 ms. Acquisition systems hand out blocks of
1-34 ms (SpikeGLX ~ 1-10 ms, Open Ephys 1024 samples); at 1 ms chunks the
fixed per-chunk cost of the runtime (ring, tick, delivery: tens of us) is
paid 1000 times per second, at 10 ms 100 times, while the latency floor (a
chunk counts from its last sample) stays far below 50 ms. The 10 ms chunk
also matches the 10 ms count bin, so each chunk yields one bin.

Latency is the controller's: wall time when the tick that processed a chunk
finished minus the device time of the chunk's last sample (histogram bucket
upper bounds).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from benchmarks.common import CountingSink, pid_cpu_s  # noqa: E402
from neuraflow import Pipeline, ops  # noqa: E402
from neuraflow.chunk import Chunk, StreamInfo  # noqa: E402
from neuraflow.devices.base import DeviceBase  # noqa: E402
from neuraflow.errors import DeviceError  # noqa: E402
from neuraflow.graph.plan import LogicalPlan  # noqa: E402

N_CHANNELS = 384
SFREQ = 30_000.0
CHUNK_SIZE = 300  # 10 ms, see the module docstring
L_FREQ, H_FREQ, ORDER = 300.0, 6000.0, 4
K_MAD = 4.5
BIN_S = 0.01
SPIKE_RATE_HZ = 20.0  # per channel
SPIKE_AMPLITUDE_V = 100e-6
NOISE_RMS_V = 10e-6
LATENCY_TARGET_MS = 50.0


class ProbeDevice(DeviceBase):
    """A cheap paced 384-channel probe: one precomputed second of signal played in a loop.

    The second holds white noise (``NOISE_RMS_V``), a slow 3 Hz "LFP" of 200 uV
    that the band-pass must remove, and 2 ms biphasic spikes of
    ``SPIKE_AMPLITUDE_V`` at ``SPIKE_RATE_HZ`` per channel (trough 0.4 ms, positive after-hyperpolarisation). ``read`` paces like
    :class:`~neuraflow.devices.Synthetic` (chunk ``k`` is due at
    ``t0 + (k + 1) * chunk_size / sfreq``) and only copies a slice.
    """

    blocking = False

    def __init__(self, stream_id: str = "probe-0", *, n_channels: int = N_CHANNELS, sfreq: float = SFREQ,
                 chunk_size: int = CHUNK_SIZE, seed: int = 0, realtime: bool = True) -> None:
        if int(sfreq) % chunk_size:
            raise ValueError(f"chunk_size={chunk_size} must divide one second ({sfreq} samples).")
        self.n_channels, self.sfreq, self.chunk_size = n_channels, float(sfreq), chunk_size
        self.seed, self.realtime = seed, realtime
        self.info = StreamInfo(stream_id, self.sfreq, tuple(f"AP{i:03d}" for i in range(n_channels)),
                               ("seeg",) * n_channels, ("V",) * n_channels, {"device": "bench-probe"})
        self._block: np.ndarray | None = None
        self._t0: float | None = None
        self._k = 0
        self.spikes_per_s = 0

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_block"} | {"_block": None}

    def open(self) -> None:
        if self._block is None:
            self._block, self.spikes_per_s = make_block(self.n_channels, self.sfreq, self.seed)
        if self._t0 is None:
            self._t0 = time.time()

    def close(self) -> None:
        return None

    def _due_s(self, k: int) -> float:
        return self._t0 + (k + 1) * self.chunk_size / self.sfreq

    def next_ready_s(self) -> float | None:
        if self._t0 is None:
            return None
        return self._due_s(self._k) if self.realtime else 0.0

    def read(self, timeout_s: float) -> Chunk | None:
        if self._block is None:
            raise DeviceError("ProbeDevice.read() before open()")
        k = self._k
        now = math.nan
        if self.realtime:
            due, now = self._due_s(k), time.time()
            if due > now:
                if due - now > timeout_s:
                    return None
                time.sleep(due - now)
                now = time.time()
        per_block = self._block.shape[1] // self.chunk_size
        start = (k % per_block) * self.chunk_size
        self._k = k + 1
        return Chunk(self._block[:, start : start + self.chunk_size], self._t0 + k * self.chunk_size / self.sfreq,
                     self.info, seq=k, recv_s=now)


def make_block(n_channels: int, sfreq: float, seed: int) -> tuple[np.ndarray, int]:
    """One second of probe signal (float32 volts) and its number of planted spikes (2 ms biphasic waveform)."""
    rng = np.random.default_rng(seed)
    n = int(sfreq)
    x = rng.standard_normal((n_channels, n), dtype=np.float32)
    x *= np.float32(NOISE_RMS_V)
    x += (200e-6 * np.sin(2 * np.pi * 3.0 * np.arange(n) / sfreq + rng.uniform(0, 2 * np.pi, (n_channels, 1))))\
        .astype(np.float32)
    width = int(0.002 * sfreq)
    t_ms = 1e3 * np.arange(width) / sfreq  # trough at 0.4 ms, after-hyperpolarisation at 0.9 ms
    shape = SPIKE_AMPLITUDE_V * (-np.exp(-((t_ms - 0.4) ** 2) / (2 * 0.12**2))
                                 + 0.35 * np.exp(-((t_ms - 0.9) ** 2) / (2 * 0.3**2)))
    n_spikes = 0
    for c in range(n_channels):
        times = np.sort(rng.choice(np.arange(0, n - width, 2 * width), size=int(SPIKE_RATE_HZ), replace=False))
        for t in times:
            x[c, t : t + width] += shape.astype(np.float32)
        n_spikes += len(times)
    return x, n_spikes


def spike_plan(name: str, device: ProbeDevice, sink: CountingSink | None = None) -> LogicalPlan:
    """The high-density pipeline on one probe; bins go to ``sink``."""
    p = Pipeline(name)
    probe = p.source("probe", [device])
    counts = (probe.then("bandpass", ops.bandpass(L_FREQ, H_FREQ, order=ORDER))
              .then("spikes", ops.threshold_spikes("mad", K_MAD))
              .then("bins", ops.bin_counts(BIN_S)))
    counts.to("out", sink if sink is not None else CountingSink())
    return p.build()


# ---------------------------------------------------------------------------- 1. offline


@dataclass
class OfflineResult:
    seconds: float
    cpu_s_per_s: dict[str, float]  # per op, CPU seconds per second of signal (median over repeats)
    spikes_found: int
    spikes_planted: int

    @property
    def total(self) -> float:
        return sum(self.cpu_s_per_s.values())


def offline_cost(seconds: float = 3.0, repeats: int = 3) -> OfflineResult:
    """CPU time of each op per second of 384 ch @ 30 kHz, ops run directly (no runtime)."""
    dev = ProbeDevice(realtime=False)
    dev.open()
    chunks = [dev.read(0.0) for _ in range(int(seconds * SFREQ / CHUNK_SIZE))]
    specs = {"bandpass": ops.bandpass(L_FREQ, H_FREQ, order=ORDER), "threshold_spikes": ops.threshold_spikes("mad", K_MAD),
             "bin_counts": ops.bin_counts(BIN_S)}
    times: dict[str, list[float]] = {k: [] for k in specs}
    found = 0
    for _ in range(repeats):
        stream = chunks
        for name, spec in specs.items():
            op = ops.BoundOp(spec)
            state = op.init(stream[0])
            out: list[Chunk] = []
            c0 = time.process_time()
            for chunk in stream:
                state, o = op.step(state, chunk)
                out.extend(o)
            times[name].append((time.process_time() - c0) / seconds)
            stream = out
        found = int(sum(c.data.sum() for c in stream))
    planted = int(dev.spikes_per_s * (seconds - 0.5))  # nothing is detected during the 0.5 s calibration
    return OfflineResult(seconds, {k: float(np.median(v)) for k, v in times.items()}, found, planted)


# ---------------------------------------------------------------------------- 2-3. real time


@dataclass
class RealtimeResult:
    where: str
    measured_s: float
    p50_ms: float
    p99_ms: float
    chunks: int
    expected_chunks: float
    bins_per_s: float
    drops: int
    shed: int
    cpu_s_per_s: float  # all processes of the run together
    detail: dict = field(default_factory=dict)

    @property
    def rate_ratio(self) -> float:
        return self.chunks / self.expected_chunks if self.expected_chunks else math.nan

    @property
    def ok(self) -> bool:
        return self.p99_ms < LATENCY_TARGET_MS and self.drops == 0 and self.rate_ratio >= 0.99


def in_process(seconds: float, warmup_s: float = 2.0) -> RealtimeResult:
    """``run_local``'s wiring in real-time mode; stats over the run after ``warmup_s``."""
    from neuraflow.runtime.controller import PipelineController
    from neuraflow.runtime.loop import GroupLoop, LoopOptions, Mode
    from neuraflow.runtime.slot import SlotOptions

    sink = CountingSink()
    plan = spike_plan("bench-spikes-local", ProbeDevice(), sink)
    controller = PipelineController(plan, ["local"], "realtime")
    loop = GroupLoop("local", plan, [("probe", 0)], SlotOptions(), LoopOptions(mode=Mode.REALTIME))
    marks: dict[str, float] = {}
    t_start = time.monotonic()

    def stop() -> bool:
        now = time.monotonic()
        if "t0" not in marks and now - t_start >= warmup_s:
            marks.update(t0=time.perf_counter(), cpu0=time.process_time(), bins0=sink.chunks,
                         chunks0=controller.metrics()["total"]["chunks"])
            marks["stats0"] = _local_totals(controller)
        return now - t_start >= warmup_s + seconds

    try:
        loop.run(controller.deliver, lambda: True, stop)
    finally:
        loop.stop()
        controller.stop()
    elapsed = time.perf_counter() - marks["t0"]
    window = _delta_stats(_local_totals(controller), marks["stats0"])
    return RealtimeResult(
        "in-process (GroupLoop + controller, real-time mode)", elapsed, window.latency.quantile(0.5),
        window.latency.quantile(0.99), window.chunks, elapsed * SFREQ / CHUNK_SIZE, (sink.chunks - marks["bins0"]) / elapsed,
        window.drops, window.shed, (time.process_time() - marks["cpu0"]) / elapsed,
        {"steps_busy_s": {k: v["busy_s"] for k, v in controller.metrics()["steps"].items()}},
    )


def _local_totals(controller):
    from neuraflow.runtime.stats import StreamStats

    out = StreamStats()
    for stats in controller._stream_stats.values():
        out.merge(stats)
    return out


def _delta_stats(after, before):
    from neuraflow.runtime.stats import LatencyHistogram, StreamStats

    out = StreamStats(chunks=after.chunks - before.chunks, drops=after.drops - before.drops,
                      shed=after.shed - before.shed)
    out.latency = LatencyHistogram([a - b for a, b in zip(after.latency.counts, before.latency.counts)])
    return out


def on_ray(seconds: float, warmup_s: float = 3.0) -> RealtimeResult:
    """``Engine.start`` in real-time mode on a private local Ray with 2 CPUs."""
    from benchmarks.engine import _actor_pid, _controller_totals, bench_settings, ray_init
    from neuraflow.runtime.executor import Engine

    ray_init(2)
    handle = Engine(bench_settings(num_cpus=2)).start(spike_plan("bench-spikes-ray", ProbeDevice(), CountingSink()))
    try:
        pids = [_actor_pid(a) for a in handle.groups.values()]
        cpid = _actor_pid(handle.controller)
        time.sleep(warmup_s)
        stats0 = _controller_totals(handle.controller)
        bins0 = handle.call_sink("out", "stats")["chunks"]
        cpu0 = [pid_cpu_s(p) for p in [*pids, cpid]]
        t0 = time.perf_counter()
        time.sleep(seconds)
        bins1 = handle.call_sink("out", "stats")["chunks"]
        elapsed = time.perf_counter() - t0
        cpu1 = [pid_cpu_s(p) for p in [*pids, cpid]]
        window = _delta_stats(_controller_totals(handle.controller), stats0)
        status = handle.group_status()
        steps = handle.metrics()["steps"]
    finally:
        handle.stop()
        handle.destroy()
    import ray

    ray.shutdown()
    per_proc = [(b - a) / elapsed for a, b in zip(cpu0, cpu1)]
    return RealtimeResult(
        f"Ray engine, real-time mode ({len(pids)} group actor + controller)", elapsed, window.latency.quantile(0.5),
        window.latency.quantile(0.99), window.chunks, elapsed * SFREQ / CHUNK_SIZE, (bins1 - bins0) / elapsed,
        window.drops, window.shed, sum(per_proc),
        {"worker_cpu": sum(per_proc[:-1]), "controller_cpu": per_proc[-1],
         "errors": [f"{g}: {s['error']}" for g, s in status.items() if s["error"] or not s["alive"]],
         "steps_busy_s": {k: v["busy_s"] for k, v in steps.items()}},
    )


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.spikes", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="measurement window of each real-time run")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray engine run")
    args = parser.parse_args(argv)
    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    _log(f"[1/3] offline op cost (load {load})")
    off = offline_cost()
    _log(f"  {off}")
    _log("[2/3] in-process real time")
    runs = [in_process(args.seconds)]
    _log(f"  {asdict(runs[-1])}")
    if not args.no_ray:
        _log("[3/3] Ray engine real time")
        runs.append(on_ray(args.seconds))
        _log(f"  {asdict(runs[-1])}")
    load_end = "/".join(f"{x:.1f}" for x in os.getloadavg())
    rate = N_CHANNELS * SFREQ
    print(f"High-density profile: {N_CHANNELS} ch @ {SFREQ / 1e3:g} kHz ({rate / 1e6:.2f} M ch-samples/s), "
          f"chunks of {CHUNK_SIZE} samples ({1e3 * CHUNK_SIZE / SFREQ:g} ms), bandpass({L_FREQ:g}, {H_FREQ:g}, "
          f"order={ORDER}) -> threshold_spikes(mad, k={K_MAD}) -> bin_counts({BIN_S}). "
          f"Machine: {os.cpu_count()} CPUs, load {load} -> {load_end}.\n")
    print("| op (offline, one core, no runtime) | CPU s per s of signal | real-time factor |")
    print("|---|---|---|")
    for name, cpu in off.cpu_s_per_s.items():
        print(f"| {name} | {cpu:.3f} | {1 / cpu:.1f}x |")
    print(f"| **all three** | {off.total:.3f} | {1 / off.total:.1f}x |")
    print(f"\nSpikes found {off.spikes_found} of {off.spikes_planted} planted (after calibration).\n")
    print("| run | p50 ms | p99 ms | target p99 | chunks/expected | bins/s | drops | shed | CPU s/s | met? |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        print(f"| {r.where} | {r.p50_ms:g} | {r.p99_ms:g} | < {LATENCY_TARGET_MS:g} | {r.rate_ratio:.3f} | "
              f"{r.bins_per_s:.1f} | {r.drops} | {r.shed} | {r.cpu_s_per_s:.2f} | {'yes' if r.ok else '**no**'} |")
    for r in runs:
        if r.detail:
            print(f"\n{r.where}: {r.detail}")
    return 0


if __name__ == "__main__":
    from benchmarks import spikes as _module  # so that Ray pickles ProbeDevice by reference, not as __main__

    raise SystemExit(_module.main())
