"""The FastAPI app without Ray: routing of live vs stored events."""

from __future__ import annotations

from fastapi.testclient import TestClient

from neuraflow.config import NeuraflowSettings
from neuraflow.serve.app import build_app


class NoPipelines:
    """An engine with nothing running."""

    def running(self) -> list[str]:
        return []


def test_events_of_a_stream_not_running_redirect_to_stored_events() -> None:
    client = TestClient(build_app(NeuraflowSettings(), NoPipelines()))
    reply = client.get("/streams/eeg-0/events", params={"since_s": 5.0}, follow_redirects=False)
    assert reply.status_code == 307
    assert reply.headers["location"] == "/streams/eeg-0/events/stored?start=5.0"


def test_unknown_route_is_404_and_docs_are_served() -> None:
    client = TestClient(build_app(NeuraflowSettings(), NoPipelines()))
    assert client.get("/no/such/route").status_code == 404
    assert client.get("/docs").status_code == 200
