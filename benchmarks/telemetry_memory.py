"""What counting costs in memory (issue 14, item 1), measured with tracemalloc.

    python benchmarks/telemetry_memory.py

With telemetry on, each flag compiles with its own outcome ``Details``, each carrying its
(flag, variation, reason) counter (``Snapshot.count_outcomes``), where telemetry off
shares outcome objects between equal flags. This evaluates every flag of
``sdk_bench.py``'s 10,000-flag mix once, telemetry off and on (twice each, alternating),
and prints the memory kept per flag evaluated: compiled flags plus, with telemetry on,
their outcomes' counters.
"""

from __future__ import annotations

import gc
import sys
import tempfile
import tracemalloc
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from flagstone.canonical import canonical_json
from flagstone.envelope import TrustedKey, public_key_raw, sign_payload
from flagstone.sdk import Client

# Run as a script, its folder is on sys.path: the flags are sdk_bench's.
from sdk_bench import ENVIRONMENT, PROJECT, mixed_flags, payload_of

FLAGS = 10_000
CONTEXT = {"key": "user-1", "plan": "pro", "country": "DE", "email": "a@example.com"}


def kept_bytes(path: Path, trusted: TrustedKey, flag_keys: list[str], counting: bool) -> int:
    """Bytes still allocated after evaluating each flag once on a fresh client."""
    client = Client.from_file(
        path, environment=ENVIRONMENT, trusted_keys=[trusted], project=PROJECT, telemetry=counting
    )
    try:
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for key in flag_keys:
            client.evaluate(key, CONTEXT)
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        client.close()


def main() -> None:
    flags, segments = mixed_flags(FLAGS)
    private = Ed25519PrivateKey.generate()
    trusted = TrustedKey.from_public(public_key_raw(private))
    print(f"Python {sys.version.split()[0]}: memory kept per flag evaluated once ({FLAGS:,} flags)")
    with tempfile.TemporaryDirectory() as temporary:
        path = Path(temporary) / "latest.json"
        path.write_bytes(sign_payload(canonical_json(payload_of(flags, segments)), private))
        results: dict[bool, list[int]] = {False: [], True: []}
        for counting in (False, True, False, True):
            results[counting].append(kept_bytes(path, trusted, list(flags), counting))
    off, on = min(results[False]), min(results[True])
    print(f"  telemetry off {off / FLAGS:6.0f} bytes per flag, {off / 1e6:5.1f} MB")
    print(f"  telemetry on  {on / FLAGS:6.0f} bytes per flag, {on / 1e6:5.1f} MB")
    print(f"  counting adds {(on - off) / FLAGS:6.0f} bytes per flag evaluated")


if __name__ == "__main__":
    main()
