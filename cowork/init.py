"""`cowork init`: turn a git repository into a team by writing cowork.toml, a starter roles/ and handoffs/README.md.

The files come from the package data in `cowork/templates/`. Nothing is overwritten without `force`, and nothing is
committed without `commit`.
"""
from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from cowork.errors import BadInput, CoworkError
from cowork.gitops.git import GitError, current_branch, git, rev, toplevel
from cowork.workspace import Workspace

COMMIT_MESSAGE = "cowork init: add team settings, starter roles and handoffs/README.md"
IGNORE_LINE = ".cowork/"
SCHEMA_NAME = "role.schema.json"

# (marker file, test command, run_allow patterns) — the first marker found picks dev's checks.
_STACKS: list[tuple[str, str, list[str]]] = [
    ("uv.lock", "uv run pytest -q", ["uv run pytest*", "uv run ruff *"]),
    ("pyproject.toml", "python -m pytest -q", ["python -m pytest*", "pytest*", "ruff *"]),
    ("setup.py", "python -m pytest -q", ["python -m pytest*", "pytest*"]),
    ("package.json", "npm test", ["npm test*", "npm run *"]),
    ("Cargo.toml", "cargo test", ["cargo test*", "cargo build*", "cargo clippy*", "cargo fmt*"]),
    ("go.mod", "go test ./...", ["go test *", "go build *", "go vet *"]),
    ("Makefile", "make test", ["make test*", "make lint*"]),
]
_GIT_READ = ["git status*", "git diff*", "git log*", "git show*"]


@dataclass
class FileAction:
    """What init did with one file: wrote | overwrote | skipped | updated | unchanged."""

    path: str
    action: str
    note: str = ""


@dataclass
class InitResult:
    root: Path
    files: list[FileAction] = field(default_factory=list)
    git_initialized: bool = False
    commit: str | None = None
    stack: str | None = None

    def as_dict(self) -> dict:
        return {
            "root": str(self.root),
            "git_initialized": self.git_initialized,
            "stack": self.stack,
            "files": [{"path": f.path, "action": f.action, **({"note": f.note} if f.note else {})} for f in self.files],
            "commit": self.commit,
        }


def template_files() -> dict[str, str]:
    """Every template shipped in cowork/templates/, as {path relative to the team root: text}."""
    out: dict[str, str] = {}

    def walk(node, prefix: str) -> None:
        for child in sorted(node.iterdir(), key=lambda c: c.name):
            if child.name.startswith(("__", ".")):
                continue
            rel = f"{prefix}{child.name}"
            if child.is_dir():
                walk(child, rel + "/")
            else:
                out[rel] = child.read_text(encoding="utf-8")

    walk(resources.files("cowork.templates"), "")
    # a stable, readable order: settings, roles, skills, then the rest
    order = {"cowork.toml": 0}
    return dict(sorted(out.items(), key=lambda kv: (order.get(kv[0], 1 if kv[0].startswith("roles/") else 2),
                                                    kv[0].count("/"), kv[0])))


def detect_stack(root: Path) -> tuple[str | None, str | None, list[str]]:
    """(marker file, test command, run_allow patterns) for the project in `root`, from files at its top level."""
    for marker, command, allow in _STACKS:
        if (root / marker).is_file():
            return marker, command, allow
    return None, None, []


def render_templates(name: str, target: str, root: Path) -> tuple[dict[str, str], str | None]:
    """The starter files for a team, with the team name, merge target and detected test command filled in."""
    marker, test_cmd, allow = detect_stack(root)
    diff_check = f"git diff --check {target}...HEAD"
    values = {
        "__TEAM_NAME__": json.dumps(name),
        "__TARGET__": json.dumps(target),
        "__RUN_ALLOW__": json.dumps(allow + _GIT_READ),
        "__DEV_CHECKS__": json.dumps([test_cmd] if test_cmd else [diff_check]),
        "__DIFF_CHECKS__": json.dumps([diff_check]),
    }
    out = {}
    for rel, text in template_files().items():
        for key, value in values.items():
            text = text.replace(key, value)
        out[rel] = text
    return out, marker


def _team_name(root: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", root.name).strip("-")
    return name or "team"


def _existing_settings(root: Path) -> dict:
    try:
        data = tomllib.loads((root / "cowork.toml").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _ensure_repo(path: Path, git_init: bool) -> tuple[Path, bool]:
    if not path.exists():
        if not git_init:
            raise BadInput(f"{path} does not exist", hint="create it, or pass --git-init to create a new repository there")
        path.mkdir(parents=True)
    elif not path.is_dir():
        raise BadInput(f"{path} is not a directory")
    top = toplevel(path)
    if top is not None:
        return top, False
    if not git_init:
        raise BadInput(f"{path} is not a git repository",
                       hint="run `git init` there first, or pass --git-init to let cowork create one")
    git("init", "-b", "main", cwd=path)
    return path.resolve(), True


def _update_gitignore(root: Path) -> FileAction:
    path = root / ".gitignore"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    entries = {line.strip().strip("/") for line in text.splitlines()}
    if ".cowork" in entries or ".cowork/*" in entries:
        return FileAction(".gitignore", "unchanged", f"already ignores {IGNORE_LINE}")
    if text and not text.endswith("\n"):
        text += "\n"
    path.write_text(text + f"# cowork runtime state (database, worktrees, logs)\n{IGNORE_LINE}\n", encoding="utf-8")
    return FileAction(".gitignore", "updated" if text else "wrote", f"ignores {IGNORE_LINE}")


def write_schema(ws: Workspace) -> FileAction:
    """Write the role JSON Schema to .cowork/role.schema.json (what role files' first line points editors to)."""
    from cowork.roles import role_schema

    path = ws.state_dir / SCHEMA_NAME
    text = json.dumps(role_schema(), indent=2) + "\n"
    old = path.read_text(encoding="utf-8") if path.exists() else None
    if old == text:
        return FileAction(ws.rel(path), "unchanged")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return FileAction(ws.rel(path), "wrote" if old is None else "updated")


def _commit(root: Path, actions: list[FileAction]) -> str | None:
    """Commit the team files this run wrote, plus any of them never committed before. Uses the user's git identity."""
    candidates = [a.path for a in actions if not a.path.startswith(".cowork/") and (root / a.path).exists()]
    if not candidates:
        return None
    has_head = rev(root, "HEAD") is not None
    in_head = set(git("ls-tree", "-r", "--name-only", "HEAD", "--", *candidates, cwd=root).splitlines()) if has_head else set()
    changed = {a.path for a in actions if a.action in {"wrote", "overwrote", "updated"}}
    paths = [p for p in candidates if p in changed or p not in in_head]
    if not paths:
        return None
    git("add", "--", *paths, cwd=root)
    if has_head:  # only what differs from HEAD (a file rewritten with the same text is no change)
        paths = git("diff", "--cached", "--name-only", "HEAD", "--", *paths, cwd=root).splitlines()
        if not paths:
            return None
    try:
        # `--only` semantics (pathspec after --): whatever else the user has staged stays out of this commit
        git("commit", "--quiet", "--no-verify", "-m", COMMIT_MESSAGE, "--", *paths, cwd=root)
    except GitError as exc:
        hint = None
        if "user.email" in exc.stderr or "identity" in exc.stderr:
            hint = 'set your identity: git config user.name "You"; git config user.email you@example.com'
        raise CoworkError(f"could not commit the team files: {exc.stderr}", hint=hint) from None
    return git("rev-parse", "HEAD", cwd=root)


def init_team(path: Path | str = ".", *, force: bool = False, git_init: bool = False, commit: bool = False,
              name: str | None = None) -> InitResult:
    """Make the git repository at (or containing) `path` a cowork team.

    Args:
        force: overwrite team files that already exist (otherwise they are skipped).
        git_init: create a git repository (branch main) when `path` is not in one.
        commit: commit the written files with the user's git identity.
        name: the team name written to cowork.toml (default: the repository folder's name).

    Raises:
        BadInput: `path` is not in a git repository and `git_init` is false.
    """
    root, created = _ensure_repo(Path(path), git_init)
    existing = _existing_settings(root)
    # a re-run renders the same files as the first run, so unchanged files are recognised as such
    merge = existing.get("merge") if isinstance(existing.get("merge"), dict) else {}
    target = merge.get("target") or current_branch(root) or "main"
    files, marker = render_templates(name or existing.get("name") or _team_name(root), target, root)
    result = InitResult(root=root, git_initialized=created, stack=marker)
    for rel, text in files.items():
        dest = root / rel
        if dest.exists():
            if dest.read_text(encoding="utf-8", errors="replace") == text:
                result.files.append(FileAction(rel, "unchanged"))
                continue
            if not force:
                result.files.append(FileAction(rel, "skipped", "exists; --force overwrites it"))
                continue
        existed = dest.exists()
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(text, encoding="utf-8")
        result.files.append(FileAction(rel, "overwrote" if existed else "wrote"))
    result.files.append(_update_gitignore(root))
    result.files.append(write_schema(Workspace(root)))
    if commit:
        result.commit = _commit(root, result.files)
    return result
