"""Facts about local processes that several parts need (runner leases, the merge lock, the embedded model
server), and the process groups cowork starts for lanes (checks, `run`, external agents), noted so that a runner
killed with SIGKILL does not leave them running: the next runner stops them (`stop_orphans`)."""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
from pathlib import Path
from typing import Iterator

from cowork.redact import _SECRET_ENV

PROC = "/proc"  # where Linux shows its processes; where it is missing (macOS, BSD), `ps` is asked instead


def child_env(base: dict[str, str] | None = None, keep: list[str] | tuple[str, ...] = ()) -> dict[str, str]:
    """The environment for code an agent controls (`run`, a role's checks, merge checks): `base` (default ours)
    without the variables named like keys, tokens, secrets or passwords but those the team names in `keep`
    (`[policy] pass_env`), and git never prompting."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if k in keep or not _SECRET_ENV.search(k)}
    env["GIT_TERMINAL_PROMPT"] = "0"
    return env


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie (killed, not yet reaped: dead for our purposes)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    if not os.path.isdir(PROC):
        state = _ps(pid, "stat")
        return state is None or not state.startswith("Z")  # no answer from ps: existence is all we know
    try:
        with open(f"{PROC}/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return True


def start_token(pid: int) -> str | None:
    """What tells process `pid` apart from a later process given the same pid: this boot's id and the process's
    start time (Linux /proc), or elsewhere (macOS, BSD) its start time as `ps` tells it, to the second. None where
    neither can be read (then only `pid_alive` is known)."""
    if not os.path.isdir(PROC):
        started = _ps(pid, "lstart")
        return f"ps:{' '.join(started.split())}" if started else None
    try:
        with open(f"{PROC}/{pid}/stat") as f:
            started = f.read().rsplit(") ", 1)[1].split()[19]  # field 22, starttime (the name may hold ") ")
        with open(f"{PROC}/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except (OSError, IndexError):
        return None
    return f"{boot}:{started}"


def me() -> tuple[int, str, str | None]:
    """This process as other processes can find it: (pid, host, `start_token`)."""
    pid = os.getpid()
    return pid, socket.gethostname(), start_token(pid)


def gone(pid: int, host: str, token: str | None) -> bool:
    """Whether the process `me()` described as (pid, host, token) has provably ended: it is on this host, and its
    pid is free, a zombie, or now belongs to a later process. One elsewhere, or one with no token whose pid is
    alive, is not known to be gone."""
    if host != socket.gethostname():
        return False
    if not pid_alive(pid):
        return True
    current = start_token(pid) if token else None
    return current is not None and current != token


def _ps(pid: int, field: str) -> str | None:
    """One field of process `pid` as POSIX `ps` prints it (in the C locale), or None: no such process, or no ps."""
    try:
        out = subprocess.run(["ps", "-o", f"{field}=", "-p", str(pid)], capture_output=True, text=True, timeout=10,
                             env={**os.environ, "LC_ALL": "C"})
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


async def communicate_bounded(proc: "asyncio.subprocess.Process", timeout_s: float) -> bytes | None:
    """`proc.communicate()` for a process started in a session of its own, bounded by `timeout_s`. On timeout (None
    is returned) or cancellation (re-raised) the whole process group is killed and reaped: a shell's children (a
    test runner, a server it started) never outlive it, and no pipe is left open."""
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
        return out
    except (asyncio.TimeoutError, asyncio.CancelledError) as exc:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        await proc.wait()
        if isinstance(exc, asyncio.CancelledError):
            raise
        return None



@contextlib.contextmanager
def tracked(state_dir: Path | None, pgid: int, what: str) -> Iterator[None]:
    """Note the process group `pgid` (a child started in a session of its own) while it runs, under
    `state_dir/procs/`, with who started it; the note goes when the block ends."""
    if state_dir is None:
        yield
        return
    note = Path(state_dir) / "procs" / f"{pgid}.json"
    try:
        note.parent.mkdir(parents=True, exist_ok=True)
        note.write_text(json.dumps({"pgid": pgid, "start": start_token(pgid), "owner": os.getpid(),
                                    "owner_start": start_token(os.getpid()), "what": what[:200]}))
    except OSError:  # a note is a safety net, never a reason to fail the command
        pass
    try:
        yield
    finally:
        note.unlink(missing_ok=True)


def stop_orphans(state_dir: Path) -> list[str]:
    """Kill the process groups whose starter is gone (a runner killed with SIGKILL: its checks and commands run on
    in sessions of their own). Returns what was stopped. A group is killed only while its leader is still the very
    process noted (same pid and start time): a reused pid is never touched."""
    stopped = []
    for note in sorted((Path(state_dir) / "procs").glob("*.json")):
        try:
            info = json.loads(note.read_text())
        except (OSError, ValueError):
            note.unlink(missing_ok=True)
            continue
        owner = int(info.get("owner") or 0)
        if owner and pid_alive(owner) and start_token(owner) == info.get("owner_start"):
            continue  # its starter lives: the group is in use
        pgid = int(info.get("pgid") or 0)
        if pgid and info.get("start") and start_token(pgid) == info["start"]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
                stopped.append(f"{info.get('what') or 'a command'} (process group {pgid})")
        note.unlink(missing_ok=True)
    return stopped
