"""The reference workload through neuraflow: fused graph, Ray engine, replay.

- :func:`fused_efficiency` -- no Ray: :class:`~neuraflow.runtime.fused.FusedGraph`
  and :class:`~benchmarks.bare.BareProcessor` on the *same* pre-generated
  chunks, interleaved in one process; checks that both produce the same
  probabilities and returns the ratio of their CPU times.
- :func:`realtime_run` / :func:`search_capacity` -- ``Engine.start`` in real-time
  mode with paced devices (default :class:`~benchmarks.common.LoopedSynthetic`,
  a slice of pre-generated Synthetic data per read, so that the engine is not
  billed for generating data; ``devices="synthetic"`` for the generator); latency
  percentiles and drops from ``handle.metrics()``, achieved rate from the
  sink's counter, CPU of every worker and of the controller from ``/proc``.
- :func:`replay` -- a 64-channel 1 kHz FIF recording through the same
  pipeline as fast as possible (:func:`~neuraflow.runtime.local.run_local`
  and the Ray engine in batch mode).
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.bare import BareIncremental, BareProcessor, replay_limit
from benchmarks.common import (
    CHUNKS_PER_S,
    LATENCY_TARGET_MS,
    SFREQ,
    CountingSink,
    bench_devices,
    looped_devices,
    median,
    pid_cpu_s,
    reference_plan,
    synthetic_devices,
)
from neuraflow.chunk import Chunk
from neuraflow.config import NeuraflowSettings
from neuraflow.devices import FilePlayback
from neuraflow.runtime.fused import FusedGraph
from neuraflow.runtime.stats import LatencyHistogram, StreamStats

NAMESPACE = "neuraflow-bench"

# ---------------------------------------------------------------------------- (a) no Ray


@dataclass
class EfficiencyResult:
    """CPU per tick (all devices) of the bare loop and of ``FusedGraph.process`` on the same chunks."""

    n_devices: int
    bare_s_per_tick: float
    fused_s_per_tick: float
    max_abs_diff: float  # probabilities, bare vs engine (same windows)

    @property
    def efficiency(self) -> float:
        """Bare CPU / engine CPU for the same work (1.0 = no framework cost)."""
        return self.bare_s_per_tick / self.fused_s_per_tick


def fused_efficiency(
    n_devices: int, ticks: int = 48, rounds: int = 4, *, incremental: bool = False
) -> EfficiencyResult:
    """Compare ``FusedGraph.process`` with the bare loop on ``n_devices`` devices.

    Both get the same chunks (pre-generated, so reading devices is excluded on
    both sides); the first 40 ticks warm up both and fill the 1 s windows. Then
    ``rounds`` blocks of ``ticks // rounds`` ticks alternate between the two,
    and the median CPU time per tick is kept. ``incremental``: the engine runs
    ``ops.sliding_band_power`` and the bare side :class:`BareIncremental` (the
    same math); otherwise the full FFT on both sides.
    """
    devices = looped_devices(n_devices, realtime=False, start_s=0.0)
    plan = reference_plan("bench-fused", devices, incremental=incremental)
    for dev in devices:
        dev.open()
    pool: list[list[Chunk]] = [[dev.read(0.0) for dev in devices] for _ in range(40)]
    fused = FusedGraph(plan, [("eeg", i) for i in range(n_devices)])
    bare = BareIncremental(n_devices) if incremental else BareProcessor(n_devices)
    out = None
    probs = None
    for chunks in pool:
        out = fused.process({"eeg": chunks})
        probs = bare.step([c.data for c in chunks])
    engine_probs = np.stack([c.data[:, 0] for c in out.sinks["out"]]) if out is not None else None
    diff = float(np.abs(engine_probs - probs).max()) if engine_probs is not None and probs is not None else math.nan
    per_round = max(1, ticks // rounds)
    bare_t: list[float] = []
    fused_t: list[float] = []
    t = 0
    for _ in range(rounds):
        for _ in range(per_round):
            chunks = pool[t % len(pool)]
            c0 = time.process_time()
            fused.process({"eeg": chunks})
            fused_t.append(time.process_time() - c0)
            t += 1
        for _ in range(per_round):
            data = [c.data for c in pool[t % len(pool)]]
            c0 = time.process_time()
            bare.step(data)
            bare_t.append(time.process_time() - c0)
            t += 1
    return EfficiencyResult(n_devices, median(bare_t), median(fused_t), diff)


# ---------------------------------------------------------------------------- (b-d) Ray


def bench_settings(*, num_cpus: int, devices_per_group: int | None = None, mode: str = "realtime") -> NeuraflowSettings:
    """Defaults plus: local Ray with ``num_cpus`` CPUs, namespace ``neuraflow-bench``, the given mode.

    Plan rewrites are off: the engine then does exactly the bare loop's work (the
    incremental runs ask for ``ops.sliding_band_power`` explicitly).
    """
    base = NeuraflowSettings()
    return base.model_copy(update={
        "ray": base.ray.model_copy(update={"num_cpus": num_cpus, "namespace": NAMESPACE, "dashboard": False}),
        "runtime": base.runtime.model_copy(
            update={"mode": mode, "devices_per_group": devices_per_group, "optimize": False}
        ),
    })


def ray_init(num_cpus: int) -> None:
    """(Re)start a private local Ray (``address="local"``: never joins a cluster another process started)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address="local", num_cpus=num_cpus, namespace=NAMESPACE, include_dashboard=False, log_to_driver=False,
             configure_logging=False, runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})


def _actor_pid(actor: Any) -> int:
    import ray

    return ray.get(actor.__ray_call__.remote(lambda self: os.getpid()))


def _controller_totals(controller: Any) -> StreamStats:
    """The controller's running totals over all raw streams (latency histogram counts included).

    ``handle.metrics()`` only gives percentiles since the start; two of these
    snapshots give percentiles over a measurement window (start-up excluded).
    """
    import ray

    def totals(self: Any) -> StreamStats:
        out = StreamStats()
        for stats in self._stream_stats.values():
            out.merge(stats)
        return out

    return ray.get(controller.__ray_call__.remote(totals))


def _delta(after: StreamStats, before: StreamStats) -> StreamStats:
    out = StreamStats(chunks=after.chunks - before.chunks, drops=after.drops - before.drops,
                      shed=after.shed - before.shed)
    out.latency = LatencyHistogram([a - b for a, b in zip(after.latency.counts, before.latency.counts)])
    return out


@dataclass
class RealtimeResult:
    """One real-time run of ``n_devices`` devices."""

    n_devices: int
    n_groups: int
    measured_s: float
    expected_per_s: float
    achieved_per_s: float  # predictions per second reaching the sink during the measurement
    p50_ms: float  # latency histogram (bucket upper bounds) over the measurement window
    p99_ms: float
    drops: int  # during the measurement window
    shed: int
    run_p50_ms: float  # handle.metrics() total: whole run, start-up included
    run_p99_ms: float
    worker_cpu: float  # CPU seconds per second, all group workers together
    controller_cpu: float
    errors: list[str] = field(default_factory=list)

    @property
    def rate_ratio(self) -> float:
        return self.achieved_per_s / self.expected_per_s if self.expected_per_s else math.nan

    @property
    def sustained(self) -> bool:
        """p99 below 50 ms, nothing dropped or shed, and >= 99 % of the device rate processed."""
        return (
            not self.errors
            and self.p99_ms < LATENCY_TARGET_MS
            and self.drops == 0
            and self.shed == 0
            and self.rate_ratio >= 0.99
        )

    @property
    def cpu_ms_per_chunk(self) -> float:
        """Engine CPU (workers + controller) per device chunk processed, milliseconds."""
        if not self.achieved_per_s:
            return math.nan
        return 1000.0 * (self.worker_cpu + self.controller_cpu) / self.achieved_per_s


def realtime_run(
    n_devices: int, *, warmup_s: float, measure_s: float, devices_per_group: int | None = None,
    num_cpus: int = 2, name: str = "bench-rt", incremental: bool = False, devices: str = "looped",
    phases: str = "aligned",
) -> RealtimeResult:
    """Start the reference pipeline on ``n_devices`` paced devices of kind ``devices``, measure, stop.

    ``phases``: whether the devices' chunks fall due together or spread over a chunk
    period (:func:`~benchmarks.common.looped_devices`).

    The Ray session must already run (:func:`ray_init`). ``num_cpus`` is only
    used for the settings object: ``Engine.start`` sizes groups from the cluster.
    """
    from neuraflow.runtime.executor import Engine

    settings = bench_settings(num_cpus=num_cpus, devices_per_group=devices_per_group)
    plan = reference_plan(name, bench_devices(devices, n_devices, realtime=True, phases=phases), CountingSink(),
                          incremental=incremental)
    handle = Engine(settings).start(plan)
    errors: list[str] = []
    try:
        pids = [_actor_pid(a) for a in handle.groups.values()]
        controller_pid = _actor_pid(handle.controller)
        time.sleep(warmup_s)
        stats0 = _controller_totals(handle.controller)
        count0 = handle.call_sink("out", "stats")["chunks"]
        t0 = time.perf_counter()
        cpu0 = [pid_cpu_s(p) for p in pids]
        ccpu0 = pid_cpu_s(controller_pid)
        time.sleep(measure_s)
        count1 = handle.call_sink("out", "stats")["chunks"]
        elapsed = time.perf_counter() - t0
        cpu1 = [pid_cpu_s(p) for p in pids]
        ccpu1 = pid_cpu_s(controller_pid)
        window = _delta(_controller_totals(handle.controller), stats0)
        for gid, st in handle.group_status().items():
            if st["error"] or not st["alive"]:
                errors.append(f"{gid}: {st['error'] or 'not alive'}")
        total = handle.metrics()["total"]
    finally:
        handle.stop()
        handle.destroy()
    return RealtimeResult(
        n_devices=n_devices,
        n_groups=len(pids),
        measured_s=elapsed,
        expected_per_s=n_devices * CHUNKS_PER_S,
        achieved_per_s=(count1 - count0) / elapsed,
        p50_ms=window.latency.quantile(0.5),
        p99_ms=window.latency.quantile(0.99),
        drops=window.drops,
        shed=window.shed,
        run_p50_ms=total["latency_p50_ms"],
        run_p99_ms=total["latency_p99_ms"],
        worker_cpu=(sum(cpu1) - sum(cpu0)) / elapsed,
        controller_cpu=(ccpu1 - ccpu0) / elapsed,
        errors=errors,
    )


def search_capacity(
    ladder: list[int], *, warmup_s: float, measure_s: float, refine_steps: int = 2,
    devices_per_group: int | None = None, num_cpus: int = 2, log=print, incremental: bool = False,
    devices: str = "looped", phases: str = "aligned",
) -> tuple[int, list[RealtimeResult]]:
    """Largest sustained device count: climb ``ladder`` until a failure, then bisect.

    Returns the best sustained count (0 if none) and every run, in order.
    """
    runs: list[RealtimeResult] = []
    best, failed = 0, None

    def attempt(n: int) -> bool:
        res = realtime_run(n, warmup_s=warmup_s, measure_s=measure_s, devices_per_group=devices_per_group,
                           num_cpus=num_cpus, name=f"bench-rt-{len(runs)}", incremental=incremental,
                           devices=devices, phases=phases)
        runs.append(res)
        log(f"  N={n:4d} groups={res.n_groups:3d} p50={res.p50_ms:g} p99={res.p99_ms:g} ms "
            f"rate={res.rate_ratio:.3f} drops={res.drops} shed={res.shed} "
            f"cpu={res.worker_cpu:.2f}+{res.controller_cpu:.2f} -> {'ok' if res.sustained else 'FAIL'}"
            + (f" {res.errors}" if res.errors else ""))
        return res.sustained

    for n in ladder:
        if attempt(n):
            best = n
        else:
            failed = n
            break
    if failed is not None:
        lo, hi = best, failed
        for _ in range(refine_steps):
            mid = (lo + hi) // 2
            if mid <= lo or mid >= hi:
                break
            if attempt(mid):
                lo = best = mid
            else:
                hi = mid
    return best, runs


# ---------------------------------------------------------------------------- (e) replay


def write_recording(path: Path, seconds: float) -> np.ndarray:
    """Write ``seconds`` of 64-channel 1 kHz synthetic EEG to FIF ``path``; return the data (volts)."""
    import mne

    (dev,) = synthetic_devices(1, realtime=False, start_s=0.0)
    dev.open()
    data = dev.expected(0, int(seconds * SFREQ)).astype(np.float64)
    info = mne.create_info(list(dev.info.channels), SFREQ, ch_types="eeg", verbose="error")
    mne.io.RawArray(data, info, verbose="error").save(path, overwrite=True, verbose="error")
    return data


@dataclass
class ReplayResult:
    """Replay of one recording: seconds of signal per second of wall time."""

    seconds: float
    local_wall_s: float
    local_cpu_s: float
    local_predictions: int
    engine_wall_s: float | None
    bare_cpu_s: float

    @property
    def local_x(self) -> float:
        return self.seconds / self.local_wall_s

    @property
    def engine_x(self) -> float | None:
        return self.seconds / self.engine_wall_s if self.engine_wall_s else None

    @property
    def bare_x(self) -> float:
        return self.seconds / self.bare_cpu_s


def replay(seconds: float, *, with_engine: bool, chunk_size: int = 32) -> ReplayResult:
    """Replay a ``seconds`` long recording through the pipeline; compare with the bare math.

    ``run_local`` runs in this process (wall and CPU time of the run itself,
    the file is loaded by ``open()`` inside it). The engine run (batch mode,
    one worker) is timed from ``Engine.start`` to "finished", so it includes
    actor start-up. Needs a running Ray for ``with_engine``.
    """
    from neuraflow.runtime.local import run_local

    with tempfile.TemporaryDirectory(prefix="neuraflow-bench-") as tmp:
        path = Path(tmp) / "replay_raw.fif"
        data = write_recording(path, seconds)
        bare_cpu = replay_limit(data.astype(np.float32))

        sink = CountingSink()
        plan = reference_plan("bench-replay", [FilePlayback(path, chunk_size=chunk_size, realtime=False)], sink)
        c0, w0 = time.process_time(), time.perf_counter()
        run_local(plan)
        local_wall, local_cpu = time.perf_counter() - w0, time.process_time() - c0
        expected = (int(seconds * SFREQ) - 1000) // 32 + 1
        if sink.chunks != expected:
            raise RuntimeError(f"replay produced {sink.chunks} predictions, expected {expected}")

        engine_wall = None
        if with_engine:
            from neuraflow.runtime.executor import Engine

            settings = bench_settings(num_cpus=2, mode="batch")
            plan = reference_plan("bench-replay-engine",
                                  [FilePlayback(path, chunk_size=chunk_size, realtime=False)], CountingSink())
            w0 = time.perf_counter()
            handle = Engine(settings).start(plan)
            try:
                if handle.wait(timeout_s=max(60.0, seconds)):
                    engine_wall = time.perf_counter() - w0
            finally:
                handle.stop()
                handle.destroy()
    return ReplayResult(seconds, local_wall, local_cpu, sink.chunks, engine_wall, bare_cpu)


__all__ = [
    "EfficiencyResult",
    "RealtimeResult",
    "ReplayResult",
    "bench_settings",
    "fused_efficiency",
    "ray_init",
    "realtime_run",
    "replay",
    "search_capacity",
]
