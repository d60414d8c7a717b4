"""OpenBCI Cyton packet protocol: round trip, sign extension, scaling, resync, Daisy layout."""

from __future__ import annotations

import numpy as np
import pytest

from neuraflow.devices.openbci import protocol as proto
from neuraflow.devices.openbci.protocol import decode_stream, encode_packet, encode_packets, find_frames


def stream(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, bytes]:
    rng = np.random.default_rng(seed)
    counts = rng.integers(-(2**23), 2**23, size=(n, 8))
    counters = np.arange(n) % 256
    return counters, counts, encode_packets(counters, counts)


def test_round_trip_bit_exact_and_layout():
    counters, counts, data = stream(300)
    assert len(data) == 300 * 33 and data[0] == 0xA0 and data[32] == 0xC0
    packets, skipped = decode_stream(bytearray(data))
    assert skipped == 0 and len(packets) == 300
    np.testing.assert_array_equal([p.counter for p in packets], counters)
    np.testing.assert_array_equal(np.stack([p.channels_counts for p in packets]), counts)


@pytest.mark.parametrize(
    ("raw", "value"),
    [(b"\x00\x00\x01", 1), (b"\xff\xff\xff", -1), (b"\x7f\xff\xff", 2**23 - 1), (b"\x80\x00\x00", -(2**23)),
     (b"\xff\x00\x00", -65536)],
)
def test_24_bit_sign_extension(raw, value):
    packet = bytes([0xA0, 5]) + raw * 8 + bytes(6) + b"\xc0"
    (p,), _ = decode_stream(bytearray(packet))
    assert p.channels_counts.dtype == np.int32
    assert p.channels_counts.tolist() == [value] * 8
    assert encode_packet(5, [value] * 8) == packet


def test_scale_and_accelerometer():
    assert proto.scale_v_per_count(24) == pytest.approx(4.5 / 24 / (2**23 - 1))
    np.testing.assert_allclose(proto.counts_to_volts(np.array([2**23 - 1]), 24), [4.5 / 24])
    np.testing.assert_allclose(proto.counts_to_volts(np.array([[1, 1]]), np.array([24, 1])), [[4.5 / 24 / (2**23 - 1), 4.5 / (2**23 - 1)]])
    # float32 volts keep every 24-bit count: np.rint(v / scale) gives them back
    c = np.arange(-(2**23), 2**23, 4099, dtype=np.int64)
    s = proto.scale_v_per_count(24)
    np.testing.assert_array_equal(np.rint((c * s).astype(np.float32).astype(np.float64) / s), c)
    (p,), _ = decode_stream(bytearray(encode_packet(0, [0] * 8, accel_counts=(8000, -8000, 16))))
    assert p.accel_counts == (8000, -8000, 16)
    assert 8000 * proto.ACCEL_G_PER_COUNT == pytest.approx(1.0)
    (q,), _ = decode_stream(bytearray(encode_packet(1, [0] * 8)))
    assert q.accel_counts is None  # no new reading on this packet
    assert proto.volts_to_counts(np.array([1.0]), 24)[0] == 2**23 - 1  # clipped


def test_partial_packet_kept_for_next_call():
    _, counts, data = stream(3)
    buf = bytearray(data[:50])
    packets, skipped = decode_stream(buf)
    assert len(packets) == 1 and skipped == 0 and bytes(buf) == data[33:50]
    buf += data[50:]
    packets, skipped = decode_stream(buf)
    assert [p.counter for p in packets] == [1, 2] and not buf


def test_resync_after_garbage_loses_no_good_packet():
    _, counts, data = stream(20, seed=1)
    pk = [data[i * 33 : (i + 1) * 33] for i in range(20)]
    # headers and footer-like bytes; 0xA0 ... 0xC0 at distance 32 even frames a fake packet
    garbage = bytes([0xA0, 1, 2, 0xA0]) + bytes(range(0x90, 0xC8))
    buf = bytearray(pk[0] + garbage + pk[1] + b"\xa0\xc0\xc0" + b"".join(pk[2:]))
    packets, skipped = decode_stream(buf, final=True)
    assert [p.counter for p in packets] == list(range(20))
    assert skipped == len(garbage) + 3


def test_truncated_packet_then_good_packets():
    _, counts, data = stream(10, seed=2)
    pk = [data[i * 33 : (i + 1) * 33] for i in range(10)]
    # packet 3 is cut after 20 bytes; its header would frame 32 bytes that reach into packet 4
    for keep in range(1, 33):
        buf = bytearray(b"".join(pk[:3]) + pk[3][:keep] + b"".join(pk[4:]))
        packets, skipped = decode_stream(buf, final=True)
        assert [p.counter for p in packets] == [0, 1, 2, 4, 5, 6, 7, 8, 9], keep
        assert skipped == keep


def test_false_frame_straddling_real_packet():
    # A stray 0xA0 whose +32 byte is a footer value inside the real packet that follows.
    counts = np.zeros((1, 8), dtype=np.int64)
    counts[0, 6] = (0xC3 << 16) - (1 << 24)  # byte 20 of the packet (channel 7, MSB) = 0xC3
    real = encode_packets(np.array([9]), counts)
    stray = bytes([0xA0]) + bytes(11)  # 0xA0 + 32 lands on byte 20 of `real`
    buf = bytearray(stray + real)
    starts, consumed, skipped = find_frames(buf, synced=False)
    assert starts == [len(stray)] and skipped == len(stray)  # the stray frame is not chained: rejected
    packets, skipped = decode_stream(buf, synced=False, final=True)
    assert [p.counter for p in packets] == [9] and skipped == len(stray)


def test_random_corruption_fuzz_keeps_packets_outside_corruption():
    rng = np.random.default_rng(7)
    counters, counts, data = stream(2000, seed=3)
    out, corrupted = bytearray(), set()
    for i in range(2000):
        pkt = data[i * 33 : (i + 1) * 33]
        if rng.random() < 0.05:
            out += rng.integers(0, 256, int(rng.integers(1, 80)), dtype=np.uint8).tobytes()
        if rng.random() < 0.03:
            pkt = pkt[: int(rng.integers(1, 33))]
            corrupted.add(i)
        out += pkt
    # feed in random-sized reads, as the serial port delivers them
    buf, got, pos = bytearray(), [], 0
    while pos < len(out):
        step = int(rng.integers(1, 200))
        buf += out[pos : pos + step]
        pos += step
        packets, _ = decode_stream(buf)
        got += packets
    packets, _ = decode_stream(buf, final=True)
    got += packets
    idx = [p.counter for p in got]
    expected = [i for i in range(2000) if i not in corrupted]
    lost = len(expected) - len(got)
    assert lost <= 3, lost  # only the rare garbage that frames a valid-looking packet costs one
    assert set(idx) <= set(counters.tolist())
    good = 0
    for p in got:
        # a packet is real if its counts match some sent packet with that counter
        cands = np.flatnonzero(counters == p.counter)
        good += any(np.array_equal(p.channels_counts, counts[c]) for c in cands)
    assert good >= len(got) - 3


def test_daisy_channel_commands_and_parse():
    assert proto.channel_command(16, 1) == b"xI000110X"
    assert proto.parse_channel_command(b"xI000110X") == (16, 1, False)
    assert proto.parse_channel_command(proto.channel_command(4, 6, power_down=True)) == (4, 6, True)
    with pytest.raises(ValueError):
        proto.channel_command(17, 24)
    with pytest.raises(ValueError):
        proto.scale_v_per_count(3)


def test_encode_rejects_out_of_range():
    with pytest.raises(ValueError, match="24 bits"):
        encode_packets(np.array([0]), np.full((1, 8), 2**23))
    with pytest.raises(ValueError, match="footer"):
        encode_packets(np.array([0]), np.zeros((1, 8)), footer=0xC9)
