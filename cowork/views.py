"""Read-only views of a team for people: status, lanes and the timeline. Shared by the CLI and the TUI.

Plain SQL over the store, so any process can read while runners write.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterator

from cowork.gitops.git import rev
from cowork.store import Store, day
from cowork.workspace import Workspace

MERGE_LOCK = "merge"
PAUSE_ALL = "pause"


def _settings(ws: Workspace):
    from cowork.config import load_settings

    return load_settings(ws.config_path, display=ws.rel(ws.config_path))


def merge_lock(store: Store) -> dict | None:
    """The merge lock's holder, or None when nobody holds it: `expired` (its lease ran out) and `gone` (its process
    ended) both mean the next taker takes it (`cowork.gitops.lock.describe`)."""
    from cowork.gitops.lock import lock_row

    d = lock_row(store, MERGE_LOCK)
    if d is None:
        return None
    return {"holder": d["holder"], "since": d["acquired_at"], "lease_until": d["lease_until"],
            "expired": d["expired"], "gone": d["gone"]}


def pause_flags(store: Store) -> tuple[dict | None, list[dict]]:
    """(the pause-all flag or None, the task and lane pause flags)."""
    rows = store.flags(PAUSE_ALL)
    all_, scoped = None, []
    for r in rows:
        value = r["value"] if isinstance(r["value"], dict) else {}
        flag = {"key": r["key"], "by": r["set_by"], "since": r["set_at"], "reason": value.get("reason") or ""}
        if r["key"] == PAUSE_ALL:
            all_ = flag
        elif r["key"].startswith(PAUSE_ALL + ":"):
            flag["scope"] = r["key"].split(":", 1)[1]
            scoped.append(flag)
    return all_, scoped


def pending_approvals(store: Store) -> list[dict]:
    rows = store.all("SELECT id, task_id, lane_id, role, tool, action, why, created_at, expires_at FROM approvals "
                     "WHERE state='pending' ORDER BY id")
    for r in rows:
        try:
            r["action"] = json.loads(r["action"])
        except (TypeError, ValueError):
            pass
    return rows


def spend(store: Store, on_day: str | None = None) -> dict:
    """Tokens and USD recorded in `costs` on one UTC day (default today)."""
    on_day = on_day or day()
    row = store.one("SELECT COALESCE(SUM(usd),0) AS usd, COALESCE(SUM(tokens_in),0) AS tokens_in, "
                    "COALESCE(SUM(tokens_out),0) AS tokens_out FROM costs WHERE day=?", (on_day,))
    return {"day": on_day, **row}


def team_status(ws: Workspace, store: Store, settings: Any = None) -> dict:
    """Everything `cowork status` shows: team, repo, main's head, pause, merge lock, lanes, approvals, spend.

    Args:
        settings: TeamSettings; loaded from cowork.toml when omitted.
    """
    settings = settings or _settings(ws)
    target = settings.merge.target
    paused, scoped = pause_flags(store)
    lanes = {r["state"]: r["n"] for r in store.all("SELECT state, COUNT(*) AS n FROM lanes GROUP BY state ORDER BY state")}
    tasks = {r["state"]: r["n"] for r in store.all("SELECT state, COUNT(*) AS n FROM tasks GROUP BY state ORDER BY state")}
    approvals = pending_approvals(store)
    from cowork.gitops.checkout import detached_here
    from cowork.runner.lease import orphaned
    try:
        from cowork.team.budgets import BUDGET_EXCEEDED
    except ImportError:  # the team layer is optional, as elsewhere in the core
        BUDGET_EXCEEDED = "budget exceeded: "

    waiting = store.all("SELECT id, title FROM tasks WHERE state='awaiting-approval' ORDER BY created_at")
    return {
        "team": settings.name,
        "root": str(ws.root),
        "target": target,
        "head": rev(ws.root, f"refs/heads/{target}"),
        "paused": paused,
        "paused_scopes": scoped,
        "merge_lock": merge_lock(store),
        "merge_queue": store.scalar("SELECT COUNT(*) FROM merge_queue WHERE state='waiting'", default=0),
        "tasks": tasks,
        "awaiting_approval": waiting,  # plans nobody has decided on: `cowork approve TASK` / `cowork reject TASK`
        "no_runner": orphaned(store),  # running tasks whose runner is gone: `cowork resume`
        "at_budget_cap": [f"{r['task_id']}/{r['id']}" for r in store.all(  # `cowork budget raise` lets them go on
            "SELECT task_id, id FROM lanes WHERE state='blocked' AND error LIKE ? ORDER BY task_id, id",
            (BUDGET_EXCEEDED + "%",))],
        "checkout": detached_here(ws, target),  # the root checkout cowork detached, while it stays detached
        "lanes": lanes,
        "pending_approvals": approvals,
        "spend_today": {**spend(store), "usd_cap": settings.budget.usd_per_day},
        "last_event_id": store.scalar("SELECT MAX(id) FROM events", default=0),
    }


def lane_rows(store: Store, task: str | None = None) -> list[dict]:
    """One row per lane (oldest task first), with its task's title and state; depends_on decoded."""
    sql = ("SELECT l.task_id, t.title AS task_title, t.state AS task_state, l.id AS lane_id, l.role, l.kind, l.state, "
           "l.goal, l.depends_on, l.branch, l.step_no, l.attempts, l.tokens_in, l.tokens_out, l.usd, l.packet_path, "
           "l.error, l.created_at, l.started_at, l.ended_at, l.updated_at "
           "FROM lanes l LEFT JOIN tasks t ON t.id = l.task_id")
    params: tuple = ()
    if task:
        sql += " WHERE l.task_id = ?"
        params = (task,)
    rows = store.all(sql + " ORDER BY t.created_at, l.task_id, l.created_at, l.id", params)
    for r in rows:
        try:
            r["depends_on"] = json.loads(r["depends_on"] or "[]")
        except ValueError:
            r["depends_on"] = []
    return rows


# -- what a lane is doing -------------------------------------------------------------------------------------------

# A journal step's columns as `doing` reads them. An external agent CLI's run (engine: command) is the tool step
# "command"; its program is the first word of the argv it was started with (the CASE leaves other inputs unparsed).
STEP_COLUMNS = ("id, task_id, lane_id, kind, name, state, started_at, CASE WHEN kind='tool' AND name='command' "
                "THEN json_extract(input, '$.argv[0]') END AS program")


def doing(step: dict) -> tuple[str, float | None]:
    """What a journal step (STEP_COLUMNS) is, and when it started while it still runs (else None): the model, the
    tool or the check, and for an external agent CLI its program (`claude`), not "command"."""
    name = Path(step["program"]).name if step.get("program") else step["name"]
    return name, step["started_at"] if step["state"] == "started" else None


def latest_steps(store: Store, task: str | None = None) -> dict[tuple[str, str], dict]:
    """Each lane's latest journal step (STEP_COLUMNS), by (task, lane)."""
    where, params = ("WHERE task_id = ? ", (task,)) if task else ("", ())
    rows = store.all(f"SELECT {STEP_COLUMNS} FROM steps WHERE (task_id, lane_id, seq) IN "
                     f"(SELECT task_id, lane_id, max(seq) FROM steps {where}GROUP BY task_id, lane_id)", params)
    return {(r["task_id"], r["lane_id"]): r for r in rows}


def step_text(state: str, step_no: int, doing: str, since: float | None, now: float,
              width: int | None = None) -> str:
    """A lane's step as mission control and `cowork lanes` show it: `#6 run`, its model calls and what it did last.
    A lane without a model call has no count to give (an external agent CLI's lane never has one, an llm lane none
    before its first reply): what it is doing and, while that runs, for how long (`claude 12m`).
    `width`: at most this many characters, the step's name cut (…) so that the number and the time stay."""
    from cowork.store.lanes import FINAL_LANE_STATES

    head = f"#{step_no}" if step_no else ""
    tail = "" if step_no or since is None or state in FINAL_LANE_STATES else elapsed(now - since)
    if width is not None:
        room = max(1, width - len(head) - len(tail) - bool(head) - bool(tail))
        doing = doing if len(doing) <= room else doing[:room - 1] + "…"
    return " ".join(part for part in (head, doing, tail) if part)  # a step left `started` by a dead runner: no time


def elapsed(seconds: float) -> str:
    """A compact duration: 42s, 12m, 3h05, 2d."""
    secs = max(0, int(seconds))
    if secs < 60:
        return f"{secs}s"
    if secs < 3600:
        return f"{secs // 60}m"
    if secs < 86400:
        return f"{secs // 3600}h{(secs % 3600) // 60:02d}"
    return f"{secs // 86400}d"


def recent_events(store: Store, n: int = 50, task: str | None = None, lane: str | None = None) -> list[dict]:
    """The newest `n` events for a task/lane, oldest first."""
    return store.last_events(n, task=task, lane=lane)


def follow_events(store: Store, after: int, task: str | None = None, lane: str | None = None,
                  interval: float = 0.2, until: float | None = None) -> Iterator[dict]:
    """Yield events with id > `after` as they are appended, polling every `interval` seconds.

    Args:
        until: stop at this time.time() (None: follow forever; the caller stops on Ctrl-C).
    """
    while until is None or time.time() < until:
        rows = store.events(after=after, task=task, lane=lane)
        for row in rows:
            after = row["id"]
            yield row
        if not rows:
            time.sleep(interval)
