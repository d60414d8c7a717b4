"""OpenBCIWifi against the in-thread WiFi shield emulator, and TcpFrameDevice over TCP and UDP (127.0.0.1 only)."""

from __future__ import annotations

import socket
import threading
import time

import numpy as np
import pytest

from neuraflow.chunk import Chunk
from neuraflow.devices import Device, FrameFormat, OpenBCIWifi, TcpFrameDevice
from neuraflow.devices.openbci.wifi_emulator import WifiShieldEmulator
from neuraflow.devices.service import build_device
from neuraflow.errors import DeviceError, PipelineDefinitionError
from neuraflow.testing import read_samples, read_until_error


def assert_bit_exact(dev: OpenBCIWifi, emu: WifiShieldEmulator, chunks: list[Chunk]) -> None:
    scale = np.array(dev.info.meta["scale_v_per_count"])[:, None]
    for chunk in chunks:
        start = chunk.meta["sample_index"]
        got = np.rint(chunk.data.astype(np.float64) / scale).astype(np.int64)
        np.testing.assert_array_equal(got, emu.counts(start, start + chunk.n_samples))


# ------------------------------------------------------------------ WiFi shield
def test_wifi_shield_http_handshake_and_stream_bit_exact():
    with WifiShieldEmulator(sample_rate=250) as emu:
        dev = OpenBCIWifi(emu.address, sample_rate=500, chunk_size=50, local_host="127.0.0.1")
        assert isinstance(dev, Device) and dev.blocking
        dev.open()
        chunks = read_samples(dev, 1000)
        dev.close()
        dev.close()
        assert not emu.streaming and emu.sample_rate == 500
        methods = [(m, p) for m, p, _ in emu.requests]
        assert methods == [("GET", "/board"), ("POST", "/command"), ("POST", "/tcp"), ("GET", "/stream/start"),
                           ("GET", "/stream/stop")]
        tcp = emu.requests[2][2]
        assert tcp["ip"] == "127.0.0.1" and tcp["output"] == "raw" and tcp["delimiter"] is True
        assert tcp["latency"] == 10000 and isinstance(tcp["port"], int)
    assert_bit_exact(dev, emu, chunks)
    assert chunks[0].sfreq == 500.0 and chunks[0].data.shape == (8, 50)
    times = np.concatenate([c.times_s for c in chunks])
    np.testing.assert_allclose(np.diff(times), 1 / 500.0, atol=1e-3)
    assert dev.stats["samples_dropped"] == 0 and dev.stats["bytes_skipped"] == 0


def test_wifi_daisy_drop_disconnect_and_reopen():
    with WifiShieldEmulator(daisy=True, sample_rate=1000, speed=2.0) as emu:
        dev = OpenBCIWifi(emu.address, daisy=True, chunk_size=25, local_host="127.0.0.1")
        dev.open()
        chunks = read_samples(dev, 200)
        emu.drop_packets(10)  # 5 whole pairs
        chunks += read_samples(dev, 200)
        drops = [e for e in dev.drain_events() if e.label == "drop"]
        assert sum(e.value for e in drops) in (5.0, 6.0)  # 6 when the loss splits a pair
        emu.disconnect()
        assert "closed the TCP connection" in str(read_until_error(dev))
        dev.close()
        dev.open()  # what the runtime does after backoff
        again = read_samples(dev, 100)
        dev.close()
    assert chunks[0].data.shape[0] == 16 and chunks[0].sfreq == 500.0
    assert_bit_exact(dev, emu, chunks[:4])
    assert again[0].meta["sample_index"] == 0


def test_wifi_board_problems_are_device_errors():
    with WifiShieldEmulator() as emu:
        emu.board_connected = False
        with pytest.raises(DeviceError, match="no board"):
            OpenBCIWifi(emu.address, local_host="127.0.0.1").open()
        emu.board_connected = True
        with pytest.raises(DeviceError, match="16"):
            OpenBCIWifi(emu.address, daisy=True, local_host="127.0.0.1").open()
        with pytest.raises(DeviceError, match="gain="):
            OpenBCIWifi(emu.address, gain=8, local_host="127.0.0.1").open()
    with pytest.raises(DeviceError, match="GET"):  # nothing listens there any more
        OpenBCIWifi(emu.address, http_timeout_s=0.5).open()
    with pytest.raises(PipelineDefinitionError, match="sample_rate="):
        OpenBCIWifi("192.168.4.1", sample_rate=300)


# ---------------------------------------------------------------- TCP / UDP frames
FMT = FrameFormat(n_channels=3, sfreq=500.0, dtype=">i3", header=b"\xaa\x55", counter_size=2, samples_per_frame=4,
                  trailer=1, scale=1e-6, unit="V")


def frames(fmt: FrameFormat, first: int, n: int) -> tuple[bytes, np.ndarray]:
    """Frames ``first`` ... ``first + n - 1`` and their raw values (n_channels, n * spf)."""
    spf, nc = fmt.samples_per_frame, fmt.n_channels
    idx = np.arange(first * spf, (first + n) * spf, dtype=np.int64)
    values = ((idx[None] * (1 + np.arange(nc)[:, None]) * 2311) % (2**24) - 2**23).astype(np.int64)
    out = bytearray()
    for k in range(n):
        out += fmt.header + ((first + k) % (1 << (8 * fmt.counter_size))).to_bytes(fmt.counter_size, "big")
        for v in values[:, k * spf : (k + 1) * spf].T.reshape(-1).tolist():
            out += int(v).to_bytes(3, "big", signed=True)
        out += b"\x00" * fmt.trailer
    return bytes(out), values


def test_frame_format_decodes_every_dtype():
    for dtype in (">i2", "<i2", ">u2", "<f4", ">f8", "<i3", "i1"):
        fmt = FrameFormat(n_channels=2, sfreq=100.0, dtype=dtype, samples_per_frame=3)
        vals = np.array([[-5, 7, 100], [0, 1, -2]]) if "u" not in dtype else np.array([[5, 7, 100], [0, 1, 2]])
        if dtype[-1] == "3":
            body = b"".join(int(v).to_bytes(3, "little", signed=True) for v in vals.T.reshape(-1).tolist())
        else:
            body = vals.T.reshape(-1).astype(np.dtype(dtype)).tobytes()
        counters, got = fmt.decode(np.frombuffer(body, np.uint8)[None])
        assert counters is None and got.tolist() == vals.astype(float).tolist(), dtype
    with pytest.raises(PipelineDefinitionError, match="dtype="):
        FrameFormat(n_channels=1, sfreq=1.0, dtype=">i5")
    assert FMT.frame_size == 2 + 2 + 4 * 3 * 3 + 1


def test_tcp_frames_resync_drop_and_peer_close():
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    sent: list[np.ndarray] = []

    def board() -> None:
        conn, _ = server.accept()
        data, values = frames(FMT, 0, 50)
        sent.append(values)
        conn.sendall(data[:100])
        time.sleep(0.05)
        conn.sendall(data[100:] + b"\x01\x02junk")  # garbage, then frames 53-59 (50-52 lost)
        more, _ = frames(FMT, 53, 7)
        conn.sendall(more)
        time.sleep(0.2)
        conn.close()

    thread = threading.Thread(target=board, daemon=True)
    thread.start()
    dev = TcpFrameDevice("127.0.0.1", port, frame_format=FMT, chunk_size=20, stream_id="tcp-board")
    dev.open()
    chunks = read_samples(dev, 220)
    err = read_until_error(dev)
    dev.close()
    thread.join(2)
    server.close()
    assert "closed the connection" in str(err)
    events = dev.drain_events()
    assert [e.value for e in events if e.label == "corrupt"] == [6.0]
    assert [(e.value, e.meta["sample_index"]) for e in events if e.label == "drop"] == [(12.0, 200)]
    data = np.concatenate([c.data for c in chunks], axis=1)
    np.testing.assert_allclose(data[:, :200], sent[0] * 1e-6, rtol=1e-6)
    after = next(c for c in chunks if c.meta["sample_index"] >= 200)
    assert after.meta["sample_index"] == 212 and after.t0_s == pytest.approx(chunks[0].t0_s + 212 / 500.0)


def test_udp_datagrams_and_bad_datagram():
    fmt = FrameFormat(n_channels=3, sfreq=500.0, dtype=">i3", counter_size=1, samples_per_frame=4, scale=1e-6)
    dev = TcpFrameDevice("127.0.0.1", 0, frame_format=fmt, protocol="udp", chunk_size=8)
    dev.open()
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    target = ("127.0.0.1", dev.local_port)
    data, values = frames(fmt, 0, 10)
    size = fmt.frame_size
    for k in range(0, 10, 2):
        tx.sendto(data[k * size : (k + 2) * size], target)
    tx.sendto(b"\x00" * (size + 1), target)  # not whole frames
    late, late_values = frames(fmt, 255, 2)  # counter 255 then 0 (wraps): 245 frames lost
    tx.sendto(late, target)
    chunks = read_samples(dev, 48)
    dev.close()
    tx.close()
    got = np.concatenate([c.data for c in chunks], axis=1).astype(np.float64)
    np.testing.assert_allclose(got[:, :40], values * 1e-6, rtol=1e-6)
    np.testing.assert_allclose(got[:, 40:], late_values * 1e-6, rtol=1e-6)
    events = dev.drain_events()
    assert [e.label for e in events] == ["corrupt", "drop"] and events[1].value == 245 * 4
    assert chunks[-1].meta["sample_index"] == 256 * 4 - 4


def test_stall_and_connect_refused_and_spec():
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    dev = build_device({"kind": "tcp", "host": "127.0.0.1", "port": port, "stall_timeout_s": 0.3,
                        "frame_format": {"n_channels": 2, "sfreq": 100.0, "dtype": "<f4", "header": "aa55"}})
    assert dev.fmt.header == b"\xaa\x55"
    dev.open()
    conn, _ = server.accept()
    assert "stall_timeout_s=0.3" in str(read_until_error(dev))
    dev.close()
    conn.close()
    server.close()
    with pytest.raises(DeviceError, match="cannot connect"):
        TcpFrameDevice("127.0.0.1", port, frame_format=FMT).open()
