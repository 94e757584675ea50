"""The tool gateway: the one door every tool call of a lane goes through.

For each call it applies, in order: the role's authority (allow-list, `cannot`, worktree confinement, run_allow),
pause and circuit-breaker state, the budget, the approval tier (auto / notify / block), then runs the tool,
redacts its output and writes the audit event. Engines call `tool_specs()`, `call()` and `between_steps()`, and
must stop the lane (no further model call) when `stop` is set or `before_model_call()` returns a reason.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

from cowork.redact import redact, redact_obj
from cowork.roles import BUILTIN_TOOLS
from cowork.tools import builtin
from cowork.tools.authority import Denied, check_tool
from cowork.tools.context import LaneCtx, ToolResult
from cowork.tools.specs import spec, validate_finish

__all__ = ["Gateway", "LaneCtx", "ToolResult", "args_hash"]

TEAM_TOOLS = {"ask", "tell", "delegate", "inbox", "answer"}


def args_hash(name: str, args: Any) -> str:
    """A stable hash of one call: the key of repeated-call detection and of approvals across restarts."""
    blob = json.dumps([name, args], sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _short(args: dict, limit: int = 160) -> str:
    text = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False, default=str)}" for k, v in args.items())
    return text if len(text) <= limit else text[:limit] + "…"


class Gateway:
    """Tool calls for one lane.

    Args:
        ctx: the lane (role, task, lane id, worktree, store, settings).
    """

    def __init__(self, ctx: LaneCtx):
        self.ctx = ctx
        self.stop: str | None = None            # set when the lane must end now (breaker, budget, expiry)
        self.last_text: str = ""                # the agent's last text, shown as context on approvals
        self.run_timeout_s = builtin.RUN_TIMEOUT_S
        self.poll_s = 0.5                       # how often waits (approvals, ask) re-read the store
        self._team = None
        self._mcp = None

    # -- what the model sees --------------------------------------------------------------------------------

    def tool_names(self, extra: list[str] | None = None) -> list[str]:
        """The tools this lane may call, in a stable order; always includes finish and answer."""
        role = self.ctx.role
        names = [t for t in role.tools if t in BUILTIN_TOOLS and role.allows(t)]
        names += [t for t in role.tools if "." in t and role.allows(t) and t in self._mcp_tools()]
        names += ["answer", "finish"]
        for x in extra or []:
            if x not in names and role.allows(x):
                names.append(x)
        return names

    def tool_specs(self, extra: list[str] | None = None) -> list[dict]:
        """OpenAI tool schemas for the role's allowed tools (plus `extra`, e.g. ["submit_plan"])."""
        out = []
        mcp = self._mcp_tools()
        for name in self.tool_names(extra):
            if name in mcp:
                out.append(spec(name, mcp[name].get("description"), mcp[name].get("parameters")))
            else:
                out.append(spec(name))
        return out

    # -- the door -------------------------------------------------------------------------------------------

    async def call(self, name: str, args: dict) -> ToolResult:
        """Run one tool call through authority, approvals, budget, redaction and audit."""
        if not isinstance(args, dict):
            args = {}
        if name == "finish":
            problem = validate_finish(args)
            return ToolResult(False, problem) if problem else ToolResult(True, "finishing", dict(args))
        if name == "submit_plan":
            if not isinstance(args.get("lanes"), list) or not args.get("title"):
                return ToolResult(False, "submit_plan needs a title and a list of lanes")
            return ToolResult(True, "plan submitted", dict(args))
        if self.stop:
            return ToolResult(False, f"lane is stopping: {self.stop}", {"stop": self.stop})
        try:
            check_tool(self.ctx.role, name)
            if name not in BUILTIN_TOOLS and name not in TEAM_TOOLS and name not in self._mcp_tools():
                raise Denied(f"unknown tool '{name}'")
            result = await self._dispatch(name, args)
        except Denied as exc:
            self._denied(name, args, exc.reason)
            return ToolResult(False, f"denied: {exc.reason}", {"denied": exc.reason})
        except Exception as exc:  # a tool's own failure goes back to the agent, never crashes the lane
            result = ToolResult(False, f"{name} failed: {type(exc).__name__}: {exc}")
        result.content = redact(result.content)
        if result.data:
            result.data = redact_obj(result.data)
        self._audit(name, args, result)
        return result

    async def _dispatch(self, name: str, args: dict) -> ToolResult:
        if name in builtin.SYNC_TOOLS:
            return builtin.SYNC_TOOLS[name](self.ctx, args)
        if name == "run":
            return await builtin.run(self.ctx, args, self.run_timeout_s)
        return ToolResult(False, f"tool '{name}' is not available yet")

    def between_steps(self) -> list[str]:
        """Notes to inject before the next model call: questions to answer, messages, budget wrap-up."""
        return []

    def before_model_call(self) -> str | None:
        """Why the lane must not call the model now (budget cap, breaker), or None. Sets `stop`."""
        return self.stop

    # -- audit ----------------------------------------------------------------------------------------------

    def _denied(self, name: str, args: dict, reason: str) -> None:
        c = self.ctx
        c.store.event("tool.denied", f"{c.role.name} denied {name}({_short(args)}): {reason}", actor=c.role.name,
                      task=c.task_id, lane=c.lane_id, role=c.role.name,
                      data={"tool": name, "args": args, "reason": reason, "hash": args_hash(name, args)})

    def _audit(self, name: str, args: dict, result: ToolResult, tier: str = "auto") -> None:
        c = self.ctx
        c.store.event("tool.call", f"{c.role.name} {name}({_short(args)}) -> {'ok' if result.ok else 'error'}",
                      actor=c.role.name, task=c.task_id, lane=c.lane_id, role=c.role.name,
                      data={"tool": name, "args": args, "ok": result.ok, "tier": tier,
                            "hash": args_hash(name, args)})

    def _mcp_tools(self) -> dict[str, dict]:
        return {}
