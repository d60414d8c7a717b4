"""``neuraflow devices``: list, discover and check acquisition devices.

    neuraflow devices list     [--devices FILE] [--json]
    neuraflow devices discover [--devices FILE] [--lsl-wait 1.0] [--no-ble] [--port PTY] [--probe] [--json]
    neuraflow devices status   [ID ...] --devices FILE [--seconds 3] [--impedance] [--json]

    neuraflow devices status     [ID ...] --url http://127.0.0.1:8000 [--json]
    neuraflow devices connect    ID       [--url URL] [--json]
    neuraflow devices disconnect ID       [--url URL] [--json]
    neuraflow devices impedance  ID       [--url URL] [--seconds 2] [--json]

``--devices FILE`` is a YAML/JSON mapping ``{devices: {id: spec}}`` (see
:mod:`neuraflow.devices.service`). ``status`` connects the devices here for
``--seconds`` (reconnecting with backoff), prints their health records and
disconnects: a bench check of the hardware, no cluster needed.

With ``--url`` (``status``) and always for ``connect``, ``disconnect`` and
``impedance``, the commands talk to the devices of a running service
(``neuraflow serve``: ``GET /devices``, ``POST /devices/{id}/connect`` ...)
over HTTP (stdlib ``urllib``). Exit status: 0 done, 1 the service refused
(unknown id, not a Cyton/Ganglion, device error), 2 the service is unreachable.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8000"


class ServiceError(Exception):
    """The device service answered with an error, or could not be reached (``unreachable``)."""

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


def _http(url: str, method: str, path: str, *, timeout_s: float = 10.0, **query: Any) -> Any:
    """One JSON request to the service; ``ServiceError`` carries the service's ``detail``."""
    full = url.rstrip("/") + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
    req = urllib.request.Request(full, method=method, data=b"" if method == "POST" else None,
                                 headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read() or b"null").get("detail")
        except (ValueError, AttributeError):
            detail = None
        if isinstance(detail, dict):
            detail = detail.get("message", detail)
        err = ServiceError(f"{method} {path}: HTTP {exc.code}: {detail or exc.reason}")
        err.status = exc.code  # type: ignore[attr-defined]
        raise err from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ServiceError(f"cannot reach the device service at {url} ({reason}). Is `neuraflow serve` running "
                           "there? Pass --url http://HOST:PORT.", unreachable=True) from None


def _device_call(url: str, method: str, path: str, device_id: str, **query: Any) -> Any:
    """A call on one device; a 404 becomes a message naming the id and listing the known ones."""
    try:
        return _http(url, method, path, **query)
    except ServiceError as exc:
        if getattr(exc, "status", None) != 404:
            raise
        try:
            known = sorted(r["id"] for r in _http(url, "GET", "/devices"))
        except ServiceError:
            known = []
        from neuraflow._validate import suggest

        raise ServiceError(f"no device {device_id!r} at {url}; known ids: {known or 'none'}."
                           f"{suggest(device_id, known)}") from None


def _remote(args: argparse.Namespace, action) -> int:
    try:
        data, table = action()
    except ServiceError as exc:
        print(f"neuraflow devices {args.devices_command}: {exc}", file=sys.stderr)
        return 2 if exc.unreachable else 1
    _print(data, args.json, table)
    return 0


def _quote(device_id: str) -> str:
    return urllib.parse.quote(device_id, safe="")


def remote_status(args: argparse.Namespace) -> int:
    def action():
        if args.ids:
            records = [_device_call(args.url, "GET", f"/devices/{_quote(i)}", i) for i in args.ids]
        else:
            records = _http(args.url, "GET", "/devices")
        return records, (status_table(records) if records else f"no devices registered at {args.url}\n")

    return _remote(args, action)


def cmd_connect(args: argparse.Namespace) -> int:
    path = f"/devices/{_quote(args.id)}/{args.devices_command}"
    return _remote(args, lambda: ((r := _device_call(args.url, "POST", path, args.id)), status_table([r])))


def cmd_impedance(args: argparse.Namespace) -> int:
    def action():
        result = _device_call(args.url, "POST", f"/devices/{_quote(args.id)}/impedance", args.id,
                              timeout_s=args.seconds * 3 + 30, seconds=args.seconds)
        kohm = result.get("kohm") or {}
        lines = [f"{'channel':<10} {'kOhm':>10}"] + [f"{k:<10} {_fmt(v, '.1f'):>10}" for k, v in kohm.items()]
        return result, "\n".join(lines) + "\n"

    return _remote(args, action)


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
    if args.url:
        return remote_status(args)
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
                if mgr.specs()[i]["kind"] in ("cyton", "ganglion"):
                    mgr.impedance(i)
        records = [mgr.status(i) for i in ids]
    _print(records, args.json, status_table(records))
    return 0 if all(r["state"] == "connected" for r in records) else 1


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``devices`` (list/discover/status/connect/disconnect/impedance) to the ``neuraflow`` subcommands."""
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
    st.add_argument("--impedance", action="store_true", help="also measure Cyton / Ganglion impedances")
    st.add_argument("--url", help=f"ask a running service instead (e.g. {DEFAULT_URL}); --devices is then ignored")
    st.set_defaults(func=cmd_status)

    for name, text in (("connect", "connect a device of a running service (reconnects with backoff)"),
                       ("disconnect", "disconnect a device of a running service")):
        p = sub.add_parser(name, help=text)
        p.add_argument("id", help="device id (see `neuraflow devices status --url URL`)")
        p.add_argument("--url", default=DEFAULT_URL, help=f"the service (default {DEFAULT_URL})")
        p.add_argument("--json", action="store_true", help="JSON output")
        p.set_defaults(func=cmd_connect)
    imp = sub.add_parser("impedance", help="electrode impedance (Cyton, Ganglion) through a running service")
    imp.add_argument("id", help="device id")
    imp.add_argument("--url", default=DEFAULT_URL, help=f"the service (default {DEFAULT_URL})")
    imp.add_argument("--seconds", type=float, default=2.0, help="measurement window in s (default 2.0)")
    imp.add_argument("--json", action="store_true", help="JSON output")
    imp.set_defaults(func=cmd_impedance)
    return dev
