"""``docs/screenshots.py``: the README's dashboard screenshots, regenerated into a temporary
folder in a real headless Chromium; each is a valid PNG of the expected size, and the
committed ones are too."""

from __future__ import annotations

import importlib.util
import os
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "docs" / "screenshots.py"
COMMITTED = ROOT / "docs" / "images"
SIZE_BUDGET = 200_000  # bytes per committed image


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("screenshots", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SCREENSHOTS = load_script()


def decode_png(path: Path) -> tuple[int, int, bytes]:
    """Width, height and the filtered scanlines of a non-interlaced 8-bit RGB(A) PNG;
    fails on a bad signature, a chunk whose CRC is wrong, a missing IEND, or image data
    of the wrong length."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    offset, chunks = 8, []
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length : offset + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"{path}: bad CRC in {kind!r}"
        chunks.append((kind, body))
        offset += 12 + length
    assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND"
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert depth == 8 and color in (2, 6) and interlace == 0, (depth, color, interlace)
    pixels = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    channels = 3 if color == 2 else 4
    assert len(pixels) == height * (1 + width * channels)
    return width, height, pixels


def assert_screenshots(folder: Path) -> None:
    for name, (_page, height) in SCREENSHOTS.SHOTS.items():
        path = folder / name
        width, found_height, pixels = decode_png(path)
        assert (width, found_height) == (SCREENSHOTS.WIDTH, height), name
        assert len(set(pixels[:200_000])) > 16, f"{name} looks blank"
        assert path.stat().st_size < SIZE_BUDGET, (name, path.stat().st_size)


def test_the_committed_screenshots_are_valid_and_in_the_readme() -> None:
    assert_screenshots(COMMITTED)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    shown = set(re.findall(r"!\[[^\]]+\]\((docs/images/[^)]+\.png)\)", readme))
    assert shown == {f"docs/images/{name}" for name in SCREENSHOTS.SHOTS}
    assert "python3 docs/screenshots.py" in readme


def run_script(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_the_script_writes_both_screenshots(tmp_path: Path) -> None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("playwright is not installed")
    if not Path(SCREENSHOTS.chromium_path()).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{SCREENSHOTS.chromium_path()} is missing (apt-get install chromium)")
        pytest.skip("chromium is not installed")
    done = run_script("-o", str(tmp_path / "shots"))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "shots").iterdir()) == sorted(SCREENSHOTS.SHOTS)
    assert_screenshots(tmp_path / "shots")


def test_a_missing_browser_is_one_line(tmp_path: Path) -> None:
    done = run_script(
        "-o", str(tmp_path / "shots"), env={"FLAGSTONE_CHROMIUM": str(tmp_path / "no-chromium")}
    )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"error: {tmp_path / 'no-chromium'} is missing (apt-get install chromium)"
    ]
    assert not (tmp_path / "shots").exists()
