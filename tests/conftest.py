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


@pytest.fixture(scope="module", params=["host", "device"])
def both_paths(request):  # type: ignore[no-untyped-def]
    """Run a module's tests on the sampler's host path and again on its device path (forced on
    the CPU here; on CUDA it is the default)."""
    import os

    old = os.environ.get("DLMPROMPT_SAMPLER")
    os.environ["DLMPROMPT_SAMPLER"] = request.param
    yield request.param
    if old is None:
        os.environ.pop("DLMPROMPT_SAMPLER", None)
    else:
        os.environ["DLMPROMPT_SAMPLER"] = old


@pytest.fixture(scope="session")
def denoiser():  # type: ignore[no-untyped-def]
    """The embedded model, loaded once for the suites that need it."""
    import dlmprompt

    return dlmprompt.load()


@pytest.fixture(scope="session")
def server(denoiser):  # type: ignore[no-untyped-def]
    """One real server (uvicorn on a loopback port) over the embedded model, shared by the suites."""
    from dlmprompt.serving.server import background

    with background(denoiser) as srv:
        yield srv


def pytest_configure(config):  # type: ignore[no-untyped-def]
    # langchain-tests' standard suite carries a pytest-benchmark test; run it once, untimed (tests
    # never assert wall-clock times; timings live in benchmarks/)
    if config.pluginmanager.hasplugin("pytest_benchmark") or config.pluginmanager.hasplugin("benchmark"):
        config.option.benchmark_disable = True
