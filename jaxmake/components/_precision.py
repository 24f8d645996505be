"""The precision policy: the dtype weights are stored in, the dtype layers compute in, and
the precision of their matmuls.

Every library config that computes takes the three fields of `PrecisionFields`
(keyword-only), and a model config passes them down to its children, as it does every
other field. The default is float32 throughout, as before the policy existed. The usual
mixed policy for a GPU is `dtype="bfloat16"`: weights stay float32 (the optimizer updates
them in float32), while matmuls and activations run in bfloat16. Whatever the policy,
the numerically sensitive parts run in float32: norm statistics, the attention softmax,
the loss, and the logits a model returns for sampling or classification.

The contracts say the dtype: a component's output ports are annotated with the compute
dtype (`BFloat16[Array, "T dim_model"]` for a bfloat16 `Linear`), so a bfloat16 model's
ports say so and are checked at make time like its shapes. Inputs accept any float dtype
and are cast.
"""

from dataclasses import KW_ONLY
from typing import Any, Literal, Protocol, TypeAlias, TypedDict, runtime_checkable

import jax
import jax.numpy as jnp
from jaxtyping import Array, BFloat16, Float16, Float32

import jaxmake as jm

DType: TypeAlias = Literal["float32", "bfloat16", "float16"]
"""A floating dtype of the policy, by name."""
MatmulPrecision: TypeAlias = Literal["default", "high", "highest"]
"""`jax.lax.Precision` by name: `"default"` follows `jax.default_matmul_precision` (whose own
default lets the backend choose: TF32 for float32 on recent NVIDIA GPUs, one bfloat16 pass
on TPUs); `"highest"` is full float32 everywhere."""

_ANNOTATIONS: dict[str, Any] = {"float32": Float32, "bfloat16": BFloat16, "float16": Float16}
_PRECISIONS = {"default": None, "high": jax.lax.Precision.HIGH, "highest": jax.lax.Precision.HIGHEST}
"""`"default"` is `None`, not `Precision.DEFAULT`: it leaves the choice to
`jax.default_matmul_precision`, which a caller (a test) can then set for a whole block."""


@runtime_checkable
class PrecisionConfigs(Protocol):
    """The precision fields that every computing library config has (see `PrecisionFields`)."""

    @property
    def dtype(self) -> DType: ...
    @property
    def param_dtype(self) -> DType: ...
    @property
    def matmul_precision(self) -> MatmulPrecision: ...


class PrecisionFields(jm.Config):
    """The precision policy's fields, declared once; every computing library config has them.

    They are keyword-only, and come after a config's own fields when it is called.

    Args:
        dtype: the dtype matmuls and activations are computed in, and the dtype of the
            outputs (but the float32 parts: norm statistics, softmax, losses, logits).
        param_dtype: the dtype the weights are stored (and drawn) in.
        matmul_precision: the precision of every matmul (see `MatmulPrecision`).
    """

    _: KW_ONLY
    dtype: DType = "float32"
    param_dtype: DType = "float32"
    matmul_precision: MatmulPrecision = "default"


class PrecisionKwargs(TypedDict):
    """The precision fields as keyword arguments, to pass a policy on to a child's config."""

    dtype: DType
    param_dtype: DType
    matmul_precision: MatmulPrecision


class Policy:
    """A config's precision policy, resolved: what its `make` uses to build and compute.

    Args:
        config: any config with the precision fields.
    """

    def __init__(self, config: PrecisionConfigs) -> None:
        self.fields = PrecisionKwargs(
            dtype=config.dtype, param_dtype=config.param_dtype, matmul_precision=config.matmul_precision
        )
        self.dtype = jnp.dtype(config.dtype)
        self.param_dtype = jnp.dtype(config.param_dtype)
        self.precision = _PRECISIONS[config.matmul_precision]
        self.floats: Any = _ANNOTATIONS[config.dtype]
        """The jaxtyping dtype of the compute dtype, for port annotations: `policy.floats[Array, "T d"]`."""

    @property
    def is_half(self) -> bool:
        """Whether the compute dtype is a 16-bit float."""
        return self.dtype.itemsize == 2

    def cast(self, x: Array) -> Array:
        """`x` in the compute dtype."""
        return x.astype(self.dtype)

    def matmul(self, a: Array, b: Array) -> Array:
        """`a @ b` in the compute dtype, at the policy's matmul precision."""
        return jnp.matmul(self.cast(a), self.cast(b), precision=self.precision)

    def einsum(self, subscripts: str, *operands: Array, float32_result: bool = False) -> Array:
        """`jnp.einsum` in the compute dtype at the policy's precision; with `float32_result`,
        accumulated and returned in float32 (attention scores, logits)."""
        result_dtype = jnp.float32 if float32_result else None
        cast = self.cast
        if float32_result and self.cpu_cannot_accumulate_in_float32:
            cast = lambda x: x.astype(jnp.float32)  # noqa: E731
        result: Array = jnp.einsum(
            subscripts, *(cast(x) for x in operands), precision=self.precision, preferred_element_type=result_dtype
        )
        return result

    @property
    def cpu_cannot_accumulate_in_float32(self) -> bool:
        """Whether this is float16 on XLA's CPU backend, whose dot has no float16 x float16 -> float32
        form: there the products that accumulate in float32 take float32 operands."""
        return self.dtype == jnp.float16 and jax.default_backend() == "cpu"

    def pipeline_ports(self, x: Any, y_dims: str) -> jm.ProcessPorts:
        """The ports of a pipeline from `x` (an annotation) to `y_dims` in the compute dtype."""
        return jm.make_ports({jm.Input: x}, {jm.Output: self.floats[Array, y_dims]})

    def weight(self, shape: tuple[int, ...], **kwargs: Any) -> jm.WeightParams:
        """`WeightParams(shape, **kwargs)` stored in the policy's `param_dtype`."""
        return jm.WeightParams(shape, dtype=self.param_dtype, **kwargs)
