"""Gemini generateContent: the adapter, and OpenAI chat requests to `/v1beta/models/{model}`.

Answers are read in `bidders.gemini_answer`, and event streams in `bidders.gemini_stream`.

Tool and answer schemas go as `parametersJsonSchema` and `responseJsonSchema`, which take JSON
Schema as OpenAI clients write it (the older `parameters` and `responseSchema` take an OpenAPI
subset only).

Request fields with no counterpart in this API (user, logprobs, logit_bias, parallel_tool_calls)
are left out.
"""

from __future__ import annotations

from bidders import wirejson
from bidders.chat import ChatRequest, FunctionDef, JsonSchemaFormat, NamedToolChoice
from bidders.completion import ChatResult, Stamp
from bidders.conversation import (
    JSON,
    AssistantMessage,
    DeveloperMessage,
    ImageUrl,
    Message,
    SystemMessage,
    ToolCall,
    ToolMessage,
    UserMessage,
    text_of,
)
from bidders.errors import ProviderError, UpstreamRejected
from bidders.gemini_answer import API, read_answer, retry_delay
from bidders.gemini_stream import GeminiStream
from bidders.protocol import (
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

_IMAGE_SUFFIXES = ("png", "jpeg", "jpg", "webp", "heic", "heif")


class GeminiAdapter:
    def build_request(self, req: ChatRequest, upstream: Upstream, *, stream: bool) -> HttpCall:
        system, contents = _contents(req.messages)
        body: JSON = {"contents": contents}
        if system:
            body["systemInstruction"] = {"parts": [{"text": text} for text in system]}
        if req.tools:
            body["tools"] = [
                {"functionDeclarations": [_declaration(t.function) for t in req.tools]}
            ]
            if req.tool_choice is not None:
                body["toolConfig"] = {"functionCallingConfig": _calling(req.tool_choice)}
        if config := _generation_config(req, upstream):
            body["generationConfig"] = config
        headers = {"content-type": "application/json"}
        if upstream.api_key:
            headers["x-goog-api-key"] = upstream.api_key
        model = upstream.upstream_model.removeprefix("models/")
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        url = f"{upstream.base_url.rstrip('/')}/v1beta/models/{model}:{method}"
        return HttpCall("POST", url, headers, wirejson.dumps(body))

    def parse_response(self, reply: HttpReply, *, upstream: Upstream, stamp: Stamp) -> ChatResult:
        if not is_success(reply.status):
            raise self.parse_error(reply, upstream=upstream)
        return read_answer(reply.body, stamp)

    def stream_decoder(self, *, stamp: Stamp, include_usage: bool) -> GeminiStream:
        return GeminiStream(stamp, include_usage=include_usage)

    def parse_error(self, reply: HttpReply, *, upstream: Upstream) -> ProviderError:
        message = error_message(reply.body, upstream.api_key)
        wait = retry_after_ms(reply)
        if wait is None:
            wait = retry_delay(reply.body)
        return provider_error(API, reply.status, message, retry_after_ms=wait)


def _contents(messages: list[Message]) -> tuple[list[str], list[JSON]]:
    """System texts, and contents with same-role runs merged (parallel calls' answers share one)."""
    system: list[str] = []
    turns: list[tuple[str, list[JSON]]] = []
    names: dict[str, str] = {}  # tool call id: function name, which a functionResponse must give
    for message in messages:
        if isinstance(message, SystemMessage | DeveloperMessage):
            if text := text_of(message.content):
                system.append(text)
            continue
        if isinstance(message, UserMessage):
            role, parts = "user", user_parts(message, _text, _image)
        elif isinstance(message, AssistantMessage):
            names.update({call.id: call.function.name for call in message.tool_calls or []})
            role, parts = "model", _model_parts(message)
        else:
            role, parts = "user", [_function_response(message, names)]
        add_turn(turns, role, parts)
    return system, [{"role": role, "parts": parts} for role, parts in turns]


def _model_parts(message: AssistantMessage) -> list[JSON]:
    return _text(text_of(message.content)) + [_call(call) for call in message.tool_calls or []]


def _text(text: str) -> list[JSON]:
    return [{"text": text}] if text else []


def _image(image: ImageUrl) -> JSON:
    inline = image.inline()
    if inline:
        return {"inlineData": {"mimeType": inline[0], "data": inline[1]}}
    if not image.url.startswith(("https://", "http://")):
        raise UpstreamRejected(f"{API} takes images as base64 data: URLs or http(s) URLs")
    suffix = image.url.split("?", 1)[0].rsplit(".", 1)[-1].lower()
    if suffix not in _IMAGE_SUFFIXES:
        return {"fileData": {"fileUri": image.url}}
    mime = "image/jpeg" if suffix == "jpg" else f"image/{suffix}"
    return {"fileData": {"mimeType": mime, "fileUri": image.url}}


def _call(call: ToolCall) -> JSON:
    arguments = call.parsed_arguments()
    if arguments is None:
        raise UpstreamRejected(f"{API} needs tool call {call.id!r} arguments as a JSON object")
    return {"functionCall": {"name": call.function.name, "args": arguments}}


def _function_response(message: ToolMessage, names: dict[str, str]) -> JSON:
    name = names.get(message.tool_call_id)
    if name is None:
        raise UpstreamRejected(
            f"tool message answers unknown tool_call_id {message.tool_call_id!r}"
        )
    response = {"name": name, "content": text_of(message.content)}
    return {"functionResponse": {"name": name, "response": response}}


def _declaration(function: FunctionDef) -> JSON:
    declaration: JSON = {"name": function.name}
    if function.description:
        declaration["description"] = function.description
    if function.parameters:
        declaration["parametersJsonSchema"] = function.parameters
    return declaration


def _calling(choice: str | NamedToolChoice) -> JSON:
    if isinstance(choice, NamedToolChoice):
        return {"mode": "ANY", "allowedFunctionNames": [choice.function.name]}
    return {"mode": {"auto": "AUTO", "none": "NONE", "required": "ANY"}[choice]}


def _generation_config(req: ChatRequest, upstream: Upstream) -> JSON:
    fields: JSON = {
        "maxOutputTokens": req.output_cap or upstream.max_output_tokens,
        "temperature": req.temperature,
        "topP": req.top_p,
        "stopSequences": req.stop_sequences or None,
        "candidateCount": req.n,
        "seed": req.seed,
        "presencePenalty": req.presence_penalty,
        "frequencyPenalty": req.frequency_penalty,
    }
    if req.needs_json_mode:
        fields["responseMimeType"] = "application/json"
    if isinstance(req.response_format, JsonSchemaFormat):
        fields["responseJsonSchema"] = req.response_format.json_schema.schema_
    return {name: value for name, value in fields.items() if value is not None}
