"""Layers: the core never loads the UI libraries, and the CLI loads neither litellm nor textual at start-up.

Each check runs in a fresh interpreter and reads sys.modules, so imports made by earlier tests cannot hide a leak.
"""
from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT

OUTER = {"cli", "tui"}
OUTER_MODULES = {"cowork.mcp_server", "cowork.__main__"}

PROBE = """
import importlib, json, sys
watch = json.loads(sys.argv[1])
found, errors = {}, {}
for name in json.loads(sys.argv[2]):
    before = set(sys.modules)
    try:
        importlib.import_module(name)
    except Exception as exc:
        errors[name] = f"{type(exc).__name__}: {exc}"
        continue
    new = set(sys.modules) - before
    for lib in watch:
        if any(m == lib or m.startswith(lib + ".") for m in new):
            found.setdefault(lib, name)
print(json.dumps({"found": found, "errors": errors}))
"""


def core_modules() -> list[str]:
    """Every module under cowork/ except the outer layer (cli/, tui/, mcp_server)."""
    out = []
    for path in sorted((ROOT / "cowork").rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        name = ".".join(parts)
        if len(parts) > 1 and parts[1] in OUTER or name in OUTER_MODULES:
            continue
        out.append(name)
    return out


def probe(modules: list[str], watch: list[str]) -> dict:
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(watch), json.dumps(modules)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_core_modules_are_found():
    modules = core_modules()
    for expected in ("cowork.config", "cowork.roles", "cowork.handoff", "cowork.plan", "cowork.store",
                     "cowork.store.migrations", "cowork.init", "cowork.views"):
        assert expected in modules
    assert not any(m.startswith(("cowork.cli", "cowork.tui")) for m in modules)


def test_the_core_loads_no_ui_library():
    result = probe(core_modules(), ["typer", "rich", "textual", "click"])
    assert result["errors"] == {}, result["errors"]
    # value = the first core module whose import pulled the library in
    assert result["found"] == {}, result["found"]


def test_the_core_imports_litellm_lazily():
    result = probe(core_modules(), ["litellm"])
    assert result["found"] == {}, result["found"]


def test_the_cli_starts_without_litellm_or_textual():
    result = probe(["cowork.cli.app"], ["litellm", "textual", "llama_cpp"])
    assert result["errors"] == {}, result["errors"]
    assert result["found"] == {}, result["found"]
