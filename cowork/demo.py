"""`cowork demo`: a scratch team repo does one small real task through the real runner, then a short report.

The task (a `greet.py` module, its test, a docs page) runs as parallel lanes with packets, checks and merges
through the lock, with the configured model or, when none is, the embedded offline one. The embedded 135M model
cannot plan or write code from a description, so for it the demo passes a hand-written plan whose goals spell
out each lane's two tool calls (write the file, then finish); it says so in its report.
"""
from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from cowork.errors import BadInput, CoworkError
from cowork.gitops.git import git
from cowork.plan import LaneSpec, Plan, PlanMeta

REQUEST = ("Add greet.py, its test and a docs page\n\n"
           "A module greet.py with greet(name) returning 'Hello, <name>!', its test test_greet.py, and a docs page "
           "docs/greet.md. Use two parallel lanes: dev writes the module and its test, writer the docs page.")
EMBEDDED_REQUEST = ("Add greet.py, its test and a docs page\n\n"
                    "Hand-written plan for the embedded model: one file per lane.")
MODULE = "def greet(name):\n    return 'Hello, ' + name + '!'\n"
TEST = "import greet\n\n\ndef test_greet():\n    assert greet.greet('Ada') == 'Hello, Ada!'\n"
DOCS = "# greet\n\n`greet(name)` returns a greeting: `greet('Ada')` is `'Hello, Ada!'`.\n"
EVENT_KINDS = ["lane.state", "check.failed", "check.passed", "merge.done", "merge.conflict", "lane.escalated",
               "model.fallback", "task.done", "task.failed"]


@dataclass
class DemoResult:
    """What the demo did, for the report and `--json`."""

    ok: bool
    root: str
    kept: bool
    model: str = ""
    embedded: bool = False
    plan_source: str = ""
    task: str | None = None
    lanes: list[dict] = field(default_factory=list)
    merges: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0
    usd: float = 0.0
    error: str | None = None
    bad_input: bool = False  # the error was the user's (a --dir that is not empty): exit 2
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def _py() -> str:
    return shlex.quote(sys.executable)


def _checks(module: bool = True, test: bool = False) -> list[str]:
    py = _py()
    out = []
    if module:
        out += [f"{py} -m py_compile greet.py",
                f"{py} -c \"from greet import greet; assert greet('Ada') == 'Hello, Ada!', greet('Ada')\""]
    if test:
        out += [f"{py} -m py_compile test_greet.py", f"{py} -c \"import test_greet; test_greet.test_greet()\""]
    return out


def _copy_goal(path: str, content: str, summary: str) -> str:
    calls = [{"tool": "write_file", "arguments": {"path": path, "content": content}},
             {"tool": "finish", "arguments": {"status": "done", "summary": summary}}]
    return ("Make exactly these two tool calls, one per reply, in this order, copying each exactly:\n"
            + "\n".join(json.dumps(c) for c in calls))


def embedded_plan(task: str) -> Plan:
    """Three one-file lanes: code and docs in parallel, the test once the code has merged."""
    lanes = [
        LaneSpec(id="code", role="dev", goal=_copy_goal("greet.py", MODULE, "Added greet.py with greet(name)."),
                 checks=_checks()),
        LaneSpec(id="docs", role="writer", goal=_copy_goal("docs/greet.md", DOCS, "Added docs/greet.md."),
                 checks=["test -s docs/greet.md", "grep -q 'greet(name)' docs/greet.md"]),
        LaneSpec(id="test", role="dev", depends_on=["code"], checks=_checks(module=False, test=True),
                 goal=_copy_goal("test_greet.py", TEST, "Added test_greet.py, the test of greet(name).")),
    ]
    return Plan(meta=PlanMeta(title="greet: module, test and docs page", task=task), lanes=lanes,
                notes="Hand-written by `cowork demo` for the embedded model, which is too weak to plan.")


# ---------------------------------------------------------------- the scratch team


def make_team(root: Path, *, embedded: bool, progress: Callable[[str], None]) -> None:
    """git init, a first commit, `cowork init`, then the demo's sizing of roles and settings (committed)."""
    from cowork.init import init_team

    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise BadInput(f"{root} is not empty", hint="give `cowork demo --dir` a new or empty directory")
    git("init", "-q", "-b", "main", cwd=root)
    if not git("config", "user.email", check=False, cwd=root):
        git("config", "user.name", "cowork demo", cwd=root)
        git("config", "user.email", "demo@cowork.invalid", cwd=root)
    (root / "README.md").write_text("# greet\n\nA scratch repository made by `cowork demo`.\n", encoding="utf-8")
    git("add", "README.md", cwd=root)
    git("commit", "-q", "-m", "first commit", cwd=root)
    init_team(root, commit=True, name="demo")
    progress(f"made a team repo at {root} (git init, first commit, cowork init)")
    _size_team(root, embedded=embedded)
    git("add", "cowork.toml", "roles", cwd=root)
    git("commit", "-q", "-m", "demo: size the team for a short demo (no review lanes, small step caps)", cwd=root)


def _size_team(root: Path, *, embedded: bool) -> None:
    from cowork.roles import load_role_file

    toml = root / "cowork.toml"
    text = toml.read_text(encoding="utf-8")
    text = text.replace("concurrency = 4 ", "concurrency = 2 ", 1).replace("auto_approve_plans = false",
                                                                         "auto_approve_plans = true", 1)
    toml.write_text(text, encoding="utf-8")
    pytest_check = []
    try:
        import importlib.util

        if importlib.util.find_spec("pytest") is not None:
            pytest_check = [f"{_py()} -m pytest -q -p no:cacheprovider || [ $? -eq 5 ]"]  # 5: no tests here
    except (ImportError, ValueError):
        pass
    for name in ("dev", "writer"):
        path = root / "roles" / f"{name}.yaml"
        role, _doc = load_role_file(path)
        update: dict = {"review_by": None}
        if name == "dev":
            update["checks"] = _checks() + ([] if embedded else pytest_check)
        if embedded:  # a short tool list keeps the prompt (evaluated at ~4 ms a token) small
            update.update(tools=["read_file", "write_file"], run_allow=[], approvals={},
                          budget={"max_steps": 6})
        role = role.model_validate({**role.model_dump(exclude_none=True), **update})
        path.write_text(role.to_yaml(), encoding="utf-8")


# ---------------------------------------------------------------- running it


def run_demo(directory: Path | None = None, *, keep: bool = False, progress: Callable[[str], None] = print,
             env: Mapping[str, str] | None = None) -> DemoResult:
    """Make the scratch team, run the task to its end through the real runner, and collect the report."""
    from cowork.engines import detect, local_model

    started = time.monotonic()
    root = Path(directory).resolve() if directory else Path(tempfile.mkdtemp(prefix="cowork-demo-"))
    ours = directory is None or not root.exists()  # never delete a directory the user made
    result = DemoResult(ok=False, root=str(root), kept=keep or not ours)
    started_server = False
    try:
        env = os.environ if env is None else env
        resolved = detect.resolve_model(detect.settings_from_env(env), None, env)
        resolved.require_key()
        result.model, result.embedded = resolved.label, resolved.is_local
        progress(f"model: {resolved.label} (from {resolved.source})")
        make_team(root, embedded=resolved.is_local, progress=progress)
        if resolved.is_local:
            progress("starting the embedded model server...")
            endpoint = local_model.ensure_local_server(detect.local_state_dir(env))
            started_server = not endpoint.reused
        _run_task(root, result, progress)
    except CoworkError as exc:
        result.error = exc.render()
        result.bad_input = isinstance(exc, BadInput)
    finally:
        if started_server:
            local_model.stop_local_server(detect.local_state_dir(env))
        result.wall_s = round(time.monotonic() - started, 1)
        if not result.kept:
            shutil.rmtree(root, ignore_errors=True)
    return result


def _run_task(root: Path, result: DemoResult, progress: Callable[[str], None]) -> None:
    from cowork.config import load_settings
    from cowork.roles import team_roles
    from cowork.runner import planning
    from cowork.runner.launch import run_here
    from cowork.store import Store
    from cowork.workspace import Workspace

    ws = Workspace(root)
    settings = load_settings(ws.config_path)
    roles = team_roles(ws, settings)
    store = Store.for_workspace(ws)
    draft = planning.create_task(ws, store, settings, roles, EMBEDDED_REQUEST if result.embedded else REQUEST,
                                 origin="human:cowork-demo")
    result.task = draft.task
    if result.embedded:
        plan = embedded_plan(draft.task)
        result.plan_source = "hand-written by the demo (the embedded model is too weak to plan)"
    else:
        progress(f"task {draft.task}: asking the planner for a plan...")
        try:
            plan = asyncio.run(planning.ask_planner(ws, store, settings, roles, draft))
            result.plan_source = f"planned by {settings.planner}"
        except CoworkError as exc:
            plan = embedded_plan(draft.task)
            result.plan_source = "hand-written by the demo (the planner gave no valid plan)"
            result.notes.append(f"the planner failed: {exc.render()[:300]}")
    planning.save_plan(ws, store, settings, draft.task, plan)
    planning.approve(store, draft.task, plan, by="human:cowork-demo")
    progress(f"task {draft.task}: {len(plan.lanes)} lanes ({result.plan_source}): "
             + ", ".join(f"{x.id} ({x.role}{', after ' + ', '.join(x.depends_on) if x.depends_on else ''})"
                         for x in plan.lanes))
    stop = threading.Event()
    follower = threading.Thread(target=_follow, args=(store, draft.task, progress, stop), daemon=True)
    follower.start()
    try:
        run_here(ws, [draft.task])
    finally:
        stop.set()
        follower.join(5)
    _collect(ws, store, draft.task, result)


def _follow(store, task: str, progress: Callable[[str], None], stop: threading.Event) -> None:
    after = store.scalar("SELECT max(id) FROM events", default=0) or 0
    while True:
        done = stop.is_set()
        for e in store.events(after=after, task=task, kinds=EVENT_KINDS):
            after = e["id"]
            progress(f"  {time.strftime('%H:%M:%S', time.localtime(e['ts']))} {e['summary']}")
        if done:
            return
        stop.wait(0.3)


def _collect(ws, store, task: str, result: DemoResult) -> None:
    from cowork import handoff
    from cowork.runner.tasks import lanes, task_state

    for r in lanes(store, task):
        row = {"lane": r["id"], "role": r["role"], "kind": r["kind"], "state": r["state"],
               "packet": r["packet_path"], "packet_status": None, "packet_valid": False, "error": r["error"]}
        if r["packet_path"]:
            text = git("show", f"main:{r['packet_path']}", check=False, cwd=ws.root)
            if not text and r["worktree"] and (Path(r["worktree"]) / r["packet_path"]).is_file():
                text = (Path(r["worktree"]) / r["packet_path"]).read_text(encoding="utf-8")
            try:
                row["packet_status"] = handoff.parse(text, r["packet_path"]).meta.status
                row["packet_valid"] = True
            except CoworkError as exc:
                row["error"] = row["error"] or exc.render()[:300]
        result.lanes.append(row)
    log = git("log", "main", "--merges", f"--grep=Cowork-Task: {task}", "--format=%h %s", check=False, cwd=ws.root)
    result.merges = [line for line in log.splitlines() if line]
    totals = store.one("SELECT coalesce(sum(tokens_in),0) AS i, coalesce(sum(tokens_out),0) AS o, "
                       "coalesce(sum(usd),0) AS u FROM events WHERE task_id=? AND kind='model.call'", (task,))
    result.tokens_in, result.tokens_out, result.usd = int(totals["i"]), int(totals["o"]), round(totals["u"], 6)
    work = [x for x in result.lanes if x["kind"] == "work"]
    result.ok = task_state(store, task).ok and bool(work) and all(x["state"] == "merged" for x in work)


# ---------------------------------------------------------------- the report


def render_report(r: DemoResult) -> str:
    """The short plain-text report printed at the end of `cowork demo`."""
    if r.task is None and r.error:  # it stopped before a team or task existed: no merges, nothing to explore
        lines = ["", "cowork demo: did not start", f"  model    {r.model or '-'}", f"  error    {r.error}"]
        if not r.bad_input:
            lines += ["", "Next:", "  cowork models         which models this machine can use, and how to set one"]
        return "\n".join(lines)
    lines = ["", f"cowork demo: {'the team finished the task' if r.ok else 'the team did NOT finish the task'}",
             f"  model    {r.model or '-'}"]
    if r.embedded:
        lines.append("           (weak: fine to watch the machinery work offline, not for real work)")
    if r.task:
        lines += [f"  task     {r.task}", f"  plan     {r.plan_source}"]
    for x in r.lanes:
        packet = f"{x['packet']} ({x['packet_status']}{', valid' if x['packet_valid'] else ', INVALID'})" \
            if x["packet"] else "no packet"
        lines.append(f"  lane     {x['lane']:<6} {x['role']:<7} {x['state']:<9} {packet}")
        if x["error"] and x["state"] != "merged":
            lines.append(f"           {x['error'].splitlines()[0][:160]}")
    lines.append(f"  merges   {len(r.merges)} (git log --merges --grep 'Cowork-Task: {r.task}')")
    lines += [f"           {m}" for m in r.merges]
    lines.append(f"  time     {r.wall_s:.0f}s wall; tokens {r.tokens_in} in / {r.tokens_out} out"
                 + (f"; ${r.usd:.4f}" if r.usd else ""))
    for note in r.notes:
        lines.append(f"  note     {note}")
    if r.error:
        lines.append(f"  error    {r.error}")
    where = f"cd {r.root} && " if r.kept else ""
    lines += ["", "Next:"]
    if r.kept:
        lines += [f"  {where}cowork mc            mission control: every lane live",
                  f"  {where}cowork log           the timeline of who did what",
                  f"  {where}git log --graph --oneline   the merges and their Cowork-* trailers"]
    else:
        lines.append("  cowork demo --keep    keep the scratch repo, then explore it with cowork mc, cowork log, git log")
    if r.embedded:
        lines.append("  set a real model (see `cowork models`), e.g. export COWORK_MODEL=anthropic/claude-sonnet-4-5 "
                     "ANTHROPIC_API_KEY=...")
    lines.append("  cowork init           in your own repository, then cowork delegate \"...\"")
    return "\n".join(lines)
