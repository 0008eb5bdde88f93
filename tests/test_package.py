from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from dlmprompt.templating import render, template_names

ROOT = Path(__file__).resolve().parents[1]


def test_templates_render_in_a_sandbox() -> None:
    assert "extraction" in template_names()
    assert "Document:\nAda was born in 1815." in render("extraction", document="Ada was born in 1815.")
    from jinja2.exceptions import SecurityError

    from dlmprompt import SpecError

    with pytest.raises(SpecError, match="no template"):
        render("nope")
    from dlmprompt.templating import _ENV

    with pytest.raises(SecurityError):
        _ENV.from_string("{{ x.__class__.__mro__ }}").render(x=1) and _ENV.from_string(
            "{{ ''.__class__.__subclasses__() }}"
        ).render()


def test_wheel_ships_templates_and_py_typed(tmp_path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    wheel = next(tmp_path.glob("dlmprompt-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "dlmprompt/py.typed" in names
    # every module of the source tree, every shipped template (mapped from templates/ at the top of
    # the repository) and the embedded model's files are inside
    for f in (ROOT / "dlmprompt").rglob("*.py"):
        assert f.relative_to(ROOT).as_posix() in names, f
    templates = sorted((ROOT / "templates").glob("*.jinja"))
    assert templates
    for f in templates:
        assert f"dlmprompt/templates/{f.name}" in names, f.name
    for f in ("config.json", "model.safetensors", "tokenizer.json"):
        assert f"dlmprompt/models/default_model/{f}" in names
    for f in ("index.html", "playground.js", "playground.css"):  # the playground page (GET /)
        assert f"dlmprompt/serving/static/{f}" in names, f
    # installed from the wheel alone, the package finds its templates and model through importlib.resources
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)], check=True
    )
    probe = (
        "import dlmprompt, sys; from dlmprompt.templating import template_names, render; "
        "from dlmprompt.models.backends import default_model_path; "
        "print(dlmprompt.__file__); print(default_model_path()); print(','.join(template_names())); "
        "print(render('extraction', document='Ada.').count('Ada.'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    where, model, names_line, rendered = out.stdout.split("\n")[:4]
    assert where.startswith(str(target)) and model.startswith(str(target))
    assert set(names_line.split(",")) == {f.stem for f in templates}
    assert rendered == "1"
