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


def team(root: Path | None = None, *, strict: bool = False, warn: bool = True):
    """(workspace, store, settings, roles) of the team at `root`.

    Args:
        strict: every role file must load, for commands that start agents (a runner gives its agents the whole
            team: the planner plans for every role, and any lane may ask or delegate to any role). Otherwise a role
            whose file is broken is left out, named in one warning on stderr.
        warn: False when the caller warns itself, once it knows it goes on without those roles.

    Raises:
        ValidationFailed: cowork.toml is invalid; or, strict only, a role file is.
    """
    from cowork.config import load_settings
    from cowork.roles import team_roles

    ws = workspace(root)
    settings = load_settings(ws.config_path, display=ws.rel(ws.config_path))
    roles = team_roles(ws, settings, strict=strict)
    if warn:
        warn_broken(roles)
    return ws, store(ws), settings, roles


def warn_broken(roles) -> None:
    """Name broken role files on stderr, once, for a command that goes on without them."""
    notice = roles.notice()
    if notice:
        print(notice, file=sys.stderr)


def warn_broken_roles(ws):
    """The team's roles, for a command that needs none of them or only their names: a broken role file is named
    once on stderr, and never fails it. (With cowork.toml invalid too, MCP tools cannot be judged: nothing is said,
    and a role using one counts as broken.)"""
    from cowork.config import load_settings
    from cowork.errors import ValidationFailed
    from cowork.roles import load_roles, team_roles

    try:
        settings = load_settings(ws.config_path, display=ws.rel(ws.config_path))
    except ValidationFailed:
        return load_roles(ws.roles_dir, ws.root, strict=False)
    roles = team_roles(ws, settings, strict=False)
    warn_broken(roles)
    return roles


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
