"""Where the Iceberg sink's data lives: the SQL catalog and table, and the Parquet files.

The files of the chunk table are written by pyarrow and registered in one snapshot.

pyiceberg's own writer cannot choose Parquet encodings, so :class:`~neuraflow.sinks.Iceberg`
writes the files itself and registers them. Registration is what ``Table.add_files`` does
(a data file entry with the file's column statistics and partition, one fast-append
snapshot), except that the statistics come from the footer the writer already holds:
``add_files`` re-opens every file to read it back, which was a quarter of the sink's
write time at 64 files per commit.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import pyarrow as pa

from neuraflow.errors import PipelineDefinitionError, SinkError

#: Chosen by measurement on EEGMMIDB (1 s and 640 s files): BYTE_STREAM_SPLIT for the integer
#: residuals (1.5x smaller than plain), DELTA_BINARY_PACKED for ``seq`` and ``t0`` (sorted per
#: channel: a few bits per row). No dictionaries: zstd does as well on the repeated names, faster.
ENCODINGS = {"residuals.list.element": "BYTE_STREAM_SPLIT", "seq": "DELTA_BINARY_PACKED", "t0": "DELTA_BINARY_PACKED",
             "t0_s": "BYTE_STREAM_SPLIT", "recv_s": "BYTE_STREAM_SPLIT"}  # fmt: skip
#: Parquet statistics only for the columns scans filter on (the payload's were 6% of a 1 s file).
#: The files carry no serialized Arrow schema either (``store_schema=False``): readers go by the
#: Parquet field ids, and it was 5 kB of a 55 kB footer-heavy 1 s file (4.6x -> 5.1x smaller than float32).
STATISTICS = ("stream_id", "seq", "ch_index", "channel", "t0", "t0_s", "info_id", "sfreq")
#: Iceberg file metrics to match: none for the other columns (pyiceberg would warn on each file).
METRICS = {"write.metadata.metrics.default": "none",
           **{f"write.metadata.metrics.column.{name}": "truncate(16)" for name in STATISTICS}}  # fmt: skip


# Catalog and table -----------------------------------------------------------------------
def _resolve_catalog_uri(uri: str) -> str:
    """Make a relative ``sqlite:///path`` absolute (against the cwd) and create its folder."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return uri  # postgresql+psycopg://..., sqlite:// (memory), or already absolute elsewhere
    path, sep, query = uri[len(prefix) :].partition("?")
    if not path or path == ":memory:":
        return uri
    absolute = Path(path).expanduser()
    if not absolute.is_absolute():
        absolute = Path.cwd() / absolute
    absolute.parent.mkdir(parents=True, exist_ok=True)
    return f"{prefix}{absolute.resolve()}{sep}{query}"


def _resolve_warehouse(warehouse: str) -> str:
    """A plain or relative path, or ``file://relative``, becomes an absolute ``file://`` URI."""
    if "://" in warehouse and not warehouse.startswith("file://"):
        return warehouse  # s3://, gs://, ...
    path = Path(warehouse.removeprefix("file://")).expanduser()
    if not path.is_absolute():
        path = Path.cwd() / path
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve().as_uri()


def _load_catalog(catalog_name: str, catalog_uri: str, warehouse: str, properties: Mapping[str, str] | None):
    from pyiceberg.catalog.sql import SqlCatalog

    return SqlCatalog(
        catalog_name,
        **{**dict(properties or {}), "uri": _resolve_catalog_uri(catalog_uri), "warehouse": _resolve_warehouse(warehouse)},
    )


def _split_table(table: str) -> tuple[str, str]:
    namespace, dot, name = table.rpartition(".")
    if not dot or not namespace or not name:
        raise PipelineDefinitionError(
            f"sinks.Iceberg: table={table!r} must be 'namespace.name', e.g. 'neuraflow.samples'."
        )
    return namespace, name


def _check_layout(samples) -> None:
    """A chunk table of the one-row-per-chunk layout (before ``ch_index``) cannot be appended to or read."""
    names = set(samples.schema().column_names)
    if "ch_index" not in names and {"stream_id", "seq", "data"} <= names:
        raise SinkError(
            f"sinks.Iceberg: table {'.'.join(samples.name())!r} has the old one-row-per-chunk layout (no column "
            "'ch_index'); this version stores a header row per chunk and one row per chunk and channel, and "
            "does not migrate old tables: archive to a new table name (or drop the old table)."
        )


# Files ------------------------------------------------------------------------------------
def write_parquet(table, files: Iterable[tuple[pa.Table, list[int]]], compression_level: int) -> list[tuple[str, Any, int]]:
    """Write each (rows, row-group sizes) of ``files`` as one file under the table's ``data/``.

    Files are written by a worker thread while ``files`` (a generator) builds the next file's
    rows: pyarrow releases the GIL while it encodes and compresses. (A second writer thread
    measured no faster on 2 cores: building the rows is the longer step.)
    Returns ``(path, pyarrow FileMetaData, size in bytes)`` per file; on error the files
    written so far are deleted and the error raised.
    """
    location = table.location().rstrip("/")
    paths: list[str] = []
    futures = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="neuraflow-iceberg-write") as pool:
        try:
            for rows, sizes in files:
                paths.append(f"{location}/data/{uuid.uuid4().hex}.parquet")
                futures.append(pool.submit(_write_one, table.io, paths[-1], rows, sizes, compression_level))
            return [future.result() for future in futures]
        except BaseException:
            for future in futures:
                future.cancel()
            wait(futures)
            delete_quietly(table, paths)
            raise


def _write_one(io, path: str, rows: pa.Table, sizes: list[int], compression_level: int) -> tuple[str, Any, int]:
    import pyarrow.parquet as pq

    with io.new_output(path).create(overwrite=False) as stream:
        writer = pq.ParquetWriter(stream, rows.schema, compression="zstd", compression_level=compression_level,
                                  use_dictionary=False, column_encoding=ENCODINGS, write_statistics=list(STATISTICS),
                                  store_schema=False)  # fmt: skip
        with writer:
            start = 0
            for size in sizes:  # one row group per group of channels (see _iceberg_arrow)
                writer.write_table(rows.slice(start, size), row_group_size=size)
                start += size
        size = stream.tell()
    return path, writer.writer.metadata, size


def register_files(table, written: Sequence[tuple[str, Any, int]]) -> None:
    """Append the files to ``table`` in one snapshot (one commit), as ``add_files`` does.

    ``add_files`` re-opens every file to read its footer; the writer already holds it, so the
    data-file entries are built from it with the helpers ``add_files`` itself uses (measured: a
    quarter of the write time saved). Should a pyiceberg release move those helpers, the public
    ``add_files`` takes over.
    """
    try:
        from pyiceberg.io.pyarrow import (
            compute_statistics_plan, data_file_statistics_from_parquet_metadata, parquet_path_to_id_mapping,
        )  # fmt: skip
        from pyiceberg.manifest import DataFile, DataFileContent, FileFormat
    except ImportError:
        table.add_files([path for path, _, _ in written])
        return

    metadata = table.metadata
    schema = table.schema()
    plan = compute_statistics_plan(schema, metadata.properties)
    mapping = parquet_path_to_id_mapping(schema)
    with table.transaction() as tx:
        with tx.update_snapshot().fast_append() as append:
            for path, parquet_metadata, size in written:
                statistics = data_file_statistics_from_parquet_metadata(
                    parquet_metadata=parquet_metadata, stats_columns=plan, parquet_column_mapping=mapping
                )
                append.append_data_file(DataFile.from_args(
                    content=DataFileContent.DATA, file_path=path, file_format=FileFormat.PARQUET,
                    partition=statistics.partition(table.spec(), schema), file_size_in_bytes=size,
                    sort_order_id=None, spec_id=metadata.default_spec_id, equality_ids=None, key_metadata=None,
                    **statistics.to_serialized_dict(),
                ))  # fmt: skip


def delete_quietly(table, paths: Sequence[str]) -> None:
    for path in paths:
        try:
            table.io.delete(path)
        except Exception:  # noqa: BLE001 - best effort: the store may be the thing that failed
            pass
