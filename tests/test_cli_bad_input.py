"""Adversarial input through the real CLI: each case is a one-line cause with the
right exit code, never an internal error, and nothing half-written."""

from __future__ import annotations

from pathlib import Path

import pytest

from flagstone.cli.main import main
from flagstone.keys import KEY_ENV_VARIABLE
from publish_helpers import write_key_file


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
