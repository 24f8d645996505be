"""The optimizer of a `TrainConfig`: clipping, then AdamW on a warmup + cosine schedule.

optax mixes its int32 step count with Python floats (in the schedules and Adam's bias
correction), which JAX's strict dtype promotion rejects. So the schedule and optimizer made
here run under standard promotion, whatever the global setting; the caller's own code (the
loss) keeps the caller's setting.
"""

from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import jax
import optax

from jaxmake.training._config import TrainConfig


def make_schedule(config: TrainConfig) -> optax.Schedule:
    """The learning rate at each step: linear warmup from 0, then cosine decay or constant.

    Args:
        config: reads `steps`, `learning_rate`, `warmup_fraction` and `schedule`.

    Returns:
        A function of the step count (the number of updates done before this one, as
        optax counts): 0 at step 0, the peak `learning_rate` at `config.warmup_steps`,
        then for `"cosine"` a half cosine down to 0 at `config.steps`, for `"constant"`
        the peak until the end.

    Example:
        >>> schedule = make_schedule(TrainConfig(steps=100, learning_rate=1.0, warmup_fraction=0.1))
        >>> [round(float(schedule(s)), 3) for s in (0, 5, 10, 55, 100)]
        [0.0, 0.5, 1.0, 0.5, 0.0]
    """
    warmup = config.warmup_steps
    if config.schedule == "constant":
        schedule: optax.Schedule = optax.constant_schedule(config.learning_rate)
    else:
        schedule = optax.cosine_decay_schedule(config.learning_rate, decay_steps=max(config.steps - warmup, 1))
    if warmup > 0:
        schedule = optax.join_schedules([optax.linear_schedule(0.0, config.learning_rate, warmup), schedule], [warmup])
    return _standard_promotion(schedule)


def decay_mask(weights: Any) -> Any:
    """Which weights get weight decay: `True` for arrays with 2 or more dims.

    Matrices and embeddings are decayed; biases, norm scales and other vectors and
    scalars are not (decaying them toward 0 only hurts).

    Args:
        weights: a weights tree (arrays or `jax.ShapeDtypeStruct`s).

    Returns:
        The same tree with a bool at each leaf.

    Example:
        >>> decay_mask({"w": jnp.ones((2, 3)), "b": jnp.ones(3), "norm": {"a": jnp.ones(3)}})
        {'b': False, 'norm': {'a': False}, 'w': True}
    """
    return jax.tree.map(lambda x: x.ndim >= 2, weights)


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """Gradient clipping by global norm, then AdamW with the schedule of `make_schedule`.

    AdamW (Loshchilov and Hutter, 2019) with optax's defaults `b1=0.9`, `b2=0.999`,
    `eps=1e-8`; weight decay `config.weight_decay` (scaled by the learning rate, as optax
    does) only on the weights that `decay_mask` selects.

    Args:
        config: reads `clip_norm`, `weight_decay` and the fields of `make_schedule`.

    Returns:
        An optax transformation; its state has the same structure for every config, so
        a checkpoint restores whatever the numbers in the config.

    Example:
        >>> optimizer = make_optimizer(TrainConfig(steps=10))
        >>> state = optimizer.init({"w": jnp.zeros((2, 2))})
    """
    optimizer = optax.chain(
        optax.clip_by_global_norm(config.clip_norm),
        optax.adamw(make_schedule(config), weight_decay=config.weight_decay, mask=decay_mask),
    )
    return optax.GradientTransformation(_standard_promotion(optimizer.init), _standard_promotion(optimizer.update))


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _standard_promotion(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """`fn`, run (or traced) under JAX's standard dtype promotion."""

    def wrapped(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with jax.numpy_dtype_promotion("standard"):
            return fn(*args, **kwargs)

    return wrapped
