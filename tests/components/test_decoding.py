"""Cached decoding: the `CACHE_PORTS` processes equal the pipelines, and `generate` with the
cache draws the tokens of the uncached path, past `n_ctx` too, batched by `vmap`."""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import jaxmake as jm
from jaxmake.components import (
    CACHE_PORTS,
    POSITIONED_PORTS,
    Gpt,
    PositionalEncoding,
    SelfMultiHeadAttn,
    TransformerEncoder,
    empty_cache,
    generate,
)

CONFIG = Gpt(vocab_size=37, n_ctx=8, n_tfe_layers=1, n_heads=2, dim_model=16, mlp_n_hidden=(32,))


@pytest.fixture(scope="module")
def gpt() -> jm.Component:
    return Gpt.make(CONFIG)


@pytest.fixture(scope="module")
def weights(gpt: jm.Component) -> jm.Weights:
    return jm.make_weights(jr.key(0), gpt.weight_params)


def in_two_calls(component: jm.Component, weights: jm.Weights, x: jax.Array, caches: dict[str, Any], split: int) -> Any:
    """The `Output` of `x[split:]`, after `x[:split]` filled the caches (both through `CACHE_PORTS`)."""

    @jax.jit
    def run(weights: jm.Weights, x: jax.Array, caches: dict[str, Any]) -> Any:
        first = component.run(weights, {jm.Input: x[:split], **caches, "position": jnp.int32(0)})
        filled = {name: first[name] for name in caches}
        return component.run(weights, {jm.Input: x[split:], **filled, "position": jnp.int32(split)})[jm.Output]

    return run(weights, x, caches)


def test_attention_with_a_cache_equals_the_pipeline(getkey: Any) -> None:
    mha = SelfMultiHeadAttn.make(SelfMultiHeadAttn(2, 8, 6, causal=True))
    weights = jm.make_weights(getkey(), mha.weight_params)
    x = jr.normal(getkey(), (6, 6))
    caches = {"k_cache": jnp.zeros((9, 8)), "v_cache": jnp.zeros((9, 8))}  # 3 slots spare
    expected = jax.jit(mha.fixed_pipeline)(weights, x)[4:]
    np.testing.assert_allclose(in_two_calls(mha, weights, x, caches, 4), expected, rtol=1e-5, atol=1e-6)
    bidirectional = SelfMultiHeadAttn.make(SelfMultiHeadAttn(2, 8, 6))  # a token would see those after it
    assert CACHE_PORTS not in bidirectional.processes
    assert CACHE_PORTS not in TransformerEncoder.make(TransformerEncoder(2, 8, (16,), 1)).processes


@pytest.mark.parametrize(("scan_layers", "universal"), [(True, False), (False, True)])  # `_scan`, then `_loop`
def test_encoder_caches_every_layer_in_every_layout(scan_layers: bool, universal: bool, getkey: Any) -> None:
    config = TransformerEncoder(2, 8, (16,), 3, causal=True, scan_layers=scan_layers, universal=universal)
    encoder = TransformerEncoder.make(config)
    weights = jm.make_weights(getkey(), encoder.weight_params)
    x = jr.normal(getkey(), (5, 8))
    caches = {"k_cache": jnp.zeros((3, 5, 8)), "v_cache": jnp.zeros((3, 5, 8))}
    expected = jax.jit(encoder.fixed_pipeline)(weights, x)[2:]
    np.testing.assert_allclose(in_two_calls(encoder, weights, x, caches, 2), expected, atol=1e-5)


def test_positions_from_an_offset(getkey: Any) -> None:
    for strategy in ("sum", "sinusoidal"):
        encoding = PositionalEncoding.make(PositionalEncoding(8, 4, strategy, dynamic_length=True))
        weights = jm.make_weights(getkey(), encoding.weight_params)
        x = jr.normal(getkey(), (8, 4))
        shifted = encoding.get_fixed_process(POSITIONED_PORTS)(weights, {jm.Input: x[:3], "position": jnp.int32(5)})
        np.testing.assert_allclose(shifted[jm.Output], encoding(weights, jnp.zeros((8, 4)).at[5:].set(x[:3]))[5:])


def test_gpt_cache_spec_comes_from_the_config() -> None:
    half = Gpt.make(dataclasses.replace(CONFIG, dtype="bfloat16", n_tfe_layers=3, scan_layers=True))
    caches = empty_cache(half)
    assert {name: (a.shape, a.dtype) for name, a in caches.items()} == {
        "k_cache": ((3, 8, 16), jnp.bfloat16),
        "v_cache": ((3, 8, 16), jnp.bfloat16),
    }
    assert CACHE_PORTS in half.fixed  # decoding never drops out
    weights = jm.abstract_weights(half.weight_params)
    wrong = {jm.Input: jax.ShapeDtypeStruct((2,), jnp.int32), "position": jax.ShapeDtypeStruct((), jnp.int32)}
    wrong |= {name: jax.ShapeDtypeStruct((3, 9, 16), jnp.bfloat16) for name in caches}
    with pytest.raises(jm.ShapeError, match=r"input port 'k_cache'[\s\S]*n_ctx=8 \(Gpt.n_ctx\)"):
        jax.eval_shape(half.checked(CACHE_PORTS), weights, wrong, None)


def test_greedy_cached_decoding_equals_the_uncached_path(gpt: jm.Component, weights: jm.Weights) -> None:
    """Across `n_ctx` (5 + 6 tokens), from a prompt that fills it (8) and one past it (11).

    (The caches of every layout of the layers are tested on the encoder above.)
    """
    for length in (5, 8, 11):
        prompt = jr.randint(jr.key(length), (length,), 0, 37)
        cached = generate(gpt, weights, prompt, 6, jr.key(1), top_k=1)
        assert cached.tolist() == generate(gpt, weights, prompt, 6, jr.key(1), top_k=1, cache=False).tolist(), length
        assert cached[:length].tolist() == prompt.tolist()


def test_a_wider_slide_changes_only_the_tokens_past_the_window(gpt: jm.Component, weights: jm.Weights) -> None:
    prompt = jr.randint(jr.key(5), (5,), 0, 37)
    exact = generate(gpt, weights, prompt, 6, jr.key(1), top_k=1)  # compiled by the test above
    slid = generate(gpt, weights, prompt, 6, jr.key(1), top_k=1, slide=4)
    assert slid[:9].tolist() == exact[:9].tolist()  # the first 8 + 1 tokens never leave the window
    assert bool(((slid >= 0) & (slid < 37)).all())
    with pytest.raises(ValueError, match="1 <= slide <= n_ctx=8"):
        generate(gpt, weights, prompt, 3, jr.key(1), slide=9)


def test_a_batch_of_prompts_by_vmap_equals_one_at_a_time(gpt: jm.Component, weights: jm.Weights) -> None:
    prompts, keys = jr.randint(jr.key(2), (3, 4), 0, 37), jr.split(jr.key(3), 3)

    def sample(prompt: jax.Array, key: jax.Array) -> jax.Array:
        return generate(gpt, weights, prompt, 7, key, temperature=0.9, slide=2)

    batch = jax.vmap(sample)(prompts, keys)
    assert [row.tolist() for row in batch] == [sample(p, k).tolist() for p, k in zip(prompts, keys)]
    assert "cond[" in str(jax.make_jaxpr(jax.vmap(sample))(prompts, keys))  # one loop for the batch, not a select
