"""Model backends: transformers checkpoints as :class:`~dlmprompt.denoiser.Denoiser` objects.

``load()`` with no argument returns the embedded default model (shipped in the package, loaded
with ``from_pretrained`` like any checkpoint); ``load(path)`` loads a local checkpoint folder;
``from_transformers(model, tokenizer)`` wraps objects you already have.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import torch

from .errors import BackendError
from .tokenizer import Tokenizer


class MaskedLMDenoiser:
    """Any masked LM (BERT, ModernBERT, the embedded model): a one-noise-level masked DLM."""

    def __init__(self, model: Any, tokenizer: Tokenizer, *, name: str | None = None) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.mask_id = tokenizer.require_mask()
        self.name = name or getattr(model.config, "_name_or_path", "") or type(model).__name__
        self.device = next(model.parameters()).device

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            out = self.model(input_ids=input_ids, attention_mask=attention_mask.long())
        return out.logits

    def __repr__(self) -> str:
        return f"MaskedLMDenoiser({self.name!r}, {self.tokenizer!r})"


def default_model_path() -> Path:
    """The folder of the embedded default model inside the installed package."""
    return Path(str(resources.files("dlmprompt") / "default_model"))


def from_transformers(model: Any, tokenizer: Any, **ids: int) -> MaskedLMDenoiser:
    """Wrap a transformers model and its tokenizer. Special ids come from the tokenizer, then the
    model config; pass ``mask_id=...`` (and pad_id / eos_id / bos_id) to override."""
    tok = tokenizer if isinstance(tokenizer, Tokenizer) else Tokenizer.from_hf(tokenizer, config=model.config, **ids)
    kind = _family(model.config)
    if kind == "masked_lm":
        return MaskedLMDenoiser(model, tok)
    raise BackendError(  # pragma: no cover - only masked LMs are detected so far
        f"unsupported model family {kind!r}"
    )


def _family(config: Any) -> str:
    archs = [a.lower() for a in (getattr(config, "architectures", None) or [])]
    if any("maskedlm" in a for a in archs) or getattr(config, "model_type", "") in {
        "bert",
        "modernbert",
        "roberta",
        "distilbert",
        "xlm-roberta",
        "electra",
    }:
        return "masked_lm"
    raise BackendError(
        f"cannot tell which diffusion family model_type={getattr(config, 'model_type', None)!r} "
        f"(architectures {archs}) belongs to; supported here: masked LMs (AutoModelForMaskedLM: BERT, "
        "ModernBERT, the embedded model). Wrap other models yourself: any object with mask_id, "
        "tokenizer and __call__(input_ids, attention_mask) -> logits is a Denoiser"
    )


def load(
    name_or_path: str | Path | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> MaskedLMDenoiser:
    """Load a denoiser: the embedded default model (no argument) or a local checkpoint folder."""
    path = default_model_path() if name_or_path is None else Path(name_or_path)
    if not (path / "config.json").is_file():
        if name_or_path is None:
            raise BackendError(
                f"the embedded default model is missing from {path}; reinstall dlmprompt or train it "
                "with `dlmprompt train-default`"
            )
        raise BackendError(
            f"{path} is not a checkpoint folder (no config.json); nothing is downloaded from a hub, "
            "so pass a local folder written by save_pretrained"
        )
    from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    config = AutoConfig.from_pretrained(path)
    _family(config)
    kwargs: dict[str, Any] = {}
    if dtype is not None:
        kwargs["dtype"] = dtype
    model = AutoModelForMaskedLM.from_pretrained(path, **kwargs)
    if device is not None:
        model = model.to(device)
    hf_tok = AutoTokenizer.from_pretrained(path)
    tok = Tokenizer.from_hf(hf_tok, config=config)
    return MaskedLMDenoiser(model, tok, name="dlmprompt-default" if name_or_path is None else str(path))
