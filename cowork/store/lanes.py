"""Tasks and lanes rows: creation, state changes (each one an event), and reads shared by every process."""
from __future__ import annotations

import json
from typing import Any

from cowork.redact import redact
from cowork.store.store import Store, now

LANE_STATES = (
    "queued", "running", "waiting-approval", "paused", "checking", "in-review", "merge-queue", "merging",
    "merged", "done", "failed", "blocked", "cancelled", "reverted",
)
FINAL_LANE_STATES = {"merged", "done", "failed", "cancelled", "reverted"}
TASK_STATES = ("planning", "awaiting-approval", "running", "done", "failed", "rejected", "cancelled")


def create_task(store: Store, task_id: str, title: str, *, origin: str = "human", base: str | None = None,
                state: str = "planning") -> None:
    t, title = now(), redact(title)
    store.execute(
        "INSERT INTO tasks(id, title, state, origin, base, created_at, updated_at) VALUES (?,?,?,?,?,?,?)",
        (task_id, title, state, origin, base, t, t),
    )
    store.event("task.created", f"task {task_id}: {title}", actor=origin, task=task_id)


def set_task_state(store: Store, task_id: str, state: str, *, actor: str = "runner", error: str | None = None) -> None:
    assert state in TASK_STATES, state
    store.execute("UPDATE tasks SET state=?, error=COALESCE(?, error), updated_at=? WHERE id=?",
                  (state, error, now(), task_id))
    kind = {"done": "task.done", "failed": "task.failed", "rejected": "task.rejected"}.get(state, "task.state")
    store.event(kind, f"task {task_id} {state}" + (f": {error}" if error else ""), actor=actor, task=task_id,
                data={"state": state})


def get_task(store: Store, task_id: str) -> dict | None:
    return store.one("SELECT * FROM tasks WHERE id=?", (task_id,))


def add_lane(store: Store, task_id: str, lane_id: str, role: str, goal: str, *, depends_on: list[str] | None = None,
             kind: str = "work", parent_lane: str | None = None, depth: int = 0, checks: list[str] | None = None,
             actor: str = "runner") -> None:
    """Insert a queued lane. Lanes may be added while a task runs (delegation, consults, reviews).

    The goal is redacted: a secret pasted into a request never reaches the store or the model.
    """
    t, goal = now(), redact(goal)
    store.execute(
        "INSERT INTO lanes(task_id, id, role, goal, depends_on, kind, parent_lane, depth, checks, branch, "
        "created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        (task_id, lane_id, role, goal, json.dumps(depends_on or []), kind, parent_lane, depth,
         json.dumps(checks) if checks is not None else None, f"cowork/{task_id}/{lane_id}", t, t),
    )
    store.event("lane.state", f"{task_id}/{lane_id} queued ({role}): {goal[:120]}", actor=actor, task=task_id,
                lane=lane_id, role=role, data={"state": "queued", "kind": kind, "depends_on": depends_on or []})


def set_lane_state(store: Store, task_id: str, lane_id: str, state: str, *, actor: str = "runner",
                   detail: str | None = None, **fields: Any) -> None:
    """Move a lane to `state` (and update any other columns given), recording a `lane.state` event."""
    assert state in LANE_STATES, state
    cols = {"state": state, "updated_at": now(), **fields}
    if state == "running":
        cols.setdefault("started_at", now())
    if state in FINAL_LANE_STATES:
        cols.setdefault("ended_at", now())
    sets = ", ".join(f"{c}=?" for c in cols)
    with store.tx():
        row = store.one("SELECT role, state, error FROM lanes WHERE task_id=? AND id=?", (task_id, lane_id))
        if row is None:
            raise KeyError(f"no lane {task_id}/{lane_id}")
        store.execute(f"UPDATE lanes SET {sets} WHERE task_id=? AND id=?", (*cols.values(), task_id, lane_id))
        # a state set again is news only with a new reason (a lane the budget stopped is then ended for that reason)
        if row["state"] != state or (detail and detail != (row["error"] or "")[:len(detail)]):
            store.event("lane.state", f"{task_id}/{lane_id} {row['state']} -> {state}" + (f": {detail}" if detail else ""),
                        actor=actor, task=task_id, lane=lane_id, role=row["role"],
                        data={"from": row["state"], "state": state})


def update_lane(store: Store, task_id: str, lane_id: str, **fields: Any) -> None:
    """Update lane columns without a state change (no event)."""
    fields["updated_at"] = now()
    sets = ", ".join(f"{c}=?" for c in fields)
    store.execute(f"UPDATE lanes SET {sets} WHERE task_id=? AND id=?", (*fields.values(), task_id, lane_id))


def get_lane(store: Store, task_id: str, lane_id: str) -> dict | None:
    row = store.one("SELECT * FROM lanes WHERE task_id=? AND id=?", (task_id, lane_id))
    return _decode(row) if row else None


def list_lanes(store: Store, task_id: str | None = None, states: list[str] | None = None) -> list[dict]:
    sql, params = "SELECT * FROM lanes WHERE 1=1", []
    if task_id:
        sql += " AND task_id=?"
        params.append(task_id)
    if states:
        sql += f" AND state IN ({','.join('?' * len(states))})"
        params.extend(states)
    return [_decode(r) for r in store.all(sql + " ORDER BY created_at, id", tuple(params))]


def _decode(row: dict) -> dict:
    row["depends_on"] = json.loads(row["depends_on"] or "[]")
    row["checks"] = json.loads(row["checks"]) if row.get("checks") else None
    return row
