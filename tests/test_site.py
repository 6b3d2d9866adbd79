"""``flagstone site``: the static dashboard, loaded in a real headless Chromium (Debian's
``chromium`` driven through Playwright): no console errors, the overview is the status
data, the filters work, the chart's points are the history's, every link resolves."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from flagstone.model import read_project
from flagstone.site import build_site, exposure_history
from flagstone.status import AlsoExposed, project_status
from gitrepo import build_history, run_cli

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
NOW = 1_796_000_000.0  # 2026-12-01: the scheduled `half` stage (2026-12-03) is ahead
REPO_URL = "https://github.com/acme/flags"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str]]:
    root = tmp_path_factory.mktemp("site") / "flags-repo"
    build_history(root)
    out = root.parent / "site"
    written = build_site(root, out, repo_url=REPO_URL, now=NOW)
    return root, out, written


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("playwright is not installed")
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing (apt-get install chromium)")
        pytest.skip("chromium is not installed")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            yield launched
        finally:
            launched.close()


def open_page(browser: Any, path: Path) -> tuple[Any, list[str]]:
    page = browser.new_page()
    errors: list[str] = []
    page.on(
        "console", lambda message: errors.append(message.text) if message.type == "error" else None
    )
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("requestfailed", lambda request: errors.append(f"failed: {request.url}"))
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    return page, errors


def test_overview_is_the_status_data_and_filters(
    site: tuple[Path, Path, list[str]], browser: Any
) -> None:
    root, out, _ = site
    page, errors = open_page(browser, out / "index.html")
    embedded = json.loads(page.inner_text("#status-data"))
    expected = json.loads(
        json.dumps(
            {"format": "flagstone.status/1", "flags": [
                __import__("dataclasses").asdict(f) for f in project_status(root, now=NOW)
            ]}
        )
    )  # fmt: skip
    assert embedded == expected
    # ... and the CLI's `status --format json` says the same of every flag and environment
    # (times aside: bake left counts down).
    code, out_json, _ = run_cli(["status", "--format", "json"], root)
    assert code == 0
    cli = json.loads(out_json)
    strip = [
        (f["key"], e["environment"], e["state"], e["owner"])
        for f in cli["flags"]
        for e in f["environments"]
    ]
    assert strip == [
        (f["key"], e["environment"], e["state"], e["owner"])
        for f in embedded["flags"]
        for e in f["environments"]
    ]
    rows = page.locator("#status tbody tr")
    pairs = sum(len(f["environments"]) for f in embedded["flags"])
    assert rows.count() == pairs
    states = page.locator("#status tbody tr td:nth-child(5)").all_inner_texts()
    assert states == [e["state"] for f in embedded["flags"] for e in f["environments"]]
    also = page.locator("#status tbody tr td:nth-child(8)").all_inner_texts()
    assert also == [
        AlsoExposed(**e["also"]).text() for f in embedded["flags"] for e in f["environments"]
    ]
    assert "staff, beta-testers, 2 targets" in also  # new-checkout in production
    page.select_option("#filter-env", "production")
    visible = page.locator("#status tbody tr:not([hidden])")
    assert visible.count() == len(embedded["flags"])
    assert set(visible.locator("td:nth-child(4)").all_inner_texts()) == {"production"}
    page.select_option("#filter-kind", "operational")
    kinds = page.locator("#status tbody tr:not([hidden]) td:nth-child(2)").all_inner_texts()
    assert kinds and set(kinds) == {"operational"}
    # Keyboard: the first Tab reaches the navigation link, the next ones the filters.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.tagName") == "A"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "filter-team"
    assert errors == []


def test_flag_page_chart_matches_the_history(
    site: tuple[Path, Path, list[str]], browser: Any
) -> None:
    root, out, _ = site
    page, errors = open_page(browser, out / "flags" / "new-checkout.html")
    chart = page.locator('section[aria-labelledby="chart-production"] circle.point')
    points = [
        (c.get_attribute("data-t"), float(c.get_attribute("data-exposure") or "nan"),
         c.get_attribute("data-scheduled"))
        for c in chart.all()
    ]  # fmt: skip
    # From the history: 1% (beta) at the initial commit, 10% when PR #12 advanced it to
    # ten, then the scheduled half stage (50%) ahead.
    assert points == [
        ("2026-11-01T09:00:00Z", 1.0, "false"),
        ("2026-11-02T10:00:00Z", 10.0, "false"),
        ("2026-12-03T09:00:00Z", 50.0, "true"),
    ]
    history = exposure_history(root, read_project(root), NOW)["new-checkout"]["production"]
    assert [p.exposure for p in history] == [p[1] for p in points]
    assert page.locator(f'a[href="{REPO_URL}/pull/12"]').count() == 1
    assert (
        page.get_by_role("img", name="Exposure over time, new-checkout in production").count() == 1
    )
    assert errors == []


def test_every_link_resolves(site: tuple[Path, Path, list[str]], browser: Any) -> None:
    _, out, written = site
    assert "index.html" in written and "flags/new-checkout.html" in written
    for rel in written:
        page, errors = open_page(browser, out / rel)
        for href in page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)"):
            url = urlparse(href)
            if url.scheme == "file":
                assert Path(url.path).is_file(), (rel, href)
            else:
                assert href.startswith(f"{REPO_URL}/pull/"), (rel, href)
        assert errors == [], (rel, errors)
        page.close()


def test_text_from_the_repository_is_escaped(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    build_history(root)
    flag = root / "flags" / "holiday-banner" / "flag.yaml"
    text = flag.read_text().replace("name: Holiday banner", 'name: "<script>alert(1)</script>"')
    flag.write_text(text)
    build_site(root, tmp_path / "out", now=NOW)
    page = (tmp_path / "out" / "flags" / "holiday-banner.html").read_text()
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)" in page
    code, _, err = run_cli(["site", "-o", str(tmp_path / "o2"), "--repo-url", "javascript:x"], root)
    assert code == 2 and "must be an https:// URL" in err


def test_axe_core_finds_no_serious_violation(
    site: tuple[Path, Path, list[str]], browser: Any
) -> None:
    """axe-core (from npm; .ci/run installs it and sets FLAGSTONE_AXE_CORE to axe.min.js)."""
    axe = os.environ.get("FLAGSTONE_AXE_CORE", "")
    if not Path(axe).is_file():
        if os.environ.get("CI"):
            pytest.fail("FLAGSTONE_AXE_CORE does not name axe.min.js (npm install axe-core)")
        pytest.skip("axe-core is not installed (set FLAGSTONE_AXE_CORE to axe.min.js)")
    _, out, _ = site
    for rel in ("index.html", "flags/new-checkout.html"):  # every flag page is one template
        page, _ = open_page(browser, out / rel)
        page.add_script_tag(path=axe)
        violations = page.evaluate(
            "axe.run().then(r => r.violations.map(v => ({id: v.id, impact: v.impact})))"
        )
        serious = [v for v in violations if v["impact"] in ("serious", "critical")]
        assert serious == [], (rel, serious)
        page.close()
