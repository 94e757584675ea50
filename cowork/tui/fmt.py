"""Formatting shared by mission control's widgets: ages, money, tokens, state colours, and the clock they use."""
from __future__ import annotations

import time

from cowork import views
from cowork.display import printable

STATE_STYLES = {
    "queued": "dim",
    "running": "bold green",
    "waiting-approval": "bold yellow",
    "paused": "bold magenta",
    "checking": "cyan",
    "in-review": "cyan",
    "merge-queue": "blue",
    "merging": "bold blue",
    "merged": "green",
    "reverted": "yellow",
    "done": "green",
    "failed": "bold red",
    "blocked": "bold red",
    "cancelled": "dim",
}

KIND_STYLES = {
    "model": "cyan", "tool": "white", "approval": "yellow", "message": "magenta", "merge": "blue",
    "pause": "bold red", "budget": "yellow", "breaker": "bold red", "check": "green", "lane": "green",
    "task": "bold", "runner": "dim",
}


def clock() -> float:
    """The wall clock mission control formats ages against (tests freeze it)."""
    return time.time()


def age(ts: float | None, now: float | None = None, *, coarse: bool = False) -> str:
    """A compact age: 42s, 12m, 3h05, 2d. Coarse ages say <1m instead of counting seconds (a table of them would
    otherwise be redrawn every second)."""
    if not ts:
        return "-"
    secs = (clock() if now is None else now) - ts
    return "<1m" if coarse and secs < 60 else views.elapsed(secs)


def hms(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts))


def usd(value: float | None) -> str:
    return f"${value or 0:.2f}" if (value or 0) >= 0.01 or not value else f"${value:.4f}"


def tokens(n: int | None) -> str:
    n = n or 0
    if n < 1000:
        return str(n)
    if n < 1_000_000:
        return f"{n / 1000:.1f}k"
    return f"{n / 1_000_000:.1f}M"


def kind_style(kind: str) -> str:
    """The colour of an event kind, by its family (`tool.denied` is red whatever the family)."""
    if kind.endswith((".denied", ".failed", ".conflict", ".exceeded", ".rejected", ".expired", ".timed_out")):
        return "bold red"
    return KIND_STYLES.get(kind.split(".", 1)[0], "white")


def clip(text: str | None, width: int) -> str:
    """`text` on one line in at most `width` characters, its control characters shown as `\\xNN` (agents write most
    of what mission control shows). Plain text: put it in a `Text`, never where a string is read as markup."""
    text = printable(" ".join((text or "").split()))
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def clip_lane(key: str, width: int) -> str:
    """`task/lane` in `width` cells, clipped from the left of the task: the lane id is what tells lanes apart
    (a task id made from a long title is 30 characters on its own)."""
    if len(key) <= width:
        return key
    task, _, lane = key.rpartition("/")
    room = width - len(lane) - 2  # the "…" and the "/"
    if not task or room < 1:
        return "…" + key[len(key) - width + 1:]
    return f"…{task[len(task) - room:]}/{lane}"


def stale_lock(lock: dict, now: float | None = None) -> str | None:
    """Why a held merge lock is no longer really held ("holder gone", "lease expired"), or None. Either way the
    next merger takes it; until then the row still names the old holder."""
    if not lock.get("holder"):
        return None
    if lock.get("gone"):
        return "holder gone"
    until = lock.get("lease_until")
    if until is not None and until <= (clock() if now is None else now):
        return "lease expired"
    return None
