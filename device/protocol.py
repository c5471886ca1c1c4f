"""Device protocol v1: the JSON text frames of the device WebSocket, shared by both sides.

Frame names are the existing Electron client's. Every frame has a `type`; a frame that does
not parse gets an `error` frame back and the connection stays open.
"""

import base64
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, TypeAdapter

PROTOCOL_VERSION: Final = 1


def _storable(text: str) -> str:
    """Text the server can store as it is: no NUL, valid Unicode (no lone surrogate)."""
    if "\x00" in text:
        raise ValueError("a NUL character is not allowed")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("a lone surrogate is not valid Unicode") from None
    return text


#: A frame field the server stores or looks up by (ids, tokens, errors).
Text = Annotated[str, AfterValidator(_storable)]


class _Frame(BaseModel):
    model_config = ConfigDict(extra="ignore")


class RunContext(BaseModel):
    """Which run a call or event belongs to, so the client can attribute it."""

    run_id: str
    thread_id: str
    assistant_id: str


# ── device → server ───────────────────────────────────────────────────────────


class DeviceHello(_Frame):
    """First frame on a connection: who the device is and what it can run."""

    type: Literal["device_hello"]
    token: Text = Field(min_length=1)
    device_id: Text = Field(min_length=1, max_length=200)
    protocol: Literal[1] = 1
    tools: list[Text] = Field(default_factory=list)


class ToolResultHead(_Frame):
    """What names a `tool_result`: its type and the id of the call it answers (all the server
    reads of one too large to take)."""

    type: Literal["tool_result"]
    id: Text = Field(min_length=1, max_length=500)


class ToolResult(ToolResultHead):
    """The answer to one `tool_call`, by its id."""

    ok: StrictBool  # `"true"` is not an answer
    result: Any = None
    error: Text | None = None


DeviceFrame = Annotated[DeviceHello | ToolResult, Field(discriminator="type")]
DEVICE_FRAME: TypeAdapter[DeviceHello | ToolResult] = TypeAdapter(DeviceFrame)


# ── server → device ───────────────────────────────────────────────────────────


class HelloOk(_Frame):
    """The device is accepted; `pending` calls follow as `tool_call` frames."""

    type: Literal["hello_ok"] = "hello_ok"
    device_id: str
    pending: int


class ToolCallFrame(_Frame):
    """One device call. Delivery is at least once: answer a repeated id with the stored
    result, never by running the call again."""

    type: Literal["tool_call"] = "tool_call"
    id: str = Field(max_length=500)
    name: str
    args: dict[str, Any]
    run_context: RunContext


class RunProgress(_Frame):
    """A progress event of a run the device takes part in."""

    type: Literal["run_progress"] = "run_progress"
    run_context: RunContext
    event: str
    data: dict[str, Any] = Field(default_factory=dict)


class RunComplete(_Frame):
    """A run the device took part in has ended."""

    type: Literal["run_complete"] = "run_complete"
    run_context: RunContext
    status: str
    counts: dict[str, Any] = Field(default_factory=dict)


class ErrorFrame(_Frame):
    """A frame the server could not use; the connection stays open."""

    type: Literal["error"] = "error"
    code: str
    message: str


ServerFrame = Annotated[
    HelloOk | ToolCallFrame | RunProgress | RunComplete | ErrorFrame, Field(discriminator="type")
]
SERVER_FRAME: TypeAdapter[HelloOk | ToolCallFrame | RunProgress | RunComplete | ErrorFrame] = (
    TypeAdapter(ServerFrame)
)

# Error codes of `error` frames.
BAD_FRAME = "bad_frame"
UNAUTHORIZED = "unauthorized"
UNKNOWN_CALL = "unknown_call"
NOT_HELLO = "hello_required"
UNSUPPORTED_PROTOCOL = "unsupported_protocol"
#: The versions this side speaks; a hello naming another is refused (`UNSUPPORTED_PROTOCOL`,
#: close code `CLOSE_UNSUPPORTED`) with the versions in the message.
SUPPORTED_PROTOCOLS: Final = (PROTOCOL_VERSION,)

# Close codes the server ends a connection with.
CLOSE_UNAUTHORIZED = 4401  # the token is not valid: do not retry with it
CLOSE_REPLACED = 4000  # another connection of the same device took over
CLOSE_UNSUPPORTED = 4426  # the hello named a protocol version this server does not speak


# ── Device tokens ─────────────────────────────────────────────────────────────
# A device token names its device, so a device needs only its token to say `device_hello`:
# "rgd." + base64url(device_id) + "." + secret. The server keeps only a hash of it.

DEVICE_TOKEN_PREFIX = "rgd."


def make_device_token(device_id: str, secret: str) -> str:
    """The token `relaygraph devices add` prints."""
    encoded = base64.urlsafe_b64encode(device_id.encode()).decode().rstrip("=")
    return f"{DEVICE_TOKEN_PREFIX}{encoded}.{secret}"


def device_id_from_token(token: str) -> str | None:
    """The device a token was issued for, or None when it is not a device token."""
    if not token.startswith(DEVICE_TOKEN_PREFIX) or token.count(".") != 2:
        return None
    encoded = token.split(".")[1]
    try:
        raw = base64.b64decode(encoded + "=" * (-len(encoded) % 4), altchars=b"-_", validate=True)
        device_id = raw.decode()
    except (ValueError, UnicodeDecodeError):
        return None
    return device_id or None


FRAMES: tuple[type[BaseModel], ...] = (
    DeviceHello,
    ToolResult,
    HelloOk,
    ToolCallFrame,
    RunProgress,
    RunComplete,
    ErrorFrame,
)


def frame_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema of every frame, by frame type (docs/device-protocol.md shows them)."""
    schemas = {}
    for frame in FRAMES:
        schema = frame.model_json_schema()
        schemas[str(schema["properties"]["type"]["const"])] = schema
    return schemas
