from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings

# deterministic profile: the same examples on every run, in CI and locally
settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("ci")

from dlmprompt import Tokenizer  # noqa: E402

EXTRA_TOKENS = ["ab", "abc", "bc", "10", "00", "a ", " b", "the", "ca", "@e", ".c", "é", "né"]


@pytest.fixture(scope="session")
def byte_tok() -> Tokenizer:
    """Byte-level tokenizer with a few multi-byte tokens, so values can be spelled several ways."""
    return Tokenizer.bytes_level(EXTRA_TOKENS)


@pytest.fixture(scope="session")
def qwen_tok() -> Tokenizer:
    from dlmprompt.tokenizer import qwen25_tokenizer

    return qwen25_tokenizer()
