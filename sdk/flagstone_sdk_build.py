"""A PEP 517 build backend for ``flagstone-sdk``, with no build dependencies.

The wheel holds ``flagstone/sdk/`` and every ``flagstone`` module it imports, directly
or through other modules, at module level or inside functions: the closure is found by
reading ``import`` statements with ``ast``, so a module the SDK starts using is packaged
without a list to keep. Metadata comes from ``[project]`` in ``pyproject.toml``. Builds
are deterministic (sorted entries, fixed timestamps).

Sources are ``../tooling`` in the repository, or ``tooling/`` inside an sdist.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import io
import tarfile
import tomllib
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT_PACKAGE = "flagstone"
ENTRY_PACKAGE = "flagstone.sdk"
FIXED_TIME = (1980, 1, 1, 0, 0, 0)
DATA_FILES = ("py.typed",)  # package data shipped with the root package


def _project() -> dict[str, object]:
    with open(HERE / "pyproject.toml", "rb") as handle:
        project: dict[str, object] = tomllib.load(handle)["project"]
    return project


def _sources() -> Path:
    for candidate in (HERE / "tooling", HERE.parent / "tooling"):
        if (candidate / ROOT_PACKAGE / "sdk" / "__init__.py").is_file():
            return candidate
    raise FileNotFoundError("flagstone sources not found (../tooling or ./tooling)")


def _module_file(sources: Path, name: str) -> Path | None:
    path = sources.joinpath(*name.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    return None


def sdk_modules(sources: Path | None = None) -> list[Path]:
    """The files of ``flagstone.sdk`` and of every flagstone module it imports."""
    sources = sources or _sources()
    pending = [ENTRY_PACKAGE] + [
        f"{ENTRY_PACKAGE}.{path.stem}"
        for path in sorted((sources / ROOT_PACKAGE / "sdk").glob("*.py"))
        if path.stem != "__init__"
    ]
    found: dict[str, Path] = {}
    while pending:
        name = pending.pop()
        if name in found:
            continue
        path = _module_file(sources, name)
        if path is None:
            continue  # an imported name, not a module
        found[name] = path
        parts = name.split(".")
        pending += [".".join(parts[:i]) for i in range(1, len(parts))]  # parent packages
        for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.split(".")[0] == ROOT_PACKAGE:
                    pending.append(node.module)
                    pending += [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                pending += [a.name for a in node.names if a.name.split(".")[0] == ROOT_PACKAGE]
    return sorted(found.values())


def _metadata(project: dict[str, object]) -> str:
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {project['name']}",
        f"Version: {project['version']}",
        f"Summary: {project.get('description', '')}",
        f"Requires-Python: {project['requires-python']}",
    ]
    license_ = project.get("license")
    if isinstance(license_, dict) and "text" in license_:
        lines.append(f"License: {license_['text']}")
    for requirement in project.get("dependencies", []):  # type: ignore[union-attr]
        lines.append(f"Requires-Dist: {requirement}")
    extras = project.get("optional-dependencies", {})
    for extra, requirements in sorted(extras.items()):  # type: ignore[union-attr]
        lines.append(f"Provides-Extra: {extra}")
        lines += [f'Requires-Dist: {r}; extra == "{extra}"' for r in requirements]
    return "\n".join(lines) + "\n"


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return "sha256=" + digest.decode()


def _wheel_files() -> dict[str, bytes]:
    project = _project()
    sources = _sources()
    files = {
        path.relative_to(sources).as_posix(): path.read_bytes() for path in sdk_modules(sources)
    }
    for name in DATA_FILES:
        data_file = sources / ROOT_PACKAGE / name
        if data_file.is_file():
            files[f"{ROOT_PACKAGE}/{name}"] = data_file.read_bytes()
    dist_info = f"{_distribution(project)}-{project['version']}.dist-info"
    files[f"{dist_info}/METADATA"] = _metadata(project).encode()
    files[f"{dist_info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: flagstone_sdk_build\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n"
    )
    record = [f"{name},{_record_hash(data)},{len(data)}" for name, data in sorted(files.items())]
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    return files


def _distribution(project: dict[str, object]) -> str:
    return str(project["name"]).replace("-", "_")


def _zip(files: dict[str, bytes], target: Path) -> None:
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():  # RECORD last, as written
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)


# --- PEP 517 hooks ---------------------------------------------------------------------------


def get_requires_for_build_wheel(config_settings: object = None) -> list[str]:
    return []


def get_requires_for_build_sdist(config_settings: object = None) -> list[str]:
    return []


def build_wheel(
    wheel_directory: str, config_settings: object = None, metadata_directory: object = None
) -> str:
    project = _project()
    name = f"{_distribution(project)}-{project['version']}-py3-none-any.whl"
    _zip(_wheel_files(), Path(wheel_directory) / name)
    return name


def build_sdist(sdist_directory: str, config_settings: object = None) -> str:
    """An sdist holding this folder's build files and the SDK's sources under tooling/."""
    project = _project()
    base = f"{_distribution(project)}-{project['version']}"
    sources = _sources()
    entries = {
        "pyproject.toml": (HERE / "pyproject.toml").read_bytes(),
        "flagstone_sdk_build.py": (HERE / "flagstone_sdk_build.py").read_bytes(),
        "PKG-INFO": _metadata(project).encode(),
    }
    for path in sdk_modules(sources):
        entries[f"tooling/{path.relative_to(sources).as_posix()}"] = path.read_bytes()
    for name in DATA_FILES:
        if (sources / ROOT_PACKAGE / name).is_file():
            entries[f"tooling/{ROOT_PACKAGE}/{name}"] = (sources / ROOT_PACKAGE / name).read_bytes()
    target = Path(sdist_directory) / f"{base}.tar.gz"
    with tarfile.open(target, "w:gz", format=tarfile.PAX_FORMAT) as archive:
        for name, data in sorted(entries.items()):
            info = tarfile.TarInfo(f"{base}/{name}")
            info.size, info.mtime, info.mode = len(data), 315532800, 0o644
            archive.addfile(info, io.BytesIO(data))
    return target.name
