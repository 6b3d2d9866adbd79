"""``flagstone eval FLAG --env E``: what a context gets, and why.

One context (``--context JSON``) prints value, variation, reason and the explanation;
many (``--contexts FILE``, JSON lines, ``-`` for stdin) print one result per context —
JSON lines with ``--format json`` (summary on stderr), or just the summary table with
``--format text`` — answering "who gets this?" before a stage is advanced.
"""

from __future__ import annotations

import json
import math
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import click

from flagstone.cli.common import cache_option, repo_option, resolve_repo
from flagstone.cli.explain import explain
from flagstone.compile import compile_and_load, with_prerequisites
from flagstone.engine import ERROR, Details, parse_timestamp
from flagstone.errors import UsageError
from flagstone.escape import guard_lines, terminal
from flagstone.toolcache import cached_documents
from flagstone.validate import load_valid_project


def _parse_at(text: str | None) -> float | None:
    if text is None:
        return None
    instant = parse_timestamp(text)
    if instant is None:
        try:
            instant = float(text)
        except ValueError:
            instant = math.nan
        if not math.isfinite(instant):  # nan, inf and 1e400 are not instants
            raise UsageError(
                f"--at: {text!r} is not an RFC 3339 time (2026-12-03T09:00:00Z) or epoch seconds"
            ) from None
    return instant


class _StrictJSONError(ValueError):
    """JSON that Python's parser accepts but RFC 8259 does not (or a repeated key)."""


def _reject_constant(name: str) -> Any:
    raise _StrictJSONError(f"{name} is not a JSON value")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _StrictJSONError(f"duplicate key {key!r}")
        result[key] = value
    return result


_MAX_INTEGER_DIGITS = 4300  # Python's int-to-text limit: longer ones cannot even be shown


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_INTEGER_DIGITS:
        raise _StrictJSONError(f"an integer of {len(text.lstrip('-'))} digits is too long")
    return int(text)


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise _StrictJSONError(f"{text[:40]} is out of the range of a double")
    return number


def _parse_context(text: str, source: str, line: int = 1) -> dict[str, Any]:
    """One JSON object; errors name ``source:line:col`` (``line`` is where ``text`` starts)."""
    try:
        context = json.loads(
            text,
            parse_constant=_reject_constant,
            parse_int=_bounded_int,
            parse_float=_finite_float,
            object_pairs_hook=_unique_keys,
        )
    except json.JSONDecodeError as error:
        where = f"{source}:{line + error.lineno - 1}:{error.colno}"
        raise UsageError(f"{where}: invalid JSON: {error.msg}") from None
    except _StrictJSONError as error:
        raise UsageError(f"{source}:{line}: invalid JSON: {error}") from None
    except RecursionError:
        raise UsageError(f"{source}:{line}: JSON nested too deeply") from None
    if not isinstance(context, dict):
        kind = type(context).__name__
        raise UsageError(f"{source}:{line}: a context must be a JSON object, got {kind}")
    return context


def _read_contexts(path: Path) -> Iterator[dict[str, Any]]:
    """Contexts from a JSON-lines file, in order; blank lines are skipped."""
    name = "<stdin>" if str(path) == "-" else str(path)
    stream: TextIO
    try:
        stream = sys.stdin if str(path) == "-" else path.open(encoding="utf-8")
    except OSError as error:
        raise UsageError(f"--contexts: cannot read {name}: {error.strerror}") from None
    with stream:
        try:
            for number, line in enumerate(stream, start=1):
                if line.strip():
                    yield _parse_context(line, name, number)
        except UnicodeDecodeError:
            raise UsageError(f"{name}: not UTF-8 text") from None


def _record(details: Details) -> dict[str, Any]:
    record: dict[str, Any] = {
        "value": details.value,
        "variation": details.variation,
        "reason": details.reason,
        "rule": details.rule,
        "bucket": details.bucket,
    }
    if details.error_code:
        record["error_code"] = details.error_code
        record["error_message"] = details.error_message
    return record


def _summary_table(counts: Counter[str | None], total: int) -> str:
    rows = [("variation", "contexts", "share")]
    for variation, count in sorted(counts.items(), key=lambda item: (-item[1], str(item[0]))):
        share = f"{100 * count / total:.1f}%" if total else "-"
        rows.append((variation if variation is not None else "(error)", str(count), share))
    rows.append(("total", str(total), ""))
    width = max(len(r[0]) for r in rows)
    count_width = max(len(r[1]) for r in rows)
    return "\n".join(f"{a:<{width}}  {b:>{count_width}}  {c:>6}".rstrip() for a, b, c in rows)


@click.command("eval")
@click.argument("flag")
@click.option("--env", "env", required=True, help="Environment whose configuration is evaluated.")
@click.option("--context", "context_json", default=None, help="One context as a JSON object.")
@click.option(
    "--contexts",
    "contexts_file",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    default=None,
    help="JSON-lines file of contexts (- for stdin).",
)
@click.option(
    "--at", "at_text", default=None, help="Evaluate at this time (RFC 3339 or epoch seconds)."
)
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@repo_option
@cache_option
def eval_(
    flag: str,
    env: str,
    context_json: str | None,
    contexts_file: Path | None,
    at_text: str | None,
    fmt: str,
    repo: Path | None,
    no_cache: bool,
) -> None:
    """Evaluate FLAG in an environment for one context or a file of contexts."""
    if (context_json is None) == (contexts_file is None):
        raise UsageError("give exactly one of --context JSON or --contexts FILE")
    at = _parse_at(at_text)
    root = resolve_repo(repo)
    with cached_documents(root, use=not no_cache) as documents:
        project = load_valid_project(root, documents=documents)
    # Evaluating one flag reads that flag, its prerequisites and the segments only.
    _, snapshot = compile_and_load(with_prerequisites(project, flag), env)
    if flag not in snapshot.flags:
        archived = project.flags.get(flag)
        why = "it is archived" if archived is not None else "no such flag"
        raise UsageError(f"unknown flag {flag!r} in environment {env!r} ({why})")

    if context_json is not None:
        context = _parse_context(context_json, "--context")
        details = snapshot.evaluate(flag, context, at=at)
        why = explain(snapshot, flag, context, details, at=at)
        if fmt == "json":
            click.echo(
                json.dumps({"flag": flag, **_record(details), "why": why}, ensure_ascii=False)
            )
        else:
            shown = [
                f"{flag} = {json.dumps(details.value, ensure_ascii=False)}",
                f"  variation: {details.variation}",
                f"  reason:    {details.reason}",
            ]
            if details.rule is not None:
                shown.append(f"  rule:      {details.rule}")
            if details.bucket is not None:
                shown.append(f"  bucket:    {details.bucket} of 100000")
            shown.append(f"  why:       {why}")
            # Values, variation and rule names are contributors' text: one escaped line each.
            click.echo(guard_lines("\n".join(terminal(line) for line in shown)))
        if details.reason == ERROR:
            raise click.exceptions.Exit(1)
        return

    assert contexts_file is not None
    counts: Counter[str | None] = Counter()
    total = 0
    out = sys.stdout
    encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    lines: list[str] = []
    # Read every context first: a bad line fails the command before any output.
    for context in list(_read_contexts(contexts_file)):
        details = snapshot.evaluate(flag, context, at=at)
        counts[details.variation] += 1
        total += 1
        if fmt == "json":
            lines.append(encode(_record(details)))
            if len(lines) >= 4096:
                out.write("\n".join(lines) + "\n")
                lines.clear()
    if lines:
        out.write("\n".join(lines) + "\n")
    out.flush()
    click.echo(_summary_table(counts, total), err=fmt == "json")
