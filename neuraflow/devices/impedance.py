"""Electrode impedance of an OpenBCI Cyton: :func:`measure_impedance`.

The ADS1299 injects a 6 nA (peak) AC lead-off current at 31.5 Hz into a
channel's P input when the lead-off command ``z CHANNEL PCHAN NCHAN Z`` turns it
on (``z110Z``: channel 1, P side on, N side off). The current flows through the
electrode and the board's 2.2 kOhm series resistor, so the 31.5 Hz component of
the channel has peak amplitude ``V = (Z + 2.2 kOhm) * 6 nA``; OpenBCI's formula::

    Z = sqrt(2) * V_rms / 6 nA - 2.2 kOhm  =  V_peak / 6 nA - 2.2 kOhm

``V_peak`` is estimated by a single-bin DFT (a lock-in at exactly 31.5 Hz) over
the recorded samples of each channel, after removing mean and linear trend and
applying a Hann window (``V_peak = 2 |sum w x e^{-i 2 pi f n / fs}| / sum w``),
which keeps the large DC offsets, drift and 50/60 Hz of a Cyton out of the bin.

Ganglion: the board measures impedance itself (``z`` / ``Z`` over BLE) and
sends ohms per channel; :func:`measure_impedance` hands a
:class:`~neuraflow.devices.ble.Ganglion` to
:meth:`~neuraflow.devices.ble.Ganglion.measure_impedance`. Other devices raise
``DeviceError``. No Ray here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from neuraflow.devices.openbci import protocol as proto
from neuraflow.devices.openbci.cyton import OpenBCICyton
from neuraflow.errors import DeviceError, PipelineDefinitionError

__all__ = ["LEAD_OFF_HZ", "lead_off_command", "measure_impedance", "tone_amplitude"]

_WHERE = "devices.measure_impedance"
LEAD_OFF_HZ = 31.5
"""Frequency of the Cyton's AC lead-off drive."""
LEAD_OFF_A = 6e-9
"""Peak lead-off current, amperes."""
SERIES_OHM = 2200.0
"""Series resistor on every Cyton input, ohms."""


def lead_off_command(channel: int, *, p_side: bool = True, n_side: bool = False) -> bytes:
    """The 5-byte lead-off command for a 1-based ``channel`` (1-16).

    >>> lead_off_command(1)
    b'z110Z'
    >>> lead_off_command(9, p_side=False)
    b'zQ00Z'
    """
    if not 1 <= channel <= 16:
        raise ValueError(f"lead_off_command: channel={channel!r} must be in 1-16.")
    code = str(channel) if channel <= 8 else proto.DAISY_CHANNEL_CODES[channel - 9]
    return f"z{code}{int(p_side)}{int(n_side)}Z".encode()


def tone_amplitude(x: np.ndarray, sfreq: float, freq_hz: float) -> np.ndarray:
    """Peak amplitude of the ``freq_hz`` component of each row of ``x`` (single-bin Hann DFT).

    Parameters
    ----------
    x : ndarray, shape (n_channels, n_samples)
    sfreq, freq_hz : float

    Returns
    -------
    ndarray, shape (n_channels,), same unit as ``x``.
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[-1]
    t = np.arange(n, dtype=np.float64)
    centred = t - t.mean()
    x = x - x.mean(axis=-1, keepdims=True)
    slope = (x @ centred) / float(centred @ centred)
    x = x - slope[:, None] * centred[None]
    w = np.hanning(n + 2)[1:-1]  # no zero end points
    ref = w * np.exp(-2j * np.pi * freq_hz * t / sfreq)
    return 2.0 * np.abs(x @ ref) / w.sum()


def _send(device: OpenBCICyton, cmd: bytes) -> bytes:
    device._ser.write(cmd)  # noqa: SLF001 - same package; the device owns the port
    return device._reply(cmd)  # noqa: SLF001


def _stop_streaming(device: OpenBCICyton) -> None:
    ser = device._ser  # noqa: SLF001
    ser.write(b"s")
    time.sleep(device.options.stop_settle_s)
    ser.reset_input_buffer()


def measure_impedance(
    device: Any,
    seconds: float = 2.0,
    *,
    channels: Sequence[int] | None = None,
    freq_hz: float = LEAD_OFF_HZ,
) -> dict[str, float]:
    """Measure electrode impedances of a Cyton or a Ganglion, in kOhm per channel.

    Turns the P-side lead-off drive on for ``channels`` (all EEG channels at once:
    every channel has its own current source), records ``seconds`` of samples,
    turns the drive off again and leaves the device as it found it (open and
    streaming, or closed).

    Parameters
    ----------
    device : OpenBCICyton or Ganglion
        Open or closed; it must not be read by anyone else meanwhile (a
        :class:`~neuraflow.devices.service.DeviceManager` pauses its reader).
        A Ganglion reports ohms itself (``freq_hz`` does not apply; with
        ``channels=None`` its reference is included as ``"REF"``).
    seconds : float
        Samples to record (``round(seconds * sfreq)``, >= 1 s recommended: the
        DFT bin is ``1 / seconds`` Hz wide).
    channels : sequence of int or None
        1-based channels; ``None`` for all EEG channels.
    freq_hz : float
        Lead-off frequency (31.5 Hz).

    Returns
    -------
    dict
        ``{channel name: kOhm}`` (may be slightly negative for a shorted input: the
        series resistor is subtracted; ``nan`` when a drive command was refused).

    Raises
    ------
    DeviceError
        Neither a Cyton nor a Ganglion, the board refused a command, or too few
        samples (values) arrived.
    """
    from neuraflow.devices.ble.ganglion import Ganglion

    if isinstance(device, Ganglion):
        return device.measure_impedance(seconds, channels=channels)
    if not isinstance(device, OpenBCICyton):
        raise DeviceError(
            f"{_WHERE}: impedance is implemented for OpenBCICyton and Ganglion, not {type(device).__name__}."
        )
    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
        raise PipelineDefinitionError(f"{_WHERE}: seconds={seconds!r} must be a finite number > 0.")
    chans = list(range(1, device.n_eeg + 1)) if channels is None else [int(c) for c in channels]
    if not chans or any(not 1 <= c <= device.n_eeg for c in chans):
        raise PipelineDefinitionError(f"{_WHERE}: channels={channels!r} must be in 1-{device.n_eeg}.")
    was_open = device._ser is not None  # noqa: SLF001
    if not was_open:
        device.open()
    n_want = max(1, round(seconds * device.sfreq))
    try:
        _stop_streaming(device)
        for ch in chans:
            reply = _send(device, lead_off_command(ch))
            if b"Success" not in reply:
                raise DeviceError(f"{_WHERE}: the board refused lead-off on channel {ch}: {reply!r}")
        device._reset_stream()  # noqa: SLF001 - fresh framing and clock: the board restarts its counter
        device._ser.reset_input_buffer()  # noqa: SLF001
        device._ser.write(b"b")  # noqa: SLF001
        device._last_packet_s = time.monotonic()  # noqa: SLF001
        blocks, got = [], 0
        deadline = time.monotonic() + 3.0 * seconds + 2.0
        while got < n_want:
            if time.monotonic() > deadline:
                raise DeviceError(f"{_WHERE}: only {got} of {n_want} samples within {3.0 * seconds + 2.0:.1f} s.")
            chunk = device.read(0.1)
            if chunk is not None:
                blocks.append(np.asarray(chunk.data[: device.n_eeg], dtype=np.float64))
                got += chunk.n_samples
        data = np.concatenate(blocks, axis=1)[:, :n_want]
        _stop_streaming(device)
        for ch in chans:
            _send(device, lead_off_command(ch, p_side=False))
    finally:
        device.close()
        device.drain_events()
    if was_open:
        device.open()
    amp_v = tone_amplitude(data[[c - 1 for c in chans]], device.sfreq, freq_hz)
    ohm = amp_v / LEAD_OFF_A - SERIES_OHM
    names = device.info.channels
    return {names[c - 1]: float(z / 1e3) for c, z in zip(chans, ohm)}
