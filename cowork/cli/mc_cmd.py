"""`cowork mc`: open mission control, the live Textual view and control surface of the team."""
from __future__ import annotations

from pathlib import Path

import typer

from cowork.cli.app import app
from cowork.cli.common import RootOpt, workspace


@app.command("mc")
def mc(
    root: Path = RootOpt,
    poll: float = typer.Option(0.1, "--poll", min=0.05, max=5.0, help="seconds between reads of the store"),
) -> None:
    """Mission control: lanes, timeline, approvals, channel, merge queue, pause-all and lane pauses, live.

    It only watches and controls: lanes keep running when it closes, and it can be opened from any terminal.
    """
    from cowork.tui.app import make_app

    make_app(workspace(root), poll_interval=poll).run()
