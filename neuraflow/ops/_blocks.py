"""Recent samples held as a tuple of read-only input blocks, shared by the buffering ops.

:func:`~neuraflow.ops.sliding_window` and :func:`~neuraflow.ops.epochs` keep the
samples they may still emit as the input chunks' own arrays (never copied per
chunk), with ``base`` the stream index of the first held sample. A step appends
the new block, cuts outputs with :func:`gather` (one copy per output) and drops
the blocks no output needs any more.
"""

from __future__ import annotations

import numpy as np

#: Input blocks held before they are merged into one (copy amortised over this many chunks).
MAX_PIECES = 8


def append_block(pieces: tuple[np.ndarray, ...], block: np.ndarray) -> tuple[np.ndarray, ...]:
    """``pieces`` then ``block``, merged into one read-only block when more than :data:`MAX_PIECES`.

    Merging bounds the per-output gather overhead: one copy of the held samples
    every ``MAX_PIECES`` chunks, amortised.
    """
    pieces = (*pieces, block)
    if len(pieces) > MAX_PIECES:
        merged = np.concatenate(pieces, axis=1)
        merged.flags.writeable = False
        pieces = (merged,)
    return pieces


def gather(pieces: tuple[np.ndarray, ...], base: int, start: int, end: int) -> np.ndarray:
    """Samples ``[start, end)`` of the blocks ``pieces`` whose first sample has index ``base``.

    Examples
    --------
    >>> a, b = np.array([[0, 1, 2]]), np.array([[3, 4]])
    >>> gather((a, b), 10, 11, 14)
    array([[1, 2, 3]])
    """
    parts = []
    offset = base
    for piece in pieces:
        lo, hi = max(start, offset), min(end, offset + piece.shape[1])
        if lo < hi:
            parts.append(piece[:, lo - offset : hi - offset])
        offset += piece.shape[1]
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)


def drop_blocks_before(
    pieces: tuple[np.ndarray, ...], base: int, held: int, keep_from: int
) -> tuple[tuple[np.ndarray, ...], int, int]:
    """Drop the leading blocks that end at or before sample ``keep_from``; return ``(pieces, base, held)``.

    Whole blocks only: the block holding ``keep_from`` is kept from its start.
    """
    while pieces and base + pieces[0].shape[1] <= keep_from:
        base += pieces[0].shape[1]
        held -= pieces[0].shape[1]
        pieces = pieces[1:]
    return pieces, base, held
