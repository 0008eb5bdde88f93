"""Lark grammar slots: context-free constraints, decoded left to right inside the slot.

A grammar slot is filled from its left end, while the other slots of the canvas keep denoising
in any order. llguidance's matcher gives the exact set of tokens that keep the slot's text a
prefix of some sentence of the grammar (prefix validity at every commit).

**The slot always closes within its length.** The compiler finds a *witness*: a token sequence
that is a whole sentence of the grammar and fits the slot (the grammar's shortest sentence, found
with lark from the grammar's rules, checked by the matcher). The sampler keeps a witness for the
current prefix at all times: at each forward pass it drafts the rest of the slot from the model's
logits (each position's most likely allowed token, stopping as soon as the text is a sentence);
if the draft closes within the positions left, the model's token is committed and the draft is
the new witness; if not, the witness's next token is committed instead. Several tokens of the
draft are committed in one pass while the model is at least ``CHAIN_CONFIDENCE`` sure of each.
"""

from __future__ import annotations

import copy
import re
import weakref
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from dlmprompt.errors import CompileError, GrammarError
from dlmprompt.tokenizer import Tokenizer

try:  # Python 3.11+: the regex parser moved; the old module names warn
    import re._constants as sre_constants  # type: ignore[import-not-found]
    import re._parser as sre_parse  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover
    import sre_constants  # type: ignore[no-redef]
    import sre_parse  # type: ignore[no-redef]

CHAIN_CONFIDENCE = 0.9  # commit more draft tokens in the same pass while each is this sure
MAX_GRAMMAR_CHARS = 200_000

_LL_TOKENIZERS: weakref.WeakKeyDictionary[Tokenizer, Any] = weakref.WeakKeyDictionary()


def load_llguidance() -> Any:
    try:
        import llguidance
    except ImportError:  # pragma: no cover - a declared dependency
        raise CompileError("grammar slots need llguidance: pip install llguidance") from None
    return llguidance


class _TokenizerView:
    """What llguidance's TokenizerWrapper reads from a tokenizer."""

    def __init__(self, tok: Tokenizer) -> None:
        end = tok.eos_id if tok.eos_id is not None else tok.pad_id
        if end is None:
            raise CompileError(f"grammar slots need an EOS or pad token and {tok.name} has neither")
        self.eos_token_id = end
        self.bos_token_id = tok.bos_id
        self.tokens = [b if b is not None else b"" for b in tok.token_bytes]
        self.special_token_ids = [i for i, b in enumerate(tok.token_bytes) if b is None]
        self._tok = tok

    def __call__(self, text: Any) -> list[int]:
        return self._tok.encode(text.decode("utf-8", errors="replace") if isinstance(text, bytes) else text)


def ll_tokenizer(tok: Tokenizer) -> Any:
    """llguidance's view of a :class:`Tokenizer` (built once per tokenizer)."""
    hit = _LL_TOKENIZERS.get(tok)
    if hit is None:
        ll = load_llguidance()
        hit = _LL_TOKENIZERS[tok] = ll.LLTokenizer(ll.TokenizerWrapper(_TokenizerView(tok)))
    return hit


@dataclass(frozen=True, eq=False)
class CompiledGrammar:
    lark: str
    ll_grammar: str  # llguidance's grammar spec
    witness: tuple[int, ...]  # a sentence of the grammar, in tokens, that fits the slot
    tokenizer: Tokenizer

    def matcher(self) -> Any:
        """A fresh matcher at the start of the grammar (a copy of one built once: building one
        takes seconds for a large JSON Schema, copying it under a millisecond).

        The copies share llguidance's lexer with the prototype, and a copy that runs the lexer out
        of fuel leaves it refusing every token, in every copy, with no error reported. So each
        copy is checked on the witness's first token, and the prototype rebuilt if it fails."""
        m = self.prototype.deep_copy()
        if self.witness and not _takes_first(m, self.witness[0]):
            self.__dict__["prototype"] = _new_matcher(self.tokenizer, self.ll_grammar)
            m = self.prototype.deep_copy()
        return m

    @cached_property
    def prototype(self) -> Any:
        """The matcher every :meth:`matcher` copies; never advanced itself."""
        return _new_matcher(self.tokenizer, self.ll_grammar)

    def adopt(self, matcher: Any) -> CompiledGrammar:
        """Take ``matcher``, built for this grammar and not advanced, as :attr:`prototype`."""
        self.__dict__["prototype"] = matcher
        return self

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the matcher (llguidance's cannot be pickled; it is rebuilt on use):
        compiled programs cross process boundaries in the server's compile workers."""
        state = dict(self.__dict__)
        state.pop("prototype", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


def _takes_first(m: Any, token: int) -> bool:
    """Whether a fresh matcher ``m`` takes ``token`` (left as it was)."""
    if m.try_consume_tokens([token]) != 1:
        return False
    m.rollback(1)
    return True


def ll_limits() -> Any:
    """llguidance's parser limits for every matcher built here: its default lexer fuel (1M) runs
    out on long strings under patterns with counted repeats (``(?:\\S+\\s+){0,99}``), after
    which the lexer, shared by every copy of the matcher, refuses every token."""
    return load_llguidance().LLParserLimits(initial_lexer_fuel=20_000_000)


def _new_matcher(tok: Tokenizer, ll_grammar: str) -> Any:
    ll = load_llguidance()
    m = ll.LLMatcher(ll_tokenizer(tok), ll_grammar, log_level=0, limits=ll_limits())
    if m.is_error():  # pragma: no cover - validated at compile time
        raise CompileError(f"grammar: {m.get_error()}")
    return m


# ---------------------------------------------------------------------------------------------- checking
_WHERE = re.compile(r"at (\d+)\((\d+)\)|^(\d+)\((\d+)\)", re.M)


def _llguidance_error(message: str, slot: str | None) -> GrammarError:
    text = message.strip()
    m = _WHERE.search(text)
    line = column = None
    if m:
        line = int(m.group(1) or m.group(3))
        column = int(m.group(2) or m.group(4))
    head, _, excerpt = text.partition("\n")
    return GrammarError(f"grammar: {head}", slot=slot, line=line, column=column, excerpt=excerpt.strip("\n") or None)


def _lark_parser(text: str, slot: str | None) -> Any:
    import lark
    from lark.exceptions import GrammarError as LarkGrammarError
    from lark.exceptions import UnexpectedInput

    try:
        return lark.Lark(text, start="start", parser="earley", lexer="dynamic")
    except UnexpectedInput as exc:
        excerpt = exc.get_context(text).rstrip("\n") if hasattr(exc, "get_context") else None
        raise GrammarError(
            f"grammar does not parse: {str(exc).splitlines()[0]}",
            slot=slot,
            line=getattr(exc, "line", None),
            column=getattr(exc, "column", None),
            excerpt=excerpt,
        ) from None
    except (LarkGrammarError, KeyError, ValueError, AssertionError) as exc:
        raise GrammarError(f"grammar: {exc}", slot=slot) from None


def compile_grammar(text: str, tok: Tokenizer, max_tokens: int, *, slot: str | None = None) -> CompiledGrammar:
    """Check a Lark grammar (rule ``start``) with lark and llguidance, and find a witness sentence
    of at most ``max_tokens`` tokens. Raises :class:`GrammarError` (line, column, excerpt) for a
    grammar that does not parse, :class:`CompileError` when no sentence fits."""
    if len(text) > MAX_GRAMMAR_CHARS:
        raise GrammarError(f"grammar of {len(text)} characters; the limit is {MAX_GRAMMAR_CHARS}", slot=slot)
    parser = _lark_parser(text, slot)
    ll = load_llguidance()
    try:
        spec = ll.LLMatcher.grammar_from_lark(text)
        error = ll.LLMatcher.validate_grammar(spec, ll_tokenizer(tok))
    except Exception as exc:  # llguidance raises on some inputs instead of reporting
        raise _llguidance_error(str(exc), slot) from None
    if error:
        raise _llguidance_error(error, slot)
    witness = _witness(parser, spec, tok, slot)
    if len(witness) > max_tokens:
        raise CompileError(
            f"the grammar's shortest sentence found takes {len(witness)} tokens, the slot has {max_tokens}; "
            f"use max_tokens={len(witness)} or more",
            slot=slot,
        )
    return CompiledGrammar(text, spec, tuple(witness), tok)


# ---------------------------------------------------------------------------------------------- the witness
def min_string(pattern: str, flags: int = 0) -> str:
    """A shortest string matching a (lark terminal) regex."""

    def walk(items: Any) -> str:
        out = []
        for op, av in items:
            if op is sre_constants.LITERAL:
                out.append(chr(av))
            elif op is sre_constants.NOT_LITERAL:
                out.append("a" if av != ord("a") else "b")
            elif op is sre_constants.ANY:
                out.append("a")
            elif op is sre_constants.IN:
                out.append(_in_char(av))
            elif op in (
                sre_constants.MAX_REPEAT,
                sre_constants.MIN_REPEAT,
                getattr(sre_constants, "POSSESSIVE_REPEAT", None),
            ):
                lo, _hi, sub = av
                out.append(walk(sub) * lo)
            elif op is sre_constants.SUBPATTERN:
                out.append(walk(av[-1]))
            elif op is sre_constants.BRANCH:
                out.append(min((walk(b) for b in av[1]), key=len))
            elif op is sre_constants.AT:
                continue
            elif op is getattr(sre_constants, "ATOMIC_GROUP", None):
                out.append(walk(av))
            else:
                raise ValueError(f"unsupported regex element {op}")
        return "".join(out)

    return walk(sre_parse.parse(pattern, flags))


def _in_char(items: Any) -> str:
    negate = any(op is sre_constants.NEGATE for op, _ in items)
    chars: list[str] = []
    for op, av in items:
        if op is sre_constants.LITERAL:
            chars.append(chr(av))
        elif op is sre_constants.RANGE:
            chars.append(chr(av[0]))
        elif op is sre_constants.CATEGORY:
            name = str(av)
            chars.append(
                "0" if "DIGIT" in name and "NOT" not in name else " " if "SPACE" in name and "NOT" not in name else "a"
            )
    if not negate:
        return chars[0] if chars else "a"
    banned = set(chars)
    return next(c for c in "a0 _x-" if c not in banned)


def _shortest_terminals(parser: Any) -> list[str]:
    """The shortest sentence of the grammar as terminal strings (by total characters)."""
    terms = {t.name: t for t in parser.terminals}
    tstr: dict[str, str] = {}
    for name, t in terms.items():
        p = t.pattern
        tstr[name] = p.value if type(p).__name__ == "PatternStr" else min_string(p.value, _flags(p))
    best: dict[str, tuple[int, list[Any]]] = {}
    rules = parser.rules
    changed = True
    while changed:  # Bellman-Ford style fixpoint over the rules
        changed = False
        for r in rules:
            total = 0
            for sym in r.expansion:
                if sym.is_term:
                    total += len(tstr[sym.name])
                elif sym.name in best:
                    total += best[sym.name][0]
                else:
                    break
            else:
                name = r.origin.name
                if name not in best or total < best[name][0]:
                    best[name] = (total, list(r.expansion))
                    changed = True
    if "start" not in best:
        raise ValueError("the grammar has no finite sentence")
    out: list[str] = []

    def expand(name: str, depth: int) -> None:
        if depth > 500:
            raise ValueError("the grammar's shortest sentence is too deep")
        for sym in best[name][1]:
            if sym.is_term:
                out.append(tstr[sym.name])
            else:
                expand(sym.name, depth + 1)

    expand("start", 0)
    return out


def _flags(pattern: Any) -> int:
    flags = 0
    for f in getattr(pattern, "flags", ()) or ():
        flags |= {"i": re.I, "m": re.M, "s": re.S, "x": re.X}.get(f, 0)
    return flags


def _witness(parser: Any, spec: str, tok: Tokenizer, slot: str | None) -> list[int]:
    try:
        pieces = _shortest_terminals(parser)
    except (ValueError, KeyError, StopIteration, RecursionError) as exc:
        raise CompileError(f"cannot find a sentence of the grammar: {exc}", slot=slot) from None
    ll = load_llguidance()
    for sep in ("", " ", "\n"):
        ids = tok.encode(sep.join(pieces))
        m = ll.LLMatcher(ll_tokenizer(tok), spec, log_level=0, limits=ll_limits())
        if m.validate_tokens(ids) == len(ids) and m.consume_tokens(ids) and m.is_accepting():
            return ids
    raise CompileError(
        f"cannot find a sentence of the grammar that its matcher accepts (tried {''.join(pieces)!r}); "
        "check the grammar's terminals and %ignore rules",
        slot=slot,
    )


# ---------------------------------------------------------------------------------------------- runtime
class GrammarCursor:
    """One row's progress through one grammar slot: the matcher after the committed prefix, the
    next position, and a witness completion that fits the positions left."""

    def __init__(self, compiled: CompiledGrammar, start: int, stop: int, pad_id: int) -> None:
        self.matcher = compiled.matcher()
        self.pos = start
        self.stop = stop
        self.pad_id = pad_id
        self.witness: list[int] = list(compiled.witness)  # [] means: end here (the text is a sentence)
        self.done = False
        self.vocab = len(compiled.tokenizer.token_bytes)
        self.ends = {t for t in (compiled.tokenizer.eos_id, pad_id) if t is not None}

    def clone(self) -> GrammarCursor:
        """An independent copy (its own matcher): a draft to walk without moving this cursor."""
        other = copy.copy(self)
        other.matcher = self.matcher.deep_copy()
        other.witness = list(self.witness)
        return other

    def walk(self, logp: np.ndarray, stop: int, noise: Any = None) -> list[tuple[int, int, float]]:
        """Commit every position up to ``stop`` (or the end of the text) by repeated
        :meth:`advance` calls: the model's allowed token when it can still close in time, else the
        witness's. ``noise``: a callable giving fresh Gumbel noise [V] per call, or None (greedy)."""
        out: list[tuple[int, int, float]] = []
        while not self.done and self.pos < min(self.stop, stop):
            got = self.advance(logp, None if noise is None else noise(), stop)
            if not got:  # pragma: no cover - advance always commits its first token
                break
            out.extend(got)
        return out

    def _allowed(self) -> np.ndarray:
        bits = np.frombuffer(self.matcher.compute_bitmask(), dtype=np.uint8)
        allowed = np.unpackbits(bits, bitorder="little")[: self.vocab].astype(bool)
        for t in self.ends:  # the end of the text is the pad, offered separately
            allowed[t] = False
        return allowed

    def _pick(self, scores: np.ndarray, allowed: np.ndarray, can_end: bool) -> int:
        """The best allowed token (the pad when the text may end here); -1 if none is allowed."""
        s = np.where(allowed, scores, -np.inf)
        if can_end:
            s[self.pad_id] = scores[self.pad_id]
        t = int(np.argmax(s))
        return t if np.isfinite(s[t]) else -1

    def _prob(self, row: np.ndarray, allowed: np.ndarray, can_end: bool, token: int) -> float:
        """The model's probability of ``token`` among the tokens allowed here."""
        ok = allowed.copy()
        if can_end:
            ok[self.pad_id] = True
        vals = row[ok]
        if len(vals) == 0:
            return 1.0
        top = vals.max()
        return float(np.exp(row[token] - top) / np.exp(vals - top).sum())

    def advance(self, logp: np.ndarray, noise: np.ndarray | None, block_stop: int) -> list[tuple[int, int, float]]:
        """Commit one or more tokens from the left end. ``logp``: log-probabilities [n, V] of the
        slot's last n positions (from the cursor to the slot's end; temperature applied);
        ``noise``: Gumbel noise [V] for sampling the first token, or None for greedy. Returns
        (position, token, confidence) triples."""
        out: list[tuple[int, int, float]] = []
        off0 = self.stop - logp.shape[0]
        while not self.done and self.pos < min(self.stop, block_stop):
            row = logp[self.pos - off0]
            first = not out
            scores = row + noise if noise is not None and first else row
            allowed = self._allowed()
            can_end = self.matcher.is_accepting()
            expected = self.witness[0] if self.witness else self.pad_id  # always safe
            token = self._pick(scores, allowed, can_end)
            if not first:
                # later tokens of a pass: only the witness's, and only while the model is sure
                if token != expected or self._prob(row, allowed, can_end, token) < CHAIN_CONFIDENCE:
                    break
            elif token == -1:
                token = expected
            elif token != expected and token != self.pad_id:
                draft = self._draft(token, logp, off0)
                if draft is None:  # the model's token cannot close in time: take the witness's
                    token = expected
                else:
                    self.witness = [token, *draft]
            conf = self._prob(row, allowed, can_end, token)
            if token == self.pad_id:  # the text is a sentence and ends here
                out.append((self.pos, token, conf))
                out.extend((p, self.pad_id, 1.0) for p in range(self.pos + 1, self.stop))
                self.pos = self.stop
                self.done = True
                break
            if not self.matcher.consume_token(token):  # pragma: no cover - allowed by the mask
                raise CompileError(f"the grammar matcher refused token {token} it allowed: {self.matcher.get_error()}")
            self.witness = self.witness[1:]
            out.append((self.pos, token, conf))
            self.pos += 1
            if self.pos == self.stop:
                self.done = True
        return out

    def _draft(self, token: int, logp: np.ndarray, off0: int) -> list[int] | None:
        """After ``token`` at the current position: the model's most likely allowed continuation
        (the pad counting as "end here" where the text is a sentence), cut back to its last
        sentence if it runs out of positions; None if it reaches no sentence within the slot."""
        m = self.matcher
        if not m.consume_token(token):
            return None
        taken = 1
        path: list[int] = []
        last_sentence = 0 if m.is_accepting() else -1  # length of the path at the last sentence
        try:
            p = self.pos + 1
            while p < self.stop:
                can_end = m.is_accepting()
                t = self._pick(logp[p - off0], self._allowed(), can_end)
                if t < 0 or t == self.pad_id:
                    break
                if not m.consume_token(t):  # pragma: no cover - allowed by the mask
                    break
                taken += 1
                path.append(t)
                p += 1
                if m.is_accepting():
                    last_sentence = len(path)
            if last_sentence < 0:
                return None
            return path[:last_sentence]  # (then end: the witness ends with the pad)
        finally:
            m.rollback(taken)
