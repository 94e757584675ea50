"""Humans on the team channel: `cowork say @ROLE|@team TEXT`.

A message to a busy role (a lane of it running) reaches that live lane between its steps. A message to an idle
role starts work: a task with a one-lane plan for that role whose goal is the message.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from cowork.errors import BadInput
from cowork.team import messages as msgs


@dataclass
class Said:
    message_id: int
    to: str
    delivered_to: list[str] = field(default_factory=list)   # live lanes ("task/lane") that will see it
    task: str | None = None                                  # the task started for an idle role
    reply_to: int | None = None


def parse_target(target: str, roles) -> str:
    name = target.strip().lstrip("@")
    if name == "team" or name in roles.roles or name in roles.broken:  # a broken role's file still names it
        return name
    raise BadInput(f"unknown role '{name}'", hint="say @ROLE or @team; roles: " + ", ".join(roles.names()))


def say(ws, store, settings, roles, target: str, text: str, *, by: str, reply_to: int | None = None,
        start: bool = True) -> Said:
    """Post a human's message. Returns where it went, and the task started for an idle role, if any.

    Args:
        target: "@role", "role" or "@team".
        reply_to: answer this question (message id) instead of starting anything.
        start: for an idle role, create and approve a one-lane task (the caller starts a runner for it).
    """
    if not text or not text.strip():
        raise BadInput("the message is empty")
    to = parse_target(target, roles)
    if reply_to is not None:
        q = msgs.get(store, reply_to)
        if q is None or q["kind"] != "ask":
            raise BadInput(f"message #{reply_to} is not a question", hint="see `cowork inbox`")
        mid = msgs.answer(store, q, from_role=by, body=text, actor=by)
        if mid is None:
            raise BadInput(f"question #{reply_to} is already answered")
        return Said(mid, q["from_role"], [q["from_lane"]] if q["from_lane"] else [], reply_to=reply_to)
    if to == "team":
        live = store.all("SELECT task_id, id FROM lanes WHERE state='running' ORDER BY started_at")
        mid = msgs.post(store, kind="human", from_role=by, to_role="team", body=text, actor=by)
        return Said(mid, "team", [msgs.qualified(r["task_id"], r["id"]) for r in live])
    live = msgs.live_lanes(store, to)
    if live:
        refs = [msgs.qualified(r["task_id"], r["id"]) for r in live]
        # one live lane: address it; several: every lane of the role sees it
        mid = msgs.post(store, kind="human", from_role=by, to_role=to, to_lane=refs[0] if len(refs) == 1 else None,
                        body=text, actor=by)
        return Said(mid, to, refs)
    if not start:
        mid = msgs.post(store, kind="human", from_role=by, to_role=to, body=text, actor=by)
        return Said(mid, to)
    from cowork.runner import planning

    roles.require()  # a runner needs every role file (the lane may ask or delegate to any role)
    planning.require_models(settings, roles, [to])  # a task it could not run is never started
    draft = planning.create_task(ws, store, settings, roles, text, to=to, origin=by)
    plan = planning.one_lane_plan(draft.task, draft.title, to, text)
    planning.save_plan(ws, store, settings, draft.task, plan)
    lane = plan.lanes[0].id
    with store.tx():  # the lane, the message and the lane's cursor past it: a runner sees all of them or none
        planning.approve(store, draft.task, plan, by=by)
        mid = msgs.post(store, kind="human", from_role=by, to_role=to, to_lane=msgs.qualified(draft.task, lane),
                        body=text, task=draft.task, actor=by)
        # the goal already carries the text: the lane need not see it twice
        store.execute("UPDATE lanes SET msg_cursor=? WHERE task_id=? AND id=?", (mid, draft.task, lane))
    return Said(mid, to, [msgs.qualified(draft.task, lane)], task=draft.task)
