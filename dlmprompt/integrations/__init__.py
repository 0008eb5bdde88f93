"""Integrations: adapters for agent frameworks (LangChain, pydantic-ai, DSPy, LlamaIndex).

Each adapter is one module that imports its framework lazily and translates onto the one
backend seam (``generate`` / ``sample`` over an in-process model or a server). May import every
layer below it (serving, models, sampling, compiler, spec); nothing imports it but the CLI.
"""
