"""The command engine: an external agent CLI (Claude Code, Codex, Aider, a script) run in the lane's worktree.

The role's `command` argv runs with `{goal}` replaced by the lane's goal (plus any feedback), its output goes to
`.cowork/logs/<task>/<lane>.log`, and while the lane is paused its whole process group is stopped (SIGSTOP) and
continued (SIGCONT) after. Its packet is the one it wrote at `handoffs/<task>/<lane>.md` if valid and the command
exited 0, else cowork builds one from its exit status, output and diff. A run may be given a timeout (the role's `timeout_minutes`, else
`[policy] command_timeout_minutes`): past it the group gets SIGTERM, then SIGKILL, and the lane fails.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

from cowork.engines.llm import LaneOutcome
from cowork.runner.journal import Journal
from cowork.procs import tracked
from cowork.redact import redact

POLL_S = 0.1
TAIL = 3000
TERM_GRACE_S = 2.0


@dataclass(frozen=True)
class Timeout:
    """How long one run of the command may take, time paused not counted, and where that is set (for the error)."""

    seconds: float
    source: str


def timeout_for(role: Any, settings: Any) -> Timeout | None:
    """The role's `timeout_minutes`, else the team's `[policy] command_timeout_minutes`, else None (no limit)."""
    if role.timeout_minutes is not None:
        return Timeout(role.timeout_minutes * 60, f"timeout_minutes: {role.timeout_minutes:g} of role {role.name}")
    team = settings.policy.command_timeout_minutes
    return Timeout(team * 60, f"[policy] command_timeout_minutes = {team:g}") if team is not None else None


def argv_for(command: list[str], goal: str) -> list[str]:
    return [part.replace("{goal}", goal) for part in command]


def mcp_argv(ctx: Any) -> list[str]:
    """The argv that serves the team to this lane's external agent over MCP on stdio (`cowork mcp serve`). The lane
    is in the argv, not only the environment: agent CLIs often start MCP servers with a scrubbed environment."""
    return [sys.executable, "-m", "cowork", "mcp", "serve", "-C", str(ctx.ws.root), "--task", ctx.task_id,
            "--lane", ctx.lane_id, "--role", ctx.role.name]


async def run_command_lane(ctx: Any, journal: Journal, *, log_path: Path, notes: list[str] | None = None,
                           is_paused: Callable[[], bool] | None = None,
                           on_pause: Callable[[bool], Awaitable[None] | None] | None = None,
                           timeout: Timeout | None = None) -> LaneOutcome:
    """Run the role's command once for this lane (again, after feedback) and report how it ended.

    Args:
        ctx: the lane's LaneCtx.
        log_path: where stdout and stderr go (appended).
        notes: feedback from checks, review or conflicts, appended to the goal.
        is_paused: polled while the command runs; True stops the process group until it turns False.
        on_pause: told True when the process was stopped for a pause and False when continued.
        timeout: the longest the command may run (time stopped for a pause not counted); past it the lane fails,
            with a `lane.timed_out` event, and `LaneOutcome.timed_out` set.
    """
    journal.recover()
    goal = ctx_goal = _goal(ctx)
    if notes:
        goal = ctx_goal + "\n\nFeedback on your previous attempt:\n" + "\n\n".join(notes)
    argv = argv_for(ctx.role.command, goal)
    env = {**os.environ, "COWORK_TASK": ctx.task_id, "COWORK_LANE": ctx.lane_id, "COWORK_ROLE": ctx.role.name,
           "COWORK_WORKTREE": str(ctx.worktree), "COWORK_ROOT": str(ctx.ws.root),
           "COWORK_MCP_COMMAND": json.dumps(mcp_argv(ctx))}
    if any(s.kind == "tool" and s.state == "interrupted" for s in journal.steps):
        env["COWORK_RESUMED"] = "1"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    step = journal.start("tool", "command", {"argv": argv})
    with open(log_path, "ab") as log:
        log.write(f"$ {' '.join(argv)}\n".encode())
        log.flush()
        try:
            proc = await asyncio.create_subprocess_exec(*argv, cwd=str(ctx.worktree), env=env,
                                                        stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
                                                        start_new_session=True)
        except OSError as exc:
            journal.finish(step, {"error": str(exc)}, ok=False)
            return LaneOutcome("failed", error=f"lane {ctx.task_id}/{ctx.lane_id}: cannot start {argv[0]}: {exc}")
        with tracked(ctx.ws.state_dir, proc.pid, f"`{argv[0]}` of {ctx.task_id}/{ctx.lane_id}"):
            code, timed_out = await _supervise(proc, is_paused, on_pause, timeout.seconds if timeout else None)
    tail = _tail(log_path)
    journal.finish(step, {"exit": code, "tail": tail, **({"timed_out": True} if timed_out else {})},
                   ok=code == 0 and not timed_out)
    log = ctx.ws.rel(log_path)
    last = f"Last output:\n\n```\n{tail.strip()[-1500:]}\n```"
    if timed_out:
        return _timed_out(ctx, argv[0], timeout, log, last)
    status = "done" if code == 0 else "failed"
    finish = {"status": status, "summary": f"`{ctx.role.command[0]}` exited with {code}.\n\n{last}",
              "artifacts": [f"log: {log}"]}
    return LaneOutcome(status, finish, None if code == 0 else f"lane {ctx.task_id}/{ctx.lane_id}: `{argv[0]}` "
                       f"exited with {code}; its output is in {log}")


def _timed_out(ctx: Any, program: str, timeout: Timeout, log: str, last: str) -> LaneOutcome:
    """The outcome of a run stopped at its timeout, and the `lane.timed_out` event saying so."""
    ran = _duration(timeout.seconds)
    error = (f"lane {ctx.task_id}/{ctx.lane_id}: `{program}` timed out after {ran} ({timeout.source}) and was "
             f"stopped; its output is in {log}")
    ctx.store.event("lane.timed_out", error, actor="runner", task=ctx.task_id, lane=ctx.lane_id, role=ctx.role.name,
                    data={"program": program, "timeout_s": timeout.seconds, "source": timeout.source, "log": log})
    finish = {"status": "failed", "summary": f"`{ctx.role.command[0]}` was stopped after running {ran}, its timeout "
              f"({timeout.source}).\n\n{last}", "artifacts": [f"log: {log}"],
              "open_risks": ["the agent was stopped mid-run: what it changed may be incomplete"],
              "next": [f"raise the timeout ({timeout.source}) or narrow the goal, then `cowork retry "
                       f"{ctx.task_id}/{ctx.lane_id}`"]}
    return LaneOutcome("failed", finish, error, timed_out=True)


def _duration(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:.3g}s"


def _goal(ctx: Any) -> str:
    row = ctx.store.one("SELECT goal FROM lanes WHERE task_id=? AND id=?", (ctx.task_id, ctx.lane_id))
    return row["goal"] if row else ""


async def _supervise(proc: asyncio.subprocess.Process, is_paused, on_pause,
                     timeout_s: float | None) -> tuple[int, bool]:
    """Wait for the process, stopping its group while paused. Returns its exit code (-signal if killed) and whether
    it was stopped at its timeout. When it ends, what it left running in its group (a dev server, `sleep &`) is
    killed: the lane's end is the agent's end, and nothing would stop those later (the group's note goes with the
    leader)."""
    try:
        return await _wait(proc, is_paused, on_pause, timeout_s)
    finally:
        if proc.returncode is None:  # cancelled: it was sent SIGTERM; a moment to save its work, then SIGKILL
            try:
                await asyncio.wait_for(asyncio.shield(proc.wait()), TERM_GRACE_S)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                pass
        _signal(proc, signal.SIGKILL)


async def _wait(proc: asyncio.subprocess.Process, is_paused, on_pause,
                timeout_s: float | None) -> tuple[int, bool]:
    stopped = False
    loop = asyncio.get_running_loop()
    ran, since = 0.0, loop.time()  # time run so far, not counting time stopped for a pause
    try:
        while True:
            try:
                return await asyncio.wait_for(proc.wait(), POLL_S), False
            except asyncio.TimeoutError:
                pass
            now = loop.time()
            if not stopped:
                ran += now - since
            since = now
            want = bool(is_paused and is_paused())
            if want != stopped:
                _signal(proc, signal.SIGSTOP if want else signal.SIGCONT)
                stopped = want
                if on_pause:
                    res = on_pause(want)
                    if asyncio.iscoroutine(res):
                        await res
            if timeout_s and not stopped and ran > timeout_s:
                return await _terminate(proc), True
    except asyncio.CancelledError:
        _signal(proc, signal.SIGCONT)
        _signal(proc, signal.SIGTERM)
        raise


async def _terminate(proc: asyncio.subprocess.Process) -> int:
    """SIGTERM to the group, TERM_GRACE_S to save its work and exit, then SIGKILL. Returns the exit code."""
    _signal(proc, signal.SIGTERM)
    try:
        return await asyncio.wait_for(asyncio.shield(proc.wait()), TERM_GRACE_S)
    except asyncio.TimeoutError:
        _signal(proc, signal.SIGKILL)
        return await proc.wait()


def _signal(proc: asyncio.subprocess.Process, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(path: Path) -> str:
    """The end of the agent's log, masked, from its first whole line: it goes into the journal and (cut again) the
    packet, so it is masked before any cut, and a line cut by the start of the window is left out."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - TAIL))
            cut = f.tell() > 0
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    if cut:  # (one long line, say a JSON result, is kept whole)
        text = text.partition("\n")[2] or text
    return redact(text)
