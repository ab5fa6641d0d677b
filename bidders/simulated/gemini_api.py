"""Gemini generateContent as a simulated provider speaks it: {host}/v1beta/models/{model}:..."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from urllib.parse import unquote

from bidders.simulated.generation import Prompt, Reply, ToolMode, ToolSpec, Transcript
from bidders.simulated.wire import (
    ErrorKind,
    ErrorReply,
    Frame,
    ReplyMeta,
    Route,
    WireError,
    chunks,
    delta_frames,
    dumps,
    first,
    get_field,
    items,
    mapping,
    sse,
)
from clearing.types import ApiName

FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "tool_call": "STOP"}
END = b"\r\n\r\n"  # Google's SSE frames end with CRLF pairs, which the SSE spec allows
PREFIXES = ("/v1beta/models/", "/v1/models/")
# kind -> (status, google.rpc status, default message)
ERRORS: dict[ErrorKind, tuple[int, str, str]] = {
    "bad_request": (400, "INVALID_ARGUMENT", "Request contains an invalid argument."),
    "missing_key": (
        403,
        "PERMISSION_DENIED",
        "Method doesn't allow unregistered callers (callers without established identity)."
        " Please use API Key or other form of API consumer identity to call this API.",
    ),
    "invalid_key": (400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key."),
    "model_not_found": (404, "NOT_FOUND", ""),
    "not_found": (404, "NOT_FOUND", "Requested entity was not found."),
    "rate_limit": (429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
    "server_error": (500, "INTERNAL", "An internal error has occurred."),
    "overloaded": (503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
}
MEDIA_PARTS = ("inlineData", "inline_data", "fileData", "file_data")
CALL_PARTS = ("functionCall", "function_call", "functionResponse", "function_response")


class GeminiWire:
    name: ApiName = "gemini"
    base_path = ""

    def match(self, method: str, path: str, query: Mapping[str, str]) -> Route | None:
        if method == "GET" and path.rstrip("/") in ("/v1beta/models", "/v1/models"):
            return Route("models")
        prefix = next((p for p in PREFIXES if path.startswith(p)), None)
        if method != "POST" or prefix is None:
            return None
        model, _, action = unquote(path[len(prefix) :]).rpartition(":")
        if action == "generateContent":
            return Route("generate", model, stream=False)
        if action == "streamGenerateContent" and query.get("alt") == "sse":
            return Route("generate", model, stream=True)
        return None  # a stream without alt=sse is a JSON array: not simulated

    def check_headers(
        self, headers: Mapping[str, str], query: Mapping[str, str], api_key: str | None
    ) -> None:
        if api_key is None:
            return
        given = headers.get("x-goog-api-key") or query.get("key", "")
        if not given:
            raise WireError("missing_key")
        if given != api_key:
            raise WireError("invalid_key")

    def parse(self, route: Route, body: object) -> Prompt:
        req = mapping(body, "body")
        contents = items(first(req, "contents"), "contents")
        if not contents or not route.model:
            raise WireError(
                "bad_request", "* GenerateContentRequest.contents: contents is not specified"
            )
        transcript = Transcript()
        system = first(req, "systemInstruction", "system_instruction")
        if system:
            transcript.add("system", [str(p.get("text", "")) for p in _parts(system)])
        tools = _tools(req)
        if tools:
            transcript.add("tools", (), other=[dumps(req.get("tools")).decode()])
        for content in contents:
            _add_content(transcript, content)
        config = mapping(
            first(req, "generationConfig", "generation_config") or {}, "generationConfig"
        )
        mode, forced = _tool_config(req)
        schema = first(
            config,
            "responseSchema",
            "response_schema",
            "responseJsonSchema",
            "response_json_schema",
        )
        limit = first(config, "maxOutputTokens", "max_output_tokens")
        return replace(
            transcript.prompt(route.model),
            max_tokens=get_field({"maxOutputTokens": limit}, "maxOutputTokens", int),
            stream=bool(route.stream),
            tools=tools,
            tool_mode=mode,
            forced_tool=forced,
            json_mode=first(config, "responseMimeType", "response_mime_type") == "application/json",
            json_schema=mapping(schema, "responseSchema") if schema else None,
        )

    def error(self, err: WireError, retry_after_s: int) -> ErrorReply:
        status, rpc_status, message = ERRORS[err.kind]
        if err.kind == "model_not_found":
            message = (
                f"models/{err.param} is not found for API version v1beta, or is not supported for"
                " generateContent. Call ListModels to see the list of available models and their"
                " supported methods."
            )
        error: dict[str, object] = {
            "code": status,
            "message": err.message or message,
            "status": rpc_status,
        }
        if err.kind == "invalid_key":
            info = {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
            }
            error["details"] = [{**info, "domain": "googleapis.com"}]
        headers: tuple[tuple[str, str], ...] = ()
        if status == 429:
            retry = {
                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                "retryDelay": f"{retry_after_s}s",
            }
            error["details"] = [retry]
            headers = (("retry-after", str(retry_after_s)),)
        return ErrorReply(status, dumps({"error": error}), headers)

    def headers(self, meta: ReplyMeta) -> list[tuple[str, str]]:
        return []

    def body(self, prompt: Prompt, reply: Reply, meta: ReplyMeta) -> bytes:
        parts: list[dict[str, object]] = []
        if reply.tool_call is not None:
            call = reply.tool_call
            parts.append({"functionCall": {"name": call.name, "args": json.loads(call.arguments)}})
        elif reply.pieces:
            parts.append({"text": reply.text})
        content: dict[str, object] = (
            {"parts": parts, "role": "model"} if parts else {"role": "model"}
        )
        candidate = {"content": content, "finishReason": FINISH[reply.finish], "index": 0}
        return dumps(_response(prompt, reply, meta, candidate, reply.usage.completion_tokens))

    def stream(self, prompt: Prompt, reply: Reply, meta: ReplyMeta, per_chunk: int) -> list[Frame]:
        """Chunks of text, then a last one with finishReason and the full usage (no [DONE])."""
        last = json.loads(self.body(prompt, reply, meta))
        if reply.tool_call is not None or not reply.pieces:
            return [Frame(sse(last, end=END), reply.usage.completion_tokens)]
        running = _response(prompt, reply, meta, {}, 0)
        del running["candidates"]
        opening = b'data: {"candidates":[{"content":{"parts":[{"text":'
        closing = b'}],"role":"model"},"index":0}],' + dumps(running)[1:] + END
        frames = delta_frames(opening, reply.pieces, per_chunk, closing)
        text, n = chunks(reply.pieces, per_chunk)[-1]
        last["candidates"][0]["content"]["parts"] = [{"text": text}]
        frames[-1] = Frame(sse(last, end=END), n)
        return frames

    def stream_error(self, err: WireError) -> Frame:
        return Frame(b"data: " + self.error(err, 0).body + END)

    def models(self, models: Sequence[str]) -> bytes:
        methods = ["generateContent", "streamGenerateContent"]
        data = [
            {"name": f"models/{m}", "displayName": m, "supportedGenerationMethods": methods}
            for m in models
        ]
        return dumps({"models": data})


def _response(
    prompt: Prompt, reply: Reply, meta: ReplyMeta, candidate: dict[str, object], output: int
) -> dict[str, object]:
    """One GenerateContentResponse; proto3 JSON leaves zero counts out, and so do we."""
    usage: dict[str, object] = {"promptTokenCount": reply.usage.prompt_tokens}
    if output:
        usage["candidatesTokenCount"] = output
    usage["totalTokenCount"] = reply.usage.prompt_tokens + output
    if reply.usage.cached_tokens:
        usage["cachedContentTokenCount"] = reply.usage.cached_tokens
    usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": reply.usage.prompt_tokens}]
    return {
        "candidates": [candidate],
        "usageMetadata": usage,
        "modelVersion": prompt.model,
        "responseId": f"sim{meta.serial:08d}",
    }


def _parts(content: object) -> list[Mapping[str, object]]:
    return items(mapping(content, "contents").get("parts"), "contents.parts")


def _add_content(transcript: Transcript, content: Mapping[str, object]) -> None:
    role = content.get("role") or "user"
    parts = _parts(content)
    texts = [str(p["text"]) for p in parts if "text" in p]
    other = [dumps(p).decode() for p in parts if any(k in p for k in CALL_PARTS)]
    images = sum(1 for p in parts if any(k in p for k in MEDIA_PARTS))
    role = "assistant" if role == "model" else "user"
    transcript.add(role, texts, other=other, images=images)


def _tools(req: Mapping[str, object]) -> tuple[ToolSpec, ...]:
    specs = []
    for tool in items(req.get("tools"), "tools"):
        declarations = first(tool, "functionDeclarations", "function_declarations")
        for decl in items(declarations, "tools.functionDeclarations"):
            params = first(decl, "parameters", "parametersJsonSchema", "parameters_json_schema")
            specs.append(ToolSpec(str(decl.get("name", "")), mapping(params or {}, "parameters")))
    return tuple(specs)


def _tool_config(req: Mapping[str, object]) -> tuple[ToolMode, str | None]:
    config = mapping(first(req, "toolConfig", "tool_config") or {}, "toolConfig")
    calling = mapping(
        first(config, "functionCallingConfig", "function_calling_config") or {},
        "functionCallingConfig",
    )
    mode = str(calling.get("mode", "AUTO")).upper()
    allowed = first(calling, "allowedFunctionNames", "allowed_function_names")
    if mode == "NONE":
        return "none", None
    if mode == "ANY":
        forced = allowed[0] if isinstance(allowed, list) and allowed else None
        return "required", None if forced is None else str(forced)
    return "auto", None
