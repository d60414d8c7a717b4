"""HTTP routes of the device manager: :func:`register_device_routes`.

Routes::

    GET    /devices                     health record of every registered device
    GET    /devices/discover            serial ports, LSL streams, BLE, configured TCP devices
    GET    /devices/{id}                one health record
    POST   /devices/{id}                register a device; body: its spec {"kind": ..., ...}
    DELETE /devices/{id}                disconnect and forget it
    POST   /devices/{id}/connect        start it (reconnects with backoff on failure)
    POST   /devices/{id}/disconnect
    POST   /devices/{id}/impedance?seconds=2.0   Cyton / Ganglion electrode impedance, kOhm per channel

Devices live in one detached Ray actor named ``neuraflow-devices`` (a
:class:`~neuraflow.devices.service.DeviceManager`), created lazily on the first
request, so they survive Serve replica restarts. Unknown ids answer 404,
invalid specs 422 with ``{"field": ..., "message": ...}``.
"""

from __future__ import annotations

from typing import Any

from fastapi import Body, FastAPI, HTTPException, Query

from neuraflow.config import NeuraflowSettings
from neuraflow.devices.service import SpecError, UnknownDeviceError, validate_spec
from neuraflow.errors import DeviceError
from neuraflow.serve._json import finite

ACTOR_NAME = "neuraflow-devices"


def device_actor(namespace: str):
    """The manager actor (created on first use, detached, no CPU reserved)."""
    import ray

    from neuraflow.devices.service import DeviceManager

    return ray.remote(DeviceManager).options(
        name=ACTOR_NAME, namespace=namespace, get_if_exists=True, lifetime="detached", num_cpus=0,
        max_concurrency=8,  # status calls must not wait behind a 2 s impedance measurement
    ).remote()


class _RayBackend:
    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._actor = None

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        import ray

        if self._actor is None:
            self._actor = device_actor(self.namespace)
        try:
            return ray.get(getattr(self._actor, method).remote(*args, **kwargs))
        except ray.exceptions.RayTaskError as exc:
            raise exc.cause if isinstance(getattr(exc, "cause", None), Exception) else exc from None


class _LocalBackend:
    def __init__(self, manager: Any) -> None:
        self.manager = manager

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.manager, method)(*args, **kwargs)


def register_device_routes(app: FastAPI, settings: NeuraflowSettings, *, manager: Any = None) -> None:
    """Add the ``/devices`` routes to ``app``.

    ``manager``: a :class:`~neuraflow.devices.service.DeviceManager` to use in
    process (tests); ``None`` for the named Ray actor in ``settings.ray.namespace``.
    """
    backend = _LocalBackend(manager) if manager is not None else _RayBackend(settings.ray.namespace)

    def call(method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return finite(backend.call(method, *args, **kwargs))
        except UnknownDeviceError as exc:
            raise HTTPException(404, detail=str(exc)) from None
        except SpecError as exc:
            raise HTTPException(422, detail={"field": exc.field, "message": str(exc)}) from None
        except DeviceError as exc:
            raise HTTPException(502, detail=str(exc)) from None

    @app.get("/devices", summary="Health record of every registered device", tags=["devices"])
    def devices() -> list[dict[str, Any]]:
        return call("status")

    @app.get("/devices/discover", summary="Serial ports, LSL streams, BLE devices, TCP devices", tags=["devices"])
    def discover(
        lsl_wait_s: float = Query(1.0, ge=0, le=10, description="How long LSL resolves (it always waits this long)."),
        ble_timeout_s: float = Query(2.0, ge=0, le=30, description="BLE scan time."),
        serial: bool = True, lsl: bool = True, ble: bool = True, tcp: bool = True,
        probe: bool = Query(False, description="Send 'v' to candidate serial ports (stops a streaming board)."),
    ) -> dict[str, Any]:
        return call("discover", serial=serial, lsl=lsl, ble=ble, tcp=tcp, lsl_wait_s=lsl_wait_s,
                    ble_timeout_s=ble_timeout_s, probe=probe)

    @app.get("/devices/{device_id}", summary="Health record of one device", tags=["devices"])
    def device(device_id: str) -> dict[str, Any]:
        return call("status", device_id)

    @app.post("/devices/{device_id}", status_code=201, summary="Register a device from its spec", tags=["devices"])
    def add(device_id: str, spec: dict[str, Any] = Body(..., examples=[{"kind": "cyton", "port": "/dev/ttyUSB0"}]),
            replace: bool = False) -> dict[str, Any]:
        try:
            validate_spec(spec)  # shape and keys here; values are checked by the manager
        except SpecError as exc:
            raise HTTPException(422, detail={"field": exc.field, "message": str(exc)}) from None
        return call("add", device_id, spec, replace=replace)

    @app.delete("/devices/{device_id}", summary="Disconnect and forget a device", tags=["devices"])
    def remove(device_id: str) -> dict[str, Any]:
        call("remove", device_id)
        return {"id": device_id, "removed": True}

    @app.post("/devices/{device_id}/connect", summary="Connect (retried with backoff)", tags=["devices"])
    def connect(device_id: str) -> dict[str, Any]:
        return call("connect", device_id)

    @app.post("/devices/{device_id}/disconnect", summary="Disconnect", tags=["devices"])
    def disconnect(device_id: str) -> dict[str, Any]:
        return call("disconnect", device_id)

    @app.post("/devices/{device_id}/impedance", summary="Electrode impedance (Cyton, Ganglion), kOhm", tags=["devices"])
    def impedance(device_id: str, seconds: float = Query(2.0, gt=0, le=30)) -> dict[str, Any]:
        return {"id": device_id, "seconds": seconds, "kohm": call("impedance", device_id, seconds)}
