"""Shape contracts: at make time (abstract) and on checked calls; the `ShapeError` anatomy."""

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jaxtyping import Array, Bool, Float, Int

import jaxmake as jm
from jaxmake import _checks
from tests.affine import Affine


def _lines(error: pytest.ExceptionInfo[BaseException]) -> list[str]:
    return str(error.value).splitlines()


def test_checked_call_message_names_everything() -> None:
    with jm.scope("vit"), jm.scope("encoder"):
        affine = Affine.make(Affine(3, 12))
    weights = jm.abstract_weights(affine.weight_params)
    with pytest.raises(jm.ShapeError) as info:
        jax.eval_shape(affine.checked(), weights, {"Input": jax.ShapeDtypeStruct((2, 50, 3), jnp.float32)}, None)
    assert _lines(info) == [
        "ShapeError in vit.encoder, process (Input) -> (Output), input port 'Input'",
        '  expected: Float[Array, "T n_in"]',
        "  got:      f32[2,50,3]",
        "  reason:   this array has 3 dimensions, not the 2 expected by the type hint",
        "  bound:    n_in=3 (Affine.n_in), n_out=12 (Affine.n_out), T unbound",
        "  hint:     one leading axis too many; processes work per example, wrap the call in `jax.vmap`",
    ]
    assert isinstance(info.value, TypeError)


def test_checked_call_reports_dtype_and_bound_dims_from_earlier_ports() -> None:
    ports = jm.make_ports({"Input": Float[Array, "T d"], "ids": Int[Array, "T"]}, {"Output": Float[Array, "T d"]})
    component = jm.Component.from_fixed_process({}, lambda w, x: {"Output": x["Input"]}, ports, dims={"d": 4})
    call = component.checked(ports)
    with pytest.raises(jm.ShapeError) as info:
        call({}, {"Input": jnp.zeros((5, 4)), "ids": jnp.zeros(5)}, None)
    assert _lines(info)[1:3] == ['  expected: Int[Array, "T"]', "  got:      f32[5]"]
    assert _lines(info)[3].startswith("  reason:   this array has dtype float32, not any of (")
    assert _lines(info)[4] == "  bound:    d=4 (component dims), T=5 (input 'Input')"
    with pytest.raises(jm.ShapeError) as info:
        call({}, {"Input": jnp.zeros((5, 4)), "ids": jnp.zeros(6, jnp.int32)}, None)
    assert _lines(info)[3:] == [
        "  reason:   the size of dimension T is 6 which does not equal the existing value of 5",
        "  bound:    d=4 (component dims), T=5 (input 'Input')",
    ]


def test_dtype_message() -> None:
    ports = jm.make_ports({"Input": Int[Array, "T"]}, "Output")
    call = jm.Component.from_fixed_process({}, lambda w, x: {"Output": x["Input"]}, ports).checked(ports)
    with pytest.raises(jm.ShapeError, match=r"reason:   this array has dtype float32, not any of \(.*'int32'"):
        call({}, {"Input": jnp.zeros(5)}, None)


def test_missing_and_unexpected_ports() -> None:
    affine = Affine.make(Affine(2, 2))
    weights = jm.abstract_weights(affine.weight_params)
    with pytest.raises(jm.ShapeError) as info:
        affine.checked()(weights, {"x": jnp.zeros((1, 2))}, None)
    assert _lines(info) == [
        "ShapeError in Affine, process (Input) -> (Output)",
        "  input ports do not match: missing ['Input'], unexpected ['x']",
        "  expected: ['Input']",
        "  got:      ['x']",
    ]
    wrong = jm.Component({}, {jm.make_ports("Input", "Output"): lambda w, x, r: {"out": x["Input"]}})
    with pytest.raises(jm.ShapeError, match=r"output ports do not match: missing \['Output'\], unexpected \['out'\]"):
        wrong.checked()({}, {"Input": jnp.zeros(1)}, None)


def _bad_output(weights: jm.Weights, x: Float[Array, "T n_in"]) -> Float[Array, "T n_out"]:
    w: Array = weights["w"]
    return (x @ w)[1:]


def test_make_time_check_catches_a_wrong_output_and_names_the_path() -> None:
    with jm.scope("model"), jm.scope("affine"), pytest.raises(jm.ShapeError) as info:
        jm.Component.from_fixed_pipeline({"w": jm.WeightParams((3, 4))}, _bad_output, dims={"n_in": 3, "n_out": 4})
    assert _lines(info) == [
        "ShapeError in model.affine, process (Input) -> (Output), output port 'Output'",
        '  expected: Float[Array, "T n_out"]',
        "  got:      f32[1,4]",
        "  reason:   the size of dimension T is 1 which does not equal the existing value of 2",
        "  bound:    n_in=3 (component dims), n_out=4 (component dims), T=2 (input 'Input')",
    ]


def _transposed(weights: jm.Weights, x: Float[Array, "T n_in"]) -> Float[Array, "T n_out"]:
    w: Array = weights["w"]
    return x.T @ w


def test_make_time_check_wraps_errors_raised_by_the_process() -> None:
    with pytest.raises(jm.ShapeError) as info:
        jm.Component.from_fixed_pipeline({"w": jm.WeightParams((3, 4))}, _transposed, dims={"n_in": 3, "n_out": 4})
    assert _lines(info)[:3] == [
        "ShapeError in _transposed, process (Input) -> (Output)",
        "  the process failed on abstract inputs that match its annotations: Input=f32[2,3]",
        "  bound:    n_in=3, n_out=4",
    ]
    assert "dot_general requires contracting dimensions" in _lines(info)[3]
    assert isinstance(info.value.__cause__, TypeError)


def _only_for_t_equals_2(weights: jm.Weights, x: Float[Array, "T d"]) -> Float[Array, "T d"]:
    return jnp.zeros((2, x.shape[1]))


def test_free_dims_are_tried_at_more_than_one_size() -> None:
    with pytest.raises(jm.ShapeError, match="the size of dimension T is 2 which does not equal the existing value of"):
        jm.Component.from_fixed_pipeline({}, _only_for_t_equals_2)


def test_abstract_inputs_use_distinct_sizes_avoiding_bound_ones() -> None:
    ports = jm.make_ports(
        {"a": Float[Array, "*batch T d"], "b": Int[Array, "T 3"], "c": Bool[Array, "S d"], "s": Float[Array, ""]}, "out"
    )
    first = jm_abstract(ports, {"d": 2}, 0)
    second = jm_abstract(ports, {"d": 2}, 1)
    assert first == {"a": ((3, 2), "float32"), "b": ((3, 3), "int32"), "c": ((4, 2), "bool"), "s": ((), "float32")}
    assert second == {
        "a": ((9, 10, 7, 2), "float32"),
        "b": ((7, 3), "int32"),
        "c": ((8, 2), "bool"),
        "s": ((), "float32"),
    }


def jm_abstract(ports: jm.ProcessPorts, dims: dict[str, int], attempt: int) -> dict[str, tuple[tuple[int, ...], str]]:
    return {k: (v.shape, str(v.dtype)) for k, v in _checks.abstract_inputs(ports, dims, attempt).items()}


def test_unannotated_processes_are_not_checked_at_make_time() -> None:
    calls: list[int] = []

    def process(weights: jm.Weights, inputs: Mapping[str, Array], rng: Array | None) -> dict[str, Array]:
        calls.append(1)
        return {"Output": inputs["Input"]}

    jm.Component({}, {jm.pipeline_ports: process})
    assert calls == []


def test_make_time_checks_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(jm.CHECKS_ENV_VAR, "0")
    component = jm.Component.from_fixed_pipeline({}, _only_for_t_equals_2)
    with pytest.raises(jm.ShapeError):
        component.checked()({}, {"Input": jnp.zeros((3, 2))}, None)


def test_checked_runs_at_trace_time_only_under_jit(monkeypatch: pytest.MonkeyPatch) -> None:
    affine = Affine.make(Affine(3, 2))
    checks: list[str] = []
    original = _checks._Site.check

    def counting(self: Any, side: str, name: str, hint: Any, value: Any) -> None:
        checks.append(f"{side} {name}")
        original(self, side, name, hint, value)

    monkeypatch.setattr(_checks._Site, "check", counting)
    step = jax.jit(affine.checked())
    weights = jm.make_weights(jax.random.key(0), affine.weight_params)
    for _ in range(3):
        step(weights, {"Input": jnp.ones((4, 3))}, None)
    assert checks == ["input Input", "output Output"]
    step(weights, {"Input": jnp.ones((5, 3))}, None)  # a new shape is a new trace
    assert len(checks) == 4
    with pytest.raises(jm.ShapeError):
        step(weights, {"Input": jnp.ones((5, 4))}, None)


def test_checked_wrapper_compiles_to_the_same_program() -> None:
    affine = Affine.make(Affine(3, 2))
    weights = jm.make_weights(jax.random.key(0), affine.weight_params)
    args = (weights, {"Input": jnp.ones((4, 3))}, None)
    plain = jax.jit(affine.get_process(jm.pipeline_ports)).lower(*args).as_text()
    checked = jax.jit(affine.checked()).lower(*args).as_text()
    assert plain.replace("jit__lambda", "jit_X") == checked.replace("jit_checked", "jit_X").replace(
        "jit__lambda", "jit_X"
    )


# --- property: a toy component with random dims ----------------------------------------

SIZES = st.integers(1, 6)


@given(n_in=SIZES, n_out=SIZES, t=SIZES)
def test_correct_toy_components_always_pass(n_in: int, n_out: int, t: int) -> None:
    component = Affine.make(Affine(n_in, n_out))
    weights = jm.abstract_weights(component.weight_params)
    out = jax.eval_shape(component.checked(), weights, {"Input": jax.ShapeDtypeStruct((t, n_in), jnp.float32)}, None)
    assert out["Output"].shape == (t, n_out)


@given(n_in=SIZES, n_out=SIZES, axis=st.sampled_from([0, 1]), delta=st.sampled_from([-1, 1]))
def test_one_output_dim_off_always_raises(n_in: int, n_out: int, axis: int, delta: int) -> None:
    def pipeline(weights: jm.Weights, x: Float[Array, "T n_in"]) -> Float[Array, "T n_out"]:
        w: Array = weights["w"]
        y = x @ w
        if delta > 0:
            return jnp.concatenate([y, y[:1] if axis == 0 else y[:, :1]], axis=axis)
        return y[1:] if axis == 0 else y[:, 1:]

    with pytest.raises(jm.ShapeError, match=r"output port 'Output'|the process failed"):
        jm.Component.from_fixed_pipeline(
            {"w": jm.WeightParams((n_in, n_out))}, pipeline, dims={"n_in": n_in, "n_out": n_out}
        )


def _first_rows(weights: jm.Weights, x: Float[Array, "T d"]) -> Float[Array, "T d"]:
    table: Array = weights["table"]
    return x + table[: x.shape[0]]


def test_limits_keep_make_time_sizes_in_range_and_are_enforced_on_calls() -> None:
    spec = {"table": jm.WeightParams((2, 5))}
    with pytest.raises(jm.ShapeError):  # without a limit, T = 3 > 2 rows breaks the contract
        jm.Component.from_fixed_pipeline(spec, _first_rows, dims={"d": 5})
    component = jm.Component.from_fixed_pipeline(spec, _first_rows, dims={"d": 5}, limits={"T": 2})
    (ports,) = component.processes
    assert jm.abstract_inputs(ports, {"d": 5}, 0, {"T": 2})["Input"].shape == (2, 5)  # the limit itself
    assert jm.abstract_inputs(ports, {"d": 5}, 1, {"T": 2})["Input"].shape == (1, 5)  # then a smaller size
    huge = 2**62  # make time and memory do not depend on the limit (this once built a list of 2**62 sizes)
    assert jm.abstract_inputs(ports, {"d": huge}, 1, {"T": huge})["Input"].shape == (huge - 2, huge)  # d took huge
    weights = jm.make_weights(jax.random.key(0), spec)
    with pytest.raises(jm.ShapeError) as info:
        component.checked()(weights, {"Input": jnp.zeros((6, 5))}, None)
    assert _lines(info)[3:] == [
        "  reason:   dimension T is 6, above its limit of 2",
        "  bound:    d=5 (component dims), T=6 (input 'Input')",
    ]
    with pytest.raises(jm.JaxMakeError, match=r"\['d'\] are both bound and limited"):
        jm.Component({}, {}, dims={"d": 3}, limits={"d": 4})


def _counting_affine(traces: list[str]) -> jm.Component:
    """An `Affine(3, 3)` whose process appends to `traces` each time its body is traced."""
    affine = Affine.make(Affine(3, 3))
    run = affine.fixed_pipeline

    def pipeline(weights: jm.Weights, x: Float[Array, "T n_in"]) -> Float[Array, "T n_out"]:
        traces.append(jm.current_path())
        return run(weights, x)

    return jm.Component.from_fixed_pipeline(affine.weight_params, pipeline, dims=affine.dims)


def _nest(child: jm.Component, levels: int) -> jm.Component:
    """`child` wrapped in `levels` components, each calling the one inside it twice."""
    for _ in range(levels):
        inner = child.fixed_pipeline

        def pipeline(
            weights: jm.Weights, x: Float[Array, "T 3"], inner: jm.FixedPipeline = inner
        ) -> Float[Array, "T 3"]:
            return inner(weights["inner"], inner(weights["inner"], x))

        child = jm.Component.from_fixed_pipeline({"inner": child.weight_params}, pipeline)
    return child


def test_enclosing_checks_trust_a_verified_contract_instead_of_tracing_again(getkey: Any) -> None:
    traces: list[str] = []
    with jm.recorded_contracts() as checked:
        model = _nest(_counting_affine(traces), levels=4)
    assert len(checked) == 1 + 1 + 4, "every contract is checked: the Affine, the counting wrapper, 4 levels"
    assert len(traces) == 2, "the inner body is traced for its own check only (two sizes), not once per level"

    weights = jm.make_weights(getkey(), model.weight_params)
    x = jax.random.normal(getkey(), (5, 3))
    w, b = weights["inner"]["inner"]["inner"]["inner"]["w"], weights["inner"]["inner"]["inner"]["inner"]["b"]
    expected = x
    for _ in range(2**4):
        expected = expected @ w + b
    np.testing.assert_allclose(model.fixed_pipeline(weights, x), expected, rtol=1e-4, atol=1e-4)


def test_a_caller_breaking_a_verified_contract_gets_the_callees_shape_error() -> None:
    with jm.scope("affine"):
        affine = Affine.make(Affine(3, 4))

    def transposed(weights: jm.Weights, x: Float[Array, "T 3"]) -> Float[Array, "T 4"]:
        return affine.fixed_pipeline(weights, x.T)

    with jm.scope("model"), pytest.raises(jm.ShapeError) as info:
        jm.Component.from_fixed_pipeline(affine.weight_params, transposed)
    assert _lines(info)[:3] == [
        "ShapeError in affine, process (Input) -> (Output) (called by `model` while its contract was checked), "
        "input port 'Input'",
        '  expected: Float[Array, "T n_in"]',
        "  got:      f32[3,2]",
    ]


def test_a_verified_process_given_other_weights_is_traced_for_real() -> None:
    affine = Affine.make(Affine(3, 3))

    def swapped(weights: jm.Weights, x: Float[Array, "T 3"]) -> Float[Array, "T 3"]:
        return affine.fixed_pipeline({"w": weights["b"], "b": weights["w"]}, x)

    with pytest.raises(jm.ShapeError) as info:
        jm.Component.from_fixed_pipeline(affine.weight_params, swapped)
    assert "the process failed on abstract inputs that match its annotations" in str(info.value)


def test_contract_stand_ins_are_inactive_outside_make_time_checks(getkey: Any) -> None:
    traces: list[str] = []
    affine = _counting_affine(traces)
    weights = jm.make_weights(getkey(), affine.weight_params)
    x = jax.random.normal(getkey(), (4, 3))
    jax.jit(affine.fixed_pipeline).lower(weights, x)
    np.testing.assert_allclose(affine.fixed_pipeline(weights, x), x @ weights["w"] + weights["b"], rtol=1e-6)
    assert len(traces) == 2 + 2, "traced for its two checks, then for real under jit and when called"
