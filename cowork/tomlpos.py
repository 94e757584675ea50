"""Where tables and keys are written in TOML source, so errors in cowork.toml can name a line.

tomllib keeps no positions, so this reads the text again, after tomllib has accepted it. It follows strings and
brackets far enough that lines inside a multi-line string or array are never taken for keys, and keys of inline
tables are located at the line of the table's own key.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

_BARE = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class Spot:
    """A key's first line, and the [table] it was written under (() before the first header)."""

    line: int
    table: tuple[str, ...]


def positions(text: str) -> dict[tuple[str, ...], Spot]:
    """The spot of every table header and key, by its full dotted path (and of every prefix of that path)."""
    spots: dict[tuple[str, ...], Spot] = {}
    table: tuple[str, ...] = ()
    depth, multiline = 0, None
    for number, raw in enumerate(text.splitlines(), 1):
        if depth > 0 or multiline:
            depth, multiline = _follow(raw, 0, depth, multiline)
            continue
        line = raw.strip()
        if line.startswith("["):
            header = _header(line)
            if header is not None:
                table = header
                _record(spots, table, 1, Spot(number, table))
            continue
        parsed = _key(line, 0)
        if parsed is None or not line[parsed[1]:].startswith("="):
            continue
        _record(spots, table + parsed[0], len(table) + 1, Spot(number, table))
        depth, multiline = _follow(line, parsed[1] + 1, 0, None)
    return spots


def where(spots: dict[tuple[str, ...], Spot], path: tuple) -> Spot | None:
    """The spot of the deepest written prefix of `path` (a missing key is reported at its table)."""
    path = tuple(str(p) for p in path)
    while path:
        if path in spots:
            return spots[path]
        path = path[:-1]
    return None


def first_header_line(spots: dict[tuple[str, ...], Spot]) -> int | None:
    """The line of the first [table] header: top-level keys must come before it."""
    return min((s.line for path, s in spots.items() if s.table[:len(path)] == path), default=None)


def header(path: tuple) -> str:
    """`path` as a TOML table header, quoting what is not a bare key: [prices."openai/gpt-4o"]."""
    return "[" + ".".join(p if _BARE.fullmatch(p) else json.dumps(p) for p in map(str, path)) + "]"


def _record(spots: dict, path: tuple[str, ...], first: int, spot: Spot) -> None:
    for end in range(first, len(path) + 1):
        spots.setdefault(path[:end], spot)


def _header(line: str) -> tuple[str, ...] | None:
    """The path of a `[table]` or `[[array.of.tables]]` header line, or None if the line is not one."""
    opening = 2 if line.startswith("[[") else 1
    parsed = _key(line, opening)
    if parsed is None:
        return None
    rest = line[parsed[1]:]
    return tuple(parsed[0]) if rest.startswith("]" * opening) else None


def _key(text: str, i: int) -> tuple[tuple[str, ...], int] | None:
    """A dotted key (bare, "basic" or 'literal' parts) at text[i:], and the index after it; None if there is none."""
    parts: list[str] = []
    while True:
        i = _skip_blank(text, i)
        if text.startswith('"', i):
            end = _string_end(text, i)
            if end is None:
                return None
            try:
                parts.append(json.loads(text[i:end]))
            except ValueError:  # a TOML escape JSON lacks (\e, \xHH): close enough for finding a line
                parts.append(text[i + 1:end - 1])
            i = end
        elif text.startswith("'", i):
            end = text.find("'", i + 1)
            if end < 0:
                return None
            parts.append(text[i + 1:end])
            i = end + 1
        else:
            m = _BARE.match(text, i)
            if not m:
                return None
            parts.append(m.group())
            i = m.end()
        i = _skip_blank(text, i)
        if not text.startswith(".", i):
            return tuple(parts), i
        i += 1


def _skip_blank(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t":
        i += 1
    return i


def _string_end(text: str, i: int) -> int | None:
    """The index after the basic string opening at text[i], or None if it does not close on this line."""
    j = i + 1
    while j < len(text):
        if text[j] == "\\":
            j += 2
        elif text[j] == '"':
            return j + 1
        else:
            j += 1
    return None


def _follow(text: str, i: int, depth: int, multiline: str | None) -> tuple[int, str | None]:
    """Follow a value through text[i:]: returns the brackets still open and the multi-line string delimiter (\"\"\"
    or ''') still open at the end of the line."""
    while i < len(text):
        if multiline:
            end = text.find(multiline, i)
            if end < 0:
                return depth, multiline
            i, multiline = end + 3, None
        elif text.startswith('"""', i) or text.startswith("'''", i):
            multiline, i = text[i:i + 3], i + 3
        elif text[i] == '"':
            i = _string_end(text, i) or len(text)
        elif text[i] == "'":
            end = text.find("'", i + 1)
            i = len(text) if end < 0 else end + 1
        elif text[i] == "#":
            break
        else:
            depth += {"[": 1, "{": 1, "]": -1, "}": -1}.get(text[i], 0)
            i += 1
    return depth, multiline
