"""mypy must report exactly the errors and notes announced at the end of the lines below."""

from typing import Literal

import jaxmake as jm
from jaxmake.components import LayerNorm, Linear, Mlp, PrecisionFields, TransformerEncoder, Vit


class AlmostMlp(PrecisionFields):
    """Every field `Mlp.make` reads but `dropout_keep_rate` (the precision policy's from the base)."""

    n_in: int = 2
    n_hidden: tuple[int, ...] = (4,)
    n_out: int = 2
    activation: Literal["relu", "gelu", "tanh", "silu"] = "relu"


Mlp.make(AlmostMlp())  # E: arg-type: Argument 1 to "make" of "Mlp" has incompatible type "AlmostMlp"; expected "MlpConfigs"  # N: "AlmostMlp" is missing following "MlpConfigs" protocol member:  # N: dropout_keep_rate
TransformerEncoder.make(LayerNorm(12))  # E: arg-type: Argument 1 to "make" of "TransformerEncoder" has incompatible type "LayerNorm"
Vit(hwc=(8, 8))  # E: arg-type: Argument "hwc" to "Vit" has incompatible type "tuple[int, int]"; expected "tuple[int, int, int]"
Linear.make(jm.Config())  # E: arg-type: Argument 1 to "make" of "Linear" has incompatible type "Config"; expected "LinearConfigs"
Linear(3, 2, dtype="float64")  # E: arg-type: Argument "dtype" to "Linear" has incompatible type "Literal['float64']"
Mlp(3, (4,), 2, activation="swish")  # E: arg-type: Argument "activation" to "Mlp" has incompatible type "Literal['swish']"
