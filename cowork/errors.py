"""Errors a user can act on. The CLI turns these into a message and an exit code, never a traceback."""
from __future__ import annotations

from dataclasses import dataclass, field

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2


@dataclass
class Problem:
    """One thing wrong with one input, located as precisely as we can."""

    message: str
    file: str | None = None
    line: int | None = None
    column: int | None = None
    field: str | None = None
    hint: str | None = None

    def render(self) -> str:
        where = self.file or ""
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        head = f"{where}: " if where else ""
        fld = f"{self.field}: " if self.field else ""
        text = f"{head}{fld}{self.message}"
        if self.hint:
            text += f"\n    fix: {self.hint}"
        return text

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


class CoworkError(Exception):
    """An error with a message meant for the user and a meaningful exit code."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, *, hint: str | None = None, exit_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def render(self) -> str:
        return self.message + (f"\n  fix: {self.hint}" if self.hint else "")


class BadInput(CoworkError):
    """The user's input (a file, an argument) is wrong. Exit code 2."""

    exit_code = EXIT_BAD_INPUT


@dataclass
class ValidationFailed(BadInput):
    """One or more located problems in user files."""

    problems: list[Problem] = field(default_factory=list)

    def __post_init__(self) -> None:
        BadInput.__init__(self, self.render())

    def render(self) -> str:  # type: ignore[override]
        n = len(self.problems)
        lines = [f"{n} problem{'s' if n != 1 else ''} found:"] if n > 1 else []
        lines += [p.render() for p in self.problems]
        return "\n".join(lines)


class NotATeam(BadInput):
    def __init__(self, start: str):
        super().__init__(
            f"{start} is not inside a cowork team (no cowork.toml found in it or any parent)",
            hint="run `cowork init` in your git repository first",
        )
