"""Jinja2 prompt templates shipped in ``templates/`` (installed as ``dlmprompt.templates``), rendered in a sandbox."""

from __future__ import annotations

from importlib import resources
from typing import Any

from jinja2.sandbox import ImmutableSandboxedEnvironment

from dlmprompt.errors import SpecError

_ENV = ImmutableSandboxedEnvironment(autoescape=False, keep_trailing_newline=True)


def template_names() -> list[str]:
    """Names of the templates shipped with the package."""
    root = resources.files("dlmprompt.templates")
    return sorted(p.name.removesuffix(".jinja") for p in root.iterdir() if p.name.endswith(".jinja"))


def render(name: str, /, **variables: Any) -> str:
    """Render a shipped template (sandboxed: templates cannot reach Python internals)."""
    root = resources.files("dlmprompt.templates")
    path = root / f"{name}.jinja"
    if not path.is_file():
        raise SpecError(f"no template {name!r}; templates are {template_names()}")
    return _ENV.from_string(path.read_text(encoding="utf-8")).render(**variables)


# ---------------------------------------------------------------------------------------------- chat
FAMILY_TEMPLATES = {"llada": "chat_llada", "dream": "chat_chatml", "diffusion_gemma": "chat_gemma"}
_ROLES = {"system", "developer", "user", "assistant", "tool"}


def _messages(messages: Any) -> list[dict[str, Any]]:
    if isinstance(messages, (str, bytes)) or not hasattr(messages, "__iter__"):
        raise SpecError("messages must be a list of {'role': ..., 'content': ...}")
    out = []
    for i, m in enumerate(messages):
        if hasattr(m, "model_dump"):
            m = m.model_dump()
        if not isinstance(m, dict) or "role" not in m:
            raise SpecError(f"message {i} must be a dict with 'role' and 'content'; got {m!r:.80}")
        role, content = m["role"], m.get("content")
        if role not in _ROLES:
            raise SpecError(f"message {i}: unknown role {role!r}; roles are {sorted(_ROLES)}")
        if isinstance(content, list):  # OpenAI content parts: text only
            texts = []
            for part in content:
                if not isinstance(part, dict) or part.get("type") != "text":
                    raise SpecError(f"message {i}: only text content parts are supported")
                texts.append(str(part.get("text", "")))
            content = "".join(texts)
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise SpecError(f"message {i}: content must be a string")
        msg: dict[str, Any] = {"role": role, "content": content}
        for key in ("tool_calls", "tool_call_id", "name"):  # for chat templates that render tools
            if m.get(key) is not None:
                msg[key] = m[key]
        out.append(msg)
    if not out:
        raise SpecError("messages is empty")
    return out


def _raise(message: str) -> None:
    raise SpecError(f"the chat template refused the messages: {message}")


def chat_template_for(model: Any = None, template: str | None = None) -> tuple[str, str]:
    """(Jinja source, where it came from): ``template`` (a shipped name such as ``"chat_llada"`` or
    Jinja source), else the model tokenizer's own ``chat_template``, else the family's shipped
    template, else ``chat_plain``."""
    root = resources.files("dlmprompt.templates")
    if template is not None:
        if "{{" in template or "{%" in template:
            return template, "the given template"
        path = root / f"{template}.jinja"
        if not path.is_file():
            names = [n for n in template_names() if n.startswith("chat_")]
            raise SpecError(f"no chat template {template!r}; shipped: {names}, or pass Jinja source")
        return path.read_text(encoding="utf-8"), template
    tok = getattr(model, "tokenizer", model)
    own = getattr(tok, "chat_template", None)
    if isinstance(own, str) and own:
        return own, "the model's tokenizer"
    name = FAMILY_TEMPLATES.get(str(getattr(model, "family", "")), "chat_plain")
    return (root / f"{name}.jinja").read_text(encoding="utf-8"), name


def render_chat(
    messages: Any,
    *,
    model: Any = None,
    template: str | None = None,
    add_generation_prompt: bool = True,
    tools: list[dict[str, Any]] | None = None,
) -> str:
    """The text of a conversation under a chat template, rendered in a sandbox (a template cannot
    reach Python internals). ``bos_token`` renders empty: the compiler adds the BOS itself."""
    from jinja2 import TemplateError
    from jinja2.sandbox import SecurityError

    source, origin = chat_template_for(model, template)
    msgs = _messages(messages)
    try:
        return _ENV.from_string(source).render(
            messages=msgs,
            add_generation_prompt=add_generation_prompt,
            bos_token="",
            eos_token="",
            raise_exception=_raise,
            tools=[{"type": "function", "function": t} for t in tools] if tools else None,
        )
    except SecurityError as exc:
        raise SpecError(f"the chat template from {origin} tried something unsafe and was stopped: {exc}") from None
    except TemplateError as exc:
        raise SpecError(f"the chat template from {origin} failed: {exc}") from None


def chat(messages: Any, *, model: Any = None, template: str | None = None, tools: Any = None) -> Any:
    """A :class:`~dlmprompt.spec.Prompt` holding a conversation, ready for the answer's slots::

        prompt = dlmprompt.chat(messages, model=denoiser) + slot("answer", schema=Person)

    The template is the model's own (its tokenizer's ``chat_template``), else the one shipped for
    its family (``chat_llada``, ``chat_chatml`` for Dream, ``chat_gemma``), else ``chat_plain``;
    ``template=`` picks one by name or gives Jinja source. Special tokens in the rendered text
    (``<|im_start|>`` ...) become their special ids when the prompt compiles.
    """
    from dlmprompt.spec import Prompt, Text

    text = render_chat(messages, model=model, template=template, tools=tools)
    return Prompt(parts=(Text(text=text, prompt=True),))
