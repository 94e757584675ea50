"""Keeping people's checkouts of the merge target honest when cowork moves the target's ref.

`git update-ref` moves a branch without touching any worktree that has it checked out: that worktree's HEAD
jumps to the new commit while its index and files stay at the old one, so `git status` shows the merge undone
and the next `git commit -a` would silently revert it. So, around every move of the target:

- a checkout with no changes is fast-forwarded right after the move (`git read-tree -m -u OLD NEW`, the two-tree
  merge `git merge --ff-only` performs; it refuses to overwrite anything, untracked files included);
- a checkout with changes is not touched: before the move its HEAD is detached at the old commit, which changes
  no file and keeps `git status` truthful, and the user is told to run `git checkout <target>` when ready.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cowork.gitops.git import git_dir, run_git
from cowork.gitops.worktrees import list_worktrees


@dataclass
class CheckoutPlan:
    """Worktrees (outside cowork's own) that have the target checked out, split by whether they were clean."""

    target: str
    old: str
    clean: list[Path] = field(default_factory=list)
    detached: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    store: Any = field(default=None, repr=False)  # where a detach is recorded (`checkout.detached`), if given
    task: str | None = None


def _clean(path: Path) -> bool:
    """No staged or unstaged change to a tracked file and no operation in progress (untracked files are fine:
    the fast-forward refuses to overwrite them)."""
    proc = run_git("status", "--porcelain", "--untracked-files=no", cwd=path)
    if proc.returncode != 0 or proc.stdout.strip():
        return False
    state = git_dir(path)
    return not any((state / name).exists() for name in ("MERGE_HEAD", "CHERRY_PICK_HEAD", "REVERT_HEAD",
                                                       "rebase-merge", "rebase-apply"))


def _detach(path: Path, commit: str, target: str) -> None:
    run_git("update-ref", "--no-deref", "-m", f"cowork: {target} moved; checkout detached at its old commit",
            "HEAD", commit, cwd=path)


def before_move(ws, target: str, old: str, *, store: Any = None, task: str | None = None) -> CheckoutPlan:
    """Inspect (and, when dirty, detach) every checkout of `target` before its ref moves from `old`. With `store`,
    each detach is an event (`checkout.detached`, its note the summary): the user hears of it in `cowork log`,
    the foreground progress and `cowork status`, not only from the command that moved the target. Called under the
    merge lock, which also makes it the place to finish a move a killed mover left half done."""
    finish_interrupted(ws, target, store)
    plan = CheckoutPlan(target, old, store=store, task=task)
    ref = f"refs/heads/{target}"
    own = ws.worktrees_dir.resolve()
    for tree in list_worktrees(ws.root):
        if tree.branch != ref or tree.prunable or tree.path.resolve().is_relative_to(own):
            continue
        if _clean(tree.path):
            plan.clean.append(tree.path)
        else:
            _detach_and_tell(ws, plan, tree.path)
    if plan.clean:  # until they are fast-forwarded: a mover killed in between leaves them to the next (see below)
        _intent(ws, target).parent.mkdir(parents=True, exist_ok=True)
        _intent(ws, target).write_text(json.dumps({"old": old, "paths": [str(p) for p in plan.clean]}))
    return plan


def after_move(ws, plan: CheckoutPlan, new: str) -> list[str]:
    """Fast-forward the clean checkouts in `plan` to `new`. Returns notes for the user (one per checkout)."""
    notes = list(plan.notes)
    for path in plan.clean:
        proc = run_git("read-tree", "-m", "-u", plan.old, new, cwd=path)
        if proc.returncode == 0:
            notes.append(f"fast-forwarded your checkout {_where(ws, path)} of {plan.target} to {new[:9]}")
        else:  # it changed between the check and the move: leave its files, keep its HEAD truthful
            notes.append(_detach_and_tell(ws, plan, path))
    _intent(ws, plan.target).unlink(missing_ok=True)
    return notes


def _intent(ws, target: str) -> Path:
    """Where a move of `target` notes the clean checkouts it will fast-forward (one mover at a time: the lock)."""
    return ws.state_dir / "checkout-moves" / f"{target.replace('/', '%')}.json"


def finish_interrupted(ws, target: str, store: Any = None) -> list[str]:
    """Fast-forward the checkouts a mover killed between moving `target` and fast-forwarding them left behind.

    Such a checkout still has `target` checked out, but its index and files are the old commit's: `git status`
    shows the merge undone and `git commit -a` would revert it. It is brought to the target's tip only while its
    index is exactly the old commit and nothing is changed on top; anything else is the user's now and is left.
    Returns notes (also events, with `store`).
    """
    note_file = _intent(ws, target)
    try:
        intent = json.loads(note_file.read_text())
    except (OSError, ValueError):
        return []
    notes = []
    for raw in intent.get("paths", []):
        path, old = Path(raw), intent.get("old", "")
        if not path.is_dir() or run_git("symbolic-ref", "-q", "HEAD", cwd=path).stdout.strip() != f"refs/heads/{target}":
            continue
        tip = run_git("rev-parse", "--verify", "-q", "HEAD", cwd=path).stdout.strip()
        untouched = (run_git("diff", "--cached", "--quiet", old, cwd=path).returncode == 0
                     and run_git("diff", "--quiet", cwd=path).returncode == 0)
        if not tip or tip == old or not untouched:
            continue
        if run_git("read-tree", "-m", "-u", old, tip, cwd=path).returncode == 0:
            notes.append(f"fast-forwarded your checkout {_where(ws, path)} of {target} to {tip[:9]} (the move "
                         f"from {old[:9]} was interrupted before it could)")
    note_file.unlink(missing_ok=True)
    if store is not None:
        for note in notes:
            store.event("checkout.repaired", note, actor="cowork", data={"target": target})
    return notes


def _detach_and_tell(ws, plan: CheckoutPlan, path: Path) -> str:
    _detach(path, plan.old, plan.target)
    note = _dirty_note(ws, path, plan.target, plan.old)
    plan.detached.append(path)
    plan.notes.append(note)
    if plan.store is not None:
        plan.store.event("checkout.detached", note, actor="cowork", task=plan.task,
                         data={"path": str(path), "commit": plan.old, "target": plan.target})
    return note


def _where(ws, path: Path) -> str:
    return "in the repository root" if path.resolve() == ws.root.resolve() else f"at {path}"


def _dirty_note(ws, path: Path, target: str, old: str) -> str:
    return (f"{target} moved, but your checkout {_where(ws, path)} has uncommitted changes, so cowork left its files "
            f"alone and detached its HEAD at the previous {target} ({old[:9]}); run `git checkout {target}` there "
            f"when ready (your changes come along unless they clash; then commit or stash them first)")


def detached_here(ws, target: str) -> str | None:
    """When cowork detached the repository root's checkout (it had changes when `target` moved) and it is still
    detached there: what to tell the user. Else None."""
    from cowork.gitops.git import current_branch

    if current_branch(ws.root) is not None:
        return None
    proc = run_git("reflog", "-1", "--format=%h %gs", "HEAD", cwd=ws.root)
    sha, _, why = proc.stdout.strip().partition(" ")
    if proc.returncode != 0 or not why.startswith(f"cowork: {target} moved"):
        return None
    return (f"your checkout is detached at {sha}: {target} moved while it had uncommitted changes; run "
            f"`git checkout {target}` when ready (commit or stash first if they clash)")
