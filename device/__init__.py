"""The device side: tools executed against a real folder and a local SQLite entity database.

A boundary of its own because it is the user's computer in the architecture: `relaygraph run`
embeds it in-process, and the reference device of the protocol (`relaygraph device`,
`device/reference.py`) wraps the same executor behind a WebSocket.
"""

from device.local import DeviceDatabaseError, LocalDevice

__all__ = ["DeviceDatabaseError", "LocalDevice"]
