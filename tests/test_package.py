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
    assert "dlmprompt/templates/extraction.jinja" in names
    for f in ("config.json", "model.safetensors", "tokenizer.json"):
        assert f"dlmprompt/default_model/{f}" in names
