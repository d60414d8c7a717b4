"""Discovery without hardware: VID/PID classification, BLE without an adapter, TCP, tables; /devices routes
(validation and 404) on an in-process DeviceManager."""

from __future__ import annotations

import socket

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from serial.tools.list_ports_common import ListPortInfo

from neuraflow.config import NeuraflowSettings
from neuraflow.devices import discovery
from neuraflow.devices.service import DeviceManager, SpecError, build_device
from neuraflow.serve.device_routes import register_device_routes


def _port(device, vid=None, pid=None, **attrs):
    p = ListPortInfo(device, skip_link_detection=True)
    p.vid, p.pid = vid, pid
    for k, v in attrs.items():
        setattr(p, k, v)
    return p


def test_vid_pid_classification():
    ports = [
        _port("/dev/ttyUSB0", 0x0403, 0x6015, serial_number="DM01MV82", description="FT231X USB UART"),
        _port("/dev/ttyUSB1", 0x0403, 0x6001, description="FT232R USB UART"),  # FTDI, not the OpenBCI dongle
        _port("/dev/ttyACM0", 0x2341, 0x0043),
        _port("/dev/ttyS0"),
    ]
    result = discovery.discover_serial(["/nonexistent/tty"], list_ports=lambda: ports)
    by_port = {p["port"]: p for p in result["ports"]}
    assert by_port["/dev/ttyUSB0"]["candidate"] == "openbci-cyton"
    assert by_port["/dev/ttyUSB0"]["vid"] == "0x0403" and by_port["/dev/ttyUSB0"]["pid"] == "0x6015"
    assert by_port["/dev/ttyUSB0"]["serial_number"] == "DM01MV82"
    assert [by_port[p]["candidate"] for p in ("/dev/ttyUSB1", "/dev/ttyACM0", "/dev/ttyS0")] == [None] * 3
    assert by_port["/dev/ttyS0"]["usb"] is False and by_port["/dev/ttyS0"]["vid"] is None
    assert by_port["/nonexistent/tty"]["exists"] is False
    table = discovery.format_table({"serial": result})
    assert "openbci-cyton" in table and "0x6015" in table


def test_serial_listing_failure_is_reported():
    def boom():
        raise OSError("no /sys")

    assert discovery.discover_serial(list_ports=boom) == {"available": False, "reason": "OSError: no /sys", "ports": []}


def test_ble_without_adapter_does_not_touch_bleak(monkeypatch, tmp_path):
    monkeypatch.setattr(discovery, "_BLUETOOTH_SYSFS", str(tmp_path / "none"))
    monkeypatch.setattr(discovery.sys, "platform", "linux")
    assert discovery.discover_ble(0.1) == {"available": False, "reason": "no adapter", "devices": []}
    assert "BLE devices: unavailable (no adapter)" in discovery.format_table({"ble": discovery.discover_ble(0.1)})


def test_ble_backend_failure_is_reported():
    class BrokenBackend:  # bleak instantiates the backend; BlueZ missing looks like this
        def __init__(self, *args, **kwargs):
            raise FileNotFoundError("no D-Bus socket")

    result = discovery.discover_ble(0.1, backend=BrokenBackend)
    assert result["available"] is False and "no D-Bus socket" in result["reason"]


def test_tcp_devices_reachability():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    closed_port = free.getsockname()[1]
    free.close()
    try:
        result = discovery.discover_tcp({
            "up": {"kind": "tcp", "host": "127.0.0.1", "port": server.getsockname()[1]},
            "down": {"kind": "tcp", "host": "127.0.0.1", "port": closed_port},
            "serial": {"kind": "cyton", "port": "/dev/ttyUSB0"},  # not TCP: skipped
        }, timeout_s=0.5)
    finally:
        server.close()
    by_id = {d["id"]: d for d in result["devices"]}
    assert set(by_id) == {"up", "down"}
    assert by_id["up"]["reachable"] is True and by_id["down"]["reachable"] is False


@pytest.mark.parametrize("spec, field", [
    ({"port": "/dev/ttyUSB0"}, "kind"),
    ({"kind": "cytom", "port": "/dev/ttyUSB0"}, "kind"),
    ({"kind": "cyton"}, "port"),
    ({"kind": "cyton", "port": "/dev/ttyUSB0", "gian": 24}, "gian"),
    ({"kind": "cyton", "port": "/dev/ttyUSB0", "gain": 5}, "gain"),
    ({"kind": "cyton", "port": "/dev/ttyUSB0", "options": {"baud": 9600}}, "options"),
    ({"kind": "synthetic", "sfreq": -250.0}, "sfreq"),
    ({"kind": "lsl"}, "name"),
])
def test_invalid_specs_name_the_field(spec, field):
    with pytest.raises(SpecError) as err:
        build_device(spec)
    assert err.value.field == field


@pytest.fixture
def client():
    mgr = DeviceManager({"synth": {"kind": "synthetic", "n_channels": 2, "sfreq": 250.0, "chunk_size": 25}})
    app = FastAPI()
    register_device_routes(app, NeuraflowSettings(), manager=mgr)
    with TestClient(app) as c:
        yield c
    mgr.close()


def test_routes_validation_and_404(client):
    assert [d["id"] for d in client.get("/devices").json()] == ["synth"]
    for method, path in (("get", "/devices/nope"), ("post", "/devices/nope/connect"),
                         ("post", "/devices/nope/disconnect"), ("post", "/devices/nope/impedance"),
                         ("delete", "/devices/nope")):
        r = getattr(client, method)(path)
        assert r.status_code == 404, (method, path, r.text)
        assert "nope" in r.json()["detail"]
    r = client.post("/devices/c1", json={"kind": "cyton", "prot": "/dev/ttyUSB0"})
    assert r.status_code == 422 and r.json()["detail"]["field"] == "prot"
    r = client.post("/devices/c1", json={"kind": "cyton", "port": "/dev/ttyUSB0", "gain": 3})
    assert r.status_code == 422 and r.json()["detail"]["field"] == "gain"
    assert client.post("/devices/c1", json=[1, 2]).status_code == 422
    assert client.post("/devices/synth/impedance").status_code == 422  # not a cyton
    assert client.post("/devices/synth/impedance?seconds=0").status_code == 422
    r = client.post("/devices/c1", json={"kind": "cyton", "port": "/dev/ttyUSB0"})
    assert r.status_code == 201 and r.json()["state"] == "disconnected"
    assert client.post("/devices/c1", json={"kind": "cyton", "port": "/dev/ttyUSB0"}).status_code == 422  # exists
    assert client.delete("/devices/c1").json() == {"id": "c1", "removed": True}


def test_routes_connect_status_disconnect(client):
    import time

    assert client.post("/devices/synth/connect").json()["state"] in ("connecting", "connected")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        rec = client.get("/devices/synth").json()
        if rec["samples"] >= 400 and rec["measured_sfreq"]:
            break
        time.sleep(0.1)
    assert rec["state"] == "connected" and rec["nominal_sfreq"] == 250.0
    assert rec["measured_sfreq"] == pytest.approx(250.0, rel=0.25)
    assert rec["last_sample_age_s"] < 1.0 and rec["quality"]["score"] is not None
    assert client.post("/devices/synth/disconnect").json()["state"] == "disconnected"
    r = client.get("/devices/discover", params={"lsl": False, "ble": False, "serial": False})
    assert r.status_code == 200 and "tcp" in r.json() and "lsl" not in r.json()
