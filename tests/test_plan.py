"""Plans: parsing, located errors (roles, dependencies, cycles, duplicates), order, render→parse round trips."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cowork import plan
from cowork.errors import ValidationFailed

PLAN = """\
---
cowork: plan/v1
task: t7
title: Rate-limit login
---
# Rate-limit login

```yaml
lanes:
  - id: impl
    role: dev
    goal: Add a token bucket to /api/login.
  - id: docs
    role: writer
    goal: Document the limit.
    depends_on: [impl]
  - id: review
    role: reviewer
    goal: Review both.
    depends_on: [impl, docs]
```

Notes for people.
"""
ROLES = {"dev", "writer", "reviewer"}


def problems(text: str, roles=ROLES):
    with pytest.raises(ValidationFailed) as info:
        plan.parse(text, "plan.md", roles)
    return info.value.problems


def test_parse_and_order():
    p = plan.parse(PLAN, "plan.md", ROLES)
    assert p.meta.task == "t7" and [lane.id for lane in p.lanes] == ["impl", "docs", "review"]
    assert p.order() == ["impl", "docs", "review"] and p.notes == "Notes for people."
    assert p.lane("docs").depends_on == ["impl"]


def test_unknown_role_missing_dependency_duplicate_id_are_located():
    text = PLAN.replace("role: writer", "role: ghost").replace("[impl, docs]", "[impl, nope]").replace(
        "id: review", "id: impl")
    found = {p.message: p for p in problems(text)}
    assert found["unknown role 'ghost'"].line == 14 and found["unknown role 'ghost'"].field == "lanes.1.role"
    assert "dev, reviewer, writer" in found["unknown role 'ghost'"].hint
    assert found["duplicate lane id 'impl' (also lane #1)"].line == 17
    [dep] = [p for m, p in found.items() if "unknown lane 'nope'" in m]
    assert (dep.line, dep.field) == (20, "lanes.2.depends_on.1")


def test_a_key_written_twice_is_an_error_naming_both_lines():
    """YAML keeps the last of two values without a word: in a hand-written plan that silently drops a goal or a
    dependency, so the front matter and the lanes block both refuse it."""
    text = PLAN.replace("title: Rate-limit login\n", "title: Rate-limit login\ntitle: Something else\n")
    [p] = problems(text)
    assert (p.line, p.field) == (5, "title") and "duplicate key 'title' (first written at line 4)" in p.message
    text = PLAN.replace("    goal: Document the limit.\n", "    goal: Document the limit.\n    goal: Write a poem.\n")
    [p] = problems(text)
    assert (p.line, p.field) == (16, "lanes.1.goal") and "first written at line 15" in p.message


def test_cycle_is_reported_with_its_path():
    text = PLAN.replace("goal: Add a token bucket to /api/login.", "goal: Add a token bucket.\n    depends_on: [review]")
    [p] = problems(text)
    assert "dependency cycle: impl -> review -> impl" in p.message and p.line == 13


def test_self_dependency_and_bad_ids():
    [p] = problems(PLAN.replace("depends_on: [impl]", "depends_on: [docs]"))
    assert "depends on itself" in p.message
    [p] = problems(PLAN.replace("id: impl", "id: Impl_1").replace("[impl]", "[Impl_1]").replace("[impl, docs]", "[docs]"))
    assert "not valid" in p.message and p.field == "lanes.0.id"


def test_shape_errors():
    [p] = problems(PLAN.replace("```yaml", "```text"))
    assert "no ```yaml block" in p.message
    [p] = problems(PLAN.replace("    goal: Document the limit.\n", ""))
    assert p.field == "lanes.1.goal" and "missing" in p.message
    [p] = problems(PLAN.replace("lanes:", "lanes:\n  owner: me", 1))
    assert "invalid YAML" in p.message or "list" in p.message
    [p] = problems(PLAN.replace("title: Rate-limit login\n", ""))
    assert p.field == "title"
    # a hand-written plan without front matter is told what goes in it, not only "the fields"
    [p] = problems(PLAN.split("---", 2)[2])
    assert p.message == "missing YAML front matter" and "`title: ...`" in p.hint and "```yaml" in p.hint
    [p] = problems(PLAN.replace("role: dev", "role: dev\n    priority: 1"))
    assert (p.line, p.message) == (12, "unknown key 'priority'")


@pytest.mark.parametrize("version", ["plan/v9", "plan/v2", "handoff/v1", "1"])
def test_an_unknown_plan_format_is_refused_with_the_supported_one(version):
    [p] = problems(PLAN.replace("cowork: plan/v1", f"cowork: {version}"))
    assert (p.file, p.line, p.field) == ("plan.md", 2, "cowork")
    assert p.message == f"unknown plan format '{version}'; this version of cowork reads plan/v1"
    assert p.hint.startswith("set `cowork: plan/v1`")
    found = problems(PLAN.replace("cowork: plan/v1", "cowork: plan/v9").replace("title: Rate-limit login\n", ""))
    assert sorted(p.field for p in found) == ["cowork", "title"]


def test_a_plan_without_a_format_is_read_as_v1():
    assert plan.parse(PLAN.replace("cowork: plan/v1\n", ""), "plan.md", ROLES).meta.cowork == "plan/v1"


def test_roles_none_skips_the_role_check():
    assert plan.parse(PLAN.replace("role: writer", "role: ghost"), "plan.md", None).lanes[1].role == "ghost"


# -- round trips ------------------------------------------------------------------------------------------------

lane_ids = st.from_regex(r"[a-z0-9][a-z0-9-]{0,12}", fullmatch=True)
text = st.text(st.characters(whitelist_categories=("L", "N", "P", "S", "Zs"), blacklist_characters="`\r\x85"),
               min_size=1, max_size=60).map(lambda s: " ".join(s.split())).filter(bool)


@st.composite
def plans(draw) -> plan.Plan:
    ids = draw(st.lists(lane_ids, min_size=1, max_size=6, unique=True))
    lanes = []
    for i, lid in enumerate(ids):
        deps = draw(st.lists(st.sampled_from(ids[:i]), unique=True, max_size=3)) if i else []
        lanes.append(plan.LaneSpec(id=lid, role=draw(st.sampled_from(sorted(ROLES))), goal=draw(text | text.map(
            lambda s: s + "\nsecond line")), depends_on=deps, checks=draw(st.none() | st.lists(text, max_size=2))))
    meta = plan.PlanMeta(title=draw(text.filter(lambda s: not s.startswith("#"))), task=draw(st.none() | lane_ids))
    return plan.Plan(meta=meta, lanes=lanes, notes=draw(st.just("") | text.filter(lambda s: s == s.strip())))


@settings(max_examples=120, deadline=None)
@given(p=plans())
def test_render_parse_render(p):
    rendered = plan.render(p)
    parsed = plan.parse(rendered, "plan.md", ROLES)
    assert parsed == p
    assert plan.render(parsed) == rendered
    assert set(parsed.order()) == {lane.id for lane in p.lanes}
