"""Model backends: transformers checkpoints as :class:`~dlmprompt.denoiser.Denoiser` objects.

``load_model()`` with no argument returns the embedded default model (shipped in the package, loaded
with ``from_pretrained`` like any checkpoint); ``load_model(path)`` loads a local checkpoint folder;
``from_transformers(model, tokenizer)`` wraps objects you already have.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import torch

from dlmprompt.errors import BackendError
from dlmprompt.tokenizer import Tokenizer


class TransformersDenoiser:
    """A transformers model as a masked-diffusion denoiser.

    ``shift=True`` is for models whose logits are shifted right by one (Dream, DiffuCoder and
    other models adapted from autoregressive checkpoints): the prediction for position i comes
    from the hidden state at i-1, so the logits are realigned before anything else sees them.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Tokenizer,
        *,
        shift: bool = False,
        family: str = "masked_lm",
        name: str | None = None,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.mask_id = tokenizer.require_mask()
        self.shift = shift
        self.family = family
        self.name = name or getattr(model.config, "_name_or_path", "") or type(model).__name__
        self.device = next(model.parameters()).device

    # the sampler's device path may hand the attention mask over on the host: checking it for
    # padding then costs no wait for the device
    host_attention_mask = True

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        kwargs: dict[str, Any] = {"input_ids": input_ids}
        if not bool(attention_mask.all()):
            # only batches with padding need the mask (older LLaDA code does not take one)
            kwargs["attention_mask"] = attention_mask.to(input_ids.device, non_blocking=True).long()
        with torch.inference_mode():
            out = self.model(**kwargs)
        logits = out.logits if hasattr(out, "logits") else out[0]
        if self.shift:
            logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
        return logits

    def __repr__(self) -> str:
        return f"TransformersDenoiser({self.name!r}, family={self.family!r}, {self.tokenizer!r})"


def default_model_path() -> Path:
    """The folder of the embedded default model inside the installed package."""
    return Path(str(resources.files("dlmprompt.models") / "default_model"))


def from_transformers(model: Any, tokenizer: Any, **ids: int) -> TransformersDenoiser:
    """Wrap a transformers model and its tokenizer. Special ids come from the tokenizer, then the
    model config (and generation config); pass ``mask_id=...`` (and pad_id / eos_id / bos_id) to
    override."""
    family, shift = _family(model.config)
    if family == "diffusion_gemma":
        from dlmprompt.models.blockdiffusion import DiffusionGemmaDenoiser, diffusion_gemma_tokenizer

        tok = tokenizer if isinstance(tokenizer, Tokenizer) else diffusion_gemma_tokenizer(tokenizer, model, ids)
        return DiffusionGemmaDenoiser(model, tok)  # type: ignore[return-value]
    tok = tokenizer if isinstance(tokenizer, Tokenizer) else _wrap_tokenizer(tokenizer, model, ids)
    if family == "block_causal":
        from dlmprompt.models.blockcausal import BlockCausalDenoiser

        return BlockCausalDenoiser(model, tok)  # type: ignore[return-value]
    return TransformersDenoiser(model, tok, shift=shift, family=family)


def _wrap_tokenizer(tokenizer: Any, model: Any, ids: dict[str, int]) -> Tokenizer:
    gen = getattr(model, "generation_config", None)
    if "mask_id" not in ids and getattr(tokenizer, "mask_token_id", None) is None:
        for source in (model.config, gen):
            value = getattr(source, "mask_token_id", None) if source is not None else None
            if value is not None:
                ids = {**ids, "mask_id": int(value)}
                break
    return Tokenizer.from_hf(tokenizer, config=model.config, **ids)


_MASKED_LM_TYPES = {"bert", "modernbert", "roberta", "distilbert", "xlm-roberta", "electra", "deberta-v2"}


# block-causal block diffusion: LLaDA2.x (llada2_moe), SDAR, Fast-dLLM v2
_BLOCK_CAUSAL_TYPES = {"llada2", "llada2_moe", "sdar", "sdar_moe", "fast_dllm_v2", "fast_dllm_qwen"}


def _family(config: Any) -> tuple[str, bool]:
    """(family, shifted logits) from a model config."""
    archs = [a.lower() for a in (getattr(config, "architectures", None) or [])]
    model_type = str(getattr(config, "model_type", "")).lower()
    if any("maskedlm" in a for a in archs) or model_type in _MASKED_LM_TYPES:
        return "masked_lm", False
    if model_type in _BLOCK_CAUSAL_TYPES or any(k in a for a in archs for k in ("llada2", "sdar", "fast_dllm")):
        return "block_causal", False
    if model_type.startswith("llada") or any("llada" in a for a in archs):
        return "llada", False
    if model_type.startswith("dream") or any("dream" in a or "diffucoder" in a for a in archs):
        return "dream", True
    if "diffusion_gemma" in model_type or any("diffusiongemma" in a for a in archs):
        return "diffusion_gemma", False
    raise BackendError(
        f"cannot tell which diffusion family model_type={model_type!r} (architectures {archs}) belongs to; "
        "supported: masked LMs (AutoModelForMaskedLM: BERT, ModernBERT, the embedded model), LLaDA-style "
        "masked DLMs, Dream-style DLMs with right-shifted logits, block-causal models (LLaDA2.x, SDAR) and "
        "DiffusionGemma. For another model, "
        "wrap it yourself: "
        "TransformersDenoiser(model, Tokenizer.from_hf(tok, mask_id=..., pad_id=..., eos_id=...), shift=...)"
    )


def load_model(
    name_or_path: str | Path | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    trust_remote_code: bool = False,
    block_length: int | None = None,
    kv_cache: bool = True,
    edit_threshold: float | None = None,
) -> TransformersDenoiser:
    """Load a checkpoint as a denoiser: the embedded default model (no argument) or a local
    checkpoint folder. :func:`dlmprompt.load` also takes a server URL.

    The family (masked LM, LLaDA-style, Dream-style, block-causal, DiffusionGemma) is read from the
    config. LLaDA, Dream, LLaDA2 and SDAR ship their model code with the checkpoint: pass
    ``trust_remote_code=True`` to run it. ``block_length`` (default: the config's, else 32),
    ``kv_cache`` and ``edit_threshold`` (token editing) are for block-causal models
    (:class:`~dlmprompt.models.blockcausal.BlockCausalDenoiser`).
    """
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
    from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except ValueError as exc:
        if "trust_remote_code" in str(exc):
            raise BackendError(
                f"{path} ships its own model code; pass trust_remote_code=True to load it (it runs that code)"
            ) from None
        raise BackendError(f"cannot read the config in {path}: {exc}") from None
    family, shift = _family(config)
    if family != "block_causal" and (block_length is not None or not kv_cache or edit_threshold is not None):
        raise BackendError(
            "block_length, kv_cache and edit_threshold are options of block-causal models (LLaDA2.x, SDAR); "
            f"{path} is {family!r}"
        )
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if dtype is not None:
        kwargs["dtype"] = dtype
    if family == "diffusion_gemma":
        from transformers import AutoModelForImageTextToText as auto
    elif family == "block_causal":
        from transformers import AutoModelForCausalLM as auto
    else:
        auto = AutoModelForMaskedLM if family == "masked_lm" else AutoModel
    model = auto.from_pretrained(path, **kwargs)
    if device is not None:
        model = model.to(device)
    hf_tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if family == "diffusion_gemma":
        from dlmprompt.models.blockdiffusion import DiffusionGemmaDenoiser, diffusion_gemma_tokenizer

        return DiffusionGemmaDenoiser(  # type: ignore[return-value]
            model, diffusion_gemma_tokenizer(hf_tok, model, {}), name=str(path)
        )
    tok = _wrap_tokenizer(hf_tok, model, {})
    if family == "block_causal":
        from dlmprompt.models.blockcausal import BlockCausalDenoiser

        return BlockCausalDenoiser(  # type: ignore[return-value]
            model, tok, block_length=block_length, kv_cache=kv_cache, edit_threshold=edit_threshold, name=str(path)
        )
    return TransformersDenoiser(
        model, tok, shift=shift, family=family, name="dlmprompt-default" if name_or_path is None else str(path)
    )
