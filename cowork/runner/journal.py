"""The journal: every model call, tool call, check and injected message of a lane is a `steps` row, written
before it runs (`started`, with its input) and after (`done` / `failed`, with its output and cost).

A resumed lane rebuilds its conversation from these rows, so completed model calls are never re-sent and
completed tool calls never re-run. A row left `started` by a dead runner becomes `interrupted`, except a tool call
that was held at its approval: it never reached its tool, so it stays `started` and runs again as it was, finding
its approval (`cowork.team.approvals`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cowork.redact import redact_obj
from cowork.store import Store, now
from cowork.store.store import loads
from cowork.store.store import dumps as _dumps
from cowork.team import approvals


def dumps(value: Any) -> str:
    """JSON for a steps column, with secret-looking values masked: the journal is part of the store."""
    return _dumps(redact_obj(value))

INTERRUPTED_NOTE = ("this call was interrupted when the runner stopped; it may or may not have taken effect. "
                    "Check the current state before retrying it.")


@dataclass
class Step:
    """One journal row as the engines see it."""

    seq: int
    kind: str  # model | tool | check | message
    name: str
    input: Any = None
    output: Any = None
    state: str = "started"  # started | done | failed | interrupted
    tokens_in: int = 0
    tokens_out: int = 0
    usd: float = 0.0
    started_at: float = field(default_factory=now)


class Journal:
    """The steps of one lane (`task`/`lane`), in order.

    Args:
        store: the shared store.
        task, lane: the lane's ids (the planner journals under lane "_plan").
    """

    def __init__(self, store: Store, task: str, lane: str):
        self.store, self.task, self.lane = store, task, lane
        rows = store.all("SELECT * FROM steps WHERE task_id=? AND lane_id=? ORDER BY seq", (task, lane))
        self.steps: list[Step] = [
            Step(r["seq"], r["kind"], r["name"], loads(r["input"]), loads(r["output"]), r["state"],
                 r["tokens_in"], r["tokens_out"], r["usd"], r["started_at"]) for r in rows]
        self._next = (self.steps[-1].seq + 1) if self.steps else 1
        self._model_done = sum(1 for s in self.steps if s.kind == "model" and s.state == "done")
        # (steps folded in, their messages): cowork.engines.llm.rebuild's cache of the final prefix
        self.conversation: tuple[int, list[dict]] = (0, [])

    def recover(self) -> list[Step]:
        """Mark steps a dead runner left `started` as `interrupted`. Returns them.

        The last step stays `started` when it is a tool call whose approval it has not received yet (pending, or
        decided while no runner was alive): the engine runs it again and the gateway finds that approval. Approvals
        of the lane that no step will wait on any more are withdrawn."""
        stale = [s for s in self.steps if s.state == "started"]
        if not stale:  # no call was cut: only approvals whose call was recorded as not run may be left (one read,
            approvals.withdraw_stale(self.store, self.task, self.lane, keep=None,  # no write lock, when none are)
                                     why="the call that asked for it is not run again")
            return []
        last = self.steps[-1] if self.steps else None
        asked = approvals.asked_by(self.store, self.task, self.lane, last.seq) \
            if last is not None and last.state == "started" and last.kind == "tool" else None
        held = last if asked else None
        with self.store.tx():
            for s in stale:
                if s is not held:
                    s.state = "interrupted"
                    self.store.execute("UPDATE steps SET state='interrupted', ended_at=? WHERE task_id=? AND "
                                       "lane_id=? AND seq=?", (now(), self.task, self.lane, s.seq))
            approvals.withdraw_stale(self.store, self.task, self.lane, keep=asked["id"] if asked else None,
                                     why="the call that asked for it is not run again")
        return [s for s in stale if s is not held]

    def start(self, kind: str, name: str, input: Any = None) -> Step:
        """Record a step before it runs."""
        step = Step(self._next, kind, name, input)
        self.store.execute(
            "INSERT INTO steps(task_id, lane_id, seq, kind, name, input, state, started_at) VALUES (?,?,?,?,?,?,?,?)",
            (self.task, self.lane, step.seq, kind, name, dumps(input), "started", step.started_at))
        self._next += 1
        self.steps.append(step)
        return step

    def finish(self, step: Step, output: Any = None, *, ok: bool = True, tokens_in: int = 0, tokens_out: int = 0,
               usd: float = 0.0, lane_step_no: bool = False) -> None:
        """Record a step's result. `lane_step_no` also advances the lane's step counter and cost (one transaction)."""
        if step.kind == "model":
            self._model_done += (1 if ok else 0) - (1 if step.state == "done" else 0)
        step.output, step.state = output, ("done" if ok else "failed")
        step.tokens_in, step.tokens_out, step.usd = tokens_in, tokens_out, usd
        t = now()
        with self.store.tx():
            self.store.execute(
                "UPDATE steps SET output=?, state=?, tokens_in=?, tokens_out=?, usd=?, ended_at=? "
                "WHERE task_id=? AND lane_id=? AND seq=?",
                (dumps(output), step.state, tokens_in, tokens_out, usd, t, self.task, self.lane, step.seq))
            if lane_step_no:
                self.store.execute(
                    "UPDATE lanes SET step_no=step_no+1, tokens_in=tokens_in+?, tokens_out=tokens_out+?, usd=usd+?, "
                    "updated_at=? WHERE task_id=? AND id=?", (tokens_in, tokens_out, usd, t, self.task, self.lane))

    def record(self, kind: str, name: str, input: Any = None, output: Any = None) -> Step:
        """A step that is complete as soon as it is written (an injected message, a note). It is kept masked, as it
        is stored: the conversation is rebuilt from these steps, so what the model reads is what a resumed lane reads
        (check output, review notes and conflicts never reach the model with a secret in them)."""
        input, output = redact_obj(input), redact_obj(output)
        step = Step(self._next, kind, name, input, output, "done")
        t = now()
        self.store.execute(
            "INSERT INTO steps(task_id, lane_id, seq, kind, name, input, output, state, started_at, ended_at) "
            "VALUES (?,?,?,?,?,?,?,?,?,?)",
            (self.task, self.lane, step.seq, kind, name, _dumps(input), _dumps(output), "done", t, t))
        self._next += 1
        self.steps.append(step)
        self._model_done += kind == "model"
        return step

    def model_calls(self) -> int:
        """How many model calls completed (the lane's step count)."""
        return self._model_done

    def totals(self) -> tuple[int, int, float]:
        """(tokens_in, tokens_out, usd) over every step."""
        return (sum(s.tokens_in for s in self.steps), sum(s.tokens_out for s in self.steps),
                sum(s.usd for s in self.steps))
