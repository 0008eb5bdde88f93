"""Constraints: what a slot may contain, as token-level automata or grammar matchers.

Owns the regular constraints (:mod:`.automaton`: regex and choice lifted from a byte DFA to token
classes; :mod:`.tokenwalk`: the walks over the vocabulary that give each token's transitions;
:mod:`.regexdfa`: a native regex -> byte DFA for the shapes outlines-core builds too slowly),
the context-free ones (:mod:`.grammar`: Lark grammar slots through llguidance) and JSON
Schema (:mod:`.jsonschema`: normalise and resolve, rewrite the logic keywords, lay out as a
template of anchors and regular holes, or a context-free span). May import only :mod:`dlmprompt.errors` and
:mod:`dlmprompt.tokenizer` from this package; nothing here imports torch, the compiler or the
sampler.
"""
