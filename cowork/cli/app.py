"""The `cowork` command: a typer app assembled from one module per command group.

Heavy modules (litellm, textual, the runner) are imported inside commands, so `cowork --help` stays fast.
"""
from __future__ import annotations

import sys

import typer

from cowork.errors import EXIT_BAD_INPUT, EXIT_FAILURE, CoworkError

app = typer.Typer(
    name="cowork",
    help="Run a team of AI agents on a git repository: roles, parallel lanes, handoffs, one merger at a time.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _print_version(value: bool) -> None:
    if value:
        version(as_json=False)
        raise typer.Exit()


@app.callback()
def _root(_version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                        help="Print cowork's version and exit.")) -> None:
    """cowork: a team of AI agents on your git repository."""


@app.command()
def version(as_json: bool = typer.Option(False, "--json", help="print machine-readable JSON")) -> None:
    """Print cowork's version."""
    import json
    from importlib.metadata import version as _v

    print(json.dumps({"version": _v("cowork")}) if as_json else _v("cowork"))


# Command groups register themselves on `app` when imported.
from cowork.cli import (  # noqa: E402,F401
    setup_cmds,
    inspect_cmds,
    task_cmds,
    merge_cmds,
    team_cmds,
    mc_cmd,
    model_cmds,
    mcp_cmd,
)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning user errors into a message and an exit code (never a traceback)."""
    try:
        # standalone_mode=False: click returns a typer.Exit's code instead of raising SystemExit
        rc = app(args=argv, standalone_mode=False)
        if isinstance(rc, int) and rc:
            return rc
    except CoworkError as exc:
        print(f"error: {exc.render()}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:  # typer.Exit / explicit exits
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_FAILURE)
    except Exception as exc:
        # typer vendors click; its usage errors know how to show themselves and carry an exit code (2)
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):
            exc.show()
            return exc.exit_code or EXIT_BAD_INPUT
        if type(exc).__name__ == "Abort":
            print("aborted", file=sys.stderr)
            return EXIT_FAILURE
        from cowork.store.store import StoreUnavailable

        if StoreUnavailable.about_the_file(exc):  # locked by another process past the busy wait, a disk error
            print(f"error: {StoreUnavailable('.cowork/state.db', exc, doing='use').render()}", file=sys.stderr)
            return EXIT_FAILURE
        raise
    return 0


def run() -> None:
    sys.exit(main())
