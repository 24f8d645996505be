"""The GPT of `_models` in the peer libraries: Flax NNX (two styles), Flax Linen, Equinox, Haiku.

Each is written as that library's users write it: its own `Linear`/`Dense` and embedding
modules, a small LayerNorm module holding `a` and `b` (so that every implementation runs the
same folded LayerNorm), and the library's recommended jit. `peer_builders()` returns the
builders of the peers that import, and the reason each missing one failed.
"""

import importlib
from collections.abc import Callable, Sequence
from typing import Any, cast

import jax
import jax.numpy as jnp
import jax.random as jr
from _models import Builder, Built, Spec, causal_attention, count, cross_entropy, gelu, jax_step, layer_norm, optimizer
from jax import Array

TinyBuilder = Callable[[], tuple[Callable[[Any, Array], Array], Any, Array]]


def _nnx_model(spec: Spec) -> Any:
    from flax import nnx

    class LayerNorm(nnx.Module):
        def __init__(self, dim: int) -> None:
            self.a = nnx.Param(jnp.ones(dim))
            self.b = nnx.Param(jnp.zeros(dim))

        def __call__(self, x: Array) -> Array:
            return layer_norm(x, self.a[...], self.b[...], spec.eps)

    class Block(nnx.Module):
        def __init__(self, rngs: nnx.Rngs) -> None:
            d = spec.dim
            self.norm1, self.norm2 = LayerNorm(d), LayerNorm(d)
            self.qkv, self.out = nnx.Linear(d, 3 * d, rngs=rngs), nnx.Linear(d, d, rngs=rngs)
            self.fc1, self.fc2 = nnx.Linear(d, spec.mlp, rngs=rngs), nnx.Linear(spec.mlp, d, rngs=rngs)

        def __call__(self, x: Array) -> Array:
            x = x + self.out(causal_attention(self.qkv(self.norm1(x)), spec.n_heads))
            return x + self.fc2(gelu(self.fc1(self.norm2(x))))

    class GptNnx(nnx.Module):
        def __init__(self, rngs: nnx.Rngs) -> None:
            self.embed = nnx.Embed(spec.vocab, spec.dim, rngs=rngs)
            self.pos = nnx.Param(jr.normal(rngs.params(), (spec.n_ctx, spec.dim)))
            self.blocks = nnx.List([Block(rngs) for _ in range(spec.n_layers)])
            self.norm = LayerNorm(spec.dim)
            self.head = nnx.Linear(spec.dim, spec.vocab, kernel_init=nnx.initializers.normal(0.02), rngs=rngs)

        def __call__(self, tokens: Array) -> Array:
            x = self.embed(tokens) + self.pos[...][: tokens.shape[-1]]
            for block in self.blocks:
                x = block(x)
            out: Array = self.head(self.norm(x))
            return out

    return GptNnx(nnx.Rngs(0))


def build_nnx_jit(spec: Spec, scan: bool) -> Built:
    """Flax NNX with `nnx.jit`: the model and optimizer are mutable objects passed to the step."""
    from flax import nnx

    model = _nnx_model(spec)
    opt = nnx.Optimizer(model, optimizer(spec), wrt=nnx.Param)

    def loss(m: Any, tokens: Array, targets: Array) -> Array:
        return cross_entropy(m(tokens), targets)

    @nnx.jit
    def train(m: Any, o: Any, tokens: Array, targets: Array) -> Array:
        value: Array
        value, grads = nnx.value_and_grad(loss)(m, tokens, targets)
        o.update(m, grads)
        return value

    def step(state: tuple[Any, Any], tokens: Array, targets: Array) -> tuple[Any, Array]:
        return state, train(*state, tokens, targets)

    forward = nnx.jit(lambda m, tokens: m(tokens))
    return Built("Flax NNX (nnx.jit)", count(nnx.state(model, nnx.Param)), (model, opt), step, model, forward)


def build_nnx_split(spec: Spec, scan: bool) -> Built:
    """Flax NNX in the split/merge + `jax.jit` style that Flax recommends for speed."""
    from flax import nnx

    model = _nnx_model(spec)
    opt = nnx.Optimizer(model, optimizer(spec), wrt=nnx.Param)
    graphdef, state = nnx.split((model, opt))
    model_def, model_state = nnx.split(model)

    def loss(m: Any, tokens: Array, targets: Array) -> Array:
        return cross_entropy(m(tokens), targets)

    @jax.jit
    def step(state: Any, tokens: Array, targets: Array) -> tuple[Any, Array]:
        m, o = nnx.merge(graphdef, state)
        value, grads = nnx.value_and_grad(loss)(m, tokens, targets)
        o.update(m, grads)
        return nnx.state((m, o)), value

    forward = jax.jit(lambda s, tokens: nnx.merge(model_def, s)(tokens))
    return Built(
        "Flax NNX (split/merge + jax.jit)", count(nnx.state(model, nnx.Param)), state, step, model_state, forward
    )


def build_linen(spec: Spec, scan: bool) -> Built:
    import flax.linen as nn

    class LayerNorm(nn.Module):
        @nn.compact
        def __call__(self, x: Array) -> Array:
            a = self.param("a", nn.initializers.ones, (spec.dim,))
            b = self.param("b", nn.initializers.zeros, (spec.dim,))
            return layer_norm(x, a, b, spec.eps)

    class Block(nn.Module):
        @nn.compact
        def __call__(self, x: Array) -> Array:
            d = spec.dim
            x = x + nn.Dense(d)(causal_attention(nn.Dense(3 * d)(LayerNorm()(x)), spec.n_heads))
            return x + nn.Dense(d)(gelu(nn.Dense(spec.mlp)(LayerNorm()(x))))

    class GptLinen(nn.Module):
        @nn.compact
        def __call__(self, tokens: Array) -> Array:
            pos = self.param("pos", nn.initializers.normal(1.0), (spec.n_ctx, spec.dim))
            x = nn.Embed(spec.vocab, spec.dim)(tokens) + pos[: tokens.shape[-1]]
            for _ in range(spec.n_layers):
                x = Block()(x)
            out: Array = nn.Dense(spec.vocab, kernel_init=nn.initializers.normal(0.02))(LayerNorm()(x))
            return out

    model = GptLinen()
    params = model.init(jr.key(0), jnp.zeros((1, spec.n_ctx), jnp.int32))["params"]

    def loss(p: Any, tokens: Array, targets: Array) -> Array:
        return cross_entropy(cast(Array, model.apply({"params": p}, tokens)), targets)

    forward = jax.jit(lambda p, tokens: model.apply({"params": p}, tokens))
    return Built(
        "Flax Linen", count(params), (params, optimizer(spec).init(params)), jax_step(loss, spec), params, forward
    )


def _eqx_model(spec: Spec) -> Any:
    import equinox as eqx

    class LayerNorm(eqx.Module):
        a: Array
        b: Array

        def __init__(self, dim: int) -> None:
            self.a, self.b = jnp.ones(dim), jnp.zeros(dim)

        def __call__(self, x: Array) -> Array:
            return layer_norm(x, self.a, self.b, spec.eps)

    class Block(eqx.Module):
        norm1: LayerNorm
        qkv: eqx.nn.Linear
        out: eqx.nn.Linear
        norm2: LayerNorm
        fc1: eqx.nn.Linear
        fc2: eqx.nn.Linear

        def __init__(self, key: Array) -> None:
            d, keys = spec.dim, jr.split(key, 4)
            self.norm1, self.norm2 = LayerNorm(d), LayerNorm(d)
            self.qkv, self.out = eqx.nn.Linear(d, 3 * d, key=keys[0]), eqx.nn.Linear(d, d, key=keys[1])
            self.fc1, self.fc2 = eqx.nn.Linear(d, spec.mlp, key=keys[2]), eqx.nn.Linear(spec.mlp, d, key=keys[3])

        def __call__(self, x: Array) -> Array:  # x: [T, d]; eqx.nn.Linear is per vector
            x = x + jax.vmap(self.out)(causal_attention(jax.vmap(self.qkv)(self.norm1(x)), spec.n_heads))
            return x + jax.vmap(self.fc2)(gelu(jax.vmap(self.fc1)(self.norm2(x))))

    class GptEqx(eqx.Module):
        embed: eqx.nn.Embedding
        pos: Array
        blocks: list[Block]
        norm: LayerNorm
        head: eqx.nn.Linear

        def __init__(self, key: Array) -> None:
            keys = jr.split(key, spec.n_layers + 3)
            self.embed = eqx.nn.Embedding(spec.vocab, spec.dim, key=keys[0])
            self.pos = jr.normal(keys[1], (spec.n_ctx, spec.dim))
            self.blocks = [Block(k) for k in keys[3:]]
            self.norm = LayerNorm(spec.dim)
            head = eqx.nn.Linear(spec.dim, spec.vocab, key=keys[2])
            self.head = eqx.tree_at(lambda h: h.weight, head, head.weight * 0.1)

        def __call__(self, tokens: Array) -> Array:  # per example, tokens: [T]
            x = jax.vmap(self.embed)(tokens) + self.pos[: tokens.shape[0]]
            for block in self.blocks:
                x = block(x)
            out: Array = jax.vmap(self.head)(self.norm(x))
            return out

    return GptEqx(jr.key(0))


def build_equinox(spec: Spec, scan: bool) -> Built:
    import equinox as eqx

    model = _eqx_model(spec)
    tx = optimizer(spec)

    def loss(m: Any, tokens: Array, targets: Array) -> Array:
        return cross_entropy(jax.vmap(m)(tokens), targets)

    @eqx.filter_jit
    def step(state: tuple[Any, Any], tokens: Array, targets: Array) -> tuple[Any, Array]:
        m, opt_state = state
        value, grads = eqx.filter_value_and_grad(loss)(m, tokens, targets)
        updates, opt_state = tx.update(grads, opt_state, eqx.filter(m, eqx.is_array))
        return (eqx.apply_updates(m, updates), opt_state), value

    forward = eqx.filter_jit(lambda m, tokens: jax.vmap(m)(tokens))
    state = (model, tx.init(eqx.filter(model, eqx.is_array)))
    return Built("Equinox (filter_jit)", count(eqx.filter(model, eqx.is_array)), state, step, model, forward)


def _hk_normal(std: float) -> Callable[[Sequence[int], Any], Array]:
    """A normal initializer of standard deviation `std`, drawn from Haiku's rng."""
    import haiku as hk

    return lambda shape, dtype: std * jr.normal(hk.next_rng_key(), shape, dtype)


def build_haiku(spec: Spec, scan: bool) -> Built:
    import haiku as hk

    def norm(x: Array) -> Array:
        with hk.experimental.name_scope("norm"):
            a = hk.get_parameter("a", (spec.dim,), init=jnp.ones)
            b = hk.get_parameter("b", (spec.dim,), init=jnp.zeros)
        return layer_norm(x, a, b, spec.eps)

    def logits(tokens: Array) -> Array:
        d = spec.dim
        pos = hk.get_parameter("pos", (spec.n_ctx, d), init=_hk_normal(1.0))
        x = hk.Embed(spec.vocab, d)(tokens) + pos[: tokens.shape[-1]]
        for i in range(spec.n_layers):
            with hk.experimental.name_scope(f"block_{i}"):
                x = x + hk.Linear(d, name="out")(causal_attention(hk.Linear(3 * d, name="qkv")(norm(x)), spec.n_heads))
                x = x + hk.Linear(d, name="fc2")(gelu(hk.Linear(spec.mlp, name="fc1")(norm(x))))
        out: Array = hk.Linear(spec.vocab, w_init=_hk_normal(0.02), name="head")(norm(x))
        return out

    model: Any = hk.without_apply_rng(hk.transform(logits))
    params = model.init(jr.key(0), jnp.zeros((1, spec.n_ctx), jnp.int32))

    def loss(p: Any, tokens: Array, targets: Array) -> Array:
        return cross_entropy(model.apply(p, tokens), targets)

    forward = jax.jit(model.apply)
    return Built("Haiku", count(params), (params, optimizer(spec).init(params)), jax_step(loss, spec), params, forward)


def _tiny_nnx(style: str) -> TinyBuilder:
    def build() -> tuple[Callable[[Any, Array], Array], Any, Array]:
        from flax import nnx

        linear = nnx.Linear(8, 8, rngs=nnx.Rngs(0))
        if style == "nnx.jit":
            return nnx.jit(lambda m, x: m(x)), linear, jnp.ones(8)
        graphdef, state = nnx.split(linear)
        return jax.jit(lambda s, x: nnx.merge(graphdef, s)(x)), state, jnp.ones(8)

    return build


def _tiny_linen() -> tuple[Callable[[Any, Array], Array], Any, Array]:
    import flax.linen as nn

    dense = nn.Dense(8)
    params = dense.init(jr.key(0), jnp.ones(8))
    return jax.jit(dense.apply), params, jnp.ones(8)


def _tiny_equinox() -> tuple[Callable[[Any, Array], Array], Any, Array]:
    import equinox as eqx

    return eqx.filter_jit(lambda m, x: m(x)), eqx.nn.Linear(8, 8, key=jr.key(0)), jnp.ones(8)


def _tiny_haiku() -> tuple[Callable[[Any, Array], Array], Any, Array]:
    import haiku as hk

    model: Any = hk.without_apply_rng(hk.transform(lambda x: hk.Linear(8)(x)))
    return jax.jit(model.apply), model.init(jr.key(0), jnp.ones(8)), jnp.ones(8)


PEERS: dict[str, tuple[str, Builder, TinyBuilder]] = {
    "Flax NNX (nnx.jit)": ("flax.nnx", build_nnx_jit, _tiny_nnx("nnx.jit")),
    "Flax NNX (split/merge + jax.jit)": ("flax.nnx", build_nnx_split, _tiny_nnx("split")),
    "Flax Linen": ("flax.linen", build_linen, _tiny_linen),
    "Equinox (filter_jit)": ("equinox", build_equinox, _tiny_equinox),
    "Haiku": ("haiku", build_haiku, _tiny_haiku),
}
"""Each peer: the module it needs, its builder, its tiny model."""


def peer_builders() -> tuple[dict[str, Builder], dict[str, TinyBuilder], dict[str, str]]:
    """The builders and tiny models of the peers whose library imports, and why each other one is missing."""
    builders: dict[str, Builder] = {}
    tiny: dict[str, TinyBuilder] = {}
    missing: dict[str, str] = {}
    for name, (module, builder, tiny_builder) in PEERS.items():
        try:
            importlib.import_module(module)
        except Exception as error:  # an ImportError, or a peer broken against this jax
            missing[name] = f"`import {module}` failed: {type(error).__name__}: {error}"
            continue
        builders[name], tiny[name] = builder, tiny_builder
    return builders, tiny, missing
