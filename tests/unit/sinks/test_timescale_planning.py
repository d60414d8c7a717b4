"""PostgreSQL warm tier without a server: mode choice, partition bounds and planning, COPY metadata."""

from __future__ import annotations

import pytest

from neuraflow.errors import SinkError
from neuraflow.sinks._sql import SqlNames
from neuraflow.sinks._timescale_copy import meta_json
from neuraflow.sinks._timescale_db import choose_mode
from neuraflow.sinks._timescale_partitions import MAX_NEW_PARTITIONS_PER_FLUSH, NativePartitions, parse_bound

HOUR_US = 3600 * 1_000_000


def _partitions(ranges: list[tuple[int, int]]) -> NativePartitions:
    parts = NativePartitions(SqlNames("public", "t"), 3600, transaction=None)  # plan() never touches the database
    parts.ranges = sorted(ranges)
    return parts


def test_choose_mode():
    assert choose_mode(False, None, None, "public.t", "") == "native"
    assert choose_mode(True, None, "native", "public.t", "") == "native"
    with pytest.raises(SinkError, match="no 'timescaledb' extension"):
        choose_mode(False, None, "timescale", "public.t", "")
    with pytest.raises(SinkError, match="not partitioned by time"):
        choose_mode(False, "r", None, "public.t", "")


def test_parse_bound_ignores_foreign_bounds():
    assert parse_bound("FOR VALUES FROM (MINVALUE) TO ('2024-01-01 00:00:00+00')") is None


def test_plan_aligns_to_the_interval_and_skips_existing():
    parts = _partitions([(0, HOUR_US)])
    assert parts.plan([10, HOUR_US + 5, 3 * HOUR_US]) == [(HOUR_US, 2 * HOUR_US), (3 * HOUR_US, 4 * HOUR_US)]


def test_plan_fills_gaps_between_partitions_of_another_width():
    parts = _partitions([(0, HOUR_US // 2)])  # a half-hour partition made with another interval
    assert parts.plan([HOUR_US // 2 + 1]) == [(HOUR_US // 2, HOUR_US)]


def test_plan_is_bounded():
    times = [k * HOUR_US for k in range(MAX_NEW_PARTITIONS_PER_FLUSH + 10)]
    assert len(_partitions([]).plan(times)) == MAX_NEW_PARTITIONS_PER_FLUSH


def test_meta_json_stores_non_finite_numbers_as_text():
    assert meta_json({}) is None
    assert meta_json({"x": float("inf")}) == '{"x": "inf"}'
