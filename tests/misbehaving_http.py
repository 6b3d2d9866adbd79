"""A loopback HTTP server that misbehaves the ways storage does in production.

Raw sockets, not ``http.server``: the faults are in the bytes on the wire. Every
connection is answered by one behaviour:

* ``trickle-body``: a 200 with a large Content-Length, then one body byte every
  ``interval`` seconds;
* ``trickle-headers``: a status line, then one header byte every ``interval`` seconds;
* ``hang-after-headers``: a 200 with a Content-Length, then nothing;
* ``short-body``: a 200 whose Content-Length is larger than the body sent before the
  connection closes (a lying length);
* ``endless-body``: a 200 without a length, and body bytes as fast as the client reads;
* ``good``: the bytes in ``body``, honestly.

``NeverAcceptingServer`` listens and never accepts: connections complete in the
kernel's backlog and then nothing is ever read or written.

Everything is bounded: every send loop stops when the client goes away, when the
server is stopped (the fixture's teardown), or after ``give_up_after`` seconds.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Connection:
    """What the server saw of one connection."""

    request: bytes = b""
    sent: int = 0  # body (or header) bytes sent after the first line/headers
    client_left: bool = False  # a send failed: the client closed the connection


@dataclass
class MisbehavingServer:
    behaviour: str
    body: bytes = b""
    interval: float = 0.2
    give_up_after: float = 30.0
    connections: list[Connection] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def url(self, path: str = "/production/latest.json") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self._stop.set()
        self._accepting.join(5)
        for thread in self._threads:
            thread.join(5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            record = Connection()
            self.connections.append(record)
            thread = threading.Thread(target=self._serve, args=(connection, record), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, connection: socket.socket, record: Connection) -> None:
        with connection:
            connection.settimeout(1.0)
            try:
                record.request = connection.recv(65536)
                self._behave(connection, record)
            except OSError:
                record.client_left = True

    def _wait(self, seconds: float) -> bool:
        """Sleep; False once the server is stopping."""
        return not self._stop.wait(seconds)

    def _behave(self, connection: socket.socket, record: Connection) -> None:
        started = time.monotonic()

        def in_time() -> bool:
            return time.monotonic() - started < self.give_up_after

        if self.behaviour == "good":
            connection.sendall(_head(len(self.body)) + self.body)
        elif self.behaviour == "trickle-body":
            connection.sendall(_head(10_000_000))
            while in_time() and self._wait(self.interval):
                connection.sendall(b" ")
                record.sent += 1
        elif self.behaviour == "trickle-headers":
            connection.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            while in_time() and self._wait(self.interval):
                connection.sendall(b"a")
                record.sent += 1
        elif self.behaviour == "hang-after-headers":
            connection.sendall(_head(len(self.body) or 1000))
            while in_time() and self._wait(0.05):
                pass
        elif self.behaviour == "short-body":
            connection.sendall(_head(len(self.body) + 1000) + self.body)
        elif self.behaviour == "endless-body":
            connection.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
            chunk = b"x" * 65536
            while in_time() and not self._stop.is_set():
                connection.sendall(chunk)
                record.sent += len(chunk)
        else:  # pragma: no cover - a typo in a test
            raise ValueError(self.behaviour)


def _head(length: int) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n" % length
    )


class NeverAcceptingServer:
    """A listening socket nobody accepts on (connections wait in the backlog)."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=1)
        self.port = self._listener.getsockname()[1]

    def url(self, path: str = "/production/latest.json") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self._listener.close()
