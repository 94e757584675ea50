"""Closing a task: `summary.md` (what each lane did, its merge commit and cost) committed on the merge target."""
from __future__ import annotations

import time

from cowork import frontmatter, handoff
from cowork.runner.tasks import ACTIVE_LANE_STATES
from cowork.store import lanes as lanes_db

ENDED_OK = {"merged", "done"}


def render_summary(task: dict, rows: list[dict], state: str, packets: dict[str, str], overview: str = "") -> str:
    """The markdown of summary.md (`overview`: a few sentences from the cheap model, when one is set)."""
    t_in = sum(r["tokens_in"] for r in rows)
    t_out = sum(r["tokens_out"] for r in rows)
    usd = round(sum(r["usd"] for r in rows), 6)
    front = {"cowork": "summary/v1", "task": task["id"], "status": state,
             "cost": {"tokens_in": t_in, "tokens_out": t_out, "usd": usd},
             "ended": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    table = ["| lane | role | kind | state | merge commit | tokens in/out | usd |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        table.append(f"| {r['id']} | {r['role']} | {r['kind']} | {r['state']} | {(r['merge_commit'] or '-')[:12]} "
                     f"| {r['tokens_in']}/{r['tokens_out']} | {r['usd']:.4f} |")
    parts = [f"# {task['title']}\n", f"Task {task['id']} ended **{state}**.\n"]
    if overview:
        parts.append(f"{overview.strip()}\n")
    parts.append("\n".join(table) + "\n")
    for r in rows:
        lines = [f"## {r['id']} ({r['role']}): {r['state']}"]
        if packets.get(r["id"]):
            lines.append(packets[r["id"]].strip())
        if r.get("error"):
            lines.append(f"Problem: {' '.join(r['error'].split())[:500]}")
        if r.get("packet_path"):
            lines.append(f"Packet: {r['packet_path']}")
        parts.append("\n\n".join(lines) + "\n")
    return frontmatter.join(front, "\n".join(parts))


def _packet_summary(rt, row: dict) -> str:
    """The Summary section of the lane's packet, read from its branch (the worktree may be gone)."""
    from cowork.gitops.git import run_git

    rel = row.get("packet_path") or f"handoffs/{row['task_id']}/{row['id']}.md"
    ref = row.get("merge_commit") or (f"refs/heads/{row['branch']}" if row.get("branch") else None)
    if ref is None:
        return ""
    proc = run_git("show", f"{ref}:{rel}", cwd=rt.ws.root)
    if proc.returncode != 0:
        return ""
    try:
        return handoff.parse(proc.stdout, rel).section("Summary")
    except Exception:
        return ""


def _overview(rt, task: dict, state: str, rows: list[dict], packets: dict[str, str]) -> str:
    """A short overview of the task by the cheap model (`[model] cheap`), or "" when none is set or it fails.

    A cheap step: one short call with a tight timeout, tried again on passing trouble as a lane's call is (each
    retry a `model.retry` event); it never changes how the task ended.
    """
    from cowork.engines import models, retry
    from cowork.team import budgets

    choice = models.cheap_choice(rt.settings)
    if choice is None:
        return ""
    lanes = "\n".join(f"- {r['id']} ({r['role']}, {r['state']}): {' '.join(packets.get(r['id'], '').split())[:600]}"
                      for r in rows)
    messages = [{"role": "system", "content": "You summarise a finished task of a software team for the humans who "
                                              "review it. Answer with two or three plain sentences, no headings."},
                {"role": "user", "content": f"Task: {task['title']}\nOutcome: {state}\nLanes:\n{lanes}"}]
    on_retry = retry.reporter(rt.store, f"{task['id']} summary", actor="runner", task=task["id"])
    try:
        reply = models.complete_text(choice, messages, max_tokens=200, settings=rt.settings, on_retry=on_retry)
    except models.ModelError as exc:
        rt.store.event("task.overview_failed", f"{task['id']}: {exc.message}"[:300], actor="runner", task=task["id"])
        return ""
    budgets.record_usage(rt.store, task=task["id"], lane=None, role=None, model=choice.model,
                         tokens_in=reply.tokens_in, tokens_out=reply.tokens_out, usd=reply.usd)
    return " ".join((reply.message.get("content") or "").split())[:1200]


def close_task(rt, task_id: str, rows: list[dict]) -> str:
    """Write and commit summary.md, then set the task done (every work lane merged) or failed. Returns the state."""
    task = lanes_db.get_task(rt.store, task_id)
    work = [r for r in rows if r["kind"] in ("work", "delegated")]
    ok = bool(work) and all(r["state"] in ENDED_OK for r in work)
    state = "done" if ok else "failed"
    packets = {r["id"]: _packet_summary(rt, r) for r in rows}
    text = render_summary(task, rows, state, packets, _overview(rt, task, state, rows, packets))
    error = None
    try:
        from cowork.runner.mainline import commit_to_target

        commit_to_target(rt.ws, rt.store, rt.settings, {f"handoffs/{task_id}/summary.md": text},
                         f"{task_id}: summary ({state})", holder=rt.id, trailers={"Cowork-Task": task_id})
    except Exception as exc:  # the task's outcome stands even if its summary could not be committed
        error = f"summary.md not committed: {exc}"
        rt.store.event("task.summary_failed", error[:500], actor="runner", task=task_id)
    if not ok:
        bad = [f"{r['id']} {r['state']}" for r in work if r["state"] not in ENDED_OK]
        error = "lanes not merged: " + ", ".join(bad) if bad else (error or "no work lanes")
    with rt.store.tx():  # a lane sent back meanwhile (`cowork retry` while the summary was written) reopens the task
        if any(r["state"] in ACTIVE_LANE_STATES for r in lanes_db.list_lanes(rt.store, task_id)):
            rt.store.event("task.reopened", f"task {task_id} goes on: a lane was sent back while it closed",
                           actor="runner", task=task_id)
            return "running"
        lanes_db.set_task_state(rt.store, task_id, state, error=error)
    _remove_worktrees(rt, rows)
    return state


def _remove_worktrees(rt, rows: list[dict]) -> None:
    """Worktrees of merged (and answered consult) lanes go; failed or blocked ones stay for a human to inspect.
    Branches stay: the merge commits point at them."""
    from cowork.gitops.worktrees import remove_lane_worktree

    for r in rows:
        if r["kind"] == "review" or r["state"] not in ENDED_OK:
            continue
        try:
            remove_lane_worktree(rt.ws, r["task_id"], r["id"], target=rt.settings.merge.target)
        except Exception as exc:  # a dirty worktree is kept; never lose anything to tidy up
            rt.store.event("lane.worktree_kept", f"{r['task_id']}/{r['id']}: worktree kept: {exc}"[:300],
                           actor="runner", task=r["task_id"], lane=r["id"])
