"""`WeightParams`, `make_weights`, `check_weights`, `get_at`, `set_at`."""

import math
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import jaxmake as jm

LARGE = (256, 512)


def _stats(spec: jm.WeightParams) -> tuple[float, float]:
    array = np.asarray(jm.make_weights(jr.key(1), {"x": spec})["x"], dtype=np.float64)
    return float(array.mean()), float(array.std())


@pytest.mark.parametrize(
    ("init", "scale", "expected_std"),
    [
        ("kaiming", 1.0, math.sqrt(2 / 256)),
        ("kaiming", 3.0, 3 * math.sqrt(2 / 256)),
        ("xavier", 1.0, math.sqrt(2 / (256 + 512))),
        ("normal", 0.5, 0.5),
        ("truncated_normal", 2.0, 2.0),
        ("embedding", 1.0, 1 / math.sqrt(512)),
    ],
)
def test_random_inits_have_documented_std(init: jm.ArrayGen, scale: float, expected_std: float) -> None:
    mean, std = _stats(jm.WeightParams(LARGE, init=init, scale=scale))
    assert abs(mean) < 0.02 * expected_std * 10
    assert std == pytest.approx(expected_std, rel=0.02)


def test_truncated_normal_stays_within_two_stds() -> None:
    array = jm.make_weights(jr.key(0), {"x": jm.WeightParams(LARGE, init="truncated_normal", scale=0.1)})["x"]
    assert float(jnp.abs(array).max()) <= 2 * 0.1 / 0.8796 + 1e-6


@pytest.mark.parametrize("keep", [0.0, 0.3, 0.8, 1.0])
def test_dropout_init_is_a_mask_with_keep_probability_scale(keep: float) -> None:
    array = np.asarray(jm.make_weights(jr.key(0), {"x": jm.WeightParams(LARGE, init="dropout", scale=keep)})["x"])
    assert set(np.unique(array)) <= {0.0, 1.0}
    assert array.mean() == pytest.approx(keep, abs=0.01)


@pytest.mark.parametrize(
    ("init", "scale", "value"),
    [("zeros", 3.0, 0.0), ("ones", 1.0, 1.0), ("ones", 2.5, 2.5), (0.5, 4.0, 2.0), (7, 1.0, 7)],
)
def test_constant_inits(init: jm.ArrayGen | float, scale: float, value: float) -> None:
    array = jm.make_weights(jr.key(0), {"x": jm.WeightParams((3, 2), init=init, scale=scale)})["x"]
    np.testing.assert_array_equal(array, np.full((3, 2), value, np.float32))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_dtype_is_honoured(dtype: Any) -> None:
    array = jm.make_weights(jr.key(0), {"x": jm.WeightParams((4, 4), dtype=dtype)})["x"]
    assert array.dtype == dtype


def test_constant_inits_take_integer_and_bool_dtypes() -> None:
    weights = jm.make_weights(
        jr.key(0),
        {"i": jm.WeightParams((2,), init=3, dtype=jnp.int32), "m": jm.WeightParams((2,), init="ones", dtype=bool)},
    )
    assert weights["i"].dtype == jnp.int32 and weights["i"].tolist() == [3, 3]
    assert weights["m"].dtype == jnp.bool_ and weights["m"].tolist() == [True, True]


def test_a_weight_depends_only_on_its_path() -> None:
    key = jr.key(42)
    base: dict[str, Any] = {
        "a": {"w": jm.WeightParams((3, 4)), "b": jm.WeightParams((4,), init="normal")},
        "c": jm.WeightParams((5,), init="normal"),
    }
    reordered = {"c": base["c"], "a": {"b": base["a"]["b"], "w": base["a"]["w"]}}
    grown = {**base, "a": {**base["a"], "extra": jm.WeightParams((9, 9))}, "d": {"e": jm.WeightParams((2,))}}
    shrunk = {"a": {"w": base["a"]["w"]}}
    reference = jm.make_weights(key, base)
    for variant in (reordered, grown, shrunk):
        weights = jm.make_weights(key, variant)
        np.testing.assert_array_equal(weights["a"]["w"], reference["a"]["w"])
    np.testing.assert_array_equal(jm.make_weights(key, reordered)["c"], reference["c"])
    sub = jm.make_weights(jm.fold_in_name(key, "a"), base["a"])
    np.testing.assert_array_equal(sub["b"], reference["a"]["b"])


def test_different_paths_and_keys_give_different_weights() -> None:
    spec = {"x": jm.WeightParams((8,), init="normal"), "y": jm.WeightParams((8,), init="normal")}
    weights = jm.make_weights(jr.key(0), spec)
    assert not np.array_equal(weights["x"], weights["y"])
    assert not np.array_equal(weights["x"], jm.make_weights(jr.key(1), spec)["x"])


def test_empty_subtrees_stay() -> None:
    weights = jm.make_weights(jr.key(0), {"dropout": {}, "mlp": {"layer_0": {"w": jm.WeightParams((2, 2))}}})
    assert weights["dropout"] == {}
    assert jax.tree.map(jnp.shape, weights) == {"dropout": {}, "mlp": {"layer_0": {"w": (2, 2)}}}


def test_abstract_weights_match_make_weights() -> None:
    spec = {"a": {"w": jm.WeightParams((3, 4), dtype=jnp.bfloat16)}, "e": {}}
    abstract = jm.abstract_weights(spec)
    assert abstract == {"a": {"w": jax.ShapeDtypeStruct((3, 4), jnp.bfloat16)}, "e": {}}
    jm.check_weights(spec, abstract)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"shape": (2, -1)}, r"`WeightParams.shape`=\(2, -1\) must be a tuple of non-negative ints"),
        ({"shape": (2,), "init": "uniform"}, r"`WeightParams.init`='uniform' must be a number or one of \["),
        ({"shape": (2,), "init": None}, r"`WeightParams.init`=None must be a number"),
        ({"shape": (2,), "scale": float("nan")}, r"`WeightParams.scale`=nan must be finite"),
        ({"shape": (2,), "dtype": "not-a-dtype"}, r"`WeightParams.dtype`='not-a-dtype' must be a dtype"),
        (
            {"shape": (2,), "dtype": jnp.int32},
            r"`WeightParams.dtype`=dtype\('int32'\) must be floating for init='kaiming'",
        ),
        ({"shape": (2,), "init": "dropout", "scale": 1.5}, r"`WeightParams.scale`=1.5 is the keep probability"),
        ({"shape": (2, 3), "axes": ("embed",)}, r"`WeightParams.axes`=\('embed',\) must name each of the 2 dims"),
        ({"shape": (2,), "axes": (3,)}, r"`WeightParams.axes`=\(3,\) must be a tuple of axis names"),
    ],
)
def test_bad_weight_params_raise_config_error(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(jm.ConfigError, match=message):
        jm.WeightParams(**kwargs)


def test_lists_become_tuples_and_axes_are_stored() -> None:
    spec = jm.WeightParams([3, 4], axes=["embed", None])  # type: ignore[arg-type]
    assert spec.shape == (3, 4) and spec.axes == ("embed", None)
    assert hash(spec) == hash(jm.WeightParams((3, 4), axes=("embed", None)))


def test_make_weights_rejects_bad_specs() -> None:
    """Bad keys and layouts: see `tests/test_draw.py`."""
    with pytest.raises(jm.WeightsError, match=r"at `a.b` it holds a value of type list"):
        jm.make_weights(jr.key(0), {"a": {"b": [1, 2]}})  # type: ignore[dict-item]


SPEC: jm.WeightParamsTree = {
    "mlp": {"layer_0": {"w": jm.WeightParams((4, 3)), "b": jm.WeightParams((3,), init=0)}},
    "norm": {"a": jm.WeightParams((3,), init=1)},
    "dropout": {},
}


def test_check_weights_lists_every_problem_at_once() -> None:
    weights = jm.make_weights(jr.key(0), SPEC)
    bad = {
        "mlp": {
            "layer_0": {"w": weights["mlp"]["layer_0"]["w"].T, "b": weights["mlp"]["layer_0"]["b"].astype(jnp.int32)}
        },
        "norm": {"c": weights["norm"]["a"]},
        "dropout": jnp.zeros(2),
        "head": {},
    }
    with pytest.raises(jm.WeightsError) as info:
        jm.check_weights(SPEC, bad)
    assert str(info.value).splitlines() == [
        "the weights do not match their spec (6 problems):",
        "  wrong shape  mlp.layer_0.w: expected f32[4,3], got f32[3,4]",
        "  wrong dtype  mlp.layer_0.b: expected f32[3], got i32[3]",
        "  missing      norm.a: expected f32[3]",
        "  extra        norm.c: f32[3]",
        "  not a dict   dropout: expected an empty dict, got f32[2]",
        "  extra        head: an empty dict",
    ]


def test_check_weights_lists_keys_that_are_not_strings_as_extra() -> None:
    weights: dict[Any, Any] = {**jm.make_weights(jr.key(0), SPEC), 3: jnp.zeros(1), (1, 2): {}, 10**5000: jnp.zeros(())}
    with pytest.raises(jm.WeightsError) as info:
        jm.check_weights(SPEC, weights)
    assert str(info.value).splitlines()[1:] == [
        "  extra        3: f32[1]",
        "  extra        (1, 2): an empty dict",
        "  extra        <an integer of 5,001 digits>: f32[]",
    ]
    with pytest.raises(jm.WeightsError, match=r"extra        dropout.7: f32\[1\]"):
        jm.check_weights(SPEC, {**weights, "dropout": {7: jnp.zeros(1)}})
    with pytest.raises(jm.WeightsError, match=r"not a dict   norm: expected a dict with keys \['a'\], got f32\[\]"):
        jm.check_weights(SPEC, {**weights, "norm": jnp.zeros(())})


def test_get_at_and_set_at() -> None:
    weights = jm.make_weights(jr.key(0), SPEC)
    assert jm.get_at(weights, "mlp.layer_0.w") is weights["mlp"]["layer_0"]["w"]
    assert jm.get_at(weights, ("norm",)) is weights["norm"]
    assert jm.get_at(SPEC, "norm.a") == jm.WeightParams((3,), init=1)
    updated = jm.set_at(weights, "norm.a", jnp.zeros(3))
    assert updated["norm"]["a"].tolist() == [0, 0, 0] and weights["norm"]["a"].tolist() == [1, 1, 1]
    assert updated["mlp"] is weights["mlp"]
    jm.check_weights(SPEC, updated)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("mlp.layer_1.w", r"no entry `mlp.layer_1.w`: `mlp` holds `layer_0`"),
        ("norm.a.x", r"no entry `norm.a.x`: `norm.a` is f32\[3\]"),
        ("dropout.p", r"no entry `dropout.p`: `dropout` is an empty dict"),
        ("head", r"no entry `head`: the root holds `dropout`, `mlp`, `norm`"),
        ("", r"a path is a dotted string or a sequence of names"),
    ],
)
def test_get_at_and_set_at_name_the_missing_path(path: str, message: str) -> None:
    weights = jm.make_weights(jr.key(0), SPEC)
    with pytest.raises(jm.WeightsError, match=message):
        jm.get_at(weights, path)
    with pytest.raises(jm.WeightsError, match=message):
        jm.set_at(weights, path, 0)


# --- properties over random spec trees -------------------------------------------------

NAMES = st.text("abcdefgh_0123", min_size=1, max_size=6)
DTYPES = st.sampled_from([jnp.float32, jnp.bfloat16, jnp.float16])
LEAVES = st.builds(
    jm.WeightParams,
    shape=st.lists(st.integers(0, 4), max_size=3).map(tuple),
    init=st.sampled_from(
        ["kaiming", "xavier", "normal", "truncated_normal", "embedding", "dropout", "zeros", "ones", 0.5, -2]
    ),
    scale=st.floats(0.0, 1.0, width=32),
    dtype=DTYPES,
)
TREES: st.SearchStrategy[jm.WeightParamsTree] = st.recursive(
    st.dictionaries(NAMES, LEAVES, max_size=3),
    lambda children: st.dictionaries(NAMES, st.one_of(LEAVES, children), max_size=3),
    max_leaves=8,
)


def _leaves(tree: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    out: list[tuple[tuple[str, ...], Any]] = []
    for name, value in tree.items():
        if isinstance(value, dict):
            out += [((*path, name), value), *_leaves(value, (*path, name))]
        else:
            out.append(((*path, name), value))
    return out


@given(TREES)
def test_make_weights_gives_exactly_the_spec(spec: jm.WeightParamsTree) -> None:
    weights = jm.make_weights(jr.key(0), spec)
    spec_paths = {path for path, _ in _leaves(spec)}
    assert {path for path, _ in _leaves(weights)} == spec_paths
    for path, leaf in _leaves(spec):
        if isinstance(leaf, jm.WeightParams):
            array = jm.get_at(weights, path)
            assert array.shape == leaf.shape and array.dtype == leaf.dtype
    jm.check_weights(spec, weights)


@given(TREES, st.data())
def test_check_weights_rejects_every_single_point_corruption(spec: jm.WeightParamsTree, data: st.DataObject) -> None:
    weights = jm.make_weights(jr.key(0), spec)
    paths = [path for path, _ in _leaves(weights)]
    corruptions = ["extra"] + (["missing", "shape", "dtype", "replace"] if paths else [])
    kind = data.draw(st.sampled_from(corruptions))
    if kind == "extra":
        parents = [()] + [p for p, v in _leaves(weights) if isinstance(v, dict)]
        parent = data.draw(st.sampled_from(parents))
        target = jm.get_at(weights, parent) if parent else weights
        name = "zz_extra"
        corrupted = {**target, name: jnp.zeros(1)}
        bad = jm.set_at(weights, parent, corrupted) if parent else corrupted
    else:
        path = data.draw(st.sampled_from(paths))
        value = jm.get_at(weights, path)
        parent, name = path[:-1], path[-1]
        if kind == "missing":
            holder = jm.get_at(weights, parent) if parent else weights
            smaller = {k: v for k, v in holder.items() if k != name}
            bad = jm.set_at(weights, parent, smaller) if parent else smaller
        elif kind == "shape":
            shape = (*value.shape, 1) if hasattr(value, "shape") else (1,)
            bad = jm.set_at(weights, path, jnp.zeros(shape))
        elif kind == "dtype":
            bad = jm.set_at(weights, path, jnp.zeros(getattr(value, "shape", (1,)), jnp.int8))
        else:
            bad = jm.set_at(weights, path, {} if hasattr(value, "shape") else jnp.zeros(()))
    with pytest.raises(jm.WeightsError):
        jm.check_weights(spec, bad)


def test_stacked_params_initialise_each_copy_at_the_scale_of_one() -> None:
    single = jm.WeightParams((256, 512), axes=("embed", "mlp"))
    stacked = jm.stack_params({"w": single, "b": jm.WeightParams((512,), init=0)}, 4)
    assert (
        stacked["w"].shape == (4, 256, 512)
        and stacked["w"].axes == ("layers", "embed", "mlp")
        and stacked["w"].stack == 1
    )
    assert stacked["b"].axes is None
    array = np.asarray(jm.make_weights(jr.key(0), stacked)["w"])
    assert array.std() == pytest.approx(math.sqrt(2 / 256), rel=0.02)
    assert not np.array_equal(array[0], array[1])
    with pytest.raises(jm.ConfigError, match=r"`WeightParams.stack`=3 must be an int in \[0, 2\]"):
        jm.WeightParams((2, 2), stack=3)
