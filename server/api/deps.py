"""Dependencies of the routers: the services, the current user, JSON bodies."""

import json
import math
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Path, Request, Response, status
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import AfterValidator

from server.services import Services


def services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(services)]


def current_user(request: Request) -> str:
    """The user the request's API key belongs to (`guard.RequestGuard` checked the key
    before the route read anything)."""
    return str(request.state.user_id)


CurrentUser = Annotated[str, Depends(current_user)]

#: How deep a request's JSON may nest (LangGraph's checkpoint serializer and the responses
#: refuse deeper values, so a stored one could never be served again).
MAX_JSON_DEPTH = 64
NUL_CHARACTER = "Text cannot hold a NUL character."
LONE_SURROGATE = "Text must be valid Unicode (a lone surrogate is not)."
TOO_DEEP = f"JSON nested deeper than {MAX_JSON_DEPTH} levels."
Loc = tuple[str | int, ...]


def body_problem(body: bytes) -> tuple[Loc, str] | None:
    """Where and why a body is not JSON the server can store and serve again: NaN,
    Infinity, numbers out of range, nesting past `MAX_JSON_DEPTH`, text with a NUL or a lone
    surrogate. Syntax errors are left to FastAPI's own 422."""

    def refuse(token: str) -> Any:
        raise ValueError(f"{token} is not JSON")

    def finite(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            raise ValueError(f"{text} is out of range")
        return value

    if not body:
        return None
    try:
        value = json.loads(body, parse_constant=refuse, parse_float=finite)
    except RecursionError:
        return (), TOO_DEEP
    except json.JSONDecodeError:
        return None
    except ValueError as exc:
        return (), str(exc)
    return _unstorable(value)


def _unstorable(value: Any) -> tuple[Loc, str] | None:
    """The first place in `value` that cannot be stored, walked without recursion."""
    stack: list[tuple[Loc, Any]] = [((), value)]
    while stack:
        loc, item = stack.pop()
        if len(loc) > MAX_JSON_DEPTH:
            return loc[:2], TOO_DEEP
        if isinstance(item, str):
            if problem := text_problem(item):
                return loc, problem
        elif isinstance(item, dict):
            for key, child in item.items():
                if problem := text_problem(key):
                    return (*loc, key.encode("utf-8", "backslashreplace").decode()), problem
                stack.append(((*loc, key), child))
        elif isinstance(item, list):
            stack.extend(((*loc, index), child) for index, child in enumerate(item))
    return None


def text_problem(text: str) -> str | None:
    """Why `text` cannot be stored (a NUL, a lone surrogate), or None."""
    if "\x00" in text:
        return NUL_CHARACTER
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return LONE_SURROGATE
    return None


class JSONBodyRoute(APIRoute):
    """Reads a request body as JSON whatever its content type (LangGraph Studio sends
    `text/plain`)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            if request.method in ("POST", "PUT", "PATCH"):
                body = await request.body()
                if problem := body_problem(body):
                    loc, msg = problem
                    detail = [{"type": "json_invalid", "loc": ["body", *loc], "msg": msg}]
                    return JSONResponse(
                        {"detail": detail}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT
                    )
                headers = [(k, v) for k, v in request.scope["headers"] if k != b"content-type"]
                headers.append((b"content-type", b"application/json"))

                async def replay() -> dict[str, Any]:
                    return {"type": "http.request", "body": body, "more_body": False}

                request = Request({**request.scope, "headers": headers}, replay)
            return await handler(request)

        return route


ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,199}$"
"""Ids a client may choose: they appear in paths, so no slashes, spaces or control characters."""
#: An id in a path: one that does not match `ID_PATTERN` is no id this server gave out (422
#: naming the parameter, never a lookup).
PathId = Annotated[str, Path(pattern=ID_PATTERN)]
#: The most a `metadata` or `config` object may hold, as JSON: each is served back in every
#: search of its resource.
MAX_OBJECT_BYTES = 64 * 1024
OBJECT_TOO_LARGE = f"Over {MAX_OBJECT_BYTES // 1024} KiB as JSON."


def bounded(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """`value`, if its JSON is at most `MAX_OBJECT_BYTES`."""
    if value is not None and len(json.dumps(value, ensure_ascii=False)) > MAX_OBJECT_BYTES:
        raise ValueError(OBJECT_TOO_LARGE)
    return value


Metadata = Annotated[dict[str, Any], AfterValidator(bounded)]


def checked_config(config: dict[str, Any] | None) -> dict[str, Any] | None:
    """A config whose `configurable` (when given) is an object, as the graphs need, within
    `MAX_OBJECT_BYTES`."""
    if config is not None and not isinstance(config.get("configurable", {}), dict):
        raise ValueError("config.configurable must be an object")
    return bounded(config)


def not_found(kind: str, ident: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"{kind} {ident} not found.")
