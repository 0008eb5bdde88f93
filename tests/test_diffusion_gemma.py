"""DiffusionGemma (uniform-noise block diffusion) through transformers' own model class: a tiny
random DiffusionGemmaForBlockDiffusion saved with save_pretrained and loaded by path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import MIXED_PROMPT, build_tiny_diffusion_gemma, check_result

import dlmprompt
from dlmprompt import BackendError, Prompt, compile, generate, sample, slot

pytest.importorskip("transformers.models.diffusion_gemma")


@pytest.fixture(scope="module")
def tiny_dg(tmp_path_factory):
    return build_tiny_diffusion_gemma(tmp_path_factory.mktemp("diffusion_gemma"))


@pytest.fixture(scope="module")
def den(tiny_dg):
    from dlmprompt.models.blockdiffusion import DiffusionGemmaDenoiser

    d = dlmprompt.load(tiny_dg)
    assert isinstance(d, DiffusionGemmaDenoiser) and d.canvas_length == 8
    # no mask token in this tokenizer: a spare special token marks slot positions
    assert d.tokenizer.mask_id == 3 and d.tokenizer.pad_id == 0
    return d


def test_anchors_regex_choice_and_free_text_hold_in_batches(den) -> None:
    progs = [compile(MIXED_PROMPT.with_sampling(steps=s), den.tokenizer) for s in (3, 6)]
    other = compile(
        Prompt("A longer prompt here. Name: ") + slot("name", regex="[A-Z][a-z]+", max_tokens=5), den.tokenizer
    )
    results = generate(den, [*progs, other], generator=torch.Generator().manual_seed(0))
    for prog, res in zip([*progs, other], results):
        check_result(prog, res)
        assert res.steps >= 1 and res.forward_passes == res.steps
    # a batch gives what each program gives alone with its own generator
    gens = [torch.Generator().manual_seed(5) for _ in range(2)]
    batch = generate(den, progs, generator=gens)
    alone = [generate(den, [p], generator=[torch.Generator().manual_seed(5)])[0] for p in progs]
    for x, y in zip(batch, alone):
        assert np.array_equal(x.canvas, y.canvas)


def test_constraints_hold_over_many_seeds_and_block_boundaries(den) -> None:
    # slots that straddle the 8-position blocks: values committed in one block must stay completable
    p = (
        Prompt("Q")
        + slot("num", regex="[0-9]{2,4}(\\.[0-9]{1,3})?", max_tokens=9)
        + " / "
        + slot("word", choice=["red", "blue", "Ada"], max_tokens=3)
        + slot("tail", regex="(ab|a )+", max_tokens=10)
        + slot("digits", regex="[0-9]*", tokens=4)  # a one-state automaton: still only digit tokens
    ).with_sampling(steps=3)
    prog = compile(p, den.tokenizer)
    for seed in range(12):
        check_result(prog, generate(den, prog, generator=torch.Generator().manual_seed(seed)))


@pytest.mark.parametrize("new_tokens", [16, 11])
def test_unconstrained_output_equals_transformers_generate(den, new_tokens) -> None:
    """Without constraints our loop is DiffusionGemma's own: the same tokens as model.generate
    from the same seed (the row's generator replays the global RNG stream generate draws from)."""
    p = (Prompt("Name: Ada") + slot("out", tokens=new_tokens)).with_sampling(steps=5)
    prog = compile(p, den.tokenizer, constraints=False)
    start = int(np.nonzero(prog.layout.slot_of >= 0)[0][0])
    prefix = torch.from_numpy(prog.layout.canvas[:start])[None]
    for seed in range(3):
        ours = generate(den, [prog], generator=[torch.Generator().manual_seed(seed)])[0]
        torch.manual_seed(seed)
        ref = den.model.generate(prefix, max_new_tokens=new_tokens, max_denoising_steps=5).sequences[0]
        assert ours.canvas.tolist() == ref[: len(ours.canvas)].tolist()


def test_steps_stream_and_special_cases_are_refused(den) -> None:
    prog = compile(
        (Prompt("x") + slot("a", choice=["red", "blue"], max_tokens=2)).with_sampling(steps=2), den.tokenizer
    )
    steps = list(sample(den, prog, generator=torch.Generator().manual_seed(0)))
    assert steps and all(s.canvas.shape == prog.layout.canvas.shape for s in steps)
    with pytest.raises(BackendError, match="classifier-free guidance"):
        generate(den, compile(Prompt("x") + slot("g", max_tokens=2), den.tokenizer, cfg_scale=1.0))
    with pytest.raises(BackendError, match="own loop"):
        den(torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 4, dtype=torch.bool))
    with pytest.raises(BackendError, match="remask= and strategy='structure_first'"):
        generate(den, (Prompt("x") + slot("a", max_tokens=2)).with_sampling(remask=True))
    # adaptive length gives way to its fixed blocks: the same canvas as fixed length
    long = (Prompt("x") + slot("t", max_tokens=40)).with_sampling(steps=2)
    fixed = generate(den, long, generator=torch.Generator().manual_seed(0))
    adaptive = generate(den, long.with_sampling(length="adaptive"), generator=torch.Generator().manual_seed(0))
    assert np.array_equal(fixed.canvas, adaptive.canvas)


def test_the_batching_server_serves_it(den) -> None:
    """``dlmprompt serve`` drives DiffusionGemma's own loop, one step per engine iteration for
    each request in flight: answers equal ``generate`` with the same seed, also when requests
    overlap, and a prompt the model refuses fails alone with its reason."""
    import threading

    from fastapi.testclient import TestClient

    from dlmprompt.serving.server import create_app

    prompt = MIXED_PROMPT.with_sampling(steps=4)
    with TestClient(create_app(den, compile_workers=0)) as client:
        out: dict[int, dict] = {}

        def ask(seed: int) -> None:
            body = {"prompt": prompt.model_dump(mode="json", by_alias=True), "seed": seed}
            out[seed] = client.post("/v1/generate", json=body).json()

        threads = [threading.Thread(target=ask, args=(s,)) for s in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        for seed in range(3):
            alone = generate(den, compile(prompt, den.tokenizer), generator=torch.Generator().manual_seed(seed))
            assert out[seed]["text"] == alone.text, out[seed]
        remask = (Prompt("x = ") + slot("e", max_tokens=3)).with_sampling(remask=True)
        bad = client.post("/v1/generate", json={"prompt": remask.model_dump(mode="json", by_alias=True)})
        assert bad.status_code >= 400 and "remask=" in bad.text


def test_a_row_without_slots_in_a_block_draws_and_counts_nothing_there(den) -> None:
    """Two layouts of one length: the first has only anchors after its first block, the second
    a slot there. In a batch the first row must give what it gives alone: same tokens, same
    step count (it is not denoised, and draws nothing, in blocks without its slots)."""
    tail = " and then some more plain words in here"
    k = len(den.tokenizer.encode(tail))
    short = Prompt("Q") + slot("a", regex="[0-9]*", tokens=4) + tail
    long = Prompt("Q") + slot("a", regex="[0-9]*", tokens=4) + slot("m", tokens=k)
    progs = [compile(q.with_sampling(steps=4), den.tokenizer) for q in (short, long)]
    assert len(progs[0].layout.canvas) == len(progs[1].layout.canvas) and k > 8
    batch = generate(den, progs, generator=[torch.Generator().manual_seed(s) for s in (21, 22)])
    alone = [generate(den, [q], generator=[torch.Generator().manual_seed(s)])[0] for q, s in zip(progs, (21, 22))]
    assert alone[0].steps < alone[1].steps
    for x, y, prog in zip(batch, alone, progs):
        check_result(prog, x)
        assert np.array_equal(x.canvas, y.canvas) and x.steps == y.steps and x.forward_passes == y.forward_passes


def test_grammar_slots_and_context_free_json_across_blocks(den) -> None:
    """A Lark grammar slot and a JSON value on the context-free span, both longer than one
    8-position block: each block's output is a walk that keeps the text a prefix of a sentence
    closing within the slot, so every output parses (lark) and validates (jsonschema)."""
    import json

    import jsonschema
    import lark

    arith = 'start: expr\nexpr: term (("+" | "-") term)*\nterm: NUMBER | "(" expr ")"\nNUMBER: /[0-9]+/\n'
    # a recursive schema: no template, the whole value is one context-free span
    tree = {
        "type": "object",
        "properties": {"v": {"type": "integer"}, "kids": {"type": "array", "items": {"$ref": "#"}, "maxItems": 2}},
        "required": ["v"],
        "additionalProperties": False,
    }
    prompt = (
        Prompt("Q: ")
        + slot("expr", grammar=arith, max_tokens=14)
        + " T: "
        + slot("tree", schema=tree, max_tokens=6)
        + " ok"
    ).with_sampling(steps=3)
    prog = compile(prompt, den.tokenizer)
    assert any(s.grammar is not None for s in prog.slots if s.name.startswith("tree"))
    parser = lark.Lark(arith)
    for seed in range(6):
        res = generate(den, prog, generator=torch.Generator().manual_seed(seed))
        check_result(prog, res)
        parser.parse(res["expr"])
        jsonschema.validate(json.loads(res["tree"]), tree)
