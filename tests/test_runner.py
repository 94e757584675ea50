"""The runner end to end: real git, real SQLite, the real litellm path against the scripted server."""
from __future__ import annotations

import json
import subprocess
import threading
import time

import pytest

from cowork.cli.app import main
from cowork.procs import pid_alive
from cowork.runner import control
from cowork.runner.launch import run_here
from cowork.store import Store
from cowork.store import lanes as lanes_db
from cowork.workspace import Workspace
from tests.support.scripted_server import delay, text, tool_call
from tests.support.team import DEV, PLANNER, REVIEWER, WRITER, git, make_team


def finish(summary: str = "done", status: str = "done", **kw):
    return tool_call("finish", status=status, summary=summary, checklist=[{"item": summary, "done": True}], **kw)


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.setenv("SCRIPTED_KEY", "test-key")
    monkeypatch.delenv("COWORK_ROOT", raising=False)


def team(tmp_path, server, roles=None, **kw):
    root = make_team(tmp_path / "repo", server.url, roles or {"planner": PLANNER, "dev": DEV}, **kw)
    return root, Workspace(root), Store(root / ".cowork" / "state.db")


def lane(st, task, lane_id):
    return lanes_db.get_lane(st, task, lane_id)


def only_task(st) -> str:
    return st.scalar("SELECT id FROM tasks ORDER BY created_at DESC LIMIT 1")


def approved_task(ws, st, goal: str, *, plan_file=None, to: str | None = None) -> str:
    """A task briefed, planned and approved as `cowork delegate --yes` leaves it, with no runner started yet: the
    plan from `plan_file`, else one `to` (default dev) lane with `goal`. Returns the task id."""
    from cowork import plan as plan_mod
    from cowork.config import load_settings
    from cowork.roles import load_roles
    from cowork.runner import planning

    settings, roles = load_settings(ws.config_path), load_roles(ws.roles_dir, ws.root)
    draft = planning.create_task(ws, st, settings, roles, goal, to=to)
    plan = (plan_mod.load(plan_file, set(roles.names())) if plan_file is not None
            else planning.one_lane_plan(draft.task, draft.title, to or "dev", goal))
    planning.save_plan(ws, st, settings, draft.task, plan)
    planning.approve(st, draft.task, plan)
    return draft.task


def test_delegate_to_role_runs_one_lane_to_main(tmp_path, server, capsys):
    root, ws, st = team(tmp_path, server)
    server.script("Goal: Add a hello file", [tool_call("write_file", path="hello.txt", content="hi\n"),
                                             finish("wrote hello.txt", artifacts=["hello.txt"])])
    assert main(["delegate", "Add a hello file", "--to", "dev", "--yes", "-C", str(root)]) == 0
    task = only_task(st)
    assert task.startswith("t1-add-a-hello-file")
    assert git(root, "show", "main:hello.txt") == "hi"
    packet = git(root, "show", f"main:handoffs/{task}/work.md")
    assert "from: dev" in packet and "wrote hello.txt" in packet and "- [x] wrote hello.txt" in packet
    assert "## work (dev): merged" in git(root, "show", f"main:handoffs/{task}/summary.md")
    assert "Add a hello file" in git(root, "show", f"main:handoffs/{task}/brief.md")
    # the user's clean checkout of main was fast-forwarded, never left behind
    assert (root / "hello.txt").read_text() == "hi\n" and git(root, "status", "--porcelain") == ""
    row = lane(st, task, "work")
    assert row["state"] == "merged" and row["merge_commit"] and row["step_no"] == 2 and row["tokens_in"] > 0
    trailers = git(root, "log", "-1", "--format=%B", row["merge_commit"])
    assert f"Cowork-Task: {task}" in trailers and "Cowork-Lane: work" in trailers
    kinds = [e["kind"] for e in st.events(task=task)]
    for k in ("task.created", "lane.state", "model.call", "tool.call", "merge.done", "task.done"):
        assert k in kinds
    assert lanes_db.get_task(st, task)["state"] == "done"


def test_plan_parallel_lanes_and_dependency_order(tmp_path, server):
    root, ws, st = team(tmp_path, server, {"planner": PLANNER, "dev": DEV, "writer": WRITER})
    good = [{"id": "api", "role": "dev", "goal": "Write api.txt"},
            {"id": "docs", "role": "writer", "goal": "Write docs.txt"},
            {"id": "client", "role": "dev", "goal": "Write client.txt using api.txt", "depends_on": ["api"]}]
    bad = [{"id": "x", "role": "nobody", "goal": "g"}]
    server.script("You are planner", [tool_call("submit_plan", title="API, docs and client", lanes=bad),
                                      tool_call("submit_plan", title="API, docs and client", lanes=good)])
    server.script("Goal: Write api.txt", [delay(0.3, tool_call("write_file", path="api.txt", content="API v1\n")),
                                          finish("api")])
    server.script("Goal: Write docs.txt", [tool_call("write_file", path="docs.txt", content="docs\n"),
                                           finish("docs")])
    server.script("Goal: Write client.txt", [tool_call("read_file", path="api.txt"),
                                             tool_call("write_file", path="client.txt", content="uses API v1\n"),
                                             finish("client")])
    assert main(["delegate", "Build the API, its docs and a client", "--yes", "-C", str(root)]) == 0
    task = only_task(st)
    for f, want in (("api.txt", "API v1"), ("docs.txt", "docs"), ("client.txt", "uses API v1")):
        assert git(root, "show", f"main:{f}") == want
    # the bad plan went back to the planner with the error
    planner_reqs = [r for r in server.requests if r.key == "You are planner"]
    assert len(planner_reqs) == 2 and "unknown role 'nobody'" in planner_reqs[1].text
    assert "plan.md" in git(root, "ls-tree", "--name-only", "main", f"handoffs/{task}/")
    # client started only after api merged, and saw api's file in its worktree
    api_merged = next(e["id"] for e in st.events(task=task, lane="api", kinds=["lane.state"])
                      if e["data"]["state"] == "merged")
    client_started = next(e["id"] for e in st.events(task=task, lane="client", kinds=["lane.state"])
                          if e["data"]["state"] == "running")
    assert client_started > api_merged
    client_reqs = [r for r in server.requests if r.key == "Goal: Write client.txt"]
    assert "API v1" in client_reqs[1].text
    # api and docs ran in parallel: docs started before api finished its first (delayed) call
    docs_started = next(e["id"] for e in st.events(task=task, lane="docs", kinds=["lane.state"])
                        if e["data"]["state"] == "running")
    assert docs_started < api_merged


def test_checks_fail_then_pass(tmp_path, server):
    dev = DEV + "checks: [\"test -f ok.txt\"]\n"
    root, ws, st = team(tmp_path, server, {"planner": PLANNER, "dev": dev})
    server.script("Goal: Make ok", [finish("first try"),
                                    tool_call("write_file", path="ok.txt", content="ok\n"),
                                    finish("fixed")])
    assert main(["delegate", "Make ok", "--to", "dev", "--yes", "-C", str(root)]) == 0
    task = only_task(st)
    row = lane(st, task, "work")
    assert row["state"] == "merged" and row["check_failures"] == 1
    reqs = [r for r in server.requests if r.key == "Goal: Make ok"]
    assert "The check `test -f ok.txt` failed" in reqs[1].text
    kinds = [e["kind"] for e in st.events(task=task, lane="work")]
    assert kinds.count("check.failed") == 1 and kinds.count("check.passed") == 1


def test_checks_exhausted_fail_the_lane_and_task(tmp_path, server):
    dev = DEV + "checks: [\"false\"]\n"
    root, ws, st = team(tmp_path, server, {"planner": PLANNER, "dev": dev},
                        extra_toml="[policy]\nmax_check_retries = 1\n")
    server.script("Goal: Never passes", [finish("try")])
    assert main(["delegate", "Never passes", "--to", "dev", "--yes", "-C", str(root)]) == 1
    task = only_task(st)
    row = lane(st, task, "work")
    assert row["state"] == "failed" and "still failing" in row["error"]
    assert lanes_db.get_task(st, task)["state"] == "failed"
    assert any(e["kind"] == "lane.escalated" for e in st.events(task=task))


def test_a_check_past_its_timeout_fails_and_the_limits_come_from_policy(tmp_path, server):
    """`policy.check_timeout_s` bounds one run of a role's check; `policy.max_review_rounds` how often review may
    send a lane back before a human decides."""
    dev = DEV + "checks: [\"sleep 31.7; echo never\"]\n"
    root, ws, st = team(tmp_path, server, {"planner": PLANNER, "dev": dev},
                        extra_toml="[policy]\nmax_check_retries = 0\ncheck_timeout_s = 0.5\n")
    server.script("Goal: Hang a check", [finish("try")])
    started = time.monotonic()
    assert main(["delegate", "Hang a check", "--to", "dev", "--yes", "-C", str(root)]) == 1
    assert time.monotonic() - started < 20
    task = only_task(st)
    failed = st.events(task=task, kinds=["check.failed"])
    assert len(failed) == 1 and failed[0]["data"]["exit"] == -1 and "timed out after 0.5s" in failed[0]["data"]["output"]
    assert subprocess.run(["pgrep", "-f", "sleep 31.7"], capture_output=True).returncode == 1  # no orphan left

    reviewed = DEV + "review_by: reviewer\n"
    root, ws, st = team(tmp_path / "two", server, {"planner": PLANNER, "dev": reviewed, "reviewer": REVIEWER},
                        extra_toml="[policy]\nmax_review_rounds = 1\n")
    server.script("Goal: Write g", [tool_call("write_file", path="g.txt", content="v1\n"), finish("v1")])
    server.script("Lane: work-review\n", [finish("not yet", status="needs-review")])
    assert main(["delegate", "Write g", "--to", "dev", "--yes", "-C", str(root)]) == 1
    row = lane(st, only_task(st), "work")
    assert row["state"] == "blocked" and "review sent it back 1 time: a human decides" in row["error"]


def test_review_sends_back_then_passes(tmp_path, server):
    dev = DEV + "review_by: reviewer\n"
    root, ws, st = team(tmp_path, server, {"planner": PLANNER, "dev": dev, "reviewer": REVIEWER})
    server.script("Goal: Write f", [tool_call("write_file", path="f.txt", content="v1\n"), finish("v1"),
                                    tool_call("write_file", path="f.txt", content="v2\n"), finish("v2")])
    server.script("Lane: work-review\n", [tool_call("git_diff"),
                                          finish("needs a v2", status="needs-review", next=["write v2"])])
    server.script("Lane: work-review-2\n", [finish("looks good")])
    assert main(["delegate", "Write f", "--to", "dev", "--yes", "-C", str(root)]) == 0
    task = only_task(st)
    assert git(root, "show", "main:f.txt") == "v2"
    assert lane(st, task, "work-review")["state"] == "done"
    assert lane(st, task, "work-review-2")["state"] == "done"
    dev_reqs = [r for r in server.requests if r.key == "Goal: Write f"]
    assert "needs a v2" in dev_reqs[2].text
    first_review = [r for r in server.requests if r.key == "Lane: work-review\n"]
    assert "+v1" in first_review[0].text  # the reviewer's prompt carries the lane's diff and packet
    # both review packets are committed next to the lane's
    names = git(root, "ls-tree", "--name-only", "main", f"handoffs/{task}/")
    assert "work-review.md" in names and "work-review-2.md" in names


def _two_edits(tmp_path, server) -> tuple:
    """A team and a plan of two lanes writing shared.txt at once (a: dev, b: writer); a's script is set.
    Returns (root, ws, store, plan file)."""
    root, ws, st = team(tmp_path, server, {"planner": PLANNER, "dev": DEV, "writer": WRITER})
    plan = tmp_path / "plan.md"
    plan.write_text("---\ntitle: Two edits\n---\n```yaml\nlanes:\n"
                    "  - {id: a, role: dev, goal: Put A in shared.txt}\n"
                    "  - {id: b, role: writer, goal: Put B in shared.txt}\n```\n")
    server.script("Goal: Put A", [tool_call("write_file", path="shared.txt", content="A\n"), finish("A")])
    return root, ws, st, plan


def test_conflict_goes_back_to_its_lane_then_resolves(tmp_path, server):
    root, ws, st, plan = _two_edits(tmp_path, server)

    def resolve(body):
        msgs = json.dumps(body["messages"])
        assert "conflict markers" in msgs
        return tool_call("write_file", path="shared.txt", content="A\nB\n")

    server.script("Goal: Put B", [delay(0.6, tool_call("write_file", path="shared.txt", content="B\n")),
                                  finish("B"), resolve, finish("merged A and B")])
    assert main(["run", str(plan), "--yes", "-C", str(root)]) == 0
    task = only_task(st)
    assert git(root, "show", "main:shared.txt") == "A\nB"
    b = lane(st, task, "b")
    assert b["state"] == "merged" and b["conflict_returns"] == 1
    assert any(e["kind"] == "merge.conflict" for e in st.events(task=task, lane="b"))


def test_a_lane_cannot_finish_with_the_conflict_markers_in(tmp_path, server):
    """Sent back for a conflict, an agent that finishes without resolving it fails the markers check (file and line
    in its next prompt), resolves, and only then merges: main never holds a marker."""
    root, ws, st, plan = _two_edits(tmp_path, server)

    def resolve(body):
        assert "shared.txt:1" in json.dumps(body["messages"])  # the check's output names file and line
        return tool_call("write_file", path="shared.txt", content="A\nB\n")

    server.script("Goal: Put B", [delay(0.6, tool_call("write_file", path="shared.txt", content="B\n")),
                                  finish("B"), finish("done, I think"), resolve, finish("merged A and B")])
    assert main(["run", str(plan), "--yes", "-C", str(root)]) == 0
    task = only_task(st)
    assert git(root, "show", "main:shared.txt") == "A\nB"
    for sha in git(root, "rev-list", "--first-parent", "main").split():  # no state main was ever in has one
        assert subprocess.run(["git", "grep", "-q", "<<<<<<<", sha], cwd=root).returncode == 1, sha
    b = lane(st, task, "b")
    assert b["state"] == "merged" and b["conflict_returns"] == 1 and b["check_failures"] == 1
    failed = [e for e in st.events(task=task, lane="b", kinds=["check.failed"])]
    assert len(failed) == 1 and failed[0]["data"]["check"] == "no conflict markers left"


def test_with_merge_auto_off_lanes_wait_for_a_human_to_merge_them(tmp_path, server):
    root, ws, st = team(tmp_path, server, extra_toml="[merge]\nauto = false\n")
    server.script("Goal: Write a.txt", [tool_call("write_file", path="a.txt", content="a\n"), finish("a")])
    assert main(["delegate", "Write a.txt", "--to", "dev", "--yes", "--detach", "-C", str(root)]) == 0
    task = only_task(st)
    deadline = time.time() + 30
    while not st.events(task=task, kinds=["merge.waiting"]) and time.time() < deadline:
        time.sleep(0.05)
    told = st.events(task=task, kinds=["merge.waiting"])
    assert len(told) == 1 and f"`cowork merge {task}/work`" in told[0]["summary"]
    time.sleep(0.5)  # the runner goes on polling: it merges nothing by itself, and says it once
    assert lane(st, task, "work")["state"] == "merge-queue" and "a.txt" not in git(root, "ls-tree", "main")
    assert len(st.events(task=task, kinds=["merge.waiting"])) == 1
    assert main(["merge", "--all", "-C", str(root)]) == 0
    assert main(["wait", task, "--timeout", "20", "-C", str(root)]) == 0
    assert git(root, "show", "main:a.txt") == "a" and lane(st, task, "work")["state"] == "merged"


def test_a_failed_lane_retried_by_a_human_picks_up_its_work_and_its_task_ends_done(tmp_path, server, capsys):
    """`cowork retry TASK/LANE --note`: the lane resumes its own conversation with the note (its earlier work kept),
    the lane cancelled for want of it runs too, and the task that had failed ends done."""
    from tests.support.scripted_server import error

    root, ws, st = team(tmp_path, server, {"planner": PLANNER, "dev": DEV, "writer": WRITER})
    plan = tmp_path / "plan.md"
    plan.write_text("---\ntitle: Two steps\n---\n```yaml\nlanes:\n"
                    "  - {id: a, role: dev, goal: Write a.txt}\n"
                    "  - {id: b, role: writer, goal: Write b.txt, depends_on: [a]}\n```\n")

    asked = {"n": 0}

    def second(body):  # refused the first time; after the retry, the note is in the conversation
        asked["n"] += 1
        if asked["n"] == 1:
            return error(400, "bad request: the provider refused")
        said = json.dumps(body["messages"])
        assert "sent this lane back" in said and "mind the newline" in said and "bad request" in said
        return finish("a, at last")

    server.script("Goal: Write a.txt", [tool_call("write_file", path="a.txt", content="a\n"), second])
    server.script("Goal: Write b.txt", [tool_call("write_file", path="b.txt", content="b\n"), finish("b")])
    assert main(["run", str(plan), "--yes", "-C", str(root)]) == 1
    task = only_task(st)
    assert lane(st, task, "a")["state"] == "failed" and lane(st, task, "b")["state"] == "cancelled"
    capsys.readouterr()
    assert main(["retry", f"{task}/a", "--note", "mind the newline", "-C", str(root)]) == 0
    assert f"{task}/a goes back to its role, with b" in capsys.readouterr().out
    assert git(root, "show", "main:a.txt") == "a" and git(root, "show", "main:b.txt") == "b"
    assert lanes_db.get_task(st, task)["state"] == "done"
    writes = [r for r in server.requests if r.key == "Goal: Write a.txt"]
    assert len(writes) == 3  # the write was not redone: the lane went on from its journal
    assert main(["retry", f"{task}/a", "-C", str(root)]) == 2  # merged: nothing to retry


def test_a_lane_retried_while_its_task_closes_reopens_the_task(tmp_path, server):
    """`cowork retry` while the runner writes the failed task's summary (here: a slow cheap model) must not be lost:
    the close sees the lane back in the queue, leaves the task running, and the runner runs the lane to the end."""
    from tests.support.scripted_server import error
    from cowork.runner.tasks import retry_lane

    root, ws, st = team(tmp_path, server, extra_toml='cheap = "openai/cheapo"\n')
    asked = {"n": 0}

    def first(body):
        asked["n"] += 1
        return error(400, "bad request") if asked["n"] == 1 else tool_call("write_file", path="a.txt", content="a\n")

    server.script("Goal: Write a.txt", [first, finish("a")])
    server.script("You summarise a finished task", [delay(1.5, text("It went."))] * 3)
    task = approved_task(ws, st, "Write a.txt")
    result: dict = {}
    t = threading.Thread(target=lambda: result.update(run_here(ws, [task])), daemon=True)
    t.start()
    deadline = time.time() + 30
    while not any(r.key == "You summarise a finished task" for r in server.requests) and time.time() < deadline:
        time.sleep(0.02)
    assert lane(st, task, "work")["state"] == "failed"  # the close is under way, its overview call in flight
    retry_lane(st, task, "work", by="human:test")
    t.join(60)
    assert result == {task: "done"} and git(root, "show", "main:a.txt") == "a"
    assert st.events(task=task, kinds=["task.reopened"])


def test_forcing_a_failed_lane_in_ends_its_task_done_and_retry_refuses_what_would_stop_at_once(tmp_path, server,
                                                                                                  capsys):
    dev = DEV + 'checks: ["false"]\nbudget: {max_steps: 2}\n'
    root, ws, st = team(tmp_path, server, {"planner": PLANNER, "dev": dev, "writer": WRITER},
                        extra_toml="[policy]\nmax_check_retries = 0\n")
    plan = tmp_path / "plan.md"
    plan.write_text("---\ntitle: Two steps\n---\n```yaml\nlanes:\n"
                    "  - {id: a, role: dev, goal: Write a.txt}\n"
                    "  - {id: b, role: writer, goal: Write b.txt, depends_on: [a]}\n```\n")
    server.script("Goal: Write a.txt", [tool_call("write_file", path="a.txt", content="a\n"), finish("a")])
    assert main(["run", str(plan), "--yes", "-C", str(root)]) == 1
    task = only_task(st)
    assert lane(st, task, "a")["state"] == "failed" and lane(st, task, "b")["state"] == "cancelled"
    capsys.readouterr()
    assert main(["retry", f"{task}/b", "-C", str(root)]) == 2  # it waits on a: retrying b alone would undo itself
    assert f"`cowork retry {task}/a`" in capsys.readouterr().err
    assert main(["retry", f"{task}/a", "-C", str(root)]) == 2  # its 2 model calls are spent: raise the cap first
    assert "step cap" in capsys.readouterr().err and lane(st, task, "a")["state"] == "failed"
    assert main(["merge", f"{task}/b", "--force", "-C", str(root)]) == 2  # never ran: no branch, and left as it was
    assert lane(st, task, "b")["state"] == "cancelled"
    capsys.readouterr()
    assert main(["merge", f"{task}/a", "--force", "-C", str(root)]) == 0
    assert git(root, "show", "main:a.txt") == "a" and lane(st, task, "a")["state"] == "merged"
    # b never ran, so the task is not done: it stays failed
    assert lanes_db.get_task(st, task)["state"] == "failed"

    server.script("Goal: Write c.txt", [tool_call("write_file", path="c.txt", content="c\n"), finish("c")])
    assert main(["delegate", "Write c.txt", "--to", "dev", "--yes", "-C", str(root)]) == 1
    one = only_task(st)
    capsys.readouterr()
    assert main(["merge", f"{one}/work", "--force", "-C", str(root)]) == 0  # its only lane: the task is done after all
    assert f"task {one}: done" in capsys.readouterr().out and lanes_db.get_task(st, one)["state"] == "done"
    assert "done" in git(root, "log", "-1", "--format=%s", "main", "--", f"handoffs/{one}/summary.md")


def test_pause_holds_every_lane(tmp_path, server):
    root, ws, st = team(tmp_path, server, {"planner": PLANNER, "dev": DEV, "writer": WRITER})
    plan = tmp_path / "plan.md"
    plan.write_text("---\ntitle: Two lanes\n---\n```yaml\nlanes:\n"
                    "  - {id: a, role: dev, goal: Write a.txt}\n"
                    "  - {id: b, role: writer, goal: Write b.txt}\n```\n")
    server.script("Goal: Write a.txt", [delay(0.5, tool_call("write_file", path="a.txt", content="a\n")),
                                        finish("a")])
    server.script("Goal: Write b.txt", [delay(0.5, tool_call("write_file", path="b.txt", content="b\n")),
                                        finish("b")])
    assert main(["run", str(plan), "--yes", "--detach", "-C", str(root)]) == 0
    task = only_task(st)
    deadline = time.time() + 30  # a detached runner starts slowly on a loaded machine
    while len(server.requests) < 2 and time.time() < deadline:
        time.sleep(0.02)
    assert len(server.requests) == 2  # both lanes' first calls are in flight
    assert main(["pause", "--reason", "lunch", "-C", str(root)]) == 0
    time.sleep(1.5)  # in-flight replies land; nothing new may start
    assert len(server.requests) == 2
    states = {r["id"]: r["state"] for r in lanes_db.list_lanes(st, task)}
    assert states == {"a": "paused", "b": "paused"}
    assert not (ws.worktrees_dir / task / "a" / "a.txt").exists()  # no tool ran while paused
    assert main(["unpause", "-C", str(root)]) == 0
    assert main(["wait", task, "--timeout", "20", "-C", str(root)]) == 0
    assert git(root, "show", "main:a.txt") == "a" and git(root, "show", "main:b.txt") == "b"


def test_lane_pause_holds_only_that_lane(tmp_path, server):
    root, ws, st = team(tmp_path, server, {"planner": PLANNER, "dev": DEV, "writer": WRITER})
    plan = tmp_path / "plan.md"
    plan.write_text("---\ntitle: Two lanes\n---\n```yaml\nlanes:\n"
                    "  - {id: a, role: dev, goal: Write a.txt}\n"
                    "  - {id: b, role: writer, goal: Write b.txt}\n```\n")
    server.script("Goal: Write a.txt", [tool_call("write_file", path="a.txt", content="a\n"), finish("a")])
    server.script("Goal: Write b.txt", [tool_call("write_file", path="b.txt", content="b\n"), finish("b")])
    # approve the plan but pause lane b before any runner starts
    task = approved_task(ws, st, "Two lanes", plan_file=plan)
    control.pause(st, by="human:test", task=task, lane="b")
    done = threading.Event()
    result = {}
    t = threading.Thread(target=lambda: (result.update(run_here(ws, [task])), done.set()), daemon=True)
    t.start()
    deadline = time.time() + 10
    while lane(st, task, "a")["state"] != "merged" and time.time() < deadline:
        time.sleep(0.05)
    assert lane(st, task, "a")["state"] == "merged"
    assert lane(st, task, "b")["state"] == "queued"
    assert not any(r.key == "Goal: Write b.txt" for r in server.requests)
    control.unpause(st, by="human:test", task=task, lane="b")
    assert done.wait(15) and result == {task: "done"}


def test_revert_a_merged_lane_through_the_cli(tmp_path, server):
    root, ws, st = team(tmp_path, server)
    server.script("Goal: Add notes", [tool_call("write_file", path="notes.txt", content="n\n"), finish("notes")])
    assert main(["delegate", "Add notes", "--to", "dev", "--yes", "-C", str(root)]) == 0
    task = only_task(st)
    assert git(root, "show", "main:notes.txt") == "n"
    assert main(["revert", f"{task}/work", "-C", str(root)]) == 0
    assert "notes.txt" not in git(root, "ls-tree", "--name-only", "main")
    assert not (root / "notes.txt").exists()  # the clean checkout followed main
    assert any(e["kind"] == "merge.reverted" for e in st.events(task=task))


def test_escalation_reaches_the_channel(tmp_path, server):
    dev = DEV + "checks: [\"false\"]\nescalate_to: planner\n"
    root, ws, st = team(tmp_path, server, {"planner": PLANNER, "dev": dev},
                        extra_toml="[policy]\nmax_check_retries = 0\n")
    server.script("Goal: Hopeless", [finish("try")])
    assert main(["delegate", "Hopeless", "--to", "dev", "--yes", "-C", str(root)]) == 1
    msg = st.one("SELECT * FROM messages WHERE kind='escalate'")
    assert msg["to_role"] == "planner" and "still failing" in msg["body"]


def test_ask_and_delegate_add_lanes_while_the_task_runs(tmp_path, server):
    dev = DEV.replace("tools: [read_file, write_file, list_files]", "tools: [read_file, write_file, ask, delegate]")
    root, ws, st = team(tmp_path, server, {"planner": PLANNER, "dev": dev, "writer": WRITER}, concurrency=1)
    server.script("Goal: Name the thing", [tool_call("ask", role="writer", question="What should we call it?"),
                                           tool_call("write_file", path="name.txt", content="Zed\n"),
                                           tool_call("delegate", role="writer", goal="Write docs.md about Zed"),
                                           finish("named it")])
    server.script("Answer this question from dev", [finish("Call it Zed")])
    server.script("Write docs.md about Zed", [tool_call("write_file", path="docs.md", content="# Zed\n"),
                                              finish("docs")])
    assert main(["delegate", "Name the thing", "--to", "dev", "--yes", "-C", str(root)]) == 0
    task = only_task(st)
    kinds = {r["kind"]: r for r in lanes_db.list_lanes(st, task)}
    assert kinds["consult"]["state"] == "done" and kinds["delegated"]["state"] == "merged"
    assert git(root, "show", "main:docs.md") == "# Zed" and git(root, "show", "main:name.txt") == "Zed"
    dev_reqs = [r for r in server.requests if r.key == "Goal: Name the thing"]
    assert "Call it Zed" in dev_reqs[1].text  # the consult lane ran although the one slot was taken by the asker


def test_a_lane_whose_dependency_was_reverted_does_not_start(tmp_path, server):
    """A human reverted a lane before the lane built on it started: its work is gone from main, so the dependent
    lane is cancelled (no model call), and the task ends failed rather than done."""
    root, ws, st = team(tmp_path, server)
    lanes_db.create_task(st, "t1-after-revert", "after a revert", state="running")
    lanes_db.add_lane(st, "t1-after-revert", "base", "dev", "Goal: base work")
    lanes_db.add_lane(st, "t1-after-revert", "next", "dev", "Goal: build on base", depends_on=["base"])
    lanes_db.set_lane_state(st, "t1-after-revert", "base", "reverted", actor="human:test")
    assert run_here(ws, ["t1-after-revert"]) == {"t1-after-revert": "failed"}
    nxt = lane(st, "t1-after-revert", "next")
    assert nxt["state"] == "cancelled" and not server.requests
    assert "dependency base did not merge" in st.events(task="t1-after-revert", kinds=["lane.state"])[-1]["summary"]
    from cowork.errors import BadInput
    from cowork.runner.tasks import retry_lane

    with pytest.raises(BadInput, match="builds on base, which was reverted"):  # it would be cancelled again at once
        retry_lane(st, "t1-after-revert", "next", by="human:test")


def test_a_lane_at_its_budget_cap_waits_for_a_human_then_finishes(tmp_path, server):
    dev = DEV + "budget: {tokens_per_task: 500}\n"
    root, ws, st = team(tmp_path, server, {"planner": PLANNER, "dev": dev})
    server.script("Goal: Spend", [tool_call("write_file", path="s.txt", content="s\n"), finish("spent")])
    from cowork.team import budgets

    task = approved_task(ws, st, "Spend", to="dev")
    result = {}
    t = threading.Thread(target=lambda: result.update(run_here(ws, [task])), daemon=True)
    t.start()
    deadline = time.time() + 15
    while not st.events(task=task, kinds=["task.waiting"]) and time.time() < deadline:
        time.sleep(0.05)
    row = lane(st, task, "work")
    assert row["state"] == "blocked" and row["error"].startswith("budget exceeded: ")
    into_blocked = [e for e in st.events(task=task, kinds=["lane.state"]) if e["data"]["state"] == "blocked"]
    assert len(into_blocked) == 1, [e["summary"] for e in into_blocked]  # said once, not "blocked -> blocked" again
    assert t.is_alive() and lanes_db.get_task(st, task)["state"] == "running"  # open, waiting for a human
    assert len([r for r in server.requests if r.key == "Goal: Spend"]) == 1
    budgets.raise_cap(st, by="human:test", task=task, tokens=100_000)
    t.join(15)
    assert result == {task: "done"} and git(root, "show", "main:s.txt") == "s"


def test_merged_lanes_worktrees_are_removed_failed_ones_kept(tmp_path, server):
    root, ws, st = team(tmp_path, server, {"planner": PLANNER, "dev": DEV, "writer": WRITER})
    plan = tmp_path / "plan.md"
    plan.write_text("---\ntitle: One good one bad\n---\n```yaml\nlanes:\n"
                    "  - {id: good, role: dev, goal: Write good.txt}\n"
                    "  - {id: bad, role: writer, goal: Give up}\n```\n")
    server.script("Goal: Write good.txt", [tool_call("write_file", path="good.txt", content="g\n"), finish("good")])
    server.script("Goal: Give up", [finish("cannot", status="failed")])
    assert main(["run", str(plan), "--yes", "-C", str(root)]) == 1
    task = only_task(st)
    assert not (ws.worktrees_dir / task / "good").exists()
    assert (ws.worktrees_dir / task / "bad").is_dir()
    assert git(root, "rev-parse", "--verify", f"cowork/{task}/good")  # the branch stays


def test_an_overdue_approval_expires_while_the_runner_runs(tmp_path, server):
    """An approval no gateway waits on (an agent's MCP server asked, then went quiet) still expires: the runner
    escalates it and pauses the lane."""
    import sys

    agent = tmp_path / "agent.py"
    agent.write_text(
        "import os, time\n"
        "from cowork.store import Store\n"
        "from cowork.team import approvals\n"
        f"st = Store({str(tmp_path / 'repo' / '.cowork' / 'state.db')!r})\n"
        "aid = approvals.request(st, task=os.environ['COWORK_TASK'], lane=os.environ['COWORK_LANE'], role='dev',\n"
        "                        tool='run', action={'command': 'deploy'}, why='ship it', timeout_s=0.3)\n"
        "deadline = time.time() + 12\n"
        "while approvals.get(st, aid)['state'] == 'pending' and time.time() < deadline:\n"
        "    time.sleep(0.1)\n"
        "time.sleep(1.5)\n"  # an agent keeps working a moment: the lane's pause stops it here
        "open('out.txt', 'w').write(approvals.get(st, aid)['state'] + '\\n')\n")
    dev = ("name: dev\nmandate: Implements code changes on its lane's branch.\nengine: command\nescalate_to: lead\n"
           f"command: [{sys.executable}, {agent}, '{{goal}}']\n")
    lead = "name: lead\nmandate: Decides what the team does when a lane is stuck.\ntools: []\n"
    root, ws, st = team(tmp_path, server, {"planner": PLANNER, "dev": dev, "lead": lead},
                        extra_toml="[policy]\napproval_timeout_s = 0.3\n")
    result = {}
    t = threading.Thread(target=lambda: result.update(rc=main(["delegate", "Ship it", "--to", "dev", "--yes",
                                                                "-C", str(root)])), daemon=True)
    t.start()
    deadline = time.time() + 10
    while not st.one("SELECT 1 FROM approvals WHERE state='expired'") and time.time() < deadline:
        time.sleep(0.05)
    row = st.one("SELECT * FROM approvals")
    assert row is not None and row["state"] == "expired" and row["decided_by"] == "cowork"
    task = only_task(st)
    assert control.paused(st, task, "work")["key"] == f"pause:{task}/work"
    esc = st.one("SELECT * FROM messages WHERE kind='escalate'")
    assert esc["to_role"] == "lead" and "expired" in esc["body"]
    deadline = time.time() + 5
    while lane(st, task, "work")["state"] != "paused" and time.time() < deadline:
        time.sleep(0.05)
    assert lane(st, task, "work")["state"] == "paused"
    time.sleep(1.5)
    assert not (ws.worktrees_dir / task / "work" / "out.txt").exists()  # stopped while paused
    control.unpause(st, by="human:test", task=task, lane="work")
    t.join(30)
    assert result == {"rc": 0}
    assert git(root, "show", "main:out.txt") == "expired"


def test_cheap_steps_go_to_the_cheap_model(tmp_path, server):
    """`[model] cheap` writes the task's overview in summary.md: one call to that model, its cost recorded; the
    lanes still use the main model. A failing cheap model never changes how the task ended."""
    root, ws, st = team(tmp_path, server, extra_toml='cheap = "openai/cheapo"\nbackoff_s = 0.01\nmax_backoff_s = 0.05\n')
    server.script("Goal: Add a hello file", [tool_call("write_file", path="hello.txt", content="hi\n"),
                                             finish("wrote hello.txt")])
    server.script("You summarise a finished task", [text("The dev lane added hello.txt and it merged cleanly.")])
    assert main(["delegate", "Add a hello file", "--to", "dev", "--yes", "-C", str(root)]) == 0
    task = only_task(st)
    summary = git(root, "show", f"main:handoffs/{task}/summary.md")
    assert "The dev lane added hello.txt and it merged cleanly." in summary
    cheap = [r for r in server.requests if r.key == "You summarise a finished task"]
    assert len(cheap) == 1 and cheap[0].model == "cheapo" and "wrote hello.txt" in cheap[0].text
    assert all(r.model == "scripted" for r in server.requests if r.key != "You summarise a finished task")
    assert st.scalar("SELECT count(*) FROM costs WHERE task_id=? AND model='openai/cheapo'", (task,)) == 1

    server.fail_model("cheapo")
    server.script("Goal: Add a second file", [tool_call("write_file", path="two.txt", content="2\n"),
                                              finish("wrote two.txt")])
    assert main(["delegate", "Add a second file", "--to", "dev", "--yes", "-C", str(root)]) == 0
    task2 = only_task(st)
    assert lanes_db.get_task(st, task2)["state"] == "done"
    assert "task.overview_failed" in [e["kind"] for e in st.events(task=task2)]


def test_closing_a_task_never_stalls_the_other_tasks_lanes(tmp_path, server):
    """A task's close waits on the merge lock, git and the cheap model's overview: meanwhile the runner's other
    tasks keep making model calls (the close runs in a thread, not on the runner's event loop)."""
    root, ws, st = team(tmp_path, server, extra_toml='cheap = "openai/cheapo"\n')
    server.script("Goal: Quick A", [finish("a")])
    server.script("Goal: Slow B", [delay(0.3, tool_call("write_file", path=f"b{i}.txt", content=f"{i}\n"))
                                   for i in range(5)] + [finish("b")])
    server.script("You summarise a finished task", [delay(1.5, text("An overview."))])
    tasks = [approved_task(ws, st, goal) for goal in ("Quick A", "Slow B")]
    a, b = tasks
    assert run_here(ws, tasks) == {a: "done", b: "done"}
    merged_a = max(e["ts"] for e in st.events(task=a, kinds=["merge.done"]))
    done_a = max(e["ts"] for e in st.events(task=a, kinds=["task.done"]))
    assert done_a - merged_a >= 1.4                                    # A's close waited for its overview
    calls_b = [e["ts"] for e in st.events(task=b, kinds=["model.call"])]
    assert sum(merged_a < t < done_a for t in calls_b) >= 3, (merged_a, done_a, calls_b)


SLOW_MCP = '''
import os
import time
from mcp.server.mcpserver import MCPServer

with open(PIDS_FILE, "a") as f:  # set by the test
    f.write(f"{os.getpid()}\\n")
time.sleep(1.5)  # a server that takes its time to start (npx fetching a package, say)
server = MCPServer("slow")


@server.tool()
def ping() -> str:
    """Answer pong."""
    return "pong"


server.run("stdio")
'''


def test_a_slow_mcp_server_never_holds_up_the_other_lanes(tmp_path, server):
    """Listing a role's MCP tools runs in a thread: while one lane waits seconds for its server to start, a lane
    beside it keeps making model calls."""
    import sys

    script = tmp_path / "slow_mcp.py"
    pids = tmp_path / "mcp-pids.txt"
    script.write_text(f"PIDS_FILE = {str(pids)!r}\n" + SLOW_MCP)
    flag = tmp_path / "checked-once"  # the check fails the first time, so the lane runs twice
    mcp_role = (f"name: ops\nmandate: Operates the slow service.\ntools: [slow.ping]\n"
                f"checks: [\"test -f {flag} || (touch {flag} && false)\"]\n")
    root, ws, st = team(tmp_path, server, {"planner": PLANNER, "dev": DEV, "ops": mcp_role},
                        extra_toml=f'\n[mcp.slow]\ncommand = ["{sys.executable}", "{script}"]\n')
    plan = {"title": "Two lanes", "lanes": [{"id": "ops", "role": "ops", "goal": "Ping the slow service"},
                                            {"id": "dev", "role": "dev", "goal": "Write quick files"}]}
    server.script("You are planner", [tool_call("submit_plan", **plan)])
    server.script("Goal: Ping the slow service", [tool_call("slow__ping"), finish("pinged"),
                                                  tool_call("slow__ping"), finish("pinged again")])
    server.script("Goal: Write quick files", [delay(0.2, tool_call("write_file", path=f"q{i}.txt", content="q\n"))
                                              for i in range(3)] + [finish("wrote")])
    assert main(["delegate", "Ping and write", "--yes", "-C", str(root)]) == 0
    task = only_task(st)
    first = {lane_id: min(e["ts"] for e in st.events(task=task, lane=lane_id, kinds=["model.call"]))
             for lane_id in ("ops", "dev")}
    calls = st.events(task=task, lane="ops", kinds=["tool.call"])
    assert [(e["data"]["tool"], e["data"]["ok"]) for e in calls] == [("slow.ping", True)] * 2
    assert first["ops"] - first["dev"] >= 0.8, first   # dev's first reply was handled while ops' server started
    lane_log = ws.logs_dir / task / "ops" / "mcp-slow.log"  # the lane's server writes apart from other lanes'
    assert lane_log.read_text().count("--- cowork started server slow") == 1
    # one server listed the tools; one served the lane through its check retry, and stopped at the lane's end
    started = [int(p) for p in pids.read_text().split()]
    assert len(started) == 2 and not [p for p in started if pid_alive(p)], started
