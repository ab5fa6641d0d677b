"""The chat request model: what it accepts, what it derives, and how it explains a bad body."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bidders.chat import ChatRequest, explain
from bidders.conversation import ImageUrl, TextPart, ToolCall, text_of

HELLO = [{"role": "user", "content": "Say hello."}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        "strict": True,
    },
}
FULL = {
    "model": "gpt-4o",
    "messages": [
        {"role": "system", "content": "Be brief.", "name": "policy"},
        {"role": "developer", "content": [{"type": "text", "text": "No emoji."}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {
                    "type": "image_url",
                    "image_url": {"url": "https://x.test/a.png", "detail": "low"},
                },
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
            "refusal": None,
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18 C"},
    ],
    "tools": [WEATHER_TOOL],
    "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    "parallel_tool_calls": False,
    "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {}}},
    "max_tokens": 100,
    "max_completion_tokens": 50,
    "temperature": 1,
    "top_p": 0.5,
    "stop": "END",
    "n": 1,
    "seed": 3,
    "user": "u-1",
    "stream": True,
    "stream_options": {"include_usage": True},
    "presence_penalty": 0.1,
    "frequency_penalty": -0.1,
    "logprobs": True,
    "top_logprobs": 2,
    "logit_bias": {"50256": -100},
    "auction": {"max_cost_usd": "0.002", "features": ["vision"]},
    "metadata": {"run": "7"},
    "reasoning_effort": "low",
}


def test_a_full_request_round_trips_with_its_unknown_fields() -> None:
    req = ChatRequest.model_validate(FULL)
    dumped = req.model_dump(mode="json", by_alias=True, exclude_unset=True)
    assert dumped == {**FULL, "temperature": 1.0}
    assert req.model_extra == {"metadata": {"run": "7"}, "reasoning_effort": "low"}


def test_what_a_full_request_needs() -> None:
    req = ChatRequest.model_validate(FULL)
    assert (req.needs_tools, req.needs_vision, req.needs_json_mode) == (True, True, True)
    assert (req.wants_stream, req.include_usage) == (True, True)
    assert req.output_cap == 50
    assert req.stop_sequences == ["END"]
    assert req.features == frozenset({"tools", "vision", "json_mode", "streaming"})


def test_what_a_plain_request_needs() -> None:
    req = ChatRequest.model_validate({"model": "auto", "messages": HELLO})
    assert (req.needs_tools, req.needs_vision, req.needs_json_mode) == (False, False, False)
    assert (req.wants_stream, req.include_usage) == (False, False)
    assert req.output_cap is None
    assert req.stop_sequences == []
    assert req.features == frozenset()


@pytest.mark.parametrize(
    ("extra", "cap", "json_mode", "include_usage"),
    [
        ({"max_tokens": 7, "response_format": {"type": "text"}}, 7, False, False),
        ({"max_completion_tokens": 9, "response_format": {"type": "json_object"}}, 9, True, False),
        ({"stream": True}, None, False, False),
        ({"stream": True, "stream_options": {}}, None, False, False),
        ({"stream": False, "stream_options": {"include_usage": True}}, None, False, False),
        ({"stream": True, "stream_options": {"include_usage": True}}, None, False, True),
    ],
)
def test_derived_properties(
    extra: dict[str, object], cap: int | None, json_mode: bool, include_usage: bool
) -> None:
    req = ChatRequest.model_validate({"model": "m", "messages": HELLO, **extra})
    assert (req.output_cap, req.needs_json_mode, req.include_usage) == (
        cap,
        json_mode,
        include_usage,
    )


def test_images_only_count_in_user_parts() -> None:
    text_parts = [{"role": "user", "content": [{"type": "text", "text": "no image"}]}]
    req = ChatRequest.model_validate({"model": "m", "messages": HELLO + text_parts})
    assert not req.needs_vision
    assert ChatRequest.model_validate(
        {"model": "m", "messages": HELLO, "stop": ["a", "b"]}
    ).stop_sequences == ["a", "b"]


def test_text_of_joins_parts() -> None:
    parts = [TextPart(type="text", text="one"), TextPart(type="text", text="two")]
    assert text_of(parts) == "one\ntwo"
    assert text_of(None) == ""
    assert text_of("plain") == "plain"


@pytest.mark.parametrize(
    ("url", "inline"),
    [
        ("data:image/png;base64,iVBORw0KGgo=", ("image/png", "iVBORw0KGgo=")),
        ("data:image/svg+xml;base64,PHN2Zz4=", ("image/svg+xml", "PHN2Zz4=")),
        ("data:image/png,rawbytes", None),
        ("https://x.test/data:image/png;base64,AA", None),
    ],
)
def test_inline_images(url: str, inline: tuple[str, str] | None) -> None:
    assert ImageUrl(url=url).inline() == inline


@pytest.mark.parametrize(
    ("arguments", "parsed"),
    [('{"city":"Paris"}', {"city": "Paris"}), ("", {}), ("[1]", None), ("{oops", None)],
)
def test_tool_call_arguments(arguments: str, parsed: dict[str, object] | None) -> None:
    call = ToolCall.model_validate(
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": arguments}}
    )
    assert call.parsed_arguments() == parsed


def _explain(body: object) -> tuple[str, str]:
    with pytest.raises(ValidationError) as caught:
        ChatRequest.model_validate(body)
    return explain(caught.value)


@pytest.mark.parametrize(
    ("body", "message", "param"),
    [
        (
            {"model": "m", "messages": []},
            "messages: List should have at least 1 item after validation, not 0",
            "messages",
        ),
        (
            {"model": "m", "messages": [{"role": "bot", "content": "x"}]},
            "messages[0]: Input tag 'bot' found using 'role' does not match any of the expected "
            "tags: 'system', 'developer', 'user', 'assistant', 'tool'",
            "messages[0]",
        ),
        (
            {"model": "m", "messages": [{"role": "user", "content": [{"type": "text"}]}]},
            "messages[0].content[0].text: Field required (and 1 more problem)",
            "messages[0].content[0].text",
        ),
        (
            {
                "model": "m",
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": ""}}]}
                ],
            },
            "messages[0].content[0].image_url.url: String should have at least 1 character "
            "(and 1 more problem)",
            "messages[0].content[0].image_url.url",
        ),
        (
            {"model": "m", "messages": [{"role": "assistant"}]},
            "messages[0]: Value error, an assistant message needs content or tool_calls",
            "messages[0]",
        ),
        (
            {"model": "m", "messages": [{"role": "tool", "content": "18 C"}]},
            "messages[0].tool_call_id: Field required",
            "messages[0].tool_call_id",
        ),
        (
            {"model": "m", "messages": HELLO, "max_tokens": "100"},
            "max_tokens: Input should be a valid integer",
            "max_tokens",
        ),
        (
            {"model": "m", "messages": HELLO, "stream": 1},
            "stream: Input should be a valid boolean",
            "stream",
        ),
        (
            {"model": "m", "messages": HELLO, "temperature": 2.5},
            "temperature: Input should be less than or equal to 2",
            "temperature",
        ),
        (
            {"model": "m", "messages": HELLO, "response_format": {"type": "json_schema"}},
            "response_format.json_schema: Field required",
            "response_format.json_schema",
        ),
        (
            {"model": "m", "messages": HELLO, "tool_choice": "sometimes"},
            "tool_choice: Input should be 'none', 'auto' or 'required' (and 1 more problem)",
            "tool_choice",
        ),
        (
            {"messages": HELLO, "model": "", "n": 0},
            "model: String should have at least 1 character (and 1 more problem)",
            "model",
        ),
        ([], "body: Input should be a valid dictionary or instance of ChatRequest", ""),
    ],
)
def test_bad_bodies_are_explained(body: object, message: str, param: str) -> None:
    assert _explain(body) == (message, param)


def test_several_problems_are_counted() -> None:
    message, param = _explain({"model": 1, "messages": 2, "n": 0})
    assert (message, param) == (
        "model: Input should be a valid string (and 2 more problems)",
        "model",
    )
