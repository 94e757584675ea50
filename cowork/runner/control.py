"""Pause-all and per-lane pause: flags in the store that every runner checks before every step.

Only humans (the CLI, the TUI) call `pause`/`unpause`; no agent tool reaches this module.
"""
from __future__ import annotations

from cowork.store import Store

PAUSE_ALL = "pause"


def _key(task: str | None, lane: str | None) -> str:
    if lane and not task:
        raise ValueError("a lane pause needs its task")
    if task and lane:
        return f"pause:{task}/{lane}"
    if task:
        return f"pause:{task}"
    return PAUSE_ALL


def pause(store: Store, *, by: str, reason: str | None = None, task: str | None = None, lane: str | None = None) -> str:
    """Set a pause flag (all, one task, or one lane). Returns the flag key."""
    key = _key(task, lane)
    scope = "everything" if key == PAUSE_ALL else key.split(":", 1)[1]
    with store.tx():  # the flag and its event together: the timeline never misses a pause that holds lanes
        store.set_flag(key, {"reason": reason or ""}, by)
        store.event("pause.set", f"paused {scope}" + (f": {reason}" if reason else ""), actor=by, task=task,
                    lane=lane, data={"key": key, "reason": reason})
    return key


def unpause(store: Store, *, by: str, task: str | None = None, lane: str | None = None) -> bool:
    """Clear a pause flag. Returns whether it was set."""
    key = _key(task, lane)
    with store.tx():
        cleared = store.clear_flag(key)
        if cleared:
            scope = "everything" if key == PAUSE_ALL else key.split(":", 1)[1]
            store.event("pause.cleared", f"unpaused {scope}", actor=by, task=task, lane=lane, data={"key": key})
    return cleared


def paused(store: Store, task: str | None = None, lane: str | None = None) -> dict | None:
    """The pause flag that holds this lane (pause-all first, then its task, then the lane), or None."""
    keys = [PAUSE_ALL]
    if task:
        keys.append(f"pause:{task}")
        if lane:
            keys.append(f"pause:{task}/{lane}")
    found = store.control_rows(keys)
    if not found:
        return None
    from cowork.store.store import loads

    row = next(found[k] for k in keys if k in found)
    value = loads(row["value"], {}) or {}
    return {"key": row["key"], "reason": value.get("reason", ""), "by": row["set_by"], "since": row["set_at"]}
