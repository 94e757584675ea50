"""Circuit breakers: stop a lane that is burning tokens without progress, and escalate.

Two trips: `policy.max_consecutive_failures` tool calls in a row that failed or were denied, and the same tool
call (same name and arguments) made `policy.max_repeated_calls` times since the lane last changed its worktree.
The state is derived from the lane's `tool.call` / `tool.denied` events (after its last `breaker.tripped`), so it
survives a restart.
"""
from __future__ import annotations

from cowork.store import Store
from cowork.store import lanes as lanes_db

PROGRESS_TOOLS = {"write_file", "delegate"}   # a successful call resets the repeat counter
NEUTRAL_TOOLS = {"inbox", "answer", "tell"}    # never count as a failure or a repeat


class Breaker:
    """Per-lane trip state.

    Args:
        store, task, lane: the lane.
        max_failures, max_repeats: the thresholds (from `policy`).
    """

    def __init__(self, store: Store, task: str, lane: str, *, max_failures: int, max_repeats: int):
        self.max_failures, self.max_repeats = max_failures, max_repeats
        self.failures = 0
        self.repeats: dict[str, int] = {}
        last_trip = store.scalar("SELECT max(id) FROM events WHERE task_id=? AND lane_id=? AND kind='breaker.tripped'",
                                 (task, lane), default=0)
        for e in store.events(after=last_trip, task=task, lane=lane, kinds=["tool.call", "tool.denied"],
                              limit=100_000):
            data = e["data"] or {}
            if data.get("lane_ended"):  # refused to an agent that outlived its lane (mcp_server): not the lane's
                continue
            self.record(data.get("tool", ""), data.get("hash", ""), e["kind"] == "tool.call" and bool(data.get("ok")))

    def record(self, tool: str, call_hash: str, ok: bool) -> str | None:
        """Count one finished call. Returns why the breaker trips now, or None."""
        if tool in NEUTRAL_TOOLS:
            return None
        self.failures = 0 if ok else self.failures + 1
        if ok and tool in PROGRESS_TOOLS:
            self.repeats.clear()
        n = self.repeats[call_hash] = self.repeats.get(call_hash, 0) + 1
        if self.failures >= self.max_failures:
            return f"{self.failures} tool calls in a row failed or were denied"
        if n >= self.max_repeats:
            return f"the same {tool} call was made {n} times without progress"
        return None

    def reset(self) -> None:
        self.failures = 0
        self.repeats.clear()


def trip(store: Store, *, task: str, lane: str, role, reason: str) -> None:
    """Stop the lane (blocked), record `breaker.tripped` and tell the role's `escalate_to`."""
    from cowork.team import messages

    with store.tx():  # stopped, recorded and escalated in one commit
        store.event("breaker.tripped", f"{task}/{lane} stopped: {reason}", actor="cowork", task=task, lane=lane,
                    role=role.name, data={"reason": reason})
        messages.post(store, kind="escalate", from_role=role.name, from_lane=messages.qualified(task, lane),
                      to_role=role.escalate_to, task=task, actor="cowork",
                      body=f"Lane {task}/{lane} ({role.name}) was stopped by a circuit breaker: {reason}. "
                           "Look at its timeline, then re-queue or cancel it.")
        row = lanes_db.get_lane(store, task, lane)
        if row and row["state"] not in lanes_db.FINAL_LANE_STATES:
            lanes_db.set_lane_state(store, task, lane, "blocked", actor="cowork", detail=f"breaker: {reason}",
                                    error=f"breaker: {reason}")
