from __future__ import annotations

import pytest
import torch
from helpers import check_result

from dlmprompt import Prompt, Tokenizer, TokenizerError, compile, generate, slot
from dlmprompt.testing import RandomDenoiser


def test_bytes_level_encodes_greedily(byte_tok) -> None:
    ids = byte_tok.encode("abc the")
    assert byte_tok.decode_bytes(ids) == b"abc the"
    assert ids[0] == 256 + 1  # "abc" beats "ab"
    assert byte_tok.token_bytes[byte_tok.mask_id] is None


def test_qwen_tokenizer_ids_come_from_the_encoding(qwen_tok) -> None:
    assert qwen_tok.vocab_size == 151_667
    assert qwen_tok.mask_id == 151_666 and qwen_tok.eos_id == 151_643 and qwen_tok.pad_id == 151_643
    assert sum(t is not None for t in qwen_tok.token_bytes) == 151_643
    text = 'Hello wörld, {"a": 1}'
    assert qwen_tok.decode(qwen_tok.encode(text)) == text


def test_tiktoken_names_must_exist() -> None:
    import tiktoken

    enc = tiktoken.Encoding(
        "t", pat_str=r"\S+|\s+", mergeable_ranks={bytes([i]): i for i in range(256)}, special_tokens={"<m>": 256}
    )
    with pytest.raises(TokenizerError, match="not a special token"):
        Tokenizer.from_tiktoken(enc, mask_token="<mask>")
    tok = Tokenizer.from_tiktoken(enc, mask_token="<m>")
    assert tok.mask_id == 256 and tok.pad_id is None


def _train_hf_tokenizer(kind: str):
    from tokenizers import Tokenizer as HFTok
    from tokenizers import decoders, models, pre_tokenizers, trainers

    corpus = ["Name: Ada Lovelace, age 36, born 1815-12-10.", "The quick brown fox jumps over the lazy dog."] * 50
    specials = ["[MASK]", "[PAD]", "[EOS]", "[BOS]"]
    if kind == "bytelevel":
        tok = HFTok(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        )
    else:
        tok = HFTok(models.BPE(byte_fallback=True, unk_token=None))
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials + [f"<0x{i:02X}>" for i in range(256)])
    tok.train_from_iterator(corpus, trainer)
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok, mask_token="[MASK]", pad_token="[PAD]", eos_token="[EOS]", bos_token="[BOS]"
    )


@pytest.mark.parametrize("kind", ["bytelevel", "metaspace"])
def test_hf_tokenizers_wrap_with_their_special_ids(kind) -> None:
    hf = _train_hf_tokenizer(kind)
    tok = Tokenizer.from_hf(hf)
    assert tok.mask_id == hf.mask_token_id and tok.pad_id == hf.pad_token_id and tok.eos_id == hf.eos_token_id
    assert tok.token_bytes[tok.mask_id] is None
    for text in ["Ada 1815", " lazy dog", "naïve"]:
        assert tok.decode_bytes(tok.encode(text)) == text.encode()
    prog = compile(
        Prompt(
            "Name: ",
            slot("name", regex="[A-Z][a-z]+", max_tokens=6),
            ", age ",
            slot("age", regex="[0-9]+", max_tokens=3),
        ),
        tok,
    )
    res = generate(RandomDenoiser(tok), prog, generator=torch.Generator().manual_seed(0))
    check_result(prog, res)


def test_special_ids_from_model_config() -> None:
    hf = _train_hf_tokenizer("bytelevel")
    hf.mask_token = None

    class Config:
        mask_token_id = 3
        eos_token_id = (2,)

    tok = Tokenizer.from_hf(hf, config=Config())
    assert tok.mask_id == 3


def test_bad_ids_are_refused() -> None:
    with pytest.raises(TokenizerError, match="outside the vocabulary"):
        Tokenizer([b"a"], list, mask_id=5)
    with pytest.raises(TokenizerError, match="pad id equals the mask id"):
        Tokenizer([b"a", None], list, mask_id=1, pad_id=1)
    with pytest.raises(TokenizerError, match="cannot wrap"):
        Tokenizer.from_hf(object())
