"""`SelfMultiHeadAttn`: multi-head scaled dot-product self-attention."""

import math
from collections.abc import Mapping
from dataclasses import KW_ONLY
from typing import Literal, Protocol, TypeAlias, runtime_checkable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Float32, Int

import jaxmake as jm
from jaxmake.components._fields import Size
from jaxmake.components._linear import Linear
from jaxmake.components._precision import Policy, PrecisionConfigs, PrecisionFields

AttentionImpl: TypeAlias = Literal["auto", "einsum", "fused"]
"""How attention without attention weights is computed (see `SelfMultiHeadAttn`)."""


@runtime_checkable
class SelfMultiHeadAttnConfigs(PrecisionConfigs, Protocol):
    @property
    def n_heads(self) -> int: ...
    @property
    def dim_model(self) -> int: ...
    @property
    def dim_input(self) -> int: ...
    @property
    def causal(self) -> bool: ...
    @property
    def attention_impl(self) -> AttentionImpl: ...


MASKED_PORTS = jm.make_ports(
    {jm.Input: Float[Array, "T dim_input"], "mask": Bool[Array, "T T"]},
    {jm.Output: Float[Array, "T dim_model"], "attn": Float32[Array, "n_heads T T"]},
)
"""The masked process's ports, `(Input, mask) -> (Output, attn)`.

Ports compare by name, so this also finds the masked process of `TransformerLayer` and
`TransformerEncoder`: `component.get_process(MASKED_PORTS)`.
"""
MASK_PORTS = jm.make_ports(
    {jm.Input: Float[Array, "T dim_input"], "mask": Bool[Array, "T T"]}, {jm.Output: Float[Array, "T dim_model"]}
)
"""The ports `(Input, mask) -> (Output)`: the masked process without the attention weights,
which a fused kernel can compute (`component(weights, x, mask=mask)` runs it)."""


CACHE_PORTS = jm.make_ports((jm.Input, "k_cache", "v_cache", "position"), (jm.Output, "k_cache", "v_cache"))
"""The cached process's ports, `(Input, k_cache, v_cache, position) -> (Output, k_cache, v_cache)`:
new tokens attend to themselves and to those a key/value cache holds (incremental decoding).

`SelfMultiHeadAttn`, `TransformerLayer`, `TransformerEncoder` and `Gpt` have it (ports compare
by name, so this finds each one's); see `SelfMultiHeadAttn` for the shapes."""


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


class SelfMultiHeadAttn(PrecisionFields):
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

    Fixed processes (outputs in `dtype`; the scores and softmax in float32):

    * the pipeline: `x: [T, dim_input] -> [T, dim_model]`, every position attending to all
      (to itself and those before it if `causal`);
    * `MASK_PORTS`, `(Input, "mask") -> (Output)`: `mask: [T, T]` (bool), true where query
      `t` may attend to key `s` (and'ed with the causal mask if `causal`). A fully masked
      row attends to nothing: its output before `out` is all zero (never NaN, and its
      gradients are finite);
    * `MASKED_PORTS`, `(Input, "mask") -> (Output, "attn")`: the same, and `attn:
      [n_heads, T, T]` (float32) the attention weights, exactly 0 where the mask is false
      (all 0 in a fully masked row).

    * with `causal` only, `CACHE_PORTS`, `(Input, "k_cache", "v_cache", "position") ->
      (Output, "k_cache", "v_cache")`: incremental decoding. The caches `[S, dim_model]`
      (the heads side by side, in `dtype`) hold the keys and values of the tokens before
      `position: Int[]`; the `T` new tokens are written at `position .. position + T -
      1`, and new token `t` attends to the slots `s <= position + t`: the pipeline's
      outputs for those tokens. The updated caches are returned. The caller keeps
      `position + T <= S` (writes past the end are dropped). Always explicit (the
      scores are `[n_heads, T, S]`).

    `attention_impl` chooses how the first two are computed; the weight tree is the same:

    * `"einsum"`: explicitly, the scores `[n_heads, T, T]` materialised (as `MASKED_PORTS`
      always is, since fused kernels do not return the weights);
    * `"fused"`: `jax.nn.dot_product_attention`, with causality as `is_causal` (no
      materialised mask), on cuDNN's fused kernel (FlashAttention-style) on a GPU when
      `dtype` is 16-bit and `head_dim` is a multiple of 8 up to 128 (cuDNN refuses
      float32), else its XLA implementation (explicit in float16 on a CPU, where XLA
      cannot run that one);
    * `"auto"`: `"fused"` where it runs on cuDNN, `"einsum"` elsewhere (on a CPU, in
      float32). On an H200, causal bf16 attention (T 1024, 12 heads of 64, forward and
      backward) took 0.80 ms on cuDNN against 2.0 ms explicitly.

    Args:
        n_heads: the number of heads; must divide `dim_model`.
        dim_model: the width of the output, and of `q`, `k` and `v`.
        dim_input: the width of the input.
        causal: each position attends only to itself and those before it.
        attention_impl: `"auto"`, `"einsum"` or `"fused"` (above).
        dtype, param_dtype, matmul_precision: the precision policy (see `PrecisionFields`).

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
    _: KW_ONLY
    causal: bool = False
    attention_impl: AttentionImpl = "auto"

    def validate(self) -> None:
        check_heads(self)

    @classmethod
    def make(cls, config: SelfMultiHeadAttnConfigs) -> jm.Component:
        policy = Policy(config)
        c = jm.make_children(
            kqv=Linear(config.dim_input, 3 * config.dim_model, axes=("embed", "heads"), **policy.fields),
            out=Linear(config.dim_model, config.dim_model, axes=("heads", "embed"), **policy.fields),
        )
        n_heads, causal = config.n_heads, config.causal
        fused = _fused_implementation(config.attention_impl, policy, config.dim_model // n_heads)

        def explicit(weights: jm.Weights, x: Array, mask: Array | None) -> tuple[Array, Array]:
            q, k, v = _project_kqv(c.kqv.weights(weights), x, n_heads, policy)
            heads, attn = _multi_head(q, k, v, _with_causal(mask, causal, q), policy)
            return c.out(weights, heads), attn

        def attend(weights: jm.Weights, x: Array, mask: Array | None) -> Array:
            if fused is None:
                return explicit(weights, x, mask)[0]
            q, k, v = _project_kqv(c.kqv.weights(weights), x, n_heads, policy)
            return c.out(weights, _fused_multi_head(q, k, v, mask, causal, fused))

        def pipeline(weights: jm.Weights, inputs: Mapping[str, Array]) -> dict[str, Array]:
            return {jm.Output: attend(weights, inputs[jm.Input], None)}

        def masked(weights: jm.Weights, inputs: Mapping[str, Array]) -> dict[str, Array]:
            return {jm.Output: attend(weights, inputs[jm.Input], inputs["mask"])}

        def with_weights(weights: jm.Weights, inputs: Mapping[str, Array]) -> dict[str, Array]:
            y, attn = explicit(weights, inputs[jm.Input], inputs["mask"])
            return {jm.Output: y, "attn": attn}

        def cached(weights: jm.Weights, inputs: Mapping[str, Array]) -> dict[str, Array]:
            x, position = inputs[jm.Input], inputs["position"]
            q, k, v = _project_kqv(c.kqv.weights(weights), x, n_heads, policy)
            slots = position + jnp.arange(x.shape[0])  # where the new tokens go
            caches = {
                name: inputs[name].at[slots].set(new.reshape(len(slots), -1).astype(inputs[name].dtype), mode="drop")
                for name, new in (("k_cache", k), ("v_cache", v))
            }
            keys, values = (policy.cast(caches[name]).reshape(-1, *q.shape[1:]) for name in ("k_cache", "v_cache"))
            key_slots = jnp.arange(keys.shape[0])
            heads, _ = _multi_head(q, keys, values, key_slots <= slots[:, None], policy)
            return {jm.Output: c.out(weights, heads), **caches}

        processes = {
            policy.pipeline_ports(Float[Array, "T dim_input"], "T dim_model"): pipeline,
            attention_ports(policy, "T dim_input", attn_dims=None): masked,
            attention_ports(policy, "T dim_input", attn_dims="n_heads T T"): with_weights,
        }
        if causal:  # incremental decoding is causal: a token never sees those after it
            processes[cache_ports(policy, "T dim_input", "S dim_model")] = cached
        return jm.Component(c.weight_params, processes, dims=config)


def attention_ports(policy: Policy, x_dims: str, attn_dims: str | None) -> jm.ProcessPorts:
    """`MASK_PORTS` (`attn_dims=None`), or `MASKED_PORTS` with `attn` of the dims `attn_dims`:
    the input `x_dims`, the `Output` `[T, dim_model]` in the policy's compute dtype (the
    masked ports of every attention block)."""
    outputs = {jm.Output: policy.floats[Array, "T dim_model"]}
    if attn_dims is not None:
        outputs["attn"] = Float32[Array, attn_dims]
    return jm.make_ports({jm.Input: Float[Array, x_dims], "mask": Bool[Array, "T T"]}, outputs)


def cache_ports(policy: Policy, x_dims: str, cache_dims: str) -> jm.ProcessPorts:
    """`CACHE_PORTS` with their annotations: the input `x_dims`, the caches `cache_dims` and the
    `Output` `[T, dim_model]` in the policy's compute dtype, `position` an int scalar."""
    cache = policy.floats[Array, cache_dims]
    return jm.make_ports(
        {jm.Input: Float[Array, x_dims], "k_cache": cache, "v_cache": cache, "position": Int[Array, ""]},
        {jm.Output: policy.floats[Array, "T dim_model"], "k_cache": cache, "v_cache": cache},
    )


def _fused_implementation(choice: AttentionImpl, policy: Policy, head_dim: int) -> Literal["xla", "cudnn"] | None:
    """The `implementation` of `jax.nn.dot_product_attention` that `choice` picks, or `None` for einsum."""
    on_cudnn = jax.default_backend() == "gpu" and policy.is_half and head_dim % 8 == 0 and head_dim <= 128
    if choice == "einsum" or (choice == "auto" and not on_cudnn) or policy.cpu_cannot_accumulate_in_float32:
        return None
    return "cudnn" if on_cudnn else "xla"


def _project_kqv(
    weights: jm.Weights, x: Float[Array, "T dim_input"], n_heads: int, policy: Policy
) -> tuple[Float[Array, "T n_heads head_dim"], Float[Array, "T n_heads head_dim"], Float[Array, "T n_heads head_dim"]]:
    """The `kqv` `Linear`, `x @ w + b`, split into the heads of `q`, `k` and `v` (in the compute dtype).

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
    projected = policy.einsum("ti,isnh->stnh", x, w.reshape(-1, 3, n_heads, head_dim))
    projected = projected + policy.cast(b).reshape(3, 1, n_heads, head_dim)
    return projected[0], projected[1], projected[2]


def _with_causal(
    mask: Bool[Array, "T T"] | None, causal: bool, queries: Float[Array, "T n_heads head_dim"]
) -> Bool[Array, "T T"] | None:
    """`mask`, and'ed with the causal mask (query `t` attends to keys `s <= t`) if `causal`.

    The length comes from the `queries` (an array, so that a symbolic length, as
    `jax.export` traces one, passes the annotations too).
    """
    if not causal:
        return mask
    lower = jnp.tri(queries.shape[0], dtype=jnp.bool_)
    return lower if mask is None else lower & mask.astype(bool)


def _multi_head(
    q: Float[Array, "T n_heads head_dim"],
    k: Float[Array, "S n_heads head_dim"],
    v: Float[Array, "S n_heads head_dim"],
    mask: Bool[Array, "T S"] | None,
    policy: Policy,
) -> tuple[Float[Array, "T dim_model"], Float32[Array, "n_heads T S"]]:
    """Each head's attention, explicitly; the heads' outputs concatenated in order, and the weights.

    The `T` queries attend to `S` keys (`S = T` but for a cached decoder's caches).

    The scores are accumulated in float32 and the softmax taken in float32; the weights
    are cast to the compute dtype for the product with `v`.
    """
    length, n_heads, head_dim = q.shape
    scores = policy.einsum("qhd,khd->hqk", q / math.sqrt(head_dim), k, float32_result=True)
    attn = _softmax_over_keys(scores, mask)
    heads = policy.einsum("hqk,khd->qhd", attn, v)
    return heads.reshape(length, n_heads * head_dim), attn


def _fused_multi_head(
    q: Float[Array, "T n_heads head_dim"],
    k: Float[Array, "T n_heads head_dim"],
    v: Float[Array, "T n_heads head_dim"],
    mask: Bool[Array, "T T"] | None,
    causal: bool,
    implementation: Literal["xla", "cudnn"],
) -> Float[Array, "T dim_model"]:
    """Each head's attention by `jax.nn.dot_product_attention`; the heads concatenated in order.

    Causality goes to the kernel as `is_causal` (cuDNN then skips the masked blocks). A
    fully masked row is zeroed afterwards, as the explicit path returns it (the kernels
    would spread it over every key).
    """
    length, n_heads, head_dim = q.shape
    allowed = None if mask is None else mask.astype(bool)[None]  # one mask for every head: [1, T, T]
    with jax.numpy_dtype_promotion("standard"):  # its XLA form mixes dtypes, which strict promotion refuses
        heads = jax.nn.dot_product_attention(q, k, v, mask=allowed, is_causal=causal, implementation=implementation)
    if mask is not None:
        visible = mask.astype(bool) & jnp.tri(length, dtype=jnp.bool_) if causal else mask.astype(bool)
        heads = jnp.where(visible.any(axis=-1)[:, None, None], heads, jnp.zeros((), heads.dtype))
    return heads.reshape(length, n_heads * head_dim)


def _softmax_over_keys(
    scores: Float32[Array, "n_heads T S"], mask: Bool[Array, "T S"] | None
) -> Float32[Array, "n_heads T S"]:
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
