"""Play a recording (EDF, BDF, FIF) back as a stream: :class:`FilePlayback`.

MNE reads the file (``mne.io.read_raw``); the data is served in volts (SI units,
as MNE returns them), float32, in chunks of ``chunk_size`` samples, paced in
real time or as fast as it is read. Annotations become :class:`~neuraflow.chunk.Event`
objects. MNE is imported lazily, so importing this module stays cheap.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from neuraflow._validate import check_int
from neuraflow.chunk import Chunk, Event, StreamInfo
from neuraflow.devices.base import DeviceBase
from neuraflow.errors import DeviceError, EndOfStream, PipelineDefinitionError

_WHERE = "devices.FilePlayback"
EXTENSIONS: tuple[str, ...] = (".edf", ".bdf", ".fif", ".fif.gz")
"""File name endings :class:`FilePlayback` accepts (case-insensitive)."""

# FIFF unit codes (mne.io.constants.FIFF.FIFF_UNIT_*) -> unit of MNE's get_data().
_UNITS = {107: "V", 112: "T", 201: "T/m", 202: "Am", 6: "mol", 3: "s", 5: "K", 101: "Hz", 106: "C", 114: "degC"}


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for ext in sorted(EXTENSIONS, key=len, reverse=True):
        if name.endswith(ext):
            return ext
    return "".join(path.suffixes[-2:]).lower() or "(none)"


class FilePlayback(DeviceBase):
    """Play an EDF, BDF or FIF recording back as a stream of chunks.

    Parameters
    ----------
    path : str or Path
        The recording: ``.edf``, ``.bdf``, ``.fif`` or ``.fif.gz`` (any case).
    stream_id : str or None
        Name of the stream; ``None`` for the file name without its extension.
    chunk_size : int
        Samples per chunk, >= 1 (the last chunk may be shorter).
    realtime : bool
        If True, chunk ``k`` (samples ``[a, b)``) becomes available at wall time
        ``start_s + b / sfreq``, as if recorded now. If False, every read
        returns the next chunk at once.
    picks : str, sequence of str or int, or None
        Channels to play, as MNE's ``raw.pick()`` takes them (names, indices or
        types such as ``"eeg"``); ``None`` for all channels.
    start_s : float or None
        Device time of the first sample, seconds since the epoch. ``None``:
        ``time.time()`` at :meth:`open` when ``realtime``; otherwise the time of
        the first sample in the file (``meas_date`` plus ``first_samp / sfreq``),
        or ``0.0`` when the file has no measurement date (anonymised files), so
        offline replays are reproducible.

    Attributes
    ----------
    info : StreamInfo
        Channel names and types from the file, units ``"V"`` for voltage
        channels (EEG, EOG, EMG, ECG ...), ``""`` for stim and unitless
        channels. Read from the header on first access,
        before :meth:`open`.
    n_samples_total : int
        Number of samples in the recording (from the header).
    position : int
        Samples emitted so far.

    Raises
    ------
    PipelineDefinitionError
        If ``path`` does not exist or has an unsupported extension, or a
        parameter is invalid.

    Notes
    -----
    Annotations become events (``label`` = description, ``value`` = duration
    in s, ``t_s`` = device time of the onset rounded to the nearest sample,
    ``meta["sample_index"]``), returned by :meth:`drain_events` once the chunk
    holding the onset was read; onsets before the first sample come with the
    first chunk, onsets after the last with the last chunk. After the last
    chunk, :meth:`read` raises :class:`~neuraflow.errors.EndOfStream`.
    :meth:`open` after :meth:`close` resumes where playback stopped; make a new
    device to replay from the start. The whole recording is loaded into memory
    at :meth:`open` (4 bytes per sample).
    """

    blocking = False

    def __init__(
        self,
        path: str | Path,
        *,
        stream_id: str | None = None,
        chunk_size: int = 32,
        realtime: bool = True,
        picks: str | Sequence[str] | Sequence[int] | None = None,
        start_s: float | None = None,
    ) -> None:
        path = Path(path)
        ext = _suffix(path)
        if ext not in EXTENSIONS:
            raise PipelineDefinitionError(
                f"{_WHERE}: path={str(path)!r} has extension {ext!r}, expected one of {EXTENSIONS}."
            )
        if not path.is_file():
            raise PipelineDefinitionError(f"{_WHERE}: path={str(path)!r} does not exist or is not a file.")
        self.path = path.resolve()
        self.stream_id = stream_id if stream_id is not None else path.name[: -len(ext)]
        if not isinstance(self.stream_id, str) or not self.stream_id:
            raise PipelineDefinitionError(f"{_WHERE}: stream_id={stream_id!r} must be a non-empty string or None.")
        self.chunk_size = check_int(_WHERE, "chunk_size", chunk_size)
        if not isinstance(realtime, bool):
            raise PipelineDefinitionError(f"{_WHERE}: realtime={realtime!r} must be True or False.")
        self.realtime = realtime
        if isinstance(picks, (list, tuple)):
            picks = tuple(picks)
        elif picks is not None and not isinstance(picks, str):
            raise PipelineDefinitionError(
                f"{_WHERE}: picks={picks!r} must be None, a channel name or type, or a list of names or indices."
            )
        self.picks = picks
        if start_s is not None:
            start_s = float(start_s)
            if not math.isfinite(start_s):
                raise PipelineDefinitionError(f"{_WHERE}: start_s={start_s!r} must be finite seconds or None.")
        self.start_s = start_s
        self._header: dict[str, Any] | None = None
        self._reset_runtime()

    def _reset_runtime(self) -> None:
        self._data: np.ndarray | None = None
        self._t0: float | None = None
        self.position = 0
        self._events: list[Event] = []
        self._pending: list[tuple[int, str, float]] = []  # (sample, label, duration_s), sorted
        self._next_event = 0

    def __getstate__(self) -> dict[str, Any]:
        # Configuration and the parsed header travel; loaded samples do not.
        state = {k: self.__dict__[k] for k in ("path", "stream_id", "chunk_size", "realtime", "picks", "start_s")}
        state["_header"] = self._header
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset_runtime()

    # ------------------------------------------------------------------ header
    def _read_raw(self, preload: bool) -> Any:
        import mne

        raw = mne.io.read_raw(self.path, preload=preload, verbose="error")
        self._pick(raw)
        return raw

    def _pick(self, raw: Any) -> None:
        if self.picks is not None:
            raw.pick(list(self.picks) if isinstance(self.picks, tuple) else self.picks, verbose="error")

    def _load_header(self) -> dict[str, Any]:
        if self._header is None:
            import mne

            try:
                raw = mne.io.read_raw(self.path, preload=False, verbose="error")
            except Exception as exc:
                raise PipelineDefinitionError(f"{_WHERE}: cannot read {str(self.path)!r}: {exc}") from exc
            try:
                try:
                    self._pick(raw)
                except Exception as exc:
                    raise PipelineDefinitionError(
                        f"{_WHERE}: picks={self.picks!r} do not match {self.path.name} "
                        f"(channels {raw.ch_names[:8]}{' ...' if len(raw.ch_names) > 8 else ''}): {exc}"
                    ) from exc
                sfreq = float(raw.info["sfreq"])
                meas_date = raw.info["meas_date"]
                file_start_s = meas_date.timestamp() + raw.first_samp / sfreq if meas_date is not None else 0.0
                ch_types = tuple(raw.get_channel_types())
                # MNE labels stim channels "V"; they hold trigger codes, so no unit.
                units = tuple(
                    "" if kind == "stim" else _UNITS.get(int(ch["unit"]), "")
                    for kind, ch in zip(ch_types, raw.info["chs"])
                )
                info = StreamInfo(
                    stream_id=self.stream_id,
                    sfreq=sfreq,
                    channels=tuple(raw.ch_names),
                    ch_types=ch_types,
                    units=units,
                    meta={"device": "file", "path": str(self.path)},
                )
                self._header = {
                    "info": info,
                    "n_times": int(raw.n_times),
                    "file_start_s": file_start_s,
                    "annotations": _annotation_samples(raw),
                }
            finally:
                raw.close()
        return self._header

    @property
    def info(self) -> StreamInfo:  # type: ignore[override]
        """Stream description, read from the file header on first access."""
        return self._load_header()["info"]

    @property
    def n_samples_total(self) -> int:
        """Number of samples in the recording."""
        return self._load_header()["n_times"]

    # --------------------------------------------------------- device protocol
    def open(self) -> None:
        """Load the recording into memory and start (or resume) playback.

        Raises
        ------
        DeviceError
            If MNE cannot read the file.
        """
        header = self._load_header()
        if self._data is None:
            try:
                raw = self._read_raw(preload=True)
                data = raw.get_data()
                raw.close()
            except Exception as exc:
                raise DeviceError(f"{_WHERE}: cannot load {str(self.path)!r}: {exc}") from exc
            self._data = np.ascontiguousarray(data, dtype=np.float32)
            self._pending = header["annotations"]
        if self._t0 is None:
            if self.start_s is not None:
                self._t0 = self.start_s
            elif self.realtime:
                self._t0 = time.time()
            else:
                self._t0 = header["file_start_s"]

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
            raise DeviceError(f"{_WHERE} {self.stream_id!r}: read() before open().")
        start = self.position
        total = data.shape[1]
        if start >= total:
            raise EndOfStream(f"{_WHERE} {self.stream_id!r}: end of {self.path.name} ({total} samples).")
        stop = min(start + self.chunk_size, total)
        sfreq = self.info.sfreq
        now = math.nan
        if self.realtime:
            due = self._t0 + stop / sfreq
            now = time.time()
            if due > now:
                if due - now > timeout_s:
                    return None
                time.sleep(due - now)
                now = time.time()
        self._collect_events(stop if stop < total else math.inf)
        self.position = stop
        return Chunk(data[:, start:stop], self._t0 + start / sfreq, self.info, recv_s=now, meta={"sample_index": start})

    def _collect_events(self, stop: float) -> None:
        pending, i = self._pending, self._next_event
        while i < len(pending) and pending[i][0] < stop:
            sample, label, duration = pending[i]
            t_s = self._t0 + sample / self.info.sfreq
            self._events.append(Event(self.stream_id, t_s, label, duration, meta={"sample_index": sample}))
            i += 1
        self._next_event = i

    def drain_events(self) -> list[Event]:
        """Return and forget the annotation events passed since the last call."""
        events, self._events = self._events, []
        return events

    def next_ready_s(self) -> float | None:
        """Wall-clock time the next chunk is due; ``0.0`` (always ready) when not realtime.

        ``None`` before :meth:`open` and after the end of the recording.
        """
        if self._t0 is None or self.position >= self.n_samples_total:
            return None
        if not self.realtime:
            return 0.0
        stop = min(self.position + self.chunk_size, self.n_samples_total)
        return self._t0 + stop / self.info.sfreq

    def __repr__(self) -> str:
        return f"FilePlayback({str(self.path)!r}, stream_id={self.stream_id!r}, realtime={self.realtime})"


def _annotation_samples(raw: Any) -> list[tuple[int, str, float]]:
    """Annotations as ``(sample index from the first sample, description, duration_s)``, sorted."""
    ann = raw.annotations
    if len(ann) == 0:
        return []
    # origin=orig_time makes MNE account for meas_date and first_samp.
    samples = raw.time_as_index(ann.onset, use_rounding=True, origin=ann.orig_time)
    out = [(int(s), str(d), float(dur)) for s, d, dur in zip(samples, ann.description, ann.duration)]
    out.sort(key=lambda e: e[0])
    return out
