"""LLaDA-style and Dream-style models as users load them: model code shipped with the checkpoint
(``trust_remote_code``), written here as tiny random models saved with ``save_pretrained`` into a
temporary folder and loaded back by path through ``dlmprompt.load``."""

from __future__ import annotations

import importlib
import sys
import textwrap

import pytest
import torch
from helpers import MIXED_PROMPT, check_result, tiny_bpe_tokenizer

import dlmprompt
from dlmprompt import BackendError, compile, generate

CONFIG_SRC = """
from transformers import PretrainedConfig


class TinyDLMConfig(PretrainedConfig):
    model_type = "{model_type}"

    def __init__(self, vocab_size=330, hidden_size=32, num_layers=2, max_len=128, mask_token_id=None, **kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.max_len = max_len
        self.mask_token_id = mask_token_id
        super().__init__(**kwargs)
"""

MODEL_SRC = """
import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import MaskedLMOutput

from .configuration_tinydlm import TinyDLMConfig


class TinyDLMModel(PreTrainedModel):
    config_class = TinyDLMConfig
    base_model_prefix = "tiny"

    def __init__(self, config):
        super().__init__(config)
        self.emb = nn.Embedding(config.vocab_size, config.hidden_size)
        self.pos = nn.Embedding(config.max_len, config.hidden_size)
        layer = nn.TransformerEncoderLayer(config.hidden_size, 2, 64, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, config.num_layers)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    def forward(self, input_ids, attention_mask=None):
        pos = torch.arange(input_ids.shape[1], device=input_ids.device)
        h = self.emb(input_ids) + self.pos(pos)[None]
        pad = None if attention_mask is None else ~attention_mask.bool()
        return MaskedLMOutput(logits=self.lm_head(self.enc(h, src_key_padding_mask=pad)))
"""


def _save(tmp_path, model_type: str, mask_in_tokenizer: bool):
    code = tmp_path / f"code_{model_type}"
    pkg = code / f"tiny_{model_type}"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "configuration_tinydlm.py").write_text(textwrap.dedent(CONFIG_SRC.format(model_type=model_type)))
    (pkg / "modeling_tinydlm.py").write_text(textwrap.dedent(MODEL_SRC))
    sys.path.insert(0, str(code))
    try:
        conf_mod = importlib.import_module(f"tiny_{model_type}.configuration_tinydlm")
        model_mod = importlib.import_module(f"tiny_{model_type}.modeling_tinydlm")
    finally:
        sys.path.remove(str(code))
    hf = tiny_bpe_tokenizer("<|mdm_mask|>")
    mask_id = hf.convert_tokens_to_ids("<|mdm_mask|>")
    conf_mod.TinyDLMConfig.register_for_auto_class()
    model_mod.TinyDLMModel.register_for_auto_class("AutoModel")
    cfg = conf_mod.TinyDLMConfig(mask_token_id=mask_id, architectures=["TinyDLMModel"])
    torch.manual_seed(0)
    model = model_mod.TinyDLMModel(cfg)
    out = tmp_path / model_type
    model.save_pretrained(out)
    if not mask_in_tokenizer:
        hf.mask_token = None  # Dream-style: the mask id lives in the model config
    hf.save_pretrained(out)
    return out, mask_id


@pytest.mark.parametrize(("model_type", "family", "shift"), [("llada", "llada", False), ("dream", "dream", True)])
def test_remote_code_family_loads_and_generates(tmp_path, model_type, family, shift) -> None:
    path, mask_id = _save(tmp_path, model_type, mask_in_tokenizer=model_type == "llada")
    with pytest.raises(BackendError, match="trust_remote_code=True"):
        dlmprompt.load(path)
    den = dlmprompt.load(path, trust_remote_code=True)
    assert (den.family, den.shift) == (family, shift)
    assert den.mask_id == mask_id  # from the tokenizer (LLaDA) or the model config (Dream)
    assert den.tokenizer.bos_id is not None  # position 0 holds BOS, needed by shifted models
    progs = [
        compile(MIXED_PROMPT.with_sampling(steps=s, temperature=t), den.tokenizer) for s, t in [(5, 0.0), (14, 1.0)]
    ]
    for prog, res in zip(progs, generate(den, progs, generator=torch.Generator().manual_seed(0))):
        check_result(prog, res)
        assert res.canvas[0] == den.tokenizer.bos_id
    # the realignment: what the sampler sees at position i is the model's output at i - 1
    ids = torch.from_numpy(progs[0].layout.canvas)[None]
    with torch.inference_mode():
        raw = den.model(input_ids=ids).logits
    seen = den(ids, torch.ones_like(ids, dtype=torch.bool))
    if shift:
        assert torch.allclose(seen[:, 1:], raw[:, :-1], atol=1e-5)
        assert not torch.allclose(seen[:, 1:], raw[:, 1:], atol=1e-3)
    else:
        assert torch.allclose(seen, raw, atol=1e-5)


def test_unknown_families_are_refused_clearly_and_diffusion_gemma_is_recognised(tmp_path) -> None:
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_embd=8, n_head=1).save_pretrained(tmp_path)
    with pytest.raises(BackendError, match="wrap it yourself"):
        dlmprompt.load(tmp_path)
    from dlmprompt.models.backends import _family

    class Cfg:
        model_type = "diffusion_gemma"
        architectures = ("DiffusionGemmaForBlockDiffusion",)

    assert _family(Cfg()) == ("diffusion_gemma", False)
