"""``flagstone init``: scaffold a new flag repository from the package's templates.

The scaffold is a complete, working flag repository: ``flagstone.yaml``, one example
flag with a release file per environment, one segment, the JSON schemas (for editors),
the GitHub workflow, a generated ``.github/CODEOWNERS``, a pre-commit configuration and
a ``.gitignore`` that keeps signing keys out of git. It passes ``flagstone validate``,
``lint`` and ``codeowners --check`` as written.

Templates live in ``flagstone/templates/``: ``repository/`` is copied path for path
(a leading ``dot-`` in a name becomes ``.``, so packaging tools that skip hidden files
still ship them), ``release/`` holds the example flag's release files. Placeholders are
``__FLAGSTONE_<NAME>__`` tokens — plain text that no YAML or workflow syntax uses, so
``${{ … }}`` expressions in the workflow need no escaping.

Nothing is ever overwritten: all files are rendered in memory first, and if any of them
already exists the whole scaffold is refused before the first write. The exception is
``.gitignore``: an existing one gets the missing key patterns appended.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from flagstone import __version__
from flagstone.errors import (
    FileAccessError,
    FlagstoneError,
    RepositoryError,
    UsageError,
    ValidationFailed,
)
from flagstone.loader import resolve_plain
from flagstone.model import FLAGS_DIR, KEY_PATTERN, read_project
from flagstone.ownership import CODEOWNERS_PATH, codeowners_report, is_valid_owner
from flagstone.safefiles import write_file_atomically
from flagstone.validate import validate_project

EXAMPLE_FLAG = "example-flag"
GITIGNORE_PATH = ".gitignore"
DEFAULT_ENVIRONMENTS = ("staging", "production")
# Where other repositories get the composite action and the pre-commit hooks from.
DEFAULT_ACTION_REPOSITORY = "flagstone-dev/flagstone"
DEFAULT_ACTION = f"{DEFAULT_ACTION_REPOSITORY}@v{__version__}"
EXAMPLE_FLAG_LIFETIME = timedelta(days=90)
DEFAULT_SCAFFOLD_TARGET = "file://dist"
TARGET_SCHEMES = ("s3", "gs", "az", "https", "file")
# Environment of the workflow's publish step, per target scheme: obstore reads these.
_PUBLISH_ENV = {
    "gs": {"GOOGLE_SERVICE_ACCOUNT_KEY": "${{ secrets.FLAGSTONE_GCS_SERVICE_ACCOUNT_KEY }}"},
    "az": {
        "AZURE_STORAGE_ACCOUNT_NAME": "${{ vars.FLAGSTONE_AZURE_STORAGE_ACCOUNT }}",
        "AZURE_STORAGE_ACCOUNT_KEY": "${{ secrets.FLAGSTONE_AZURE_STORAGE_KEY }}",
    },
}


@dataclass(frozen=True, slots=True)
class RepositorySetting:
    """A secret or variable the repository's GitHub settings need for the workflow."""

    kind: str  # "secret" | "variable"
    name: str
    value: str  # what to put there
    required: bool = True


def repository_settings(target: str) -> list[RepositorySetting]:
    """The exact secrets and variables the scaffolded workflow needs for ``target``."""
    scheme = target.split("://", 1)[0].lower()
    settings = [
        RepositorySetting(
            "secret",
            "FLAGSTONE_SIGNING_KEY",
            "the private key PEM from `flagstone keygen` (its public entry goes under "
            "signing.keys in flagstone.yaml)",
        )
    ]
    if scheme == "s3":
        settings += [
            RepositorySetting(
                "variable",
                "FLAGSTONE_AWS_ROLE_ARN",
                "an IAM role ARN the workflow assumes by OIDC, allowed s3:GetObject and "
                f"s3:PutObject on {target}/*",
            ),
            RepositorySetting("variable", "FLAGSTONE_AWS_REGION", "the bucket's region", False),
        ]
    elif scheme == "gs":
        settings.append(
            RepositorySetting(
                "secret",
                "FLAGSTONE_GCS_SERVICE_ACCOUNT_KEY",
                f"a service account key (JSON) with object read/create on {target}",
            )
        )
    elif scheme == "az":
        settings += [
            RepositorySetting(
                "variable", "FLAGSTONE_AZURE_STORAGE_ACCOUNT", "the storage account name"
            ),
            RepositorySetting(
                "secret", "FLAGSTONE_AZURE_STORAGE_KEY", "an access key of that storage account"
            ),
        ]
    elif scheme == "file":
        settings.append(
            RepositorySetting(
                "variable",
                "FLAGSTONE_PUBLISH_TARGET",
                "the real storage URL (s3://…, gs://…, az://…): publish refuses file:// "
                "inside GitHub Actions",
            )
        )
    return settings


def _publish_env_lines(target: str) -> str:
    """The text after ``# `` on the workflow's credentials line (a comment, so the
    template itself stays a valid workflow): for gs:// and az:// it goes on with the
    publish step's ``env:``."""
    names = _PUBLISH_ENV.get(target.split("://", 1)[0].lower())
    if not names:
        return (
            "Credentials: s3:// uses the OIDC step above; `flagstone init --target gs://… "
            "or az://…` writes an env: here."
        )
    lines = ["Credentials for the target; obstore reads them from the environment."]
    lines.append("        env:")
    lines += [f"          {name}: {value}" for name, value in names.items()]
    return "\n".join(lines)


_TOKEN = re.compile(r"__FLAGSTONE_[A-Z_]+__")
_ACTION_REFERENCE = re.compile(r"([A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+)@([A-Za-z0-9_./-]+)")
_DOT_PREFIX = "dot-"


@dataclass(frozen=True, slots=True)
class ScaffoldOptions:
    """What varies between scaffolds; every value is checked by ``check()``."""

    project: str
    environments: tuple[str, ...] = DEFAULT_ENVIRONMENTS
    admins: str = "@example-org/platform"
    action: str = DEFAULT_ACTION
    target: str = DEFAULT_SCAFFOLD_TARGET
    today: date = field(default_factory=date.today)

    def check(self) -> None:
        if not KEY_PATTERN.fullmatch(self.project):
            raise UsageError(
                f"project name '{self.project}' is not a valid key",
                hint="use lower-case letters, digits, '.', '_' and '-' (e.g. acme-shop)",
            )
        if not self.environments:
            raise UsageError("at least one environment is needed")
        for environment in self.environments:
            if not KEY_PATTERN.fullmatch(environment):
                raise UsageError(f"environment name '{environment}' is not a valid key")
        if len(set(self.environments)) != len(self.environments):
            raise UsageError("an environment is listed twice")
        if "default" in self.environments:
            raise UsageError(
                "'default' cannot be an environment name here",
                hint="guardrails use `default` for every environment without its own setting",
            )
        if not is_valid_owner(self.admins):
            raise UsageError(
                f"'{self.admins}' is not a GitHub owner",
                hint="use @org/team, @user or an e-mail address",
            )
        scheme = self.target.split("://", 1)[0].lower() if "://" in self.target else ""
        if scheme not in TARGET_SCHEMES or not self.target.split("://", 1)[1].strip("/"):
            raise UsageError(
                f"target '{self.target}' is not a storage URL",
                hint="use s3://BUCKET/PREFIX, gs://BUCKET/PREFIX, az://CONTAINER/PREFIX, "
                "https://… or file://DIR",
            )
        if any(c.isspace() or c in '"\\' for c in self.target):
            raise UsageError(f"target '{self.target}' contains spaces or quotes")
        if not _ACTION_REFERENCE.fullmatch(self.action):
            raise UsageError(
                f"action '{self.action}' is not OWNER/REPOSITORY@REF",
                hint=f"e.g. {DEFAULT_ACTION}",
            )


def default_project_name(directory: Path) -> str:
    """A project key made from a directory name (``Acme Shop`` -> ``acme-shop``)."""
    name = re.sub(r"[^a-z0-9._-]+", "-", directory.resolve().name.lower()).strip("-._")
    return name[:128] or "flags"


def _templates() -> Traversable:
    return resources.files("flagstone").joinpath("templates")


def _render(text: str, values: Mapping[str, str], source: str) -> str:
    for name, value in values.items():
        text = text.replace(f"__FLAGSTONE_{name}__", value)
    leftover = _TOKEN.search(text)
    if leftover:  # a template names a value this module does not provide: a bug
        raise FlagstoneError(f"template {source} has an unknown placeholder {leftover.group()}")
    return text


def _walk(directory: Traversable, prefix: str = "") -> list[tuple[str, Traversable]]:
    """(repository path, template file) for every file under ``directory``."""
    found: list[tuple[str, Traversable]] = []
    for entry in directory.iterdir():
        name = entry.name
        if name == "__pycache__":
            continue
        if name.startswith(_DOT_PREFIX):
            name = "." + name[len(_DOT_PREFIX) :]
        if entry.is_dir():
            found += _walk(entry, f"{prefix}{name}/")
        else:
            found.append((prefix + name, entry))
    return found


def yaml_text(value: str) -> str:
    """``value`` as a YAML scalar that reads back as that string: plain when YAML would
    keep it a string (keys like ``staging``), quoted when it would not (``2027``, ``true``)."""
    return value if resolve_plain(value) == value else json.dumps(value)


def _values(options: ScaffoldOptions) -> dict[str, str]:
    match = _ACTION_REFERENCE.fullmatch(options.action)
    repository, ref = match.groups() if match else ("", "")
    environments = options.environments
    return {
        "PROJECT": yaml_text(options.project),
        "ENVIRONMENTS": "[" + ", ".join(map(yaml_text, environments)) + "]",
        "LAST_ENVIRONMENT": environments[-1],
        "ADMINS": json.dumps(options.admins),  # handles start with @, which YAML reserves
        "EXPIRES": (options.today + EXAMPLE_FLAG_LIFETIME).isoformat(),
        "ACTION": options.action,
        "HOOKS_REPOSITORY": f"https://github.com/{repository}",
        "HOOKS_REV": ref,
        "TARGET": json.dumps(options.target),
        "PUBLISH_ENV": _publish_env_lines(options.target),
    }


def render_workflow(
    action: str, name: str = "flags.yml", target: str = DEFAULT_SCAFFOLD_TARGET
) -> str:
    """A scaffolded workflow (``flags.yml``, ``progress.yml``) with its steps using
    ``action`` (``./`` in Flagstone's own repository, ``OWNER/REPOSITORY@REF`` elsewhere)
    and the credentials ``target`` needs."""
    template = _templates().joinpath("repository", "dot-github", "workflows", name)
    path = f".github/workflows/{name}"
    return _render(
        template.read_text(encoding="utf-8"),
        {"ACTION": action, "PUBLISH_ENV": _publish_env_lines(target)},
        path,
    )


def _schema_files() -> dict[str, str]:
    schemas = resources.files("flagstone").joinpath("schemas")
    return {
        f"schemas/{entry.name}": entry.read_text(encoding="utf-8")
        for entry in schemas.iterdir()
        if entry.name.endswith(".schema.json")
    }


def render_scaffold_files(options: ScaffoldOptions) -> dict[str, str]:
    """Every file of the scaffold except CODEOWNERS, by repository path."""
    options.check()
    values = _values(options)
    files = {
        path: _render(entry.read_text(encoding="utf-8"), values, path)
        for path, entry in _walk(_templates().joinpath("repository"))
    }
    release = _templates().joinpath("release")
    last = options.environments[-1]
    for environment in options.environments:
        template = "rollout.yaml" if environment == last else "preview.yaml"
        path = f"{FLAGS_DIR}/{EXAMPLE_FLAG}/{environment}.yaml"
        text = release.joinpath(template).read_text(encoding="utf-8")
        files[path] = _render(text, {**values, "ENVIRONMENT": environment}, path)
    files.update(_schema_files())
    return files


def _codeowners_for(files: Mapping[str, str]) -> str:
    """The CODEOWNERS file ``flagstone codeowners`` would write for these files."""
    with tempfile.TemporaryDirectory(prefix="flagstone-init-") as scratch:
        root = Path(scratch)
        _write_files(root, files)
        project = read_project(root)
        problems = [*project.problems, *validate_project(project)]
        if any(p.level == "error" for p in problems):  # the templates are broken: a bug
            raise ValidationFailed(problems)
        return codeowners_report(project).expected


def render_scaffold(options: ScaffoldOptions) -> dict[str, str]:
    """Every file of the scaffold, CODEOWNERS included, by repository path (sorted)."""
    files = render_scaffold_files(options)
    files[CODEOWNERS_PATH] = _codeowners_for(files)
    return dict(sorted(files.items()))


def _write_files(root: Path, files: Mapping[str, str]) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RepositoryError(f"cannot create {root}: {exc.strerror or exc}") from None
    for written, (rel, text) in enumerate(files.items()):
        path = root / rel
        try:
            # replace=False: never replace a file, even one that appeared after the check;
            # folders below the root are never links (a planted one is refused).
            write_file_atomically(
                path, text.encode("utf-8"), expected_dir=root, create_dirs=True, replace=False
            )
        except FileAccessError as exc:
            done = f"; {written} file(s) were written before it" if written else ""
            raise RepositoryError(f"{exc.message}{done}", hint=exc.hint) from None


def existing_paths(target: Path, paths: Sequence[str]) -> list[str]:
    """The scaffold paths that already exist under ``target`` (files or directories), and
    any folder they need that exists as something else (checked before the first write,
    so a file named ``schemas`` cannot stop the scaffold half-way)."""
    clashes: list[str] = []
    for rel in paths:
        parts = rel.split("/")
        for depth in range(1, len(parts)):
            folder = "/".join(parts[:depth])
            path = target / folder
            if path.is_symlink() or (path.exists() and not path.is_dir()):
                what = "a symbolic link" if path.is_symlink() else "a file"
                blocked = f"{folder} ({what} where a folder is needed)"
                if blocked not in clashes:
                    clashes.append(blocked)
                break
        else:
            if (target / rel).exists() or (target / rel).is_symlink():
                clashes.append(rel)
    return clashes


@dataclass(frozen=True, slots=True)
class ScaffoldResult:
    """What ``scaffold_repository`` did: files created, and existing files extended."""

    created: list[str]
    extended: list[str]


def gitignore_addition(existing: str, template: str) -> str:
    """The text to append to an existing ``.gitignore`` so it has every pattern of the
    template (empty when it has them all already)."""
    present = {line.strip() for line in existing.splitlines()}
    lines = template.splitlines()
    missing = [line for line in lines if line and not line.startswith("#") and line not in present]
    if not missing:
        return ""
    heading = next((line for line in lines if line.startswith("#")), "# Flagstone")
    separator = "\n" if existing and not existing.endswith("\n") else ""
    blank = "\n" if existing.strip() else ""
    return separator + blank + heading + "\n" + "\n".join(missing) + "\n"


def scaffold_repository(target: Path, options: ScaffoldOptions) -> ScaffoldResult:
    """Write the scaffold into ``target`` (created if missing).

    Raises ``UsageError`` listing every file that already exists, before writing
    anything. The one exception is an existing ``.gitignore`` (most new repositories
    start with one): the key patterns it lacks are appended to it, nothing is removed.
    """
    if target.exists() and not target.is_dir():
        raise UsageError(f"{target} exists and is not a directory")
    files = render_scaffold(options)
    gitignore = target / GITIGNORE_PATH
    appended = ""
    if gitignore.is_file() and not gitignore.is_symlink():
        appended = gitignore_addition(
            gitignore.read_text(encoding="utf-8", errors="replace"), files.pop(GITIGNORE_PATH)
        )
    clashes = existing_paths(target, list(files))
    if clashes:
        shown = ", ".join(clashes[:10]) + (
            f" and {len(clashes) - 10} more" if len(clashes) > 10 else ""
        )
        raise UsageError(
            f"{target}: {len(clashes)} file(s) already exist: {shown}",
            hint="init never overwrites files; use an empty directory or move those files away",
        )
    _write_files(target, files)
    if appended:
        existing = gitignore.read_bytes()
        write_file_atomically(
            gitignore, existing + appended.encode("utf-8"), mode=None, expected_dir=target
        )
    return ScaffoldResult(list(files), [GITIGNORE_PATH] if appended else [])
