"""The benchmarks' device: a minimal protocol-v1 client (`BenchDevice`), in process or in a
process of its own, as a real device is. (b) runs it in its own process, so the server's
process does not also carry the device client's work:

    python -m bench.device URL TOKEN

It connects (`BenchDevice`, answering every call at once) and says `ready` on stdout. Then,
for each `wait N` line on stdin: it forgets what it counted so far, says `waiting`, waits
until N runs have sent `run_complete`, and prints one JSON line (`DeviceReport`). It ends
when stdin closes.
"""

import asyncio
import json
import logging
import resource
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.round_trip import DEVICE_ANSWER

DEVICE = "bench-device"
WAIT_SECONDS = 600.0
log = logging.getLogger("bench.device")


class BenchDevice:
    """A minimal protocol-v1 device: every `tool_call` is answered `{"ok": true, "result": []}`.

    It keeps the `websockets` defaults the reference device keeps (keepalive pings every 20 s,
    20 s to answer them). With `answer_at_once` a reader queues each answer for a writer task
    as the call arrives (the reader never blocks on a send, so a burst of redelivered calls
    cannot deadlock the socket); otherwise calls wait in `calls` with the time they arrived,
    and the caller answers them with `answer`. `run_complete` frames are counted by status.
    A dropped connection is recorded in `disconnects`; with `reconnect` the device says hello
    again at once (the server then redelivers every unanswered call), as a real device does.
    """

    def __init__(
        self, url: str, token: str, *, answer_at_once: bool, reconnect: bool = False
    ) -> None:
        self.url, self.token = url, token
        self.answer_at_once, self.reconnect = answer_at_once, reconnect
        self.calls: asyncio.Queue[tuple[float, dict[str, Any]]] = asyncio.Queue()
        self.answered: list[float] = []  # when each answer was sent
        self.deliveries: Counter[str] = Counter()  # `tool_call` frames by call id
        self.completed: Counter[str] = Counter()
        self.pending_at_hello: list[int] = []  # `hello_ok.pending` of each connection
        self.disconnects: list[str] = []  # close code and reason of each dropped connection
        self.failed_hellos: list[str] = []  # reconnections that failed, and why
        self._outbox: asyncio.Queue[str] = asyncio.Queue()
        self._complete = asyncio.Event()
        self._expected = 0
        self._ws: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> "BenchDevice":
        await self._connect()
        self._task = asyncio.create_task(self._serve(), name="bench-device")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._ws is not None:
            await self._ws.close()

    async def _connect(self) -> None:
        hello = {"type": "device_hello", "token": self.token, "device_id": DEVICE, "tools": []}
        self._ws = await connect(self.url, proxy=None)
        await self._ws.send(json.dumps(hello))
        frame = json.loads(await self._ws.recv())
        if frame.get("type") != "hello_ok":
            raise RuntimeError(f"the server refused the device: {frame}")
        self.pending_at_hello.append(int(frame["pending"]))

    async def _serve(self) -> None:
        while True:
            assert self._ws is not None
            ws = self._ws
            writer = asyncio.create_task(self._write(ws)) if self.answer_at_once else None
            try:
                await self._read(ws)
            except ConnectionClosed:
                pass
            finally:
                if writer is not None:
                    writer.cancel()
            self.disconnects.append(f"{ws.close_code} {ws.close_reason!r}".strip())
            log.warning("the bench device lost its connection: %s", self.disconnects[-1])
            if not self.reconnect:
                return
            await self._reconnect()

    async def _reconnect(self, attempts: int = 30) -> None:
        """Say hello again, retrying every half second (a real device backs off)."""
        for _ in range(attempts):
            try:
                await self._connect()
                return
            except (OSError, ConnectionClosed, RuntimeError, TimeoutError) as exc:
                self.failed_hellos.append(repr(exc))
                log.warning("the bench device could not reconnect: %r", exc)
                await asyncio.sleep(0.5)
        raise RuntimeError(f"the bench device could not reconnect: {self.failed_hellos[-3:]}")

    async def answer(self, call_id: str) -> None:
        """Send the answer to one call (when not answering at once)."""
        assert self._ws is not None
        await self._ws.send(answer_frame(call_id))
        self.answered.append(time.perf_counter())

    async def next_call(self, timeout: float = 60.0) -> tuple[float, dict[str, Any]]:
        """(when it arrived, the frame) of the next `tool_call`."""
        return await asyncio.wait_for(self.calls.get(), timeout)

    async def wait_completed(self, count: int, timeout: float) -> None:
        """Until `count` runs have sent `run_complete` to this device."""
        self._expected = count
        if self.completed.total() < count:
            self._complete.clear()
            await asyncio.wait_for(self._complete.wait(), timeout)

    async def _read(self, ws: ClientConnection) -> None:
        async for raw in ws:
            arrived = time.perf_counter()
            frame = json.loads(raw)
            kind = frame.get("type")
            if kind == "tool_call":
                self.deliveries[frame["id"]] += 1
                if self.answer_at_once:
                    self._outbox.put_nowait(answer_frame(frame["id"]))
                else:
                    self.calls.put_nowait((arrived, frame))
            elif kind == "run_complete":
                self.completed[str(frame["status"])] += 1
                if self._expected and self.completed.total() >= self._expected:
                    self._complete.set()
            elif kind == "error":
                log.warning("server error frame: %s", frame)

    async def _write(self, ws: ClientConnection) -> None:
        while True:
            text = await self._outbox.get()
            await ws.send(text)
            self.answered.append(time.perf_counter())


def answer_frame(call_id: str) -> str:
    return json.dumps({"type": "tool_result", "id": call_id, **DEVICE_ANSWER})


@dataclass
class DeviceReport:
    """What the device saw between a `wait` and the last `run_complete` it waited for."""

    completed: dict[str, int] = field(default_factory=dict)  # run_complete frames by status
    calls: int = 0  # distinct call ids received
    duplicates: int = 0  # `tool_call` frames received again
    disconnects: list[str] = field(default_factory=list)
    answered: list[float] = field(default_factory=list)  # perf_counter of each answer sent
    cpu_seconds: float = 0.0  # this process's CPU time meanwhile


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def serve(url: str, token: str) -> None:
    loop = asyncio.get_running_loop()
    commands = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
    async with BenchDevice(url, token, answer_at_once=True) as device:
        print("ready", flush=True)
        while line := (await commands.readline()).decode().split():
            if line[0] != "wait" or len(line) != 2:
                raise SystemExit(f"unknown command: {' '.join(line)}")
            device.answered.clear()
            device.completed.clear()
            device.deliveries.clear()
            device.disconnects.clear()
            began = cpu_seconds()
            print("waiting", flush=True)
            await device.wait_completed(int(line[1]), timeout=WAIT_SECONDS)
            report = DeviceReport(
                completed=dict(device.completed),
                calls=len(device.deliveries),
                duplicates=device.deliveries.total() - len(device.deliveries),
                disconnects=list(device.disconnects),
                answered=list(device.answered),
                cpu_seconds=cpu_seconds() - began,
            )
            print(json.dumps(asdict(report)), flush=True)


def main() -> None:
    try:
        import uvloop

        uvloop.run(serve(sys.argv[1], sys.argv[2]))
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        asyncio.run(serve(sys.argv[1], sys.argv[2]))


if __name__ == "__main__":
    main()
