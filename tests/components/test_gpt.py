"""`Gpt`: causality, the loss at initialisation, the loss process, `generate`."""

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import jaxmake as jm
from jaxmake.components import _gpt
from jaxmake.components._functional import softmax_cross_entropy
from jaxmake.components._gpt import LOSS_PORTS, Gpt, generate
from jaxmake.testing import assert_gradients

CONFIG = Gpt(vocab_size=37, n_ctx=8, n_tfe_layers=2, n_heads=2, dim_model=16, mlp_n_hidden=(32,))


@pytest.fixture(scope="module")
def gpt() -> jm.Component:
    return Gpt.make(CONFIG)


def test_weights_tree_has_the_documented_parts(gpt: jm.Component) -> None:
    assert sorted(gpt.weight_params) == ["embedding", "encoder", "lm_head", "positional_encoding"]
    assert jax.tree.map(jnp.shape, jm.abstract_weights(gpt.weight_params))["lm_head"] == {"b": (37,), "w": (16, 37)}


def test_it_is_causal(gpt: jm.Component, getkey: Any) -> None:
    weights = jm.make_weights(getkey(), gpt.weight_params)
    tokens = jr.randint(getkey(), (8,), 0, 37)
    changed = tokens.at[5].set((tokens[5] + 1) % 37)
    before, after = gpt.fixed_pipeline(weights, tokens), gpt.fixed_pipeline(weights, changed)
    np.testing.assert_allclose(before[:5], after[:5], rtol=1e-5, atol=1e-5)
    assert not np.allclose(before[5:], after[5:])


def test_initial_loss_is_near_log_vocab_and_the_loss_process_agrees(gpt: jm.Component, getkey: Any) -> None:
    weights = jm.make_weights(getkey(), gpt.weight_params)
    tokens = jr.randint(getkey(), (16, 8), 0, 37)
    targets = jr.randint(getkey(), (16, 8), 0, 37)
    loss = jax.jit(jax.vmap(gpt.get_fixed_process(LOSS_PORTS), in_axes=(None, 0)))
    losses = loss(weights, {jm.Input: tokens, "targets": targets})["loss"]
    assert abs(float(losses.mean()) - math.log(37)) < 0.3
    logits = gpt.fixed_pipeline(weights, tokens[0])
    np.testing.assert_allclose(losses[0], softmax_cross_entropy(logits, targets[0]).mean(), rtol=1e-5)
    assert_gradients(
        lambda w: gpt.get_fixed_process(LOSS_PORTS)(w, {jm.Input: tokens[0], "targets": targets[0]})["loss"], weights
    )


def test_sequences_longer_than_the_context_are_rejected(gpt: jm.Component) -> None:
    weights = jm.abstract_weights(gpt.weight_params)
    with pytest.raises(jm.ShapeError, match="dimension T is 9, above its limit of 8"):
        jax.eval_shape(gpt.checked(), weights, {jm.Input: jax.ShapeDtypeStruct((9,), jnp.int32)}, None)


def test_generate_is_deterministic_compiles_once_and_slides_the_window(gpt: jm.Component, getkey: Any) -> None:
    weights = jm.make_weights(getkey(), gpt.weight_params)
    prompt, key = jnp.array([1, 2, 3]), getkey()
    _gpt._cached_sampler.cache_clear()
    first = generate(gpt, weights, prompt, 12, key, temperature=0.8, top_k=5)
    assert first.shape == (15,) and first[:3].tolist() == [1, 2, 3]
    assert first.tolist() == generate(gpt, weights, prompt, 12, key, temperature=0.8, top_k=5).tolist()
    assert _gpt._cached_sampler.cache_info().misses == 1
    greedy = generate(gpt, weights, prompt, 4, key, temperature=1e-6)
    context = greedy[:3]
    for position in range(3, 7):  # greedy decoding is the argmax of the pipeline
        assert int(greedy[position]) == int(jnp.argmax(gpt.fixed_pipeline(weights, context)[-1]))
        context = greedy[: position + 1]
    assert bool(((first >= 0) & (first < 37)).all())
    with pytest.raises(ValueError, match="temperature > 0"):
        generate(gpt, weights, prompt, 3, key, temperature=0.0)


def test_a_padded_vocabulary_changes_neither_logits_nor_loss(gpt: jm.Component, getkey: Any) -> None:
    padded = Gpt.make(dataclasses.replace(CONFIG, vocab_multiple=16))  # 37 tokens -> 48 rows
    shapes = jax.tree.map(jnp.shape, jm.abstract_weights(padded.weight_params))
    assert shapes["embedding"] == {"dict": (48, 16)} and shapes["lm_head"] == {"b": (48,), "w": (16, 48)}
    weights = jm.make_weights(getkey(), padded.weight_params)
    unpadded = {  # the same model without the padded rows
        **weights,
        "embedding": {"dict": weights["embedding"]["dict"][:37]},
        "lm_head": {"w": weights["lm_head"]["w"][:, :37], "b": weights["lm_head"]["b"][:37]},
    }
    tokens = jr.randint(getkey(), (8,), 0, 37)
    logits = padded.fixed_pipeline(weights, tokens)
    assert logits.shape == (8, 37)
    np.testing.assert_allclose(logits, gpt.fixed_pipeline(unpadded, tokens), rtol=1e-6, atol=1e-6)
    inputs = {jm.Input: tokens, "targets": jnp.roll(tokens, -1)}
    loss_of = padded.get_fixed_process(LOSS_PORTS)
    np.testing.assert_allclose(
        loss_of(weights, inputs)["loss"], gpt.get_fixed_process(LOSS_PORTS)(unpadded, inputs)["loss"], rtol=1e-6
    )
    grads = jax.grad(lambda w: loss_of(w, inputs)["loss"])(weights)
    assert not np.any(grads["embedding"]["dict"][37:]) and not np.any(grads["lm_head"]["w"][:, 37:])
    assert not np.any(grads["lm_head"]["b"][37:])


def test_a_padded_vocabulary_splits_over_a_model_axis() -> None:
    from jaxmake.sharding import RULES, make_mesh

    mesh = make_mesh({"data": 2, "model": 2})
    odd = dataclasses.replace(CONFIG, vocab_size=103)  # the default corpus's character count
    with pytest.raises(jm.ShardingError, match=r"dimension 0 \(size 103, logical axis 'vocab'\) cannot be split"):
        jm.make_weights(jr.key(0), Gpt.make(odd).weight_params, mesh=mesh, rules=RULES["fsdp_tp"])
    weights = jm.make_weights(
        jr.key(0),
        Gpt.make(dataclasses.replace(odd, vocab_multiple=64)).weight_params,
        mesh=mesh,
        rules=RULES["fsdp_tp"],
    )
    assert weights["embedding"]["dict"].shape == (128, 16)
