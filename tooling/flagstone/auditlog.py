"""The audit log: every semantic change on the first-parent history of a branch, with
its commit, author, date and pull-request number (``audit_log``), narrowed to a flag's
lineage, an environment or a time window (``select_entries``), and its renderings
(the ``log`` view: ``text``, ``json``, ``csv``).

Only the files each commit changed are read and parsed (``gitops.walk_projects``);
flags renamed by a commit are followed, so a flag's history survives renames.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from flagstone import escape
from flagstone.diff import detect_flag_renames, diff_projects
from flagstone.errors import GitError, UsageError
from flagstone.gitops import (
    Commit,
    first_parent_history,
    git_text,
    merged_authors,
    short_revision,
    walk_projects,
)
from flagstone.model import FLAGS_DIR, PROJECT_FILE
from flagstone.render import View


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One semantic change as it landed on the branch."""

    commit: str
    date: str
    timestamp: int
    author_name: str
    author_email: str
    pull_request: int | None
    subject: str  # "flag", "segment" or "project"
    key: str
    environment: str | None
    kind: str
    summary: str
    lineage: str  # the flag's first key: stays the same across renames
    # The pull request's author(s), "Name <email>" (``gitops.merged_authors``). The
    # author_name/author_email above are whoever made the first-parent commit: for a
    # merge commit, the person who merged.
    authors: tuple[str, ...] = ()


def commit_renames(commit: Commit) -> dict[str, str]:
    """Flag directories git saw renamed by ``commit``: old key -> new key."""
    renames: dict[str, str] = {}
    for change in commit.changes:
        if change.status == "R" and change.old is not None:
            old_parts, new_parts = PurePosixPath(change.old).parts, PurePosixPath(change.path).parts
            if (
                len(old_parts) == len(new_parts) == 3
                and old_parts[0] == new_parts[0] == FLAGS_DIR
                and old_parts[1] != new_parts[1]
            ):
                renames[old_parts[1]] = new_parts[1]
    return renames


def audit_log(root: Path, ref: str = "HEAD") -> list[LogEntry]:
    """Every semantic change on ``ref``'s first-parent history, oldest first.

    Refused in a shallow clone: its oldest commit would read as adding every flag."""
    if git_text(root, "rev-parse", "--is-shallow-repository") == "true":
        raise GitError(
            "this is a shallow clone: its history is cut off, so an audit log would be wrong",
            hint="fetch the full history (git fetch --unshallow; actions/checkout: fetch-depth: 0)",
        )
    entries: list[LogEntry] = []
    lineage: dict[str, str] = {}
    for commit, before, after in walk_projects(root, first_parent_history(root, ref)):
        renames = commit_renames(commit) or detect_flag_renames(before, after)
        for old, new in renames.items():
            lineage[new] = lineage.pop(old, old)
        labels = ("its parent", short_revision(commit.sha))
        authors: tuple[str, ...] | None = None
        for change in diff_projects(before, after, renames=renames, labels=labels):
            if authors is None:
                authors = merged_authors(root, commit)
            key = change.key
            if change.kind == "flag-added":  # a new flag, even one reusing an old key
                lineage[key] = f"{key}@{commit.sha}"
            entries.append(
                LogEntry(
                    commit=commit.sha,
                    date=commit.date,
                    timestamp=commit.timestamp,
                    author_name=commit.author_name,
                    author_email=commit.author_email,
                    pull_request=commit.pull_request,
                    subject=change.subject,
                    key=key,
                    environment=change.environment,
                    kind=change.kind,
                    summary=change.summary,
                    lineage=lineage.setdefault(key, key) if change.subject == "flag" else key,
                    authors=authors or (),
                )
            )
    return entries


def flag_lineage(entries: Iterable[LogEntry], flag: str) -> str | None:
    """The lineage id of the flag last known as ``flag`` (None if it never existed)."""
    found = None
    for entry in entries:
        if entry.subject == "flag" and entry.key == flag:
            found = entry.lineage
    return found


LOG_FORMAT = "flagstone.log/1"
LOG_COLUMNS = (
    "commit",
    "date",
    "author_name",
    "author_email",
    "pull_request",
    "environment",
    "flag",
    "segment",
    "kind",
    "summary",
    "authors",
)


def select_entries(
    entries: Sequence[LogEntry],
    *,
    flag: str | None = None,
    environment: str | None = None,
    since: float | None = None,
    until: float | None = None,
    known_environments: Iterable[str] = (),
) -> list[LogEntry]:
    """The entries of one flag's lineage (across renames), of one environment (plus the
    flag-wide, segment and project changes that reach every environment), in a time
    window (inclusive). An environment that is neither in ``known_environments`` nor
    in any entry is a usage error, so a typo never exports an empty audit."""
    known = set(known_environments) | {e.environment for e in entries if e.environment}
    if environment is not None and environment not in known:
        listed = ", ".join(sorted(known)) or "none"
        raise UsageError(f"unknown environment {environment!r} (environments: {listed})")
    selected = list(entries)
    if flag is not None:
        lineage = flag_lineage(entries, flag)
        if lineage is None:
            raise UsageError(f"flag {flag!r} never existed on this branch")
        selected = [e for e in selected if e.subject == "flag" and e.lineage == lineage]
    if environment is not None:
        selected = [e for e in selected if e.environment in (environment, None)]
    return [
        e
        for e in selected
        if (since is None or e.timestamp >= since) and (until is None or e.timestamp <= until)
    ]


def log_row(entry: LogEntry) -> dict[str, str | int | None]:
    """One entry with the ``LOG_COLUMNS`` fields (the JSON and CSV record)."""
    return {
        "commit": entry.commit,
        "date": entry.date,
        "author_name": entry.author_name,
        "author_email": entry.author_email,
        "pull_request": entry.pull_request,
        "environment": entry.environment,
        "flag": entry.key if entry.subject == "flag" else None,
        "segment": entry.key if entry.subject == "segment" else None,
        "kind": entry.kind,
        "summary": entry.summary,
        "authors": "; ".join(entry.authors),
    }


_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_instant(text: str, what: str = "--at") -> float | None:
    """Epoch seconds of a time in one of ``timeforms.TIME_FORMS`` (``2026-11-10``,
    ``2026-11-10T09:30``, with ``Z`` or an offset, …); None when ``text`` does not start
    like a date (then it is taken as a revision). A date-like text that is not a valid
    time is a ``UsageError`` naming the accepted forms."""
    from flagstone.timeforms import looks_like_time, parse_time

    if not looks_like_time(text):
        return None
    return parse_time(text, what)


def parse_bound(text: str | None, option: str, *, end_of_day: bool) -> float | None:
    """A ``--since``/``--until`` bound; a bare date ends at 23:59:59 when ``end_of_day``."""
    from flagstone.timeforms import TIME_FORMS, parse_time

    if text is None:
        return None
    instant = parse_time(text, option) if text.strip().isdigit() else parse_instant(text, option)
    if instant is None:
        raise UsageError(f"{option} {text!r} is not a time; use {TIME_FORMS}")
    if end_of_day and _DATE_ONLY.fullmatch(text):
        instant += 86400 - 1
    return instant


# --- renderings -----------------------------------------------------------------------------

LOG_VIEW: View[Sequence[LogEntry]] = View("log")


@LOG_VIEW.format("json")
def render_log_json(entries: Sequence[LogEntry]) -> str:
    rows = [dict(log_row(e), authors=list(e.authors)) for e in entries]
    document = {"format": LOG_FORMAT, "entries": rows}
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


@LOG_VIEW.format("csv")
def render_log_csv(entries: Sequence[LogEntry]) -> str:
    """A header row, then one row per entry; RFC 4180 quoting and CRLF line ends; cells
    escaped by ``escape.spreadsheet_cell`` (one line each, never a formula)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=LOG_COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    for entry in entries:
        writer.writerow({k: escape.spreadsheet_cell(v) for k, v in log_row(entry).items()})
    return buffer.getvalue()


@LOG_VIEW.format("text")
def render_log_text(entries: Sequence[LogEntry]) -> str:
    """One line per change; what a committer or author wrote is shown escaped
    (``escape.terminal``), so it cannot move the cursor, erase or forge lines."""
    lines = []
    for e in entries:
        pr = f" #{e.pull_request}" if e.pull_request else ""
        where = f"{e.environment}: " if e.environment else ""
        what = e.key or PROJECT_FILE
        who = f"{e.author_name} <{e.author_email}>"
        # The merger first; the pull request's authors beside it when they differ.
        by = f" (by {', '.join(e.authors)})" if e.authors and e.authors != (who,) else ""
        line = f"{e.date} {e.commit[:12]} {who}{pr}{by}  {where}{what}: {e.summary}"
        lines.append(escape.terminal(line) + "\n")
    return "".join(lines)
