"""A Lark grammar slot beside a regex slot, on the embedded model; the output is parsed by lark.

python examples/grammar_slot.py
"""

from __future__ import annotations

import lark
import torch

import dlmprompt
from dlmprompt import Prompt, compile, generate, slot

ARITH = r"""
start: expr
expr: term (("+" | "-") term)*
term: NUMBER | "(" expr ")"
NUMBER: /[0-9]+/
"""

denoiser = dlmprompt.load()
prompt = (
    Prompt("Q: twelve plus (3 minus 1)\nA: ")
    + slot("expr", grammar=ARITH, max_tokens=12)
    + "\nTag: "
    + slot("tag", regex="[A-Z]{2}", max_tokens=2)
).with_sampling(temperature=0.8)
program = compile(prompt, denoiser.tokenizer)
print("shortest sentence kept at the start:", denoiser.tokenizer.decode(list(program.slots[0].grammar.witness)))
for seed in range(3):
    result = generate(denoiser, program, generator=torch.Generator().manual_seed(seed))
    lark.Lark(ARITH).parse(result["expr"])  # always a whole sentence
    print(f"seed {seed}: expr={result['expr']!r} tag={result['tag']!r} ({result.forward_passes} forward passes)")
