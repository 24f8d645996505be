"""`SelfMultiHeadAttn`: multi-head scaled dot-product self-attention."""

import math
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

import jaxmake as jm
from jaxmake.components._fields import Size
from jaxmake.components._linear import Linear


@runtime_checkable
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


@runtime_checkable
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

    Logical axes (see `jaxmake.sharding`): `kqv.w` `("embed", "heads")`, `kqv.b` `("heads",)`,
    `out.w` `("heads", "embed")`, `out.b` `("embed",)`. Under tensor parallelism (`heads`
    split over a mesh axis) each device computes whole heads, and the block's one
    all-reduce follows `out` (Megatron-LM, Shoeybi et al., 2019). The columns of `kqv` are
    the blocks `[q | k | v]`, not each head's `q, k, v` side by side, so a device's
    contiguous share of them is not whole heads: the step also gathers `kqv.w` and `kqv.b`
    (traffic the size of the weight, as in fully sharded data parallelism; no token's
    `q, k, v` moves).

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
        >>> outputs = mha.run(weights, {"Input": jnp.ones((5, 3)), "mask": jnp.tri(5, dtype=bool)})
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
        c = jm.make_children(
            kqv=Linear(config.dim_input, 3 * config.dim_model, axes=("embed", "heads")),
            out=Linear(config.dim_model, config.dim_model, axes=("heads", "embed")),
        )
        n_heads = config.n_heads

        def attend(weights: jm.Weights, x: Array, mask: Array | None) -> tuple[Array, Array]:
            heads, attn = _multi_head(*_project_kqv(c.kqv.weights(weights), x, n_heads), mask)
            return c.out(weights, heads), attn

        def pipeline(weights: jm.Weights, inputs: Mapping[str, Array]) -> dict[str, Array]:
            return {jm.Output: attend(weights, inputs[jm.Input], None)[0]}

        def masked(weights: jm.Weights, inputs: Mapping[str, Array]) -> dict[str, Array]:
            y, attn = attend(weights, inputs[jm.Input], inputs["mask"])
            return {jm.Output: y, "attn": attn}

        return jm.Component(c.weight_params, {_PIPELINE_PORTS: pipeline, MASKED_PORTS: masked}, dims=config)


def _project_kqv(
    weights: jm.Weights, x: Float[Array, "T dim_input"], n_heads: int
) -> tuple[Float[Array, "T n_heads head_dim"], Float[Array, "T n_heads head_dim"], Float[Array, "T n_heads head_dim"]]:
    """The `kqv` `Linear`, `x @ w + b`, split into the heads of `q`, `k` and `v`.

    `w: [dim_input, 3 * dim_model]` is viewed as `[dim_input, 3, n_heads, head_dim]` before
    the product rather than the product split after it: the same sums, but when `heads` is
    split over devices XLA then gathers the weight, instead of moving every token's `q, k, v`
    between devices (a contiguous share of the `[q | k | v]` columns is not whole heads).

    Returns:
        `q`, `k`, `v`, each `[T, n_heads, head_dim]`.
    """
    w: Array = weights["w"]
    b: Array = weights["b"]
    head_dim = w.shape[1] // (3 * n_heads)
    projected = jnp.einsum("ti,isnh->stnh", x, w.reshape(-1, 3, n_heads, head_dim)) + b.reshape(3, 1, n_heads, head_dim)
    return projected[0], projected[1], projected[2]


def _multi_head(
    q: Float[Array, "T n_heads head_dim"],
    k: Float[Array, "T n_heads head_dim"],
    v: Float[Array, "T n_heads head_dim"],
    mask: Bool[Array, "T T"] | None,
) -> tuple[Float[Array, "T dim_model"], Float[Array, "n_heads T T"]]:
    """Each head's attention; the heads' outputs concatenated in order, and the weights."""
    length, n_heads, head_dim = q.shape
    scores = jnp.einsum("qhd,khd->hqk", q / math.sqrt(head_dim), k)
    attn = _softmax_over_keys(scores, mask)
    heads = jnp.einsum("hqk,khd->qhd", attn, v)
    return heads.reshape(length, n_heads * head_dim), attn


def _softmax_over_keys(
    scores: Float[Array, "n_heads T T"], mask: Bool[Array, "T T"] | None
) -> Float[Array, "n_heads T T"]:
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
