"""Bad input on every HTTP route of a real `relaygraph serve`, on SQLite and Postgres: each is
a 4xx naming the field at fault, nothing refused is stored, and the server serves on.

`ROUTES` holds one valid request per route of the server's OpenAPI document; a route added
without an entry fails `test_every_route_is_swept`. Each sweep starts from the valid request
and spoils one part of it: a path id, a query value, a text or an object of the body.
"""

import asyncio
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from harness.postgres import PostgresCluster
from harness.processes import ServerProcess

pytestmark = pytest.mark.slow

CALL_TIMEOUT = 30.0
ANSWER_TIMEOUT = 30.0  # a bound against hanging, not a timing assertion
WAIT = 60.0
TASK = "list the notes; then summarise them"  # the offline planner's two steps, no device
#: Spoiled path ids: a NUL, a space, a lone surrogate's UTF-8 bytes, one too long.
BAD_IDS = ["%00", "a%20b", "%ED%A0%80", "x" * 300]
#: Spoiled texts, as raw JSON (a lone surrogate cannot be written with `json.dumps`).
BAD_TEXTS = ['"a\\u0000b"', '"\\ud800"', '"\\udfff tail"']
DEEP = "[" * 100 + "1" + "]" * 100
HUGE = json.dumps({"x": "y" * 70_000})


@dataclass
class Api:
    process: ServerProcess
    client: httpx.Client
    key: str
    ids: dict[str, str]  # the path parameters' valid values


def _start(database_url: str, workdir: Path) -> Api:
    process = ServerProcess(database_url=database_url, workdir=workdir)
    process.start()
    key = process.api_key("alice")
    client = httpx.Client(base_url=process.url, headers={"x-api-key": key}, timeout=CALL_TIMEOUT)
    assistant = client.post(
        "/assistants",
        json={"graph_id": "agentic_loop", "assistant_id": "sweep-assistant", "metadata": {}},
    ).json()
    thread = client.post("/threads", json={"thread_id": "sweep-thread"}).json()
    run = client.post(
        f"/threads/{thread['thread_id']}/runs/wait",
        json={"assistant_id": "agentic_loop", "input": {"task": TASK}},
    )
    assert run.status_code == 200, run.text
    run_id = client.get(f"/threads/{thread['thread_id']}/runs").json()[0]["run_id"]
    cron = client.post(
        "/runs/crons", json={"assistant_id": "agentic_loop", "schedule": "0 0 1 1 *"}
    ).json()
    ids = {
        "assistant_id": assistant["assistant_id"],
        "thread_id": thread["thread_id"],
        "run_id": run_id,
        "cron_id": cron["cron_id"],
    }
    return Api(process=process, client=client, key=key, ids=ids)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    workdir = tmp_path_factory.mktemp(f"bad-input-{request.param}")
    if request.param == "postgres":
        cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
        url = cluster.create_database()
    else:
        url = str(workdir / "relaygraph.db")
    started = _start(url, workdir)
    try:
        yield started
    finally:
        started.client.close()
        started.process.stop()


#: One valid request per route: method and path template -> body (None: no body).
ROUTES: dict[tuple[str, str], dict[str, Any] | None] = {
    ("GET", "/ok"): None,
    ("GET", "/info"): None,
    ("POST", "/assistants"): {"graph_id": "agentic_loop", "metadata": {"a": "b"}, "context": {}},
    ("POST", "/assistants/search"): {"metadata": {"a": "b"}, "graph_id": "agentic_loop"},
    ("GET", "/assistants/{assistant_id}"): None,
    ("PATCH", "/assistants/{assistant_id}"): {"name": "n", "metadata": {"a": "b"}, "context": {}},
    ("DELETE", "/assistants/{assistant_id}"): None,
    ("GET", "/assistants/{assistant_id}/graph"): None,
    ("GET", "/assistants/{assistant_id}/runs"): None,
    ("GET", "/assistants/{assistant_id}/schemas"): None,
    ("POST", "/threads"): {"metadata": {"a": "b"}},
    ("POST", "/threads/search"): {"metadata": {"a": "b"}},
    ("GET", "/threads/{thread_id}"): None,
    ("DELETE", "/threads/{thread_id}"): None,
    ("GET", "/threads/{thread_id}/state"): None,
    ("POST", "/threads/{thread_id}/history"): {"limit": 2},
    ("POST", "/threads/{thread_id}/runs"): {
        "assistant_id": "agentic_loop",
        "input": {"task": TASK},
        "metadata": {"a": "b"},
        "context": {},
    },
    ("GET", "/threads/{thread_id}/runs"): None,
    ("POST", "/threads/{thread_id}/runs/wait"): {
        "assistant_id": "agentic_loop",
        "input": {"task": TASK},
        "metadata": {"a": "b"},
    },
    ("POST", "/threads/{thread_id}/runs/stream"): {
        "assistant_id": "agentic_loop",
        "input": {"task": TASK},
        "metadata": {"a": "b"},
    },
    ("GET", "/threads/{thread_id}/runs/{run_id}"): None,
    ("GET", "/threads/{thread_id}/runs/{run_id}/join"): None,
    ("POST", "/threads/{thread_id}/runs/{run_id}/cancel"): None,
    ("POST", "/runs/crons"): {
        "assistant_id": "agentic_loop",
        "schedule": "0 0 1 1 *",
        "timezone": "UTC",
        "metadata": {"a": "b"},
        "input": {"task": TASK},
    },
    ("POST", "/threads/{thread_id}/runs/crons"): {
        "assistant_id": "agentic_loop",
        "schedule": "0 0 1 1 *",
        "metadata": {"a": "b"},
    },
    ("PATCH", "/runs/crons/{cron_id}"): {"schedule": "0 0 1 1 *", "metadata": {"a": "b"}},
    ("DELETE", "/runs/crons/{cron_id}"): None,
    ("POST", "/runs/crons/search"): {"assistant_id": "agentic_loop"},
    ("POST", "/runs/crons/count"): {"assistant_id": "agentic_loop"},
}


def _operations(api: Api) -> dict[tuple[str, str], dict[str, Any]]:
    spec = api.client.get("/openapi.json").json()
    return {
        (method.upper(), path): operation
        for path, operations in spec["paths"].items()
        for method, operation in operations.items()
    }


def _fill(template: str, values: dict[str, str]) -> str:
    path = template
    for name, value in values.items():
        path = path.replace("{" + name + "}", value)
    return path


def _field(response: httpx.Response) -> list[Any]:
    """The `loc` of the first error of a 422."""
    assert response.status_code == 422, (response.status_code, response.text[:500])
    detail = response.json()["detail"]
    assert isinstance(detail, list) and detail, detail
    return list(detail[0]["loc"])


def _stored(api: Api) -> str:
    """Everything the user's searches serve, as one text (a refused request adds nothing)."""
    parts = [
        api.client.post("/threads/search", json={"limit": 1000}),
        api.client.post("/assistants/search", json={"limit": 1000}),
        api.client.post("/runs/crons/search", json={"limit": 1000}),
    ]
    for response in parts:
        assert response.status_code == 200, response.text
    return "".join(sorted(json.dumps(r.json(), sort_keys=True) for r in parts))


def test_every_route_is_swept(api: Api) -> None:
    assert set(_operations(api)) == set(ROUTES)


def test_a_bad_path_id_is_422_naming_the_parameter(api: Api) -> None:
    before = _stored(api)
    checked = 0
    for (method, template), body in ROUTES.items():
        for name in api.ids:
            if "{" + name + "}" not in template:
                continue
            for bad in BAD_IDS:
                path = _fill(template, {**api.ids, name: bad})
                response = api.client.request(method, path, json=body)
                assert _field(response) == ["path", name], (method, path)
                checked += 1
    assert checked >= 4 * 18
    assert _stored(api) == before


def test_a_nul_in_a_query_value_is_422_naming_the_parameter(api: Api) -> None:
    checked = 0
    for (method, template), operation in _operations(api).items():
        path = _fill(template, api.ids)
        for parameter in operation.get("parameters", []):
            if parameter["in"] != "query":
                continue
            name = parameter["name"]
            response = api.client.request(
                method, f"{path}?{name}=%00", json=ROUTES[(method, template)]
            )
            assert _field(response) == ["query", name], (method, path, name)
            checked += 1
    assert checked >= 8


def _spoiled(body: dict[str, Any], field: str, raw: str) -> bytes:
    """`body` with `field` replaced by the raw JSON `raw`."""
    marker = "__SPOILED__"
    text = json.dumps({**body, field: marker})
    return text.replace(json.dumps(marker), raw).encode()


def test_bad_text_in_any_body_field_is_422_naming_it_and_nothing_is_stored(api: Api) -> None:
    before = _stored(api)
    checked = 0
    for (method, template), body in ROUTES.items():
        if body is None:
            continue
        path = _fill(template, api.ids)
        for field, value in body.items():
            if isinstance(value, dict):
                spoils = [(f'{{"k": {raw}}}', [field, "k"]) for raw in BAD_TEXTS]
                spoils += [(f"{{{BAD_TEXTS[0]}: 1}}", [field])]  # a NUL in a key
                spoils += [(f'{{"deep": {DEEP}}}', [field, "deep"])]
            elif isinstance(value, str):
                spoils = [(raw, [field]) for raw in BAD_TEXTS]
            else:
                continue
            for raw, loc in spoils:
                response = api.client.request(
                    method, path, content=_spoiled(body, field, raw), headers=JSON
                )
                assert _field(response)[: len(loc) + 1] == ["body", *loc], (method, path, raw)
                checked += 1
    assert checked >= 60
    assert _stored(api) == before, "a refused request stored something"


JSON = {"content-type": "application/json"}


def test_metadata_and_config_over_64_kib_are_refused(api: Api) -> None:
    before = _stored(api)
    for (method, template), body in ROUTES.items():
        if body is None or "metadata" not in body:
            continue
        path = _fill(template, api.ids)
        response = api.client.request(
            method, path, content=_spoiled(body, "metadata", HUGE), headers=JSON
        )
        assert _field(response)[:2] == ["body", "metadata"], (method, path)
    response = api.client.post(
        "/assistants",
        content=_spoiled(ROUTES[("POST", "/assistants")] or {}, "config", HUGE),
        headers=JSON,
    )
    assert _field(response)[:2] == ["body", "config"]
    assert _stored(api) == before


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("timezone", "Europe"),  # a folder of the tz database, not a zone
        ("timezone", "a" * 300),
        ("timezone", "posixrules"),
        ("timezone", "../../etc/passwd"),
        ("end_time", "9999-12-31T23:59:59-12:00"),
        ("end_time", "0001-01-01T00:00:00+12:00"),
    ],
)
def test_a_cron_that_cannot_be_scheduled_is_422_naming_the_field(
    api: Api, field: str, value: str
) -> None:
    body = {**(ROUTES[("POST", "/runs/crons")] or {}), field: value}
    assert _field(api.client.post("/runs/crons", json=body)) == ["body", field]
    patch = api.client.patch(f"/runs/crons/{api.ids['cron_id']}", json={field: value})
    assert _field(patch) == ["body", field]


@pytest.mark.parametrize(
    ("context", "loc"),
    [
        ({"triage_chunk_size": 0}, ["triage_chunk_size"]),
        ({"triage_chunk_size": -1}, ["triage_chunk_size"]),
        ({"max_processing_steps": -5}, ["max_processing_steps"]),
        ({"max_processing_steps": 10**9}, ["max_processing_steps"]),
        ({"parallel_chunks": 0}, ["parallel_chunks"]),
        ({"max_prompt_tokens": 10}, ["max_prompt_tokens"]),
        ({"file_extensions": [""]}, ["file_extensions", 0]),
        ({"file_extensions": [".m/d"]}, ["file_extensions", 0]),
        ({"file_extensions": []}, ["file_extensions"]),
        ({"data_types": []}, ["data_types"]),
        ({"data_types": ["emails"]}, ["data_types", 0]),
        ({"directory_paths": ["C:\\Users\\me\\Notes"]}, ["directory_paths", 0]),
        ({"directory_paths": ["\\\\server\\share"]}, ["directory_paths", 0]),
        ({"directory_paths": ["/"]}, ["directory_paths", 0]),
        ({"directory_paths": ["/x/../.."]}, ["directory_paths", 0]),
        ({"directory_paths": ["//"]}, ["directory_paths", 0]),
        ({"directory_paths": [""]}, ["directory_paths", 0]),
        ({"directory_paths": ["notes"]}, ["directory_paths", 0]),
        ({"directory_paths": ["/n" * 50_000]}, ["directory_paths", 0]),
    ],
)
def test_a_context_that_cannot_work_is_refused_at_create(
    api: Api, context: dict[str, Any], loc: list[Any]
) -> None:
    create = api.client.post("/assistants", json={"graph_id": "local_agent", "context": context})
    assert _field(create)[: len(loc) + 2] == ["body", "context", *loc]
    patch = api.client.patch(f"/assistants/{api.ids['assistant_id']}", json={"context": context})
    assert _field(patch)[: len(loc) + 2] == ["body", "context", *loc]
    run = api.client.post(
        f"/threads/{api.ids['thread_id']}/runs",
        json={"assistant_id": "local_agent", "context": context},
    )
    assert _field(run)[: len(loc) + 2] == ["body", "context", *loc]


def test_directories_and_extensions_are_stored_normalised(api: Api) -> None:
    context = {
        "directory_paths": ["/home/me/./notes/../notes/", "//srv//x"],
        "file_extensions": ["MD", ".Txt"],
    }
    created = api.client.post("/assistants", json={"graph_id": "local_agent", "context": context})
    assert created.status_code == 200, created.text
    stored = api.client.get(f"/assistants/{created.json()['assistant_id']}").json()["context"]
    assert stored["directory_paths"] == ["/home/me/notes", "/srv/x"]
    assert stored["file_extensions"] == [".md", ".txt"]


# ── bodies: the limit, and the key before the body ─────────────────────────────


def _raw_request(url: str, head: str, body: bytes = b"") -> bytes:
    """Send `head` (and `body`, maybe shorter than it declares); the server's first answer."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as conn:
        conn.sendall(head.encode() + b"\r\n" + body)
        return conn.recv(65536)


def test_an_oversize_body_is_refused_before_it_is_read(api: Api) -> None:
    """413 on the declared length alone: the 200 MiB are never sent."""
    head = (
        "POST /threads HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"X-Api-Key: {api.key}\r\nContent-Length: {200 * 1024 * 1024}\r\n"
    )
    answer = _raw_request(api.process.url, head, b"{")
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_a_body_without_a_length_is_cut_at_the_limit(api: Api) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b" " * (1024 * 1024)

    response = api.client.post("/threads", content=chunks(), headers=JSON)
    assert response.status_code == 413, response.text
    assert "RELAYGRAPH_MAX_BODY_BYTES" in response.json()["detail"]


def test_a_request_without_a_key_is_refused_before_its_body_is_read(api: Api) -> None:
    """The server answers 401 while the declared body has not arrived: it never waits for
    (or parses) what an unauthenticated client sends."""
    for key_header in ("", "X-Api-Key: not-a-key\r\n"):
        head = (
            "POST /threads HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"{key_header}Content-Length: 1000\r\n"
        )
        answer = _raw_request(api.process.url, head, b"{")  # a wait for the body times out
        assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert api.client.get("/ok").status_code == 200


# ── device frames the server cannot store ──────────────────────────────────────


async def test_a_frame_it_cannot_store_is_a_bad_frame_and_answers_go_on(api: Api) -> None:
    """A `tool_result` whose id holds a NUL once ended answer handling on Postgres, silently:
    later answers on the socket were never read. Now it is a `bad_frame` naming the field,
    as is `"ok": "true"`, and the next answer on the same socket is still handled."""
    token = api.process.device_token("alice", "sweeper")
    url = api.process.url.replace("http://", "ws://") + "/devices/connect"
    async with connect(url) as socket:
        await socket.send(
            json.dumps({"type": "device_hello", "token": token, "device_id": "sweeper"})
        )
        assert json.loads(await socket.recv())["type"] == "hello_ok"
        for bad, field in [
            ('{"type": "tool_result", "id": "a\\u0000b", "ok": true}', "id"),
            ('{"type": "tool_result", "id": "\\ud800", "ok": true}', "id"),
            ('{"type": "tool_result", "id": "c1", "ok": "true"}', "ok"),
            ('{"type": "tool_result", "id": "c1", "ok": false, "error": "x\\u0000"}', "error"),
        ]:
            await socket.send(bad)
            error = json.loads(await asyncio.wait_for(socket.recv(), ANSWER_TIMEOUT))
            assert error["code"] == "bad_frame" and f"{field}:" in error["message"], error
        await socket.send(json.dumps({"type": "tool_result", "id": "no-such-call", "ok": True}))
        error = json.loads(await asyncio.wait_for(socket.recv(), ANSWER_TIMEOUT))
        assert error["code"] == "unknown_call", error


@pytest.mark.parametrize(
    ("hello", "code", "close"),
    [
        ({"protocol": 2, "token": "t", "device_id": "d"}, "unsupported_protocol", 4426),
        ({"protocol": "1", "token": "t", "device_id": "d"}, "unsupported_protocol", 4426),
        ({"token": "", "device_id": "d"}, "unauthorized", 4401),
        ({"device_id": "d"}, "unauthorized", 4401),
    ],
)
async def test_a_hello_the_server_cannot_take_ends_with_its_own_code(
    api: Api, hello: dict[str, Any], code: str, close: int
) -> None:
    url = api.process.url.replace("http://", "ws://") + "/devices/connect"
    async with connect(url) as socket:
        await socket.send(json.dumps({"type": "device_hello", **hello}))
        error = json.loads(await asyncio.wait_for(socket.recv(), ANSWER_TIMEOUT))
        assert error["code"] == code, error
        assert "device_hello." in error["message"] or code == "unauthorized", error
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(socket.recv(), ANSWER_TIMEOUT)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == close
