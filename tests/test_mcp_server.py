"""`cowork mcp serve`: the team as an MCP server, as a human observer and as a lane, in-process through the real
MCP client, plus one real stdio subprocess."""
from __future__ import annotations

import asyncio
import json
import os
import sys

import pytest
from mcp import Client, StdioServerParameters

from cowork import mcp_server
from cowork.engines import command as command_engine
from cowork.errors import ValidationFailed
from cowork.store import Store
from cowork.store import lanes as lanes_db
from cowork.team import approvals as ap
from cowork.team import messages as msgs
from cowork.team.breakers import Breaker

HUMAN_TOOLS = {"status", "lanes", "inbox", "handoffs", "read_handoff", "approvals", "lock_status", "say"}
LANE_TOOLS = HUMAN_TOOLS - {"say"} | {"tell", "ask", "delegate", "answer"}
NEVER = {"approve", "reject", "unpause", "pause", "merge"}


@pytest.fixture
def seeded(team):
    """The `cowork init` team with task t1: lane impl (dev, running), lane rev (reviewer, running), a question to
    humans, a pending approval and a committed packet."""
    store = Store.for_workspace(team)
    lanes_db.create_task(store, "t1", "Add a login page", state="running")
    lanes_db.add_lane(store, "t1", "impl", "dev", "build the login page")
    lanes_db.add_lane(store, "t1", "rev", "reviewer", "review the login page")
    for lane in ("impl", "rev"):
        lanes_db.set_lane_state(store, "t1", lane, "running")
    msgs.post(store, kind="ask", from_role="dev", from_lane="t1/impl", to_role="human", body="Which OAuth provider?",
              task="t1")
    ap.request(store, task="t1", lane="impl", role="dev", tool="run", action={"command": "rm -rf build"},
               why="clean build", timeout_s=600)
    packet = team.task_dir("t1") / "impl.md"
    packet.parent.mkdir(parents=True, exist_ok=True)
    packet.write_text("---\ntask: t1\nlane: impl\nfrom: dev\nstatus: done\n---\n# Login page\n\nsecret body\n")
    return team, store


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


async def session(server, calls):
    """Open a client on `server`, return its tool names and the results of `calls` [(name, args), ...]."""
    async with Client(server) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        results = [await client.call_tool(name, args) for name, args in calls]
    return names, results


def text(result) -> str:
    return "\n".join(getattr(block, "text", "") for block in result.content)


def lane_env(team, task="t1", lane="impl", role="dev") -> dict:
    return {"COWORK_TASK": task, "COWORK_LANE": lane, "COWORK_ROLE": role, "COWORK_ROOT": str(team.root)}


# -- a human observer ----------------------------------------------------------------------------------------------

def test_human_reads_the_team_and_says_but_cannot_approve(seeded):
    team, store = seeded
    srv = mcp_server.build_server(mcp_server.open_team(team.root, env={}))
    names, (st, ln, inbox, apps, lock, hand, said, bad) = run(session(srv, [
        ("status", {}), ("lanes", {"task": "t1"}), ("inbox", {}), ("approvals", {}), ("lock_status", {}),
        ("handoffs", {}), ("say", {"target": "@team", "text": "standup moved to 3pm"}),
        ("say", {"target": "@nobody", "text": "hi"}),
    ]))
    assert names == HUMAN_TOOLS and not names & NEVER
    assert st.structured_content["you"] == {"identity": "human", "name": "human:Test Person"}
    assert st.structured_content["lanes"] == {"running": 2} and st.structured_content["target"] == "main"
    assert [r["lane_id"] for r in ln.structured_content["lanes"]] == ["impl", "rev"]
    assert [m["body"] for m in inbox.structured_content["messages"]] == ["Which OAuth provider?"]
    pending = apps.structured_content["pending"]
    assert len(pending) == 1 and pending[0]["action"] == {"command": "rm -rf build"}
    assert lock.structured_content["holder"] is None and lock.structured_content["queue"] == []
    assert [h["path"] for h in hand.structured_content["handoffs"]] == ["handoffs/t1/impl.md"]
    assert said.structured_content["to"] == "team" and not said.is_error
    row = store.one("SELECT * FROM messages WHERE id=?", (said.structured_content["message"],))
    assert row["from_role"] == "human:Test Person" and row["to_role"] == "team" and row["body"] == "standup moved to 3pm"
    assert bad.is_error and "unknown role 'nobody'" in text(bad)
    assert ap.pending(store)[0]["state"] == "pending"        # reading approvals decided nothing


def test_approvals_lists_plans_waiting_for_a_decision_as_the_cli_does(seeded, cli):
    """A plan awaiting approval is a human decision too: the MCP tool shows it, and its answer holds what
    `cowork approvals --json` holds."""
    team, store = seeded
    lanes_db.create_task(store, "t2-ship-it", "Ship it")
    lanes_db.set_task_state(store, "t2-ship-it", "awaiting-approval", actor="planner")
    lanes_db.create_task(store, "t3-done", "Done already", state="done")
    srv = mcp_server.build_server(mcp_server.open_team(team.root, env={}))
    _, (apps,) = run(session(srv, [("approvals", {})]))
    got = apps.structured_content
    assert [(t["task_id"], t["title"]) for t in got["awaiting_approval"]] == [("t2-ship-it", "Ship it")]
    assert [a["tool"] for a in got["pending"]] == ["run"]
    listed = cli("approvals", "--json", "-C", team.root).json()
    assert set(listed) == {"pending", "awaiting_approval"} and {k: got[k] for k in listed} == listed
    assert "cowork approve TASK" in got["note"]


def test_a_broken_role_file_leaves_the_read_tools_serving(seeded, capsys):
    """writer.yaml is broken: the server still starts and reads the team, naming the file on stderr (stdout is the
    MCP stream); a lane may not reach the broken role, and `say` to it refuses to start a task, naming the line.
    The lane's own role must load."""
    team, store = seeded
    (team.roles_dir / "writer.yaml").write_text("name: writer\nmandate: Writes the docs.\ncolour: blue\n")
    human = mcp_server.open_team(team.root, env={})
    assert "roles/writer.yaml:3:1: colour: unknown key 'colour'" in capsys.readouterr().err
    _, (st, apps, said) = run(session(mcp_server.build_server(human), [
        ("status", {}), ("approvals", {}), ("say", {"target": "@writer", "text": "document the login page"})]))
    assert not st.is_error and st.structured_content["lanes"] == {"running": 2}
    assert [a["tool"] for a in apps.structured_content["pending"]] == ["run"]
    assert said.is_error and "roles/writer.yaml:3:1" in text(said)
    assert store.scalar("SELECT count(*) FROM tasks") == 1
    lane = mcp_server.build_server(mcp_server.open_team(None, env=lane_env(team)))
    _, (told,) = run(session(lane, [("tell", {"role": "writer", "note": "docs needed"})]))
    assert told.is_error and "its file roles/writer.yaml has problems" in text(told)
    (team.roles_dir / "dev.yaml").write_text("name: dev\nmandate: Builds.\ncolour: red\n")
    with pytest.raises(ValidationFailed, match="roles/dev.yaml:3:1"):
        mcp_server.open_team(None, env=lane_env(team))


def test_read_handoff_stays_inside_handoffs(seeded):
    team, _ = seeded
    (team.root / "secret.txt").write_text("not for agents")
    srv = mcp_server.build_server(mcp_server.open_team(team.root, env={}))
    _, (by_path, by_ref, outside, up, passwd, missing, nul) = run(session(srv, [
        ("read_handoff", {"path": "handoffs/t1/impl.md"}), ("read_handoff", {"path": "t1/impl"}),
        ("read_handoff", {"path": str(team.root / "secret.txt")}),
        ("read_handoff", {"path": "handoffs/../secret.txt"}), ("read_handoff", {"path": "../../etc/passwd"}),
        ("read_handoff", {"path": "t1/nope"}), ("read_handoff", {"path": "t1/impl\x00.md"}),
    ]))
    assert "# Login page" in text(by_path) and text(by_path) == text(by_ref)
    for res in (outside, up, passwd):
        assert res.is_error and "outside handoffs/" in text(res)
    assert missing.is_error and "no handoff 't1/nope'" in text(missing)
    assert nul.is_error and text(nul).endswith("give a path under handoffs/ or TASK/LANE")   # not a ValueError


def test_lanes_of_a_task_that_does_not_exist_is_an_error_as_in_the_cli(seeded, cli):
    team, _ = seeded
    srv = mcp_server.build_server(mcp_server.open_team(team.root, env={}))
    _, (nope, t1, every) = run(session(srv, [("lanes", {"task": "t9-nothing"}), ("lanes", {"task": "t1"}),
                                             ("lanes", {})]))
    assert nope.is_error and "no task 't9-nothing'" in text(nope)
    assert cli("lanes", "--task", "t9-nothing", "-C", team.root).code == 2
    assert len(t1.structured_content["lanes"]) == len(every.structured_content["lanes"]) == 2


# -- a lane ----------------------------------------------------------------------------------------------------------

def test_lane_tells_through_its_gateway(seeded):
    team, store = seeded
    srv = mcp_server.build_server(mcp_server.open_team(None, env=lane_env(team)))
    names, (st, told, inbox) = run(session(srv, [
        ("status", {}), ("tell", {"role": "reviewer", "note": "API moved to /v2"}), ("inbox", {})]))
    assert names == LANE_TOOLS and not names & NEVER
    assert st.structured_content["you"] == {"identity": "lane", "name": "dev", "task": "t1", "lane": "impl",
                                            "role": "dev"}
    assert not told.is_error and "posted #" in text(told)
    row = store.one("SELECT * FROM messages WHERE kind='tell'")
    assert (row["from_role"], row["from_lane"], row["to_role"], row["body"]) == ("dev", "t1/impl", "reviewer",
                                                                                 "API moved to /v2")
    calls = store.events(kinds=["tool.call"])
    assert [(e["role"], e["lane_id"], e["data"]["tool"]) for e in calls] == [("dev", "impl", "tell"),
                                                                           ("dev", "impl", "inbox")]
    assert text(inbox) == "No new messages."


def test_a_post_whose_audit_fails_is_not_kept_so_the_retry_posts_once(seeded):
    """A tell or delegate is one commit with its `tool.call` audit event: when the audit cannot be written, nothing
    is posted and no lane added, so the client's retry of the failed call does it once (it did it twice)."""
    team, store = seeded
    store.execute("CREATE TRIGGER no_audit BEFORE INSERT ON events WHEN NEW.kind = 'tool.call' "
                  "BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END")
    srv = mcp_server.build_server(mcp_server.open_team(team.root, env=lane_env(team)))
    calls = [("tell", {"role": "reviewer", "note": "API moved to /v2"}),
             ("delegate", {"role": "writer", "goal": "document /v2"})]

    async def talk():
        async with Client(srv) as client:
            failed = [await client.call_tool(name, args) for name, args in calls]
            store.execute("DROP TRIGGER no_audit")
            again = [await client.call_tool(name, args) for name, args in calls]
        return failed, again

    failed, again = run(talk())
    for res in failed:
        assert res.is_error and "disk I/O error" in text(res), text(res)
    assert not any(res.is_error for res in again)
    assert store.scalar("SELECT count(*) FROM messages WHERE kind='tell'") == 1
    assert store.scalar("SELECT count(*) FROM messages WHERE kind='delegate'") == 1
    assert store.scalar("SELECT count(*) FROM lanes") == 3
    assert [e["data"]["tool"] for e in store.events(kinds=["tool.call"])] == ["tell", "delegate"]


def test_lane_asks_a_live_lane_served_to_another_agent(seeded):
    team, store = seeded
    dev = mcp_server.build_server(mcp_server.open_team(team.root, env=lane_env(team)))
    rev = mcp_server.build_server(mcp_server.open_team(team.root, env=lane_env(team, lane="rev", role="reviewer")))

    async def reviewer():
        async with Client(rev) as client:
            for _ in range(100):
                new = text(await client.call_tool("inbox", {}))
                if "QUESTION #" in new:
                    mid = int(new.split("QUESTION #", 1)[1].split()[0])
                    return await client.call_tool("answer", {"message_id": mid, "text": "GitHub only"})
                await asyncio.sleep(0.05)

    async def both():
        async with Client(dev) as client:
            return await asyncio.gather(client.call_tool("ask", {"role": "reviewer", "question": "Which provider?"}),
                                        reviewer())

    asked, answered = run(both())
    assert not answered.is_error and not asked.is_error
    assert "answer from reviewer (t1/rev):\nGitHub only" in text(asked)
    q = store.one("SELECT * FROM messages WHERE kind='ask' AND from_role='dev' AND to_role='reviewer'")
    assert q["to_lane"] == "t1/rev" and q["state"] == "answered"


def test_every_tool_and_parameter_is_described_in_its_own_words(seeded):
    """What an agent reads to choose a call: every parameter described, the roles it may name, how long ask waits,
    read tools marked read-only, and no internal names ("status_toolArguments") in schemas or errors."""
    team, _ = seeded

    async def listed(env):
        async with Client(mcp_server.build_server(mcp_server.open_team(team.root, env=env))) as client:
            tools = (await client.list_tools()).tools
            bad = [await client.call_tool(name, args) for name, args in [
                ("answer", {"message_id": 10**30, "text": "x"}), ("answer", {"message_id": -1, "text": "x"}),
                ("say", {"target": "@dev", "text": "x", "reply_to": 10**30})] if name in {t.name for t in tools}]
        return {t.name: t for t in tools}, bad

    human, bad_human = run(listed({}))
    lane, bad_lane = run(listed(lane_env(team)))
    for tool in [*human.values(), *lane.values()]:
        blob = json.dumps([tool.input_schema, tool.output_schema])
        assert "_tool" not in blob, tool.name
        for name, prop in tool.input_schema["properties"].items():
            assert prop.get("description"), f"{tool.name}.{name}"
        assert tool.annotations.read_only_hint is (tool.name in mcp_server.READ_TOOLS and tool.name != "inbox")
    for name in ("tell", "ask", "delegate"):
        assert "dev, planner, reviewer, writer" in lane[name].description
    assert "up to 900s" in lane["ask"].description
    assert "dev, planner, reviewer, writer" in human["say"].description
    for res in bad_human + bad_lane:
        assert res.is_error and "OverflowError" not in text(res) and "_tool" not in text(res)
    assert [text(r).split("\n")[2].split(" [")[0] for r in bad_lane] == [
        "  Input should be less than or equal to 9223372036854775807", "  Input should be greater than or equal to 1"]


def test_lane_denied_by_authority_is_a_tool_error_and_an_event(seeded):
    team, store = seeded
    srv = mcp_server.build_server(mcp_server.open_team(team.root, env=lane_env(team, lane="rev", role="reviewer")))
    names, (denied, after) = run(session(srv, [("delegate", {"role": "dev", "goal": "write the tests"}),
                                               ("status", {})]))
    assert names == LANE_TOOLS - {"delegate"}                    # not offered, as to an llm lane of the role
    assert denied.is_error and "denied: role 'reviewer' has no tool 'delegate'" in text(denied)
    ev = store.events(kinds=["tool.denied"])
    assert len(ev) == 1 and ev[0]["role"] == "reviewer" and ev[0]["data"]["tool"] == "delegate"
    assert store.scalar("SELECT count(*) FROM lanes") == 2       # nothing was added
    assert not after.is_error                                    # the server carries on


def test_malformed_lane_environment_fails_at_start(seeded, cli, monkeypatch):
    team, _ = seeded
    for key, value in lane_env(team, lane="ghost").items():
        monkeypatch.setenv(key, value)
    res = cli("mcp", "serve", "-C", team.root)
    assert res.code == 1 and "t1/ghost" in res.err and "does not exist" in res.err
    monkeypatch.delenv("COWORK_ROLE")
    with pytest.raises(Exception, match="COWORK_ROLE not set"):
        mcp_server.open_team(team.root)


def test_an_ended_lane_is_refused_at_start_and_per_call(seeded, cli, monkeypatch):
    """A lane that ended (cancelled, merged, failed) or stopped for a human (blocked) no longer acts: its agent may
    outlive it (a cancelled task, an agent CLI started by hand), and it added lanes to a cancelled task before."""
    team, store = seeded
    lanes_db.add_lane(store, "t1", "gone", "dev", "old work")
    lanes_db.set_lane_state(store, "t1", "gone", "cancelled")
    for key, value in lane_env(team, lane="gone").items():
        monkeypatch.setenv(key, value)
    res = cli("mcp", "serve", "-C", team.root)
    assert res.code == 1 and "cowork retry t1/gone" in res.err
    assert "lane t1/gone is cancelled: it can no longer act for the team" in res.err   # as each call says it
    lanes_db.set_lane_state(store, "t1", "gone", "merged")
    res = cli("mcp", "serve", "-C", team.root)
    assert res.code == 1 and "is merged" in res.err and "retry" not in res.err

    srv = mcp_server.build_server(mcp_server.open_team(team.root, env=lane_env(team)))

    async def talk():
        async with Client(srv) as client:
            before = await client.call_tool("tell", {"role": "reviewer", "note": "still here"})
            lanes_db.set_lane_state(store, "t1", "impl", "cancelled")          # a human cancels the task
            after = [await client.call_tool(name, args) for name, args in [
                ("delegate", {"role": "writer", "goal": "document it"}), ("tell", {"role": "team", "note": "hi"}),
                ("ask", {"role": "reviewer", "question": "ok?"}), ("status", {})]]
        return before, after

    before, (deleg, told, asked, st) = run(talk())
    assert not before.is_error
    for res in (deleg, told, asked):
        assert res.is_error and "denied: lane t1/impl is cancelled: it can no longer act for the team" in text(res)
    assert not st.is_error                                       # reading the team is still fine
    assert store.scalar("SELECT count(*) FROM lanes") == 3       # no lane was added to the cancelled task
    assert [m["body"] for m in store.all("SELECT body FROM messages WHERE to_role != 'human'")] == ["still here"]
    denied = store.events(kinds=["tool.denied"])
    assert [e["data"]["tool"] for e in denied] == ["delegate", "tell", "ask"]
    assert not store.events(kinds=["breaker.tripped"])          # three refusals stop nothing: the lane is over
    lanes_db.set_lane_state(store, "t1", "impl", "running")     # retried: the stray agent's refusals do not count
    assert Breaker(store, "t1", "impl", max_failures=3, max_repeats=4).failures == 0


def careful_lane(team, store):
    """Lane t1/care of role careful, whose delegate waits for a human's yes or no, served to an agent."""
    (team.roles_dir / "careful.yaml").write_text(
        "name: careful\nmandate: Delegates only with a human's yes.\ntools: [ask, tell, delegate, inbox]\n"
        "approvals: {block: [delegate]}\n")
    lanes_db.add_lane(store, "t1", "care", "careful", "plan the docs")
    lanes_db.set_lane_state(store, "t1", "care", "running")
    return mcp_server.build_server(mcp_server.open_team(team.root, env=lane_env(team, lane="care", role="careful")))


async def until(check, tries: int = 100):
    for _ in range(tries):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("never happened")


def test_an_ask_the_client_cancels_expires(seeded):
    """An agent that gives up on a blocking ask (its own tool timeout, the user pressing Esc) cancels it: the
    question expires as on a timeout, so its lane is not taken for one stuck in an ask (a question to it would go
    to a consult lane instead)."""
    team, store = seeded
    srv = careful_lane(team, store)

    async def talk():
        async with Client(srv) as client:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(client.call_tool("ask", {"role": "reviewer", "question": "Which guide?"}), 1.0)
            await until(lambda: store.scalar("SELECT state FROM messages WHERE from_lane='t1/care'") != "new")

    run(talk())
    assert store.scalar("SELECT state FROM messages WHERE from_lane='t1/care'") == "expired"
    assert not msgs.waiting_on_ask(store, "t1/care")


def test_a_blocked_call_the_client_cancels_withdraws_its_approval(seeded, cli):
    """An agent that gives up on a call waiting for a human's yes or no cancels it: its request is withdrawn and its
    lane runs again, so no human is asked about a call nobody waits for (it stayed pending, and the lane waiting,
    until approval_timeout_s, when it expired and paused the lane). The same call made again asks anew."""
    team, store = seeded
    srv = careful_lane(team, store)
    goal = {"role": "writer", "goal": "write the docs"}

    def asked() -> list[int]:
        return [a["id"] for a in ap.pending(store) if a["tool"] == "delegate"]

    async def talk():
        async with Client(srv) as client:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(client.call_tool("delegate", goal), 1.0)
            first = store.scalar("SELECT id FROM approvals WHERE tool='delegate'")
            await until(lambda: not asked())
            shown = (cli("approvals", "--json", "-C", team.root), cli("lanes", "--json", "-C", team.root))
            again = asyncio.ensure_future(client.call_tool("delegate", goal))
            await until(asked)
            (second,) = asked()
            ap.approve(store, second, by="human:Test Person")
            return first, second, shown, await again

    first, second, (approvals, lanes), again = run(talk())
    row = ap.get(store, first)
    assert row["state"] == "withdrawn" and "its call was cancelled" in row["note"]
    (withdrawn,) = store.events(kinds=["approval.withdrawn"])
    assert withdrawn["data"]["id"] == first
    assert [a["tool"] for a in json.loads(approvals.out)["pending"]] == ["run"]   # the seeded one only
    assert {(r["lane"], r["state"]) for r in json.loads(lanes.out)} >= {("care", "running")}
    assert second != first and not again.is_error and "added for writer" in text(again)
    assert lanes_db.get_lane(store, "t1", "care")["state"] == "running"


def short_asks(team, seconds: float) -> None:
    path = team.root / "cowork.toml"
    path.write_text(path.read_text().replace("ask_timeout_s = 900.0", f"ask_timeout_s = {seconds}"))


def reviewer_answers(store, body: str) -> None:
    q = msgs.get(store, store.scalar("SELECT id FROM messages WHERE kind='ask' AND to_lane='t1/rev'"))
    msgs.answer(store, q, from_role="reviewer", from_lane="t1/rev", body=body)


async def asked_reviewer(store) -> None:
    while not store.one("SELECT id FROM messages WHERE kind='ask' AND to_lane='t1/rev'"):
        await asyncio.sleep(0.05)


def test_a_pause_holds_an_ask_in_flight(seeded):
    """Pause-all while a lane's ask waits: the ask's clock stops with everything else, so the answer given after
    the pause still reaches it (it timed out during the pause before, with no lane able to answer)."""
    from cowork.runner import control

    team, store = seeded
    short_asks(team, 2)
    srv = mcp_server.build_server(mcp_server.open_team(team.root, env=lane_env(team)))

    async def talk():
        async with Client(srv) as client:
            asking = asyncio.ensure_future(client.call_tool("ask", {"role": "reviewer", "question": "Which DB?"}))
            await asked_reviewer(store)
            control.pause(store, by="human:Test Person", reason="lunch")
            await asyncio.sleep(3.5)
            held = not asking.done()
            control.unpause(store, by="human:Test Person")
            reviewer_answers(store, "Postgres")
            return held, await asking

    held, asked = run(talk())
    assert held and not asked.is_error and "Postgres" in text(asked)


def test_an_ask_outlasts_its_server_being_stopped_for_a_pause(seeded):
    """The command engine stops an external agent's process group, its MCP server with it, while paused (SIGSTOP)
    and continues it after: the time stopped does not count against the ask either (it timed out at once)."""
    import signal
    from pathlib import Path

    team, store = seeded
    short_asks(team, 3)
    params = StdioServerParameters(command=sys.executable, args=["-m", "cowork", "mcp", "serve", "-C", str(team.root),
                                                                 "--task", "t1", "--lane", "impl", "--role", "dev"],
                                   env={k: v for k, v in os.environ.items() if not k.startswith("COWORK_")})

    def server_pid() -> int:
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                stat = (proc / "stat").read_text().rsplit(") ", 1)[1].split()
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except (OSError, IndexError):
                continue
            if int(stat[1]) == os.getpid() and b"serve" in argv and str(team.root).encode() in argv:
                return int(proc.name)
        raise AssertionError("no server process")

    async def talk():
        async with Client(params, read_timeout_seconds=30) as client:
            asking = asyncio.ensure_future(client.call_tool("ask", {"role": "reviewer", "question": "Which DB?"}))
            await asked_reviewer(store)
            pid = server_pid()
            os.kill(pid, signal.SIGSTOP)
            try:
                await asyncio.sleep(5)
            finally:
                os.kill(pid, signal.SIGCONT)
            await asyncio.sleep(0.5)
            reviewer_answers(store, "Postgres")
            return await asking

    asked = run(talk())
    assert not asked.is_error and "Postgres" in text(asked)


HOLD = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("holding", flush=True)
sys.stdin.read()
db.execute("COMMIT")
"""


def test_a_busy_store_is_a_plain_tool_error_and_the_server_carries_on(seeded, monkeypatch):
    """Another process holds the store's write lock past the busy timeout: a call that must write says the store
    is busy and to try again (it said "OperationalError: database is locked"), and works once the lock is free."""
    import subprocess

    from cowork.store import db

    team, store = seeded
    monkeypatch.setattr(db, "BUSY_TIMEOUT_MS", 1000)   # the servers' connections give up after 1s, not 10
    dev = mcp_server.build_server(mcp_server.open_team(team.root, env=lane_env(team)))
    human = mcp_server.build_server(mcp_server.open_team(team.root, env={}))

    async def talk():
        async with Client(dev) as lane, Client(human) as person:
            holder = subprocess.Popen([sys.executable, "-c", HOLD, str(team.db_path)], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True)
            try:
                assert holder.stdout.readline().strip() == "holding"
                busy = await asyncio.gather(lane.call_tool("tell", {"role": "reviewer", "note": "v2 is out"}),
                                            person.call_tool("say", {"target": "@team", "text": "v2 is out"}))
            finally:
                holder.communicate("")
            again = [await lane.call_tool("tell", {"role": "reviewer", "note": "v2 is out"}),
                     await person.call_tool("say", {"target": "@team", "text": "v2 is out"})]
        return busy, again

    busy, again = run(talk())
    for res in busy:
        assert res.is_error and "the team's store (.cowork/state.db) is busy: another cowork process has held its " \
            "write lock for over 1s; try again in a moment" in text(res), text(res)
        assert "OperationalError" not in text(res)
    assert not any(res.is_error for res in again)


def test_a_broken_store_is_a_clear_error_at_start_not_a_traceback(seeded, cli):
    team, store = seeded
    store.close()
    for extra in team.db_path.parent.glob(team.db_path.name + "-*"):
        extra.unlink()
    team.db_path.write_text("not sqlite at all\n" * 100)
    res = cli("mcp", "serve", "-C", team.root)
    assert res.code == 1 and "Traceback" not in res.err
    assert f"cannot open the store {team.db_path}: file is not a database" in res.err
    assert "move it aside" in res.err


AGENT = """
import asyncio, json, os, sys
from mcp import Client, StdioServerParameters

argv = json.loads(os.environ["COWORK_MCP_COMMAND"])
scrubbed = {"PATH": os.environ.get("PATH", "")}   # as agent CLIs often start their MCP servers


async def main():
    params = StdioServerParameters(command=argv[0], args=argv[1:], env=scrubbed)
    async with Client(params, read_timeout_seconds=20) as client:
        res = await client.call_tool("tell", {"role": "dev", "note": "hello from " + sys.argv[1]})
    print(res.content[0].text)
    return 1 if res.is_error else 0

sys.exit(asyncio.run(main()))
"""


def test_command_engine_agent_joins_the_team_through_cowork_mcp_command(seeded, tmp_path):
    """A real command-engine lane whose agent starts the server from COWORK_MCP_COMMAND and tells dev."""
    from cowork.runner.journal import Journal

    team, store = seeded
    script = tmp_path / "agent.py"
    script.write_text(AGENT)
    (team.roles_dir / "outside.yaml").write_text(
        "name: outside\nmandate: An external agent CLI.\nengine: command\n"
        f"command: [{json.dumps(sys.executable)}, {json.dumps(str(script))}, '{{goal}}']\ntools: [tell, inbox]\n")
    lanes_db.add_lane(store, "t1", "ext", "outside", "the-goal")
    lanes_db.set_lane_state(store, "t1", "ext", "running")
    team_ = mcp_server.open_team(team.root, env={})
    worktree = tmp_path / "wt"
    worktree.mkdir()
    ctx = mcp_server.LaneCtx(ws=team, store=store, settings=team_.settings, roles=team_.roles,
                             role=team_.roles.roles["outside"], task_id="t1", lane_id="ext", worktree=worktree)
    log = tmp_path / "ext.log"
    out = run(command_engine.run_command_lane(ctx, Journal(store, "t1", "ext"), log_path=log))
    assert out.status == "done", log.read_text()
    row = store.one("SELECT * FROM messages WHERE kind='tell'")
    assert (row["from_role"], row["from_lane"], row["to_role"], row["body"]) == ("outside", "t1/ext", "dev",
                                                                                 "hello from the-goal")
    assert "posted #" in log.read_text()


# -- the real thing: a subprocess on stdio ---------------------------------------------------------------------------

def test_stdio_subprocess_serves_the_team(seeded):
    team, _ = seeded
    params = StdioServerParameters(command=sys.executable, args=["-m", "cowork", "mcp", "serve", "-C", str(team.root)],
                                   env={k: v for k, v in os.environ.items() if not k.startswith("COWORK_")},
                                   cwd=str(team.root))

    async def talk():
        async with Client(params, read_timeout_seconds=20) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            st = await client.call_tool("status", {})
        return names, st

    names, st = run(talk())
    assert names == HUMAN_TOOLS
    data = json.loads(text(st))
    assert data["team"] == st.structured_content["team"] and data["lanes"] == {"running": 2}
