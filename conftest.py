"""Strict settings for the tests and doctests: fake CPU devices, strict dtype promotion, float32 matmuls."""

import contextlib
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

from collections.abc import Callable

import jax
import jax.numpy as jnp
import jax.random as jr
import pytest
from hypothesis import HealthCheck, settings

import jaxmake as jm

# tyro hashes every builtin on its first import; a doctest's `_` (a tuple holding a list) would break that.
with contextlib.suppress(ImportError):  # without the `train` extra
    import tyro._docstrings  # noqa: F401

jax.config.update("jax_numpy_dtype_promotion", "strict")
# Rank promotion stays allowed: a bias `b: [d]` added to `x @ w: [T, d]` is idiomatic.
# The numerics tests compare float32 results with NumPy references to ~1e-5: they check
# full float32 matmuls. On a GPU the backend's default is TF32 (off by up to 1.7% there),
# so the precision they check is stated once, here. Precision policies that ask for
# "high" or "highest" themselves are unaffected; "default" follows this setting.
jax.config.update("jax_default_matmul_precision", "highest")

# mypy must reject these files; they are read by tests/typing/test_typing.py, never imported.
collect_ignore_glob = ["tests/typing/reject/*"]

settings.register_profile(
    "ci", max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.register_profile("dev", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def getkey() -> Callable[[], jax.Array]:
    """A function returning a fresh PRNG key at each call (deterministic per test)."""
    keys = (jr.fold_in(jr.key(0), i) for i in range(1 << 30))
    return lambda: next(keys)


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace: dict[str, object]) -> None:
    """Docstring examples may use `jax`, `jnp` and `jm` without importing them."""
    doctest_namespace.update(jax=jax, jnp=jnp, jm=jm)
