"""YAML loading that remembers where every key and value came from, so errors can name a line and column."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cowork.errors import Problem, ValidationFailed

Loc = tuple[int, int]  # 1-based line, column


class Located:
    """A parsed YAML document plus a map from key paths (tuples) to source positions."""

    def __init__(self, data: Any, positions: dict[tuple, Loc], file: str,
                 duplicates: list[tuple[tuple, Loc, Loc]] | None = None):
        self.data = data
        self.positions = positions
        self.file = file
        self.duplicates = duplicates or []  # (key path, where written again, where first written)

    def where(self, path: tuple) -> Loc | None:
        """Position of the deepest known prefix of `path`."""
        path = tuple(path)
        while path:
            if path in self.positions:
                return self.positions[path]
            path = path[:-1]
        return self.positions.get((), None)

    def problem(self, path: tuple, message: str, hint: str | None = None) -> Problem:
        loc = self.where(path)
        return Problem(
            message=message,
            file=self.file,
            line=loc[0] if loc else None,
            column=loc[1] if loc else None,
            field=".".join(str(p) for p in path) or None,
            hint=hint,
        )


def _walk(node: yaml.Node, path: tuple, out: dict[tuple, Loc], duplicates: list[tuple[tuple, Loc, Loc]]) -> None:
    """Record the position of every key (where it is written) and every list item, and every key written twice in
    one mapping (PyYAML keeps the last value without a word)."""
    out.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, Loc] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            loc = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            if isinstance(key, str) and key != "<<":  # `<<` merges may repeat
                if key in seen:
                    duplicates.append((path + (key,), loc, seen[key]))
                seen.setdefault(key, loc)
            out[path + (key,)] = loc
            _walk(value_node, path + (key,), out, duplicates)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, path + (i,), out, duplicates)


def load_yaml_text(text: str, file: str, line_offset: int = 0) -> Located:
    """Parse YAML text, raising ValidationFailed with the file and line on a syntax error.

    Args:
        text: the YAML source.
        file: the name to put in error messages.
        line_offset: lines before `text` in the real file (front matter, fenced blocks).
    """
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = f"invalid YAML: {exc.problem or exc.context}"
        ctx = exc.context_mark
        if exc.problem and exc.context and ctx is not None and (mark is None or ctx.line != mark.line):
            # e.g. an unclosed bracket is detected lines later: say where the construct began
            message += f" ({exc.context} that began at line {ctx.line + 1 + line_offset}, column {ctx.column + 1})"
        raise ValidationFailed(
            [
                Problem(
                    message=message,
                    file=file,
                    line=(mark.line + 1 + line_offset) if mark else None,
                    column=(mark.column + 1) if mark else None,
                    hint="check indentation and quoting near this line",
                )
            ]
        ) from None
    except yaml.YAMLError as exc:
        raise ValidationFailed([Problem(message=f"invalid YAML: {exc}", file=file)]) from None
    positions: dict[tuple, Loc] = {}
    duplicates: list[tuple[tuple, Loc, Loc]] = []
    if node is not None:
        _walk(node, (), positions, duplicates)
    if line_offset:
        positions = {k: (v[0] + line_offset, v[1]) for k, v in positions.items()}
        duplicates = [(k, (a[0] + line_offset, a[1]), (b[0] + line_offset, b[1])) for k, a, b in duplicates]
    return Located(data, positions, file, duplicates)


def load_yaml_file(path: Path, display: str | None = None) -> Located:
    display = display or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValidationFailed([Problem(message="file not found", file=display)]) from None
    except UnicodeDecodeError:
        raise ValidationFailed([Problem(message="not UTF-8 text", file=display)]) from None
    return load_yaml_text(text, display)


def duplicate_key_problems(doc: Located) -> list[Problem]:
    """A problem at each key written a second time in the same mapping, where only the last value would count."""
    return [Problem(f"duplicate key '{path[-1]}' (first written at line {first[0]}); only one value can count",
                    file=doc.file, line=again[0], column=again[1], field=".".join(str(p) for p in path),
                    hint=f"keep one '{path[-1]}:' and delete the other")
            for path, again, first in doc.duplicates]


def pydantic_problems(exc: Any, doc: Located, prefix: tuple = (), hints: dict[str, str] | None = None) -> list[Problem]:
    """Turn a pydantic ValidationError into located problems."""
    problems = []
    for err in exc.errors():
        loc = prefix + tuple(err["loc"])
        kind = err["type"]
        if kind == "extra_forbidden":
            msg = f"unknown key '{loc[-1]}'"
            hint = (hints or {}).get("extra")
        elif kind == "missing":
            msg = f"missing required field '{loc[-1]}'"
            hint = (hints or {}).get(str(loc[-1]))
        else:
            msg = err["msg"]
            hint = (hints or {}).get(str(loc[-1])) if loc else None
        problems.append(doc.problem(loc, msg, hint))
    return problems


def dump_yaml(data: Any) -> str:
    """Diff-friendly YAML: keys in the given order, multi-line strings as | blocks."""
    return yaml.dump(data, Dumper=_BlockDumper, sort_keys=False, allow_unicode=True, width=100)


class _BlockDumper(yaml.SafeDumper):
    pass


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_BlockDumper.add_representer(str, _str_representer)
