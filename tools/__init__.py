"""Device tools: the schemas the model sees, the tool sets per data type, and the path policy.

Every tool here executes on the user's device; the server only validates arguments and
forwards them through the device bridge (`nodes.bridge`).
"""

from tools.catalog import (
    DATA_TYPES,
    DEVICE_TOOLS,
    FILE_SYSTEM_TOOLS,
    DeviceTool,
    tools_for_data_types,
)
from tools.policy import PathPolicy, PolicyViolation

__all__ = [
    "DATA_TYPES",
    "DEVICE_TOOLS",
    "FILE_SYSTEM_TOOLS",
    "DeviceTool",
    "PathPolicy",
    "PolicyViolation",
    "tools_for_data_types",
]
