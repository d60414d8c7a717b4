"""Deploy the HTTP service with Ray Serve (FastAPI ingress)."""

from __future__ import annotations

from ray import serve

from neuraflow.config import NeuraflowSettings
from neuraflow.serve.app import build_app

APP_NAME = "neuraflow"


def _ingress_class(settings: NeuraflowSettings):
    app = build_app(settings, _LazyEngine(settings))

    @serve.deployment(name="NeuraflowAPI", num_replicas=1, ray_actor_options={"num_cpus": 0})
    @serve.ingress(app)
    class NeuraflowAPI:
        """One replica is enough: every request is a cheap actor query."""

    return NeuraflowAPI


class _LazyEngine:
    """Builds the Engine inside the replica (Ray is already initialised there)."""

    def __init__(self, settings: NeuraflowSettings) -> None:
        self.settings = settings
        self._engine = None

    def __getattr__(self, name: str):
        if name.startswith("_"):  # pickling probes dunders before __init__ ran
            raise AttributeError(name)
        if self._engine is None:
            from neuraflow.runtime.executor import Engine

            self._engine = Engine(self.settings)
        return getattr(self._engine, name)


def start_service(settings: NeuraflowSettings, *, blocking: bool = False) -> str:
    """Run the service on ``settings.serve.host:port``; return its base URL."""
    settings = settings.with_absolute_paths()
    serve.start(http_options={"host": settings.serve.host, "port": settings.serve.port})
    serve.run(_ingress_class(settings).bind(), name=APP_NAME, route_prefix="/", blocking=blocking)
    return f"http://{settings.serve.host}:{settings.serve.port}"


def stop_service() -> None:
    """Remove the app (Serve's own actors stay for the next start)."""
    serve.delete(APP_NAME)
