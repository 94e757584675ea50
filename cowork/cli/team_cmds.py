"""Commands for the team channel, approvals and budgets: say, inbox, approvals, approve, reject, budget."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from cowork.cli.app import app
from cowork.cli.common import JsonOpt, RootOpt, emit, say_broken_roles, store, team, warn_broken, workspace
from cowork.display import printable
from cowork.errors import BadInput

budget_app = typer.Typer(help="Spend against the caps; raise a cap.", no_args_is_help=False,
                         invoke_without_command=True, rich_markup_mode=None)
app.add_typer(budget_app, name="budget")


def _role_file(ws, role: str) -> bool:
    """Whether roles/<role>.yaml (or .yml) exists: a role's name is its file's name."""
    return any((ws.roles_dir / f"{role}{ext}").is_file() for ext in (".yaml", ".yml"))


def _ago(ts: float | None) -> str:
    if not ts:
        return "-"
    s = max(0, time.time() - ts)
    return f"{s:.0f}s" if s < 120 else (f"{s / 60:.0f}m" if s < 7200 else f"{s / 3600:.1f}h")


@app.command()
def say(target: str = typer.Argument(..., help="@ROLE or @team"),
        text: str = typer.Argument(..., help="the message"),
        reply: Optional[int] = typer.Option(None, "--reply", help="answer this question (message id from `cowork inbox`)"),
        no_run: bool = typer.Option(False, "--no-run", help="for an idle role: only post, do not start a task"),
        root: Optional[Path] = RootOpt, as_json: bool = JsonOpt) -> None:
    """Post a message to a role or the team. A busy role's live lane reads it between steps; an idle role gets a
    one-lane task whose goal is the message."""
    from cowork.team import channel
    from cowork.team.messages import human_id

    ws, st, settings, roles = team(root, warn=False)
    said = channel.say(ws, st, settings, roles, target, text, by=human_id(ws.root), reply_to=reply,
                       start=not no_run)  # it refuses to start a task while a role file is broken
    warn_broken(roles)  # only posted, so it went on without them
    pid = None
    if said.task:
        from cowork.runner import launch

        pid = launch.start_detached(ws, [said.task])
    data = {"message": said.message_id, "to": said.to, "delivered_to": said.delivered_to, "task": said.task,
            "runner_pid": pid}

    def render(d: dict) -> None:
        if reply is not None:
            print(f"answered #{reply} (message #{d['message']})")
        elif d["task"]:
            print(f"{d['to']} was idle: started task {d['task']} (runner pid {d['runner_pid']}); "
                  f"follow with `cowork lanes --task {d['task']}`")
        elif d["delivered_to"]:
            print(f"message #{d['message']} delivered to {', '.join(d['delivered_to'])}")
        else:
            print(f"message #{d['message']} posted to {d['to']} (no lane is running; it waits in their inbox)")

    emit(data, as_json, render)


@app.command()
def inbox(role: Optional[str] = typer.Option(None, "--role", help="a role's inbox instead of the humans'"),
          all_: bool = typer.Option(False, "--all", help="include messages already read"),
          limit: int = typer.Option(50, "--limit", help="at most this many"),
          root: Optional[Path] = RootOpt, as_json: bool = JsonOpt) -> None:
    """Messages for humans (questions, notifications, escalations), or for one role with --role."""
    from cowork.team import messages

    ws = workspace(root)
    st = store(ws)
    if role and not _role_file(ws, role):
        raise BadInput(f"no role '{role}' in {ws.rel(ws.roles_dir)}", hint="`cowork roles list` names the roles")
    rows = messages.inbox(st, role=role, unread_only=not all_, limit=limit)
    if not role:
        messages.mark(st, [r["id"] for r in rows if r["kind"] != "ask"], "read")

    def render(items: list[dict]) -> None:
        if not items:
            print("no new messages" if not all_ else "no messages")
            return
        for m in items:
            src = m["from_role"] + (f" ({m['from_lane']})" if m.get("from_lane") else "")
            head = f"#{m['id']} {m['kind']:<8} {_ago(m['created_at']):>5} ago  {src} -> {m['to_lane'] or m['to_role']}"
            print(head)
            for line in m["body"].splitlines() or [""]:
                print(f"    {printable(line)}")
            if m["kind"] == "ask" and m["state"] != "answered":
                print(f"    (reply: cowork say @{m['from_role']} --reply {m['id']} \"...\")")

    emit(rows, as_json, render)


@app.command()
def approvals(root: Optional[Path] = RootOpt, as_json: bool = JsonOpt) -> None:
    """Actions waiting for a human yes or no: the exact command, diff or message, who asked and why; and plans
    waiting for approval. `--json`: {"pending": [approvals], "awaiting_approval": [plans]}."""
    from cowork.team import approvals as ap

    ws, st, settings, roles = team(root)
    data = ap.waiting(st, settings, roles)

    def render(d: dict) -> None:
        items, plans = d["pending"], d["awaiting_approval"]
        if not items and not plans:
            print("no approvals waiting")
            return
        for t in plans:
            print(f"plan of task {t['task_id']}: {t['title']}  (waiting {_ago(t['updated_at'])})")
            print(f"  -> cowork approve {t['task_id']}   |   cowork reject {t['task_id']} [--reason \"...\"]")
        for a in items:
            left = (a["expires_at"] or 0) - time.time()
            print(f"#{a['id']}  {a['role']} wants {a['tool']}  (task {a['task_id']}, lane {a['lane_id']}, "
                  f"asked {_ago(a['created_at'])} ago, expires in {max(0, left) / 60:.0f}m)")
            if a.get("why"):
                print("  why: " + printable(a["why"].strip()).replace("\n", "\n       "))
            action = a["action"] if isinstance(a["action"], dict) else {}
            if "command" in action:
                print(f"  $ {printable(action['command'])}")
            elif "diff" in action:
                print("  " + printable(action["diff"].rstrip()).replace("\n", "\n  "))
            elif "text" in action:
                print(f"  to {printable(action.get('to'))}: " + printable(action["text"]).replace("\n", "\n  "))
            else:
                print(f"  {printable(action)}")
            print(f"  -> cowork approve {a['id']}   |   cowork reject {a['id']} --reason \"...\"")

    emit(data, as_json, render)


@app.command()
def approve(target: str = typer.Argument(..., metavar="ID|TASK",
                                         help="an approval's id (see `cowork approvals`), or a task whose plan waits"),
            note: Optional[str] = typer.Option(None, "--note", help="a note for the agent"),
            detach: bool = typer.Option(False, "--detach", "-d", help="a task: run it in a background process"),
            root: Optional[Path] = RootOpt) -> None:
    """Let a blocked action go ahead, or run a task whose plan waits for approval (`cowork status` lists them)."""
    from cowork.team import approvals as ap
    from cowork.team.messages import human_id

    if not target.isdigit():
        from cowork.cli.task_cmds import launch_approved, require_plan_models
        from cowork.runner import planning

        ws, st, settings, roles = team(root, strict=True)
        plan = planning.saved_plan(ws, st, settings, roles, target)
        require_plan_models(settings, roles, target, plan)
        print(f"task {target}: plan approved ({len(plan.lanes)} lane(s))")
        launch_approved(ws, st, target, plan, by=human_id(ws.root), detach=detach, note=note)
        return
    ws = workspace(root)
    say_broken_roles(ws)
    row = ap.approve(store(ws), int(target), by=human_id(ws.root), note=note)
    print(f"approved #{target} ({row['role']} {row['tool']})")


@app.command()
def reject(target: str = typer.Argument(..., metavar="ID|TASK",
                                        help="an approval's id (see `cowork approvals`), or a task whose plan waits"),
           reason: Optional[str] = typer.Option(None, "--reason", help="why not (the agent reads it; required "
                                                                       "for an approval)"),
           root: Optional[Path] = RootOpt) -> None:
    """Refuse a blocked action (the reason goes back to the agent), or drop a task whose plan waits for approval."""
    from cowork.team import approvals as ap
    from cowork.team.messages import human_id

    ws = workspace(root)
    say_broken_roles(ws)
    if not target.isdigit():
        from cowork.runner import planning

        planning.reject(store(ws), target, by=human_id(ws.root), reason=reason)
        print(f"task {target} rejected")
        return
    st = store(ws)
    found = ap.get(st, int(target))  # a typo'd id is named as such, not answered with "needs --reason"
    if not reason and found["state"] == "pending":
        raise BadInput("rejecting an action needs --reason: the agent reads it", hint=f"cowork reject {target} "
                       '--reason "why not"')
    row = ap.reject(st, int(target), by=human_id(ws.root), reason=reason or "")
    print(f"rejected #{target} ({row['role']} {row['tool']})")


@budget_app.callback()
def budget(ctx: typer.Context, root: Optional[Path] = RootOpt, as_json: bool = JsonOpt) -> None:
    """Spend today, per role and per task, against the caps in cowork.toml and the role files."""
    if ctx.invoked_subcommand is not None:
        return
    from cowork.team import budgets

    ws, st, settings, roles = team(root)
    data = budgets.overview(st, settings, roles)

    def render(d: dict) -> None:
        today = d["today"]
        print(f"today ({today['day']}): ${today['usd']:.2f}, {today['tokens']:,} tokens")
        for cap in d["day_caps"]:
            print(f"  cap {cap['label']}" + ("  EXCEEDED" if cap["used"] >= cap["limit"] else ""))
        for name, cs in d["role_caps"].items():
            for cap in cs:
                print(f"  {name}: {cap['label']}" + ("  EXCEEDED" if cap["used"] >= cap["limit"] else ""))
        for role, spent in sorted(today["by_role"].items()):
            print(f"  {role}: ${spent['usd']:.2f}, {spent['tokens']:,} tokens")
        if d["tasks"]:
            print("tasks:")
        for t in d["tasks"]:
            caps = "; ".join(c["label"] + (" EXCEEDED" if c["used"] >= c["limit"] else "") for c in t["caps"])
            print(f"  {t['task']}: {caps or 'no cap'}")

    emit(data, as_json, render)


@budget_app.command("raise")
def budget_raise(task: Optional[str] = typer.Option(None, "--task", help="raise this task's cap"),
                 role: Optional[str] = typer.Option(None, "--role", help="raise this role's per-day cap"),
                 day: bool = typer.Option(False, "--day", help="raise the team's per-day cap"),
                 usd: Optional[float] = typer.Option(None, "--usd", help="add this many USD to the cap"),
                 tokens: Optional[int] = typer.Option(None, "--tokens", help="add this many tokens to the cap"),
                 root: Optional[Path] = RootOpt) -> None:
    """Add to a cap; lanes that the cap had blocked are queued again."""
    from cowork.team import budgets
    from cowork.team.messages import human_id

    ws = workspace(root)
    st = store(ws)
    if role and not _role_file(ws, role):  # a typo would raise a cap no lane ever meets
        raise BadInput(f"no role '{role}' in {ws.rel(ws.roles_dir)}", hint="`cowork roles list` names the roles")
    before = set(r["task_id"] + "/" + r["id"] for r in st.all("SELECT task_id, id FROM lanes WHERE state='blocked'"))
    new = budgets.raise_cap(st, by=human_id(ws.root), task=task, role=role, today=day, usd=usd, tokens=tokens)
    after = set(r["task_id"] + "/" + r["id"] for r in st.all("SELECT task_id, id FROM lanes WHERE state='blocked'"))
    scope = f"task {task}" if task else (f"role {role} per day" if role else "the team per day")
    print(f"raised {scope}: now +${new['usd']:.2f}, +{new['tokens']:,} tokens over cowork.toml")
    requeued = sorted(before - after)
    if requeued:
        print("queued again: " + ", ".join(requeued) + " (a runner picks them up; `cowork resume` if none is running)")
