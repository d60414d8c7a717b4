"""Acquisition devices: the :class:`Device` protocol and the built-in devices.

- :class:`Synthetic` -- deterministic synthetic EEG (tests, demos, load tests)
- :class:`FilePlayback` -- EDF/BDF/FIF recordings played back through MNE
- :class:`OpenBCICyton` -- OpenBCI Cyton / Cyton + Daisy over serial (pyserial)
- :class:`LSLInlet` / :class:`LSLMarkerInlet` -- Lab Streaming Layer streams and markers (pylsl)
- :class:`XDFPlayback` / :func:`xdf_devices` -- XDF recordings, every stream with its clock offsets (pyxdf)
- :class:`OpenBCITextPlayback` -- OpenBCI GUI text recordings
- :class:`BrainFlowDevice` -- any BrainFlow board, synthetic and playback included (extra ``[brainflow]``)
- :class:`Muse` / :class:`Ganglion` -- Muse headbands and the OpenBCI Ganglion over BLE (bleak)
- :class:`OpenBCIWifi` -- a Cyton behind the OpenBCI WiFi Shield (HTTP API + TCP push)
- :class:`TcpFrameDevice` / :class:`FrameFormat` -- raw binary frames over TCP or UDP

Nothing here imports Ray; MNE is imported only when a file is read.
"""

from neuraflow.devices.base import Device, DeviceBase
from neuraflow.devices.brainflow import BrainFlowDevice
from neuraflow.devices.openbci import OpenBCICyton
from neuraflow.devices.openbci.wifi import OpenBCIWifi
from neuraflow.devices.ble import Ganglion, Muse
from neuraflow.devices.tcp import FrameFormat, TcpFrameDevice
from neuraflow.devices.lsl import LSLInlet, LSLMarkerInlet
from neuraflow.devices.openbci_text import OpenBCITextPlayback
from neuraflow.devices.playback import FilePlayback
from neuraflow.devices.synthetic import Synthetic
from neuraflow.devices.xdf import XDFPlayback, xdf_devices
from neuraflow.devices.service import DeviceManager
from neuraflow.devices.quality import signal_quality
from neuraflow.devices.impedance import measure_impedance
from neuraflow.devices.discovery import discover

__all__ = [
    "BrainFlowDevice",
    "Device",
    "DeviceBase",
    "DeviceManager",
    "FilePlayback",
    "FrameFormat",
    "Ganglion",
    "LSLInlet",
    "LSLMarkerInlet",
    "Muse",
    "OpenBCICyton",
    "OpenBCITextPlayback",
    "OpenBCIWifi",
    "Synthetic",
    "TcpFrameDevice",
    "XDFPlayback",
    "xdf_devices",
    "discover",
    "measure_impedance",
    "signal_quality",
]
