"""Facts about local processes that several parts need (runner leases, the embedded model server)."""
from __future__ import annotations

import os


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
