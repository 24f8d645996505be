"""`Conv`, `MaxPool`, `AvgPool`, `GlobalAvgPool` against `jax.lax` and NumPy loop references."""

import itertools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxtyping import Array, Float

import jaxmake as jm
from jaxmake import components as jmc
from jaxmake.testing import assert_gradients

CONVS = {
    "same": jmc.Conv(6, 5, 3, 4),
    "stride2_valid": jmc.Conv(7, 6, 2, 3, kernel=(3, 2), stride=(2, 2), padding="valid"),
    "dilation2_same_stride": jmc.Conv(6, 7, 2, 3, stride=(2, 1), dilation=(2, 1)),
    "groups2_explicit": jmc.Conv(5, 6, 4, 6, stride=(1, 2), padding=((1, 0), (2, 1)), groups=2),
    "dilated_grouped_no_bias": jmc.Conv(
        7, 7, 4, 2, stride=(2, 2), padding=((0, 1), (1, 1)), dilation=(2, 2), groups=2, use_bias=False
    ),
}
"""Stride 2, dilation 2, groups 2, and each kind of padding; tiny, so that the NumPy loops are quick."""


def np_pads(
    sizes: tuple[int, int], window: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int], padding: Any
) -> list[tuple[int, int]]:
    """The `(low, high)` pads of each axis; "same" from its definition: `ceil(size / stride)`
    outputs, the missing pixels split evenly, the odd one at the end."""
    if padding == "valid":
        return [(0, 0), (0, 0)]
    if padding != "same":
        return [tuple(pair) for pair in padding]
    pads = []
    for size, k, s, d in zip(sizes, window, stride, dilation):
        total = max((math.ceil(size / s) - 1) * s + d * (k - 1) + 1 - size, 0)
        pads.append((total // 2, total - total // 2))
    return pads


def np_conv(x: Any, w: Any, b: Any, config: jmc.Conv) -> Any:
    """The reference: every output pixel and group a sum over its (dilated) window, in float64."""
    kh, kw, group_in, n_out = w.shape
    group_out = n_out // config.groups
    pads = np_pads(x.shape[:2], config.kernel, config.stride, config.dilation, config.padding)
    padded = np.pad(x, [*pads, (0, 0)])
    (sh, sw), (dh, dw) = config.stride, config.dilation
    h_out = (padded.shape[0] - dh * (kh - 1) - 1) // sh + 1
    w_out = (padded.shape[1] - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((h_out, w_out, n_out))
    for i, j, g in itertools.product(range(h_out), range(w_out), range(config.groups)):
        rows, cols = i * sh + dh * np.arange(kh), j * sw + dw * np.arange(kw)
        patch = padded[np.ix_(rows, cols, np.arange(g * group_in, (g + 1) * group_in))]
        taps = w[..., g * group_out : (g + 1) * group_out]
        out[i, j, g * group_out : (g + 1) * group_out] = np.einsum("hwc,hwco->o", patch, taps)
    return out + (0 if b is None else b)


def _np(x: Any) -> Any:
    return np.asarray(x, np.float64)


def _normal(seed: int, shape: tuple[int, ...]) -> jax.Array:
    """Standard normal float32 values drawn by NumPy: no XLA compilation per draw, which keeps the tests fast."""
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _random_weights(component: jm.Component, seed: int) -> jm.Weights:
    """Weights of the spec's shapes, all random (a non-zero bias too)."""
    shapes = jax.tree.map(jnp.shape, jm.abstract_weights(component.weight_params))
    return {name: _normal(seed + i, shape) for i, (name, shape) in enumerate(sorted(shapes.items()))}


@pytest.mark.parametrize("name", CONVS)
def test_conv_matches_lax_and_a_numpy_loop(name: str) -> None:
    config = CONVS[name]
    conv = jmc.Conv.make(config)
    weights = _random_weights(conv, 1)
    x = _normal(0, (config.h, config.w, config.n_in))
    y = jax.jit(conv.fixed_pipeline)(weights, x)
    assert y.shape == (conv.dims["h_out"], conv.dims["w_out"], config.n_out)

    @jax.jit
    def direct(weights: jm.Weights, x: jax.Array) -> jax.Array:
        lax_padding = config.padding.upper() if isinstance(config.padding, str) else config.padding
        y = jax.lax.conv_general_dilated(
            x[None],
            weights["w"],
            config.stride,
            lax_padding,
            rhs_dilation=config.dilation,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=config.groups,
        )[0]
        return y + weights["b"] if config.use_bias else y

    np.testing.assert_allclose(y, direct(weights, x), rtol=1e-6, atol=1e-6)
    reference = np_conv(_np(x), _np(weights["w"]), _np(weights["b"]) if config.use_bias else None, config)
    np.testing.assert_allclose(y, reference, rtol=1e-5, atol=1e-5)


def test_conv_weights_shapes_axes_and_init() -> None:
    conv = jmc.Conv.make(jmc.Conv(8, 8, 6, 4, kernel=(3, 2), groups=2, init_scale=0.5))
    assert jax.tree.map(jnp.shape, jm.abstract_weights(conv.weight_params)) == {"b": (4,), "w": (3, 2, 3, 4)}
    assert {name: spec.axes for name, spec in conv.weight_params.items() if isinstance(spec, jm.WeightParams)} == {
        "w": (None, None, "conv_in", "conv_out"),
        "b": ("conv_out",),
    }
    big = jmc.Conv.make(jmc.Conv(4, 4, 32, 64, kernel=(3, 3), use_bias=False))
    assert set(big.weight_params) == {"w"}
    w = jm.make_weights(jax.random.key(0), big.weight_params)["w"]
    # kaiming over the HWIO fan-in: kernel height * width * input channels
    np.testing.assert_allclose(float(jnp.std(w)), math.sqrt(2 / (3 * 3 * 32)), rtol=0.03)


def test_conv_casts_to_its_compute_dtype_and_learns() -> None:
    conv = jmc.Conv.make(jmc.Conv(5, 5, 2, 3, stride=(2, 2), dtype="bfloat16", param_dtype="float32"))
    weights = jm.abstract_weights(conv.weight_params)
    assert weights["w"].dtype == jnp.float32
    y = jax.eval_shape(conv.fixed_pipeline, weights, jax.ShapeDtypeStruct((5, 5, 2), jnp.float32))
    assert (y.shape, y.dtype) == ((3, 3, 3), jnp.bfloat16)
    conv = jmc.Conv.make(jmc.Conv(5, 5, 2, 3, dilation=(2, 1)))
    x = _normal(0, (5, 5, 2))
    assert_gradients(jax.jit(lambda w: jnp.sum(jnp.sin(conv.fixed_pipeline(w, x)))), _random_weights(conv, 1))


def test_conv_output_size_counts_window_positions() -> None:
    for size, kernel, stride, dilation, low, high in itertools.product(
        range(1, 7), range(1, 4), range(1, 4), range(1, 3), range(3), range(2)
    ):
        span = dilation * (kernel - 1) + 1
        positions = sum(1 for start in range(0, size + low + high, stride) if start + span <= size + low + high)
        got = jmc.conv_output_size(size, kernel, stride, (low, high), dilation)
        assert max(got, 0) == positions, (size, kernel, stride, dilation, low, high)
        if (low, high) == (0, 0):
            assert jmc.conv_output_size(size, kernel, stride, "valid", dilation) == got
        assert jmc.conv_output_size(size, kernel, stride, "same", dilation) == -(-size // stride)
    with pytest.raises(jm.ArgumentError, match=r"^conv_output_size: `stride` must be >= 1, got 0$"):
        jmc.conv_output_size(5, 3, 0)
    with pytest.raises(jm.ArgumentError, match=r"`padding` must be 'same', 'valid' or \(low, high\) pads >= 0"):
        jmc.conv_output_size(5, 3, 1, (0, -1))


def np_pool(x: Any, config: jmc.MaxPool | jmc.AvgPool, reduce: str) -> Any:
    """The reference: each window's max (padding -inf) or its sum over the full window size
    (padding 0: the padded pixels count, as flax's `count_include_pad=True`)."""
    stride = config.window if config.stride is None else config.stride
    pads = np_pads(x.shape[:2], config.window, stride, (1, 1), config.padding)
    padded = np.pad(x, [*pads, (0, 0)], constant_values=-np.inf if reduce == "max" else 0.0)
    (kh, kw), (sh, sw) = config.window, stride
    h_out, w_out = (padded.shape[0] - kh) // sh + 1, (padded.shape[1] - kw) // sw + 1
    out = np.zeros((h_out, w_out, x.shape[2]))
    for i, j in itertools.product(range(h_out), range(w_out)):
        window = padded[i * sh : i * sh + kh, j * sw : j * sw + kw]
        out[i, j] = window.max(axis=(0, 1)) if reduce == "max" else window.sum(axis=(0, 1)) / (kh * kw)
    return out


POOLS: dict[str, dict[str, Any]] = {
    "valid": {"h": 6, "w": 5, "ch": 2},
    "same_window_3x2": {"h": 5, "w": 5, "ch": 2, "window": (3, 2), "padding": "same"},
    "overlapping_valid": {"h": 5, "w": 6, "ch": 3, "window": (3, 3), "stride": (1, 2)},
    "same_stride_2x1": {"h": 4, "w": 3, "ch": 1, "window": (2, 3), "stride": (2, 1), "padding": "same"},
}


@pytest.mark.parametrize("name", POOLS)
@pytest.mark.parametrize("cls", [jmc.MaxPool, jmc.AvgPool], ids=lambda c: c.__name__)
def test_pools_match_a_numpy_loop(cls: type[jmc.MaxPool | jmc.AvgPool], name: str) -> None:
    config = cls(**POOLS[name])
    pool = cls.make(config)
    assert pool.weight_params == {}
    x = _normal(0, (config.h, config.w, config.ch))
    y = pool.fixed_pipeline({}, x)
    assert y.shape == (pool.dims["h_out"], pool.dims["w_out"], config.ch)
    reference = np_pool(_np(x), config, "max" if cls is jmc.MaxPool else "avg")
    np.testing.assert_allclose(y, reference, rtol=1e-6, atol=1e-6)


def test_pools_keep_the_input_dtype() -> None:
    x = _normal(0, (4, 4, 2)).astype(jnp.bfloat16)
    for cls in (jmc.MaxPool, jmc.AvgPool):
        y = cls.make(cls(4, 4, 2)).fixed_pipeline({}, x)
        assert y.dtype == jnp.bfloat16
        reference = np_pool(_np(x), cls(4, 4, 2), "max" if cls is jmc.MaxPool else "avg")
        np.testing.assert_allclose(_np(y), reference, rtol=1e-2)
    assert jmc.GlobalAvgPool.make(jmc.GlobalAvgPool(2)).fixed_pipeline({}, x).dtype == jnp.bfloat16


def test_global_avg_pool_is_the_mean_over_any_image_size() -> None:
    pool = jmc.GlobalAvgPool.make(jmc.GlobalAvgPool(3))
    assert pool.weight_params == {} and dict(pool.dims) == {"ch": 3}
    checked = jax.jit(pool.checked())
    for h, w in ((4, 5), (1, 7)):
        x = _normal(h, (h, w, 3))
        y = checked({}, {jm.Input: x}, None)[jm.Output]
        np.testing.assert_allclose(y, _np(x).reshape(h * w, 3).mean(axis=0), rtol=1e-6, atol=1e-6)


def test_a_kernel_larger_than_the_image_is_a_config_error() -> None:
    with pytest.raises(
        jm.ConfigError,
        match=r"^`Conv.kernel`=\(7, 3\) item 0: the window spans 7 pixels, more than the padded image's 5 "
        r"\(`h`=5 plus 0 pads\): it must fit at least once$",
    ):
        jmc.Conv(5, 5, 2, 4, kernel=(7, 3), padding="valid")
    with pytest.raises(
        jm.ConfigError,
        match=r"^`Conv.kernel`=\(3, 3\) item 1: the window spans 7 pixels \(dilated by 3\), more than the padded "
        r"image's 6 \(`w`=5 plus 1 pad\): it must fit at least once$",
    ):
        jmc.Conv(5, 5, 2, 4, dilation=(1, 3), padding=((0, 0), (1, 0)))
    jmc.Conv(5, 5, 2, 4, kernel=(7, 7))  # "same" padding always fits
    with pytest.raises(
        jm.ConfigError,
        match=r"^`MaxPool.window`=\(4, 2\) item 0: the window spans 4 pixels, more than the padded image's 3 "
        r"\(`h`=3 plus 0 pads\): it must fit at least once$",
    ):
        jmc.MaxPool(3, 3, 1, window=(4, 2))


def test_cross_field_and_union_rules_are_config_errors() -> None:
    with pytest.raises(jm.ConfigError, match=r"^`Conv.groups`=2 must divide `n_in`=3 and `n_out`=4$"):
        jmc.Conv(5, 5, 3, 4, groups=2)
    with pytest.raises(
        jm.ConfigError,
        match=r"^`Conv.padding`=\(\(0, -1\), \(0, 0\)\) item 0: item 1: must be an int in \[0, \d+\], got -1$",
    ):
        jmc.Conv(5, 5, 2, 4, padding=((0, -1), (0, 0)))
    with pytest.raises(jm.ConfigError, match=r"^`Conv.padding`='full' must be of type .*Literal\['same', 'valid'\]"):
        jmc.Conv(5, 5, 2, 4, padding="full")  # type: ignore[arg-type]
    with pytest.raises(
        jm.ConfigError, match=r"^`AvgPool.stride`=\(0, 2\) item 0: must be an int in \[1, \d+\], got 0$"
    ):
        jmc.AvgPool(4, 4, 1, stride=(0, 2))


def test_a_parent_feeding_a_conv_the_wrong_channels_fails_at_make_time() -> None:
    def net(weights: jm.Weights, x: Float[Array, "h w n_in"]) -> Float[Array, "h w n_out"]:
        return c.conv2(weights, c.conv1(weights, x))

    with jm.scope("Net"):
        c = jm.make_children(conv1=jmc.Conv(6, 6, 3, 8), conv2=jmc.Conv(6, 6, 4, 8))
        with pytest.raises(jm.ShapeError) as raised:
            jm.Component.from_pipeline(c.weight_params, net, dims={"h": 6, "w": 6, "n_in": 3, "n_out": 8})
    assert str(raised.value).splitlines() == [
        "ShapeError in Net.conv2, process (Input) -> (Output) (called by `Net` while its contract was checked),"
        " input port 'Input'",
        '  expected: Float[Array, "h w n_in"]',
        "  got:      f32[6,6,8]",
        "  reason:   the size of dimension n_in is 8 which does not equal the existing value of 4",
        "  bound:    h=6 (Conv.h), n_in=4 (Conv.n_in), n_out=8 (Conv.n_out), w=6 (Conv.w),"
        " h_out=6 (component dims), w_out=6 (component dims)",
    ]


def test_a_wrong_output_size_in_a_parent_contract_fails_at_make_time() -> None:
    def down(weights: jm.Weights, x: Float[Array, "h w n_in"]) -> Float[Array, "h_out w_out n_out"]:
        return c.conv(weights, x)

    with jm.scope("Down"):
        c = jm.make_children(conv=jmc.Conv(6, 6, 3, 8, stride=(2, 2), padding="valid"))
        with pytest.raises(jm.ShapeError) as raised:  # a 3x3 kernel at stride 2 leaves 2 x 2 pixels of 6 x 6
            jm.Component.from_pipeline(
                c.weight_params, down, dims={"h": 6, "w": 6, "n_in": 3, "n_out": 8, "h_out": 3, "w_out": 3}
            )
    message = str(raised.value)
    assert message.startswith("ShapeError in Down, process (Input) -> (Output), output port 'Output'\n"), message
    assert '  expected: Float[Array, "h_out w_out n_out"]\n  got:      f32[2,2,8]\n' in message, message
    assert "h_out=3 (component dims)" in message and "w_out=3 (component dims)" in message, message


def test_conv_under_vmap_is_a_loop_over_examples() -> None:
    config = CONVS["groups2_explicit"]
    conv = jmc.Conv.make(config)
    weights, xs = _random_weights(conv, 1), _normal(0, (3, config.h, config.w, config.n_in))
    batched = jax.jit(jax.vmap(conv.fixed_pipeline, in_axes=(None, 0)))(weights, xs)
    one = jax.jit(conv.fixed_pipeline)
    for x, y in zip(xs, batched):
        np.testing.assert_allclose(y, one(weights, x), rtol=1e-6, atol=1e-6)


def test_lists_from_a_config_file_are_stored_as_tuples() -> None:
    conv = jmc.Conv(5, 5, 2, 4, padding=[[1, 0], [0, 1]])  # type: ignore[arg-type]
    assert conv.padding == ((1, 0), (0, 1))
    assert jmc.MaxPool(4, 4, 1, stride=[1, 2]).stride == (1, 2)  # type: ignore[arg-type]
