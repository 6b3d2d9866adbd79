"""The compiler: normalization into the snapshot form, refusals with file:line:col,
determinism across processes and file-system orders, git source, schema validity."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flagstone.canonical import canonical_json, content_digest
from flagstone.cli.main import main
from flagstone.compile import compile_environment, snapshot_bytes
from flagstone.engine import Snapshot
from flagstone.errors import UsageError, ValidationFailed
from flagstone.model import read_project

REPO_ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((REPO_ROOT / "schemas" / "snapshot.schema.json").read_text())
PACKAGE_SCHEMA = REPO_ROOT / "tooling" / "flagstone" / "schemas" / "snapshot.schema.json"

PROJECT = """\
project: shop
environments: [staging, production]
teams:
  core: {github: "@shop/core"}
admins: core
"""
FLAG = """\
name: Checkout
owner: core
variations: {on: true, off: false}
off_variation: off
"""
SEGMENT = """\
name: Staff
owner: core
include: [u-1]
rules:
  - {attribute: email, op: ends_with, value: "@shop.com"}
"""


def write_repo(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return root


def compile_files(tmp_path: Path, files: dict[str, str], env: str = "production") -> dict[str, Any]:
    base = {
        "flagstone.yaml": PROJECT,
        "flags/checkout/flag.yaml": FLAG,
        "segments/staff.yaml": SEGMENT,
    }
    return compile_environment(read_project(write_repo(tmp_path, base | files)), env)


def validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(SCHEMA, format_checker=jsonschema.FormatChecker())


# --- the example repository ----------------------------------------------------------


def test_package_schema_copy_is_identical() -> None:
    assert (
        PACKAGE_SCHEMA.read_bytes() == (REPO_ROOT / "schemas" / "snapshot.schema.json").read_bytes()
    )


@pytest.mark.parametrize("env", ["staging", "production"])
def test_example_repository_compiles_to_a_valid_snapshot(env: str) -> None:
    project = read_project(REPO_ROOT)
    payload = compile_environment(
        project,
        env,
        version=12,
        published_at="2026-11-26T11:30:00+01:00",
        expires=1_800_000_000,
        source={"commit": "a" * 40, "ref": "refs/heads/main"},
    )
    validator().validate(payload)
    assert payload["published_at"] == "2026-11-26T10:30:00Z"
    assert payload["expires"] == "2027-01-15T08:00:00Z"
    assert payload["digest"] == content_digest(payload["flags"], payload["segments"])
    assert snapshot_bytes(payload) == canonical_json(payload)
    archived = {key for key, flag in project.flags.items() if flag.archived}
    assert set(payload["flags"]) == set(project.flags) - archived
    Snapshot.from_payload(payload)


def test_schema_rejects_what_the_form_forbids() -> None:
    payload = compile_environment(read_project(REPO_ROOT), "production")
    broken = json.loads(json.dumps(payload))
    flag = next(iter(broken["flags"].values()))
    flag["default"] = {"split": {"weights": [{"variation": "on", "weight": 100001}]}}
    assert list(validator().iter_errors(broken))
    broken = json.loads(json.dumps(payload))
    broken["digest"] = "md5:abc"
    assert list(validator().iter_errors(broken))


# --- normalization -------------------------------------------------------------------


def test_release_shorthands_become_the_normal_form(tmp_path: Path) -> None:
    payload = compile_files(
        tmp_path,
        {
            "flags/checkout/production.yaml": """\
            enabled: true
            targets: {off: [u-9], on: [u-1, u-2]}
            rules:
              - name: staff
                if: {segment: staff}
                serve: on
              - name: tiers
                if: {attribute: tier, op: in, values: [gold, platinum]}
                serve: {split: {on: 12.345, off: 87.655}, bucket_by: account.id, seed: s-1}
              - name: known
                if: {attribute: email, op: exists}
                serve: off
            default:
              progression:
                variation: on
                baseline: off
                current: ten
                stages:
                  - {name: staff, segments: [staff]}
                  - {name: ten, percent: 10, bake: 24h}
                  - {name: ten-plus-beta, segments: [staff], bake: 30m}
                  - {name: all, percent: 100, at: "2026-12-03T10:00:00+01:00"}
            """,
        },
    )
    flag = payload["flags"]["checkout"]
    assert flag["type"] == "boolean" and flag["kind"] == "release" and flag["enabled"] is True
    assert flag["targets"] == [
        {"variation": "off", "keys": ["u-9"]},
        {"variation": "on", "keys": ["u-1", "u-2"]},
    ]
    assert flag["rules"][0] == {
        "name": "staff",
        "condition": {"segment": "staff"},
        "serve": {"variation": "on"},
    }
    assert flag["rules"][1]["condition"] == {
        "attribute": "tier",
        "op": "in",
        "values": ["gold", "platinum"],
    }
    assert flag["rules"][1]["serve"] == {
        "split": {
            "bucket_by": "account.id",
            "seed": "s-1",
            "weights": [
                {"variation": "on", "weight": 12345},
                {"variation": "off", "weight": 87655},
            ],
        }
    }
    assert flag["rules"][2]["condition"] == {"attribute": "email", "op": "exists", "values": []}
    assert flag["default"]["progression"] == {
        "variation": "on",
        "baseline": "off",
        "bucket_by": "key",
        "seed": "checkout",
        "current": "ten",
        "stages": [
            {"name": "staff", "segments": ["staff"], "weight": 0, "at": None, "bake": None},
            {"name": "ten", "segments": [], "weight": 10000, "at": None, "bake": 86400},
            # no percent: keeps the reach of the stage before it
            {
                "name": "ten-plus-beta",
                "segments": ["staff"],
                "weight": 10000,
                "at": None,
                "bake": 1800,
            },
            {
                "name": "all",
                "segments": [],
                "weight": 100000,
                "at": "2026-12-03T09:00:00Z",
                "bake": None,
            },
        ],
    }
    assert payload["segments"]["staff"] == {
        "include": ["u-1"],
        "exclude": [],
        "rules": [{"attribute": "email", "op": "ends_with", "values": ["@shop.com"]}],
    }
    validator().validate(payload)


def test_missing_release_disabled_release_and_absent_default(tmp_path: Path) -> None:
    files = {
        "flags/other/flag.yaml": FLAG.replace("Checkout", "Other"),
        "flags/other/staging.yaml": "enabled: false\nrules: [{name: r, if: {segment: staff}, serve: on}]\n",
        "flags/checkout/staging.yaml": "enabled: true\n",
        "flags/old/flag.yaml": FLAG + "archived: true\n",
    }
    payload = compile_files(tmp_path, files, env="staging")
    disabled = {
        "enabled": False,
        "prerequisites": [],
        "targets": [],
        "rules": [],
        "default": {"variation": "off"},
    }
    assert payload["flags"]["other"].items() >= disabled.items()
    assert payload["flags"]["checkout"]["enabled"] is True
    assert payload["flags"]["checkout"]["default"] == {"variation": "off"}
    assert "old" not in payload["flags"]
    production = compile_environment(read_project(tmp_path), "production")
    assert production["flags"]["checkout"].items() >= disabled.items()


# --- refusals --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("release", "expected"),
    [
        (
            "enabled: true\ndefault: {split: {on: 50, off: 49}}\n",
            "flags/checkout/production.yaml:2:18: split percents sum to 99, not 100",
        ),
        (
            "enabled: true\ndefault: {split: {on: 50.0001, off: 49.9999}}\n",
            "flags/checkout/production.yaml:2:23: 50.0001 is not a percent with at most 3 decimals",
        ),
        (
            "enabled: true\nrules:\n  - name: r\n    if: {attribute: e, op: matches, value: '(['}\n    serve: on\n",
            "flags/checkout/production.yaml:4:44: '([' is not a valid regular expression",
        ),
        (
            "enabled: true\nrules:\n  - name: r\n    if: {segment: ghosts}\n    serve: on\n",
            "flags/checkout/production.yaml:4:19: unknown segment 'ghosts'",
        ),
        (
            "enabled: true\ndefault: maybe\n",
            "flags/checkout/production.yaml:2:10: unknown variation 'maybe'",
        ),
        (
            "enabled: true\ndefault:\n  progression:\n    variation: on\n    baseline: off\n"
            "    current: nine\n    stages: [{name: ten, percent: 10}]\n",
            "flags/checkout/production.yaml:6:14: unknown stage 'nine'",
        ),
        (
            "enabled: true\ndefault:\n  progression:\n    variation: on\n    baseline: off\n"
            "    stages: [{name: ten, percent: 10, at: '2026-12-03T09:00:00.5Z'}]\n",
            "flags/checkout/production.yaml:6:43: '2026-12-03T09:00:00.5Z': a stage starts on a whole second",
        ),
    ],
)
def test_content_with_no_snapshot_form_is_refused_at_its_position(
    tmp_path: Path, release: str, expected: str
) -> None:
    with pytest.raises(ValidationFailed) as raised:
        compile_files(tmp_path, {"flags/checkout/production.yaml": release})
    assert str(raised.value).startswith(expected)


def test_unknown_environment_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"unknown environment 'prod' .*staging, production"):
        compile_files(tmp_path, {}, env="prod")


def test_an_output_file_that_cannot_be_written_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "missing" / "production.json"
    with pytest.raises(SystemExit) as exited:
        main(["compile", "--env", "production", "--repo", str(REPO_ROOT), "-o", str(target)])
    assert exited.value.code == 2
    assert capsys.readouterr().err == (f"error: cannot write {target}: No such file or directory\n")
    assert not target.parent.exists()


def test_prerequisite_cycle_is_refused(tmp_path: Path) -> None:
    files = {
        "flags/checkout/flag.yaml": FLAG + "prerequisites: [{flag: other, variation: on}]\n",
        "flags/other/flag.yaml": FLAG + "prerequisites: [{flag: checkout, variation: on}]\n",
    }
    with pytest.raises(ValidationFailed, match="prerequisite cycle"):
        compile_files(tmp_path, files)


# --- determinism ------------------------------------------------------------------------


def _copy_example(target: Path, *, reverse: bool) -> Path:
    """Copy the example repository, creating files in sorted or reversed order."""
    sources = [REPO_ROOT / "flagstone.yaml"]
    for folder in ("flags", "segments"):
        sources += [p for p in (REPO_ROOT / folder).rglob("*.yaml")]
    for source in sorted(sources, reverse=reverse):
        destination = target / source.relative_to(REPO_ROOT)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, destination)
    return target


def _compile_in_fresh_process(repo: Path, hash_seed: str) -> bytes:
    env = os.environ | {"PYTHONHASHSEED": hash_seed}
    done = subprocess.run(
        [sys.executable, "-m", "flagstone", "compile", "--env", "production", "--repo", str(repo)],
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


def test_same_content_gives_the_same_bytes_across_processes_and_file_orders(tmp_path: Path) -> None:
    forward = _copy_example(tmp_path / "forward", reverse=False)
    backward = _copy_example(tmp_path / "backward", reverse=True)
    outputs = [
        _compile_in_fresh_process(forward, "1"),
        _compile_in_fresh_process(forward, "2"),
        _compile_in_fresh_process(backward, "3"),
    ]
    assert outputs[0] == outputs[1] == outputs[2]
    payload = json.loads(outputs[0])
    assert canonical_json(payload) == outputs[0]
    assert payload["source"] == {"commit": None, "ref": None}


def test_compile_records_the_git_head(tmp_path: Path) -> None:
    repo = _copy_example(tmp_path / "repo", reverse=False)

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()

    git("init", "-q", "-b", "main")
    git("add", ".")
    git("commit", "-q", "-m", "flags")
    output = tmp_path / "snapshot.json"
    done = subprocess.run(
        [sys.executable, "-m", "flagstone", "compile", "--env", "staging", "-o", str(output)],
        cwd=repo / "flags",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    payload = json.loads(output.read_bytes())
    assert payload["source"] == {"commit": git("rev-parse", "HEAD"), "ref": "refs/heads/main"}
    assert "wrote" in done.stderr and payload["digest"] in done.stderr
    validator().validate(payload)


@settings(max_examples=25, deadline=None)
@given(
    thousandths=st.lists(st.integers(min_value=0, max_value=100_000), min_size=1, max_size=5).map(
        lambda parts: (
            [*parts[:-1], 100_000 - sum(parts[:-1])] if sum(parts[:-1]) <= 100_000 else [100_000]
        )
    )
)
def test_split_percents_become_exact_thousandths(thousandths: list[int]) -> None:
    variations = {f"v{i}": i for i in range(len(thousandths))}
    split = ", ".join(f"v{i}: {w / 1000}" for i, w in enumerate(thousandths))
    flag = "name: N\nowner: core\nvariations: {" + ", ".join(
        f"{k}: {v}" for k, v in variations.items()
    )
    flag += "}\noff_variation: v0\n"
    with tempfile.TemporaryDirectory() as folder:
        payload = compile_files(
            Path(folder),
            {
                "flags/checkout/flag.yaml": flag,
                "flags/checkout/production.yaml": f"enabled: true\ndefault: {{split: {{{split}}}}}\n",
            },
        )
    weights = payload["flags"]["checkout"]["default"]["split"]["weights"]
    assert [w["weight"] for w in weights] == thousandths
    validator().validate(payload)
