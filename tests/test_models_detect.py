"""Model detection and per-role resolution: `cowork.engines.detect` and `cowork models`, on real HTTP and real files."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cowork.config import load_settings
from cowork.engines import detect, local_model, models
from cowork.errors import CoworkError
from cowork.roles import Role
from tests.support.scripted_server import ScriptedServer

SECRET = "sk-ant-THIS-VALUE-MUST-NEVER-BE-PRINTED-0042"
EMBEDDED, WHY_NOT = local_model.local_available()


@pytest.fixture(autouse=True)
def _no_provider_keys(monkeypatch):
    """Provider keys from the machine running the tests must not leak into what is detected."""
    for p in detect.PROVIDERS:
        for var in p.env:
            monkeypatch.delenv(var, raising=False)


def _team_settings(team, toml_model: str | None, env: dict) -> object:
    if toml_model:
        text = team.config_path.read_text().replace("[model]\n", f'[model]\nname = "{toml_model}"\n', 1)
        team.config_path.write_text(text)
    return load_settings(team.config_path, env=env)


def test_keys_are_detected_by_name_and_their_values_never_printed(team, cli, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    monkeypatch.setenv("GROQ_API_KEY", SECRET)
    text = cli("models")
    assert text.code == 0, text.err
    assert "ANTHROPIC_API_KEY is set (anthropic)" in text.out and "GROQ_API_KEY is set (groq)" in text.out
    assert "anthropic/claude-sonnet-4-5" in text.out and "auto-detected: $ANTHROPIC_API_KEY is set" in text.out
    data = cli("models", "--json")
    assert data.code == 0
    keys = {k["env"]: k["set"] for k in data.json()["providers"]["keys"]}
    assert keys["ANTHROPIC_API_KEY"] and keys["GROQ_API_KEY"] and not keys["OPENAI_API_KEY"]
    for out in (text.out, text.err, data.out, data.err):
        assert SECRET not in out and "THIS-VALUE" not in out
    resolved = detect.resolve_model(load_settings(team.config_path), None)
    assert SECRET not in repr(resolved) and SECRET not in json.dumps(resolved.as_dict())


def test_a_scripted_server_configured_as_api_base_is_detected(team, cli, monkeypatch):
    with ScriptedServer() as server:
        monkeypatch.setenv("COWORK_MODEL", "openai/scripted")
        monkeypatch.setenv("COWORK_API_BASE", server.url)
        r = cli("models", "--json")
        assert r.code == 0, r.out + r.err
        data = r.json()
        found = [s for s in data["providers"]["servers"] if s["api_base"] == server.url]
        assert found == [{"kind": "openai", "api_base": server.url, "models": ["scripted"], "configured": True}]
        rows = {row["role"]: row for row in data["models"]}
        assert set(rows) == {"(team default)", "dev", "planner", "reviewer", "writer"}
        for row in rows.values():
            assert (row["name"], row["api_base"], row["source"]) == ("openai/scripted", server.url, "COWORK_MODEL")
            assert row["key_ok"] and row["key_note"] == "no key needed (local server)" and not row["is_local"]
        assert not data["nothing_configured"] and data["message"] is None
        text = cli("models").out
        assert f"Local server   {server.url} (configured api_base): scripted" in text
    # stopped: the same address no longer answers
    assert detect.probe(server.url) is None
    assert detect.probe("http://example.com/v1") is None, "only loopback addresses are ever probed"


def test_a_configured_local_server_that_does_not_answer_is_named_and_exits_1(team, cli, monkeypatch):
    """`cowork models` said "no key needed (local server)" and exited 0 for an api_base where nothing listens; the
    first sign of trouble was a failed task."""
    with ScriptedServer() as server:
        base = server.url
    monkeypatch.setenv("COWORK_MODEL", "openai/scripted")
    monkeypatch.setenv("COWORK_API_BASE", base)  # stopped: nothing answers there any more
    r = cli("models", "--json")
    assert r.code == 1
    rows = r.json()["models"]
    assert all(row["server_ok"] is False and base in row["server_note"] for row in rows)
    text = cli("models")
    assert text.code == 1 and f"SERVER DOWN: nothing answers at {base}" in text.out
    assert "does not answer: start it" in text.out and "COWORK_API_BASE" in text.out
    assert "has no API key" not in text.out


class _Ollama(BaseHTTPRequestHandler):
    """Just enough of Ollama: GET /api/tags (it has no /v1/models in this stand-in)."""

    def do_GET(self):  # noqa: N802
        body = json.dumps({"models": [{"name": "llama3.1:latest"}, {"name": "qwen2.5-coder:7b"}]}).encode()
        self.send_response(200 if self.path == "/api/tags" else 404)
        self.send_header("Content-Length", str(len(body) if self.path == "/api/tags" else 0))
        self.end_headers()
        if self.path == "/api/tags":
            self.wfile.write(body)

    def log_message(self, *args):
        return


def test_an_ollama_server_at_the_configured_base_lists_its_models(team, cli, monkeypatch):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Ollama)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        monkeypatch.setenv("COWORK_MODEL", "ollama/llama3.1")
        monkeypatch.setenv("COWORK_API_BASE", base)
        r = cli("models", "--json")
        data = r.json()
        assert {"kind": "ollama", "api_base": base, "models": ["llama3.1:latest", "qwen2.5-coder:7b"],
                "configured": True} in data["providers"]["servers"]
        default = data["models"][0]
        assert (default["name"], default["key_ok"], default["key_note"]) == \
            ("ollama/llama3.1", True, "no key needed (local server)")
        assert r.code == 0 and f"Ollama         {base} (configured api_base): llama3.1:latest" in cli("models").out
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_nothing_configured_says_so_and_explains_cowork_model(tmp_path, cli, monkeypatch):
    if detect.probe_servers():
        pytest.skip("a model server is running on this machine's loopback, so something *is* configured")
    monkeypatch.chdir(tmp_path)  # not in a team: the defaults alone
    r = cli("models")
    for piece in ("No model is configured", "COWORK_MODEL=anthropic/claude-sonnet-4-5 ANTHROPIC_API_KEY=",
                  "COWORK_MODEL=openai/gpt-4o-mini OPENAI_API_KEY=", "COWORK_MODEL=ollama/llama3.1 "
                  "COWORK_API_BASE=http://127.0.0.1:11434", "COWORK_MODEL=openai/<model> COWORK_API_BASE=",
                  "`model:` in a role file"):
        assert piece in r.out, piece
    if EMBEDDED:
        assert r.code == 0 and local_model.DISPLAY_NAME in r.out and "embedded fallback" in r.out

    monkeypatch.setenv(local_model.GGUF_ENV, str(tmp_path / "missing.gguf"))  # and no embedded model either
    r = cli("models", "--json")
    assert r.code == 1 and "Traceback" not in r.err
    data = r.json()
    assert data["nothing_configured"] and "cannot stand in either" in data["message"]
    assert "missing.gguf" in data["models"][0]["error"]
    with pytest.raises(detect.NoModel, match="No model is configured"):
        detect.resolve_model(detect.settings_from_env({}), None, {})
    with pytest.raises(models.ModelError, match="No model is configured"):
        models.resolve(detect.settings_from_env({}))


def test_per_role_resolution_order_and_sources(team, monkeypatch):
    dev = Role(name="dev", mandate="Writes code.", model="anthropic/claude-sonnet-4-5", api_key_env="DEV_KEY")
    plain = Role(name="writer", mandate="Writes docs.")
    env = {"COWORK_MODEL": "openai/gpt-4o-mini", "DEV_KEY": "k1", "OPENAI_API_KEY": "k2"}
    settings = _team_settings(team, "mistral/mistral-large-latest", env)

    r = detect.resolve_model(settings, dev, env, scan=False)  # 1. the role's own model:
    assert (r.name, r.source, r.api_key, r.key_note) == ("anthropic/claude-sonnet-4-5",
                                                         "role dev: `model:` in roles/dev.yaml", "k1", "key from $DEV_KEY")
    r = detect.resolve_model(settings, plain, env, scan=False)  # 2. COWORK_MODEL over cowork.toml
    assert (r.name, r.source, r.key_ok, r.key_note) == ("openai/gpt-4o-mini", "COWORK_MODEL", True,
                                                        "$OPENAI_API_KEY is set")
    settings = load_settings(team.config_path, env={})  # 3. cowork.toml [model] name
    r = detect.resolve_model(settings, plain, {}, scan=False)
    assert (r.name, r.source, r.key_ok, r.key_note) == ("mistral/mistral-large-latest", "cowork.toml [model] name",
                                                        False, "$MISTRAL_API_KEY is not set")
    with pytest.raises(CoworkError, match=r"needs an API key: \$MISTRAL_API_KEY is not set"):
        r.require_key()
    with pytest.raises(models.ModelError, match="MISTRAL_API_KEY"):
        models.resolve(settings, plain)  # the engine refuses before any provider call, with a plain message

    team.config_path.write_text(team.config_path.read_text().replace('name = "mistral/mistral-large-latest"\n', ""))
    settings = load_settings(team.config_path, env={})
    r = detect.resolve_model(settings, plain, {"GEMINI_API_KEY": "g"}, scan=False)  # 4. a detected provider
    assert (r.name, r.source) == ("gemini/gemini-2.5-flash", "auto-detected: $GEMINI_API_KEY is set")

    if EMBEDDED:  # 5. the embedded model, labelled as weak
        r = detect.resolve_model(settings, plain, {}, scan=False)
        assert r.is_local and r.label == "SmolLM2-135M (embedded offline model, weak)"
        assert r.source.startswith("embedded fallback")
        choice = models.resolve(settings, plain)
        assert choice.is_local and choice.label == r.label
    with pytest.raises(detect.NoModel):
        detect.resolve_model(settings, plain, {}, allow_local=False, scan=False)

    local = load_settings(team.config_path, env={"COWORK_MODEL": "local"})
    if EMBEDDED:
        r = detect.resolve_model(local, plain, {"COWORK_MODEL": "local"}, scan=False)
        assert r.is_local and r.name == local_model.MODEL and r.source == "COWORK_MODEL"
    assert detect.is_local_model("openai/cowork-local", "http://127.0.0.1:9/v1")
    assert not detect.is_local_model("openai/cowork-local", "https://api.example.com/v1")


def test_models_json_lists_every_role_with_its_source(team, cli, monkeypatch):
    (team.roles_dir / "dev.yaml").write_text((team.roles_dir / "dev.yaml").read_text().replace(
        "# model: anthropic/claude-sonnet-4-5", "model: openai/gpt-4o"))
    monkeypatch.setenv("COWORK_MODEL", "anthropic/claude-sonnet-4-5")
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    r = cli("models", "--json")
    data = r.json()
    rows = {row["role"]: row for row in data["models"]}
    assert rows["dev"]["name"] == "openai/gpt-4o" and rows["dev"]["source"].startswith("role dev")
    assert not rows["dev"]["key_ok"] and rows["dev"]["key_note"] == "$OPENAI_API_KEY is not set"
    assert rows["writer"]["source"] == "COWORK_MODEL" and rows["writer"]["key_ok"]
    assert "api_key" not in rows["writer"] and rows["writer"]["api_key_set"] is False  # litellm reads the env var
    assert r.code == 1 and not data["ok"], "a role whose key is missing fails the check"
    text = cli("models")
    assert "KEY MISSING: $OPENAI_API_KEY is not set" in text.out and SECRET not in text.out
