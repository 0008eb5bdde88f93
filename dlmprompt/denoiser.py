"""The one seam between the sampler and a model: the :class:`Denoiser` protocol."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

    from dlmprompt.tokenizer import Tokenizer


@runtime_checkable
class Denoiser(Protocol):
    """A masked-diffusion model as the sampler sees it.

    ``__call__`` takes canvas ids ``[B, L]`` and a boolean attention mask ``[B, L]`` (False on
    batch padding) and returns logits ``[B, L, V]`` whose row i predicts the token at position i
    (families with shifted logits realign them before returning). ``mask_id`` is the id placed
    at positions still to fill; ``tokenizer`` is the :class:`~dlmprompt.tokenizer.Tokenizer` whose
    ids the model reads (used to compile prompts handed over as specs).

    On CUDA the sampler's device path hands ``input_ids`` over on the model's device and the
    attention mask on that device too, unless the denoiser sets ``host_attention_mask = True``:
    then the mask comes on the host, so that checking it for padding waits for nothing (the
    transformers wrapper does this).
    """

    mask_id: int
    tokenizer: Tokenizer

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor: ...


def describe(denoiser: Any) -> str:
    return getattr(denoiser, "name", type(denoiser).__name__)
