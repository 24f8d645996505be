"""`lora`: adapters on a small Gpt, both layer layouts; the base reused; contracts; gradients; merging."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from jax import Array
from jaxtyping import Float

import jaxmake as jm
from jaxmake.components import LOSS_PORTS, Gpt
from jaxmake.surgery import FREEZE_BASE, lora, lora_weights, merge_lora
from jaxmake.training import TrainConfig, weight_labels

GPT = Gpt(vocab_size=11, n_ctx=8, n_tfe_layers=1, dim_model=8, n_heads=2, mlp_n_hidden=(16,))
TARGETED = ("encoder", "lm_head")
TOKENS = jnp.array([1, 4, 2, 9, 0, 3, 7], jnp.int32)
TARGETS = jnp.array([4, 2, 9, 0, 3, 7, 5], jnp.int32)
LAYOUTS = [pytest.param(GPT, id="layers"), pytest.param(dataclasses.replace(GPT, scan_layers=True), id="scan_layers")]


@functools.cache
def _adapted(config: Gpt, patterns: str | tuple[str, ...] = TARGETED, rank: int = 2) -> tuple[jm.Component, ...]:
    base = Gpt.make(config)
    return base, lora(base, patterns, rank)


@functools.cache
def _weights(config: Gpt) -> tuple[jm.Weights, jm.Weights]:
    """The base weights, and the adapted model's (drawing weights compiles a program: done once per layout)."""
    base, adapted = _adapted(config)
    weights = jm.make_weights(jr.key(0), base.weight_params)
    return weights, lora_weights(jr.key(1), adapted, weights)


def _logits(component: jm.Component, weights: jm.Weights) -> Array:
    """The pipeline's logits of `TOKENS`, compiled (eager runs op by op, under the tests' runtime checks)."""
    logits: Array = jax.jit(lambda w: component(w, TOKENS))(weights)
    return logits


@pytest.mark.parametrize("config", LAYOUTS)
def test_the_adapted_model_equals_the_base_exactly_at_first(config: Gpt) -> None:
    base, adapted = _adapted(config)
    weights, both = _weights(config)
    jm.check_weights(adapted.weight_params, both)
    inputs = {jm.Input: TOKENS, "targets": TARGETS}

    def logits_and_loss(component: jm.Component, weights: jm.Weights) -> tuple[Array, Array]:
        both: tuple[Array, Array] = jax.jit(lambda w: (component(w, TOKENS), component.run(w, inputs)["loss"]))(weights)
        return both

    for got, expected in zip(logits_and_loss(adapted, both), logits_and_loss(base, weights)):
        np.testing.assert_array_equal(got, expected)


def test_the_adapters_sit_beside_each_w_with_its_stacked_dims() -> None:
    _, adapted = _adapted(dataclasses.replace(GPT, scan_layers=True, n_tfe_layers=2), ("*.kqv", "*.mlp.layer_1"), 3)
    shapes = jax.tree.map(jnp.shape, jm.abstract_weights(adapted.weight_params))
    layers = shapes["encoder"]["tfe_layers"]
    assert layers["mha"]["kqv"] == {"w": (2, 8, 24), "b": (2, 24), "lora_a": (2, 8, 3), "lora_b": (2, 3, 24)}
    assert layers["mha"]["out"] == {"w": (2, 8, 8), "b": (2, 8)}
    assert layers["mlp"]["layer_1"]["lora_b"] == (2, 3, 8)
    a, b = (jm.get_at(adapted.weight_params, f"encoder.tfe_layers.mha.kqv.{name}") for name in ("lora_a", "lora_b"))
    assert (a.stack, a.axes, b.init) == (1, ("layers", "embed", None), "zeros")


def test_the_base_weights_are_reused_and_only_the_adapters_drawn() -> None:
    _, adapted = _adapted(GPT)
    weights, both = _weights(GPT)
    adapters = [path for path in jm.weight_paths(both) if path.endswith(("lora_a", "lora_b"))]
    assert len(adapters) == 2 * 5  # kqv, out, mlp.layer_0, mlp.layer_1, lm_head
    for path in jm.weight_paths(both):
        if path not in adapters:
            assert jm.get_at(both, path) is jm.get_at(weights, path)
    path = "encoder.tfe_layer_0.mha.kqv.lora_a"  # drawn as `make_weights` draws it in the whole spec
    alone = {"encoder": {"tfe_layer_0": {"mha": {"kqv": {"lora_a": jm.get_at(adapted.weight_params, path)}}}}}
    np.testing.assert_array_equal(jm.get_at(both, path), jm.get_at(jm.make_weights(jr.key(1), alone), path))
    assert 0.2 < float(jnp.std(jm.get_at(both, path))) * np.sqrt(8) < 2  # std 1 / sqrt(n_in)
    with pytest.raises(jm.WeightsError, match=r"(?s)do not match their spec.*missing      lm_head.w"):
        lora_weights(jr.key(1), adapted, {**weights, "lm_head": {"b": weights["lm_head"]["b"]}})


def test_the_adapted_contracts_are_checked_at_make_time() -> None:
    base = Gpt.make(GPT)
    with jm.recorded_contracts() as checked:
        lora(base, "encoder", rank=2)
    assert checked == [f"lora(Gpt): {ports}" for ports in base.processes]
    assert {str(LOSS_PORTS)} < {line.split(": ", 1)[1] for line in checked}


def test_mistakes_are_clear_errors() -> None:
    gpt = Gpt.make(GPT)
    with pytest.raises(jm.WeightsError, match=r"^the weight-path pattern `\*\.kvq` selects no weight; the nearest"):
        lora(gpt, "*.kvq", rank=2)
    with pytest.raises(
        jm.WeightsError, match=r"^the pattern `embedding` selects no `w` \(it selects `embedding.dict`\)"
    ):
        lora(gpt, "embedding", rank=2)
    with pytest.raises(jm.ConfigError, match=r"^`lora\(rank=...\)`=0 must be an int >= 1$"):
        lora(gpt, "encoder", rank=0)
    with pytest.raises(jm.ConfigError, match=r"^`lora\(rank=...\)`=9 must be <= min\(n_in, n_out\) = 8 of `encoder"):
        lora(gpt, "encoder", rank=9)
    with pytest.raises(jm.ConfigError, match=r"^`lora\(alpha=...\)`=-1.0 must be a number > 0$"):
        lora(gpt, "encoder", rank=2, alpha=-1.0)
    with pytest.raises(
        jm.WeightsError, match=r"^`lm_head` already holds \['lora_a', 'lora_b'\]: it is adapted already"
    ):
        lora(lora(gpt, "lm_head", rank=2), "lm_head", rank=2)

    def scale(weights: jm.Weights, x: Float[Array, "T d"]) -> Float[Array, "T d"]:
        y: Array = x * weights["w"]
        return y

    vector = jm.Component.from_pipeline({"w": jm.WeightParams((4,))}, scale, dims={"d": 4})
    with pytest.raises(jm.WeightsError, match=r"^`w` is float32\[4\] with 0 stacked dims, not a matrix"):
        lora(vector, "w", rank=1)


def test_gradients_reach_the_adapters_and_merging_folds_them_in() -> None:
    base, adapted = _adapted(GPT)
    both = _weights(GPT)[1]
    inputs = {jm.Input: TOKENS, "targets": TARGETS}

    def loss(weights: jm.Weights) -> Array:
        value: Array = adapted.run(weights, inputs, outputs="loss")["loss"]
        return value

    grad = jax.jit(jax.grad(loss))
    first = grad(both)
    assert float(jnp.abs(first["lm_head"]["lora_b"]).max()) > 0  # `lora_b` learns from the start, `lora_a` later
    trained = jax.tree.map(lambda x, g: x - 0.5 * g, both, first)
    grads = grad(trained)
    for path in jm.weight_paths(grads):
        if path.endswith(("lora_a", "lora_b")):
            assert float(jnp.abs(jm.get_at(grads, path)).max()) > 0, path

    merged = merge_lora(trained)
    jm.check_weights(base.weight_params, merged)
    np.testing.assert_allclose(_logits(base, merged), _logits(adapted, trained), rtol=1e-5, atol=1e-6)


def test_freeze_base_trains_the_adapters_only() -> None:
    _, adapted = _adapted(GPT)
    labels = weight_labels(TrainConfig(steps=1, freeze=FREEZE_BASE), adapted.weight_params)
    assert labels["lm_head"] == {"w": "frozen", "b": "frozen", "lora_a": "trained", "lora_b": "trained"}
    assert set(jax.tree.leaves(labels["embedding"])) == {"frozen"}
