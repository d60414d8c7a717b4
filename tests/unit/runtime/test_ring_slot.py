"""RingBuffer backpressure and DeviceSlot: seq, gaps, drops, reconnect with backoff, end of stream."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from neuraflow.chunk import Chunk, Event
from neuraflow.devices import Synthetic
from neuraflow.devices.base import DeviceBase
from neuraflow.errors import DeviceError, EndOfStream
from neuraflow.runtime.ring import Backpressure, RingBuffer
from neuraflow.runtime.slot import DeviceSlot, SlotOptions
from neuraflow.testing import make_info

SFREQ = 100.0
INFO = make_info(2, SFREQ, stream_id="fake")


def chunk(seq: int, t0: float = 0.0, n: int = 10) -> Chunk:
    return Chunk(np.full((2, n), float(seq), dtype=np.float32), t0, INFO, seq=seq)


# ----------------------------------------------------------------------------- RingBuffer


def test_ring_rejects_zero_capacity() -> None:
    with pytest.raises(ValueError, match="capacity=0"):
        RingBuffer(0, Backpressure.BLOCK)


def test_ring_drop_oldest_counts_and_reports_evicted_seqs() -> None:
    ring = RingBuffer(3, "drop_oldest")
    assert ring.policy is Backpressure.DROP_OLDEST
    for seq in range(7):
        assert ring.put(chunk(seq))
    assert len(ring) == 3 and ring.full()
    assert ring.dropped == 4
    assert ring.take_dropped() == [0, 1, 2, 3]
    assert ring.take_dropped() == []
    assert ring.dropped == 4  # cumulative counter is kept
    assert [c.seq for c in ring.drain(2)] == [4, 5]
    assert [c.seq for c in ring.drain()] == [6]
    assert ring.drain() == []


def test_ring_block_times_out_when_full() -> None:
    ring = RingBuffer(2, Backpressure.BLOCK)
    assert ring.put(chunk(0)) and ring.put(chunk(1))
    start = time.monotonic()
    assert ring.put(chunk(2), timeout_s=0.02) is False
    assert time.monotonic() - start >= 0.015
    assert [c.seq for c in ring.drain()] == [0, 1]  # nothing evicted, nothing added
    assert ring.dropped == 0 and ring.take_dropped() == []


def test_ring_block_resumes_once_drained() -> None:
    ring = RingBuffer(1, Backpressure.BLOCK)
    ring.put(chunk(0))
    result: list[bool] = []
    writer = threading.Thread(target=lambda: result.append(ring.put(chunk(1), timeout_s=5.0)))
    writer.start()
    deadline = time.monotonic() + 5.0
    drained: list[int] = []
    while len(drained) < 2 and time.monotonic() < deadline:
        drained.extend(c.seq for c in ring.drain())
        time.sleep(0.001)
    writer.join(timeout=5.0)
    assert result == [True]
    assert drained == [0, 1]


# ----------------------------------------------------------------------------- fake device

Item = Chunk | BaseException | None | Callable[[], Chunk | None]


class FakeDevice(DeviceBase):
    """Plays a script: each read returns the next chunk / None, or raises the next exception."""

    blocking = False

    def __init__(self, script: list[Item], *, open_failures: int = 0, events: dict[int, list[Event]] | None = None):
        self.info = INFO
        self.script = list(script)
        self.open_failures = open_failures
        self.opens = 0
        self.closes = 0
        self.reads = 0
        self._events = events or {}
        self._pending: list[Event] = []
        self.is_open = False

    def open(self) -> None:
        self.opens += 1
        if self.open_failures:
            self.open_failures -= 1
            raise DeviceError("cannot open")
        self.is_open = True

    def read(self, timeout_s: float) -> Chunk | None:
        assert self.is_open, "read on a closed device"
        if not self.script:
            return None
        self.reads += 1
        item = self.script.pop(0)
        if isinstance(item, BaseException):
            raise item
        self._pending.extend(self._events.get(self.reads, []))
        return item

    def drain_events(self) -> list[Event]:
        events, self._pending = self._pending, []
        return events

    def next_ready_s(self) -> float | None:
        return 0.0

    def close(self) -> None:
        self.closes += 1
        self.is_open = False


def contiguous(n: int, *, t0: float = 0.0, size: int = 10) -> list[Chunk]:
    """``n`` chunks without gaps (seq set by the device is ignored by the slot)."""
    return [Chunk(np.zeros((2, size), np.float32), t0 + i * size / SFREQ, INFO, seq=999) for i in range(n)]


def fast(**kw) -> SlotOptions:
    return SlotOptions(**{"reconnect_initial_s": 0.001, "reconnect_max_s": 0.004, **kw})


def poll_until(slot: DeviceSlot, cond: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        slot.poll()
        time.sleep(0.0005)


def labels(events: list[Event]) -> list[str]:
    return [e.label for e in events]


# ----------------------------------------------------------------------------- seq


def test_slot_assigns_contiguous_seqs_from_next_seq() -> None:
    dev = FakeDevice(contiguous(5, t0=3.0))
    slot = DeviceSlot(dev, fast(), next_seq=42)
    slot.start()
    slot.poll()
    chunks, events = slot.take()
    assert [c.seq for c in chunks] == [42, 43, 44, 45, 46]
    assert slot.next_seq == 47
    assert events == []
    assert slot.counters.chunks == 5 and slot.counters.samples == 50
    assert slot.last_t_end_s == pytest.approx(3.5)
    assert all(np.isfinite(c.recv_s) for c in chunks)  # stamped with the host time


def test_slot_keeps_recv_time_from_device() -> None:
    dev = FakeDevice([chunk(0).replace(recv_s=123.0)])
    slot = DeviceSlot(dev, fast())
    slot.start()
    slot.poll()
    [c], _ = slot.take()
    assert c.recv_s == 123.0


def test_slot_poll_reads_at_most_max_reads_per_poll() -> None:
    dev = FakeDevice(contiguous(10))
    slot = DeviceSlot(dev, fast(max_reads_per_poll=4))
    slot.start()
    slot.poll()
    assert slot.queue_depth == 4
    slot.poll()
    assert slot.queue_depth == 8
    assert [c.seq for c in slot.take(max_chunks=5)[0]] == [0, 1, 2, 3, 4]
    assert slot.queue_depth == 3


# ----------------------------------------------------------------------------- gaps


def test_gap_event_when_t0_jumps() -> None:
    script = contiguous(2) + [Chunk(np.zeros((2, 10), np.float32), 0.6, INFO)] + contiguous(1, t0=0.7)
    dev = FakeDevice(script)
    slot = DeviceSlot(dev, fast())
    slot.start()
    slot.poll()
    chunks, events = slot.take()
    assert [c.seq for c in chunks] == [0, 1, 2, 3]  # a gap in time is not a gap in seq
    [gap] = events
    assert gap.label == "gap" and gap.stream_id == "fake"
    assert gap.value == pytest.approx(0.4)
    assert gap.meta["from_s"] == pytest.approx(0.2) and gap.meta["to_s"] == pytest.approx(0.6)
    assert gap.meta["seq"] == 2
    assert gap.t_s == pytest.approx(0.2)
    assert slot.counters.gaps == 1


def test_small_jitter_is_not_a_gap_but_overlap_is() -> None:
    size = 10
    script = [
        Chunk(np.zeros((2, size), np.float32), 0.0, INFO),
        Chunk(np.zeros((2, size), np.float32), 0.1 + 1.4 / SFREQ, INFO),  # within 1.5 samples
        Chunk(np.zeros((2, size), np.float32), 0.1, INFO),  # goes back ~1.1 chunks: a (negative) gap
    ]
    slot = DeviceSlot(FakeDevice(script), fast())
    slot.start()
    slot.poll()
    _, events = slot.take()
    assert labels(events) == ["gap"]
    assert events[0].value < 0
    assert events[0].meta["seq"] == 2


def test_gap_checked_against_resume_point() -> None:
    dev = FakeDevice(contiguous(1, t0=5.0))
    slot = DeviceSlot(dev, fast(), next_seq=10, last_t_end_s=4.0)
    slot.start()
    slot.poll()
    chunks, events = slot.take()
    assert [c.seq for c in chunks] == [10]
    assert labels(events) == ["gap"] and events[0].value == pytest.approx(1.0)
    assert events[0].meta["seq"] == 10

    slot2 = DeviceSlot(FakeDevice(contiguous(1, t0=5.0)), fast(), next_seq=10, last_t_end_s=5.0)
    slot2.start()
    slot2.poll()
    assert slot2.take()[1] == []


# ----------------------------------------------------------------------------- drops


def test_drops_become_a_drop_event_from_take() -> None:
    dev = FakeDevice(contiguous(7))
    slot = DeviceSlot(dev, fast(ring_capacity=3, backpressure=Backpressure.DROP_OLDEST))
    slot.start()
    slot.poll()
    chunks, events = slot.take()
    assert [c.seq for c in chunks] == [4, 5, 6]
    [drop] = events
    assert drop.label == "drop" and drop.value == 4
    assert list(drop.meta["seqs"]) == [0, 1, 2, 3]
    assert drop.meta["policy"] == "drop_oldest"
    assert slot.counters.dropped == 4
    # reported once
    assert slot.take() == ([], [])
    assert slot.counters.dropped == 4


def test_block_policy_stops_reading_when_ring_full() -> None:
    dev = FakeDevice(contiguous(5))
    slot = DeviceSlot(dev, fast(ring_capacity=2, backpressure=Backpressure.BLOCK))
    slot.start()
    slot.poll()
    assert dev.reads == 2 and slot.queue_depth == 2
    slot.poll()
    assert dev.reads == 2  # nothing read, nothing lost
    assert [c.seq for c in slot.take()[0]] == [0, 1]
    slot.poll()
    slot.poll()
    assert [c.seq for c in slot.take()[0]] == [2, 3]
    slot.poll()
    chunks, events = slot.take()
    assert [c.seq for c in chunks] == [4]
    assert events == [] and slot.counters.dropped == 0


# ----------------------------------------------------------------------------- failures


def test_read_error_closes_and_reconnects_after_backoff() -> None:
    script = contiguous(2) + [DeviceError("unplugged")] + contiguous(2, t0=0.2)
    dev = FakeDevice(script)
    slot = DeviceSlot(dev, fast())
    slot.start()
    slot.poll()
    assert dev.closes == 1 and dev.opens == 1
    assert slot.counters.errors == 1
    assert "read: DeviceError: unplugged" == slot.counters.last_error
    poll_until(slot, lambda: slot.counters.chunks == 4)
    assert dev.opens == 2
    assert slot.counters.reconnects == 1 and slot.counters.errors == 1
    chunks, events = slot.take()
    assert [c.seq for c in chunks] == [0, 1, 2, 3]
    assert labels(events) == ["disconnect", "reconnect"]
    disconnect, reconnect = events
    assert "unplugged" in disconnect.meta["error"]
    assert 0.0005 <= disconnect.value <= 0.001  # first delay: jitter in [initial / 2, initial]
    assert disconnect.meta["retry_in_s"] == disconnect.value
    assert reconnect.meta["attempts"] == 1
    assert slot.counters.gaps == 0  # the data continued where it stopped


def test_non_device_exceptions_are_failures_too() -> None:
    dev = FakeDevice([OSError("serial port vanished")] + contiguous(1))
    slot = DeviceSlot(dev, fast())
    slot.start()
    poll_until(slot, lambda: slot.counters.chunks == 1)
    assert slot.counters.errors == 1 and slot.counters.reconnects == 1
    assert "serial port vanished" in slot.counters.last_error


def test_no_retry_before_backoff_expires() -> None:
    dev = FakeDevice([DeviceError("x")] + contiguous(1))
    slot = DeviceSlot(dev, SlotOptions(reconnect_initial_s=60.0, reconnect_max_s=60.0))
    slot.start()
    slot.poll()
    assert dev.closes == 1
    for _ in range(5):
        slot.poll()
    assert dev.opens == 1 and slot.counters.chunks == 0
    assert slot.next_ready_s() is None  # closed: no readiness hint
    _, events = slot.take()
    assert labels(events) == ["disconnect"]
    assert 30.0 <= events[0].value <= 60.0


def test_open_failures_back_off_exponentially_up_to_the_max() -> None:
    dev = FakeDevice(contiguous(1), open_failures=5)
    slot = DeviceSlot(dev, fast(reconnect_initial_s=0.001, reconnect_max_s=0.004))
    slot.start()
    poll_until(slot, lambda: slot.counters.chunks == 1)
    assert dev.opens == 6
    assert slot.counters.errors == 5 and slot.counters.reconnects == 1
    assert slot.counters.last_error.startswith("open: DeviceError")
    _, events = slot.take()
    assert labels(events) == ["disconnect"] * 5 + ["reconnect"]
    ceilings = [0.001, 0.002, 0.004, 0.004, 0.004]
    for event, ceiling in zip(events, ceilings):
        assert 0.5 * ceiling <= event.value <= ceiling
    assert events[-1].meta["attempts"] == 5


def test_synthetic_failure_injection_loses_nothing() -> None:
    dev = Synthetic("syn", n_channels=3, sfreq=250.0, chunk_size=16, realtime=False, start_s=0.0, fail_after_reads=3)
    slot = DeviceSlot(dev, fast())
    slot.start()
    poll_until(slot, lambda: slot.counters.chunks >= 20)
    chunks, events = slot.take()
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    for c in chunks:
        np.testing.assert_array_equal(c.data, dev.expected(c.meta["sample_index"], c.n_samples))
    assert [c.meta["sample_index"] for c in chunks] == [16 * i for i in range(len(chunks))]
    assert slot.counters.errors >= 1 and slot.counters.reconnects >= 1
    assert slot.counters.gaps == 0
    assert labels(events)[:2] == ["disconnect", "reconnect"]


# ----------------------------------------------------------------------------- end of stream and events


def test_end_of_stream_marks_finished_and_closes() -> None:
    dev = FakeDevice(contiguous(3) + [EndOfStream()] + contiguous(5))
    slot = DeviceSlot(dev, fast())
    slot.start()
    slot.poll()
    assert slot.finished
    assert dev.closes == 1
    reads = dev.reads
    slot.poll()
    assert dev.reads == reads  # a finished slot is not read again
    assert slot.next_ready_s() is None
    chunks, events = slot.take()
    assert [c.seq for c in chunks] == [0, 1, 2]
    assert events == [] and slot.counters.errors == 0
    slot.stop()
    assert dev.closes == 1  # already closed: stop() does not close twice


def test_device_events_are_forwarded() -> None:
    marker = Event("fake", 0.05, "T1", 3.0)
    dev = FakeDevice(contiguous(3), events={2: [marker]})
    slot = DeviceSlot(dev, fast())
    slot.start()
    slot.poll()
    _, events = slot.take()
    assert events == [marker]


def test_stop_closes_an_open_device() -> None:
    dev = FakeDevice(contiguous(1))
    slot = DeviceSlot(dev, fast())
    slot.start()
    slot.stop()
    slot.stop()
    assert dev.closes == 1


class BlockingFake(FakeDevice):
    blocking = True

    def read(self, timeout_s: float) -> Chunk | None:
        if not self.script:
            time.sleep(min(timeout_s, 0.005))
            return None
        return super().read(timeout_s)


def test_blocking_device_is_read_by_its_own_thread_and_reconnects() -> None:
    dev = BlockingFake(contiguous(2) + [DeviceError("radio")] + contiguous(2, t0=0.2))
    slot = DeviceSlot(dev, fast())
    slot.start()
    try:
        slot.poll()  # a no-op for blocking devices
        deadline = time.monotonic() + 5.0
        while slot.counters.chunks < 4 and time.monotonic() < deadline:
            time.sleep(0.002)
    finally:
        slot.stop()
    assert slot.counters.chunks == 4
    assert slot.counters.errors == 1 and slot.counters.reconnects == 1
    chunks, events = slot.take()
    assert [c.seq for c in chunks] == [0, 1, 2, 3]
    assert labels(events) == ["disconnect", "reconnect"]
    assert not dev.is_open


def test_chunk_that_changes_rate_or_channels_is_dropped_counted_and_named() -> None:
    from neuraflow.chunk import Chunk, StreamInfo
    from neuraflow.devices.base import DeviceBase
    from neuraflow.runtime.slot import DeviceSlot, SlotOptions

    info = StreamInfo("dev", 250.0, ("a", "b"))
    other_rate = StreamInfo("dev", 500.0, ("a", "b"))
    other_channels = StreamInfo("dev", 250.0, ("a", "b", "c"))

    class Changing(DeviceBase):
        def __init__(self) -> None:
            self.info = info
            self.script = [
                Chunk(np.zeros((2, 10)), 100.0, info),
                Chunk(np.zeros((2, 10)), 100.04, other_rate),
                Chunk(np.zeros((3, 10)), 100.04, other_channels),
                Chunk(np.zeros((2, 10)), 100.04, info),
            ]

        def read(self, timeout_s: float):
            return self.script.pop(0) if self.script else None

    slot = DeviceSlot(Changing(), SlotOptions())
    slot.start()
    slot.poll()
    chunks, events = slot.take()
    assert [c.seq for c in chunks] == [0, 1] and all(c.n_channels == 2 for c in chunks)
    mismatches = [e for e in events if e.label == "stream_mismatch"]
    assert len(mismatches) == 2 and slot.counters.errors == 2
    assert "250.0 -> 500.0 Hz" in mismatches[0].meta["error"]
