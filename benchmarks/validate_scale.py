"""How fast is `flagstone validate` on a big repository?

Generates a repository of 10,000 flags x 2 environments + 200 segments in a temporary
directory and prints, in one run, the median wall time of:

* ``validate``: ``validate_repository(root)`` — strict load with positions,
  schema checks and every cross-file check (the library call ``flagstone validate`` makes);
* ``flagstone validate`` as a subprocess (adds interpreter start-up and reporting);
* ``bare parse``: ``yaml.load(..., Loader=yaml.CSafeLoader)`` of the same files — the
  floor for any validator that reads YAML with PyYAML;
* ``check-jsonschema``: the same files against the same schemas (4 invocations, one per
  schema) — what a team would run without Flagstone;

and the ratios. Target: validate <= 3x the bare parse.

    python benchmarks/validate_scale.py [--flags 10000] [--segments 200] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from flagstone.loader import cyclic_gc_paused
from flagstone.model import read_project
from flagstone.validate import validate_project, validate_repository

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "schemas"
TEAMS = ("platform", "checkout-eng", "checkout-pm", "growth", "search-eng")


def write_repository(root: Path, flags: int, segments: int) -> list[Path]:
    """A realistic repository; returns every YAML file written."""
    files: list[Path] = []

    def write(rel: str, text: str) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, "utf-8")
        files.append(path)

    teams = "".join(f'  {team}:\n    github: "@acme/{team}"\n' for team in TEAMS)
    write(
        "flagstone.yaml",
        f"project: scale\nenvironments: [staging, production]\nteams:\n{teams}admins: platform\n"
        "publish:\n  target: file://dist\n  expires_after: 30d\n",
    )
    for s in range(segments):
        rules = (
            f'rules:\n  - {{attribute: email, op: ends_with, value: "@team{s}.example"}}\n'
            f"  - all:\n      - {{attribute: plan, op: in, values: [pro, enterprise]}}\n"
            f"      - {{attribute: seats, op: gte, value: {s + 10}}}\n"
        )
        write(
            f"segments/segment-{s:04d}.yaml",
            f"# yaml-language-server: $schema=../schemas/segment.schema.json\n"
            f"name: Segment {s}\ndescription: Accounts of cohort {s}.\nowner: {TEAMS[s % 5]}\n"
            f"include: [user-{s}-1, user-{s}-2]\nexclude: [user-{s}-9]\n{rules}",
        )
    for f in range(flags):
        key = f"flag-{f:05d}"
        segment = f"segment-{f % segments:04d}"
        flavour = f % 4
        if flavour == 0:
            variations, off, on = "  on: true\n  off: false\n", "off", "on"
        elif flavour == 1:
            variations, off, on = "  small: 20\n  large: 100\n", "small", "large"
        elif flavour == 2:
            variations, off, on = "  classic: classic\n  neural: neural-v2\n", "classic", "neural"
        else:
            variations, off, on = (
                "  none: {show: false}\n  banner: {show: true, text: Hello, pages: [home, cart]}\n",
                "none",
                "banner",
            )
        prerequisite = (
            f"prerequisites:\n  - {{flag: flag-{f - 4:05d}, variation: on}}\n"
            if flavour == 0 and f >= 4
            else ""
        )
        write(
            f"flags/{key}/flag.yaml",
            f"# yaml-language-server: $schema=../../schemas/flag.schema.json\n"
            f"name: Flag {f}\ndescription: Generated flag number {f}.\nowner: {TEAMS[f % 5]}\n"
            f'kind: release\ntemporary: true\nexpires: "2027-06-01"\ntags: [scale, group-{f % 10}]\n'
            f"variations:\n{variations}off_variation: {off}\n{prerequisite}"
            f"delegate:\n  production: checkout-pm\n",
        )
        write(
            f"flags/{key}/staging.yaml",
            f"# yaml-language-server: $schema=../../schemas/release.schema.json\n"
            f"enabled: true\ntargets:\n  {on}: [qa-{f}]\n"
            f"rules:\n  - name: staff\n    if: {{segment: {segment}}}\n    serve: {on}\n"
            f'  - name: new apps\n    if: {{attribute: app_version, op: semver_gte, value: "5.{f % 9}.0"}}\n'
            f"    serve:\n      split:\n        {on}: 50\n        {off}: 50\n      bucket_by: account_id\n"
            f"default: {off}\n",
        )
        write(
            f"flags/{key}/production.yaml",
            f"# yaml-language-server: $schema=../../schemas/release.schema.json\n"
            f"enabled: true\nrules:\n"
            f"  - name: internal\n    if:\n      any:\n"
            f'        - {{attribute: email, op: matches, value: "^[a-z]+@acme\\\\.com$"}}\n'
            f'        - {{attribute: signed_up_at, op: before, value: "2026-01-01T00:00:00Z"}}\n'
            f"    serve: {on}\n"
            f"default:\n  progression:\n    variation: {on}\n    baseline: {off}\n    current: ten\n"
            f"    stages:\n      - {{name: ring0, segments: [{segment}]}}\n"
            f"      - {{name: ten, percent: 10, bake: 24h}}\n"
            f'      - {{name: half, percent: 50, at: "2026-12-0{1 + f % 8}T09:00:00Z"}}\n'
            f"      - {{name: ga, percent: 100}}\n",
        )
    return files


def median_times(
    contenders: dict[str, Callable[[], object]],
    runs: int,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """Median time of each contender by ``clock`` (wall time; ``time.process_time`` for
    the CPU time of in-process work, which a loaded machine does not inflate). The runs
    are interleaved (one of each per round) so that a change in machine load hits every
    contender alike."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(runs):
        for name, action in contenders.items():
            start = clock()
            action()
            times[name].append(clock() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def load_only(root: Path) -> None:
    """What validate spends on reading: the strict load with positions."""
    with cyclic_gc_paused():
        read_project(root)


def bare_parse(files: list[Path]) -> None:
    for path in files:
        with path.open("rb") as handle:
            yaml.load(handle, Loader=yaml.CSafeLoader)


def check_jsonschema(root: Path) -> None:
    groups = {
        "project": [root / "flagstone.yaml"],
        "flag": sorted(root.glob("flags/*/flag.yaml")),
        "release": sorted(p for p in root.glob("flags/*/*.yaml") if p.name != "flag.yaml"),
        "segment": sorted(root.glob("segments/*.yaml")),
    }
    for kind, paths in groups.items():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "check_jsonschema",
                "--schemafile",
                str(SCHEMAS / f"{kind}.schema.json"),
                *map(str, paths),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--flags", type=int, default=10_000)
    parser.add_argument("--segments", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--check-jsonschema-runs", type=int, default=1)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="flagstone-bench-") as tmp:
        root = Path(tmp)
        files = write_repository(root, args.flags, args.segments)
        size = sum(path.stat().st_size for path in files)
        print(
            f"repository: {args.flags} flags x 2 environments + {args.segments} segments = "
            f"{len(files)} files, {size / 1e6:.1f} MB"
        )

        problems = validate_project(read_project(root))
        if problems:
            raise SystemExit(f"generated repository is not clean: {problems[0].format_line()}")

        env = {**os.environ, "GITHUB_ACTIONS": ""}
        command = [sys.executable, "-m", "flagstone", "validate", "--format", "text"]

        def run_cli() -> None:
            subprocess.run(
                [*command, "--repo", str(root)], check=True, stdout=subprocess.DEVNULL, env=env
            )

        medians = median_times(
            {
                "bare CSafeLoader parse": lambda: bare_parse(files),
                "flagstone strict load (read_project)": lambda: load_only(root),
                "flagstone validate (library)": lambda: validate_repository(root),
                "flagstone validate (CLI subprocess)": run_cli,
            },
            args.runs,
        )
        if args.check_jsonschema_runs:
            medians.update(
                median_times(
                    {"check-jsonschema (4 runs, schema only)": lambda: check_jsonschema(root)},
                    args.check_jsonschema_runs,
                )
            )

    bare = medians["bare CSafeLoader parse"]
    validate = medians["flagstone validate (library)"]
    cli = medians["flagstone validate (CLI subprocess)"]
    cjs = medians.get("check-jsonschema (4 runs, schema only)")
    rows = list(medians.items())
    print(f"median of {args.runs} runs (check-jsonschema: {args.check_jsonschema_runs}):")
    for name, seconds in rows:
        print(f"  {name:<40} {seconds:8.3f} s   {seconds / bare:6.2f}x bare parse")
    print(f"validate / bare parse      = {validate / bare:.2f}  (target <= 3)")
    print(f"validate CLI / bare parse  = {cli / bare:.2f}")
    if cjs is not None:
        print(f"check-jsonschema / validate = {cjs / validate:.2f}")


if __name__ == "__main__":
    main()
