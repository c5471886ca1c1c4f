"""What the storage modules share in decoding rows."""

import json
from typing import Any

from server.records import Json


def loads(value: Any) -> Any:
    """A JSON column's value (stored as text)."""
    return json.loads(value) if isinstance(value, str) else value


def matches(values: Json, wanted: Json | None) -> bool:
    """Whether `values` holds every key of `wanted` with the same value (a metadata filter)."""
    return all(values.get(k) == v for k, v in (wanted or {}).items())
