"""Fake denoisers for tests and examples: fake at the seam, not inside the sampler.

Both are deterministic functions of each row's own (attended) content, so a row's logits do not
depend on what else is in the batch, as with a real model and an attention mask.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np
import torch

from dlmprompt.tokenizer import Tokenizer


class RandomDenoiser:
    """Pseudo-random logits ``scale * N(0, 1)``, seeded by ``seed`` and the row's content."""

    name = "random-logits"

    def __init__(
        self, tokenizer: Tokenizer, *, seed: int = 0, scale: float = 3.0, vocab_size: int | None = None
    ) -> None:
        self.tokenizer = tokenizer
        self.mask_id = tokenizer.require_mask()
        self.seed = seed
        self.scale = scale
        self.vocab_size = vocab_size or tokenizer.vocab_size
        self.calls = 0

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        b, length = input_ids.shape
        out = torch.zeros(b, length, self.vocab_size)
        for i in range(b):
            n = int(attention_mask[i].sum())
            row = input_ids[i, :n].cpu().numpy().astype(np.int64)
            h = hashlib.blake2b(row.tobytes() + self.seed.to_bytes(8, "little"), digest_size=8).digest()
            g = torch.Generator().manual_seed(int.from_bytes(h, "little") & (2**62 - 1))
            out[i, :n] = torch.randn(n, self.vocab_size, generator=g) * self.scale
        return out


class ScriptedDenoiser:
    """Logits from a function of (row ids, position) -> preferred token id, with ``strength``
    logits of preference over a flat background; an adversarial model is easy to script."""

    name = "scripted"

    def __init__(
        self,
        tokenizer: Tokenizer,
        prefer: Callable[[np.ndarray, int], int],
        *,
        strength: float = 20.0,
    ) -> None:
        self.tokenizer = tokenizer
        self.mask_id = tokenizer.require_mask()
        self.prefer = prefer
        self.strength = strength
        self.calls = 0

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        b, length = input_ids.shape
        out = torch.zeros(b, length, self.tokenizer.vocab_size)
        for i in range(b):
            n = int(attention_mask[i].sum())
            row = input_ids[i, :n].cpu().numpy()
            for j in range(n):
                out[i, j, self.prefer(row, j)] = self.strength
        return out
