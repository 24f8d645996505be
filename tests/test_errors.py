"""Error messages never fail to format: huge values are abbreviated wherever a message shows them."""

import jax
import pytest

import jaxmake as jm
from jaxmake.components import Dropout, Linear, PositionalEncoding

HUGE = 10**4400  # `str` refuses integers of more than 4,300 digits


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (-HUGE, "-<an integer of 4,401 digits>"),
        (10**30, "1000000000000000000000000000000"),
        (10**31, "<an integer of 32 digits>"),
        (10**31 - 1, "<an integer of 31 digits>"),
        ("x" * 10**6, "'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'... (1,000,000 characters)"),
        ((HUGE,), "(<an integer of 4,401 digits>,)"),
        (list(range(10)), "[0, 1, 2, 3, 4, 5, 6, 7, ... 10 items]"),
        ([[[[[1]]]]], "[[[<a list of 1 item>]]]"),
        (True, "True"),
    ],
    ids=lambda value: jm.value_repr(value)[:20],  # pytest itself would fail on `str(HUGE)`
)
def test_value_repr_abbreviates_huge_values(value: object, shown: str) -> None:
    assert jm.value_repr(value) == shown


def test_value_repr_survives_a_failing_repr() -> None:
    class Hostile:
        def __repr__(self) -> str:
            raise RuntimeError("no")

    assert jm.value_repr(Hostile()) == "<a Hostile>"


def test_deep_nesting_is_cut_off() -> None:
    nested: list[object] = []
    for _ in range(5000):
        nested = [nested]
    assert jm.value_repr(nested) == "[[[<a list of 1 item>]]]"


def test_config_errors_and_reprs_abbreviate_huge_values() -> None:
    with pytest.raises(
        jm.ConfigError, match=r"^`Dropout.dropout_keep_rate`=-<an integer of 4,401 digits> must be > 0$"
    ):
        Dropout(-HUGE)
    with pytest.raises(jm.ConfigError, match=r"^`Linear.n_in`=<an integer of 4,401 digits> must be <= 1099511627776$"):
        Linear(HUGE, 1)
    with pytest.raises(jm.ConfigError, match=r"must be of type int, got str"):
        Linear("9" * 10**5, 1)  # type: ignore[arg-type]
    assert repr(Linear(2**40, 1)).startswith("Linear(n_in=1099511627776, n_out=1, ")


def test_shape_errors_abbreviate_huge_dims() -> None:
    def identity(weights: jm.Weights, x: jax.Array) -> jax.Array:
        return x

    from jaxtyping import Array, Float

    def annotated(weights: jm.Weights, x: Float[Array, " n"]) -> Float[Array, " n"]:
        return identity(weights, x)

    with pytest.raises(jm.ShapeError) as info:
        jm.Component.from_pipeline({}, annotated, dims={"n": HUGE})
    assert "Input=f32[<an integer of 4,401 digits>]" in str(info.value)
    assert "bound:    n=<an integer of 4,401 digits>" in str(info.value)


def test_make_time_does_not_grow_with_limits() -> None:
    component = PositionalEncoding.make(PositionalEncoding(2**31, 4, dynamic_length=True))
    assert component.limits == {"T": 2**31}
