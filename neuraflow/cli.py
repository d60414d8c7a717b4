"""``neuraflow`` command line: run, replay and serve pipelines.

    neuraflow run pipelines/demo.py [--config configs/default.yaml] [--duration 30] [--mode realtime]
    neuraflow replay FILE --pipeline pipelines/demo.py [--config ...]
    neuraflow serve [--config configs/production.yaml] [--detach]
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from neuraflow.config import NeuraflowSettings, load_settings
from neuraflow.devices.cli import add_parser as add_devices_parser
from neuraflow.errors import NeuraflowError, PipelineDefinitionError
from neuraflow.storage.cli import add_parser as add_export_parser

log = logging.getLogger("neuraflow")


def _settings(args: argparse.Namespace) -> NeuraflowSettings:
    return load_settings(args.config).with_absolute_paths()


def _fmt(value: float, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{suffix}{unit}"
    return f"{value:.1f}{unit}"


def live_line(metrics: dict[str, Any], n_channels: dict[str, int], window: dict[str, float]) -> str:
    """One status line: chunks/s, channel-samples/s, p50/p99 latency, drops (since last line)."""
    total, recent = metrics["total"], metrics["recent"]
    ch_samples = sum(st["samples"] * n_channels.get(sid, 1) for sid, st in metrics["streams"].items())
    now = time.monotonic()
    dt = max(now - window.get("t", now - 1.0), 1e-6)
    rate_chunks = (total["chunks"] - window.get("chunks", 0)) / dt
    rate_cs = (ch_samples - window.get("cs", 0)) / dt
    window.update(t=now, chunks=total["chunks"], cs=ch_samples)
    return (
        f"chunks/s {_fmt(rate_chunks)} | ch-samples/s {_fmt(rate_cs)} | latency (last {recent['window_s']:.0f} s)"
        f" p50 {_fmt(recent['latency_p50_ms'], ' ms')} p99 {_fmt(recent['latency_p99_ms'], ' ms')} | drops {total['drops']} shed {total['shed']}"
        f" errors {total['errors']} reconnects {total['reconnects']}"
    )


def _describe_sink(sink: Any) -> str:
    if hasattr(sink, "table") and hasattr(sink, "warehouse"):
        return f"Iceberg table {sink.table!r}, warehouse {sink.warehouse}, catalog {sink.catalog_uri}"
    if hasattr(sink, "seconds"):
        return f"{type(sink).__name__} (last {sink.seconds:g} s in memory; GET /streams/{{id}}/latest)"
    return type(sink).__name__


def _start_tiering(settings: NeuraflowSettings) -> Any:
    """With Redis and PostgreSQL configured, start the actor that moves data hot -> warm -> cold."""
    storage = settings.storage
    if not (storage.redis_url and storage.postgres_url):
        return None
    from neuraflow.runtime.tiering import start_tiering_actor
    from neuraflow.storage.tiering import TieringPolicy
    from neuraflow.storage.tiers import tiers_from_settings

    hot, warm, cold = tiers_from_settings(storage)
    policy = TieringPolicy(hot_s=storage.hot_seconds, warm_s=storage.warm_seconds)
    actor = start_tiering_actor(hot, warm, cold, policy, namespace=settings.ray.namespace,
                                interval_s=storage.tiering_interval_s)
    print(f"  tiering: Redis -> PostgreSQL after {storage.hot_seconds:g} s, -> Iceberg after "
          f"{storage.warm_seconds:g} s (every {storage.tiering_interval_s:g} s, verified before delete)")
    return actor


def cmd_run(args: argparse.Namespace) -> int:
    from neuraflow.graph.loader import load_plan
    from neuraflow.runtime.executor import Engine

    settings = _settings(args)
    plan = load_plan(args.pipeline, settings)
    engine = Engine(settings)
    url = None
    if settings.serve.enabled and not args.no_serve:
        from neuraflow.serve.deployment import start_service

        url = start_service(settings)  # first: its start-up would otherwise delay the first ticks
    handle = engine.start(plan, mode=args.mode)
    tiering = _start_tiering(settings)
    n_channels = {i.stream_id: i.n_channels for infos in plan.stream_infos.values() for i in infos}
    print(f"pipeline {plan.name!r} running: {sum(len(s.devices) for s in plan.sources())} device(s), "
          f"steps {[s.name for s in plan.processing()]}")
    for sink in plan.sinks():
        print(f"  sink {sink.name!r}: {_describe_sink(sink.sink)}")
    if url:
        print(f"  HTTP: {url}/docs  {url}/streams  {url}/metrics")
        for exposure in plan.exposures():
            print(f"  exposed {exposure.name!r}: {url}{exposure.route}")
    deadline = None if args.duration is None else time.monotonic() + args.duration
    window: dict[str, float] = {}
    try:
        while deadline is None or time.monotonic() < deadline:
            time.sleep(1.0)
            line = live_line(handle.metrics(), n_channels, window)
            print("\r" + line if sys.stdout.isatty() else line, end="" if sys.stdout.isatty() else "\n", flush=True)
            if handle.status()["state"] == "finished":
                break
    except KeyboardInterrupt:
        pass
    print()
    if tiering is not None:
        from neuraflow.runtime.tiering import stop_tiering_actor

        stop_tiering_actor(tiering)
    status = handle.stop()
    final = handle.metrics()["total"]
    handle.destroy()
    print(f"stopped: {final['chunks']} chunks, {final['samples']} samples; sinks {status['sinks']}")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from neuraflow.devices import FilePlayback
    from neuraflow.graph.loader import load_plan
    from neuraflow.graph.plan import replace_devices
    from neuraflow.runtime.executor import Engine

    settings = _settings(args)
    if not Path(args.pipeline).is_file():
        raise PipelineDefinitionError(f"pipeline file {args.pipeline!r} does not exist.")
    device = FilePlayback(args.file, stream_id=args.stream_id, chunk_size=args.chunk_size, realtime=False)
    if args.source:
        plan = replace_devices(load_plan(args.pipeline, settings), args.source, [device])
    else:
        plan = load_plan(args.pipeline, settings, replace_first_source=[device])
    total = device.n_samples_total
    sfreq = device.info.sfreq
    engine = Engine(settings)
    started = time.monotonic()
    handle = engine.start(plan, mode="batch")
    done = 0
    with tqdm(total=total, unit="sample", desc=f"replay {Path(args.file).name}", disable=args.quiet) as bar:
        while True:
            status = handle.status()
            stream = handle.metrics()["streams"].get(device.info.stream_id, {})
            samples = int(stream.get("samples", 0))
            bar.update(samples - done)
            done = samples
            if status["state"] == "finished":
                break
            time.sleep(0.2)
    elapsed = time.monotonic() - started
    status = handle.stop()
    handle.destroy()
    seconds = total / sfreq
    print(f"replayed {done} samples x {device.info.n_channels} channels = {seconds:.1f} s of signal "
          f"in {elapsed:.2f} s: {seconds / elapsed:.1f}x real time")
    for name, sink in status["sinks"].items():
        if sink["error"]:
            print(f"  sink {name!r} error: {sink['error']}")
    return 0 if done == total else 1


def cmd_serve(args: argparse.Namespace) -> int:
    from neuraflow.runtime.executor import connect
    from neuraflow.serve.deployment import start_service

    settings = _settings(args)
    connect(settings)
    url = start_service(settings)
    print(f"neuraflow service at {url}/docs")
    if args.detach:
        return 0
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neuraflow", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a pipeline file until Ctrl-C or --duration")
    run.add_argument("pipeline", help="path to pipelines/NAME.py")
    run.add_argument("--config", help="settings YAML (default: built-in defaults + env)")
    run.add_argument("--duration", type=float, help="stop after this many seconds")
    run.add_argument("--mode", choices=["realtime", "near_real_time", "batch"], help="override runtime.mode")
    run.add_argument("--no-serve", action="store_true", help="do not start the HTTP service")
    run.set_defaults(func=cmd_run)

    replay = sub.add_parser("replay", help="replay a recording through a pipeline at full speed")
    replay.add_argument("file", help="EDF, BDF or FIF recording")
    replay.add_argument("--pipeline", required=True, help="path to pipelines/NAME.py")
    replay.add_argument("--config", help="settings YAML")
    replay.add_argument("--source", help="which source of the pipeline the file replaces (default: the first)")
    replay.add_argument("--stream-id", help="stream id of the replayed file (default: file name)")
    replay.add_argument("--chunk-size", type=int, default=256, help="samples per chunk (default 256)")
    replay.add_argument("--quiet", action="store_true", help="no progress bar")
    replay.set_defaults(func=cmd_replay)

    srv = sub.add_parser("serve", help="start the HTTP service on a running cluster")
    srv.add_argument("--config", help="settings YAML")
    srv.add_argument("--detach", action="store_true", help="return once the service is up")
    srv.set_defaults(func=cmd_serve)
    add_devices_parser(sub)
    add_export_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    try:
        return args.func(args)
    except NeuraflowError as exc:
        print(f"neuraflow: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
