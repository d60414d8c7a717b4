"""BLE EEG devices through bleak: :class:`Muse` (EEG, PPG, IMU; :func:`muse_devices`) and :class:`Ganglion`.

- :mod:`~neuraflow.devices.ble.decoders` -- GATT ids, commands, packet decoders (pure, no I/O)
- :mod:`~neuraflow.devices.ble.link` -- :class:`BleStreamDevice`: the asyncio loop thread,
  blocking ``read``, index clock, drop events, ``DeviceError`` on link loss
- :mod:`~neuraflow.devices.ble.muse` / :mod:`~neuraflow.devices.ble.ganglion` -- the devices
- :mod:`~neuraflow.devices.ble.fake_backend` -- :class:`FakeBackend`, a bleak backend with
  simulated Muse / Ganglion peripherals, for machines without Bluetooth (a test kit)

bleak is imported when a device opens, so building a pipeline does not need it.
"""

from neuraflow.devices.ble.ganglion import Ganglion
from neuraflow.devices.ble.link import BleStreamDevice
from neuraflow.devices.ble.muse import MUSE_STREAMS, Muse, muse_devices

__all__ = ["MUSE_STREAMS", "BleStreamDevice", "Ganglion", "Muse", "muse_devices"]
