"""Find acquisition devices: serial ports, LSL streams, BLE devices, configured TCP devices.

:func:`discover` returns one JSON-ready mapping with a section per transport;
:func:`format_table` renders it for a terminal. Every section reports its own
failure (``"available": false`` and a ``"reason"``) instead of raising, so one
missing transport (no Bluetooth adapter, no liblsl) never hides the others.

- Serial: ``serial.tools.list_ports`` (USB VID/PID, description, serial number).
  An FTDI FT231X (VID 0x0403, PID 0x6015) is what the OpenBCI Cyton dongle
  is, so such ports are flagged ``"candidate": "openbci-cyton"``. Pseudo-terminals
  and ports named in device specs are not USB and are not listed by pyserial;
  pass them as ``extra_ports``. ``probe=True`` sends ``v`` to each candidate
  and reads the banner (this stops a streaming board; off by default).
- LSL: ``pylsl.resolve_streams(wait_time)``, which always waits its full time.
- BLE: ``bleak.BleakScanner`` when an adapter exists (Linux: ``/sys/class/bluetooth``);
  otherwise ``{"available": false, "reason": "no adapter"}`` without touching bleak.
- TCP: the specs with a ``host`` and a numeric ``port``, checked with a connect.

No Ray here.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["OPENBCI_USB_IDS", "classify_port", "discover", "discover_ble", "discover_lsl", "discover_serial",
           "discover_tcp", "format_table", "probe_cyton"]

OPENBCI_USB_IDS = {(0x0403, 0x6015): "openbci-cyton"}
"""USB (VID, PID) -> candidate device: the Cyton/Ganglion dongle is an FTDI FT231X."""
_BLUETOOTH_SYSFS = "/sys/class/bluetooth"


def classify_port(port: Any) -> dict[str, Any]:
    """One serial port (a pyserial ``ListPortInfo`` or alike) as a JSON-ready record.

    >>> from serial.tools.list_ports_common import ListPortInfo
    >>> p = ListPortInfo("/dev/ttyUSB0", skip_link_detection=True)
    >>> p.vid, p.pid, p.serial_number = 0x0403, 0x6015, "DM00ABCD"
    >>> r = classify_port(p)
    >>> r["vid"], r["pid"], r["usb"], r["candidate"]
    ('0x0403', '0x6015', True, 'openbci-cyton')
    """
    vid, pid = getattr(port, "vid", None), getattr(port, "pid", None)
    usb = vid is not None and pid is not None
    return {
        "port": port.device,
        "usb": usb,
        "vid": f"0x{vid:04x}" if vid is not None else None,
        "pid": f"0x{pid:04x}" if pid is not None else None,
        "description": getattr(port, "description", None) or None,
        "manufacturer": getattr(port, "manufacturer", None),
        "product": getattr(port, "product", None),
        "serial_number": getattr(port, "serial_number", None),
        "location": getattr(port, "location", None),
        "candidate": OPENBCI_USB_IDS.get((vid, pid)) if usb else None,
    }


def probe_cyton(port: str, timeout_s: float = 1.0) -> dict[str, Any]:
    """Send ``s`` then ``v`` and read the reply until ``$$$``: is an OpenBCI Cyton there?"""
    import serial

    try:
        with serial.Serial(port, 115200, timeout=0.05, write_timeout=1.0) as ser:
            ser.write(b"s")
            time.sleep(0.05)
            ser.reset_input_buffer()
            ser.write(b"v")
            buf = bytearray()
            deadline = time.monotonic() + timeout_s
            while b"$$$" not in buf and time.monotonic() < deadline:
                buf += ser.read(max(1, ser.in_waiting))
    except (serial.SerialException, OSError, ValueError) as exc:
        return {"responded": False, "error": f"{type(exc).__name__}: {exc}"}
    text = bytes(buf).decode("ascii", "replace")
    if b"OpenBCI" in buf:
        kind = "openbci-cyton-daisy" if b"Daisy" in buf else "openbci-cyton"
        firmware = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Firmware")), None)
        return {"responded": True, "device": kind, "firmware": firmware}
    return {"responded": bool(buf), "device": None, "reply": text[:80]}


def discover_serial(extra_ports: Iterable[str] = (), *, probe: bool = False, probe_timeout_s: float = 1.0,
                    list_ports: Any = None) -> dict[str, Any]:
    """Serial ports with USB ids; ``extra_ports`` (ptys, configured ports) are added when they exist."""
    try:
        if list_ports is None:
            from serial.tools import list_ports as lp

            list_ports = lp.comports
        ports = [classify_port(p) for p in list_ports()]
    except Exception as exc:  # noqa: BLE001 - report, do not crash the other sections
        return {"available": False, "reason": f"{type(exc).__name__}: {exc}", "ports": []}
    seen = {p["port"] for p in ports}
    for path in extra_ports:
        if path in seen:
            continue
        seen.add(path)
        exists = os.path.exists(path)
        real = os.path.realpath(path)
        ports.append({"port": path, "usb": False, "vid": None, "pid": None,
                      "description": f"-> {real}" if real != path else None, "manufacturer": None, "product": None,
                      "serial_number": None, "location": None, "candidate": None, "exists": exists})
    if probe:
        for rec in ports:
            if rec["candidate"] or not rec["usb"]:
                if rec.get("exists", True):
                    rec["probe"] = probe_cyton(rec["port"], probe_timeout_s)
                    if rec["probe"].get("device"):
                        rec["candidate"] = rec["probe"]["device"]
    return {"available": True, "ports": ports}


def discover_lsl(wait_time: float = 1.0) -> dict[str, Any]:
    """LSL streams visible from here (``resolve_streams`` waits ``wait_time`` seconds)."""
    try:
        import pylsl

        infos = pylsl.resolve_streams(wait_time=wait_time)
    except Exception as exc:  # noqa: BLE001 - liblsl missing or failing
        return {"available": False, "reason": f"{type(exc).__name__}: {exc}", "streams": []}
    streams = [
        {"name": i.name(), "type": i.type(), "channel_count": i.channel_count(), "nominal_srate": i.nominal_srate(),
         "source_id": i.source_id(), "hostname": i.hostname(), "uid": i.uid()}
        for i in infos
    ]
    return {"available": True, "wait_s": wait_time, "streams": sorted(streams, key=lambda s: (s["name"], s["uid"]))}


def _has_bluetooth_adapter() -> bool:
    if sys.platform.startswith("linux"):
        return os.path.isdir(_BLUETOOTH_SYSFS) and bool(os.listdir(_BLUETOOTH_SYSFS))
    return True  # macOS/Windows: ask bleak


def discover_ble(timeout_s: float = 2.0, *, backend: Any = None) -> dict[str, Any]:
    """BLE devices advertising nearby; ``{"available": False, "reason": "no adapter"}`` without one.

    ``backend`` is passed to ``bleak.BleakScanner`` (a fake backend in tests);
    with it, the adapter check is skipped.
    """
    if backend is None and not _has_bluetooth_adapter():
        return {"available": False, "reason": "no adapter", "devices": []}
    try:
        from bleak import BleakScanner
    except ImportError as exc:
        return {"available": False, "reason": f"bleak not installed: {exc}", "devices": []}

    async def scan() -> list[dict[str, Any]]:
        kwargs = {"backend": backend} if backend is not None else {}
        found = await BleakScanner.discover(timeout=timeout_s, return_adv=True, **kwargs)
        out = []
        for address, (device, adv) in found.items():
            name = device.name or adv.local_name
            out.append({"address": address, "name": name, "rssi": adv.rssi,
                        "candidate": "openbci-ganglion" if name and "ganglion" in name.lower() else None})
        return sorted(out, key=lambda d: d["address"])

    try:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            devices = asyncio.run(scan())
        else:  # called from a running loop (e.g. inside an async server): scan in a helper thread
            import concurrent.futures

            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                devices = pool.submit(asyncio.run, scan()).result()
    except Exception as exc:  # noqa: BLE001 - BlueZ/D-Bus missing, adapter off, permission denied
        return {"available": False, "reason": f"{type(exc).__name__}: {exc}", "devices": []}
    return {"available": True, "devices": devices}


def discover_tcp(configured: Mapping[str, Mapping[str, Any]], timeout_s: float = 0.5) -> dict[str, Any]:
    """Configured devices with a ``host`` and numeric ``port``: reachable or not (TCP connect)."""
    out = []
    for device_id, spec in configured.items():
        host, port = spec.get("host"), spec.get("port")
        if not isinstance(host, str) or isinstance(port, bool) or not isinstance(port, int):
            continue
        t0 = time.monotonic()
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                reachable, error = True, None
        except OSError as exc:
            reachable, error = False, f"{type(exc).__name__}: {exc}"
        out.append({"id": device_id, "kind": spec.get("kind"), "host": host, "port": port, "reachable": reachable,
                    "connect_ms": round((time.monotonic() - t0) * 1e3, 2) if reachable else None, "error": error})
    return {"available": True, "devices": out}


def discover(
    *,
    serial: bool = True,
    lsl: bool = True,
    ble: bool = True,
    tcp: bool = True,
    lsl_wait_s: float = 1.0,
    ble_timeout_s: float = 2.0,
    extra_ports: Sequence[str] = (),
    probe: bool = False,
    configured: Mapping[str, Mapping[str, Any]] | None = None,
    ble_backend: Any = None,
) -> dict[str, Any]:
    """Every section at once (sections switched off are omitted).

    ``configured`` specs (id -> spec) add their serial ``port`` to ``extra_ports``
    (Cyton specs) and their ``host``/``port`` to the TCP section.
    """
    configured = dict(configured or {})
    ports = list(extra_ports) + [s["port"] for s in configured.values()
                                 if s.get("kind") == "cyton" and isinstance(s.get("port"), str)]
    t0 = time.monotonic()
    out: dict[str, Any] = {}
    if serial:
        out["serial"] = discover_serial(ports, probe=probe)
    if lsl:
        out["lsl"] = discover_lsl(lsl_wait_s)
    if ble:
        out["ble"] = discover_ble(ble_timeout_s, backend=ble_backend)
    if tcp:
        out["tcp"] = discover_tcp(configured)
    out["elapsed_s"] = round(time.monotonic() - t0, 3)
    return out


def _table(headers: Sequence[str], rows: list[Sequence[Any]]) -> list[str]:
    cells = [[("-" if v is None else str(v)) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    return lines


def format_table(result: Mapping[str, Any]) -> str:
    """Human-readable tables of a :func:`discover` result."""
    lines: list[str] = []
    titles = {"serial": ("Serial ports", "ports"), "lsl": ("LSL streams", "streams"),
              "ble": ("BLE devices", "devices"), "tcp": ("Configured TCP devices", "devices")}
    columns = {
        "serial": ("port", "vid", "pid", "candidate", "description", "serial_number"),
        "lsl": ("name", "type", "channel_count", "nominal_srate", "source_id", "hostname"),
        "ble": ("address", "name", "rssi", "candidate"),
        "tcp": ("id", "kind", "host", "port", "reachable", "connect_ms"),
    }
    for key, (title, items) in titles.items():
        if key not in result:
            continue
        section = result[key]
        if not section.get("available", True):
            lines += [f"{title}: unavailable ({section.get('reason')})", ""]
            continue
        rows = section.get(items, [])
        lines.append(f"{title}: {len(rows)}")
        if rows:
            lines += ["  " + line for line in _table(columns[key], [[r.get(c) for c in columns[key]] for r in rows])]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
