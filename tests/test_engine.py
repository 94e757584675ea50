"""The llm and command engines through the runner: broken tool calls, fallbacks, the step cap, pause of a process."""
from __future__ import annotations

import threading
import time

import pytest

from cowork.cli.app import main
from cowork.runner import control
from cowork.runner.journal import Journal
from cowork.store import Store
from cowork.store import lanes as lanes_db
from tests.support.scripted_server import raw_tool_call, text, tool_call
from tests.support.team import DEV, PLANNER, git, make_team


def finish(summary="done", status="done"):
    return tool_call("finish", status=status, summary=summary, checklist=[{"item": summary, "done": True}])


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.setenv("SCRIPTED_KEY", "test-key")


def setup(tmp_path, server, dev=DEV, **kw):
    root = make_team(tmp_path / "repo", server.url, {"planner": PLANNER, "dev": dev}, **kw)
    return root, Store(root / ".cowork" / "state.db")


def delegate(root, goal) -> int:
    return main(["delegate", goal, "--to", "dev", "--yes", "-C", str(root)])


# an agent's packet as a Python string literal, for a script to write with t, l = its task and lane
PACKET = ("'---\\ncowork: handoff/v1\\ntask: {t}\\nlane: {l}\\nfrom: dev\\nstatus: STATUS\\n---\\n# Own packet\\n\\n"
          "## Summary\\nwritten by the tool\\n\\n## Checklist\\n\\n## Artifacts\\n\\n## Decisions\\n\\n"
          "## Open risks\\n\\n## Next\\n'")


def agent_role(tmp_path, script: str, extra: str = "") -> str:
    """A dev role whose engine is `python3 agent.py GOAL`, the script written from `script`."""
    (tmp_path / "agent.py").write_text(script)
    return ("name: dev\nmandate: Implements code changes on its lane's branch.\nengine: command\n"
            f"command: [python3, {tmp_path / 'agent.py'}, '{{goal}}']\n" + extra)


def delegate_in_thread(root, goal) -> tuple[threading.Thread, dict]:
    result: dict = {}
    t = threading.Thread(target=lambda: result.update(rc=delegate(root, goal)), daemon=True)
    t.start()
    return t, result


def pause_when_running(st) -> str:
    """Once the lane's command has started, pause everything and wait until the lane shows it. Returns the task."""
    deadline = time.time() + 20
    while not st.one("SELECT 1 FROM steps WHERE name='command'") and time.time() < deadline:
        time.sleep(0.02)
    task = st.scalar("SELECT id FROM tasks")
    control.pause(st, by="human:test")
    deadline = time.time() + 5
    while lanes_db.get_lane(st, task, "work")["state"] != "paused" and time.time() < deadline:
        time.sleep(0.02)
    assert lanes_db.get_lane(st, task, "work")["state"] == "paused"
    return task


def test_broken_tool_calls_go_back_to_the_model(tmp_path, server):
    root, st = setup(tmp_path, server)
    server.script("Goal: Survive", [raw_tool_call("write_file", '{"path": "x.txt", "content": '),
                                    tool_call("teleport", where="mars"),
                                    tool_call("write_file", path="x.txt"),
                                    tool_call("write_file", path="x.txt", content=7),
                                    tool_call("write_file", path="x.txt", content="x\n"),
                                    text("thinking out loud"),
                                    finish("survived")])
    assert delegate(root, "Survive") == 0
    assert git(root, "show", "main:x.txt") == "x"
    reqs = [r for r in server.requests if r.key == "Goal: Survive"]
    assert "not valid JSON" in reqs[1].text
    assert "unknown tool 'teleport'" in reqs[2].text
    assert "missing required argument(s): content" in reqs[3].text
    assert "argument 'content' should be string" in reqs[4].text
    assert "Reply with a tool call" in reqs[6].text
    # every message sent back keeps the protocol valid: each tool call has its result
    last = reqs[-1].body["messages"]
    ids = [c["id"] for m in last if m["role"] == "assistant" for c in m.get("tool_calls") or []]
    answered = [m["tool_call_id"] for m in last if m["role"] == "tool"]
    assert ids == answered


def test_deeply_nested_arguments_go_back_to_the_model(tmp_path, server):
    """Before: arguments nested 500 deep parsed as JSON, then masking them for the journal recursed past Python's
    limit and the lane died of a RecursionError traceback instead of telling the model."""
    root, st = setup(tmp_path, server)
    deep = '{"path": "x.txt", "content": ' + "[" * 500 + "]" * 500 + "}"
    server.script("Goal: Nest", [raw_tool_call("write_file", deep), tool_call("write_file", path="x.txt", content="x\n"),
                                 finish("nested")])
    assert delegate(root, "Nest") == 0
    assert git(root, "show", "main:x.txt") == "x"
    reqs = [r for r in server.requests if r.key == "Goal: Nest"]
    assert "nested more than" in reqs[1].text and "Traceback" not in reqs[1].text


def test_five_broken_calls_in_a_row_fail_the_lane(tmp_path, server):
    root, st = setup(tmp_path, server)
    server.script("Goal: Flail", [raw_tool_call("write_file", "{nope")])
    assert delegate(root, "Flail") == 1
    task = st.scalar("SELECT id FROM tasks")
    row = lanes_db.get_lane(st, task, "work")
    assert row["state"] == "failed"
    assert f"lane {task}/work: 5 broken tool calls in a row" in row["error"]
    assert len([r for r in server.requests if r.key == "Goal: Flail"]) == 5


FAST_RETRIES = "attempts = 2\nbackoff_s = 0.01\nmax_backoff_s = 0.02\n"


def test_fallback_model_after_provider_error(tmp_path, server):
    dev = DEV + "fallbacks: [openai/backup]\n"
    root, st = setup(tmp_path, server, dev=dev, model_toml=FAST_RETRIES)
    server.script("Goal: Fall back", [tool_call("write_file", path="f.txt", content="f\n"), finish("ok")])
    server.fail_model("scripted", 503)
    assert delegate(root, "Fall back") == 0
    models = [r.model for r in server.requests if r.key == "Goal: Fall back"]
    assert models == ["scripted", "scripted", "backup", "scripted", "scripted", "backup"]  # a 503 is tried twice
    task = st.scalar("SELECT id FROM tasks")
    falls = st.events(task=task, kinds=["model.fallback"])
    assert len(falls) == 2 and "openai/scripted failed" in falls[0]["summary"]
    assert len(st.events(task=task, kinds=["model.retry"])) == 2
    steps = [s for s in Journal(st, task, "work").steps if s.kind == "model"]
    assert {s.output["model"] for s in steps} == {"openai/backup"}


def test_every_model_failing_fails_the_lane_clearly(tmp_path, server):
    root, st = setup(tmp_path, server, model_toml=FAST_RETRIES)
    server.script("Goal: Doomed", [finish()])
    server.fail_model("scripted", 500)
    assert delegate(root, "Doomed") == 1
    task = st.scalar("SELECT id FROM tasks")
    err = lanes_db.get_lane(st, task, "work")["error"]
    assert "every model failed" in err and "openai/scripted" in err


def test_step_cap_warns_then_stops(tmp_path, server):
    dev = DEV + "budget: {max_steps: 4}\n"
    root, st = setup(tmp_path, server, dev=dev)
    server.script("Goal: Loop", [tool_call("list_files"), tool_call("read_file", path="README.md")])
    assert delegate(root, "Loop") == 1
    task = st.scalar("SELECT id FROM tasks")
    reqs = [r for r in server.requests if r.key == "Goal: Loop"]
    assert len(reqs) == 4
    assert "step(s) left" in reqs[-1].text and "step(s) left" not in reqs[0].text
    row = lanes_db.get_lane(st, task, "work")
    assert row["state"] == "blocked" and "step cap of 4" in row["error"]


def test_command_engine_pauses_its_process_and_uses_its_own_packet(tmp_path, server):
    script = ("import os, sys, time\n"
              "time.sleep(1.0)\n"
              "open('out.txt', 'w').write(sys.argv[1] + '\\n')\n"
              "t, l = os.environ['COWORK_TASK'], os.environ['COWORK_LANE']\n"
              "os.makedirs(f'handoffs/{t}', exist_ok=True)\n"
              f"open(f'handoffs/{{t}}/{{l}}.md', 'w').write(f{PACKET.replace('STATUS', 'done')})\n")
    root, st = setup(tmp_path, server, dev=agent_role(tmp_path, script))
    t, result = delegate_in_thread(root, "Say hello")
    task = pause_when_running(st)
    time.sleep(1.5)  # longer than the script's sleep: it only finishes if it was not stopped
    assert not (root / ".cowork" / "worktrees" / task / "work" / "out.txt").exists()
    control.unpause(st, by="human:test")
    t.join(20)
    assert result == {"rc": 0}
    assert git(root, "show", "main:out.txt") == "Say hello"
    packet = git(root, "show", f"main:handoffs/{task}/work.md")
    assert "written by the tool" in packet
    log = root / ".cowork" / "logs" / task / "work.log"
    assert "python3" in log.read_text()


def test_command_engine_packet_from_output_and_diff(tmp_path, server):
    dev = ("name: dev\nmandate: Implements code changes on its lane's branch.\nengine: command\n"
           "command: [sh, -c, 'echo \"$COWORK_ROLE did: $0\" > out.txt; echo all good', '{goal}']\n")
    root, st = setup(tmp_path, server, dev=dev)
    assert delegate(root, "Write out") == 0
    task = st.scalar("SELECT id FROM tasks")
    assert git(root, "show", "main:out.txt") == "dev did: Write out"
    packet = git(root, "show", f"main:handoffs/{task}/work.md")
    assert "exited with 0" in packet and "all good" in packet and "out.txt" in packet
    assert not server.requests  # a command lane never calls the model


def test_a_call_held_by_a_pause_and_then_stopped_is_recorded_as_not_run(tmp_path, server):
    """A runner stopped while a tool call waits out a pause: the call never ran, and the journal says so (a resumed
    agent is told to call it again, not that it "may or may not have taken effect")."""
    import asyncio

    from cowork.engines.llm import run_llm_lane
    from cowork.tools.gateway import Gateway
    from tests.support.lanectx import TeamEnv
    from tests.support.scripted_server import delay

    env = TeamEnv(tmp_path, {"dev": {"tools": ["write_file"]}}, f'[model]\nname = "openai/scripted"\n'
                  f'api_base = "{server.url}"\napi_key_env = "SCRIPTED_KEY"\n')
    server.script("held lane", [delay(0.5, tool_call("write_file", path="x.txt", content="x\n")), finish()])
    ctx = env.ctx("dev")
    journal = Journal(ctx.store, ctx.task_id, ctx.lane_id)

    async def run() -> None:
        lane = asyncio.ensure_future(run_llm_lane(ctx, Gateway(ctx), journal, system="held lane", kickoff="go"))
        while not any(s.kind == "model" for s in journal.steps):
            await asyncio.sleep(0.01)
        control.pause(ctx.store, by="human:ann", reason="hold the tool")  # while the model call is in flight
        while not any(s.kind == "tool" for s in journal.steps):
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)  # the call waits in the gateway
        lane.cancel()
        with pytest.raises(asyncio.CancelledError):
            await lane

    asyncio.run(run())
    tool = [s for s in Journal(ctx.store, ctx.task_id, ctx.lane_id).steps if s.kind == "tool"]
    assert len(tool) == 1 and tool[0].state == "failed" and tool[0].output["content"].startswith("not run")
    assert not (ctx.worktree / "x.txt").exists()


def test_command_engine_kills_what_the_agent_left_running(tmp_path, server):
    """An agent that starts a background process and exits: the lane's end stops it (nothing else would)."""
    from cowork.procs import pid_alive

    pidf = tmp_path / "child.pid"
    dev = ("name: dev\nmandate: Implements code changes on its lane's branch.\nengine: command\n"
           f"command: [sh, -c, 'sleep 300 & echo $! > {pidf}; echo hi > out.txt', '{{goal}}']\n")
    root, st = setup(tmp_path, server, dev=dev)
    assert delegate(root, "Spawn") == 0
    pid = int(pidf.read_text())
    deadline = time.time() + 5
    while pid_alive(pid) and time.time() < deadline:
        time.sleep(0.05)
    alive = pid_alive(pid)
    if alive:
        import os
        import signal

        os.kill(pid, signal.SIGKILL)
    assert not alive
    assert git(root, "show", "main:out.txt") == "hi"


def test_command_engine_failure_names_the_lane_and_its_log(tmp_path, server):
    dev = ("name: dev\nmandate: Implements code changes on its lane's branch.\nengine: command\n"
           "command: [sh, -c, 'echo partial > p.txt; echo boom >&2; exit 3', '{goal}']\n")
    root, st = setup(tmp_path, server, dev=dev)
    assert delegate(root, "Fail") == 1
    task = st.scalar("SELECT id FROM tasks")
    error = lanes_db.get_lane(st, task, "work")["error"]
    assert f"lane {task}/work" in error and "exited with 3" in error
    assert f".cowork/logs/{task}/work.log" in error  # where to look, not only that it failed
    assert "boom" in (root / ".cowork" / "logs" / task / "work.log").read_text()
    assert main(["handoff", "validate", "-C", str(root)]) == 0


def test_command_engine_stops_an_agent_past_its_timeout_and_keeps_its_work(tmp_path, server):
    """A hung agent that ignores SIGTERM: at its role's timeout_minutes it gets SIGTERM, then SIGKILL; the lane fails
    naming the lane, the timeout and the log, `lane.timed_out` is recorded, and what it committed or left is kept.
    Its own packet (valid, status done) is set aside: a timed-out run is no finished one."""
    import os
    import signal

    from cowork.procs import pid_alive

    pidf = tmp_path / "agent.pid"
    script = ("import os, signal, subprocess, time\n"
              "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
              f"open({str(pidf)!r}, 'w').write(str(os.getpid()))\n"
              "open('committed.txt', 'w').write('mine\\n')\n"
              "subprocess.run(['git', 'add', 'committed.txt'], check=True)\n"
              "subprocess.run(['git', 'commit', '-q', '-m', 'agent: committed.txt'], check=True)\n"
              "open('left.txt', 'w').write('uncommitted\\n')\n"
              "t, l = os.environ['COWORK_TASK'], os.environ['COWORK_LANE']\n"
              "os.makedirs(f'handoffs/{t}', exist_ok=True)\n"
              f"open(f'handoffs/{{t}}/{{l}}.md', 'w').write(f{PACKET.replace('STATUS', 'done')})\n"
              "print('working on it', flush=True)\n"
              "time.sleep(300)\n")
    root, st = setup(tmp_path, server, dev=agent_role(tmp_path, script, "timeout_minutes: 0.02\n"))
    t, result = delegate_in_thread(root, "Hang")
    t.join(30)
    pid = int(pidf.read_text()) if pidf.exists() else None
    alive = pid is not None and pid_alive(pid)
    if alive:
        os.kill(pid, signal.SIGKILL)
    assert not t.is_alive() and result == {"rc": 1}
    assert pid is not None and not alive  # SIGKILL after the grace: SIGTERM alone would not have ended it
    task = st.scalar("SELECT id FROM tasks")
    row = lanes_db.get_lane(st, task, "work")
    assert row["state"] == "failed"
    error = row["error"]
    assert f"lane {task}/work" in error and "`python3` timed out after 1.2s" in error
    assert "timeout_minutes: 0.02 of role dev" in error and f".cowork/logs/{task}/work.log" in error
    [event] = st.events(task=task, lane="work", kinds=["lane.timed_out"])
    assert event["data"]["timeout_s"] == pytest.approx(1.2) and event["summary"] == error
    assert "working on it" in (root / ".cowork" / "logs" / task / "work.log").read_text()
    branch = f"cowork/{task}/work"
    assert git(root, "show", f"{branch}:committed.txt") == "mine"
    assert git(root, "show", f"{branch}:left.txt") == "uncommitted"
    packet = git(root, "show", f"{branch}:handoffs/{task}/work.md")
    assert "status: failed" in packet and "was stopped after running 1.2s" in packet and "working on it" in packet
    assert "was not used: the command timed out" in packet and "written by the tool" not in packet
    [rejected] = st.events(task=task, lane="work", kinds=["handoff.rejected"])
    assert "written by the tool" in git(root, "show", f"{rejected['data']['commit']}:handoffs/{task}/work.md")


def test_time_paused_does_not_count_toward_a_command_timeout(tmp_path, server):
    """Paused past the team's command_timeout_minutes in wall time, but not in time run: the agent is not stopped."""
    script = ("import time\n"
              "for _ in range(10):\n"
              "    time.sleep(0.1)\n"
              "open('out.txt', 'w').write('finished\\n')\n")
    root, st = setup(tmp_path, server, dev=agent_role(tmp_path, script),
                     extra_toml="[policy]\ncommand_timeout_minutes = 0.04\n")  # 2.4 s
    t, result = delegate_in_thread(root, "Pause me")
    task = pause_when_running(st)
    time.sleep(3.0)  # past the timeout in wall time
    control.unpause(st, by="human:test")
    t.join(30)
    assert result == {"rc": 0}
    assert git(root, "show", "main:out.txt") == "finished"
    assert st.events(task=task, kinds=["lane.timed_out"]) == []


def test_a_command_timeout_comes_from_the_role_else_the_team():
    from cowork.config import TeamSettings
    from cowork.engines.command import Timeout, timeout_for
    from cowork.roles import Role

    role = {"name": "dev", "mandate": "Does things.", "engine": "command", "command": ["x"]}
    team = TeamSettings.model_validate({"policy": {"command_timeout_minutes": 30}})
    assert timeout_for(Role.model_validate(role), TeamSettings()) is None
    assert timeout_for(Role.model_validate(role), team) == Timeout(1800, "[policy] command_timeout_minutes = 30")
    assert timeout_for(Role.model_validate({**role, "timeout_minutes": 0.5}), team) == Timeout(
        30, "timeout_minutes: 0.5 of role dev")


def test_an_agents_invalid_packet_is_replaced_and_said_so(tmp_path, server, capsys):
    """The agent's own packet fails validation: cowork builds one, records `handoff.rejected` with the problems,
    the built packet's Open risks say why, and the agent's text stays in the lane's history."""
    bad = PACKET.replace("STATUS", "finished").replace("## Next\\n", "")
    script = ("import os\n"
              "t, l = os.environ['COWORK_TASK'], os.environ['COWORK_LANE']\n"
              "os.makedirs(f'handoffs/{t}', exist_ok=True)\n"
              f"open(f'handoffs/{{t}}/{{l}}.md', 'w').write(f{bad})\n"
              "open('out.txt', 'w').write('work\\n')\n")
    root, st = setup(tmp_path, server, dev=agent_role(tmp_path, script))
    assert delegate(root, "Write a bad packet") == 0
    task = st.scalar("SELECT id FROM tasks")
    rel = f"handoffs/{task}/work.md"
    [event] = st.events(task=task, lane="work", kinds=["handoff.rejected"])
    problems = " ".join(p["message"] for p in event["data"]["problems"])
    assert event["data"]["path"] == rel and rel in event["summary"]
    assert f"{rel} was rejected (2 problems: line 6: status:" in capsys.readouterr().out  # the progress says so
    assert "missing required section '## Next'" in problems and "status" in event["summary"]
    packet = git(root, "show", f"main:{rel}")
    assert f"the agent's own packet {rel} was rejected" in packet
    assert "\n  - line 20: missing required section '## Next'" in packet and "status: Input should be" in packet
    assert "exited with 0" in packet and "written by the tool" not in packet
    commit = event["data"]["commit"]
    assert f"git show {commit[:12]}:{rel}" in packet
    agent_text = git(root, "show", f"{commit}:{rel}")
    assert "status: finished" in agent_text and "written by the tool" in agent_text
    assert main(["handoff", "validate", "-C", str(root)]) == 0


def test_a_packet_left_from_an_earlier_run_is_not_taken_for_the_agents_own(tmp_path, server):
    """The agent's first run writes a packet saying done; the role's check fails and sends it back; the second run
    exits 1 without writing one. The packet still in the worktree tells of the first run: the lane fails on the exit
    code. Before, that stale packet was read as the second run's, and the lane merged as done."""
    script = ("import os, sys\n"
              "t, l = os.environ['COWORK_TASK'], os.environ['COWORK_LANE']\n"
              "if os.path.exists('out.txt'):\n"
              "    open('second.txt', 'w').write('tried again\\n')\n"
              "    sys.exit(1)\n"
              "open('out.txt', 'w').write('work\\n')\n"
              "os.makedirs(f'handoffs/{t}', exist_ok=True)\n"
              f"open(f'handoffs/{{t}}/{{l}}.md', 'w').write(f{PACKET.replace('STATUS', 'done')})\n")
    root, st = setup(tmp_path, server, dev=agent_role(tmp_path, script, "checks: ['test -f second.txt']\n"))
    assert delegate(root, "Work twice") == 1
    task = st.scalar("SELECT id FROM tasks")
    lane = lanes_db.get_lane(st, task, "work")
    assert lane["state"] == "failed" and "exited with 1" in lane["error"]
    packet = git(root, "show", f"{lane['branch']}:handoffs/{task}/work.md")
    assert "exited with 1" in packet and "written by the tool" not in packet
    assert not st.events(task=task, kinds=["handoff.rejected"]), "nothing the agent wrote this run was set aside"
    assert not git(root, "ls-tree", "main", "out.txt"), "nothing of the lane was merged"


def test_a_command_that_fails_is_failed_whatever_its_packet_says(tmp_path, server):
    """The agent writes a valid packet saying done, then exits 1: the exit is its last word. The lane fails, the
    packet is built from the output and diff, and the agent's own text is kept in a commit and said so. Before, its
    packet won and the lane merged as done."""
    script = ("import os, sys\n"
              "t, l = os.environ['COWORK_TASK'], os.environ['COWORK_LANE']\n"
              "open('out.txt', 'w').write('half done\\n')\n"
              "os.makedirs(f'handoffs/{t}', exist_ok=True)\n"
              f"open(f'handoffs/{{t}}/{{l}}.md', 'w').write(f{PACKET.replace('STATUS', 'done')})\n"
              "print('crashed after writing its packet', file=sys.stderr)\n"
              "sys.exit(1)\n")
    root, st = setup(tmp_path, server, dev=agent_role(tmp_path, script))
    assert delegate(root, "Crash at the end") == 1
    task = st.scalar("SELECT id FROM tasks")
    lane = lanes_db.get_lane(st, task, "work")
    assert lane["state"] == "failed" and "exited with 1" in lane["error"]
    rel = f"handoffs/{task}/work.md"
    packet = git(root, "show", f"{lane['branch']}:{rel}")
    assert "exited with 1" in packet and "crashed after writing its packet" in packet
    assert "written by the tool" not in packet and f"the agent's own packet {rel} was not used" in packet
    [event] = st.events(task=task, lane="work", kinds=["handoff.rejected"])
    assert "`python3` exited with 1" in event["summary"] and event["data"]["reason"] == "`python3` exited with 1"
    assert "written by the tool" in git(root, "show", f"{event['data']['commit']}:{rel}")
    assert not git(root, "ls-tree", "main", "out.txt"), "nothing of the lane was merged"
