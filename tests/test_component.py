"""`Component`, its constructors and accessors, `sequential`, `merge_params`, `scope`."""

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from jaxtyping import Array, Bool, Float

import jaxmake as jm
from tests.affine import Affine


def _noise(weights: jm.Weights, x: Float[Array, "T d"], rng: Array | None) -> Float[Array, "T d"]:
    assert rng is not None
    return x + jr.normal(rng, x.shape)


NOISE = jm.Component.from_pipeline({}, _noise)
MASKED_PORTS = jm.make_ports(
    {"Input": Float[Array, "T d"], "mask": Bool[Array, "T"]}, {"Output": Float[Array, "T d"], "count": Float[Array, ""]}
)


def _masked(weights: jm.Weights, inputs: Mapping[str, Array]) -> dict[str, Array]:
    mask = inputs["mask"]
    return {"Output": jnp.where(mask[:, None], inputs["Input"], 0.0), "count": mask.sum().astype(jnp.float32)}


def test_one_constructor_takes_both_forms_and_the_accessors_agree(getkey: Any) -> None:
    x = jr.normal(getkey(), (4, 3))
    affine = Affine.make(Affine(3, 3))
    weights = jm.make_weights(getkey(), affine.weight_params)
    assert affine.fixed == {jm.pipeline_ports}, "a pipeline without an rng is fixed"
    expected = affine.fixed_pipeline(weights, x)
    np.testing.assert_array_equal(affine(weights, x), expected)
    np.testing.assert_array_equal(affine.pipeline(weights, x, None), expected)
    np.testing.assert_array_equal(affine.run(weights, {"Input": x})["Output"], expected)
    np.testing.assert_array_equal(
        affine.get_fixed_process(jm.pipeline_ports)(weights, {"Input": x})["Output"], expected
    )

    key = getkey()
    assert NOISE.fixed == frozenset(), "a pipeline with an rng uses randomness"
    assert not np.array_equal(NOISE({}, x, key), x)
    np.testing.assert_array_equal(NOISE({}, x, rng=key), NOISE.pipeline({}, x, key))

    masked = jm.Component.from_process({}, _masked, MASKED_PORTS)
    assert masked.fixed == {MASKED_PORTS}, "a process without an rng is fixed"
    out = masked.run({}, {"Input": x, "mask": x[:, 0] > 0})
    assert float(out["count"]) == int((x[:, 0] > 0).sum())
    np.testing.assert_array_equal(masked({}, x, mask=x[:, 0] > 0), out["Output"])
    assert jm.Component.from_fixed_process == jm.Component.from_process
    assert jm.Component.from_fixed_pipeline == jm.Component.from_pipeline

    def process(weights: jm.Weights, inputs: Mapping[str, Array], rng: Array | None) -> dict[str, Array]:
        return {"Output": _noise(weights, inputs["Input"], rng)}

    random = jm.Component.from_process(
        {}, process, jm.make_ports({"Input": Float[Array, "T d"]}, {"Output": Float[Array, "T d"]})
    )
    np.testing.assert_array_equal(random({}, x, key), NOISE({}, x, key))


def test_calls_choose_the_process_by_input_names_and_outputs(getkey: Any) -> None:
    x = jnp.ones((3, 2))
    two = jm.Component(
        {},
        {
            jm.make_ports("Input", "Output"): lambda w, i: {"Output": i["Input"] + 1},
            jm.make_ports("Input", ("Output", "extra")): lambda w, i: {"Output": i["Input"], "extra": i["Input"] * 2},
        },
    )
    np.testing.assert_array_equal(two({}, x), x + 1)  # the process whose only output is `Output`
    assert set(two.run({}, {"Input": x}, outputs=("Output", "extra"))) == {"Output", "extra"}
    assert set(two.run({}, {"Input": x})) == {"Output", "extra"}, "the process whose outputs include the other's"
    three = jm.Component({}, {**two.processes, jm.make_ports("Input", "other"): lambda w, i: {"other": i["Input"]}})
    with pytest.raises(jm.ArgumentError, match=r"has more than one process taking \['Input'\]; choose with `outputs=`"):
        three.run({}, {"Input": x})
    with pytest.raises(jm.ArgumentError, match=r"has no process taking \['Input', 'mask'\] that gives `Output`"):
        two({}, x, mask=x)


def test_pipeline_ports_come_from_the_function_annotations() -> None:
    (ports,) = NOISE.processes
    assert ports == jm.pipeline_ports
    assert ports.annotated and "T d" in str(ports.input_types["Input"])


def test_asking_for_a_missing_or_random_process_lists_what_there_is() -> None:
    with jm.scope("model"), jm.scope("noise"):
        noise = jm.Component.from_pipeline({}, _noise)
    with pytest.raises(jm.ArgumentError) as info:
        _ = noise.fixed_pipeline
    assert str(info.value) == (
        "component `model.noise` has a process (Input) -> (Output) that uses randomness, so it has no fixed form; "
        "call it with an rng: `component.run(weights, inputs, rng)`. It has: (Input) -> (Output) [uses rng]"
    )
    masked = jm.Component.from_process({}, _masked, MASKED_PORTS)
    with pytest.raises(
        jm.ArgumentError,
        match=r"^component `_masked` has no process \(Input\) -> \(Output\)\. "
        r"It has: \(Input, mask\) -> \(Output, count\) \[fixed\]$",
    ):
        _ = masked.pipeline


def test_malformed_components_are_rejected() -> None:
    with pytest.raises(jm.ArgumentError, match="processes map `ProcessPorts` to functions"):
        jm.Component({}, {"Input": _masked})  # type: ignore[dict-item]
    with pytest.raises(jm.ArgumentError, match="`fixed` names ports without a process"):
        jm.Component({}, {}, fixed=frozenset({jm.pipeline_ports}))
    with pytest.raises(jm.ArgumentError, match=r"`dims` maps names to sizes >= 0, got 'd'=-1"):
        jm.Component({}, {}, dims={"d": -1})
    with pytest.raises(
        jm.ArgumentError, match=r"a pipeline's ports are \(Input\) -> \(Output\), got \(x\) -> \(Output\)"
    ):
        jm.Component.from_pipeline({}, _noise, jm.make_ports("x", "Output"))


def test_dims_from_a_config_bind_the_annotated_fields_and_say_where_they_came_from() -> None:
    config = Affine(3, 4)

    def double(weights: jm.Weights, x: Float[Array, "T n_in"]) -> Float[Array, "T n_tokens"]:
        return jnp.concatenate([x, x[:, :1]], axis=1)

    component = jm.Component.from_pipeline({}, double, dims=[config, {"n_tokens": 4}])
    assert dict(component.dims) == {"n_in": 3, "n_tokens": 4}, "only the annotated fields, and the extra dims"
    assert component.path == "Affine", "outside any scope, a component is named after its config"
    with pytest.raises(jm.ShapeError, match=r"bound:    n_in=3 \(Affine.n_in\), n_tokens=4 \(component dims\)"):
        component.checked()({}, {"Input": jnp.zeros((2, 5))}, None)


def test_sequential_runs_in_order_each_on_its_weights_with_its_own_rng(getkey: Any) -> None:
    parts = {"first": Affine.make(Affine(3, 4)), "noise": NOISE, "second": Affine.make(Affine(4, 2))}
    spec = jm.merge_params(parts)
    assert spec == {name: part.weight_params for name, part in parts.items()}
    weights = jm.make_weights(getkey(), spec)
    x, key = jr.normal(getkey(), (5, 3)), getkey()
    run = jm.sequential(parts, ["first", "noise", "second"])
    h = parts["first"].fixed_pipeline(weights["first"], x)
    h = NOISE.pipeline({}, h, jr.fold_in(key, 1))
    expected = parts["second"].fixed_pipeline(weights["second"], h)
    np.testing.assert_allclose(jax.jit(run)(weights, x, key), expected, rtol=1e-5, atol=1e-6)
    model = jm.Component.from_pipeline(spec, run)
    np.testing.assert_allclose(model.pipeline(weights, x, key), expected, rtol=1e-5, atol=1e-6)


def test_sequential_errors() -> None:
    with pytest.raises(jm.JaxMakeError, match=r"`sequential` has no component `third`; it has \['noise'\]"):
        jm.sequential({"noise": NOISE}, ["noise", "third"])
    seen: list[object] = []

    def spy_pipeline(weights: jm.Weights, x: Array, rng: Array | None) -> Array:
        seen.append(rng)
        return x

    spy = jm.Component.from_pipeline({}, spy_pipeline, jm.pipeline_ports)
    jm.sequential({"spy": spy}, ["spy", "spy"])({"spy": {}}, jnp.zeros((2, 2)), None)
    assert seen == [None, None]


def test_fixed_flag_of_the_sugar_constructors() -> None:
    def identity(weights: jm.Weights, x: Float[Array, "T d"], rng: Array | None) -> Float[Array, "T d"]:
        assert rng is None  # a fixed pipeline is called without an rng, at make time too
        return x

    component = jm.Component.from_pipeline({}, identity, fixed=True)
    assert component.fixed == {jm.pipeline_ports}
    assert component.fixed_pipeline({}, jnp.ones(2)).tolist() == [1, 1]
    assert component({}, jnp.ones(2), jr.key(0)).tolist() == [1, 1]
    assert jm.Component.from_pipeline({}, _noise).fixed == frozenset()


def test_a_parameter_with_a_default_other_than_none_is_not_the_rng() -> None:
    def bound(weights: jm.Weights, x: Float[Array, "T d"], scale: float = 2.0) -> Float[Array, "T d"]:
        return x * scale

    def optional_rng(weights: jm.Weights, x: Float[Array, "T d"], rng: Array | None = None) -> Float[Array, "T d"]:
        return x

    assert jm.Component.from_pipeline({}, bound).fixed == {jm.pipeline_ports}
    assert jm.Component.from_pipeline({}, optional_rng).fixed == frozenset()


def test_shared_weights_by_repeating_a_name(getkey: Any) -> None:
    layer = {"layer": Affine.make(Affine(3, 3))}
    weights = jm.make_weights(getkey(), jm.merge_params(layer))
    x = jr.normal(getkey(), (2, 3))
    twice = jm.sequential(layer, ["layer", "layer"])(weights, x, None)
    once = layer["layer"].fixed_pipeline(weights["layer"], x)
    np.testing.assert_allclose(twice, layer["layer"].fixed_pipeline(weights["layer"], once), rtol=1e-6)


def test_components_record_their_scope_path() -> None:
    assert jm.current_path() == ""
    with jm.scope("vit"), jm.scope("encoder"):
        inner = Affine.make(Affine(2, 2))
        assert jm.current_path() == "vit.encoder"
    assert inner.path == "vit.encoder"
    assert Affine.make(Affine(2, 2)).path == "Affine", "outside any scope, `make` opens one named after the class"
    assert jm.Component.from_pipeline({}, _noise).path == "_noise", "a bare component is named after its function"
