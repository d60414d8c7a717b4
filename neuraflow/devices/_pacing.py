"""Real-time pacing shared by the paced sources, and the in-memory playback engine.

- :func:`wait_due` -- "chunk ``k`` is due at wall time ``t``": wait up to
  ``timeout_s`` for it and return the receive time (used by every paced device).
- :func:`check_start_s` -- validation of the ``start_s`` parameter.
- :class:`_ArrayPlayback` -- serves a recording loaded into memory at
  :meth:`~_ArrayPlayback.open`, the engine of the file sources
  (:class:`~neuraflow.devices.playback.FilePlayback`,
  :class:`~neuraflow.devices.xdf.XDFPlayback`,
  :class:`~neuraflow.devices.openbci_text.OpenBCITextPlayback`).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from neuraflow._validate import check_int
from neuraflow.chunk import Chunk, Event, StreamInfo
from neuraflow.devices.base import QueuedEventsDevice
from neuraflow.errors import DeviceError, EndOfStream, PipelineDefinitionError


def wait_due(due_s: float | None, timeout_s: float) -> float | None:
    """Wait until a chunk due at wall time ``due_s`` is available.

    Parameters
    ----------
    due_s : float or None
        Wall-clock time (``time.time()``) the chunk becomes available; ``None``
        when the source is not paced (every chunk is available at once).
    timeout_s : float
        Longest time to wait, seconds.

    Returns
    -------
    recv_s : float or None
        Wall-clock time after the wait (the chunk's receive time); ``nan`` when
        ``due_s`` is ``None``; ``None`` if the chunk is not due within ``timeout_s``
        (nothing waited).
    """
    if due_s is None:
        return math.nan
    now = time.time()
    if due_s > now:
        if due_s - now > timeout_s:
            return None
        time.sleep(due_s - now)
        now = time.time()
    return now


def check_start_s(where: str, start_s: float | None) -> float | None:
    """``start_s`` as a finite float, or ``None``; raise :class:`PipelineDefinitionError` otherwise."""
    if start_s is not None:
        start_s = float(start_s)
        if not math.isfinite(start_s):
            raise PipelineDefinitionError(f"{where}: start_s={start_s!r} must be finite seconds or None.")
    return start_s


class _ArrayPlayback(QueuedEventsDevice):
    """Serve a recording loaded into memory in chunks, paced in real time or at full speed.

    Subclasses provide ``_load_header() -> dict`` (keys ``info``, ``n_times``,
    ``file_start_s``) and ``_load_data() -> (data, times_rel_s, events)`` where
    ``data`` is float32 ``(n_channels, n_times)``, ``times_rel_s`` the time of
    each sample relative to the recording origin (``None``: ``index / sfreq``
    from the first sample, which is then at ``0``) and ``events`` a sorted list
    of ``(t_rel_s, stream_id, label, value, meta)``.

    Device time of a sample is ``origin_s + times_rel_s[i]``, where ``origin_s``
    is ``start_s`` if given, ``time.time()`` at :meth:`open` when ``realtime``,
    else the recording's own start time ``file_start_s``.
    """

    blocking = False
    _where = "devices.playback"
    _config_keys: tuple[str, ...] = ("path", "stream_id", "chunk_size", "realtime", "start_s")

    def _init_common(self, path: str | Path, stream_id: str | None, chunk_size: int, realtime: bool,
                     start_s: float | None) -> None:
        path = Path(path)
        if not path.is_file():
            raise PipelineDefinitionError(f"{self._where}: path={str(path)!r} does not exist or is not a file.")
        self.path = path.resolve()
        if stream_id is not None and (not isinstance(stream_id, str) or not stream_id):
            raise PipelineDefinitionError(f"{self._where}: stream_id={stream_id!r} must be a non-empty string or None.")
        self.stream_id = stream_id
        self.chunk_size = check_int(self._where, "chunk_size", chunk_size)
        if not isinstance(realtime, bool):
            raise PipelineDefinitionError(f"{self._where}: realtime={realtime!r} must be True or False.")
        self.realtime = realtime
        self.start_s = check_start_s(self._where, start_s)
        self._header: dict[str, Any] | None = None
        self._reset_runtime()

    def _reset_runtime(self) -> None:
        self._data: np.ndarray | None = None
        self._times: np.ndarray | None = None
        self._origin: float | None = None
        self.position = 0
        self._events: list[Event] = []
        self._pending: list[tuple[float, str, str, Any, dict]] = []
        self._next_event = 0

    def __getstate__(self) -> dict[str, Any]:
        # Configuration and the parsed header travel; loaded samples do not.
        state = {k: self.__dict__[k] for k in self._config_keys}
        state["_header"] = self._header
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset_runtime()

    def _load_header(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _load_data(self) -> tuple[np.ndarray, np.ndarray | None, list]:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def info(self) -> StreamInfo:  # type: ignore[override]
        """Stream description, read from the file on first access (before :meth:`open`)."""
        return self._load_header()["info"]

    @property
    def n_samples_total(self) -> int:
        """Number of samples in the recording."""
        return self._load_header()["n_times"]

    def _rel(self, index: int) -> float:
        """Time of sample ``index`` relative to the origin (extrapolated past the end)."""
        if self._times is None:
            return index / self.info.sfreq
        n = len(self._times)
        if index < n:
            return float(self._times[index])
        return float(self._times[n - 1]) + (index - n + 1) / self.info.sfreq

    def _name(self) -> str:
        return self.stream_id if self.stream_id is not None else self.info.stream_id

    def open(self) -> None:
        """Load the recording into memory and start (or resume) playback.

        Raises
        ------
        DeviceError
            If the file cannot be read.
        """
        header = self._load_header()
        if self._data is None:
            try:
                data, times, events = self._load_data()
            except (DeviceError, PipelineDefinitionError):
                raise
            except Exception as exc:
                raise DeviceError(f"{self._where}: cannot load {str(self.path)!r}: {exc}") from exc
            self._data = np.ascontiguousarray(data, dtype=np.float32)
            self._times = times
            self._pending = events
        if self._origin is None:
            if self.start_s is not None:
                self._origin = self.start_s
            elif self.realtime:
                self._origin = time.time() - self._rel(0)
            else:
                self._origin = header["file_start_s"]

    def close(self) -> None:
        """Release the loaded samples. Idempotent; :meth:`open` resumes at :attr:`position`."""
        self._data = None

    def read(self, timeout_s: float) -> Chunk | None:
        """Return the next chunk, or ``None`` if it is not due within ``timeout_s``.

        Parameters
        ----------
        timeout_s : float
            Longest time to wait for the next chunk, seconds (realtime only).

        Returns
        -------
        chunk : Chunk or None
            Up to ``chunk_size`` samples, shape (n_channels, n_samples), SI units.

        Raises
        ------
        EndOfStream
            When every sample was emitted.
        DeviceError
            If the device is not open.
        """
        data = self._data
        if data is None:
            raise DeviceError(f"{self._where} {self._name()!r}: read() before open().")
        start = self.position
        total = data.shape[1]
        if start >= total:
            raise EndOfStream(f"{self._where} {self._name()!r}: end of {self.path.name} ({total} samples).")
        stop = min(start + self.chunk_size, total)
        now = wait_due(self._origin + self._rel(stop) if self.realtime else None, timeout_s)
        if now is None:
            return None
        self._collect_events(self._rel(stop) if stop < total else math.inf)
        self.position = stop
        return Chunk(data[:, start:stop], self._origin + self._rel(start), self.info, recv_s=now,
                     meta={"sample_index": start})

    def _collect_events(self, stop_rel_s: float) -> None:
        pending, i = self._pending, self._next_event
        while i < len(pending) and pending[i][0] < stop_rel_s:
            t_rel, stream_id, label, value, meta = pending[i]
            self._events.append(Event(stream_id, self._origin + t_rel, label, value, meta))
            i += 1
        self._next_event = i

    def next_ready_s(self) -> float | None:
        """Wall-clock time the next chunk is due; ``0.0`` when not realtime; ``None`` before open / at the end."""
        if self._origin is None or self.position >= self.n_samples_total:
            return None
        if not self.realtime:
            return 0.0
        return self._origin + self._rel(min(self.position + self.chunk_size, self.n_samples_total))
