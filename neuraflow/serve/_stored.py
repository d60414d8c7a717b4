"""What the routes over stored data share: the lazily built engine, span checks, HTTP codes of query errors."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from fastapi import HTTPException

from neuraflow.errors import SinkError
from neuraflow.storage.query import QueryEngine, QueryError, UnknownStreamError
from neuraflow.storage.tiers import Tier


class LazyQueryEngine:
    """Calling it returns one :class:`QueryEngine` over ``make_tiers()``, built on the first call.

    Building the app then touches no database. A plain object, not ``functools.cache``:
    the app is pickled to the Serve replicas.
    """

    def __init__(self, make_tiers: Callable[[], list[Tier]]) -> None:
        self._make_tiers = make_tiers
        self._engine: QueryEngine | None = None

    def __call__(self) -> QueryEngine:
        if self._engine is None:
            self._engine = QueryEngine(self._make_tiers())
        return self._engine


def check_span(start: float, end: float, *, max_span_s: float, too_long_status: int, hint: str) -> None:
    """422 unless ``start < end`` are finite; ``too_long_status`` when the span exceeds ``max_span_s``."""
    if not (math.isfinite(start) and math.isfinite(end)):
        raise HTTPException(422, detail=f"start={start!r} and end={end!r} must be finite (s since epoch).")
    if not start < end:
        raise HTTPException(422, detail=f"start={start!r} must be < end={end!r}.")
    if end - start > max_span_s:
        raise HTTPException(too_long_status, detail=f"end - start = {end - start:.0f} s exceeds {max_span_s:.0f} s; "
                                                    f"{hint}.")  # fmt: skip


@contextmanager
def stored_errors_as_http(*unprocessable: type[Exception]) -> Iterator[None]:
    """Map query failures to HTTP: unknown stream 404, bad request 422 (also ``unprocessable``), tier down 503."""
    try:
        yield
    except UnknownStreamError as exc:
        raise HTTPException(404, detail=str(exc)) from None
    except (QueryError, *unprocessable) as exc:
        raise HTTPException(422, detail=str(exc)) from None
    except SinkError as exc:
        raise HTTPException(503, detail=str(exc)) from None
