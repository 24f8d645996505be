"""`Dropout`, `LayerNorm`, `RMSNorm`, `Embeddings`, activations and losses against NumPy."""

from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import jaxmake as jm
from jaxmake import components as jmc
from jaxmake.testing import assert_gradients
from tests.components.test_linear import NP_ACTIVATIONS, np_layer_norm


@pytest.mark.parametrize("keep", [0.2, 0.5, 0.9])
def test_dropout_zeroes_one_minus_p_and_preserves_the_mean(keep: float, getkey: Any) -> None:
    dropout = jmc.Dropout.make(jmc.Dropout(keep))
    x = jnp.ones((400, 500))
    y = np.asarray(dropout.pipeline({}, x, getkey()))
    assert (y == 0).mean() == pytest.approx(1 - keep, abs=0.01)
    assert y.mean() == pytest.approx(1.0, abs=0.02)
    assert set(np.unique(y)) == {0.0, np.float32(1 / keep)}


def test_dropout_is_the_identity_at_keep_one_or_without_rng(getkey: Any) -> None:
    x = jr.normal(getkey(), (3, 4))
    full = jmc.Dropout.make(jmc.Dropout(1.0))
    assert full.fixed == {jm.pipeline_ports}
    np.testing.assert_array_equal(full.fixed_pipeline({}, x), x)
    np.testing.assert_array_equal(jmc.Dropout.make(jmc.Dropout(0.3)).pipeline({}, x, None), x)


@pytest.mark.parametrize("shape", [(6,), (3, 6), (2, 3, 6)])
def test_layer_norm_and_rms_norm_match_numpy(shape: tuple[int, ...], getkey: Any) -> None:
    x = jr.normal(getkey(), shape) * 3 + 1
    layer = jmc.LayerNorm.make(jmc.LayerNorm(6, 1e-3))
    weights = jax.tree.map(lambda p: p + jr.normal(getkey(), p.shape), jm.make_weights(getkey(), layer.weight_params))
    expected = np_layer_norm(np.asarray(x, np.float64), np.asarray(weights["a"]), np.asarray(weights["b"]), 1e-3)
    np.testing.assert_allclose(layer.fixed_pipeline(weights, x), expected, rtol=1e-4, atol=1e-5)

    rms = jmc.RMSNorm.make(jmc.RMSNorm(6, 1e-3))
    a = jr.normal(getkey(), (6,))
    xn = np.asarray(x, np.float64)
    expected = xn / np.sqrt((xn**2).mean(-1, keepdims=True) + 1e-3) * np.asarray(a)
    np.testing.assert_allclose(rms.fixed_pipeline({"a": a}, x), expected, rtol=1e-4, atol=1e-5)


def test_embeddings_lookup_and_logits(getkey: Any) -> None:
    embeddings = jmc.Embeddings.make(jmc.Embeddings(7, 4, dict_init_scale=2.0))
    weights = jm.make_weights(getkey(), embeddings.weight_params)
    table = np.asarray(weights["dict"])
    ids = jnp.array([[0, 6], [3, 3]])
    np.testing.assert_array_equal(embeddings.fixed_pipeline(weights, ids), table[np.asarray(ids)])
    vectors = jr.normal(getkey(), (5, 4))
    logits = embeddings.get_fixed_process(jmc.LOGITS_PORTS)(weights, {"embedding": vectors})["logits"]
    np.testing.assert_allclose(logits, np.asarray(vectors) @ table.T, rtol=1e-5, atol=1e-5)
    assert_gradients(lambda w: jnp.sum(embeddings.fixed_pipeline(w, jnp.arange(7)) ** 2), weights)


@pytest.mark.parametrize("name", ["relu", "gelu", "tanh", "silu"])
def test_activations_match_numpy(name: jmc.Activation) -> None:
    x = jnp.linspace(-4, 4, 33)
    np.testing.assert_allclose(
        jmc.activation(name)(x), NP_ACTIVATIONS[name](np.asarray(x, np.float64)), rtol=1e-5, atol=1e-6
    )


def test_losses_match_numpy(getkey: Any) -> None:
    logits = jr.normal(getkey(), (4, 5)) * 3
    labels = jnp.array([0, 4, 2, 2])
    lg = np.asarray(logits, np.float64)
    log_softmax = lg - np.log(np.exp(lg).sum(-1, keepdims=True))
    np.testing.assert_allclose(
        jmc.softmax_cross_entropy(logits, labels), -log_softmax[np.arange(4), np.asarray(labels)], rtol=1e-5
    )
    targets = jr.uniform(getkey(), (4, 5))
    sig = 1 / (1 + np.exp(-lg))
    expected = -(np.asarray(targets) * np.log(sig) + (1 - np.asarray(targets)) * np.log(1 - sig))
    np.testing.assert_allclose(jmc.sigmoid_cross_entropy(logits, targets), expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(jmc.l1_loss(logits, targets), np.abs(lg - np.asarray(targets)), rtol=1e-6)
    np.testing.assert_allclose(jmc.l2_loss(logits, targets), 0.5 * (lg - np.asarray(targets)) ** 2, rtol=1e-5)
    big = jnp.array([1000.0, -1000.0])
    assert bool(jnp.isfinite(jmc.sigmoid_cross_entropy(big, jnp.array([0.0, 1.0]))).all())
