"""One real lane through the real embedded model (SmolLM2-135M on loopback): runner, engine, checks, packet, merge.

Marked `embedded`; skipped with the reason when the `local` extra is not installed. CI runs it.
"""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from cowork import demo, handoff
from cowork.engines import detect, local_model
from tests.conftest import git

AVAILABLE, REASON = local_model.local_available()

pytestmark = [pytest.mark.embedded, pytest.mark.timeout(240),
              pytest.mark.skipif(not AVAILABLE, reason=f"embedded model not available: {REASON}")]


def test_a_real_lane_on_the_embedded_model_hands_off_a_valid_packet_and_merges(tmp_path, monkeypatch):
    from cowork.config import load_settings
    from cowork.roles import load_roles
    from cowork.runner import planning
    from cowork.runner.launch import run_here
    from cowork.store import Store
    from cowork.workspace import Workspace

    state = tmp_path / "local-model"
    monkeypatch.setenv("COWORK_MODEL", "local")
    monkeypatch.setenv("COWORK_LOCAL_STATE_DIR", str(state))
    root = tmp_path / "team"
    demo.make_team(root, embedded=True, progress=lambda _line: None)
    ws = Workspace(root.resolve())
    settings = load_settings(ws.config_path)
    roles = load_roles(ws.roles_dir, ws.root)
    choice_label = detect.resolve_model(settings, roles["dev"]).label
    assert choice_label == local_model.DISPLAY_NAME
    store = Store.for_workspace(ws)
    draft = planning.create_task(ws, store, settings, roles, demo.EMBEDDED_REQUEST)
    plan = demo.embedded_plan(draft.task)
    plan.lanes = [plan.lane("code")]  # one lane: write greet.py, then finish
    planning.save_plan(ws, store, settings, draft.task, plan)
    planning.approve(store, draft.task, plan)
    t0 = time.monotonic()
    try:
        run_here(ws, [draft.task])
    finally:
        stopped = local_model.stop_local_server(state)
    seconds = time.monotonic() - t0
    assert stopped, "the lane started the shared embedded server on its first model call"

    lane = store.one("SELECT * FROM lanes WHERE task_id=? AND id='code'", (draft.task,))
    calls = store.all("SELECT name, tokens_in, tokens_out FROM steps WHERE task_id=? AND kind='model'", (draft.task,))
    assert calls and all(c["name"] == local_model.MODEL and c["tokens_in"] > 0 for c in calls)
    packet_rel = f"handoffs/{draft.task}/code.md"
    text = git(root, "show", f"main:{packet_rel}") if lane["state"] == "merged" else \
        (root / ".cowork" / "worktrees").joinpath(draft.task, "code", packet_rel).read_text()
    packet = handoff.parse(text, packet_rel)  # the packet is valid whatever the model wrote in it
    assert packet.meta.lane == "code" and packet.meta.from_ == "dev" and packet.meta.cost.tokens_in > 0
    print(f"embedded lane: {lane['state']} in {seconds:.1f}s, {len(calls)} model calls, "
          f"{sum(c['tokens_in'] for c in calls)} tokens in / {sum(c['tokens_out'] for c in calls)} out")
    assert lane["state"] == "merged", lane["error"]
    module = git(root, "show", "main:greet.py")
    assert subprocess.run([sys.executable, "-c", module + "\nassert greet('Ada') == 'Hello, Ada!'"]).returncode == 0
