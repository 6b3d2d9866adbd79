"""Screenshots of the release dashboard for the README: the overview and one flag page.

    python3 docs/screenshots.py                 # writes docs/images/overview.png, flag-page.png
    python3 docs/screenshots.py -o /tmp/shots   # somewhere else

It copies this repository's example flags (``flagstone.yaml``, ``flags/``,
``segments/``) into a temporary git repository, gives them a short history with fixed
dates (so the charts have points and every run draws the same pages), builds the site
with ``flagstone.site.build_site`` and photographs two pages in Debian's headless
Chromium through Playwright (no browser download: ``FLAGSTONE_CHROMIUM`` or
``/usr/bin/chromium``). Each image is exactly ``WIDTH`` pixels wide and as tall as its
entry in ``SHOTS`` says.

Exit codes: 0 written, 1 a missing browser or Playwright, or a failed step (one line).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_PARTS = ("flagstone.yaml", "flags", "segments")
WIDTH = 1200
FLAG = "new-checkout"  # the flag page shown: a progression with a scheduled stage ahead
NOW = 1_796_000_000.0  # end of November 2026: the scheduled `half` stage (2026-12-03) is ahead
REPO_URL = "https://github.com/acme/flags"
# image name: (page, height in pixels). The flag page is taller: both of its charts.
SHOTS = {"overview.png": ("index.html", 760), "flag-page.png": (f"flags/{FLAG}.html", 1240)}

# (date, release file, old text, new text, subject): the history the charts draw.
# The example starts new-checkout at `staff`, and then:
HISTORY = (
    (
        "2026-11-09T09:00:00Z",
        "current: staff",
        "current: beta",
        "Advance new-checkout to beta (#12)",
    ),
    ("2026-11-20T09:00:00Z", "current: beta", "current: ten", "Advance new-checkout to ten (#14)"),
)


def chromium_path() -> str:
    return os.environ.get("FLAGSTONE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def git(root: Path, *args: str, date: str) -> None:
    environment = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Alice",
        "GIT_AUTHOR_EMAIL": "alice@example.com",
        "GIT_COMMITTER_NAME": "Alice",
        "GIT_COMMITTER_EMAIL": "alice@example.com",
        "GIT_AUTHOR_DATE": date,
        "GIT_COMMITTER_DATE": date,
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    subprocess.run(
        ["git", *args], cwd=root, env=environment, check=True, capture_output=True, timeout=60
    )


def example_repository(root: Path) -> Path:
    """The example flags in a fresh git repository with the short ``HISTORY``."""
    root.mkdir(parents=True)
    for part in EXAMPLE_PARTS:
        source = ROOT / part
        if source.is_dir():
            shutil.copytree(source, root / part)
        else:
            shutil.copy2(source, root / part)
    git(root, "init", "-q", "-b", "main", date="2026-11-01T09:00:00Z")
    release = root / "flags" / FLAG / "production.yaml"
    text = release.read_text(encoding="utf-8")
    release.write_text(text.replace("current: beta", "current: staff", 1), encoding="utf-8")
    git(root, "add", "-A", date="2026-11-01T09:00:00Z")
    git(root, "commit", "-q", "-m", "Initial flags", date="2026-11-01T09:00:00Z")
    for date, old, new, subject in HISTORY:
        text = release.read_text(encoding="utf-8")
        if old not in text:
            raise RuntimeError(f"{release.relative_to(root)} has no {old!r} any more")
        release.write_text(text.replace(old, new, 1), encoding="utf-8")
        git(root, "commit", "-q", "-am", subject, date=date)
    return root


def take_screenshots(site: Path, out: Path) -> list[Path]:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    written = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path(),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            for name, (page_path, height) in SHOTS.items():
                page = browser.new_page(
                    viewport={"width": WIDTH, "height": height}, device_scale_factor=1
                )
                page.goto((site / page_path).as_uri())
                page.wait_for_load_state("load")
                target = out / name
                page.screenshot(path=str(target), full_page=False, animations="disabled")
                page.close()
                written.append(target)
        finally:
            browser.close()
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "docs" / "images")
    options = parser.parse_args(argv)
    if not Path(chromium_path()).exists():
        print(f"error: {chromium_path()} is missing (apt-get install chromium)", file=sys.stderr)
        return 1
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        print("error: playwright is not installed (pip install -e '.[test]')", file=sys.stderr)
        return 1
    from flagstone.site import build_site

    try:
        with tempfile.TemporaryDirectory(prefix="flagstone-shots-") as scratch:
            repository = example_repository(Path(scratch) / "flags")
            site = Path(scratch) / "site"
            build_site(repository, site, repo_url=REPO_URL, now=NOW)
            written = take_screenshots(site, options.output)
    except Exception as error:  # one line, whatever failed (git, the site, the browser)
        first = (str(error).splitlines() or [type(error).__name__])[0]
        print(f"error: screenshots not written: {first}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
