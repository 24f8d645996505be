"""`Vit`: the seed's vision transformer, with "dirty patches" and an output token."""

from collections.abc import Mapping
from dataclasses import KW_ONLY
from typing import Literal, Protocol, TypeAlias, runtime_checkable

import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, Float32

import jaxmake as jm
from jaxmake.components._embedding import Embeddings
from jaxmake.components._fields import InitScale, KeepRate, Size
from jaxmake.components._norm import LayerNorm
from jaxmake.components._patches import Patches
from jaxmake.components._positional import (
    PositionalEncoding,
    TensorPositionalEncodeStrategy,
    TensorPositionalEncoding,
)
from jaxmake.components._precision import Policy
from jaxmake.components._transformer import TransformerEncoder, TransformerEncoderConfigs, TransformerEncoderFields

VitPool: TypeAlias = Literal["token", "mean"]
"""What `Vit`'s logits read: the first output token, or the mean of the patch tokens."""

LOGITS = "logits"
"""The output port of `Vit`'s classification process, `(Input) -> (logits)`."""


@runtime_checkable
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
    def positional_encode_strategy(self) -> TensorPositionalEncodeStrategy: ...
    @property
    def pool(self) -> VitPool: ...


class Vit(TransformerEncoderFields):
    """The seed's vision transformer; the defaults are the seed's configuration.

    Per example; batch with `jax.vmap`. The image `[H, W, C]` is cut, channel by channel,
    into `n_patches_side**2 * C` patches, each through an MLP (`patching`); the tokens get
    positions (`positional_encoding`, one table per grid axis and the channel axis); during
    training (`rng` given) each is replaced by the learned `mask_embedding` (`dict: [1,
    dim_model]`, one vector: logical axes `(None, "embed")`) with probability
    `1 - input_keep_rate`. `dim_output` output tokens (the table of
    `positional_encoding_y`) are prepended, the sequence is normalised (`norm`) and
    encoded (`encoder`). Processes (random iff a keep rate is below 1):

    * the pipeline: image `[H, W, C] -> [dim_output + T, dim_model]` encodings in `dtype`,
      the output tokens first (`T = n_patches_side**2 * C`);
    * `(Input) -> ("logits",)`: `[dict_size_output]` class logits (float32): the dot
      products with the `out_embedding` table of the first output token (`pool="token"`)
      or of the mean of the patch tokens (`pool="mean"`).

    Combining positions by `"dot"` (the seed's choice) multiplies the tokens by a product
    of the small row, column and channel tables; `"sum"` adds that product, so a token's
    position starts near zero (about `pos_init_scale**3`) and its tables learn slowly;
    `"naive_sum"` adds the three tables themselves, as a hand-written ViT's learned
    positions do. All three make the same weight tree.

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
        dim_output: output tokens prepended to the patches (the first gives the logits
            with `pool="token"`).
        dict_size_output: the number of classes.
        input_keep_rate: during training, the probability of keeping each patch rather
            than replacing it by the mask embedding, in (0, 1].
        pos_init_scale: the std of the initial position tables, in (0, 100].
        positional_encode_strategy: `"dot"` (multiply, as the seed), `"sum"` or
            `"naive_sum"` (add; see above).
        pool: what the logits read: `"token"` (the first output token, as the seed) or
            `"mean"` (the mean of the patch tokens, in float32).
        scan_unroll, remat, attention_impl, dtype, param_dtype, matmul_precision: see
            `TransformerEncoderFields`.

    `causal` is not a field: a `Vit`'s tokens attend to every other.

    Example:
        >>> vit = Vit.make(Vit())
        >>> shapes = jax.tree.map(jnp.shape, jm.abstract_weights(vit.weight_params))
        >>> shapes["positional_encoding"], shapes["out_embedding"]
        ({'encoding_dim_0': (12, 7), 'encoding_dim_1': (12, 7), 'encoding_dim_2': (12, 1)}, {'dict': (5, 12)})
    """

    _: KW_ONLY
    n_tfe_layers: Size = 4
    n_heads: Size = 4
    dim_model: Size = 12
    mlp_n_hidden: tuple[Size, ...] = (24,)
    dict_init_scale: InitScale = 1.0
    hwc: tuple[Size, Size, Size] = (28, 28, 1)
    n_patches_side: Size = 7
    mlp_n_hidden_patches: tuple[Size, ...] = (12,)
    dim_output: Size = 1
    dict_size_output: Size = 5
    input_keep_rate: KeepRate = 1.0
    pos_init_scale: InitScale = 0.001
    positional_encode_strategy: TensorPositionalEncodeStrategy = "dot"
    pool: VitPool = "token"

    @property
    def causal(self) -> bool:
        """Always false: every token attends to every other."""
        return False

    def validate(self) -> None:
        super().validate()
        for axis, side in (("height", self.hwc[0]), ("width", self.hwc[1])):
            if side % self.n_patches_side:
                raise self.error("n_patches_side", f"must divide the image {axis} {side} (from `hwc`={self.hwc})")

    @classmethod
    def make(cls, config: VitConfigs) -> jm.Component:
        (h, w, ch), n, dim = config.hwc, config.n_patches_side, config.dim_model
        strategy, n_out, keep = config.positional_encode_strategy, config.dim_output, config.input_keep_rate
        policy = Policy(config)
        patches = Patches(
            dim,
            n,
            n,
            w,
            h,
            ch,
            config.mlp_n_hidden_patches,
            config.mlp_activation,
            config.dropout_keep_rate,
            **policy.fields,
        )
        pos_scale = config.pos_init_scale
        c = jm.make_children(
            patching=patches,
            positional_encoding=TensorPositionalEncoding(
                (n, n, ch), dim, dim, dim, strategy, pos_scale, **policy.fields
            ),
            positional_encoding_y=PositionalEncoding(
                n_out, dim, "dot" if strategy == "dot" else "sum", pos_scale, False, **policy.fields
            ),
            norm=LayerNorm(dim, config.eps, **policy.fields),
            encoder=lambda: TransformerEncoder.make(config),
            out_embedding=Embeddings(config.dict_size_output, dim, config.dict_init_scale, **policy.fields),
        )
        # The mask embedding is one vector, not a vocabulary: its one row is never split.
        mask = policy.weight((1, dim), init="embedding", scale=config.dict_init_scale, axes=(None, "embed"))
        # The output tokens are the `positional_encoding_y` table itself: its encoding of
        # ones (multiplicative) or of zeros (additive).
        base = jnp.ones if strategy == "dot" else jnp.zeros

        def pipeline(weights: jm.Weights, image: Array, rng: Array | None) -> Array:
            keys = [None] * 3 if rng is None else list(jr.split(rng, 3))
            tokens = c.patching(weights, image, keys[0])
            if keep < 1.0 and keys[1] is not None:
                kept = jr.bernoulli(keys[1], keep, (tokens.shape[0], 1))
                tokens = jnp.where(kept, tokens, policy.cast(weights["mask_embedding"]["dict"][0]))
            grid = c.positional_encoding(weights, tokens.reshape(n, n, ch, dim))
            prefix = c.positional_encoding_y(weights, base((n_out, dim), tokens.dtype))
            sequence = c.norm(weights, jnp.concatenate([prefix, grid.reshape(-1, dim)]))
            return c.encoder(weights, sequence, keys[2])

        def encodings(weights: jm.Weights, inputs: Mapping[str, Array], rng: Array | None) -> dict[str, Array]:
            return {jm.Output: pipeline(weights, inputs[jm.Input], rng)}

        def logits(weights: jm.Weights, inputs: Mapping[str, Array], rng: Array | None) -> dict[str, Array]:
            encoded = pipeline(weights, inputs[jm.Input], rng)
            read = encoded[0] if config.pool == "token" else policy.cast(encoded[n_out:].astype(jnp.float32).mean(0))
            return {LOGITS: c.out_embedding.run(weights, {"embedding": read})["logits"]}

        image = {jm.Input: Float[Array, "h w ch"]}
        processes = {
            jm.make_ports(image, {jm.Output: policy.floats[Array, "n_tokens dim_model"]}): encodings,
            jm.make_ports(image, {LOGITS: Float32[Array, "dict_size_output"]}): logits,
        }
        fixed = config.dropout_keep_rate == 1.0 and keep == 1.0
        sizes = {"h": h, "w": w, "ch": ch, "n_tokens": n_out + n * n * ch}
        spec = {**c.weight_params, "mask_embedding": {"dict": mask}}
        return jm.Component(spec, processes, fixed=fixed, dims=[config, sizes])
