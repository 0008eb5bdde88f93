"""Real transformers model classes built from configs (nothing downloaded), loaded by path."""

from __future__ import annotations

import pytest
import torch
from helpers import MIXED_PROMPT, check_result

import dlmprompt
from dlmprompt import BackendError, Prompt, compile, generate, slot


@pytest.fixture(scope="module")
def tiny_modernbert(tmp_path_factory):
    from tokenizers import Tokenizer as HFTok
    from tokenizers import decoders, models, pre_tokenizers, trainers
    from transformers import ModernBertConfig, ModernBertForMaskedLM, PreTrainedTokenizerFast

    tok = HFTok(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["[MASK]", "[PAD]", "[EOS]", "[BOS]"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(["Name: Ada, age 36. Color: red or blue?"] * 20, trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, mask_token="[MASK]", pad_token="[PAD]", eos_token="[EOS]", bos_token="[BOS]"
    )
    cfg = ModernBertConfig(
        vocab_size=336,  # larger than the tokenizer, as real checkpoints often are
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        pad_token_id=1,
        bos_token_id=3,
        eos_token_id=2,
        cls_token_id=3,
        sep_token_id=2,
    )
    torch.manual_seed(0)
    model = ModernBertForMaskedLM(cfg)
    path = tmp_path_factory.mktemp("modernbert")
    model.save_pretrained(path)
    hf.save_pretrained(path)
    return path


def test_masked_lm_loads_by_path_and_generates_constrained(tiny_modernbert) -> None:
    den = dlmprompt.load(tiny_modernbert)
    assert den.mask_id == den.tokenizer.mask_id == 0
    p = MIXED_PROMPT
    progs = [compile(p.with_sampling(steps=s, temperature=t), den.tokenizer) for s, t in [(4, 0.0), (14, 1.0)]]
    results = generate(den, progs, generator=torch.Generator().manual_seed(0))
    for prog, res in zip(progs, results):
        check_result(prog, res)
    # unconstrained: still never an anchor changed, never a mask left
    free = compile(p, den.tokenizer, constraints=False)
    res = generate(den, free, generator=torch.Generator().manual_seed(0))
    assert (res.canvas[free.layout.slot_of < 0] == free.layout.canvas[free.layout.slot_of < 0]).all()
    assert not (res.canvas == den.mask_id).any()


def test_from_transformers_wraps_objects(tiny_modernbert) -> None:
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    model = AutoModelForMaskedLM.from_pretrained(tiny_modernbert)
    den = dlmprompt.from_transformers(model, AutoTokenizer.from_pretrained(tiny_modernbert))
    res = generate(den, Prompt("x", slot("a", choice=["red", "blue"], max_tokens=2)))
    assert res["a"] in {"red", "blue"}


def test_unknown_or_missing_models_are_refused(tmp_path) -> None:
    with pytest.raises(BackendError, match="not a checkpoint folder"):
        dlmprompt.load(tmp_path)
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_embd=8, n_head=1).save_pretrained(tmp_path)
    with pytest.raises(BackendError, match="supported: masked LMs"):
        dlmprompt.load(tmp_path)
