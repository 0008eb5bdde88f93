"""Jinja2 prompt templates shipped in ``dlmprompt/templates``, rendered in a sandbox."""

from __future__ import annotations

from importlib import resources
from typing import Any

from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import SpecError

_ENV = ImmutableSandboxedEnvironment(autoescape=False, keep_trailing_newline=True)


def template_names() -> list[str]:
    """Names of the templates shipped with the package."""
    root = resources.files("dlmprompt") / "templates"
    return sorted(p.name.removesuffix(".jinja") for p in root.iterdir() if p.name.endswith(".jinja"))


def render(name: str, /, **variables: Any) -> str:
    """Render a shipped template (sandboxed: templates cannot reach Python internals)."""
    root = resources.files("dlmprompt") / "templates"
    path = root / f"{name}.jinja"
    if not path.is_file():
        raise SpecError(f"no template {name!r}; templates are {template_names()}")
    return _ENV.from_string(path.read_text(encoding="utf-8")).render(**variables)
