"""`ResNet`: a small residual CNN with BatchNorm, and its `ResidualBlock`."""

from typing import Annotated, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
from annotated_types import Ge, Le
from jaxtyping import Array, Float, Float32

import jaxmake as jm
from jaxmake.components._batch_norm import BatchNorm, Momentum
from jaxmake.components._conv import Conv, conv_output_size
from jaxmake.components._fields import MAX_SIZE, Eps, InitScale, Size
from jaxmake.components._linear import Linear
from jaxmake.components._pool import GlobalAvgPool
from jaxmake.components._precision import Policy, PrecisionConfigs, PrecisionFields

Stride = Annotated[int, Ge(1), Le(MAX_SIZE)]
"""A convolution's step, the same along both axes."""


@runtime_checkable
class BatchNormSettings(PrecisionConfigs, Protocol):
    """The fields a model passes on to each of its `BatchNorm`s."""

    @property
    def bn_momentum(self) -> float: ...
    @property
    def bn_eps(self) -> float: ...
    @property
    def axis_name(self) -> str | None: ...


def _batch_norm(config: BatchNormSettings, n_features: int) -> BatchNorm:
    """The `BatchNorm` of `n_features` that `config`'s settings and precision policy ask for."""
    return BatchNorm(n_features, config.bn_momentum, config.bn_eps, config.axis_name, **Policy(config).fields)


@runtime_checkable
class ResidualBlockConfigs(BatchNormSettings, Protocol):
    @property
    def h(self) -> int: ...
    @property
    def w(self) -> int: ...
    @property
    def n_in(self) -> int: ...
    @property
    def n_out(self) -> int: ...
    @property
    def stride(self) -> int: ...


class ResidualBlock(PrecisionFields):
    """A basic residual block (He et al., 2016): two 3x3 convolutions with BatchNorm, plus a shortcut.

    Per example; batch with `jax.vmap(..., axis_name=axis_name)` (its BatchNorms average
    over that axis in training). Processes (fixed), as `jm.Component.from_stateful` makes
    them: training `(Input, State) -> (Output, State)` and evaluation `(Input, State) ->
    (Output)`, `[h, w, n_in] -> [h_out, w_out, n_out]` with `h_out = ceil(h / stride)`:

        y = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))

    `conv1` has the stride; the shortcut is `x` itself when the shape is kept, else a 1x1
    convolution with the stride and its own BatchNorm (`project`, `project_bn`). The
    convolutions have no bias (the BatchNorm's shift is one).

    Weights and state: `conv1`, `bn1`, `conv2`, `bn2`, and `project`, `project_bn` where
    there is a projection; the state holds the BatchNorms' running statistics under the
    same names.

    Args:
        h, w: the input's height and width in pixels.
        n_in: the input channels.
        n_out: the output channels.
        stride: the first convolution's (and the projection's) step along both axes.
        bn_momentum, bn_eps: the BatchNorms' `momentum` and `eps`.
        axis_name: the BatchNorms' batch axis name (see `BatchNorm`).
        dtype, param_dtype, matmul_precision: the precision policy (see `PrecisionFields`).
    """

    h: Size
    w: Size
    n_in: Size
    n_out: Size
    stride: Stride = 1
    bn_momentum: Momentum = 0.9
    bn_eps: Eps = 1e-5
    axis_name: str | None = "batch"

    @classmethod
    def make(cls, config: ResidualBlockConfigs) -> jm.Component:
        policy, s = Policy(config), config.stride
        h_out, w_out = (conv_output_size(size, 3, s, "same") for size in (config.h, config.w))

        def conv(h: int, w: int, n_in: int, kernel: int, stride: int) -> Conv:
            size = (kernel, kernel)
            return Conv(h, w, n_in, config.n_out, size, (stride, stride), use_bias=False, **policy.fields)

        norm = _batch_norm(config, config.n_out)
        layers: dict[str, jm.Maker] = {
            "conv1": conv(config.h, config.w, config.n_in, 3, s),
            "bn1": norm,
            "conv2": conv(h_out, w_out, config.n_out, 3, 1),
            "bn2": norm,
        }
        if s != 1 or config.n_in != config.n_out:
            layers |= {"project": conv(config.h, config.w, config.n_in, 1, s), "project_bn": norm}
        c = jm.make_children(**layers)

        def block(weights: jm.Weights, x: Array, state: jm.Weights, *, train: bool) -> tuple[Array, jm.Weights]:
            new: jm.Weights = {}
            y, new["bn1"] = c.bn1.apply(weights, c.conv1(weights, x), state, train=train)
            y, new["bn2"] = c.bn2.apply(weights, c.conv2(weights, jax.nn.relu(y)), state, train=train)
            shortcut = policy.cast(x)
            if "project" in c:
                shortcut, new["project_bn"] = c.project_bn.apply(weights, c.project(weights, x), state, train=train)
            return jax.nn.relu(y + shortcut), new

        ports = policy.pipeline_ports(Float[Array, "h w n_in"], "h_out w_out n_out")
        dims = [config, {"h_out": h_out, "w_out": w_out}]
        return jm.Component.from_stateful(
            c.weight_params, c.state_params, block, ports, dims=dims, axis_names=c.axis_names
        )


@runtime_checkable
class ResNetConfigs(BatchNormSettings, Protocol):
    @property
    def hwc(self) -> tuple[int, int, int]: ...
    @property
    def n_classes(self) -> int: ...
    @property
    def widths(self) -> tuple[int, ...]: ...
    @property
    def blocks_per_stage(self) -> int: ...
    @property
    def head_init_scale(self) -> float: ...


class ResNet(PrecisionFields):
    """A small residual CNN: a 3x3 stem, stages of `ResidualBlock`s, global average pooling, a linear head.

    Per example; batch with `jax.vmap(..., axis_name=axis_name)`. Processes (fixed), as
    `jm.Component.from_stateful` makes them: training `(Input, State) -> (Output, State)`
    (batch statistics; the new running values) and evaluation `(Input, State) ->
    (Output)` (the running values), `[h, w, ch] -> [n_classes]` class logits in float32
    (the head is computed in float32).

    The stem is a 3x3 convolution to `widths[0]` channels, BatchNorm and relu. Stage `i`
    holds `blocks_per_stage` blocks of `widths[i]` channels; every stage but the first
    halves the image in its first block (stride 2, `ceil(size / 2)`). The default suits
    8x8 digits: 8x8x32, then 4x4x64, about 0.2M weights; a larger image takes more stages.

    Weights and state: `stem`, `stem_bn`, `stage_{i}_block_{j}` and `head` (`Linear`);
    the state holds every BatchNorm's running statistics under the same names.

    Args:
        hwc: the image's `(height, width, channels)`.
        n_classes: the classes, the logits' size.
        widths: the channels of each stage; their number is the number of stages.
        blocks_per_stage: residual blocks per stage.
        head_init_scale: scales the head's initial weights, in (0, 100].
        bn_momentum, bn_eps: every BatchNorm's `momentum` and `eps`.
        axis_name: the BatchNorms' batch axis name (see `BatchNorm`).
        dtype, param_dtype, matmul_precision: the precision policy (see `PrecisionFields`).

    Example:
        >>> resnet = ResNet.make(ResNet(widths=(4, 8), blocks_per_stage=1))
        >>> weights = jm.make_weights(jax.random.key(0), resnet.weight_params)
        >>> state = jm.make_state(resnet.state_params)
        >>> def train(x):
        ...     return resnet.apply(weights, x, state, train=True)
        >>> logits, new_state = jax.jit(jax.vmap(train, axis_name="batch", out_axes=(0, None)))(jnp.zeros((4, 8, 8, 1)))
        >>> logits.shape, sorted(new_state)
        ((4, 10), ['stage_0_block_0', 'stage_1_block_0', 'stem_bn'])
    """

    hwc: tuple[Size, Size, Size] = (8, 8, 1)
    n_classes: Size = 10
    widths: tuple[Size, ...] = (32, 64)
    blocks_per_stage: Size = 2
    head_init_scale: InitScale = 1.0
    bn_momentum: Momentum = 0.9
    bn_eps: Eps = 1e-5
    axis_name: str | None = "batch"

    def validate(self) -> None:
        if not self.widths:
            raise self.error("widths", "must name at least one stage's width")

    @classmethod
    def make(cls, config: ResNetConfigs) -> jm.Component:
        policy = Policy(config)
        h, w, ch = config.hwc
        layers: dict[str, jm.Maker] = {
            "stem": Conv(h, w, ch, config.widths[0], use_bias=False, **policy.fields),
            "stem_bn": _batch_norm(config, config.widths[0]),
        }
        n_in = config.widths[0]
        for i, width in enumerate(config.widths):
            for j in range(config.blocks_per_stage):
                stride = 2 if i > 0 and j == 0 else 1
                layers[f"stage_{i}_block_{j}"] = ResidualBlock(
                    h, w, n_in, width, stride, config.bn_momentum, config.bn_eps, config.axis_name, **policy.fields
                )
                h, w, n_in = conv_output_size(h, 3, stride, "same"), conv_output_size(w, 3, stride, "same"), width
        layers["pool"] = GlobalAvgPool(n_in)
        layers["head"] = Linear(  # in float32: the logits are
            n_in,
            config.n_classes,
            config.head_init_scale,
            (None, None),
            param_dtype=config.param_dtype,
            matmul_precision=config.matmul_precision,
        )
        c = jm.make_children(**layers)
        body = [name for name in c if name.startswith("stage_")]

        def resnet(weights: jm.Weights, x: Array, state: jm.Weights, *, train: bool) -> tuple[Array, jm.Weights]:
            new: jm.Weights = {}
            y, new["stem_bn"] = c.stem_bn.apply(weights, c.stem(weights, x), state, train=train)
            y = jax.nn.relu(y)
            for name in body:
                y, new[name] = c[name].apply(weights, y, state, train=train)
            return c.head(weights, c.pool(weights, y).astype(jnp.float32)), new

        ports = jm.make_ports({jm.Input: Float[Array, "h w ch"]}, {jm.Output: Float32[Array, "n_classes"]})
        dims = [config, {"h": config.hwc[0], "w": config.hwc[1], "ch": config.hwc[2]}]
        return jm.Component.from_stateful(
            c.weight_params, c.state_params, resnet, ports, dims=dims, axis_names=c.axis_names
        )
