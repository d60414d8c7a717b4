"""Overlapping windows over a stream: :func:`sliding_window`.

Window ``k`` covers input samples ``[k * hop, k * hop + n_win)`` counted from
the first sample of the stream, with ``n_win = round(length_s * sfreq)`` and
``hop = round(step_s * sfreq)``. It is emitted by the chunk that completes it,
so one input chunk yields 0, 1 or many windows and the result does not depend
on how the stream was cut into chunks.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from types import MappingProxyType

import numpy as np

from neuraflow._validate import check_positive
from neuraflow.chunk import Chunk, StreamInfo
from neuraflow.ops._blocks import append_block, drop_blocks_before, gather
from neuraflow.ops.base import OpSpec, check_same_stream


@dataclass(frozen=True, eq=False)
class WindowState:
    """Sliding-window state of one stream.

    The recent samples are kept as the tuple of read-only input blocks that
    cover them (shared with the chunks, never copied), so a step costs one copy
    per *emitted window* and nothing per input chunk.

    Parameters
    ----------
    pieces : tuple of ndarray, each shape (n_channels, n_i), float32
        Consecutive read-only input blocks holding input samples ``[n_seen - held, n_seen)``.
    held : int
        Samples held in ``pieces`` (>= what the next window needs, < n_win + one chunk).
    n_seen : int
        Number of input samples seen so far.
    next_end : int
        Input sample index (exclusive) at which the next window ends.
    n_win : int
        Window length in samples.
    hop : int
        Samples between the starts of consecutive windows.
    n_channels : int
        Channel count the window was initialised with.
    out_info : StreamInfo
        Description of the emitted windows (input info with ``window_s``/``hop_s`` in meta;
        its ``sfreq`` is the input rate, which a chunk must keep).
    """

    pieces: tuple[np.ndarray, ...]
    held: int
    n_seen: int
    next_end: int
    n_win: int
    hop: int
    n_channels: int
    out_info: StreamInfo

    @property
    def buffer(self) -> np.ndarray:
        """The held samples as one array, shape (n_channels, held) (a copy; for inspection)."""
        if not self.pieces:
            return np.zeros((self.n_channels, 0), dtype=np.float32)
        return np.concatenate(self.pieces, axis=1)


def _sizes(length_s: float, step_s: float, sfreq: float) -> tuple[int, int]:
    n_win = round(length_s * sfreq)
    hop = round(step_s * sfreq)
    for name, value, n in (("length_s", length_s, n_win), ("step_s", step_s, hop)):
        if n < 1:
            raise ValueError(
                f"{name}={value!r} is shorter than one sample at sfreq={sfreq!r} Hz "
                f"(needs >= {1.0 / sfreq!r} s)."
            )
    return n_win, hop


def _infer_info(info: StreamInfo, *, length_s: float, step_s: float) -> StreamInfo:
    _sizes(length_s, step_s, info.sfreq)
    return info.replace(meta={**info.meta, "window_s": length_s, "hop_s": step_s})


def _init(first: Chunk, *, length_s: float, step_s: float) -> WindowState:
    n_win, hop = _sizes(length_s, step_s, first.sfreq)
    out_info = _infer_info(first.info, length_s=length_s, step_s=step_s)
    return WindowState(
        pieces=(), held=0, n_seen=0, next_end=n_win, n_win=n_win, hop=hop,
        n_channels=first.n_channels, out_info=out_info,
    )


def _step(state: WindowState, chunk: Chunk, *, length_s: float, step_s: float) -> tuple[WindowState, list[Chunk]]:
    check_same_stream("ops.sliding_window", chunk, sfreq=state.out_info.sfreq, n_channels=state.n_channels)
    n_new = chunk.n_samples
    if n_new == 0:
        return state, []
    total = state.n_seen + n_new
    pieces = append_block(state.pieces, chunk.data)
    base = state.n_seen - state.held
    sfreq = chunk.sfreq
    meta = {**chunk.meta, "window_s": length_s, "hop_s": step_s}
    outputs: list[Chunk] = []
    end = state.next_end
    while end <= total:
        start = end - state.n_win
        outputs.append(
            Chunk(
                gather(pieces, base, start, end),
                # timestamps come from the current chunk's clock (dejittered by the device)
                chunk.t0_s + (start - state.n_seen) / sfreq,
                state.out_info,
                seq=start // state.hop,
                recv_s=chunk.recv_s,
                meta=meta,
            )
        )
        end += state.hop
    # keep only the blocks that the next window (starting at end - n_win) still needs
    keep_from = max(end - state.n_win, base)
    pieces, base, held = drop_blocks_before(pieces, base, state.held + n_new, keep_from)
    new_state = WindowState(
        pieces=pieces, held=held, n_seen=total, next_end=end, n_win=state.n_win, hop=state.hop,
        n_channels=state.n_channels, out_info=state.out_info,
    )
    return new_state, outputs


def sliding_window(length_s: float, step_s: float) -> OpSpec:
    """Cut a stream into windows of ``length_s`` seconds every ``step_s`` seconds.

    Parameters
    ----------
    length_s : float
        Window length in seconds (> 0); ``n_win = round(length_s * sfreq)`` samples, >= 1.
    step_s : float
        Hop between window starts in seconds (> 0); ``round(step_s * sfreq)`` samples, >= 1.
        ``step_s > length_s`` skips the samples between windows.

    Returns
    -------
    OpSpec
        Input: ``(n_channels, n_samples)`` chunks. Output: one chunk of shape
        ``(n_channels, n_win)`` per window, at the input's sfreq (samples keep
        their rate), ``t0_s`` the time of the window's first sample, ``seq`` the
        window index and ``meta`` (chunk and stream) ``{"window_s", "hop_s"}``.

    Raises
    ------
    PipelineDefinitionError
        If ``length_s`` or ``step_s`` is not a finite number > 0. A length or step
        under one sample is reported at build time (``ValueError`` from ``infer_info``).

    Examples
    --------
    >>> import numpy as np
    >>> from neuraflow.ops import run_offline, sliding_window
    >>> from neuraflow.testing import chunks_from_array, make_info
    >>> chunks = chunks_from_array(np.zeros((2, 1000)), make_info(2, 250.0), [333, 667])
    >>> windows = run_offline(sliding_window(1.0, 0.5), chunks)
    >>> len(windows), windows[0].data.shape
    (7, (2, 250))
    """
    where = "ops.sliding_window"
    length_s = check_positive(where, "length_s", length_s)
    step_s = check_positive(where, "step_s", step_s)
    kw = {"length_s": length_s, "step_s": step_s}
    return OpSpec(
        kind="sliding_window",
        init=partial(_init, **kw),
        step=partial(_step, **kw),
        infer_info=partial(_infer_info, **kw),
        params=MappingProxyType(dict(kw)),
        # a newer window supersedes an older one: real-time mode may shed stale windows
        sheddable=True,
    )


__all__ = ["WindowState", "sliding_window"]
