"""Sampling: the denoising loop over a :class:`~dlmprompt.denoiser.Denoiser`.

Owns the host loop (:mod:`.sampler`: ``sample`` / ``generate`` / ``forward_step``), the row state
both paths share (:mod:`.rows`; adaptive length and remasking in :mod:`.adaptive`), the events
it yields (:mod:`.events`), the forward-backward chain passes (:mod:`.chain` in numpy,
:mod:`.devicechain` in torch, :mod:`.tritonchain` as one fused kernel), the CUDA device path
(:mod:`.devicepath`) and the position-choice strategies (:mod:`.remasking`).
May import :mod:`dlmprompt.spec`, :mod:`dlmprompt.compiler`,
:mod:`dlmprompt.constraints`, :mod:`dlmprompt.denoiser`, :mod:`dlmprompt.errors` and
:mod:`dlmprompt.tokenizer`; never the models, serving or integrations layers.
"""
