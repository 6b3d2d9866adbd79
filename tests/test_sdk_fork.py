"""A polling client survives ``fork()`` (gunicorn --preload, multiprocessing): the child
inherits the snapshot and gets a polling thread of its own, which picks up new versions."""

from __future__ import annotations

import os
import select
import signal
import time
from collections.abc import Iterator

import pytest

from flagstone.sdk import Client
from sdk_support import (
    ENVIRONMENT,
    NOW,
    PROJECT,
    SnapshotHttpServer,
    new_key,
    serve_http,
    version_envelope,
    wait_for,
)

KEY = new_key()
PATH = f"/{ENVIRONMENT}/latest.json"


@pytest.fixture
def server() -> Iterator[SnapshotHttpServer]:
    yield from serve_http()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_forked_child_keeps_polling(server: SnapshotHttpServer) -> None:
    server.put(PATH, version_envelope(1, KEY))
    client = Client(
        server.url(PATH),
        environment=ENVIRONMENT,
        trusted_keys=[KEY.trusted],
        project=PROJECT,
        poll_interval=0.05,
        max_backoff=0.1,
        clock=lambda: NOW,
    )
    try:
        assert client.wait_until_ready(10)
        # The child reports the version it inherited through a pipe before the parent
        # publishes version 2: otherwise, on a loaded machine, the child's new poller
        # could fetch version 2 before the child looked, and the test would fail.
        inherited_read, inherited_write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: exit status 0 if its own poller saw version 2
            code = 1
            try:
                os.close(inherited_read)
                os.write(inherited_write, str(client.version).encode())
                os.close(inherited_write)
                if wait_for(lambda: client.version == 2, timeout=20):
                    code = 0
            finally:
                os._exit(code)
        os.close(inherited_write)
        ready, _, _ = select.select([inherited_read], [], [], 20)
        inherited = os.read(inherited_read, 32) if ready else b"(nothing within 20 s)"
        os.close(inherited_read)
        assert inherited == b"1", f"the forked child inherited version {inherited!r}"
        server.put(PATH, version_envelope(2, KEY))
        assert wait_for(lambda: client.version == 2)  # the parent's poller, still running
        deadline = time.monotonic() + 30
        while True:
            finished, status = os.waitpid(pid, os.WNOHANG)
            if finished:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail("the forked child did not finish")
            time.sleep(0.02)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        client.close()
