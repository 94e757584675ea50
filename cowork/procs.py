"""Facts about local processes that several parts need (runner leases, the merge lock, the embedded model server)."""
from __future__ import annotations

import asyncio
import os
import signal


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie (killed, not yet reaped: dead for our purposes)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):  # no /proc (not Linux): existence is all we know
        return True


def start_token(pid: int) -> str | None:
    """What tells process `pid` apart from a later process given the same pid: this boot's id and the process's
    start time (Linux /proc). None where that cannot be read (then only `pid_alive` is known)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            started = f.read().rsplit(") ", 1)[1].split()[19]  # field 22, starttime (the name may hold ") ")
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except (OSError, IndexError):
        return None
    return f"{boot}:{started}"


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
