"""``neuraflow export``: write a span of a stored stream to EDF, BDF, FIF, Parquet or BIDS.

    neuraflow export STREAM_ID --start T0 --end T1 --format edf|bdf|fif|parquet|bids --out PATH
                     [--channels Cz Pz ...] [--config FILE] [--block-s 300] [--no-events] [--quiet]
                     [--subject 01] [--session S] [--task neuraflow] [--run N] [--datatype eeg]

``--start``/``--end`` are device times: seconds since the epoch, or ISO 8601
(``2024-05-01T10:00:00``; UTC when no offset is given). The tiers are those of
``storage`` in the settings (Redis and PostgreSQL when configured, always Iceberg);
a configured tier that cannot be reached is skipped with a warning, unless it is the
only one. A progress bar advances over the time range as blocks of ``--block-s`` s are read.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from typing import Any

from neuraflow.errors import NeuraflowError

#: neuraflow.storage.export.FORMATS, spelled out so that building the parser imports no storage code.
FORMATS = ("edf", "bdf", "fif", "parquet", "bids")


def parse_time(text: str) -> float:
    """Seconds since the epoch from a number or an ISO 8601 date-time (naive = UTC)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither seconds since the epoch nor an ISO 8601 date-time (2024-05-01T10:00:00)."
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def reachable_tiers(tiers: list[Any], stream_id: str) -> list[Any]:
    """``tiers`` without those that fail a ``has_stream`` probe (a warning each), unless none would be left."""
    kept = []
    for tier in tiers:
        try:
            tier.has_stream(stream_id)
        except Exception as exc:  # a server that is down: ConnectionError, SinkError, OperationalError ...
            print(f"neuraflow export: warning: tier {tier.name!r} unreachable ({type(exc).__name__}: {exc}); "
                  "exporting from the other tiers, recent data may be missing.", file=sys.stderr)  # fmt: skip
            continue
        kept.append(tier)
    return kept or tiers


def cmd_export(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from neuraflow.config import load_settings
    from neuraflow.storage.export import export_stream
    from neuraflow.storage.query import QueryEngine
    from neuraflow.storage.tiers import tiers_from_settings

    if not args.start < args.end:
        raise NeuraflowError(f"export: --start {args.start!r} must be before --end {args.end!r}.")
    settings = load_settings(args.config).with_absolute_paths()
    engine = QueryEngine(reachable_tiers(tiers_from_settings(settings.storage), args.stream_id))
    if not engine.has_stream(args.stream_id):
        names = sorted({s for tier in engine.tiers for s in tier.streams()})
        raise NeuraflowError(f"export: no tier holds stream {args.stream_id!r}; stored streams: {names[:20]}.")
    span = args.end - args.start
    bids = {"subject": args.subject, "session": args.session, "task": args.task, "run": args.run,
            "datatype": args.datatype}  # fmt: skip
    with tqdm(total=round(span, 3), unit="s", desc=f"export {args.stream_id}", disable=args.quiet) as bar:

        def advance(block: Any) -> None:
            bar.update(round(block.end_s - block.start_s, 3))

        path = export_stream(engine, args.stream_id, args.start, args.end, args.out, format=args.format,
                             channels=args.channels, block_s=args.block_s, with_events=not args.no_events,
                             progress=advance, **bids)  # fmt: skip
    print(f"wrote {path}")
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``export`` to the ``neuraflow`` subcommands."""
    p = subparsers.add_parser("export", help="write a span of a stored stream to EDF/BDF/FIF/Parquet/BIDS")
    p.add_argument("stream_id", help="the stored stream")
    p.add_argument("--start", required=True, type=parse_time, help="span start: s since epoch or ISO 8601 (UTC)")
    p.add_argument("--end", required=True, type=parse_time, help="span end (exclusive): s since epoch or ISO 8601")
    p.add_argument("--format", required=True, choices=FORMATS, help="output format")
    p.add_argument("--out", required=True, help="output file (a folder for bids)")
    p.add_argument("--channels", nargs="+", help="channel names to keep, in this order (default: all)")
    p.add_argument("--config", help="settings YAML (default: built-in defaults + env)")
    p.add_argument("--block-s", type=float, default=300.0, help="seconds read per query (default 300)")
    p.add_argument("--no-events", action="store_true", help="leave the stored events out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--subject", default="01", help="BIDS subject (default 01)")
    p.add_argument("--session", help="BIDS session")
    p.add_argument("--task", default="neuraflow", help="BIDS task (default neuraflow)")
    p.add_argument("--run", help="BIDS run")
    p.add_argument("--datatype", default="eeg", choices=["eeg", "ieeg", "emg", "meg"], help="BIDS data type")
    p.set_defaults(func=cmd_export)
    return p
