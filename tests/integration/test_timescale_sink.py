"""The PostgreSQL warm tier (:class:`neuraflow.sinks.timescale.Timescale`) against a real server.

Needs PostgreSQL on 127.0.0.1:5432 (user ``postgres``, database ``test``). Every run
works in its own schema ``nf_test_<hex>`` (dropped at the end). This server has no
TimescaleDB, so the hypertable path is checked as SQL text and through detection;
the native path (range partitions, BRIN, retention) runs for real.
"""

from __future__ import annotations

import threading
import time
import uuid

import numpy as np
import pytest

from neuraflow.chunk import Chunk, Event, StreamInfo
from neuraflow.errors import SinkError
from neuraflow.sinks import Sink
from neuraflow.sinks.timescale import Timescale, timescale_available
from neuraflow.testing import assert_chunks_identical, random_stream

psycopg = pytest.importorskip("psycopg")

pytestmark = pytest.mark.postgres

DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=3"
URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
T0 = float(int(time.time()) - 3600)  # recent: older rows would be dropped by retention (30 days) at open


def _admin():
    return psycopg.connect(DSN, autocommit=True)


@pytest.fixture(scope="module")
def schema():
    try:
        conn = _admin()
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL on 127.0.0.1:5432: {exc}")
    name = f"nf_test_{uuid.uuid4().hex[:10]}"
    yield name
    conn.execute(f'drop schema if exists "{name}" cascade')
    conn.close()


@pytest.fixture
def make_sink(schema):
    made: list[Timescale] = []

    def make(**kwargs) -> Timescale:
        kwargs.setdefault("table", f"t_{uuid.uuid4().hex[:8]}")
        kwargs.setdefault("application_name", f"nf-test-{uuid.uuid4().hex[:8]}")
        kwargs.setdefault("flush_every_s", 1e9)
        sink = Timescale(URL, schema=schema, **kwargs)
        made.append(sink)
        return sink

    yield make
    for sink in made:
        try:
            sink.close()
        except SinkError:
            pass


@pytest.fixture
def sink(make_sink):
    sink = make_sink()
    sink.open()
    return sink


def make_stream(stream_id: str, n: int, **kwargs) -> list[Chunk]:
    """:func:`~neuraflow.testing.random_stream` starting at ``T0`` unless ``t0_s`` is given (recent: see T0)."""
    kwargs.setdefault("t0_s", T0)
    return random_stream(stream_id, n, **kwargs)


def row_count(sink: Timescale) -> tuple[int, int]:
    """(rows, distinct (stream_id, seq)) in the chunk table."""
    with _admin() as conn:
        return conn.execute(
            f'select count(*), count(distinct (stream_id, seq)) from "{sink.schema}"."{sink.table}"'
        ).fetchone()


# SQL generation and detection --------------------------------------------------------
def test_ddl_of_both_paths_comes_from_the_same_columns(make_sink):
    sink = make_sink(table="samples", chunk_interval_s=1800, hot_retention_s=7200, retention_s=86_400)
    ts, native = sink.ddl("timescale"), sink.ddl("native")
    ts_text, native_text = "\n".join(ts), "\n".join(native)
    assert ts[0] == "create extension if not exists timescaledb"
    for needed in ("create_hypertable(", "by_range('t0', interval '1800 seconds')", "timescaledb.compress,",
                   "timescaledb.compress_segmentby = 'stream_id'", "timescaledb.compress_orderby = 'seq'",
                   "add_compression_policy(", "compress_after => interval '7200 seconds'",
                   "add_retention_policy(", "drop_after => interval '86400 seconds'"):  # fmt: skip
        assert needed in ts_text, needed
    assert "partition by" not in ts_text and "brin" not in ts_text
    for needed in ('partition by range ("t0")', "partition of", " default", "using brin (\"t0\")"):
        assert needed in native_text, needed
    assert "timescaledb" not in native_text
    # The chunk table is the same statement in both, the native one only adds "partition by".
    create = [s for s in ts if s.startswith(f'create table if not exists "{sink.schema}"."samples" (')]
    assert len(create) == 1 and create[0] + ' partition by range ("t0")' in native
    assert 'primary key ("stream_id", "seq", "t0")' in create[0]


def test_detection_and_forced_timescale_without_the_extension(make_sink):
    with _admin() as conn:
        present = conn.execute("select count(*) from pg_available_extensions where name = 'timescaledb'").fetchone()[0]
    assert timescale_available(URL) is bool(present)
    if present:
        pytest.skip("this server has TimescaleDB: the refusal below cannot happen")
    sink = make_sink(force_mode="timescale")
    with pytest.raises(SinkError, match="timescaledb") as info:
        sink.open()
    assert "force_mode='native'" in str(info.value)
    auto = make_sink()
    auto.open()
    assert auto.mode == "native" and auto.stats()["mode"] == "native"


# Native path ------------------------------------------------------------------------
def test_round_trip_is_bit_exact(sink):
    assert isinstance(sink, Sink)
    info = StreamInfo("raw", 1000.0, ("x", "y", "z"), ("eeg", "eeg", "misc"), ("V", "V", ""), {"device": "amp", "n": 3})
    bits = np.random.default_rng(7).integers(0, 2**32, size=(3, 256), dtype=np.uint64).astype(np.uint32)
    data = bits.view(np.float32)  # every bit pattern: nan payloads, inf, -0.0, subnormals
    data[:, :4] = [[np.nan, np.inf, -np.inf, -0.0]] * 3
    chunks = [Chunk(data[:, i : i + 64], T0 + i / 1000.0, info, seq=i // 64, recv_s=T0 + 1, meta={"k": i})
              for i in range(0, 256, 64)]  # fmt: skip
    chunks.append(Chunk(np.zeros((3, 0), np.float32), T0 + 1.0, info, seq=4))  # empty chunk, recv_s nan
    sink.write_batch(chunks)
    sink.flush()
    got = sink.read("raw")
    assert_chunks_identical(got, chunks)
    assert got[0].info.meta == {"device": "amp", "n": 3} and got[1].meta == {"k": 64}
    assert sink.stream_info("raw") == info
    assert [c.seq for c in sink.read("raw", start_s=T0 + 0.064, end_s=T0 + 0.192)] == [1, 2]
    assert sink.read("nope") == []


def test_duplicates_are_stored_once(sink):
    more = make_stream("eeg", 15)
    chunks = more[:10]
    sink.write_batch(chunks)
    sink.write_batch(chunks)  # a retried call, still buffered
    sink.flush()
    sink.write_batch(chunks[3:7] + chunks[3:7])  # after a flush, and twice in one batch
    sink.flush()
    sink.write_batch(more[8:15])  # overlapping batch: 8, 9 stored, 10..14 new
    sink.flush()
    assert_chunks_identical(sink.read("eeg"), more)
    assert row_count(sink) == (15, 15)
    stats = sink.stats()
    assert stats["chunks_written"] == 15
    assert stats["duplicates_dropped"] == 10 + 8 + 2
    assert stats["chunks_offered"] == stats["chunks_written"] + stats["duplicates_dropped"]


def test_out_of_order_and_empty_batches(sink):
    chunks = make_stream("eeg", 12)
    for batch in ([6, 7, 8], [0, 1, 2], [9, 10, 11, 1], [5, 3, 4]):
        sink.write_batch([chunks[i] for i in batch])
        sink.flush()
    sink.write_batch([])
    sink.write_events([])
    sink.flush()
    assert_chunks_identical(sink.read("eeg"), chunks)
    assert sink.read_events() == []


def test_huge_batch_via_copy(sink):
    n = 20_000
    chunks = make_stream("eeg", n, n_channels=64, size=32)
    started = time.perf_counter()
    sink.write_batch(chunks)
    sink.flush()
    elapsed = time.perf_counter() - started
    mb = n * 64 * 32 * 4 / 1e6
    print(f"\nCOPY ingest, 64x32 float32 chunks: {n / elapsed:,.0f} chunks/s, {mb / elapsed:,.1f} MB/s")
    assert sink.stats()["chunks_written"] == n
    assert row_count(sink) == (n, n)
    assert_chunks_identical(sink.read("eeg"), chunks)


def test_mixed_streams_and_events_round_trip(sink):
    a, b = make_stream("a", 6, seed=1), make_stream("b", 6, n_channels=2, seed=2)
    events = [Event("markers", T0 + 1.0, "T1", 2.0, {"trial": 1}), Event("eeg", T0 + 2.0, "gap", "reconnect"),
              Event("eeg", T0 + 3.0, "drop", 3, {"expected_seq": 10, "got_seq": 13})]  # fmt: skip
    sink.write_batch([c for pair in zip(a, b) for c in pair])
    sink.write_events(events)
    sink.flush()
    assert_chunks_identical(sink.read("a"), a)
    assert_chunks_identical(sink.read("b"), b)
    got = sink.read_events()
    assert [(e.stream_id, e.t_s, e.label, e.value, dict(e.meta)) for e in got] == [
        ("markers", T0 + 1.0, "T1", 2.0, {"trial": 1}),
        ("eeg", T0 + 2.0, "gap", "reconnect", {}),
        ("eeg", T0 + 3.0, "drop", 3.0, {"expected_seq": 10, "got_seq": 13}),
    ]
    assert [e.label for e in sink.read_events("eeg", start_s=T0 + 2.5)] == ["drop"]


def test_close_flushes_and_reads_after_close(make_sink):
    sink = make_sink()
    sink.open()
    chunks = make_stream("eeg", 3)
    sink.write_batch(chunks)
    sink.close()
    assert_chunks_identical(sink.read("eeg"), chunks)


def test_partitions_brin_and_retention(make_sink):
    now = time.time()
    hour = 3600
    sink = make_sink(chunk_interval_s=hour, retention_s=5 * 86_400)
    sink.open()
    ahead = [p for p in sink.partitions() if p[2] > now]
    assert len(ahead) >= 3  # the current hour and two ahead of the wall clock
    old = make_stream("eeg", 5, t0_s=now - 10 * 86_400)  # ten days old: beyond retention
    recent = make_stream("eeg", 5, t0_s=now - 60, first_seq=100)
    sink.write_batch(old + recent)
    sink.write_events([Event("eeg", now - 10 * 86_400, "old"), Event("eeg", now - 60, "new")])
    sink.flush()
    parts = sink.partitions()
    old_part = [p for p in parts if p[1] <= old[0].t0_s < p[2]]
    assert len(old_part) == 1 and old_part[0][2] - old_part[0][1] == hour
    assert old_part[0][0].startswith(f"{sink.table}_p")
    with _admin() as conn:
        brin = conn.execute(
            "select i.relname from pg_index x join pg_class i on i.oid = x.indexrelid join pg_am a on a.oid = i.relam "
            "join pg_class t on t.oid = x.indrelid join pg_namespace n on n.oid = t.relnamespace "
            "where n.nspname = %s and t.relname = %s and a.amname = 'brin'",
            [sink.schema, sink.table],
        ).fetchall()
        assert brin == [(f"{sink.table}_t0_brin",)]
        in_old = conn.execute(f'select count(*) from "{sink.schema}"."{old_part[0][0]}"').fetchone()[0]
        in_default = conn.execute(f'select count(*) from "{sink.schema}"."{sink.table}_default"').fetchone()[0]
        assert (in_old, in_default) == (5, 0)
        part_brin = conn.execute(
            "select count(*) from pg_indexes where schemaname = %s and tablename = %s and indexdef ilike '%%using brin%%'",
            [sink.schema, old_part[0][0]],
        ).fetchone()[0]
        assert part_brin == 1  # inherited by the partition

    dropped = sink.apply_retention(now)
    assert old_part[0][0] in dropped
    assert all(p[2] > now - 5 * 86_400 for p in sink.partitions())
    assert_chunks_identical(sink.read("eeg"), recent)
    assert [e.label for e in sink.read_events()] == ["new"]
    assert sink.stats()["partitions_dropped"] == len(dropped)


def test_reopen_keeps_data_and_drops_resent_chunks(make_sink):
    first = make_sink()
    first.open()
    chunks = make_stream("eeg", 8)
    first.write_batch(chunks[:5])
    first.close()
    again = make_sink(table=first.table)
    again.open()
    again.write_batch(chunks)  # the runtime re-sends from its last acknowledged point
    again.flush()
    assert_chunks_identical(again.read("eeg"), chunks)
    assert again.stats()["duplicates_dropped"] == 5 and row_count(again) == (8, 8)


# Faults ---------------------------------------------------------------------------------
def _terminate(app: str) -> int:
    with _admin() as conn:
        return len(conn.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity where application_name = %s", [app]
        ).fetchall())  # fmt: skip


def test_killed_connection_mid_stream_loses_and_duplicates_nothing(make_sink):
    app = f"nf-kill-{uuid.uuid4().hex[:8]}"
    sink = make_sink(application_name=app, flush_chunks=200)
    sink.open()
    chunks = make_stream("eeg", 3000, n_channels=8, size=32)
    killed = 0
    for i in range(0, len(chunks), 100):
        sink.write_batch(chunks[i : i + 150])  # overlapping batches, as after retries
        if i in (1000, 2000):
            killed += _terminate(app)
    assert killed >= 1
    for _ in range(50):  # the pipeline keeps calling flush; it succeeds once reconnected
        try:
            sink.flush()
            break
        except SinkError:
            time.sleep(0.1)
    assert sink.stats()["buffered"] == 0
    assert row_count(sink) == (3000, 3000)
    assert_chunks_identical(sink.read("eeg"), chunks)
    assert sink.stats()["reconnects"] >= 1


def test_connection_killed_during_a_flush_is_retried(make_sink):
    app = f"nf-kill-{uuid.uuid4().hex[:8]}"
    sink = make_sink(application_name=app, flush_chunks=50_000)
    sink.open()
    chunks = make_stream("eeg", 20_000, n_channels=64, size=32)
    sink.write_batch(chunks[:10])
    sink.flush()  # connected, partitions in place
    sink.write_batch(chunks)
    stop = threading.Event()

    def killer():  # kill the backend while it is busy with the COPY
        with _admin() as conn:
            while not stop.is_set():
                rows = conn.execute(
                    "select pg_terminate_backend(pid) from pg_stat_activity where application_name = %s "
                    "and state = 'active' and query ilike 'copy%%'",
                    [app],
                ).fetchall()
                if rows:
                    return
                time.sleep(0.005)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    with pytest.raises(SinkError, match="connection lost") as info:
        sink.flush()
    stop.set()
    thread.join(5)
    assert sink.qualified_table in str(info.value)
    stats = sink.stats()
    assert stats["connection_errors"] == 1 and stats["buffered"] == 20_000
    sink.write_batch(chunks[:100])  # the pipeline keeps running: more (duplicate) data is accepted
    sink.flush()
    assert row_count(sink) == (20_000, 20_000)
    assert_chunks_identical(sink.read("eeg"), chunks)


@pytest.fixture
def outage_role(schema):
    """A login role owning the test schema's tables, whose logins can be switched off (a server outage)."""
    role = f"nf_role_{uuid.uuid4().hex[:8]}"
    with _admin() as conn:
        conn.execute(f'create role "{role}" login')
        conn.execute(f'create schema if not exists "{schema}"')
        conn.execute(f'grant all on schema "{schema}" to "{role}"')
    yield role
    with _admin() as conn:
        conn.execute(f'alter role "{role}" login')
        conn.execute("select pg_terminate_backend(pid) from pg_stat_activity where usename = %s", [role])
        conn.execute(f'drop owned by "{role}" cascade')
        conn.execute(f'drop role "{role}"')


def _outage(role: str, down: bool) -> None:
    with _admin() as conn:
        conn.execute(f'alter role "{role}" {"nologin" if down else "login"}')
        if down:
            conn.execute("select pg_terminate_backend(pid) from pg_stat_activity where usename = %s", [role])


@pytest.mark.parametrize("on_full", ["raise", "drop_oldest"])
def test_outage_buffers_with_bounded_memory(make_sink, outage_role, schema, on_full):
    sink = Timescale(f"postgresql+psycopg://{outage_role}@127.0.0.1:5432/test", schema=schema,
                     table=f"t_{uuid.uuid4().hex[:8]}", max_buffer_chunks=300, on_full=on_full,
                     flush_every_s=0.0, flush_chunks=50, application_name="nf-outage")  # fmt: skip
    sink.open()
    chunks = make_stream("eeg", 500)
    sink.write_batch(chunks[:50])
    assert sink.stats()["chunks_written"] == 50
    _outage(outage_role, down=True)
    for i in range(50, 350, 50):
        sink.write_batch(chunks[i : i + 50])  # connection errors are absorbed while there is room
        time.sleep(0.12)  # past the retry back-off, so write_batch tries again
    stats = sink.stats()
    assert stats["buffered"] == 300 and stats["connection_errors"] >= 2
    if on_full == "raise":
        with pytest.raises(SinkError, match=sink.qualified_table):
            sink.write_batch(chunks[350:400])
        assert sink.stats()["buffered"] == 300
    else:
        errors = sink.stats()["connection_errors"]
        sink.write_batch(chunks[350:400])
        assert sink.stats()["buffered"] == 300 and sink.stats()["dropped"] == 50
        assert sink.stats()["connection_errors"] - errors <= 1  # one flush try per batch, not one per chunk
    _outage(outage_role, down=False)
    sink.write_batch(chunks[350:500])
    sink.flush()
    expected = chunks if on_full == "raise" else chunks[:50] + chunks[100:]
    assert_chunks_identical(sink.read("eeg"), expected)
    assert row_count(sink) == (len(expected), len(expected))
    sink.close()
