"""Commands that read a team's work: handoff packets, plans, status and the event log."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from cowork.cli.app import app
from cowork.cli.common import (JsonOpt, RootOpt, console, emit, require_task, say_broken_roles, store,
                               warn_broken_roles, workspace)
from cowork.display import printable
from cowork.errors import EXIT_BAD_INPUT, BadInput, ValidationFailed

handoff_app = typer.Typer(help="Handoff packets: handoffs/<task>/<lane>.md.", no_args_is_help=True)
plan_app = typer.Typer(help="Check and show plan files (handoffs/<task>/plan.md).", no_args_is_help=True)
app.add_typer(handoff_app, name="handoff")
app.add_typer(plan_app, name="plan")


def _table(*columns: str):
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for col in columns:
        table.add_column(col, overflow="fold")
    return table


def _print(renderable) -> None:
    console(markup=False).print(renderable)


def _when(ts: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts)) if ts else "-"


# -- handoff ----------------------------------------------------------------------------------------------------


@handoff_app.command("list")
def handoff_list(task: Optional[str] = typer.Option(None, "--task", help="only this task"),
                 root: Optional[Path] = RootOpt, as_json: bool = JsonOpt) -> None:
    """The generated index of packets: task, lane, from, to, status, checklist, title."""
    from cowork import packets

    ws = workspace(root)
    rows = [packets.entry(ws, p) for p in packets.packet_paths(ws, task)]

    def show(rows: list[dict]) -> None:
        if not rows:
            print("no handoff packets" + (f" for task {task}" if task else ""))
            return
        table = _table("task", "lane", "from", "to", "status", "checklist", "title")
        for r in rows:
            if not r["valid"]:
                table.add_row(r["task"], r["lane"], "", "", "INVALID", "", f"{len(r['problems'])} problem(s): "
                              "`cowork handoff validate`")
                continue
            c = r["checklist"]
            table.add_row(r["task"], r["lane"], r["from"], r["to"] or "-", r["status"],
                          f"{c['done']}/{c['total']}", printable(r["title"]))
        _print(table)

    emit(rows, as_json, show)


@handoff_app.command("show")
def handoff_show(ref: str = typer.Argument(..., help="PATH or TASK/LANE"), root: Optional[Path] = RootOpt,
                 as_json: bool = JsonOpt) -> None:
    """One packet: its fields and sections."""
    from cowork import handoff, packets

    ws = workspace(root)
    path = packets.resolve(ws, ref)
    packet = handoff.load(path, ws.rel(path))
    data = {"path": ws.rel(path), "meta": packet.meta.model_dump(by_alias=True), "title": packet.title,
            "sections": packet.sections, "checklist": [{"done": d, "item": t} for d, t in packet.checklist()]}

    def show(_: dict) -> None:
        from rich.markdown import Markdown

        m = packet.meta  # an agent wrote the packet: its control characters show as \xNN, never reach the terminal
        _print(printable(f"{data['path']}  {m.task}/{m.lane}  {m.from_} -> {m.to or '-'}  [{m.status}]"))
        _print(printable(f"branch {m.branch or '-'}  base {m.base or '-'}  cost ${m.cost.usd:.4f} "
                         f"({m.cost.tokens_in} in / {m.cost.tokens_out} out)"))
        console().print(Markdown(printable(handoff.render(packet).split("---\n", 2)[2])))

    emit(data, as_json, show)


@handoff_app.command("new")
def handoff_new(task: str = typer.Option(..., "--task", help="task id"),
                lane: str = typer.Option(..., "--lane", help="lane id"),
                from_: str = typer.Option(..., "--from", help="the role writing the packet"),
                to: Optional[str] = typer.Option(None, "--to", help="the role or person it is for"),
                status: str = typer.Option("done", "--status", help="done | blocked | needs-review | failed"),
                title: Optional[str] = typer.Option(None, "--title", help="the packet's # title"),
                root: Optional[Path] = RootOpt, as_json: bool = JsonOpt) -> None:
    """Write a valid skeleton packet at handoffs/TASK/LANE.md (never overwrites one)."""
    from cowork import packets

    ws = workspace(root)
    known = warn_broken_roles(ws).named() or None  # a broken role file is no reason to refuse a packet
    path = packets.write_new(ws, task, lane, from_, to, status, title, known_roles=known)
    emit({"path": ws.rel(path)}, as_json, lambda d: print(f"wrote {d['path']}"))


@handoff_app.command("validate")
def handoff_validate(paths: Optional[list[str]] = typer.Argument(None, help="files or folders (default: handoffs/)"),
                     changed_since: Optional[str] = typer.Option(None, "--changed-since", metavar="REF",
                                                                 help="only packets changed since REF (git diff REF...HEAD) "
                                                                      "plus uncommitted ones"),
                     root: Optional[Path] = RootOpt, as_json: bool = JsonOpt) -> None:
    """Check packets (and plans); exit 2 listing every problem with file:line."""
    from cowork import packets

    ws = workspace(root)
    if changed_since and paths:
        raise BadInput("give PATHS or --changed-since, not both")
    if changed_since:
        files = packets.changed_since(ws, changed_since)
    elif paths:
        files = packets.expand(ws, paths)
    else:
        files = packets.packet_paths(ws) + sorted(ws.handoffs_dir.glob("*/plan.md"))
    problems = packets.validate(ws, files)
    data = {"ok": not problems, "checked": [ws.rel(f) for f in files], "problems": [p.as_dict() for p in problems]}
    if as_json:
        emit(data, True)
        if problems:
            raise typer.Exit(EXIT_BAD_INPUT)
        return
    if problems:
        raise ValidationFailed(problems)
    print(f"{len(files)} file{'s' if len(files) != 1 else ''} OK" if files else "no packets to check")


# -- plan -------------------------------------------------------------------------------------------------------


def _load_plan(ws_root: Optional[Path], file: Path):
    """(plan, display path, role names or None when not in a team)."""
    from cowork import plan
    from cowork.errors import NotATeam

    ws = None
    for start in ([ws_root] if ws_root else [None, file.parent]):  # the current team first, then the file's
        try:
            ws = workspace(start)
            break
        except NotATeam:
            continue
    roles = warn_broken_roles(ws).named() if ws else None  # names only: a broken role file is said, not fatal
    display = ws.rel(file) if ws else str(file)
    return plan.load(file, roles, display), display, roles


@plan_app.command("validate")
def plan_validate(file: Path = typer.Argument(..., help="a plan file"), root: Optional[Path] = RootOpt,
                  as_json: bool = JsonOpt) -> None:
    """Check a plan: lane ids, roles (against roles/), dependencies, cycles. Exit 2 with file:line for each."""
    try:
        p, display, roles = _load_plan(root, file)
    except ValidationFailed as exc:
        if as_json:
            emit({"ok": False, "file": str(file), "problems": [x.as_dict() for x in exc.problems]}, True)
            raise typer.Exit(EXIT_BAD_INPUT)
        raise
    data = {"ok": True, "file": display, "lanes": len(p.lanes), "roles_checked": roles is not None}
    emit(data, as_json, lambda d: print(f"{display}: OK, {d['lanes']} lane(s)"
                                        + ("" if roles is not None else " (not in a team: roles not checked)")))


@plan_app.command("show")
def plan_show(file: Path = typer.Argument(..., help="a plan file"), root: Optional[Path] = RootOpt,
              as_json: bool = JsonOpt) -> None:
    """Show a plan's lanes in the order they can run."""
    p, display, _ = _load_plan(root, file)
    data = {"file": display, "meta": p.meta.model_dump(), "order": p.order(),
            "lanes": [lane.model_dump() for lane in p.lanes], "notes": p.notes}

    def show(_: dict) -> None:
        _print(printable(p.meta.title) + (f"  (task {p.meta.task})" if p.meta.task else ""))
        table = _table("#", "lane", "role", "after", "goal")
        for i, lid in enumerate(p.order(), 1):
            lane = p.lane(lid)
            table.add_row(str(i), lane.id, lane.role, ", ".join(lane.depends_on) or "-", printable(lane.goal))
        _print(table)

    emit(data, as_json, show)


# -- status and log ---------------------------------------------------------------------------------------------


@app.command()
def status(root: Optional[Path] = RootOpt, as_json: bool = JsonOpt) -> None:
    """The team at a glance: main's head, pause, merge lock, lanes by state, approvals, spend today."""
    from cowork.views import team_status

    ws = workspace(root)
    say_broken_roles(ws)
    data = team_status(ws, store(ws))

    def show(d: dict) -> None:
        out = []
        out.append(f"team      {d['team']}  ({d['root']})")
        out.append(f"{d['target']:<9} {d['head'][:10] if d['head'] else '(no commits)'}")
        if d["paused"]:
            p = d["paused"]
            out.append(f"PAUSED    by {p['by']} at {_when(p['since'])}" + (f": {p['reason']}" if p["reason"] else ""))
        else:
            out.append("running   (not paused)")
        for s in d["paused_scopes"]:
            out.append(f"  paused  {s['scope']} by {s['by']}" + (f": {s['reason']}" if s["reason"] else ""))
        lock = d["merge_lock"]
        out.append("merge     " + (f"lock held by {lock['holder']} since {_when(lock['since'])}"
                                   + (" (lease expired)" if lock["expired"] else "")
                                   + (" (its process is gone: the next merger takes it)" if lock.get("gone") else "")
                                   if lock else "lock free")
                   + f", {d['merge_queue']} waiting")
        if d["checkout"]:
            out.append(f"checkout  {d['checkout']}")
        tasks = ", ".join(f"{n} {s}" for s, n in d["tasks"].items()) or "none"
        out.append(f"tasks     {tasks}")
        for t in d["no_runner"]:
            out.append(f"  {t} is running but no runner works on it (its runner stopped): `cowork resume`")
        for lane in d["at_budget_cap"]:
            out.append(f"  {lane} waits at a budget cap: `cowork budget` shows it, `cowork budget raise` lets it on")
        for t in d["awaiting_approval"]:
            out.append(f"  {t['id']} waits for its plan to be approved: `cowork approve {t['id']}` runs it, "
                       f"`cowork reject {t['id']}` drops it")
        lanes = ", ".join(f"{n} {s}" for s, n in d["lanes"].items()) or "none"
        out.append(f"lanes     {lanes}")
        out.append(f"approvals {len(d['pending_approvals'])} pending")
        for a in d["pending_approvals"]:
            out.append(f"  #{a['id']} {a['role']} wants {a['tool']} ({a['task_id']}/{a['lane_id']})"
                       + (f": {a['why']}" if a["why"] else ""))
        sp = d["spend_today"]
        cap = f" of ${sp['usd_cap']:.2f}" if sp["usd_cap"] is not None else ""
        out.append(f"spend     ${sp['usd']:.4f}{cap} today ({sp['tokens_in']} in / {sp['tokens_out']} out tokens)")
        _print("\n".join(out))

    emit(data, as_json, show)


def _event_line(e: dict) -> str:
    where = "/".join(x for x in (e.get("task_id"), e.get("lane_id")) if x)
    cost = f"  ${e['usd']:.4f}" if e.get("usd") else ""
    line = f"{e['id']:>6} {_when(e['ts'])} {e['kind']:<18} {e['actor']:<12} {where + ' ' if where else ''}{e['summary']}{cost}"
    return printable(line)  # summaries quote what agents wrote (a refused command, a message)


@app.command()
def log(task: Optional[str] = typer.Option(None, "--task", help="only this task"),
        lane: Optional[str] = typer.Option(None, "--lane", help="only this lane: TASK/LANE (or LANE, in any task)"),
        follow: bool = typer.Option(False, "--follow", "-f", help="keep printing new events until Ctrl-C"),
        n: int = typer.Option(50, "-n", min=1, help="how many recent events to show first"),
        root: Optional[Path] = RootOpt, as_json: bool = typer.Option(False, "--json", help="one JSON object per line")
        ) -> None:
    """The timeline: who did what, when, at what cost. Oldest first."""
    from cowork.views import follow_events, recent_events

    ws = workspace(root)
    say_broken_roles(ws)
    st = store(ws)
    if lane and "/" in lane:  # TASK/LANE, as `pause --lane` and `retry` take it
        owner, _, lane = lane.partition("/")
        if task and task != owner:
            raise BadInput(f"--lane {owner}/{lane} is not a lane of --task {task}")
        task = owner
    if task and st.scalar("SELECT 1 FROM events WHERE task_id=? LIMIT 1", (task,)) is None:
        require_task(st, task)  # a task with no event yet is still a task; a name with neither is a typo
    if lane and all(st.scalar(f"SELECT 1 FROM {table} WHERE {col}=? AND (? IS NULL OR task_id=?) LIMIT 1",
                              (lane, task, task)) is None for table, col in (("events", "lane_id"), ("lanes", "id"))):
        raise BadInput(f"no lane {lane}" + (f" in task {task}" if task else ""),
                       hint=f"`cowork lanes{f' --task {task}' if task else ''}` lists the lanes")

    def put(e: dict) -> None:
        sys.stdout.write((json.dumps(e, default=str, ensure_ascii=False) if as_json else _event_line(e)) + "\n")

    rows = recent_events(st, n, task=task, lane=lane)
    try:
        for e in rows:
            put(e)
        sys.stdout.flush()
        if not follow:
            return
        after = rows[-1]["id"] if rows else st.scalar("SELECT MAX(id) FROM events", default=0)
        for e in follow_events(st, after, task=task, lane=lane):
            put(e)
            sys.stdout.flush()
    except KeyboardInterrupt:
        return
    except BrokenPipeError:  # `cowork log | head`: the reader left; stop quietly
        sys.stdout = open(os.devnull, "w")
