"""`Embeddings`: a learned table from integer ids to vectors, and back to logits."""

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from jaxtyping import Array, Float, Int

import jaxmake as jm
from jaxmake.components._fields import InitScale, Size


@runtime_checkable
class EmbeddingsConfigs(Protocol):
    @property
    def dict_size(self) -> int: ...
    @property
    def dim_model(self) -> int: ...
    @property
    def dict_init_scale(self) -> float: ...


LOGITS_PORTS = jm.make_ports(
    {"embedding": Float[Array, "*batch dim_model"]}, {"logits": Float[Array, "*batch dict_size"]}
)
"""The ports of `Embeddings`' second process: vectors -> one logit per table entry."""
_LOOKUP_PORTS = jm.make_ports({jm.Input: Int[Array, "*batch"]}, {jm.Output: Float[Array, "*batch dim_model"]})


class Embeddings(jm.Config):
    """A learned table `dict: [dict_size, dim_model]`.

    Per example; batch with `jax.vmap`. Fixed processes:

    * the pipeline: integer ids `[*batch] -> [*batch, dim_model]` (ids outside
      `[0, dict_size)` are clamped, as jax indexing does);
    * `LOGITS_PORTS`, `("embedding",) -> ("logits",)`: `[*batch, dim_model] ->
      [*batch, dict_size]`, the dot product with every entry (a tied output layer).

    Weights: `dict` (init `"embedding"`: std `dict_init_scale / sqrt(dim_model)`).

    Args:
        dict_size: the number of entries.
        dim_model: the width of each vector.
        dict_init_scale: scales the initial table, in (0, 100].

    Example:
        >>> embeddings = Embeddings.make(Embeddings(5, 12))
        >>> jax.tree.map(jnp.shape, jm.make_weights(jax.random.key(0), embeddings.weight_params))
        {'dict': (5, 12)}
    """

    dict_size: Size
    dim_model: Size
    dict_init_scale: InitScale = 1.0

    @classmethod
    def make(cls, config: EmbeddingsConfigs) -> jm.Component:
        def lookup(weights: jm.Weights, inputs: Mapping[str, Array]) -> dict[str, Array]:
            return {jm.Output: weights["dict"][inputs[jm.Input]]}

        def logits(weights: jm.Weights, inputs: Mapping[str, Array]) -> dict[str, Array]:
            return {"logits": inputs["embedding"] @ weights["dict"].T}

        table = (config.dict_size, config.dim_model)
        spec = jm.WeightParams(table, init="embedding", scale=config.dict_init_scale, axes=("vocab", "embed"))
        return jm.Component({"dict": spec}, {_LOOKUP_PORTS: lookup, LOGITS_PORTS: logits}, dims=config)
