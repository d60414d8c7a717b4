"""HTTP export of stored data, added to the app by :func:`register_export_routes`::

    POST /streams/{id}/export   body: {"format": "edf", "start": T0, "end": T1, "channels": ["Cz"] | null,
                                       "events": true, "subject": "01", "session": null, "task": "neuraflow",
                                       "run": null}

The reply is the file itself (``Content-Disposition: attachment``); a BIDS folder comes as a
zip. The export is written to a temporary folder, streamed, then deleted. Spans longer than
:data:`MAX_EXPORT_S` (1 h) answer 413: export those with ``neuraflow export`` on the cluster,
which reads in blocks and shows progress. Unknown stream: 404; bad span, channel or format:
422; a tier that cannot be reached: 503.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask

from neuraflow.config import NeuraflowSettings
from neuraflow.serve._stored import LazyQueryEngine, check_span, stored_errors_as_http
from neuraflow.storage.export import MEDIA_TYPES, SUFFIXES, ExportError, export_stream, zip_folder
from neuraflow.storage.tiers import Tier, tiers_from_settings

__all__ = ["MAX_EXPORT_S", "ExportRequest", "register_export_routes"]

#: Longest span one export request may ask for (s); longer answers 413.
MAX_EXPORT_S = 3600.0


class ExportRequest(BaseModel):
    """Body of ``POST /streams/{id}/export``."""

    format: Literal["edf", "bdf", "fif", "parquet", "bids"] = Field(description="Output format.")
    start: float = Field(description="Span start, device time in s since the epoch (inclusive).")
    end: float = Field(description="Span end, device time in s since the epoch (exclusive).")
    channels: list[str] | None = Field(default=None, description="Channel names to keep; all when omitted.")
    events: bool = Field(default=True, description="Write the stored events as annotations.")
    subject: str = Field(default="01", description="BIDS subject.")
    session: str | None = Field(default=None, description="BIDS session.")
    task: str = Field(default="neuraflow", description="BIDS task.")
    run: str | None = Field(default=None, description="BIDS run.")


def _safe_name(stream_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in stream_id) or "stream"


def register_export_routes(app: FastAPI, settings: NeuraflowSettings, *, tiers: Sequence[Tier] | None = None) -> None:
    """Add ``POST /streams/{id}/export`` to ``app``.

    Parameters
    ----------
    app : FastAPI
        The app.
    settings : NeuraflowSettings
        ``settings.storage`` says which tiers to read, built on first request.
    tiers : sequence of Tier or None
        Use these tiers instead (fastest first).
    """
    engine = LazyQueryEngine(lambda: list(tiers) if tiers is not None else tiers_from_settings(settings.storage))

    @app.post("/streams/{stream_id:path}/export", summary="Export a span of a stored stream as a file",
              response_class=FileResponse,
              responses={413: {"description": f"span longer than {MAX_EXPORT_S:.0f} s"}})  # fmt: skip
    def export_route(stream_id: str, request: ExportRequest) -> FileResponse:
        start, end = request.start, request.end
        check_span(start, end, max_span_s=MAX_EXPORT_S, too_long_status=413,
                   hint="split the span or use `neuraflow export`")
        folder = Path(tempfile.mkdtemp(prefix="neuraflow-export-"))
        name = _safe_name(stream_id)
        target = folder / (f"{name}_bids" if request.format == "bids" else f"{name}{SUFFIXES[request.format]}")
        try:
            with stored_errors_as_http(ExportError):
                eng = engine()
                if not eng.has_stream(stream_id):
                    raise HTTPException(404, detail=f"no tier holds stream {stream_id!r}.")
                written = export_stream(eng, stream_id, start, end, target, format=request.format,
                                        channels=request.channels, with_events=request.events, block_s=600.0,
                                        subject=request.subject, session=request.session, task=request.task,
                                        run=request.run)  # fmt: skip
                if request.format == "bids":
                    written = zip_folder(written, folder / f"{name}_bids.zip")
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        headers = {"X-Stream-Id": stream_id}
        return FileResponse(written, media_type=MEDIA_TYPES[request.format], filename=written.name, headers=headers,
                            background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True))  # fmt: skip
