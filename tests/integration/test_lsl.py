"""LSLInlet, LSLMarkerInlet and the LSLOutlet sink against real liblsl peers in other processes.

liblsl is kept on loopback by an LSLAPICFG file, set in this process's
environment before pylsl is first used (liblsl reads it once) and passed to
every child. No Ray here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_CFG = Path(tempfile.mkdtemp(prefix="neuraflow-lsl-")) / "lsl_api.cfg"
_CFG.write_text("[ports]\nIPv6 = disable\n\n[multicast]\nResolveScope = machine\nKnownPeers = {127.0.0.1}\n")
os.environ["LSLAPICFG"] = str(_CFG)

import numpy as np  # noqa: E402
import pylsl  # noqa: E402
import pytest  # noqa: E402

from neuraflow.chunk import Chunk, Event, StreamInfo  # noqa: E402
from neuraflow.devices import Device, LSLInlet, LSLMarkerInlet  # noqa: E402
from neuraflow.errors import DeviceError, PipelineDefinitionError, SinkError  # noqa: E402
from neuraflow.sinks import LSLOutlet, Sink  # noqa: E402

HELPER = Path(__file__).with_name("lsl_helpers.py")


def _unique(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{time.monotonic_ns() % 10**9}"


def spawn(*args: str) -> subprocess.Popen:
    env = dict(os.environ, LSLAPICFG=str(_CFG))
    proc = subprocess.Popen([sys.executable, str(HELPER), *args], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)
    proc.stdout.close()


def read_samples(dev: LSLInlet, n: int, timeout_s: float = 10.0) -> list[Chunk]:
    chunks, total, deadline = [], 0, time.time() + timeout_s
    while total < n and time.time() < deadline:
        chunk = dev.read(0.2)
        if chunk is not None:
            chunks.append(chunk)
            total += chunk.n_samples
    assert total >= n, f"got {total} of {n} samples"
    return chunks


def test_round_trip_with_unix_timestamps():
    name = _unique("nf-eeg")
    proc = spawn("outlet", name, "4", "250", "30")
    try:
        dev = LSLInlet(name, resolve_timeout_s=5.0)
        assert isinstance(dev, Device) and dev.blocking is True
        info = dev.info  # resolved lazily: the outlet is online
        assert info.stream_id == name and info.sfreq == 250.0
        assert info.channels == ("ch0", "ch1", "ch2", "ch3") and set(info.units) == {"V"}
        dev.open()
        chunks = read_samples(dev, 500)
        line = proc.stdout.readline().split()
        assert line[0] == "t0"
        dev.close()
        dev.close()  # idempotent
    finally:
        stop(proc)
    data = np.concatenate([c.data for c in chunks], axis=1)
    # The ramp k*10+c in µV arrives in volts, contiguous (no lost sample).
    k0 = round(float(data[0, 0]) / 1e-6 / 10)
    ks = k0 + np.arange(data.shape[1])
    expected = (ks[None, :] * 10 + np.arange(4)[:, None]) * 1e-6
    np.testing.assert_allclose(data, expected.astype(np.float32), rtol=1e-6)
    # t0_s is Unix time: first sample of the outlet at LSL time t0, sample k at t0 + k/250.
    lsl_t0 = float(line[1])
    unix_offset = time.time() - pylsl.local_clock()
    first = chunks[0]
    assert abs(first.t0_s - (lsl_t0 + k0 / 250.0 + unix_offset)) < 0.005
    assert abs(first.t0_s - time.time()) < 60
    # Dejittered timestamps: consecutive chunks line up within a sample.
    for a, b in zip(chunks, chunks[1:]):
        assert abs(b.t0_s - a.t_end_s) < 1.0 / 250.0


def test_outlet_restart_raises_then_reconnects_and_channel_change_is_named():
    name = _unique("nf-restart")
    proc = spawn("outlet", name, "3", "100", "30")
    dev = LSLInlet(name, resolve_timeout_s=5.0)
    try:
        dev.open()
        read_samples(dev, 50)
        stop(proc)
        with pytest.raises(DeviceError, match="was lost"):
            deadline = time.time() + 10.0
            while time.time() < deadline:
                dev.read(0.2)
        dev.close()
        # The runtime reopens: a restarted outlet (new uid, same montage) is found again.
        proc = spawn("outlet", name, "3", "100", "30")
        dev.open()
        assert read_samples(dev, 50)[0].n_channels == 3
        dev.close()
        stop(proc)
        # Restarted with another montage: a named error, not silently wrong data.
        proc = spawn("outlet", name, "5", "100", "30")
        with pytest.raises(DeviceError, match=r"channel count changed: expected 3 channels.*now has 5"):
            dev.open()
    finally:
        dev.close()
        stop(proc)


def test_expected_channels_and_rate_are_checked():
    name = _unique("nf-expect")
    offline = LSLInlet(name, channels=["a", "b"], expected_sfreq=200.0, resolve_timeout_s=0.5)
    assert offline.info.channels == ("a", "b")  # known without the stream online
    with pytest.raises(DeviceError, match="no LSL stream with name="):
        offline.open()
    proc = spawn("outlet", name, "2", "100", "30")
    try:
        with pytest.raises(DeviceError, match=r"declares 100.0 Hz, expected_sfreq=200.0"):
            offline.open()
        dev = LSLInlet(name, channels=["a", "b"], expected_sfreq=100.0, resolve_timeout_s=5.0)
        dev.open()
        chunk = read_samples(dev, 10)[0]
        assert chunk.channels == ("a", "b") and chunk.info is dev.info
        assert chunk.data[1, 0] - chunk.data[0, 0] == 1.0  # values as sent: the caller named the channels
        dev.close()
        with pytest.raises(DeviceError, match="channel count changed: expected 3 channels"):
            LSLInlet(name, channels=["a", "b", "c"], resolve_timeout_s=5.0).open()
    finally:
        stop(proc)


def test_markers_become_events():
    eeg, mk = _unique("nf-eeg"), _unique("nf-mk")
    data_proc = spawn("outlet", eeg, "2", "100", "30")
    mk_proc = spawn("markers", mk, "T1,T2,rest", "0.1")
    try:
        dev = LSLInlet(eeg, resolve_timeout_s=5.0, markers=LSLMarkerInlet(mk, type="Markers", resolve_timeout_s=5.0))
        dev.open()
        events: list[Event] = []
        sent = []
        deadline = time.time() + 10.0
        while len(events) < 3 and time.time() < deadline:
            dev.read(0.1)
            events.extend(dev.drain_events())
        while len(sent) < 3:
            line = mk_proc.stdout.readline().split()
            sent.append((line[1], float(line[2])))
        dev.close()
    finally:
        stop(mk_proc)
        stop(data_proc)
    assert [e.label for e in events] == ["T1", "T2", "rest"]
    assert {e.stream_id for e in events} == {mk}
    offset = time.time() - pylsl.local_clock()
    for e, (_, lsl_t) in zip(events, sent):
        assert abs(e.t_s - (lsl_t + offset)) < 0.005


def test_marker_inlet_alone_and_wrong_kinds():
    mk = _unique("nf-mk")
    proc = spawn("markers", mk, "a,b", "0.05")
    try:
        with pytest.raises(DeviceError, match="carries strings"):
            LSLInlet(mk, resolve_timeout_s=5.0).open()
        dev = LSLMarkerInlet(mk, resolve_timeout_s=5.0)
        assert dev.info.n_channels == 1 and dev.info.meta["irregular"] is True
        dev.open()
        events = []
        deadline = time.time() + 10.0
        while len(events) < 2 and time.time() < deadline:
            assert dev.read(0.2) is None
            events.extend(dev.drain_events())
        assert [e.label for e in events] == ["a", "b"]
        dev.close()
    finally:
        stop(proc)
    with pytest.raises(PipelineDefinitionError, match="at least one of name="):
        LSLInlet()


def test_outlet_sink_is_consumed_by_a_pylsl_inlet():
    name = _unique("nf-out")
    info = StreamInfo("eeg-0/clean", 100.0, ("Cz", "Pz"), ("eeg", "eeg"), ("V", "V"))
    sink = LSLOutlet(name, type="EEG")
    assert isinstance(sink, Sink)
    sink.open()
    t0 = time.time() - 1.0
    first = Chunk(np.arange(20, dtype=np.float32).reshape(2, 10), t0, info, seq=0)
    sink.write_batch([first])  # creates the outlet
    proc = subprocess.Popen([sys.executable, str(HELPER), "inlet", name, "40"], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, LSLAPICFG=str(_CFG)))
    try:
        deadline = time.time() + 15.0
        seq = 1
        while proc.poll() is None and time.time() < deadline:
            chunk = Chunk(np.full((2, 10), seq, dtype=np.float32), t0 + seq * 0.1, info, seq=seq)
            sink.write_batch([chunk, chunk])  # a duplicate seq is skipped
            seq += 1
            time.sleep(0.05)
        out, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    n, first_ts, first_val, last_val, label, child_clock = out.split()
    assert int(n) == 40 and label == "Cz"
    # Duplicates were skipped: 40 samples are 4 distinct chunks, in order.
    k = float(first_val)
    assert float(last_val) == k + 3
    # Each sample carries its device time: chunk seq k started at t0 + k * 0.1 (Unix) -> LSL clock.
    expected_lsl = t0 + k * 0.1 - (time.time() - pylsl.local_clock())
    assert abs(float(first_ts) - expected_lsl) < 0.005
    assert sink.stream_ids == ("eeg-0/clean",)
    other = info.replace(channels=("Cz", "Pz", "Oz"), ch_types=(), units=())
    with pytest.raises(SinkError, match="changed from 2 channels"):
        sink.write_batch([Chunk(np.zeros((3, 4), np.float32), t0, other, seq=999)])
    sink.write_events([Event("eeg-0", time.time(), "T1")])
    sink.flush()
    sink.close()
