"""Running the `git` command line for small queries, with failures turned into errors a user can act on."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from cowork.errors import CoworkError


class GitFailed(CoworkError):
    """A git command exited non-zero; `stderr` holds what git said."""

    def __init__(self, args: list[str], returncode: int, stderr: str):
        self.args_ = args
        self.returncode = returncode
        self.stderr = stderr.strip()
        super().__init__(f"`git {' '.join(args)}` failed: {self.stderr or f'exit {returncode}'}")


def git(cwd: Path | str, *args: str, check: bool = True, input: str | None = None) -> str:
    """Run `git <args>` in `cwd` and return its stdout without the trailing newline.

    Raises:
        GitFailed: when `check` and git exits non-zero.
        CoworkError: when git is not installed.
    """
    if shutil.which("git") is None:
        raise CoworkError("git is not installed", hint="install git and try again")
    proc = subprocess.run(["git", *args], cwd=str(cwd), capture_output=True, text=True, input=input,
                          timeout=120)
    if check and proc.returncode != 0:
        raise GitFailed(list(args), proc.returncode, proc.stderr)
    return proc.stdout.rstrip("\n")


def toplevel(path: Path | str) -> Path | None:
    """The root of the git work tree containing `path`, or None when it is not inside one."""
    try:
        out = git(path, "rev-parse", "--show-toplevel")
    except GitFailed:
        return None
    return Path(out).resolve() if out else None


def rev(cwd: Path | str, ref: str) -> str | None:
    """The commit `ref` points at, or None when it does not exist (e.g. a repo with no commits)."""
    try:
        out = git(cwd, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    except GitFailed:
        return None
    return out or None


def current_branch(cwd: Path | str) -> str | None:
    """The checked-out branch (also on an unborn branch), or None when HEAD is detached."""
    try:
        return git(cwd, "symbolic-ref", "--quiet", "--short", "HEAD") or None
    except GitFailed:
        return None
