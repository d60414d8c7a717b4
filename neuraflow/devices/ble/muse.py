"""Interaxon Muse (2016 "MU-02", Muse S, Muse 2) over BLE: :class:`Muse`.

EEG only: TP9, AF7, AF8, TP10 and the right AUX electrode at 256 Hz, 12 samples
per notification per channel (packet format and commands in
:mod:`neuraflow.devices.ble.decoders`). Start sequence, as muse-lsl sends it:
``h`` (halt), the preset (``p21``: EEG without AUX on the 2016 model; ``p20``
adds AUX on it), ``s`` (status), ``d`` (start). ``close`` sends ``h``.

A packet index missing on every channel (or completing late on one) becomes a
``"drop"`` event of 12 samples per index; the clock advances over it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from neuraflow.chunk import StreamInfo
from neuraflow.devices.ble import decoders as dec
from neuraflow.devices.ble.link import BleStreamDevice
from neuraflow.errors import PipelineDefinitionError


class Muse(BleStreamDevice):
    """Muse headband EEG over BLE (bleak).

    Parameters
    ----------
    address : str
        Bluetooth address of the headband (``"00:55:DA:B0:12:34"``).
    stream_id : str
        Name of the stream.
    aux : bool
        Subscribe to the AUX channel too (5 channels instead of 4).
    preset : str or None
        Preset command sent before starting (``"p21"``, ``"p20"``, ``"p50"`` ...;
        ``None`` sends none and keeps the headband's current preset).
    chunk_size : int
        Samples per chunk (12 = one notification, 46.9 ms).
    backend : None, "fake" or type
        bleak backend class (``None``: the platform's; ``"fake"``:
        :class:`~neuraflow.devices.ble.fake_backend.FakeBackend`).
    connect_timeout_s, stall_timeout_s : float
        Connection timeout; longest silence while streaming before ``DeviceError``.

    Attributes
    ----------
    info : StreamInfo
        Units ``"V"`` (float32 volts, ``0.48828125e-6 * (count - 2048)``); ``info.meta``
        holds the scale and characteristic ids.

    Notes
    -----
    Chunks carry ``meta["sample_index"]`` (first sample since :meth:`open`, counting
    dropped samples). Events: ``"drop"`` (value: samples lost, meta ``packet_index``)
    and ``"corrupt"`` (a notification of the wrong size).
    """

    _where = "devices.Muse"

    def __init__(self, address: str, *, stream_id: str = "muse", aux: bool = True, preset: str | None = "p21",
                 chunk_size: int = 12, backend: Any = None, connect_timeout_s: float = 10.0,
                 stall_timeout_s: float = 1.0) -> None:
        if not isinstance(aux, bool):
            raise PipelineDefinitionError(f"{self._where}: aux={aux!r} must be True or False.")
        if preset is not None and not (isinstance(preset, str) and preset[:1] == "p" and preset[1:].isalnum()):
            raise PipelineDefinitionError(f"{self._where}: preset={preset!r} must be None or like 'p21', 'p20', 'p50'.")
        self.aux = aux
        self.preset = preset
        n = 5 if aux else 4
        info = StreamInfo(
            stream_id=stream_id,
            sfreq=dec.MUSE_SFREQ,
            channels=dec.MUSE_CHANNELS[:n],
            ch_types=("eeg",) * n,
            units=("V",) * n,
            meta={"device": "muse", "address": address, "scale_v_per_count": dec.MUSE_UV_PER_COUNT * 1e-6,
                  "zero_count": 2048, "characteristics": dec.MUSE_EEG_CHARACTERISTICS[:n],
                  "clock": "packet-index"},
        )
        super().__init__(address, info, chunk_size=chunk_size, backend=backend,
                         connect_timeout_s=connect_timeout_s, stall_timeout_s=stall_timeout_s)

    def _subscriptions(self) -> list[str]:
        return list(dec.MUSE_EEG_CHARACTERISTICS[: self.info.n_channels])

    def _start_writes(self) -> list[tuple[str, bytes]]:
        cmds = ["h"] + ([self.preset] if self.preset else []) + ["s", "d"]
        return [(dec.MUSE_CONTROL, dec.muse_command(c)) for c in cmds]

    def _stop_writes(self) -> list[tuple[str, bytes]]:
        return [(dec.MUSE_CONTROL, dec.muse_command("h"))]

    def _reset_decoder(self) -> None:
        self._assembler = dec.MuseAssembler(self.info.n_channels)
        self._channel_of = {u: k for k, u in enumerate(dec.MUSE_EEG_CHARACTERISTICS[: self.info.n_channels])}
        self._first_index: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        for key in ("_assembler", "_channel_of", "_first_index"):
            state.pop(key, None)
        return state

    def _on_notify(self, uuid: str, data: bytearray) -> None:
        channel = self._channel_of.get(uuid)
        if channel is None:
            return
        for index, missing, counts in self._assembler.feed(channel, data):
            if self._first_index is None:
                self._first_index = index
            sample = (index - self._first_index) * dec.MUSE_SAMPLES_PER_PACKET
            if missing:
                n_lost = missing * dec.MUSE_SAMPLES_PER_PACKET
                self._drop(sample - n_lost, n_lost, {"packet_index": (index - missing) % dec.MUSE_INDEX_MODULUS})
            self._emit(sample, dec.muse_counts_to_volts(counts))
