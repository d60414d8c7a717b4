"""Artifact-removal validation on the real OpenBCI Cyton recording: ``python -m benchmarks.artifacts [PATH]``.

Recording: OpenBCI GUI v6, 8 EXG channels at 250 Hz, 90 s (eye blinks, jaw
clenches, eyes-closed alpha). Preprocessing (offline, float64): 4th-order
Butterworth high-pass at 1 Hz and notches at 60/120 Hz (the mains here is
60 Hz and dominates everything above 30 Hz otherwise); the first 3 s (the
high-pass transient of the ~60 mV DC offsets) are dropped, so stream time
``t`` below is file time ``t``. Each method then runs *online* through
:func:`neuraflow.ops.run_offline` in 25-sample chunks:

- ``eog_online``: EOG proxies exg0/exg1 (frontal), coefficients fitted online
  on the 1-8 Hz band of the first 30 s of the stream (3-33 s, with blinks),
  applied to exg2..exg7 from then on (the blinks at 4-17 s fall in the
  calibration and pass unchanged: only the 76-81 s blinks are cleaned);
- ``eog_offline_fit``: the same coefficients fitted offline with
  :func:`~neuraflow.ops.fit_eog_regression` and applied from the start;
- ``emg_suppress``: :func:`~neuraflow.ops.emg_detector` ``action="suppress"``
  (band >= 30 Hz, ratio > 0.6, line 60 Hz);
- ``asr``: :func:`~neuraflow.ops.fit_asr` on the clean 30-60 s segment
  (no spectral shaping, cutoff 20 and 10 SD), then :func:`~neuraflow.ops.asr`.

Figures (power = mean square over the segment and channels):

- ``blink_removed_%``: 1 - P_out / P_in of the 1-8 Hz band (where blinks
  live) over the blink segments, channels exg2..exg7;
- ``blink_fp_removed_%``: the same on the frontal channels exg0/exg1;
- ``jaw_removed_%``: over the jaw-clench segments on exg2/exg4;
- ``alpha_kept_%``: P_out / P_in of the 8-12 Hz Welch power in 67-72 s on exg6/exg7.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scipy import signal

from neuraflow.devices.openbci_text import OpenBCITextPlayback
from neuraflow.ops import asr, emg_detector, eog_regression, fit_asr, fit_eog_regression, run_offline
from neuraflow.testing import chunks_from_array

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "shared" / "data" / "openbci" / (
    "OpenBCI_GUI-v6-blinks-jawClench-alpha.txt"
)
SKIP_S = 3.0
BLINKS_S = ((4.0, 7.0), (13.0, 17.0), (76.0, 81.0))  # 86-89 s is a large all-channel artifact, not a blink
JAWS_S = ((8.0, 13.0), (82.0, 84.0))
BLINK_BAND = (1.0, 8.0)
ALPHA_S = (67.0, 72.0)
CALIBRATION_S = (30.0, 60.0)


def load(path: Path | str = DEFAULT_PATH) -> tuple[np.ndarray, object]:
    """High-passed, notched recording from ``SKIP_S`` on (volts, (8, n)) and its StreamInfo."""
    dev = OpenBCITextPlayback(path)
    dev.open()
    try:
        x, _, _ = dev._load_data()
        info = dev.info
    finally:
        dev.close()
    sf = info.sfreq
    y = signal.sosfilt(signal.butter(4, 1.0, "highpass", fs=sf, output="sos"), x, axis=1)
    for f0 in (60.0, 120.0):
        b, a = signal.iirnotch(f0, 30.0, fs=sf)
        y = signal.lfilter(b, a, y, axis=1)
    return y[:, int(SKIP_S * sf) :], info


def _online(spec, x: np.ndarray, info) -> np.ndarray:
    chunks = chunks_from_array(x.astype(np.float32), info, [25] * (x.shape[1] // 25) + [x.shape[1] % 25] * bool(
        x.shape[1] % 25))
    out = np.concatenate([c.data for c in run_offline(spec, chunks)], axis=1).astype(np.float64)
    full = np.full(x.shape, np.nan)  # ASR holds back its last samples (lookahead)
    full[:, : out.shape[1]] = out[:, : x.shape[1]]
    return full


def _power(x: np.ndarray, segments, rows, sf: float, band: tuple[float, float] | None = None) -> float:
    if band is not None:  # zero-phase band limit for the measure only (NaN tail kept out)
        n = int(np.isfinite(x).all(axis=0).sum())
        x = np.concatenate([signal.sosfiltfilt(signal.butter(4, band, "bandpass", fs=sf, output="sos"), x[:, :n]),
                            x[:, n:]], axis=1)
    cols = np.concatenate([np.arange(int((a - SKIP_S) * sf), int((b - SKIP_S) * sf)) for a, b in segments])
    return float(np.mean(x[np.ix_(rows, cols)] ** 2))


def _alpha(x: np.ndarray, rows, sf: float) -> float:
    a, b = (int((t - SKIP_S) * sf) for t in ALPHA_S)
    f, p = signal.welch(x[rows, a:b], fs=sf, nperseg=int(sf))
    return float(p[:, (f >= 8.0) & (f <= 12.0)].sum())


def figures(x: np.ndarray, y: np.ndarray, sf: float) -> dict[str, float]:
    """The four validation percentages of output ``y`` against input ``x`` (see module docstring)."""
    others, front, jaw, occ = [2, 3, 4, 5, 6, 7], [0, 1], [2, 4], [6, 7]
    return {
        "blink_removed_%": 100 * (1 - _power(y, BLINKS_S, others, sf, BLINK_BAND) / _power(x, BLINKS_S, others, sf,
                                                                                        BLINK_BAND)),
        "blink_fp_removed_%": 100 * (1 - _power(y, BLINKS_S, front, sf, BLINK_BAND) / _power(x, BLINKS_S, front, sf,
                                                                                           BLINK_BAND)),
        "jaw_removed_%": 100 * (1 - _power(y, JAWS_S, jaw, sf) / _power(x, JAWS_S, jaw, sf)),
        "alpha_kept_%": 100 * _alpha(y, occ, sf) / _alpha(x, occ, sf),
    }


def evaluate(path: Path | str = DEFAULT_PATH) -> dict[str, dict[str, float]]:
    """Run every method online on the recording; return ``{method: figures}``."""
    x, info = load(path)
    sf = info.sfreq
    a, b = (int((t - SKIP_S) * sf) for t in CALIBRATION_S)
    methods = {
        "eog_online": eog_regression(["exg0", "exg1"], calibration_s=30.0, fit_band=BLINK_BAND),
        "eog_offline_fit": eog_regression(["exg0", "exg1"], coef=fit_eog_regression(
            x[:, : int(30 * sf)], [0, 1], sfreq=sf, fit_band=BLINK_BAND)),
        "emg_suppress": emg_detector(action="suppress", ratio_threshold=0.6, line_freq=60.0),
        "asr_cutoff20": asr(fit_asr(x[:, a:b], sf, cutoff=20.0)),
        "asr_cutoff10": asr(fit_asr(x[:, a:b], sf, cutoff=10.0)),
    }
    return {name: figures(x, _online(spec, x, info), sf) for name, spec in methods.items()}


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    results = evaluate(args[0] if args else DEFAULT_PATH)
    keys = ("blink_removed_%", "blink_fp_removed_%", "jaw_removed_%", "alpha_kept_%")
    print(f"{'method':<16}" + "".join(f"{k:>20}" for k in keys))
    for name, fig in results.items():
        print(f"{name:<16}" + "".join(f"{fig[k]:>20.1f}" for k in keys))


if __name__ == "__main__":
    main()
