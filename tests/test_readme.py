"""Every Python block of the README runs as written, in order, as a reader would paste them into
one session (later blocks use what earlier ones defined)."""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_python_block_of_the_readme_runs() -> None:
    blocks = re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(), re.S | re.M)
    assert len(blocks) >= 10
    namespace: dict = {"__name__": "readme"}
    here = os.getcwd()
    os.chdir(ROOT)  # the README's paths are relative to the repository
    try:
        for i, block in enumerate(blocks):
            try:
                exec(compile(block, f"README.md python block {i + 1}", "exec", dont_inherit=True), namespace)
            except Exception as exc:
                raise AssertionError(
                    f"README python block {i + 1} fails: {type(exc).__name__}: {exc}\n{block}"
                ) from exc
    finally:
        os.chdir(here)
