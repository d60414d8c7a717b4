"""The ``neuraflow`` command line: argument parsing and early errors (no Ray is started here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from neuraflow.cli import build_parser, main

REPO = Path(__file__).resolve().parents[2]


def test_run_arguments() -> None:
    args = build_parser().parse_args(
        ["run", "pipelines/demo.py", "--config", "configs/test.yaml", "--duration", "2.5", "--mode", "batch",
         "--no-serve"]
    )
    assert args.command == "run"
    assert args.pipeline == "pipelines/demo.py"
    assert args.config == "configs/test.yaml"
    assert args.duration == 2.5
    assert args.mode == "batch"
    assert args.no_serve is True
    assert args.func.__name__ == "cmd_run"


def test_run_defaults() -> None:
    args = build_parser().parse_args(["run", "pipelines/demo.py"])
    assert args.config is None and args.duration is None and args.mode is None and args.no_serve is False
    assert args.verbose is False


def test_replay_arguments_and_defaults() -> None:
    args = build_parser().parse_args(["-v", "replay", "rec.edf", "--pipeline", "pipelines/demo.py"])
    assert args.verbose is True
    assert args.command == "replay" and args.file == "rec.edf" and args.pipeline == "pipelines/demo.py"
    assert args.chunk_size == 256 and args.source is None and args.stream_id is None
    assert args.quiet is False and args.config is None
    assert args.func.__name__ == "cmd_replay"

    args = build_parser().parse_args(
        ["replay", "rec.bdf", "--pipeline", "p.py", "--source", "eeg", "--stream-id", "s1", "--chunk-size", "32",
         "--quiet", "--config", "c.yaml"]
    )
    assert (args.source, args.stream_id, args.chunk_size, args.quiet, args.config) == ("eeg", "s1", 32, True, "c.yaml")


def test_serve_arguments() -> None:
    args = build_parser().parse_args(["serve", "--detach"])
    assert args.command == "serve" and args.detach is True and args.config is None
    assert args.func.__name__ == "cmd_serve"


@pytest.mark.parametrize(
    "argv",
    [
        [],  # a command is required
        ["frobnicate"],
        ["replay", "rec.edf"],  # --pipeline is required
        ["run"],  # the pipeline path is required
        ["run", "p.py", "--mode", "fast"],
        ["run", "p.py", "--duration", "soon"],
        ["replay", "rec.edf", "--pipeline", "p.py", "--chunk-size", "many"],
    ],
)
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "usage: neuraflow" in capsys.readouterr().err


def test_missing_pipeline_file_exit_2_without_ray(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`run` loads (and validates) the plan before it starts the Engine, so no Ray is started.

    The unit conftest replaces ``ray.init`` with a function that raises: reaching it would fail here.
    """
    missing = tmp_path / "no_such_pipeline.py"
    code = main(["run", str(missing), "--config", str(REPO / "configs" / "test.yaml"), "--duration", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert "neuraflow: error:" in err
    assert str(missing) in err


def test_missing_pipeline_file_replay_exit_2(
    eegmmidb_edf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.py"
    code = main(["replay", str(eegmmidb_edf), "--pipeline", str(missing), "--quiet",
                 "--config", str(REPO / "configs" / "test.yaml")])
    assert code == 2
    assert str(missing) in capsys.readouterr().err


def test_missing_recording_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "rec.edf"
    code = main(["replay", str(missing), "--pipeline", str(REPO / "pipelines" / "demo.py"), "--quiet",
                 "--config", str(REPO / "configs" / "test.yaml")])
    assert code == 2
    assert str(missing) in capsys.readouterr().err


def test_missing_config_file_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.yaml"
    code = main(["run", str(REPO / "pipelines" / "demo.py"), "--config", str(missing)])
    assert code == 2
    assert str(missing) in capsys.readouterr().err


# ----------------------------------------------------------- devices against a running service
@pytest.fixture
def device_service():
    """The /devices routes of the Serve app on a real uvicorn server on 127.0.0.1 (a free port), in process."""
    import socket
    import threading
    import time

    import uvicorn
    from fastapi import FastAPI

    from neuraflow.config import NeuraflowSettings
    from neuraflow.devices.ble.fake_backend import FakeGanglion, register, unregister
    from neuraflow.devices.service import DeviceManager
    from neuraflow.serve.device_routes import register_device_routes

    board = register(FakeGanglion("C4:E1:A0:00:00:C1", speed=4.0))
    mgr = DeviceManager({
        "synth": {"kind": "synthetic", "n_channels": 2, "sfreq": 250.0, "chunk_size": 25},
        "gang": {"kind": "ganglion", "address": board.address, "backend": "fake"},
    })
    app = FastAPI()
    register_device_routes(app, NeuraflowSettings(), manager=mgr)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10.0
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}", mgr
    server.should_exit = True
    thread.join(timeout=5.0)
    mgr.close()
    unregister(board.address)


def test_devices_connect_status_impedance_disconnect_against_a_running_service(device_service, capsys):
    import json
    import time

    url, mgr = device_service
    assert main(["devices", "status", "--url", url]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("id") and "synth" in out and "disconnected" in out

    assert main(["devices", "connect", "synth", "--url", url, "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["id"] == "synth" and record["state"] in ("connecting", "connected")
    deadline = time.monotonic() + 5.0
    while mgr.status("synth")["samples"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert main(["devices", "status", "synth", "--url", url, "--json"]) == 0
    [record] = json.loads(capsys.readouterr().out)
    assert record["state"] == "connected" and record["samples"] > 0

    assert main(["devices", "connect", "gang", "--url", url]) == 0
    capsys.readouterr()
    assert main(["devices", "impedance", "gang", "--url", url, "--seconds", "0.3"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["channel", "kOhm"] and "EXG3" in out and "250.0" in out
    assert main(["devices", "impedance", "gang", "--url", url, "--seconds", "0.3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["kohm"]["REF"] == 3.3

    assert main(["devices", "disconnect", "synth", "--url", url]) == 0
    assert "disconnected" in capsys.readouterr().out
    assert mgr.status("synth")["state"] == "disconnected"


def test_devices_cli_errors_name_the_id_and_the_service(device_service, capsys):
    import socket

    url, _ = device_service
    assert main(["devices", "connect", "snyth", "--url", url]) == 1
    err = capsys.readouterr().err
    assert "no device 'snyth'" in err and "known ids: ['gang', 'synth']" in err and "Did you mean 'synth'?" in err
    assert main(["devices", "impedance", "synth", "--url", url]) == 1  # a synthetic device has no electrodes
    assert "impedance needs a cyton or ganglion device" in capsys.readouterr().err
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    assert main(["devices", "status", "--url", dead]) == 2
    err = capsys.readouterr().err
    assert f"cannot reach the device service at {dead}" in err and "neuraflow serve" in err


def test_devices_remote_arguments_and_defaults():
    args = build_parser().parse_args(["devices", "disconnect", "eeg1"])
    assert args.id == "eeg1" and args.url == "http://127.0.0.1:8000" and args.func.__name__ == "cmd_connect"
    args = build_parser().parse_args(["devices", "impedance", "g", "--seconds", "1.5", "--url", "http://h:9"])
    assert (args.seconds, args.url, args.func.__name__) == (1.5, "http://h:9", "cmd_impedance")
    assert build_parser().parse_args(["devices", "status"]).url is None  # local bench check by default
