"""The config pattern, proved on a small component: an affine layer `x @ w + b`.

This is the shape every jaxmake component takes: a `...Configs` Protocol listing the fields
`make` reads, a frozen config class that implements it and carries `make`, and a `make`
that returns a `Component` whose ports carry jaxtyping annotations.
"""

from typing import Annotated, Literal, Protocol

import jax
import jax.numpy as jnp
from annotated_types import Ge, Gt, Le
from jaxtyping import Array, Float

import jaxmake as jm


class AffineConfigs(Protocol):
    """What `Affine.make` needs. Any object with these fields will do."""

    @property
    def n_in(self) -> int: ...
    @property
    def n_out(self) -> int: ...
    @property
    def activation(self) -> Literal["identity", "relu"]: ...


class Affine(jm.Config):
    """An affine layer, per example: `x: [T, n_in] -> act(x @ w + b): [T, n_out]`.

    Weights: `w: [n_in, n_out]` (kaiming), `b: [n_out]` (zeros).
    """

    n_in: Annotated[int, Ge(1)]
    n_out: Annotated[int, Ge(1)]
    activation: Literal["identity", "relu"] = "identity"
    init_scale: Annotated[float, Gt(0), Le(10)] = 1.0

    def validate(self) -> None:
        if self.activation == "relu" and self.n_out < 2:
            raise self.error("n_out", "must be >= 2 when `activation` is 'relu'")

    @classmethod
    def make(cls, config: AffineConfigs) -> jm.Component:
        """Build the component from any object with the fields of `AffineConfigs`."""
        activation = config.activation

        def pipeline(weights: dict[str, Array], x: Float[Array, "T n_in"]) -> Float[Array, "T n_out"]:
            y = x @ weights["w"] + weights["b"]
            return jax.nn.relu(y) if activation == "relu" else y

        weight_params = {
            "w": jm.WeightParams((config.n_in, config.n_out)),
            "b": jm.WeightParams((config.n_out,), init=0),
        }
        return jm.Component.from_pipeline(weight_params, pipeline, dims=config)


def reference(weights: jm.Weights, x: jax.Array) -> jax.Array:
    """The affine map written out by hand."""
    w: jax.Array = weights["w"]
    b: jax.Array = weights["b"]
    return jnp.einsum("ti,io->to", x, w) + b[None, :]
