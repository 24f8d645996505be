"""`PositionalEncoding` and `TensorPositionalEncoding` against NumPy references."""

import itertools
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import jaxmake as jm
from jaxmake.components._positional import (
    PositionalEncodeStrategy,
    PositionalEncoding,
    TensorPositionalEncodeStrategy,
    TensorPositionalEncoding,
    sinusoidal_encoding,
)
from jaxmake.testing import assert_contracts, assert_gradients, configs


def _shapes(weight_params: jm.WeightParamsTree) -> Any:
    return jax.tree.map(jnp.shape, jm.abstract_weights(weight_params))


def np_grid_encoding(strategy: str, x: Any, tables: list[Any]) -> Any:
    """The reference: position by position, each axis's column of its table."""
    x = np.asarray(x, np.float64)
    tables = [np.asarray(t, np.float64) for t in tables]
    out = np.empty_like(x)
    for position in itertools.product(*(range(n) for n in x.shape[:-1])):
        vectors = [table[:, i] for table, i in zip(tables, position)]
        if strategy == "naive_sum":
            out[position] = x[position] + np.sum(vectors, axis=0)
        elif strategy == "sum":
            out[position] = x[position] + np.prod(vectors, axis=0)
        else:
            out[position] = x[position] * np.prod(vectors, axis=0)
    return out


def np_sinusoids(length: int, dim: int) -> Any:
    """Vaswani et al. (2017), section 3.5, entry by entry."""
    pe = np.zeros((length, dim))
    for pos in range(length):
        for i in range(dim):
            angle = pos / 10000 ** (2 * (i // 2) / dim)
            pe[pos, i] = np.sin(angle) if i % 2 == 0 else np.cos(angle)
    return pe


def test_seed_vit_shapes() -> None:
    grid = TensorPositionalEncoding.make(TensorPositionalEncoding((7, 7, 1), 12, 12, 12, "dot", 0.001))
    assert _shapes(grid.weight_params) == {
        "encoding_dim_0": (12, 7),
        "encoding_dim_1": (12, 7),
        "encoding_dim_2": (12, 1),
    }
    assert grid.weight_params["encoding_dim_2"] == jm.WeightParams((12, 1), "normal", 0.001, axes=("embed", None))
    y = PositionalEncoding.make(PositionalEncoding(max_input_length=1, dim_encoding=12))
    assert _shapes(y.weight_params) == {"encoding_dim_0": (12, 1)}
    sinusoids = PositionalEncoding.make(PositionalEncoding(5, 12, "sinusoidal"))
    assert sinusoids.weight_params == {}
    image = jax.ShapeDtypeStruct((7, 7, 1, 12), jnp.float32)
    out = jax.eval_shape(grid.fixed_pipeline, jm.abstract_weights(grid.weight_params), image)
    assert out.shape == (7, 7, 1, 12)


@pytest.mark.parametrize("strategy", ["dot", "sum", "naive_sum"])
def test_tensor_strategies_match_numpy(strategy: TensorPositionalEncodeStrategy, getkey: Any) -> None:
    encoding = TensorPositionalEncoding.make(TensorPositionalEncoding((2, 3), 4, 4, 4, strategy, init_scale=1.0))
    weights = jm.make_weights(getkey(), encoding.weight_params)
    x = jr.normal(getkey(), (2, 3, 4))
    expected = np_grid_encoding(strategy, x, [weights["encoding_dim_0"], weights["encoding_dim_1"]])
    np.testing.assert_allclose(encoding.fixed_pipeline(weights, x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("strategy", ["sum", "dot"])
def test_learned_sequence_encodings_match_numpy(strategy: PositionalEncodeStrategy, getkey: Any) -> None:
    fixed = PositionalEncoding.make(PositionalEncoding(5, 3, strategy, init_scale=1.0))
    dynamic = PositionalEncoding.make(PositionalEncoding(5, 3, strategy, init_scale=1.0, dynamic_length=True))
    weights = jm.make_weights(getkey(), fixed.weight_params)
    table = np.asarray(weights["encoding_dim_0"], np.float64)
    x = jr.normal(getkey(), (5, 3))
    xn = np.asarray(x, np.float64)
    expected = xn + table.T if strategy == "sum" else xn * table.T
    np.testing.assert_allclose(fixed.fixed_pipeline(weights, x), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dynamic.fixed_pipeline(weights, x), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dynamic.fixed_pipeline(weights, x[:2]), expected[:2], rtol=1e-5, atol=1e-6)


def test_a_sequence_is_the_grid_with_one_axis(getkey: Any) -> None:
    summed = PositionalEncoding.make(PositionalEncoding(4, 3, "sum"))
    multiplied = PositionalEncoding.make(PositionalEncoding(4, 3, "dot"))
    weights = jm.make_weights(getkey(), summed.weight_params)
    x = jr.normal(getkey(), (4, 3))
    strategies: list[tuple[TensorPositionalEncodeStrategy, jm.Component]] = [
        ("sum", summed),
        ("naive_sum", summed),
        ("dot", multiplied),
    ]
    for strategy, sequence in strategies:
        grid = TensorPositionalEncoding.make(TensorPositionalEncoding((4,), 3, 3, 3, strategy))
        np.testing.assert_allclose(grid.fixed_pipeline(weights, x), sequence.fixed_pipeline(weights, x))


@pytest.mark.parametrize("dim", [6, 5])
def test_sinusoidal_matches_vaswani(dim: int, getkey: Any) -> None:
    np.testing.assert_allclose(sinusoidal_encoding(50, dim), np_sinusoids(50, dim), atol=2e-5)
    encoding = PositionalEncoding.make(PositionalEncoding(50, dim, "sinusoidal", dynamic_length=True))
    x = jr.normal(getkey(), (7, dim))
    np.testing.assert_allclose(jax.jit(encoding.fixed_pipeline)({}, x), np.asarray(x) + np_sinusoids(7, dim), atol=2e-5)
    assert sinusoidal_encoding(3, dim, jnp.bfloat16).dtype == jnp.bfloat16


def test_dynamic_length_takes_any_length_up_to_the_limit_and_fixed_exactly_it() -> None:
    dynamic = PositionalEncoding.make(PositionalEncoding(5, 3, dynamic_length=True))
    fixed = PositionalEncoding.make(PositionalEncoding(5, 3))
    assert (dynamic.limits, dict(dynamic.dims)) == ({"T": 5}, {"dim_encoding": 3})
    assert (fixed.limits, dict(fixed.dims)) == ({}, {"dim_encoding": 3, "max_input_length": 5})
    weights = jm.abstract_weights(dynamic.weight_params)

    def call(component: jm.Component, length: int) -> Any:
        x = jax.ShapeDtypeStruct((length, 3), jnp.float32)
        return jax.eval_shape(component.checked(), weights, {jm.Input: x}, None)[jm.Output].shape

    assert [call(dynamic, n) for n in (1, 4, 5)] == [(1, 3), (4, 3), (5, 3)]
    with pytest.raises(jm.ShapeError, match=r"reason:   dimension T is 6, above its limit of 5"):
        call(dynamic, 6)
    assert call(fixed, 5) == (5, 3)
    with pytest.raises(
        jm.ShapeError, match=r'expected: Float\[Array, "max_input_length dim_encoding"\]\n  got:      f32\[4,3\]'
    ):
        call(fixed, 4)


def test_tensor_contract_spells_the_grid() -> None:
    encoding = TensorPositionalEncoding.make(TensorPositionalEncoding((2, 3), 4, 4, 4))
    weights = jm.abstract_weights(encoding.weight_params)
    with pytest.raises(
        jm.ShapeError, match=r'expected: Float\[Array, "2 3 input_channels"\]\n  got:      f32\[2,1,4\]'
    ):
        jax.eval_shape(encoding.checked(), weights, {jm.Input: jax.ShapeDtypeStruct((2, 1, 4), jnp.float32)}, None)


def test_contracts_jit_and_vmap(getkey: Any) -> None:
    for component in (
        PositionalEncoding.make(PositionalEncoding(4, 3, "dot", dynamic_length=True)),
        PositionalEncoding.make(PositionalEncoding(4, 3, "sinusoidal")),
        TensorPositionalEncoding.make(TensorPositionalEncoding((2, 1, 3), 2, 2, 2, "naive_sum")),
    ):
        assert_contracts(component, getkey())


def test_batched_by_vmap_under_jit(getkey: Any) -> None:
    encoding = TensorPositionalEncoding.make(TensorPositionalEncoding((2, 3), 4, 4, 4, "sum", init_scale=1.0))
    weights = jm.make_weights(getkey(), encoding.weight_params)
    x = jr.normal(getkey(), (3, 2, 3, 4))
    batched = jax.jit(jax.vmap(encoding.fixed_pipeline, in_axes=(None, 0)))(weights, x)
    tables = [weights["encoding_dim_0"], weights["encoding_dim_1"]]
    expected = np.stack([np_grid_encoding("sum", example, tables) for example in x])
    np.testing.assert_allclose(batched, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("strategy", ["dot", "sum", "naive_sum"])
def test_gradients_reach_every_table(strategy: TensorPositionalEncodeStrategy, getkey: Any) -> None:
    encoding = TensorPositionalEncoding.make(TensorPositionalEncoding((2, 3, 2), 4, 4, 4, strategy, init_scale=1.0))
    weights = jm.make_weights(getkey(), encoding.weight_params)
    x = jr.normal(getkey(), (2, 3, 2, 4))
    assert_gradients(jax.jit(lambda w: jnp.sum(jnp.sin(encoding.fixed_pipeline(w, x)))), weights)


def test_sequence_gradients_reach_only_the_positions_used(getkey: Any) -> None:
    encoding = PositionalEncoding.make(PositionalEncoding(5, 3, "sum", dynamic_length=True))
    weights = jm.make_weights(getkey(), encoding.weight_params)
    x = jr.normal(getkey(), (3, 3))
    grads = assert_gradients(jax.jit(lambda w: jnp.sum(jnp.sin(encoding.fixed_pipeline(w, x)))), weights)
    assert np.all(np.asarray(grads["encoding_dim_0"])[:, 3:] == 0)


def test_config_errors() -> None:
    with pytest.raises(
        jm.ConfigError,
        match=r"^`TensorPositionalEncoding.input_channels`=8 must equal `dim_encoding`=12: every strategy combines",
    ):
        TensorPositionalEncoding((7, 7, 1), 8, 12, 12)
    with pytest.raises(
        jm.ConfigError, match=r"^`TensorPositionalEncoding.output_channels`=6 must equal `dim_encoding`=12"
    ):
        TensorPositionalEncoding((7, 7, 1), 12, 6, 12)
    with pytest.raises(
        jm.ConfigError, match=r"^`TensorPositionalEncoding.input_shape`=\(\) must have at least 1 items$"
    ):
        TensorPositionalEncoding((), 12, 12, 12)
    with pytest.raises(
        jm.ConfigError, match=r"^`PositionalEncoding.positional_encode_strategy`='naive_sum' must be one of"
    ):
        PositionalEncoding(5, 12, "naive_sum")  # type: ignore[arg-type]
    with pytest.raises(jm.ConfigError, match=r"^`PositionalEncoding.max_input_length`=0 must be >= 1$"):
        PositionalEncoding(0, 12)


@given(configs(PositionalEncoding))
def test_drawn_sequence_configs_make_their_weight_spec(config: PositionalEncoding) -> None:
    encoding = PositionalEncoding.make(config)
    expected = (
        {}
        if config.positional_encode_strategy == "sinusoidal"
        else {"encoding_dim_0": (config.dim_encoding, config.max_input_length)}
    )
    assert _shapes(encoding.weight_params) == expected


def grid_configs(dim: int) -> st.SearchStrategy[TensorPositionalEncoding]:
    return configs(TensorPositionalEncoding, input_channels=dim, output_channels=dim, dim_encoding=dim)


@given(st.integers(1, 4).flatmap(grid_configs))
def test_drawn_grid_configs_make_their_weight_spec(config: TensorPositionalEncoding) -> None:
    encoding = TensorPositionalEncoding.make(config)
    assert _shapes(encoding.weight_params) == {
        f"encoding_dim_{k}": (config.dim_encoding, n) for k, n in enumerate(config.input_shape)
    }
