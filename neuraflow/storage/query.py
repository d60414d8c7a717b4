"""Read a stream across tiers: ``query(stream_id, start_s, end_s, channels)``.

Tiers are read fastest first (Redis, PostgreSQL, Iceberg); a slower tier is read only
when what the faster ones returned does not cover the requested span (it does not start
at or before ``start_s``, or has a seq gap inside). Chunks are merged by seq by
:func:`stitch`: the fastest tier's copy wins, duplicates are dropped after checking
they are identical, and the seq gaps left are reported.

A sample belongs to the result when its time is in ``[start_s, end_s)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from operator import attrgetter
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from neuraflow._validate import suggest
from neuraflow.chunk import Chunk, StreamInfo
from neuraflow.errors import NeuraflowError
from neuraflow.sinks.iceberg import MissingChannelError
from neuraflow.storage.tiers import Tier, TierConsistencyError, chunk_crc

__all__ = ["ChannelReader", "Gap", "QueryEngine", "QueryError", "QueryResult", "Stitched", "UnknownStreamError", "query", "stitch"]

#: Channel types MNE knows; any other reads as "misc".
_MNE_TYPES = frozenset({"eeg", "meg", "eog", "ecg", "emg", "stim", "misc", "seeg", "dbs", "ecog", "resp", "bio",
                        "fnirs_cw_amplitude", "hbo", "hbr", "gsr", "temperature"})  # fmt: skip
#: Unit -> factor to volts (MNE stores voltages in V).
_TO_VOLTS = {"V": 1.0, "mV": 1e-3, "uV": 1e-6, "µV": 1e-6, "nV": 1e-9}


class QueryError(NeuraflowError, ValueError):
    """A query is invalid: bad time range, unknown channel, mixed stream layouts."""


@runtime_checkable
class ChannelReader(Protocol):
    """A tier that reads some channels without the others (:class:`~neuraflow.storage.IcebergTier`)."""

    def read_channels(self, stream_id: str, start_s: float | None, end_s: float | None,
                      channels: Sequence[str] | None) -> list[Chunk]:  # fmt: skip
        """``read(stream_id, start_s, end_s)`` with each chunk restricted to ``channels``, in that order."""


class UnknownStreamError(QueryError, KeyError):
    """No tier knows the stream."""

    def __str__(self) -> str:  # KeyError quotes its message
        return str(self.args[0]) if self.args else ""


_SEQ, _T0, _INFO, _DATA = (attrgetter(name) for name in ("seq", "t0_s", "info", "data"))


# Stitching -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Gap:
    """Seqs ``first_seq..last_seq`` (inclusive) missing between two stored chunks.

    ``start_s``/``end_s`` are the end of the chunk before and the start of the chunk after
    (device time, s since epoch).
    """

    first_seq: int
    last_seq: int
    start_s: float
    end_s: float

    @property
    def n_missing(self) -> int:
        return self.last_seq - self.first_seq + 1


@dataclass(frozen=True, slots=True)
class Stitched:
    """What :func:`stitch` returns.

    Parameters
    ----------
    chunks : list of Chunk
        One chunk per seq, sorted by seq.
    gaps : list of Gap
        Seq gaps between consecutive chunks.
    sources : dict
        Tier name -> number of chunks taken from it.
    duplicates : int
        Copies dropped because a faster tier had the same seq.
    origins : list of str
        Tier name of each of ``chunks``.
    """

    chunks: list[Chunk]
    gaps: list[Gap]
    sources: dict[str, int]
    duplicates: int
    origins: list[str] = field(default_factory=list)


def _same(a: Chunk, b: Chunk) -> bool:
    return a.t0_s == b.t0_s and a.data.shape == b.data.shape and chunk_crc(a) == chunk_crc(b)


def stitch(per_tier: Sequence[tuple[str, Sequence[Chunk]]], *, verify: bool = True) -> Stitched:
    """Merge the chunks read from several tiers into one seq-ordered run.

    Parameters
    ----------
    per_tier : sequence of (str, sequence of Chunk)
        ``(tier name, chunks)`` fastest tier first; one stream only.
    verify : bool
        Check that every duplicate is identical (seq, ``t0_s``, shape, CRC-32 of the samples).

    Returns
    -------
    Stitched

    Raises
    ------
    TierConsistencyError
        ``verify`` and two copies of one seq differ (the tiers and seq are named).
    """
    filled = [(name, chunks) for name, chunks in per_tier if chunks]
    if len(filled) == 1:  # one tier (the cold tier alone, typically): no merge, gaps found with numpy
        fast = _stitch_one(*filled[0])
        if fast is not None:
            return fast
    chosen: dict[int, tuple[str, Chunk]] = {}
    duplicates = 0
    for name, chunks in per_tier:
        for chunk in chunks:
            held = chosen.get(chunk.seq)
            if held is None:
                chosen[chunk.seq] = (name, chunk)
                continue
            duplicates += 1
            if verify and not _same(held[1], chunk):
                raise TierConsistencyError(
                    f"storage.query: seq {chunk.seq} of {chunk.stream_id!r} differs between tiers "
                    f"{held[0]!r} (t0_s={held[1].t0_s!r}, shape={held[1].data.shape}) and {name!r} "
                    f"(t0_s={chunk.t0_s!r}, shape={chunk.data.shape})."
                )
    ordered = [chosen[s] for s in sorted(chosen)]
    sources: dict[str, int] = {}
    gaps: list[Gap] = []
    for i, (name, chunk) in enumerate(ordered):
        sources[name] = sources.get(name, 0) + 1
        if i and chunk.seq > ordered[i - 1][1].seq + 1:
            prev = ordered[i - 1][1]
            gaps.append(Gap(prev.seq + 1, chunk.seq - 1, prev.t_end_s, chunk.t0_s))
    return Stitched([c for _, c in ordered], gaps, sources, duplicates, [n for n, _ in ordered])


def _stitch_one(name: str, chunks: Sequence[Chunk]) -> Stitched | None:
    """:func:`stitch` of one tier's chunks when their seqs are strictly increasing (else ``None``)."""
    seq = np.fromiter(map(_SEQ, chunks), np.int64, len(chunks))
    steps = np.diff(seq)
    if np.any(steps <= 0):
        return None
    gaps = [Gap(int(seq[i]) + 1, int(seq[i + 1]) - 1, chunks[i].t_end_s, chunks[i + 1].t0_s)
            for i in np.flatnonzero(steps > 1).tolist()]  # fmt: skip
    return Stitched(list(chunks), gaps, {name: len(chunks)}, 0, [name] * len(chunks))


# Results ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class QueryResult:
    """Samples of one stream over ``[start_s, end_s)``, channels selected.

    Parameters
    ----------
    info : StreamInfo
        The stream description restricted to the selected channels.
    data : ndarray, shape (n_channels, n_samples), float32
        Samples in time order (stitched by seq; a gap leaves a jump in ``times_s``).
    times_s : ndarray, shape (n_samples,), float64
        Device time of each sample, s since epoch (each chunk's ``t0_s + k / sfreq``).
    start_s, end_s : float
        The requested span.
    gaps : list of Gap
        Seq gaps between the chunks that were used.
    sources : dict
        Tier name -> chunks with samples in the span taken from it.
    duplicates : int
        Copies of a seq found in a slower tier too, and dropped (the look-back included).
    """

    info: StreamInfo
    data: np.ndarray
    times_s: np.ndarray
    start_s: float
    end_s: float
    gaps: list[Gap] = field(default_factory=list)
    sources: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0

    @property
    def stream_id(self) -> str:
        return self.info.stream_id

    @property
    def channels(self) -> tuple[str, ...]:
        return self.info.channels

    @property
    def n_samples(self) -> int:
        return self.data.shape[1]

    def to_numpy(self) -> tuple[np.ndarray, np.ndarray]:
        """``(data (n_channels, n_samples) float32, times_s (n_samples,) float64)``."""
        return self.data, self.times_s

    def to_arrow(self):
        """A ``pyarrow.Table``: column ``t_s`` (float64) then one float32 column per channel.

        Schema metadata: ``stream_id``, ``sfreq``, ``start_s``, ``end_s``, ``ch_types``, ``units``
        (comma-joined) and ``gaps`` (``first-last`` seq runs, comma-joined).
        """
        import pyarrow as pa

        columns = {"t_s": pa.array(self.times_s)}
        columns.update({name: pa.array(self.data[i]) for i, name in enumerate(self.info.channels)})
        meta = {
            "stream_id": self.stream_id, "sfreq": repr(self.info.sfreq), "start_s": repr(self.start_s),
            "end_s": repr(self.end_s), "ch_types": ",".join(self.info.ch_types), "units": ",".join(self.info.units),
            "gaps": ",".join(f"{g.first_seq}-{g.last_seq}" for g in self.gaps),
        }  # fmt: skip
        return pa.table(columns).replace_schema_metadata(meta)

    def to_mne(self):
        """An ``mne.io.RawArray`` (data scaled to volts for V/mV/uV/nV units; other types -> ``misc``).

        ``raw.first_time`` is not the epoch time: ``raw.info["meas_date"]`` is set from the first sample.
        """
        import datetime as dt

        import mne

        scale = np.array([_TO_VOLTS.get(u, 1.0) for u in self.info.units], np.float64)[:, None]
        types = [t if t in _MNE_TYPES else "misc" for t in self.info.ch_types]
        info = mne.create_info(list(self.info.channels), self.info.sfreq, types)
        raw = mne.io.RawArray(self.data.astype(np.float64) * scale, info, verbose="error")
        if self.n_samples:
            raw.set_meas_date(dt.datetime.fromtimestamp(float(self.times_s[0]), dt.UTC))
        return raw


def _select(info: StreamInfo, channels: Sequence[str] | None) -> tuple[StreamInfo, np.ndarray | None]:
    if channels is None:
        return info, None
    if isinstance(channels, str):
        channels = [channels]
    if not channels:
        raise QueryError("storage.query: channels must name at least one channel (or be None for all).")
    index = {name: i for i, name in enumerate(info.channels)}
    for name in channels:
        if name not in index:
            raise QueryError(
                f"storage.query: channels: {name!r} is not a channel of stream {info.stream_id!r}."
                f"{suggest(name, info.channels)} It has {info.n_channels} channels: {list(info.channels)[:8]}"
                f"{' ...' if info.n_channels > 8 else ''}."
            )
    picks = np.array([index[name] for name in channels], np.intp)
    sub = info.replace(
        channels=tuple(info.channels[i] for i in picks),
        ch_types=tuple(info.ch_types[i] for i in picks),
        units=tuple(info.units[i] for i in picks),
    )
    return sub, picks


def assemble(stitched: Stitched, info: StreamInfo, start_s: float, end_s: float,
             channels: Sequence[str] | None = None) -> QueryResult:  # fmt: skip
    """Concatenate stitched chunks, keep samples in ``[start_s, end_s)`` and the selected channels.

    Vectorised over chunks (an hour of 32-sample chunks is 112,500 of them): sample times are
    each chunk's ``t0_s + k / sfreq``, computed as :attr:`Chunk.times_s` does, bit for bit.

    Raises
    ------
    QueryError
        An unknown channel (with a did-you-mean), or chunks of different layouts in the span.
    """
    sub, picks = _select(info, channels)
    if picks is not None and np.array_equal(picks, np.arange(info.n_channels)):
        picks = None
    chunks = stitched.chunks
    n = len(chunks)
    t0 = np.fromiter(map(_T0, chunks), np.float64, n)
    size = np.fromiter((d.shape[1] for d in map(_DATA, chunks)), np.int64, n)
    infos = list(map(_INFO, chunks))
    sfreq = {id(i): i.sfreq for i in infos}
    t_end = t0 + size / np.fromiter(map(sfreq.__getitem__, map(id, infos)), np.float64, n)  # as Chunk.t_end_s
    inside = np.flatnonzero((t_end > start_s) & (t0 < end_s))
    used = [chunks[i] for i in inside.tolist()]
    for chunk in {id(infos[i]): chunks[i] for i in inside.tolist()}.values():  # one chunk per description
        if chunk.info is not info and (chunk.info.channels != info.channels or chunk.info.sfreq != info.sfreq):
            raise QueryError(
                f"storage.query: stream {info.stream_id!r} changed layout inside the span (seq {chunk.seq}: "
                f"{chunk.info.n_channels} channels at {chunk.info.sfreq} Hz, expected {info.n_channels} at "
                f"{info.sfreq} Hz); query the two parts separately."
            )
    if used:
        size = size[inside]
        k = np.arange(int(size.sum())) - np.repeat(np.cumsum(size) - size, size)
        times_s = np.repeat(t0[inside], size) + k / info.sfreq
        keep = (times_s >= start_s) & (times_s < end_s)
        data = np.concatenate(list(map(_DATA, used)), axis=1) if len(used) > 1 else used[0].data
        if not keep.all():
            data, times_s = data[:, keep], times_s[keep]
        if picks is not None:
            data = data[picks]
        if not data.flags.writeable:  # still the one chunk's read-only array: the result owns a copy
            data = np.array(data)
        contributes = np.bincount(np.repeat(np.arange(len(used)), size)[keep], minlength=len(used)) > 0
        sources: dict[str, int] = {}
        for i, ok in zip(inside.tolist(), contributes.tolist()):
            if ok:
                sources[stitched.origins[i]] = sources.get(stitched.origins[i], 0) + 1
    else:
        data = np.empty((sub.n_channels, 0), np.float32)
        times_s = np.empty(0, np.float64)
        sources = {}
    gaps = [g for g in stitched.gaps if g.end_s > start_s and g.start_s < end_s]
    return QueryResult(sub, data, times_s, float(start_s), float(end_s), gaps, sources,
                       stitched.duplicates)  # fmt: skip


def _restricted(chunks: list[Chunk], channels: Sequence[str]) -> list[Chunk]:
    """``chunks`` with only ``channels`` (for tiers that cannot read fewer channels themselves)."""
    out: list[Chunk] = []
    cache: dict[int, tuple[StreamInfo, np.ndarray | None]] = {}
    for chunk in chunks:
        found = cache.get(id(chunk.info))
        if found is None:
            found = cache[id(chunk.info)] = _select(chunk.info, channels)
        sub, picks = found
        out.append(chunk if picks is None else chunk.replace(data=chunk.data[picks], info=sub))
    return out


def _covers(chunks: Sequence[Chunk], start_s: float) -> bool:
    """Whether seq-sorted ``chunks`` reach back to ``start_s`` (or to seq 0) without a seq gap."""
    if not chunks:
        return False
    first = chunks[0]
    if not (first.t0_s <= start_s or first.seq == 0):
        return False
    return chunks[-1].seq - first.seq + 1 == len(chunks)


# The engine ------------------------------------------------------------------------------
class QueryEngine:
    """Reads streams across tiers, fastest first.

    Parameters
    ----------
    tiers : sequence of Tier
        Fastest first, e.g. ``[RedisTier(...), TimescaleTier(...), IcebergTier(...)]``.
    lookback_s : float
        How far before ``start_s`` to look for the chunk that straddles it (longer than
        the longest chunk; seconds).
    verify : bool
        Check that copies of one seq found in two tiers are identical.

    Examples
    --------
    >>> engine = QueryEngine([hot, warm, cold])   # doctest: +SKIP
    >>> res = engine.query("eeg-0", t - 10, t, channels=["Cz"])   # doctest: +SKIP
    >>> data, times = res.to_numpy()   # doctest: +SKIP
    """

    def __init__(self, tiers: Sequence[Tier], *, lookback_s: float = 2.0, verify: bool = True) -> None:
        tiers = list(tiers)
        if not tiers:
            raise QueryError("storage.QueryEngine: tiers must hold at least one tier.")
        for tier in tiers:
            if not isinstance(tier, Tier):
                raise QueryError(f"storage.QueryEngine: tiers: {tier!r} does not implement the Tier protocol.")
        if not (isinstance(lookback_s, (int, float)) and math.isfinite(lookback_s) and lookback_s >= 0):
            raise QueryError(f"storage.QueryEngine: lookback_s={lookback_s!r} must be a finite number >= 0 s.")
        self.tiers = tiers
        self.lookback_s = float(lookback_s)
        self.verify = bool(verify)

    def has_stream(self, stream_id: str) -> bool:
        """Whether any tier knows ``stream_id``."""
        return any(tier.has_stream(stream_id) for tier in self.tiers)

    def info(self, stream_id: str) -> StreamInfo | None:
        """The description of ``stream_id`` from the fastest tier that has one."""
        for tier in self.tiers:
            found = tier.info(stream_id)
            if found is not None:
                return found
        return None

    def read_chunks(self, stream_id: str, start_s: float, end_s: float,
                    channels: Sequence[str] | None = None) -> Stitched:  # fmt: skip
        """Stitched chunks overlapping ``[start_s, end_s)``, reading slower tiers only when needed.

        With ``channels`` (names, unique) every chunk holds only those channels: a
        :class:`ChannelReader` tier reads no others, the other tiers' chunks are cut.
        """
        lo = start_s - self.lookback_s
        per_tier: list[tuple[str, list[Chunk]]] = []
        so_far: list[Chunk] = []
        for tier in self.tiers:
            if per_tier and _covers(so_far, start_s):
                break
            if channels is None:
                chunks = tier.read(stream_id, lo, end_s)
            elif isinstance(tier, ChannelReader):
                chunks = tier.read_channels(stream_id, lo, end_s, channels)
            else:
                chunks = _restricted(tier.read(stream_id, lo, end_s), channels)
            per_tier.append((tier.name, chunks))
            so_far = stitch(per_tier, verify=False).chunks if len(per_tier) > 1 else chunks
        return stitch(per_tier, verify=self.verify)

    def query(self, stream_id: str, start_s: float, end_s: float,
              channels: Sequence[str] | None = None) -> QueryResult:  # fmt: skip
        """Samples of ``stream_id`` with device time in ``[start_s, end_s)``.

        Parameters
        ----------
        stream_id : str
            The stream.
        start_s, end_s : float
            Device-time span, s since epoch, ``start_s < end_s``.
        channels : sequence of str or None
            Channel names to keep, in this order; ``None`` keeps all.

        Returns
        -------
        QueryResult

        Raises
        ------
        QueryError
            A bad span or an unknown channel (the message suggests the closest name).
        UnknownStreamError
            No tier knows ``stream_id``.
        TierConsistencyError
            Two tiers hold different copies of one seq.
        """
        for name, value in (("start_s", start_s), ("end_s", end_s)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise QueryError(f"storage.query: {name}={value!r} must be a finite number (s since epoch).")
        if not start_s < end_s:
            raise QueryError(f"storage.query: start_s={start_s!r} must be < end_s={end_s!r}.")
        wanted = None
        if channels is not None:
            if isinstance(channels, str):
                channels = [channels]
            if not channels:
                _select(StreamInfo(stream_id, 1.0, ("x",)), channels)  # the "at least one channel" error
            wanted = list(dict.fromkeys(channels))
        try:
            stitched = self.read_chunks(stream_id, float(start_s), float(end_s), wanted)
        except MissingChannelError as exc:
            _select(self._require_info(stream_id), channels)  # a misspelt name: QueryError with a suggestion
            raise QueryError(f"storage.query: stream {stream_id!r} changed layout inside the span: {exc} "
                             "Query the parts separately.") from exc  # fmt: skip
        info = next((c.info for c in reversed(stitched.chunks) if c.t_end_s > start_s and c.t0_s < end_s), None)
        if info is None:
            info = self._require_info(stream_id)
            if wanted is not None:
                info = _select(info, wanted)[0]
        return assemble(stitched, info, float(start_s), float(end_s), channels)

    def _require_info(self, stream_id: str) -> StreamInfo:
        info = self.info(stream_id)
        if info is None:
            if not self.has_stream(stream_id):
                raise UnknownStreamError(f"storage.query: no tier holds stream {stream_id!r}.")
            raise QueryError(f"storage.query: stream {stream_id!r} has no stored description.")
        return info


def query(stream_id: str, start_s: float, end_s: float, channels: Sequence[str] | None = None, *,
          tiers: Sequence[Tier], **options: Any) -> QueryResult:  # fmt: skip
    """:meth:`QueryEngine.query` on ``tiers`` (fastest first); ``options`` go to :class:`QueryEngine`."""
    return QueryEngine(tiers, **options).query(stream_id, start_s, end_s, channels)
