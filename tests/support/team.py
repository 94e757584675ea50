"""A throwaway team repository for runner tests: real git, real cowork.toml and roles, the scripted server's url."""
from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

GIT_ENV = {"GIT_AUTHOR_NAME": "Tester", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "Tester", "GIT_COMMITTER_EMAIL": "t@example.com"}


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout.strip()


def make_team(root: Path, url: str, roles: dict[str, str], *, extra_toml: str = "", concurrency: int = 4,
              model_toml: str = "") -> Path:
    """A git repo at `root` with cowork.toml (model openai/scripted at `url`) and the given role YAML texts.
    `model_toml` is added to the `[model]` table, `extra_toml` after it."""
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.name", "Tester")
    git(root, "config", "user.email", "t@example.com")
    (root / "cowork.toml").write_text(textwrap.dedent(f"""\
        name = "testteam"
        planner = "planner"
        concurrency = {concurrency}

        [model]
        name = "openai/scripted"
        api_base = "{url}"
        api_key_env = "SCRIPTED_KEY"
        timeout_s = 30
        """) + textwrap.dedent(model_toml) + textwrap.dedent(extra_toml))
    (root / "roles").mkdir()
    for name, text in roles.items():
        (root / "roles" / f"{name}.yaml").write_text(textwrap.dedent(text))
    (root / "README.md").write_text("# test repo\n")
    (root / ".gitignore").write_text(".cowork/\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "init")
    return root


PLANNER = """name: planner
mandate: Splits each request into lanes for the team.
tools: []
"""

DEV = """name: dev
mandate: Implements code changes on its lane's branch.
tools: [read_file, write_file, list_files]
"""

WRITER = """name: writer
mandate: Writes documentation pages for users.
tools: [read_file, write_file]
"""

REVIEWER = """name: reviewer
mandate: Reviews diffs and packets for correctness before merge.
tools: [read_file, git_diff]
"""
