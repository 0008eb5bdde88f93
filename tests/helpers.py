"""Shared checks for the property tests: every output satisfies every slot, anchors untouched."""

from __future__ import annotations

import json
import re

import jsonschema
import lark
import numpy as np

from dlmprompt import Choice, FreeText, Grammar, Json, Program, Prompt, Regex, slot

# anchors, a regex slot, a choice slot and free text: what every backend test generates
MIXED_PROMPT = (
    Prompt("Name: ")
    + slot("name", regex="[A-Z][a-z]+", max_tokens=5)
    + ", age "
    + slot("age", regex="[0-9]+", max_tokens=3)
    + ". Color: "
    + slot("color", choice=["red", "blue"], max_tokens=2)
    + "? "
    + slot("free", max_tokens=4)
)


def check_result(program: Program, result) -> None:
    layout = program.layout
    canvas = result.canvas
    anchors = layout.slot_of < 0
    assert np.array_equal(canvas[anchors], layout.canvas[anchors]), "an anchor changed"
    assert not (canvas == program.mask_id).any(), "a mask token is left on the canvas"
    tok = program.tokenizer
    for s in layout.slots:
        if s.parent is not None:  # a value span of a JSON slot: the whole value is checked below
            continue
        seg = canvas[s.start : s.stop].tolist()
        cap = result.captures[s.name]
        if s.mode == "at_most":
            n_value = len(cap.tokens)
            assert all(t == program.pad_id for t in seg[n_value:]), f"{s.name}: pad tail broken {seg}"
            assert program.pad_id not in seg[:n_value]
        else:
            assert len(cap.tokens) == s.length
        value = list(cap.tokens)
        for t in value:
            assert tok.token_bytes[t] is not None, f"{s.name}: special token {t} in the value"
        data = tok.decode_bytes(value)
        text = data.decode("utf-8")  # strict: every value is valid UTF-8
        c = s.constraint
        if isinstance(c, Regex):
            assert re.fullmatch(c.pattern, text, flags=re.ASCII) is not None, f"{s.name}: {text!r} !~ {c.pattern!r}"
        elif isinstance(c, Choice):
            assert text in c.options, f"{s.name}: {text!r} not in {c.options}"
        elif isinstance(c, Grammar):
            _parser(c.lark).parse(text)  # lark itself: the text is a whole sentence
        else:
            assert isinstance(c, FreeText)
        assert cap.text == text
    for cap in result.captures.values():
        if isinstance(cap.constraint, Json):  # valid under its schema, by jsonschema itself
            jsonschema.validate(json.loads(cap.text), cap.constraint.json_schema)


_PARSERS: dict[str, lark.Lark] = {}


def _parser(grammar: str) -> lark.Lark:
    if grammar not in _PARSERS:
        _PARSERS[grammar] = lark.Lark(grammar)
    return _PARSERS[grammar]


def build_tiny_diffusion_gemma(path):
    """A tiny random DiffusionGemmaForBlockDiffusion and a BPE tokenizer without a mask token,
    saved into ``path`` with save_pretrained (canvas_length 8)."""
    import torch
    from tokenizers import Tokenizer as HFTok
    from tokenizers import decoders, models, pre_tokenizers, trainers
    from transformers import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion, PreTrainedTokenizerFast

    tok = HFTok(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=290,
        special_tokens=["<pad>", "<eos>", "<bos>", "<unused0>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(["Name: Ada, age 36. Color: red or blue?"] * 20, trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        additional_special_tokens=["<unused0>"],
    )
    text = {
        "vocab_size": 300,  # larger than the tokenizer, as real checkpoints often are
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "layer_types": ["sliding_attention", "full_attention"],
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 16,
        "global_head_dim": 16,
        "sliding_window": 32,
        "num_experts": 2,
        "top_k_experts": 1,
        "moe_intermediate_size": 16,
        "max_position_embeddings": 512,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "bos_token_id": 2,
    }
    vision = {
        "model_type": "gemma4_vision",
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "head_dim": 8,
        "position_embedding_size": 64,
    }
    cfg = DiffusionGemmaConfig(text_config=text, vision_config=vision, canvas_length=8)
    torch.manual_seed(0)
    model = DiffusionGemmaForBlockDiffusion(cfg)
    model.save_pretrained(path)
    hf.save_pretrained(path)
    return path


# two function tools the tool-call suites share
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
        },
    },
}
ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers.",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer", "minimum": 10}},
            "required": ["a", "b"],
            "additionalProperties": False,
        },
    },
}


def bench_function_schemas(limit: int | None = None) -> list[dict]:
    """The object schemas of JSONSchemaBench's function-calling sets (Glaive, BFCL) in
    ../shared/data/jsonschemabench; empty where that folder is not here."""
    import glob
    import os

    root = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "jsonschemabench")
    paths = sorted(glob.glob(os.path.join(root, "Glaive*.json")) + glob.glob(os.path.join(root, "BFCL*.json")))
    out = []
    for path in paths[:limit]:
        with open(path) as f:
            schema = json.load(f)["schema"]
        if isinstance(schema, dict) and schema.get("type") == "object":
            out.append(schema)
    return out


def tiny_bpe_tokenizer(mask: str):
    """A 320-token byte-level BPE (transformers' fast tokenizer) with EOS, BOS and ``mask`` as
    special tokens, for tiny remote-code models saved and loaded by path."""
    from tokenizers import Tokenizer as HFTok
    from tokenizers import decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = HFTok(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<|endoftext|>", "<|startoftext|>", mask],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(["Name: Ada, age 36. Color: red or blue?"] * 20, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|startoftext|>", mask_token=mask
    )
