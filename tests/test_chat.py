"""Chat templates: shipped per family, the model's own first, rendered in a sandbox; special tokens
in the rendered text compile to their special ids."""

from __future__ import annotations

import types

import pytest

import dlmprompt
from dlmprompt import SpecError, Tokenizer, compile, render_chat, slot

MSGS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there "}]

# a ChatML template in the style models ship in tokenizer_config.json (loop, namespace, filters)
OWN = (
    "{%- set ns = namespace(n=0) -%}"
    "{%- for m in messages -%}{%- set ns.n = ns.n + 1 -%}"
    "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] | trim + '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


def _hf_tokenizer(chat_template: str | None):
    from tokenizers import Tokenizer as HFTok
    from tokenizers import decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = HFTok(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|mask|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(["system user assistant Be brief. Hi there"] * 10, trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", mask_token="<|mask|>")
    hf.chat_template = chat_template
    return hf


@pytest.mark.parametrize(
    ("family", "expected"),
    [
        (
            "llada",
            "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n",
        ),
        (
            "dream",
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there <|im_end|>\n<|im_start|>assistant\n",
        ),
        ("diffusion_gemma", "<start_of_turn>user\nBe brief.\n\nHi there<end_of_turn>\n<start_of_turn>model\n"),
        ("masked_lm", "System: Be brief.\nUser: Hi there \nAssistant: "),
    ],
)
def test_family_templates(family, expected) -> None:
    model = types.SimpleNamespace(family=family, tokenizer=Tokenizer.bytes_level())
    assert render_chat(MSGS, model=model) == expected


def test_chatml_adds_the_default_system_turn() -> None:
    text = render_chat([{"role": "user", "content": "x"}], template="chat_chatml")
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")


def test_the_models_own_template_wins_and_matches_transformers() -> None:
    hf = _hf_tokenizer(OWN)
    tok = Tokenizer.from_hf(hf)
    model = types.SimpleNamespace(family="dream", tokenizer=tok)  # the family template is not used
    ours = render_chat(MSGS, model=model)
    theirs = hf.apply_chat_template(MSGS, tokenize=False, add_generation_prompt=True)
    assert ours == theirs
    # the special tokens of the rendered text compile to their ids, one each
    program = compile(dlmprompt.chat(MSGS, model=model) + slot("a", max_tokens=3), tok)
    ids = program.layout.canvas.tolist()
    start, end = hf.convert_tokens_to_ids("<|im_start|>"), hf.convert_tokens_to_ids("<|im_end|>")
    assert ids.count(start) == 3 and ids.count(end) == 2


def test_sandbox_and_errors() -> None:
    with pytest.raises(SpecError, match="unsafe"):
        render_chat(MSGS, template="{{ messages.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(SpecError, match="refused the messages: no system"):
        render_chat(MSGS, template="{{ raise_exception('no system') }}")
    with pytest.raises(SpecError, match="unknown role"):
        render_chat([{"role": "wizard", "content": "x"}])
    with pytest.raises(SpecError, match="no chat template 'chat_nope'"):
        render_chat(MSGS, template="chat_nope")
    with pytest.raises(SpecError, match="list of"):
        render_chat("hello")
    with pytest.raises(SpecError, match="only text content"):
        render_chat([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}])
    parts = [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]
    assert render_chat(parts) == "User: ab\nAssistant: "
