"""Native time partitions of the PostgreSQL warm tier (used when TimescaleDB is absent).

:class:`NativePartitions` knows which ``[lo, hi)`` partitions of the chunk table exist,
creates the missing ones ahead of the data and of the wall clock, and drops those past
retention. Every DDL runs under the table's advisory lock, so sinks of several
processes on one table do not collide.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

import numpy as np

from neuraflow.sinks import _sql

__all__ = ["MAX_NEW_PARTITIONS_PER_FLUSH", "NativePartitions", "parse_bound"]

#: At most this many partitions are created by one flush; rows beyond go to the DEFAULT partition.
MAX_NEW_PARTITIONS_PER_FLUSH = 256


def parse_bound(expr: str) -> tuple[int, int] | None:
    """``FOR VALUES FROM ('...') TO ('...')`` (session time zone UTC) -> (lo_us, hi_us); None for DEFAULT.

    >>> parse_bound("FOR VALUES FROM ('1970-01-01 00:00:01+00') TO ('1970-01-01 01:00:01+00')")
    (1000000, 3601000000)
    >>> parse_bound("DEFAULT") is None
    True
    """
    from datetime import datetime

    head, sep, tail = expr.partition("FROM ('")
    if not sep:
        return None
    lo, sep, rest = tail.partition("') TO ('")
    hi = rest.partition("')")[0]
    if not sep or not hi:
        return None
    try:
        return _sql.datetime_to_us(datetime.fromisoformat(lo)), _sql.datetime_to_us(datetime.fromisoformat(hi))
    except ValueError:  # MINVALUE/MAXVALUE or an unexpected format: not one of ours
        return None


class NativePartitions:
    """The time partitions of one natively partitioned chunk table.

    Parameters
    ----------
    names : SqlNames
        The table's objects.
    interval_s : int
        Width of a new partition, seconds; partitions are aligned to multiples of it.
    transaction : callable
        Returns a context manager yielding a psycopg cursor in one transaction (the sink's).
    """

    def __init__(self, names: _sql.SqlNames, interval_s: int,
                 transaction: Callable[[], AbstractContextManager[Any]]) -> None:  # fmt: skip
        self.names = names
        self.interval_s = interval_s
        self._transaction = transaction
        self.ranges: list[tuple[int, int]] = []  # [lo_us, hi_us), sorted, as last loaded

    def load(self) -> None:
        """Read the existing partitions' bounds into :attr:`ranges`."""
        self.ranges = sorted(b for _, b in self.listing() if b is not None)

    def listing(self) -> list[tuple[str, tuple[int, int] | None]]:
        """``(name, (lo_us, hi_us))`` of every partition, ``None`` bounds for DEFAULT or foreign ones."""
        with self._transaction() as cur:
            cur.execute(_sql.list_partitions_sql(self.names))
            rows = cur.fetchall()
        return [(name, parse_bound(expr)) for name, expr in rows]

    def plan(self, times_us: Sequence[int]) -> list[tuple[int, int]]:
        """New partitions ``[lo, hi)`` needed for ``times_us``: aligned to ``interval_s``, clipped
        to the gaps between existing ones (which may have another width), at most
        ``MAX_NEW_PARTITIONS_PER_FLUSH`` (rows beyond go to DEFAULT until a later flush)."""
        from bisect import bisect_left, bisect_right

        step = self.interval_s * 1_000_000
        times = np.asarray(times_us, np.int64)
        ranges = self.ranges
        out: set[tuple[int, int]] = set()
        for s in np.unique(times - times % step).tolist():
            e = s + step
            j = bisect_left(ranges, (e,))  # ranges[:j] start before e
            overlapping = []
            while j > 0 and ranges[j - 1][1] > s:
                j -= 1
                overlapping.append(ranges[j])
            if not overlapping:
                out.add((s, e))
                continue
            if (s, e) in overlapping:
                continue
            for x in times[(times >= s) & (times < e)].tolist():  # rare: partitions of another width
                i = bisect_right(ranges, (x, math.inf))
                if i > 0 and ranges[i - 1][1] > x:
                    continue  # covered
                lo = max(s, ranges[i - 1][1]) if i > 0 else s
                hi = min(e, ranges[i][0]) if i < len(ranges) else e
                out.add((lo, hi))
        return sorted(out)[:MAX_NEW_PARTITIONS_PER_FLUSH]

    def ensure(self, times_us: Sequence[int]) -> int:
        """Create the partitions :meth:`plan` asks for; return how many were created.

        A planned partition is skipped when the DEFAULT partition already holds rows in its
        range (attaching it would fail); those rows stay in DEFAULT.
        """
        planned = self.plan(times_us)
        if not planned:
            return 0
        created = 0
        with self._transaction() as cur:
            cur.execute(f"select pg_advisory_xact_lock(hashtext({self.names.lock_key}))")
            for lo, hi in planned:
                cur.execute(_sql.default_has_rows_sql(self.names, lo, hi))
                if cur.fetchone()[0]:  # rows already in DEFAULT there: a partition would fail to attach
                    continue
                cur.execute(_sql.partition_ddl(self.names, lo, hi))
                created += 1
        self.load()
        return created

    def drop_before(self, cutoff_us: int) -> list[str]:
        """Drop partitions ending at or before ``cutoff_us``, and older rows of DEFAULT and events.

        Returns
        -------
        list of str
            Names of the dropped partitions.
        """
        old = [(lo, hi) for lo, hi in self.ranges if hi <= cutoff_us]
        dropped: list[str] = []
        with self._transaction() as cur:
            cur.execute(f"select pg_advisory_xact_lock(hashtext({self.names.lock_key}))")
            cur.execute(_sql.list_partitions_sql(self.names))
            live = dict(cur.fetchall())
            for name, expr in live.items():
                bounds = parse_bound(expr)
                if bounds is not None and bounds[1] <= cutoff_us:
                    cur.execute(_sql.drop_partition_sql(self.names, name))
                    dropped.append(name)
            cutoff = _sql.ts_literal(cutoff_us)
            cur.execute(f"delete from {self.names.q(self.names.default_partition_name)} where \"t0\" < {cutoff}")
            cur.execute(f"delete from {self.names.events} where \"t\" < {cutoff}")
        self.ranges = [r for r in self.ranges if r not in old]
        if dropped:
            self.load()
        return dropped
