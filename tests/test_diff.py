"""Semantic diff: every change kind, the exposure arithmetic and the three renderers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flagstone import diff
from flagstone.diff import diff_projects, make_report, render_json, render_markdown, render_text
from flagstone.gitops import project_from_files
from flagstone.model import Project

PROJECT = """\
project: shop
environments: [staging, production]
teams:
  eng: {github: "@acme/eng"}
  pm: {github: "@acme/pm"}
admins: eng
"""
FLAG = """\
name: New checkout
owner: eng
kind: release
variations: {on: true, off: false}
off_variation: off
delegate: {production: pm}
"""
PRODUCTION = """\
enabled: true
targets:
  on: [user-1, user-2]
rules:
  - name: staff
    if: {segment: staff}
    serve: on
  - name: android
    if: {attribute: platform, op: eq, value: android}
    serve: off
default:
  progression:
    variation: on
    baseline: off
    current: beta
    stages:
      - {name: staff, segments: [staff]}
      - {name: beta, segments: [beta-testers], percent: 1}
      - {name: ten, percent: 10, bake: 24h}
      - {name: half, percent: 50, at: "2026-12-03T09:00:00Z"}
      - {name: ga, percent: 100}
"""
STAGING = """\
enabled: true
default: on
"""
PRICING = """\
name: Pricing
owner: eng
variations: {control: two, treatment: three}
off_variation: control
"""
PRICING_PRODUCTION = """\
enabled: true
default:
  split: {control: 50, treatment: 50}
"""
STAFF = """\
name: Staff
owner: eng
include: [user-1, user-2]
exclude: [user-9]
rules:
  - {attribute: email, op: ends_with, value: "@acme.com"}
"""
BETA = """\
name: Beta
owner: pm
include: [user-3]
"""

BASE = {
    "flagstone.yaml": PROJECT,
    "flags/new-checkout/flag.yaml": FLAG,
    "flags/new-checkout/production.yaml": PRODUCTION,
    "flags/new-checkout/staging.yaml": STAGING,
    "flags/pricing/flag.yaml": PRICING,
    "flags/pricing/production.yaml": PRICING_PRODUCTION,
    "segments/staff.yaml": STAFF,
    "segments/beta-testers.yaml": BETA,
}


def project(files: dict[str, str]) -> Project:
    return project_from_files(Path("/repo"), {k: v.encode() for k, v in files.items()})


def changed(path: str, old: str, new: str, files: dict[str, str] | None = None) -> dict[str, str]:
    files = dict(files or BASE)
    assert old in files[path], (old, path)
    files[path] = files[path].replace(old, new, 1)
    return files


def changes_for(files: dict[str, str]) -> list[diff.Change]:
    return diff_projects(project(BASE), project(files), labels=("main", "working tree"))


def only(files: dict[str, str]) -> diff.Change:
    found = changes_for(files)
    assert len(found) == 1, [c.line() for c in found]
    return found[0]


def test_identical_projects_have_no_changes() -> None:
    assert changes_for(dict(BASE)) == []


def test_stage_advanced_states_exposure_before_and_after() -> None:
    change = only(changed("flags/new-checkout/production.yaml", "current: beta", "current: ten"))
    assert change.kind == diff.STAGE_ADVANCED
    assert change.environment == "production"
    assert change.key == "new-checkout"
    assert change.summary == (
        "stage advanced beta (1% + staff, beta-testers) → ten (10% + staff, beta-testers): "
        "about +9% of contexts"
    )
    assert change.exposure_delta == 9.0
    assert change.risk == "raise"


def test_stage_rolled_back_lowers_exposure() -> None:
    change = only(changed("flags/new-checkout/production.yaml", "current: beta", "current: staff"))
    assert change.kind == diff.STAGE_ROLLED_BACK
    assert change.summary == (
        "stage rolled back beta (1% + staff, beta-testers) → staff (0% + staff): "
        "about −1% of contexts, minus segment beta-testers"
    )
    assert change.risk == "lower"


def test_stage_percent_edit_reports_the_current_stage_delta() -> None:
    files = changed(
        "flags/new-checkout/production.yaml",
        "{name: beta, segments: [beta-testers], percent: 1}",
        "{name: beta, segments: [beta-testers], percent: 2.5}",
    )
    change = only(files)
    assert change.kind == diff.STAGES_CHANGED
    assert change.summary.startswith("stage beta percent 1 → 2.5")
    assert "about +1.5% of contexts" in change.summary


def test_schedule_added_changed_and_removed() -> None:
    path = "flags/new-checkout/production.yaml"
    moved = only(changed(path, '"2026-12-03T09:00:00Z"', '"2026-12-04T09:00:00Z"'))
    assert moved.kind == diff.SCHEDULE_CHANGED
    assert moved.summary == "stage half rescheduled 2026-12-03T09:00:00Z → 2026-12-04T09:00:00Z"
    assert moved.risk == "lower"  # later: less exposure in between
    sooner = only(changed(path, '"2026-12-03T09:00:00Z"', '"2026-12-02T09:00:00Z"'))
    assert sooner.risk == "raise"
    added = only(
        changed(
            path, "{name: ga, percent: 100}", '{name: ga, percent: 100, at: "2027-01-01T00:00:00Z"}'
        )
    )
    assert added.summary == "stage ga scheduled at 2027-01-01T00:00:00Z"
    assert added.risk == "raise"
    removed = only(changed(path, ', at: "2026-12-03T09:00:00Z"', ""))
    assert removed.summary == "stage half schedule removed (was 2026-12-03T09:00:00Z)"
    assert removed.risk == "lower"


def test_enabled_and_disabled() -> None:
    disabled = only(changed("flags/new-checkout/staging.yaml", "enabled: true", "enabled: false"))
    assert (disabled.kind, disabled.environment, disabled.risk) == (
        diff.DISABLED,
        "staging",
        "lower",
    )
    assert disabled.summary == "disabled: everyone gets off"
    off = changed("flags/new-checkout/staging.yaml", "enabled: true", "enabled: false")
    enabled = diff_projects(project(off), project(BASE))
    assert [c.kind for c in enabled] == [diff.ENABLED]
    assert enabled[0].summary == "enabled: now serves on by default"


def test_targets_added_and_removed() -> None:
    files = changed(
        "flags/new-checkout/production.yaml", "on: [user-1, user-2]", "on: [user-2, user-3, user-4]"
    )
    found = {c.kind: c for c in changes_for(files)}
    assert found[diff.TARGETS_ADDED].summary == "targets +2 to on: user-3, user-4"
    assert found[diff.TARGETS_REMOVED].summary == "targets −1 from on: user-1"


def test_rules_added_removed_reordered_and_changed() -> None:
    path = "flags/new-checkout/production.yaml"
    staff_rule = "  - name: staff\n    if: {segment: staff}\n    serve: on\n"
    android_rule = (
        "  - name: android\n    if: {attribute: platform, op: eq, value: android}\n    serve: off\n"
    )
    swapped = changed(path, staff_rule + android_rule, android_rule + staff_rule)
    assert only(swapped).kind == diff.RULES_REORDERED
    assert only(swapped).summary == "rules reordered: staff, android → android, staff"
    removed = only(changed(path, android_rule, ""))
    assert (removed.kind, removed.summary) == (
        diff.RULE_REMOVED,
        "rule 'android' removed (was serve off)",
    )
    added = only(
        changed(
            path,
            android_rule,
            android_rule
            + "  - name: ios\n    if: {attribute: platform, op: eq, value: ios}\n    serve: on\n",
        )
    )
    assert added.kind == diff.RULE_ADDED
    assert added.summary.startswith("rule 'ios' added: if ")
    edited = only(
        changed(path, "value: android}\n    serve: off", "value: android}\n    serve: on")
    )
    assert (edited.kind, edited.summary) == (diff.RULE_CHANGED, "rule 'android': serve off → on")


def test_default_changed_with_exposure() -> None:
    change = only(changed("flags/new-checkout/staging.yaml", "default: on", "default: off"))
    assert (change.kind, change.summary, change.risk) == (
        diff.DEFAULT_CHANGED,
        "default on → off",
        "change",
    )
    split = only(
        changed(
            "flags/pricing/production.yaml",
            "{control: 50, treatment: 50}",
            "{control: 40, treatment: 60}",
        )
    )
    assert split.summary == (
        "default split control 50% / treatment 50% → split control 40% / treatment 60%: "
        "about +10% of contexts get a new variation"
    )
    assert split.exposure_delta == 10.0


def test_progression_fields_changed() -> None:
    change = only(changed("flags/new-checkout/production.yaml", "baseline: off", "baseline: on"))
    assert change.summary == "progression baseline off → on"


def test_flag_level_changes() -> None:
    path = "flags/new-checkout/flag.yaml"
    owner = only(changed(path, "owner: eng", "owner: pm"))
    assert (owner.kind, owner.summary, owner.environment) == (
        diff.OWNER_CHANGED,
        "owner eng → pm",
        None,
    )
    delegate = only(changed(path, "delegate: {production: pm}", "delegate: {production: eng}"))
    assert (delegate.kind, delegate.environment) == (diff.DELEGATION_CHANGED, "production")
    assert delegate.summary == "delegation pm → eng"
    both = changes_for(changed(path, "delegate: {production: pm}", "delegate: {staging: pm}"))
    assert [(c.environment, c.summary) for c in both] == [
        ("production", "delegation to pm removed (back to owner eng)"),
        ("staging", "delegated to pm"),
    ]
    renamed = only(changed(path, "name: New checkout", "name: New checkout flow"))
    assert (renamed.kind, renamed.summary) == (
        diff.FLAG_CHANGED,
        "name: New checkout → New checkout flow",
    )
    archived = only(changed(path, "owner: eng\n", "owner: eng\narchived: true\n"))
    assert archived.kind == diff.FLAG_ARCHIVED


def test_variation_changes_name_where_they_are_served() -> None:
    path = "flags/pricing/flag.yaml"
    value = only(changed(path, "treatment: three", "treatment: four"))
    assert value.kind == diff.VARIATION_CHANGED
    assert value.summary == "variation treatment value three → four (served in production)"
    added = only(changed(path, "treatment: three}", "treatment: three, bold: five}"))
    assert (added.kind, added.summary) == (diff.VARIATION_ADDED, "variation bold added (five)")
    off = only(changed(path, "off_variation: control", "off_variation: treatment"))
    assert off.kind == diff.OFF_VARIATION_CHANGED


def test_variation_removed_and_prerequisites() -> None:
    files = changed(
        "flags/pricing/flag.yaml",
        "{control: two, treatment: three}",
        "{control: two, treatment: three, extra: x}",
    )
    back = diff_projects(project(files), project(BASE))
    assert [(c.kind, c.summary) for c in back] == [
        (diff.VARIATION_REMOVED, "variation extra removed (was x)")
    ]
    prereq = only(
        changed(
            "flags/new-checkout/flag.yaml",
            "off_variation: off\n",
            "off_variation: off\nprerequisites: [{flag: pricing, variation: treatment}]\n",
        )
    )
    assert (prereq.kind, prereq.summary) == (
        diff.PREREQUISITES_CHANGED,
        "prerequisites none → pricing=treatment",
    )


def test_flags_and_releases_added_and_removed() -> None:
    files = dict(BASE)
    files["flags/dark-mode/flag.yaml"] = (
        "name: Dark mode\nowner: eng\nvariations: {on: true, off: false}\noff_variation: off\n"
    )
    files["flags/dark-mode/staging.yaml"] = "enabled: true\ndefault: on\n"
    del files["flags/pricing/production.yaml"]
    found = [(c.kind, c.key, c.environment, c.summary) for c in changes_for(files)]
    assert found == [
        (
            "flag-added",
            "dark-mode",
            None,
            "flag added: 'Dark mode' (release, owner eng, variations on, off)",
        ),
        ("release-added", "dark-mode", "staging", "release added: enabled, default on"),
        (
            "release-removed",
            "pricing",
            "production",
            "release removed: now serves control to everyone",
        ),
    ]
    gone = dict(BASE)
    del gone["flags/pricing/flag.yaml"], gone["flags/pricing/production.yaml"]
    assert [(c.kind, c.key) for c in changes_for(gone)] == [(diff.FLAG_REMOVED, "pricing")]


def test_rename_detected_from_identical_definition() -> None:
    files = {k.replace("flags/pricing/", "flags/pricing-v2/"): v for k, v in BASE.items()}
    files["flags/pricing-v2/production.yaml"] = files["flags/pricing-v2/production.yaml"].replace(
        "50, treatment: 50", "40, treatment: 60"
    )
    found = changes_for(files)
    assert [(c.kind, c.key) for c in found] == [
        (diff.FLAG_RENAMED, "pricing-v2"),
        (diff.DEFAULT_CHANGED, "pricing-v2"),
    ]
    assert found[0].summary == "renamed from pricing"


def test_segment_changes() -> None:
    path = "segments/staff.yaml"
    membership = changes_for(
        changed(path, "include: [user-1, user-2]", "include: [user-2, user-5, user-6]")
    )
    assert [(c.kind, c.summary) for c in membership] == [
        (
            diff.SEGMENT_MEMBERSHIP,
            "include +2/−1 (added user-5, user-6; removed user-1) — used by new-checkout (production)",
        )
    ]
    assert membership[0].risk == "raise"
    rules = only(changed(path, 'value: "@acme.com"}', 'value: "@acme.io"}'))
    assert rules.kind == diff.SEGMENT_RULES_CHANGED
    assert rules.summary.startswith("rules +1/−1; added ")
    owner = only(changed(path, "owner: eng", "owner: pm"))
    assert (owner.kind, owner.summary) == (diff.SEGMENT_CHANGED, "owner: eng → pm")
    files = dict(BASE)
    files["segments/vip.yaml"] = "name: VIP\nowner: pm\ninclude: [a, b]\n"
    del files["segments/beta-testers.yaml"]
    assert [(c.kind, c.key) for c in changes_for(files)] == [
        (diff.SEGMENT_REMOVED, "beta-testers"),
        (diff.SEGMENT_ADDED, "vip"),
    ]


def test_project_file_changes() -> None:
    found = only(changed("flagstone.yaml", "[staging, production]", "[dev, staging, production]"))
    assert (found.kind, found.summary) == (diff.PROJECT_CHANGED, "environments +dev")


def test_invalid_file_is_a_change_not_a_removed_flag() -> None:
    files = dict(BASE)
    files["flags/pricing/flag.yaml"] = "name: [unclosed\n"
    files["flags/new-checkout/staging.yaml"] = "enabled: true\nenabled: false\n"
    found = changes_for(files)
    assert [c.kind for c in found] == [diff.FILE_INVALID, diff.FILE_INVALID]
    report = make_report(project(BASE), project(files), found, base="main", head="working tree")
    text = render_text(report)
    assert (
        "file invalid at working tree: flags/new-checkout/staging.yaml:2:1: duplicate key 'enabled'"
        in text
    )
    assert "flag-removed" not in render_json(report)
    fixed = diff_projects(project(files), project(BASE), labels=("main", "head"))
    # Fixed files are reported, and what they now say reads as new (the old is unknown).
    assert [(c.kind, c.key, c.risk) for c in fixed] == [
        (diff.FILE_INVALID, "", "none"),
        (diff.FILE_INVALID, "", "none"),
        (diff.RELEASE_ADDED, "new-checkout", "raise"),
        (diff.FLAG_ADDED, "pricing", "none"),
        (diff.RELEASE_ADDED, "pricing", "raise"),
    ]
    assert fixed[0].summary.startswith("file invalid at main (fixed since): ")


def _mixed_report() -> diff.DiffReport:
    files = changed("flags/new-checkout/production.yaml", "current: beta", "current: ten")
    files = changed("flags/new-checkout/staging.yaml", "enabled: true", "enabled: false", files)
    files = changed("flags/pricing/production.yaml", "enabled: true", "enabled: false", files)
    files = changed("segments/beta-testers.yaml", "[user-3]", "[user-3, user-4]", files)
    files = changed("flags/pricing/flag.yaml", "name: Pricing", "name: Pricing test", files)
    before, after = project(BASE), project(files)
    return make_report(before, after, diff_projects(before, after), base="main", head="feature")


def test_markdown_is_a_pull_request_comment_with_production_first() -> None:
    markdown = render_markdown(_mixed_report())
    lines = markdown.splitlines()
    assert lines[0] == "### Flagstone: 5 flag changes"
    assert lines[2] == "**⚠ 2 production changes raise exposure; 1 flag disabled in production**"
    sections = [line for line in lines if line.startswith("<details")]
    assert sections == [
        "<details open><summary><b>production</b> — 2 changes</summary>",
        "<details><summary><b>staging</b> — 1 change</summary>",
        "<details><summary><b>all environments</b> — 1 change</summary>",
        "<details><summary><b>segments</b> — 1 change</summary>",
    ]
    assert markdown.count("</details>") == 4
    assert (
        "| ⬆ | `new-checkout` New checkout | stage advanced beta (1% + staff, beta-testers) → ten (10% + staff, beta-testers): about +9% of contexts |"
        in lines
    )


def test_text_groups_by_environment() -> None:
    text = render_text(_mixed_report())
    assert text.splitlines()[:4] == [
        "main..feature: 5 changes",
        "⚠ 2 production changes raise exposure; 1 flag disabled in production",
        "production:",
        "  new-checkout: stage advanced beta (1% + staff, beta-testers) → ten (10% + staff, beta-testers): about +9% of contexts",
    ]


def test_json_shape_is_stable() -> None:
    document = json.loads(render_json(_mixed_report()))
    assert set(document) == {
        "format",
        "base",
        "head",
        "risk_summary",
        "protected_environments",
        "changes",
    }
    assert document["format"] == "flagstone.diff/1"
    assert document["protected_environments"] == ["production"]
    first = document["changes"][0]
    assert set(first) == {
        "kind", "subject", "key", "environment", "summary", "path",
        "risk", "exposure_delta", "before", "after", "affects",
    }  # fmt: skip
    segment = next(c for c in document["changes"] if c["subject"] == "segment")
    assert segment["affects"] == ["production"]
    assert {c["kind"] for c in document["changes"]} <= set(diff.CHANGE_KINDS)
    assert render_json(_mixed_report()) == render_json(_mixed_report())  # same input, same bytes


def test_no_change_summaries() -> None:
    report = make_report(project(BASE), project(BASE), [], base="a", head="b")
    assert render_text(report) == "a..b: no flag changes\n"
    assert "no flag changes" in render_markdown(report)


@pytest.mark.parametrize(
    ("environments", "guardrails", "expected"),
    [
        ("[staging, production]", "", ["production", "staging"]),
        ("[dev, staging, live]", "", ["live", "staging", "dev"]),
        (
            "[dev, prod-eu, prod-us]",
            "guardrails: {protected_environments: [prod-us, prod-eu]}\n",
            ["prod-us", "prod-eu", "dev"],
        ),
    ],
)
def test_environment_order(environments: str, guardrails: str, expected: list[str]) -> None:
    files = {"flagstone.yaml": PROJECT.replace("[staging, production]", environments) + guardrails}
    assert diff.environment_order(project(files).config) == expected


def test_every_change_kind_is_produced_by_some_edit() -> None:
    """The issue asks for every change kind to be covered: one edit per kind."""
    production = "flags/new-checkout/production.yaml"
    flag = "flags/new-checkout/flag.yaml"
    archived = changed(flag, "owner: eng\n", "owner: eng\narchived: true\n")
    added_flag = dict(BASE, **{"flags/x/flag.yaml": PRICING, "flags/x/staging.yaml": STAGING})
    renamed = {k.replace("flags/pricing/", "flags/pricing-2/"): v for k, v in BASE.items()}
    without_release = {k: v for k, v in BASE.items() if k != "flags/pricing/production.yaml"}
    without_segment = {k: v for k, v in BASE.items() if k != "segments/beta-testers.yaml"}
    variants = [
        (BASE, dict(BASE, **{"segments/staff.yaml": "name: [\n"})),
        (BASE, changed("flagstone.yaml", "admins: eng", "admins: pm")),
        (BASE, added_flag),
        (added_flag, BASE),
        (BASE, renamed),
        (BASE, archived),
        (archived, BASE),
        (BASE, changed(flag, "name: New checkout", "name: Checkout")),
        (BASE, changed(flag, "owner: eng", "owner: pm")),
        (BASE, changed(flag, "{production: pm}", "{production: eng}")),
        (BASE, changed(flag, "off: false}", "off: false, dark: false}")),
        (changed(flag, "off: false}", "off: false, dark: false}"), BASE),
        (BASE, changed("flags/pricing/flag.yaml", "three}", "four}")),
        (BASE, changed(flag, "off_variation: off", "off_variation: on")),
        (
            BASE,
            changed(
                flag, "delegate:", "prerequisites: [{flag: pricing, variation: control}]\ndelegate:"
            ),
        ),
        (without_release, BASE),
        (BASE, without_release),
        (BASE, changed("flags/new-checkout/staging.yaml", "enabled: true", "enabled: false")),
        (changed("flags/new-checkout/staging.yaml", "enabled: true", "enabled: false"), BASE),
        (BASE, changed(production, "on: [user-1, user-2]", "on: [user-3]")),
        (BASE, changed(production, "name: android", "name: android-old")),
        (
            BASE,
            changed(
                production, "value: android}\n    serve: off", "value: android}\n    serve: on"
            ),
        ),
        (
            BASE,
            changed(
                production,
                "  - name: staff\n    if: {segment: staff}\n    serve: on\n",
                "",
                changed(
                    production,
                    "serve: off\n",
                    "serve: off\n  - name: staff\n    if: {segment: staff}\n    serve: on\n",
                ),
            ),
        ),
        (BASE, changed("flags/new-checkout/staging.yaml", "default: on", "default: off")),
        (BASE, changed(production, "current: beta", "current: ten")),
        (BASE, changed(production, "current: beta", "current: staff")),
        (BASE, changed(production, "percent: 10, bake: 24h", "percent: 10, bake: 48h")),
        (BASE, changed(production, "2026-12-03T09", "2026-12-04T09")),
        (without_segment, BASE),
        (BASE, without_segment),
        (BASE, changed("segments/staff.yaml", "[user-1, user-2]", "[user-1]")),
        (BASE, changed("segments/staff.yaml", '"@acme.com"', '"@acme.org"')),
        (BASE, changed("segments/staff.yaml", "name: Staff", "name: Employees")),
    ]
    produced = {
        c.kind for before, after in variants for c in diff_projects(project(before), project(after))
    }
    assert produced == set(diff.CHANGE_KINDS)


def test_segment_users_follow_segments_inside_segments() -> None:
    files = dict(BASE)
    files["segments/vip.yaml"] = "name: VIP\nowner: pm\nrules:\n  - {segment: beta-testers}\n"
    files["flags/pricing/production.yaml"] = (
        "enabled: true\nrules:\n  - name: vips\n    if: {not: {segment: vip}}\n    serve: control\n"
        "default: treatment\n"
    )
    files["flags/new-checkout/staging.yaml"] = (
        "enabled: false\ndefault: on\nrules:\n  - {name: b, if: {segment: beta-testers}, serve: on}\n"
    )
    users = diff.segment_users(project(files), "beta-testers")
    assert users == {
        "new-checkout": ["production"],
        "pricing": ["production"],
    }  # disabled staging is no use
    assert diff.segment_users(project(files), "staff") == {"new-checkout": ["production"]}
    assert diff.segment_users(project(files), "vip") == {"pricing": ["production"]}


@settings(max_examples=100, deadline=None)
@given(
    percents=st.lists(st.integers(0, 100_000), min_size=1, max_size=6).map(sorted),
    moves=st.tuples(st.integers(0, 5), st.integers(0, 5)),
)
def test_stage_moves_report_direction_and_exposure(
    percents: list[int], moves: tuple[int, int]
) -> None:
    names = [f"s{i}" for i in range(len(percents))]
    before_index, after_index = (m % len(names) for m in moves)
    stages = "".join(
        f"      - {{name: {n}, percent: {p / 1000}}}\n"
        for n, p in zip(names, percents, strict=True)
    )

    def release(current: str) -> str:
        return (
            "enabled: true\ndefault:\n  progression:\n    variation: on\n    baseline: off\n"
            f"    current: {current}\n    stages:\n{stages}"
        )

    files = dict(BASE, **{"flags/new-checkout/production.yaml": release(names[before_index])})
    moved = dict(files, **{"flags/new-checkout/production.yaml": release(names[after_index])})
    found = diff_projects(project(files), project(moved))
    if before_index == after_index:
        assert found == []
        return
    (change,) = found
    assert change.kind == (
        diff.STAGE_ADVANCED if after_index > before_index else diff.STAGE_ROLLED_BACK
    )
    assert change.exposure_delta == pytest.approx(
        (percents[after_index] - percents[before_index]) / 1000
    )
