"""How long an emergency kill takes to reach every SDK client (issue 13).

    python benchmarks/kill_latency.py                 # 10 kills, 50 clients, ~2-3 minutes
    python benchmarks/kill_latency.py --kills 20 --clients 50

Set-up, all on loopback: moto's S3 server (``ThreadedMotoServer``, in its own process,
so its work does not compete with the clients for this process's GIL), a flag
repository with snapshot and emergency keys, one ``flagstone publish``, and 50
``flagstone.sdk.Client`` objects with DEFAULT settings (snapshot poll 30 s, override
poll 5 s), each with its own polling threads, all reading the bucket.

Each round runs ``flagstone kill checkout --env production --emergency --reason … --no-pr``
as a subprocess (what an on-call engineer types, CLI start-up included) and samples
every client every 10 ms until all of them serve the off variation. The latency of a
round is from the start of the command to the last client serving ``off``; the round
then runs ``--undo`` and waits until every client serves ``on`` again.

Printed: p50 and p99 of the round latency (the target is p99 ≤ the override poll
interval + 2 s), the same for each client's own latency, and how long the CLI took.
The floor is the CLI time plus up to one override poll interval (±10 % jitter).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from flagstone.envelope import TrustedKey, public_key_raw
from flagstone.keys import private_key_pem, public_key_entry
from flagstone.sdk import Client
from flagstone.sdk.overrides import DEFAULT_OVERRIDE_POLL_INTERVAL
from publish_helpers import commit, fixed_key, make_repo, write_key_file
from s3server import S3Server

EMERGENCY = fixed_key(21)
SAMPLE_EVERY = 0.01


def start_moto() -> tuple[subprocess.Popen[str], S3Server]:
    """moto's S3 server in a child process (it stops when its stdin closes)."""
    code = (
        "import sys\n"
        "from moto.server import ThreadedMotoServer\n"
        "server = ThreadedMotoServer(ip_address='127.0.0.1', port=0, verbose=False)\n"
        "server.start()\n"
        "print(server.get_host_and_port()[1], flush=True)\n"
        "sys.stdin.read()\n"
        "server.stop()\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # its request log
        text=True,
    )
    assert process.stdout is not None
    port = int(process.stdout.readline())
    return process, S3Server(host="127.0.0.1", port=port)


def make_flag_repository(directory: Path, bucket_url: str) -> Path:
    root = make_repo(directory / "repo", publish=f"target: {bucket_url}/flags")
    entry = public_key_entry(EMERGENCY)
    config = root / "flagstone.yaml"
    config.write_text(
        config.read_text().replace(
            "publish:\n",
            "  emergency:\n    keys:\n"
            f"      - {{keyid: {entry['keyid']}, public: {entry['public']}}}\npublish:\n",
        )
    )
    commit(root, "emergency keys")
    return root


def flagstone(root: Path, environment: dict[str, str], *args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "flagstone", *args],
        cwd=root,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"flagstone {' '.join(args)} failed: {done.stderr.strip()}")


def wait_for_all(clients: list[Client], value: bool, started: float, limit: float) -> list[float]:
    """Each client's latency (seconds after ``started``) to serve ``value``."""
    reached: list[float | None] = [None] * len(clients)
    context = {"key": "user-1"}
    while True:
        now = time.monotonic()
        for index, client in enumerate(clients):
            if reached[index] is None and client.bool_value("checkout", context) is value:
                reached[index] = now - started
        if all(r is not None for r in reached):
            return [r for r in reached if r is not None]
        if now - started > limit:
            missing = sum(r is None for r in reached)
            raise SystemExit(f"{missing} client(s) did not serve {value} within {limit:.0f}s")
        time.sleep(SAMPLE_EVERY)


def percentile(values: list[float], share: float) -> float:
    """Linear-interpolated percentile (``share`` in [0, 1])."""
    ordered = sorted(values)
    position = share * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--clients", type=int, default=50)
    options = parser.parse_args()

    moto, server = start_moto()
    clients: list[Client] = []
    try:
        environment = {**os.environ, **server.environment()}
        os.environ.update(server.environment())
        bucket = server.create_bucket("kill-latency")
        with tempfile.TemporaryDirectory() as scratch:
            root = make_flag_repository(Path(scratch), bucket.url)
            key_file = write_key_file(Path(scratch))
            flagstone(root, environment, "publish", "--key", str(key_file))
            emergency_environment = {
                **environment,
                "FLAGSTONE_EMERGENCY_KEY": private_key_pem(EMERGENCY).decode(),
            }
            for _ in range(options.clients):
                clients.append(
                    Client(
                        f"{bucket.url}/flags",
                        environment="production",
                        project="demo-shop",
                        trusted_keys=[TrustedKey.from_public(public_key_raw(fixed_key()))],
                        emergency_keys=[TrustedKey.from_public(public_key_raw(EMERGENCY))],
                    )
                )
            for client in clients:
                if not client.wait_until_ready(60):
                    raise SystemExit(f"a client never became ready: {client.last_error}")
            limit = DEFAULT_OVERRIDE_POLL_INTERVAL * 6 + 30
            rounds: list[float] = []
            per_client: list[float] = []
            cli_times: list[float] = []
            restores: list[float] = []
            for number in range(1, options.kills + 1):
                started = time.monotonic()
                flagstone(
                    root,
                    emergency_environment,
                    "kill",
                    "checkout",
                    "--env",
                    "production",
                    "--emergency",
                    "--reason",
                    f"benchmark kill {number}",
                    "--no-pr",
                )
                cli_times.append(time.monotonic() - started)
                latencies = wait_for_all(clients, False, started, limit)
                rounds.append(max(latencies))
                per_client.extend(latencies)
                print(
                    f"kill {number:2d}: all {len(clients)} clients off after {max(latencies):.2f}s "
                    f"(CLI {cli_times[-1]:.2f}s)",
                    flush=True,
                )
                started = time.monotonic()
                flagstone(
                    root,
                    emergency_environment,
                    "kill",
                    "checkout",
                    "--env",
                    "production",
                    "--emergency",
                    "--undo",
                )
                restores.append(max(wait_for_all(clients, True, started, limit)))
    finally:
        for client in clients:
            client.close()
        if moto.stdin is not None:
            moto.stdin.close()
        moto.wait(timeout=30)

    target = DEFAULT_OVERRIDE_POLL_INTERVAL + 2.0
    p99 = percentile(rounds, 0.99)
    print()
    print(
        f"{options.kills} kills, {options.clients} clients, default settings "
        f"(override poll {DEFAULT_OVERRIDE_POLL_INTERVAL:g} s), moto S3 on loopback"
    )
    print(
        f"  kill → every client off:   p50 {percentile(rounds, 0.5):.2f}s  "
        f"p99 {p99:.2f}s  max {max(rounds):.2f}s  (target p99 ≤ {target:g}s: "
        f"{'met' if p99 <= target else 'NOT met'})"
    )
    print(
        f"  kill → each client off:    p50 {percentile(per_client, 0.5):.2f}s  "
        f"p99 {percentile(per_client, 0.99):.2f}s"
    )
    print(
        f"  the kill command itself:   median {statistics.median(cli_times):.2f}s  "
        f"max {max(cli_times):.2f}s"
    )
    print(
        f"  undo → every client on:    p50 {percentile(restores, 0.5):.2f}s  "
        f"p99 {percentile(restores, 0.99):.2f}s"
    )


if __name__ == "__main__":
    main()
