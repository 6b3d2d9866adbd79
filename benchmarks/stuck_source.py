"""How long the SDK takes to notice stuck storage (issue 12 item 1).

    python benchmarks/stuck_source.py            # ~1 minute
    python benchmarks/stuck_source.py --quick

Two measurements against real loopback servers (tests/misbehaving_http.py):

1. One fetch against each kind of stuck server (a byte every 100 ms in the body or in
   the headers, silence after the headers, a listener that never accepts) with
   ``timeout`` = 1 s: the median time until the fetch fails, and how far past the
   timeout that is.
2. A polling client (``poll_interval`` 1 s, ``timeout`` 1 s) serving a snapshot when its
   server starts trickling: the median time from the moment the server goes bad until
   ``client.last_error`` says so. The floor is "the next poll starts" (up to one
   interval) plus the timeout.

Before this change a trickling server was never noticed: each received byte restarted
the socket's per-read timeout, so the poller stayed inside one fetch, ``status`` stayed
READY and ``last_error`` empty (issue 12).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from flagstone.errors import StoreError
from flagstone.sdk import Client
from flagstone.sdk.sources import DeadlineFetcher, open_source
from misbehaving_http import MisbehavingServer, NeverAcceptingServer
from sdk_support import (
    ENVIRONMENT,
    PROJECT,
    SnapshotHttpServer,
    new_key,
    version_envelope,
)

TIMEOUT = 1.0
INTERVAL = 1.0


def one_fetch(url: str) -> float:
    source = open_source(url, environment=ENVIRONMENT, timeout=TIMEOUT)
    started = time.monotonic()
    try:
        DeadlineFetcher(source, TIMEOUT).fetch(None)
    except StoreError:
        pass
    else:
        raise SystemExit(f"{url}: the fetch succeeded against a stuck server")
    return time.monotonic() - started


def fetch_table(rounds: int) -> None:
    print(f"one fetch, timeout {TIMEOUT:g} s ({rounds} rounds):")
    print(f"  {'server':<22} {'median to fail':>15} {'past timeout':>13}")
    for behaviour in ("trickle-body", "trickle-headers", "hang-after-headers", "never-accept"):
        times = []
        for _ in range(rounds):
            server: MisbehavingServer | NeverAcceptingServer
            if behaviour == "never-accept":
                server = NeverAcceptingServer()
            else:
                server = MisbehavingServer(behaviour, interval=0.1)
            try:
                times.append(one_fetch(server.url()))
            finally:
                server.stop()
        median = statistics.median(times)
        print(f"  {behaviour:<22} {median * 1000:12.0f} ms {(median - TIMEOUT) * 1000:10.1f} ms")


def notice_time(rounds: int) -> None:
    key = new_key()
    times = []
    for _ in range(rounds):
        server = SnapshotHttpServer()
        path = f"/{ENVIRONMENT}/latest.json"
        server.put(path, version_envelope(1, key))
        client = Client(
            server.url(path),
            environment=ENVIRONMENT,
            trusted_keys=[key.trusted],
            project=PROJECT,
            poll_interval=INTERVAL,
            timeout=TIMEOUT,
        )
        try:
            if not client.wait_until_ready(10):
                raise SystemExit("the client never became ready")
            # Go bad at a random point of the poll cycle.
            time.sleep(INTERVAL * (0.2 + 0.6 * (len(times) % 3) / 2))
            server.state.slow_body = 0.1
            server.put(path, version_envelope(2, key))
            went_bad = time.monotonic()
            noticed = threading.Event()
            while not noticed.wait(0.005):
                if "timed out" in (client.last_error or ""):
                    noticed.set()
                if time.monotonic() - went_bad > 30:
                    raise SystemExit("the stuck source was not noticed within 30 s")
            times.append(time.monotonic() - went_bad)
        finally:
            client.close()
            server.close()
    print(
        f"polling client (interval {INTERVAL:g} s ±10 %, timeout {TIMEOUT:g} s), "
        f"time from the server going bad to last_error ({rounds} rounds):"
    )
    print(
        f"  median {statistics.median(times) * 1000:.0f} ms, "
        f"max {max(times) * 1000:.0f} ms (floor: up to one interval + the timeout)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    arguments = parser.parse_args()
    fetch_table(3 if arguments.quick else 7)
    notice_time(3 if arguments.quick else 9)


if __name__ == "__main__":
    main()
