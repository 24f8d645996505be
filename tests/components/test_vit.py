"""`Vit`: the seed's weights tree, processes, patch masking, training signal."""

from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import jaxmake as jm
from jaxmake.components._vit import LOGITS, Vit
from jaxmake.testing import assert_gradients

_LAYER = {
    "dropout": {},
    "mha": {"kqv": {"b": (36,), "w": (12, 36)}, "out": {"b": (12,), "w": (12, 12)}},
    "mlp": {"layer_0": {"b": (24,), "w": (12, 24)}, "layer_1": {"b": (12,), "w": (24, 12)}},
    "norm1": {"a": (12,), "b": (12,)},
    "norm2": {"a": (12,), "b": (12,)},
}
# The tree printed in the seed, with per-feature LayerNorms: (12,) where the seed had (1,).
SEED_TREE = {
    "encoder": {"norm": {"a": (12,), "b": (12,)}, **{f"tfe_layer_{i}": _LAYER for i in range(4)}},
    "mask_embedding": {"dict": (1, 12)},
    "norm": {"a": (12,), "b": (12,)},
    "out_embedding": {"dict": (5, 12)},
    "patching": {"mlp": {"layer_0": {"b": (12,), "w": (16, 12)}, "layer_1": {"b": (12,), "w": (12, 12)}}},
    "positional_encoding": {"encoding_dim_0": (12, 7), "encoding_dim_1": (12, 7), "encoding_dim_2": (12, 1)},
    "positional_encoding_y": {"encoding_dim_0": (12, 1)},
}

SMALL = Vit(
    n_tfe_layers=1,
    n_heads=2,
    dim_model=8,
    mlp_n_hidden=(8,),
    hwc=(4, 4, 2),
    n_patches_side=2,
    mlp_n_hidden_patches=(8,),
    dict_size_output=3,
    positional_encode_strategy="sum",
    pos_init_scale=0.1,
)


def test_the_seed_config_makes_the_seed_weights_tree() -> None:
    vit = Vit.make(Vit())
    assert jax.tree.map(jnp.shape, jm.abstract_weights(vit.weight_params)) == SEED_TREE
    assert jax.tree.map(jnp.shape, jm.make_weights(jr.key(0), vit.weight_params)) == SEED_TREE


def test_processes_shapes_jit_and_vmap(getkey: Any) -> None:
    vit = Vit.make(SMALL)
    weights = jm.make_weights(getkey(), vit.weight_params)
    images = jr.uniform(getkey(), (3, 4, 4, 2))
    encode = jax.jit(jax.vmap(vit.fixed_pipeline, in_axes=(None, 0)))
    encodings = encode(weights, images)
    assert encodings.shape == (3, 1 + 2 * 2 * 2, 8)
    logits_ports = jm.make_ports(jm.Input, LOGITS)
    logits = jax.vmap(vit.get_fixed_process(logits_ports), in_axes=(None, 0))(weights, {jm.Input: images})[LOGITS]
    assert logits.shape == (3, 3)
    np.testing.assert_allclose(logits, encodings[:, 0] @ weights["out_embedding"]["dict"].T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(encodings[1], vit.fixed_pipeline(weights, images[1]), rtol=1e-5, atol=1e-5)


def test_input_keep_rate_masks_patches_with_the_mask_embedding_only_in_training(getkey: Any) -> None:
    masked = Vit.make(jm_replace(SMALL, input_keep_rate=0.5))
    assert masked.fixed == frozenset()
    weights = jm.make_weights(getkey(), masked.weight_params)
    image = jr.uniform(getkey(), (4, 4, 2))
    clean = Vit.make(SMALL).fixed_pipeline(weights, image)
    np.testing.assert_allclose(masked.pipeline(weights, image, None), clean, rtol=1e-6)
    assert not np.allclose(masked.pipeline(weights, image, getkey()), clean)
    # With every patch masked, the image no longer matters.
    all_masked = Vit.make(jm_replace(SMALL, input_keep_rate=1e-9))
    key = getkey()
    np.testing.assert_allclose(
        all_masked.pipeline(weights, image, key), all_masked.pipeline(weights, image * 0 + 7, key), rtol=1e-5, atol=1e-5
    )


def jm_replace(config: Vit, **changes: Any) -> Vit:
    import dataclasses

    return dataclasses.replace(config, **changes)


def test_gradients_reach_every_weight(getkey: Any) -> None:
    vit = Vit.make(jm_replace(SMALL, input_keep_rate=0.5))
    weights = jm.make_weights(getkey(), vit.weight_params)
    images, key = jr.uniform(getkey(), (2, 4, 4, 2)), getkey()
    process = vit.get_process(jm.make_ports(jm.Input, LOGITS))

    def loss(w: jm.Weights) -> jax.Array:
        keys = jr.split(key, 2)
        logits = jax.vmap(process, in_axes=(None, 0, 0))(w, {jm.Input: images}, keys)[LOGITS]
        return jnp.sum(jnp.square(logits - jnp.arange(3.0)))

    assert_gradients(loss, weights)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"n_heads": 5}, r"^`Vit.n_heads`=5 must divide `dim_model`=12$"),
        (
            {"n_patches_side": 5},
            r"^`Vit.n_patches_side`=5 must divide the image height 28 \(from `hwc`=\(28, 28, 1\)\)$",
        ),
        ({"hwc": (28, 27, 1)}, r"^`Vit.n_patches_side`=7 must divide the image width 27"),
        ({"input_keep_rate": 0.0}, r"^`Vit.input_keep_rate`=0.0 must be > 0$"),
    ],
)
def test_config_errors(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(jm.ConfigError, match=message):
        Vit(**changes)
