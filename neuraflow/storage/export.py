"""Export stored data to portable files: EDF, BDF, FIF, Parquet and a BIDS folder.

:func:`export` writes a :class:`~neuraflow.storage.query.QueryResult`, a list of
:class:`~neuraflow.chunk.Chunk` or an iterable of result blocks; :func:`export_stream`
reads a span of a stream from the tiers in blocks of ``block_s`` seconds and exports
it (what ``neuraflow export`` and ``POST /streams/{id}/export`` call).

What each format keeps
----------------------
========  ===========================================  ========================================
format    samples                                      metadata
========  ===========================================  ========================================
parquet   bit-exact float32, ``t_s`` float64 per row   schema metadata (below); events as JSON
fif       bit-exact float32 (per-channel ``cal``)      names, types, units, sfreq, device,
                                                       start time, annotations
bdf       24-bit: ``|err| <= (pmax - pmin) / (2 *      names, types (label prefix), uV/V,
          16777214)`` per channel                      sfreq, device type, annotations
edf       16-bit: ``|err| <= (pmax - pmin) / (2 *      as BDF
          65534)`` per channel
bids      BDF inside a BIDS tree (FIF for ``meg``,     sidecar JSON, channels.tsv, events.tsv
          EDF for ``ieeg``)
========  ===========================================  ========================================

``pmin``/``pmax`` are the channel's minimum and maximum over the exported span, in the
file's unit (uV for voltage channels). E.g. an EEG channel spanning +-200 uV is stored
in EDF with steps of 400 / 65534 = 0.0061 uV, an error of at most 0.0031 uV.

Gaps (missing seqs) are kept as time jumps of ``t_s`` in Parquet; the continuous formats
fill them with zeros and annotate them ``BAD_ACQ_SKIP`` (MNE's convention), so
annotations stay at their recorded time. Annotations come from :class:`~neuraflow.chunk.Event`
objects: description = ``label``, duration = ``meta["duration_s"]``, or the numeric
``value`` of events that carry ``meta["sample_index"]`` (the annotations of
:class:`~neuraflow.devices.FilePlayback`, whose value is their duration), else 0.

Limits of the formats: EDF/BDF dates hold years 1985-2084 (a start outside, e.g. an
anonymised replay at t=0, is written without a date); at a non-integer rate EDF/BDF
records last ``floor(sfreq) / sfreq`` s rounded to 8 characters, so the rate read back
differs slightly (the data is padded to whole records, annotated ``BAD_ACQ_SKIP``); FIF
stores the rate as float32. Channel names longer than 16 characters do not fit EDF/BDF.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from neuraflow.chunk import Chunk, Event, StreamInfo
from neuraflow.errors import NeuraflowError
from neuraflow.storage.query import QueryEngine, QueryResult, assemble, stitch

__all__ = [
    "FORMATS", "MEDIA_TYPES", "SUFFIXES", "ExportError", "export", "export_stream", "iter_blocks",
    "result_from_chunks", "stored_events", "zip_folder",
]  # fmt: skip

Format = Literal["edf", "bdf", "fif", "parquet", "bids"]
FORMATS: tuple[str, ...] = ("edf", "bdf", "fif", "parquet", "bids")
#: Media type of each format's HTTP response (a BIDS folder travels as a zip).
MEDIA_TYPES = {"edf": "application/octet-stream", "bdf": "application/octet-stream",
               "fif": "application/octet-stream", "parquet": "application/vnd.apache.parquet",
               "bids": "application/zip"}  # fmt: skip
#: Usual file name ending of each format.
SUFFIXES = {"edf": ".edf", "bdf": ".bdf", "fif": "_raw.fif", "parquet": ".parquet", "bids": ""}

_MNE_TYPES = frozenset({"eeg", "meg", "eog", "ecg", "emg", "stim", "misc", "seeg", "dbs", "ecog", "resp", "bio",
                        "fnirs_cw_amplitude", "hbo", "hbr", "gsr", "temperature"})  # fmt: skip
_TO_VOLTS = {"V": 1.0, "mV": 1e-3, "uV": 1e-6, "µV": 1e-6, "nV": 1e-9}
_GAP = "BAD_ACQ_SKIP"


class ExportError(NeuraflowError, ValueError):
    """An export cannot be written: bad format or arguments, nothing to export, a name EDF cannot hold."""


# Sources --------------------------------------------------------------------------------
def result_from_chunks(chunks: Sequence[Chunk], start_s: float | None = None, end_s: float | None = None,
                       channels: Sequence[str] | None = None) -> QueryResult:  # fmt: skip
    """The chunks of one stream as a :class:`QueryResult` (stitched by seq; the span defaults to theirs).

    Raises
    ------
    ExportError
        No chunks, or chunks of several streams.
    """
    chunks = list(chunks)
    if not chunks:
        raise ExportError("storage.export: no chunks to export.")
    ids = sorted({c.stream_id for c in chunks})
    if len(ids) > 1:
        raise ExportError(f"storage.export: chunks of one stream expected, got {len(ids)}: {ids[:5]}.")
    stitched = stitch([("chunks", chunks)])
    lo = min(c.t0_s for c in chunks) if start_s is None else float(start_s)
    hi = max(c.t_end_s for c in chunks) if end_s is None else float(end_s)
    return assemble(stitched, stitched.chunks[-1].info, lo, hi, channels)


def _blocks(source: QueryResult | Sequence[Chunk] | Iterable[QueryResult]) -> Iterator[QueryResult]:
    if isinstance(source, QueryResult):
        yield source
        return
    if isinstance(source, (list, tuple)) and source and all(isinstance(c, Chunk) for c in source):
        yield result_from_chunks(source)
        return
    for block in source:
        if not isinstance(block, QueryResult):
            raise ExportError(f"storage.export: source must be a QueryResult, a list of Chunk or an iterable of "
                              f"QueryResult; got an item of type {type(block).__name__}.")  # fmt: skip
        yield block


def iter_blocks(engine: QueryEngine, stream_id: str, start_s: float, end_s: float,
                channels: Sequence[str] | None = None, *, block_s: float = 300.0) -> Iterator[QueryResult]:  # fmt: skip
    """Query ``[start_s, end_s)`` in consecutive spans of ``block_s`` seconds (the last may be shorter)."""
    if not (isinstance(block_s, (int, float)) and math.isfinite(block_s) and block_s > 0):
        raise ExportError(f"storage.export: block_s={block_s!r} must be a finite number > 0 s.")
    n = max(1, math.ceil((end_s - start_s) / block_s))
    for i in range(n):
        lo = start_s + i * block_s
        yield engine.query(stream_id, lo, end_s if i == n - 1 else min(start_s + (i + 1) * block_s, end_s), channels)


def stored_events(engine: QueryEngine, stream_id: str, start_s: float | None = None,
                  end_s: float | None = None) -> list[Event]:  # fmt: skip
    """Events of ``stream_id`` from every tier, duplicates across tiers dropped, sorted by time."""
    seen: set[tuple[float, str, str]] = set()
    out: list[Event] = []
    for tier in engine.tiers:
        for e in tier.events(stream_id, start_s, end_s):
            key = (e.t_s, e.label, repr(e.value))
            if key not in seen:
                seen.add(key)
                out.append(e)
    return sorted(out, key=lambda e: e.t_s)


# Helpers --------------------------------------------------------------------------------
def _duration(e: Event) -> float:
    if "duration_s" in e.meta:
        return float(e.meta["duration_s"])
    if "sample_index" in e.meta and isinstance(e.value, (int, float)) and not isinstance(e.value, bool):
        return max(float(e.value), 0.0)
    return 0.0


def _stream_meta(info: StreamInfo) -> dict[str, Any]:
    return {"stream_id": info.stream_id, "sfreq": info.sfreq, "channels": list(info.channels),
            "ch_types": list(info.ch_types), "units": list(info.units), "meta": dict(info.meta)}  # fmt: skip


def _events_json(events: Sequence[Event]) -> str:
    return json.dumps([{"t_s": e.t_s, "label": e.label, "value": e.value, "meta": dict(e.meta)} for e in events],
                      default=str)  # fmt: skip


def _concat(blocks: Iterable[QueryResult], progress: Callable[[QueryResult], Any] | None) -> QueryResult:
    parts: list[QueryResult] = []
    for block in blocks:
        if parts and (block.info.channels != parts[0].info.channels or block.info.sfreq != parts[0].info.sfreq):
            raise ExportError(f"storage.export: stream {block.stream_id!r} changed layout at {block.start_s!r}; "
                              "export the two parts separately.")  # fmt: skip
        parts.append(block)
        if progress is not None:
            progress(block)
    if not parts:
        raise ExportError("storage.export: nothing to export (no blocks).")
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    return QueryResult(first.info, np.concatenate([p.data for p in parts], axis=1),
                       np.concatenate([p.times_s for p in parts]), first.start_s, parts[-1].end_s,
                       [g for p in parts for g in p.gaps], {}, sum(p.duplicates for p in parts))  # fmt: skip


def _fill_gaps(res: QueryResult) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Samples on a regular grid from the first sample: zeros in the jumps of ``times_s``.

    Returns the data and the ``(onset_s, duration_s)`` of each filled jump (relative to the first sample).
    """
    t, sfreq = res.times_s, res.info.sfreq
    jumps = np.flatnonzero(np.diff(t) > 1.5 / sfreq)
    if not jumps.size:
        return res.data, []
    pieces, skips, lo = [], [], 0
    offset = 0  # samples inserted so far
    for j in jumps:
        pieces.append(res.data[:, lo : j + 1])
        n_fill = int(round((t[j + 1] - t[j]) * sfreq)) - 1
        pieces.append(np.zeros((res.data.shape[0], n_fill), np.float32))
        skips.append(((j + 1 + offset) / sfreq, n_fill / sfreq))
        offset += n_fill
        lo = j + 1
    pieces.append(res.data[:, lo:])
    return np.concatenate(pieces, axis=1), skips


def _to_raw(res: QueryResult, events: Sequence[Event], *, whole_records: bool = False):
    """An ``mne.io.RawArray`` in SI units with annotations, device info and the stream description.

    ``whole_records``: at a non-integer rate, pad with the last sample to a multiple of
    ``floor(sfreq)`` samples (EDF/BDF data records; MNE does not) and annotate the padding.
    """
    import mne

    if res.n_samples == 0:
        raise ExportError(f"storage.export: stream {res.stream_id!r} has no samples in "
                          f"[{res.start_s!r}, {res.end_s!r}).")  # fmt: skip
    info = res.info
    data, skips = _fill_gaps(res)
    per_record = math.floor(info.sfreq)
    if whole_records and not float(info.sfreq).is_integer() and (pad := -data.shape[1] % per_record):
        skips.append((data.shape[1] / info.sfreq, pad / info.sfreq))
        data = np.pad(data, ((0, 0), (0, pad)), "edge")
    scale = np.array([_TO_VOLTS.get(u, 1.0) for u in info.units], np.float64)
    types = [t if t in _MNE_TYPES else "misc" for t in info.ch_types]
    minfo = mne.create_info(list(info.channels), info.sfreq, types)
    raw = mne.io.RawArray(data.astype(np.float64) * scale[:, None], minfo, verbose="error")
    for ch, cal in zip(raw.info["chs"], scale):
        ch["cal"] = float(cal)  # FIF stores data / cal as float32: the original float32 bits
    t_first = float(res.times_s[0])
    with raw.info._unlock():
        raw.info["description"] = json.dumps({"neuraflow": _stream_meta(info)}, default=str)
        device = info.meta.get("device") or info.meta.get("model")
        if device:
            raw.info["device_info"] = {"type": str(device).replace(" ", "_")[:80]}
        if isinstance(info.meta.get("line_freq"), (int, float)):
            raw.info["line_freq"] = float(info.meta["line_freq"])
    raw.set_meas_date(dt.datetime.fromtimestamp(t_first, dt.UTC))
    t_last = t_first + data.shape[1] / info.sfreq
    inside = [e for e in events if t_first <= e.t_s < t_last]
    onsets = [e.t_s - t_first for e in inside] + [o for o, _ in skips]
    durations = [_duration(e) for e in inside] + [d for _, d in skips]
    labels = [str(e.label) for e in inside] + [_GAP] * len(skips)
    if onsets:
        raw.set_annotations(mne.Annotations(onsets, durations, labels, orig_time=raw.info["meas_date"]))
    return raw


# Writers --------------------------------------------------------------------------------
def _write_parquet(blocks: Iterable[QueryResult], path: Path, events: Sequence[Event],
                   progress: Callable[[QueryResult], Any] | None) -> None:  # fmt: skip
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    gaps: list[str] = []
    try:
        for block in blocks:
            table = block.to_arrow()
            if writer is None:
                first = block
                meta = {k: v for k, v in (table.schema.metadata or {}).items() if k != b"gaps"}
                meta.update({b"stream": json.dumps(_stream_meta(block.info), default=str).encode(),
                             b"events": _events_json(events).encode()})  # fmt: skip
                schema = table.schema.with_metadata(meta)
                writer = pq.ParquetWriter(str(path), schema, compression="zstd")
            elif block.info.channels != first.info.channels:
                raise ExportError(f"storage.export: stream {block.stream_id!r} changed layout at "
                                  f"{block.start_s!r}; export the two parts separately.")  # fmt: skip
            writer.write_table(pa.Table.from_arrays(table.columns, schema=schema))
            gaps.extend(f"{g.first_seq}-{g.last_seq}" for g in block.gaps)
            if progress is not None:
                progress(block)
        if writer is None:
            raise ExportError("storage.export: nothing to export (no blocks).")
        writer.add_key_value_metadata({"gaps": ",".join(dict.fromkeys(gaps)), "end_s": repr(block.end_s)})
    finally:
        if writer is not None:
            writer.close()


def _write_edf(raw, path: Path, fmt: str) -> None:
    import mne

    types = raw.get_channel_types()
    too_long = [n for n in raw.ch_names if len(n) > 16]
    if too_long:
        raise ExportError(f"storage.export: {fmt.upper()} labels hold 16 characters; channels {too_long[:5]} are "
                          "longer. Export to fif or parquet, or rename them.")  # fmt: skip
    add_type = all(len(f"{t.upper()} {n}") <= 16 for n, t in zip(raw.ch_names, types))
    year = raw.info["meas_date"].year
    if not 1985 <= year <= 2084:  # EDF dates hold two-digit years
        raw.set_meas_date(None)
    mne.export.export_raw(str(path), raw, fmt=fmt, physical_range="channelwise", add_ch_type=add_type,
                          overwrite=True, verbose="error")  # fmt: skip


def _write_bids(raw, root: Path, *, subject: str, session: str | None, task: str, run: str | int | None,
                datatype: str) -> Path:  # fmt: skip
    from mne_bids import BIDSPath, write_raw_bids

    bids_format = {"meg": "FIF", "ieeg": "EDF"}.get(datatype, "BDF")
    bids_path = BIDSPath(subject=subject, session=session, task=task, run=run, datatype=datatype, root=root)
    if not 1985 <= raw.info["meas_date"].year <= 2084 and bids_format != "FIF":
        raw.set_meas_date(None)
    write_raw_bids(raw, bids_path, format=bids_format, allow_preload=True, physical_range="channelwise",
                   overwrite=True, verbose="error")  # fmt: skip
    return root


# Entry points ---------------------------------------------------------------------------
def export(source: QueryResult | Sequence[Chunk] | Iterable[QueryResult], path: str | Path, *, format: Format,
           events: Sequence[Event] | None = None, progress: Callable[[QueryResult], Any] | None = None,
           subject: str = "01", session: str | None = None, task: str = "neuraflow", run: str | int | None = None,
           datatype: str = "eeg") -> Path:  # fmt: skip
    """Write samples of one stream (and its events) to a file or a BIDS folder.

    Parameters
    ----------
    source : QueryResult, list of Chunk, or iterable of QueryResult
        The samples: one result, the chunks of one stream, or consecutive blocks of
        one span (see :func:`iter_blocks`). Parquet is written block by block; the
        other formats hold the whole span in memory (MNE writes them from a Raw).
    path : str or Path
        The file to write (replaced if present); for ``"bids"``, the BIDS root folder.
    format : {"edf", "bdf", "fif", "parquet", "bids"}
        See the table in the module docstring for what each keeps and the EDF/BDF
        quantisation bound.
    events : sequence of Event or None
        Markers written as annotations (EDF/BDF/FIF, ``events.tsv`` in BIDS) or as
        JSON in the Parquet schema metadata (``events``); those outside the exported
        samples are left out of the annotations.
    progress : callable or None
        Called with each block once it is read (e.g. to advance a progress bar by
        ``block.end_s - block.start_s``).
    subject, session, task, run, datatype
        BIDS entities and data type (``"eeg"`` -> BDF, ``"ieeg"`` -> EDF, ``"meg"`` -> FIF).

    Returns
    -------
    Path
        What was written (the BIDS root for ``"bids"``).

    Raises
    ------
    ExportError
        An unknown format, nothing to export, or a channel name EDF/BDF cannot hold.

    Notes
    -----
    EDF stores 16-bit integers and BDF 24-bit ones, scaled per channel to the exported
    span's minimum and maximum (``physical_range="channelwise"``): a sample differs from
    the original by at most ``(pmax - pmin) / (2 * (dmax - dmin))`` with ``dmax - dmin``
    = 65534 (EDF) or 16777214 (BDF). The header stores ``pmin``/``pmax`` on 8
    characters; MNE rounds them outwards, so the bound uses the header's values. Data
    records last one second: the last one is padded with the last sample and
    annotated ``BAD_ACQ_SKIP``.

    Examples
    --------
    >>> export(engine.query("eeg-0", t0, t1), "eeg.edf", format="edf")   # doctest: +SKIP
    """
    if format not in FORMATS:
        raise ExportError(f"storage.export: format={format!r} must be one of {list(FORMATS)}.")
    path = Path(path)
    events = sorted(events or (), key=lambda e: e.t_s)
    blocks = _blocks(source)
    if format == "parquet":
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_parquet(blocks, path, events, progress)
        return path
    raw = _to_raw(_concat(blocks, progress), events, whole_records=format in ("edf", "bdf", "bids"))
    if format == "bids":
        if path.exists() and not path.is_dir():
            raise ExportError(f"storage.export: {path} exists and is not a folder; BIDS writes a folder.")
        return _write_bids(raw, path, subject=subject, session=session, task=task, run=run, datatype=datatype)
    path.parent.mkdir(parents=True, exist_ok=True)
    if format == "fif":
        raw.save(str(path), fmt="single", overwrite=True, verbose="error")
    else:
        _write_edf(raw, path, format)
    return path


def export_stream(engine: QueryEngine, stream_id: str, start_s: float, end_s: float, path: str | Path, *,
                  format: Format, channels: Sequence[str] | None = None, block_s: float = 300.0,
                  with_events: bool = True, progress: Callable[[QueryResult], Any] | None = None,
                  **bids: Any) -> Path:  # fmt: skip
    """Export ``[start_s, end_s)`` of a stored stream, read in blocks of ``block_s`` seconds.

    ``with_events`` adds the stream's stored events of the span (from every tier);
    ``bids`` are :func:`export`'s BIDS arguments. Errors of the query
    (:class:`~neuraflow.storage.query.QueryError`, ``UnknownStreamError``) propagate.
    """
    events = stored_events(engine, stream_id, start_s, end_s) if with_events else None
    blocks = iter_blocks(engine, stream_id, start_s, end_s, channels, block_s=block_s)
    return export(blocks, path, format=format, events=events, progress=progress, **bids)


def zip_folder(folder: str | Path, zip_path: str | Path) -> Path:
    """``folder`` as a zip archive at ``zip_path`` (paths inside relative to ``folder``)."""
    base = str(Path(zip_path).with_suffix(""))
    return Path(shutil.make_archive(base, "zip", root_dir=str(folder)))
