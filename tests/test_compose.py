"""`make_children`: each child named once, as its scope, its spec key and the key its call reads."""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxtyping import Array, Float

import jaxmake as jm
from jaxmake.components import Dropout, LayerNorm, Linear
from tests.affine import Affine


def test_children_are_made_under_their_names_and_read_their_own_weights(getkey: Any) -> None:
    with jm.scope("block"):
        c = jm.make_children(norm=LayerNorm(4), fc=Linear(4, 2), drop=lambda: Dropout.make(Dropout(0.5)))
    assert list(c) == ["norm", "fc", "drop"] and len(c) == 3
    assert [c[name].component.path for name in c] == ["block.norm", "block.fc", "block.drop"]
    assert (
        c.weight_params
        == jm.merge_params(c)
        == {
            "norm": c.norm.component.weight_params,
            "fc": c.fc.component.weight_params,
            "drop": {},
        }
    )
    weights = jm.make_weights(getkey(), c.weight_params)
    x = jax.random.normal(getkey(), (3, 4))
    np.testing.assert_array_equal(c.fc(weights, x), c.fc.component(weights["fc"], x))
    np.testing.assert_array_equal(c.norm(weights, x), c.norm.component.fixed_pipeline(weights["norm"], x))
    np.testing.assert_array_equal(c.drop(weights, x), x)  # no rng: evaluation mode
    assert not np.array_equal(c.drop(weights, x, getkey()), x)
    assert c["fc"] is c.fc


def test_a_block_written_with_children_has_the_contract_and_numbers_of_its_parts(getkey: Any) -> None:
    c = jm.make_children(fc1=Affine(3, 5), fc2=Affine(5, 3))

    def block(weights: jm.Weights, x: Float[Array, "T 3"]) -> Float[Array, "T 3"]:
        return x + c.fc2(weights, jax.nn.relu(c.fc1(weights, x)))

    component = jm.Component.from_pipeline(c.weight_params, block)
    weights = jm.make_weights(getkey(), component.weight_params)
    x = jax.random.normal(getkey(), (2, 3))
    hidden = jax.nn.relu(x @ weights["fc1"]["w"] + weights["fc1"]["b"])
    np.testing.assert_allclose(component(weights, x), x + hidden @ weights["fc2"]["w"] + weights["fc2"]["b"], rtol=1e-6)


def test_child_errors_name_the_child() -> None:
    c = jm.make_children(fc=Linear(2, 2))
    with pytest.raises(
        jm.WeightsError, match=r"child `fc` \(`fc`\) is called on its parent's weights, .* \['b', 'w'\]"
    ):
        c.fc({"b": jnp.zeros(2), "w": jnp.zeros((2, 2))}, jnp.zeros(2))
    with pytest.raises(jm.ArgumentError, match=r"there is no child `fc2`; the children are \['fc'\]"):
        _ = c.fc2
    assert "fc2" not in c
    with pytest.raises(jm.ArgumentError, match="child `made` is a component made beforehand; pass its config"):
        jm.make_children(made=Linear.make(Linear(2, 2)))  # type: ignore[arg-type]
    with pytest.raises(jm.ArgumentError, match=r"child `x` must be a config whose class has `make`.*; got int"):
        jm.make_children(x=3)  # type: ignore[arg-type]


def test_a_shape_error_inside_a_child_names_its_path() -> None:
    def wrong(weights: jm.Weights, x: Float[Array, "T 3"]) -> Float[Array, "T 3"]:
        return c.fc(weights, x.T)

    with jm.scope("model"):
        c = jm.make_children(fc=Linear(3, 3))
        with pytest.raises(
            jm.ShapeError, match=r"^ShapeError in model.fc, process \(Input\) -> \(Output\) \(called by"
        ):
            jm.Component.from_pipeline(c.weight_params, wrong)
