"""``flagstone`` entry point: the command group and the single error handler.

Commands are loaded lazily from ``COMMANDS`` so that ``flagstone eval`` does not pay
for importing the publisher, and so each command lives in its own module.

Exit codes: 0 ok, 1 findings or a failed check, 2 usage error, 3 internal error.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from typing import Any

import click

from flagstone import __version__
from flagstone.errors import FlagstoneError
from flagstone.escape import guard_lines, terminal

# command name -> "module:attribute" (modules under flagstone.cli)
COMMANDS: dict[str, str] = {
    "init": "init_cmd:init",
    "validate": "validate_cmd:validate",
    "lint": "lint_cmd:lint",
    "codeowners": "codeowners_cmd:codeowners",
    "compile": "compile_cmd:compile_",
    "eval": "eval_cmd:eval_",
    "keygen": "keys_cmd:keygen",
    "sign": "keys_cmd:sign",
    "verify": "keys_cmd:verify",
    "publish": "publish_cmd:publish",
    "diff": "review_cmd:diff",
    "log": "history_cmd:log",
    "show": "history_cmd:show",
    "served": "served_cmd:served",
    "status": "status_cmd:status",
    "site": "site_cmd:site",
    "check-change": "review_cmd:check_change",
    "new": "authoring_cmd:new",
    "stage": "authoring_cmd:stage",
    "target": "authoring_cmd:target",
    "segment": "authoring_cmd:segment",
    "advance": "edit_cmd:advance",
    "rollout": "edit_cmd:rollout",
    "kill": "edit_cmd:kill",
    "enable": "edit_cmd:enable",
    "archive": "edit_cmd:archive",
    "export": "export_cmd:export",
    "overrides": "overrides_cmd:overrides",
    "progress": "progress_cmd:progress",
    "usage": "usage_cmd:usage",
}

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3


class LazyGroup(click.Group):
    """A group whose subcommands are imported only when invoked or listed in help."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        module = importlib.import_module(f"flagstone.cli.{module_name}")
        command: click.Command = getattr(module, attribute)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="flagstone")
def cli() -> None:
    """Flagstone: feature flags as code — validate, lint, compile, sign and publish."""


def _print_error(message: str, hint: str | None) -> None:
    # Messages quote repository text (names, values, paths): one escaped line each.
    click.echo(guard_lines(terminal(f"error: {message}")), err=True)
    if hint:
        click.echo(guard_lines(terminal(f"hint: {hint}")), err=True)


def main(argv: list[str] | None = None) -> Any:
    """Run the CLI and map every outcome to an exit code; never show a traceback
    for user errors (set FLAGSTONE_DEBUG=1 to see one for internal errors)."""
    try:
        code = cli.main(args=argv, prog_name="flagstone", standalone_mode=False)
    except FlagstoneError as exc:
        _print_error(exc.message, exc.hint)
        code = exc.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        code = EXIT_FINDINGS
    except click.ClickException as exc:
        exc.show()
        code = (
            EXIT_USAGE if exc.exit_code == 2 or isinstance(exc, click.UsageError) else exc.exit_code
        )
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        code = 130
    except BrokenPipeError:
        # Output piped into `head`: stop quietly.
        sys.stderr.close()
        code = EXIT_OK
    except Exception as exc:  # the last line of defence: a bug, not a user error
        if os.environ.get("FLAGSTONE_DEBUG"):
            traceback.print_exc()
        _print_error(
            f"internal error: {type(exc).__name__}: {exc}",
            "this is a bug in flagstone; rerun with FLAGSTONE_DEBUG=1 and report the traceback",
        )
        code = EXIT_INTERNAL
    sys.exit(code if isinstance(code, int) else EXIT_OK)
