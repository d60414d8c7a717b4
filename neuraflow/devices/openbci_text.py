"""Play an OpenBCI GUI text recording back: :class:`OpenBCITextPlayback`.

The OpenBCI GUI (v5/v6) writes "Raw EXG Data" as text: ``%`` header lines
(``%Sample Rate = 250 Hz``), one line of column names, then comma-separated
rows -- sample index, EXG channels in µV (already scaled), accelerometer in g,
digital/analog columns, a timestamp in Unix **milliseconds**, a marker column
and a formatted time. Samples are served in volts.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from neuraflow.chunk import StreamInfo
from neuraflow.devices._pacing import _ArrayPlayback
from neuraflow.errors import PipelineDefinitionError

__all__ = ["OpenBCITextPlayback"]

_WHERE = "devices.OpenBCITextPlayback"
_RATE = re.compile(r"^%\s*sample rate\s*=\s*([0-9.]+)", re.IGNORECASE)
_EXG = re.compile(r"^exg channel (\d+)$", re.IGNORECASE)
_ACCEL = re.compile(r"^accel channel (\d+)$", re.IGNORECASE)


def _parse_header(path: Path) -> dict[str, Any]:
    sfreq = None
    n_header = 0
    columns: list[str] | None = None
    with path.open("r", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            n_header += 1
            if line.startswith("%"):
                match = _RATE.match(line)
                if match:
                    sfreq = float(match.group(1))
                continue
            columns = [c.strip() for c in line.split(",")]
            break
    if columns is None:
        raise PipelineDefinitionError(f"{_WHERE}: {path.name} has no column-name line after its % header.")
    if sfreq is None or sfreq <= 0:
        raise PipelineDefinitionError(
            f"{_WHERE}: {path.name} has no '%Sample Rate = N Hz' header line; is it an OpenBCI GUI text recording?"
        )
    exg = sorted((int(m.group(1)), i) for i, c in enumerate(columns) if (m := _EXG.match(c)))
    accel = sorted((int(m.group(1)), i) for i, c in enumerate(columns) if (m := _ACCEL.match(c)))
    lowered = [c.lower() for c in columns]
    if not exg:
        raise PipelineDefinitionError(f"{_WHERE}: {path.name} has no 'EXG Channel N' column (columns {columns[:6]} ...).")
    if "timestamp" not in lowered:
        raise PipelineDefinitionError(f"{_WHERE}: {path.name} has no 'Timestamp' column.")
    return {
        "sfreq": sfreq,
        "skip_rows": n_header,
        "exg": exg,
        "accel": accel,
        "timestamp_col": lowered.index("timestamp"),
        "n_columns": len(columns),
    }


class OpenBCITextPlayback(_ArrayPlayback):
    """Play an OpenBCI GUI "Raw EXG Data" text recording back as a stream of chunks.

    Parameters
    ----------
    path : str or Path
        The ``.txt``/``.csv`` file the GUI wrote.
    stream_id : str or None
        Name of the stream; ``None`` for the file name without its extension.
    chunk_size : int
        Samples per chunk, >= 1.
    realtime : bool
        Pace chunks at the recorded rate (True) or return them at once (False).
    include_accel : bool
        Also serve the accelerometer columns (``accel0..2``, unit ``"g"``).
    start_s : float or None
        Device time of the first sample, seconds since the epoch. ``None``:
        ``time.time()`` at :meth:`open` when ``realtime``, else the file's
        first timestamp (ms in the file, seconds here).

    Attributes
    ----------
    info : StreamInfo
        ``exg0 .. exgN`` (type ``"eeg"``, unit ``"V"``: the file's µV × 1e-6),
        then the accelerometer if asked; sfreq from ``%Sample Rate``. Read on
        first access, before :meth:`open`.

    Notes
    -----
    The GUI's timestamp is the host's receive time, quantised to whole
    milliseconds and shared by the samples of one radio packet, so it jitters
    by several ms. Chunks are timed ``t0 + index / sfreq`` from the first
    timestamp instead; each chunk's raw file timestamp is in
    ``meta["file_timestamp_s"]``. The whole file is loaded at :meth:`open`.

    Raises
    ------
    PipelineDefinitionError
        If the file is missing, lacks the sample-rate header, an EXG or a
        timestamp column, or has no data rows.
    """

    _where = _WHERE
    _config_keys = ("path", "stream_id", "chunk_size", "realtime", "start_s", "include_accel")

    def __init__(
        self,
        path: str | Path,
        *,
        stream_id: str | None = None,
        chunk_size: int = 32,
        realtime: bool = False,
        include_accel: bool = False,
        start_s: float | None = None,
    ) -> None:
        self._init_common(path, stream_id, chunk_size, realtime, start_s)
        if not isinstance(include_accel, bool):
            raise PipelineDefinitionError(f"{_WHERE}: include_accel={include_accel!r} must be True or False.")
        self.include_accel = include_accel
        self._timestamps_s: np.ndarray | None = None

    def _columns(self, header: dict[str, Any]) -> list[int]:
        cols = [i for _, i in header["exg"]]
        if self.include_accel:
            cols += [i for _, i in header["accel"]]
        return cols

    def _read_table(self, header: dict[str, Any]) -> np.ndarray:
        cols = self._columns(header) + [header["timestamp_col"]]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "input contained no data": reported below
                table = np.loadtxt(self.path, delimiter=",", comments="%", skiprows=header["skip_rows"],
                                   usecols=cols, dtype=np.float64, ndmin=2)
        except ValueError as exc:
            raise PipelineDefinitionError(f"{_WHERE}: {self.path.name}: malformed data row: {exc}") from exc
        if table.shape[0] == 0:
            raise PipelineDefinitionError(f"{_WHERE}: {self.path.name} has no data rows (empty recording).")
        return table

    def _load_header(self) -> dict[str, Any]:
        if self._header is None:
            header = _parse_header(self.path)
            if self.include_accel and not header["accel"]:
                raise PipelineDefinitionError(f"{_WHERE}: include_accel=True but {self.path.name} has no accelerometer.")
            table = self._read_table(header)
            n_exg = len(header["exg"])
            names = [f"exg{k}" for k, _ in header["exg"]]
            types = ["eeg"] * n_exg
            units = ["V"] * n_exg
            if self.include_accel:
                names += [f"accel{k}" for k, _ in header["accel"]]
                types += ["misc"] * len(header["accel"])
                units += ["g"] * len(header["accel"])
            stream_id = self.stream_id if self.stream_id is not None else self.path.name.rsplit(".", 1)[0]
            header["info"] = StreamInfo(
                stream_id=stream_id,
                sfreq=header["sfreq"],
                channels=tuple(names),
                ch_types=tuple(types),
                units=tuple(units),
                meta={"device": "openbci_text", "path": str(self.path)},
            )
            header["n_times"] = int(table.shape[0])
            header["file_start_s"] = float(table[0, -1]) / 1000.0  # ms -> s
            self._header = header
        return self._header

    def _load_data(self) -> tuple[np.ndarray, None, list]:
        header = self._load_header()
        table = self._read_table(header)
        n_exg = len(header["exg"])
        data = table[:, :-1].T.copy()
        data[:n_exg] *= 1e-6  # µV -> V
        self._timestamps_s = table[:, -1] / 1000.0
        return data, None, []

    def read(self, timeout_s: float):  # noqa: D102 - documented on the base class
        chunk = super().read(timeout_s)
        if chunk is not None and self._timestamps_s is not None:
            index = chunk.meta["sample_index"]
            chunk = chunk.replace(meta={"sample_index": index, "file_timestamp_s": float(self._timestamps_s[index])})
        return chunk

    def __repr__(self) -> str:
        return f"OpenBCITextPlayback({str(self.path)!r}, realtime={self.realtime})"
