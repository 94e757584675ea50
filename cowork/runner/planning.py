"""Creating a task and planning it: the brief on the target, the planner's `submit_plan`, validation, approval."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cowork import plan as plan_mod
from cowork.errors import BadInput, CoworkError, Problem, ValidationFailed
from cowork.plan import LaneSpec, Plan, PlanMeta
from cowork.runner.journal import Journal
from cowork.runner.mainline import commit_to_target
from cowork.runner.tasks import add_plan_lanes, brief_text, first_line, new_task_id
from cowork.store import lanes as lanes_db

MAX_PLAN_TRIES = 3
PLAN_LANE = "_plan"


@dataclass
class Draft:
    """A task created from a request: its id, its brief's text, and who it was addressed to."""

    task: str
    title: str
    brief: str
    to: str


def create_task(ws, store, settings, roles, text: str, *, to: str | None = None, attachments: list[Path] = (),
                origin: str = "human", holder: str = "cli") -> Draft:
    """Make a task id, write `handoffs/<task>/brief.md` and commit it on the merge target.

    Raises:
        BadInput: empty text, or `to` names no role.
    """
    if not text.strip():
        raise BadInput("the request is empty", hint='cowork delegate "what you want done"')
    if to is not None and to not in roles:
        raise BadInput(f"unknown role '{to}'", hint="known roles: " + ", ".join(roles.names()))
    for path in attachments:  # before the task exists: a typo leaves nothing behind
        if not Path(path).is_file():
            raise BadInput(f"attachment {path} is not a file", hint="check the path given to --attach")
    require_target(ws, settings)
    title = first_line(text)
    with store.tx():
        task = new_task_id(store, ws, title)
        lanes_db.create_task(store, task, title, origin=origin)
    try:
        brief = brief_text(task, text, to=to or settings.planner, attachments=list(attachments), origin=origin,
                           root=ws.root)
        commit_to_target(ws, store, settings, {f"handoffs/{task}/brief.md": brief}, f"{task}: brief",
                         holder=holder, trailers={"Cowork-Task": task})
    except BaseException as exc:  # a task with no brief never runs: it ends here, saying why, not `planning`
        lanes_db.set_task_state(store, task, "failed", actor="cowork",
                                error=f"its brief could not be committed: {getattr(exc, 'message', None) or exc}"[:500])
        raise
    return Draft(task, title, brief, to or settings.planner)


def require_models(settings, roles, names) -> None:
    """Each named role that calls a model can call one (its API key is set, and a model server it names on this
    machine is there), checked before a task is written or run: a missing key or a server not started is said
    once, up front, not as a brief on main and a lane that failed.

    Raises:
        ModelError: a role's model needs a key that is not set, or no model can stand in, or its server on this
            machine refuses connections and it has no fallback; the message names the role.
    """
    from cowork.engines import detect, models, retry

    checked: set[str] = set()
    for name in dict.fromkeys(names):
        role = roles.roles.get(name)
        if role is None or role.engine == "command":  # an unknown role is reported where it is named
            continue
        try:
            choice = models.resolve(settings, role)
        except models.ModelError as exc:
            raise models.ModelError(f"role {name}: {exc.message}", hint=exc.hint) from None
        base = choice.api_base or (detect.OLLAMA_BASE if detect.provider_of(choice.model) in ("ollama", "ollama_chat")
                                   else None)
        if choice.is_local or choice.fallbacks or not base or base in checked:
            continue
        checked.add(base)
        if detect.refused(base):
            raise models.ModelError(
                f"role {name}: nothing listens at {retry.where(base)}, the server of its model {choice.model}",
                hint=f"start the model server there, or point COWORK_API_BASE (or `[model] api_base`, or the role's "
                     f"`api_base:`) at one that runs; the model comes from {choice.source}")


def require_target(ws, settings) -> None:
    """A task's files are committed on the merge target: say plainly when there is no repository or no commit.

    Raises:
        BadInput: not a git repository, or the target branch has no commit yet.
    """
    from cowork.gitops.git import rev, toplevel

    target = settings.merge.target
    if toplevel(ws.root) is None:
        raise BadInput(f"{ws.root} is not a git repository", hint="`git init` and make a first commit, or run "
                       "`cowork init --git-init --commit`")
    if rev(ws.root, f"refs/heads/{target}") is None:
        hint = ("make a first commit (`git add -A && git commit -m init`)" if rev(ws.root, "HEAD") is None
                else "create the branch, or set [merge] target in cowork.toml to the branch lanes merge into")
        raise BadInput(f"the merge target '{target}' has no commit in {ws.root}", hint=hint)


def saved_plan(ws, store, settings, roles, task: str) -> Plan:
    """The plan committed for a task that waits for approval (`handoffs/<task>/plan.md` on the target), checked
    against the team's roles as they are now.

    Raises:
        BadInput: no such task, or it is not awaiting approval. ValidationFailed: the plan no longer fits.
    """
    from cowork.gitops.git import run_git

    _require_state(store, task, ("awaiting-approval",), "its plan is not waiting for approval")
    rel = f"handoffs/{task}/plan.md"
    proc = run_git("show", f"refs/heads/{settings.merge.target}:{rel}", cwd=ws.root)
    if proc.returncode != 0:
        raise BadInput(f"task {task} has no {rel} on {settings.merge.target}", hint=f"`cowork reject {task}` drops it")
    plan = plan_mod.parse(proc.stdout, rel, set(roles.names()))
    plan.meta.task = task
    return plan


def one_lane_plan(task: str, title: str, role: str, goal: str) -> Plan:
    return Plan(meta=PlanMeta(title=title, task=task), lanes=[LaneSpec(id="work", role=role, goal=goal.strip())])


async def ask_planner(ws, store, settings, roles, draft: Draft) -> Plan:
    """Have the planning role submit a plan; invalid plans go back to it with the errors (at most 3 tries).

    Raises:
        BadInput: no planning role, or the plan is still invalid after the last try (the message names the
            planner, its model and the last plan's problems).
    """
    from cowork.engines import models, prompts, retry
    from cowork.team import budgets
    from cowork.tools.specs import plan_spec

    planner = roles.roles.get(settings.planner)
    if planner is None:
        raise BadInput(f"the planning role '{settings.planner}' is not in roles/",
                       hint="add roles/planner.yaml, set `planner` in cowork.toml, or pass --to ROLE")
    workers = {n: r for n, r in roles.roles.items() if n != planner.name}
    system = prompts.planner_system(planner, team=settings.name, roles=workers, task=draft.task,
                                    max_lanes=settings.policy.max_lanes_per_task)
    journal = Journal(store, draft.task, PLAN_LANE)
    messages = [{"role": "system", "content": system}, {"role": "user", "content": draft.brief}]
    journal.record("message", "start", output={"messages": messages})
    tools = [plan_spec(list(workers))]  # built per team: the static spec cannot know the role names
    choice = models.resolve(settings, planner)
    problems: list[Problem] = []

    on_retry = retry.reporter(store, f"{draft.task} planning", actor=planner.name, task=draft.task,
                              role=planner.name)

    for _ in range(MAX_PLAN_TRIES):
        step = journal.start("model", choice.model, {"n": len(messages)})
        try:
            reply = await models.complete(choice, messages, tools, settings=settings, on_retry=on_retry)
        except models.ModelError as exc:  # the step ends with the planning: say how
            journal.finish(step, {"error": exc.message}, ok=False)
            raise
        with store.tx():  # the journal, the timeline and the budget agree on what planning cost
            journal.finish(step, {"message": reply.message}, tokens_in=reply.tokens_in, tokens_out=reply.tokens_out,
                           usd=reply.usd)
            store.event("model.call", f"{draft.task} planning ({reply.model})", actor=planner.name, task=draft.task,
                        role=planner.name, tokens_in=reply.tokens_in, tokens_out=reply.tokens_out, usd=reply.usd)
            budgets.record_usage(store, task=draft.task, lane=PLAN_LANE, role=planner.name, model=reply.model,
                                 tokens_in=reply.tokens_in, tokens_out=reply.tokens_out, usd=reply.usd)
        messages.append(reply.message)
        calls = reply.message.get("tool_calls") or []
        if not calls:
            problems = [Problem("the planner replied without calling submit_plan", file="plan")]
            messages.append({"role": "user", "content": "Call submit_plan(title, lanes) with the plan."})
            continue
        feedback = None
        for call in calls:
            plan, problems = _parse_submission(draft, call, set(workers), settings.policy.max_lanes_per_task)
            if plan is not None and feedback is None:
                store.event("task.planned", f"{draft.task}: {len(plan.lanes)} lane(s) planned by {planner.name}",
                            actor=planner.name, task=draft.task, data={"lanes": [x.id for x in plan.lanes]})
                return plan
            feedback = "The plan was rejected:\n" + "\n".join(p.render() for p in problems) + "\nFix it and call " \
                       "submit_plan again."
            messages.append({"role": "tool", "tool_call_id": call["id"], "content": feedback})
    problems = problems or [Problem("the planner did not produce a valid plan", file="plan")]
    # a failure (exit 1), not bad input (2): the request was fine, the model's plans were not
    raise CoworkError(f"{planner.name} ({choice.label or choice.model}) gave no valid plan in {MAX_PLAN_TRIES} tries; "
                      "the last one:\n" + "\n".join("  " + p.render() for p in problems),
                      hint="delegate again, give the request to one role with `--to ROLE`, or write the plan "
                           "yourself and `cowork run PLAN.md` (the README shows a plan file)")


def _parse_submission(draft: Draft, call: dict, roles: set[str], max_lanes: int) -> tuple[Plan | None, list[Problem]]:
    if call["function"]["name"] != "submit_plan":
        return None, [Problem(f"unknown tool '{call['function']['name']}'; only submit_plan is available")]
    try:
        args = json.loads(call["function"].get("arguments") or "{}")
        lanes = [LaneSpec(id=str(x.get("id", "")), role=str(x.get("role", "")), goal=str(x.get("goal", "")),
                          depends_on=[str(d) for d in x.get("depends_on") or []]) for x in args.get("lanes") or []]
        title = str(args.get("title") or draft.title)
    except (ValueError, AttributeError, TypeError) as exc:
        return None, [Problem(f"submit_plan arguments are malformed: {exc}", file="plan")]
    problems = plan_mod.validate_lanes(lanes, None, roles, file="plan")
    if len(lanes) > max_lanes:
        problems.append(Problem(f"{len(lanes)} lanes is more than the cap of {max_lanes}", file="plan"))
    if problems:
        return None, problems
    return Plan(meta=PlanMeta(title=title, task=draft.task), lanes=lanes, notes=str(args.get("notes") or "")), []


def validate_plan(plan: Plan, roles) -> None:
    """Raise ValidationFailed if the plan's lanes are not valid for this team."""
    problems = plan_mod.validate_lanes(plan.lanes, None, set(roles.names()), file="plan.md")
    if problems:
        raise ValidationFailed(problems)


def save_plan(ws, store, settings, task: str, plan: Plan, *, holder: str = "cli") -> str:
    """Commit plan.md on the target; the task waits for approval. Returns the plan's markdown."""
    plan.meta.task = task
    text = plan_mod.render(plan)
    _require_state(store, task, ("planning", "awaiting-approval"), "its plan cannot change")
    commit_to_target(ws, store, settings, {f"handoffs/{task}/plan.md": text}, f"{task}: plan", holder=holder,
                     trailers={"Cowork-Task": task})
    with store.tx():  # rejected meanwhile (`cowork reject` from another terminal): it stays rejected
        _require_state(store, task, ("planning", "awaiting-approval"), "its plan cannot change")
        lanes_db.set_task_state(store, task, "awaiting-approval", actor="planner")
    return text


def _require_state(store, task: str, states: tuple[str, ...], why: str) -> None:
    row = lanes_db.get_task(store, task)
    if row is None:
        raise BadInput(f"no task {task}", hint="see `cowork status`")
    if row["state"] not in states:
        raise BadInput(f"task {task} is {row['state']} now: {why}", hint="`cowork status` shows where it is")


def approve(store, task: str, plan: Plan, *, by: str = "human", note: str | None = None) -> None:
    """Add the plan's lanes and set the task running. `note`: the approver's words, kept with the approval."""
    with store.tx():  # a runner never sees the lanes of a plan that is not approved yet, or half of them
        # decided once: a plan rejected (or approved) elsewhere since the prompt opened is not approved again
        _require_state(store, task, ("awaiting-approval",), "its plan was decided elsewhere")
        add_plan_lanes(store, task, plan)
        store.event("task.approved", f"{task}: plan approved by {by}" + (f": {note}" if note else ""), actor=by,
                    task=task, data={"note": note} if note else None)
        lanes_db.set_task_state(store, task, "running", actor=by)


def reject(store, task: str, *, by: str = "human", reason: str | None = None) -> None:
    """Drop a task whose plan was not approved (it never ran: there is nothing to stop).

    Raises:
        BadInput: no such task, or it is past approval.
    """
    _require_state(store, task, ("planning", "awaiting-approval"), "only a plan waiting for approval is rejected")
    lanes_db.set_task_state(store, task, "rejected", actor=by, error=reason or "plan rejected")
