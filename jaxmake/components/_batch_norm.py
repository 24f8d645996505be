"""`BatchNorm`: normalisation by batch statistics, with running averages carried as state."""

from typing import Annotated, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
from annotated_types import Ge, Le
from jaxtyping import Array, Float

import jaxmake as jm
from jaxmake.components._fields import Eps, Size
from jaxmake.components._precision import Policy, PrecisionConfigs, PrecisionFields

Momentum = Annotated[float, Ge(0), Le(1)]
"""The weight of the old running value at each update, in [0, 1]."""


@runtime_checkable
class BatchNormConfigs(PrecisionConfigs, Protocol):
    @property
    def n_features(self) -> int: ...
    @property
    def momentum(self) -> float: ...
    @property
    def eps(self) -> float: ...
    @property
    def axis_name(self) -> str | None: ...


_Features = Float[Array, "*spatial n_features"]


class BatchNorm(PrecisionFields):
    """Batch normalisation (Ioffe and Szegedy, 2015), its running statistics carried as state.

    Per example: `[*spatial, n_features] -> [*spatial, n_features]` (an image `[h, w, c]`,
    a sequence `[T, d]` or a vector `[d]`), normalised per feature. Batch with
    `jax.vmap(..., axis_name=axis_name)`: in training the statistics are averaged over the
    example's `*spatial` axes and, with `jax.lax.pmean`, over the examples of the batch on
    that named axis. Under `jit` with the batch split over devices (data parallelism), that
    average spans every device, so the result equals one device's.

    Processes (fixed), from `jm.Component.from_stateful`:

    * training, `(Input, State) -> (Output, State)`: normalises by the batch's mean and
      (biased) variance `mean(x**2) - mean(x)**2`, and returns the new running values
      `momentum * old + (1 - momentum) * batch`;
    * evaluation, `(Input, State) -> (Output)`: normalises by the running values.

    Output `(x - mean) * rsqrt(var + eps) * a + b`; the statistics are computed in float32
    whatever the policy, the output is in `dtype`. This is Flax NNX's `BatchNorm` (same
    statistics, update and output) with `use_running_average` chosen by the process.

    Weights: `a: [n_features]` (ones) and `b: [n_features]` (zeros), in `param_dtype`.
    State: `mean: [n_features]` (zeros) and `var: [n_features]` (ones), in float32.

    Args:
        n_features: the features (channels) on the last axis.
        momentum: the running values' decay per training step, in [0, 1].
        eps: added to the variance, in [1e-12, 1].
        axis_name: the `vmap` axis name of the batch; `None` normalises each example by its
            own statistics over `*spatial` (then no `vmap` axis is needed).
        dtype, param_dtype, matmul_precision: the precision policy (see `PrecisionFields`).

    Raises:
        ArgumentError: (when called in training) `axis_name` is set but no `vmap` binds it.

    Example:
        >>> bn = BatchNorm.make(BatchNorm(3))
        >>> weights, state = jm.make_weights(jax.random.key(0), bn.weight_params), jm.make_state(bn.state_params)
        >>> x = jnp.arange(12.0).reshape(4, 3)  # a batch of 4 examples of 3 features
        >>> train = jax.vmap(lambda x: bn.apply(weights, x, state, train=True), axis_name="batch", out_axes=(0, None))
        >>> y, new_state = train(x)
        >>> new_state["mean"]
        Array([0.045, 0.055, 0.065], dtype=float32)
    """

    n_features: Size
    momentum: Momentum = 0.99
    eps: Eps = 1e-5
    axis_name: str | None = "batch"

    @classmethod
    def make(cls, config: BatchNormConfigs) -> jm.Component:
        policy, momentum, path = Policy(config), config.momentum, jm.current_path() or cls.__name__
        n = config.n_features
        weight_params = {
            "a": policy.weight((n,), init="ones", axes=("norm",)),
            "b": policy.weight((n,), init="zeros", axes=("norm",)),
        }
        state_params = {
            "mean": jm.WeightParams((n,), init="zeros", axes=("norm",)),
            "var": jm.WeightParams((n,), init="ones", axes=("norm",)),
        }

        def batch_average(value: Array) -> Array:
            if config.axis_name is None:
                return value
            try:
                averaged: Array = jax.lax.pmean(value, config.axis_name)
                return averaged
            except NameError:
                raise jm.ArgumentError(
                    f"component `{path}` averages its training statistics over the examples of a batch, on the vmap "
                    f"axis {config.axis_name!r}: call it inside `jax.vmap(..., axis_name={config.axis_name!r})`, or "
                    f"set `BatchNorm.axis_name=None` to normalise each example by its own statistics"
                ) from None

        def batch_norm(
            weights: jm.Weights, x: _Features, state: jm.Weights, *, train: bool
        ) -> tuple[_Features, jm.Weights]:
            x32 = x.astype(jnp.float32)
            if train:
                spatial = tuple(range(x.ndim - 1))
                mean = batch_average(x32.mean(axis=spatial))
                var = jnp.maximum(batch_average(jnp.square(x32).mean(axis=spatial)) - jnp.square(mean), 0.0)
                state = {
                    "mean": momentum * state["mean"] + (1 - momentum) * mean,
                    "var": momentum * state["var"] + (1 - momentum) * var,
                }
            else:
                mean, var = state["mean"], state["var"]
            scale = jax.lax.rsqrt(var + config.eps) * weights["a"].astype(jnp.float32)
            return policy.cast((x32 - mean) * scale + weights["b"].astype(jnp.float32)), state

        ports = policy.pipeline_ports(_Features, "*spatial n_features")
        axis_names = () if config.axis_name is None else (config.axis_name,)
        return jm.Component.from_stateful(
            weight_params, state_params, batch_norm, ports, dims=config, axis_names=axis_names
        )
