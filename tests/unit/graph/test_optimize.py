"""Plan rewrites keep every output (within float32 tolerance) and apply only where safe."""

from __future__ import annotations

import numpy as np

from neuraflow import Pipeline, devices, ops, sinks
from neuraflow.graph.optimize import optimize
from neuraflow.runtime.local import run_local

BANDS = {"alpha": (8.0, 13.0), "beta": (13.0, 30.0)}


def _pipeline(*, window_also_stored: bool = False) -> Pipeline:
    p = Pipeline("opt")
    devs = [devices.Synthetic(f"s{i}", n_channels=4, sfreq=250.0, chunk_size=25, seed=i, realtime=False)
            for i in range(2)]
    clean = p.source("eeg", devs).then("bandpass", ops.bandpass(1.0, 40.0))
    window = clean.then("window", ops.sliding_window(1.0, 0.2))
    window.then("power", ops.log_band_power(BANDS)).to("mem", sinks.MemorySink())
    if window_also_stored:
        window.to("mem")
    return p


def assert_same_outputs(plan, fused, stream_id: str, *, min_chunks: int, rtol: float, atol: float,
                        relative_atol: bool = False) -> None:
    """``fused`` stores the same chunks of ``stream_id`` in sink ``mem`` as the unoptimised ``plan``."""
    a = run_local(plan, duration_s=0.3, optimize=False).call_sink("mem", "chunks", stream_id)
    b = run_local(fused, duration_s=0.3).call_sink("mem", "chunks", stream_id)
    n = min(len(a), len(b))
    assert n > min_chunks
    for x, y in zip(a[:n], b[:n]):
        assert (x.seq, x.t0_s, x.channels) == (y.seq, y.t0_s, y.channels)
        scale = np.abs(x.data).max() if relative_atol else 1.0
        np.testing.assert_allclose(x.data, y.data, rtol=rtol, atol=atol * scale)


def test_window_band_power_becomes_one_sliding_dft_step_with_equal_outputs() -> None:
    plan = _pipeline().build()
    fused = optimize(plan)
    assert "window" not in fused.nodes and fused.nodes["power"].op.kind == "sliding_band_power"
    assert fused.stream_infos["power"] == plan.stream_infos["power"]
    assert_same_outputs(plan, fused, "s1/power", min_chunks=20, rtol=1e-5, atol=1e-6)


def test_window_consumed_elsewhere_is_left_alone() -> None:
    plan = _pipeline(window_also_stored=True).build()
    assert optimize(plan) is plan


def _filter_chain(*, notch_also_stored: bool = False):
    p = Pipeline("sos")
    devs = [devices.Synthetic(f"s{i}", n_channels=4, sfreq=250.0, chunk_size=25, seed=i, realtime=False)
            for i in range(2)]
    notched = p.source("eeg", devs).then("notch", ops.notch(50.0))
    clean = notched.then("bandpass", ops.bandpass(1.0, 40.0)).then("dc", ops.dc_block(0.5))
    clean.then("window", ops.sliding_window(0.4, 0.4)).to("mem", sinks.MemorySink())
    if notch_also_stored:
        notched.to("mem")
    return p.build()


def test_consecutive_filters_become_one_cascade_with_equal_outputs() -> None:
    plan = _filter_chain()
    fused = optimize(plan)
    assert "notch" not in fused.nodes and "bandpass" not in fused.nodes
    dc = fused.nodes["dc"]
    assert dc.op.kind == "sos_cascade" and dc.input == "eeg"
    assert [s["kind"] for s in dc.op.params["stages"]] == ["notch", "bandpass", "dc_block"]
    assert fused.stream_infos["dc"] == plan.stream_infos["dc"]
    # the chain rounds to float32 between its steps, the cascade does not
    assert_same_outputs(plan, fused, "s1/window", min_chunks=10, rtol=1e-4, atol=1e-5, relative_atol=True)


def test_a_filter_feeding_something_else_ends_the_cascade() -> None:
    fused = optimize(_filter_chain(notch_also_stored=True))
    assert fused.nodes["notch"].op.kind == "notch"  # its stream is stored: kept
    assert "bandpass" not in fused.nodes
    assert fused.nodes["dc"].op.kind == "sos_cascade" and fused.nodes["dc"].input == "notch"
