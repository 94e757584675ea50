"""Budgets on a real store: caps per task, role and day; wrap-up; the stop at the cap; raises; plan estimates."""
from __future__ import annotations

import asyncio

import pytest

from cowork.errors import BadInput
from cowork.plan import LaneSpec, Plan, PlanMeta
from cowork.store import lanes as lanes_db
from cowork.team import budgets
from tests.support.lanectx import TeamEnv
from tests.support.scripted_server import ScriptedServer, delay, tool_call

ROLES = {"dev": {"tools": ["read_file"], "budget": {"usd_per_task": 1.0}},
         "writer": {"tools": ["read_file"], "budget": {"tokens_per_day": 1000}, "model": "my/model"}}
TOML = """
[budget]
usd_per_task = 2.0
usd_per_day = 10.0
wrap_up_at = 0.8

[prices."my/model"]
input_per_mtok = 1000.0
output_per_mtok = 2000.0

[prices."openai/scripted"]
input_per_mtok = 150.0
output_per_mtok = 150.0
"""


@pytest.fixture
def env(tmp_path):
    return TeamEnv(tmp_path, ROLES, TOML)


def spend(env, usd, *, task="t1", role="dev", tokens=(0, 0)):
    budgets.record_usage(env.store, task=task, lane="l1", role=role, model="m", tokens_in=tokens[0],
                         tokens_out=tokens[1], usd=usd)


def test_spend_seen_inside_a_transaction_that_rolls_back_is_not_kept(env):
    dev = env.roles["dev"]
    spend(env, 0.5)
    assert budgets.check(env.store, env.settings, dev, "t1").state == "ok"       # running totals start here
    with pytest.raises(RuntimeError):
        with env.store.tx():
            spend(env, 0.6)
            assert budgets.check(env.store, env.settings, dev, "t1").state == "exceeded"
            raise RuntimeError("rolled back")
    assert budgets.check(env.store, env.settings, dev, "t1").state == "ok"       # $0.50 again
    spend(env, 0.35)                                                             # the same row id, reused
    st = budgets.check(env.store, env.settings, dev, "t1")
    assert st.state == "wrap_up" and "task/role $0.85 of $1.00" in st.message


def test_states_follow_the_tightest_cap(env):
    dev = env.roles["dev"]
    assert budgets.check(env.store, env.settings, dev, "t1").state == "ok"
    spend(env, 0.79)
    assert budgets.check(env.store, env.settings, dev, "t1").state == "ok"
    spend(env, 0.02)                                           # 0.81 of the role's $1 per task
    st = budgets.check(env.store, env.settings, dev, "t1")
    assert st.state == "wrap_up" and "task/role $0.81 of $1.00" in st.message and "wrap up" in st.message
    spend(env, 0.2)
    st = budgets.check(env.store, env.settings, dev, "t1")
    assert st.state == "exceeded" and "task/role" in st.message
    # another task of the same role is not affected; the team's day cap still counts everything
    assert budgets.check(env.store, env.settings, dev, "t2").state == "ok"
    spend(env, 8.0, task="t3", role="writer")
    assert budgets.check(env.store, env.settings, dev, "t2").state == "wrap_up"   # $9.01 of $10 today
    spend(env, 1.0, task="t3", role="writer")
    assert "day $10.01 of $10.00" in budgets.check(env.store, env.settings, dev, "t2").message


def test_token_caps_and_prices(env):
    writer = env.roles["writer"]
    assert budgets.price(env.settings, "my/model", 1000, 500) == pytest.approx(1.0 + 1.0)
    assert budgets.price(env.settings, "gpt-4o-mini", 1_000_000, 0) > 0          # litellm knows it
    assert budgets.price(env.settings, "nobody/knows", 1000, 1000) == 0.0
    usd = budgets.record_usage(env.store, task="t1", lane="w", role="writer", model="my/model", tokens_in=600,
                               tokens_out=400, settings=env.settings)
    assert usd == pytest.approx(0.6 + 0.8)
    assert budgets.check(env.store, env.settings, writer, "t1").state == "exceeded"    # 1000 tokens today


def test_the_gateway_warns_once_then_stops_at_the_cap(env):
    g = env.gateway("dev")
    spend(env, 0.85)
    notes = g.between_steps()
    assert len(notes) == 1 and "wrap up" in notes[0]
    assert g.between_steps() == []
    assert len(env.events("budget.warning")) == 1
    spend(env, 0.2)
    assert g.before_model_call() and "budget exceeded" in g.stop
    assert g.budget_state()[0] == "exceeded"
    assert len(env.events("budget.exceeded")) == 1
    row = lanes_db.get_lane(env.store, "t1", "l1")
    assert row["state"] == "blocked" and row["error"].startswith("budget exceeded: ")


def test_a_raise_requeues_the_blocked_lane(env, cli):
    g = env.gateway("dev")
    spend(env, 1.5)
    assert g.before_model_call()
    status = cli("status", "-C", str(env.root))  # status says what waits, and how to let it go on
    assert "t1/l1 waits at a budget cap" in status.out and "`cowork budget raise`" in status.out
    out = cli("budget", "raise", "--task", "t1", "--usd", "1", "-C", str(env.root))
    assert out.code == 0 and "queued again: t1/l1" in out.out
    assert lanes_db.get_lane(env.store, "t1", "l1")["state"] == "queued"
    # role cap $1 + $1 raised = $2 > $1.50 spent; the team's task cap $2 + $1 = $3
    assert budgets.check(env.store, env.settings, env.roles["dev"], "t1").state == "ok"
    assert env.events("budget.raised")
    with pytest.raises(BadInput):
        budgets.raise_cap(env.store, by="human:x", usd=1)
    with pytest.raises(BadInput):
        budgets.raise_cap(env.store, by="human:x", task="t1")
    assert cli("budget", "raise", "--usd", "1", "-C", str(env.root)).code == 2
    typo = cli("budget", "raise", "--task", "t9-nope", "--usd", "1", "-C", str(env.root))
    assert typo.code == 2 and "no task 't9-nope'" in typo.err
    nobody = cli("budget", "raise", "--role", "nobody", "--usd", "1", "-C", str(env.root))  # a typo raises nothing
    assert nobody.code == 2 and "no role 'nobody'" in nobody.err
    assert not env.store.flag("budget:role:nobody")
    assert cli("budget", "raise", "--role", "dev", "--usd", "1", "-C", str(env.root)).code == 0


def test_budget_cli_shows_spend_against_caps(env, cli):
    spend(env, 0.5)
    out = cli("budget", "--json", "-C", str(env.root))
    assert out.code == 0
    data = out.json()
    assert data["today"]["usd"] == pytest.approx(0.5) and data["today"]["by_role"]["dev"]["usd"] == pytest.approx(0.5)
    assert data["tasks"][0]["task"] == "t1" and data["tasks"][0]["caps"][0]["limit"] == 2.0
    text = cli("budget", "-C", str(env.root)).out
    assert "today" in text and "t1: task $0.50 of $2.00" in text


def test_estimate_plan(env):
    plan = Plan(meta=PlanMeta(title="p"), lanes=[LaneSpec(id="a", role="writer", goal="g"),
                                                  LaneSpec(id="b", role="dev", goal="g")])
    est = budgets.estimate_plan(plan, env.roles, env.settings)
    a = est["lanes"][0]
    assert a["model"] == "my/model" and a["steps"] == budgets.TYPICAL_STEPS
    assert a["usd"] == pytest.approx(budgets.price(env.settings, "my/model", a["steps"] * budgets.TYPICAL_TOKENS_IN,
                                                   a["steps"] * budgets.TYPICAL_TOKENS_OUT))
    assert est["usd"] >= a["usd"] and est["over_cap"] is True


def test_a_budget_is_never_exceeded_by_more_than_one_model_call(env, monkeypatch):
    """The real engine against the scripted server, priced at $0.00015 per token: it stops at the cap."""
    from cowork.engines.llm import run_llm_lane
    from cowork.runner.journal import Journal

    monkeypatch.setenv("SCRIPTED_KEY", "x")
    g = env.gateway("dev")
    (g.ctx.worktree / "README.md").write_text("x" * 400 + "\n")
    with ScriptedServer() as server:
        # a different offset each time, so the repeated-call breaker stays out of it
        server.script("You are dev", [lambda req: tool_call("read_file", path="README.md",
                                                            offset=len(req["messages"]))])
        g.ctx.settings = env.settings.model_copy(update={"model": env.settings.model.model_copy(
            update={"name": "openai/scripted", "api_base": server.url, "api_key_env": "SCRIPTED_KEY"})})
        g.ctx.settings.policy.max_steps_per_lane = 200
        out = asyncio.run(run_llm_lane(g.ctx, g, Journal(env.store, "t1", "l1"), system="You are dev.",
                                       kickoff="read forever"))
    assert out.status == "blocked" and "budget exceeded" in out.error
    costs = [r["usd"] for r in env.store.all("SELECT usd FROM costs WHERE task_id='t1' ORDER BY id")]
    total, cap = sum(costs), 1.0
    assert len(costs) >= 8 and total >= cap
    assert total - cap < costs[-1], "overshoot is at most the last call"
    assert sum(costs[:-1]) < cap, "every call but the last started under the cap"
    assert len(env.events("budget.exceeded")) == 1


def test_parallel_lanes_overshoot_a_cap_by_at_most_one_call(env, monkeypatch):
    """Four lanes of one task and role call the model at once, each reply 0.15 s late: near the cap, a lane whose
    call could cross it beside the calls in flight waits for them (`budget.wait`), so the cap is overshot by at
    most one call, as for a single lane. Without that, the calls in flight when the cap is crossed all land."""
    from cowork.engines.llm import run_llm_lane
    from cowork.runner.journal import Journal

    monkeypatch.setenv("SCRIPTED_KEY", "x")
    lanes = ["l1", "l2", "l3", "l4"]
    gateways = [env.gateway("dev", lane=lane) for lane in lanes]
    with ScriptedServer() as server:
        server.script("You are dev", [lambda req: delay(0.15, tool_call("read_file", path="README.md",
                                                                         offset=len(req["messages"])))])
        settings = env.settings.model_copy(update={"model": env.settings.model.model_copy(
            update={"name": "openai/scripted", "api_base": server.url, "api_key_env": "SCRIPTED_KEY"})})
        settings.policy.max_steps_per_lane = 200
        for g in gateways:
            (g.ctx.worktree / "README.md").write_text("x" * 400 + "\n")
            g.ctx.settings = settings

        async def all_lanes():
            return await asyncio.gather(*(run_llm_lane(g.ctx, g, Journal(env.store, "t1", g.ctx.lane_id),
                                                       system="You are dev.", kickoff="read forever")
                                          for g in gateways))

        outs = asyncio.run(all_lanes())
    assert [o.status for o in outs] == ["blocked"] * 4 and all("budget exceeded" in o.error for o in outs)
    costs = [r["usd"] for r in env.store.all("SELECT usd FROM costs WHERE task_id='t1' ORDER BY id")]
    total, cap = sum(costs), 1.0
    assert len(costs) >= 8 and total >= cap
    assert total - cap < max(costs), f"overshot by ${total - cap:.3f}, more than one call (at most ${max(costs):.3f})"
    assert env.events("budget.wait"), "near the cap, lanes waited for the calls in flight"
    assert budgets.in_flight(env.store).calls == {}, "every reservation was given back"
    assert env.store.scalar("SELECT COUNT(*) FROM reservations") == 0


# Another runner (another process) with a model call in flight: it reserves through cowork's own budgets module,
# then, told "done", records the call's spend and gives the reservation back.
OTHER_RUNNER = """
import sys
from cowork.store import Store
from cowork.team import budgets
db, task, usd = sys.argv[1], sys.argv[2], float(sys.argv[3])
store = Store(db)
flight = budgets.in_flight(store)
key, why = flight.try_start(store, budgets.Reservation(task, "dev", 1000, usd), lambda: [])
assert why is None, why
print("held", flush=True)
if sys.stdin.readline().strip() == "done":
    budgets.record_usage(store, task=task, lane="l1", role="dev", model="m", tokens_in=500, tokens_out=500, usd=usd)
    flight.done(store, key)
"""


def _other_runner(env, usd: float):
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", OTHER_RUNNER, str(env.store.path), "t2", str(usd)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _lane_beside(env, monkeypatch, other, end_other) -> tuple:
    """Run one lane of t1 near the shared day cap ($10) while `other` holds a call in flight; once the lane has
    called the model or waited, and 0.5 s (many polls) later, `end_other(other)`. Returns (model calls the lane made while the other call was in flight, the lane's
    outcome)."""
    from cowork.engines.llm import run_llm_lane
    from cowork.runner.journal import Journal

    monkeypatch.setenv("SCRIPTED_KEY", "x")
    g = env.gateway("dev")
    (g.ctx.worktree / "README.md").write_text("x" * 400 + "\n")
    with ScriptedServer() as server:
        server.script("You are dev", [lambda req: tool_call("read_file", path="README.md", offset=len(req["messages"]))])
        g.ctx.settings = env.settings.model_copy(update={"model": env.settings.model.model_copy(
            update={"name": "openai/scripted", "api_base": server.url, "api_key_env": "SCRIPTED_KEY"})})
        g.ctx.settings.policy.max_steps_per_lane = 200

        async def scenario():
            lane = asyncio.ensure_future(run_llm_lane(g.ctx, g, Journal(env.store, "t1", "l1"), system="You are dev.",
                                                      kickoff="read forever"))
            for _ in range(1500):  # until the lane either calls the model or waits (litellm's import comes first)
                if server.calls("You are dev") or env.events("budget.wait"):
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.5)  # many polls
            held = server.calls("You are dev")
            await asyncio.to_thread(end_other, other)
            return held, await lane

        return asyncio.run(scenario())


def test_a_call_in_flight_in_another_runner_holds_back_a_lane_near_a_shared_cap(env, monkeypatch):
    """Two tasks, two runners (processes), one day cap: a lane whose call could cross the cap beside the other
    runner's call in flight waits for it, as it would for a lane of its own runner. Before, each runner counted only
    its own calls, so every runner could overshoot a shared cap by a call."""
    spend(env, 9.8, task="t0")                                       # today: $9.80 of the $10 day cap
    other = _other_runner(env, 0.15)

    def finish(proc) -> None:
        proc.stdin.write("done\n")
        proc.stdin.close()
        assert proc.wait(10) == 0

    held, out = _lane_beside(env, monkeypatch, other, finish)
    assert held == 0, "the lane called the model while the other runner's call could cross the cap"
    waits = env.events("budget.wait")
    assert waits and waits[0]["data"]["in_flight"] == 1 and "day $9.80 of $10.00" in waits[0]["summary"]
    assert out.status == "blocked" and "budget exceeded" in out.error
    day_total = env.store.scalar("SELECT SUM(usd) FROM costs")
    mine = [r["usd"] for r in env.store.all("SELECT usd FROM costs WHERE task_id='t1'")]
    assert day_total - 10.0 < max([0.15, *mine]), f"the day cap was overshot by ${day_total - 10:.3f}"
    assert env.store.scalar("SELECT COUNT(*) FROM reservations") == 0, "every reservation was given back"


def test_a_runner_killed_mid_call_holds_no_budget_back(env, monkeypatch):
    """The other runner is killed (SIGKILL) with its call in flight: its reservation counts no more from the next
    look, and that look deletes it."""
    spend(env, 9.8, task="t0")
    other = _other_runner(env, 0.15)

    def kill(proc) -> None:
        proc.kill()
        proc.wait(10)

    held, out = _lane_beside(env, monkeypatch, other, kill)
    assert held == 0 and env.events("budget.wait"), "while the other runner lived, the lane waited for its call"
    assert out.status == "blocked" and "budget exceeded" in out.error
    assert env.store.scalar("SELECT COUNT(*) FROM costs WHERE task_id='t1'") >= 1, "the lane went on once it died"
    assert env.store.scalar("SELECT COUNT(*) FROM reservations") == 0


def test_the_gateway_rechecks_exactly_when_the_verdict_may_change(env):
    """The gateway answers most steps from its last full check: spend through its own store is counted against the
    room that check left, and another connection's spend or any raise moves the store's version."""
    g = env.gateway("dev")
    assert g.budget_state()[0] == "ok"
    spend(env, 0.5)
    spend(env, 0.29)                                  # 0.79 of the role's $1: still under the 0.8 wrap-up point
    assert g.budget_state()[0] == "ok"
    spend(env, 0.02)                                  # 0.81: past it, with no other connection involved
    assert g.budget_state()[0] == "wrap_up"
    budgets.raise_cap(env.store, by="human:test", task="t1", usd=1.0)   # no spend since: only the raise says so
    assert g.budget_state()[0] == "ok"

    other_lane = env.gateway("dev", lane="l2", task="t2")
    assert other_lane.budget_state()[0] == "ok"
    elsewhere = env.new_store()                       # another process spends on the same task and role
    budgets.record_usage(elsewhere, task="t2", lane="l9", role="dev", model="m", tokens_in=0, tokens_out=0, usd=1.2)
    assert other_lane.budget_state()[0] == "exceeded"


def test_raises_made_at_the_same_time_all_count(env):
    """Two humans (or a human and the TUI) raising one cap at once: each raise reads the cap and adds to it under
    the write lock, so none is lost."""
    import threading

    from cowork.store import Store

    env.add_lane("dev")
    threads, per_thread = 8, 25

    def raiser() -> None:
        store = Store(env.ws.db_path)  # a connection of its own, as another process has
        for _ in range(per_thread):
            budgets.raise_cap(store, by="human:x", task="t1", usd=0.5, tokens=10)

    workers = [threading.Thread(target=raiser) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    flag = env.store.flag("budget:task:t1")["value"]
    assert flag == {"usd": threads * per_thread * 0.5, "tokens": threads * per_thread * 10}
    assert len(env.events("budget.raised")) == threads * per_thread
