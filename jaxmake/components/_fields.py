"""Field types shared by the component configs: one name, one meaning, one constraint.

The constraints are `annotated_types` metadata: `jaxmake.Config` checks them on
construction and `jaxmake.testing.configs` draws values that satisfy them.
"""

from typing import Annotated, Literal, TypeAlias

from annotated_types import Ge, Gt, Le

MAX_SIZE = 2**40
"""The largest `Size`: about 10**12, beyond what any device can hold along one axis (and
far below the 2**63 past which XLA cannot even describe an array)."""
Size: TypeAlias = Annotated[int, Ge(1), Le(MAX_SIZE)]
"""A positive size: a width, a length, a count; at most `MAX_SIZE`."""
KeepRate: TypeAlias = Annotated[float, Gt(0), Le(1)]
"""The probability of keeping a unit under dropout, in (0, 1]; 1 disables dropout."""
Eps: TypeAlias = Annotated[float, Ge(1e-12), Le(1)]
"""A small constant added for numerical stability, in [1e-12, 1] (so it survives float32)."""
InitScale: TypeAlias = Annotated[float, Gt(0), Le(100)]
"""A multiplier of an initialiser's draw (see `WeightParams`), in (0, 100]."""
Activation: TypeAlias = Literal["relu", "gelu", "tanh", "silu"]
"""The name of an activation function (see `jaxmake.components.activation`)."""
