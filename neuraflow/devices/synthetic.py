"""A deterministic synthetic EEG device: :class:`Synthetic`.

The signal is a pure function of ``(seed, channel, absolute sample index)``:
whatever the read pattern, sample ``n`` of channel ``c`` always has the same
value, and :meth:`Synthetic.expected` regenerates exactly what :meth:`Synthetic.read`
returned. This is what lets tests compare a pipeline's output with a one-shot
computation on the same samples.

Content, in volts:

- pink (1/f) background noise, ``background_rms_v`` RMS per channel;
- alpha bursts: a 10 Hz rhythm, amplitude-modulated (waxing and waning over a
  few seconds) and weighted towards occipital channels;
- line noise at ``line_freq`` and its second harmonic (when below Nyquist);
- optionally, blink artifacts: large positive frontal deflections (about
  150 uV at Fp1/Fp2) roughly every 5 s;
- optionally, markers: events ``"T1"``/``"T2"`` roughly every 4 s.

How it stays cheap: everything is computed per block of ``block_size`` samples
(about 8 s of signal), cached, and a read only copies a slice of the cached
block. The pink noise of block ``j`` comes from a generator seeded by
``(seed, j)`` and filtered with an FFT 1/f shaping filter; consecutive blocks are
cross-faded over ``block_size // 8`` samples with a constant-power (sine/cosine)
fade, so there is no discontinuity and the variance stays constant.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from typing import Any

import numpy as np
import scipy.fft

from neuraflow._validate import check_int, check_positive
from neuraflow.chunk import Chunk, Event, StreamInfo
from neuraflow.devices._montage import channel_names, region_weights
from neuraflow.devices._pacing import check_start_s, wait_due
from neuraflow.devices.base import DeviceBase
from neuraflow.errors import DeviceError, PipelineDefinitionError

_WHERE = "devices.Synthetic"

ALPHA_FREQ = 10.0
"""Frequency of the alpha rhythm, Hz."""
BLINK_AMPLITUDE_V = 150e-6
"""Peak amplitude of a blink at Fp1/Fp2, volts (scaled by 0.7-1.3 per blink)."""
BLINK_PERIOD_S = 5.0
"""Mean interval between blinks, seconds (one blink at a random time in each period)."""
MARKER_PERIOD_S = 4.0
"""Interval between markers, seconds (each jittered by up to +-0.5 s)."""
MARKER_DURATION_S = 3.0
"""Trial duration carried as the ``value`` of marker events, seconds."""
_MIN_BLOCK = 256
_MAX_BLOCK = 1 << 15
_CACHE_BLOCKS = 2


def _mix64(x: int) -> int:
    """splitmix64 finaliser: a cheap, well-mixed integer hash."""
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


def _hash01(seed: int, salt: int, k: int) -> float:
    """Deterministic uniform value in [0, 1) for (seed, salt, k)."""
    return _mix64(_mix64(_mix64(seed) ^ salt) ^ (k & 0xFFFFFFFFFFFFFFFF)) / 2.0**64


class Synthetic(DeviceBase):
    """Deterministic synthetic EEG: pink noise, alpha bursts, line noise, blinks, markers.

    Parameters
    ----------
    stream_id : str
        Name of the stream.
    n_channels : int
        Number of channels, >= 1. Names come from the 10-20/10-10 montage when
        ``n_channels <= 64`` (see :func:`channel_names`), else ``"EEG%03d"``.
    sfreq : float
        Sampling rate in Hz, > 0.
    chunk_size : int
        Samples per chunk, >= 1.
    seed : int
        Seed, >= 0. The signal is a pure function of ``(seed, channel, sample index)``.
    line_freq : float or None
        Power-line frequency in Hz (50 or 60), below Nyquist; ``None`` for no line noise.
        The second harmonic is added at a quarter of the amplitude when below Nyquist.
    line_amplitude_v : float
        Peak amplitude of the line-noise fundamental, volts (each channel is
        scaled by a fixed factor in [0.5, 1.5]).
    alpha_amplitude_v : float
        Peak amplitude of the 10 Hz alpha rhythm at occipital channels at the
        top of a burst, volts.
    background_rms_v : float
        RMS of the pink background noise of each channel, volts.
    blinks : bool
        Add blink artifacts (about 150 uV at Fp1/Fp2, fading towards the back)
        once in every 5 s period, at a deterministic time.
    markers : bool
        Produce events ``"T1"``/``"T2"`` (value 3.0, the trial duration in s)
        every 4 s +- 0.5 s, returned by :meth:`drain_events` once the chunk
        holding their sample was read.
    realtime : bool
        If True, chunk ``k`` becomes available at wall time
        ``start_s + (k + 1) * chunk_size / sfreq``. If False, every read returns
        the next chunk at once (an infinite stream as fast as it is read).
    start_s : float or None
        Device time of sample 0, seconds since the epoch; ``None`` for
        ``time.time()`` at the first :meth:`open`.
    fail_after_reads : int or None
        For fault-injection tests only: after this many chunks were returned
        since :meth:`open`, the next read raises
        ``DeviceError("synthetic failure injected")``, once per open (the chunk
        is not lost: it is returned by a read after the next open, unless
        ``realtime`` skipped it meanwhile).

    Attributes
    ----------
    info : StreamInfo
        Channel names, ``ch_types`` ``"eeg"``, units ``"V"``.
    block_size : int
        Samples per generated (cached) block.

    Raises
    ------
    PipelineDefinitionError
        If a parameter is invalid (the message names the parameter).

    Notes
    -----
    Each chunk carries ``meta["sample_index"]``, the absolute index of its first
    sample, and ``t0_s = start_s + sample_index / sfreq``. After a close/open
    cycle a realtime device resumes at the chunk due at that wall time (the
    chunks in between are lost, as with hardware); a non-realtime one resumes
    where it stopped.

    Examples
    --------
    >>> dev = Synthetic(n_channels=4, sfreq=250.0, chunk_size=25, realtime=False, start_s=0.0)
    >>> dev.open()
    >>> chunk = dev.read(0.0)
    >>> chunk.data.shape, chunk.t0_s, dict(chunk.meta)
    ((4, 25), 0.0, {'sample_index': 0})
    >>> bool((dev.expected(0, 25) == chunk.data).all())
    True
    """

    blocking = False

    def __init__(
        self,
        stream_id: str = "synth-0",
        *,
        n_channels: int = 8,
        sfreq: float = 250.0,
        chunk_size: int = 32,
        seed: int = 0,
        line_freq: float | None = 50.0,
        line_amplitude_v: float = 10e-6,
        alpha_amplitude_v: float = 20e-6,
        background_rms_v: float = 10e-6,
        blinks: bool = False,
        markers: bool = False,
        realtime: bool = True,
        start_s: float | None = None,
        fail_after_reads: int | None = None,
    ) -> None:
        self.n_channels = check_int(_WHERE, "n_channels", n_channels)
        self.sfreq = check_positive(_WHERE, "sfreq", sfreq)
        self.chunk_size = check_int(_WHERE, "chunk_size", chunk_size)
        self.seed = check_int(_WHERE, "seed", seed, minimum=0)
        nyquist = self.sfreq / 2.0
        if line_freq is not None:
            line_freq = check_positive(_WHERE, "line_freq", line_freq)
            if line_freq >= nyquist:
                raise PipelineDefinitionError(
                    f"{_WHERE}: line_freq={line_freq!r} must be below Nyquist ({nyquist} Hz at sfreq={self.sfreq})"
                    " or None for no line noise."
                )
        self.line_freq = line_freq
        if ALPHA_FREQ >= nyquist and alpha_amplitude_v:
            raise PipelineDefinitionError(
                f"{_WHERE}: sfreq={self.sfreq!r} is too low for the {ALPHA_FREQ} Hz alpha rhythm;"
                " use sfreq > 20 Hz or alpha_amplitude_v=0."
            )
        self.line_amplitude_v = check_positive(_WHERE, "line_amplitude_v", line_amplitude_v, allow_zero=True)
        self.alpha_amplitude_v = check_positive(_WHERE, "alpha_amplitude_v", alpha_amplitude_v, allow_zero=True)
        self.background_rms_v = check_positive(_WHERE, "background_rms_v", background_rms_v, allow_zero=True)
        for name, flag in (("blinks", blinks), ("markers", markers), ("realtime", realtime)):
            if not isinstance(flag, bool):
                raise PipelineDefinitionError(f"{_WHERE}: {name}={flag!r} must be True or False.")
        self.blinks = blinks
        self.markers = markers
        self.realtime = realtime
        self.start_s = check_start_s(_WHERE, start_s)
        if fail_after_reads is not None:
            check_int(_WHERE, "fail_after_reads", fail_after_reads, minimum=0)
        self.fail_after_reads = fail_after_reads

        names = channel_names(self.n_channels)
        self.info = StreamInfo(
            stream_id=stream_id,
            sfreq=self.sfreq,
            channels=names,
            ch_types=("eeg",) * self.n_channels,
            units=("V",) * self.n_channels,
            meta={"device": "synthetic", "seed": self.seed},
        )
        # ~1 s per block (a power of two in [256, 32768]); cross-fade over 1/8 of it. Short blocks keep
        # the cost of a new block (an FFT-shaped noise segment) small: with 8 s blocks one device
        # stalled a real-time tick by tens of ms every 8 s.
        self.block_size = int(min(_MAX_BLOCK, max(_MIN_BLOCK, 1 << math.ceil(math.log2(1.0 * self.sfreq)))))
        self._fade = self.block_size // 8
        # Block boundaries are shifted by a per-seed phase so that hundreds of devices
        # opened together do not all pay for a new block on the same tick.
        self._phase = int(_hash01(self.seed, 7, 0) * self.block_size)
        self._reset_runtime()

    # ------------------------------------------------------------------ state
    def _reset_runtime(self) -> None:
        self._t0: float | None = None  # device time of sample 0 once opened
        self._next_chunk = 0
        self._opened = False
        self._returned_since_open = 0
        self._failed_this_open = False
        self._events: list[Event] = []
        # (index, onset sample) of the next marker not yet emitted; onsets increase with k.
        self._marker_next = (0, self._marker_onset(0))
        self._static: dict[str, Any] | None = None
        self._noise: OrderedDict[int, np.ndarray] = OrderedDict()
        self._blocks: OrderedDict[int, np.ndarray] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        # Only configuration travels: caches are rebuilt and the copy starts closed.
        keep = (
            "n_channels", "sfreq", "chunk_size", "seed", "line_freq", "line_amplitude_v",
            "alpha_amplitude_v", "background_rms_v", "blinks", "markers", "realtime", "start_s",
            "fail_after_reads", "info", "block_size", "_fade", "_phase",
        )  # fmt: skip
        return {k: self.__dict__[k] for k in keep}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset_runtime()

    # --------------------------------------------------------- device protocol
    def open(self) -> None:
        """Start acquisition: fix the device clock and reset the failure injection."""
        if self._t0 is None:
            self._t0 = time.time() if self.start_s is None else self.start_s
        elif self.realtime:
            # Reconnect: resume at the chunk due now; those in between are lost.
            chunk_s = self.chunk_size / self.sfreq
            due_index = int(math.floor((time.time() - self._t0) / chunk_s)) - 1
            self._next_chunk = max(self._next_chunk, due_index)
        self._opened = True
        self._returned_since_open = 0
        self._failed_this_open = False

    def close(self) -> None:
        """Stop acquisition. Idempotent; :meth:`open` may be called again."""
        self._opened = False

    def read(self, timeout_s: float) -> Chunk | None:
        """Return the next ``chunk_size`` samples (volts), or ``None`` if not due within ``timeout_s`` s.

        The chunk has shape (n_channels, chunk_size). ``timeout_s`` bounds the wait
        (realtime only); a reader that fell behind gets one chunk per call, without waiting.

        Raises
        ------
        DeviceError
            If the device is not open, or on the failure injected by ``fail_after_reads``.
        """
        if not self._opened:
            raise DeviceError(f"{_WHERE} {self.info.stream_id!r}: read() before open().")
        if (
            self.fail_after_reads is not None
            and not self._failed_this_open
            and self._returned_since_open >= self.fail_after_reads
        ):
            self._failed_this_open = True
            raise DeviceError("synthetic failure injected")
        k = self._next_chunk
        now = wait_due(self._due_s(k) if self.realtime else None, timeout_s)
        if now is None:
            return None
        start = k * self.chunk_size
        data = self._generate(start, self.chunk_size)
        if self.markers:
            self._collect_markers(start, start + self.chunk_size)
        self._next_chunk = k + 1
        self._returned_since_open += 1
        return Chunk(
            data,
            self._t0 + start / self.sfreq,
            self.info,
            seq=k,
            recv_s=now,
            meta={"sample_index": start},
        )

    def drain_events(self) -> list[Event]:
        """Return and forget the marker events of the chunks read since the last call."""
        events, self._events = self._events, []
        return events

    def next_ready_s(self) -> float | None:
        """Wall-clock time the next chunk is due; ``0.0`` (always ready) when not realtime.

        ``None`` before the first :meth:`open`.
        """
        if self._t0 is None:
            return None
        if not self.realtime:
            return 0.0
        return self._due_s(self._next_chunk)

    def _due_s(self, k: int) -> float:
        return self._t0 + (k + 1) * self.chunk_size / self.sfreq

    # ----------------------------------------------------------- regeneration
    def sample_index_of(self, t0_s: float) -> int:
        """Absolute sample index of the sample at device time ``t0_s`` (after :meth:`open`).

        Parameters
        ----------
        t0_s : float
            Device time, seconds since the epoch (e.g. ``chunk.t0_s``).

        Returns
        -------
        index : int
            ``round((t0_s - start_s) * sfreq)``.
        """
        if self._t0 is None:
            raise DeviceError(f"{_WHERE} {self.info.stream_id!r}: the device clock starts at open().")
        return int(round((t0_s - self._t0) * self.sfreq))

    def expected(self, start_sample: int, n_samples: int) -> np.ndarray:
        """Regenerate the samples ``[start_sample, start_sample + n_samples)``.

        Parameters
        ----------
        start_sample : int
            Absolute index of the first sample, >= 0 (``chunk.meta["sample_index"]``).
        n_samples : int
            Number of samples, >= 0.

        Returns
        -------
        data : ndarray, shape (n_channels, n_samples), float32
            Volts; bit-identical to what :meth:`read` returned for those samples.
        """
        check_int(f"{_WHERE}.expected", "start_sample", int(start_sample), minimum=0)
        check_int(f"{_WHERE}.expected", "n_samples", int(n_samples), minimum=0)
        return self._generate(int(start_sample), int(n_samples))

    def expected_events(self, start_sample: int, n_samples: int) -> list[Event]:
        """Marker events whose sample lies in ``[start_sample, start_sample + n_samples)``.

        Same events as :meth:`drain_events` returns for those samples (needs
        ``markers=True`` and an opened device for the device times).
        """
        if not self.markers:
            return []
        return self._marker_events(int(start_sample), int(start_sample) + int(n_samples))

    # ------------------------------------------------------------- generation
    def _generate(self, start: int, n: int) -> np.ndarray:
        out = np.empty((self.n_channels, n), dtype=np.float32)
        b = self.block_size
        pos = 0
        while pos < n:
            j, offset = divmod(start + pos + self._phase, b)
            take = min(n - pos, b - offset)
            out[:, pos : pos + take] = self._block(j)[:, offset : offset + take]
            pos += take
        return out

    def _static_arrays(self) -> dict[str, Any]:
        if self._static is None:
            n, b, fade = self.n_channels, self.block_size, self._fade
            length = b + fade
            freqs = np.fft.rfftfreq(length, d=1.0 / self.sfreq)
            shape = np.zeros_like(freqs)
            shape[1:] = 1.0 / np.sqrt(freqs[1:])
            full_power = shape[0] ** 2 + 2.0 * np.sum(shape[1:] ** 2)
            if length % 2 == 0:  # the Nyquist bin is counted once
                full_power -= shape[-1] ** 2
            shape *= self.background_rms_v * math.sqrt(12.0) / math.sqrt(full_power / length)
            ramp = (np.arange(fade) + 0.5) / fade * (np.pi / 2.0)
            # Per-channel constants: prefix-stable (channel c is the same for any n_channels).
            rng = np.random.default_rng((self.seed, 0xA1FA))
            draws = rng.uniform(size=(max(n, 1), 4))[:n]
            alpha_w, blink_w = region_weights(self.info.channels)
            alpha_phase = (draws[:, 0] - 0.5) * 0.6 * np.pi
            line_gain = 0.5 + draws[:, 1]
            line_phase = draws[:, 2] * 2.0 * np.pi
            self._static = {
                "shape": shape.astype(np.float32),
                "fade_in": np.sin(ramp).astype(np.float32),
                "fade_out": np.cos(ramp).astype(np.float32),
                "alpha_c": self.alpha_amplitude_v * alpha_w * np.cos(alpha_phase),
                "alpha_s": self.alpha_amplitude_v * alpha_w * np.sin(alpha_phase),
                "line_c": self.line_amplitude_v * line_gain * np.cos(line_phase),
                "line_s": self.line_amplitude_v * line_gain * np.sin(line_phase),
                "line2_c": 0.25 * self.line_amplitude_v * line_gain * np.cos(2.0 * line_phase + 1.0),
                "line2_s": 0.25 * self.line_amplitude_v * line_gain * np.sin(2.0 * line_phase + 1.0),
                "blink_w": BLINK_AMPLITUDE_V * blink_w,
                "env_phase": (_hash01(self.seed, 1, 0) * 2 * np.pi, _hash01(self.seed, 2, 0) * 2 * np.pi),
            }
        return self._static

    def _pink(self, j: int) -> np.ndarray:
        """Filtered noise segment ``j`` (covers samples [j*B, j*B + B + fade))."""
        cached = self._noise.get(j)
        if cached is not None:
            self._noise.move_to_end(j)
            return cached
        static = self._static_arrays()
        length = self.block_size + self._fade
        # j + 1 so that the segment before block 0 (j = -1) has a valid seed.
        # Uniform white noise is 5x cheaper to draw than Gaussian; after the 1/f
        # filter each sample is a weighted sum of thousands of draws, hence
        # Gaussian anyway. Its mean (DC) is removed by the filter, its variance
        # (1/12) is folded into the filter gain.
        rng = np.random.default_rng((self.seed, 0x9137, j + 1))
        white = rng.random((self.n_channels, length), dtype=np.float32)
        spec = scipy.fft.rfft(white, axis=-1)
        spec *= static["shape"]
        seg = scipy.fft.irfft(spec, n=length, axis=-1).astype(np.float32, copy=False)
        self._noise[j] = seg
        if len(self._noise) > _CACHE_BLOCKS:
            self._noise.popitem(last=False)
        return seg

    def _block(self, j: int) -> np.ndarray:
        cached = self._blocks.get(j)
        if cached is not None:
            self._blocks.move_to_end(j)
            return cached
        static = self._static_arrays()
        b, fade = self.block_size, self._fade
        if self.background_rms_v > 0:
            prev, cur = self._pink(j - 1), self._pink(j)
            block = cur[:, :b].copy()
            block[:, :fade] = cur[:, :fade] * static["fade_in"] + prev[:, b:] * static["fade_out"]
        else:
            block = np.zeros((self.n_channels, b), dtype=np.float32)
        # Deterministic parts: block += gains (n_channels, n_rows) @ rows (n_rows, B),
        # one float32 matmul instead of an outer product per component.
        first = j * b - self._phase  # block j covers samples [first, first + b)
        t = np.arange(first, first + b, dtype=np.float64) / self.sfreq
        gains: list[np.ndarray] = []
        rows: list[np.ndarray] = []
        if self.alpha_amplitude_v > 0:
            ph1, ph2 = static["env_phase"]
            e1 = 0.5 * (1.0 + np.sin(2 * np.pi * 0.13 * t + ph1))
            e2 = 0.5 * (1.0 + np.sin(2 * np.pi * 0.047 * t + ph2))
            env = (e1 * (0.3 + 0.7 * e2)) ** 1.5
            theta = 2 * np.pi * ALPHA_FREQ * t
            gains += [static["alpha_c"], static["alpha_s"]]
            rows += [env * np.sin(theta), env * np.cos(theta)]
        if self.line_freq is not None and self.line_amplitude_v > 0:
            theta = 2 * np.pi * self.line_freq * t
            gains += [static["line_c"], static["line_s"]]
            rows += [np.sin(theta), np.cos(theta)]
            if 2 * self.line_freq < self.sfreq / 2:
                gains += [static["line2_c"], static["line2_s"]]
                rows += [np.sin(2 * theta), np.cos(2 * theta)]
        if self.blinks:
            gains.append(static["blink_w"])
            rows.append(self._blink_wave(first, first + b))
        if rows:
            gain_matrix = np.stack(gains, axis=1).astype(np.float32)
            block += gain_matrix @ np.stack(rows).astype(np.float32)
        self._blocks[j] = block
        if len(self._blocks) > _CACHE_BLOCKS:
            self._blocks.popitem(last=False)
        return block

    def _blink_onset(self, k: int) -> int:
        """Sample index of blink ``k`` (one at a random time in each period)."""
        return int((k + 0.1 + 0.7 * _hash01(self.seed, 3, k)) * BLINK_PERIOD_S * self.sfreq)

    def _blink_wave(self, start: int, stop: int) -> np.ndarray:
        """Unit-peak blink waveform summed over the blinks touching [start, stop)."""
        wave = np.zeros(stop - start)
        peak_s, support_s = 0.1, 0.8
        period = BLINK_PERIOD_S * self.sfreq
        first = max(0, int(math.floor((start - support_s * self.sfreq) / period)) - 1)
        last = int(math.ceil(stop / period)) + 1
        for k in range(first, last):
            onset = self._blink_onset(k)
            lo, hi = max(start, onset), min(stop, onset + int(support_s * self.sfreq))
            if lo >= hi:
                continue
            tau = (np.arange(lo, hi) - onset) / self.sfreq / peak_s
            gain = 0.7 + 0.6 * _hash01(self.seed, 4, k)
            wave[lo - start : hi - start] += gain * (tau * np.exp(1.0 - tau)) ** 2
        return wave

    def _marker_onset(self, k: int) -> int:
        """Sample index of marker ``k``: every 4 s, jittered by +-0.5 s (so increasing)."""
        return int(round(((k + 1) * MARKER_PERIOD_S + _hash01(self.seed, 5, k) - 0.5) * self.sfreq))

    def _marker_event(self, k: int, onset: int) -> Event:
        t0 = self._t0 if self._t0 is not None else (self.start_s or 0.0)
        label = "T1" if _hash01(self.seed, 6, k) < 0.5 else "T2"
        t_s = t0 + onset / self.sfreq
        return Event(self.info.stream_id, t_s, label, MARKER_DURATION_S, meta={"sample_index": onset})

    def _marker_events(self, start: int, stop: int) -> list[Event]:
        first = max(0, int(math.floor(start / (MARKER_PERIOD_S * self.sfreq))) - 2)
        events = []
        for k in range(first, int(math.ceil(stop / (MARKER_PERIOD_S * self.sfreq))) + 1):
            onset = self._marker_onset(k)
            if start <= onset < stop:
                events.append(self._marker_event(k, onset))
        return events

    def _collect_markers(self, start: int, stop: int) -> None:
        # Hot path: O(1) per read, walking forward from the last emitted marker.
        k, onset = self._marker_next
        while onset < stop:
            if onset >= start:  # markers skipped by a realtime reconnect are lost with their chunks
                self._events.append(self._marker_event(k, onset))
            k += 1
            onset = self._marker_onset(k)
        self._marker_next = (k, onset)

    def __repr__(self) -> str:
        return (
            f"Synthetic({self.info.stream_id!r}, n_channels={self.n_channels}, sfreq={self.sfreq}, "
            f"chunk_size={self.chunk_size}, seed={self.seed}, realtime={self.realtime})"
        )
