"""Dynamic loss scaling: keeping float16 gradients from underflowing.

float16 has 10 bits of mantissa and 5 of exponent: its smallest normal number is 6.1e-5
(2**-14) and its smallest subnormal 6.0e-8 (2**-24), while the gradients of a network's
activations are often smaller, and silently become 0. Multiplying the loss by a scale `S`
before differentiating multiplies every gradient by `S`, which moves them into float16's
range; dividing the gradients by `S` afterwards, in float32, undoes it. Too large an `S`
overflows instead (float16's largest number is 65504): some gradient becomes `inf`.

Dynamic loss scaling (Micikevicius et al., 2018, "Mixed Precision Training", section 3.2)
finds `S` as training goes: it starts high (`2**15`); a step whose gradients are not all
finite is skipped (the weights and the optimizer state are left as they were) and `S` is
halved; after `period` consecutive steps with finite gradients, `S` is doubled. bfloat16
has float32's exponent range and needs none of this.

The state (`LossScale`: the scale, and the count of finite steps since it last changed) is
a pytree of two scalars that `train` keeps next to the optimizer state (`LossScaledState`),
so that checkpoints save it and a resumed run repeats the uninterrupted one bit for bit.
Everything here is pure: `jnp.where` selects, no Python control flow on traced values.

Why not `jmp` (DeepMind's mixed-precision library, whose `DynamicLossScale` implements the
same rule): its last release, 0.0.4, dates from 2023; it ships no type information (no
`py.typed`), so `mypy --strict` would see `Any`; its `adjust` multiplies an int32
counter by a bool, which JAX's strict dtype promotion (on in jaxmake's tests) rejects with
a `TypePromotionError`; and it floors the scale at 1, so gradients that are not finite at
any scale (a NaN from the model, not an overflow) are skipped forever, while `train` stops
with `TrainingDiverged` once the scale falls below 1. The rule itself is a few
`jnp.where`s, written out below (`next_loss_scale`).
"""

from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

import jax
import jax.numpy as jnp
from jax import Array

INITIAL_SCALE = 2.0**15
"""The scale of the first step: the largest power of 2 below float16's largest number, 65504."""

_Tree = TypeVar("_Tree")


class LossScale(NamedTuple):
    """The state of dynamic loss scaling: two scalars, saved in checkpoints with the optimizer state.

    Args:
        scale: `f32[]`, what the next step multiplies the loss by (a power of 2).
        finite_steps: `i32[]`, consecutive steps with finite gradients since the scale
            last changed, in `[0, period)`.
    """

    scale: Array
    finite_steps: Array


class LossScaledState(NamedTuple):
    """What `train` carries (and checkpoints) as its optimizer state with `loss_scaling="dynamic"`.

    Args:
        optimizer: the optax optimizer's state, as without loss scaling.
        loss_scale: the loss scale's state.
    """

    optimizer: Any
    loss_scale: LossScale


def init_loss_scale(scale: float = INITIAL_SCALE) -> LossScale:
    """The state before the first step: `scale`, and no finite step counted yet.

    Example:
        >>> init_loss_scale()
        LossScale(scale=Array(32768., dtype=float32), finite_steps=Array(0, dtype=int32))
    """
    return LossScale(jnp.asarray(scale, jnp.float32), jnp.asarray(0, jnp.int32))


def all_finite(tree: Any) -> Array:
    """`bool[]`: whether every element of every array of `tree` is finite (true for a tree without arrays)."""
    leaves = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def next_loss_scale(state: LossScale, finite: Array, period: int) -> LossScale:
    """The state after a step: halved if its gradients were not all finite, doubled after `period` finite steps.

    Args:
        state: the state the step used.
        finite: `bool[]`, whether the step's gradients were all finite (`all_finite`).
        period: how many consecutive finite steps double the scale, >= 1.

    Returns:
        With `finite` false: half the scale, count 0. Otherwise the count plus one; on
        reaching `period`, twice the scale (unless that is `inf`) and count 0. The scale
        may fall below 1; `train` stops there.

    Example:
        >>> state = next_loss_scale(init_loss_scale(), jnp.asarray(False), period=2)
        >>> float(state.scale), int(state.finite_steps)
        (16384.0, 0)
        >>> for _ in range(2):
        ...     state = next_loss_scale(state, jnp.asarray(True), period=2)
        >>> float(state.scale), int(state.finite_steps)
        (32768.0, 0)
    """
    counted = state.finite_steps + 1
    doubled = state.scale * 2
    grown = jnp.where(counted >= period, jnp.where(jnp.isfinite(doubled), doubled, state.scale), state.scale)
    return LossScale(
        scale=jnp.where(finite, grown, state.scale / 2),
        finite_steps=jnp.where(finite & (counted < period), counted, 0),
    )


def scaled_value_and_grad(
    loss: Callable[..., tuple[Array, Any]], scale: Array
) -> Callable[..., tuple[tuple[Array, Any], Any]]:
    """`jax.value_and_grad(loss, has_aux=True)`, differentiating `scale` times the loss; gradients divided back.

    Args:
        loss: `(*args) -> (loss, aux)`, the loss a scalar (cast to float32 before scaling).
        scale: `f32[]`, the loss scale.

    Returns:
        `(*args) -> ((loss, aux), grads)`: the loss as `loss` returns it (not scaled), and
        the gradients with respect to the first argument, each divided by `scale` in
        float32 and cast back to its own dtype. Where the scaled gradients overflowed,
        they stay `inf` or `nan`.

    Example:
        >>> grad_fn = scaled_value_and_grad(lambda w: (jnp.sum(w * w), {}), jnp.float32(1024.0))
        >>> (value, aux), grads = grad_fn(jnp.array([1.0, 2.0]))
        >>> float(value), grads
        (5.0, Array([2., 4.], dtype=float32))
    """

    def scaled(*args: Any) -> tuple[Array, tuple[Array, Any]]:
        value, aux = loss(*args)
        return jnp.asarray(value).astype(jnp.float32) * scale, (value, aux)

    grad_fn = jax.value_and_grad(scaled, has_aux=True)

    def value_and_grad(*args: Any) -> tuple[tuple[Array, Any], Any]:
        (_, (value, aux)), grads = grad_fn(*args)
        return (value, aux), jax.tree.map(lambda g: (g.astype(jnp.float32) / scale).astype(g.dtype), grads)

    return value_and_grad


def select_tree(pred: Array, on_true: _Tree, on_false: _Tree) -> _Tree:
    """Each leaf of `on_true` where `pred` (`bool[]`) holds, else of `on_false` (same structure, shapes, dtypes)."""
    selected: _Tree = jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)
    return selected
