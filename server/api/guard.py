"""What every HTTP request passes before a route reads it, as an ASGI middleware:

- a body no larger than `Settings.max_body_bytes`: 413 from `Content-Length` before a byte
  is read, or as soon as a body sent without one passes the limit;
- an API key on every route but the public ones: 401 before the body is read; the user goes
  in the request's state for `deps.current_user`;
- a query string the storage can hold: 422 naming the parameter that holds a NUL.

Starlette and uvicorn put no limit on an HTTP body, hence the few lines here.
"""

from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

from fastapi import HTTPException, status
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.services import Services
from server.storage import accounts

#: Paths served without an API key: liveness, server information and the API's own docs.
PUBLIC_PATHS = frozenset(
    {"/ok", "/info", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
)
MISSING_KEY = "Missing API key: send it as X-Api-Key or Authorization: Bearer <key>."
INVALID_KEY = "Invalid API key."
BODY_TOO_LARGE = (
    "The request body is over the limit of {limit:,} bytes (RELAYGRAPH_MAX_BODY_BYTES)."
)
NUL_IN_QUERY = "Query parameters cannot hold a NUL character."


class RequestGuard:
    """Refuses what no route should read: an oversize body, a missing or unknown API key, a
    NUL in the query string (see the module's docstring)."""

    def __init__(self, app: ASGIApp, *, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if _declared_length(headers) > self.max_body:
            await _reply(scope, receive, send, 413, BODY_TOO_LARGE.format(limit=self.max_body))
            return
        if scope["path"] not in PUBLIC_PATHS:
            user, refusal = await _authenticate(scope["app"].state.services, headers)
            if user is None:
                await _reply(scope, receive, send, 401, refusal)
                return
            scope.setdefault("state", {})["user_id"] = user
        if (name := _nul_parameter(scope)) is not None:
            detail = [{"type": "value_error", "loc": ["query", name], "msg": NUL_IN_QUERY}]
            await _reply(scope, receive, send, 422, detail)
            return
        await self.app(scope, self._limited(receive), send)

    def _limited(self, receive: Receive) -> Callable[[], Awaitable[Message]]:
        """`receive`, refusing the body once it passes the limit (a body sent in chunks
        without a `Content-Length`); the route reading it answers 413."""
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise HTTPException(
                        status.HTTP_413_CONTENT_TOO_LARGE,
                        BODY_TOO_LARGE.format(limit=self.max_body),
                    )
            return message

        return limited


def _declared_length(headers: Headers) -> int:
    """The body's `Content-Length` (0 without one; uvicorn refuses one that is not a number)."""
    value = headers.get("content-length", "0")
    return int(value) if value.isdigit() else 0


async def _authenticate(svc: Services, headers: Headers) -> tuple[str | None, str]:
    """The user of the request's API key, or None and why not. Device tokens are not API
    keys: they open only the device socket."""
    key = headers.get("x-api-key")
    authorization = headers.get("authorization", "")
    if not key and authorization.lower().startswith("bearer "):
        key = authorization[7:].strip()
    if not key:
        return None, MISSING_KEY
    user = await accounts.user_for_key(svc.db, key)
    return (user, "") if user is not None else (None, INVALID_KEY)


def _nul_parameter(scope: Scope) -> str | None:
    """The name of a query parameter whose name or value holds a NUL, if any."""
    query = scope.get("query_string", b"").decode("latin-1")
    for name, value in parse_qsl(query, keep_blank_values=True):
        if "\x00" in name or "\x00" in value:
            return name.replace("\x00", "\\x00")
    return None


async def _reply(scope: Scope, receive: Receive, send: Send, code: int, detail: object) -> None:
    await JSONResponse({"detail": detail}, status_code=code)(scope, receive, send)
