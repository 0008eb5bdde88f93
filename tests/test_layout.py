"""The package's layout keeps its layers: imports point only downward, no module takes another's
private names, there is no import cycle, and no module outgrows 800 lines."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "dlmprompt"

# the layers of the README's "Layout" section, lowest first; a module may import its own layer
# and the layers below it (dlmprompt itself is the facade: it may import everything lazily)
LAYERS = [
    ("dlmprompt.errors",),
    ("dlmprompt.tokenizer", "dlmprompt.spec", "dlmprompt.denoiser"),
    ("dlmprompt.constraints", "dlmprompt.guidance", "dlmprompt.templating", "dlmprompt.prompt_template"),
    ("dlmprompt.compiler",),
    ("dlmprompt.sampling", "dlmprompt.toolcalls"),
    ("dlmprompt.models",),
    ("dlmprompt.serving",),
    ("dlmprompt.loading", "dlmprompt.integrations", "dlmprompt.testing"),
    ("dlmprompt.cli", "dlmprompt.__main__", "dlmprompt"),
]


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = list(p.relative_to(ROOT).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (p, is_pkg)
    return out


MODULES = _modules()


def _layer(module: str) -> int:
    best = None
    for rank, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and (best is None or len(name) > best[1]):
                best = (rank, len(name))
    assert best is not None, f"{module} is in no layer; add it to LAYERS and the README's Layout section"
    return best[0]


def _imports(module: str) -> list[tuple[str, str, int]]:
    """(imported module, imported name or '', line) for every import of a dlmprompt module, lazy
    imports inside functions included."""
    path, is_pkg = MODULES[module]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_pkg else module.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not (target == "dlmprompt" or target.startswith("dlmprompt.")):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.append((sub, "", node.lineno) if sub in MODULES else (target, alias.name, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, "", node.lineno) for a in node.names if a.name.split(".")[0] == "dlmprompt"]
    return found


def test_every_layer_imports() -> None:
    for name in ("constraints", "constraints.jsonschema", "sampling", "models", "serving", "integrations"):
        mod = importlib.import_module(f"dlmprompt.{name}")
        assert mod.__doc__ and "import" in mod.__doc__.lower(), (
            f"dlmprompt.{name} needs a docstring saying what it may import"
        )


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_and_stay_public(module: str) -> None:
    own = _layer(module)
    for target, name, line in _imports(module):
        if target == "dlmprompt" and module != "dlmprompt":
            # the facade: only the top layer may use it
            assert own == len(LAYERS) - 1 or name in {"__version__"}, (
                f"{module}:{line} imports {name or 'dlmprompt'} from the package facade; import it from its module"
            )
            continue
        assert _layer(target) <= own, f"{module}:{line} imports {target}, a higher layer"
        leaf = name or target.rsplit(".", 1)[-1]
        assert not leaf.startswith("_") or leaf.startswith("__"), f"{module}:{line} imports the private {leaf}"


def test_no_import_cycles() -> None:
    graph = {m: {t for t, _, _ in _imports(m) if t in MODULES and t != m} for m in MODULES}
    state: dict[str, int] = {}

    def visit(m: str, trail: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycle = [*trail[trail.index(t) :], t] if t in trail else [m, t]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t, [*trail, t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_no_module_over_800_lines() -> None:
    long = {str(p.relative_to(ROOT)): n for p, _ in MODULES.values() if (n := len(p.read_text().splitlines())) > 800}
    assert not long, f"split these modules: {long}"
