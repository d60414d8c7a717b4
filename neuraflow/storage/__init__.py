"""Storage across tiers: query (Redis -> PostgreSQL -> Iceberg) and automatic tiering.

``neuraflow.storage`` does not import Ray: the tiering actor is started by
:func:`neuraflow.runtime.tiering.start_tiering_actor`.
"""

from neuraflow.storage.query import Gap, QueryEngine, QueryError, QueryResult, UnknownStreamError, query, stitch
from neuraflow.storage.tiering import MoveReport, Tierer, TieringActor, TieringPolicy
from neuraflow.storage.tiers import (
    DeletableTier, IcebergTier, RedisTier, SeqRange, Tier, TierConsistencyError, TimescaleTier, summarize,
)  # fmt: skip

__all__ = [
    "DeletableTier", "Gap", "IcebergTier", "MoveReport", "QueryEngine", "QueryError", "QueryResult", "RedisTier",
    "SeqRange", "Tier", "TierConsistencyError", "Tierer", "TieringActor", "TieringPolicy", "TimescaleTier",
    "UnknownStreamError", "query", "stitch", "summarize",
]  # fmt: skip
