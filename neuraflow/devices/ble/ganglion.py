"""OpenBCI Ganglion over BLE: :class:`Ganglion` (4 channels, 200 Hz, delta-compressed packets).

Start ``b``, stop ``s`` on the send characteristic; data arrives on the receive
characteristic (formats in :mod:`neuraflow.devices.ble.decoders`): a raw 24-bit
packet seeds the delta chain, then 18- or 19-bit delta packets carry 2 samples each.

A packet-id gap becomes a ``"drop"`` event (2 samples per lost packet). Until
the next raw packet, the values after a loss are off by the lost deltas (a
constant offset per channel, removed by any high-pass); the event's meta says
``offset_unknown: True``. Impedance packets (after ``z``) become
``"impedance"`` events, ASCII messages ``"message"`` events.

Impedance check (:meth:`Ganglion.measure_impedance`, also reached through
:func:`~neuraflow.devices.impedance.measure_impedance`, the device manager and
``POST /devices/{id}/impedance``): ``s`` stops the data, ``z`` starts the
board's impedance mode, which sends one ASCII ohm value per notification for
channels 1-4 (ids 201-204) and the reference (205) in turn; ``Z`` ends it. The
result is the median of the values of each channel over the window, in kOhm.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from neuraflow.chunk import StreamInfo
from neuraflow.devices.ble import decoders as dec
from neuraflow.devices.ble.link import BleStreamDevice
from neuraflow.errors import DeviceError, PipelineDefinitionError


class Ganglion(BleStreamDevice):
    """OpenBCI Ganglion EEG over BLE (bleak).

    Parameters
    ----------
    address : str
        Bluetooth address of the board.
    stream_id : str
        Name of the stream.
    chunk_size : int
        Samples per chunk (10 = 50 ms at 200 Hz).
    backend : None, "fake" or type
        bleak backend class (``None``: the platform's; ``"fake"``:
        :class:`~neuraflow.devices.ble.fake_backend.FakeBackend`).
    connect_timeout_s, stall_timeout_s : float
        Connection timeout; longest silence while streaming before ``DeviceError``.

    Attributes
    ----------
    info : StreamInfo
        Channels ``"EXG1"``-``"EXG4"``, units ``"V"`` (float32), 200 Hz;
        ``info.meta["scale_v_per_count"]`` is ``1.2 / (8388607 * 1.5 * 51)``.
    """

    _where = "devices.Ganglion"

    def __init__(self, address: str, *, stream_id: str = "ganglion", chunk_size: int = 10, backend: Any = None,
                 connect_timeout_s: float = 10.0, stall_timeout_s: float = 1.0) -> None:
        info = StreamInfo(
            stream_id=stream_id,
            sfreq=dec.GANGLION_SFREQ,
            channels=tuple(f"EXG{i + 1}" for i in range(dec.GANGLION_N_CHANNELS)),
            ch_types=("eeg",) * dec.GANGLION_N_CHANNELS,
            units=("V",) * dec.GANGLION_N_CHANNELS,
            meta={"device": "openbci-ganglion", "address": address, "scale_v_per_count": dec.GANGLION_V_PER_COUNT,
                  "clock": "packet-id"},
        )
        super().__init__(address, info, chunk_size=chunk_size, backend=backend,
                         connect_timeout_s=connect_timeout_s, stall_timeout_s=stall_timeout_s)

    def _subscriptions(self) -> list[str]:
        return [dec.GANGLION_RECEIVE]

    def _start_writes(self) -> list[tuple[str, bytes]]:
        return [(dec.GANGLION_SEND, b"b")]

    def _stop_writes(self) -> list[tuple[str, bytes]]:
        return [(dec.GANGLION_SEND, b"s")]

    def _reset_decoder(self) -> None:
        self._decomp = dec.GanglionDecompressor()
        self._next_index = 0
        self._message = ""
        self._impedance: dict[int, list[int]] | None = None  # channel (0 = REF) -> ohms, while measuring
        self._impedance_lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        for key in ("_decomp", "_next_index", "_message", "_impedance", "_impedance_lock"):
            state.pop(key, None)
        return state

    def measure_impedance(self, seconds: float = 2.0, *, channels: Sequence[int] | None = None) -> dict[str, float]:
        """Run the board's impedance check for ``seconds``: kOhm per channel.

        Stops the data, sends ``z``, collects the impedance notifications,
        sends ``Z``, and leaves the device as it found it (closed, or reopened
        and streaming: a reopen starts a fresh stream). Nobody else may read
        the device meanwhile (a :class:`~neuraflow.devices.service.DeviceManager`
        pauses its reader).

        Parameters
        ----------
        seconds : float
            Collection window; every requested channel must report within it.
        channels : sequence of int or None
            1-based channels (1-4); ``None`` for all four plus the reference (``"REF"``).

        Returns
        -------
        dict
            ``{channel name: kOhm}``, the median of the values received per channel.

        Raises
        ------
        DeviceError
            Not reachable, or a channel sent no value within ``seconds``.
        """
        where = f"{self._where} {self.info.stream_id!r}: impedance"
        if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
            raise PipelineDefinitionError(f"{where}: seconds={seconds!r} must be a finite number > 0.")
        chans = [1, 2, 3, 4, 0] if channels is None else [int(c) for c in channels]
        if not chans or (channels is not None and any(not 1 <= c <= dec.GANGLION_N_CHANNELS for c in chans)):
            raise PipelineDefinitionError(f"{where}: channels={channels!r} must be in 1-{dec.GANGLION_N_CHANNELS}.")
        was_open = self._link is not None
        if not was_open:
            self.open()
        try:
            with self._impedance_lock:
                self._impedance = {}
            self._write(dec.GANGLION_SEND, b"s")
            self._write(dec.GANGLION_SEND, b"z")
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
            self._write(dec.GANGLION_SEND, b"Z")
            with self._impedance_lock:
                values, self._impedance = self._impedance, None
        finally:
            with self._impedance_lock:
                self._impedance = None
            self.close()
            self.drain_events()
        if was_open:
            self.open()
        missing = [c for c in chans if not values.get(c)]
        if missing:
            names = ["REF" if c == 0 else self.info.channels[c - 1] for c in missing]
            raise DeviceError(f"{where}: no value for {names} within {seconds:g} s "
                              f"(got {sorted('REF' if c == 0 else self.info.channels[c - 1] for c in values)}).")
        return {("REF" if c == 0 else self.info.channels[c - 1]): float(np.median(values[c])) / 1e3 for c in chans}

    def _on_notify(self, uuid: str, data: bytearray) -> None:
        if uuid != dec.GANGLION_RECEIVE:
            return
        out = self._decomp.feed(data)
        pkt = out.packet
        if out.n_missing:
            self._drop(self._next_index, out.n_missing,
                       {"packet_id": pkt.packet_id, "offset_unknown": not out.resync})
            self._next_index += out.n_missing
        if len(out.counts):
            self._emit(self._next_index, out.counts.T * dec.GANGLION_V_PER_COUNT)
            self._next_index += len(out.counts)
        elif pkt.kind == "impedance" and pkt.impedance is not None:
            channel, ohms = pkt.impedance
            self._event(time.time(), "impedance", float(ohms), {"channel": channel or "REF"})
            with self._impedance_lock:
                if self._impedance is not None:
                    self._impedance.setdefault(channel, []).append(ohms)
        elif pkt.kind == "ascii":
            self._message += pkt.text
            if pkt.packet_id == 207:
                self._event(time.time(), "message", self._message, {})
                self._message = ""
