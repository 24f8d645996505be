"""The optimizer of a `TrainConfig`: clipping, then AdamW on a warmup + cosine schedule.

With freezing or learning-rate factors (`TrainConfig.freeze`, `learning_rate_factors`), the
weights are split into groups by weight-path patterns and `optax.partition`.

optax mixes its int32 step count with Python floats (in the schedules and Adam's bias
correction), which JAX's strict dtype promotion rejects. So the schedule and optimizer made
here run under standard promotion, whatever the global setting; the caller's own code (the
loss) keeps the caller's setting.
"""

import functools
from collections.abc import Callable, Hashable, Mapping
from typing import Any, ParamSpec, TypeVar

import jax
import optax

import jaxmake as jm
from jaxmake.training._config import TrainConfig

FROZEN = "frozen"
"""The label of a frozen weight (see `weight_labels`)."""
TRAINED = "trained"
"""The label of a weight trained at the schedule's learning rate."""


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


def weight_labels(config: TrainConfig, weights: Mapping[str, Any]) -> dict[str, Any]:
    """The optimizer group of each weight, from `config.freeze` and `config.learning_rate_factors`.

    Args:
        config: reads `freeze` (patterns, `!` exempting, the last that selects a weight
            deciding) and `learning_rate_factors` (the last pattern that selects a weight
            decides its factor).
        weights: a weights tree (arrays or `jax.ShapeDtypeStruct`s) or a spec tree.

    Returns:
        The same tree with a label at each weight: `FROZEN`, `TRAINED` (factor 1), or
        `"lr_x<factor>"`; the keys of `optax.partition`'s transforms.

    Raises:
        WeightsError: a pattern selects no weight; names the field and lists the nearest
            paths.

    Example:
        >>> config = TrainConfig(steps=1, freeze=("*", "!head"), learning_rate_factors=(("head.b", 0.1),))
        >>> weight_labels(config, {"body": {"w": jnp.ones((2, 2))}, "head": {"w": jnp.ones(2), "b": jnp.ones(1)}})
        {'body': {'w': 'frozen'}, 'head': {'w': 'trained', 'b': 'lr_x0.1'}}
    """
    paths = jm.weight_paths(weights)
    labels = dict.fromkeys(paths, TRAINED)
    for index, (pattern, factor) in enumerate(config.learning_rate_factors):
        for path in _matched(weights, pattern, f"learning_rate_factors` item {index}"):
            labels[path] = _factor_label(factor)
    for index, pattern in enumerate(config.freeze):
        exempt = pattern.startswith("!")
        for path in _matched(weights, pattern.removeprefix("!"), f"freeze` item {index}"):
            labels[path] = _factor_of(config, path) if exempt else FROZEN
    return _tree_of(weights, labels, "")


def _matched(weights: Mapping[str, Any], pattern: str, where: str) -> list[str]:
    try:
        return jm.match_paths(weights, pattern)
    except jm.WeightsError as error:
        raise jm.WeightsError(f"`TrainConfig.{where}: {error}") from None


def _factor_of(config: TrainConfig, path: str) -> str:
    """The label of a weight that is not frozen: that of the last factor pattern that selects it."""
    factors = [factor for pattern, factor in config.learning_rate_factors if jm.path_matches(pattern, path)]
    return _factor_label(factors[-1]) if factors else TRAINED


def _factor_label(factor: float) -> str:
    return TRAINED if factor == 1 else f"lr_x{factor!r}"


def _tree_of(tree: Mapping[str, Any], values: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """`tree`'s structure, the weight at each path replaced by `values[path]`."""
    return {
        name: _tree_of(node, values, f"{prefix}{name}.") if isinstance(node, Mapping) else values[f"{prefix}{name}"]
        for name, node in tree.items()
    }


def unfrozen(config: TrainConfig, tree: Mapping[str, Any]) -> Any:
    """The weights (or gradients) of `tree` that `config.freeze` leaves trainable: `tree` itself without freezing.

    With freezing, a list of the arrays that are not frozen (what the clipping norm and
    the history's `grad_norm` see).
    """
    if not config.freeze:
        return tree
    return [
        leaf
        for leaf, label in zip(jax.tree.leaves(tree), jax.tree.leaves(weight_labels(config, tree)))
        if label != FROZEN
    ]


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """Gradient clipping by global norm, then AdamW with the schedule of `make_schedule`.

    AdamW (Loshchilov and Hutter, 2019) with optax's defaults `b1=0.9`, `b2=0.999`,
    `eps=1e-8`; weight decay `config.weight_decay` (scaled by the learning rate, as optax
    does) only on the weights that `decay_mask` selects.

    With `config.freeze` or `config.learning_rate_factors`, the weights are split into the
    groups of `weight_labels` by `optax.partition`: the frozen ones get `optax.set_to_zero()`
    (no state; their gradients are zeroed before the clipping norm is taken), each other
    group AdamW, followed by `optax.scale(factor)` for a factor other than 1.

    Args:
        config: reads `clip_norm`, `weight_decay`, `freeze`, `learning_rate_factors` and
            the fields of `make_schedule`.

    Returns:
        An optax transformation; without freezing or factors its state has the same
        structure for every config, so a checkpoint restores whatever the numbers in the
        config. Its `init` raises `WeightsError` if a pattern selects no weight.

    Example:
        >>> optimizer = make_optimizer(TrainConfig(steps=10))
        >>> state = optimizer.init({"w": jnp.zeros((2, 2))})
        >>> frozen_w = make_optimizer(TrainConfig(steps=10, freeze=("w",)))
        >>> weights = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
        >>> updates, _ = frozen_w.update(weights, frozen_w.init(weights), weights)
        >>> updates["w"].tolist(), updates["b"].shape
        ([[0.0, 0.0], [0.0, 0.0]], (2,))
    """
    clip = optax.clip_by_global_norm(config.clip_norm)
    adamw = optax.adamw(make_schedule(config), weight_decay=config.weight_decay, mask=decay_mask)
    if not (config.freeze or config.learning_rate_factors):
        optimizer = optax.chain(clip, adamw)
    else:
        labels = functools.partial(weight_labels, config)
        factors = {TRAINED: 1.0} | {_factor_label(factor): factor for _, factor in config.learning_rate_factors}
        groups: dict[Hashable, optax.GradientTransformation] = {
            label: adamw if factor == 1 else optax.chain(adamw, optax.scale(factor))
            for label, factor in factors.items()
        }
        optimizer = optax.chain(
            optax.partition({FROZEN: optax.set_to_zero(), **dict.fromkeys(factors, optax.identity())}, labels),
            clip,
            optax.partition({FROZEN: optax.set_to_zero()} | groups, labels),
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
