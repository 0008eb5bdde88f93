"""The wire protocol of ``dlmprompt serve``: the limits a request must keep, API errors in the
documented ``{"error": {"message", "type", "code"}}`` shape, the request bodies (native and
OpenAI-compatible), how an OpenAI request becomes a prompt (its answer slot from
``response_format`` / ``regex`` / ``choice`` / ``grammar`` / ``grounded``) and how a result becomes
an OpenAI answer (text, finish reason, usage), and server-sent events."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from dlmprompt.compiler import Program
from dlmprompt.errors import DLMPromptError
from dlmprompt.sampling.events import Result
from dlmprompt.spec import Json, Prompt
from dlmprompt.spec import slot as make_slot


@dataclass(frozen=True)
class Limits:
    """What one request may ask for. Each bound is refused with a 4xx naming it."""

    max_body_bytes: int = 1 << 20
    max_canvas: int = 2048  # tokens on the compiled canvas
    max_slots: int = 64
    max_grammar_chars: int = 100_000  # a JSON schema, regex, choice list or Lark grammar, as JSON text
    max_steps: int = 1024
    max_tokens: int = 1024  # a free-text / regex / choice answer, in tokens
    max_nesting: int = 128  # levels of objects and arrays in a JSON Schema (JSONSchemaBench's deepest: 63)
    compile_seconds: float = 10.0  # wall clock for compiling one request's prompt
    compile_memory_mb: int = 2048  # address space a compile may add to its worker


def nesting(value: Any) -> int:
    """Levels of dicts and lists in a JSON value (iterative: no recursion limit to hit)."""
    best, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            best = max(best, depth)
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, (list, tuple)):
            best = max(best, depth)
            stack.extend((v, depth + 1) for v in item)
    return best


class APIError(Exception):
    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", code: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code


def error_body(message: str, type: str, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "code": code}}


# ---------------------------------------------------------------------------------------------- requests
class _Req(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GenerateRequest(_Req):
    # one of: a prompt spec, a template by name (shipped, or in the server's --templates folder),
    # or template source (only with --allow-template-source)
    prompt: Prompt | None = None
    template: str | None = Field(default=None, max_length=128)
    template_source: str | None = None
    variables: dict[str, Any] = Field(default_factory=dict)
    seed: int | None = None
    stream: bool = False


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Union[str, list[dict[str, Any]], None] = None


class _JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    name: str = "response"
    json_schema: Union[dict[str, Any], None] = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    type: Literal["text", "json_object", "json_schema"]
    json_schema: _JsonSchemaFormat | None = None
    # the older form some clients still send: {"type": "json_object", "schema": {...}}
    object_schema: Union[dict[str, Any], None] = Field(default=None, alias="schema")


class StructuredOutputs(BaseModel):
    """vLLM's ``structured_outputs`` (and, field by field, its older ``guided_*`` extras)."""

    model_config = ConfigDict(extra="forbid")
    json_: Union[dict[str, Any], str, None] = Field(default=None, alias="json")
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None
    json_object: bool | None = None
    # vLLM's whitespace between JSON tokens; dlmprompt's JSON layout is its own compact form
    # (", " and ": "), so the pattern is accepted and not applied
    whitespace_pattern: str | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class OpenAIRequest(BaseModel):
    # OpenAI clients send many optional fields; those below that do not change the result are
    # accepted and ignored; penalties and logit_bias map onto guidance terms; and any other
    # field is a 400 naming it (check_unsupported; the OpenAPI schema lists only the known fields)
    model_config = ConfigDict(extra="allow", json_schema_extra={"additionalProperties": False})
    model: str | None = None
    max_tokens: int | None = Field(default=None, gt=0)
    max_completion_tokens: int | None = Field(default=None, gt=0)
    temperature: float | None = Field(default=None, ge=0.0)
    seed: int | None = None
    stream: bool = False
    # a text answer is cut before the first stop sequence (after generation: a DLM fills its slot at once)
    stop: Union[str, list[str], None] = None
    n: int = Field(default=1, ge=1, le=1)
    response_format: ResponseFormat | None = None
    stream_options: StreamOptions | None = None
    # vLLM's dialects: structured_outputs, and the older guided_* fields
    structured_outputs: StructuredOutputs | None = None
    guided_json: Union[dict[str, Any], str, None] = None
    guided_regex: str | None = None
    guided_choice: list[str] | None = None
    guided_grammar: str | None = None
    # hints that do not change an answer: accepted and ignored
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    user: str | None = None
    store: bool | None = None
    metadata: dict[str, Any] | None = None
    service_tier: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    safety_identifier: str | None = None
    # fields that would change an answer: accepted only at their no-op values
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    # dlmprompt extras (openai clients pass them with extra_body=...)
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None
    prompt_spec: Prompt | None = Field(default=None, alias="dlmprompt_prompt")
    steps: int | None = Field(default=None, gt=0)
    # the answer (or each free string of a JSON answer) is a span of these texts; true: of the prompt
    grounded: Union[bool, str, list[str], dict[str, Any], None] = None


class ToolFunction(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    description: str | None = None
    parameters: Union[dict[str, Any], bool, None] = None
    strict: bool | None = None


class Tool(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["function"] = "function"
    function: ToolFunction


class ChatRequest(OpenAIRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    # OpenAI tool calling: every call names one of the tools, its arguments valid under its schema
    tools: list[Tool] | None = Field(default=None, max_length=128)
    tool_choice: Union[Literal["none", "auto", "required"], dict[str, Any], None] = None
    parallel_tool_calls: bool | None = None


class CompletionRequest(OpenAIRequest):
    prompt: str
    suffix: str | None = None


def check_unsupported(req: BaseModel) -> None:
    bad = sorted(req.model_extra or {})
    if bad:
        raise APIError(400, f"unsupported field(s) {bad}", code="unsupported_field")


def sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return (head + "data: " + json.dumps(data, separators=(",", ":")) + "\n\n").encode()


# ---------------------------------------------------------------------------------------------- OpenAI mapping
def _constraints(req: OpenAIRequest) -> dict[str, Any]:
    """Every way a request may constrain its answer, each once: ``schema``, ``regex``, ``choice``,
    ``grammar`` (from ``response_format``, dlmprompt's extras, vLLM's ``structured_outputs`` and
    ``guided_*``). Two at once is an error naming both."""
    found: dict[str, tuple[str, Any]] = {}

    def add(kind: str, value: Any, source: str) -> None:
        if value is None:
            return
        if kind == "schema" and isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                raise APIError(400, f"{source}: not a JSON Schema (invalid JSON)", code="bad_response_format") from None
        if found:
            (other,) = [src for src, _ in found.values()]
            raise APIError(400, f"give one constraint; got {other} and {source}", code="conflicting_constraints")
        found[kind] = (source, value)

    rf = req.response_format
    if rf is not None and rf.type == "json_schema":
        if rf.json_schema is None or rf.json_schema.json_schema is None:
            raise APIError(400, "response_format json_schema needs json_schema.schema", code="bad_response_format")
        add("schema", rf.json_schema.json_schema, "response_format")
    elif rf is not None and rf.type == "json_object":
        add("schema", rf.object_schema or {"type": "object"}, "response_format")
    for kind in ("regex", "choice", "grammar"):
        add(kind, getattr(req, kind), kind)
    so = req.structured_outputs
    if so is not None:
        add("schema", so.json_, "structured_outputs.json")
        add("schema", {"type": "object"} if so.json_object else None, "structured_outputs.json_object")
        for kind in ("regex", "choice", "grammar"):
            add(kind, getattr(so, kind), f"structured_outputs.{kind}")
    add("schema", req.guided_json, "guided_json")
    for kind in ("regex", "choice", "grammar"):
        add(kind, getattr(req, f"guided_{kind}"), f"guided_{kind}")
    return {k: v for k, (_, v) in found.items()}


def answer_slot(req: OpenAIRequest, limits: Limits, tokenizer: Any, text: str = "", name: str = "content") -> Any:
    """The slot that holds the answer, from the request's constraint (any dialect) and max_tokens."""
    n = req.max_completion_tokens or req.max_tokens
    ground = req.grounded
    if ground is True:
        ground = text  # the prompt as the model sees it
    elif ground is False:
        ground = None
    slot = functools.partial(make_slot, name, grounded=ground)
    want = _constraints(req)
    if n is not None and n > limits.max_tokens and "schema" not in want:
        raise APIError(400, f"max_tokens={n}; this server allows {limits.max_tokens}", code="too_many_tokens")
    if "schema" in want:
        return slot(schema=want["schema"], max_tokens=min(n or 16, 64))
    if "regex" in want:
        return slot(regex=want["regex"], max_tokens=n or 32)
    if "grammar" in want:
        return slot(grammar=want["grammar"], max_tokens=n or 64)
    if "choice" in want:
        options = want["choice"]
        if not options:
            raise APIError(400, "choice needs at least one option", code="bad_choice")
        longest = max(len(tokenizer.encode(o)) for o in options)
        return slot(choice=options, max_tokens=max(n or 0, longest, 1))
    return slot(max_tokens=n or 64)


def openai_prompt(req: OpenAIRequest, text: str, suffix: str | None, limits: Limits, tokenizer: Any) -> Prompt:
    """The dlmprompt prompt of an OpenAI-style request: the text, then the answer slot (then the
    completions ``suffix``); or the whole ``dlmprompt_prompt`` spec when one is given."""
    if req.prompt_spec is not None:
        prompt = req.prompt_spec
    else:
        try:
            prompt = Prompt(text) + answer_slot(req, limits, tokenizer, text)
        except DLMPromptError as exc:
            raise APIError(400, f"{type(exc).__name__}: {exc}", code="bad_constraint") from None
        if suffix:
            prompt = prompt + suffix
    return with_options(req, prompt)


def with_options(req: OpenAIRequest, prompt: Prompt) -> Prompt:
    """The prompt with the request's sampling options (``temperature``, ``steps``) and guidance
    (``logit_bias`` → ``token_bias``, ``frequency_penalty``, ``presence_penalty``: see
    :class:`~dlmprompt.spec.Guidance`)."""
    options: dict[str, Any] = {}
    if req.temperature is not None:
        options["temperature"] = req.temperature
    if req.steps is not None:
        options["steps"] = req.steps
    if options:
        prompt = prompt.with_sampling(**options)
    guide: dict[str, Any] = {}
    if req.frequency_penalty:
        guide["frequency_penalty"] = req.frequency_penalty
    if req.presence_penalty:
        guide["presence_penalty"] = req.presence_penalty
    if req.logit_bias:
        bias: dict[int, float] = {}
        for key, value in req.logit_bias.items():
            if not (str(key).isascii() and str(key).isdecimal()):
                raise APIError(400, f"logit_bias: {key!r} is not a token id", code="bad_logit_bias")
            bias[int(key)] = value
        guide["token_bias"] = {**prompt.guidance.token_bias, **bias}
    if guide:
        try:
            prompt = prompt.with_guidance(**guide)
        except DLMPromptError as exc:
            raise APIError(400, str(exc), code="bad_guidance") from None
    return prompt


def answer_span(prog: Program) -> tuple[int, int]:
    """Where the answer lies: from the first slot (or JSON template) to the end of the last one;
    the anchors before are the prompt, the anchors after (a completions ``suffix``) are not sent."""
    spans = [(s.start, s.stop) for s in prog.layout.slots if s.parent is None]
    spans += [(j.start, j.stop) for j in prog.json_slots]
    if not spans:
        return len(prog.layout), len(prog.layout)
    return min(a for a, _ in spans), max(z for _, z in spans)


def answer_text(result: Result) -> str:
    prog = result.program
    start, stop = answer_span(prog)
    ids = [int(t) for t in result.canvas[start:stop].tolist() if t != prog.pad_id]
    return prog.tokenizer.decode_bytes(ids).decode("utf-8", errors="replace")


def stops_for(req: OpenAIRequest, program: Program) -> list[str]:
    """The request's stop sequences that apply to the answer ``program`` writes: all of them for
    free text, none for a constrained answer (cut, a regex, choice, grammar or JSON answer would
    no longer satisfy its constraint)."""
    from dlmprompt.spec import FreeText

    top = [s for s in program.layout.slots if s.parent is None]
    if program.json_slots or not all(isinstance(s.constraint, FreeText) for s in top):
        return []
    return [s for s in ([req.stop] if isinstance(req.stop, str) else req.stop or []) if s]


def cut_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    """The text before the first stop sequence, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
    return (text, False) if cut < 0 else (text[:cut], True)


def finish_reason(result: Result) -> str:
    for s in result.program.layout.slots:
        if s.parent is None and s.mode == "at_most" and not isinstance(s.constraint, Json):
            if len(result.captures[s.name].tokens) == s.length:
                return "length"
    return "stop"


def usage(result: Result) -> dict[str, int]:
    prog = result.program
    anchors = int((prog.layout.slot_of < 0).sum())
    filled = int(((prog.layout.slot_of >= 0) & (result.canvas != prog.pad_id)).sum())
    return {"prompt_tokens": anchors, "completion_tokens": filled, "total_tokens": anchors + filled}
