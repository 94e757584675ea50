"""Commands about models: `cowork models` (what is usable here, and which model each role uses) and `cowork demo`."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from cowork.cli.app import app
from cowork.cli.common import JsonOpt, RootOpt, emit, warn_broken
from cowork.errors import EXIT_BAD_INPUT, EXIT_FAILURE

models_app = typer.Typer(help="Which models are usable here, and which one each role will use (and why).",
                         invoke_without_command=True)
app.add_typer(models_app, name="models")


def _team(root: Optional[Path]):
    """(settings, roles, root) of the team here, or env-only settings and no roles outside a team."""
    from cowork.config import load_settings
    from cowork.engines.detect import settings_from_env
    from cowork.errors import NotATeam
    from cowork.roles import team_roles
    from cowork.workspace import Workspace

    try:
        ws = Workspace.find(root)
    except NotATeam:
        return settings_from_env(), {}, None
    settings = load_settings(ws.config_path, display=ws.rel(ws.config_path))
    roles = team_roles(ws, settings, strict=False)  # the roles that load: a broken one is named on stderr
    warn_broken(roles)
    return settings, roles.roles, str(ws.root)


@models_app.callback()
def models(ctx: typer.Context, root: Optional[Path] = RootOpt, as_json: bool = JsonOpt) -> None:
    """Providers found here (API keys by name only, Ollama, local servers, the embedded model) and each role's model.

    Exit 1 when a role's model cannot be used (its API key is missing, or its server here does not answer).
    """
    if ctx.invoked_subcommand is not None:
        return
    from cowork.engines.detect import models_report

    settings, roles, team_root = _team(root)
    report = models_report(settings, roles, team_root=team_root)
    emit(report, as_json, _render)
    if not report["ok"]:
        raise typer.Exit(EXIT_FAILURE)


def _render(report: dict) -> None:
    from cowork.engines.detect import PORTS

    prov = report["providers"]
    keys = [k for k in prov["keys"] if k["set"]]
    print("Providers on this machine")
    if keys:
        print("  API keys       " + ", ".join(f"{k['env']} is set ({k['provider']})" for k in keys))
    else:
        names = sorted({k["env"] for k in prov["keys"]}, key=[k["env"] for k in prov["keys"]].index)
        print(f"  API keys       none set (looked for {', '.join(names[:6])}, ...)")
    ollama = [s for s in prov["servers"] if s["kind"] == "ollama"]
    others = [s for s in prov["servers"] if s["kind"] != "ollama"]
    for s in ollama:
        tag = " (configured api_base)" if s["configured"] else ""
        print(f"  Ollama         {s['api_base']}{tag}: " + (", ".join(s["models"][:8]) or "no models pulled"))
    if not ollama:
        print("  Ollama         not running at 127.0.0.1:11434")
    for s in others:
        tag = " (configured api_base)" if s["configured"] else ""
        print(f"  Local server   {s['api_base']}{tag}: " + (", ".join(s["models"][:8]) or "no models listed"))
    if not others:
        print(f"  Local servers  none answering on 127.0.0.1 ports {', '.join(map(str, PORTS))}")
    emb = prov["embedded"]
    print(f"  Embedded       {emb['label']}: " + ("installed" if emb["available"] else emb["detail"]))
    print()
    print("Models by role" + (f" (team at {report['team']})" if report["team"] else " (not in a team: defaults only)"))
    width = max(len(r["role"]) for r in report["models"])
    for r in report["models"]:
        if "error" in r:
            print(f"  {r['role']:<{width}}  no model: {r['error'].splitlines()[0]}")
            continue
        key = "key" if r["key_ok"] else "KEY MISSING"
        print(f"  {r['role']:<{width}}  {r['label']}")
        print(f"  {'':<{width}}    from {r['source']}; {key}: {r['key_note']}")
        if r.get("server_ok") is False:
            print(f"  {'':<{width}}    SERVER DOWN: {r['server_note']}")
        if r["fallbacks"]:
            print(f"  {'':<{width}}    fallbacks: {', '.join(r['fallbacks'])}")
    if report["message"]:
        print()
        print(report["message"])
    elif not report["ok"]:
        print()
        if any(not r.get("key_ok", True) for r in report["models"]):
            print("Some role's model has no API key: export it in the shell that runs cowork (only its name is "
                  "shown here, never its value), or choose another model with COWORK_MODEL.")
        if any(r.get("server_ok") is False for r in report["models"]):
            print("Some role's model server does not answer: start it (Ollama: `ollama serve`), or point "
                  "COWORK_API_BASE (or `[model] api_base` in cowork.toml, or `api_base:` in the role file) at one "
                  "that runs.")


@models_app.command("stop-local")
def stop_local() -> None:
    """Stop the shared embedded-model server if one is running."""
    from cowork.engines.detect import local_state_dir
    from cowork.engines.local_model import stop_local_server

    print("stopped the embedded model server" if stop_local_server(local_state_dir())
          else "the embedded model server was not running")


@app.command()
def demo(directory: Optional[Path] = typer.Option(None, "--dir", help="make the demo team here (default: a temp dir)"),
         keep: bool = typer.Option(False, "--keep", help="keep the demo team's directory afterwards"),
         as_json: bool = JsonOpt) -> None:
    """Make a scratch team repo and have the team do one small real task, start to merge, then report.

    Uses your configured model, or the embedded offline one. Exit 0 when every lane merged.
    """
    from cowork import demo as demo_mod

    def progress(line: str) -> None:
        if not as_json:
            print(line, flush=True)

    result = demo_mod.run_demo(directory, keep=keep or directory is not None, progress=progress,
                               env=dict(os.environ))
    emit(result.as_dict(), as_json, lambda _d: print(demo_mod.render_report(result)))
    if not result.ok:
        raise typer.Exit(EXIT_BAD_INPUT if result.bad_input else EXIT_FAILURE)
