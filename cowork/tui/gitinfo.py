"""Read-only git lookups for mission control: main's head, a lane's packet and its diff stat.

Called from worker threads only: git may be slow, and the UI must never wait on it.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

TIMEOUT_S = 10


def git(root: Path, *args: str) -> str | None:
    """stdout of `git args` in `root`, or None if it failed."""
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def head(root: Path, target: str) -> tuple[str | None, str]:
    """(short sha, subject) of `target`, or (None, "") when it has no commits yet."""
    out = git(root, "log", "-1", "--format=%h%x00%s", target, "--")
    if not out:
        return None, ""
    sha, _, subject = out.strip().partition("\x00")
    return sha, subject


def packet(root: Path, *, task: str, lane: str, branch: str | None, worktree: str | None,
           target: str) -> tuple[str | None, str]:
    """The lane's handoff packet and where it was found: its branch, its worktree, `target`, or the checkout."""
    rel = f"handoffs/{task}/{lane}.md"
    if branch:
        text = git(root, "show", f"{branch}:{rel}")
        if text is not None:
            return text, f"{branch}:{rel}"
    if worktree and (Path(worktree) / rel).is_file():
        return (Path(worktree) / rel).read_text(encoding="utf-8", errors="replace"), str(Path(worktree) / rel)
    text = git(root, "show", f"{target}:{rel}")
    if text is not None:
        return text, f"{target}:{rel}"
    if (root / rel).is_file():
        return (root / rel).read_text(encoding="utf-8", errors="replace"), rel
    return None, rel


def diff_stat(root: Path, *, branch: str | None, base: str | None, merge_commit: str | None, target: str) -> str:
    """`git diff --stat` of the lane's work: its branch against its base (or target), or its merge commit."""
    if branch and git(root, "rev-parse", "--verify", "--quiet", f"{branch}^{{commit}}") is not None:
        out = git(root, "diff", "--stat", f"{base or target}...{branch}")
        if out is not None:
            return out.rstrip() or "(no changes)"
    if merge_commit:
        out = git(root, "diff", "--stat", f"{merge_commit}^1", merge_commit)
        if out is not None:
            return out.rstrip() or "(no changes)"
    return "(no branch yet)"
