"""mypy must accept this file (it is part of the main `mypy --strict` run)."""

from collections.abc import Mapping
from typing import Literal, assert_type

import jax
from jaxtyping import Array, Float

import jaxmake as jm
from tests.affine import Affine, AffineConfigs


class BigModel(jm.Config):
    """A config with more fields than `Affine` needs: it still satisfies `AffineConfigs`."""

    n_in: int
    n_out: int
    activation: Literal["identity", "relu"] = "relu"
    depth: int = 4


def uses_protocol(config: AffineConfigs) -> int:
    return config.n_in


big = BigModel(3, 4)
assert_type(Affine.make(big), jm.Component)
assert_type(uses_protocol(big), int)
assert_type(Affine.make(Affine(2, 2)).pipeline, jm.Pipeline)
assert_type(Affine.make(Affine(2, 2)).fixed_pipeline, jm.FixedPipeline)
assert_type(jm.make_weights(jax.random.key(0), {"w": jm.WeightParams((2, 2))}), jm.Weights)


def process(weights: jm.Weights, inputs: Mapping[str, Array], rng: Array | None) -> dict[str, Array]:
    return {"Output": inputs["Input"]}


def pipeline(weights: jm.Weights, x: Float[Array, "T d"], rng: Array | None) -> Float[Array, "T d"]:
    return x


assert_type(jm.Component.from_process({}, process, jm.pipeline_ports), jm.Component)
assert_type(jm.Component.from_pipeline({}, pipeline), jm.Component)
assert_type(jm.sequential({"p": jm.Component.from_pipeline({}, pipeline)}, ["p", "p"]), jm.Pipeline)
