"""HTTP routes over stored data (every tier), added to the app by :func:`register_data_routes`::

    GET /streams/{id}/data?start=&end=&channels=&format=json|arrow
    GET /streams/{id}/events/stored?start=&end=

``start``/``end`` are device times in s since the epoch; ``channels`` is a comma-separated
list of names. Unknown stream: 404; bad span, unknown channel or format: 422 naming the
field; a tier that cannot be reached: 503.

The stored events live under ``/events/stored`` because ``GET /streams/{id}/events`` is
the live route of running pipelines (declared first in :func:`~neuraflow.serve.app.build_app`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from fastapi import FastAPI, HTTPException, Query, Response

from neuraflow.config import NeuraflowSettings
from neuraflow.errors import SinkError
from neuraflow.serve._json import finite
from neuraflow.serve._stored import LazyQueryEngine, check_span, stored_errors_as_http
from neuraflow.storage.query import QueryResult
from neuraflow.storage.tiers import Tier, tiers_from_settings

__all__ = ["register_data_routes", "result_to_arrow_ipc", "result_to_json"]

#: Longest span one request may ask for (s): 24 h.
MAX_SPAN_S = 86_400.0
ARROW_STREAM = "application/vnd.apache.arrow.stream"


def result_to_json(res: QueryResult) -> dict[str, Any]:
    """A JSON document: description, ``times_s`` (n_samples) and ``data`` (n_channels x n_samples)."""
    return {
        "stream_id": res.stream_id,
        "sfreq": res.info.sfreq,
        "channels": list(res.channels),
        "ch_types": list(res.info.ch_types),
        "units": list(res.info.units),
        "start_s": res.start_s,
        "end_s": res.end_s,
        "n_samples": res.n_samples,
        "times_s": res.times_s.tolist(),
        "data": finite(res.data.astype(float).tolist()),
        "gaps": [{"first_seq": g.first_seq, "last_seq": g.last_seq, "start_s": g.start_s, "end_s": g.end_s}
                 for g in res.gaps],  # fmt: skip
        "sources": res.sources,
    }


def result_to_arrow_ipc(res: QueryResult) -> bytes:
    """One Arrow IPC stream of :meth:`QueryResult.to_arrow` (``t_s`` + a float32 column per channel)."""
    import pyarrow as pa

    table = res.to_arrow()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _channels(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise HTTPException(422, detail=f"channels={text!r}: give comma-separated channel names, none empty.")
    return names


def _span(start: float, end: float) -> None:
    check_span(start, end, max_span_s=MAX_SPAN_S, too_long_status=422, hint="split the request")


def register_data_routes(app: FastAPI, settings: NeuraflowSettings, *, tiers: Sequence[Tier] | None = None) -> None:
    """Add the stored-data routes to ``app``.

    Parameters
    ----------
    app : FastAPI
        The app (call before any catch-all route is declared: routes match in order).
    settings : NeuraflowSettings
        ``settings.storage`` says which tiers to read (see
        :func:`~neuraflow.storage.tiers.tiers_from_settings`), built on first request.
    tiers : sequence of Tier or None
        Use these tiers instead (fastest first).
    """
    engine = LazyQueryEngine(lambda: list(tiers) if tiers is not None else tiers_from_settings(settings.storage))

    @app.get("/streams/{stream_id:path}/data", summary="Stored samples of a stream, across tiers")
    def data(
        stream_id: str,
        start: float = Query(..., description="Span start, device time in s since the epoch (inclusive)."),
        end: float = Query(..., description="Span end, device time in s since the epoch (exclusive)."),
        channels: str | None = Query(None, description="Comma-separated channel names; all when omitted."),
        format: Literal["json", "arrow"] = Query("json", description="json, or an Arrow IPC stream."),
    ) -> Any:
        _span(start, end)
        picks = _channels(channels)
        with stored_errors_as_http():
            res = engine().query(stream_id, start, end, picks)
        headers = {"X-Stream-Id": stream_id, "X-N-Samples": str(res.n_samples), "X-N-Gaps": str(len(res.gaps))}
        if format == "arrow":
            return Response(result_to_arrow_ipc(res), media_type=ARROW_STREAM, headers=headers)
        return result_to_json(res)

    @app.get("/streams/{stream_id:path}/events/stored", summary="Stored events of a stream, across tiers")
    def stored_events(
        stream_id: str,
        start: float | None = Query(None, description="Only events at or after this time (s since epoch)."),
        end: float | None = Query(None, description="Only events before this time (s since epoch)."),
    ) -> list[dict[str, Any]]:
        if start is not None and end is not None:
            _span(start, end)
        try:
            eng = engine()
            if not eng.has_stream(stream_id):
                raise HTTPException(404, detail=f"no tier holds stream {stream_id!r}.")
            seen: set[tuple[float, str, str]] = set()
            out: list[dict[str, Any]] = []
            for tier in eng.tiers:
                for e in tier.events(stream_id, start, end):
                    key = (e.t_s, e.label, repr(e.value))
                    if key in seen:
                        continue
                    seen.add(key)
                    out.append({"stream_id": e.stream_id, "t_s": e.t_s, "label": e.label, "value": e.value,
                                "meta": dict(e.meta), "tier": tier.name})  # fmt: skip
        except SinkError as exc:
            raise HTTPException(503, detail=str(exc)) from None
        return sorted(out, key=lambda d: d["t_s"])
