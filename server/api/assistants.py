"""Assistants: an agent configuration is a graph id plus a `context`."""

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from server.api.deps import (
    ID_PATTERN,
    CurrentUser,
    JSONBodyRoute,
    Metadata,
    PathId,
    ServicesDep,
    checked_config,
    not_found,
)
from server.records import Assistant, Json
from server.run_config import stored_context
from server.services import Services
from server.storage import assistants, runs
from server.storage.assistants import AssistantOfAnotherUser

router = APIRouter(prefix="/assistants", tags=["assistants"], route_class=JSONBodyRoute)

UNKNOWN_GRAPH = "Unknown graph_id {graph_id!r}; this server has {graphs}."
ASSISTANT_EXISTS = "Assistant {assistant_id} already exists."


class AssistantCreate(BaseModel):
    """POST /assistants."""

    model_config = ConfigDict(extra="ignore")

    graph_id: str = Field(min_length=1)
    assistant_id: str | None = Field(default=None, pattern=ID_PATTERN)
    name: str | None = None
    description: str | None = None
    config: Annotated[dict[str, Any], AfterValidator(checked_config)] = Field(default_factory=dict)
    context: dict[str, Any] = Field(default_factory=dict)
    metadata: Metadata = Field(default_factory=dict)
    if_exists: Literal["raise", "do_nothing"] = "raise"


class AssistantPatch(BaseModel):
    """PATCH /assistants/{id}: omitted fields stay as they are."""

    model_config = ConfigDict(extra="ignore")

    graph_id: str | None = None
    name: str | None = None
    description: str | None = None
    config: Annotated[dict[str, Any] | None, AfterValidator(checked_config)] = None
    context: dict[str, Any] | None = None
    metadata: Metadata | None = None


class AssistantSearch(BaseModel):
    """POST /assistants/search."""

    model_config = ConfigDict(extra="ignore")

    graph_id: str | None = None
    metadata: Metadata | None = None
    limit: int = Field(default=10, ge=1, le=1000)
    offset: int = Field(default=0, ge=0)


def state_jsonschema(graph: Any) -> dict[str, Any]:
    """The graph's whole state (not only its output), as Studio shows a thread."""
    return TypeAdapter(graph.builder.state_schema).json_schema()


def default_assistant_id(user_id: str, graph_id: str) -> str:
    """Each user's default assistant of a graph (what passing a graph id as assistant means)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"relaygraph:{user_id}:{graph_id}"))


async def ensure_defaults(svc: Services, user_id: str) -> None:
    for graph_id in svc.graphs.ids():
        await assistants.create(
            svc.db,
            user_id=user_id,
            graph_id=graph_id,
            assistant_id=default_assistant_id(user_id, graph_id),
            name=graph_id,
            metadata={"created_by": "system"},
        )


async def resolve_assistant(svc: Services, user_id: str, assistant_id: str) -> Assistant:
    """An assistant by id, or the user's default assistant of a graph id; else 404."""
    if assistant_id in svc.graphs:
        await ensure_defaults(svc, user_id)
        assistant_id = default_assistant_id(user_id, assistant_id)
    found = await assistants.get(svc.db, user_id=user_id, assistant_id=assistant_id)
    if found is None:
        raise not_found("Assistant", assistant_id)
    return found


def check_graph_and_context(svc: Services, graph_id: str, context: dict[str, Any]) -> Json:
    """The context as stored (`run_config.stored_context`); 422 naming the field when the
    graph is unknown or the context does not validate."""
    if graph_id not in svc.graphs:
        raise RequestValidationError(
            [
                {
                    "loc": ("body", "graph_id"),
                    "type": "value_error",
                    "msg": UNKNOWN_GRAPH.format(
                        graph_id=graph_id, graphs=", ".join(svc.graphs.ids())
                    ),
                    "input": graph_id,
                }
            ]
        )
    try:
        return stored_context(context)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", "context", *e["loc"])} for e in exc.errors()]
        ) from exc


@router.post("")
async def create_assistant(body: AssistantCreate, user: CurrentUser, svc: ServicesDep) -> Json:
    """Create an assistant (a graph id plus its context)."""
    context = check_graph_and_context(svc, body.graph_id, body.context)
    try:
        assistant, created = await assistants.create(
            svc.db,
            user_id=user,
            graph_id=body.graph_id,
            assistant_id=body.assistant_id,
            name=body.name,
            description=body.description,
            config=body.config,
            context=context,
            metadata=body.metadata,
        )
    except AssistantOfAnotherUser:
        raise HTTPException(
            status.HTTP_409_CONFLICT, ASSISTANT_EXISTS.format(assistant_id=body.assistant_id)
        ) from None
    if not created and body.if_exists == "raise":
        raise HTTPException(
            status.HTTP_409_CONFLICT, ASSISTANT_EXISTS.format(assistant_id=body.assistant_id)
        )
    return assistant.api()


@router.post("/search")
async def search_assistants(
    body: AssistantSearch, user: CurrentUser, svc: ServicesDep
) -> list[Json]:
    """The user's assistants, the default one of every graph included."""
    await ensure_defaults(svc, user)
    found = await assistants.search(
        svc.db,
        user_id=user,
        graph_id=body.graph_id,
        metadata=body.metadata,
        limit=body.limit,
        offset=body.offset,
    )
    return [a.api() for a in found]


@router.get("/{assistant_id}")
async def get_assistant(assistant_id: PathId, user: CurrentUser, svc: ServicesDep) -> Json:
    return (await resolve_assistant(svc, user, assistant_id)).api()


@router.patch("/{assistant_id}")
async def update_assistant(
    assistant_id: PathId, body: AssistantPatch, user: CurrentUser, svc: ServicesDep
) -> Json:
    """Change an assistant; its version goes up by one."""
    current = await resolve_assistant(svc, user, assistant_id)
    changes = body.model_dump(exclude_none=True)
    context = check_graph_and_context(
        svc,
        body.graph_id or current.graph_id,
        body.context if body.context is not None else current.context,
    )
    if body.context is not None:
        changes["context"] = context
    updated = await assistants.update(
        svc.db, user_id=user, assistant_id=current.assistant_id, changes=changes
    )
    if updated is None:
        raise not_found("Assistant", assistant_id)
    return updated.api()


@router.delete("/{assistant_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_assistant(assistant_id: PathId, user: CurrentUser, svc: ServicesDep) -> Response:
    assistant = await resolve_assistant(svc, user, assistant_id)
    await assistants.delete(svc.db, user_id=user, assistant_id=assistant.assistant_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{assistant_id}/graph")
async def get_graph(
    assistant_id: PathId,
    user: CurrentUser,
    svc: ServicesDep,
    xray: Annotated[int | bool, Query()] = False,
) -> dict[str, Any]:
    """The graph's drawing (nodes and edges, conditional ones marked)."""
    assistant = await resolve_assistant(svc, user, assistant_id)
    drawing = svc.graphs[assistant.graph_id].get_graph(xray=xray).to_json()
    return dict(drawing)


@router.get("/{assistant_id}/runs")
async def assistant_runs(
    assistant_id: PathId,
    user: CurrentUser,
    svc: ServicesDep,
    status_filter: Annotated[str | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[Json]:
    """The assistant's run log, newest first: status, counts, errors and durations."""
    assistant = await resolve_assistant(svc, user, assistant_id)
    found = await runs.of_assistant(
        svc.db,
        user_id=user,
        assistant_id=assistant.assistant_id,
        status=status_filter,
        limit=limit,
        offset=offset,
    )
    return [r.api() for r in found]


@router.get("/{assistant_id}/schemas")
async def get_schemas(assistant_id: PathId, user: CurrentUser, svc: ServicesDep) -> dict[str, Any]:
    """JSON Schemas of the graph's input, output, state and context."""
    assistant = await resolve_assistant(svc, user, assistant_id)
    graph = svc.graphs[assistant.graph_id]
    return {
        "graph_id": assistant.graph_id,
        "input_schema": graph.get_input_jsonschema(),
        "output_schema": graph.get_output_jsonschema(),
        "state_schema": state_jsonschema(graph),
        "config_schema": graph.config_schema().model_json_schema(),
        "context_schema": graph.get_context_jsonschema(),
    }
