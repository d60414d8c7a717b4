"""Play an XDF recording (LabRecorder, every LSL stream of a session) back: :class:`XDFPlayback`.

pyxdf reads the file with clock synchronisation (the recorded clock offsets of
every stream are applied) and dejittered timestamps. Each regular-rate numeric
stream becomes one device; :func:`xdf_devices` makes them all at once
(multi-rate: EEG at 256 Hz next to an accelerometer at 52 Hz). Irregular-rate
and string streams (markers) become :class:`~neuraflow.chunk.Event` objects
carried by one of the data devices (``markers=``). pyxdf is imported lazily.

Playback itself (loading at :meth:`open`, real-time pacing, events) is the
shared engine :class:`~neuraflow.devices._pacing._ArrayPlayback`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from neuraflow._validate import check_option
from neuraflow.chunk import StreamInfo
from neuraflow.devices._pacing import _ArrayPlayback
from neuraflow.errors import PipelineDefinitionError

__all__ = ["XDFPlayback", "xdf_devices"]

_WHERE = "devices.XDFPlayback"

# XDF/LSL unit spellings -> neuraflow units; voltages are scaled to volts.
_VOLT_SCALE = {"microvolts": 1e-6, "microvolt": 1e-6, "uv": 1e-6, "µv": 1e-6, "millivolts": 1e-3, "mv": 1e-3,
               "volts": 1.0, "volt": 1.0, "v": 1.0}


# ----------------------------------------------------------------------------- XDF
def _first(value: Any, default: Any = "") -> Any:
    """pyxdf wraps every XML text in a one-element list."""
    while isinstance(value, list):
        if not value:
            return default
        value = value[0]
    return default if value is None else value


def _channel_desc(info: dict) -> list[dict]:
    desc = _first(info.get("desc"), None)
    if not isinstance(desc, dict):
        return []
    channels = _first(desc.get("channels"), None)
    if not isinstance(channels, dict):
        return []
    return [c for c in channels.get("channel", []) if isinstance(c, dict)]


def _describe(stream: dict, index: int) -> dict[str, Any]:
    """Header of one pyxdf stream: names, rate, format, counts, first timestamp."""
    info = stream["info"]
    n_channels = int(_first(info.get("channel_count"), 0))
    fmt = str(_first(info.get("channel_format"), "float32"))
    srate = float(_first(info.get("nominal_srate"), 0.0))
    stamps = np.asarray(stream["time_stamps"])
    labels, types, units, scales = [], [], [], []
    desc = _channel_desc(info)
    for k in range(n_channels):
        ch = desc[k] if k < len(desc) else {}
        labels.append(str(_first(ch.get("label"), "")) or f"ch{k}")
        types.append(str(_first(ch.get("type"), "misc")).lower() or "misc")
        unit = str(_first(ch.get("unit"), ""))
        scale = _VOLT_SCALE.get(unit.strip().lower())
        scales.append(1.0 if scale is None else scale)
        units.append("V" if scale is not None else unit)
    if len(set(labels)) != len(labels):  # duplicate labels in a desc: number them
        labels = [f"{name}-{k}" for k, name in enumerate(labels)]
    return {
        "index": index,
        "xdf_stream_id": int(_first(info.get("stream_id"), index)),
        "name": str(_first(info.get("name"), f"stream{index}")),
        "type": str(_first(info.get("type"), "")),
        "source_id": str(_first(info.get("source_id"), "")),
        "n_channels": n_channels,
        "channel_format": fmt,
        "nominal_srate": srate,
        "n_samples": int(stamps.shape[0]),
        "first_ts": float(stamps[0]) if stamps.shape[0] else math.nan,
        "labels": tuple(labels),
        "ch_types": tuple(types),
        "units": tuple(units),
        "scales": tuple(scales),
        "is_marker": fmt == "string" or srate <= 0,
    }


def _load_xdf(path: Path, apply_clock_offsets: bool, select: list[int] | None = None) -> tuple[list, dict]:
    import pyxdf

    kwargs: dict[str, Any] = {"synchronize_clocks": apply_clock_offsets, "dejitter_timestamps": True, "verbose": False}
    if select is not None:
        kwargs["select_streams"] = select
    try:
        return pyxdf.load_xdf(str(path), **kwargs)
    except Exception as exc:
        raise PipelineDefinitionError(f"{_WHERE}: cannot read {str(path)!r} as XDF: {exc}") from exc


def _file_header(path: Path, apply_clock_offsets: bool) -> dict[str, Any]:
    """Every stream's header plus the file's time reference."""
    streams, header = _load_xdf(path, apply_clock_offsets)
    described = [_describe(s, i) for i, s in enumerate(streams)]
    firsts = [d["first_ts"] for d in described if d["n_samples"]]
    when = _first(header.get("info", {}).get("datetime"), "")
    try:
        start_epoch = datetime.fromisoformat(str(when)).timestamp() if when else 0.0
    except ValueError:
        start_epoch = 0.0
    # Stream-relative times are taken from the earliest sample of the file, so
    # the devices of one file stay aligned with each other.
    return {"streams": described, "ref_ts": min(firsts) if firsts else 0.0, "start_epoch_s": start_epoch}


def _stream_label(d: dict) -> str:
    return f"{d['name']}-{d['type']}" if d["type"] else d["name"]


def _select(where: str, path: Path, streams: list[dict], selector: str | int) -> dict:
    if isinstance(selector, bool) or not isinstance(selector, (str, int)):
        raise PipelineDefinitionError(f"{where}: stream={selector!r} must be a stream name, type or index.")
    listing = ", ".join(f"[{d['index']}] {d['name']!r} type {d['type']!r}" for d in streams)
    if isinstance(selector, int):
        if not 0 <= selector < len(streams):
            raise PipelineDefinitionError(
                f"{where}: stream={selector} is out of range: {path.name} has {len(streams)} streams ({listing})."
            )
        return streams[selector]
    for key in (lambda d: d["name"], lambda d: d["type"], _stream_label, lambda d: f"{d['name']} {d['type']}"):
        hits = [d for d in streams if key(d) == selector]
        if len(hits) == 1:
            return hits[0]
    raise PipelineDefinitionError(
        f"{where}: stream={selector!r} matches {'several' if any(d['name'] == selector for d in streams) else 'no'} "
        f"streams of {path.name} ({listing}); give a unique name, type, 'name-type' or an index."
    )


class XDFPlayback(_ArrayPlayback):
    """Play one stream of an XDF recording back as a stream of chunks.

    Parameters
    ----------
    path : str or Path
        The ``.xdf`` file.
    stream : str or int
        Which stream: its index in the file, or its name, type, ``"name-type"``
        or ``"name type"`` (the first of these that matches exactly one stream).
    stream_id : str or None
        Name of the neuraflow stream; ``None`` for ``"name-type"`` (``"Muse-EEG"``).
    chunk_size : int
        Samples per chunk, >= 1.
    realtime : bool
        Pace chunks at the recorded rate (True) or return them at once (False).
    apply_clock_offsets : bool
        Apply the clock offsets recorded for each stream (pyxdf
        ``synchronize_clocks``). Timestamps are always dejittered.
    markers : "all", sequence of (str or int), or None
        Irregular-rate or string streams of the file to emit as events with this
        stream's chunks; ``None`` for none.
    start_s : float or None
        Device time of the file's earliest sample, seconds since the epoch.
        ``None``: ``time.time()`` at :meth:`open` when ``realtime``, else the
        file header's ``datetime`` (``0.0`` when absent).

    Attributes
    ----------
    info : StreamInfo
        Channel labels, types and units from the stream's ``desc``; voltages
        (``microvolts``, ``millivolts``) are served in volts (unit ``"V"``).
        ``meta`` holds the XDF name, type, source id and channel format.
        Read from the file on first access, before :meth:`open`.

    Raises
    ------
    PipelineDefinitionError
        If the file is missing or unreadable, ``stream`` matches no single
        stream, the stream is an irregular-rate or string stream (use
        ``markers=`` on a data stream), or the stream has no samples.

    Notes
    -----
    Device time of sample ``i`` is ``origin + (t[i] - t_first)``, ``t`` the
    synchronised, dejittered LSL timestamps and ``t_first`` the earliest sample
    of any stream in the file, so every :class:`XDFPlayback` of one file (see
    :func:`xdf_devices`) shares one time base. A marker becomes an
    :class:`~neuraflow.chunk.Event` whose ``stream_id`` is its stream's
    ``"name-type"``, ``label`` its first value (a string, or the number
    formatted), ``value`` the number (numeric streams) or the string, and
    ``meta["values"]`` every channel when there are several.
    """

    _where = _WHERE
    _config_keys = ("path", "stream_id", "chunk_size", "realtime", "start_s", "stream", "apply_clock_offsets", "markers")

    def __init__(
        self,
        path: str | Path,
        *,
        stream: str | int = 0,
        stream_id: str | None = None,
        chunk_size: int = 32,
        realtime: bool = False,
        apply_clock_offsets: bool = True,
        markers: str | Sequence[str | int] | None = None,
        start_s: float | None = None,
    ) -> None:
        self._init_common(path, stream_id, chunk_size, realtime, start_s)
        self.stream = stream
        if not isinstance(apply_clock_offsets, bool):
            raise PipelineDefinitionError(f"{_WHERE}: apply_clock_offsets={apply_clock_offsets!r} must be True or False.")
        self.apply_clock_offsets = apply_clock_offsets
        if isinstance(markers, str):
            check_option(_WHERE, "markers", markers, ("all",))
        elif markers is not None:
            markers = tuple(markers)
        self.markers = markers

    # ------------------------------------------------------------------ header
    def _load_header(self) -> dict[str, Any]:
        if self._header is None:
            self._header = self._make_header(_file_header(self.path, self.apply_clock_offsets))
        return self._header

    def _make_header(self, file_header: dict[str, Any]) -> dict[str, Any]:
        streams = file_header["streams"]
        d = _select(_WHERE, self.path, streams, self.stream)
        if d["is_marker"]:
            raise PipelineDefinitionError(
                f"{_WHERE}: stream {d['name']!r} (type {d['type']!r}, {d['channel_format']}, "
                f"nominal rate {d['nominal_srate']} Hz) of {self.path.name} is an irregular-rate or string "
                "stream: play a data stream with markers=[...] to get it as events."
            )
        if d["n_samples"] == 0:
            raise PipelineDefinitionError(
                f"{_WHERE}: stream {d['name']!r} (type {d['type']!r}) of {self.path.name} is empty (0 samples)."
            )
        if self.markers is None:
            marker_streams = []
        elif self.markers == "all":
            marker_streams = [m for m in streams if m["is_marker"]]
        else:
            marker_streams = [_select(_WHERE, self.path, streams, m) for m in self.markers]
            for m in marker_streams:
                if not m["is_marker"]:
                    raise PipelineDefinitionError(
                        f"{_WHERE}: markers entry {m['name']!r} (type {m['type']!r}) is a regular-rate data stream, "
                        "not a marker stream."
                    )
        info = StreamInfo(
            stream_id=self.stream_id if self.stream_id is not None else _stream_label(d),
            sfreq=d["nominal_srate"],
            channels=d["labels"],
            ch_types=d["ch_types"],
            units=d["units"],
            meta={"device": "xdf", "path": str(self.path), "xdf_name": d["name"], "xdf_type": d["type"],
                  "source_id": d["source_id"], "channel_format": d["channel_format"]},
        )
        return {
            "info": info,
            "n_times": d["n_samples"],
            "file_start_s": file_header["start_epoch_s"],
            "ref_ts": file_header["ref_ts"],
            "stream": d,
            "marker_streams": marker_streams,
        }

    # --------------------------------------------------------------- playback
    def _load_data(self) -> tuple[np.ndarray, np.ndarray, list]:
        header = self._load_header()
        d = header["stream"]
        wanted = [d] + header["marker_streams"]
        streams, _ = _load_xdf(self.path, self.apply_clock_offsets, [w["xdf_stream_id"] for w in wanted])
        by_id = {int(_first(s["info"].get("stream_id"), -1)): s for s in streams}
        ref = header["ref_ts"]
        main = by_id[d["xdf_stream_id"]]
        data = np.asarray(main["time_series"], dtype=np.float64).T
        scales = np.asarray(d["scales"])
        if np.any(scales != 1.0):
            data = data * scales[:, None]
        times = np.asarray(main["time_stamps"], dtype=np.float64) - ref
        events = []
        for m in header["marker_streams"]:
            s = by_id.get(m["xdf_stream_id"])
            if s is None:
                continue
            from neuraflow.devices.lsl import marker_event_fields

            for t, values in zip(np.asarray(s["time_stamps"], dtype=np.float64), s["time_series"]):
                label, value, meta = marker_event_fields(list(values))
                events.append((float(t) - ref, _stream_label(m), label, value, meta))
        events.sort(key=lambda e: e[0])
        return data, times, events

    def __repr__(self) -> str:
        return f"XDFPlayback({str(self.path)!r}, stream={self.stream!r}, realtime={self.realtime})"


def xdf_devices(path: str | Path, *, on_empty: str = "raise", **kwargs: Any) -> list[XDFPlayback]:
    """One :class:`XDFPlayback` per regular-rate stream of an XDF file, in file order.

    Parameters
    ----------
    path : str or Path
        The ``.xdf`` file.
    on_empty : {"raise", "skip"}
        What to do with a data stream that has no samples: raise a
        :class:`~neuraflow.errors.PipelineDefinitionError` naming it, or leave it out.
    **kwargs
        Passed to every :class:`XDFPlayback` (``chunk_size``, ``realtime``,
        ``apply_clock_offsets``, ``start_s``); not ``stream``, ``stream_id`` or ``markers``.

    Returns
    -------
    devices : list of XDFPlayback
        The file's marker (irregular-rate or string) streams are emitted as
        events by the first device, so each marker reaches the pipeline once.
    """
    check_option("devices.xdf_devices", "on_empty", on_empty, ("raise", "skip"))
    for key in ("stream", "stream_id", "markers"):
        if key in kwargs:
            raise PipelineDefinitionError(
                f"devices.xdf_devices: {key}= is chosen per stream; use XDFPlayback for one stream."
            )
    path = Path(path)
    if not path.is_file():
        raise PipelineDefinitionError(f"devices.xdf_devices: path={str(path)!r} does not exist or is not a file.")
    file_header = _file_header(path.resolve(), kwargs.get("apply_clock_offsets", True))
    streams = file_header["streams"]
    data_streams = []
    for d in streams:
        if d["is_marker"]:
            continue
        if d["n_samples"] == 0:
            if on_empty == "raise":
                raise PipelineDefinitionError(
                    f"devices.xdf_devices: stream {d['name']!r} (type {d['type']!r}) of {path.name} is empty "
                    "(0 samples); pass on_empty='skip' to leave it out."
                )
            continue
        data_streams.append(d)
    if not data_streams:
        raise PipelineDefinitionError(f"devices.xdf_devices: {path.name} has no regular-rate data stream with samples.")
    labels = [_stream_label(d) for d in data_streams]
    devices = []
    for k, d in enumerate(data_streams):
        sid = labels[k] if labels.count(labels[k]) == 1 else f"{labels[k]}-{d['index']}"
        dev = XDFPlayback(path, stream=d["index"], stream_id=sid, markers="all" if k == 0 else None, **kwargs)
        dev._header = dev._make_header(file_header)  # one parse of the file for all devices
        devices.append(dev)
    return devices
