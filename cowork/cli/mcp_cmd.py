"""Commands: cowork mcp serve — the team as an MCP server for external agents."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cowork.cli.app import app
from cowork.cli.common import RootOpt

mcp_app = typer.Typer(help="The team as an MCP server, so any MCP-capable agent can join it.",
                      no_args_is_help=True, rich_markup_mode=None)
app.add_typer(mcp_app, name="mcp")


@mcp_app.command()
def serve(root: Optional[Path] = RootOpt,
          task: Optional[str] = typer.Option(None, "--task", help="serve as a lane of this task (env: COWORK_TASK)"),
          lane: Optional[str] = typer.Option(None, "--lane", help="serve as this lane (env: COWORK_LANE)"),
          role: Optional[str] = typer.Option(None, "--role", help="the lane's role (env: COWORK_ROLE)")) -> None:
    """Serve the team over MCP on stdio. As a lane (COWORK_TASK, COWORK_LANE and COWORK_ROLE, or --task/--lane/--role)
    it acts as that lane's role, through the lane's gateway; otherwise as a human observer with read tools and `say`."""
    import os

    from cowork import mcp_server

    # options win over the environment: agent CLIs often start MCP servers with a scrubbed environment
    given = {"COWORK_TASK": task, "COWORK_LANE": lane, "COWORK_ROLE": role}
    mcp_server.serve(root, env={**os.environ, **{k: v for k, v in given.items() if v}})
