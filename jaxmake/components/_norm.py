"""Normalisation over the feature axis: `LayerNorm` and `RMSNorm`."""

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

import jaxmake as jm
from jaxmake.components._fields import Eps, Size
from jaxmake.components._precision import Policy, PrecisionConfigs, PrecisionFields


@runtime_checkable
class NormConfigs(PrecisionConfigs, Protocol):
    @property
    def dim_model(self) -> int: ...
    @property
    def eps(self) -> float: ...


_Features = Float[Array, "*batch dim_model"]
"""The input and output of a norm: features on the last axis."""


class LayerNorm(PrecisionFields):
    """Layer normalisation with a per-feature scale `a` and shift `b` (Ba et al., 2016).

    Per example; batch with `jax.vmap`. Pipeline (fixed): `[*batch, dim_model] ->
    [*batch, dim_model]`, `(x - mean) * (a * rsqrt(var + eps)) + b` over the last axis
    (the scale folded into the reciprocal square root compiles faster in deep models).
    The statistics and the normalisation run in float32 whatever the policy; the output
    is in `dtype`.

    Args:
        dim_model: the number of features.
        eps: added to the variance, in [1e-12, 1].
        dtype, param_dtype, matmul_precision: the precision policy (see `PrecisionFields`).

    Example:
        >>> norm = LayerNorm.make(LayerNorm(12))
        >>> weights = jm.make_weights(jax.random.key(0), norm.weight_params)
        >>> jax.tree.map(jnp.shape, weights)
        {'a': (12,), 'b': (12,)}
    """

    dim_model: Size
    eps: Eps = 1e-5

    @classmethod
    def make(cls, config: NormConfigs) -> jm.Component:
        def layer_norm(weights: dict[str, Array], x: _Features) -> _Features:
            return _rescaled(weights, x - x.mean(axis=-1, keepdims=True), config.eps) + weights["b"].astype(x.dtype)

        return _norm(config, layer_norm, shift=True)


class RMSNorm(PrecisionFields):
    """Root-mean-square normalisation with a per-feature scale `a` (Zhang and Sennrich, 2019).

    Per example; batch with `jax.vmap`. Pipeline (fixed): `[*batch, dim_model] ->
    [*batch, dim_model]`, `x * (a * rsqrt(mean(x**2) + eps))` over the last axis, in
    float32 whatever the policy; the output is in `dtype`.

    Args:
        dim_model: the number of features.
        eps: added to the mean square, in [1e-12, 1].
        dtype, param_dtype, matmul_precision: the precision policy (see `PrecisionFields`).

    Example:
        >>> norm = RMSNorm.make(RMSNorm(12))
        >>> jax.tree.map(jnp.shape, jm.make_weights(jax.random.key(0), norm.weight_params))
        {'a': (12,)}
    """

    dim_model: Size
    eps: Eps = 1e-6

    @classmethod
    def make(cls, config: NormConfigs) -> jm.Component:
        def rms_norm(weights: dict[str, Array], x: _Features) -> _Features:
            return _rescaled(weights, x, config.eps)

        return _norm(config, rms_norm, shift=False)


def _rescaled(weights: dict[str, Array], x: _Features, eps: float) -> _Features:
    """`x * (a * rsqrt(mean(x**2) + eps))` over the last axis; the scale folded into the
    reciprocal square root compiles faster in deep models than `x * rsqrt(...) * a`."""
    scale = weights["a"].astype(x.dtype) * jax.lax.rsqrt(jnp.square(x).mean(axis=-1, keepdims=True) + eps)
    return x * scale


def _norm(config: NormConfigs, normalise: Callable[[dict[str, Array], Array], Array], shift: bool) -> jm.Component:
    """The norm component: a per-feature scale `a` (ones) and, with `shift`, a shift `b` (zeros).

    `normalise` is given the input in float32 and its result is cast to the compute dtype.
    """
    policy = Policy(config)
    spec = {"a": policy.weight((config.dim_model,), init="ones", axes=("embed",))}
    if shift:
        spec["b"] = policy.weight((config.dim_model,), init="zeros", axes=("embed",))

    def pipeline(weights: dict[str, Array], x: _Features) -> _Features:
        return policy.cast(normalise(weights, x.astype(jnp.float32)))

    ports = policy.pipeline_ports(_Features, "*batch dim_model")
    return jm.Component.from_pipeline(spec, pipeline, ports, dims=config)
