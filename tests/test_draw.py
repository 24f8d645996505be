"""`make_weights` draws a whole spec tree with one cached program, bit for bit as array by array."""

from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import jaxmake as jm
from jaxmake import _draw
from jaxmake.components import Gpt
from jaxmake.sharding import RULES, make_mesh

KINDS: jm.WeightParamsTree = {
    "mlp": {
        "layer_0": {"w": jm.WeightParams((5, 3)), "b": jm.WeightParams((3,), init=0)},
        "layer_1": {"w": jm.WeightParams((3, 7), init="xavier", scale=0.5), "b": jm.WeightParams((7,), init="zeros")},
    },
    "embed": jm.WeightParams((11, 4), init="embedding"),
    "pos": jm.WeightParams((6, 4), init="normal", scale=0.02, dtype=jnp.bfloat16),
    "head": {"w": jm.WeightParams((4, 2, 3), init="truncated_normal", scale=2.0, dtype=jnp.float16)},
    "mask": jm.WeightParams((9,), init="dropout", scale=0.7),
    "norm": {"a": jm.WeightParams((4,), init="ones", scale=2.5), "b": jm.WeightParams((4,), init=-1.5)},
    "count": jm.WeightParams((2,), init=3, dtype=jnp.int32),
    "flag": jm.WeightParams((), init="ones", dtype=jnp.bool_),
    "dropout": {},
    "empty": {"inner": {}},
}
"""Every init kind, dtypes beyond float32, scalars, and empty sub-trees."""

SPECS: dict[str, jm.WeightParamsTree] = {
    "kinds": KINDS,
    "stacked": jm.stack_params({"w": jm.WeightParams((4, 6), axes=("embed", "mlp")), "b": jm.WeightParams((6,))}, 3),
    "empty": {"dropout": {}, "a": {"b": {}}},
    "nothing": {},
}


def array_by_array(rng: jax.Array, tree: jm.WeightParamsTree) -> jm.Weights:
    """The reference: each array by its own jitted `_init_array`, its key folded eagerly along its path."""
    out: jm.Weights = {}
    for name, spec in tree.items():
        key = jm.fold_in_name(rng, name)
        if isinstance(spec, jm.WeightParams):
            out[name] = jax.jit(_draw._init_array, static_argnums=1)(key, spec)
        else:
            out[name] = array_by_array(key, spec)
    return out


def assert_bit_identical(weights: jm.Weights, expected: jm.Weights) -> None:
    """The same names in the same order, empty dicts included, and the same dtypes, shapes and bytes."""
    assert list(weights) == list(expected)
    for name, value in expected.items():
        if isinstance(value, dict):
            assert isinstance(weights[name], dict), name
            assert_bit_identical(weights[name], value)
        else:
            got, want = np.asarray(weights[name]), np.asarray(value)
            assert (got.dtype, got.shape) == (want.dtype, want.shape), name
            assert got.tobytes() == want.tobytes(), name


@pytest.fixture(scope="module")
def gpt_spec() -> jm.WeightParamsTree:
    """The spec of the library's `Gpt`, two layers."""
    return Gpt.make(
        Gpt(vocab_size=16, n_ctx=8, n_tfe_layers=2, dim_model=8, n_heads=2, mlp_n_hidden=(16,))
    ).weight_params


@pytest.mark.parametrize("spec_name", SPECS)
def test_weights_equal_those_drawn_array_by_array(spec_name: str) -> None:
    spec = SPECS[spec_name]
    assert_bit_identical(jm.make_weights(jr.key(3), spec), array_by_array(jr.key(3), spec))


def test_gpt_weights_equal_those_drawn_array_by_array(gpt_spec: jm.WeightParamsTree) -> None:
    assert_bit_identical(jm.make_weights(jr.key(3), gpt_spec), array_by_array(jr.key(3), gpt_spec))


def test_a_raw_key_draws_as_the_same_key_wrapped() -> None:
    raw = jr.PRNGKey(3)
    weights = jm.make_weights(raw, KINDS)
    assert_bit_identical(weights, array_by_array(raw, KINDS))
    assert_bit_identical(weights, jm.make_weights(jr.wrap_key_data(raw), KINDS))


def test_sharded_weights_equal_those_drawn_array_by_array(gpt_spec: jm.WeightParamsTree) -> None:
    mesh, rules, spec = make_mesh({"data": 2, "model": 2}), {"embed": "data", "mlp": "model"}, gpt_spec
    sharded = jm.make_weights(jr.key(5), spec, mesh=mesh, rules=rules)
    assert_bit_identical(sharded, array_by_array(jr.key(5), spec))
    shardings = jax.tree.leaves(jm.weight_shardings(spec, mesh, rules))
    assert [array.sharding for array in jax.tree.leaves(sharded)] == shardings


def fresh_spec(tag: int) -> dict[str, Any]:
    """A spec tree built anew at each call, equal each time, that no other test draws."""
    return {"a": {"w": jm.WeightParams((tag, 3))}, "b": jm.WeightParams((3,), init="normal"), "c": {}}


@pytest.fixture
def traced(monkeypatch: pytest.MonkeyPatch) -> list[jm.WeightParams]:
    """The specs `_init_array` is traced with from now on (the drawing program calls it once per trace)."""
    seen: list[jm.WeightParams] = []
    original = _draw._init_array

    def spy(key: jax.Array, spec: jm.WeightParams) -> jax.Array:
        seen.append(spec)
        return original(key, spec)

    monkeypatch.setattr(_draw, "_init_array", spy)
    return seen


def test_an_equal_spec_tree_reuses_the_compiled_program(traced: list[jm.WeightParams]) -> None:
    first = jm.make_weights(jr.key(0), fresh_spec(17))
    assert len(traced) == 2
    misses = _draw._program.cache_info().misses
    again = jm.make_weights(jr.key(1), fresh_spec(17))
    assert len(traced) == 2 and _draw._program.cache_info().misses == misses
    assert not np.array_equal(first["a"]["w"], again["a"]["w"])
    jm.make_weights(jr.key(0), fresh_spec(18))
    assert len(traced) == 4


def test_a_sharded_program_is_reused_for_the_same_layout(traced: list[jm.WeightParams]) -> None:
    mesh, rules = make_mesh({"data": 2, "model": 2}), {"embed": "data"}
    spec = {"w": jm.WeightParams((4, 19), axes=("embed", None))}
    for _ in range(2):
        jm.make_weights(jr.key(0), spec, mesh=mesh, rules=dict(rules))
    assert len(traced) == 1
    jm.make_weights(jr.key(0), spec)
    assert len(traced) == 2


@pytest.mark.parametrize(
    ("rng", "given"),
    [
        (0, "a value of type int"),
        (jnp.zeros(2), r"f32\[2\]"),
        (jr.split(jr.key(0)), r"key<fry>\[2\]"),
        (jnp.zeros((2, 2), jnp.uint32), r"u32\[2,2\]"),
    ],
)
def test_a_bad_key_is_an_argument_error(rng: Any, given: str) -> None:
    expected = (
        r"^`make_weights` takes one PRNG key, such as `jax.random.key\(0\)` \(key<fry>\[\]\) "
        rf"or `jax.random.PRNGKey\(0\)` \(u32\[2\]\), got {given}$"
    )
    with pytest.raises(jm.ArgumentError, match=expected):
        jm.make_weights(rng, {})


def test_mesh_and_rules_go_together() -> None:
    mesh = make_mesh({"data": 2, "model": 2})
    with pytest.raises(
        jm.ArgumentError, match=r"^`make_weights` takes `mesh` and `rules` together; got `mesh` but no `rules`$"
    ):
        jm.make_weights(jr.key(0), {}, mesh=mesh)
    with pytest.raises(
        jm.ArgumentError, match=r"^`make_weights` takes `mesh` and `rules` together; got `rules` but no `mesh`$"
    ):
        jm.make_weights(jr.key(0), {}, rules={"embed": "data"})


def test_weights_that_cannot_fit_are_refused_before_anything_is_allocated(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = {"w": jm.WeightParams((2**20, 2**16))}  # 256 GiB of float32
    with pytest.raises(jm.WeightsError, match=r"^the weights \(68,719,476,736 parameters\) need 256.0 GiB, more than"):
        jm.make_weights(jax.random.key(0), spec)
    monkeypatch.setattr(_draw, "_physical_memory", lambda: 100)  # bytes: CPU devices share the machine's memory
    _draw._program.cache_clear()  # the check runs when a program is built, once per spec tree and layout
    small = {"w": jm.WeightParams((4, 4))}  # 64 bytes
    assert jm.make_weights(jax.random.key(0), small)["w"].shape == (4, 4)
    mesh = make_mesh({"data": 4})
    with pytest.raises(jm.WeightsError, match=r"need 256 B, more than this machine's 100 B of memory \(its CPU"):
        jm.make_weights(jax.random.key(0), small, mesh=mesh, rules=RULES["dp"])  # a copy on each of 4 devices: 256
