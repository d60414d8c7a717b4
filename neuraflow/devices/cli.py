"""``neuraflow devices``: list, discover and check acquisition devices.

    neuraflow devices list     [--devices FILE] [--json]
    neuraflow devices discover [--devices FILE] [--lsl-wait 1.0] [--no-ble] [--port PTY] [--probe] [--json]
    neuraflow devices status   [ID ...] --devices FILE [--seconds 3] [--impedance] [--json]

``--devices FILE`` is a YAML/JSON mapping ``{devices: {id: spec}}`` (see
:mod:`neuraflow.devices.service`). ``status`` connects the devices here for
``--seconds`` (reconnecting with backoff), prints their health records and
disconnects: a bench check of the hardware, no cluster needed.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any


def _manager(args: argparse.Namespace):
    from neuraflow.devices.service import DeviceManager

    if not args.devices:
        return DeviceManager()
    return DeviceManager.from_file(args.devices, line_freq=args.line_freq)


def _print(data: Any, as_json: bool, table: str) -> None:
    print(json.dumps(data, indent=2, default=str) if as_json else table, end="" if not as_json else "\n")


def _fmt(v: Any, spec: str = "") -> str:
    if v is None:
        return "-"
    return format(v, spec) if spec and isinstance(v, (int, float)) else str(v)


def cmd_list(args: argparse.Namespace) -> int:
    specs = _manager(args).specs()
    lines = [f"{i}  {s['kind']}  " + " ".join(f"{k}={v}" for k, v in s.items() if k != "kind") for i, s in specs.items()]
    _print(specs, args.json, "\n".join(lines or ["no devices configured (--devices FILE)"]) + "\n")
    return 0


def cmd_discover(args: argparse.Namespace) -> int:
    from neuraflow.devices.discovery import discover, format_table

    result = discover(lsl=not args.no_lsl, ble=not args.no_ble, lsl_wait_s=args.lsl_wait, ble_timeout_s=args.ble_timeout,
                      extra_ports=args.port or (), probe=args.probe, configured=_manager(args).specs())
    _print(result, args.json, format_table(result))
    return 0


def status_table(records: list[dict[str, Any]]) -> str:
    head = f"{'id':<12} {'state':<13} {'rate':>14} {'samples':>8} {'drops':>6} {'reconn':>6} {'age_s':>6} {'quality':>8}"
    lines = [head]
    for r in records:
        q = r.get("quality") or {}
        rate = f"{_fmt(r['measured_sfreq'], '.1f')}/{_fmt(r['nominal_sfreq'], 'g')}"
        lines.append(f"{r['id']:<12} {r['state']:<13} {rate:>14} {r['samples']:>8} {r['drops']:>6} {r['reconnects']:>6} "
                     f"{_fmt(r['last_sample_age_s'], '.2f'):>6} {_fmt(q.get('score'), '.2f'):>8}")
        if r.get("last_error"):
            lines.append(f"{'':<12} last error: {r['last_error']}")
        if r.get("impedance_kohm"):
            lines.append(f"{'':<12} impedance kOhm: " + ", ".join(f"{k} {v:.1f}" for k, v in r["impedance_kohm"].items()))
    return "\n".join(lines) + "\n"


def cmd_status(args: argparse.Namespace) -> int:
    mgr = _manager(args)
    ids = args.ids or mgr.ids()
    if not ids:
        print("no devices configured (--devices FILE)")
        return 1
    with mgr:
        for i in ids:
            mgr.connect(i)
        time.sleep(args.seconds)
        if args.impedance:
            for i in ids:
                if mgr.specs()[i]["kind"] == "cyton":
                    mgr.impedance(i)
        records = [mgr.status(i) for i in ids]
    _print(records, args.json, status_table(records))
    return 0 if all(r["state"] == "connected" for r in records) else 1


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``devices`` (list/discover/status) to the ``neuraflow`` subcommands."""
    dev = subparsers.add_parser("devices", help="list, discover and check acquisition devices")
    sub = dev.add_subparsers(dest="devices_command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--devices", help="YAML/JSON file: {devices: {id: {kind: ..., ...}}}")
        p.add_argument("--json", action="store_true", help="JSON output")
        p.add_argument("--line-freq", type=float, default=50.0, help="mains frequency for quality (50 or 60)")

    lst = sub.add_parser("list", help="configured devices")
    common(lst)
    lst.set_defaults(func=cmd_list)

    disc = sub.add_parser("discover", help="serial ports, LSL streams, BLE devices, configured TCP devices")
    common(disc)
    disc.add_argument("--lsl-wait", type=float, default=1.0, help="LSL resolve time in s (default 1.0)")
    disc.add_argument("--ble-timeout", type=float, default=2.0, help="BLE scan time in s (default 2.0)")
    disc.add_argument("--no-lsl", action="store_true", help="skip LSL")
    disc.add_argument("--no-ble", action="store_true", help="skip BLE")
    disc.add_argument("--port", action="append", help="also list this serial port (pty, by-id link); repeatable")
    disc.add_argument("--probe", action="store_true", help="send 'v' to candidate ports to identify boards")
    disc.set_defaults(func=cmd_discover)

    st = sub.add_parser("status", help="connect configured devices for a while and print health records")
    common(st)
    st.add_argument("ids", nargs="*", help="device ids (default: all)")
    st.add_argument("--seconds", type=float, default=3.0, help="how long to stream before reporting")
    st.add_argument("--impedance", action="store_true", help="also measure Cyton impedances")
    st.set_defaults(func=cmd_status)
    return dev
