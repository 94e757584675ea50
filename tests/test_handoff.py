"""Handoff packets: parsing, located errors, helpers, and render→parse→render round trips."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cowork import handoff
from cowork.errors import ValidationFailed

PACKET = """\
---
cowork: handoff/v1
task: t7-login-rate-limit
lane: implement
from: dev
to: reviewer
status: done
branch: cowork/t7-login-rate-limit/implement
base: 3f2a1c9
cost: {tokens_in: 12034, tokens_out: 2210, usd: 0.07}
---
# Rate-limit /api/login

## Summary
Added a token bucket.

## Checklist
- [x] token bucket in src/limits.py
- [ ] load test at 1k rps (deferred: no load rig)

## Artifacts
- src/limits.py

## Decisions
## Open risks
## Next
- reviewer: check the bucket size
"""


def problems(text: str):
    with pytest.raises(ValidationFailed) as info:
        handoff.parse(text, "handoffs/t7/implement.md")
    return info.value.problems


def test_parse_the_design_example():
    p = handoff.parse(PACKET)
    assert p.meta.from_ == "dev" and p.meta.to == "reviewer" and p.meta.status == "done"
    assert p.meta.cost.tokens_in == 12034 and p.meta.cost.usd == 0.07
    assert p.title == "Rate-limit /api/login"
    assert p.section("Summary") == "Added a token bucket." and p.section("Decisions") == ""
    assert p.checklist() == [(True, "token bucket in src/limits.py"), (False, "load test at 1k rps (deferred: no load rig)")]
    assert handoff.parse(handoff.render(p)) == p


def test_render_is_stable_and_in_section_order():
    text = handoff.render(handoff.parse(PACKET))
    assert text.startswith("---\ncowork: handoff/v1\ntask: t7-login-rate-limit\n")
    heads = [line for line in text.splitlines() if line.startswith("## ")]
    assert heads == [f"## {s}" for s in handoff.SECTIONS]


def test_front_matter_errors_are_located():
    [p] = problems(PACKET.replace("status: done", "status: finished"))
    assert (p.line, p.field) == (7, "status") and "done" in p.message
    [p] = problems(PACKET.replace("to: reviewer", "to: reviewer\nreviewers: [a]"))
    assert (p.line, p.column, p.field, p.message) == (7, 1, "reviewers", "unknown key 'reviewers'")
    [p] = problems(PACKET.replace("from: dev\n", ""))
    assert p.field == "from" and "missing" in p.message
    [p] = problems(PACKET.replace("base: 3f2a1c9", "base: [3f2a1c9"))
    assert p.line == 10 and "invalid YAML" in p.message


def test_a_key_written_twice_in_the_front_matter_is_an_error_naming_both_lines():
    """YAML keeps the last of two equal keys without a word; a packet says so, as a role file does."""
    [p] = problems(PACKET.replace("status: done", "status: done\nskills: [tdd]\nstatus: failed"))
    assert (p.file, p.line, p.column, p.field) == ("handoffs/t7/implement.md", 9, 1, "status")
    assert p.message == "duplicate key 'status' (first written at line 7); only one value can count"
    nested = PACKET.replace("cost: {tokens_in: 12034, tokens_out: 2210, usd: 0.07}",
                            "cost:\n  usd: 0.07\n  tokens_in: 1\n  usd: 0.08")
    found = {p.field: p for p in problems(nested.replace("lane: implement", "lane: implement\nx: 1"))}
    assert set(found) == {"cost.usd", "x"}  # reported with the front matter's other problems
    assert found["cost.usd"].line == 14 and "first written at line 12" in found["cost.usd"].message


def test_body_errors_are_located_and_reported_with_front_matter_errors():
    text = PACKET.replace("## Decisions\n", "").replace("Added a token bucket.\n", "").replace("lane: implement", "lane: implement\nx: 1")
    found = {p.message: p for p in problems(text)}
    assert set(found) == {"unknown key 'x'", "missing required section '## Decisions'", "section '## Summary' is empty"}
    assert found["unknown key 'x'"].line == 5
    lines = text.splitlines()
    assert lines[found["section '## Summary' is empty"].line - 1] == "## Summary"
    # a missing section points at where it belongs: the next required section present
    assert lines[found["missing required section '## Decisions'"].line - 1] == "## Open risks"


def test_missing_front_matter_and_title():
    [p] = problems("# Title\n\n## Summary\nx\n")
    assert p.line == 1 and "front matter" in p.message
    [p] = problems("---\ntask: t\n")
    assert "not closed" in p.message
    [p] = problems(PACKET.replace("# Rate-limit /api/login\n", ""))
    assert p.line == 12 and "Title" in p.message


def test_headings_inside_code_fences_are_not_sections():
    text = PACKET.replace("- src/limits.py", "```\n## Next\n```")
    assert "## Next" in handoff.parse(text).section("Artifacts")


def test_helpers():
    assert handoff.bullets(["a", " b ", ""]) == "- a\n- b"
    assert handoff.bullets("already text\n") == "already text"
    assert handoff.checklist([(True, "a"), {"done": False, "item": "b"}, "[x] c", "- [ ] d", "e"]) == (
        "- [x] a\n- [ ] b\n- [x] c\n- [ ] d\n- [ ] e")
    assert handoff.is_packet_path("handoffs/t1/impl.md")
    assert not handoff.is_packet_path("handoffs/t1/plan.md") and not handoff.is_packet_path("handoffs/README.md")


# -- round trips ------------------------------------------------------------------------------------------------

ids = st.from_regex(r"[a-z0-9][a-z0-9-]{0,20}", fullmatch=True)
inline = st.text(st.characters(whitelist_categories=("L", "N", "P", "S", "Zs"), blacklist_characters="#`\r\x85"),
                 min_size=1, max_size=40).map(lambda s: " ".join(s.split())).filter(bool)
line = st.one_of(inline, inline.map(lambda s: f"- {s}"), inline.map(lambda s: f"- [x] {s}"),
                 inline.map(lambda s: f"### {s}"), st.just(""))
section_text = st.lists(line, max_size=6).map(lambda ls: "\n".join(ls).strip("\n"))


@st.composite
def packets(draw) -> handoff.Packet:
    meta = handoff.Meta.model_validate({
        "task": draw(ids), "lane": draw(ids), "from": draw(ids), "to": draw(st.none() | ids),
        "status": draw(st.sampled_from(["done", "blocked", "needs-review", "failed"])),
        "branch": draw(st.none() | ids.map(lambda s: f"cowork/x/{s}")),
        "base": draw(st.none() | st.from_regex(r"[0-9a-f]{7,40}", fullmatch=True)),
        "cost": {"tokens_in": draw(st.integers(0, 10**7)), "tokens_out": draw(st.integers(0, 10**7)),
                 "usd": draw(st.floats(0, 1000, allow_nan=False))},
        "skills": draw(st.lists(ids, max_size=2)),
    })
    sections = {name: draw(section_text) for name in handoff.SECTIONS}
    sections["Summary"] = draw(inline)
    if draw(st.booleans()):
        sections["Notes"] = draw(section_text)
    return handoff.Packet(meta=meta, title=draw(inline), sections=sections)


@settings(max_examples=150, deadline=None)
@given(packet=packets())
def test_render_parse_render(packet):
    text = handoff.render(packet)
    parsed = handoff.parse(text)
    assert parsed == packet
    assert handoff.render(parsed) == text
