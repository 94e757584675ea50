"""`cowork mcp serve`: the team itself as an MCP server on stdio, so any MCP-capable agent can join it.

Who calls is decided once, at start, from the environment. With COWORK_TASK, COWORK_LANE and COWORK_ROLE set (an
external agent inside a lane started by the command engine) the server acts as that lane: its team actions go
through the lane's own `Gateway`, so authority, approval tiers, budgets, redaction and `tool.denied` events apply
exactly as for llm lanes; a lane that has ended (or is blocked, waiting for a human) is refused at start, and its
team actions are refused once it ends. Without them it is a human observer (`human:<name>`) with the read tools
and `say`. No identity gets approve, reject, unpause or merge: those stay with humans at the CLI and the TUI.
"""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import Field

from cowork.config import TeamSettings, load_settings
from cowork.errors import CoworkError
from cowork.redact import redact, redact_obj
from cowork.roles import RoleSet, team_roles
from cowork.store import Store, db
from cowork.tools.gateway import Gateway, LaneCtx
from cowork.tools.team_tools import ENDED  # a lane in these states does not act: it is over, or waits for a human
from cowork.workspace import Workspace

IDENTITY_VARS = ("COWORK_TASK", "COWORK_LANE", "COWORK_ROLE")
READ_TOOLS = ("status", "lanes", "inbox", "handoffs", "read_handoff", "approvals", "lock_status")
LANE_TOOLS = READ_TOOLS + ("tell", "ask", "delegate", "answer")
HUMAN_TOOLS = READ_TOOLS + ("say",)
MAX_HANDOFF_CHARS = 200_000


@dataclass
class Team:
    """The team being served and who is calling: a lane (`ctx` and `gateway` set) or a human observer."""

    ws: Workspace
    store: Store
    settings: TeamSettings
    roles: RoleSet
    who: str                        # the role name, or human:<name>
    ctx: LaneCtx | None = None
    gateway: Gateway | None = None

    @property
    def is_lane(self) -> bool:
        return self.gateway is not None


def open_team(root: Path | str | None = None, env: Mapping[str, str] | None = None) -> Team:
    """Load the team at `root` (default: $COWORK_ROOT or the current directory) and the caller's identity.

    Raises:
        CoworkError: the identity variables are partly set, or name a lane or role that does not exist.
        ValidationFailed: cowork.toml is invalid, or the lane's own role file is.
    """
    env = os.environ if env is None else env
    ws = Workspace.find(root if root is not None else env.get("COWORK_ROOT") or None)
    settings = load_settings(ws.config_path, display=ws.rel(ws.config_path))
    # a broken role file leaves that role out: the read tools still serve, and `say` refuses to start a task
    roles = team_roles(ws, settings, strict=False)
    if roles.broken:
        print(roles.notice(), file=sys.stderr)  # stdout is the MCP stream
    store = Store.for_workspace(ws)
    given = {k: env.get(k, "").strip() for k in IDENTITY_VARS}
    if not any(given.values()):
        from cowork.team.messages import human_id

        return Team(ws, store, settings, roles, who=human_id(ws.root))
    missing = [k for k, v in given.items() if not v]
    if missing:
        raise CoworkError(f"cowork mcp serve: {', '.join(missing)} not set while "
                          f"{', '.join(k for k in IDENTITY_VARS if k not in missing)} is",
                          hint="set all of COWORK_TASK, COWORK_LANE and COWORK_ROLE (a lane) or none (a human)")
    ctx = lane_ctx(ws, store, settings, roles, given["COWORK_TASK"], given["COWORK_LANE"], given["COWORK_ROLE"],
                   worktree=env.get("COWORK_WORKTREE") or None)
    return Team(ws, store, settings, roles, who=ctx.role.name, ctx=ctx, gateway=Gateway(ctx, cancel_withdraws=True))


def lane_over(task: str, lane: str, state: str) -> str:
    """Why a lane in `state` (one of ENDED, or "gone") cannot act: said at start (`lane_ctx`) and per call (`ended`)."""
    return f"lane {task}/{lane} is {state}: it can no longer act for the team"


def lane_ctx(ws: Workspace, store: Store, settings: TeamSettings, roles: RoleSet, task: str, lane: str, role: str,
             *, worktree: str | None = None) -> LaneCtx:
    """The LaneCtx of an existing lane, from its `lanes` row.

    Raises:
        CoworkError: no such lane in this team, or it belongs to another role, or the role is not defined.
        ValidationFailed: the role's file is broken.
    """
    from cowork.runner.tasks import RETRYABLE
    from cowork.store import lanes as lanes_db

    row = lanes_db.get_lane(store, task, lane)
    if row is None:
        raise CoworkError(f"COWORK_LANE names lane '{task}/{lane}', which does not exist in the team at {ws.root}",
                          hint="run `cowork lanes` to see the lanes; unset COWORK_TASK/COWORK_LANE/COWORK_ROLE "
                               "to serve as a human")
    if row["role"] != role:
        raise CoworkError(f"COWORK_ROLE is '{role}' but lane '{task}/{lane}' belongs to role '{row['role']}'")
    roles.require([role])
    if role not in roles.roles:
        raise CoworkError(f"lane '{task}/{lane}' has role '{role}', which is not defined in roles/",
                          hint="see `cowork roles list`")
    if row["state"] in ENDED:
        again = f"`cowork retry {task}/{lane}` runs it again; " if row["state"] in RETRYABLE else ""
        raise CoworkError(lane_over(task, lane, row["state"]),
                          hint=again + "unset COWORK_TASK/COWORK_LANE/COWORK_ROLE to serve as a human")
    if row.get("worktree"):
        path = Path(row["worktree"])
    elif worktree:
        path = Path(worktree)
    else:
        from cowork.gitops.worktrees import lane_path

        path = lane_path(ws, task, lane)
    return LaneCtx(ws=ws, store=store, settings=settings, roles=roles, role=roles.roles[role], task_id=task,
                   lane_id=lane, worktree=path, depth=row.get("depth") or 0, kind=row.get("kind") or "work")


# -- what the tools do (plain functions: the MCP layer below only adapts them) -------------------------------

def _plain(obj: Any) -> Any:
    """JSON-safe and redacted."""
    return redact_obj(json.loads(json.dumps(obj, default=str, ensure_ascii=False)))


def _task_arg(task: str | None) -> str | None:
    from cowork.packets import TASK_ID

    if task is None or task == "":
        return None
    if not TASK_ID.match(task):
        raise ToolError(f"'{task}' is not a task id (like t1-fix-login)")
    return task


def status(team: Team) -> dict:
    from cowork import views

    you = {"identity": "lane" if team.is_lane else "human", "name": team.who}
    if team.ctx is not None:
        you |= {"task": team.ctx.task_id, "lane": team.ctx.lane_id, "role": team.ctx.role.name}
    return _plain({"you": you, **views.team_status(team.ws, team.store, team.settings)})


def lanes(team: Team, task: str | None = None) -> dict:
    from cowork import views
    from cowork.store import lanes as lanes_db

    task = _task_arg(task)
    if task and lanes_db.get_task(team.store, task) is None:  # as `cowork lanes --task`: not an empty list
        raise ToolError(f"no task '{task}'; lanes without a task lists every lane with its task id")
    return _plain({"lanes": views.lane_rows(team.store, task)})


def human_inbox(team: Team, include_read: bool = False, limit: int = 50) -> dict:
    """Messages for humans, oldest first; the new ones (but questions) are marked read, as `cowork inbox` does."""
    from cowork.team import messages as msgs

    rows = msgs.inbox(team.store, unread_only=not include_read, limit=max(1, min(limit, 200)))
    msgs.mark(team.store, [r["id"] for r in rows if r["kind"] != "ask"], "read")
    return _plain({"messages": rows})


def handoffs(team: Team, task: str | None = None) -> dict:
    from cowork import packets

    return _plain({"handoffs": [packets.entry(team.ws, p) for p in packets.packet_paths(team.ws, _task_arg(task))]})


def handoff_path(ws: Workspace, ref: str) -> Path:
    """A file under handoffs/ named by a path ("handoffs/t1/api.md") or TASK/LANE; nothing outside handoffs/."""
    ref = (ref or "").strip().replace("\\", "/")
    if not ref or "\x00" in ref:
        raise ToolError("give a path under handoffs/ or TASK/LANE")
    base = ws.handoffs_dir.resolve()
    candidates = [ws.root / ref]
    if not ref.startswith("handoffs/"):
        candidates.append(base / (ref if ref.endswith(".md") else ref + ".md"))
    for cand in candidates:
        path = cand.resolve()  # symlinks and '..' resolved before the check
        if path.is_relative_to(base) and path.is_file():
            return path
    if not any(c.resolve().is_relative_to(base) for c in candidates):
        raise ToolError(f"'{ref}' is outside handoffs/; only handoff packets, briefs, plans and summaries can be read")
    raise ToolError(f"no handoff '{ref}'; the handoffs tool lists them")


def read_handoff(team: Team, path: str) -> str:
    file = handoff_path(team.ws, path)
    text = file.read_text(encoding="utf-8", errors="replace")
    if len(text) > MAX_HANDOFF_CHARS:
        text = text[:MAX_HANDOFF_CHARS] + f"\n… (cut at {MAX_HANDOFF_CHARS} characters)"
    return redact(text)


def approvals(team: Team) -> dict:
    """What `cowork approvals --json` shows: pending approvals and plans awaiting approval, plus who decides."""
    from cowork.team import approvals as ap

    return _plain({**ap.waiting(team.store, team.settings, team.roles),
                   "note": "only a human can decide: `cowork approve ID` / `cowork reject ID --reason ...` for an "
                           "approval, `cowork approve TASK` / `cowork reject TASK` for a plan"})


def lock_status(team: Team) -> dict:
    from cowork.gitops import merge

    return _plain(merge.lock_status(team.store))


def say(team: Team, target: str, text: str, reply_to: int | None = None, start_if_idle: bool = True) -> dict:
    """A human's message, exactly as `cowork say`: an idle role gets a one-lane task and a runner is started."""
    from cowork.team import channel

    said = channel.say(team.ws, team.store, team.settings, team.roles, target, text, by=team.who,
                       reply_to=reply_to, start=start_if_idle)
    pid = None
    if said.task:
        from cowork.runner import launch

        pid = launch.start_detached(team.ws, [said.task])
    return _plain({"message": said.message_id, "to": said.to, "delivered_to": said.delivered_to,
                   "task": said.task, "runner_pid": pid, "reply_to": said.reply_to})


def ended(team: Team) -> str | None:
    """Why the served lane can no longer act (it ended, or stopped for a human since the server started), or None.
    Its agent may outlive it: a cancelled task, an agent CLI started by hand."""
    from cowork.store import lanes as lanes_db

    assert team.ctx is not None
    row = lanes_db.get_lane(team.store, team.ctx.task_id, team.ctx.lane_id)
    if row is not None and row["state"] not in ENDED:
        return None
    return lane_over(team.ctx.task_id, team.ctx.lane_id, row["state"] if row else "gone")


async def lane_call(team: Team, name: str, args: dict) -> str:
    """One team action through the lane's gateway; a refusal or failure is a ToolError with the gateway's text.
    A lane that has ended is refused before the gateway, with a `tool.denied` event marked `lane_ended`, which the
    circuit breaker does not count, then or when the lane is retried: its stray agent is not the lane's work."""
    assert team.gateway is not None and team.ctx is not None
    why = ended(team)
    if why:
        c = team.ctx
        team.store.event("tool.denied", f"{c.role.name} denied {name}: {why}", actor=c.role.name, task=c.task_id,
                         lane=c.lane_id, role=c.role.name,
                         data={"tool": name, "args": args, "reason": why, "lane_ended": True})
        raise ToolError(f"denied: {why}")
    result = await team.gateway.call(name, args)
    if not result.ok:
        raise ToolError(result.content)
    return result.content


# -- the MCP server ----------------------------------------------------------------------------------------------

@contextmanager
def _errors(tool: str) -> Iterator[None]:
    """A user's mistake or a failure becomes a tool error with clear text, never a crashed server."""
    try:
        yield
    except ToolError:
        raise
    except CoworkError as exc:
        raise ToolError(exc.render()) from None
    except Exception as exc:  # noqa: BLE001 - the server must outlive any one call
        raise ToolError(f"{tool} failed: {db.failure(exc)}") from None


class _Server(MCPServer):
    """An MCPServer that keeps `hidden` tools off its list: a lane's team tools its role may not use, as an llm
    lane is never offered them. Called anyway, they still reach the gateway, which denies them with a
    `tool.denied` event, as it does for llm lanes."""

    hidden: frozenset[str] = frozenset()

    async def list_tools(self) -> list:
        return [t for t in await super().list_tools() if t.name not in self.hidden]


# The tools' parameters, described for the agent. Module level: the SDK reads the tools' annotations as strings,
# evaluated in this module's globals (`from __future__ import annotations`).
MAX_ID = 2**63 - 1  # SQLite's largest integer: a larger id is refused by the schema, not by an OverflowError
TaskArg = Annotated[str | None, Field(description="A task id (like t1-fix-login): only that task's. Omit: all.")]
PathArg = Annotated[str, Field(description="A file under handoffs/, by its path (handoffs/t1-fix-login/api.md; "
                                           "brief.md, plan.md and summary.md too) or as TASK/LANE (t1-fix-login/api), "
                                           "as the handoffs tool lists them.")]
RoleArg = Annotated[str, Field(description="A role of the team, by name; the tool's description lists them.")]
TellRoleArg = Annotated[str, Field(description="A role of the team, by name (the tool's description lists them), "
                                               "or 'team' for every lane of your task.")]
NoteArg = Annotated[str, Field(description="The note, as they will read it.")]
QuestionArg = Annotated[str, Field(description="The question, complete in itself: whoever answers may know nothing "
                                               "of your work.")]
GoalArg = Annotated[str, Field(description="What the new lane is to do and hand back, in full: it is all the lane "
                                           "is told.")]
MessageIdArg = Annotated[int, Field(description="The question's message id, as inbox shows it (QUESTION #ID).",
                                    ge=1, le=MAX_ID)]
AnswerArg = Annotated[str, Field(description="Your answer.")]
IncludeReadArg = Annotated[bool, Field(description="Also the messages already read.")]
LimitArg = Annotated[int, Field(description="At most this many, the newest (1 to 200).")]
TargetArg = Annotated[str, Field(description="'@ROLE' (the tool's description lists the roles) or '@team'.")]
SayTextArg = Annotated[str, Field(description="The message, as they will read it.")]
ReplyToArg = Annotated[int | None, Field(description="Answer this question (its message id, from inbox) instead of "
                                                     "posting a new message.", ge=1, le=MAX_ID)]
StartArg = Annotated[bool, Field(description="When no lane of the role is running: true starts a one-lane task for "
                                             "it with this message as its goal (a runner starts, and models are "
                                             "called); false only posts.")]
READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)
POSTS = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)


def build_server(team: Team) -> MCPServer:
    """An MCP server offering the tools for `team.who`: LANE_TOOLS for a lane (less the team tools its role may not
    use), HUMAN_TOOLS for a human."""
    where = f"task {team.ctx.task_id}, lane {team.ctx.lane_id}" if team.ctx else "no lane"
    roles = ", ".join(team.roles.names())
    server = _Server(
        name="cowork", version=_version(),
        instructions=(f"The cowork team '{team.settings.name}' at {team.ws.root}. You are {team.who} ({where}). "
                      f"Its roles: {roles}. "
                      "Read the team with status, lanes, inbox, handoffs, approvals and lock_status. "
                      + ("Talk to other roles with tell, ask (waits for an answer), delegate and answer; your role's "
                         "authority and approval tiers apply. A call your role's approvals block waits for a "
                         "human's yes or no; if you cancel it, the request is withdrawn and the same call again "
                         "asks anew."
                         if team.is_lane else "Post to a role or the team with say.")
                      + " Approvals, pause and merges are for humans at the cowork CLI or TUI."),
        log_level="WARNING")
    if team.ctx is not None:
        server.hidden = frozenset(t for t in LANE_TOOLS if t not in READ_TOOLS and not team.ctx.role.allows(t))

    def add(fn, name: str, description: str, *, structured: bool = True,
            annotations: ToolAnnotations = READ_ONLY) -> None:
        fn.__name__ = name  # the name the SDK gives its schemas and validation errors ("askArguments")
        server.add_tool(fn, name=name, description=description, structured_output=structured,
                        annotations=annotations)

    def status_tool() -> dict[str, Any]:
        with _errors("status"):
            return status(team)

    def lanes_tool(task: TaskArg = None) -> dict[str, Any]:
        with _errors("lanes"):
            return lanes(team, task)

    def handoffs_tool(task: TaskArg = None) -> dict[str, Any]:
        with _errors("handoffs"):
            return handoffs(team, task)

    def read_handoff_tool(path: PathArg) -> str:
        with _errors("read_handoff"):
            return read_handoff(team, path)

    def approvals_tool() -> dict[str, Any]:
        with _errors("approvals"):
            return approvals(team)

    def lock_status_tool() -> dict[str, Any]:
        with _errors("lock_status"):
            return lock_status(team)

    add(status_tool, "status", "The team now: merge target and head, pause, merge lock and queue, tasks and lanes "
        "by state, pending approvals, today's spend, and who you are.")
    add(lanes_tool, "lanes", "Every lane (or those of one task): role, state, goal, branch, cost, packet, error.")
    add(handoffs_tool, "handoffs", "The handoff packets committed under handoffs/ (or one task's): path, from, to, "
        "status, title, checklist progress.")
    add(read_handoff_tool, "read_handoff", "The text of a file under handoffs/: a packet, brief, plan or summary, "
        "named by its path (handoffs/TASK/LANE.md) or TASK/LANE.", structured=False)
    add(approvals_tool, "approvals", "Actions waiting for a human yes or no, and tasks whose plan waits for "
        "approval (read-only: no agent can approve).")
    add(lock_status_tool, "lock_status", "The merge lock's holder and lease, and the merge queue.")

    if team.is_lane:
        async def inbox_tool() -> str:
            with _errors("inbox"):
                return await lane_call(team, "inbox", {})

        async def tell_tool(role: TellRoleArg, note: NoteArg) -> str:
            with _errors("tell"):
                return await lane_call(team, "tell", {"role": role, "note": note})

        async def ask_tool(role: RoleArg, question: QuestionArg) -> str:
            with _errors("ask"):
                return await lane_call(team, "ask", {"role": role, "question": question})

        async def delegate_tool(role: RoleArg, goal: GoalArg) -> str:
            with _errors("delegate"):
                return await lane_call(team, "delegate", {"role": role, "goal": goal})

        async def answer_tool(message_id: MessageIdArg, text: AnswerArg) -> str:
            with _errors("answer"):
                return await lane_call(team, "answer", {"message_id": message_id, "text": text})

        wait = team.settings.policy.ask_timeout_s
        add(inbox_tool, "inbox", "New messages for your lane: questions to answer, notes, handoffs of lanes you "
            "delegated. Each is shown once; questions not answered yet are shown again.", structured=False,
            annotations=POSTS)
        add(tell_tool, "tell", f"Post a note to a role ({roles}) or 'team', without waiting.", structured=False,
            annotations=POSTS)
        add(ask_tool, "ask", f"Ask a role ({roles}) a question and wait up to {wait:.0f}s (policy.ask_timeout_s) "
            "for its answer: a live lane of that role answers, else a short consult lane. A call you cancel, or that "
            "times out, gets no answer: carry on without it.", structured=False, annotations=POSTS)
        add(delegate_tool, "delegate", f"Add a lane to your task for a role ({roles}) with this goal; its handoff "
            "arrives in your inbox.", structured=False, annotations=POSTS)
        add(answer_tool, "answer", "Answer a question (its message id, from inbox) asked of you.", structured=False,
            annotations=POSTS)
    else:
        def inbox_tool(include_read: IncludeReadArg = False, limit: LimitArg = 50) -> dict[str, Any]:
            with _errors("inbox"):
                return human_inbox(team, include_read, limit)

        def say_tool(target: TargetArg, text: SayTextArg, reply_to: ReplyToArg = None,
                     start_if_idle: StartArg = True) -> dict[str, Any]:
            with _errors("say"):
                return say(team, target, text, reply_to, start_if_idle)

        add(inbox_tool, "inbox", "Messages for humans (questions, notifications, escalations), oldest first; new "
            "ones are marked read, except questions.", annotations=POSTS)
        add(say_tool, "say", f"Post as a human to '@ROLE' ({roles}) or '@team', like `cowork say`: a busy role's "
            "live lane reads it between steps; an idle role gets a one-lane task (unless start_if_idle is false). "
            "With reply_to, answer that question.", annotations=POSTS)
    return server


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cowork")
    except PackageNotFoundError:
        return "0"


def serve(root: Path | str | None = None, env: Mapping[str, str] | None = None) -> None:
    """Serve the team at `root` on stdio until the client closes the connection."""
    build_server(open_team(root, env)).run("stdio")
