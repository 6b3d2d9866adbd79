"""Every performance figure of issue 18 in one run, as ratios against peers measured in
the same run (interleaved rounds, medians):

1. per evaluation, for every case of issue 18.1 (definitions from eval_bench.py):
   Flagstone's engine vs LaunchDarkly's server SDK (``ldclient``) vs flagd-core
   (``FlagdCore``) loaded with Flagstone's own flagd export of the same snapshot; and
   through OpenFeature, ``FlagstoneProvider`` vs the flagd in-process provider (file
   mode, on the same export). CPU µs per evaluation over distinct contexts;
2. the 1k/10k/50k-flag series (sdk_bench.py's realistic mix): process start to first
   evaluation and resident memory (VmRSS after the first evaluation), each measured in
   a fresh subprocess, Flagstone vs LaunchDarkly (file data source, same flags
   translated) vs flagd-core (on the export);
3. ``import flagstone.sdk`` vs flagd-core's and LaunchDarkly's imports (fresh
   subprocesses, interleaved, median);
4. the toolchain on a 10k-flag x 2-environment repository (validate_scale.py's
   generator): validate, compile of both environments and publish of both (signed,
   to a file target) as ratios to a bare CSafeLoader parse of the same files; then the
   CLI (``python -m flagstone``, wall time, in a git work tree) for ``validate``,
   ``compile``, ``eval``, ``check-change`` and ``diff``: cold (``--no-cache``), warm
   (cache filled, nothing changed) and after a one-flag change (cache filled, then one
   release file edited; the issue's target is at most 1 s);
5. stored snapshot size at 10k/50k/100k flags, none vs gzip (``publish.compress``), what
   gzip adds to publish and what inflating adds to an SDK fetch (snapshot_size.py).

    python3 benchmarks/all.py [--quick]

Absolute times depend on the machine and its load; the ratios are the result.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import eval_bench
import sdk_bench
import snapshot_size
import validate_scale
from flagstone.canonical import canonical_json
from flagstone.engine import Snapshot
from flagstone.envelope import TrustedKey, public_key_raw, sign_payload
from flagstone.flagd_export import export_flagd
from flagstone.sdk import Client

EVAL_CASES = [
    ("boolean on", "simple-flag"),
    ("3 rules + 25% rollout", "rules-flag"),
    ("1,000-key segment + rule", "segment-flag"),
    ("prerequisite chain of 3", "chain-flag"),
    ("50/50 split by account", "account-flag"),
    ("20 matches/starts_with", "regex-flag"),
    ("semver, 10,000 versions", "semver-flag"),
]
STRING_FLAGS = {"regex-flag"}
BIG_SNAPSHOT_BYTES = 1 << 30  # the series loads 50k flags, above the default cap


def signed_file(
    directory: Path, name: str, flags: dict[str, Any], segments: dict[str, Any]
) -> tuple[Path, Ed25519PrivateKey]:
    private = Ed25519PrivateKey.generate()
    path = directory / name
    path.write_bytes(sign_payload(canonical_json(sdk_bench.payload_of(flags, segments)), private))
    return path, private


# --------------------------------------------------------------------------- 1. evaluation


def evaluation_table(contexts_count: int, repeats: int, directory: Path) -> None:
    from openfeature import api
    from openfeature.contrib.provider.flagd import FlagdProvider
    from openfeature.contrib.provider.flagd.config import ResolverType
    from openfeature.contrib.tools.flagd.core import FlagdCore
    from openfeature.evaluation_context import EvaluationContext

    from flagstone.sdk.openfeature import FlagstoneProvider

    contexts = eval_bench.make_contexts(contexts_count)
    payload = eval_bench.flagstone_payload()
    snapshot = Snapshot.from_payload(payload)
    exported = export_flagd(payload, skip_unsupported=True)
    refused = {refusal.flag for refusal in exported.refused} if exported.refused else set()
    flagd_path = directory / "flagd.json"
    flagd_path.write_text(json.dumps(exported.document))
    core = FlagdCore()
    core.set_flags(json.dumps(exported.document))

    path, private = signed_file(directory, "eval.json", payload["flags"], payload["segments"])
    client = Client.from_file(
        path,
        environment=sdk_bench.ENVIRONMENT,
        trusted_keys=[TrustedKey.from_public(public_key_raw(private))],
        project=sdk_bench.PROJECT,
    )
    api.set_provider_and_wait(FlagstoneProvider(client, close_client=False), domain="flagstone")
    api.set_provider_and_wait(
        FlagdProvider(resolver_type=ResolverType.FILE, offline_flag_source_path=str(flagd_path)),
        domain="flagd",
    )
    of_flagstone = api.get_client("flagstone")
    of_flagd = api.get_client("flagd")
    of_contexts = [
        EvaluationContext(c["key"], {k: v for k, v in c.items() if k != "key"}) for c in contexts
    ]

    # Equivalence first: flagd-core on the export and both OpenFeature clients must give
    # Flagstone's value for every context of the sample, on every exported case.
    sample = range(min(len(contexts), 2000))
    for _label, key in EVAL_CASES:
        default: Any = "" if key in STRING_FLAGS else False
        for i in sample:
            ours = snapshot.evaluate(key, contexts[i]).value
            through_of = (
                of_flagstone.get_string_value(key, default, of_contexts[i])
                if key in STRING_FLAGS
                else of_flagstone.get_boolean_value(key, default, of_contexts[i])
            )
            if through_of != ours:
                raise SystemExit(f"{key}: FlagstoneProvider gives {through_of}, engine {ours}")
            if key in refused:
                continue
            resolve = (
                core.resolve_string_value if key in STRING_FLAGS else core.resolve_boolean_value
            )
            theirs = resolve(key, default, of_contexts[i]).value
            if theirs != ours:
                raise SystemExit(f"{key}: flagd-core on the export gives {theirs}, ours {ours}")

    launchdarkly = eval_bench.LaunchDarkly(directory)
    rows = []
    try:
        for label, key in EVAL_CASES:
            runners = {
                "flagstone": eval_bench.flagstone_runner(key, contexts),
                "launchdarkly": launchdarkly.runner(key, contexts),
                "of flagstone": _openfeature_runner(of_flagstone, key, of_contexts),
            }
            if key not in refused:
                runners["flagd-core"] = _core_runner(core, key, of_contexts)
                runners["of flagd"] = _openfeature_runner(of_flagd, key, of_contexts)
            rows.append((label, eval_bench.median_microseconds(runners, len(contexts), repeats)))
    finally:
        launchdarkly.close()
        api.shutdown()
        client.close()

    print(
        f"1. per evaluation: {len(contexts):,} distinct contexts, median of {repeats} "
        "interleaved runs, CPU µs per evaluation (flagd: Flagstone's flagd export; values "
        f"checked equal to Flagstone's on {len(sample):,} contexts per case)"
    )
    header = (
        f"   {'case':<26}{'flagstone':>10}{'LD':>8}{'flagd-core':>11}{'LD/ours':>9}"
        f"{'core/ours':>10} | {'OF+flagstone':>12}{'OF+flagd':>10}{'ratio':>8}"
    )
    print(header)
    for label, medians in rows:
        ours, ld = medians["flagstone"], medians["launchdarkly"]
        core_us, of_ours, of_flagd_us = (
            medians.get("flagd-core"),
            medians["of flagstone"],
            medians.get("of flagd"),
        )
        print(
            f"   {label:<26}{ours:10.2f}{ld:8.2f}{_cell(core_us, 11)}{ld / ours:8.1f}x"
            f"{_ratio(core_us, ours, 10)} | {of_ours:12.2f}{_cell(of_flagd_us, 10)}"
            f"{_ratio(of_flagd_us, of_ours, 8)}"
        )
    if refused:
        print(f"   n/a: not exportable to flagd exactly ({', '.join(sorted(refused))})")


def _cell(value: float | None, width: int) -> str:
    return f"{value:{width}.2f}" if value is not None else f"{'n/a':>{width}}"


def _ratio(theirs: float | None, ours: float, width: int) -> str:
    return f"{theirs / ours:{width - 1}.1f}x" if theirs is not None else f"{'n/a':>{width}}"


def _openfeature_runner(client: Any, key: str, contexts: list[Any]) -> Callable[[], None]:
    if key in STRING_FLAGS:
        get_string = client.get_string_value

        def run_string() -> None:
            for context in contexts:
                get_string(key, "", context)

        return run_string
    get_boolean = client.get_boolean_value

    def run() -> None:
        for context in contexts:
            get_boolean(key, False, context)

    return run


def _core_runner(core: Any, key: str, contexts: list[Any]) -> Callable[[], None]:
    resolve = core.resolve_string_value if key in STRING_FLAGS else core.resolve_boolean_value
    default: Any = "" if key in STRING_FLAGS else False

    def run() -> None:
        for context in contexts:
            resolve(key, default, context)

    return run


# --------------------------------------------------------------------------- 2. start-up, RSS

# Each child prints the seconds since the parent spawned it (FLAGSTONE_BENCH_SPAWNED,
# epoch seconds) and its VmRSS in kB, right after its first evaluation; then evaluates
# every flag once (``evaluate_all``: Flagstone's SDK compiles a flag on its first
# evaluation, so this is its memory once everything is in use) and prints VmRSS again;
# then leaves without tearing down (LaunchDarkly's threads would otherwise delay the exit).
_VM_RSS = (
    "next(int(line.split()[1]) for line in open('/proc/self/status') if line.startswith('VmRSS:'))"
)
_RSS = (
    "import os, time\nelapsed = time.time() - float(os.environ['FLAGSTONE_BENCH_SPAWNED'])\n"
    f"rss = {_VM_RSS}\nevaluate_all()\n"
    f"print(elapsed, rss, {_VM_RSS}, flush=True)\nos._exit(0)\n"
)
CHILDREN = {
    "flagstone": (
        "import sys\nfrom flagstone.sdk import Client\nfrom flagstone.envelope import TrustedKey\n"
        "client = Client.from_file(sys.argv[1], environment=sys.argv[3], project=sys.argv[4],"
        " trusted_keys=[TrustedKey.from_public(bytes.fromhex(sys.argv[2]))],"
        f" max_bytes={BIG_SNAPSHOT_BYTES})\n"
        "assert client.version is not None, client.last_error\n"
        "client.bool_value('flag-00000', {'key': 'user-1'})\n"
        "def evaluate_all():\n"
        "    for key in client.snapshot.flags: client.bool_value(key, {'key': 'user-1'})\n" + _RSS
    ),
    "launchdarkly": (
        "import sys, json, logging\nimport ldclient\nfrom ldclient.config import Config\n"
        "from ldclient.integrations import Files\n"
        # The file data source parses JSON with pure-Python YAML when PyYAML is present
        # (seconds at 1,000 flags); LaunchDarkly's streaming path uses json.loads.
        "from ldclient.impl.integrations.files import file_data_source\n"
        "file_data_source._FileDataSource._parse_content = lambda self, text: json.loads(text)\n"
        "logging.getLogger('ldclient').setLevel(logging.ERROR)\n"
        "client = ldclient.LDClient(config=Config('k', send_events=False,"
        " diagnostic_opt_out=True,"
        " update_processor_class=Files.new_data_source(paths=[sys.argv[1]])), start_wait=120)\n"
        "assert client.is_initialized()\n"
        "client.variation('flag-00000', ldclient.Context.create('user-1'), False)\n"
        "def evaluate_all():\n"
        "    client.all_flags_state(ldclient.Context.create('user-1'))\n" + _RSS
    ),
    "flagd-core": (
        "import sys\nfrom openfeature.contrib.tools.flagd.core import FlagdCore\n"
        "from openfeature.evaluation_context import EvaluationContext\n"
        "core = FlagdCore()\ncore.set_flags(open(sys.argv[1]).read())\n"
        "core.resolve_boolean_value('flag-00000', False, EvaluationContext('user-1'))\n"
        "def evaluate_all():\n"
        "    import json\n"
        "    for key in json.load(open(sys.argv[1]))['flags']:\n"
        "        core.resolve_boolean_value(key, False, EvaluationContext('user-1'))\n" + _RSS
    ),
}


def launchdarkly_mix(count: int) -> dict[str, Any]:
    """sdk_bench.mixed_flags(count) in LaunchDarkly's data format, construct for construct
    (a progressive rollout at its ``ten`` stage: the staff segment, then 10 %)."""
    flags, segments = sdk_bench.mixed_flags(count)

    def clause(attribute: str, op: str, values: list[Any]) -> dict[str, Any]:
        return {"attribute": attribute, "op": op, "values": values, "negate": False}

    ld_ops = {"eq": "in", "ends_with": "endsWith", "semver_lt": "semVerLessThan"}

    def clauses(condition: dict[str, Any]) -> list[dict[str, Any]]:
        if "all" in condition:
            return [c for part in condition["all"] for c in clauses(part)]
        if "segment" in condition:
            return [clause("", "segmentMatch", [condition["segment"]])]
        return [clause(condition["attribute"], ld_ops[condition["op"]], condition["values"])]

    def rollout(on_weight: int) -> dict[str, Any]:
        weights = [
            {"variation": 0, "weight": on_weight},
            {"variation": 1, "weight": 100000 - on_weight},
        ]
        return {"rollout": {"variations": weights}}

    ld_flags = {}
    for key, flag in flags.items():
        rules = [
            {
                "id": f"r{n}",
                "variation": 0 if rule["serve"]["variation"] == "on" else 1,
                "clauses": clauses(rule["condition"]),
            }
            for n, rule in enumerate(flag["rules"])
        ]
        default = flag["default"]
        if "split" in default:
            fallthrough = rollout(default["split"]["weights"][0]["weight"])
        elif "progression" in default:
            staff = default["progression"]["stages"][0]["segments"]
            rules.append({"id": "staff", "variation": 0, "clauses": clauses({"segment": staff[0]})})
            fallthrough = rollout(10000)
        else:
            fallthrough = {"variation": 0 if default["variation"] == "on" else 1}
        targets = [{"variation": 0, "values": t["keys"]} for t in flag["targets"]]
        ld_flags[key] = {
            "key": key,
            "version": 1,
            "on": True,
            "variations": [True, False],
            "offVariation": 1,
            "fallthrough": fallthrough,
            "targets": targets,
            "rules": rules,
            "prerequisites": [],
            "salt": key,
        }
    ld_segments = {
        key: {
            "key": key,
            "version": 1,
            "included": segment["include"],
            "excluded": segment["exclude"],
            "rules": [{"id": "r0", "clauses": [clauses(rule)[0] for rule in segment["rules"]]}],
            "salt": key,
        }
        for key, segment in segments.items()
    }
    return {"flags": ld_flags, "segments": ld_segments}


def startup_series(
    sizes: Sequence[int], rounds: int, directory: Path, flagd_core_up_to: int
) -> None:
    print(
        f"2. process start to first evaluation (wall, s) and resident memory after it (MB), "
        f"fresh subprocesses, median of {rounds} interleaved round(s)"
    )
    print(
        "   (then RSS with every flag evaluated once, MB: Flagstone compiles a flag on its "
        "first evaluation)"
    )
    print(
        f"   {'flags':>6} {'flagstone':>16} {'LaunchDarkly':>16} {'flagd-core':>16}"
        f" {'start ours/LD':>14} {'RSS ours/LD':>12} {'RSS ours/core':>14} | "
        f"{'all evaluated: ours':>19} {'LD':>6} {'ours/LD':>8}"
    )
    verdicts: list[str] = []
    for size in sizes:
        flags, segments = sdk_bench.mixed_flags(size)
        path, private = signed_file(directory, f"mix-{size}.json", flags, segments)
        payload = sdk_bench.payload_of(flags, segments)
        flagd_path = directory / f"flagd-{size}.json"
        flagd_path.write_text(json.dumps(export_flagd(payload).document))
        ld_path = directory / f"ld-{size}.json"
        ld_path.write_text(json.dumps(launchdarkly_mix(size)))
        del flags, segments, payload
        argv = {
            "flagstone": [
                str(path),
                public_key_raw(private).hex(),
                sdk_bench.ENVIRONMENT,
                sdk_bench.PROJECT,
            ],
            "launchdarkly": [str(ld_path)],
            "flagd-core": [str(flagd_path)],
        }
        samples: dict[str, list[tuple[float, float, float]]] = {name: [] for name in CHILDREN}
        for _ in range(rounds):
            for name, script in CHILDREN.items():
                if name == "flagd-core" and size > flagd_core_up_to:
                    continue
                samples[name].append(_child(script, argv[name]))
        start = {n: statistics.median(s[0] for s in v) for n, v in samples.items() if v}
        rss = {n: statistics.median(s[1] for s in v) for n, v in samples.items() if v}
        warm = {n: statistics.median(s[2] for s in v) for n, v in samples.items() if v}
        cells = "".join(
            f" {start[n]:7.2f}s {rss[n]:6.0f}MB" if n in start else f" {'(skipped)':>16}"
            for n in CHILDREN
        )
        core_ratio = (
            f"{rss['flagstone'] / rss['flagd-core']:13.2f}x" if "flagd-core" in rss else " " * 14
        )
        rss_ratio = rss["flagstone"] / rss["launchdarkly"]
        start_ratio = start["flagstone"] / start["launchdarkly"]
        print(
            f"   {size:>6}{cells} {start_ratio:13.2f}x"
            f" {rss_ratio:11.2f}x {core_ratio} | {warm['flagstone']:17.0f}MB"
            f" {warm['launchdarkly']:4.0f}MB {warm['flagstone'] / warm['launchdarkly']:7.2f}x"
        )
        # Issue 18.2's targets.
        if size in (10_000, 50_000):
            met = "met" if rss_ratio <= 0.6 else "MISSED"
            verdicts.append(f"RSS at {size:,} flags ≤ 0.6x LaunchDarkly's: {rss_ratio:.2f}x, {met}")
        if size == 50_000:
            met = "met" if start["flagstone"] <= 0.8 and start_ratio <= 0.25 else "MISSED"
            verdicts.append(
                f"start to first evaluation at 50,000 flags ≤ 0.8 s and ≤ 0.25x LaunchDarkly's: "
                f"{start['flagstone']:.2f} s, {start_ratio:.2f}x, {met}"
            )
    for verdict in verdicts:
        print(f"   target: {verdict}")
    if any(size > flagd_core_up_to for size in sizes):
        print(
            f"   flagd-core skipped above {flagd_core_up_to:,} flags (--quick; it takes tens of s)"
        )


def _child(script: str, argv: list[str]) -> tuple[float, float, float]:
    env = {**os.environ, "FLAGSTONE_BENCH_SPAWNED": repr(time.time())}
    done = subprocess.run(
        [sys.executable, "-c", script, *argv], capture_output=True, text=True, timeout=600, env=env
    )
    if done.returncode != 0:
        raise SystemExit(f"child failed: {done.stderr.strip().splitlines()[-1:]}")
    elapsed, rss, warm_rss = done.stdout.split()[-3:]
    return float(elapsed), int(rss) / 1024, int(warm_rss) / 1024


# --------------------------------------------------------------------------- 3. imports

IMPORTS = {
    "import flagstone.sdk": "import flagstone.sdk",
    "flagd-core (FlagdCore)": "from openfeature.contrib.tools.flagd.core import FlagdCore",
    "import ldclient": "import ldclient",
}


def import_times(repeats: int) -> None:
    clocks = ("process_time", "perf_counter")
    samples: dict[tuple[str, str], list[float]] = {
        (label, clock): [] for label in IMPORTS for clock in clocks
    }
    for _ in range(repeats):
        for label, statement in IMPORTS.items():
            for clock in clocks:
                samples[label, clock].append(sdk_bench.import_time_ms(statement, 1, clock))
    medians = {key: statistics.median(values) for key, values in samples.items()}
    print(
        f"3. import time, fresh interpreters, median of {repeats} interleaved rounds "
        "(CPU ms, then wall ms)"
    )
    for label in IMPORTS:
        cpu, wall = (medians[label, clock] for clock in clocks)
        ours = medians["import flagstone.sdk", "process_time"]
        print(
            f"   {label:<26}{cpu:8.1f} ms CPU {wall:8.1f} ms wall  {cpu / ours:5.2f}x flagstone.sdk"
        )
    ours = medians["import flagstone.sdk", "process_time"]
    met = "met" if ours <= 40 else "MISSED"
    print(f"   target: import flagstone.sdk ≤ 40 ms CPU: {ours:.1f} ms, {met}")


# --------------------------------------------------------------------------- 4. toolchain


def toolchain(flag_count: int, runs: int, directory: Path) -> None:
    from flagstone.compile import compile_environment
    from flagstone.keys import SigningKeys, public_key_entry
    from flagstone.model import read_project
    from flagstone.publish import publish_project
    from flagstone.validate import validate_repository

    root = directory / "repo"
    files = validate_scale.write_repository(root, flag_count, 200)
    key = Ed25519PrivateKey.generate()
    signing = SigningKeys((key,), "benchmark key")
    entry = public_key_entry(key)
    with (root / "flagstone.yaml").open("a") as config:
        config.write(
            f"signing:\n  threshold: 1\n  keys:\n"
            f"    - {{keyid: {entry['keyid']}, public: {entry['public']}}}\n"
        )
    target = (directory / "published").as_uri()
    clock = iter(range(1, 10_000))

    def compile_both() -> None:
        project = read_project(root)
        for environment in project.environments:
            compile_environment(project, environment)

    def publish_both() -> None:
        results = publish_project(
            read_project(root),
            signing,
            to=target,
            force=True,
            now=lambda: 1_800_000_000.0 + next(clock),
            source={"commit": None, "ref": None},
        )
        if not results:
            raise SystemExit("publish published nothing")

    medians = validate_scale.median_times(
        {
            "bare CSafeLoader parse": lambda: validate_scale.bare_parse(files),
            "validate (library)": lambda: validate_repository(root),
            "compile, 2 environments": compile_both,
            "publish, 2 environments": publish_both,
        },
        runs,
        time.process_time,
    )
    bare = medians["bare CSafeLoader parse"]
    print(
        f"4. toolchain: {flag_count:,} flags x 2 environments + 200 segments "
        f"({len(files):,} files), CPU s, median of {runs} interleaved run(s)"
    )
    for label, seconds in medians.items():
        print(f"   {label:<26}{seconds:8.2f} s  {seconds / bare:5.2f}x bare parse")
    bare_wall = validate_scale.median_times(
        {"bare": lambda: validate_scale.bare_parse(files)}, runs
    )["bare"]
    cli_commands(root, runs, directory, bare_wall)


def cli_commands(root: Path, runs: int, directory: Path, bare_wall: float) -> None:
    """The five commands of issue 18.4 through the CLI: cold, warm and after a one-flag
    change, wall time (the user waits for the process, start-up included)."""
    env = {
        **os.environ,
        "GITHUB_ACTIONS": "",
        "XDG_CACHE_HOME": str(directory / "user-cache"),  # the cache key of this run
    }
    env.pop("FLAGSTONE_NO_CACHE", None)
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.invalid"]
    subprocess.run([*git, "init", "-q", "-b", "main"], cwd=root, check=True)
    subprocess.run([*git, "add", "-A"], cwd=root, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "generated"], cwd=root, check=True)
    commands = {
        "validate": ["validate", "--format", "text"],
        "compile": ["compile", "--env", "production", "-o", str(directory / "payload.json")],
        "eval": ["eval", "flag-00001", "--env", "production", "--context", '{"key": "u-1"}'],
        "check-change": ["check-change", "--base", "HEAD", "--format", "text"],
        "diff": ["diff", "HEAD", "--format", "text"],
    }

    def timed(arguments: list[str]) -> float:
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "flagstone", *arguments, "--repo", str(root)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        elapsed = time.perf_counter() - start
        if done.returncode not in (0, 1) or "Traceback" in done.stderr:
            raise SystemExit(f"flagstone {' '.join(arguments)} failed: {done.stderr}")
        return elapsed

    edits = iter(range(2, 10_000))

    def edit_one_flag() -> None:
        # A staging target of a different flag each time: one file of one flag changes.
        number = next(edits)
        release = root / "flags" / f"flag-{number:05d}" / "staging.yaml"
        release.write_text(release.read_text().replace(f"qa-{number}]", f"qa-{number}, qa-x]"))

    times: dict[str, dict[str, list[float]]] = {name: {} for name in commands}
    for _ in range(runs):
        for name, arguments in commands.items():
            row = times[name]
            row.setdefault("cold", []).append(timed([*arguments, "--no-cache"]))
            timed(arguments)  # fill the cache
            row.setdefault("warm", []).append(timed(arguments))
            edit_one_flag()
            row.setdefault("edit", []).append(timed(arguments))
    print(
        f"   CLI, wall s, median of {runs} run(s); bare parse {bare_wall:.2f} s wall; "
        "target after a one-flag change: <= 1 s"
    )
    print(f"   {'command':<14}{'cold':>8}{'warm':>8}{'1 flag':>8}   cold/bare  1-flag/bare")
    for name, row in times.items():
        cold, warm, edit = (statistics.median(row[kind]) for kind in ("cold", "warm", "edit"))
        print(
            f"   {name:<14}{cold:8.2f}{warm:8.2f}{edit:8.2f}   "
            f"{cold / bare_wall:8.2f}x  {edit / bare_wall:10.2f}x"
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer contexts and rounds (~3 min)")
    parser.add_argument("--sizes", default=None, help="comma-separated flag counts for part 2")
    parser.add_argument("--contexts", type=int, default=None)
    parser.add_argument("--toolchain-flags", type=int, default=10_000)
    parser.add_argument("--only", default="12345", help="which parts to run, e.g. 13")
    args = parser.parse_args(argv)
    quick = args.quick
    contexts = args.contexts or (3_000 if quick else 100_000)
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else [1000, 10_000, 50_000]
    print(
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f}{' (--quick)' if quick else ''}"
    )
    with tempfile.TemporaryDirectory(prefix="flagstone-all-") as temporary:
        directory = Path(temporary)
        # Children import from bytecode like an installed package does (site-packages
        # is compiled at install; a source tree run with PYTHONDONTWRITEBYTECODE would
        # recompile Flagstone in every child), cached outside the tree.
        os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
        os.environ["PYTHONPYCACHEPREFIX"] = str(directory / "pycache")
        for statement in IMPORTS.values():
            subprocess.run([sys.executable, "-c", statement], check=True)
        if "1" in args.only:
            evaluation_table(contexts, 3 if quick else 7, directory)
        if "2" in args.only:
            startup_series(sizes, 1 if quick else 3, directory, 10_000 if quick else sizes[-1])
        if "3" in args.only:
            import_times(5 if quick else 11)
        if "4" in args.only:
            toolchain(args.toolchain_flags, 1 if quick else 3, directory)
        if "5" in args.only:
            print("5. stored snapshot size, publish.compress none vs gzip (snapshot_size.py)")
            private = Ed25519PrivateKey.generate()
            for count in [10_000] if quick else [10_000, 50_000, 100_000]:
                snapshot_size.measure(count, 3 if quick else 7, private, directory)


if __name__ == "__main__":
    main()
