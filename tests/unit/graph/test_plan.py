"""Plan validation (build_plan, Pipeline builder, replace_devices) and pipeline-file loading."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from neuraflow import Pipeline, devices, ops, sinks
from neuraflow.errors import PipelineDefinitionError
from neuraflow.graph.loader import available_pipelines, load_plan
from neuraflow.graph.pipeline import SOURCE_OVERRIDE
from neuraflow.graph.plan import (
    ExposeNode,
    SinkNode,
    SourceNode,
    StepNode,
    build_plan,
    derived_stream_id,
    replace_devices,
)


def synth(stream_id: str = "eeg-0", *, n_channels: int = 4, sfreq: float = 250.0, **kw) -> devices.Synthetic:
    return devices.Synthetic(stream_id, n_channels=n_channels, sfreq=sfreq, realtime=False, start_s=0.0, **kw)


def simple_pipeline(n_devices: int = 2) -> Pipeline:
    p = Pipeline("demo")
    eeg = p.source("eeg", [synth(f"eeg-{i}", seed=i) for i in range(n_devices)])
    clean = eeg.then("bp", ops.bandpass(1.0, 40.0))
    eeg.to("raw", sinks.MemorySink())
    clean.to("clean", sinks.MemorySink())
    return p


# ----------------------------------------------------------------------------- happy path


def test_valid_plan_is_topological_and_derives_stream_ids() -> None:
    plan = simple_pipeline(2).build()
    assert list(plan.nodes) == ["eeg", "bp", "raw", "clean"]
    assert [i.stream_id for i in plan.stream_infos["eeg"]] == ["eeg-0", "eeg-1"]
    assert [i.stream_id for i in plan.stream_infos["bp"]] == ["eeg-0/bp", "eeg-1/bp"]
    assert derived_stream_id("eeg-0", "bp") == "eeg-0/bp"
    assert plan.children("eeg") == ["bp", "raw"]
    assert plan.origin("clean").name == "eeg"
    assert sorted(plan.all_stream_ids()) == ["eeg-0", "eeg-0/bp", "eeg-1", "eeg-1/bp"]


def test_build_plan_sorts_hand_made_nodes_topologically() -> None:
    src = SourceNode("eeg", (synth(),))
    nodes = [
        SinkNode("out", sinks.MemorySink(), ("w",)),
        StepNode("w", ops.sliding_window(0.5, 0.1), "bp"),
        StepNode("bp", ops.bandpass(1.0, 40.0), "eeg"),
        src,
    ]
    plan = build_plan("p", nodes)
    order = list(plan.nodes)
    assert order.index("eeg") < order.index("bp") < order.index("w") < order.index("out")


# ----------------------------------------------------------------------------- errors


def test_empty_plan_is_rejected() -> None:
    with pytest.raises(PipelineDefinitionError, match="no nodes"):
        build_plan("p", [])
    with pytest.raises(PipelineDefinitionError, match="no nodes"):
        Pipeline("p").build()


def test_duplicate_step_names_builder() -> None:
    p = Pipeline("p")
    eeg = p.source("eeg", synth())
    eeg.then("bp", ops.bandpass(1.0, 40.0))
    with pytest.raises(PipelineDefinitionError, match="'bp' is used twice"):
        eeg.then("bp", ops.notch(50.0))


def test_duplicate_step_names_build_plan() -> None:
    nodes = [
        SourceNode("eeg", (synth(),)),
        StepNode("x", ops.bandpass(1.0, 40.0), "eeg"),
        StepNode("x", ops.notch(50.0), "eeg"),
        SinkNode("out", sinks.MemorySink(), ("x",)),
    ]
    with pytest.raises(PipelineDefinitionError, match="'x' is used twice"):
        build_plan("p", nodes)


def test_cycle_is_rejected_with_path() -> None:
    nodes = [
        SourceNode("eeg", (synth(),)),
        StepNode("a", ops.bandpass(1.0, 40.0), "b"),
        StepNode("b", ops.notch(50.0), "a"),
        SinkNode("out", sinks.MemorySink(), ("a", "eeg")),
    ]
    with pytest.raises(PipelineDefinitionError, match="cycle") as exc:
        build_plan("p", nodes)
    msg = str(exc.value)
    assert "a -> b -> a" in msg or "b -> a -> b" in msg


def test_self_loop_is_a_cycle() -> None:
    nodes = [
        SourceNode("eeg", (synth(),)),
        StepNode("a", ops.bandpass(1.0, 40.0), "a"),
        SinkNode("out", sinks.MemorySink(), ("a", "eeg")),
    ]
    with pytest.raises(PipelineDefinitionError, match="cycle: a -> a"):
        build_plan("p", nodes)


def test_missing_input_is_rejected() -> None:
    nodes = [
        SourceNode("eeg", (synth(),)),
        StepNode("bp", ops.bandpass(1.0, 40.0), "nope"),
        SinkNode("out", sinks.MemorySink(), ("bp", "eeg")),
    ]
    with pytest.raises(PipelineDefinitionError, match="step 'bp': input 'nope' is not a node"):
        build_plan("p", nodes)


def test_branch_without_sink_is_rejected() -> None:
    p = Pipeline("p")
    eeg = p.source("eeg", synth())
    eeg.to("raw", sinks.MemorySink())
    eeg.then("bp", ops.bandpass(1.0, 40.0)).then("w", ops.sliding_window(0.5, 0.1))
    with pytest.raises(PipelineDefinitionError, match="branch ending at 'w' has no sink"):
        p.build()


def test_source_without_consumer_is_rejected() -> None:
    p = Pipeline("p")
    p.source("eeg", synth())
    with pytest.raises(PipelineDefinitionError, match="branch ending at 'eeg' has no sink"):
        p.build()


def test_sink_feeding_a_sink_is_rejected() -> None:
    p = Pipeline("p")
    eeg = p.source("eeg", synth())
    first = eeg.to("first", sinks.MemorySink())
    p.sink("second", sinks.MemorySink(), first)
    with pytest.raises(PipelineDefinitionError, match="step 'second': a sink or exposed output cannot feed"):
        p.build()


def test_sink_feeding_an_expose_is_rejected() -> None:
    nodes = [
        SourceNode("eeg", (synth(),)),
        SinkNode("raw", sinks.MemorySink(), ("eeg",)),
        ExposeNode("live", "raw", "/live"),
    ]
    with pytest.raises(PipelineDefinitionError, match="cannot feed another node"):
        build_plan("p", nodes)


def test_sink_feeding_a_step_is_rejected() -> None:
    """``sink_stream.then(...)``: a step whose input is a sink is a PipelineDefinitionError."""
    p = Pipeline("p")
    eeg = p.source("eeg", synth())
    raw = eeg.to("raw", sinks.MemorySink())
    raw.then("bp", ops.bandpass(1.0, 40.0)).to("clean", sinks.MemorySink())
    with pytest.raises(PipelineDefinitionError, match="cannot feed another node"):
        p.build()


def test_duplicate_stream_ids_across_devices_of_one_source() -> None:
    p = Pipeline("p")
    p.source("eeg", [synth("same", seed=0), synth("same", seed=1)]).to("raw", sinks.MemorySink())
    with pytest.raises(PipelineDefinitionError, match="stream id 'same' is produced by both 'eeg' and 'eeg'"):
        p.build()


def test_duplicate_stream_ids_across_sources() -> None:
    p = Pipeline("p")
    a = p.source("a", synth("dev"))
    b = p.source("b", synth("dev"))
    a.to("raw", sinks.MemorySink())
    b.to("raw")
    with pytest.raises(PipelineDefinitionError, match="stream id 'dev' is produced by both 'a' and 'b'"):
        p.build()


def test_derived_stream_id_colliding_with_a_device_id() -> None:
    p = Pipeline("p")
    a = p.source("a", synth("x"))
    b = p.source("b", synth("x/bp"))
    a.then("bp", ops.bandpass(1.0, 40.0)).to("raw", sinks.MemorySink())
    b.to("raw")
    with pytest.raises(PipelineDefinitionError, match="stream id 'x/bp'"):
        p.build()


def test_duplicate_routes_are_rejected() -> None:
    p = Pipeline("p")
    eeg = p.source("eeg", synth())
    p.expose("live1", eeg, route="/live")
    p.expose("live2", eeg.then("bp", ops.bandpass(1.0, 40.0)), route="/live")
    with pytest.raises(PipelineDefinitionError, match="exposed routes must be unique"):
        p.build()


def test_route_must_start_with_slash() -> None:
    p = Pipeline("p")
    eeg = p.source("eeg", synth())
    with pytest.raises(PipelineDefinitionError, match="must start with '/'"):
        p.expose("live", eeg, route="live")


def test_bandpass_above_nyquist_names_step_value_and_limit() -> None:
    p = Pipeline("p")
    eeg = p.source("eeg", synth(sfreq=250.0))
    eeg.then("clean", ops.bandpass(1.0, 200.0)).to("out", sinks.MemorySink())
    with pytest.raises(PipelineDefinitionError) as exc:
        p.build()
    msg = str(exc.value)
    assert "'clean'" in msg  # the step
    assert "200.0" in msg  # the value
    assert "125.0" in msg  # the Nyquist limit
    assert "h_freq" in msg


def test_source_without_devices_is_rejected() -> None:
    nodes = [SourceNode("eeg", ()), SinkNode("out", sinks.MemorySink(), ("eeg",))]
    with pytest.raises(PipelineDefinitionError, match="source 'eeg' has no devices"):
        build_plan("p", nodes)


@pytest.mark.parametrize("name", ["", "1abc", "has space", "a/b", "_x", "a" * 65, "ümlaut", None, 3])
def test_invalid_pipeline_names(name) -> None:
    with pytest.raises(PipelineDefinitionError, match="name .* is invalid"):
        Pipeline(name)


@pytest.mark.parametrize("name", ["", "1abc", "has space", "a.b", "a" * 65])
def test_invalid_node_names(name) -> None:
    p = Pipeline("p")
    with pytest.raises(PipelineDefinitionError, match="source name"):
        p.source(name, synth())
    eeg = p.source("eeg", synth())
    with pytest.raises(PipelineDefinitionError, match="step name"):
        eeg.then(name, ops.bandpass(1.0, 40.0))
    with pytest.raises(PipelineDefinitionError, match="sink name"):
        eeg.to(name, sinks.MemorySink())
    with pytest.raises(PipelineDefinitionError, match="expose name"):
        p.expose(name, eeg, route="/x")


@pytest.mark.parametrize("name", ["a", "A-b_c9", "x" * 64])
def test_valid_names(name) -> None:
    p = Pipeline(name)
    p.source(name, synth()).to(name + "s" if len(name) < 64 else "sink", sinks.MemorySink())
    assert p.build().name == name


def test_then_rejects_non_op_and_source_rejects_non_device() -> None:
    p = Pipeline("p")
    with pytest.raises(PipelineDefinitionError, match="is not a device"):
        p.source("eeg", object())
    eeg = p.source("eeg", synth())
    with pytest.raises(PipelineDefinitionError, match="expected an op"):
        eeg.then("bp", lambda c: c)  # type: ignore[arg-type]
    with pytest.raises(PipelineDefinitionError, match=r"has no open\(\) method"):
        eeg.to("out", object())  # type: ignore[arg-type]
    with pytest.raises(PipelineDefinitionError, match="does not exist yet"):
        eeg.to("out")


# ----------------------------------------------------------------------------- Stream.infos


def test_stream_infos_per_device_and_after_steps() -> None:
    p = Pipeline("p")
    eeg = p.source("eeg", [synth("a", n_channels=3), synth("b", n_channels=5)])
    assert [i.n_channels for i in eeg.infos] == [3, 5]
    assert [i.stream_id for i in eeg.infos] == ["a", "b"]
    bands = {"alpha": (8.0, 13.0), "beta": (13.0, 30.0)}
    power = eeg.then("w", ops.sliding_window(1.0, 0.5)).then("bpow", ops.log_band_power(bands))
    assert [i.n_channels for i in power.infos] == [3 * 2, 5 * 2]
    sink = power.to("out", sinks.MemorySink())
    plan = p.build()
    assert [i.channels for i in power.infos] == [i.channels for i in plan.stream_infos["bpow"]]
    assert [i.sfreq for i in power.infos] == [i.sfreq for i in plan.stream_infos["bpow"]]
    with pytest.raises(PipelineDefinitionError, match="has no output streams"):
        sink.infos


def test_stream_infos_reports_op_errors_with_step_name() -> None:
    p = Pipeline("p")
    eeg = p.source("eeg", synth(sfreq=100.0, line_freq=None))
    bad = eeg.then("lp", ops.bandpass(None, 60.0))
    with pytest.raises(PipelineDefinitionError, match="step 'lp': h_freq=60.0 must be below Nyquist"):
        bad.infos


# ----------------------------------------------------------------------------- replace_devices


def test_replace_devices_rebuilds_infos() -> None:
    plan = simple_pipeline(2).build()
    new = replace_devices(plan, "eeg", [synth("file-0", n_channels=6), synth("file-1", n_channels=6),
                                        synth("file-2", n_channels=6)])
    assert [i.stream_id for i in new.stream_infos["bp"]] == ["file-0/bp", "file-1/bp", "file-2/bp"]
    assert all(i.n_channels == 6 for i in new.stream_infos["eeg"])
    assert list(new.nodes) == list(plan.nodes)
    # the original plan is untouched
    assert [i.stream_id for i in plan.stream_infos["eeg"]] == ["eeg-0", "eeg-1"]


def test_replace_devices_revalidates() -> None:
    plan = simple_pipeline(1).build()
    with pytest.raises(PipelineDefinitionError, match="step 'bp': h_freq=40.0 must be below Nyquist"):
        replace_devices(plan, "eeg", [synth("slow", sfreq=60.0, line_freq=None, alpha_amplitude_v=0.0)])
    with pytest.raises(PipelineDefinitionError, match="stream id 'dup'"):
        replace_devices(plan, "eeg", [synth("dup"), synth("dup")])
    with pytest.raises(PipelineDefinitionError, match="source 'eeg' has no devices"):
        replace_devices(plan, "eeg", [])


def test_replace_devices_of_a_non_source() -> None:
    plan = simple_pipeline(1).build()
    with pytest.raises(PipelineDefinitionError, match=r"'bp' is not a source; sources are \['eeg'\]"):
        replace_devices(plan, "bp", [synth()])
    with pytest.raises(PipelineDefinitionError, match="'nope' is not a source"):
        replace_devices(plan, "nope", [synth()])


# ----------------------------------------------------------------------------- load_plan

PIPELINE_FILE = """
from neuraflow import Pipeline, devices, ops, sinks

def build(settings):
    p = Pipeline("fromfile")
    eeg = p.source("eeg", [devices.Synthetic(f"eeg-{i}", n_channels=4, realtime=False, seed=i) for i in range(2)])
    other = p.source("aux", devices.Synthetic("aux-0", n_channels=2, realtime=False))
    width = eeg.infos[0].n_channels
    eeg.then("bp", ops.bandpass(1.0, 40.0)).to("clean", sinks.MemorySink())
    other.to("raw", sinks.MemorySink())
    eeg.to("raw")
    p.seen_width = width
    return p
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_load_plan_builds_the_plan(tmp_path: Path) -> None:
    plan = load_plan(write(tmp_path, "good.py", PIPELINE_FILE), settings=None)
    assert plan.name == "fromfile"
    assert [i.stream_id for i in plan.stream_infos["eeg"]] == ["eeg-0", "eeg-1"]
    assert [i.stream_id for i in plan.stream_infos["bp"]] == ["eeg-0/bp", "eeg-1/bp"]


def test_load_plan_passes_settings(tmp_path: Path) -> None:
    path = write(tmp_path, "settings_pipe.py", """
        from neuraflow import Pipeline, devices, sinks

        def build(settings):
            p = Pipeline(settings["name"])
            p.source("eeg", devices.Synthetic("s", realtime=False)).to("raw", sinks.MemorySink())
            return p
    """)
    assert load_plan(path, {"name": "custom"}).name == "custom"


def test_load_plan_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PipelineDefinitionError, match="does not exist"):
        load_plan(tmp_path / "nope.py", settings=None)
    with pytest.raises(PipelineDefinitionError, match="does not exist"):
        load_plan(tmp_path, settings=None)  # a directory is not a pipeline file


def test_load_plan_missing_build(tmp_path: Path) -> None:
    path = write(tmp_path, "nobuild.py", "x = 1\n")
    with pytest.raises(PipelineDefinitionError, match=r"must define build\(settings\) -> Pipeline"):
        load_plan(path, settings=None)
    path = write(tmp_path, "notcallable.py", "build = 3\n")
    with pytest.raises(PipelineDefinitionError, match="must define build"):
        load_plan(path, settings=None)


def test_load_plan_wrong_return_type(tmp_path: Path) -> None:
    path = write(tmp_path, "wrong.py", """
        from neuraflow import Pipeline, devices, sinks

        def build(settings):
            p = Pipeline("p")
            p.source("eeg", devices.Synthetic("s", realtime=False)).to("raw", sinks.MemorySink())
            return p.build()   # a LogicalPlan, not a Pipeline
    """)
    with pytest.raises(PipelineDefinitionError, match="build\\(\\) returned LogicalPlan, expected neuraflow.Pipeline"):
        load_plan(path, settings=None)


def test_load_plan_reports_definition_errors_of_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.py", """
        from neuraflow import Pipeline, devices, ops, sinks

        def build(settings):
            p = Pipeline("p")
            eeg = p.source("eeg", devices.Synthetic("s", sfreq=100.0, line_freq=None, realtime=False))
            eeg.then("bp", ops.bandpass(1.0, 70.0)).to("out", sinks.MemorySink())
            return p
    """)
    with pytest.raises(PipelineDefinitionError, match="step 'bp': h_freq=70.0 must be below Nyquist"):
        load_plan(path, settings=None)


def test_load_plan_does_not_leave_the_module_in_sys_modules(tmp_path: Path) -> None:
    import sys

    load_plan(write(tmp_path, "leak.py", PIPELINE_FILE), settings=None)
    assert not any(name.startswith("neuraflow_user_pipeline_leak") for name in sys.modules)


def test_replace_first_source_overrides_only_the_first_source(tmp_path: Path) -> None:
    path = write(tmp_path, "replay.py", PIPELINE_FILE)
    replay = [synth("file-0", n_channels=7), synth("file-1", n_channels=7), synth("file-2", n_channels=7)]
    plan = load_plan(path, settings=None, replace_first_source=replay)
    assert plan.nodes["eeg"].devices == tuple(replay)
    assert [i.stream_id for i in plan.stream_infos["bp"]] == ["file-0/bp", "file-1/bp", "file-2/bp"]
    assert all(i.n_channels == 7 for i in plan.stream_infos["bp"])
    # the second source keeps its own device
    assert [i.stream_id for i in plan.stream_infos["aux"]] == ["aux-0"]
    # the override is reset once build() returned
    assert SOURCE_OVERRIDE.get() is None


def test_replace_first_source_is_sized_during_build(tmp_path: Path) -> None:
    """What build() reads from ``infos`` already sees the replacement devices."""
    path = write(tmp_path, "sized.py", """
        import numpy as np
        from neuraflow import Pipeline, devices, ops, sinks

        def build(settings):
            p = Pipeline("sized")
            eeg = p.source("eeg", devices.Synthetic("live", n_channels=4, realtime=False))
            n = eeg.infos[0].n_channels
            w = np.zeros((2, n), dtype=np.float32)
            eeg.then("clf", ops.onnx_model(ops.logistic_regression_onnx(w, np.zeros(2)))).to("out", sinks.MemorySink())
            return p
    """)
    plan = load_plan(path, settings=None, replace_first_source=[synth("file", n_channels=9)])
    assert plan.stream_infos["eeg"][0].n_channels == 9
    assert plan.stream_infos["clf"][0].stream_id == "file/clf"


def test_source_override_reset_when_build_raises(tmp_path: Path) -> None:
    path = write(tmp_path, "raises.py", "def build(settings):\n    raise RuntimeError('boom')\n")
    with pytest.raises(RuntimeError, match="boom"):
        load_plan(path, settings=None, replace_first_source=[synth()])
    assert SOURCE_OVERRIDE.get() is None


def test_source_override_contextvar_in_builder() -> None:
    token = SOURCE_OVERRIDE.set((synth("over"),))
    try:
        p = Pipeline("p")
        first = p.source("first", synth("orig"))
        second = p.source("second", synth("orig2"))
        first.to("raw", sinks.MemorySink())
        second.to("raw")
    finally:
        SOURCE_OVERRIDE.reset(token)
    plan = p.build()
    assert [i.stream_id for i in plan.stream_infos["first"]] == ["over"]
    assert [i.stream_id for i in plan.stream_infos["second"]] == ["orig2"]


def test_available_pipelines(tmp_path: Path) -> None:
    write(tmp_path, "a.py", "")
    write(tmp_path, "_private.py", "")
    write(tmp_path, "notes.txt", "")
    assert list(available_pipelines(tmp_path)) == ["a"]
    assert available_pipelines(tmp_path / "missing") == {}
