"""Re-referencing == MNE's ``set_eeg_reference``/``set_bipolar_reference``; channel picks by name/type."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from numpy.testing import assert_allclose

from neuraflow.chunk import Chunk, StreamInfo
from neuraflow.errors import PipelineDefinitionError, StreamMismatchError
from neuraflow.ops import BoundOp, pick_channels, rereference, run_offline
from neuraflow.testing import chunks_from_array, make_info, random_chunking

SFREQ = 250.0
INFO = StreamInfo(
    "mixed", SFREQ, ("Fz", "Cz", "Pz", "M1", "M2", "EMG"), ("eeg",) * 5 + ("emg",), ("V",) * 5 + ("mV",)
)


def _concat(chunks):
    return np.concatenate([c.data for c in chunks], axis=1)


def _run(spec, x, info, rng, max_size=97):
    return run_offline(spec, chunks_from_array(x, info, random_chunking(x.shape[1], rng, max_size=max_size)))


@pytest.fixture
def x(rng):
    return (50e-6 * rng.standard_normal((INFO.n_channels, 1000))).astype(np.float32).astype(np.float64)


def test_average_subtracts_eeg_mean_from_eeg_only(x, rng):
    y = _concat(_run(rereference("average"), x, INFO, rng))
    expected = x.copy()
    expected[:5] -= x[:5].mean(axis=0)
    assert_allclose(y, expected, rtol=1e-5, atol=1e-11)


def test_linked_reference_keeps_reference_channels(x, rng):
    out = _run(rereference(["M1", "M2"]), x, INFO, rng)
    expected = x.copy()
    expected[:5] -= x[3:5].mean(axis=0)
    assert out[0].channels == INFO.channels
    assert_allclose(_concat(out), expected, rtol=1e-5, atol=1e-11)


def test_bipolar_drops_used_channels_and_appends_pairs(x, rng):
    spec = rereference({"Fz-Cz": ("Fz", "Cz"), "Cz-Pz": ("Cz", "Pz"), "EMG-M1": ("EMG", "M1")})
    out = _run(spec, x, INFO, rng)
    info = out[0].info
    assert info == spec.infer_info(INFO)
    assert info.channels == ("M2", "Fz-Cz", "Cz-Pz", "EMG-M1")
    assert info.ch_types == ("eeg", "eeg", "eeg", "misc") and info.units == ("V", "V", "V", "")
    expected = np.vstack([x[4], x[0] - x[1], x[1] - x[2], x[5] - x[3]])
    assert_allclose(_concat(out), expected, rtol=1e-5, atol=1e-11)


def test_matrix_reference_with_names(x, rng):
    matrix = np.array([[1.0, -1.0, 0, 0, 0, 0], [0.5, 0.5, -1.0, 0, 0, 0]])
    spec = rereference(matrix, names=["a", "b"])
    out = _run(spec, x, INFO, rng)
    assert out[0].channels == ("a", "b") and out[0].info.ch_types == ("misc", "misc")
    assert_allclose(_concat(out), matrix @ x, rtol=1e-5, atol=1e-11)
    square = rereference(np.eye(6) * 2.0)
    assert square.infer_info(INFO).channels == INFO.channels


def test_pick_by_names_types_and_both(x, rng):
    by_name = _run(pick_channels(["Pz", "EMG", "Fz"]), x, INFO, rng)
    assert by_name[0].channels == ("Pz", "EMG", "Fz") and by_name[0].info.units == ("V", "mV", "V")
    assert_allclose(_concat(by_name), x[[2, 5, 0]], rtol=1e-6)
    by_type = pick_channels(types=["emg"]).infer_info(INFO)
    assert by_type.channels == ("EMG",) and by_type.ch_types == ("emg",)
    both = pick_channels(["EMG", "Cz", "M1"], types="eeg").infer_info(INFO)
    assert both.channels == ("Cz", "M1")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (lambda: rereference(["M11"]), r"reference channel 'M11' is not in stream 'mixed' .* Did you mean 'M1'\?"),
        (lambda: rereference({"x": ("Fz", "Czz")}), r"cathode 'Czz' is not in stream .* Did you mean 'Cz'\?"),
        (lambda: rereference({"Fz": ("Cz", "Pz")}), r"clash with kept channels"),
        (lambda: rereference(np.ones((2, 3)), names=["a", "b"]), "matrix has 3 columns, the stream has 6 channels"),
        (lambda: rereference(np.ones((2, 6))), "give names for the outputs"),
        (lambda: pick_channels(["Fz", "Pzz"]), r"channel 'Pzz' is not in stream 'mixed' .* Did you mean 'Pz'\?"),
        (lambda: pick_channels(types=["eeeg"]), r"channel type 'eeeg' is not in stream .*types: eeg, emg.* Did you mean 'eeg'\?"),
        (lambda: pick_channels(["EMG"], types=["eeg"]), "no channel of"),
    ],
)
def test_unknown_channels_fail_at_build_time_with_did_you_mean(spec, message):
    with pytest.raises(ValueError, match=message):
        spec().infer_info(INFO)


def test_average_needs_eeg_channels():
    info = make_info(2, SFREQ).replace(ch_types=("misc", "misc"))
    with pytest.raises(ValueError, match="no channel of type 'eeg'"):
        rereference().infer_info(info)


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: rereference("avg"), "ref='avg' is not 'average'"),
        (lambda: rereference([]), "must be 'average', distinct channel names"),
        (lambda: rereference(["M1", "M1"]), "distinct channel names"),
        (lambda: rereference({}), "bipolar mapping is empty"),
        (lambda: rereference({"a": ("Fz",)}), r"bipolar entry 'a': \('Fz',\) must be name -> \(anode, cathode\)"),
        (lambda: rereference(np.ones(3)), "must be 2-D"),
        (lambda: rereference(np.full((1, 2), np.nan)), "finite"),
        (lambda: rereference(np.ones((2, 2)), names=["a"]), "names must be 2 unique channel names"),
        (lambda: rereference(["M1"], names=["a"]), "names is only used with a matrix"),
        (lambda: pick_channels(), "give names, types or both"),
        (lambda: pick_channels([]), "names=\\(\\) must be distinct non-empty strings"),
        (lambda: pick_channels(["a", "a"]), "must be distinct"),
    ],
)
def test_bad_params_raise_pipeline_definition_error(factory, message):
    with pytest.raises(PipelineDefinitionError, match=message):
        factory()


def test_step_batch_equals_individual_steps_and_stacks_in_time(rng):
    spec = rereference("average")
    op = BoundOp(spec)
    infos = [INFO.replace(stream_id=f"s{i}") for i in range(4)]
    data = [rng.standard_normal((6, 300)) for _ in infos]
    sizes_of = [[100] * 3, [50, 0, 250], [100] * 3, [1, 199, 100]]
    streams = [chunks_from_array(d, info, sizes) for d, info, sizes in zip(data, infos, sizes_of)]
    single = [run_offline(spec, s) for s in streams]
    states = [op.init(s[0]) for s in streams]
    batched = [[] for _ in streams]
    for k in range(3):
        states, outs = op.step_batch(states, [s[k] for s in streams])
        for out, acc in zip(outs, batched):
            acc.extend(out)
    for got, want in zip(batched, single):
        assert [(g.t0_s, g.info) for g in got] == [(w.t0_s, w.info) for w in want]
        assert_allclose(_concat(got), _concat(want), rtol=1e-6)


def test_state_pickles_and_channel_change_is_rejected(x, rng):
    for spec in (rereference({"a": ("Fz", "Cz")}), pick_channels(["Cz"])):
        state = spec.init(Chunk(x[:, :10], 0.0, INFO))
        clone = pickle.loads(pickle.dumps(state))
        chunk = Chunk(x[:, 10:50], 1.0, INFO)
        np.testing.assert_array_equal(spec.step(state, chunk)[1][0].data, spec.step(clone, chunk)[1][0].data)
        with pytest.raises(StreamMismatchError, match="3 channels"):
            spec.step(state, Chunk(x[:3, :10], 0.0, make_info(3, SFREQ)))


@pytest.fixture(scope="module")
def recording(eegmmidb_edf):
    mne = pytest.importorskip("mne")
    raw = mne.io.read_raw_edf(eegmmidb_edf, preload=True, verbose="error")
    raw.crop(0.0, 10.0)
    x = raw.get_data().astype(np.float32).astype(np.float64)
    info = StreamInfo("eegmmidb", float(raw.info["sfreq"]), tuple(raw.ch_names), ("eeg",) * len(raw.ch_names))
    return mne, raw, x, info


def _raw_array(mne, raw, x):
    return mne.io.RawArray(x, mne.create_info(list(raw.ch_names), raw.info["sfreq"], "eeg"), verbose="error")


@pytest.mark.parametrize("ref", ["average", ["T9..", "T10."], ["Cz.."]])
def test_real_recording_equals_mne_set_eeg_reference(recording, ref, rng):
    mne, raw, x, info = recording
    expected, _ = mne.set_eeg_reference(_raw_array(mne, raw, x), ref, copy=True, projection=False, verbose="error")
    out = _run(rereference(ref), x, info, rng, max_size=64)
    assert out[0].channels == tuple(expected.ch_names)
    got = _concat(out)
    assert_allclose(got, expected.get_data(), rtol=1e-5, atol=1e-6 * np.abs(got).max())


def test_real_recording_equals_mne_set_bipolar_reference(recording, rng):
    mne, raw, x, info = recording
    pairs = {"C3-C4": ("C3..", "C4.."), "Fp1-O1": ("Fp1.", "O1.."), "Cz-Pz": ("Cz..", "Pz..")}
    anodes, cathodes = zip(*pairs.values())
    expected = mne.set_bipolar_reference(
        _raw_array(mne, raw, x), list(anodes), list(cathodes), ch_name=list(pairs), copy=True, verbose="error"
    )
    out = _run(rereference(pairs), x, info, rng, max_size=64)
    assert out[0].channels == tuple(expected.ch_names)
    got = _concat(out)
    assert_allclose(got, expected.get_data(), rtol=1e-5, atol=1e-6 * np.abs(got).max())
