"""The HTTP service: a FastAPI ingress deployed with Ray Serve.

Routes (OpenAPI at ``/docs``)::

    GET  /health                          liveness + running pipelines
    GET  /streams                         every stream of every running pipeline
    GET  /streams/{id}/latest?seconds=&format=json|npy|arrow
    GET  /streams/{id}/events?since_s=       (streams not running: 307 to .../events/stored)
    GET  /pipelines                       available pipeline files and running ones
    POST /pipelines/{name}/start          body: {"mode": "realtime", "duration_s": null}
    POST /pipelines/{name}/stop
    GET  /metrics                         per pipeline, stream and step summary
    GET  /{route}                         outputs exposed with Pipeline.expose(route=...)

Unknown ids answer 404, invalid parameters 422 naming the field.
"""

from __future__ import annotations

import io
import logging
from typing import Any, Literal

import numpy as np
from fastapi import Body, FastAPI, HTTPException, Query, Response
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, Field

from neuraflow.chunk import Chunk
from neuraflow.config import NeuraflowSettings
from neuraflow.errors import NeuraflowError
from neuraflow.graph.loader import available_pipelines, load_plan
from neuraflow.serve._json import finite
from neuraflow.serve.data_routes import register_data_routes
from neuraflow.serve.device_routes import register_device_routes
from neuraflow.serve.export_routes import register_export_routes

log = logging.getLogger(__name__)


class StartRequest(BaseModel):
    """Body of ``POST /pipelines/{name}/start``."""

    mode: Literal["realtime", "near_real_time", "batch"] | None = Field(
        default=None, description="Execution mode; the configured runtime.mode when omitted."
    )


def chunk_to_json(chunk: Chunk) -> dict[str, Any]:
    return {
        "stream_id": chunk.stream_id,
        "seq": chunk.seq,
        "t0_s": chunk.t0_s,
        "sfreq": chunk.sfreq,
        "channels": list(chunk.channels),
        "units": list(chunk.info.units),
        "shape": list(chunk.data.shape),
        "data": finite(chunk.data.astype(float).tolist()),
    }


def chunk_to_arrow(chunk: Chunk) -> bytes:
    """One Arrow IPC stream: a column per channel, sample times in ``t_s``; metadata in the schema."""
    import pyarrow as pa

    columns = {"t_s": pa.array(chunk.times_s)}
    columns.update({name: pa.array(chunk.data[i]) for i, name in enumerate(chunk.channels)})
    table = pa.table(columns).replace_schema_metadata(
        {"stream_id": chunk.stream_id, "sfreq": str(chunk.sfreq), "seq": str(chunk.seq)}
    )
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def build_app(settings: NeuraflowSettings, engine: Any) -> FastAPI:
    """The FastAPI app; ``engine`` is a :class:`neuraflow.runtime.executor.Engine`."""
    app = FastAPI(title="neuraflow", version="0.1.0", description="Live neural data streams and pipelines.")

    def handles() -> dict[str, Any]:
        out = {}
        for name in engine.running():
            try:
                out[name] = engine.get(name)
            except KeyError:
                continue
        return out

    def find_stream(stream_id: str):
        for handle in handles().values():
            if any(s["stream_id"] == stream_id for s in handle.streams()):
                return handle
        raise HTTPException(404, detail=f"stream {stream_id!r} is not produced by any running pipeline.")

    @app.get("/health", summary="Liveness and running pipelines")
    def health() -> dict[str, Any]:
        running = {name: h.status()["state"] for name, h in handles().items()}
        return {"status": "ok", "pipelines": running}

    @app.get("/streams", summary="Every stream of every running pipeline")
    def streams() -> list[dict[str, Any]]:
        return [{"pipeline": name, **s} for name, h in handles().items() for s in h.streams()]

    @app.get("/streams/{stream_id:path}/latest", summary="Latest samples of a stream")
    def latest(
        stream_id: str,
        seconds: float = Query(1.0, gt=0, le=3600, description="How much history, in seconds."),
        format: Literal["json", "npy", "arrow"] = Query("json", description="Response encoding."),
    ) -> Any:
        handle = find_stream(stream_id)
        try:
            chunk = handle.latest(stream_id, seconds)
        except Exception as exc:  # KeyError from the actor arrives wrapped
            if "KeyError" in type(exc).__name__ or "KeyError" in str(exc):
                raise HTTPException(404, detail=f"stream {stream_id!r} has no data in a hot buffer yet; "
                                                "add a HotBuffer sink or expose it.") from None
            raise
        if chunk is None:
            raise HTTPException(404, detail=f"stream {stream_id!r} has no data in the last {seconds} s.")
        if format == "npy":
            buf = io.BytesIO()
            np.save(buf, np.asarray(chunk.data))
            headers = {"X-Stream-Id": stream_id, "X-T0-S": repr(chunk.t0_s), "X-Sfreq": repr(chunk.sfreq),
                       "X-Seq": str(chunk.seq)}
            return Response(buf.getvalue(), media_type="application/x-npy", headers=headers)
        if format == "arrow":
            return Response(chunk_to_arrow(chunk), media_type="application/vnd.apache.arrow.stream")
        return chunk_to_json(chunk)

    @app.get("/streams/{stream_id:path}/events", summary="Events (markers, gaps, drops) of a stream")
    def events(stream_id: str, since_s: float | None = Query(None, description="Only events after this time (s).")):
        """Live events of a running pipeline's stream; other streams redirect (307) to the
        events stored across tiers, ``/streams/{id}/events/stored``."""
        try:
            handle = find_stream(stream_id)
        except HTTPException:
            query = f"?start={since_s!r}" if since_s is not None else ""
            return RedirectResponse(f"/streams/{stream_id}/events/stored{query}", status_code=307)
        return [
            {"stream_id": e.stream_id, "t_s": e.t_s, "label": e.label, "value": e.value, "meta": finite(dict(e.meta))}
            for e in handle.events(stream_id, since_s)
        ]

    @app.get("/pipelines", summary="Available pipeline files and running pipelines")
    def pipelines() -> dict[str, Any]:
        running = {name: finite(h.status()) for name, h in handles().items()}
        files = available_pipelines(settings.resolve_path(settings.pipelines_dir))
        return {"available": sorted(files), "running": running}

    @app.post("/pipelines/{name}/start", status_code=201, summary="Start a pipeline from pipelines/NAME.py")
    def start(name: str, request: StartRequest = Body(default_factory=StartRequest)) -> dict[str, Any]:
        files = available_pipelines(settings.resolve_path(settings.pipelines_dir))
        if name not in files:
            raise HTTPException(404, detail=f"no pipeline named {name!r}; available: {sorted(files)}.")
        if name in engine.running():
            raise HTTPException(409, detail=f"pipeline {name!r} is already running.")
        try:
            plan = load_plan(files[name], settings)
            handle = engine.start(plan, mode=request.mode)
        except NeuraflowError as exc:
            raise HTTPException(422, detail=str(exc)) from None
        return finite(handle.status())

    @app.post("/pipelines/{name}/stop", summary="Stop a running pipeline")
    def stop(name: str) -> dict[str, Any]:
        try:
            handle = engine.get(name)
        except KeyError:
            raise HTTPException(404, detail=f"pipeline {name!r} is not running.") from None
        status = handle.stop()
        handle.destroy()
        return finite(status)

    @app.get("/metrics", summary="Throughput, latency, drops per pipeline, stream and step")
    def metrics() -> dict[str, Any]:
        return {name: finite(h.metrics()) for name, h in handles().items()}

    # stored data and device management; registered before the catch-all route below
    register_data_routes(app, settings)
    register_device_routes(app, settings)
    register_export_routes(app, settings)

    @app.get("/{route:path}", summary="Outputs exposed with Pipeline.expose(route=...)")
    def exposed(route: str, seconds: float = Query(1.0, gt=0, le=3600)) -> Any:
        route = "/" + route
        for handle in handles().values():
            for name, exposed_route in handle.status()["exposed"].items():
                if exposed_route == route:
                    import ray

                    chunks = ray.get(handle.controller.exposed_latest.remote(name, seconds))
                    return [chunk_to_json(c) for c in chunks]
        raise HTTPException(404, detail=f"no route {route!r}; see /docs and GET /pipelines.")

    return app
