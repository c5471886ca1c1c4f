"""Waiting in the end-to-end tests: poll a condition, failing at once (with every log) when
one of the test's processes has died."""

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
POLL = 0.05


class Watched(Protocol):
    """What a test's set of processes offers while it waits."""

    #: Seconds any single wait may take before the test fails.
    deadline: float

    def check_alive(self) -> None: ...
    def logs(self) -> str: ...


async def until(
    watched: Watched,
    what: str,
    check: Callable[[], T | Awaitable[T]],
    timeout: float | None = None,
) -> T:
    """Poll `check` until it returns something truthy (returned); fail after `timeout` s
    (the watched processes' `deadline` by default)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + (watched.deadline if timeout is None else timeout)
    last: Any = None
    while True:
        watched.check_alive()
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        last = value
        if loop.time() > deadline:
            raise AssertionError(
                f"timed out waiting for {what} (last: {last!r}):\n{watched.logs()}"
            )
        await asyncio.sleep(POLL)
