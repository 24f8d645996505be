"""`Embeddings`: a learned table from integer ids to vectors, and back to logits."""

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from jaxtyping import Array, Float, Float32, Int

import jaxmake as jm
from jaxmake.components._fields import InitScale, Size
from jaxmake.components._precision import Policy, PrecisionConfigs, PrecisionFields


@runtime_checkable
class EmbeddingsConfigs(PrecisionConfigs, Protocol):
    @property
    def dict_size(self) -> int: ...
    @property
    def dim_model(self) -> int: ...
    @property
    def dict_init_scale(self) -> float: ...


LOGITS_PORTS = jm.make_ports(
    {"embedding": Float[Array, "*batch dim_model"]}, {"logits": Float32[Array, "*batch dict_size"]}
)
"""The ports of `Embeddings`' second process: vectors -> one logit per table entry (float32)."""


class Embeddings(PrecisionFields):
    """A learned table `dict: [dict_size, dim_model]`.

    Per example; batch with `jax.vmap`. Fixed processes:

    * the pipeline: integer ids `[*batch] -> [*batch, dim_model]` in `dtype` (ids outside
      `[0, dict_size)` are clamped, as jax indexing does);
    * `LOGITS_PORTS`, `("embedding",) -> ("logits",)`: `[*batch, dim_model] ->
      [*batch, dict_size]`, the dot product with every entry (a tied output layer),
      computed in `dtype` and accumulated and returned in float32.

    Weights: `dict` (init `"embedding"`: std `dict_init_scale / sqrt(dim_model)`), in `param_dtype`.

    Args:
        dict_size: the number of entries.
        dim_model: the width of each vector.
        dict_init_scale: scales the initial table, in (0, 100].
        dtype, param_dtype, matmul_precision: the precision policy (see `PrecisionFields`).

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
        policy = Policy(config)

        def lookup(weights: jm.Weights, inputs: Mapping[str, Array]) -> dict[str, Array]:
            return {jm.Output: policy.cast(weights["dict"][inputs[jm.Input]])}

        def logits(weights: jm.Weights, inputs: Mapping[str, Array]) -> dict[str, Array]:
            return {"logits": policy.einsum("...d,vd->...v", inputs["embedding"], weights["dict"], float32_result=True)}

        table = (config.dict_size, config.dim_model)
        spec = policy.weight(table, init="embedding", scale=config.dict_init_scale, axes=("vocab", "embed"))
        lookup_ports = policy.pipeline_ports(Int[Array, "*batch"], "*batch dim_model")
        return jm.Component({"dict": spec}, {lookup_ports: lookup, LOGITS_PORTS: logits}, dims=config)
