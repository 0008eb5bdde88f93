"""Grounded slots: the value is a span of a source text, exactly, intersected with the slot's own
constraint. Property-tested both ways (every output is a span that satisfies the constraint;
every such span is reachable), at the byte level and at the Qwen2.5 vocabulary, on the dense and
the sparse (edge-list) automata and their forward-backward passes."""

from __future__ import annotations

import json
import random
import re
import unicodedata

import jsonschema
import numpy as np
import pytest
import torch
from helpers import check_result
from hypothesis import given, settings
from hypothesis import strategies as st

import dlmprompt
from dlmprompt import AnchorRef, CompileError, Grounded, Prompt, SpecError, Text, compile, generate, slot
from dlmprompt.constraints import grounded as gmod
from dlmprompt.constraints.grounded import SparseTokenAutomaton, grounded_automaton
from dlmprompt.sampling.chain import run_chains
from dlmprompt.testing import RandomDenoiser

PATTERNS = [r"[\s\S]*", r"[A-Za-z]+", r"[a-z]+( [a-z]+)*", r"[0-9]+", r"[A-Z][a-z]*", r"(cat|dog|é+)"]
ALPHABET = "ab cAB,.-1é@'“— "
LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def word_chars(text: str) -> list[bool]:
    """Letters, marks, digits and connectors; a joiner (. @ - ' + %) between two of them."""
    base = [unicodedata.category(ch)[0] in "LMN" or unicodedata.category(ch) == "Pc" for ch in text]
    return [
        base[i] or (ch in ".@-'+%" and 0 < i < len(text) - 1 and base[i - 1] and base[i + 1])
        for i, ch in enumerate(text)
    ]


def reference(text: str, pattern: str, whole_words: bool, ignore_case: bool, optional: bool):  # type: ignore[no-untyped-def]
    """What the grounded constraint means, written with Python strings: a membership test."""
    w = word_chars(text)
    cuts = {i for i in range(len(text) + 1) if i in (0, len(text)) or not (w[i - 1] and w[i])}
    spans = {text[i:j] for i in range(len(text) + 1) for j in range(i, len(text) + 1) if j > i or optional}
    if whole_words:
        spans = {text[i:j] for i in cuts for j in cuts if (j > i or (optional and j == i))}
    folded = {s.translate(LOWER) for s in spans} if ignore_case else spans

    def member(value: str) -> bool:
        if re.fullmatch(pattern, value) is None:
            return False
        return (value.translate(LOWER) if ignore_case else value) in folded

    return spans, member


def spellings(tok, value: str) -> list[list[int]]:  # type: ignore[no-untyped-def]
    """The canonical encoding and the byte-by-byte one (different token boundaries)."""
    data = value.encode()
    ids = {b: i for i, b in enumerate(tok.token_bytes) if b is not None and len(b) == 1}
    return [tok.encode(value), [ids[bytes([b])] for b in data]]


def random_values(auto, tok, rng: random.Random, n: int = 60, max_len: int = 12) -> list[str]:  # type: ignore[no-untyped-def]
    """Texts of random accepted token paths (walking only into states that can still accept)."""
    members = auto.class_members
    out = []
    for _ in range(n):
        s, path = auto.start, []
        for _ in range(max_len):
            if auto.accept[s] and rng.random() < 0.3:
                break
            if isinstance(auto, SparseTokenAutomaton):
                sel = auto.src == s
                options = list(zip(auto.cls[sel].tolist(), auto.dst[sel].tolist()))
            else:
                row = auto.next_state[:, s]
                options = [(c, int(row[c])) for c in np.nonzero(row >= 0)[0]]
            if not options:
                break
            c, s = rng.choice(options)
            path.append(int(rng.choice(members[c])))
        if auto.accept[s]:
            out.append(tok.decode_bytes(path).decode("utf-8"))
    return out


@settings(max_examples=120)
@given(
    text=st.text(st.sampled_from(ALPHABET), min_size=1, max_size=24),
    pattern=st.sampled_from(PATTERNS),
    whole_words=st.booleans(),
    ignore_case=st.booleans(),
    optional=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_grounded_automaton_is_exactly_spans_that_match(
    text, pattern, whole_words, ignore_case, optional, seed, byte_tok
) -> None:  # type: ignore[no-untyped-def]
    spans, member = reference(text, pattern, whole_words, ignore_case, optional)
    reachable = [v for v in spans if member(v)]
    try:
        auto = grounded_automaton(
            (text,), pattern, byte_tok, whole_words=whole_words, ignore_case=ignore_case, allow_empty=optional
        )
    except CompileError as exc:
        assert not reachable and "no span of the source text matches" in str(exc)
        return
    # complete: every span that satisfies the pattern is accepted, however it is spelled
    for v in reachable:
        for ids in spellings(byte_tok, v):
            assert auto.accepts(ids), (v, ids)
        if ignore_case and member(v.swapcase()):
            assert auto.accepts(byte_tok.encode(v.swapcase())), v
    # sound: everything accepted is such a span
    for v in random_values(auto, byte_tok, random.Random(seed)):
        assert member(v), (v, text, pattern)


@settings(max_examples=25)
@given(
    words=st.lists(
        st.sampled_from(["Ada", "Lovelace", "London", "36", "ada@x.org", "mit", "naïve", "the"]), min_size=3
    ),
    whole_words=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_grounded_at_qwen_size(words, whole_words, seed, qwen_tok) -> None:  # type: ignore[no-untyped-def]
    text = " ".join(words) + "."
    pattern = r"[A-Za-zï]+( [A-Za-zï]+)*"
    spans, member = reference(text, pattern, whole_words, False, False)
    auto = grounded_automaton((text,), pattern, qwen_tok, whole_words=whole_words)
    for v in (v for v in spans if member(v)):
        for ids in spellings(qwen_tok, v):
            assert auto.accepts(ids), v
    for v in random_values(auto, qwen_tok, random.Random(seed)):
        assert member(v), v


def test_several_sources_never_join(byte_tok) -> None:
    auto = grounded_automaton(("abc", "xyz"), r"[a-z]+", byte_tok)
    assert auto.accepts(byte_tok.encode("bc")) and auto.accepts(byte_tok.encode("xy"))
    assert not auto.accepts(byte_tok.encode("cx")) and not auto.accepts(byte_tok.encode("abcxyz"))


def test_sparse_and_dense_passes_agree(monkeypatch, byte_tok) -> None:
    text = "Ada Lovelace met Charles Babbage in London in 1833; Ada wrote the first program."
    monkeypatch.setattr(gmod, "DENSE_CELLS", 1 << 30)
    gmod._AUTOMATA.clear()
    dense = grounded_automaton((text,), r"[A-Za-z ]+", byte_tok).with_pad(byte_tok.pad_id)
    monkeypatch.setattr(gmod, "DENSE_CELLS", 0)
    monkeypatch.setattr(gmod, "DENSE_FILL", 0)
    gmod._AUTOMATA.clear()
    sparse = grounded_automaton((text,), r"[A-Za-z ]+", byte_tok).with_pad(byte_tok.pad_id)
    assert isinstance(sparse, SparseTokenAutomaton) and not isinstance(dense, SparseTokenAutomaton)
    assert np.array_equal(dense.token_class, sparse.token_class) and dense.n_classes == sparse.n_classes
    rng = np.random.default_rng(0)
    for trial in range(6):
        n = 10
        committed = [np.full(n, -1, dtype=np.int64) for _ in range(2)]
        if trial % 2:  # commit a valid prefix in slot 0: the class path of "Ada "
            s = dense.start
            for j, t in enumerate(byte_tok.encode("Ada ")):
                committed[0][j] = dense.token_class[t]
                s = dense.step(s, t)
        m = sum(int((c < 0).sum()) for c in committed)
        logP = rng.normal(size=(m, dense.n_classes)) * 2
        noise = None if trial in (2, 3) else -np.log(-np.log(rng.uniform(size=(m, dense.n_classes))))
        a = run_chains(dense, committed, logP, noise=noise)
        b = run_chains(sparse, committed, logP, noise=noise)
        assert np.array_equal(a.classes, b.classes)
        np.testing.assert_allclose(a.logw, b.logw, rtol=1e-9, atol=1e-9)


def test_long_text_samples_spans_on_the_sparse_path(qwen_tok, monkeypatch) -> None:
    gmod._AUTOMATA.clear()
    rng = random.Random(3)
    words = "amber basil cedar delta ember fjord glade harbor island jasper kestrel lumen meadow".split()
    text = " ".join(rng.choice(words).capitalize() if rng.random() < 0.2 else rng.choice(words) for _ in range(700))
    prompt = (
        Prompt(Text(text=f"Notes: {text}\n", name="notes"))
        + "A place: "
        + slot("place", regex="[A-Z][a-z]+( [a-z]+)*", max_tokens=6, grounded=AnchorRef(anchor="notes"))
        + "\nA phrase: "
        + slot("phrase", max_tokens=5, grounded=Grounded(sources=(AnchorRef(anchor="notes"),), whole_words=True))
    ).with_sampling(steps=6, temperature=1.0)
    program = compile(prompt, qwen_tok)
    assert all(isinstance(s.automaton, SparseTokenAutomaton) for s in program.layout.slots)
    for seed in range(3):
        res = generate(RandomDenoiser(qwen_tok, seed=seed), program, generator=torch.Generator().manual_seed(seed))
        check_result(program, res)
        assert res["place"] in text and re.fullmatch("[A-Z][a-z]+( [a-z]+)*", res["place"])
        assert res["phrase"] in f" {text} " and res["phrase"]
        i = text.find(res["phrase"])
        assert (i == 0 or text[i - 1] == " " or not res["phrase"][0].isalpha()) and res["phrase"] in text


def test_json_slots_ground_free_string_leaves(embedded) -> None:  # type: ignore[no-untyped-def]
    doc = "Order ORD-123456 for Grace Hopper (3 units) ships to Arlington, status: shipped."
    schema = {
        "type": "object",
        "properties": {
            "customer": {"type": "string"},
            "city": {"type": "string", "x-grounded": {"sources": ["Arlington", "Boston"]}},
            "note": {"type": "string", "maxLength": 6, "x-grounded": False},
            "status": {"enum": ["pending", "shipped"]},
            "units": {"type": "integer"},
        },
        "required": ["customer", "city", "note", "status", "units"],
    }
    prompt = Prompt(f"Text: {doc}\nRecord: ") + slot("order", schema=schema, grounded=doc, max_tokens=8)
    program = compile(prompt.with_sampling(steps=12, temperature=1.0), embedded.tokenizer)
    for seed in range(3):
        res = generate(embedded, program, generator=torch.Generator().manual_seed(seed))
        check_result(program, res)
        rec = json.loads(res["order"])
        jsonschema.validate(rec, schema)
        assert rec["customer"] in doc and rec["customer"]
        assert rec["city"] and any(rec["city"] in source for source in ("Arlington", "Boston"))


def test_extraction_prompt_grounds_every_string_field(embedded) -> None:  # type: ignore[no-untyped-def]
    from dlmprompt.models.records import FAMILIES, extraction_prompt

    texts = {
        "person": "Meet Ada Lovelace, 36, from London (email: ada.lovelace@example.org).",
        "order": "Grace Hopper ordered 3 lamps, order ORD-004211, which has shipped.",
        "event": "The Harbor Jazz Festival opens in Lisbon on 2025-06-14.",
    }
    for family, text in texts.items():
        res = generate(
            embedded, extraction_prompt(family, text, grounded=True), generator=torch.Generator().manual_seed(0)
        )
        for f in FAMILIES[family]:
            if f.kind == "string":
                value = res[f.name]
                assert value and value in text and re.fullmatch(f.regex, value), (family, f.name, value)
    plain = extraction_prompt("person", texts["person"])
    assert all(s.grounded is None for s in plain.slots)


def test_templates_take_grounded(embedded) -> None:  # type: ignore[no-untyped-def]
    t = dlmprompt.Template.from_string('Text: {{ doc }}\nName: {{ slot("name", max_tokens=6, grounded=doc) }}\n')
    p = t.render(doc="Call Alan Turing tomorrow.")
    res = generate(embedded, p, generator=torch.Generator().manual_seed(0))
    assert res["name"] in "Call Alan Turing tomorrow." and res["name"]


def test_grounding_errors_say_what_to_change(byte_tok) -> None:
    with pytest.raises(CompileError, match="no span of the source text matches"):
        compile(Prompt("x: ") + slot("n", regex="[0-9]+", max_tokens=3, grounded="no digits here"), byte_tok)
    with pytest.raises(CompileError, match=r"no anchor has that name.*Text\(\.\.\., name='doc'\)"):
        compile(Prompt("x: ") + slot("n", max_tokens=3, grounded=AnchorRef(anchor="doc")), byte_tok)
    with pytest.raises(CompileError, match="two anchors are named 'a'"):
        compile(Prompt(Text(text="p", name="a"), Text(text="q", name="a")) + slot("n", max_tokens=2), byte_tok)
    with pytest.raises(SpecError, match="not grammar="):
        slot("g", grammar='start: "a"', max_tokens=2, grounded="a")
    with pytest.raises(SpecError, match="grounded= takes a text"):
        slot("g", max_tokens=2, grounded=3)
    schema = {"type": "object", "properties": {"a": {"type": "string", "x-grounded": True}}, "required": ["a"]}
    with pytest.raises(CompileError, match="x-grounded: true needs the slot's sources"):
        compile(Prompt("r: ") + slot("r", schema=schema), byte_tok)
    # a spec with grounding round-trips through JSON (the server compiles it)
    p = Prompt(Text(text="doc", name="d")) + slot("n", max_tokens=2, grounded=[AnchorRef(anchor="d"), "other"])
    assert Prompt.from_json(p.model_dump_json()) == p


@pytest.fixture(scope="module")
def embedded():  # type: ignore[no-untyped-def]
    return dlmprompt.load()


def test_openai_api_takes_grounded(embedded) -> None:  # type: ignore[no-untyped-def]
    from openai import OpenAI

    from dlmprompt.serving.server import background

    doc = "Invoice from Ada Lovelace, London, due 2025-03-01."
    schema = {"type": "object", "properties": {"who": {"type": "string"}, "city": {"type": "string"}}}
    schema["required"] = ["who", "city"]
    with background(embedded) as server:
        client = OpenAI(base_url=server.url + "/v1", api_key="x")
        done = client.chat.completions.create(
            model="x",
            messages=[{"role": "user", "content": doc}],
            response_format={"type": "json_schema", "json_schema": {"name": "r", "schema": schema}},
            extra_body={"grounded": True},
            seed=1,
        )
        rec = json.loads(done.choices[0].message.content)
        assert rec["who"] in doc and rec["city"] in doc and rec["who"] and rec["city"]
        done = client.completions.create(
            model="x", prompt=f"{doc}\nCity: ", extra_body={"regex": "[A-Z][a-z]+", "grounded": ["Paris or Lyon"]}
        )
        city = done.choices[0].text
        assert city in "Paris or Lyon" and re.fullmatch("[A-Z][a-z]+", city), city
        with pytest.raises(Exception, match="not grammar="):
            client.completions.create(
                model="x", prompt="x", extra_body={"grammar": 'start: "a"', "grounded": "a"}, max_tokens=4
            )


def test_tokens_with_the_same_bytes_share_a_class() -> None:
    tok = dlmprompt.Tokenizer(
        [b"a", b"b", b"ab", b"ab", b"x", None, None], lambda s: [], mask_id=5, pad_id=6, name="twins"
    )
    auto = grounded_automaton(("xab",), "[a-z]+", tok)
    assert auto.accepts([2]) and auto.accepts([3]) and auto.accepts([4, 3]) and not auto.accepts([3, 4])
    assert auto.token_class[2] == auto.token_class[3] >= 0


def test_grounding_that_cannot_reach_a_value_says_so(byte_tok) -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
        "required": ["a"],
    }
    program = compile(Prompt("r: ") + slot("r", schema=schema, grounded="some text", max_tokens=4), byte_tok)
    assert any("/b: not grounded" in n for n in program.notes), program.notes
    refused = {"type": "object", "patternProperties": {"^x": {"type": "string"}}}
    with pytest.raises(CompileError, match="a grounded JSON slot needs a schema the template takes"):
        compile(Prompt("r: ") + slot("r", schema=refused, grounded="text"), byte_tok)


def test_has_span_agrees_with_the_automaton(byte_tok) -> None:
    from dlmprompt.constraints.grounded import has_span

    text = "Ada Lovelace, born 1815, lives in London (ORD-123456)."
    for pattern in (r"[1-9][0-9]?", r"[0-9]{4}", r"ORD-[0-9]{6}", r"[A-Z][a-z]+", r"[a-z]+@[a-z]+"):
        for whole in (False, True):
            try:
                grounded_automaton((text,), pattern, byte_tok, whole_words=whole)
                built = True
            except CompileError:
                built = False
            assert has_span((text,), pattern, whole_words=whole) == built, (pattern, whole)


def test_forward_weights_do_not_underflow_far_below_the_best_state() -> None:
    """A state 1000 nats below another one keeps its weight in every pass (dense, reference, sparse)."""
    from dlmprompt.constraints.automaton import TokenAutomaton
    from dlmprompt.sampling.chain import run_chain
    from dlmprompt.sampling.sparsechain import run_chains_sparse

    ns = np.full((4, 4), -1, dtype=np.int32)
    ns[0, 0], ns[1, 0], ns[2, 1], ns[3, 2] = 1, 2, 3, 3  # 0 -a-> 1 -c-> 3, 0 -b-> 2 -d-> 3
    auto = TokenAutomaton(np.arange(4, dtype=np.int32), ns, 0, np.array([False, False, False, True]))
    logP = np.array([[0.0, -1000.0, -np.inf, -np.inf], [-np.inf, -np.inf, -2000.0, 0.0]])
    committed = [np.full(2, -1, dtype=np.int64)]
    dense = run_chains(auto, committed, logP, noise=np.zeros_like(logP))
    ref = run_chain(auto, committed[0], logP, noise=np.zeros_like(logP), want=np.ones(2, dtype=bool))
    src, cls = np.array([0, 0, 1, 2]), np.array([0, 1, 2, 3])
    sparse = SparseTokenAutomaton(auto.token_class, src, cls, np.array([1, 2, 3, 3]), 4, 4, 0, auto.accept)
    classes, logw = run_chains_sparse(sparse, committed, logP, noise=np.zeros_like(logP))
    assert list(dense.classes) == list(ref.classes) == list(classes) == [1, 3]  # b then d: -1000 beats -2000
    for w in (dense.logw, ref.logw, logw):
        # class d at position 1 carries all the constrained mass: weight 1 (log 0), not an underflow
        assert abs(w[1, 3]) < 1e-9 and abs(w[0, 1] - 1000.0) < 1e-9
