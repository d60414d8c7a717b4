"""Run in a child process: publish an LSL stream until stdin closes or a duration passes.

``python lsl_helpers.py outlet NAME N_CHANNELS SFREQ DURATION_S`` pushes a ramp
(``sample k, channel c -> k * 10 + c``) in 10-sample chunks in real time, with
``desc/channels`` labels ``ch0..`` in microvolts, then prints the LSL time of
its first sample on stdout.
``python lsl_helpers.py markers NAME LABEL[,LABEL...] GAP_S`` pushes string markers.
``python lsl_helpers.py inlet NAME N_SAMPLES`` resolves NAME and prints
``n_samples, first_timestamp, first_value`` after pulling N samples (consumer side).

The caller sets ``LSLAPICFG`` in the child's environment, so liblsl stays on loopback.
"""

from __future__ import annotations

import sys
import time


def outlet(name: str, n_channels: int, sfreq: float, duration_s: float) -> None:
    import numpy as np
    import pylsl

    info = pylsl.StreamInfo(name, "EEG", n_channels, sfreq, pylsl.cf_float32, f"{name}-src")
    chans = info.desc().append_child("channels")
    for c in range(n_channels):
        ch = chans.append_child("channel")
        ch.append_child_value("label", f"ch{c}")
        ch.append_child_value("type", "eeg")
        ch.append_child_value("unit", "microvolts")
    out = pylsl.StreamOutlet(info)
    print("ready", flush=True)
    start = pylsl.local_clock()
    k = 0
    while pylsl.local_clock() - start < duration_s:
        due = start + (k + 10) / sfreq
        wait = due - pylsl.local_clock()
        if wait > 0:
            time.sleep(wait)
        block = (np.arange(k, k + 10)[:, None] * 10 + np.arange(n_channels)[None, :]).astype(np.float32)
        out.push_chunk(block, start + (k + 9) / sfreq)  # timestamp of the last sample
        if k == 0:
            print(f"t0 {start!r}", flush=True)
        k += 10


def markers(name: str, labels: str, gap_s: float) -> None:
    import pylsl

    info = pylsl.StreamInfo(name, "Markers", 1, pylsl.IRREGULAR_RATE, pylsl.cf_string, f"{name}-src")
    out = pylsl.StreamOutlet(info)
    print("ready", flush=True)
    out.wait_for_consumers(10.0)
    time.sleep(0.3)
    for label in labels.split(","):
        t = pylsl.local_clock()
        out.push_sample([label], t)
        print(f"sent {label} {t!r}", flush=True)
        time.sleep(gap_s)
    time.sleep(5.0)


def inlet(name: str, n: int) -> None:
    import pylsl

    found = pylsl.resolve_byprop("name", name, 1, 10.0)
    inl = pylsl.StreamInlet(found[0], processing_flags=pylsl.proc_clocksync)
    got, stamps = [], []
    deadline = time.time() + 10.0
    while len(got) < n and time.time() < deadline:
        samples, ts = inl.pull_chunk(timeout=0.5, max_samples=n - len(got))
        got.extend(samples)
        stamps.extend(ts)
    labels = inl.info().desc().child("channels").child("channel").child_value("label")
    print(f"{len(got)} {stamps[0]!r} {got[0][0]!r} {got[-1][0]!r} {labels} {pylsl.local_clock()!r}", flush=True)


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    if cmd == "outlet":
        outlet(args[0], int(args[1]), float(args[2]), float(args[3]))
    elif cmd == "markers":
        markers(args[0], args[1], float(args[2]))
    elif cmd == "inlet":
        inlet(args[0], int(args[1]))
