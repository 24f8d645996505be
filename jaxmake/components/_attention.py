"""`SelfMultiHeadAttn`: multi-head scaled dot-product self-attention."""

import math
from collections.abc import Mapping
from typing import Protocol

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

import jaxmake as jm
from jaxmake.components._fields import Size
from jaxmake.components._linear import Linear


class SelfMultiHeadAttnConfigs(Protocol):
    @property
    def n_heads(self) -> int: ...
    @property
    def dim_model(self) -> int: ...
    @property
    def dim_input(self) -> int: ...


MASKED_PORTS = jm.make_ports(
    {jm.Input: Float[Array, "T dim_input"], "mask": Bool[Array, "T T"]},
    {jm.Output: Float[Array, "T dim_model"], "attn": Float[Array, "n_heads T T"]},
)
"""The masked process's ports, `(Input, mask) -> (Output, attn)`.

Ports compare by name, so this also finds the masked process of `TransformerLayer` and
`TransformerEncoder`: `component.get_process(MASKED_PORTS)`.
"""

_PIPELINE_PORTS = jm.make_ports({jm.Input: Float[Array, "T dim_input"]}, {jm.Output: Float[Array, "T dim_model"]})


class _HeadsConfig(Protocol):
    @property
    def n_heads(self) -> int: ...
    @property
    def dim_model(self) -> int: ...
    def error(self, field: str, rule: str) -> jm.ConfigError: ...


def check_heads(config: _HeadsConfig) -> None:
    """Raise `ConfigError` on `n_heads` unless it divides `dim_model` (shared by every config with heads)."""
    if config.dim_model % config.n_heads:
        raise config.error("n_heads", f"must divide `dim_model`={config.dim_model}")


class SelfMultiHeadAttn(jm.Config):
    """Multi-head scaled dot-product self-attention (Vaswani et al., 2017).

    Per example; batch with `jax.vmap`. Weights: `kqv`, a `Linear` `[dim_input, 3 * dim_model]`
    whose output columns are the blocks `[q | k | v]`, each split into `n_heads` contiguous
    heads of `head_dim = dim_model // n_heads`; and `out`, a `Linear` `[dim_model, dim_model]`
    applied to the heads' outputs concatenated in order. Each head attends with the
    weights `softmax(q k^T / sqrt(head_dim))` over the keys.

    Fixed processes:

    * the pipeline: `x: [T, dim_input] -> [T, dim_model]`, every position attending to all;
    * `MASKED_PORTS`, `(Input, "mask") -> (Output, "attn")`: `mask: [T, T]` (bool), true
      where query `t` may attend to key `s`; `attn: [n_heads, T, T]` the attention weights,
      exactly 0 where the mask is false. A fully masked row attends to nothing: its weights
      and its output before `out` are all zero (never NaN, and its gradients are finite).

    Args:
        n_heads: the number of heads; must divide `dim_model`.
        dim_model: the width of the output, and of `q`, `k` and `v`.
        dim_input: the width of the input.

    Raises:
        ConfigError: a size is below 1, or `n_heads` does not divide `dim_model`.

    Example:
        >>> mha = SelfMultiHeadAttn.make(SelfMultiHeadAttn(n_heads=2, dim_model=4, dim_input=3))
        >>> weights = jm.make_weights(jax.random.key(0), mha.weight_params)
        >>> jax.tree.map(jnp.shape, weights)
        {'kqv': {'b': (12,), 'w': (3, 12)}, 'out': {'b': (4,), 'w': (4, 4)}}
        >>> outputs = mha.get_fixed_process(MASKED_PORTS)(weights, {"Input": jnp.ones((5, 3)), "mask": jnp.tri(5, dtype=bool)})
        >>> jax.tree.map(jnp.shape, outputs)
        {'Output': (5, 4), 'attn': (2, 5, 5)}
    """

    n_heads: Size
    dim_model: Size
    dim_input: Size

    def validate(self) -> None:
        check_heads(self)

    @classmethod
    def make(cls, config: SelfMultiHeadAttnConfigs) -> jm.Component:
        with jm.scope("kqv"):
            kqv = Linear.make(Linear(config.dim_input, 3 * config.dim_model))
        with jm.scope("out"):
            out = Linear.make(Linear(config.dim_model, config.dim_model))
        project_kqv, project_out, n_heads = kqv.fixed_pipeline, out.fixed_pipeline, config.n_heads

        def attend(weights: jm.Weights, x: Array, mask: Array | None) -> tuple[Array, Array]:
            q, k, v = jnp.split(project_kqv(weights["kqv"], x), 3, axis=-1)
            heads, attn = _multi_head(q, k, v, mask, n_heads)
            return project_out(weights["out"], heads), attn

        def pipeline(weights: jm.Weights, inputs: Mapping[str, Array], rng: Array | None) -> dict[str, Array]:
            return {jm.Output: attend(weights, inputs[jm.Input], None)[0]}

        def masked(weights: jm.Weights, inputs: Mapping[str, Array], rng: Array | None) -> dict[str, Array]:
            y, attn = attend(weights, inputs[jm.Input], inputs["mask"])
            return {jm.Output: y, "attn": attn}

        processes = {_PIPELINE_PORTS: pipeline, MASKED_PORTS: masked}
        return jm.Component(
            jm.merge_params({"kqv": kqv, "out": out}),
            processes,
            frozenset(processes),
            dims={"n_heads": config.n_heads, "dim_model": config.dim_model, "dim_input": config.dim_input},
        )


def _multi_head(
    q: Float[Array, "T dim_model"],
    k: Float[Array, "T dim_model"],
    v: Float[Array, "T dim_model"],
    mask: Bool[Array, "T T"] | None,
    n_heads: int,
) -> tuple[Float[Array, "T dim_model"], Float[Array, "n_heads T T"]]:
    """Each head's attention over contiguous slices of `q, k, v`; the heads concatenated, and the weights."""
    length, dim_model = q.shape
    head_dim = dim_model // n_heads

    def split(a: Array) -> Float[Array, "T n_heads head_dim"]:
        return a.reshape(length, n_heads, head_dim)

    scores = jnp.einsum("qhd,khd->hqk", split(q) / math.sqrt(head_dim), split(k))
    attn = _softmax_over_keys(scores, mask)
    heads = jnp.einsum("hqk,khd->qhd", attn, split(v))
    return heads.reshape(length, dim_model), attn


def _softmax_over_keys(scores: Float[Array, "n_heads T T"], mask: Bool[Array, "T T"] | None) -> Float[Array, "n_heads T T"]:
    """Softmax over the last axis, exactly 0 where `mask` is false or 0 (a fully masked row is all 0).

    A fully masked row is first given every key (a finite softmax, so finite gradients,
    rather than `0 / 0`), then zeroed with the rest of the masked weights.
    """
    if mask is None:
        return jax.nn.softmax(scores, axis=-1)
    allowed = mask.astype(bool)[None]  # one mask for every head
    usable = allowed | ~allowed.any(axis=-1, keepdims=True)
    weights = jax.nn.softmax(jnp.where(usable, scores, -jnp.inf), axis=-1)
    return jnp.where(allowed, weights, jnp.zeros((), weights.dtype))
