"""`Task` and `StatefulTask`: what a model gives the training loop (a loss, batches, an evaluation)."""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

import jax
import numpy as np
from jax import Array

import jaxmake as jm

Batch: TypeAlias = Any
"""A pytree of NumPy arrays (a dict, a tuple, ...): what `Task.batch` returns."""

LossFn: TypeAlias = Callable[[jm.Weights, Batch, Array], tuple[Array, Mapping[str, Array]]]
"""`(weights, batch, rng) -> (scalar loss, {name: scalar metric})`, a pure function."""
StatefulLossFn: TypeAlias = Callable[
    [jm.Weights, jm.Weights, Batch, Array], tuple[Array, tuple[Mapping[str, Array], jm.Weights]]
]
"""`(weights, state, batch, rng) -> (scalar loss, ({name: scalar metric}, new state))`, a pure function."""


@dataclass(frozen=True)
class Task:
    """What a model plugs into `train`: its loss, its batches and its evaluation.

    Args:
        loss: `(weights, batch, rng) -> (loss, metrics)`: a pure function of JAX values
            returning the scalar loss to minimise and a dict of scalar metrics (may be
            empty) averaged into the history. The loop compiles it once, inside
            `jax.value_and_grad(loss, has_aux=True)`; `rng` is a fresh key per step
            (for dropout), `fold_in(key(seed), step)`.
        batch: `step -> batch`: the batch of step `step` (0-based), a pytree of NumPy
            arrays with the same shapes at every step. It must be a deterministic
            function of `step`: that is what lets a resumed run repeat the
            uninterrupted one exactly. `shuffled_batches` makes one from arrays.
        evaluate: `weights -> {name: value}`, run every `eval_every` steps and at the
            end; its values are stored as `eval_<name>` in the history. `None` skips
            evaluation.

    Example:
        >>> def loss(weights, batch, rng):
        ...     error = batch["x"] @ weights["w"] - batch["y"]
        ...     return jnp.mean(error**2), {}
        >>> data = {"x": np.ones((8, 2), np.float32), "y": np.ones((8, 1), np.float32)}
        >>> task = Task(loss, shuffled_batches(data, batch_size=4, seed=0))
        >>> jax.tree.map(np.shape, task.batch(0))
        {'x': (4, 2), 'y': (4, 1)}
    """

    loss: LossFn
    batch: Callable[[int], Batch]
    evaluate: Callable[[jm.Weights], Mapping[str, float]] | None = None


@dataclass(frozen=True)
class StatefulTask:
    """What a model with state (BatchNorm's running statistics) plugs into `train`.

    As `Task`, but the loss also takes the state and returns the new one, and the
    evaluation reads it; `train(..., state=initial_state)` threads it through the steps
    and saves it in every checkpoint. The state is not trained: the loss is
    differentiated with respect to the weights only.

    Args:
        loss: `(weights, state, batch, rng) -> (loss, (metrics, new_state))`, e.g. a
            model's training process `(Input, State) -> (Output, State)` under
            `jax.vmap(..., axis_name="batch")`.
        batch: `step -> batch`, as for `Task`.
        evaluate: `(weights, state) -> {name: value}`, e.g. the evaluation process
            `(Input, State) -> (Output)`, which uses the running values; `None` skips it.
    """

    loss: StatefulLossFn
    batch: Callable[[int], Batch]
    evaluate: Callable[[jm.Weights, jm.Weights], Mapping[str, float]] | None = None


def as_stateful(task: "Task | StatefulTask") -> StatefulTask:
    """`task` as a `StatefulTask`: a `Task`'s loss and evaluation, given a state they pass through untouched."""
    if isinstance(task, StatefulTask):
        return task
    evaluate = task.evaluate

    def stateful_evaluate(weights: jm.Weights, state: jm.Weights) -> Mapping[str, float]:
        assert evaluate is not None
        return evaluate(weights)

    return StatefulTask(stateful_loss(task.loss), task.batch, None if evaluate is None else stateful_evaluate)


def stateful_loss(loss: LossFn) -> StatefulLossFn:
    """`loss` as a `StatefulLossFn`: it takes a state and returns it untouched."""

    def with_state(
        weights: jm.Weights, state: jm.Weights, batch: Batch, rng: Array
    ) -> tuple[Array, tuple[Mapping[str, Array], jm.Weights]]:
        value, metrics = loss(weights, batch, rng)
        return value, (metrics, state)

    return with_state


def shuffled_batches(arrays: Batch, batch_size: int, seed: int) -> Callable[[int], Batch]:
    """A deterministic batch function over arrays that share a leading (example) dim.

    Step `s` falls in epoch `s // steps_per_epoch`, where `steps_per_epoch =
    N // batch_size` (the last partial batch of each epoch is dropped). Each epoch visits
    the examples in the order `np.random.default_rng((seed, epoch)).permutation(N)`, so
    the batch of a step depends only on `(arrays, batch_size, seed, step)`.

    Args:
        arrays: a pytree of NumPy arrays, each of shape `[N, ...]`.
        batch_size: examples per batch, in [1, N].
        seed: seed of the example order, >= 0.

    Returns:
        `step -> batch`: the same pytree, each array of shape `[batch_size, ...]`.

    Raises:
        ValueError: the arrays disagree on `N`, or `batch_size` is not in [1, N].

    Example:
        >>> batch = shuffled_batches(np.arange(10), batch_size=4, seed=0)  # 2 steps per epoch
        >>> len(set(np.concatenate([batch(0), batch(1)]).tolist()))  # no example twice in an epoch
        8
        >>> bool((batch(3) == shuffled_batches(np.arange(10), 4, seed=0)(3)).all())  # a function of the step
        True
    """
    leaves, _ = jax.tree.flatten_with_path(arrays)
    if not leaves:
        raise ValueError("`shuffled_batches` needs at least one array, got an empty tree")
    sizes = {jax.tree_util.keystr(path): np.shape(leaf)[0] if np.ndim(leaf) else None for path, leaf in leaves}
    described = {path: "no leading dim" if size is None else str(size) for path, size in sizes.items()}
    n = next(iter(sizes.values()))
    if n is None or any(size != n for size in sizes.values()):
        listed = ", ".join(f"{path or 'the root'}: {size}" for path, size in described.items())
        raise ValueError(f"`shuffled_batches` needs arrays of the same leading size N, got {listed}")
    if not 1 <= batch_size <= n:
        raise ValueError(f"`shuffled_batches`: batch_size={batch_size} must be in [1, N={n}], N being the examples")
    per_epoch = n // batch_size
    orders: dict[int, np.ndarray[Any, np.dtype[np.int64]]] = {}

    def batch(step: int) -> Batch:
        epoch, index = divmod(step, per_epoch)
        if epoch not in orders:
            orders.clear()  # one epoch's order is kept: steps arrive in order
            orders[epoch] = np.random.default_rng((seed, epoch)).permutation(n)
        rows = orders[epoch][index * batch_size : (index + 1) * batch_size]
        return jax.tree.map(lambda a: np.asarray(a)[rows], arrays)

    return batch
