"""``flagstone.safefiles`` (issue 12 item 3): writers never write through a planted
symbolic link, and readers never follow one or wait on a FIFO. Real files, real links."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from flagstone import safefiles
from flagstone.errors import (
    DestinationExistsError,
    FileAccessError,
    FileTooLargeError,
    NotRegularFileError,
    SymlinkRefusedError,
)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_writes_whole_file_with_mode_and_replaces_old_content(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.write_bytes(b"old")
    safefiles.write_file_atomically(target, b"new content", mode=0o640)
    assert target.read_bytes() == b"new content"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert leftovers(tmp_path) == []


def test_mode_none_keeps_the_replaced_files_permissions(tmp_path: Path) -> None:
    target = tmp_path / "script.yaml"
    target.write_bytes(b"a")
    target.chmod(0o600)
    safefiles.write_file_atomically(target, b"b", mode=None)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    fresh = tmp_path / "fresh.yaml"
    safefiles.write_file_atomically(fresh, b"c", mode=None)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o644


def test_a_destination_that_is_a_symlink_is_refused_and_its_target_untouched(
    tmp_path: Path,
) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    link = tmp_path / "out.json"
    link.symlink_to(victim)
    with pytest.raises(SymlinkRefusedError, match=r"out\.json: it is a symbolic link"):
        safefiles.write_file_atomically(link, b"attacker")
    assert victim.read_bytes() == b"precious"
    assert link.is_symlink()
    assert leftovers(tmp_path) == []


def test_a_symlinked_folder_below_the_expected_folder_is_refused(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (repo / ".github").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(SymlinkRefusedError, match=r"\.github is a symbolic link"):
        safefiles.write_file_atomically(
            repo / ".github" / "CODEOWNERS", b"* @evil\n", expected_dir=repo, create_dirs=True
        )
    assert list(elsewhere.iterdir()) == []


def test_a_symlinked_folder_deeper_down_is_refused_too(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "flags").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (repo / "flags" / "team").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(SymlinkRefusedError):
        safefiles.write_file_atomically(repo / "flags" / "team" / "f.yaml", b"x", expected_dir=repo)
    assert list(elsewhere.iterdir()) == []


def test_the_expected_folder_itself_may_be_a_link(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    alias = tmp_path / "alias"
    alias.symlink_to(real, target_is_directory=True)
    safefiles.write_file_atomically(
        alias / "a" / "b.txt", b"ok", expected_dir=alias, create_dirs=True
    )
    assert (real / "a" / "b.txt").read_bytes() == b"ok"


def test_a_path_outside_the_expected_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FileAccessError, match="not inside"):
        safefiles.write_file_atomically(tmp_path / "x", b"", expected_dir=tmp_path / "repo")
    with pytest.raises(FileAccessError, match="leaves"):
        safefiles.write_file_atomically(
            tmp_path / "repo" / ".." / "x", b"", expected_dir=tmp_path / "repo"
        )


def test_a_link_planted_at_the_temporary_name_is_never_written_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    names = iter([".out.planted.tmp", ".out.fresh.tmp"])
    monkeypatch.setattr(safefiles, "_temporary_name", lambda name: next(names))
    (tmp_path / ".out.planted.tmp").symlink_to(victim)
    safefiles.write_file_atomically(tmp_path / "out", b"written")
    assert (tmp_path / "out").read_bytes() == b"written"
    assert victim.read_bytes() == b"precious"
    assert (tmp_path / ".out.planted.tmp").is_symlink()  # left alone, not followed


def test_when_every_temporary_name_is_taken_the_write_fails_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(safefiles, "_temporary_name", lambda name: ".taken.tmp")
    (tmp_path / ".taken.tmp").symlink_to(tmp_path / "nowhere")
    with pytest.raises(FileAccessError, match="no free temporary name"):
        safefiles.write_file_atomically(tmp_path / "out", b"x")
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "nowhere").exists()


def test_a_folder_or_fifo_destination_is_not_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    with pytest.raises(NotRegularFileError):
        safefiles.write_file_atomically(tmp_path / "dir", b"x")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(NotRegularFileError):
        safefiles.write_file_atomically(tmp_path / "fifo", b"x")
    assert leftovers(tmp_path) == []


def test_replace_false_never_overwrites(tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    safefiles.write_file_atomically(key, b"first", mode=0o600, replace=False)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    with pytest.raises(DestinationExistsError):
        safefiles.write_file_atomically(key, b"second", replace=False)
    assert key.read_bytes() == b"first"
    dangling = tmp_path / "dangling.pem"
    dangling.symlink_to(tmp_path / "missing-target")
    with pytest.raises(SymlinkRefusedError):
        safefiles.write_file_atomically(dangling, b"x", replace=False)
    assert not (tmp_path / "missing-target").exists()
    assert leftovers(tmp_path) == []


def test_an_unwritable_folder_is_a_file_access_error(tmp_path: Path) -> None:
    with pytest.raises(FileAccessError, match=r"missing/x: No such file or directory"):
        safefiles.write_file_atomically(tmp_path / "missing" / "x", b"")


def test_reader_refuses_links_fifos_and_oversized_files(tmp_path: Path) -> None:
    good = tmp_path / "good"
    good.write_bytes(b"12345")
    assert safefiles.read_regular_file(good, 5) == b"12345"
    with pytest.raises(FileTooLargeError):
        safefiles.read_regular_file(good, 4)
    link = tmp_path / "link"
    link.symlink_to(good)
    with pytest.raises(SymlinkRefusedError):
        safefiles.read_regular_file(link, 100)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # no writer: a blocking open would hang here forever
    with pytest.raises(NotRegularFileError):
        safefiles.read_regular_file(fifo, 100)
    with pytest.raises(NotRegularFileError):
        safefiles.read_regular_file(tmp_path, 100)
    with pytest.raises(FileNotFoundError):
        safefiles.read_regular_file(tmp_path / "absent", 100)


def test_a_read_reserves_the_file_size_not_the_cap(tmp_path: Path) -> None:
    import tracemalloc

    target = tmp_path / "snapshot.json"
    target.write_bytes(b"x" * 100_000)
    tracemalloc.start()
    try:
        data = safefiles.read_regular_file(target, 1 << 30)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert data == b"x" * 100_000
    assert peak < 4 * 100_000  # read(cap + 1) reserved the whole GiB


def test_a_file_that_grew_after_its_size_was_taken_is_read_on_to_the_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "snapshot.json"
    target.write_bytes(b"a" * 10 + b"b" * 20)
    real_fstat = os.fstat

    def stale_fstat(descriptor: int) -> os.stat_result:
        status = real_fstat(descriptor)
        return os.stat_result((*status[:6], 10, *status[7:]))  # the size before it grew

    with target.open("rb") as handle:
        monkeypatch.setattr(os, "fstat", stale_fstat)
        assert safefiles.read_at_most(handle, 100) == b"a" * 10 + b"b" * 20
        monkeypatch.undo()
    with target.open("rb") as handle:
        assert safefiles.read_at_most(handle, 25) == b"a" * 10 + b"b" * 16  # cap + 1


def test_a_write_that_need_not_survive_a_crash_is_not_flushed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cache entries are written ``durable=False``: whole and atomic all the same, with
    no fsync (a torn entry after a crash fails its check and is rebuilt)."""
    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", synced.append)
    target = tmp_path / "entry"
    safefiles.write_file_atomically(target, b"first", durable=False)
    safefiles.write_file_atomically(target, b"second", durable=False)
    assert target.read_bytes() == b"second" and synced == []
    safefiles.write_file_atomically(target, b"third")
    assert target.read_bytes() == b"third" and len(synced) == 2
