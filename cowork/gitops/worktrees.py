"""Lane worktrees: one branch `cowork/<task>/<lane>` and one worktree `.cowork/worktrees/<task>/<lane>` per lane.

Worktrees live under the git-ignored `.cowork/`, never in the user's own working tree. Creating a lane's worktree is
idempotent: a resumed lane gets its existing branch and worktree back, commits and all.
"""
from __future__ import annotations

import contextlib
import fcntl
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from cowork.errors import BadInput, CoworkError
from cowork.gitops.git import (
    GitError, agent_identity, branch_exists, git, head, identity_env, is_ancestor, run_git, tips, trailer_block,
)

MERGE_TREE = "_merge"


@dataclass(frozen=True)
class LaneTree:
    """Where a lane works: its worktree, its branch, and the commit the branch started from."""

    path: Path
    branch: str
    base_commit: str
    created: bool = False


@dataclass(frozen=True)
class Worktree:
    path: Path
    head: str | None
    branch: str | None  # full ref (refs/heads/...), None when detached
    prunable: bool


def lane_branch(task: str, lane: str) -> str:
    return f"cowork/{task}/{lane}"


def lane_path(ws, task: str, lane: str) -> Path:
    return ws.worktrees_dir / task / lane


def ensure_state_ignored(ws) -> None:
    """Make `.cowork/` invisible to git without editing the user's .gitignore (a `*` ignore file inside it)."""
    ws.state_dir.mkdir(parents=True, exist_ok=True)
    ignore = ws.state_dir / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# cowork runtime state (database, worktrees, logs): never committed\n*\n")


_thread_mutex = threading.RLock()


@contextlib.contextmanager
def worktree_mutex(ws) -> Iterator[None]:
    """Serialise adding and removing worktrees across threads and processes.

    Concurrent `git worktree add` calls read each other's half-written admin directories and fail.
    """
    ws.state_dir.mkdir(parents=True, exist_ok=True)
    with _thread_mutex, open(ws.state_dir / "worktrees.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def list_worktrees(cwd: Path | str) -> list[Worktree]:
    """Every worktree of the repository at `cwd`, the main one first."""
    for attempt in range(5):
        try:
            out = git("worktree", "list", "--porcelain", cwd=cwd)
            break
        except GitError:  # another process is half-way through adding one; its admin files appear in a moment
            if attempt == 4:
                raise
            time.sleep(0.05 * (attempt + 1))
    trees, cur = [], {}
    for line in out.splitlines() + [""]:
        if not line:
            if cur:
                trees.append(Worktree(Path(cur["worktree"]), cur.get("HEAD"), cur.get("branch"), "prunable" in cur))
            cur = {}
            continue
        key, _, value = line.partition(" ")
        cur[key] = value
    return trees


def resolve_base(ws, base: str) -> str:
    """The commit `base` names: a local branch first, then any revision.

    Raises:
        BadInput: when `base` names no commit.
    """
    for rev in (f"refs/heads/{base}", base):
        proc = run_git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", cwd=ws.root)
        if proc.returncode == 0:
            return proc.stdout.strip()
    raise BadInput(f"'{base}' names no commit in {ws.root}", hint="check the merge target in cowork.toml")


def create_lane_worktree(ws, task: str, lane: str, base: str = "main") -> LaneTree:
    """The lane's branch and worktree, created at the tip of `base` or reused as they are.

    An existing branch is never moved or reset: its commits are the lane's work so far. `base_commit` is then the
    point where the branch left `base`.
    """
    ensure_state_ignored(ws)
    branch, path = lane_branch(task, lane), lane_path(ws, task, lane)
    found = tips(ws.root, f"refs/heads/{base}", f"refs/heads/{branch}")  # one git process for both
    tip = found[f"refs/heads/{base}"] or resolve_base(ws, base)
    if found[f"refs/heads/{branch}"] is None and not path.exists():
        # a new lane: branch and worktree in one `git worktree add -b` (it refuses an existing branch, never moves it)
        path.parent.mkdir(parents=True, exist_ok=True)
        with worktree_mutex(ws):
            proc = run_git("worktree", "add", "--quiet", "-b", branch, str(path), tip, cwd=ws.root)
        if proc.returncode == 0:
            return LaneTree(path, branch, tip, True)
    created = False
    if branch_exists(ws.root, branch):
        base_commit = git("merge-base", f"refs/heads/{branch}", tip, cwd=ws.root)
    else:
        proc = run_git("branch", branch, tip, cwd=ws.root)
        if proc.returncode != 0 and not branch_exists(ws.root, branch):  # lost a race to another creator: reuse
            raise GitError(["git", "branch", branch, tip], proc.returncode, proc.stderr)
        base_commit, created = tip, proc.returncode == 0
    with worktree_mutex(ws):
        created = _attach(ws, path, branch) or created
    return LaneTree(path, branch, base_commit, created)


def _attach(ws, path: Path, branch: str) -> bool:
    """Check `branch` out at `path` unless it already is. Returns whether a worktree was added."""
    ref = f"refs/heads/{branch}"
    for tree in list_worktrees(ws.root):
        same_path = tree.path.resolve() == path.resolve()
        if tree.prunable and (same_path or tree.branch == ref):
            git("worktree", "prune", cwd=ws.root)
        elif same_path:
            if tree.branch == ref:
                return False
            raise CoworkError(f"{ws.rel(path)} is a worktree of {tree.branch or 'a detached HEAD'}, not {branch}",
                              hint=f"remove it with `git worktree remove {path}`")
        elif tree.branch == ref:
            raise CoworkError(f"branch {branch} is already checked out at {tree.path}",
                              hint=f"remove that worktree with `git worktree remove {tree.path}`")
    if path.exists() and any(path.iterdir()):
        raise CoworkError(f"{ws.rel(path)} exists and is not a git worktree", hint="move it out of the way")
    path.parent.mkdir(parents=True, exist_ok=True)
    git("worktree", "add", "--quiet", str(path), branch, cwd=ws.root)
    return True


def remove_lane_worktree(ws, task: str, lane: str, delete_branch: bool = False, *, force: bool = False,
                         target: str = "main") -> None:
    """Remove the lane's worktree (and its branch when `delete_branch`).

    Without `force`, a worktree with uncommitted changes is kept, and the branch is deleted only when its commits
    are all on `target`: nothing committed is ever lost.

    Raises:
        CoworkError: when the worktree is dirty or the branch holds unmerged commits (and not `force`).
    """
    branch, path = lane_branch(task, lane), lane_path(ws, task, lane)
    with worktree_mutex(ws):
        registered = any(t.path.resolve() == path.resolve() for t in list_worktrees(ws.root))
        if registered:
            proc = run_git("worktree", "remove", *(["--force"] if force else []), str(path), cwd=ws.root)
            if proc.returncode != 0:
                raise CoworkError(f"cannot remove worktree {ws.rel(path)}: {proc.stderr.strip()}",
                                  hint="commit or discard its changes first")
        else:
            git("worktree", "prune", cwd=ws.root)
        for parent in (path, path.parent):
            if parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
    if delete_branch and branch_exists(ws.root, branch):
        merged = branch_exists(ws.root, target) and is_ancestor(ws.root, f"refs/heads/{branch}", f"refs/heads/{target}")
        if not (merged or force):
            raise CoworkError(f"branch {branch} has commits that are not on {target}; kept it",
                              hint="merge it first, or pass force=True to drop it")
        git("branch", "-D", branch, cwd=ws.root)


_SUMMARY_SHA = re.compile(r"^\[[^\]]* ([0-9a-f]{40,64})\]", re.M)


def commit_all(path: Path | str, message: str, *, role: str, trailers: dict[str, str] | None = None) -> str | None:
    """Commit every change in the worktree at `path` as `role` (see cowork.gitops.git for who is recorded).

    Returns:
        The new commit id, or None when there was nothing to commit.
    """
    staged = git("add", "--all", "--verbose", cwd=path)
    # nothing added now may still leave earlier staged changes: ask the index; something added is usually a commit
    if not staged and run_git("diff", "--cached", "--quiet", cwd=path).returncode == 0:
        return None
    env = identity_env(agent_identity(role), path)
    # one git process: the trailers are a paragraph of their own at the very end (as `git commit --trailer` puts
    # them, but without its `interpret-trailers` child; an agent's own "Key: value" lines never join the block),
    # the full id is read from the summary line, and the automatic upkeep `git maintenance run --auto` (another
    # child per commit) is left to the user's own git commands: lane commits come in bursts while lanes wait
    text = trailer_block(message, list(trailers.items())) if trailers else message
    proc = run_git("-c", "core.abbrev=no", "-c", "maintenance.auto=false", "commit", "--cleanup=whitespace", "-F", "-",
                   cwd=path, env=env, input=text)  # whitespace: agents write markdown; "# heading" is no comment
    if proc.returncode != 0:
        if staged and run_git("diff", "--cached", "--quiet", cwd=path).returncode == 0:
            return None  # what was added only undid earlier staged changes: the index is HEAD again
        raise GitError(["git", "commit"], proc.returncode, proc.stderr, proc.stdout)
    found = _SUMMARY_SHA.search(proc.stdout)
    return found.group(1) if found else head(path)


def diff_stat(ws, branch: str, base: str) -> str:
    """`git diff --stat` of what `branch` changed since it left `base`."""
    return git("diff", "--stat", f"{base}...{branch}", cwd=ws.root)


def changed_files(ws, branch: str, base: str) -> list[str]:
    """Paths `branch` changed since it left `base`."""
    out = git("diff", "--name-only", "-z", f"{base}...{branch}", cwd=ws.root)
    return [p for p in out.split("\0") if p]
