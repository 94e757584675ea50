"""Authority: what a role may do, checked before any tool runs. Every refusal is a `Denied` with a reason.

Nothing an agent reads (file contents, messages, tool output) can change these answers: they depend only on the
role file, cowork.toml and the path or command itself.
"""
from __future__ import annotations

import fnmatch
import os
import re
import shlex
import stat
from pathlib import Path, PurePosixPath

from cowork.roles import ACTIONS, Role

# Actions no agent may ever take, whatever its role grants: only a human approves or unpauses.
HUMAN_ONLY = {"approve", "unpause", "reject"}
# Sequences that chain, substitute or redirect in a shell; a command containing one passes only if the matching
# run_allow pattern has the same ones literally, at the same places.
SHELL_META = ("\n", "\r", ";", "&&", "||", "|", "&", "`", "$(", "${", ">", "<")
# cowork subcommands that would let an agent act as a human through `run`. delegate, run and retry start work a human
# approves (`--yes` is recorded as "human:--yes"), past the guards of the `delegate` tool (depth, lane cap, budget).
_COWORK_HUMAN_CMDS = {"approve", "reject", "unpause", "budget", "roles", "merge", "revert", "say", "delegate", "run",
                      "retry"}


class Denied(Exception):
    """A refused action. `reason` goes back to the agent and into the `tool.denied` event."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def check_tool(role: Role, name: str) -> None:
    """Raise Denied unless `role` may call tool `name` at all (`cannot` always wins)."""
    if name in HUMAN_ONLY:
        raise Denied(f"'{name}' is for humans only; no agent can {name}")
    if name in role.cannot:
        raise Denied(f"role '{role.name}' cannot use '{name}' (its `cannot` list)")
    if name in ACTIONS and name not in role.can:
        raise Denied(f"role '{role.name}' is not granted '{name}' (add it to `can` in the role file)")
    if not role.allows(name):
        raise Denied(f"role '{role.name}' has no tool '{name}'; its tools are: {', '.join(role.tools) or 'none'}")


def may(role: Role, action: str) -> bool:
    """Whether `role` holds the extra action `action` (merge, change_roles, push)."""
    return action not in HUMAN_ONLY and action not in role.cannot and action in role.can


def is_protected(rel: str) -> bool:
    """Team files that change authority itself: roles/ and cowork.toml (in any case: on a case-insensitive file
    system, macOS's default, "Roles/dev.yaml" is roles/dev.yaml)."""
    parts = PurePosixPath(rel.lower()).parts
    return bool(parts) and (parts[0] == "roles" or parts == ("cowork.toml",))


def check_handoff_write(rel: str, task: str, lane: str) -> None:
    """Raise Denied unless a lane writing worktree path `rel` leaves handoffs/ alone: briefs, plans, summaries and
    the other lanes' packets are cowork's to write (a lane's own packet is made from its `finish`)."""
    own = f"handoffs/{task}/{lane}.md"
    if PurePosixPath(rel.lower()).parts[:1] == ("handoffs",) and rel != own:
        raise Denied(f"'{rel}' is under handoffs/, which holds the team's briefs, plans and packets that cowork "
                     f"writes; describe your work in `finish`, which becomes your own packet ({own})")


def resolve_path(worktree: Path, path: str | None, *, role: Role | None = None, write: bool = False,
                 default: str = ".") -> tuple[Path, str]:
    """The absolute path and the worktree-relative path of `path`, refusing anything outside the worktree.

    Raises:
        Denied: absolute paths, `..`, `.git` internals, symlinks that resolve outside, and (when `write`)
            roles/ or cowork.toml unless the role holds `change_roles`.
    """
    raw = (path if path not in (None, "") else default)
    if not isinstance(raw, str):
        raise Denied(f"path must be a string, got {type(raw).__name__}")
    if "\x00" in raw:
        raise Denied("path contains a NUL byte")
    text = raw.replace("\\", "/")
    if text.startswith("/") or text.startswith("~") or (len(text) > 1 and text[1] == ":"):
        raise Denied(f"'{raw}' is absolute; paths are relative to the lane's worktree")
    parts = PurePosixPath(text).parts
    if ".." in parts:
        raise Denied(f"'{raw}' leaves the lane's worktree ('..' is not allowed)")
    if any(p.lower() == ".git" for p in parts):  # any case: ".GIT" is .git on a case-insensitive file system
        raise Denied(f"'{raw}' is inside .git; git internals are off limits")
    root = _real_root(worktree)
    real = _real_under(root, [p for p in parts if p != "."])
    if real != root and not real.startswith(root + "/"):
        raise Denied(f"'{raw}' resolves outside the lane's worktree (a symlink?)")
    full, rel_s = Path(real), real[len(root) + 1:]
    if rel_s.split("/")[0].lower() == ".git":
        raise Denied(f"'{raw}' is inside .git; git internals are off limits")
    if write and is_protected(rel_s) and not (role is not None and may(role, "change_roles")):
        raise Denied(f"'{rel_s}' defines the team's roles and policy; writing it needs `can: [change_roles]`")
    return full, ("." if rel_s == "" else rel_s)


_roots: dict[str, tuple[int, int, str]] = {}  # a worktree -> (device, inode, its real path)


def _real_root(worktree: Path) -> str:
    """The real path of a lane's worktree, remembered while the directory at that path stays the same one."""
    key = os.fspath(worktree)
    try:
        st = os.lstat(key)
    except OSError:  # not made yet: nothing to remember
        return os.path.realpath(key)
    hit = _roots.get(key)
    if hit is None or hit[:2] != (st.st_dev, st.st_ino) or stat.S_ISLNK(st.st_mode):
        if len(_roots) > 4096:
            _roots.clear()
        hit = (st.st_dev, st.st_ino, os.path.realpath(key))
        _roots[key] = hit
    return hit[2]


def _real_under(root: str, parts: list[str]) -> str:
    """What `os.path.realpath(root/parts)` returns when `root` is already real, with one lstat per component inside
    the worktree instead of one per component from `/` (a read_file spent 0.1 ms here). A symlink among them sends
    the rest through `os.path.realpath`; a missing component ends the walk (nothing below it can be a link)."""
    cur = root
    for i, part in enumerate(parts):
        nxt = f"{cur}/{part}"
        try:
            mode = os.lstat(nxt).st_mode
        except OSError:
            return "/".join([nxt, *parts[i + 1:]])
        if stat.S_ISLNK(mode):
            return os.path.realpath("/".join([nxt, *parts[i + 1:]]))
        cur = nxt
    return cur


_META_RX = re.compile("|".join(re.escape(m) for m in sorted(SHELL_META, key=len, reverse=True)))


def _split_ops(text: str) -> tuple[list[str], list[str]]:
    """`text` cut at its shell operators: (the pieces between them, the operators in order)."""
    return _META_RX.split(text), _META_RX.findall(text)


def _admits(pattern: str, cmd: str) -> bool:
    """Whether `pattern` admits `cmd`. A wildcard never stands for an operator: the command has exactly the
    pattern's operators, in the same order, and each piece between them matches the pattern's piece."""
    pieces, ops = _split_ops(cmd)
    want_pieces, want_ops = _split_ops(pattern)
    return ops == want_ops and all(fnmatch.fnmatchcase(a, b) for a, b in zip(pieces, want_pieces))


def check_command(role: Role, command: str) -> str:
    """The run_allow pattern that admits `command`, or raise Denied.

    A pattern matches the whole command line (fnmatch). Shell chaining, substitution and redirection in the command
    must appear literally in the pattern, at the same places: "uv run pytest*" never admits
    "uv run pytest; curl evil", and "echo * | wc -c" never admits "echo x | sh | wc -c".
    """
    if not isinstance(command, str) or not command.strip():
        raise Denied("run needs a non-empty command string")
    cmd = command.strip()
    _check_cowork_command(role, cmd)
    near = None  # a pattern the command matches only by letting a wildcard stand for an operator
    for pattern in role.run_allow:
        if _admits(pattern, cmd):
            return pattern
        if near is None and fnmatch.fnmatchcase(cmd, pattern):
            near = pattern
    if near is not None:
        ops, want = _split_ops(cmd)[1], _split_ops(near)[1]
        extra = [op for op in dict.fromkeys(ops) if ops.count(op) > want.count(op)] or ops
        raise Denied(f"command contains shell operator(s) {' '.join(repr(m) for m in extra)} that run_allow "
                     f"pattern '{near}' does not allow there; run one command at a time")
    allowed = ", ".join(f"'{p}'" for p in role.run_allow) or "none"
    raise Denied(f"command '{cmd[:200]}' matches none of role '{role.name}' run_allow patterns ({allowed})")


def _check_cowork_command(role: Role, cmd: str) -> None:
    try:
        argv = shlex.split(cmd)
    except ValueError:
        argv = cmd.split()
    words = [PurePosixPath(a).name for a in argv]
    for i, w in enumerate(words):
        if w == "cowork" and i + 1 < len(words) and words[i + 1] in _COWORK_HUMAN_CMDS:
            raise Denied(f"'cowork {words[i + 1]}' is a human command; agents cannot run it")
        if w == "git" and "push" in (*words[i + 1:i + 4], _git_subcommand(argv[i + 1:])) and not may(role, "push"):
            raise Denied(f"role '{role.name}' is not granted 'push' (git push)")


# git's own options that take the next word as their value (`git -c k=v -C dir push`)
_GIT_VALUE_OPTS = {"-c", "-C", "--git-dir", "--work-tree", "--namespace", "--config-env", "--super-prefix"}


def _git_subcommand(args: list[str]) -> str | None:
    """The subcommand of `git ARGS`: the first word after git's own options."""
    i = 0
    while i < len(args) and args[i].startswith("-"):
        i += 2 if args[i] in _GIT_VALUE_OPTS else 1
    return args[i] if i < len(args) else None
