"""Markdown files with YAML front matter: the shape of every packet cowork commits."""
from __future__ import annotations

import re

from cowork.errors import Problem, ValidationFailed
from cowork.yamlpos import Located, dump_yaml, load_yaml_text

_FENCE = "---"


def split(text: str, file: str) -> tuple[Located, str, int]:
    """Split `---` front matter from the body.

    Returns:
        (front matter document, body text, line number where the body starts)
    """
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].strip() != _FENCE:
        raise ValidationFailed([Problem("missing YAML front matter", file=file, line=1,
                                        hint="start the file with a line '---', the fields, then '---'")])
    for i in range(1, len(lines)):
        if lines[i].strip() == _FENCE:
            doc = load_yaml_text("".join(lines[1:i]), file, line_offset=1)
            if not isinstance(doc.data, dict):
                raise ValidationFailed([Problem("front matter must be a mapping", file=file, line=2)])
            return doc, "".join(lines[i + 1:]), i + 2
    raise ValidationFailed([Problem("front matter is not closed", file=file, line=1, hint="add a line '---' after the fields")])


def join(front: dict, body: str) -> str:
    return f"{_FENCE}\n{dump_yaml(front)}{_FENCE}\n{body}"


_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def sections(body: str, level: int = 2) -> tuple[str | None, dict[str, tuple[str, int]]]:
    """The `# title` and the `## sections` of a markdown body.

    Returns:
        (title or None, {heading: (text, line index within body)}) in document order.
    """
    title = None
    out: dict[str, tuple[str, int]] = {}
    current: str | None = None
    buf: list[str] = []
    start = 0
    in_fence = False
    for idx, line in enumerate(body.splitlines()):
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
        m = None if in_fence else _HEADING.match(line)
        if m and len(m.group(1)) == 1 and title is None and current is None:
            title = m.group(2)
            continue
        if m and len(m.group(1)) == level:
            if current is not None:
                out[current] = ("\n".join(buf).strip("\n"), start)
            current, buf, start = m.group(2), [], idx
            continue
        if current is not None:
            buf.append(line)
    if current is not None:
        out[current] = ("\n".join(buf).strip("\n"), start)
    return title, out
