"""Print the generated JSON Schema block of docs/device-protocol.md (paste it between the
markers; tests/test_docs.py fails while the document and the code disagree)."""

import json

from device.protocol import frame_schemas


def render() -> str:
    parts = []
    for name, schema in frame_schemas().items():
        parts.append(f"#### `{name}`\n\n```json\n{json.dumps(schema, indent=2)}\n```\n")
    return "\n".join(parts)


if __name__ == "__main__":
    print(render())
