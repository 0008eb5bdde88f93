"""Models: :class:`~dlmprompt.denoiser.Denoiser` implementations and the embedded default model.

Owns the transformers backends (:mod:`.backends`: masked LMs, LLaDA- and Dream-style DLMs),
block-causal block diffusion (:mod:`.blockcausal`: LLaDA2.x / SDAR, finished blocks in a KV
cache), uniform-noise block diffusion (:mod:`.blockdiffusion`: DiffusionGemma's own loop), the embedded
model's files (``default_model/``), its training (:mod:`.train`) and the record families it is
trained on (:mod:`.records`). May import :mod:`dlmprompt.sampling` and everything below it
(spec, compiler, constraints, tokenizer, errors); never serving or integrations.
"""
