"""`cowork demo` end to end: a scratch team, the real runner and merger, the real litellm path to a scripted server."""
from __future__ import annotations

import pytest

from cowork import demo, handoff
from tests.conftest import git
from tests.support.scripted_server import ScriptedServer, tool_call

PLAN = tool_call("submit_plan", title="greet: module, test and docs", lanes=[
    {"id": "code", "role": "dev", "goal": "Write greet.py with greet(name) and its test test_greet.py."},
    {"id": "docs", "role": "writer", "goal": "Write the docs page docs/greet.md."}])


def finish(summary: str, *artifacts: str) -> dict:
    return tool_call("finish", status="done", summary=summary, artifacts=list(artifacts),
                     checklist=[{"item": summary, "done": True}])


@pytest.fixture
def server(monkeypatch):
    with ScriptedServer() as s:
        monkeypatch.setenv("COWORK_MODEL", "openai/scripted")
        monkeypatch.setenv("COWORK_API_BASE", s.url)
        s.script("You are planner", [PLAN])
        s.script("You are writer", [tool_call("write_file", path="docs/greet.md", content=demo.DOCS),
                                    finish("Added the docs page.", "docs/greet.md")])
        yield s


def test_demo_runs_the_task_through_parallel_lanes_to_merged_main(tmp_path, cli, server):
    server.script("You are dev", [tool_call("write_file", path="greet.py", content=demo.MODULE),
                                  tool_call("write_file", path="test_greet.py", content=demo.TEST),
                                  finish("Added greet.py and its test.", "greet.py", "test_greet.py")])
    root = tmp_path / "demo"
    r = cli("demo", "--dir", root)
    assert r.code == 0, r.out + r.err
    assert "cowork demo: the team finished the task" in r.out
    assert "model    openai/scripted at " in r.out and "plan     planned by planner" in r.out
    assert "merges   2 (git log --merges" in r.out and "tokens " in r.out and f"cd {root.resolve()} && cowork mc" in r.out
    assert "Traceback" not in r.err

    assert git(root, "show", "main:greet.py") == demo.MODULE.strip()
    assert git(root, "show", "main:test_greet.py") == demo.TEST.strip()
    assert git(root, "show", "main:docs/greet.md") == demo.DOCS.strip()
    task = git(root, "log", "main", "-1", "--format=%(trailers:key=Cowork-Task,valueonly)", "--grep=Cowork-Lane")
    bodies = git(root, "log", "main", "--merges", "--format=%B%x00").split("\0")
    merges = [b for b in bodies if "Cowork-Lane" in b]
    assert len(merges) == 2
    for body in merges:
        for trailer in ("Cowork-Task: ", "Cowork-Lane: ", "Cowork-Role: ", "Cowork-Handoff: handoffs/"):
            assert trailer in body
    lanes = {}
    for lane in ("code", "docs"):
        packet = handoff.parse(git(root, "show", f"main:handoffs/{task.strip()}/{lane}.md"))
        lanes[lane] = packet.meta
        assert packet.meta.status == "done" and packet.meta.task == task.strip()
    assert (lanes["code"].from_, lanes["docs"].from_) == ("dev", "writer")
    for lane in ("code", "docs"):
        assert f"lane     {lane:<6} " in r.out and f"handoffs/{task.strip()}/{lane}.md (done, valid)" in r.out
    # the demo's checks ran in the lanes, and the two lanes ran side by side (concurrency 2, no dependency)
    assert server.calls("You are dev") == 3 and server.calls("You are writer") == 2


def test_a_lane_that_never_passes_its_checks_fails_the_demo_with_its_report(tmp_path, cli, server):
    server.script("You are dev", [tool_call("write_file", path="greet.py", content="def greet(name:\n"),
                                  finish("Added greet.py.", "greet.py")])
    r = cli("demo", "--json")
    assert r.code == 1, r.out + r.err
    data = r.json()
    assert data["ok"] is False and data["kept"] is False
    states = {x["lane"]: x["state"] for x in data["lanes"]}
    assert states == {"code": "failed", "docs": "merged"}
    code = next(x for x in data["lanes"] if x["lane"] == "code")
    assert "py_compile greet.py" in code["error"] and len(data["merges"]) == 1
    assert data["tokens_in"] > 0 and data["wall_s"] > 0
    assert not (tmp_path / data["root"]).exists(), "without --keep the scratch repo is removed"


def test_a_model_without_its_key_is_explained_before_anything_runs(tmp_path, cli, monkeypatch):
    monkeypatch.setenv("COWORK_MODEL", "anthropic/claude-sonnet-4-5")
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    r = cli("demo", "--dir", tmp_path / "d")
    assert r.code == 1 and "Traceback" not in r.err
    assert "needs an API key: $ANTHROPIC_API_KEY is not set" in r.out
    assert not (tmp_path / "d" / ".git").exists()
    # nothing started: the report does not offer merges of task "None" or a team to explore in mission control
    assert "did not start" in r.out and "Cowork-Task: None" not in r.out and "cowork mc" not in r.out


def test_a_dir_that_is_not_empty_is_bad_input_and_left_alone(tmp_path, cli, monkeypatch):
    monkeypatch.setenv("COWORK_MODEL", "openai/scripted")  # a model that needs no key (and is never called)
    monkeypatch.setenv("COWORK_API_BASE", "http://127.0.0.1:9/v1")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me\n")
    r = cli("demo", "--dir", mine)
    assert r.code == 2 and "is not empty" in r.out and "a new or empty directory" in r.out
    assert "Cowork-Task: None" not in r.out and "cowork mc" not in r.out
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
