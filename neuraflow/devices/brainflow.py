"""Any BrainFlow board as a neuraflow device: :class:`BrainFlowDevice` (optional extra ``[brainflow]``).

BrainFlow (``pip install neuraflow[brainflow]``) drives some forty boards
(OpenBCI, Muse, Neurosity, g.tec, ...) behind one API, plus a synthetic board
(id ``-1``), a playback board (``-3``, a file written by
``DataFilter.write_file``) and a streaming board (``-2``). Channel names,
rate and row layout come from ``BoardShim.get_board_descr`` (of the
``master_board`` for the playback and streaming boards). brainflow is imported
lazily, so neuraflow imports without it.

End of a playback file: the playback board (``-3``) stops at the end of its
file (unless configured with ``loopback_true``) and then simply delivers
nothing more, so :meth:`BrainFlowDevice.open` counts the file's samples (one
line per sample, minus the ``set_index_percentage:X`` start) and
:meth:`BrainFlowDevice.read` raises :class:`~neuraflow.errors.EndOfStream`
once all of them were delivered, as the file playback devices do.

Timestamps: ``t0_s`` is the board's timestamp channel (Unix seconds, stamped by
BrainFlow on the host) of the chunk's first sample; ``recv_s`` the host time the
chunk was read; ``meta["sample_index"]`` counts samples since :meth:`open`, and
jumps over samples the package counter says were dropped. Put
:func:`~neuraflow.sync.dejitter` after this device to fit the board's clock
from those (BrainFlow's stamps are arrival times, jittery on Bluetooth).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from neuraflow._validate import check_int, check_option
from neuraflow.chunk import Chunk, Event, StreamInfo
from neuraflow.devices.base import DeviceBase
from neuraflow.errors import DeviceError, EndOfStream, PipelineDefinitionError

__all__ = ["BrainFlowDevice"]

_WHERE = "devices.BrainFlowDevice"
_PLAYBACK, _STREAMING = -3, -2
_PRESETS = {"default": 0, "auxiliary": 1, "ancillary": 2}
# descr key -> (channel type, unit, scale to SI). BrainFlow serves ExG in microvolts.
_GROUPS = {
    "eeg": ("eeg", "V", 1e-6), "emg": ("emg", "V", 1e-6), "ecg": ("ecg", "V", 1e-6), "eog": ("eog", "V", 1e-6),
    "exg": ("eeg", "V", 1e-6), "accel": ("misc", "g", 1.0), "gyro": ("misc", "deg/s", 1.0),
    "ppg": ("misc", "", 1.0), "eda": ("misc", "uS", 1.0), "temperature": ("misc", "degC", 1.0),
    "resistance": ("misc", "Ohm", 1.0), "other": ("misc", "", 1.0), "battery": ("misc", "%", 1.0),
    "magnetometer": ("misc", "", 1.0), "optical": ("misc", "", 1.0),
}


def _brainflow() -> Any:
    try:
        from brainflow import board_shim
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise PipelineDefinitionError(
            f"{_WHERE}: brainflow is not installed; `pip install neuraflow[brainflow]` (or `pip install brainflow`)."
        ) from exc
    return board_shim


def _playback_samples(path: str, config: Sequence[str]) -> int | None:
    """Samples a playback board will deliver from ``path`` with ``config``; ``None`` when it loops.

    ``DataFilter.write_file`` writes one line per sample; ``set_index_percentage:X``
    starts at sample ``int(n * X / 100)`` (as measured on brainflow 5).
    """
    loop, percent = False, 0.0
    for command in config:
        c = command.strip()
        if c in ("loopback_true", "loopback_false"):
            loop = c == "loopback_true"
        elif c.startswith("set_index_percentage:"):
            try:
                percent = float(c.split(":", 1)[1])
            except ValueError:
                pass
    if loop:
        return None
    try:
        with open(path, "rb") as f:
            n = sum(1 for line in f if line.strip())
    except OSError:
        return None
    return n - int(n * percent / 100.0)


def _rows(descr: Mapping[str, Any], group: str) -> list[int]:
    value = descr.get(f"{group}_channels", descr.get(f"{group}_channel"))
    if value is None:
        return []
    return [int(value)] if isinstance(value, (int, np.integer)) else [int(v) for v in value]


class BrainFlowDevice(DeviceBase):
    """A BrainFlow board as a stream of chunks.

    Parameters
    ----------
    board_id : int
        A ``brainflow.BoardIds`` value (``-1`` synthetic, ``-3`` playback, ``0`` Cyton ...).
    params : Mapping or None
        ``BrainFlowInputParams`` fields (``serial_port``, ``mac_address``,
        ``file``, ``master_board``, ``timeout`` ...). The playback (``-3``) and
        streaming (``-2``) boards need ``master_board``, the board the data came from.
    stream_id : str or None
        Name of the stream; ``None`` for ``"brainflow-<board name>"``.
    channels : sequence of str
        Row groups of the board description to stream, in order: ``"eeg"``
        (named from ``eeg_names`` when the board has them), ``"exg"`` (its ExG
        rows whatever they measure), ``"accel"``, ``"gyro"``, ``"ppg"``,
        ``"eda"``, ``"temperature"``, ``"battery"``, ``"other"`` ... A row in
        several groups is streamed once.
    preset : {"default", "auxiliary", "ancillary"}
        Which BrainFlow preset (Muse boards put PPG / IMU there, at their own rate).
    chunk_size : int
        Samples per chunk (fewer when :meth:`read` times out with some data).
    config : sequence of str
        Commands sent with ``config_board`` after the session is prepared
        (e.g. ``"old_timestamps"`` for the playback board: keep the file's stamps).

    Attributes
    ----------
    info : StreamInfo
        ExG rows in volts (BrainFlow serves microvolts), others in their units;
        ``meta`` holds board id, name and preset. Known without opening the board.

    Raises
    ------
    PipelineDefinitionError
        Unknown board id, parameter or channel group, or a group the board does not have.
    """

    blocking = True

    def __init__(
        self,
        board_id: int,
        *,
        params: Mapping[str, Any] | None = None,
        stream_id: str | None = None,
        channels: Sequence[str] = ("eeg",),
        preset: str = "default",
        chunk_size: int = 32,
        config: Sequence[str] = (),
    ) -> None:
        bs = _brainflow()
        if isinstance(board_id, bool) or not isinstance(board_id, (int, np.integer)):
            raise PipelineDefinitionError(f"{_WHERE}: board_id={board_id!r} must be an int (brainflow.BoardIds).")
        self.board_id = int(board_id)
        self.params = dict(params or {})
        known = set(vars(bs.BrainFlowInputParams()))
        unknown = sorted(set(self.params) - known)
        if unknown:
            raise PipelineDefinitionError(f"{_WHERE}: unknown params {unknown}; BrainFlowInputParams has {sorted(known)}.")
        check_option(_WHERE, "preset", preset, tuple(_PRESETS))
        self.preset = preset
        self.chunk_size = check_int(_WHERE, "chunk_size", chunk_size)
        if isinstance(channels, str):
            channels = (channels,)
        for group in channels:
            check_option(_WHERE, "channels", group, tuple(_GROUPS))
        self.channels = tuple(channels)
        self.config = tuple(str(c) for c in config)
        self.descr_board_id = self.board_id
        if self.board_id in (_PLAYBACK, _STREAMING):
            master = self.params.get("master_board", -100)
            if master in (-100, None):
                raise PipelineDefinitionError(
                    f"{_WHERE}: board {self.board_id} plays another board's data: give params={{'master_board': id}}."
                )
            self.descr_board_id = int(master)
        try:
            descr = bs.BoardShim.get_board_descr(self.descr_board_id, bs.BrainFlowPresets(_PRESETS[preset]))
        except Exception as exc:
            raise PipelineDefinitionError(
                f"{_WHERE}: board {self.descr_board_id} has no {preset!r} preset or is unknown to brainflow: {exc}"
            ) from exc
        self._layout = self._make_layout(descr, stream_id)
        self.info: StreamInfo = self._layout["info"]
        self._board: Any = None
        self._reset()

    def _make_layout(self, descr: Mapping[str, Any], stream_id: str | None) -> dict[str, Any]:
        rows, names, types, units, scales = [], [], [], [], []
        eeg_names = [n for n in str(descr.get("eeg_names", "")).split(",") if n]
        eeg_rows = _rows(descr, "eeg")
        for group in self.channels:
            if group == "exg":
                group_rows = sorted({r for g in ("eeg", "emg", "ecg", "eog") for r in _rows(descr, g)})
            else:
                group_rows = _rows(descr, group)
            if not group_rows:
                raise PipelineDefinitionError(
                    f"{_WHERE}: board {descr.get('name', self.descr_board_id)!r} ({self.preset} preset) has no "
                    f"{group!r} channels; it has {sorted(k[:-9] for k in descr if k.endswith('_channels'))}."
                )
            ch_type, unit, scale = _GROUPS[group]
            for k, r in enumerate(group_rows):
                if r in rows:
                    continue
                if group in ("eeg", "exg") and r in eeg_rows and len(eeg_names) == len(eeg_rows):
                    name = eeg_names[eeg_rows.index(r)]
                else:
                    name = f"{group}{k}" if len(group_rows) > 1 else group
                rows.append(r)
                names.append(name if name not in names else f"{name}-{r}")
                types.append(ch_type)
                units.append(unit)
                scales.append(scale)
        board_name = str(descr.get("name", self.descr_board_id))
        info = StreamInfo(
            stream_id=stream_id if stream_id is not None else f"brainflow-{board_name}",
            sfreq=float(descr["sampling_rate"]),
            channels=tuple(names),
            ch_types=tuple(types),
            units=tuple(units),
            meta={"device": "brainflow", "board_id": self.board_id, "board_name": board_name,
                  "preset": self.preset, "clock": "brainflow-timestamp"},
        )
        return {
            "info": info,
            "rows": np.asarray(rows, dtype=np.intp),
            "scales": np.asarray(scales, dtype=np.float64)[:, None],
            "ts_row": descr.get("timestamp_channel"),
            "pkg_row": descr.get("package_num_channel"),
            "marker_row": descr.get("marker_channel"),
        }

    def _reset(self) -> None:
        self._file_samples: int | None = None  # samples a playback file will deliver (None: unbounded)
        self._pulled = 0
        self._pending: np.ndarray | None = None
        self._index = 0
        self._last_pkg: int | None = None
        self._events: list[Event] = []

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_board"] = None
        state["_pending"] = None
        state["_events"] = []
        return state

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> None:
        """Prepare the session and start streaming.

        Raises
        ------
        DeviceError
            If the board cannot be reached (BrainFlow's error message is kept).
        """
        self.close()
        bs = _brainflow()
        params = bs.BrainFlowInputParams()
        for key, value in self.params.items():
            setattr(params, key, value)
        board = bs.BoardShim(self.board_id, params)
        try:
            board.prepare_session()
            for command in self.config:
                board.config_board(command)
            board.start_stream()
        except Exception as exc:
            try:
                board.release_session()
            except Exception:
                pass
            raise DeviceError(f"{_WHERE} {self.info.stream_id!r}: cannot start board {self.board_id}: {exc}") from exc
        self._board = board
        self._reset()
        if self.board_id == _PLAYBACK and self.params.get("file"):
            self._file_samples = _playback_samples(str(self.params["file"]), self.config)

    def close(self) -> None:
        """Stop streaming and release the session. Idempotent."""
        board, self._board = self._board, None
        if board is None:
            return
        try:
            board.stop_stream()
        except Exception:
            pass
        try:
            board.release_session()
        except Exception:
            pass

    # ------------------------------------------------------------------ reading
    def _pull(self) -> None:
        preset = _brainflow().BrainFlowPresets(_PRESETS[self.preset])
        try:
            if self._board.get_board_data_count(preset) <= 0:
                return
            data = self._board.get_board_data(preset=preset)
        except Exception as exc:
            raise DeviceError(f"{_WHERE} {self.info.stream_id!r}: reading board {self.board_id} failed: {exc}") from exc
        if data.shape[1]:
            self._pulled += data.shape[1]
            self._pending = data if self._pending is None else np.concatenate([self._pending, data], axis=1)

    def _file_done(self) -> bool:
        return self._file_samples is not None and self._pulled >= self._file_samples

    def read(self, timeout_s: float) -> Chunk | None:
        """Return up to ``chunk_size`` samples, waiting up to ``timeout_s`` for a full chunk.

        Returns what arrived (fewer samples) at the timeout or at the end of a
        playback file, ``None`` if nothing did.

        Raises
        ------
        DeviceError
            Before :meth:`open`, or when BrainFlow reports an error.
        EndOfStream
            A playback board delivered its whole file (and does not loop).
        """
        if self._board is None:
            raise DeviceError(f"{_WHERE} {self.info.stream_id!r}: read() before open().")
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            self._pull()
            have = 0 if self._pending is None else self._pending.shape[1]
            if have >= self.chunk_size or time.monotonic() >= deadline or self._file_done():
                break
            time.sleep(min(0.005, max(0.0, deadline - time.monotonic())))
        if have == 0:
            if self._file_done():
                raise EndOfStream(f"{_WHERE} {self.info.stream_id!r}: end of {self.params['file']} "
                                  f"({self._file_samples} samples).")
            return None
        take = min(have, self.chunk_size)
        block, rest = self._pending[:, :take], self._pending[:, take:]
        self._pending = rest if rest.shape[1] else None
        return self._chunk(block, time.time())

    def _chunk(self, block: np.ndarray, now: float) -> Chunk:
        lay = self._layout
        index = self._index
        pkg_row = lay["pkg_row"]
        if pkg_row is not None:
            pkg = block[int(pkg_row), 0]
            if self._last_pkg is not None and math.isfinite(pkg):
                missing = (int(pkg) - self._last_pkg - 1) % 256  # BrainFlow package numbers wrap at 256
                if 0 < missing < 128:  # larger: a reordering or a counter the board resets, not a drop
                    index += missing
                    self._events.append(Event(self.info.stream_id, float(block[int(lay["ts_row"]), 0])
                                              if lay["ts_row"] is not None else now, "drop", float(missing),
                                              {"sample_index": self._index}))
            self._last_pkg = int(block[int(pkg_row), -1]) if math.isfinite(block[int(pkg_row), -1]) else None
        ts_row = lay["ts_row"]
        t0 = float(block[int(ts_row), 0]) if ts_row is not None else now - block.shape[1] / self.info.sfreq
        data = block[lay["rows"]] * lay["scales"]
        marker_row = lay["marker_row"]
        if marker_row is not None:
            for j in np.flatnonzero(block[int(marker_row)] != 0):
                t = float(block[int(ts_row), j]) if ts_row is not None else t0 + j / self.info.sfreq
                value = float(block[int(marker_row), j])
                self._events.append(Event(self.info.stream_id, t, str(int(value)) if value.is_integer() else repr(value),
                                          value, {"source": "brainflow-marker"}))
        self._index = index + block.shape[1]
        return Chunk(data, t0, self.info, recv_s=now, meta={"sample_index": index})

    def drain_events(self) -> list[Event]:
        """Dropped-sample events and BrainFlow markers since the last call."""
        events, self._events = self._events, []
        return events

    def __repr__(self) -> str:
        return f"BrainFlowDevice({self.board_id}, stream_id={self.info.stream_id!r}, preset={self.preset!r})"
