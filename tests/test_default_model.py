"""The embedded default model: shipped in the package, loaded like any checkpoint; and the
training script that makes it, run for a few steps on a tiny corpus."""

from __future__ import annotations

import torch
from helpers import check_result

import dlmprompt
from dlmprompt import compile, generate
from dlmprompt.models.backends import default_model_path
from dlmprompt.models.records import FAMILIES, extraction_prompt


def test_embedded_model_ships_in_the_package_and_loads() -> None:
    path = default_model_path()
    files = {p.name: p.stat().st_size for p in path.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(files)
    assert sum(files.values()) < 40 * 2**20
    den = dlmprompt.load()
    assert den.tokenizer.mask_id is not None and den.tokenizer.pad_id is not None
    progs = [
        compile(extraction_prompt(f, "Meet Ada Lovelace, 36, from London (email: ada@example.org)."), den.tokenizer)
        for f in FAMILIES
    ]
    for prog, res in zip(progs, generate(den, progs, generator=torch.Generator().manual_seed(0))):
        check_result(prog, res)


def test_training_script_runs_and_resumes(tmp_path) -> None:
    from dlmprompt.models.train import train_default

    log = tmp_path / "log.txt"
    out = train_default(
        tmp_path / "run", max_steps=2, batch_size=4, n_records=300, n_code=10, save_every=1, log_file=log
    )
    assert (out / "model.safetensors").is_file()
    train_default(tmp_path / "run", max_steps=3, batch_size=4, n_records=300, n_code=10, log_file=log)
    text = log.read_text()
    assert "resumed from step 2" in text and "step 3/3 loss" in text
    den = dlmprompt.load(out)
    prog = compile(extraction_prompt("order", "Order ORD-123456 for Ann Lee: 3 items, status shipped."), den.tokenizer)
    check_result(prog, generate(den, prog, generator=torch.Generator().manual_seed(0)))


def test_corpus_is_reproducible_and_held_out_differs() -> None:
    from dlmprompt.models.train import make_records

    a, b, c = make_records(20, 0), make_records(20, 0), make_records(20, 1)
    assert a == b and a != c
