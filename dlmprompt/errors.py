"""The one error tree of dlmprompt.

Every error the SDK raises on purpose derives from :class:`DLMPromptError`; messages say
what was given, what was expected and what to change.
"""

from __future__ import annotations


class DLMPromptError(Exception):
    """Root of every error dlmprompt raises on purpose."""


class SpecError(DLMPromptError, ValueError):
    """A prompt spec is malformed (bad slot name, duplicate names, bad length, ...)."""


class TemplateError(SpecError):
    """A prompt template cannot be read or rendered: names the template, the line (when known)
    and what to change."""

    def __init__(self, message: str, *, template: str = "<string>", line: int | None = None) -> None:
        self.template = template
        self.line = line
        self.reason = message
        where = f"template {template!r}" + (f", line {line}" if line else "")
        super().__init__(f"{where}: {message}")


class CompileError(DLMPromptError, ValueError):
    """A valid spec cannot be compiled for this tokenizer.

    ``slot`` names the slot at fault (``None`` when the error concerns the whole prompt).
    """

    def __init__(self, message: str, *, slot: str | None = None) -> None:
        self.slot = slot
        super().__init__(f"slot {slot!r}: {message}" if slot is not None else message)


class GrammarError(CompileError):
    """A grammar does not parse; keeps line, column and an excerpt."""

    def __init__(
        self,
        message: str,
        *,
        slot: str | None = None,
        line: int | None = None,
        column: int | None = None,
        excerpt: str | None = None,
    ) -> None:
        self.line = line
        self.column = column
        self.excerpt = excerpt
        where = f" (line {line}, column {column})" if line is not None else ""
        text = f"{message}{where}"
        if excerpt:
            text += f"\n{excerpt}"
        super().__init__(text, slot=slot)


class SchemaError(CompileError):
    """A schema uses something the compiler does not support (or is not a valid schema)."""

    def __init__(self, message: str, *, path: str = "", slot: str | None = None) -> None:
        self.path = path or "/"
        self.reason = message
        super().__init__(f"at {self.path}: {message}", slot=slot)


class TokenizerError(DLMPromptError, ValueError):
    """A tokenizer cannot be wrapped, or lacks an id the caller needs (mask, pad, EOS)."""


class BackendError(DLMPromptError):
    """A denoiser (model backend) cannot run the program it was given."""
