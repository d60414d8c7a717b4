"""Partial checkpoints leave the worker in batches from a background thread."""

from __future__ import annotations

import threading

from neuraflow.runtime.shipper import CheckpointShipper
from neuraflow.runtime.wire import StateBlob


def blob(stream: str, value: int) -> StateBlob:
    return StateBlob.pack({"states": {("f", stream): value}, "next_seq": {}}, partial=True)


def test_blobs_are_sent_together_in_submission_order() -> None:
    sent: list[list[StateBlob]] = []
    shipper = CheckpointShipper(sent.append, every_s=3600.0)  # only flush() sends here
    blobs = [blob("a", 1), blob("b", 2), blob("a", 3)]
    for b in blobs:
        shipper.submit(b)
    assert sent == []
    shipper.flush()
    assert sent == [blobs] and shipper.sent == 3
    shipper.flush()  # nothing pending: no empty call
    assert len(sent) == 1
    shipper.close()


def test_the_thread_sends_on_its_own() -> None:
    arrived = threading.Event()
    shipper = CheckpointShipper(lambda blobs: arrived.set(), every_s=0.01)
    shipper.submit(blob("a", 1))
    assert arrived.wait(5.0)
    shipper.close()


def test_a_slow_controller_drops_the_oldest_blobs_and_counts_them() -> None:
    sent: list[list[StateBlob]] = []
    shipper = CheckpointShipper(sent.append, every_s=3600.0, max_pending=2)
    blobs = [blob("a", i) for i in range(5)]
    for b in blobs:
        shipper.submit(b)
    shipper.close()  # close() sends what is left
    assert sent == [blobs[3:]] and shipper.dropped == 3


def test_a_failed_send_is_counted_and_the_shipper_keeps_going() -> None:
    calls: list[int] = []

    def send(blobs):
        calls.append(len(blobs))
        if len(calls) == 1:
            raise ConnectionError("controller restarting")

    shipper = CheckpointShipper(send, every_s=3600.0)
    shipper.submit(blob("a", 1))
    shipper.flush()
    assert shipper.dropped == 1 and "ConnectionError: controller restarting" in shipper.last_error
    shipper.submit(blob("a", 2))
    shipper.flush()
    assert calls == [1, 1] and shipper.sent == 1
    shipper.close()
