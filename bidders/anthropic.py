"""Anthropic Messages: the adapter, and OpenAI chat requests translated to `/v1/messages`.

Answers are read in `bidders.anthropic_answer`, and event streams in `bidders.anthropic_stream`.

JSON mode has no switch of its own in this API, so it becomes one more tool, `json_answer`, whose
input schema is the requested one (Anthropic's documented way to get JSON out). The model is made
to call it, or some tool when the client has tools too, and its input comes back as the message
content; a client tool with that same name would be taken for it.

Request fields with no counterpart in this API (seed, penalties, logprobs, logit_bias) are left
out; temperature is capped at 1, the top of Anthropic's range.
"""

from __future__ import annotations

from bidders import wirejson
from bidders.anthropic_answer import API, JSON_TOOL, read_answer
from bidders.anthropic_stream import AnthropicStream
from bidders.chat import ChatRequest, JsonSchemaFormat, NamedToolChoice
from bidders.completion import ChatResult, Stamp
from bidders.conversation import (
    JSON,
    AssistantMessage,
    DeveloperMessage,
    ImageUrl,
    Message,
    SystemMessage,
    ToolCall,
    UserMessage,
    text_of,
)
from bidders.errors import ProviderError, UpstreamRejected
from bidders.protocol import (
    DEFAULT_MAX_TOKENS,
    HttpCall,
    HttpReply,
    Upstream,
    add_turn,
    error_message,
    is_success,
    provider_error,
    retry_after_ms,
    user_parts,
)

VERSION = "2023-06-01"


class AnthropicAdapter:
    def build_request(self, req: ChatRequest, upstream: Upstream, *, stream: bool) -> HttpCall:
        if req.n is not None and req.n > 1:
            raise UpstreamRejected(f"{API} gives one choice per request; n > 1 is not possible")
        system, messages = _conversation(req.messages)
        cap = req.output_cap or upstream.max_output_tokens or DEFAULT_MAX_TOKENS
        body: JSON = {"model": upstream.upstream_model, "max_tokens": cap, "messages": messages}
        if system:
            body["system"] = "\n\n".join(system)
        tools = [
            _tool(tool.function.name, tool.function.description, tool.function.parameters)
            for tool in req.tools or []
        ]
        if req.needs_json_mode:
            tools.append(_json_tool(req))
        if tools:
            body["tools"] = tools
            if (choice := _tool_choice(req)) is not None:
                body["tool_choice"] = choice
        if req.temperature is not None:
            body["temperature"] = min(req.temperature, 1.0)  # Anthropic's range is 0..1
        if req.top_p is not None:
            body["top_p"] = req.top_p
        if req.stop_sequences:
            body["stop_sequences"] = req.stop_sequences
        if req.user:
            body["metadata"] = {"user_id": req.user}
        if stream:
            body["stream"] = True
        headers = {"content-type": "application/json", "anthropic-version": VERSION}
        if upstream.api_key:
            headers["x-api-key"] = upstream.api_key
        url = f"{upstream.base_url.rstrip('/')}/v1/messages"
        return HttpCall("POST", url, headers, wirejson.dumps(body))

    def parse_response(self, reply: HttpReply, *, upstream: Upstream, stamp: Stamp) -> ChatResult:
        if not is_success(reply.status):
            raise self.parse_error(reply, upstream=upstream)
        return read_answer(reply.body, stamp)

    def stream_decoder(self, *, stamp: Stamp, include_usage: bool) -> AnthropicStream:
        return AnthropicStream(stamp, include_usage=include_usage)

    def parse_error(self, reply: HttpReply, *, upstream: Upstream) -> ProviderError:
        message = error_message(reply.body, upstream.api_key)
        return provider_error(API, reply.status, message, retry_after_ms=retry_after_ms(reply))


def _conversation(messages: list[Message]) -> tuple[list[str], list[JSON]]:
    """System texts, and turns that alternate as Anthropic requires (same-role runs merged)."""
    system: list[str] = []
    turns: list[tuple[str, list[JSON]]] = []
    for message in messages:
        if isinstance(message, SystemMessage | DeveloperMessage):
            if text := text_of(message.content):
                system.append(text)
            continue
        if isinstance(message, UserMessage):
            role, blocks = "user", user_parts(message, _text, _image)
        elif isinstance(message, AssistantMessage):
            role, blocks = "assistant", _assistant_blocks(message)
        else:
            result = {"tool_use_id": message.tool_call_id, "content": text_of(message.content)}
            role, blocks = "user", [{"type": "tool_result", **result}]
        add_turn(turns, role, blocks)
    return system, [{"role": role, "content": blocks} for role, blocks in turns]


def _assistant_blocks(message: AssistantMessage) -> list[JSON]:
    return _text(text_of(message.content)) + [_tool_use(call) for call in message.tool_calls or []]


def _text(text: str) -> list[JSON]:
    return [{"type": "text", "text": text}] if text else []  # Anthropic refuses empty text blocks


def _image(image: ImageUrl) -> JSON:
    inline = image.inline()
    if inline:
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": inline[0], "data": inline[1]},
        }
    if image.url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": image.url}}
    raise UpstreamRejected(f"{API} takes images as base64 data: URLs or http(s) URLs")


def _tool_use(call: ToolCall) -> JSON:
    arguments = call.parsed_arguments()
    if arguments is None:
        raise UpstreamRejected(f"{API} needs tool call {call.id!r} arguments as a JSON object")
    return {"type": "tool_use", "id": call.id, "name": call.function.name, "input": arguments}


def _tool(name: str, description: str | None, schema: JSON | None) -> JSON:
    tool: JSON = {"name": name}
    if description:
        tool["description"] = description
    tool["input_schema"] = schema or {"type": "object", "properties": {}}
    return tool


def _json_tool(req: ChatRequest) -> JSON:
    spec = req.response_format
    schema: JSON = {"type": "object"}
    if isinstance(spec, JsonSchemaFormat) and spec.json_schema.schema_:
        schema = spec.json_schema.schema_
    return _tool(JSON_TOOL, "Give the answer as this tool's input.", schema)


def _tool_choice(req: ChatRequest) -> JSON | None:
    """Anthropic's tool_choice. In JSON mode the JSON answer is forced, unless the client's own
    tools may be called, in which case the model must call one tool or the other."""
    picked = req.tool_choice
    choice: JSON
    if req.needs_json_mode and (not req.tools or picked == "none"):
        choice = {"type": "tool", "name": JSON_TOOL}
    elif req.needs_json_mode and picked in (None, "auto"):
        choice = {"type": "any"}
    elif isinstance(picked, NamedToolChoice):
        choice = {"type": "tool", "name": picked.function.name}
    elif picked == "none":
        return {"type": "none"}
    elif picked is None and req.parallel_tool_calls is not False:
        return None
    else:
        choice = {"type": "any" if picked == "required" else "auto"}
    if req.parallel_tool_calls is False:
        choice["disable_parallel_tool_use"] = True
    return choice
