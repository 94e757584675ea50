"""Helpers shared by commands: finding the team, printing JSON or text, consistent exit codes."""
from __future__ import annotations

import json
import os
import sys
import time
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
    roles, notice = _lenient_roles(ws)
    if notice:
        print(notice, file=sys.stderr)
    return roles


def _lenient_roles(ws):
    """(the team's roles, broken files left out; the warning that names those files, or None)."""
    from cowork.config import load_settings
    from cowork.errors import ValidationFailed
    from cowork.roles import load_roles, team_roles

    try:
        settings = load_settings(ws.config_path, display=ws.rel(ws.config_path))
    except ValidationFailed:
        return load_roles(ws.roles_dir, ws.root, strict=False), None
    roles = team_roles(ws, settings, strict=False)
    return roles, roles.notice()


ROLES_SEEN = "roles-seen.json"  # in .cowork/: the last warning about the role files, and what it was made from
RACY_NS = 2_000_000_000


def say_broken_roles(ws) -> None:
    """`warn_broken_roles` for a command that needs no role at all (status, lanes, log...): while nothing the
    warning depends on has changed (`_roles_inputs`), it is said again from .cowork/roles-seen.json, without
    importing the role model (pydantic, YAML) or parsing a file; otherwise the roles are loaded and it is saved."""
    inputs = _roles_inputs(ws)
    seen = ws.state_dir / ROLES_SEEN
    try:
        saved = json.loads(seen.read_text(encoding="utf-8"))
        if saved["inputs"] == inputs:
            if saved["notice"]:
                print(saved["notice"], file=sys.stderr)
            return
    except (OSError, ValueError, KeyError, TypeError):
        pass
    notice = _lenient_roles(ws)[1]
    if notice:
        print(notice, file=sys.stderr)
    # a file changed again within the file system's clock tick keeps its stat (git's "racy" files): not saved while
    # one is that new, so the next command reads them all again
    if any(st[1] is not None and st[1] > time.time_ns() - RACY_NS for st in inputs[0]):
        return
    try:  # written whole, then renamed: a command reading it meanwhile sees the old one or the new one
        tmp = seen.with_name(f"{ROLES_SEEN}.{os.getpid()}")
        tmp.write_text(json.dumps({"inputs": inputs, "notice": notice}), encoding="utf-8")
        os.replace(tmp, seen)
    except OSError:  # no .cowork/ yet, or read-only: the next command loads the roles again
        pass


def _roles_inputs(ws) -> list:
    """What the broken-role warning is made from, as stat()s: cowork.toml (its MCP servers), each role file, the
    code that judges them, and the COWORK_* variables (overrides of cowork.toml)."""
    import cowork

    code = Path(cowork.__file__).parent
    files = [ws.config_path, code / "roles.py", code / "config.py", code / "yamlpos.py"]
    if ws.roles_dir.is_dir():
        files += sorted(p for p in ws.roles_dir.iterdir() if p.suffix in (".yaml", ".yml"))
    stats = []
    for path in files:
        try:
            st = path.stat()
            stats.append([str(path), st.st_mtime_ns, st.st_size, st.st_ino])
        except OSError:
            stats.append([str(path), None])
    return [stats, sorted([k, v] for k, v in os.environ.items() if k.startswith("COWORK_"))]


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
