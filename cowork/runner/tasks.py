"""Tasks: ids, briefs, plans turned into lanes, and a task's overall state as read from its lanes."""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from cowork import frontmatter
from cowork.errors import BadInput
from cowork.plan import Plan
from cowork.redact import redact
from cowork.store import Store
from cowork.store import lanes as lanes_db

MAX_INLINE = 20_000  # attachments up to this many characters are inlined in the brief; larger ones are listed
ACTIVE_LANE_STATES = {"queued", "running", "waiting-approval", "paused", "checking", "in-review", "merge-queue",
                      "merging"}
END_TASK_STATES = {"done", "failed", "rejected", "cancelled"}


def slugify(text: str, limit: int = 32) -> str:
    words = re.findall(r"[a-z0-9]+", text.lower())
    slug = ""
    for w in words:
        if len(slug) + len(w) + 1 > limit:
            break
        slug = f"{slug}-{w}" if slug else w
    return slug or "task"


def new_task_id(store: Store, ws, text: str) -> str:
    """`t<N>-<slug>`: N is one more than any task number in the store or in handoffs/."""
    numbers = [0]
    for row in store.all("SELECT id FROM tasks"):
        m = re.match(r"^t(\d+)-", row["id"])
        if m:
            numbers.append(int(m.group(1)))
    if ws.handoffs_dir.is_dir():
        for d in ws.handoffs_dir.iterdir():
            m = re.match(r"^t(\d+)-", d.name)
            if m:
                numbers.append(int(m.group(1)))
    return f"t{max(numbers) + 1}-{slugify(redact(text))}"  # ids become branch names: never a secret


def brief_text(task_id: str, text: str, *, to: str, attachments: list[Path] = (), origin: str = "human",
               root: Path | None = None) -> str:
    """The brief.md of a task: front matter, the request, and its attachments (inlined when small and text)."""
    listed, inlined = [], []
    for path in attachments:
        path = Path(path)
        if not path.is_file():
            raise BadInput(f"attachment {path} is not a file")
        shown = str(path.resolve().relative_to(root)) if root and path.resolve().is_relative_to(root) else str(path)
        try:
            content = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            content = None
        if content is not None and len(content) <= MAX_INLINE:
            inlined.append(f"### {shown}\n\n````\n{content.rstrip()}\n````\n")
        else:
            listed.append(f"- {shown} ({path.stat().st_size} bytes, not inlined)")
    front = {"cowork": "brief/v1", "task": task_id, "from": origin, "to": to,
             "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    body = f"# {first_line(text)}\n\n{text.strip()}\n"
    if inlined or listed:
        body += "\n## Attachments\n\n" + "\n".join(inlined + listed) + "\n"
    return frontmatter.join(front, body)


def first_line(text: str, limit: int = 80) -> str:
    line = next((ln.strip() for ln in text.strip().splitlines() if ln.strip()), "task")
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def add_plan_lanes(store: Store, task_id: str, plan: Plan) -> None:
    """Insert the plan's lanes (in dependency order) as queued lanes of the task."""
    with store.tx():
        for lane_id in plan.order():
            spec = plan.lane(lane_id)
            if lanes_db.get_lane(store, task_id, lane_id) is None:
                lanes_db.add_lane(store, task_id, spec.id, spec.role, spec.goal, depends_on=spec.depends_on,
                                  checks=spec.checks, actor="runner")


def lanes(store: Store, task: str | None = None) -> list[dict]:
    """Every lane (of one task), oldest first, with its age in seconds."""
    rows = lanes_db.list_lanes(store, task)
    t = time.time()
    for r in rows:
        r["age_s"] = round(t - (r["started_at"] or r["created_at"]), 1)
    return rows


@dataclass
class TaskState:
    """A task's state as its lanes say: still running, or ended (ok only if every work lane merged)."""

    task: str
    state: str
    ended: bool
    ok: bool
    counts: dict


def task_state(store: Store, task_id: str) -> TaskState:
    row = lanes_db.get_task(store, task_id)
    if row is None:
        raise BadInput(f"no task {task_id}", hint="see `cowork lanes` or `cowork status`")
    rows = lanes_db.list_lanes(store, task_id)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    ended = row["state"] in END_TASK_STATES
    ok = row["state"] == "done"
    return TaskState(task_id, row["state"], ended, ok, counts)


RETRYABLE = {"failed", "blocked", "cancelled"}


def retry_lane(store: Store, task: str, lane: str, *, by: str, note: str | None = None) -> list[str]:
    """Send a lane that ended without merging back to its role, as a human's decision: it resumes its own
    conversation (the journal) with a note saying why it stopped, gets fresh check retries, and its task runs again;
    lanes cancelled because it did not merge are queued with it. One commit. Returns the lanes queued.

    Raises:
        BadInput: no such lane, or it has not ended that way (running, merged, ...).
    """
    with store.tx():
        row = lanes_db.get_lane(store, task, lane)
        if row is None:
            raise BadInput(f"no lane {lane} in task {task}", hint=f"`cowork lanes --task {task}` lists its lanes")
        if row["state"] not in RETRYABLE:
            raise BadInput(f"lane {task}/{lane} is {row['state']}: only a failed, blocked or cancelled lane is retried",
                           hint="`cowork lanes` shows where it is")
        from cowork.team.budgets import blocked_by_budget

        if blocked_by_budget(row["error"]):  # it would stop at the same cap at once
            raise BadInput(f"lane {task}/{lane} stopped at a budget cap: {row['error'][:200]}",
                           hint="`cowork budget raise` (see `cowork budget`) queues it again")
        by_id = {r["id"]: r for r in lanes_db.list_lanes(store, task)}
        gone = [d for d in row["depends_on"] or [] if by_id.get(d, {}).get("state") == "reverted"]
        if row["state"] == "cancelled" and gone:  # the work it builds on left main: nothing to resume on
            raise BadInput(f"lane {task}/{lane} builds on {', '.join(gone)}, which was reverted",
                           hint="that work is gone from the target: delegate the change again")
        stuck = [d for d in row["depends_on"] or [] if by_id.get(d, {}).get("state") in RETRYABLE]
        if row["state"] == "cancelled" and stuck:  # it would be cancelled again at once
            raise BadInput(f"lane {task}/{lane} waits on {', '.join(stuck)}, which did not merge",
                           hint=f"`cowork retry {task}/{stuck[0]}` sends that back, and {lane} runs after it")
        why = (row["error"] or "it stopped").strip()
        text = (f"A human ({by}) has sent this lane back to you after it ended ({row['state']}): {why[:1500]}"
                + (f"\n\nTheir note: {note}" if note else "") + "\n\nPick up from where you were and finish the goal.")
        lanes_db.set_lane_state(store, task, lane, "queued", actor=by, detail=f"retried by {by}", error=None,
                                feedback=text, check_failures=0)
        queued = [lane]
        for dep in lanes_db.list_lanes(store, task):  # cancelled for want of this lane's merge: they may run now
            if dep["state"] == "cancelled" and lane in (dep["depends_on"] or []):
                lanes_db.set_lane_state(store, task, dep["id"], "queued", actor=by, detail=f"{lane} retried")
                queued.append(dep["id"])
        store.event("lane.retried", f"{task}/{lane} sent back to {row['role']} by {by}" + (f": {note}" if note else ""),
                    actor=by, task=task, lane=lane, role=row["role"], data={"note": note, "was": row["state"]})
        if lanes_db.get_task(store, task)["state"] != "running":
            lanes_db.set_task_state(store, task, "running", actor=by)
    return queued
