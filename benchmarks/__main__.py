"""``python -m benchmarks [--quick] [--json PATH]``: run every benchmark and print a markdown table.

Order: bare two-process limits (full FFT, and the floor: sosfilt + sliding
DFT + ONNX), framework efficiency without Ray, 1-device latency and capacity
searches on a local Ray with 2 CPUs (one group actor per core; full FFT, then
the incremental band power with the devices' chunks due together, then spread
over a chunk period as devices started one by one would be), replay speed, then one actor per device on a Ray
with enough logical CPUs to place them. Real-time runs and bare loops read
:class:`~benchmarks.common.LoopedSynthetic` devices (a slice of pre-generated
Synthetic data per chunk), so both sides do the same work. The machine is shared and noisy: every figure is a
median or a ratio measured in this same run, next to the load average.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict
from typing import Any

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
# one BLAS thread, before numpy is imported: the in-process comparisons run one core's work, and a
# second BLAS thread spinning on a 2-core machine doubled their CPU times (Ray workers get the same
# setting from ray_init's runtime_env)
for _key in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_key, "1")

import numpy as np  # noqa: E402

from benchmarks import bare, engine  # noqa: E402
from benchmarks.common import (  # noqa: E402
    CHUNKS_PER_S,
    N_CHANNELS,
    SFREQ,
    TARGET_DEVICES,
    TARGET_FRACTION_OF_BARE,
    TARGET_P50_MS,
    TARGET_P99_MS,
    TARGET_REPLAY_X,
)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def _fmt(x: float | None, spec: str = ".0f") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return format(x, spec)


def _met(ok: bool | None) -> str:
    return "n/a" if ok is None else ("yes" if ok else "**no**")


def _bare(out: dict[str, Any], key: str, n: int, ticks: int, incremental: bool) -> None:
    procs = bare.two_process_limit(n, ticks=ticks, incremental=incremental)
    limit = sum(r.capacity_compute for r in procs)
    with_read = sum(r.capacity_with_generation for r in procs)
    read_us = 1e6 * sum(r.generate_s_per_tick / r.n_devices for r in procs) / len(procs)
    compute_us = 1e6 * sum(r.compute_s_per_tick / r.n_devices for r in procs) / len(procs)
    out[key] = {"runs": [asdict(r) for r in procs], "limit_compute": limit, "limit_with_read": with_read,
                "read_us_per_chunk": read_us, "compute_us_per_chunk": compute_us,
                "cpu_ms_per_device_s": compute_us * CHUNKS_PER_S / 1e3}
    _log(f"  limit: {limit:.0f} devices (compute only), {with_read:.0f} with device reads; per device-chunk: "
         f"compute {compute_us:.0f} us, read {read_us:.1f} us ({compute_us * CHUNKS_PER_S / 1e3:.2f} ms CPU per "
         "device-second)")


def run(quick: bool) -> dict[str, Any]:
    """Run all benchmarks; return the raw results (also used for the table)."""
    out: dict[str, Any] = {"quick": quick, "cpus": os.cpu_count(), "python": platform.python_version()}
    loads = [_load()]
    ticks = 24 if quick else 48

    n_bare = 64 if quick else 128
    _log(f"[1/6] bare numpy/scipy, 2 processes x {n_bare} devices, full FFT (load {_load()})")
    _bare(out, "bare", n_bare, ticks, incremental=False)
    _log(f"[1b/6] bare floor: sosfilt + sliding DFT + ONNX, 2 processes x {2 * n_bare} devices (load {_load()})")
    _bare(out, "bare_incremental", 2 * n_bare, ticks, incremental=True)

    _log(f"[2/6] framework efficiency without Ray (FusedGraph vs bare, same chunks) (load {_load()})")
    out["fused"] = []
    for n, inc in ([(64, False), (128, True)] if quick else [(128, False), (128, True), (256, True)]):
        r = engine.fused_efficiency(n, ticks=ticks, incremental=inc)
        out["fused"].append(asdict(r) | {"efficiency": r.efficiency, "incremental": inc})
        _log(f"  N={n} {'incremental' if inc else 'full FFT'}: bare {1e3 * r.bare_s_per_tick:.1f} ms/tick, "
             f"fused {1e3 * r.fused_s_per_tick:.1f} ms/tick, efficiency {r.efficiency:.2f}, "
             f"max |dp| {r.max_abs_diff:.1e}")
    loads.append(_load())

    engine.ray_init(2)
    warm, measure = (2.0, 4.0) if quick else (3.0, 8.0)
    _log(f"[3/6] 1 device, real time (load {_load()})")
    one = engine.realtime_run(1, warmup_s=warm, measure_s=2 * measure, name="bench-one")
    out["one_device"] = asdict(one)
    _log(f"  p50 {one.p50_ms} ms, p99 {one.p99_ms} ms (whole run {one.run_p50_ms}/{one.run_p99_ms}), "
         f"CPU {one.worker_cpu:.3f}+{one.controller_cpu:.3f} s/s")

    _log(f"[4/6] capacity, one group actor per core, full FFT, LoopedSynthetic devices (load {_load()})")
    ladder = [32, 64, 128, 256] if quick else [32, 64, 96, 128, 192, 256]
    best, runs = engine.search_capacity(ladder, warmup_s=warm, measure_s=measure, refine_steps=1 if quick else 2,
                                        log=_log)
    out["capacity"] = best
    out["capacity_runs"] = [asdict(r) for r in runs]
    loads.append(_load())

    _log(f"[4b/6] capacity with incremental band power (ops.sliding_band_power), LoopedSynthetic (load {_load()})")
    ladder_inc = [64, 128, 192, 256, 384, 512] if quick else [64, 128, 192, 256, 320, 384, 512, 768, 1024]
    best_inc, runs_inc = engine.search_capacity(ladder_inc, warmup_s=warm, measure_s=measure,
                                                refine_steps=1 if quick else 2, log=_log, incremental=True)
    out["capacity_incremental"] = best_inc
    out["capacity_incremental_runs"] = [asdict(r) for r in runs_inc]
    at_best = next((r for r in reversed(runs_inc) if r.n_devices == best_inc and r.sustained), None)
    loads.append(_load())

    _log(f"[4c/6] the same with device phases spread over a chunk period (load {_load()})")
    best_spread, runs_spread = engine.search_capacity(ladder_inc, warmup_s=warm, measure_s=measure,
                                                      refine_steps=1 if quick else 2, log=_log, incremental=True,
                                                      phases="spread")
    out["capacity_incremental_spread"] = best_spread
    out["capacity_incremental_spread_runs"] = [asdict(r) for r in runs_spread]
    loads.append(_load())

    _log(f"[5/6] replay (load {_load()})")
    rep = engine.replay(30.0 if quick else 120.0, with_engine=True)
    out["replay"] = asdict(rep) | {"local_x": rep.local_x, "engine_x": rep.engine_x, "bare_x": rep.bare_x}
    _log(f"  run_local {rep.local_x:.0f}x, engine batch {_fmt(rep.engine_x)}x, bare {rep.bare_x:.0f}x real time")

    ladder1 = [4, 8, 16] if quick else [4, 8, 16, 32, 48]
    engine.ray_init(max(ladder1) + 4)
    _log(f"[6/6] one actor per device (load {_load()})")
    best1, runs1 = engine.search_capacity(ladder1, warmup_s=warm + 2, measure_s=measure, refine_steps=1,
                                          devices_per_group=1, num_cpus=max(ladder1) + 4, log=_log)
    out["actor_per_device"] = best1
    out["actor_per_device_runs"] = [asdict(r) for r in runs1]
    import ray

    ray.shutdown()
    loads.append(_load())
    out["load_avg"] = loads

    # derived ratios
    floor = out["bare_incremental"]
    out["fraction_of_bare"] = best / out["bare"]["limit_with_read"] if out["bare"]["limit_with_read"] else math.nan
    out["fraction_of_floor"] = best_inc / floor["limit_with_read"] if floor["limit_with_read"] else math.nan
    out["fused_efficiency"] = out["fused"][-1]["efficiency"]
    # engine CPU (workers + controller) against devices over the incremental runs that kept the rate:
    # the slope is the marginal cost per device, the intercept the fixed cost of the pipeline
    fit = [(x.n_devices, x.worker_cpu + x.controller_cpu) for x in runs_inc if x.rate_ratio >= 0.99 and not x.errors]
    if len({n for n, _ in fit}) >= 2:
        slope, intercept = np.polyfit([n for n, _ in fit], [c for _, c in fit], 1)
        out["engine_marginal_ms_per_device_s"] = 1e3 * slope
        out["engine_fixed_cpu"] = intercept
        out["engine_cpu_limit_marginal"] = (2.0 - intercept) / slope if slope > 0 else math.nan
    if at_best is not None:
        floor_us = floor["compute_us_per_chunk"] + floor["read_us_per_chunk"]
        out["realtime_cpu_us_per_chunk"] = 1e3 * at_best.cpu_ms_per_chunk
        out["realtime_efficiency"] = floor_us / (1e3 * at_best.cpu_ms_per_chunk)
        # what 2 fully available cores would sustain at the engine's measured CPU cost per chunk
        out["engine_cpu_limit"] = 2.0 / (CHUNKS_PER_S * at_best.cpu_ms_per_chunk / 1e3)
        out["at_best"] = asdict(at_best)
    return out


def table(r: dict[str, Any]) -> str:
    """The markdown table of :func:`run`'s results."""
    one = r["one_device"]
    best = r["capacity"]
    best_inc = r["capacity_incremental"]
    rep = r["replay"]
    floor = r["bare_incremental"]
    samples = N_CHANNELS * SFREQ
    fused = {(f["n_devices"], f["incremental"]): f for f in r["fused"]}
    rows = [
        ("Devices sustained, Ray engine, 1 group actor/core, incremental band power (p99 < 50 ms, no drops, "
         ">= 99 % rate)", f"{best_inc} ({best_inc * samples / 1e6:.1f} M ch-samples/s)", f">= {TARGET_DEVICES}",
         _met(best_inc >= TARGET_DEVICES)),
        ("... the same, device phases spread over a chunk period (devices started one by one)",
         f"{r['capacity_incremental_spread']} ({r['capacity_incremental_spread'] * samples / 1e6:.1f} M ch-samples/s)",
         f">= {TARGET_DEVICES}", _met(r["capacity_incremental_spread"] >= TARGET_DEVICES)),
        ("... as a fraction of the bare floor (sosfilt + sliding DFT + ONNX, 2 processes, device reads included)",
         f"{100 * r['fraction_of_floor']:.0f} % of {floor['limit_with_read']:.0f}",
         f">= {100 * TARGET_FRACTION_OF_BARE:.0f} %", _met(r["fraction_of_floor"] >= TARGET_FRACTION_OF_BARE)),
        ("Bare floor: CPU per device-second (2 processes, compute only) and devices on 2 idle cores",
         f"{floor['cpu_ms_per_device_s']:.2f} ms ({floor['limit_compute']:.0f} devices)", "", ""),
        ("Devices sustained, full FFT per hop (sliding_window -> log_band_power)",
         f"{best} ({best * samples / 1e6:.1f} M ch-samples/s)", "", ""),
        ("... as a fraction of the bare 2-process full-FFT limit (device reads included)",
         f"{100 * r['fraction_of_bare']:.0f} % of {r['bare']['limit_with_read']:.0f}", "", ""),
        ("1-device latency p50 (histogram bucket bound)", f"{_fmt(one['p50_ms'], 'g')} ms",
         f"< {TARGET_P50_MS:g} ms", _met(one["p50_ms"] < TARGET_P50_MS)),
        ("1-device latency p99 (histogram bucket bound)", f"{_fmt(one['p99_ms'], 'g')} ms",
         f"< {TARGET_P99_MS:g} ms", _met(one["p99_ms"] < TARGET_P99_MS)),
    ]
    for (n, inc), f in sorted(fused.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        rows.append((f"Framework efficiency, no Ray: bare CPU / FusedGraph CPU ({n} devices, same chunks, "
                     f"{'incremental' if inc else 'full FFT'} on both sides)",
                     f"{f['efficiency']:.2f} ({1e3 * f['bare_s_per_tick']:.1f} / {1e3 * f['fused_s_per_tick']:.1f} "
                     "ms per tick)", "", ""))
    if "realtime_efficiency" in r:
        rows.append((f"Framework efficiency, Ray real time at {best_inc} devices: "
                     "bare floor CPU / engine CPU per chunk",
                     f"{r['realtime_efficiency']:.2f} ({floor['compute_us_per_chunk'] + floor['read_us_per_chunk']:.0f}"
                     f" / {r['realtime_cpu_us_per_chunk']:.0f} us)", "", ""))
        rows.append(("Engine CPU-bound limit on 2 idle cores (2 s/s / measured engine CPU per device-second)",
                     f"{r['engine_cpu_limit']:.0f} devices", "", ""))
    if "engine_marginal_ms_per_device_s" in r:
        rows.append(("Engine CPU in real time, linear fit over the incremental runs: per device-second + fixed; "
                     "devices 2 idle cores would carry",
                     f"{r['engine_marginal_ms_per_device_s']:.2f} ms + {r['engine_fixed_cpu']:.2f} s/s; "
                     f"{r['engine_cpu_limit_marginal']:.0f} devices", "", ""))
    rows += [
        ("Replay speed, run_local (64 ch @ 1 kHz FIF, chunk 32)", f"{rep['local_x']:.0f} x real time",
         f">= {TARGET_REPLAY_X:.0f} x", _met(rep["local_x"] >= TARGET_REPLAY_X)),
        ("Replay speed, Ray engine batch mode (incl. actor start-up)", f"{_fmt(rep['engine_x'])} x real time",
         f">= {TARGET_REPLAY_X:.0f} x", _met(None if rep["engine_x"] is None else rep["engine_x"] >= TARGET_REPLAY_X)),
        ("Replay speed, bare numpy/scipy (1 process, CPU time)", f"{rep['bare_x']:.0f} x real time", "", ""),
        ("One actor per device: devices sustained", f"{r['actor_per_device']}", "(reported)", ""),
        ("Device read per device-chunk (LoopedSynthetic: a slice of pre-generated Synthetic data; in the "
         "engine's workers and in the bare loops alike)", f"{floor['read_us_per_chunk']:.1f} us", "", ""),
        ("Bare compute per device-chunk: full FFT / floor (sosfilt + sliding DFT + ONNX)",
         f"{r['bare']['compute_us_per_chunk']:.0f} / {floor['compute_us_per_chunk']:.0f} us", "", ""),
    ]
    lines = ["| metric | measured | target | met? |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    lines.append("")
    lines.append(f"Machine: {r['cpus']} CPUs, load average (1/5/15 min) during the run: {', '.join(r['load_avg'])}. "
                 f"A device is 64 ch @ 1 kHz in 32-sample chunks ({CHUNKS_PER_S} chunks/s); real-time runs use "
                 "LoopedSynthetic devices (paced playback of pre-generated Synthetic data).")
    lines.append("")
    lines.append("| run | N | groups | p50 ms | p99 ms | rate | drops | shed | worker CPU s/s | controller CPU s/s | ok |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for label, key in (("1 device", None), ("actor/core, full FFT", "capacity_runs"),
                       ("actor/core, incremental", "capacity_incremental_runs"),
                       ("actor/core, incremental, spread phases", "capacity_incremental_spread_runs"),
                       ("actor/device", "actor_per_device_runs")):
        for x in ([r["one_device"]] if key is None else r[key]):
            ratio = x["achieved_per_s"] / x["expected_per_s"]
            ok = (not x["errors"] and x["p99_ms"] < 50 and x["drops"] == 0 and x["shed"] == 0 and ratio >= 0.99)
            lines.append(f"| {label} | {x['n_devices']} | {x['n_groups']} | {_fmt(x['p50_ms'], 'g')} | "
                         f"{_fmt(x['p99_ms'], 'g')} | {ratio:.3f} | {x['drops']} | {x['shed']} | "
                         f"{x['worker_cpu']:.2f} | {x['controller_cpu']:.2f} | {'yes' if ok else 'no'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs and fewer sizes (about 4 minutes)")
    parser.add_argument("--json", metavar="PATH", help="also write the raw results as JSON")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    results = run(args.quick)
    results["elapsed_s"] = time.perf_counter() - t0
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2, default=str)
    print(table(results))
    _log(f"done in {results['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
