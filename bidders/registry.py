"""Which adapter speaks each wire API: one explicit table, no dispatch on names elsewhere."""

from __future__ import annotations

from collections.abc import Mapping

from bidders.anthropic import AnthropicAdapter
from bidders.gemini import GeminiAdapter
from bidders.openai import OpenAIAdapter
from bidders.protocol import Adapter
from clearing.types import ApiName

APIS: Mapping[ApiName, Adapter] = {
    "openai": OpenAIAdapter(),
    "anthropic": AnthropicAdapter(),
    "gemini": GeminiAdapter(),
}
