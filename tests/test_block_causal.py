"""Block-causal block diffusion (LLaDA2.x-style) as users load it: model code shipped with the
checkpoint (``trust_remote_code``, ``AutoModelForCausalLM``), written here as a tiny random model
with the LLaDA2 forward interface (4D additive attention mask, position ids, a transformers
``Cache``), saved with ``save_pretrained`` and loaded back by path through ``dlmprompt.load``.

The claims: the family is recognised, the KV cache is exact (the same logits and the same
outputs as running the whole prefix every step), every output satisfies its constraints, blocks
are the model's own, and what the family cannot do is refused clearly."""

from __future__ import annotations

import importlib
import sys
import textwrap

import numpy as np
import pytest
import torch
from helpers import MIXED_PROMPT, check_result, tiny_bpe_tokenizer

import dlmprompt
from dlmprompt import BackendError, Prompt, compile, generate, slot

CONFIG_SRC = """
from transformers import PretrainedConfig


class TinyBlockConfig(PretrainedConfig):
    model_type = "llada2_moe"

    def __init__(self, vocab_size=330, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                 max_position_embeddings=256, mask_token_id=None, **kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.max_position_embeddings = max_position_embeddings
        self.mask_token_id = mask_token_id
        super().__init__(**kwargs)
"""

MODEL_SRC = """
import math

import torch
from torch import nn
from transformers import DynamicCache, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_tinyblock import TinyBlockConfig


class Attention(nn.Module):
    def __init__(self, config, index):
        super().__init__()
        self.heads = config.num_attention_heads
        self.dim = config.hidden_size // self.heads
        self.index = index
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.out = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, h, mask, cache):
        b, t, _ = h.shape
        q, k, v = self.qkv(h).view(b, t, 3, self.heads, self.dim).permute(2, 0, 3, 1, 4)
        if cache is not None:
            k, v = cache.update(k, v, self.index)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.dim) + mask
        return self.out((scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, -1))


class Layer(nn.Module):
    def __init__(self, config, index):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.hidden_size)
        self.attn = Attention(config, index)
        self.norm2 = nn.LayerNorm(config.hidden_size)
        self.mlp = nn.Sequential(nn.Linear(config.hidden_size, 64), nn.GELU(), nn.Linear(64, config.hidden_size))

    def forward(self, h, mask, cache):
        h = h + self.attn(self.norm1(h), mask, cache)
        return h + self.mlp(self.norm2(h))


class TinyBlockLM(PreTrainedModel):
    config_class = TinyBlockConfig
    base_model_prefix = "tiny"

    def __init__(self, config):
        super().__init__(config)
        self.emb = nn.Embedding(config.vocab_size, config.hidden_size)
        self.pos = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.layers = nn.ModuleList([Layer(config, i) for i in range(config.num_hidden_layers)])
        self.norm = nn.LayerNorm(config.hidden_size)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=False,
                **kwargs):
        # as LLaDA2: the caller builds the block-causal mask, [batch, 1, queries, keys], additive
        if attention_mask is None or attention_mask.dim() != 4:
            raise ValueError("this model needs a 4D block-causal attention mask")
        if position_ids is None:
            start = past_key_values.get_seq_length() if past_key_values is not None else 0
            position_ids = torch.arange(start, start + input_ids.shape[1], device=input_ids.device)[None]
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache()
        h = self.emb(input_ids) + self.pos(position_ids)
        for layer in self.layers:
            h = layer(h, attention_mask.to(h.dtype), past_key_values if use_cache else None)
        return CausalLMOutputWithPast(logits=self.lm_head(self.norm(h)), past_key_values=past_key_values)
"""


@pytest.fixture(scope="module")
def llada2_path(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("llada2")
    pkg = tmp / "code" / "tiny_llada2"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "configuration_tinyblock.py").write_text(textwrap.dedent(CONFIG_SRC))
    (pkg / "modeling_tinyblock.py").write_text(textwrap.dedent(MODEL_SRC))
    sys.path.insert(0, str(tmp / "code"))
    try:
        conf_mod = importlib.import_module("tiny_llada2.configuration_tinyblock")
        model_mod = importlib.import_module("tiny_llada2.modeling_tinyblock")
    finally:
        sys.path.remove(str(tmp / "code"))
    hf = tiny_bpe_tokenizer("<|mask|>")
    conf_mod.TinyBlockConfig.register_for_auto_class()
    model_mod.TinyBlockLM.register_for_auto_class("AutoModelForCausalLM")
    cfg = conf_mod.TinyBlockConfig(mask_token_id=hf.mask_token_id, architectures=["TinyBlockLM"])
    torch.manual_seed(0)
    out = tmp / "model"
    model_mod.TinyBlockLM(cfg).save_pretrained(out)
    hf.save_pretrained(out)
    return out


def test_the_family_is_recognised_and_loaded_by_path(llada2_path) -> None:
    with pytest.raises(BackendError, match="trust_remote_code=True"):
        dlmprompt.load(llada2_path)
    den = dlmprompt.load(llada2_path, trust_remote_code=True)
    assert den.family == "block_causal" and den.block_length == 32  # LLaDA2's default: the config names none
    assert den.mask_id == den.tokenizer.mask_id == tiny_bpe_tokenizer("<|mask|>").mask_token_id
    assert dlmprompt.load(llada2_path, trust_remote_code=True, block_length=8).block_length == 8
    with pytest.raises(BackendError, match="block-causal"):
        dlmprompt.load(None, block_length=8)  # the embedded model is a masked LM


def test_the_block_causal_mask_hides_later_blocks_only(llada2_path) -> None:
    den = dlmprompt.load(llada2_path, trust_remote_code=True, block_length=4)
    ids = torch.randint(0, 300, (1, 12), generator=torch.Generator().manual_seed(0))
    base = den(ids, torch.ones_like(ids, dtype=torch.bool))
    later = ids.clone()
    later[0, 8:] = (later[0, 8:] + 1) % 300  # change block 2 only
    changed = den(later, torch.ones_like(ids, dtype=torch.bool))
    assert torch.allclose(base[0, :8], changed[0, :8], atol=1e-5)  # blocks 0 and 1 do not see block 2
    assert not torch.allclose(base[0, 8:], changed[0, 8:], atol=1e-3)
    inside = ids.clone()
    inside[0, 5] = (inside[0, 5] + 1) % 300  # a change inside block 1 is seen by all of block 1
    seen = den(inside, torch.ones_like(ids, dtype=torch.bool))
    assert torch.allclose(base[0, :4], seen[0, :4], atol=1e-5)
    assert not torch.allclose(base[0, 4], seen[0, 4], atol=1e-4)


PROMPTS = [
    MIXED_PROMPT,
    Prompt("Name: ")
    + slot("name", regex="[A-Z][a-z]{1,6}", max_tokens=5)
    + ", age "
    + slot("age", regex="[0-9]{1,2}", max_tokens=3)
    + ". Color: "
    + slot("color", choice=["red", "blue"], max_tokens=3)
    + "?",
]


@pytest.mark.parametrize("block", [4, 8, 32])
def test_the_kv_cache_is_exact_and_outputs_satisfy_their_constraints(llada2_path, block) -> None:
    cached = dlmprompt.load(llada2_path, trust_remote_code=True, block_length=block)
    full = dlmprompt.load(llada2_path, trust_remote_code=True, block_length=block, kv_cache=False)
    assert cached.kv_cache and not full.kv_cache
    progs = [
        compile(p.with_sampling(steps=s, temperature=t), cached.tokenizer)
        for p in PROMPTS
        for s, t in [(6, 0.0), (40, 1.0)]
    ]
    a = generate(cached, progs, generator=torch.Generator().manual_seed(block))
    b = generate(full, progs, generator=torch.Generator().manual_seed(block))
    for prog, ra, rb in zip(progs, a, b):
        check_result(prog, ra)
        assert np.array_equal(ra.canvas, rb.canvas)  # the cache changes nothing
        assert ra.text == rb.text
    # the same denoising steps; the cache adds one pass per finished block and computes fewer positions
    assert [r.steps for r in a] == [r.steps for r in b]
    assert all(ra.forward_passes >= rb.forward_passes == rb.steps for ra, rb in zip(a, b))
    assert block == 32 or all(ra.forward_passes > rb.forward_passes for ra, rb in zip(a, b))
    assert block == 32 or sum(r.canvas_positions for r in a) < sum(r.canvas_positions for r in b)


def test_each_step_sees_the_current_block_only(llada2_path) -> None:
    """Blocks are the model's own: every step commits inside one block [kB, (k+1)B), in order,
    and the logits a step uses are the model's over the canvas as it stood."""
    den = dlmprompt.load(llada2_path, trust_remote_code=True, block_length=4)
    prog = compile(PROMPTS[1].with_sampling(tokens_per_step=1), den.tokenizer)
    steps = list(dlmprompt.sample(den, prog, generator=torch.Generator().manual_seed(1)))
    blocks = [int(s.committed[0]) // 4 for s in steps if len(s.committed)]
    assert blocks == sorted(blocks) and len(set(blocks)) > 2
    assert all(len({int(p) // 4 for p in s.committed}) == 1 for s in steps)
    assert steps[-1].canvas.tolist() == generate(den, prog, generator=torch.Generator().manual_seed(1)).canvas.tolist()


def test_what_the_family_cannot_do_is_refused_clearly(llada2_path) -> None:
    den = dlmprompt.load(llada2_path, trust_remote_code=True, block_length=8)
    with pytest.raises(BackendError, match="remasking is not available on block-causal models"):
        generate(den, compile(PROMPTS[1].with_sampling(remask={"budget": 0.5}), den.tokenizer))
    with pytest.raises(BackendError, match="classifier-free guidance"):
        generate(den, compile(PROMPTS[1], den.tokenizer, cfg_scale=1.0))


def test_the_batching_server_steps_it_without_the_cache(llada2_path) -> None:
    from dlmprompt.serving.engine import Engine

    den = dlmprompt.load(llada2_path, trust_remote_code=True, block_length=8)
    prog = compile(PROMPTS[1].with_sampling(steps=8), den.tokenizer)
    engine = Engine(den, max_batch=4)
    try:
        jobs = [engine.submit(prog, seed=s) for s in range(3)]
        results = [j.future.result(timeout=120) for j in jobs]
    finally:
        engine.close()
    for s, res in enumerate(results):
        check_result(prog, res)
        # the same blocks and draws as in-process with the cache
        alone = generate(den, prog, generator=torch.Generator().manual_seed(s))
        assert res.text == alone.text


def test_grammar_and_schema_slots_across_blocks(llada2_path) -> None:
    """A Lark grammar slot (left to right inside itself) and a JSON Schema template on a
    block-causal model: with blocks of 4 both span several blocks; every output parses / validates
    and the cache changes nothing."""
    import json

    import jsonschema
    import lark

    arith = 'start: expr\nexpr: term (("+" | "-") term)*\nterm: NUMBER | "(" expr ")"\nNUMBER: /[0-9]+/\n'
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 99}, "ok": {"type": "boolean"}},
        "required": ["n", "ok"],
        "additionalProperties": False,
    }
    prompt = (
        Prompt("Q: ")
        + slot("expr", grammar=arith, max_tokens=10)
        + " A: "
        + slot("rec", schema=schema, max_tokens=4)
        + "."
    )
    cached = dlmprompt.load(llada2_path, trust_remote_code=True, block_length=4)
    full = dlmprompt.load(llada2_path, trust_remote_code=True, block_length=4, kv_cache=False)
    parser = lark.Lark(arith)
    for seed, temp in [(0, 0.0), (1, 1.0), (2, 1.0)]:
        prog = compile(prompt.with_sampling(temperature=temp, tokens_per_step=2), cached.tokenizer)
        a = generate(cached, prog, generator=torch.Generator().manual_seed(seed))
        b = generate(full, prog, generator=torch.Generator().manual_seed(seed))
        check_result(prog, a)
        assert a.text == b.text
        parser.parse(a["expr"])
        jsonschema.validate(json.loads(a["rec"]), schema)


def test_token_editing_keeps_every_output_valid(llada2_path) -> None:
    """LLaDA2.1-style token editing: a token committed earlier in the block is replaced when the
    model is sure enough of another, only if the slot stays completable. With a low threshold on
    random weights edits happen often; every output still satisfies its constraints."""
    den = dlmprompt.load(llada2_path, trust_remote_code=True, block_length=8, edit_threshold=0.004)
    assert den.edit_threshold == 0.004
    edited = 0
    for p in PROMPTS:
        prog = compile(p.with_sampling(tokens_per_step=1, temperature=1.0), den.tokenizer)
        for seed in range(4):
            seen: dict[int, int] = {}
            steps = list(dlmprompt.sample(den, prog, generator=torch.Generator().manual_seed(seed)))
            for st in steps:
                for pos, tok in zip(st.committed.tolist(), st.tokens.tolist()):
                    edited += pos in seen and seen[pos] != tok
                    seen[pos] = tok
            check_result(prog, generate(den, prog, generator=torch.Generator().manual_seed(seed)))
            assert steps[-1].canvas.tolist() == [
                *generate(den, prog, generator=torch.Generator().manual_seed(seed)).canvas.tolist()
            ]
    assert edited > 0
    with pytest.raises(ValueError, match="edit_threshold"):
        dlmprompt.load(llada2_path, trust_remote_code=True, edit_threshold=1.5)


def test_completable_agrees_with_brute_force(llada2_path) -> None:
    """The edit check: a slot segment is completable exactly when some choice of classes at its
    open positions reaches an accepting state."""
    import itertools

    from dlmprompt.constraints.automaton import regex_automaton
    from dlmprompt.models.blockcausal import completable

    tok = dlmprompt.load(llada2_path, trust_remote_code=True).tokenizer
    auto = regex_automaton("(ab|a )+[0-9]?", tok)
    reps = [int(m[0]) for m in auto.class_members]  # one token per class
    rng = np.random.default_rng(0)
    mask = tok.mask_id
    for _ in range(300):
        n = int(rng.integers(1, 6))
        seg = np.array([mask if rng.random() < 0.5 else int(rng.integers(0, tok.vocab_size)) for _ in range(n)])
        open_at = [i for i in range(n) if seg[i] == mask]
        brute = False
        for fill in itertools.product(reps, repeat=len(open_at)):
            trial = seg.copy()
            trial[open_at] = fill
            if auto.accepts(trial):
                brute = True
                break
        assert completable(auto, seg, mask) == brute, seg
