"""`SelfMultiHeadAttn` against a NumPy reference computed head by head, row by row."""

from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import jaxmake as jm
from jaxmake.components._attention import MASKED_PORTS, SelfMultiHeadAttn
from jaxmake.testing import assert_contracts, assert_gradients, configs

N_HEADS, DIM_MODEL, DIM_INPUT, T = 3, 6, 5, 4  # head_dim 2


def random_weights(weight_params: jm.WeightParamsTree, seed: int) -> jm.Weights:
    """Weights ~ N(0, 0.5^2), every bias and norm weight non-trivial, drawn by NumPy.

    `jm.make_weights` compiles one XLA program per spec, which costs seconds on a small
    CPU; NumPy draws cost nothing.
    """
    rng = np.random.default_rng(seed)
    weights: jm.Weights = jax.tree.map(
        lambda s: jnp.asarray(0.5 * rng.normal(size=s.shape), s.dtype), jm.abstract_weights(weight_params)
    )
    return weights


def normal(shape: tuple[int, ...], seed: int) -> jax.Array:
    """A standard normal float32 array drawn by NumPy (no XLA compile)."""
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def np_attention(w: Any, x: Any, n_heads: int, mask: Any = None) -> tuple[Any, Any]:
    """Multi-head self-attention in float64: `(output [T, d], weights [n_heads, T, T])`."""
    w = jax.tree.map(lambda a: np.asarray(a, np.float64), w)
    x = np.asarray(x, np.float64)
    length, d = x.shape[0], w["out"]["w"].shape[0]
    head_dim = d // n_heads
    kqv = x @ w["kqv"]["w"] + w["kqv"]["b"]
    q, k, v = kqv[:, :d], kqv[:, d : 2 * d], kqv[:, 2 * d :]
    attn, heads = np.zeros((n_heads, length, length)), np.zeros((length, d))
    for h in range(n_heads):
        cols = slice(h * head_dim, (h + 1) * head_dim)
        for t in range(length):
            allowed = np.ones(length, bool) if mask is None else np.asarray(mask[t], bool)
            if not allowed.any():
                continue
            scores = k[:, cols] @ q[t, cols] / np.sqrt(head_dim)
            e = np.where(allowed, np.exp(scores - scores[allowed].max()), 0.0)
            attn[h, t] = e / e.sum()
            heads[t, cols] = attn[h, t] @ v[:, cols]
    return heads @ w["out"]["w"] + w["out"]["b"], attn


def random_mask(length: int, seed: int) -> Any:
    """A random `[T, T]` bool mask whose row 1 is fully masked and row 0 allows everything."""
    mask = np.random.default_rng(seed).random((length, length)) < 0.5
    mask[0], mask[1] = True, False
    return jnp.asarray(mask)


@pytest.fixture(scope="module")
def mha() -> jm.Component:
    return SelfMultiHeadAttn.make(SelfMultiHeadAttn(N_HEADS, DIM_MODEL, DIM_INPUT))


@pytest.fixture(scope="module")
def masked(mha: jm.Component) -> jm.FixedProcess:
    """The masked process, jitted: one compile for every test of these shapes."""
    process: jm.FixedProcess = jax.jit(mha.get_fixed_process(MASKED_PORTS))
    return process


def test_pipeline_matches_numpy_and_equals_an_all_true_mask(mha: jm.Component, masked: jm.FixedProcess) -> None:
    weights = random_weights(mha.weight_params, 0)
    x = normal((T, DIM_INPUT), 0)
    expected, _ = np_attention(weights, x, N_HEADS)
    np.testing.assert_allclose(jax.jit(mha.fixed_pipeline)(weights, x), expected, rtol=1e-5, atol=1e-5)
    everything = masked(weights, {jm.Input: x, "mask": jnp.ones((T, T), bool)})
    np.testing.assert_allclose(everything[jm.Output], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mask_kind", ["random", "causal", "none allowed"])
def test_masked_matches_numpy_with_exact_zeros(mask_kind: str, mha: jm.Component, masked: jm.FixedProcess) -> None:
    weights = random_weights(mha.weight_params, 1)
    x = normal((T, DIM_INPUT), 1)
    mask = {"random": random_mask(T, 2), "causal": jnp.tri(T, dtype=bool), "none allowed": jnp.zeros((T, T), bool)}[
        mask_kind
    ]
    outputs = masked(weights, {jm.Input: x, "mask": mask})
    expected, expected_attn = np_attention(weights, x, N_HEADS, mask)
    np.testing.assert_allclose(outputs[jm.Output], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(outputs["attn"], expected_attn, rtol=1e-5, atol=1e-6)
    attn, allowed = np.asarray(outputs["attn"]), np.asarray(mask)
    assert (attn[:, ~allowed] == 0).all(), "masked positions must get exactly 0"
    rows = allowed.any(-1)
    np.testing.assert_allclose(attn.sum(-1)[:, rows], 1.0, rtol=1e-6)
    assert (attn[:, ~rows] == 0).all(), "a fully masked row must be all zero"


def test_jit_of_vmap_over_a_batch_matches_numpy(mha: jm.Component) -> None:
    weights = random_weights(mha.weight_params, 3)
    xs = normal((3, T, DIM_INPUT), 3)
    masks = jnp.stack([random_mask(T, 10 + i) for i in range(3)])
    batched = jax.jit(jax.vmap(mha.get_fixed_process(MASKED_PORTS), in_axes=(None, 0)))
    outputs = batched(weights, {jm.Input: xs, "mask": masks})
    for i in range(3):
        expected, expected_attn = np_attention(weights, xs[i], N_HEADS, masks[i])
        np.testing.assert_allclose(outputs[jm.Output][i], expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(outputs["attn"][i], expected_attn, rtol=1e-5, atol=1e-6)


def test_gradients_are_finite_and_reach_every_weight_with_a_fully_masked_row(
    mha: jm.Component, masked: jm.FixedProcess
) -> None:
    weights = random_weights(mha.weight_params, 4)
    x = normal((T, DIM_INPUT), 4)

    def loss(w: jm.Weights, x: jax.Array) -> jax.Array:
        outputs = masked(w, {jm.Input: x, "mask": random_mask(T, 5)})
        return jnp.sum(outputs[jm.Output] ** 2) + jnp.sum(outputs["attn"] ** 2)

    assert_gradients(jax.jit(lambda both: loss(both["weights"], both["x"])), {"weights": weights, "x": x})


def test_contracts_on_real_numbers(mha: jm.Component) -> None:
    assert mha.fixed == frozenset(mha.processes)
    assert_contracts(mha, jr.key(7))


def test_n_heads_must_divide_dim_model() -> None:
    with pytest.raises(jm.ConfigError, match=r"^`SelfMultiHeadAttn.n_heads`=5 must divide `dim_model`=12$"):
        SelfMultiHeadAttn(n_heads=5, dim_model=12, dim_input=3)


@given(data=st.data())
def test_drawn_configs_make_the_fused_kqv_and_out_weights(data: st.DataObject) -> None:
    n_heads, head_dim = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    config = data.draw(configs(SelfMultiHeadAttn, n_heads=n_heads, dim_model=n_heads * head_dim))
    mha = SelfMultiHeadAttn.make(config)
    d, d_in = config.dim_model, config.dim_input
    assert jax.tree.map(jnp.shape, jm.abstract_weights(mha.weight_params)) == {
        "kqv": {"w": (d_in, 3 * d), "b": (3 * d,)},
        "out": {"w": (d, d), "b": (d,)},
    }
    assert dict(mha.dims) == {"n_heads": n_heads, "dim_model": d, "dim_input": d_in}


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("masked_input", [False, True], ids=["no_mask", "mask"])
def test_fused_attention_equals_the_explicit_path_and_numpy(causal: bool, masked_input: bool) -> None:
    """`jax.nn.dot_product_attention` (its XLA form on a CPU) against the einsum path, in float32;
    the random mask has a fully masked row."""
    made = {
        impl: SelfMultiHeadAttn.make(
            SelfMultiHeadAttn(N_HEADS, DIM_MODEL, DIM_INPUT, causal=causal, attention_impl=impl)
        )
        for impl in ("einsum", "fused")
    }
    weights, x, mask = random_weights(made["einsum"].weight_params, 20), normal((T, DIM_INPUT), 21), random_mask(T, 22)
    side = {"mask": mask} if masked_input else {}

    def loss(component: jm.Component, w: jm.Weights) -> tuple[jax.Array, jax.Array]:
        y = component(w, x, **side)
        return jnp.sum(jnp.sin(y)), y

    (_, fused), fused_grads = jax.jit(jax.value_and_grad(lambda w: loss(made["fused"], w), has_aux=True))(weights)
    (_, explicit), grads = jax.jit(jax.value_and_grad(lambda w: loss(made["einsum"], w), has_aux=True))(weights)
    np.testing.assert_allclose(fused, explicit, rtol=1e-5, atol=1e-6)
    for got, expected in zip(jax.tree.leaves(fused_grads), jax.tree.leaves(grads)):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    visible = np.tri(T, dtype=bool) if causal else np.ones((T, T), bool)
    reference, _ = np_attention(weights, x, N_HEADS, visible & np.asarray(mask) if masked_input else visible)
    np.testing.assert_allclose(fused, reference, rtol=1e-4, atol=1e-5)


def test_auto_is_fused_only_on_cudnn_and_fused_is_xla_elsewhere() -> None:
    from jaxmake.components._attention import _fused_implementation
    from jaxmake.components._precision import Policy

    gpu = jax.default_backend() == "gpu"
    f32, bf16 = (Policy(SelfMultiHeadAttn(2, 16, 16, dtype=dtype)) for dtype in ("float32", "bfloat16"))
    assert _fused_implementation("auto", f32, 8) is None
    assert _fused_implementation("auto", bf16, 8) == ("cudnn" if gpu else None)
    assert _fused_implementation("auto", bf16, 12) is None  # cuDNN needs a head_dim multiple of 8
    assert _fused_implementation("einsum", bf16, 8) is None
    assert _fused_implementation("fused", f32, 8) == "xla"  # cuDNN refuses float32
    assert _fused_implementation("fused", bf16, 8) == ("cudnn" if gpu else "xla")


def test_run_without_outputs_returns_the_attention_weights_too(mha: jm.Component) -> None:
    weights, x = random_weights(mha.weight_params, 23), normal((T, DIM_INPUT), 24)
    outputs = jax.eval_shape(lambda w: mha.run(w, {jm.Input: x, "mask": random_mask(T, 25)}), weights)
    assert sorted(outputs) == ["Output", "attn"]
