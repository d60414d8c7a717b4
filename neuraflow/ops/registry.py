"""A small model registry: ``(name, version) -> file``, checked against a recorded SHA-256.

The registry is a folder with an ``index.json`` and one file per model version
(``<name>/<version>/model.onnx``). An entry may instead point to an
``s3://`` URI; :meth:`ModelRegistry.resolve` downloads it (with ``s3fs``)
into ``<root>/.cache`` and checks the hash there. The registry only resolves
paths; :func:`~neuraflow.ops.onnx_model` loads them::

    registry = ModelRegistry("models")
    spec = ops.onnx_model(registry.resolve("motor_imagery"))
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from neuraflow.errors import NeuraflowError, PipelineDefinitionError

_INDEX = "index.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_WHERE = "ops.ModelRegistry"


class ModelIntegrityError(NeuraflowError, ValueError):
    """A model file does not match the hash recorded when it was registered."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_name(what: str, value: Any) -> str:
    if not isinstance(value, str) or not _NAME.match(value) or value == "latest":
        raise PipelineDefinitionError(
            f"{_WHERE}: {what}={value!r} must be a non-empty name of letters, digits, '.', '_' or '-' "
            f"(not 'latest')."
        )
    return value


class ModelRegistry:
    """Models stored by name and version, each checked against its SHA-256 on use.

    Parameters
    ----------
    root : str or Path
        Folder of the registry; created on the first :meth:`register`.

    Notes
    -----
    ``"latest"`` is the version registered last. The index is rewritten
    atomically (write then rename) but not locked: register from one process
    at a time. Files are verified on every :meth:`resolve`.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # ------------------------------------------------------------------ index
    def _read_index(self) -> dict[str, Any]:
        path = self.root / _INDEX
        if not path.exists():
            return {"models": {}}
        try:
            return json.loads(path.read_text())
        except ValueError as exc:
            raise PipelineDefinitionError(f"{_WHERE}: {str(path)!r} is not valid JSON ({exc}).") from exc

    def _write_index(self, index: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{_INDEX}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(index, indent=2, sort_keys=True))
        os.replace(tmp, self.root / _INDEX)

    def names(self) -> list[str]:
        """Registered model names, sorted."""
        return sorted(self._read_index()["models"])

    def versions(self, name: str) -> list[str]:
        """Versions of ``name`` in registration order (the last one is ``"latest"``)."""
        entries = self._read_index()["models"].get(name, {})
        return sorted(entries, key=lambda v: entries[v]["order"])

    def entry(self, name: str, version: str = "latest") -> dict[str, Any]:
        """The index entry of a model version: ``file`` or ``uri``, ``sha256``, ``metadata``, ``version``.

        Raises
        ------
        KeyError
            If the name or version is not registered (the message lists what is).
        """
        models = self._read_index()["models"]
        if name not in models:
            raise KeyError(f"{_WHERE} {str(self.root)!r}: no model {name!r}; registered: {sorted(models)}.")
        versions = self.versions(name)
        if version == "latest":
            version = versions[-1]
        if version not in models[name]:
            raise KeyError(f"{_WHERE}: model {name!r} has no version {version!r}; registered: {versions}.")
        return {**models[name][version], "version": version}

    def metadata(self, name: str, version: str = "latest") -> dict[str, Any]:
        """The metadata stored with a model version (a copy)."""
        return dict(self.entry(name, version).get("metadata", {}))

    # --------------------------------------------------------------- register
    def register(
        self,
        name: str,
        version: str,
        model: bytes | str | os.PathLike,
        *,
        metadata: Mapping[str, Any] | None = None,
        overwrite: bool = False,
    ) -> Path:
        """Copy a model into the registry and record its SHA-256.

        Parameters
        ----------
        name, version : str
            Letters, digits, ``.``, ``_`` and ``-``; ``version`` cannot be ``"latest"``.
        model : bytes or path-like
            The serialized model, or a local file to copy.
        metadata : mapping, optional
            JSON-serialisable details stored in the index (training data, scores ...).
        overwrite : bool
            Replace an existing version (otherwise an error).

        Returns
        -------
        Path
            The stored file.

        Raises
        ------
        PipelineDefinitionError
            Invalid name/version, unreadable file, or the version exists and not ``overwrite``.
        """
        _check_name("name", name)
        _check_name("version", version)
        if isinstance(model, (bytearray, memoryview)):
            model = bytes(model)
        if not isinstance(model, bytes):
            try:
                model = Path(model).read_bytes()
            except (OSError, TypeError) as exc:
                raise PipelineDefinitionError(f"{_WHERE}: cannot read model {model!r} ({exc}).") from exc
        if not model:
            raise PipelineDefinitionError(f"{_WHERE}: model {name!r} version {version!r} is empty.")
        meta = json.loads(json.dumps(dict(metadata or {})))  # fails early if not JSON-serialisable
        index = self._read_index()
        entries = index["models"].setdefault(name, {})
        if version in entries and not overwrite:
            raise PipelineDefinitionError(
                f"{_WHERE}: model {name!r} version {version!r} already exists; pass overwrite=True or a new version."
            )
        relative = Path(name) / version / "model.onnx"
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(model)
        order = 1 + max((e["order"] for e in entries.values()), default=0)
        entries[version] = {
            "file": relative.as_posix(),
            "sha256": hashlib.sha256(model).hexdigest(),
            "registered_s": time.time(),
            "order": order,
            "metadata": meta,
        }
        self._write_index(index)
        return path

    def register_uri(
        self, name: str, version: str, uri: str, sha256: str, *, metadata: Mapping[str, Any] | None = None
    ) -> None:
        """Record a model stored at ``uri`` (``s3://bucket/key``) with its expected SHA-256 (hex)."""
        _check_name("name", name)
        _check_name("version", version)
        if not isinstance(uri, str) or not uri.startswith("s3://"):
            raise PipelineDefinitionError(f"{_WHERE}: uri={uri!r} must be an s3:// URI.")
        if not (isinstance(sha256, str) and re.fullmatch(r"[0-9a-f]{64}", sha256)):
            raise PipelineDefinitionError(f"{_WHERE}: sha256={sha256!r} must be 64 lowercase hex digits.")
        index = self._read_index()
        entries = index["models"].setdefault(name, {})
        order = 1 + max((e["order"] for e in entries.values()), default=0)
        entries[version] = {
            "uri": uri, "sha256": sha256, "registered_s": time.time(), "order": order,
            "metadata": json.loads(json.dumps(dict(metadata or {}))),
        }
        self._write_index(index)

    # ---------------------------------------------------------------- resolve
    def resolve(self, name: str, version: str = "latest") -> Path:
        """Local path of a model version, verified against its recorded SHA-256.

        ``s3://`` entries are downloaded once into ``<root>/.cache/<name>/<version>/``
        (needs ``s3fs`` and credentials in the environment).

        Raises
        ------
        KeyError
            Unknown name or version.
        ModelIntegrityError
            The file is missing or its SHA-256 differs from the recorded one
            (the message names the model, version, expected and actual hash).
        """
        entry = self.entry(name, version)
        version = entry["version"]
        if "uri" in entry:
            path = self.root / ".cache" / name / version / "model.onnx"
            if not path.exists() or _sha256(path) != entry["sha256"]:
                _download(entry["uri"], path)
        else:
            path = self.root / entry["file"]
        if not path.is_file():
            raise ModelIntegrityError(f"{_WHERE}: model {name!r} version {version!r}: file {str(path)!r} is missing.")
        actual = _sha256(path)
        if actual != entry["sha256"]:
            raise ModelIntegrityError(
                f"{_WHERE}: model {name!r} version {version!r} at {str(path)!r} does not match its recorded hash: "
                f"expected sha256 {entry['sha256']}, got {actual}."
            )
        return path

    def __repr__(self) -> str:
        return f"ModelRegistry({str(self.root)!r})"


def _download(uri: str, path: Path) -> None:
    try:
        import s3fs
    except ImportError as exc:  # pragma: no cover - optional dependency
        raise PipelineDefinitionError(f"{_WHERE}: resolving {uri!r} needs s3fs (pip install s3fs).") from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    s3fs.S3FileSystem().get(uri, str(tmp))
    os.replace(tmp, path)


__all__ = ["ModelIntegrityError", "ModelRegistry"]
