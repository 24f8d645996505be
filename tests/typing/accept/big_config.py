"""mypy must accept one big config handed to the `make` of every component it satisfies."""

from typing import Literal, assert_type

import jaxmake as jm
from jaxmake.components import Dropout, LayerNorm, Mlp, PrecisionFields, SelfMultiHeadAttn, TransformerEncoder


class MyTransformer(PrecisionFields):
    """A user's config: the encoder's fields plus an MLP head's, in one flat class; the
    precision policy's from its base, which it passes down to every `make`."""

    n_heads: int = 2
    dim_model: int = 8
    dim_input: int = 8
    mlp_n_hidden: tuple[int, ...] = (16,)
    n_tfe_layers: int = 2
    universal: bool = False
    dropout_keep_rate: float = 0.9
    eps: float = 1e-5
    mlp_activation: Literal["relu", "gelu", "tanh", "silu"] = "gelu"
    scan_layers: bool = False
    scan_unroll: int = 1
    remat: Literal["none", "layer", "dots", "dots_no_batch"] = "layer"
    causal: bool = True
    attention_impl: Literal["auto", "einsum", "fused"] = "auto"
    n_in: int = 8
    n_hidden: tuple[int, ...] = (8,)
    n_out: int = 3
    activation: Literal["relu", "gelu", "tanh", "silu"] = "relu"


def build(config: MyTransformer) -> dict[str, jm.Component]:
    with jm.scope("model"):
        return {
            "dropout": Dropout.make(config),
            "norm": LayerNorm.make(config),
            "head": Mlp.make(config),
            "mha": SelfMultiHeadAttn.make(config),
            "encoder": TransformerEncoder.make(config),
        }


assert_type(build(MyTransformer()), dict[str, jm.Component])
