"""`Linear`, `Mlp`, `MlpLayerNorm` against NumPy references."""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import jaxmake as jm
from jaxmake import components as jmc
from jaxmake.testing import assert_gradients


def np_layer_norm(x: Any, a: Any, b: Any, eps: float) -> Any:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * a + b


NP_ACTIVATIONS: dict[str, Callable[[Any], Any]] = {
    "relu": lambda x: np.maximum(x, 0),
    "gelu": lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3))),
    "tanh": np.tanh,
    "silu": lambda x: x / (1 + np.exp(-x)),
}


def _np(tree: Any) -> Any:
    return jax.tree.map(lambda x: np.asarray(x, np.float64), tree)


def test_linear_matches_numpy(getkey: Any) -> None:
    linear = jmc.Linear.make(jmc.Linear(5, 3))
    weights = jm.make_weights(getkey(), linear.weight_params)
    x = jr.normal(getkey(), (2, 4, 5))
    w = _np(weights)
    np.testing.assert_allclose(linear.fixed_pipeline(weights, x), np.asarray(x) @ w["w"] + w["b"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("activation", ["relu", "gelu", "tanh", "silu"])
@pytest.mark.parametrize("norm", [False, True])
def test_mlps_match_numpy(activation: jmc.Activation, norm: bool, getkey: Any) -> None:
    config: jmc.Mlp | jmc.MlpLayerNorm = (
        jmc.MlpLayerNorm(4, (6, 5), 3, activation, eps=1e-3) if norm else jmc.Mlp(4, (6, 5), 3, activation)
    )
    mlp = type(config).make(config)  # type: ignore[arg-type]
    weights = jm.make_weights(getkey(), mlp.weight_params)
    weights = jax.tree.map(lambda p: p + 0.1 * jr.normal(getkey(), p.shape), weights)  # non-trivial norm weights
    x = jr.normal(getkey(), (7, 4))
    w, h = _np(weights), np.asarray(x, np.float64)
    for i in range(3):
        h = h @ w[f"layer_{i}"]["w"] + w[f"layer_{i}"]["b"]
        if i < 2:
            if norm:
                h = np_layer_norm(h, w[f"norm_{i}"]["a"], w[f"norm_{i}"]["b"], 1e-3)
            h = NP_ACTIVATIONS[activation](h)
    np.testing.assert_allclose(mlp.fixed_pipeline(weights, x), h, rtol=1e-4, atol=1e-5)


def test_mlp_dropout_between_layers_only_when_an_rng_is_given(getkey: Any) -> None:
    mlp = jmc.Mlp.make(jmc.Mlp(4, (64,), 2, dropout_keep_rate=0.5))
    assert mlp.fixed == frozenset()
    weights = jm.make_weights(getkey(), mlp.weight_params)
    x = jr.normal(getkey(), (3, 4))
    plain = jmc.Mlp.make(jmc.Mlp(4, (64,), 2)).fixed_pipeline(weights, x)
    np.testing.assert_allclose(mlp.pipeline(weights, x, None), plain, rtol=1e-6)
    assert not np.allclose(mlp.pipeline(weights, x, getkey()), plain)


def test_mlp_with_no_hidden_layer_is_one_linear(getkey: Any) -> None:
    mlp = jmc.Mlp.make(jmc.Mlp(3, (), 2))
    assert jax.tree.map(jnp.shape, jm.abstract_weights(mlp.weight_params)) == {"layer_0": {"b": (2,), "w": (3, 2)}}


def test_mlp_gradients_reach_every_weight(getkey: Any) -> None:
    mlp = jmc.MlpLayerNorm.make(jmc.MlpLayerNorm(3, (8,), 2, "gelu"))
    weights = jm.make_weights(getkey(), mlp.weight_params)
    x = jr.normal(getkey(), (5, 3))
    target = jr.normal(getkey(), (5, 2))
    assert_gradients(lambda w: jnp.sum((mlp.fixed_pipeline(w, x) - target) ** 2), weights)


def test_errors_name_the_layer_path() -> None:
    with pytest.raises(jm.ConfigError, match=r"^`Mlp.n_hidden`=\(4, 0\) item 1: must be >= 1$"):
        jmc.Mlp(2, (4, 0), 2)
    with jm.scope("head"):
        mlp = jmc.Mlp.make(jmc.Mlp(2, (4,), 2))
    weights = jm.abstract_weights(mlp.weight_params)
    with pytest.raises(
        jm.ShapeError, match=r"^ShapeError in head, process \(Input\) -> \(Output\), input port 'Input'"
    ):
        jax.eval_shape(mlp.checked(), weights, {"Input": jax.ShapeDtypeStruct((3,), jnp.float32)}, None)
