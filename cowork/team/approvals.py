"""Approvals: a blocked action waits in the store for a human yes or no.

A request shows the exact action (command line, unified diff, full message), who asked and why. It survives
restarts: the same lane re-issuing the same call finds the same row (lane + tool + action hash) until its decision
has been handed back to the agent. Anything malformed reads as rejected (fail closed). Past its deadline a
pending request expires: the role's `escalate_to` is told and the lane is paused.

A request made by an llm lane's journal step records that step (`step_seq`). A lane resumed after a crash runs
the step again (`Journal.recover`), so it finds its own row: still pending, it waits on; decided while no runner
was alive, the decision is handed to the agent as if it had come in time (approved: the call runs; rejected: the
reason; expired: the lane pauses, as an unanswered request always does). One call of a lane is in flight at a
time, so when a lane asks anew, or resumes, its unused requests from other steps are orphans: a pending one is
`withdrawn` and a decided one is closed unused (`withdraw_stale`), so nothing stale expires later and pauses a
lane that has moved on.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

from cowork.errors import BadInput
from cowork.redact import redact, redact_obj
from cowork.store import Store, now
from cowork.store import lanes as lanes_db

STATES = ("pending", "approved", "rejected", "expired", "withdrawn")


def action_hash(tool: str, action: Any) -> str:
    blob = json.dumps([tool, action], sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _decode(row: dict) -> dict:
    try:
        row["action"] = json.loads(row["action"])
        bad = not isinstance(row["action"], dict)
    except (TypeError, ValueError):
        bad = True
    row["malformed"] = bad or row["state"] not in STATES
    row["decision"] = "rejected" if row["malformed"] else row["state"]
    return row


def find(store: Store, *, task: str, lane: str, tool: str, action: dict) -> dict | None:
    """The approval for this exact action of this lane whose decision the agent has not received yet."""
    row = store.one("SELECT * FROM approvals WHERE task_id=? AND lane_id=? AND tool=? AND action_hash=? "
                    "AND used_at IS NULL ORDER BY id DESC LIMIT 1", (task, lane, tool, action_hash(tool, action)))
    return _decode(row) if row else None


def request(store: Store, *, task: str, lane: str, role: str, tool: str, action: dict, why: str | None,
            timeout_s: float, step: int | None = None) -> int:
    """Create a pending approval (or return the existing one for the same lane, tool and action). Returns its id.

    `step`: the lane's journal step making the call. The row is that step's from then on, and the lane's unused
    approvals of other steps are withdrawn (see `withdraw_stale`)."""
    with store.tx():
        existing = find(store, task=task, lane=lane, tool=tool, action=action)
        if existing:
            aid = existing["id"]
            if step is not None and existing["step_seq"] != step:
                store.execute("UPDATE approvals SET step_seq=? WHERE id=?", (step, aid))
        else:
            t = now()
            cur = store.execute(
                "INSERT INTO approvals(task_id, lane_id, role, tool, action, why, state, created_at, expires_at, "
                "action_hash, step_seq) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (task, lane, role, tool, json.dumps(redact_obj(action), ensure_ascii=False), redact(why or ""),
                 "pending", t, t + timeout_s, action_hash(tool, action), step))
            aid = cur.lastrowid
            store.event("approval.requested", f"approval #{aid}: {role} wants {tool}: {summarize(tool, action)[:160]}",
                        actor=role, task=task, lane=lane, role=role, data={"id": aid, "tool": tool})
        if step is not None:
            withdraw_stale(store, task, lane, keep=aid, why=f"no call waits on it: the lane now waits on #{aid}")
    return aid


def asked_by(store: Store, task: str, lane: str, step: int) -> dict | None:
    """The approval the lane's journal step `step` is waiting on (or whose decision it has not received yet)."""
    row = store.one("SELECT * FROM approvals WHERE task_id=? AND lane_id=? AND step_seq=? AND used_at IS NULL "
                    "ORDER BY id DESC LIMIT 1", (task, lane, step))
    return _decode(row) if row else None


def withdraw(store: Store, approval_id: int, *, why: str) -> bool:
    """Withdraw one pending approval nobody will wait on (its lane ended). Returns whether it was pending."""
    row = store.one("SELECT id, task_id, lane_id, role, tool FROM approvals WHERE id=?", (approval_id,))
    t = now()
    with store.tx():
        n = store.execute("UPDATE approvals SET state='withdrawn', decided_by='cowork', note=?, decided_at=?, used_at=? "
                          "WHERE id=? AND state='pending'", (why, t, t, approval_id)).rowcount
        if n:
            store.event("approval.withdrawn", f"approval #{approval_id} ({row['role']} {row['tool']}) withdrawn: {why}",
                        actor="cowork", task=row["task_id"], lane=row["lane_id"], role=row["role"],
                        data={"id": approval_id, "state": "pending", "why": why})
    return n > 0


def withdraw_stale(store: Store, task: str, lane: str, *, keep: int | None, why: str) -> list[int]:
    """Close the lane's unused approvals asked by journal steps, but `keep` (the one its call in flight waits on):
    no call waits on them any more. A pending one becomes `withdrawn` (it can no longer be approved, and never
    expires); a decided one keeps its decision on record, closed unused. Returns their ids."""
    rows = store.all("SELECT id, state, role, tool FROM approvals WHERE task_id=? AND lane_id=? AND used_at IS NULL "
                     "AND step_seq IS NOT NULL AND id IS NOT ?", (task, lane, keep))
    if not rows:
        return []
    t = now()
    with store.tx():
        for r in rows:
            if r["state"] == "pending":
                store.execute("UPDATE approvals SET state='withdrawn', decided_by='cowork', note=?, decided_at=?, "
                              "used_at=? WHERE id=?", (why, t, t, r["id"]))
                summary = f"approval #{r['id']} ({r['role']} {r['tool']}) withdrawn: {why}"
            else:
                store.execute("UPDATE approvals SET used_at=? WHERE id=?", (t, r["id"]))
                summary = f"approval #{r['id']} ({r['role']} {r['tool']}, {r['state']}) closed unused: {why}"
            store.event("approval.withdrawn", summary, actor="cowork", task=task, lane=lane, role=r["role"],
                        data={"id": r["id"], "state": r["state"], "why": why})
    return [r["id"] for r in rows]


def summarize(tool: str, action: dict) -> str:
    """One line naming the action: the command, the file, the message."""
    if "command" in action:
        return str(action["command"])
    if "path" in action:
        return f"write {action['path']}"
    if "text" in action:
        return f"to {action.get('to', '?')}: {action['text']}"
    return json.dumps(action, ensure_ascii=False, default=str)


def get(store: Store, approval_id: int) -> dict:
    """One approval, decoded; `decision` is what the gateway acts on (malformed -> rejected).

    Raises:
        BadInput: no such approval.
    """
    row = store.one("SELECT * FROM approvals WHERE id=?", (approval_id,))
    if row is None:
        raise BadInput(f"no approval #{approval_id}", hint="see `cowork approvals`")
    return _decode(row)


def pending(store: Store) -> list[dict]:
    """Every approval waiting for a human, oldest first."""
    return [_decode(r) for r in store.all("SELECT * FROM approvals WHERE state='pending' ORDER BY id")]


def waiting(store: Store, settings, roles) -> dict:
    """Everything waiting for a human decision, as `cowork approvals --json` and the MCP tool `approvals` show it.
    Approvals past their deadline are expired first (escalated, their lanes paused), so none shows as pending.

    Returns:
        {"pending": [approval rows, oldest first], "awaiting_approval": `plans_waiting`}
    """
    expire_overdue(store, settings, roles)
    return {"pending": pending(store), "awaiting_approval": plans_waiting(store)}


def plans_waiting(store: Store) -> list[dict]:
    """{task_id, title, updated_at} of each task whose plan waits for `cowork approve TASK` / `cowork reject TASK`,
    oldest first."""
    return store.all("SELECT id AS task_id, title, updated_at FROM tasks WHERE state='awaiting-approval' "
                     "ORDER BY created_at")


def _decide(store: Store, approval_id: int, state: str, by: str, note: str | None) -> dict:
    row = get(store, approval_id)
    with store.tx():
        n = store.execute("UPDATE approvals SET state=?, decided_by=?, note=?, decided_at=? WHERE id=? AND "
                          "state='pending'", (state, by, redact(note or ""), now(), approval_id)).rowcount
        if n == 0:
            current = store.one("SELECT state, decided_by FROM approvals WHERE id=?", (approval_id,))
            raise BadInput(f"approval #{approval_id} is already {current['state']}"
                           + (f" (by {current['decided_by']})" if current.get("decided_by") else ""),
                           hint="a decision cannot be changed; the agent may ask again")
        verb = "approved" if state == "approved" else "rejected"
        store.event("approval.decided", f"approval #{approval_id} {verb} by {by}" + (f": {note}" if note else ""),
                    actor=by, task=row["task_id"], lane=row["lane_id"], role=row["role"],
                    data={"id": approval_id, "state": state, "note": note})
    return get(store, approval_id)


def approve(store: Store, approval_id: int, *, by: str, note: str | None = None) -> dict:
    """Approve a pending request. Raises BadInput if it is missing or already decided."""
    return _decide(store, approval_id, "approved", by, note)


def reject(store: Store, approval_id: int, *, by: str, reason: str) -> dict:
    """Reject a pending request; `reason` is required and goes back to the agent as the tool result. An unknown id
    or a decision already made is said before a missing reason."""
    if (not reason or not reason.strip()) and get(store, approval_id)["state"] == "pending":
        raise BadInput("a rejection needs a reason", hint="cowork reject ID --reason \"why not, and what instead\"")
    return _decide(store, approval_id, "rejected", by, (reason or "").strip())


def consume(store: Store, approval_id: int) -> None:
    """Mark a decision as handed back to the agent: the next identical call asks again."""
    store.execute("UPDATE approvals SET used_at=? WHERE id=? AND used_at IS NULL", (now(), approval_id))


def expire(store: Store, approval_id: int, settings, roles) -> bool:
    """Expire one pending approval: escalate to the role's `escalate_to` and pause its lane. Returns whether it
    was still pending."""
    from cowork.runner import control
    from cowork.team import messages

    row = get(store, approval_id)
    role = roles.roles.get(row["role"]) if roles is not None else None
    target = role.escalate_to if role is not None else "human"
    # one transaction: nobody (the agent polling its approval, a test, a crash) sees it expired while its lane
    # still runs or before the escalation is posted
    with store.tx():
        n = store.execute("UPDATE approvals SET state='expired', decided_by='cowork', decided_at=? WHERE id=? "
                          "AND state='pending'", (now(), approval_id)).rowcount
        if n == 0:
            return False
        store.event("approval.expired", f"approval #{approval_id} ({row['role']} {row['tool']}) expired unanswered",
                    actor="cowork", task=row["task_id"], lane=row["lane_id"], role=row["role"],
                    data={"id": approval_id})
        messages.post(store, kind="escalate", from_role=row["role"], to_role=target, task=row["task_id"],
                      from_lane=f"{row['task_id']}/{row['lane_id']}" if row["lane_id"] else None,
                      body=f"Approval #{approval_id} for {row['tool']} ({summarize(row['tool'], row['action'] if isinstance(row['action'], dict) else {})[:300]}) "
                           f"expired without a decision; lane {row['task_id']}/{row['lane_id']} is paused.",
                      actor="cowork")
        if row["task_id"] and row["lane_id"]:
            control.pause(store, by="cowork", reason=f"approval #{approval_id} expired", task=row["task_id"],
                          lane=row["lane_id"])
            lane = lanes_db.get_lane(store, row["task_id"], row["lane_id"])
            if lane and lane["state"] == "waiting-approval":
                lanes_db.set_lane_state(store, row["task_id"], row["lane_id"], "paused", actor="cowork",
                                        detail=f"approval #{approval_id} expired")
    return True


def expire_overdue(store: Store, settings, roles, at: float | None = None) -> list[int]:
    """Expire every pending approval past its deadline. Returns their ids."""
    t = now() if at is None else at
    ids = [r["id"] for r in store.all("SELECT id FROM approvals WHERE state='pending' AND expires_at IS NOT NULL "
                                      "AND expires_at <= ?", (t,))]
    return [i for i in ids if expire(store, i, settings, roles)]
