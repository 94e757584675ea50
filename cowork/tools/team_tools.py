"""Team tools: ask, tell, delegate, inbox and answer, with the guards that keep a team from looping.

Guards: the delegation depth limit (`policy.max_delegation_depth`), cycles (a chain of asks/delegations that
comes back to a role about the same thing), and the lane cap per task (`policy.max_lanes_per_task`). A trip is a
`Denied` (so a `tool.denied` event and an error result), never a hang: `ask` waits at most `policy.ask_timeout_s`
(time paused not counted).
"""
from __future__ import annotations

import asyncio
import re
import time

from cowork.redact import redact
from cowork.runner import control
from cowork.store import lanes as lanes_db
from cowork.team import messages as msgs
from cowork.tools.authority import Denied
from cowork.tools.context import LaneCtx, ToolResult

ENDED = lanes_db.FINAL_LANE_STATES | {"blocked"}
LIVE_STATES = {"running", "waiting-approval", "paused"}
ANSWER_GRACE_S = 5.0
STALL_S = 2.0  # a wait between two looks longer than its poll by this much: the process was stopped


def _target(ctx: LaneCtx, role: str, *, team_ok: bool = False) -> str:
    if not isinstance(role, str) or not role.strip():
        raise Denied("name a role")
    role = role.strip().lstrip("@")
    if team_ok and role in ("team", "human"):
        return role
    if role in ctx.roles.broken:  # only where the team was loaded leniently: `cowork mcp serve`
        files = sorted({p.file for p in ctx.roles.broken[role] if p.file})
        raise Denied(f"role '{role}' cannot be reached: its file {', '.join(files)} has problems a human must fix")
    if role not in ctx.roles.roles:
        raise Denied(f"no role '{role}'; roles: {', '.join(ctx.roles.names())}")
    return role


def _text(args: dict, key: str) -> str:
    """The argument, redacted: it becomes messages, lane goals and threads, all stored."""
    value = args.get(key)
    if not isinstance(value, str) or not value.strip():
        raise Denied(f"`{key}` must be a non-empty string")
    return redact(value.strip())


def lane_slug(role: str, kind: str, n: int) -> str:
    base = re.sub(r"[^a-z0-9-]", "-", role.lower())[:20].strip("-") or "lane"
    return f"{base}-{kind}-{n}"


def chain_for(ctx: LaneCtx, answering: list[dict]) -> list[list[str]]:
    """The links that led to this lane's current work: its origin and the questions it is answering now."""
    chain = list(msgs.origin_chain(ctx.store, ctx.task_id, ctx.lane_id))
    for m in answering:
        for link in m.get("thread") or []:
            if link not in chain:
                chain.append(link)
    return chain


def _guard_new_link(ctx: LaneCtx, chain: list, to_role: str, text: str, what: str) -> None:
    limit = ctx.settings.policy.max_delegation_depth
    if max(ctx.depth, len(chain)) + 1 > limit:
        raise Denied(f"{what} refused: the chain of asks/delegations would be {max(ctx.depth, len(chain)) + 1} deep "
                     f"(policy.max_delegation_depth = {limit}); do it yourself or finish with it in Next")
    link = msgs.find_cycle(chain, to_role, text)
    if link:
        raise Denied(f"{what} refused: cycle — '{link[0]}' already asked '{link[1]}' about this "
                     f"(\"{link[2][:80]}\"); answer from what you know or finish as blocked")


def _guard_lane_cap(ctx: LaneCtx) -> None:
    cap = ctx.settings.policy.max_lanes_per_task
    n = ctx.store.scalar("SELECT count(*) FROM lanes WHERE task_id=?", (ctx.task_id,), default=0)
    if n >= cap:
        raise Denied(f"task {ctx.task_id} already has {n} lanes (policy.max_lanes_per_task = {cap})")


def _new_lane(ctx: LaneCtx, role: str, kind: str, goal: str, message_id: int) -> str:
    lane_id = lane_slug(role, "ask" if kind == "consult" else "deleg", message_id)
    lanes_db.add_lane(ctx.store, ctx.task_id, lane_id, role, goal, kind=kind, parent_lane=ctx.lane_id,
                      depth=ctx.depth + 1, actor=ctx.role.name)
    ctx.store.execute("UPDATE messages SET to_lane=? WHERE id=?", (msgs.qualified(ctx.task_id, lane_id), message_id))
    return lane_id


def consult_goal(from_role: str, question: str) -> str:
    return (f"Answer this question from {from_role}: {question}\n\nLook at what you need, change nothing, and call "
            "finish with status done and your answer as the summary.")


async def ask(ctx: LaneCtx, args: dict, *, answering: list[dict], poll_s: float) -> ToolResult:
    to_role = _target(ctx, args.get("role"), team_ok=False)
    question = _text(args, "question")
    me = msgs.qualified(ctx.task_id, ctx.lane_id)
    chain = chain_for(ctx, answering)
    _guard_new_link(ctx, chain, to_role, question, "ask")
    thread = chain + [[ctx.role.name, to_role, msgs.normalize(question)[:300]]]
    live = [r for r in msgs.live_lanes(ctx.store, to_role, prefer_task=ctx.task_id, exclude=me)
            if not msgs.waiting_on_ask(ctx.store, msgs.qualified(r["task_id"], r["id"]))]
    common = dict(kind="ask", from_role=ctx.role.name, from_lane=me, to_role=to_role, body=question,
                  task=ctx.task_id, depth=ctx.depth + 1, thread=thread)
    if live:
        target = msgs.qualified(live[0]["task_id"], live[0]["id"])
        mid = msgs.post(ctx.store, to_lane=target, **common)
    else:
        _guard_lane_cap(ctx)
        with ctx.store.tx():
            mid = msgs.post(ctx.store, **common)
            lane = _new_lane(ctx, to_role, "consult", consult_goal(ctx.role.name, question), mid)
        target = msgs.qualified(ctx.task_id, lane)
    return await _await_answer(ctx, mid, target, to_role, question, poll_s)


async def _await_answer(ctx: LaneCtx, mid: int, target: str, to_role: str, question: str,
                        poll_s: float) -> ToolResult:
    try:
        return await _wait_answer(ctx, mid, target, to_role, question, poll_s)
    except asyncio.CancelledError:
        # nobody waits any more (an MCP client cancelled the call, the runner stopped): the question expires as on
        # a timeout, so its lane is not taken for one blocked in an ask (`msgs.waiting_on_ask`) from then on
        if not msgs.answer_to(ctx.store, mid):
            msgs.mark(ctx.store, [mid], "expired")
        raise


async def _wait_answer(ctx: LaneCtx, mid: int, target: str, to_role: str, question: str,
                       poll_s: float) -> ToolResult:
    last = time.monotonic()
    deadline = last + ctx.settings.policy.ask_timeout_s
    ended_at: float | None = None
    while True:
        # A pause holds the ask's clock: no tool runs out while paused, and no lane can answer meanwhile. So does
        # time this process did not run: an external agent's MCP server is stopped (SIGSTOP) with the agent's
        # process group for a pause, and finds the pause already lifted when it runs again.
        t = time.monotonic()
        if control.paused(ctx.store, ctx.task_id, ctx.lane_id):
            deadline += t - last
        elif t - last > poll_s + STALL_S:
            deadline += t - last - poll_s
        last = t
        ans = msgs.answer_to(ctx.store, mid)
        if ans:
            msgs.mark(ctx.store, [mid], "answered")
            msgs.mark(ctx.store, [ans["id"]], "read")
            return ToolResult(True, f"answer from {ans['from_role']} ({ans['from_lane'] or 'human'}):\n{ans['body']}",
                              {"message_id": mid, "answer_id": ans["id"]})
        t_task, t_lane = target.split("/", 1)
        row = lanes_db.get_lane(ctx.store, t_task, t_lane)
        if row is not None and row["kind"] != "consult" and row["state"] not in LIVE_STATES:
            # the live lane moved on before answering: a consult lane answers instead
            _guard_lane_cap(ctx)
            with ctx.store.tx():
                lane = _new_lane(ctx, to_role, "consult", consult_goal(ctx.role.name, question), mid)
            target = msgs.qualified(ctx.task_id, lane)
            continue
        if row is None or row["state"] in ENDED:
            ended_at = ended_at or time.monotonic()
            # the runner posts the answer just after the lane ends; give it a moment, then read the packet
            if time.monotonic() - ended_at >= ANSWER_GRACE_S:
                summary = _packet_summary(ctx, row)
                msgs.mark(ctx.store, [mid], "expired")
                if summary:
                    return ToolResult(True, f"answer from {to_role} ({target}):\n{summary}", {"message_id": mid})
                why = (row or {}).get("error") or (row or {}).get("state", "missing")
                return ToolResult(False, f"no answer: the consult lane {target} ended ({why}) without answering",
                                  {"message_id": mid})
        if time.monotonic() >= deadline:
            msgs.mark(ctx.store, [mid], "expired")
            return ToolResult(False, f"no answer from {to_role} ({target}) within "
                                     f"{ctx.settings.policy.ask_timeout_s:.0f}s; carry on without it or finish blocked",
                              {"message_id": mid, "timeout": True})
        await asyncio.sleep(poll_s)


def _packet_summary(ctx: LaneCtx, row: dict | None) -> str | None:
    """The Summary of a finished lane's packet, read from its worktree or the repo, or None."""
    if not row or not row.get("packet_path"):
        return None
    from cowork import handoff

    for base in (row.get("worktree"), ctx.ws.root):
        path = ctx.ws.root / base / row["packet_path"] if base else None  # an absolute base wins in `/`
        if path is not None and path.is_file():
            try:
                return handoff.load(path).section("Summary").strip() or None
            except Exception:  # noqa: BLE001 - an invalid packet: try the next place
                continue
    return None


def tell(ctx: LaneCtx, args: dict) -> ToolResult:
    to_role = _target(ctx, args.get("role"), team_ok=True)
    note = _text(args, "note")
    mid = msgs.post(ctx.store, kind="tell", from_role=ctx.role.name, from_lane=msgs.qualified(ctx.task_id, ctx.lane_id),
                    to_role=to_role, body=note, task=ctx.task_id, depth=ctx.depth)
    return ToolResult(True, f"posted #{mid} to {to_role}", {"message_id": mid})


def delegate(ctx: LaneCtx, args: dict, *, answering: list[dict]) -> ToolResult:
    to_role = _target(ctx, args.get("role"))
    goal = _text(args, "goal")
    chain = chain_for(ctx, answering)
    _guard_new_link(ctx, chain, to_role, goal, "delegate")
    _guard_lane_cap(ctx)
    thread = chain + [[ctx.role.name, to_role, msgs.normalize(goal)[:300]]]
    with ctx.store.tx():
        mid = msgs.post(ctx.store, kind="delegate", from_role=ctx.role.name,
                        from_lane=msgs.qualified(ctx.task_id, ctx.lane_id), to_role=to_role, body=goal,
                        task=ctx.task_id, depth=ctx.depth + 1, thread=thread)
        lane = _new_lane(ctx, to_role, "delegated", goal, mid)
    return ToolResult(True, f"lane {ctx.task_id}/{lane} added for {to_role}; its handoff will arrive in your inbox "
                            "when it ends. Carry on meanwhile.", {"lane": lane, "message_id": mid})


def answer(ctx: LaneCtx, args: dict) -> ToolResult:
    try:
        mid = int(args.get("message_id"))
    except (TypeError, ValueError):
        raise Denied("answer needs the integer message_id of the question") from None
    text = _text(args, "text")
    q = msgs.get(ctx.store, mid)
    me = msgs.qualified(ctx.task_id, ctx.lane_id)
    if q is None or q["kind"] != "ask":
        raise Denied(f"message #{mid} is not a question")
    if q["to_lane"] != me and not (q["to_lane"] is None and q["to_role"] == ctx.role.name):
        raise Denied(f"question #{mid} was not asked of you")
    aid = msgs.answer(ctx.store, q, from_role=ctx.role.name, from_lane=me, body=text)
    if aid is None:
        return ToolResult(False, f"question #{mid} is already answered")
    return ToolResult(True, f"answered #{mid}", {"answer_id": aid})


def render(m: dict) -> str:
    """A message as the agent sees it."""
    who = m["from_role"] + (f" ({m['from_lane']})" if m.get("from_lane") else "")
    if m["kind"] == "ask":
        return (f"QUESTION #{m['id']} from {who}: {m['body']}\n"
                f"Answer it with answer(message_id={m['id']}, text=...) before you go on.")
    if m["kind"] == "handoff":
        return f"HANDOFF #{m['id']} from {who}:\n{m['body']}"
    if m["kind"] == "answer":
        return f"ANSWER #{m['id']} from {who} to #{m['reply_to']}: {m['body']}"
    label = "MESSAGE FROM A HUMAN" if msgs.is_human(m["from_role"]) else f"{m['kind'].upper()}"
    return f"{label} #{m['id']} from {who}: {m['body']}"
