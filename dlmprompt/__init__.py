"""dlmprompt: prompt and constrain diffusion language models.

Anchors anywhere, named slots with exact constraints, one sampler for every masked DLM.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .compiler import Layout, Program, Schedule, SlotLayout, compile
from .errors import (
    BackendError,
    CompileError,
    DLMPromptError,
    GrammarError,
    SpecError,
    TokenizerError,
)
from .schema import SchemaError, compile_schema
from .spec import Choice, FreeText, Grammar, Guidance, Json, Length, Prompt, Regex, Sampling, Slot, Text, slot
from .templating import chat, render_chat
from .tokenizer import Tokenizer

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .backends import from_transformers, load
    from .client import AsyncClient, Client, RemoteBackend, RemoteError, remote
    from .sampler import Capture, Result, Step, generate, sample

_LAZY = {"sample", "generate", "Step", "Result", "Capture"}
_BACKENDS = {"load", "from_transformers"}
_CLIENT = {"Client", "AsyncClient", "RemoteBackend", "RemoteError", "remote"}


def __getattr__(name: str) -> Any:
    # the sampler imports torch; keep `import dlmprompt` (spec + compile) torch-free
    if name in _LAZY:
        from . import sampler

        return getattr(sampler, name)
    if name in _BACKENDS:
        from . import backends

        return getattr(backends, name)
    if name in _CLIENT:
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module 'dlmprompt' has no attribute {name!r}")


__all__ = [
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
    "Guidance",
    "Json",
    "Layout",
    "Length",
    "Program",
    "Prompt",
    "Regex",
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
    "Text",
    "Tokenizer",
    "TokenizerError",
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
]
