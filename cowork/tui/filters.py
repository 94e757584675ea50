"""Filter expressions typed into mission control's filter inputs: `role:dev state:running login` (all must match).

`key:value` terms match a field by prefix (`state:wait` finds waiting-approval); other words match anywhere.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Filter:
    terms: dict[str, str] = field(default_factory=dict)
    words: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str, keys: tuple[str, ...]) -> "Filter":
        """Split `text` into `key:value` terms (only for `keys`) and free words, case-insensitively."""
        terms: dict[str, str] = {}
        words: list[str] = []
        for token in text.lower().split():
            key, sep, value = token.partition(":")
            if sep and key in keys and value:
                terms[key] = value
            else:
                words.append(token)
        return cls(terms, tuple(words))

    def __bool__(self) -> bool:
        return bool(self.terms or self.words)

    def matches(self, fields: dict[str, str | None]) -> bool:
        for key, value in self.terms.items():
            if not str(fields.get(key) or "").lower().startswith(value):
                return False
        if self.words:
            hay = " ".join(str(v) for v in fields.values() if v).lower()
            return all(w in hay for w in self.words)
        return True


LANE_KEYS = ("task", "lane", "role", "state", "kind")
EVENT_KEYS = ("task", "lane", "role", "kind", "actor")


def lane_fields(row) -> dict[str, str | None]:
    return {"task": row.task, "lane": row.lane, "role": row.role, "state": row.state, "kind": row.kind,
            "goal": row.goal, "step": row.step}


def event_fields(ev: dict) -> dict[str, str | None]:
    return {"task": ev.get("task_id"), "lane": ev.get("lane_id"), "role": ev.get("role"), "kind": ev.get("kind"),
            "actor": ev.get("actor"), "summary": ev.get("summary")}
