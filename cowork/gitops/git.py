"""One way to call git, plus the small queries and identities every other gitops module uses.

Who is recorded on commits cowork makes:

- Agent commits (`commit_all` in a lane worktree): the **author** is the role, ``<role> (cowork)
  <role@cowork.local>``, because the role wrote the change and `git log --author=dev` should find it. The
  **committer** is the human who runs the team: their configured identity (``GIT_COMMITTER_NAME``/``_EMAIL``, else
  ``user.name``/``user.email``), because they are accountable for what cowork records in their repository; when no
  identity is configured (a CI box, a fresh container) it is ``cowork <cowork@cowork.local>`` so committing never
  fails with "Please tell me who you are".
- Merge and revert commits: the author is the merger, ``merger (cowork) <merger@cowork.local>`` (the merge is the
  merger's act, not the role's); the committer is the human as above. The role, task and lane are in the trailers
  (`Cowork-Role`, `Cowork-Task`, `Cowork-Lane`), which is what `git log` queries should use.
"""
from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from cowork.errors import CoworkError

# Variables a parent git process (a hook, `git rebase --exec`) may export; they would point our calls at its repo.
_LEAKY_ENV = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_PREFIX",
              "GIT_COMMON_DIR", "GIT_NAMESPACE")


class GitError(CoworkError):
    """A git command failed."""

    def __init__(self, cmd: list[str], returncode: int, stderr: str, stdout: str = ""):
        self.cmd, self.returncode, self.stderr, self.stdout = cmd, returncode, stderr.strip(), stdout
        detail = self.stderr or stdout.strip() or "(no output)"
        super().__init__(f"`{' '.join(cmd)}` failed (exit {returncode}): {detail}")


def git_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a git subprocess: ours minus leaked repo pointers, never prompting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in _LEAKY_ENV}
    env["GIT_TERMINAL_PROMPT"] = "0"
    env.setdefault("GIT_EDITOR", "true")
    if extra:
        env.update(extra)
    return env


def run_git(*args: str, cwd: Path | str, env: dict[str, str] | None = None,
            input: str | None = None, timeout: float | None = 600) -> subprocess.CompletedProcess:
    """Run `git *args` in `cwd` and return the completed process whatever its exit code."""
    cmd = ["git", *args]
    try:
        return subprocess.run(cmd, cwd=str(cwd), env=git_env(env), input=input, capture_output=True, text=True,
                              timeout=timeout)
    except FileNotFoundError:
        if not Path(cwd).is_dir():
            raise CoworkError(f"{cwd} is not a directory") from None
        raise CoworkError("git is not installed", hint="install git and try again") from None


def git(*args: str, cwd: Path | str, check: bool = True, env: dict[str, str] | None = None,
        input: str | None = None) -> str:
    """Run `git *args` in `cwd`; return stdout without surrounding whitespace.

    Raises:
        GitError: when git exits non-zero and `check` is true.
    """
    proc = run_git(*args, cwd=cwd, env=env, input=input)
    if check and proc.returncode != 0:
        raise GitError(["git", *args], proc.returncode, proc.stderr, proc.stdout)
    return proc.stdout.strip()


def head(cwd: Path | str, ref: str = "HEAD") -> str:
    """The commit id `ref` points at."""
    return git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", cwd=cwd)


def rev(cwd: Path | str, ref: str) -> str | None:
    """The commit `ref` points at, or None when it does not exist (e.g. a repo with no commits)."""
    proc = run_git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", cwd=cwd)
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def toplevel(path: Path | str) -> Path | None:
    """The root of the git work tree containing `path`, or None when it is not inside one."""
    proc = run_git("rev-parse", "--show-toplevel", cwd=path)
    out = proc.stdout.strip()
    return Path(out).resolve() if proc.returncode == 0 and out else None


def ref_exists(cwd: Path | str, ref: str) -> bool:
    """Whether `ref` (a full ref such as refs/heads/main, or any revision) names a commit."""
    return run_git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", cwd=cwd).returncode == 0


def tips(cwd: Path | str, *refs: str) -> dict[str, str | None]:
    """The commits full refs (refs/heads/...) point at, in one call; None for a ref that does not exist."""
    out = git("for-each-ref", "--format=%(refname) %(objectname)", *refs, cwd=cwd)
    found = dict(line.split(" ", 1) for line in out.splitlines())
    return {ref: found.get(ref) for ref in refs}


def git_dir(worktree: Path | str) -> Path:
    """The administrative directory of a worktree (`.git` itself for the main one), read without running git."""
    dot = Path(worktree, ".git")
    if dot.is_dir():
        return dot
    text = dot.read_text(encoding="utf-8").strip()
    if not text.startswith("gitdir:"):
        raise GitError(["read", str(dot)], 1, f"{dot} is not a git worktree link")
    target = Path(text.split(":", 1)[1].strip())
    return target if target.is_absolute() else (Path(worktree) / target).resolve()


def branch_exists(cwd: Path | str, branch: str) -> bool:
    return ref_exists(cwd, f"refs/heads/{branch}")


def is_ancestor(cwd: Path | str, ancestor: str, descendant: str) -> bool:
    """Whether `ancestor` is reachable from `descendant` (a merge of it would change nothing)."""
    proc = run_git("merge-base", "--is-ancestor", ancestor, descendant, cwd=cwd)
    if proc.returncode not in (0, 1):
        raise GitError(["git", "merge-base", "--is-ancestor", ancestor, descendant], proc.returncode, proc.stderr)
    return proc.returncode == 0


def is_clean(cwd: Path | str, *, untracked: bool = True) -> bool:
    """Whether the worktree at `cwd` has no changes (staged, unstaged, and untracked unless `untracked=False`)."""
    mode = "--untracked-files=normal" if untracked else "--untracked-files=no"
    return git("status", "--porcelain", mode, cwd=cwd) == ""


def current_branch(cwd: Path | str) -> str | None:
    """The branch checked out at `cwd`, or None when HEAD is detached."""
    proc = run_git("symbolic-ref", "--quiet", "--short", "HEAD", cwd=cwd)
    return (proc.stdout.strip() or None) if proc.returncode == 0 else None


# -- identities ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    name: str
    email: str

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>"


COWORK = Identity("cowork", "cowork@cowork.local")
MERGER = Identity("merger (cowork)", "merger@cowork.local")


def agent_identity(role: str) -> Identity:
    """The author recorded on a role's commits."""
    return Identity(f"{role} (cowork)", f"{role}@cowork.local")


_config_cache: dict[str, tuple[float, dict[str, str]]] = {}
_CONFIG_TTL_S = 5.0  # a merge burst asks once; a changed user.name is seen within seconds


def _repo_key(cwd: Path | str) -> str:
    """The repository `cwd` belongs to, read from files (its common git dir), so every lane worktree of one repo
    shares one cached identity instead of asking git once per worktree. Falls back to `cwd` itself."""
    try:
        gd = git_dir(cwd)
        common = gd / "commondir"
        if common.is_file():
            gd = (gd / common.read_text(encoding="utf-8").strip()).resolve()
        return str(gd)
    except (OSError, GitError):
        return str(cwd)


def human_identity(cwd: Path | str) -> Identity | None:
    """The person running cowork, as git would record them (environment, then config), or None if unset."""
    name, email = os.environ.get("GIT_COMMITTER_NAME"), os.environ.get("GIT_COMMITTER_EMAIL")
    if not (name and email):
        key = _repo_key(cwd)
        hit = _config_cache.get(key)
        if hit is None or time.monotonic() - hit[0] > _CONFIG_TTL_S:
            out = run_git("config", "--get-regexp", r"^user\.(name|email)$", cwd=cwd).stdout
            hit = (time.monotonic(), dict(line.split(" ", 1) for line in out.splitlines() if " " in line))
            _config_cache[key] = hit
        name, email = name or hit[1].get("user.name"), email or hit[1].get("user.email")
    return Identity(name, email) if name and email else None


def identity_env(author: Identity, cwd: Path | str) -> dict[str, str]:
    """Environment variables that make the next commit carry `author` and the human (or cowork) as committer."""
    committer = human_identity(cwd) or COWORK
    return {"GIT_AUTHOR_NAME": author.name, "GIT_AUTHOR_EMAIL": author.email,
            "GIT_COMMITTER_NAME": committer.name, "GIT_COMMITTER_EMAIL": committer.email}


# -- trailers --------------------------------------------------------------------------------------------------


def with_trailers(message: str, trailers: dict[str, str] | list[tuple[str, str]] | None, *,
                  cwd: Path | str) -> str:
    """`message` with a trailer block appended (merged into an existing block, as `git interpret-trailers` does)."""
    items = list(trailers.items()) if isinstance(trailers, dict) else list(trailers or [])
    if not items:
        return message
    args = ["interpret-trailers", "--where", "end", "--if-exists", "addIfDifferent"]
    for key, value in items:
        # a trailer is one line; a newline in a value would end the block early
        args += ["--trailer", f"{key}: {' '.join(str(value).split())}"]
    return git(*args, cwd=cwd, input=message.rstrip("\n") + "\n") + "\n"


def trailer_block(message: str, trailers: list[tuple[str, str]]) -> str:
    """`message` (one cowork wrote itself, with no trailers of its own) followed by a trailer paragraph."""
    lines = "\n".join(f"{k}: {' '.join(str(v).split())}" for k, v in trailers)
    return f"{message.rstrip()}\n\n{lines}\n"


def read_trailers(message: str, *, cwd: Path | str) -> list[tuple[str, str]]:
    """The trailers of a commit message, in order."""
    # a commit message has no patch after it: a markdown rule ("---") in an agent's text ends nothing
    out = git("interpret-trailers", "--parse", "--no-divider", cwd=cwd, input=message)
    pairs = []
    for line in out.splitlines():
        key, _, value = line.partition(":")
        pairs.append((key.strip(), value.strip()))
    return pairs
