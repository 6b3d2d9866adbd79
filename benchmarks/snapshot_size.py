"""Stored snapshot size and what compressing it costs (issue 18, item 3).

For 10,000, 50,000 and 100,000 flags of sdk_bench.py's realistic mix (signed), prints:

* the size of the signed envelope as stored with ``publish.compress: none`` and
  ``gzip`` (``flagstone.compression.gzip_deterministic``, what publish stores), the
  ratio and the bytes per flag, against the SDK's default ``max_bytes``;
* publish's cost: serialising the payload (canonical JSON) and signing it, then gzip on
  top, as a share of those two;
* the SDK's cost to fetch it (``flagstone.sdk.sources``) from a file and from a loopback
  HTTP server: as stored uncompressed, as stored gzip and served the way S3 serves it
  (``Content-Encoding: gzip``), and stored gzip without that header (a ``file://`` target
  behind a plain static server: the client sniffs and inflates); the inflate is inside
  the fetch, under the cap;
* the verify + load that follows a fetch (``Client`` from an envelope file, uncompressed
  vs gzip) at 10,000 flags, to put the fetch in proportion.

    python3 benchmarks/snapshot_size.py [--quick] [--flags 10000,50000,100000]

Medians of interleaved rounds; absolute times depend on the machine and its load. The
loopback transfer has no bandwidth limit, so it shows the CPU cost of inflating, not the
transfer time saved on a real network (that saving is the size ratio).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import sdk_bench
from flagstone.canonical import canonical_json
from flagstone.compression import gzip_deterministic
from flagstone.envelope import TrustedKey, public_key_raw, sign_payload
from flagstone.sdk import Client
from flagstone.sdk.sources import DEFAULT_MAX_BYTES, FileSource, HttpSource

MB = 1_000_000


class _Objects(ThreadingHTTPServer):
    objects: dict[str, tuple[bytes, bool]]  # path -> (body, send Content-Encoding: gzip)


class _Handler(BaseHTTPRequestHandler):
    server: _Objects

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        body, encoded = self.server.objects[self.path]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if encoded:
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextmanager
def loopback_server(objects: dict[str, tuple[bytes, bool]]) -> Iterator[str]:
    server = _Objects(("127.0.0.1", 0), _Handler)
    server.objects = objects
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def interleaved_ms(actions: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median milliseconds of each action, run in turn round after round."""
    samples: dict[str, list[float]] = {name: [] for name in actions}
    for _ in range(rounds):
        for name, action in actions.items():
            start = time.perf_counter()
            action()
            samples[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(values) for name, values in samples.items()}


def measure(count: int, rounds: int, private: Ed25519PrivateKey, directory: Path) -> None:
    flags, segments = sdk_bench.mixed_flags(count)
    payload = sdk_bench.payload_of(flags, segments)
    canonical = canonical_json(payload)
    envelope = sign_payload(canonical, private)
    stored = gzip_deterministic(envelope)
    publish_ms = interleaved_ms(
        {
            "serialise": lambda: canonical_json(payload),
            "sign": lambda: sign_payload(canonical, private),
            "gzip": lambda: gzip_deterministic(envelope),
        },
        max(1, rounds // 2),
    )
    base = publish_ms["serialise"] + publish_ms["sign"]

    print(f"{count:,} flags")
    print(
        f"  stored size   none {len(envelope) / MB:7.2f} MB ({len(envelope) / count:5.0f} B/flag)"
        f"   gzip {len(stored) / MB:6.2f} MB ({len(stored) / count:4.1f} B/flag)"
        f"   ratio {len(envelope) / len(stored):5.1f}x"
        f"   SDK default cap ({DEFAULT_MAX_BYTES >> 20} MiB, inflated):"
        f" {len(envelope) / DEFAULT_MAX_BYTES:.0%} used"
    )
    print(
        f"  publish       serialise {publish_ms['serialise']:7.1f} ms + sign"
        f" {publish_ms['sign']:6.1f} ms; gzip adds {publish_ms['gzip']:6.1f} ms"
        f" ({publish_ms['gzip'] / base:.0%} of those)"
    )

    plain_file = directory / f"plain-{count}.json"
    gzip_file = directory / f"gzip-{count}.json"
    plain_file.write_bytes(envelope)
    gzip_file.write_bytes(stored)
    objects = {
        "/plain.json": (envelope, False),
        "/gzip-encoded.json": (stored, True),
        "/gzip-bare.json": (stored, False),
    }
    with loopback_server(objects) as url:
        sources = {
            "file, none": FileSource(plain_file, max_bytes=DEFAULT_MAX_BYTES),
            "file, gzip": FileSource(gzip_file, max_bytes=DEFAULT_MAX_BYTES),
            "http, none": HttpSource(f"{url}/plain.json", timeout=60, max_bytes=DEFAULT_MAX_BYTES),
            "http, gzip + Content-Encoding": HttpSource(
                f"{url}/gzip-encoded.json", timeout=60, max_bytes=DEFAULT_MAX_BYTES
            ),
            "http, gzip, no header (sniffed)": HttpSource(
                f"{url}/gzip-bare.json", timeout=60, max_bytes=DEFAULT_MAX_BYTES
            ),
        }
        for source in sources.values():  # every form reads back the same envelope
            assert source.fetch(None).data == envelope
        fetch_ms = interleaved_ms(
            {name: (lambda s=source: s.fetch(None)) for name, source in sources.items()}, rounds
        )
    for name, value in fetch_ms.items():
        plain = fetch_ms["file, none"] if name.startswith("file") else fetch_ms["http, none"]
        print(f"  SDK fetch     {name:32s} {value:7.1f} ms  ({value / plain:4.2f}x uncompressed)")

    if count <= 10_000:
        trusted = TrustedKey.from_public(public_key_raw(private))

        def load(path: Path) -> Callable[[], object]:
            def run() -> None:
                Client.from_file(
                    path,
                    environment=sdk_bench.ENVIRONMENT,
                    project=sdk_bench.PROJECT,
                    trusted_keys=[trusted],
                ).close()

            return run

        load_ms = interleaved_ms({"none": load(plain_file), "gzip": load(gzip_file)}, rounds)
        print(
            f"  SDK load      fetch+verify+parse from a file: none {load_ms['none']:7.1f} ms,"
            f" gzip {load_ms['gzip']:7.1f} ms ({load_ms['gzip'] / load_ms['none']:4.2f}x)"
        )
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--flags", default="10000,50000,100000", help="comma-separated flag counts")
    arguments = parser.parse_args()
    rounds = 3 if arguments.quick else 7
    counts = [int(part) for part in arguments.flags.split(",") if part.strip()]
    print(f"Python {sys.version.split()[0]} on {sys.platform}, {os.cpu_count()} CPUs")
    print()
    private = Ed25519PrivateKey.generate()
    with tempfile.TemporaryDirectory() as temporary:
        for count in counts:
            measure(count, rounds, private, Path(temporary))


if __name__ == "__main__":
    main()
