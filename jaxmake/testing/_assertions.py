"""Assertions that a component meets its contracts on real numbers."""

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax import Array

import jaxmake as jm


def random_inputs(
    ports: jm.ProcessPorts,
    dims: Mapping[str, int],
    key: Array,
    *,
    attempt: int = 0,
    int_high: int = 2,
    limits: Mapping[str, int] | None = None,
    state: jm.Weights | None = None,
) -> dict[str, Any]:
    """Random inputs matching the input annotations, with the sizes `jm.abstract_inputs` picks.

    Floats are standard normal, ints uniform in `[0, int_high)`, bools fair coins; a
    `State` port takes `state` (default `{}`).
    """
    values: dict[str, Any] = {}
    for name, abstract in jm.abstract_inputs(ports, dims, attempt, limits).items():
        if name == jm.State:
            values[name] = {} if state is None else state
            continue
        sub = jm.fold_in_name(key, name)
        if jnp.issubdtype(abstract.dtype, jnp.floating):
            values[name] = jr.normal(sub, abstract.shape, abstract.dtype)
        elif jnp.issubdtype(abstract.dtype, jnp.integer):
            values[name] = jr.randint(sub, abstract.shape, 0, int_high, abstract.dtype)
        else:
            values[name] = jr.bernoulli(sub, 0.5, abstract.shape)
    return values


def assert_contracts(
    component: jm.Component, key: Array, *, int_high: int = 2, batch: int = 2, tolerance: float = 2e-5
) -> jm.Weights:
    """Check every annotated process of `component` on real inputs, and return its weights.

    For each process whose inputs are annotated, at two sizes of every free dim: the
    outputs match their annotations (`component.checked`, jitted) and are finite; and at
    one size: the same rng gives the same result, and `jax.vmap` over a batch equals a
    loop over its examples. The weights match their spec. (Numerics against a reference,
    eager or not, are each component's own test.)

    A `State` port takes `jm.make_state(component.state_params)`, shared by the examples
    of a batch. The named axes the component declares (`axis_names`) are bound with size 1
    for the checked calls; a process that returns a new state and averages over them
    (BatchNorm in training) is not a loop over examples, so its `vmap` is not compared.

    `tolerance` is the relative and absolute tolerance of the comparisons: a batch is
    computed in another order than its examples one by one, so a component that computes
    in a 16-bit float needs about `2e-2` (bfloat16 keeps 8 bits of mantissa).

    Raises:
        AssertionError or ShapeError: naming the process that failed.
    """
    weights = jm.make_weights(key, component.weight_params)
    jm.check_weights(component.weight_params, weights)
    state = jm.make_state(component.state_params)
    for ports in component.processes:
        hints = [hint for name, hint in ports.input_types.items() if name != jm.State]
        if not hints or any(h is None for h in hints):
            continue
        process = component.checked(ports)
        for axis_name in component.axis_names:
            process = jax.vmap(process, in_axes=None, out_axes=None, axis_size=1, axis_name=axis_name)
        checked = jax.jit(process)
        rng = None if ports in component.fixed else jr.fold_in(key, 1)
        for attempt in (0, 1):
            inputs = random_inputs(
                ports,
                component.dims,
                jr.fold_in(key, 2 + attempt),
                attempt=attempt,
                int_high=int_high,
                limits=component.limits,
                state=state,
            )
            outputs = checked(weights, inputs, rng)
            for path, value in jax.tree_util.tree_leaves_with_path(outputs):
                assert bool(jnp.isfinite(value).all()), f"{ports}: output {jax.tree_util.keystr(path)} is not finite"
        _assert_close(outputs, checked(weights, inputs, rng), f"a second call of {ports} with the same rng", tolerance)
        if not (component.axis_names and jm.State in ports.outputs):
            _assert_vmap_is_a_loop(component, ports, weights, state, key, rng is not None, int_high, batch, tolerance)
    return weights


def _assert_vmap_is_a_loop(
    component: jm.Component,
    ports: jm.ProcessPorts,
    weights: jm.Weights,
    state: jm.Weights,
    key: Array,
    random: bool,
    int_high: int,
    batch: int,
    tolerance: float,
) -> None:
    process = jax.jit(component.get_process(ports))
    examples = [
        random_inputs(ports, component.dims, jr.fold_in(key, 10 + i), int_high=int_high, limits=component.limits)
        for i in range(batch)
    ]
    rngs = jr.split(jr.fold_in(key, 99), batch) if random else None
    stacked: dict[str, Any] = jax.tree.map(lambda *xs: jnp.stack(xs), *examples)
    in_axes: dict[str, int | None] = dict.fromkeys(stacked, 0)
    if jm.State in ports.inputs:  # one state for the batch
        stacked[jm.State], in_axes[jm.State] = state, None
        examples = [{**example, jm.State: state} for example in examples]
    batched = jax.jit(jax.vmap(process, in_axes=(None, in_axes, 0 if random else None)))(weights, stacked, rngs)
    for i, example in enumerate(examples):
        one = process(weights, example, None if rngs is None else rngs[i])
        _assert_close(one, jax.tree.map(lambda x, i=i: x[i], batched), f"vmap of {ports}, example {i}", tolerance)


def _assert_close(expected: Mapping[str, Any], actual: Mapping[str, Any], what: str, tolerance: float) -> None:
    assert set(expected) == set(actual), f"{what}: ports {sorted(actual)} instead of {sorted(expected)}"
    for name in expected:
        jax.tree.map(
            lambda a, e, name=name: np.testing.assert_allclose(
                np.asarray(a, np.float64),
                np.asarray(e, np.float64),
                rtol=tolerance,
                atol=tolerance,
                err_msg=f"{what}, port {name!r}",
            ),
            actual[name],
            expected[name],
        )


def assert_gradients(loss: Any, weights: jm.Weights, *, allow_zero: Sequence[str] = ()) -> jm.Weights:
    """Check that `jax.grad(loss)(weights)` is finite everywhere and non-zero on every array.

    Args:
        loss: a function `weights -> scalar`.
        weights: where to take the gradient.
        allow_zero: dotted paths of weights the loss may not depend on.

    Returns:
        The gradients.
    """
    grads: jm.Weights = jax.grad(loss)(weights)
    for path, grad in jax.tree_util.tree_leaves_with_path(grads):
        dotted = ".".join(str(getattr(k, "key", k)) for k in path)
        assert bool(jnp.isfinite(grad).all()), f"the gradient of `{dotted}` is not finite"
        if dotted not in allow_zero:
            assert bool(jnp.any(grad != 0)), f"the gradient of `{dotted}` is zero: the loss does not depend on it"
    return grads
