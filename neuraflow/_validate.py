"""Validation helpers that produce readable messages (MNE's ``check_option`` style)."""

from __future__ import annotations

from collections.abc import Iterable
from difflib import get_close_matches
from typing import Any, TypeVar

from neuraflow.errors import PipelineDefinitionError

T = TypeVar("T")


def suggest(value: str, options: Iterable[str]) -> str:
    """Return ``" Did you mean 'x'?"`` for the closest option, or ``""``."""
    matches = get_close_matches(str(value), [str(o) for o in options], n=1, cutoff=0.6)
    return f" Did you mean {matches[0]!r}?" if matches else ""


def check_option(where: str, name: str, value: T, allowed: Iterable[T]) -> T:
    """Return ``value`` if it is one of ``allowed``, else raise a readable error."""
    allowed = tuple(allowed)
    if value not in allowed:
        hint = suggest(value, allowed) if isinstance(value, str) else ""
        raise PipelineDefinitionError(
            f"{where}: {name}={value!r} is not one of {allowed}.{hint}"
        )
    return value


def check_positive(where: str, name: str, value: Any, *, allow_zero: bool = False) -> float:
    """Return ``value`` as float if it is a finite number > 0 (or >= 0)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise PipelineDefinitionError(
            f"{where}: {name}={value!r} must be a number."
        ) from None
    bad = number < 0 if allow_zero else number <= 0
    if bad or number != number or number in (float("inf"), float("-inf")):
        bound = ">= 0" if allow_zero else "> 0"
        raise PipelineDefinitionError(f"{where}: {name}={value!r} must be finite and {bound}.")
    return number


def check_int(where: str, name: str, value: Any, *, minimum: int = 1) -> int:
    """Return ``value`` if it is an int >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise PipelineDefinitionError(
            f"{where}: {name}={value!r} must be an integer >= {minimum}."
        )
    return value
