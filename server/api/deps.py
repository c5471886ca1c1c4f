"""Dependencies of the routers: the services, the current user, JSON bodies."""

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Header, HTTPException, Request, Response, status
from fastapi.routing import APIRoute

from server.services import Services

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
    user = await svc.repo.user_for_key(key)
    if user is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, INVALID_KEY)
    return user


CurrentUser = Annotated[str, Depends(current_user)]


class JSONBodyRoute(APIRoute):
    """Reads a request body as JSON whatever its content type (LangGraph Studio sends
    `text/plain`)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            if request.method in ("POST", "PUT", "PATCH"):
                headers = [(k, v) for k, v in request.scope["headers"] if k != b"content-type"]
                headers.append((b"content-type", b"application/json"))
                request = Request({**request.scope, "headers": headers}, request.receive)
            return await handler(request)

        return route


def not_found(kind: str, ident: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"{kind} {ident} not found.")
