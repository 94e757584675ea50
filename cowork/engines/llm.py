"""The built-in agent loop: model call -> tool calls through the gateway -> ... -> `finish`.

Every model call, tool call and injected message is a journal step, and the conversation is rebuilt from the
journal on every entry, so a lane killed at any point resumes where it stopped: completed model calls are not
re-sent, completed tool calls are not re-run, and a call caught mid-flight is reported to the model as interrupted.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from cowork.engines import models
from cowork.engines import prompts
from cowork.runner.journal import INTERRUPTED_NOTE, Journal

MAX_BROKEN = 5  # broken tool calls (or replies without one) in a row before the lane fails
WRITE_TOOLS = {"write_file", "run", "delegate"}

@dataclass
class LaneOutcome:
    """How a lane's engine run ended. `finish` holds the finish arguments (the packet's content)."""

    status: str
    finish: dict = field(default_factory=dict)
    error: str | None = None


@dataclass
class Hooks:
    """What the runner lends the engine: waiting out a pause, the worktree being ready, committing early."""

    hold: Callable[[], Awaitable[None]] | None = None  # returns once the lane is not paused
    before_tool: Callable[[], Awaitable[None]] | None = None  # returns once the worktree is ready for a tool
    after_write: Callable[[str], Awaitable[None]] | None = None  # commit the worktree after a write step
    on_fallback: Callable[[str, str, Exception], None] | None = None


def rebuild(journal: Journal) -> list[dict]:
    """The conversation as the journal holds it."""
    messages: list[dict] = []
    for s in journal.steps:
        if s.kind == "message" and s.state == "done":
            messages.extend((s.output or {}).get("messages", []))
        elif s.kind == "model" and s.state == "done":
            messages.append(s.output["message"])
        elif s.kind == "tool":
            call_id = (s.input or {}).get("id")
            if s.state in ("done", "failed"):
                content = (s.output or {}).get("content", "")
            else:  # started by a dead runner (recover() turns it into interrupted) or interrupted
                content = f"INTERRUPTED: {INTERRUPTED_NOTE}"
            messages.append({"role": "tool", "tool_call_id": call_id, "content": content})
    return messages


def _pending_calls(messages: list[dict]) -> list[dict]:
    """Tool calls of the last assistant message that have no result yet."""
    for i in range(len(messages) - 1, -1, -1):
        m = messages[i]
        if m.get("role") == "assistant":
            answered = {x.get("tool_call_id") for x in messages[i + 1:] if x.get("role") == "tool"}
            return [c for c in m.get("tool_calls") or [] if c["id"] not in answered]
    return []


def _finished(journal: Journal) -> dict | None:
    """The accepted finish arguments, if the last conversational step is an accepted `finish`."""
    for s in reversed(journal.steps):
        if s.kind == "check":
            continue
        if s.kind == "tool" and s.name == "finish" and s.state == "done":
            return (s.output or {}).get("finish")
        if s.kind == "tool" and (s.output or {}).get("skipped"):
            continue
        return None
    return None


def _broken_streak(journal: Journal) -> int:
    n = 0
    for s in reversed(journal.steps):
        if s.kind == "check":
            continue
        if (s.output or {}).get("broken"):
            n += 1
        elif s.kind in ("tool", "message") and s.name != "nudge":
            break
    return n


_TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "array": list, "object": dict}


def check_args(spec: dict, args: Any) -> str | None:
    """A problem with `args` against a tool's JSON schema (object, required keys, basic types), or None."""
    if not isinstance(args, dict):
        return "arguments must be a JSON object"
    params = spec.get("function", {}).get("parameters", {}) or {}
    props = params.get("properties", {}) or {}
    missing = [k for k in params.get("required", []) if k not in args]
    if missing:
        return "missing required argument(s): " + ", ".join(missing)
    for key, value in args.items():
        want = _TYPES.get((props.get(key) or {}).get("type"))
        if want is list and isinstance(value, str):  # models often send one string for a list; tools accept it
            continue
        if want and value is not None and not isinstance(value, want):
            return f"argument '{key}' should be {props[key]['type']}, got {type(value).__name__}"
        if isinstance(value, bool) and want in (int, (int, float)):
            return f"argument '{key}' should be {props[key]['type']}, got boolean"
    return None


async def run_llm_lane(ctx: Any, gateway: Any, journal: Journal, *, system: str | None = None,
                       kickoff: str | None = None, notes: list[str] | None = None,
                       hooks: Hooks | None = None) -> LaneOutcome:
    """Run (or resume) the agent loop of one lane until it calls `finish`, fails, or hits a cap.

    Args:
        ctx: the lane's LaneCtx (store, settings, role, task_id, lane_id, ...).
        gateway: the lane's tool gateway (tool_specs, call, between_steps).
        journal: the lane's journal; its steps are the conversation so far.
        system, kickoff: the first two messages, used only when the journal is empty.
        notes: user messages to add before continuing (review comments, check output, conflicts).
        hooks: pause, early commit, budget and fallback callbacks from the runner.
    """
    hooks = hooks or Hooks()
    store, settings, role = ctx.store, ctx.settings, ctx.role
    journal.recover()
    if not journal.steps:
        journal.record("message", "start", output={"messages": [
            {"role": "system", "content": system or ""}, {"role": "user", "content": kickoff or ""}]})
    for note in notes or []:
        journal.record("message", "note", output={"messages": [{"role": "user", "content": note}]})
    specs = list(gateway.tool_specs())
    by_name = {s["function"]["name"]: s for s in specs}
    choice = models.resolve(settings, role)
    max_steps = (role.budget.max_steps if role.budget and role.budget.max_steps else None) \
        or settings.policy.max_steps_per_lane
    lane_name = f"{ctx.task_id}/{ctx.lane_id}"

    while True:
        done = _finished(journal)
        if done is not None:
            return LaneOutcome(done.get("status", "done"), done)
        messages = rebuild(journal)
        pending = _pending_calls(messages)
        if pending:
            for i, call in enumerate(pending):
                if hooks.hold:
                    await hooks.hold()
                if hooks.before_tool:
                    await hooks.before_tool()
                outcome = await _tool_step(ctx, gateway, journal, call, by_name, hooks)
                if outcome is not None:
                    for rest in pending[i + 1:]:
                        s = journal.start("tool", rest["function"]["name"], {"id": rest["id"]})
                        journal.finish(s, {"content": "not run: the lane finished", "skipped": True}, ok=False)
                    return outcome
            streak = _broken_streak(journal)
            if streak >= MAX_BROKEN:
                return LaneOutcome("failed", error=f"lane {lane_name}: {streak} broken tool calls in a row; last: "
                                                   f"{(journal.steps[-1].output or {}).get('content', '')[:300]}")
            continue

        # a model call
        calls = journal.model_calls()
        if calls >= max_steps:
            return LaneOutcome("blocked", error=f"lane {lane_name}: step cap of {max_steps} model calls reached "
                                                "without finish")
        if hooks.hold:
            await hooks.hold()
        extra = list(gateway.between_steps())
        stop = gateway.before_model_call()
        if stop:
            return LaneOutcome("blocked", error=stop)  # the gateway's reason as written: readers key on its prefix
        left = max_steps - calls
        if left <= max(2, max_steps // 10) and not any(s.name == "step_cap" for s in journal.steps):
            journal.record("message", "step_cap", output={"messages": [
                {"role": "user", "content": prompts.step_cap_warning(left)}]})
        for text in extra:
            journal.record("message", "between", output={"messages": [{"role": "user", "content": text}]})
        if extra or left <= max(2, max_steps // 10):
            messages = rebuild(journal)
        step = journal.start("model", choice.model, {"n": len(messages)})
        try:
            reply = await models.complete(choice, messages, specs, settings=settings, on_fallback=hooks.on_fallback)
        except models.ModelError as exc:
            journal.finish(step, {"error": exc.message}, ok=False)
            store.event("model.call", f"{lane_name}: model call failed: {exc.message[:200]}", actor=role.name,
                        task=ctx.task_id, lane=ctx.lane_id, role=role.name, data={"error": exc.message})
            return LaneOutcome("failed", error=f"lane {lane_name}: {exc.message}")
        with store.tx():
            journal.finish(step, {"message": reply.message, "model": reply.model}, tokens_in=reply.tokens_in,
                           tokens_out=reply.tokens_out, usd=reply.usd, lane_step_no=True)
            store.event("model.call", f"{lane_name} step {calls + 1} ({reply.model})", actor=role.name,
                        task=ctx.task_id, lane=ctx.lane_id, role=role.name, tokens_in=reply.tokens_in,
                        tokens_out=reply.tokens_out, usd=reply.usd)
            _record_usage(store, ctx, reply)
        if not reply.message.get("tool_calls"):
            streak = _broken_streak(journal) + 1
            journal.record("message", "nudge", output={"broken": True, "messages": [
                {"role": "user", "content": prompts.no_tool_nudge()}]})
            if streak >= MAX_BROKEN:
                return LaneOutcome("failed", error=f"lane {lane_name}: {streak} replies in a row without a valid "
                                                   "tool call")


async def _tool_step(ctx: Any, gateway: Any, journal: Journal, call: dict, by_name: dict,
                     hooks: Hooks) -> LaneOutcome | None:
    """Run one tool call (journaled). Returns an outcome when it was an accepted `finish`."""
    name, raw = call["function"]["name"], call["function"].get("arguments") or "{}"
    problem, args = None, None
    try:
        args = json.loads(raw) if raw.strip() else {}
    except ValueError as exc:
        problem = f"the arguments are not valid JSON ({exc.msg} at char {exc.pos}); send a JSON object"
    if problem is None and name not in by_name:
        problem = f"unknown tool '{name}'; your tools are: {', '.join(sorted(by_name))}"
    if problem is None:
        problem = check_args(by_name[name], args)
    step = journal.start("tool", name, {"id": call["id"], "args": args if args is not None else raw})
    if problem is not None:
        journal.finish(step, {"content": f"ERROR: {problem}", "broken": True}, ok=False)
        return None
    result = await gateway.call(name, args)
    if name == "finish":
        if not result.ok:
            journal.finish(step, {"content": f"ERROR: {result.content}", "broken": True}, ok=False)
            return None
        journal.finish(step, {"content": "finish recorded; your work is being committed and checked.",
                              "finish": args})
        return LaneOutcome(args["status"], args)
    content = getattr(result, "content", str(result))
    ok = bool(getattr(result, "ok", True))
    journal.finish(step, {"content": content, "ok": ok}, ok=ok)
    if ok and name in WRITE_TOOLS and hooks.after_write:
        await hooks.after_write(name)
    return None


def _record_usage(store: Any, ctx: Any, reply: models.Completion) -> None:
    try:
        from cowork.team import budgets
    except ImportError:  # the team package is optional while it is being built
        return
    budgets.record_usage(store, task=ctx.task_id, lane=ctx.lane_id, role=ctx.role.name, model=reply.model,
                         tokens_in=reply.tokens_in, tokens_out=reply.tokens_out, usd=reply.usd)
