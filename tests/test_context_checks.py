"""Evaluation never raises and contexts are checked (issue 12 item 9): hostile context
objects, contexts of the wrong shape, unbucketable values, huge parse-cache keys, and a
5,000-digit integer given to `flagstone eval`."""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest

from flagstone import operators, timestamps
from flagstone.cli.main import main
from flagstone.engine import INVALID_CONTEXT, Snapshot, plain_context
from flagstone.sdk import Client
from sdk_support import ENVIRONMENT, NOW, PROJECT, fixed_flag, make_payload, new_key, sign

EXAMPLES = Path(__file__).parent / "examples"


def flag(**fields: Any) -> dict[str, Any]:
    return {
        "type": "string",
        "kind": "release",
        "variations": {"a": "A", "b": "B"},
        "off_variation": "a",
        "enabled": True,
        "prerequisites": [],
        "targets": [],
        "rules": [],
        "default": {"variation": "a"},
    } | fields


SPLIT = {
    "split": {
        "bucket_by": "id",
        "seed": "s",
        "weights": [{"variation": "b", "weight": 50000}, {"variation": "a", "weight": 50000}],
    }
}
FLAGS = {
    "plain": flag(),
    "by-plan": flag(
        rules=[
            {
                "name": "pro",
                "condition": {"attribute": "plan", "op": "eq", "values": ["pro"]},
                "serve": {"variation": "b"},
            }
        ]
    ),
    "nested": flag(
        rules=[
            {
                "name": "eu",
                "condition": {"attribute": "geo.region", "op": "eq", "values": ["eu"]},
                "serve": {"variation": "b"},
            }
        ]
    ),
    "split": flag(default=SPLIT),
}


@pytest.fixture(scope="module")
def snapshot() -> Snapshot:
    return Snapshot.from_payload(make_payload(1, FLAGS))


class RaisingMapping(Mapping[str, Any]):
    """A mapping whose every read raises."""

    def __getitem__(self, name: str) -> Any:
        raise RuntimeError("boom")

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("boom")

    def __len__(self) -> int:
        return 1


class RaisingText(str):
    """Text whose comparison and hashing raise (and whose str() raises too)."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no comparing me")

    def __hash__(self) -> int:
        raise RuntimeError("no hashing me")

    def __str__(self) -> str:
        raise RuntimeError("no printing me")


class RaisingAttributes:
    """An OpenFeature-like context whose attributes raise."""

    targeting_key = "user-1"

    @property
    def attributes(self) -> Mapping[str, Any]:
        raise RuntimeError("attributes exploded")


@pytest.mark.parametrize(
    ("context", "message"),
    [
        (["key", "user-1"], "the context must be a mapping, not list"),
        ("user-1", "the context must be a mapping, not str"),
        (42, "the context must be a mapping, not int"),
        (RaisingMapping(), "the context cannot be read (RuntimeError)"),
        ({"key": 7}, "the context's key must be a string"),
    ],
)
def test_contexts_of_the_wrong_shape_are_invalid_context(
    snapshot: Snapshot, context: Any, message: str
) -> None:
    for flag_key in FLAGS:
        details = snapshot.evaluate(flag_key, context, "default")
        assert (details.value, details.reason, details.error_code) == (
            "default",
            "ERROR",
            INVALID_CONTEXT,
        )
        assert details.error_message == message


def test_a_value_whose_comparison_raises_is_invalid_context(snapshot: Snapshot) -> None:
    details = snapshot.evaluate("by-plan", {"key": "u", "plan": RaisingText("pro")}, "default")
    assert details.error_code == INVALID_CONTEXT
    assert (
        details.error_message == "the context's attribute 'plan' is a RaisingText, not a JSON value"
    )
    nested = snapshot.evaluate("nested", {"key": "u", "geo": RaisingMapping()}, "default")
    assert nested.error_code == INVALID_CONTEXT
    assert "'geo' is a RaisingMapping" in str(nested.error_message)
    # An odd value that is never touched does not matter.
    assert snapshot.evaluate("plain", {"key": "u", "x": RaisingText("pro")}).value == "A"


def test_a_read_only_mapping_that_behaves_is_evaluated_normally(snapshot: Snapshot) -> None:
    from types import MappingProxyType

    context = MappingProxyType({"key": "u", "plan": "pro"})
    assert snapshot.evaluate("by-plan", context).value == "B"
    assert plain_context(None) == {}


def test_a_value_that_cannot_be_bucketed_reads_as_a_missing_attribute(
    snapshot: Snapshot,
) -> None:
    missing = snapshot.evaluate("split", {"key": "u"})
    assert (missing.variation, missing.bucket, missing.error_code) == ("b", None, None)
    for value in (10**5000 - 1, 1 - 10**5000, 1.5, [1], {"a": 1}, "\ud800"):
        details = snapshot.evaluate("split", {"key": "u", "id": value})
        assert details == missing, value
    assert snapshot.evaluate("split", {"key": "u", "id": 123}).bucket is not None


def test_parse_caches_keep_no_long_text() -> None:
    operators._parse_semver.cache_clear()
    timestamps._parse_timestamp.cache_clear()
    long_version = "1.2.3-" + "a" * 10_000
    assert operators.parse_semver(long_version) is None
    assert timestamps.parse_timestamp("2026-12-03T09:00:00" + "0" * 10_000 + "Z") is None
    assert operators._parse_semver.cache_info().currsize == 0
    assert timestamps._parse_timestamp.cache_info().currsize == 0
    assert operators.parse_semver("1.2.3-" + "a" * 200) is not None  # long but allowed
    assert timestamps.parse_timestamp("2026-12-03T09:00:00.123456789+01:00") is not None
    assert operators._parse_semver.cache_info().maxsize == operators.PARSE_CACHE_ENTRIES


def test_the_sdk_client_never_raises_on_a_hostile_context(tmp_path: Path) -> None:
    key = new_key()
    snapshot_file = tmp_path / "latest.json"
    snapshot_file.write_bytes(sign(make_payload(1, {"f": fixed_flag("on")}), key))
    client = Client(
        str(snapshot_file),
        environment=ENVIRONMENT,
        project=PROJECT,
        trusted_keys=[key.trusted],
        poll_interval=None,
        clock=lambda: NOW,
    )
    try:
        for context in (RaisingAttributes(), ["a"], "user-1", 3.5):
            details = client.evaluate("f", context, "fallback")  # type: ignore[arg-type]
            assert details.error_code == INVALID_CONTEXT, context
            assert details.value == "fallback"
            assert client.string_value("f", context, "fallback") == "fallback"  # type: ignore[arg-type]
            assert all(d.error_code == INVALID_CONTEXT for d in client.all_flags(context).values())  # type: ignore[arg-type]
        assert "RuntimeError" in str(client.evaluate("f", RaisingAttributes()).error_message)  # type: ignore[arg-type]
    finally:
        client.close()


def run_cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out), redirect_stderr(out), pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    return int(exit_info.value.code or 0), out.getvalue()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("9" * 5000, "an integer of 5000 digits is too long"),
        ("-" + "9" * 5000, "an integer of 5000 digits is too long"),
        ("1e400", "1e400 is out of the range of a double"),
    ],
)
def test_eval_refuses_numbers_it_cannot_read_as_a_usage_error(value: str, message: str) -> None:
    repo = EXAMPLES / "valid" / "minimal"
    code, output = run_cli(
        "eval",
        "checkout",
        "--env",
        "staging",
        "--repo",
        str(repo),
        "--context",
        '{"key": "u", "n": ' + value + "}",
    )
    assert code == 2, output
    assert output == f"error: --context:1: invalid JSON: {message}\n"
