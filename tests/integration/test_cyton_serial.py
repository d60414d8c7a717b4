"""OpenBCICyton against the byte-exact CytonEmulator on a real pseudo-terminal (no Ray, no hardware)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from neuraflow.chunk import Chunk
from neuraflow.devices import Device, OpenBCICyton
from neuraflow.devices.openbci import CytonOptions
from neuraflow.devices.openbci.emulator import CytonEmulator, load_openbci_gui
from neuraflow.errors import DeviceError
from neuraflow.runtime.slot import DeviceSlot, SlotOptions
from neuraflow.testing import read_samples

FAST = CytonOptions(banner_timeout_s=0.5, stall_timeout_s=0.5)


@pytest.fixture
def emu():
    emulator = CytonEmulator()
    yield emulator
    emulator.close()


def counts_of(dev: OpenBCICyton, chunk: Chunk) -> np.ndarray:
    scale = np.array(dev.info.meta["scale_v_per_count"])[:, None]
    return np.rint(chunk.data[: dev.n_eeg].astype(np.float64) / scale).astype(np.int64)


def assert_bit_exact(dev: OpenBCICyton, emu: CytonEmulator, chunks: list[Chunk]) -> None:
    for chunk in chunks:
        start = chunk.meta["sample_index"]
        sent = emu.counts(start, start + chunk.n_samples)[: dev.n_eeg]
        np.testing.assert_array_equal(counts_of(dev, chunk), sent)


def test_handshake_and_real_recording_bit_exact(openbci_txt: Path):
    uv, _ = load_openbci_gui(openbci_txt)
    with CytonEmulator(signal=uv) as emu:  # real rate: 250 packets/s
        dev = OpenBCICyton(emu.port, chunk_size=25, options=FAST)
        assert isinstance(dev, Device) and dev.blocking is True
        dev.open()
        chunks = read_samples(dev, 300)
        dev.close()
        dev.close()  # idempotent
        deadline = time.monotonic() + 2.0
        while emu.streaming and time.monotonic() < deadline:
            time.sleep(0.01)
        assert emu.commands == [b"s", b"v", b"b", b"s"] and not emu.streaming
    assert_bit_exact(dev, emu, chunks)
    data = np.concatenate([c.data for c in chunks], axis=1)
    # same microvolts as the OpenBCI GUI recorded (to within one count, 0.022 uV)
    np.testing.assert_allclose(data[:, :300] * 1e6, uv[:, :300], atol=0.03)
    assert chunks[0].info.units[0] == "V" and chunks[0].sfreq == 250.0
    times = np.concatenate([c.times_s for c in chunks])
    # counter clock: no arrival jitter (only sub-ms causality corrections of the anchor)
    np.testing.assert_allclose(np.diff(times), 1 / 250.0, atol=1e-3)
    assert times[-1] <= time.time()
    assert dev.stats["samples_dropped"] == 0 and dev.stats["bytes_skipped"] == 0


def test_gain_commands_and_accelerometer_channels(emu):
    dev = OpenBCICyton(emu.port, gain=[8] * 4 + [24] * 4, chunk_size=10, options=CytonOptions(accel=True))
    dev.open()
    chunks = read_samples(dev, 100)
    dev.close()
    assert [b"x1040110X", b"x2040110X", b"x3040110X", b"x4040110X"] == emu.commands[2:6]
    assert emu.gains[:4] == [8] * 4 and dev.info.meta["scale_v_per_count"][0] == pytest.approx(4.5 / 8 / (2**23 - 1))
    assert_bit_exact(dev, emu, chunks)
    assert dev.info.channels[-3:] == ("acc_x", "acc_y", "acc_z") and dev.info.units[-1] == "g"
    accel = np.concatenate([c.data[-3:] for c in chunks], axis=1)
    np.testing.assert_allclose(accel[:, -1], [0.04, 0.42, 0.238], atol=1e-3)  # held between 25 Hz readings


def test_counter_gap_becomes_drop_event_and_clock_advances(emu):
    # real rate: at speed > 1 samples outrun the host clock and the anchor keeps moving
    dev = OpenBCICyton(emu.port, chunk_size=10, options=CytonOptions(stall_timeout_s=2.0))
    dev.open()
    first = read_samples(dev, 50)
    emu.drop_packets(7)
    chunks = first + read_samples(dev, 100)
    emu.drop_packets(300)  # more than a counter wrap: seen modulo 256
    chunks += read_samples(dev, 100)
    dev.close()
    drops = [e for e in dev.drain_events() if e.label == "drop"]
    assert [e.value for e in drops] == [7.0, 300.0 - 256]
    assert_bit_exact(dev, emu, chunks[: len(first) + 10])
    # the chunk after the gap starts at the right sample, and its time includes the gap
    after = next(c for c in chunks if c.meta["sample_index"] > drops[0].meta["sample_index"])
    assert after.t0_s == pytest.approx(drops[0].t_s + 7 / 250.0)
    assert all(c.t0_s < d.t0_s for c, d in zip(chunks, chunks[1:]))


def test_corruption_counted_and_no_good_packet_lost(emu):
    emu.set_speed(4.0)
    dev = OpenBCICyton(emu.port, chunk_size=10, options=FAST)
    dev.open()
    chunks = read_samples(dev, 40)
    emu.inject_corruption(50)
    emu.inject_bytes(b"\xa0" * 5 + b"\xc0" * 40)
    chunks += read_samples(dev, 40)
    emu.truncate_next(keep=20)  # that one sample is lost: a drop of 1
    chunks += read_samples(dev, 60)
    dev.close()
    events = dev.drain_events()
    assert dev.stats["bytes_skipped"] >= 50 + 45 + 20 - 33  # some garbage may be absorbed in one framing
    assert sum(e.value for e in events if e.label == "corrupt") == dev.stats["bytes_skipped"]
    assert [e.value for e in events if e.label == "drop"] == [1.0]
    assert_bit_exact(dev, emu, chunks)  # every accepted sample is exactly what was sent
    n = sum(c.n_samples for c in chunks)
    assert chunks[-1].meta["sample_index"] + chunks[-1].n_samples == n + 1


def test_stall_raises_board_stopped_answering(emu):
    dev = OpenBCICyton(emu.port, chunk_size=10, options=FAST)
    dev.open()
    read_samples(dev, 20)
    emu.stall(3.0)
    t = time.monotonic()
    with pytest.raises(DeviceError, match="board stopped answering"):
        while True:
            dev.read(0.1)
    assert time.monotonic() - t < 2.0
    dev.close()


def test_disconnect_then_reopen_after_restart(emu):
    dev = OpenBCICyton(emu.port, chunk_size=10, options=FAST)
    dev.open()
    read_samples(dev, 20)
    emu.disconnect()
    with pytest.raises(DeviceError, match="unplugged|stopped answering"):
        for _ in range(50):
            dev.read(0.1)
    dev.close()
    with pytest.raises(DeviceError, match="cannot open serial port"):
        dev.open()
    emu.restart()
    dev.open()
    chunks = read_samples(dev, 30)
    dev.close()
    assert chunks[0].meta["sample_index"] == 0
    assert_bit_exact(dev, emu, chunks)


def test_wrong_banner_and_no_banner_are_named_errors():
    with CytonEmulator(reply=b"Hello from an Arduino$$$") as emu:
        dev = OpenBCICyton(emu.port, options=FAST)
        with pytest.raises(DeviceError, match="Arduino.*not an OpenBCI Cyton banner"):
            dev.open()
    with CytonEmulator(reply=b"") as emu:
        dev = OpenBCICyton(emu.port, options=FAST)
        with pytest.raises(DeviceError, match="no banner"):
            dev.open()
    with CytonEmulator() as emu:
        with pytest.raises(DeviceError, match="reports no Daisy"):
            OpenBCICyton(emu.port, daisy=True, options=FAST).open()


def test_daisy_16_channels_at_125_hz():
    with CytonEmulator(daisy=True, speed=4.0) as emu:
        dev = OpenBCICyton(emu.port, daisy=True, chunk_size=10, options=CytonOptions(accel=True))
        dev.open()
        chunks = read_samples(dev, 50)
        emu.drop_packets(3)  # board+daisy of one sample, plus half of the next one
        chunks += read_samples(dev, 50)
        dev.close()
    assert dev.info.n_channels == 19 and dev.sfreq == 125.0
    assert_bit_exact(dev, emu, chunks)
    assert [e.value for e in dev.drain_events() if e.label == "drop"] == [2.0]
    with CytonEmulator(daisy=True) as emu:  # daisy attached, 8 channels wanted: 'c'
        dev = OpenBCICyton(emu.port, options=FAST)
        dev.open()
        chunks = read_samples(dev, 20)
        dev.close()
        assert b"c" in emu.commands
    assert_bit_exact(dev, emu, chunks)


def test_slot_reconnects_with_backoff(emu):
    dev = OpenBCICyton(emu.port, chunk_size=10, options=FAST)
    slot = DeviceSlot(dev, SlotOptions(reconnect_initial_s=0.05, reconnect_max_s=0.2))
    slot.start()
    try:
        time.sleep(0.3)
        t_unplug = time.monotonic()
        emu.disconnect()
        time.sleep(0.5)
        emu.restart()
        deadline = time.monotonic() + 5.0
        events = []
        while time.monotonic() < deadline and not any(e.label == "reconnect" for e in events):
            time.sleep(0.05)
            events += slot.take()[1]
        reconnect_s = time.monotonic() - t_unplug - 0.5
        time.sleep(0.3)
        chunks, more = slot.take()
        events += more
    finally:
        slot.stop()
    labels = [e.label for e in events]
    assert "disconnect" in labels and "reconnect" in labels, labels
    assert slot.counters.reconnects == 1 and chunks
    assert reconnect_s < 1.0
    print(f"\nreconnect after the board came back: {reconnect_s * 1000:.0f} ms")


def test_sustained_decode_rate_at_max_speed():
    with CytonEmulator(speed=float("inf")) as emu:
        dev = OpenBCICyton(emu.port, chunk_size=250, options=FAST)
        dev.open()
        read_samples(dev, 1000)
        n0, t0 = dev.stats["packets"], time.perf_counter()
        chunks = read_samples(dev, 20_000, timeout_s=30.0)
        rate = (dev.stats["packets"] - n0) / (time.perf_counter() - t0)
        dev.close()
    assert dev.stats["samples_dropped"] == 0 and dev.stats["bytes_skipped"] == 0
    assert_bit_exact(dev, emu, chunks[:5] + chunks[-5:])
    print(f"\nsustained: {rate:,.0f} packets/s ({rate / 250:.0f}x real time)")
    assert rate > 2500
