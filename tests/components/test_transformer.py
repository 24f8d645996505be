"""`TransformerLayer` and `TransformerEncoder` against NumPy references; the layouts agree."""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxmake as jm
from jaxmake.components._attention import MASKED_PORTS
from jaxmake.components._transformer import Remat, TransformerEncoder, TransformerLayer, stack_layers, unstack_layers
from jaxmake.testing import assert_contracts, assert_gradients, configs
from tests.components.test_attention import normal, np_attention, random_mask, random_weights
from tests.components.test_linear import np_layer_norm

N_HEADS, DIM_MODEL, MLP_N_HIDDEN, EPS, T = 2, 6, (8,), 1e-3, 5  # head_dim 3
LAYER_KEYS = ["norm1", "mha", "dropout", "norm2", "mlp"]


def np_layer(w: Any, x: Any, mask: Any = None) -> tuple[Any, Any]:
    """A pre-norm layer with a relu `Mlp`, in float64: `(output [T, d], attention [n_heads, T, T])`."""
    w = jax.tree.map(lambda a: np.asarray(a, np.float64), w)
    x = np.asarray(x, np.float64)
    attended, attn = np_attention(w["mha"], np_layer_norm(x, w["norm1"]["a"], w["norm1"]["b"], EPS), N_HEADS, mask)
    x = x + attended
    h = np_layer_norm(x, w["norm2"]["a"], w["norm2"]["b"], EPS)
    n_layers = len(w["mlp"])
    for i in range(n_layers):
        h = h @ w["mlp"][f"layer_{i}"]["w"] + w["mlp"][f"layer_{i}"]["b"]
        h = np.maximum(h, 0) if i < n_layers - 1 else h
    return x + h, attn


def np_encoder(w: Any, x: Any, n_layers: int, mask: Any = None) -> tuple[Any, Any]:
    """`n_layers` layers `tfe_layer_i` then `norm`: `(output [T, d], attention [n_layers, n_heads, T, T])`."""
    maps = []
    for i in range(n_layers):
        x, attn = np_layer(w[f"tfe_layer_{i}"], x, mask)
        maps.append(attn)
    return np_layer_norm(x, np.asarray(w["norm"]["a"]), np.asarray(w["norm"]["b"]), EPS), np.stack(maps)


def encoder(n_tfe_layers: int, **fields: Any) -> jm.Component:
    return TransformerEncoder.make(
        TransformerEncoder(N_HEADS, DIM_MODEL, MLP_N_HIDDEN, n_tfe_layers, eps=EPS, **fields)
    )


@pytest.fixture(scope="module")
def layer() -> jm.Component:
    return TransformerLayer.make(TransformerLayer(N_HEADS, DIM_MODEL, MLP_N_HIDDEN, eps=EPS))


def test_layer_matches_numpy(layer: jm.Component) -> None:
    assert list(layer.weight_params) == LAYER_KEYS and layer.weight_params["dropout"] == {}
    weights = random_weights(layer.weight_params, 0)
    x, mask = normal((T, DIM_MODEL), 1), random_mask(T, 2)
    np.testing.assert_allclose(jax.jit(layer.fixed_pipeline)(weights, x), np_layer(weights, x)[0], rtol=1e-4, atol=1e-5)
    outputs = jax.jit(layer.get_fixed_process(MASKED_PORTS))(weights, {jm.Input: x, "mask": mask})
    expected, expected_attn = np_layer(weights, x, mask)
    np.testing.assert_allclose(outputs[jm.Output], expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(outputs["attn"], expected_attn, rtol=1e-4, atol=1e-6)


def test_layer_drops_out_only_when_given_an_rng(layer: jm.Component, getkey: Any) -> None:
    dropping = TransformerLayer.make(TransformerLayer(N_HEADS, DIM_MODEL, MLP_N_HIDDEN, eps=EPS, dropout_keep_rate=0.5))
    assert dropping.fixed == frozenset() and layer.fixed == frozenset(layer.processes)
    weights = random_weights(layer.weight_params, 3)
    x = normal((T, DIM_MODEL), 4)
    pipeline = jax.jit(dropping.pipeline)
    np.testing.assert_allclose(pipeline(weights, x, None), np_layer(weights, x)[0], rtol=1e-4, atol=1e-5)
    rng = getkey()
    dropped = pipeline(weights, x, rng)
    assert not np.allclose(dropped, np_layer(weights, x)[0], atol=1e-3)
    np.testing.assert_array_equal(dropped, pipeline(weights, x, rng))


def test_two_layer_encoder_matches_numpy() -> None:
    two = encoder(2)
    assert set(two.weight_params) == {"tfe_layer_0", "tfe_layer_1", "norm"}
    weights = random_weights(two.weight_params, 5)
    x, mask = normal((T, DIM_MODEL), 6), random_mask(T, 7)
    outputs = jax.jit(two.get_fixed_process(MASKED_PORTS))(weights, {jm.Input: x, "mask": mask})
    expected, expected_attn = np_encoder(weights, x, 2, mask)
    np.testing.assert_allclose(outputs[jm.Output], expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(outputs["attn"], expected_attn, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        jax.jit(two.fixed_pipeline)(weights, x), np_encoder(weights, x, 2)[0], rtol=1e-4, atol=1e-5
    )


def test_scan_equals_loop_given_stacked_weights_and_the_same_rng(getkey: Any) -> None:
    loop, scan = encoder(2, dropout_keep_rate=0.7), encoder(2, dropout_keep_rate=0.7, scan_layers=True)
    weights = random_weights(loop.weight_params, 8)
    stacked = stack_layers(weights, 2)
    jm.check_weights(scan.weight_params, stacked)
    x, mask, rng = normal((T, DIM_MODEL), 9), random_mask(T, 10), getkey()
    expected = jax.jit(loop.get_process(MASKED_PORTS))(weights, {jm.Input: x, "mask": mask}, rng)
    outputs = jax.jit(scan.get_process(MASKED_PORTS))(stacked, {jm.Input: x, "mask": mask}, rng)
    np.testing.assert_allclose(outputs[jm.Output], expected[jm.Output], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(outputs["attn"], expected["attn"], rtol=1e-5, atol=1e-6)
    evaluation = jax.jit(scan.pipeline)(stacked, x, None)
    np.testing.assert_allclose(evaluation, jax.jit(loop.pipeline)(weights, x, None), rtol=1e-5, atol=1e-6)
    assert not np.allclose(evaluation, outputs[jm.Output], atol=1e-3), "the rng must switch dropout on"


def test_universal_shares_one_layer_in_loop_and_scan(getkey: Any) -> None:
    universal = encoder(2, universal=True, dropout_keep_rate=0.7)
    assert set(universal.weight_params) == {"tfe_layer", "norm"}
    scanned = encoder(2, universal=True, dropout_keep_rate=0.7, scan_layers=True)
    assert scanned.weight_params == universal.weight_params
    weights = random_weights(universal.weight_params, 11)
    x, rng = normal((T, DIM_MODEL), 12), getkey()
    y = jax.jit(universal.pipeline)(weights, x, rng)
    np.testing.assert_allclose(jax.jit(scanned.pipeline)(weights, x, rng), y, rtol=1e-5, atol=1e-6)
    looped = {"tfe_layer_0": weights["tfe_layer"], "tfe_layer_1": weights["tfe_layer"], "norm": weights["norm"]}
    np.testing.assert_allclose(
        jax.jit(encoder(2, dropout_keep_rate=0.7).pipeline)(looped, x, rng), y, rtol=1e-5, atol=1e-6
    )


def test_stack_and_unstack_layers_round_trip() -> None:
    weights = random_weights(encoder(3).weight_params, 13)
    stacked = stack_layers(weights, 3)
    assert set(stacked) == {"tfe_layers", "norm"}
    jm.check_weights(encoder(3, scan_layers=True).weight_params, stacked)
    np.testing.assert_array_equal(
        stacked["tfe_layers"]["mha"]["kqv"]["w"][2], weights["tfe_layer_2"]["mha"]["kqv"]["w"]
    )
    jax.tree.map(np.testing.assert_array_equal, unstack_layers(stacked), weights)
    with pytest.raises(jm.WeightsError, match=r"^`stack_layers` takes weights holding `tfe_layer_0` .. `tfe_layer_1` "):
        stack_layers(weights, 2)
    with pytest.raises(
        jm.WeightsError, match=r"^`unstack_layers` takes weights holding `tfe_layers`; these hold \['norm', "
    ):
        unstack_layers(weights)


def test_gradients_reach_every_weight_of_a_scanned_encoder() -> None:
    scan = encoder(2, scan_layers=True)
    masked = scan.get_fixed_process(MASKED_PORTS)
    x, mask = normal((T, DIM_MODEL), 14), random_mask(T, 15)

    def loss(w: jm.Weights) -> jax.Array:
        outputs = masked(w, {jm.Input: x, "mask": mask})
        return jnp.sum(jnp.sin(outputs[jm.Output])) + jnp.sum(outputs["attn"] ** 2)

    assert_gradients(jax.jit(loss), random_weights(scan.weight_params, 16))


def test_contracts_on_real_numbers(layer: jm.Component) -> None:
    # Fixed (no dropout): each random program compiles its dropout masks' generator, which
    # costs seconds on a small CPU; the dropout paths are checked by the tests above.
    assert_contracts(layer, jr.key(17))
    assert_contracts(encoder(2, scan_layers=True), jr.key(18))


def test_n_heads_must_divide_dim_model() -> None:
    with pytest.raises(jm.ConfigError, match=r"^`TransformerLayer.n_heads`=5 must divide `dim_model`=12$"):
        TransformerLayer(n_heads=5, dim_model=12, mlp_n_hidden=(4,))
    with pytest.raises(jm.ConfigError, match=r"^`TransformerEncoder.n_heads`=5 must divide `dim_model`=12$"):
        TransformerEncoder(n_heads=5, dim_model=12, mlp_n_hidden=(4,), n_tfe_layers=2)


def test_the_layer_carries_only_the_fields_it_reads() -> None:
    layer_fields = {f.name for f in dataclasses.fields(TransformerLayer)}
    policy = {"dtype", "param_dtype", "matmul_precision"}
    assert layer_fields == {
        *("n_heads", "dim_model", "mlp_n_hidden", "dropout_keep_rate", "eps", "mlp_activation"),
        *("attention_impl", "causal", *policy),
    }
    encoder_fields = {f.name for f in dataclasses.fields(TransformerEncoder)}
    assert encoder_fields == layer_fields | {"n_tfe_layers", "universal", "scan_layers", "scan_unroll", "remat"}
    untyped: Any = TransformerEncoder  # mypy maps a fifth positional to the inherited keyword-only `dtype`
    with pytest.raises(TypeError, match="positional"):
        untyped(2, 4, (8,), 3, False)  # `universal` is keyword-only


@settings(max_examples=10)
@given(data=st.data())
def test_drawn_layer_configs_make_the_layer_weights(data: st.DataObject) -> None:
    n_heads, head_dim = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2))
    config = data.draw(configs(TransformerLayer, n_heads=n_heads, dim_model=n_heads * head_dim))
    shapes = jax.tree.map(jnp.shape, jm.abstract_weights(TransformerLayer.make(config).weight_params))
    d = config.dim_model
    assert sorted(shapes) == sorted(LAYER_KEYS) and shapes["dropout"] == {}
    assert shapes["mha"] == {"kqv": {"w": (d, 3 * d), "b": (3 * d,)}, "out": {"w": (d, d), "b": (d,)}}
    assert shapes["norm1"] == shapes["norm2"] == {"a": (d,), "b": (d,)}
    widths = (d, *config.mlp_n_hidden, d)
    assert shapes["mlp"] == {
        f"layer_{i}": {"w": (widths[i], widths[i + 1]), "b": (widths[i + 1],)} for i in range(len(widths) - 1)
    }


@settings(max_examples=10)
@given(data=st.data())
def test_drawn_encoder_configs_make_the_layout_of_their_mode(data: st.DataObject) -> None:
    n_tfe_layers = data.draw(st.integers(1, 3))
    config = data.draw(
        configs(TransformerEncoder, n_heads=2, dim_model=4, mlp_n_hidden=(3,), n_tfe_layers=n_tfe_layers)
    )
    spec = TransformerEncoder.make(config).weight_params
    layer_spec = TransformerLayer.make(config).weight_params
    n = config.n_tfe_layers
    if config.universal:
        assert spec == {"tfe_layer": layer_spec, "norm": spec["norm"]}
    elif config.scan_layers:
        assert spec == {"tfe_layers": jm.stack_params(layer_spec, n), "norm": spec["norm"]}
    else:
        assert spec == {**{f"tfe_layer_{i}": layer_spec for i in range(n)}, "norm": spec["norm"]}
    assert jax.tree.map(jnp.shape, jm.abstract_weights(spec))["norm"] == {"a": (4,), "b": (4,)}


@pytest.mark.parametrize(
    "fields",
    [
        {"remat": "layer"},
        {"remat": "dots_no_batch", "attention_impl": "fused"},
        {"remat": "dots", "scan_layers": True, "scan_unroll": 2},
    ],
    ids=lambda fields: "-".join(f"{k}={v}" for k, v in fields.items()),
)
def test_remat_and_unroll_give_the_same_outputs_and_gradients(fields: dict[str, Any], getkey: Any) -> None:
    layout = {k: v for k, v in fields.items() if k in ("scan_layers", "universal")}
    plain, rematerialised = encoder(2, dropout_keep_rate=0.8, **layout), encoder(2, dropout_keep_rate=0.8, **fields)
    weights = random_weights(plain.weight_params, 30)
    x, mask, rng = normal((T, DIM_MODEL), 31), random_mask(T, 32), getkey()

    def loss(component: jm.Component, w: jm.Weights) -> jax.Array:
        outputs = component.run(w, {jm.Input: x, "mask": mask}, rng)
        return jnp.sum(jnp.sin(outputs[jm.Output])) + jnp.sum(outputs["attn"] ** 2)

    expected, expected_grads = jax.jit(jax.value_and_grad(lambda w: loss(plain, w)))(weights)
    value, grads = jax.jit(jax.value_and_grad(lambda w: loss(rematerialised, w)))(weights)
    np.testing.assert_allclose(value, expected, rtol=1e-6)
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(expected_grads)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_per_layer_remat_shrinks_the_compiled_steps_temp_memory() -> None:
    """XLA's own accounting of the compiled gradient (not a timing): remat keeps less.

    Scanned layers: XLA's CPU backend schedules an unrolled loop's recomputation as early
    as the original, so there remat shows no saving (a hand-written loop of
    `jax.checkpoint` layers behaves the same on CPU); a scan's cannot move.
    """
    x = jnp.ones((4, 64, 16), jnp.float32)

    def temp_bytes(remat: Remat) -> int:
        enc = TransformerEncoder.make(TransformerEncoder(2, 16, (64,), 6, remat=remat, scan_layers=True))
        weights = jm.abstract_weights(enc.weight_params)
        grad = jax.grad(lambda w, x: jnp.sum(jax.vmap(lambda e: enc(w, e))(x)))
        analysis = jax.jit(grad).lower(weights, x).compile().memory_analysis()
        assert analysis is not None
        return int(analysis.temp_size_in_bytes)

    none, layer = temp_bytes("none"), temp_bytes("layer")
    assert layer < none / 3, (none, layer)
