"""The channel montage of :class:`~neuraflow.devices.Synthetic`: names and where each channel sits.

Channel names follow the 10-10 system for up to 64 channels (``"EEG001"``... beyond),
and each name maps to an alpha (occipital) and blink (frontal) gain so the
synthetic signal looks right on a topography.
"""

from __future__ import annotations

import numpy as np

# The 64 channels of the 10-10 system used by 64-channel caps (BioSemi 64 /
# standard_1020 montage names), ordered so that any prefix is spread over the
# head: the first 8 are a common 8-channel layout, the first 21 the 10-20 set.
MONTAGE_CHANNELS: tuple[str, ...] = (
    # 8-channel layout (OpenBCI Cyton style)
    "Fp1", "Fp2", "C3", "C4", "P7", "P8", "O1", "O2",
    # rest of the 10-20 system (19 + Fpz, Oz)
    "F7", "F3", "Fz", "F4", "F8", "T7", "Cz", "T8", "P3", "Pz", "P4", "Oz", "Fpz",
    # 10-10 additions, a 32-channel cap first
    "AF3", "AF4", "FC5", "FC1", "FC2", "FC6", "CP5", "CP1", "CP2", "CP6", "PO3",
    "PO4",
    # the rest of the 64-channel 10-10 cap
    "AF7", "AFz", "AF8", "F5", "F1", "F2", "F6", "FT7", "FC3", "FCz", "FC4",
    "FT8", "C5", "C1", "C2", "C6", "TP7", "CP3", "CPz", "CP4", "TP8", "P9", "P5",
    "P1", "P2", "P6", "P10", "PO7", "POz", "PO8", "Iz",
)  # fmt: skip


def channel_names(n_channels: int) -> tuple[str, ...]:
    """Return the channel names :class:`Synthetic` uses for ``n_channels`` channels.

    Parameters
    ----------
    n_channels : int
        Number of channels, >= 1.

    Returns
    -------
    names : tuple of str, len n_channels
        The first ``n_channels`` of :data:`MONTAGE_CHANNELS` when ``n_channels <= 64``,
        else ``"EEG001"``, ``"EEG002"``, ...
    """
    if n_channels <= len(MONTAGE_CHANNELS):
        return MONTAGE_CHANNELS[:n_channels]
    return tuple(f"EEG{i + 1:03d}" for i in range(n_channels))


def region_weights(names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Alpha (occipital) and blink (frontal) gain of each channel, in [0, 1]."""
    n = len(names)
    if not names[0].startswith("EEG"):
        alpha = np.empty(n)
        blink = np.empty(n)
        for i, name in enumerate(names):
            key = name.upper()
            if key.startswith(("O", "PO", "IZ")):
                alpha[i], blink[i] = 1.0, 0.02
            elif key.startswith("P"):
                alpha[i], blink[i] = 0.6, 0.03
            elif key.startswith(("CP", "TP")):
                alpha[i], blink[i] = 0.3, 0.05
            elif key.startswith(("C", "T")):
                alpha[i], blink[i] = 0.15, 0.08
            elif key.startswith(("FC", "FT")):
                alpha[i], blink[i] = 0.1, 0.2
            elif key.startswith("FP"):
                alpha[i], blink[i] = 0.05, 1.0
            elif key.startswith("AF"):
                alpha[i], blink[i] = 0.05, 0.7
            else:  # F*
                alpha[i], blink[i] = 0.08, 0.4
        return alpha, blink
    # Generic channels: pretend channel i sits at fraction i / n from front to back.
    pos = np.arange(n) / max(n - 1, 1)
    return 0.05 + 0.95 * pos**2, np.exp(-pos / 0.08)
