"""The flagd export: shape (against a schema excerpt of flagd's flag definition), the
command line, refusals, determinism and the unsigned ``<env>/flagd.json`` publication.

flagd's JSON schemas (https://flagd.dev/schema/v0/flags.json and targeting.json) are
not shipped by any installed package and the tests run offline, so ``FLAGD_SCHEMA``
below is an excerpt written from the published spec: the flag object (state, typed
variants, defaultVariant, targeting, metadata), ``$evaluators``, and the JSONLogic
operators flagd documents with their arities (``if`` chains, binary operators taking
exactly two arguments, ``sem_ver`` taking a version or ``var`` and an operator,
``fractional`` taking a bucketing expression and [variant, weight] pairs, ``var``
names, ``$flagd`` properties limited to ``timestamp`` and ``flagKey``). The semantic
check — that flagd evaluates the export as Flagstone does — is
test_flagd_differential.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.evaluation_context import EvaluationContext

from flagstone.cli.main import main
from flagstone.errors import ExportError
from flagstone.flagd_export import export_flagd, flagd_json
from flagstone.publish import FLAGD_OBJECT, write_flagd_export
from flagstone.store import open_store
from test_flagd_differential import ROOT, extras_payload, flag, payloads, rule

SEMVER = (
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)


def _arguments(low: int, high: int | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "array",
        "minItems": low,
        "items": {"$ref": "#/definitions/argument"},
    }
    if high is not None:
        schema["maxItems"] = high
    return schema


_VAR_NAME = {
    "anyOf": [
        {"type": "string", "pattern": r"^\$flagd\.(timestamp|flagKey)$"},
        {"type": "string", "not": {"pattern": r"^\$flagd\."}},
        {"type": "array", "minItems": 1, "items": [{"type": "string"}]},
    ]
}
_VERSION = {
    "anyOf": [
        {"type": "string", "pattern": SEMVER},
        {
            "type": "object",
            "required": ["var"],
            "additionalProperties": False,
            "properties": {"var": _VAR_NAME},
        },
    ]
}
_WEIGHT = {
    "type": "array",
    "minItems": 2,
    "maxItems": 2,
    "items": [{"type": "string"}, {"type": "number"}],
}
# operator -> schema of its arguments. A rule is an object with exactly one of these
# keys (dispatching on the key keeps validation linear in the document's size).
OPERATORS: dict[str, Any] = {
    "var": _VAR_NAME,
    **{op: _arguments(2, 2) for op in ("==", "===", "!=", "!==", ">", ">=", "%", "/")},
    **{op: _arguments(2, 2) for op in ("in", "some", "all", "none", "map", "filter")},
    **{op: _arguments(2, 3) for op in ("<", "<=", "substr")},
    **{op: _arguments(1) for op in ("if", "and", "or", "+", "-", "cat", "merge")},
    "*": _arguments(2),
    "reduce": _arguments(3, 3),
    **{op: {"anyOf": [_arguments(1, 1), {"$ref": "#/definitions/argument"}]} for op in ("!", "!!")},
    "starts_with": _arguments(2, 2),
    "ends_with": _arguments(2, 2),
    "sem_ver": {
        "type": "array",
        "minItems": 3,
        "maxItems": 3,
        "items": [_VERSION, {"enum": ["=", "!=", ">", "<", ">=", "<=", "~", "^"]}, _VERSION],
    },
    "fractional": {
        "type": "array",
        "minItems": 3,
        "items": [{"$ref": "#/definitions/rule"}],
        "additionalItems": _WEIGHT,
    },
    "$ref": {"type": "string"},
}
FLAGD_SCHEMA: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "required": ["flags"],
    "properties": {
        "$schema": {"type": "string"},
        "flags": {"type": "object", "additionalProperties": {"$ref": "#/definitions/flag"}},
        "$evaluators": {"type": "object", "additionalProperties": {"$ref": "#/definitions/rule"}},
        "metadata": {
            "$ref": "#/definitions/metadata",
            "properties": {"flagSetId": {"type": "string"}, "version": {"type": "string"}},
        },
    },
    "additionalProperties": False,
    "definitions": {
        "metadata": {
            "type": "object",
            "additionalProperties": {"type": ["string", "number", "boolean"]},
        },
        "flag": {
            "type": "object",
            "required": ["state", "variants"],
            "additionalProperties": False,
            "properties": {
                "state": {"enum": ["ENABLED", "DISABLED"]},
                "variants": {
                    "type": "object",
                    "minProperties": 1,
                    "anyOf": [
                        {"additionalProperties": {"type": kind}}
                        for kind in ("boolean", "string", "number", "object")
                    ],
                },
                "defaultVariant": {"type": ["string", "null"]},
                "targeting": {"$ref": "#/definitions/rule"},
                "metadata": {"$ref": "#/definitions/metadata"},
            },
        },
        "rule": {
            "type": "object",
            "minProperties": 1,
            "maxProperties": 1,
            "propertyNames": {"enum": list(OPERATORS)},
            "properties": OPERATORS,
        },
        "argument": {
            "if": {"type": "object"},
            "then": {"$ref": "#/definitions/rule"},
            "else": {"type": ["null", "boolean", "number", "string", "array"]},
        },
    },
}


def check_schema(document: dict[str, Any]) -> None:
    jsonschema.Draft7Validator(FLAGD_SCHEMA).validate(document)
    # The variant a flag falls back to exists.
    for key, definition in document["flags"].items():
        assert definition["defaultVariant"] in definition["variants"], key


def cli(*args: str) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    return int(exit_info.value.code or 0)


# ---------------------------------------------------------------------------
# Shape.


@pytest.mark.parametrize("segments", ["inline", "evaluators"])
def test_every_export_matches_the_flagd_schema_excerpt(segments: str) -> None:
    for name, payload in [*payloads(), ("extras", extras_payload())]:
        document = export_flagd(payload, segments=segments, skip_unsupported=True).document
        check_schema(document)
        assert json.loads(flagd_json(document)) == document, name


def test_the_schema_excerpt_rejects_what_flagd_rejects() -> None:
    """The excerpt is not vacuous: it catches malformed flags and targeting."""
    good = {"flags": {"f": {"state": "ENABLED", "variants": {"a": True}, "defaultVariant": "a"}}}
    check_schema(good)
    bad_documents = [
        {"flags": {"f": {"state": "ON", "variants": {"a": True}}}},
        {"flags": {"f": {"state": "ENABLED", "variants": {"a": True, "b": "x"}}}},
        {"flags": {"f": {"state": "ENABLED", "variants": {"a": [1]}}}},
        {
            "flags": {
                "f": {"state": "ENABLED", "variants": {"a": 1}, "targeting": {"regex": ["a", "b"]}}
            }
        },
        {"flags": {"f": {"state": "ENABLED", "variants": {"a": 1}, "targeting": {"in": ["a"]}}}},
        {
            "flags": {
                "f": {"state": "ENABLED", "variants": {"a": 1}, "targeting": {"var": "$flagd.x"}}
            }
        },
        {
            "flags": {
                "f": {
                    "state": "ENABLED",
                    "variants": {"a": 1},
                    "targeting": {"sem_ver": [{"cat": ["1"]}, "=", "1.0.0"]},
                }
            }
        },
        {
            "flags": {
                "f": {
                    "state": "ENABLED",
                    "variants": {"a": 1},
                    "targeting": {"fractional": [{"var": "k"}, ["a", 100]]},
                }
            }
        },
    ]
    for document in bad_documents:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.Draft7Validator(FLAGD_SCHEMA).validate(document)


def test_staging_example_in_detail() -> None:
    payload = dict(payloads())["example:staging"]
    document = export_flagd(payload).document
    assert document["$schema"] == "https://flagd.dev/schema/v0/flags.json"
    assert document["metadata"] == {
        "flagSetId": "acme-shop/staging",
        "version": "0",
        "flagstoneDigest": payload["digest"],
    }
    flags = document["flags"]
    # A plain default with no targeting: flagd serves it statically.
    assert flags["search-page-size"] == {
        "state": "ENABLED",
        "variants": {"large": 96, "small": 20, "standard": 48},
        "defaultVariant": "large",
    }
    # Individual targets test the targeting key; no match falls back to defaultVariant.
    assert flags["pricing-page-test"]["targeting"] == {
        "if": [{"in": [{"var": "targetingKey"}, ["qa-pricing"]]}, "treatment", None]
    }
    assert flags["pricing-page-test"]["defaultVariant"] == "control"
    # The prerequisite (payments-v2 serves "on" in staging) is inlined.
    assert flags["new-checkout"]["targeting"]["if"][0] == {"!==": ["on", "on"]}


def test_disabled_flags_serve_their_off_variation_statically() -> None:
    payload = extras_payload()
    definition = export_flagd(payload).document["flags"]["disabled"]
    assert definition == {
        "state": "ENABLED",
        "variants": {"no": "no", "yes": "yes"},
        "defaultVariant": "no",
    }
    core = FlagdCore()
    core.set_flags(export_flagd(payload).document)
    result = core.resolve_string_value("disabled", "caller-default", EvaluationContext("k"))
    assert (result.value, result.variant) == ("no", "no")


def test_progressions_use_fractional_in_the_cat_form_and_the_flagd_clock() -> None:
    payload = dict(payloads())["example:production"]
    text = json.dumps(
        export_flagd(payload, skip_unsupported=True).document["flags"]["new-checkout"]
    )
    assert (
        '{"fractional": [{"cat": ["new-checkout", {"var": "targetingKey"}]}, ["on", 1000], ["off", 99000]]}'
        in text
    )
    assert (
        '{"fractional": [{"cat": ["new-checkout", {"var": "targetingKey"}]}, ["on", 50000], ["off", 50000]]}'
        in text
    )
    # "half" is scheduled for 2026-12-03T09:00:00Z.
    assert '{">=": [{"var": "$flagd.timestamp"}, 1796288400]}' in text


def test_same_payload_same_bytes() -> None:
    payload = dict(payloads())["example:production"]
    first = flagd_json(export_flagd(payload, skip_unsupported=True).document)
    second = flagd_json(
        export_flagd(json.loads(json.dumps(payload)), skip_unsupported=True).document
    )
    assert first == second
    assert first.endswith(b"\n") and b"\n\n" not in first


# ---------------------------------------------------------------------------
# Refusals: never export something that evaluates differently.


def payload_with(flags: dict[str, Any], segments: dict[str, Any] | None = None) -> dict[str, Any]:
    payload = extras_payload()
    payload["flags"] = flags
    payload["segments"] = segments or {}
    return payload


@pytest.mark.parametrize(
    ("definition", "message"),
    [
        (
            flag(
                {"a": "a"},
                rules=[
                    rule("r", {"attribute": "email", "op": "matches", "values": ["^[a-z]+$"]}, "a")
                ],
            ),
            "rule 'r': 'matches' with the regular expression '^[a-z]+$': flagd has no regular expressions",
        ),
        (
            flag(
                {"a": "a"},
                rules=[rule("r", {"attribute": "targetingKey", "op": "exists", "values": []}, "a")],
            ),
            "attribute 'targetingKey': 'targetingKey' is reserved in flagd's context",
        ),
        (
            flag(
                {"a": "a"},
                rules=[
                    rule("r", {"attribute": "$flagd.timestamp", "op": "gt", "values": [1]}, "a")
                ],
            ),
            "reserved in flagd's context",
        ),
        (
            flag(
                {"a": "a"},
                rules=[rule("r", {"attribute": "n", "op": "lt", "values": [2**60]}, "a")],
            ),
            "beyond ±2^53 - 1",
        ),
        (flag({"a": [1, 2], "b": [3]}, flag_type="json"), "variation 'a' is a JSON list"),
        (flag({"a": 1, "b": "one"}, flag_type="json"), "variations mix number, string values"),
    ],
)
def test_constructs_flagd_cannot_reproduce_are_refused(
    definition: dict[str, Any], message: str
) -> None:
    payload = payload_with({"the-flag": definition})
    with pytest.raises(ExportError) as error:
        export_flagd(payload)
    assert "cannot export flag 'the-flag'" in error.value.message
    assert message in error.value.message
    assert error.value.hint and "--skip-unsupported" in error.value.hint
    skipped = export_flagd(payload, skip_unsupported=True)
    assert skipped.document["flags"] == {}
    assert [r.flag for r in skipped.refused] == ["the-flag"]


def test_a_refused_prerequisite_refuses_its_dependants() -> None:
    regex = {"attribute": "email", "op": "matches", "values": ["[0-9]"]}
    payload = payload_with(
        {
            "base": flag({"a": "a"}, rules=[rule("r", regex, "a")]),
            "dependant": flag({"a": "a"}, prerequisites=[{"flag": "base", "variation": "a"}]),
        }
    )
    refused = export_flagd(payload, skip_unsupported=True).refused
    assert {r.flag for r in refused} == {"base", "dependant"}
    assert "prerequisite 'base': rule 'r'" in next(
        r.reason for r in refused if r.flag == "dependant"
    )


def test_evaluators_refuse_text_flagd_core_would_mangle() -> None:
    """flagd-core substitutes ``$ref`` with ``re.sub``, whose replacement string turns
    JSON escapes (``\\u00e9``, ``\\\\``) into something else; inline mode is unaffected."""
    segments = {"eu": {"include": [], "exclude": [], "rules": [
        {"attribute": "city", "op": "eq", "values": ["Zürich"]}
    ]}}  # fmt: skip
    payload = payload_with(
        {"f": flag({"a": "a", "b": "b"}, rules=[rule("r", {"segment": "eu"}, "b")])}, segments
    )
    with pytest.raises(ExportError, match="export with --segments inline"):
        export_flagd(payload, segments="evaluators")
    document = export_flagd(payload).document
    core = FlagdCore()
    core.set_flags(document)
    hit = core.resolve_string_value("f", "x", EvaluationContext("k", {"city": "Zürich"}))
    assert hit.variant == "b"


# ---------------------------------------------------------------------------
# The command.


def test_cli_writes_the_staging_export_to_stdout(
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    assert cli("export", "--format", "flagd", "--env", "staging", "--repo", str(ROOT)) == 0
    out = capsysbinary.readouterr().out
    document = json.loads(out)
    check_schema(document)
    assert out == flagd_json(export_flagd(dict(payloads())["example:staging"]).document)


def test_cli_refuses_a_regex_flag_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("export", "--env", "production", "--repo", str(ROOT)) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    error_lines = captured.err.strip().splitlines()
    assert error_lines[0].startswith("error: flags/search-ranking/production.yaml:")
    assert "cannot export flag 'search-ranking'" in error_lines[0]
    assert "'matches'" in error_lines[0]
    assert error_lines[1].startswith("hint:")
    assert "Traceback" not in captured.err


def test_cli_skip_unsupported_writes_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "production.flagd.json"
    code = cli(
        "export",
        "--env",
        "production",
        "--skip-unsupported",
        "-o",
        str(target),
        "--repo",
        str(ROOT),
    )
    assert code == 0
    err = capsys.readouterr().err
    assert (
        "warning: left out flags/search-ranking/production.yaml:5:9: cannot export flag 'search-ranking'"
        in err
    )
    assert f"wrote {target} (7 flags" in err
    document = json.loads(target.read_text())
    check_schema(document)
    assert "search-ranking" not in document["flags"]


def test_cli_works_from_a_subdirectory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    repository = tmp_path / "repo"
    shutil.copytree(ROOT / "flags", repository / "flags")
    shutil.copytree(ROOT / "segments", repository / "segments")
    shutil.copy(ROOT / "flagstone.yaml", repository / "flagstone.yaml")
    monkeypatch.chdir(repository / "flags" / "new-checkout")
    assert cli("export", "--env", "staging", "--segments", "evaluators") == 0
    document = json.loads(capsysbinary.readouterr().out)
    check_schema(document)
    assert "staff" in document["$evaluators"]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--env", "qa"], 2, "unknown environment 'qa'"),
        (["--env", "staging", "--format", "yaml"], 2, "Invalid value for '--format'"),
        (["--format", "flagd"], 2, "Missing option '--env'"),
    ],
)
def test_cli_usage_errors(
    args: list[str], code: int, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli("export", *args, "--repo", str(ROOT)) == code
    assert message in capsys.readouterr().err


def test_an_output_file_that_cannot_be_written_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "missing" / "flagd.json"
    assert cli("export", "--env", "staging", "--repo", str(ROOT), "-o", str(target)) == 2
    err = capsys.readouterr().err
    assert err == f"error: cannot write {target}: No such file or directory\n"
    assert not target.parent.exists()
    # A good -o leaves only the finished file behind (written next to it, then renamed).
    target = tmp_path / "flagd.json"
    assert cli("export", "--env", "staging", "--repo", str(ROOT), "-o", str(target)) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["flagd.json"]
    check_schema(json.loads(target.read_text()))


# ---------------------------------------------------------------------------
# <env>/flagd.json next to the snapshot.


def test_flagd_json_is_written_and_never_replaced_by_an_older_version(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}/dist")
    payload = dict(payloads())["example:staging"]
    location = write_flagd_export(store, "staging", dict(payload, version=5))
    assert location.endswith(f"staging/{FLAGD_OBJECT}")
    written = tmp_path / "dist" / "staging" / FLAGD_OBJECT
    assert json.loads(written.read_text())["metadata"]["version"] == "5"
    # An older publisher finishing late does not replace the newer export.
    write_flagd_export(store, "staging", dict(payload, version=4))
    assert json.loads(written.read_text())["metadata"]["version"] == "5"
    write_flagd_export(store, "staging", dict(payload, version=6))
    assert json.loads(written.read_text())["metadata"]["version"] == "6"
    check_schema(json.loads(written.read_text()))


def test_the_exported_file_with_the_openfeature_flagd_provider(tmp_path: Path) -> None:
    """The file `flagstone export -o` writes, read by the real flagd provider in file mode
    through the real OpenFeature SDK, serves what the engine serves."""
    from openfeature import api
    from openfeature.contrib.provider.flagd import FlagdProvider
    from openfeature.contrib.provider.flagd.config import ResolverType

    from flagstone.engine import Snapshot

    target = tmp_path / "staging.flagd.json"
    assert cli("export", "--env", "staging", "-o", str(target), "--repo", str(ROOT)) == 0
    snapshot = Snapshot.from_payload(dict(payloads())["example:staging"])
    api.set_provider_and_wait(
        FlagdProvider(resolver_type=ResolverType.FILE, offline_flag_source_path=str(target))
    )
    try:
        client = api.get_client()
        for key in ("qa-legacy-checkout", "user-1001", "qa-no-recommendations", "someone"):
            for flag_key, get in (
                ("new-checkout", client.get_boolean_details),
                ("disable-recommendations", client.get_boolean_details),
                ("search-ranking", client.get_string_details),
            ):
                details = get(flag_key, None, EvaluationContext(key, {"email": f"{key}@acme.com"}))
                ours = snapshot.evaluate(flag_key, {"key": key, "email": f"{key}@acme.com"})
                assert (details.variant, details.value) == (ours.variation, ours.value), details
                assert details.flag_metadata["flagSetId"] == "acme-shop/staging"
    finally:
        api.shutdown()


def test_two_processes_write_the_same_bytes(tmp_path: Path) -> None:
    """Same commit, same bytes — also across interpreter runs with different hash seeds."""
    import os
    import subprocess
    import sys

    outputs = []
    for seed in ("1", "2"):
        target = tmp_path / f"export-{seed}.json"
        subprocess.run(
            [sys.executable, "-m", "flagstone", "export", "--env", "staging", "-o", str(target)],
            cwd=ROOT,
            env={**os.environ, "PYTHONHASHSEED": seed},
            check=True,
            capture_output=True,
            timeout=60,
        )
        outputs.append(target.read_bytes())
    assert outputs[0] == outputs[1]


def test_a_refusal_inside_a_segment_points_at_the_segment_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repository = tmp_path / "repo"
    for part in ("flags", "segments"):
        shutil.copytree(ROOT / part, repository / part)
    shutil.copy(ROOT / "flagstone.yaml", repository / "flagstone.yaml")
    staff = repository / "segments" / "staff.yaml"
    staff.write_text(
        staff.read_text() + '  - {attribute: email, op: matches, value: "^[a-z]+@acme\\\\.dev$"}\n'
    )
    assert cli("export", "--env", "staging", "--repo", str(repository)) == 1
    error = capsys.readouterr().err.splitlines()[0]
    line = (
        staff.read_text()
        .splitlines()
        .index('  - {attribute: email, op: matches, value: "^[a-z]+@acme\\\\.dev$"}')
    )
    assert error.startswith(f"error: segments/staff.yaml:{line + 1}:5: cannot export flag ")
    assert "segment 'staff': 'matches'" in error


def test_a_payload_without_the_snapshot_form_is_rejected_by_place() -> None:
    from flagstone.errors import SnapshotFormatError

    payload = extras_payload()
    del payload["flags"]["numbers"]["off_variation"]
    with pytest.raises(SnapshotFormatError, match=r"flags\.numbers\.off_variation"):
        export_flagd(payload)
