"""Storage across tiers: query (Redis -> PostgreSQL -> Iceberg) and automatic tiering.

``neuraflow.storage`` does not import Ray; only :class:`~neuraflow.storage.tiering.TieringActor`
use (:func:`~neuraflow.storage.tiering.start_tiering_actor`) does.
"""

from neuraflow.storage.query import Gap, QueryEngine, QueryError, QueryResult, UnknownStreamError, query, stitch
from neuraflow.storage.tiering import MoveReport, Tierer, TieringActor, TieringPolicy, start_tiering_actor
from neuraflow.storage.tiers import (
    DeletableTier, IcebergTier, RedisTier, SeqRange, Tier, TierConsistencyError, TimescaleTier, summarize,
)  # fmt: skip

__all__ = [
    "DeletableTier", "Gap", "IcebergTier", "MoveReport", "QueryEngine", "QueryError", "QueryResult", "RedisTier",
    "SeqRange", "Tier", "TierConsistencyError", "Tierer", "TieringActor", "TieringPolicy", "TimescaleTier",
    "UnknownStreamError", "query", "start_tiering_actor", "stitch", "summarize",
]  # fmt: skip
