"""Telemetry's counting cost in instructions per evaluation (issue 14, item 1), counted
by valgrind's callgrind: the same comparison as ``sdk_bench.py --telemetry`` (telemetry
off and on, the same getters on one snapshot), but in instructions executed, which a busy
machine does not change. Needs ``valgrind``; takes a few minutes.

    python benchmarks/telemetry_instructions.py

Each case runs in a child process under callgrind twice, with N and 2N evaluations; the
difference divided by N is the cost of one evaluation, free of start-up. String hashing is
fixed (``PYTHONHASHSEED=0``) so that dict probes, and so the counts, repeat exactly.
Instructions are not time (on the 2-core development machine counting runs about 6 to 7
instructions per ns: about 315 instructions, +0.045 µs): ``sdk_bench.py --telemetry``
says what they cost in µs.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from flagstone.canonical import canonical_json
from flagstone.envelope import TrustedKey, public_key_raw, sign_payload
from flagstone.sdk import Client

# Run as a script, its folder is on sys.path: the flags are sdk_bench's.
from sdk_bench import (
    ENVIRONMENT,
    FLAG,
    PRO_RULE,
    PROJECT,
    SPLIT_FLAG,
    boolean_flag,
    payload_of,
)

CASES = ("bool_value, rule flag", "evaluate, rule flag", "bool_value, 50/50 split")
EVALUATIONS = 20_000


def child(case: str, counting: bool, evaluations: int) -> None:
    """Evaluate ``evaluations`` times (after one warm-up) as ``case`` says."""
    flags = {
        FLAG: boolean_flag([PRO_RULE], {"variation": "off"}),
        SPLIT_FLAG: boolean_flag(
            [],
            {
                "split": {
                    "bucket_by": "key",
                    "seed": SPLIT_FLAG,
                    "weights": [
                        {"variation": "on", "weight": 50000},
                        {"variation": "off", "weight": 50000},
                    ],
                }
            },
        ),
    }
    private = Ed25519PrivateKey.generate()
    with tempfile.TemporaryDirectory() as temporary:
        path = Path(temporary) / "latest.json"
        path.write_bytes(sign_payload(canonical_json(payload_of(flags, {})), private))
        client = Client.from_file(
            path,
            environment=ENVIRONMENT,
            trusted_keys=[TrustedKey.from_public(public_key_raw(private))],
            project=PROJECT,
            telemetry=counting,
        )
    context = {"key": "user-123", "plan": "pro"}
    getter: Callable[[str, object, bool], object] = (
        client.evaluate if case.startswith("evaluate") else client.bool_value
    )
    flag = SPLIT_FLAG if "split" in case else FLAG
    for _ in range(evaluations + 1):
        getter(flag, context, False)


def instructions(case: str, counting: bool, evaluations: int) -> int:
    """Instructions callgrind counts for a whole child run."""
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        __file__,
        "--child",
        case,
        "on" if counting else "off",
        str(evaluations),
    ]
    environment = {**os.environ, "PYTHONHASHSEED": "0"}
    run = subprocess.run(command, capture_output=True, text=True, env=environment, check=True)
    found = re.search(r"Collected : (\d+)", run.stderr)
    if found is None:
        raise SystemExit(f"no instruction count from callgrind:\n{run.stderr[-2000:]}")
    return int(found.group(1))


def per_evaluation(case: str, counting: bool) -> float:
    once = instructions(case, counting, EVALUATIONS)
    twice = instructions(case, counting, 2 * EVALUATIONS)
    return (twice - once) / EVALUATIONS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=3, metavar=("CASE", "MODE", "N"), help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        case, mode, evaluations = arguments.child
        child(case, mode == "on", int(evaluations))
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    print(f"Python {sys.version.split()[0]}: instructions per evaluation (callgrind)")
    for case in CASES:
        off = per_evaluation(case, False)
        on = per_evaluation(case, True)
        print(
            f"  Client.{case:26s} off {off:7.0f}  on {on:7.0f}  "
            f"telemetry adds {on - off:5.0f} instructions ({(on - off) / off:+.1%})"
        )


if __name__ == "__main__":
    main()
