"""Commands that set a team up and show its definition: init, roles, config."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

from cowork.cli.app import app
from cowork.cli.common import JsonOpt, RootOpt, console, emit, warn_broken, workspace
from cowork.errors import EXIT_BAD_INPUT, BadInput, Problem, ValidationFailed

roles_app = typer.Typer(help="List, show and validate the team's roles (roles/*.yaml).", no_args_is_help=True)
config_app = typer.Typer(help="Show the team settings (cowork.toml) and where things live.", no_args_is_help=True)
app.add_typer(roles_app, name="roles")
app.add_typer(config_app, name="config")

_MARK = {"wrote": "wrote", "overwrote": "overwrote", "updated": "updated", "skipped": "skipped", "unchanged": "unchanged"}


@app.command()
def init(
    path: Path = typer.Argument(Path("."), help="a directory inside the git repository"),
    force: bool = typer.Option(False, "--force", help="overwrite team files that already exist"),
    git_init: bool = typer.Option(False, "--git-init", help="create a git repository (branch main) if there is none"),
    commit: bool = typer.Option(False, "--commit", help="commit the files written, with your git identity"),
    name: Optional[str] = typer.Option(None, "--name", help="team name for cowork.toml (default: the folder's name)"),
    root: Optional[Path] = typer.Option(None, "--root", "-C",
                                        help="the same as PATH (as other commands take it)"),
    as_json: bool = JsonOpt,
) -> None:
    """Make a git repository a cowork team: cowork.toml, a starter roles/, handoffs/README.md."""
    from cowork.init import init_team

    if root is not None and path != Path("."):
        raise BadInput(f"give the directory once: PATH ({path}) or -C ({root})")
    result = init_team(root if root is not None else path, force=force, git_init=git_init, commit=commit, name=name)

    def show(_: dict) -> None:
        out = console(markup=False)
        if result.git_initialized:
            out.print(f"created a git repository in {result.root}")
        out.print(f"team root: {result.root}" + (f"  (checks picked from {result.stack})" if result.stack else ""))
        for f in result.files:
            out.print(f"  {_MARK[f.action]:<9} {f.path}" + (f"  ({f.note})" if f.note else ""))
        if result.commit:
            out.print(f"committed as {result.commit[:10]}")
        elif commit:
            out.print("nothing to commit")
        skipped = [f for f in result.files if f.action == "skipped"]
        if skipped:
            out.print(f"{len(skipped)} existing file(s) kept; pass --force to overwrite them")
        out.print("next: edit roles/*.yaml, then `cowork roles validate`")

    emit(result.as_dict(), as_json, show)


# -- roles ------------------------------------------------------------------------------------------------------


def _team(root: Optional[Path]):
    """(workspace, settings or None, problems loading cowork.toml)."""
    from cowork.config import load_settings

    ws = workspace(root)
    try:
        return ws, load_settings(ws.config_path, display=ws.rel(ws.config_path)), []
    except ValidationFailed as exc:
        return ws, None, exc.problems


def _roles(root: Optional[Path], need: str | None = None):
    """The team's roles, a broken role file named once on stderr; `need`: a role whose broken file is an error."""
    from cowork.roles import team_roles

    ws, settings, problems = _team(root)
    if problems:
        raise ValidationFailed(problems)
    rs = team_roles(ws, settings, strict=False)
    if need is not None:
        rs.require([need])
    warn_broken(rs)
    return ws, settings, rs


@roles_app.command("list")
def roles_list(root: Optional[Path] = RootOpt, as_json: bool = JsonOpt) -> None:
    """List the roles with their engine, model and tools (a role whose file is broken is listed as such)."""
    ws, settings, rs = _roles(root)
    rows = [{"name": n, "mandate": r.mandate, "engine": r.engine, "model": r.model or settings.model.name,
             "tools": r.tools, "review_by": r.review_by, "file": ws.rel(rs.files[n])} for n, r in rs.roles.items()]
    rows += [{"name": n, "broken": True, "mandate": f"(broken: {problems[0].render().splitlines()[0]})",
              "engine": "-", "model": None, "tools": [], "problems": [p.as_dict() for p in problems]}
             for n, problems in rs.broken.items()]
    rows.sort(key=lambda r: r["name"])

    def show(rows: list[dict]) -> None:
        from rich.table import Table

        table = Table(box=None, pad_edge=False)
        for col in ("role", "engine", "model", "tools", "mandate"):
            table.add_column(col, overflow="fold")
        for r in rows:
            table.add_row(r["name"], r["engine"], r["model"] or "(default)", str(len(r["tools"])), r["mandate"])
        console(markup=False).print(table if rows else f"no roles in {ws.rel(ws.roles_dir)}/")

    emit(rows, as_json, show)


@roles_app.command("show")
def roles_show(name: str = typer.Argument(..., help="role name"), root: Optional[Path] = RootOpt,
               as_json: bool = JsonOpt) -> None:
    """Show one role in full, with its effective model."""
    from cowork.errors import BadInput

    ws, settings, rs = _roles(root, need=name)
    if name not in rs:
        raise BadInput(f"unknown role '{name}'", hint="known roles: " + (", ".join(rs.names()) or "none"))
    role = rs[name]
    data = {**role.model_dump(), "file": ws.rel(rs.files[name]), "effective_model": role.model or settings.model.name}

    def show(d: dict) -> None:
        from rich.table import Table

        table = Table(box=None, show_header=False, pad_edge=False)
        table.add_column(style="bold")
        table.add_column(overflow="fold")
        for key, value in d.items():
            if isinstance(value, dict):
                value = ", ".join(f"{k}: {v}" for k, v in value.items() if v not in (None, [], {})) or "-"
            elif isinstance(value, list):
                value = ", ".join(map(str, value)) or "-"
            table.add_row(key, "-" if value is None else str(value))
        console(markup=False).print(table)

    emit(data, as_json, show)


@roles_app.command("validate")
def roles_validate(root: Optional[Path] = RootOpt, as_json: bool = JsonOpt) -> None:
    """Check every role file (and cowork.toml); exit 2 listing every problem. Overlapping mandates only warn."""
    from cowork.roles import check_skills, load_roles

    ws, settings, problems = _team(root)
    # one pass reports everything: each file's own problems, references among the files that parsed, and the
    # skills of the roles that loaded
    rs = load_roles(ws.roles_dir, ws.root, set(settings.mcp) if settings else set(), strict=False)
    warnings, names = rs.warnings, rs.names()
    problems = problems + rs.problems + check_skills(ws.skills_dir, rs, ws.root)
    if not names and not problems:
        problems.append(Problem("no role files found", file=ws.rel(ws.roles_dir) + "/",
                                hint="add roles/<name>.yaml, or run `cowork init` for a starter team"))
    data = {"ok": not problems, "roles": names, "problems": [p.as_dict() for p in problems],
            "warnings": [w.as_dict() for w in warnings]}
    if as_json:
        emit(data, True)
    else:
        for w in warnings:
            print(f"warning: {w.render()}", file=sys.stderr)
        if not problems:
            print(f"{len(names)} role{'s' if len(names) != 1 else ''} OK: {', '.join(names)}")
    if problems:
        if as_json:
            raise typer.Exit(EXIT_BAD_INPUT)
        raise ValidationFailed(problems)


@roles_app.command("schema")
def roles_schema(write: bool = typer.Option(False, "--write", help="also write it to .cowork/role.schema.json"),
                 root: Optional[Path] = RootOpt) -> None:
    """Print the JSON Schema of a role file (editors: `# yaml-language-server: $schema=...`)."""
    import json

    from cowork.roles import role_schema

    if write:
        from cowork.init import write_schema

        action = write_schema(workspace(root))
        print(f"{action.action} {action.path}", file=sys.stderr)
    sys.stdout.write(json.dumps(role_schema(), indent=2) + "\n")


# -- config -----------------------------------------------------------------------------------------------------


def _public_settings(settings, env: dict) -> dict:
    """Settings as JSON, with secrets replaced by where they come from and whether they are set."""
    from cowork.config import ENV_OVERRIDES
    from cowork.redact import MASK, redact

    data = settings.model_dump(mode="json")
    key_env = settings.model.api_key_env
    data["model"]["api_key"] = {
        "env": "COWORK_API_KEY" if env.get("COWORK_API_KEY") else key_env,
        "set": bool(env.get("COWORK_API_KEY") or (key_env and env.get(key_env))),
    }
    if data["model"].get("api_base"):
        data["model"]["api_base"] = redact(data["model"]["api_base"])
    for server in data.get("mcp", {}).values():
        server["env"] = {k: (MASK if v else "") for k, v in server.get("env", {}).items()}
    data["overrides"] = {var: ".".join(path) for var, path in ENV_OVERRIDES.items() if env.get(var)}
    return data


@config_app.command("show")
def config_show(root: Optional[Path] = RootOpt, as_json: bool = JsonOpt) -> None:
    """The effective settings (cowork.toml after COWORK_* overrides). Secret values are never printed."""
    ws, settings, problems = _team(root)
    if problems:
        raise ValidationFailed(problems)
    data = _public_settings(settings, dict(os.environ))

    def show(d: dict) -> None:
        from rich.table import Table

        origin = {v: k for k, v in d.pop("overrides").items()}
        table = Table(box=None, pad_edge=False)
        table.add_column("setting", style="bold")
        table.add_column("value", overflow="fold")
        table.add_column("from")
        for key, value in _flatten(d):
            table.add_row(key, value, f"env {origin[key]}" if key in origin else "")
        console(markup=False).print(f"settings of {ws.rel(ws.config_path)} in {ws.root}")
        console(markup=False).print(table)

    emit(data, as_json, show)


def _flatten(d: dict, prefix: str = "") -> list[tuple[str, str]]:
    out = []
    for key, value in d.items():
        if key == "api_key" and isinstance(value, dict):
            state = "set" if value["set"] else "NOT set"
            out.append((prefix + key, f"${value['env']} ({state})" if value["env"] else "(none: provider default)"))
        elif isinstance(value, dict) and value:
            out += _flatten(value, f"{prefix}{key}.")
        else:
            out.append((prefix + key, "-" if value is None or value == {} else str(value)))
    return out


@config_app.command("locate")
def config_locate(root: Optional[Path] = RootOpt, as_json: bool = JsonOpt) -> None:
    """Where the team's files are: cowork.toml, roles/, handoffs/, the state dir and database."""
    ws = workspace(root)
    paths = {"root": ws.root, "config": ws.config_path, "roles": ws.roles_dir, "handoffs": ws.handoffs_dir,
             "state_dir": ws.state_dir, "db": ws.db_path, "worktrees": ws.worktrees_dir, "logs": ws.logs_dir}
    data = {k: {"path": str(v), "exists": v.exists()} for k, v in paths.items()}

    def show(d: dict) -> None:
        for key, v in d.items():
            print(f"{key:<10} {v['path']}" + ("" if v["exists"] else "  (not created yet)"))

    emit(data, as_json, show)
