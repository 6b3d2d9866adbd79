"""Eight threads evaluate continuously while the poller swaps in 50 new snapshots
(issue 5, item 6): no errors, and every answer is consistent with exactly one version.

Each version N has a flag ``gate`` serving variation ``gN`` and a flag ``consistent``
that serves ``vN`` only if its prerequisite ``gate`` serves ``gN`` — otherwise
``mixed``. An evaluation that read the prerequisite from one snapshot and the flag from
another would answer ``mixed``. Every answer must also carry its own version number.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from flagstone.sdk import Client
from sdk_support import (
    ENVIRONMENT,
    NOW,
    PROJECT,
    SnapshotHttpServer,
    make_payload,
    new_key,
    serve_http,
    sign,
    wait_for,
)

KEY = new_key()
PATH = f"/{ENVIRONMENT}/latest.json"
THREADS = 8
SWAPS = 50


def versioned_envelope(version: int) -> bytes:
    gate = f"g{version}"
    served = f"v{version}"
    flags: dict[str, Any] = {
        "gate": {
            "type": "string",
            "kind": "release",
            "variations": {gate: gate, "off": "off"},
            "off_variation": "off",
            "enabled": True,
            "prerequisites": [],
            "targets": [],
            "rules": [],
            "default": {"variation": gate},
        },
        "consistent": {
            "type": "string",
            "kind": "release",
            "variations": {served: served, "mixed": "mixed"},
            "off_variation": "mixed",
            "enabled": True,
            "prerequisites": [{"flag": "gate", "variation": gate}],
            "targets": [],
            "rules": [],
            "default": {"variation": served},
        },
    }
    return sign(make_payload(version, flags), KEY)


@pytest.fixture
def server() -> Iterator[SnapshotHttpServer]:
    yield from serve_http()


def test_eight_threads_across_fifty_swaps(server: SnapshotHttpServer) -> None:
    server.put(PATH, versioned_envelope(1))
    client = Client(
        server.url(PATH),
        environment=ENVIRONMENT,
        trusted_keys=[KEY.trusted],
        project=PROJECT,
        poll_interval=0.01,
        max_backoff=0.05,
        clock=lambda: NOW,
    )
    stop = threading.Event()
    last_seen = [0] * THREADS
    problems: list[str] = []
    evaluations = [0] * THREADS

    def evaluate_forever(index: int) -> None:
        previous = 0
        context = {"key": f"user-{index}"}
        while not stop.is_set():
            details = client.evaluate("consistent", context, "default")
            if details.error_code is not None or details.value != f"v{details.version}":
                problems.append(f"thread {index}: {details}")
                return
            if details.version < previous:
                problems.append(
                    f"thread {index}: version went back {previous} -> {details.version}"
                )
                return
            everything = client.all_flags(context)
            versions = {d.version for d in everything.values()}
            if len(versions) != 1 or everything["consistent"].value == "mixed":
                problems.append(f"thread {index}: all_flags mixed versions {versions}")
                return
            previous = details.version
            last_seen[index] = previous
            evaluations[index] += 1
            # Let the poller run: a service's request threads also wait on I/O between
            # evaluations; without it eight spinning threads starve it of the GIL.
            time.sleep(0)

    workers = [threading.Thread(target=evaluate_forever, args=(i,)) for i in range(THREADS)]
    try:
        assert client.wait_until_ready(10)
        for worker in workers:
            worker.start()
        for version in range(2, SWAPS + 2):
            server.put(PATH, versioned_envelope(version))
            # Every thread must have evaluated against this version before the next swap.
            assert wait_for(lambda v=version: problems or min(last_seen) >= v, timeout=20), (
                f"threads stuck at {last_seen} waiting for version {version}"
            )
            assert not problems, problems
    finally:
        stop.set()
        for worker in workers:
            worker.join(10)
        client.close()
    assert not problems, problems
    assert client.version == SWAPS + 1
    assert all(count > SWAPS for count in evaluations), evaluations
