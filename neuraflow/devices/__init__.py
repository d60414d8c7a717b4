"""Acquisition devices: the :class:`Device` protocol and the built-in devices.

- :class:`Synthetic` -- deterministic synthetic EEG (tests, demos, load tests)
- :class:`FilePlayback` -- EDF/BDF/FIF recordings played back through MNE

Nothing here imports Ray; MNE is imported only when a file is read.
"""

from neuraflow.devices.base import Device, DeviceBase
from neuraflow.devices.playback import FilePlayback
from neuraflow.devices.synthetic import Synthetic

__all__ = ["Device", "DeviceBase", "FilePlayback", "Synthetic"]
