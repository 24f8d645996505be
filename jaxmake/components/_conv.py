"""2-D convolution: `Conv`, and `conv_output_size`, the output size of a sliding window."""

from typing import Literal, Protocol, TypeAlias, runtime_checkable

import jax
from jaxtyping import Array, Float

import jaxmake as jm
from jaxmake.components._fields import MAX_SIZE, InitScale, Size
from jaxmake.components._precision import Policy, PrecisionConfigs, PrecisionFields

ConvPadding: TypeAlias = Literal["same", "valid"] | tuple[tuple[int, int], tuple[int, int]]
"""A `Conv`'s padding: `"same"` (the output has `ceil(size / stride)` pixels per axis; the
zeros split as evenly as possible, the odd one at the end, as `jax.lax` and flax do),
`"valid"` (no padding), or explicit zero pads `((top, bottom), (left, right))`, each in
[0, `MAX_SIZE`] (checked by `Conv.validate`)."""
ConvAxes: TypeAlias = tuple[str | None, str | None]
"""The logical axis names of a `Conv` kernel's `(input channels, output channels)` dims; its
spatial dims are never sharded (`None`), and its `b` takes the output channels' name."""

_CONV_AXES: ConvAxes = ("conv_in", "conv_out")
"""Names that no `jaxmake.sharding.RULES` preset maps: the kernels stay replicated unless a
user's rules shard them (`{"conv_out": "model"}` splits the output channels)."""
_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")


@runtime_checkable
class ConvConfigs(PrecisionConfigs, Protocol):
    @property
    def h(self) -> int: ...
    @property
    def w(self) -> int: ...
    @property
    def n_in(self) -> int: ...
    @property
    def n_out(self) -> int: ...
    @property
    def kernel(self) -> tuple[int, int]: ...
    @property
    def stride(self) -> tuple[int, int]: ...
    @property
    def padding(self) -> ConvPadding: ...
    @property
    def dilation(self) -> tuple[int, int]: ...
    @property
    def groups(self) -> int: ...
    @property
    def use_bias(self) -> bool: ...
    @property
    def init_scale(self) -> float: ...
    @property
    def axes(self) -> ConvAxes: ...


class Conv(PrecisionFields):
    """A 2-D convolution (cross-correlation, as in every deep-learning library) plus a bias.

    Per example, channels last; batch with `jax.vmap`. Pipeline (fixed): `[h, w, n_in] ->
    [h_out, w_out, n_out]`, computed by `jax.lax.conv_general_dilated` and returned in
    `dtype` (any float input is cast), at the policy's `matmul_precision`. Per axis,
    `h_out = conv_output_size(h, kernel[0], stride[0], padding, dilation[0])` and likewise
    `w_out` from `w` and item 1: `floor((h + pads - dilation * (kernel - 1) - 1) / stride) + 1`,
    or `ceil(h / stride)` with `"same"` padding. A jaxtyping annotation cannot compute a dim
    from others, so the image size is a config field and `make` computes `h_out` and `w_out`
    and binds them with the other dims: the contract fixes the output shape exactly.

    Weights, in `param_dtype`: `w: [kernel[0], kernel[1], n_in // groups, n_out]` (HWIO;
    kaiming with `fan_in = kernel[0] * kernel[1] * n_in // groups`, times `init_scale`) with
    the logical axes `(None, None, *axes)`, and, with `use_bias`, `b: [n_out]` (zeros) with
    the logical axis `axes[1]`.

    Args:
        h: the input height in pixels.
        w: the input width in pixels.
        n_in: input channels.
        n_out: output channels.
        kernel: the window's `(height, width)`.
        stride: the step between windows, `(down, across)`.
        padding: `"same"`, `"valid"` or `((top, bottom), (left, right))` (see `ConvPadding`).
        dilation: the kernel dilation `(down, across)` ("atrous"): a kernel of `k` taps
            spans `dilation * (k - 1) + 1` pixels.
        groups: splits the channels into `groups` independent convolutions (jax's
            `feature_group_count`; `groups == n_in` is a depthwise convolution); divides
            `n_in` and `n_out`.
        use_bias: whether to add `b`.
        init_scale: scales the initial `w`, in (0, 100].
        axes: the logical axis names of `w`'s channel dims, `(input, output)` (see
            `jaxmake.sharding`). The default `("conv_in", "conv_out")` is in no `RULES`
            preset, so a convolution stays replicated under all of them; rules that name
            `conv_out` shard its output channels.
        dtype, param_dtype, matmul_precision: the precision policy (see `PrecisionFields`).

    Raises:
        ConfigError: `padding` has a negative pad; `groups` does not divide `n_in` and
            `n_out`; the dilated kernel is larger than the padded image (no output pixel).

    Example:
        >>> conv = Conv.make(Conv(h=8, w=8, n_in=3, n_out=16, stride=(2, 2)))
        >>> weights = jm.make_weights(jax.random.key(0), conv.weight_params)
        >>> jax.tree.map(jnp.shape, weights)
        {'b': (16,), 'w': (3, 3, 3, 16)}
        >>> conv.dims["h_out"], conv.dims["w_out"]
        (4, 4)
        >>> conv.fixed_pipeline(weights, jnp.ones((8, 8, 3))).shape
        (4, 4, 16)
    """

    h: Size
    w: Size
    n_in: Size
    n_out: Size
    kernel: tuple[Size, Size] = (3, 3)
    stride: tuple[Size, Size] = (1, 1)
    padding: ConvPadding = "same"
    dilation: tuple[Size, Size] = (1, 1)
    groups: Size = 1
    use_bias: bool = True
    init_scale: InitScale = 1.0
    axes: ConvAxes = _CONV_AXES

    def __post_init__(self) -> None:
        given: object = self.padding
        if isinstance(given, list):  # from JSON or TOML; `Config` turns lists into tuples only for tuple fields
            pads = tuple(tuple(pair) if isinstance(pair, list) else pair for pair in given)
            object.__setattr__(self, "padding", pads)
        super().__post_init__()

    def validate(self) -> None:
        if not isinstance(self.padding, str):
            _validate_pads(self, "padding", self.padding)
        if self.n_in % self.groups or self.n_out % self.groups:
            raise self.error("groups", f"must divide `n_in`={self.n_in} and `n_out`={self.n_out}")
        check_window_fits(self, "kernel", (self.h, self.w), self.kernel, self.stride, self.padding, self.dilation)

    @classmethod
    def make(cls, config: ConvConfigs) -> jm.Component:
        policy = Policy(config)
        padding = config.padding.upper() if isinstance(config.padding, str) else config.padding
        h_out, w_out = output_sizes(config.h, config.w, config.kernel, config.stride, config.padding, config.dilation)

        def convolve(weights: dict[str, Array], x: Float[Array, "h w n_in"]) -> Float[Array, "h_out w_out n_out"]:
            y = jax.lax.conv_general_dilated(
                policy.cast(x)[None],
                policy.cast(weights["w"]),
                window_strides=config.stride,
                padding=padding,
                rhs_dilation=config.dilation,
                dimension_numbers=_DIMENSION_NUMBERS,
                feature_group_count=config.groups,
                precision=policy.precision,
            )[0]
            return y + policy.cast(weights["b"]) if config.use_bias else y

        kernel_shape = (*config.kernel, config.n_in // config.groups, config.n_out)
        weight_params = {"w": policy.weight(kernel_shape, scale=config.init_scale, axes=(None, None, *config.axes))}
        if config.use_bias:
            weight_params["b"] = policy.weight((config.n_out,), init="zeros", axes=config.axes[1:])
        ports = policy.pipeline_ports(Float[Array, "h w n_in"], "h_out w_out n_out")
        return jm.Component.from_pipeline(
            weight_params, convolve, ports, dims=[config, {"h_out": h_out, "w_out": w_out}]
        )


def conv_output_size(
    size: int,
    kernel: int,
    stride: int = 1,
    padding: Literal["same", "valid"] | tuple[int, int] = "valid",
    dilation: int = 1,
) -> int:
    """The number of window positions along one axis: a convolution's or a pooling's output size.

    `"same"`: `ceil(size / stride)`. Otherwise, with `pads = low + high` (`0` for
    `"valid"`): `floor((size + pads - dilation * (kernel - 1) - 1) / stride) + 1`, which
    is `0` or less when the dilated kernel spans more than the padded input.

    Args:
        size: the input size along the axis, >= 1.
        kernel: the window's taps along the axis, >= 1.
        stride: the step between windows, >= 1.
        padding: `"same"`, `"valid"`, or the `(low, high)` pads of this axis, each >= 0.
        dilation: the spacing of the taps, >= 1.

    Raises:
        ArgumentError: an argument is out of its range.

    Example:
        >>> conv_output_size(28, 3, stride=2, padding="same"), conv_output_size(28, 3, 2, "valid")
        (14, 13)
        >>> conv_output_size(5, 3, padding=(1, 1), dilation=2)
        3
    """
    for name, value in (("size", size), ("kernel", kernel), ("stride", stride), ("dilation", dilation)):
        if value < 1:
            raise jm.ArgumentError(f"conv_output_size: `{name}` must be >= 1, got {value}")
    if padding == "same":
        return -(-size // stride)
    if padding == "valid":
        pads = 0
    elif isinstance(padding, tuple) and min(padding) >= 0:
        pads = padding[0] + padding[1]
    else:
        raise jm.ArgumentError(
            f"conv_output_size: `padding` must be 'same', 'valid' or (low, high) pads >= 0, got {padding!r}"
        )
    return (size + pads - dilation * (kernel - 1) - 1) // stride + 1


def output_sizes(
    h: int,
    w: int,
    window: tuple[int, int],
    stride: tuple[int, int],
    padding: ConvPadding,
    dilation: tuple[int, int] = (1, 1),
) -> tuple[int, int]:
    """`(h_out, w_out)`: `conv_output_size` along each axis of an `[h, w]` image."""
    return conv_output_size(h, window[0], stride[0], _axis_padding(padding, 0), dilation[0]), conv_output_size(
        w, window[1], stride[1], _axis_padding(padding, 1), dilation[1]
    )


def _axis_padding(padding: ConvPadding, axis: int) -> Literal["same", "valid"] | tuple[int, int]:
    return padding if isinstance(padding, str) else padding[axis]


def _validate_pads(config: jm.Config, field: str, pads: tuple[tuple[int, int], tuple[int, int]]) -> None:
    """Each pad an int in [0, `MAX_SIZE`] (the checks of `Config` skip the items of a union's members)."""
    for axis, pair in enumerate(pads):
        for side, pad in enumerate(pair):
            if isinstance(pad, bool) or not 0 <= pad <= MAX_SIZE:
                raise config.error(field, f"item {axis}: item {side}: must be an int in [0, {MAX_SIZE}], got {pad!r}")


def check_window_fits(
    config: jm.Config,
    field: str,
    sizes: tuple[int, int],
    window: tuple[int, int],
    stride: tuple[int, int],
    padding: ConvPadding,
    dilation: tuple[int, int] = (1, 1),
) -> None:
    """Raise `ConfigError` on `field` unless the (dilated) window fits the padded image of `sizes = (h, w)`.

    Used by the `validate` of `Conv` and of the pools: `field` names the window's field.
    """
    out = output_sizes(*sizes, window, stride, padding, dilation)
    for axis, side in enumerate(("h", "w")):
        if out[axis] >= 1:
            continue
        span = dilation[axis] * (window[axis] - 1) + 1
        pads = 0 if isinstance(padding, str) else sum(padding[axis])
        dilated = f" (dilated by {dilation[axis]})" if dilation[axis] > 1 else ""
        raise config.error(
            field,
            f"item {axis}: the window spans {span} pixels{dilated}, more than the padded image's"
            f" {sizes[axis] + pads} (`{side}`={sizes[axis]} plus {pads} pad{'' if pads == 1 else 's'}):"
            f" it must fit at least once",
        )
