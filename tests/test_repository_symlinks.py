"""The repository reader never leaves the repository, and writers never write through a
link planted in it (issue 12 item 3). Real repositories, real symbolic links, real FIFOs;
the commands run through the real CLI entry point and error handler."""

from __future__ import annotations

import io
import os
import re
import shutil
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from flagstone.cli.main import main

EXAMPLES = Path(__file__).parent / "examples"
SECRET = "root:x:0:0:TOP-SECRET-MARKER:/root:/bin/bash\n"


def run_cli(*argv: str) -> tuple[int, str]:
    """Exit code and everything printed (stdout and stderr together)."""
    out = io.StringIO()
    with redirect_stdout(out), redirect_stderr(out), pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    return int(exit_info.value.code or 0), out.getvalue()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(EXAMPLES / "valid" / "full-features", root)
    return root


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder outside the repository holding a passwd-like file and a flag folder."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "passwd").write_text(SECRET)
    (folder / "secret-flag-name").mkdir()
    (folder / "secret-flag-name" / "flag.yaml").write_text("description: " + SECRET)
    return folder


def assert_refused(code: int, output: str, rel: str) -> None:
    assert code == 1, output
    # `validate` prints findings as "path: error: …", other commands "error: path: …".
    message = "symbolic link leading outside the repository; not read"
    assert re.search(rf"(^|\n)(error: )?{re.escape(rel)}: (error: )?{message}", output), output
    assert "TOP-SECRET-MARKER" not in output
    assert "secret-flag-name" not in output  # not even the names in the target folder
    assert "Traceback" not in output


def test_a_flag_file_linked_to_a_file_outside_is_refused_unread(repo: Path, outside: Path) -> None:
    flag = repo / "flags" / "checkout" / "flag.yaml"
    flag.unlink()
    flag.symlink_to(outside / "passwd")
    for command in ("validate", "lint", "compile"):
        code, output = run_cli(
            command, "--repo", str(repo), *(["--env", "staging"] if command == "compile" else [])
        )
        assert_refused(code, output, "flags/checkout/flag.yaml")


def test_a_release_file_linked_outside_is_refused(repo: Path, outside: Path) -> None:
    release = repo / "flags" / "checkout" / "production.yaml"
    release.unlink()
    release.symlink_to(outside / "passwd")
    assert_refused(*run_cli("validate", "--repo", str(repo)), "flags/checkout/production.yaml")


def test_a_flags_folder_linked_outside_is_refused_without_listing_it(
    repo: Path, outside: Path
) -> None:
    shutil.rmtree(repo / "flags")
    (repo / "flags").symlink_to(outside, target_is_directory=True)
    assert_refused(*run_cli("validate", "--repo", str(repo)), "flags")


def test_one_flag_folder_linked_outside_is_refused(repo: Path, outside: Path) -> None:
    (repo / "flags" / "borrowed").symlink_to(outside / "secret-flag-name", target_is_directory=True)
    assert_refused(*run_cli("validate", "--repo", str(repo)), "flags/borrowed")


def test_segments_and_the_project_file_linked_outside_are_refused(
    repo: Path, outside: Path
) -> None:
    segment = repo / "segments" / "staff.yaml"
    segment.unlink()
    segment.symlink_to(outside / "passwd")
    assert_refused(*run_cli("validate", "--repo", str(repo)), "segments/staff.yaml")
    project = repo / "flagstone.yaml"
    project.unlink()
    project.symlink_to(outside / "passwd")
    assert_refused(*run_cli("validate", "--repo", str(repo)), "flagstone.yaml")


def test_a_chain_of_links_that_ends_outside_is_refused(repo: Path, outside: Path) -> None:
    (repo / "hop").symlink_to(outside / "passwd")  # inside the repository, leading out
    flag = repo / "flags" / "checkout" / "flag.yaml"
    flag.unlink()
    flag.symlink_to("../../hop")
    assert_refused(*run_cli("validate", "--repo", str(repo)), "flags/checkout/flag.yaml")


def test_links_that_stay_inside_the_repository_are_followed(repo: Path) -> None:
    shared = repo / "shared"
    shared.mkdir()
    (repo / "segments" / "staff.yaml").rename(shared / "staff.yaml")
    (repo / "segments" / "staff.yaml").symlink_to("../shared/staff.yaml")
    code, output = run_cli("validate", "--repo", str(repo))
    assert code == 0, output


def test_a_fifo_in_place_of_a_yaml_file_is_refused_without_waiting(repo: Path) -> None:
    segment = repo / "segments" / "staff.yaml"
    segment.unlink()
    os.mkfifo(segment)  # nobody writes to it: a blocking open would hang the command
    code, output = run_cli("validate", "--repo", str(repo))
    assert code == 1
    assert "segments/staff.yaml: error: not part of the flag repository layout" in output


def test_the_loader_itself_refuses_what_is_not_a_regular_file(repo: Path) -> None:
    from flagstone.errors import LoadError
    from flagstone.loader import load_file

    fifo = repo / "segments" / "pipe.yaml"
    os.mkfifo(fifo)
    with pytest.raises(LoadError, match=r"segments/pipe\.yaml: not a regular file"):
        load_file(fifo, root=repo)


def test_codeowners_linked_outside_is_neither_read_nor_written(repo: Path, outside: Path) -> None:
    (repo / ".github").mkdir()
    (repo / ".github" / "CODEOWNERS").symlink_to(outside / "passwd")
    for args in ((), ("--check",)):
        code, output = run_cli("codeowners", "--repo", str(repo), *args)
        assert_refused(code, output, ".github/CODEOWNERS")
    assert (outside / "passwd").read_text() == SECRET


def test_codeowners_never_writes_into_a_linked_github_folder(repo: Path, outside: Path) -> None:
    target = outside / "elsewhere"
    target.mkdir()
    (repo / ".github").symlink_to(target, target_is_directory=True)
    code, output = run_cli("codeowners", "--repo", str(repo))
    assert code in (1, 2), output
    assert "symbolic link" in output
    assert list(target.iterdir()) == []


def test_an_edit_never_writes_through_a_linked_flag_folder(repo: Path, tmp_path: Path) -> None:
    # A link that stays inside is read, but the edit refuses to write through it.
    moved = repo / "elsewhere-inside"
    (repo / "flags" / "payments").rename(moved)
    (repo / "flags" / "payments").symlink_to("../elsewhere-inside", target_is_directory=True)
    assert run_cli("validate", "--repo", str(repo))[0] == 0
    before = (moved / "staging.yaml").read_bytes()
    code, output = run_cli("kill", "payments", "--env", "staging", "--repo", str(repo))
    assert code == 2, output
    assert "flags/payments is a symbolic link" in output
    assert (moved / "staging.yaml").read_bytes() == before


def test_compile_output_that_is_a_link_is_refused_and_its_target_kept(
    repo: Path, outside: Path
) -> None:
    link = outside / "snapshot.json"
    link.symlink_to(outside / "passwd")
    code, output = run_cli("compile", "--repo", str(repo), "--env", "staging", "-o", str(link))
    assert code == 2, output
    assert "is a symbolic link; refusing to replace it" in output
    assert (outside / "passwd").read_text() == SECRET


def test_keygen_never_writes_a_key_into_a_linked_key_folder(repo: Path, outside: Path) -> None:
    (repo / ".flagstone").symlink_to(outside, target_is_directory=True)
    before = sorted(p.name for p in outside.iterdir())
    code, output = run_cli("keygen", "--repo", str(repo))
    assert code == 2, output
    assert ".flagstone is a symbolic link" in output
    assert sorted(p.name for p in outside.iterdir()) == before


def test_a_development_key_linked_to_a_real_key_elsewhere_is_not_used(
    repo: Path, tmp_path: Path
) -> None:
    code, output = run_cli("keygen", "--out", str(tmp_path / "production.pem"))
    assert code == 0, output
    (repo / ".flagstone").mkdir()
    (repo / ".flagstone" / "dev-signing-key.pem").symlink_to(tmp_path / "production.pem")
    code, output = run_cli("publish", "--repo", str(repo), "--env", "production", "--dry-run")
    assert code == 2, output
    assert "symbolic link" in output
