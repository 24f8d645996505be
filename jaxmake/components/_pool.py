"""2-D pooling: `MaxPool`, `AvgPool` (sliding windows) and `GlobalAvgPool` (the whole image)."""

from collections.abc import Callable
from typing import Literal, Protocol, TypeAlias, runtime_checkable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

import jaxmake as jm
from jaxmake.components._conv import check_window_fits, output_sizes
from jaxmake.components._fields import MAX_SIZE, Size

PoolPadding: TypeAlias = Literal["same", "valid"]
"""A pooling's padding: `"valid"` (windows inside the image) or `"same"` (`ceil(size /
stride)` windows per axis, the image padded as evenly as possible, the odd pixel at the end)."""


@runtime_checkable
class PoolConfigs(Protocol):
    @property
    def h(self) -> int: ...
    @property
    def w(self) -> int: ...
    @property
    def ch(self) -> int: ...
    @property
    def window(self) -> tuple[int, int]: ...
    @property
    def stride(self) -> tuple[int, int] | None: ...
    @property
    def padding(self) -> PoolPadding: ...


@runtime_checkable
class GlobalAvgPoolConfigs(Protocol):
    @property
    def ch(self) -> int: ...


class _PoolFields(jm.Config):
    """The fields of `MaxPool` and `AvgPool` (documented there), and their rules."""

    h: Size
    w: Size
    ch: Size
    window: tuple[Size, Size] = (2, 2)
    stride: tuple[Size, Size] | None = None
    padding: PoolPadding = "valid"

    def __post_init__(self) -> None:
        given: object = self.stride
        if isinstance(given, list):  # from JSON or TOML; `Config` turns lists into tuples only for tuple fields
            object.__setattr__(self, "stride", tuple(given))
        super().__post_init__()

    def validate(self) -> None:
        if self.stride is not None:  # `Config` checks the type of a union, not its members' bounds
            for axis, step in enumerate(self.stride):
                if isinstance(step, bool) or not 1 <= step <= MAX_SIZE:
                    raise self.error("stride", f"item {axis}: must be an int in [1, {MAX_SIZE}], got {step!r}")
        check_window_fits(self, "window", (self.h, self.w), self.window, _stride(self), self.padding)


class MaxPool(_PoolFields):
    """The maximum of each window, channel by channel.

    Per example, channels last; batch with `jax.vmap`. Pipeline (fixed): `[h, w, ch] ->
    [h_out, w_out, ch]` in the input's dtype, by `jax.lax.reduce_window`. Per axis
    `h_out = conv_output_size(h, window[0], stride[0], padding)` (likewise `w_out`); `make`
    computes them and binds them, as `Conv` does. Padded pixels are `-inf`, so they never win.
    No weights, and no precision policy: a maximum is exact in any dtype.

    Args:
        h: the input height in pixels.
        w: the input width in pixels.
        ch: the number of channels.
        window: the window's `(height, width)`.
        stride: the step between windows, `(down, across)`; `None` (the default) is
            `window`, non-overlapping windows.
        padding: `"valid"` or `"same"` (see `PoolPadding`).

    Raises:
        ConfigError: a `stride` item is below 1, or the window is larger than the (padded) image.

    Example:
        >>> pool = MaxPool.make(MaxPool(h=4, w=4, ch=1))
        >>> pool.weight_params
        {}
        >>> pool.fixed_pipeline({}, jnp.arange(16.0).reshape(4, 4, 1))[..., 0]
        Array([[ 5.,  7.],
               [13., 15.]], dtype=float32)
    """

    @classmethod
    def make(cls, config: PoolConfigs) -> jm.Component:
        def window_max(x: Array, window: tuple[int, ...], strides: tuple[int, ...], padding: str) -> Array:
            result: Array = jax.lax.reduce_window(
                x, jnp.array(-jnp.inf, x.dtype), jax.lax.max, window, strides, padding
            )
            return result

        return _windowed(config, window_max)


class AvgPool(_PoolFields):
    """The mean of each window, channel by channel.

    Per example, channels last; batch with `jax.vmap`. Pipeline (fixed): `[h, w, ch] ->
    [h_out, w_out, ch]`, sizes as for `MaxPool`: the window sums, by `jax.lax.reduce_window`
    in float32, divided by `window[0] * window[1]` and returned in the input's dtype.
    With `"same"` padding the padded zeros count in the mean, as in flax's `avg_pool`
    (`count_include_pad=True`): a window on the border is an average over the full
    window size. No weights, and no precision policy: the sums are float32 whatever the input.

    Args:
        h, w, ch, window, stride, padding: as for `MaxPool`.

    Raises:
        ConfigError: a `stride` item is below 1, or the window is larger than the (padded) image.

    Example:
        >>> pool = AvgPool.make(AvgPool(h=4, w=4, ch=1))
        >>> pool.fixed_pipeline({}, jnp.arange(16.0).reshape(4, 4, 1))[..., 0]
        Array([[ 2.5,  4.5],
               [10.5, 12.5]], dtype=float32)
    """

    @classmethod
    def make(cls, config: PoolConfigs) -> jm.Component:
        count = config.window[0] * config.window[1]

        def window_mean(x: Array, window: tuple[int, ...], strides: tuple[int, ...], padding: str) -> Array:
            zero = jnp.array(0, jnp.float32)
            total: Array = jax.lax.reduce_window(x.astype(jnp.float32), zero, jax.lax.add, window, strides, padding)
            return (total / count).astype(x.dtype)

        return _windowed(config, window_mean)


class GlobalAvgPool(jm.Config):
    """The mean of each channel over the whole image.

    Per example, channels last; batch with `jax.vmap`. Pipeline (fixed): `[h, w, ch] ->
    [ch]`, computed in float32 and returned in the input's dtype. `h` and `w` are free:
    any image size works, so only `ch` is bound (a bigger config passed to `make` binds
    nothing else, even if it has `h` and `w` fields for its input image). No weights.

    Args:
        ch: the number of channels.

    Example:
        >>> pool = GlobalAvgPool.make(GlobalAvgPool(ch=2))
        >>> pool.fixed_pipeline({}, jnp.arange(12.0).reshape(3, 2, 2))
        Array([5., 6.], dtype=float32)
    """

    ch: Size

    @classmethod
    def make(cls, config: GlobalAvgPoolConfigs) -> jm.Component:
        def global_mean(weights: jm.Weights, x: Float[Array, "h w ch"]) -> Float[Array, " ch"]:
            return x.astype(jnp.float32).mean(axis=(0, 1)).astype(x.dtype)

        return jm.Component.from_pipeline({}, global_mean, dims={"ch": config.ch})


def _stride(config: PoolConfigs) -> tuple[int, int]:
    return config.window if config.stride is None else config.stride


def _windowed(
    config: PoolConfigs, reduce: Callable[[Array, tuple[int, ...], tuple[int, ...], str], Array]
) -> jm.Component:
    """The pooling component: `reduce(x, window, strides, padding)` over each channel's windows."""
    stride = _stride(config)
    h_out, w_out = output_sizes(config.h, config.w, config.window, stride, config.padding)
    window, strides, padding = (*config.window, 1), (*stride, 1), config.padding.upper()

    def pool(weights: jm.Weights, x: Float[Array, "h w ch"]) -> Float[Array, "h_out w_out ch"]:
        return reduce(x, window, strides, padding)

    return jm.Component.from_pipeline({}, pool, dims=[config, {"h_out": h_out, "w_out": w_out}])
