"""Built-in tools over the lane's worktree: read/write/list/search files, run an allowed command, git diff.

Each tool takes the lane context and the model's arguments and returns a ToolResult; authority checks (paths,
run_allow) raise `Denied`, which the gateway turns into a `tool.denied` event. Output is bounded so a tool can
never flood the model's context.
"""
from __future__ import annotations

import asyncio
import difflib
import errno
import fnmatch
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from cowork.procs import child_env, communicate_bounded, tracked
from cowork.redact import redact
from cowork.tools.authority import Denied, check_command, check_handoff_write, resolve_path
from cowork.tools.context import LaneCtx, ToolResult

MAX_OUTPUT = 20_000          # characters of tool output returned to the model
MAX_READ_LINES = 2_000
MAX_LIST = 500
MAX_MATCHES = 200
MAX_FILE_BYTES = 2_000_000   # files larger than this are not searched or read whole
RUN_TIMEOUT_S = 600.0
SEARCH_TIMEOUT_S = 60.0    # a search that takes longer is stopped


def bound(text: str, limit: int = MAX_OUTPUT) -> str:
    """`text` cut to `limit` characters, keeping the head and the tail. Secrets are masked before the cut (a key cut
    in two no longer looks like one), in the kept parts with a margin of `_MASK_MARGIN` characters past each cut, so
    huge output costs no more to mask than `limit` characters do."""
    if len(text) <= limit:
        return text
    half = limit // 2
    if len(text) <= limit + 4 * _MASK_MARGIN:
        text = redact(text)
        if len(text) <= limit:
            return text
        head, tail = text[:half], text[-half:]
    else:
        head, tail = redact(text[:half + _MASK_MARGIN])[:half], redact(text[-half - _MASK_MARGIN:])[-half:]
    return f"{head}\n... [{len(text) - limit} characters cut] ...\n{tail}"


_MASK_MARGIN = 8192  # longer than any secret that is masked (a 4096-bit private key block is about 3,300)


def _git(worktree: Path, *args: str, timeout: float = 60) -> str:
    proc = subprocess.run(["git", *args], cwd=worktree, capture_output=True, text=True, timeout=timeout,
                          errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {proc.stderr.strip()[:500]}")
    return proc.stdout


def lane_files(worktree: Path, under: str = ".") -> list[str]:
    """Tracked and new (untracked, not ignored) files of the worktree, relative, sorted."""
    out = _git(worktree, "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", under)
    return sorted({f for f in out.split("\0") if f and (worktree / f).is_file()})


def _read_regular(path: Path, limit: int) -> tuple[bytes, int] | None:
    """The first `limit` bytes of a regular file and its size, or None when it is missing or not a regular file.
    One open, fstat and read (non-blocking open: a FIFO planted in the worktree cannot hang the lane)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        chunks, left = [], min(limit, st.st_size) or limit
        while left > 0:
            chunk = os.read(fd, left)
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks), st.st_size
    finally:
        os.close(fd)


def read_file(ctx: LaneCtx, args: dict) -> ToolResult:
    full, rel = resolve_path(ctx.worktree, args.get("path"), default="")
    if rel == ".":
        raise Denied("read_file needs a file path")
    offset = max(1, int(args.get("offset") or 1))
    limit = max(1, min(int(args.get("limit") or MAX_READ_LINES), MAX_READ_LINES))
    found = _read_regular(full, MAX_FILE_BYTES)
    if found is None:
        if full.is_dir():
            return ToolResult(False, f"{rel} is a directory; use list_files")
        return ToolResult(False, f"{rel} is not a regular file" if full.exists() else f"no such file: {rel}")
    data, size = found
    if data.find(b"\0", 0, 8192) != -1:
        return ToolResult(False, f"{rel} is a binary file ({size} bytes)")
    lines = data.decode("utf-8", errors="replace").splitlines(keepends=True)
    chunk = lines[offset - 1:offset - 1 + limit]
    text = "".join(chunk)
    more = len(lines) - (offset - 1 + len(chunk))
    if more > 0:
        text += f"\n[{more} more lines: call read_file with offset={offset + len(chunk)}]"
    return ToolResult(True, bound(text), {"path": rel, "lines": len(lines)})


def _write_target(ctx: LaneCtx, path: str | None) -> tuple[Path, str]:
    full, rel = resolve_path(ctx.worktree, path, role=ctx.role, write=True, default="")
    check_handoff_write(rel, ctx.task_id, ctx.lane_id)
    return full, rel


def diff_for_write(ctx: LaneCtx, path: str, content: str) -> str:
    """The unified diff a write_file would make, computed against the current file."""
    full, rel = _write_target(ctx, path)
    old = full.read_text(encoding="utf-8", errors="replace") if full.is_file() else ""
    diff = difflib.unified_diff(old.splitlines(keepends=True), content.splitlines(keepends=True),
                                fromfile=f"a/{rel}" if full.exists() else "/dev/null", tofile=f"b/{rel}")
    return "".join(diff) or f"(no change to {rel})"


def write_file(ctx: LaneCtx, args: dict) -> ToolResult:
    full, rel = _write_target(ctx, args.get("path"))
    if rel == ".":
        raise Denied("write_file needs a file path")
    content = args.get("content")
    if not isinstance(content, str):
        return ToolResult(False, "write_file needs `content` as a string")
    if full.is_dir():
        return ToolResult(False, f"{rel} is a directory")
    full.parent.mkdir(parents=True, exist_ok=True)
    existed = full.exists()
    data = content.encode("utf-8")
    if not _write_regular(full, data):
        return ToolResult(False, f"{rel} is not a regular file (a FIFO, a device or a socket); write another path")
    return ToolResult(True, f"{'updated' if existed else 'created'} {rel} ({len(data)} bytes)", {"path": rel})


def _write_regular(path: Path, data: bytes) -> bool:
    """Make `data` the whole content of the regular file at `path` (created when missing). False when something
    else is there: a non-blocking open, so a FIFO planted in the worktree cannot hang the runner's event loop."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a FIFO nobody reads
            return False
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        os.ftruncate(fd, 0)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    return True


def list_files(ctx: LaneCtx, args: dict) -> ToolResult:
    full, rel = resolve_path(ctx.worktree, args.get("path"))
    if not full.exists():
        return ToolResult(False, f"no such path: {rel}")
    files = lane_files(ctx.worktree, rel)
    pattern = args.get("pattern")
    if pattern:
        files = [f for f in files if fnmatch.fnmatch(f, pattern) or fnmatch.fnmatch(Path(f).name, pattern)]
    text = "\n".join(files[:MAX_LIST])
    if len(files) > MAX_LIST:
        text += f"\n[{len(files) - MAX_LIST} more files: narrow with path or pattern]"
    return ToolResult(True, text or "(no files)", {"count": len(files)})


# The matching loop of `search`, run in a child Python of its own: an expression that backtracks without end, like
# "(a+)+$" on a line of a's, is killed at the time limit instead of holding the GIL (and with it every lane of the
# runner) for hours. It sends back each hit's line whole up to 20,000 characters: the parent masks it, then cuts it.
_SEARCH_CHILD = """
import json, re, sys
q = json.load(sys.stdin)
try:
    rx = re.compile(q["query"])
except re.error:
    rx = re.compile(re.escape(q["query"]))
hits, total = [], 0
for name, path in q["files"]:
    try:
        with open(path, "rb") as fh:
            data = fh.read(q["max_bytes"] + 1)
    except OSError:
        continue
    if len(data) > q["max_bytes"] or b"\\0" in data[:8192]:
        continue
    for n, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
        if rx.search(line):
            total += 1
            if len(hits) < q["max_hits"]:
                hits.append([name, n, line.strip()[:20000]])
json.dump({"hits": hits, "total": total}, sys.stdout)
"""


def search(ctx: LaneCtx, args: dict, timeout_s: float | None = None) -> ToolResult:
    query = args.get("query")
    if not isinstance(query, str) or not query:
        return ToolResult(False, "search needs a non-empty `query`")
    _, rel = resolve_path(ctx.worktree, args.get("path"))
    files = []
    for f in lane_files(ctx.worktree, rel):
        try:  # a file that is a symlink out of the worktree (or into .git) is not read, as read_file would refuse it
            files.append([f, str(resolve_path(ctx.worktree, f)[0])])
        except Denied:
            continue
    limit = timeout_s or SEARCH_TIMEOUT_S
    ask = {"query": query, "files": files, "max_bytes": MAX_FILE_BYTES, "max_hits": MAX_MATCHES}
    try:
        proc = subprocess.run([sys.executable, "-I", "-S", "-c", _SEARCH_CHILD], input=json.dumps(ask),
                              capture_output=True, text=True, errors="replace", timeout=limit, env=child_env())
    except subprocess.TimeoutExpired:
        return ToolResult(False, f"search stopped after {limit:g}s: {query!r} takes too long on these files (an "
                                 "expression like (a+)+ can backtrack without end); simplify it or narrow the path")
    if proc.returncode != 0:
        raise RuntimeError(f"the search process failed: {proc.stderr.strip()[-500:]}")
    found = json.loads(proc.stdout)
    hits, total = [f"{f}:{n}: {redact(line)[:300]}" for f, n, line in found["hits"]], found["total"]
    text = "\n".join(hits) or f"no matches for {query!r}"
    if total > len(hits):
        text += f"\n[{total - len(hits)} more matches: narrow the query or path]"
    return ToolResult(True, bound(text), {"matches": total})


async def run(ctx: LaneCtx, args: dict, timeout_s: float = RUN_TIMEOUT_S) -> ToolResult:
    command = args.get("command")
    pattern = check_command(ctx.role, command)
    proc = await asyncio.create_subprocess_exec(
        "bash", "-c", command.strip(), cwd=ctx.worktree, env=child_env(keep=ctx.settings.policy.pass_env),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    with tracked(ctx.ws.state_dir, proc.pid, f"`{command.strip()[:120]}` of {ctx.task_id}/{ctx.lane_id}"):
        out = await communicate_bounded(proc, timeout_s)
    if out is None:
        return ToolResult(False, f"command timed out after {timeout_s:.0f}s and was killed: {command}",
                          {"exit_code": None, "timeout": True})
    text = out.decode("utf-8", errors="replace")
    code = proc.returncode
    return ToolResult(code == 0, bound(f"$ {command.strip()}\n{text}\n[exit code {code}]"),
                      {"exit_code": code, "pattern": pattern})


def git_diff(ctx: LaneCtx, args: dict) -> ToolResult:
    base = "HEAD"
    row = ctx.store.one("SELECT base_commit FROM lanes WHERE task_id=? AND id=?", (ctx.task_id, ctx.lane_id))
    if row and row.get("base_commit"):
        base = row["base_commit"]
    diff = _git(ctx.worktree, "diff", base, "--")
    new = _git(ctx.worktree, "ls-files", "-z", "--others", "--exclude-standard").split("\0")
    for f in sorted(x for x in new if x):
        proc = subprocess.run(["git", "diff", "--no-index", "--", "/dev/null", f], cwd=ctx.worktree,
                              capture_output=True, text=True, errors="replace", timeout=60)
        diff += proc.stdout
    return ToolResult(True, bound(diff) or "(no changes)", {"base": base})


# One file operation each: run on the runner's event loop (the hot path of every lane step).
SYNC_TOOLS = {"read_file": read_file, "write_file": write_file}
# A git process or a walk of the whole worktree (seconds in a big repository): run in a thread, so the other lanes
# on the same event loop never wait for them.
THREAD_TOOLS = {"list_files": list_files, "search": search, "git_diff": git_diff}
