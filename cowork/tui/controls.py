"""Mission control's controls: each one makes the same core calls as its CLI command, and says what happened.

They run in worker threads (they touch the store and git); `by` is `messages.human_id(ws.root)`, as in the CLI.
"""
from __future__ import annotations

from cowork.runner import control
from cowork.team import approvals, channel


def pause_all(ws, store, *, by: str, reason: str | None = None) -> str:
    """`cowork pause [--reason R]`."""
    control.pause(store, by=by, reason=reason)
    return "paused: no lane takes another step until you unpause"


def unpause_all(ws, store, *, by: str) -> str:
    """`cowork unpause`."""
    return "unpaused: lanes continue" if control.unpause(store, by=by) else "was not paused"


def pause_lane(ws, store, task: str, lane: str, *, by: str, reason: str | None = None) -> str:
    """`cowork pause --lane TASK/LANE [--reason R]`."""
    control.pause(store, by=by, reason=reason, task=task, lane=lane)
    return f"paused {task}/{lane}: it takes no further step until you unpause it"


def unpause_lane(ws, store, task: str, lane: str, *, by: str) -> str:
    """`cowork unpause --lane TASK/LANE`."""
    return (f"unpaused {task}/{lane}" if control.unpause(store, by=by, task=task, lane=lane)
            else f"{task}/{lane} was not paused")


def approve(ws, store, approval_id: int, *, by: str, note: str | None = None) -> str:
    """`cowork approve ID [--note N]`."""
    approvals.approve(store, approval_id, by=by, note=note)
    return f"approved #{approval_id}"


def reject(ws, store, approval_id: int, *, by: str, reason: str) -> str:
    """`cowork reject ID --reason R`."""
    approvals.reject(store, approval_id, by=by, reason=reason)
    return f"rejected #{approval_id}: {reason}"


def say(ws, store, target: str, text: str, *, by: str) -> str:
    """`cowork say @ROLE|@team TEXT`: an idle role gets a one-lane task and a runner, as from the CLI."""
    from cowork.config import load_settings
    from cowork.roles import team_roles

    settings = load_settings(ws.config_path, display=ws.rel(ws.config_path))
    roles = team_roles(ws, settings, strict=False)  # as `cowork say`: a broken role file stops only a new task
    said = channel.say(ws, store, settings, roles, target, text, by=by, start=True)
    if said.task:
        from cowork.runner import launch

        pid = launch.start_detached(ws, [said.task])
        return f"{said.to} was idle: started task {said.task} (runner pid {pid})"
    if said.delivered_to:
        return f"message #{said.message_id} delivered to {', '.join(said.delivered_to)}"
    return f"message #{said.message_id} posted to {said.to} (no lane is running; it waits in their inbox)"
