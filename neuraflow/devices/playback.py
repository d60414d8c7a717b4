"""Play a recording (EDF, BDF, FIF) back as a stream: :class:`FilePlayback`.

MNE reads the file (``mne.io.read_raw``); the data is served in volts (SI units,
as MNE returns them), float32, in chunks of ``chunk_size`` samples, paced in
real time or as fast as it is read. Annotations become :class:`~neuraflow.chunk.Event`
objects. MNE is imported lazily, so importing this module stays cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from neuraflow.chunk import StreamInfo
from neuraflow.devices._pacing import _ArrayPlayback
from neuraflow.errors import PipelineDefinitionError

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


class FilePlayback(_ArrayPlayback):
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

    _where = _WHERE
    _config_keys = ("path", "stream_id", "chunk_size", "realtime", "picks", "start_s")

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
        self._init_common(path, stream_id, chunk_size, realtime, start_s)
        if self.stream_id is None:
            self.stream_id = path.name[: -len(ext)]
        if isinstance(picks, (list, tuple)):
            picks = tuple(picks)
        elif picks is not None and not isinstance(picks, str):
            raise PipelineDefinitionError(
                f"{_WHERE}: picks={picks!r} must be None, a channel name or type, or a list of names or indices."
            )
        self.picks = picks

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

    # --------------------------------------------------------------- playback
    def _load_data(self) -> tuple[np.ndarray, None, list]:
        raw = self._read_raw(preload=True)
        data = raw.get_data()
        raw.close()
        sfreq = self.info.sfreq
        events = [
            (sample / sfreq, self.stream_id, label, duration, {"sample_index": sample})
            for sample, label, duration in self._load_header()["annotations"]
        ]
        return data, None, events

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
