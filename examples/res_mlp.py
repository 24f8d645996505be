"""A residual MLP block written as a researcher would: every child named once.

`ResMlp` is LayerNorm -> Linear -> gelu -> Linear, plus the residual, per token. Its
children are made by `jm.make_children`, whose keyword is at once the child's scope (the
path its errors give, `ResMlp.fc2`), its key in the weight spec and the key its call reads
from the parent's weights. `dims=config` binds the annotation's `dim_model` to the config's,
so `make` checks the block's contract on abstract values before any weight exists.

Run: `python examples/res_mlp.py` (needs the `train` extra for optax) trains it for a few
steps to map random vectors to their reversal.
"""

from typing import Protocol

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float

import jaxmake as jm
from jaxmake.components import LayerNorm, Linear, Size


class ResMlpConfigs(Protocol):
    @property
    def dim_model(self) -> int: ...
    @property
    def n_hidden(self) -> int: ...


class ResMlp(jm.Config):
    """`x + fc2(gelu(fc1(norm(x))))`: `[*batch, dim_model] -> [*batch, dim_model]`, per example."""

    dim_model: Size
    n_hidden: Size

    @classmethod
    def make(cls, config: ResMlpConfigs) -> jm.Component:
        d, h = config.dim_model, config.n_hidden
        c = jm.make_children(norm=LayerNorm(d), fc1=Linear(d, h), fc2=Linear(h, d))

        def block(weights: jm.Weights, x: Float[Array, "*batch dim_model"]) -> Float[Array, "*batch dim_model"]:
            return x + c.fc2(weights, jax.nn.gelu(c.fc1(weights, c.norm(weights, x))))

        return jm.Component.from_pipeline(c.weight_params, block, dims=config)


def train(config: ResMlp, steps: int, seed: int = 0) -> list[float]:
    """Fit the block to reverse random vectors with Adam; returns the loss of every step."""
    block = ResMlp.make(config)
    weights = jm.make_weights(jax.random.key(seed), block.weight_params)
    optimizer = optax.adam(3e-3)

    def loss(weights: jm.Weights, x: Array) -> Array:
        return jnp.mean(jnp.square(jax.vmap(block, in_axes=(None, 0))(weights, x) - x[:, ::-1]))

    @jax.jit
    def step(weights: jm.Weights, state: optax.OptState, x: Array) -> tuple[jm.Weights, optax.OptState, Array]:
        value, grads = jax.value_and_grad(loss)(weights, x)
        updates, state = optimizer.update(grads, state, weights)
        return optax.apply_updates(weights, updates), state, value

    state, losses = optimizer.init(weights), []
    for i in range(steps):
        x = jax.random.normal(jax.random.fold_in(jax.random.key(seed + 1), i), (64, config.dim_model))
        weights, state, value = step(weights, state, x)
        losses.append(float(value))
    return losses


if __name__ == "__main__":
    losses = train(ResMlp(dim_model=8, n_hidden=32), steps=200)
    print(
        f"ResMlp(dim_model=8, n_hidden=32): loss {losses[0]:.3f} at step 0, {losses[-1]:.3f} at step {len(losses) - 1}"
    )
