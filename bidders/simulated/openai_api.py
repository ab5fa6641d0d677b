"""OpenAI Chat Completions as a simulated provider speaks it: POST {base_url}/chat/completions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from bidders.simulated.generation import Prompt, Reply, ToolMode, ToolSpec, Transcript
from bidders.simulated.wire import (
    ErrorKind,
    ErrorReply,
    Frame,
    ReplyMeta,
    Route,
    WireError,
    delta_frames,
    dumps,
    get_field,
    items,
    jstr,
    mapping,
    require,
)
from clearing.types import ApiName

FINISH = {"stop": "stop", "length": "length", "tool_call": "tool_calls"}
FINGERPRINT = "fp_simulated"
# kind -> (status, error.type, error.code, default message)
ERRORS: dict[ErrorKind, tuple[int, str, str | None, str]] = {
    "bad_request": (400, "invalid_request_error", None, "Invalid request."),
    "missing_key": (
        401,
        "invalid_request_error",
        None,
        "You didn't provide an API key. You need to provide your API key in an Authorization"
        " header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
    ),
    "invalid_key": (401, "invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    "model_not_found": (404, "invalid_request_error", "model_not_found", ""),
    "not_found": (404, "invalid_request_error", None, "Invalid URL."),
    "rate_limit": (429, "requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    "server_error": (
        500,
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    "overloaded": (
        503,
        "server_error",
        None,
        "The engine is currently overloaded, please try again later.",
    ),
}


class OpenAIWire:
    name: ApiName = "openai"
    base_path = "/v1"

    def match(self, method: str, path: str, query: Mapping[str, str]) -> Route | None:
        if method == "POST" and path == "/v1/chat/completions":
            return Route("generate")
        if method == "GET" and path == "/v1/models":
            return Route("models")
        return None

    def check_headers(
        self, headers: Mapping[str, str], query: Mapping[str, str], api_key: str | None
    ) -> None:
        if api_key is None:
            return
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if not token.strip():
            raise WireError("missing_key")
        if scheme.lower() != "bearer" or token.strip() != api_key:
            raise WireError("invalid_key", f"Incorrect API key provided: {_redact(token)}.")

    def parse(self, route: Route, body: object) -> Prompt:
        req = mapping(body, "body")
        model = require(req, "model", str)
        messages = items(require(req, "messages", list), "messages")
        if not model or not messages:
            raise WireError("bad_request", "messages: must not be empty", param="messages")
        tools = _tools(req)
        transcript = Transcript()
        if tools:
            transcript.add("tools", (), other=[dumps(req["tools"]).decode()])
        for message in messages:
            _add_message(transcript, message)
        mode, forced = _tool_choice(req.get("tool_choice"))
        json_mode, schema = _response_format(req.get("response_format"))
        options = mapping(req.get("stream_options") or {}, "stream_options")
        max_tokens = get_field(req, "max_completion_tokens", int)
        if max_tokens is None:
            max_tokens = get_field(req, "max_tokens", int)
        if max_tokens is not None and max_tokens < 1:
            raise WireError("bad_request", "max_tokens: must be at least 1", param="max_tokens")
        return replace(
            transcript.prompt(model),
            max_tokens=max_tokens,
            stream=bool(get_field(req, "stream", bool)),
            tools=tools,
            tool_mode=mode,
            forced_tool=forced,
            json_mode=json_mode,
            json_schema=schema,
            include_usage=bool(options.get("include_usage")),
        )

    def error(self, err: WireError, retry_after_s: int) -> ErrorReply:
        status, kind, code, message = ERRORS[err.kind]
        if err.kind == "model_not_found":
            message = f"The model `{err.param}` does not exist or you do not have access to it."
        param = err.param if err.kind == "bad_request" else None
        error = {"message": err.message or message, "type": kind, "param": param, "code": code}
        headers = (("retry-after", str(retry_after_s)),) if status == 429 else ()
        return ErrorReply(status, dumps({"error": error}), headers)

    def headers(self, meta: ReplyMeta) -> list[tuple[str, str]]:
        return [("x-request-id", f"req_sim{meta.serial:08d}")]

    def body(self, prompt: Prompt, reply: Reply, meta: ReplyMeta) -> bytes:
        message: dict[str, object] = {"role": "assistant", "content": reply.text, "refusal": None}
        if reply.tool_call is not None:
            call = reply.tool_call
            function = {"name": call.name, "arguments": call.arguments}
            message["content"] = None
            message["tool_calls"] = [
                {"id": f"call_{call.key}", "type": "function", "function": function}
            ]
        choice = {
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": FINISH[reply.finish],
        }
        return dumps(
            {**_head(prompt, meta, "chat.completion"), "choices": [choice], "usage": _usage(reply)}
        )

    def stream(self, prompt: Prompt, reply: Reply, meta: ReplyMeta, per_chunk: int) -> list[Frame]:
        head = _head(prompt, meta, "chat.completion.chunk")
        opening = b"data: " + dumps(head)[:-1] + b',"choices":[{"index":0,"delta":'
        closing = b',"usage":null}\n\n' if prompt.include_usage else b"}\n\n"

        def chunk(delta: bytes, finish: bytes = b"null") -> bytes:
            return opening + delta + b',"logprobs":null,"finish_reason":' + finish + b"}]" + closing

        call = reply.tool_call
        if call is None:
            frames = [Frame(chunk(b'{"role":"assistant","content":"","refusal":null}'))]
            before, after = chunk(b'{"content":\x00}').split(b"\x00")
            frames += delta_frames(before, reply.pieces, per_chunk, after)
        else:
            function = {"name": call.name, "arguments": ""}
            tool = {"index": 0, "id": f"call_{call.key}", "type": "function", "function": function}
            start = {"role": "assistant", "content": None, "tool_calls": [tool], "refusal": None}
            frames = [Frame(chunk(dumps(start)), 1)]
            template = chunk(b'{"tool_calls":[{"index":0,"function":{"arguments":\x00}}]}')
            before, after = template.split(b"\x00")
            frames += delta_frames(before, call.pieces, per_chunk, after)
        frames.append(Frame(chunk(b"{}", jstr(FINISH[reply.finish]))))
        if prompt.include_usage:
            usage = {**head, "choices": [], "usage": _usage(reply)}
            frames.append(Frame(b"data: " + dumps(usage) + b"\n\n"))
        frames.append(Frame(b"data: [DONE]\n\n"))
        return frames

    def stream_error(self, err: WireError) -> Frame:
        return Frame(b"data: " + self.error(err, 0).body + b"\n\n")

    def models(self, models: Sequence[str]) -> bytes:
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "simulated"} for m in models]
        return dumps({"object": "list", "data": data})


def _redact(key: str) -> str:
    key = key.strip()
    return f"{key[:3]}***{key[-3:]}" if len(key) > 8 else "***"


def _head(prompt: Prompt, meta: ReplyMeta, kind: str) -> dict[str, object]:
    return {
        "id": f"chatcmpl-sim{meta.serial:08d}",
        "object": kind,
        "created": meta.created,
        "model": prompt.model,
        "service_tier": "default",
        "system_fingerprint": FINGERPRINT,
    }


def _usage(reply: Reply) -> dict[str, object]:
    usage = reply.usage
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _add_message(transcript: Transcript, message: Mapping[str, object]) -> None:
    role = require(message, "role", str)
    content = message.get("content")
    texts: list[str] = []
    images = 0
    if isinstance(content, str):
        texts.append(content)
    else:
        for part in items(content, "messages.content"):
            if part.get("type") == "text":
                texts.append(str(part.get("text", "")))
            elif part.get("type") in ("image_url", "input_audio", "file"):
                images += 1
    other = [dumps(message["tool_calls"]).decode()] if message.get("tool_calls") else []
    transcript.add("system" if role == "developer" else role, texts, other=other, images=images)


def _tools(req: Mapping[str, object]) -> tuple[ToolSpec, ...]:
    specs = []
    for tool in items(req.get("tools"), "tools"):
        function = mapping(tool.get("function"), "tools.function")
        name = require(function, "name", str)
        parameters = mapping(function.get("parameters") or {}, "tools.function.parameters")
        specs.append(ToolSpec(name, parameters))
    return tuple(specs)


def _tool_choice(choice: object) -> tuple[ToolMode, str | None]:
    if choice in (None, "auto"):
        return "auto", None
    if choice in ("none", "required"):
        return ("none" if choice == "none" else "required"), None
    function = mapping(mapping(choice, "tool_choice").get("function"), "tool_choice.function")
    return "required", require(function, "name", str)


def _response_format(fmt: object) -> tuple[bool, Mapping[str, object] | None]:
    if fmt is None:
        return False, None
    kind = mapping(fmt, "response_format").get("type")
    if kind == "json_schema":
        spec = mapping(mapping(fmt, "response_format").get("json_schema"), "json_schema")
        return True, mapping(spec.get("schema") or {}, "json_schema.schema")
    return kind == "json_object", None
