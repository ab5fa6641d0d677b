"""Simulated replies: deterministic per model and prompt, schema sampling, and the token limit."""

from __future__ import annotations

from dataclasses import replace

import httpx

from bidders.simulated.behaviour import SimConfig
from bidders.simulated.generation import Transcript, generate, sample_schema
from bidders.simulated.server import SimulatedProvider
from tests.bidders.simulated_kit import PROMPT, openai_chat


async def test_replies_are_deterministic_and_seeded_by_model_and_prompt(
    sim_client: httpx.AsyncClient,
) -> None:
    texts = []
    for model in ("gpt-4o", "gpt-4o", "gpt-4o-mini"):
        async with SimulatedProvider("openai", SimConfig(reply_tokens=20)) as provider:
            resp = await openai_chat(sim_client, provider, model=model)
        texts.append(resp.json()["choices"][0]["message"]["content"])
    assert texts[0] == texts[1]
    assert texts[0].startswith(PROMPT + " ") and len(texts[0].split()) == 20
    assert texts[2].startswith(PROMPT + " ") and texts[2] != texts[0]


def test_schema_sampling_covers_common_keywords() -> None:
    schema = {
        "type": "object",
        "properties": {
            "n": {"type": ["integer", "null"]},
            "flag": {"type": "BOOLEAN"},
            "pick": {"anyOf": [{"type": "number"}, {"type": "string"}]},
            "fixed": {"const": "x"},
            "nested": {"properties": {"inner": {"type": "string"}}},
            "nothing": {"type": "null"},
        },
    }
    assert sample_schema(schema, "words") == {
        "n": 1,
        "flag": True,
        "pick": 1.5,
        "fixed": "x",
        "nested": {"inner": "words"},
        "nothing": None,
    }


def test_generate_never_exceeds_the_request_limit() -> None:
    transcript = Transcript()
    transcript.add("user", ["hello"])
    prompt = transcript.prompt("m")
    for limit in (0, 1, 7, 48, 500):
        reply = generate(replace(prompt, max_tokens=limit), 48)
        assert reply.usage.completion_tokens == len(reply.pieces) == min(limit, 48)
        assert reply.finish == ("length" if limit < 48 else "stop")
