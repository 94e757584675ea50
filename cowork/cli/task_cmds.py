"""Commands that start and steer work: delegate, run, wait, resume, lanes, pause, unpause."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

import typer

from cowork.cli.app import app
from cowork.cli.common import (JsonOpt, RootOpt, console, emit, require_task, say_broken_roles, store, team,
                               workspace)
from cowork.display import printable
from cowork.errors import BadInput, EXIT_FAILURE

YesOpt = typer.Option(False, "--yes", "-y", help="approve the plan without asking")
DetachOpt = typer.Option(False, "--detach", "-d", help="run in a background process and print the task id")


@app.command()
def delegate(text: str = typer.Argument(..., help="what you want done"),
             to: Optional[str] = typer.Option(None, "--to", help="give it to this role as one lane (no planner)"),
             attach: list[Path] = typer.Option([], "--attach", help="a file to include in the brief (repeatable)"),
             yes: bool = YesOpt, detach: bool = DetachOpt, root: Optional[Path] = RootOpt) -> None:
    """Delegate a request: write its brief, plan it (or give it to --to ROLE), approve, and run it."""
    import asyncio

    from cowork.runner import planning

    ws, st, settings, roles = team(root, strict=True)
    _announce_fallback(settings, roles)
    planning.require_models(settings, roles, [to or settings.planner])
    draft = planning.create_task(ws, st, settings, roles, text, to=to, attachments=list(attach))
    print(f"task {draft.task}: brief committed (handoffs/{draft.task}/brief.md)")
    if to:
        plan = planning.one_lane_plan(draft.task, draft.title, to, text)
    else:
        print(f"asking {settings.planner} for a plan...")
        try:
            plan = asyncio.run(planning.ask_planner(ws, st, settings, roles, draft))
        except BaseException as exc:
            from cowork.store.lanes import set_task_state

            stopped = isinstance(exc, KeyboardInterrupt)
            set_task_state(st, draft.task, "failed", actor="planner",
                           error="interrupted while planning" if stopped else
                           f"planning failed: {getattr(exc, 'message', None) or exc}"[:500])
            if stopped:
                print(f"\ninterrupted while planning: task {draft.task} dropped; nothing ran", file=sys.stderr)
                raise typer.Exit(130) from None
            raise
    _approve_and_run(ws, st, settings, roles, draft.task, plan, yes=yes, detach=detach)


@app.command("run")
def run_plan(plan_file: Path = typer.Argument(..., help="a plan file (markdown with a ```yaml lanes block)"),
             yes: bool = YesOpt, detach: bool = DetachOpt, root: Optional[Path] = RootOpt) -> None:
    """Run a hand-written plan the same way a delegated one runs."""
    from cowork import plan as plan_mod
    from cowork.runner import planning

    ws, st, settings, roles = team(root, strict=True)
    plan = plan_mod.load(plan_file, set(roles.names()), display=str(plan_file))
    _announce_fallback(settings, roles)
    planning.require_models(settings, roles, [lane.role for lane in plan.lanes])
    text = plan.meta.title + (f"\n\n{plan.notes}" if plan.notes else "") + f"\n\n(hand-written plan: {plan_file.name})"
    draft = planning.create_task(ws, st, settings, roles, text, to=None)
    print(f"task {draft.task}: brief committed (handoffs/{draft.task}/brief.md)")
    _approve_and_run(ws, st, settings, roles, draft.task, plan, yes=yes, detach=detach)


def _approve_and_run(ws, st, settings, roles, task: str, plan, *, yes: bool, detach: bool) -> None:
    from cowork import plan as plan_mod
    from cowork.runner import planning

    text = planning.save_plan(ws, st, settings, task, plan)
    asking = not (yes or settings.policy.auto_approve_plans)
    _show_plan(text)
    _show_estimate(plan, roles, settings, detail=asking)
    require_plan_models(settings, roles, task, plan)  # before a human is asked to approve what cannot run
    if asking:
        plan = _ask(ws, st, settings, roles, task, plan, plan_mod)
        if plan is None:
            print(f"task {task} rejected")
            raise typer.Exit(EXIT_FAILURE)
    launch_approved(ws, st, task, plan, by="human" if not yes else "human:--yes", detach=detach)


def require_plan_models(settings, roles, task: str, plan) -> None:
    """Every lane's role can call its model; if not, the task keeps waiting for approval, and the error says how
    to run it once the key is set."""
    from cowork.engines.models import ModelError
    from cowork.runner import planning

    try:
        planning.require_models(settings, roles, [lane.role for lane in plan.lanes])
    except ModelError as exc:
        raise ModelError(f"{exc.message}\ntask {task} waits for its plan to be approved: `cowork approve {task}` "
                         f"runs it once its roles can call their models, `cowork reject {task}` drops it",
                         hint=exc.hint) from None


def launch_approved(ws, st, task: str, plan, *, by: str, detach: bool, note: str | None = None) -> None:
    """Approve the task's plan and run it: in a background runner (`detach`), or here with live progress, exiting
    as the task ends."""
    from cowork.runner import launch, planning

    launch.adopt_orphans(ws, st)
    planning.approve(st, task, plan, by=by, note=note)
    _run_task(ws, st, task, detach=detach)


def _run_task(ws, st, task: str, *, detach: bool) -> None:
    """Run the task's ready lanes: in a background runner (`detach`, printing the task id), or here with live
    progress, exiting 0 only when the task is done."""
    from cowork.runner import launch

    if detach:
        pid = launch.start_detached(ws, [task])
        print(task)
        print(f"runner pid {pid}; follow with `cowork lanes --task {task}` or `cowork wait {task}`", file=sys.stderr)
        return
    _run_foreground(ws, st, [task], reclaim=False)
    _exit_for(st, task)


def _check_step_cap(st, settings, roles, task: str, lane: str) -> None:
    """A lane that used up its step cap would stop again at once: say what to raise first."""
    from cowork.runner.journal import Journal
    from cowork.store.lanes import get_lane

    row = get_lane(st, task, lane)
    role = roles.roles.get(row["role"]) if row else None
    if role is None or role.engine == "command":
        return
    cap = (role.budget.max_steps if role.budget and role.budget.max_steps else None) \
        or settings.policy.max_steps_per_lane
    used = Journal(st, task, lane).model_calls()
    if used >= cap:
        raise BadInput(f"lane {task}/{lane} has used its {cap} model calls (its step cap)",
                       hint=f"raise `budget.max_steps` in roles/{row['role']}.yaml (or [policy] max_steps_per_lane), "
                            "then retry it")


@app.command()
def retry(lane: str = typer.Argument(..., metavar="TASK/LANE", help="a lane that failed, was blocked or cancelled"),
          note: Optional[str] = typer.Option(None, "--note", help="what to do differently (the agent reads it)"),
          detach: bool = DetachOpt, root: Optional[Path] = RootOpt) -> None:
    """Send a lane that ended without merging back to its role: it picks up its own conversation with your note,
    and its task runs again (here, or in the background with --detach)."""
    from cowork.runner import lease, planning
    from cowork.runner.tasks import retry_lane
    from cowork.store.lanes import get_lane
    from cowork.team.messages import human_id

    task, _, lane_id = lane.strip("/").partition("/")
    if not task or not lane_id or "/" in lane_id:
        raise BadInput(f"'{lane}' is not TASK/LANE", hint="e.g. `cowork retry t7-login/implement`")
    ws, st, settings, roles = team(root, strict=True)
    require_task(st, task, lane_id)
    _check_step_cap(st, settings, roles, task, lane_id)
    planning.require_models(settings, roles, [get_lane(st, task, lane_id)["role"]])
    queued = retry_lane(st, task, lane_id, by=human_id(ws.root), note=note)
    print(f"{task}/{lane_id} goes back to its role" + (f", with {', '.join(queued[1:])}" if len(queued) > 1 else ""))
    if lease.holder(st, task) is not None:  # a runner still holds the task (it was waiting): it picks the lane up
        print(f"the task's runner picks it up; `cowork wait {task}` follows it")
        return
    _run_task(ws, st, task, detach=detach)


def _announce_fallback(settings, roles) -> None:
    """Say so before any work starts when a role would fall back to the weak embedded model."""
    from cowork.engines.detect import fallback_notice

    notice = fallback_notice(settings, roles.roles)
    if notice:
        print(f"note: {notice}", file=sys.stderr)


def _show_estimate(plan, roles, settings, *, detail: bool) -> dict:
    """Print the plan's rough cost: one line, plus a line per lane when a human is about to decide."""
    from cowork.team.budgets import estimate_plan

    est = estimate_plan(plan, roles, settings)
    cap = f" (task cap ${est['usd_cap']:.2f}{', OVER THE CAP' if est['over_cap'] else ''})" \
        if est["usd_cap"] is not None else ""
    print(f"estimated cost: ~${est['usd']:.4f}, ~{est['tokens']} tokens for {len(est['lanes'])} lane(s){cap} "
          "(rough)")
    if detail:
        for lane in est["lanes"]:
            print(f"  {lane['lane']:<16} {lane['role']:<12} {lane['model']:<28} ~{lane['steps']} steps "
                  f"~${lane['usd']:.4f}")
    return est


def _show_plan(text: str) -> None:
    """The plan a human is about to approve, as Markdown; the planner wrote it, so its control characters show as
    \\xNN and cannot rewrite what the human reads."""
    from rich.markdown import Markdown

    body = text.split("---", 2)[-1] if text.startswith("---") else text
    console().print(Markdown(printable(body)))


def _ask(ws, st, settings, roles, task: str, plan, plan_mod):
    """Approve / edit / reject at a prompt. Returns the approved plan, or None when rejected."""
    from cowork.runner import planning

    while True:
        try:
            choice = typer.prompt("approve, edit or reject? [a/e/r]", default="a").strip().lower()[:1]
        except typer.Abort:  # no terminal, end of input, Ctrl-C: the task waits for a decision, said how
            raise BadInput(f"the plan needs approval and nothing answered the prompt; task {task} waits for it: "
                           f"`cowork approve {task}` runs it, `cowork reject {task}` drops it",
                           hint="pass --yes, or set policy.auto_approve_plans = true in cowork.toml") from None
        if choice == "a":
            return plan
        if choice == "r":
            try:
                reason = typer.prompt("reason", default="", show_default=False)
            except typer.Abort:
                reason = ""
            planning.reject(st, task, reason=reason or None)
            return None
        if choice == "e":
            edited = _edit(plan_mod.render(plan), roles, plan_mod)
            if edited is not None:
                plan = edited
                _show_plan(planning.save_plan(ws, st, settings, task, plan))
                _show_estimate(plan, roles, settings, detail=True)


def _edit(text: str, roles, plan_mod):
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    with tempfile.NamedTemporaryFile("w", suffix=".md", prefix="plan-", delete=False) as f:
        f.write(text)
        path = Path(f.name)
    try:
        while True:
            subprocess.run([*editor.split(), str(path)], check=False)
            try:
                return plan_mod.load(path, set(roles.names()), display="plan.md")
            except BadInput as exc:
                print(exc.render(), file=sys.stderr)
                if not typer.confirm("edit again?", default=True):
                    return None
    finally:
        path.unlink(missing_ok=True)


def _run_foreground(ws, st, tasks: list[str] | None, *, reclaim: bool) -> dict:
    """Run a runner in a thread while this thread shows live progress; Ctrl-C stops (the work stays resumable)."""
    from cowork.runner import launch

    result: dict = {}
    error: list[BaseException] = []
    stopper = launch.Stopper()

    def target() -> None:
        try:
            result.update(launch.run_here(ws, tasks, reclaim=reclaim, stopper=stopper))
        except BaseException as exc:  # shown after the progress display closes
            error.append(exc)

    thread = threading.Thread(target=target, name="cowork-runner", daemon=True)
    thread.start()
    try:
        _progress(st, tasks, thread)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the lanes (their commands too); `cowork resume` continues them",
              file=sys.stderr)
        stopper.stop()
        try:
            thread.join(20)  # a lane's MCP servers get a few seconds to stop; a second Ctrl-C leaves at once
        except KeyboardInterrupt:
            pass
        raise typer.Exit(130)
    thread.join()
    if error:
        raise error[0]
    return result


# what a person watching a task must hear of, even when the live table shows only lanes: it waits for them, or
# something of theirs changed (their checkout), or the work moved elsewhere, or an agent's packet was not used
NOTICES = ["merge.waiting", "task.waiting", "checkout.detached", "checkout.repaired", "runner.lost", "pause.set",
           "pause.cleared", "model.retry", "merge.lock_wait", "approval.withdrawn", "handoff.rejected"]


def _line(e: dict) -> str:
    return f"{time.strftime('%H:%M:%S', time.localtime(e['ts']))} {printable(e['summary'])}"  # agents write summaries


def _progress(st, tasks: list[str] | None, thread: threading.Thread) -> None:
    from cowork.runner import control

    after = st.scalar("SELECT max(id) FROM events", default=0)
    told = set()
    for t in tasks or [None]:  # a pause set before this command: nothing starts, and the table does not say why
        p = control.paused(st, t)
        if p is None or p["key"] in told:
            continue
        told.add(p["key"])
        scope = p["key"].split(":", 1)[1] if ":" in p["key"] else None
        print(f"note: {scope or 'everything'} is paused by {p['by']}" + (f" ({p['reason']})" if p["reason"] else "")
              + f"; lanes start after `cowork unpause{f' --task {scope}' if scope else ''}`", flush=True)

    def ours(e: dict) -> bool:
        return not tasks or e["task_id"] in tasks or e["task_id"] is None

    if not sys.stdout.isatty():
        kinds = ["lane.state", "merge.done", "merge.conflict", "check.failed", "task.done", "task.failed",
                 "lane.escalated", "model.fallback", *NOTICES]
        while True:
            alive = thread.is_alive()
            for e in st.events(after=after, kinds=kinds):
                after = e["id"]
                if ours(e):
                    print(_line(e), flush=True)
            if not alive:
                return
            thread.join(0.3)
    from rich.live import Live

    with Live(_lanes_table(st, tasks), console=console(markup=False), refresh_per_second=4, transient=False) as live:
        while True:
            alive = thread.is_alive()
            for e in st.events(after=after, kinds=NOTICES):
                after = e["id"]
                if ours(e):
                    live.console.print(_line(e), markup=False, highlight=False)
            live.update(_lanes_table(st, tasks))
            if not alive:
                return
            thread.join(0.25)


def _exit_for(st, task: str) -> None:
    from cowork.runner.tasks import task_state

    state = task_state(st, task)
    print(f"task {task}: {state.state}")
    if not state.ok:
        raise typer.Exit(EXIT_FAILURE)


@app.command()
def wait(task: str = typer.Argument(..., help="the task id"),
         timeout: Optional[float] = typer.Option(None, "--timeout", help="give up after this many seconds"),
         root: Optional[Path] = RootOpt, as_json: bool = JsonOpt) -> None:
    """Block until the task ends (adopting it if its runner died); exit 1 unless it is done."""
    from cowork.runner import launch

    ws = workspace(root)
    say_broken_roles(ws)
    st = store(ws)
    state = launch.wait(ws, st, task, timeout=timeout)
    emit({"task": task, "state": state.state, "lanes": state.counts}, as_json,
         lambda d: print(f"task {task}: {d['state']}"))
    if not state.ok:
        raise typer.Exit(EXIT_FAILURE)


@app.command()
def resume(detach: bool = typer.Option(False, "--detach", "-d",
                                        help="run in a background process and print its pid"),
           root: Optional[Path] = RootOpt) -> None:
    """Start a runner that reclaims every unfinished task whose runner is gone, and continue them."""
    from cowork.roles import team_roles
    from cowork.runner import launch, lease

    ws = workspace(root)
    st = store(ws)
    orphans = lease.orphaned(st, grace_s=0)
    if not orphans:
        print("nothing to resume: every running task has a live runner")
        return
    team_roles(ws)  # a runner needs every role file: say which is broken before saying anything resumes
    print("resuming " + ", ".join(orphans))
    if detach:
        print(f"runner pid {launch.start_detached(ws, reclaim=True)}")
        return
    results = _run_foreground(ws, st, None, reclaim=True)
    elsewhere = [t for t in orphans if t not in results or results[t] == "held-elsewhere"]
    for task, state in results.items():
        if state != "held-elsewhere":
            print(f"task {task}: {state}")
    for task in elsewhere:  # another resume (or `cowork wait`) took it first: it runs there
        print(f"task {task}: another runner took it meanwhile; `cowork wait {task}` follows it")
    if any(s not in ("done", "held-elsewhere") for s in results.values()):
        raise typer.Exit(EXIT_FAILURE)


def _lane_rows(st, task: str | None) -> list[dict]:
    """The lanes as `--json` gives them: `step` counts model calls; `doing` is the latest journal step (an agent
    CLI's program for engine: command, whose lanes make no model call) and `doing_since` when it started, while it
    runs."""
    from cowork import views
    from cowork.runner.tasks import lanes

    steps = views.latest_steps(st, task)
    rows = []
    for r in lanes(st, task):
        step = steps.get((r["task_id"], r["id"]))
        doing, since = views.doing(step) if step else (None, None)
        rows.append({"task": r["task_id"], "lane": r["id"], "role": r["role"], "kind": r["kind"], "state": r["state"],
                     "step": r["step_no"], "doing": doing, "doing_since": since, "tokens_in": r["tokens_in"],
                     "tokens_out": r["tokens_out"], "usd": round(r["usd"], 6), "age_s": r["age_s"],
                     "depends_on": r["depends_on"], "merge_commit": r["merge_commit"], "error": r["error"]})
    return rows


def _lanes_table(st, tasks: list[str] | None):
    import time

    from rich.table import Table

    from cowork import views

    table = Table(box=None, pad_edge=False)
    # task ids are long: in a narrow terminal the task/lane cell folds onto a second line rather than losing its
    # end, the lane id that `retry`, `merge` and `revert` need
    table.add_column("task/lane", overflow="fold")
    for col in ("role", "state", "step", "tokens", "cost", "age"):
        table.add_column(col, justify="right" if col in ("step", "tokens", "cost", "age") else "left")
    rows = [r for t in (tasks or [None]) for r in _lane_rows(st, t)]
    now = time.time()
    for r in rows:
        step = printable(views.step_text(r["state"], r["step"], r["doing"] or "", r["doing_since"], now))
        table.add_row(f"{r['task']}/{r['lane']}", r["role"], r["state"], step,
                      f"{r['tokens_in'] + r['tokens_out']}", f"${r['usd']:.4f}", _age(r["age_s"]))
    return table


def _age(seconds: float) -> str:
    s = int(seconds)
    return f"{s}s" if s < 120 else f"{s // 60}m" if s < 7200 else f"{s // 3600}h"


@app.command("lanes")
def lanes_cmd(task: Optional[str] = typer.Option(None, "--task", help="only this task"),
              root: Optional[Path] = RootOpt, as_json: bool = JsonOpt) -> None:
    """Every lane: state, step, tokens, cost and age."""
    ws = workspace(root)
    say_broken_roles(ws)
    st = store(ws)
    require_task(st, task)
    rows = _lane_rows(st, task)
    if as_json:
        emit(rows, True)
    elif not rows:
        print("no lanes" + (f" in task {task}" if task else ""))
    else:
        console(markup=False).print(_lanes_table(st, [task] if task else None))  # step names are the model's word


def _scope(lane: Optional[str], task: Optional[str]) -> tuple[Optional[str], Optional[str]]:
    if lane:
        if "/" not in lane:
            raise BadInput(f"--lane takes TASK/LANE, not '{lane}'")
        t, _, l = lane.partition("/")
        return t, l
    return task, None


@app.command()
def pause(lane: Optional[str] = typer.Option(None, "--lane", help="only this lane (TASK/LANE)"),
          task: Optional[str] = typer.Option(None, "--task", help="only this task"),
          reason: Optional[str] = typer.Option(None, "--reason", help="why (shown to everyone)"),
          root: Optional[Path] = RootOpt) -> None:
    """Pause everything (or one task or lane): no tool runs and no model call starts until unpaused."""
    from cowork.runner import control
    from cowork.team.messages import human_id

    ws = workspace(root)
    say_broken_roles(ws)
    t, l = _scope(lane, task)
    st = store(ws)
    require_task(st, t, l)
    key = control.pause(st, by=human_id(ws.root), reason=reason, task=t, lane=l)
    print(f"paused ({key})")


@app.command()
def unpause(lane: Optional[str] = typer.Option(None, "--lane", help="only this lane (TASK/LANE)"),
            task: Optional[str] = typer.Option(None, "--task", help="only this task"),
            root: Optional[Path] = RootOpt) -> None:
    """Clear a pause set with `cowork pause` (the same scope)."""
    from cowork.runner import control
    from cowork.team.messages import human_id

    from cowork.views import pause_flags

    ws = workspace(root)
    say_broken_roles(ws)
    t, l = _scope(lane, task)
    st = store(ws)
    if control.unpause(st, by=human_id(ws.root), task=t, lane=l):
        print("unpaused")
    else:
        print("the whole team was not paused" if t is None else (f"{t}/{l}" if l else t) + " was not paused")
    held, scoped = pause_flags(st)
    still = ([("everything", "cowork unpause")] if held else []) + [
        (s["scope"], "cowork unpause " + (f"--lane {s['scope']}" if "/" in s["scope"] else f"--task {s['scope']}"))
        for s in scoped]
    for scope, command in still:  # a pause at another scope still holds work: say which, and how to clear it
        print(f"  still paused: {scope} (`{command}`)")
