"""Role files: loading, every kind of located error, authority, the schema, and load→dump→load round trips."""
from __future__ import annotations

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cowork.errors import ValidationFailed
from cowork.roles import BUILTIN_TOOLS, Role, load_role_file, load_roles, role_schema

DEV = """\
name: dev
mandate: Implements code changes and keeps the tests green.
tools: [read_file, write_file, run]
run_allow: ["uv run pytest*"]
approvals: {notify: [write_file]}
cannot: [merge]
review_by: reviewer
"""
REVIEWER = "name: reviewer\nmandate: Reviews diffs before they merge.\ntools: [read_file, git_diff]\n"


def roles_dir(tmp_path, **files: str):
    d = tmp_path / "roles"
    d.mkdir(exist_ok=True)
    for name, text in files.items():
        (d / f"{name}.yaml").write_text(text)
    return d


def problems_of(tmp_path, **files: str):
    d = roles_dir(tmp_path, **files)
    with pytest.raises(ValidationFailed) as info:
        load_roles(d, tmp_path)
    return info.value.problems


def test_a_valid_team_loads(tmp_path):
    rs = load_roles(roles_dir(tmp_path, dev=DEV, reviewer=REVIEWER), tmp_path)
    assert rs.names() == ["dev", "reviewer"] and rs.files["dev"].name == "dev.yaml" and rs.warnings == []
    dev = rs["dev"]
    assert dev.allows("run") and dev.allows("finish") and not dev.allows("merge") and not dev.allows("delegate")
    assert dev.tier("write_file") == "notify" and dev.tier("run") == "auto"
    assert dev.tier("run", {"run": "block"}) == "block"


def test_name_defaults_to_the_file_name(tmp_path):
    rs = load_roles(roles_dir(tmp_path, writer="mandate: Writes the docs.\n"), tmp_path)
    assert rs.names() == ["writer"]


@pytest.mark.parametrize("text, line, column, field, words", [
    ("name: dev\nmandate: [unclosed\n", 3, 1, None, "invalid YAML"),
    ("name: dev\nmandate: Does things.\ncolour: blue\n", 3, 1, "colour", "unknown key 'colour'"),
    ("name: dev\nmandate: Does things.\ntools: read_file\n", 3, 1, "tools", "valid list"),
    ("name: dev\nmandate: Does things.\nbudget: {max_steps: -1}\n", 3, 10, "budget.max_steps", "greater than"),
    ("name: dev\nmandate: Does things.\nbudget: {max_steps: true}\n", 3, 10, "budget.max_steps", "not a boolean"),
    ("name: dev\nmandate: Does things.\nbudget: {usd_per_task: false}\n", 3, 10, "budget.usd_per_task",
     "not a boolean"),
    ("name: dev\ntools: [read_file]\n", 1, 1, "mandate", "missing required field 'mandate'"),
    ("name: dev\nmandate: Does things.\ntools: [read_file, teleport]\n", 3, 20, "tools.1", "unknown tool 'teleport'"),
    ("name: dev\nmandate: Does things.\ntools: [read_file, run]\nrun_allow: [ls]\ncannot: [run]\n", 5, 10, "cannot.0",
     "'run' is both granted and forbidden"),
    ("name: dev\nmandate: Does things.\ntools: [github.create_pr]\n", 3, 9, "tools.0", "unknown tool 'github.create_pr'"),
    ("name: Dev Team\nmandate: Does things.\n", 1, 1, "name", "not a valid role name"),
    ("name: dev\nmandate: Does things. And more things.\n", 2, 1, "mandate", "one sentence"),
    ("name: dev\nmandate: Does things.\ntools: [run]\n", 1, 1, "run_allow", "run_allow is empty"),
    ("name: dev\nmandate: Does things.\napprovals: {block: [write_file]}\n", 3, 21, "approvals.block.0", "not in tools"),
    ("name: dev\nmandate: Does things.\nengine: command\n", 3, 1, "engine", "needs a `command`"),
    ("name: dev\nmandate: Does things.\ntimeout_minutes: 30\n", 3, 1, "timeout_minutes",
     "`timeout_minutes` is only used with engine: command"),
    ("name: dev\nmandate: Does things.\nengine: command\ncommand: [x]\ntimeout_minutes: 0\n", 5, 1,
     "timeout_minutes", "greater than 0"),
    ("name: dev\nmandate: Does things.\nengine: command\ncommand: [x]\ntimeout_minutes: true\n", 5, 1,
     "timeout_minutes", "not a boolean"),
])
def test_each_mistake_is_located(tmp_path, text, line, column, field, words):
    [p] = problems_of(tmp_path, dev=text)
    assert (p.file, p.line, p.column, p.field) == ("roles/dev.yaml", line, column, field), p.render()
    assert words in p.message


def test_problems_in_several_files_are_all_reported(tmp_path):
    found = problems_of(tmp_path, a="name: a\n", b="name: b\nmandate: B.\ntools: [nope]\n", c="- just a list\n")
    assert sorted(p.file for p in found) == ["roles/a.yaml", "roles/b.yaml", "roles/c.yaml"]


def test_duplicate_names_and_unknown_reviewers(tmp_path):
    (roles_dir(tmp_path) / "dev.yml").write_text(DEV.replace("review_by: reviewer", "review_by: dev"))
    found = problems_of(tmp_path, dev=DEV)
    messages = sorted(p.render() for p in found)
    assert any("roles/dev.yml:1:1: name: duplicate role name 'dev' (also in roles/dev.yaml)" in m for m in messages)
    assert any("roles/dev.yaml:7:1: review_by: unknown role 'reviewer'" in m for m in messages)


def test_references_are_checked_in_the_same_pass_as_broken_files(tmp_path):
    """One run finds everything: a file's own problems, its unknown references even when other keys of it are
    wrong, and a reference to a role whose file is broken says that file is broken, not "unknown role"."""
    found = problems_of(tmp_path, dev=DEV, reviewer=REVIEWER + "colour: red\n",
                        writer="mandate: Writes the docs.\nreview_by: nobody\nbogus: 1\n")
    assert [p.render().splitlines()[0] for p in found] == [
        "roles/dev.yaml:7:1: review_by: role 'reviewer' cannot be used: its file roles/reviewer.yaml has problems",
        "roles/reviewer.yaml:4:1: colour: unknown key 'colour'",
        "roles/writer.yaml:2:1: review_by: unknown role 'nobody'",
        "roles/writer.yaml:3:1: bogus: unknown key 'bogus'",
    ]


def test_a_lenient_load_leaves_broken_roles_out_and_requires_them_by_name(tmp_path):
    d = roles_dir(tmp_path, dev=DEV, reviewer=REVIEWER + "colour: red\n", writer="mandate: Writes the docs.\n")
    rs = load_roles(d, tmp_path, strict=False)
    assert rs.names() == ["dev", "writer"] and set(rs.broken) == {"reviewer"} and rs.named() == {"dev", "reviewer",
                                                                                                   "writer"}
    assert len(rs.problems) == 2  # reviewer's own, and dev naming it
    rs.require(["dev", "writer"])
    with pytest.raises(ValidationFailed) as info:
        rs.require(["writer", "reviewer"])
    assert [p.file for p in info.value.problems] == ["roles/reviewer.yaml"]
    with pytest.raises(ValidationFailed) as info:
        rs.require()
    assert len(info.value.problems) == 2
    notice = rs.notice()
    assert notice.count("\n") == 1 and "roles/reviewer.yaml:4:1: colour: unknown key 'colour'" in notice


def test_a_name_that_differs_from_the_file_name_is_an_error_naming_both(tmp_path):
    found = problems_of(tmp_path, dev=DEV.replace("name: dev", "name: developer"), reviewer=REVIEWER)
    [p] = [p for p in found if p.field == "name"]
    assert (p.file, p.line) == ("roles/dev.yaml", 1)
    assert p.message.startswith("role name 'developer' differs from its file name roles/dev.yaml")
    assert p.hint.startswith("rename the file to roles/developer.yaml, or set `name: dev`")


def test_a_key_written_twice_is_an_error_at_its_second_line(tmp_path):
    text = "name: developer\nmandate: Does things.\nname: dev\nbudget:\n  max_steps: 5\n  max_steps: 50\n"
    found = problems_of(tmp_path, dev=text)
    assert [(p.file, p.line, p.column, p.field) for p in found] == [
        ("roles/dev.yaml", 3, 1, "name"), ("roles/dev.yaml", 6, 3, "budget.max_steps")]
    assert found[0].message == "duplicate key 'name' (first written at line 1); only one value can count"
    assert found[0].render().startswith("roles/dev.yaml:3:1: name: duplicate key 'name'")


def test_an_empty_file_is_an_error(tmp_path):
    [p] = problems_of(tmp_path, dev="")
    assert p.file == "roles/dev.yaml" and "empty" in p.message


def test_mcp_tools_need_a_declared_server(tmp_path):
    d = roles_dir(tmp_path, dev="mandate: Opens pull requests.\ntools: [github.create_pr]\n")
    assert load_roles(d, tmp_path, mcp_servers={"github"})["dev"].tools == ["github.create_pr"]


def test_overlapping_mandates_warn_but_load(tmp_path):
    d = roles_dir(tmp_path, a="mandate: Writes backend code and tests for the payment service.\n",
                  b="mandate: Writes backend code and tests for the payment service quickly.\n")
    rs = load_roles(d, tmp_path)
    assert rs.names() == ["a", "b"]
    [w] = rs.warnings
    assert w.file == "roles/b.yaml" and w.field == "mandate" and "overlaps" in w.message


def test_schema_accepts_valid_roles_and_rejects_unknown_keys(tmp_path):
    schema = role_schema()
    jsonschema.validate(yaml.safe_load(DEV), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "dev", "mandate": "x", "colour": "blue"}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "dev"}, schema)


# -- round trips ------------------------------------------------------------------------------------------------

names = st.from_regex(r"[a-z][a-z0-9_-]{0,12}", fullmatch=True)
words = st.text(st.characters(whitelist_categories=("L", "N"), whitelist_characters=" -'()&:#\"é"), min_size=1,
                max_size=30).map(lambda s: " ".join(s.split())).filter(lambda s: s and "." not in s)
commands = st.text(st.characters(whitelist_categories=("L", "N", "P", "S", "Zs")), min_size=1, max_size=25).filter(
    lambda s: s.strip() == s)


@st.composite
def roles(draw) -> Role:
    tools = draw(st.lists(st.sampled_from(sorted(BUILTIN_TOOLS)), unique=True, max_size=6))
    run_allow = draw(st.lists(commands, min_size=1 if "run" in tools else 0, max_size=3))
    forbidden = [a for a in ["merge", "push", *sorted(BUILTIN_TOOLS)] if a not in tools]
    tiered = draw(st.lists(st.sampled_from(tools), unique=True)) if tools else []
    split = draw(st.integers(0, len(tiered)))
    return Role.model_validate({
        "name": draw(names),
        "mandate": draw(words) + ".",
        "model": draw(st.none() | st.sampled_from(["openai/gpt-4o", "anthropic/claude-sonnet-4-5", "ollama/x:7b"])),
        "tools": tools,
        "run_allow": run_allow,
        "approvals": {"notify": tiered[:split], "block": tiered[split:]},
        "cannot": draw(st.lists(st.sampled_from(forbidden), unique=True, max_size=3)),
        "checks": draw(st.lists(commands, max_size=2)),
        "budget": {"usd_per_task": draw(st.none() | st.floats(0, 100, allow_nan=False)),
                   "max_steps": draw(st.none() | st.integers(1, 500))},
        "escalate_to": "human",
    })


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(role=roles())
def test_role_load_dump_load(tmp_path, role):
    path = tmp_path / "role.yaml"
    path.write_text(role.to_yaml())
    loaded, _ = load_role_file(path)
    assert loaded == role
    assert loaded.to_yaml() == role.to_yaml()


def test_skill_files_and_role_skills_are_checked(tmp_path):
    from cowork.roles import check_skills

    d = roles_dir(tmp_path, dev=DEV.replace("review_by: reviewer\n", "skills: [testing, missing]\n"), reviewer=REVIEWER)
    skills = d / "skills"
    skills.mkdir()
    (skills / "testing.md").write_text("---\nroles: [dev, ghost]\ntriggers: [test]\ncolour: red\n---\nWrite tests.\n")
    (skills / "plain.md").write_text("No front matter: for everyone.\n")
    rs = load_roles(d, tmp_path)
    found = {p.message: p for p in check_skills(skills, rs, tmp_path)}
    assert set(found) == {"unknown role 'ghost'", "unknown key 'colour'", "no skill named 'missing'"}
    assert (found["unknown role 'ghost'"].file, found["unknown role 'ghost'"].line) == ("roles/skills/testing.md", 2)
    assert (found["no skill named 'missing'"].file, found["no skill named 'missing'"].field) == ("roles/dev.yaml", "skills.1")
