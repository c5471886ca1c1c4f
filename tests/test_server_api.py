"""The HTTP API of `relaygraph serve`, through the official `langgraph-sdk` and raw HTTP.

One real server process serves the whole module, over a SQLite file: the API logic does not
depend on the storage (the end-to-end tests cover Postgres). Two users, alice and bob, have
an API key each; alice also has a device token, which opens the device socket only. No
device ever connects: an agentic-loop run completes without one (the offline planner splits
the task on ";" and " then ", and its steps call no tools), while a local-agent run whose
assistant is bound to a device parks (`interrupted`) until it is cancelled.

"""

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient

from harness.processes import ServerProcess

pytestmark = pytest.mark.slow

GRAPHS = {"local_agent", "agentic_loop", "triage", "processing"}
CALL_TIMEOUT = 30.0  # seconds for one HTTP call
WAIT = 60.0  # seconds for a run to end or park
POLL = 0.05
FINAL = {"success", "partial", "error", "cancelled"}
OFFLINE_DEVICE = "phone-in-a-drawer"  # assistants are bound to it; it never connects
TWO_STEPS = "list the notes; then summarise them"
TWO_STEPS_PLAN = ["list the notes", "summarise them"]
CONTEXT = {
    "directory_paths": ["/home/me/notes"],
    "data_types": ["tasks", "notes"],
    "file_extensions": [".md"],
    "prompt_template": "Be terse.",
    "device_id": "laptop",
}
LOCAL_AGENT_NODES = {"begin", "triage", "plan", "processing", "next_wave", "finalize"}
LOCAL_AGENT_XRAY_NODES = {
    "begin",
    "plan",
    "next_wave",
    "finalize",
    "triage:scan_device",
    "triage:group_files",
    "processing:read_parts",
    "processing:find_candidates",
    "processing:call_model",
    "processing:execute_tools",
    "processing:record_pass",
    "processing:record_outcome",
}
RACE_TRIALS, RACE_REQUESTS = 10, 8


@dataclass(frozen=True)
class Server:
    url: str
    alice_key: str
    bob_key: str
    alice_device_token: str


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One `relaygraph serve` over a SQLite file for the module; keys made by the CLI."""
    workdir = tmp_path_factory.mktemp("server-api")
    process = ServerProcess(database_url=str(workdir / "relaygraph.db"), workdir=workdir)
    keys = Server(
        url=process.url,
        alice_key=process.api_key("alice"),
        bob_key=process.api_key("bob"),
        alice_device_token=process.device_token("alice", "laptop"),
    )
    process.start()
    try:
        yield keys
    finally:
        process.stop()


def sdk(server: Server, key: str) -> LangGraphClient:
    return get_client(url=server.url, api_key=key, timeout=CALL_TIMEOUT)


@pytest.fixture
async def alice(server: Server) -> AsyncIterator[LangGraphClient]:
    async with sdk(server, server.alice_key) as client:
        yield client


@pytest.fixture
async def bob(server: Server) -> AsyncIterator[LangGraphClient]:
    async with sdk(server, server.bob_key) as client:
        yield client


@pytest.fixture
async def http(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    """Raw HTTP, without credentials."""
    async with httpx.AsyncClient(base_url=server.url, timeout=CALL_TIMEOUT) as client:
        yield client


# ── helpers ───────────────────────────────────────────────────────────────────


def unique() -> str:
    return uuid.uuid4().hex


def ids(items: list[dict[str, Any]], key: str = "assistant_id") -> set[str]:
    return {item[key] for item in items}


def node_ids(drawing: Mapping[str, Any]) -> set[str]:
    return {str(node["id"]) for node in drawing["nodes"]}


async def statuses(calls: Mapping[str, Awaitable[Any]]) -> dict[str, int | str]:
    """Each call's HTTP error status, or "ok" when it succeeded (every call is awaited)."""
    found: dict[str, int | str] = {}
    for name, call in calls.items():
        try:
            await call
        except httpx.HTTPStatusError as exc:
            found[name] = exc.response.status_code
        else:
            found[name] = "ok"
    return found


async def http_error(call: Awaitable[Any]) -> httpx.HTTPStatusError:
    """The HTTP error the SDK raised for `call`; the test fails if it succeeded."""
    with pytest.raises(httpx.HTTPStatusError) as caught:
        await call
    return caught.value


def detail(error: httpx.HTTPStatusError) -> Any:
    return error.response.json()["detail"]


def invalid_fields(response: httpx.Response) -> set[str]:
    """The fields a 422 answer names, as dotted locations ("body.context.data_types")."""
    return {".".join(str(part) for part in e["loc"]) for e in response.json()["detail"]}


async def new_thread(client: LangGraphClient, **metadata: Any) -> str:
    return str((await client.threads.create(metadata=metadata or None))["thread_id"])


async def until_status(
    client: LangGraphClient, thread_id: str, run_id: str, status: str
) -> dict[str, Any]:
    """The run once it has `status`; fails if it ends otherwise or takes over WAIT."""
    async with asyncio.timeout(WAIT):
        while (run := await client.runs.get(thread_id, run_id))["status"] != status:
            assert run["status"] not in FINAL, f"the run ended {run['status']}: {run['error']}"
            await asyncio.sleep(POLL)
    return dict(run)


async def finished_loop_run(client: LangGraphClient) -> tuple[str, dict[str, Any]]:
    """A new thread with one finished two-step agentic-loop run: (thread id, the run)."""
    thread_id = await new_thread(client)
    run = await client.runs.create(thread_id, "agentic_loop", input={"task": TWO_STEPS})
    async with asyncio.timeout(WAIT):
        await client.runs.join(thread_id, run["run_id"])
    return thread_id, dict(await client.runs.get(thread_id, run["run_id"]))


async def offline_agent(client: LangGraphClient, folder: Path) -> str:
    """A local-agent assistant bound to a device that is not connected."""
    assistant = await client.assistants.create(
        graph_id="local_agent",
        context={"directory_paths": [str(folder)], "device_id": OFFLINE_DEVICE},
    )
    return str(assistant["assistant_id"])


async def parked_run(client: LangGraphClient, folder: Path) -> tuple[str, dict[str, Any]]:
    """A new thread whose local-agent run waits for its offline device: (thread id, run)."""
    thread_id = await new_thread(client)
    run = await client.runs.create(thread_id, await offline_agent(client, folder), input={})
    return thread_id, await until_status(client, thread_id, run["run_id"], "interrupted")


async def cancel_once_parked(client: LangGraphClient, thread_id: str) -> None:
    """Cancel the thread's local-agent runs, each once it has parked. (Cancelling a run while
    it executes can leave the SQLite checkpointer's connection inside a write transaction,
    which locks the database for every later request: a production bug.)"""
    for run in await client.runs.list(thread_id, limit=100):
        await until_status(client, thread_id, run["run_id"], "interrupted")
        await client.runs.cancel(thread_id, run["run_id"], wait=True)


# ── system ────────────────────────────────────────────────────────────────────


async def test_ok_answers_without_a_key(http: httpx.AsyncClient) -> None:
    response = await http.get("/ok")
    assert response.status_code == 200
    assert response.json() == {"ok": True}


async def test_info_lists_the_four_graphs(http: httpx.AsyncClient, server: Server) -> None:
    response = await http.get("/info", headers={"X-Api-Key": server.alice_key})
    assert response.status_code == 200
    info = response.json()
    assert set(info["graphs"]) == GRAPHS
    assert info["storage"] == "sqlite"


async def test_openapi_docs_and_schema_list_the_routes(http: httpx.AsyncClient) -> None:
    docs = await http.get("/docs")
    assert docs.status_code == 200
    assert docs.headers["content-type"].startswith("text/html")
    paths = (await http.get("/openapi.json")).json()["paths"]
    assert {
        "/ok",
        "/info",
        "/assistants",
        "/assistants/search",
        "/assistants/{assistant_id}",
        "/assistants/{assistant_id}/graph",
        "/assistants/{assistant_id}/schemas",
        "/threads",
        "/threads/search",
        "/threads/{thread_id}",
        "/threads/{thread_id}/state",
        "/threads/{thread_id}/history",
        "/threads/{thread_id}/runs",
        "/threads/{thread_id}/runs/wait",
        "/threads/{thread_id}/runs/stream",
        "/threads/{thread_id}/runs/{run_id}",
        "/threads/{thread_id}/runs/{run_id}/join",
        "/threads/{thread_id}/runs/{run_id}/cancel",
    } <= set(paths)
    assert set(paths["/assistants/{assistant_id}"]) == {"get", "patch", "delete"}


# ── assistants ────────────────────────────────────────────────────────────────


async def test_assistant_create_stores_graph_and_context_and_get_returns_it(
    alice: LangGraphClient,
) -> None:
    created = await alice.assistants.create(
        graph_id="agentic_loop", context=CONTEXT, metadata={"team": "notes"}, name="Notes loop"
    )
    assert created["graph_id"] == "agentic_loop"
    assert created["context"] == CONTEXT
    assert created["metadata"] == {"team": "notes"}
    assert (created["name"], created["version"]) == ("Notes loop", 1)
    assert await alice.assistants.get(created["assistant_id"]) == created


async def test_assistant_create_with_an_existing_id_honours_if_exists(
    alice: LangGraphClient,
) -> None:
    created = await alice.assistants.create(graph_id="triage", assistant_id=str(uuid.uuid4()))
    again = await alice.assistants.create(
        graph_id="triage", assistant_id=created["assistant_id"], if_exists="do_nothing"
    )
    assert again == created
    error = await http_error(
        alice.assistants.create(graph_id="triage", assistant_id=created["assistant_id"])
    )
    assert error.response.status_code == 409
    assert detail(error) == f"Assistant {created['assistant_id']} already exists."


async def test_assistant_update_raises_the_version_and_changes_fields(
    alice: LangGraphClient,
) -> None:
    created = await alice.assistants.create(graph_id="agentic_loop", context=CONTEXT, name="old")
    context = {**CONTEXT, "data_types": ["projects"], "prompt_template": "Be thorough."}
    updated = await alice.assistants.update(created["assistant_id"], context=context, name="new")
    assert updated["version"] == created["version"] + 1
    assert (updated["name"], updated["context"]) == ("new", context)
    assert updated["graph_id"] == "agentic_loop"
    assert await alice.assistants.get(created["assistant_id"]) == updated


async def test_assistant_update_merges_metadata_like_the_langgraph_server(
    alice: LangGraphClient,
) -> None:
    created = await alice.assistants.create(
        graph_id="agentic_loop", metadata={"team": "notes", "tier": "free"}
    )
    updated = await alice.assistants.update(created["assistant_id"], metadata={"tier": "pro"})
    assert updated["metadata"] == {"team": "notes", "tier": "pro"}


async def test_assistant_search_by_graph_id_and_metadata_includes_the_defaults(
    alice: LangGraphClient,
) -> None:
    tag = unique()
    mine = await alice.assistants.create(graph_id="triage", metadata={"tag": tag})
    await alice.assistants.create(graph_id="processing", metadata={"tag": "other"})

    by_metadata = await alice.assistants.search(metadata={"tag": tag})
    assert ids(by_metadata) == {mine["assistant_id"]}

    triage = await alice.assistants.search(graph_id="triage", limit=1000)
    assert {a["graph_id"] for a in triage} == {"triage"}
    assert mine["assistant_id"] in ids(triage)

    defaults = await alice.assistants.search(metadata={"created_by": "system"}, limit=1000)
    assert sorted(a["graph_id"] for a in defaults) == sorted(GRAPHS)
    assert (await alice.assistants.get("triage"))["assistant_id"] in ids(defaults)


async def test_get_graph_draws_local_agent_and_xray_opens_its_subgraphs(
    alice: LangGraphClient,
) -> None:
    plain = await alice.assistants.get_graph("local_agent")
    assert node_ids(plain) - {"__start__", "__end__"} == LOCAL_AGENT_NODES
    xray = await alice.assistants.get_graph("local_agent", xray=True)
    assert node_ids(xray) >= LOCAL_AGENT_XRAY_NODES
    assert {"triage", "processing"}.isdisjoint(node_ids(xray))


async def test_get_schemas_has_the_context_schema(alice: LangGraphClient) -> None:
    assistant = await alice.assistants.create(graph_id="agentic_loop", context=CONTEXT)
    schemas = await alice.assistants.get_schemas(assistant["assistant_id"])
    assert schemas["graph_id"] == "agentic_loop"
    assert set(CONTEXT) <= set(schemas["context_schema"]["properties"])
    assert schemas["context_schema"]["properties"]["directory_paths"]["type"] == "array"
    assert "task" in schemas["input_schema"]["properties"]
    assert "outcome" in schemas["output_schema"]["properties"]


async def test_get_schemas_state_schema_covers_the_whole_state(alice: LangGraphClient) -> None:
    schemas = await alice.assistants.get_schemas("agentic_loop")
    assert {"task", "plan", "steps", "outcome"} <= set(schemas["state_schema"]["properties"])


async def test_deleted_assistant_is_404(alice: LangGraphClient) -> None:
    created = await alice.assistants.create(graph_id="agentic_loop")
    await alice.assistants.delete(created["assistant_id"])
    found = await statuses(
        {
            "get": alice.assistants.get(created["assistant_id"]),
            "delete again": alice.assistants.delete(created["assistant_id"]),
        }
    )
    assert found == {"get": 404, "delete again": 404}
    assert created["assistant_id"] not in ids(await alice.assistants.search(limit=1000))


# ── threads ───────────────────────────────────────────────────────────────────


async def test_thread_create_get_and_if_exists(alice: LangGraphClient) -> None:
    thread = await alice.threads.create(metadata={"purpose": "api-test"})
    assert (thread["status"], thread["metadata"]) == ("idle", {"purpose": "api-test"})
    fetched = await alice.threads.get(thread["thread_id"])
    assert (fetched["thread_id"], fetched["metadata"]) == (thread["thread_id"], thread["metadata"])

    same = await alice.threads.create(
        thread_id=thread["thread_id"], metadata={"purpose": "other"}, if_exists="do_nothing"
    )
    assert same["metadata"] == {"purpose": "api-test"}
    error = await http_error(alice.threads.create(thread_id=thread["thread_id"]))
    assert error.response.status_code == 409
    assert detail(error) == f"Thread {thread['thread_id']} already exists."


async def test_thread_state_is_empty_before_any_run(alice: LangGraphClient) -> None:
    thread_id = await new_thread(alice)
    state = await alice.threads.get_state(thread_id)
    assert state["values"] == {}
    assert (state["next"], state["interrupts"], state["checkpoint"]) == ([], [], None)
    assert await alice.threads.get_history(thread_id) == []


async def test_thread_search_by_metadata(alice: LangGraphClient) -> None:
    tag = unique()
    first = await new_thread(alice, tag=tag, n=1)
    second = await new_thread(alice, tag=tag, n=2)
    await new_thread(alice, tag="other")
    assert ids(await alice.threads.search(metadata={"tag": tag}), "thread_id") == {first, second}
    found = await alice.threads.search(metadata={"tag": tag, "n": 2})
    assert [t["thread_id"] for t in found] == [second]


async def test_thread_history_after_a_run_has_checkpoints_newest_first(
    alice: LangGraphClient,
) -> None:
    thread_id, _ = await finished_loop_run(alice)
    history = await alice.threads.get_history(thread_id, limit=1000)
    assert len(history) >= 1
    assert {s["checkpoint"]["thread_id"] for s in history} == {thread_id}
    assert history[0]["values"]["outcome"]["status"] == "completed"
    state = await alice.threads.get_state(thread_id)
    assert state["checkpoint"]["checkpoint_id"] == history[0]["checkpoint"]["checkpoint_id"]
    thread = await alice.threads.get(thread_id)
    assert thread["metadata"]["graph_id"] == "agentic_loop"
    assert thread["values"]["plan"] == TWO_STEPS_PLAN


async def test_deleted_thread_is_404_and_its_checkpoints_are_gone(
    alice: LangGraphClient,
) -> None:
    thread_id, run = await finished_loop_run(alice)
    await alice.threads.delete(thread_id)
    found = await statuses(
        {
            "get": alice.threads.get(thread_id),
            "state": alice.threads.get_state(thread_id),
            "history": alice.threads.get_history(thread_id),
            "run": alice.runs.get(thread_id, run["run_id"]),
            "delete again": alice.threads.delete(thread_id),
        }
    )
    assert found == dict.fromkeys(found, 404)
    await alice.threads.create(thread_id=thread_id)  # the same id, new: nothing carries over
    assert await alice.threads.get_history(thread_id) == []
    assert await alice.runs.list(thread_id) == []


async def test_thread_with_a_parked_run_cannot_be_deleted(
    alice: LangGraphClient, workspace: Path
) -> None:
    thread_id, run = await parked_run(alice, workspace)
    error = await http_error(alice.threads.delete(thread_id))
    assert error.response.status_code == 409
    assert "has an active run" in detail(error)
    await alice.runs.cancel(thread_id, run["run_id"], wait=True)
    await alice.threads.delete(thread_id)
    assert (await statuses({"get": alice.threads.get(thread_id)})) == {"get": 404}


# ── runs ──────────────────────────────────────────────────────────────────────


async def test_background_run_joins_with_a_completed_outcome(alice: LangGraphClient) -> None:
    thread_id = await new_thread(alice)
    run = await alice.runs.create(thread_id, "agentic_loop", input={"task": TWO_STEPS})
    assert (run["thread_id"], run["status"]) == (thread_id, "pending")
    async with asyncio.timeout(WAIT):
        values = await alice.runs.join(thread_id, run["run_id"])
    assert values["plan"] == TWO_STEPS_PLAN
    assert values["outcome"]["status"] == "completed"
    assert values["outcome"]["completed"] == 2


async def test_run_wait_returns_the_final_values(alice: LangGraphClient) -> None:
    thread_id = await new_thread(alice)
    async with asyncio.timeout(WAIT):
        values = await alice.runs.wait(thread_id, "agentic_loop", input={"task": "a then b then c"})
    assert values["outcome"]["status"] == "completed"
    assert [s["description"] for s in values["outcome"]["steps"]] == ["a", "b", "c"]


async def test_run_get_and_list_show_the_finished_run_as_success(alice: LangGraphClient) -> None:
    thread_id, run = await finished_loop_run(alice)
    assert run["status"] == "success"
    assert run["counts"] == {"total": 2, "completed": 2, "adapted": 0, "failed": 0}
    listed = await alice.runs.list(thread_id)
    assert [(r["run_id"], r["status"]) for r in listed] == [(run["run_id"], "success")]
    assert (await alice.threads.get(thread_id))["status"] == "idle"


async def test_run_stream_yields_metadata_values_updates_and_progress_in_order(
    alice: LangGraphClient,
) -> None:
    thread_id = await new_thread(alice)
    parts = []
    async with asyncio.timeout(WAIT):
        async for part in alice.runs.stream(
            thread_id,
            "agentic_loop",
            input={"task": TWO_STEPS},
            stream_mode=["values", "updates", "custom"],
        ):
            parts.append(part)
    events = [part.event for part in parts]
    assert events[0] == "metadata"
    assert set(events) == {"metadata", "values", "updates", "custom"}
    progress = [part.data["event"] for part in parts if part.event == "custom"]
    assert progress == ["plan_ready", "step_complete", "step_complete", "task_complete"]
    plan_ready = next(part.data["data"] for part in parts if part.event == "custom")
    assert plan_ready["steps"] == TWO_STEPS_PLAN
    nodes = [node for part in parts if part.event == "updates" for node in part.data]
    assert (nodes[0], nodes[-1]) == ("plan", "summarize")
    last_values = [part.data for part in parts if part.event == "values"][-1]
    assert last_values["outcome"]["status"] == "completed"
    run = await alice.runs.get(thread_id, parts[0].data["run_id"])
    assert run["status"] == "success"


async def test_run_stream_sends_only_the_modes_asked_for(alice: LangGraphClient) -> None:
    thread_id = await new_thread(alice)
    async with asyncio.timeout(WAIT):
        events = [
            part.event
            async for part in alice.runs.stream(
                thread_id, "agentic_loop", input={"task": TWO_STEPS}, stream_mode="custom"
            )
        ]
    assert events == ["metadata", "custom", "custom", "custom", "custom"]


async def test_cancel_of_a_parked_run_frees_its_thread(
    alice: LangGraphClient, workspace: Path
) -> None:
    thread_id, run = await parked_run(alice, workspace)
    assert run["device_id"] == OFFLINE_DEVICE
    assert (await alice.threads.get(thread_id))["status"] == "interrupted"
    state = await alice.threads.get_state(thread_id)
    assert state["interrupts"]
    assert state["next"] == ["triage"]

    cancelled = await alice.runs.cancel(thread_id, run["run_id"], wait=True)
    assert cancelled["status"] == "cancelled"
    assert (await alice.runs.get(thread_id, run["run_id"]))["status"] == "cancelled"
    assert (await alice.threads.get(thread_id))["status"] == "idle"

    again = await alice.runs.create(thread_id, run["assistant_id"], input={})
    await until_status(alice, thread_id, again["run_id"], "interrupted")
    await alice.runs.cancel(thread_id, again["run_id"])
    await until_status(alice, thread_id, again["run_id"], "cancelled")


async def test_concurrent_run_creation_admits_one_active_run_per_thread(
    alice: LangGraphClient, workspace: Path
) -> None:
    assistant_id = await offline_agent(alice, workspace)
    for _ in range(RACE_TRIALS):
        thread_id = await new_thread(alice)
        results = await asyncio.gather(
            *(alice.runs.create(thread_id, assistant_id, input={}) for _ in range(RACE_REQUESTS)),
            return_exceptions=True,
        )
        try:
            accepted = [r for r in results if isinstance(r, dict)]
            conflicts = [
                r
                for r in results
                if isinstance(r, httpx.HTTPStatusError) and r.response.status_code == 409
            ]
            assert (len(accepted), len(conflicts)) == (1, RACE_REQUESTS - 1)
        finally:
            await cancel_once_parked(alice, thread_id)


async def test_second_run_on_a_thread_reports_only_its_own_steps(
    alice: LangGraphClient,
) -> None:
    thread_id = await new_thread(alice)
    async with asyncio.timeout(WAIT):
        await alice.runs.wait(thread_id, "agentic_loop", input={"task": TWO_STEPS})
        values = await alice.runs.wait(thread_id, "agentic_loop", input={"task": "x then y"})
    outcome = values["outcome"]
    assert [s["description"] for s in outcome["steps"]] == ["x", "y"]
    assert (outcome["total"], outcome["completed"]) == (2, 2)


# ── resume and conflicts ──────────────────────────────────────────────────────


async def test_resume_of_a_thread_with_nothing_pending_is_409(alice: LangGraphClient) -> None:
    fresh = await new_thread(alice)
    finished, _ = await finished_loop_run(alice)
    for thread_id in (fresh, finished):
        error = await http_error(
            alice.runs.create(thread_id, "agentic_loop", command={"resume": "go on"})
        )
        assert error.response.status_code == 409
        assert detail(error) == f"Thread {thread_id} has nothing pending to resume."
    assert await alice.runs.list(fresh) == []
    assert len(await alice.runs.list(finished)) == 1


async def test_second_run_on_a_thread_with_a_parked_run_is_409(
    alice: LangGraphClient, workspace: Path
) -> None:
    thread_id, run = await parked_run(alice, workspace)
    attempts = {
        "create": alice.runs.create(thread_id, run["assistant_id"], input={}),
        "wait": alice.runs.wait(thread_id, "agentic_loop", input={"task": TWO_STEPS}),
        "resume": alice.runs.create(thread_id, run["assistant_id"], command={"resume": "x"}),
    }
    for name, attempt in attempts.items():
        error = await http_error(attempt)
        assert error.response.status_code == 409, name
        assert detail(error) == (
            f"Thread {thread_id} already has an active run ({run['run_id']}); "
            "wait for it or cancel it."
        )
    assert [r["run_id"] for r in await alice.runs.list(thread_id)] == [run["run_id"]]
    await alice.runs.cancel(thread_id, run["run_id"], wait=True)


# ── errors ────────────────────────────────────────────────────────────────────


async def test_unknown_ids_are_404(alice: LangGraphClient) -> None:
    thread_id, run = await finished_loop_run(alice)
    missing = str(uuid.uuid4())
    found = await statuses(
        {
            "assistant": alice.assistants.get(missing),
            "assistant update": alice.assistants.update(missing, name="x"),
            "assistant graph": alice.assistants.get_graph(missing),
            "assistant schemas": alice.assistants.get_schemas(missing),
            "thread": alice.threads.get(missing),
            "thread state": alice.threads.get_state(missing),
            "thread history": alice.threads.get_history(missing),
            "thread delete": alice.threads.delete(missing),
            "run": alice.runs.get(thread_id, missing),
            "run under an unknown thread": alice.runs.get(missing, run["run_id"]),
            "runs of an unknown thread": alice.runs.list(missing),
            "join": alice.runs.join(thread_id, missing),
            "cancel": alice.runs.cancel(thread_id, missing),
            "run of an unknown assistant": alice.runs.create(thread_id, missing, input={}),
            "run on an unknown thread": alice.runs.create(missing, "agentic_loop", input={}),
        }
    )
    assert found == dict.fromkeys(found, 404)
    error = await http_error(alice.assistants.get(missing))
    assert detail(error) == f"Assistant {missing} not found."


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        pytest.param(
            "POST", "/assistants/search", {"limit": "many"}, "body.limit", id="search-limit"
        ),
        pytest.param(
            "POST", "/threads/search", {"limit": "many"}, "body.limit", id="thread-search-limit"
        ),
        pytest.param(
            "POST",
            "/assistants",
            {"graph_id": "agentic_loop", "context": {"data_types": "tasks"}},
            "body.context.data_types",
            id="create-context-type",
        ),
        pytest.param(
            "PATCH",
            "/assistants/agentic_loop",
            {"context": {"data_types": "tasks"}},
            "body.context.data_types",
            id="update-context-type",
        ),
        pytest.param("POST", "/assistants", {"context": {}}, "body.graph_id", id="no-graph-id"),
        pytest.param(
            "POST", "/assistants", {"graph_id": "no_such_graph"}, "body.graph_id", id="bad-graph"
        ),
        pytest.param("POST", "/threads", {"metadata": "x"}, "body.metadata", id="metadata-type"),
        pytest.param(
            "POST",
            "/threads/any/runs",
            {"assistant_id": "agentic_loop", "input": "not an object"},
            "body.input",
            id="run-input-type",
        ),
    ],
)
async def test_wrongly_typed_body_is_422_naming_the_field(
    http: httpx.AsyncClient,
    server: Server,
    method: str,
    path: str,
    body: dict[str, Any],
    field: str,
) -> None:
    response = await http.request(method, path, json=body, headers={"X-Api-Key": server.alice_key})
    assert response.status_code == 422
    assert field in invalid_fields(response)


async def test_json_body_sent_as_text_plain_is_accepted(
    http: httpx.AsyncClient, server: Server
) -> None:
    headers = {"X-Api-Key": server.alice_key, "Content-Type": "text/plain"}
    body = json.dumps({"graph_id": "agentic_loop", "metadata": {"via": "text/plain"}})
    created = await http.post("/assistants", content=body, headers=headers)
    assert created.status_code == 200
    assert created.json()["metadata"] == {"via": "text/plain"}
    search = json.dumps({"metadata": {"via": "text/plain"}})
    found = await http.post("/assistants/search", content=search, headers=headers)
    assert found.status_code == 200
    assert ids(found.json()) == {created.json()["assistant_id"]}


@pytest.mark.parametrize(
    "raw", ['{"graph_id": "agentic_loop"', "{graph_id: agentic_loop}", "not json at all"]
)
async def test_malformed_json_is_422_not_500(
    http: httpx.AsyncClient, server: Server, raw: str
) -> None:
    response = await http.post(
        "/assistants",
        content=raw,
        headers={"X-Api-Key": server.alice_key, "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"


# ── auth and isolation ────────────────────────────────────────────────────────

Credentials = Callable[[Server], dict[str, str]]


@pytest.mark.parametrize(
    ("credentials", "message"),
    [
        pytest.param(lambda s: {}, "Missing API key", id="no-key"),
        pytest.param(lambda s: {"X-Api-Key": "rgk_wrong"}, "Invalid API key", id="wrong-key"),
        pytest.param(
            lambda s: {"Authorization": "Bearer rgk_wrong"}, "Invalid API key", id="wrong-bearer"
        ),
        pytest.param(
            lambda s: {"X-Api-Key": s.alice_device_token},
            "Invalid API key",
            id="device-token-as-key",
        ),
        pytest.param(
            lambda s: {"Authorization": f"Bearer {s.alice_device_token}"},
            "Invalid API key",
            id="device-token-as-bearer",
        ),
        pytest.param(
            lambda s: {"Authorization": s.alice_key}, "Missing API key", id="key-without-bearer"
        ),
    ],
)
async def test_requests_without_a_valid_api_key_are_401(
    http: httpx.AsyncClient, server: Server, credentials: Credentials, message: str
) -> None:
    headers = credentials(server)
    searched = await http.post("/threads/search", json={}, headers=headers)
    created = await http.post("/assistants", json={"graph_id": "triage"}, headers=headers)
    for response in (searched, created):
        assert response.status_code == 401
        assert response.json()["detail"].startswith(message)


async def test_bearer_key_works_like_x_api_key(
    http: httpx.AsyncClient, server: Server, alice: LangGraphClient
) -> None:
    thread_id = await new_thread(alice, via="x-api-key")
    for scheme in ("Bearer", "bearer"):
        response = await http.get(
            f"/threads/{thread_id}", headers={"Authorization": f"{scheme} {server.alice_key}"}
        )
        assert response.status_code == 200
        assert response.json()["metadata"] == {"via": "x-api-key"}
    bearer = {"Authorization": f"Bearer {server.alice_key}"}
    async with get_client(url=server.url, api_key=None, headers=bearer) as client:
        assert (await client.threads.get(thread_id))["thread_id"] == thread_id


async def test_other_user_gets_404_for_the_first_users_resources(
    alice: LangGraphClient, bob: LangGraphClient
) -> None:
    assistant = await alice.assistants.create(graph_id="agentic_loop", context=CONTEXT)
    assistant_id = assistant["assistant_id"]
    thread_id, run = await finished_loop_run(alice)
    bobs_thread = await new_thread(bob)
    found = await statuses(
        {
            "assistant": bob.assistants.get(assistant_id),
            "assistant graph": bob.assistants.get_graph(assistant_id),
            "assistant schemas": bob.assistants.get_schemas(assistant_id),
            "assistant update": bob.assistants.update(assistant_id, name="mine now"),
            "assistant delete": bob.assistants.delete(assistant_id),
            "thread": bob.threads.get(thread_id),
            "state": bob.threads.get_state(thread_id),
            "history": bob.threads.get_history(thread_id),
            "thread delete": bob.threads.delete(thread_id),
            "run": bob.runs.get(thread_id, run["run_id"]),
            "runs": bob.runs.list(thread_id),
            "join": bob.runs.join(thread_id, run["run_id"]),
            "run on the thread": bob.runs.create(thread_id, "agentic_loop", input={}),
            "run on the thread, creating it": bob.runs.create(
                thread_id, "agentic_loop", input={}, if_not_exists="create"
            ),
            "run with the assistant": bob.runs.create(bobs_thread, assistant_id, input={}),
        }
    )
    assert found == dict.fromkeys(found, 404)
    assert await alice.assistants.get(assistant_id) == assistant
    assert (await alice.runs.get(thread_id, run["run_id"]))["status"] == "success"
    assert [r["run_id"] for r in await alice.runs.list(thread_id)] == [run["run_id"]]


async def test_other_user_cannot_resume_or_cancel_a_parked_run(
    alice: LangGraphClient, bob: LangGraphClient, workspace: Path
) -> None:
    thread_id, run = await parked_run(alice, workspace)
    found = await statuses(
        {
            "resume": bob.runs.create(thread_id, "local_agent", command={"resume": "x"}),
            "resume with the assistant": bob.runs.create(
                thread_id, run["assistant_id"], command={"resume": "x"}
            ),
            "cancel": bob.runs.cancel(thread_id, run["run_id"]),
            "cancel and wait": bob.runs.cancel(thread_id, run["run_id"], wait=True),
        }
    )
    assert found == dict.fromkeys(found, 404)
    assert (await alice.runs.get(thread_id, run["run_id"]))["status"] == "interrupted"
    await alice.runs.cancel(thread_id, run["run_id"], wait=True)


async def test_other_user_search_results_leave_out_the_first_users_resources(
    alice: LangGraphClient, bob: LangGraphClient
) -> None:
    tag = unique()
    assistant = await alice.assistants.create(graph_id="triage", metadata={"tag": tag})
    thread_id = await new_thread(alice, tag=tag)
    assert await bob.assistants.search(metadata={"tag": tag}) == []
    assert await bob.threads.search(metadata={"tag": tag}) == []
    bobs_assistants = ids(await bob.assistants.search(limit=1000))
    alices_assistants = ids(await alice.assistants.search(limit=1000))
    assert assistant["assistant_id"] in alices_assistants
    assert bobs_assistants.isdisjoint(alices_assistants)  # the defaults too are per user
    assert thread_id not in ids(await bob.threads.search(limit=1000), "thread_id")
    assert thread_id in ids(await alice.threads.search(metadata={"tag": tag}), "thread_id")
