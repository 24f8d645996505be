"""Positional encodings: `PositionalEncoding` for a sequence, `TensorPositionalEncoding` for a grid.

Both store one learned table per axis, `encoding_dim_k: [dim_encoding, length_k]`, and
combine the tables with the input in the same ways (`_STRATEGIES`); a sequence is the
grid with one axis.
"""

import functools
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Literal, Protocol, TypeAlias, runtime_checkable

import jax
import jax.numpy as jnp
from annotated_types import MinLen
from jax.typing import DTypeLike
from jaxtyping import Array, Float, Int

import jaxmake as jm
from jaxmake.components._fields import InitScale, Size
from jaxmake.components._precision import Policy, PrecisionConfigs, PrecisionFields

PositionalEncodeStrategy: TypeAlias = Literal["sum", "dot", "sinusoidal"]
"""How `PositionalEncoding` encodes positions: a learned table added (`"sum"`) or
multiplied (`"dot"`), or the fixed sinusoids of Vaswani et al. added (`"sinusoidal"`)."""
TensorPositionalEncodeStrategy: TypeAlias = Literal["dot", "sum", "naive_sum"]
"""How `TensorPositionalEncoding` combines its per-axis tables with the input (see there)."""


POSITIONED_PORTS = jm.make_ports((jm.Input, "position"), jm.Output)
"""The ports `(Input, "position") -> (Output)` of a dynamic-length `PositionalEncoding`: the
input encoded from the position `position: Int[]` on."""


@runtime_checkable
class PositionalEncodingConfigs(PrecisionConfigs, Protocol):
    @property
    def max_input_length(self) -> int: ...
    @property
    def dim_encoding(self) -> int: ...
    @property
    def positional_encode_strategy(self) -> PositionalEncodeStrategy: ...
    @property
    def init_scale(self) -> float: ...
    @property
    def dynamic_length(self) -> bool: ...


@runtime_checkable
class TensorPositionalEncodingConfigs(PrecisionConfigs, Protocol):
    @property
    def input_shape(self) -> tuple[int, ...]: ...
    @property
    def input_channels(self) -> int: ...
    @property
    def output_channels(self) -> int: ...
    @property
    def dim_encoding(self) -> int: ...
    @property
    def positional_encode_strategy(self) -> TensorPositionalEncodeStrategy: ...
    @property
    def init_scale(self) -> float: ...


class PositionalEncoding(PrecisionFields):
    """Position information for a sequence `[T, dim_encoding]`, learned or sinusoidal.

    Per example; batch with `jax.vmap`. Pipeline (fixed): `[T, dim_encoding] ->
    [T, dim_encoding]`, where position `t` of the input meets the encoding `e_t`:

    * `"sum"`: `x_t + e_t`, with `e_t` column `t` of the learned table;
    * `"dot"`: `x_t * e_t` (elementwise), the seed's multiplicative scheme;
    * `"sinusoidal"`: `x_t + e_t` with the fixed `sinusoidal_encoding` (Vaswani et al.,
      2017); no weights.

    With `dynamic_length=False` the input has exactly `max_input_length` positions; with
    `dynamic_length=True` any `T <= max_input_length`, encoded by the first `T` positions
    (the component declares the limit, so `component.checked()` rejects a longer input).
    A dynamic-length encoding also has the process `POSITIONED_PORTS`, `(Input, "position")
    -> (Output)`: `position: Int[]` is the position of the input's first vector, which meets
    `e_position .. e_{position + T - 1}` (a cached decoder's new tokens); the caller keeps
    `position + T <= max_input_length` (beyond it the table's last `T` columns are used).

    The input is cast to `dtype`, the output is in it.

    Weights: `encoding_dim_0: [dim_encoding, max_input_length]` (init `"normal"`, std
    `init_scale`) in `param_dtype`, none for `"sinusoidal"`.

    Args:
        max_input_length: the number of positions (the most, if `dynamic_length`).
        dim_encoding: the width of each position's vector, the input's last axis.
        positional_encode_strategy: `"sum"`, `"dot"` or `"sinusoidal"`.
        init_scale: the std of the initial table, in (0, 100]; unused by `"sinusoidal"`.
        dynamic_length: whether shorter inputs are accepted.
        dtype, param_dtype, matmul_precision: the precision policy (see `PrecisionFields`).

    Example:
        >>> encoding = PositionalEncoding.make(PositionalEncoding(max_input_length=1, dim_encoding=12))
        >>> weights = jm.make_weights(jax.random.key(0), encoding.weight_params)
        >>> jax.tree.map(jnp.shape, weights)
        {'encoding_dim_0': (12, 1)}
    """

    max_input_length: Size
    dim_encoding: Size
    positional_encode_strategy: PositionalEncodeStrategy = "sum"
    init_scale: InitScale = 0.02
    dynamic_length: bool = False

    @classmethod
    def make(cls, config: PositionalEncodingConfigs) -> jm.Component:
        length, dim = config.max_input_length, config.dim_encoding
        strategy, policy = config.positional_encode_strategy, Policy(config)

        def encode(weights: jm.Weights, x: Array, position: Array | int) -> Array:
            if strategy == "sinusoidal":
                return policy.cast(x) + sinusoidal_encoding(x.shape[0], dim, policy.dtype, start=position)
            table = jax.lax.dynamic_slice_in_dim(weights["encoding_dim_0"], position, x.shape[0], axis=1)
            return _STRATEGIES[strategy](policy.cast(x), [table])

        def pipeline(weights: jm.Weights, inputs: Mapping[str, Array]) -> dict[str, Array]:
            return {jm.Output: encode(weights, inputs[jm.Input], 0)}

        def from_position(weights: jm.Weights, inputs: Mapping[str, Array]) -> dict[str, Array]:
            return {jm.Output: encode(weights, inputs[jm.Input], inputs["position"])}

        # A dynamic length is the free dim `T`, limited; a fixed one is bound to the config's.
        axis, limits = ("T", {"T": length}) if config.dynamic_length else ("max_input_length", {})
        sequence = f"{axis} dim_encoding"
        ports = policy.pipeline_ports(Float[Array, sequence], sequence)
        processes: dict[jm.ProcessPorts, jm.FixedProcess] = {ports: pipeline}
        if config.dynamic_length:
            positioned = {**ports.input_types, "position": Int[Array, ""]}
            processes[jm.make_ports(positioned, ports.output_types)] = from_position
        weight_params = {} if strategy == "sinusoidal" else _table_params(dim, (length,), config.init_scale, policy)
        return jm.Component(weight_params, processes, dims=config, limits=limits)


class TensorPositionalEncoding(PrecisionFields):
    """Position information for an N-d grid of vectors, one learned table per axis.

    Per example; batch with `jax.vmap`. Pipeline (fixed): `[*input_shape, input_channels]
    -> [*input_shape, output_channels]`. With `e_k[i]` column `i` of the table of axis `k`
    (a vector of `dim_encoding`), the vector at grid position `(i_0, .., i_{N-1})` becomes:

    * `"dot"`: `x * (e_0[i_0] * .. * e_{N-1}[i_{N-1}])`, the seed's multiplicative scheme
      (with a small `init_scale` it shrinks the input);
    * `"sum"`: `x + (e_0[i_0] * .. * e_{N-1}[i_{N-1}])`: the same encoding, added;
    * `"naive_sum"`: `x + (e_0[i_0] + .. + e_{N-1}[i_{N-1}])`.

    Every strategy combines the encoding with the input elementwise, so the channels in
    and out are both `dim_encoding`; the two fields name the input and output widths in
    the contract, and `validate` checks that they equal `dim_encoding`. The contract
    spells the grid in sizes (`Float[Array, "7 7 1 input_channels"]`), so a checked
    call rejects any other grid rather than broadcast against it.

    The input is cast to `dtype`, the output is in it. Weights: `encoding_dim_k:
    [dim_encoding, input_shape[k]]` for each axis `k` (init `"normal"`, std `init_scale`),
    in `param_dtype`.

    Args:
        input_shape: the grid, e.g. `(n_sections_h, n_sections_w, ch)`; at least one axis.
        input_channels: the width of each input vector; equals `dim_encoding`.
        output_channels: the width of each output vector; equals `dim_encoding`.
        dim_encoding: the width of each axis's vectors.
        positional_encode_strategy: `"dot"`, `"sum"` or `"naive_sum"`.
        init_scale: the std of the initial tables, in (0, 100].
        dtype, param_dtype, matmul_precision: the precision policy (see `PrecisionFields`).

    Raises:
        ConfigError: `input_channels` or `output_channels` differs from `dim_encoding`.

    Example:
        >>> encoding = TensorPositionalEncoding.make(TensorPositionalEncoding((7, 7, 1), 12, 12, 12, "dot", 0.001))
        >>> weights = jm.make_weights(jax.random.key(0), encoding.weight_params)
        >>> jax.tree.map(jnp.shape, weights)
        {'encoding_dim_0': (12, 7), 'encoding_dim_1': (12, 7), 'encoding_dim_2': (12, 1)}
    """

    input_shape: Annotated[tuple[Size, ...], MinLen(1)]
    input_channels: Size
    output_channels: Size
    dim_encoding: Size
    positional_encode_strategy: TensorPositionalEncodeStrategy = "sum"
    init_scale: InitScale = 0.02

    def validate(self) -> None:
        for field in ("input_channels", "output_channels"):
            if getattr(self, field) != self.dim_encoding:
                raise self.error(
                    field,
                    f"must equal `dim_encoding`={self.dim_encoding}: every strategy combines "
                    "the input and the encoding elementwise",
                )

    @classmethod
    def make(cls, config: TensorPositionalEncodingConfigs) -> jm.Component:
        shape, policy = tuple(config.input_shape), Policy(config)
        combine = _STRATEGIES[config.positional_encode_strategy]

        grid = " ".join(map(str, shape))

        def encode(
            weights: jm.Weights, x: Float[Array, f"{grid} input_channels"]
        ) -> Float[Array, f"{grid} output_channels"]:
            return combine(policy.cast(x), [weights[f"encoding_dim_{k}"] for k in range(len(shape))])

        ports = policy.pipeline_ports(Float[Array, f"{grid} input_channels"], f"{grid} output_channels")
        weight_params = _table_params(config.dim_encoding, shape, config.init_scale, policy)
        return jm.Component.from_pipeline(weight_params, encode, ports, dims=config)


def sinusoidal_encoding(
    length: int, dim: int, dtype: DTypeLike = jnp.float32, *, start: int | Array = 0
) -> Float[Array, "length dim"]:
    """The fixed sinusoidal encodings of positions `start .. start + length - 1` (Vaswani et al., 2017).

    `pe[t, 2i] = sin(t / 10000**(2i / dim))` and `pe[t, 2i + 1] = cos(t / 10000**(2i / dim))`;
    an odd `dim` ends with a sine.

    Args:
        length: the number of positions.
        dim: the width of each position's vector.
        dtype: the dtype of the result (computed in float32).
        start: the first position (an int, or an int array of shape `[]`).

    Returns:
        An array of shape `(length, dim)`.

    Example:
        >>> sinusoidal_encoding(2, 4)
        Array([[0.        , 1.        , 0.        , 1.        ],
               [0.84147096, 0.5403023 , 0.00999983, 0.99995   ]], dtype=float32)
    """
    features = jnp.arange(dim)
    frequencies = 10000.0 ** -((features - features % 2).astype(jnp.float32) / dim)
    positions = (start + jnp.arange(length)).astype(jnp.float32)
    angles = positions[:, None] * frequencies
    return jnp.where(features % 2 == 0, jnp.sin(angles), jnp.cos(angles)).astype(dtype)


def _table_params(
    dim_encoding: int, lengths: Sequence[int], init_scale: float, policy: Policy
) -> dict[str, jm.WeightParams]:
    """The spec of one table `encoding_dim_k: [dim_encoding, lengths[k]]` per axis."""
    return {
        f"encoding_dim_{k}": policy.weight((dim_encoding, n), init="normal", scale=init_scale, axes=("embed", None))
        for k, n in enumerate(lengths)
    }


def _axis_vectors(tables: Sequence[Array]) -> list[Array]:
    """Each table `[dim, n_k]` as `[1, .., n_k, .., 1, dim]`: axis `k`'s vector at every grid position."""
    ones = [1] * len(tables)
    return [
        table.T.reshape(*ones[:k], table.shape[1], *ones[k + 1 :], table.shape[0]) for k, table in enumerate(tables)
    ]


def _product(tables: Sequence[Array]) -> Array:
    """The elementwise product over axes of each axis's vector, `[*grid, dim]`."""
    return functools.reduce(operator.mul, _axis_vectors(tables))


def _sum(tables: Sequence[Array]) -> Array:
    """The sum over axes of each axis's vector, `[*grid, dim]`."""
    return functools.reduce(operator.add, _axis_vectors(tables))


_STRATEGIES: dict[str, Callable[[Array, Sequence[Array]], Array]] = {
    "dot": lambda x, tables: x * _product(tables).astype(x.dtype),
    "sum": lambda x, tables: x + _product(tables).astype(x.dtype),
    "naive_sum": lambda x, tables: x + _sum(tables).astype(x.dtype),
}
"""Each learned strategy: `(x [*grid, dim], one table [dim, n_k] per axis) -> [*grid, dim]`."""
