"""The op contract: a pure ``init``/``step`` pair with explicit state.

An op never keeps state on ``self``. The runtime owns the state value, passes
it in and stores what comes back, so an op can be retried, checkpointed,
moved to another actor and tested offline without Ray::

    state = spec.init(first_chunk)                     # once per stream
    state, outputs = spec.step(state, chunk)           # every chunk; outputs may be []

``infer_info`` runs at build time on the input :class:`StreamInfo` and
returns the output's (validating sfreq-dependent parameters such as a cutoff
below Nyquist). ``step_batch`` is the vectorised form the runtime uses when
one actor hosts many streams: the default loops over ``step``; filters
override it with one stacked ``sosfilt`` call.

Heavy resources (an ONNX session, a connection pool) are not state: ``setup``
builds one per worker, and the runtime passes it as ``resource=`` to
``init``, ``step`` and ``step_batch`` of ops that declare it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from neuraflow.chunk import Chunk, StreamInfo
from neuraflow.errors import StreamMismatchError

State = Any
InitFn = Callable[..., State]
StepFn = Callable[..., tuple[State, list[Chunk]]]
BatchStepFn = Callable[..., tuple[list[State], list[list[Chunk]]]]
InferInfoFn = Callable[[StreamInfo], StreamInfo]


@dataclass(frozen=True)
class OpSpec:
    """Description of one op instance: what to compute, with validated parameters.

    Parameters
    ----------
    kind : str
        The op's name, e.g. ``"bandpass"`` (the step name is given by the pipeline).
    init : callable ``(first: Chunk[, resource]) -> state``
        Builds the initial state from the first chunk of a stream.
    step : callable ``(state, chunk[, resource]) -> (state, list[Chunk])``
        Pure: must not mutate ``state`` or ``chunk``.
    infer_info : callable ``(StreamInfo) -> StreamInfo``
        Output stream description; raises ``ValueError`` for incompatible input
        (the plan prefixes the message with the step name).
    params : Mapping
        The validated parameters, for display, metrics and config round trips.
    step_batch : callable ``(states, chunks[, resource]) -> (states, outputs)``, optional
        Vectorised step over chunks of different streams; ``outputs[i]`` belongs to ``chunks[i]``.
    setup : callable ``() -> resource``, optional
        Builds a heavy resource once per worker process.
    sheddable : bool
        True for ops whose outputs are snapshots that a newer output supersedes
        (sliding windows): in real-time mode, when the loop falls behind the
        latency budget, the runtime forwards only the newest output per stream
        and counts the others as shed.
    """

    kind: str
    init: InitFn
    step: StepFn
    infer_info: InferInfoFn
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    step_batch: BatchStepFn | None = None
    setup: Callable[[], Any] | None = None
    sheddable: bool = False


class BoundOp:
    """An :class:`OpSpec` bound to its per-worker resource (if any). Runtime helper."""

    __slots__ = ("spec", "resource")

    def __init__(self, spec: OpSpec) -> None:
        self.spec = spec
        self.resource = spec.setup() if spec.setup is not None else None

    def init(self, first: Chunk) -> State:
        if self.spec.setup is None:
            return self.spec.init(first)
        return self.spec.init(first, resource=self.resource)

    def step(self, state: State, chunk: Chunk) -> tuple[State, list[Chunk]]:
        if self.spec.setup is None:
            return self.spec.step(state, chunk)
        return self.spec.step(state, chunk, resource=self.resource)

    def step_batch(self, states: Sequence[State], chunks: Sequence[Chunk]) -> tuple[list[State], list[list[Chunk]]]:
        """Step many streams at once; falls back to a loop over :meth:`step`."""
        batch = self.spec.step_batch
        if batch is not None and len(chunks) > 1:
            if self.spec.setup is None:
                return batch(list(states), list(chunks))
            return batch(list(states), list(chunks), resource=self.resource)
        new_states: list[State] = []
        outputs: list[list[Chunk]] = []
        for state, chunk in zip(states, chunks):
            state, out = self.step(state, chunk)
            new_states.append(state)
            outputs.append(out)
        return new_states, outputs


def run_offline(spec: OpSpec, chunks: Sequence[Chunk]) -> list[Chunk]:
    """Run one op over a list of chunks of one stream, in order; return all outputs.

    The reference way to test an op without any runtime.
    """
    op = BoundOp(spec)
    outputs: list[Chunk] = []
    state: State = None
    for i, chunk in enumerate(chunks):
        if i == 0:
            state = op.init(chunk)
        state, out = op.step(state, chunk)
        outputs.extend(out)
    return outputs


def check_same_stream(where: str, chunk: Chunk, *, sfreq: float | None, n_channels: int | None) -> None:
    """Refuse a chunk whose rate (Hz) or channel count differs from what the op was initialised with.

    ``None`` skips that check. Raises :class:`StreamMismatchError` naming the op, the stream,
    the value seen and the value expected. Every op whose state depends on the rate or the
    channel count calls this first in ``step``, so a mid-stream change is a named error,
    never a silently wrong number.
    """
    if n_channels is not None and chunk.n_channels != n_channels:
        raise StreamMismatchError(
            f"{where}: stream {chunk.stream_id!r} chunk has {chunk.n_channels} channels, "
            f"the op was initialised with {n_channels}."
        )
    if sfreq is not None and chunk.sfreq != sfreq:
        raise StreamMismatchError(
            f"{where}: stream {chunk.stream_id!r} changed rate mid-stream: sfreq={chunk.sfreq!r} Hz, "
            f"the op was initialised at {sfreq!r} Hz."
        )
