"""The config pattern: validation, beartype checks, list -> tuple; shown on `Affine`."""

from typing import Annotated, Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from annotated_types import Ge, Interval, Len, MultipleOf, Predicate

import jaxmake as jm
from tests.affine import Affine, reference


def test_affine_config_makes_a_working_component(getkey: Any) -> None:
    component = Affine.make(Affine(3, 5))
    weights = jm.make_weights(getkey(), component.weight_params)
    assert jax.tree.map(jnp.shape, weights) == {"b": (5,), "w": (3, 5)}
    x = jax.random.normal(getkey(), (7, 3))
    np.testing.assert_allclose(jax.jit(component.fixed_pipeline)(weights, x), reference(weights, x), rtol=1e-6)


def test_any_object_with_the_protocol_fields_can_be_made() -> None:
    class Big(jm.Config):
        n_in: int
        n_out: int
        activation: str
        unrelated: str = "ignored"

    component = Affine.make(Big(2, 3, "relu"))  # type: ignore[arg-type]  # str is wider than the Literal
    assert component.dims == {"n_in": 2, "n_out": 3}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_in": 0, "n_out": 2}, r"^`Affine.n_in`=0 must be >= 1$"),
        ({"n_in": "3", "n_out": 2}, r"^`Affine.n_in`='3' must be of type int, got str$"),
        ({"n_in": 3.0, "n_out": 2}, r"^`Affine.n_in`=3.0 must be of type int, got float$"),
        ({"n_in": True, "n_out": 2}, r"^`Affine.n_in`=True must be int, got a bool$"),
        (
            {"n_in": 3, "n_out": 2, "activation": "tanh"},
            r"^`Affine.activation`='tanh' must be one of 'identity', 'relu'$",
        ),
        ({"n_in": 3, "n_out": 2, "init_scale": 0}, r"^`Affine.init_scale`=0 must be > 0$"),
        ({"n_in": 3, "n_out": 2, "init_scale": 11.0}, r"^`Affine.init_scale`=11.0 must be <= 10$"),
        ({"n_in": 3, "n_out": 1, "activation": "relu"}, r"^`Affine.n_out`=1 must be >= 2 when `activation` is 'relu'$"),
    ],
)
def test_bad_fields_raise_config_error(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(jm.ConfigError, match=message) as info:
        Affine(**kwargs)
    assert isinstance(info.value, ValueError)


def test_ints_are_accepted_for_floats_and_configs_are_frozen_and_hashable() -> None:
    config = Affine(3, 2, init_scale=2)
    assert config.init_scale == 2
    with pytest.raises(AttributeError):
        config.n_in = 4  # type: ignore[misc]
    assert hash(config) == hash(Affine(3, 2, init_scale=2))


def _even(n: int) -> bool:
    return n % 2 == 0


class Constrained(jm.Config):
    hidden: tuple[Annotated[int, Ge(1)], ...] = ()
    pair: tuple[int, Annotated[int, Interval(ge=0, lt=5)]] = (0, 0)
    width: Annotated[int, MultipleOf(4)] = 4
    name: Annotated[str, Len(1, 3)] = "ab"
    even: Annotated[int, Predicate(_even)] = 0


def test_lists_become_tuples_and_item_constraints_are_checked() -> None:
    config = Constrained(hidden=[3, 4])  # type: ignore[arg-type]
    assert config.hidden == (3, 4)
    with pytest.raises(jm.ConfigError, match=r"^`Constrained.hidden`=\(3, 0\) item 1: must be >= 1$"):
        Constrained(hidden=[3, 0])  # type: ignore[arg-type]
    with pytest.raises(jm.ConfigError, match=r"^`Constrained.pair`=\(1, 5\) item 1: must be < 5$"):
        Constrained(pair=(1, 5))
    with pytest.raises(jm.ConfigError, match=r"`Constrained.pair`=\(1, 2, 3\) must be of type tuple\[int, "):
        Constrained(pair=(1, 2, 3))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"width": 6}, r"`Constrained.width`=6 must be a multiple of 4"),
        ({"name": ""}, r"`Constrained.name`='' must have at least 1 items"),
        ({"name": "abcd"}, r"`Constrained.name`='abcd' must have at most 3 items"),
        ({"even": 3}, r"`Constrained.even`=3 must satisfy `_even`"),
    ],
)
def test_annotated_types_constraints(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(jm.ConfigError, match=message):
        Constrained(**kwargs)
