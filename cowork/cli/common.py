"""Helpers shared by commands: finding the team, printing JSON or text, consistent exit codes."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable

import typer

from cowork.errors import EXIT_FAILURE

JsonOpt = typer.Option(False, "--json", help="print machine-readable JSON")
RootOpt = typer.Option(None, "--root", "-C", help="team repository (default: the current directory)")


def workspace(root: Path | None = None):
    from cowork.workspace import Workspace

    return Workspace.find(root)


def store(ws):
    from cowork.store import Store

    return Store.for_workspace(ws)


def emit(data: Any, as_json: bool, render: Callable[[Any], None] | None = None) -> None:
    """Print `data` as JSON when asked, otherwise through `render` (or as plain text)."""
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n")
    elif render is not None:
        render(data)
    else:
        sys.stdout.write(f"{data}\n")


def console(**kwargs: Any):
    """A rich Console for people; pass markup=False when printing user text that may contain [brackets]."""
    from rich.console import Console

    return Console(**{"highlight": False, "soft_wrap": True, **kwargs})


def fail(message: str, code: int = EXIT_FAILURE) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(code)


def require_task(st, task: str | None, lane: str | None = None) -> None:
    """A task (and lane) named on the command line exists: a typo is bad input, never an empty answer or a pause
    that holds nothing.

    Raises:
        BadInput: no such task or lane.
    """
    from cowork.errors import BadInput
    from cowork.store import lanes as lanes_db

    if task is None:
        return
    if lanes_db.get_task(st, task) is None:
        raise BadInput(f"no task {task}", hint="`cowork status` lists the tasks, `cowork lanes` their lanes")
    if lane is not None and lanes_db.get_lane(st, task, lane) is None:
        raise BadInput(f"no lane {lane} in task {task}", hint=f"`cowork lanes --task {task}` lists its lanes")
