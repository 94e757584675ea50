"""The tool gateway: the one door every tool call of a lane goes through.

For each call, in order: authority (allow-list, `cannot`, human-only actions), the pause flag (no tool runs while
paused), argument authority (worktree confinement, run_allow), the approval tier (auto / notify / block), the tool
itself, redaction of its output, the audit event, and the circuit breaker. Engines call `tool_specs()`, `call()`
and `between_steps()`, and check `budget_state()` (or `before_model_call()`) before every model call: once it
says "exceeded" (budget cap or a tripped breaker) the lane must stop without calling the model again.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any, Awaitable, Callable

from cowork.redact import redact, redact_obj
from cowork.roles import BUILTIN_TOOLS
from cowork.runner import control
from cowork.store import db
from cowork.store import lanes as lanes_db
from cowork.store.store import loads
from cowork.team import approvals, budgets, breakers
from cowork.team import messages as msgs
from cowork.tools import builtin, team_tools
from cowork.tools.authority import Denied, check_command, check_tool
from cowork.tools.context import LaneCtx, ToolResult
from cowork.tools.specs import spec, validate_finish

__all__ = ["Gateway", "LaneCtx", "ToolResult", "args_hash"]

TEAM_TOOLS = {"ask", "tell", "delegate", "inbox", "answer"}
# Team tools whose whole effect is a few writes to the store, made at once. They run inside the transaction that
# records their call: a call whose audit cannot be written leaves no message and no lane behind, so the agent's
# retry of the failed call cannot post, delegate or answer twice.
POSTS = {"tell", "delegate", "answer"}


def args_hash(name: str, args: Any) -> str:
    """A stable hash of one call: the key of repeated-call detection."""
    blob = json.dumps([name, args], sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _short(args: dict, limit: int = 160) -> str:
    text = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False, default=str)}" for k, v in args.items())
    return text if len(text) <= limit else text[:limit] + "…"


# The tables whose changes the gateway watches between steps (budget raises, messages): one `Store.version` read
# answers "anything new?" for both.
WATCHED = ("control", "messages")


class Gateway:
    """Tool calls for one lane.

    Args:
        ctx: the lane (role, task, lane id, worktree, store, settings).
    """

    def __init__(self, ctx: LaneCtx, mcp_sessions: Any = None, *, cancel_withdraws: bool = False):
        """`mcp_sessions`: the lane's `mcp_client.Sessions` when its owner keeps MCP servers across engine runs (a
        lane sent back by its checks keeps its servers); else the gateway starts its own and `aclose` stops them.
        `cancel_withdraws`: a call cancelled while it waits for an approval withdraws the request, for a caller
        whose cancel means nobody waits any more (an MCP client); the runner's cancel (it stops, to be resumed)
        leaves the request for the resumed call."""
        self.ctx = ctx
        self.cancel_withdraws = cancel_withdraws
        pol = ctx.settings.policy
        self.stop: str | None = None            # set when the lane must end now (breaker, budget cap)
        self.run_timeout_s = pol.run_timeout_s
        self.poll_s = 0.5                       # how often waits (approvals, ask, pause) re-read the store
        self.answering: list[dict] = []         # questions surfaced to this lane and not answered yet
        self.breaker = breakers.Breaker(ctx.store, ctx.task_id, ctx.lane_id, max_failures=pol.max_consecutive_failures,
                                        max_repeats=pol.max_repeated_calls)
        self._wrap_told = False
        self._budget_memo: tuple | None = None
        self._reservation: int | None = None  # this lane's model call in flight, in budgets.in_flight
        self._cursor = 0
        self._looked = 0  # every message up to this id has been considered (taken, or not for this lane)
        self._msg_mark: tuple | None = None  # store.version(*WATCHED) at the last look
        self._mcp = None
        self._mcp_sessions = mcp_sessions  # the MCP servers this lane has called, kept running between calls
        self._own_sessions = mcp_sessions is None
        # waits out a pause; an engine lends the runner's, which also shows the lane as paused meanwhile
        self.hold: Callable[[], Awaitable[None]] | None = None
        self.dispatched = False  # whether the current call got past authority, pause and approval to the tool

    @property
    def lane_q(self) -> str:
        return msgs.qualified(self.ctx.task_id, self.ctx.lane_id)

    # -- what the model sees --------------------------------------------------------------------------------

    def tool_names(self, extra: list[str] | None = None) -> list[str]:
        """The tools this lane may call, in a stable order; always ends with answer and finish."""
        role = self.ctx.role
        mcp = self._mcp_tools()
        names = [t for t in role.tools if (t in BUILTIN_TOOLS or t in mcp) and role.allows(t)]
        names += ["answer", "finish"]
        names += [x for x in extra or [] if x not in names and role.allows(x)]
        return names

    def tool_specs(self, extra: list[str] | None = None) -> list[dict]:
        """OpenAI tool schemas for the role's allowed tools, plus `extra` (e.g. ["submit_plan"] for the planner)."""
        from cowork.tools.mcp_client import model_name

        mcp = self._mcp_tools()
        return [spec(model_name(n), mcp[n].get("description"), mcp[n].get("parameters")) if n in mcp else spec(n)
                for n in self.tool_names(extra)]

    # -- the door -------------------------------------------------------------------------------------------

    async def call(self, name: str, args: dict, *, then: Callable[[ToolResult], None] | None = None) -> ToolResult:
        """Run one tool call through authority, pause, approvals, redaction, audit and the breaker.

        Args:
            then: called with the result inside the transaction that records the call's audit event (the
                engine's journal write): one commit per tool step, and never an audited call without its step.
        """
        self.dispatched = False
        settle = await self._run(name, args)
        with self.ctx.store.tx():
            result = settle()
            if then is not None:
                then(result)
        return result

    async def _run(self, name: str, args: dict) -> Callable[[], ToolResult]:
        """Everything of one call that waits: authority, pause, approval, and the tool itself, except a POSTS tool.
        Returns what `call` runs in its transaction: a POSTS tool's writes, and the records (audit, notify,
        breaker) of the call."""
        if not isinstance(args, dict):
            args = {}
        if name == "finish":
            problem = validate_finish(args)
            done = ToolResult(False, problem) if problem else ToolResult(True, "finishing", dict(args))
            return lambda: done
        if name == "submit_plan":
            if not isinstance(args.get("lanes"), list) or not args.get("title"):
                bad = ToolResult(False, "submit_plan needs a title and a list of lanes")
                return lambda: bad
            plan = ToolResult(True, "plan submitted", dict(args))
            return lambda: plan
        if self.stop:
            stopping = ToolResult(False, f"lane is stopping: {self.stop}", {"stop": self.stop})
            return lambda: stopping
        name = self._mcp_alias(name)
        tier, action = "auto", {}
        try:
            check_tool(self.ctx.role, name)
            if name not in BUILTIN_TOOLS and name not in TEAM_TOOLS and name not in self._mcp_tools():
                raise Denied(f"unknown tool '{name}'")
            await self._hold()
            action = self._action(name, args)
            tier = self.ctx.role.tier(name, self.ctx.settings.policy.approvals)
            result = await self._approval(name, args, action) if tier == "block" else None
            if result is None:
                self.dispatched = True
                if name in POSTS:
                    return lambda: self._post(name, args, action, tier)
                result = await self._dispatch(name, args)
        except Denied as exc:
            reason = exc.reason
            return lambda: self._denied(name, args, reason)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a tool's own failure goes back to the agent, never crashes the lane
            result = ToolResult(False, f"{name} failed: {db.failure(exc)}")
        self._redacted(result)  # before `call` takes the write lock: a tool's output can be long
        return lambda: self._record(name, args, action, tier, result)

    def _post(self, name: str, args: dict, action: dict, tier: str) -> ToolResult:
        """A POSTS tool, in the transaction of its records; its own writes are undone when it fails or is refused."""
        c = self.ctx
        try:
            with c.store.savepoint():
                if name == "tell":
                    result = team_tools.tell(c, args)
                elif name == "answer":
                    result = team_tools.answer(c, args)
                else:
                    self._check_spawn_budget()
                    result = team_tools.delegate(c, args, answering=self._open_questions())
        except Denied as exc:
            return self._denied(name, args, exc.reason)
        except Exception as exc:  # noqa: BLE001 - as in `_run`: the agent is told, the lane goes on
            result = ToolResult(False, f"{name} failed: {db.failure(exc)}")
        return self._record(name, args, action, tier, self._redacted(result))

    @staticmethod
    def _redacted(result: ToolResult) -> ToolResult:
        result.content = redact(result.content)
        if result.data:
            result.data = redact_obj(result.data)
        return result

    def _record(self, name: str, args: dict, action: dict, tier: str, result: ToolResult) -> ToolResult:
        """The call's result, once its audit event, notification and breaker count are written."""
        if tier == "notify" and result.ok:
            self._notify(name, args, action)
        self._audit(name, args, result, tier)
        self._count(name, args, result.ok)
        return result

    async def _dispatch(self, name: str, args: dict) -> ToolResult:
        c = self.ctx
        if name in builtin.SYNC_TOOLS:
            return builtin.SYNC_TOOLS[name](c, args)
        if name in builtin.THREAD_TOOLS:
            return await asyncio.to_thread(builtin.THREAD_TOOLS[name], c, args)
        if name == "run":
            return await builtin.run(c, args, self.run_timeout_s)
        if name == "ask":
            self._check_spawn_budget()
            return await team_tools.ask(c, args, answering=self._open_questions(), poll_s=self.poll_s)
        if name == "inbox":
            return self._inbox()
        if name in self._mcp_tools():
            return await self._mcp_call(name, args)
        return ToolResult(False, f"tool '{name}' is not available")

    def _action(self, name: str, args: dict) -> dict:
        """The exact action a human would approve; also checks argument authority (paths, run_allow)."""
        if name == "run":
            check_command(self.ctx.role, args.get("command"))
            return {"command": args["command"].strip()}
        if name == "write_file":
            content = args.get("content") if isinstance(args.get("content"), str) else ""
            path = args.get("path")
            return {"path": path, "diff": builtin.diff_for_write(self.ctx, path, content)}
        if name in ("tell", "ask"):
            return {"to": args.get("role"), "text": args.get("note") or args.get("question") or ""}
        if name == "delegate":
            return {"to": args.get("role"), "text": args.get("goal") or ""}
        return {"tool": name, "args": args}

    # -- pause, approvals, budget ---------------------------------------------------------------------------

    async def _hold(self) -> None:
        """Wait while the team, the task or this lane is paused: no tool runs while paused."""
        if self.hold is not None:
            await self.hold()
            return
        while control.paused(self.ctx.store, self.ctx.task_id, self.ctx.lane_id):
            await asyncio.sleep(self.poll_s)

    async def _approval(self, name: str, args: dict, action: dict) -> ToolResult | None:
        """Wait for a human decision on a blocked call. None when approved, else the result for the agent."""
        c = self.ctx
        # one transaction: whoever sees the pending approval also sees the lane waiting for it
        with c.store.tx():
            aid = approvals.request(c.store, task=c.task_id, lane=c.lane_id, role=c.role.name, tool=name,
                                    action=action, why=self._why(args),
                                    timeout_s=c.settings.policy.approval_timeout_s, step=self._step(name))
            lane = lanes_db.get_lane(c.store, c.task_id, c.lane_id)
            if lane and lane["state"] == "running" and approvals.get(c.store, aid)["decision"] == "pending":
                lanes_db.set_lane_state(c.store, c.task_id, c.lane_id, "waiting-approval", actor=c.role.name,
                                        detail=f"approval #{aid}: {name}")
        try:
            while True:
                row = approvals.get(c.store, aid)
                if row["decision"] != "pending":
                    break
                if row["expires_at"] is not None and row["expires_at"] <= approvals.now():
                    approvals.expire(c.store, aid, c.settings, c.roles)
                    continue
                cur = lanes_db.get_lane(c.store, c.task_id, c.lane_id)
                if cur and cur["state"] in lanes_db.FINAL_LANE_STATES:
                    self.stop = f"lane {cur['state']} while waiting for approval #{aid}"
                    approvals.withdraw(c.store, aid, why=self.stop)
                    return ToolResult(False, self.stop, {"approval": aid, "stop": self.stop})
                await asyncio.sleep(self.poll_s)
        except asyncio.CancelledError:
            if self.cancel_withdraws:
                self._withdraw(aid, "its call was cancelled: nobody waits for the decision any more")
            raise
        approvals.consume(c.store, aid)
        self._resume_lane(f"approval #{aid} {row['decision']}")
        if row["decision"] == "approved":
            return None
        if row["decision"] == "expired":
            target = c.role.escalate_to
            return ToolResult(False, f"approval #{aid} for {name} expired without a decision; {target} was told and "
                                     "this lane is paused until a human resumes it", {"approval": aid})
        reason = row.get("note") or ("the approval record was malformed" if row["malformed"] else "no reason given")
        by = row.get("decided_by") or "cowork"
        return ToolResult(False, f"rejected by {by}: {reason}. Do not retry the same action; change your approach.",
                          {"approval": aid, "rejected": reason})

    def _withdraw(self, aid: int, why: str) -> None:
        """Withdraw a request no call waits on while still pending (a decision already made stays, for the same
        call made again), and the lane that waited on it runs again, both at once."""
        with self.ctx.store.tx():
            approvals.withdraw(self.ctx.store, aid, why=why)
            self._resume_lane(f"approval #{aid}: {why}")

    def _resume_lane(self, detail: str) -> None:
        """The lane waiting for an approval runs again."""
        c = self.ctx
        cur = lanes_db.get_lane(c.store, c.task_id, c.lane_id)
        if cur and cur["state"] == "waiting-approval":
            lanes_db.set_lane_state(c.store, c.task_id, c.lane_id, "running", actor=c.role.name, detail=detail)

    def _step(self, name: str) -> int | None:
        """The journal step making this call: the lane's tool step in flight under this name (the llm engine
        records it before the call), or None for a call from outside a journal (the MCP server, tests)."""
        from cowork.tools.mcp_client import model_name

        row = self.ctx.store.one("SELECT seq, name FROM steps WHERE task_id=? AND lane_id=? AND kind='tool' AND "
                                 "state='started' ORDER BY seq DESC LIMIT 1", (self.ctx.task_id, self.ctx.lane_id))
        return row["seq"] if row and row["name"] in (name, model_name(name)) else None

    def _why(self, args: dict) -> str:
        """Why the agent wants this: its `why` argument, else its last words before the call."""
        if isinstance(args.get("why"), str) and args["why"].strip():
            return args["why"].strip()
        row = self.ctx.store.one("SELECT output FROM steps WHERE task_id=? AND lane_id=? AND kind='model' AND "
                                 "state='done' ORDER BY seq DESC LIMIT 1", (self.ctx.task_id, self.ctx.lane_id))
        message = (loads(row["output"], {}) or {}).get("message", {}) if row else {}
        text = message.get("content") if isinstance(message, dict) else None
        return text.strip()[:2000] if isinstance(text, str) and text.strip() else "(the agent gave no reason)"

    def budget_state(self, version: tuple | None = None) -> tuple[str, str]:
        """(ok | wrap_up | exceeded, message) for the next model call. "exceeded" also when a breaker tripped.
        At the cap the lane is set `blocked`, `budget.exceeded` is recorded once and `stop` is set.
        `version`: the store's `version(*WATCHED)` when the caller has just read it."""
        if self.stop:
            return "exceeded", self.stop
        c = self.ctx
        # The verdict changes only when spend grows, a cap is raised or the day turns. Another connection's commit
        # moves store.version, as does a raise through this store; this store's spend is budgets.written. While
        # the spend since the last full check stays under the room it left before any cap's wrap-up point, its
        # "ok" stands without reading a row (between_steps and before_model_call both ask before each call).
        mark, spent = (version or c.store.version(*WATCHED), budgets.day()), budgets.written(c.store)
        memo = self._budget_memo
        if memo is not None and memo[0] == mark:
            base, room, verdict = memo[1], memo[2], memo[3]
            if spent == base or (verdict[0] == "ok" and spent[0] - base[0] < room[0]
                                 and spent[1] - base[1] < room[1]):
                return verdict
        st = budgets.check(c.store, c.settings, c.role, c.task_id)
        self._budget_memo = (mark, spent, budgets.headroom(st, c.settings.budget.wrap_up_at), (st.state, st.message))
        if st.state == "exceeded":
            self.stop = st.message
            with c.store.tx():  # the event and the blocked lane together
                c.store.event("budget.exceeded", f"{self.lane_q} stopped: {st.message}", actor="cowork",
                              task=c.task_id, lane=c.lane_id, role=c.role.name,
                              data={"caps": [cap.__dict__ for cap in st.caps]})
                row = lanes_db.get_lane(c.store, c.task_id, c.lane_id)
                if row and row["state"] not in lanes_db.FINAL_LANE_STATES:
                    lanes_db.set_lane_state(c.store, c.task_id, c.lane_id, "blocked", actor="cowork",
                                            detail=st.message, error=st.message)
        return st.state, st.message

    def before_model_call(self) -> str | None:
        """Why the lane must not call the model now (budget cap, breaker), or None."""
        state, message = self.budget_state()
        return message if state == "exceeded" else None

    async def reserve_model_call(self, model: str, measure: Callable[[], tuple[int, int, int]]) -> str | None:
        """Wait until the next model call fits the lane's caps beside the calls in flight, and reserve what it may
        cost (`budgets.InFlight`); `model_call_done` gives the reservation back. Returns why the lane must stop
        instead (a cap reached by the calls it waited for), or None once the call may start.
        `measure`: see `budgets.estimate_call`, which asks it only when the call would reserve anything."""
        c = self.ctx
        est = budgets.estimate_call(c.settings, c.role, model, measure)
        if est is None:
            return None
        flight = budgets.in_flight(c.store)
        res = budgets.Reservation(c.task_id, c.role.name, est[0], est[1])
        told = False
        while True:
            self._reservation, why = flight.try_start(
                c.store, res, lambda: budgets.caps(c.store, c.settings, c.role, c.task_id))
            if why is None:
                return None
            if not told:
                told = True
                cap, n, amount = why
                mine = est[0] if cap.unit == "tokens" else est[1]
                fmt = (lambda v: f"${v:.2f}") if cap.unit == "usd" else (lambda v: f"{int(v):,} tokens")
                c.store.event("budget.wait", f"{self.lane_q} waits for {n} model call(s) in flight: they may cost "
                              f"{fmt(amount)} and this one {fmt(mine)}, past the {cap.label()}", actor="cowork",
                              task=c.task_id, lane=c.lane_id, role=c.role.name,
                              data={"cap": cap.__dict__, "in_flight": n, "reserved": amount, "estimate": mine})
            await flight.changed(timeout=self.poll_s)
            state, message = self.budget_state()
            if state == "exceeded":
                return message

    def model_call_done(self) -> None:
        """The call reserved by `reserve_model_call` is over (recorded, or failed)."""
        key, self._reservation = self._reservation, None
        if key is not None:
            budgets.in_flight(self.ctx.store).done(self.ctx.store, key)

    def _check_spawn_budget(self) -> None:
        c = self.ctx
        st = budgets.check(c.store, c.settings, c.role, c.task_id)
        if st.state == "exceeded":
            raise Denied(f"no new lanes: {st.message}")

    # -- between steps: what arrived --------------------------------------------------------------------------

    def between_steps(self) -> list[str]:
        """Notes to inject before the next model call: questions to answer, messages, handoffs, budget wrap-up."""
        c = self.ctx
        notes = []
        version = c.store.version(*WATCHED)  # one look for the budget and the inbox
        state, message = self.budget_state(version)
        if state == "exceeded":  # the lane stops now: leave the messages for when it resumes
            return []
        if state == "wrap_up" and not self._wrap_told:
            self._wrap_told = True
            c.store.event("budget.warning", f"{self.lane_q}: {message[:200]}", actor="cowork", task=c.task_id,
                          lane=c.lane_id, role=c.role.name)
            notes.append(message)
        new = self._take_new(version)
        if new:
            notes.append("New on the team channel:\n\n" + "\n\n".join(team_tools.render(m) for m in new))
        return notes

    def _take_new(self, version: tuple | None = None) -> list[dict]:
        c = self.ctx
        # the common answer, "no message at all since the last look": nothing moved store.version, or no new id
        mark = version or c.store.version(*WATCHED)
        if mark == self._msg_mark:
            return []
        self._msg_mark = mark
        top = c.store.scalar("SELECT max(id) FROM messages", default=0)  # ids only grow
        if top <= self._looked:
            return []
        row = c.store.one("SELECT msg_cursor FROM lanes WHERE task_id=? AND id=?", (c.task_id, c.lane_id))
        cursor = max(self._cursor, row["msg_cursor"] if row else 0)
        new = msgs.for_lane(c.store, c.task_id, c.lane_id, c.role.name, cursor)
        self._looked = top
        if not new:
            return []
        self._cursor = new[-1]["id"]
        if row:
            c.store.execute("UPDATE lanes SET msg_cursor=? WHERE task_id=? AND id=?", (self._cursor, c.task_id,
                                                                                      c.lane_id))
        msgs.mark(c.store, [m["id"] for m in new if m["kind"] != "ask"], "read")
        self.answering += [m for m in new if m["kind"] == "ask"]
        # answers already came back as the result of this lane's `ask`
        return [m for m in new if m["kind"] != "answer"]

    def _open_questions(self) -> list[dict]:
        self.answering = [m for m in self.answering if not msgs.answer_to(self.ctx.store, m["id"])]
        return self.answering

    def _inbox(self) -> ToolResult:
        new = self._take_new()
        if new:
            return ToolResult(True, "\n\n".join(team_tools.render(m) for m in new), {"count": len(new)})
        open_q = self._open_questions()
        if open_q:
            return ToolResult(True, "No new messages. Still waiting for your answer:\n\n" +
                              "\n\n".join(team_tools.render(m) for m in open_q), {"count": 0})
        return ToolResult(True, "No new messages.", {"count": 0})

    # -- audit and breaker ----------------------------------------------------------------------------------

    def _denied(self, name: str, args: dict, reason: str) -> ToolResult:
        c = self.ctx
        c.store.event("tool.denied", f"{c.role.name} denied {name}({_short(args)}): {reason}", actor=c.role.name,
                      task=c.task_id, lane=c.lane_id, role=c.role.name,
                      data={"tool": name, "args": args, "reason": reason, "hash": args_hash(name, args)})
        self._count(name, args, False)
        return ToolResult(False, f"denied: {reason}", {"denied": reason})

    def _audit(self, name: str, args: dict, result: ToolResult, tier: str) -> None:
        c = self.ctx
        c.store.event("tool.call", f"{c.role.name} {name}({_short(args)}) -> {'ok' if result.ok else 'error'}",
                      actor=c.role.name, task=c.task_id, lane=c.lane_id, role=c.role.name,
                      data={"tool": name, "args": args, "ok": result.ok, "tier": tier,
                            "hash": args_hash(name, args)})

    def _notify(self, name: str, args: dict, action: dict) -> None:
        c = self.ctx
        body = f"{c.role.name} ({self.lane_q}) did {name}: {approvals.summarize(name, action)}"
        if "diff" in action:
            body += "\n\n" + builtin.bound(action["diff"], 4000)
        msgs.post(c.store, kind="notify", from_role=c.role.name, from_lane=self.lane_q, to_role="human",
                  body=body, task=c.task_id)

    def _count(self, name: str, args: dict, ok: bool) -> None:
        if self.stop:
            return
        reason = self.breaker.record(name, args_hash(name, args), ok)
        if reason:
            self.stop = f"circuit breaker: {reason}"
            self.breaker.reset()
            breakers.trip(self.ctx.store, task=self.ctx.task_id, lane=self.ctx.lane_id, role=self.ctx.role,
                          reason=reason)

    # -- MCP ------------------------------------------------------------------------------------------------

    async def list_mcp(self) -> None:
        """List the role's MCP tools now, in a thread (once per gateway; `tool_specs` then answers at once): a
        server may take seconds to start, and the runner's other lanes share this event loop."""
        from cowork.tools import mcp_client

        if self._mcp is None and mcp_client.servers_for(self.ctx.settings, self.ctx.role.tools):
            await asyncio.to_thread(self._mcp_tools)

    def _mcp_tools(self) -> dict[str, dict]:
        """The role's MCP tools ("server.tool" -> description, parameters), listed once per gateway. A server that
        cannot be listed keeps the role's tools with a generic schema, so calling one names the failing server."""
        if self._mcp is not None:
            return self._mcp
        from cowork.tools import mcp_client

        self._mcp = {}
        role = self.ctx.role
        for server, cfg in mcp_client.servers_for(self.ctx.settings, role.tools).items():
            try:
                # the worktree may still be in the making while the first model call is prepared
                cwd = self.ctx.worktree if self.ctx.worktree.is_dir() else self.ctx.ws.root
                listed = mcp_client.list_tools_sync(server, cfg, cwd, log_dir=self.ctx.ws.logs_dir)
                error = None
            except mcp_client.McpUnavailable as exc:
                listed, error = {}, str(exc)
                self.ctx.store.event("tool.error", f"MCP server '{server}' is unavailable: {error}",
                                     actor="cowork", task=self.ctx.task_id, lane=self.ctx.lane_id, role=role.name,
                                     data={"server": server, "error": error})
            for name in role.tools:
                if name.split(".", 1)[0] != server:
                    continue
                if name in listed:
                    self._mcp[name] = listed[name]
                else:
                    why = error or f"server '{server}' offers no tool '{name.split('.', 1)[1]}'"
                    self._mcp[name] = {"description": f"MCP tool {name} (unavailable: {why})", "error": why}
        return self._mcp

    def _mcp_alias(self, name: str) -> str:
        """The "server.tool" name for a model-facing "server__tool" name."""
        if "." not in name and "__" in name:
            dotted = name.replace("__", ".", 1)
            if dotted in self._mcp_tools():
                return dotted
        return name

    async def _mcp_call(self, name: str, args: dict) -> ToolResult:
        from cowork.tools import mcp_client

        server, tool = name.split(".", 1)
        info = self._mcp_tools()[name]
        if info.get("error"):
            return ToolResult(False, f"MCP server '{server}' is unavailable: {info['error']}", {"mcp_server": server})
        if self._mcp_sessions is None:
            self._mcp_sessions = mcp_client.Sessions(cwd=self.ctx.worktree, log_dir=self.ctx.ws.logs_dir)
        return await self._mcp_sessions.call(server, self.ctx.settings.mcp[server], tool, args)

    async def aclose(self) -> None:
        """Stop the MCP servers this gateway started itself (lent sessions are their owner's to stop)."""
        if self._mcp_sessions is not None and self._own_sessions:
            await self._mcp_sessions.aclose()
