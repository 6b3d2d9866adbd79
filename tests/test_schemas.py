"""The JSON Schemas: one source of truth, valid draft-07, usable by editors and by
check-jsonschema on the repository's own files."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from jsonschema import Draft7Validator

from flagstone.validate import SCHEMA_KINDS, load_schema

ROOT = Path(__file__).resolve().parent.parent
ROOT_SCHEMAS = ROOT / "schemas"
PACKAGE_SCHEMAS = ROOT / "tooling" / "flagstone" / "schemas"


def test_package_ships_byte_identical_copies_of_every_schema() -> None:
    root_names = sorted(p.name for p in ROOT_SCHEMAS.glob("*.json"))
    package_names = sorted(p.name for p in PACKAGE_SCHEMAS.glob("*.json"))
    assert root_names == package_names
    for name in root_names:
        assert (ROOT_SCHEMAS / name).read_bytes() == (PACKAGE_SCHEMAS / name).read_bytes(), name


@pytest.mark.parametrize("kind", SCHEMA_KINDS)
def test_schema_is_valid_draft_07_with_editor_help(kind: str) -> None:
    schema = load_schema(kind)
    Draft7Validator.check_schema(schema)
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.get("properties", {}).items():
                # every property an editor completes says what it is (here or where it refers)
                if "$ref" in value:
                    value = schema["definitions"][value["$ref"].rsplit("/", 1)[1]]
                assert "description" in value and "markdownDescription" in value, (kind, key)
            if "properties" in node and "if" not in node.get("properties", {}):
                # strict by default; the one open mapping (lint rule options) says so
                assert "additionalProperties" in node, node
            for key, value in node.items():
                if key != "if":  # `if` subschemas only select a branch
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)


def test_operator_enum_matches_the_engine() -> None:
    from flagstone.engine import OPERATORS

    clause = load_schema("release")["definitions"]["clause"]
    assert set(clause["properties"]["op"]["enum"]) == set(OPERATORS)
    assert load_schema("segment")["definitions"]["clause"] == clause


def test_every_example_file_names_its_schema_with_a_correct_relative_path() -> None:
    files = [ROOT / "flagstone.yaml", *ROOT.glob("flags/*/*.yaml"), *ROOT.glob("segments/*.yaml")]
    files += list((ROOT / "tests" / "examples").rglob("*.yaml"))
    checked = 0
    for path in files:
        first = path.read_bytes().split(b"\n", 1)[0].decode("utf-8", "replace")
        match = re.fullmatch(r"# yaml-language-server: \$schema=(\S+)", first)
        if match is None:
            assert "tests/examples" in path.as_posix(), f"{path} has no schema modeline"
            continue
        target = (path.parent / match.group(1)).resolve()
        assert target.parent == ROOT_SCHEMAS and target.is_file(), path
        checked += 1
    assert checked > 100


def test_check_jsonschema_accepts_the_repository(tmp_path: Path) -> None:
    """The schemas work outside Flagstone: check-jsonschema (ruamel, YAML 1.2) agrees."""
    groups = {
        "project": [ROOT / "flagstone.yaml"],
        "flag": sorted(ROOT.glob("flags/*/flag.yaml")),
        "release": sorted(p for p in ROOT.glob("flags/*/*.yaml") if p.name != "flag.yaml"),
        "segment": sorted(ROOT.glob("segments/*.yaml")),
    }
    for kind, files in groups.items():
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "check_jsonschema",
                "--schemafile",
                str(ROOT_SCHEMAS / f"{kind}.schema.json"),
                *map(str, files),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_check_jsonschema_rejects_what_validate_rejects(tmp_path: Path) -> None:
    bad = tmp_path / "production.yaml"
    bad.write_text(
        "enabled: true\nrules:\n  - {name: x, if: {attribute: a, op: startswith, value: b}, serve: on}\n"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--schemafile",
            str(ROOT_SCHEMAS / "release.schema.json"),
            str(bad),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "startswith" in result.stdout + result.stderr
    assert json.loads(json.dumps(load_schema("release")))  # plain JSON, no Python-only values
