"""`cowork delegate` / `cowork run`: briefs, the planner's plan, approval at the prompt (approve, edit, reject)."""
from __future__ import annotations

import io
import json
import sys

import pytest

from cowork.cli.app import main
from cowork.store import Store
from cowork.store import lanes as lanes_db
from tests.support.scripted_server import text, tool_call
from tests.support.team import DEV, PLANNER, WRITER, git, make_team


def finish(summary="done"):
    return tool_call("finish", status="done", summary=summary, checklist=[])


@pytest.fixture
def team(tmp_path, server, monkeypatch):
    monkeypatch.setenv("SCRIPTED_KEY", "test-key")
    root = make_team(tmp_path / "repo", server.url, {"planner": PLANNER, "dev": DEV, "writer": WRITER})
    return root, Store(root / ".cowork" / "state.db")


PLAN = [{"id": "one", "role": "dev", "goal": "Write one.txt"}]


def test_brief_inlines_attachments_and_task_ids_count_up(team, server, tmp_path):
    root, st = team
    note = tmp_path / "notes.txt"
    note.write_text("remember the edge case\n")
    server.script("Goal: Write one.txt", [tool_call("write_file", path="one.txt", content="1\n"), finish()])
    server.script("Goal: Write two.txt", [tool_call("write_file", path="two.txt", content="2\n"), finish()])
    assert main(["delegate", "Write one.txt", "--to", "dev", "--attach", str(note), "--yes", "-C", str(root)]) == 0
    assert main(["delegate", "Write two.txt", "--to", "dev", "--yes", "-C", str(root)]) == 0
    ids = [r["id"] for r in st.all("SELECT id FROM tasks ORDER BY created_at")]
    assert ids == ["t1-write-one-txt", "t2-write-two-txt"]
    brief = git(root, "show", "main:handoffs/t1-write-one-txt/brief.md")
    assert "to: dev" in brief and "remember the edge case" in brief and "## Attachments" in brief
    # the planner was never asked: --to makes a one-lane plan
    assert not any(r.key == "You are planner" for r in server.requests)


def test_planner_that_never_gets_it_right_fails_after_three_tries(team, server, cli):
    root, st = team
    server.script("You are planner", [tool_call("submit_plan", title="t", lanes=[{"id": "Bad Id", "role": "dev",
                                                                                   "goal": "g"}])])
    failed = cli("delegate", "Do a thing", "--yes", "-C", root)
    # exit 1, a failure: the request was good, the model's plans were not (2 is for the user's bad input)
    assert failed.code == 1 and len([r for r in server.requests if r.key == "You are planner"]) == 3
    # says whose plan it was, how often it was tried, and what to do, not only "plan: lanes.0.id: ..."
    assert "planner (openai/scripted" in failed.err and "gave no valid plan in 3 tries" in failed.err
    assert "lanes.0.id" in failed.err and "--to ROLE" in failed.err and "cowork run PLAN.md" in failed.err
    task = st.scalar("SELECT id FROM tasks")
    row = lanes_db.get_task(st, task)
    assert row["state"] == "failed" and row["error"].startswith("planning failed: planner (openai/scripted")
    assert lanes_db.list_lanes(st, task) == []


def test_reject_at_the_prompt(team, server, monkeypatch):
    root, st = team
    server.script("You are planner", [tool_call("submit_plan", title="One file", lanes=PLAN)])
    monkeypatch.setattr(sys, "stdin", io.StringIO("r\nnot now\n"))
    assert main(["delegate", "Write one file", "-C", str(root)]) == 1
    task = st.scalar("SELECT id FROM tasks")
    row = lanes_db.get_task(st, task)
    assert row["state"] == "rejected" and row["error"] == "not now"
    assert lanes_db.list_lanes(st, task) == []
    assert "plan.md" in git(root, "ls-tree", "--name-only", "main", f"handoffs/{task}/")


def test_edit_at_the_prompt_then_approve(team, server, monkeypatch):
    root, st = team
    server.script("You are planner", [tool_call("submit_plan", title="One file", lanes=PLAN)])
    server.script("Goal: Write edited.txt", [tool_call("write_file", path="edited.txt", content="e\n"), finish()])
    monkeypatch.setenv("EDITOR", "sed -i s/one.txt/edited.txt/")
    monkeypatch.setattr(sys, "stdin", io.StringIO("e\na\n"))
    assert main(["delegate", "Write a file", "-C", str(root)]) == 0
    task = st.scalar("SELECT id FROM tasks")
    assert git(root, "show", "main:edited.txt") == "e"
    assert "Write edited.txt" in git(root, "show", f"main:handoffs/{task}/plan.md")
    assert not any(r.key == "Goal: Write one.txt" for r in server.requests)


def test_no_answer_at_the_prompt_leaves_the_task_for_approve_or_reject_later(team, server, monkeypatch, cli):
    """No answer at the prompt (end of input, Ctrl-C) is bad input, and the task waits for a decision, saying how
    to give it: `cowork approve TASK` runs the committed plan, `cowork reject TASK` drops it."""
    root, st = team
    server.script("You are planner", [tool_call("submit_plan", title="One file", lanes=PLAN)] * 3)
    server.script("Goal: Write one.txt", [tool_call("write_file", path="one.txt", content="1\n"), finish()])
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    first = cli("delegate", "Write one file", "-C", root)
    task = st.scalar("SELECT id FROM tasks")
    assert first.code == 2 and f"`cowork approve {task}` runs it" in first.err
    assert lanes_db.get_task(st, task)["state"] == "awaiting-approval"
    waited = cli("wait", task, "-C", root)  # nothing would ever start it: wait says so rather than hang
    assert waited.code == 1 and "waits for its plan to be approved" in waited.err
    assert cli("reject", "t99-nope", "-C", root).code == 2
    ran = cli("approve", task, "--note", "go ahead, small change", "-C", root)
    assert ran.code == 0 and git(root, "show", "main:one.txt") == "1"
    assert "go ahead, small change" in st.events(task=task, kinds=["task.approved"])[-1]["summary"]
    assert lanes_db.get_task(st, task)["state"] == "done"
    assert cli("approve", task, "-C", root).code == 2  # done: nothing waits

    assert cli("delegate", "Write one file again", "-C", root).code == 2
    second = st.scalar("SELECT id FROM tasks ORDER BY created_at DESC LIMIT 1")
    rejected = cli("reject", second, "-C", root)
    assert rejected.code == 0 and lanes_db.get_task(st, second)["state"] == "rejected"
    assert cli("reject", second, "-C", root).code == 2

    monkeypatch.setattr(sys, "stdin", io.StringIO("r\n"))  # `r`, then no reason (end of input): rejected all the same
    assert cli("delegate", "Write one file once more", "-C", root).code == 1
    third = st.scalar("SELECT id FROM tasks ORDER BY created_at DESC LIMIT 1")
    assert lanes_db.get_task(st, third)["state"] == "rejected"


def test_a_bad_attachment_or_a_repo_without_commits_starts_no_task(tmp_path, server, monkeypatch, cli):
    monkeypatch.setenv("SCRIPTED_KEY", "test-key")
    root = make_team(tmp_path / "repo", server.url, {"planner": PLANNER, "dev": DEV})
    st = Store(root / ".cowork" / "state.db")
    missing = cli("delegate", "Read it", "--to", "dev", "--attach", tmp_path / "nope.txt", "--yes", "-C", root)
    assert missing.code == 2 and "nope.txt is not a file" in missing.err
    assert st.scalar("SELECT count(*) FROM tasks") == 0
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "-q", "-b", "main")
    (empty / "cowork.toml").write_text((root / "cowork.toml").read_text())
    (empty / "roles").mkdir()
    (empty / "roles" / "dev.yaml").write_text(DEV)
    res = cli("delegate", "Do it", "--to", "dev", "--yes", "-C", empty)
    assert res.code == 2 and "has no commit" in res.err and "first commit" in res.err and "Traceback" not in res.err
    assert Store(empty / ".cowork" / "state.db").scalar("SELECT count(*) FROM tasks") == 0


def test_a_role_whose_model_has_no_key_is_named_before_anything_is_written(tmp_path, server, monkeypatch, cli):
    """A missing key was found only once work started: a brief (and, with --to, a plan and a summary) committed on
    main and a failed task, or a lane that "crashed: ModelError". It is said up front now, naming the role; a plan
    that names such a role keeps waiting for approval."""
    monkeypatch.setenv("SCRIPTED_KEY", "test-key")
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    remote = "name: remote\nmandate: Works through a hosted model.\nmodel: anthropic/claude-sonnet-4-5\ntools: []\n"
    root = make_team(tmp_path / "repo", server.url, {"planner": PLANNER, "dev": DEV, "remote": remote})
    st = Store(root / ".cowork" / "state.db")
    head = git(root, "rev-parse", "main")

    to = cli("delegate", "Do it", "--to", "remote", "--yes", "-C", root)
    assert to.code == 1 and "role remote: model anthropic/claude-sonnet-4-5" in to.err
    assert "$ANTHROPIC_API_KEY is not set" in to.err and "fix:" in to.err and "Traceback" not in to.err
    plan_file = tmp_path / "plan.md"
    plan_file.write_text("---\ntitle: Remote\n---\n```yaml\nlanes:\n  - {id: a, role: remote, goal: x}\n```\n")
    ran = cli("run", plan_file, "--yes", "-C", root)
    assert ran.code == 1 and "role remote:" in ran.err
    said = cli("say", "@remote", "look at the login page", "-C", root)  # an idle role would get a task
    assert said.code == 1 and "role remote:" in said.err
    assert st.scalar("SELECT count(*) FROM tasks") == 0 and git(root, "rev-parse", "main") == head
    assert cli("say", "@remote", "later, then", "--no-run", "-C", root).code == 0  # only posting needs no model

    server.script("You are planner", [tool_call("submit_plan", title="Remote", lanes=[
        {"id": "a", "role": "remote", "goal": "x"}])])
    planned = cli("delegate", "Do it remotely", "--yes", "-C", root)
    task = st.scalar("SELECT id FROM tasks")
    assert planned.code == 1 and "role remote:" in planned.err and f"`cowork approve {task}`" in planned.err
    assert lanes_db.get_task(st, task)["state"] == "awaiting-approval" and lanes_db.list_lanes(st, task) == []
    again = cli("approve", task, "-C", root)
    assert again.code == 1 and "role remote:" in again.err
    assert lanes_db.get_task(st, task)["state"] == "awaiting-approval"


def test_a_model_server_on_this_machine_that_is_not_running_is_named_before_anything_is_written(
        tmp_path, server, monkeypatch, cli):
    """A local model server (vLLM, llama.cpp, Ollama) not started was found only by the planner's or the lane's
    call, after a brief was committed. Nothing listening is provable at once (the connection is refused), so it is
    said up front, naming the role, the address and where the model came from."""
    import socket

    monkeypatch.setenv("SCRIPTED_KEY", "test-key")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    local = f"name: local\nmandate: Works on a model served here.\nmodel: openai/qwen\napi_base: {dead}\ntools: []\n"
    root = make_team(tmp_path / "repo", server.url, {"planner": PLANNER, "dev": DEV, "local": local})
    st = Store(root / ".cowork" / "state.db")
    head = git(root, "rev-parse", "main")
    r = cli("delegate", "Do it", "--to", "local", "--yes", "-C", root)
    assert r.code == 1 and f"role local: nothing listens at {dead}" in r.err and "start the model server" in r.err
    assert "Traceback" not in r.err
    assert st.scalar("SELECT count(*) FROM tasks") == 0 and git(root, "rev-parse", "main") == head
    # the team's own server (the scripted one) is up: work goes ahead as ever
    server.script("Goal: Write up", [tool_call("write_file", path="up.txt", content="up\n"), finish("up")])
    assert cli("delegate", "Write up", "--to", "dev", "--yes", "-C", root).code == 0


def test_auto_approve_policy_and_lanes_json(tmp_path, server, monkeypatch, capsys):
    monkeypatch.setenv("SCRIPTED_KEY", "test-key")
    root = make_team(tmp_path / "repo", server.url, {"planner": PLANNER, "dev": DEV},
                     extra_toml="[policy]\nauto_approve_plans = true\n")
    server.script("You are planner", [text("let me think"), tool_call("submit_plan", title="One", lanes=PLAN)])
    server.script("Goal: Write one.txt", [tool_call("write_file", path="one.txt", content="1\n"), finish()])
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # no prompt may be read
    assert main(["delegate", "Write one", "-C", str(root)]) == 0
    capsys.readouterr()
    assert main(["lanes", "--json", "-C", str(root)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["lane"], r["state"], r["step"]) for r in rows] == [("one", "merged", 2)]
    assert rows[0]["tokens_in"] > 0 and rows[0]["merge_commit"]


def test_run_rejects_an_invalid_plan_file(team, tmp_path):
    root, st = team
    bad = tmp_path / "bad.md"
    bad.write_text("---\ntitle: Bad\n---\n```yaml\nlanes:\n  - {id: a, role: ghost, goal: x}\n```\n")
    assert main(["run", str(bad), "--yes", "-C", str(root)]) == 2
    assert st.scalar("SELECT count(*) FROM tasks") == 0


def test_detach_prints_the_task_id_and_wait_reports_it(team, server, capsys):
    root, st = team
    server.script("Goal: Write one.txt", [tool_call("write_file", path="one.txt", content="1\n"), finish()])
    assert main(["delegate", "Write one.txt", "--to", "dev", "--yes", "--detach", "-C", str(root)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    task = out[-1]
    assert task == "t1-write-one-txt"
    assert main(["wait", task, "--timeout", "30", "--json", "-C", str(root)]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "done"


def test_the_plan_shows_its_estimate_and_the_planner_may_only_name_team_roles(team, server, capsys):
    root, st = team
    server.script("You are planner", [tool_call("submit_plan", title="One file", lanes=PLAN)])
    server.script("Goal: Write one.txt", [tool_call("write_file", path="one.txt", content="1\n"), finish()])
    assert main(["delegate", "Write one file", "--yes", "-C", str(root)]) == 0
    out = capsys.readouterr().out
    estimates = [line for line in out.splitlines() if line.startswith("estimated cost: ~$")]
    assert len(estimates) == 1 and "1 lane(s)" in estimates[0]  # --yes: one line, no per-lane table
    assert out.index("estimated cost") < out.index("task t1-write-one-file: done")
    tools = next(r for r in server.requests if r.key == "You are planner").body["tools"]
    lanes = tools[0]["function"]["parameters"]["properties"]["lanes"]
    assert tools[0]["function"]["name"] == "submit_plan" and lanes["minItems"] == 1
    assert lanes["items"]["properties"]["role"]["enum"] == ["dev", "writer"]  # the planner itself is not a worker
    from cowork.tools.specs import SCHEMAS

    assert "enum" not in SCHEMAS["submit_plan"][1]["properties"]["lanes"]["items"]["properties"]["role"]


def test_the_estimate_is_shown_before_the_prompt_lane_by_lane(team, server, monkeypatch, capsys):
    root, st = team
    server.script("You are planner", [tool_call("submit_plan", title="One file", lanes=PLAN)])
    monkeypatch.setattr(sys, "stdin", io.StringIO("r\n\n"))
    assert main(["delegate", "Write one file", "-C", str(root)]) == 1
    out = capsys.readouterr().out
    assert "estimated cost: ~$" in out and out.index("estimated cost") < out.index("approve, edit or reject")
    assert any(line.split()[:3] == ["one", "dev", "openai/scripted"] for line in out.splitlines())


def test_a_fallback_to_the_embedded_model_is_announced_before_work_starts(team, server, tmp_path, monkeypatch, capsys):
    from cowork.engines import detect, local_model

    if not local_model.local_available()[0]:
        pytest.skip("the embedded model is not installed here")
    root, st = team
    for var in ["COWORK_MODEL", "COWORK_API_KEY", *(v for p in detect.PROVIDERS for v in p.env)]:
        monkeypatch.delenv(var, raising=False)
    toml = (root / "cowork.toml").read_text()
    (root / "cowork.toml").write_text(toml.replace('name = "openai/scripted"', "").replace(
        f'api_base = "{server.url}"', ""))
    git(root, "commit", "-qam", "no model")
    plan = tmp_path / "plan.md"
    plan.write_text("---\ntitle: One\n---\n```yaml\nlanes:\n  - {id: one, role: dev, goal: Write one.txt}\n```\n")
    monkeypatch.setattr(sys, "stdin", io.StringIO("r\n\n"))
    assert main(["run", str(plan), "-C", str(root)]) == 1  # rejected at the prompt: no model is ever called
    err = capsys.readouterr().err
    assert "will use the SmolLM2-135M (embedded offline model, weak)" in err and "dev" in err


def test_pause_and_unpause_name_the_human_from_the_team_repo(team, tmp_path, monkeypatch):
    root, st = team
    monkeypatch.chdir(tmp_path)  # not the team's repo: its git user.name (Tester) must still be used
    monkeypatch.setenv("USER", "someone-else")
    assert main(["pause", "-C", str(root)]) == 0
    assert st.flag("pause")["set_by"] == "human:Tester"
    assert main(["unpause", "-C", str(root)]) == 0
    assert [e["actor"] for e in st.events(kinds=["pause.set", "pause.cleared"])] == ["human:Tester"] * 2


def test_pause_names_what_exists_and_unpause_says_what_still_holds(team, server, cli):
    root, st = team
    assert cli("pause", "--task", "t9-typo", "-C", root).code == 2  # a typo pauses nothing, silently or not
    server.script("Goal: Write one.txt", [tool_call("write_file", path="one.txt", content="1\n"), finish()])
    started = cli("delegate", "Write one.txt", "--to", "dev", "--yes", "--detach", "-C", root)
    task = started.out.strip().splitlines()[-1]
    assert cli("pause", "--lane", f"{task}/nolane", "-C", root).code == 2
    assert cli("pause", "--task", task, "-C", root).code == 0
    res = cli("unpause", "-C", root)  # the whole team was not paused, but the task is: say so, and how
    assert "the whole team was not paused" in res.out and f"still paused: {task} (`cowork unpause --task {task}`)" in res.out
    status = cli("status", "-C", root)
    assert f"paused  {task}" in status.out and "tasks     1 running" in status.out
    assert cli("unpause", "--task", task, "-C", root).code == 0
    assert cli("wait", task, "--timeout", "30", "-C", root).code == 0
    assert cli("lanes", "--task", "t9-typo", "-C", root).code == 2 and cli("log", "--task", "t9-typo", "-C", root).code == 2
    assert cli("inbox", "--role", "ghost", "-C", root).code == 2


def test_a_planned_delegate_prints_no_library_noise(team, server):
    """The planner's event loop, then the runner's: litellm's logging worker complains about the change unless
    cowork quiets its internal warnings (the run itself says what happened)."""
    import os
    import subprocess

    root, st = team
    server.script("You are planner", [tool_call("submit_plan", title="One file", lanes=PLAN)])
    server.script("Goal: Write one.txt", [tool_call("write_file", path="one.txt", content="1\n"), finish()])
    proc = subprocess.run([sys.executable, "-m", "cowork", "delegate", "Write one file", "--yes", "-C", str(root)],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "SCRIPTED_KEY": "k"})
    assert proc.returncode == 0, proc.stderr
    assert "LiteLLM" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_a_plan_is_decided_once_whoever_decides_first(team, server):
    """`cowork reject` from another terminal while the prompt is open, or while the planner still works: the plan
    stays rejected; approving it afterwards (the prompt's `a`, `cowork approve`) is refused."""
    from cowork.config import load_settings
    from cowork.errors import BadInput
    from cowork.roles import load_roles
    from cowork.runner import planning
    from cowork.workspace import Workspace

    root, st = team
    ws = Workspace(root)
    settings = load_settings(ws.config_path)
    roles = load_roles(ws.roles_dir, root)
    draft = planning.create_task(ws, st, settings, roles, "Write one file", to="dev")
    plan = planning.one_lane_plan(draft.task, draft.title, "dev", "Write one.txt")
    planning.reject(st, draft.task, reason="changed my mind")  # while the planner still works
    with pytest.raises(BadInput, match="rejected now"):
        planning.save_plan(ws, st, settings, draft.task, plan)
    assert lanes_db.get_task(st, draft.task)["state"] == "rejected"

    second = planning.create_task(ws, st, settings, roles, "Write one file again", to="dev")
    plan = planning.one_lane_plan(second.task, second.title, "dev", "Write one.txt")
    planning.save_plan(ws, st, settings, second.task, plan)
    planning.reject(st, second.task)  # another terminal, while the prompt waits
    with pytest.raises(BadInput, match="decided elsewhere"):
        planning.approve(st, second.task, plan)
    assert lanes_db.list_lanes(st, second.task) == [] and lanes_db.get_task(st, second.task)["state"] == "rejected"
