"""The merger's workshop: its own detached worktree, the merge checks, and the compare-and-swap move of the target.

Shared by merging and reverting. Callers hold the merge lock; nothing here takes it.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cowork.errors import CoworkError
from cowork.gitops.git import GitError, git, git_dir, git_env, head, run_git
from cowork.gitops.worktrees import MERGE_TREE, ensure_state_ignored, worktree_mutex

MAX_ATTEMPTS = 3          # merges redone on a new tip when the target moved under us
OUTPUT_TAIL = 20_000      # characters of check output kept for the lane and the timeline


class TargetRaced(GitError):
    """The target kept moving under the merger for every attempt."""


def merge_tree(ws) -> Path:
    """The merger's worktree `.cowork/worktrees/_merge` (detached), created on first use."""
    path = ws.worktrees_dir / MERGE_TREE
    with contextlib.suppress(OSError, GitError):
        if (git_dir(path) / "HEAD").is_file():
            return path
    ensure_state_ignored(ws)
    with worktree_mutex(ws):
        git("worktree", "prune", cwd=ws.root)
        if path.exists():  # ours, left by a crash or a pruned registration: nothing in it is anyone's work
            shutil.rmtree(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        git("worktree", "add", "--quiet", "--detach", str(path), "HEAD", cwd=ws.root)
    return path


def reset_tree(path: Path, commit: str) -> None:
    """Put the merge worktree at `commit`, detached, with no leftover merge, revert, change or stray file."""
    gitdir = git_dir(path)
    if (gitdir / "MERGE_HEAD").exists():
        run_git("merge", "--abort", cwd=path)
    if (gitdir / "REVERT_HEAD").exists() or (gitdir / "sequencer").exists():
        run_git("revert", "--quit", cwd=path)
    git("checkout", "--quiet", "--force", "--detach", commit, cwd=path)
    git("clean", "-ffdq", cwd=path)


def unmerged_files(path: Path) -> list[str]:
    out = git("diff", "--name-only", "-z", "--diff-filter=U", cwd=path)
    return sorted({p for p in out.split("\0") if p})


def conflict_markers(cwd: Path | str, *revs: str) -> list[str]:
    """Conflict markers (`<<<<<<<`, `=======`, `>>>>>>>` lines) that the diff `revs` (as `git diff` takes them: two
    commits, or "A...B") adds, as "path:line", by git's own rule (`git diff --check`; a `conflict-marker-size`
    attribute changes what counts). Whitespace errors, which the same check reports, are not counted."""
    proc = run_git("-c", "core.quotePath=false", "diff", "--check", *revs, cwd=cwd)
    flagged: dict[str, list[int]] = {}
    for line in proc.stdout.splitlines():
        if line.endswith(": leftover conflict marker"):
            path, _, num = line.rsplit(": ", 1)[0].rpartition(":")
            flagged.setdefault(path, []).append(int(num))
    # a conflict leaves a whole block: an opening and a closing marker. A markdown heading underlined with exactly
    # seven `=` (which git's rule also flags) is not one
    new = revs[-1].split("...")[-1] or "HEAD"
    found = []
    for path, nums in flagged.items():
        text = run_git("show", f"{new}:{path}", cwd=cwd).stdout.splitlines()
        marks = {text[n - 1][:1] for n in nums if 0 < n <= len(text)}
        if {"<", ">"} <= marks:
            found += [f"{path}:{n}" for n in nums]
    return found


def target_tip(ws, target: str) -> str:
    return head(ws.root, f"refs/heads/{target}")


def cas_move(ws, target: str, new: str, old: str, reason: str) -> bool:
    """Move `refs/heads/<target>` from `old` to `new` only if it still points at `old`. Returns whether it moved."""
    proc = run_git("update-ref", "-m", reason, f"refs/heads/{target}", new, old, cwd=ws.root)
    if proc.returncode == 0:
        return True
    if target_tip(ws, target) != old:
        return False
    raise GitError(["git", "update-ref", f"refs/heads/{target}", new, old], proc.returncode, proc.stderr)


@dataclass
class ChecksResult:
    ok: bool
    output: str = ""
    command: str | None = None   # the command that failed
    returncode: int | None = None


class ChecksInterrupted(CoworkError):
    """The merger was asked to stop (its runner got SIGTERM or Ctrl-C) while a merge check ran: the check was killed
    and the merge abandoned; the lane keeps its place in the queue."""


def run_checks(path: Path, commands: list[str], *, timeout_s: float, env: dict[str, str] | None = None,
               procs_dir: Path | None = None, stop: threading.Event | None = None,
               pass_env: list[str] | tuple[str, ...] = ()) -> ChecksResult:
    """Run shell `commands` in `path` in order, stopping at the first failure or timeout. `procs_dir`: the state
    directory where each running check is noted (cowork.procs.tracked), for a runner that dies meanwhile. `stop`:
    set from another thread, it kills the running check and raises ChecksInterrupted. `pass_env`: secret-looking
    variables the checks get all the same (`[policy] pass_env`).

    Raises:
        ChecksInterrupted: `stop` was set.
    """
    from cowork.procs import child_env, tracked

    log: list[str] = []
    for cmd in commands:
        # the checks run the lanes' code: without the team's keys, as `run` and a role's checks
        proc = subprocess.Popen(cmd, shell=True, cwd=str(path), env=child_env(git_env(env), pass_env),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                                errors="replace", start_new_session=True)
        try:
            with tracked(procs_dir, proc.pid, f"merge check `{cmd}`"):
                out = _communicate(proc, timeout_s, stop)
            code = proc.returncode
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the whole group: a shell's children would outlive it
            out, _ = proc.communicate(timeout=10)
            out = (out or "") + f"\n[timed out after {timeout_s:g}s]"
            code = -signal.SIGKILL
        log.append(f"$ {cmd}\n{out or ''}".rstrip())
        if code != 0:
            text = "\n".join(log)
            return ChecksResult(False, text[-OUTPUT_TAIL:], cmd, code)
    return ChecksResult(True, "\n".join(log)[-OUTPUT_TAIL:])


def _communicate(proc: subprocess.Popen, timeout_s: float, stop: threading.Event | None) -> str:
    """`proc.communicate(timeout=timeout_s)`, watching `stop` meanwhile (ChecksInterrupted, the group killed)."""
    if stop is None:
        return proc.communicate(timeout=timeout_s)[0]
    deadline = time.monotonic() + timeout_s
    while True:
        if stop.is_set():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise ChecksInterrupted("the merger was stopped while a merge check ran; the merge was abandoned")
        left = deadline - time.monotonic()
        if left <= 0:
            raise subprocess.TimeoutExpired(proc.args, timeout_s)
        try:
            return proc.communicate(timeout=min(0.2, left))[0]
        except subprocess.TimeoutExpired:
            continue


# -- finding cowork's merges in history -------------------------------------------------------------------------


@dataclass(frozen=True)
class MergeCommit:
    sha: str
    task: str
    lane: str
    role: str
    subject: str


def _fmt(key: str) -> str:
    return f"%(trailers:key={key},valueonly,separator=%x2C)"


def find_merges(ws, target: str, task: str, lane: str | None = None) -> list[MergeCommit]:
    """cowork's merge commits of `task` (one lane, or all of them) on the target's first-parent line, newest first."""
    fmt = "%H%x1f" + "%x1f".join(_fmt(k) for k in ("Cowork-Task", "Cowork-Lane", "Cowork-Role")) + "%x1f%s"
    out = git("log", "-z", "--first-parent", "--merges", "--fixed-strings", f"--grep=Cowork-Task: {task}",
              f"--format={fmt}", f"refs/heads/{target}", "--", cwd=ws.root)
    found = []
    for record in filter(None, out.split("\0")):
        sha, t, ln, role, subject = (record.strip("\n").split("\x1f") + [""] * 5)[:5]
        if t == task and (lane is None or ln == lane):
            found.append(MergeCommit(sha, t, ln, role, subject))
    return found


def reverted_commits(ws, target: str) -> set[str]:
    """Commits named by a `Cowork-Revert-Of` trailer on the target."""
    out = git("log", "--fixed-strings", "--grep=Cowork-Revert-Of:", f"--format={_fmt('Cowork-Revert-Of')}",
              f"refs/heads/{target}", "--", cwd=ws.root)
    return {sha.strip() for line in out.splitlines() for sha in line.split(",") if sha.strip()}
