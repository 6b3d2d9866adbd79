"""A service installs Flagstone's SDK without the toolchain (issue 16 item 4).

``sdk/pyproject.toml`` builds the ``flagstone-sdk`` distribution from this repository.
The test builds its wheel with pip (through the in-tree PEP 517 backend), installs it
with its declared dependencies into a fresh virtual environment that does NOT see this
interpreter's packages, and there verifies and evaluates a snapshot that the real
``flagstone publish`` wrote. Click, PyYAML, ruamel.yaml, jsonschema and fastjsonschema
are absent from that environment, and the OpenFeature extra fails with a message that
names the extra.

The dependencies are downloaded from the package index once per machine into a
wheelhouse (``~/.cache/flagstone-tests/sdk-wheels``) and installed from there with
``--no-index``. Without an index the first run skips, except under CI, where it fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

from flagstone.keys import development_trusted_key
from gitrepo import GitRepo, run_cli

REPO_ROOT = Path(__file__).resolve().parent.parent
SDK_PROJECT = REPO_ROOT / "sdk"
# The SDK's dependencies as wheels, downloaded once per machine (like pip's own cache).
WHEELHOUSE = (
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    / "flagstone-tests"
    / "sdk-wheels"
)
TOOLCHAIN = ("click", "yaml", "ruamel", "jsonschema", "fastjsonschema", "git")

IN_THE_VENV = """
import importlib.util, json, sys
from pathlib import Path

import flagstone
from flagstone.sdk import Client

package = Path(flagstone.__file__).parent
args = json.loads(sys.argv[1])
client = Client.from_file(args["path"], environment="production", project="acme-shop",
                          trusted_keys=[args["key"]])
targeted = client.evaluate("new-checkout", {"key": "user-1001"}, False)
staff = client.evaluate("new-checkout", {"key": "ann", "email": "ann@acme.com"}, False)
extra_errors = {}
for extra, module in [("openfeature", "openfeature"), ("otel", "telemetry_otel"),
                      ("prometheus", "telemetry_prometheus")]:
    try:
        importlib.import_module("flagstone.sdk." + module)
        extra_errors[extra] = None
    except ImportError as error:
        extra_errors[extra] = str(error)
print(json.dumps({
    "status": str(client.status),
    "targeted": [targeted.value, targeted.reason],
    "staff": [staff.value, staff.reason, staff.rule],
    "toolchain_present": [m for m in args["toolchain"] if importlib.util.find_spec(m)],
    "flagstone_files": sorted(
        p.relative_to(package.parent).as_posix() for p in package.rglob("*.py")),
    "extra_errors": extra_errors,
}))
"""


def test_the_sdk_project_matches_the_main_project() -> None:
    with open(REPO_ROOT / "pyproject.toml", "rb") as handle:
        main = tomllib.load(handle)["project"]
    with open(SDK_PROJECT / "pyproject.toml", "rb") as handle:
        sdk = tomllib.load(handle)["project"]
    assert sdk["version"] == main["version"]
    assert sdk["requires-python"] == main["requires-python"]
    # Every SDK dependency is pinned as the main distribution pins it.
    assert set(sdk["dependencies"]) <= set(main["dependencies"])
    for extra, requirements in sdk["optional-dependencies"].items():
        assert set(requirements) <= set(main["optional-dependencies"][extra]), extra


def run(command: list[str], **options: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, capture_output=True, text=True, timeout=240, check=False, **options
    )  # type: ignore[call-overload, no-any-return]


def test_the_sdk_installs_and_evaluates_without_the_toolchain(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    built = run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(wheels),
            str(SDK_PROJECT),
        ]
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = wheels.glob("flagstone_sdk-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        packaged = {name for name in archive.namelist() if name.endswith(".py")}
    assert "flagstone/sdk/client.py" in packaged and "flagstone/engine.py" in packaged
    for toolchain_module in ("loader", "model", "validate", "compile", "publish", "gitops"):
        assert f"flagstone/{toolchain_module}.py" not in packaged
    assert not any(name.startswith("flagstone/cli/") for name in packaged)

    environment = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False, system_site_packages=False).create(environment)
    python = environment / "bin" / "python"
    install_offline = [
        sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
        "--no-index", "--find-links", str(WHEELHOUSE), str(wheel),
    ]  # fmt: skip
    installed = run(install_offline)
    if installed.returncode != 0:  # first run on this machine: fetch the dependencies once
        with open(SDK_PROJECT / "pyproject.toml", "rb") as handle:
            requirements = tomllib.load(handle)["project"]["dependencies"]
        fetched = run(
            [sys.executable, "-m", "pip", "download", "-q", "-d", str(WHEELHOUSE), *requirements]
        )
        if fetched.returncode != 0:
            if os.environ.get("CI"):
                pytest.fail(f"cannot fetch the SDK's dependencies:\n{fetched.stderr}")
            pytest.skip(f"the package index is unreachable: {fetched.stderr.strip()[-300:]}")
        installed = run(install_offline)
    assert installed.returncode == 0, installed.stderr

    repo = GitRepo(tmp_path / "repo")
    repo.copy_example()
    repo.commit("flags")
    code, _, err = run_cli(
        ["publish", "--dev-key", "--to", f"file://{tmp_path / 'dist'}"], repo.path
    )
    assert code == 0, err
    key = development_trusted_key(repo.path)
    assert key is not None
    args = {
        "path": str(tmp_path / "dist" / "production" / "latest.json"),
        "key": {"keyid": key.keyid, "public": key.public.hex()},
        "toolchain": list(TOOLCHAIN),
    }
    evaluated = run([str(python), "-I", "-c", IN_THE_VENV, json.dumps(args)], cwd=tmp_path)
    assert evaluated.returncode == 0, (
        "the SDK failed in a clean environment (a third-party module it imports must be a "
        f"dependency in sdk/pyproject.toml too):\n{evaluated.stderr}"
    )
    result = json.loads(evaluated.stdout)
    assert result["status"].endswith("READY")
    assert result["targeted"] == [True, "TARGETING_MATCH"]
    assert result["staff"] == [True, "TARGETING_MATCH", "staff"]
    assert result["toolchain_present"] == []
    assert "flagstone/sdk/client.py" in result["flagstone_files"]
    assert "flagstone/validate.py" not in result["flagstone_files"]
    for extra, message in result["extra_errors"].items():  # none installed: each names itself
        assert f"'flagstone-sdk[{extra}]'" in message, (extra, message)
