"""The Iceberg sink on an embedded SQLite catalog and a local warehouse under tmp_path."""

from __future__ import annotations

import time

import math
import pickle

import numpy as np
import pytest

from neuraflow.chunk import Chunk, Event, StreamInfo
from neuraflow.errors import PipelineDefinitionError, SinkError
from neuraflow.sinks import Iceberg, Sink, read_chunks, read_events
from neuraflow.sinks import iceberg as iceberg_module
from neuraflow.sinks.iceberg import MissingChannelError, _load_catalog, _SeqRanges
from neuraflow.testing import chunks_from_array, make_info, random_chunking

T0 = 1_700_000_000.0
TABLE = "nf.samples"


@pytest.fixture
def where(tmp_path):
    return {"catalog_uri": f"sqlite:///{tmp_path}/catalog.db", "warehouse": f"file://{tmp_path}/warehouse"}


@pytest.fixture
def make_sink(where):
    opened: list[Iceberg] = []

    def make(**kwargs) -> Iceberg:
        sink = Iceberg(TABLE, **{"flush_every_s": 1e9, **where, **kwargs})
        sink.open()
        opened.append(sink)
        return sink

    yield make
    for sink in opened:
        sink._buffer.clear()  # tests that leave a failed buffer behind must not flush at teardown
        sink._event_buffer.clear()
        sink.close()


def stream(stream_id: str, n_chunks: int, *, n_channels: int = 4, size: int = 8, seed: int = 0, start_seq: int = 0):
    info = make_info(n_channels, 250.0, stream_id=stream_id)
    data = np.random.default_rng(seed).standard_normal((n_channels, n_chunks * size)).astype(np.float32)
    chunks = chunks_from_array(data, info, [size] * n_chunks, t0_s=T0)
    return [c.replace(seq=c.seq + start_seq) for c in chunks]


def read(where, stream_id, **kwargs):
    return read_chunks(where["catalog_uri"], where["warehouse"], TABLE, stream_id, **kwargs)


def assert_same_chunks(got, expected):
    assert [c.seq for c in got] == [c.seq for c in expected]
    for g, e in zip(got, expected):
        assert g.data.dtype == np.float32 and g.data.shape == e.data.shape
        assert np.array_equal(g.data.view(np.uint32), e.data.view(np.uint32))  # bit-exact
        assert g.t0_s == e.t0_s and g.info == e.info
        assert g.recv_s == e.recv_s or (math.isnan(g.recv_s) and math.isnan(e.recv_s))
        assert dict(g.meta) == dict(e.meta)


def n_snapshots(where, table=TABLE) -> int:
    catalog = _load_catalog("neuraflow", where["catalog_uri"], where["warehouse"], None)
    return len(catalog.load_table(table).snapshots())


# --------------------------------------------------------------------------------
def test_is_a_sink_and_validates_parameters():
    assert isinstance(Iceberg(), Sink)
    with pytest.raises(PipelineDefinitionError, match="namespace.name"):
        Iceberg("samples")
    with pytest.raises(PipelineDefinitionError, match="flush_every_s"):
        Iceberg(flush_every_s=-1)
    with pytest.raises(PipelineDefinitionError, match="max_buffer_chunks"):
        Iceberg(max_buffer_chunks=0)


def test_write_before_open_raises():
    with pytest.raises(SinkError, match="not open"):
        Iceberg().write_batch([])


def test_two_streams_round_trip_bit_exact(make_sink, where, rng):
    info_a = make_info(8, 500.0, stream_id="eeg-0")
    data_a = rng.standard_normal((8, 3000)).astype(np.float32)
    data_a[0, :4] = [np.nan, np.inf, -0.0, 1e-45]  # special values survive
    a = chunks_from_array(data_a, info_a, random_chunking(3000, rng), t0_s=T0)
    b = stream("eeg-0/bandpower", 40, n_channels=2, size=1)
    sink = make_sink()
    sink.write_batch(sorted(a + b, key=lambda c: c.t0_s))  # streams interleaved in one batch
    assert read(where, "eeg-0") == []  # nothing committed before flush
    sink.flush()
    assert sink.stats()["commits"] == 1 and sink.stats()["chunks_written"] == len(a) + len(b)
    assert_same_chunks(read(where, "eeg-0"), a)
    assert_same_chunks(read(where, "eeg-0/bandpower"), b)
    got = read(where, "eeg-0")
    assert all(c.info is got[0].info for c in got)  # one StreamInfo per stream, shared
    np.testing.assert_array_equal(np.concatenate([c.data for c in got], axis=1), data_a)


def test_table_layout_partitions_by_stream_and_day(make_sink, where):
    make_sink()
    catalog = _load_catalog("neuraflow", where["catalog_uri"], where["warehouse"], None)
    for name, time_col in ((TABLE, "t0"), (f"{TABLE}_events", "t")):
        table = catalog.load_table(name)
        fields = {(table.schema().find_column_name(f.source_id), str(f.transform)) for f in table.spec().fields}
        assert fields == {("stream_id", "identity"), (time_col, "day")}


def test_metadata_round_trip(make_sink, where):
    info = StreamInfo(
        "emg",
        1000.0,
        ("FDS", "EDC", "trig"),
        ("emg", "emg", "stim"),
        ("uV", "uV", ""),
        {"device": "Delsys", "serial": 42, "scale": [0.5, 2.0]},
    )
    chunks = [
        Chunk(np.ones((3, 5)), T0, info, seq=0, recv_s=T0 + 0.01, meta={"gain": 12, "ok": True}),
        Chunk(np.zeros((3, 5)), T0 + 0.005, info, seq=1),  # recv_s nan, no meta
        Chunk(np.zeros((3, 0)), T0 + 0.01, info, seq=2, recv_s=T0),  # an empty chunk
    ]
    sink = make_sink()
    sink.write_batch(chunks)
    sink.close()
    got = read(where, "emg")
    assert_same_chunks(got, chunks)
    assert got[0].info.meta == {"device": "Delsys", "serial": 42, "scale": [0.5, 2.0]}
    assert got[0].meta == {"gain": 12, "ok": True} and got[1].meta == {}


def test_duplicates_across_flushes_and_inside_a_batch(make_sink, where):
    chunks = stream("eeg", 20)
    sink = make_sink()
    sink.write_batch(chunks[:10] + chunks[5:10])  # duplicates inside the buffer
    sink.flush()
    sink.write_batch(chunks[8:15])  # 8, 9 already committed
    sink.flush()
    sink.write_batch(chunks)
    sink.flush()
    stats = sink.stats()
    assert stats["chunks_written"] == 20 and stats["duplicates_dropped"] == 5 + 2 + 15
    assert stats["commits"] == 3
    assert_same_chunks(read(where, "eeg"), chunks)


def test_reopened_sink_drops_what_is_already_stored(make_sink, where):
    chunks = stream("eeg", 30)
    first = make_sink()
    first.write_batch(chunks[:10] + chunks[20:])  # a gap 10..19
    first.close()
    again = make_sink()
    again.write_batch(chunks)
    again.flush()
    assert again.stats()["duplicates_dropped"] == 20 and again.stats()["chunks_written"] == 10
    again.write_batch(chunks[3:7])
    again.flush()  # nothing new: no commit
    assert again.stats()["commits"] == 1
    assert n_snapshots(where) == 2
    assert_same_chunks(read(where, "eeg"), chunks)


def test_out_of_order_batch(make_sink, where):
    chunks = stream("eeg", 12)
    sink = make_sink()
    order = [5, 3, 11, 0, 4, 1, 2, 10, 6, 9, 8, 7]
    sink.write_batch([chunks[i] for i in order[:6]])
    sink.flush()
    sink.write_batch([chunks[i] for i in order[6:]])
    sink.flush()
    assert_same_chunks(read(where, "eeg"), chunks)


def test_empty_batch_makes_no_commit(make_sink, where):
    sink = make_sink()
    sink.write_batch([])
    sink.write_events([])
    sink.flush()
    sink.close()
    assert sink.stats()["commits"] == 0 and sink.last_snapshot_id is None
    assert n_snapshots(where) == 0 and read(where, "eeg") == []


def test_large_batch_commits_once(make_sink, where):
    chunks = stream("eeg", 5000, n_channels=64, size=32)
    sink = make_sink()
    sink.write_batch(chunks)
    assert sink.stats()["buffered"] == 5000
    sink.flush()
    assert sink.stats()["commits"] == 1 and n_snapshots(where) == 1
    assert_same_chunks(read(where, "eeg"), chunks)


def test_write_batch_commits_when_flush_every_s_elapsed(make_sink, where):
    sink = make_sink(flush_every_s=0.0)
    sink.write_batch(stream("eeg", 3))
    sink.write_batch(stream("eeg", 3, start_seq=3))
    assert sink.stats()["commits"] == 2 and sink.stats()["buffered"] == 0
    assert len(read(where, "eeg")) == 6


def test_full_buffer_commits(make_sink, where):
    sink = make_sink(max_buffer_chunks=10)
    sink.write_batch(stream("eeg", 10))
    assert sink.stats()["commits"] == 1 and sink.stats()["buffered"] == 0


def test_failed_commit_keeps_the_buffer_and_names_the_table(make_sink, where, monkeypatch):
    chunks = stream("eeg", 10)
    sink = make_sink()
    sink.write_batch(chunks[:6])

    def broken(*args, **kwargs):
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(iceberg_module, "register_files", broken)
        with pytest.raises(SinkError, match=r"nf\.samples.*disk full") as info:
            sink.flush()
        assert isinstance(info.value.__cause__, OSError)
        assert sink.stats()["buffered"] == 6 and sink.stats()["commits"] == 0
        sink.write_batch(chunks[4:])  # retried + new: still deduped against the buffer
        assert sink.stats()["buffered"] == 10
        with pytest.raises(SinkError, match="next try in"):  # backing off: no new commit attempt yet
            sink.flush()
    time.sleep(0.55)  # the first back-off is 0.5 s
    sink.flush()  # the next flush succeeds and nothing accepted was lost
    assert sink.stats()["commits"] == 1
    assert_same_chunks(read(where, "eeg"), chunks)


def test_full_buffer_and_failing_commit_refuses_the_batch(make_sink, where, monkeypatch):
    chunks = stream("eeg", 20)
    sink = make_sink(max_buffer_chunks=10)
    sink.write_batch(chunks[:6])
    with monkeypatch.context() as patch:
        patch.setattr(iceberg_module, "register_files", lambda *a, **k: (_ for _ in ()).throw(OSError("no space")))
        with pytest.raises(SinkError, match="full") as info:
            sink.write_batch(chunks[6:12])
        assert isinstance(info.value.__cause__, SinkError)
        assert sink.stats()["buffered"] == 6
        with pytest.raises(SinkError, match="full") as info:  # no new commit attempt during the back-off
            sink.write_batch(chunks[6:12])
        assert "backing off" in str(info.value.__cause__)
    time.sleep(0.55)  # the first back-off is 0.5 s
    sink.write_batch(chunks[6:12])  # the runtime re-sends the refused batch
    sink.write_batch(chunks[12:])
    sink.flush()
    assert_same_chunks(read(where, "eeg"), chunks)


def test_events_round_trip(make_sink, where):
    events = [
        Event("markers", T0 + 2.0, "T1", 1.0),
        Event("markers", T0 + 1.0, "start", "block A", {"trial": 3}),
        Event("eeg", T0 + 1.5, "gap", 0.25, {"expected_seq": 10, "got_seq": 12}),
    ]
    sink = make_sink()
    sink.write_events(events)
    sink.close()
    got = read_events(where["catalog_uri"], where["warehouse"], TABLE)
    assert [(e.stream_id, e.t_s, e.label, e.value, dict(e.meta)) for e in got] == [
        ("markers", T0 + 1.0, "start", "block A", {"trial": 3}),
        ("eeg", T0 + 1.5, "gap", 0.25, {"expected_seq": 10, "got_seq": 12}),
        ("markers", T0 + 2.0, "T1", 1.0, {}),
    ]
    assert isinstance(got[2].value, float)
    assert [e.label for e in sink.read_events("markers")] == ["start", "T1"]


def test_time_travel_with_snapshot_ids(make_sink, where):
    chunks = stream("eeg", 10)
    sink = make_sink()
    sink.write_batch(chunks[:4])
    sink.flush()
    first = sink.stats()["last_snapshot_id"]
    sink.write_batch(chunks[4:])
    sink.flush()
    second = sink.last_snapshot_id
    assert first is not None and second != first
    assert_same_chunks(read(where, "eeg", snapshot_id=first), chunks[:4])
    assert_same_chunks(read(where, "eeg", snapshot_id=second), chunks)
    assert_same_chunks(sink.read_chunks("eeg"), chunks)


def test_relative_paths_resolve_against_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sink = Iceberg()  # sqlite:///var/warehouse/catalog.db, var/warehouse
    sink.open()
    sink.write_batch(stream("eeg", 2))
    sink.close()
    assert (tmp_path / "var" / "warehouse" / "catalog.db").is_file()
    assert list((tmp_path / "var" / "warehouse").rglob("*.parquet"))
    assert len(sink.read_chunks("eeg")) == 2


def test_pickles_without_its_connection(make_sink, where):
    sink = make_sink()
    sink.write_batch(stream("eeg", 3))
    sink.flush()
    clone = pickle.loads(pickle.dumps(sink))
    with pytest.raises(SinkError, match="not open"):
        clone.flush()
    clone.open()
    clone.write_batch(stream("eeg", 5))
    clone.close()
    assert clone.stats()["duplicates_dropped"] == 3
    assert [c.seq for c in read(where, "eeg")] == [0, 1, 2, 3, 4]


def test_reading_a_missing_table_raises(where):
    with pytest.raises(SinkError, match="no table"):
        read_chunks(where["catalog_uri"], where["warehouse"], "nf.nothing", "eeg")


def test_seq_ranges_match_a_set(rng):
    ranges, reference = _SeqRanges(), set()
    for _ in range(300):
        start = int(rng.integers(0, 200))
        end = start + int(rng.integers(1, 6))
        ranges.add_range(start, end)
        reference.update(range(start, end))
    assert all((s in ranges) == (s in reference) for s in range(-5, 220))
    assert all(e < s for s, e in zip(ranges.starts[1:], ranges.ends))  # disjoint, not touching
    bulk = _SeqRanges()
    bulk.add_sorted(np.array(sorted(reference)))
    assert (bulk.starts, bulk.ends) == (ranges.starts, ranges.ends)


# Integer coding of native counts ----------------------------------------------------
def counts_stream(stream_id: str, n_chunks: int, meta: dict, *, size: int = 32, seed: int = 3) -> list[Chunk]:
    """Chunks whose float32 samples are exactly ``counts * scale + offset`` (an ADC's output)."""
    n_channels = 5
    scale = np.broadcast_to(np.asarray(meta["scale_v_per_count"], np.float64), (n_channels,))[:, None]
    offset = np.broadcast_to(np.asarray(meta.get("offset_v", 0.0), np.float64), (n_channels,))[:, None]
    walk = np.cumsum(np.random.default_rng(seed).integers(-40, 41, (n_channels, n_chunks * size)), axis=1)
    data = (walk * scale + offset).astype(np.float32)
    info = StreamInfo(stream_id, 250.0, tuple(f"c{i}" for i in range(n_channels)), meta=meta)
    return chunks_from_array(data, info, [size] * n_chunks, t0_s=T0)


def parquet_files(where) -> list:
    import pyarrow.parquet as pq

    catalog = _load_catalog("neuraflow", where["catalog_uri"], where["warehouse"], None)
    table = catalog.load_table(TABLE)
    return [pq.ParquetFile(t.file.file_path.removeprefix("file://")) for t in table.scan().plan_files()]


def residuals_column(file) -> int:
    group = file.metadata.row_group(0)
    (index,) = [i for i in range(group.num_columns) if group.column(i).path_in_schema == "residuals.list.element"]
    return index


@pytest.mark.parametrize("meta", [
    {"scale_v_per_count": 2.2351741e-08},  # one scale (OpenBCI Cyton at gain 24)
    {"scale_v_per_count": [1e-6, 2e-6, 0.5e-6, 1e-7, 3e-6], "offset_v": [0.0, 1e-3, -2e-3, 0.0, 5e-4]},
])  # fmt: skip
def test_native_counts_are_stored_as_integers_and_read_back_bit_exact(make_sink, where, meta):
    chunks = counts_stream("adc", 40, meta)
    sink = make_sink()
    sink.write_batch(chunks)
    sink.flush()
    assert sink.stats()["chunks_native"] == 40 and sink.stats()["chunks_float32"] == 0
    assert_same_chunks(read(where, "adc"), chunks)
    (file,) = parquet_files(where)
    column = residuals_column(file)
    chunk_meta = file.metadata.row_group(0).column(column)
    assert chunk_meta.path_in_schema == "residuals.list.element"
    assert "BYTE_STREAM_SPLIT" in chunk_meta.encodings and chunk_meta.compression == "ZSTD"
    assert file.read(columns=["codec"]).column("codec").to_pylist() == ["dm"] * 40 * (1 + 5)  # header + 5 channels


def test_chunks_off_the_grid_fall_back_to_float32(make_sink, where):
    meta = {"scale_v_per_count": 1e-6}
    chunks = counts_stream("adc", 6, meta)
    odd = chunks[1].data.copy()
    odd[2, 3] += np.float32(1e-7)  # between two counts
    nan = chunks[3].data.copy()
    nan[0, 0] = np.nan
    neg0 = chunks[4].data.copy()
    neg0[1, 1] = -0.0  # decodes as +0.0: not bit-exact, so float32
    chunks[1], chunks[3], chunks[4] = chunks[1].replace(data=odd), chunks[3].replace(data=nan), chunks[4].replace(data=neg0)
    sink = make_sink()
    sink.write_batch(chunks)
    sink.flush()
    assert sink.stats()["chunks_native"] == 3 and sink.stats()["chunks_float32"] == 3
    assert_same_chunks(read(where, "adc"), chunks)


@pytest.mark.parametrize("meta", [
    {"scale_v_per_count": [1e-6, 1e-6]},  # wrong length (e.g. the Cyton's accelerometer channels)
    {"scale_v_per_count": 0.0}, {"scale_v_per_count": "x"}, {"scale_v_per_count": 1e-6, "offset_v": float("inf")},
])  # fmt: skip
def test_unusable_scales_store_float32(make_sink, where, meta):
    chunks = counts_stream("adc", 3, {"scale_v_per_count": 1e-6})
    chunks = [c.replace(info=c.info.replace(meta=meta)) for c in chunks]
    sink = make_sink()
    sink.write_batch(chunks)
    sink.flush()
    assert sink.stats()["chunks_float32"] == 3
    assert_same_chunks(read(where, "adc"), chunks)


def test_encode_decode_every_shape_and_extreme(rng):
    from neuraflow.sinks import _encoding

    scale, offset = np.array([[1e-6], [2.2351741e-08], [2.0]]), np.array([[0.0], [1e-3], [-4.0]])
    for shape in ((2, 3, 0), (2, 3, 1), (2, 3, 7), (5, 3, 1000)):
        counts = rng.integers(-(2**23), 2**23, shape)  # a 24-bit ADC
        if shape[2]:
            counts[0, :, 0] = [2**23 - 1, -(2**23), 0]
        data = (counts * scale + offset).astype(np.float32)
        exact, res, ref = _encoding.encode(data, scale, offset)
        assert exact.all() and res.dtype == ref.dtype == np.int32 and res.shape == data.shape
        # decode channel 1 of every chunk alone: its residuals plus the chunk's reference
        back = _encoding.decode(res[:, 1], ref, scale[1, 0], offset[1, 0])
        assert np.array_equal(back.view(np.uint32), data[:, 1].view(np.uint32))
    data = np.broadcast_to(scale, (2, 3, 2)).astype(np.float32)  # one count everywhere
    data[1, 0, 0] = 2.0**28 * 1e-6  # beyond 2**27 counts
    assert _encoding.encode(data, scale, np.zeros((3, 1)))[0].tolist() == [True, False]


def test_compression_level_is_validated():
    for bad in (0, 23, 2.5, True):
        with pytest.raises(PipelineDefinitionError, match="compression_level"):
            Iceberg(compression_level=bad)


def test_table_with_the_old_layout_is_refused_with_a_clear_error(where):
    from pyiceberg.schema import Schema
    from pyiceberg.types import BinaryType, LongType, NestedField, StringType

    old = Schema(NestedField(1, "stream_id", StringType(), required=True), NestedField(2, "seq", LongType(), required=True),
                 NestedField(9, "data", BinaryType(), required=True))  # fmt: skip
    catalog = _load_catalog("neuraflow", where["catalog_uri"], where["warehouse"], None)
    catalog.create_namespace("nf")
    catalog.create_table(TABLE, old)
    with pytest.raises(SinkError, match="old one-row-per-chunk layout.*'ch_index'.*new table name"):
        Iceberg(TABLE, **where).open()
    with pytest.raises(SinkError, match="old one-row-per-chunk layout"):
        read(where, "eeg")


# One row per chunk and channel -----------------------------------------------------------
@pytest.mark.parametrize("native", [True, False])
def test_channels_read_alone_bit_exact(make_sink, where, native):
    chunks = counts_stream("adc", 30, {"scale_v_per_count": 1e-6}) if native else stream("adc", 30, n_channels=5)
    chunks[7] = chunks[7].replace(meta={"gain": 3})
    sink = make_sink()
    sink.write_batch(chunks[:20])
    sink.flush()
    sink.write_batch(chunks[20:])  # two files
    sink.flush()
    assert sink.stats()["chunks_native"] == (30 if native else 0)
    names = chunks[0].info.channels
    got = read(where, "adc", channels=[names[3], names[0]])
    assert [c.seq for c in got] == list(range(30))
    for g, e in zip(got, chunks):
        assert g.info.channels == (names[3], names[0]) and g.info.stream_id == "adc"
        assert np.array_equal(g.data.view(np.uint32), e.data[[3, 0]].view(np.uint32))
        assert g.t0_s == e.t0_s and dict(g.meta) == dict(e.meta)
    with pytest.raises(MissingChannelError, match=r"no channel\(s\) \['nope'\].*5 channels"):
        read(where, "adc", channels=["nope"])


def test_time_range_is_pushed_down(make_sink, where):
    chunks = stream("eeg", 40, size=25)  # 0.1 s each
    sink = make_sink()
    sink.write_batch(chunks)
    sink.flush()
    got = read(where, "eeg", start_s=chunks[10].t0_s, end_s=chunks[20].t0_s)
    assert [c.seq for c in got] == list(range(10, 20))
    assert_same_chunks(got, chunks[10:20])
    assert read(where, "eeg", start_s=chunks[-1].t0_s + 1.0) == []


def test_big_files_have_one_row_group_per_channel(make_sink, where):
    from neuraflow.sinks._iceberg_arrow import MIN_ROW_GROUP_ROWS

    chunks = counts_stream("adc", MIN_ROW_GROUP_ROWS, {"scale_v_per_count": 1e-6}, size=4)
    sink = make_sink()
    sink.write_batch(chunks)
    sink.flush()
    (file,) = parquet_files(where)
    meta = file.metadata
    (ch_column,) = [i for i in range(meta.num_columns) if meta.row_group(0).column(i).path_in_schema == "ch_index"]
    bounds = [(meta.row_group(g).column(ch_column).statistics.min, meta.row_group(g).column(ch_column).statistics.max)
              for g in range(meta.num_row_groups)]  # fmt: skip
    assert bounds == [(c, c) for c in range(-1, 5)]  # header rows, then each channel alone: skippable by statistics
    got = read(where, "adc", channels=["c4"])
    assert np.array_equal(np.concatenate([c.data for c in got], axis=1), np.concatenate([c.data[4:] for c in chunks], axis=1))


def test_edf_digital_values_compress_at_least_5x(make_sink, where, eegmmidb_edf):
    from neuraflow.devices import FilePlayback
    from neuraflow.sinks._encoding import native_scale_from_edf

    device = FilePlayback(eegmmidb_edf, stream_id="edf", chunk_size=32, realtime=False, start_s=T0)
    info = device.info.replace(meta={**device.info.meta, **native_scale_from_edf(eegmmidb_edf)})
    device.open()
    chunks = []
    for seq in range(device.n_samples_total // 32):
        chunks.append(device.read(0.0).replace(info=info, seq=seq))
    device.close()
    sink = make_sink()
    sink.write_batch(chunks)
    sink.flush()
    assert sink.stats()["chunks_native"] == len(chunks)  # every EDF sample is a digital value
    assert_same_chunks(read(where, "edf"), chunks)
    raw_bytes = sum(c.data.nbytes for c in chunks)
    (file,) = parquet_files(where)
    column = residuals_column(file)
    stored = sum(file.metadata.row_group(g).column(column).total_compressed_size for g in range(file.num_row_groups))
    assert raw_bytes / stored >= 5.0, raw_bytes / stored


def test_native_scale_from_edf_rejects_other_files(tmp_path, eegmmidb_edf):
    from neuraflow.sinks._encoding import native_scale_from_edf

    with pytest.raises(ValueError, match="edf"):
        native_scale_from_edf(tmp_path / "x.fif")
    with pytest.raises(ValueError, match="picks"):
        native_scale_from_edf(eegmmidb_edf, picks=["nope"])
    meta = native_scale_from_edf(eegmmidb_edf, picks=["Fc5.", "Cz.."])
    assert meta == {"scale_v_per_count": [1e-6, 1e-6], "offset_v": [0.0, 0.0]}


def test_a_layout_change_inside_one_commit(make_sink, where, rng):
    a = StreamInfo("s", 250.0, ("Cz", "Pz", "Oz"), meta={"scale_v_per_count": 1e-6})
    b = StreamInfo("s", 250.0, ("Cz", "Fz"))  # later: other channels, no native scale
    counts = rng.integers(-1000, 1000, (3, 50))
    first = chunks_from_array((counts * 1e-6).astype(np.float32), a, [10] * 5, t0_s=T0)
    second = [c.replace(seq=c.seq + 5) for c in chunks_from_array(rng.standard_normal((2, 50)).astype(np.float32), b,
                                                                   [10] * 5, t0_s=T0 + 1.0)]  # fmt: skip
    sink = make_sink()
    sink.write_batch(second + first)
    sink.flush()
    assert sink.stats()["chunks_native"] == 5 and sink.stats()["chunks_float32"] == 5
    assert_same_chunks(read(where, "s"), first + second)
    got = read(where, "s", channels=["Cz"])
    assert [c.info.channels for c in got] == [("Cz",)] * 10
    assert all(np.array_equal(g.data, e.data[:1]) for g, e in zip(got, first + second))
    with pytest.raises(MissingChannelError, match="'Oz'"):
        read(where, "s", channels=["Oz"])
    assert [c.seq for c in read(where, "s", channels=["Oz"], end_s=T0 + 1.0)] == [0, 1, 2, 3, 4]


def test_a_seq_stored_twice_reads_back_once(make_sink, where, monkeypatch):
    chunks = counts_stream("adc", 10, {"scale_v_per_count": 1e-6})
    first, second = make_sink(), make_sink()
    first.write_batch(chunks[:6])
    second.write_batch(chunks[3:])  # both buffer seqs 3..5
    first.flush()
    monkeypatch.setattr(Iceberg, "_drop_committed_elsewhere", lambda self: None)  # as if both committed at once
    second.flush()
    catalog = _load_catalog("neuraflow", where["catalog_uri"], where["warehouse"], None)
    from pyiceberg.expressions import EqualTo

    headers = catalog.load_table(TABLE).scan(row_filter=EqualTo("ch_index", -1), selected_fields=("seq",)).to_arrow()
    assert sorted(headers.column("seq").to_pylist()) == [0, 1, 2, 3, 3, 4, 4, 5, 5, 6, 7, 8, 9]
    assert_same_chunks(read(where, "adc"), chunks)
    got = read(where, "adc", channels=["c2"])
    assert [c.seq for c in got] == list(range(10)) and all(np.array_equal(g.data, e.data[2:3]) for g, e in zip(got, chunks))
