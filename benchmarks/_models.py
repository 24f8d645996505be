"""One GPT, written in every implementation that `benchmarks/compare.py` compares.

Every implementation computes the same function with the same parameters: token embedding
plus learned positions, `n_layers` pre-LayerNorm blocks (causal multi-head attention with a
fused `[q|k|v]` projection, then an MLP with tanh-approximated gelu), a final LayerNorm and an
untied linear head with a bias; the mean next-token cross-entropy; AdamW from optax with the
same hyperparameters. The arithmetic that is not about parameter handling (`layer_norm`,
`causal_attention`, `cross_entropy`) is shared, so the implementations differ only in how
they hold, pass and update parameters, which is what the benchmark measures.

The hand-written model also computes in other precisions (`build_raw(..., compute=Compute(...))`):
bfloat16 matmuls and activations, `jax.nn.dot_product_attention` for attention, float32
parameters, LayerNorm statistics, logits and loss; `benchmarks/gpu_step.py` measures jaxmake's
precision policy against it. `Spec.train_flops` counts a train step's FLOPs.

Each builder returns a `Built`: a jitted train step `(state, tokens, targets) -> (state,
loss)` in its framework's own style, a jitted forward `(fwd_state, tokens) -> logits`, and
the states to call them with. A builder makes fresh jitted functions every time it is
called, so that the first call of a fresh build traces and compiles anew.
"""

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import jax.random as jr
import optax
from jaxtyping import Array, Float, Int

import jaxmake as jm
from jaxmake.components import LOSS_PORTS, Gpt


@dataclass(frozen=True)
class Spec:
    """The model, the batch and the optimizer every implementation shares."""

    vocab: int = 256
    n_ctx: int = 64
    dim: int = 128
    n_heads: int = 4
    n_layers: int = 4
    mlp: int = 512
    batch: int = 16
    eps: float = 1e-5
    learning_rate: float = 1e-3
    weight_decay: float = 0.01

    def deeper(self, n_layers: int) -> "Spec":
        return replace(self, n_layers=n_layers)

    def n_params(self) -> int:
        """The parameter count every implementation must have."""
        d, h = self.dim, self.mlp
        block = 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * h + h) + (h * d + d)
        return self.vocab * d + self.n_ctx * d + self.n_layers * block + 2 * d + d * self.vocab + self.vocab

    def train_flops(self) -> int:
        """The matmul FLOPs of one train step, counted analytically (as `NOTES.md` states):

        `3 · tokens · (L · (2·(3d² + d² + 2·d·h) + 4·T·d) + 2·d·V)`, `tokens = batch · T`:
        per token and layer, 2 FLOPs per multiply-add of the `[q|k|v]` (3d²), out (d²) and
        MLP (2·d·h) products, and of the scores and the weighted sum of attention (2·T·d,
        the whole `[T, T]` square although causal attention needs half of it); the head
        (d·V); forward plus backward is 3 times the forward. Not counted: embeddings, norms,
        softmax, gelu, the loss, the optimizer, and what rematerialisation recomputes.
        """
        d, h, t = self.dim, self.mlp, self.n_ctx
        per_token = self.n_layers * (2 * (3 * d * d + d * d + 2 * d * h) + 4 * t * d) + 2 * d * self.vocab
        return 3 * self.batch * t * per_token


class Built(NamedTuple):
    """A built implementation: its train step and forward, and the states they take."""

    name: str
    n_params: int
    state: Any
    step: Callable[[Any, Array, Array], tuple[Any, Array]]
    fwd_state: Any
    forward: Callable[[Any, Array], Array]


Builder = Callable[[Spec, bool], Built]
"""`(spec, scan) -> Built`; `scan=True` runs the layers with `jax.lax.scan` (where supported)."""


def optimizer(spec: Spec) -> optax.GradientTransformation:
    """AdamW, the same everywhere (optax's defaults otherwise)."""
    return optax.adamw(spec.learning_rate, b1=0.9, b2=0.999, eps=1e-8, weight_decay=spec.weight_decay)


def batch(spec: Spec, seed: int = 0) -> tuple[Array, Array]:
    """Random tokens `[batch, n_ctx]` and their next tokens."""
    tokens = jr.randint(jr.key(seed), (spec.batch, spec.n_ctx + 1), 0, spec.vocab, jnp.int32)
    return tokens[:, :-1], tokens[:, 1:]


# The shared arithmetic. Every function works on any leading batch axes.


def layer_norm(x: Array, a: Array, b: Array, eps: float) -> Array:
    """`(x - mean) * (a * rsqrt(var + eps)) + b` over the last axis, as jaxmake's `LayerNorm`.

    Computed in float32 whatever the dtype of `x`, and returned in the dtype of `x` (the
    casts are no-ops on float32 inputs).
    """
    x32 = x.astype(jnp.float32)
    centred = x32 - x32.mean(axis=-1, keepdims=True)
    var = jnp.square(centred).mean(axis=-1, keepdims=True)
    return (centred * (a * jax.lax.rsqrt(var + eps)) + b).astype(x.dtype)


def gelu(x: Array) -> Array:
    return jax.nn.gelu(x, approximate=True)


AttentionPath = Literal["einsum", "xla", "cudnn"]
"""How `causal_attention` computes: `"einsum"` writes scores, mask and softmax out (the
softmax in float32); `"xla"` and `"cudnn"` call `jax.nn.dot_product_attention(...,
is_causal=True, implementation=...)` (cuDNN's fused kernel takes only 16-bit floats, on a GPU)."""


def causal_attention(qkv: Array, n_heads: int, impl: AttentionPath = "einsum") -> Array:
    """Causal multi-head attention of `qkv: [..., T, 3 d]` (`[q|k|v]`) -> `[..., T, d]`, before the out projection.

    The result has the dtype of `qkv`; the einsum path computes scores and softmax in float32.
    """
    q, k, v = jnp.split(qkv, 3, axis=-1)
    *lead, length, dim = q.shape
    head_dim = dim // n_heads

    def heads(a: Array) -> Array:
        return a.reshape(*lead, length, n_heads, head_dim)

    if impl != "einsum":
        fused = jax.nn.dot_product_attention(heads(q), heads(k), heads(v), is_causal=True, implementation=impl)
        return fused.reshape(*lead, length, dim)
    scaled_q = heads(q) / math.sqrt(head_dim)
    scores = jnp.einsum("...qhd,...khd->...hqk", scaled_q, heads(k), preferred_element_type=jnp.float32)
    causal = jnp.tril(jnp.ones((length, length), jnp.bool_))
    attn = jax.nn.softmax(jnp.where(causal, scores, -jnp.inf), axis=-1).astype(v.dtype)
    return jnp.einsum("...hqk,...khd->...qhd", attn, heads(v)).reshape(*lead, length, dim)


def cross_entropy(logits: Array, targets: Array) -> Array:
    """The mean of `-log softmax(logits)[target]`."""
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(log_probs, targets[..., None], axis=-1).mean()


def count(tree: Any) -> int:
    return sum(int(leaf.size) for leaf in jax.tree.leaves(tree))


def jax_step(
    loss: Callable[[Any, Array, Array], Array], spec: Spec
) -> Callable[[Any, Array, Array], tuple[Any, Array]]:
    """The plain-JAX train step of a loss `(params, tokens, targets) -> scalar`: state `(params, opt_state)`."""
    tx = optimizer(spec)

    def step(state: tuple[Any, Any], tokens: Array, targets: Array) -> tuple[Any, Array]:
        params, opt_state = state
        value, grads = jax.value_and_grad(loss)(params, tokens, targets)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), value

    return jax.jit(step)


# 1. jaxmake's library `Gpt`.


def gpt_config(spec: Spec, scan: bool) -> Gpt:
    return Gpt(
        vocab_size=spec.vocab,
        n_ctx=spec.n_ctx,
        n_tfe_layers=spec.n_layers,
        n_heads=spec.n_heads,
        dim_model=spec.dim,
        eps=spec.eps,
        mlp_n_hidden=(spec.mlp,),
        mlp_activation="gelu",
        scan_layers=scan,
    )


def build_jaxmake_gpt(spec: Spec, scan: bool) -> Built:
    return build_gpt(gpt_config(spec, scan), spec)


def build_gpt(config: Gpt, spec: Spec) -> Built:
    """jaxmake's `Gpt` of any config (`gpt_config` with other fields replaced), trained as `spec` says."""
    gpt = Gpt.make(config)
    return _jaxmake_built("jaxmake Gpt", gpt, gpt.get_fixed_process(LOSS_PORTS), spec)


def _jaxmake_built(name: str, component: jm.Component, loss_process: jm.FixedProcess, spec: Spec) -> Built:
    per_example: Callable[[Any, Array, Array], Array] = jax.vmap(
        lambda w, x, y: loss_process(w, {jm.Input: x, "targets": y})["loss"], in_axes=(None, 0, 0)
    )

    def loss(weights: jm.Weights, tokens: Array, targets: Array) -> Array:
        return per_example(weights, tokens, targets).mean()

    weights = jm.make_weights(jr.key(0), component.weight_params)
    forward = jax.jit(jax.vmap(component.fixed_pipeline, in_axes=(None, 0)))
    state = (weights, optimizer(spec).init(weights))
    return Built(name, count(weights), state, jax_step(loss, spec), weights, forward)


# 2. The same model written with jaxmake's core, as a user would.


def _linear(n_in: int, n_out: int, scale: float = 1.0) -> dict[str, jm.WeightParams]:
    return {"w": jm.WeightParams((n_in, n_out), scale=scale), "b": jm.WeightParams((n_out,), init=0)}


def _norm(dim: int) -> dict[str, jm.WeightParams]:
    return {"a": jm.WeightParams((dim,), init=1), "b": jm.WeightParams((dim,), init=0)}


def _block(spec: Spec) -> jm.Component:
    def block(w: jm.Weights, x: Float[Array, "T dim"]) -> Float[Array, "T dim"]:
        h = layer_norm(x, w["norm1"]["a"], w["norm1"]["b"], spec.eps)
        x = x + causal_attention(h @ w["qkv"]["w"] + w["qkv"]["b"], spec.n_heads) @ w["out"]["w"] + w["out"]["b"]
        h = layer_norm(x, w["norm2"]["a"], w["norm2"]["b"], spec.eps)
        out: Array = x + gelu(h @ w["fc1"]["w"] + w["fc1"]["b"]) @ w["fc2"]["w"] + w["fc2"]["b"]
        return out

    d = spec.dim
    params = {"norm1": _norm(d), "qkv": _linear(d, 3 * d), "out": _linear(d, d), "norm2": _norm(d)}
    params |= {"fc1": _linear(d, spec.mlp), "fc2": _linear(spec.mlp, d)}
    return jm.Component.from_fixed_pipeline(params, block, dims={"dim": d}, limits={"T": spec.n_ctx})


def build_jaxmake_core(spec: Spec, scan: bool) -> Built:
    names = [f"block_{i}" for i in range(spec.n_layers)]
    blocks = {name: _block(spec) for name in names}
    layers = jm.sequential(blocks, names)
    loss_ports = jm.make_ports({jm.Input: Int[Array, "T"], "targets": Int[Array, "T"]}, {"loss": Float[Array, ""]})

    def logits(w: jm.Weights, tokens: Int[Array, " T"]) -> Float[Array, "T vocab"]:
        x = layers(w, w["embed"][tokens] + w["pos"][: tokens.shape[0]], None)
        out: Array = layer_norm(x, w["norm"]["a"], w["norm"]["b"], spec.eps) @ w["head"]["w"] + w["head"]["b"]
        return out

    def loss(w: jm.Weights, inputs: Mapping[str, Array]) -> dict[str, Array]:
        return {"loss": cross_entropy(logits(w, inputs[jm.Input]), inputs["targets"])}

    params: dict[str, Any] = {
        **jm.merge_params(blocks),
        "embed": jm.WeightParams((spec.vocab, spec.dim), init="embedding"),
        "pos": jm.WeightParams((spec.n_ctx, spec.dim), init="normal"),
        "norm": _norm(spec.dim),
        "head": _linear(spec.dim, spec.vocab, scale=0.1),
    }
    dims, limits = {"dim": spec.dim, "vocab": spec.vocab}, {"T": spec.n_ctx}
    gpt = jm.Component.from_fixed_pipeline(params, logits, dims=dims, limits=limits)
    loss_component = jm.Component.from_fixed_process(params, loss, loss_ports, dims=dims, limits=limits)
    return _jaxmake_built("jaxmake core", gpt, loss_component.get_fixed_process(loss_ports), spec)


# 3. Hand-written JAX: the baseline.


def init_raw(spec: Spec, scan: bool, key: Array) -> dict[str, Any]:
    """Nested dict params; `scan=True` stacks the blocks under `layers` on a leading axis."""
    d, h = spec.dim, spec.mlp
    keys = iter(jr.split(key, 8 * spec.n_layers + 8))

    def dense(n_in: int, n_out: int, scale: float = 1.0) -> dict[str, Array]:
        return {"w": jr.normal(next(keys), (n_in, n_out)) * scale / math.sqrt(n_in), "b": jnp.zeros(n_out)}

    def norm() -> dict[str, Array]:
        return {"a": jnp.ones(d), "b": jnp.zeros(d)}

    def block() -> dict[str, Any]:
        return {
            "norm1": norm(),
            "qkv": dense(d, 3 * d),
            "out": dense(d, d),
            "norm2": norm(),
            "fc1": dense(d, h),
            "fc2": dense(h, d),
        }

    blocks = [block() for _ in range(spec.n_layers)]
    layers: Any = (
        jax.tree.map(lambda *a: jnp.stack(a), *blocks) if scan else {f"layer_{i}": b for i, b in enumerate(blocks)}
    )
    return {
        "embed": jr.normal(next(keys), (spec.vocab, d)),
        "pos": jr.normal(next(keys), (spec.n_ctx, d)),
        "layers": layers,
        "norm": norm(),
        "head": dense(d, spec.vocab, 0.1),
    }


@dataclass(frozen=True)
class Compute:
    """How the hand-written model computes; its parameters are float32 whatever this says.

    Args:
        dtype: the dtype of the matmuls and of the activations between them (the residual
            stream included). LayerNorm statistics, the softmax of the einsum attention, the
            logits and the loss are float32 in every case.
        attention: see `AttentionPath`.
    """

    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    attention: AttentionPath = "einsum"


FLOAT32 = Compute()
"""The baseline: float32 throughout, einsum attention."""


def raw_block(p: dict[str, Any], x: Array, spec: Spec, compute: Compute = FLOAT32) -> Array:
    """One pre-LayerNorm block on `x: [..., T, d]` in the compute dtype (the casts are no-ops in float32)."""
    w = {name: jax.tree.map(lambda a: a.astype(compute.dtype), p[name]) for name in ("qkv", "out", "fc1", "fc2")}
    h = layer_norm(x, p["norm1"]["a"], p["norm1"]["b"], spec.eps)
    attended = causal_attention(h @ w["qkv"]["w"] + w["qkv"]["b"], spec.n_heads, compute.attention)
    x = x + attended @ w["out"]["w"] + w["out"]["b"]
    h = layer_norm(x, p["norm2"]["a"], p["norm2"]["b"], spec.eps)
    out: Array = x + gelu(h @ w["fc1"]["w"] + w["fc1"]["b"]) @ w["fc2"]["w"] + w["fc2"]["b"]
    return out


def raw_logits(params: dict[str, Any], tokens: Array, spec: Spec, scan: bool, compute: Compute = FLOAT32) -> Array:
    """Float32 logits `[..., T, vocab]` of `tokens: [..., T]`."""
    dt = compute.dtype
    x = (params["embed"][tokens] + params["pos"][: tokens.shape[-1]]).astype(dt)
    if scan:
        x, _ = jax.lax.scan(lambda x, p: (raw_block(p, x, spec, compute), None), x, params["layers"])
    else:
        for i in range(spec.n_layers):
            x = raw_block(params["layers"][f"layer_{i}"], x, spec, compute)
    h = layer_norm(x, params["norm"]["a"], params["norm"]["b"], spec.eps)
    head = params["head"]
    out: Array = jnp.matmul(h, head["w"].astype(dt), preferred_element_type=jnp.float32) + head["b"]
    return out


def build_raw(spec: Spec, scan: bool, compute: Compute = FLOAT32) -> Built:
    """The hand-written model; `compute` other than `FLOAT32` names it after its dtype and attention."""
    params = init_raw(spec, scan, jr.key(0))

    def loss(p: dict[str, Any], tokens: Array, targets: Array) -> Array:
        return cross_entropy(raw_logits(p, tokens, spec, scan, compute), targets)

    forward = jax.jit(lambda p, tokens: raw_logits(p, tokens, spec, scan, compute))
    name = BASELINE if compute == FLOAT32 else f"{BASELINE}, {compute.dtype}, {compute.attention} attention"
    return Built(name, count(params), (params, optimizer(spec).init(params)), jax_step(loss, spec), params, forward)


BASELINE = "hand-written JAX"
"""The name of the baseline every ratio divides by."""

BUILDERS: dict[str, Builder] = {
    "jaxmake Gpt": build_jaxmake_gpt,
    "jaxmake core": build_jaxmake_core,
    BASELINE: build_raw,
}
"""The implementations that always exist; `peer_builders` adds the peers that import."""

SCANNABLE = ("jaxmake Gpt", BASELINE)
"""The implementations whose builders honour `scan=True`."""


def tiny_jaxmake() -> tuple[Callable[[Any, Array], Array], Any, Array]:
    """The tiny model (one 8 -> 8 linear on one example) in jaxmake: jitted call, weights, input."""
    from jaxmake.components import Linear

    linear = Linear.make(Linear(8, 8))
    return jax.jit(linear.fixed_pipeline), jm.make_weights(jr.key(0), linear.weight_params), jnp.ones(8)


def tiny_raw() -> tuple[Callable[[Any, Array], Array], Any, Array]:
    params = {"w": jr.normal(jr.key(0), (8, 8)) / math.sqrt(8), "b": jnp.zeros(8)}
    return jax.jit(lambda p, x: x @ p["w"] + p["b"]), params, jnp.ones(8)


TINY: dict[str, Callable[[], tuple[Callable[[Any, Array], Array], Any, Array]]] = {
    "jaxmake Gpt": tiny_jaxmake,
    "jaxmake core": tiny_jaxmake,
    BASELINE: tiny_raw,
}
"""Each implementation's tiny model; the peers' are added by `peer_builders`."""
