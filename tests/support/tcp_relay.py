"""A TCP relay between a device and the server that can hold back what the device sends.

End-to-end tests put it in front of `relaygraph serve` to open, on purpose, the window the
device protocol must survive: the device has run a call and stored its result, but the
`tool_result` never reaches the server (the device or the server dies first).

    relay = TcpRelay(server.port).start()
    device = DeviceProcess(server=relay.url, ...)
    relay.hold_upstream()  # from now on, the device's bytes are swallowed
    ...                    # the device runs calls; the server hears nothing back
    device.kill()          # or server.kill(): the held bytes are lost with the connection

Held bytes are never forwarded. A connection opened after `hold_upstream()` flows normally,
so a restarted device (or a device reconnecting to a restarted server) goes through.
When the server is down, a new connection is accepted and closed at once, which the device
sees as a failed connection (and retries with backoff).
"""

import contextlib
import socket
import threading
from dataclasses import dataclass, field

CHUNK = 65536


@dataclass
class _Pair:
    client: socket.socket
    upstream: socket.socket
    holding: bool = False
    held: int = 0
    closed: bool = False
    threads: list[threading.Thread] = field(default_factory=list)


class TcpRelay:
    """127.0.0.1:<free port> -> 127.0.0.1:`target_port`, one thread pair per connection."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._pairs: list[_Pair] = []
        self._stopped = False
        self._thread = threading.Thread(target=self._accept, name="tcp-relay", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "TcpRelay":
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            pairs = list(self._pairs)
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for pair in pairs:
            self._close(pair)
        self._thread.join(timeout=5)
        for pair in pairs:
            for thread in pair.threads:
                thread.join(timeout=5)

    def open_connections(self) -> int:
        with self._lock:
            return sum(not p.closed for p in self._pairs)

    def hold_upstream(self) -> int:
        """Swallow, from now on, what the currently open connections send to the server;
        the number of connections now held."""
        with self._lock:
            open_pairs = [p for p in self._pairs if not p.closed]
            for pair in open_pairs:
                pair.holding = True
            return len(open_pairs)

    def held_bytes(self) -> int:
        with self._lock:
            return sum(p.held for p in self._pairs)

    # ── Relaying (background threads) ────────────────────────────────────────

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                upstream.settimeout(None)
            except OSError:  # the server is down: a refused connection, as the device would see
                client.close()
                continue
            pair = _Pair(client=client, upstream=upstream)
            with self._lock:
                if self._stopped:
                    client.close()
                    upstream.close()
                    return
                self._pairs.append(pair)
            pair.threads = [
                threading.Thread(target=self._pump, args=(pair, True), daemon=True),
                threading.Thread(target=self._pump, args=(pair, False), daemon=True),
            ]
            for thread in pair.threads:
                thread.start()

    def _pump(self, pair: _Pair, upward: bool) -> None:
        source, sink = (pair.client, pair.upstream) if upward else (pair.upstream, pair.client)
        try:
            while data := source.recv(CHUNK):
                with self._lock:
                    if upward and pair.holding:
                        pair.held += len(data)
                        continue
                sink.sendall(data)
        except OSError:
            pass
        finally:
            self._close(pair)

    def _close(self, pair: _Pair) -> None:
        with self._lock:
            pair.closed = True
        for sock in (pair.client, pair.upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
