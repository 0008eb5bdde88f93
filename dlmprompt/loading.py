"""``dlmprompt.load``: one entry point for every kind of backend.

No argument gives the embedded default model, a folder gives a local checkpoint
(:func:`dlmprompt.models.backends.load_model`), and ``http(s)://`` gives a ``dlmprompt serve``
server (:func:`dlmprompt.serving.client.remote`). It sits above both layers it dispatches to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load(name_or_path: str | Path | None = None, **options: Any) -> Any:
    """Load a denoiser: the embedded default model (no argument), a local checkpoint folder, or a
    ``dlmprompt serve`` server by URL (``http://host:port``, a :class:`~dlmprompt.serving.client.RemoteBackend`).

    The family (masked LM, LLaDA-style, Dream-style, DiffusionGemma) is read from the config. LLaDA and Dream
    ship their model code with the checkpoint: pass ``trust_remote_code=True`` to run it. The
    options of a checkpoint are :func:`~dlmprompt.models.backends.load_model`'s: ``device=``,
    ``dtype=`` and ``trust_remote_code=``; those of a URL are the client's (``api_key=``, ...).
    """
    if isinstance(name_or_path, str) and name_or_path.startswith(("http://", "https://")):
        from dlmprompt.serving.client import remote

        return remote(name_or_path, **options)
    from dlmprompt.models.backends import load_model

    return load_model(name_or_path, **options)
