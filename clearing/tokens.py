"""A high-side estimate of a chat-completions request's prompt tokens, without a tokenizer.

Text rule. Each UTF-8 byte of the text gets a class: ASCII letter, digit, space, other
whitespace, other ASCII (punctuation), or non-ASCII. The estimate is, in tokens,

    0.2 a letter + 0.8 a run of letters        (a word is one piece, ~4-5 letters a token)
    0.5 a digit  + 1.0 a run of digits         (GPT tokenizers cut numbers in 1-3 digit pieces)
    0.5 a punctuation byte + 0.25 a run
    0.5 a whitespace byte other than a space + 0.5 a run
    0.35 for each space that follows a space   (indentation; a lone space joins the next word)
    1.0 for each space before a digit          (GPT pre-tokenizers keep it apart from numbers)
    0.6 a non-ASCII byte                       (1.2 an accented or Cyrillic letter, 1.8 a CJK one)

rounded up, and never less than a quarter of the UTF-8 bytes. It is computed with
`bytes.translate` and `bytes.count`, so a 1 MB prompt takes milliseconds.

Its error, measured against the cl100k and o200k tokenizers (the larger count of the two) on
about 1,300 texts (Python source, C headers, Debian documentation, JSON, XML, HTML, gettext
catalogues, hex, UUIDs, numbers, prose in twelve languages): every one was estimated at or above
its true count except four that hold base64 data (lowest 0.82×); the median is 1.5×, the
highest about 2.6× (Russian, which o200k packs tightly). It undercounts text that BPE cannot
compress: random letter strings (down to 0.47×), base64 (0.7×), long runs of mixed punctuation
(0.75×), rare CJK characters (0.75×). Hard bound: no byte-level BPE token is shorter than a
byte, so the true count is never more than 4 × the estimate.

Message framing follows OpenAI's published counting recipe with a margin: 4 tokens a message
(OpenAI: 3), 1 more for a `name`, 3 to prime the reply. Images follow OpenAI's GPT-4o rule,
whose size is unknown here: `detail: "low"` is 85 tokens; otherwise 85 + 170 per 512-px tile at
the most tiles its resizing can leave (2048 × 768: 4 × 2 tiles, 1445 tokens), raised to 1600,
the most Anthropic counts for one image (it resizes to about 1.15 megapixels at ~750 px² per
token). Gemini counts 258 an image. Not modelled: Anthropic and Gemini ignore `detail`, so a
low-detail image can cost them more than 85; OpenAI's mini models bill images at inflated token
counts. Tool schemas, tool calls, structured-output schemas and unknown content parts are
counted by the text rule over their compact JSON, which is longer than the forms the providers
render them in.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache

MESSAGE_OVERHEAD = 4
NAME_OVERHEAD = 1
REPLY_PRIMING = 3
IMAGE_LOW = 85
IMAGE_OPENAI_MAX = 85 + 170 * 4 * 2  # the most tiles OpenAI's resizing leaves: 2048 × 768
IMAGE_HIGH = max(IMAGE_OPENAI_MAX, 1600)  # Anthropic's most for one image
TOOL_OVERHEAD = 8  # per function definition: the namespace and type wrapper around its schema
BLOCK_OVERHEAD = 12  # once for a tools block, a response schema, or a tool_choice


def _class_table() -> bytes:
    table = bytearray(b"X" * 256)  # X: a byte of a non-ASCII character
    for code in range(128):
        char = chr(code)
        kind = "P"  # punctuation and control characters
        if char.isalpha():
            kind = "L"
        elif char.isdigit():
            kind = "D"
        elif char == " ":
            kind = "B"
        elif char.isspace():
            kind = "W"
        table[code] = ord(kind)
    return bytes(table)


_CLASSES = _class_table()
_KINDS = (b"L", b"D", b"B", b"W", b"P", b"X")
# Twentieths of a token: (per byte, per run) for the classes whose runs count.
_WEIGHTS = {b"L": (4, 16), b"D": (10, 20), b"P": (10, 5), b"W": (10, 10)}
_SPACE_AFTER_SPACE = 7
_SPACE_BEFORE_DIGIT = 20  # GPT pre-tokenizers never join a space to a number
_NON_ASCII = 12


def _runs(classes: bytes, kind: bytes) -> int:
    starts = sum(classes.count(other + kind) for other in _KINDS if other != kind)
    return starts + (classes[:1] == kind)


def text_tokens(text: str) -> int:
    """The high-side token estimate for one text (see the module docstring)."""
    if len(text) <= _SHORT:
        return _short_tokens(text)  # roles, names, short prompts: the same few strings again
    return _estimate(text)


_SHORT = 32


@lru_cache(maxsize=4096)
def _short_tokens(text: str) -> int:
    return _estimate(text)


def _estimate(text: str) -> int:
    raw = text.encode("utf-8", "surrogatepass")
    classes = raw.translate(_CLASSES)
    twentieths = (
        _SPACE_AFTER_SPACE * classes.count(b"BB")
        + _SPACE_BEFORE_DIGIT * classes.count(b"BD")
        + _NON_ASCII * classes.count(b"X")
    )
    for kind, (per_byte, per_run) in _WEIGHTS.items():
        twentieths += per_byte * classes.count(kind) + per_run * _runs(classes, kind)
    return max(-(-twentieths // 20), -(-len(raw) // 4))


def _json_tokens(value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, str):
        return text_tokens(value)
    return text_tokens(json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str))


def _image_tokens(part: Mapping[str, object]) -> int:
    image = part.get("image_url")
    detail = image.get("detail") if isinstance(image, dict) else None
    return IMAGE_LOW if detail == "low" else IMAGE_HIGH


def _content_tokens(content: object) -> int:
    if not isinstance(content, list):
        return _json_tokens(content)
    total = 0
    for part in content:
        if not isinstance(part, dict):
            total += _json_tokens(part)
            continue
        kind, text = part.get("type"), part.get("text")
        if kind == "text" and isinstance(text, str):
            total += text_tokens(text)
        elif kind == "image_url":
            total += _image_tokens(part)
        else:  # input_audio, file, or a malformed part: its JSON, which is long
            total += _json_tokens(part)
    return total


def _message_tokens(message: object) -> int:
    if not isinstance(message, dict):
        return MESSAGE_OVERHEAD + _json_tokens(message)
    total = MESSAGE_OVERHEAD
    for key, value in message.items():
        if key == "content":
            total += _content_tokens(value)
        elif key == "name":
            total += NAME_OVERHEAD + _json_tokens(value)
        else:  # role, tool_calls, tool_call_id, function_call, refusal, ...
            total += _json_tokens(value)
    return total


def estimate_input_tokens(body: Mapping[str, object]) -> int:
    """A high-side estimate of the prompt tokens of an OpenAI chat-completions `body`.

    Counts every message (text, images, tool calls and results, names), the `tools` (and
    legacy `functions`) schemas, a `tool_choice` object and a `response_format` JSON schema.
    Fields of the wrong shape are counted as JSON text rather than refused: validation is the
    caller's job, and this must never undercount what a provider will see. The body is decoded
    JSON, so objects are checked as `dict` (an ABC check would cost several times as much).
    """
    total = REPLY_PRIMING
    messages = body.get("messages")
    if isinstance(messages, list):
        total += sum(_message_tokens(message) for message in messages)
    for key in ("tools", "functions"):
        tools = body.get(key)
        if isinstance(tools, list) and tools:
            total += BLOCK_OVERHEAD + sum(TOOL_OVERHEAD + _json_tokens(t) for t in tools)
    tool_choice = body.get("tool_choice")
    if isinstance(tool_choice, dict):
        total += BLOCK_OVERHEAD + _json_tokens(tool_choice)
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        total += BLOCK_OVERHEAD + _json_tokens(response_format.get("json_schema"))
    return total


def output_token_cap(body: Mapping[str, object]) -> int | None:
    """The request's output limit: the smaller of `max_completion_tokens` and `max_tokens`.

    None when neither is given. Raises `ValueError` if one is not a non-negative integer.
    """
    caps: list[int] = []
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{key} must be a non-negative integer")
        caps.append(value)
    return min(caps) if caps else None
