"""``flagstone eval``: one context with its explanation, JSON lines for many, the
summary, and one-line errors with exit codes."""

from __future__ import annotations

import io
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from flagstone.cli.main import main

FILES = {
    "flagstone.yaml": """\
        project: shop
        environments: [staging, production]
        teams:
          core: {github: "@shop/core"}
        admins: core
        """,
    "segments/staff.yaml": """\
        name: Staff
        owner: core
        rules:
          - {attribute: email, op: ends_with, value: "@shop.com"}
        """,
    "flags/checkout/flag.yaml": """\
        name: Checkout
        owner: core
        variations: {on: true, off: false}
        off_variation: off
        """,
    "flags/checkout/production.yaml": """\
        enabled: true
        targets: {on: [u-1]}
        rules:
          - name: old android
            if:
              all:
                - {attribute: platform, op: eq, value: android}
                - {attribute: app_version, op: semver_lt, value: "5.0.0"}
            serve: off
        default:
          progression:
            variation: on
            baseline: off
            current: ten
            stages:
              - {name: staff, segments: [staff]}
              - {name: ten, percent: 10}
              - {name: half, percent: 50, at: "2026-12-03T09:00:00Z"}
        """,
    "flags/color/flag.yaml": """\
        name: Color
        owner: core
        variations: {red: "#f00", blue: "#00f"}
        off_variation: red
        """,
    "flags/color/production.yaml": """\
        enabled: true
        default: {split: {red: 50, blue: 50}}
        """,
}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    for rel, text in FILES.items():
        path = tmp_path / "repo" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return tmp_path / "repo"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return int(exited.value.code or 0), out, err


def run_eval(
    capsys: pytest.CaptureFixture[str], repo: Path, flag: str, *args: str, env: str = "production"
) -> tuple[int, str, str]:
    return run(capsys, "eval", flag, "--env", env, "--repo", str(repo), *args)


def test_one_context_prints_value_reason_and_why(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_eval(capsys, repo, "checkout", "--context", '{"key": "u-1"}')
    assert code == 0
    assert out.splitlines() == [
        "checkout = true",
        "  variation: on",
        "  reason:    TARGETING_MATCH",
        "  why:       key 'u-1' is individually targeted for 'on'",
    ]


def test_json_output_explains_rules_segments_and_buckets(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def evaluate(context: dict[str, Any], *extra: str) -> dict[str, Any]:
        code, out, _ = run_eval(
            capsys, repo, "checkout", "--context", json.dumps(context), "--format", "json", *extra
        )
        assert code == 0
        result: dict[str, Any] = json.loads(out)
        return result

    rule = evaluate({"key": "u-2", "platform": "android", "app_version": "4.2.0"})
    assert (rule["value"], rule["reason"], rule["rule"]) == (
        False,
        "TARGETING_MATCH",
        "old android",
    )
    assert rule["why"] == "rule 'old android' matched"

    staff = evaluate({"key": "u-3", "email": "jo@shop.com"})
    assert (staff["variation"], staff["rule"]) == ("on", "staff")
    assert "segment of progression stage 'staff'" in staff["why"]

    bucketed = evaluate({"key": "u-4"}, "--at", "2026-12-01T00:00:00Z")
    assert bucketed["reason"] == "SPLIT" and bucketed["rule"] == "ten"
    assert (
        isinstance(bucketed["bucket"], int)
        and f"bucket {bucketed['bucket']} of 100000" in bucketed["why"]
    )
    assert bucketed["variation"] == ("on" if bucketed["bucket"] < 10000 else "off")

    # The same key at the scheduled instant of stage `half`.
    later = evaluate({"key": "u-4"}, "--at", "2026-12-03T09:00:00Z")
    assert later["rule"] == "half" and later["bucket"] == bucketed["bucket"]
    assert later["variation"] == ("on" if later["bucket"] < 50000 else "off")


def test_many_contexts_give_one_json_line_each_in_order(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    contexts = [
        {"key": "u-1"},
        {"key": "u-2", "platform": "android", "app_version": "1.0.0"},
        {"key": "u-3", "email": "x@shop.com"},
        {"key": 7},
        {},
    ] * 40
    lines = [json.dumps(c) for c in contexts]
    lines.insert(3, "   ")  # blank lines are not contexts
    path = tmp_path / "contexts.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, out, err = run_eval(
        capsys,
        repo,
        "checkout",
        "--contexts",
        str(path),
        "--format",
        "json",
        "--at",
        "2026-12-01T00:00:00Z",
    )
    assert code == 0
    results = [json.loads(line) for line in out.splitlines()]
    assert len(results) == len(contexts)
    expected = [
        ("on", "TARGETING_MATCH", None),
        ("off", "TARGETING_MATCH", "old android"),
        ("on", "TARGETING_MATCH", "staff"),
        (None, "ERROR", None),
        ("off", "DEFAULT", "ten"),
    ] * 40
    assert [(r["variation"], r["reason"], r["rule"]) for r in results] == expected
    assert all({"value", "variation", "reason"} <= r.keys() for r in results)
    assert results[3]["error_code"] == "INVALID_CONTEXT"
    summary = err.splitlines()
    assert summary[0].split() == ["variation", "contexts", "share"]
    assert summary[1].split() == ["off", "80", "40.0%"]
    assert ["on", "80", "40.0%"] in [row.split() for row in summary]
    assert ["(error)", "40", "20.0%"] in [row.split() for row in summary]
    assert summary[-1].split() == ["total", "200"]


def test_text_format_with_many_contexts_prints_the_table(
    repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    count = 2000
    stdin = "".join(json.dumps({"key": f"user-{i}"}) + "\n" for i in range(count))
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    monkeypatch.chdir(repo / "flags" / "color")  # works from a subdirectory
    code, out, err = run(capsys, "eval", "color", "--env", "production", "--contexts", "-")
    assert code == 0 and err == ""
    rows = {row.split()[0]: row.split()[1:] for row in out.splitlines()[1:]}
    assert set(rows) == {"red", "blue", "total"}
    assert int(rows["red"][0]) + int(rows["blue"][0]) == int(rows["total"][0]) == count
    assert 900 < int(rows["red"][0]) < 1100


def test_a_hundred_thousand_contexts(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "many.jsonl"
    with path.open("w", encoding="utf-8") as handle:
        for i in range(100_000):
            handle.write(f'{{"key": "user-{i}"}}\n')
    code, out, err = run_eval(capsys, repo, "color", "--contexts", str(path), "--format", "json")
    assert code == 0
    assert out.count("\n") == 100_000
    assert err.splitlines()[-1].split() == ["total", "100000"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--context", '{"key": "u-1"'],
            "error: --context:1:14: invalid JSON: Expecting ',' delimiter",
        ),
        (["--context", "[1, 2]"], "error: --context:1: a context must be a JSON object, got list"),
        ([], "error: give exactly one of --context JSON or --contexts FILE"),
        (
            ["--context", "{}", "--at", "next tuesday"],
            "error: --at: 'next tuesday' is not an RFC 3339 time",
        ),
        (
            ["--contexts", "/nonexistent/c.jsonl"],
            "error: --contexts: cannot read /nonexistent/c.jsonl",
        ),
    ],
)
def test_bad_input_is_a_one_line_usage_error(
    repo: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, out, err = run_eval(capsys, repo, "checkout", *args)
    assert code == 2 and out == ""
    assert err.startswith(message)


def test_bad_line_in_a_contexts_file_names_file_line_and_column(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text('{"key": "a"}\n{"key": "b"}\n{"key": b}\n', encoding="utf-8")
    code, _, err = run_eval(capsys, repo, "checkout", "--contexts", str(path))
    assert code == 2
    assert err.splitlines()[0] == f"error: {path}:3:9: invalid JSON: Expecting value"


@pytest.mark.parametrize(
    ("flag", "env", "message"),
    [
        (
            "nope",
            "production",
            "error: unknown flag 'nope' in environment 'production' (no such flag)",
        ),
        (
            "checkout",
            "prod",
            "error: unknown environment 'prod' (project environments: staging, production)",
        ),
    ],
)
def test_unknown_flag_or_environment(
    repo: Path, capsys: pytest.CaptureFixture[str], flag: str, env: str, message: str
) -> None:
    code, _, err = run_eval(capsys, repo, flag, "--context", "{}", env=env)
    assert code == 2
    assert err.splitlines()[0] == message


def test_an_error_result_exits_1(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_eval(capsys, repo, "checkout", "--context", '{"key": 5}')
    assert code == 1
    assert "INVALID_CONTEXT" in out


def test_disabled_in_another_environment(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_eval(capsys, repo, "checkout", "--context", '{"key": "u-1"}', env="staging")
    assert code == 0
    assert "reason:    DISABLED" in out and "disabled in staging" in out


def test_a_bad_line_late_in_the_file_prints_no_results(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text('{"key": "a"}\n' * 5000 + "[]\n", encoding="utf-8")
    code, out, err = run_eval(capsys, repo, "color", "--contexts", str(path), "--format", "json")
    assert (code, out) == (2, "")
    assert err.startswith(f"error: {path}:5001: a context must be a JSON object, got list")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--context", "[" * 100_000],
            "error: --context:1: JSON nested too deeply",
        ),
        (
            ["--context", '{"key": "u", "n": NaN}'],
            "error: --context:1: invalid JSON: NaN is not a JSON value",
        ),
        (
            ["--context", '{"key": "u", "n": -Infinity}'],
            "error: --context:1: invalid JSON: -Infinity is not a JSON value",
        ),
        (
            ["--context", '{"key": "u", "key": "v"}'],
            "error: --context:1: invalid JSON: duplicate key 'key'",
        ),
        (["--context", '{"key": "u"}', "--at", "nan"], "error: --at: 'nan' is not"),
        (["--context", '{"key": "u"}', "--at", "inf"], "error: --at: 'inf' is not"),
        (["--context", '{"key": "u"}', "--at", "1e400"], "error: --at: '1e400' is not"),
    ],
)
def test_json_that_python_tolerates_but_json_does_not_is_refused(
    repo: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, out, err = run_eval(capsys, repo, "checkout", *args)
    assert (code, out) == (2, "")
    assert err.startswith(message), err
    assert len(err.splitlines()) == 1


def test_a_deeply_nested_line_in_a_contexts_file_names_the_line(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text('{"key": "a"}\n' + "[" * 100_000 + "\n", encoding="utf-8")
    code, out, err = run_eval(capsys, repo, "checkout", "--contexts", str(path))
    assert (code, out) == (2, "")
    assert err.startswith(f"error: {path}:2: JSON nested too deeply")
