"""ops.epochs / ops.flatten_epoch: marker-locked epochs equal mne.Epochs on the real recording."""

from __future__ import annotations

import pickle
from pathlib import Path

import mne
import numpy as np
import pytest

from neuraflow import ops
from neuraflow.chunk import Chunk, Event
from neuraflow.devices import FilePlayback
from neuraflow.errors import EndOfStream, PipelineDefinitionError, StreamMismatchError
from neuraflow.testing import chunks_from_array, make_info, random_chunking

T0 = 1_700_000_000.0


def with_markers(chunks: list[Chunk], markers: list[tuple[int, str]], rng=None, max_delay: int = 0) -> list[Chunk]:
    """Attach marker ``(sample, label)`` to the chunk holding the sample (or up to ``max_delay`` chunks later)."""
    starts = np.cumsum([0] + [c.n_samples for c in chunks])
    per_chunk: dict[int, list] = {}
    for sample, label in markers:
        i = int(np.searchsorted(starts, sample, side="right") - 1)
        i = min(max(i, 0), len(chunks) - 1)
        if rng is not None and max_delay:
            i = min(i + int(rng.integers(0, max_delay + 1)), len(chunks) - 1)
        per_chunk.setdefault(i, []).append((chunks[0].t0_s + sample / chunks[0].sfreq, label))
    return [c.replace(meta={**c.meta, "events": tuple(per_chunk[i])}) if i in per_chunk else c for i, c in enumerate(chunks)]


def playback_chunks(device: FilePlayback) -> list[Chunk]:
    """What runtime/slot.py's ``_accept`` should do: the events drained with a chunk go into its meta."""
    device.open()
    out = []
    try:
        while True:
            try:
                chunk = device.read(0.0)
            except EndOfStream:
                break
            events = tuple((e.t_s, e.label) for e in device.drain_events())
            out.append(chunk.replace(meta={**chunk.meta, "events": events}) if events else chunk)
    finally:
        device.close()
    return out


@pytest.fixture(scope="module")
def recording(eegmmidb_edf: Path):
    raw = mne.io.read_raw_edf(eegmmidb_edf, preload=True, verbose="error")
    events, event_id = mne.events_from_annotations(raw, verbose="error")
    return raw, events, event_id


def _mne_epochs(raw, events, event_id, tmin, tmax, baseline, reject):
    kept = {k: v for k, v in event_id.items() if k in ("T1", "T2")}
    ep = mne.Epochs(raw, events, kept, tmin, tmax, baseline=baseline, reject=reject, preload=True, verbose="error")
    return ep


@pytest.mark.parametrize(
    ("tmin", "tmax", "baseline", "reject", "seed"),
    [
        (-0.5, 2.0, (None, 0.0), None, 0),
        (1.0, 2.0, None, None, 1),
        (-0.2, 0.8, (-0.1, 0.05), dict(eeg=300e-6), 2),
        (-1.0, 4.0, (None, 0.0), dict(eeg=500e-6), 3),
    ],
)
def test_equals_mne_epochs_for_random_chunkings(recording, tmin, tmax, baseline, reject, seed):
    raw, events, event_id = recording
    rng = np.random.default_rng(seed)
    ep = _mne_epochs(raw, events, event_id, tmin, tmax, baseline, reject)
    want = ep.get_data()
    data = raw.get_data().astype(np.float32)
    info = make_info(data.shape[0], raw.info["sfreq"])
    chunks = chunks_from_array(data, info, random_chunking(data.shape[1], rng, max_size=200), t0_s=T0)
    inv = {v: k for k, v in event_id.items()}
    markers = [(int(s) - raw.first_samp, inv[code]) for s, _, code in events]
    # markers arrive up to 3 chunks late (<= 600 samples, within max_delay_s=4 s)
    chunks = with_markers(chunks, markers, rng, max_delay=3)
    spec = ops.epochs(tmin, tmax, baseline=baseline, reject_peak_to_peak=reject, labels=("T1", "T2"), max_delay_s=4.0)
    got = ops.run_offline(spec, chunks)
    assert len(got) == len(want)
    kept_samples = ep.events[:, 0] - raw.first_samp
    for out, sample, code in zip(got, kept_samples, ep.events[:, 2]):
        assert out.meta["label"] == inv[code]
        assert out.meta["marker_t_s"] == pytest.approx(T0 + sample / raw.info["sfreq"], abs=1e-6)
        assert out.t0_s == pytest.approx(T0 + (sample + round(tmin * raw.info["sfreq"])) / raw.info["sfreq"], abs=1e-6)
    stacked = np.stack([o.data for o in got])
    np.testing.assert_allclose(stacked, want, rtol=1e-5, atol=1e-6 * np.abs(want).max())
    n_dropped = sum(1 for log in ep.drop_log if log)
    last = got[-1].meta
    assert last["n_rejected"] + last["n_missed"] <= n_dropped  # epochs dropped after the last one are not counted yet
    assert [o.seq for o in got] == list(range(len(got)))


def test_rejection_is_counted(recording):
    raw, events, event_id = recording
    ep = _mne_epochs(raw, events, event_id, -0.5, 2.0, (None, 0.0), dict(eeg=350e-6))
    n_rejected = sum(1 for log in ep.drop_log if log)
    assert 0 < n_rejected < len(ep.drop_log)
    data = raw.get_data().astype(np.float32)
    chunks = chunks_from_array(data, make_info(data.shape[0], raw.info["sfreq"]), [97] * (data.shape[1] // 97) + [data.shape[1] % 97])
    inv = {v: k for k, v in event_id.items()}
    chunks = with_markers(chunks, [(int(s), inv[c]) for s, _, c in events])
    spec = ops.epochs(-0.5, 2.0, reject_peak_to_peak={"eeg": 350e-6}, labels=("T1", "T2"))
    got = ops.run_offline(spec, chunks)
    assert len(got) == len(ep)
    np.testing.assert_allclose(np.stack([g.data for g in got]), ep.get_data(), rtol=1e-5, atol=1e-6 * np.abs(ep.get_data()).max())
    counts = [g.meta["n_rejected"] for g in got]
    assert counts == sorted(counts) and 0 < counts[-1] <= n_rejected


def test_file_playback_events_give_mne_epochs(eegmmidb_edf, recording):
    raw, events, event_id = recording
    want = _mne_epochs(raw, events, event_id, 1.0, 2.0, None, None).get_data()
    chunks = playback_chunks(FilePlayback(eegmmidb_edf, realtime=False, chunk_size=50))
    got = ops.run_offline(ops.epochs(1.0, 2.0, baseline=None, labels=["T1", "T2"]), chunks)
    np.testing.assert_allclose(np.stack([g.data for g in got]), want, rtol=1e-5, atol=1e-6 * np.abs(want).max())


def _ramp(n=1000, sfreq=100.0):
    info = make_info(2, sfreq)
    data = np.vstack([np.arange(n), -np.arange(n)]).astype(np.float32)
    return data, info


def test_event_objects_and_label_filter():
    data, info = _ramp()
    chunks = chunks_from_array(data, info, [300, 700])
    events = (Event("m", T0 + 1.0, "A"), Event("m", T0 + 2.0, "B"), (T0 + 2.5, "A"))
    chunks[0] = chunks[0].replace(meta={"events": events})
    got = ops.run_offline(ops.epochs(0.0, 0.1, baseline=None, labels="A"), chunks)
    assert [g.meta["label"] for g in got] == ["A", "A"]
    np.testing.assert_array_equal(got[0].data[0], np.arange(100, 111))
    np.testing.assert_array_equal(got[1].data[0], np.arange(250, 261))


def test_markers_too_late_or_before_start_are_missed():
    data, info = _ramp()
    chunks = chunks_from_array(data, info, [100] * 10)
    chunks[0] = chunks[0].replace(meta={"events": ((T0 + 0.05, "x"),)})  # epoch starts before the stream
    chunks[9] = chunks[9].replace(meta={"events": ((T0 + 2.0, "x"), (T0 + 8.5, "x"))})  # first: 7 s late
    got = ops.run_offline(ops.epochs(-0.1, 0.2, baseline=None, max_delay_s=0.5), chunks)
    assert len(got) == 1 and got[0].meta["n_missed"] == 2
    np.testing.assert_array_equal(got[0].data[0], np.arange(840, 871))


def test_state_is_small_and_picklable():
    data, info = _ramp(5000)
    chunks = chunks_from_array(data, info, [10] * 500)
    spec = ops.epochs(-0.2, 0.5)
    op = ops.BoundOp(spec)
    state = op.init(chunks[0])
    for c in chunks:
        state, _ = op.step(state, c)
    assert state.held <= 0.2 * 100 + 100 + 10 * 9  # lookback (tmin + 1 s delay) plus unmerged pieces
    clone = pickle.loads(pickle.dumps(state))
    assert clone.n_seen == state.n_seen and clone.layout.n_times == 71


def test_flatten_epoch_feeds_a_model():
    data, info = _ramp()
    chunks = chunks_from_array(data, info, [1000])
    chunks[0] = chunks[0].replace(meta={"events": ((T0 + 1.0, "A"),)})
    ep_spec = ops.epochs(0.0, 0.02, baseline=None)
    epochs_out = ops.run_offline(ep_spec, chunks)
    flat_info = ops.flatten_epoch().infer_info(ep_spec.infer_info(info))
    assert flat_info.n_channels == 6 and flat_info.channels[:3] == ("ch0[0]", "ch0[1]", "ch0[2]")
    flat = ops.run_offline(ops.flatten_epoch(), epochs_out)
    assert flat[0].data.shape == (6, 1)
    np.testing.assert_array_equal(flat[0].data[:, 0], epochs_out[0].data.reshape(-1))
    assert flat[0].meta["label"] == "A"
    with pytest.raises(ValueError, match="epochs"):
        ops.flatten_epoch().infer_info(info)
    bad = epochs_out[0].replace(data=np.zeros((2, 5), np.float32))
    state = ops.flatten_epoch().init(epochs_out[0])
    with pytest.raises(StreamMismatchError):
        ops.flatten_epoch().step(state, bad)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tmin_s": 1.0, "tmax_s": 0.5},
        {"tmin_s": 0.0, "tmax_s": float("nan")},
        {"tmin_s": 0.0, "tmax_s": 1.0, "baseline": (-1.0, 0.0)},
        {"tmin_s": 0.0, "tmax_s": 1.0, "baseline": (0.5, 0.2)},
        {"tmin_s": 0.0, "tmax_s": 1.0, "baseline": 0.0},
        {"tmin_s": 0.0, "tmax_s": 1.0, "reject_peak_to_peak": -1.0},
        {"tmin_s": 0.0, "tmax_s": 1.0, "reject_peak_to_peak": {}},
        {"tmin_s": 0.0, "tmax_s": 1.0, "labels": []},
        {"tmin_s": 0.0, "tmax_s": 1.0, "max_delay_s": -1.0},
    ],
)
def test_invalid_parameters(kwargs):
    with pytest.raises(PipelineDefinitionError):
        ops.epochs(**kwargs)


def test_reject_by_unknown_channel_type_fails_at_build_time():
    with pytest.raises(ValueError, match="channel types"):
        ops.epochs(0.0, 1.0, reject_peak_to_peak={"meg": 1e-12}).infer_info(make_info(2, 100.0))
