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
