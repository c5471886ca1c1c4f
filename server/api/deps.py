"""Dependencies of the routers: the services, the current user, JSON bodies."""

import json
import math
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Header, HTTPException, Request, Response, status
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from server.services import Services
from server.storage import accounts

MISSING_KEY = "Missing API key: send it as X-Api-Key or Authorization: Bearer <key>."
INVALID_KEY = "Invalid API key."


def services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(services)]


async def current_user(
    svc: ServicesDep,
    x_api_key: Annotated[str | None, Header()] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> str:
    """The user an API key belongs to. Device tokens are not API keys: they open only the
    device socket."""
    key = x_api_key
    if not key and authorization and authorization.lower().startswith("bearer "):
        key = authorization[7:].strip()
    if not key:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, MISSING_KEY)
    user = await accounts.user_for_key(svc.db, key)
    if user is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, INVALID_KEY)
    return user


CurrentUser = Annotated[str, Depends(current_user)]


def _not_strict_json(body: bytes) -> str | None:
    """Why a body is not strict JSON (NaN, Infinity, numbers out of range), or None; other
    syntax errors are left to FastAPI's own 422."""

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
        json.loads(body, parse_constant=refuse, parse_float=finite)
    except RecursionError:
        return "JSON nested too deep"
    except ValueError as exc:
        if isinstance(exc, json.JSONDecodeError):
            return None
        return str(exc)
    return None


class JSONBodyRoute(APIRoute):
    """Reads a request body as JSON whatever its content type (LangGraph Studio sends
    `text/plain`)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            if request.method in ("POST", "PUT", "PATCH"):
                body = await request.body()
                if problem := _not_strict_json(body):
                    return JSONResponse(
                        {"detail": [{"type": "json_invalid", "loc": ["body"], "msg": problem}]},
                        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
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


def checked_config(config: dict[str, Any] | None) -> dict[str, Any] | None:
    """A config whose `configurable` (when given) is an object, as the graphs need."""
    if config is not None and not isinstance(config.get("configurable", {}), dict):
        raise ValueError("config.configurable must be an object")
    return config


def not_found(kind: str, ident: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"{kind} {ident} not found.")
