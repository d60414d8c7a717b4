"""Device discovery, DeviceManager, impedance and /devices through Ray, against the Cyton emulator on a
pty and a real LSL outlet on loopback (LSLAPICFG, as in test_lsl.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_CFG = Path(tempfile.mkdtemp(prefix="neuraflow-lsl-")) / "lsl_api.cfg"
_CFG.write_text("[ports]\nIPv6 = disable\n\n[multicast]\nResolveScope = machine\nKnownPeers = {127.0.0.1}\n")
os.environ.setdefault("LSLAPICFG", str(_CFG))  # liblsl reads it once per process: keep test_lsl.py's if first

import pytest  # noqa: E402

from neuraflow.devices.discovery import discover, discover_lsl, discover_serial  # noqa: E402
from neuraflow.devices.impedance import measure_impedance  # noqa: E402
from neuraflow.devices.openbci import CytonOptions, OpenBCICyton  # noqa: E402
from neuraflow.devices.openbci.emulator import CytonEmulator  # noqa: E402
from neuraflow.devices.service import DeviceManager  # noqa: E402
from neuraflow.runtime.slot import SlotOptions  # noqa: E402

HELPER = Path(__file__).with_name("lsl_helpers.py")
FAST = {"banner_timeout_s": 1.0, "stall_timeout_s": 0.3}
IMPEDANCES_KOHM = [5.0, 20.0, 100.0, 10.0, 50.0, 2.0, 200.0, 10.0]


def wait_for(predicate, timeout_s: float = 10.0, poll_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"condition not met within {timeout_s} s")


def test_pty_is_listed_and_probed_as_a_cyton():
    with CytonEmulator() as emu:
        result = discover_serial([emu.port], probe=True, probe_timeout_s=1.0)
        rec = next(p for p in result["ports"] if p["port"] == emu.port)
        assert rec["usb"] is False and rec["vid"] is None  # a pty is not USB: no VID/PID
        assert rec["probe"]["device"] == "openbci-cyton" and rec["probe"]["firmware"] == "v3.1.2"
        assert rec["candidate"] == "openbci-cyton"
        assert emu.commands[:2] == [b"s", b"v"] and not emu.streaming


def test_lsl_stream_is_discovered():
    name = f"nf-discover-{os.getpid()}"
    env = dict(os.environ, LSLAPICFG=os.environ["LSLAPICFG"])
    proc = subprocess.Popen([sys.executable, str(HELPER), "outlet", name, "3", "250", "30"], stdout=subprocess.PIPE,
                            text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "ready"
        t0 = time.monotonic()
        found = discover_lsl(wait_time=0.5)
        elapsed = time.monotonic() - t0
        streams = {s["name"]: s for s in found["streams"]}
        assert found["available"] and name in streams, found
        assert streams[name]["channel_count"] == 3 and streams[name]["nominal_srate"] == 250.0
        assert streams[name]["type"] == "EEG" and elapsed < 2.0
        full = discover(lsl_wait_s=0.5, ble_timeout_s=0.1, configured={"c": {"kind": "cyton", "port": "/x/tty"}})
        assert name in {s["name"] for s in full["lsl"]["streams"]}
        assert any(p["port"] == "/x/tty" for p in full["serial"]["ports"])
        assert "ble" in full and (full["ble"]["available"] or full["ble"]["reason"])
    finally:
        proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()


def test_manager_health_record_and_reconnects():
    with CytonEmulator() as emu:
        opts = SlotOptions(reconnect_initial_s=0.05, reconnect_max_s=0.2)
        with DeviceManager({"cyton": {"kind": "cyton", "port": emu.port, "options": FAST}}, slot_options=opts) as mgr:
            assert mgr.status("cyton")["state"] == "disconnected"
            mgr.connect("cyton")
            rec = wait_for(lambda: (r := mgr.status("cyton"))["samples"] >= 750 and r)  # 3 s at 250 Hz
            assert rec["state"] == "connected" and rec["nominal_sfreq"] == 250.0
            assert rec["measured_sfreq"] == pytest.approx(250.0, rel=0.05), rec["measured_sfreq"]
            assert rec["drops"] == 0 and rec["reconnects"] == 0 and rec["errors"] == 0
            assert rec["last_sample_age_s"] < 0.5
            assert rec["quality"]["score"] is not None and set(rec["quality"]["channels"]) == {
                f"EXG{i}" for i in range(1, 9)}
            emu.drop_packets(5)
            wait_for(lambda: mgr.status("cyton")["drops"] >= 5, 3.0)
            emu.disconnect()  # USB unplugged
            wait_for(lambda: mgr.status("cyton")["state"] == "reconnecting", 3.0)
            emu.start()  # plugged back in behind the same port path
            rec = wait_for(lambda: (r := mgr.status("cyton"))["reconnects"] >= 1 and r["state"] == "connected" and r)
            samples = rec["samples"]
            wait_for(lambda: mgr.status("cyton")["samples"] > samples + 100, 3.0)
            assert rec["errors"] >= 1 and rec["last_error"]
            rec = mgr.disconnect("cyton")
            assert rec["state"] == "disconnected" and rec["samples"] >= samples
            assert not emu.streaming or wait_for(lambda: not emu.streaming, 2.0)


def test_impedance_through_emulator():
    with CytonEmulator(impedance_kohm=IMPEDANCES_KOHM, speed=5.0) as emu:
        dev = OpenBCICyton(emu.port, options=CytonOptions(**FAST))
        kohm = measure_impedance(dev, seconds=2.0)
        assert list(kohm) == [f"EXG{i}" for i in range(1, 9)]
        for (name, got), want in zip(kohm.items(), IMPEDANCES_KOHM):
            if want >= 5.0:
                assert got == pytest.approx(want, rel=0.05), (name, got, want)
            else:
                assert got == pytest.approx(want, abs=0.5), (name, got, want)
        assert dev._ser is None and not emu.lead_off  # left closed, drive off
        assert b"z110Z" in emu.commands and b"z100Z" in emu.commands

        with DeviceManager({"c": {"kind": "cyton", "port": emu.port, "options": FAST}}) as mgr:
            mgr.connect("c")
            wait_for(lambda: mgr.status("c")["samples"] > 100)
            kohm = mgr.impedance("c", seconds=2.0, channels=[1, 3])
            assert kohm["EXG1"] == pytest.approx(5.0, rel=0.05) and kohm["EXG3"] == pytest.approx(100.0, rel=0.05)
            rec = mgr.status("c")
            assert rec["impedance_kohm"] == kohm
            samples = rec["samples"]
            wait_for(lambda: (r := mgr.status("c"))["state"] == "connected" and r["samples"] > samples + 100)


def test_devices_route_through_the_ray_actor(ray_local, settings):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from neuraflow.serve.device_routes import device_actor, register_device_routes

    app = FastAPI()
    register_device_routes(app, settings)
    actor = device_actor(settings.ray.namespace)
    try:
        with TestClient(app) as client:
            assert client.get("/devices").json() == []
            r = client.post("/devices/synth", json={"kind": "synthetic", "n_channels": 2, "chunk_size": 25})
            assert r.status_code == 201, r.text
            assert client.post("/devices/synth", json={"kind": "synthetic", "sfreq": -1}).status_code == 422
            r = client.post("/devices/synth", params={"replace": True}, json={"kind": "synthetic", "sfreq": -1})
            assert r.status_code == 422 and r.json()["detail"]["field"] == "sfreq"  # validated in the actor
            assert client.get("/devices/missing").status_code == 404
            assert client.post("/devices/synth/connect").status_code == 200
            rec = wait_for(lambda: (r := client.get("/devices").json()[0])["samples"] >= 500 and r)
            assert rec["id"] == "synth" and rec["state"] == "connected"
            assert rec["measured_sfreq"] == pytest.approx(250.0, rel=0.1)
            assert client.post("/devices/synth/disconnect").json()["state"] == "disconnected"
    finally:
        import ray

        ray.kill(actor)
