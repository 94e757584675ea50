"""Secrets never reach the store, packets or the model: masked by cowork.redact wherever the team layer writes."""
from __future__ import annotations

import asyncio

import pytest

from cowork.redact import MASK, redact, redact_obj
from cowork.store import Store
from cowork.team import approvals
from cowork.team import messages as msgs
from tests.support.lanectx import TeamEnv
from tests.support.scripted_server import ScriptedServer, tool_call

ENV_SECRET = "sk-proj-" + "Zx9" * 12                       # an API key in the environment
FILE_SECRET = "ghp_" + "A1b2C3d4E5" * 4                    # a GitHub token in a file the agent reads
PLAIN_ENV_SECRET = "correct-horse-battery-staple-42"       # no known shape: masked because its variable says TOKEN


@pytest.fixture(autouse=True)
def _secrets(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", ENV_SECRET)
    monkeypatch.setenv("DEPLOY_TOKEN", PLAIN_ENV_SECRET)


def leaks(text: str) -> list[str]:
    return [s for s in (ENV_SECRET, FILE_SECRET, PLAIN_ENV_SECRET) if s in text]


def test_redact_masks_known_shapes_and_secret_env_values():
    text = (f"key={ENV_SECRET} token: {FILE_SECRET} pw {PLAIN_ENV_SECRET} "
            "Authorization: Bearer abcdefghijklmnop1234 https://bob:hunter2hunter2@example.com/x")
    out = redact(text)
    assert leaks(out) == [] and "hunter2" not in out and "abcdefghijklmnop1234" not in out
    assert out.count(MASK) >= 5 and "https://bob:" in out
    assert redact_obj({"a": [FILE_SECRET, 3], "b": {"c": ENV_SECRET}}) == {"a": [MASK, 3], "b": {"c": MASK}}
    assert redact("nothing secret here") == "nothing secret here"


def test_messages_approvals_and_events_are_redacted(tmp_path):
    env = TeamEnv(tmp_path, {"dev": {"tools": ["tell", "run"], "run_allow": ["echo *"],
                                     "approvals": {"block": ["run"]}}})
    env.add_lane("dev")
    msgs.post(env.store, kind="tell", from_role="dev", to_role="team", body=f"use {FILE_SECRET}", task="t1")
    approvals.request(env.store, task="t1", lane="l1", role="dev", tool="run",
                      action={"command": f"echo {ENV_SECRET}"}, why=f"because {PLAIN_ENV_SECRET}", timeout_s=60)
    approvals.reject(env.store, 1, by="human:ann", reason=f"never echo {FILE_SECRET}")
    g = env.gateway("dev")
    asyncio.run(g.call("tell", {"role": "team", "note": f"token is {FILE_SECRET}"}))
    g.ctx.role = g.ctx.role.model_copy(update={"tools": ["tell", "run", "delegate"]})
    assert asyncio.run(g.call("delegate", {"role": "dev", "goal": f"rotate {ENV_SECRET} today"})).ok
    dump = env.dump_text()
    assert "rotate [REDACTED] today" in dump                      # lane goal and thread
    assert leaks(dump) == [] and MASK in dump


def test_a_planted_secret_appears_nowhere(tmp_path, monkeypatch):
    """A lane reads a file holding a token, cats it, dumps its environment and repeats everything it saw in a
    message and its packet. Neither secret reaches the model, the store (every text column of every table) or
    the packet on main."""
    from cowork.cli.app import main
    from tests.support.team import git, make_team

    monkeypatch.setenv("SCRIPTED_KEY", "test-key")
    monkeypatch.delenv("COWORK_ROOT", raising=False)
    dev = """\
        name: dev
        mandate: Implements code changes on its lane's branch.
        tools: [read_file, run, tell]
        run_allow: ["cat *", "env"]
        """

    def last_tool_output(req: dict) -> str:
        return next(m["content"] for m in reversed(req["messages"]) if m["role"] == "tool")

    with ScriptedServer() as server:
        root = make_team(tmp_path / "repo", server.url, {"dev": dev})
        (root / "config.env").write_text(f"GITHUB_TOKEN={FILE_SECRET}\nraw {FILE_SECRET}\n")
        git(root, "add", "config.env")
        git(root, "commit", "-q", "-m", "config")
        server.script("You are dev", [
            tool_call("read_file", path="config.env"),
            tool_call("run", command="cat config.env"),
            tool_call("run", command="env"),
            lambda req: tool_call("tell", role="human", note="I saw: " + last_tool_output(req)[-3000:]),
            lambda req: tool_call("finish", status="done", summary="Everything I saw: " + "\n".join(
                m["content"] for m in req["messages"] if m["role"] == "tool")[-6000:],
                checklist=[{"item": "looked", "done": True}]),
        ])
        assert main(["delegate", "Look at the config", "--to", "dev", "--yes", "-C", str(root)]) == 0
        seen_by_model = "\n".join(r.text for r in server.requests)
    st = Store(root / ".cowork" / "state.db")
    task = st.scalar("SELECT id FROM tasks")
    packet = git(root, "show", f"main:handoffs/{task}/work.md")
    assert "Everything I saw" in packet and MASK in packet
    assert leaks(packet) == []
    assert leaks(seen_by_model) == [] and MASK in seen_by_model
    dump = "\n".join(str(v) for (t,) in st.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
                     for row in st.all(f"SELECT * FROM {t}") for v in row.values() if isinstance(v, str))
    assert "I saw:" in dump and leaks(dump) == []


def test_a_secret_in_the_request_reaches_no_brief_goal_step_or_packet(tmp_path, monkeypatch):
    """A human pastes a key into `cowork delegate`: the committed brief, the lane's goal, the journal, the prompt
    the model sees and the packet all carry the mask instead."""
    from cowork.cli.app import main
    from tests.support.team import git, make_team

    monkeypatch.setenv("SCRIPTED_KEY", "test-key")
    monkeypatch.delenv("COWORK_ROOT", raising=False)
    dev = """\
        name: dev
        mandate: Implements code changes on its lane's branch.
        tools: [read_file]
        """
    with ScriptedServer() as server:
        root = make_team(tmp_path / "repo", server.url, {"dev": dev})
        server.script("You are dev", [
            lambda req: tool_call("finish", status="done", summary="Goal was: " + req["messages"][-1]["content"][-500:],
                                  checklist=[{"item": "read the goal", "done": True}]),
        ])
        request = f"Rotate the deploy key {FILE_SECRET} and tell nobody"
        assert main(["delegate", request, "--to", "dev", "--yes", "-C", str(root)]) == 0
        seen_by_model = "\n".join(r.text for r in server.requests)
    st = Store(root / ".cowork" / "state.db")
    task = st.scalar("SELECT id FROM tasks")
    assert FILE_SECRET.lower()[:12] not in task and "redacted" in task   # the id becomes branch names
    brief = git(root, "show", f"main:handoffs/{task}/brief.md")
    packet = git(root, "show", f"main:handoffs/{task}/work.md")
    assert "Rotate the deploy key" in brief and MASK in brief and leaks(brief) == []
    assert "Goal was:" in packet and leaks(packet) == []
    assert leaks(seen_by_model) == []
    dump = "\n".join(str(v) for (t,) in st.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
                     for row in st.all(f"SELECT * FROM {t}") for v in row.values() if isinstance(v, str))
    assert "Rotate the deploy key" in dump and leaks(dump) == []


def pieces(secret: str, n: int = 12) -> list[str]:
    return [secret[i:i + n] for i in range(len(secret) - n + 1)]


def test_no_piece_of_a_secret_survives_where_long_output_is_cut(tmp_path):
    """Long tool output is cut to its head and tail. Before, it was cut first and masked after, so a key that
    straddled a cut came out with its recognisable start (or its end) cut off: text no pattern and no environment
    value matches, and an agent choosing read_file's offset chooses where the cut falls. The same held for search
    lines, cut at 300 characters."""
    from cowork.tools.builtin import MAX_OUTPUT

    env = TeamEnv(tmp_path, {"dev": {"tools": ["read_file", "search"]}})
    g = env.gateway("dev")
    half = MAX_OUTPUT // 2
    first = "a" * (half - len('d = "') - 20) + "\n"          # the head ends 20 characters into the second secret
    second = f'd = "{PLAIN_ENV_SECRET}"\n'
    key = f'k = "{ENV_SECRET}"\n'
    last = "z" * (half - len(ENV_SECRET) + 8 - 3) + "\n"      # the tail starts 8 characters into the first
    outs = []
    for lines in (50, 1500):                                    # a little cut, and a lot (masked near the cuts only)
        middle = "".join(f"line {i:05d} {'m' * 80}\n" for i in range(lines))
        (g.ctx.worktree / "settings.py").write_text(first + second + middle + key + last)
        outs.append(asyncio.run(g.call("read_file", {"path": "settings.py"})).content)
    (g.ctx.worktree / "long.py").write_text("x" * 280 + PLAIN_ENV_SECRET + "\n")
    out = "\n".join([*outs, asyncio.run(g.call("search", {"query": "xxx"})).content])
    assert all("characters cut" in o and o.count("[REDACTED]") == 2 for o in outs), outs
    assert "characters cut" in out and "long.py:1: xxx" in out
    assert [p for p in pieces(ENV_SECRET) + pieces(PLAIN_ENV_SECRET) if p in out] == []


def delegate_to_dev(tmp_path, monkeypatch, dev: str, replies: list, *, extra_toml: str = "",
                    prepare=None) -> str:
    """`cowork delegate ... --to dev --yes` in a new team whose dev role file is `dev`, the scripted model giving
    `replies`; `prepare(root)` runs on the team before. Returns every request the model was sent, as one text."""
    from cowork.cli.app import main
    from tests.support.team import make_team

    monkeypatch.setenv("SCRIPTED_KEY", "test-key")
    monkeypatch.delenv("COWORK_ROOT", raising=False)
    with ScriptedServer() as server:
        root = make_team(tmp_path / "repo", server.url, {"dev": dev}, extra_toml=extra_toml)
        if prepare is not None:
            prepare(root)
        server.script("You are dev", replies)
        assert main(["delegate", "Do the lane's work", "--to", "dev", "--yes", "-C", str(root)]) == 0
        return "\n".join(r.text for r in server.requests)


def test_checks_run_without_the_teams_keys(tmp_path, monkeypatch):
    """A role's checks run code the agent wrote (its tests, its scripts), so they get the environment `run` gets.
    Before, they inherited every key: a check that printed $OPENAI_API_KEY reversed put it, unmasked, in the note
    the model read (and from there anywhere the agent writes). Merge checks, which also run the lane's code, too."""
    dev = """\
        name: dev
        mandate: Implements code changes on its lane's branch.
        tools: [write_file]
        checks: ["sh check.sh"]
        """
    leak = 'printf "%s %s" "$OPENAI_API_KEY" "$DEPLOY_TOKEN" | rev; echo " in $COWORK_MERGE_TARGET"; '
    seen_by_model = delegate_to_dev(tmp_path, monkeypatch, dev, [
        tool_call("write_file", path="check.sh", content=leak + "test -f fixed"),
        tool_call("finish", status="done", summary="first try"),
        tool_call("write_file", path="fixed", content="yes\n"),
        tool_call("finish", status="done", summary="second try"),
    ], extra_toml=f'\n[merge]\nchecks = ["sh check.sh > {tmp_path}/merge-check.out; true"]\n')
    assert "The check `sh check.sh` failed" in seen_by_model
    merge_out = (tmp_path / "merge-check.out").read_text()
    assert "in main" in merge_out
    reversed_secrets = [ENV_SECRET[::-1], PLAIN_ENV_SECRET[::-1]]
    assert [s for s in reversed_secrets if s in seen_by_model or s in merge_out] == []


def test_the_team_can_pass_a_key_to_checks_and_run(tmp_path, monkeypatch):
    """Tests that call a model need its key: `[policy] pass_env` names the variables `run`, a role's checks and the
    merge checks get all the same; every other secret-looking one is still withheld, and the passed value is still
    masked in what the model reads."""
    dev = """\
        name: dev
        mandate: Implements code changes on its lane's branch.
        tools: [write_file, run]
        run_allow: ["sh probe.sh"]
        checks: ["sh probe.sh"]
        """
    probe = 'test -n "$OPENAI_API_KEY" && test -z "$DEPLOY_TOKEN" && echo "key $OPENAI_API_KEY"\n'
    seen_by_model = delegate_to_dev(tmp_path, monkeypatch, dev, [
        tool_call("write_file", path="probe.sh", content=probe),
        tool_call("run", command="sh probe.sh"),
        tool_call("finish", status="done", summary="probed"),
    ], extra_toml=f'\n[policy]\npass_env = ["OPENAI_API_KEY"]\n'
                  f'\n[merge]\nchecks = ["sh probe.sh > {tmp_path}/merge-check.out"]\n')
    assert "key [REDACTED]" in seen_by_model and ENV_SECRET not in seen_by_model  # run got it; the model, the mask
    assert (tmp_path / "merge-check.out").read_text() == f"key {ENV_SECRET}\n"  # the role's check passed, then this


def test_check_output_reaches_the_model_masked(tmp_path, monkeypatch):
    """A failing check prints a config file holding a token. Before: the note with its output was masked in the
    journal's row but sent to the model from the journal's memory as it was, so the model read the token (a resumed
    lane would have read the mask)."""
    from tests.support.team import git

    dev = """\
        name: dev
        mandate: Implements code changes on its lane's branch.
        tools: [write_file]
        checks: ["test -f fixed || (cat config.env; false)"]
        """

    def commit_config(root) -> None:
        (root / "config.env").write_text(f"GITHUB_TOKEN={FILE_SECRET}\nraw {FILE_SECRET}\n")
        git(root, "add", "config.env")
        git(root, "commit", "-q", "-m", "config")

    seen_by_model = delegate_to_dev(tmp_path, monkeypatch, dev, [
        tool_call("finish", status="done", summary="first try"),
        tool_call("write_file", path="fixed", content="yes\n"),
        tool_call("finish", status="done", summary="second try"),
    ], prepare=commit_config)
    assert "The check `test -f fixed" in seen_by_model, seen_by_model[-3000:]
    assert leaks(seen_by_model) == []


def test_a_secret_as_an_argument_name_is_masked_too(tmp_path):
    """Before: masking covered the values of tool-call arguments, not their names, which the model also chooses."""
    env = TeamEnv(tmp_path, {"dev": {"tools": ["read_file"]}})
    g = env.gateway("dev")
    assert asyncio.run(g.call("read_file", {"path": "README.md", FILE_SECRET: ENV_SECRET})).ok
    assert not asyncio.run(g.call("read_file", {"path": "../x", PLAIN_ENV_SECRET: 1})).ok
    dump = env.dump_text()
    assert "tool.denied" in dump and leaks(dump) == []


def test_masking_takes_linear_time_on_text_an_agent_wrote(tmp_path):
    """Masking runs on every tool result, event and journal step, holding the GIL. Before, some patterns tried a
    match at each of the word boundaries of a run like "a-a-a-..." and scanned the run from each: writing 100,000
    such characters and reading them back took two minutes of masking (the whole runner stood still meanwhile).
    Now it takes milliseconds; the bound here is generous."""
    import time

    env = TeamEnv(tmp_path, {"dev": {"tools": ["read_file", "write_file"]}})
    g = env.gateway("dev")
    text = "a-" * 20_000 + " token\n" + "eyJ-" * 10_000 + "\n" + "a." * 20_000 + " ://\n"
    t0 = time.monotonic()
    assert asyncio.run(g.call("write_file", {"path": "runs.txt", "content": text})).ok
    assert asyncio.run(g.call("read_file", {"path": "runs.txt"})).ok
    assert time.monotonic() - t0 < 10
    assert redact(f"x-api-key={FILE_SECRET} and https://bob:hunter2hunter2@example.com") == \
        "x-api-key=[REDACTED] and https://bob:[REDACTED]@example.com"


def test_an_agent_clis_last_output_reaches_its_packet_masked(tmp_path, monkeypatch):
    """An external agent CLI (which gets the whole environment) prints a key near the end of its output. Before, the
    packet cowork built for it quoted the last 1,500 characters cut first and masked after, so a key that straddled
    the cut reached the packet on main without its recognisable start."""
    from cowork.cli.app import main
    from tests.support.team import git, make_team

    monkeypatch.setenv("SCRIPTED_KEY", "test-key")
    monkeypatch.delenv("COWORK_ROOT", raising=False)
    filler = 1500 - 1 - (len(ENV_SECRET) - 8)               # the cut falls 8 characters into the key
    (tmp_path / "agent.py").write_text(
        "import os\nprint('working')\nprint('k=' + os.environ['OPENAI_API_KEY'])\n"
        f"print('z' * {filler})\n")
    dev = ("name: dev\nmandate: Implements code changes on its lane's branch.\nengine: command\n"
           f"command: [python3, {tmp_path / 'agent.py'}, '{{goal}}']\n")
    with ScriptedServer() as server:
        root = make_team(tmp_path / "repo", server.url, {"dev": dev})
        assert main(["delegate", "Print things", "--to", "dev", "--yes", "-C", str(root)]) == 0
    st = Store(root / ".cowork" / "state.db")
    task = st.scalar("SELECT id FROM tasks")
    packet = git(root, "show", f"main:handoffs/{task}/work.md")
    assert "zzzz" in packet
    steps = "\n".join(str(r["output"]) for r in st.all("SELECT output FROM steps"))
    assert [p for p in pieces(ENV_SECRET) if p in packet or p in steps] == []
