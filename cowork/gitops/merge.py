"""The merge queue and the merger: lanes wait in `merge_queue` (FIFO) and are merged one at a time under the lock.

A merge happens in the merger's own worktree on the target's current tip, runs the team's merge checks, and moves
the target with a compare-and-swap ref update, so a conflict or a failing check never reaches the target.
Every merge commit carries `Cowork-Task`, `Cowork-Lane`, `Cowork-Role` and `Cowork-Handoff` trailers.

What this module writes on the lane's row: `merging` while it merges; `merged` with `merge_commit` on success
(or when the target already contains the branch); on a conflict or failed checks the lane goes to `blocked` with
`feedback` (the conflicting files or the check output) and, for a conflict, `conflict_returns` + 1. The runner,
which gets the MergeResult back, decides whether to hand the lane back to its role.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from cowork.errors import BadInput, CoworkError
from cowork.gitops import checkout
from cowork.gitops.git import MERGER, head, identity_env, run_git, tips, trailer_block
from cowork.gitops.lock import LockLost, LockTimeout, MergeLock, lock_row
from cowork.gitops.mergetree import (
    MAX_ATTEMPTS, ChecksInterrupted, TargetRaced, cas_move, conflict_markers, find_merges, merge_tree, reset_tree,
    run_checks, unmerged_files,
)
from cowork.gitops.worktrees import changed_files, lane_branch
from cowork.procs import stop_orphans
from cowork.store import Store, now
from cowork.store.lanes import get_lane, set_lane_state

WAITING, MERGING = "waiting", "merging"


@dataclass
class MergeResult:
    """What happened to one lane. `status`: merged | conflict | checks_failed | nothing (| failed from
    process_queue, for an entry that could not be merged at all, e.g. its branch is gone)."""

    status: str
    commit: str | None = None
    conflicts: list[str] = field(default_factory=list)
    output: str = ""
    task: str | None = None
    lane: str | None = None
    role: str | None = None
    target: str | None = None
    attempts: int = 0
    notes: list[str] = field(default_factory=list)  # for the user: what happened to their checkout

    @property
    def ok(self) -> bool:
        return self.status in ("merged", "nothing")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- the queue ---------------------------------------------------------------------------------------------------


def enqueue(store: Store, task: str, lane: str) -> int:
    """Put a lane in the merge queue (its lane row, if any, goes to `merge-queue`). Returns the entry id.

    Idempotent: a lane already waiting or merging keeps its entry and place.
    """
    with store.tx():
        row = store.one("SELECT id, state FROM merge_queue WHERE task_id=? AND lane_id=? AND state IN (?,?)",
                        (task, lane, WAITING, MERGING))
        if row is not None:
            lane_row = get_lane(store, task, lane)
            if row["state"] == WAITING and lane_row is not None and lane_row["state"] != "merge-queue":
                set_lane_state(store, task, lane, "merge-queue", actor="merger", detail=f"queue entry {row['id']}")
            return row["id"]
        qid = store.execute("INSERT INTO merge_queue(task_id, lane_id, state, enqueued_at) VALUES (?,?,?,?)",
                            (task, lane, WAITING, now())).lastrowid
        if get_lane(store, task, lane) is not None:
            set_lane_state(store, task, lane, "merge-queue", actor="merger", detail=f"queue entry {qid}")
    return qid


def queue(store: Store) -> list[dict]:
    """Entries waiting or being merged, oldest first: id, task, lane, role, state, enqueued_at."""
    return store.all(
        "SELECT q.id, q.task_id AS task, q.lane_id AS lane, l.role, q.state, q.enqueued_at FROM merge_queue q "
        "LEFT JOIN lanes l ON l.task_id=q.task_id AND l.id=q.lane_id WHERE q.state IN (?,?) ORDER BY q.id",
        (WAITING, MERGING))


def lock_status(store: Store) -> dict:
    """The merge lock and queue: {holder, since, lease_until, expired, gone, queue: [...]} (holder None when free;
    `gone`: the holder's process has ended on this host without releasing it)."""
    row = lock_row(store) or {}
    return {"holder": row.get("holder"), "since": row.get("acquired_at"), "lease_until": row.get("lease_until"),
            "expired": row.get("expired", False), "gone": row.get("gone", False), "queue": queue(store)}


def _claim(store: Store, task: str, lane: str) -> int:
    """Mark the lane's queue entry as merging (adding one if the lane was merged without queueing)."""
    with store.tx():
        row = store.one("SELECT id FROM merge_queue WHERE task_id=? AND lane_id=? AND state IN (?,?) ORDER BY id",
                        (task, lane, WAITING, MERGING))
        if row is not None:
            store.execute("UPDATE merge_queue SET state=? WHERE id=?", (MERGING, row["id"]))
            return row["id"]
        return store.execute("INSERT INTO merge_queue(task_id, lane_id, state, enqueued_at) VALUES (?,?,?,?)",
                             (task, lane, MERGING, now())).lastrowid


def _finish(store: Store, qid: int, state: str, commit: str | None = None) -> None:
    store.execute("UPDATE merge_queue SET state=?, merge_commit=?, ended_at=? WHERE id=?", (state, commit, now(), qid))


# -- merging -----------------------------------------------------------------------------------------------------


def merge_lane(ws, store: Store, settings, task: str, lane: str, *, role: str, holder: str,
               lock: MergeLock | None = None, stop: Any = None) -> MergeResult:
    """Merge the lane's branch into the merge target (settings.merge.target) under the merge lock.

    Pass `lock` when already holding it; otherwise it is taken (waiting up to its default wait) and released.

    Raises:
        BadInput: the lane's branch does not exist.
        LockTimeout: the lock stayed busy. LockLost: our lease was taken before the target moved.
        TargetRaced: the target moved under every attempt.
    """
    if lock is None:
        with MergeLock(store, holder, lease_s=settings.merge.lease_s) as held:
            return merge_lane(ws, store, settings, task, lane, role=role, holder=holder, lock=held, stop=stop)
    qid = _claim(store, task, lane)
    try:
        result = _merge(ws, store, settings, task, lane, role, lock, stop)
    except (LockLost, ChecksInterrupted) as exc:
        # another merger owns the target now, or this one was stopped: the lane keeps its place for the next merger
        why = "merge lock lost" if isinstance(exc, LockLost) else "the merger was stopped"
        with store.tx():
            store.execute("UPDATE merge_queue SET state=? WHERE id=?", (WAITING, qid))
            if get_lane(store, task, lane) is not None:
                set_lane_state(store, task, lane, "merge-queue", actor="merger", detail=f"{why}; requeued")
        raise
    except BaseException as exc:
        with store.tx():
            _finish(store, qid, "failed")
            # a merge that could not be tried (no branch: BadInput) says so and leaves the lane as it was
            if get_lane(store, task, lane) is not None and isinstance(exc, CoworkError) \
                    and not isinstance(exc, BadInput):
                set_lane_state(store, task, lane, "blocked", actor="merger", detail=f"merge failed: {exc.message}",
                               feedback=exc.render())
        raise
    _finish(store, qid, {"merged": "merged", "nothing": "merged", "conflict": "conflict"}.get(result.status, "failed"),
            result.commit)
    return result


def _merge(ws, store: Store, settings, task: str, lane: str, role: str, lock: MergeLock, stop: Any = None
           ) -> MergeResult:
    target = settings.merge.target
    row = get_lane(store, task, lane)
    branch = (row or {}).get("branch") or lane_branch(task, lane)
    lane_ref, target_ref = f"refs/heads/{branch}", f"refs/heads/{target}"
    res = MergeResult("nothing", task=task, lane=lane, role=role, target=target)
    ev = {"actor": "merger", "task": task, "lane": lane, "role": role}
    goal = ((row or {}).get("goal") or "").strip()
    goal = goal if len(goal) <= 4000 else goal[:4000] + " [...]"  # the message travels as one argv string
    message = trailer_block(f"Merge {task}/{lane} ({role})\n\n{goal}", [
        ("Cowork-Task", task), ("Cowork-Lane", lane), ("Cowork-Role", role),
        ("Cowork-Handoff", f"handoffs/{task}/{lane}.md")])
    env = identity_env(MERGER, ws.root)
    tree = None
    for attempt in range(1, MAX_ATTEMPTS + 1):
        res.attempts = attempt
        found = tips(ws.root, target_ref, lane_ref)
        old = found[target_ref]
        if found[lane_ref] is None or old is None:
            missing = branch if found[lane_ref] is None else target
            if missing == branch and row is None:
                raise BadInput(f"cannot merge {task}/{lane}: no such lane (and no branch {branch})",
                               hint="`cowork lanes` lists the lanes, as TASK/LANE")
            raise BadInput(f"cannot merge {task}/{lane}: there is no branch {missing}",
                           hint="was the lane started? see `cowork status`" if missing == branch
                           else "check [merge] target in cowork.toml")
        if tree is None:
            if row is not None:
                set_lane_state(store, task, lane, "merging", actor="merger")
            stop_orphans(ws.state_dir)  # a dead merger's checks, if the lock came from one, must not run on here
            tree = merge_tree(ws)
        reset_tree(tree, old)
        # --no-verify: the lane's commits already passed the hooks; the merge is judged by the merge checks.
        # --cleanup=whitespace: the message is exactly ours (no "#" line is a comment).
        proc = run_git("merge", "--no-ff", "--no-edit", "--no-verify", "--cleanup=whitespace", "-m", message,
                       lane_ref, cwd=tree, env=env)
        if proc.returncode != 0:
            res.conflicts = unmerged_files(tree)
            reset_tree(tree, old)  # aborts the merge: no conflict marker survives anywhere
            if not res.conflicts:
                raise CoworkError(f"git merge of {branch} failed: {(proc.stderr or proc.stdout).strip()}")
            return _conflict(store, res, row, old, branch, ev)
        new = head(tree)
        if new == old:  # "Already up to date": the target contains the branch
            return _already(ws, store, res, row, old, ev)
        markers = conflict_markers(tree, old, new)
        if markers:  # a conflict committed unresolved on the lane: it never reaches the target either
            reset_tree(tree, old)
            res.conflicts = sorted({m.rsplit(":", 1)[0] for m in markers})
            return _conflict(store, res, row, old, branch, ev,
                             f"{branch} leaves conflict markers in {len(res.conflicts)} file(s), at "
                             + ", ".join(markers[:20]) + (" ..." if len(markers) > 20 else ""))
        checks = run_checks(tree, list(settings.merge.checks), timeout_s=settings.merge.checks_timeout_s,
                            procs_dir=ws.state_dir, stop=stop, pass_env=settings.policy.pass_env,
                            env={"COWORK_TASK": task, "COWORK_LANE": lane, "COWORK_MERGE_TARGET": target})
        if not checks.ok:
            reset_tree(tree, old)
            return _checks_failed(store, res, row, checks, ev)
        lock.check()
        plan = checkout.before_move(ws, target, old, store=store, task=task)
        if cas_move(ws, target, new, old, f"cowork: merge {task}/{lane}"):
            res.notes = checkout.after_move(ws, plan, new)
            res.status, res.commit, res.output = "merged", new, checks.output
            files = changed_files(ws, new, old)
            with store.tx():  # the lane's new state and its merge event are read together (timeline, TUI, tests)
                if row is not None:
                    set_lane_state(store, task, lane, "merged", actor="merger", detail=f"as {new[:9]}",
                                   merge_commit=new)
                store.event("merge.done", f"merged {task}/{lane} ({role}) into {target} as {new[:9]}"
                            + (f" after {attempt} attempts" if attempt > 1 else ""),
                            data={"commit": new, "previous": old, "target": target, "branch": branch,
                                  "attempts": attempt, "files": files[:200], "file_count": len(files),
                                  "notes": res.notes, "holder": lock.holder}, **ev)
            return res
        res.notes += plan.notes
    raise TargetRaced(["git", "update-ref", target_ref], 1,
                      f"{target} moved under the merger {MAX_ATTEMPTS} times while merging {task}/{lane}")


def _already(ws, store, res: MergeResult, row, old: str, ev) -> MergeResult:
    """The target already contains the branch: record the merge commit that brought it, if cowork made one."""
    found = find_merges(ws, res.target, res.task, res.lane)
    res.commit = found[0].sha if found else None
    res.output = f"{res.target} already contains {res.task}/{res.lane}" + (f" (merged as {res.commit[:9]})"
                                                                          if res.commit else "")
    with store.tx():
        if row is not None:  # it is `merging` now, whatever it was when read
            set_lane_state(store, res.task, res.lane, "merged", actor="merger", detail=res.output,
                           merge_commit=res.commit or row["merge_commit"])
        store.event("merge.done", res.output, data={"commit": res.commit, "previous": old, "target": res.target,
                                                    "nothing": True}, **ev)
    return res


# A lane the merger blocks gets `feedback` starting with one of these, so the runner can tell why without reading
# the rest (check output is free text and may say anything, "conflict" included).
CONFLICT_FEEDBACK = "merge conflict: "
CHECKS_FEEDBACK = "merge check "


def blocked_by(feedback: str | None) -> str | None:
    """Why the merger sent a lane back, from the feedback it wrote: "conflict", "checks", or None (not the merger)."""
    if (feedback or "").startswith(CONFLICT_FEEDBACK):
        return "conflict"
    if (feedback or "").startswith(CHECKS_FEEDBACK):
        return "checks"
    return None


def _conflict(store, res: MergeResult, row, old: str, branch: str, ev, output: str | None = None) -> MergeResult:
    res.status = "conflict"
    res.output = output or (f"merging {branch} onto {res.target} ({old[:9]}) conflicts in {len(res.conflicts)} "
                            f"file(s): " + ", ".join(res.conflicts))
    with store.tx():
        if row is not None:
            set_lane_state(store, res.task, res.lane, "blocked", actor="merger", detail="merge conflict",
                           feedback=CONFLICT_FEEDBACK + res.output
                           + f"\nupdate the lane from {res.target} and resolve them",
                           conflict_returns=row["conflict_returns"] + 1)
        store.event("merge.conflict",
                    f"{res.task}/{res.lane} conflicts with {res.target}: " + ", ".join(res.conflicts[:10]),
                    data={"files": res.conflicts, "target": res.target, "tip": old, "branch": branch}, **ev)
    return res


def _checks_failed(store, res: MergeResult, row, checks, ev) -> MergeResult:
    res.status, res.output = "checks_failed", checks.output
    with store.tx():
        if row is not None:
            set_lane_state(store, res.task, res.lane, "blocked", actor="merger",
                           detail=f"merge check failed: {checks.command}",
                           feedback=f"{CHECKS_FEEDBACK}`{checks.command}` failed on the merge with {res.target}:\n"
                                    f"{checks.output}")
        store.event("check.failed", f"merge check failed for {res.task}/{res.lane}: {checks.command}",
                    data={"stage": "merge", "command": checks.command, "exit": checks.returncode,
                          "output": checks.output[-4000:]}, **ev)
    return res


# -- draining the queue ------------------------------------------------------------------------------------------


def _recover(store: Store) -> None:
    """Entries left `merging` by a merger that died go back to waiting (we hold the lock: nobody else merges)."""
    store.execute("UPDATE merge_queue SET state=? WHERE state=?", (WAITING, MERGING))


def _pending(store: Store) -> bool:
    """Whether anything waits, or was left `merging` (by a live merger, or a dead one whose entry needs recovery)."""
    return store.scalar("SELECT 1 FROM merge_queue WHERE state IN (?,?) LIMIT 1", (WAITING, MERGING)) is not None


def _next_entry(store: Store) -> dict | None:
    return store.one("SELECT q.id, q.task_id, q.lane_id, l.role FROM merge_queue q LEFT JOIN lanes l "
                     "ON l.task_id=q.task_id AND l.id=q.lane_id WHERE q.state=? ORDER BY q.id LIMIT 1", (WAITING,))


def merge_next(ws, store: Store, settings, roles=None, *, holder: str, lock: MergeLock | None = None,
               wait_s: float = 300.0, stop: Any = None) -> MergeResult | None:
    """Merge the oldest waiting lane. Returns None when the queue is empty (the lock is not taken then).

    `roles` is accepted for the runner's call shape; the lane's role comes from its row.

    Raises:
        LockTimeout: the lock stayed busy for `wait_s`. Others as merge_lane.
    """
    if lock is None:
        if not _pending(store):
            return None
        held = MergeLock(store, holder, lease_s=settings.merge.lease_s)
        if not held.acquire(wait_s):
            raise LockTimeout(f"the merge lock stayed busy for {wait_s:g}s", hint="see `cowork queue`")
        try:
            return merge_next(ws, store, settings, roles, holder=holder, lock=held, stop=stop)
        finally:
            held.release()
    _recover(store)
    entry = _next_entry(store)
    if entry is None:
        return None
    return merge_lane(ws, store, settings, entry["task_id"], entry["lane_id"], role=entry["role"] or "unknown",
                      holder=holder, lock=lock, stop=stop)


def process_queue(ws, store: Store, settings, roles=None, *, holder: str, limit: int | None = None,
                  wait_s: float = 300.0) -> list[MergeResult]:
    """Merge waiting lanes until the queue is empty (or `limit` merges), holding the lock throughout.

    An entry that cannot be merged at all (its branch is gone, the target kept racing) becomes a result with
    status `failed`, and the drain goes on.
    """
    results: list[MergeResult] = []
    if not _pending(store):
        return results
    with MergeLock(store, holder, lease_s=settings.merge.lease_s, wait_s=wait_s) as lock:
        while limit is None or len(results) < limit:
            entry = _next_entry(store)
            try:
                result = merge_next(ws, store, settings, roles, holder=holder, lock=lock)
            except (BadInput, TargetRaced) as exc:
                result = MergeResult("failed", output=exc.render(), task=entry and entry["task_id"],
                                     lane=entry and entry["lane_id"], target=settings.merge.target)
            if result is None:
                break
            results.append(result)
    return results


from cowork.gitops.revert import RevertResult, revert  # noqa: E402  (re-exported: the merge API in one place)

__all__ = ["MergeResult", "RevertResult", "enqueue", "queue", "lock_status", "merge_lane", "merge_next",
           "process_queue", "revert"]
