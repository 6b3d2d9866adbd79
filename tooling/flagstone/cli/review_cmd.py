"""Review commands: ``diff`` and ``check-change``, the change a pull request makes.

Against the working tree both read only the flags git reports changed when they can
(``flagstone.worktree_change``), so they answer quickly on a large repository."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from flagstone import gitops
from flagstone.cli.common import (
    cache_option,
    echo_view,
    findings_format_option,
    repo_option,
    resolve_repo,
    view_format_option,
)
from flagstone.diff import DIFF_VIEW, diff_projects, make_report
from flagstone.guardrails import check_change as guardrail_findings
from flagstone.guardrails import findings as narrowed_findings
from flagstone.model import read_project
from flagstone.problems import report
from flagstone.toolcache import ToolCache, cached_documents
from flagstone.worktree_change import narrowed_by_base, narrowed_projects, remember_base


@click.command("diff")
@click.argument("base", required=False)
@click.argument("head", required=False)
@view_format_option(DIFF_VIEW, help="markdown is a pull-request comment.")
@repo_option
@cache_option
def diff(base: str | None, head: str | None, fmt: str, repo: Path | None, no_cache: bool) -> None:
    """Semantic diff of flags and segments between BASE and HEAD.

    BASE defaults to the merge-base of HEAD with the default branch (origin/HEAD, else
    main, else master); HEAD defaults to the working tree. The diff is informational:
    it exits 0 whatever changed.
    """
    root = resolve_repo(repo)
    base_commit = gitops.resolve_revision(root, base) if base else gitops.default_base(root)
    narrowed = None
    if head is None and not no_cache:
        narrowed = narrowed_projects(root, base_commit, ToolCache.for_repository(root))
    if narrowed is not None:
        (before, after), head_label = narrowed, gitops.WORKING_TREE
    else:
        with cached_documents(root, use=not no_cache) as documents:
            cache = documents.cache if documents is not None else None
            before = gitops.project_at(root, base_commit, cache=cache)
            if head is None:
                head_label = gitops.WORKING_TREE
                narrowed = narrowed_by_base(root, base_commit, before, cache)
                if narrowed is not None:
                    before, after = narrowed
                else:
                    after = read_project(root, documents=documents)
            else:
                remember_base(root, base_commit, before, cache)
                head_commit = gitops.resolve_revision(root, head)
                after, head_label = gitops.project_at(root, head_commit, cache=cache), head
    base_label = base or gitops.short_revision(base_commit)
    changes = diff_projects(before, after, labels=(base_label, head_label))
    report = make_report(before, after, changes, base=base_label, head=head_label)
    echo_view(DIFF_VIEW, fmt, report)


@click.command("check-change")
@click.option(
    "--base",
    default=None,
    help="Revision to compare with (default: merge-base with the default branch).",
)
@findings_format_option
@repo_option
@cache_option
def check_change(base: str | None, fmt: str, repo: Path | None, no_cache: bool) -> None:
    """Rollout guardrails on the change from BASE to the working tree: step size, bake
    time, values production serves, flags others depend on. Exit 1 on a violation."""
    root = resolve_repo(repo)
    base_commit = gitops.resolve_revision(root, base) if base else gitops.default_base(root)
    cache = None if no_cache else ToolCache.for_repository(root)
    narrowed = narrowed_projects(root, base_commit, cache)
    if narrowed is not None:
        problems = narrowed_findings(root, base_commit, *narrowed)
    else:
        with cached_documents(root, use=not no_cache) as documents:
            problems = guardrail_findings(root, base_commit, documents=documents)
    report(problems, fmt=fmt, checked="check-change", out=sys.stdout)
    if any(p.level == "error" for p in problems):
        raise click.exceptions.Exit(1)
