"""Undoing merged work: `revert(ws, store, settings, "TASK/LANE" | "TASK", by=...)`.

The merge commits are found by their trailers on the target's first-parent line and reverted (newest first,
`git revert -m 1`) in one commit, under the same lock, checks and compare-and-swap as a merge. The revert commit
names every merge it undoes in `Cowork-Revert-Of` trailers, which is also how a second revert knows they are done.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from cowork.errors import BadInput
from cowork.gitops import checkout
from cowork.gitops.git import MERGER, git, head, identity_env, ref_exists, run_git, trailer_block
from cowork.gitops.lock import MergeLock
from cowork.gitops.mergetree import (
    MAX_ATTEMPTS, TargetRaced, cas_move, find_merges, merge_tree, reset_tree, reverted_commits, run_checks,
    target_tip, unmerged_files,
)
from cowork.store import Store
from cowork.store.lanes import get_lane, set_lane_state


@dataclass
class RevertResult:
    """`status`: reverted | conflict | checks_failed | nothing (the changes were already undone by hand)."""

    status: str
    commit: str | None = None
    reverted: list[str] = field(default_factory=list)  # merge commits undone, newest first
    conflicts: list[str] = field(default_factory=list)
    output: str = ""
    target: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status in ("reverted", "nothing")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_target(target: str) -> tuple[str, str | None]:
    """`TASK/LANE` or `TASK` -> (task, lane or None)."""
    task, _, lane = target.strip().strip("/").partition("/")
    if not task or "/" in lane:
        raise BadInput(f"'{target}' is not TASK/LANE or TASK", hint="e.g. `cowork revert t7-login/implement`")
    return task, lane or None


def revert(ws, store: Store, settings, target: str, *, by: str, lock: MergeLock | None = None) -> RevertResult:
    """Revert the merge of one lane (`TASK/LANE`) or of every merged lane of a task (`TASK`) on the merge target.

    Raises:
        BadInput: nothing of `target` was ever merged, or it is all reverted already.
        LockTimeout / LockLost / TargetRaced: as for merges.
    """
    task, lane = parse_target(target)
    branch = settings.merge.target
    if not ref_exists(ws.root, f"refs/heads/{branch}"):
        raise BadInput(f"{target} was never merged: the merge target '{branch}' has no commits yet")
    merges = find_merges(ws, branch, task, lane)
    if not merges:
        raise BadInput(f"{target} was never merged into {branch}",
                       hint=f"`git log --grep 'Cowork-Task: {task}' {branch}` lists what cowork merged")
    if lock is None:
        with MergeLock(store, by, lease_s=settings.merge.lease_s) as held:
            return revert(ws, store, settings, target, by=by, lock=held)
    done = reverted_commits(ws, branch)
    todo = [m for m in merges if m.sha not in done]
    if not todo:
        raise BadInput(f"{target} is already reverted on {branch}")
    res = RevertResult("nothing", reverted=[m.sha for m in todo], target=branch)
    tree = merge_tree(ws)
    ev = {"actor": by, "task": task, "lane": lane}
    for _attempt in range(MAX_ATTEMPTS):
        old = target_tip(ws, branch)
        reset_tree(tree, old)
        for m in todo:
            proc = run_git("revert", "-m", "1", "--no-commit", "--no-edit", m.sha, cwd=tree)
            if proc.returncode != 0:
                res.status, res.conflicts = "conflict", unmerged_files(tree)
                res.output = (f"reverting {m.sha[:9]} ({m.subject}) conflicts with later work in: "
                              + (", ".join(res.conflicts) or (proc.stderr or proc.stdout).strip()))
                reset_tree(tree, old)
                store.event("merge.conflict", f"revert of {target} conflicts: " + ", ".join(res.conflicts[:10]),
                            data={"files": res.conflicts, "revert_of": m.sha, "target": branch}, **ev)
                return res
        if run_git("diff", "--cached", "--quiet", cwd=tree).returncode == 0:
            reset_tree(tree, old)
            res.output = f"{branch} no longer has the changes of {target}; nothing to revert"
            return res
        lines = "\n".join(f"- {m.sha[:12]} {m.subject}" for m in todo)
        message = trailer_block(
            f"Revert {target} ({len(todo)} merge{'s' if len(todo) != 1 else ''})\n\n{lines}",
            [("Cowork-Task", task), *([("Cowork-Lane", lane)] if lane else []),
             *[("Cowork-Revert-Of", m.sha) for m in todo], ("Cowork-By", by)])
        git("commit", "--quiet", "--no-verify", "--cleanup=whitespace", "-F", "-", cwd=tree,
            env=identity_env(MERGER, ws.root), input=message)
        new = head(tree)
        checks = run_checks(tree, list(settings.merge.checks), timeout_s=settings.merge.checks_timeout_s,
                            procs_dir=ws.state_dir, pass_env=settings.policy.pass_env,
                            env={"COWORK_TASK": task, "COWORK_LANE": lane or "", "COWORK_MERGE_TARGET": branch})
        if not checks.ok:
            reset_tree(tree, old)
            res.status, res.output = "checks_failed", checks.output
            store.event("check.failed", f"merge check failed for the revert of {target}: {checks.command}",
                        data={"stage": "revert", "command": checks.command, "exit": checks.returncode,
                              "output": checks.output[-4000:]}, **ev)
            return res
        lock.check()
        plan = checkout.before_move(ws, branch, old, store=store, task=task)
        if cas_move(ws, branch, new, old, f"cowork: revert {target}"):
            res.notes = checkout.after_move(ws, plan, new)
            res.status, res.commit, res.output = "reverted", new, checks.output
            with store.tx():  # the lanes' new state and the revert event are read together
                store.event("merge.reverted", f"reverted {target} on {branch} as {new[:9]} "
                            f"({len(todo)} merge{'s' if len(todo) != 1 else ''})",
                            data={"commit": new, "previous": old, "target": branch, "reverted": res.reverted,
                                  "lanes": [m.lane for m in todo], "notes": res.notes}, **ev)
                for name in dict.fromkeys(m.lane for m in todo if m.lane):
                    row = get_lane(store, task, name)  # merges are found by their trailers: a row may be gone
                    if row is not None:
                        set_lane_state(store, task, name, "reverted", actor=by, detail=f"by {new[:9]}",
                                       ended_at=row["ended_at"])
            return res
        res.notes += plan.notes
    raise TargetRaced(["git", "update-ref", f"refs/heads/{branch}"], 1,
                      f"{branch} moved under the merger {MAX_ATTEMPTS} times while reverting {target}")
