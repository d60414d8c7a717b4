"""Muse and Ganglion packet decoders on bytes built from the published formats (no Bluetooth, no I/O)."""

from __future__ import annotations

import numpy as np
import pytest

from neuraflow.devices.ble import decoders as dec
from neuraflow.devices.ble.fake_backend import (
    FakeGanglion,
    encode_ganglion_deltas,
    encode_ganglion_raw,
    encode_muse_eeg,
    firmware_deltas,
)


# ------------------------------------------------------------------- Muse
def test_muse_packet_by_hand():
    # index 0x0102, samples 0x123, 0x456, then 0 / 4095 pairs: nibbles packed MSB first
    payload = bytes([0x01, 0x02, 0x12, 0x34, 0x56]) + bytes([0x00, 0x0F, 0xFF]) * 5
    index, counts = dec.decode_muse_eeg(payload)
    assert index == 0x0102
    assert counts.tolist() == [0x123, 0x456] + [0, 4095] * 5


def test_muse_round_trip_edges_and_scale():
    rng = np.random.default_rng(0)
    counts = np.concatenate([[0, 4095, 2048, 2047], rng.integers(0, 4096, 8)])
    index, got = dec.decode_muse_eeg(encode_muse_eeg(65535, counts))
    assert index == 65535 and got.tolist() == counts.tolist()
    volts = dec.muse_counts_to_volts(got[:3])
    np.testing.assert_allclose(volts * 1e6, [-1000.0, 1000.0 - 0.48828125, 0.0])
    with pytest.raises(ValueError, match="20 bytes"):
        dec.decode_muse_eeg(b"\x00" * 19)


def test_muse_commands_and_ids():
    assert dec.muse_command("h") == b"\x02h\n" and dec.muse_command("d") == b"\x02d\n"
    assert dec.muse_command("p21") == b"\x04p21\n"
    assert dec.MUSE_EEG_CHARACTERISTICS[0].startswith("273e0003") and dec.MUSE_EEG_CHARACTERISTICS[-1].startswith("273e0007")
    with pytest.raises(ValueError, match="cmd"):
        dec.muse_command("")


def _muse_round(asm: dec.MuseAssembler, index: int, skip: tuple[int, ...] = ()):
    out = []
    for ch in range(asm.n_channels):
        if ch not in skip:
            out += asm.feed(ch, encode_muse_eeg(index, np.full(12, 100 * ch + index % 7)))
    return out


def test_muse_assembler_joins_channels_wraps_and_reports_missing():
    asm = dec.MuseAssembler(5)
    assert [(i, m) for i, m, _ in _muse_round(asm, 65534)] == [(65534, 0)]
    assert [(i, m) for i, m, _ in _muse_round(asm, 65535)] == [(65535, 0)]
    done = _muse_round(asm, 0)  # the 16-bit index wraps: unwrapped 65536
    assert [(i, m) for i, m, _ in done] == [(65536, 0)]
    assert done[0][2].shape == (5, 12) and done[0][2][3, 0] == 300  # channel 3, raw index 0
    assert _muse_round(asm, 1, skip=(2,)) == []  # one channel of index 1 lost
    assert [(i, m) for i, m, _ in _muse_round(asm, 4)] == [(65540, 3)]  # 1 incomplete, 2-3 lost


def test_unwrap_index_both_directions():
    assert dec.unwrap_index(5, None, 256) == 5
    assert dec.unwrap_index(1, 255, 256) == 257
    assert dec.unwrap_index(254, 256, 256) == 254


# --------------------------------------------------------------- Ganglion
def test_ganglion_raw_packet_sign_extension():
    counts = [2**23 - 1, -(2**23), -1, 0]
    pkt = dec.decode_ganglion_packet(encode_ganglion_raw(counts))
    assert pkt.kind == "raw" and pkt.values.tolist() == [counts]
    # by hand: channel 1 = 0xFFFFFE = -2
    pkt = dec.decode_ganglion_packet(bytes([0, 0xFF, 0xFF, 0xFE]) + bytes(16))
    assert pkt.values[0, 0] == -2


@pytest.mark.parametrize("bits", [18, 19])
def test_ganglion_lsb_sign_rule(bits):
    # field with bit 0 set is negative (sign-extended from bit bits-1); bit 0 clear is positive
    fields = [0b110, 0b111, (1 << bits) - 1, (1 << (bits - 1)) - 2, 1 << (bits - 1), 1, 0, 2]
    word = 0
    for f in fields:
        word = (word << bits) | f
    deltas = dec.unpack_ganglion_deltas(word.to_bytes(bits, "big"), bits)
    expected = [f - (1 << bits) if f & 1 else f for f in fields]
    assert deltas.reshape(-1).tolist() == expected
    assert deltas[0, 1] == 7 - (1 << bits) and deltas[0, 2] == -1 and deltas[1, 1] == 1 - (1 << bits)
    assert deltas[1, 0] == 1 << (bits - 1)  # MSB set, bit 0 clear: positive (the MSB is not the sign)


def test_ganglion_nodejs_reference_values():
    # the NodeJS driver's tests: 3-byte buffers holding a 19-bit number
    def from3(buf: bytes, bits: int) -> int:
        word = int.from_bytes(buf, "big") & ((1 << bits) - 1)
        return int(dec.unpack_ganglion_deltas((word << (bits * 7)).to_bytes(bits, "big"), bits)[0, 0])

    assert from3(bytes([0x00, 0x06, 0x90]), 19) == 1680
    assert from3(bytes([0xFF, 0xFF, 0xFF]), 18) == -1


@pytest.mark.parametrize("bits", [18, 19])
def test_ganglion_delta_round_trip_with_firmware_encoder(bits):
    rng = np.random.default_rng(bits)
    prev = np.array([1000, -2000, 3, 2**22], dtype=np.int64)
    # deltas whose bit 0 is already their sign are exact; others lose 1 LSB, as on the board
    d = rng.integers(-(2 ** (bits - 2)), 2 ** (bits - 2), size=(2, 4))
    d = np.where(d < 0, d | 1, d & ~1)
    samples = np.stack([prev - d[0], prev - d[0] - d[1]])
    fw = firmware_deltas(prev, samples)
    np.testing.assert_array_equal(fw, d)
    pid = 7 if bits == 18 else 107
    pkt = dec.decode_ganglion_packet(encode_ganglion_deltas(pid, fw, bits=bits, aux=-5))
    assert pkt.kind == f"delta{bits}"
    np.testing.assert_array_equal(pkt.values, d)
    assert pkt.accel is None  # id 7 / 107: no accelerometer byte
    acc = dec.decode_ganglion_packet(encode_ganglion_deltas(2, fw, bits=18, aux=-5)).accel
    assert acc == (1, -5)  # id ending in 2: the y axis


def test_ganglion_odd_positive_delta_loses_one_lsb():
    prev = np.zeros(4, dtype=np.int64)
    samples = np.array([[-3, 3, -4, 4], [-3, 3, -4, 4]])  # deltas 3, -3, 4, -4
    fw = firmware_deltas(prev, samples)
    assert fw[0].tolist() == [2, -3, 4, -3]  # bit 0 replaced by the sign bit


def test_ganglion_decompressor_accumulates_and_reports_lost_packets():
    src = FakeGanglion().notifications()
    packets = [next(src)[0][1] for _ in range(151)]  # raw + 150 delta packets (ids 101-200, 101-150)
    decomp = dec.GanglionDecompressor()
    got, missing = [], []
    for k, p in enumerate(packets):
        if k in (10, 11, 12):  # three packets lost: 6 samples
            continue
        out = decomp.feed(p)
        got.append(out.counts)
        missing.append(out.n_missing)
    assert missing.count(6) == 1 and sum(missing) == 6
    x = np.concatenate(got).T
    truth = FakeGanglion.counts(0, 301)
    np.testing.assert_array_equal(x[:, :19], truth[:, :19])  # exact before the loss
    after = x[:, 19:]
    offset = after - truth[:, 25:]
    assert (offset == offset[:, :1]).all()  # after the loss: a constant offset per channel
    assert [p[0] for p in packets[:3]] == [0, 101, 102] and packets[100][0] == 200 and packets[101][0] == 101


def test_ganglion_raw_packet_resyncs_and_other_kinds():
    decomp = dec.GanglionDecompressor()
    early = decomp.feed(encode_ganglion_deltas(101, np.zeros((2, 4)), bits=19))
    assert early.counts.shape == (0, 4) and early.n_missing == 2  # no seed yet
    out = decomp.feed(encode_ganglion_raw([5, 6, 7, 8]))
    assert out.resync and out.counts.tolist() == [[5, 6, 7, 8]]
    imp = dec.decode_ganglion_packet(bytes([203]) + b"12345Z" + bytes(13))
    assert imp.kind == "impedance" and imp.impedance == (3, 12345)
    assert dec.decode_ganglion_packet(bytes([205]) + b"99" + bytes(17)).impedance == (0, 99)
    msg = dec.decode_ganglion_packet(bytes([207]) + b"OK$$$" + bytes(14))
    assert msg.kind == "ascii" and msg.text == "OK$$$"
    assert dec.ganglion_kind(250) == "unknown"
    assert dec.GANGLION_V_PER_COUNT == pytest.approx(1.2 / (8388607 * 1.5 * 51))


# ------------------------------------------------------- Muse PPG and IMU
def test_muse_ppg_packet_by_hand():
    # index 0x1234, then 6 unsigned 24-bit big-endian samples (muse-lsl: "uint:16,uint:24 x 6")
    payload = bytes([0x12, 0x34, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x01, 0x80, 0x00, 0x00,
                     0x01, 0x02, 0x03, 0x00, 0x00, 0x00, 0x7F, 0xFF, 0xFF])
    index, counts = dec.decode_muse_ppg(payload)
    assert index == 0x1234
    assert counts.tolist() == [16777215, 1, 8388608, 0x010203, 0, 8388607]
    with pytest.raises(ValueError, match="20 bytes"):
        dec.decode_muse_ppg(payload[:19])


def test_muse_imu_packet_by_hand_and_scales():
    # index 1, then 3 samples of (x, y, z) int16 big-endian (muse-js parseAccelerometer: x, y, z at +0, +2, +4)
    payload = bytes([0x00, 0x01,
                     0x7F, 0xFF, 0x80, 0x00, 0xFF, 0xFF,   # sample 0: 32767, -32768, -1
                     0x00, 0x01, 0x00, 0x02, 0x00, 0x03,   # sample 1: 1, 2, 3
                     0xFF, 0xFE, 0x01, 0x00, 0x40, 0x00])  # sample 2: -2, 256, 16384
    index, counts = dec.decode_muse_imu(payload)
    assert index == 1 and counts.shape == (3, 3)
    assert counts[:, 0].tolist() == [32767, -32768, -1]  # counts[axis, sample]
    assert counts[:, 1].tolist() == [1, 2, 3] and counts[:, 2].tolist() == [-2, 256, 16384]
    # muse-lsl constants; 16384 counts = 1 g (+-2 g range), full scale ~ 245 deg/s
    assert dec.MUSE_ACC_G_PER_COUNT == 0.0000610352 and dec.MUSE_GYRO_DPS_PER_COUNT == 0.0074768
    assert 16384 * dec.MUSE_ACC_G_PER_COUNT == pytest.approx(1.0, abs=1e-5)
    assert 32767 * dec.MUSE_GYRO_DPS_PER_COUNT == pytest.approx(245.0, abs=0.01)
    with pytest.raises(ValueError, match="20 bytes"):
        dec.decode_muse_imu(payload + b"\x00")


def test_muse_aux_sensor_ids_match_published_tables():
    # muse-lsl constants.py / muse-js muse.ts: 0009 gyro, 000a accelerometer, 000b telemetry, 000f-0011 PPG
    assert dec.MUSE_GYRO_CHARACTERISTIC.startswith("273e0009")
    assert dec.MUSE_ACC_CHARACTERISTIC.startswith("273e000a")
    assert [u[:8] for u in dec.MUSE_PPG_CHARACTERISTICS] == ["273e000f", "273e0010", "273e0011"]
    assert (dec.MUSE_PPG_SFREQ, dec.MUSE_PPG_SAMPLES_PER_PACKET, dec.MUSE_IMU_SFREQ) == (64.0, 6, 52.0)


def test_muse_ppg_and_imu_round_trip_and_assembly():
    from neuraflow.devices.ble.fake_backend import encode_muse_imu, encode_muse_ppg

    rng = np.random.default_rng(1)
    ppg = np.concatenate([[0, (1 << 24) - 1], rng.integers(0, 1 << 24, 4)])
    assert dec.decode_muse_ppg(encode_muse_ppg(65535, ppg))[1].tolist() == ppg.tolist()
    imu = np.array([[-32768, 0, 32767], [-1, 1, 2], [100, -100, 5]])
    index, got = dec.decode_muse_imu(encode_muse_imu(7, imu))
    assert index == 7 and got.tolist() == imu.tolist()
    # PPG: three characteristics joined per index; index 11 lost on one channel -> reported missing at 12
    asm = dec.MuseAssembler(3, decode=dec.decode_muse_ppg)
    out = []
    for k in (10, 11, 12):
        for ch in range(3):
            if not (k == 11 and ch == 1):
                out += asm.feed(ch, encode_muse_ppg(k, np.full(6, 1000 * ch + k)))
    assert [(i, m) for i, m, _ in out] == [(10, 0), (12, 1)]
    assert out[0][2].shape == (3, 6) and out[1][2][2, 0] == 2012
    # IMU: one characteristic, a gap of two indices
    asm = dec.MuseAssembler(1, decode=dec.decode_muse_imu)
    got = [asm.feed(0, encode_muse_imu(k, imu))[0] for k in (65535, 0, 3)]
    assert [(i, m) for i, m, _ in got] == [(65535, 0), (65536, 0), (65539, 2)] and got[0][2].shape == (3, 3)
