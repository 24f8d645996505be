"""Dropout, with the seed's keep-rate semantics."""

from typing import Protocol, runtime_checkable

import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float

import jaxmake as jm
from jaxmake.components._fields import KeepRate


@runtime_checkable
class DropoutConfigs(Protocol):
    @property
    def dropout_keep_rate(self) -> float: ...


class Dropout(jm.Config):
    """Inverted dropout: keep each unit with probability `dropout_keep_rate`, scaled by `1/p`.

    Per example; batch with `jax.vmap`. Pipeline: `[*shape] -> [*shape]`. No weights.
    Called with `rng=None` (evaluation) it is the identity; with a keep rate of 1 it is
    a fixed component (no rng needed). Srivastava et al., 2014.

    Args:
        dropout_keep_rate: the probability of keeping a unit, in (0, 1].

    Example:
        >>> dropout = Dropout.make(Dropout(0.8))
        >>> dropout.weight_params
        {}
    """

    dropout_keep_rate: KeepRate = 1.0

    @classmethod
    def make(cls, config: DropoutConfigs) -> jm.Component:
        keep = config.dropout_keep_rate

        def pipeline(weights: jm.Weights, x: Float[Array, "*shape"], rng: Array | None) -> Float[Array, "*shape"]:
            if rng is None or keep == 1.0:
                return x
            mask = jr.bernoulli(rng, keep, x.shape)
            return jnp.where(mask, x / jnp.asarray(keep, x.dtype), jnp.zeros((), x.dtype))

        return jm.Component.from_pipeline({}, pipeline, fixed=keep == 1.0)
