"""SDK benchmark (issue 5, item 7): evaluation cost, import time, and the time to get a
10,000-flag snapshot ready. Prints medians and ratios measured in this one run.

    python benchmarks/sdk_bench.py            # full run (~1 minute)
    python benchmarks/sdk_bench.py --quick    # fewer repetitions
    python benchmarks/sdk_bench.py --telemetry  # only telemetry's cost (on − off), ~1 minute

Evaluation: one boolean flag, equivalent in every SDK — ``true`` when the context's
``plan`` is ``"pro"`` (a rule on an attribute), ``false`` otherwise — evaluated for a
context that matches, through:

* the bare engine (``flagstone.engine.Snapshot.evaluate``): the floor;
* ``flagstone.sdk.Client.bool_value`` and ``Client.evaluate`` (target: ≤ 1.5× the engine);
* the OpenFeature client over ``FlagstoneProvider``;
* the LaunchDarkly server SDK (``ldclient``, TestData source, events off);
* the flagd in-process provider in file mode (``openfeature-provider-flagd``) through the
  OpenFeature client, and flagd's evaluator (``FlagdCore``) called directly.

Telemetry (``Client(telemetry=True)``: evaluation counters) in its own section, side by
side with telemetry off in the same interleaved rounds: ``bool_value`` and ``evaluate`` on
the flag above, and ``bool_value`` on a 50/50 split (a bucketed outcome, a new ``Details``
per evaluation); printed as "telemetry on − off … µs added per evaluation" (target ≤ 0.1
µs). ``--telemetry`` runs only that section, with more rounds. Instruction counts for the
same comparison, robust on a busy machine: ``benchmarks/telemetry_instructions.py``.

Snapshot: 10,000 flags of a realistic mix (plain on/off with a few targets, attribute
rules, segment rules with a 50/50 split, progressive rollouts) and 50 segments, signed;
``Client.from_file`` = read + verify signature + parse + payload checks (incl. digest) +
checking every flag by compiling it and packing the specs (the SDK compiles each flag
again on its first evaluation), median of several runs (target: ≤ 250 ms), with each step
timed on its own (as the client runs it, then the full canonical digest and the
``from_payload`` forms that ``flagstone verify`` and the toolchain use, for comparison).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from flagstone.canonical import canonical_json, content_digest
from flagstone.engine import Snapshot
from flagstone.envelope import (
    TrustedKey,
    check_snapshot,
    parse_payload,
    public_key_raw,
    sign_payload,
    verify_envelope,
)
from flagstone.sdk import Client

FLAG = "bench-flag"
ENVIRONMENT = "production"
PROJECT = "bench"


def timestamp(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(seconds)))


def payload_of(flags: dict[str, Any], segments: dict[str, Any], version: int = 1) -> dict[str, Any]:
    now = time.time()
    return {
        "format": "flagstone.snapshot/1",
        "project": PROJECT,
        "environment": ENVIRONMENT,
        "version": version,
        "published_at": timestamp(now),
        "expires": timestamp(now + 30 * 86400),
        "source": {"commit": None, "ref": None},
        "digest": content_digest(flags, segments),
        "flags": flags,
        "segments": segments,
    }


def boolean_flag(
    rules: list[dict[str, Any]], default: dict[str, Any], targets: list[str] | None = None
) -> dict[str, Any]:
    return {
        "type": "boolean",
        "kind": "release",
        "variations": {"on": True, "off": False},
        "off_variation": "off",
        "enabled": True,
        "prerequisites": [],
        "targets": [{"variation": "on", "keys": targets}] if targets else [],
        "rules": rules,
        "default": default,
    }


PRO_RULE = {
    "name": "pro plan",
    "condition": {"attribute": "plan", "op": "eq", "values": ["pro"]},
    "serve": {"variation": "on"},
}


def mixed_flags(count: int, *, plain: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """``count`` flags in a realistic mix (``plain``: all simple on/off flags with a few
    targets), and the segments they use."""
    segments = {
        f"segment-{i}": {
            "include": [f"user-{i}-{j}" for j in range(5)],
            "exclude": [],
            "rules": [{"attribute": "email", "op": "ends_with", "values": [f"@team{i}.example"]}],
        }
        for i in range(50)
    }
    flags: dict[str, Any] = {}
    for i in range(count):
        key = f"flag-{i:05d}"
        kind = 0 if plain else i % 10
        if kind < 4:  # plain on/off, a few individual targets
            flags[key] = boolean_flag([], {"variation": "off"}, [f"user-{i}", f"user-{i + 1}"])
        elif kind < 7:  # attribute rules
            flags[key] = boolean_flag(
                [
                    PRO_RULE,
                    {
                        "name": "old android",
                        "condition": {
                            "all": [
                                {"attribute": "platform", "op": "eq", "values": ["android"]},
                                {
                                    "attribute": "app_version",
                                    "op": "semver_lt",
                                    # A threshold of its own, so no two flags of the
                                    # mix are identical (a packed load checks an
                                    # identical flag once: that must not flatter it).
                                    "values": [f"{5 + i // 1000}.{i % 1000}.0"],
                                },
                            ]
                        },
                        "serve": {"variation": "off"},
                    },
                ],
                {"variation": "off"},
            )
        elif kind < 9:  # a segment rule and a 50/50 split
            flags[key] = boolean_flag(
                [
                    {
                        "name": "team",
                        "condition": {"segment": f"segment-{i % 50}"},
                        "serve": {"variation": "on"},
                    }
                ],
                {
                    "split": {
                        "bucket_by": "key",
                        "seed": key,
                        "weights": [
                            {"variation": "on", "weight": 50000},
                            {"variation": "off", "weight": 50000},
                        ],
                    }
                },
            )
        else:  # a progressive rollout
            flags[key] = boolean_flag(
                [],
                {
                    "progression": {
                        "variation": "on",
                        "baseline": "off",
                        "bucket_by": "key",
                        "seed": key,
                        "current": "ten",
                        "stages": [
                            {
                                "name": "staff",
                                "segments": [f"segment-{i % 50}"],
                                "weight": 0,
                                "at": None,
                                "bake": None,
                            },
                            {
                                "name": "ten",
                                "segments": [],
                                "weight": 10000,
                                "at": None,
                                "bake": 86400,
                            },
                            {
                                "name": "all",
                                "segments": [],
                                "weight": 100000,
                                "at": None,
                                "bake": None,
                            },
                        ],
                    }
                },
            )
    return flags, segments


# --------------------------------------------------------------------------- timing


def per_call_us(
    evaluators: dict[str, Callable[[], object]], calls: int, repeats: int
) -> dict[str, float]:
    """Per evaluator, the median over ``repeats`` rounds of the mean µs per call of
    ``calls`` calls. Rounds interleave the evaluators, so a busy machine slows them
    all alike and the ratios stay fair."""
    for call in evaluators.values():
        for _ in range(min(calls, 1000)):
            call()
    samples: dict[str, list[float]] = {label: [] for label in evaluators}
    for _ in range(repeats):
        for label, call in evaluators.items():
            start = time.perf_counter()
            for _ in range(calls):
                call()
            samples[label].append((time.perf_counter() - start) / calls * 1e6)
    return {label: statistics.median(values) for label, values in samples.items()}


def median_ms(action: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``action()``; what it returns is freed outside the timing."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = action()
        samples.append((time.perf_counter() - start) * 1e3)
        del result
    return statistics.median(samples)


def import_time_ms(statement: str, repeats: int, clock: str = "perf_counter") -> float:
    """Median ms of ``statement`` in fresh interpreters, by ``time.<clock>`` (wall time;
    ``process_time``: CPU time, which waiting for a busy machine's cores does not
    inflate)."""
    script = (
        f"import time; start = time.{clock}(); {statement}; print((time.{clock}() - start) * 1000)"
    )
    samples = [
        float(
            subprocess.run(
                [sys.executable, "-c", script], check=True, capture_output=True, text=True
            ).stdout
        )
        for _ in range(repeats)
    ]
    return statistics.median(samples)


# --------------------------------------------------------------------------- peers


def launchdarkly_evaluator() -> tuple[Callable[[], object], Callable[[], None]]:
    import ldclient
    from ldclient.config import Config
    from ldclient.integrations.test_data import TestData

    data = TestData.data_source()
    data.update(
        data.flag(FLAG)
        .boolean_flag()
        .if_match("plan", "pro")
        .then_return(True)
        .fallthrough_variation(False)
    )
    client = ldclient.LDClient(
        Config(
            "bench-sdk-key", update_processor_class=data, send_events=False, diagnostic_opt_out=True
        )
    )
    context = ldclient.Context.builder("user-123").set("plan", "pro").build()
    assert client.variation(FLAG, context, False) is True
    return (lambda: client.variation(FLAG, context, False)), client.close


def flagd_definition() -> dict[str, Any]:
    return {
        "flags": {
            FLAG: {
                "state": "ENABLED",
                "variants": {"on": True, "off": False},
                "defaultVariant": "off",
                "targeting": {"if": [{"==": [{"var": "plan"}, "pro"]}, "on", "off"]},
            }
        }
    }


def flagd_provider_evaluator(directory: Path) -> Callable[[], object]:
    from openfeature import api
    from openfeature.contrib.provider.flagd import FlagdProvider
    from openfeature.contrib.provider.flagd.config import ResolverType
    from openfeature.evaluation_context import EvaluationContext

    path = directory / "flagd.json"
    path.write_text(json.dumps(flagd_definition()))
    provider = FlagdProvider(resolver_type=ResolverType.FILE, offline_flag_source_path=str(path))
    api.set_provider_and_wait(provider, domain="flagd")
    client = api.get_client("flagd")
    context = EvaluationContext("user-123", {"plan": "pro"})
    assert client.get_boolean_value(FLAG, False, context) is True
    return lambda: client.get_boolean_value(FLAG, False, context)


def flagd_core_evaluator() -> Callable[[], object]:
    from openfeature.contrib.tools.flagd.core import FlagdCore
    from openfeature.evaluation_context import EvaluationContext

    core = FlagdCore()
    core.set_flags(json.dumps(flagd_definition()))
    context = EvaluationContext("user-123", {"plan": "pro"})
    assert core.resolve_boolean_value(FLAG, False, context).value is True
    return lambda: core.resolve_boolean_value(FLAG, False, context)


# --------------------------------------------------------------------------- telemetry


SPLIT_FLAG = "bench-split"


def telemetry_cost(directory: Path, private: Ed25519PrivateKey, calls: int, repeats: int) -> None:
    """Prints what telemetry's counting adds per evaluation: the same getters on two
    clients of one snapshot, telemetry off and on, timed in the same interleaved rounds."""
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
    path = directory / "telemetry.json"
    path.write_bytes(sign_payload(canonical_json(payload_of(flags, {})), private))
    trusted = [TrustedKey.from_public(public_key_raw(private))]
    off = Client.from_file(path, environment=ENVIRONMENT, trusted_keys=trusted, project=PROJECT)
    on = Client.from_file(
        path, environment=ENVIRONMENT, trusted_keys=trusted, project=PROJECT, telemetry=True
    )
    assert on.telemetry is not None
    context = {"key": "user-123", "plan": "pro"}
    cases: dict[str, Callable[[Client], Callable[[], object]]] = {
        "Client.bool_value, rule flag": lambda c: lambda: c.bool_value(FLAG, context, False),
        "Client.evaluate, rule flag": lambda c: lambda: c.evaluate(FLAG, context, False),
        "Client.bool_value, 50/50 split": lambda c: (
            lambda: c.bool_value(SPLIT_FLAG, context, False)
        ),
    }
    print(
        f"telemetry: µs added per evaluation, on − off (median over {repeats} rounds of the "
        f"difference between {calls:,} calls off and {calls:,} on, back to back; target ≤ 0.1 µs)"
    )
    for label, make in cases.items():
        calls_off, calls_on = make(off), make(on)
        for call in (calls_off, calls_on):
            for _ in range(min(calls, 1000)):
                call()
        times: dict[bool, list[float]] = {False: [], True: []}
        added = []
        for round_index in range(repeats):
            # Back to back, in alternating order: a busy machine slows both alike.
            order = (False, True) if round_index % 2 == 0 else (True, False)
            for counting in order:
                call = calls_on if counting else calls_off
                start = time.perf_counter()
                for _ in range(calls):
                    call()
                times[counting].append((time.perf_counter() - start) / calls * 1e6)
            added.append(times[True][-1] - times[False][-1])
        before, after = statistics.median(times[False]), statistics.median(times[True])
        difference = statistics.median(added)
        verdict = "met" if difference <= 0.1 else "MISSED"
        print(
            f"  telemetry on − off, {label:31s} {before:6.3f} → {after:6.3f} µs: "
            f"{difference:+.3f} µs per evaluation ({verdict})"
        )
    made = len(cases) * (min(calls, 1000) + calls * repeats)
    counted = sum(on.telemetry.evaluation_counts().values())
    print(f"  (the counting client counted {counted:,} evaluations of the {made:,} made)")
    off.close()
    on.close()


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls and repetitions")
    parser.add_argument(
        "--telemetry", action="store_true", help="only telemetry's cost, with more rounds"
    )
    arguments = parser.parse_args()
    calls, repeats, load_repeats = (20_000, 5, 3) if arguments.quick else (50_000, 15, 7)

    private = Ed25519PrivateKey.generate()
    trusted = TrustedKey.from_public(public_key_raw(private))
    if arguments.telemetry:
        print(f"Python {sys.version.split()[0]} on {sys.platform}, {os.cpu_count()} CPUs")
        with tempfile.TemporaryDirectory() as temporary:
            telemetry_cost(Path(temporary), private, calls, 31 if not arguments.quick else 9)
        return

    print(f"Python {sys.version.split()[0]} on {sys.platform}, {os.cpu_count()} CPUs")
    print()
    print("import time (fresh interpreter, median)")
    imports = {
        "import flagstone.sdk": "import flagstone.sdk",
        "import flagstone.sdk.openfeature": "import flagstone.sdk.openfeature",
        "import ldclient": "import ldclient",
        "flagd provider": "from openfeature.contrib.provider.flagd import FlagdProvider",
    }
    for label, statement in imports.items():
        print(f"  {label:36s} {import_time_ms(statement, repeats):8.1f} ms")

    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(temporary)
        small_flags = {FLAG: boolean_flag([PRO_RULE], {"variation": "off"})}
        small = payload_of(small_flags, {})
        small_path = directory / "small.json"
        small_path.write_bytes(sign_payload(canonical_json(small), private))

        snapshot = Snapshot.from_payload(small)
        client = Client.from_file(
            small_path, environment=ENVIRONMENT, trusted_keys=[trusted], project=PROJECT
        )
        context = {"key": "user-123", "plan": "pro"}
        assert snapshot.evaluate(FLAG, context, False).value is True
        assert client.bool_value(FLAG, context, False) is True

        from openfeature import api
        from openfeature.evaluation_context import EvaluationContext

        from flagstone.sdk.openfeature import FlagstoneProvider

        api.set_provider_and_wait(FlagstoneProvider(client, close_client=False), domain="flagstone")
        of_client = api.get_client("flagstone")
        of_context = EvaluationContext("user-123", {"plan": "pro"})
        assert of_client.get_boolean_value(FLAG, False, of_context) is True

        ld_call, ld_close = launchdarkly_evaluator()
        evaluators: dict[str, Callable[[], object]] = {
            "flagstone engine (Snapshot.evaluate)": lambda: snapshot.evaluate(FLAG, context, False),
            "flagstone Client.bool_value": lambda: client.bool_value(FLAG, context, False),
            "flagstone Client.evaluate": lambda: client.evaluate(FLAG, context, False),
            "OpenFeature client + FlagstoneProvider": lambda: of_client.get_boolean_value(
                FLAG, False, of_context
            ),
            "LaunchDarkly ldclient.variation": ld_call,
            "OpenFeature client + flagd in-process (file)": flagd_provider_evaluator(directory),
            "flagd FlagdCore.resolve_boolean_value": flagd_core_evaluator(),
        }
        print()
        print(f"evaluation, µs per call (median of {repeats} interleaved rounds × {calls:,} calls)")
        results = per_call_us(evaluators, calls, repeats)
        engine = results["flagstone engine (Snapshot.evaluate)"]
        for label, micros in results.items():
            print(f"  {label:46s} {micros:8.2f} µs  {micros / engine:6.2f}× engine")
        ratio = results["flagstone Client.bool_value"] / engine
        print(
            f"  Client.bool_value / engine = {ratio:.2f} (target ≤ 1.5: {'met' if ratio <= 1.5 else 'MISSED'})"
        )
        ld_close()
        api.shutdown()

        print()
        telemetry_cost(directory, private, calls, repeats)

        print()
        flags, segments = mixed_flags(10_000)
        big = payload_of(flags, segments)
        envelope = sign_payload(canonical_json(big), private)
        big_path = directory / "latest.json"
        big_path.write_bytes(envelope)
        print(
            f"10,000-flag snapshot: {len(envelope) / 1e6:.1f} MB envelope, "
            f"{len(segments)} segments (median of {load_repeats} runs)"
        )

        def load() -> Client:
            client = Client.from_file(
                big_path, environment=ENVIRONMENT, trusted_keys=[trusted], project=PROJECT
            )
            assert client.version == 1, client.last_error
            return client  # freed by median_ms after the measurement, not inside it

        payload_bytes = verify_envelope(envelope, [trusted], 1)
        parsed = parse_payload(payload_bytes)
        # The steps as the client runs them: the digest compared with the signed bytes of
        # the content (check_snapshot's signed_payload), the freshly parsed payload
        # handed over to the compiler (owned=True, no private copy). The two lines after
        # them are what `flagstone verify` and a caller of the public API pay instead.
        steps = {
            "read file": lambda: big_path.read_bytes(),
            "verify signature (DSSE, Ed25519)": lambda: verify_envelope(envelope, [trusted], 1),
            "parse payload JSON": lambda: parse_payload(payload_bytes),
            "check payload (digest on signed bytes)": lambda: check_snapshot(
                parsed,
                project=PROJECT,
                environment=ENVIRONMENT,
                now=time.time(),
                signed_payload=payload_bytes,
            ),
            "check and pack (from_payload, packed)": lambda: Snapshot.from_payload(
                parsed, owned=True, packed=True
            ),
            "(toolchain) from_payload, all precompiled": lambda: Snapshot.from_payload(
                parsed, owned=True
            ),
            "(CLI) check with the canonical digest": lambda: check_snapshot(
                parsed, project=PROJECT, environment=ENVIRONMENT, now=time.time()
            ),
            "(API) from_payload with a private copy": lambda: Snapshot.from_payload(parsed),
        }
        # The client runs these steps with the cyclic GC paused; so are they timed here.
        for label, action in steps.items():
            gc.disable()
            try:
                print(f"  step: {label:40s} {median_ms(action, load_repeats):8.1f} ms")
            finally:
                gc.enable()
        total = median_ms(load, load_repeats)
        verdict = "met" if total <= 250 else "MISSED"
        print(
            f"  Client.from_file, load to ready          {total:8.1f} ms (target ≤ 250 ms: {verdict})"
        )
        in_use = load()
        full_collection = median_ms(gc.collect, load_repeats)
        del in_use
        print(f"  a full gc.collect() with it in memory    {full_collection:8.1f} ms")
        with_gc_on = median_ms(
            lambda: Snapshot.from_payload(parsed, owned=True, packed=True), load_repeats
        )
        print(
            f"  check and pack with the cyclic GC on     {with_gc_on:8.1f} ms (why the client pauses it)"
        )

        plain_flags, plain_segments = mixed_flags(10_000, plain=True)
        plain_envelope = sign_payload(
            canonical_json(payload_of(plain_flags, plain_segments)), private
        )
        plain_path = directory / "plain.json"
        plain_path.write_bytes(plain_envelope)
        plain_total = median_ms(
            lambda: Client.from_file(
                plain_path, environment=ENVIRONMENT, trusted_keys=[trusted], project=PROJECT
            ),
            load_repeats,
        )
        print(
            f"  for comparison, 10,000 plain on/off flags ({len(plain_envelope) / 1e6:.1f} MB): "
            f"Client.from_file {plain_total:.1f} ms"
        )


if __name__ == "__main__":
    main()
