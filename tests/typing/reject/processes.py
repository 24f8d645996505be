"""mypy must report exactly the errors and notes announced at the end of the lines below."""

from collections.abc import Mapping

from jax import Array

import jaxmake as jm


def two_args(weights: jm.Weights, x: Array) -> Array:
    return x


def returns_array(weights: jm.Weights, inputs: Mapping[str, Array], rng: Array | None) -> Array:
    return inputs["Input"]


def four_args(weights: jm.Weights, x: Array, rng: Array | None, extra: int) -> Array:
    return x


jm.Component.from_pipeline({}, two_args)
jm.Component.from_pipeline({}, four_args)  # E: arg-type: Argument 2 to "from_pipeline" of "Component" has incompatible type
jm.Component.from_process({}, returns_array, jm.pipeline_ports)  # E: arg-type: Argument 2 to "from_process" of "Component" has incompatible type
jm.Component({}, {}, frozenset())  # E: call-arg: Too many positional arguments for "Component"
jm.Component.from_pipeline({}, two_args, None, {"d": 3})  # E: call-arg: Too many positional arguments for "from_pipeline" of "Component"  # E: arg-type: Argument 4 to "from_pipeline" of "Component" has incompatible type
jm.make_ports(3, "Output")  # E: arg-type: Argument 1 to "make_ports" has incompatible type "int"
jm.WeightParams((2, 3), init="uniform")  # E: arg-type: Argument "init" to "WeightParams" has incompatible type "Literal['uniform']"
