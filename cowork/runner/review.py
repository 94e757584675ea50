"""Review lanes: a role with `review_by` gets its lane reviewed (a lane of kind `review`) before it may merge.

The reviewer reads the lane's packet and diff in the lane's own worktree and finishes `done` (the lane joins the
merge queue) or `needs-review` (the lane goes back to its role with the comments), at most
`policy.max_review_rounds` times.
The review packet is committed on the reviewed lane's branch, so it merges with the work it judged.
"""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from cowork.engines import prompts
from cowork.runner import handoffs
from cowork.runner.journal import Journal
from cowork.runner.lane import _commit, _ctx, _on_finished, end_lane, enqueue, run_engine
from cowork.store import lanes as lanes_db

if TYPE_CHECKING:  # pragma: no cover
    from cowork.runner.runner import Runner


def start_review(rt: "Runner", row: dict, reviewer: str) -> None:
    """Add a review lane for `row` (kind review) and park the lane in-review until it reports."""
    task, lane = row["task_id"], row["id"]
    n = rt.store.scalar("SELECT count(*) FROM lanes WHERE task_id=? AND parent_lane=? AND kind='review'",
                        (task, lane), 0)
    review_id = f"{lane}-review" + (f"-{n + 1}" if n else "")
    goal = (f"Review lane '{lane}' ({row['role']}): its goal was: {row['goal'].strip()}\n"
            f"Read its packet {handoffs.packet_rel(task, lane)} and its diff (git_diff), then pass it (finish "
            f"status done) or send it back (finish status needs-review, with concrete comments).")
    with rt.store.tx():
        lanes_db.add_lane(rt.store, task, review_id, reviewer, goal, kind="review", parent_lane=lane,
                          depth=row.get("depth") or 0)
        lanes_db.update_lane(rt.store, task, review_id, worktree=row["worktree"], base_commit=row["base_commit"],
                             branch=row["branch"])
        lanes_db.set_lane_state(rt.store, task, lane, "in-review", detail=f"review by {reviewer} ({review_id})")
    rt.wake()


async def run_review(rt: "Runner", row: dict) -> None:
    """Run a review lane; its verdict merges the reviewed lane or sends it back with the comments."""
    task, lane = row["task_id"], row["id"]
    role = rt.roles.roles.get(row["role"])
    parent = lanes_db.get_lane(rt.store, task, row["parent_lane"])
    if role is None or parent is None:
        raise RuntimeError(f"review lane needs a known role and parent (role {row['role']}, parent "
                           f"{row['parent_lane']})")
    worktree = Path(parent["worktree"])
    lanes_db.set_lane_state(rt.store, task, lane, "running", runner_id=rt.id, attempts=row["attempts"] + 1)
    ctx = _ctx(rt, row, role, worktree)
    journal = Journal(rt.store, task, lane)
    packet_file = worktree / handoffs.packet_rel(task, parent["id"])
    packet_text = packet_file.read_text(encoding="utf-8") if packet_file.is_file() else "(no packet)"
    system = prompts.lane_system(role, team=rt.settings.name, task=task, lane=lane, goal=row["goal"], kind="review",
                                 brief=f"The packet of lane {parent['id']}:\n\n{packet_text}\n\n"
                                       f"Its diff:\n\n```diff\n{await _diff(parent, worktree)}\n```")
    outcome = await run_engine(rt, row, role, ctx, journal, [], system, prompts.lane_kickoff(row["goal"]))
    fresh = lanes_db.get_lane(rt.store, task, lane)
    if not outcome.finish:
        with rt.store.tx():  # the review and the lane it was reviewing end together
            end_lane(rt, fresh, "failed", outcome.error or "review ended without finish")
            lanes_db.set_lane_state(rt.store, task, parent["id"], "blocked", detail=f"review {lane} failed")
        return
    verdict = "done" if outcome.status == "done" else "needs-review"
    packet = handoffs.from_finish(fresh, role.name, outcome.finish, to=parent["role"], status=verdict)
    await asyncio.to_thread(handoffs.write, worktree, packet)
    await _commit(rt, worktree, {**parent, "id": parent["id"]}, role.name,
                  f"{lane}: review of {parent['id']}: {verdict}")
    # the verdict and what it does to the reviewed lane are one commit: a crash between them would leave that lane
    # waiting for a review that has ended
    with rt.store.tx():
        _verdict(rt, fresh, parent["id"], role.name, packet, verdict)
    rt.wake()


def _verdict(rt: "Runner", review: dict, parent_id: str, reviewer: str, packet, verdict: str) -> None:
    """Record the review's packet and end it; queue the reviewed lane for merge, or send it back (or to a human
    after `max_review_rounds`)."""
    task, lane = review["task_id"], review["id"]
    lanes_db.update_lane(rt.store, task, lane, packet_path=handoffs.packet_rel(task, lane))
    _on_finished(rt, review, packet)
    lanes_db.set_lane_state(rt.store, task, lane, "done", detail=f"verdict: {verdict}")
    parent = lanes_db.get_lane(rt.store, task, parent_id)
    if verdict == "done":
        enqueue(rt, parent)
        return
    rounds = rt.store.scalar("SELECT count(*) FROM lanes WHERE task_id=? AND parent_lane=? AND kind='review'",
                             (task, parent_id), 0)
    if rounds >= rt.settings.policy.max_review_rounds:
        end_lane(rt, parent, "blocked",
                 f"review sent it back {rounds} time{'s' if rounds != 1 else ''}: a human decides")
        return
    feedback = (f"Review by {reviewer} ({lane}) sent your work back:\n\n{packet.section('Summary')}\n\n"
                f"{packet.section('Checklist')}\n\n{packet.section('Next')}").strip()
    lanes_db.set_lane_state(rt.store, task, parent_id, "queued", detail=f"sent back by review {lane}",
                            feedback=feedback)


MAX_DIFF = 20_000


async def _diff(lane: dict, worktree: Path) -> str:
    """The reviewed lane's committed changes since its base (bounded), so a reviewer without tools sees them too."""
    from cowork.gitops.git import run_git

    base = lane.get("base_commit") or "HEAD"
    proc = await asyncio.to_thread(run_git, "diff", f"{base}..HEAD", cwd=worktree)
    text = proc.stdout if proc.returncode == 0 else f"(git diff failed: {proc.stderr.strip()[:200]})"
    return text if len(text) <= MAX_DIFF else text[:MAX_DIFF] + f"\n... ({len(text) - MAX_DIFF} more characters)"
