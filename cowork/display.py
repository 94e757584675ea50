"""Text an agent wrote, made safe to show a person in a terminal (the CLI and mission control)."""
from __future__ import annotations

import re
from typing import Any

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # all but newline and tab


def printable(text: Any) -> str:
    """`text` with control characters (escape sequences, carriage returns) shown as `\\xNN`, so that nothing an agent
    wrote can move the cursor or erase what a human is about to approve."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def printable_obj(obj: Any) -> Any:
    """`printable` applied to every string inside a JSON-like structure (keys too)."""
    if isinstance(obj, str):
        return printable(obj)
    if isinstance(obj, dict):
        return {printable_obj(k): printable_obj(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [printable_obj(v) for v in obj]
    return obj
