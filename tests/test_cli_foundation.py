"""The formats' commands (roles, config, handoff, plan), status and log, and the CLI's error conventions."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from cowork.store import Store
from tests.conftest import COWORK_BIN, git

# -- user mistakes: exit 2, located message, never a traceback -----------------------------------------------------

ROLE_MISTAKES = {
    "malformed YAML": ("name: dev\nmandate: Does: things: [\n", "roles/dev.yaml:2:", "invalid YAML"),
    "unknown key": ("name: dev\nmandate: Does things.\nmodle: x\n", "roles/dev.yaml:3:1: modle:", "unknown key"),
    "wrong type": ("name: dev\nmandate: Does things.\nbudget: {usd_per_task: lots}\n", "roles/dev.yaml:3:10: budget.usd_per_task:",
                   "valid number"),
    "missing mandate": ("name: dev\ntools: [read_file]\n", "roles/dev.yaml:1:1: mandate:", "missing required field"),
    "unknown tool": ("name: dev\nmandate: Does things.\ntools: [read_file, telepathy]\n", "roles/dev.yaml:3:20: tools.1:",
                     "unknown tool 'telepathy'"),
    "cannot contradicts tools": ("name: dev\nmandate: Does things.\ntools: [write_file]\ncannot: [write_file]\n",
                                 "roles/dev.yaml:4:10: cannot.0:", "both granted and forbidden"),
    "another role's name": ("name: reviewer\nmandate: Does things.\n", "roles/dev.yaml:1:1: name:",
                            "role name 'reviewer' differs from its file name roles/dev.yaml"),
}


@pytest.mark.parametrize("case", sorted(ROLE_MISTAKES))
def test_role_mistakes_are_located_with_exit_2(team, cli, case):
    text, where, words = ROLE_MISTAKES[case]
    (team.roles_dir / "dev.yaml").write_text(text)
    for command in (["roles", "validate"], ["roles", "show", "dev"]):
        r = cli(*command)
        assert r.code == 2, (case, r.out, r.err)
        assert where in r.err and words in r.err, r.err
        assert "Traceback" not in r.err and "warning:" not in r.err
    listed = cli("roles", "list")  # a listing goes on, naming the broken file once, as the other read commands do
    assert listed.code == 0 and where in listed.err and listed.err.count("warning:") == 1, listed.err
    assert "dev" in listed.out and "broken:" in listed.out
    row = next(r for r in cli("roles", "list", "--json").json() if r["name"] == "dev")
    assert row["broken"] is True and row["problems"]
    data = cli("roles", "validate", "--json")
    assert data.code == 2 and data.json()["ok"] is False
    assert any(where.startswith(f'{p["file"]}:{p["line"]}:') for p in data.json()["problems"])


def test_every_problem_is_listed_with_a_fix(team, cli):
    (team.roles_dir / "dev.yaml").write_text("name: dev\nmandate: Does things.\ntools: [telepathy]\n")
    (team.roles_dir / "writer.yaml").write_text("name: writer\ncolour: blue\n")
    r = cli("roles", "validate")
    assert r.code == 2 and "3 problems found" in r.err
    assert r.err.count("fix:") >= 2 and "roles/writer.yaml" in r.err and "roles/dev.yaml" in r.err


def test_validate_reports_every_problem_in_one_run(team, cli):
    """Structural errors, references among the roles that parsed, and skills, all at once: a fix never uncovers a
    second round."""
    (team.roles_dir / "reviewer.yaml").write_text("name: reviewer\nmandate: Reviews.\ncolour: red\n")
    (team.roles_dir / "writer.yaml").write_text("mandate: Writes the docs.\nescalate_to: lead\ntools: [nope]\n")
    (team.skills_dir / "deploy.md").write_text("---\nroles: [reviewer, sre]\n---\nSteps.\n")
    at = (team.roles_dir / "dev.yaml").read_text().splitlines().index("review_by: reviewer") + 1
    r = cli("roles", "validate")
    assert r.code == 2 and "5 problems found" in r.err, r.err
    for line in (f"roles/dev.yaml:{at}:1: review_by: role 'reviewer' cannot be used: its file roles/reviewer.yaml has "
                 "problems", "roles/reviewer.yaml:3:1: colour: unknown key 'colour'",
                 "roles/writer.yaml:2:1: escalate_to: unknown role 'lead'", "roles/writer.yaml:3:9: tools.0: unknown tool",
                 "roles/skills/deploy.md:2:19: roles.1: unknown role 'sre'"):
        assert line in r.err, (line, r.err)


def test_skill_files_are_validated_with_the_roles(team, cli):
    (team.skills_dir / "deploy.md").write_text("---\nroles: [dev, sre]\ntriggers: deploy\n---\nSteps.\n")
    r = cli("roles", "validate")
    assert r.code == 2 and "roles/skills/deploy.md:2:14: roles.1: unknown role 'sre'" in r.err


def test_overlapping_mandates_warn_and_exit_0(team, cli):
    (team.roles_dir / "dev2.yaml").write_text(
        "mandate: Implements code changes on its lane's branch, with tests, and keeps the build green always.\n")
    r = cli("roles", "validate")
    assert r.code == 0 and "5 roles OK" in r.out
    assert "warning: roles/dev2.yaml:1:1: mandate: mandate overlaps" in r.err
    assert cli("roles", "validate", "--json").json()["warnings"][0]["file"] == "roles/dev2.yaml"


def test_bad_toml_not_a_team_and_missing_files(team, cli, tmp_path, monkeypatch):
    good = team.config_path.read_text()
    team.config_path.write_text('name = "x"\nconcurrency = [\n')
    for command in (["config", "show"], ["roles", "validate"], ["status"]):
        r = cli(*command)
        assert r.code == 2 and "cowork.toml:" in r.err and "invalid TOML" in r.err and "Traceback" not in r.err, r.err
    team.config_path.write_text('name = "x"\n[merge]\ntargte = "main"\n')
    r = cli("config", "show")
    assert r.code == 2 and "cowork.toml:3: merge.targte: unknown key 'targte'" in r.err

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    monkeypatch.chdir(outside)
    for command in (["roles", "list"], ["status"], ["handoff", "list"], ["config", "locate"], ["log"]):
        r = cli(*command)
        assert r.code == 2 and "not inside a cowork team" in r.err and "cowork init" in r.err, (command, r.err)

    monkeypatch.chdir(team.root)
    team.config_path.write_text(good)
    r = cli("plan", "validate", "missing.md")
    assert r.code == 2 and "missing.md: file not found" in r.err
    r = cli("handoff", "show", "t1/nope")
    assert r.code == 2 and "no handoff packet 't1/nope'" in r.err
    r = cli("roles", "show", "nobody")
    assert r.code == 2 and "unknown role 'nobody'" in r.err and "dev, planner" in r.err


def test_subprocess_exit_codes_and_no_tracebacks(team):
    def run(*args):
        return subprocess.run([str(COWORK_BIN), *args], cwd=team.root, capture_output=True, text=True, timeout=60)

    assert run("roles", "validate").returncode == 0
    (team.roles_dir / "dev.yaml").write_text("name: dev\nmandate: [oops\n")
    bad = run("roles", "validate")
    assert bad.returncode == 2 and "roles/dev.yaml:3:1" in bad.stderr and "began at line 2, column 10" in bad.stderr and "Traceback" not in bad.stderr
    usage = run("roles", "show")
    assert usage.returncode == 2 and "Traceback" not in usage.stderr
    assert run("handoff", "validate", "--changed-since", "no-such-ref").returncode == 2


def test_help_is_fast():
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    subprocess.run([str(COWORK_BIN), "--help"], capture_output=True, timeout=60, env=env)  # warm the page cache
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        proc = subprocess.run([str(COWORK_BIN), "--help"], capture_output=True, text=True, timeout=60, env=env)
        best = min(best, time.perf_counter() - start)
        assert proc.returncode == 0 and "init" in proc.stdout and "status" in proc.stdout
    print(f"\ncowork --help: {best * 1000:.0f} ms (best of 3)")
    assert best < 1.0, "the target is 0.3 s; the bound is generous for a loaded CI machine"


# -- roles and config ------------------------------------------------------------------------------------------


def test_roles_list_show_schema(team, cli):
    r = cli("roles", "list")
    assert r.code == 0 and all(n in r.out for n in ("planner", "dev", "reviewer", "writer"))
    rows = cli("roles", "list", "--json").json()
    assert [row["name"] for row in rows] == ["dev", "planner", "reviewer", "writer"]
    assert rows[0]["file"] == "roles/dev.yaml" and rows[0]["review_by"] == "reviewer"
    dev = cli("roles", "show", "dev", "--json").json()
    assert dev["review_by"] == "reviewer" and "write_file" in dev["tools"] and dev["effective_model"] is None
    assert "review_by" in cli("roles", "show", "dev").out
    schema = cli("roles", "schema")
    assert schema.code == 0 and json.loads(schema.out)["title"] == "cowork role"
    (team.state_dir / "role.schema.json").unlink()
    wrote = cli("roles", "schema", "--write")
    assert json.loads((team.state_dir / "role.schema.json").read_text()) == json.loads(wrote.out)


def test_config_show_never_prints_secrets(team, cli, monkeypatch):
    text = team.config_path.read_text().replace('# api_key_env = "ANTHROPIC_API_KEY"', 'api_key_env = "MY_KEY"')
    text = text.replace("[mcp]\n", '[mcp.gh]\ncommand = ["gh-mcp"]\nenv = { GH_TOKEN = "ghp_inline_secret_value_123456789" }\n')
    team.config_path.write_text(text)
    monkeypatch.setenv("MY_KEY", "sk-very-secret-value-0123456789")
    monkeypatch.setenv("COWORK_MODEL", "openai/gpt-4o")
    r = cli("config", "show", "--json")
    assert r.code == 0, r.err
    data = r.json()
    assert data["model"]["name"] == "openai/gpt-4o" and data["overrides"] == {"COWORK_MODEL": "model.name"}
    assert data["model"]["api_key"] == {"env": "MY_KEY", "set": True}
    text_out = cli("config", "show").out
    for out in (r.out, text_out):
        assert "sk-very-secret" not in out and "ghp_inline" not in out
    assert "$MY_KEY (set)" in text_out and "env COWORK_MODEL" in text_out
    monkeypatch.delenv("MY_KEY")
    assert cli("config", "show", "--json").json()["model"]["api_key"] == {"env": "MY_KEY", "set": False}


def test_config_locate(team, cli):
    data = cli("config", "locate", "--json").json()
    assert data["config"] == {"path": str(team.config_path), "exists": True}
    assert data["db"]["path"] == str(team.db_path)
    assert str(team.state_dir) in cli("config", "locate").out


# -- handoffs and plans ----------------------------------------------------------------------------------------


def test_handoff_new_list_show_validate(team, cli):
    r = cli("handoff", "new", "--task", "t1", "--lane", "impl", "--from", "dev", "--to", "reviewer", "--title", "Do it")
    assert r.code == 0 and "handoffs/t1/impl.md" in r.out
    again = cli("handoff", "new", "--task", "t1", "--lane", "impl", "--from", "dev")
    assert again.code == 2 and "already exists" in again.err
    assert cli("handoff", "new", "--task", "t1", "--lane", "x", "--from", "ghost").code == 2
    assert cli("handoff", "new", "--task", "t1", "--lane", "x", "--from", "dev", "--status", "meh").code == 2
    assert cli("handoff", "new", "--task", "t1", "--lane", "Bad Lane", "--from", "dev").code == 2
    assert cli("handoff", "new", "--task", "t2", "--lane", "docs", "--from", "writer", "--status", "blocked").code == 0

    rows = cli("handoff", "list", "--json").json()
    assert [(r["task"], r["lane"], r["status"]) for r in rows] == [("t1", "impl", "done"), ("t2", "docs", "blocked")]
    assert [r["task"] for r in cli("handoff", "list", "--task", "t2", "--json").json()] == ["t2"]
    assert "Do it" in cli("handoff", "list").out
    shown = cli("handoff", "show", "t1/impl", "--json").json()
    assert shown["meta"]["to"] == "reviewer" and shown["title"] == "Do it" and set(shown["sections"]) >= {"Summary", "Next"}
    assert cli("handoff", "show", "handoffs/t2/docs.md").code == 0
    ok = cli("handoff", "validate")
    assert ok.code == 0 and "2 files OK" in ok.out

    packet = team.task_dir("t1") / "impl.md"
    packet.write_text(packet.read_text().replace("lane: impl", "lane: other\nowner: me").replace("## Decisions\n", ""))
    bad = cli("handoff", "validate")
    assert bad.code == 2 and "Traceback" not in bad.err
    assert "handoffs/t1/impl.md:5:1: owner: unknown key 'owner'" in bad.err
    assert "missing required section '## Decisions'" in bad.err
    listed = {r["lane"]: r for r in cli("handoff", "list", "--json").json()}
    assert listed["impl"]["valid"] is False
    packet.write_text(packet.read_text().replace("owner: me\n", "").replace("## Open risks", "## Decisions\n## Open risks"))
    mismatch = cli("handoff", "validate", "--json")
    assert mismatch.code == 2
    [problem] = mismatch.json()["problems"]
    assert problem["field"] == "lane" and problem["line"] == 4 and "does not match the file name" in problem["message"]
    assert cli("handoff", "validate", "handoffs/t2").code == 0

    packet.write_text(packet.read_text().replace("lane: other", "lane: impl")
                      .replace("status: done", "status: done\nstatus: blocked"))
    twice = cli("handoff", "validate")
    assert twice.code == 2 and "Traceback" not in twice.err
    assert ("handoffs/t1/impl.md:8:1: status: duplicate key 'status' (first written at line 7); only one value "
            "can count") in twice.err
    assert cli("handoff", "list", "--json").json()[0]["valid"] is False


def test_handoff_validate_changed_since(team, cli):
    git(team.root, "add", "-A")
    git(team.root, "commit", "-q", "-m", "team")
    broken = team.task_dir("old") / "lane.md"
    broken.parent.mkdir(parents=True)
    broken.write_text("---\ntask: old\n---\nnot a packet\n")
    git(team.root, "add", "-A")
    git(team.root, "commit", "-q", "-m", "an old broken packet on main")
    git(team.root, "checkout", "-q", "-b", "feature")
    assert cli("handoff", "new", "--task", "t1", "--lane", "impl", "--from", "dev").code == 0
    git(team.root, "add", "-A")
    git(team.root, "commit", "-q", "-m", "a packet on the branch")

    r = cli("handoff", "validate", "--changed-since", "main", "--json")
    assert r.code == 0 and r.json()["checked"] == ["handoffs/t1/impl.md"]
    assert cli("handoff", "validate").code == 2, "the old broken packet still fails a full check"

    assert cli("handoff", "new", "--task", "t1", "--lane", "docs", "--from", "writer").code == 0  # untracked
    tracked = team.task_dir("t1") / "impl.md"
    tracked.write_text(tracked.read_text().replace("status: done", "status: finished"))  # modified, uncommitted
    r = cli("handoff", "validate", "--changed-since", "main", "--json")
    assert r.code == 2 and r.json()["checked"] == ["handoffs/t1/docs.md", "handoffs/t1/impl.md"]
    assert [p["file"] for p in r.json()["problems"]] == ["handoffs/t1/impl.md"]
    bad_ref = cli("handoff", "validate", "--changed-since", "nope")
    assert bad_ref.code == 2 and "unknown git ref 'nope'" in bad_ref.err


PLAN = """\
---
cowork: plan/v1
title: Ship it
---
# Ship it

```yaml
lanes:
  - id: impl
    role: dev
    goal: Build it.
  - id: docs
    role: writer
    goal: Write it up.
    depends_on: [impl]
```
"""


def test_plan_validate_and_show(team, cli):
    path = team.root / "plan.md"
    path.write_text(PLAN)
    ok = cli("plan", "validate", "plan.md", "--json")
    assert ok.code == 0 and ok.json() == {"ok": True, "file": "plan.md", "lanes": 2, "roles_checked": True}
    shown = cli("plan", "show", "plan.md", "--json").json()
    assert shown["order"] == ["impl", "docs"]
    assert "impl" in cli("plan", "show", "plan.md").out

    path.write_text(PLAN.replace("role: writer", "role: poet").replace("[impl]", "[impl, docs]"))
    bad = cli("plan", "validate", "plan.md")
    assert bad.code == 2 and "plan.md:13:5: lanes.1.role: unknown role 'poet'" in bad.err
    assert "dependency cycle" in bad.err or "depends on itself" in bad.err
    problems = cli("plan", "validate", "plan.md", "--json").json()["problems"]
    assert all(p["file"] == "plan.md" and p["line"] for p in problems)


def test_a_plan_the_planner_wrote_cannot_repaint_the_terminal(team, cli, capsys):
    """Before: `cowork plan show` and the plan shown at `delegate`'s approve/edit/reject prompt printed the planner's
    title and goals as written (YAML's "\\e" is an escape character), so the plan a human approved could read
    differently on screen. Control characters now show as visible escapes."""
    from cowork.cli.task_cmds import _show_plan

    spoof = "\\e[2K\\e[1G"
    text = PLAN.replace("goal: Build it.", f'goal: "rm -rf ~{spoof}Build it."').replace(
        "title: Ship it", f'title: "Ship it{spoof}Safe"')
    (team.root / "plan.md").write_text(text)
    out = cli("plan", "show", "plan.md").out
    assert "\x1b" not in out and "\\x1b[2K" in out and "Build it." in out, out
    capsys.readouterr()
    _show_plan(text.replace("Build it.", "Build it.\x1b[2K"))
    shown = capsys.readouterr().out
    assert "\x1b" not in shown and "\\x1b[2K" in shown, shown


# -- status and log --------------------------------------------------------------------------------------------


def test_status_on_an_empty_store(team, cli):
    data = cli("status", "--json").json()
    assert data["team"] == "repo" and data["root"] == str(team.root) and data["target"] == "main"
    assert data["head"] == git(team.root, "rev-parse", "main")
    assert data["paused"] is None and data["merge_lock"] is None and data["lanes"] == {}
    assert data["pending_approvals"] == [] and data["spend_today"]["usd"] == 0
    out = cli("status").out
    assert "not paused" in out and "lock free" in out and "0 pending" in out


def seed(store: Store) -> None:
    now = time.time()
    store.execute("INSERT INTO tasks(id, title, state, created_at, updated_at) VALUES ('t1','Login limit','running',?,?)",
                  (now, now))
    for i, (lane, state) in enumerate((("impl", "running"), ("docs", "queued"), ("tests", "running"))):
        store.execute("INSERT INTO lanes(task_id, id, role, goal, state, created_at, updated_at) VALUES "
                      "('t1',?,?,?,?,?,?)", (lane, "dev", f"do {lane}", state, now + i, now + i))
    store.execute("INSERT INTO approvals(task_id, lane_id, role, tool, action, why, created_at) VALUES "
                  "('t1','impl','dev','run','{\"command\": \"make deploy\"}','ship it',?)", (now,))
    store.execute("INSERT INTO locks(name, holder, token, acquired_at, lease_until) VALUES ('merge','merger:1','x',?,?)",
                  (now, now + 60))
    store.execute("INSERT INTO costs(ts, day, task_id, role, model, tokens_in, tokens_out, usd) VALUES "
                  "(?, strftime('%Y-%m-%d','now'), 't1', 'dev', 'm', 100, 20, 0.25)", (now,))
    store.set_flag("pause", {"reason": "lunch"}, by="human:ann")


def test_lanes_shows_whole_lane_ids_in_an_80_column_terminal(team, cli, monkeypatch):
    """A delegated task's id is long (t1-add-rate-limiting-to-api-login); the table cut it with "…" at 80 columns,
    taking the lane id with it."""
    monkeypatch.setenv("COLUMNS", "80")
    store = Store(team.db_path)
    task, now = "t1-add-rate-limiting-to-api-login", time.time()
    store.execute("INSERT INTO tasks(id, title, state, created_at, updated_at) VALUES (?, 'x', 'running', ?, ?)",
                  (task, now, now))
    store.execute("INSERT INTO lanes(task_id, id, role, goal, state, created_at, updated_at) VALUES "
                  "(?, 'impl-review', 'reviewer', 'review', 'waiting-approval', ?, ?)", (task, now, now))
    out = cli("lanes").out
    assert "…" not in out and "impl-review" in out
    assert task + "/impl-review" in "".join(line.split("  ")[0] for line in out.splitlines()[1:])


def test_lanes_shows_the_step_a_model_named_as_written(team, cli):
    """A step is named by the tool the model called, even one that does not exist. Before: `cowork lanes` read the
    table's cells as Rich markup, so a step called "[/b]oom" raised MarkupError (a traceback, exit 1), and escape
    sequences went to the terminal. The step now shows as written, control characters as \\xNN."""
    store = Store(team.db_path)
    seed(store)
    store.execute("INSERT INTO steps(task_id, lane_id, seq, kind, name, state, started_at) "
                  "VALUES ('t1', 'impl', 1, 'tool', ?, 'started', ?)", ("[/b]oom\x1b[2K", time.time()))
    r = cli("lanes")
    assert r.code == 0, r.err
    assert "[/b]oom\\x1b[2K" in r.out and "\x1b" not in r.out


def test_status_shows_lanes_lock_pause_approvals_and_spend(team, cli):
    seed(Store(team.db_path))
    data = cli("status", "--json").json()
    assert data["lanes"] == {"queued": 1, "running": 2}
    assert data["paused"]["by"] == "human:ann" and data["paused"]["reason"] == "lunch"
    assert data["merge_lock"]["holder"] == "merger:1" and not data["merge_lock"]["expired"]
    [approval] = data["pending_approvals"]
    assert approval["tool"] == "run" and approval["action"] == {"command": "make deploy"}
    assert data["spend_today"]["usd"] == 0.25 and data["spend_today"]["tokens_in"] == 100
    out = cli("status").out
    assert "PAUSED" in out and "merger:1" in out and "2 running" in out and "$0.2500" in out


def test_log_recent_filtered_and_json_lines(team, cli):
    store = Store(team.db_path)
    for i in range(5):
        store.event("lane.state", f"event {i}", actor="runner", task="t1" if i < 3 else "t2", lane="a")
    lines = cli("log", "--json").out.splitlines()
    assert [json.loads(line)["summary"] for line in lines] == [f"event {i}" for i in range(5)]
    assert [json.loads(line)["summary"] for line in cli("log", "--json", "-n", "2").out.splitlines()] == ["event 3", "event 4"]
    assert [json.loads(line)["summary"] for line in cli("log", "--task", "t2", "--json").out.splitlines()] == [
        "event 3", "event 4"]
    text = cli("log", "--lane", "a").out
    assert "lane.state" in text and "t1/a event 0" in text
    # TASK/LANE, as every other --lane takes it: only that task's lane; a typo is bad input, not an empty timeline
    assert [json.loads(line)["summary"] for line in cli("log", "--lane", "t2/a", "--json").out.splitlines()] == [
        "event 3", "event 4"]
    for typo in (("--lane", "t2/b"), ("--lane", "b"), ("--lane", "t9/a"), ("--task", "t1", "--lane", "t2/a")):
        wrong = cli("log", *typo)
        assert wrong.code == 2 and wrong.out == "" and "error:" in wrong.err, typo
    assert cli("log", "-n", "0").code == 2


def test_log_follow_prints_new_events_until_interrupted(team):
    store = Store(team.db_path)
    store.event("task.created", "before", actor="human")
    proc = subprocess.Popen([str(COWORK_BIN), "log", "--follow", "--json", "-n", "5"], cwd=team.root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert json.loads(proc.stdout.readline())["summary"] == "before"
        store.event("lane.state", "after one", actor="runner", task="t1")
        store.event("lane.state", "after two", actor="runner", task="t1")
        assert json.loads(proc.stdout.readline())["summary"] == "after one"
        assert json.loads(proc.stdout.readline())["summary"] == "after two"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode in (0, 130) and "Traceback" not in err


def test_lane_rows_for_the_tui(team):
    from cowork.views import lane_rows

    store = Store(team.db_path)
    assert lane_rows(store) == []
    seed(store)
    rows = lane_rows(store)
    assert [(r["task_id"], r["lane_id"], r["state"]) for r in rows] == [
        ("t1", "impl", "running"), ("t1", "docs", "queued"), ("t1", "tests", "running")]
    assert rows[0]["task_title"] == "Login limit" and rows[0]["depends_on"] == []
    assert lane_rows(store, task="t2") == []


def test_version_as_an_option_too(cli):
    """`cowork --version` is what people try first; it said "No such option" (exit 2)."""
    from importlib.metadata import version

    for args in (["--version"], ["version"]):
        r = cli(*args)
        assert r.code == 0 and r.out.strip() == version("cowork"), args


def test_version_takes_json_as_every_read_command_does(cli):
    """The README says every read command takes --json; `cowork version --json` was "No such option" (exit 2)."""
    import json
    from importlib.metadata import version

    r = cli("version", "--json")
    assert r.code == 0 and json.loads(r.out) == {"version": version("cowork")}


def test_resume_detach_says_what_it_prints(team, cli):
    """`resume --detach` prints the tasks it resumes and the runner's pid; its help said "print the task id"."""
    text = cli("resume", "--help").out
    assert "print its pid" in text and "task id" not in text


def test_a_packet_an_agent_wrote_cannot_repaint_the_terminal(team, cli):
    """Before: `cowork handoff show`, `handoff list` and mission control's lane screen drew the packet (title,
    summary) as the agent wrote it, so its escape sequences reached the terminal (erase a line, move the cursor,
    rewrite what the reviewer reads). They now show as visible escapes, as approvals and the timeline do."""
    from cowork.tui.screens.lane import packet_markdown

    spoof = "\x1b[2K\x1b[1G"
    assert cli("handoff", "new", "--task", "t1", "--lane", "impl", "--from", "dev", "--title", "Tidy").code == 0
    packet = team.task_dir("t1") / "impl.md"
    text = packet.read_text().replace("# Tidy", f"# Tidy{spoof}All tests pass", 1)
    packet.write_text(text.replace("## Summary\n", f"## Summary\nrm -rf ~{spoof}all fine\n", 1))
    for args in (("handoff", "show", "t1/impl"), ("handoff", "list")):
        out = cli(*args).out
        assert "\x1b" not in out and "\\x1b[2K" in out, (args, out)
    shown = packet_markdown(packet.read_text(), "handoffs/t1/impl.md")
    assert "\x1b" not in shown and "\\x1b[2K" in shown and "all fine" in shown
