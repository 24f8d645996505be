"""`Vit`: the seed's vision transformer, with "dirty patches" and an output token."""

from collections.abc import Mapping
from typing import Literal, Protocol

import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float

import jaxmake as jm
from jaxmake.components._attention import check_heads
from jaxmake.components._embedding import LOGITS_PORTS, Embeddings
from jaxmake.components._fields import Activation, Eps, InitScale, KeepRate, Size
from jaxmake.components._norm import LayerNorm
from jaxmake.components._patches import Patches
from jaxmake.components._positional import PositionalEncoding, TensorPositionalEncoding
from jaxmake.components._transformer import TransformerEncoder, TransformerEncoderConfigs

LOGITS = "logits"
"""The output port of `Vit`'s classification process, `(Input) -> (logits)`."""


class VitConfigs(TransformerEncoderConfigs, Protocol):
    @property
    def dict_init_scale(self) -> float: ...
    @property
    def hwc(self) -> tuple[int, int, int]: ...
    @property
    def n_patches_side(self) -> int: ...
    @property
    def mlp_n_hidden_patches(self) -> tuple[int, ...]: ...
    @property
    def dim_output(self) -> int: ...
    @property
    def dict_size_output(self) -> int: ...
    @property
    def input_keep_rate(self) -> float: ...
    @property
    def pos_init_scale(self) -> float: ...
    @property
    def positional_encode_strategy(self) -> Literal["dot", "sum"]: ...


class Vit(jm.Config):
    """The seed's vision transformer; the defaults are the seed's configuration.

    Per example; batch with `jax.vmap`. The image `[H, W, C]` is cut, channel by channel,
    into `n_patches_side**2 * C` patches, each through an MLP (`patching`); the tokens get
    positions (`positional_encoding`, one table per grid axis and the channel axis); during
    training (`rng` given) each is replaced by the learned `mask_embedding` (`dict: [1,
    dim_model]`, one vector: logical axes `(None, "embed")`) with probability
    `1 - input_keep_rate`. `dim_output` output tokens (the table of
    `positional_encoding_y`) are prepended, the sequence is normalised (`norm`) and
    encoded (`encoder`). Processes (random iff a keep rate is below 1):

    * the pipeline: image `[H, W, C] -> [dim_output + T, dim_model]` encodings, the output
      tokens first (`T = n_patches_side**2 * C`);
    * `(Input) -> ("logits",)`: `[dict_size_output]` class logits, the first output token's
      dot products with the `out_embedding` table.

    Combining positions by `"dot"` (the seed's choice) multiplies the tokens by a product
    of small numbers; `"sum"` makes the same weight tree and trains better.

    Args:
        universal: share one transformer layer across depth.
        n_tfe_layers: transformer layers.
        n_heads: attention heads; they must divide `dim_model`.
        dim_model: the width of every token.
        dropout_keep_rate: keep rate of dropout in the encoder and the patch MLP, in (0, 1].
        eps: the LayerNorm epsilon, in [1e-12, 1].
        mlp_n_hidden: hidden widths of each transformer layer's MLP.
        mlp_activation: the activation of every MLP.
        scan_layers: stack the layers' weights and run them with `jax.lax.scan`.
        dict_init_scale: scales the initial mask and output embeddings, in (0, 100].
        hwc: the image's height, width and channels.
        n_patches_side: patches per side; it must divide the height and the width.
        mlp_n_hidden_patches: hidden widths of the patch MLP.
        dim_output: output tokens prepended to the patches (the first gives the logits).
        dict_size_output: the number of classes.
        input_keep_rate: during training, the probability of keeping each patch rather
            than replacing it by the mask embedding, in (0, 1].
        pos_init_scale: the std of the initial position tables, in (0, 100].
        positional_encode_strategy: `"dot"` (multiply, as the seed) or `"sum"` (add).

    Example:
        >>> vit = Vit.make(Vit())
        >>> shapes = jax.tree.map(jnp.shape, jm.abstract_weights(vit.weight_params))
        >>> shapes["positional_encoding"], shapes["out_embedding"]
        ({'encoding_dim_0': (12, 7), 'encoding_dim_1': (12, 7), 'encoding_dim_2': (12, 1)}, {'dict': (5, 12)})
    """

    universal: bool = False
    n_tfe_layers: Size = 4
    n_heads: Size = 4
    dim_model: Size = 12
    dropout_keep_rate: KeepRate = 1.0
    eps: Eps = 1e-5
    mlp_n_hidden: tuple[Size, ...] = (24,)
    mlp_activation: Activation = "relu"
    scan_layers: bool = False
    dict_init_scale: InitScale = 1.0
    hwc: tuple[Size, Size, Size] = (28, 28, 1)
    n_patches_side: Size = 7
    mlp_n_hidden_patches: tuple[Size, ...] = (12,)
    dim_output: Size = 1
    dict_size_output: Size = 5
    input_keep_rate: KeepRate = 1.0
    pos_init_scale: InitScale = 0.001
    positional_encode_strategy: Literal["dot", "sum"] = "dot"

    def validate(self) -> None:
        check_heads(self)
        for axis, side in (("height", self.hwc[0]), ("width", self.hwc[1])):
            if side % self.n_patches_side:
                raise self.error("n_patches_side", f"must divide the image {axis} {side} (from `hwc`={self.hwc})")

    @classmethod
    def make(cls, config: VitConfigs) -> jm.Component:
        (h, w, ch), n, dim = config.hwc, config.n_patches_side, config.dim_model
        strategy, n_out = config.positional_encode_strategy, config.dim_output
        with jm.scope("patching"):
            patching = Patches.make(
                Patches(
                    dim, n, n, w, h, ch, config.mlp_n_hidden_patches, config.mlp_activation, config.dropout_keep_rate
                )
            )
        with jm.scope("positional_encoding"):
            positions = TensorPositionalEncoding.make(
                TensorPositionalEncoding((n, n, ch), dim, dim, dim, strategy, config.pos_init_scale)
            )
        with jm.scope("positional_encoding_y"):
            output_tokens = PositionalEncoding.make(
                PositionalEncoding(n_out, dim, strategy, config.pos_init_scale, False)
            )
        # The mask embedding is one vector, not a vocabulary: its one row is never split.
        mask_embedding = {
            "dict": jm.WeightParams((1, dim), init="embedding", scale=config.dict_init_scale, axes=(None, "embed"))
        }
        with jm.scope("norm"):
            norm = LayerNorm.make(LayerNorm(dim, config.eps))
        with jm.scope("encoder"):
            encoder = TransformerEncoder.make(config)
        with jm.scope("out_embedding"):
            out_embedding = Embeddings.make(Embeddings(config.dict_size_output, dim, config.dict_init_scale))
        patch, add_positions, outputs_of = patching.pipeline, positions.fixed_pipeline, output_tokens.fixed_pipeline
        normalise, encode = norm.fixed_pipeline, encoder.pipeline
        to_logits = out_embedding.get_fixed_process(LOGITS_PORTS)
        keep = config.input_keep_rate
        # The output tokens are the `positional_encoding_y` table itself: its encoding of
        # ones (multiplicative) or of zeros (additive).
        base = jnp.ones if strategy == "dot" else jnp.zeros

        def pipeline(weights: jm.Weights, image: Array, rng: Array | None) -> Array:
            keys = [None] * 3 if rng is None else list(jr.split(rng, 3))
            tokens = patch(weights["patching"], image, keys[0])
            if keep < 1.0 and keys[1] is not None:
                kept = jr.bernoulli(keys[1], keep, (tokens.shape[0], 1))
                tokens = jnp.where(kept, tokens, weights["mask_embedding"]["dict"][0])
            grid = add_positions(weights["positional_encoding"], tokens.reshape(n, n, ch, dim))
            prefix = outputs_of(weights["positional_encoding_y"], base((n_out, dim), tokens.dtype))
            sequence = normalise(weights["norm"], jnp.concatenate([prefix, grid.reshape(-1, dim)]))
            return encode(weights["encoder"], sequence, keys[2])

        def encodings(weights: jm.Weights, inputs: Mapping[str, Array], rng: Array | None) -> dict[str, Array]:
            return {jm.Output: pipeline(weights, inputs[jm.Input], rng)}

        def logits(weights: jm.Weights, inputs: Mapping[str, Array], rng: Array | None) -> dict[str, Array]:
            first = pipeline(weights, inputs[jm.Input], rng)[0]
            return {LOGITS: to_logits(weights["out_embedding"], {"embedding": first})["logits"]}

        image = {jm.Input: Float[Array, "h w ch"]}
        processes = {
            jm.make_ports(image, {jm.Output: Float[Array, "n_tokens dim_model"]}): encodings,
            jm.make_ports(image, {LOGITS: Float[Array, "dict_size_output"]}): logits,
        }
        randomness = config.dropout_keep_rate < 1.0 or keep < 1.0
        components = {
            "patching": patching,
            "positional_encoding": positions,
            "positional_encoding_y": output_tokens,
            "norm": norm,
            "encoder": encoder,
            "out_embedding": out_embedding,
        }
        dims = {
            "h": h,
            "w": w,
            "ch": ch,
            "dim_model": dim,
            "n_tokens": n_out + n * n * ch,
            "dict_size_output": config.dict_size_output,
        }
        return jm.Component(
            {**jm.merge_params(components), "mask_embedding": mask_embedding},
            processes,
            frozenset() if randomness else frozenset(processes),
            dims,
        )
