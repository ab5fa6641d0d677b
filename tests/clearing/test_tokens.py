"""The prompt-token estimate errs high: against real tokenizer counts, and for every part."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clearing.tokens import (
    IMAGE_HIGH,
    IMAGE_LOW,
    MESSAGE_OVERHEAD,
    REPLY_PRIMING,
    estimate_input_tokens,
    output_token_cap,
    text_tokens,
)

# Each text with the larger of its cl100k_base and o200k_base token counts, as counted by the
# tiktoken-compatible `bpe-openai` tokenizers when this table was made.
SAMPLES: dict[str, tuple[str, int]] = {
    "english": (
        "The quick brown fox jumps over the lazy dog. Markets clear when the cheapest offer that"
        " meets every constraint wins; ties go to the earlier offer, and the winner is paid for"
        " the tokens actually used.",
        40,
    ),
    "python": (
        'def clear(index, live, req, *, depth=5):\n    """Rank the offers."""\n'
        "    for offer in index.offers(req.model):\n        if offer.input_price > 1_000:\n"
        "            continue\n        yield offer.ref, offer.seq\n",
        51,
    ),
    "json": (
        '{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "temperature":'
        ' 0.7, "max_tokens": 256, "auction": {"max_cost_usd": "0.002", "region": "eu"}}',
        61,
    ),
    "ids": (
        "req_8f14e45fceea167a5a36dedd4bea2543 550e8400-e29b-41d4-a716-446655440000"
        " 0x7fffa3c2d9e8 sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        99,
    ),
    "numbers": (
        "1, 22, 333, 4444, 55555, 3.14159, 2.71828, -0.5, 1e-9, 1000000, 2026-11-28T17:02:13Z",
        58,
    ),
    "letters": ("a b c d e f g h i j k l m n o p q r s t u v w x y z A B C D E F", 32),
    "chinese": (
        "人工智能是计算机科学的一个分支，它企图了解智能的实质，"
        "并生产出一种新的能以人类智能相似的方式做出反应的智能机器。",
        61,
    ),
    "japanese": (
        "日本語の文章をトークン化するとどうなるでしょうか。ひらがなとカタカナと漢字が混ざっています。",
        46,
    ),
    "russian": (
        "Искусственный интеллект — это область информатики,"
        " которая занимается созданием умных машин.",
        38,
    ),
    "greek": (
        "Η τεχνητή νοημοσύνη είναι ένας κλάδος της πληροφορικής που ασχολείται με έξυπνες μηχανές.",
        79,
    ),
    "german": (
        "Künstliche Intelligenz ist ein Teilgebiet der Informatik, das sich mit der"
        " Automatisierung intelligenten Verhaltens befasst.",
        33,
    ),
    "indented": (
        "class A:\n    def f(self):\n        if x:\n            return [\n                1,\n"
        "                2,\n            ]\n\n\n\n        return None\n",
        30,
    ),
    "markdown": (
        "## Results\n\n| model | price |\n| --- | --- |\n| gpt-4o | $2.50 |\n\n"
        "- **bold** and _italic_ and `code`\n> quote\n",
        40,
    ),
    "emoji": ("Great job! 🎉🚀 Let's ship it 👍 ✅", 17),
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_text_estimate_is_at_least_the_real_count(name: str) -> None:
    text, true_count = SAMPLES[name]
    estimate = text_tokens(text)
    assert estimate >= true_count
    assert estimate <= 3 * true_count  # high, but not absurdly so


@given(st.text(max_size=300))
def test_text_estimate_bounds(text: str) -> None:
    estimate = text_tokens(text)
    size = len(text.encode("utf-8", "surrogatepass"))
    assert size <= 4 * estimate  # so a byte-level BPE count is never above 4 × the estimate
    assert estimate <= 2 * size + 1


def test_empty_text_is_free() -> None:
    assert text_tokens("") == 0


# OpenAI's cookbook example ("How to count tokens with tiktoken"): 129 prompt tokens for GPT-4.
COOKBOOK = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate"
        " jargon into plain English.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "New synergies will help drive top-line growth.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on opportunities"
        " for increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client"
        " deliverable.",
    },
]


def test_messages_are_at_least_the_cookbook_count() -> None:
    assert estimate_input_tokens({"messages": COOKBOOK}) >= 129


def test_message_framing() -> None:
    assert estimate_input_tokens({}) == REPLY_PRIMING
    one = estimate_input_tokens({"messages": [{"role": "user", "content": ""}]})
    assert one == REPLY_PRIMING + MESSAGE_OVERHEAD + text_tokens("user")
    named = estimate_input_tokens({"messages": [{"role": "user", "content": "", "name": "bob"}]})
    assert named == one + 1 + text_tokens("bob")
    weird = estimate_input_tokens({"messages": ["not a message"], "tools": "nope"})
    assert weird == REPLY_PRIMING + MESSAGE_OVERHEAD + text_tokens("not a message")


def user(content: object) -> dict[str, object]:
    return {"messages": [{"role": "user", "content": content}]}


def test_content_parts() -> None:
    plain = estimate_input_tokens(user("hello there"))
    parts = estimate_input_tokens(user([{"type": "text", "text": "hello there"}]))
    assert parts == plain
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 10_000}}
    low = {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}}
    bare = {"type": "image_url", "image_url": "https://x/y.png"}
    base = estimate_input_tokens(user([]))
    assert estimate_input_tokens(user([image])) == base + IMAGE_HIGH  # not the data URL's size
    assert estimate_input_tokens(user([low])) == base + IMAGE_LOW
    assert estimate_input_tokens(user([bare, low])) == base + IMAGE_HIGH + IMAGE_LOW
    assert IMAGE_HIGH >= 85 + 170 * 8  # 2048 x 768 under OpenAI's rule
    audio = {"type": "input_audio", "input_audio": {"data": "QUJD" * 100, "format": "wav"}}
    assert estimate_input_tokens(user([audio])) > base + 100  # unknown parts count as JSON
    odd = estimate_input_tokens(user([{"type": "text", "text": 5}, "raw"]))
    assert odd > base


def test_tool_calls_and_results_are_counted() -> None:
    call = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    }
    result = {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 21}'}
    bare = estimate_input_tokens({"messages": [{"role": "assistant", "content": None}]})
    with_call = estimate_input_tokens({"messages": [call]})
    assert with_call >= bare + text_tokens("get_weather") + text_tokens('{"city": "Paris"}')
    both = estimate_input_tokens({"messages": [call, result]})
    assert both >= with_call + MESSAGE_OVERHEAD + text_tokens('{"temp_c": 21}')


PARAMETERS = {
    "type": "object",
    "properties": {
        "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["location"],
}
FUNCTION = {
    "name": "get_current_weather",
    "description": "Get the current weather in a given location",
    "parameters": PARAMETERS,
}
TOOL = {"type": "function", "function": FUNCTION}


def test_tools_and_schemas_are_counted() -> None:
    # The compact JSON of TOOL is 76 tokens in o200k (74 in cl100k); providers render it shorter.
    assert estimate_input_tokens({"tools": [TOOL]}) - REPLY_PRIMING >= 76
    assert estimate_input_tokens({"tools": [TOOL, TOOL]}) > estimate_input_tokens({"tools": [TOOL]})
    assert estimate_input_tokens({"functions": [FUNCTION]}) > 76
    assert estimate_input_tokens({"tools": []}) == REPLY_PRIMING
    choice = {"type": "function", "function": {"name": "get_current_weather"}}
    assert estimate_input_tokens({"tool_choice": choice}) > REPLY_PRIMING
    assert estimate_input_tokens({"tool_choice": "auto"}) == REPLY_PRIMING
    schema = {"name": "weather", "schema": PARAMETERS}
    structured = {"type": "json_schema", "json_schema": schema}
    counted = estimate_input_tokens({"response_format": structured}) - REPLY_PRIMING
    assert counted >= text_tokens(json.dumps(schema, separators=(",", ":")))
    assert estimate_input_tokens({"response_format": {"type": "json_object"}}) == REPLY_PRIMING


def test_output_token_cap() -> None:
    assert output_token_cap({}) is None
    assert output_token_cap({"max_tokens": 100}) == 100
    assert output_token_cap({"max_completion_tokens": 50, "max_tokens": 100}) == 50
    assert output_token_cap({"max_tokens": 0}) == 0
    for bad in (-1, 1.5, True, "10"):
        with pytest.raises(ValueError):
            output_token_cap({"max_tokens": bad})
