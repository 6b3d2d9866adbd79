"""The toolchain cache (``flagstone.toolcache``): the same bytes with and without it, and
nothing it holds can change a result. Real repositories in temporary folders, real git,
the real CLI; the suite runs with ``FLAGSTONE_NO_CACHE=1`` and these tests turn it on."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flagstone import model, toolcache
from flagstone.toolcache import CACHE_FOLDER, KEY_FILE_NAME, NO_CACHE_VARIABLE, DocumentCache
from gitrepo import GitRepo, run_cli

EXAMPLES = Path(__file__).parent / "examples"
LONG_AGO = 1_700_000_000  # file times old enough that the stat signature is trusted


@pytest.fixture
def user_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The cache on, with the user's key in a folder of this test. Files count as
    settled at once (``RACY_SECONDS`` 0), so in-process runs take unchanged files by
    their stat signature, the path a real repository takes."""
    monkeypatch.delenv(NO_CACHE_VARIABLE, raising=False)
    monkeypatch.setattr(toolcache, "RACY_SECONDS", 0.0)
    folder = tmp_path / "user-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(folder))
    return folder


def age_files(root: Path) -> None:
    """Backdate every file so the next run may take it by its stat signature."""
    for folder, _, names in os.walk(root):
        for name in names:
            os.utime(os.path.join(folder, name), (LONG_AGO, LONG_AGO))


def example(tmp_path: Path, name: str = "full-features", kind: str = "valid") -> Path:
    root = tmp_path / "repo"
    shutil.copytree(EXAMPLES / kind / name, root)
    return root


def run(args: list[str], root: Path) -> tuple[int, str, str]:
    """``run_cli``, with ``compile`` writing to a file beside the repository (its bytes
    are the output: the in-process runner has no binary stdout)."""
    if args[0] != "compile":
        return run_cli(args, root)
    target = root.parent / "payload.json"
    target.unlink(missing_ok=True)
    code, out, err = run_cli([*args, "-o", str(target)], root)
    return code, target.read_text() if target.exists() else out, err


def outputs(root: Path) -> dict[str, tuple[int, str, str]]:
    """What validate, compile and eval print, with the cache (as configured) and without."""
    results = {}
    for label, extra in (("cached", []), ("uncached", ["--no-cache"])):
        for command in (
            ["validate", "--format", "json"],
            ["compile", "--env", "production"],
            ["eval", "checkout", "--env", "production", "--context", '{"key": "u-1"}'],
        ):
            results[f"{label} {command[0]}"] = run([*command, *extra], root)
    return results


def assert_same_with_and_without(root: Path) -> dict[str, tuple[int, str, str]]:
    results = outputs(root)
    for command in ("validate", "compile", "eval"):
        assert results[f"cached {command}"] == results[f"uncached {command}"], command
    return results


def test_results_are_the_same_cold_warm_and_after_a_one_flag_edit(
    tmp_path: Path, user_cache: Path
) -> None:
    root = example(tmp_path)
    cold = assert_same_with_and_without(root)
    assert (root / CACHE_FOLDER / "worktree.entry").is_file()
    age_files(root)
    warm = assert_same_with_and_without(root)  # now taken by stat signature
    assert warm == cold
    release = root / "flags" / "checkout" / "production.yaml"
    release.write_text(release.read_text().replace("enabled: true", "enabled: false", 1))
    edited = assert_same_with_and_without(root)
    assert edited["cached compile"] != cold["cached compile"]
    # and the entry for the edited file is refreshed: one more run still agrees
    assert assert_same_with_and_without(root) == edited


@pytest.mark.parametrize(
    "case",
    [
        "prerequisite-variation-unknown",
        "schema-unknown-key-typo",
        "yaml-duplicate-key",
        "unreadable-files-are-not-unknown",
        "stray-files",
    ],
)
def test_findings_of_an_invalid_repository_are_the_same_with_the_cache(
    case: str, tmp_path: Path, user_cache: Path
) -> None:
    root = example(tmp_path, case, "invalid")
    expected = (EXAMPLES / "invalid" / case / "expected.txt").read_text().split("\n")[0]
    uncached = run_cli(["validate", "--format", "text", "--no-cache"], root)
    first = run_cli(["validate", "--format", "text"], root)
    age_files(root)
    second = run_cli(["validate", "--format", "text"], root)  # every document cached
    assert first == second == uncached
    assert first[0] == 1 and expected.split(": ")[0] in first[1]


def test_a_flag_is_checked_again_when_a_flag_it_requires_changes(
    tmp_path: Path, user_cache: Path
) -> None:
    """Findings are kept per flag; those of a flag that names another as a prerequisite
    depend on that other flag's definition too."""
    root = example(tmp_path, "prerequisite-variation-unknown", "invalid")
    payments = root / "flags" / "payments" / "flag.yaml"

    def same_with_and_without() -> tuple[int, str, str]:
        cached = run_cli(["validate", "--format", "text"], root)
        age_files(root)
        assert run_cli(["validate", "--format", "text"], root) == cached  # all kept
        assert run_cli(["validate", "--format", "text", "--no-cache"], root) == cached
        return cached

    assert "unknown variation 'enabled'" in same_with_and_without()[1]
    payments.write_text(payments.read_text().replace("{on: true,", "{enabled: true, on: true,"))
    assert same_with_and_without()[0] == 0
    shutil.rmtree(payments.parent)
    assert "unknown prerequisite flag 'payments'" in same_with_and_without()[1]
    (root / "flags" / "paymentz").mkdir()
    (root / "flags" / "paymentz" / "flag.yaml").write_text(
        "name: P\nowner: core\nvariations: {on: true, off: false}\noff_variation: off\n"
    )
    assert "did you mean 'paymentz'" in same_with_and_without()[1]


def test_files_added_removed_or_replaced_are_seen(tmp_path: Path, user_cache: Path) -> None:
    """Folder listings are kept too, while the folder's own times are unchanged."""
    root = example(tmp_path)
    first = assert_same_with_and_without(root)
    age_files(root)
    assert_same_with_and_without(root)
    shutil.copytree(root / "flags" / "checkout", root / "flags" / "checkout-two")
    added = assert_same_with_and_without(root)
    assert "checkout-two" in added["cached compile"][1]
    (root / "flags" / "checkout-two" / "production.yaml").unlink()
    (root / "flags" / "checkout-two" / "production.yaml").mkdir()  # a folder in its place
    replaced = assert_same_with_and_without(root)
    assert "release files are named" in replaced["cached validate"][1]
    shutil.rmtree(root / "flags" / "checkout-two")
    assert assert_same_with_and_without(root) == first


def test_an_edit_keeping_size_and_modification_time_is_still_seen(
    tmp_path: Path, user_cache: Path
) -> None:
    root = example(tmp_path)
    age_files(root)
    before = run(["compile", "--env", "production"], root)
    release = root / "flags" / "checkout" / "production.yaml"
    text = release.read_text()
    assert "enabled: true" in text
    release.write_text(text.replace("enabled: true", "enabled: fals", 1) + "e")  # same size
    os.utime(release, (LONG_AGO, LONG_AGO))  # same times: only the change time moved
    after = run(["compile", "--env", "production"], root)
    assert after == run(["compile", "--env", "production", "--no-cache"], root)
    assert after != before


def test_a_file_changed_moments_ago_is_recorded_without_a_signature(
    tmp_path: Path, user_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A change within the same clock tick as the recording could keep every stat field
    (coarse timestamps): such a file is hashed again next time, never taken by stat."""
    monkeypatch.setattr(toolcache, "RACY_SECONDS", 2.0)
    root = example(tmp_path)
    release = root / "flags" / "checkout" / "production.yaml"
    release.write_text(release.read_text())  # just now
    assert run_cli(["validate"], root)[0] == 0
    cache = toolcache.ToolCache.for_repository(root)
    assert cache is not None
    entries = DocumentCache(cache).base
    assert entries["flags/checkout/production.yaml"][0] is None
    assert entries["flagstone.yaml"][0] is None  # its status changed moments ago too


def test_a_tampered_truncated_or_foreign_entry_is_ignored_and_rebuilt(
    tmp_path: Path, user_cache: Path
) -> None:
    root = example(tmp_path)
    expected = run(["compile", "--env", "production", "--no-cache"], root)
    assert run(["compile", "--env", "production"], root) == expected
    entries = sorted((root / CACHE_FOLDER).glob("*.entry"))
    assert entries
    originals = {entry: entry.read_bytes() for entry in entries}
    variants = [
        lambda raw: raw[:-1] + bytes([raw[-1] ^ 1]),  # one bit of the content
        lambda raw: raw[: len(raw) // 2],  # truncated
        lambda raw: raw[:30] + bytes([raw[30] ^ 1]) + raw[31:],  # another tool version
        lambda raw: b"",
        lambda raw: b"\x80\x04not even our format",
    ]
    for variant in variants:
        for entry, raw in originals.items():
            entry.write_bytes(variant(raw))
        assert run(["compile", "--env", "production"], root) == expected
        code, _, err = run_cli(["validate"], root)
        assert code == 0 and "Traceback" not in err


def test_entries_made_under_another_key_are_not_trusted(
    tmp_path: Path, user_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An attacker who commits a forged .flagstone/cache/ (or another user of a shared
    checkout) does not hold this user's key: their entries are ignored."""
    root = example(tmp_path)
    good = run(["compile", "--env", "production", "--no-cache"], root)
    release = root / "flags" / "checkout" / "production.yaml"
    original = release.read_text()
    release.write_text(original.replace("enabled: true", "enabled: false", 1))
    planted = run(["compile", "--env", "production"], root)  # entries for the edit
    assert planted != good
    release.write_text(original)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "another-user"))
    # The entries now describe another content under another key: never used.
    for entry in (root / CACHE_FOLDER).glob("*.entry"):
        os.utime(entry)
    assert run(["compile", "--env", "production"], root) == good


def test_a_cache_folder_linked_elsewhere_is_not_written_through(
    tmp_path: Path, user_cache: Path
) -> None:
    root = example(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root / ".flagstone").mkdir()
    (root / CACHE_FOLDER).symlink_to(elsewhere)
    results = assert_same_with_and_without(root)
    assert results["cached validate"][0] == 0
    assert list(elsewhere.iterdir()) == []


def test_the_user_key_is_private_and_a_bad_key_turns_the_cache_off(
    tmp_path: Path, user_cache: Path
) -> None:
    root = example(tmp_path)
    expected = run_cli(["validate", "--no-cache"], root)
    assert run_cli(["validate"], root) == expected
    key = user_cache / "flagstone" / KEY_FILE_NAME
    assert key.stat().st_mode & 0o777 == 0o600 and key.stat().st_size == 32
    shutil.rmtree(root / CACHE_FOLDER)
    key.write_bytes(b"short")
    assert run_cli(["validate"], root) == expected
    assert not (root / CACHE_FOLDER).exists()


def test_no_cache_and_the_environment_variable_leave_nothing_behind(
    tmp_path: Path, user_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = example(tmp_path)
    assert run_cli(["validate", "--no-cache"], root)[0] == 0
    monkeypatch.setenv(NO_CACHE_VARIABLE, "1")
    assert run(["compile", "--env", "production"], root)[0] == 0
    assert not (root / ".flagstone").exists()
    assert not user_cache.exists()


def test_concurrent_runs_share_the_cache_safely(tmp_path: Path, user_cache: Path) -> None:
    root = example(tmp_path)
    expected = run(["compile", "--env", "production", "--no-cache"], root)[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, "-m", "flagstone", "compile", "--env", "production"]
    processes = [
        subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    for process in processes:
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        assert out.decode() == expected
    assert run(["compile", "--env", "production"], root)[1] == expected
    leftovers = [p.name for p in (root / CACHE_FOLDER).iterdir() if not p.name.endswith(".entry")]
    assert leftovers == []


def test_diff_and_check_change_read_the_base_revision_through_the_cache(
    tmp_path: Path, user_cache: Path
) -> None:
    repo = GitRepo(tmp_path / "git")
    shutil.copytree(EXAMPLES / "valid" / "full-features", repo.path, dirs_exist_ok=True)
    repo.commit("initial")
    repo.replace("flags/checkout/production.yaml", "enabled: true", "enabled: false")
    commands = (["diff", "HEAD", "--format", "json"], ["check-change", "--base", "HEAD"])
    for command in commands:
        uncached = run_cli([*command, "--no-cache"], repo.path)
        assert run_cli(command, repo.path) == uncached  # cold: fills the cache
        assert run_cli(command, repo.path) == uncached  # warm: base taken by blob id
    assert (repo.path / CACHE_FOLDER / "revision.entry").is_file()
    assert "checkout" in run_cli(["diff", "HEAD", "--format", "json"], repo.path)[1]


def test_an_unchanged_repository_is_not_walked_again(
    tmp_path: Path, user_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While no folder the last walk depended on changed, the walk is replayed from the
    cache: files are looked at (one lstat each), folders are not walked."""
    root = example(tmp_path)
    expected = assert_same_with_and_without(root)
    age_files(root)
    assert_same_with_and_without(root)  # records the walk with settled signatures

    def no_listing(*args: object, **kwargs: object) -> None:
        raise AssertionError("a folder was walked")

    with monkeypatch.context() as patched:
        patched.setattr(model._RepositoryWalk, "entries", no_listing)
        for command in (
            ["validate", "--format", "json"],
            ["compile", "--env", "production"],
            ["eval", "checkout", "--env", "production", "--context", '{"key": "u-1"}'],
        ):
            assert run(command, root) == expected[f"uncached {command[0]}"]
    # an edit in place (the folder's entries stay the same) is seen without a listing
    release = root / "flags" / "checkout" / "production.yaml"
    release.write_text(release.read_text().replace("enabled: true", "enabled: false", 1))
    with monkeypatch.context() as patched:
        patched.setattr(model._RepositoryWalk, "entries", no_listing)
        edited = run(["compile", "--env", "production"], root)
    assert edited == run(["compile", "--env", "production", "--no-cache"], root)
    assert edited != expected["uncached compile"]


def test_a_replayed_walk_notices_a_file_turned_into_a_link_or_a_folder(
    tmp_path: Path, user_cache: Path
) -> None:
    """A file the last walk read that is now a link leading outside (or a folder, or
    gone) is never read through the record: the repository is walked again."""
    root = example(tmp_path)
    age_files(root)
    assert_same_with_and_without(root)
    assert_same_with_and_without(root)
    secret = tmp_path / "secret.yaml"
    secret.write_text("enabled: true\nsecret: do-not-print\n")
    release = root / "flags" / "checkout" / "production.yaml"
    release.unlink()
    release.symlink_to(secret)
    linked = assert_same_with_and_without(root)
    assert "outside the repository" in linked["cached validate"][1]
    assert "do-not-print" not in "".join(str(result) for result in linked.values())
    release.unlink()
    release.mkdir()
    folder = assert_same_with_and_without(root)
    assert "release files are named" in folder["cached validate"][1]
    release.rmdir()
    gone = assert_same_with_and_without(root)
    assert gone["cached compile"] != linked["cached compile"]
    segments = root / "segments"
    shutil.rmtree(segments)
    assert_same_with_and_without(root)
    segments.mkdir()
    assert_same_with_and_without(root)


def test_positions_kept_compactly_read_back_the_same() -> None:
    """The cache keeps a document's positions without their paths (read back along its
    values); every example file's positions come back exactly, and a document whose
    positions do not follow its values one to one keeps them whole."""
    from flagstone.loader import Document, LoadError, loads

    checked = 0
    for path in sorted(EXAMPLES.rglob("*.yaml")):
        try:
            document = loads(path.read_bytes(), rel=path.name)
        except LoadError:
            continue
        packed = document.packed()
        again = Document(
            path, path.name, None, packed_marks=packed, packed_data=document.packed_data()
        )
        assert again.data == document.data
        assert again.marks == document.marks and again.key_marks == document.key_marks
        checked += 1 if packed[:1] == b"\x00" else 0
    assert checked > 50
    odd = Document("x", "x", {"a": 1}, {(): (1, 1)}, {})  # a key without its position
    assert odd.packed()[:1] != b"\x00"
    assert Document("x", "x", None, packed_marks=odd.packed()).marks == {(): (1, 1)}


def test_a_flag_folder_changed_is_listed_again_alone(
    tmp_path: Path, user_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An editor that saves by renaming changes the flag's folder: that folder is listed
    again, not the repository; a release file added there is seen; anything the walk
    would look at twice (a stray file) makes it walk again."""
    root = example(tmp_path)
    age_files(root)
    assert_same_with_and_without(root)
    assert_same_with_and_without(root)
    folder = root / "flags" / "checkout"
    release = folder / "production.yaml"
    saved = folder / ".production.yaml.swp"
    saved.write_text(release.read_text().replace("enabled: true", "enabled: false", 1))
    os.replace(saved, release)

    def no_walk(*args: object, **kwargs: object) -> None:
        raise AssertionError("the repository was walked")

    with monkeypatch.context() as patched:
        patched.setattr(model._RepositoryWalk, "entries", no_walk)
        renamed = run(["compile", "--env", "production"], root)
    assert renamed == run(["compile", "--env", "production", "--no-cache"], root)
    assert '"enabled":false' in renamed[1]
    (folder / "qa.yaml").write_text("enabled: false\n")
    with monkeypatch.context() as patched:
        patched.setattr(model._RepositoryWalk, "entries", no_walk)
        added = run_cli(["validate", "--format", "text"], root)
    assert added == run_cli(["validate", "--format", "text", "--no-cache"], root)
    assert "undeclared environment 'qa'" in added[1]
    (folder / "notes.txt").write_text("not a release\n")
    stray = assert_same_with_and_without(root)
    assert "release files are named" in stray["cached validate"][1]


def test_compiled_flags_are_kept_per_flag_and_joined_into_the_same_bytes(
    tmp_path: Path, user_cache: Path
) -> None:
    """compile keeps each flag's canonical bytes under what it is compiled from; the
    payload joined from them is the bytes of the whole payload written at once, through
    edits of a flag another requires, archiving, segments coming and going, and values
    the standard JSON writer does not write canonically (floats), non-ASCII text."""
    root = example(tmp_path)
    payments = root / "flags" / "payments" / "flag.yaml"
    payments.write_text(payments.read_text().replace("v3: three}", "v3: th☃ree, v4: four}"))

    def same() -> str:
        age_files(root)
        results = []
        for extra in ([], [], ["--no-cache"]):  # cold or edited, then kept, then none
            for env in ("production", "staging"):
                results.append(run(["compile", "--env", env, *extra], root))
        assert results[0:2] == results[2:4] == results[4:6]
        return results[0][1]

    first = same()
    assert "th☃ree" in first
    # a flag another requires: the other's kept bytes depend on it (its variations)
    payments.write_text(payments.read_text().replace(", v4: four}", "}"))
    assert same() != first
    checkout = root / "flags" / "checkout"
    (checkout / "flag.yaml").write_text(
        (checkout / "flag.yaml")
        .read_text()
        .replace("{on: true, off: false}", "{on: 1.5, off: 0.25}")
        + "type: number\n"
    )
    floats = same()
    assert '"on":1.5' in floats
    payments.write_text(payments.read_text() + "archived: true\n")
    assert run(["compile", "--env", "production"], root) == run(
        ["compile", "--env", "production", "--no-cache"], root
    )
    payments.write_text(payments.read_text().replace("archived: true\n", ""))
    assert same() == floats
    (root / "segments" / "extra.yaml").write_text("name: Extra\nowner: core\ninclude: [u-9]\n")
    with_segment = same()
    assert '"extra"' in with_segment
    (root / "segments" / "extra.yaml").unlink()
    assert same() == floats
