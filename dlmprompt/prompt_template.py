"""Jinja2 prompt templates with slots: prompt files whose holes are declared inside them.

A template calls ``slot(...)`` wherever the model writes, with the arguments of
:func:`dlmprompt.slot` (``regex=``, ``choice=``, ``schema=``, ``grammar=``, ``max_tokens=``,
``tokens=``, ...), any number of times, between any text, inside loops, macros and included
files. :meth:`Template.render` gives a :class:`~dlmprompt.spec.Prompt` whose anchors are the
rendered text and whose slots are those calls, in order::

    {#---
    description: Name a city's country.
    variables:
      city: {type: string, description: the city}
    example: {city: Paris}
    ---#}
    City: {{ city }}
    Country: {{ slot("country", regex="[A-Z][a-z]+", max_tokens=4) }}

Tags set the rest of the spec: ``{% sampling steps=16, temperature=0.3 %}``,
``{% guidance cfg_scale=1.5 %}``, and ``{% prompt %} ... {% endprompt %}`` marks the anchors
inside as prompt text for classifier-free guidance (``{% prompt false %}`` as template text).

Rendering happens in Jinja2's immutable sandbox with ``StrictUndefined`` and is bounded: a time
budget (checked on every line the template runs), an output budget, no ``**`` or ``*`` results
beyond that budget, ``range()`` of at most 100,000 items, and Python's recursion limit. Every
failure is a :class:`~dlmprompt.errors.TemplateError` naming the template, the line and what to
change. A slot's text does not exist while the template renders: later text can refer to it
only as another slot, never by value.

Imports only the spec and the error tree (no torch), beside Jinja2 and PyYAML.
"""

from __future__ import annotations

import contextvars
import functools
import math
import re
import secrets
import sys
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from jinja2.utils import Namespace

from dlmprompt.errors import SpecError, TemplateError
from dlmprompt.spec import Guidance, Prompt, Sampling, Text
from dlmprompt.spec import slot as make_slot

TIME_BUDGET_S = 2.0  # wall time one render may take
MAX_OUTPUT_CHARS = 1_000_000  # rendered text, and any string or list built on the way
SLOT_ARGUMENTS = (
    "regex",
    "choice",
    "schema",
    "grammar",
    "max_tokens",
    "tokens",
    "indent",
    "lenient",
    "additional_properties",
    "grounded",
)
TYPES = ("string", "integer", "number", "boolean", "array", "object", "schema", "any")
_HEADER = re.compile(r"\A\s*\{#-?[ \t]*---[ \t]*\n(.*?)\n[ \t]*---[ \t]*-?#\}[ \t]*\n?", re.S)
_HEADER_KEYS = {"description", "variables", "example"}
_WIDE_STR_METHODS = {"center", "ljust", "rjust", "zfill", "expandtabs"}
_PERCENT_WIDTH = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|[0-9]+)?(?:\.(\*|[0-9]+))?")
_FORMAT_SPEC = re.compile(r"\{[^{}:]*:([^{}]*)\}")


@dataclass(frozen=True)
class Variable:
    """A variable a template takes: its name, its type (one of :data:`TYPES`), whether it must be
    given, what it is for, and its default when optional."""

    name: str
    type: str = "any"
    required: bool = True
    description: str = ""
    default: Any = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type, "required": self.required}
        if self.description:
            out["description"] = self.description
        if not self.required:
            out["default"] = self.default
        return out


# ------------------------------------------------------------------------------- one render's state
class _Refusal(Exception):
    """Raised inside a render; :meth:`Template.render` turns it into a TemplateError with the line."""


@dataclass
class _Render:
    template: Template
    nonce: str = field(default_factory=lambda: secrets.token_hex(6))
    slots: list[tuple[Any, int | None]] = field(default_factory=list)
    sampling: dict[str, Any] = field(default_factory=dict)
    guidance: dict[str, Any] = field(default_factory=dict)
    deadline: float = 0.0

    def marker(self, kind: str, index: int) -> str:
        return f"\ue000{self.nonce}:{kind}:{index}\ue001"

    def line(self) -> int | None:
        """The template line running now (from the innermost frame of template code)."""
        frame = sys._getframe(1)
        env = self.template._env
        while frame is not None:
            if frame.f_globals.get("environment") is env and frame.f_code.co_filename:
                tmpl = _template_of(env, frame.f_code.co_filename)
                return tmpl.get_corresponding_lineno(frame.f_lineno) if tmpl is not None else None
            frame = frame.f_back
        return None

    def holds_marker(self, value: Any, depth: int = 0) -> bool:
        if isinstance(value, str):
            return f"\ue000{self.nonce}:" in value
        if depth < 3 and isinstance(value, (list, tuple)):
            return any(self.holds_marker(v, depth + 1) for v in value)
        if depth < 3 and isinstance(value, dict):
            return any(self.holds_marker(v, depth + 1) for v in value.values())
        return False


_STATE: contextvars.ContextVar[_Render] = contextvars.ContextVar("dlmprompt_template_render")


def _template_of(env: jinja2.Environment, filename: str) -> jinja2.Template | None:
    return getattr(env, "compiled", {}).get(filename)


def _slot(*args: Any, **kwargs: Any) -> str:
    st = _STATE.get()
    if len(args) != 1 or not isinstance(args[0], str):
        raise _Refusal('slot() takes the slot\'s name first, as a string: slot("name", regex=..., max_tokens=...)')
    name = args[0]
    unknown = sorted(set(kwargs) - set(SLOT_ARGUMENTS))
    if unknown:
        raise _Refusal(
            f"slot({name!r}) has no argument {', '.join(unknown)}; its arguments are {', '.join(SLOT_ARGUMENTS)}"
        )
    line = st.line()
    for other, other_line in st.slots:
        if other.name == name:
            where = f" (first on line {other_line})" if other_line else ""
            raise _Refusal(
                f"slot name {name!r} is used twice{where}; slot names must be unique: inside a loop, "
                f"name it per item, e.g. slot({name!r} ~ '_' ~ loop.index, ...)"
            )
    if isinstance(kwargs.get("choice"), (list, tuple)):
        kwargs["choice"] = [str(c) for c in kwargs["choice"]]
    try:
        made = make_slot(name, **kwargs)
    except SpecError as exc:
        raise _Refusal(str(exc)) from None
    st.slots.append((made, line))
    return st.marker("s", len(st.slots) - 1)


def _fail(message: Any) -> str:
    """``{{ fail("...") }}``: a template refuses its variables with a message of its own."""
    raise _Refusal(str(message))


def _range(*args: Any) -> range:
    n = len(range(*args))
    if n > 100_000:
        raise _Refusal(f"range() of {n:,} items; at most 100,000 in a template")
    return range(*args)


class _Namespace(Namespace):
    """``namespace()`` whose values stay within the output budget (doubling a string in a loop
    cannot eat the memory)."""

    def __setitem__(self, name: str, value: Any) -> None:
        if isinstance(value, (str, list, tuple, dict)) and len(value) > MAX_OUTPUT_CHARS:
            raise _Refusal(f"a namespace value of {len(value):,} items; at most {MAX_OUTPUT_CHARS:,}")
        super().__setitem__(name, value)


# ------------------------------------------------------------------------------- the environment
class _Codegen(CodeGenerator):
    """``a ~ b`` through :meth:`_Env.checked_join`, so concatenation stays within the budget."""

    def visit_Concat(self, node: nodes.Concat, frame: Any) -> None:
        self.write("environment.checked_join((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _Env(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "%"})
    code_generator_class = _Codegen

    def checked_join(self, parts: tuple[Any, ...]) -> str:
        texts = [str(x) for x in parts]
        if sum(len(t) for t in texts) > MAX_OUTPUT_CHARS:
            raise _Refusal(f"a concatenation (~) of more than {MAX_OUTPUT_CHARS:,} characters")
        return "".join(texts)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(left, int) and isinstance(right, int):
            if right > 0 and abs(left) > 1 and abs(left).bit_length() * right > 4 * MAX_OUTPUT_CHARS:
                raise _Refusal(f"{left} ** {right} is too large for a template")
        if operator == "*":
            seq, n = (left, right) if isinstance(right, int) else (right, left)
            if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and _size(seq) * n > MAX_OUTPUT_CHARS:
                raise _Refusal(f"repeating {len(seq)} items {n:,} times passes the output budget")
            if isinstance(left, int) and isinstance(right, int):
                if left.bit_length() + right.bit_length() > 4 * MAX_OUTPUT_CHARS:
                    raise _Refusal("a product too large for a template")
        if operator == "%" and isinstance(left, str):
            _check_widths(left)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        name = getattr(__obj, "__name__", "")
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str) and name in _WIDE_STR_METHODS:
            if any(isinstance(a, int) and a > MAX_OUTPUT_CHARS for a in (*args, *kwargs.values())):
                raise _Refusal(f"str.{name}() wider than {MAX_OUTPUT_CHARS:,} characters")
        if isinstance(owner, str) and name == "replace" and len(args) >= 2 and isinstance(args[1], str):
            old, new = str(args[0]), args[1]
            grow = owner.count(old) * max(len(new) - len(old), 0) if old else (len(owner) + 1) * len(new)
            if len(owner) + grow > MAX_OUTPUT_CHARS:
                raise _Refusal(f"str.replace() would build more than {MAX_OUTPUT_CHARS:,} characters")
        if isinstance(owner, str) and name == "join" and args and isinstance(args[0], (list, tuple)):
            if _size(args[0]) + len(owner) * len(args[0]) > MAX_OUTPUT_CHARS:
                raise _Refusal(f"str.join() would build more than {MAX_OUTPUT_CHARS:,} characters")
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Any:
        wrapped = super().wrap_str_format(value)  # str.format / format_map of a string, else None
        if wrapped is None:
            return None

        @functools.wraps(wrapped)
        def checked(*args: Any, **kwargs: Any) -> str:
            _check_widths(value.__self__)
            return wrapped(*args, **kwargs)

        return checked


def _size(value: Any) -> int:
    """Characters a sequence stands for: a string's length, or the total of a list's items."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, (list, tuple)):
        return sum(len(x) if isinstance(x, str) else 1 for x in value) + len(value)
    return 1


def _check_widths(fmt: str) -> None:
    """Refuse printf / format widths and precisions past the output budget (``*`` widths too)."""
    numbers = [g for m in _PERCENT_WIDTH.finditer(fmt) for g in m.groups() if g is not None]
    numbers += [n for m in _FORMAT_SPEC.finditer(fmt) for n in re.findall(r"[0-9]+|\*", m.group(1))]
    if re.search(r"\{[^{}]*:[^{}]*\{", fmt):
        numbers.append("*")  # a width given by another field: {0:>{1}}
    for g in numbers:
        if g == "*" or int(g) > MAX_OUTPUT_CHARS:
            raise _Refusal(f"a format width of {g} in {fmt[:40]!r}; widths are at most {MAX_OUTPUT_CHARS:,}")
    if sum(int(g) for g in numbers) > MAX_OUTPUT_CHARS:
        raise _Refusal(f"the format widths in {fmt[:40]!r} add up past {MAX_OUTPUT_CHARS:,} characters")


def _guard(name: str, fn: Any) -> Any:
    """A filter that refuses slots (a slot's marker must reach the output as it is) and widths past
    the output budget. It takes the render context, so Jinja never runs it at compile time."""
    wants = getattr(getattr(fn, "jinja_pass_arg", None), "name", None)

    @jinja2.pass_context
    def guarded(context: Any, *args: Any, **kwargs: Any) -> Any:
        st = _STATE.get(None)
        if st is not None:
            if any(st.holds_marker(a) for a in (*args, *kwargs.values())):
                raise _Refusal(
                    f"a slot passes through the filter |{name}; a slot must reach the text as it is: put the "
                    "filter on the text around it, or say what the slot may hold with its constraint (regex=, choice=)"
                )
            if name in ("join", "string") and args and isinstance(args[0], (list, tuple)):
                sep = args[1] if len(args) > 1 else kwargs.get("d", "")
                if 2 * _size(args[0]) + len(str(sep)) * len(args[0]) > MAX_OUTPUT_CHARS:
                    raise _Refusal(f"|{name} would build more than {MAX_OUTPUT_CHARS:,} characters")
            if name in ("center", "indent", "truncate", "wordwrap") and any(
                isinstance(a, int) and a > MAX_OUTPUT_CHARS for a in (*args[1:], *kwargs.values())
            ):
                raise _Refusal(f"|{name} wider than {MAX_OUTPUT_CHARS:,} characters")
            if name == "format" and args and isinstance(args[0], str):
                _check_widths(args[0])
        if wants == "context":
            return fn(context, *args, **kwargs)
        if wants == "eval_context":
            return fn(context.eval_ctx, *args, **kwargs)
        if wants == "environment":
            return fn(context.environment, *args, **kwargs)
        return fn(*args, **kwargs)

    guarded.__name__ = getattr(fn, "__name__", name)
    guarded.__doc__ = getattr(fn, "__doc__", None)
    return guarded


class _Tags(Extension):
    """``{% sampling k=v, ... %}``, ``{% guidance k=v, ... %}`` and ``{% prompt [flag] %}...{% endprompt %}``."""

    tags: ClassVar[set[str]] = {"sampling", "guidance", "prompt"}

    def parse(self, parser: Any) -> Any:
        tag = next(parser.stream)
        if tag.value == "prompt":
            flag = nodes.Const(True) if parser.stream.current.type == "block_end" else parser.parse_expression()
            body = parser.parse_statements(("name:endprompt",), drop_needle=True)
            return nodes.CallBlock(self.call_method("_prompt", [flag]), [], [], body).set_lineno(tag.lineno)
        pairs = []
        while parser.stream.current.type != "block_end":
            if pairs:
                parser.stream.skip_if("comma")
            key = parser.stream.expect("name")
            parser.stream.expect("assign")
            pairs.append(nodes.Pair(nodes.Const(key.value), parser.parse_expression()))
        call = self.call_method("_settings", [nodes.Const(tag.value), nodes.Dict(pairs)])
        return nodes.Output([call]).set_lineno(tag.lineno)

    @staticmethod
    def _settings(kind: str, values: dict[str, Any]) -> str:
        st = _STATE.get()
        model = Sampling if kind == "sampling" else Guidance
        unknown = sorted(set(values) - set(model.model_fields))
        if unknown:
            raise _Refusal(
                f"{{% {kind} %}} has no option {', '.join(unknown)}; options are {sorted(model.model_fields)}"
            )
        (st.sampling if kind == "sampling" else st.guidance).update(values)
        return ""

    @staticmethod
    def _prompt(flag: Any, caller: Any) -> str:
        st = _STATE.get()
        if not isinstance(flag, bool):
            raise _Refusal(f"{{% prompt %}} takes true or false; got {flag!r}")
        return st.marker("p", int(flag)) + caller() + st.marker("q", 0)


def _environment(loader: jinja2.BaseLoader | None) -> _Env:
    env = _Env(
        loader=loader,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[_Tags],
    )
    env.filters = {k: _guard(k, f) for k, f in env.filters.items()}
    env.globals.update(slot=_slot, fail=_fail, range=_range, namespace=_Namespace)
    env.compiled = {}  # type: ignore[attr-defined]  # code file name -> template, for line numbers
    return env


class _ShippedLoader(jinja2.BaseLoader):
    def get_source(self, environment: Any, name: str) -> tuple[str, str, Any]:
        path = resources.files("dlmprompt.templates") / name
        if not path.is_file():
            raise jinja2.TemplateNotFound(name)
        return path.read_text(encoding="utf-8"), f"templates/{name}", lambda: True


# ------------------------------------------------------------------------------- Template
class Template:
    """A prompt template: Jinja2 source with ``slot(...)`` calls, and what it takes.

    Build one with :meth:`from_string`, :meth:`from_file` or :func:`template` (a shipped one);
    :meth:`render` gives a :class:`~dlmprompt.spec.Prompt`. ``variables`` come from the header
    (a ``{#--- ... ---#}`` comment of YAML at the top: ``description``, ``variables``,
    ``example``), else from the names the source uses.
    """

    def __init__(self, source: str, *, name: str = "<string>", loader: jinja2.BaseLoader | None = None) -> None:
        if not isinstance(source, str):
            raise TemplateError(f"a template's source is text; got {type(source).__name__}", template=name)
        self.name = name
        self.source = source
        self._first_use: dict[str, int] = {}  # where an undeclared variable is first used
        self._env = _environment(loader)
        header = _HEADER.match(source)
        meta = self._header(header.group(1)) if header else {}
        self.description: str = str(meta.get("description", "")).strip()
        self.example: dict[str, Any] = dict(meta.get("example") or {})
        try:
            self._template = self._env.from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"does not parse: {exc.message}", template=name, line=exc.lineno) from None
        except RecursionError:
            raise TemplateError("nests too deep to parse (thousands of brackets?)", template=name) from None
        code_file = self._template.root_render_func.__code__.co_filename  # type: ignore[attr-defined]
        self._env.compiled[code_file] = self._template  # type: ignore[attr-defined]
        if "variables" in meta:
            self.variables = tuple(self._variable(k, v) for k, v in (meta["variables"] or {}).items())
        else:
            from jinja2 import meta as jmeta

            try:
                tree = self._env.parse(source)
            except RecursionError:  # pragma: no cover - from_string above fails first
                raise TemplateError("nests too deep to parse", template=name) from None
            names = jmeta.find_undeclared_variables(tree) - set(self._env.globals)
            self.variables = tuple(Variable(n) for n in sorted(names))
            for node in tree.find_all(nodes.Name):
                self._first_use.setdefault(node.name, node.lineno)

    # ---- building
    @classmethod
    def from_string(cls, source: str, *, name: str = "<string>") -> Template:
        """A template from source text (``{% include %}`` and ``{% import %}`` are not available)."""
        return cls(source, name=name)

    @classmethod
    def from_file(cls, path: str | Path) -> Template:
        """A template from a file; ``{% include %}`` / ``{% import %}`` find files beside it."""
        p = Path(path)
        try:
            source = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise TemplateError(f"cannot read the template file: {exc.strerror or exc}", template=str(p)) from None
        except UnicodeDecodeError:
            raise TemplateError("the template file is not UTF-8 text", template=str(p)) from None
        return cls(source, name=str(p), loader=jinja2.FileSystemLoader(str(p.parent)))

    def _header(self, text: str) -> dict[str, Any]:
        import yaml

        try:
            meta = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 2 if mark is not None else None
            raise TemplateError(f"its header is not valid YAML: {exc}", template=self.name, line=line) from None
        if not isinstance(meta, dict) or set(meta) - _HEADER_KEYS:
            extra = sorted(set(meta) - _HEADER_KEYS) if isinstance(meta, dict) else "not a mapping"
            raise TemplateError(
                f"its header takes the keys {sorted(_HEADER_KEYS)}; got {extra}", template=self.name, line=1
            )
        if meta.get("variables") is not None and not isinstance(meta["variables"], dict):
            raise TemplateError("header 'variables' maps each name to its type or details", template=self.name, line=1)
        if meta.get("example") is not None and not isinstance(meta["example"], dict):
            raise TemplateError("header 'example' maps variable names to values", template=self.name, line=1)
        return meta

    def _variable(self, name: str, spec: Any) -> Variable:
        if isinstance(spec, str):
            spec = {"type": spec}
        if not isinstance(spec, dict) or set(spec) - {"type", "required", "description", "default"}:
            raise TemplateError(
                f"variable {name!r} in the header: give a type, or a mapping of type, required, description, default",
                template=self.name,
                line=1,
            )
        kind = spec.get("type", "any")
        if kind not in TYPES:
            raise TemplateError(
                f"variable {name!r}: unknown type {kind!r}; types are {list(TYPES)}", template=self.name
            )
        required = bool(spec.get("required", "default" not in spec))
        return Variable(name, kind, required, str(spec.get("description", "")).strip(), spec.get("default"))

    # ---- describing
    def describe(self) -> dict[str, Any]:
        """What a CLI, a server or an agent tool shows: name, description, variables, example."""
        return {
            "name": self.name,
            "description": self.description,
            "variables": [v.as_json() for v in self.variables],
            "example": self.example,
        }

    def __repr__(self) -> str:
        return f"Template({self.name!r}, variables={[v.name for v in self.variables]})"

    # ---- rendering
    def render(self, /, **variables: Any) -> Prompt:
        """The prompt: rendered anchors and the ``slot(...)`` calls, in order."""
        values = self._check_variables(variables)
        st = _Render(self)
        st.deadline = time.monotonic() + TIME_BUDGET_S
        token = _STATE.set(st)
        previous = sys.gettrace()
        sys.settrace(self._tracer(st))
        try:
            chunks, size = [], 0
            for chunk in self._template.generate(**values):
                size += len(chunk)
                if size > MAX_OUTPUT_CHARS:
                    raise _Refusal(f"the rendered text passes {MAX_OUTPUT_CHARS:,} characters")
                chunks.append(chunk)
            text = "".join(chunks)
        except _Refusal as exc:
            raise TemplateError(str(exc), template=self.name, line=_line_of(exc, self._env)) from None
        except SecurityError as exc:
            raise TemplateError(
                f"tried something the sandbox forbids: {exc}", template=self.name, line=_line_of(exc, self._env)
            ) from None
        except jinja2.UndefinedError as exc:
            raise TemplateError(
                f"{exc.message}; pass it as a variable (the template takes {[v.name for v in self.variables]})",
                template=self.name,
                line=_line_of(exc, self._env),
            ) from None
        except jinja2.TemplateNotFound as exc:
            raise TemplateError(f"includes {exc.name!r}, which is not there", template=self.name) from None
        except RecursionError:
            raise TemplateError("recursed too deep: a macro calls itself without end?", template=self.name) from None
        except jinja2.TemplateError as exc:
            raise TemplateError(str(exc), template=self.name, line=_line_of(exc, self._env)) from None
        except (TypeError, ValueError, ArithmeticError, KeyError, IndexError, AttributeError) as exc:
            raise TemplateError(
                f"{type(exc).__name__}: {exc}", template=self.name, line=_line_of(exc, self._env)
            ) from None
        finally:
            sys.settrace(previous)
            _STATE.reset(token)
        return self._assemble(st, text)

    def _tracer(self, st: _Render) -> Any:
        env = self._env

        def local(frame: Any, event: str, arg: Any) -> Any:
            if time.monotonic() > st.deadline:
                raise _Refusal(f"rendering took longer than {TIME_BUDGET_S:g} s")
            return local

        def calls(frame: Any, event: str, arg: Any) -> Any:
            return local if frame.f_globals.get("environment") is env else None

        return calls

    def _check_variables(self, given: dict[str, Any]) -> dict[str, Any]:
        declared = {v.name: v for v in self.variables}
        unknown = sorted(set(given) - set(declared))
        if unknown and declared:
            raise TemplateError(
                f"takes no variable {', '.join(map(repr, unknown))}; its variables are {sorted(declared)}",
                template=self.name,
            )
        missing = [v.name for v in self.variables if v.required and v.name not in given]
        if missing:
            raise TemplateError(
                f"needs the variable(s) {', '.join(map(repr, missing))}: pass "
                + ", ".join(f"{m}=..." for m in missing),
                template=self.name,
                line=self._first_use.get(missing[0]),
            )
        values = {v.name: v.default for v in self.variables if not v.required}
        values.update(given)
        for v in self.variables:
            if v.name in given and not _has_type(given[v.name], v.type):
                raise TemplateError(
                    f"variable {v.name!r} must be {_TYPE_WORDS[v.type]}; got {type(given[v.name]).__name__}",
                    template=self.name,
                )
        return values

    def _assemble(self, st: _Render, text: str) -> Prompt:
        pattern = re.compile(f"\ue000{st.nonce}:([spq]):([0-9]+)\ue001")
        parts: list[Any] = []
        placed: set[int] = set()
        flags: list[bool | None] = [None]
        pos = 0

        def anchor(chunk: str) -> None:
            if f"\ue000{st.nonce[:4]}".lower() in chunk.lower():
                raise TemplateError(
                    "a slot was changed on its way to the text (a filter or a string operation); a slot must "
                    "reach the text as it is",
                    template=self.name,
                )
            if chunk:
                if parts and isinstance(parts[-1], Text) and parts[-1].prompt == flags[-1]:
                    parts[-1] = Text(text=parts[-1].text + chunk, prompt=flags[-1])
                else:
                    parts.append(Text(text=chunk, prompt=flags[-1]))

        for m in pattern.finditer(text):
            anchor(text[pos : m.start()])
            pos = m.end()
            kind, index = m.group(1), int(m.group(2))
            forged = (kind == "s" and index >= len(st.slots)) or (kind == "q" and len(flags) == 1)
            if forged:
                raise TemplateError("the template forged a slot marker (it copied part of one)", template=self.name)
            if kind == "p":
                flags.append(bool(index))
            elif kind == "q":
                flags.pop()
            else:
                made, line = st.slots[index]
                if index in placed:
                    raise TemplateError(
                        f"slot {made.name!r} is placed twice; a slot is one span of the canvas: make another "
                        "slot (with its own name) for the second place",
                        template=self.name,
                        line=line,
                    )
                placed.add(index)
                parts.append(made)
        anchor(text[pos:])
        if len(flags) != 1:
            raise TemplateError("the template forged a slot marker (it copied part of one)", template=self.name)
        for index, (made, line) in enumerate(st.slots):
            if index not in placed:
                raise TemplateError(
                    f"slot {made.name!r} is made but never placed in the text (set to a variable and not printed?)",
                    template=self.name,
                    line=line,
                )
        try:
            return Prompt(*parts, sampling=Sampling(**st.sampling), guidance=Guidance(**st.guidance))
        except SpecError as exc:
            raise TemplateError(str(exc), template=self.name) from None
        except Exception as exc:  # pydantic's ValidationError of a sampling / guidance value
            raise TemplateError(f"bad {{% sampling %}} or {{% guidance %}} value: {exc}", template=self.name) from None


_TYPE_WORDS = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "array": "a list",
    "object": "an object (a dict)",
    "schema": "a JSON Schema (a dict) or a pydantic model class",
    "any": "any value",
}


def _has_type(value: Any, kind: str) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "array":
        return isinstance(value, (list, tuple))
    if kind == "object":
        return isinstance(value, dict)
    if kind == "schema":
        from pydantic import BaseModel

        return isinstance(value, (dict, bool)) or (isinstance(value, type) and issubclass(value, BaseModel))
    return True


def _line_of(exc: BaseException, env: jinja2.Environment) -> int | None:
    """The template line of the innermost template frame in the exception's traceback (Jinja
    rewrites those frames to template lines)."""
    line = getattr(exc, "lineno", None)
    tb = exc.__traceback__
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if name in getattr(env, "compiled", {}) or name.endswith((".jinja", ".j2")):
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


# ------------------------------------------------------------------------------- untrusted source
def _render_child(conn: Any, source: str, name: str, variables: dict[str, Any], budget: int) -> None:
    try:
        import resource

        with open("/proc/self/statm") as f:
            base = int(f.read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (base + budget, base + budget))
    except (OSError, ValueError, ImportError):  # pragma: no cover - not Linux: the time bound stays
        pass
    try:
        prompt = Template(source, name=name).render(**variables)
        conn.send(("ok", prompt.model_dump_json()))
    except TemplateError as exc:
        conn.send(("error", (exc.reason, exc.line)))
    except MemoryError:
        conn.send(("error", (f"rendering needed more than {budget >> 20} MB of memory", None)))
    except BaseException as exc:  # the child reports everything; it is going away
        conn.send(("error", (f"{type(exc).__name__}: {exc}", None)))


def render_isolated(
    source: str,
    variables: dict[str, Any],
    *,
    name: str = "<string>",
    timeout_s: float = 10.0,
    memory_mb: int = 512,
) -> Prompt:
    """Render template source you do not trust (a server's request) in a child process: the
    sandbox's bounds, plus a hard memory limit (``memory_mb`` above the child's start) and a wall
    clock after which the child is killed. Variables must be JSON values."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_render_child, args=(child, source, name, variables, memory_mb << 20), daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(timeout_s):
            raise TemplateError(f"rendering took longer than {timeout_s:g} s and was stopped", template=name)
        try:
            kind, payload = parent.recv()
        except EOFError:
            raise TemplateError("rendering was stopped (its process ended: out of memory?)", template=name) from None
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join(5)
        parent.close()
    if kind == "ok":
        return Prompt.from_json(payload)
    message, line = payload
    raise TemplateError(message, template=name, line=line)


# ------------------------------------------------------------------------------- shipped templates
def template_names() -> list[str]:
    """Names of the shipped task templates (those with a header; the chat templates are not among them)."""
    root = resources.files("dlmprompt.templates")
    out = []
    for p in root.iterdir():
        if p.name.endswith(".jinja") and _HEADER.match(p.read_text(encoding="utf-8")):
            out.append(p.name.removesuffix(".jinja"))
    return sorted(out)


@functools.lru_cache(maxsize=64)
def template(name: str) -> Template:
    """A shipped task template by name (``dlmprompt templates`` lists them)."""
    path = resources.files("dlmprompt.templates") / f"{name}.jinja"
    if not isinstance(name, str) or "/" in name or not path.is_file():
        raise TemplateError(f"no shipped template {name!r}; shipped: {', '.join(template_names())}", template=str(name))
    return Template(path.read_text(encoding="utf-8"), name=name, loader=_ShippedLoader())


def load_template(ref: str, *, folder: str | Path | None = None) -> Template:
    """A template by reference: a file path (ending in ``.jinja`` or existing), a template in
    ``folder``, or a shipped one."""
    if folder is not None:
        base = Path(folder).resolve()
        p = (base / f"{ref}.jinja").resolve()
        if base in p.parents and p.is_file():
            return Template.from_file(p)
    p = Path(ref)
    if ref.endswith((".jinja", ".j2")) or p.is_file():
        if not p.is_file():
            raise TemplateError("no such template file", template=ref)
        return Template.from_file(p)
    return template(ref)


__all__ = ["Template", "TemplateError", "Variable", "load_template", "render_isolated", "template", "template_names"]
