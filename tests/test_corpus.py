"""The read-and-copy training corpus (dlmprompt.models.corpus) and its separation from the OOD set."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

pytest.importorskip("faker")

from dlmprompt.models import corpus
from dlmprompt.models.records import FAMILIES

ROOT = Path(__file__).resolve().parent.parent


def _ood():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("ood_extraction", ROOT / "benchmarks" / "ood_extraction.py")
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


RECS = corpus.make_corpus_records(1500, 3)


def _skeleton(rec: dict) -> str:
    """The text with its values replaced by their field names: the phrasing without the values."""
    text = rec["text"]
    fields = sorted(FAMILIES[rec["family"]], key=lambda f: -len(str(rec["values"][f.name])))
    for f in fields:
        if f.kind != "choice":
            text = text.replace(str(rec["values"][f.name]), "{" + f.name + "}")
    return re.sub(r"[0-9]+", "#", text)


def test_corpus_is_reproducible() -> None:
    assert corpus.make_corpus_records(30, 3) == RECS[:30]
    assert corpus.make_corpus_records(30, 4) != RECS[:30]


def test_every_family_has_many_distinct_phrasings() -> None:
    for family in FAMILIES:
        recs = [r for r in RECS if r["family"] == family]
        assert len(recs) > 200
        skeletons = {_skeleton(r) for r in recs}
        assert len(skeletons) > 0.6 * len(recs), family
        # clause order varies: the first field mentioned is not always the same
        firsts = {
            min((r["text"].find(str(r["values"][f.name])), f.name) for f in FAMILIES[family] if f.kind != "choice")[1]
            for r in recs
        }
        assert len(firsts) >= 2, family


def test_values_are_verbatim_in_the_text_and_match_their_field() -> None:
    for r in RECS:
        for f in FAMILIES[r["family"]]:
            v = str(r["values"][f.name])
            if f.kind == "choice":
                assert v in f.options
                assert v.lower().rstrip("s") in r["text"].lower()  # "book" for books
            else:
                assert v in r["text"], (f.name, v, r["text"])
                assert re.fullmatch(f.regex, v), (f.name, v)
            v.encode("latin-1")


def test_values_come_from_wide_pools() -> None:
    people = [r for r in RECS if r["family"] == "person"]
    domains = {r["values"]["email"].split("@")[1] for r in people}
    assert len(domains) > 40
    assert len({r["values"]["city"] for r in people}) > 0.5 * len(people)
    assert any(re.search("[À-ÿ]", r["values"]["name"]) for r in people)
    # distractors: more numbers in the text than the record holds
    assert sum(len(re.findall(r"\d+", r["text"])) > 2 for r in people) > 0.1 * len(people)


def test_canvases_fit_and_code_reads_as_code() -> None:
    from dlmprompt.models.train import CANVAS, build_read_examples, hf_tokenizer
    from dlmprompt.tokenizer import Tokenizer

    tok = Tokenizer.from_hf(hf_tokenizer(ROOT / "dlmprompt" / "models" / "default_model" / "tokenizer.json"))
    examples = build_read_examples(300, 40, 0, tok, log=lambda m: None)
    assert len(examples) > 250
    assert all(len(e.ids) <= CANVAS and len(e.ids) == len(e.loss) for e in examples)
    for name, expr in corpus.method_pairs(200, 0):
        assert re.fullmatch(r"[a-z_][a-z0-9_]*", name)
        assert re.fullmatch(r"[a-z_][a-z0-9_.]*( [-+*/<>=]+ [a-z_][a-z0-9_.]*)?", expr)
    pairs = corpus.method_pairs(2000, 0)
    assert any(n == "add" and re.fullmatch(r"self\.(\w+) \+ other\.\1", e) for n, e in pairs)
    assert all(" + " in e for n, e in pairs if n in ("add", "__add__", "plus"))


def test_ood_set_is_separate_from_the_training_grammar() -> None:
    ood = _ood()
    docs = ood.ood_documents()
    assert len(docs) >= 100 and {d["family"] for d in docs} == set(FAMILIES)
    assert sum(d["source"] == "handwritten" for d in docs) >= 20
    for d in docs:
        for f in FAMILIES[d["family"]]:
            v = str(d["values"][f.name])
            assert v in d["text"], (v, d["text"])
            if f.regex:
                assert re.fullmatch(f.regex, v), (f.name, v)
    # no OOD template phrase (a literal run of 3+ words between placeholders) is in the training grammar
    train_src = (ROOT / "dlmprompt" / "models" / "corpus.py").read_text(encoding="utf-8")
    train_src += (ROOT / "dlmprompt" / "models" / "train.py").read_text(encoding="utf-8")
    train_texts = "\n".join(r["text"] for r in RECS)
    for templates in ood.OOD_TEMPLATES.values():
        for t in templates:
            for lit in re.split(r"\{[a-z_]+\}", t):
                lit = lit.strip(" .,;:()-|/!")
                if len(lit.split()) >= 3:
                    assert lit not in train_src and lit not in train_texts, lit
    # and no OOD text is produced by the training grammar
    texts = {r["text"] for r in RECS}
    assert not texts & {d["text"] for d in docs}
