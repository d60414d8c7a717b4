"""Muse and Ganglion devices through bleak's BleakClient with the fake backend at the lowest layer.

No Bluetooth, no network, no Ray: the fake peripheral's notifications run on the
device's own asyncio loop thread.
"""

from __future__ import annotations

import pickle
import time

import numpy as np
import pytest

from neuraflow.chunk import Chunk
from neuraflow.devices import Device
from neuraflow.devices.ble import Ganglion, Muse, muse_devices
from neuraflow.devices.ble import decoders as dec
from neuraflow.devices.ble.fake_backend import FakeBackend, FakeGanglion, FakeMuse, register, unregister
from neuraflow.errors import DeviceError, PipelineDefinitionError
from neuraflow.testing import read_samples, read_until_error


@pytest.fixture
def muse():
    p = register(FakeMuse("00:55:DA:B0:00:10", speed=4.0))
    yield p
    unregister(p.address)


@pytest.fixture
def ganglion():
    p = register(FakeGanglion("C4:E1:A0:00:00:20", speed=4.0))
    yield p
    unregister(p.address)


def muse_counts(chunk: Chunk) -> np.ndarray:
    return np.rint(chunk.data.astype(np.float64) / (dec.MUSE_UV_PER_COUNT * 1e-6) + 2048).astype(np.int64)


def test_muse_streams_bit_exact_through_bleak_client(muse):
    muse.speed = 1.0  # real rate: faster, samples outrun the host clock and the anchor keeps moving
    dev = Muse(muse.address, backend=FakeBackend, chunk_size=24)
    assert isinstance(dev, Device) and dev.blocking
    dev.open()
    chunks = read_samples(dev, 240)
    dev.close()
    dev.close()  # idempotent
    control = [data for uuid, data in muse.writes if uuid == dec.MUSE_CONTROL]
    assert control == [b"\x02h\n", b"\x04p21\n", b"\x02s\n", b"\x02d\n", b"\x02h\n"] and not muse.streaming
    assert chunks[0].info.channels == ("TP9", "AF7", "AF8", "TP10", "AUX") and chunks[0].sfreq == 256.0
    for chunk in chunks:
        start = chunk.meta["sample_index"]
        np.testing.assert_array_equal(muse_counts(chunk), FakeMuse.counts(start, start + chunk.n_samples))
    assert chunks[0].n_samples == 24 and chunks[0].info.units == ("V",) * 5
    times = np.concatenate([c.times_s for c in chunks])
    # index clock: no arrival jitter (only sub-ms causality corrections of the anchor)
    np.testing.assert_allclose(np.diff(times), 1 / 256.0, atol=1e-3)
    assert times[-1] <= time.time()


def test_muse_lost_notifications_become_drop_events(muse):
    dev = Muse(muse.address, backend="fake", aux=False, preset=None)
    dev.open()
    chunks = read_samples(dev, 48)
    muse.drop_next(5 * 2 + 2)  # two whole indices, then two channels of a third
    chunks += read_samples(dev, 60)
    dev.close()
    drops = [e for e in dev.drain_events() if e.label == "drop"]
    assert [e.value for e in drops] == [36.0]  # 3 indices x 12 samples (the partial one too)
    after = next(c for c in chunks if c.meta["sample_index"] > drops[0].meta["sample_index"])
    assert after.meta["sample_index"] == drops[0].meta["sample_index"] + 36
    assert after.t0_s == pytest.approx(drops[0].t_s + 36 / 256.0)
    for chunk in chunks:
        start = chunk.meta["sample_index"]
        np.testing.assert_array_equal(muse_counts(chunk), FakeMuse.counts(start, start + chunk.n_samples)[:4])
    assert dev.info.n_channels == 4 and dev.stats["samples_dropped"] == 36


def test_muse_link_loss_raises_then_reopen_streams_again(muse):
    dev = Muse(muse.address, backend="fake")
    dev.open()
    read_samples(dev, 24)
    muse.link_loss()
    err = read_until_error(dev)
    assert "disconnected" in str(err)
    dev.close()
    dev.open()  # what the runtime does after backoff
    chunks = read_samples(dev, 24)
    dev.close()
    assert muse.connects == 2 and chunks[0].meta["sample_index"] == 0  # a fresh stream


def test_connect_failures_are_device_errors(muse):
    dev = Muse("00:00:00:00:00:00", backend="fake", connect_timeout_s=1.0)
    with pytest.raises(DeviceError, match="00:00:00:00:00:00.*not found"):
        dev.open()
    muse.refuse_connect = True
    with pytest.raises(DeviceError, match="refused"):
        Muse(muse.address, backend="fake").open()
    with pytest.raises(DeviceError, match="before open"):
        Muse(muse.address, backend="fake").read(0.01)


def test_stall_raises_device_error(ganglion):
    dev = Ganglion(ganglion.address, backend="fake", stall_timeout_s=0.3)
    dev.open()
    read_samples(dev, 20)
    ganglion.streaming = False  # the board goes silent without disconnecting
    err = read_until_error(dev)
    dev.close()
    assert "no notification" in str(err) and "stall_timeout_s=0.3" in str(err)


def test_ganglion_streams_decompressed_volts(ganglion):
    dev = Ganglion(ganglion.address, backend=FakeBackend, chunk_size=10)
    dev.open()
    chunks = read_samples(dev, 300)
    dev.close()
    assert ganglion.writes == [(dec.GANGLION_SEND, b"b"), (dec.GANGLION_SEND, b"s")]
    assert chunks[0].sfreq == 200.0 and chunks[0].info.channels == ("EXG1", "EXG2", "EXG3", "EXG4")
    data = np.concatenate([c.data for c in chunks], axis=1).astype(np.float64)
    counts = np.rint(data / dec.GANGLION_V_PER_COUNT).astype(np.int64)
    np.testing.assert_array_equal(counts, FakeGanglion.counts(0, data.shape[1]))
    assert [c.meta["sample_index"] for c in chunks[:3]] == [0, 10, 20]


def test_ganglion_lost_packet_drop_event_and_reopen_after_link_loss(ganglion):
    dev = Ganglion(ganglion.address, backend="fake")
    dev.open()
    chunks = read_samples(dev, 41)
    ganglion.drop_next(4)
    chunks += read_samples(dev, 40)
    drops = [e for e in dev.drain_events() if e.label == "drop"]
    assert [e.value for e in drops] == [8.0] and drops[0].meta["offset_unknown"] is True
    ganglion.link_loss()
    read_until_error(dev)
    dev.close()
    dev.open()
    again = read_samples(dev, 20)
    dev.close()
    assert again[0].meta["sample_index"] == 0  # a fresh stream, seeded by a raw packet: exact again
    counts = np.rint(np.concatenate([c.data for c in again], 1).astype(np.float64) / dec.GANGLION_V_PER_COUNT)
    truth = FakeGanglion.counts(0, 400)  # periodic (20 samples): some phase must match exactly, offset included
    assert any((counts == truth[:, k : k + counts.shape[1]]).all() for k in range(20))
    assert ganglion.writes.count((dec.GANGLION_SEND, b"b")) == 2


def test_devices_pickle_before_open_and_validate_params():
    dev = pickle.loads(pickle.dumps(Muse("00:55:DA:B0:00:99", backend="fake")))
    assert dev.backend is FakeBackend and dev.info.n_channels == 5
    with pytest.raises(PipelineDefinitionError, match="backend="):
        Ganglion("x", backend="bluez-please")
    with pytest.raises(PipelineDefinitionError, match="preset="):
        Muse("x", preset="21")
    with pytest.raises(PipelineDefinitionError, match="chunk_size="):
        Ganglion("x", chunk_size=0)


# ------------------------------------------------------- Muse PPG / IMU streams
def _exact(chunks, truth_fn, scale=None):
    for chunk in chunks:
        start = chunk.meta["sample_index"]
        truth = truth_fn(start, start + chunk.n_samples).astype(np.float64)
        expected = truth if scale is None else truth * scale
        np.testing.assert_array_equal(chunk.data, expected.astype(np.float32))


def test_muse_devices_share_one_connection_and_stream_ppg_acc_gyro_exactly(muse):
    muse.speed = 1.0  # real rate, so that the index clocks can be checked against 1 / sfreq
    devs = muse_devices(muse.address, backend="fake", aux=False)
    eeg, ppg, acc, gyro = devs
    assert [d.info.stream_id for d in devs] == ["muse", "muse-ppg", "muse-acc", "muse-gyro"]
    assert (ppg.info.sfreq, acc.info.sfreq, gyro.info.sfreq) == (64.0, 52.0, 52.0)
    assert ppg.info.channels == ("PPG1", "PPG2", "PPG3") and acc.info.units == ("g",) * 3
    assert gyro.info.channels == ("GYRO_X", "GYRO_Y", "GYRO_Z") and gyro.info.units == ("deg/s",) * 3
    for d in devs:
        d.open()
    got = {d.info.stream_id: read_samples(d, n) for d, n in ((eeg, 48), (ppg, 36), (acc, 30), (gyro, 30))}
    for d in devs:
        d.close()
    # one connection; start sequence once (first open), halt once (last close)
    control = [data for uuid, data in muse.writes if uuid == dec.MUSE_CONTROL]
    assert muse.connects == 1 and control == [b"\x02h\n", b"\x04p21\n", b"\x02s\n", b"\x02d\n", b"\x02h\n"]
    _exact(got["muse-ppg"], FakeMuse.ppg_counts)
    _exact(got["muse-acc"], lambda a, b: FakeMuse.imu_counts("acc", a, b), dec.MUSE_ACC_G_PER_COUNT)
    _exact(got["muse-gyro"], lambda a, b: FakeMuse.imu_counts("gyro", a, b), dec.MUSE_GYRO_DPS_PER_COUNT)
    for chunk in got["muse"]:
        start = chunk.meta["sample_index"]
        np.testing.assert_array_equal(muse_counts(chunk), FakeMuse.counts(start, start + chunk.n_samples)[:4])
    assert got["muse-ppg"][0].n_samples == 6 and got["muse-acc"][0].n_samples == 3  # one notification per chunk
    ppg_times = np.concatenate([c.times_s for c in got["muse-ppg"]])
    np.testing.assert_allclose(np.diff(ppg_times), 1 / 64.0, atol=1e-3)
    assert not any(e.label == "drop" for d in devs for e in d.drain_events())


def test_muse_ppg_and_imu_lost_notifications_become_drop_events(muse):
    ppg = Muse(muse.address, stream="ppg", backend="fake", chunk_size=6)
    ppg.open()
    chunks = read_samples(ppg, 12)
    muse.drop_next(3 + 1)  # one whole PPG index (3 characteristics), then one channel of the next
    chunks += read_samples(ppg, 48)
    ppg.close()
    drops = [e for e in ppg.drain_events() if e.label == "drop"]
    assert [e.value for e in drops] == [12.0]  # 2 indices x 6 samples
    _exact(chunks, FakeMuse.ppg_counts)
    acc = Muse(muse.address, stream="acc", backend="fake")
    acc.open()
    chunks = read_samples(acc, 6)
    muse.drop_next(2)
    chunks += read_samples(acc, 30)
    acc.close()
    drops = [e for e in acc.drain_events() if e.label == "drop"]
    assert [e.value for e in drops] == [6.0] and acc.stats["samples_dropped"] == 6
    after = next(c for c in chunks if c.meta["sample_index"] > drops[0].meta["sample_index"])
    assert after.meta["sample_index"] == drops[0].meta["sample_index"] + 6
    _exact(chunks, lambda a, b: FakeMuse.imu_counts("acc", a, b), dec.MUSE_ACC_G_PER_COUNT)


def test_muse_shared_link_loss_fails_every_stream_then_both_reopen(muse):
    eeg, gyro = muse_devices(muse.address, ("eeg", "gyro"), backend="fake")
    eeg.open()
    gyro.open()
    read_samples(gyro, 6)
    muse.link_loss()
    assert "disconnected" in str(read_until_error(eeg)) and "disconnected" in str(read_until_error(gyro))
    eeg.close()
    gyro.close()
    gyro.open()  # the gyro reopens first this time: it connects and starts the headband
    eeg.open()
    read_samples(eeg, 24)
    read_samples(gyro, 6)
    gyro.close()
    read_samples(eeg, 12)  # the EEG keeps the connection after the gyro left
    eeg.close()
    assert muse.connects == 2 and not muse.streaming


def test_muse_2016_has_no_ppg_and_stream_params_are_checked():
    old = register(FakeMuse("00:55:DA:B0:00:16", aux_sensors=False))
    try:
        with pytest.raises(DeviceError, match="273e000f"):
            Muse(old.address, stream="ppg", backend="fake", connect_timeout_s=1.0).open()
    finally:
        unregister(old.address)
    with pytest.raises(PipelineDefinitionError, match="stream='ecg'"):
        Muse("x", stream="ecg")
    with pytest.raises(PipelineDefinitionError, match="repeats"):
        muse_devices("x", ("eeg", "eeg"))
    with pytest.raises(PipelineDefinitionError, match="stream_id="):
        muse_devices("x", stream_id="m")
    dev = pickle.loads(pickle.dumps(Muse("x", stream="gyro", backend="fake")))
    assert dev.info.stream_id == "muse-gyro" and dev.chunk_size == 3


# ------------------------------------------------------- Ganglion impedance
def test_ganglion_impedance_from_a_closed_device(ganglion):
    from neuraflow.devices.impedance import measure_impedance

    ganglion.impedance_ohm = [4_700, 12_000, 250_000, 1_500, 3_300]
    dev = Ganglion(ganglion.address, backend="fake")
    kohm = measure_impedance(dev, 0.3)  # dispatches to Ganglion.measure_impedance
    assert kohm == {"EXG1": 4.7, "EXG2": 12.0, "EXG3": 250.0, "EXG4": 1.5, "REF": 3.3}
    sent = [data for uuid, data in ganglion.writes if uuid == dec.GANGLION_SEND]
    assert sent == [b"b", b"s", b"z", b"Z", b"s"] and not ganglion.impedance_mode
    with pytest.raises(DeviceError, match="before open"):
        dev.read(0.01)  # left closed, as found
    assert dev.measure_impedance(0.3, channels=[2, 4]) == {"EXG2": 12.0, "EXG4": 1.5}
    with pytest.raises(PipelineDefinitionError, match="channels="):
        dev.measure_impedance(0.1, channels=[5])


def test_ganglion_impedance_of_an_open_device_resumes_streaming(ganglion):
    dev = Ganglion(ganglion.address, backend="fake")
    dev.open()
    read_samples(dev, 20)
    assert dev.measure_impedance(0.3, channels=[1])["EXG1"] == 4.7
    chunks = read_samples(dev, 20)  # reopened: a fresh stream, exact from its raw packet on
    dev.close()
    assert chunks[0].meta["sample_index"] == 0
    counts = np.rint(np.concatenate([c.data for c in chunks], 1).astype(np.float64) / dec.GANGLION_V_PER_COUNT)
    truth = FakeGanglion.counts(0, 400)
    assert any((counts == truth[:, k : k + counts.shape[1]]).all() for k in range(20))


def test_ganglion_impedance_without_values_names_the_channels(ganglion):
    ganglion.drop_next(10**6)  # nothing reaches the host
    with pytest.raises(DeviceError, match=r"no value for \['EXG1', 'EXG2', 'EXG3', 'EXG4', 'REF'\]"):
        Ganglion(ganglion.address, backend="fake", stall_timeout_s=5.0).measure_impedance(0.2)
    ganglion._drop = 0


def test_ganglion_impedance_through_manager_and_route(ganglion):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from neuraflow.config import NeuraflowSettings
    from neuraflow.devices.service import DeviceManager
    from neuraflow.serve.device_routes import register_device_routes

    mgr = DeviceManager({"g": {"kind": "ganglion", "address": ganglion.address, "backend": "fake"}})
    app = FastAPI()
    register_device_routes(app, NeuraflowSettings(), manager=mgr)
    try:
        with TestClient(app) as client:
            assert client.post("/devices/g/connect").status_code == 200
            deadline = time.monotonic() + 5.0
            while client.get("/devices/g").json()["state"] != "connected":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            r = client.post("/devices/g/impedance?seconds=0.3")
            assert r.status_code == 200, r.text
            assert r.json()["kohm"] == {"EXG1": 4.7, "EXG2": 12.0, "EXG3": 250.0, "EXG4": 1.5, "REF": 3.3}
            record = client.get("/devices/g").json()
            assert record["impedance_kohm"]["EXG3"] == 250.0 and record["state"] in ("connecting", "connected")
    finally:
        mgr.close()
    assert ganglion.writes.count((dec.GANGLION_SEND, b"z")) == 1 and not ganglion.streaming
