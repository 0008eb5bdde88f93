"""DiffusionGemma through dlmprompt: anchors, a regex slot and a choice slot, with every value exact.

No checkpoint is downloaded: this builds a tiny *random* DiffusionGemmaForBlockDiffusion (the
embedded model's tokenizer, 2 layers) and saves it like a real one, so the words are noise, but
the constraints hold and the path is the one a real checkpoint takes:
``dlmprompt.load(folder)`` -> block diffusion with uniform noise and a KV cache.

python examples/diffusion_gemma.py
"""

from __future__ import annotations

import re
import shutil
import tempfile

import torch
from transformers import AutoTokenizer, DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion

import dlmprompt
from dlmprompt import Prompt, compile, generate, slot
from dlmprompt.models.backends import default_model_path

folder = tempfile.mkdtemp(prefix="tiny-diffusion-gemma-")
tok = AutoTokenizer.from_pretrained(default_model_path())
text_config = {
    "vocab_size": len(tok),
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "layer_types": ["sliding_attention", "full_attention"],
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 32,
    "global_head_dim": 32,
    "sliding_window": 64,
    "num_experts": 2,
    "top_k_experts": 1,
    "moe_intermediate_size": 32,
    "pad_token_id": tok.pad_token_id,
    "eos_token_id": tok.eos_token_id,
    "bos_token_id": tok.bos_token_id,
}
vision_config = {  # the class always builds a vision tower: keep it tiny
    "model_type": "gemma4_vision",
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "head_dim": 8,
    "position_embedding_size": 64,
}
torch.manual_seed(0)
config = DiffusionGemmaConfig(text_config=text_config, vision_config=vision_config, canvas_length=8)
DiffusionGemmaForBlockDiffusion(config).save_pretrained(folder)
tok.save_pretrained(folder)

denoiser = dlmprompt.load(folder)
print(denoiser)
prompt = (
    Prompt("Order ORD-482913 for Ann Lee.\nid: ")
    + slot("id", regex=r"ORD-[0-9]{6}", max_tokens=8)
    + "\nstatus: "
    + slot("status", choice=["pending", "shipped", "delivered"], max_tokens=4)
    + "\nnote: "
    + slot("note", max_tokens=6)
).with_sampling(steps=6)
program = compile(prompt, denoiser.tokenizer)
for seed in range(3):
    result = generate(denoiser, program, generator=torch.Generator().manual_seed(seed))
    assert re.fullmatch(r"ORD-[0-9]{6}", result["id"]) and result["status"] in {"pending", "shipped", "delivered"}
    print(f"seed {seed}: id={result['id']} status={result['status']} note={result['note']!r} ({result.steps} steps)")
shutil.rmtree(folder)
