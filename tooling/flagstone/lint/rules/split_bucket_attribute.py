"""A split or progression buckets by an attribute no context is known to carry.

A context without the `bucket_by` attribute is never bucketed: it gets a split's first
variation and a progression's baseline, silently. The attributes contexts carry are
`key`, the `known_attributes` option, and (with `infer_from_conditions: true`)
every attribute some condition in the repository reads.

Passes::

    default: {split: {control: 50, treatment: 50}, bucket_by: key}

Fails (nothing reads or declares `acount_id`)::

    default: {split: {control: 50, treatment: 50}, bucket_by: acount_id}
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from flagstone.lint.context import LintContext
from flagstone.lint.walk import Where, condition_attributes, live_releases, progression_of, splits
from flagstone.model import Project
from flagstone.problems import Level, Problem

ID = "split-bucket-attribute"
DEFAULT_LEVEL: Level = "warning"
OPTIONS: Mapping[str, Any] = {"known_attributes": [], "infer_from_conditions": True}


def check(project: Project, options: Mapping[str, Any], context: LintContext) -> Iterator[Problem]:
    known = {"key", *options["known_attributes"]}
    if options["infer_from_conditions"]:
        known |= condition_attributes(project)
    for release in live_releases(project):
        bucketed: list[tuple[Where, Any]] = [(where, serve) for where, _, serve in splits(release)]
        progression = progression_of(release)
        if progression is not None:
            bucketed.append((("default", "progression"), progression))
        for where, holder in bucketed:
            attribute = holder.get("bucket_by", "key")
            if attribute in known:
                continue
            yield release.doc.problem(
                (*where, "bucket_by"),
                f"'{release.flag_key}' buckets by '{attribute}', which no condition reads "
                "and known_attributes does not list",
                rule=ID,
                level=DEFAULT_LEVEL,
                hint="fix the attribute name, or add it to lint.rules.split-bucket-attribute.known_attributes",
            )
