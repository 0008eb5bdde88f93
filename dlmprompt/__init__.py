"""dlmprompt: prompt and constrain diffusion language models.

Anchors anywhere, named slots with exact constraints, one sampler for every masked DLM.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dlmprompt.compiler import Layout, Program, Schedule, SlotLayout, compile
from dlmprompt.constraints.jsonschema import SchemaError, compile_schema
from dlmprompt.errors import (
    BackendError,
    CompileError,
    DLMPromptError,
    GrammarError,
    SpecError,
    TemplateError,
    TokenizerError,
)
from dlmprompt.prompt_template import Template, Variable, template
from dlmprompt.spec import (
    AnchorRef,
    Choice,
    FreeText,
    Grammar,
    Grounded,
    Guidance,
    Json,
    Length,
    Prompt,
    Regex,
    Remask,
    Sampling,
    Slot,
    Text,
    slot,
)
from dlmprompt.templating import chat, render_chat
from dlmprompt.tokenizer import Tokenizer

__version__ = "0.1.0"

if TYPE_CHECKING:
    from dlmprompt.loading import load
    from dlmprompt.models.backends import from_transformers
    from dlmprompt.sampling.events import Capture, Result, Step
    from dlmprompt.sampling.sampler import generate, sample
    from dlmprompt.serving.client import AsyncClient, Client, RemoteBackend, RemoteError, remote
    from dlmprompt.toolcalls import ToolAnswer, ToolCall, tool_call

_LAZY = {"sample", "generate"}
_EVENTS = {"Step", "Result", "Capture"}
_CLIENT = {"Client", "AsyncClient", "RemoteBackend", "RemoteError", "remote"}


def __getattr__(name: str) -> Any:
    # the sampler imports torch; keep `import dlmprompt` (spec + compile) torch-free
    if name in _LAZY:
        from dlmprompt.sampling import sampler

        return getattr(sampler, name)
    if name in _EVENTS:
        from dlmprompt.sampling import events

        return getattr(events, name)
    if name == "load":
        from dlmprompt.loading import load

        return load
    if name in ("tool_call", "ToolCall", "ToolAnswer"):
        from dlmprompt import toolcalls

        return getattr(toolcalls, name)
    if name == "from_transformers":
        from dlmprompt.models.backends import from_transformers

        return from_transformers
    if name in _CLIENT:
        from dlmprompt.serving import client

        return getattr(client, name)
    raise AttributeError(f"module 'dlmprompt' has no attribute {name!r}")


__all__ = [
    "AnchorRef",
    "AsyncClient",
    "BackendError",
    "Capture",
    "Choice",
    "Client",
    "CompileError",
    "DLMPromptError",
    "FreeText",
    "Grammar",
    "GrammarError",
    "Grounded",
    "Guidance",
    "Json",
    "Layout",
    "Length",
    "Program",
    "Prompt",
    "Regex",
    "Remask",
    "RemoteBackend",
    "RemoteError",
    "Result",
    "Sampling",
    "Schedule",
    "SchemaError",
    "Slot",
    "SlotLayout",
    "SpecError",
    "Step",
    "Template",
    "TemplateError",
    "Text",
    "Tokenizer",
    "TokenizerError",
    "ToolAnswer",
    "ToolCall",
    "Variable",
    "chat",
    "compile",
    "compile_schema",
    "from_transformers",
    "generate",
    "load",
    "remote",
    "render_chat",
    "sample",
    "slot",
    "template",
    "tool_call",
]
