"""Adversarial input through the real CLI: each case is a one-line cause with the
right exit code, never an internal error, and nothing half-written."""

from __future__ import annotations

from pathlib import Path

import pytest

from flagstone.cli.main import main
from flagstone.keys import KEY_ENV_VARIABLE
from publish_helpers import commit, git, make_repo, write_key_file


def run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], cwd: Path, *args: str
) -> tuple[int, str, str]:
    monkeypatch.chdir(cwd)
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "internal error" not in err, err
    code = exited.value.code
    return (code if isinstance(code, int) else 0), out, err


@pytest.fixture(autouse=True)
def _no_inherited_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV_VARIABLE, raising=False)


@pytest.mark.parametrize("target", ["a-directory", "missing-dir/envelope.json"])
def test_sign_to_an_unwritable_output_is_a_one_line_error(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    target: str,
) -> None:
    (tmp_path / "a-directory").mkdir()
    (tmp_path / "payload.json").write_text("{}")
    key_file = write_key_file(tmp_path)
    code, out, err = run(
        monkeypatch, capsys, tmp_path, "sign", "payload.json", "--key", str(key_file), "-o", target
    )
    assert code == 2 and out == ""
    assert err.startswith(f"error: cannot write {target}: "), err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "args",
    [
        ["kill", "checkout", "--env", "production"],
        ["enable", "checkout", "--env", "production"],
        ["advance", "checkout", "--env", "production"],
        ["rollout", "checkout", "--env", "production", "--percent", "10"],
        ["new", "search", "--owner", "platform"],
    ],
)
def test_an_edit_with_a_broken_flagstone_yaml_names_where_it_breaks(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
) -> None:
    root = make_repo(tmp_path / "repo")
    config = root / "flagstone.yaml"
    config.write_text(config.read_text() + "lint: [\n")
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and ".git" not in p.parts}
    code, out, err = run(monkeypatch, capsys, root, *args)
    assert code == 1 and out == ""
    # Not "unknown environment 'production' (declared: none)" or "unknown team".
    assert err.startswith("error: cannot edit: flagstone.yaml:"), err
    assert "invalid YAML" in err
    after = {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and ".git" not in p.parts}
    assert after == before


@pytest.mark.parametrize("field", ["environments", "teams", "signing", "guardrails"])
@pytest.mark.parametrize("value", ["5", "[1, 2]", "x", "[[1]]"])
@pytest.mark.parametrize(
    "args",
    [
        ["kill", "checkout", "--env", "production"],
        ["new", "search", "--owner", "platform"],
        ["archive", "checkout"],
        ["codeowners", "--check"],
        ["diff", "HEAD~1", "HEAD"],
        ["log"],
        ["check-change", "--base", "HEAD~1"],
        ["show", "checkout", "--env", "production", "--at", "HEAD"],
        ["verify", "envelope.json"],
    ],
)
def test_a_wrongly_typed_flagstone_yaml_field_is_never_an_internal_error(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    field: str,
    value: str,
    args: list[str],
) -> None:
    root = make_repo(tmp_path / "repo")
    config = root / "flagstone.yaml"
    lines = config.read_text().splitlines()
    kept = [line for line in lines if not line.startswith(f"{field}:")]
    if field == "signing":  # its indented block goes too
        kept = [line for line in kept if not line.startswith("  ") or "target" in line]
    config.write_text("\n".join([*kept, f"{field}: {value}"]) + "\n")
    commit(root, f"{field}: {value}")
    (root / "envelope.json").write_text("{}")
    code, _, err = run(monkeypatch, capsys, root, *args)
    assert code in (0, 1, 2), err


@pytest.mark.parametrize("blocker", ["schemas", "segments", ".github"])
def test_init_where_a_needed_folder_is_a_file_writes_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    blocker: str,
) -> None:
    target = tmp_path / "new-repo"
    target.mkdir()
    (target / blocker).write_text("not a folder\n")
    code, _, err = run(monkeypatch, capsys, tmp_path, "init", "new-repo")
    assert code == 2, err
    assert f"{blocker} (a file where a folder is needed)" in err.splitlines()[0]
    assert sorted(p.name for p in target.iterdir()) == [blocker]


def test_log_in_a_shallow_clone_refuses_instead_of_inventing_history(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    origin = make_repo(tmp_path / "origin")
    (origin / "flags/checkout/production.yaml").write_text("enabled: false\ndefault: on\n")
    commit(origin, "kill checkout")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{origin}", str(clone))
    code, out, err = run(monkeypatch, capsys, clone, "log")
    # Without the refusal the boundary commit "adds" every flag: a false audit trail.
    assert (code, out) == (1, "")
    assert err.startswith("error: this is a shallow clone"), err
    assert "fetch-depth: 0" in err


@pytest.mark.parametrize(
    ("rel", "text"),
    [
        ("flags/checkout/flag.yaml", "delegate: 5\n"),
        ("flags/checkout/flag.yaml", "variations: [1, 2]\n"),
        ("flags/checkout/flag.yaml", "prerequisites: [1, 2]\n"),
        ("flags/checkout/production.yaml", "targets: x\n"),
        ("flags/checkout/production.yaml", "rules: [1, 2]\n"),
        ("segments/staff.yaml", "name: Staff\nowner: platform\nrules: 5\ninclude: x\n"),
    ],
)
@pytest.mark.parametrize(
    "args",
    [
        ["kill", "checkout", "--env", "production"],
        ["archive", "checkout"],
        ["codeowners", "--check"],
        ["diff", "HEAD~1", "HEAD"],
        ["show", "checkout", "--env", "production", "--at", "HEAD"],
    ],
)
def test_a_wrongly_typed_field_in_a_flag_release_or_segment_is_never_an_internal_error(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    rel: str,
    text: str,
    args: list[str],
) -> None:
    root = make_repo(tmp_path / "repo")
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    kept = path.read_text() if path.exists() else ""
    field = text.split(":")[0]
    lines = [line for line in kept.splitlines() if not line.startswith(f"{field}:")]
    path.write_text("\n".join([*lines, text.rstrip("\n")]) + "\n")
    commit(root, f"{rel}: {text}")
    code, _, err = run(monkeypatch, capsys, root, *args)
    assert code in (0, 1, 2), err


def test_an_edit_the_editor_cannot_parse_names_line_and_column(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_repo(tmp_path / "repo")
    release = root / "flags/checkout/production.yaml"
    release.write_text("enabled:\ttrue\ndefault: on\n")  # a tab libyaml accepts, the editor not
    code, out, err = run(monkeypatch, capsys, root, "kill", "checkout", "--env", "production")
    assert (code, out) == (1, "")
    assert err.startswith("error: flags/checkout/production.yaml:1:9: cannot be edited"), err
    assert release.read_text() == "enabled:\ttrue\ndefault: on\n"
