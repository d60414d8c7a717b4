"""The one exception hierarchy of neuraflow.

Build-time mistakes are ``ValueError`` subclasses, run-time failures of devices
and sinks are ``RuntimeError`` subclasses, so callers can catch either family
with the builtin they already know.
"""

from __future__ import annotations


class NeuraflowError(Exception):
    """Base class of every error raised by neuraflow."""


class PipelineDefinitionError(NeuraflowError, ValueError):
    """A pipeline, op parameter or config value is invalid (raised at build time)."""


class StreamMismatchError(NeuraflowError, ValueError):
    """A stream changed shape, channels or sampling rate mid-stream."""


class DeviceError(NeuraflowError, RuntimeError):
    """A device failed to open, read or close."""


class EndOfStream(NeuraflowError):
    """A finite device (file playback) has no more samples."""


class SinkError(NeuraflowError, RuntimeError):
    """A sink failed to store or flush data."""


class ConfigError(NeuraflowError, ValueError):
    """A configuration file or environment override is invalid."""
