"""Dense layers: `Linear`, and the multi-layer perceptrons `Mlp` and `MlpLayerNorm`."""

from itertools import pairwise
from typing import Protocol, TypeAlias, runtime_checkable

import jax.random as jr
from jaxtyping import Array, Float

import jaxmake as jm
from jaxmake.components._dropout import Dropout
from jaxmake.components._fields import Activation, Eps, InitScale, KeepRate, Size
from jaxmake.components._functional import activation
from jaxmake.components._norm import LayerNorm
from jaxmake.components._precision import Policy, PrecisionConfigs, PrecisionFields

LinearAxes: TypeAlias = tuple[str | None, str | None]
"""The logical axis names of a `Linear`'s `w`, `(input, output)`; its `b` takes the output's."""

_COLUMN_PARALLEL: LinearAxes = ("embed", "mlp")
"""A layer from the model width out to a wide one: tensor parallelism splits its outputs."""
_ROW_PARALLEL: LinearAxes = ("mlp", "embed")
"""A layer from a wide one back to the model width: tensor parallelism splits its inputs."""


@runtime_checkable
class LinearConfigs(PrecisionConfigs, Protocol):
    @property
    def n_in(self) -> int: ...
    @property
    def n_out(self) -> int: ...
    @property
    def init_scale(self) -> float: ...
    @property
    def axes(self) -> LinearAxes: ...


class Linear(PrecisionFields):
    """An affine map `x @ w + b`.

    Per example; batch with `jax.vmap`. Pipeline (fixed): `[*batch, n_in] -> [*batch, n_out]`,
    computed and returned in `dtype` (any float input is cast). Weights, in `param_dtype`:
    `w: [n_in, n_out]` (kaiming, times `init_scale`) with the logical axes `axes`,
    `b: [n_out]` (zeros) with the logical axis `axes[1]`.

    Args:
        n_in: input features.
        n_out: output features.
        init_scale: scales the initial `w`, in (0, 100]; e.g. small for an output head.
        axes: the logical axis names of `w`'s dims (see `jaxmake.sharding`). The default,
            `("embed", "mlp")`, suits a layer out of the model width ("column parallel");
            a layer back into it takes `("mlp", "embed")` ("row parallel"), so that under
            tensor parallelism the pair needs one all-reduce (Shoeybi et al., 2019).
        dtype, param_dtype, matmul_precision: the precision policy (see `PrecisionFields`).

    Example:
        >>> linear = Linear.make(Linear(16, 12))
        >>> jax.tree.map(jnp.shape, jm.make_weights(jax.random.key(0), linear.weight_params))
        {'b': (12,), 'w': (16, 12)}
        >>> {name: spec.axes for name, spec in Linear.make(Linear(16, 12, axes=("mlp", "embed"))).weight_params.items()}
        {'w': ('mlp', 'embed'), 'b': ('embed',)}
    """

    n_in: Size
    n_out: Size
    init_scale: InitScale = 1.0
    axes: LinearAxes = _COLUMN_PARALLEL

    @classmethod
    def make(cls, config: LinearConfigs) -> jm.Component:
        policy = Policy(config)

        def affine(weights: dict[str, Array], x: Float[Array, "*batch n_in"]) -> Float[Array, "*batch n_out"]:
            return policy.matmul(x, weights["w"]) + policy.cast(weights["b"])

        weight_params = {
            "w": policy.weight((config.n_in, config.n_out), scale=config.init_scale, axes=config.axes),
            "b": policy.weight((config.n_out,), init="zeros", axes=config.axes[1:]),
        }
        ports = policy.pipeline_ports(Float[Array, "*batch n_in"], "*batch n_out")
        return jm.Component.from_pipeline(weight_params, affine, ports, dims=config)


@runtime_checkable
class MlpConfigs(PrecisionConfigs, Protocol):
    @property
    def n_in(self) -> int: ...
    @property
    def n_hidden(self) -> tuple[int, ...]: ...
    @property
    def n_out(self) -> int: ...
    @property
    def activation(self) -> Activation: ...
    @property
    def dropout_keep_rate(self) -> float: ...


@runtime_checkable
class InnerMlpConfigs(PrecisionConfigs, Protocol):
    """The fields of an `Mlp` inside a bigger block: a transformer layer's, or `Patches`'."""

    @property
    def mlp_n_hidden(self) -> tuple[int, ...]: ...
    @property
    def mlp_activation(self) -> Activation: ...
    @property
    def dropout_keep_rate(self) -> float: ...


@runtime_checkable
class MlpLayerNormConfigs(MlpConfigs, Protocol):
    @property
    def eps(self) -> float: ...


class Mlp(PrecisionFields):
    """A multi-layer perceptron: `Linear` layers with an activation and dropout between them.

    Per example; batch with `jax.vmap`. Pipeline: `[*batch, n_in] -> [*batch, n_out]`;
    fixed when `dropout_keep_rate` is 1. Weights: `layer_0 .. layer_k` (`k = len(n_hidden)`),
    each a `Linear`, `layer_i.w: [width_i, width_{i+1}]` (widths `n_in, *n_hidden, n_out`).
    The even layers have the logical axes `("embed", "mlp")`, the odd ones `("mlp",
    "embed")`: with one hidden layer, tensor parallelism splits the hidden units and the
    block needs one all-reduce, on its output (Megatron-LM, Shoeybi et al., 2019).

    Args:
        n_in: input features.
        n_hidden: the widths of the hidden layers, e.g. `(24,)`; `()` is one `Linear`.
        n_out: output features.
        activation: applied after every layer but the last.
        dropout_keep_rate: dropout after every activation, in (0, 1].
        dtype, param_dtype, matmul_precision: the precision policy of every layer (see
            `PrecisionFields`); the output is in `dtype`.

    Example:
        >>> mlp = Mlp.make(Mlp(12, (24,), 12))
        >>> jax.tree.map(jnp.shape, jm.make_weights(jax.random.key(0), mlp.weight_params))
        {'layer_0': {'b': (24,), 'w': (12, 24)}, 'layer_1': {'b': (12,), 'w': (24, 12)}}
    """

    n_in: Size
    n_hidden: tuple[Size, ...]
    n_out: Size
    activation: Activation = "relu"
    dropout_keep_rate: KeepRate = 1.0

    @classmethod
    def make(cls, config: MlpConfigs) -> jm.Component:
        return _perceptron(config, norm_eps=None)


class MlpLayerNorm(PrecisionFields):
    """`Mlp` with a `LayerNorm` after every hidden layer, before its activation.

    Per example; batch with `jax.vmap`. Pipeline: `[*batch, n_in] -> [*batch, n_out]`.
    Weights: `layer_0 .. layer_k` (`Linear`, logical axes as for `Mlp`) and
    `norm_0 .. norm_{k-1}` (`LayerNorm`).

    Args:
        n_in, n_hidden, n_out, activation, dropout_keep_rate, dtype, param_dtype,
            matmul_precision: as for `Mlp`.
        eps: the `LayerNorm` epsilon, in [1e-12, 1].

    Example:
        >>> mlp = MlpLayerNorm.make(MlpLayerNorm(4, (8,), 2))
        >>> jax.tree.map(jnp.shape, jm.make_weights(jax.random.key(0), mlp.weight_params))
        {'layer_0': {'b': (8,), 'w': (4, 8)}, 'layer_1': {'b': (2,), 'w': (8, 2)}, 'norm_0': {'a': (8,), 'b': (8,)}}
    """

    n_in: Size
    n_hidden: tuple[Size, ...]
    n_out: Size
    activation: Activation = "relu"
    dropout_keep_rate: KeepRate = 1.0
    eps: Eps = 1e-5

    @classmethod
    def make(cls, config: MlpLayerNormConfigs) -> jm.Component:
        return _perceptron(config, norm_eps=config.eps)


def _perceptron(config: MlpConfigs, norm_eps: float | None) -> jm.Component:
    """The layers of an `Mlp`, with a `LayerNorm` after each hidden one when `norm_eps` is set."""
    n_layers, policy = len(config.n_hidden) + 1, Policy(config)
    makers: dict[str, jm.Maker] = {}
    for i, (n_in, n_out) in enumerate(pairwise((config.n_in, *config.n_hidden, config.n_out))):
        makers[f"layer_{i}"] = Linear(n_in, n_out, axes=(_COLUMN_PARALLEL, _ROW_PARALLEL)[i % 2], **policy.fields)
        if norm_eps is not None and i < n_layers - 1:
            makers[f"norm_{i}"] = LayerNorm(n_out, norm_eps, **policy.fields)
    c = jm.make_children(**makers)
    with jm.scope("dropout"):  # no weights, so no key in the tree: the seed's `Mlp` has none
        dropout = Dropout.make(config)
    act = activation(config.activation)

    def perceptron(
        weights: jm.Weights, x: Float[Array, "*batch n_in"], rng: Array | None
    ) -> Float[Array, "*batch n_out"]:
        for i in range(n_layers):
            x = c[f"layer_{i}"](weights, x)
            if i < n_layers - 1:
                x = c[f"norm_{i}"](weights, x) if f"norm_{i}" in c else x
                x = dropout({}, act(x), None if rng is None else jr.fold_in(rng, i))
        return x

    ports = policy.pipeline_ports(Float[Array, "*batch n_in"], "*batch n_out")
    fixed = config.dropout_keep_rate == 1.0
    return jm.Component.from_pipeline(c.weight_params, perceptron, ports, fixed=fixed, dims=config)
