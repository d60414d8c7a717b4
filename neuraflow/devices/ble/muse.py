"""Interaxon Muse (2016 "MU-02", Muse S, Muse 2) over BLE: :class:`Muse`, :func:`muse_devices`.

A headband has up to four streams, each a device of its own (``stream=``):

========  ==================================  ========  ============  ==============
stream    channels                            rate      samples/pkt   unit
========  ==================================  ========  ============  ==============
``eeg``   TP9, AF7, AF8, TP10 (+ right AUX)   256 Hz    12            V
``ppg``   PPG1, PPG2, PPG3 (Muse 2 / S)       64 Hz     6             raw counts
``acc``   ACC_X, ACC_Y, ACC_Z                 52 Hz     3             g
``gyro``  GYRO_X, GYRO_Y, GYRO_Z              52 Hz     3             deg/s
========  ==================================  ========  ============  ==============

(packet formats and scales in :mod:`neuraflow.devices.ble.decoders`).
:func:`muse_devices` makes the devices of one headband at once, the way
:func:`~neuraflow.devices.xdf_devices` makes those of a file; opened in one
process they share one BLE connection (:mod:`neuraflow.devices.ble.link`).

Start sequence, as muse-lsl sends it: ``h`` (halt), the preset (``p21``: EEG
without AUX on the 2016 model; ``p20`` adds AUX on it), ``s`` (status), ``d``
(start), sent by the first device of a connection; the last one to close sends
``h``.

A packet index missing (on any channel of a multi-characteristic stream, or
completing late) becomes a ``"drop"`` event of one packet's samples per index;
the stream's clock advances over it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from neuraflow._validate import check_option
from neuraflow.chunk import StreamInfo
from neuraflow.devices.ble import decoders as dec
from neuraflow.devices.ble.link import BleStreamDevice
from neuraflow.errors import PipelineDefinitionError

__all__ = ["MUSE_STREAMS", "Muse", "muse_devices"]


@dataclass(frozen=True)
class _MuseStream:
    characteristics: tuple[str, ...]
    channels: tuple[str, ...]
    sfreq: float
    per_packet: int
    ch_type: str
    unit: str
    decode: Callable[[bytes | bytearray], tuple[int, np.ndarray]]
    to_units: Callable[[np.ndarray], np.ndarray]
    scale: float | None


def _ppg_units(counts: np.ndarray) -> np.ndarray:
    return np.asarray(counts, dtype=np.float64)


def _acc_units(counts: np.ndarray) -> np.ndarray:
    return np.asarray(counts, dtype=np.float64) * dec.MUSE_ACC_G_PER_COUNT


def _gyro_units(counts: np.ndarray) -> np.ndarray:
    return np.asarray(counts, dtype=np.float64) * dec.MUSE_GYRO_DPS_PER_COUNT


_STREAMS = {
    "eeg": _MuseStream(dec.MUSE_EEG_CHARACTERISTICS, dec.MUSE_CHANNELS, dec.MUSE_SFREQ, dec.MUSE_SAMPLES_PER_PACKET,
                       "eeg", "V", dec.decode_muse_eeg, dec.muse_counts_to_volts, dec.MUSE_UV_PER_COUNT * 1e-6),
    "ppg": _MuseStream(dec.MUSE_PPG_CHARACTERISTICS, dec.MUSE_PPG_CHANNELS, dec.MUSE_PPG_SFREQ,
                       dec.MUSE_PPG_SAMPLES_PER_PACKET, "misc", "", dec.decode_muse_ppg, _ppg_units, None),
    "acc": _MuseStream((dec.MUSE_ACC_CHARACTERISTIC,), ("ACC_X", "ACC_Y", "ACC_Z"), dec.MUSE_IMU_SFREQ,
                       dec.MUSE_IMU_SAMPLES_PER_PACKET, "misc", "g", dec.decode_muse_imu, _acc_units,
                       dec.MUSE_ACC_G_PER_COUNT),
    "gyro": _MuseStream((dec.MUSE_GYRO_CHARACTERISTIC,), ("GYRO_X", "GYRO_Y", "GYRO_Z"), dec.MUSE_IMU_SFREQ,
                        dec.MUSE_IMU_SAMPLES_PER_PACKET, "misc", "deg/s", dec.decode_muse_imu, _gyro_units,
                        dec.MUSE_GYRO_DPS_PER_COUNT),
}
MUSE_STREAMS = tuple(_STREAMS)
"""The streams of a Muse: ``("eeg", "ppg", "acc", "gyro")``."""


class Muse(BleStreamDevice):
    """One stream of a Muse headband over BLE (bleak).

    Parameters
    ----------
    address : str
        Bluetooth address of the headband (``"00:55:DA:B0:12:34"``).
    stream_id : str or None
        Name of the stream; ``None`` for ``"muse"`` (EEG) or ``"muse-<stream>"``.
    stream : {"eeg", "ppg", "acc", "gyro"}
        Which of the headband's streams this device carries (module docstring).
        PPG, accelerometer and gyroscope need a Muse 2 or Muse S.
    aux : bool
        EEG only: subscribe to the AUX channel too (5 channels instead of 4).
    preset : str or None
        Preset command sent before starting (``"p21"``, ``"p20"``, ``"p50"`` ...;
        ``None`` sends none and keeps the headband's current preset). Only the
        first device of a shared connection sends it.
    chunk_size : int or None
        Samples per chunk; ``None`` for one notification (12 EEG, 6 PPG, 3 IMU samples).
    backend : None, "fake" or type
        bleak backend class (``None``: the platform's; ``"fake"``:
        :class:`~neuraflow.devices.ble.fake_backend.FakeBackend`).
    connect_timeout_s, stall_timeout_s : float
        Connection timeout; longest silence while streaming before ``DeviceError``.

    Attributes
    ----------
    info : StreamInfo
        EEG in volts (float32, ``0.48828125e-6 * (count - 2048)``); PPG raw counts;
        accelerometer in g; gyroscope in deg/s. ``info.meta`` holds the stream,
        the scale and the characteristic ids.

    Notes
    -----
    Chunks carry ``meta["sample_index"]`` (first sample since :meth:`open`, counting
    dropped samples). Events: ``"drop"`` (value: samples lost, meta ``packet_index``)
    and ``"corrupt"`` (a notification of the wrong size).
    """

    _where = "devices.Muse"

    def __init__(self, address: str, *, stream_id: str | None = None, stream: str = "eeg", aux: bool = True,
                 preset: str | None = "p21", chunk_size: int | None = None, backend: Any = None,
                 connect_timeout_s: float = 10.0, stall_timeout_s: float = 1.0) -> None:
        check_option(self._where, "stream", stream, MUSE_STREAMS)
        if not isinstance(aux, bool):
            raise PipelineDefinitionError(f"{self._where}: aux={aux!r} must be True or False.")
        if preset is not None and not (isinstance(preset, str) and preset[:1] == "p" and preset[1:].isalnum()):
            raise PipelineDefinitionError(f"{self._where}: preset={preset!r} must be None or like 'p21', 'p20', 'p50'.")
        self.stream = stream
        self.aux = aux
        self.preset = preset
        spec = _STREAMS[stream]
        n_chars = (5 if aux else 4) if stream == "eeg" else len(spec.characteristics)
        channels = spec.channels[:n_chars] if stream == "eeg" else spec.channels
        meta: dict[str, Any] = {"device": "muse", "stream": stream, "address": address,
                                "characteristics": spec.characteristics[:n_chars], "clock": "packet-index"}
        if stream == "eeg":
            meta.update(scale_v_per_count=spec.scale, zero_count=2048)
        elif spec.scale is not None:
            meta["scale_per_count"] = spec.scale
        info = StreamInfo(
            stream_id=stream_id if stream_id is not None else ("muse" if stream == "eeg" else f"muse-{stream}"),
            sfreq=spec.sfreq,
            channels=channels,
            ch_types=(spec.ch_type,) * len(channels),
            units=(spec.unit,) * len(channels),
            meta=meta,
        )
        self._n_chars = n_chars
        super().__init__(address, info, chunk_size=spec.per_packet if chunk_size is None else chunk_size,
                         backend=backend, connect_timeout_s=connect_timeout_s, stall_timeout_s=stall_timeout_s)

    def _subscriptions(self) -> list[str]:
        return list(_STREAMS[self.stream].characteristics[: self._n_chars])

    def _start_writes(self) -> list[tuple[str, bytes]]:
        cmds = ["h"] + ([self.preset] if self.preset else []) + ["s", "d"]
        return [(dec.MUSE_CONTROL, dec.muse_command(c)) for c in cmds]

    def _stop_writes(self) -> list[tuple[str, bytes]]:
        return [(dec.MUSE_CONTROL, dec.muse_command("h"))]

    def _reset_decoder(self) -> None:
        spec = _STREAMS[self.stream]
        chars = spec.characteristics[: self._n_chars]
        self._assembler = dec.MuseAssembler(len(chars), decode=spec.decode)
        self._channel_of = {u: k for k, u in enumerate(chars)}
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
        spec = _STREAMS[self.stream]
        for index, missing, counts in self._assembler.feed(channel, data):
            if self._first_index is None:
                self._first_index = index
            sample = (index - self._first_index) * spec.per_packet
            if missing:
                n_lost = missing * spec.per_packet
                self._drop(sample - n_lost, n_lost, {"packet_index": (index - missing) % dec.MUSE_INDEX_MODULUS})
            self._emit(sample, spec.to_units(counts))


def muse_devices(address: str, streams: Sequence[str] = MUSE_STREAMS, *, stream_prefix: str = "muse",
                 **kwargs: Any) -> list[Muse]:
    """One :class:`Muse` per stream of a headband, sharing one connection (the runtime hosts them on one worker).

    Parameters
    ----------
    address : str
        Bluetooth address of the headband.
    streams : sequence of {"eeg", "ppg", "acc", "gyro"}
        Streams to make, in order (no repeats).
    stream_prefix : str
        Stream ids are ``prefix`` (EEG) and ``"<prefix>-ppg"``, ``"-acc"``, ``"-gyro"``.
    **kwargs
        Passed to every :class:`Muse` (``aux``, ``preset``, ``backend``, timeouts);
        not ``stream`` or ``stream_id``.

    Returns
    -------
    devices : list of Muse

    Examples
    --------
    >>> [d.info.stream_id for d in muse_devices("00:55:DA:B0:12:34", ("eeg", "ppg", "acc"))]
    ['muse', 'muse-ppg', 'muse-acc']
    """
    for key in ("stream", "stream_id"):
        if key in kwargs:
            raise PipelineDefinitionError(
                f"devices.muse_devices: {key}= is chosen per stream; use Muse for one stream."
            )
    if isinstance(streams, str):
        streams = (streams,)
    streams = tuple(streams)
    if not streams or len(set(streams)) != len(streams):
        raise PipelineDefinitionError(f"devices.muse_devices: streams={streams!r} must be non-empty, without repeats.")
    for stream in streams:
        check_option("devices.muse_devices", "streams", stream, MUSE_STREAMS)
    return [Muse(address, stream=s, stream_id=stream_prefix if s == "eeg" else f"{stream_prefix}-{s}", **kwargs)
            for s in streams]
