"""Typed settings: ``configs/*.yaml`` plus ``NEURAFLOW_*`` environment overrides.

Priority, highest first: init kwargs, environment (``NEURAFLOW_RUNTIME__MODE=batch``),
the YAML file given to :func:`load_settings`, then the defaults below (which are what
``configs/default.yaml`` spells out). Unknown keys are errors, so a typo fails at start.
"""

from __future__ import annotations

import math
import os
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from neuraflow._validate import suggest
from neuraflow.errors import ConfigError

__all__ = [
    "DemoSettings",
    "NeuraflowSettings",
    "RaySettings",
    "RuntimeSettings",
    "ServeSettings",
    "StorageSettings",
    "load_settings",
]

ENV_PREFIX = "NEURAFLOW_"
# Finite and > 0 / >= 0; NaN and inf are rejected (they would silently disable a timer).
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
PositiveInt = Annotated[int, Field(gt=0)]

# Per-mode defaults, in seconds: (tick_s, latency_budget_s).
_MODE_DEFAULTS: dict[str, tuple[float, float]] = {
    "realtime": (0.005, 0.05),
    "near_real_time": (0.1, 0.5),
    "batch": (0.0, math.inf),
}
# The YAML file of the load_settings() call in progress (None: defaults + env only).
_YAML_FILE: ContextVar[Path | None] = ContextVar("_YAML_FILE", default=None)


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RaySettings(_Section):
    address: str | None = None  # None: start a local Ray; "auto": join the running cluster
    namespace: str = "neuraflow"
    num_cpus: Annotated[int, Field(ge=0)] | None = None
    dashboard: bool = False


class RuntimeSettings(_Section):
    mode: Literal["realtime", "near_real_time", "batch"] = "realtime"
    tick_s: NonNegativeFloat | None = None  # None: per-mode default
    latency_budget_s: Annotated[float, Field(gt=0)] | None = None  # None: per-mode default
    ring_capacity: PositiveInt = 1024  # chunks per device
    backpressure: Literal["block", "drop_oldest"] = "drop_oldest"
    devices_per_group: PositiveInt | None = None  # None: one group actor per CPU
    reconnect_initial_s: PositiveFloat = 0.1
    reconnect_max_s: PositiveFloat = 5.0
    # op states reach the controller once per this many seconds, spread over ticks (a 1 s window of
    # 64 ch is ~300 kB per stream: at 1 s the snapshots doubled a tick's delivery cost and its p99)
    checkpoint_every_s: PositiveFloat = 5.0
    max_restarts: Annotated[int, Field(ge=-1)] = -1  # -1: restart forever (Ray's convention)
    optimize: bool = True  # apply neuraflow.graph.optimize rewrites (same outputs, less CPU)

    @model_validator(mode="after")
    def _check_reconnect(self) -> RuntimeSettings:
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ValueError(
                f"reconnect_max_s={self.reconnect_max_s} must be >= "
                f"reconnect_initial_s={self.reconnect_initial_s}"
            )
        return self

    @property
    def effective_tick_s(self) -> float:
        """Loop period in seconds: ``tick_s`` or the mode's default."""
        return _MODE_DEFAULTS[self.mode][0] if self.tick_s is None else self.tick_s

    @property
    def effective_latency_budget_s(self) -> float:
        """End-to-end latency budget in seconds: ``latency_budget_s`` or the mode's default."""
        if self.latency_budget_s is None:
            return _MODE_DEFAULTS[self.mode][1]
        return self.latency_budget_s


class StorageSettings(_Section):
    warehouse: str = "var/warehouse"  # local directory or s3://bucket/prefix
    catalog_uri: str = "sqlite:///var/warehouse/catalog.db"
    catalog_name: str = "neuraflow"
    table: str = "neuraflow.samples"
    flush_every_s: PositiveFloat = 5.0
    hot_seconds: PositiveFloat = 60.0
    s3_endpoint: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = Field(default=None, repr=False)
    s3_region: str = "us-east-1"
    redis_url: str | None = None
    postgres_url: str | None = None
    # Tiering (neuraflow.storage): hot (Redis) -> warm (PostgreSQL) after hot_seconds, -> cold after warm_seconds.
    warm_seconds: PositiveFloat = 3600.0
    tiering_interval_s: PositiveFloat = 10.0
    redis_key_prefix: str = "neuraflow:"
    postgres_schema: str = "public"
    postgres_table: str = "neuraflow_samples"


class ServeSettings(_Section):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    enabled: bool = True


class DemoSettings(_Section):
    n_devices: PositiveInt = 4
    n_channels: PositiveInt = 16
    sfreq: PositiveFloat = 250.0
    chunk_size: PositiveInt = 25


class NeuraflowSettings(BaseSettings):
    """All neuraflow settings; build one with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        env_parse_none_str="null",  # NEURAFLOW_RAY__ADDRESS=null -> None
        extra="forbid",
        frozen=True,
    )

    ray: RaySettings = RaySettings()
    runtime: RuntimeSettings = RuntimeSettings()
    storage: StorageSettings = StorageSettings()
    serve: ServeSettings = ServeSettings()
    demo: DemoSettings = DemoSettings()
    pipelines_dir: str = "pipelines"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_file = _YAML_FILE.get()
        if yaml_file is None:
            return init_settings, env_settings
        yaml_source = YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file)
        return init_settings, env_settings, yaml_source

    def resolve_path(self, p: str | os.PathLike[str]) -> Path:
        """Return local path ``p`` made absolute against the current working directory."""
        path = Path(p).expanduser()
        return path if path.is_absolute() else Path.cwd() / path

    def with_absolute_paths(self) -> NeuraflowSettings:
        """Copy with local paths (warehouse, SQLite catalog, pipelines_dir) made absolute.

        Ray actors do not share the driver's working directory, so the driver
        resolves relative paths once before shipping settings or sinks to them.
        """
        storage = self.storage
        warehouse = storage.warehouse
        if "://" not in warehouse:
            warehouse = str(self.resolve_path(warehouse))
        catalog_uri = storage.catalog_uri
        prefix = "sqlite:///"
        if catalog_uri.startswith(prefix) and not catalog_uri[len(prefix):].startswith("/"):
            catalog_uri = prefix + str(self.resolve_path(catalog_uri[len(prefix):]))
        return self.model_copy(update={
            "storage": storage.model_copy(update={"warehouse": warehouse, "catalog_uri": catalog_uri}),
            "pipelines_dir": str(self.resolve_path(self.pipelines_dir)),
        })


def load_settings(path: str | Path | None = None) -> NeuraflowSettings:
    """Load settings from YAML file ``path`` (None: defaults only) plus env overrides.

    Raises
    ------
    ConfigError
        The file is missing or not valid YAML, or a key is unknown or has a bad value;
        the message names the file (or env variable), the dotted key and the reason.
    """
    source = "defaults" if path is None else str(path)
    if path is not None and not Path(path).is_file():
        raise ConfigError(f"config file {source}: not found (cwd is {Path.cwd()}).")
    token = _YAML_FILE.set(None if path is None else Path(path))
    try:
        return NeuraflowSettings()
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None
    except (yaml.YAMLError, ValueError, TypeError, AttributeError) as exc:  # not a YAML mapping
        raise ConfigError(f"config file {source}: cannot be read as a YAML mapping: {exc}") from exc
    finally:
        _YAML_FILE.reset(token)


def _describe(exc: ValidationError, source: str) -> str:
    """One line per pydantic error: where, dotted key, reason, hint."""
    lines = []
    for err in exc.errors():
        loc = [str(part) for part in err["loc"]]
        key = ".".join(loc)
        env_name = ENV_PREFIX + "__".join(loc).upper()
        where = f"environment variable {env_name}" if env_name in os.environ else source
        if err["type"] == "extra_forbidden":
            reason = "unknown key." + suggest(loc[-1], _known_keys(loc[:-1]))
        else:
            got = err.get("input")
            reason = err["msg"] + ("." if isinstance(got, dict) else f" (got {got!r}).")
        lines.append(f"{where}: {key or '<root>'}: {reason}")
    prefix = "invalid configuration:\n  " if len(lines) > 1 else "invalid configuration: "
    return prefix + "\n  ".join(lines)


def _known_keys(loc: list[str]) -> list[str]:
    """Field names of the model at ``loc`` (empty if ``loc`` is not a section)."""
    model: Any = NeuraflowSettings
    for part in loc:
        field = model.model_fields.get(part)
        model = field.annotation if field is not None else None
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return []
    return list(model.model_fields)
