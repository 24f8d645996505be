"""BatchNorm: against NumPy and Flax NNX in both modes; its state through ports, vmap and contracts."""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt
import pytest
from flax import nnx

import jaxmake as jm
from jaxmake.components import BatchNorm

Tree = dict[str, Any]


def _numpy_batch_norm(
    x: npt.NDArray[np.float64], a: npt.NDArray[np.float64], b: npt.NDArray[np.float64], eps: float
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Normalised `x` `[N, *spatial, C]` by its statistics over every axis but the last; and those statistics."""
    axes = tuple(range(x.ndim - 1))
    mean, var = x.mean(axis=axes), x.var(axis=axes)
    return (x - mean) / np.sqrt(var + eps) * a + b, mean, var


def _setup(shape: tuple[int, ...], seed: int = 0) -> tuple[jm.Component, Tree, Tree, jax.Array]:
    bn = BatchNorm.make(BatchNorm(shape[-1], momentum=0.8, eps=1e-3))
    rng = np.random.default_rng(seed)
    weights = {
        "a": jnp.asarray(rng.uniform(0.5, 2, shape[-1]), jnp.float32),
        "b": jnp.asarray(rng.normal(size=shape[-1]), jnp.float32),
    }
    state = {
        "mean": jnp.asarray(rng.normal(size=shape[-1]), jnp.float32),
        "var": jnp.asarray(rng.uniform(0.5, 2, shape[-1]), jnp.float32),
    }
    return bn, weights, state, jnp.asarray(rng.normal(2.0, 3.0, size=shape), jnp.float32)


def _train(bn: jm.Component, weights: Tree, state: Tree, x: jax.Array) -> tuple[jax.Array, Tree]:
    def one(example: jax.Array) -> tuple[jax.Array, Tree]:
        return bn.apply(weights, example, state, train=True)

    y, new_state = jax.vmap(one, axis_name="batch", out_axes=(0, None))(x)
    return y, new_state


@pytest.mark.parametrize("shape", [(6, 3), (4, 5, 3, 2)], ids=["vectors", "images"])
def test_training_and_evaluation_match_numpy(shape: tuple[int, ...]) -> None:
    bn, weights, state, x = _setup(shape)
    y, new_state = jax.jit(_train, static_argnums=0)(bn, weights, state, x)
    a, b = (np.asarray(weights[k], np.float64) for k in "ab")
    expected, mean, var = _numpy_batch_norm(np.asarray(x, np.float64), a, b, 1e-3)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(new_state["mean"], 0.8 * np.asarray(state["mean"]) + 0.2 * mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(new_state["var"], 0.8 * np.asarray(state["var"]) + 0.2 * var, rtol=1e-4, atol=1e-5)

    evaluated = jax.vmap(lambda e: bn.apply(weights, e, state, train=False))(x)
    running = (np.asarray(x, np.float64) - np.asarray(state["mean"])) / np.sqrt(np.asarray(state["var"]) + 1e-3)
    np.testing.assert_allclose(evaluated[0], running * a + b, rtol=1e-4, atol=1e-4)
    assert bn.apply(weights, x[0], state, train=False)[1] is state, "evaluation returns the state it was given"


def test_equals_flax_nnx_batch_norm_in_both_modes() -> None:
    bn, weights, state, x = _setup((8, 3, 3, 4), seed=1)
    reference = nnx.BatchNorm(4, momentum=0.8, epsilon=1e-3, rngs=nnx.Rngs(0))
    assert reference.scale is not None and reference.bias is not None
    reference.scale[...], reference.bias[...] = weights["a"], weights["b"]
    reference.mean[...], reference.var[...] = state["mean"], state["var"]

    y, new_state = _train(bn, weights, state, x)
    np.testing.assert_allclose(y, reference(x, use_running_average=False), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(new_state["mean"], reference.mean[...], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(new_state["var"], reference.var[...], rtol=1e-6, atol=1e-6)

    evaluated = jax.vmap(lambda e: bn.apply(weights, e, new_state, train=False)[0])(x)
    np.testing.assert_allclose(evaluated, reference(x, use_running_average=True), rtol=1e-5, atol=1e-5)


def test_without_an_axis_name_each_example_uses_its_own_statistics() -> None:
    bn = BatchNorm.make(BatchNorm(2, axis_name=None))
    weights, state = jm.make_weights(jax.random.key(0), bn.weight_params), jm.make_state(bn.state_params)
    image = jnp.arange(12.0).reshape(2, 3, 2)
    y, _ = bn.apply(weights, image, state, train=True)
    np.testing.assert_allclose(y.mean(axis=(0, 1)), 0.0, atol=1e-6)
    assert bn.axis_names == ()


def test_training_outside_its_vmap_axis_says_how_to_call_it() -> None:
    bn = BatchNorm.make(BatchNorm(2))
    weights, state = jm.make_weights(jax.random.key(0), bn.weight_params), jm.make_state(bn.state_params)
    with pytest.raises(jm.ArgumentError, match=r"call it inside `jax\.vmap\(\.\.\., axis_name='batch'\)`"):
        bn.apply(weights, jnp.ones((3, 2)), state, train=True)


def test_state_spec_ports_and_make_state() -> None:
    bn = BatchNorm.make(BatchNorm(3, dtype="bfloat16"))
    assert jax.tree.map(lambda s: (s.shape, str(s.dtype)), jm.abstract_weights(bn.state_params)) == {
        "mean": ((3,), "float32"),
        "var": ((3,), "float32"),
    }
    assert {str(p) for p in bn.processes} == {"(Input, State) -> (Output)", "(Input, State) -> (Output, State)"}
    state = jm.make_state(bn.state_params)
    np.testing.assert_array_equal(state["var"], np.ones(3))
    y, _ = bn.apply(jm.make_weights(jax.random.key(0), bn.weight_params), jnp.ones((2, 3)), state, train=False)
    assert y.dtype == jnp.bfloat16


def test_a_checked_call_with_a_wrong_state_names_the_port_and_the_path() -> None:
    bn = BatchNorm.make(BatchNorm(3))
    weights = jm.make_weights(jax.random.key(0), bn.weight_params)
    evaluate = bn.checked(jm.make_ports((jm.Input, jm.State), jm.Output))
    inputs: dict[str, Any] = {jm.Input: jnp.ones((2, 3)), jm.State: {"mean": jnp.zeros(4)}}
    with pytest.raises(jm.ShapeError) as error:
        evaluate(weights, inputs, None)
    message = str(error.value)
    assert message.startswith("ShapeError in BatchNorm, process (Input, State) -> (Output), input port 'State'")
    assert "it does not match `state_params`" in message
    assert "wrong shape" in message and "mean: expected f32[3], got f32[4]" in message
    assert "missing" in message and "var: expected f32[3]" in message
