"""Skip the openai SDK's request transform for chat calls, where it provably returns the request unchanged.

litellm sends OpenAI-compatible calls through the openai SDK, whose `chat.completions.create` first passes the
whole request through `async_maybe_transform`: a walk over every message and tool, once for each member of each
union type, that renames aliased keys and formats dates or files. The chat parameter types have no aliases or
formats, so for a request of plain JSON values the walk only drops unset parameters, yet it costs about 0.25 ms a
message on the event loop (measured: 29 ms of a 100-step lane's call, against 5 ms without it; see
`bench/bench_long_lane.py`). Every lane pays it on the one loop they share.

`install()` replaces the SDK's transform for chat requests only, and only after checking, in the SDK that is
installed, that no type reachable from the chat parameters carries transform metadata. A request holding anything
but plain JSON values still goes through the SDK's own transform.
"""
from __future__ import annotations

import typing
from typing import Any

_original: Any = None
_MAX_DEPTH = 64
_PLAIN = (str, int, float, bool, type(None))


def _metadata_reachable(tp: Any, seen: set[int] | None = None) -> list[str]:
    """Where transform metadata (`PropertyInfo`: an alias, a format, a discriminator) is reachable from `tp`."""
    from openai._utils._transform import PropertyInfo
    from typing_extensions import get_args, get_origin, get_type_hints, is_typeddict

    seen = set() if seen is None else seen
    if id(tp) in seen:
        return []
    seen.add(id(tp))
    found: list[str] = []
    if get_origin(tp) is typing.Annotated:
        base, *meta = get_args(tp)
        found += [f"{getattr(base, '__name__', base)}: {m!r}" for m in meta if isinstance(m, PropertyInfo)]
        return found + _metadata_reachable(base, seen)
    if is_typeddict(tp):
        for hint in get_type_hints(tp, include_extras=True).values():
            found += _metadata_reachable(hint, seen)
        return found
    for arg in get_args(tp):
        found += _metadata_reachable(arg, seen)
    return found


def _plain(value: Any, depth: int = 0) -> bool:
    """JSON as `json.loads` would build it: dicts with str keys, lists, str, numbers, bools, None."""
    if isinstance(value, _PLAIN):
        return True
    if depth >= _MAX_DEPTH:
        return False
    if type(value) is dict:
        return all(type(k) is str and _plain(v, depth + 1) for k, v in value.items())
    if type(value) is list:
        return all(_plain(v, depth + 1) for v in value)
    return False


def install() -> bool:
    """Use the fast path for chat requests from now on in this process. Returns whether it is in use.

    Declines (and leaves the SDK alone) when the SDK's layout is not the one checked here or when any chat
    parameter type carries transform metadata.
    """
    global _original
    if _original is not None:
        return True
    try:
        import openai.resources.chat.completions.completions as chat
        from openai._utils import is_given
        from openai.types.chat import completion_create_params as params
    except ImportError:
        return False
    original = getattr(chat, "async_maybe_transform", None)
    types = tuple(getattr(params, name, None) for name in ("CompletionCreateParamsNonStreaming",
                                                            "CompletionCreateParamsStreaming"))
    if original is None or None in types or any(_metadata_reachable(t) for t in types):
        return False

    async def chat_transform(data: Any, expected_type: Any) -> Any:
        if expected_type in types and type(data) is dict:
            out = {}
            for key, value in data.items():
                if not is_given(value):
                    continue  # unset parameters: what the SDK's transform drops
                if not _plain(value):
                    return await original(data, expected_type)
                out[key] = value
            return out
        return await original(data, expected_type)

    chat.async_maybe_transform = chat_transform
    _original = original
    return True


def uninstall() -> None:
    """Put the SDK's own transform back (benchmarks compare the two)."""
    global _original
    if _original is not None:
        import openai.resources.chat.completions.completions as chat

        chat.async_maybe_transform = _original
        _original = None
