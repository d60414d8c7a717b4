"""OpenBCI Ganglion over BLE: :class:`Ganglion` (4 channels, 200 Hz, delta-compressed packets).

Start ``b``, stop ``s`` on the send characteristic; data arrives on the receive
characteristic (formats in :mod:`neuraflow.devices.ble.decoders`): a raw 24-bit
packet seeds the delta chain, then 18- or 19-bit delta packets carry 2 samples each.

A packet-id gap becomes a ``"drop"`` event (2 samples per lost packet). Until
the next raw packet, the values after a loss are off by the lost deltas (a
constant offset per channel, removed by any high-pass); the event's meta says
``offset_unknown: True``. Impedance packets (after ``z``) become
``"impedance"`` events, ASCII messages ``"message"`` events.
"""

from __future__ import annotations

import time
from typing import Any

from neuraflow.chunk import StreamInfo
from neuraflow.devices.ble import decoders as dec
from neuraflow.devices.ble.link import BleStreamDevice


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

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        for key in ("_decomp", "_next_index", "_message"):
            state.pop(key, None)
        return state

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
        elif pkt.kind == "ascii":
            self._message += pkt.text
            if pkt.packet_id == 207:
                self._event(time.time(), "message", self._message, {})
                self._message = ""
