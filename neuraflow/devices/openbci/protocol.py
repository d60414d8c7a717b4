"""OpenBCI Cyton serial protocol: packet framing, decoding and encoding. Pure functions, no I/O.

A Cyton streams 33-byte packets at 250 Hz over a 115200-baud serial link::

    byte 0       0xA0 header
    byte 1       sample counter, 0-255, wraps
    bytes 2-25   8 channels x 24-bit big-endian two's complement (ADS1299 counts)
    bytes 26-31  aux: with footer 0xC0, accelerometer X, Y, Z as 16-bit big-endian
                 signed (all zero on packets without a new accelerometer reading,
                 about 9 of 10: it samples at 25 Hz)
    byte 32      footer 0xC0-0xC6 (0xC0 standard, 0xC1 raw aux, 0xC3-0xC6 time-stamped)

With a Daisy module, packets alternate: odd counters carry the board's channels
1-8, even counters the Daisy's channels 9-16, so the 16-channel rate is 125 Hz.

Framing and resynchronisation (:func:`find_frames`): a frame is a 0xA0 byte
followed 32 bytes later by a valid footer. A stray 0xA0 inside garbage, or the
header of a truncated packet, can look like a frame that swallows the start of
the next good packet; so a candidate whose following byte is not a 0xA0 header
is only accepted if no valid frame starts inside it. This costs no latency
while the stream is in sync: only right after corruption does the decoder wait
for at most one more packet before deciding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HEADER = 0xA0
"""First byte of every packet."""
FOOTERS = frozenset(range(0xC0, 0xC7))
"""Valid last bytes (0xC0 standard with accelerometer; 0xC1-0xC6 other aux formats)."""
FOOTER_STANDARD = 0xC0
PACKET_SIZE = 33
N_BOARD_CHANNELS = 8
VREF_V = 4.5
"""ADS1299 reference voltage of the Cyton, volts."""
GAINS = (1, 2, 4, 6, 8, 12, 24)
"""Programmable gains of the ADS1299; the index is the gain code of the ``x`` command."""
DEFAULT_GAIN = 24
ACCEL_G_PER_COUNT = 0.002 / 2**4
"""LIS3DH accelerometer scale at +-4 g, g per LSB."""
BANNER_END = b"$$$"
"""Every non-streaming reply of firmware v2+ ends with this."""
DAISY_CHANNEL_CODES = "QWERTYUI"
"""Channel characters of the ``x`` command for channels 9-16 (1-8 are ``"1"``-``"8"``)."""
SAMPLE_RATE_CODES = {16000: "0", 8000: "1", 4000: "2", 2000: "3", 1000: "4", 500: "5", 250: "6"}
"""Codes of the ``~`` sample-rate command (only 250 Hz fits a 115200-baud serial link)."""

_FULL_SCALE = 2**23 - 1
_OFFSETS = np.arange(PACKET_SIZE)
_BIG_ENDIAN_24 = np.array([1 << 16, 1 << 8, 1], dtype=np.int32)


@dataclass(frozen=True, slots=True)
class Packet:
    """One decoded Cyton packet.

    Attributes
    ----------
    counter : int
        Sample counter, 0-255 (wraps).
    channels_counts : ndarray, shape (8,), int32
        Signed 24-bit ADS1299 counts of the 8 channels of this packet.
    aux : bytes
        The 6 aux bytes (accelerometer on footer 0xC0).
    footer : int
        0xC0-0xC6.
    """

    counter: int
    channels_counts: np.ndarray
    aux: bytes
    footer: int

    @property
    def accel_counts(self) -> tuple[int, int, int] | None:
        """Accelerometer X, Y, Z counts, or ``None`` (not a 0xC0 packet, or no new reading)."""
        if self.footer != FOOTER_STANDARD or not any(self.aux):
            return None
        return tuple(int.from_bytes(self.aux[i : i + 2], "big", signed=True) for i in (0, 2, 4))


@dataclass(frozen=True, slots=True)
class PacketArrays:
    """Decoded packets as arrays (what the device uses: no per-packet objects).

    Attributes
    ----------
    counters : ndarray, shape (n_packets,), int64
    counts : ndarray, shape (n_packets, 8), int32
    aux : ndarray, shape (n_packets, 6), uint8
    footers : ndarray, shape (n_packets,), uint8
    """

    counters: np.ndarray
    counts: np.ndarray
    aux: np.ndarray
    footers: np.ndarray

    def __len__(self) -> int:
        return len(self.counters)

    def accel_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(valid, xyz)``: which packets hold a new accelerometer reading, and the counts.

        Returns
        -------
        valid : ndarray, shape (n_packets,), bool
            Footer 0xC0 and aux not all zero.
        xyz : ndarray, shape (n_packets, 3), int32
            Signed 16-bit big-endian counts (meaningful where ``valid``).
        """
        aux = self.aux.astype(np.int32)
        xyz = (aux[:, 0::2] << 8) | aux[:, 1::2]
        xyz = (xyz ^ 0x8000) - 0x8000
        valid = (self.footers == FOOTER_STANDARD) & self.aux.any(axis=1)
        return valid, xyz


def find_frames(
    buffer: bytes | bytearray, *, synced: bool = True, final: bool = False
) -> tuple[list[int], int, int]:
    """Locate packets in ``buffer``, resynchronising after corrupt or partial bytes.

    Parameters
    ----------
    buffer : bytes or bytearray
        Raw bytes from the serial port; must start where the previous call stopped.
    synced : bool
        The previous call ended right after an accepted packet (so a packet at
        offset 0 that ends the buffer is accepted without waiting for the next byte).
    final : bool
        No more bytes will follow: decide every candidate now instead of waiting
        for the bytes that confirm it.

    Returns
    -------
    starts : list of int
        Offsets of the accepted packets, increasing.
    consumed : int
        Bytes at the start of ``buffer`` that are done with (packets and garbage);
        the caller drops them and keeps the rest for the next call.
    skipped : int
        How many of the consumed bytes were garbage (not part of an accepted packet).
    """
    starts: list[int] = []
    n = len(buffer)
    i = 0
    skipped = 0
    in_sync = synced
    find = buffer.find
    while True:
        j = find(HEADER, i)
        if j < 0:
            skipped += n - i
            return starts, n, skipped
        if j + PACKET_SIZE > n:  # partial packet: wait for the rest
            skipped += j - i
            return starts, j, skipped
        if buffer[j + PACKET_SIZE - 1] not in FOOTERS:
            skipped += j + 1 - i
            i = j + 1
            in_sync = False
            continue
        nxt = j + PACKET_SIZE
        if nxt == n and not final and not (in_sync and j == i) and find(HEADER, j + 1, nxt) >= 0:
            # Right after garbage, a frame ending the buffer may be a false one
            # overlapping a real packet still arriving: wait for the next byte.
            skipped += j - i
            return starts, j, skipped
        if nxt < n and buffer[nxt] != HEADER:
            if not in_sync:
                # Just after garbage, a frame that is not chained to a next header is
                # most likely garbage too (random bytes do frame: 0xA0 ... 0xC0-0xC6).
                skipped += j + 1 - i
                i = j + 1
                continue
            # In sync but followed by garbage: a true packet, or a false frame (a
            # truncated packet's header) overlapping the real packet that starts inside it?
            inner = _inner_frame(buffer, j, n)
            if inner is None and not final:  # cannot tell yet: wait for more bytes
                skipped += j - i
                return starts, j, skipped
            if inner:
                skipped += inner - i
                i = inner
                in_sync = False
                continue
        skipped += j - i
        starts.append(j)
        i = nxt
        in_sync = True


def _inner_frame(buffer: bytes | bytearray, j: int, n: int) -> int | bool | None:
    """Offset of a valid frame starting inside the candidate at ``j``; False if none; None if unknown yet."""
    k = j
    while True:
        k = buffer.find(HEADER, k + 1, j + PACKET_SIZE)
        if k < 0:
            return False
        if k + PACKET_SIZE > n:
            return None
        if buffer[k + PACKET_SIZE - 1] in FOOTERS:
            return k


def decode_frames(buffer: bytes | bytearray, starts: list[int]) -> PacketArrays:
    """Decode the packets at ``starts`` (from :func:`find_frames`) into arrays, vectorised."""
    raw = np.frombuffer(bytes(buffer), dtype=np.uint8)
    if not starts:
        empty = np.zeros((0,), np.uint8)
        return PacketArrays(np.zeros(0, np.int64), np.zeros((0, 8), np.int32), np.zeros((0, 6), np.uint8), empty)
    frames = raw[np.asarray(starts)[:, None] + _OFFSETS]  # (n, 33)
    counts = frames[:, 2:26].reshape(-1, N_BOARD_CHANNELS, 3).astype(np.int32) @ _BIG_ENDIAN_24
    counts = (counts ^ 0x800000) - 0x800000  # sign-extend 24 -> 32 bits
    return PacketArrays(
        counters=frames[:, 1].astype(np.int64),
        counts=np.ascontiguousarray(counts, dtype=np.int32),
        aux=np.ascontiguousarray(frames[:, 26:32]),
        footers=frames[:, 32].copy(),
    )


def decode_stream(buffer: bytearray, *, synced: bool = True, final: bool = False) -> tuple[list[Packet], int]:
    """Decode and remove the complete packets at the start of ``buffer``.

    Parameters
    ----------
    buffer : bytearray
        Bytes received so far. Modified in place: decoded packets and skipped
        garbage are removed, an incomplete tail is kept for the next call.
    synced, final : bool
        See :func:`find_frames`.

    Returns
    -------
    packets : list of Packet
    n_bytes_skipped : int
        Garbage bytes dropped while resynchronising.

    Examples
    --------
    >>> good = encode_packet(7, [1, -1, 0, 0, 0, 0, 0, 2**23 - 1])
    >>> buf = bytearray(b"\\x00\\xa0junk" + good + good[:10])
    >>> packets, skipped = decode_stream(buf)
    >>> packets[0].counter, packets[0].channels_counts.tolist()[:2], skipped, len(buf)
    (7, [1, -1], 6, 10)
    """
    starts, consumed, skipped = find_frames(buffer, synced=synced, final=final)
    arrays = decode_frames(buffer, starts)
    del buffer[:consumed]
    packets = [
        Packet(int(c), arrays.counts[k], bytes(arrays.aux[k]), int(arrays.footers[k]))
        for k, c in enumerate(arrays.counters)
    ]
    return packets, skipped


def encode_packets(
    counters: np.ndarray, counts: np.ndarray, aux: np.ndarray | None = None, footer: int = FOOTER_STANDARD
) -> bytes:
    """Encode packets (vectorised; the emulator's path).

    Parameters
    ----------
    counters : array of int, shape (n_packets,)
        Sample counters (taken modulo 256).
    counts : array of int, shape (n_packets, 8)
        Signed 24-bit counts, in [-2**23, 2**23 - 1].
    aux : array of uint8, shape (n_packets, 6), optional
        Aux bytes (zeros when omitted).
    footer : int
        Footer byte, 0xC0-0xC6.

    Returns
    -------
    data : bytes, len 33 * n_packets
    """
    counts = np.asarray(counts, dtype=np.int64)
    if counts.ndim != 2 or counts.shape[1] != N_BOARD_CHANNELS:
        raise ValueError(f"encode_packets: counts must have shape (n, 8), got {counts.shape}.")
    if counts.size and (counts.min() < -(2**23) or counts.max() > _FULL_SCALE):
        raise ValueError("encode_packets: counts must fit in 24 bits, [-2**23, 2**23 - 1].")
    if footer not in FOOTERS:
        raise ValueError(f"encode_packets: footer=0x{footer:02X} is not one of 0xC0-0xC6.")
    n = counts.shape[0]
    out = np.empty((n, PACKET_SIZE), dtype=np.uint8)
    out[:, 0] = HEADER
    out[:, 1] = np.asarray(counters, dtype=np.int64) % 256
    u = counts & 0xFFFFFF
    body = out[:, 2:26].reshape(n, N_BOARD_CHANNELS, 3)
    body[:, :, 0] = u >> 16
    body[:, :, 1] = (u >> 8) & 0xFF
    body[:, :, 2] = u & 0xFF
    out[:, 26:32] = 0 if aux is None else np.asarray(aux, dtype=np.uint8)
    out[:, 32] = footer
    return out.tobytes()


def encode_packet(counter: int, channels_counts, accel_counts=None, footer: int = FOOTER_STANDARD) -> bytes:
    """Encode one packet; ``accel_counts`` is an (x, y, z) of signed 16-bit counts or ``None``."""
    aux = None
    if accel_counts is not None:
        aux = np.frombuffer(b"".join(int(v).to_bytes(2, "big", signed=True) for v in accel_counts), np.uint8)[None]
    return encode_packets(np.array([counter]), np.asarray(channels_counts)[None], aux, footer)


def scale_v_per_count(gain: int) -> float:
    """Volts per ADS1299 count at ``gain``: ``4.5 V / gain / (2**23 - 1)``.

    >>> round(scale_v_per_count(24) * 1e6, 6)  # uV per count at the default gain
    0.022352
    """
    if gain not in GAINS:
        raise ValueError(f"scale_v_per_count: gain={gain!r} is not one of {GAINS}.")
    return VREF_V / gain / _FULL_SCALE


def counts_to_volts(counts: np.ndarray, gain: int | np.ndarray) -> np.ndarray:
    """Convert ADS1299 counts to volts (float64), per channel when ``gain`` is an array.

    Parameters
    ----------
    counts : ndarray of int, shape (..., n_channels)
    gain : int or ndarray of int, shape (n_channels,)

    Returns
    -------
    volts : ndarray of float64, same shape as ``counts``
    """
    gains = np.atleast_1d(np.asarray(gain))
    scale = np.array([scale_v_per_count(int(g)) for g in gains])
    return np.asarray(counts, dtype=np.float64) * (scale if scale.size > 1 else scale[0])


def volts_to_counts(volts: np.ndarray, gain: int) -> np.ndarray:
    """Inverse of :func:`counts_to_volts` (rounded, clipped to 24 bits), int32."""
    counts = np.rint(np.asarray(volts, dtype=np.float64) / scale_v_per_count(gain))
    return np.clip(counts, -(2**23), _FULL_SCALE).astype(np.int32)


def channel_command(channel: int, gain: int, *, power_down: bool = False) -> bytes:
    """The ``x``...``X`` channel-settings command for a 1-based ``channel`` (1-16).

    Input type normal, included in bias, SRB2 connected, SRB1 disconnected:
    the firmware defaults, with only the gain changed.

    >>> channel_command(3, 8)
    b'x3040110X'
    >>> channel_command(9, 24)
    b'xQ060110X'
    """
    if not 1 <= channel <= 16:
        raise ValueError(f"channel_command: channel={channel!r} must be in 1-16.")
    code = str(channel) if channel <= 8 else DAISY_CHANNEL_CODES[channel - 9]
    return f"x{code}{int(power_down)}{GAINS.index(gain)}0110X".encode()


def parse_channel_command(cmd: bytes) -> tuple[int, int, bool]:
    """Parse a 9-byte ``x``...``X`` command into ``(channel 1-16, gain, power_down)``."""
    if len(cmd) != 9 or cmd[:1] != b"x" or cmd[-1:] != b"X":
        raise ValueError(f"not a channel command: {cmd!r}")
    code = chr(cmd[1])
    channel = int(code) if code in "12345678" else DAISY_CHANNEL_CODES.index(code) + 9
    return channel, GAINS[int(chr(cmd[3]))], cmd[2:3] == b"1"
