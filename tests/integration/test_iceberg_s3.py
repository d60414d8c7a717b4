"""The Iceberg sink on an ``s3://`` warehouse served by a real moto S3 server (no patched client)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from neuraflow.chunk import StreamInfo
from neuraflow.errors import SinkError
from neuraflow.sinks import Iceberg, read_chunks
from neuraflow.testing import chunks_from_array

from .s3_server import s3_server  # noqa: F401 - the fixture

pytestmark = pytest.mark.s3
T0 = 1_700_000_000.0
TABLE = "nf.samples"


def make_sink(server, tmp_path, **kwargs) -> Iceberg:
    sink = Iceberg(TABLE, catalog_uri=f"sqlite:///{tmp_path}/catalog.db", warehouse=f"s3://{server.bucket}/wh",
                   catalog_properties=server.catalog_properties, flush_every_s=1e9, **kwargs)  # fmt: skip
    sink.open()
    return sink


def adc_chunks(stream_id: str, n_chunks: int, *, native: bool = True, seed: int = 0):
    """An 8-channel stream: exact ADC counts with a scale in meta, or plain float32 noise."""
    rng = np.random.default_rng(seed)
    if native:
        meta = {"scale_v_per_count": 2.2351741e-08}
        data = (np.cumsum(rng.integers(-50, 51, (8, n_chunks * 32)), axis=1) * 2.2351741e-08).astype(np.float32)
    else:
        meta, data = {}, rng.standard_normal((8, n_chunks * 32)).astype(np.float32)
    info = StreamInfo(stream_id, 250.0, tuple(f"c{i}" for i in range(8)), meta=meta)
    return chunks_from_array(data, info, [32] * n_chunks, t0_s=T0)


def assert_bit_exact(got, expected) -> None:
    assert [c.seq for c in got] == [c.seq for c in expected]
    for g, e in zip(got, expected):
        assert np.array_equal(g.data.view(np.uint32), e.data.view(np.uint32))
        assert g.t0_s == e.t0_s and g.info == e.info and dict(g.meta) == dict(e.meta)


def test_round_trip_and_dedup_across_a_reopened_sink(s3_server, tmp_path):
    adc, floats = adc_chunks("adc", 30), adc_chunks("noise", 10, native=False, seed=1)
    sink = make_sink(s3_server, tmp_path)
    sink.write_batch(adc[:20] + floats)
    sink.close()
    assert sink.stats()["chunks_native"] == 20 and sink.stats()["chunks_float32"] == 10
    again = make_sink(s3_server, tmp_path)  # committed seqs are read back from S3
    again.write_batch(adc)
    again.close()
    assert again.stats()["duplicates_dropped"] == 20 and again.stats()["chunks_written"] == 10
    where = (f"sqlite:///{tmp_path}/catalog.db", f"s3://{s3_server.bucket}/wh", TABLE)
    assert_bit_exact(read_chunks(*where, "adc", catalog_properties=s3_server.catalog_properties), adc)
    assert_bit_exact(again.read_chunks("noise"), floats)
    import boto3

    client = boto3.client("s3", endpoint_url=s3_server.endpoint, aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")  # fmt: skip
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3_server.bucket)["Contents"]]
    assert sum(k.endswith(".parquet") and "/samples/data/" in k for k in keys) >= 3  # 2 streams + 1


def test_outage_mid_stream_keeps_the_buffer_and_loses_nothing(s3_server, tmp_path):
    """S3 unreachable during a flush: SinkError, chunks kept; once it is back, the retry commits them.

    The outage cuts the network path (a proxy in front of moto) rather than killing
    moto, whose objects live in memory: killing it would also delete batch 1.
    """
    chunks = adc_chunks("adc", 20)
    sink = make_sink(s3_server, tmp_path)
    sink.write_batch(chunks[:10])
    sink.flush()
    s3_server.cut()
    sink.write_batch(chunks[10:])
    with pytest.raises(SinkError, match=r"nf\.samples"):
        sink.flush()
    assert sink.stats()["buffered"] == 10 and sink.stats()["commits"] == 1
    s3_server.restore()
    sink.write_batch(chunks[12:16])  # re-sent chunks are still deduplicated against the buffer
    time.sleep(0.55)  # the sink backs off 0.5 s after the failed commit
    sink.flush()
    assert sink.stats()["commits"] == 2 and sink.stats()["buffered"] == 0
    assert_bit_exact(sink.read_chunks("adc"), chunks)
    sink.close()
