"""`Patches` against NumPy references: which pixel lands in which token."""

from itertools import pairwise
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import jaxmake as jm
from jaxmake.components._patches import PATCHES_PORTS, Patches
from jaxmake.testing import assert_contracts, assert_gradients, configs

# 4 x 6 pixels, 2 channels, in 2 x 3 sections of 2 x 2 pixels: 12 patches of 4 values.
SMALL = Patches(dim_out=3, n_sections_w=3, n_sections_h=2, w=6, h=4, ch=2, mlp_n_hidden=(5,))


def pixel_image(h: int, w: int, ch: int) -> Any:
    """Every value names its pixel: `100 * row + 10 * column + channel`."""
    rows, columns, channels = np.meshgrid(np.arange(h), np.arange(w), np.arange(ch), indexing="ij")
    return (100 * rows + 10 * columns + channels).astype(np.float32)


def np_patches(image: Any, n_sections_h: int, n_sections_w: int) -> Any:
    """The reference, pixel by pixel: tokens by section row, section column, channel."""
    h, w, ch = image.shape
    patch_h, patch_w = h // n_sections_h, w // n_sections_w
    tokens = []
    for i in range(n_sections_h):
        for j in range(n_sections_w):
            for c in range(ch):
                tokens.append(
                    [image[i * patch_h + r, j * patch_w + s, c] for r in range(patch_h) for s in range(patch_w)]
                )
    return np.array(tokens)


def np_mlp(weights: Any, x: Any) -> Any:
    w = jax.tree.map(lambda a: np.asarray(a, np.float64), weights)
    hidden = np.maximum(x @ w["layer_0"]["w"] + w["layer_0"]["b"], 0)
    return hidden @ w["layer_1"]["w"] + w["layer_1"]["b"]


def test_seed_vit_shapes() -> None:
    patches = Patches.make(Patches(12, n_sections_w=7, n_sections_h=7, w=28, h=28, ch=1, mlp_n_hidden=(12,)))
    weights = jm.abstract_weights(patches.weight_params)
    assert jax.tree.map(jnp.shape, weights) == {
        "mlp": {"layer_0": {"b": (12,), "w": (16, 12)}, "layer_1": {"b": (12,), "w": (12, 12)}}
    }
    image = jax.ShapeDtypeStruct((28, 28, 1), jnp.float32)
    outputs = jax.eval_shape(patches.get_fixed_process(PATCHES_PORTS), weights, {jm.Input: image})
    assert jax.tree.map(jnp.shape, outputs) == {jm.Output: (49, 12), "patches": (49, 16)}


def test_each_pixel_lands_in_its_token_and_the_tokens_are_its_mlp(getkey: Any) -> None:
    patches = Patches.make(SMALL)
    weights = jm.make_weights(getkey(), patches.weight_params)
    image = pixel_image(4, 6, 2)
    outputs = jax.jit(patches.get_fixed_process(PATCHES_PORTS))(weights, {jm.Input: jnp.asarray(image)})
    expected = np_patches(image, 2, 3)
    np.testing.assert_array_equal(outputs["patches"], expected)
    # Spelled out: token 7 is section row 1, column 0, channel 1; its pixels rows 2-3, columns 0-1.
    np.testing.assert_array_equal(outputs["patches"][7], [201, 211, 301, 311])
    np.testing.assert_allclose(outputs[jm.Output], np_mlp(weights["mlp"], expected), rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(jax.jit(patches.fixed_pipeline)(weights, jnp.asarray(image)), outputs[jm.Output])


def test_contracts_jit_and_vmap(getkey: Any) -> None:
    assert_contracts(Patches.make(SMALL), getkey())


def test_dropout_makes_both_processes_random(getkey: Any) -> None:
    patches = Patches.make(Patches(3, 3, 2, 6, 4, 2, (64,), dropout_keep_rate=0.5))
    assert patches.fixed == frozenset()
    weights = jm.make_weights(getkey(), patches.weight_params)
    image = jnp.asarray(pixel_image(4, 6, 2)) / 100
    process = jax.jit(patches.get_process(PATCHES_PORTS))
    evaluation = process(weights, {jm.Input: image}, None)
    expected = np_mlp(weights["mlp"], np_patches(np.asarray(image, np.float64), 2, 3))
    np.testing.assert_allclose(evaluation[jm.Output], expected, rtol=1e-4, atol=1e-5)
    training = process(weights, {jm.Input: image}, getkey())
    np.testing.assert_array_equal(training["patches"], evaluation["patches"])
    assert not np.allclose(training[jm.Output], evaluation[jm.Output])
    with pytest.raises(jm.JaxMakeError, match="uses randomness, so it has no fixed form"):
        patches.get_fixed_process(PATCHES_PORTS)


def test_gradients_reach_every_weight(getkey: Any) -> None:
    patches = Patches.make(SMALL)
    weights = jm.make_weights(getkey(), patches.weight_params)
    image = jr.normal(getkey(), (4, 6, 2))
    assert_gradients(jax.jit(lambda w: jnp.sum(jnp.sin(patches.fixed_pipeline(w, image)))), weights)


def test_checked_call_names_the_image_dims() -> None:
    with jm.scope("patching"):
        patches = Patches.make(SMALL)
    weights = jm.abstract_weights(patches.weight_params)
    header = r"^ShapeError in patching, process \(Input\) -> \(Output\), input port 'Input'\n"
    with pytest.raises(jm.ShapeError, match=header + r"(?s:.*)bound:    .*h=4 \(Patches.h\), w=6 \(Patches.w\)"):
        jax.eval_shape(patches.checked(), weights, {jm.Input: jax.ShapeDtypeStruct((6, 4, 2), jnp.float32)}, None)


def test_sections_must_divide_the_image() -> None:
    with pytest.raises(jm.ConfigError, match=r"^`Patches.h`=28 must be divisible by `n_sections_h`=5$"):
        Patches(12, n_sections_w=7, n_sections_h=5, w=28, h=28, ch=1, mlp_n_hidden=(12,))
    with pytest.raises(jm.ConfigError, match=r"^`Patches.w`=28 must be divisible by `n_sections_w`=3$"):
        Patches(12, n_sections_w=3, n_sections_h=7, w=28, h=28, ch=1, mlp_n_hidden=(12,))


@st.composite
def patches_configs(draw: st.DrawFn) -> Patches:
    n_h, n_w, patch_h, patch_w = (draw(st.integers(1, 3)) for _ in range(4))
    return draw(configs(Patches, n_sections_h=n_h, n_sections_w=n_w, h=n_h * patch_h, w=n_w * patch_w))


@given(patches_configs())
def test_drawn_configs_make_their_weight_spec(config: Patches) -> None:
    patches = Patches.make(config)
    patch_size = (config.h // config.n_sections_h) * (config.w // config.n_sections_w)
    widths = (patch_size, *config.mlp_n_hidden, config.dim_out)
    assert jax.tree.map(jnp.shape, jm.abstract_weights(patches.weight_params)) == {
        "mlp": {f"layer_{i}": {"w": (n_in, n_out), "b": (n_out,)} for i, (n_in, n_out) in enumerate(pairwise(widths))}
    }
    assert patches.dims["n_patches"] == config.n_sections_h * config.n_sections_w * config.ch
    assert patches.fixed == (frozenset(patches.processes) if config.dropout_keep_rate == 1.0 else frozenset())
