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

from dataclasses import dataclass, field
from pathlib import Path

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


def before_move(ws, target: str, old: str) -> CheckoutPlan:
    """Inspect (and, when dirty, detach) every checkout of `target` before its ref moves from `old`."""
    plan = CheckoutPlan(target, old)
    ref = f"refs/heads/{target}"
    own = ws.worktrees_dir.resolve()
    for tree in list_worktrees(ws.root):
        if tree.branch != ref or tree.prunable or tree.path.resolve().is_relative_to(own):
            continue
        if _clean(tree.path):
            plan.clean.append(tree.path)
        else:
            _detach(tree.path, old, target)
            plan.detached.append(tree.path)
            plan.notes.append(_dirty_note(ws, tree.path, target, old))
    return plan


def after_move(ws, plan: CheckoutPlan, new: str) -> list[str]:
    """Fast-forward the clean checkouts in `plan` to `new`. Returns notes for the user (one per checkout)."""
    notes = list(plan.notes)
    for path in plan.clean:
        proc = run_git("read-tree", "-m", "-u", plan.old, new, cwd=path)
        if proc.returncode == 0:
            notes.append(f"fast-forwarded your checkout {_where(ws, path)} of {plan.target} to {new[:9]}")
        else:  # it changed between the check and the move: leave its files, keep its HEAD truthful
            _detach(path, plan.old, plan.target)
            notes.append(_dirty_note(ws, path, plan.target, plan.old))
    return notes


def _where(ws, path: Path) -> str:
    return "in the repository root" if path.resolve() == ws.root.resolve() else f"at {path}"


def _dirty_note(ws, path: Path, target: str, old: str) -> str:
    return (f"{target} moved, but your checkout {_where(ws, path)} has uncommitted changes, so cowork left its files "
            f"alone and detached its HEAD at the previous {target} ({old[:9]}); run `git checkout {target}` there "
            f"when ready (your changes come along unless they clash; then commit or stash them first)")
