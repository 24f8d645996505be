"""The precision policy: the dtypes of weights and of every port, and what stays float32.

Everything here is abstract (`jax.eval_shape`) but the bfloat16 numerics, which compare a
bfloat16 model with the same model in float32.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxtyping import Array, Float32

import jaxmake as jm
from jaxmake import components as jmc
from jaxmake.components._precision import Policy

DTYPES = ["float32", "bfloat16", "float16"]
_HALF: dict[str, Any] = {"dtype": "bfloat16", "param_dtype": "float16", "matmul_precision": "highest"}

_SMALL_TRANSFORMER: dict[str, Any] = {"n_heads": 2, "dim_model": 8, "mlp_n_hidden": (16,)}


def _configs(dtype: str, param_dtype: str) -> list[tuple[Any, dict[str, Any], dict[str, str]]]:
    """`(config, inputs, the dtype of each output)` for a component of every kind."""
    policy: dict[str, Any] = {"dtype": dtype, "param_dtype": param_dtype}
    x = jnp.ones((5, 8), jnp.float32)
    mask = jnp.tri(5, dtype=bool)
    encoder = jmc.TransformerEncoder(**_SMALL_TRANSFORMER, n_tfe_layers=2, **policy)
    return [
        (jmc.Linear(8, 3, **policy), {jm.Input: x}, {jm.Output: dtype}),
        (jmc.MlpLayerNorm(8, (4,), 3, **policy), {jm.Input: x}, {jm.Output: dtype}),
        (jmc.LayerNorm(8, **policy), {jm.Input: x}, {jm.Output: dtype}),
        (jmc.RMSNorm(8, **policy), {jm.Input: x}, {jm.Output: dtype}),
        (jmc.Embeddings(7, 8, **policy), {jm.Input: jnp.arange(5)}, {jm.Output: dtype}),
        (jmc.Embeddings(7, 8, **policy), {"embedding": x}, {"logits": "float32"}),
        (jmc.PositionalEncoding(5, 8, **policy), {jm.Input: x}, {jm.Output: dtype}),
        (jmc.SelfMultiHeadAttn(2, 8, 8, **policy), {jm.Input: x, "mask": mask}, {jm.Output: dtype, "attn": "float32"}),
        (encoder, {jm.Input: x, "mask": mask}, {jm.Output: dtype, "attn": "float32"}),
        (
            jmc.Vit(**_SMALL_TRANSFORMER, n_tfe_layers=1, hwc=(4, 4, 1), n_patches_side=2, **policy),
            {jm.Input: jnp.ones((4, 4, 1))},
            {"logits": "float32"},
        ),
        (
            jmc.Gpt(**_SMALL_TRANSFORMER, n_tfe_layers=1, vocab_size=7, n_ctx=8, **policy),
            {jm.Input: jnp.arange(5), "targets": jnp.arange(5)},
            {"loss": "float32"},
        ),
    ]


@pytest.mark.parametrize("param_dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_weights_are_stored_in_param_dtype_and_outputs_computed_in_dtype(dtype: str, param_dtype: str) -> None:
    for config, inputs, expected in _configs(dtype, param_dtype):
        component = type(config).make(config)
        weights = jm.abstract_weights(component.weight_params)
        assert {str(w.dtype) for w in jax.tree.leaves(weights)} <= {param_dtype}, config
        outputs = jax.eval_shape(lambda w, i, c=component, o=tuple(expected): c.run(w, i, outputs=o), weights, inputs)
        assert {name: str(out.dtype) for name, out in outputs.items()} == expected, config


def test_a_bfloat16_models_ports_say_so() -> None:
    layer = jmc.TransformerLayer.make(jmc.TransformerLayer(**_SMALL_TRANSFORMER, dtype="bfloat16"))
    assert len(layer.processes) == 3
    for ports in layer.processes:
        assert ports.output_types[jm.Output].dtypes == ("bfloat16",), ports
        if "attn" in ports.outputs:
            assert ports.output_types["attn"].dtypes == ("float32",), ports


def test_a_contract_that_says_float32_rejects_a_bfloat16_output_at_make_time() -> None:
    def pipeline(weights: jm.Weights, x: Float32[Array, "T d"]) -> Float32[Array, "T d"]:
        return x.astype(jnp.bfloat16)

    with pytest.raises(jm.ShapeError, match=r"Float32\[Array, \"T d\"\]"):
        jm.Component.from_pipeline({}, pipeline)


@pytest.mark.parametrize("config", [jmc.Linear(3, 2, **_HALF), jmc.Mlp(3, (4, 5), 2, **_HALF)], ids=repr)
def test_the_policy_passes_down_to_every_child(config: Any) -> None:
    component = type(config).make(config)
    dtypes = {str(w.dtype) for w in jax.tree.leaves(jm.abstract_weights(component.weight_params))}
    assert dtypes == {"float16"}
    jaxpr = jax.make_jaxpr(lambda w, x: component(w, x))(jm.abstract_weights(component.weight_params), jnp.ones((2, 3)))
    dots = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "dot_general"]
    assert dots, "no matmul traced"
    for dot in dots:
        assert {str(v.aval.dtype) for v in dot.invars} == {"bfloat16"}
        assert dot.params["precision"] == (jax.lax.Precision.HIGHEST, jax.lax.Precision.HIGHEST)


def test_default_matmul_precision_follows_the_callers_setting() -> None:
    assert Policy(jmc.Linear(2, 2)).precision is None  # `jax.default_matmul_precision` decides


def test_a_config_shows_its_own_fields_first() -> None:
    assert repr(jmc.Linear(3, 4)).startswith("Linear(n_in=3, n_out=4, init_scale=1.0")


def test_bfloat16_gpt_loss_is_close_to_float32_and_its_gradients_are_float32() -> None:
    fields: dict[str, Any] = {**_SMALL_TRANSFORMER, "n_tfe_layers": 1, "vocab_size": 11, "n_ctx": 8}
    f32, bf16 = (jmc.Gpt.make(jmc.Gpt(**fields, dtype=d)) for d in ("float32", "bfloat16"))
    weights = jm.make_weights(jax.random.key(0), f32.weight_params)
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 11, 8), jnp.int32)
    inputs = {jm.Input: tokens, "targets": jnp.roll(tokens, -1)}

    def loss(component: jm.Component, w: jm.Weights) -> jax.Array:
        value: jax.Array = component.run(w, inputs)["loss"]
        return value

    exact, grads_exact = jax.jit(jax.value_and_grad(lambda w: loss(f32, w)))(weights)
    mixed, grads_mixed = jax.jit(jax.value_and_grad(lambda w: loss(bf16, w)))(weights)
    assert mixed.dtype == jnp.float32
    np.testing.assert_allclose(mixed, exact, rtol=2e-2)
    for g_mixed, g_exact in zip(jax.tree.leaves(grads_mixed), jax.tree.leaves(grads_exact)):
        assert g_mixed.dtype == jnp.float32
        error, scale = float(jnp.linalg.norm(g_mixed - g_exact)), float(jnp.linalg.norm(g_exact))
        assert error <= 0.1 * scale + 1e-6, f"bfloat16 gradient off by {error / scale:.1%}"  # bf16: 8 bits of mantissa
