"""`cowork init` on real temporary git repositories."""
from __future__ import annotations

import json
import tomllib

import jsonschema
import pytest
import yaml

from cowork import frontmatter
from cowork.config import load_settings
from cowork.errors import BadInput
from cowork.init import init_team, template_files
from cowork.roles import load_roles, role_schema
from cowork.workspace import Workspace
from tests.conftest import git

TEAM_FILES = ["cowork.toml", "roles/dev.yaml", "roles/planner.yaml", "roles/reviewer.yaml", "roles/writer.yaml",
              "roles/skills/fix-a-bug.md", "handoffs/README.md"]


def actions(result) -> dict[str, str]:
    return {f.path: f.action for f in result.files}


def test_templates_ship_as_package_data():
    files = template_files()
    assert list(files) == TEAM_FILES
    assert all(text.strip() for text in files.values())


def test_the_written_cowork_toml_shows_every_setting(repo):
    """Its header says "Every key below shows its default" and the README says init writes them all; a setting
    added to the model and not to the template (merge.checks_timeout_s was) is then a setting nobody finds."""
    import re

    from cowork.config import TeamSettings

    init_team(repo)
    text = (repo / "cowork.toml").read_text()
    sections = {"": ""}
    current = ""
    for line in text.splitlines():
        header = re.match(r"^\[([\w.]+)\]", line)
        current = header.group(1) if header else current
        sections[current] = sections.get(current, "") + line + "\n"
    missing = []
    for name, field in TeamSettings.model_fields.items():
        sub = getattr(field.annotation, "model_fields", None)
        if sub is None:
            if name not in sections and not re.search(rf"^#?\s*{name}\s*=", sections[""], re.M):
                missing.append(name)
            continue
        for key in sub:
            if f"{name}.{key}" in sections:  # a table of its own ([policy.approvals])
                continue
            if not re.search(rf"^#?\s*{key}\s*=", sections.get(name, ""), re.M):
                missing.append(f"{name}.{key}")
    assert missing == []


def test_init_writes_a_valid_starter_team(repo):
    result = init_team(repo)
    assert result.root == repo.resolve()
    assert actions(result) == {**{p: "wrote" for p in TEAM_FILES}, ".gitignore": "wrote",
                               ".cowork/role.schema.json": "wrote"}
    ws = Workspace(repo.resolve())
    settings = load_settings(ws.config_path)
    assert settings.name == "repo" and settings.merge.target == "main"
    raw = tomllib.loads(ws.config_path.read_text())
    assert {"model", "budget", "prices", "merge", "policy", "mcp"} <= set(raw), "every section is present"
    assert ws.config_path.read_text().count("\n#") > 10, "the settings file is commented"

    roles = load_roles(ws.roles_dir, ws.root)
    assert {"planner", "dev", "reviewer", "writer"} <= set(roles.roles)
    assert roles.warnings == [], [w.render() for w in roles.warnings]
    dev, planner = roles["dev"], roles["planner"]
    assert dev.review_by == "reviewer" and dev.checks and dev.run_allow and dev.budget.usd_per_task
    assert not planner.allows("write_file") and not planner.allows("run")
    assert not roles["writer"].allows("run") and roles["writer"].allows("write_file")
    for role in roles.roles.values():
        assert role.tools and role.budget.max_steps and not role.allows("merge")

    skill_doc, _, _ = frontmatter.split((ws.skills_dir / "fix-a-bug.md").read_text(), "skill")
    assert set(skill_doc.data["roles"]) <= set(roles.roles) and skill_doc.data["triggers"]

    readme = (ws.handoffs_dir / "README.md").read_text()
    for word in ("Summary", "Checklist", "Artifacts", "Decisions", "Open risks", "Next", "needs-review", "blocked",
                 "its own file"):
        assert word in readme
    assert ".cowork/" in (repo / ".gitignore").read_text().splitlines()
    assert git(repo, "status", "--porcelain", "--ignored", ".cowork") == "!! .cowork/"


def test_role_files_point_editors_at_the_schema_init_writes(repo):
    init_team(repo)
    schema_path = repo / ".cowork" / "role.schema.json"
    schema = json.loads(schema_path.read_text())
    assert schema == role_schema()
    for path in (repo / "roles").glob("*.yaml"):
        first = path.read_text().splitlines()[0]
        assert first == "# yaml-language-server: $schema=../.cowork/role.schema.json"
        assert (path.parent / "../.cowork/role.schema.json").resolve() == schema_path.resolve()
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)


def test_init_is_idempotent_and_never_overwrites_without_force(repo):
    init_team(repo)
    before = {p: (repo / p).read_text() for p in TEAM_FILES}
    again = init_team(repo)
    assert set(actions(again).values()) == {"unchanged"}
    assert {p: (repo / p).read_text() for p in TEAM_FILES} == before
    assert (repo / ".gitignore").read_text().count(".cowork/") == 1

    (repo / "roles/dev.yaml").write_text("name: dev\nmandate: My own dev.\n")
    kept = init_team(repo)
    assert actions(kept)["roles/dev.yaml"] == "skipped"
    assert (repo / "roles/dev.yaml").read_text() == "name: dev\nmandate: My own dev.\n"

    forced = init_team(repo, force=True)
    assert actions(forced)["roles/dev.yaml"] == "overwrote"
    assert actions(forced)["cowork.toml"] == "unchanged"
    assert (repo / "roles/dev.yaml").read_text() == before["roles/dev.yaml"]


def test_not_a_git_repo_is_bad_input_unless_git_init(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(BadInput, match="not a git repository") as info:
        init_team(plain)
    assert "--git-init" in info.value.hint
    assert not (plain / "cowork.toml").exists()

    result = init_team(plain, git_init=True)
    assert result.git_initialized and (plain / ".git").is_dir() and (plain / "cowork.toml").is_file()
    assert git(plain, "symbolic-ref", "--short", "HEAD") == "main"

    fresh = init_team(tmp_path / "new" / "dir", git_init=True)
    assert fresh.git_initialized and (tmp_path / "new/dir/roles/dev.yaml").is_file()


def test_an_existing_gitignore_gets_one_line_appended(repo):
    (repo / ".gitignore").write_text("node_modules/")  # no trailing newline
    assert actions(init_team(repo))[".gitignore"] == "updated"
    assert (repo / ".gitignore").read_text().splitlines()[0] == "node_modules/"
    assert (repo / ".gitignore").read_text().splitlines()[-1] == ".cowork/"
    (repo / ".gitignore").write_text("/.cowork\n")
    assert actions(init_team(repo))[".gitignore"] == "unchanged"


def test_init_in_a_subdirectory_uses_the_repository_root(repo):
    (repo / "src" / "pkg").mkdir(parents=True)
    result = init_team(repo / "src" / "pkg")
    assert result.root == repo.resolve()
    assert (repo / "cowork.toml").is_file() and not (repo / "src/pkg/cowork.toml").exists()


def test_commit_commits_only_the_team_files(repo):
    (repo / "notes.txt").write_text("mine\n")
    git(repo, "add", "notes.txt")  # staged by the user: must stay out of cowork's commit
    result = init_team(repo, commit=True)
    assert result.commit == git(repo, "rev-parse", "HEAD")
    assert git(repo, "log", "-1", "--format=%s") == "cowork init: add team settings, starter roles and handoffs/README.md"
    assert git(repo, "log", "-1", "--format=%an <%ae>") == "Test Person <test@example.com>"
    committed = set(git(repo, "show", "--name-only", "--format=", "HEAD").splitlines())
    assert committed == set(TEAM_FILES) | {".gitignore"}
    assert git(repo, "status", "--porcelain", "notes.txt") == "A  notes.txt"

    assert init_team(repo, commit=True).commit is None, "nothing new to commit"


def test_without_commit_nothing_is_committed(repo):
    head = git(repo, "rev-parse", "HEAD")
    init_team(repo)
    assert git(repo, "rev-parse", "HEAD") == head
    assert "?? cowork.toml" in git(repo, "status", "--porcelain")


def test_dev_checks_follow_the_project_stack(repo):
    (repo / "uv.lock").write_text("")
    result = init_team(repo)
    assert result.stack == "uv.lock"
    dev = load_roles(repo / "roles", repo)["dev"]
    assert dev.checks == ["uv run pytest -q"] and "uv run pytest*" in dev.run_allow


def test_init_cli_text_and_json(tmp_path, cli):
    plain = tmp_path / "plain"
    plain.mkdir()
    bad = cli("init", plain)
    assert bad.code == 2 and "not a git repository" in bad.err and "Traceback" not in bad.err

    first = cli("init", plain, "--git-init", "--name", "acme")
    assert first.code == 0, first.err
    assert "wrote     cowork.toml" in first.out and "created a git repository" in first.out
    assert 'name = "acme"' in (plain / "cowork.toml").read_text()

    second = cli("init", plain, "--json")
    data = second.json()
    assert second.code == 0 and data["root"] == str(plain.resolve())
    assert [f["path"] for f in data["files"]] == TEAM_FILES + [".gitignore", ".cowork/role.schema.json"]
    assert {f["action"] for f in data["files"]} == {"unchanged"}


def test_commit_without_a_git_identity_is_explained(tmp_path, cli):
    plain = tmp_path / "fresh"
    assert cli("init", plain, "--git-init").code == 0  # no commits yet, no identity (HOME is empty)
    r = cli("init", plain, "--commit")
    assert r.code == 1 and "could not commit" in r.err and "git config user.email" in r.err and "Traceback" not in r.err
    git(plain, "config", "user.name", "Ann")
    git(plain, "config", "user.email", "ann@example.com")
    ok = cli("init", plain, "--commit")
    assert ok.code == 0 and "committed as" in ok.out
    assert git(plain, "log", "--format=%an", "-1") == "Ann"
    assert git(plain, "status", "--porcelain") == ""


def test_init_takes_the_directory_as_dash_c_like_every_other_command(tmp_path, cli):
    """The README runs every command as `cowork <command> -C /path/to/repo`; init takes it too (or PATH, not both)."""
    target = tmp_path / "elsewhere"
    target.mkdir()
    made = cli("init", "-C", target, "--git-init")
    assert made.code == 0, made.err
    assert (target / "cowork.toml").is_file() and (target / "roles" / "dev.yaml").is_file()
    both = cli("init", target, "-C", target)
    assert both.code == 2 and "give the directory once" in both.err
