"""A provider's passing trouble (429, 5xx, a timeout, a refused connection) is retried with backoff before the next
fallback; its own verdicts (400, 401, 403, 404) and replies without a message go straight to the fallback. Every
call goes through litellm to the scripted server on 127.0.0.1."""
from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

from cowork.engines import models
from cowork.engines.models import ModelChoice, ModelError
from cowork.runner import control
from cowork.runner.journal import Journal
from cowork.store import Store
from cowork.store import lanes as lanes_db
from tests.support.scripted_server import delay, error, raw, text, tool_call
from tests.support.team import DEV, PLANNER, make_team

FAST = {"attempts": 3, "backoff_s": 0.01, "max_backoff_s": 0.05}  # retries that cost a test nothing


def choice(server, **kw) -> ModelChoice:
    return ModelChoice(model="openai/scripted", api_base=server.url,
                       **{"api_key": "sk-test-never-shown-0123456789", "timeout_s": 30, **FAST, **kw})


def flaky(*failures: dict, then: dict | None = None):
    """A reply that fails as `failures` say, one per request, then answers `then` (the server keeps no state)."""
    seen: list[int] = []

    def reply(body: dict) -> dict:
        seen.append(1)
        return failures[len(seen) - 1] if len(seen) <= len(failures) else (then or text("ok"))

    return reply


def ask(c: ModelChoice, key: str, **kw) -> models.Completion:
    return asyncio.run(models.complete(c, [{"role": "user", "content": key}], **kw))


def empty_reply(**over) -> dict:
    body = {"id": "chatcmpl-empty", "object": "chat.completion", "created": int(time.time()), "model": "scripted",
            "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 0, "total_tokens": 3}}
    return raw({**body, **over})


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_a_transient_error_is_retried_and_each_retry_is_told(server, status):
    server.script("flaky", [flaky(error(status, "busy"), error(status, "still busy"))])
    retries: list[tuple] = []
    reply = ask(choice(server), "flaky", on_retry=lambda *a: retries.append(a))
    assert reply.message["content"] == "ok" and reply.model == "openai/scripted"
    assert server.calls("flaky") == 3
    assert [(m, n) for m, _, n, _ in retries] == [("openai/scripted", 1), ("openai/scripted", 2)]
    assert all(0 < wait <= FAST["max_backoff_s"] for *_, wait in retries)
    assert "busy" in retries[0][1] and server.url in retries[0][1]


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_the_providers_own_verdict_is_not_retried(server, status):
    server.script("no", [error(status, "you may not")])
    falls: list[tuple] = []
    retries: list[tuple] = []
    c = choice(server, fallbacks=["openai/backup"])
    with pytest.raises(ModelError) as err:
        ask(c, "no", on_fallback=lambda *a: falls.append(a), on_retry=lambda *a: retries.append(a))
    assert [r.model for r in server.requests] == ["scripted", "backup"]  # once each, no retry
    assert retries == [] and [(f, n) for f, n, _ in falls] == [("openai/scripted", "openai/backup")]
    assert "you may not" in err.value.message


def test_a_context_length_error_goes_straight_to_the_fallback(server):
    server.script("long", [error(400, "This model's maximum context length is 8192 tokens. However, your "
                                      "messages resulted in 9000 tokens.")])
    with pytest.raises(ModelError, match="context"):
        ask(choice(server), "long")
    assert server.calls("long") == 1


def test_litellms_own_500s_for_trouble_on_this_side_are_not_retried(server, monkeypatch):
    """litellm calls a missing key, or a reply it cannot read, an InternalServerError too: no HTTP answer and no
    broken connection under it, so another try would only repeat it."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    server.script("unreadable", [empty_reply(choices=[{"index": 0, "finish_reason": "stop"}])])
    retries: list[tuple] = []
    with pytest.raises(ModelError, match="Missing credentials"):
        ask(choice(server, api_key=None), "no key", on_retry=lambda *a: retries.append(a))
    assert not server.requests
    with pytest.raises(ModelError, match="Invalid response object"):
        ask(choice(server), "unreadable", on_retry=lambda *a: retries.append(a))
    assert server.calls("unreadable") == 1 and retries == []


def test_retries_run_out_then_the_fallback_is_tried(server):
    server.script("down", [text("from the backup")])
    server.fail_model("scripted", 503)
    falls: list[tuple] = []
    reply = ask(choice(server, attempts=2, fallbacks=["openai/backup"]), "down",
                on_fallback=lambda *a: falls.append(a))
    assert [r.model for r in server.requests] == ["scripted", "scripted", "backup"]
    assert reply.model == "openai/backup" and len(falls) == 1


def test_every_try_failing_names_the_tries(server):
    server.fail_model("scripted", 500)
    server.script("", [text("never")])
    with pytest.raises(ModelError) as err:
        ask(choice(server, attempts=3), "x")
    assert server.calls("") == 3
    assert "3 tries" in err.value.message and "openai/scripted" in err.value.message


def test_the_backoff_grows_with_jitter_and_stops_at_the_cap(server):
    server.fail_model("scripted", 503)
    server.script("", [text("never")])
    retries: list[tuple] = []
    with pytest.raises(ModelError):
        ask(choice(server, attempts=5, backoff_s=0.02, max_backoff_s=0.05), "x",
            on_retry=lambda *a: retries.append(a))
    waits = [w for *_, w in retries]
    assert len(waits) == 4
    assert 0.01 <= waits[0] <= 0.02      # half the base or more, never above it
    assert 0.02 <= waits[1] <= 0.04
    assert all(w <= 0.05 for w in waits)  # the cap


def test_retry_after_is_honoured_and_capped(server):
    server.script("later", [flaky(error(429, "slow down", {"retry-after-ms": "300"}),
                                  error(429, "slow down", {"Retry-After": "120"}))])
    retries: list[tuple] = []
    t0 = time.perf_counter()
    reply = ask(choice(server, backoff_s=0.01, max_backoff_s=0.5), "later", on_retry=lambda *a: retries.append(a))
    took = time.perf_counter() - t0
    assert reply.message["content"] == "ok"
    assert [w for *_, w in retries] == [pytest.approx(0.3), pytest.approx(0.5)]  # the provider's word, capped
    assert took >= 0.8


def test_a_timeout_is_retried(server):
    server.script("slow once", [flaky(delay(2.0, text("too late")), then=text("in time"))])
    reply = ask(choice(server, timeout_s=0.5), "slow once")
    assert reply.message["content"] == "in time" and server.calls("slow once") == 2


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_refused_connection_is_retried_and_names_the_server_never_the_key():
    base = f"http://127.0.0.1:{_closed_port()}/v1"
    c = ModelChoice(model="openai/scripted", api_base=base, api_key="sk-test-never-shown-0123456789", timeout_s=5,
                    **FAST)
    retries: list[tuple] = []
    with pytest.raises(ModelError) as err:
        ask(c, "anyone there?", on_retry=lambda *a: retries.append(a))
    msg = err.value.message
    assert len(retries) == 2 and base in retries[0][1]
    assert base in msg and "connect" in msg.lower() and "3 tries" in msg
    assert "sk-test" not in msg and "sk-test" not in retries[0][1]
    # the fix names the server to start and where its address is set, not "[model] in cowork.toml" alone
    assert f"nothing answered at {base}: start the model server" in err.value.hint
    assert "COWORK_API_BASE" in err.value.hint


def test_the_fix_for_a_failed_model_says_where_the_model_was_chosen(server):
    """A user who set COWORK_MODEL was told to check [model] in cowork.toml; a model string litellm cannot place
    gets the PROVIDER/MODEL form."""
    server.fail_model("scripted", 401)
    with pytest.raises(ModelError) as err:
        ask(choice(server, source="COWORK_MODEL"), "who am I?")
    assert "the model comes from COWORK_MODEL" in err.value.hint and "cowork.toml" not in err.value.hint
    with pytest.raises(ModelError) as err:
        ask(ModelChoice(model="foo/bar", api_key="k", timeout_s=5, source="COWORK_MODEL", **FAST), "hello")
    assert "litellm knows no provider for 'foo/bar'" in err.value.hint and "PROVIDER/MODEL" in err.value.hint
    assert "the model comes from COWORK_MODEL" in err.value.hint


def test_the_api_base_is_shown_without_credentials(server):
    port = _closed_port()
    c = ModelChoice(model="openai/scripted", api_base=f"http://user:hunter2secret@127.0.0.1:{port}/v1?key=abc123",
                    timeout_s=5, attempts=1)
    with pytest.raises(ModelError) as err:
        ask(c, "x")
    assert f"http://127.0.0.1:{port}/v1" in err.value.message
    assert "hunter2" not in err.value.message and "abc123" not in err.value.message


def test_a_pause_during_a_backoff_holds_the_retry(server):
    """The wait between tries is not blind: a pause set during it is seen at once, and no retry leaves while the
    lane is paused."""
    server.script("held", [flaky(error(503, "busy"))])
    paused = threading.Event()
    held_at: list[float] = []

    async def scenario() -> models.Completion:
        async def hold() -> None:
            if paused.is_set():
                held_at.append(time.perf_counter())
                await asyncio.sleep(0.6)  # the human takes a while to unpause
                paused.clear()

        loop = asyncio.get_running_loop()
        loop.call_later(0.3, paused.set)  # during a 2 s backoff
        return await models.complete(choice(server, backoff_s=4.0, max_backoff_s=2.0),
                                     [{"role": "user", "content": "held"}], hold=hold)

    t0 = time.perf_counter()
    reply = asyncio.run(scenario())
    assert reply.message["content"] == "ok"
    assert held_at and held_at[0] - t0 < 1.0  # seen within the backoff, not after it
    first, second = server.requests
    assert second.at - first.at >= 1.0  # the backoff still ran (the pause counted towards it)


def test_a_reply_without_choices_is_a_model_error_and_falls_back(server):
    server.script("hollow", [empty_reply()])
    server.script("backup says", [text("unused")])
    falls: list[tuple] = []
    with pytest.raises(ModelError) as err:
        ask(choice(server, fallbacks=["openai/backup"]), "hollow", on_fallback=lambda *a: falls.append(a))
    assert [r.model for r in server.requests] == ["scripted", "backup"]  # not retried: the provider answered
    assert "no message" in err.value.message and len(falls) == 1


def test_a_cheap_step_without_choices_is_a_model_error(server):
    server.script("hollow", [empty_reply()])
    with pytest.raises(ModelError, match="no message"):
        models.complete_text(choice(server), [{"role": "user", "content": "hollow"}])


def test_a_cheap_step_retries_passing_trouble_as_a_lane_does(server):
    """`complete_text` (summaries, other cheap steps) follows the lanes' retry policy: transient errors are tried
    again up to `attempts` tries, the provider's own verdicts are not."""
    server.script("flaky", [flaky(error(503, "overloaded"), error(429, "slow down"), then=text("fine"))])
    retries: list[tuple] = []
    reply = models.complete_text(choice(server), [{"role": "user", "content": "flaky"}],
                                 on_retry=lambda *a: retries.append(a))
    assert reply.message["content"] == "fine" and server.calls("flaky") == 3
    assert [(m, n) for m, _, n, _ in retries] == [("openai/scripted", 1), ("openai/scripted", 2)]
    assert "overloaded" in retries[0][1] and all(0 < w <= FAST["max_backoff_s"] for *_, w in retries)

    server.script("no", [error(400, "you may not")])
    with pytest.raises(ModelError, match="you may not"):
        models.complete_text(choice(server), [{"role": "user", "content": "no"}])
    assert server.calls("no") == 1

    server.fail_model("scripted", 500)
    with pytest.raises(ModelError, match="3 tries"):
        models.complete_text(choice(server), [{"role": "user", "content": "flaky"}])


# ---------------------------------------------------------------- through the runner


@pytest.fixture()
def _env(monkeypatch):
    monkeypatch.setenv("SCRIPTED_KEY", "test-key")


def team(tmp_path, server, model_toml: str) -> tuple:
    root = make_team(tmp_path / "repo", server.url, {"planner": PLANNER, "dev": DEV}, model_toml=model_toml)
    return root, Store(root / ".cowork" / "state.db")


def delegate(root, goal) -> int:
    from cowork.cli.app import main

    return main(["delegate", goal, "--to", "dev", "--yes", "-C", str(root)])


def finish(summary="done"):
    return tool_call("finish", status="done", summary=summary, checklist=[{"item": summary, "done": True}])


def test_a_lane_rides_out_a_passing_outage_and_the_timeline_shows_each_retry(tmp_path, server, _env):
    root, st = team(tmp_path, server, "attempts = 3\nbackoff_s = 0.01\nmax_backoff_s = 0.05\n")
    server.script("Goal: Persist", [flaky(error(503, "overloaded"), error(429, "slow down"),
                                          then=tool_call("write_file", path="p.txt", content="p\n")), finish()])
    assert delegate(root, "Persist") == 0
    task = st.scalar("SELECT id FROM tasks")
    retries = st.events(task=task, kinds=["model.retry"])
    assert len(retries) == 2
    first = retries[0]
    assert first["lane_id"] == "work" and f"{task}/work" in first["summary"] and "openai/scripted" in first["summary"]
    assert first["data"]["model"] == "openai/scripted" and "overloaded" in first["data"]["error"]
    assert 0 < first["data"]["wait_s"] <= 0.05 and first["data"]["attempt"] == 1
    steps = [s for s in Journal(st, task, "work").steps if s.kind == "model"]
    assert [s.state for s in steps] == ["done", "done"]  # the retries stayed inside their journal step


def test_a_reply_without_choices_fails_the_lane_and_finishes_its_step(tmp_path, server, _env):
    root, st = team(tmp_path, server, "")
    server.script("Goal: Hollow", [empty_reply()])
    assert delegate(root, "Hollow") == 1
    task = st.scalar("SELECT id FROM tasks")
    row = lanes_db.get_lane(st, task, "work")
    assert row["state"] == "failed" and "no message" in row["error"] and "openai/scripted" in row["error"]
    steps = [s for s in Journal(st, task, "work").steps if s.kind == "model"]
    assert [s.state for s in steps] == ["failed"]


def test_a_pause_during_a_lane_backoff_shows_at_once_and_holds_the_retry(tmp_path, server, _env):
    root, st = team(tmp_path, server, "attempts = 2\nbackoff_s = 2.0\nmax_backoff_s = 2.0\n")
    server.script("Goal: Wait it out", [flaky(error(503, "overloaded"),
                                              then=tool_call("write_file", path="w.txt", content="w\n")), finish()])
    result: dict = {}
    t = threading.Thread(target=lambda: result.update(rc=delegate(root, "Wait it out")), daemon=True)
    t.start()
    deadline = time.time() + 20
    while not st.scalar("SELECT count(*) FROM events WHERE kind='model.retry'") and time.time() < deadline:
        time.sleep(0.02)
    task = st.scalar("SELECT id FROM tasks")
    control.pause(st, by="human:test")
    paused_at = time.time()
    while lanes_db.get_lane(st, task, "work")["state"] != "paused" and time.time() < deadline:
        time.sleep(0.02)
    assert lanes_db.get_lane(st, task, "work")["state"] == "paused"
    assert time.time() - paused_at < 1.0  # not after the 1-2 s backoff
    time.sleep(2.5)  # longer than the backoff: no retry leaves while paused
    assert server.calls("Goal: Wait it out") == 1
    control.unpause(st, by="human:test")
    t.join(30)
    assert result == {"rc": 0}
    assert server.calls("Goal: Wait it out") == 3


def test_a_planner_reply_without_choices_fails_planning_clearly_and_finishes_its_step(tmp_path, server, _env, cli):
    root, st = team(tmp_path, server, "")
    server.script("", [empty_reply()])
    result = cli("delegate", "Plan this", "--yes", "-C", root)
    assert result.code == 1 and "no message" in result.err
    steps = [s for s in Journal(st, st.scalar("SELECT id FROM tasks"), "_plan").steps if s.kind == "model"]
    assert [s.state for s in steps] == ["failed"]


def test_planning_is_counted_and_a_retried_planner_call_is_told(tmp_path, server, _env, cli):
    """The planner's model calls are usage like a lane's (role = the planner, lane `_plan`), and its retries show
    on the timeline as `model.retry` events."""
    root, st = team(tmp_path, server, "attempts = 3\nbackoff_s = 0.01\nmax_backoff_s = 0.05\n")
    plan = tool_call("submit_plan", title="One", lanes=[{"id": "one", "role": "dev", "goal": "Write one.txt"}])
    server.script("You are planner", [flaky(error(503, "overloaded"), then=plan)])
    server.script("Goal: Write one.txt", [tool_call("write_file", path="one.txt", content="1\n"), finish()])
    assert cli("delegate", "Plan this", "--yes", "-C", root).code == 0
    task = st.scalar("SELECT id FROM tasks")
    rows = st.all("SELECT role, lane_id, tokens_in, tokens_out FROM costs WHERE lane_id='_plan'")
    assert [(r["role"], r["lane_id"]) for r in rows] == [("planner", "_plan")]
    assert rows[0]["tokens_in"] + rows[0]["tokens_out"] > 0
    retries = st.events(task=task, kinds=["model.retry"])
    assert len(retries) == 1 and retries[0]["role"] == "planner" and "overloaded" in retries[0]["data"]["error"]
    assert "openai/scripted" in retries[0]["summary"] and retries[0]["data"]["attempt"] == 1


def test_the_task_overview_rides_out_a_passing_outage_and_a_lasting_one_still_ends_the_task(tmp_path, server, _env):
    """The cheap model's overview in summary.md is retried like a lane's call, each retry on the timeline; when
    every try fails the task still ends, its summary written without the overview."""
    from tests.support.team import git

    root, st = team(tmp_path, server, 'cheap = "openai/cheapo"\nattempts = 3\nbackoff_s = 0.01\n'
                                      'max_backoff_s = 0.05\n')
    overview = "You summarise a finished task"
    server.script("Goal: Persist", [tool_call("write_file", path="p.txt", content="p\n"), finish()])
    server.script(overview, [flaky(error(503, "overloaded"), then=text("The lane wrote p.txt."))])
    assert delegate(root, "Persist") == 0
    task = st.scalar("SELECT id FROM tasks")
    assert "The lane wrote p.txt." in git(root, "show", f"main:handoffs/{task}/summary.md")
    assert server.calls(overview) == 2
    [retried] = st.events(task=task, kinds=["model.retry"])
    assert retried["data"]["model"] == "openai/cheapo" and "overloaded" in retried["data"]["error"]
    assert retried["data"]["attempt"] == 1 and task in retried["summary"]

    server.fail_model("cheapo", 503)
    server.script("Goal: Again", [tool_call("write_file", path="a.txt", content="a\n"), finish()])
    assert delegate(root, "Again") == 0
    task2 = st.scalar("SELECT id FROM tasks WHERE id != ?", (task,))
    assert lanes_db.get_task(st, task2)["state"] == "done"
    assert server.calls(overview) == 2 + 3
    assert "Task " + task2 + " ended **done**." in git(root, "show", f"main:handoffs/{task2}/summary.md")
    [failed] = st.events(task=task2, kinds=["task.overview_failed"])
    assert "3 tries" in failed["summary"] and len(st.events(task=task2, kinds=["model.retry"])) == 2
