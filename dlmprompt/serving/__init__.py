"""Serving: the batching engine, the ASGI server and its clients.

Owns :mod:`.engine` (continuous batching over :func:`~dlmprompt.sampling.sampler.forward_step`),
:mod:`.server` (``dlmprompt serve``: the native and OpenAI-compatible APIs, SSE streaming) and
:mod:`.client` (``Client`` / ``AsyncClient`` and the remote backend). May import
:mod:`dlmprompt.models`, :mod:`dlmprompt.sampling` and everything below; never integrations.
"""
