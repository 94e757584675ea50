"""The team channel: messages between lanes, roles and humans, journaled in the store.

Lanes are addressed as "<task>/<lane>" in `from_lane` / `to_lane`, so a question can reach a live lane of another
task. A message with no `to_lane` reaches every lane of `to_role` (or of every role, for "team") in its task; a
message with no task (from a human) reaches every such lane that existed when it was sent. Bodies are redacted
before they are stored.
"""
from __future__ import annotations

import getpass
import json
import os
import re
import subprocess

from cowork.redact import redact
from cowork.store import Store, now
from cowork.store.store import loads

KINDS = ("ask", "tell", "answer", "delegate", "handoff", "human", "notify", "escalate")
LIVE = ("running",)


def qualified(task: str, lane: str) -> str:
    return f"{task}/{lane}"


def is_human(who: str | None) -> bool:
    """Whether a message's sender is a person: "human" or "human:<name>". Role names cannot hold ':', and a role
    cannot be named "human", so no agent passes for one (a role may still be called "human-factors")."""
    return who == "human" or str(who or "").startswith("human:")


def human_id(root=None) -> str:
    """`human:<git user.name or $USER>`: who a human is on the channel and in events (git config of `root`)."""
    name = None
    try:
        out = subprocess.run(["git", "config", "user.name"], capture_output=True, text=True, timeout=5,
                             cwd=str(root) if root else None)
        name = out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    if not name:
        try:
            name = os.environ.get("USER") or getpass.getuser()
        except Exception:  # noqa: BLE001 - no user database in some containers
            name = "unknown"
    return f"human:{name}"


def post(store: Store, *, kind: str, from_role: str, to_role: str, body: str, task: str | None = None,
         from_lane: str | None = None, to_lane: str | None = None, reply_to: int | None = None, depth: int = 0,
         thread: list | None = None, actor: str | None = None) -> int:
    """Journal one message (redacted) and its `message.sent` event. Returns the message id."""
    assert kind in KINDS, kind
    text = redact(body)
    # lane refs are "task/lane"; a bare lane id belongs to the message's task
    if from_lane and "/" not in from_lane and task:
        from_lane = qualified(task, from_lane)
    if to_lane and "/" not in to_lane and task:
        to_lane = qualified(task, to_lane)
    with store.tx():
        cur = store.execute(
            "INSERT INTO messages(task_id, kind, from_role, from_lane, to_role, to_lane, body, reply_to, thread, "
            "depth, state, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (task, kind, from_role, from_lane, to_role, to_lane, text, reply_to,
             json.dumps(thread) if thread is not None else None, depth, "new", now()))
        mid = cur.lastrowid
        store.wrote("messages")
        target = to_lane or to_role
        store.event("message.sent", f"{kind} #{mid} {from_role} -> {target}: {text[:200]}", actor=actor or from_role,
                    task=task, lane=(from_lane or "").split("/", 1)[-1] or None,
                    role=None if is_human(from_role) else from_role,
                    data={"id": mid, "kind": kind, "from": from_role, "to": to_role, "to_lane": to_lane,
                          "reply_to": reply_to})
    return mid


def get(store: Store, message_id: int) -> dict | None:
    row = store.one("SELECT * FROM messages WHERE id=?", (message_id,))
    if row:
        row["thread"] = loads(row["thread"], []) or []
    return row


def mark(store: Store, ids: list[int], state: str = "read") -> None:
    """Set messages' state (read never downgrades an answered or expired message)."""
    if not ids:
        return
    only_new = " AND state='new'" if state == "read" else ""
    store.execute(f"UPDATE messages SET state=?, read_at=COALESCE(read_at, ?) WHERE id IN "
                  f"({','.join('?' * len(ids))}){only_new}", (state, now(), *ids))


def inbox(store: Store, *, role: str | None = None, lane: str | None = None, unread_only: bool = True,
          limit: int = 200) -> list[dict]:
    """Messages addressed to a role (default: to humans) or to one lane ("task/lane"), oldest first."""
    sql, params = "SELECT * FROM messages WHERE 1=1", []
    if lane:
        sql += " AND to_lane=?"
        params.append(lane)
    elif role:
        sql += " AND (to_role=? OR to_role='team')"
        params.append(role)
    else:
        sql += " AND (to_role='human' OR to_role LIKE 'human:%' OR to_role='team')"
    if unread_only:
        sql += " AND state='new'"
    rows = store.all(sql + " ORDER BY id DESC LIMIT ?", (*params, limit))
    for r in rows:
        r["thread"] = loads(r["thread"], []) or []
    return rows[::-1]


def for_lane(store: Store, task: str, lane: str, role: str, after: int) -> list[dict]:
    """Messages a lane has not seen yet (id > `after`): sent to it, to its role or the team within its task, or
    (with no task, from a human) to its role or the team after the lane was created."""
    me = qualified(task, lane)
    row = store.one("SELECT created_at FROM lanes WHERE task_id=? AND id=?", (task, lane))
    since = row["created_at"] if row else 0.0
    rows = store.all(
        "SELECT * FROM messages WHERE id > ? AND (from_lane IS NULL OR from_lane != ?) AND ("
        " to_lane = ?"
        " OR (to_lane IS NULL AND to_role IN (?, 'team') AND task_id = ?)"
        " OR (to_lane IS NULL AND to_role IN (?, 'team') AND task_id IS NULL AND created_at >= ?)"
        ") ORDER BY id", (after, me, me, role, task, role, since))
    for r in rows:
        r["thread"] = loads(r["thread"], []) or []
    return rows


def answer_to(store: Store, ask_id: int) -> dict | None:
    return store.one("SELECT * FROM messages WHERE reply_to=? AND kind='answer' ORDER BY id LIMIT 1", (ask_id,))


def answer(store: Store, ask: dict, *, from_role: str, body: str, from_lane: str | None = None,
           actor: str | None = None) -> int | None:
    """Post the answer to question `ask` (a `messages` row) and mark it answered, unless it has an answer already:
    checked and written under the write lock, so a question answered at once by a human and an agent (or its
    consult lane) gets one answer. Returns the answer's id, or None when it was answered already."""
    thread = ask["thread"] if isinstance(ask["thread"], list) else loads(ask["thread"], [])
    with store.tx():
        if answer_to(store, ask["id"]):
            return None
        mid = post(store, kind="answer", from_role=from_role, from_lane=from_lane, to_role=ask["from_role"],
                   to_lane=ask["from_lane"], body=body, task=ask["task_id"], reply_to=ask["id"], thread=thread,
                   depth=ask["depth"], actor=actor)
        mark(store, [ask["id"]], "answered")
    return mid


def live_lanes(store: Store, role: str, *, prefer_task: str | None = None, exclude: str | None = None) -> list[dict]:
    """Running lanes of `role`, those of `prefer_task` first."""
    rows = store.all("SELECT * FROM lanes WHERE role=? AND state IN ('running') ORDER BY started_at", (role,))
    rows = [r for r in rows if qualified(r["task_id"], r["id"]) != exclude]
    rows.sort(key=lambda r: r["task_id"] != prefer_task)
    return rows


def waiting_on_ask(store: Store, lane_q: str) -> bool:
    """Whether a lane is blocked in an `ask` of its own (so it cannot answer anyone until it gets a reply)."""
    return store.scalar("SELECT 1 FROM messages WHERE kind='ask' AND from_lane=? AND state IN ('new','read') "
                        "LIMIT 1", (lane_q,)) is not None


# -- threads: the chain of asks and delegations that led to a lane, for cycle detection -------------------------

def normalize(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", (text or "").lower()))


def similar(a: str, b: str, threshold: float = 0.6) -> bool:
    """Whether two questions or goals are about the same thing (word overlap)."""
    na, nb = normalize(a), normalize(b)
    if not na or not nb:
        return False
    if na == nb or na in nb or nb in na:
        return True
    wa, wb = set(na.split()), set(nb.split())
    return len(wa & wb) / len(wa | wb) >= threshold


def origin_chain(store: Store, task: str, lane: str) -> list[list[str]]:
    """The chain of [from_role, to_role, text] links that created this lane (empty for a planned lane)."""
    row = store.one("SELECT thread FROM messages WHERE to_lane=? AND kind IN ('ask','delegate') ORDER BY id LIMIT 1",
                    (qualified(task, lane),))
    return (loads(row["thread"], []) or []) if row else []


def find_cycle(chain: list[list[str]], to_role: str, text: str) -> list[str] | None:
    """The earlier link that makes asking `to_role` about `text` a cycle, or None.

    A cycle is a chain that comes back to a role already in it about the same thing (A asks B asks A)."""
    for link in chain:
        if len(link) >= 3 and to_role in (link[0], link[1]) and similar(link[2], text):
            return link
    return None


def on_lane_finished(store: Store, lane_row: dict, packet=None) -> list[int]:
    """Hand a finished lane's result back to whoever asked for it. The runner calls this when any lane ends.

    A consult lane's summary answers the question that started it; a lane with a parent posts a `handoff`
    message to the parent lane with the packet's summary and path. Calling it twice posts nothing new.

    Args:
        lane_row: the lane's `lanes` row (task_id, id, role, kind, parent_lane, state, packet_path, error).
        packet: a `cowork.handoff.Packet`, the finish arguments as a dict, or None (no packet was written).
    """
    task, lane = lane_row["task_id"], lane_row["id"]
    me = qualified(task, lane)
    summary, status = _summary(lane_row, packet)
    path = lane_row.get("packet_path")
    out: list[int] = []
    if lane_row.get("kind") == "consult":
        ask = store.one("SELECT * FROM messages WHERE kind='ask' AND to_lane=? ORDER BY id LIMIT 1", (me,))
        if ask:
            body = summary if status in ("done", None) else f"(consult lane ended {status}) {summary}"
            mid = answer(store, ask, from_role=lane_row["role"], from_lane=me, body=body)
            out += [mid] if mid is not None else []
        return out
    parent = lane_row.get("parent_lane")
    if parent:
        if store.scalar("SELECT 1 FROM messages WHERE kind='handoff' AND from_lane=?", (me,)):
            return out
        parent_q = parent if "/" in parent else qualified(task, parent)
        prow = store.one("SELECT role FROM lanes WHERE task_id=? AND id=?", tuple(parent_q.split("/", 1)))
        body = (f"Lane {me} ({lane_row['role']}) ended: {status or lane_row.get('state')}.\n"
                f"Summary: {summary}" + (f"\nPacket: {path}" if path else ""))
        out.append(post(store, kind="handoff", from_role=lane_row["role"], from_lane=me,
                        to_role=prow["role"] if prow else "team", to_lane=parent_q, body=body, task=task,
                        depth=lane_row.get("depth") or 0))
    return out


def _summary(lane_row: dict, packet) -> tuple[str, str | None]:
    if packet is None:
        return (lane_row.get("error") or "no packet was written"), lane_row.get("state")
    if isinstance(packet, dict):
        return str(packet.get("summary") or "").strip() or "(empty summary)", packet.get("status")
    section = getattr(packet, "section", None)
    text = section("Summary") if section else str(packet)
    meta = getattr(packet, "meta", None)
    return (text.strip() or "(empty summary)"), getattr(meta, "status", None)
