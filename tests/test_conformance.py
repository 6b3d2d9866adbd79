"""Runs the language-neutral evaluation vectors in tests/conformance/*.json.

Each file holds one snapshot payload and cases ``{name, flag, context, at, default?,
expect: {value, variation, reason, rule?, error_code?}}``; ``at`` is an RFC 3339 time
(or null for "now"). Another SDK can run the same files unchanged.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from flagstone.canonical import content_digest
from flagstone.engine import Snapshot, parse_timestamp

VECTORS = Path(__file__).parent / "conformance"
SCHEMA = json.loads((Path(__file__).parents[1] / "schemas" / "snapshot.schema.json").read_text())
FILES = sorted(VECTORS.glob("*.json"))


@cache
def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _cases() -> list[Any]:
    params = []
    for path in FILES:
        for case in _load(path)["cases"]:
            params.append(pytest.param(path.name, case, id=f"{path.stem}: {case['name']}"))
    return params


_snapshots: dict[str, Snapshot] = {}


def _snapshot(file_name: str) -> Snapshot:
    if file_name not in _snapshots:
        _snapshots[file_name] = Snapshot.from_payload(_load(VECTORS / file_name)["snapshot"])
    return _snapshots[file_name]


def test_there_are_enough_vectors() -> None:
    assert sum(len(_load(p)["cases"]) for p in FILES) >= 150


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_vector_snapshot_has_the_snapshot_form(path: Path) -> None:
    snapshot = _load(path)["snapshot"]
    jsonschema.Draft7Validator(SCHEMA, format_checker=jsonschema.FormatChecker()).validate(snapshot)
    assert snapshot["digest"] == content_digest(snapshot["flags"], snapshot["segments"])


@pytest.mark.parametrize(("file_name", "case"), _cases())
def test_vector(file_name: str, case: dict[str, Any]) -> None:
    at = parse_timestamp(case["at"]) if case["at"] is not None else None
    details = _snapshot(file_name).evaluate(
        case["flag"], case["context"], case.get("default"), at=at
    )
    expect = case["expect"]
    got = {"value": details.value, "variation": details.variation, "reason": details.reason}
    assert got == {k: expect[k] for k in ("value", "variation", "reason")}
    # bool vs number: JSON true must not pass for 1
    assert type(details.value) is type(expect["value"])
    if "rule" in expect:
        assert details.rule == expect["rule"]
    assert details.error_code == expect.get("error_code")
    assert details.version == _load(VECTORS / file_name)["snapshot"]["version"]
