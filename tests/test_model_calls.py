"""How cowork calls its models on the loop lanes share: requests leave in turn, replies are awaited together, and the
client spends no time on work that changes nothing (the SDK's request walk, price searches for unpriced models)."""
from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from cowork.engines import models
from cowork.engines.models import ModelChoice, send_turn
from tests.support.scripted_server import delay, text


@pytest.fixture(autouse=True)
def _forget_models():
    """`send_turn` remembers models that never announce their requests; each test starts from nothing."""
    models._no_send_hook.clear()
    yield
    models._no_send_hook.clear()


def _history(lane: int) -> list[dict]:
    """A long conversation, so that preparing each request takes milliseconds (as it does late in a lane)."""
    msgs = [{"role": "system", "content": f"You are dev. burst lane {lane:02d}."}]
    for i in range(150):
        msgs += [{"role": "user", "content": f"step {i}: read the next file and say what it holds"},
                 {"role": "assistant", "content": f"file {i} holds a list of {i} numbers"}]
    return msgs + [{"role": "user", "content": "go on"}]


def test_a_burst_of_calls_sends_each_request_when_it_is_ready(server):
    """Lanes asking at once: the first request reaches the server while the others are still being prepared,
    not after all of them (litellm yields mid-preparation, so an unqueued burst builds every request first)."""
    lm = models.litellm()  # first: cowork's import keeps litellm offline
    from litellm.integrations.custom_logger import CustomLogger

    n = 8
    for i in range(n):
        server.script(f"burst lane {i:02d}", [delay(0.3, text("ok"))])
    choice = ModelChoice(model="openai/scripted", api_base=server.url, api_key="k", timeout_s=30)
    prepared: list[float] = []

    class Prepared(CustomLogger):  # litellm's own hook: called as each request is about to go out
        def log_pre_api_call(self, model, messages, kwargs):
            prepared.append(time.perf_counter())

    seen = Prepared()
    lm.input_callback.append(seen)

    async def burst() -> list[models.Completion]:
        await models.complete(choice, [{"role": "user", "content": "warm"}])  # client set-up is not the point
        prepared.clear()
        server.reset()
        return await asyncio.gather(*(models.complete(choice, _history(i)) for i in range(n)))

    try:
        server.script("warm", [text("ok")])
        replies = asyncio.run(burst())
    finally:
        lm.input_callback.remove(seen)
    assert [r.message["content"] for r in replies] == ["ok"] * n
    first = min(r.at for r in server.requests)
    ready_before_first = sum(1 for t in prepared if t < first)
    assert len(prepared) == n
    assert ready_before_first <= n // 2, f"{ready_before_first} of {n} requests were built before the first left"


def test_queued_calls_still_wait_for_their_replies_together(server):
    """The queue covers preparing a request, never waiting for its reply: 4 calls of 0.6 s take 0.6 s, not 2.4."""
    for i in range(4):
        server.script(f"together {i}", [delay(0.6, text(f"reply {i}"))])
    choice = ModelChoice(model="openai/scripted", api_base=server.url, api_key="k", timeout_s=30)

    async def together() -> tuple[float, list[models.Completion]]:
        await models.complete(choice, [{"role": "user", "content": "together 0"}])  # warm the client
        t0 = time.perf_counter()
        replies = await asyncio.gather(*(models.complete(choice, [{"role": "user", "content": f"together {i}"}])
                                         for i in range(4)))
        return time.perf_counter() - t0, replies

    took, replies = asyncio.run(together())
    assert [r.message["content"] for r in replies] == [f"reply {i}" for i in range(4)]
    assert took < 1.2, f"4 parallel calls took {took:.2f}s"
    assert "openai/scripted" not in models._no_send_hook  # litellm announced each request


def test_a_model_that_never_announces_its_request_hands_the_turn_on_and_is_not_queued_again():
    """A provider path without litellm's pre-call hook holds the next lane back at most SEND_HOLD_MAX_S, once."""

    async def scenario() -> tuple[float, object]:
        loop = asyncio.get_running_loop()
        waited: list[float] = []

        async def second() -> None:
            t0 = loop.time()
            async with send_turn("silent/model"):
                waited.append(loop.time() - t0)

        async with send_turn("silent/model") as sending:
            assert sending is not None
            other = asyncio.create_task(second())
            await asyncio.sleep(0.3)  # the "call": never calls `sending`
        await other
        async with send_turn("silent/model") as again:
            return waited[0], again

    waited, again = asyncio.run(scenario())
    assert waited < models.SEND_HOLD_MAX_S + 0.1
    assert again is None  # remembered: this model's calls are no longer queued


def test_a_failed_call_proves_nothing_about_the_hook():
    async def scenario() -> object:
        with pytest.raises(RuntimeError):
            async with send_turn("flaky/model"):
                raise RuntimeError("connection refused")
        async with send_turn("flaky/model") as sending:
            return sending

    assert asyncio.run(scenario()) is not None


# ---------------------------------------------------------------- the openai SDK's request transform


def _chat_body() -> dict:
    """A request as the SDK's `AsyncCompletions.create` hands it to its transform: a lane's messages and tools,
    and unset parameters."""
    from openai import NOT_GIVEN, omit

    from cowork.tools.specs import spec

    messages = [{"role": "system", "content": "You are dev."},
                {"role": "user", "content": [{"type": "text", "text": "read a.py"}]},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "read_file", "arguments": '{"path": "a.py"}'}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "x = 1\n"}]
    return {"messages": messages, "model": "gpt-x", "tools": [spec("read_file"), spec("finish")],
            "tool_choice": "auto", "temperature": 0.2, "max_tokens": 100, "audio": NOT_GIVEN, "seed": omit,
            "response_format": {"type": "json_object"}, "metadata": {"lane": "l1"}}


def test_the_fast_path_returns_what_the_sdk_transform_returns():
    import openai.resources.chat.completions.completions as chat
    from openai.types.chat.completion_create_params import CompletionCreateParamsNonStreaming as Params

    from cowork.engines import openai_fastpath

    models.litellm()  # cowork's loader installs it
    assert openai_fastpath._original is not None
    body = _chat_body()
    fast = asyncio.run(chat.async_maybe_transform(body, Params))
    sdk = asyncio.run(openai_fastpath._original(_chat_body(), Params))
    assert fast == sdk
    assert "audio" not in fast and "seed" not in fast  # unset parameters are dropped, as the SDK drops them


def test_the_fast_path_leaves_anything_but_plain_json_to_the_sdk():
    import openai.resources.chat.completions.completions as chat
    from openai.types.chat.completion_create_params import CompletionCreateParamsNonStreaming as Params

    from cowork.engines import openai_fastpath

    models.litellm()
    body = _chat_body()
    body["messages"] = tuple(body["messages"])  # an iterable the SDK turns into a list
    out = asyncio.run(chat.async_maybe_transform(body, Params))
    assert isinstance(out["messages"], list)
    assert out == asyncio.run(openai_fastpath._original(_chat_body(), Params))


def test_transform_metadata_anywhere_in_the_types_is_found():
    """The check `install` makes before trusting the fast path: an aliased or formatted field at any depth."""
    from openai._utils._transform import PropertyInfo
    from openai.types.chat.completion_create_params import CompletionCreateParamsNonStreaming
    from typing_extensions import Annotated, Required, TypedDict

    from cowork.engines.openai_fastpath import _metadata_reachable

    when = TypedDict("When", {"at": Annotated[str, PropertyInfo(format="iso8601")]}, total=False)
    outer = TypedDict("Outer", {"items": Required[list[when | str]]}, total=False)  # evaluated now, not as text

    assert _metadata_reachable(outer)
    assert _metadata_reachable(CompletionCreateParamsNonStreaming) == []


def test_an_unpriced_model_is_priced_from_the_team_and_litellm_stops_searching_for_it(server):
    """litellm has no price for a self-hosted model and searches its table on every reply; after the first reply
    cowork gives it a price of 0 there, and keeps pricing the model from `[prices]` itself."""
    from cowork.config import PriceSettings, TeamSettings

    model = "openai/unpriced-in-litellm"
    server.script("price me", [text("first"), text("second")])
    settings = TeamSettings(prices={model: PriceSettings(input_per_mtok=1_000_000.0, output_per_mtok=0.0)})
    choice = ModelChoice(model=model, api_base=server.url, api_key="k", timeout_s=30)
    lm = models.litellm()
    with pytest.raises(Exception):
        lm.get_model_info(model)

    async def calls() -> tuple[models.Completion, Any]:
        first = await models.complete(choice, [{"role": "user", "content": "price me"}], settings=settings)
        raw = await lm.acompletion(model=model, api_base=server.url, api_key="k", num_retries=0,
                                   messages=[{"role": "user", "content": "price me"}])
        return first, raw

    first, raw = asyncio.run(calls())
    assert first.tokens_in > 0 and first.usd == pytest.approx(first.tokens_in * 1.0)  # $1 a token, from [prices]
    assert lm.get_model_info(model)["input_cost_per_token"] == 0.0
    assert raw._hidden_params["response_cost"] == 0.0  # found at once, not None after a full search
    later = asyncio.run(models.complete(choice, [{"role": "user", "content": "price me"}], settings=settings))
    assert later.usd == pytest.approx(later.tokens_in * 1.0)


def test_a_model_litellm_prices_is_never_given_a_zero_price():
    lm = models.litellm()
    before = lm.get_model_info("gpt-4o-mini")["input_cost_per_token"]
    models._price_at_zero("gpt-4o-mini")
    assert before > 0 and lm.get_model_info("gpt-4o-mini")["input_cost_per_token"] == before


def test_the_teams_price_wins_over_litellms_everywhere_a_reply_is_priced(server):
    """`[prices]` in cowork.toml is the team's word (a negotiated rate, a table litellm has wrong): lane replies,
    cheap steps and the budget's own pricing all use it, for a model litellm prices too."""
    from cowork.config import PriceSettings, TeamSettings
    from cowork.team import budgets

    model = "openai/gpt-4o-mini"
    server.script("negotiated", [text("lane reply"), text("cheap reply"), text("litellm alone")])
    settings = TeamSettings(prices={"gpt-4o-mini": PriceSettings(input_per_mtok=1_000_000.0, output_per_mtok=0.0)})
    choice = ModelChoice(model=model, api_base=server.url, api_key="k", timeout_s=30)
    messages = [{"role": "user", "content": "negotiated"}]
    lane = asyncio.run(models.complete(choice, messages, settings=settings))
    cheap = models.complete_text(choice, messages, settings=settings)
    plain = models.complete_text(choice, messages)
    assert lane.tokens_in > 0 and lane.usd == pytest.approx(lane.tokens_in * 1.0)   # $1 a token, from [prices]
    assert cheap.usd == pytest.approx(cheap.tokens_in * 1.0)
    assert 0 < plain.usd < plain.tokens_in * 1e-3                                  # litellm's own price, no team
    assert budgets.price(settings, model, lane.tokens_in, lane.tokens_out) == pytest.approx(lane.usd)


FIRST_CALL_PROBE = """
import asyncio, gc, json
from cowork.engines import models
from tests.support.scripted_server import ScriptedServer, text
with ScriptedServer() as server:
    server.script("", [text("ok")])
    models.litellm()
    choice = models.ModelChoice(model="openai/scripted", api_base=server.url, api_key="k", timeout_s=30)
    asyncio.run(models.complete(choice, [{"role": "user", "content": "hi"}]))
    walked = len(gc.get_objects())  # what a full collection walks (frozen objects are not)
    asyncio.run(models.complete(choice, [{"role": "user", "content": "again"}]))
    print(json.dumps({"walked": walked, "frozen": gc.get_freeze_count()}))
"""


def test_what_the_first_model_call_imports_is_not_walked_by_every_full_collection():
    """litellm imports about 270 more modules on its first call (64,000 objects); left to the cyclic collector,
    each full collection in a runner walks them all again, pausing every lane (75-95 ms in a 16-lane fan-out).
    In a fresh process, after one reply, a full collection walks only what was built since."""
    import json
    import subprocess
    import sys

    from tests.conftest import ROOT

    proc = subprocess.run([sys.executable, "-c", FIRST_CALL_PROBE], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["walked"] < 5_000, seen  # 64,000 before
    assert seen["frozen"] > 400_000, seen  # the import's and the first call's objects
