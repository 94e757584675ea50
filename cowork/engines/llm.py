"""The built-in agent loop: model call -> tool calls through the gateway -> ... -> `finish`.

Every model call, tool call and injected message is a journal step, and the conversation is rebuilt from the
journal on every entry, so a lane killed at any point resumes where it stopped: completed model calls are not
re-sent, completed tool calls are not re-run, and a call caught mid-flight is reported to the model as interrupted.
"""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from cowork.engines import models
from cowork.engines import prompts
from cowork.runner.journal import INTERRUPTED_NOTE, Journal, Step

MAX_BROKEN = 5  # broken tool calls (or replies without one) in a row before the lane fails
MAX_ARG_DEPTH = 32  # how deep a tool call's arguments may nest
WRITE_TOOLS = {"write_file", "run", "delegate"}

@dataclass
class LaneOutcome:
    """How a lane's engine run ended. `finish` holds the finish arguments (the packet's content); `timed_out`: a
    command stopped at its timeout (the packet is built from its output, whatever packet it wrote)."""

    status: str
    finish: dict = field(default_factory=dict)
    error: str | None = None
    timed_out: bool = False


@dataclass
class Hooks:
    """What the runner lends the engine: waiting out a pause, the worktree being ready, committing early."""

    hold: Callable[[], Awaitable[None]] | None = None  # returns once the lane is not paused
    before_tool: Callable[[], Awaitable[None]] | None = None  # returns once the worktree is ready for a tool
    after_write: Callable[[str], Awaitable[None]] | None = None  # commit the worktree after a write step
    on_fallback: Callable[[str, str, Exception], None] | None = None
    on_retry: Callable[[str, str, int, float], None] | None = None  # (model, error, tries so far, wait in seconds)


def rebuild(journal: Journal) -> list[dict]:
    """The conversation as the journal holds it (a new list each time).

    Steps are only ever appended, and a step in a final state never changes again, so the messages of the leading
    run of final steps are kept on the journal and only the steps after them are read again.
    """
    done, kept = journal.conversation
    messages = list(kept)
    steps = journal.steps
    for i in range(done, len(steps)):
        s = steps[i]
        if s.state == "started":
            break  # in flight: read again next time, with what follows it
        _add(messages, s)
        done, kept = i + 1, None
    if kept is None:
        journal.conversation = (done, list(messages))
    for s in steps[done:]:
        _add(messages, s)
    return messages


def _add(messages: list[dict], s: Step) -> None:
    """The messages one journal step contributes to the conversation."""
    if s.kind == "message" and s.state == "done":
        messages.extend((s.output or {}).get("messages", []))
    elif s.kind == "model" and s.state == "done":
        messages.append(s.output["message"])
    elif s.kind == "tool" and s.state != "started":  # a started one is in flight in this run (recover() turned
        if s.state in ("done", "failed"):              # a dead runner's into interrupted)
            content = (s.output or {}).get("content", "")
        else:
            content = f"INTERRUPTED: {INTERRUPTED_NOTE}"
        messages.append({"role": "tool", "tool_call_id": (s.input or {}).get("id"), "content": content})


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
    if hooks.hold:  # the gateway holds every tool call through a pause; with this, the lane shows as paused
        gateway.hold = hooks.hold
    store, settings, role = ctx.store, ctx.settings, ctx.role
    journal.recover()
    if not journal.steps:
        journal.record("message", "start", output={"messages": [
            {"role": "system", "content": system or ""}, {"role": "user", "content": kickoff or ""}]})
    for note in notes or []:
        journal.record("message", "note", output={"messages": [{"role": "user", "content": note}]})
    await gateway.list_mcp()
    specs = list(gateway.tool_specs())
    by_name = {s["function"]["name"]: s for s in specs}
    choice = models.resolve(settings, role)
    max_steps = (role.budget.max_steps if role.budget and role.budget.max_steps else None) \
        or settings.policy.max_steps_per_lane
    lane_name = f"{ctx.task_id}/{ctx.lane_id}"
    specs_chars = len(json.dumps(specs))  # the tool specs' share of every request, for budget reservations

    while True:
        done = _finished(journal)
        if done is not None:
            return LaneOutcome(done.get("status", "done"), done)
        messages = rebuild(journal)
        pending = _pending_calls(messages)
        if pending:
            for i, call in enumerate(pending):
                try:
                    if hooks.before_tool:
                        await hooks.before_tool()
                except asyncio.CancelledError:  # stopped before the call ran: say so, not "interrupted"
                    _not_run(journal, call)
                    raise
                after = pending[i + 1] if i + 1 < len(pending) else None
                outcome = await _tool_step(ctx, gateway, journal, call, by_name, hooks, after)
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
        stop = await gateway.reserve_model_call(choice.model, lambda: (specs_chars + _chars(messages),
                                                                        *_usage_so_far(journal)))
        if stop:
            return LaneOutcome("blocked", error=stop)
        try:
            step = journal.start("model", choice.model, {"n": len(messages)})
            try:
                reply = await models.complete(choice, messages, specs, settings=settings,
                                              on_fallback=hooks.on_fallback, on_retry=hooks.on_retry, hold=hooks.hold)
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
                if reply.message.get("tool_calls"):  # the first call's "before" record rides this commit
                    _start_tool(journal, reply.message["tool_calls"][0], by_name)
        finally:
            gateway.model_call_done()
        if not reply.message.get("tool_calls"):
            streak = _broken_streak(journal) + 1
            journal.record("message", "nudge", output={"broken": True, "messages": [
                {"role": "user", "content": prompts.no_tool_nudge()}]})
            if streak >= MAX_BROKEN:
                return LaneOutcome("failed", error=f"lane {lane_name}: {streak} replies in a row without a valid "
                                                   "tool call")


def _chars(messages: list[dict]) -> int:
    """About how many characters a request's messages send (their text and their tool calls' arguments)."""
    n = 0
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            n += len(content)
        elif content is not None:
            n += len(json.dumps(content))
        for call in m.get("tool_calls") or ():
            n += len(call["function"].get("arguments") or "") + 40
    return n


def _usage_so_far(journal: Journal) -> tuple[int, int]:
    """(tokens read by the lane's last model call, most tokens any of its calls wrote)."""
    last_in = most_out = 0
    for s in journal.steps:
        if s.kind == "model" and s.state == "done":
            last_in, most_out = s.tokens_in, max(most_out, s.tokens_out)
    return last_in, most_out


def _started_ahead(journal: Journal, call: dict) -> Step | None:
    """The journal's last step when it is this call's, started and not yet run."""
    last = journal.steps[-1] if journal.steps else None
    if last is None or last.kind != "tool" or last.state != "started":
        return None
    return last if (last.input or {}).get("id") == call["id"] else None


def _not_run(journal: Journal, call: dict) -> None:
    """Record that a call started ahead (see `_start_tool`) never ran: the lane stopped first."""
    last = _started_ahead(journal, call)
    if last is not None:
        journal.finish(last, {"content": "not run: the lane stopped before this call ran; call it again if you still "
                                          "need it"}, ok=False)


def _parse_call(call: dict, by_name: dict) -> tuple[str, Any, str | None]:
    """(tool name, arguments (the raw text when it is not JSON), what is wrong with the call or None)."""
    name, raw = call["function"]["name"], call["function"].get("arguments") or "{}"
    too_deep = f"the arguments are nested more than {MAX_ARG_DEPTH} levels deep; send a flatter JSON object"
    try:
        args = json.loads(raw) if raw.strip() else {}
    except ValueError as exc:
        return name, raw, f"the arguments are not valid JSON ({exc.msg} at char {exc.pos}); send a JSON object"
    except RecursionError:
        return name, raw, too_deep
    if _depth(args) > MAX_ARG_DEPTH:  # masking, hashing and storing them all recurse: one more broken call
        return name, raw, too_deep
    if name not in by_name:
        return name, args, f"unknown tool '{name}'; your tools are: {', '.join(sorted(by_name))}"
    return name, args, check_args(by_name[name], args)


def _depth(value: Any) -> int:
    """How deep lists and objects nest in `value` (a scalar is 0), without recursing."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        v, d = todo.pop()
        if isinstance(v, (dict, list)):
            deepest = max(deepest, d)
            if d > MAX_ARG_DEPTH:
                break
            todo.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))
    return deepest


def _start_tool(journal: Journal, call: dict, by_name: dict) -> tuple[Step, str, Any, str | None]:
    """The journal step of a tool call: the one already started for it (its "before" record rode the commit of
    the step before it), or a new one."""
    name, args, problem = _parse_call(call, by_name)
    step = _started_ahead(journal, call) or journal.start("tool", name, {"id": call["id"], "args": args})
    return step, name, args, problem


async def _tool_step(ctx: Any, gateway: Any, journal: Journal, call: dict, by_name: dict,
                     hooks: Hooks, after: dict | None = None) -> LaneOutcome | None:
    """Run one tool call (journaled). Returns an outcome when it was an accepted `finish`.

    `after`, the next call of the same reply, is started in the commit that records this one's result.
    """
    step, name, args, problem = _start_tool(journal, call, by_name)
    if problem is not None:
        with journal.store.tx():
            journal.finish(step, {"content": f"ERROR: {problem}", "broken": True}, ok=False)
            if after is not None:
                _start_tool(journal, after, by_name)
        return None

    def record(result: Any) -> None:  # in the transaction of the call's audit event
        if name == "finish":
            if result.ok:
                journal.finish(step, {"content": "finish recorded; your work is being committed and checked.",
                                      "finish": args})
                return  # the calls after an accepted finish are not run
            journal.finish(step, {"content": f"ERROR: {result.content}", "broken": True}, ok=False)
        else:
            journal.finish(step, {"content": result.content, "ok": result.ok}, ok=result.ok)
        if after is not None:
            _start_tool(journal, after, by_name)

    try:
        result = await gateway.call(name, args, then=record)
    except asyncio.CancelledError:
        if not gateway.dispatched:  # stopped while held (a pause) before the tool ran
            _not_run(journal, call)
        raise
    if name == "finish":
        return LaneOutcome(args["status"], args) if result.ok else None
    if result.ok and name in WRITE_TOOLS and hooks.after_write:
        await hooks.after_write(name)
    return None


def _record_usage(store: Any, ctx: Any, reply: models.Completion) -> None:
    try:
        from cowork.team import budgets
    except ImportError:  # the team package is optional while it is being built
        return
    budgets.record_usage(store, task=ctx.task_id, lane=ctx.lane_id, role=ctx.role.name, model=reply.model,
                         tokens_in=reply.tokens_in, tokens_out=reply.tokens_out, usd=reply.usd)
