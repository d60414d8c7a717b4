"""OpenBCI boards over serial: :class:`OpenBCICyton` (Cyton, Cyton + Daisy).

- :mod:`~neuraflow.devices.openbci.protocol` -- packet framing, decoding, encoding (pure, no I/O)
- :mod:`~neuraflow.devices.openbci.cyton` -- the device (pyserial)
- :mod:`~neuraflow.devices.openbci.emulator` -- :class:`CytonEmulator`, a byte-exact Cyton on a
  pseudo-terminal for tests and demos (a test kit, like :mod:`neuraflow.testing`)
"""

from neuraflow.devices.openbci.cyton import CytonOptions, OpenBCICyton

__all__ = ["CytonOptions", "OpenBCICyton"]
